//! The spool: the append-only file a record reaches first.
//!
//! An append seals a record into the hash chain and writes it here as one
//! JSON line (the `audit export --jsonl` form) with a single `write`. A
//! record is durable once this file is fsynced: before the append returns
//! in strict mode (one `fdatasync` shared by every append that arrived
//! meanwhile), within the window in batched mode. The background thread
//! moves records into SQLite in batches; the spool is emptied only once
//! SQLite holds all of it durably, and only when it has grown, since
//! emptying holds appends off.
//!
//! Why not commit each record to SQLite directly: a commit writes every
//! B-tree page it touched (the row and two index entries) to SQLite's
//! WAL, several 4 KiB frames, and that dominated the cost of a decision.
//! The spool costs one small write, and in strict mode one small sync,
//! the least a durable append can cost; SQLite stays the queryable store.
//! In the broker benchmark (`tests/benches/broker.rs`, same runs, A/B),
//! one record alone went from 30–33 µs to 4–6 µs p50 in batched mode and
//! from 159–163 µs to 92–100 µs in strict mode, against a bare
//! `fdatasync` of 75–84 µs.
//!
//! What is in the spool but not yet in the database is acknowledged: the
//! next writer to open the log checks it against the chain and moves it
//! in, and `verify` checks it in place.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

use crate::AuditError;
use crate::record::Record;

/// `<log>-spool`, beside SQLite's own `-wal` and `-shm`: whoever copies
/// the log must copy it too.
pub(crate) fn path_of(log: &Path) -> PathBuf {
    let mut name = log.to_path_buf().into_os_string();
    name.push("-spool");
    PathBuf::from(name)
}

/// The records a spool holds, oldest first.
pub(crate) struct Spooled {
    pub records: Vec<Record>,
    /// Bytes after the last newline: a write torn by a crash. Its record
    /// was never acknowledged (strict) or is within the batched window's
    /// allowed loss, so it is dropped, not an error.
    pub torn_bytes: usize,
}

/// Reads the spool at `path`; a missing file is an empty spool.
pub(crate) fn read(path: &Path) -> Result<Spooled, AuditError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(AuditError::Io {
                path: path.display().to_string(),
                message: format!("cannot read the spool: {e}"),
            });
        }
    };
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut records = Vec::new();
    for (n, line) in bytes[..complete].split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let record: Record = serde_json::from_slice(line).map_err(|e| AuditError::Layout {
            path: path.display().to_string(),
            message: format!(
                "line {} is not an audit record ({e}); it holds acknowledged decisions not yet in the database, so the log will not open for writing until it is restored or moved aside (which loses them)",
                n + 1
            ),
        })?;
        records.push(record);
    }
    Ok(Spooled {
        records,
        torn_bytes: bytes.len() - complete,
    })
}

/// Why `record` cannot follow the record `(head_seq, head_hash)`, if it
/// cannot. Shared by the writer's recovery and `verify`.
pub(crate) fn chain_problem(head_seq: i64, head_hash: &str, record: &Record) -> Option<String> {
    if record.seq <= head_seq {
        Some(format!(
            "it comes after record {head_seq}: records were reordered or duplicated"
        ))
    } else if record.seq != head_seq + 1 {
        Some(format!(
            "expected record {} next: {} record(s) before it were deleted",
            head_seq + 1,
            record.seq - head_seq - 1
        ))
    } else if record.prev_hash != head_hash {
        Some(format!(
            "its prev_hash does not match record {head_seq}'s hash: records were reordered, deleted or replaced"
        ))
    } else if record.compute_hash() != record.hash {
        Some("its hash does not match its contents: the record was edited".to_string())
    } else {
        None
    }
}

/// Whether `record`, a spooled copy of one the database already holds,
/// is that record, unedited. Shared by the writer's recovery and `verify`.
pub(crate) fn matches_stored(conn: &Connection, record: &Record) -> rusqlite::Result<bool> {
    let stored: Option<String> = conn
        .query_row("SELECT hash FROM audit WHERE seq = ?1", [record.seq], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(stored.as_deref() == Some(record.hash.as_str()) && record.compute_hash() == record.hash)
}

/// Reads the spool of the log at `log` for a reader. A live writer may
/// empty and refill the spool during the read, splicing two contents
/// together; while a writer holds the spool, a read that does not parse
/// is retried.
pub(crate) fn read_for_reader(log: &Path) -> Result<Spooled, AuditError> {
    let path = path_of(log);
    let mut tries = 0;
    loop {
        match read(&path) {
            Err(_) if tries < 5 && held_by_writer(&path) => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn held_by_writer(path: &Path) -> bool {
    std::fs::File::open(path)
        .is_ok_and(|f| matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)))
}
