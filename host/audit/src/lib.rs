//! Corral's decision log.
//!
//! Every authorization the broker makes — the tool call itself, and each
//! file, HTTP or secret use inside the tool — becomes one [`Record`] in a
//! SQLite database (WAL mode). Records are append-only and hash-chained:
//! each record's hash covers its canonical JSON and the previous record's
//! hash, so [`AuditReader::verify`] finds an edited, deleted or reordered
//! record and names the first bad one.
//!
//! One write connection, behind a lock. Whichever appending thread finds
//! it free commits everything queued as one transaction (leader/follower
//! group commit): alone, an append commits on its own thread without a
//! hand-off; under load, one commit (and one fsync) covers every append
//! that arrived while the previous one ran. Two durability modes
//! ([`Durability`]):
//!
//! - `Strict` (the default): the commit that holds a decision is fsynced
//!   before the append returns. The broker waits for it before it runs the
//!   tool, so no side effect can happen without its decision surviving a
//!   crash or power loss.
//! - `Batched { window }`: the append returns once the decision is
//!   committed to the write-ahead log (it survives the broker being killed),
//!   and the log is fsynced within `window`. What a power loss or kernel
//!   crash can lose: decisions committed in the last `window` before it,
//!   together with their tools' effects having possibly happened.
//!
//! The crate depends on neither the broker nor the policy engine: it stores
//! what it is given, and `corral policy replay` reads it back.

mod reader;
mod record;
mod redact;
mod time;
mod writer;

pub use reader::{AuditReader, Filter, VerifyReport};
pub use record::{Entry, GENESIS_HASH, Kind, Outcome, Record};
pub use redact::Redactor;
pub use time::{format_micros, now_micros, parse_age};
pub use writer::{AuditConfig, AuditLog, Durability, Receipt, Ticket};

/// What can go wrong with the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("audit log {path}: {message}")]
    Io { path: String, message: String },
    #[error(
        "the audit writer has stopped ({0}); no decision can be recorded, so every call is refused until the broker restarts"
    )]
    WriterStopped(String),
    #[error("audit log {path} has an unexpected layout: {message}")]
    Layout { path: String, message: String },
}
