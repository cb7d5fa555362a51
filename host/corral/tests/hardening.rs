//! Attacks and failures met through the real `corral up`: what an agent
//! leaves behind where the host works, and what a person sees when their
//! agent cannot run. The container tests use the real Docker engine; if it
//! is unreachable they fail, saying so.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use corral_tests::mcp::{McpClient, is_error, result_text};
use corral_tests::up::{UpConfig, UpHost, UpOptions};
use serde_json::json;

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

use crate::docker_lock;

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
    // The sockets' tmpfs as a killed host left it, with a directory where
    // the socket goes (the host reuses that tmpfs on its next start).
    let sockets = config.dir.path().join("state/agents");
    std::fs::create_dir_all(&sockets).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "mode=0700,size=1m", "corral-sockets"])
        .arg(&sockets)
        .status()
        .unwrap();
    assert!(mounted.success());
    let taken = sockets.join("assistant/mcp.sock");
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
    assert!(taken.is_dir(), "the host removed what it did not make");
    assert_eq!(host.stop(), Some(0));
}

#[test]
fn a_container_that_cannot_start_answers_the_person_within_seconds() {
    let _docker = docker_lock();
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
fn a_slack_message_to_an_agent_that_cannot_start_is_answered_in_its_thread() {
    let _docker = docker_lock();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let slack = rt.block_on(corral_tests::standins::SlackStandIn::start());
    let config = UpConfig::write(&UpOptions {
        image: Some("corral-agent:no-such-image-here".into()),
        slack_api: Some(slack.api_url()),
        ..UpOptions::default()
    });
    let host = UpHost::start(CORRAL.as_ref(), &config, &[]);
    rt.block_on(async {
        assert!(
            slack.wait_connected(Duration::from_secs(30)).await,
            "{}",
            host.log()
        );
        let asked = Instant::now();
        slack.mention("env1", "C0001", "U0042", "hello?", "1764000009.000100");
        let reply = slack
            .wait_post("1764000009.000100", Duration::from_secs(20), |t| {
                t.contains("could not start")
            })
            .await;
        let reply = reply.unwrap_or_else(|| panic!("no answer in the thread: {:?}", slack.posts()));
        let reply = reply["text"].as_str().unwrap_or_default().to_string();
        assert!(
            reply.contains("agent `assistant`") && reply.contains("no-such-image-here"),
            "{reply}"
        );
        assert!(asked.elapsed() < Duration::from_secs(20));
    });
    assert_eq!(host.stop(), Some(0));
}

#[test]
fn up_with_a_relative_config_from_another_directory_starts_the_container() {
    let _docker = docker_lock();
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
    // The container runs as the agent's own uid, which owns its socket.
    let inspect = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{.Config.User}}",
            "corral-agent-assistant",
        ])
        .output()
        .expect("the docker CLI is installed");
    let user = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    let (uid, _) = user.split_once(':').expect("UID:GID");
    assert_ne!(user, "10001:10001", "every agent shared that uid before");
    let socket = std::fs::symlink_metadata(&host.sockets[0].1).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&socket).to_string(),
        uid
    );
    // The socket path the host printed is absolute.
    assert!(
        host.sockets.iter().all(|(_, p)| p.is_absolute()),
        "{:?}",
        host.sockets
    );
    assert_eq!(host.stop(), Some(0));
}

#[test]
fn an_agent_fills_its_own_disk_not_the_hosts_and_its_mounts_name_no_host_path() {
    let config = UpConfig::write(&UpOptions::default());
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    let workspace = config.workspace().canonicalize().unwrap();
    let mounts = corral_sandbox::mounts();
    let at = |p: &std::path::Path| mounts.iter().rev().find(|m| m.mount_point == p).cloned();
    // The workspace is a file system of its own, so a container's
    // mountinfo shows its root as `/`; the socket directory's as `/assistant`.
    let ws = at(&workspace).expect("the workspace is a mount point");
    assert_eq!((ws.fs_type.as_str(), ws.root.as_str()), ("ext4", "/"));
    let sockets = config
        .dir
        .path()
        .join("state/agents")
        .canonicalize()
        .unwrap();
    assert_eq!(at(&sockets).expect("a tmpfs").fs_type, "tmpfs");

    let (_, socket) = &host.sockets[0];
    let mut c = McpClient::ready(socket);
    let chunk = "x".repeat(900 << 10);
    let mut refused = None;
    for i in 0..120 {
        let r = c.call_tool(
            "files_write",
            json!({"path": format!("notes/fill-{i}.txt"), "content": chunk}),
        );
        if is_error(&r) {
            refused = Some((i, result_text(&r)));
            break;
        }
    }
    let (i, text) = refused.expect("64 MiB of 900 KiB files ran out");
    assert!(i > 40, "the disk held only {i} files: {text}");
    assert!(text.contains("No space left"), "{text}");
    // The log still takes decisions: the host's disk was never touched.
    let r = c.call_tool("echo", json!({"message": "still here"}));
    assert!(!is_error(&r), "{r}");
    drop(c);
    assert_eq!(host.stop(), Some(0));
    config.verify_audit(CORRAL.as_ref());
    assert!(
        !corral_sandbox::mounts()
            .iter()
            .any(|m| m.mount_point == workspace),
        "unmounted at shutdown"
    );

    // A disk still held elsewhere (a container that outlived its host) is
    // never mounted a second time: two ext4 instances on one image would
    // corrupt it.
    let image = config.dir.path().join("state/disks/assistant.img");
    let held = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&image)
        .output()
        .unwrap();
    let device = String::from_utf8_lossy(&held.stdout).trim().to_string();
    assert!(held.status.success(), "{held:?}");
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    let log = host.log();
    assert_eq!(host.stop(), Some(0));
    let _ = Command::new("losetup").arg("-d").arg(&device).status();
    assert!(
        log.contains("agent `assistant` is not served") && log.contains("still attached"),
        "{log}"
    );
}

