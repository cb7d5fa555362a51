//! The broker end to end: real sockets, real policies, real components, a
//! real SQLite audit log. Each test drives it with the raw MCP client.

use std::os::unix::fs::PermissionsExt;

use corral_audit::{Kind, Outcome};
use corral_tests::broker::{BrokerOptions, TestBroker};
use corral_tests::mcp::{McpClient, is_error, result_text};
use corral_tests::{LoopbackServer, component_path};
use serde_json::{Value, json};

fn sha(name: &str) -> String {
    corral_tools::file_sha256(&component_path(name)).unwrap()
}

#[test]
fn initialize_negotiates_the_protocol_version() {
    let b = TestBroker::start(BrokerOptions::default());
    for version in ["2025-11-25", "2025-06-18", "2024-11-05"] {
        let mut c = McpClient::connect(&b.socket("assistant")).unwrap();
        let init = c.initialize(version);
        assert_eq!(init["result"]["protocolVersion"], version, "{init}");
        assert_eq!(init["result"]["serverInfo"]["name"], "corral-broker");
        assert!(
            init["result"]["capabilities"]["tools"].is_object(),
            "{init}"
        );
        let pong = c.request("ping", json!({}));
        assert_eq!(pong["result"], json!({}), "{pong}");
    }
}

#[test]
fn tools_list_shows_only_what_policy_could_allow() {
    let b = TestBroker::start(BrokerOptions::default());
    // `http-get-for-assistants` permits http_get only for Team::"assistants".
    assert_eq!(
        b.client("assistant").list_tools(),
        [
            "echo",
            "files_list",
            "files_read",
            "files_write",
            "http_get"
        ]
    );
    assert_eq!(
        b.client("reporter").list_tools(),
        ["echo", "files_list", "files_read", "files_write"]
    );
}

#[test]
fn an_unconditional_forbid_hides_a_tool() {
    let b = TestBroker::start(BrokerOptions {
        extra_policy: Some(
            r#"@id("no-echo-for-reporter")
forbid (principal == Agent::"reporter", action == Action::"echo", resource);"#
                .into(),
        ),
        ..BrokerOptions::default()
    });
    assert!(
        !b.client("reporter")
            .list_tools()
            .contains(&"echo".to_string())
    );
    assert!(
        b.client("assistant")
            .list_tools()
            .contains(&"echo".to_string())
    );
}

