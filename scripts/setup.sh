#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine. Idempotent.
set -euo pipefail

# rustup does not install rust-toolchain.toml's `targets` by itself here.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
