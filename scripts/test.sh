#!/usr/bin/env bash
# The whole test suite: the host (unit + integration tests against real guest
# builds) and the guest SDK and default guest natively.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

cargo test --release --locked --workspace
cargo test --release --locked --manifest-path guests/Cargo.toml -p kusto-metrics-guest -p column-mapping
