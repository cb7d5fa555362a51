//! Calls that only `@approval` permits allow: put to people through
//! `corral-approvals`, waited for off the connection's reader, then run
//! or refused with who answered.

use std::time::Instant;

use corral_approvals::{Ask, Origin, Resolution, Waiting};
use corral_audit::{Entry, Outcome};
use corral_gate::Refusal;
use corral_policy::{Common, Decision};
use corral_tools::RegisteredComponent;
use rmcp::RoleServer;
use rmcp::model::{CallToolResult, ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use serde_json::Value;
use std::sync::Arc;

use super::{Session, host_bug, ran_none, refusal};
use crate::blocking::Panicked;
use crate::services::Inbound;

/// Where a call stands once the broker has decided it.
#[expect(
    clippy::large_enum_variant,
    reason = "`Done` is every call's answer, moved once; boxing it would cost the hot path an allocation so that the rare ask could be smaller"
)]
pub(crate) enum Called {
    /// Answered: the result and, for a call that ran, its outcome record,
    /// which the caller writes.
    Done(CallToolResult, Option<Entry>),
    /// Put to people; [`Session::finish_asked`] waits for their answer
    /// and ends it, off the connection's reader.
    Asks(Box<AskedCall>),
}

impl Called {
    pub(super) fn done((result, outcome): (CallToolResult, Option<Entry>)) -> Called {
        Called::Done(result, outcome)
    }
}

/// A call waiting for a person's answer.
pub(crate) struct AskedCall {
    waiting: Waiting,
    call: AskingCall,
}

/// What running a call that asks needs, once it is approved.
pub(super) struct AskingCall {
    pub(super) name: String,
    pub(super) input: String,
    pub(super) component: Arc<RegisteredComponent>,
    pub(super) common: Common,
    pub(super) call_seq: i64,
    pub(super) decision: Decision,
    pub(super) arrived: Instant,
}

impl Session {
    /// Puts a call that only `@approval` permits allow to people, or
    /// denies it when it cannot be asked. Its call record is written.
    /// The live grant that covers this call, if any, and the one message
    /// the agent is working on (whose sender a grant may be bound to).
    pub(super) fn grant_for(
        &self,
        name: &str,
        arguments: &Value,
        decision: &Decision,
    ) -> (Option<i64>, Option<Inbound>) {
        let held = self
            .shared
            .mailbox
            .as_ref()
            .and_then(|m| m.working_on(&self.agent.id));
        let grant = match (&self.shared.approvals, &decision.approval) {
            (Some(approvals), Some(needed)) => approvals.grant_for(&Ask {
                agent: &self.agent.id,
                tool: name,
                arguments,
                call_seq: 0,
                needed,
                requested_by: held.as_ref().and_then(|m| m.user.as_deref()),
                origin: None,
                policy_hash: &decision.policy_set_hash,
            }),
            _ => None,
        };
        (grant, held)
    }

    pub(super) fn ask(&self, call: AskingCall, arguments: Value, held: Option<Inbound>) -> Called {
        let agent = &*self.agent.id;
        let name = &call.name;
        let Some(needed) = call.decision.approval.as_ref() else {
            unreachable!("only a decision that asks is put to people")
        };
        let Some(approvals) = &self.shared.approvals else {
            return Called::done(ran_none(refusal(
                Refusal::Denied,
                format!(
                    "denied: agent `{agent}`'s call of tool `{name}` needs a person's approval ({}), but this broker takes no approvals (audit record {}); next step: run the agent under `corral up`, or ask a policy author for a permit without @approval",
                    needed.describe(),
                    call.call_seq
                ),
                &call.decision.policy_ids,
            )));
        };
        // The person whose message the agent is working on, when there is
        // exactly one: `@approval("sender")` names them, and the ask is
        // shown where their message came from.
        let origin = held.as_ref().map(|m| Origin {
            channel: m.channel.clone(),
            conversation: m.conversation.clone(),
        });
        let asked = approvals.ask(Ask {
            agent,
            tool: name,
            arguments: &arguments,
            call_seq: call.call_seq,
            needed,
            requested_by: held.as_ref().and_then(|m| m.user.as_deref()),
            origin: origin.as_ref(),
            policy_hash: &call.decision.policy_set_hash,
        });
        match asked {
            Ok(waiting) => Called::Asks(Box::new(AskedCall { waiting, call })),
            Err(e) => Called::done(ran_none(refusal(
                Refusal::Denied,
                format!("denied: {e} (audit record {})", call.call_seq),
                &call.decision.policy_ids,
            ))),
        }
    }

