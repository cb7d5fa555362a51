//! The wire: newline-delimited JSON-RPC 2.0 (MCP's stdio framing) over one
//! Unix stream, with the limits rmcp's own transport does not enforce, and
//! a hot path that answers `tools/call` and `ping` without rmcp's service.
//!
//! Each connection has a reader thread of its own. It reads frames with
//! blocking reads under deadlines (idle, slowloris) and a size cap, and
//! answers a malformed frame with JSON-RPC's error (rmcp's own transport
//! would drop it silently). Once the handshake has been made through rmcp,
//! the reader answers a plain `tools/call` and `ping` itself: the decision,
//! its record, the tool run and the answer happen on the thread that read
//! the request. rmcp's service hands every request through three tasks
//! (reader loop, handler, writer), and on this two-core machine each
//! hand-off between threads costs tens of microseconds: more than the
//! policy decision and the Wasm call together. Everything else (the
//! handshake, `tools/list`, Corral's own methods, tasks, requests with
//! `_meta`) goes to rmcp, which answers through the same writer.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use rmcp::RoleServer;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientRequest, JsonObject, JsonRpcMessage,
    JsonRpcRequest, ProtocolVersion, RequestId, ServerResult,
};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

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
    flag: AtomicBool,
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

/// Requests handed to rmcp and not yet answered, shared by the reader
/// thread and rmcp's side: reading stops while it is at the limit.
#[derive(Default)]
struct Unanswered {
    count: Mutex<usize>,
    answered: Condvar,
}

impl Unanswered {
    fn add(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    /// Saturating: an error answer to a frame rmcp rejected was never
    /// counted.
    fn answer(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.answered.notify_one();
    }

    /// Waits until fewer than `max` are unanswered, or the peer is gone.
    fn wait_below(&self, max: usize, gone: &Gone) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= max && !gone.is_gone() {
            n = self
                .answered
                .wait_timeout(n, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A request the reader thread answers itself, on its own thread.
pub trait InlineCalls: Send + Sync + 'static {
    /// Runs one `tools/call` to its end on the calling thread, which may
    /// block (the audit record, the tool); never called on an async worker.
    fn call_tool_inline(&self, request: CallToolRequestParams) -> CallToolResult;

    /// Called on the same thread once the kernel holds an inline call's
    /// whole answer, or before the reader waits for a peer that is not
    /// taking it, or once it could not be written: for the call's own
    /// bookkeeping that need not delay its answer but must not wait on the
    /// peer either (the broker writes the outcome record here).
    fn answered(&self) {}

    /// Called on the same thread once an inline call's answer is written,
    /// before the next frame is read: for work that must not delay an
    /// answer (the broker makes the next call's instance here).
    fn idle(&self) {}
}

/// What the reader and rmcp's side of one connection share.
struct Connection {
    /// Whole frames only: the reader thread and the writer thread each take
    /// the lock for one complete write.
    write: Mutex<UnixStream>,
    unanswered: Unanswered,
    /// Set when rmcp has answered `initialize` with a protocol version the
    /// hot path speaks: from then on the reader answers `tools/call` and
    /// `ping` itself.
    inline: AtomicBool,
    agent: Arc<str>,
}

impl Connection {
    /// Writes one or more whole frames. A peer that does not take them
    /// within the frame timeout (it does not read its answers) loses the
    /// connection: its socket is shut down, which also ends the reader.
    fn write(&self, frames: &[u8]) -> bool {
        self.write_then(frames, || ())
    }

    /// Writes `frames` like [`Connection::write`], and runs `then` as soon
    /// as the kernel holds all of them, or before waiting for a peer that
    /// is not reading, or once they could not be written: work for after
    /// an answer, which never waits on the peer.
    fn write_then(&self, frames: &[u8], then: impl FnOnce()) -> bool {
        let mut then = Some(then);
        let mut stream = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut sent = 0;
        let written = loop {
            if sent == frames.len() {
                break Ok(());
            }
            match send_now(&stream, &frames[sent..]) {
                Ok(Some(n)) => sent += n,
                // The peer's buffer is full: `then` first, then wait.
                Ok(None) => {
                    if let Some(then) = then.take() {
                        then();
                    }
                    break stream.write_all(&frames[sent..]);
                }
                Err(e) => break Err(e),
            }
        };
        let ok = match written {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(agent = %self.agent, error = %e, "closing: cannot write to the agent");
                let _ = stream.shutdown(Shutdown::Both);
                false
            }
        };
        drop(stream);
        if let Some(then) = then {
            then();
        }
        ok
    }

    /// Ends the connection both ways; the reader's read returns at once.
    fn shutdown(&self) {
        let stream = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let _ = stream.shutdown(Shutdown::Both);
    }

    fn write_message(&self, message: &TxJsonRpcMessage<RoleServer>) -> bool {
        self.write_message_then(message, || ())
    }

    /// [`Connection::write_message`], with `then` run as
    /// [`Connection::write_then`] runs it.
    fn write_message_then(
        &self,
        message: &TxJsonRpcMessage<RoleServer>,
        then: impl FnOnce(),
    ) -> bool {
        match serde_json::to_vec(message) {
            Ok(mut bytes) => {
                bytes.push(b'\n');
                self.write_then(&bytes, then)
            }
            Err(e) => {
                tracing::error!(agent = %self.agent, error = %e, "answer not serializable");
                then();
                false
            }
        }
    }

    fn write_error(&self, id: Value, code: i64, message: String) -> bool {
        let frame = json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": { "code": code, "message": message },
        });
        let mut bytes = frame.to_string().into_bytes();
        bytes.push(b'\n');
        self.write(&bytes)
    }
}

