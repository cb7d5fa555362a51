//! Proving properties: each one checked, for every request type of the
//! schema its scope can match, against the policy set compiled once per
//! request type.
//!
//! - `@never P`: no request is allowed both by P and by the enforced set,
//!   `@approval` permits included (an approver could say yes).
//! - `@always P`: every request P allows is allowed by the enforced set
//!   without its `@approval` permits (nobody has to say yes).
//!
//! Shadow policies are left out, unless the subject is built with them to
//! see what enforcing them would prove.

use std::time::{Duration, Instant};

use cedar_policy::{PolicySet, RequestEnv, Schema};
use cedar_policy_symcc::CompiledPolicySet;
use corral_policy::LoadedPolicies;

use crate::counterexample::Counterexample;
use crate::properties::{Property, PropertyKind};
use crate::solver::{Prover, SolverError};

/// The policy set under proof, compiled for each request type.
pub struct Subject {
    schema: Schema,
    /// What allows, perhaps after asking.
    enforced: PolicySet,
    /// What allows without asking.
    outright: PolicySet,
    compiled: Vec<Compiled>,
    /// How long compiling took.
    pub compile_time: Duration,
}

struct Compiled {
    env: RequestEnv,
    enforced: CompiledPolicySet,
    outright: CompiledPolicySet,
}

impl Subject {
    /// Compiles `policies` for every request type of `schema`; with
    /// `with_shadow`, as if its shadow policies were enforced.
    pub fn compile(
        prover: &Prover,
        schema: &Schema,
        policies: &LoadedPolicies,
        with_shadow: bool,
    ) -> Result<Subject, SolverError> {
        let started = Instant::now();
        let (mut enforced, mut outright) = (policies.set.clone(), policies.outright());
        if with_shadow {
            for p in policies.shadow.policies() {
                // Ids are unique across enforced and shadow policies.
                let _ = enforced.add(p.clone());
                let _ = outright.add(p.clone());
            }
        }
        let mut compiled = Vec::new();
        for env in schema.request_envs() {
            compiled.push(Compiled {
                enforced: prover.compile(&enforced, &env, schema, "the policy set")?,
                outright: prover.compile(&outright, &env, schema, "the policy set")?,
                env,
            });
        }
        Ok(Subject {
            schema: schema.clone(),
            enforced,
            outright,
            compiled,
            compile_time: started.elapsed(),
        })
    }
}

/// What a proof found.
#[derive(Debug)]
pub enum ProofResult {
    /// The property holds for every request.
    Holds,
    /// A request breaks it.
    Fails(Box<Counterexample>),
}

/// One property's proof.
#[derive(Debug)]
pub struct Proof {
    /// The property's id.
    pub property: String,
    /// `@never` or `@always`.
    pub kind: PropertyKind,
    /// How many request types its scope can match.
    pub request_types: usize,
    /// Time spent on it (compiling it and solving).
    pub elapsed: Duration,
    /// The finding, or why there is none.
    pub result: Result<ProofResult, SolverError>,
}

/// Proves `property` over `subject`.
pub fn prove(prover: &mut Prover, subject: &Subject, property: &Property) -> Proof {
    let started = Instant::now();
    let mut request_types = 0;
    let result = (|| {
        let described_set = property.as_set();
        let applies: Vec<RequestEnv> = property
            .policy
            .get_valid_request_envs(&subject.schema)
            .collect();
        for c in subject.compiled.iter().filter(|c| applies.contains(&c.env)) {
            request_types += 1;
            // Only the requests the broker can make: see `broker_invariant`.
            let own = crate::with_invariant(&described_set, &c.env);
            let described = prover.compile(&own, &c.env, &subject.schema, "the property")?;
            let found = match property.kind {
                PropertyKind::Never => prover.allowed_by_both(&c.enforced, &described, &c.env)?,
                PropertyKind::Always => {
                    prover.allowed_by_a_not_b(&described, &c.outright, &c.env)?
                }
            };
            let Some(found) = found else { continue };
            let cex = Counterexample::new(crate::describe_env(&c.env), found);
            let reproduced = cex.allowed_by(&own)
                && match property.kind {
                    PropertyKind::Never => cex.allowed_by(&subject.enforced),
                    PropertyKind::Always => !cex.allowed_by(&subject.outright),
                };
            if !reproduced {
                return Err(SolverError::Query {
                    env: cex.env.clone(),
                    message: "the solver's counterexample does not reproduce under Cedar's authorizer; the property is not proven either way".into(),
                });
            }
            return Ok(ProofResult::Fails(Box::new(cex)));
        }
        Ok(ProofResult::Holds)
    })();
    Proof {
        property: property.id.clone(),
        kind: property.kind,
        request_types,
        elapsed: started.elapsed(),
        result,
    }
}
