//! What a decision comes to: allowed or not, the policies that decided,
//! their evaluation errors, and the policy set; and why a request could not
//! be put to the policies at all.

use crate::approval::ApprovalNeeded;
use crate::explain::Finding;

/// How many findings the one-line explanation (the agent's denial text,
/// the record's detail) shows.
const MAX_FINDINGS_SHOWN: usize = 5;

/// An evaluation error in one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The policy's `@id`; empty for an error no one policy caused.
    pub policy_id: String,
    /// What went wrong, as Cedar says it.
    pub message: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.policy_id.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.policy_id, self.message)
        }
    }
}

/// The outcome of one authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is allowed. False for an ask: a caller that
    /// does not look at [`Decision::approval`] denies it.
    pub allowed: bool,
    /// The policies that decided, sorted: the permits that allowed it, the
    /// forbids that denied it, the approval permits that ask, or the
    /// policies whose errors forced a deny. Empty for a default deny (no
    /// permit matched).
    pub policy_ids: Vec<String>,
    /// Set when only `@approval` permits would allow the request: it is
    /// allowed once a person they name says yes.
    pub approval: Option<ApprovalNeeded>,
    /// Evaluation errors. Any error makes the decision a deny.
    pub errors: Vec<PolicyError>,
    /// Identity of the policy set that decided.
    pub policy_set_hash: String,
    /// For a denial, why, in the terms of the policy text; empty for
    /// anything else (computed only when a request is denied).
    pub findings: Vec<Finding>,
    /// Set when enforcing the `@shadow` policies would have decided
    /// otherwise.
    pub shadow: Option<ShadowVerdict>,
}

/// What the policy set with its `@shadow` policies enforced would have
/// decided, when that differs from the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowVerdict {
    /// `allow`, `deny` or `ask`.
    pub verdict: &'static str,
    /// The policies that would have decided.
    pub policy_ids: Vec<String>,
}

impl std::fmt::Display for ShadowVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "with shadow policies enforced: {}", self.verdict)?;
        if !self.policy_ids.is_empty() {
            write!(f, " by {}", self.policy_ids.join(", "))?;
        }
        Ok(())
    }
}

impl Decision {
    /// `allow`, `deny` or `ask`, as records and `policy test` name them.
    pub fn verdict(&self) -> &'static str {
        match (self.allowed, &self.approval) {
            (true, _) => "allow",
            (false, Some(_)) => "ask",
            (false, None) => "deny",
        }
    }

    /// Denied only because no permit allowed it: no forbid applied, no
    /// evaluation failed, and no `@approval` permit asks. The one kind of
    /// denial observe mode lets through.
    pub fn lacks_permit(&self) -> bool {
        !self.allowed
            && self.approval.is_none()
            && self.errors.is_empty()
            && self.policy_ids.is_empty()
    }

    /// The decision in the terms its record uses.
    pub fn summary(&self) -> corral_gate::DecisionSummary {
        corral_gate::DecisionSummary {
            allowed: self.allowed,
            policy_ids: self.policy_ids.clone(),
            errors: self.errors.iter().map(PolicyError::to_string).collect(),
            policy_set_hash: self.policy_set_hash.clone(),
            ask: self.approval.is_some(),
            // Only a denial's record carries it; an allowed call on the hot
            // path formats nothing.
            explanation: if self.allowed {
                String::new()
            } else {
                self.explain()
            },
            shadow: self.shadow.as_ref().map(ShadowVerdict::to_string),
        }
    }

    /// One line a person can read: for a denial, down to the condition.
    pub fn explain(&self) -> String {
        let why = if self.findings.is_empty() {
            String::new()
        } else {
            let mut list: Vec<String> = self
                .findings
                .iter()
                .take(MAX_FINDINGS_SHOWN)
                .map(Finding::to_string)
                .collect();
            if self.findings.len() > MAX_FINDINGS_SHOWN {
                list.push(format!(
                    "{} more (`corral policy check --explain` lists them)",
                    self.findings.len() - MAX_FINDINGS_SHOWN
                ));
            }
            format!(" — {}", list.join("; "))
        };
        if !self.errors.is_empty() {
            let list: Vec<String> = self.errors.iter().map(PolicyError::to_string).collect();
            return format!(
                "denied because evaluating a policy failed (fail closed): {}{why}",
                list.join("; ")
            );
        }
        if let Some(needed) = &self.approval {
            return format!("needs a person's approval: {}", needed.describe());
        }
        match (self.allowed, self.policy_ids.is_empty()) {
            (true, _) => format!("allowed by {}", self.policy_ids.join(", ")),
            (false, true) => format!("denied: no permit matched{why}"),
            (false, false) => format!("denied by {}{why}", self.policy_ids.join(", ")),
        }
    }
}

/// Why a request could not even be put to the policies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The tool has no action in the schema (it is not loaded).
    #[error("unknown tool `{0}`: it has no action in the schema")]
    UnknownTool(String),
    /// The input does not fit the tool's input schema.
    #[error("invalid input for tool `{tool}`: {problem}")]
    InvalidInput {
        /// The tool called.
        tool: String,
        /// Which field does not fit its type, and how.
        problem: String,
    },
    /// The request could not be built for another reason.
    #[error("invalid request: {0}")]
    Invalid(String),
}
