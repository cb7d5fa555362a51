//! The single writer: the spool, the hash chain, durability modes, and
//! moving records into SQLite.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use crate::AuditError;
use crate::record::{Entry, GENESIS_HASH, Record, Unsealed};
use crate::redact::Redactor;
use crate::spool;

/// When a decision counts as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Fsynced before the append returns.
    #[default]
    Strict,
    /// Written (it survives the broker being killed) before the append
    /// returns; fsynced within `window`.
    Batched { window: Duration },
}

/// How to open the log.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub durability: Durability,
    pub redactor: Redactor,
    /// Most records moved into SQLite in one transaction.
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

type Outcome = Result<Receipt, AuditError>;

/// Resolves when the entry is recorded.
pub struct Ticket(oneshot::Receiver<Outcome>);

impl Ticket {
    pub async fn recorded(self) -> Result<Receipt, AuditError> {
        match self.0.await {
            Ok(outcome) => outcome,
            Err(_) => Err(AuditError::WriterStopped("the log was closed".into())),
        }
    }
}

/// The handle the broker appends through. Cloning is cheap. When the last
/// handle is dropped, everything written is moved into SQLite and synced,
/// and the spool is emptied.
///
/// An append seals its record into the chain and writes it to the spool
/// on the caller's thread (see the `spool` module for why a spool). In
/// strict mode the caller then syncs the spool, unless a sync that started
/// after its write is already running, in which case it waits for that one
/// (group commit). A background thread moves records into SQLite and, in
/// batched mode, is what makes them durable within the window.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
    _lifetime: Arc<Lifetime>,
}

struct Inner {
    path: PathBuf,
    spool_path: PathBuf,
    durability: Durability,
    redactor: Redactor,
    max_batch: usize,
    /// The chain's head and the spool. A record is sealed and written under
    /// this lock, so the spool's order is the chain's.
    chain: Mutex<Chain>,
    /// Records written to the spool so far; bumped under `chain`.
    written: AtomicU64,
    /// Batched mode: records were written since the background thread's
    /// last sync of the spool.
    unsynced: AtomicBool,
    sync: GroupSync,
    /// Why the log stopped taking appends, once a write could not be undone
    /// or a sync failed: a failed fsync may have lost writes that no later
    /// fsync will report, so nothing written since can be vouched for.
    /// Cleared only by reopening, which checks the spool against the chain.
    broken: OnceLock<String>,
    /// SQLite. The background thread is its only user while the log is
    /// open.
    store: Mutex<Store>,
    /// Async appends, made by the background thread.
    queue: Mutex<Vec<(Entry, oneshot::Sender<Outcome>)>>,
    shutdown: Mutex<bool>,
    wake: Condvar,
}

struct Chain {
    spool: File,
    /// Bytes in the spool: where a failed write is cut back to.
    len: u64,
    last_seq: i64,
    last_hash: String,
    /// In the spool, not yet in SQLite.
    unmoved: Vec<Record>,
    line: Vec<u8>,
}

/// Strict mode's group commit: one fdatasync covers every record written
/// before it started.
struct GroupSync {
    state: Mutex<SyncState>,
    done: Condvar,
    /// The spool, through a descriptor of its own so that syncing never
    /// holds the chain lock.
    file: File,
}

#[derive(Default)]
struct SyncState {
    /// Records known durable, counted like `Inner::written`.
    durable: u64,
    running: bool,
}

