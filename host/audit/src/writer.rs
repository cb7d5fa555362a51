//! The single writer: group commit, hash chain, durability modes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::AuditError;
use crate::record::{Entry, GENESIS_HASH, Record};
use crate::redact::Redactor;

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
}

impl AuditConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditConfig {
            path: path.into(),
            durability: Durability::Strict,
            redactor: Redactor::default(),
            max_batch: 2048,
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

type Outcome = Result<Receipt, String>;

/// Resolves when the entry is recorded.
pub struct Ticket(oneshot::Receiver<Outcome>);

impl Ticket {
    pub async fn recorded(self) -> Result<Receipt, AuditError> {
        match self.0.await {
            Ok(Ok(receipt)) => Ok(receipt),
            Ok(Err(e)) => Err(AuditError::WriterStopped(e)),
            Err(_) => Err(AuditError::WriterStopped("the log was closed".into())),
        }
    }
}

/// A reply a blocked thread waits on.
#[derive(Default)]
struct Slot {
    outcome: Mutex<Option<Outcome>>,
    ready: Condvar,
}

impl Slot {
    fn wait(&self) -> Outcome {
        let mut guard = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(outcome) = guard.take() {
                return outcome;
            }
            guard = self.ready.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Where a commit is reported.
enum Reply {
    None,
    Async(oneshot::Sender<Outcome>),
    Sync(Arc<Slot>),
}

impl Reply {
    fn send(self, outcome: Outcome) {
        match self {
            Reply::None => {}
            Reply::Async(tx) => {
                let _ = tx.send(outcome);
            }
            Reply::Sync(slot) => {
                *slot.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                slot.ready.notify_one();
            }
        }
    }
}

type Job = (Entry, Reply);

/// The handle the broker appends through. Cloning is cheap. When the last
/// handle is dropped, everything queued is committed and synced.
///
/// Commits are made by whichever appending thread finds the writer free
/// (leader/follower group commit): an uncontended append commits on its
/// own thread with no hand-off, and appends that arrive while a commit is
/// running are committed together by the next leader. A background thread
/// commits entries queued without a waiting caller and, in batched mode,
/// fsyncs the write-ahead log within the window.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
    _lifetime: Arc<Lifetime>,
}

struct Inner {
    path: PathBuf,
    durability: Durability,
    redactor: Redactor,
    max_batch: usize,
    queue: Mutex<Vec<Job>>,
    writer: Mutex<Writer>,
    /// Batched mode: commits not yet fsynced.
    dirty: AtomicBool,
    shutdown: Mutex<bool>,
    wake: Condvar,
}

/// Owned by the `AuditLog` handles only: when the last goes, the
/// background thread is told to finish and is joined.
struct Lifetime {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        *self
            .inner
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = true;
        self.inner.wake.notify_all();
        if let Some(handle) = self.thread.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
    }
}

impl AuditLog {
    /// Opens (creating if needed) the log.
    pub fn open(config: AuditConfig) -> Result<AuditLog, AuditError> {
        let conn = open_writer(&config.path)?;
        let (seq, hash) = chain_head(&conn, &config.path)?;
        let inner = Arc::new(Inner {
            path: config.path.clone(),
            durability: config.durability,
            redactor: config.redactor,
            max_batch: config.max_batch.max(1),
            queue: Mutex::new(Vec::new()),
            writer: Mutex::new(Writer {
                conn,
                path: config.path.clone(),
                last_seq: seq,
                last_hash: hash,
                wal: None,
            }),
            dirty: AtomicBool::new(false),
            shutdown: Mutex::new(false),
            wake: Condvar::new(),
        });
        let background = inner.clone();
        let thread = std::thread::Builder::new()
            .name("corral-audit".into())
            .spawn(move || background.run_background())
            .map_err(|e| AuditError::Io {
                path: config.path.display().to_string(),
                message: format!("cannot start the audit thread: {e}"),
            })?;
        Ok(AuditLog {
            _lifetime: Arc::new(Lifetime {
                inner: inner.clone(),
                thread: Mutex::new(Some(thread)),
            }),
            inner,
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// Commits what [`Self::append_detached`] queued, on this thread,
    /// unless another thread is committing (it takes the queue along).
    /// For a thread with a moment to spare, such as a broker connection
    /// that has just sent its answer: the outcome record then does not
    /// ride on the next decision's commit. Blocking, like a commit (in
    /// strict mode it syncs).
    pub fn commit_queued(&self) {
        self.inner.lead();
    }

    /// Queues `entry` for the background thread; the ticket resolves when
    /// it is recorded. For async callers that must not block.
    pub fn append(&self, entry: Entry) -> Ticket {
        let (tx, rx) = oneshot::channel();
        self.inner.push((entry, Reply::Async(tx)));
        self.inner.wake.notify_one();
        Ticket(rx)
    }

    /// Appends `entry` and returns once it is recorded, committing on this
    /// thread when no other commit is running. Blocks: call it from a
    /// thread that may block (inside `block_in_place`, `spawn_blocking`,
    /// or a tool's host call), never directly on an async worker.
    pub fn append_blocking(&self, entry: Entry) -> Result<Receipt, AuditError> {
        let slot = Arc::new(Slot::default());
        self.inner.push((entry, Reply::Sync(slot.clone())));
        self.inner.lead();
        slot.wait().map_err(AuditError::WriterStopped)
    }

    /// Queues `entry` without waiting: for outcome records, which follow a
    /// decision already recorded. Committed with the next commit, or by the
    /// background thread within its tick.
    pub fn append_detached(&self, entry: Entry) {
        self.inner.push((entry, Reply::None));
    }
}

/// How often the background thread looks for unattended entries.
const TICK: Duration = Duration::from_millis(5);

/// How long the background thread sleeps when it has nothing to do; an
/// entry appended without a waiting caller is committed within this.
const IDLE_TICK: Duration = Duration::from_millis(100);

/// WAL size at which the background thread checkpoints.
const CHECKPOINT_BYTES: u64 = 8 << 20;

impl Inner {
    fn push(&self, job: Job) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(job);
    }

    /// Commits queued entries if no one else is; returns when the queue was
    /// seen empty after letting go of the writer, so an entry queued before
    /// this call is committed by this thread or by the leader it found.
    fn lead(&self) {
        loop {
            let Ok(mut writer) = self.writer.try_lock() else {
                // The current leader drains the queue before it lets go,
                // and looks again after: our entry is in its hands.
                return;
            };
            loop {
                let batch: Vec<Job> = {
                    let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                    if q.is_empty() {
                        break;
                    }
                    let n = q.len().min(self.max_batch);
                    q.drain(..n).collect()
                };
                let entries: Vec<&Entry> = batch.iter().map(|(e, _)| e).collect();
                let committed = writer.commit(&entries, &self.redactor).and_then(|r| {
                    if self.durability == Durability::Strict {
                        writer.sync()?;
                    }
                    Ok(r)
                });
                match committed {
                    Ok(receipts) => {
                        // The first unsynced commit starts the window: wake the
                        // background thread, which may be in its idle sleep.
                        if matches!(self.durability, Durability::Batched { .. })
                            && !self.dirty.swap(true, Ordering::AcqRel)
                        {
                            self.wake.notify_one();
                        }
                        for ((_, reply), receipt) in batch.into_iter().zip(receipts) {
                            reply.send(Ok(receipt));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "audit commit failed; refusing the queued decisions");
                        let message = e.to_string();
                        for (_, reply) in batch {
                            reply.send(Err(message.clone()));
                        }
                        writer.reload_head();
                    }
                }
            }
            drop(writer);
            if self
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
            {
                return;
            }
        }
    }

    /// Copies the WAL back into the database once it has grown, on this
    /// thread's own connection: a checkpoint fsyncs the database file, and
    /// left to SQLite's automatic checkpoint it would land inside some
    /// appender's commit.
    fn checkpoint(&self, conn: &mut Option<Connection>) {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if size < CHECKPOINT_BYTES {
            return;
        }
        if conn.is_none() {
            *conn = Connection::open(&self.path).ok();
        }
        if let Some(c) = conn.as_ref()
            && let Err(e) = c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "audit checkpoint failed; will retry");
        }
    }

