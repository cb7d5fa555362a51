//! The terminal channel: `corral chat AGENT` talks to a running
//! `corral up` over a local control socket.
//!
//! The socket is mode 0600, so only the user running `corral up` can use
//! it; the person is `User::"local:<uid>"` (from the socket's peer
//! credentials, not from anything the client says) with
//! `channel_kind == "terminal"`, in `Channel::"terminal"`.
//!
//! Protocol: one JSON object per line. The client sends
//! `{"agent": "...", "text": "..."}`; the server answers each with
//! `{"message": ID, "reply": "...", "last": true}` (possibly preceded by
//! interim replies with `"last": false`) or `{"error": "..."}`. While a
//! message is open, a call its work asks approval for shows as an interim
//! reply. `{"approvals": "ls"}` lists pending approvals;
//! `{"approvals": "approve", "id": N, "for": "1h"}` and
//! `{"approvals": "deny", "id": N, "reason": "..."}` answer one, and
//! `{"approvals": "show", "id": N}` gives its arguments whole
//! ([`approvals`]). Approval notices during a chat are frames of their own
//! (`"approval"` or `"approval_ended"` beside `"text"`), never replies.
//! `{"op": "start", "agent": "..."}` (or `stop`) and
//! `{"run_schedule": "NAME"}` are operator requests the host answers with
//! `{"done": "..."}` or `{"error": "..."}`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Origin, Router, Sender};

mod approvals;

/// The longest line a chat client may send.
const MAX_LINE: usize = 256 * 1024;

/// One line from a client: a message for an agent, or an operator's
/// request about an agent's container.
#[derive(Deserialize)]
#[serde(untagged, deny_unknown_fields)]
enum Request {
    Ask {
        agent: String,
        text: String,
    },
    Op {
        op: String,
        agent: String,
    },
    RunSchedule {
        run_schedule: String,
    },
    Approvals {
        approvals: String,
        id: Option<i64>,
        #[serde(rename = "for")]
        period: Option<String>,
        reason: Option<String>,
    },
}

/// The host's answer to an operator request (`start` or `stop` an agent,
/// `run-schedule` a schedule, each with its target): what happened, or
/// why not.
pub type Ops = Arc<
    dyn Fn(
            String,
            String,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<String, OpError>> + Send>>
        + Send
        + Sync,
>;

/// What the host answered instead of doing what a client asked: the
/// refusal's text, as the host wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Why the host did not carry out an operator's request; the text is what
/// the operator sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OpError(pub String);

impl crate::Channel for TerminalChannel {
    fn name(&self) -> &'static str {
        "terminal"
    }

    fn shutdown(self: Box<Self>) -> crate::ChannelFuture<()> {
        // Dropping it stops listening and removes the socket.
        drop(self);
        Box::pin(async {})
    }
}

/// A listening control socket; dropping it stops listening and removes
/// the socket file.
pub struct TerminalChannel {
    path: PathBuf,
    accept: JoinHandle<()>,
}

impl Drop for TerminalChannel {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl TerminalChannel {
    /// Listens on `path`, replacing a stale socket left by a crashed host
    /// (but refusing to replace anything that is not a socket).
    pub fn listen(
        path: &Path,
        router: Arc<Router>,
        ops: Option<Ops>,
    ) -> std::io::Result<TerminalChannel> {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket; move it away",
                        path.display()
                    ),
                ));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "{} is in use: is another `corral up` running here?",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let sessions = Arc::new(AtomicU64::new(0));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors, say: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                };
                let n = sessions.fetch_add(1, Ordering::Relaxed) + 1;
                tokio::spawn(serve(stream, router.clone(), ops.clone(), n));
            }
        });
        Ok(TerminalChannel {
            path: path.to_path_buf(),
            accept,
        })
    }
}