/// Owned by the `AuditLog` handles only: when the last goes, the
/// background thread is told to finish and is joined.
struct Lifetime {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Lifetime {
    fn drop(&mut self) {
        *lock(&self.inner.shutdown) = true;
        self.inner.wake.notify_all();
        for handle in lock(&self.threads).drain(..) {
            let _ = handle.join();
        }
    }
}

/// Cuts the spool back to `len` bytes and keeps the room after them as a
/// hole. What was past `len` is gone at once: the cut is one size change,
/// and the room another. Only the cut can fail: once it is made, the
/// caller's `len` is the spool's, and writes continue from it whether or
/// not the room could be added (without it they grow the file, slower).
fn make_room(spool: &File, len: u64) -> std::io::Result<()> {
    spool.set_len(len)?;
    if len < spool::ROOM
        && let Err(e) = spool.set_len(spool::ROOM)
    {
        tracing::warn!(error = %e, "cannot keep room in the audit spool; its syncs will be slower");
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl AuditLog {
    /// Opens (creating if needed) the log. What a previous writer left in
    /// the spool is checked against the chain and moved into SQLite first;
    /// a spool that does not continue the chain is refused, not dropped.
    /// Only one writer at a time: a second open of the same log fails.
    pub fn open(config: AuditConfig) -> Result<AuditLog, AuditError> {
        let path = config.path.clone();
        let io = |message: String| AuditError::Io {
            path: path.display().to_string(),
            message,
        };
        let conn = open_writer(&path)?;
        let spool_path = spool::path_of(&path);
        // Positioned writes, not append mode: records go into the room
        // kept at the end (see `spool::ROOM`).
        let spool_file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&spool_path)
            .map_err(|e| {
                io(format!(
                    "cannot open the spool {}: {e}",
                    spool_path.display()
                ))
            })?;
        spool_file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => io(format!(
                "another process has this log open for writing (its spool {} is locked); stop that broker or `corral up` first",
                spool_path.display()
            )),
            std::fs::TryLockError::Error(e) => {
                io(format!("cannot lock the spool {}: {e}", spool_path.display()))
            }
        })?;
        let (seq, hash) = chain_head(&conn, &path)?;
        let mut store = Store {
            conn,
            path: path.clone(),
            last_seq: seq,
            wal: None,
        };
        let (last_seq, last_hash) = store.recover(&spool_path, seq, hash, config.max_batch)?;
        make_room(&spool_file, 0).map_err(|e| {
            io(format!(
                "cannot empty the spool {}: {e}",
                spool_path.display()
            ))
        })?;
        let sync_file = spool_file.try_clone().map_err(|e| {
            io(format!(
                "cannot open the spool {}: {e}",
                spool_path.display()
            ))
        })?;
        let inner = Arc::new(Inner {
            path: path.clone(),
            spool_path,
            durability: config.durability,
            redactor: config.redactor,
            max_batch: config.max_batch.max(1),
            chain: Mutex::new(Chain {
                spool: spool_file,
                len: 0,
                last_seq,
                last_hash,
                unmoved: Vec::new(),
                line: Vec::with_capacity(1024),
            }),
            written: AtomicU64::new(0),
            unsynced: AtomicBool::new(false),
            sync: GroupSync {
                state: Mutex::new(SyncState::default()),
                done: Condvar::new(),
                file: sync_file,
            },
            broken: OnceLock::new(),
            store: Mutex::new(store),
            queue: Mutex::new(Vec::new()),
            shutdown: Mutex::new(false),
            wake: Condvar::new(),
        });
        // Owned from here on, so that an error below still stops and joins
        // whatever was started.
        let lifetime = Arc::new(Lifetime {
            inner: inner.clone(),
            threads: Mutex::new(Vec::new()),
        });
        let background = inner.clone();
        let thread = std::thread::Builder::new()
            .name("corral-audit".into())
            .spawn(move || background.run_background())
            .map_err(|e| io(format!("cannot start the audit thread: {e}")))?;
        lock(&lifetime.threads).push(thread);
        if let Durability::Batched { window } = config.durability {
            let syncer = inner.clone();
            let thread = std::thread::Builder::new()
                .name("corral-audit-sync".into())
                .spawn(move || syncer.run_syncer(window.min(SYNC_TICK)))
                .map_err(|e| io(format!("cannot start the audit sync thread: {e}")))?;
            lock(&lifetime.threads).push(thread);
        }
        Ok(AuditLog {
            _lifetime: lifetime,
            inner,
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// Queues `entry` for the background thread; the ticket resolves when
    /// it is recorded. For async callers that must not block.
    pub fn append(&self, entry: Entry) -> Ticket {
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.queue).push((entry, tx));
        self.inner.notify_background();
        Ticket(rx)
    }

    /// Appends `entry` and returns once it is recorded. Blocks (in strict
    /// mode for an fsync): call it from a thread that may block (inside
    /// `block_in_place`, `spawn_blocking`, or a tool's host call), never
    /// directly on an async worker.
    pub fn append_blocking(&self, entry: Entry) -> Result<Receipt, AuditError> {
        let record = prepare(&self.inner.redactor, entry);
        let (receipt, number) = self.inner.write(record)?;
        if self.inner.durability == Durability::Strict {
            self.inner.sync_through(number)?;
        }
        Ok(receipt)
    }

    /// Writes `entry` without waiting for it to be durable: for outcome
    /// records, which follow a decision already recorded. The next sync
    /// covers it. A failure is logged; it also stops the log, so the next
    /// decision is refused.
    pub fn append_detached(&self, entry: Entry) {
        let record = prepare(&self.inner.redactor, entry);
        if let Err(e) = self.inner.write(record) {
            tracing::error!(error = %e, "an outcome record could not be written");
        }
    }
}

/// Batched mode: how long after the first unsynced record the sync thread
/// syncs the spool; at most the window.
const SYNC_TICK: Duration = Duration::from_millis(5);

/// How long records wait in the spool before they are moved into SQLite,
/// where queries see them: long enough that one transaction takes in many.
/// A transaction rewrites every B-tree page it touches, and the
/// `(agent, time_us)` index spreads one batch over a page per agent: in a
/// bench of 100,000 records from 8 agents, 200 per transaction cost
/// 8.0 µs and 1.07 KiB of WAL a record, 2,000 per transaction 6.7 µs and
/// 0.52 KiB.
const MOVE_TICK: Duration = Duration::from_millis(50);

/// Inserts between two yields of the CPU while moving records into SQLite.
const YIELD_EVERY: usize = 32;

/// How long the background thread sleeps when there is nothing to do.
const IDLE_TICK: Duration = Duration::from_millis(100);

/// WAL size at which the background thread checkpoints.
const CHECKPOINT_BYTES: u64 = 8 << 20;

/// Spool size at which it is emptied. Emptying holds appends off for one
/// sync of SQLite's WAL (only what SQLite holds durably may leave the
/// spool), so it is rare; until then the spool keeps records already
/// moved, which a reopen and `verify` skip.
const SPOOL_EMPTY_AT: u64 = 4 << 20;

impl Inner {
    fn stopped(&self) -> Option<AuditError> {
        self.broken
            .get()
            .map(|why| AuditError::WriterStopped(why.clone()))
    }

    fn stop_taking_appends(&self, why: String) {
        tracing::error!(reason = %why, "the audit log stops taking appends");
        let _ = self.broken.set(why);
    }

    /// Seals `record` as the chain's next and writes it to the spool.
    /// Returns its receipt and its number among records written. The lock
    /// is held to number, hash and write the record, whose JSON was built
    /// before.
    fn write(&self, record: Unsealed) -> Result<(Receipt, u64), AuditError> {
        let mut guard = lock(&self.chain);
        // Under the lock: a write that failed and could not be cut back
        // stops the log while holding it, and nothing may follow its
        // partial line.
        if let Some(e) = self.stopped() {
            return Err(e);
        }
        let chain = &mut *guard;
        let Some(seq) = chain.last_seq.checked_add(1) else {
            return Err(AuditError::Layout {
                path: self.path.display().to_string(),
                message: format!("record number {} cannot be followed", chain.last_seq),
            });
        };
        let prev_hash = std::mem::take(&mut chain.last_hash);
        let record = record.seal(seq, prev_hash, &mut chain.line);
        if let Err(e) = chain.spool.write_all_at(&chain.line, chain.len) {
            chain.last_hash = record.prev_hash;
            let why = format!(
                "cannot write to the spool {}: {e}",
                self.spool_path.display()
            );
            // A partial line would break the chain for every later record:
            // cut it off, or stop.
            if let Err(cut) = make_room(&chain.spool, chain.len) {
                self.stop_taking_appends(format!(
                    "{why}; cutting back the partial write failed too: {cut}"
                ));
            }
            return Err(AuditError::Io {
                path: self.path.display().to_string(),
                message: why,
            });
        }
        chain.len += chain.line.len() as u64;
        chain.last_seq = record.seq;
        chain.last_hash.clone_from(&record.hash);
        let receipt = Receipt {
            seq: record.seq,
            hash: record.hash.clone(),
        };
        let first_unmoved = chain.unmoved.is_empty();
        chain.unmoved.push(record);
        let number = self.written.fetch_add(1, Ordering::AcqRel) + 1;
        drop(guard);
        let first_unsynced = matches!(self.durability, Durability::Batched { .. })
            && !self.unsynced.swap(true, Ordering::AcqRel);
        if first_unmoved || first_unsynced {
            // A tick starts now; the background thread may be in its idle
            // sleep.
            self.notify_background();
        }
        Ok((receipt, number))
    }

    /// Wakes the background thread. Under the shutdown lock, which the
    /// thread holds from looking for work until it sleeps: a wake cannot
    /// fall in between and be lost.
    fn notify_background(&self) {
        let _guard = lock(&self.shutdown);
        // Both threads wait on `wake`; each looks for its own work.
        self.wake.notify_all();
    }

    /// Returns once record `number` (and all before it) is durable: by a
    /// sync of its own, or by one another thread started after it was
    /// written.
    fn sync_through(&self, number: u64) -> Result<(), AuditError> {
        let mut state = lock(&self.sync.state);
        loop {
            if state.durable >= number {
                return Ok(());
            }
            if let Some(e) = self.stopped() {
                return Err(e);
            }
            if !state.running {
                break;
            }
            state = self
                .sync
                .done
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        state.running = true;
        drop(state);
        // Everything written so far, not just `number`: later writers find
        // themselves covered and skip their own sync.
        let target = self.written.load(Ordering::Acquire);
        let synced = self.sync.file.sync_data();
        let mut state = lock(&self.sync.state);
        state.running = false;
        let result = match synced {
            Ok(()) => {
                state.durable = state.durable.max(target);
                Ok(())
            }
            Err(e) => {
                let why = format!("fdatasync of {} failed: {e}", self.spool_path.display());
                self.stop_taking_appends(why.clone());
                Err(AuditError::WriterStopped(why))
            }
        };
        drop(state);
        self.sync.done.notify_all();
        result
    }

    /// The background thread's append path, for [`AuditLog::append`]: all
    /// queued entries written, then one sync.
    fn serve_queue(&self) {
        let queued = std::mem::take(&mut *lock(&self.queue));
        if queued.is_empty() {
            return;
        }
        let mut last = 0;
        let written: Vec<_> = queued
            .into_iter()
            .map(|(entry, tx)| {
                let result = self.write(prepare(&self.redactor, entry));
                if let Ok((_, number)) = &result {
                    last = last.max(*number);
                }
                (tx, result)
            })
            .collect();
        let synced = if self.durability == Durability::Strict && last > 0 {
            self.sync_through(last)
        } else {
            Ok(())
        };
        for (tx, result) in written {
            let outcome = match (&synced, result) {
                (Ok(()), Ok((receipt, _))) => Ok(receipt),
                (Err(e), Ok(_)) => Err(AuditError::WriterStopped(reason(e))),
                (_, Err(e)) => Err(e),
            };
            let _ = tx.send(outcome);
        }
    }

    /// Moves the records written since the last move into SQLite. Once
    /// the spool has grown past `SPOOL_EMPTY_AT` (or with `all`, at
    /// shutdown), also moves whatever was written meanwhile, syncs SQLite's
    /// WAL and empties the spool, holding appends off while it does.
    fn move_into_store(&self, all: bool) {
        let (batch, full) = {
            let mut chain = lock(&self.chain);
            let full = all && chain.len > 0 || chain.len > SPOOL_EMPTY_AT;
            (std::mem::take(&mut chain.unmoved), full)
        };
        let mut store = lock(&self.store);
        if let Err(e) = store.take_in(&batch, self.max_batch) {
            self.keep_unmoved(batch, &e);
            return;
        }
        if !full {
            if all {
                // Closing with nothing written: only the room to drop.
                let chain = lock(&self.chain);
                if let Err(e) = chain.spool.set_len(0) {
                    tracing::warn!(error = %e, path = %self.spool_path.display(), "cannot drop the audit spool's room");
                }
            }
            return;
        }
        let mut chain = lock(&self.chain);
        let rest = std::mem::take(&mut chain.unmoved);
        // A failed sync stops the log, as in strict mode; the spool keeps
        // the records for the next open.
        let moved = store
            .take_in(&rest, self.max_batch)
            .and_then(|()| store.sync().map_err(|e| self.stop_on_sync(e)));
        if let Err(e) = moved {
            drop(chain);
            self.keep_unmoved(rest, &e);
            return;
        }
        let emptied = if all {
            // Closing: nothing more is written, so no room is kept.
            chain.spool.set_len(0)
        } else {
            make_room(&chain.spool, 0)
        };
        match emptied {
            // Even if the cut is not yet durable: a reopen skips spooled
            // records the database already holds.
            Ok(()) => chain.len = 0,
            Err(e) => {
                tracing::warn!(error = %e, path = %self.spool_path.display(), "cannot empty the audit spool; will retry")
            }
        }
    }

    fn stop_on_sync(&self, e: AuditError) -> AuditError {
        self.stop_taking_appends(e.to_string());
        e
    }

    /// Puts `batch` back in front of what was written since, for the next
    /// try; they are safe in the spool meanwhile. Stops the log if the
    /// spool grows past bounds because nothing can be moved.
    fn keep_unmoved(&self, batch: Vec<Record>, e: &AuditError) {
        tracing::warn!(error = %e, "moving audit records into SQLite failed; they stay in the spool and are retried");
        let mut chain = lock(&self.chain);
        let newer = std::mem::replace(&mut chain.unmoved, batch);
        chain.unmoved.extend(newer);
        if chain.len > 16 * SPOOL_EMPTY_AT {
            drop(chain);
            self.stop_taking_appends(format!(
                "the spool {} has grown past {} MiB because records cannot be moved into SQLite: {e}",
                self.spool_path.display(),
                (16 * SPOOL_EMPTY_AT) >> 20
            ));
        }
    }

    /// Serves async appends at once; moves records into SQLite
    /// `MOVE_TICK` after the first unmoved one was written.
    fn run_background(&self) {
        let mut move_due: Option<Instant> = None;
        loop {
            let stopping = {
                let mut guard = lock(&self.shutdown);
                loop {
                    if *guard {
                        break true;
                    }
                    if !lock(&self.queue).is_empty() {
                        break false;
                    }
                    let now = Instant::now();
                    let wait = if lock(&self.chain).unmoved.is_empty() {
                        move_due = None;
                        IDLE_TICK
                    } else {
                        match *move_due.get_or_insert(now + MOVE_TICK) {
                            at if at <= now => break false,
                            at => at - now,
                        }
                    };
                    guard = self
                        .wake
                        .wait_timeout(guard, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            };
            self.serve_queue();
            if !stopping && move_due.is_some_and(|at| at <= Instant::now()) {
                move_due = None;
                self.move_into_store(false);
                lock(&self.store).checkpoint();
            }
            if stopping {
                self.serve_queue();
                // Durable in the spool first, in case SQLite refuses the
                // final move.
                if matches!(self.durability, Durability::Batched { .. }) {
                    let _ = self.sync_through(self.written.load(Ordering::Acquire));
                }
                self.move_into_store(true);
                return;
            }
        }
    }

    /// Batched mode's durability: syncs the spool `tick` after the first
    /// record written since the last sync. A thread of its own, so that a
    /// long move into SQLite or a checkpoint cannot hold the window open.
    fn run_syncer(&self, tick: Duration) {
        loop {
            {
                let mut guard = lock(&self.shutdown);
                loop {
                    // The audit thread's final pass syncs what is left.
                    if *guard {
                        return;
                    }
                    if self.unsynced.load(Ordering::Acquire) {
                        break;
                    }
                    guard = self
                        .wake
                        .wait_timeout(guard, IDLE_TICK)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            std::thread::sleep(tick);
            // Cleared first: a record written during the sync starts the
            // next tick.
            self.unsynced.swap(false, Ordering::AcqRel);
            // A failure stops the log; `sync_through` says so.
            let _ = self.sync_through(self.written.load(Ordering::Acquire));
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
    // NORMAL: commits reach the WAL without a sync of SQLite's own; the
    // log syncs the WAL itself (`Store::sync`) before it lets records
    // leave the spool. SQLite still syncs the WAL before and the database
    // after each checkpoint.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(&err)?;
    // Checkpoints run on the background thread (`Store::checkpoint`).
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

/// The SQLite side: where records end up, indexed for queries.
struct Store {
    conn: Connection,
    path: PathBuf,
    /// The last record SQLite holds: a retry after a failed sync does not
    /// insert a record twice.
    last_seq: i64,
    /// SQLite's WAL, for the log's own fdatasync.
    wal: Option<File>,
}

impl Store {
    /// Moves what a previous writer left in the spool into SQLite, after
    /// checking that it continues the chain. Returns the chain's head.
    fn recover(
        &mut self,
        spool_path: &Path,
        mut seq: i64,
        mut hash: String,
        max_batch: usize,
    ) -> Result<(i64, String), AuditError> {
        let spooled = spool::read(spool_path)?;
        if let Some(stray) = spooled.stray {
            return Err(AuditError::Layout {
                path: spool_path.display().to_string(),
                message: format!(
                    "{}; the log will not open for writing until then",
                    stray.describe(spool_path)
                ),
            });
        }
        if spooled.torn_bytes > 0 {
            tracing::warn!(
                bytes = spooled.torn_bytes,
                spool = %spool_path.display(),
                "dropping a torn last line from the audit spool: a write cut off by a crash, never acknowledged as durable"
            );
        }
        let bad = |record: &Record, why: String| AuditError::Layout {
            path: spool_path.display().to_string(),
            message: format!(
                "record {} in the spool {why}; the spool holds decisions not yet in the database, so the log will not open for writing until this is resolved (`corral audit verify` shows the chain)",
                record.seq
            ),
        };
        let had_records = !spooled.records.is_empty();
        let mut fresh = Vec::new();
        for record in spooled.records {
            if record.seq <= seq {
                // Moved already, by a writer that stopped before it could
                // empty the spool; it must match what the database holds.
                if !spool::matches_stored(&self.conn, &record).map_err(sqlite_err(&self.path))? {
                    return Err(bad(
                        &record,
                        "differs from the database's record of that number".into(),
                    ));
                }
                continue;
            }
            if let Some(why) = spool::chain_problem(seq, &hash, &record) {
                return Err(bad(&record, format!("breaks the chain: {why}")));
            }
            seq = record.seq;
            hash.clone_from(&record.hash);
            fresh.push(record);
        }
        if !fresh.is_empty() {
            tracing::info!(
                records = fresh.len(),
                "moving records a previous writer left in the audit spool into the database"
            );
            self.take_in(&fresh, max_batch)?;
        }
        // Even when every spooled record was already in the database: a
        // killed writer may have moved them without syncing, and the spool
        // is about to be emptied.
        if had_records {
            self.sync()?;
        }
        Ok((seq, hash))
    }

    /// Inserts the records it does not hold yet, `max_batch` per
    /// transaction. Not durable until [`Store::sync`].
    fn take_in(&mut self, records: &[Record], max_batch: usize) -> Result<(), AuditError> {
        let start = records.partition_point(|r| r.seq <= self.last_seq);
        for chunk in records[start..].chunks(max_batch.max(1)) {
            self.insert(chunk)?;
        }
        Ok(())
    }

    fn insert(&mut self, records: &[Record]) -> Result<(), AuditError> {
        let err = sqlite_err(&self.path);
        let tx = self.conn.transaction().map_err(&err)?;
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
            for (i, record) in records.iter().enumerate() {
                // A long move runs beside the calls it records, on a
                // machine with few cores: a woken caller that lands on
                // this core waits at most this many inserts.
                if i % YIELD_EVERY == YIELD_EVERY - 1 {
                    std::thread::yield_now();
                }
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
            }
        }
        tx.commit().map_err(&err)?;
        if let Some(last) = records.last() {
            self.last_seq = last.seq;
        }
        Ok(())
    }

    /// fsync applies to the file, not the descriptor: syncing a read-only
    /// handle of our own flushes what SQLite's connection wrote.
    fn sync(&mut self) -> Result<(), AuditError> {
        let mut name = self.path.clone().into_os_string();
        name.push("-wal");
        let io = |message: String| AuditError::Io {
            path: self.path.display().to_string(),
            message,
        };
        if self.wal.is_none() {
            let file = File::open(&name)
                .map_err(|e| io(format!("cannot open {}: {e}", Path::new(&name).display())))?;
            self.wal = Some(file);
        }
        match self.wal.as_ref().map(File::sync_data) {
            Some(Err(e)) => Err(io(format!(
                "fdatasync of {} failed: {e}",
                Path::new(&name).display()
            ))),
            _ => Ok(()),
        }
    }

    /// Copies the WAL back into the database once it has grown. Here, on
    /// the background thread, rather than left to SQLite's automatic
    /// checkpoint, which would run inside whichever commit crossed the
    /// threshold.
    fn checkpoint(&mut self) {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if size < CHECKPOINT_BYTES {
            return;
        }
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "audit checkpoint failed; will retry");
        }
    }
}

/// The record for `entry`, redacted and serialized, before the chain
/// gives it a number and hashes: done outside the chain lock.
fn prepare(redactor: &Redactor, entry: Entry) -> Unsealed {
    let (arguments, redacted) = redactor.redact_to_string(&entry.arguments);
    let (session, session_redacted) = redactor.redact_to_string(&entry.session);
    Unsealed::new(Record {
        seq: 0,
        time_us: entry.time_us,
        kind: entry.kind,
        agent: entry.agent,
        action: entry.action,
        resource: entry.resource,
        arguments,
        redacted: redacted || session_redacted,
        session,
        decision: entry
            .allowed
            .map(|a| if a { "allow" } else { "deny" }.to_string()),
        policy_ids: entry.policy_ids,
        errors: entry.errors,
        policy_hash: entry.policy_hash,
        tool_sha256: entry.tool_sha256,
        duration_us: entry.duration_us,
        outcome: entry.outcome,
        parent: entry.parent,
        detail: entry.detail,
        prev_hash: String::new(),
        hash: String::new(),
    })
}

/// The text of `e` as a stop reason, without wrapping one twice.
fn reason(e: &AuditError) -> String {
    match e {
        AuditError::WriterStopped(why) => why.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}
