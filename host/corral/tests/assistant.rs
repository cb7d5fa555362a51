//! The assistant through the real `corral up`, its terminal channel and
//! its model broker, with the agent loop (`corral-agent run`, the static
//! binary that goes into the image) run on the host against its socket, so
//! these run without containers. `assistant_docker.rs` runs the same loop
//! in the real container, reached from Slack.

use std::process::{Child, Command};
use std::time::Duration;

use corral_channels::terminal::ChatClient;
use corral_tests::standins::{SlackStandIn, openai_stand_in};
use corral_tests::up::{TEST_MODEL_KEY, UpConfig, UpHost, UpOptions};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

/// `corral-agent run` against the agent's socket, as the container runs it.
pub(crate) struct AgentLoop(Child);

impl AgentLoop {
    pub(crate) fn start(host: &UpHost, config: &UpConfig) -> AgentLoop {
        AgentLoop(
            Command::new(corral_tests::agent_binary())
                .arg("--socket")
                .arg(host.socket("assistant"))
                .arg("run")
                .arg("--workspace")
                .arg(config.workspace())
                .spawn()
                .expect("start corral-agent run"),
        )
    }
}

impl Drop for AgentLoop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `corral policy replay` of the run's log: its own policies against
/// `candidate`.
pub(crate) fn replay(
    config: &UpConfig,
    candidate: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    Command::new(CORRAL)
        .args(["policy", "replay", "--dir"])
        .arg(config.dir.path().join("policies"))
        .arg("--candidate")
        .arg(candidate)
        .arg("--audit")
        .arg(config.audit())
        .args(tools_args())
        .args(extra)
        .output()
        .unwrap()
}

