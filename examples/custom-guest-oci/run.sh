#!/usr/bin/env bash
# Ship a custom transform through an OCI registry, end to end on a laptop:
# build the histogram guest, start a local registry, push the component in
# the Wasm OCI layout, reference it by digest from a MetricsExporter, try it
# with test-transform and export its rows with `run --once`.
#
#   examples/custom-guest-oci/run.sh
#
# Needs Debian's docker-registry (scripts/setup.sh installs it) and a
# pusher: `wkg oci push` when installed, else the oras Python client from
# scripts/setup.sh's virtualenv. PORT, KUSTO_METRICS (the binary) and
# GUEST (a built component) may be set to skip steps.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/examples/custom-guest-oci"
PORT="${PORT:-5000}"
REGISTRY="127.0.0.1:$PORT"
WORK="$(mktemp -d)"
trap 'kill "${REGISTRY_PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

BIN="${KUSTO_METRICS:-}"
if [ -z "$BIN" ]; then
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p kusto-metrics
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/kusto-metrics"
fi
GUEST="${GUEST:-}"
if [ -z "$GUEST" ]; then
    cargo build --release --quiet --manifest-path "$ROOT/guests/Cargo.toml" \
        --target wasm32-wasip2 -p histogram-buckets
    GUEST="$ROOT/guests/target/wasm32-wasip2/release/histogram_buckets.wasm"
fi

# 1. A registry on loopback, its storage in a temporary folder.
cat > "$WORK/registry.yml" <<YAML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: $REGISTRY}
YAML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REGISTRY_PID=$!
for _ in $(seq 50); do curl -sf "http://$REGISTRY/v2/" >/dev/null && break; sleep 0.1; done

# 2. Push: the manifest digest is what a MetricsExporter pins.
if command -v wkg >/dev/null 2>&1; then
    DIGEST="$(wkg oci push --insecure "$REGISTRY/team/histogram:1.0" "$GUEST" 2>&1 | grep -o 'sha256:[0-9a-f]\{64\}' | head -1)"
else
    PYTHON="${PYTHON:-$ROOT/target/test-venv/bin/python}"
    DIGEST="$("$PYTHON" "$ROOT/tests/servers/oci_push.py" --registry "$REGISTRY" --insecure \
        --repo team/histogram --tag 1.0 --wasm "$GUEST" | sed 's/.*"manifestDigest": "\([^"]*\)".*/\1/')"
fi
echo "pushed $REGISTRY/team/histogram:1.0 as $DIGEST" >&2

# 3. A MetricsExporter referencing it by digest, and a host config that
#    knows the registry speaks plain HTTP.
mkdir -p "$WORK/manifests" "$WORK/tables/TelemetryDB"
sed -e "s|127.0.0.1:5000|$REGISTRY|" -e "s|sha256:0\{64\}|$DIGEST|" "$HERE/metricsexporter.yaml" > "$WORK/manifests/metricsexporter.yaml"
cp "$HERE/summaryrule.yaml" "$WORK/manifests/"
cp "$HERE/RequestDurations.csv" "$WORK/tables/TelemetryDB/"
cat > "$WORK/kusto-metrics.yaml" <<YAML
manifests: manifests
source: {local: {tables: tables}}
state: state
guests: {cacheDir: cache}
registries:
  insecure: ["$REGISTRY"]
exporters:
  - name: console
    stdout: {}
YAML

# 4. Try it on sample rows, then export.
"$BIN" test-transform --compact --cache-dir "$WORK/cache" --insecure-registry "$REGISTRY" \
    -t "$WORK/manifests/metricsexporter.yaml" -i "$HERE/RequestDurations.csv" >&2
"$BIN" run --once --config "$WORK/kusto-metrics.yaml"
