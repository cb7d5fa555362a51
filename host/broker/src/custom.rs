//! The agent's requests besides tools: the next message from a person, a
//! model completion, and posting a reply. They are JSON-RPC methods on the
//! same MCP socket (`corral/next`, `corral/model`, `corral/reply`), so a
//! container still sees exactly one way out, and the agent's identity is
//! still the socket's.
//!
//! `corral/model` and `corral/reply` are decided by Cedar (`use_model`,
//! `post_message`) and recorded like tool calls: decision first, then the
//! effect, then the outcome. The API key is added in `corral-models`, on
//! the host; the agent sends only the conversation.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use corral_audit::{Entry, Kind, Outcome, TokenUsage};
use corral_gate::Refusal;
use corral_models::ChatRequest;
use corral_policy::{Common, Decision, RequestEntity, uid};
use rmcp::model::ErrorCode;
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::blocking::run_blocking;
use crate::connection::Gone;
use crate::services::Mailbox;
use crate::state::{AgentState, Shared};

/// One connection's view of the host, for its custom requests.
pub(crate) struct AgentRequests<'a> {
    pub shared: &'a Shared,
    pub agent: &'a AgentState,
    /// The session's id, as `common.session` and the mailbox know it.
    pub session: &'a str,
    pub calls: &'a AtomicI64,
    /// Model tokens used in this session.
    pub tokens: &'a AtomicU64,
    pub gone: &'a Gone,
}

/// JSON-RPC error codes for Corral's own methods.
pub(crate) const DENIED: i32 = -32001;
pub(crate) const UNAVAILABLE: i32 = -32002;
pub(crate) const UPSTREAM: i32 = -32003;

