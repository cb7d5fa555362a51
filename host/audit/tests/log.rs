//! The log against real SQLite files: appends, the chain across restarts,
//! both durability modes, filters, each kind of tampering, and the spool
//! a crashed writer leaves.

use std::time::Duration;

use corral_audit::{
    AuditConfig, AuditLog, AuditReader, Durability, Entry, Filter, GENESIS_HASH, Kind, Outcome,
    Record, TokenUsage, Verdict,
};
use serde_json::json;

fn call(agent: &str, tool: &str, allowed: bool, n: i64) -> Entry {
    let mut e = Entry::new(Kind::Call, agent, tool, format!("Tool::\"{tool}\""));
    e.arguments = json!({"n": n, "api_token": "sk-live-123"});
    e.session = json!({"session_id": "s1", "calls_in_session": n});
    e.verdict = Some(if allowed {
        Verdict::Allow
    } else {
        Verdict::Deny
    });
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
fn token_usage_is_stored_typed_and_the_chain_verifies_whatever_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    // A provider decides these numbers; one past what SQLite can hold must
    // not turn into a record that no longer matches its hash.
    for (input, output) in [(100, 20), (u64::MAX, 1 << 63)] {
        let mut e = Entry::outcome_of(1, "a", "use_model", "Model::\"m\"", "p", Outcome::Ok);
        e.usage = Some(TokenUsage {
            input_tokens: input,
            output_tokens: output,
        });
        log.append_blocking(e).unwrap();
    }
    drop(log);
    let reader = AuditReader::open(&path).unwrap();
    let report = reader.verify().unwrap();
    assert!(report.ok(), "{report:?}");
    let all = reader.query(&Filter::default()).unwrap();
    assert_eq!(
        all.iter().map(|r| r.usage).collect::<Vec<_>>(),
        vec![
            Some(TokenUsage {
                input_tokens: 100,
                output_tokens: 20
            }),
            Some(TokenUsage {
                input_tokens: i64::MAX as u64,
                output_tokens: i64::MAX as u64
            }),
        ]
    );
    assert_eq!(all[0].tokens_used(), 120);
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
            verdict: Some(Verdict::Deny),
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

/// `count` records sealed onto the chain that ends at `head`, as a
/// writer would have spooled them.
fn sealed(head: (i64, String), count: i64) -> Vec<Record> {
    let (mut seq, mut prev) = head;
    let mut records = Vec::new();
    for n in 0..count {
        seq += 1;
        let mut r = Record {
            seq,
            time_us: 1_700_000_000_000_000 + n,
            kind: Kind::Call,
            agent: "alice".into(),
            action: "echo".into(),
            resource: "Tool::\"echo\"".into(),
            arguments: json!({"n": n}).to_string(),
            redacted: false,
            session: "{}".into(),
            decision: Some("allow".into()),
            policy_ids: vec!["allow-echo".into()],
            errors: vec![],
            policy_hash: "policyhash".into(),
            tool_sha256: None,
            duration_us: None,
            outcome: None,
            parent: None,
            detail: None,
            usage: None,
            shadow: None,
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        r.hash = r.compute_hash();
        prev = r.hash.clone();
        records.push(r);
    }
    records
}

/// The spool a writer killed before it could move `records` into SQLite
/// leaves behind; `torn`: with a last line its death cut off.
fn write_spool(path: &std::path::Path, records: &[Record], torn: bool) -> String {
    let mut text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    if torn {
        text.push_str("{\"seq\":");
    }
    std::fs::write(spool_of(path), &text).unwrap();
    text
}

fn spool_of(path: &std::path::Path) -> std::path::PathBuf {
    let mut name = path.to_path_buf().into_os_string();
    name.push("-spool");
    name.into()
}

fn head(path: &std::path::Path) -> (i64, String) {
    let report = AuditReader::open(path).unwrap().verify().unwrap();
    (report.head_seq, report.head_hash)
}

#[test]
fn records_a_crashed_writer_left_in_the_spool_are_verified_then_moved_in() {
    let (_d, path) = fresh_log(10);
    let (seq, hash) = head(&path);
    let mut spooled = vec![];
    // A record the database already holds: the writer died between moving
    // it and emptying the spool.
    let last = AuditReader::open(&path).unwrap().last(1).unwrap().remove(0);
    assert_eq!((last.seq, &last.hash), (seq, &hash));
    spooled.push(last);
    spooled.extend(sealed((seq, hash), 5));
    write_spool(&path, &spooled, true);

    let report = AuditReader::open(&path).unwrap().verify().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(
        (report.records, report.spooled, report.head_seq),
        (15, 5, 15)
    );

    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    let receipt = log.append_blocking(call("bob", "echo", true, 99)).unwrap();
    assert_eq!(
        receipt.seq, 16,
        "the chain continues after the spooled records"
    );
    drop(log);
    let reader = AuditReader::open(&path).unwrap();
    let report = reader.verify().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.records, report.spooled), (16, 0));
    let moved = reader
        .query(&Filter {
            after_seq: Some(10),
            limit: Some(5),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(moved, spooled[1..], "moved in field by field");
    assert_eq!(std::fs::metadata(spool_of(&path)).unwrap().len(), 0);
}

#[test]
fn a_spool_that_breaks_the_chain_is_refused_and_kept() {
    let (_d, path) = fresh_log(10);
    let mut records = sealed(head(&path), 4);
    // Edited after it was written: the chain names it.
    records[2].decision = Some("deny".into());
    let text = write_spool(&path, &records, false);

    let report = AuditReader::open(&path).unwrap().verify().unwrap();
    let (bad, why) = report.first_bad.clone().unwrap();
    assert_eq!(bad, 13, "{report:?}");
    assert!(
        why.contains("edited") && why.contains("in the spool"),
        "{why}"
    );

    let err = AuditLog::open(AuditConfig::new(&path))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("record 13 in the spool breaks the chain") && err.contains("-spool"),
        "{err}"
    );
    // Nothing was dropped: the spool and the database are as they were.
    assert_eq!(std::fs::read_to_string(spool_of(&path)).unwrap(), text);
    assert_eq!(AuditReader::open(&path).unwrap().head_seq().unwrap(), 10);

    // A copy of a record the database already holds, edited in the spool.
    let mut last = AuditReader::open(&path).unwrap().last(1).unwrap().remove(0);
    last.detail = Some("edited".into());
    write_spool(&path, &[last], false);
    let report = AuditReader::open(&path).unwrap().verify().unwrap();
    let (bad, why) = report.first_bad.clone().unwrap();
    assert_eq!(bad, 10, "{report:?}");
    assert!(why.contains("differs from the database"), "{why}");
    let err = AuditLog::open(AuditConfig::new(&path))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("record 10 in the spool differs"), "{err}");

    std::fs::write(spool_of(&path), "not json\n").unwrap();
    let err = AuditLog::open(AuditConfig::new(&path))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("line 1 is not an audit record"), "{err}");
}

