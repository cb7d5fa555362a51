//! One connection's shared ends and the broker's registry of them: the
//! writer side (whole frames only, never waiting on a peer that does not
//! read), the count of requests rmcp has not answered, the mark that the
//! peer is gone, and the list `Broker::shutdown` closes.

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use rmcp::RoleServer;
use rmcp::service::TxJsonRpcMessage;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

use crate::nonblocking::send_now;

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
pub(crate) struct Unanswered {
    count: Mutex<usize>,
    answered: Condvar,
}

impl Unanswered {
    pub(crate) fn add(&self) {
        *self.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
    }

    /// Saturating: an error answer to a frame rmcp rejected was never
    /// counted.
    pub(crate) fn answer(&self) {
        let mut n = self.count.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.answered.notify_one();
    }

    /// Waits until fewer than `max` are unanswered, or the peer is gone.
    pub(crate) fn wait_below(&self, max: usize, gone: &Gone) {
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

/// What the reader and rmcp's side of one connection share.
pub(crate) struct Connection {
    /// Whole frames only: the reader thread and the writer thread each take
    /// the lock for one complete write.
    write: Mutex<UnixStream>,
    pub unanswered: Unanswered,
    /// Set when rmcp has answered `initialize` with a protocol version the
    /// hot path speaks: from then on the reader answers `tools/call` and
    /// `ping` itself.
    pub inline: AtomicBool,
    pub agent: Arc<str>,
}

impl Connection {
    /// A connection writing to `stream`, for `agent`'s log lines.
    pub(crate) fn new(stream: UnixStream, agent: Arc<str>) -> Connection {
        Connection {
            write: Mutex::new(stream),
            unanswered: Unanswered::default(),
            inline: AtomicBool::new(false),
            agent,
        }
    }

    /// Writes one or more whole frames. A peer that does not take them
    /// within the frame timeout (it does not read its answers) loses the
    /// connection: its socket is shut down, which also ends the reader.
    pub(crate) fn write(&self, frames: &[u8]) -> bool {
        self.write_then(frames, || ())
    }

    /// Writes `frames` like [`Connection::write`], and runs `then` as soon
    /// as the kernel holds all of them, or before waiting for a peer that
    /// is not reading, or once they could not be written: work for after
    /// an answer, which never waits on the peer.
    pub(crate) fn write_then(&self, frames: &[u8], then: impl FnOnce()) -> bool {
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
    pub(crate) fn shutdown(&self) {
        let stream = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let _ = stream.shutdown(Shutdown::Both);
    }

    pub(crate) fn write_message(&self, message: &TxJsonRpcMessage<RoleServer>) -> bool {
        self.write_message_then(message, || ())
    }

    /// [`Connection::write_message`], with `then` run as
    /// [`Connection::write_then`] runs it.
    pub(crate) fn write_message_then(
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

    pub(crate) fn write_error(&self, id: Value, code: i64, message: String) -> bool {
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
    pub(crate) fn add(&self, connection: &Arc<Connection>) {
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

/// Frames rmcp may queue per connection before its sends wait.
pub(crate) const OUTPUT_FRAMES: usize = 256;

/// Writes rmcp's answers; whatever else is queued goes out in the same
/// write. When rmcp closes, the connection ends.
pub(crate) fn write_frames(connection: Arc<Connection>, mut frames: mpsc::Receiver<Vec<u8>>) {
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
