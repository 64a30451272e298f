//! `kusto-metrics guest new` as a user runs it: the project it writes builds
//! for wasm32-wasip2 against this checkout's SDK, and its own test script
//! (build, then `test-transform --expect`) passes; an output that is not the
//! expected one fails it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn guest_new(args: &[&str]) -> Output {
    Command::new(common::bin())
        .args(["guest", "new"])
        .args(args)
        .output()
        .expect("the binary runs")
}

/// The project's ./test.sh, with this build of the binary, a target folder
/// kept between test runs (the release profile's LTO takes a while) and a
/// cache of compiled guests of its own.
fn test_script(project: &Path, cache: &Path) -> Output {
    let target = PathBuf::from(concat!(env!("KUSTO_METRICS_GUEST_TARGET_DIR"), "-template"));
    Command::new(project.join("test.sh"))
        .env("KUSTO_METRICS", common::bin())
        .env("CARGO_TARGET_DIR", target)
        .env("KUSTO_METRICS_CACHE_DIR", cache)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("test.sh runs")
}

#[test]
fn the_rust_template_builds_and_passes_its_own_test() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("team-ratio");
    let sdk = common::root().join("guests/sdk");
    let out = guest_new(&[
        "team-ratio",
        "--dir",
        project.to_str().unwrap(),
        "--sdk-path",
        sdk.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("src/lib.rs"), "{stderr}");
    let cargo = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(
        cargo.contains(&format!(
            "kusto-metrics-guest = {{ path = \"{}\" }}",
            sdk.display()
        )),
        "{cargo}"
    );
    // The versions the guests workspace already builds with: no download,
    // and what CI has compiled before.
    std::fs::copy(
        common::root().join("guests/Cargo.lock"),
        project.join("Cargo.lock"),
    )
    .unwrap();

    let cache = dir.path().join("cache");
    let out = test_script(&project, &cache);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "test.sh failed:\n{stderr}");
    assert!(
        stderr.contains("rows read: 4\nmetrics: 1\npoints written: 3\nrows skipped: 1\n  zero-denominator: 1 (first at row 2, 0-based)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the output matches expected-otlp.json"),
        "{stderr}"
    );

    // A guest whose output changes fails its test, naming the point.
    let rows = std::fs::read_to_string(project.join("rows.csv")).unwrap();
    std::fs::write(
        project.join("rows.csv"),
        rows.replace("checkout,45,50", "checkout,40,50"),
    )
    .unwrap();
    let out = test_script(&project, &cache);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            ".metrics[success_ratio].gauge.dataPoints[{Service=checkout} at 1750845600000000000].asDouble: - 0.9 + 0.8"
        ),
        "{stderr}"
    );
}

/// The SDK as a git dependency, in a repository that holds the SDK folder
/// and nothing else of this checkout: no `../../wit`, no workspace settings.
#[test]
fn the_sdk_stands_alone_as_a_git_dependency() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("sdk-repo");
    let sdk = common::root().join("guests/sdk");
    for entry in ["Cargo.toml", "src", "wit"] {
        copy_tree(&sdk.join(entry), &repo.join("guests/sdk").join(entry));
    }
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(&repo)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "sdk"]);
    let rev = git(&["rev-parse", "HEAD"]);
    let url = format!("file://{}", repo.display());

    let project = dir.path().join("git-ratio");
    let out = guest_new(&[
        "git-ratio",
        "--dir",
        project.to_str().unwrap(),
        "--sdk-git",
        &url,
        "--sdk-rev",
        &rev,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cargo = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
    assert!(
        cargo.contains(&format!(
            "kusto-metrics-guest = {{ git = \"{url}\", rev = \"{rev}\" }}"
        )),
        "{cargo}"
    );
    std::fs::copy(
        common::root().join("guests/Cargo.lock"),
        project.join("Cargo.lock"),
    )
    .unwrap();
    let out = test_script(&project, &dir.path().join("cache"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "test.sh failed:\n{stderr}");
    assert!(
        stderr.contains("the output matches expected-otlp.json"),
        "{stderr}"
    );
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

#[test]
fn a_project_is_never_written_over_another() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
    let out = guest_new(&["ratio", "--dir", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exists and is not empty: choose another name or --dir"),
        "{stderr}"
    );
    let out = guest_new(&["Ratio"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("project name `Ratio`"),
        "a bad name is refused before anything is written"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
        "mine"
    );
}
