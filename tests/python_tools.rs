//! Python tools built with componentize-py (`examples/tools/python/`):
//! they load, although CPython links WASI files, sockets and more of
//! `wasi:cli`, and none of that reaches anything; the workspace import is
//! still the only way to a file, and the gate decides each use.

use std::net::TcpListener;
use std::sync::{Arc, OnceLock};

use corral_tests::component_bytes;
use corral_tools::{
    Allocation, AllowList, CallContext, CallFailure, Caller, Capability, FileOp, LoadedComponent,
    StaticSecrets, ToolRuntime,
};
use serde_json::{Value, json};

fn runtime() -> &'static ToolRuntime {
    static RT: OnceLock<ToolRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        ToolRuntime::builder()
            .allocation(Allocation::Pooling { max_instances: 16 })
            .build()
            .expect("runtime")
    })
}

fn load(name: &str) -> &'static LoadedComponent {
    static PROBE: OnceLock<LoadedComponent> = OnceLock::new();
    static CSV: OnceLock<LoadedComponent> = OnceLock::new();
    static ECHO: OnceLock<LoadedComponent> = OnceLock::new();
    let cell = match name {
        "py-probe" => &PROBE,
        "csv-query" => &CSV,
        _ => &ECHO,
    };
    cell.get_or_init(|| {
        runtime()
            .load(&component_bytes(name))
            .unwrap_or_else(|e| panic!("loading {name}: {e}"))
    })
}

struct Workspace {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
}

fn workspace() -> Workspace {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("ws");
    std::fs::create_dir(&root).expect("mkdir");
    std::fs::write(dir.path().join("secret.txt"), "outside").expect("write");
    Workspace { _dir: dir, root }
}

fn ctx(tool: &str, gate: AllowList, ws: Option<&Workspace>) -> CallContext {
    CallContext {
        caller: Caller {
            agent: "py-agent".into(),
            tool: tool.into(),
        },
        workspace: ws.map(|w| w.root.clone()),
        gate: Arc::new(gate),
        secrets: Arc::new(StaticSecrets::new()),
        limits: None,
    }
}

/// Calls `tool` and parses its output.
fn call_json(c: &LoadedComponent, tool: &str, input: Value, ctx: &CallContext) -> Value {
    match runtime().call(c, tool, &input.to_string(), ctx) {
        Ok(out) => serde_json::from_str(&out.output).expect("output is JSON"),
        Err(report) => panic!(
            "{tool} failed: {} (stderr: {})",
            report.error, report.stderr
        ),
    }
}

#[test]
fn a_python_component_loads_and_echoes() {
    let echo = load("py-echo");
    assert_eq!(echo.tools()[0].name, "py_echo");
    let out = call_json(
        echo,
        "py_echo",
        json!({"message": "héllo"}),
        &ctx("py_echo", AllowList::new(), None),
    );
    assert_eq!(out, json!({"message": "héllo"}));
}

#[test]
fn a_python_tool_cannot_open_a_socket_even_to_a_listening_port() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let probe = load("py-probe");
    let all = AllowList::new()
        .workspace_read(true)
        .allow_host("127.0.0.1")
        .allow_host("localhost");
    let port = listener.local_addr().expect("addr").port();
    // The probe calls `wasi:sockets` itself: the host refuses the socket
    // and the lookup (CPython's own `socket` module is not even built in).
    let socket = call_json(
        probe,
        "probe_socket",
        json!({"port": port}),
        &ctx("probe_socket", all.clone(), None),
    );
    assert_eq!(socket["wasi"]["refused"], json!(true), "{socket}");
    assert!(
        socket["wasi"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("ACCESS_DENIED"),
        "{socket}"
    );
    assert_eq!(socket["python"]["refused"], json!(true), "{socket}");
    let dns = call_json(probe, "probe_dns", json!({}), &ctx("probe_dns", all, None));
    assert_eq!(dns["wasi"]["refused"], json!(true), "{dns}");
    // Nothing connected, even though the port was open and HTTP to it allowed.
    assert!(listener.accept().is_err(), "the probe reached the listener");
}

