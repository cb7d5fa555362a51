//! Approvals in Slack: each pending approval is posted, with buttons, in
//! the thread its work came from (or in `approvals.slack_channel`); a
//! press of a button answers it as `User::"slack:<user>"`, and the
//! message is updated with how it ended.
//!
//! A button press counts only if it arrives over the authenticated Socket
//! Mode connection (there is no HTTP endpoint to forge one at), from this
//! workspace, on the very message Corral posted for a request that is
//! still pending; whether the person may answer is then decided by
//! `corral-approvals` (the asking permit's annotation, then Cedar's
//! `approve`). Everything else is refused and said so in the thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use corral_approvals::{Answer, Choice, Event, PendingApproval, format_duration};
use slack_morphism::prelude::*;
use tokio::sync::broadcast::error::RecvError;

use super::SlackState;

/// Button action ids: what each button answers.
const APPROVE_ONCE: &str = "corral_approve_once";
const APPROVE_PERIOD: &str = "corral_approve_period";
const DENY: &str = "corral_deny";

/// Said when Slack shows less than all of the arguments.
const NOT_WHOLE: &str = ":warning: Not all of the arguments are shown here.";

/// An approval's message in Slack.
#[derive(Debug, Clone)]
pub(super) struct Posted {
    channel: String,
    ts: String,
    thread: Option<String>,
    text: String,
}

/// The approval messages this channel has posted and not yet closed, by
/// approval id.
#[derive(Default)]
pub(super) struct PostedApprovals(Mutex<HashMap<i64, Posted>>);

