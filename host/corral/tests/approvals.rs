//! Human approval through the real `corral up`: calls that `@approval`
//! permits ask for wait for a person at the terminal (`corral approvals`)
//! or in Slack (buttons, through the stand-in's Socket Mode), and every
//! ask, answer and refusal is in the verified audit chain.

use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_channels::terminal::{ApprovalAnswer, ChatClient, Interim};
use corral_tests::mcp::{McpClient, is_error, result_text};
use corral_tests::standins::{ButtonPress, SLACK_TEAM, SlackStandIn};
use corral_tests::up::{UpConfig, UpHost, UpOptions};
use serde_json::{Value, json};

use crate::assistant::AgentLoop;

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

/// Writes under `drafts/` ask the sender of the message being worked on;
/// under `src/` they ask the `ops` group, except what a `forbid` refuses
/// outright. `slack:U0066` is in `ops` but the `approve` action bars them.
const ASKING: &str = r#"
@id("ask-sender-for-drafts")
@approval("sender")
permit (principal, action == Action::"files_write", resource)
when { context.input.path like "drafts/*" };

@id("ask-ops-for-src")
@approval("group:ops")
permit (principal, action == Action::"files_write", resource)
when { context.input.path like "src/*" };

@id("no-secrets-even-approved")
forbid (principal, action == Action::"files_write", resource)
when { context.input.path like "src/secret*" };

@id("named-approvers-may-approve")
permit (principal, action == Action::"approve", resource);

@id("no-ops-veto")
forbid (principal == User::"slack:U0066", action == Action::"approve", resource);
"#;

fn config(extra_toml: &str, slack_api: Option<String>) -> UpConfig {
    let config = UpConfig::write(&UpOptions {
        extra_policy: Some(ASKING.into()),
        extra_toml: Some(extra_toml.into()),
        slack_api,
        ..UpOptions::default()
    });
    let path = config.dir.path().join("policies/entities.json");
    let mut entities: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    entities.push(json!({"uid": {"type": "Group", "id": "ops"}, "attrs": {}, "parents": []}));
    for user in ["slack:U0099", "slack:U0066"] {
        entities.push(json!({
            "uid": {"type": "User", "id": user},
            "attrs": {"channel_kind": "slack"},
            "parents": [{"type": "Group", "id": "ops"}],
        }));
    }
    std::fs::write(&path, serde_json::to_string(&entities).unwrap()).unwrap();
    config
}

fn write_call(path: &str, content: &str) -> String {
    format!(
        "/tool files_write {}",
        json!({"path": path, "content": content})
    )
}

/// A chat's final reply, or its refusal.
type Chat = tokio::task::JoinHandle<Result<String, String>>;
/// The approval notices a chat showed.
type Notices = Arc<Mutex<Vec<String>>>;

/// Sends `text` to the assistant from its own control connection; the
/// reply (or refusal) and the interim lines come back through the handle.
fn chat_in_background(control: std::path::PathBuf, text: String) -> (Chat, Notices) {
    let interim = Arc::new(Mutex::new(Vec::new()));
    let seen = interim.clone();
    let task = tokio::spawn(async move {
        let mut chat = ChatClient::connect(&control).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(60),
            // Only the host's approval frames, never the agent's text.
            chat.ask("assistant", &text, |i| {
                if let Interim::Approval(t) = i {
                    seen.lock().unwrap().push(t.to_string())
                }
            }),
        )
        .await
        .expect("an answer within a minute")
        .expect("the control socket works")
        .map_err(|r| r.0)
    });
    (task, interim)
}

