//! Warm dispatch: a message from a person to an agent whose container is
//! already running, until its reply is back — through the real `corral up`,
//! its terminal channel, the router, the broker socket, the agent loop in
//! its hardened container, an `echo` tool call (`/tool echo …`, so no model
//! is involved), `post_message`, and back. Every step is authorized and
//! recorded (strict durability: each decision is fsynced).
//!
//! Baselines from the same run: the first message (which starts the
//! container), the same `echo` call made straight over the agent's broker
//! socket from the host (the broker's own floor), and `docker run --rm` of
//! the same image.
//!
//! Run: `cargo xtask build-tools && cargo xtask build-agent && cargo bench -p corral --bench dispatch`
//! (needs the Docker engine; run as root so the socket can be handed to the
//! container user).

use std::process::Command;
use std::time::{Duration, Instant};

use corral_channels::terminal::ChatClient;
use corral_tests::up::{UpConfig, UpHost, UpOptions};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");
const ROUNDS: usize = 300;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "{name:<44} n={:<4} p50 {:>9.3} ms   p99 {:>9.3} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    (p50, p99)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    // The default rate limit (50 calls/s per agent) would throttle a
    // benchmark; the limits are not what is measured.
    let config = UpConfig::write(&UpOptions {
        broker: Some("rate_per_second = 100000.0\nrate_burst = 100000.0"),
        ..UpOptions::default()
    });
    let host = UpHost::start(CORRAL.as_ref(), &config, &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ask = r#"/tool echo {"message": "ping"}"#;
    let (first, warm) = rt.block_on(async {
        let mut chat = ChatClient::connect(&config.control())
            .await
            .expect("control socket");
        let started = Instant::now();
        let reply = chat
            .ask("assistant", ask, |_| {})
            .await
            .expect("io")
            .expect("allowed");
        let first = started.elapsed();
        assert!(reply.contains("ping"), "{reply}");
        for _ in 0..20 {
            chat.ask("assistant", ask, |_| {})
                .await
                .expect("io")
                .expect("allowed");
        }
        let mut warm = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let t = Instant::now();
            chat.ask("assistant", ask, |_| {})
                .await
                .expect("io")
                .expect("allowed");
            warm.push(t.elapsed());
        }
        (first, warm)
    });

    let mut client =
        corral_agent::Client::connect(&host.socket("assistant")).expect("broker socket");
    let mut direct = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let r = client
            .call_tool("echo", serde_json::json!({"message": "ping"}))
            .expect("echo");
        direct.push(t.elapsed());
        assert!(!r.is_error, "{}", r.text);
    }

    let image = String::from_utf8_lossy(
        &Command::new("docker")
            .args([
                "ps",
                "--filter",
                "label=corral.agent=assistant",
                "--format",
                "{{.Image}}",
            ])
            .output()
            .expect("docker ps")
            .stdout,
    )
    .trim()
    .to_string();
    let mut docker_run = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let ok = Command::new("docker")
            .args(["run", "--rm", "--network", "none", &image, "--version"])
            .output()
            .expect("docker run")
            .status
            .success();
        docker_run.push(t.elapsed());
        assert!(ok, "docker run --rm {image} failed");
    }
    assert_eq!(host.stop(), Some(0));

    println!("\nwarm dispatch through corral up (image {image}):");
    println!(
        "{:<44} {:>9.3} ms",
        "first message (starts the container)",
        first.as_secs_f64() * 1e3
    );
    let (w50, w99) = report("warm dispatch: /tool echo, chat → reply", warm);
    let (d50, _) = report("baseline: echo over the broker socket", direct);
    let (r50, _) = report("baseline: docker run --rm (same image)", docker_run);
    println!(
        "\nwarm p50 = {:.1}× the direct broker call, {:.3}× docker run --rm; target ≤ 5 ms: {}",
        w50.as_secs_f64() / d50.as_secs_f64(),
        w50.as_secs_f64() / r50.as_secs_f64(),
        if w50 <= Duration::from_millis(5) {
            "met"
        } else {
            "NOT met"
        }
    );
    let _ = w99;
}