    fn run_background(&self) {
        let mut wal: Option<File> = None;
        let mut checkpointer: Option<Connection> = None;
        let window = match self.durability {
            Durability::Batched { window } => window.min(TICK),
            Durability::Strict => TICK,
        };
        loop {
            // Tick while there is work to finish; otherwise sleep long and
            // let an async append or shutdown wake us.
            let busy = self.dirty.load(Ordering::Acquire)
                || !self
                    .queue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty();
            let stopping = {
                let guard = self.shutdown.lock().unwrap_or_else(|p| p.into_inner());
                if *guard {
                    true
                } else {
                    let wait = if busy { window } else { IDLE_TICK };
                    let (guard, _) = self
                        .wake
                        .wait_timeout(guard, wait)
                        .unwrap_or_else(|p| p.into_inner());
                    *guard
                }
            };
            self.lead();
            // Cleared before the fsync, so a commit that lands during it
            // marks the log dirty again for the next tick. The fsync runs
            // on its own descriptor, without the writer lock: commits go on
            // while it flushes.
            if self.dirty.swap(false, Ordering::AcqRel) {
                let _ = sync_wal(&self.path, &mut wal);
            }
            self.checkpoint(&mut checkpointer);
            if stopping {
                self.lead();
                if self.dirty.swap(false, Ordering::AcqRel) {
                    let _ = sync_wal(&self.path, &mut wal);
                }
                return;
            }
        }
    }
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

fn open_writer(path: &Path) -> Result<Connection, AuditError> {
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
    // NORMAL: commits reach the WAL without a sync of SQLite's own. The
    // log syncs the WAL itself: after every commit in strict mode
    // (`Writer::sync`), within the window in batched mode. Checkpoints run
    // on a connection of their own at SQLite's default (FULL), which syncs
    // the WAL before and the database after copying.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(&err)?;
    // Checkpoints run on the background thread (`Inner::checkpoint`).
    conn.pragma_update(None, "wal_autocheckpoint", 0)
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
    last_seq: i64,
    last_hash: String,
    /// The WAL, for strict mode's own fdatasync after each commit.
    wal: Option<File>,
}

impl Writer {
    /// Strict mode's durability point: one fdatasync of the WAL per group
    /// commit, made here rather than inside SQLite (`synchronous = FULL`)
    /// so that the log owns it: a failed sync fails the whole batch (none
    /// of its decisions counts as recorded, so none of their tools runs)
    /// and the next sync uses a fresh descriptor, which a failed one
    /// cannot be trusted to report again. It is not faster: one record
    /// cost about 250 µs p50 either way in the broker benchmark, against a
    /// bare fdatasync of 100–150 µs, because a commit writes several WAL
    /// pages (the row and two index entries).
    fn sync(&mut self) -> Result<(), AuditError> {
        sync_wal(&self.path, &mut self.wal).map_err(|message| AuditError::Io {
            path: self.path.display().to_string(),
            message,
        })
    }

