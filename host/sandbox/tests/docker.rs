//! Agent containers on the real Docker engine of this machine: the image,
//! a tool call from inside a container through the broker, and escape
//! attempts that must all fail. These tests need the engine; when it is
//! unreachable they fail saying so, and are never skipped.

use std::os::unix::fs::chown;

use corral_sandbox::{AgentImage, ContainerSpec, Docker, Exited, Limits};
use corral_tests::broker::{BrokerOptions, TestBroker};
use corral_tests::repo_root;

const AGENT_UID: u32 = 10001;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn image() -> AgentImage {
    AgentImage {
        dir: repo_root().join("agent-image"),
        binary: corral_tests::agent_binary(),
    }
}

async fn docker() -> Docker {
    Docker::connect().await.unwrap_or_else(|e| {
        panic!("{e}\nthese tests need the Docker engine; they are never skipped")
    })
}

/// A broker whose socket directories belong to the container user.
fn broker() -> TestBroker {
    let b = TestBroker::start(BrokerOptions {
        socket_owner: Some((AGENT_UID, AGENT_UID)),
        agents: vec!["assistant", "reporter", "stranger"],
        ..BrokerOptions::default()
    });
    for agent in ["assistant", "reporter", "stranger"] {
        chown(b.workspace(agent), Some(AGENT_UID), Some(AGENT_UID)).unwrap();
    }
    b
}

/// Tests run in parallel; two builds of one tag at once would leave a
/// dangling image behind.
static BUILD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn build(docker: &Docker) -> String {
    let _one_at_a_time = BUILD.lock().await;
    image().build(docker, |_| {}).await.unwrap()
}

/// Creates, runs to completion and removes the agent's container.
async fn run(
    docker: &Docker,
    b: &TestBroker,
    agent: &str,
    limits: Limits,
    command: &[&str],
) -> Exited {
    let tag = build(docker).await;
    let spec = ContainerSpec {
        agent: agent.to_string(),
        image: tag,
        workspace: b.workspace(agent),
        socket_dir: b.endpoint(agent).dir().to_path_buf(),
        user: format!("{AGENT_UID}:{AGENT_UID}"),
        limits,
        command: command.iter().map(|s| s.to_string()).collect(),
        extra_mounts: Vec::new(),
    };
    docker.remove_named(&spec.name()).await;
    let id = docker.create(&spec).await.unwrap();
    docker.start(agent, &id).await.unwrap();
    let exited = docker.wait(agent, &id).await.unwrap();
    let oom = docker.oom_killed(agent, &id).await.unwrap();
    docker.remove(agent, &id).await.unwrap();
    assert_eq!(oom, exited.oom_killed);
    exited
}

#[test]
fn the_agent_image_is_built_once_from_its_content() {
    rt().block_on(async {
        let docker = docker().await;
        let image = image();
        let tag = build(&docker).await;
        assert!(tag.starts_with("corral-agent:"), "{tag}");
        let mut lines = Vec::new();
        let again = image
            .build(&docker, |l| lines.push(l.to_string()))
            .await
            .unwrap();
        assert_eq!(again, tag);
        assert_eq!(lines, [format!("{tag} is up to date")]);
        let config = docker.image_config(&tag).await.unwrap();
        assert_eq!(config.0, "10001:10001", "the image runs as the agent user");
        assert_eq!(config.1, ["/usr/local/bin/corral-agent"]);
    });
}

#[test]
fn an_agent_container_calls_echo_through_the_broker() {
    let mut b = broker();
    let exited = rt().block_on(async {
        let docker = docker().await;
        run(
            &docker,
            &b,
            "reporter",
            Limits::default(),
            &["call", "echo", r#"{"message":"from a container"}"#],
        )
        .await
    });
    assert_eq!(exited.code, 0, "{exited:?}");
    let out: serde_json::Value = serde_json::from_str(exited.stdout.trim()).unwrap();
    assert_eq!(out["message"], "from a container");
    b.stop();
    let records = b.records();
    assert_eq!(records[0].agent, "reporter");
    assert_eq!(records[0].action, "echo");
    assert_eq!(records[0].decision.as_deref(), Some("allow"));
}

#[test]
fn escapes_from_an_agent_container_fail() {
    let b = broker();
    let exited = rt().block_on(async {
        let docker = docker().await;
        run(
            &docker,
            &b,
            "assistant",
            Limits {
                pids: 64,
                ..Limits::default()
            },
            &["selftest"],
        )
        .await
    });
    eprintln!("{}", exited.stdout);
    assert_eq!(
        exited.code, 0,
        "an attempt got through:\n{}{}",
        exited.stdout, exited.stderr
    );
    for probe in [
        "network",
        "dns",
        "root-filesystem",
        "host-paths",
        "other-sockets",
        "socket-dir",
        "syscalls",
        "identity",
        "pids",
    ] {
        assert!(
            exited
                .stdout
                .lines()
                .any(|l| l.starts_with(&format!("blocked {probe}:"))),
            "no result for {probe}:\n{}",
            exited.stdout
        );
    }
}

#[test]
fn a_memory_bomb_is_stopped_and_the_host_keeps_serving() {
    let b = broker();
    let exited = rt().block_on(async {
        let docker = docker().await;
        let limits = Limits {
            memory_bytes: 64 << 20,
            ..Limits::default()
        };
        run(&docker, &b, "stranger", limits, &["selftest", "memory"]).await
    });
    assert!(
        exited.oom_killed,
        "the memory limit did not stop it: {exited:?}"
    );
    assert_eq!(exited.code, 137, "{exited:?}");
    let r = b
        .client("reporter")
        .call_tool("echo", serde_json::json!({"message": "still serving"}));
    assert_eq!(r["isError"], false, "{r}");
}

#[test]
fn the_backend_finds_containers_by_label() {
    use corral_sandbox::ContainerBackend;
    let b = broker();
    rt().block_on(async {
        let docker = docker().await;
        let spec = ContainerSpec {
            agent: "reporter".into(),
            image: build(&docker).await,
            workspace: b.workspace("reporter"),
            socket_dir: b.endpoint("reporter").dir().to_path_buf(),
            user: format!("{AGENT_UID}:{AGENT_UID}"),
            limits: Limits::default(),
            command: vec!["tools".into()],
            extra_mounts: Vec::new(),
        };
        // A distinct name: the echo test may run at the same time.
        let spec = ContainerSpec {
            agent: "reporter-listed".into(),
            ..spec
        };
        docker.remove_named(&spec.name()).await;
        let id = ContainerBackend::create(&docker, &spec).await.unwrap();
        let listed = ContainerBackend::list(&docker).await.unwrap();
        let mine = listed.iter().find(|c| c.id == id).expect("listed by label");
        assert_eq!(mine.agent, "reporter-listed");
        assert!(!mine.running);
        let info = ContainerBackend::inspect(&docker, "reporter-listed", &id)
            .await
            .unwrap();
        assert_eq!(info.agent, "reporter-listed");
        assert_eq!(info.image, spec.image);
        ContainerBackend::remove(&docker, "reporter-listed", &id)
            .await
            .unwrap();
        let listed = ContainerBackend::list(&docker).await.unwrap();
        assert!(listed.iter().all(|c| c.id != id));
    });
}
