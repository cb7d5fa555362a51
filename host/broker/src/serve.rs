//! One connection's reader thread: frames in, the hot path's answers out,
//! everything else handed to rmcp.
//!
//! The wire is newline-delimited JSON-RPC 2.0 (MCP's stdio framing) over
//! one Unix stream, with the limits rmcp's own transport does not enforce
//! ([`crate::frame_reader`]). Once the handshake has been made through
//! rmcp, the reader answers a plain `tools/call` and `ping` itself: the
//! decision, its record, the tool run and the answer happen on the thread
//! that read the request. rmcp's service hands every request through three
//! tasks (reader loop, handler, writer), and each hand-off between threads
//! costs more than the policy decision and the Wasm call together
//! (`tests/benches/broker.rs` measures both paths). Everything else (the
//! handshake, `tools/list`, Corral's own methods, tasks, requests with
//! `_meta`) goes to rmcp, which answers through the same writer.

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rmcp::RoleServer;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientRequest, JsonRpcMessage, JsonRpcRequest,
    RequestId, ServerResult,
};
use rmcp::service::RxJsonRpcMessage;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::connection::{Connection, Gone, Live, OUTPUT_FRAMES, write_frames};
use crate::frame_reader::{Frame, FrameLimits, FrameReader};
use crate::jsonrpc::{Classified, INVALID_REQUEST, classify, plain, plain_call, trim_line};
use crate::rmcp_bridge::Forwarded;

/// How the reader's handler answered a plain `tools/call`.
pub enum InlineAnswer {
    /// The answer, ready to write.
    Now(CallToolResult),
    /// The call waits on something slow (a person's approval): the reader
    /// runs this on a thread of its own, writes what it returns, and reads
    /// on meanwhile, so the connection's other calls do not wait behind it.
    Later(Box<dyn FnOnce() -> CallToolResult + Send>),
}

/// A request the reader thread answers itself, on its own thread.
pub trait InlineCalls: Send + Sync + 'static {
    /// Runs one `tools/call` on the calling thread, which may block (the
    /// audit record, the tool); never called on an async worker.
    fn call_tool_inline(&self, request: CallToolRequestParams) -> InlineAnswer;

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

/// The answer as this path writes it: the shape rmcp gives peers before
/// 2026-07-28, the only ones this path serves.
fn legacy_answer(
    result: CallToolResult,
    id: RequestId,
) -> rmcp::service::TxJsonRpcMessage<RoleServer> {
    let mut result = ServerResult::CallToolResult(result);
    result.strip_result_type_for_legacy_peer();
    result.strip_non_object_output_for_legacy_peer();
    JsonRpcMessage::response(result, id)
}

/// Runs a plain `tools/call` on this thread and writes its answer, or
/// hands a call that waits to a thread of its own.
fn answer_inline<H: InlineCalls>(
    connection: &Arc<Connection>,
    handler: &H,
    id: RequestId,
    params: CallToolRequestParams,
) -> bool {
    let finish = match handler.call_tool_inline(params) {
        InlineAnswer::Now(result) => {
            return connection
                .write_message_then(&legacy_answer(result, id), || handler.answered());
        }
        InlineAnswer::Later(finish) => finish,
    };
    // Counted like a request rmcp holds: the reader stops taking more
    // while too many wait.
    connection.unanswered.add();
    let waiter = connection.clone();
    let waiting_id = id.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("corral-ask-{}", connection.agent))
        .spawn(move || {
            let result = finish();
            waiter.write_message(&legacy_answer(result, waiting_id));
            waiter.unanswered.answer();
        });
    if let Err(e) = spawned {
        tracing::error!(agent = %connection.agent, error = %e, "cannot start a thread for a call that waits for approval");
        connection.unanswered.answer();
        let text = format!(
            "agent `{}`: the broker could not start a thread for a call that waits for approval ({e}); retry later",
            connection.agent
        );
        let failed = CallToolResult::error(vec![rmcp::model::ContentBlock::text(text)]);
        return connection.write_message(&legacy_answer(failed, id));
    }
    true
}

/// The reader thread: frames in, hot-path answers out, the rest to rmcp.
fn read_frames<H: InlineCalls>(
    mut reader: FrameReader<UnixStream>,
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
            Err(ended) => break ended.to_string(),
            Ok(Frame::Oversized) => {
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
            Ok(Frame::Line) => {}
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
            }) if inline && plain(&call) => {
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
    let connection = Arc::new(Connection::new(write, agent.clone()));
    if let Some(live) = live {
        live.add(&connection);
    }
    let (forward, frames) = mpsc::channel(limits.max_unanswered + 16);
    let (out, answers) = mpsc::channel(OUTPUT_FRAMES);
    let reader = FrameReader::new(read, limits);
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