async fn serve(stream: UnixStream, router: Arc<Router>, ops: Option<Ops>, session: u64) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!(error = %e, "control socket: no peer credentials; closing");
            return;
        }
    };
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let (delivery, mut replies) = mpsc::unbounded_channel();
    let started = corral_audit::now_micros();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match tokio::io::AsyncReadExt::take(&mut lines, MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        if line.len() > MAX_LINE {
            let _ = write
                .write_all(
                    format!(
                        "{}\n",
                        json!({"error": format!("message longer than {MAX_LINE} bytes")})
                    )
                    .as_bytes(),
                )
                .await;
            return;
        }
        let request: Request = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                let error = json!({"error": format!("bad request ({e}); send {{\"agent\": \"ID\", \"text\": \"...\"}}")});
                if !send(&mut write, &error).await {
                    return;
                }
                continue;
            }
        };
        let (agent, text) = match request {
            Request::Ask { agent, text } => (agent, text),
            Request::Approvals {
                approvals: verb,
                id,
                period,
                reason,
            } => {
                let request = approvals::ApprovalsRequest {
                    verb,
                    id,
                    period,
                    reason,
                };
                let frame = approvals::handle(&router, uid, request).await;
                if !send(&mut write, &frame).await {
                    return;
                }
                continue;
            }
            Request::Op { op, agent } => {
                if !send(&mut write, &operator_request(&ops, op, agent).await).await {
                    return;
                }
                continue;
            }
            Request::RunSchedule { run_schedule } => {
                let frame = operator_request(&ops, "run-schedule".into(), run_schedule).await;
                if !send(&mut write, &frame).await {
                    return;
                }
                continue;
            }
        };
        let origin = Origin {
            sender: Sender::Person {
                user: format!("local:{uid}"),
                kind: "terminal".into(),
            },
            channel: "terminal".into(),
            chat_workspace: None,
            conversation: format!("terminal-{started}-{session}"),
        };
        let conversation = origin.conversation.clone();
        match router.submit(&agent, text, origin, delivery.clone()) {
            Err(e) => {
                if !send(&mut write, &json!({ "error": e.to_string() })).await {
                    return;
                }
            }
            Ok(id) => {
                let (notices_tx, mut notices) = mpsc::unbounded_channel();
                let shown = approvals::show_pending(&router, id, conversation, notices_tx);
                let _stop_showing = AbortOnDrop(shown);
                loop {
                    let mut reply = tokio::select! {
                        reply = replies.recv() => match reply {
                            Some(reply) => reply,
                            None => break,
                        },
                        Some(notice) = notices.recv() => {
                            if !send(&mut write, &notice).await {
                                return;
                            }
                            continue;
                        }
                    };
                    if reply.message != id {
                        continue;
                    }
                    let frame = json!({ "message": id, "reply": reply.text, "last": reply.last });
                    if !send(&mut write, &frame).await {
                        reply.report(Err(crate::DeliveryError(
                            "the terminal client went away".into(),
                        )));
                        return;
                    }
                    reply.report(Ok(()));
                    if reply.last {
                        break;
                    }
                }
            }
        }
    }
}

/// The host's answer to an operator request, as the frame to send back.
async fn operator_request(ops: &Option<Ops>, op: String, target: String) -> serde_json::Value {
    let answer = match ops {
        Some(ops) => ops(op, target).await,
        None => Err(OpError("this host takes no operator requests".into())),
    };
    match answer {
        Ok(done) => json!({ "done": done }),
        Err(e) => json!({ "error": e.0 }),
    }
}

/// Aborts the task when the message it serves is done, however that ends.
struct AbortOnDrop(Option<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, frame: &serde_json::Value) -> bool {
    write
        .write_all(format!("{frame}\n").as_bytes())
        .await
        .is_ok()
}

/// What a chat hears before its final reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interim<'a> {
    /// An interim reply the agent wrote.
    Reply(&'a str),
    /// From the host, not the agent: a call the work asks approval for,
    /// or how that approval ended.
    Approval(&'a str),
}

impl Interim<'_> {
    /// The text, whoever wrote it.
    pub fn text(&self) -> &str {
        match self {
            Interim::Reply(t) | Interim::Approval(t) => t,
        }
    }
}

/// An answer to an approval, as `corral approvals` sends it.
#[derive(Debug, Clone, Copy)]
pub enum ApprovalAnswer<'a> {
    /// Approve: this call only, or identical calls for the period given
    /// (`"30m"`, `"2h"`).
    Approve {
        /// The period, if any.
        period: Option<&'a str>,
    },
    /// Deny, saying why if the person did.
    Deny {
        /// The person's reason.
        reason: Option<&'a str>,
    },
}

