//! Slack, through slack-morphism: Socket Mode for events (an outbound
//! websocket, so no public endpoint is needed) and the Web API for replies.
//!
//! A mention of the bot in a channel bound to an agent, or a direct message
//! when an agent takes direct messages, becomes a [`crate::Message`] from
//! `User::"slack:<user>"` in `Channel::"slack:<channel>"`, which is in
//! `ChatWorkspace::"slack:<team>"`. Replies go into the message's thread.
//! Refusals (no `invoke` permit, unknown agent) are posted in the thread
//! too, so the person always hears back. Calls that wait for a person's
//! approval are posted with buttons ([`approvals`]). A schedule's replies
//! are posted as messages of their own in its channel ([`Poster`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use slack_morphism::prelude::*;
use tokio::sync::mpsc;

mod approvals;

use crate::{
    Channel, ChannelError, ChannelFuture, ChannelSection, ChannelStart, DeliveryError,
    MissingSecret, Origin, Poster, Reply, Router, SecretSource, Sender,
};

/// The `[slack]` section of `corral.toml`: where the tokens are (by
/// variable name) and which agent answers where.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSection {
    /// The variable holding the bot token (`xoxb-…`).
    #[serde(default = "d_bot_env")]
    pub bot_token_env: String,
    /// The variable holding the app token (`xapp-…`).
    #[serde(default = "d_app_env")]
    pub app_token_env: String,
    /// Default `https://slack.com/api`.
    pub api_url: Option<String>,
    /// Slack channel id → agent id.
    #[serde(default)]
    pub channels: BTreeMap<String, String>,
    /// The agent that answers direct messages.
    pub direct_messages: Option<String>,
}

fn d_bot_env() -> String {
    "SLACK_BOT_TOKEN".into()
}

fn d_app_env() -> String {
    "SLACK_APP_TOKEN".into()
}

impl ChannelSection for SlackSection {
    fn key(&self) -> &'static str {
        "slack"
    }

    fn agents(&self) -> Vec<(String, String)> {
        self.channels
            .iter()
            .map(|(c, a)| (format!("slack.channels.{c}"), a.clone()))
            .chain(
                self.direct_messages
                    .iter()
                    .map(|a| ("slack.direct_messages".to_string(), a.clone())),
            )
            .collect()
    }

    fn resolve(&self, secrets: &dyn SecretSource) -> Result<Box<dyn ChannelStart>, MissingSecret> {
        Ok(Box::new(SlackConfig {
            bot_token: secrets.require(&self.bot_token_env, "slack.bot_token_env")?,
            app_token: secrets.require(&self.app_token_env, "slack.app_token_env")?,
            api_url: self.api_url.clone(),
            channels: self.channels.clone(),
            direct_messages: self.direct_messages.clone(),
        }))
    }
}

impl ChannelStart for SlackConfig {
    fn start(
        self: Box<Self>,
        router: Arc<Router>,
    ) -> ChannelFuture<Result<Box<dyn Channel>, ChannelError>> {
        Box::pin(async move {
            SlackChannel::start(*self, router)
                .await
                .map(|c| Box::new(c) as Box<dyn Channel>)
                .map_err(|e| ChannelError {
                    channel: "slack",
                    message: e.to_string(),
                })
        })
    }
}

impl Channel for SlackChannel {
    fn name(&self) -> &'static str {
        "slack"
    }

    fn shutdown(self: Box<Self>) -> ChannelFuture<()> {
        Box::pin(async move { SlackChannel::shutdown(*self).await })
    }

    fn poster(&self) -> Option<Arc<dyn Poster>> {
        Some(self.state.clone())
    }
}

/// A schedule's replies: a message of its own in the channel, not in a
/// thread.
impl Poster for SlackState {
    fn post(&self, room: &str, text: String) -> ChannelFuture<Result<(), DeliveryError>> {
        let (client, token, room) = (
            self.client.clone(),
            self.bot_token.clone(),
            room.to_string(),
        );
        let text = plain(&text);
        Box::pin(async move { post_message(&client, &token, room, None, text).await })
    }

