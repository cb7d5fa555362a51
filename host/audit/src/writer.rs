//! The single writer: group commit, hash chain, durability modes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::AuditError;
use crate::record::{Entry, GENESIS_HASH, Record};
use crate::redact::Redactor;
use crate::time::now_micros;

/// When a decision counts as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Fsynced before the ticket resolves.
    #[default]
    Strict,
    /// In the write-ahead log before the ticket resolves; fsynced within
    /// `window`.
    Batched { window: Duration },
}

/// How to open the log.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub durability: Durability,
    pub redactor: Redactor,
    /// Most records committed in one transaction.
    pub max_batch: usize,
    /// Entries waiting for the writer before `append` pushes back.
    pub queue_capacity: usize,
}

impl AuditConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditConfig {
            path: path.into(),
            durability: Durability::Strict,
            redactor: Redactor::default(),
            max_batch: 2048,
            queue_capacity: 65_536,
        }
    }

    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    pub fn redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }
}

/// Proof that an entry is recorded to the configured durability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub seq: i64,
    pub hash: String,
}

/// Resolves when the entry is recorded.
pub struct Ticket(oneshot::Receiver<Result<Receipt, String>>);

impl Ticket {
    pub async fn recorded(self) -> Result<Receipt, AuditError> {
        match self.0.await {
            Ok(Ok(receipt)) => Ok(receipt),
            Ok(Err(e)) => Err(AuditError::WriterStopped(e)),
            Err(_) => Err(AuditError::WriterStopped("the writer thread exited".into())),
        }
    }
}

type Outcome = Result<Receipt, String>;

/// Where the writer reports a commit.
enum Reply {
    None,
    Async(oneshot::Sender<Outcome>),
    /// For threads that may sit inside a runtime they do not own (a tool's
    /// HTTP hook runs inside wasmtime-wasi's `block_on`), where tokio's
    /// `blocking_recv` would panic.
    Sync(mpsc::SyncSender<Outcome>),
}

impl Reply {
    fn send(self, outcome: Outcome) {
        match self {
            Reply::None => {}
            Reply::Async(tx) => {
                let _ = tx.send(outcome);
            }
            Reply::Sync(tx) => {
                let _ = tx.send(outcome);
            }
        }
    }
}

type Job = (Entry, Reply);

/// The handle the broker appends through. Cloning is cheap; the writer
/// thread stops when the last handle is dropped, after committing and
/// syncing everything queued.
#[derive(Clone)]
pub struct AuditLog {
    tx: SyncSender<Job>,
    path: PathBuf,
    _thread: std::sync::Arc<WriterThread>,
}

struct WriterThread(std::sync::Mutex<Option<JoinHandle<()>>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        // The channel closes when the last `AuditLog` goes; joining makes
        // sure the final batch is committed before the process moves on.
        if let Some(handle) = self.0.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
    }
}

