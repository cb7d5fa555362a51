//! A lean closed-loop MCP client for benchmarks, over the broker's socket
//! or through the stdio bridge.

use std::io::Write;
use std::path::Path;

/// A lean closed-loop MCP client for the calls measured: each request is
/// formatted into one reused buffer and each answer parsed for its id and
/// `isError` alone (every byte is still read and parsed as JSON). The
/// tests' client (`McpClient`) builds and parses a JSON tree per message;
/// with 8 of them on two cores that was about a third of a core taken
/// from the broker, in the bare echo's row and the broker's alike.
pub struct LoadClient {
    reader: std::io::BufReader<Box<dyn std::io::Read + Send>>,
    writer: Box<dyn Write + Send>,
    next_id: u64,
    request: Vec<u8>,
    line: String,
    /// The stdio bridge the client speaks through, if it does.
    bridge: Option<std::process::Child>,
}

impl Drop for LoadClient {
    fn drop(&mut self) {
        if let Some(bridge) = &mut self.bridge {
            let _ = bridge.kill();
            let _ = bridge.wait();
        }
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    id: u64,
    result: Option<AnswerResult>,
}

#[derive(serde::Deserialize)]
struct AnswerResult {
    #[serde(rename = "isError", default)]
    is_error: bool,
}

impl LoadClient {
    pub fn ready(socket: &Path) -> LoadClient {
        let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
        Self::initialized(
            Box::new(stream.try_clone().unwrap()),
            Box::new(stream),
            None,
        )
    }

    /// The same, through `corral-agent mcp`: the stdio bridge an MCP client
    /// that speaks only stdio uses (in a container, or `corral mcp bridge`
    /// on the host, which shares its code).
    pub fn through_bridge(socket: &Path) -> LoadClient {
        let mut child = std::process::Command::new(crate::agent_binary())
            .arg("--socket")
            .arg(socket)
            .arg("mcp")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start corral-agent mcp (cargo xtask build-agent)");
        let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
        Self::initialized(Box::new(stdout), Box::new(stdin), Some(child))
    }

    fn initialized(
        read: Box<dyn std::io::Read + Send>,
        write: Box<dyn Write + Send>,
        bridge: Option<std::process::Child>,
    ) -> LoadClient {
        use std::io::BufRead;
        let mut c = LoadClient {
            reader: std::io::BufReader::new(read),
            writer: write,
            next_id: 0,
            request: Vec::with_capacity(256),
            line: String::with_capacity(1024),
            bridge,
        };
        c.writer
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},\"clientInfo\":{\"name\":\"corral-bench\",\"version\":\"0\"}}}\n")
            .unwrap();
        c.reader.read_line(&mut c.line).unwrap();
        assert!(c.line.contains("\"result\""), "initialize: {}", c.line);
        c.writer
            .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
            .unwrap();
        c
    }

    /// An MCP `ping`; its answer's line.
    pub fn ping(&mut self) -> String {
        use std::io::BufRead;
        self.next_id += 1;
        writeln!(
            self.writer,
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"ping\"}}",
            self.next_id
        )
        .unwrap();
        self.line.clear();
        self.reader.read_line(&mut self.line).unwrap();
        self.line.clone()
    }

    /// One `tools/call` of echo; panics unless it succeeded.
    pub fn echo(&mut self) {
        self.call(r#"{"name":"echo","arguments":{"message":"hello"}}"#, false);
    }

    /// One `tools/call` with `params`; panics unless it failed exactly when
    /// `denied` says it must.
    pub fn call(&mut self, params: &str, denied: bool) {
        use std::io::BufRead;
        self.next_id += 1;
        self.request.clear();
        writeln!(
            self.request,
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"tools/call\",\"params\":{params}}}",
            self.next_id
        )
        .unwrap();
        self.writer.write_all(&self.request).unwrap();
        self.line.clear();
        self.reader.read_line(&mut self.line).unwrap();
        let answer: Answer = serde_json::from_str(&self.line)
            .unwrap_or_else(|e| panic!("not an answer ({e}): {}", self.line));
        assert!(
            answer.id == self.next_id && answer.result.is_some_and(|r| r.is_error == denied),
            "call {} did not end as expected (denied: {denied}): {}",
            self.next_id,
            self.line
        );
    }
}