#[test]
fn a_second_writer_is_refused_while_the_first_has_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let first = AuditLog::open(AuditConfig::new(&path)).unwrap();
    let err = AuditLog::open(AuditConfig::new(&path))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("another process has this log open for writing"),
        "{err}"
    );
    first
        .append_blocking(call("alice", "echo", true, 1))
        .unwrap();
    drop(first);
    let second = AuditLog::open(AuditConfig::new(&path)).unwrap();
    assert_eq!(
        second
            .append_blocking(call("alice", "echo", true, 2))
            .unwrap()
            .seq,
        2
    );
}

#[test]
fn an_acknowledged_append_is_on_record_before_it_is_moved_into_sqlite() {
    for durability in [
        Durability::Strict,
        Durability::Batched {
            window: Duration::from_millis(10),
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let log = AuditLog::open(AuditConfig::new(&path).durability(durability)).unwrap();
        for n in 1..=20 {
            log.append_blocking(call("alice", "echo", true, n)).unwrap();
            if n % 2 == 0 {
                log.append_detached(call("bob", "echo", false, n));
            }
        }
        // Whether or not the background thread has moved them yet.
        let report = AuditReader::open(&path).unwrap().verify().unwrap();
        assert!(report.ok(), "{durability:?}: {report:?}");
        assert_eq!(report.records, 30, "{durability:?}");
        drop(log);
        let reader = AuditReader::open(&path).unwrap();
        assert_eq!(reader.head_seq().unwrap(), 30, "{durability:?}");
        assert_eq!(reader.verify().unwrap().spooled, 0, "{durability:?}");
    }
}

/// The room kept past the spool's records (`spool::ROOM`): a hole while a
/// writer has the log, gone once it closes.
#[test]
fn an_open_spool_keeps_unallocated_room_after_its_records() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    for n in 0..20 {
        log.append_blocking(call("alice", "echo", true, n)).unwrap();
    }
    let meta = std::fs::metadata(spool_of(&path)).unwrap();
    assert_eq!(meta.len(), 8 << 20, "the room is kept while open");
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "the room takes no disk: {} bytes allocated",
        meta.blocks() * 512
    );
    // A reader stops where the records end, with the writer live.
    let report = AuditReader::open(&path).unwrap().verify().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.records, 20);
    drop(log);
    assert_eq!(std::fs::metadata(spool_of(&path)).unwrap().len(), 0);
    // Nor after a writer that wrote nothing.
    drop(AuditLog::open(AuditConfig::new(&path)).unwrap());
    assert_eq!(std::fs::metadata(spool_of(&path)).unwrap().len(), 0);
}

