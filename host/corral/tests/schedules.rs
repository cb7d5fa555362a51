//! Scheduled messages through the real `corral up`: decided as
//! `Schedule::"name"`, recorded, replied to Slack (a stand-in) or the log,
//! never piled up, run by an operator, and caught up after a restart.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use corral_tests::standins::SlackStandIn;
use corral_tests::up::{UpConfig, UpHost, UpOptions};
use serde_json::{Value, json};

use crate::assistant::{AgentLoop, StandInAgent, replay};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

/// Every second, so the test waits seconds, not minutes (a sixth, leading
/// field is seconds).
const EVERY_SECOND: &str = "* * * * * *";
/// Once a year: started only by an operator in these tests.
const YEARLY: &str = "0 0 1 1 *";

fn schedule(name: &str, cron: &str, message: &str, reply_to: &str, missed: &str) -> String {
    format!(
        "[[schedules]]\nname = \"{name}\"\ncron = \"{cron}\"\ntime_zone = \"Europe/Paris\"\nagent = \"assistant\"\nmessage = '{message}'\nreply_to = \"{reply_to}\"\nmissed = \"{missed}\"\n"
    )
}

fn corral(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(CORRAL)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run corral")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Records of `kind` whose arguments name `Schedule::"name"`.
fn of_schedule<'a>(records: &'a [Value], kind: &str, name: &str) -> Vec<&'a Value> {
    let principal = format!("Schedule::\"{name}\"");
    records
        .iter()
        .filter(|r| r["kind"] == kind)
        .filter(|r| {
            let arguments: Value =
                serde_json::from_str(r["arguments"].as_str().unwrap_or("{}")).unwrap_or_default();
            arguments["schedule"] == principal.as_str()
        })
        .collect()
}

fn arguments(record: &Value) -> Value {
    serde_json::from_str(record["arguments"].as_str().unwrap_or("{}")).unwrap()
}

