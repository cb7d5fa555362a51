//! The wire: newline-delimited JSON-RPC 2.0 (MCP's stdio framing) over one
//! Unix stream, with the limits rmcp's own transport does not enforce.
//!
//! rmcp's `AsyncRwTransport` silently ignores a frame that is not JSON and
//! has no read deadline. MCP clients deserve an answer to a malformed frame
//! (JSON-RPC `-32700`), and a host facing hostile agents needs a bound on
//! how long a frame may take and how many requests may wait unanswered.
//! So this transport owns the framing and hands rmcp whole messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rmcp::RoleServer;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// JSON-RPC's reserved error codes.
pub(crate) const PARSE_ERROR: i64 = -32700;
pub(crate) const INVALID_REQUEST: i64 = -32600;

#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameLimits {
    pub max_frame_bytes: usize,
    pub max_unanswered: usize,
    pub idle_timeout: Duration,
    pub frame_timeout: Duration,
}

/// Set once the peer is gone (end of stream, a read error, a broken
/// limit), as soon as the reader sees it: handlers still running for that
/// connection (a long-poll, say) must not go on taking work for it.
#[derive(Default)]
pub(crate) struct Gone {
    flag: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl Gone {
    pub(crate) fn mark(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_gone() {
                return;
            }
            notified.await;
        }
    }
}

/// Requests read but not yet answered, shared by the reading and writing
/// halves: reading stops while it is at the limit.
#[derive(Default)]
struct Unanswered {
    count: AtomicUsize,
    answered: Notify,
}

pub(crate) struct FrameTransport {
    read: BufReader<OwnedReadHalf>,
    /// Frames for the writer task. Nothing in `receive` may await a write:
    /// rmcp drops the `receive` future whenever another branch of its
    /// `select!` wins, and an await there could lose an answer or cut one
    /// in half. Queueing is synchronous; the writer task writes whole
    /// frames in order.
    out: Option<mpsc::Sender<Vec<u8>>>,
    limits: FrameLimits,
    line: Vec<u8>,
    /// Discarding the rest of an oversized frame.
    discarding: bool,
    /// When the frame being read must be complete.
    frame_deadline: Option<Instant>,
    unanswered: Arc<Unanswered>,
    agent: Arc<str>,
    gone: Arc<Gone>,
}

enum Step {
    Line,
    More,
    Oversized,
}

impl FrameTransport {
    pub(crate) fn new(
        read: OwnedReadHalf,
        write: OwnedWriteHalf,
        limits: FrameLimits,
        agent: Arc<str>,
        gone: Arc<Gone>,
    ) -> Self {
        let (out, frames) = mpsc::channel(OUTPUT_FRAMES);
        tokio::spawn(write_frames(write, frames));
        FrameTransport {
            read: BufReader::with_capacity(16 * 1024, read),
            out: Some(out),
            limits,
            line: Vec::new(),
            discarding: false,
            frame_deadline: None,
            unanswered: Arc::new(Unanswered::default()),
            agent,
            gone,
        }
    }