/// Waits until exactly `n` approvals are pending and returns them.
async fn pending(operator: &mut ChatClient, n: usize) -> Vec<Value> {
    for _ in 0..300 {
        let now = operator.pending_approvals().await.unwrap().unwrap();
        if now.len() == n {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{n} approvals never pending");
}

async fn answer(
    operator: &mut ChatClient,
    id: i64,
    a: ApprovalAnswer<'_>,
) -> Result<String, String> {
    operator
        .answer_approval(id, a)
        .await
        .unwrap()
        .map_err(|r| r.0)
}

fn once() -> ApprovalAnswer<'static> {
    ApprovalAnswer::Approve { period: None }
}

fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

#[test]
fn the_sender_approves_at_the_terminal_once_for_a_period_or_not_at_all() {
    let config = config(
        "[approvals]\ntimeout = \"4s\"\nmax_pending_per_agent = 1\nmax_grant = \"1d\"\n",
        None,
    );
    let me = std::fs::metadata(&config.path).unwrap().uid();
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    let agent = AgentLoop::start(&host, &config);
    let control = config.control();
    let drafts = config.workspace().join("drafts");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first_id = rt.block_on(async {
        let mut operator = ChatClient::connect(&control).await.unwrap();
        assert!(
            operator
                .pending_approvals()
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );

        // Approve once: the call waits, shows in the chat, then runs.
        let (reply, interim) =
            chat_in_background(control.clone(), write_call("drafts/a.txt", "one"));
        let shown = pending(&mut operator, 1).await;
        let id = shown[0]["id"].as_i64().unwrap();
        assert_eq!(shown[0]["agent"], "assistant");
        assert_eq!(shown[0]["tool"], "files_write");
        assert_eq!(shown[0]["arguments"]["path"], "drafts/a.txt");
        assert_eq!(shown[0]["approvers"], json!(["sender"]));
        assert_eq!(shown[0]["asked_by"], json!(["ask-sender-for-drafts"]));
        assert_eq!(shown[0]["requested_by"], format!("local:{me}"));
        assert!(
            !drafts.join("a.txt").exists(),
            "nothing runs before the answer"
        );
        assert_eq!(shown[0]["hidden"], false);
        let whole = operator.approval_arguments(id).await.unwrap().unwrap();
        assert_eq!(whole, json!({"path": "drafts/a.txt", "content": "one"}));
        let done = answer(&mut operator, id, once()).await.unwrap();
        assert!(
            done.contains(&format!("approved approval {id}")) && done.contains("drafts/a.txt"),
            "the answer says what was approved: {done}"
        );
        let text = reply.await.unwrap().unwrap();
        assert!(!text.contains("denied"), "{text}");
        assert_eq!(
            std::fs::read_to_string(drafts.join("a.txt")).unwrap(),
            "one"
        );
        let interim = interim.lock().unwrap().join("\n");
        assert!(
            interim.contains(&format!("approval {id}"))
                && interim.contains(&format!("corral approvals approve {id}")),
            "the chat shows the pending approval: {interim}"
        );
        // An answered approval cannot be answered again.
        let again = answer(&mut operator, id, once()).await.unwrap_err();
        assert!(again.contains("not waiting"), "{again}");

        // Once means once: the identical call asks again; deny it.
        let (reply, _) = chat_in_background(control.clone(), write_call("drafts/a.txt", "one"));
        let id2 = pending(&mut operator, 1).await[0]["id"].as_i64().unwrap();
        assert_ne!(id2, id);
        let deny = ApprovalAnswer::Deny {
            reason: Some("not today"),
        };
        answer(&mut operator, id2, deny).await.unwrap();
        let text = reply.await.unwrap().unwrap();
        assert!(
            text.contains("refused by") && text.contains("not today"),
            "{text}"
        );

        // Approve for a period: the identical call runs without asking...
        std::fs::remove_file(drafts.join("a.txt")).unwrap();
        let (reply, _) = chat_in_background(control.clone(), write_call("drafts/b.txt", "two"));
        let id3 = pending(&mut operator, 1).await[0]["id"].as_i64().unwrap();
        let bad = answer(
            &mut operator,
            id3,
            ApprovalAnswer::Approve {
                period: Some("soon"),
            },
        )
        .await
        .unwrap_err();
        assert!(bad.contains("soon") && bad.contains("30m"), "{bad}");
        let long = answer(
            &mut operator,
            id3,
            ApprovalAnswer::Approve { period: Some("3d") },
        )
        .await
        .unwrap_err();
        assert!(long.contains("max_grant"), "{long}");
        answer(
            &mut operator,
            id3,
            ApprovalAnswer::Approve { period: Some("1h") },
        )
        .await
        .unwrap();
        assert!(!reply.await.unwrap().unwrap().contains("denied"));
        std::fs::remove_file(drafts.join("b.txt")).unwrap();
        let (reply, _) = chat_in_background(control.clone(), write_call("drafts/b.txt", "two"));
        let text = reply.await.unwrap().unwrap();
        assert!(!text.contains("denied"), "{text}");
        assert!(
            drafts.join("b.txt").exists(),
            "the grant covered the identical call"
        );

        // ...while a different argument asks again, and nobody answering
        // in time denies it.
        let (reply, _) = chat_in_background(control.clone(), write_call("drafts/b.txt", "three"));
        pending(&mut operator, 1).await;
        let text = reply.await.unwrap().unwrap();
        assert!(
            text.contains("not approved") && text.contains("4s"),
            "{text}"
        );
        assert_eq!(
            std::fs::read_to_string(drafts.join("b.txt")).unwrap(),
            "two"
        );
        assert!(
            operator
                .pending_approvals()
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );
        id
    });

    // The agent cannot answer its own call through its socket, and a
    // flood of asking calls stops at the per-agent cap.
    let mut direct = McpClient::ready(&host.socket("assistant"));
    // With a progress token (rmcp's path), the wait is reported.
    let waiting = direct.start(
        "tools/call",
        json!({"name": "files_write", "arguments": {"path": "src/0.txt", "content": "x"}, "_meta": {"progressToken": "p0"}}),
    );
    let progress = direct.read_message().expect("a progress notification");
    assert_eq!(progress["method"], "notifications/progress", "{progress}");
    assert_eq!(progress["params"]["progressToken"], "p0");
    assert!(
        progress["params"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("group:ops")),
        "{progress}"
    );
    // The agent's other calls do not wait behind it.
    let echoed = direct.call_tool("echo", json!({"message": "meanwhile"}));
    assert!(result_text(&echoed).contains("meanwhile"), "{echoed}");
    let capped = direct.call_tool("files_write", json!({"path": "src/1.txt", "content": "x"}));
    assert!(is_error(&capped), "{capped}");
    assert!(
        result_text(&capped).contains("max_pending_per_agent"),
        "{capped}"
    );
    // A call only its sender may approve, made while the agent answers
    // nobody's message, is refused at once: nobody could approve it.
    let orphan = direct.call_tool(
        "files_write",
        json!({"path": "drafts/orphan.txt", "content": "x"}),
    );
    assert!(
        is_error(&orphan) && result_text(&orphan).contains("no single person's message"),
        "{orphan}"
    );
    for method in ["corral/approve", "approvals/approve", "corral/approvals"] {
        let answered = direct.request(method, json!({"id": first_id + 1, "approve": true}));
        assert!(answered.get("error").is_some(), "{method}: {answered}");
    }
    let named = direct.call_tool("approve", json!({"id": first_id}));
    assert!(is_error(&named), "{named}");
    let timed_out = direct.response(waiting);
    assert!(
        result_text(&timed_out["result"]).contains("not approved"),
        "the agent's own attempts answered nothing: {timed_out}"
    );
    assert!(!config.workspace().join("src/0.txt").exists());
    drop(direct);

    // A forbid that arrives while a call waits wins over its approval.
    rt.block_on(async {
        let mut operator = ChatClient::connect(&control).await.unwrap();
        let (reply, _) = chat_in_background(control.clone(), write_call("drafts/d.txt", "late"));
        let id = pending(&mut operator, 1).await[0]["id"].as_i64().unwrap();
        std::fs::write(
            config.dir.path().join("policies/late.cedar"),
            "@id(\"late-forbid\")\nforbid (principal, action == Action::\"files_write\", resource)\nwhen { context.input.path == \"drafts/d.txt\" };\n",
        )
        .unwrap();
        // The host reloads policies on change; give it time to.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        answer(&mut operator, id, once()).await.unwrap();
        let text = reply.await.unwrap().unwrap();
        assert!(
            text.contains("policies changed while it waited") && text.contains("late-forbid"),
            "{text}"
        );
        assert!(!drafts.join("d.txt").exists());
    });

    // A host that stops with a call waiting denies it, saying why, and a
    // restart does not bring the approval back.
    let (reply, pending_id) = rt.block_on(async {
        let mut operator = ChatClient::connect(&control).await.unwrap();
        let (reply, _) = chat_in_background(control.clone(), write_call("drafts/c.txt", "four"));
        let id = pending(&mut operator, 1).await[0]["id"].as_i64().unwrap();
        (reply, id)
    });
    assert_eq!(host.stop(), Some(0));
    drop(agent);
    let text = rt.block_on(reply).unwrap().unwrap_or_else(|e| e);
    assert!(text.contains("shutting down"), "{text}");
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    rt.block_on(async {
        let mut operator = ChatClient::connect(&control).await.unwrap();
        assert!(
            operator
                .pending_approvals()
                .await
                .unwrap()
                .unwrap()
                .is_empty()
        );
        let gone = answer(&mut operator, pending_id, once()).await.unwrap_err();
        assert!(gone.contains("not waiting"), "{gone}");
    });
    assert_eq!(host.stop(), Some(0));
    assert!(!config.workspace().join("drafts/c.txt").exists());

    config.verify_audit(CORRAL.as_ref());
    let records = config.audit_records(CORRAL.as_ref());
    let by_seq = |seq: &Value| records.iter().find(|r| r["seq"] == *seq).unwrap();
    for kind in [
        "approval_requested",
        "approval_granted",
        "approval_denied",
        "approval_expired",
    ] {
        for r in of_kind(&records, kind) {
            let call = by_seq(&r["parent"]);
            assert_eq!(call["kind"], "call", "{kind} links to its call: {r}");
            assert_eq!(call["action"], "files_write");
        }
    }
    assert_eq!(of_kind(&records, "approval_requested").len(), 7);
    assert_eq!(of_kind(&records, "approval_granted").len(), 3);
    assert_eq!(of_kind(&records, "approval_denied").len(), 1);
    let expired = of_kind(&records, "approval_expired");
    assert_eq!(
        expired.len(),
        3,
        "two timeouts and one shutdown: {expired:?}"
    );
    assert!(
        expired
            .iter()
            .any(|r| r["detail"].as_str().unwrap().contains("shutting down"))
    );
    assert!(
        of_kind(&records, "approval_refused")
            .iter()
            .any(|r| r["detail"]
                .as_str()
                .unwrap()
                .contains("max_pending_per_agent")),
        "the capped call is on the record"
    );
    // The call the period grant allowed cites the grant.
    let granted = of_kind(&records, "approval_granted");
    let period = granted
        .iter()
        .find(|r| r["arguments"].to_string().contains("period"))
        .unwrap_or_else(|| panic!("{granted:?}"));
    let by_grant: Vec<_> = records
        .iter()
        .filter(|r| r["kind"] == "call" && r["parent"] == period["seq"])
        .collect();
    assert_eq!(by_grant.len(), 1, "{by_grant:?}");
    assert_eq!(by_grant[0]["decision"], "allow");
    // Replaying the log against a candidate that drops the sender's
    // approval reports the calls that would no longer need it.
    let candidate = config.dir.path().join("candidate");
    std::fs::create_dir_all(&candidate).unwrap();
    for entry in std::fs::read_dir(config.dir.path().join("policies")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), candidate.join(entry.file_name())).unwrap();
        }
    }
    let extra = ASKING.replacen("@approval(\"sender\")\n", "", 1);
    std::fs::write(candidate.join("extra.cedar"), extra).unwrap();
    let replayed = crate::assistant::replay(&config, &candidate, &[]);
    let out = String::from_utf8_lossy(&replayed.stdout);
    assert!(
        out.contains("FLIP ask→allow"),
        "{out}\n{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert!(
        !out.contains("ask→deny") && !out.contains("allow→ask"),
        "{out}"
    );
    assert!(out.contains("would no longer need it"), "{out}");
    let query = std::process::Command::new(CORRAL)
        .args([
            "audit",
            "query",
            "--kind",
            "approval-granted",
            "--json",
            "--audit",
        ])
        .arg(config.audit())
        .output()
        .unwrap();
    assert!(
        query.status.success(),
        "{}",
        String::from_utf8_lossy(&query.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&query.stdout).lines().count(), 3);
}