/// The connections a broker serves, so that it can end them: their
/// reader threads hold sessions (and through them the audit log), and
/// must be done before the host flushes the log and exits.
#[derive(Default)]
pub(crate) struct Live {
    connections: Mutex<Vec<Weak<Connection>>>,
}

impl Live {
    fn add(&self, connection: &Arc<Connection>) {
        let mut list = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|c| c.strong_count() > 0);
        list.push(Arc::downgrade(connection));
    }

    /// Shuts every connection down and waits up to `grace` for their
    /// threads to finish (a tool call in progress runs to its end).
    /// Returns how many were still running.
    pub(crate) fn close(&self, grace: Duration) -> usize {
        let list: Vec<Weak<Connection>> = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for c in list.iter().filter_map(Weak::upgrade) {
            c.shutdown();
        }
        let deadline = Instant::now() + grace;
        loop {
            let running = list.iter().filter(|c| c.strong_count() > 0).count();
            if running == 0 || Instant::now() >= deadline {
                return running;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The frames of one connection, read with deadlines and a size cap.
struct FrameReader {
    stream: UnixStream,
    buf: Box<[u8]>,
    /// `buf[start..end]` is read and not yet consumed.
    start: usize,
    end: usize,
    limits: FrameLimits,
    line: Vec<u8>,
    /// Discarding the rest of an oversized frame.
    discarding: bool,
    /// When the frame being read must be complete.
    frame_deadline: Option<Instant>,
}

/// How long the reader keeps looking for the agent's next frame before it
/// sleeps in `read`. An agent in a loop of calls sends its next request
/// a few tens of microseconds after its answer; a thread that slept in
/// between pays a wake-up on this machine that costs more than the call
/// itself, and runs that call on cold caches. The look yields the core
/// to any other thread that wants it, so it costs a busy machine little.
const LOOK_AHEAD: Duration = Duration::from_micros(100);

/// Readers looking ahead at once, across all connections. With more
/// connections busy than cores, a reader that looks takes a core from
/// one that has work, and each look is a system call and a yield: so at
/// most one reader fewer than there are cores looks, and the rest sleep
/// in `read` at once. A single busy agent (the case the look is for) is
/// always the one that looks.
static LOOKING: AtomicUsize = AtomicUsize::new(0);

fn may_look_ahead() -> Option<Looking> {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let max = *MAX.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .max(1)
    });
    LOOKING
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Looking)
}

/// A reader's place among [`LOOKING`], given back when its look ends.
struct Looking;

impl Drop for Looking {
    fn drop(&mut self) {
        LOOKING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Without blocking: `Some(n)` bytes sent, `None` if the peer's buffer
/// has no room. Never raises SIGPIPE.
fn send_now(stream: &UnixStream, buf: &[u8]) -> std::io::Result<Option<usize>> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the
        // whole call, and the descriptor stays open: `stream` is borrowed.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::WouldBlock => return Ok(None),
            std::io::ErrorKind::Interrupted => {}
            _ => return Err(e),
        }
    }
}

/// Without blocking: `Some(Ok(n))` read, `Some(Ok(0))` the end of the
/// stream, `None` nothing there yet.
fn recv_now(stream: &UnixStream, buf: &mut [u8]) -> Option<std::io::Result<usize>> {
    use std::os::fd::AsRawFd;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole
    // call, and the descriptor stays open: `stream` is borrowed.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n >= 0 {
        return Some(Ok(n as usize));
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => None,
        _ => Some(Err(e)),
    }
}

