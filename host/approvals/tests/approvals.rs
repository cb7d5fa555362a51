//! The registry against the real policy engine and audit log: who may
//! answer, what each answer records, grants, expiry, shutdown and the cap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corral_approvals::{
    Answer, AnswerError, Approvals, ApprovalsConfig, Ask, AskError, Choice, Event, Resolution,
    Scope,
};
use corral_audit::{AuditConfig, AuditLog, AuditReader, Filter, Kind, Record};
use corral_policy::{Common, EngineSources, PolicyStore, ToolAction};
use serde_json::{Value, json};

const POLICIES: &str = r#"
@id("ask-ops")
@approval("group:ops")
permit (principal, action == Action::"files_write", resource);

@id("ops-approve")
permit (principal in Group::"ops", action == Action::"approve", resource)
unless { context has requested_by && context.requested_by == principal };
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    log: PathBuf,
    store: Arc<PolicyStore>,
    approvals: Approvals,
}

fn fixture(config: ApprovalsConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("p.cedar"), POLICIES).unwrap();
    let repo: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let store = Arc::new(
        PolicyStore::load(EngineSources {
            schema_file: repo.join("policies/schema.cedarschema"),
            policy_dir: policies,
            tools: vec![
                ToolAction::new(
                    "files_write",
                    &json!({"type": "object", "properties": {"path": {"type": "string"}, "token": {"type": "string"}}}),
                )
                .unwrap(),
            ],
            entities: json!([
                {"uid": {"type": "Agent", "id": "a1"}, "attrs": {"workspace": {"__entity": {"type": "Workspace", "id": "a1"}}}, "parents": []},
                {"uid": {"type": "Workspace", "id": "a1"}, "attrs": {}, "parents": []},
                {"uid": {"type": "Group", "id": "ops"}, "attrs": {}, "parents": []},
                {"uid": {"type": "User", "id": "slack:UOPS"}, "attrs": {"channel_kind": "slack"}, "parents": [{"type": "Group", "id": "ops"}]},
                {"uid": {"type": "User", "id": "slack:UOPS2"}, "attrs": {"channel_kind": "slack"}, "parents": [{"type": "Group", "id": "ops"}]},
            ]),
        })
        .unwrap(),
    );
    let log = dir.path().join("audit.db");
    let audit = AuditLog::open(AuditConfig::new(&log)).unwrap();
    let approvals = Approvals::new(store.clone(), audit, config);
    Fixture {
        _dir: dir,
        log,
        store,
        approvals,
    }
}

impl Fixture {
    /// Decides the call and asks, as the broker does.
    fn ask(
        &self,
        arguments: Value,
        sender: Option<&str>,
    ) -> Result<corral_approvals::Waiting, AskError> {
        let engine = self.store.current();
        let decision = engine
            .decide_tool_call("a1", "files_write", &arguments, &Common::now("s", 1))
            .unwrap();
        let needed = decision.approval.expect("the call asks");
        self.approvals.ask(Ask {
            agent: "a1",
            tool: "files_write",
            arguments: &arguments,
            call_seq: 1,
            needed: &needed,
            requested_by: sender,
            origin: None,
            policy_hash: &decision.policy_set_hash,
        })
    }

    /// The grant that covers `agent`'s call with `arguments`, as the
    /// broker looks for one.
    fn grant(&self, agent: &str, arguments: &Value) -> Option<i64> {
        let decision = self
            .store
            .current()
            .decide_tool_call("a1", "files_write", arguments, &Common::now("s", 1))
            .unwrap();
        let needed = decision.approval.expect("the call asks");
        self.approvals.grant_for(&Ask {
            agent,
            tool: "files_write",
            arguments,
            call_seq: 0,
            needed: &needed,
            requested_by: None,
            origin: None,
            policy_hash: &decision.policy_set_hash,
        })
    }

    fn answer(&self, id: i64, user: &str, choice: Choice) -> Result<Resolution, AnswerError> {
        self.approvals.answer(&Answer {
            id,
            user,
            user_kind: "slack",
            via: "slack",
            choice,
        })
    }

