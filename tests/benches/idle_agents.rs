//! What an idle connected agent costs the broker: N agents served and
//! connected (MCP initialized, then silent, as an agent waiting for its
//! next message is), against the same broker with one, in the same run:
//! the process's resident memory and threads per idle agent, and the
//! round trip of one active agent's echo among them.
//!
//! The clients live in the same process (a socket and an 8 KiB buffer
//! each, no thread), so the per-agent figures include them; the broker's
//! own share is a little less.
//!
//! Run: `cargo xtask build-tools && cargo bench -p corral-tests --bench idle_agents`
//! (`CORRAL_BENCH_AGENTS=100,1000` sets the counts; `CORRAL_BENCH_KEEP_THP=1`
//! leaves transparent huge pages on, which `corral` turns off, to compare.)

use std::time::{Duration, Instant};

use corral_audit::Durability;
use corral_broker::BrokerLimits;
use corral_tests::broker::{BrokerOptions, TestBroker};
use corral_tests::load::LoadClient;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `VmRSS` and `Threads` of this process, from `/proc/self/status`.
fn rss_and_threads() -> (f64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:") as f64 / 1024.0, field("Threads:"))
}

fn echo_p50(client: &mut LoadClient) -> (f64, f64) {
    for _ in 0..500 {
        client.echo();
    }
    let mut samples: Vec<Duration> = (0..5_000)
        .map(|_| {
            let t = Instant::now();
            client.echo();
            t.elapsed()
        })
        .collect();
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    (at(0.5).as_secs_f64() * 1e6, at(0.99).as_secs_f64() * 1e6)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    corral_tests::huge_pages_as_corral_sets_them();
    let counts: Vec<usize> = std::env::var("CORRAL_BENCH_AGENTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000]);
    // Each idle agent is an agent the policies know, so that its one call
    // below is allowed and runs.
    let most = counts.iter().copied().max().unwrap_or(0);
    let idle_agents = (0..most)
        .map(|i| {
            serde_json::json!({
                "uid": {"type": "Agent", "id": format!("idle-{i}")},
                "attrs": {"workspace": {"__entity": {"type": "Workspace", "id": "assistant"}}},
                "parents": [{"type": "Team", "id": "assistants"}],
            })
        })
        .collect();
    let broker = TestBroker::start(BrokerOptions {
        extra_entities: idle_agents,
        durability: Durability::Batched {
            window: Duration::from_millis(10),
        },
        agents: vec!["assistant"],
        limits: BrokerLimits {
            rate_per_second: 1e9,
            rate_burst: 1e9,
            ..BrokerLimits::default()
        },
        ..BrokerOptions::default()
    });
    let mut active = LoadClient::ready(&broker.socket("assistant"));
    let (alone_p50, alone_p99) = echo_p50(&mut active);
    println!("one active agent alone:  echo p50 {alone_p50:.1} µs, p99 {alone_p99:.1} µs");
    let (rss_at_start, _) = rss_and_threads();
    let mut served = Vec::new();
    let mut idle = Vec::new();
    for n in counts {
        let (rss_before, threads_before) = rss_and_threads();
        let before = idle.len();
        while idle.len() < n {
            let id = format!("idle-{}", idle.len());
            let endpoint = broker.serve_more(&id).expect("serve another agent");
            idle.push(LoadClient::ready(endpoint.socket()));
            served.push(endpoint);
        }
        // Let every reader settle into its wait.
        std::thread::sleep(Duration::from_secs(1));
        let (rss_after, threads_after) = rss_and_threads();
        let (p50, p99) = echo_p50(&mut active);
        let added = (idle.len() - before).max(1) as f64;
        let threads = threads_after.saturating_sub(threads_before);
        println!(
            "{:>5} idle agents: RSS +{:.1} MiB for the {} added ({:.3} MiB per agent [≤ 0.5]), threads +{threads} ({:.2} per agent); the active agent's echo p50 {p50:.1} µs ({:.2}× alone), p99 {p99:.1} µs ({:.2}× alone)",
            idle.len(),
            rss_after - rss_before,
            idle.len() - before,
            (rss_after - rss_before) / added,
            threads as f64 / added,
            p50 / alone_p50,
            p99 / alone_p99,
        );
    }
    // Agents that called a tool once and then went quiet, as an agent
    // between two steps of its work is: each connection may keep an
    // instance made ahead for its next call, which costs memory and may
    // leave none for the agent that is active.
    let (rss_before, threads_before) = rss_and_threads();
    for client in &mut idle {
        client.echo();
    }
    std::thread::sleep(Duration::from_secs(1));
    let (rss_after, threads_after) = rss_and_threads();
    let (p50, p99) = echo_p50(&mut active);
    println!(
        "{:>5} idle agents after one call each: RSS +{:.1} MiB ({:.3} MiB per agent; {:.3} in all [≤ 0.5]), threads +{}; the active agent's echo p50 {p50:.1} µs ({:.2}× alone), p99 {p99:.1} µs ({:.2}× alone)",
        idle.len(),
        rss_after - rss_before,
        (rss_after - rss_before) / idle.len() as f64,
        (rss_after - rss_at_start) / idle.len() as f64,
        threads_after.saturating_sub(threads_before),
        p50 / alone_p50,
        p99 / alone_p99,
    );
    // One of them becomes active again: the latest to connect, whose
    // instance made ahead would be the last to fit in the runtime's budget.
    let last = idle.last_mut().expect("at least one idle agent");
    let (woken_p50, woken_p99) = echo_p50(last);
    println!(
        "  one of them active again: echo p50 {woken_p50:.1} µs ({:.2}× the agent active throughout, {p50:.1} µs), p99 {woken_p99:.1} µs",
        woken_p50 / p50
    );
    // Still connected and answering at the end.
    let answer = last.ping();
    assert!(answer.contains("\"result\""), "{answer}");
}
