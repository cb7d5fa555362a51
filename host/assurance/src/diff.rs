//! The semantic diff of two policy sets: for each request type, whether
//! the new set allows exactly what the old one did, more, less, or both,
//! each difference shown by a concrete request.

use cedar_policy::{PolicySet, Schema};
use corral_policy::LoadedPolicies;

use crate::counterexample::Counterexample;
use crate::solver::{Prover, SolverError};

/// How the new set differs from the old for one request type.
#[derive(Debug)]
pub enum Change {
    /// They allow exactly the same requests.
    Equivalent,
    /// The new set allows a request the old one denied.
    AllowsMore(Box<Counterexample>),
    /// The new set denies a request the old one allowed.
    AllowsLess(Box<Counterexample>),
    /// Both.
    Both {
        /// Allowed now, denied before.
        more: Box<Counterexample>,
        /// Denied now, allowed before.
        less: Box<Counterexample>,
    },
}

impl Change {
    /// Whether the new set allows anything the old one did not.
    pub fn widens(&self) -> bool {
        matches!(self, Change::AllowsMore(_) | Change::Both { .. })
    }
}

/// One request type's comparison.
#[derive(Debug)]
pub struct EnvDiff {
    /// The request type: principal type, action, resource type.
    pub env: String,
    /// Which decision is compared: `allows` (perhaps after a person
    /// approves) or `allows without asking`.
    pub view: &'static str,
    /// What changed.
    pub change: Change,
}

/// Compares `old` with `new` for every request type of `schema` (the new
/// set's schema).
pub fn diff(
    prover: &mut Prover,
    schema: &Schema,
    old: &LoadedPolicies,
    new: &LoadedPolicies,
) -> Result<Vec<EnvDiff>, SolverError> {
    let mut views: Vec<(&'static str, PolicySet, PolicySet)> =
        vec![("allows", old.set.clone(), new.set.clone())];
    if !old.approvals.is_empty() || !new.approvals.is_empty() {
        views.push(("allows without asking", old.outright(), new.outright()));
    }
    let mut out = Vec::new();
    for env in schema.request_envs() {
        for (view, old_set, new_set) in &views {
            // Both sides see only the requests the broker can make.
            let old_set = &crate::with_invariant(old_set, &env);
            let new_set = &crate::with_invariant(new_set, &env);
            let old_c = prover.compile(old_set, &env, schema, "the old policy set")?;
            let new_c = prover.compile(new_set, &env, schema, "the new policy set")?;
            let name = crate::describe_env(&env);
            let found = |cex: Option<cedar_policy_symcc::Env>,
                         allowed: &PolicySet,
                         denied: &PolicySet|
             -> Result<Option<Box<Counterexample>>, SolverError> {
                let Some(cex) = cex else { return Ok(None) };
                let cex = Counterexample::new(name.clone(), cex);
                if cex.allowed_by(allowed) && !cex.allowed_by(denied) {
                    Ok(Some(Box::new(cex)))
                } else {
                    Err(SolverError::Query {
                        env: name.clone(),
                        message: "the solver's counterexample does not reproduce under Cedar's authorizer".into(),
                    })
                }
            };
            let more = prover.allowed_by_a_not_b(&new_c, &old_c, &env)?;
            let more = found(more, new_set, old_set)?;
            let less = prover.allowed_by_a_not_b(&old_c, &new_c, &env)?;
            let less = found(less, old_set, new_set)?;
            let change = match (more, less) {
                (None, None) => Change::Equivalent,
                (Some(more), None) => Change::AllowsMore(more),
                (None, Some(less)) => Change::AllowsLess(less),
                (Some(more), Some(less)) => Change::Both { more, less },
            };
            out.push(EnvDiff {
                env: name,
                view,
                change,
            });
        }
    }
    Ok(out)
}