/// The longest a `corral/next` may wait before answering `null`.
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NextParams {
    #[serde(default)]
    wait_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyParams {
    message: u64,
    text: String,
    #[serde(default = "yes")]
    last: bool,
}

fn yes() -> bool {
    true
}

fn params<T: for<'de> Deserialize<'de>>(
    method: &str,
    params: Option<Value>,
) -> Result<T, McpError> {
    serde_json::from_value(params.unwrap_or_else(|| json!({})))
        .map_err(|e| McpError::invalid_params(format!("{method}: bad params: {e}"), None))
}

impl AgentRequests<'_> {
    pub(crate) async fn answer(
        &self,
        method: &str,
        raw: Option<Value>,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, McpError> {
        match method {
            "corral/next" => {
                let p: NextParams = params(method, raw)?;
                tokio::select! {
                    // The connection is gone: stop waiting for a message
                    // nobody can receive.
                    _ = context.ct.cancelled() => Ok(Value::Null),
                    _ = self.gone.wait() => Ok(Value::Null),
                    next = self.next_message(p) => next,
                }
            }
            "corral/reply" => {
                let p: ReplyParams = params(method, raw)?;
                self.post_message(p).await
            }
            "corral/model" => {
                let request: ChatRequest = params(method, raw)?;
                self.use_model(request).await
            }
            _ => Err(McpError::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!(
                    "unknown method `{method}`; Corral's own are corral/next, corral/model and corral/reply"
                ),
                None,
            )),
        }
    }

    fn mailbox(&self) -> Result<&Arc<dyn Mailbox>, McpError> {
        self.shared.mailbox.as_ref().ok_or_else(|| {
            McpError::new(
                ErrorCode(UNAVAILABLE),
                format!(
                    "agent `{}`: this broker routes no messages (it runs without channels); start the agent under `corral up`",
                    self.agent.id
                ),
                None,
            )
        })
    }

    async fn next_message(&self, p: NextParams) -> Result<Value, McpError> {
        let mailbox = self.mailbox()?;
        let wait = Duration::from_millis(p.wait_ms.unwrap_or(25_000)).min(MAX_WAIT);
        let Some(message) = mailbox.next(&self.agent.id, self.session, wait).await else {
            return Ok(Value::Null);
        };
        // Taken after the connection ended: nobody will answer it. (Taken
        // before, it is released when the connection's end is handled.)
        if self.gone.is_gone() {
            mailbox.release(&self.agent.id, self.session);
            return Ok(Value::Null);
        }
        Ok(json!({
            "message": message,
            "model": self.agent.model,
            "limits": self.agent.turn,
        }))
    }

    fn common(&self) -> Common {
        Common::now(self.session, self.calls.load(Ordering::Relaxed))
    }

    /// Records a decision before its effect; `Err` when it could not be.
    async fn record_decision(
        &self,
        action: &'static str,
        resource: String,
        arguments: Value,
        common: &Common,
        decision: &Decision,
        started: Instant,
    ) -> Result<Recorded, McpError> {
        let agent = &*self.agent.id;
        let mut entry = Entry::decided(
            Kind::Call,
            agent,
            action,
            resource.clone(),
            &decision.summary(),
        );
        entry.session = common.to_json();
        entry.arguments = arguments;
        let audit = self.shared.audit.clone();
        // Waiting for the record is blocking work (strict mode fsyncs).
        let receipt = run_blocking(move || audit.append_blocking(entry))
            .await
            .unwrap_or_else(|panic| Err(corral_audit::AuditError::WriterStopped(panic.0)));
        let recorded = |r: corral_audit::Receipt| Recorded {
            action,
            resource,
            seq: r.seq,
            started,
            policy_hash: decision.policy_set_hash.clone(),
        };
        receipt.map(recorded).map_err(|e| {
            tracing::error!(agent, action, error = %e, "decision not recorded; refusing");
            McpError::new(
                ErrorCode(UNAVAILABLE),
                format!("agent `{agent}`, {action}: refused because its decision could not be recorded ({e}); an operator must check the audit log's disk"),
                None,
            )
        })
    }

    /// The MCP error for a recorded denial: who may not do what, why, the
    /// record, and the next step.
    fn refuse_if_denied(
        &self,
        decided: &Recorded,
        decision: &Decision,
        what: &str,
        next: &str,
    ) -> Result<(), McpError> {
        if decision.allowed {
            return Ok(());
        }
        Err(McpError::new(
            ErrorCode(DENIED),
            format!(
                "denied: agent `{}` may not {what}: {} (audit record {}); next step: {next}",
                self.agent.id,
                decision.explain(),
                decided.seq
            ),
            Some(json!({ "error": Refusal::Denied.as_str(), "policy_ids": decision.policy_ids })),
        ))
    }

    fn record_outcome(
        &self,
        decided: Recorded,
        outcome: Outcome,
        detail: Option<String>,
        usage: Option<TokenUsage>,
    ) {
        let mut record = Entry::outcome_of(
            decided.seq,
            &self.agent.id,
            decided.action,
            decided.resource,
            decided.policy_hash,
            outcome,
        );
        record.duration_us = Some(decided.started.elapsed().as_micros() as i64);
        record.detail = detail;
        record.usage = usage;
        self.shared.audit.append_detached(record);
    }

    async fn post_message(&self, p: ReplyParams) -> Result<Value, McpError> {
        let started = Instant::now();
        let agent = &*self.agent.id;
        let mailbox = self.mailbox()?.clone();
        let Some(message) = mailbox.pending(agent, p.message) else {
            return Err(McpError::invalid_params(
                format!(
                    "agent `{agent}`: message {} is not waiting for a reply from this agent (already answered, or never delivered to it)",
                    p.message
                ),
                None,
            ));
        };
        let common = self.common();
        let mut channel = RequestEntity::new("Channel", &message.channel);
        let mut extra = Vec::new();
        if let Some(ws) = &message.chat_workspace {
            channel = channel.parent("ChatWorkspace", ws);
            extra.push(RequestEntity::new("ChatWorkspace", ws));
        }
        extra.push(channel);
        let resource = uid("Channel", &message.channel);
        let decision = self.shared.policies.current().decide(
            uid("Agent", agent),
            "post_message",
            resource.clone(),
            json!({ "common": common.to_json() }),
            &extra,
        );
        let arguments = json!({
            "message": p.message,
            "chat_workspace": message.chat_workspace,
            "text": p.text,
            "last": p.last,
        });
        let decided = self
            .record_decision(
                "post_message",
                resource.to_string(),
                arguments,
                &common,
                &decision,
                started,
            )
            .await?;
        self.refuse_if_denied(
            &decided,
            &decision,
            &format!("post to channel `{}`", message.channel),
            "ask a policy author for a `post_message` permit",
        )?;
        let delivered = mailbox.reply(agent, p.message, p.text, p.last).await;
        if p.last {
            // A new turn starts with the next message.
            self.agent.steps.store(0, Ordering::Release);
        }
        let (outcome, detail) = match &delivered {
            Ok(()) => (Outcome::Ok, None),
            Err(e) => (Outcome::Error, Some(e.to_string())),
        };
        self.record_outcome(decided, outcome, detail, None);
        delivered
            .map(|()| json!({ "delivered": true }))
            .map_err(|e| McpError::new(ErrorCode(UNAVAILABLE), e.0, None))
    }

    async fn use_model(&self, mut request: ChatRequest) -> Result<Value, McpError> {
        let started = Instant::now();
        let agent = &*self.agent.id;
        let Some(name) = self.agent.model.clone() else {
            return Err(McpError::new(
                ErrorCode(UNAVAILABLE),
                format!(
                    "agent `{agent}` has no model configured; set `model` for it in corral.toml, or use `/tool NAME JSON`"
                ),
                None,
            ));
        };
        let Some(client) = self.shared.models.get(&name).cloned() else {
            return Err(McpError::new(
                ErrorCode(UNAVAILABLE),
                format!(
                    "agent `{agent}`: model `{name}` is not configured on this host; add [models.{name}] to corral.toml"
                ),
                None,
            ));
        };
        // One model call at a time per agent: the budget check below and
        // the usage it adds must not interleave with another call's, or
        // concurrent calls would all pass the same check.
        let _turn = self.agent.model_turn.lock().await;
        if let Err(wait) = self.agent.take_rate(started) {
            return Err(McpError::new(
                ErrorCode(DENIED),
                format!(
                    "agent `{agent}` asked for model `{name}` above its rate limit of {}/s; retry in {} ms",
                    self.shared.limits.rate_per_second,
                    wait.as_millis().max(1)
                ),
                Some(json!({ "error": Refusal::RateLimited.as_str(), "policy_ids": [] })),
            ));
        }
        let steps = self.agent.steps.load(Ordering::Acquire);
        if steps >= self.agent.turn.max_steps {
            return Err(McpError::new(
                ErrorCode(DENIED),
                format!(
                    "agent `{agent}`: {steps} model calls since its last reply, its turn's limit (max_steps = {}); reply first, or ask an operator to raise max_steps",
                    self.agent.turn.max_steps
                ),
                Some(json!({ "error": Refusal::LimitExceeded.as_str(), "policy_ids": [] })),
            ));
        }
        let cap = client.endpoint().max_tokens.min(self.agent.turn.max_tokens);
        request.max_tokens = Some(request.max_tokens.unwrap_or(cap).min(cap));
        let estimated = request.estimated_tokens() + u64::from(cap);
        let session_tokens = self.tokens.load(Ordering::Relaxed);
        let day_tokens = self.agent.day_tokens();
        let common = self.common();
        let resource = uid("Model", &name);
        let decision = self.shared.policies.current().decide(
            uid("Agent", agent),
            "use_model",
            resource.clone(),
            json!({
                "common": common.to_json(),
                "estimated_tokens": estimated as i64,
                "session_tokens": session_tokens as i64,
                "day_tokens": day_tokens as i64,
            }),
            &[],
        );
        // The conversation itself is the person's business, not the log's:
        // only its shape and size are recorded.
        let arguments = json!({
            "model": name,
            "messages": request.messages.len(),
            "tools": request.tools.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
            "estimated_tokens": estimated,
            "session_tokens": session_tokens,
            "day_tokens": day_tokens,
            "max_tokens": request.max_tokens,
        });
        let decided = self
            .record_decision(
                "use_model",
                resource.to_string(),
                arguments,
                &common,
                &decision,
                started,
            )
            .await?;
        self.refuse_if_denied(
            &decided,
            &decision,
            &format!("use model `{name}`"),
            "ask a policy author for a `use_model` permit or a larger budget",
        )?;
        self.agent.steps.fetch_add(1, Ordering::AcqRel);
        let result = client.complete(&request).await;
        match result {
            Ok(response) => {
                let usage = TokenUsage {
                    input_tokens: response.usage.input_tokens,
                    output_tokens: response.usage.output_tokens,
                };
                self.tokens.fetch_add(usage.total(), Ordering::Relaxed);
                self.agent.add_day_tokens(usage.total());
                let detail = format!("stop_reason={}", response.stop_reason);
                self.record_outcome(decided, Outcome::Ok, Some(detail), Some(usage));
                serde_json::to_value(&response)
                    .map_err(|e| McpError::internal_error(e.to_string(), None))
            }
            Err(e) => {
                let text = format!("agent `{agent}`: {e}");
                let outcome = if matches!(e, corral_models::ModelError::Timeout { .. }) {
                    Outcome::Timeout
                } else {
                    Outcome::Error
                };
                self.record_outcome(decided, outcome, Some(text.clone()), None);
                Err(McpError::new(ErrorCode(UPSTREAM), text, None))
            }
        }
    }
}

/// A decision on the record, waiting for its outcome.
struct Recorded {
    action: &'static str,
    resource: String,
    seq: i64,
    started: Instant,
    policy_hash: String,
}