    /// Queues a JSON-RPC error for a frame rmcp never saw. False when the
    /// connection must end: it is closed, or the agent leaves so many
    /// answers unread that the queue is full.
    fn queue_error(&self, id: Value, code: i64, message: String) -> bool {
        let frame = json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": { "code": code, "message": message },
        });
        let mut bytes = frame.to_string().into_bytes();
        bytes.push(b'\n');
        match self.out.as_ref().map(|o| o.try_send(bytes)) {
            Some(Ok(())) => true,
            Some(Err(mpsc::error::TrySendError::Full(_))) => {
                tracing::warn!(agent = %self.agent, "closing: the agent does not read its answers");
                false
            }
            _ => false,
        }
    }

    /// Reads one frame into `self.line`. Cancel-safe: rmcp polls `receive`
    /// inside `select!`, so every bit of progress lives in `self`.
    /// `Ok(true)` is a line, `Ok(false)` an oversized frame now skipped,
    /// `Err` the end of the connection (with the reason for the log).
    async fn read_frame(&mut self) -> Result<bool, String> {
        loop {
            let deadline = match self.frame_deadline {
                Some(d) => d,
                None => Instant::now() + self.limits.idle_timeout,
            };
            let available = match tokio::time::timeout_at(deadline, self.read.fill_buf()).await {
                Err(_) if self.frame_deadline.is_some() => {
                    return Err(format!(
                        "frame not completed within {:?} of its first byte",
                        self.limits.frame_timeout
                    ));
                }
                Err(_) => return Err(format!("idle for {:?}", self.limits.idle_timeout)),
                Ok(Err(e)) => return Err(format!("read error: {e}")),
                Ok(Ok(buf)) => buf,
            };
            if available.is_empty() {
                return Err("closed by the agent".into());
            }
            if self.frame_deadline.is_none() {
                self.frame_deadline = Some(Instant::now() + self.limits.frame_timeout);
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let take = newline.map_or(available.len(), |i| i + 1);
            let step = if self.discarding {
                if newline.is_some() {
                    self.discarding = false;
                    self.frame_deadline = None;
                }
                Step::More
            } else if self.line.len() + take > self.limits.max_frame_bytes + 1 {
                self.line.clear();
                if newline.is_some() {
                    self.frame_deadline = None;
                } else {
                    self.discarding = true;
                }
                Step::Oversized
            } else {
                self.line.extend_from_slice(&available[..take]);
                if newline.is_some() {
                    self.frame_deadline = None;
                    Step::Line
                } else {
                    Step::More
                }
            };
            self.read.consume(take);
            match step {
                Step::Line => return Ok(true),
                Step::Oversized => return Ok(false),
                Step::More => {}
            }
        }
    }
}