    fn chat_workspace(&self) -> Option<String> {
        Some(format!("slack:{}", self.team))
    }
}

/// What Slack needs. Tokens come from the environment or a secrets file,
/// never from `corral.toml` itself.
#[derive(Clone)]
pub struct SlackConfig {
    /// `xoxb-…`: the Web API (auth.test, chat.postMessage).
    pub bot_token: String,
    /// `xapp-…`: Socket Mode (apps.connections.open).
    pub app_token: String,
    /// The Web API's base, e.g. `https://slack.com/api` (the default).
    pub api_url: Option<String>,
    /// Slack channel id → agent id.
    pub channels: BTreeMap<String, String>,
    /// The agent that answers direct messages, if any.
    pub direct_messages: Option<String>,
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("api_url", &self.api_url)
            .field("channels", &self.channels)
            .field("direct_messages", &self.direct_messages)
            .finish_non_exhaustive()
    }
}

/// Why the Slack channel could not start.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// The TLS roots could not be loaded.
    #[error("slack: cannot set up HTTPS: {0}")]
    Tls(String),
    /// `auth.test` refused the bot token.
    #[error(
        "slack: the bot token was refused by auth.test at {url}: {message}; check SLACK_BOT_TOKEN (an `xoxb-` token of the app)"
    )]
    Auth {
        /// The Web API base used.
        url: String,
        /// What Slack said.
        message: String,
    },
    /// Socket Mode could not be opened with the app token.
    #[error(
        "slack: cannot open Socket Mode: {0}; check SLACK_APP_TOKEN (an `xapp-` token with connections:write)"
    )]
    SocketMode(String),
}

struct SlackState {
    router: Arc<Router>,
    config: SlackConfig,
    bot_user: String,
    team: String,
    client: Arc<SlackHyperClient>,
    bot_token: SlackApiToken,
    approvals_posted: approvals::PostedApprovals,
}

/// A running Slack connection.
pub struct SlackChannel {
    listener: SlackClientSocketModeListener<SlackClientHyperHttpsConnector>,
    state: Arc<SlackState>,
}

impl SlackChannel {
    /// Checks the bot token, then connects Socket Mode. Events flow once
    /// the server's `hello` arrives.
    pub async fn start(
        config: SlackConfig,
        router: Arc<Router>,
    ) -> Result<SlackChannel, SlackError> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| SlackError::Tls(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let mut connector = SlackClientHyperConnector::with_connector(https);
        let api_url = config
            .api_url
            .clone()
            .unwrap_or_else(|| "https://slack.com/api".into());
        // slack-morphism joins the base and the method with a `/`.
        connector = connector.with_slack_api_url(api_url.trim_end_matches('/'));
        let client = Arc::new(SlackClient::new(connector));
        let bot_token = SlackApiToken::new(SlackApiTokenValue::from(config.bot_token.clone()))
            .with_token_type(SlackApiTokenType::Bot);
        let app_token = SlackApiToken::new(SlackApiTokenValue::from(config.app_token.clone()))
            .with_token_type(SlackApiTokenType::App);
        let auth = client
            .open_session(&bot_token)
            .auth_test()
            .await
            .map_err(|e| SlackError::Auth {
                url: api_url.clone(),
                message: e.to_string(),
            })?;
        tracing::info!(bot = %auth.user_id.0, team = %auth.team_id.0, "slack: authenticated");

        let state = Arc::new(SlackState {
            router,
            config,
            bot_user: auth.user_id.0.clone(),
            team: auth.team_id.0.clone(),
            client: client.clone(),
            bot_token: bot_token.clone(),
            approvals_posted: approvals::PostedApprovals::default(),
        });
        approvals::follow(state.clone());

        let environment = Arc::new(
            SlackClientEventsListenerEnvironment::new(client.clone())
                .with_error_handler(on_error)
                .with_user_state(state.clone()),
        );
        let callbacks = SlackSocketModeListenerCallbacks::new()
            .with_hello_events(on_hello)
            .with_push_events(on_push)
            .with_interaction_events(on_interaction);
        let socket_config = SlackClientSocketModeConfig::new()
            .with_max_connections_count(1)
            .with_reconnect_timeout_in_seconds(1);
        let listener = SlackClientSocketModeListener::new(&socket_config, environment, callbacks);
        listener
            .listen_for(&app_token)
            .await
            .map_err(|e| SlackError::SocketMode(e.to_string()))?;
        listener.start().await;
        Ok(SlackChannel { listener, state })
    }