#[test]
fn slack_buttons_answer_only_for_approvers_on_the_message_posted() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let slack = rt.block_on(SlackStandIn::start());
    let config = config(
        "[approvals]\ntimeout = \"60s\"\nslack_grant = \"1h\"\n",
        Some(slack.api_url()),
    );
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    let _agent = AgentLoop::start(&host, &config);
    let src = config.workspace().join("src");
    rt.block_on(async {
        assert!(
            slack.wait_connected(Duration::from_secs(30)).await,
            "{}",
            host.log()
        );
        let thread = "1764000100.000100";
        slack.mention(
            "m1",
            "C0001",
            "U0042",
            &write_call("src/x.txt", "<!channel> x"),
            thread,
        );
        let asked = slack
            .wait_post_where(Duration::from_secs(30), |p| {
                p["thread_ts"] == thread && p["blocks"].is_array()
            })
            .await
            .unwrap_or_else(|| panic!("no approval posted: {:?}\n{}", slack.posts(), host.log()));
        let text = asked["text"].as_str().unwrap();
        assert!(
            text.contains("files_write")
                && text.contains("ask-ops-for-src")
                && text.contains("group:ops"),
            "{text}"
        );
        assert!(
            text.contains("&lt;!channel&gt;") && !text.contains("<!channel>"),
            "{text}"
        );
        let buttons = &asked["blocks"][1]["elements"];
        let id = buttons[0]["value"].as_str().unwrap().to_string();
        let action = |n: usize| buttons[n]["action_id"].as_str().unwrap().to_string();
        let (approve_once, approve_period) = (action(0), action(1));
        let ts = SlackStandIn::ts_of(&asked);
        let press = |envelope: &str, team: &str, channel: &str, user: &str, action: &str| {
            slack.press_button(&ButtonPress {
                envelope,
                team,
                channel,
                user,
                message_ts: &ts,
                action_id: action,
                value: &id,
            });
        };
        let told = |user: &'static str, says: &'static str| {
            slack.wait_post_where(Duration::from_secs(20), move |p| {
                p["text"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!("<@{user}>")) && t.contains(says))
            })
        };
        // The sender is not in ops; U0066 is, but `approve` forbids them.
        press("b1", SLACK_TEAM, "C0001", "U0042", &approve_once);
        assert!(
            told("U0042", "not among them").await.is_some(),
            "{:?}",
            slack.posts()
        );
        press("b2", SLACK_TEAM, "C0001", "U0066", &approve_once);
        assert!(
            told("U0066", "no-ops-veto").await.is_some(),
            "{:?}",
            slack.posts()
        );
        // Forged: another channel, another workspace.
        press("b3", SLACK_TEAM, "C0002", "U0099", &approve_once);
        press("b4", "T9999", "C0001", "U0099", &approve_once);
        let refused_u0099 = || {
            slack
                .posts()
                .iter()
                .filter(|p| {
                    p["text"].as_str().is_some_and(|t| {
                        t.contains("<@U0099>") && t.contains("no approval waiting")
                    })
                })
                .count()
        };
        let until_refused = |n: usize| async move {
            for _ in 0..400 {
                if refused_u0099() >= n {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        };
        assert!(until_refused(2).await, "{:?}", slack.posts());
        assert!(!src.join("x.txt").exists(), "nothing counted yet");

        press("b5", SLACK_TEAM, "C0001", "U0099", &approve_once);
        let reply = slack
            .wait_post(thread, Duration::from_secs(20), |t| {
                !t.contains("Approval") && !t.contains("<@")
            })
            .await;
        assert!(reply.is_some(), "{:?}", slack.posts());
        assert_eq!(
            std::fs::read_to_string(src.join("x.txt")).unwrap(),
            "<!channel> x"
        );
        let updated = slack.updates();
        assert!(
            updated.iter().any(|u| u["ts"] == ts
                && u["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("granted by") && t.contains("slack:U0099"))),
            "{updated:?}"
        );
        // A replay of the press that counted counts for nothing.
        press("b6", SLACK_TEAM, "C0001", "U0099", &approve_once);
        assert!(until_refused(3).await, "{:?}", slack.posts());

        // forbid beats any approval: no ask, a denial.
        let denied_thread = "1764000200.000100";
        slack.mention(
            "m2",
            "C0001",
            "U0042",
            &write_call("src/secret.txt", "k"),
            denied_thread,
        );
        let denied = slack
            .wait_post(denied_thread, Duration::from_secs(20), |t| {
                t.contains("denied")
            })
            .await
            .unwrap_or_else(|| panic!("{:?}", slack.posts()));
        assert!(
            denied["text"]
                .as_str()
                .unwrap()
                .contains("no-secrets-even-approved"),
            "{denied}"
        );
        assert!(
            slack
                .posts()
                .iter()
                .all(|p| !(p["thread_ts"] == denied_thread && p["blocks"].is_array()))
        );

        // The period button: the identical call in a new thread runs unasked.
        let t3 = "1764000300.000100";
        slack.mention("m3", "C0001", "U0042", &write_call("src/y.txt", "y"), t3);
        let asked = slack
            .wait_post_where(Duration::from_secs(30), |p| {
                p["thread_ts"] == t3 && p["blocks"].is_array()
            })
            .await
            .unwrap();
        slack.press_button(&ButtonPress {
            envelope: "b7",
            team: SLACK_TEAM,
            channel: "C0001",
            user: "U0099",
            message_ts: &SlackStandIn::ts_of(&asked),
            action_id: &approve_period,
            value: asked["blocks"][1]["elements"][1]["value"].as_str().unwrap(),
        });
        assert!(
            slack
                .wait_post(t3, Duration::from_secs(20), |t| !t.contains("Approval"))
                .await
                .is_some()
        );
        std::fs::remove_file(src.join("y.txt")).unwrap();
        let t4 = "1764000400.000100";
        slack.mention("m4", "C0001", "U0042", &write_call("src/y.txt", "y"), t4);
        assert!(
            slack
                .wait_post(t4, Duration::from_secs(20), |_| true)
                .await
                .is_some()
        );
        assert!(src.join("y.txt").exists());
        assert!(
            slack
                .posts()
                .iter()
                .all(|p| !(p["thread_ts"] == t4 && p["blocks"].is_array()))
        );

        // Arguments Slack cannot show whole cannot be approved there.
        let t5 = "1764000500.000100";
        let long = "z".repeat(1500);
        slack.mention("m5", "C0001", "U0042", &write_call("src/z.txt", &long), t5);
        let asked = slack
            .wait_post_where(Duration::from_secs(30), |p| {
                p["thread_ts"] == t5 && p["blocks"].is_array()
            })
            .await
            .unwrap();
        assert!(
            asked["text"]
                .as_str()
                .unwrap()
                .contains("corral approvals show"),
            "{asked}"
        );
        let only = asked["blocks"][1]["elements"].as_array().unwrap().clone();
        assert_eq!(only.len(), 1, "only Deny: {only:?}");
        let long_ts = SlackStandIn::ts_of(&asked);
        let long_id = only[0]["value"].as_str().unwrap();
        let press_long = |envelope: &str, action: &str| {
            slack.press_button(&ButtonPress {
                envelope,
                team: SLACK_TEAM,
                channel: "C0001",
                user: "U0099",
                message_ts: &long_ts,
                action_id: action,
                value: long_id,
            });
        };
        press_long("b8", &approve_once);
        assert!(
            told("U0099", "cannot be approved in Slack").await.is_some(),
            "{:?}",
            slack.posts()
        );
        press_long("b9", only[0]["action_id"].as_str().unwrap());
        let refused = slack
            .wait_post(t5, Duration::from_secs(20), |t| t.contains("refused by"))
            .await;
        assert!(refused.is_some(), "{:?}", slack.posts());
        assert!(!src.join("z.txt").exists());
    });
    assert_eq!(host.stop(), Some(0));
    config.verify_audit(CORRAL.as_ref());
    let records = config.audit_records(CORRAL.as_ref());
    let refused = of_kind(&records, "approval_refused");
    assert!(
        refused
            .iter()
            .any(|r| r["detail"].as_str().unwrap().contains("not among them")),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|r| r["policy_ids"] == json!(["no-ops-veto"])),
        "{refused:?}"
    );
    let granted = of_kind(&records, "approval_granted");
    assert_eq!(granted.len(), 2, "{granted:?}");
    assert_eq!(of_kind(&records, "approval_denied").len(), 1);
    assert!(
        granted
            .iter()
            .all(|r| r["detail"].as_str().unwrap().contains("slack:U0099")
                && r["detail"].as_str().unwrap().contains("via slack"))
    );
}
