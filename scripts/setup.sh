#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine. Idempotent.
set -euo pipefail

# rustup does not install rust-toolchain.toml's `targets` by itself here.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

# Test servers from Debian's packages: a real Prometheus (remote write and
# scrape tests) and a real OCI registry with htpasswd for its basic-auth
# variant (guest module tests). Installed only when missing; the packages'
# services are not started (the tests start their own on free loopback ports).
DEBIAN_PACKAGES=()
command -v prometheus >/dev/null 2>&1 || DEBIAN_PACKAGES+=(prometheus)
command -v docker-registry >/dev/null 2>&1 || DEBIAN_PACKAGES+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || DEBIAN_PACKAGES+=(apache2-utils)
if [ ${#DEBIAN_PACKAGES[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${DEBIAN_PACKAGES[@]}" >/dev/null
fi

# The end-to-end tests run a real OTLP receiver (tests/servers/otlp_receiver.py)
# from a Python virtualenv holding tests/servers/requirements.txt. Reinstalled
# only when the requirements change (a copy of them is kept in the venv).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TEST_VENV="${KUSTO_METRICS_TEST_VENV:-$ROOT/target/test-venv}"
TEST_REQUIREMENTS="$ROOT/tests/servers/requirements.txt"
if ! { "$TEST_VENV/bin/python" -c '' 2>/dev/null \
        && cmp -s "$TEST_REQUIREMENTS" "$TEST_VENV/kusto-metrics-requirements.txt"; }; then
    PYTHON="${PYTHON:-python3}"
    if [ -n "$(ls -A "$TEST_VENV" 2>/dev/null)" ] && [ ! -f "$TEST_VENV/pyvenv.cfg" ]; then
        echo "setup.sh: $TEST_VENV exists and is not a virtualenv; remove it or set KUSTO_METRICS_TEST_VENV" >&2
        exit 1
    fi
    if ! "$TEST_VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        # python3 -m venv needs ensurepip, which Debian ships apart
        # (python3-venv); fall back to the virtualenv package from PyPI.
        if ! "$PYTHON" -m venv --clear "$TEST_VENV" >/dev/null 2>&1; then
            rm -rf "$TEST_VENV"
            if ! "$PYTHON" -m virtualenv --version >/dev/null 2>&1; then
                "$PYTHON" -m pip install --quiet --user --no-warn-script-location virtualenv \
                    || "$PYTHON" -m pip install --quiet --user --no-warn-script-location \
                        --break-system-packages virtualenv
            fi
            "$PYTHON" -m virtualenv --quiet "$TEST_VENV"
        fi
    fi
    "$TEST_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$TEST_REQUIREMENTS"
    cp "$TEST_REQUIREMENTS" "$TEST_VENV/kusto-metrics-requirements.txt"
fi
