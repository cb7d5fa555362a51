//! Helpers shared by Corral's integration tests: where the example
//! components are, and a loopback HTTP server that records what reached it.
#![allow(
    missing_docs,
    reason = "test helpers, documented where their use is not obvious; not a library anyone builds on"
)]

pub mod broker;
pub mod browser;
pub mod load;
pub mod mcp;
pub mod registry;
pub mod standins;
pub mod up;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The workspace root.
/// Internal ranges opened for tests: `127.0.0.1`, `127.0.0.2` and
/// `127.0.0.3` may reach loopback, where the tests' own servers listen (three
/// hosts, for tests that tell hosts apart). Any other name that resolves to
/// loopback (`localhost`, say) is still refused, as a host would refuse it.
pub fn loopback_for_tests() -> corral_tools::InternalNetworks {
    corral_tools::InternalNetworks::default().allow(
        LOOPBACK_HOSTS.map(str::to_string),
        vec!["127.0.0.0/8".parse().expect("a range")],
    )
}

/// The loopback addresses [`loopback_for_tests`] opens, each a host of its
/// own to Corral's policies.
pub const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Cargo's target directory, where xtask puts what it builds.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// The static musl `corral-agent` built by `cargo xtask build-agent`;
/// panics with that command when it is missing.
pub fn agent_binary() -> PathBuf {
    let path = target_dir().join("x86_64-unknown-linux-musl/release/corral-agent");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask build-agent`",
        path.display()
    );
    path
}

/// Path of an example component built by `cargo xtask build-tools`.
///
/// Panics with the command to run when it is missing: a test that cannot
/// find its component must fail loudly, never skip.
pub fn component_path(name: &str) -> PathBuf {
    let path = target_dir().join("tools").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "example component {} is missing: run `cargo xtask build-tools` first",
        path.display()
    );
    path
}

pub fn component_bytes(name: &str) -> Vec<u8> {
    let path = component_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One request as the loopback server saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub request_line: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 server on loopback that answers every request with
/// a fixed body, counts TCP connections (so a test can prove that a denied
/// request never connected) and records each request.
pub struct LoopbackServer {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<SeenRequest>>>,
}

impl LoopbackServer {
    /// On `127.0.0.1`.
    pub fn start(body: &'static str) -> Self {
        Self::start_on("127.0.0.1", body)
    }

    /// On `ip`, one of [`LOOPBACK_HOSTS`].
    pub fn start_on(ip: &str, body: &'static str) -> Self {
        let listener = TcpListener::bind((ip, 0)).expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (c, r) = (connections.clone(), requests.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let r = r.clone();
                thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut reader = BufReader::new(match stream.try_clone() {
                        Ok(s) => s,
                        Err(_) => return,
                    });
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        return;
                    }
                    let mut headers = Vec::new();
                    let mut content_length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty()
                        {
                            break;
                        }
                        if let Some((n, v)) = line.trim_end().split_once(':') {
                            let n = n.trim().to_ascii_lowercase();
                            let v = v.trim().to_string();
                            if n == "content-length" {
                                content_length = v.parse().unwrap_or(0);
                            }
                            headers.push((n, v));
                        }
                    }
                    let mut sink = vec![0; content_length];
                    let _ = reader.read_exact(&mut sink);
                    r.lock().expect("lock").push(SeenRequest {
                        request_line: request_line.trim_end().to_string(),
                        headers,
                    });
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-internal: hidden\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes());
                });
            }
        });
        LoopbackServer {
            addr,
            connections,
            requests,
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.requests.lock().expect("lock").clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// For benchmarks: transparent huge pages off, as `corral` turns them off,
/// unless `CORRAL_BENCH_KEEP_THP` is set (to compare); prints which.
pub fn huge_pages_as_corral_sets_them() {
    let keep = std::env::var_os("CORRAL_BENCH_KEEP_THP").is_some();
    if !keep {
        corral_broker::disable_transparent_huge_pages().expect("turn transparent huge pages off");
    }
    println!(
        "transparent huge pages: {}",
        if keep {
            "on, as the system allows (CORRAL_BENCH_KEEP_THP)"
        } else {
            "off for this process, as `corral` sets them"
        }
    );
}
