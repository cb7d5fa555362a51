//! The queue between people and agents.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_approvals::Approvals;
use corral_audit::{AuditLog, Entry, Kind};
use corral_policy::{Common, PolicyStore, RequestEntity, uid};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Notify, mpsc, oneshot};

/// Who sent a message: the principal of its `invoke` decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sender {
    /// A person, `User::"id"`.
    Person {
        /// `User` id, e.g. `slack:U123` or `local:1000`.
        user: String,
        /// Where the person is known from: `slack` or `terminal`.
        kind: String,
    },
    /// A `[[schedules]]` entry of `corral.toml`, `Schedule::"name"`.
    Schedule(ScheduledRun),
}

/// One run of a schedule, as its `invoke` record shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledRun {
    /// The schedule's name.
    pub name: String,
    /// The time the run was due, with its time zone (RFC 9557).
    pub scheduled_for: String,
    /// What started it: `cron`, `missed` (due while the host was down)
    /// or `operator` (`corral schedules run`).
    pub trigger: String,
}

impl Sender {
    /// The principal, `User::"…"` or `Schedule::"…"`.
    pub fn principal(&self) -> corral_policy::EntityUid {
        match self {
            Sender::Person { user, .. } => uid("User", user),
            Sender::Schedule(run) => uid("Schedule", &run.name),
        }
    }

    /// The person's `User` id, if a person sent it: whom `@approval("sender")`
    /// names.
    pub fn person(&self) -> Option<&str> {
        match self {
            Sender::Person { user, .. } => Some(user),
            Sender::Schedule(_) => None,
        }
    }

    fn entity(&self) -> RequestEntity {
        match self {
            Sender::Person { user, kind } => {
                RequestEntity::new("User", user).attr("channel_kind", json!(kind))
            }
            Sender::Schedule(run) => {
                RequestEntity::new("Schedule", &run.name).attr("channel_kind", json!("schedule"))
            }
        }
    }

    /// How the `invoke` record names the sender, in its arguments.
    fn recorded(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut fields = serde_json::Map::new();
        match self {
            Sender::Person { user, .. } => {
                fields.insert("user".into(), json!(uid("User", user).to_string()));
            }
            Sender::Schedule(run) => {
                fields.insert(
                    "schedule".into(),
                    json!(uid("Schedule", &run.name).to_string()),
                );
                fields.insert("scheduled_for".into(), json!(run.scheduled_for));
                fields.insert("trigger".into(), json!(run.trigger));
            }
        }
        fields
    }
}

/// Where a message came from, in Cedar's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Who sent it.
    pub sender: Sender,
    /// `Channel` id, e.g. `slack:C123` or `terminal`: where replies go.
    pub channel: String,
    /// `ChatWorkspace` id, e.g. `slack:T123`.
    pub chat_workspace: Option<String>,
    /// Messages that share it are one conversation (a thread, a session).
    pub conversation: String,
}

/// A message from a person to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Unique on this host while it runs.
    pub id: u64,
    /// The agent it is for.
    pub agent: String,
    /// What the person wrote.
    pub text: String,
    /// Who wrote it, where.
    pub origin: Origin,
}

/// An agent's answer, on its way back to the channel.
#[derive(Debug)]
pub struct Reply {
    /// The message it answers.
    pub message: u64,
    /// The agent that wrote it.
    pub agent: String,
    /// What the agent wrote.
    pub text: String,
    /// False for an interim update; the message is still open.
    pub last: bool,
    /// The channel says here whether the person got it (posted to Slack,
    /// written to the terminal), so the audit log records what happened,
    /// not just what was handed over.
    pub delivered: Option<oneshot::Sender<Result<(), DeliveryError>>>,
}

impl Reply {
    /// Tells the router's caller how delivery went.
    pub fn report(&mut self, outcome: Result<(), DeliveryError>) {
        if let Some(done) = self.delivered.take() {
            let _ = done.send(outcome);
        }
    }
}

/// How a reply's delivery ended, as the channel reported it.
pub type Receipt = oneshot::Receiver<Result<(), DeliveryError>>;

/// A reply that did not reach its person; the text says why and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);

/// Where a channel wants the replies to its messages.
pub type Delivery = mpsc::UnboundedSender<Reply>;

