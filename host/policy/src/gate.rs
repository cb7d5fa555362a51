//! `CapabilityGate` on Cedar: the tool runtime's file, HTTP and secret
//! checks go through the same policies as the call itself.

use std::sync::Arc;

use corral_gate::{Caller, Capability, CapabilityGate, Denial, FileOp, GateDecision};
use serde_json::json;

use crate::request::{Common, uid};
use crate::store::PolicyStore;

/// The gate for one call: the live policies plus the call's session
/// context. Cheap to build per call.
pub struct CedarGate {
    store: Arc<PolicyStore>,
    common: Common,
}

impl CedarGate {
    /// A gate deciding on `store`'s current set, with the call's common context.
    pub fn new(store: Arc<PolicyStore>, common: Common) -> Self {
        CedarGate { store, common }
    }
}

/// One capability use put to the policies: what the audit log records.
#[derive(Debug, Clone)]
pub struct CapabilityDecision {
    /// The Cedar action id: `read_file`, `write_file`, `http_request` or
    /// `use_secret`.
    pub action: &'static str,
    /// The Cedar resource, as `Type::"id"`.
    pub resource: String,
    /// The request's context without `common`.
    pub arguments: serde_json::Value,
    /// The `common` context.
    pub common: serde_json::Value,
    /// Allowed, or why not.
    pub gate: GateDecision,
    /// The policies that decided (empty when the request could not be built).
    pub policy_ids: Vec<String>,
    /// Evaluation errors, each of which forced a deny.
    pub errors: Vec<String>,
    /// The hash of the set that decided.
    pub policy_set_hash: String,
    /// What enforcing the `@shadow` policies would have decided, when that
    /// differs.
    pub shadow: Option<String>,
}

impl CapabilityDecision {
    /// The decision in the terms its record uses.
    pub fn summary(&self) -> corral_gate::DecisionSummary {
        corral_gate::DecisionSummary {
            allowed: matches!(self.gate, GateDecision::Allow),
            ask: false,
            policy_ids: self.policy_ids.clone(),
            errors: self.errors.clone(),
            policy_set_hash: self.policy_set_hash.clone(),
            explanation: match &self.gate {
                GateDecision::Deny(d) => d.reason.clone(),
                GateDecision::Allow => String::new(),
            },
            shadow: self.shadow.clone(),
        }
    }
}

impl CedarGate {
    /// What `capability` would be asked as, decided by nobody: for
    /// recording a refusal the runtime made before policy was asked.
    pub fn describe(&self, caller: &Caller, capability: &Capability) -> CapabilityDecision {
        let engine = self.store.current();
        let (action, resource, arguments) = request_parts(caller, capability);
        CapabilityDecision {
            action,
            resource: resource.to_string(),
            arguments,
            common: self.common.to_json(),
            gate: GateDecision::Allow,
            policy_ids: Vec::new(),
            errors: Vec::new(),
            policy_set_hash: engine.policy_set_hash().to_string(),
            shadow: None,
        }
    }

    /// Decides `capability` for `caller`, keeping what was asked.
    pub fn decide(&self, caller: &Caller, capability: &Capability) -> CapabilityDecision {
        let engine = self.store.current();
        let common = self.common.to_json();
        let (action, resource, arguments) = request_parts(caller, capability);
        let mut context = arguments.clone();
        if let Some(map) = context.as_object_mut() {
            map.insert("common".into(), common.clone());
        }
        let mut out = CapabilityDecision {
            action,
            resource: resource.to_string(),
            arguments,
            common,
            gate: GateDecision::Allow,
            policy_ids: Vec::new(),
            errors: Vec::new(),
            policy_set_hash: engine.policy_set_hash().to_string(),
            shadow: None,
        };
        let request = match engine.request(
            uid("Agent", &caller.agent),
            uid("Action", action),
            resource,
            context,
        ) {
            Ok(r) => r,
            Err(e) => {
                out.errors.push(e.to_string());
                out.gate = GateDecision::Deny(Denial::new(format!("{capability}: {e}")));
                return out;
            }
        };
        let decision = engine.authorize(&request);
        out.errors = decision.errors.iter().map(|e| e.to_string()).collect();
        if !decision.allowed {
            // Only a tool call waits for a person; inside a running tool
            // an ask is a deny.
            let only_calls = if decision.approval.is_some() {
                "; approval is asked only for tool calls, so inside a tool it is a deny"
            } else {
                ""
            };
            out.gate = GateDecision::Deny(Denial {
                reason: format!("{capability}: {}{only_calls}", decision.explain()),
                policy_ids: decision.policy_ids.clone(),
            });
        }
        out.shadow = decision.shadow.as_ref().map(ToString::to_string);
        out.policy_ids = decision.policy_ids;
        out
    }
}

/// The Cedar action, resource and context (without `common`) that
/// `capability` is asked as.
fn request_parts(
    caller: &Caller,
    capability: &Capability,
) -> (&'static str, cedar_policy::EntityUid, serde_json::Value) {
    let (action, resource_type, resource_id, arguments) = match capability {
        Capability::File { op, path } => {
            let action = match op {
                FileOp::Read | FileOp::List | FileOp::Stat => "read_file",
                FileOp::Write | FileOp::Remove => "write_file",
            };
            (
                action,
                "Workspace",
                caller.agent.as_str(),
                json!({ "path": path, "tool": caller.tool }),
            )
        }
        Capability::Http(r) => {
            let mut context = json!({
                "tool": caller.tool, "method": r.method, "scheme": r.scheme,
                "port": i64::from(r.port), "path": r.path,
            });
            // An address is Cedar's `ipaddr`, so policies can ask
            // `context.address.isLoopback()` or `.isInRange(ip("10.0.0.0/8"))`.
            // A request is only put to policy once its name is resolved;
            // without one, the request fails the schema and is denied.
            if let (Some(a), Some(map)) = (r.address, context.as_object_mut()) {
                map.insert(
                    "address".into(),
                    json!({ "__extn": { "fn": "ip", "arg": a.to_string() } }),
                );
            }
            ("http_request", "Host", r.host.as_str(), context)
        }
        Capability::Secret { name, host } => (
            "use_secret",
            "Secret",
            name.as_str(),
            json!({ "tool": caller.tool, "host": host }),
        ),
    };
    (action, uid(resource_type, resource_id), arguments)
}

impl CapabilityGate for CedarGate {
    fn check(&self, caller: &Caller, capability: &Capability) -> GateDecision {
        self.decide(caller, capability).gate
    }
}
