//! `corral tool build`: builds a tool project (Rust through cargo, Python
//! through componentize-py) into one component, then loads it exactly as
//! the host would, so a tool the host would refuse is refused here with
//! the host's message.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use corral_tools::{LoadedComponent, ToolRuntime};

/// A project found in a directory.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Project {
    /// A `Cargo.toml` package.
    Rust { name: String },
    /// A `pyproject.toml` beside the module it names.
    Python {
        name: String,
        world: String,
        module: String,
    },
}

/// How to build.
pub(crate) struct Build<'a> {
    pub dir: &'a Path,
    /// Where the component goes; default `DIR/NAME.wasm`.
    pub out: Option<PathBuf>,
    /// The componentize-py program.
    pub componentize_py: &'a Path,
}

/// What was built.
pub(crate) struct Built {
    pub path: PathBuf,
    pub component: LoadedComponent,
}

/// Finds the project in `dir`, or says what a project needs.
pub(crate) fn detect(dir: &Path) -> Result<Project> {
    let cargo = dir.join("Cargo.toml");
    let pyproject = dir.join("pyproject.toml");
    if cargo.is_file() {
        let text = std::fs::read_to_string(&cargo)
            .with_context(|| format!("reading {}", cargo.display()))?;
        let doc: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", cargo.display()))?;
        let Some(name) = doc
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
        else {
            bail!(
                "{} has no [package] name; `corral tool build` builds one package (run it in the tool's own directory)",
                cargo.display()
            );
        };
        return Ok(Project::Rust {
            name: name.to_string(),
        });
    }
    if pyproject.is_file() {
        let text = std::fs::read_to_string(&pyproject)
            .with_context(|| format!("reading {}", pyproject.display()))?;
        let doc: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", pyproject.display()))?;
        let Some(name) = doc
            .get("project")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
        else {
            bail!("{} has no [project] name", pyproject.display());
        };
        let corral = doc.get("tool").and_then(|t| t.get("corral"));
        let get = |key: &str, default: &str| {
            corral
                .and_then(|c| c.get(key))
                .and_then(|v| v.as_str())
                .unwrap_or(default)
                .to_string()
        };
        let module = get("module", "app");
        if !dir.join(format!("{module}.py")).is_file() {
            bail!(
                "{} names module `{module}`, but {}/{module}.py does not exist",
                pyproject.display(),
                dir.display()
            );
        }
        if !dir.join("wit").is_dir() {
            bail!(
                "{}/wit is missing: a Python tool builds against the WIT files there (`corral tool new NAME --lang python` writes them)",
                dir.display()
            );
        }
        return Ok(Project::Python {
            name: name.to_string(),
            world: get("world", "corral:tool/tool-component"),
            module,
        });
    }
    bail!(
        "{} holds no tool project: expected a Cargo.toml (Rust) or a pyproject.toml (Python). `corral tool new NAME --lang rust|python` writes one.",
        dir.display()
    )
}

/// Builds the project and checks the component.
pub(crate) fn build(runtime: &ToolRuntime, b: &Build<'_>) -> Result<Built> {
    let project = detect(b.dir)?;
    let name = match &project {
        Project::Rust { name } | Project::Python { name, .. } => name.clone(),
    };
    let out = b
        .out
        .clone()
        .unwrap_or_else(|| b.dir.join(format!("{name}.wasm")));
    // The name becomes a file name: hold it to the tool-name rules, so a
    // project cannot send its component outside its directory.
    crate::tool_new::check_name(&name)?;
    // Built into a fresh file of our own beside the output (never one the
    // project shipped, nor a link it planted), then renamed into place.
    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".corral-build-")
        .suffix(".wasm")
        .tempfile_in(&out_dir)
        .with_context(|| format!("creating a staging file in {}", out_dir.display()))?;
    let staged = staging.path().to_path_buf();
    match &project {
        Project::Rust { name } => {
            let built = cargo_build(b.dir, name)?;
            std::fs::copy(&built, &staged)
                .with_context(|| format!("copying {} to {}", built.display(), staged.display()))?;
        }
        Project::Python { world, module, .. } => {
            let status = Command::new(b.componentize_py)
                .current_dir(b.dir)
                .args(["-d", "wit", "-w", world, "componentize", "-p", ".", module, "-o"])
                .arg(absolute(&staged)?)
                .status()
                .with_context(|| {
                    format!(
                        "could not run `{}`: install it with `pip install componentize-py==0.25.1`, or name it with --componentize-py or CORRAL_COMPONENTIZE_PY",
                        b.componentize_py.display()
                    )
                })?;
            if !status.success() {
                bail!("componentize-py failed ({status}); its message is above");
            }
        }
    }
    let bytes = std::fs::read(&staged).with_context(|| format!("reading {}", staged.display()))?;
    let component = match runtime.load(&bytes) {
        Ok(c) => c,
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "{name} built, but Corral would refuse to load it; nothing was written to {}",
                out.display()
            )));
        }
    };
    staging
        .persist(&out)
        .with_context(|| format!("moving {} to {}", staged.display(), out.display()))?;
    Ok(Built {
        path: out,
        component,
    })
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// Runs `cargo build --release --target wasm32-wasip2` and returns the
/// `.wasm` cargo reports for the package, wherever its target dir is.
fn cargo_build(dir: &Path, name: &str) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context(
            "could not run cargo: install Rust with rustup, then `rustup target add wasm32-wasip2`",
        )?;
    if !output.status.success() {
        bail!(
            "cargo build failed ({}); its message is above. If the target is missing: `rustup target add wasm32-wasip2`",
            output.status
        );
    }
    let mut found = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact"
            || msg["target"]["name"].as_str().map(|n| n.replace('-', "_"))
                != Some(name.replace('-', "_"))
        {
            continue;
        }
        for file in msg["filenames"].as_array().into_iter().flatten() {
            if let Some(f) = file.as_str().filter(|f| f.ends_with(".wasm")) {
                found = Some(PathBuf::from(f));
            }
        }
    }
    found.with_context(|| {
        format!(
            "cargo built `{name}` but reported no .wasm for it: a tool is a `cdylib` (`[lib] crate-type = [\"cdylib\"]`)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_directory_says_what_a_project_needs() {
        let dir = tempfile::tempdir().unwrap();
        let err = detect(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("Cargo.toml") && err.contains("pyproject.toml"),
            "{err}"
        );
        assert!(err.contains("corral tool new"), "{err}");
    }

    #[test]
    fn a_python_project_names_its_module_and_world() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[project]\nname = \"greet\"\n[tool.corral]\nmodule = \"main\"\n",
        )
        .unwrap();
        let err = detect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("main.py"), "{err}");
        std::fs::write(dir.path().join("main.py"), "").unwrap();
        std::fs::create_dir(dir.path().join("wit")).unwrap();
        assert_eq!(
            detect(dir.path()).unwrap(),
            Project::Python {
                name: "greet".into(),
                world: "corral:tool/tool-component".into(),
                module: "main".into()
            }
        );
    }

    #[test]
    fn a_workspace_manifest_is_not_a_tool() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
        let err = detect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no [package] name"), "{err}");
    }
}
