//! `corral policy suggest` over the workload the issue describes: an agent
//! in observe mode writes under two folders, calls two hosts and sends one
//! secret; the suggestion, enforced alone, allows that workload and denies
//! a third folder, a third host and the secret sent elsewhere.
//!
//! The broker runs in-process (`corral_tests::broker`), where the tests'
//! loopback hosts are open; the suggestion comes from the real `corral`
//! binary over its audit log.

use std::path::Path;
use std::process::{Command, Output};

use corral_tests::broker::{BrokerOptions, TestBroker};
use corral_tests::mcp::{McpClient, is_error, result_text};
use corral_tests::{LoopbackServer, component_path};
use corral_tools::StaticSecrets;
use serde_json::{Value, json};

const SECRET: &str = "s3cret-for-suggest";

/// Two of the loopback hosts in a host group, the third outside it.
fn host_entities() -> Vec<Value> {
    let host = |ip: &str, grouped: bool| {
        let parents = if grouped {
            json!([{ "type": "HostGroup", "id": "test-services" }])
        } else {
            json!([])
        };
        json!({ "uid": { "type": "Host", "id": ip }, "attrs": {}, "parents": parents })
    };
    vec![
        json!({ "uid": { "type": "HostGroup", "id": "test-services" }, "attrs": {}, "parents": [] }),
        host("127.0.0.1", true),
        host("127.0.0.2", true),
        host("127.0.0.3", false),
    ]
}

fn broker(observe: bool, extra_policy: String) -> TestBroker {
    TestBroker::start(BrokerOptions {
        agents: vec!["reporter"],
        observe: if observe {
            vec!["reporter"]
        } else {
            Vec::new()
        },
        extra_policy: Some(extra_policy),
        extra_entities: host_entities(),
        secrets: StaticSecrets::new().with("github_token", SECRET),
        ..BrokerOptions::default()
    })
}

fn corral(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_corral"));
    command
        .args(args)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env_remove("RUST_LOG")
        .env_remove("CORRAL_AUDIT");
    for tool in ["echo", "files", "http-get"] {
        command.arg("--tool").arg(component_path(tool));
    }
    command.output().expect("run corral")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The workload: writes under notes/ and docs/, a GET to each grouped
/// host, the GitHub token to the first only.
fn workload(r: &mut McpClient, one: &LoopbackServer, two: &LoopbackServer) {
    for (path, content) in [("notes/a.txt", "one"), ("docs/b/c.txt", "two")] {
        let out = r.call_tool("files_write", json!({"path": path, "content": content}));
        assert!(!is_error(&out), "{path}: {out}");
    }
    let out = r.call_tool(
        "http_get",
        json!({"url": one.url("/status"), "headers": {"Authorization": "Bearer {{secret:github_token}}"}}),
    );
    assert!(!is_error(&out), "{out}");
    let out = r.call_tool("http_get", json!({"url": two.url("/items?page=2")}));
    assert!(!is_error(&out), "{out}");
}

#[test]
fn suggest_covers_two_folders_two_hosts_and_a_secret_and_nothing_else() {
    let one = LoopbackServer::start_on("127.0.0.1", "one");
    let two = LoopbackServer::start_on("127.0.0.2", "two");
    let three = LoopbackServer::start_on("127.0.0.3", "three");

    // Observed: nothing but the secret has a permit for the reporter.
    let secret_permit = r#"@id("token-to-service-one")
permit (principal == Agent::"reporter", action == Action::"use_secret", resource == Secret::"github_token")
when { context.host == "127.0.0.1" };"#;
    let mut b = broker(true, secret_permit.into());
    let mut r = b.client("reporter");
    workload(&mut r, &one, &two);
    drop(r);
    b.stop();
    let seen = one.requests();
    assert_eq!(
        seen.first().and_then(|s| s.header("authorization")),
        Some(format!("Bearer {SECRET}").as_str()),
        "a permitted secret is sent in observe mode"
    );

    let out_file = b.dir.path().join("suggested.cedar");
    let audit = b.audit_path.display().to_string();
    let policies = b.policy_dir.display().to_string();
    let out = corral(
        b.dir.path(),
        &[
            "policy",
            "suggest",
            "--agent",
            "reporter",
            "--audit",
            &audit,
            "--dir",
            &policies,
            "--out",
            &out_file.display().to_string(),
        ],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{}{stderr}", text(&out.stdout));
    assert!(
        stderr.contains("observed record(s) allowed by the suggestion")
            && stderr.contains("; 0 call(s) denied at the time it would allow"),
        "{stderr}"
    );
    let suggested = std::fs::read_to_string(&out_file).unwrap();
    for expected in [
        // The two hosts, by the group they share.
        r#"resource in HostGroup::"test-services""#,
        // The URLs, by their origins.
        &format!(r#"context.input.url like "{}/*""#, one.url("")),
        &format!(r#"context.input.url like "{}/*""#, two.url("")),
        // The secret, to the one host it was sent to.
        r#"resource == Secret::"github_token""#,
        r#"["127.0.0.1"].contains(context.host)"#,
        // The folders.
        r#"context.input.path like "docs/*""#,
        r#"context.input.path like "notes/*""#,
        "address: resolved by the host",
    ] {
        assert!(suggested.contains(expected), "{expected} in\n{suggested}");
    }
    for check in [
        &["policy", "fmt", "--check", "--dir"][..],
        &["policy", "validate", "--dir"],
    ] {
        let copy = b.dir.path().join("with-suggestion");
        corral_tests::broker::copy_policies(&copy);
        std::fs::copy(
            b.policy_dir.join("entities.json"),
            copy.join("entities.json"),
        )
        .unwrap();
        std::fs::copy(&out_file, copy.join("suggested.cedar")).unwrap();
        let mut args = check.to_vec();
        let copy_text = copy.display().to_string();
        args.push(&copy_text);
        let out = corral(b.dir.path(), &args);
        assert!(
            out.status.success(),
            "{check:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    // Enforced alone (the secret's own permit removed), the suggestion
    // allows the same workload ...
    let mut b = broker(false, suggested);
    let mut r = b.client("reporter");
    workload(&mut r, &one, &two);
    assert_eq!(
        one.requests()
            .last()
            .and_then(|s| s.header("authorization").map(str::to_string)),
        Some(format!("Bearer {SECRET}"))
    );
    // ... and nothing outside it: a third folder, a third host, the secret
    // sent to the other grouped host (on a path the suggestion allows
    // there: the HTTP paths seen are few, so they are held to their set).
    let out = r.call_tool("files_write", json!({"path": "tmp/x.txt", "content": "x"}));
    assert!(is_error(&out), "a third folder: {out}");
    let out = r.call_tool("http_get", json!({"url": three.url("/status")}));
    assert!(is_error(&out), "a third host: {out}");
    assert_eq!(three.connections(), 0);
    let before = two.connections();
    let out = r.call_tool(
        "http_get",
        json!({"url": two.url("/status"), "headers": {"Authorization": "Bearer {{secret:github_token}}"}}),
    );
    assert!(is_error(&out), "the secret elsewhere: {out}");
    assert!(
        result_text(&out).contains("github_token"),
        "the denial names the secret: {out}"
    );
    assert_eq!(two.connections(), before, "no request was made");
    drop(r);
    b.stop();
    assert!(!b.workspace("reporter").join("tmp/x.txt").exists());
}
