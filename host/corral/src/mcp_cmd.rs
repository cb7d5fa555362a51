//! `corral mcp …`: a minimal MCP client for an agent's broker socket, to
//! see what an agent sees.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::exit;

#[derive(Subcommand)]
pub enum McpCmd {
    /// List the tools the agent behind SOCKET may call.
    Tools {
        /// The agent's broker socket.
        #[arg(long)]
        socket: PathBuf,
    },
    /// Bridge stdin/stdout to SOCKET, so an MCP client configured with a
    /// stdio server command talks to the broker unchanged.
    Bridge {
        #[arg(long)]
        socket: PathBuf,
    },
    /// Call one tool as the agent behind SOCKET; print its result.
    ///
    /// Exit codes: 0 success, 1 the tool failed, 3 denied, 4 invalid input
    /// or unknown tool, 5 a limit was exceeded.
    Call {
        #[arg(long)]
        socket: PathBuf,
        tool: String,
        /// The arguments, a JSON object.
        #[arg(default_value = "{}")]
        arguments: String,
    },
}

struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next: i64,
}

impl Client {
    fn connect(socket: &Path) -> Result<Client> {
        let stream = UnixStream::connect(socket).with_context(|| {
            format!(
                "cannot connect to {}; is `corral broker` serving this agent?",
                socket.display()
            )
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut c = Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            next: 0,
        };
        let init = c.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "corral-mcp", "version": env!("CARGO_PKG_VERSION")}}),
        )?;
        if init.get("error").is_some() {
            bail!("the broker refused to initialize: {}", init["error"]);
        }
        c.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))?;
        Ok(c)
    }

    fn send(&mut self, msg: &Value) -> Result<()> {
        self.writer.write_all(format!("{msg}\n").as_bytes())?;
        Ok(())
    }

    fn request(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next += 1;
        let id = self.next;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the broker closed the connection");
            }
            let msg: Value =
                serde_json::from_str(&line).context("the broker sent a malformed frame")?;
            if msg.get("id") == Some(&json!(id)) {
                return Ok(msg);
            }
            if msg.get("method").is_none() {
                bail!("the broker answered something else: {msg}");
            }
        }
    }
}

/// Copies bytes both ways until the broker closes the connection. Frames
/// pass through untouched: the broker does all the checking.
fn bridge(socket: &Path) -> Result<u8> {
    let stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot connect to {}; is `corral broker` serving this agent?",
            socket.display()
        )
    })?;
    let mut to_broker = stream.try_clone()?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_broker);
        // The client closed stdin: let the broker see the end of input.
        let _ = to_broker.shutdown(std::net::Shutdown::Write);
    });
    let mut from_broker = stream;
    let mut out = std::io::stdout().lock();
    // Flush per read so a response is never held back in a buffer.
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = std::io::Read::read(&mut from_broker, &mut buf)?;
        if n == 0 {
            return Ok(0);
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}

pub fn run(cmd: McpCmd) -> Result<u8> {
    match cmd {
        McpCmd::Bridge { socket } => bridge(&socket),
        McpCmd::Tools { socket } => {
            let mut c = Client::connect(&socket)?;
            let resp = c.request("tools/list", json!({}))?;
            let Some(tools) = resp["result"]["tools"].as_array() else {
                bail!("tools/list failed: {resp}");
            };
            for t in tools {
                println!(
                    "{:<14} {}",
                    t["name"].as_str().unwrap_or("?"),
                    t["description"].as_str().unwrap_or("")
                );
            }
            Ok(0)
        }
        McpCmd::Call {
            socket,
            tool,
            arguments,
        } => {
            let args: Value = serde_json::from_str(&arguments)
                .with_context(|| format!("the arguments for `{tool}` are not JSON"))?;
            if !args.is_object() {
                bail!("the arguments for `{tool}` must be a JSON object, got {args}");
            }
            let mut c = Client::connect(&socket)?;
            let resp = c.request("tools/call", json!({"name": tool, "arguments": args}))?;
            if let Some(err) = resp.get("error") {
                bail!("tools/call {tool}: JSON-RPC error {err}");
            }
            let result = &resp["result"];
            let text = result["content"][0]["text"].as_str().unwrap_or_default();
            if result["isError"] == json!(true) {
                eprintln!("{text}");
                return Ok(match result["structuredContent"]["error"].as_str() {
                    Some("denied") => exit::DENIED,
                    Some("invalid-input" | "unknown-tool") => exit::INVALID_INPUT,
                    Some(c) if c.starts_with("limit") => exit::LIMIT,
                    _ => exit::FAILED,
                });
            }
            println!("{text}");
            Ok(0)
        }
    }
}
