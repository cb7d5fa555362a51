//! `@approval("…")`: a permit that allows a call only once a person says
//! yes. The annotation names who may answer; [`crate::PolicyEngine`] turns
//! a request allowed only by such permits into an ask.
//!
//! The semantics, shared by the broker and `corral policy check`, `test`
//! and `replay`:
//! 1. decided with the approval permits left out, an allow is an allow;
//! 2. otherwise, decided with them, an allow that only approval permits
//!    gave is an ask, anything else a deny;
//! 3. a satisfied `forbid` always denies, and an evaluation error in any
//!    policy step 2 needs denies.

use std::fmt;

/// Who may answer an ask, as an `@approval` annotation names them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Approvers {
    /// `@approval("sender")`: the person who sent the message the agent
    /// is working on.
    Sender,
    /// `@approval("group:NAME")`: any `User` in `Group::"NAME"`.
    Group(String),
}

impl Approvers {
    /// Parses an annotation's value; the error says what forms exist.
    pub fn parse(text: &str) -> Result<Approvers, String> {
        let text = text.trim();
        if text == "sender" {
            return Ok(Approvers::Sender);
        }
        match text.strip_prefix("group:") {
            Some(name) if !name.is_empty() && !name.contains('"') => {
                Ok(Approvers::Group(name.to_string()))
            }
            _ => Err(format!(
                "@approval(\"{text}\") names no approvers Corral knows; write @approval(\"group:NAME\") for the `User`s in `Group::\"NAME\"`, or @approval(\"sender\") for the person who sent the message the agent is working on"
            )),
        }
    }
}

impl fmt::Display for Approvers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Approvers::Sender => f.write_str("sender"),
            Approvers::Group(name) => write!(f, "group:{name}"),
        }
    }
}

/// One approval permit that a request satisfied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AskingPolicy {
    /// The permit's `@id`.
    pub policy_id: String,
    /// Who its annotation names.
    pub approvers: Approvers,
}

/// Why a request asks rather than allows: the approval permits that would
/// allow it, each with the people it names. Any one of them may answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApprovalNeeded {
    /// Sorted by policy id.
    pub policies: Vec<AskingPolicy>,
}

impl ApprovalNeeded {
    /// `group:ops (policy-a), sender (policy-b)`, for messages.
    pub fn describe(&self) -> String {
        self.policies
            .iter()
            .map(|p| format!("{} ({})", p.approvers, p.policy_id))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::Approvers;

    #[test]
    fn the_two_forms_parse_and_print_back() {
        assert_eq!(Approvers::parse("sender"), Ok(Approvers::Sender));
        assert_eq!(
            Approvers::parse(" group:sec-oncall "),
            Ok(Approvers::Group("sec-oncall".into()))
        );
        assert_eq!(Approvers::Group("ops".into()).to_string(), "group:ops");
    }

    #[test]
    fn anything_else_is_refused_with_the_forms_that_exist() {
        for bad in ["", "group:", "Group::\"ops\"", "anyone", "group:a\"b"] {
            let e = Approvers::parse(bad).unwrap_err();
            assert!(e.contains("group:NAME"), "{bad}: {e}");
        }
    }
}