    fn records(&self, kind: Kind) -> Vec<Record> {
        let filter = Filter {
            kind: Some(kind),
            ..Default::default()
        };
        // Queries see records once the writer's thread moves them in.
        for _ in 0..200 {
            let found = AuditReader::open(&self.log)
                .unwrap()
                .query(&filter)
                .unwrap();
            if !found.is_empty() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Vec::new()
    }
}

#[test]
fn an_approver_grants_once_and_the_answer_is_recorded_first() {
    let f = fixture(ApprovalsConfig::default());
    let mut events = f.approvals.subscribe();
    let waiting = f
        .ask(json!({"path": "a", "token": "hunter2"}), Some("slack:UDEV"))
        .unwrap();
    let id = waiting.id;
    let Ok(Event::Asked(shown)) = events.try_recv() else {
        panic!("channels hear of the ask")
    };
    assert_eq!(shown.id, id);
    assert_eq!(
        shown.arguments["token"], "[redacted]",
        "shown as the log keeps it"
    );
    assert_eq!(shown.approvers, ["group:ops"]);
    assert_eq!(f.approvals.pending().len(), 1);

    let answered = f.answer(id, "slack:UOPS", Choice::Once).unwrap();
    let Resolution::Granted { record, by, scope } = waiting.wait() else {
        panic!("granted")
    };
    assert_eq!(
        answered,
        Resolution::Granted {
            record,
            by: by.clone(),
            scope
        }
    );
    assert_eq!(by, r#"User::"slack:UOPS""#);
    assert_eq!(scope, Scope::Once);
    assert!(f.approvals.pending().is_empty());
    assert_eq!(
        f.grant("a1", &json!({"path": "a", "token": "hunter2"})),
        None,
        "once is this call only"
    );

    let requested = f.records(Kind::ApprovalRequested);
    assert_eq!(requested[0].seq, id);
    assert_eq!(requested[0].parent, Some(1));
    assert_eq!(requested[0].policy_ids, ["ask-ops"]);
    let granted = f.records(Kind::ApprovalGranted);
    assert_eq!(granted[0].seq, record);
    assert_eq!(granted[0].parent, Some(1));
    assert_eq!(granted[0].decision.as_deref(), Some("allow"));
    assert_eq!(granted[0].policy_ids, ["ops-approve"]);
    assert!(
        granted[0].arguments.contains(r#""via":"slack""#),
        "{}",
        granted[0].arguments
    );

    // A second answer, or a replayed one, finds nothing waiting.
    let again = f.answer(id, "slack:UOPS", Choice::Once).unwrap_err();
    assert_eq!(again, AnswerError::NotPending { id });
    assert_eq!(f.records(Kind::ApprovalRefused).len(), 1);
}

#[test]
fn people_the_annotation_or_the_approve_action_refuse_do_not_count() {
    let f = fixture(ApprovalsConfig::default());
    let waiting = f.ask(json!({"path": "a"}), Some("slack:UOPS")).unwrap();
    // Not in the group the annotation names.
    let e = f
        .answer(waiting.id, "slack:UDEV", Choice::Once)
        .unwrap_err();
    assert!(
        matches!(&e, AnswerError::NotApprover(n) if n.why.contains("group:ops")),
        "{e}"
    );
    // In the group, but `approve` forbids approving one's own request.
    let e = f
        .answer(waiting.id, "slack:UOPS", Choice::Once)
        .unwrap_err();
    assert!(e.to_string().contains("may not answer approval"), "{e}");
    // Denying needs the same right.
    let e = f
        .answer(waiting.id, "slack:UDEV", Choice::Deny { reason: None })
        .unwrap_err();
    assert!(matches!(e, AnswerError::NotApprover(_)));
    assert_eq!(f.approvals.pending().len(), 1, "still waiting");
    assert_eq!(f.records(Kind::ApprovalRefused).len(), 3);

    let Resolution::Denied { reason, .. } = f
        .answer(
            waiting.id,
            "slack:UOPS2",
            Choice::Deny {
                reason: Some("not today".into()),
            },
        )
        .unwrap()
    else {
        panic!("denied")
    };
    assert_eq!(reason.as_deref(), Some("not today"));
    assert!(matches!(waiting.wait(), Resolution::Denied { .. }));
    let denied = f.records(Kind::ApprovalDenied);
    assert!(denied[0].detail.as_deref().unwrap().contains("not today"));
}

#[test]
fn a_period_grant_covers_identical_calls_only_until_it_ends() {
    let f = fixture(ApprovalsConfig::default());
    let args = json!({"path": "a"});
    let waiting = f.ask(args.clone(), None).unwrap();
    let Resolution::Granted { record, scope, .. } = f
        .answer(
            waiting.id,
            "slack:UOPS",
            Choice::For(Duration::from_millis(300)),
        )
        .unwrap()
    else {
        panic!("granted")
    };
    assert!(matches!(scope, Scope::Until { .. }));
    assert_eq!(f.grant("a1", &args), Some(record));
    assert_eq!(f.grant("a1", &json!({"path": "b"})), None);
    assert_eq!(f.grant("a2", &args), None);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(f.grant("a1", &args), None, "expired grants are gone");

    let too_long = f.ask(args, None).unwrap();
    let e = f
        .answer(
            too_long.id,
            "slack:UOPS",
            Choice::For(Duration::from_secs(2 * 86_400)),
        )
        .unwrap_err();
    assert!(matches!(e, AnswerError::TooLong { .. }), "{e}");
}

#[test]
fn no_answer_in_time_and_shutdown_deny_and_are_recorded() {
    let f = fixture(ApprovalsConfig {
        timeout: Duration::from_millis(200),
        ..Default::default()
    });
    let waiting = f.ask(json!({"path": "a"}), None).unwrap();
    let id = waiting.id;
    let Resolution::Expired { record, why } = waiting.wait() else {
        panic!("expired")
    };
    assert!(
        record.is_some() && why.contains("approvals.timeout"),
        "{why}"
    );
    assert!(
        f.answer(id, "slack:UOPS", Choice::Once).is_err(),
        "too late"
    );

    let f = fixture(ApprovalsConfig::default());
    let waiting = f.ask(json!({"path": "a"}), None).unwrap();
    f.approvals.close("the host is shutting down");
    let Resolution::Expired { why, .. } = waiting.wait() else {
        panic!("expired")
    };
    assert_eq!(why, "the host is shutting down");
    assert!(matches!(
        f.ask(json!({"path": "a"}), None),
        Err(AskError::Closed { .. })
    ));
    assert_eq!(f.records(Kind::ApprovalExpired).len(), 1);
}

#[test]
fn a_call_whose_caller_left_stops_asking() {
    let f = fixture(ApprovalsConfig::default());
    let waiting = f.ask(json!({"path": "a"}), None).unwrap();
    let id = waiting.id;
    let Resolution::Expired { why, record } =
        waiting.wait_unless(|| Some("the agent's connection closed".into()))
    else {
        panic!("expired")
    };
    assert_eq!(why, "the agent's connection closed");
    assert!(record.is_some(), "on the record");
    assert!(f.approvals.pending().is_empty());
    assert!(matches!(
        f.answer(id, "slack:UOPS", Choice::Once),
        Err(AnswerError::NotPending { .. })
    ));
}

#[test]
fn an_agent_cannot_bury_its_approvers() {
    let f = fixture(ApprovalsConfig {
        max_pending_per_agent: 2,
        ..Default::default()
    });
    let _one = f.ask(json!({"path": "1"}), None).unwrap();
    let _two = f.ask(json!({"path": "2"}), None).unwrap();
    let e = f.ask(json!({"path": "3"}), None).err().unwrap();
    assert!(e.to_string().contains("max_pending_per_agent"), "{e}");
    assert_eq!(f.approvals.pending().len(), 2);
    assert_eq!(f.records(Kind::ApprovalRefused).len(), 1);
}