enum Step {
    Line,
    More,
    Oversized,
}

impl FrameReader {
    /// Reads more into the empty buffer: first a short look without
    /// sleeping, then a blocking read under the frame's or the idle
    /// deadline. `Ok(0)` is the end of the stream.
    fn fill(&mut self) -> Result<usize, String> {
        self.start = 0;
        self.end = 0;
        if let Some(_looking) = may_look_ahead() {
            let looking = Instant::now();
            loop {
                match recv_now(&self.stream, &mut self.buf) {
                    Some(Ok(n)) => {
                        self.end = n;
                        return Ok(n);
                    }
                    Some(Err(e)) => return Err(format!("read error: {e}")),
                    None if looking.elapsed() < LOOK_AHEAD => std::thread::yield_now(),
                    None => break,
                }
            }
        }
        let deadline = self
            .frame_deadline
            .unwrap_or_else(|| Instant::now() + self.limits.idle_timeout);
        // Built only when the deadline passes: this is every call's path.
        let expired = |frame_deadline: Option<Instant>, limits: &FrameLimits| match frame_deadline {
            Some(_) => format!(
                "frame not completed within {:?} of its first byte",
                limits.frame_timeout
            ),
            None => format!("idle for {:?}", limits.idle_timeout),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(expired(self.frame_deadline, &self.limits));
            }
            if let Err(e) = self.stream.set_read_timeout(Some(left)) {
                return Err(format!("cannot set a read deadline: {e}"));
            }
            match self.stream.read(&mut self.buf) {
                Ok(n) => {
                    self.end = n;
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(expired(self.frame_deadline, &self.limits));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read error: {e}")),
            }
        }
    }

    /// Reads one frame into `self.line`. `Ok(true)` is a line, `Ok(false)`
    /// an oversized frame now skipped, `Err` the end of the connection
    /// (with the reason for the log).
    fn read_frame(&mut self) -> Result<bool, String> {
        loop {
            if self.start == self.end {
                let n = self.fill()?;
                if n == 0 {
                    return Err("closed by the agent".into());
                }
            }
            let available = &self.buf[self.start..self.end];
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
            self.start += take;
            match step {
                Step::Line => return Ok(true),
                Step::Oversized => return Ok(false),
                Step::More => {}
            }
        }
    }
}

/// rmcp's side of a connection: the frames the reader thread hands over,
/// and answers written in order by the writer thread.
struct Forwarded {
    frames: mpsc::Receiver<RxJsonRpcMessage<RoleServer>>,
    out: Option<mpsc::Sender<Vec<u8>>>,
    connection: Arc<Connection>,
}

impl Transport<RoleServer> for Forwarded {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let out = self.out.clone();
        let connection = self.connection.clone();
        async move {
            let answers_a_request =
                matches!(item, JsonRpcMessage::Response(_) | JsonRpcMessage::Error(_));
            if let JsonRpcMessage::Response(r) = &item
                && let ServerResult::InitializeResult(init) = &r.result
            {
                // Newer versions carry per-request metadata that rmcp
                // checks; those sessions stay on rmcp's path throughout.
                let legacy = init.protocol_version < ProtocolVersion::V_2026_07_28;
                connection.inline.store(legacy, Ordering::Release);
            }
            let mut bytes = serde_json::to_vec(&item).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
            let closed =
                || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "connection closed");
            let result = match out {
                Some(out) => out.send(bytes).await.map_err(|_| closed()),
                None => Err(closed()),
            };
            if answers_a_request {
                connection.unanswered.answer();
            }
            result
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        self.frames.recv().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        // The writer finishes what is queued, then shuts the socket down.
        self.out = None;
        Ok(())
    }
}

/// Frames rmcp may queue per connection before its sends wait.
const OUTPUT_FRAMES: usize = 256;

/// Writes rmcp's answers; whatever else is queued goes out in the same
/// write. When rmcp closes, the connection ends.
fn write_frames(connection: Arc<Connection>, mut frames: mpsc::Receiver<Vec<u8>>) {
    let mut batch = Vec::new();
    while let Some(frame) = frames.blocking_recv() {
        batch.clear();
        batch.extend_from_slice(&frame);
        while let Ok(more) = frames.try_recv() {
            batch.extend_from_slice(&more);
        }
        if !connection.write(&batch) {
            return;
        }
    }
    connection.shutdown();
}

/// A `tools/call` the hot path may answer: nothing in it that rmcp must
/// interpret (metadata, task or multi-round input).
fn plain(params: &CallToolRequestParams) -> bool {
    params.meta.is_none() && params.input_responses.is_none() && params.request_state.is_none()
}

