//! rmcp's side of a connection: a `Transport` over the frames the reader
//! thread hands on and the writer thread's queue, which also tells the
//! reader when the handshake allows the hot path.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rmcp::RoleServer;
use rmcp::model::{JsonRpcMessage, ProtocolVersion, ServerResult};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::sync::mpsc;

use crate::connection::Connection;

/// rmcp's side of a connection: the frames the reader thread hands over,
/// and answers written in order by the writer thread.
pub(crate) struct Forwarded {
    pub frames: mpsc::Receiver<RxJsonRpcMessage<RoleServer>>,
    pub out: Option<mpsc::Sender<Vec<u8>>>,
    pub connection: Arc<Connection>,
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
