//! What the broker bench needs to measure the broker's wire alone: its
//! framing and limits around a handler of the bench's own, with no policy
//! or audit. Built only with the `bench` feature.

use std::sync::Arc;

use rmcp::ServerHandler;
use tokio::net::UnixStream;

use crate::broker::frame_limits;
use crate::limits::BrokerLimits;
use crate::serve::{InlineCalls, serve_connection};

/// Serves MCP with any `handler` over the broker's own framing and limits.
/// `handler` answers a plain `tools/call` on the connection's thread, as
/// the broker's own session does.
pub async fn serve_with_limits<H: ServerHandler + InlineCalls + Clone>(
    stream: UnixStream,
    limits: &BrokerLimits,
    handler: H,
) {
    serve_connection(
        stream,
        frame_limits(limits),
        handler,
        Arc::from("bench"),
        Default::default(),
        None,
    )
    .await;
}