#[test]
fn a_schedule_is_decided_as_itself_replies_where_configured_and_never_piles_up() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let slack = rt.block_on(SlackStandIn::start());
    let extra_toml = [
        // The starter policies permit this one.
        schedule(
            "morning-brief",
            EVERY_SECOND,
            "what is on today?",
            "slack:C0001",
            "skip",
        ),
        // No policy names this one; its channel hears so once.
        schedule("hourly-sweep", EVERY_SECOND, "sweep", "slack:C0001", "skip"),
        schedule("on-demand", YEARLY, "report now", "log", "skip"),
    ]
    .concat();
    let config = UpConfig::write(&UpOptions {
        slack_api: Some(slack.api_url()),
        extra_toml: Some(extra_toml),
        extra_policy: Some(
            "@id(\"on-demand-may-ask\")\npermit (principal == Schedule::\"on-demand\", action == Action::\"invoke\", resource == Agent::\"assistant\");\n"
                .into(),
        ),
        ..UpOptions::default()
    });
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    assert!(rt.block_on(slack.wait_connected(Duration::from_secs(30))));
    let mut agent = StandInAgent::connect(&host);
    let first = agent.next();
    assert_eq!(first["text"], "what is on today?", "{first}");
    assert_eq!(first["schedule"], "morning-brief", "{first}");
    assert!(first["user"].is_null(), "no person sent it: {first}");
    // Held unanswered while the schedule falls due again: those runs are
    // skipped, not queued behind it.
    std::thread::sleep(Duration::from_millis(2500));
    let replied = agent.reply(&first, "Nothing today <!here>.");
    assert_eq!(replied["result"]["delivered"], true, "{replied}");
    // Posted as text: the agent cannot notify the whole channel.
    let post = rt.block_on(slack.wait_post_where(Duration::from_secs(10), |p| {
        p["text"] == "Nothing today &lt;!here&gt;."
    }));
    let post = post.unwrap_or_else(|| panic!("posts: {:?}", slack.posts()));
    assert_eq!(post["channel"], "C0001");
    assert!(
        post.get("thread_ts").is_none(),
        "a message of its own: {post}"
    );

    // The operator runs one now; a name that is not configured is refused.
    let run = corral(&["schedules", "run", "on-demand"], &config.path);
    assert!(run.status.success(), "{}", text(&run));
    assert!(
        text(&run).contains("sent its message to agent `assistant`"),
        "{}",
        text(&run)
    );
    let unknown = corral(&["schedules", "run", "nightly"], &config.path);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("no schedule `nightly`")
            && text(&unknown).contains("morning-brief, hourly-sweep, on-demand"),
        "{}",
        text(&unknown)
    );
    // Answer until the operator's message has come and gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "the operator's run never arrived"
        );
        let message = agent.next();
        agent.reply(&message, "done");
        if message["schedule"] == "on-demand" {
            break;
        }
    }
    // Runs keep falling due: answered until the host stops, so shutdown
    // does not wait out its grace for them.
    let answering = std::thread::spawn(move || {
        while let Ok(next) = agent.0.request("corral/next", json!({"wait_ms": 500})) {
            let message = &next["result"]["message"];
            if message.is_object()
                && agent
                    .0
                    .request(
                        "corral/reply",
                        json!({"message": message["id"], "text": "done", "last": true}),
                    )
                    .is_err()
            {
                break;
            }
        }
    });
    assert_eq!(host.stop(), Some(0));
    let _ = answering.join();

    let corral_bin = Path::new(CORRAL);
    let records = config.audit_records(corral_bin);
    config.verify_audit(corral_bin);
    let allowed = of_schedule(&records, "call", "morning-brief");
    assert!(!allowed.is_empty());
    assert!(
        allowed
            .iter()
            .all(|r| r["decision"] == "allow" && r["action"] == "invoke")
    );
    let run = arguments(allowed[0]);
    assert_eq!(run["trigger"], "cron", "{run}");
    assert_eq!(run["channel"], "Channel::\"slack:C0001\"", "{run}");
    assert!(
        run["scheduled_for"]
            .as_str()
            .unwrap()
            .ends_with("[Europe/Paris]"),
        "{run}"
    );
    let skipped = of_schedule(&records, "schedule_skipped", "morning-brief");
    assert!(
        skipped.len() >= 2,
        "runs due while the first was held: {skipped:?}"
    );
    assert_eq!(arguments(skipped[0])["reason"], "previous-run-unanswered");
    assert!(skipped[0]["decision"].is_null(), "a skip decides nothing");

    let refused = of_schedule(&records, "call", "hourly-sweep");
    assert!(!refused.is_empty());
    assert!(
        refused.iter().all(|r| r["decision"] == "deny"),
        "{refused:?}"
    );
    assert!(
        of_schedule(&records, "schedule_skipped", "hourly-sweep").is_empty(),
        "a refused run leaves nothing unanswered to wait for"
    );
    let manual = of_schedule(&records, "call", "on-demand");
    assert_eq!(manual.len(), 1, "{manual:?}");
    assert_eq!(arguments(manual[0])["trigger"], "operator");
    // The reply was decided as the agent posting in the schedule's channel.
    assert!(records.iter().any(|r| r["action"] == "post_message"
        && r["resource"] == "Channel::\"slack:C0001\""
        && r["decision"] == "allow"));
    assert!(host_log_mentions(
        &config,
        "denied: Schedule::\"hourly-sweep\""
    ));

    // Replayed: a candidate without the schedule's permit flips exactly
    // its runs, and no schedule record is left unreplayable.
    let candidate = config.dir.path().join("candidate");
    std::fs::create_dir(&candidate).unwrap();
    for file in std::fs::read_dir(config.dir.path().join("policies")).unwrap() {
        let file = file.unwrap().path();
        if file.is_file() {
            std::fs::copy(&file, candidate.join(file.file_name().unwrap())).unwrap();
        }
    }
    let starter = std::fs::read_to_string(candidate.join("corral.cedar")).unwrap();
    let without = starter.replace(
        "principal == Schedule::\"morning-brief\"",
        "principal == Schedule::\"someone-else\"",
    );
    assert_ne!(starter, without);
    std::fs::write(candidate.join("corral.cedar"), without).unwrap();
    let out = replay(&config, &candidate, &[]);
    let replayed = text(&out);
    assert!(!replayed.contains("cannot replay"), "{replayed}");
    assert!(
        replayed.contains(&format!(
            "{} would flip ({} allow→deny",
            allowed.len(),
            allowed.len()
        )),
        "{replayed}"
    );
}