#[test]
fn an_allowed_call_runs_and_its_records_are_exact() {
    let mut b = TestBroker::start(BrokerOptions::default());
    let hash = b.policies.current().policy_set_hash().to_string();
    let mut c = b.client("assistant");
    let result = c.call_tool("echo", json!({"message": "hi"}));
    assert!(!is_error(&result), "{result}");
    let out: Value = serde_json::from_str(&result_text(&result)).unwrap();
    assert_eq!(out["message"], "hi", "{result}");
    assert_eq!(result["structuredContent"]["message"], "hi");
    drop(c);
    b.stop();

    let records = b.records();
    assert_eq!(records.len(), 2, "{records:#?}");
    let call = &records[0];
    assert_eq!(call.seq, 1);
    assert_eq!(call.kind, Kind::Call);
    assert_eq!(call.agent, "assistant");
    assert_eq!(call.action, "echo");
    assert_eq!(call.resource, r#"Tool::"echo""#);
    assert_eq!(
        serde_json::from_str::<Value>(&call.arguments).unwrap(),
        json!({"message": "hi"})
    );
    assert!(!call.redacted);
    assert_eq!(call.decision.as_deref(), Some("allow"));
    assert_eq!(call.policy_ids, ["echo-for-all-agents"]);
    assert!(call.errors.is_empty());
    assert_eq!(call.policy_hash, hash);
    assert_eq!(call.tool_sha256.as_deref(), Some(sha("echo").as_str()));
    let session: Value = serde_json::from_str(&call.session).unwrap();
    assert_eq!(session["calls_in_session"], 1);
    assert!(
        session["session_id"]
            .as_str()
            .unwrap()
            .starts_with("assistant-")
    );

    let outcome = &records[1];
    assert_eq!(outcome.kind, Kind::Outcome);
    assert_eq!(outcome.parent, Some(1));
    assert_eq!(outcome.outcome, Some(Outcome::Ok));
    assert_eq!(outcome.decision, None);
    assert!(outcome.duration_us.unwrap() > 0);
    assert_eq!(outcome.prev_hash, call.hash);
}

#[test]
fn a_denied_call_is_an_error_result_and_never_runs() {
    let server = LoopbackServer::start("fetched");
    let mut b = TestBroker::start(BrokerOptions::default());
    let mut c = b.client("reporter");
    let result = c.call_tool("http_get", json!({"url": server.url("/x")}));
    assert!(is_error(&result), "{result}");
    let text = result_text(&result);
    assert!(
        text.starts_with("denied: agent `reporter` may not call tool `http_get`"),
        "{text}"
    );
    assert!(text.contains("next step"), "{text}");
    assert_eq!(result["structuredContent"]["error"], "denied");
    assert_eq!(server.connections(), 0, "a denied tool must not run");

    // Allowed tool, input outside the permit: files_write only under notes/.
    let result = c.call_tool("files_write", json!({"path": "top.txt", "content": "x"}));
    assert!(is_error(&result), "{result}");
    assert!(!b.workspace("reporter").join("top.txt").exists());
    drop(c);
    b.stop();

    let records = b.records();
    assert_eq!(
        records.len(),
        2,
        "denials have no outcome records: {records:#?}"
    );
    assert!(
        records
            .iter()
            .all(|r| r.kind == Kind::Call && r.decision.as_deref() == Some("deny"))
    );
    assert_eq!(records[0].action, "http_get");
    assert!(
        records[0].policy_ids.is_empty(),
        "default deny: no policy decided"
    );
    assert!(
        records[0].detail.as_deref().unwrap().contains("no permit"),
        "{:?}",
        records[0].detail
    );
    assert_eq!(
        serde_json::from_str::<Value>(&records[1].arguments).unwrap(),
        json!({"path": "top.txt", "content": "x"})
    );
}

#[test]
fn a_forbid_names_its_policy_in_the_result() {
    let b = TestBroker::start(BrokerOptions {
        extra_policy: Some(
            r#"@id("no-shouting")
forbid (principal, action == Action::"echo", resource)
when { context.input has message && context.input.message like "*!*" };"#
                .into(),
        ),
        ..BrokerOptions::default()
    });
    let mut c = b.client("assistant");
    let result = c.call_tool("echo", json!({"message": "hey!"}));
    assert!(is_error(&result));
    assert_eq!(
        result["structuredContent"]["policy_ids"],
        json!(["no-shouting"])
    );
    assert!(result_text(&result).contains("no-shouting"), "{result}");
    assert!(!is_error(&c.call_tool("echo", json!({"message": "hey"}))));
}

#[test]
fn capability_uses_inside_a_tool_are_authorized_and_recorded() {
    let mut b = TestBroker::start(BrokerOptions::default());
    let mut c = b.client("assistant");
    let ok = c.call_tool(
        "files_write",
        json!({"path": "notes/a.txt", "content": "hello"}),
    );
    assert!(!is_error(&ok), "{ok}");
    assert_eq!(
        std::fs::read_to_string(b.workspace("assistant").join("notes/a.txt")).unwrap(),
        "hello"
    );
    // The call is permitted (notes/*), the write is not: no-dotfile-writes.
    let denied = c.call_tool(
        "files_write",
        json!({"path": "notes/.env", "content": "X=1"}),
    );
    assert!(is_error(&denied), "{denied}");
    assert!(
        result_text(&denied).contains("no-dotfile-writes"),
        "{denied}"
    );
    assert!(!b.workspace("assistant").join("notes/.env").exists());
    drop(c);
    b.stop();

    let records = b.records();
    let kinds: Vec<_> = records
        .iter()
        .map(|r| (r.seq, r.kind, r.action.as_str(), r.decision.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            (1, Kind::Call, "files_write", Some("allow".into())),
            (2, Kind::Capability, "write_file", Some("allow".into())),
            (3, Kind::Outcome, "files_write", None),
            (4, Kind::Call, "files_write", Some("allow".into())),
            (5, Kind::Capability, "write_file", Some("deny".into())),
            (6, Kind::Outcome, "files_write", None),
        ],
        "{records:#?}"
    );
    let cap = &records[1];
    assert_eq!(cap.resource, r#"Workspace::"assistant""#);
    assert_eq!(cap.parent, Some(1));
    assert_eq!(cap.policy_ids, ["workspace-only"]);
    assert_eq!(
        serde_json::from_str::<Value>(&cap.arguments).unwrap(),
        json!({"path": "notes/a.txt", "tool": "files_write"})
    );
    assert_eq!(records[4].policy_ids, ["no-dotfile-writes"]);
    assert_eq!(records[4].parent, Some(4));
    assert_eq!(records[5].outcome, Some(Outcome::Error));
}

#[test]
fn http_and_secret_uses_are_recorded_without_the_secret() {
    // The loopback host is not in any host group, so the request is denied
    // before any connection: the record names the host and the policy gap.
    let server = LoopbackServer::start("ok");
    let mut b = TestBroker::start(BrokerOptions::default());
    let mut c = b.client("assistant");
    let result = c.call_tool("http_get", json!({"url": server.url("/data"), "headers": {"Authorization": "Bearer {{secret:github_token}}"}}));
    assert!(is_error(&result), "{result}");
    assert_eq!(server.connections(), 0);
    drop(c);
    b.stop();
    let records = b.records();
    let http = records
        .iter()
        .find(|r| r.action == "http_request")
        .expect("an http_request record");
    assert_eq!(http.kind, Kind::Capability);
    assert_eq!(http.decision.as_deref(), Some("deny"));
    assert_eq!(http.resource, r#"Host::"127.0.0.1""#);
    let args: Value = serde_json::from_str(&http.arguments).unwrap();
    assert_eq!(args["method"], "GET");
    assert_eq!(args["path"], "/data");
    // The call's own record has the header under a secret-looking key.
    let call = &records[0];
    assert!(call.redacted);
    assert!(!call.arguments.contains("{{secret"), "{}", call.arguments);
}

#[test]
fn identity_comes_from_the_socket_not_from_anything_the_client_says() {
    let mut b = TestBroker::start(BrokerOptions::default());
    let mut c = McpClient::connect(&b.socket("reporter")).unwrap();
    let init = c.request(
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "assistant", "version": "1"}}),
    );
    assert!(init.get("result").is_some());
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let r = c.request("tools/call", json!({"name": "http_get", "arguments": {"url": "https://api.github.com/"}, "_meta": {"agent": "assistant"}}));
    assert!(is_error(&r["result"]), "{r}");
    drop(c);
    b.stop();
    assert_eq!(b.records()[0].agent, "reporter");
}

