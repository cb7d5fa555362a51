//! Denials explained down to the condition, and `@shadow` policies that are
//! evaluated and reported but never enforced.

use std::path::{Path, PathBuf};

use corral_policy::{Common, EngineSources, PolicyEngine, ToolAction};
use serde_json::json;

fn engine(policies: &str) -> PolicyEngine {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.cedar"), policies).unwrap();
    let repo: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    PolicyEngine::load(&EngineSources {
        schema_file: repo.join("policies/schema.cedarschema"),
        policy_dir: dir.path().to_path_buf(),
        tools: vec![
            ToolAction::new(
                "files_write",
                &json!({"type": "object", "properties": {"path": {"type": "string"}, "count": {"type": "integer"}, "api_token": {"type": "string"}}, "required": ["path"]}),
            )
            .unwrap(),
        ],
        entities: json!([
            {"uid": {"type": "Agent", "id": "a1"}, "attrs": {"workspace": {"__entity": {"type": "Workspace", "id": "a1"}}}, "parents": [{"type": "Team", "id": "batch"}]},
            {"uid": {"type": "Workspace", "id": "a1"}, "attrs": {}, "parents": []},
            {"uid": {"type": "Team", "id": "batch"}, "attrs": {}, "parents": []},
        ]),
    })
    .unwrap()
}

fn write(engine: &PolicyEngine, input: serde_json::Value) -> corral_policy::Decision {
    engine
        .decide_tool_call("a1", "files_write", &input, &Common::now("s", 1))
        .unwrap()
}

