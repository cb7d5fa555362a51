//! The single writer's handle and threads: opening the log, appending in
//! either durability mode, and the background thread that moves records
//! from the spool into SQLite.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::AuditError;
use crate::chain::{AppendFailed, Chain, make_room};
use crate::config::{AuditConfig, Durability};
use crate::group_sync::{GroupSync, SyncFailed};
use crate::record::{Entry, Record, Unsealed};
use crate::redact::Redactor;
use crate::spool;
use crate::store::Store;

/// Proof that an entry is recorded to the configured durability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The record's sequence number.
    pub seq: i64,
    /// The record's hash.
    pub hash: String,
}

type Outcome = Result<Receipt, AuditError>;

/// Resolves when the entry is recorded.
pub struct Ticket(oneshot::Receiver<Outcome>);

impl Ticket {
    /// Waits until the entry is recorded to the log's durability, or says why it was not.
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
    observer: Option<Arc<dyn crate::RecordObserver>>,
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
        let (mut store, seq, hash) = Store::open(&path)?;
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
            observer: config.observer,
            max_batch: config.max_batch.max(1),
            chain: Mutex::new(Chain::new(spool_file, last_seq, last_hash)),
            written: AtomicU64::new(0),
            unsynced: AtomicBool::new(false),
            sync: GroupSync::new(sync_file),
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

    /// The database's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// When an append counts as recorded.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// What this log redacts, for showing arguments to people exactly as
    /// the log keeps them.
    pub fn redactor(&self) -> &Redactor {
        &self.inner.redactor
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
        let record = Unsealed::from_entry(&self.inner.redactor, entry);
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
        let record = Unsealed::from_entry(&self.inner.redactor, entry);
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
/// `(agent, time_us)` index spreads one batch over a page per agent, so
/// larger batches cost less time and less WAL per record (figures in
/// `ARCHITECTURE.md`).
const MOVE_TICK: Duration = Duration::from_millis(50);

/// How long the background thread sleeps when there is nothing to do.
const IDLE_TICK: Duration = Duration::from_millis(100);

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
        let mut chain = lock(&self.chain);
        // Under the lock: a write that failed and could not be cut back
        // stops the log while holding it, and nothing may follow its
        // partial line.
        if let Some(e) = self.stopped() {
            return Err(e);
        }
        let first_unmoved = chain.unmoved.is_empty();
        let (seq, hash) = match chain.append(record) {
            Ok(head) => head,
            Err(AppendFailed::Exhausted { last_seq }) => {
                return Err(AuditError::Layout {
                    path: self.path.display().to_string(),
                    message: format!("record number {last_seq} cannot be followed"),
                });
            }
            Err(AppendFailed::Write { why, cut_failed }) => {
                let why = format!(
                    "cannot write to the spool {}: {why}",
                    self.spool_path.display()
                );
                // A partial line would break the chain for every later
                // record: it was cut off, or the log stops.
                if let Some(cut) = cut_failed {
                    self.stop_taking_appends(format!(
                        "{why}; cutting back the partial write failed too: {cut}"
                    ));
                }
                return Err(AuditError::Io {
                    path: self.path.display().to_string(),
                    message: why,
                });
            }
        };
        if let (Some(observer), Some(sealed)) = (&self.observer, chain.unmoved.last()) {
            observer.recorded(sealed);
        }
        let number = self.written.fetch_add(1, Ordering::AcqRel) + 1;
        drop(chain);
        let first_unsynced = matches!(self.durability, Durability::Batched { .. })
            && !self.unsynced.swap(true, Ordering::AcqRel);
        if first_unmoved || first_unsynced {
            // A tick starts now; the background thread may be in its idle
            // sleep.
            self.notify_background();
        }
        Ok((Receipt { seq, hash }, number))
    }

    /// Wakes the background thread. Under the shutdown lock, which the
    /// thread holds from looking for work until it sleeps: a wake cannot
    /// fall in between and be lost.
    fn notify_background(&self) {
        let _guard = lock(&self.shutdown);
        // Both threads wait on `wake`; each looks for its own work.
        self.wake.notify_all();
    }

    /// Returns once record `number` (and all before it) is durable.
    /// A failed sync stops the log.
    fn sync_through(&self, number: u64) -> Result<(), AuditError> {
        let started = self.observer.as_ref().map(|_| Instant::now());
        let synced = self
            .sync
            .sync_through(
                number,
                &self.written,
                || self.broken.get().cloned(),
                |e| {
                    self.stop_taking_appends(format!(
                        "fdatasync of {} failed: {e}",
                        self.spool_path.display()
                    ))
                },
            )
            .map_err(|failed| match failed {
                SyncFailed::Stopped(why) => AuditError::WriterStopped(why),
                SyncFailed::Failed(e) => AuditError::WriterStopped(format!(
                    "fdatasync of {} failed: {e}",
                    self.spool_path.display()
                )),
            });
        if let (Some(observer), Some(started), Ok(())) = (&self.observer, started, &synced) {
            observer.synced(started.elapsed());
        }
        synced
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
                let result = self.write(Unsealed::from_entry(&self.redactor, entry));
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

/// The text of `e` as a stop reason, without wrapping one twice.
fn reason(e: &AuditError) -> String {
    match e {
        AuditError::WriterStopped(why) => why.clone(),
        other => other.to_string(),
    }
}
