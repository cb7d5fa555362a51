//! The tool runtime against the real example components from
//! `examples/tools/` (built by `cargo xtask build-tools`).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use corral_tests::{LoopbackServer, component_bytes, component_path};
use corral_tools::{
    Allocation, AllowList, CallContext, CallFailure, CallOutput, CallReport, Caller, Capability,
    CapabilityGate, Denial, FileOp, GateDecision, Limit, Limits, LoadError, LoadedComponent, Spare,
    StaticSecrets, ToolRegistry, ToolRuntime, ToolSource, file_sha256,
};
use serde_json::{Value, json};

fn runtime() -> &'static ToolRuntime {
    static RT: OnceLock<ToolRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        ToolRuntime::builder()
            .allocation(Allocation::Pooling { max_instances: 64 })
            .internal_networks(corral_tests::loopback_for_tests())
            .build()
            .expect("runtime")
    })
}

fn load(name: &str) -> LoadedComponent {
    runtime()
        .load(&component_bytes(name))
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn ctx(tool: &str, gate: impl CapabilityGate + 'static) -> CallContext {
    CallContext {
        caller: Caller {
            agent: "test-agent".into(),
            tool: tool.into(),
        },
        workspace: None,
        gate: Arc::new(gate),
        secrets: Arc::new(StaticSecrets::new()),
        limits: None,
    }
}

fn call(
    c: &LoadedComponent,
    tool: &str,
    input: Value,
    ctx: &CallContext,
) -> Result<CallOutput, Box<CallReport>> {
    runtime().call(c, tool, &input.to_string(), ctx)
}

fn ok_json(r: Result<CallOutput, Box<CallReport>>) -> Value {
    match r {
        Ok(out) => serde_json::from_str(&out.output).expect("output is JSON"),
        Err(report) => panic!("call failed: {}", report.error),
    }
}

fn failure(r: Result<CallOutput, Box<CallReport>>) -> CallFailure {
    match r {
        Ok(out) => panic!("call unexpectedly succeeded: {}", out.output),
        Err(report) => report.error.failure,
    }
}

fn denial(r: Result<CallOutput, Box<CallReport>>) -> Denial {
    match failure(r) {
        CallFailure::Denied(d) => d,
        other => panic!("expected a denial, got {other:?}"),
    }
}

// ---- echo ----------------------------------------------------------------

#[test]
fn echo_round_trip() {
    let echo = load("echo");
    assert_eq!(echo.tools().len(), 1);
    assert_eq!(echo.tools()[0].name, "echo");
    let input = json!({"message": "héllo", "n": [1, 2, {"deep": true}]});
    let out = ok_json(call(
        &echo,
        "echo",
        input.clone(),
        &ctx("echo", AllowList::new()),
    ));
    assert_eq!(out, input);
}

#[test]
fn unknown_tool_and_non_object_input_are_refused() {
    let echo = load("echo");
    let c = ctx("nope", AllowList::new());
    assert_eq!(
        failure(call(&echo, "nope", json!({}), &c)),
        CallFailure::UnknownTool
    );
    let r = runtime().call(&echo, "echo", "[1,2]", &ctx("echo", AllowList::new()));
    assert!(matches!(failure(r), CallFailure::InvalidInput(m) if m.contains("JSON object")));
    let r = runtime().call(&echo, "echo", "{not json", &ctx("echo", AllowList::new()));
    assert!(matches!(failure(r), CallFailure::InvalidInput(_)));
}

// ---- files ---------------------------------------------------------------

struct Sandbox {
    _dir: tempfile::TempDir,
    workspace: std::path::PathBuf,
    outside: std::path::PathBuf,
}

/// A temp dir holding `workspace/` and, beside it, `outside/secret.txt`.
fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().expect("tempdir");
    let workspace = dir.path().join("workspace");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&workspace).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("secret.txt"), "do not read").expect("write");
    Sandbox {
        _dir: dir,
        workspace,
        outside,
    }
}

fn files_ctx(s: &Sandbox, tool: &str, gate: AllowList) -> CallContext {
    let mut c = ctx(tool, gate);
    c.workspace = Some(s.workspace.clone());
    c
}

