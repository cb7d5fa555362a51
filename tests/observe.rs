//! Observe mode through the real broker: what lacks a permit is let
//! through and recorded `would-deny`; a forbid, a secret and the runtime's
//! own refusals are enforced as ever; an agent not observed is untouched.

use corral_audit::Kind;
use corral_tests::LoopbackServer;
use corral_tests::broker::{BrokerOptions, TestBroker};
use corral_tests::mcp::{is_error, result_text};
use serde_json::json;

#[test]
fn observe_mode_lets_through_only_what_lacks_a_permit() {
    let server = LoopbackServer::start("ok");
    let mut b = TestBroker::start(BrokerOptions {
        observe: vec!["reporter"],
        extra_policy: Some(
            r#"@id("no-forbidden-echo")
forbid (principal, action == Action::"echo", resource)
when { context.input has message && context.input.message == "forbidden" };"#
                .into(),
        ),
        ..BrokerOptions::default()
    });
    let mut r = b.client("reporter");
    let mut a = b.client("assistant");

    // No permit lets the batch team write outside notes/: observed, it runs.
    let wrote = r.call_tool("files_write", json!({"path": "docs/a.md", "content": "x"}));
    assert!(!is_error(&wrote), "{wrote}");
    assert!(b.workspace("reporter").join("docs/a.md").exists());
    // A forbid still denies, at the call and at the capability.
    assert!(is_error(
        &r.call_tool("echo", json!({"message": "forbidden"}))
    ));
    let dotfile = r.call_tool("files_write", json!({"path": "notes/.env", "content": "x"}));
    assert!(is_error(&dotfile), "{dotfile}");
    assert!(!b.workspace("reporter").join("notes/.env").exists());
    // http_get has no permit for the batch team: the call runs and its
    // request is observed, but the secret goes nowhere no permit sends it,
    // so the request is never made.
    let fetched = r.call_tool(
        "http_get",
        json!({"url": server.url("/x"), "headers": {"Authorization": "Bearer {{secret:github_token}}"}}),
    );
    assert!(is_error(&fetched), "{fetched}");
    assert_eq!(server.connections(), 0);
    // The agent that is not observed is denied as ever.
    let denied = a.call_tool("files_write", json!({"path": "docs/a.md", "content": "x"}));
    assert!(is_error(&denied), "{denied}");
    assert!(
        result_text(&denied).contains("files-write-notes-only"),
        "{denied}"
    );
    drop((r, a));
    b.stop();

    let records = b.records();
    let verdict = |agent: &str, action: &str, kind: Kind| -> Vec<String> {
        records
            .iter()
            .filter(|x| x.agent == agent && x.action == action && x.kind == kind)
            .filter_map(|x| x.decision.clone())
            .collect()
    };
    assert_eq!(
        verdict("reporter", "files_write", Kind::Call),
        ["would-deny", "allow"],
        "docs/ lacks a permit; notes/.env is allowed at the call"
    );
    assert_eq!(
        verdict("reporter", "write_file", Kind::Capability),
        ["allow", "deny"],
        "the dotfile forbid holds in observe mode"
    );
    assert_eq!(verdict("reporter", "echo", Kind::Call), ["deny"]);
    assert_eq!(verdict("reporter", "http_get", Kind::Call), ["would-deny"]);
    assert_eq!(
        verdict("reporter", "http_request", Kind::Capability),
        ["would-deny", "would-deny"],
        "by name, then by address (the tests open loopback)"
    );
    assert_eq!(
        verdict("reporter", "use_secret", Kind::Capability),
        ["deny"],
        "a secret is never let through"
    );
    assert_eq!(verdict("assistant", "files_write", Kind::Call), ["deny"]);
    let observed = records
        .iter()
        .find(|x| x.decision.as_deref() == Some("would-deny"))
        .expect("a would-deny record");
    assert!(
        observed
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("observe mode, let through: denied: no permit matched")),
        "{observed:?}"
    );
}
