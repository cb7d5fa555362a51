//! A policy author's assurance commands through the real binary: `policy
//! prove` and `policy diff` over the real solver, `policy check --explain`,
//! and Cedar CLI test files run unchanged.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use corral_tests::{component_path, repo_root};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tools() -> Vec<String> {
    ["echo", "files", "http-get", "csv-query"]
        .iter()
        .flat_map(|t| {
            [
                "--tool".to_string(),
                component_path(t).display().to_string(),
            ]
        })
        .collect()
}

/// `corral ARGS --tool …` in the repository, with a private cache.
fn corral(args: &[&str], cache: &Path) -> Output {
    let mut with_tools: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    with_tools.extend(tools());
    plain(
        &with_tools.iter().map(String::as_str).collect::<Vec<_>>(),
        cache,
    )
}

/// `corral ARGS` in the repository, without the example tools.
fn plain(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .current_dir(repo_root())
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .env_remove("RUST_LOG")
        .output()
        .expect("run corral")
}

/// The starter policies, schema and entities copied into `dir`.
fn copy_policies(dir: &Path) -> PathBuf {
    let to = dir.join("policies");
    std::fs::create_dir_all(&to).unwrap();
    for f in ["corral.cedar", "schema.cedarschema", "entities.json"] {
        std::fs::copy(repo_root().join("policies").join(f), to.join(f)).unwrap();
    }
    to
}

/// The JSON test case `policy prove`/`diff` printed after "as a test case".
fn printed_case(stdout: &str) -> serde_json::Value {
    let start = stdout
        .find("as a test case")
        .expect("a test case is printed");
    let body: Vec<&str> = stdout[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("      "))
        .collect();
    serde_json::from_str(&body.join("\n")).expect("the printed case is JSON")
}

#[test]
fn prove_holds_for_the_starter_properties_and_a_failure_pastes_as_a_test() {
    let cache = tempfile::tempdir().unwrap();
    let out = corral(&["policy", "prove"], cache.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("9 hold, 0 fail"), "{stdout}");
    assert!(
        stdout.contains("HOLDS  no-dotfile-writes-ever (@never, 1 request type(s), "),
        "the time per property is reported: {stdout}"
    );

    // A property the starter policies break: an agent may be in both
    // teams, and the assistants' model permit then covers it.
    let dir = tempfile::tempdir().unwrap();
    let props = dir.path().join("props");
    std::fs::create_dir(&props).unwrap();
    std::fs::write(
        props.join("batch.cedar"),
        "@id(\"batch-never-uses-models\")\n@never\npermit (principal in Team::\"batch\", action == Action::\"use_model\", resource);\n",
    )
    .unwrap();
    let out = corral(
        &[
            "policy",
            "prove",
            "--properties",
            &props.display().to_string(),
        ],
        cache.path(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("FAILS  batch-never-uses-models"),
        "{stdout}"
    );
    let case = printed_case(&stdout);
    assert_eq!(
        case["decision"], "deny",
        "the case expects what the property demands"
    );

    // Pasted into a test file, the case fails against today's policies
    // (the engine allows it: the counterexample is real) ...
    let tests = dir.path().join("cex.json");
    std::fs::write(&tests, serde_json::to_string(&vec![&case]).unwrap()).unwrap();
    let out = corral(
        &["policy", "test", &tests.display().to_string()],
        cache.path(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("expected Deny, got Allow"), "{stdout}");

    // ... and passes once a forbid fixes them, where the property holds.
    let fixed = copy_policies(dir.path());
    std::fs::write(
        fixed.join("batch.cedar"),
        "@id(\"no-models-for-batch\")\nforbid (principal in Team::\"batch\", action == Action::\"use_model\", resource);\n",
    )
    .unwrap();
    let fixed_dir = fixed.display().to_string();
    let out = corral(
        &[
            "policy",
            "test",
            &tests.display().to_string(),
            "--dir",
            &fixed_dir,
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stdout));
    let props_dir = props.display().to_string();
    let out = corral(
        &[
            "policy",
            "prove",
            "--dir",
            &fixed_dir,
            "--properties",
            &props_dir,
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn diff_says_which_way_a_change_goes_and_gates_a_wider_one() {
    let cache = tempfile::tempdir().unwrap();
    let out = corral(&["policy", "diff", "policies", "policies"], cache.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("16 of 16 comparisons equivalent"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let wider = copy_policies(dir.path());
    let text_of = std::fs::read_to_string(wider.join("corral.cedar")).unwrap();
    let widened = text_of.replace(
        "when { context.input.path like \"notes/*\" };",
        "when { context.input.path like \"notes/*\" || context.input.path like \"docs/*\" };",
    );
    assert_ne!(widened, text_of);
    std::fs::write(wider.join("corral.cedar"), widened).unwrap();
    let wider = wider.display().to_string();

    let out = corral(&["policy", "diff", "policies", &wider], cache.path());
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a wider set fails the gate: {stdout}"
    );
    assert!(
        stdout.contains("MORE  Agent Action::\"files_write\" Tool (allows)"),
        "{stdout}"
    );
    let case = printed_case(&stdout);
    let path = case["request"]["context"]["input"]["path"]
        .as_str()
        .unwrap();
    assert!(
        path.starts_with("docs/"),
        "the request shows the difference: {case}"
    );
    assert!(text(&out.stderr).contains("policy replay --candidate"));

    let out = corral(&["policy", "diff", &wider, "policies"], cache.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "narrower passes the gate: {stdout}");
    assert!(
        stdout.contains("LESS  Agent Action::\"files_write\" Tool (allows)"),
        "{stdout}"
    );
}

#[test]
fn check_explain_names_the_condition_and_its_value() {
    let cache = tempfile::tempdir().unwrap();
    let out = corral(
        &[
            "policy",
            "check",
            "--agent",
            "assistant",
            "--action",
            "files_write",
            "--context",
            r#"{"input":{"path":"docs/a.md","content":"x"}}"#,
            "--explain",
        ],
        cache.path(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains(r#"files-write-notes-only: `context.input.path like "notes/*"` is false (context.input.path is "docs/a.md")"#),
        "{stdout}"
    );
    assert!(stdout.contains("at policies/corral.cedar:"), "{stdout}");
}

#[test]
fn cedar_cli_test_files_run_unchanged_with_a_warning() {
    let cache = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cedar-cli");
    let policies = fixture.join("policies.cedar").display().to_string();
    let tests = fixture.join("tests.json").display().to_string();
    let out = plain(
        &["policy", "test", &tests, "--dir", &policies],
        cache.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("PASS (unnamed case 1) [policy0]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS (unnamed case 2) [policy1]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS an owner edits [owners-edit]"),
        "{stdout}"
    );
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("have no @id and are named by position (policy0, policy1)"),
        "{stderr}"
    );

    // Elsewhere a set without ids is refused, unless asked for.
    let out = plain(&["policy", "validate", "--dir", &policies], cache.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--cedar-ids"),
        "{}",
        text(&out.stderr)
    );
    let out = plain(
        &["policy", "validate", "--cedar-ids", "--dir", &policies],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning:"));
}