fn rw() -> AllowList {
    AllowList::new().workspace_read(true).workspace_write(true)
}

#[test]
fn files_write_read_list_inside_the_workspace() {
    let files = load("files");
    let s = sandbox();
    let out = ok_json(call(
        &files,
        "files_write",
        json!({"path": "notes/today.md", "content": "buy milk"}),
        &files_ctx(&s, "files_write", rw()),
    ));
    assert_eq!(out["bytes_written"], 8);
    assert_eq!(
        std::fs::read_to_string(s.workspace.join("notes/today.md")).unwrap(),
        "buy milk"
    );

    let out = ok_json(call(
        &files,
        "files_read",
        json!({"path": "notes/today.md"}),
        &files_ctx(&s, "files_read", rw()),
    ));
    assert_eq!(out["content"], "buy milk");

    std::fs::write(s.workspace.join("a.txt"), "aaa").unwrap();
    let out = ok_json(call(
        &files,
        "files_list",
        json!({"path": ""}),
        &files_ctx(&s, "files_list", rw()),
    ));
    let names: Vec<&str> = out["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a.txt", "notes"]);
    assert_eq!(out["entries"][0]["size"], 3);
    assert_eq!(out["entries"][1]["kind"], "directory");
}

#[test]
fn every_file_operation_goes_through_the_gate() {
    let files = load("files");
    let s = sandbox();
    std::fs::write(s.workspace.join("a.txt"), "aaa").unwrap();
    // Read-only grant: reading works, writing is refused and nothing is written.
    let ro = AllowList::new().workspace_read(true);
    let r = call(
        &files,
        "files_write",
        json!({"path": "b.txt", "content": "x"}),
        &files_ctx(&s, "files_write", ro.clone()),
    );
    let report = r.as_ref().expect_err("denied").clone();
    assert!(matches!(report.error.failure, CallFailure::Denied(_)));
    assert_eq!(report.capabilities.len(), 1);
    assert_eq!(
        report.capabilities[0].capability,
        Capability::File {
            op: FileOp::Write,
            path: "b.txt".into()
        }
    );
    assert!(!s.workspace.join("b.txt").exists());
    ok_json(call(
        &files,
        "files_read",
        json!({"path": "a.txt"}),
        &files_ctx(&s, "files_read", ro),
    ));
    // No grant at all.
    let d = denial(call(
        &files,
        "files_read",
        json!({"path": "a.txt"}),
        &files_ctx(&s, "files_read", AllowList::new()),
    ));
    assert!(d.reason.contains("a.txt"), "{d:?}");
}

#[test]
fn files_cannot_leave_the_workspace() {
    let files = load("files");
    let s = sandbox();
    // A symlink inside the workspace that points outside it.
    std::os::unix::fs::symlink(&s.outside, s.workspace.join("escape")).unwrap();
    std::os::unix::fs::symlink(
        s.outside.join("secret.txt"),
        s.workspace.join("secret-link"),
    )
    .unwrap();
    let outside_file = s.outside.join("secret.txt").display().to_string();

    for path in [
        "../outside/secret.txt",
        "notes/../../outside/secret.txt",
        outside_file.as_str(),
        "escape/secret.txt",
        "secret-link",
    ] {
        let d = denial(call(
            &files,
            "files_read",
            json!({"path": path}),
            &files_ctx(&s, "files_read", rw()),
        ));
        assert!(
            d.reason.contains("outside the workspace") || d.reason.contains("leave the workspace"),
            "reading {path}: {d:?}"
        );
        let d = denial(call(
            &files,
            "files_write",
            json!({"path": path, "content": "pwned"}),
            &files_ctx(&s, "files_write", rw()),
        ));
        assert!(!d.reason.is_empty(), "writing {path}");
    }
    // Listing through the link is refused as well.
    denial(call(
        &files,
        "files_list",
        json!({"path": "escape"}),
        &files_ctx(&s, "files_list", rw()),
    ));
    // Nothing outside was changed or created.
    assert_eq!(
        std::fs::read_to_string(s.outside.join("secret.txt")).unwrap(),
        "do not read"
    );
    assert_eq!(std::fs::read_dir(&s.outside).unwrap().count(), 1);
}

