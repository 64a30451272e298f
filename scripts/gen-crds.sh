#!/usr/bin/env bash
# Writes crds/ from the Rust types (host/src/api). tests/crds.rs fails when
# the files and the types drift apart.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --quiet -- crds --dir crds