impl PostedApprovals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Posted>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Posts approvals as they are asked and updates them as they end, until
/// the approvals registry closes.
pub(super) fn follow(state: Arc<SlackState>) {
    let Some(approvals) = state.router.approvals() else {
        return;
    };
    let mut events = approvals.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(Event::Asked(pending)) => {
                    if let Some((channel, thread)) = where_to_post(&state, &pending) {
                        post(&state, &pending, channel, thread).await;
                    }
                }
                Ok(Event::Ended { id, text }) => {
                    let posted = state.approvals_posted.lock().remove(&id);
                    if let Some(posted) = posted {
                        close(&state, posted, &text).await;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "slack: approval events missed");
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// The configured approvers' channel, else the Slack thread the work came
/// from; an approval from elsewhere (the terminal) is not posted.
fn where_to_post(
    state: &SlackState,
    pending: &PendingApproval,
) -> Option<(String, Option<String>)> {
    let configured = state
        .router
        .approvals()
        .and_then(|a| a.config().slack_channel.clone());
    if let Some(channel) = configured {
        return Some((channel, None));
    }
    let origin = pending.origin.as_ref()?;
    let channel = origin.channel.strip_prefix("slack:")?;
    let thread = origin
        .conversation
        .strip_prefix(&format!("slack-{channel}-"))?;
    Some((channel.to_string(), Some(thread.to_string())))
}

/// Slack's own escaping, so that text an agent chose (its arguments)
/// cannot mention `@channel`, link, or leave the code block.
fn escape(text: &str) -> String {
    // A zero-width space after every backtick: no run of them can close
    // the code block, however long.
    super::plain(text).replace('`', "`\u{200b}")
}

/// The most of the arguments a Slack message shows: a section's text may
/// not exceed 3,000 characters, and a longer one would not be posted.
const SHOWN_ARGUMENTS: usize = 2_000;

fn summary(pending: &PendingApproval) -> String {
    let policies: Vec<String> = pending
        .asked_by
        .iter()
        .zip(&pending.approvers)
        .map(|(p, a)| format!("`{}` (approvers: {})", escape(p), escape(a)))
        .collect();
    let mut arguments =
        serde_json::to_string_pretty(&pending.arguments).unwrap_or_else(|_| "{}".into());
    let mut cut = String::new();
    if arguments.len() > SHOWN_ARGUMENTS || pending.hidden {
        if arguments.len() > SHOWN_ARGUMENTS {
            let end = (0..=SHOWN_ARGUMENTS)
                .rev()
                .find(|&i| arguments.is_char_boundary(i))
                .unwrap_or(0);
            arguments.truncate(end);
            arguments.push('…');
        }
        cut = format!(
            "\n{NOT_WHOLE} Read them whole with `corral approvals show {}` before approving; only *Deny* is offered in Slack.",
            pending.id
        );
    }
    let requested = pending
        .requested_by
        .as_deref()
        .map(|u| format!(", working on a message from {}", escape(u)))
        .unwrap_or_default();
    format!(
        "*Approval {id}*: agent `{agent}` wants to call tool `{tool}`{requested}\n```{arguments}```{cut}\nAsked by {policies}; denied if nobody answers by {expires}.",
        id = pending.id,
        agent = escape(&pending.agent),
        tool = escape(&pending.tool),
        arguments = escape(&arguments),
        policies = policies.join(", "),
        expires = corral_audit::format_micros(pending.expires_at_us),
    )
}

async fn post(
    state: &SlackState,
    pending: &PendingApproval,
    channel: String,
    thread: Option<String>,
) {
    let text = summary(pending);
    let period = state
        .router
        .approvals()
        .map(|a| format_duration(a.config().slack_grant))
        .unwrap_or_default();
    let value = pending.id.to_string();
    let button = |action: &str, label: String, style: Option<SlackBlockButtonStyle>| {
        let mut b = SlackBlockButtonElement::new(pt!(label))
            .with_action_id(SlackActionId(action.to_string()))
            .with_value(value.clone());
        b.style = style;
        SlackActionBlockElement::Button(b)
    };
    // Nobody approves in Slack what Slack cannot show them whole.
    let mut buttons = Vec::new();
    if !text.contains(NOT_WHOLE) {
        buttons.push(button(
            APPROVE_ONCE,
            "Approve once".into(),
            Some(SlackBlockButtonStyle::Primary),
        ));
        buttons.push(button(
            APPROVE_PERIOD,
            format!("Approve for {period}"),
            None,
        ));
    }
    buttons.push(button(
        DENY,
        "Deny".into(),
        Some(SlackBlockButtonStyle::Danger),
    ));
    let blocks: Vec<SlackBlock> = vec![
        SlackSectionBlock::new().with_text(md!(text.clone())).into(),
        SlackActionsBlock::new(buttons)
            .with_block_id(SlackBlockId(format!("corral-approval-{}", pending.id)))
            .into(),
    ];
    let mut request = SlackApiChatPostMessageRequest::new(
        SlackChannelId(channel.clone()),
        SlackMessageContent::new()
            .with_text(text.clone())
            .with_blocks(blocks),
    );
    if let Some(thread) = &thread {
        request = request.with_thread_ts(SlackTs(thread.clone()));
    }
    match state
        .client
        .open_session(&state.bot_token)
        .chat_post_message(&request)
        .await
    {
        Ok(response) => {
            state.approvals_posted.lock().insert(
                pending.id,
                Posted {
                    channel,
                    ts: response.ts.0,
                    thread,
                    text,
                },
            );
        }
        Err(e) => {
            tracing::warn!(approval = pending.id, %channel, error = %e, "slack: cannot post an approval; it can still be answered with `corral approvals`");
        }
    }
}

/// Replaces the buttons with how the approval ended.
async fn close(state: &SlackState, posted: Posted, ended: &str) {
    let text = format!("{}\n*{}*", posted.text, escape(ended));
    let request = SlackApiChatUpdateRequest::new(
        SlackChannelId(posted.channel.clone()),
        SlackMessageContent::new()
            .with_text(text.clone())
            .with_blocks(vec![SlackSectionBlock::new().with_text(md!(text)).into()]),
        SlackTs(posted.ts.clone()),
    );
    if let Err(e) = state
        .client
        .open_session(&state.bot_token)
        .chat_update(&request)
        .await
    {
        tracing::warn!(channel = %posted.channel, error = %e, "slack: cannot update an approval message");
    }
}

/// A button press on an approval message.
pub(super) async fn on_block_actions(
    state: Arc<SlackState>,
    event: SlackInteractionBlockActionsEvent,
) {
    let Some(user) = event.user.as_ref().map(|u| u.id.0.clone()) else {
        tracing::warn!("slack: block action without a user ignored");
        return;
    };
    let channel =
        event
            .channel
            .as_ref()
            .map(|c| c.id.0.clone())
            .or_else(|| match &event.container {
                SlackInteractionActionContainer::Message(m) => {
                    m.channel_id.as_ref().map(|c| c.0.clone())
                }
                _ => None,
            });
    let message_ts = match &event.container {
        SlackInteractionActionContainer::Message(m) => Some(m.message_ts.0.clone()),
        _ => None,
    };
    for action in event.actions.iter().flatten() {
        let choice = match action.action_id.0.as_str() {
            APPROVE_ONCE => Choice::Once,
            APPROVE_PERIOD => match state.router.approvals() {
                Some(a) => Choice::For(a.config().slack_grant),
                None => return,
            },
            DENY => Choice::Deny {
                reason: Some("denied in Slack".into()),
            },
            // Not one of Corral's buttons.
            _ => continue,
        };
        let id = action.value.as_deref().and_then(|v| v.parse::<i64>().ok());
        let posted = id.and_then(|id| state.approvals_posted.lock().get(&id).cloned());
        let genuine = event.team.id.0 == state.team
            && posted.as_ref().is_some_and(|p| {
                Some(&p.channel) == channel.as_ref() && Some(&p.ts) == message_ts.as_ref()
            });
        let (Some(id), Some(posted), true) = (id, posted, genuine) else {
            tracing::warn!(%user, value = ?action.value, ?channel, team = %event.team.id.0, "slack: approval button for no pending approval of this channel refused");
            if let Some(channel) = channel.clone() {
                let thread = message_ts.clone().unwrap_or_default();
                state.post(
                    channel,
                    thread,
                    format!("<@{user}>: that button answers no approval waiting in this channel (it was answered, expired, or is not from this host); `corral approvals ls` lists the pending ones"),
                );
            }
            continue;
        };
        let Some(approvals) = state.router.approvals().cloned() else {
            return;
        };
        if posted.text.contains(NOT_WHOLE) && !matches!(choice, Choice::Deny { .. }) {
            let thread = posted.thread.clone().unwrap_or(posted.ts.clone());
            state.post(
                posted.channel.clone(),
                thread,
                format!("<@{user}>: approval {id} cannot be approved in Slack, which does not show all of its arguments; use `corral approvals show {id}` and `corral approvals approve {id}`"),
            );
            continue;
        }
        let person = format!("slack:{user}");
        // The answer is recorded (and may fsync) before it counts.
        let answered = tokio::task::spawn_blocking(move || {
            approvals.answer(&Answer {
                id,
                user: &person,
                user_kind: "slack",
                via: "slack",
                choice,
            })
        })
        .await;
        let refused = match answered {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the answer failed inside the host ({e})"),
        };
        let thread = posted.thread.clone().unwrap_or(posted.ts.clone());
        state.post(
            posted.channel.clone(),
            thread,
            format!("<@{user}>: {}", escape(&refused)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn agent_text_cannot_mention_link_or_leave_the_code_block() {
        let e = escape("<!channel> <https://x|y> ```` & done");
        assert!(
            !e.contains('<') && !e.contains('>') && !e.contains("``"),
            "{e}"
        );
        assert!(e.contains("&lt;!channel&gt;") && e.contains("&amp;"), "{e}");
    }
}
