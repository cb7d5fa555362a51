//! What goes into and comes out of [`crate::Approvals`]: the ask, the
//! answer, the pending approval as people see it, and the errors.

use std::time::Duration;

use corral_policy::ApprovalNeeded;
use serde::Serialize;
use serde_json::Value;

/// The `[approvals]` section of `corral.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalsConfig {
    /// How long a call waits for an answer before it is denied. Default 10
    /// minutes.
    pub timeout: Duration,
    /// Most approvals one agent may have waiting; calls beyond it are
    /// denied at once, saying so. Default 4: an agent cannot bury its
    /// approvers in requests.
    pub max_pending_per_agent: usize,
    /// Longest period an "approve for a period" may cover. Default 1 day.
    pub max_grant: Duration,
    /// The period Slack's "approve for a period" button grants. Default 1
    /// hour.
    pub slack_grant: Duration,
    /// A Slack channel id where every approval is posted; without it, an
    /// approval is posted in the Slack thread its work came from.
    pub slack_channel: Option<String>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            timeout: Duration::from_secs(600),
            max_pending_per_agent: 4,
            max_grant: Duration::from_secs(86_400),
            slack_grant: Duration::from_secs(3_600),
            slack_channel: None,
        }
    }
}

/// Where the work that led to a call came from: the channel and the
/// conversation of the message the agent was working on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// `Channel` id: `slack:C123`, `terminal`.
    pub channel: String,
    /// The conversation (a Slack thread, a terminal session).
    pub conversation: String,
}

/// A call to put to people.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The calling agent.
    pub agent: &'a str,
    /// The tool it called.
    pub tool: &'a str,
    /// The call's arguments, as the agent sent them.
    pub arguments: &'a Value,
    /// The call's own audit record.
    pub call_seq: i64,
    /// Why it asks: the approval permits and whom they name.
    pub needed: &'a ApprovalNeeded,
    /// The person who sent the message the agent is working on, as a
    /// `User` id, when exactly one message is.
    pub requested_by: Option<&'a str>,
    /// Where that message came from.
    pub origin: Option<&'a Origin>,
    /// The policy set that decided the call.
    pub policy_hash: &'a str,
}

/// A waiting approval, as `corral approvals ls`, Slack and the terminal
/// show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingApproval {
    /// The `approval_requested` record's sequence number.
    pub id: i64,
    /// The calling agent.
    pub agent: String,
    /// The tool it called.
    pub tool: String,
    /// The arguments, redacted as the audit log redacts them.
    pub arguments: Value,
    /// Whether redaction hid anything (a long value, a secret-looking
    /// key): an approver must then see them whole
    /// ([`crate::Approvals::arguments`], `corral approvals show`) first.
    pub hidden: bool,
    /// The call's audit record.
    pub call_seq: i64,
    /// The `@approval` permits that asked.
    pub asked_by: Vec<String>,
    /// Whom they name: `group:ops`, `sender`.
    pub approvers: Vec<String>,
    /// The person whose message the agent was working on, if known.
    pub requested_by: Option<String>,
    /// Where that message came from.
    pub origin: Option<Origin>,
    /// Microseconds since the epoch.
    pub asked_at_us: i64,
    /// When it is denied for want of an answer.
    pub expires_at_us: i64,
}

impl PendingApproval {
    /// One line: `approval 12: agent `a` calls `t` {"path":"x"}; asked by
    /// p (group:ops)`.
    pub fn describe(&self) -> String {
        let policies: Vec<String> = self
            .asked_by
            .iter()
            .zip(&self.approvers)
            .map(|(p, a)| format!("{p} ({a})"))
            .collect();
        let hidden = if self.hidden {
            format!(
                " (values hidden: see them whole with `corral approvals show {}`)",
                self.id
            )
        } else {
            String::new()
        };
        format!(
            "approval {}: agent `{}` calls tool `{}` with {}{hidden}; asked by {}",
            self.id,
            self.agent,
            self.tool,
            self.arguments,
            policies.join(", ")
        )
    }
}

/// What a person answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Run this call, only this one.
    Once,
    /// Run this call, and the same agent's identical calls of the same
    /// tool until the period ends.
    For(Duration),
    /// Do not run it.
    Deny {
        /// What the person said, if anything.
        reason: Option<String>,
    },
}

/// A person's answer to one approval.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    /// The approval's id.
    pub id: i64,
    /// The person, as a `User` id (`slack:U123`, `local:1000`), from the
    /// channel's own authentication, never from what the person typed.
    pub user: &'a str,
    /// Where the person is known from (`slack`, `terminal`): the `User`'s
    /// `channel_kind`.
    pub user_kind: &'a str,
    /// The channel the answer came through: `slack`, `terminal`.
    pub via: &'a str,
    /// What they answered.
    pub choice: Choice,
}