#[test]
fn socket_directories_are_private_and_per_agent() {
    let b = TestBroker::start(BrokerOptions::default());
    let a = b.endpoint("assistant");
    let r = b.endpoint("reporter");
    assert_ne!(a.dir(), r.dir());
    assert_eq!(
        std::fs::metadata(a.dir()).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(a.socket()).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(a.socket().parent(), Some(a.dir()));
}

#[test]
fn bad_agent_ids_and_double_serving_are_refused() {
    let b = TestBroker::start(BrokerOptions {
        agents: vec!["assistant"],
        ..BrokerOptions::default()
    });
    let e = b
        .serve_more("../etc")
        .err()
        .expect("a path-like id is refused");
    assert!(e.to_string().contains("`../etc` is not allowed"), "{e}");
    let e = b
        .serve_more("assistant")
        .err()
        .expect("serving twice is refused");
    assert!(e.to_string().contains("already being served"), "{e}");
    // Once an endpoint is gone, the agent can be served again.
    let again = b.serve_more("reporter").unwrap();
    drop(again);
    assert!(b.serve_more("reporter").is_ok());
}

#[test]
fn an_agent_missing_from_the_entities_is_denied_everything() {
    let mut b = TestBroker::start(BrokerOptions {
        agents: vec!["assistant", "stranger"],
        ..BrokerOptions::default()
    });
    let mut c = b.client("stranger");
    assert!(c.list_tools().is_empty());
    let r = c.call_tool("echo", json!({"message": "hi"}));
    assert!(is_error(&r), "{r}");
    drop(c);
    b.stop();
    let rec = &b.records()[0];
    assert_eq!(rec.decision.as_deref(), Some("deny"));
    assert!(
        rec.errors[0].contains("unknown principal"),
        "{:?}",
        rec.errors
    );
}

#[test]
fn the_session_counter_lets_policy_cap_calls() {
    let b = TestBroker::start(BrokerOptions {
        extra_policy: Some(
            r#"@id("three-echoes-per-session")
forbid (principal, action == Action::"echo", resource)
when { context.common.calls_in_session > 3 };"#
                .into(),
        ),
        ..BrokerOptions::default()
    });
    let mut c = b.client("assistant");
    for _ in 0..3 {
        assert!(!is_error(&c.call_tool("echo", json!({"message": "x"}))));
    }
    let fourth = c.call_tool("echo", json!({"message": "x"}));
    assert!(is_error(&fourth));
    assert_eq!(
        fourth["structuredContent"]["policy_ids"],
        json!(["three-echoes-per-session"])
    );
    // A new session starts counting again.
    let mut c2 = b.client("assistant");
    assert!(!is_error(&c2.call_tool("echo", json!({"message": "x"}))));
}

#[test]
fn an_allowed_request_reaches_its_host_with_the_secret_filled_in_on_the_host() {
    let server = LoopbackServer::start("fetched");
    let mut b = TestBroker::start(BrokerOptions {
        extra_policy: Some(
            r#"@id("assistants-to-loopback")
permit (principal in Team::"assistants", action == Action::"http_request", resource == Host::"127.0.0.1");
@id("token-to-loopback")
permit (principal in Team::"assistants", action == Action::"use_secret", resource == Secret::"github_token")
when { context.host == "127.0.0.1" };"#
                .into(),
        ),
        secrets: corral_tools::StaticSecrets::new().with("github_token", "s3cr3t-value"),
        ..BrokerOptions::default()
    });
    let mut c = b.client("assistant");
    let r = c.call_tool(
        "http_get",
        json!({"url": server.url("/data"), "headers": {"x-token": "Bearer {{secret:github_token}}"}}),
    );
    assert!(!is_error(&r), "{r}");
    assert_eq!(r["structuredContent"]["status"], 200, "{r}");
    assert_eq!(r["structuredContent"]["body"], "fetched");
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-token"), Some("Bearer s3cr3t-value"));
    drop(c);
    b.stop();

    let records = b.records();
    let summary: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.kind,
                r.action.as_str(),
                r.decision.clone(),
                r.policy_ids.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                Kind::Call,
                "http_get",
                Some("allow".into()),
                vec!["http-get-for-assistants".to_string()]
            ),
            // Decided on the name, then on the address it resolved to.
            (
                Kind::Capability,
                "http_request",
                Some("allow".into()),
                vec!["assistants-to-loopback".to_string()]
            ),
            (
                Kind::Capability,
                "http_request",
                Some("allow".into()),
                vec!["assistants-to-loopback".to_string()]
            ),
            (
                Kind::Capability,
                "use_secret",
                Some("allow".into()),
                vec!["token-to-loopback".to_string()]
            ),
            (Kind::Outcome, "http_get", None, vec![]),
        ],
        "{records:#?}"
    );
    let args = |i: usize| -> Value { serde_json::from_str(&records[i].arguments).unwrap() };
    assert!(args(1).get("address").is_none(), "{}", records[1].arguments);
    assert_eq!(
        args(2)["address"]["__extn"]["arg"],
        "127.0.0.1",
        "{}",
        records[2].arguments
    );
    for file in [b.audit_path.clone(), b.audit_path.with_extension("db-wal")] {
        let raw = std::fs::read(&file).unwrap_or_default();
        assert!(
            !raw.windows(12).any(|w| w == b"s3cr3t-value"),
            "the secret reached {}",
            file.display()
        );
    }
}

