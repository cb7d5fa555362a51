//! Corral's decision log.
//!
//! Every authorization the broker makes — the tool call itself, and each
//! file, HTTP or secret use inside the tool — becomes one [`Record`] in a
//! SQLite database (WAL mode). Records are append-only and hash-chained:
//! each record's hash covers its canonical JSON and the previous record's
//! hash, so [`AuditReader::verify`] finds an edited, deleted or reordered
//! record and names the first bad one.
//!
//! An append seals its record into the chain and writes it, as one JSON
//! line, to the log's spool (`<log>-spool`) on the caller's thread: one
//! small `write`, with no hand-off. The spool is the log's write-ahead
//! log: a record is durable once the spool is. A background thread moves
//! records into SQLite, where queries see them, within about 10 ms, a
//! batch per transaction; once the spool passes 4 MiB it syncs SQLite's
//! WAL and empties the spool. `verify` checks the records not yet moved
//! in place, and the next writer to open the log moves in whatever a
//! crashed one left. Only one writer may have a log open (the spool is
//! locked). Two durability modes ([`Durability`]):
//!
//! - `Strict` (the default): the spool is fsynced before the append
//!   returns; one fsync covers every append written while the previous one
//!   ran (group commit). The broker waits for it before it runs the tool,
//!   so no side effect can happen without its decision surviving a crash
//!   or power loss.
//! - `Batched { window }`: the append returns once the record is written
//!   to the spool (it survives the broker being killed), and a sync
//!   thread fsyncs the spool within `window` (at most 5 ms).
//!   What a power loss or kernel crash can lose: decisions written in the
//!   last `window` before it, together with their tools' effects having
//!   possibly happened.
//!
//! A write or sync that fails stops the log: every later append is refused
//! (fail closed) until it is reopened.
//!
//! The crate depends on neither the broker nor the policy engine: it stores
//! what it is given, and `corral policy replay` reads it back.

mod chain;
mod config;
mod group_sync;
mod reader;
mod record;
mod redact;
mod spool;
mod store;
mod time;
mod writer;

pub use config::{AuditConfig, Durability, RecordObserver};
pub use reader::{AuditReader, Filter, VerifyReport};
pub use record::{Entry, GENESIS_HASH, Kind, Outcome, Record, TokenUsage, Verdict};
pub use redact::Redactor;
pub use time::{BadAge, format_micros, now_micros, parse_age};
pub use writer::{AuditLog, Receipt, Ticket};

/// What can go wrong with the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// SQLite refused something.
    #[error("audit log {path}: {source}")]
    Sqlite {
        /// The database.
        path: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A file could not be read, written or synced.
    #[error("audit log {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What failed, and how.
        message: String,
    },
    /// The log stopped taking appends (a write or sync failed), and why.
    #[error(
        "the audit writer has stopped ({0}); no decision can be recorded, so every call is refused until the broker restarts"
    )]
    WriterStopped(String),
    /// The database or spool is not what the log writes.
    #[error("audit log {path} has an unexpected layout: {message}")]
    Layout {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}
