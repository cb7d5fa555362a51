//! The seam every channel plugs into: its section of `corral.toml`, which
//! resolves its secrets before anything starts and then starts it, and the
//! running channel, which the host shuts down last.
//!
//! A channel hands each message to the [`Router`] and answers people with
//! what comes back through it; it never talks to the broker, the policy
//! engine or the audit log itself. Adding one (Discord, Teams, e-mail) is
//! a module here implementing these traits, a field for its section in
//! the host's configuration, and one line in the host's channel list
//! (`corral-host`'s `channels.rs`); nothing else changes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::Router;

/// A future a channel returns from a trait method.
pub type ChannelFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A running channel.
pub trait Channel: Send {
    /// Its name in logs and errors (`slack`, `terminal`).
    fn name(&self) -> &'static str;

    /// Disconnects: no new messages arrive through it. Called after the
    /// router has drained, so replies to the messages it carried have
    /// gone out.
    fn shutdown(self: Box<Self>) -> ChannelFuture<()>;

    /// How to post into this channel's rooms unasked, for replies that
    /// answer no person's message (a schedule's); `None` when it cannot.
    fn poster(&self) -> Option<Arc<dyn Poster>> {
        None
    }
}

/// Posts into a channel's rooms without a message to answer.
pub trait Poster: Send + Sync {
    /// Posts `text` in `room`, the channel's own id for it (a Slack
    /// channel id); the error says what the service said. `text` is shown
    /// as plain text, never as the service's markup (no mentions, no
    /// links but bare URLs), since an agent may have written it.
    fn post(&self, room: &str, text: String) -> ChannelFuture<Result<(), crate::DeliveryError>>;

    /// The `ChatWorkspace` the rooms belong to, if the channel has one.
    fn chat_workspace(&self) -> Option<String>;
}

/// Finds a secret by the variable name a section gives for it.
pub trait SecretSource {
    /// The value, or an error naming `what` needs it and where it was
    /// looked for.
    fn require(&self, name: &str, what: &str) -> Result<String, MissingSecret>;
}

/// A secret a channel needs is not set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MissingSecret(pub String);

/// A channel that could not start.
#[derive(Debug, thiserror::Error)]
#[error("channel `{channel}`: {message}")]
pub struct ChannelError {
    /// The channel's name.
    pub channel: &'static str,
    /// What went wrong.
    pub message: String,
}

/// A channel's section of `corral.toml`, as parsed.
pub trait ChannelSection: Send + Sync {
    /// The section's key in `corral.toml`.
    fn key(&self) -> &'static str;

    /// Every agent the section routes messages to, each with the setting
    /// that names it (`slack.channels.C0123`), so that loading refuses a
    /// configuration naming an agent that does not exist.
    fn agents(&self) -> Vec<(String, String)>;

    /// Resolves the section's secrets. Called for every channel before
    /// anything starts, so a missing secret is the first and only error.
    fn resolve(&self, secrets: &dyn SecretSource) -> Result<Box<dyn ChannelStart>, MissingSecret>;
}

/// A channel ready to start, its secrets resolved.
pub trait ChannelStart: Send {
    /// Connects and starts handing messages to `router`.
    fn start(
        self: Box<Self>,
        router: Arc<Router>,
    ) -> ChannelFuture<Result<Box<dyn Channel>, ChannelError>>;
}
