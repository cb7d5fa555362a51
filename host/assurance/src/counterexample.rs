//! A concrete request, with the entities that make it so, that the solver
//! found: shown to the author as a `policies/tests` case they can paste in.

use cedar_policy::{Authorizer, Decision, Entities, PolicySet, Request};
use cedar_policy_symcc::Env;
use serde_json::{Value, json};

/// One request and its entities.
#[derive(Debug, Clone)]
pub struct Counterexample {
    /// The request type it belongs to.
    pub env: String,
    request: Request,
    entities: Entities,
}

impl Counterexample {
    /// The solver's model for request type `env`.
    pub fn new(env: String, found: Env) -> Counterexample {
        Counterexample {
            env,
            request: found.request,
            entities: found.entities,
        }
    }

    /// Whether Cedar's own authorizer allows the request under `set`: the
    /// check every counterexample passes before it is shown, so that a
    /// solver or encoding bug cannot pass for a finding.
    pub fn allowed_by(&self, set: &PolicySet) -> bool {
        Authorizer::new()
            .is_authorized(&self.request, set, &self.entities)
            .decision()
            == Decision::Allow
    }

    fn uid(&self, which: Option<&cedar_policy::EntityUid>) -> String {
        which.map(ToString::to_string).unwrap_or_default()
    }

    /// The principal, action and resource, as Cedar writes uids.
    pub fn triple(&self) -> (String, String, String) {
        (
            self.uid(self.request.principal()),
            self.uid(self.request.action()),
            self.uid(self.request.resource()),
        )
    }

    /// The request's context as JSON.
    pub fn context(&self) -> Value {
        self.request
            .context()
            .and_then(|c| c.to_json_value().ok())
            .unwrap_or_else(|| json!({}))
    }

    /// The entities that make it so, as entities JSON, without the action
    /// entities (the schema supplies those).
    pub fn entities(&self) -> Value {
        let all = self.entities.to_json_value().unwrap_or_else(|_| json!([]));
        let kept: Vec<Value> = all
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|e| e["uid"]["type"] != "Action")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Value::Array(kept)
    }

    /// The counterexample as a case for `corral policy test`, expecting
    /// `decision` (what the property demands, so the case fails until the
    /// policies are fixed, and guards the fix after).
    pub fn test_case(&self, name: &str, decision: &str) -> Value {
        let (principal, action, resource) = self.triple();
        json!({
            "name": name,
            "request": {
                "principal": principal,
                "action": action,
                "resource": resource,
                "context": self.context(),
            },
            "entities": self.entities(),
            "decision": decision,
            "reason": [],
            "num_errors": 0,
        })
    }
}
