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
            "--allow-internal",
            "127.0.0.0/8",
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
            "--allow-internal",
            "127.0.0.0/8",
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

fn tool_args() -> Vec<String> {
    ["echo", "files", "http-get", "csv-query"]
        .iter()
        .flat_map(|t| ["--tool".to_string(), p(t)])
        .collect()
}

fn in_repo(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .current_dir(corral_tests::repo_root())
        .args(args)
        .args(tool_args())
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("run corral")
}

#[test]
fn policy_validate_test_and_check_on_the_starter_policies() {
    let cache = tempfile::tempdir().unwrap();
    let out = in_repo(&["policy", "validate"], cache.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("14 policies in policies are valid"),
        "{}",
        text(&out.stdout)
    );

    let out = in_repo(
        &["policy", "test", "policies/tests/starter.json"],
        cache.path(),
    );
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("25 passed, 0 failed"),
        "{}",
        text(&out.stdout)
    );

    let out = in_repo(
        &[
            "policy",
            "check",
            "--agent",
            "assistant",
            "--action",
            "use_secret",
            "--resource",
            "Secret::\"github_token\"",
            "--context",
            r#"{"tool":"http_get","host":"evil.example"}"#,
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stdout).contains("DENY") && text(&out.stdout).contains("no permit matched"),
        "{}",
        text(&out.stdout)
    );

    let out = in_repo(
        &[
            "policy",
            "check",
            "--agent",
            "assistant",
            "--action",
            "files_write",
            "--context",
            r#"{"input":{"path":"notes/x","content":"y"}}"#,
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("files-write-notes-only (policies/corral.cedar:"),
        "{}",
        text(&out.stdout)
    );

    let out = in_repo(&["policy", "schema"], cache.path());
    assert!(
        text(&out.stdout).contains("action \"files_write\" in [call_tool]"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn policy_errors_name_file_and_line_and_fail() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.cedar"), "@id(\"x\")\npermit(principal, action == Action::\"echo\", resource)\n  when { principal.nope };\n").unwrap();
    let schema = corral_tests::repo_root().join("policies/schema.cedarschema");
    let out = in_repo(
        &[
            "policy",
            "validate",
            "--dir",
            &dir.path().display().to_string(),
            "--schema",
            &schema.display().to_string(),
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.cedar:3:") && err.contains("policy `x`"),
        "{err}"
    );

    // A failing test case fails the run and says why.
    let tests = dir.path().join("t.json");
    std::fs::write(&tests, r#"[{"name":"wrong on purpose","request":{"principal":"Agent::\"assistant\"","action":"Action::\"echo\"","resource":"Tool::\"echo\"","context":{"common":{"request_time":1,"session_id":"s","calls_in_session":0},"input":{}}},"decision":"deny","reason":[],"num_errors":0}]"#).unwrap();
    let out = in_repo(
        &["policy", "test", &tests.display().to_string()],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("FAIL wrong on purpose: expected Deny, got Allow"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn image_build_prints_the_content_tag_and_is_idempotent() {
    let cache = tempfile::tempdir().unwrap();
    let root = corral_tests::repo_root();
    let binary = corral_tests::agent_binary();
    let args = [
        "image",
        "build",
        "--dir",
        &root.join("agent-image").display().to_string(),
        "--binary",
        &binary.display().to_string(),
    ]
    .map(|s| s.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = corral(&args, cache.path());
    assert!(first.status.success(), "{}", text(&first.stderr));
    let tag = text(&first.stdout).trim().to_string();
    assert!(tag.starts_with("corral-agent:"), "{tag}");
    let second = corral(&args, cache.path());
    assert_eq!(text(&second.stdout).trim(), tag);
    assert!(
        text(&second.stderr).contains("is up to date"),
        "{}",
        text(&second.stderr)
    );
}

#[test]
fn agents_ls_logs_and_stop_see_labelled_containers() {
    use corral_sandbox::{ContainerSpec, Limits};
    let cache = tempfile::tempdir().unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let agent = "cli-agents-test";
    let image = agent_image_tag();
    current_thread().block_on(async {
        let docker = docker().await;
        let spec = ContainerSpec {
            agent: agent.into(),
            image,
            workspace: dirs.path().to_path_buf(),
            socket_dir: dirs.path().to_path_buf(),
            user: "10001:10001".into(),
            limits: Limits::default(),
            command: vec!["--version".into()],
            extra_mounts: vec![],
        };
        docker.remove_named(&spec.name()).await;
        let id = docker.create(&spec).await.unwrap();
        docker.start(agent, &id).await.unwrap();
        docker.wait(agent, &id).await.unwrap();
    });
    let ls = corral(&["agents", "ls"], cache.path());
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    let line = text(&ls.stdout)
        .lines()
        .find(|l| l.starts_with(agent))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("not listed: {}", text(&ls.stdout)));
    assert!(
        line.contains("stopped") && line.contains("corral-agent:"),
        "{line}"
    );
    let logs = corral(&["agents", "logs", agent], cache.path());
    assert!(
        text(&logs.stdout).starts_with("corral-agent "),
        "{}",
        text(&logs.stdout)
    );
    let stop = corral(&["agents", "stop", agent], cache.path());
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let ls = corral(&["agents", "ls"], cache.path());
    assert!(!text(&ls.stdout).contains(agent));
    let missing = corral(&["agents", "logs", agent], cache.path());
    assert!(
        text(&missing.stderr).contains("has no container"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn agents_run_passes_through_output_and_exit_code() {
    let cache = tempfile::tempdir().unwrap();
    let dirs = tempfile::tempdir().unwrap();
    let tag = agent_image_tag();
    let d = dirs.path().display().to_string();
    let base = [
        "agents",
        "run",
        "cli-run-test",
        "--workspace",
        &d,
        "--socket-dir",
        &d,
        "--image",
        &tag,
        "--",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |extra: &[&str]| {
        let args = with(extra);
        corral(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            cache.path(),
        )
    };
    let out = run(&["selftest", "root-filesystem"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("blocked root-filesystem"),
        "{}",
        text(&out.stdout)
    );
    // No broker serves this directory: the agent's error comes through.
    let out = run(&["call", "echo", "{}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot connect to the broker"),
        "{}",
        text(&out.stderr)
    );
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn docker() -> corral_sandbox::Docker {
    corral_sandbox::Docker::connect()
        .await
        .expect("these tests need the Docker engine")
}

/// Builds (or finds) the agent image through the library; returns its tag.
fn agent_image_tag() -> String {
    current_thread().block_on(async {
        corral_sandbox::AgentImage {
            dir: corral_tests::repo_root().join("agent-image"),
            binary: corral_tests::agent_binary(),
        }
        .build(&docker().await, |_| {})
        .await
        .unwrap()
    })
}

#[test]
fn observe_mode_is_refused_at_start_unless_the_operator_allows_it() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("ws")).unwrap();
    let config = dir.path().join("corral.toml");
    std::fs::write(
        &config,
        format!(
            "policies = \"{}\"\nstate_dir = \"{}\"\n\n[[agents]]\nid = \"reporter\"\nworkspace = \"{}\"\nmode = \"observe\"\n",
            corral_tests::repo_root().join("policies").display(),
            dir.path().join("state").display(),
            dir.path().join("ws").display()
        ),
    )
    .unwrap();
    let out = corral(
        &["up", "--config", &config.display().to_string()],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "agent `reporter` has mode = \"observe\", but [observe] names neither it nor its team"
        ),
        "{stderr}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "nothing started: {stderr}"
    );
}
