//! One MCP session: an agent's connection, and the path of a tool call.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use corral_audit::{Entry, Kind, Outcome, Verdict};
use corral_gate::{Caller, Refusal};
use corral_policy::{CedarGate, Common, RequestError};
use corral_tools::{CallContext, CallFailure, Limit, RegisteredComponent, Spare};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CustomRequest,
    CustomResult, Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::blocking::{Panicked, run_blocking};
use crate::custom::AgentRequests;
use crate::gate::AuditedGate;
use crate::serve::{InlineAnswer, InlineCalls};
use crate::state::{AgentState, Shared};

mod asked;

use asked::{AskingCall, Called};

#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) agent: Arc<AgentState>,
    pub(crate) id: Arc<str>,
    pub(crate) calls: Arc<AtomicI64>,
    /// Model tokens used in this session, for budget policies.
    pub(crate) tokens: Arc<AtomicU64>,
    /// Marked as soon as the connection's reader sees the peer leave.
    pub(crate) gone: Arc<crate::connection::Gone>,
    /// The instance for this connection's next call, made while the
    /// connection is idle (see [`corral_tools::Spare`]).
    spare: Arc<Mutex<NextInstance>>,
    /// The outcome record of the call the reader thread is answering.
    deferred: Arc<DeferredOutcome>,
}

/// An inline call's outcome record, written as soon as the kernel holds
/// its answer rather than before the answer is sent, so that the answer
/// does not wait for it (its write would run on caches gone cold during
/// the fsync). It is never synced before the
/// answer in either mode. What a kill of the broker can lose is as before:
/// the outcome of a call killed within microseconds of its tool's return,
/// now counted to the answer's `send` rather than to the record's write;
/// the answer never waits on a slow peer first (`Connection::write_then`).
/// It is written before the connection's next frame is read, so this
/// connection's next decision follows it in the chain. If the reader
/// never gets there, dropping the session writes it.
struct DeferredOutcome {
    audit: corral_audit::AuditLog,
    pending: Mutex<Option<Entry>>,
}

impl DeferredOutcome {
    fn write(&self) {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(record) = pending {
            self.audit.append_detached(record);
        }
    }
}

impl Drop for DeferredOutcome {
    fn drop(&mut self) {
        self.write();
    }
}