/// The frame of a plain `tools/call`, the one request the hot path
/// answers most, parsed straight into its parts. rmcp's message type is an
/// untagged enum of method-tagged enums, which serde parses by buffering
/// the frame and trying one variant after another; this costs one pass.
/// Unknown fields are refused, so anything with more in it (`_meta`, task
/// or multi-round input, or anything else) takes the full parse.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainCallFrame<'a> {
    #[serde(borrow)]
    jsonrpc: std::borrow::Cow<'a, str>,
    id: RequestId,
    #[serde(borrow)]
    method: std::borrow::Cow<'a, str>,
    params: PlainCallParams,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlainCallParams {
    name: String,
    #[serde(default)]
    arguments: Option<JsonObject>,
}

/// `Some` if `text` is exactly a plain `tools/call`; `None` sends it down
/// the full parse, which also makes any error answer.
fn plain_call(text: &[u8]) -> Option<(RequestId, CallToolRequestParams)> {
    let frame: PlainCallFrame = serde_json::from_slice(text).ok()?;
    if frame.jsonrpc != "2.0" || frame.method != "tools/call" {
        return None;
    }
    let params = CallToolRequestParams::new(frame.params.name);
    let params = match frame.params.arguments {
        Some(arguments) => params.with_arguments(arguments),
        None => params,
    };
    Some((frame.id, params))
}

/// Runs a plain `tools/call` on this thread and writes its answer.
fn answer_inline<H: InlineCalls>(
    connection: &Connection,
    handler: &H,
    id: RequestId,
    params: CallToolRequestParams,
) -> bool {
    let mut result = ServerResult::CallToolResult(handler.call_tool_inline(params));
    // The shape rmcp gives peers before 2026-07-28, the only ones this
    // path serves.
    result.strip_result_type_for_legacy_peer();
    result.strip_non_object_output_for_legacy_peer();
    connection.write_message_then(&JsonRpcMessage::response(result, id), || handler.answered())
}

/// The reader thread: frames in, hot-path answers out, the rest to rmcp.
fn read_frames<H: InlineCalls>(
    mut reader: FrameReader,
    connection: Arc<Connection>,
    handler: H,
    forward: mpsc::Sender<RxJsonRpcMessage<RoleServer>>,
    gone: Arc<Gone>,
) {
    let agent = connection.agent.clone();
    let max_unanswered = reader.limits.max_unanswered;
    let reason = loop {
        // Back-pressure: stop reading while too many requests wait.
        connection.unanswered.wait_below(max_unanswered, &gone);
        if forward.is_closed() {
            break "the MCP session ended".to_string();
        }
        match reader.read_frame() {
            Err(reason) => break reason,
            Ok(false) => {
                tracing::warn!(agent = %agent, limit = reader.limits.max_frame_bytes, "oversized frame discarded");
                let message = format!(
                    "frame larger than the broker's limit of {} bytes was discarded; send smaller arguments or raise limits.max_frame_bytes",
                    reader.limits.max_frame_bytes
                );
                if !connection.write_error(Value::Null, INVALID_REQUEST, message) {
                    break "cannot write".into();
                }
                continue;
            }
            Ok(true) => {}
        }
        let inline = connection.inline.load(Ordering::Acquire);
        let short = inline
            .then(|| plain_call(trim_line(&reader.line)))
            .flatten();
        if let Some((id, params)) = short {
            reader.line.clear();
            if !answer_inline(&connection, &handler, id, params) {
                break "cannot write".into();
            }
            handler.idle();
            continue;
        }
        let parsed = {
            let text = trim_line(&reader.line);
            (!text.is_empty()).then(|| classify(text))
        };
        reader.line.clear();
        let msg = match parsed {
            None => continue,
            Some(Classified::Message(msg)) => *msg,
            Some(Classified::Reject { id, code, message }) => {
                tracing::debug!(agent = %agent, code, %message, "malformed frame");
                if !connection.write_error(id, code, message) {
                    break "cannot write".into();
                }
                continue;
            }
        };
        let written = match msg {
            JsonRpcMessage::Request(JsonRpcRequest {
                id,
                request: ClientRequest::CallToolRequest(call),
                ..
            }) if inline && plain(&call.params) => {
                let written = answer_inline(&connection, &handler, id, call.params);
                if written {
                    handler.idle();
                }
                written
            }
            JsonRpcMessage::Request(JsonRpcRequest {
                id,
                request: ClientRequest::PingRequest(_),
                ..
            }) if inline => {
                connection.write_message(&JsonRpcMessage::response(ServerResult::empty(()), id))
            }
            other => {
                if matches!(other, JsonRpcMessage::Request(_)) {
                    connection.unanswered.add();
                }
                if forward.blocking_send(other).is_err() {
                    break "the MCP session ended".into();
                }
                true
            }
        };
        if !written {
            break "cannot write".into();
        }
    };
    tracing::debug!(agent = %agent, %reason, "closing MCP connection");
    gone.mark();
    // The session (and its audit handle) goes before this thread's hold on
    // the connection, which is what `Live::close` waits for. The socket
    // stays open for writing: an agent that half-closed after its last
    // request still gets rmcp's answers, and the writer shuts the socket
    // down when rmcp is done.
    drop(handler);
    drop(forward);
}