fn host_log_mentions(config: &UpConfig, needle: &str) -> bool {
    std::fs::read_to_string(config.dir.path().join("up.stderr"))
        .is_ok_and(|log| log.contains(needle))
}

#[test]
fn runs_missed_while_the_host_was_down_run_once_or_are_skipped_as_configured() {
    let config = UpConfig::write(&UpOptions {
        extra_toml: Some(
            [
                schedule("morning-brief", YEARLY, "/tool echo {\"message\": \"caught up\"}", "log", "run-once"),
                schedule("evening-note", YEARLY, "evening", "log", "skip"),
            ]
            .concat(),
        ),
        extra_policy: Some(
            "@id(\"evening-note-may-ask\")\npermit (principal == Schedule::\"evening-note\", action == Action::\"invoke\", resource == Agent::\"assistant\");\n"
                .into(),
        ),
        ..UpOptions::default()
    });
    // A first start notes when each schedule was last handled: now.
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    assert_eq!(host.stop(), Some(0));
    let ls = corral(&["schedules", "ls", "--next", "2"], &config.path);
    assert!(ls.status.success(), "{}", text(&ls));
    let listed = text(&ls);
    assert!(
        listed.contains("morning-brief")
            && listed.contains("run-once")
            && listed.contains("[Europe/Paris]"),
        "{listed}"
    );
    assert!(
        !listed.contains("never"),
        "both were handled at the first start: {listed}"
    );

    // While it is down, the schedules fall due every second.
    std::thread::sleep(Duration::from_millis(2200));
    let toml = std::fs::read_to_string(&config.path)
        .unwrap()
        .replace(YEARLY, EVERY_SECOND);
    std::fs::write(&config.path, toml).unwrap();
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    let _agent = AgentLoop::start(&host, &config);
    let corral_bin = Path::new(CORRAL);
    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records = config.audit_records(corral_bin);
        let answered = records.iter().any(|r| {
            r["action"] == "post_message"
                && r["kind"] == "call"
                && arguments(r)["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("caught up"))
        });
        if answered {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "the missed run was never answered:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(host.stop(), Some(0));

    let caught_up = of_schedule(&records, "call", "morning-brief");
    let first = arguments(caught_up[0]);
    assert_eq!(
        first["trigger"], "missed",
        "the first run after the restart: {first}"
    );
    assert_eq!(caught_up[0]["decision"], "allow");
    let skipped = of_schedule(&records, "schedule_skipped", "evening-note");
    assert_eq!(arguments(skipped[0])["reason"], "missed", "{skipped:?}");
    let why = skipped[0]["detail"].as_str().unwrap_or_default();
    assert!(
        why.contains("runs due from") && why.contains("missed = \"skip\""),
        "{why}"
    );
    assert!(
        of_schedule(&records, "call", "evening-note")
            .iter()
            .all(|r| arguments(r)["trigger"] == "cron"),
        "a skipped schedule never runs what it missed"
    );
    config.verify_audit(corral_bin);
}

#[test]
fn a_bad_schedule_is_refused_at_start_naming_it_and_the_fix() {
    let config = UpConfig::write(&UpOptions {
        extra_toml: Some(schedule("brief", "0 25 * * *", "hi", "log", "skip")),
        ..UpOptions::default()
    });
    let out = corral(&["schedules", "ls"], &config.path);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("[[schedules]] `brief`: cron") && said.contains("five fields"),
        "{said}"
    );

    let config = UpConfig::write(&UpOptions {
        extra_toml: Some(schedule("brief", "0 8 * * *", "hi", "slack:C0001", "skip")),
        ..UpOptions::default()
    });
    let out = corral(&["schedules", "ls"], &config.path);
    let said = text(&out);
    assert!(said.contains("needs a [slack] section"), "{said}");

    let config = UpConfig::write(&UpOptions {
        extra_toml: Some(
            schedule("brief", "0 8 * * *", "hi", "log", "skip")
                .replace("\"assistant\"", "\"ghost\""),
        ),
        ..UpOptions::default()
    });
    let said = text(&corral(&["schedules", "ls"], &config.path));
    assert!(
        said.contains("agent `ghost` is not in [[agents]]"),
        "{said}"
    );
}