    /// Closes the websocket. Replies still on their way are posted by
    /// their own tasks.
    pub async fn shutdown(self) {
        self.listener.shutdown().await;
    }
}

// Generic over the event: slack-morphism's hello type lives in a module
// that its own `socket_mode` module shadows, so it cannot be named here.
async fn on_hello<Hello: std::fmt::Debug>(
    event: Hello,
    _client: Arc<SlackHyperClient>,
    _state: SlackClientEventsUserState,
) {
    tracing::info!(?event, "slack: socket mode connected");
}

fn on_error(
    error: Box<dyn std::error::Error + Send + Sync>,
    _client: Arc<SlackHyperClient>,
    _state: SlackClientEventsUserState,
) -> HttpStatusCode {
    tracing::warn!(error = %error, "slack: event not handled");
    // Acknowledged anyway: Slack would only redeliver the same event.
    HttpStatusCode::OK
}

/// The channel's state, which every Socket Mode callback is handed.
async fn listener_state(
    states: &SlackClientEventsUserState,
) -> Result<Arc<SlackState>, &'static str> {
    states
        .read()
        .await
        .get_user_state::<Arc<SlackState>>()
        .cloned()
        .ok_or("slack: listener state missing")
}

async fn on_push(
    event: SlackPushEventCallback,
    _client: Arc<SlackHyperClient>,
    states: SlackClientEventsUserState,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    listener_state(&states).await?.handle(event);
    Ok(())
}

async fn on_interaction(
    event: SlackInteractionEvent,
    _client: Arc<SlackHyperClient>,
    states: SlackClientEventsUserState,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let state = listener_state(&states).await?;
    match event {
        SlackInteractionEvent::BlockActions(actions) => {
            // Answered off the listener: recording an answer may fsync.
            tokio::spawn(approvals::on_block_actions(state, actions));
        }
        other => tracing::debug!(?other, "slack: interaction ignored"),
    }
    Ok(())
}

