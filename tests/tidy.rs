//! Checks that keep `ARCHITECTURE.md` true: the dependency claims it makes
//! hold in the real dependency graph (`cargo metadata`); every source file
//! opens with a `//!` saying its one job and stays small; no two modules
//! of a crate import each other, directly or round a longer loop; and
//! bollard's types stay inside the Docker backend.

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
        ("corral-approvals", "wasmtime"),
        ("corral-assurance", "wasmtime"),
        ("corral-policy", "cedar-policy-symcc"),
        ("corral-models", "wasmtime"),
        ("corral-models", "cedar-policy"),
        ("corral-gate", "cedar-policy"),
        ("corral-gate", "wasmtime"),
        ("corral-fd", "wasmtime"),
        ("corral-fd", "cedar-policy"),
        ("corral-distribution", "wasmtime"),
        ("corral-distribution", "cedar-policy"),
        ("corral-web", "wasmtime"),
        ("corral-web", "cedar-policy"),
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

/// The workspace's Rust files, tracked or new, relative to the root.
fn rust_files() -> Vec<String> {
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
    String::from_utf8_lossy(&files.stdout)
        .lines()
        .filter(|p| root.join(p).exists())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_source_file_says_its_job_first() {
    let root = corral_tests::repo_root();
    let mut missing = Vec::new();
    for path in rust_files() {
        let Ok(text) = std::fs::read_to_string(root.join(&path)) else {
            continue;
        };
        if !text.starts_with("//!") {
            missing.push(path.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` doc saying their job: {missing:?}"
    );
}

/// The most lines of code outside `#[cfg(test)]` one host source file may
/// have: past it, a file is doing more than one job.
const MAX_FILE_LINES: usize = 600;

#[test]
fn no_host_source_file_does_several_jobs() {
    let root = corral_tests::repo_root();
    let mut large = Vec::new();
    for path in rust_files() {
        if !(path.starts_with("host/") && path.contains("/src/")) {
            continue;
        }
        let text = std::fs::read_to_string(root.join(&path)).unwrap_or_default();
        let code = text
            .lines()
            .take_while(|l| !l.starts_with("#[cfg(test)]"))
            .count();
        if code > MAX_FILE_LINES {
            large.push(format!("{path} ({code} lines)"));
        }
    }
    assert!(
        large.is_empty(),
        "split these files by job (at most {MAX_FILE_LINES} lines before their tests): {large:?}"
    );
}

/// For each top-level module of the crate rooted at `src`, the sibling
/// modules it names through `crate::` or `super::` outside its tests. A
/// module's own children (`docker/request.rs`) count as part of it.
fn module_imports(src: &std::path::Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for entry in std::fs::read_dir(src)
        .expect("src is a directory")
        .flatten()
    {
        let path = entry.path();
        let module = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let mut text = String::new();
        let mut add = |p: &std::path::Path| {
            let body = std::fs::read_to_string(p).unwrap_or_default();
            let code = body.split("#[cfg(test)]").next().unwrap_or_default();
            // Comments may name any module; only code imports.
            for line in code.lines() {
                text.push_str(line.split("//").next().unwrap_or_default());
                text.push('\n');
            }
        };
        if path.extension().is_some_and(|e| e == "rs") {
            add(&path);
        } else if path.is_dir() {
            for child in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                add(&child.path());
            }
        } else {
            continue;
        }
        files.entry(module).or_default().push_str(&text);
    }
    let names: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(module, text)| {
            let mut named = BTreeSet::new();
            for prefix in ["crate::", "super::"] {
                for (i, _) in text.match_indices(prefix) {
                    let rest = &text[i + prefix.len()..];
                    // `crate::{a, b::c}` names several.
                    let group = match rest.strip_prefix('{') {
                        Some(inner) => inner.split('}').next().unwrap_or_default(),
                        None => rest,
                    };
                    for part in group.split(',') {
                        let first: String = part
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if names.contains(&first) && &first != module {
                            named.insert(first);
                        }
                        if rest.starts_with('{') {
                            continue;
                        }
                        break;
                    }
                }
            }
            (module.clone(), named)
        })
        .collect()
}

/// A loop of modules importing each other, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_cycle_finder_finds_a_loop_and_passes_a_tree() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("a", "c"), ("b", "c")])),
        None
    );
}

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    let root = corral_tests::repo_root();
    let mut crates: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("host"))
        .expect("host/")
        .flatten()
        .map(|e| e.path().join("src"))
        .collect();
    crates.extend([
        root.join("xtask/src"),
        root.join("agent-image/agent/src"),
        root.join("tests/support"),
    ]);
    let mut cycles = Vec::new();
    for src in crates.iter().filter(|s| s.is_dir()) {
        if let Some(cycle) = find_cycle(&module_imports(src)) {
            cycles.push(format!("{}: {}", src.display(), cycle.join(" → ")));
        }
    }
    assert!(
        cycles.is_empty(),
        "modules that import each other (move what they share into a module both import): {cycles:?}"
    );
}

#[test]
fn bollard_types_stay_inside_the_docker_backend() {
    let mut outside = Vec::new();
    for path in rust_files() {
        let in_backend =
            path == "host/sandbox/src/docker.rs" || path.starts_with("host/sandbox/src/docker/");
        if in_backend || !path.starts_with("host/") {
            continue;
        }
        let text =
            std::fs::read_to_string(corral_tests::repo_root().join(&path)).unwrap_or_default();
        if text.lines().any(|l| {
            let code = l.split("//").next().unwrap_or_default();
            code.contains("bollard::")
        }) {
            outside.push(path);
        }
    }
    assert!(
        outside.is_empty(),
        "bollard appears outside host/sandbox/src/docker*: {outside:?}"
    );
}
