//! The per-call capability guard: who is asking, the gate that decides,
//! and the record of every capability use and its answer. The HTTP hooks
//! (`http.rs`) and the workspace and logging host functions
//! (`host_impl.rs`) each ask through it.

use std::sync::Arc;
use std::time::Instant;

use corral_gate::{Caller, Capability, CapabilityGate, GateDecision, SecretStore};

use crate::address::InternalNetworks;

/// A capability the tool asked for during the call, and the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityUse {
    /// What the tool asked for.
    pub capability: corral_gate::Capability,
    /// The gate's answer.
    pub decision: corral_gate::GateDecision,
}

/// Per-call state of the HTTP gate; also the call's record of capability
/// decisions (workspace decisions are recorded here too).
pub(crate) struct CapabilityGuard {
    pub(crate) caller: Caller,
    pub(crate) gate: Arc<dyn CapabilityGate>,
    pub(crate) secrets: Arc<dyn SecretStore>,
    pub(crate) internal: Arc<InternalNetworks>,
    pub(crate) deadline: Instant,
    pub(crate) uses: Vec<CapabilityUse>,
    /// Set on entry to any of Corral's own host functions, whatever they
    /// then answer: an instance made ahead of its call that reached one
    /// would have met a caller, gate and workspace that are not its call's.
    reached: bool,
}

impl CapabilityGuard {
    pub(crate) fn new(
        caller: Caller,
        gate: Arc<dyn CapabilityGate>,
        secrets: Arc<dyn SecretStore>,
        internal: Arc<InternalNetworks>,
        deadline: Instant,
    ) -> Self {
        CapabilityGuard {
            caller,
            gate,
            secrets,
            internal,
            deadline,
            uses: Vec::new(),
            reached: false,
        }
    }

    /// Notes that the guest called one of Corral's host functions.
    pub(crate) fn reach(&mut self) {
        self.reached = true;
    }

    /// Asks the gate and records the answer.
    pub(crate) fn check(&mut self, capability: Capability) -> GateDecision {
        let decision = self.gate.check(&self.caller, &capability);
        tracing::debug!(agent = %self.caller.agent, tool = %self.caller.tool, %capability, allowed = matches!(decision, GateDecision::Allow), "capability check");
        self.uses.push(CapabilityUse {
            capability,
            decision: decision.clone(),
        });
        decision
    }

    pub(crate) fn caller(&self) -> &Caller {
        &self.caller
    }

    pub(crate) fn take_uses(&mut self) -> Vec<CapabilityUse> {
        std::mem::take(&mut self.uses)
    }

    /// Whether the guest has called any of Corral's host functions (and
    /// so whether anything has asked the gate).
    pub(crate) fn was_reached(&self) -> bool {
        self.reached || !self.uses.is_empty()
    }
}
