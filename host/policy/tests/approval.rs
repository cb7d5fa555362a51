//! `@approval` permits: the three outcomes, forbid and errors over them,
//! who may answer, and the annotation's load errors.

use std::path::{Path, PathBuf};

use corral_policy::{
    ApproveRequest, Approvers, Common, EngineSources, PolicyEngine, RequestEntity, ToolAction,
};
use serde_json::json;

fn engine(policies: &str) -> Result<PolicyEngine, corral_policy::LoadErrors> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.cedar"), policies).unwrap();
    let repo: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    PolicyEngine::load(&EngineSources {
        schema_file: repo.join("policies/schema.cedarschema"),
        policy_dir: dir.path().to_path_buf(),
        tools: vec![
            ToolAction::new(
                "files_write",
                &json!({"type": "object", "properties": {"path": {"type": "string"}, "count": {"type": "integer"}}, "required": ["path"]}),
            )
            .unwrap(),
        ],
        entities: json!([
            {"uid": {"type": "Agent", "id": "a1"}, "attrs": {"workspace": {"__entity": {"type": "Workspace", "id": "a1"}}}, "parents": []},
            {"uid": {"type": "Workspace", "id": "a1"}, "attrs": {}, "parents": []},
            {"uid": {"type": "Group", "id": "ops"}, "attrs": {}, "parents": []},
            {"uid": {"type": "User", "id": "slack:UOPS"}, "attrs": {"channel_kind": "slack"}, "parents": [{"type": "Group", "id": "ops"}]},
        ]),
    })
}

const ASK_OUTSIDE_NOTES: &str = r#"
@id("notes")
permit (principal, action == Action::"files_write", resource)
when { context.input.path like "notes/*" };

@id("ask-ops")
@approval("group:ops")
permit (principal, action == Action::"files_write", resource);
"#;

fn call(engine: &PolicyEngine, input: serde_json::Value) -> corral_policy::Decision {
    engine
        .decide_tool_call("a1", "files_write", &input, &Common::now("s", 1))
        .unwrap()
}

#[test]
fn a_plain_permit_allows_without_asking() {
    let e = engine(ASK_OUTSIDE_NOTES).unwrap();
    let d = call(&e, json!({"path": "notes/a"}));
    assert!(d.allowed && d.approval.is_none(), "{d:?}");
    assert_eq!(d.policy_ids, ["notes"], "only the plain permit decided");
    assert_eq!(d.verdict(), "allow");
}

#[test]
fn only_an_approval_permit_asks_and_names_its_approvers() {
    let e = engine(ASK_OUTSIDE_NOTES).unwrap();
    let d = call(&e, json!({"path": "src/a"}));
    assert!(!d.allowed, "an ask is never allowed: {d:?}");
    assert_eq!(d.verdict(), "ask");
    let needed = d.approval.as_ref().unwrap();
    assert_eq!(needed.policies.len(), 1);
    assert_eq!(needed.policies[0].policy_id, "ask-ops");
    assert_eq!(needed.policies[0].approvers, Approvers::Group("ops".into()));
    assert_eq!(d.policy_ids, ["ask-ops"]);
    assert!(
        d.explain().contains("group:ops (ask-ops)"),
        "{}",
        d.explain()
    );
    assert!(d.summary().ask && !d.summary().allowed);
    // The indexed path and Cedar's full request agree.
    let request = e
        .tool_request_checked(
            "a1",
            "files_write",
            &json!({"path": "src/a"}),
            &Common::now("s", 1),
        )
        .unwrap();
    assert_eq!(e.authorize(&request).verdict(), "ask");
}

#[test]
fn a_forbid_beats_an_approval_permit() {
    let e = engine(&format!(
        "{ASK_OUTSIDE_NOTES}\n@id(\"no-env\")\nforbid (principal, action == Action::\"files_write\", resource) when {{ context.input.path like \"*.env\" }};\n"
    ))
    .unwrap();
    let d = call(&e, json!({"path": "src/.env"}));
    assert_eq!(d.verdict(), "deny");
    assert_eq!(d.policy_ids, ["no-env"]);
}

#[test]
fn no_permit_at_all_is_a_deny_not_an_ask() {
    let e = engine("@id(\"x\")\n@approval(\"sender\")\npermit (principal, action == Action::\"files_write\", resource) when { context.input.path == \"x\" };\n").unwrap();
    assert_eq!(call(&e, json!({"path": "y"})).verdict(), "deny");
    assert_eq!(call(&e, json!({"path": "x"})).verdict(), "ask");
}