#[derive(Default)]
struct NextInstance {
    spare: Spare,
    /// The component of the last call, which the next is likely to call
    /// again.
    last: Option<Arc<RegisteredComponent>>,
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>, agent: Arc<AgentState>) -> Self {
        let n = agent.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("{}-{}-{n}", agent.id, corral_audit::now_micros());
        Session {
            agent,
            id: Arc::from(id),
            calls: Arc::new(AtomicI64::new(0)),
            tokens: Arc::new(AtomicU64::new(0)),
            gone: Default::default(),
            spare: Default::default(),
            deferred: Arc::new(DeferredOutcome {
                audit: shared.audit.clone(),
                pending: Mutex::new(None),
            }),
            shared,
        }
    }

    /// The whole path of one `tools/call`, on the calling thread, which may
    /// block: rate limit, a slot, then the decision, its record and the
    /// tool run, with no hand-off in between. Returns the answer and, for
    /// a call that ran, its outcome record, which the caller writes. Every
    /// refusal says who, what, which policies, and what to do next.
    pub(crate) fn call_now(&self, name: &str, arguments: Value) -> Called {
        let agent = self.agent.id.clone();
        let arrived = Instant::now();
        let deadline = arrived + self.shared.limits.call_timeout;

        if let Err(wait) = self.agent.take_rate(arrived) {
            self.observe(|o| o.refused("rate"));
            return Called::done(ran_none(refusal(
                Refusal::RateLimited,
                format!(
                    "agent `{agent}` called tool `{name}` above its rate limit of {}/s (burst {}); retry in {} ms, or raise limits.rate_per_second",
                    self.shared.limits.rate_per_second,
                    self.shared.limits.rate_burst,
                    wait.as_millis().max(1)
                ),
                &[],
            )));
        }
        let Some(slot) = self.agent.running.take(self.shared.limits.call_timeout) else {
            self.observe(|o| o.refused("busy"));
            return Called::done(ran_none(self.no_slot(name)));
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.decide_and_run(name, arguments, arrived, deadline)
        }));
        // A call that waits for a person gives its slot back while it waits.
        drop(slot);
        result.unwrap_or_else(|panic| {
            Called::done(ran_none(host_bug(
                &format!("agent `{agent}`, tool `{name}`"),
                &Panicked::from_payload(&*panic),
            )))
        })
    }

    fn observe(&self, tell: impl FnOnce(&dyn crate::CallObserver)) {
        if let Some(observer) = &self.shared.observer {
            tell(observer.as_ref());
        }
    }

    fn no_slot(&self, name: &str) -> CallToolResult {
        refusal(
            Refusal::TimedOut,
            format!(
                "agent `{}`, tool `{name}`: not started: the agent's {} other calls did not finish within {:?}; retry later or raise limits.max_in_flight",
                self.agent.id, self.shared.limits.max_in_flight, self.shared.limits.call_timeout
            ),
            &[],
        )
    }

    /// Writes a finished call's outcome record now: for answers that are
    /// not on the reader's path.
    fn record_now(&self, (result, outcome): (CallToolResult, Option<Entry>)) -> CallToolResult {
        if let Some(record) = outcome {
            self.shared.audit.append_detached(record);
        }
        result
    }

    fn decide_and_run(
        &self,
        name: &str,
        arguments: Value,
        arrived: Instant,
        deadline: Instant,
    ) -> Called {
        let agent = &*self.agent.id;
        let calls_in_session = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let common = Common::now(&self.id, calls_in_session);
        let engine = self.shared.policies.current();
        let registered = self.shared.registry.get(name);
        // A request that cannot be put to Cedar is denied and recorded like
        // any other; the class tells the client whether to fix its input.
        let (decision, class) = match engine.decide_tool_call(agent, name, &arguments, &common) {
            Ok(decision) if registered.is_some() => (decision, Refusal::Denied),
            Ok(_) => (
                engine.refuse(format!("tool `{name}` is not loaded")),
                Refusal::UnknownTool,
            ),
            Err(e @ RequestError::UnknownTool(_)) => {
                (engine.refuse(e.to_string()), Refusal::UnknownTool)
            }
            Err(e @ RequestError::InvalidInput { .. }) => {
                (engine.refuse(e.to_string()), Refusal::InvalidInput)
            }
            Err(e) => (engine.refuse(e.to_string()), Refusal::Denied),
        };
        let resource = corral_policy::uid("Tool", name).to_string();
        let mut entry = Entry::decided(
            Kind::Call,
            agent,
            name,
            resource.clone(),
            &decision.summary(),
        );
        // Observe mode lets through only what lacks a permit; a forbid, an
        // error, an ask or a refusal before policy stands.
        let observed = self.agent.observe
            && class == Refusal::Denied
            && registered.is_some()
            && decision.lacks_permit();
        if observed {
            entry.verdict = Some(Verdict::WouldDeny);
            entry.detail = Some(format!("observe mode, let through: {}", decision.explain()));
        }
        // Only the ask path looks at grants or keeps a copy of the
        // arguments; every other call pays one branch.
        let asks = decision.approval.is_some() && registered.is_some();
        let (grant, held) = match asks {
            true => self.grant_for(name, &arguments, &decision),
            false => (None, None),
        };
        let asked_arguments = (asks && grant.is_none()).then(|| arguments.clone());
        if let Some(grant) = grant {
            entry.verdict = Some(Verdict::Allow);
            entry.parent = Some(grant);
            entry.detail = Some(format!(
                "allowed by the approval grant in audit record {grant}"
            ));
        }
        entry.session = common.to_json();
        entry.tool_sha256 = registered.map(|(c, _)| c.component.sha256().to_string());
        let input = arguments.to_string();
        entry.arguments = arguments;
        let receipt = match self.shared.audit.append_blocking(entry) {
            Ok(r) => {
                self.observe(|o| o.decided(arrived.elapsed()));
                r
            }
            Err(e) => {
                tracing::error!(agent, tool = name, error = %e, "decision not recorded; refusing");
                return Called::done(ran_none(refusal(
                    Refusal::AuditUnavailable,
                    format!(
                        "agent `{agent}`, tool `{name}`: not run because its decision could not be recorded ({e}); an operator must check the audit log's disk"
                    ),
                    &[],
                )));
            }
        };

        if let (Some(arguments), Some((component, _))) = (asked_arguments, registered) {
            return self.ask(
                AskingCall {
                    name: name.to_string(),
                    input,
                    component: component.clone(),
                    common,
                    call_seq: receipt.seq,
                    decision,
                    arrived,
                },
                arguments,
                held,
            );
        }
        if !decision.allowed && grant.is_none() && !observed {
            let next = match class {
                Refusal::UnknownTool => "`tools/list` shows the tools this agent may call",
                Refusal::InvalidInput => {
                    "fix the arguments to match the tool's input schema (`tools/list`)"
                }
                _ if decision.errors.is_empty() => {
                    "ask a policy author for a permit, or run `corral policy check` with this request to see why"
                }
                _ => {
                    "fix the request or the failing policy; `corral policy check` shows the evaluation"
                }
            };
            return Called::done(ran_none(refusal(
                class,
                format!(
                    "denied: agent `{agent}` may not call tool `{name}`: {} (audit record {}); next step: {next}",
                    decision.explain(),
                    receipt.seq
                ),
                &decision.policy_ids,
            )));
        }
        let Some((component, _)) = registered else {
            unreachable!("an allowed decision needs a loaded tool")
        };
        let (result, kind, detail) =
            self.run(name, &input, component, common, receipt.seq, deadline);
        let mut record = Entry::outcome_of(
            receipt.seq,
            agent,
            name,
            resource,
            decision.policy_set_hash,
            kind,
        );
        record.duration_us = Some(arrived.elapsed().as_micros() as i64);
        record.tool_sha256 = Some(component.component.sha256().to_string());
        record.detail = detail;
        Called::Done(result, Some(record))
    }

    /// Runs an allowed call on this thread, under the audited gate.
    fn run(
        &self,
        name: &str,
        input: &str,
        component: &Arc<RegisteredComponent>,
        common: Common,
        parent: i64,
        deadline: Instant,
    ) -> (CallToolResult, Outcome, Option<String>) {
        let agent = &*self.agent.id;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            let text = format!(
                "agent `{agent}`, tool `{name}`: timed out before it could start, after the broker's limit of {:?}; retry later or raise limits.call_timeout",
                self.shared.limits.call_timeout
            );
            return (
                refusal(Refusal::TimedOut, text.clone(), &[]),
                Outcome::Timeout,
                Some(text),
            );
        }
        let mut limits = self.shared.runtime.default_limits();
        limits.wall_time = limits.wall_time.min(remaining);
        let gate = AuditedGate {
            cedar: CedarGate::new(self.shared.policies.clone(), common),
            audit: self.shared.audit.clone(),
            parent,
            tool_sha256: component.component.sha256().to_string(),
            observe: self.agent.observe,
        };
        let ctx = CallContext {
            caller: Caller {
                agent: agent.to_string(),
                tool: name.to_string(),
            },
            workspace: Some(self.agent.workspace.clone()),
            gate: Arc::new(gate),
            secrets: self.shared.secrets.clone(),
            limits: Some(limits),
        };
        let runtime = &self.shared.runtime;
        // Never contended on the hot path; a call through rmcp that meets
        // the reader's refill makes its own instance.
        let called = match self.spare.try_lock() {
            Ok(mut next) => {
                next.last = Some(component.clone());
                runtime.call_with(&mut next.spare, &component.component, name, input, &ctx)
            }
            Err(_) => runtime.call(&component.component, name, input, &ctx),
        };
        match called {
            Ok(out) => {
                let structured = serde_json::from_str::<Value>(&out.output)
                    .ok()
                    .filter(Value::is_object);
                let mut result = CallToolResult::success(vec![ContentBlock::text(out.output)]);
                result.structured_content = structured;
                (result, Outcome::Ok, None)
            }
            Err(report) => {
                let failure = &report.error.failure;
                let kind = match failure {
                    CallFailure::LimitExceeded(Limit::WallTime { .. })
                    | CallFailure::TimedOut(_) => Outcome::Timeout,
                    _ => Outcome::Error,
                };
                let ids = match failure {
                    CallFailure::Denied(d) => d.policy_ids.clone(),
                    _ => Vec::new(),
                };
                let text = report.error.to_string();
                (
                    refusal(report.error.class(), text.clone(), &ids),
                    kind,
                    Some(text),
                )
            }
        }
    }
}

