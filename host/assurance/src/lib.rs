//! Policy assurance: facts about a policy set that hold for **every**
//! request the schema admits, not only for the requests someone thought to
//! test.
//!
//! - [`properties`]: `@never` and `@always` properties, written as Cedar
//!   permits in their own directory.
//! - [`solver`]: Cedar's symbolic compiler (`cedar-policy-symcc`) over a
//!   cvc5 process.
//! - [`prove`]: each property checked for each request type of the schema.
//! - [`diff`]: two policy sets compared for each request type.
//! - [`counterexample`]: a request and entities that break a property or
//!   tell two sets apart, re-decided by Cedar's own authorizer before it is
//!   shown, and written as a `policies/tests` case.
//!
//! What a proof covers: every principal, action and resource type
//! combination the schema allows, every context the action's context type
//! admits (tool inputs included, since each registered tool's input is a
//! typed record), and every entity store the schema admits (any attribute
//! values, any membership the `in` declarations allow). So it holds for
//! the entities file as it is today and as it may be tomorrow. What it does
//! not cover is what Corral decides outside Cedar: that the principal is a
//! known agent, input constraints a Cedar type cannot say (string
//! patterns, lengths, enums), rate and size limits, and the runtime's own
//! refusals. Those only ever deny more.
//!
//! This crate links Cedar and a solver process, never wasmtime.

pub mod counterexample;
pub mod diff;
pub mod properties;
pub mod prove;
pub mod solver;

pub use counterexample::Counterexample;
pub use diff::{Change, EnvDiff, diff};
pub use properties::{Property, PropertyKind, load_properties};
pub use prove::{Proof, ProofResult, Subject, prove};
pub use solver::{Prover, SolverError};

/// A request type: the principal type, the action and the resource type
/// that one part of a proof covers.
pub fn describe_env(env: &cedar_policy::RequestEnv) -> String {
    format!("{} {} {}", env.principal(), env.action(), env.resource())
}

/// What the broker guarantees and Cedar's schema cannot say: a tool call's
/// resource is the tool itself (`Action::"t"` always comes with
/// `Tool::"t"`). For a request type whose resource is a `Tool`, this is a
/// forbid of every other pairing; added to the sets a proof compares, it
/// keeps requests the broker never makes from passing for findings.
pub fn broker_invariant(env: &cedar_policy::RequestEnv) -> Option<cedar_policy::Policy> {
    if env.resource().to_string() != "Tool" {
        return None;
    }
    let action = env.action();
    let id = action.id().unescaped();
    let policy = serde_json::json!({
        "effect": "forbid",
        "principal": { "op": "All" },
        "action": { "op": "==", "entity": { "type": "Action", "id": id } },
        "resource": { "op": "All" },
        "conditions": [{
            "kind": "unless",
            "body": { "==": {
                "left": { "Var": "resource" },
                "right": { "Value": { "__entity": { "type": "Tool", "id": id } } }
            } }
        }]
    });
    cedar_policy::Policy::from_json(
        Some(cedar_policy::PolicyId::new("corral-broker-invariant")),
        policy,
    )
    .ok()
}

/// `set` plus [`broker_invariant`] for `env`, when there is one.
pub fn with_invariant(
    set: &cedar_policy::PolicySet,
    env: &cedar_policy::RequestEnv,
) -> cedar_policy::PolicySet {
    let mut set = set.clone();
    if let Some(forbid) = broker_invariant(env) {
        // The invariant's id is reserved: no loaded policy carries it.
        let _ = set.add(forbid);
    }
    set
}