    /// Waits for a person's answer to `asked`, then runs the call or says
    /// who refused it. Blocks for as long as the approval may wait: never
    /// call it on the connection's reader or an async worker.
    pub(crate) fn finish_asked(&self, asked: AskedCall) -> (CallToolResult, Option<Entry>) {
        let AskedCall { waiting, call } = asked;
        let agent = &*self.agent.id;
        let name = &call.name;
        let id = waiting.id;
        let approvers = waiting.approvers.clone();
        let ids = &call.decision.policy_ids;
        let gone = self.gone.clone();
        let abandoned = move || {
            gone.is_gone()
                .then(|| "the agent's connection closed while it waited".to_string())
        };
        let (record, by) = match waiting.wait_unless(abandoned) {
            Resolution::Granted { record, by, .. } => (record, by),
            Resolution::Denied { record, by, reason } => {
                let reason = reason.map(|r| format!(": \"{r}\"")).unwrap_or_default();
                return ran_none(refusal(
                    Refusal::Denied,
                    format!(
                        "denied: agent `{agent}`'s call of tool `{name}` was refused by {by}{reason} (approval {id}, audit record {record}); next step: do without this call, or ask {by} what would be acceptable"
                    ),
                    ids,
                ));
            }
            Resolution::Expired { record, why } => {
                let record = record
                    .map(|r| format!(", audit record {r}"))
                    .unwrap_or_default();
                return ran_none(refusal(
                    Refusal::Denied,
                    format!(
                        "denied: agent `{agent}`'s call of tool `{name}` was not approved: {why} (approval {id}{record}); next step: try again when one of its approvers ({approvers}) can answer"
                    ),
                    ids,
                ));
            }
        };
        // The policies may have changed while the call waited: a grant
        // only turns an ask into an allow, so what now denies still wins.
        if let Some(now) = self.decide_again(&call) {
            let mut outcome = Entry::outcome_of(
                call.call_seq,
                agent,
                name,
                corral_policy::uid("Tool", name).to_string(),
                now.policy_set_hash.clone(),
                Outcome::Error,
            );
            let text = format!(
                "denied: agent `{agent}`'s call of tool `{name}` was approved by {by} (audit record {record}), but the policies changed while it waited and now deny it: {} ({}); not run; next step: ask a policy author",
                now.explain(),
                now.policy_ids.join(", ")
            );
            outcome.detail = Some(text.clone());
            return (
                refusal(Refusal::Denied, text, &now.policy_ids),
                Some(outcome),
            );
        }
        if self.gone.is_gone() {
            // Nobody is left to take the answer; its effects would be
            // nobody's.
            return ran_none(refusal(
                Refusal::Denied,
                format!(
                    "agent `{agent}`, tool `{name}`: approved, but the agent's connection ended first; not run"
                ),
                ids,
            ));
        }
        let Some(slot) = self.agent.running.take(self.shared.limits.call_timeout) else {
            return ran_none(self.no_slot(name));
        };
        let deadline = Instant::now() + self.shared.limits.call_timeout;
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.run(
                name,
                &call.input,
                &call.component,
                call.common.clone(),
                call.call_seq,
                deadline,
            )
        }));
        drop(slot);
        let (result, kind, detail) = match ran {
            Ok(ran) => ran,
            Err(panic) => {
                return ran_none(host_bug(
                    &format!("agent `{agent}`, tool `{name}`"),
                    &Panicked::from_payload(&*panic),
                ));
            }
        };
        let mut outcome = Entry::outcome_of(
            call.call_seq,
            agent,
            name,
            corral_policy::uid("Tool", name).to_string(),
            call.decision.policy_set_hash.clone(),
            kind,
        );
        outcome.duration_us = Some(call.arrived.elapsed().as_micros() as i64);
        outcome.tool_sha256 = Some(call.component.component.sha256().to_string());
        outcome.detail = Some(match detail {
            Some(d) => format!("approved by {by} (audit record {record}); {d}"),
            None => format!("approved by {by} (audit record {record})"),
        });
        (result, Some(outcome))
    }
}

impl Session {
    /// The decision of the current policies when they now deny the call an
    /// approval was given for; `None` when they still allow or ask.
    fn decide_again(&self, call: &AskingCall) -> Option<Decision> {
        let engine = self.shared.policies.current();
        let arguments: Value = serde_json::from_str(&call.input).unwrap_or(Value::Null);
        let now =
            match engine.decide_tool_call(&self.agent.id, &call.name, &arguments, &call.common) {
                Ok(now) => now,
                Err(e) => engine.refuse(e.to_string()),
            };
        (!now.allowed && now.approval.is_none()).then_some(now)
    }
}

/// How often a client that sent a progress token hears that its call
/// still waits for a person.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Session {
    /// Waits for `asked`'s answer on the blocking pool; a client that sent
    /// a progress token hears at once, and every few seconds, that it still
    /// waits and for whom.
    pub(super) async fn wait_with_progress(
        &self,
        asked: AskedCall,
        token: Option<ProgressToken>,
        context: &RequestContext<RoleServer>,
    ) -> CallToolResult {
        let message = format!(
            "waiting for a person to answer approval {} ({})",
            asked.waiting.id, asked.waiting.approvers
        );
        let this = self.clone();
        let finish = tokio::task::spawn_blocking(move || {
            let finished = this.finish_asked(asked);
            this.record_now(finished)
        });
        tokio::pin!(finish);
        tracing::debug!(agent = %self.agent.id, token = ?token, "call waits for approval on rmcp's path");
        let mut ticks = 0u32;
        loop {
            if let Some(token) = &token {
                ticks += 1;
                let progress = ProgressNotificationParam::new(token.clone(), f64::from(ticks))
                    .with_message(message.clone());
                if let Err(e) = context.peer.notify_progress(progress).await {
                    tracing::debug!(agent = %self.agent.id, error = %e, "progress notification not sent");
                }
            }
            tokio::select! {
                joined = &mut finish => {
                    return joined.unwrap_or_else(|e| {
                        host_bug(&format!("agent `{}`", self.agent.id), &Panicked(e.to_string()))
                    });
                }
                () = tokio::time::sleep(PROGRESS_EVERY) => {}
            }
        }
    }
}