#[test]
fn a_python_tool_sees_no_file_system_and_no_environment() {
    // SAFETY: set before any call in this test binary reads the environment
    // through this name; the probe must still not see it.
    unsafe { std::env::set_var("CORRAL_PROBE_CANARY", "leaked") };
    let probe = load("py-probe");
    let ws = workspace();
    std::fs::write(ws.root.join("secret.txt"), "inside").expect("write");
    let gate = AllowList::new().workspace_read(true);
    let file = call_json(
        probe,
        "probe_file",
        json!({}),
        &ctx("probe_file", gate.clone(), Some(&ws)),
    );
    assert_eq!(
        file["wasi"]["refused"],
        json!(true),
        "no preopened directory: {file}"
    );
    assert_eq!(file["python"]["refused"], json!(true), "{file}");
    let env = call_json(
        probe,
        "probe_env",
        json!({}),
        &ctx("probe_env", gate, Some(&ws)),
    );
    assert_eq!(env["refused"], json!(true), "{env}");
    assert!(!env.to_string().contains("leaked"), "{env}");
}

#[test]
fn a_python_tool_reads_the_workspace_only_through_the_gate() {
    let probe = load("py-probe");
    let ws = workspace();
    std::fs::write(ws.root.join("notes.txt"), "inside").expect("write");
    let allowed = ctx(
        "probe_workspace",
        AllowList::new().workspace_read(true),
        Some(&ws),
    );
    let out = call_json(
        probe,
        "probe_workspace",
        json!({"path": "notes.txt"}),
        &allowed,
    );
    assert_eq!(out["text"], "inside");

    let refused = ctx("probe_workspace", AllowList::new(), Some(&ws));
    let report = runtime()
        .call(
            probe,
            "probe_workspace",
            &json!({"path": "notes.txt"}).to_string(),
            &refused,
        )
        .expect_err("no grant, no read");
    assert!(
        matches!(report.error.failure, CallFailure::Denied(_)),
        "{}",
        report.error
    );
    assert_eq!(
        report.capabilities[0].capability,
        Capability::File {
            op: FileOp::Read,
            path: "notes.txt".into()
        }
    );
    // A path outside the workspace is refused by the workspace itself.
    let outside = runtime()
        .call(
            probe,
            "probe_workspace",
            &json!({"path": "../secret.txt"}).to_string(),
            &allowed,
        )
        .expect_err("outside the workspace");
    assert!(
        !format!("{}", outside.error).contains("outside\""),
        "{}",
        outside.error
    );
}

// ---- csv_query -------------------------------------------------------------

const SALES: &str = "region,product,units,price\nnorth,apple,10,1.5\nsouth,apple,4,1.5\nnorth,pear,7,2\nsouth,pear,1,2\nwest,fig,3,4\n";

fn csv_ws() -> Workspace {
    let ws = workspace();
    std::fs::write(ws.root.join("sales.csv"), SALES).expect("write");
    ws
}

fn query(input: Value, ws: &Workspace) -> Value {
    let c = ctx("csv_query", AllowList::new().workspace_read(true), Some(ws));
    call_json(load("csv-query"), "csv_query", input, &c)
}

#[test]
fn csv_query_filters_selects_and_aggregates() {
    let ws = csv_ws();
    let rows = query(
        json!({"path": "sales.csv", "select": ["region", "units"], "where": [{"column": "units", "op": ">=", "value": "4"}]}),
        &ws,
    );
    assert_eq!(rows["rows_matched"], 3);
    assert_eq!(rows["rows"][0], json!({"region": "north", "units": "10"}));
    let total = query(
        json!({"path": "sales.csv", "aggregate": {"op": "sum", "column": "units"}}),
        &ws,
    );
    assert_eq!(total["value"], json!(25.0));
    let by_region = query(
        json!({"path": "sales.csv", "group_by": "region", "aggregate": {"op": "count"}}),
        &ws,
    );
    assert_eq!(
        by_region["groups"],
        json!([{"region": "north", "count": 2}, {"region": "south", "count": 2}, {"region": "west", "count": 1}])
    );
}

#[test]
fn csv_query_names_a_missing_column_and_a_refused_read() {
    let ws = csv_ws();
    let c = ctx(
        "csv_query",
        AllowList::new().workspace_read(true),
        Some(&ws),
    );
    let report = runtime()
        .call(
            load("csv-query"),
            "csv_query",
            &json!({"path": "sales.csv", "select": ["colour"]}).to_string(),
            &c,
        )
        .expect_err("no such column");
    let text = report.error.to_string();
    assert!(
        matches!(report.error.failure, CallFailure::InvalidInput(_)),
        "{text}"
    );
    assert!(text.contains("colour") && text.contains("region"), "{text}");

    let none = ctx("csv_query", AllowList::new(), Some(&ws));
    let report = runtime()
        .call(
            load("csv-query"),
            "csv_query",
            &json!({"path": "sales.csv"}).to_string(),
            &none,
        )
        .expect_err("no grant");
    assert!(
        matches!(report.error.failure, CallFailure::Denied(_)),
        "{}",
        report.error
    );
}