impl AuditLog {
    /// Opens (creating if needed) the log and starts its writer.
    pub fn open(config: AuditConfig) -> Result<AuditLog, AuditError> {
        let conn = open_writer(&config.path, config.durability)?;
        let (seq, hash) = chain_head(&conn, &config.path)?;
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity.max(1));
        let path = config.path.clone();
        let mut writer = Writer {
            conn,
            path: config.path.clone(),
            wal: None,
            config,
            last_seq: seq,
            last_hash: hash,
        };
        let handle = std::thread::Builder::new()
            .name("corral-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::Io {
                path: path.display().to_string(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(AuditLog {
            tx,
            path,
            _thread: std::sync::Arc::new(WriterThread(std::sync::Mutex::new(Some(handle)))),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `entry`; the ticket resolves when it is recorded.
    pub fn append(&self, entry: Entry) -> Ticket {
        let (tx, rx) = oneshot::channel();
        if !self.enqueue((entry, Reply::Async(tx))) {
            return stopped_ticket();
        }
        Ticket(rx)
    }

    /// Appends `entry` and blocks the calling thread until it is recorded.
    /// Safe on any thread that may block, inside a runtime or not.
    pub fn append_blocking(&self, entry: Entry) -> Result<Receipt, AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        if !self.enqueue((entry, Reply::Sync(tx))) {
            return Err(AuditError::WriterStopped("the writer thread exited".into()));
        }
        match rx.recv() {
            Ok(Ok(receipt)) => Ok(receipt),
            Ok(Err(e)) => Err(AuditError::WriterStopped(e)),
            Err(_) => Err(AuditError::WriterStopped("the writer thread exited".into())),
        }
    }

    /// Queues `entry` without waiting for it: for outcome records, whose
    /// loss in a crash loses no decision.
    pub fn append_detached(&self, entry: Entry) {
        self.enqueue((entry, Reply::None));
    }

    fn enqueue(&self, job: Job) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            // A full queue means the disk is behind; waiting here is the
            // back-pressure that keeps memory bounded.
            Err(TrySendError::Full(job)) => self.tx.send(job).is_ok(),
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

fn stopped_ticket() -> Ticket {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(Err("the writer thread exited".into()));
    Ticket(rx)
}

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    seq         INTEGER PRIMARY KEY,
    time_us     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    agent       TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    arguments   TEXT NOT NULL,
    redacted    INTEGER NOT NULL,
    session     TEXT NOT NULL,
    decision    TEXT,
    policy_ids  TEXT NOT NULL,
    errors      TEXT NOT NULL,
    policy_hash TEXT NOT NULL,
    tool_sha256 TEXT,
    duration_us INTEGER,
    outcome     TEXT,
    parent      INTEGER,
    detail      TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_agent_time ON audit (agent, time_us);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time_us);
-- Guard rails against accidental edits; the hash chain is what catches
-- deliberate ones.
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> AuditError + '_ {
    move |source| AuditError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

fn open_writer(path: &Path, durability: Durability) -> Result<Connection, AuditError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::Io {
            path: dir.display().to_string(),
            message: format!("cannot create the log's directory: {e}"),
        })?;
    }
    let err = sqlite_err(path);
    let conn = Connection::open(path).map_err(&err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(&err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(AuditError::Layout {
            path: path.display().to_string(),
            message: format!("cannot switch to WAL mode (journal mode is {mode})"),
        });
    }
    // FULL: every commit fsyncs the WAL. NORMAL: commits reach the WAL
    // without an fsync; the writer syncs it within the batch window.
    let sync = match durability {
        Durability::Strict => "FULL",
        Durability::Batched { .. } => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(&err)?;
    conn.execute_batch(SCHEMA).map_err(&err)?;
    Ok(conn)
}

fn chain_head(conn: &Connection, path: &Path) -> Result<(i64, String), AuditError> {
    let head = conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(sqlite_err(path))?;
    Ok(head.unwrap_or((0, GENESIS_HASH.to_string())))
}

struct Writer {
    conn: Connection,
    path: PathBuf,
    /// The WAL file, opened once it exists, for the batched mode's fsync.
    wal: Option<File>,
    config: AuditConfig,
    last_seq: i64,
    last_hash: String,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Job>) {
        let mut batch: Vec<Job> = Vec::with_capacity(self.config.max_batch);
        // In batched mode: when the oldest unsynced commit must be synced.
        let mut sync_due: Option<Instant> = None;
        loop {
            let first = match sync_due {
                None => match rx.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
                Some(due) => match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        self.sync_wal();
                        sync_due = None;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            batch.push(first);
            while batch.len() < self.config.max_batch {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let result = self.commit(&batch);
            match result {
                Ok(receipts) => {
                    if let Durability::Batched { window } = self.config.durability {
                        let now = Instant::now();
                        match sync_due {
                            Some(due) if due <= now => {
                                self.sync_wal();
                                sync_due = None;
                            }
                            Some(_) => {}
                            None => sync_due = Some(now + window),
                        }
                    }
                    for ((_, reply), receipt) in batch.drain(..).zip(receipts) {
                        reply.send(Ok(receipt));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit commit failed; refusing the queued decisions");
                    let message = e.to_string();
                    for (_, reply) in batch.drain(..) {
                        reply.send(Err(message.clone()));
                    }
                    // The chain head may be stale if the failure was partial;
                    // reread it so the next commit links correctly.
                    if let Ok((seq, hash)) = chain_head(&self.conn, &self.path) {
                        self.last_seq = seq;
                        self.last_hash = hash;
                    }
                }
            }
        }
        if sync_due.is_some() {
            self.sync_wal();
        }
    }

    fn commit(&mut self, batch: &[Job]) -> Result<Vec<Receipt>, AuditError> {
        let err = sqlite_err(&self.path);
        let tx = self.conn.transaction().map_err(&err)?;
        let mut receipts = Vec::with_capacity(batch.len());
        let (mut seq, mut prev) = (self.last_seq, self.last_hash.clone());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO audit (seq, time_us, kind, agent, action, resource, arguments,
                     redacted, session, decision, policy_ids, errors, policy_hash, tool_sha256,
                     duration_us, outcome, parent, detail, prev_hash, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                     ?16, ?17, ?18, ?19, ?20)",
                )
                .map_err(&err)?;
            let time_us = now_micros();
            for (entry, _) in batch {
                seq += 1;
                let record = seal(&self.config.redactor, entry, seq, time_us, prev);
                insert
                    .execute(params![
                        record.seq,
                        record.time_us,
                        record.kind.as_str(),
                        record.agent,
                        record.action,
                        record.resource,
                        record.arguments,
                        record.redacted,
                        record.session,
                        record.decision,
                        json_list(&record.policy_ids),
                        json_list(&record.errors),
                        record.policy_hash,
                        record.tool_sha256,
                        record.duration_us,
                        record.outcome.map(|o| o.as_str()),
                        record.parent,
                        record.detail,
                        record.prev_hash,
                        record.hash,
                    ])
                    .map_err(&err)?;
                prev = record.hash.clone();
                receipts.push(Receipt {
                    seq,
                    hash: record.hash,
                });
            }
        }
        tx.commit().map_err(&err)?;
        self.last_seq = seq;
        self.last_hash = prev;
        Ok(receipts)
    }
}

fn seal(redactor: &Redactor, entry: &Entry, seq: i64, time_us: i64, prev_hash: String) -> Record {
    let (arguments, redacted) = redactor.redact(&entry.arguments);
    let (session, session_redacted) = redactor.redact(&entry.session);
    let mut record = Record {
        seq,
        time_us,
        kind: entry.kind,
        agent: entry.agent.clone(),
        action: entry.action.clone(),
        resource: entry.resource.clone(),
        arguments: arguments.to_string(),
        redacted: redacted || session_redacted,
        session: session.to_string(),
        decision: entry
            .allowed
            .map(|a| if a { "allow" } else { "deny" }.to_string()),
        policy_ids: entry.policy_ids.clone(),
        errors: entry.errors.clone(),
        policy_hash: entry.policy_hash.clone(),
        tool_sha256: entry.tool_sha256.clone(),
        duration_us: entry.duration_us,
        outcome: entry.outcome,
        parent: entry.parent,
        detail: entry.detail.clone(),
        prev_hash,
        hash: String::new(),
    };
    record.hash = record.compute_hash();
    record
}

impl Writer {
    fn sync_wal(&mut self) {
        if self.wal.is_none() {
            let mut wal = self.path.clone().into_os_string();
            wal.push("-wal");
            self.wal = File::open(&wal).ok();
        }
        // fsync applies to the file, not the descriptor: syncing our own
        // read-only handle flushes what SQLite's connection wrote.
        let synced = self.wal.as_ref().map(File::sync_data);
        if let Some(Err(e)) = synced {
            tracing::error!(error = %e, path = %self.path.display(), "fsync of the audit WAL failed");
        }
    }
}

pub(crate) fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}