#[test]
fn a_false_when_condition_is_named_with_the_value_it_compared() {
    let e = engine(
        r#"
@id("notes-only")
permit (principal, action == Action::"files_write", resource)
when { context.input.path != "" && context.input.path like "notes/*" };
"#,
    );
    let d = write(&e, json!({"path": "docs/a.md"}));
    assert_eq!(d.verdict(), "deny");
    let line = d.explain();
    assert!(
        line.contains(r#"notes-only: `context.input.path like "notes/*"` is false (context.input.path is "docs/a.md")"#),
        "{line}"
    );
    // The first false conjunct is the one named.
    let d = write(&e, json!({"path": ""}));
    assert!(
        d.explain()
            .contains(r#"`context.input.path != ""` is false (context.input.path is "")"#),
        "{}",
        d.explain()
    );
}

#[test]
fn a_holding_unless_and_a_forbid_that_applied_are_named() {
    let e = engine(
        r#"
@id("not-in-tmp")
permit (principal, action == Action::"files_write", resource)
unless { context.input.path like "tmp/*" || context.input.path like "cache/*" };

@id("no-dotfiles")
forbid (principal, action == Action::"files_write", resource)
when { context.input.path like ".*" || context.input.path like "*/.*" };
"#,
    );
    let d = write(&e, json!({"path": "cache/x"}));
    assert!(
        d.explain()
            .contains(r#"not-in-tmp: `unless { context.input.path like "cache/*" }` holds"#),
        "{}",
        d.explain()
    );
    let d = write(&e, json!({"path": "notes/.env"}));
    assert_eq!(d.policy_ids, ["no-dotfiles"]);
    assert!(
        d.explain().contains(r#"denied by no-dotfiles — no-dotfiles: `context.input.path like "*/.*"` holds (context.input.path is "notes/.env")"#),
        "{}",
        d.explain()
    );
}

#[test]
fn an_evaluation_error_names_the_expression() {
    let e = engine(
        r#"
@id("counted")
permit (principal, action == Action::"files_write", resource)
when { context.input has count && context.input.count * 4611686018427387904 > 0 };
"#,
    );
    // 2 × 2^62 overflows a Cedar Long: evaluation fails, and the call is
    // denied.
    let d = write(&e, json!({"path": "a", "count": 2}));
    assert!(!d.errors.is_empty(), "{d:?}");
    let line = d.explain();
    assert!(
        line.contains(
            "counted: evaluating `(context.input.count * 4611686018427387904) > 0` failed"
        ),
        "{line}"
    );
    assert!(line.contains("overflow"), "{line}");
}

#[test]
fn a_permit_whose_scope_left_the_request_out_says_which_part() {
    let e = engine(
        r#"
@id("assistants-write")
permit (principal in Team::"assistants", action == Action::"files_write", resource);
"#,
    );
    let d = write(&e, json!({"path": "a"}));
    assert!(
        d.explain().contains(r#"assistants-write: `principal in Team::"assistants"` does not hold (principal is Agent::"a1")"#),
        "{}",
        d.explain()
    );
}

#[test]
fn an_allowed_call_carries_no_explanation() {
    let e = engine(
        r#"
@id("all")
permit (principal, action == Action::"files_write", resource);
"#,
    );
    let d = write(&e, json!({"path": "a"}));
    assert!(
        d.allowed && d.findings.is_empty() && d.shadow.is_none(),
        "{d:?}"
    );
}

#[test]
fn a_shadow_forbid_is_reported_and_not_enforced() {
    let e = engine(
        r#"
@id("all")
permit (principal, action == Action::"files_write", resource);

@id("would-forbid-docs")
@shadow
forbid (principal, action == Action::"files_write", resource)
when { context.input.path like "docs/*" };
"#,
    );
    let d = write(&e, json!({"path": "docs/a"}));
    assert!(d.allowed, "a shadow policy never decides: {d:?}");
    let shadow = d.shadow.as_ref().expect("the shadow set would deny");
    assert_eq!(shadow.verdict, "deny");
    assert_eq!(shadow.policy_ids, ["would-forbid-docs"]);
    assert_eq!(
        d.summary().shadow.as_deref(),
        Some("with shadow policies enforced: deny by would-forbid-docs")
    );
    // Where the shadow set agrees, nothing is recorded.
    let d = write(&e, json!({"path": "notes/a"}));
    assert!(d.allowed && d.shadow.is_none(), "{d:?}");
}

#[test]
fn a_shadow_permit_that_would_allow_a_denied_call_is_reported() {
    let e = engine(
        r#"
@id("would-allow")
@shadow
permit (principal, action == Action::"files_write", resource);
"#,
    );
    let d = write(&e, json!({"path": "a"}));
    assert_eq!(d.verdict(), "deny");
    assert_eq!(d.shadow.as_ref().map(|s| s.verdict), Some("allow"));
}

#[test]
fn shadow_is_refused_where_it_cannot_mean_anything() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.cedar"),
        r#"@id("x") @shadow @approval("sender") permit (principal, action == Action::"files_write", resource);"#,
    )
    .unwrap();
    let repo: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let err = PolicyEngine::load(&EngineSources {
        schema_file: repo.join("policies/schema.cedarschema"),
        policy_dir: dir.path().to_path_buf(),
        tools: vec![
            ToolAction::new(
                "files_write",
                &json!({"type": "object", "properties": {"path": {"type": "string"}}}),
            )
            .unwrap(),
        ],
        entities: json!([]),
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("@approval on a @shadow policy"), "{err}");
}

#[test]
fn an_explanation_never_shows_what_the_log_would_redact() {
    let e = engine(
        r#"
@id("known-token")
permit (principal, action == Action::"files_write", resource)
when { context.input has api_token && context.input.api_token == "letmein" && context.input.path like "notes/*" };
"#,
    );
    let d = write(
        &e,
        json!({"path": "notes/a", "api_token": "hunter2-secret"}),
    );
    let line = d.explain();
    assert!(
        line.contains("context.input.api_token is [redacted]"),
        "{line}"
    );
    assert!(!line.contains("hunter2"), "{line}");
    let long = format!("docs/{}", "x".repeat(2000));
    let d = write(&e, json!({"path": long, "api_token": "letmein"}));
    let line = d.explain();
    assert!(
        line.contains("context.input.path is [2005 bytes]"),
        "{line}"
    );
    assert!(!line.contains("xxxxxxxxxx"), "{line}");
}
