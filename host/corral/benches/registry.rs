//! Tools from a registry against tools from files, in one run:
//!
//! - pull, verify and compile of the `files` tool with an empty tool store
//!   and artifact cache, against the same with both warm (the registry is
//!   not asked; the store's copy is re-hashed, its signature re-verified
//!   and the compiled artifact read from the cache);
//! - `corral up` start time (spawn to `ready`, agents external) with ten
//!   signed registry tools, store warm, against the same ten as local
//!   files.
//!
//! Run: `cargo xtask build-tools && cargo xtask build-agent && cargo bench -p corral --bench registry`
//! (needs Debian's docker-registry, which `cargo xtask setup` installs).
//! The ten tools are `echo` built ten times with `CORRAL_ECHO_NAME`, so
//! their names differ.
#![allow(missing_docs, reason = "a benchmark binary")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use corral_distribution::signature::{Payload, PrivateKey};
use corral_distribution::{
    Publishers, RegistryClient, RegistryOptions, SignatureEntry, ToolReference, ToolStore,
    TrustRule, layout,
};
use corral_tests::registry::Registry;
use corral_tests::up::{UpConfig, UpHost, UpOptions};
use corral_tests::{component_bytes, repo_root, target_dir};
use corral_tools::ToolRuntime;

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");
const ROUNDS: usize = 7;

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Pushes `wasm` as `tools/NAME:1`, signed by `key`; the pinned reference.
fn publish(registry: &Registry, name: &str, wasm: &[u8], key: &PrivateKey) -> ToolReference {
    let r = ToolReference::parse(&format!("{}/tools/{name}:1", registry.addr)).expect("reference");
    let artifact = layout::artifact(wasm, &format!("{name}.wasm"), &[], &[]);
    let client = RegistryClient::new(&r, RegistryOptions::default()).expect("client");
    let digest = block(client.push(&r, &artifact, wasm)).expect("push");
    let pinned = r.pinned(&digest);
    let payload = Payload::new(&r.repository_name(), &digest).to_bytes();
    let entry = SignatureEntry {
        signature: key.sign(&payload),
        payload,
    };
    block(client.push_signature(&pinned, &digest, &entry)).expect("sign");
    pinned
}

/// `echo` built as `echoN` for N in 0..10, into `dir`.
fn ten_echoes(dir: &Path) -> Vec<(String, PathBuf)> {
    let guest = target_dir().join("bench-guest");
    (0..10)
        .map(|n| {
            let name = format!("echo{n}");
            let status = Command::new("cargo")
                .current_dir(repo_root().join("examples/tools"))
                .args([
                    "build",
                    "--release",
                    "--locked",
                    "-q",
                    "-p",
                    "echo",
                    "--target",
                    "wasm32-wasip2",
                    "--target-dir",
                ])
                .arg(&guest)
                .env("CORRAL_ECHO_NAME", &name)
                .status()
                .expect("cargo");
            assert!(status.success(), "building {name}");
            let path = dir.join(format!("{name}.wasm"));
            std::fs::copy(guest.join("wasm32-wasip2/release/echo.wasm"), &path).expect("copy");
            (name, path)
        })
        .collect()
}

fn pull_and_compile(
    store_dir: &Path,
    cache_dir: &Path,
    r: &ToolReference,
    publishers: &Publishers,
) -> Duration {
    let start = Instant::now();
    let store = ToolStore::open(store_dir).expect("store");
    let rt = ToolRuntime::builder()
        .cache_dir(cache_dir)
        .build()
        .expect("runtime");
    let rule = TrustRule {
        publishers,
        allow_unsigned: false,
    };
    let check = |_: &[u8]| Ok(());
    let fetched = block(corral_distribution::fetch(
        &store,
        &RegistryOptions::default(),
        r,
        rule,
        &check,
    ))
    .expect("fetch");
    rt.load(&fetched.wasm).expect("load");
    start.elapsed()
}

fn up_start(config: &UpConfig) -> Duration {
    let start = Instant::now();
    let host = UpHost::start(CORRAL.as_ref(), config, &["--external-agents"]);
    let took = start.elapsed();
    host.stop();
    took
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let registry = Registry::start();
    let key = PrivateKey::generate();
    let mut publishers = Publishers::none();
    publishers.add("acme", key.public());
    let keys = tempfile::tempdir().expect("tempdir");
    let pub_path = keys.path().join("acme.pub");
    std::fs::write(&pub_path, key.public().to_pem().expect("pem")).expect("write");

    // Pull, verify and compile: empty against warm.
    let files = publish(&registry, "files", &component_bytes("files"), &key);
    let warm = tempfile::tempdir().expect("tempdir");
    pull_and_compile(
        &warm.path().join("store"),
        &warm.path().join("cache"),
        &files,
        &publishers,
    );
    let (mut cold_t, mut warm_t) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let empty = tempfile::tempdir().expect("tempdir");
        cold_t.push(pull_and_compile(
            &empty.path().join("store"),
            &empty.path().join("cache"),
            &files,
            &publishers,
        ));
        warm_t.push(pull_and_compile(
            &warm.path().join("store"),
            &warm.path().join("cache"),
            &files,
            &publishers,
        ));
    }
    let (cold, warm_m) = (median(cold_t), median(warm_t));
    println!(
        "files: pull+verify+compile, empty store  {:>9.2} ms",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "files: the same, warm store and cache    {:>9.2} ms   (warm/empty {:.3})",
        warm_m.as_secs_f64() * 1e3,
        warm_m.as_secs_f64() / cold.as_secs_f64()
    );

    // corral up with ten registry tools (warm) against ten files.
    let built = tempfile::tempdir().expect("tempdir");
    let echoes = ten_echoes(built.path());
    let mut from_files = String::new();
    let mut from_registry = format!("[trust.publishers]\nacme = \"{}\"\n", pub_path.display());
    for (name, path) in &echoes {
        from_files.push_str(&format!("[[tools]]\npath = \"{}\"\n", path.display()));
        let wasm = std::fs::read(path).expect("read");
        let r = publish(&registry, name, &wasm, &key);
        from_registry.push_str(&format!("[[tools]]\noci = \"{r}\"\n"));
    }
    let files_config = UpConfig::write(&UpOptions {
        extra_toml: Some(from_files),
        ..UpOptions::default()
    });
    let registry_config = UpConfig::write(&UpOptions {
        extra_toml: Some(from_registry),
        ..UpOptions::default()
    });
    // Warm both: the store fills and the artifact cache holds every tool.
    up_start(&files_config);
    up_start(&registry_config);
    let (mut f, mut r) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        f.push(up_start(&files_config));
        r.push(up_start(&registry_config));
    }
    let (f, r) = (median(f), median(r));
    println!(
        "corral up, 13 tools, 10 as local files   {:>9.2} ms",
        f.as_secs_f64() * 1e3
    );
    println!(
        "corral up, 13 tools, 10 from the registry {:>8.2} ms   (registry/files {:.3})",
        r.as_secs_f64() * 1e3,
        r.as_secs_f64() / f.as_secs_f64()
    );
}
