//! The approvals waiting on this host, the grants people gave, and the
//! records of both.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use corral_audit::{AuditLog, Entry, Kind};
use corral_policy::{
    ApprovalNeeded, ApproveRequest, Approvers, Common, PolicyStore, RequestEntity, uid,
};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::duration::format_duration;
use crate::types::{
    Answer, AnswerError, ApprovalsConfig, Ask, AskError, Choice, Event, NotApprover,
    PendingApproval, Resolution, Scope,
};

/// Longer waits and grants than this are cut to it, so that no
/// configuration can overflow a clock.
const LONGEST: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

/// The host's approvals: cheap to clone, shared by the broker (which
/// asks) and the channels (which answer).
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

struct Inner {
    policies: Arc<PolicyStore>,
    audit: AuditLog,
    config: ApprovalsConfig,
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
}

#[derive(Default)]
struct State {
    pending: BTreeMap<i64, Waiter>,
    grants: Vec<Grant>,
    /// Set by [`Approvals::close`]: nothing more is asked.
    closed: bool,
}

/// A pending approval with what deciding its answer needs.
struct Waiter {
    shown: PendingApproval,
    arguments: Value,
    needed: ApprovalNeeded,
    policy_hash: String,
    resolve: SyncSender<Resolution>,
}

/// "Approve for a period": identical calls run until `until`, while the
/// same policy set asks through the same permits and, where a permit
/// names the sender, for the same sender.
struct Grant {
    agent: String,
    tool: String,
    arguments: Value,
    policy_hash: String,
    asked_by: Vec<String>,
    requested_by: Option<String>,
    until: Instant,
    record: i64,
}

impl Grant {
    fn covers(&self, ask: &Ask<'_>) -> bool {
        self.agent == ask.agent
            && self.tool == ask.tool
            && self.arguments == *ask.arguments
            && self.policy_hash == ask.policy_hash
            && self
                .asked_by
                .iter()
                .eq(ask.needed.policies.iter().map(|p| &p.policy_id))
            && self.requested_by.as_deref() == sender_scope(ask.needed, ask.requested_by)
    }
}

/// The sender a grant is bound to: the requester, when a permit that asks
/// names the sender (so one person's grant never covers another's
/// request).
fn sender_scope<'a>(needed: &ApprovalNeeded, requested_by: Option<&'a str>) -> Option<&'a str> {
    needed
        .policies
        .iter()
        .any(|p| p.approvers == Approvers::Sender)
        .then_some(requested_by)
        .flatten()
}

/// A call waiting for its answer.
pub struct Waiting {
    /// The approval's id.
    pub id: i64,
    /// Who may answer, for the agent's progress messages.
    pub approvers: String,
    receiver: Receiver<Resolution>,
    deadline: Instant,
    approvals: Approvals,
}

impl Drop for Waiting {
    /// A call that stops waiting (its thread could not start, say) takes
    /// its approval with it, recorded as expired; after an answer this
    /// finds nothing.
    fn drop(&mut self) {
        self.approvals
            .end_pending(self.id, "the call stopped waiting for an answer");
    }
}

/// How often a waiting call checks whether its caller is still there.
const CALLER_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

impl Waiting {
    /// Blocks until the approval is answered or expires.
    pub fn wait(self) -> Resolution {
        self.wait_unless(|| None)
    }

    /// As [`Waiting::wait`], but ends the approval as soon as `abandoned`
    /// says why nobody needs the answer any more (the agent's connection
    /// closed, say), so people are not asked about a call that cannot run.
    pub fn wait_unless(self, abandoned: impl Fn() -> Option<String>) -> Resolution {
        loop {
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            match self.receiver.recv_timeout(remaining.min(CALLER_CHECK)) {
                Err(RecvTimeoutError::Timeout) if !remaining.is_zero() => {
                    let Some(why) = abandoned() else { continue };
                    self.approvals.end_pending(self.id, &why);
                    return self
                        .receiver
                        .recv()
                        .unwrap_or(Resolution::Expired { record: None, why });
                }
                other => return self.finish(other),
            }
        }
    }

