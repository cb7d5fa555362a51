//! Checks that keep `ARCHITECTURE.md` true: the dependency claims it makes
//! hold in the real dependency graph (`cargo metadata`), and every source
//! file opens with a `//!` saying its one job.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Each workspace crate's normal (non-dev, non-build) dependencies, by
/// crate name, transitively.
fn closures() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(corral_tests::repo_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let edges: BTreeMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let normal = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().unwrap())
                .collect();
            (n["id"].as_str().unwrap(), normal)
        })
        .collect();
    let mut out = BTreeMap::new();
    for member in meta["workspace_members"].as_array().unwrap() {
        let member = member.as_str().unwrap();
        let mut seen = BTreeSet::new();
        let mut todo = vec![member];
        while let Some(id) = todo.pop() {
            for dep in edges.get(id).into_iter().flatten() {
                if seen.insert(name_of[dep].to_string()) {
                    todo.push(dep);
                }
            }
        }
        out.insert(name_of[member].to_string(), seen);
    }
    out
}

/// The workspace crates that name `dependency` in their own manifest
/// (as a normal dependency).
fn direct_dependents(dependency: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--no-deps"])
        .current_dir(corral_tests::repo_root())
        .output()
        .expect("cargo metadata runs");
    let meta: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["name"] == dependency && d["kind"].is_null())
        })
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_dependency_graph_is_the_architecture() {
    let deps = closures();
    let never = [
        ("corral-policy", "wasmtime"),
        ("corral-audit", "wasmtime"),
        ("corral-audit", "cedar-policy"),
        ("corral-channels", "wasmtime"),
        ("corral-models", "wasmtime"),
        ("corral-models", "cedar-policy"),
        ("corral-gate", "cedar-policy"),
        ("corral-gate", "wasmtime"),
        ("corral-fd", "wasmtime"),
        ("corral-fd", "cedar-policy"),
    ];
    for (krate, forbidden) in never {
        let closure = deps
            .get(krate)
            .unwrap_or_else(|| panic!("{krate} is not in the workspace"));
        assert!(
            !closure.contains(forbidden),
            "ARCHITECTURE.md says {krate} never links {forbidden}, but it does"
        );
    }
    // The Docker client is the sandbox's alone: every other crate reaches
    // containers through `corral-sandbox`.
    let direct = direct_dependents("bollard");
    assert_eq!(
        direct,
        BTreeSet::from(["corral-sandbox".to_string()]),
        "only corral-sandbox may depend on bollard directly"
    );
    assert_eq!(
        deps["corral-fd"],
        BTreeSet::from(["libc".to_string()]),
        "corral-fd depends on libc alone"
    );
}

#[test]
fn every_source_file_says_its_job_first() {
    let root = corral_tests::repo_root();
    let files = Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "*.rs",
        ])
        .current_dir(&root)
        .output()
        .expect("git runs");
    let mut missing = Vec::new();
    for path in String::from_utf8_lossy(&files.stdout).lines() {
        let Ok(text) = std::fs::read_to_string(root.join(path)) else {
            continue;
        };
        if !text.starts_with("//!") {
            missing.push(path.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` doc saying their job: {missing:?}"
    );
}
