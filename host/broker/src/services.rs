//! What an agent's own loop asks of the host besides tools, as the host
//! provides it: a mailbox of people's messages, the models by name, and
//! the limits of one turn. [`crate::custom`] answers the requests for them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use corral_models::ModelClient;
use serde::{Deserialize, Serialize};

/// A message from a person or a schedule, waiting for an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    /// Unique within the host's run; the reply names it.
    pub id: u64,
    /// What the person wrote.
    pub text: String,
    /// The person, as a Cedar `User` id (`slack:U123`, `local:alice`);
    /// none for a schedule's message.
    pub user: Option<String>,
    /// The schedule that sent it, by name; none for a person's message.
    pub schedule: Option<String>,
    /// The channel it came from, as a Cedar `Channel` id
    /// (`slack:C123`, `terminal`); replies go back there.
    pub channel: String,
    /// The chat workspace the channel belongs to, if any (`slack:T123`).
    pub chat_workspace: Option<String>,
    /// Messages in one conversation (a Slack thread, a terminal session)
    /// share it, so the agent can keep their history together.
    pub conversation: String,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where agents' messages come from and their replies go: the channels.
pub trait Mailbox: Send + Sync + 'static {
    /// The next message for `agent`, waiting up to `wait`. `holder` (the
    /// broker session taking it) holds it until it is answered or
    /// [`Mailbox::release`]d.
    fn next<'a>(
        &'a self,
        agent: &'a str,
        holder: &'a str,
        wait: Duration,
    ) -> BoxFuture<'a, Option<Inbound>>;
    /// The session `holder` of `agent` ended: the messages it held and did
    /// not answer are answered for it, saying so, so nobody waits forever.
    fn release(&self, agent: &str, holder: &str);
    /// The message `id` that `agent` is working on, if it is waiting for a
    /// reply from that agent.
    fn pending(&self, agent: &str, id: u64) -> Option<Inbound>;
    /// The one message `agent` holds unanswered, if it holds exactly one:
    /// whose request a tool call serves, for `@approval("sender")`. With
    /// none or several, nobody is the sender.
    fn working_on(&self, agent: &str) -> Option<Inbound>;
    /// Delivers the reply to message `id`, which the agent then no longer
    /// holds, and resolves once the channel has delivered it (or failed
    /// to). `last` is false for an interim update.
    fn reply<'a>(
        &'a self,
        agent: &'a str,
        id: u64,
        text: String,
        last: bool,
    ) -> BoxFuture<'a, Result<(), NotDelivered>>;
}

/// A reply that did not reach its person; the text says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotDelivered(pub String);

/// What one turn of an agent may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnLimits {
    /// Model calls per message.
    pub max_steps: u32,
    /// Output tokens per model call.
    pub max_tokens: u32,
}

impl Default for TurnLimits {
    fn default() -> Self {
        TurnLimits {
            max_steps: 8,
            max_tokens: 1024,
        }
    }
}

/// Models by the name agents and policies use.
pub type Models = std::collections::BTreeMap<String, Arc<ModelClient>>;
