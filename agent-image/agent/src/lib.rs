//! The agent side of the broker socket.
//!
//! Inside a container an agent sees one Unix socket, mounted at
//! [`DEFAULT_SOCKET`]. [`bridge`] joins it to stdio, so any MCP client
//! configured with a stdio server command uses Corral's tools unchanged;
//! [`Client`] is a minimal synchronous MCP client for scripts and for the
//! host's `corral mcp`. No async runtime and no TLS: this crate must stay
//! small enough to build as a static `x86_64-unknown-linux-musl` binary for
//! a `FROM scratch` image.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

pub mod run;

/// Where the broker's socket directory is mounted in an agent container.
pub const DEFAULT_SOCKET: &str = "/run/corral/mcp.sock";

/// Exit codes shared by `corral-agent` and the host's `corral` CLI.
pub mod exit {
    /// The call succeeded.
    pub const OK: u8 = 0;
    /// The call failed (the tool's error, a trap, the host).
    pub const FAILED: u8 = 1;
    // 2 is clap's usage error.
    /// A policy denied it.
    pub const DENIED: u8 = 3;
    /// No such tool, or input that does not fit its schema.
    pub const INVALID_INPUT: u8 = 4;
    /// A limit was broken (rate, time, memory, output).
    pub const LIMIT: u8 = 5;
    /// Only `@approval` permits allow it: it runs once a person approves
    /// (`corral policy check`).
    pub const ASKS: u8 = 6;
}

/// Why talking to the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be connected.
    #[error(
        "cannot connect to the broker at {socket}: {source}; is the broker serving this agent, and is its socket directory mounted?"
    )]
    Connect {
        /// The socket's path.
        socket: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("broker connection: {0}")]
    Io(#[from] std::io::Error),
    /// The broker closed the connection.
    #[error("the broker closed the connection")]
    Closed,
    /// The broker's answer was not what MCP says.
    #[error("the broker sent something unexpected: {0}")]
    Protocol(String),
}

/// A tool call's result, as the broker reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    /// Whether the call failed or was refused.
    pub is_error: bool,
    /// The first text content block: the output, or the one-line reason.
    pub text: String,
    /// For errors, the broker's class: `denied`, `invalid-input`,
    /// `unknown-tool`, `rate-limited`, `timed-out`, `limit-exceeded`, …
    pub class: Option<String>,
    /// For denials, the policies that decided.
    pub policy_ids: Vec<String>,
}

impl ToolResult {
    /// The exit code (`exit`) for this result.
    pub fn exit_code(&self) -> u8 {
        if !self.is_error {
            return exit::OK;
        }
        match self.class.as_deref() {
            Some("denied") => exit::DENIED,
            Some("invalid-input" | "unknown-tool") => exit::INVALID_INPUT,
            Some("limit-exceeded") => exit::LIMIT,
            _ => exit::FAILED,
        }
    }
}

/// A synchronous MCP session over the broker socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: i64,
}

impl Client {
    /// Connects and completes the `initialize` handshake.
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
            socket: socket.to_path_buf(),
            source,
        })?;
        // The broker's own call timeout is 30 s by default; this only
        // guards against a broker that stopped answering altogether.
        stream.set_read_timeout(Some(Duration::from_secs(300)))?;
        let mut client = Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            next_id: 0,
        };
        let init = client.request(
            "initialize",
            json!({
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "corral-agent", "version": env!("CARGO_PKG_VERSION")},
            }),
        )?;
        if let Some(error) = init.get("error") {
            return Err(ClientError::Protocol(format!(
                "initialize refused: {error}"
            )));
        }
        client.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(client)
    }

    fn send(&mut self, message: &Value) -> Result<(), ClientError> {
        let mut line = message.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        Ok(())
    }

    /// Sends a request; returns the whole response message (`result` or
    /// `error`), skipping notifications.
    pub fn request(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(ClientError::Closed);
            }
            let message: Value = serde_json::from_str(&line)
                .map_err(|e| ClientError::Protocol(format!("a frame that is not JSON ({e})")))?;
            if message.get("id") == Some(&json!(id)) {
                return Ok(message);
            }
            if message.get("method").is_none() {
                return Err(ClientError::Protocol(message.to_string()));
            }
        }
    }

    /// `(name, description)` of each tool this agent may call.
    pub fn list_tools(&mut self) -> Result<Vec<(String, String)>, ClientError> {
        let response = self.request("tools/list", json!({}))?;
        let tools = response["result"]["tools"]
            .as_array()
            .ok_or_else(|| ClientError::Protocol(format!("tools/list: {response}")))?;
        Ok(tools
            .iter()
            .map(|t| {
                let field = |k: &str| t[k].as_str().unwrap_or_default().to_string();
                (field("name"), field("description"))
            })
            .collect())
    }

    /// Calls `tool` with `arguments` (a JSON object).
    pub fn call_tool(&mut self, tool: &str, arguments: Value) -> Result<ToolResult, ClientError> {
        let response = self.request("tools/call", json!({"name": tool, "arguments": arguments}))?;
        if let Some(error) = response.get("error") {
            return Err(ClientError::Protocol(format!("tools/call {tool}: {error}")));
        }
        let result = &response["result"];
        Ok(ToolResult {
            is_error: result["isError"] == json!(true),
            text: result["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            class: result["structuredContent"]["error"]
                .as_str()
                .map(str::to_string),
            policy_ids: result["structuredContent"]["policy_ids"]
                .as_array()
                .map(|ids| {
                    ids.iter()
                        .filter_map(|i| i.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// Copies `input` to the broker and the broker's bytes to `output` until
/// the broker closes the connection. Frames pass through untouched: the
/// broker does all the checking.
pub fn bridge(
    socket: &Path,
    mut input: impl Read + Send + 'static,
    mut output: impl Write,
) -> Result<(), ClientError> {
    let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        socket: socket.to_path_buf(),
        source,
    })?;
    let mut to_broker = stream.try_clone()?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut input, &mut to_broker);
        // The client closed its side: let the broker see the end of input.
        let _ = to_broker.shutdown(std::net::Shutdown::Write);
    });
    let mut from_broker = stream;
    // Flushed per read, so a response is never held back in a buffer.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from_broker.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        output.write_all(&buf[..n])?;
        output.flush()?;
    }
}