/// Why a message was not queued for its agent; the text is what the
/// person is told.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No such agent here.
    #[error("there is no agent `{agent}` on this host; configured agents: {known}")]
    UnknownAgent {
        /// The agent asked for.
        agent: String,
        /// The agents this host has, listed.
        known: String,
    },
    /// No `invoke` permit.
    #[error(
        "denied: {who} may not ask agent `{agent}`: {reason}; next step: ask a policy author for an `invoke` permit"
    )]
    Denied {
        /// The person, the channel and the audit record.
        who: String,
        /// The agent asked for.
        agent: String,
        /// The decision's explanation.
        reason: String,
        /// The policies that decided.
        policy_ids: Vec<String>,
    },
    /// The host is shutting down.
    #[error("agent `{agent}`: not accepting messages: the host is shutting down")]
    Closed {
        /// The agent asked for.
        agent: String,
    },
    /// The host cannot run the agent at all.
    #[error("agent `{agent}` is not available on this host: {cause}")]
    Unavailable {
        /// The agent asked for.
        agent: String,
        /// Why, as the host found it at start.
        cause: String,
    },
    /// The decision could not be recorded, so the message was refused.
    #[error("agent `{agent}`: message not taken: its decision could not be recorded ({message})")]
    Audit {
        /// The agent asked for.
        agent: String,
        /// The audit log's error.
        message: String,
    },
}

#[derive(Default)]
struct Inbox {
    /// Each message with where its reply goes and its `invoke` record.
    queue: VecDeque<(Message, Delivery, i64)>,
    /// Why the host cannot run this agent at all (its socket could not be
    /// set up): messages are refused at once, naming it.
    unavailable: Option<String>,
    /// Taken by the agent, not yet answered: the message, where its reply
    /// goes, and which of the agent's sessions holds it.
    pending: HashMap<u64, (Message, Delivery, String)>,
    arrived: Arc<Notify>,
}

/// Runs blocking work (an audit append may fsync) without stalling the
/// async workers that call the router, or that serve other message
/// sources beside it: in place on a multi-threaded runtime, inline on
/// any other.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Called with an agent's id when a message is queued for it: the host
/// starts the agent's container if it is not running.
pub type Wake = Box<dyn Fn(&str) + Send + Sync>;

/// Between channels and agents: decides `invoke`, queues messages per
/// agent, and carries replies back to the channel each message came from.
pub struct Router {
    policies: Arc<PolicyStore>,
    audit: AuditLog,
    inboxes: Mutex<BTreeMap<String, Inbox>>,
    next_id: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
    wake: Mutex<Option<Wake>>,
    settled: Notify,
    approvals: std::sync::OnceLock<Approvals>,
}

impl Router {
    /// A router for `agents`, deciding with `policies` and recording in `audit`.
    pub fn new(policies: Arc<PolicyStore>, audit: AuditLog, agents: &[String]) -> Self {
        Router {
            policies,
            audit,
            inboxes: Mutex::new(
                agents
                    .iter()
                    .map(|a| (a.clone(), Inbox::default()))
                    .collect(),
            ),
            next_id: AtomicU64::new(1),
            closed: Default::default(),
            wake: Mutex::new(None),
            settled: Notify::new(),
            approvals: std::sync::OnceLock::new(),
        }
    }

    /// Lets channels show and answer the calls `approvals` holds. Set
    /// once, before channels start; a second call is ignored.
    pub fn take_approvals(&self, approvals: Approvals) {
        let _ = self.approvals.set(approvals);
    }

    /// The host's pending approvals, if it takes approvals at all.
    pub fn approvals(&self) -> Option<&Approvals> {
        self.approvals.get()
    }

    /// Sets what is called when a message is queued for an agent.
    pub fn on_wake(&self, wake: Wake) {
        *self.wake.lock().unwrap_or_else(|p| p.into_inner()) = Some(wake);
    }