/// An answer for a call that did not run, so has no outcome record.
fn ran_none(result: CallToolResult) -> (CallToolResult, Option<Entry>) {
    (result, None)
}

/// The refusal for a call the broker itself failed (a panic, caught).
fn host_bug(who: &str, panic: &Panicked) -> CallToolResult {
    refusal(
        Refusal::HostError,
        format!(
            "{who}: the broker hit a bug running this call ({panic}); nothing else was affected; please report it"
        ),
        &[],
    )
}

/// An MCP tool error result (`isError: true`): one line for people, and
/// the same facts structured for programs.
fn refusal(class: Refusal, message: String, policy_ids: &[String]) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(message.clone())]);
    result.structured_content = Some(json!({
        "error": class.as_str(),
        "message": message,
        "policy_ids": policy_ids,
    }));
    result
}

impl ServerHandler for Session {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("corral-broker", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "Corral broker for agent `{}`. Every tool call is authorized by Cedar policy and recorded before it runs.",
                self.agent.id
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let engine = self.shared.policies.current();
        let tools = self
            .shared
            .registry
            .tools()
            .filter(|(info, _)| engine.may_call(&self.agent.id, &info.name))
            .map(|(info, _)| {
                let schema = match &info.input_schema {
                    Value::Object(map) => map.clone(),
                    _ => Default::default(),
                };
                let mut tool = Tool::new(info.name.clone(), info.description.clone(), schema);
                if let Some(Value::Object(out)) = &info.output_schema {
                    tool = tool.with_raw_output_schema(Arc::new(out.clone()));
                }
                tool
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        // Requests the hot path leaves to rmcp (with `_meta`, say) take the
        // same path, on a thread that may block.
        // The token is in the params' `_meta`; older clients put it in the
        // request's.
        let progress = request
            .meta
            .as_ref()
            .and_then(|m| m.get_progress_token())
            .or_else(|| context.meta.get_progress_token());
        let this = self.clone();
        let called = run_blocking(move || {
            let arguments = Value::Object(request.arguments.unwrap_or_default());
            this.call_now(&request.name, arguments)
        })
        .await;
        let result = match called {
            Ok(Called::Done(result, outcome)) => self.record_now((result, outcome)),
            Ok(Called::Asks(asked)) => self.wait_with_progress(*asked, progress, &context).await,
            Err(panic) => host_bug(&format!("agent `{}`", self.agent.id), &panic),
        };
        // The reader runs `idle` only after the answers it writes itself;
        // here the last call's instance would otherwise be held until the
        // connection's next call.
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.idle());
        Ok(result.into())
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        let requests = AgentRequests {
            shared: &self.shared,
            agent: &self.agent,
            session: &self.id,
            calls: &self.calls,
            tokens: &self.tokens,
            gone: &self.gone,
        };
        requests
            .answer(&request.method, request.params, &context)
            .await
            .map(CustomResult::new)
    }
}

impl InlineCalls for Session {
    fn call_tool_inline(&self, request: CallToolRequestParams) -> InlineAnswer {
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let (result, outcome) = match self.call_now(&request.name, arguments) {
            Called::Done(result, outcome) => (result, outcome),
            Called::Asks(asked) => {
                let this = self.clone();
                return InlineAnswer::Later(Box::new(move || {
                    let finished = this.finish_asked(*asked);
                    this.record_now(finished)
                }));
            }
        };
        if let Some(record) = outcome {
            let mut pending = self
                .deferred
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Written by `answered` after every inline call; one left here
            // would mean a path that skipped it: write it now rather than
            // lose it.
            if let Some(missed) = pending.replace(record) {
                self.shared.audit.append_detached(missed);
            }
        }
        InlineAnswer::Now(result)
    }

    fn answered(&self) {
        self.deferred.write();
    }

    /// Frees the last call's instance and makes the next one.
    fn idle(&self) {
        if let Ok(mut next) = self.spare.try_lock()
            && let Some(component) = next.last.clone()
        {
            self.shared
                .runtime
                .refill(&mut next.spare, &component.component);
        }
    }
}
