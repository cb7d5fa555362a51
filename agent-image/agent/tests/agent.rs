//! `corral-agent` as a script inside a container would run it, against a
//! real broker on a real socket.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use corral_tests::broker::{BrokerOptions, TestBroker};
use serde_json::{Value, json};

fn agent(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral-agent"))
        .env("CORRAL_SOCKET", socket)
        .args(args)
        .output()
        .expect("run corral-agent")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn tools_and_calls_with_exit_codes_that_tell_outcomes_apart() {
    let b = TestBroker::start(BrokerOptions::default());
    let reporter = b.socket("reporter");

    let out = agent(&reporter, &["tools"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["echo", "files_list", "files_read", "files_write"]);

    let out = agent(&reporter, &["call", "echo", r#"{"message":"inside"}"#]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        serde_json::from_str::<Value>(&text(&out.stdout)).unwrap(),
        json!({"message": "inside"})
    );

    let out = agent(
        &reporter,
        &["call", "http_get", r#"{"url":"https://api.github.com/"}"#],
    );
    assert_eq!(out.status.code(), Some(3), "denied: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with("denied: agent `reporter`"),
        "{}",
        text(&out.stderr)
    );

    let out = agent(
        &reporter,
        &["call", "files_write", r#"{"path":7,"content":"x"}"#],
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let out = agent(&reporter, &["call", "echo", "[1]"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("must be a JSON object"));
}

#[test]
fn a_missing_socket_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent(&dir.path().join("nope.sock"), &["tools"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot connect to the broker") && err.contains("mounted"),
        "{err}"
    );
}

#[test]
fn the_mcp_bridge_carries_a_whole_session() {
    let b = TestBroker::start(BrokerOptions::default());
    let mut child = Command::new(env!("CARGO_BIN_EXE_corral-agent"))
        .args(["mcp", "--socket"])
        .arg(b.socket("assistant"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let session = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "bridged"}}}),
    ];
    let mut stdin = child.stdin.take().unwrap();
    for m in &session {
        writeln!(stdin, "{m}").unwrap();
    }
    drop(stdin); // end of input: the broker closes, the bridge exits
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let replies: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0]["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(replies[1]["id"], 2);
    assert_eq!(
        replies[1]["result"]["structuredContent"]["message"],
        "bridged"
    );
}
