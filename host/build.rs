//! Builds the default guest (guests/column-mapping) for wasm32-wasip2 and
//! leaves it in OUT_DIR, where `include_bytes!` embeds it in the binary, so a
//! plain `cargo build` gives a host that runs with no second build step.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "wasm32-wasip2";
const DEFAULT_GUEST: &str = "column-mapping";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ sits in the workspace root");
    let guests = root.join("guests");
    for watched in [
        "wit",
        "guests/Cargo.toml",
        "guests/Cargo.lock",
        "guests/sdk",
        "guests/column-mapping",
    ] {
        // Relative to host/: cargo resolves it against this checkout, so a
        // target dir shared with another checkout still sees changes here.
        println!("cargo:rerun-if-changed=../{watched}");
    }
    println!("cargo:rerun-if-env-changed=KUSTO_METRICS_GUEST_TARGET_DIR");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = guest_target_dir(&out_dir);
    // The test suite builds the other guests into the same folder.
    println!(
        "cargo:rustc-env=KUSTO_METRICS_GUEST_TARGET_DIR={}",
        target_dir.display()
    );

    ensure_target_installed();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--target",
        GUEST_TARGET,
        "-p",
        DEFAULT_GUEST,
    ])
    .arg("--manifest-path")
    .arg(guests.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir);
    // What cargo set for this host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo to build the default guest: {e}"));
    if !status.success() {
        panic!(
            "building the default guest ({DEFAULT_GUEST}) for {GUEST_TARGET} failed; see the cargo output above"
        );
    }
    let built = target_dir
        .join(GUEST_TARGET)
        .join("release")
        .join(format!("{}.wasm", DEFAULT_GUEST.replace('-', "_")));
    let dest = out_dir.join("column_mapping.wasm");
    std::fs::copy(&built, &dest)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), dest.display()));
}

/// `<cargo target dir>/wasm-guests`, shared by debug and release host builds
/// so the guest is compiled once. OUT_DIR is `<target>/<profile>/build/<pkg>/out`.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    if let Some(dir) = env::var_os("KUSTO_METRICS_GUEST_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    out_dir
        .ancestors()
        .nth(4)
        .map(|target| target.join("wasm-guests"))
        .unwrap_or_else(|| out_dir.join("wasm-guests"))
}

/// rustup does not install a rust-toolchain.toml's `targets` by itself on
/// every machine; add the one target we need, or say exactly what to run.
fn ensure_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |root: &Path| root.join("lib/rustlib").join(GUEST_TARGET).exists();
    if sysroot.as_deref().is_some_and(installed) {
        return;
    }
    println!(
        "cargo:warning=the {GUEST_TARGET} target is missing; running `rustup target add {GUEST_TARGET}`"
    );
    let added = Command::new("rustup")
        .args(["target", "add", GUEST_TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !added {
        panic!(
            "the {GUEST_TARGET} Rust target is needed to build the default guest: run `rustup target add {GUEST_TARGET}`"
        );
    }
}
