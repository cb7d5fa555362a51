//! The policy engine: loading errors with locations, fail-closed decisions,
//! the request fast path, and hot reload under load.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corral_policy::{Common, EngineSources, PolicyEngine, PolicyStore, ToolAction};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tools() -> Vec<ToolAction> {
    vec![
        ToolAction::new("echo", &json!({"type": "object", "properties": {"message": {"type": "string"}}})).unwrap(),
        ToolAction::new(
            "files_write",
            &json!({"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}, "count": {"type": "integer"}}, "required": ["path", "content"]}),
        )
        .unwrap(),
    ]
}

fn entities() -> Value {
    json!([
        {"uid": {"type": "Team", "id": "assistants"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Agent", "id": "a1"}, "attrs": {"workspace": {"__entity": {"type": "Workspace", "id": "a1"}}}, "parents": [{"type": "Team", "id": "assistants"}]},
        {"uid": {"type": "Workspace", "id": "a1"}, "attrs": {}, "parents": []},
    ])
}

struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new(files: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(tmp.path().join(name), text).unwrap();
        }
        Dir { tmp }
    }
    fn sources(&self) -> EngineSources {
        EngineSources {
            schema_file: repo().join("policies/schema.cedarschema"),
            policy_dir: self.tmp.path().to_path_buf(),
            tools: tools(),
            entities: entities(),
        }
    }
    fn load(&self) -> Result<PolicyEngine, corral_policy::LoadErrors> {
        PolicyEngine::load(&self.sources())
    }
}

const ECHO: &str = "@id(\"echo\")\npermit(principal, action == Action::\"echo\", resource);\n";

#[test]
fn a_missing_id_names_file_and_line() {
    let d = Dir::new(&[(
        "a.cedar",
        "// header\n\npermit(principal, action == Action::\"echo\", resource);\n",
    )]);
    let err = d.load().unwrap_err().to_string();
    assert!(
        err.contains("a.cedar:3:1") && err.contains("no @id"),
        "{err}"
    );
}

#[test]
fn a_duplicate_id_names_both_places() {
    let d = Dir::new(&[("a.cedar", ECHO), ("b.cedar", &format!("\n\n{ECHO}"))]);
    let err = d.load().unwrap_err().to_string();
    assert!(
        err.contains("b.cedar:3:1") && err.contains("duplicate @id") && err.contains("a.cedar:1:1"),
        "{err}"
    );
}

#[test]
fn a_parse_error_names_file_line_and_column() {
    let d = Dir::new(&[(
        "a.cedar",
        "@id(\"x\")\npermit(principal, action, resource)\nwhen { context. };\n",
    )]);
    let err = d.load().unwrap_err().to_string();
    assert!(err.contains("a.cedar:3:"), "{err}");
}

#[test]
fn validation_is_strict_and_located() {
    // `nope` is not in files_write's typed input.
    let d = Dir::new(&[(
        "a.cedar",
        "@id(\"ok\")\npermit(principal, action == Action::\"echo\", resource);\n\n@id(\"bad\")\npermit(principal, action == Action::\"files_write\", resource)\n  when { context.input.nope == \"x\" };\n",
    )]);
    let err = d.load().unwrap_err().to_string();
    assert!(
        err.contains("a.cedar:6:") && err.contains("policy `bad`"),
        "{err}"
    );
    // And the typed input does validate what the tool declares.
    let d = Dir::new(&[(
        "a.cedar",
        "@id(\"notes\")\npermit(principal, action == Action::\"files_write\", resource)\n  when { context.input.path like \"notes/*\" };\n",
    )]);
    d.load().expect("valid");
}

fn common() -> Common {
    Common {
        request_time: 1,
        session_id: "s".into(),
        calls_in_session: 0,
    }
}

#[test]
fn an_error_in_an_applicable_forbid_denies() {
    // Plain Cedar skips a policy whose evaluation errors; for this forbid
    // that would fail open. A huge count overflows the multiplication.
    let d = Dir::new(&[(
        "a.cedar",
        "@id(\"allow-writes\")\npermit(principal, action == Action::\"files_write\", resource);\n\n@id(\"cap-count\")\nforbid(principal, action == Action::\"files_write\", resource)\n  when { context.input has count && context.input.count * 1000000000000 > 5000000000000 };\n",
    )]);
    let engine = d.load().unwrap();
    let small = engine
        .tool_request(
            "a1",
            "files_write",
            &json!({"path": "a", "content": "b", "count": 1}),
            &common(),
        )
        .unwrap();
    let d1 = engine.authorize(&small);
    assert!(d1.allowed, "{d1:?}");
    assert_eq!(d1.policy_ids, ["allow-writes"]);
    let huge = engine
        .tool_request(
            "a1",
            "files_write",
            &json!({"path": "a", "content": "b", "count": 9_000_000_000_000i64}),
            &common(),
        )
        .unwrap();
    // Cedar alone would allow.
    assert_eq!(
        cedar_alone(&engine, &huge).decision(),
        cedar_policy::Decision::Allow
    );
    let d2 = engine.authorize(&huge);
    assert!(!d2.allowed, "{d2:?}");
    assert_eq!(d2.policy_ids, ["cap-count"]);
    assert_eq!(d2.errors.len(), 1);
    assert!(d2.explain().contains("fail closed"), "{}", d2.explain());
}

#[test]
fn an_unknown_agent_is_never_allowed() {
    let d = Dir::new(&[("a.cedar", ECHO)]);
    let engine = d.load().unwrap();
    let r = engine
        .tool_request("ghost", "echo", &json!({}), &common())
        .unwrap();
    // The permit does not look at the principal, so Cedar alone allows.
    assert_eq!(
        cedar_alone(&engine, &r).decision(),
        cedar_policy::Decision::Allow
    );
    let decision = engine.authorize(&r);
    assert!(!decision.allowed);
    assert!(
        decision.errors[0].message.contains("unknown principal"),
        "{decision:?}"
    );
}

#[test]
fn bad_input_is_refused_not_coerced() {
    let d = Dir::new(&[("a.cedar", ECHO)]);
    let engine = d.load().unwrap();
    let err = engine
        .tool_request(
            "a1",
            "files_write",
            &json!({"path": 3, "content": "x"}),
            &common(),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("input.path: expected a string"),
        "{err}"
    );
    let err = engine
        .tool_request("a1", "no_such_tool", &json!({}), &common())
        .unwrap_err();
    assert!(err.to_string().contains("unknown tool"), "{err}");
}

#[test]
fn tool_requests_agree_with_schema_validation() {
    let d = Dir::new(&[(
        "a.cedar",
        "@id(\"notes\")\npermit(principal, action == Action::\"files_write\", resource)\n  when { context.input.path like \"notes/*\" && (if context.input has count then context.input.count < 10 else true) };\n",
    )]);
    let engine = d.load().unwrap();
    for input in [
        json!({"path": "notes/a", "content": "x"}),
        json!({"path": "notes/a", "content": "x", "count": 3}),
        json!({"path": "notes/a", "content": "x", "count": 30}),
        json!({"path": "other", "content": "x", "extra": [1, 2]}),
    ] {
        let fast = engine
            .tool_request("a1", "files_write", &input, &common())
            .unwrap();
        let checked = engine
            .tool_request_checked("a1", "files_write", &input, &common())
            .expect("the schema accepts the fast path's request");
        assert_eq!(fast.to_string(), checked.to_string());
        assert_eq!(engine.authorize(&fast), engine.authorize(&checked));
    }
}

fn write_policy(dir: &Path, allow: bool) {
    let text = if allow {
        "@id(\"v-allow\")\npermit(principal, action == Action::\"echo\", resource);\n"
    } else {
        "@id(\"v-deny\")\nforbid(principal, action == Action::\"echo\", resource);\n"
    };
    // Write-then-rename: an editor may not, but the store must cope
    // either way, and this test is about swaps, not torn writes.
    let tmp = dir.join(".tmp.cedar.part");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("p.cedar")).unwrap();
}