impl SlackState {
    fn handle(self: &Arc<Self>, event: SlackPushEventCallback) {
        let team = event.team_id.0.clone();
        let (user, channel, text, thread, agent) = match event.event {
            SlackEventCallbackBody::AppMention(m) => {
                let agent = self.config.channels.get(&m.channel.0).cloned();
                let thread = thread_of(&m.origin);
                (
                    m.user.0,
                    m.channel.0,
                    m.content.text.unwrap_or_default(),
                    thread,
                    agent,
                )
            }
            SlackEventCallbackBody::Message(m) => {
                // Only direct messages: a mention in a channel also arrives
                // as `app_mention`, and the bot's own posts come back here.
                let direct = m.origin.channel_type.as_ref().is_some_and(|t| t.0 == "im");
                if !direct || m.sender.bot_id.is_some() || m.subtype.is_some() {
                    return;
                }
                let thread = thread_of(&m.origin);
                let (Some(user), Some(channel)) = (m.sender.user, m.origin.channel) else {
                    return;
                };
                if user.0 == self.bot_user {
                    return;
                }
                let text = m.content.and_then(|c| c.text).unwrap_or_default();
                (
                    user.0,
                    channel.0,
                    text,
                    thread,
                    self.config.direct_messages.clone(),
                )
            }
            _ => return,
        };
        let text = strip_mention(&text, &self.bot_user);
        let Some(agent) = agent else {
            self.post(
                channel.clone(),
                thread,
                format!("No agent is bound to this channel ({channel}); an operator can bind one under [slack.channels] in corral.toml."),
            );
            return;
        };
        let origin = Origin {
            sender: Sender::Person {
                user: format!("slack:{user}"),
                kind: "slack".into(),
            },
            channel: format!("slack:{channel}"),
            chat_workspace: Some(format!(
                "slack:{}",
                if team.is_empty() { &self.team } else { &team }
            )),
            conversation: format!("slack-{channel}-{thread}"),
        };
        // Each message gets its own delivery, which knows its thread, so
        // a reply can never arrive before its destination is known.
        let (delivery, mut replies) = mpsc::unbounded_channel::<Reply>();
        match self.router.submit(&agent, text, origin, delivery) {
            Ok(_) => {
                let state = self.clone();
                tokio::spawn(async move {
                    while let Some(mut reply) = replies.recv().await {
                        let text = plain(&reply.text);
                        let posted = state.post_now(channel.clone(), thread.clone(), text).await;
                        reply.report(posted);
                        if reply.last {
                            break;
                        }
                    }
                });
            }
            Err(e) => self.post(channel, thread, plain(&e.to_string())),
        }
    }

    fn post(self: &Arc<Self>, channel: String, thread: String, text: String) {
        let state = self.clone();
        tokio::spawn(async move {
            let _ = state.post_now(channel, thread, text).await;
        });
    }

    /// Posts `text` in the thread; the error says what Slack said.
    async fn post_now(
        &self,
        channel: String,
        thread: String,
        text: String,
    ) -> Result<(), DeliveryError> {
        post_message(&self.client, &self.bot_token, channel, Some(thread), text).await
    }
}

/// Text the host did not write (an agent's reply), as Slack shows it
/// literally: `&`, `<` and `>` escaped, as Slack asks of such text.
/// Unescaped, an agent could notify a whole channel (`<!channel>`,
/// `<!everyone>`), mention any person (`<@U…>`) or show one link and open
/// another (`<https://evil.example|https://docs.example>`). A bare URL
/// still becomes a link, showing where it goes.
pub(crate) fn plain(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `chat.postMessage` in `channel`, in `thread` if given.
async fn post_message(
    client: &SlackHyperClient,
    token: &SlackApiToken,
    channel: String,
    thread: Option<String>,
    text: String,
) -> Result<(), DeliveryError> {
    let mut request = SlackApiChatPostMessageRequest::new(
        SlackChannelId(channel.clone()),
        SlackMessageContent::new().with_text(text),
    );
    if let Some(thread) = thread {
        request = request.with_thread_ts(SlackTs(thread));
    }
    match client.open_session(token).chat_post_message(&request).await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(%channel, error = %e, "slack: chat.postMessage failed");
            Err(DeliveryError(format!(
                "slack chat.postMessage to {channel}: {e}"
            )))
        }
    }
}

/// The thread a message belongs to: its own `ts` when it starts one.
fn thread_of(origin: &SlackMessageOrigin) -> String {
    origin.thread_ts.as_ref().unwrap_or(&origin.ts).0.clone()
}

/// Removes the bot's own mention (`<@U123>`) from the text.
fn strip_mention(text: &str, bot_user: &str) -> String {
    text.replace(&format!("<@{bot_user}>"), "")
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::strip_mention;

    #[test]
    fn the_bots_mention_is_removed_and_others_kept() {
        assert_eq!(strip_mention("<@UBOT> hi <@U2>", "UBOT"), "hi <@U2>");
        assert_eq!(strip_mention("  <@UBOT>  ", "UBOT"), "");
    }
}