fn tools_args() -> Vec<String> {
    ["echo", "files", "http-get"]
        .iter()
        .flat_map(|t| {
            [
                "--tool".to_string(),
                corral_tests::component_path(t).display().to_string(),
            ]
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn ask(client: &mut ChatClient, text: &str) -> Result<String, String> {
    tokio::time::timeout(
        Duration::from_secs(60),
        client.ask("assistant", text, |_| {}),
    )
    .await
    .expect("an answer within a minute")
    .expect("the control socket works")
    .map_err(|refused| refused.0)
}

fn audit_records(config: &UpConfig) -> Vec<serde_json::Value> {
    config.audit_records(CORRAL.as_ref())
}

fn verify(config: &UpConfig) {
    config.verify_audit(CORRAL.as_ref());
}

#[test]
fn tools_only_mode_answers_slash_tool_through_the_same_policies() {
    let config = UpConfig::write(&UpOptions::default());
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    let _agent = AgentLoop::start(&host, &config);
    let rt = runtime();
    rt.block_on(async {
        let mut chat = ChatClient::connect(&config.control()).await.unwrap();
        let echoed = ask(&mut chat, r#"/tool echo {"message": "hello corral"}"#)
            .await
            .unwrap();
        assert!(echoed.contains("hello corral"), "{echoed}");

        let help = ask(&mut chat, "what can you do?").await.unwrap();
        assert!(help.contains("tools-only mode"), "{help}");
        assert!(help.contains("/tool NAME JSON"), "{help}");
        assert!(
            help.contains("files_write") && help.contains("echo"),
            "{help}"
        );

        // The default policies allow writes under notes/ only.
        let denied = ask(
            &mut chat,
            r#"/tool files_write {"path": "secrets.txt", "content": "x"}"#,
        )
        .await
        .unwrap();
        assert!(
            denied.starts_with("⚠") && denied.contains("denied"),
            "{denied}"
        );
        assert!(!config.workspace().join("secrets.txt").exists());

        let bad = ask(&mut chat, "/tool echo not-json").await.unwrap();
        assert!(bad.contains("not JSON"), "{bad}");

        let unknown = chat.ask("nobody", "hi", |_| {}).await.unwrap();
        let refusal = unknown.expect_err("no such agent");
        assert!(
            refusal.0.contains("no agent `nobody`") && refusal.0.contains("assistant"),
            "{refusal}"
        );
    });
    assert_eq!(host.stop(), Some(0), "corral up exits cleanly on SIGTERM");
    verify(&config);
    let records = audit_records(&config);
    let invokes: Vec<_> = records.iter().filter(|r| r["action"] == "invoke").collect();
    assert_eq!(
        invokes.len(),
        4,
        "each message to `assistant` is an invoke decision"
    );
    assert!(invokes.iter().all(|r| r["decision"] == "allow"
        && r["policy_ids"] == serde_json::json!(["people-may-ask-assistants"])));
    let replies = records
        .iter()
        .filter(|r| r["action"] == "post_message" && r["kind"] == "call")
        .count();
    assert_eq!(replies, 4, "each reply is a post_message decision");
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "files_write" && r["decision"] == "deny")
    );
}

#[test]
fn a_person_without_an_invoke_permit_is_told_which_policy_refused() {
    let config = UpConfig::write(&UpOptions {
        extra_policy: Some(
            r#"@id("terminal-closed")
forbid (principal, action == Action::"invoke", resource)
when { principal.channel_kind == "terminal" };"#
                .into(),
        ),
        ..UpOptions::default()
    });
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    let rt = runtime();
    rt.block_on(async {
        let mut chat = ChatClient::connect(&config.control()).await.unwrap();
        let refusal = chat
            .ask("assistant", "hi", |_| {})
            .await
            .unwrap()
            .expect_err("refused");
        assert!(
            refusal.0.contains("denied") && refusal.0.contains("terminal-closed"),
            "{refusal}"
        );
        assert!(
            refusal.0.contains("User::\"local:") || refusal.0.contains("local:"),
            "{refusal}"
        );
    });
    // `corral chat -m` exits 3 on a refusal.
    let out = Command::new(CORRAL)
        .args(["chat", "assistant", "--socket"])
        .arg(config.control())
        .args(["-m", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("terminal-closed"));
    assert_eq!(host.stop(), Some(0));
    let records = audit_records(&config);
    assert!(records.iter().any(|r| r["action"] == "invoke"
        && r["decision"] == "deny"
        && r["policy_ids"] == serde_json::json!(["terminal-closed"])));

    // Replay: without `terminal-closed` (the repository's starter set), both
    // refusals would have been allowed, by the starter permit.
    let out = replay(
        &config,
        &corral_tests::repo_root().join("policies"),
        &["--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flips: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(flips.len(), 2, "{flips:?}");
    for f in &flips {
        assert_eq!(f["action"], "invoke");
        assert_eq!(
            f["current"]["policy_ids"],
            serde_json::json!(["terminal-closed"])
        );
        assert_eq!(f["candidate"]["decision"], "allow");
        assert_eq!(
            f["candidate"]["policy_ids"],
            serde_json::json!(["people-may-ask-assistants"])
        );
    }
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("0 could not be replayed"), "{summary}");
}

#[test]
fn the_model_broker_runs_a_tool_loop_and_the_key_stays_on_the_host() {
    let model = openai_stand_in();
    let config = UpConfig::write(&UpOptions {
        model: Some(("openai", model.url("/v1"))),
        extra_policy: Some(
            r#"@id("no-unlisted-hosts")
forbid (principal, action == Action::"http_request", resource)
unless { resource in HostGroup::"public-apis" };"#
                .into(),
        ),
        ..UpOptions::default()
    });
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    let _agent = AgentLoop::start(&host, &config);
    let rt = runtime();
    rt.block_on(async {
        let mut chat = ChatClient::connect(&config.control()).await.unwrap();
        let wrote = ask(&mut chat, "please write a note").await.unwrap();
        assert!(wrote.starts_with("Done. Tool result:"), "{wrote}");
        let note = std::fs::read_to_string(config.workspace().join("notes/hello.md")).unwrap();
        assert_eq!(note, "hello from the model");

        let fetched = ask(&mut chat, "fetch the weather").await.unwrap();
        assert!(
            fetched.contains("refused") && fetched.contains("no-unlisted-hosts"),
            "{fetched}"
        );
    });
    // The conversation so far went to the model, with the tools it may use.
    let requests = model.requests();
    assert_eq!(requests.len(), 4, "two turns of two model calls each");
    for r in &requests {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TEST_MODEL_KEY}").as_str())
        );
        let body = r.json();
        assert_eq!(body["model"], "scripted-1");
        assert!(
            body["max_tokens"].as_u64().unwrap() <= 512,
            "clamped to the agent's budget"
        );
        let tools: Vec<&str> = body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert!(
            tools.contains(&"files_write") && tools.contains(&"http_get"),
            "{tools:?}"
        );
    }
    let history = std::fs::read_dir(config.workspace().join(".corral/conversations"))
        .unwrap()
        .count();
    assert_eq!(history, 1, "one terminal session, one conversation file");

    let log = host.log();
    assert_eq!(host.stop(), Some(0));
    verify(&config);
    let records = audit_records(&config);
    let model_calls: Vec<_> = records
        .iter()
        .filter(|r| r["action"] == "use_model")
        .collect();
    assert_eq!(
        model_calls
            .iter()
            .filter(|r| r["kind"] == "call" && r["decision"] == "allow")
            .count(),
        4
    );
    assert!(model_calls.iter().any(|r| {
        r["kind"] == "outcome"
            && r["usage"] == serde_json::json!({"input_tokens": 100, "output_tokens": 20})
    }));
    assert!(records.iter().any(|r| r["action"] == "http_request"
        && r["decision"] == "deny"
        && r["policy_ids"] == serde_json::json!(["no-unlisted-hosts"])));

    // Every decision of the run, model and reply ones included, replays.
    let out = replay(&config, &config.dir.path().join("policies"), &[]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("0 would flip") && summary.contains("0 could not be replayed"),
        "{summary}"
    );

    // The key is in no log line and in no byte of the audit database.
    assert!(
        log.contains("DEBUG") || log.contains("INFO"),
        "the host logged at debug level"
    );
    assert!(
        !log.contains(TEST_MODEL_KEY),
        "the API key appeared in the host's log"
    );
    assert!(
        !config.audit_contains(TEST_MODEL_KEY),
        "the API key is in the audit database"
    );
}

/// `corral up` on a configuration it must refuse: it exits at once.
fn up_once(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(CORRAL)
        .arg("up")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("CORRAL_TEST_UNSET_KEY")
        .output()
        .unwrap()
}

#[test]
fn bad_configuration_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corral.toml");
    std::fs::write(&path, "policies = \"p\"\nagnets = []\n").unwrap();
    let out = up_once(&path, &[]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agnets") && err.contains("corral.toml"),
        "{err}"
    );

    std::fs::write(
        &path,
        "policies = \"p\"\n[[agents]]\nid = \"a\"\nworkspace = \"w\"\nmodel = \"gpt\"\n",
    )
    .unwrap();
    let out = up_once(&path, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model `gpt` is not defined") && err.contains("[models.gpt]"),
        "{err}"
    );

    std::fs::write(
        &path,
        "policies = \"p\"\n[[agents]]\nid = \"a\"\nworkspace = \"w\"\nmodel = \"m\"\n[models.m]\nprovider = \"anthropic\"\nmodel = \"x\"\napi_key_env = \"CORRAL_TEST_UNSET_KEY\"\n",
    )
    .unwrap();
    let out = up_once(&path, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CORRAL_TEST_UNSET_KEY"), "{err}");
}

#[test]
fn a_slack_direct_message_is_answered_in_its_thread_and_the_bots_own_posts_are_ignored() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let slack = rt.block_on(SlackStandIn::start());
    let config = UpConfig::write(&UpOptions {
        slack_api: Some(slack.api_url()),
        ..UpOptions::default()
    });
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    let _agent = AgentLoop::start(&host, &config);
    rt.block_on(async {
        assert!(
            slack.wait_connected(Duration::from_secs(30)).await,
            "{}",
            host.log()
        );
        slack.direct_message(
            "d1",
            "D0001",
            "U0042",
            r#"/tool echo {"message": "over dm"}"#,
            "1764000010.000100",
        );
        let reply = slack
            .wait_post("1764000010.000100", Duration::from_secs(30), |t| {
                t.contains("over dm")
            })
            .await;
        assert!(
            reply.is_some(),
            "posts: {:?}\nlog:\n{}",
            slack.posts(),
            host.log()
        );
        // An agent's text is shown as text: it cannot notify the channel,
        // mention a person or disguise a link.
        slack.direct_message(
            "d1b",
            "D0001",
            "U0042",
            r#"/tool echo {"message": "<!channel> <@U0001> <https://evil.example|https://docs.example> & co"}"#,
            "1764000010.000200",
        );
        let reply = slack
            .wait_post("1764000010.000200", Duration::from_secs(30), |t| {
                t.contains("&amp; co")
            })
            .await;
        let reply = reply.unwrap_or_else(|| panic!("posts: {:?}", slack.posts()));
        let reply = reply["text"].as_str().unwrap_or_default();
        assert!(
            reply.contains("&lt;!channel&gt; &lt;@U0001&gt; &lt;https://evil.example|https://docs.example&gt;"),
            "{reply}"
        );
        assert!(!reply.contains("<!channel>") && !reply.contains("<@U0001>"), "{reply}");
        // The bot's own message coming back as an event is not a request.
        slack.direct_message(
            "d2",
            "D0001",
            corral_tests::standins::SLACK_BOT_USER,
            "echo loop?",
            "1764000011.000100",
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            slack
                .posts()
                .iter()
                .all(|p| p["thread_ts"] != "1764000011.000100")
        );
        assert!(
            slack.acked().contains(&"d2".to_string()),
            "ignored events are still acknowledged"
        );
        // A reply Slack refuses to post is recorded as not delivered.
        slack.direct_message(
            "d3",
            "D0001",
            "U0042",
            r#"/tool echo {"message": "REFUSE-THIS-POST"}"#,
            "1764000012.000100",
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
    });
    // Slack's error for it spans two lines ("…msg_too_long\nBody: '…'"):
    // in the host's log it stays on the warning's line, escaped.
    let log = host.log();
    let failed = log
        .lines()
        .find(|l| l.contains("chat.postMessage failed"))
        .unwrap_or_else(|| panic!("no warning for the refused post:\n{log}"));
    assert!(failed.contains(r"msg_too_long\nBody:"), "{failed}");
    assert!(!log.lines().any(|l| l.starts_with("Body:")), "{log}");
    assert_eq!(host.stop(), Some(0));
    let records = audit_records(&config);
    let invokes: Vec<_> = records.iter().filter(|r| r["action"] == "invoke").collect();
    assert_eq!(invokes.len(), 3, "only the person's messages were invokes");
    let outcomes: Vec<_> = records
        .iter()
        .filter(|r| r["action"] == "post_message" && r["kind"] == "outcome")
        .collect();
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0]["outcome"], "ok");
    assert_eq!(outcomes[1]["outcome"], "ok");
    assert_eq!(outcomes[2]["outcome"], "error");
    assert!(
        outcomes[2]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("msg_too_long")),
        "{:?}",
        outcomes[2]
    );
    let args = invokes[0]["arguments"].as_str().unwrap_or_default();
    assert!(
        args.contains("slack:U0042") && args.contains("slack:D0001"),
        "{args}"
    );
}

