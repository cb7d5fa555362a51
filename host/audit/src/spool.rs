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
//! `ARCHITECTURE.md` (performance notes) gives what the spool saved, as
//! measured by `tests/benches/broker.rs`.
//!
//! Records are written at the end of what the spool holds, into room the
//! file already has (see [`ROOM`]); zeros mark the end. The file's order
//! is the chain's.
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
    /// Data after the zeros that end the records (see [`ROOM`]), which
    /// the writer never leaves: its writes are contiguous, and a sync
    /// covers everything before the record it acknowledges. Zeros written
    /// over records, or pages of unacknowledged writes that a system crash
    /// kept out of order, look like this; which one cannot be told from
    /// the file, so it is refused rather than dropped.
    pub stray: Option<Stray>,
}

/// Where [`Spooled::stray`] data lies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stray {
    /// The first zero byte: where the records end.
    pub gap_at: u64,
    /// The first non-zero byte after it.
    pub data_at: u64,
}

impl Stray {
    pub(crate) fn describe(&self, path: &Path) -> String {
        format!(
            "the spool {path} has data at byte {data} after zeros from byte {gap}, which its writer never leaves: records were zeroed out, or a system crash kept pages of writes never acknowledged (possible on filesystems that do not order a file's data writes, which ext4's default does); copy the spool aside for inspection, then keep the records before the zeros and drop the rest with `truncate -s {gap} {path}`",
            path = path.display(),
            data = self.data_at,
            gap = self.gap_at
        )
    }
}

/// The length the spool is kept at while a writer has it open, past what
/// it holds: records go into room already in the file, so the file's size
/// does not change and a sync has no size change to commit (the first
/// write into each block of the room still allocates that block), which
/// on ext4 makes a sync markedly cheaper and steadier than one that grows
/// the file (figures in `ARCHITECTURE.md`). The room is a hole: it takes no
/// disk, reads as zeros, and a reader stops at the first zero byte, which
/// no record holds (JSON escapes control bytes). Twice the size at which
/// the spool is emptied, so that it is not outgrown between emptyings; a
/// spool that outgrows it grows as it did without room.
pub(crate) const ROOM: u64 = 8 << 20;

const CHUNK: usize = 256 << 10;

fn io_err(path: &Path, what: &str, e: std::io::Error) -> AuditError {
    AuditError::Io {
        path: path.display().to_string(),
        message: format!("cannot {what} the spool: {e}"),
    }
}

/// Reads the spool at `path`; a missing file is an empty spool.
pub(crate) fn read(path: &Path) -> Result<Spooled, AuditError> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Spooled {
                records: Vec::new(),
                torn_bytes: 0,
                stray: None,
            });
        }
        Err(e) => return Err(io_err(path, "read", e)),
    };
    // Up to the first zero byte, in chunks: the room after it is never
    // read.
    let mut bytes = Vec::new();
    let gap_at = loop {
        let start = bytes.len();
        bytes.resize(start + CHUNK, 0);
        let n = loop {
            match file.read(&mut bytes[start..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(path, "read", e)),
            }
        };
        bytes.truncate(start + n);
        if let Some(i) = bytes[start..].iter().position(|b| *b == 0) {
            bytes.truncate(start + i);
            break Some((start + i) as u64);
        }
        if n == 0 {
            break None;
        }
    };
    let stray = match gap_at {
        Some(gap_at) => data_after(&file, gap_at)
            .map_err(|e| io_err(path, "read", e))?
            .map(|data_at| Stray { gap_at, data_at }),
        None => None,
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
        stray,
    })
}

/// The offset of the first non-zero byte at or after `from`, skipping
/// holes without reading them.
fn data_after(file: &std::fs::File, from: u64) -> std::io::Result<Option<u64>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;
    let mut at = from;
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let offset = libc::off_t::try_from(at).map_err(std::io::Error::other)?;
        // SAFETY: `lseek` on a descriptor this function borrows for the
        // call; it reads no memory. The descriptor's own offset moves,
        // which nothing here relies on: reads below are positioned.
        let data = unsafe { libc::lseek(file.as_raw_fd(), offset, libc::SEEK_DATA) };
        let data = if data >= 0 {
            data as u64
        } else {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // No data past `at`.
                Some(libc::ENXIO) => return Ok(None),
                // A filesystem without SEEK_DATA: read every byte.
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => at,
                _ => return Err(e),
            }
        };
        let n = file.read_at(&mut chunk, data)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = chunk[..n].iter().position(|b| *b != 0) {
            return Ok(Some(data + i as u64));
        }
        at = data + n as u64;
    }
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
/// is retried. Data past the records' end is stray only without a live
/// writer, and if a second read finds it too: a writer may have written it
/// after the end was read.
pub(crate) fn read_for_reader(log: &Path) -> Result<Spooled, AuditError> {
    let path = path_of(log);
    let mut tries = 0;
    loop {
        match read(&path) {
            Err(_) if tries < 5 && held_by_writer(&path) => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(mut spooled) if spooled.stray.is_some() => {
                if held_by_writer(&path) {
                    spooled.stray = None;
                    return Ok(spooled);
                }
                // A writer may have closed during the read, after writing
                // past where it saw the records end: once more, with none.
                return read(&path);
            }
            other => return other,
        }
    }
}

fn held_by_writer(path: &Path) -> bool {
    std::fs::File::open(path)
        .is_ok_and(|f| matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)))
}
