//! A Python tool (componentize-py) against the Rust `echo`, in one run:
//! component size, first load (compile), cached load (the artifact cache),
//! and the per-call cost of a fresh instance, each Python figure also as a
//! ratio to Rust's.
//!
//! Run: `cargo xtask build-tools && cargo bench -p corral-tools --bench python_tool`
//!
//! Both components are served by one runtime with the default pooling
//! configuration, so the figures also show that the pool's per-instance
//! limits fit a Python instance. `CORRAL_BENCH_NO_PYTHON=1` measures Rust
//! twice with no Python call between: the baseline for "rust again".
#![allow(missing_docs, reason = "a benchmark binary")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_tools::{AllowList, CallContext, Caller, StaticSecrets, ToolRuntime};

fn component(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/tools")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo xtask build-tools` first",
            path.display()
        )
    })
}

fn ctx(tool: &str) -> CallContext {
    CallContext {
        caller: Caller {
            agent: "bench".into(),
            tool: tool.into(),
        },
        workspace: None,
        gate: Arc::new(AllowList::new()),
        secrets: Arc::new(StaticSecrets::new()),
        limits: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Figures {
    size: usize,
    compile: Duration,
    cached: Duration,
    p50: Duration,
    p99: Duration,
}

fn measure(
    rt: &ToolRuntime,
    cached_rt: &ToolRuntime,
    name: &str,
    tool: &str,
    calls: usize,
) -> Figures {
    let bytes = component(name);
    let start = Instant::now();
    let loaded = rt.load(&bytes).expect("loads");
    let compile = start.elapsed();
    // The first load through the cache compiles and writes; the second reads.
    cached_rt.load(&bytes).expect("loads");
    let start = Instant::now();
    cached_rt.load(&bytes).expect("loads from the cache");
    let cached = start.elapsed();
    let c = ctx(tool);
    let input = r#"{"message":"hello"}"#;
    for _ in 0..calls / 10 {
        rt.call(&loaded, tool, input, &c).expect("call");
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        rt.call(&loaded, tool, input, &c).expect("call");
        samples.push(t.elapsed());
    }
    samples.sort();
    Figures {
        size: bytes.len(),
        compile,
        cached,
        p50: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = ToolRuntime::builder().build().expect("runtime");
    let cache = tempfile::tempdir().expect("tempdir");
    let cached_rt = ToolRuntime::builder()
        .cache_dir(cache.path())
        .build()
        .expect("runtime");
    let rust = measure(&rt, &cached_rt, "echo", "echo", 5_000);
    let python = if std::env::var_os("CORRAL_BENCH_NO_PYTHON").is_some() {
        measure(&rt, &cached_rt, "echo", "echo", 5_000)
    } else {
        measure(&rt, &cached_rt, "py-echo", "py_echo", 2_000)
    };
    // Rust again after Python: a Python instance in the pool must not slow it.
    let rust_after = measure(&rt, &cached_rt, "echo", "echo", 5_000);
    let ratio = |p: Duration, r: Duration| p.as_secs_f64() / r.as_secs_f64();
    println!(
        "{:<22} {:>14} {:>14} {:>14} {:>8}",
        "", "rust echo", "python echo", "rust again", "py/rust"
    );
    println!(
        "{:<22} {:>14} {:>14} {:>14} {:>8.1}",
        "component bytes",
        rust.size,
        python.size,
        rust_after.size,
        python.size as f64 / rust.size as f64
    );
    for (label, r, p, r2) in [
        (
            "first load (compile)",
            rust.compile,
            python.compile,
            rust_after.compile,
        ),
        ("cached load", rust.cached, python.cached, rust_after.cached),
        ("call p50", rust.p50, python.p50, rust_after.p50),
        ("call p99", rust.p99, python.p99, rust_after.p99),
    ] {
        println!(
            "{label:<22} {:>14.3?} {:>14.3?} {:>14.3?} {:>8.1}",
            r,
            p,
            r2,
            ratio(p, r)
        );
    }
    println!(
        "rust call p50 after python / before: {:.2}",
        ratio(rust_after.p50, rust.p50)
    );
}
