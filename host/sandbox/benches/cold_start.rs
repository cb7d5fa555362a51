//! Cold start of an agent container: create and start a hardened container
//! whose `corral-agent` makes one `tools/call` (echo) through a real
//! broker, until that call is answered and the container has exited.
//! Baseline, measured in the same run: `docker run --rm` of the same image
//! printing its version (no mounts, no broker, default hardening).
//!
//! Run: `cargo xtask build-agent && cargo bench -p corral-sandbox --bench cold_start`

use std::process::Command;
use std::time::{Duration, Instant};

use corral_sandbox::{AgentImage, ContainerSpec, Docker, Limits};
use corral_tests::broker::{BrokerOptions, TestBroker};
use corral_tests::repo_root;

const RUNS: usize = 20;

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let binary = corral_tests::agent_binary();
    let image = AgentImage {
        dir: repo_root().join("agent-image"),
        binary,
    };
    let b = TestBroker::start(BrokerOptions {
        socket_owner: Some((10001, 10001)),
        ..BrokerOptions::default()
    });
    std::os::unix::fs::chown(b.workspace("reporter"), Some(10001), Some(10001)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let docker = rt.block_on(Docker::connect()).expect("the Docker engine");
    let tag = rt.block_on(image.build(&docker, |_| {})).unwrap();

    let baseline: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let out = Command::new("docker")
                .args(["run", "--rm", &tag, "--version"])
                .output()
                .expect("the docker CLI");
            assert!(out.status.success());
            t.elapsed()
        })
        .collect();

    let spec = ContainerSpec {
        agent: "reporter".into(),
        image: tag.clone(),
        workspace: b.workspace("reporter"),
        socket_dir: b.endpoint("reporter").dir().to_path_buf(),
        user: "10001:10001".into(),
        limits: Limits::default(),
        command: ["call", "echo", r#"{"message":"cold"}"#]
            .map(String::from)
            .to_vec(),
        extra_mounts: Vec::new(),
    };
    let cold: Vec<Duration> = (0..RUNS)
        .map(|_| {
            rt.block_on(async {
                docker.remove_named(&spec.name()).await;
                let t = Instant::now();
                let id = docker.create(&spec).await.unwrap();
                docker.start("reporter", &id).await.unwrap();
                let exited = docker.wait("reporter", &id).await.unwrap();
                let d = t.elapsed();
                assert_eq!(exited.code, 0, "{exited:?}");
                docker.remove("reporter", &id).await.unwrap();
                d
            })
        })
        .collect();
    let (base, cold) = (p50(baseline), p50(cold));
    println!(
        "docker run --rm (CLI, baseline): p50 {:.0} ms",
        base.as_secs_f64() * 1e3
    );
    println!(
        "cold start to an answered tools/call: p50 {:.0} ms ({:.2}× baseline) [target ≤ 400 ms]",
        cold.as_secs_f64() * 1e3,
        cold.as_secs_f64() / base.as_secs_f64()
    );
}
