//! Strict mode's group commit: one `fdatasync` of the spool covers every
//! record written before it started, so concurrent appends share syncs
//! instead of queueing for one each.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// The spool's syncs, shared by every appending thread.
pub(crate) struct GroupSync {
    state: Mutex<SyncState>,
    done: Condvar,
    /// The spool, through a descriptor of its own so that syncing never
    /// holds the chain lock.
    file: File,
}

#[derive(Default)]
struct SyncState {
    /// Records known durable, counted like the writer's `written`.
    durable: u64,
    running: bool,
}

/// Why records could not be made durable.
#[derive(Debug)]
pub(crate) enum SyncFailed {
    /// The log had already stopped, for this reason.
    Stopped(String),
    /// This sync failed; `on_failure` was told before anyone else woke.
    Failed(std::io::Error),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl GroupSync {
    pub(crate) fn new(file: File) -> GroupSync {
        GroupSync {
            state: Mutex::new(SyncState::default()),
            done: Condvar::new(),
            file,
        }
    }

    /// Returns once record `number` (and all before it) is durable: by a
    /// sync of its own, or by one another thread started after it was
    /// written. `written` counts the records written so far; `stopped`
    /// says whether the log has stopped, and why. A failed sync calls
    /// `on_failure` before waking the threads waiting on it, so that they
    /// see the log stopped rather than retry: a retried fsync can succeed
    /// without the lost writes being on disk.
    pub(crate) fn sync_through(
        &self,
        number: u64,
        written: &AtomicU64,
        stopped: impl Fn() -> Option<String>,
        on_failure: impl FnOnce(&std::io::Error),
    ) -> Result<(), SyncFailed> {
        let mut state = lock(&self.state);
        loop {
            if state.durable >= number {
                return Ok(());
            }
            if let Some(why) = stopped() {
                return Err(SyncFailed::Stopped(why));
            }
            if !state.running {
                break;
            }
            state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.running = true;
        drop(state);
        // Everything written so far, not just `number`: later writers find
        // themselves covered and skip their own sync.
        let target = written.load(Ordering::Acquire);
        let synced = self.file.sync_data();
        let mut state = lock(&self.state);
        state.running = false;
        let result = match synced {
            Ok(()) => {
                state.durable = state.durable.max(target);
                Ok(())
            }
            Err(e) => {
                on_failure(&e);
                Err(SyncFailed::Failed(e))
            }
        };
        drop(state);
        self.done.notify_all();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_sync_covers_everything_written_before_it_started() {
        let sync = GroupSync::new(tempfile::tempfile().unwrap());
        let written = AtomicU64::new(5);
        sync.sync_through(2, &written, || None, |_| panic!("no failure"))
            .unwrap();
        // Records 3..=5 were written before that sync: covered, so a later
        // call returns without syncing even if the log has since stopped.
        sync.sync_through(5, &written, || Some("stopped".into()), |_| {})
            .unwrap();
        let Err(SyncFailed::Stopped(why)) =
            sync.sync_through(6, &written, || Some("stopped".into()), |_| {})
        else {
            panic!("record 6 is not covered, and the log has stopped");
        };
        assert_eq!(why, "stopped");
    }

    #[test]
    fn concurrent_callers_all_return_durable() {
        let sync = Arc::new(GroupSync::new(tempfile::tempfile().unwrap()));
        let written = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (sync, written) = (sync.clone(), written.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let n = written.fetch_add(1, Ordering::AcqRel) + 1;
                        sync.sync_through(n, &written, || None, |_| {}).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(lock(&sync.state).durable, 400);
    }

    #[test]
    fn a_failed_sync_is_reported_before_waiters_wake() {
        // fsync on a pipe fails with EINVAL.
        let (reader, _writer) = std::io::pipe().unwrap();
        let file = File::from(std::os::fd::OwnedFd::from(reader));
        let sync = GroupSync::new(file);
        let told = std::cell::Cell::new(false);
        let out = sync.sync_through(1, &AtomicU64::new(1), || None, |_| told.set(true));
        assert!(matches!(out, Err(SyncFailed::Failed(_))));
        assert!(told.get());
    }
}
