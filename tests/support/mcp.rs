//! A small MCP client that speaks the broker's wire format by hand, so
//! tests can also send what no well-behaved client would.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

pub struct McpClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: i64,
    /// Responses that arrived before the one being waited for: the broker
    /// answers concurrent requests in completion order.
    early: std::collections::HashMap<i64, Value>,
}

impl McpClient {
    pub fn connect(socket: &Path) -> std::io::Result<McpClient> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(McpClient {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            next_id: 0,
            early: Default::default(),
        })
    }

    /// Connects and completes the `initialize` handshake.
    pub fn ready(socket: &Path) -> McpClient {
        let mut c = McpClient::connect(socket)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
        let init = c.initialize("2025-11-25");
        assert!(init.get("result").is_some(), "initialize failed: {init}");
        c
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.writer.set_read_timeout(Some(timeout)).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    pub fn send(&mut self, message: &Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.send_raw(line.as_bytes()).expect("write to the broker");
    }

    /// The next message, or `None` when the broker closed the connection
    /// (or the read timed out).
    pub fn read_message(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("broker sent non-JSON {line:?}: {e}")),
            ),
        }
    }

    /// Sends a request and returns the whole response message, skipping
    /// notifications.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.start(method, params);
        self.response(id)
    }

    /// Sends a request without waiting; returns its id.
    pub fn start(&mut self, method: &str, params: Value) -> i64 {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        id
    }

    pub fn response(&mut self, id: i64) -> Value {
        if let Some(msg) = self.early.remove(&id) {
            return msg;
        }
        loop {
            let msg = self
                .read_message()
                .unwrap_or_else(|| panic!("connection closed waiting for response {id}"));
            match msg.get("id").and_then(Value::as_i64) {
                Some(got) if got == id => return msg,
                Some(got) if msg.get("method").is_none() => {
                    self.early.insert(got, msg);
                }
                _ => assert!(
                    msg.get("method").is_some(),
                    "unexpected message while waiting for {id}: {msg}"
                ),
            }
        }
    }

    pub fn initialize(&mut self, version: &str) -> Value {
        let resp = self.request(
            "initialize",
            json!({
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "corral-test-client", "version": "0"},
            }),
        );
        if resp.get("result").is_some() {
            self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        }
        resp
    }

    /// `tools/call`; returns the `result` object (panics on a JSON-RPC error).
    pub fn call_tool(&mut self, name: &str, arguments: Value) -> Value {
        let resp = self.request("tools/call", json!({"name": name, "arguments": arguments}));
        resp.get("result")
            .cloned()
            .unwrap_or_else(|| panic!("tools/call {name} failed: {resp}"))
    }

    /// Tool names from `tools/list`, sorted.
    pub fn list_tools(&mut self) -> Vec<String> {
        let resp = self.request("tools/list", json!({}));
        let mut names: Vec<String> = resp["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("tools/list: {resp}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap_or_default().to_string())
            .collect();
        names.sort();
        names
    }
}

/// The text of a `tools/call` result's first content block.
pub fn result_text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn is_error(result: &Value) -> bool {
    result["isError"] == json!(true)
}