#[test]
fn reload_under_concurrent_authorization_never_shows_a_half_loaded_set() {
    let d = Dir::new(&[]);
    write_policy(d.tmp.path(), true);
    let store = Arc::new(PolicyStore::load(d.sources()).unwrap());
    let allow_hash = store.current().policy_set_hash().to_string();
    write_policy(d.tmp.path(), false);
    let deny_hash = store.reload().unwrap();
    assert_ne!(allow_hash, deny_hash);

    let stop = Arc::new(AtomicBool::new(false));
    let decisions = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (store, stop, decisions) = (store.clone(), stop.clone(), decisions.clone());
            let (allow_hash, deny_hash) = (allow_hash.clone(), deny_hash.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let engine = store.current();
                    let r = engine
                        .tool_request("a1", "echo", &json!({}), &common())
                        .expect("request");
                    let d = engine.authorize(&r);
                    assert!(d.errors.is_empty(), "{d:?}");
                    // Each decision matches the set whose hash it records.
                    if d.policy_set_hash == allow_hash {
                        assert!(d.allowed && d.policy_ids == ["v-allow"], "{d:?}");
                    } else {
                        assert_eq!(d.policy_set_hash, deny_hash);
                        assert!(!d.allowed && d.policy_ids == ["v-deny"], "{d:?}");
                    }
                    decisions.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for i in 0..40 {
        write_policy(d.tmp.path(), i % 2 == 0);
        store.reload().expect("valid change loads");
        if i % 10 == 5 {
            // An invalid change is rejected with its location, and the last
            // good set stays in force.
            let before = store.current().policy_set_hash().to_string();
            std::fs::write(
                d.tmp.path().join("broken.cedar"),
                "@id(\"b\")\npermit(principal, action, resource) when { nope };\n",
            )
            .unwrap();
            let err = store.reload().unwrap_err().to_string();
            assert!(err.contains("broken.cedar:2:"), "{err}");
            assert_eq!(store.current().policy_set_hash(), before);
            std::fs::remove_file(d.tmp.path().join("broken.cedar")).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .expect("no worker saw a failed or inconsistent decision");
    }
    assert!(decisions.load(Ordering::Relaxed) > 100);
}

#[test]
fn the_watcher_reloads_on_change() {
    let d = Dir::new(&[]);
    write_policy(d.tmp.path(), true);
    let store = Arc::new(PolicyStore::load(d.sources()).unwrap());
    let _watch = store.watch().expect("watch");
    let before = store.current().policy_set_hash().to_string();
    write_policy(d.tmp.path(), false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.current().policy_set_hash() == before {
        assert!(
            Instant::now() < deadline,
            "the change was not picked up within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // An invalid edit is ignored by the watcher; the good set stays.
    let good = store.current().policy_set_hash().to_string();
    std::fs::write(d.tmp.path().join("p.cedar"), "this is not cedar").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(store.current().policy_set_hash(), good);
}

/// `decide_tool_call` (context-free policies decided once per agent and
/// tool) gives exactly what the request-then-authorize path gives: the
/// same decisions, policies and errors, and the same refusals of bad
/// input, unknown tools and unknown agents, on both of its paths.
#[test]
fn tool_call_decisions_agree_with_the_full_path() {
    let d = Dir::new(&[(
        "a.cedar",
        concat!(
            // Context-free: decided once.
            "@id(\"echo\")\npermit(principal, action == Action::\"echo\", resource);\n",
            "@id(\"team-writes\")\npermit(principal in Team::\"assistants\", action == Action::\"files_write\", resource);\n",
            // A context-free evaluation error (an overflow): echo fails
            // closed.
            "@id(\"broken\")\nforbid(principal, action == Action::\"echo\", resource) when { 9223372036854775807 + 1 > 0 };\n",
            // Reads the context: evaluated per call.
            "@id(\"notes-only\")\nforbid(principal, action == Action::\"files_write\", resource) unless { context.input.path like \"notes/*\" };\n",
            "@id(\"cap\")\nforbid(principal, action, resource) when { context.common.calls_in_session > 5 };\n",
        ),
    )]);
    let engine = d.load().unwrap();
    let full = |agent: &str, tool: &str, input: &Value, common: &Common| {
        engine
            .tool_request(agent, tool, input, common)
            .map(|r| engine.authorize(&r))
            .map_err(|e| e.to_string())
    };
    let (mut allowed, mut errors) = (0, 0);
    for calls in [0, 6] {
        let common = Common {
            calls_in_session: calls,
            ..common()
        };
        for (agent, tool, input) in [
            ("a1", "echo", json!({"message": "hi"})),
            ("a1", "echo", json!({"message": 7})),
            (
                "a1",
                "files_write",
                json!({"path": "notes/a", "content": "x"}),
            ),
            (
                "a1",
                "files_write",
                json!({"path": "etc/a", "content": "x"}),
            ),
            ("a1", "files_write", json!({"path": "notes/a"})),
            (
                "a1",
                "files_write",
                json!({"path": "notes/a", "content": "x", "count": 1.5}),
            ),
            ("a1", "nope", json!({})),
            ("ghost", "echo", json!({"message": "hi"})),
            ("ghost", "echo", json!({"message": 7})),
        ] {
            // Twice: the first call builds the agent's entry, the second
            // uses it.
            for _ in 0..2 {
                let fast = engine
                    .decide_tool_call(agent, tool, &input, &common)
                    .map_err(|e| e.to_string());
                assert_eq!(
                    fast,
                    full(agent, tool, &input, &common),
                    "{agent} {tool} {input} calls={calls}"
                );
                errors += usize::from(fast.as_ref().is_ok_and(|d| !d.errors.is_empty()));
                allowed += usize::from(fast.is_ok_and(|d| d.allowed));
            }
        }
    }
    // Both paths decided something either way.
    assert_eq!(allowed, 2, "notes/a allowed below the cap");
    assert!(errors >= 4, "echo's error and the unknown agent: {errors}");
    let d = engine
        .decide_tool_call(
            "a1",
            "files_write",
            &json!({"path": "notes/a", "content": "x"}),
            &common(),
        )
        .unwrap();
    assert!(d.allowed, "{d:?}");
}

/// Cedar's plain answer over the whole set, without Corral's index or its
/// fail-closed rules: what Corral's decisions are compared with.
fn cedar_alone(
    engine: &corral_policy::PolicyEngine,
    request: &cedar_policy::Request,
) -> cedar_policy::Response {
    cedar_policy::Authorizer::new().is_authorized(
        request,
        &engine.policies().set,
        engine.entities(),
    )
}