    fn commit(
        &mut self,
        batch: &[&Entry],
        redactor: &Redactor,
    ) -> Result<Vec<Receipt>, AuditError> {
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
            for entry in batch {
                seq += 1;
                let record = seal(redactor, entry, seq, prev);
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

    /// After a failed commit the in-memory head may be ahead of the disk.
    fn reload_head(&mut self) {
        if let Ok((seq, hash)) = chain_head(&self.conn, &self.path) {
            self.last_seq = seq;
            self.last_hash = hash;
        }
    }
}

/// fsync applies to the file, not the descriptor: syncing a read-only
/// handle of our own flushes what SQLite's connection wrote.
fn sync_wal(path: &Path, wal: &mut Option<File>) -> Result<(), String> {
    let mut name = path.to_path_buf().into_os_string();
    name.push("-wal");
    if wal.is_none() {
        *wal = Some(File::open(&name).map_err(|e| format!("cannot open {}: {e}", name.display()))?);
    }
    let synced = wal.as_ref().map(File::sync_data).unwrap_or(Ok(()));
    synced.map_err(|e| {
        tracing::error!(error = %e, path = %path.display(), "fsync of the audit WAL failed");
        // A descriptor whose sync failed may never report the lost write
        // again: open a fresh one next time.
        *wal = None;
        format!("fsync of {} failed: {e}", name.display())
    })
}

fn seal(redactor: &Redactor, entry: &Entry, seq: i64, prev_hash: String) -> Record {
    let (arguments, redacted) = redactor.redact(&entry.arguments);
    let (session, session_redacted) = redactor.redact(&entry.session);
    let mut record = Record {
        seq,
        time_us: entry.time_us,
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

pub(crate) fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}