#[test]
fn an_error_in_an_approval_permit_matters_only_when_it_is_needed() {
    // A count of 1 or more overflows: an evaluation error.
    let e = engine(
        r#"
@id("notes")
permit (principal, action == Action::"files_write", resource)
when { context.input.path like "notes/*" };

@id("ask-when-small")
@approval("group:ops")
permit (principal, action == Action::"files_write", resource)
when { context.input has count && context.input.count + 9223372036854775807 > 0 };
"#,
    )
    .unwrap();
    // Step 1 allows without the approval permits: its error is moot.
    assert_eq!(
        call(&e, json!({"path": "notes/a", "count": 5})).verdict(),
        "allow"
    );
    // Step 2 needs it: the error denies, naming it.
    let d = call(&e, json!({"path": "src/a", "count": 5}));
    assert_eq!(d.verdict(), "deny");
    assert_eq!(d.policy_ids, ["ask-when-small"]);
    assert!(!d.errors.is_empty());
    assert_eq!(
        call(&e, json!({"path": "src/a", "count": 0})).verdict(),
        "ask"
    );
}

#[test]
fn an_error_in_a_plain_policy_still_denies() {
    let e = engine(
        r#"
@id("ask")
@approval("group:ops")
permit (principal, action == Action::"files_write", resource);

@id("forbid-big")
forbid (principal, action == Action::"files_write", resource)
when { context.input has count && context.input.count + 9223372036854775807 > 0 };
"#,
    )
    .unwrap();
    assert_eq!(call(&e, json!({"path": "a"})).verdict(), "ask");
    let d = call(&e, json!({"path": "a", "count": 1}));
    assert_eq!(d.verdict(), "deny", "a forbid that errors is a deny: {d:?}");
    assert_eq!(d.policy_ids, ["forbid-big"]);
}

#[test]
fn approval_annotations_that_cannot_work_are_load_errors() {
    let on_forbid =
        engine("\n@id(\"f\")\n@approval(\"group:ops\")\nforbid (principal, action, resource);\n")
            .unwrap_err()
            .to_string();
    assert!(
        on_forbid.contains("p.cedar:2:1") && on_forbid.contains("never be approved away"),
        "{on_forbid}"
    );
    let bad =
        engine("@id(\"p\")\n@approval(\"everyone\")\npermit (principal, action, resource);\n")
            .unwrap_err()
            .to_string();
    assert!(
        bad.contains("p.cedar:1:1") && bad.contains("group:NAME"),
        "{bad}"
    );
}

#[test]
fn approvers_are_group_members_from_the_entities_file_or_the_sender() {
    let e = engine(ASK_OUTSIDE_NOTES).unwrap();
    let ops = Approvers::Group("ops".into());
    assert!(e.names_approver(&ops, "slack:UOPS", None));
    assert!(!e.names_approver(&ops, "slack:UOTHER", None));
    assert!(!e.names_approver(&ops, "local:1000", Some("local:1000")));
    assert!(e.names_approver(&Approvers::Sender, "local:1000", Some("local:1000")));
    assert!(!e.names_approver(&Approvers::Sender, "local:1000", Some("slack:U2")));
    assert!(!e.names_approver(&Approvers::Sender, "local:1000", None));
}

#[test]
fn the_approve_action_can_refuse_self_approval() {
    let e = engine(&format!(
        r#"{ASK_OUTSIDE_NOTES}
@id("ops-approve")
permit (principal in Group::"ops", action == Action::"approve", resource);

@id("not-your-own")
forbid (principal, action == Action::"approve", resource)
when {{ context has requested_by && context.requested_by == principal }};
"#
    ))
    .unwrap();
    let ops = RequestEntity::new("User", "slack:UOPS").attr("channel_kind", json!("slack"));
    let common = Common::now("s", 1);
    let asked = ["ask-ops".to_string()];
    let request = |requested_by| ApproveRequest {
        user: &ops,
        agent: "a1",
        tool: "files_write",
        arguments: r#"{"path":"src/a"}"#,
        requested_by,
        asked_by: &asked,
        common: &common,
    };
    let d = e.decide_approve(&request(None));
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.policy_ids, ["ops-approve"]);
    let own = e.decide_approve(&request(Some("slack:UOPS")));
    assert!(!own.allowed);
    assert_eq!(own.policy_ids, ["not-your-own"]);
    let stranger = RequestEntity::new("User", "slack:UX").attr("channel_kind", json!("slack"));
    let d = e.decide_approve(&ApproveRequest {
        user: &stranger,
        ..request(None)
    });
    assert!(!d.allowed && d.policy_ids.is_empty(), "{d:?}");
}