#[test]
fn the_agent_can_connect_but_cannot_change_its_socket_directory() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    // The tests run as root here (as CI does), which chown requires.
    let b = TestBroker::start(BrokerOptions {
        socket_owner: Some((10001, 10002)),
        ..BrokerOptions::default()
    });
    let e = b.endpoint("reporter");
    // The directory stays the broker's; the agent's group may only enter.
    let dir = std::fs::metadata(e.dir()).unwrap();
    assert_eq!((dir.uid(), dir.gid()), (0, 10002));
    assert_eq!(dir.permissions().mode() & 0o7777, 0o710);
    let socket = std::fs::symlink_metadata(e.socket()).unwrap();
    assert_eq!((socket.uid(), socket.gid()), (10001, 10002));
    assert_eq!(socket.permissions().mode() & 0o777, 0o600);
    // As the agent's uid: plant a file, a link, and move the socket away.
    let d = e.dir().display();
    let tried = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "touch {d}/planted; ln -s /etc/shadow {d}/link; mv {d}/mcp.sock {d}/moved"
        ))
        .uid(10001)
        .gid(10002)
        .output()
        .unwrap();
    let entries: Vec<String> = std::fs::read_dir(e.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        entries,
        ["mcp.sock"],
        "the agent changed its socket directory: {}",
        String::from_utf8_lossy(&tried.stderr)
    );
    // The broker still serves it.
    assert!(!is_error(
        &b.client("reporter")
            .call_tool("echo", json!({"message": "x"}))
    ));
}

#[test]
fn unknown_tools_and_bad_input_are_refused_and_recorded_with_their_class() {
    let mut b = TestBroker::start(BrokerOptions::default());
    let mut c = b.client("assistant");
    let r = c.call_tool("no_such_tool", json!({}));
    assert!(is_error(&r));
    assert_eq!(r["structuredContent"]["error"], "unknown-tool", "{r}");
    assert!(result_text(&r).contains("tools/list"), "{r}");
    let r = c.call_tool("files_write", json!({"path": 7, "content": "x"}));
    assert!(is_error(&r));
    assert_eq!(r["structuredContent"]["error"], "invalid-input", "{r}");
    drop(c);
    b.stop();
    let records = b.records();
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|r| r.decision.as_deref() == Some("deny") && !r.errors.is_empty())
    );
}

