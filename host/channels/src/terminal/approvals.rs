//! Approvals over the control socket: `corral approvals ls|approve|deny`
//! and the pending approvals `corral chat` shows while it waits.
//!
//! The person answering is `User::"local:<uid>"` from the socket's peer
//! credentials, as for chat; whether they may answer is decided by
//! `corral-approvals` (the asking permit's annotation, then Cedar's
//! `approve` action), never here.

use std::sync::Arc;

use corral_approvals::{Answer, Choice, Event, Resolution, Scope, parse_duration};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Router;

/// One `{"approvals": VERB, …}` request from the control socket.
pub(super) struct ApprovalsRequest {
    pub(super) verb: String,
    pub(super) id: Option<i64>,
    pub(super) period: Option<String>,
    pub(super) reason: Option<String>,
}

/// Answers `request` for the person with `uid`: `{"approvals": [...]}`
/// for `ls`, `{"done": "..."}` for an answer that counted, or
/// `{"error": "..."}` saying what was wrong and what to do.
pub(super) async fn handle(router: &Arc<Router>, uid: u32, request: ApprovalsRequest) -> Value {
    match decide(router, uid, request).await {
        Ok(v) => v,
        Err(e) => json!({ "error": e }),
    }
}

async fn decide(
    router: &Arc<Router>,
    uid: u32,
    request: ApprovalsRequest,
) -> Result<Value, String> {
    let Some(approvals) = router.approvals() else {
        return Err("this host takes no approvals".into());
    };
    let ApprovalsRequest {
        verb,
        id,
        period,
        reason,
    } = request;
    let need_id = || {
        id.ok_or_else(|| {
            format!("`approvals {verb}` needs the approval's id; `corral approvals ls` lists them")
        })
    };
    let choice = match verb.as_str() {
        "ls" => return Ok(json!({ "approvals": approvals.pending() })),
        "show" => {
            let id = need_id()?;
            return match approvals.arguments(id) {
                Some(arguments) => Ok(json!({ "arguments": arguments })),
                None => Err(format!(
                    "approval {id} is not waiting for an answer; `corral approvals ls` lists those that are"
                )),
            };
        }
        "approve" if reason.is_some() => {
            return Err("a reason goes with `deny`, not `approve`".into());
        }
        "approve" => match &period {
            None => Choice::Once,
            Some(p) => Choice::For(parse_duration(p).map_err(|e| format!("--for `{p}`: {e}"))?),
        },
        "deny" if period.is_some() => {
            return Err("--for goes with `approve`, not `deny`".into());
        }
        "deny" => Choice::Deny { reason },
        other => {
            return Err(format!(
                "unknown approvals request `{other}`; use `ls`, `show`, `approve` or `deny`"
            ));
        }
    };
    let id = need_id()?;
    // Said back with the answer, so that the person sees what they
    // answered, whatever told them the id.
    let what = approvals
        .get(id)
        .map(|p| {
            format!(
                ": agent `{}` calling tool `{}` with {}",
                p.agent, p.tool, p.arguments
            )
        })
        .unwrap_or_default();
    let approvals = approvals.clone();
    let user = format!("local:{uid}");
    // An answer is recorded (and may fsync) before it counts.
    let answered = tokio::task::spawn_blocking(move || {
        approvals.answer(&Answer {
            id,
            user: &user,
            user_kind: "terminal",
            via: "terminal",
            choice,
        })
    })
    .await
    .map_err(|e| format!("approval {id}: the answer failed inside the host ({e})"))?;
    let done = match answered.map_err(|e| e.to_string())? {
        Resolution::Granted {
            record,
            scope: Scope::Once,
            ..
        } => format!("approved approval {id}{what}, for this call only (audit record {record})"),
        Resolution::Granted {
            record,
            scope: Scope::Until { expires_at_us },
            ..
        } => format!(
            "approved approval {id}{what}, and identical calls until {} (audit record {record})",
            corral_audit::format_micros(expires_at_us)
        ),
        Resolution::Denied { record, .. } => {
            format!("denied approval {id}{what} (audit record {record})")
        }
        Resolution::Expired { why, .. } => format!("approval {id} ended: {why}"),
    };
    Ok(json!({ "done": done }))
}

/// While message `message` is open, sends `notices` a frame for each
/// approval its work asks for in `conversation`, and for how each ended.
/// The frames carry `approval` (or `approval_ended`), which an agent's
/// replies never do, so a client can tell them from text the agent wrote.
/// Abort the handle when the message is answered.
pub(super) fn show_pending(
    router: &Arc<Router>,
    message: u64,
    conversation: String,
    notices: mpsc::UnboundedSender<Value>,
) -> Option<JoinHandle<()>> {
    let mut events = router.approvals()?.subscribe();
    Some(tokio::spawn(async move {
        let mut shown = Vec::new();
        loop {
            let frame = match events.recv().await {
                Ok(Event::Asked(p))
                    if p.origin
                        .as_ref()
                        .is_some_and(|o| o.conversation == conversation) =>
                {
                    shown.push(p.id);
                    let text = format!(
                        "{}; waiting for an answer: `corral approvals approve {id}` (add `--for 1h` for a period) or `corral approvals deny {id}`",
                        p.describe(),
                        id = p.id
                    );
                    json!({ "message": message, "approval": p, "text": text, "last": false })
                }
                Ok(Event::Ended { id, text }) if shown.contains(&id) => {
                    json!({ "message": message, "approval_ended": id, "text": text, "last": false })
                }
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            };
            if notices.send(frame).is_err() {
                return;
            }
        }
    }))
}
