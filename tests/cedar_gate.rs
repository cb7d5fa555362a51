//! Grants enforced at the capability level: the real example tools running
//! under the Cedar gate with the starter policies in `policies/`.

use std::sync::{Arc, OnceLock};

use corral_policy::{CedarGate, Common, EngineSources, PolicyStore, ToolAction, read_entities};
use corral_tests::{LoopbackServer, component_bytes, repo_root};
use corral_tools::{CallContext, CallFailure, Caller, LoadedComponent, StaticSecrets, ToolRuntime};
use serde_json::json;

fn runtime() -> &'static ToolRuntime {
    static RT: OnceLock<ToolRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        ToolRuntime::builder()
            .internal_networks(corral_tests::loopback_for_tests())
            .build()
            .expect("runtime")
    })
}

fn load(name: &str) -> LoadedComponent {
    runtime().load(&component_bytes(name)).expect("component")
}

/// The starter policies name every example tool, so all are registered.
fn store() -> Arc<PolicyStore> {
    let components = [load("echo"), load("files"), load("http-get")];
    let tools = components
        .iter()
        .flat_map(|c| c.tools())
        .map(|t| ToolAction::new(&t.name, &t.input_schema).expect("action"))
        .collect();
    let root = repo_root();
    let sources = EngineSources {
        schema_file: root.join("policies/schema.cedarschema"),
        policy_dir: root.join("policies"),
        tools,
        entities: read_entities(&root.join("policies/entities.json")).expect("entities"),
    };
    Arc::new(PolicyStore::load(sources).unwrap_or_else(|e| panic!("{e}")))
}

fn ctx(
    agent: &str,
    tool: &str,
    store: &Arc<PolicyStore>,
    workspace: Option<std::path::PathBuf>,
) -> CallContext {
    CallContext {
        caller: Caller {
            agent: agent.into(),
            tool: tool.into(),
        },
        workspace,
        gate: Arc::new(CedarGate::new(
            store.clone(),
            Common::now("test-session", 0),
        )),
        secrets: Arc::new(StaticSecrets::new()),
        limits: None,
    }
}

#[test]
fn file_capabilities_follow_the_policies() {
    let files = load("files");
    let store = store();
    let ws = tempfile::tempdir().unwrap();
    let c = |tool: &str| ctx("assistant", tool, &store, Some(ws.path().to_path_buf()));

    let out = runtime()
        .call(
            &files,
            "files_write",
            &json!({"path": "notes/a.md", "content": "hi"}).to_string(),
            &c("files_write"),
        )
        .expect("workspace-only permits writing in its own workspace");
    assert!(out.output.contains("bytes_written"));
    assert_eq!(
        std::fs::read_to_string(ws.path().join("notes/a.md")).unwrap(),
        "hi"
    );

    // A dotfile write is forbidden at the capability level, by id.
    let report = runtime()
        .call(
            &files,
            "files_write",
            &json!({"path": "notes/.env", "content": "x"}).to_string(),
            &c("files_write"),
        )
        .expect_err("forbidden");
    match &report.error.failure {
        CallFailure::Denied(d) => assert_eq!(d.policy_ids, ["no-dotfile-writes"], "{d:?}"),
        other => panic!("{other:?}"),
    }
    assert!(!ws.path().join("notes/.env").exists());

    // An agent the entity store does not know gets nothing.
    let report = runtime()
        .call(
            &files,
            "files_read",
            &json!({"path": "notes/a.md"}).to_string(),
            &ctx("ghost", "files_read", &store, Some(ws.path().to_path_buf())),
        )
        .expect_err("unknown agent");
    assert!(
        matches!(report.error.failure, CallFailure::Denied(_)),
        "{:?}",
        report.error
    );
}

#[test]
fn http_capabilities_follow_the_policies() {
    let http = load("http-get");
    let store = store();
    let server = LoopbackServer::start("nope");
    // 127.0.0.1 is in no host group: denied before any connection.
    let report = runtime()
        .call(
            &http,
            "http_get",
            &json!({"url": server.url("/")}).to_string(),
            &ctx("assistant", "http_get", &store, None),
        )
        .expect_err("denied");
    match &report.error.failure {
        CallFailure::Denied(d) => assert!(d.reason.contains("no permit matched"), "{d:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.connections(), 0);
}
