//! What an operator and an auditor read from a running `corral up`: the
//! audit dashboard in a real headless Chromium, `/metrics` in the
//! Prometheus text format with decision counts equal to the audit log's,
//! on loopback without a token and behind one anywhere else.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use corral_tests::browser::{Browser, screenshot_path};
use corral_tests::mcp::{McpClient, is_error};
use corral_tests::up::{UpConfig, UpHost, UpOptions};
use serde_json::json;

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

/// A GET of `url` (`http://ADDR/PATH`) over a plain socket: status and body.
pub(crate) fn get(url: &str, token: Option<&str>) -> (u16, String) {
    get_as(url, token, None)
}

/// The same, naming `host` in the `Host` header instead of the address.
fn get_as(url: &str, token: Option<&str>, host: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (addr, path) = rest.split_once('/').expect("a path");
    let host = host.unwrap_or(addr);
    let mut stream = TcpStream::connect(addr).expect("connect to the web endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nhost: {host}\r\n{auth}connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_string())
}

/// `POST /login` with `token`: the whole response head.
fn login(base: &str, token: &str) -> String {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let body = format!("token={token}");
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "POST /login HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `GET /` sending `cookie`: status and body.
fn get_with_cookie(base: &str, cookie: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET / HTTP/1.1\r\nhost: {addr}\r\ncookie: {cookie}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// Samples named `name` by their labels, as a Prometheus parser reads them.
pub(crate) fn samples(text: &str, name: &str) -> BTreeMap<Vec<(String, String)>, f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the metrics parse as the Prometheus text format");
    scrape
        .samples
        .into_iter()
        .filter(|s| s.metric == name)
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            Some((labels, value))
        })
        .collect()
}

#[test]
fn metrics_count_what_the_audit_log_holds() {
    let config = UpConfig::write(&UpOptions {
        extra_toml: Some("[web]\nlisten = \"127.0.0.1:0\"\n".into()),
        ..UpOptions::default()
    });
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    let url = format!(
        "{}metrics",
        host.web.clone().expect("corral up prints the web endpoint")
    );
    let mut agent = McpClient::ready(&host.socket("assistant"));
    for message in ["one", "two"] {
        assert!(!is_error(
            &agent.call_tool("echo", json!({ "message": message }))
        ));
    }
    // Denied at the capability: a dotfile.
    assert!(is_error(&agent.call_tool(
        "files_write",
        json!({"path": "notes/.env", "content": "x"})
    )));
    // A tool that does not exist, named by the agent.
    assert!(is_error(&agent.call_tool("made_up_tool", json!({}))));
    drop(agent);
    // Loopback needs no token, but only loopback names may ask: a page
    // that re-pointed its own name at 127.0.0.1 is refused.
    let (status, body) = get(&url, None);
    let rebound = get_as(&url, None, Some("evil.example"));
    assert_eq!(rebound.0, 403, "{}", rebound.1);
    let stopped = host.stop();
    assert_eq!(status, 200, "{body}");
    assert_eq!(stopped, Some(0));

    let mut expected: BTreeMap<Vec<(String, String)>, f64> = BTreeMap::new();
    for r in config.audit_records(CORRAL.as_ref()) {
        let (Some(kind), Some(decision)) = (r["kind"].as_str(), r["decision"].as_str()) else {
            continue;
        };
        if !matches!(kind, "call" | "capability") {
            continue;
        }
        // Tools that were not loaded share one label: the agent names them.
        let action = match r["action"].as_str().unwrap() {
            "made_up_tool" => corral_web::OTHER,
            known => known,
        };
        let mut labels = vec![
            ("action".to_string(), action.to_string()),
            ("decision".to_string(), decision.to_string()),
            ("kind".to_string(), kind.to_string()),
        ];
        labels.sort();
        *expected.entry(labels).or_default() += 1.0;
    }
    let counted = samples(&body, "corral_decisions_total");
    assert_eq!(counted, expected, "{body}");
    assert!(
        expected
            .keys()
            .any(|l| l.contains(&("action".into(), corral_web::OTHER.into()))),
        "the made-up tool is counted, under one label: {expected:?}"
    );
    assert!(
        expected
            .keys()
            .any(|l| l.contains(&("decision".into(), "deny".into()))
                && l.contains(&("kind".into(), "capability".into()))),
        "the dotfile's denial is in the log: {expected:?}"
    );
    let outcomes = samples(&body, "corral_outcomes_total");
    assert_eq!(
        outcomes.get(&vec![
            ("action".to_string(), "echo".to_string()),
            ("outcome".to_string(), "ok".to_string())
        ]),
        Some(&2.0),
        "{body}"
    );
    assert!(body.contains("corral_audit_sync_seconds_count"), "{body}");
    assert!(
        body.contains("corral_decision_duration_seconds_count 4"),
        "{body}"
    );
}