#[test]
fn the_hot_path_and_rmcp_give_the_same_answer_and_the_same_records() {
    let mut b = TestBroker::start(BrokerOptions::default());
    let mut c = b.client("assistant");
    let args = json!({"message": "same"});
    // A plain call is answered on the connection's reader thread; one with
    // `_meta` is handed to rmcp's service. The agent cannot tell them apart.
    let plain = c.call_tool("echo", args.clone());
    let via_rmcp = c.request(
        "tools/call",
        json!({"name": "echo", "arguments": args, "_meta": {"progressToken": 7}}),
    );
    assert_eq!(plain, via_rmcp["result"], "{via_rmcp}");
    assert!(!is_error(&plain), "{plain}");
    // A denial looks the same on both paths too.
    let denied = json!({"name": "files_write", "arguments": {"path": ".env", "content": "x"}});
    let plain_denial = c.request("tools/call", denied.clone());
    let mut with_meta = denied;
    with_meta["_meta"] = json!({"progressToken": 8});
    let rmcp_denial = c.request("tools/call", with_meta);
    let strip_seq = |v: &Value| {
        let text = result_text(&v["result"]);
        text.split("(audit record")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    assert!(is_error(&plain_denial["result"]), "{plain_denial}");
    assert_eq!(strip_seq(&plain_denial), strip_seq(&rmcp_denial));
    drop(c);
    b.stop();

    let records = b.records();
    let calls: Vec<_> = records.iter().filter(|r| r.kind == Kind::Call).collect();
    let decisions: Vec<_> = calls.iter().map(|r| r.decision.as_deref()).collect();
    assert_eq!(
        decisions,
        [Some("allow"), Some("allow"), Some("deny"), Some("deny")],
        "{records:#?}"
    );
    let sessions: Vec<i64> = calls
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.session).unwrap()["calls_in_session"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(sessions, [1, 2, 3, 4], "one counter for both paths");
    let outcomes = records
        .iter()
        .filter(|r| r.kind == Kind::Outcome && r.outcome == Some(Outcome::Ok))
        .count();
    assert_eq!(outcomes, 2, "{records:#?}");
}

#[test]
fn stopping_ends_open_connections_and_keeps_every_record() {
    let mut b = TestBroker::start(BrokerOptions::default());
    let mut c = b.client("assistant");
    for i in 0..20 {
        let r = c.call_tool("echo", json!({"message": i.to_string()}));
        assert!(!is_error(&r), "{r}");
    }
    // The client is still connected: stopping must end its connection
    // (its thread holds the audit log) and still commit every outcome.
    b.stop();
    assert!(
        c.read_message().is_none(),
        "the broker should have closed the connection"
    );
    let records = b.records();
    assert_eq!(
        records.iter().filter(|r| r.kind == Kind::Outcome).count(),
        20,
        "{records:#?}"
    );
}

/// The broker makes each call's instance while the connection is idle;
/// each is still fresh: a guest's global counts one call every time, on
/// one connection and across three, one of whose calls take rmcp's path.
#[test]
fn every_call_runs_in_a_fresh_instance() {
    let b = TestBroker::start(BrokerOptions {
        extra_policy: Some(
            r#"@id("remember-for-tests")
permit (principal, action == Action::"remember", resource);"#
                .into(),
        ),
        ..BrokerOptions::default()
    });
    let mut one = b.client("assistant");
    let mut two = b.client("assistant");
    let mut three = b.client("assistant");
    // On `three`, calls carry `_meta` and so take rmcp's path, which makes
    // the next call's instance after its answer too.
    let mut call = |i: usize, name: &str, arguments: Value| match i % 3 {
        0 => two.call_tool(name, arguments),
        1 => three.request(
            "tools/call",
            json!({"name": name, "arguments": arguments, "_meta": {"progressToken": i}}),
        )["result"]
            .clone(),
        _ => one.call_tool(name, arguments),
    };
    for i in 0..12 {
        let result = call(i, "remember", json!({}));
        assert!(!is_error(&result), "{result}");
        assert_eq!(result["structuredContent"], json!({"calls": 1}), "call {i}");
        // Interleaved with another tool: the instance made for the next
        // call is of the last tool called, and is not used for another.
        let message = format!("m{i}");
        let echo = call(i, "echo", json!({"message": message}));
        assert_eq!(
            echo["structuredContent"],
            json!({"message": message}),
            "{echo}"
        );
    }
}
