//! `corral tool new`: writes a standalone tool project (manifest, source,
//! README, a first test, and for Python the WIT files) that builds outside
//! this repository.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The languages `corral tool new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    /// Rust, on the `corral-tool` SDK crate.
    Rust,
    /// Python, built with componentize-py.
    Python,
}

/// Where a Rust project gets the SDK from when `--sdk-path` is not given.
const SDK_GIT: &str = "https://example.invalid/corral";

/// The WIT a Python project builds against: `wit/` of this repository, as
/// the binary was built with it.
const WIT_FILES: &[(&str, &str)] = &[
    ("tool.wit", include_str!("../../../wit/tool.wit")),
    (
        "deps/cli/package.wit",
        include_str!("../../../wit/deps/cli/package.wit"),
    ),
    (
        "deps/clocks/package.wit",
        include_str!("../../../wit/deps/clocks/package.wit"),
    ),
    (
        "deps/filesystem/package.wit",
        include_str!("../../../wit/deps/filesystem/package.wit"),
    ),
    (
        "deps/http/package.wit",
        include_str!("../../../wit/deps/http/package.wit"),
    ),
    (
        "deps/io/package.wit",
        include_str!("../../../wit/deps/io/package.wit"),
    ),
    (
        "deps/random/package.wit",
        include_str!("../../../wit/deps/random/package.wit"),
    ),
    (
        "deps/sockets/package.wit",
        include_str!("../../../wit/deps/sockets/package.wit"),
    ),
];

/// What to scaffold.
pub(crate) struct NewTool<'a> {
    pub name: &'a str,
    pub lang: Lang,
    pub dir: Option<PathBuf>,
    /// A local checkout's `wit/rust`, instead of the git dependency.
    pub sdk_path: Option<PathBuf>,
}

/// Checks a project name: it becomes the crate or package name and, with
/// `-` as `_`, the tool's name, so it follows the tool-name rules.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok_start = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok_start || !ok_chars || name.len() > 64 {
        bail!(
            "`{name}` cannot name a tool: use lowercase letters, digits, `-` and `_`, start with a letter, at most 64 characters (for example `csv-stats`)"
        );
    }
    Ok(())
}

/// Writes the project and returns its directory.
pub(crate) fn scaffold(new: &NewTool<'_>) -> Result<PathBuf> {
    check_name(new.name)?;
    let dir = new.dir.clone().unwrap_or_else(|| PathBuf::from(new.name));
    if dir.exists() {
        let empty = std::fs::read_dir(&dir)
            .with_context(|| format!("{} exists and cannot be read", dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} already exists and is not empty; nothing was written. Choose another directory, or remove it first.",
                dir.display()
            );
        }
    }
    let tool = new.name.replace('-', "_");
    let fill = |template: &str, sdk: &str| {
        template
            .replace("{{name}}", new.name)
            .replace("{{tool}}", &tool)
            .replace("{{sdk}}", sdk)
    };
    let mut files: Vec<(String, String)> = Vec::new();
    match new.lang {
        Lang::Rust => {
            let sdk = match &new.sdk_path {
                Some(path) => {
                    let path = path
                        .canonicalize()
                        .with_context(|| format!("--sdk-path {} does not exist", path.display()))?;
                    if !path.join("Cargo.toml").is_file() {
                        bail!(
                            "--sdk-path {} has no Cargo.toml; point it at `wit/rust` in a Corral checkout",
                            path.display()
                        );
                    }
                    format!("{{ path = {} }}", toml_string(&path.display().to_string()))
                }
                None => format!("{{ git = \"{SDK_GIT}\" }}"),
            };
            let t = |s: &str| fill(s, &sdk);
            files.push((
                "Cargo.toml".into(),
                t(include_str!("templates/rust/Cargo.toml.in")),
            ));
            files.push((
                "src/lib.rs".into(),
                t(include_str!("templates/rust/lib.rs.in")),
            ));
            files.push((
                "README.md".into(),
                t(include_str!("templates/rust/README.md.in")),
            ));
            files.push((
                ".gitignore".into(),
                t(include_str!("templates/rust/gitignore.in")),
            ));
        }
        Lang::Python => {
            if new.sdk_path.is_some() {
                bail!(
                    "--sdk-path is for Rust projects; a Python project carries its WIT files in wit/"
                );
            }
            let t = |s: &str| fill(s, "");
            files.push((
                "app.py".into(),
                t(include_str!("templates/python/app.py.in")),
            ));
            files.push((
                "pyproject.toml".into(),
                t(include_str!("templates/python/pyproject.toml.in")),
            ));
            files.push((
                "README.md".into(),
                t(include_str!("templates/python/README.md.in")),
            ));
            files.push((
                ".gitignore".into(),
                t(include_str!("templates/python/gitignore.in")),
            ));
            for (path, text) in WIT_FILES {
                files.push((format!("wit/{path}"), (*text).to_string()));
            }
        }
    }
    files.push((
        "test.sh".into(),
        fill(include_str!("templates/test.sh.in"), ""),
    ));
    write_all(&dir, &files)?;
    Ok(dir)
}

/// Writes every file into a fresh sibling directory, then renames it into
/// place, so that a failure leaves nothing half-written.
fn write_all(dir: &Path, files: &[(String, String)]) -> Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".corral-tool-new-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
    for (path, text) in files {
        let dest = staging.path().join(path);
        if let Some(d) = dest.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        std::fs::write(&dest, text).with_context(|| format!("writing {}", dest.display()))?;
    }
    set_executable(&staging.path().join("test.sh"))?;
    if dir.exists() {
        // Checked empty above; rename cannot replace a directory.
        std::fs::remove_dir(dir).with_context(|| format!("replacing empty {}", dir.display()))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, dir)
        .with_context(|| format!("moving {} to {}", staged.display(), dir.display()))?;
    Ok(())
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_tool_name_rules() {
        for good in ["greet", "csv-stats", "a1_b"] {
            check_name(good).unwrap();
        }
        for bad in ["", "Greet", "1st", "has space", "dot.name", &"a".repeat(65)] {
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains("cannot name a tool"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_non_empty_directory_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let err = scaffold(&NewTool {
            name: "greet",
            lang: Lang::Python,
            dir: Some(dir.path().to_path_buf()),
            sdk_path: None,
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("not empty"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("keep.txt")).unwrap(),
            "mine"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_python_project_carries_the_wit_it_builds_against() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("greet");
        scaffold(&NewTool {
            name: "greet",
            lang: Lang::Python,
            dir: Some(dir.clone()),
            sdk_path: None,
        })
        .unwrap();
        let wit = std::fs::read_to_string(dir.join("wit/tool.wit")).unwrap();
        assert!(wit.contains("package corral:tool@0.1.0;"));
        assert!(dir.join("wit/deps/http/package.wit").is_file());
        let app = std::fs::read_to_string(dir.join("app.py")).unwrap();
        assert!(app.contains("name=\"greet\""), "{app}");
        // Nothing but the project is left in the parent.
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
