//! `corral broker`, `corral audit` and `corral policy replay` as a user and
//! an auditor would run them: a real broker process, real sockets, the
//! `sqlite3` CLI for tampering, and kill -9 for crashes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corral_audit::{AuditReader, Filter, Kind};
use corral_tests::broker::copy_policies;
use corral_tests::component_path;
use corral_tests::mcp::{McpClient, is_error};
use serde_json::{Value, json};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        copy_policies(&env.path("policies"));
        env
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn audit(&self) -> String {
        self.path("audit.db").display().to_string()
    }

    fn corral(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(args)
            .current_dir(self.dir.path())
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env_remove("RUST_LOG")
            .env_remove("CORRAL_AUDIT")
            .output()
            .expect("run corral")
    }

    /// `corral ARGS --tool …` with the tools the broker serves, for the
    /// policy commands that need their actions in the schema.
    fn corral_with_tools(&self, args: &[&str]) -> Output {
        let tools: Vec<String> = ["echo", "files", "http-get"]
            .iter()
            .flat_map(|t| {
                [
                    "--tool".to_string(),
                    component_path(t).display().to_string(),
                ]
            })
            .collect();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(tools.iter().map(String::as_str));
        self.corral(&all)
    }

    /// Starts `corral broker` and waits for its `ready` line.
    fn broker(&self, extra: &[&str]) -> Broker {
        self.broker_logging(&[], Stdio::inherit(), extra)
    }

    /// The same, with `global` flags before `broker` and standard error
    /// sent to `stderr`.
    fn broker_logging(&self, global: &[&str], stderr: Stdio, extra: &[&str]) -> Broker {
        let mut args: Vec<String> = global.iter().map(|s| s.to_string()).collect();
        args.extend(
            [
                "broker",
                "--agent",
                "assistant=ws/assistant",
                "--agent",
                "reporter=ws/reporter",
                "--policies",
                "policies",
                "--socket-dir",
                "run",
                "--audit",
                "audit.db",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        for t in ["echo", "files", "http-get"] {
            args.push("--tool".into());
            args.push(component_path(t).display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_corral"))
            .args(&args)
            .current_dir(self.dir.path())
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start corral broker");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut sockets = Vec::new();
        loop {
            let line = lines.next().expect("broker exited before `ready`").unwrap();
            if line == "ready" {
                break;
            }
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts[0], "agent", "unexpected line {line:?}");
            sockets.push((parts[1].to_string(), self.dir.path().join(parts[3])));
        }
        Broker { child, sockets }
    }
}

struct Broker {
    child: Child,
    sockets: Vec<(String, PathBuf)>,
}

impl Broker {
    fn socket(&self, agent: &str) -> &Path {
        &self.sockets.iter().find(|(a, _)| a == agent).unwrap().1
    }

    /// SIGTERM, and wait: the writer drains on the way out.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "broker exited with {status}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn audit_commands_show_and_verify_what_the_broker_recorded() {
    let env = Env::new();
    let broker = env.broker(&[]);
    let mut a = McpClient::ready(broker.socket("assistant"));
    let mut r = McpClient::ready(broker.socket("reporter"));
    assert!(!is_error(&a.call_tool("echo", json!({"message": "one"}))));
    assert!(is_error(&r.call_tool(
        "http_get",
        json!({"url": "https://api.github.com/"})
    )));
    assert!(!is_error(&a.call_tool(
        "files_write",
        json!({"path": "notes/n.txt", "content": "x"})
    )));
    drop((a, r));
    broker.stop();

    // call, outcome, call(deny), call, capability, outcome
    let out = env.corral(&["audit", "verify", "--audit", &env.audit()]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).starts_with("ok: 6 records"),
        "{}",
        text(&out.stdout)
    );

    let out = env.corral(&[
        "audit",
        "query",
        "--audit",
        &env.audit(),
        "--agent",
        "reporter",
        "--decision",
        "deny",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["action"], "http_get");
    assert_eq!(rows[0]["decision"], "deny");

    let out = env.corral(&[
        "audit",
        "query",
        "--audit",
        &env.audit(),
        "--tool",
        "echo",
        "--since",
        "1h",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .contains("allow [echo-for-all-agents]"),
        "{stdout}"
    );

    let out = env.corral(&["audit", "tail", "-n", "2", "--audit", &env.audit()]);
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stdout.lines().next().unwrap().starts_with("#5 "),
        "{stdout}"
    );

    let out = env.corral(&["audit", "export", "--jsonl", "--audit", &env.audit()]);
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[5]["prev_hash"], lines[4]["hash"]);

    let out = env.corral(&["audit", "query", "--audit", &env.audit(), "--since", "soon"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--since"),
        "{}",
        text(&out.stderr)
    );

    // An auditor's worst case: someone with write access edits a decision
    // with the sqlite3 CLI, after removing the guard triggers.
    let tamper = Command::new("sqlite3")
        .arg(env.path("audit.db"))
        .arg("DROP TRIGGER audit_no_update; UPDATE audit SET decision = 'allow' WHERE seq = 3;")
        .output()
        .expect("the sqlite3 CLI (installed by `cargo xtask setup`)");
    assert!(tamper.status.success(), "{}", text(&tamper.stderr));
    let out = env.corral(&["audit", "verify", "--audit", &env.audit()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("TAMPERED: record #3: its hash does not match its contents"),
        "{stdout}"
    );

    let missing = env.corral(&["audit", "verify", "--audit", "nope.db"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("no such audit log"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn logs_are_json_lines_or_plain_text_off_a_terminal() {
    let env = Env::new();
    for format in ["json", "text"] {
        let path = env.path(&format!("stderr-{format}"));
        let file = std::fs::File::create(&path).unwrap();
        let broker = env.broker_logging(
            &["--log-format", format],
            Stdio::from(file),
            &["--observe", "reporter"],
        );
        broker.stop();
        let log = std::fs::read_to_string(&path).unwrap();
        let warning = log
            .lines()
            .find(|l| l.contains("observe mode: calls"))
            .unwrap_or_else(|| panic!("no observe-mode warning in {log:?}"));
        assert!(
            !log.contains('\x1b'),
            "no colour codes off a terminal: {log:?}"
        );
        if format == "json" {
            let line: Value = serde_json::from_str(warning).expect("a JSON log line");
            assert_eq!(line["level"], "WARN", "{line}");
            assert_eq!(line["agent"], "reporter", "fields are top-level: {line}");
            assert!(line["timestamp"].is_string(), "{line}");
        } else {
            assert!(
                warning.contains(" WARN ") && warning.contains("agent=reporter"),
                "{warning}"
            );
        }
    }
}

#[test]
fn a_record_cannot_forge_another_or_drive_the_auditors_terminal() {
    let env = Env::new();
    {
        let log =
            corral_audit::AuditLog::open(corral_audit::AuditConfig::new(env.audit())).unwrap();
        // What a tool or an agent could put in fields it chooses: a line
        // break and a made-up record after it, and terminal controls.
        let forged = "\n#999 2026-12-07T19:00:00Z call       assistant echo Tool::\"echo\" allow [echo-for-all-agents] {}";
        let mut call = corral_audit::Entry::new(
            Kind::Call,
            "assistant",
            "files_write",
            format!("File::\"notes/a\x1b[2J\u{9b}1A{forged}\""),
        );
        call.detail = Some(format!("denied\r{forged}\x1b]52;c;ZXZpbA==\x07"));
        log.append_blocking(call).unwrap();
    }
    let out = env.corral(&["audit", "query", "--audit", &env.audit()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    // One record: its own line and its `why:` line, nothing else.
    assert_eq!(shown.lines().count(), 2, "{shown}");
    assert!(!shown.lines().any(|l| l.starts_with("#999")), "{shown}");
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'),
        "{shown:?}"
    );
    assert!(
        shown.contains(r"notes/a\u{1b}[2J\u{9b}1A\n#999") && shown.contains(r"denied\r\n#999"),
        "{shown}"
    );
}

#[test]
fn a_tool_cannot_forge_a_line_of_the_host_log() {
    let env = Env::new();
    std::fs::write(
        env.path("policies/forge.cedar"),
        "@id(\"assistant-may-forge\")\npermit(principal == Agent::\"assistant\", action == Action::\"forge\", resource);\n",
    )
    .unwrap();
    let path = env.path("stderr-text");
    let misbehave = component_path("misbehave").display().to_string();
    let broker = env.broker_logging(
        &["--log-format", "text", "--log", "info"],
        Stdio::from(std::fs::File::create(&path).unwrap()),
        &["--tool", &misbehave],
    );
    let mut client = McpClient::ready(broker.socket("assistant"));
    let out = client.call_tool("forge", json!({}));
    assert!(!is_error(&out), "{out}");
    drop(client);
    broker.stop();
    let log = std::fs::read_to_string(&path).unwrap();
    // The tool logs "done\r\n<a host-looking line>": that line must stay on
    // the tool's own line, attributed to it, and never start a line.
    let forged: Vec<&str> = log.lines().filter(|l| l.contains("FORGED")).collect();
    assert_eq!(forged.len(), 1, "{log}");
    assert!(
        forged[0].contains("tool=forge") && forged[0].contains(r"done\r\n2026-12-07"),
        "{log}"
    );
    assert!(!log.contains('\r'), "{log:?}");
}

#[test]
fn suggest_turns_an_observed_workload_into_permits_that_allow_just_it() {
    let env = Env::new();
    let broker = env.broker(&["--observe", "reporter"]);
    let mut r = McpClient::ready(broker.socket("reporter"));
    // The reporter (batch team) writes under two folders: notes/ has a
    // permit, docs/ has none and is let through in observe mode.
    for (path, content) in [
        ("notes/a.txt", "one"),
        ("docs/b.txt", "two"),
        ("docs/c/d.txt", "three"),
    ] {
        let out = r.call_tool("files_write", json!({"path": path, "content": content}));
        assert!(!is_error(&out), "{path}: {out}");
    }
    assert!(!is_error(&r.call_tool("echo", json!({"message": "hi"}))));
    drop(r);
    broker.stop();

    let args = vec![
        "policy",
        "suggest",
        "--agent",
        "reporter",
        "--audit",
        "audit.db",
        "--dir",
        "policies",
        "--out",
        "suggested.cedar",
    ];
    let out = env.corral_with_tools(&args);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("checked: 7 of 7 observed record(s) allowed"),
        "{}",
        text(&out.stderr)
    );
    // The prover shows where generalizing admitted requests no record
    // shows: a new file under docs/, say.
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("proved wider than observed where it generalizes")
            && stderr.contains("Agent Action::\"files_write\" Tool: e.g. Agent::\"reporter\""),
        "{stderr}"
    );
    let suggested = std::fs::read_to_string(env.path("suggested.cedar")).unwrap();
    assert!(
        suggested.contains(r#"@id("suggested-reporter-files_write")"#)
            && suggested.contains(r#"context.input.path like "docs/*""#)
            && suggested.contains(r#"context.input.path like "notes/*""#)
            && suggested.contains("content: free-form content, left unconstrained"),
        "{suggested}"
    );

    // Enforced, it allows the same workload and nothing outside it.
    std::fs::copy(
        env.path("suggested.cedar"),
        env.path("policies/suggested.cedar"),
    )
    .unwrap();
    let out = env.corral(&["policy", "fmt", "--check", "--dir", "policies"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    let out = env.corral_with_tools(&["policy", "validate", "--dir", "policies"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let broker = env.broker(&[]);
    let mut r = McpClient::ready(broker.socket("reporter"));
    for path in ["docs/new.txt", "notes/new.txt"] {
        let out = r.call_tool("files_write", json!({"path": path, "content": "new"}));
        assert!(!is_error(&out), "{path}: {out}");
    }
    let outside = r.call_tool("files_write", json!({"path": "tmp/x.txt", "content": "x"}));
    assert!(is_error(&outside), "a third folder stays denied: {outside}");
    drop(r);
    broker.stop();

    // With the suggestion merged, only the denied third folder is left,
    // and a denied call is not something to suggest from.
    let out = env.corral_with_tools(&[
        "policy", "suggest", "--agent", "reporter", "--audit", "audit.db", "--merge", "policies",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("that the current policies do not already allow"),
        "{}",
        text(&out.stderr)
    );
    // Asked for, the denied call is suggested from, and counted as such;
    // its permit's id does not clash with the one merged before.
    let out = env.corral_with_tools(&[
        "policy",
        "suggest",
        "--agent",
        "reporter",
        "--audit",
        "audit.db",
        "--merge",
        "policies",
        "--include-denied",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        text(&out.stdout).contains(r#"context.input.path like "tmp/*""#)
            && text(&out.stdout).contains(r#"@id("suggested-reporter-files_write-2")"#)
            && stderr.contains(
                "; 1 call(s) denied at the time it would allow (asked for with --include-denied)"
            ),
        "{}{stderr}",
        text(&out.stdout)
    );
}

#[test]
fn denials_are_explained_and_shadow_policies_only_recorded() {
    let env = Env::new();
    // A shadow forbid on the reporter's echo: tried, watched, never
    // enforced.
    std::fs::write(
        env.path("policies/shadow.cedar"),
        "@id(\"shadow-no-echo-for-batch\")\n@shadow\nforbid (principal in Team::\"batch\", action == Action::\"echo\", resource);\n",
    )
    .unwrap();
    let broker = env.broker(&[]);
    let mut r = McpClient::ready(broker.socket("reporter"));
    let mut a = McpClient::ready(broker.socket("assistant"));
    assert!(
        !is_error(&r.call_tool("echo", json!({"message": "still allowed"}))),
        "a shadow policy does not decide"
    );
    assert!(!is_error(
        &a.call_tool("echo", json!({"message": "same either way"}))
    ));
    let denied = a.call_tool("files_write", json!({"path": "docs/a.md", "content": "x"}));
    assert!(is_error(&denied));
    let said = denied.to_string();
    assert!(
        said.contains("files-write-notes-only: `context.input.path like \\\"notes/*\\\"` is false (context.input.path is \\\"docs/a.md\\\")"),
        "the agent is told which condition failed: {said}"
    );
    drop((a, r));
    broker.stop();

    let out = env.corral(&[
        "audit",
        "query",
        "--audit",
        &env.audit(),
        "--shadow-differs",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "only the reporter's echo differs: {rows:?}");
    assert_eq!(rows[0]["agent"], "reporter");
    assert_eq!(rows[0]["decision"], "allow");
    assert_eq!(
        rows[0]["shadow"],
        "with shadow policies enforced: deny by shadow-no-echo-for-batch"
    );

    let out = env.corral(&[
        "audit",
        "query",
        "--audit",
        &env.audit(),
        "--decision",
        "deny",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("why: denied: no permit matched — files-write-notes-only: `context.input.path like \"notes/*\"` is false"),
        "{stdout}"
    );
    let out = env.corral(&["audit", "verify", "--audit", &env.audit()]);
    assert!(
        out.status.success(),
        "records with a shadow verdict chain like any: {}",
        text(&out.stdout)
    );
}

#[test]
fn replay_lists_exactly_the_decisions_an_edit_flips() {
    let env = Env::new();
    let broker = env.broker(&[]);
    let mut a = McpClient::ready(broker.socket("assistant"));
    let mut r = McpClient::ready(broker.socket("reporter"));
    assert!(!is_error(&a.call_tool("echo", json!({"message": "a"}))));
    assert!(!is_error(&r.call_tool("echo", json!({"message": "r"}))));
    assert!(!is_error(&a.call_tool(
        "files_write",
        json!({"path": "notes/a.txt", "content": "x"})
    )));
    assert!(is_error(&a.call_tool(
        "files_write",
        json!({"path": "top.txt", "content": "x"})
    )));
    assert!(is_error(&r.call_tool(
        "http_get",
        json!({"url": "https://api.github.com/"})
    )));
    drop((a, r));
    broker.stop();

    // The candidate: echo only for the assistants team, and writes
    // anywhere. Exactly two recorded decisions change.
    let cand = env.path("candidate");
    copy_policies(&cand);
    let text_in = std::fs::read_to_string(cand.join("corral.cedar")).unwrap();
    let edited = text_in
        .replace(
            "@id(\"echo-for-all-agents\")\npermit (\n  principal is Agent,",
            "@id(\"echo-for-assistants\")\npermit (\n  principal in Team::\"assistants\",",
        )
        .replace(
            "when { context.input.path like \"notes/*\" };",
            "when { true };",
        );
    assert_ne!(edited, text_in);
    assert!(edited.contains("echo-for-assistants") && edited.contains("when { true };"));
    std::fs::write(cand.join("corral.cedar"), edited).unwrap();

    let mut args = vec![
        "policy",
        "replay",
        "--candidate",
        "candidate",
        "--dir",
        "policies",
        "--audit",
        "audit.db",
        "--json",
    ];
    let out = env.corral_with_tools(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let flips: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(flips.len(), 2, "{}", text(&out.stdout));
    assert_eq!(flips[0]["agent"], "reporter");
    assert_eq!(flips[0]["action"], "echo");
    assert_eq!(
        flips[0]["current"],
        json!({"decision": "allow", "policy_ids": ["echo-for-all-agents"]})
    );
    assert_eq!(
        flips[0]["candidate"],
        json!({"decision": "deny", "policy_ids": []})
    );
    assert_eq!(flips[1]["action"], "files_write");
    assert_eq!(flips[1]["arguments"]["path"], "top.txt");
    assert_eq!(flips[1]["current"]["decision"], "deny");
    assert_eq!(
        flips[1]["candidate"],
        json!({"decision": "allow", "policy_ids": ["files-write-notes-only"]})
    );
    let summary = text(&out.stderr);
    assert!(
        summary.contains(
            "would flip (1 allow→deny, 1 deny→allow, 0 would now need approval, 0 would no longer need it)"
        ),
        "{summary}"
    );
    assert!(summary.contains("2 would flip"), "{summary}");

    // Human output and the CI switch.
    args.retain(|a| *a != "--json");
    args.push("--fail-on-flip");
    let out = env.corral_with_tools(&args);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("FLIP allow→deny"), "{stdout}");
    assert!(
        stdout.contains("candidate: deny by no policy applies"),
        "{stdout}"
    );

    // A broken candidate is refused, naming where.
    std::fs::write(
        cand.join("broken.cedar"),
        "permit (principal, action, resource) when { nope };",
    )
    .unwrap();
    let out = env.corral_with_tools(&args);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("candidate policies"),
        "{}",
        text(&out.stderr)
    );
}

/// kill -9 in the middle of 10,000 calls; every file a tool wrote has its
/// decision rows, and the chain verifies after a restart.
#[test]
fn kill_9_during_load_loses_no_decision() {
    let env = Env::new();
    let fast = [
        "--rate",
        "1000000",
        "--burst",
        "1000000",
        "--max-connections",
        "16",
    ];
    let broker = env.broker(&fast);
    let socket = broker.socket("assistant").to_path_buf();
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let (socket, answered, stop) = (socket.clone(), answered.clone(), stop.clone());
            std::thread::spawn(move || {
                let Ok(mut c) = McpClient::connect(&socket) else { return };
                if c.initialize("2025-11-25").get("result").is_none() {
                    return;
                }
                c.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
                for i in 0..1250 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    c.start("tools/call", json!({"name": "files_write", "arguments": {"path": format!("notes/{t}-{i}.txt"), "content": "x"}}));
                    // One call in flight per client: the next message is its answer.
                    match c.read_message() {
                        Some(msg) => {
                            assert!(!is_error(&msg["result"]), "{msg}");
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        None => return,
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    while answered.load(Ordering::Relaxed) < 2_000 && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut broker = broker;
    broker.child.kill().unwrap(); // SIGKILL
    broker.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join()
            .expect("a client saw something other than success or the kill");
    }
    let done = answered.load(Ordering::Relaxed);
    assert!(done >= 2_000, "only {done} calls answered before the kill");
    assert!(done < 10_000, "the load finished before the kill");
    drop(broker);

    // Before anyone restarts it: what the dead broker left in its spool is
    // on record, and the chain through the database and the spool holds.
    let out = env.corral(&["audit", "verify", "--audit", &env.audit()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    eprintln!(
        "after kill -9, before the restart: {}",
        text(&out.stdout).trim()
    );

    // Restart on the same log: the chain continues.
    let broker = env.broker(&fast);
    let mut c = McpClient::ready(broker.socket("assistant"));
    assert!(!is_error(
        &c.call_tool("echo", json!({"message": "after the crash"}))
    ));
    drop(c);
    broker.stop();

    let out = env.corral(&["audit", "verify", "--audit", &env.audit()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        !text(&out.stdout).contains("in the spool"),
        "a clean stop moves every record into the database: {}",
        text(&out.stdout)
    );

    let reader = AuditReader::open(&env.path("audit.db")).unwrap();
    let records = reader.query(&Filter::default()).unwrap();
    let path_of = |r: &corral_audit::Record| -> String {
        serde_json::from_str::<Value>(&r.arguments).unwrap()["path"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let allowed_calls: std::collections::HashSet<String> = records
        .iter()
        .filter(|r| {
            r.kind == Kind::Call
                && r.action == "files_write"
                && r.decision.as_deref() == Some("allow")
        })
        .map(path_of)
        .collect();
    let allowed_writes: std::collections::HashSet<String> = records
        .iter()
        .filter(|r| {
            r.kind == Kind::Capability
                && r.action == "write_file"
                && r.decision.as_deref() == Some("allow")
        })
        .map(path_of)
        .collect();
    let written: Vec<String> = std::fs::read_dir(env.path("ws/assistant/notes"))
        .unwrap()
        .map(|e| format!("notes/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert!(
        written.len() >= done,
        "{} files for {done} answered calls",
        written.len()
    );
    for file in &written {
        assert!(
            allowed_calls.contains(file),
            "{file} was written without a call decision on record"
        );
        assert!(
            allowed_writes.contains(file),
            "{file} was written without a write_file decision on record"
        );
    }
    eprintln!(
        "kill -9 after {done} answered calls: {} files written, {} records, chain intact",
        written.len(),
        records.len()
    );
}

#[test]
fn audit_tail_follow_prints_new_records_as_they_land() {
    let env = Env::new();
    let broker = env.broker(&[]);
    let mut tail = Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(["audit", "tail", "-f", "-n", "0", "--audit", "audit.db"])
        .current_dir(env.dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut c = McpClient::ready(broker.socket("reporter"));
    assert!(is_error(&c.call_tool(
        "http_get",
        json!({"url": "https://api.github.com/"})
    )));
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("tail -f printed the new record");
    let _ = tail.kill();
    let _ = tail.wait();
    assert!(line.starts_with("#1 "), "{line}");
    assert!(
        line.contains("reporter http_get") && line.contains(" deny "),
        "{line}"
    );
    drop(c);
    broker.stop();
}

/// The official MCP Python SDK (pinned in `xtask`, installed by `cargo
/// xtask setup` into `target/py`), configured as for any stdio server with
/// `corral mcp bridge` as the command.
#[test]
fn the_official_python_sdk_works_through_the_bridge() {
    let python = corral_tests::target_dir().join("py/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup` (it installs the MCP Python SDK)",
        python.display()
    );
    let env = Env::new();
    let broker = env.broker(&[]);
    let script = corral_tests::repo_root().join("tests/python/mcp_sdk_client.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_corral"))
        .arg(broker.socket("assistant"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["protocol"], "2025-11-25");
    assert_eq!(seen["server"], "corral-broker");
    assert_eq!(
        seen["tools"],
        json!([
            "echo",
            "files_list",
            "files_read",
            "files_write",
            "http_get"
        ])
    );
    assert_eq!(seen["ok"]["is_error"], false);
    assert_eq!(
        seen["ok"]["structured"],
        json!({"message": "from the python sdk"})
    );
    assert_eq!(seen["denied"]["is_error"], true);
    assert!(
        seen["denied"]["text"]
            .as_str()
            .unwrap()
            .starts_with("denied: agent `assistant`")
    );
    broker.stop();
    let reader = AuditReader::open(&env.path("audit.db")).unwrap();
    let calls = reader
        .query(&Filter {
            kind: Some(Kind::Call),
            ..Filter::default()
        })
        .unwrap();
    assert_eq!(calls.len(), 2);
}
