//! Attacks and failures met through the real `corral up`: what an agent
//! leaves behind where the host works, and what a person sees when their
//! agent cannot run. The container tests use the real Docker engine; if it
//! is unreachable they fail, saying so.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use corral_tests::up::{UpConfig, UpHost, UpOptions};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

fn chat(config: &UpConfig, text: &str) -> (Output, Duration) {
    let started = Instant::now();
    let out = Command::new(CORRAL)
        .args(["chat", "assistant", "--socket"])
        .arg(config.control())
        .args(["-m", text])
        .output()
        .expect("run corral chat");
    (out, started.elapsed())
}

fn all_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn something_else_at_an_agents_socket_path_stops_that_agent_not_the_host() {
    let config = UpConfig::write(&UpOptions::default());
    // What a container left behind, say: a directory where the socket goes.
    let taken = config.dir.path().join("state/agents/assistant/mcp.sock");
    std::fs::create_dir_all(&taken).unwrap();
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    assert!(
        host.log().contains("agent `assistant` is not served") && host.log().contains("mcp.sock"),
        "{}",
        host.log()
    );
    let (out, _) = chat(&config, "hello");
    assert!(!out.status.success());
    let said = all_text(&out);
    assert!(
        said.contains("agent `assistant` is not available") && said.contains("not a socket"),
        "{said}"
    );
    assert_eq!(host.stop(), Some(0));
    assert!(taken.is_dir(), "the host removed what it did not make");
}

#[test]
fn a_container_that_cannot_start_answers_the_person_within_seconds() {
    let config = UpConfig::write(&UpOptions {
        image: Some("corral-agent:no-such-image-here".into()),
        ..UpOptions::default()
    });
    let host = UpHost::start(CORRAL.as_ref(), &config, &[]);
    let (out, took) = chat(&config, "are you there?");
    let said = all_text(&out);
    assert!(
        said.contains("agent `assistant` could not start") && said.contains("no-such-image-here"),
        "{said}\n{}",
        host.log()
    );
    assert!(took < Duration::from_secs(20), "the person waited {took:?}");
    assert_eq!(host.stop(), Some(0));
    let records = config.audit_records(CORRAL.as_ref());
    assert!(
        records.iter().any(|r| r["kind"] == "outcome"
            && r["action"] == "invoke"
            && r["outcome"] == "error"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("could not run"))),
        "{records:#?}"
    );
    config.verify_audit(CORRAL.as_ref());
}

#[test]
fn up_with_a_relative_config_from_another_directory_starts_the_container() {
    let config = UpConfig::write(&UpOptions::default());
    // `corral up --config x/corral.toml` from the config's parent's parent.
    let dir = config.dir.path();
    let cwd = dir.parent().unwrap();
    let relative = std::path::Path::new(dir.file_name().unwrap()).join("corral.toml");
    let host = UpHost::start_in(CORRAL.as_ref(), &config, Some(cwd), &relative, &[]);
    let out = Command::new(CORRAL)
        .args(["agents", "start", "assistant", "--socket"])
        .arg(config.control())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", all_text(&out), host.log());
    assert!(String::from_utf8_lossy(&out.stdout).contains("started agent `assistant`"));
    // The socket path the host printed is absolute.
    assert!(
        host.sockets.iter().all(|(_, p)| p.is_absolute()),
        "{:?}",
        host.sockets
    );
    assert_eq!(host.stop(), Some(0));
}
