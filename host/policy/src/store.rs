//! The live policy set, and its hot reload.
//!
//! A reload builds and fully validates a new engine off to the side, then
//! swaps one pointer. A request holds the `Arc` of the engine it started
//! with, so it never sees a half-loaded set, and an invalid change leaves
//! the last good set in force.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::engine::{EngineSources, PolicyEngine};
use crate::load::LoadErrors;

/// The live policy set: decisions read the current engine, and a reload validates a whole new engine before it replaces the old one in one swap.
pub struct PolicyStore {
    current: RwLock<Arc<PolicyEngine>>,
    sources: Mutex<EngineSources>,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("current", &self.current())
            .finish()
    }
}

/// Keeps the directory watch alive; dropping it stops hot reload.
pub struct WatchGuard {
    _watcher: notify::RecommendedWatcher,
}

impl PolicyStore {
    /// Loads and validates everything, or says what is wrong.
    pub fn load(sources: EngineSources) -> Result<Self, LoadErrors> {
        let engine = PolicyEngine::load(&sources)?;
        Ok(PolicyStore {
            current: RwLock::new(Arc::new(engine)),
            sources: Mutex::new(sources),
        })
    }

    /// The engine in force now.
    pub fn current(&self) -> Arc<PolicyEngine> {
        match self.current.read() {
            Ok(g) => g.clone(),
            // A panic while swapping cannot leave a half-written Arc, so
            // the value is still good.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the directory; swaps only if the whole set is valid.
    /// Returns the new policy-set hash.
    pub fn reload(&self) -> Result<String, LoadErrors> {
        let sources = match self.sources.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let engine = Arc::new(PolicyEngine::load(&sources)?);
        let hash = engine.policy_set_hash().to_string();
        match self.current.write() {
            Ok(mut g) => *g = engine,
            Err(p) => *p.into_inner() = engine,
        }
        Ok(hash)
    }

    /// The directory the set is loaded from.
    pub fn policy_dir(&self) -> PathBuf {
        match self.sources.lock() {
            Ok(s) => s.policy_dir.clone(),
            Err(p) => p.into_inner().policy_dir.clone(),
        }
    }

    /// Watches the policy directory and reloads on change (debounced).
    /// An invalid change is logged with its file:line errors and the last
    /// good set stays in force.
    pub fn watch(self: &Arc<Self>) -> notify::Result<WatchGuard> {
        let (tx, rx) = mpsc::channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&self.policy_dir(), RecursiveMode::NonRecursive)?;
        let store = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("corral-policy-watch".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // Editors write files in several steps; wait for quiet.
                    while rx.recv_timeout(Duration::from_millis(100)).is_ok() {}
                    let Some(store) = store.upgrade() else { break };
                    match store.reload() {
                        Ok(hash) => tracing::info!(%hash, "policies reloaded"),
                        Err(e) => tracing::error!(
                            "policy change rejected, keeping the last good set:\n{e}"
                        ),
                    }
                }
            })
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(WatchGuard { _watcher: watcher })
    }
}
