//! The log against real SQLite files: appends, the chain across restarts,
//! both durability modes, filters, and each kind of tampering.

use std::time::Duration;

use corral_audit::{
    AuditConfig, AuditLog, AuditReader, Durability, Entry, Filter, GENESIS_HASH, Kind, Outcome,
};
use serde_json::json;

fn call(agent: &str, tool: &str, allowed: bool, n: i64) -> Entry {
    let mut e = Entry::new(Kind::Call, agent, tool, format!("Tool::\"{tool}\""));
    e.arguments = json!({"n": n, "api_token": "sk-live-123"});
    e.session = json!({"session_id": "s1", "calls_in_session": n});
    e.allowed = Some(allowed);
    e.policy_hash = "policyhash".into();
    e.policy_ids = vec![if allowed { "allow-echo" } else { "deny-all" }.to_string()];
    e.tool_sha256 = Some("abc".into());
    e
}

fn fill(log: &AuditLog, n: i64) -> Vec<i64> {
    // Tickets from many appends resolve together: one group commit.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let tickets: Vec<_> = (0..n)
        .map(|i| {
            log.append(call(
                if i % 2 == 0 { "alice" } else { "bob" },
                "echo",
                i % 3 != 0,
                i,
            ))
        })
        .collect();
    rt.block_on(async {
        let mut seqs = Vec::new();
        for t in tickets {
            seqs.push(t.recorded().await.expect("recorded").seq);
        }
        seqs
    })
}

#[test]
fn strict_appends_chain_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    let seqs = fill(&log, 50);
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    drop(log);

    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    let more = fill(&log, 5);
    assert_eq!(more, (51..=55).collect::<Vec<_>>());
    drop(log);

    let reader = AuditReader::open(&path).unwrap();
    let report = reader.verify().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.records, 55);
    assert_eq!(report.head_seq, 55);

    let all = reader.query(&Filter::default()).unwrap();
    assert_eq!(all[0].prev_hash, GENESIS_HASH);
    assert_eq!(
        all[50].prev_hash, all[49].hash,
        "the chain continues across a reopen"
    );
    // Secret-looking keys never reach the disk.
    assert!(all.iter().all(|r| !r.arguments.contains("sk-live")));
    assert!(all.iter().all(|r| r.redacted));
    let raw = std::fs::read(&path).unwrap();
    assert!(!raw.windows(7).any(|w| w == b"sk-live"));
}

#[test]
fn batched_mode_records_and_flushes_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = AuditLog::open(AuditConfig::new(&path).durability(Durability::Batched {
        window: Duration::from_millis(10),
    }))
    .unwrap();
    let seqs = fill(&log, 300);
    assert_eq!(seqs.len(), 300);
    std::thread::sleep(Duration::from_millis(30));
    drop(log);
    let reader = AuditReader::open(&path).unwrap();
    assert_eq!(reader.verify().unwrap().records, 300);
}

#[test]
fn filters_select_by_agent_decision_kind_and_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    fill(&log, 30);
    let mut outcome = Entry::new(Kind::Outcome, "alice", "echo", "Tool::\"echo\"");
    outcome.outcome = Some(Outcome::Timeout);
    outcome.parent = Some(1);
    log.append_blocking(outcome).unwrap();
    drop(log);

    let r = AuditReader::open(&path).unwrap();
    let alice = r
        .query(&Filter {
            agent: Some("alice".into()),
            kind: Some(Kind::Call),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(alice.len(), 15);
    assert!(alice.iter().all(|x| x.agent == "alice"));
    let denied = r
        .query(&Filter {
            allowed: Some(false),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(denied.len(), 10);
    assert!(
        denied
            .iter()
            .all(|x| x.decision.as_deref() == Some("deny") && x.policy_ids == ["deny-all"])
    );
    let outcomes = r
        .query(&Filter {
            kind: Some(Kind::Outcome),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].outcome, Some(Outcome::Timeout));
    assert_eq!(outcomes[0].parent, Some(1));
    assert_eq!(
        r.last(3).unwrap().iter().map(|x| x.seq).collect::<Vec<_>>(),
        [29, 30, 31]
    );
    let after = r
        .query(&Filter {
            after_seq: Some(28),
            limit: Some(2),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(after.iter().map(|x| x.seq).collect::<Vec<_>>(), [29, 30]);
}

/// Opens the file the way an attacker with write access would, drops the
/// guard triggers, and runs `sql`.
fn tamper(path: &std::path::Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();
    conn.execute_batch(sql).unwrap();
}

fn fresh_log(n: i64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    fill(&log, n);
    drop(log);
    (dir, path)
}

#[test]
fn verify_names_the_first_edited_deleted_or_reordered_record() {
    let (_d, path) = fresh_log(20);
    tamper(&path, "UPDATE audit SET decision = 'allow' WHERE seq = 7");
    let report = AuditReader::open(&path).unwrap().verify().unwrap();
    let (seq, why) = report.first_bad.clone().unwrap();
    assert_eq!(seq, 7, "{report:?}");
    assert!(why.contains("edited"), "{why}");
    assert_eq!(report.records, 6);

    // (what the attacker runs, the first bad record, what verify says)
    let cases = [
        ("DELETE FROM audit WHERE seq = 12", 13, "deleted"),
        // Renumbering after a delete hides the gap but not the broken link.
        (
            "DELETE FROM audit WHERE seq = 12; UPDATE audit SET seq = seq - 1 WHERE seq > 12;",
            12,
            "prev_hash",
        ),
        // Swapping two records' positions.
        (
            "UPDATE audit SET seq = -1 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = 5; UPDATE audit SET seq = 5 WHERE seq = -1;",
            4,
            "",
        ),
    ];
    for (sql, bad, reason) in cases {
        let (_d, path) = fresh_log(20);
        tamper(&path, sql);
        let report = AuditReader::open(&path).unwrap().verify().unwrap();
        let (seq, why) = report.first_bad.unwrap();
        assert_eq!(seq, bad, "{sql}");
        assert!(why.contains(reason), "{sql}: {why}");
    }
}

#[test]
fn triggers_refuse_casual_edits() {
    let (_d, path) = fresh_log(3);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let e = conn
        .execute("DELETE FROM audit WHERE seq = 1", [])
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
}

#[test]
fn reader_names_a_missing_log() {
    let dir = tempfile::tempdir().unwrap();
    let err = AuditReader::open(&dir.path().join("nope.db"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("no such audit log"), "{err}");
}

#[test]
fn a_detached_entry_is_committed_without_another_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    log.append_detached(call("alice", "echo", true, 1));
    let reader = AuditReader::open(&path).unwrap();
    let started = std::time::Instant::now();
    while reader.head_seq().unwrap() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never committed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Kept open on purpose: the background thread, not the final flush,
    // committed it.
    drop(log);
}

#[test]
fn commit_queued_commits_detached_entries_on_the_calling_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = AuditLog::open(AuditConfig::new(&path).durability(Durability::Batched {
        window: Duration::from_millis(10),
    }))
    .unwrap();
    // The background thread sleeps up to 100 ms between looks when idle;
    // `commit_queued` must not wait for it.
    log.append_detached(call("alice", "echo", true, 1));
    log.append_detached(call("bob", "echo", false, 2));
    log.commit_queued();
    let reader = AuditReader::open(&path).unwrap();
    assert_eq!(reader.head_seq().unwrap(), 2);
    let report = reader.verify().unwrap();
    assert_eq!((report.records, report.first_bad), (2, None));
    drop(log);
}
