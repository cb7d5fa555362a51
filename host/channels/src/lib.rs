//! How people reach agents.
//!
//! Every channel hands messages to the [`Router`], which decides Cedar's
//! `invoke` (may this person, or this schedule, ask this agent, in this
//! channel?), records the
//! decision, and queues the message for the agent. The broker's
//! `corral/next` takes it from there; the agent's `corral/reply` comes back
//! through [`Router::reply`] to the channel it came from.
//!
//! Every channel implements [`Channel`], and one configured in
//! `corral.toml` implements [`ChannelSection`] for its section.
//!
//! - [`terminal`]: `corral chat AGENT` over a local control socket.
//! - [`slack`]: Slack in Socket Mode (no public endpoint), replies in the
//!   thread through the Web API.

mod channel;
mod router;
pub mod slack;
pub mod terminal;

pub use channel::{
    Channel, ChannelError, ChannelFuture, ChannelSection, ChannelStart, MissingSecret, Poster,
    SecretSource,
};
pub use router::{
    Delivery, DeliveryError, Message, Origin, Receipt, Reply, RouteError, Router, ScheduledRun,
    Sender, blocking,
};