/// How long a grant lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "scope")]
pub enum Scope {
    /// This call only.
    Once,
    /// Identical calls until then (microseconds since the epoch).
    Until {
        /// The grant's end.
        expires_at_us: i64,
    },
}

/// How a waiting call's approval ended. Each carries its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Run the call.
    Granted {
        /// The `approval_granted` record.
        record: i64,
        /// The person, as `User::"…"`.
        by: String,
        /// What the grant covers.
        scope: Scope,
    },
    /// Do not run it: a person said no.
    Denied {
        /// The `approval_denied` record.
        record: i64,
        /// The person, as `User::"…"`.
        by: String,
        /// What they said.
        reason: Option<String>,
    },
    /// Do not run it: no answer in time, or the host is shutting down.
    Expired {
        /// The `approval_expired` record, if it could be written.
        record: Option<i64>,
        /// Why, in words for the agent.
        why: String,
    },
}

/// What channels hear about approvals.
#[derive(Debug, Clone)]
pub enum Event {
    /// A call now waits for an answer.
    Asked(Box<PendingApproval>),
    /// It no longer does; the text says how it ended and who ended it.
    Ended {
        /// The approval's id.
        id: i64,
        /// One line for people.
        text: String,
    },
}

/// Why a call was not put to people; it is denied, and the text says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    /// The agent has as many approvals waiting as it may.
    #[error(
        "agent `{agent}` already has {max} calls waiting for approval (approvals.max_pending_per_agent); this call of tool `{tool}` was not put to people; wait for the others to be answered"
    )]
    TooMany {
        /// The calling agent.
        agent: String,
        /// The tool it called.
        tool: String,
        /// The cap.
        max: usize,
    },
    /// Only the sender may approve, and there is no single sender.
    #[error(
        "agent `{agent}`, tool `{tool}`: only the sender of the message being worked on may approve this call, and the agent is working on no single person's message; make the call while answering one message"
    )]
    NoApprover {
        /// The calling agent.
        agent: String,
        /// The tool it called.
        tool: String,
    },
    /// The host is shutting down.
    #[error(
        "agent `{agent}`, tool `{tool}`: not put to people: the host is shutting down; ask again once it is back"
    )]
    Closed {
        /// The calling agent.
        agent: String,
        /// The tool it called.
        tool: String,
    },
    /// The request could not be recorded, so it was not made.
    #[error(
        "agent `{agent}`, tool `{tool}`: not put to people because the request could not be recorded ({message}); an operator must check the audit log's disk"
    )]
    Audit {
        /// The calling agent.
        agent: String,
        /// The tool it called.
        tool: String,
        /// The audit log's error.
        message: String,
    },
}

/// Why an answer did not count. Every one is recorded as
/// `approval_refused` (when it can be).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// No such approval is waiting.
    #[error(
        "approval {id} is not waiting for an answer: it was answered, expired, or never asked on this host; `corral approvals ls` lists those that are"
    )]
    NotPending {
        /// The id answered.
        id: i64,
    },
    /// The person may not answer it.
    #[error(transparent)]
    NotApprover(Box<NotApprover>),
    /// A period longer than the configured longest.
    #[error(
        "a grant for {asked} is longer than this host allows ({max}, approvals.max_grant); approve for a shorter period or once"
    )]
    TooLong {
        /// What was asked, as typed.
        asked: String,
        /// The longest allowed.
        max: String,
    },
    /// The answer could not be recorded, so it did not count.
    #[error(
        "approval {id}: the answer was not taken because it could not be recorded ({message}); the call still waits; an operator must check the audit log's disk"
    )]
    Audit {
        /// The approval.
        id: i64,
        /// The audit log's error.
        message: String,
    },
}

/// Who was refused an answer, and why: the annotation does not name them,
/// or Cedar's `approve` action does not allow them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{user} may not answer approval {id} (agent `{agent}`, tool `{tool}`): {why}; policies: [{policies}]; next step: ask one of the approvers ({approvers}) or a policy author"
)]
pub struct NotApprover {
    /// The approval.
    pub id: i64,
    /// The person, as `User::"…"`.
    pub user: String,
    /// The calling agent.
    pub agent: String,
    /// The tool.
    pub tool: String,
    /// The annotation that does not name them, or the `approve`
    /// decision's explanation.
    pub why: String,
    /// The policies that decided.
    pub policies: String,
    /// Whom the asking permits name.
    pub approvers: String,
}