impl Transport<RoleServer> for FrameTransport {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let out = self.out.clone();
        let unanswered = self.unanswered.clone();
        async move {
            let answers_a_request = matches!(
                item,
                rmcp::model::JsonRpcMessage::Response(_) | rmcp::model::JsonRpcMessage::Error(_)
            );
            let mut bytes = serde_json::to_vec(&item).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
            let closed =
                || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "connection closed");
            let result = match out {
                Some(out) => out.send(bytes).await.map_err(|_| closed()),
                None => Err(closed()),
            };
            if answers_a_request {
                // Saturating: an error answer to a frame rmcp rejected was
                // never counted.
                let _ = unanswered
                    .count
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
                unanswered.answered.notify_one();
            }
            result
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            // Back-pressure: stop reading while too many requests wait.
            while self.unanswered.count.load(Ordering::Acquire) >= self.limits.max_unanswered {
                let notified = self.unanswered.answered.notified();
                if self.unanswered.count.load(Ordering::Acquire) < self.limits.max_unanswered {
                    break;
                }
                notified.await;
            }
            match self.read_frame().await {
                Err(reason) => {
                    tracing::debug!(agent = %self.agent, %reason, "closing MCP connection");
                    self.gone.mark();
                    return None;
                }
                Ok(false) => {
                    tracing::warn!(agent = %self.agent, limit = self.limits.max_frame_bytes, "oversized frame discarded");
                    let message = format!(
                        "frame larger than the broker's limit of {} bytes was discarded; send smaller arguments or raise limits.max_frame_bytes",
                        self.limits.max_frame_bytes
                    );
                    if !self.queue_error(Value::Null, INVALID_REQUEST, message) {
                        self.gone.mark();
                        return None;
                    }
                    continue;
                }
                Ok(true) => {}
            }
            let parsed = {
                let text = trim_line(&self.line);
                (!text.is_empty()).then(|| classify(text))
            };
            self.line.clear();
            let Some(parsed) = parsed else { continue };
            match parsed {
                Classified::Message(msg) => {
                    if matches!(*msg, rmcp::model::JsonRpcMessage::Request(_)) {
                        self.unanswered.count.fetch_add(1, Ordering::AcqRel);
                    }
                    return Some(*msg);
                }
                Classified::Reject { id, code, message } => {
                    tracing::debug!(agent = %self.agent, code, %message, "malformed frame");
                    if !self.queue_error(id, code, message) {
                        self.gone.mark();
                        return None;
                    }
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        // The writer finishes what is queued, then shuts the socket down.
        self.out = None;
        Ok(())
    }
}

/// Frames waiting to be written, per connection. Answers to requests are
/// bounded by the unanswered-request limit; the rest is error replies to
/// frames the agent keeps sending without reading.
const OUTPUT_FRAMES: usize = 256;

async fn write_frames(mut write: OwnedWriteHalf, mut frames: mpsc::Receiver<Vec<u8>>) {
    let mut batch = Vec::new();
    while let Some(frame) = frames.recv().await {
        // Whatever else is queued goes out in the same write.
        batch.clear();
        batch.extend_from_slice(&frame);
        while let Ok(more) = frames.try_recv() {
            batch.extend_from_slice(&more);
        }
        if write.write_all(&batch).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.trim_ascii()
}

enum Classified {
    Message(Box<RxJsonRpcMessage<RoleServer>>),
    Reject {
        id: Value,
        code: i64,
        message: String,
    },
}

/// Parses a frame, or names what is wrong with it in JSON-RPC's terms.
fn classify(text: &[u8]) -> Classified {
    let value: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => {
            return Classified::Reject {
                id: Value::Null,
                code: PARSE_ERROR,
                message: format!("parse error: the frame is not JSON ({e})"),
            };
        }
    };
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let reject = |message: String| Classified::Reject {
        id: id.clone(),
        code: INVALID_REQUEST,
        message,
    };
    let Some(obj) = value.as_object() else {
        return reject(if value.is_array() {
            "invalid request: JSON-RPC batches are not part of MCP; send one message per line"
                .into()
        } else {
            "invalid request: a JSON-RPC message must be a JSON object".into()
        });
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return reject("invalid request: `jsonrpc` must be \"2.0\"".into());
    }
    if let Some(method) = obj.get("method")
        && !method.is_string()
    {
        return reject("invalid request: `method` must be a string".into());
    }
    match serde_json::from_value::<RxJsonRpcMessage<RoleServer>>(value.clone()) {
        Ok(msg) => Classified::Message(Box::new(msg)),
        Err(e) => reject(format!("invalid request: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(text: &str) -> (Value, i64, String) {
        match classify(text.as_bytes()) {
            Classified::Reject { id, code, message } => (id, code, message),
            Classified::Message(m) => panic!("accepted: {m:?}"),
        }
    }

    #[test]
    fn malformed_frames_get_the_right_json_rpc_codes() {
        let (id, code, msg) = rejected("{not json");
        assert_eq!((id, code), (Value::Null, PARSE_ERROR));
        assert!(msg.contains("not JSON"));
        let (_, code, msg) = rejected("[1,2]");
        assert_eq!(code, INVALID_REQUEST);
        assert!(msg.contains("batches"));
        let (id, code, _) = rejected(r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#);
        assert_eq!((id, code), (json!(7), INVALID_REQUEST));
        let (_, code, _) = rejected(r#"{"jsonrpc":"2.0","id":7,"method":5}"#);
        assert_eq!(code, INVALID_REQUEST);
        assert!(matches!(
            classify(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Classified::Message(_)
        ));
    }
}

#[cfg(test)]
mod shapes {
    use super::*;

    #[test]
    fn half_valid_requests_are_requests_or_rejections_never_notifications() {
        for frame in [
            r#"{"jsonrpc":"2.0","id":"7","method":"tools/call","params":{"name":"echo","arguments":[7]}}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":7}}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"tools/call","params":{"name":7}}"#,
        ] {
            match classify(frame.as_bytes()) {
                Classified::Reject { .. } => {}
                Classified::Message(m) => assert!(
                    matches!(*m, rmcp::model::JsonRpcMessage::Request(_)),
                    "{frame} became {m:?}"
                ),
            }
        }
    }
}