    fn inboxes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Inbox>> {
        self.inboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides `invoke`, records it, and queues the message. A denial is
    /// recorded too, and comes back as an error the channel shows.
    pub fn submit(
        &self,
        agent: &str,
        text: String,
        origin: Origin,
        delivery: Delivery,
    ) -> Result<u64, RouteError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(RouteError::Closed {
                agent: agent.to_string(),
            });
        }
        if let Some(cause) = self
            .inboxes()
            .get(agent)
            .and_then(|i| i.unavailable.clone())
        {
            return Err(RouteError::Unavailable {
                agent: agent.to_string(),
                cause,
            });
        }
        if !self.inboxes().contains_key(agent) {
            return Err(RouteError::UnknownAgent {
                agent: agent.to_string(),
                known: self
                    .inboxes()
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let common = Common::now(&origin.conversation, 0);
        let mut channel = RequestEntity::new("Channel", &origin.channel);
        let mut extra = vec![origin.sender.entity()];
        if let Some(ws) = &origin.chat_workspace {
            channel = channel.parent("ChatWorkspace", ws);
            extra.push(RequestEntity::new("ChatWorkspace", ws));
        }
        extra.push(channel);
        let channel_uid = uid("Channel", &origin.channel);
        let principal = origin.sender.principal();
        let decision = self.policies.current().decide(
            principal.clone(),
            "invoke",
            uid("Agent", agent),
            json!({
                "common": common.to_json(),
                "channel": { "__entity": { "type": "Channel", "id": origin.channel } },
            }),
            &extra,
        );
        // The agent column names the agent asked, so that an auditor's
        // `--agent` query shows who asked it; the sender is in the arguments.
        let mut entry = Entry::decided(
            Kind::Call,
            agent,
            "invoke",
            uid("Agent", agent).to_string(),
            &decision.summary(),
        );
        entry.session = common.to_json();
        let mut arguments = origin.sender.recorded();
        arguments.insert("channel".into(), json!(channel_uid.to_string()));
        arguments.insert("chat_workspace".into(), json!(origin.chat_workspace));
        arguments.insert("text".into(), json!(text));
        entry.arguments = serde_json::Value::Object(arguments);
        let seq = blocking(|| self.audit.append_blocking(entry))
            .map_err(|e| RouteError::Audit {
                agent: agent.to_string(),
                message: e.to_string(),
            })?
            .seq;
        if !decision.allowed {
            return Err(RouteError::Denied {
                who: format!(
                    "{principal} in channel `{}` (audit record {seq})",
                    origin.channel
                ),
                agent: agent.to_string(),
                reason: decision.explain(),
                policy_ids: decision.policy_ids,
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = Message {
            id,
            agent: agent.to_string(),
            text,
            origin,
        };
        {
            let mut inboxes = self.inboxes();
            let Some(inbox) = inboxes.get_mut(agent) else {
                unreachable!("checked above; agents are fixed at start")
            };
            inbox.queue.push_back((message, delivery, seq));
            inbox.arrived.notify_one();
        }
        if let Some(wake) = &*self.wake.lock().unwrap_or_else(|p| p.into_inner()) {
            wake(agent);
        }
        Ok(id)
    }

    /// The next message for `agent`, waiting up to `wait`. It stays pending,
    /// held by `holder`, until [`Self::reply`] answers it or
    /// [`Self::release`] gives up on it.
    pub async fn next(&self, agent: &str, holder: &str, wait: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = {
                let mut inboxes = self.inboxes();
                let inbox = inboxes.get_mut(agent)?;
                if let Some((message, delivery, _)) = inbox.queue.pop_front() {
                    inbox
                        .pending
                        .insert(message.id, (message.clone(), delivery, holder.to_string()));
                    return Some(message);
                }
                inbox.arrived.clone()
            };
            let notified = arrived.notified();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// The message `id` if `agent` holds it unanswered.
    pub fn pending(&self, agent: &str, id: u64) -> Option<Message> {
        self.inboxes()
            .get(agent)?
            .pending
            .get(&id)
            .map(|(m, _, _)| m.clone())
    }

    /// The message `agent` holds unanswered, if it holds exactly one.
    pub fn held_only(&self, agent: &str) -> Option<Message> {
        let inboxes = self.inboxes();
        let pending = &inboxes.get(agent)?.pending;
        match pending.len() {
            1 => pending.values().next().map(|(m, _, _)| m.clone()),
            _ => None,
        }
    }

    /// Sends `agent`'s reply to message `id` back to its channel.
    /// The receipt resolves once the channel has delivered the reply, or
    /// failed to.
    pub fn reply(
        &self,
        agent: &str,
        id: u64,
        text: String,
        last: bool,
    ) -> Result<Receipt, DeliveryError> {
        let delivery = {
            let mut inboxes = self.inboxes();
            let inbox = inboxes
                .get_mut(agent)
                .ok_or_else(|| DeliveryError(format!("no agent `{agent}`")))?;
            let delivery = if last {
                inbox.pending.remove(&id).map(|(_, d, _)| d)
            } else {
                inbox.pending.get(&id).map(|(_, d, _)| d.clone())
            };
            delivery.ok_or_else(|| {
                DeliveryError(format!(
                    "agent `{agent}`: message {id} is not waiting for a reply"
                ))
            })?
        };
        let (done, receipt) = oneshot::channel();
        let sent = delivery.send(Reply {
            message: id,
            agent: agent.to_string(),
            text,
            last,
            delivered: Some(done),
        });
        self.settled.notify_waiters();
        sent.map(|()| receipt).map_err(|_| {
            DeliveryError(format!(
                "agent `{agent}`: the person who sent message {id} is gone (their channel closed)"
            ))
        })
    }

    /// `holder` (an agent's broker session) is gone: each message it held
    /// unanswered is answered for it, so the person is not left waiting.
    /// It is not given to the agent again: the message may be what made
    /// the agent fail.
    pub fn release(&self, agent: &str, holder: &str) {
        let orphans: Vec<(u64, Delivery)> = {
            let mut inboxes = self.inboxes();
            let Some(inbox) = inboxes.get_mut(agent) else {
                return;
            };
            let ids: Vec<u64> = inbox
                .pending
                .iter()
                .filter(|(_, (_, _, h))| h == holder)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| inbox.pending.remove(&id).map(|(_, d, _)| (id, d)))
                .collect()
        };
        for (id, delivery) in orphans {
            tracing::warn!(
                agent,
                message = id,
                "agent's session ended before it answered"
            );
            let _ = delivery.send(Reply {
                message: id,
                agent: agent.to_string(),
                text: format!(
                    "⚠ agent `{agent}` stopped before it answered this message (its connection to the broker ended; `corral agents logs {agent}` may say why). Please ask again."
                ),
                last: true,
                delivered: None,
            });
        }
        self.settled.notify_waiters();
    }

    /// The host cannot run `agent` at all: every message is refused at
    /// once with `cause`, and those already queued are failed.
    pub fn set_unavailable(&self, agent: &str, cause: &str) {
        if let Some(inbox) = self.inboxes().get_mut(agent) {
            inbox.unavailable = Some(cause.to_string());
        }
        self.fail_queued(agent, cause);
    }

    /// The agent's container could not start: every message still queued
    /// for it is answered now, naming the agent and `cause`, and its
    /// outcome recorded as an error, so nobody waits for an agent that is
    /// not coming. Messages an agent already holds are left to it.
    /// Returns how many were failed.
    pub fn fail_queued(&self, agent: &str, cause: &str) -> usize {
        let failed: Vec<(Message, Delivery, i64)> = match self.inboxes().get_mut(agent) {
            Some(inbox) => inbox.queue.drain(..).collect(),
            None => return 0,
        };
        let count = failed.len();
        for (message, delivery, invoke) in failed {
            tracing::warn!(agent, message = message.id, %cause, "message failed: the agent cannot run");
            let mut entry = Entry::outcome_of(
                invoke,
                agent,
                "invoke",
                uid("Agent", agent).to_string(),
                self.policies.current().policy_set_hash(),
                corral_audit::Outcome::Error,
            );
            entry.detail = Some(format!("the agent could not run: {cause}"));
            if let Err(e) = blocking(|| self.audit.append_blocking(entry)) {
                tracing::error!(agent, message = message.id, error = %e, "cannot record the message's failure");
            }
            let _ = delivery.send(Reply {
                message: message.id,
                agent: agent.to_string(),
                text: format!(
                    "⚠ agent `{agent}` could not start, so this message was not answered: {cause}. \
                     Next step: an operator can see more with `corral agents logs {agent}` and the host's log; ask again once it is fixed."
                ),
                last: true,
                delivered: None,
            });
        }
        if count > 0 {
            self.settled.notify_waiters();
        }
        count
    }

    /// Messages queued or in progress, over all agents.
    pub fn in_flight(&self) -> usize {
        self.inboxes()
            .values()
            .map(|i| i.queue.len() + i.pending.len())
            .sum()
    }

    /// Stops taking messages, then waits up to `grace` for those taken to
    /// be answered. Returns how many were left unanswered.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.closed.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let settled = self.settled.notified();
            let left = self.in_flight();
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return self.in_flight();
            }
        }
    }

    /// Agents with messages waiting or in progress.
    pub fn busy(&self) -> Vec<String> {
        self.inboxes()
            .iter()
            .filter(|(_, i)| !i.queue.is_empty() || !i.pending.is_empty())
            .map(|(a, _)| a.clone())
            .collect()
    }
}