/// Takes messages as the agent would, over its broker socket.
pub(crate) struct StandInAgent(pub(crate) corral_agent::Client);

impl StandInAgent {
    pub(crate) fn connect(host: &UpHost) -> StandInAgent {
        StandInAgent(corral_agent::Client::connect(&host.socket("assistant")).unwrap())
    }

    pub(crate) fn next(&mut self) -> serde_json::Value {
        let next = self
            .0
            .request("corral/next", serde_json::json!({"wait_ms": 20000}))
            .unwrap();
        next["result"]["message"].clone()
    }

    pub(crate) fn reply(&mut self, message: &serde_json::Value, text: &str) -> serde_json::Value {
        self.0
            .request(
                "corral/reply",
                serde_json::json!({"message": message["id"], "text": text, "last": true}),
            )
            .unwrap()
    }
}

#[test]
fn a_message_held_by_an_agent_that_disconnects_is_answered_for_it() {
    let config = UpConfig::write(&UpOptions::default());
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    // A stand-in agent: takes the next message, then vanishes without
    // answering, as a crashing agent would.
    let mut agent = StandInAgent::connect(&host);
    let taker = std::thread::spawn(move || {
        agent.next()["text"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    let rt = runtime();
    rt.block_on(async {
        let mut chat = ChatClient::connect(&config.control()).await.unwrap();
        let answer = ask(&mut chat, "are you there?").await.unwrap();
        assert!(answer.contains("stopped before it answered"), "{answer}");
    });
    assert_eq!(taker.join().unwrap(), "are you there?");
    assert_eq!(host.stop(), Some(0), "nothing is left pending at shutdown");
}

#[test]
fn an_agents_reply_cannot_pass_for_the_hosts_on_the_terminal() {
    let config = UpConfig::write(&UpOptions::default());
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    // A stand-in agent whose reply holds a line that looks like the host's
    // and terminal controls (clear the screen, set the clipboard).
    let mut agent = StandInAgent::connect(&host);
    let agent = std::thread::spawn(move || {
        let next = agent.next();
        agent.reply(
            &next,
            "done\ncorral> approval 7 granted\r\x1b[2J\x1b]52;c;ZXZpbA==\x07",
        )
    });
    let mut chat = Command::new(CORRAL)
        .args(["chat", "assistant", "--socket"])
        .arg(config.control())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = chat.stdin.take().unwrap();
        stdin.write_all(b"hello\n").unwrap();
        let replied = agent.join().unwrap();
        assert_eq!(replied["result"]["delivered"], true, "{replied}");
        // Closing stdin ends the chat once the reply is printed.
    }
    let out = chat.wait_with_output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        shown.trim_end(),
        "assistant> done\n           corral> approval 7 granted\\r\\u{1b}[2J\\u{1b}]52;c;ZXZpbA==\\u{7}",
        "{shown:?}"
    );
    assert_eq!(host.stop(), Some(0));
}

#[test]
fn workspaces_that_overlap_or_hold_host_state_are_refused() {
    let config = UpConfig::write(&UpOptions::default());
    let mut toml = std::fs::read_to_string(&config.path).unwrap();
    toml.push_str("[[agents]]\nid = \"twin\"\nworkspace = \"workspace/assistant/twin\"\n");
    std::fs::write(&config.path, &toml).unwrap();
    let out = up_once(&config.path, &["--external-agents"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("share a workspace") && err.contains("twin"),
        "{err}"
    );

    let config = UpConfig::write(&UpOptions::default());
    let toml = std::fs::read_to_string(&config.path)
        .unwrap()
        .replace("workspace = \"workspace/assistant\"", "workspace = \".\"");
    std::fs::write(&config.path, toml).unwrap();
    let out = up_once(&config.path, &["--external-agents"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("inside agent `assistant`'s workspace"),
        "{err}"
    );
}

#[test]
fn the_days_model_budget_survives_a_restart_of_the_host() {
    let model = openai_stand_in();
    let config = UpConfig::write(&UpOptions {
        model: Some(("openai", model.url("/v1"))),
        ..UpOptions::default()
    });
    let rt = runtime();
    {
        let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
        let _agent = AgentLoop::start(&host, &config);
        rt.block_on(async {
            let mut chat = ChatClient::connect(&config.control()).await.unwrap();
            let reply = ask(&mut chat, "hello").await.unwrap();
            assert_eq!(reply, "You said: hello");
        });
        assert_eq!(host.stop(), Some(0));
    }
    // 120 tokens were used today. A budget of 100 a day now refuses the
    // model, though this host has not used it yet.
    std::fs::write(
        config.dir.path().join("policies/budget.cedar"),
        r#"@id("tiny-daily-budget")
forbid (principal, action == Action::"use_model", resource)
when { context.day_tokens > 100 };"#,
    )
    .unwrap();
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    let _agent = AgentLoop::start(&host, &config);
    rt.block_on(async {
        let mut chat = ChatClient::connect(&config.control()).await.unwrap();
        let reply = ask(&mut chat, "hello again").await.unwrap();
        assert!(
            reply.contains("denied") && reply.contains("tiny-daily-budget"),
            "{reply}"
        );
    });
    assert_eq!(host.stop(), Some(0));
    assert_eq!(
        model.requests().len(),
        1,
        "the refused call never reached the provider"
    );
}
