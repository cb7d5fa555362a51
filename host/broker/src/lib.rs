//! Corral's broker: every agent's only way out.
//!
//! Each agent gets its own Unix socket, in its own directory meant to be
//! bind-mounted into its container: the directory is the host's (mode 0710,
//! the agent's group may only enter it), the socket the agent's (0600), so
//! the agent can connect but not create, rename or remove anything there. The broker knows who is
//! calling from the listener the connection arrived on: there are no
//! tokens to steal or forge.
//!
//! On each socket it speaks MCP (JSON-RPC 2.0, one message per line, as in
//! the stdio transport) through rmcp, over a framing layer of its own
//! ([`frame`]) that enforces frame size, read deadlines and back-pressure.
//! Each connection has its own reader thread, which answers the hot path
//! (`tools/call`, `ping`) itself once rmcp has made the handshake, so a
//! call crosses no thread boundary between its request and its answer.
//!
//! A `tools/call` takes this path ([`session`]):
//! rate limit → Cedar request (agent, the tool's action, `context.input`,
//! session counters) → decision → audit record (durable per the log's mode)
//! → the tool runs in `corral-tools` under [`gate::AuditedGate`], which
//! authorizes and records each file, HTTP and secret use in turn → outcome
//! record → the MCP result. A denial is an MCP tool error result
//! (`isError: true`) naming the agent, the tool, the deciding policies and
//! the next step.

#[cfg(feature = "bench")]
mod bench;
mod blocking;
mod broker;
mod call_observer;
mod connection;
mod custom;
mod frame_reader;
mod gate;
mod jsonrpc;
mod limits;
mod nonblocking;
mod process;
mod rmcp_bridge;
mod serve;
mod services;
mod session;
mod socket_dir;
mod state;

#[cfg(feature = "bench")]
pub use bench::serve_with_limits;
pub use broker::{AgentEndpoint, AgentSpec, Broker, BrokerBuilder, BrokerError, SOCKET_NAME};
pub use call_observer::CallObserver;
pub use limits::BrokerLimits;
pub use process::disable_transparent_huge_pages;
#[cfg(feature = "bench")]
pub use serve::{InlineAnswer, InlineCalls};
pub use services::{Inbound, Mailbox, Models, NotDelivered, TurnLimits};
