//! The per-call cost of the tool runtime: a fresh `Store`, instantiation,
//! one `echo` call and teardown, with pooling and with on-demand
//! allocation measured in the same run.
//!
//! Run: `cargo xtask build-tools && cargo bench -p corral-tools --bench echo_call`
//!
//! Besides Criterion's estimates it prints p50 and p99 over 20,000
//! individually timed calls per configuration, because the targets
//! (p50 ≤ 16 µs, p99 ≤ 30 µs for pooling) are percentiles; and, as a
//! same-run baseline for the tail, the p50/p99 of a fixed memory-bound
//! workload as long as a call: what the machine's own jitter adds to any
//! p99 here.
//! `CORRAL_BENCH_DUMP=DIR` writes every sample, in call order, for
//! checking whether slow calls are periodic (ours) or random (the machine).
#![allow(missing_docs, reason = "criterion_group! generates a public function")]

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

/// A fixed, memory-touching workload, timed like a call: a 16 KiB copy
/// and strided reads over 4 MiB, repeated to last about as long as a call.
/// Its tail is what the machine alone (shared caches, neighbours on a VM
/// host, interrupts) adds to any p99 measured here. A pure-ALU loop is not a
/// fair floor: it misses memory-subsystem jitter, which a call (instantiate,
/// run, reset pages) feels fully.
fn noise_floor(target: Duration, n: usize) -> (Duration, Duration) {
    let src = vec![1u8; 16 << 10];
    let mut dst = vec![0u8; 16 << 10];
    let big = vec![3u8; 4 << 20];
    let mut k = 0usize;
    let mut work = |reps: usize| {
        for _ in 0..reps {
            dst.copy_from_slice(&src);
            let mut acc = 0u64;
            let mut i = (k * 4099) % big.len();
            for _ in 0..32 {
                acc = acc.wrapping_add(u64::from(big[i]));
                i = (i + 4159) % big.len();
            }
            k += 1;
            std::hint::black_box((&dst, acc));
        }
    };
    // Calibrate on the median of repeated timings, not one: a single
    // sample can land in a slow or fast moment.
    let mut reps = 1usize;
    loop {
        let mut t: Vec<Duration> = (0..51)
            .map(|_| {
                let s = Instant::now();
                work(reps);
                s.elapsed()
            })
            .collect();
        t.sort_unstable();
        if t[25] >= target || reps > 1 << 16 {
            break;
        }
        reps += reps.div_ceil(4);
    }
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let s = Instant::now();
            work(reps);
            s.elapsed()
        })
        .collect();
    samples.sort_unstable();
    (samples[n / 2], samples[n * 99 / 100])
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
    let (p50, p99) = noise_floor(p50s[0], N);
    println!(
        "noise floor (fixed memory-bound work ≈ pooling p50): p50 {:.2} µs   p99 {:.2} µs   (p99/p50 = {:.2})",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        p99.as_secs_f64() / p50.as_secs_f64()
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