#[test]
fn a_listener_off_loopback_needs_a_token_and_checks_it() {
    // Refused at start without one.
    let config = UpConfig::write(&UpOptions {
        extra_toml: Some("[web]\nlisten = \"0.0.0.0:0\"\n".into()),
        ..UpOptions::default()
    });
    let out = Command::new(CORRAL)
        .args(["up", "--external-agents", "--config"])
        .arg(&config.path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is not loopback") && stderr.contains("token_file"),
        "{stderr}"
    );

    // With a token from the environment: nothing without it, or with
    // another; the metrics with it.
    let config = UpConfig::write(&UpOptions {
        extra_toml: Some(
            "[web]\nlisten = \"0.0.0.0:0\"\ntoken_env = \"CORRAL_TEST_MODEL_KEY\"\n".into(),
        ),
        ..UpOptions::default()
    });
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    let url = format!("{}metrics", host.web.clone().expect("the web endpoint"))
        .replace("0.0.0.0", "127.0.0.1");
    let none = get(&url, None);
    let wrong = get(&url, Some("sk-test-CORRAL-e2e-wrong-token"));
    let right = get(&url, Some(corral_tests::up::TEST_MODEL_KEY));
    // A browser signs in once: the token becomes an HttpOnly cookie.
    let base = url.trim_end_matches("metrics").to_string();
    let refused = login(&base, "sk-test-CORRAL-e2e-wrong-token");
    let signed_in = login(&base, corral_tests::up::TEST_MODEL_KEY);
    let cookie = signed_in
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .and_then(|l| l.split_once(':').map(|(_, v)| v.trim()))
        .and_then(|c| c.split(';').next())
        .map(str::to_string);
    let with_cookie = cookie.as_deref().map(|c| get_with_cookie(&base, c));
    host.stop();
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(
        signed_in.starts_with("HTTP/1.1 303") && signed_in.contains("HttpOnly; SameSite=Strict"),
        "{signed_in}"
    );
    assert_eq!(
        with_cookie.map(|r| r.0),
        Some(200),
        "the cookie opens the overview"
    );
    assert_eq!(none.0, 401, "{}", none.1);
    assert_eq!(wrong.0, 401, "{}", wrong.1);
    assert!(!none.1.contains("corral_"), "no metric leaks: {}", none.1);
    assert_eq!(right.0, 200, "{}", right.1);
    assert!(
        right.1.contains("corral_audit_records_total"),
        "{}",
        right.1
    );
}

/// Text an agent sends that would run as script if a page put it in as
/// markup.
const INJECTED: &str = "<script>window.__pwned = 1</script><b id=\"injected\">bold</b>";

