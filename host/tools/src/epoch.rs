//! The thread that drives epoch interruption, so that a guest that never
//! returns is stopped within a tick of its deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::Engine;

/// Drives epoch interruption: a thread that bumps the engine's epoch every
/// tick, so a guest that never returns is stopped within a tick of its
/// deadline. Stopped when the runtime is dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("corral-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .ok();
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_advances_until_the_ticker_is_dropped() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        let ticker = EpochTicker::start(engine.clone(), Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(30));
        drop(ticker);
        // Joined on drop: nothing bumps the epoch any more. (An epoch
        // counter is not readable; a store's deadline shows it moved.)
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(1);
        store.epoch_deadline_trap();
    }
}