    fn finish(&self, received: Result<Resolution, RecvTimeoutError>) -> Resolution {
        match received {
            Ok(resolution) => resolution,
            Err(RecvTimeoutError::Timeout) => {
                let why = format!(
                    "nobody answered within {} (approvals.timeout)",
                    format_duration(self.approvals.inner.config.timeout)
                );
                self.approvals.end_pending(self.id, &why);
                // Either this expiry or an answer that beat it by a hair.
                self.receiver.recv().unwrap_or(Resolution::Expired {
                    record: None,
                    why: why.clone(),
                })
            }
            Err(RecvTimeoutError::Disconnected) => Resolution::Expired {
                record: None,
                why: "the host dropped the approval".into(),
            },
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Approvals {
    /// Approvals decided by `policies` and recorded in `audit`.
    pub fn new(policies: Arc<PolicyStore>, audit: AuditLog, config: ApprovalsConfig) -> Self {
        let (events, _) = broadcast::channel(256);
        Approvals {
            inner: Arc::new(Inner {
                policies,
                audit,
                config,
                state: Mutex::default(),
                events,
            }),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &ApprovalsConfig {
        &self.inner.config
    }

    /// Hears of every approval asked and ended from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The approvals waiting now, oldest first.
    pub fn pending(&self) -> Vec<PendingApproval> {
        lock(&self.inner.state)
            .pending
            .values()
            .map(|w| w.shown.clone())
            .collect()
    }

    /// The approval `id` if it is waiting.
    pub fn get(&self, id: i64) -> Option<PendingApproval> {
        lock(&self.inner.state)
            .pending
            .get(&id)
            .map(|w| w.shown.clone())
    }

    /// The record of a live grant that covers `ask`: the same agent, tool
    /// and arguments, decided by the same policy set through the same
    /// asking permits, and for the same sender where a permit names the
    /// sender. Expired grants are dropped here.
    pub fn grant_for(&self, ask: &Ask<'_>) -> Option<i64> {
        let now = Instant::now();
        let mut state = lock(&self.inner.state);
        state.grants.retain(|g| g.until > now);
        state
            .grants
            .iter()
            .find(|g| g.covers(ask))
            .map(|g| g.record)
    }

    /// The arguments of approval `id` as the agent sent them, unredacted:
    /// for an approver at the host's own control socket, who must be able
    /// to see what a long or secret-looking value hides before saying yes.
    pub fn arguments(&self, id: i64) -> Option<Value> {
        lock(&self.inner.state)
            .pending
            .get(&id)
            .map(|w| w.arguments.clone())
    }

    /// Records `approval_requested` for the call and puts it to people.
    /// Blocks for the record's write.
    pub fn ask(&self, ask: Ask<'_>) -> Result<Waiting, AskError> {
        let inner = &self.inner;
        let (agent, tool) = (ask.agent.to_string(), ask.tool.to_string());
        // Held across the write, so the cap cannot be raced past; answers
        // and asks are rare next to calls, which never take this lock.
        let mut state = lock(&inner.state);
        if state.closed {
            return Err(AskError::Closed { agent, tool });
        }
        // A call only its sender may approve, made with no single sender,
        // could never be answered.
        let only_sender = ask
            .needed
            .policies
            .iter()
            .all(|p| p.approvers == Approvers::Sender);
        if only_sender && ask.requested_by.is_none() {
            drop(state);
            self.record_refused_ask(
                &ask,
                "not put to people: only the sender may approve, and the agent is working on no single person's message".into(),
            );
            return Err(AskError::NoApprover { agent, tool });
        }
        let max = inner.config.max_pending_per_agent;
        let waiting = state
            .pending
            .values()
            .filter(|w| w.shown.agent == agent)
            .count();
        if waiting >= max {
            drop(state);
            self.record_refused_ask(
                &ask,
                format!(
                    "not put to people: {waiting} approvals of this agent already wait (approvals.max_pending_per_agent = {max})"
                ),
            );
            return Err(AskError::TooMany { agent, tool, max });
        }
        let approvers: Vec<String> = ask
            .needed
            .policies
            .iter()
            .map(|p| p.approvers.to_string())
            .collect();
        let asked_by: Vec<String> = ask
            .needed
            .policies
            .iter()
            .map(|p| p.policy_id.clone())
            .collect();
        let asked_at_us = corral_audit::now_micros();
        let expires_at_us = asked_at_us + inner.config.timeout.as_micros() as i64;
        let mut entry = Entry::new(Kind::ApprovalRequested, &agent, &tool, tool_uid(&tool));
        entry.parent = Some(ask.call_seq);
        entry.policy_ids = asked_by.clone();
        entry.policy_hash = ask.policy_hash.to_string();
        entry.arguments = json!({
            "approvers": approvers,
            "requested_by": ask.requested_by.map(|u| uid("User", u).to_string()),
            "origin": ask.origin.map(|o| &o.channel),
            "expires_us": expires_at_us,
        });
        entry.detail = Some(format!("waiting for {}", ask.needed.describe()));
        let receipt = inner
            .audit
            .append_blocking(entry)
            .map_err(|e| AskError::Audit {
                agent: agent.clone(),
                tool: tool.clone(),
                message: e.to_string(),
            })?;
        let (shown_arguments, hidden_arguments) = inner.audit.redactor().redact(ask.arguments);
        let shown = PendingApproval {
            id: receipt.seq,
            agent,
            tool,
            arguments: shown_arguments,
            hidden: hidden_arguments,
            call_seq: ask.call_seq,
            asked_by,
            approvers,
            requested_by: ask.requested_by.map(str::to_string),
            origin: ask.origin.cloned(),
            asked_at_us,
            expires_at_us,
        };
        let (resolve, receiver) = sync_channel(1);
        state.pending.insert(
            receipt.seq,
            Waiter {
                shown: shown.clone(),
                arguments: ask.arguments.clone(),
                needed: ask.needed.clone(),
                policy_hash: ask.policy_hash.to_string(),
                resolve,
            },
        );
        drop(state);
        let _ = inner.events.send(Event::Asked(Box::new(shown)));
        Ok(Waiting {
            id: receipt.seq,
            approvers: ask.needed.describe(),
            receiver,
            deadline: Instant::now() + inner.config.timeout.min(LONGEST),
            approvals: self.clone(),
        })
    }

    /// Records that `ask` was not put to people, and why. Best effort: the
    /// call is denied either way, and its own record is already written.
    fn record_refused_ask(&self, ask: &Ask<'_>, detail: String) {
        let mut entry = Entry::new(
            Kind::ApprovalRefused,
            ask.agent,
            ask.tool,
            tool_uid(ask.tool),
        );
        entry.parent = Some(ask.call_seq);
        entry.policy_hash = ask.policy_hash.to_string();
        entry.detail = Some(detail);
        let _ = self.inner.audit.append_blocking(entry);
    }

    /// Takes a person's answer. Blocks for its record's write. The answer
    /// counts only if an asking permit names the person and the Cedar
    /// `approve` action allows them; one that does not count is recorded
    /// as `approval_refused` and changes nothing.
    pub fn answer(&self, answer: &Answer<'_>) -> Result<Resolution, AnswerError> {
        let inner = &self.inner;
        let user_uid = uid("User", answer.user).to_string();
        if let Choice::For(period) = answer.choice
            && period > inner.config.max_grant
        {
            return Err(AnswerError::TooLong {
                asked: format_duration(period),
                max: format_duration(inner.config.max_grant),
            });
        }
        let mut state = lock(&inner.state);
        let Some(waiter) = state.pending.get(&answer.id) else {
            drop(state);
            let mut entry = Entry::new(Kind::ApprovalRefused, "", "approve", user_uid);
            entry.arguments = answer_facts(answer, None);
            entry.detail = Some("no such approval is waiting".into());
            let _ = inner.audit.append_blocking(entry);
            return Err(AnswerError::NotPending { id: answer.id });
        };
        let shown = waiter.shown.clone();
        let engine = inner.policies.current();
        let named = waiter.needed.policies.iter().any(|p| {
            engine.names_approver(&p.approvers, answer.user, shown.requested_by.as_deref())
        });
        let user =
            RequestEntity::new("User", answer.user).attr("channel_kind", json!(answer.user_kind));
        let arguments = waiter.arguments.to_string();
        let decision = engine.decide_approve(&ApproveRequest {
            user: &user,
            agent: &shown.agent,
            tool: &shown.tool,
            arguments: &arguments,
            requested_by: shown.requested_by.as_deref(),
            asked_by: &shown.asked_by,
            common: &Common::now(&format!("approval-{}", shown.id), 0),
        });
        let resource = user_uid.clone();
        if !named || !decision.allowed {
            drop(state);
            let why = if named {
                decision.explain()
            } else {
                format!(
                    "the asking policies name {} and {user_uid} is not among them",
                    shown.approvers.join(", ")
                )
            };
            let mut entry = Entry::decided(
                Kind::ApprovalRefused,
                &shown.agent,
                &shown.tool,
                resource,
                &decision.summary(),
            );
            entry.parent = Some(shown.call_seq);
            entry.arguments = answer_facts(answer, None);
            entry.detail = Some(why.clone());
            let _ = inner.audit.append_blocking(entry);
            return Err(AnswerError::NotApprover(Box::new(NotApprover {
                id: answer.id,
                user: user_uid,
                agent: shown.agent,
                tool: shown.tool,
                why,
                policies: decision.policy_ids.join(", "),
                approvers: shown.approvers.join(", "),
            })));
        }
        let (kind, scope, reason) = match &answer.choice {
            Choice::Once => (Kind::ApprovalGranted, Some(Scope::Once), None),
            Choice::For(period) => (
                Kind::ApprovalGranted,
                Some(Scope::Until {
                    expires_at_us: corral_audit::now_micros() + period.as_micros() as i64,
                }),
                None,
            ),
            Choice::Deny { reason } => (Kind::ApprovalDenied, None, reason.clone()),
        };
        let until = match scope {
            Some(Scope::Until { expires_at_us }) => Some(expires_at_us),
            _ => None,
        };
        let mut entry = Entry::decided(
            kind,
            &shown.agent,
            &shown.tool,
            resource,
            &decision.summary(),
        );
        entry.parent = Some(shown.call_seq);
        entry.arguments = answer_facts(answer, until);
        entry.detail = Some(match (&scope, &reason) {
            (Some(_), _) => format!(
                "approval {} granted by {user_uid} via {}",
                shown.id, answer.via
            ),
            (None, Some(r)) => format!(
                "approval {} denied by {user_uid} via {}: {r}",
                shown.id, answer.via
            ),
            (None, None) => format!(
                "approval {} denied by {user_uid} via {}",
                shown.id, answer.via
            ),
        });
        let text = entry.detail.clone().unwrap_or_default();
        // Recorded before the call hears of it: no tool runs on an answer
        // that is not on disk, and one that cannot be recorded leaves the
        // call waiting.
        let record = inner
            .audit
            .append_blocking(entry)
            .map_err(|e| AnswerError::Audit {
                id: answer.id,
                message: e.to_string(),
            })?
            .seq;
        let Some(waiter) = state.pending.remove(&answer.id) else {
            unreachable!("held under the lock since it was found")
        };
        if let Choice::For(period) = answer.choice {
            state.grants.push(Grant {
                agent: shown.agent.clone(),
                tool: shown.tool.clone(),
                arguments: waiter.arguments.clone(),
                policy_hash: waiter.policy_hash.clone(),
                asked_by: shown.asked_by.clone(),
                requested_by: sender_scope(&waiter.needed, shown.requested_by.as_deref())
                    .map(str::to_string),
                until: Instant::now() + period.min(LONGEST),
                record,
            });
        }
        drop(state);
        let resolution = match scope {
            Some(scope) => Resolution::Granted {
                record,
                by: user_uid,
                scope,
            },
            None => Resolution::Denied {
                record,
                by: user_uid,
                reason,
            },
        };
        let _ = waiter.resolve.try_send(resolution.clone());
        let _ = inner.events.send(Event::Ended {
            id: answer.id,
            text,
        });
        Ok(resolution)
    }

    /// Stops asking and denies every waiting call, telling it `why`.
    pub fn close(&self, why: &str) {
        let ids: Vec<i64> = {
            let mut state = lock(&self.inner.state);
            state.closed = true;
            state.grants.clear();
            state.pending.keys().copied().collect()
        };
        for id in ids {
            self.end_pending(id, why);
        }
    }

    /// Ends `id` without an answer, if it still waits: records
    /// `approval_expired` and tells the call.
    fn end_pending(&self, id: i64, why: &str) {
        let Some(waiter) = lock(&self.inner.state).pending.remove(&id) else {
            return;
        };
        let shown = &waiter.shown;
        let mut entry = Entry::new(
            Kind::ApprovalExpired,
            &shown.agent,
            &shown.tool,
            tool_uid(&shown.tool),
        );
        entry.parent = Some(shown.call_seq);
        entry.arguments = json!({ "approval": id });
        entry.detail = Some(why.to_string());
        let record = match self.inner.audit.append_blocking(entry) {
            Ok(r) => Some(r.seq),
            Err(e) => {
                tracing::error!(approval = id, error = %e, "approval expiry not recorded");
                None
            }
        };
        let _ = waiter.resolve.try_send(Resolution::Expired {
            record,
            why: why.to_string(),
        });
        let _ = self.inner.events.send(Event::Ended {
            id,
            text: format!("approval {id} expired: {why}"),
        });
    }
}

fn tool_uid(tool: &str) -> String {
    uid("Tool", tool).to_string()
}

/// What an answer's record holds besides its decision.
fn answer_facts(answer: &Answer<'_>, until: Option<i64>) -> Value {
    let (choice, reason) = match &answer.choice {
        Choice::Once => ("once", None),
        Choice::For(_) => ("period", None),
        Choice::Deny { reason } => ("deny", reason.clone()),
    };
    json!({
        "approval": answer.id,
        "by": uid("User", answer.user).to_string(),
        "via": answer.via,
        "choice": choice,
        "expires_us": until,
        "reason": reason,
    })
}