/// What a crashed writer leaves: records, maybe a torn line, then the
/// room's zeros.
#[test]
fn records_before_the_room_are_recovered_and_a_torn_line_before_it_dropped() {
    let (_d, path) = fresh_log(10);
    let spooled = sealed(head(&path), 3);
    write_spool(&path, &spooled, true);
    let spool = std::fs::OpenOptions::new()
        .write(true)
        .open(spool_of(&path))
        .unwrap();
    spool.set_len(8 << 20).unwrap();
    drop(spool);

    let report = AuditReader::open(&path).unwrap().verify().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.records, report.spooled), (13, 3));
    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    let receipt = log.append_blocking(call("bob", "echo", true, 1)).unwrap();
    assert_eq!(receipt.seq, 14, "the torn line was dropped, the rest kept");
    drop(log);
    let report = AuditReader::open(&path).unwrap().verify().unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.records, report.spooled), (14, 0));
}

/// Zeros over acknowledged records hide the ones after them from a reader
/// that stops at the first zero: data after the zeros is named, and the
/// writer will not open the log over it.
#[test]
fn data_after_zeros_in_the_spool_is_refused_and_kept() {
    use std::os::unix::fs::FileExt;
    let (_d, path) = fresh_log(10);
    let records = sealed(head(&path), 4);
    let text = write_spool(&path, &records, false);
    let first_len = serde_json::to_string(&records[0]).unwrap().len() + 1;
    // Record 12 (the second) zeroed out in place: 13 and 14 are still
    // there, after the zeros.
    let second_len = serde_json::to_string(&records[1]).unwrap().len() + 1;
    let spool = std::fs::OpenOptions::new()
        .write(true)
        .open(spool_of(&path))
        .unwrap();
    spool
        .write_all_at(&vec![0u8; second_len], first_len as u64)
        .unwrap();
    drop(spool);

    let report = AuditReader::open(&path).unwrap().verify().unwrap();
    let (bad, why) = report
        .first_bad
        .clone()
        .expect("the zeroed record is found");
    assert_eq!(bad, 12, "{report:?}");
    assert!(
        why.contains(&format!("data at byte {}", first_len + second_len))
            && why.contains(&format!("after zeros from byte {first_len}")),
        "{why}"
    );
    let err = AuditLog::open(AuditConfig::new(&path))
        .err()
        .expect("the writer refuses")
        .to_string();
    let cut = format!("truncate -s {first_len} {}", spool_of(&path).display());
    assert!(
        err.contains("after zeros")
            && err.contains("will not open for writing")
            && err.contains(&cut),
        "{err}"
    );
    // Kept as it was, zeros and all.
    let kept = std::fs::read(spool_of(&path)).unwrap();
    assert_eq!(kept.len(), text.len());
    assert_eq!(
        kept[first_len + second_len..],
        text.as_bytes()[first_len + second_len..]
    );
    assert_eq!(AuditReader::open(&path).unwrap().head_seq().unwrap(), 10);

    // The next step the error gives keeps the record before the zeros.
    std::fs::OpenOptions::new()
        .write(true)
        .open(spool_of(&path))
        .unwrap()
        .set_len(first_len as u64)
        .unwrap();
    let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
    let receipt = log.append_blocking(call("bob", "echo", true, 1)).unwrap();
    assert_eq!(receipt.seq, 12, "record 11 was kept, the rest dropped");
}