#[test]
fn files_without_a_workspace_are_denied() {
    let files = load("files");
    let d = denial(call(
        &files,
        "files_read",
        json!({"path": "a"}),
        &ctx("files_read", rw()),
    ));
    assert!(d.reason.contains("no workspace"), "{d:?}");
}

// ---- http ------------------------------------------------------------------

#[test]
fn http_to_an_ungranted_host_never_connects() {
    let http = load("http-get");
    let server = LoopbackServer::start("hello");
    let d = denial(call(
        &http,
        "http_get",
        json!({"url": server.url("/x")}),
        &ctx("http_get", AllowList::new()),
    ));
    assert!(d.reason.contains("127.0.0.1"), "{d:?}");
    // Granting another port on the same host is not a grant for this one.
    let other = AllowList::new().allow_host("127.0.0.1:1");
    denial(call(
        &http,
        "http_get",
        json!({"url": server.url("/x")}),
        &ctx("http_get", other),
    ));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        server.connections(),
        0,
        "a denied request must not open a connection"
    );
}

#[test]
fn http_to_a_granted_host_succeeds() {
    let http = load("http-get");
    let server = LoopbackServer::start("hello from loopback");
    let gate = AllowList::new().allow_host(&server.addr.to_string());
    let out = ok_json(call(
        &http,
        "http_get",
        json!({"url": server.url("/greeting?x=1")}),
        &ctx("http_get", gate),
    ));
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], "hello from loopback");
    assert_eq!(out["headers"]["content-type"], "text/plain");
    assert!(
        out["headers"].get("x-internal").is_none(),
        "only selected headers are returned"
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].request_line, "GET /greeting?x=1 HTTP/1.1");
}

#[test]
fn secrets_are_filled_only_for_hosts_allowed_to_receive_them() {
    let http = load("http-get");
    let allowed = LoopbackServer::start("ok");
    let other = LoopbackServer::start("ok");
    let gate = AllowList::new()
        .allow_host(&allowed.addr.to_string())
        .allow_host(&other.addr.to_string())
        // The token may go to `allowed` only (both share 127.0.0.1, so the
        // secret rule is per host and the port grant separates them).
        .allow_secret("api_token", Some("127.0.0.1"));
    let secrets = StaticSecrets::new().with("api_token", "s3cr3t-value");
    let mut c = ctx("http_get", gate);
    c.secrets = Arc::new(secrets);
    let input = |url: String| json!({"url": url, "headers": {"authorization": "Bearer {{secret:api_token}}"}});

    let out = ok_json(call(&http, "http_get", input(allowed.url("/")), &c));
    assert_eq!(out["status"], 200);
    let seen = allowed.requests();
    assert_eq!(seen[0].header("authorization"), Some("Bearer s3cr3t-value"));

    // A secret with no grant for this host is refused before connecting.
    let gate = AllowList::new()
        .allow_host(&other.addr.to_string())
        .allow_secret("api_token", Some("api.example.com"));
    let mut c2 = ctx("http_get", gate);
    c2.secrets = Arc::new(StaticSecrets::new().with("api_token", "s3cr3t-value"));
    let d = denial(call(&http, "http_get", input(other.url("/")), &c2));
    assert!(d.reason.contains("api_token"), "{d:?}");
    assert_eq!(other.connections(), 0);

    // An unknown secret name is refused too, and its placeholder never leaves.
    let gate = AllowList::new().allow_host(&other.addr.to_string());
    let d = denial(call(
        &http,
        "http_get",
        json!({"url": other.url("/"), "headers": {"x-key": "{{secret:nope}}"}}),
        &ctx("http_get", gate),
    ));
    assert!(d.reason.contains("nope"), "{d:?}");
    assert_eq!(other.connections(), 0);
}

// ---- limits ----------------------------------------------------------------

fn limited(tool: &str, f: impl FnOnce(&mut Limits)) -> CallContext {
    let mut limits = Limits::default();
    f(&mut limits);
    let mut c = ctx(tool, AllowList::new());
    c.limits = Some(limits);
    c
}

