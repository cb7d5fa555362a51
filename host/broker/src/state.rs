//! What an agent's connections share with each other and with every other
//! agent's: the broker's services and limits, and each agent's counters.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use corral_audit::AuditLog;
use corral_gate::SecretStore;
use corral_policy::PolicyStore;
use corral_tools::{ToolRegistry, ToolRuntime};

use crate::connection::Live;
use crate::limits::{BrokerLimits, RateLimiter, Slots};
use crate::services::{Mailbox, Models, TurnLimits};

/// Everything sessions share.
pub(crate) struct Shared {
    pub policies: Arc<PolicyStore>,
    pub runtime: Arc<ToolRuntime>,
    pub registry: Arc<ToolRegistry>,
    pub audit: AuditLog,
    pub secrets: Arc<dyn SecretStore>,
    pub limits: BrokerLimits,
    pub mailbox: Option<Arc<dyn Mailbox>>,
    pub approvals: Option<corral_approvals::Approvals>,
    pub models: Models,
    pub live: Live,
    pub observer: Option<Arc<dyn crate::CallObserver>>,
}

/// Per-agent state, shared by the agent's connections.
pub(crate) struct AgentState {
    pub id: Arc<str>,
    pub workspace: PathBuf,
    pub running: Arc<Slots>,
    pub rate: Mutex<RateLimiter>,
    pub sessions: std::sync::atomic::AtomicU64,
    pub model: Option<String>,
    pub turn: TurnLimits,
    /// Model tokens used today (UTC day number, tokens), for budgets.
    pub day: Mutex<(i64, u64)>,
    /// Held for the whole of each model call: one at a time per agent.
    pub model_turn: tokio::sync::Mutex<()>,
    /// Model calls since the agent's last reply, against `turn.max_steps`.
    pub steps: std::sync::atomic::AtomicU32,
    /// Observe mode (see `AgentSpec::observe`).
    pub observe: bool,
}

impl AgentState {
    /// Takes one token from the agent's bucket, or says how long to wait.
    pub fn take_rate(&self, now: std::time::Instant) -> Result<(), std::time::Duration> {
        self.rate
            .lock()
            .map(|mut r| r.try_take(now))
            .unwrap_or(Ok(()))
    }

    pub(crate) fn today() -> i64 {
        corral_audit::now_micros() / 86_400_000_000
    }

    pub fn day_tokens(&self) -> u64 {
        let day = self.day.lock().unwrap_or_else(|p| p.into_inner());
        if day.0 == Self::today() { day.1 } else { 0 }
    }

    pub fn add_day_tokens(&self, n: u64) {
        let mut day = self.day.lock().unwrap_or_else(|p| p.into_inner());
        let today = Self::today();
        if day.0 != today {
            *day = (today, 0);
        }
        day.1 += n;
    }
}
