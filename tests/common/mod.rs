//! Shared by the integration tests: the guests built for real, and paths.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod instances;
pub mod kube;
pub mod kusto_server;
pub mod prometheus;
pub mod receiver;
pub mod registry;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ sits in the root")
        .to_path_buf()
}

/// The `kusto-metrics` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kusto-metrics"))
}

/// The bytes of a guest from guests/, built for wasm32-wasip2 (once per test
/// process; cargo's own lock makes parallel test binaries take turns).
pub fn guest(crate_name: &str) -> Vec<u8> {
    let path = guest_path(crate_name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn guest_path(crate_name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target_dir = PathBuf::from(env!("KUSTO_METRICS_GUEST_TARGET_DIR"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--locked",
                "--target",
                "wasm32-wasip2",
                "--workspace",
            ])
            .arg("--manifest-path")
            .arg(root().join("guests/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("running cargo to build the guests");
        assert!(status.success(), "building the guests failed");
        target_dir.join("wasm32-wasip2").join("release")
    });
    dir.join(format!("{}.wasm", crate_name.replace('-', "_")))
}
