//! The per-call cost of the tool runtime: a fresh `Store`, instantiation,
//! one `echo` call and teardown, with pooling and with on-demand
//! allocation measured in the same run.
//!
//! Run: `cargo xtask build-tools && cargo bench -p corral-tools --bench echo_call`
//!
//! Besides Criterion's estimates it prints p50 and p99 over 20,000
//! individually timed calls per configuration, because the targets
//! (p50 ≤ 16 µs, p99 ≤ 30 µs for pooling) are percentiles.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_tools::{
    Allocation, AllowList, CallContext, Caller, LoadedComponent, StaticSecrets, ToolRuntime,
};
use criterion::{Criterion, criterion_group};

fn echo_bytes() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/echo.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo xtask build-tools` first",
            path.display()
        )
    })
}

fn setup(allocation: Allocation) -> (ToolRuntime, LoadedComponent, CallContext) {
    let rt = ToolRuntime::builder()
        .allocation(allocation)
        .build()
        .expect("runtime");
    let echo = rt.load(&echo_bytes()).expect("echo loads");
    let ctx = CallContext {
        caller: Caller {
            agent: "bench".into(),
            tool: "echo".into(),
        },
        workspace: None,
        gate: Arc::new(AllowList::new()),
        secrets: Arc::new(StaticSecrets::new()),
        limits: None,
    };
    (rt, echo, ctx)
}

const INPUT: &str = r#"{"message":"hello"}"#;

fn configs() -> [(&'static str, Allocation); 2] {
    [
        ("pooling", Allocation::Pooling { max_instances: 64 }),
        ("on-demand", Allocation::OnDemand),
    ]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo_call");
    for (name, allocation) in configs() {
        let (rt, echo, ctx) = setup(allocation);
        group.bench_function(name, |b| {
            b.iter(|| rt.call(&echo, "echo", INPUT, &ctx).expect("call"))
        });
    }
    group.finish();
}

fn percentiles() {
    const N: usize = 20_000;
    let mut p50s = Vec::new();
    for (name, allocation) in configs() {
        let (rt, echo, ctx) = setup(allocation);
        for _ in 0..2_000 {
            rt.call(&echo, "echo", INPUT, &ctx).expect("warm-up");
        }
        let mut samples: Vec<Duration> = (0..N)
            .map(|_| {
                let t = Instant::now();
                rt.call(&echo, "echo", INPUT, &ctx).expect("call");
                t.elapsed()
            })
            .collect();
        if let Some(dir) = std::env::var_os("CORRAL_BENCH_DUMP") {
            let lines: Vec<String> = samples.iter().map(|d| d.as_nanos().to_string()).collect();
            let _ = std::fs::write(
                PathBuf::from(dir).join(format!("{name}.txt")),
                lines.join("\n"),
            );
        }
        samples.sort_unstable();
        let p = |q: f64| samples[((N as f64 * q) as usize).min(N - 1)];
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "echo_call/{name:<10} p50 {:>7.2} µs   p90 {:>7.2} µs   p99 {:>7.2} µs   p99.9 {:>7.2} µs   ({N} calls)",
            us(p(0.50)),
            us(p(0.90)),
            us(p(0.99)),
            us(p(0.999)),
        );
        p50s.push(p(0.50));
    }
    println!(
        "echo_call: on-demand p50 / pooling p50 = {:.2}x",
        p50s[1].as_secs_f64() / p50s[0].as_secs_f64()
    );
}

criterion_group!(benches, bench);

fn main() {
    // Under `--profile-time` only the selected Criterion benchmark should
    // run, so a profiler sees one configuration.
    if !std::env::args().any(|a| a == "--profile-time") {
        percentiles();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
