//! How to open the log: where it is, when a decision counts as recorded,
//! what is redacted, and how many records move into SQLite at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::redact::Redactor;

/// When a decision counts as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Fsynced before the append returns.
    #[default]
    Strict,
    /// Written (it survives the broker being killed) before the append
    /// returns; fsynced within `window`.
    Batched {
        /// The longest a written record waits for its fsync.
        window: Duration,
    },
}

/// Told of each record as it joins the chain and of each wait for the
/// spool's fsync: what metrics count, so their counts are the log's.
///
/// Called on the appending thread, the first while the chain is locked:
/// keep both to a few atomic updates.
pub trait RecordObserver: Send + Sync + std::fmt::Debug {
    /// `record` was sealed (its `seq` and hash are set) and written.
    fn recorded(&self, record: &crate::Record);
    /// A strict append, or the batched sync thread, waited `took` for the
    /// spool to be fsynced.
    fn synced(&self, took: Duration);
}

/// How to open the log.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The SQLite database; the spool is beside it (`<path>-spool`).
    pub path: PathBuf,
    /// When an append counts as recorded.
    pub durability: Durability,
    /// What is redacted from arguments before they are recorded.
    pub redactor: Redactor,
    /// Most records moved into SQLite in one transaction.
    pub max_batch: usize,
    /// Told of every record and sync; none by default.
    pub observer: Option<Arc<dyn RecordObserver>>,
}

impl AuditConfig {
    /// Strict durability, the default redactor, batches of 2,048.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditConfig {
            path: path.into(),
            durability: Durability::Strict,
            redactor: Redactor::default(),
            max_batch: 2048,
            observer: None,
        }
    }

    /// Sets the observer.
    pub fn observer(mut self, observer: Arc<dyn RecordObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Sets the durability.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets the redactor.
    pub fn redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }
}
