//! The `corral` binary, run as a user would: real components, real files,
//! a real loopback server; exit codes and messages checked.

use std::path::Path;
use std::process::{Command, Output};

use corral_tests::{LoopbackServer, component_path};

fn corral(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        // Keep the test's artifact cache private to it.
        .env("XDG_CACHE_HOME", cache)
        .env_remove("RUST_LOG")
        .output()
        .expect("run corral")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn p(name: &str) -> String {
    component_path(name).display().to_string()
}

#[test]
fn inspect_shows_tools_capabilities_and_digest() {
    let cache = tempfile::tempdir().unwrap();
    let out = corral(&["tool", "inspect", &p("files")], cache.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let digest = corral_tools::file_sha256(&component_path("files")).unwrap();
    assert!(stdout.contains(&digest), "{stdout}");
    for tool in ["files_read", "files_write", "files_list"] {
        assert!(stdout.contains(&format!("tool {tool}")), "{stdout}");
    }
    assert!(stdout.contains("workspace write"), "{stdout}");

    let out = corral(&["tool", "inspect", "--json", &p("http-get")], cache.path());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["tools"][0]["name"], "http_get");
    assert_eq!(doc["tools"][0]["input_schema"]["required"][0], "url");
    assert_eq!(doc["sha256"].as_str().map(str::len), Some(64));
}

#[test]
fn call_prints_the_json_result() {
    let cache = tempfile::tempdir().unwrap();
    let out = corral(
        &["tool", "call", &p("echo"), "echo", r#"{"message":"hi"}"#],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["message"], "hi");
}

#[test]
fn call_with_a_workspace_grant_writes_only_there() {
    let cache = tempfile::tempdir().unwrap();
    let ws = tempfile::tempdir().unwrap();
    let wsp = ws.path().display().to_string();
    let out = corral(
        &[
            "tool",
            "call",
            &p("files"),
            "files_write",
            r#"{"path":"a/b.txt","content":"hey"}"#,
            "--workspace",
            &wsp,
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(ws.path().join("a/b.txt")).unwrap(),
        "hey"
    );

    let out = corral(
        &[
            "tool",
            "call",
            &p("files"),
            "files_read",
            r#"{"path":"../etc/passwd"}"#,
            "--workspace",
            &wsp,
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "denied exit code");
    let err = text(&out.stderr);
    assert!(
        err.contains("agent `cli`")
            && err.contains("tool `files_read`")
            && err.contains("leave the workspace"),
        "{err}"
    );
}

#[test]
fn exit_codes_tell_outcomes_apart() {
    let cache = tempfile::tempdir().unwrap();
    // Denied: no host granted.
    let out = corral(
        &[
            "tool",
            "call",
            &p("http-get"),
            "http_get",
            r#"{"url":"http://127.0.0.1:9/"}"#,
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--allow-host"),
        "names the next step"
    );
    // Invalid input.
    let out = corral(
        &["tool", "call", &p("echo"), "echo", "not json"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let out = corral(
        &["tool", "call", &p("echo"), "no_such_tool", "{}"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    // A broken limit.
    let out = corral(
        &[
            "tool",
            "call",
            &p("misbehave"),
            "spin",
            "{}",
            "--timeout-ms",
            "100",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("wall-time limit (100 ms)"),
        "{}",
        text(&out.stderr)
    );
    // A component that is not a tool.
    let out = corral(&["tool", "inspect", &p("not-a-tool")], cache.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not target corral:tool@0.1.0"),
        "{}",
        text(&out.stderr)
    );
    // A missing file.
    let out = corral(&["tool", "inspect", "/nonexistent.wasm"], cache.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent.wasm"));
}

#[test]
fn allow_host_and_secrets_from_the_environment() {
    let cache = tempfile::tempdir().unwrap();
    let server = LoopbackServer::start("pong");
    let addr = server.addr.to_string();
    let input = format!(
        r#"{{"url":"{}","headers":{{"authorization":"Bearer {{{{secret:token}}}}"}}}}"#,
        server.url("/ping")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args([
            "tool",
            "call",
            &p("http-get"),
            "http_get",
            &input,
            "--allow-host",
            &addr,
            "--secret",
            "token=CORRAL_TEST_TOKEN",
        ])
        .env("XDG_CACHE_HOME", cache.path())
        .env("CORRAL_TEST_TOKEN", "t0k3n")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["body"], "pong");
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some("Bearer t0k3n")
    );
    assert!(
        !text(&out.stdout).contains("t0k3n") && !text(&out.stderr).contains("t0k3n"),
        "the value is never printed"
    );

    // A secret whose variable is unset is a clear error, before any call.
    let out = corral(
        &[
            "tool",
            "call",
            &p("http-get"),
            "http_get",
            &input,
            "--allow-host",
            &addr,
            "--secret",
            "token=CORRAL_UNSET_VAR",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("CORRAL_UNSET_VAR is not set"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(server.connections(), 1);
}