#[test]
fn the_dashboard_in_chromium_shows_decisions_live_and_a_broken_chain() {
    let config = UpConfig::write(&UpOptions {
        extra_toml: Some("[web]\nlisten = \"127.0.0.1:0\"\n".into()),
        extra_policy: Some(
            r#"@id("no-forbidden-echo")
forbid (principal, action == Action::"echo", resource)
when { context.input has message && context.input.message == "forbidden" };"#
                .into(),
        ),
        ..UpOptions::default()
    });
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    let base = host.web.clone().expect("corral up prints the web endpoint");
    let mut agent = McpClient::ready(&host.socket("assistant"));
    assert!(!is_error(
        &agent.call_tool("echo", json!({ "message": INJECTED }))
    ));
    assert!(is_error(
        &agent.call_tool("echo", json!({ "message": "forbidden" }))
    ));
    assert!(is_error(&agent.call_tool(
        "files_write",
        json!({"path": "notes/.env", "content": "x"})
    )));

    let browser = Browser::start();
    let mut page = browser.page();

    // The overview: the chain, the policy set, the chart, the top denied.
    page.open(&base);
    let chain = page.eval("document.getElementById('chain-state').textContent");
    assert!(
        chain
            .as_str()
            .is_some_and(|t| t.starts_with("Chain intact")),
        "{chain}"
    );
    let head = page.eval("document.getElementById('head-hash').textContent");
    assert_eq!(head.as_str().map(str::len), Some(64), "{head}");
    let records = config.audit_records(CORRAL.as_ref());
    let policy_hash = page.eval("document.getElementById('policy-hash').textContent");
    assert_eq!(
        policy_hash, records[0]["policy_hash"],
        "the set in force decided them"
    );
    let denied = page.eval("document.getElementById('top-denied').innerText");
    assert!(
        denied
            .as_str()
            .is_some_and(|t| t.contains("echo") && t.contains("no-forbidden-echo")),
        "{denied}"
    );
    let bars = page.eval("document.querySelectorAll('#decisions-chart rect.bar.deny').length");
    assert!(
        bars.as_u64().is_some_and(|n| n >= 1),
        "a denied bar: {bars}"
    );
    page.screenshot(&screenshot_path("dashboard-overview"));

    // The decisions: an argument holding markup is shown as text.
    page.open(&format!("{base}decisions"));
    let table = page.eval("document.getElementById('decisions-body').innerText");
    assert!(
        table
            .as_str()
            .is_some_and(|t| t.contains("<script>window.__pwned = 1</script>")),
        "{table}"
    );
    assert_eq!(
        page.eval("window.__pwned === undefined"),
        true,
        "the agent's script never ran"
    );
    assert_eq!(
        page.eval("document.getElementById('injected') === null"),
        true
    );
    // New decisions arrive while the page is open.
    page.wait_for(
        "document.getElementById('live-status').textContent.startsWith('live')",
        Duration::from_secs(10),
    );
    assert!(!is_error(
        &agent.call_tool("echo", json!({ "message": "arrived live" }))
    ));
    assert!(!is_error(
        &agent.call_tool("echo", json!({ "message": INJECTED }))
    ));
    page.wait_for(
        "[...document.querySelectorAll('#decisions-body tr.live')].some(r => r.innerText.includes('arrived live'))",
        Duration::from_secs(10),
    );
    page.wait_for(
        "[...document.querySelectorAll('#decisions-body tr.live')].some(r => r.innerText.includes('<script>'))",
        Duration::from_secs(10),
    );
    assert_eq!(
        page.eval("window.__pwned === undefined && document.getElementById('injected') === null"),
        true
    );
    page.screenshot(&screenshot_path("dashboard-decisions"));

    // Filters: only the forbid's denial.
    page.open(&format!(
        "{base}decisions?decision=deny&policy=no-forbidden-echo"
    ));
    let rows = page.eval("document.querySelectorAll('#decisions-body tr').length");
    assert_eq!(rows, 1, "one denial by that policy");

    // One record: the deciding policy's source, the explanation, the chain.
    let records = config.audit_records(CORRAL.as_ref());
    let forbidden = records
        .iter()
        .find(|r| r["kind"] == "call" && r["decision"] == "deny" && r["action"] == "echo")
        .expect("the denied echo");
    let seq = forbidden["seq"].as_i64().unwrap();
    let before = records
        .iter()
        .find(|r| r["seq"] == seq - 1)
        .expect("the record before");
    page.open(&format!("{base}records/{seq}"));
    assert_eq!(
        page.eval("document.getElementById('decision').textContent"),
        "deny"
    );
    let source = page.eval(
        "[...document.querySelectorAll('pre.policy-source')].map(p => p.textContent).join('\\n')",
    );
    assert!(
        source
            .as_str()
            .is_some_and(|t| t.contains("forbid") && t.contains("\"forbidden\"")),
        "{source}"
    );
    let why = page.eval("document.getElementById('explanation').textContent");
    assert!(
        why.as_str()
            .is_some_and(|t| t.contains("no-forbidden-echo")),
        "{why}"
    );
    let chain = page.eval("document.getElementById('chain-position').innerText");
    assert!(
        chain
            .as_str()
            .is_some_and(|t| t.contains(before["hash"].as_str().unwrap())
                && t.contains(forbidden["hash"].as_str().unwrap())),
        "{chain}"
    );
    page.screenshot(&screenshot_path("dashboard-record"));
    page.open(&format!("{base}policies"));
    assert_eq!(
        page.eval("document.getElementById('policy-no-forbidden-echo') !== null"),
        true
    );
    drop(agent);
    assert_eq!(host.stop(), Some(0));

    // A tampered copy of the log, served on its own: the broken chain.
    let copy = config.dir.path().join("tampered.db");
    std::fs::copy(config.audit(), &copy).unwrap();
    let tamper = Command::new("sqlite3")
        .arg(&copy)
        .arg(format!(
            "DROP TRIGGER audit_no_update; UPDATE audit SET decision = 'allow' WHERE seq = {seq};"
        ))
        .output()
        .expect("the sqlite3 CLI (installed by `cargo xtask setup`)");
    assert!(
        tamper.status.success(),
        "{}",
        String::from_utf8_lossy(&tamper.stderr)
    );
    let mut served = Command::new(CORRAL)
        .args(["audit", "dashboard", "--listen", "127.0.0.1:0", "--audit"])
        .arg(&copy)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(served.stdout.take().unwrap()).lines();
    let copy_base = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("web ").map(str::to_string))
        .expect("the dashboard's address");
    page.open(&copy_base);
    let chain = page.eval("document.getElementById('chain-state').textContent");
    page.screenshot(&screenshot_path("dashboard-tampered"));
    let _ = served.kill();
    let _ = served.wait();
    assert!(
        chain
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("Chain BROKEN at record {seq}"))),
        "{chain}"
    );
}