/// Serves MCP on one connection with `handler` until the peer leaves or a
/// limit ends it: the reader and writer threads, and rmcp's service for
/// what the hot path does not answer.
pub(crate) async fn serve_connection<H: ServerHandler + InlineCalls + Clone>(
    stream: tokio::net::UnixStream,
    limits: FrameLimits,
    handler: H,
    agent: Arc<str>,
    gone: Arc<Gone>,
    live: Option<&Live>,
) {
    let streams = stream
        .into_std()
        .and_then(|s| s.set_nonblocking(false).map(|()| s))
        .and_then(|s| {
            s.set_write_timeout(Some(limits.frame_timeout))?;
            Ok((s.try_clone()?, s))
        });
    let (read, write) = match streams {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%agent, error = %e, "cannot set up the connection");
            gone.mark();
            return;
        }
    };
    let connection = Arc::new(Connection {
        write: Mutex::new(write),
        unanswered: Unanswered::default(),
        inline: AtomicBool::new(false),
        agent: agent.clone(),
    });
    if let Some(live) = live {
        live.add(&connection);
    }
    let (forward, frames) = mpsc::channel(limits.max_unanswered + 16);
    let (out, answers) = mpsc::channel(OUTPUT_FRAMES);
    let reader = FrameReader {
        stream: read,
        buf: vec![0; 16 * 1024].into_boxed_slice(),
        start: 0,
        end: 0,
        limits,
        line: Vec::new(),
        discarding: false,
        frame_deadline: None,
    };
    let started = {
        let (c, h, g) = (connection.clone(), handler.clone(), gone.clone());
        std::thread::Builder::new()
            .name(format!("corral-conn-{agent}"))
            // Cedar's evaluator recurses; Wasm guests get their own stack
            // inside wasmtime's limit.
            .stack_size(8 << 20)
            .spawn(move || read_frames(reader, c, h, forward, g))
            .and_then(|_| {
                let c = connection.clone();
                std::thread::Builder::new()
                    .name(format!("corral-write-{agent}"))
                    .spawn(move || write_frames(c, answers))
            })
    };
    if let Err(e) = started {
        tracing::error!(%agent, error = %e, "cannot start the connection's threads");
        gone.mark();
        connection.shutdown();
        return;
    }
    let transport = Forwarded {
        frames,
        out: Some(out),
        connection,
    };
    // However rmcp's side ends (or is dropped with the runtime), dropping
    // the transport closes the writer's queue: the writer sends what rmcp
    // queued, then shuts the socket down, which ends the reader's read.
    // Shutting it down here instead could cut those last answers off.
    match rmcp::serve_server(handler, transport).await {
        Ok(running) => {
            let _ = running.waiting().await;
        }
        Err(e) => tracing::debug!(%agent, error = %e, "MCP session ended before initialize"),
    }
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
    match serde_json::from_value::<RxJsonRpcMessage<RoleServer>>(value) {
        Ok(msg) => Classified::Message(Box::new(msg)),
        Err(e) => reject(format!("invalid request: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_tools_call_takes_the_short_parse() {
        let (id, params) = plain_call(
            br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}"#,
        )
        .expect("a plain call");
        assert_eq!(id, RequestId::Number(7));
        assert_eq!(params.name, "echo");
        assert_eq!(params.arguments.expect("arguments")["message"], "hi");
        assert!(params.meta.is_none());

        // Any field order, a string id, no arguments.
        let (id, params) = plain_call(
            br#"{"params":{"name":"echo"},"method":"tools/call","id":"a","jsonrpc":"2.0"}"#,
        )
        .expect("a plain call");
        assert_eq!(id, RequestId::String("a".into()));
        assert!(params.arguments.is_none());

        for text in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"progressToken":1}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","task":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","requestState":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"extra":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":[1]}}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/call","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}"#,
        ] {
            assert!(plain_call(text.as_bytes()).is_none(), "{text}");
        }
    }

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