/// The outside attack, replayed: an image whose agent keeps renaming a
/// link to a host file over its socket's path while the host crashes and
/// starts again, adopting the running container each time. Before, the
/// host's chown after bind followed the link and gave the file away
/// within 14 to 20 restarts.
#[test]
fn a_hostile_agent_racing_the_socket_through_host_restarts_gets_nothing() {
    use std::os::unix::fs::MetadataExt;
    let _docker = docker_lock();
    let scratch = tempfile::tempdir().unwrap();
    let canary = scratch.path().join("canary");
    std::fs::write(&canary, "host file").unwrap();
    let before = std::fs::metadata(&canary).unwrap();
    // The hostile image: the real agent binary, racing from its entrypoint.
    let context = scratch.path().join("hostile-image");
    std::fs::create_dir(&context).unwrap();
    std::fs::copy(corral_tests::agent_binary(), context.join("corral-agent")).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY corral-agent /usr/local/bin/corral-agent\n\
             ENTRYPOINT [\"/usr/local/bin/corral-agent\", \"selftest\", \"socket-race\", \"{}\"]\n",
            canary.display()
        ),
    )
    .unwrap();
    let tag = "corral-hostile:socket-race";
    let built = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(&context)
        .output()
        .expect("the docker CLI is installed");
    assert!(built.status.success(), "{}", all_text(&built));
    let config = UpConfig::write(&UpOptions {
        image: Some(tag.into()),
        ..UpOptions::default()
    });
    let host = UpHost::start(CORRAL.as_ref(), &config, &[]);
    let started = Command::new(CORRAL)
        .args(["agents", "start", "assistant", "--socket"])
        .arg(config.control())
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", all_text(&started));
    let mut host = host;
    let race_logs = || {
        let logs = Command::new("docker")
            .args(["logs", "corral-agent-assistant"])
            .output()
            .unwrap();
        all_text(&logs)
    };
    let reports = |logs: &str| {
        logs.lines()
            .filter(|l| l.starts_with("socket-race:"))
            .count()
    };
    for _ in 0..20 {
        host.crash();
        host = UpHost::start(CORRAL.as_ref(), &config, &[]);
    }
    // The race reports its running count once a second; wait for a report
    // made after the last restart, which counts every try made during
    // them (on a fast machine the 20 restarts take less than a second).
    let reported = reports(&race_logs());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut logs = race_logs();
    while reports(&logs) <= reported && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        logs = race_logs();
    }
    assert_eq!(host.stop(), Some(0));
    let races: Vec<&str> = logs
        .lines()
        .filter(|l| l.starts_with("socket-race:"))
        .collect();
    assert!(
        races.len() > reported,
        "the race made no report after the restarts: {logs}"
    );
    assert!(
        races.iter().all(|l| l.ends_with(" 0 got through")),
        "{races:?}"
    );
    let after = std::fs::metadata(&canary).unwrap();
    assert_eq!(
        (after.uid(), after.gid(), after.mode()),
        (before.uid(), before.gid(), before.mode()),
        "the host gave its file away"
    );
}

#[test]
fn a_workspace_with_files_moves_onto_its_own_disk_and_nothing_is_lost() {
    let config = UpConfig::write(&UpOptions::default());
    let workspace = config.workspace();
    std::fs::create_dir_all(workspace.join("notes")).unwrap();
    std::fs::write(workspace.join("notes/kept.md"), "from before").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", workspace.join("notes/link")).unwrap();
    let host = UpHost::start(CORRAL.as_ref(), &config, &["--external-agents"]);
    assert_eq!(
        std::fs::read_to_string(workspace.join("notes/kept.md")).unwrap(),
        "from before"
    );
    // A link is copied as a link, never as what it points at.
    let link = std::fs::symlink_metadata(workspace.join("notes/link")).unwrap();
    assert!(link.file_type().is_symlink());
    let kept = workspace.with_file_name("assistant.before-disk");
    assert_eq!(
        std::fs::read_to_string(kept.join("notes/kept.md")).unwrap(),
        "from before"
    );
    assert_eq!(host.stop(), Some(0));
}
