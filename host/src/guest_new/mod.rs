//! `kusto-metrics guest new NAME`: a ready guest project in a new folder. A
//! ratio transform (`value = numerator / denominator`, one label) on the
//! Rust SDK, its build file, a transform block, sample rows, the OTLP/JSON
//! they give, a test script and a README with the build, test and push
//! commands.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::error::{Classify, RetryClass};

/// The longest project name taken: it becomes a crate, a file and a
/// repository name.
pub const MAX_NAME_LEN: usize = 64;

/// Where the generated project takes the Rust SDK from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A folder holding the SDK's Cargo.toml (`guests/sdk` of a checkout).
    Path(PathBuf),
    /// The kusto-metrics repository, at a revision when given.
    Git { url: String, rev: Option<String> },
}

impl SdkSource {
    /// The SDK of the checkout this binary was built from, while it is
    /// still there.
    pub fn built_from_checkout() -> Option<SdkSource> {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guests/sdk");
        sdk.join("Cargo.toml")
            .is_file()
            .then(|| SdkSource::Path(sdk.canonicalize().unwrap_or(sdk)))
    }

    /// The dependency's value in Cargo.toml.
    fn toml(&self) -> String {
        match self {
            SdkSource::Path(p) => format!("{{ path = {} }}", toml_string(&p.display().to_string())),
            SdkSource::Git { url, rev: None } => format!("{{ git = {} }}", toml_string(url)),
            SdkSource::Git {
                url,
                rev: Some(rev),
            } => {
                format!(
                    "{{ git = {}, rev = {} }}",
                    toml_string(url),
                    toml_string(rev)
                )
            }
        }
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
}

#[derive(Debug, Error)]
pub enum GuestNewError {
    #[error(
        "project name `{0}`: use lowercase letters, digits, `-` and `_`, starting with a letter, at most {MAX_NAME_LEN} characters"
    )]
    BadName(String),
    #[error("{0} exists and is not empty: choose another name or --dir")]
    NotEmpty(PathBuf),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Classify for GuestNewError {
    fn retry_class(&self) -> RetryClass {
        RetryClass::Permanent
    }
}

/// What to write.
pub struct Options {
    pub name: String,
    pub lang: Lang,
    /// The project folder (`./NAME` unless told).
    pub dir: PathBuf,
    pub sdk: SdkSource,
}

/// A template file: where it goes and its text with `{{name}}`, `{{wasm}}`,
/// `{{sdk}}` and `{{host_version}}` still in it.
struct Template {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

const RUST: &[Template] = &[
    Template {
        path: "Cargo.toml",
        text: include_str!("rust/Cargo.toml"),
        executable: false,
    },
    Template {
        path: "src/lib.rs",
        text: include_str!("rust/lib.rs"),
        executable: false,
    },
    Template {
        path: "transform.yaml",
        text: include_str!("rust/transform.yaml"),
        executable: false,
    },
    Template {
        path: "rows.csv",
        text: include_str!("rust/rows.csv"),
        executable: false,
    },
    Template {
        path: "expected-otlp.json",
        text: include_str!("rust/expected-otlp.json"),
        executable: false,
    },
    Template {
        path: "test.sh",
        text: include_str!("rust/test.sh"),
        executable: true,
    },
    Template {
        path: "README.md",
        text: include_str!("rust/README.md"),
        executable: false,
    },
    Template {
        path: ".gitignore",
        text: include_str!("rust/gitignore"),
        executable: false,
    },
];

/// Writes the project and returns the files written, relative to its folder.
pub fn write(options: &Options) -> Result<Vec<&'static str>, GuestNewError> {
    check_name(&options.name)?;
    let dir = &options.dir;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| GuestNewError::Io { path, source }
    };
    if let Ok(mut entries) = std::fs::read_dir(dir)
        && entries.next().is_some()
    {
        return Err(GuestNewError::NotEmpty(dir.clone()));
    }
    let templates = match options.lang {
        Lang::Rust => RUST,
    };
    let wasm = format!("{}.wasm", options.name.replace('-', "_"));
    let sdk = options.sdk.toml();
    let mut written = Vec::new();
    for t in templates {
        let path = dir.join(t.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let text = t
            .text
            .replace("{{name}}", &options.name)
            .replace("{{wasm}}", &wasm)
            .replace("{{sdk}}", &sdk)
            .replace("{{host_version}}", env!("CARGO_PKG_VERSION"));
        std::fs::write(&path, text).map_err(io(&path))?;
        if t.executable {
            make_executable(&path).map_err(io(&path))?;
        }
        written.push(t.path);
    }
    tracing::debug!(dir = %dir.display(), files = written.len(), "guest project written");
    Ok(written)
}

fn check_name(name: &str) -> Result<(), GuestNewError> {
    let fits = name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if fits {
        Ok(())
    } else {
        Err(GuestNewError::BadName(name.to_string()))
    }
}

#[cfg(unix)]
fn make_executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_a_crate_are_refused() {
        for bad in [
            "",
            "Ratio",
            "1ratio",
            "ratio guest",
            "../x",
            &"a".repeat(65),
        ] {
            assert!(
                matches!(check_name(bad), Err(GuestNewError::BadName(_))),
                "{bad}"
            );
        }
        check_name("team-ratio_2").unwrap();
    }

    #[test]
    fn the_sdk_dependency_is_valid_toml() {
        let git = SdkSource::Git {
            url: "https://example.org/kusto-metrics".into(),
            rev: Some("v0.2.0".into()),
        };
        assert_eq!(
            git.toml(),
            r#"{ git = "https://example.org/kusto-metrics", rev = "v0.2.0" }"#
        );
        let path = SdkSource::Path(PathBuf::from("C:\\src\\sdk \"x\""));
        assert_eq!(path.toml(), r#"{ path = "C:\\src\\sdk \"x\"" }"#);
    }

    #[test]
    fn a_project_is_written_whole_and_never_over_another() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            name: "team-ratio".into(),
            lang: Lang::Rust,
            dir: dir.path().join("team-ratio"),
            sdk: SdkSource::Path(PathBuf::from("/sdk")),
        };
        let files = write(&options).unwrap();
        assert_eq!(files.len(), RUST.len());
        let read = |f: &str| std::fs::read_to_string(options.dir.join(f)).unwrap();
        let cargo = read("Cargo.toml");
        assert!(cargo.contains("name = \"team-ratio\""), "{cargo}");
        assert!(
            cargo.contains("kusto-metrics-guest = { path = \"/sdk\" }"),
            "{cargo}"
        );
        assert!(read("test.sh").contains("release/team_ratio.wasm"));
        for f in files {
            assert!(!read(f).contains("{{"), "{f} has a placeholder left");
        }
        let again = write(&options).unwrap_err();
        assert!(matches!(again, GuestNewError::NotEmpty(_)), "{again}");
    }

    /// The guide shows the template's transform as it is written.
    #[test]
    fn the_guide_shows_the_template() {
        let template = include_str!("rust/lib.rs");
        let body = &template[template.find("use kusto_metrics_guest").unwrap()..];
        let guide = include_str!("../../../docs/custom-guest.md");
        assert!(
            guide.contains(&format!("```rust\n{body}```")),
            "docs/custom-guest.md section 2 differs from host/src/guest_new/rust/lib.rs"
        );
    }

    /// The template's transform stays the short example the guide promises.
    #[test]
    fn the_rust_transform_is_under_60_lines() {
        let lines = include_str!("rust/lib.rs").lines().count();
        assert!(lines < 60, "src/lib.rs has {lines} lines");
    }
}
