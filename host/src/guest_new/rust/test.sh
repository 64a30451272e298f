#!/bin/sh
# Builds the guest and checks what it makes of rows.csv against
# expected-otlp.json (exits non-zero with the differences otherwise).
set -eu
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip2
"${KUSTO_METRICS:-kusto-metrics}" test-transform \
    --module "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{wasm}}" \
    --transform transform.yaml --input rows.csv --expect expected-otlp.json