/// The client side, for `corral chat` and tests.
pub struct ChatClient {
    read: BufReader<tokio::net::unix::OwnedReadHalf>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl ChatClient {
    /// Connects to the host's control socket at `path`.
    pub async fn connect(path: &Path) -> std::io::Result<ChatClient> {
        let stream = UnixStream::connect(path).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot reach `corral up` at {}: {e}; is it running with this state directory?",
                    path.display()
                ),
            )
        })?;
        let (read, write) = stream.into_split();
        Ok(ChatClient {
            read: BufReader::new(read),
            write,
        })
    }

    /// Asks the host to do `op` (`start`) for `agent`: what it did, or why
    /// not.
    pub async fn op(&mut self, op: &str, agent: &str) -> std::io::Result<Result<String, Refused>> {
        let frame = json!({ "op": op, "agent": agent });
        let value = self.exchange(frame).await?;
        Ok(match value["error"].as_str() {
            Some(e) => Err(Refused(e.to_string())),
            None => Ok(value["done"].as_str().unwrap_or_default().to_string()),
        })
    }

    /// Asks the host to run schedule `name` now: what it did, or why not.
    pub async fn run_schedule(&mut self, name: &str) -> std::io::Result<Result<String, Refused>> {
        let value = self.exchange(json!({ "run_schedule": name })).await?;
        Ok(match value["error"].as_str() {
            Some(e) => Err(Refused(e.to_string())),
            None => Ok(value["done"].as_str().unwrap_or_default().to_string()),
        })
    }

    /// The approvals waiting on the host, as it lists them (see
    /// `corral_approvals::PendingApproval`).
    pub async fn pending_approvals(
        &mut self,
    ) -> std::io::Result<Result<Vec<serde_json::Value>, Refused>> {
        let value = self.exchange(json!({ "approvals": "ls" })).await?;
        Ok(match value["error"].as_str() {
            Some(e) => Err(Refused(e.to_string())),
            None => Ok(value["approvals"].as_array().cloned().unwrap_or_default()),
        })
    }

    /// The arguments of pending approval `id`, whole (what redaction hides
    /// in `pending_approvals` included).
    pub async fn approval_arguments(
        &mut self,
        id: i64,
    ) -> std::io::Result<Result<serde_json::Value, Refused>> {
        let value = self
            .exchange(json!({ "approvals": "show", "id": id }))
            .await?;
        Ok(match value["error"].as_str() {
            Some(e) => Err(Refused(e.to_string())),
            None => Ok(value["arguments"].clone()),
        })
    }

    /// Answers approval `id`: approve it once, approve it and identical
    /// calls for `period` (`"1h"`), or deny it, with an optional reason.
    /// What the host did, or why the answer did not count.
    pub async fn answer_approval(
        &mut self,
        id: i64,
        answer: ApprovalAnswer<'_>,
    ) -> std::io::Result<Result<String, Refused>> {
        let frame = match answer {
            ApprovalAnswer::Approve { period } => {
                json!({ "approvals": "approve", "id": id, "for": period })
            }
            ApprovalAnswer::Deny { reason } => {
                json!({ "approvals": "deny", "id": id, "reason": reason })
            }
        };
        let value = self.exchange(frame).await?;
        Ok(match value["error"].as_str() {
            Some(e) => Err(Refused(e.to_string())),
            None => Ok(value["done"].as_str().unwrap_or_default().to_string()),
        })
    }

    /// Sends one message and returns the final reply, or the refusal.
    /// `interim` sees each interim reply.
    pub async fn ask(
        &mut self,
        agent: &str,
        text: &str,
        mut interim: impl FnMut(Interim<'_>),
    ) -> std::io::Result<Result<String, Refused>> {
        let mut value = self
            .exchange(json!({ "agent": agent, "text": text }))
            .await?;
        loop {
            if let Some(error) = value["error"].as_str() {
                return Ok(Err(Refused(error.to_string())));
            }
            if value.get("approval").is_some() || value.get("approval_ended").is_some() {
                interim(Interim::Approval(
                    value["text"].as_str().unwrap_or_default(),
                ));
                value = self.read_frame().await?;
                continue;
            }
            let text = value["reply"].as_str().unwrap_or_default();
            if value["last"] != json!(false) {
                return Ok(Ok(text.to_string()));
            }
            interim(Interim::Reply(text));
            value = self.read_frame().await?;
        }
    }

    /// Sends `frame` and reads the first answer.
    async fn exchange(&mut self, frame: serde_json::Value) -> std::io::Result<serde_json::Value> {
        self.write
            .write_all(format!("{frame}\n").as_bytes())
            .await?;
        self.read_frame().await
    }

    async fn read_frame(&mut self) -> std::io::Result<serde_json::Value> {
        let mut line = String::new();
        if self.read.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "`corral up` closed the connection (is it shutting down?)",
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}