#[test]
fn an_infinite_loop_is_stopped_at_its_deadline() {
    let m = load("misbehave");
    let started = Instant::now();
    let f = failure(call(
        &m,
        "spin",
        json!({}),
        &limited("spin", |l| l.wall_time = Duration::from_millis(200)),
    ));
    let took = started.elapsed();
    assert_eq!(
        f,
        CallFailure::LimitExceeded(Limit::WallTime {
            limit: Duration::from_millis(200)
        })
    );
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");
    // The host carries on.
    ok_json(call(
        &load("echo"),
        "echo",
        json!({"after": "spin"}),
        &ctx("echo", AllowList::new()),
    ));
}

#[test]
fn unbounded_memory_growth_is_stopped_at_its_cap() {
    let m = load("misbehave");
    let f = failure(call(
        &m,
        "hog",
        json!({}),
        &limited("hog", |l| l.memory_bytes = 16 << 20),
    ));
    assert_eq!(
        f,
        CallFailure::LimitExceeded(Limit::Memory { bytes: 16 << 20 })
    );
    ok_json(call(
        &load("echo"),
        "echo",
        json!({}),
        &ctx("echo", AllowList::new()),
    ));
}

#[test]
fn oversized_output_is_refused() {
    let m = load("misbehave");
    let f = failure(call(
        &m,
        "flood",
        json!({"n": 5000}),
        &limited("flood", |l| l.output_bytes = 4096),
    ));
    assert_eq!(
        f,
        CallFailure::LimitExceeded(Limit::Output {
            bytes: 5002,
            limit: 4096
        })
    );
    // Under the limit it passes.
    let out = call(
        &m,
        "flood",
        json!({"n": 100}),
        &limited("flood", |l| l.output_bytes = 4096),
    );
    assert_eq!(ok_json(out).as_str().map(str::len), Some(100));
}

#[test]
fn log_volume_is_capped() {
    let m = load("misbehave");
    let f = failure(call(
        &m,
        "chatty",
        json!({"n": 100}),
        &limited("chatty", |l| l.log_bytes = 10 * 1024),
    ));
    assert_eq!(
        f,
        CallFailure::LimitExceeded(Limit::LogVolume { limit: 10 * 1024 })
    );
    let out = call(
        &m,
        "chatty",
        json!({"n": 3}),
        &limited("chatty", |l| l.log_bytes = 10 * 1024),
    )
    .expect("ok");
    assert_eq!(out.logs.len(), 3);
}

#[test]
fn a_guest_trap_is_reported_with_its_panic_message() {
    let m = load("misbehave");
    match failure(call(&m, "trap", json!({}), &ctx("trap", AllowList::new()))) {
        CallFailure::Trap(msg) => assert!(msg.contains("deliberate trap"), "{msg}"),
        other => panic!("expected a trap, got {other:?}"),
    }
}

#[test]
fn limit_errors_name_the_agent_tool_and_limit() {
    let m = load("misbehave");
    let r = call(
        &m,
        "hog",
        json!({}),
        &limited("hog", |l| l.memory_bytes = 8 << 20),
    );
    let text = r.expect_err("fails").error.to_string();
    assert!(
        text.contains("agent `test-agent`")
            && text.contains("tool `hog`")
            && text.contains("memory limit (8 MiB)"),
        "{text}"
    );
}

