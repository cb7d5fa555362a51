//! `CapabilityGate` on Cedar: the tool runtime's file, HTTP and secret
//! checks go through the same policies as the call itself.

use std::sync::Arc;

use corral_gate::{Caller, Capability, CapabilityGate, Denial, FileOp, GateDecision};
use serde_json::json;

use crate::engine::{Common, uid};
use crate::store::PolicyStore;

/// The gate for one call: the live policies plus the call's session
/// context. Cheap to build per call.
pub struct CedarGate {
    store: Arc<PolicyStore>,
    common: Common,
}

impl CedarGate {
    pub fn new(store: Arc<PolicyStore>, common: Common) -> Self {
        CedarGate { store, common }
    }
}

impl CapabilityGate for CedarGate {
    fn check(&self, caller: &Caller, capability: &Capability) -> GateDecision {
        let engine = self.store.current();
        let common = json!({
            "request_time": self.common.request_time,
            "session_id": self.common.session_id,
            "calls_in_session": self.common.calls_in_session,
        });
        let agent = uid("Agent", &caller.agent);
        let request = match capability {
            Capability::File { op, path } => {
                let action = match op {
                    FileOp::Read | FileOp::List | FileOp::Stat => "read_file",
                    FileOp::Write | FileOp::Remove => "write_file",
                };
                engine.request(
                    agent,
                    uid("Action", action),
                    uid("Workspace", &caller.agent),
                    json!({ "common": common, "path": path, "tool": caller.tool }),
                )
            }
            Capability::Http(r) => engine.request(
                agent,
                uid("Action", "http_request"),
                uid("Host", &r.host),
                json!({
                    "common": common, "tool": caller.tool, "method": r.method,
                    "scheme": r.scheme, "port": i64::from(r.port), "path": r.path,
                }),
            ),
            Capability::Secret { name, host } => engine.request(
                agent,
                uid("Action", "use_secret"),
                uid("Secret", name),
                json!({ "common": common, "tool": caller.tool, "host": host }),
            ),
        };
        let request = match request {
            Ok(r) => r,
            Err(e) => return GateDecision::Deny(Denial::new(format!("{capability}: {e}"))),
        };
        let decision = engine.authorize(&request);
        if decision.allowed {
            GateDecision::Allow
        } else {
            GateDecision::Deny(Denial {
                reason: format!("{capability}: {}", decision.explain()),
                policy_ids: decision.policy_ids,
            })
        }
    }
}
