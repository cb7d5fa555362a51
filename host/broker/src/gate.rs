//! The capability gate a tool runs under inside the broker: Cedar decides,
//! the audit log records, and only then does the runtime act.

use corral_audit::{AuditLog, Entry, Kind, Verdict};
use corral_gate::{Caller, Capability, CapabilityGate, Denial, GateDecision};
use corral_policy::CedarGate;

pub(crate) struct AuditedGate {
    pub cedar: CedarGate,
    pub audit: AuditLog,
    /// The call record this tool run belongs to.
    pub parent: i64,
    pub tool_sha256: String,
    /// The agent runs in observe mode: a file or HTTP use that only lacks
    /// a permit is let through, recorded `would-deny`. A secret never is:
    /// it goes only where a permit sends it.
    pub observe: bool,
}

impl CapabilityGate for AuditedGate {
    fn refused(&self, caller: &Caller, capability: &Capability, denial: &Denial) {
        let d = self.cedar.describe(caller, capability);
        let refusal = corral_gate::DecisionSummary {
            allowed: false,
            policy_set_hash: d.policy_set_hash.clone(),
            explanation: format!("refused by the runtime before policy: {}", denial.reason),
            ..Default::default()
        };
        let mut entry = Entry::decided(
            Kind::Capability,
            &caller.agent,
            d.action,
            d.resource,
            &refusal,
        );
        entry.arguments = d.arguments;
        entry.session = d.common;
        entry.parent = Some(self.parent);
        entry.tool_sha256 = Some(self.tool_sha256.clone());
        if let Err(e) = self.audit.append_blocking(entry) {
            tracing::error!(agent = %caller.agent, error = %e, "cannot record a refused capability");
        }
    }

    fn check(&self, caller: &Caller, capability: &Capability) -> GateDecision {
        let d = self.cedar.decide(caller, capability);
        let mut entry = Entry::decided(
            Kind::Capability,
            &caller.agent,
            d.action,
            &d.resource,
            &d.summary(),
        );
        entry.arguments = d.arguments;
        entry.session = d.common;
        entry.parent = Some(self.parent);
        entry.tool_sha256 = Some(self.tool_sha256.clone());
        let observed = self.observe
            && !matches!(capability, Capability::Secret { .. })
            && matches!(d.gate, GateDecision::Deny(_))
            && d.policy_ids.is_empty()
            && d.errors.is_empty();
        let gate = if observed {
            entry.verdict = Some(Verdict::WouldDeny);
            entry.detail = entry
                .detail
                .map(|why| format!("observe mode, let through: {why}"));
            GateDecision::Allow
        } else {
            d.gate
        };
        // The runtime calls this on the thread running the tool, which may
        // block; the effect waits for its record.
        match self.audit.append_blocking(entry) {
            Ok(_) => gate,
            Err(e) => GateDecision::Deny(Denial::new(format!(
                "{capability}: refused because the decision could not be recorded ({e})"
            ))),
        }
    }
}