#[test]
fn concurrent_calls_are_isolated() {
    let echo = Arc::new(load("echo"));
    let spin = Arc::new(load("misbehave"));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (echo, spin) = (echo.clone(), spin.clone());
            std::thread::spawn(move || {
                if i % 4 == 0 {
                    let f = failure(call(
                        &spin,
                        "spin",
                        json!({}),
                        &limited("spin", |l| l.wall_time = Duration::from_millis(100)),
                    ));
                    assert!(matches!(
                        f,
                        CallFailure::LimitExceeded(Limit::WallTime { .. })
                    ));
                } else {
                    for j in 0..50 {
                        let v = json!({"thread": i, "j": j});
                        assert_eq!(
                            ok_json(call(
                                &echo,
                                "echo",
                                v.clone(),
                                &ctx("echo", AllowList::new())
                            )),
                            v
                        );
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
}

// ---- loading ---------------------------------------------------------------

#[test]
fn a_tampered_component_is_refused_naming_both_digests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.wasm");
    std::fs::copy(component_path("echo"), &path).unwrap();
    let pinned = file_sha256(&path).unwrap();
    // Loads with the right pin.
    ToolRegistry::load(
        runtime(),
        &[ToolSource {
            path: path.clone(),
            sha256: pinned.clone(),
        }],
    )
    .expect("loads");
    // Flip one byte near the end (in a custom section, so it would still
    // compile: the pin is the only thing that catches it).
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = ToolRegistry::load(
        runtime(),
        &[ToolSource {
            path: path.clone(),
            sha256: pinned.clone(),
        }],
    )
    .unwrap_err();
    match &err {
        LoadError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &pinned);
            assert_ne!(actual, &pinned);
            let text = err.to_string();
            assert!(
                text.contains(expected.as_str()) && text.contains(actual.as_str()),
                "{text}"
            );
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
}

#[test]
fn a_bad_pin_is_refused() {
    let err = ToolRegistry::load(
        runtime(),
        &[ToolSource {
            path: component_path("echo"),
            sha256: "abc".into(),
        }],
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::BadPin { .. }), "{err}");
}

#[test]
fn a_component_for_another_world_is_refused_naming_what_is_missing() {
    let err = runtime().load(&component_bytes("not-a-tool")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{text}");
    assert!(text.contains("corral:tool/tool@0.1.0"), "{text}");
    assert!(
        text.contains("wasi:cli/run"),
        "names what it does export: {text}"
    );
}

#[test]
fn garbage_is_refused() {
    let err = runtime().load(b"\0asm not really").unwrap_err();
    assert!(matches!(err, LoadError::Compile(_)), "{err}");
}

#[test]
fn duplicate_tool_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.wasm");
    let b = dir.path().join("b.wasm");
    std::fs::copy(component_path("echo"), &a).unwrap();
    std::fs::copy(component_path("echo"), &b).unwrap();
    let sources = [
        ToolSource {
            path: a.clone(),
            sha256: file_sha256(&a).unwrap(),
        },
        ToolSource {
            path: b.clone(),
            sha256: file_sha256(&b).unwrap(),
        },
    ];
    let err = ToolRegistry::load(runtime(), &sources).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, LoadError::DuplicateTool { ref tool, .. } if tool == "echo"),
        "{text}"
    );
    assert!(text.contains("a.wasm") && text.contains("b.wasm"), "{text}");
}

#[test]
fn the_registry_finds_tools_across_components() {
    let sources: Vec<ToolSource> = ["echo", "files", "http-get"]
        .iter()
        .map(|n| {
            let path = component_path(n);
            ToolSource {
                sha256: file_sha256(&path).unwrap(),
                path,
            }
        })
        .collect();
    let reg = ToolRegistry::load(runtime(), &sources).expect("loads");
    let names: Vec<&str> = reg.tools().map(|(t, _)| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "echo",
            "files_list",
            "files_read",
            "files_write",
            "http_get"
        ]
    );
    let (component, info) = reg.get("files_write").expect("present");
    assert!(info.capabilities.workspace_write);
    assert!(component.path.ends_with("files.wasm"));
    assert!(reg.get("missing").is_none());
}

#[test]
fn the_artifact_cache_serves_the_second_load() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let rt = ToolRuntime::builder()
        .allocation(Allocation::OnDemand)
        .cache_dir(&cache)
        .build()
        .unwrap();
    let bytes = component_bytes("echo");
    rt.load(&bytes).expect("first load compiles");
    let artifacts: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    let name = artifacts[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with(&file_sha256(&component_path("echo")).unwrap()),
        "{name}"
    );
    // A corrupted artifact is discarded and rebuilt, never trusted.
    std::fs::write(&artifacts[0], b"garbage").unwrap();
    let c = rt.load(&bytes).expect("reloads after corruption");
    let out = rt
        .call(&c, "echo", "{}", &ctx("echo", AllowList::new()))
        .expect("works");
    assert_eq!(out.output, "{}");
    assert!(std::fs::read(&artifacts[0]).unwrap().len() > 100);
}

