//! What a Cedar response comes to under Corral's rules (`@approval`
//! permits ask, any error denies), what the `@shadow` policies would have
//! made of it, and why a denial was made.

use cedar_policy::{Decision as CedarDecision, Entities, Request, Response};

use super::PolicyEngine;
use crate::approval::{ApprovalNeeded, AskingPolicy};
use crate::decision::{Decision, PolicyError};

impl PolicyEngine {
    /// `decision` with what the set would have decided with its `@shadow`
    /// policies enforced, when that differs. Only a set with shadow
    /// policies evaluates anything more.
    pub(super) fn shadowed(
        &self,
        mut decision: Decision,
        request: &Request,
        entities: &Entities,
    ) -> Decision {
        let Some(with_shadow) = &self.with_shadow else {
            return decision;
        };
        let response = self
            .authorizer
            .is_authorized(request, with_shadow, entities);
        let would = self.decision(&response);
        if would.verdict() != decision.verdict() {
            decision.shadow = Some(crate::decision::ShadowVerdict {
                verdict: would.verdict(),
                policy_ids: would.policy_ids,
            });
        }
        decision
    }

    /// `decision` with its findings when it is a denial the policies made
    /// (a refusal before them has its reason already): the only place the
    /// explanation is computed, so allowed calls never pay for it.
    pub(super) fn explained(
        &self,
        mut decision: Decision,
        request: &Request,
        entities: &Entities,
    ) -> Decision {
        if decision.verdict() != "deny" {
            return decision;
        }
        let (Some(p), Some(a), Some(r)) =
            (request.principal(), request.action(), request.resource())
        else {
            return decision;
        };
        let candidates = self.index.candidates(p, a, r, entities);
        // Prepared on this set's first denial, kept for its life.
        let explainer = self
            .explainer
            .get_or_init(|| crate::explain::Explainer::new(&self.policies.set));
        decision.findings = explainer.explain_denial(
            request,
            entities,
            candidates
                .iter()
                .filter_map(|i| self.index.policy(*i))
                .map(|p| p.id().as_ref()),
            &decision.policy_ids,
        );
        decision
    }

    /// A deny that no policy made: the request could not be put to Cedar,
    /// or failed before it. `message` is the reason; the current set's hash
    /// is recorded as for any decision.
    pub fn refuse(&self, message: impl Into<String>) -> Decision {
        Decision {
            allowed: false,
            policy_ids: Vec::new(),
            approval: None,
            errors: vec![PolicyError {
                policy_id: String::new(),
                message: message.into(),
            }],
            policy_set_hash: self.policies.hash.clone(),
            findings: Vec::new(),
            shadow: None,
        }
    }

    pub(super) fn decision(&self, response: &Response) -> Decision {
        let mut errors: Vec<PolicyError> = response
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(pe) => PolicyError {
                    policy_id: pe.policy_id().to_string(),
                    message: pe.inner().to_string(),
                },
            })
            .collect();
        // Cedar's order of errors follows its set's internal order; sorted,
        // the same decision always reads the same.
        errors.sort_by(|a, b| (&a.policy_id, &a.message).cmp(&(&b.policy_id, &b.message)));
        let mut reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        reasons.sort();
        reasons.dedup();
        let cedar_allowed = response.decision() == CedarDecision::Allow;
        let approvals = &self.policies.approvals;
        // Reasons of an allow are the satisfied permits.
        let plain_permit = cedar_allowed && reasons.iter().any(|id| !approvals.contains_key(id));
        // An error in an approval permit does not matter when a plain
        // permit allows (step 1 leaves approval permits out); any other
        // error denies.
        let errors_ignored =
            plain_permit && errors.iter().all(|e| approvals.contains_key(&e.policy_id));
        let errors_matter = !errors.is_empty() && !errors_ignored;
        if errors_matter {
            let mut policy_ids: Vec<String> = errors.iter().map(|e| e.policy_id.clone()).collect();
            policy_ids.dedup();
            return Decision {
                allowed: false,
                policy_ids,
                approval: None,
                errors,
                policy_set_hash: self.policies.hash.clone(),
                findings: Vec::new(),
                shadow: None,
            };
        }
        if cedar_allowed && !plain_permit {
            let policies = reasons
                .iter()
                .filter_map(|id| {
                    approvals.get(id).map(|approvers| AskingPolicy {
                        policy_id: id.clone(),
                        approvers: approvers.clone(),
                    })
                })
                .collect();
            return Decision {
                allowed: false,
                policy_ids: reasons,
                approval: Some(ApprovalNeeded { policies }),
                errors: Vec::new(),
                policy_set_hash: self.policies.hash.clone(),
                findings: Vec::new(),
                shadow: None,
            };
        }
        if plain_permit {
            // Only the permits that allow without asking decided.
            reasons.retain(|id| !approvals.contains_key(id));
        }
        Decision {
            allowed: cedar_allowed,
            policy_ids: reasons,
            approval: None,
            errors: Vec::new(),
            policy_set_hash: self.policies.hash.clone(),
            findings: Vec::new(),
            shadow: None,
        }
    }
}
