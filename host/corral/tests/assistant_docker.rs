//! End to end on the real Docker engine: a Slack message (through a
//! loopback stand-in that speaks the Web API and the Socket Mode protocol)
//! reaches `corral up`, which starts the agent's hardened container; the
//! agent loop inside asks the model (an Anthropic Messages stand-in) through
//! the broker, runs the `files` tool under policy, and the reply appears in
//! the Slack thread. A second message asks for a host no policy allows, and
//! the person reads the denial with the deciding policy.
//!
//! If the Docker engine is unreachable this fails, saying so: it is never
//! skipped.

use std::process::Command;
use std::time::Duration;

use corral_tests::standins::{SlackStandIn, anthropic_stand_in};
use corral_tests::up::{TEST_MODEL_KEY, UpConfig, UpHost, UpOptions};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI is installed");
    assert!(
        out.status.success(),
        "docker {args:?} failed (is the Docker engine running?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_slack_mention_runs_the_agent_in_its_container_and_answers_in_the_thread() {
    let _docker = crate::docker_lock();
    docker(&["version", "--format", "{{.Server.Version}}"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let model = anthropic_stand_in();
    let slack = rt.block_on(SlackStandIn::start());
    let config = UpConfig::write(&UpOptions {
        model: Some(("anthropic", model.url(""))),
        slack_api: Some(slack.api_url()),
        extra_policy: Some(
            r#"@id("no-unlisted-hosts")
forbid (principal, action == Action::"http_request", resource)
unless { resource in HostGroup::"public-apis" };"#
                .into(),
        ),
        extra_toml: Some("[web]\nlisten = \"127.0.0.1:0\"\n".into()),
        ..UpOptions::default()
    });
    let host = UpHost::start(CORRAL.as_ref(), &config, &[]);

    rt.block_on(async {
        assert!(
            slack.wait_connected(Duration::from_secs(30)).await,
            "corral up never opened Socket Mode; its log:\n{}",
            host.log()
        );
        // No container until someone asks.
        assert!(
            docker(&["ps", "-q", "--filter", "label=corral.agent=assistant"])
                .trim()
                .is_empty()
        );

        // An operator can start it ahead of the first message.
        let started = Command::new(CORRAL)
            .args(["agents", "start", "assistant", "--socket"])
            .arg(config.control())
            .output()
            .unwrap();
        assert!(
            started.status.success(),
            "{}",
            String::from_utf8_lossy(&started.stderr)
        );
        assert!(String::from_utf8_lossy(&started.stdout).contains("started agent `assistant`"));
        assert!(
            !docker(&["ps", "-q", "--filter", "label=corral.agent=assistant"])
                .trim()
                .is_empty()
        );
        let again = Command::new(CORRAL)
            .args(["agents", "start", "assistant", "--socket"])
            .arg(config.control())
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&again.stdout).contains("already running"));
        let unknown = Command::new(CORRAL)
            .args(["agents", "start", "nobody", "--socket"])
            .arg(config.control())
            .output()
            .unwrap();
        assert!(!unknown.status.success());
        assert!(String::from_utf8_lossy(&unknown.stderr).contains("nobody"));
        // Stopped through the host, which then starts a fresh one for the
        // next message.
        let stopped = Command::new(CORRAL)
            .args(["agents", "stop", "assistant", "--socket"])
            .arg(config.control())
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&stopped.stdout).contains("stopped and removed"),
            "{}{}",
            String::from_utf8_lossy(&stopped.stdout),
            String::from_utf8_lossy(&stopped.stderr)
        );
        assert!(
            docker(&["ps", "-aq", "--filter", "label=corral.agent=assistant"])
                .trim()
                .is_empty()
        );

        slack.mention(
            "env1",
            "C0001",
            "U0042",
            "please write a note",
            "1764000001.000100",
        );
        let reply = slack
            .wait_post("1764000001.000100", Duration::from_secs(90), |t| {
                t.starts_with("Done.")
            })
            .await;
        let reply = reply.unwrap_or_else(|| {
            panic!(
                "no reply in the thread; posts: {:?}\nlog:\n{}",
                slack.posts(),
                host.log()
            )
        });
        assert_eq!(reply["channel"], "C0001");
        assert!(
            slack.acked().contains(&"env1".to_string()),
            "the envelope was acknowledged"
        );
        let note = std::fs::read_to_string(config.workspace().join("notes/hello.md")).unwrap();
        assert_eq!(note, "hello from the model");

        // The agent runs in its hardened container, with no key in sight.
        let inspect = docker(&["inspect", "corral-agent-assistant"]);
        assert!(inspect.contains("\"NetworkMode\": \"none\""), "{inspect}");
        assert!(inspect.contains("\"ReadonlyRootfs\": true"), "{inspect}");
        assert!(
            !inspect.contains(TEST_MODEL_KEY),
            "the API key is in the container's configuration"
        );
        let env = docker(&[
            "exec",
            "corral-agent-assistant",
            "/usr/local/bin/corral-agent",
            "--version",
        ]);
        assert!(env.contains("corral-agent"), "{env}");

        slack.mention(
            "env2",
            "C0001",
            "U0042",
            "fetch the forecast",
            "1764000002.000100",
        );
        let denial = slack
            .wait_post("1764000002.000100", Duration::from_secs(60), |t| {
                t.contains("refused")
            })
            .await
            .unwrap_or_else(|| panic!("no denial in the thread; posts: {:?}", slack.posts()));
        let text = denial["text"].as_str().unwrap();
        assert!(
            text.contains("no-unlisted-hosts"),
            "the denial names the deciding policy: {text}"
        );

        // The containers as the metrics count them: the operator's start,
        // then a fresh one for the first message after the stop.
        let metrics = format!("{}metrics", host.web.clone().expect("[web] is configured"));
        let (status, body) = crate::operations::get(&metrics, None);
        assert_eq!(status, 200, "{body}");
        let started = vec![("event".to_string(), "started".to_string())];
        assert_eq!(
            crate::operations::samples(&body, "corral_containers_total").get(&started),
            Some(&2.0),
            "{body}"
        );
        assert!(body.contains("corral_containers_running 1\n"), "{body}");

        // A channel bound to no agent gets told so, in the thread.
        slack.mention("env3", "C0999", "U0042", "hello?", "1764000003.000100");
        let unbound = slack
            .wait_post("1764000003.000100", Duration::from_secs(30), |t| {
                t.contains("No agent is bound")
            })
            .await;
        assert!(unbound.is_some(), "posts: {:?}", slack.posts());
    });

    // Every Slack API call carried the bot token, never the model key.
    for r in slack.web.requests() {
        assert!(!r.body.contains(TEST_MODEL_KEY));
    }
    for r in model.requests() {
        assert_eq!(r.header("x-api-key"), Some(TEST_MODEL_KEY));
    }
    let code = host.stop();
    let log = std::fs::read_to_string(config.dir.path().join("up.stderr")).unwrap_or_default();
    let tail: String = log
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(code, Some(0), "clean shutdown; the log ends:\n{tail}");
    assert!(
        !log.contains(TEST_MODEL_KEY),
        "the API key appeared in the host's log"
    );
    assert!(
        docker(&["ps", "-aq", "--filter", "label=corral.agent=assistant"])
            .trim()
            .is_empty(),
        "no container is left behind after SIGTERM"
    );

    config.verify_audit(CORRAL.as_ref());
    let records = config.audit_records(CORRAL.as_ref());
    let has = |action: &str, decision: &str| {
        records
            .iter()
            .any(|r| r["action"] == action && r["decision"] == decision)
    };
    assert!(has("invoke", "allow"));
    assert!(has("use_model", "allow"));
    assert!(has("files_write", "allow"));
    assert!(has("write_file", "allow"));
    assert!(has("http_request", "deny"));
    assert!(has("post_message", "allow"));
    let invoker = records
        .iter()
        .find(|r| r["action"] == "invoke")
        .map(|r| r["arguments"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    assert!(
        invoker.contains("slack:U0042") && invoker.contains("slack:C0001"),
        "{invoker}"
    );
    assert!(
        !config.audit_contains(TEST_MODEL_KEY),
        "the API key is in the audit database"
    );
}