#[test]
fn a_world_writable_cache_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = ToolRuntime::builder()
        .cache_dir(&cache)
        .build()
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("writable by group or others"),
        "{err}"
    );
}

#[test]
fn on_demand_allocation_runs_the_same_calls() {
    let rt = ToolRuntime::builder()
        .allocation(Allocation::OnDemand)
        .build()
        .unwrap();
    let echo = rt.load(&component_bytes("echo")).unwrap();
    let out = rt
        .call(&echo, "echo", r#"{"a":1}"#, &ctx("echo", AllowList::new()))
        .expect("ok");
    assert_eq!(out.output, r#"{"a":1}"#);
}

/// A gate that records what it was asked, to show the runtime asks before
/// acting and passes policy ids through.
struct Recording(std::sync::Mutex<Vec<String>>);

impl CapabilityGate for Recording {
    fn check(&self, caller: &Caller, capability: &Capability) -> GateDecision {
        self.0
            .lock()
            .unwrap()
            .push(format!("{}/{}: {capability}", caller.agent, caller.tool));
        GateDecision::Deny(Denial {
            reason: "policy says no".into(),
            policy_ids: vec!["deny-writes".into()],
        })
    }
}

#[test]
fn denials_carry_the_deciding_policy_ids() {
    let files = load("files");
    let s = sandbox();
    let gate = Arc::new(Recording(Default::default()));
    let mut c = ctx("files_write", AllowList::new());
    c.gate = gate.clone();
    c.workspace = Some(s.workspace.clone());
    let d = denial(call(
        &files,
        "files_write",
        json!({"path": "x/y.txt", "content": "z"}),
        &c,
    ));
    assert_eq!(d.policy_ids, ["deny-writes"]);
    assert_eq!(
        *gate.0.lock().unwrap(),
        ["test-agent/files_write: write workspace file `x/y.txt`"]
    );
    assert!(
        !s.workspace.join("x").exists(),
        "no directory was created before the gate said yes"
    );
}

// ---- instances made ahead of their calls -------------------------------

/// The instance a spare holds is used for one call only: a guest's global
/// never sees a second call.
#[test]
fn a_spare_instance_serves_one_call_and_is_fresh() {
    let m = load("misbehave");
    let c = ctx("remember", AllowList::new());
    let mut spare = Spare::default();
    for _ in 0..20 {
        runtime().refill(&mut spare, &m);
        assert!(spare.is_ready(), "a spare was made");
        let out = runtime()
            .call_with(&mut spare, &m, "remember", "{}", &c)
            .expect("call");
        assert!(!spare.is_ready(), "the call took the spare");
        assert_eq!(
            serde_json::from_str::<Value>(&out.output).unwrap(),
            json!({"calls": 1})
        );
    }
    // Without a refill, the next call makes its own instance: still fresh.
    let out = runtime()
        .call_with(&mut spare, &m, "remember", "{}", &c)
        .expect("call");
    assert_eq!(
        serde_json::from_str::<Value>(&out.output).unwrap(),
        json!({"calls": 1})
    );
}

/// A spare is made with no grants; its call brings the caller, gate,
/// workspace and deadline, and the deadline counts from the call, not
/// from when the instance was made.
#[test]
fn a_spare_takes_its_calls_grants_and_deadline() {
    let s = sandbox();
    let files = load("files");
    let mut spare = Spare::default();
    runtime().refill(&mut spare, &files);
    let write = json!({"path": "notes/a.txt", "content": "hi"}).to_string();
    let allowed = files_ctx(&s, "files_write", rw());
    runtime()
        .call_with(&mut spare, &files, "files_write", &write, &allowed)
        .expect("the call's grants apply");
    assert_eq!(
        std::fs::read_to_string(s.workspace.join("notes/a.txt")).unwrap(),
        "hi"
    );
    runtime().refill(&mut spare, &files);
    let refused = files_ctx(&s, "files_write", AllowList::new());
    let d = denial(runtime().call_with(&mut spare, &files, "files_write", &write, &refused));
    assert!(!d.reason.is_empty());

    let m = load("misbehave");
    runtime().refill(&mut spare, &m);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let f = failure(runtime().call_with(
        &mut spare,
        &m,
        "spin",
        "{}",
        &limited("spin", |l| l.wall_time = Duration::from_millis(200)),
    ));
    assert!(
        matches!(f, CallFailure::LimitExceeded(Limit::WallTime { .. })),
        "{f:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "the deadline ran from the refill, not the call: stopped after {:?}",
        started.elapsed()
    );
}

/// A spare made for one component is never used for another, and one
/// made under other limits is not used either.
#[test]
fn a_spare_is_used_only_for_its_component_and_limits() {
    let echo = load("echo");
    let m = load("misbehave");
    let mut spare = Spare::default();
    runtime().refill(&mut spare, &m);
    let v = json!({"x": 1});
    let out = runtime()
        .call_with(
            &mut spare,
            &echo,
            "echo",
            &v.to_string(),
            &ctx("echo", AllowList::new()),
        )
        .expect("echo in an instance of its own");
    assert_eq!(serde_json::from_str::<Value>(&out.output).unwrap(), v);
    runtime().refill(&mut spare, &m);
    // A lower memory cap than the spare was made under: instantiated anew,
    // under the cap.
    let f = failure(runtime().call_with(
        &mut spare,
        &m,
        "hog",
        "{}",
        &limited("hog", |l| l.memory_bytes = 16 << 20),
    ));
    assert_eq!(
        f,
        CallFailure::LimitExceeded(Limit::Memory { bytes: 16 << 20 })
    );
}

/// Spares may hold at most half the pool, so that idle connections can
/// never take the slots calls need.
#[test]
fn spares_never_hold_more_than_half_the_pool() {
    let small = ToolRuntime::builder()
        .allocation(Allocation::Pooling { max_instances: 4 })
        .build()
        .expect("runtime");
    let echo = small.load(&component_bytes("echo")).expect("load");
    let mut spares: Vec<Spare> = (0..3).map(|_| Spare::default()).collect();
    for s in &mut spares {
        small.refill(s, &echo);
    }
    let ready: Vec<bool> = spares.iter().map(Spare::is_ready).collect();
    assert_eq!(ready, [true, true, false]);
    // The other half of the pool still serves calls.
    for _ in 0..3 {
        small
            .call(&echo, "echo", "{}", &ctx("echo", AllowList::new()))
            .expect("a call while spares are held");
    }
    drop(spares);
    let mut again = Spare::default();
    small.refill(&mut again, &echo);
    assert!(again.is_ready(), "dropped spares give their budget back");
}

// ---- hardening (issue: a hostile agent inside its workspace) -------------

/// A gate that allows everything and remembers what it was asked, so a
/// test can see the path a decision was made on.
#[derive(Default, Clone)]
struct Asked(Arc<std::sync::Mutex<Vec<Capability>>>);

impl CapabilityGate for Asked {
    fn check(&self, _: &Caller, capability: &Capability) -> GateDecision {
        self.0.lock().unwrap().push(capability.clone());
        GateDecision::Allow
    }
}

fn recorded_paths(r: &Asked) -> Vec<String> {
    r.0.lock()
        .unwrap()
        .iter()
        .filter_map(|c| match c {
            Capability::File { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_fifo_in_the_workspace_is_refused_at_once() {
    let files = load("files");
    let s = sandbox();
    let fifo = s.workspace.join("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
    let mut ctx = files_ctx(&s, "files_read", rw());
    ctx.limits = Some(Limits {
        wall_time: Duration::from_secs(20),
        ..Limits::default()
    });
    let started = Instant::now();
    let f = failure(call(&files, "files_read", json!({"path": "pipe"}), &ctx));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the read waited on the FIFO"
    );
    assert!(format!("{f:?}").contains("FIFO"), "{f:?}");
    let f = failure(call(
        &files,
        "files_write",
        json!({"path": "pipe", "content": "x"}),
        &files_ctx(&s, "files_write", rw()),
    ));
    let shown = format!("{f:?}");
    assert!(
        shown.contains("FIFO") || shown.contains("not a regular file"),
        "{f:?}"
    );
}

#[test]
fn file_decisions_are_made_on_the_path_a_link_leads_to() {
    let files = load("files");
    let s = sandbox();
    std::fs::create_dir(s.workspace.join("notes")).unwrap();
    std::fs::write(s.workspace.join(".env"), "SECRET=1").unwrap();
    std::os::unix::fs::symlink("../.env", s.workspace.join("notes/dotlink")).unwrap();
    let gate = Asked::default();
    let mut c = ctx("files_write", gate.clone());
    c.workspace = Some(s.workspace.clone());
    ok_json(call(
        &files,
        "files_write",
        json!({"path": "notes/dotlink", "content": "x"}),
        &c,
    ));
    assert_eq!(
        recorded_paths(&gate),
        [".env"],
        "decided on the link's target"
    );
    // A deny on the real path holds whatever name the link has.
    let deny_dotfiles = AllowList::new().workspace_read(true);
    let d = denial(call(
        &files,
        "files_write",
        json!({"path": "notes/dotlink", "content": "pwned"}),
        &files_ctx(&s, "files_write", deny_dotfiles),
    ));
    assert!(d.reason.contains(".env"), "{d:?}");
}

#[test]
fn a_file_with_another_name_outside_is_neither_read_nor_written() {
    let files = load("files");
    let s = sandbox();
    std::fs::hard_link(s.outside.join("secret.txt"), s.workspace.join("hard")).unwrap();
    for (tool, input) in [
        ("files_read", json!({"path": "hard"})),
        ("files_write", json!({"path": "hard", "content": "pwned"})),
    ] {
        let d = denial(call(&files, tool, input, &files_ctx(&s, tool, rw())));
        assert!(d.reason.contains("hard links"), "{tool}: {d:?}");
    }
    assert_eq!(
        std::fs::read_to_string(s.outside.join("secret.txt")).unwrap(),
        "do not read"
    );
}

#[test]
fn a_granted_name_that_resolves_to_loopback_never_connects() {
    let http = load("http-get");
    let server = LoopbackServer::start("internal");
    let port = server.addr.port();
    // The gate grants the name; only 127.0.0.1 is opened to loopback.
    let gate = AllowList::new().allow_host(&format!("localhost:{port}"));
    let d = denial(call(
        &http,
        "http_get",
        json!({"url": format!("http://localhost:{port}/")}),
        &ctx("http_get", gate),
    ));
    assert!(
        d.reason
            .contains("`localhost` resolves to a loopback address"),
        "{d:?}"
    );
    // The metadata address and private ranges, as literals, likewise.
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::ffff:127.0.0.1]:1/",
    ] {
        let host = url.split('/').nth(2).unwrap().to_string();
        let d = denial(call(
            &http,
            "http_get",
            json!({"url": url}),
            &ctx("http_get", AllowList::new().allow_host(&host)),
        ));
        assert!(d.reason.contains("may not reach"), "{url}: {d:?}");
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(server.connections(), 0, "nothing connected");
}

#[test]
fn the_gate_sees_the_address_the_request_connects_to() {
    let http = load("http-get");
    let server = LoopbackServer::start("hi");
    let gate = Asked::default();
    ok_json(call(
        &http,
        "http_get",
        json!({"url": server.url("/")}),
        &ctx("http_get", gate.clone()),
    ));
    let asked = gate.0.lock().unwrap().clone();
    match asked.as_slice() {
        [Capability::Http(name), Capability::Http(address)] => {
            assert_eq!((name.host.as_str(), name.address), ("127.0.0.1", None));
            assert_eq!(address.address, Some("127.0.0.1".parse().unwrap()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.connections(), 1);
}

#[test]
fn a_name_policy_refuses_is_never_resolved() {
    // `.invalid` never resolves: a DNS error here would mean the name was
    // looked up before policy refused it.
    let http = load("http-get");
    let d = denial(call(
        &http,
        "http_get",
        json!({"url": "http://exfiltrated-secret.invalid/"}),
        &ctx("http_get", AllowList::new()),
    ));
    assert!(d.reason.contains("exfiltrated-secret.invalid"), "{d:?}");
    assert!(!d.reason.contains("resolve"), "{d:?}");
}
