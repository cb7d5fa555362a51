//! The broker's cost over its real Unix socket, with the echo tool and the
//! audit log on, next to same-run baselines that make its own overhead
//! visible:
//!
//! - a bare fsync on the disk that holds the audit log, of a write that
//!   grows the file and of one into room already in it (as the spool
//!   writes), at the start and again in blocks between strict mode's round
//!   trips (what strict p50 is compared with: the second, the spool's own
//!   write without the broker);
//! - a bare echo over the same socket and framing, without policy or audit;
//! - the full broker with the log in `batched` and in `strict` mode:
//!   sequential round-trip p50/p99, and calls/s with 8 agents calling at
//!   once;
//! - audit appends/s under group commit, in both modes;
//! - a denial: Cedar's response alone against the same denial explained
//!   down to its condition, and denied calls over the socket against the
//!   allowed echo (`files_write` outside notes/ and `http_get` by an agent
//!   no permit covers, alternately);
//! - the allowed echo through the stdio bridge (`corral-agent mcp`, whose
//!   relay `corral mcp bridge` shares), alternated with the direct socket;
//! - the allowed echo again with the host's metrics counting every record
//!   and a dashboard page streaming every decision over a real `/events`
//!   connection, alternated with the same broker's echo without them: what
//!   an open dashboard costs the call path.
//!
//! Run: `cargo xtask build-tools && cargo bench -p corral-tests --bench broker`
//! (`CORRAL_BENCH_QUICK=1` runs a tenth of the iterations;
//! `CORRAL_BENCH_ONLY=batched` or `=strict` runs the baselines and that
//! mode only, for profiling one of them.)

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_audit::{AuditConfig, AuditLog, Durability, Entry, Kind};
use corral_broker::{BrokerLimits, InlineAnswer, InlineCalls, serve_with_limits};
use corral_tests::broker::{BrokerOptions, TestBroker};
use corral_tests::component_path;
use corral_tests::load::LoadClient;
use corral_tests::mcp::McpClient;
use corral_tools::{
    AllowList, CallContext, Caller, LoadedComponent, Spare, StaticSecrets, ToolRuntime,
};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ServerCapabilities,
    ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};

/// The `corral` binary's allocator, so the broker here allocates as it
/// does in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AGENTS: usize = 8;

fn scale(n: usize) -> usize {
    if std::env::var_os("CORRAL_BENCH_QUICK").is_some() {
        n / 10
    } else {
        n
    }
}

fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

struct Latency {
    p50: Duration,
    p99: Duration,
}

fn latency(mut samples: Vec<Duration>) -> Latency {
    Latency {
        p50: pct(&mut samples, 0.50),
        p99: pct(&mut samples, 0.99),
    }
}

fn bare_fsync(dir: &Path, room: bool) -> Latency {
    let mut f = FsyncProbe::create(dir, room);
    latency((0..scale(2_000)).map(|_| f.once()).collect())
}

/// Writes 256 bytes after the last and fdatasyncs them: either growing
/// the file, as a plain append-only log does, or into room already in
/// it, as the audit spool does (`corral_audit`'s `spool::ROOM`), which
/// spares the sync an inode update. The second is the spool's own cost,
/// bare; the first is what it would be without the room.
struct FsyncProbe {
    file: std::fs::File,
    at: u64,
}

impl FsyncProbe {
    fn create(dir: &Path, room: bool) -> FsyncProbe {
        let name = if room { "fsync-room" } else { "fsync-append" };
        let file = std::fs::File::create(dir.join(name)).unwrap();
        if room {
            file.set_len(64 << 20).unwrap();
            file.sync_all().unwrap();
        }
        FsyncProbe { file, at: 0 }
    }

    fn once(&mut self) -> Duration {
        use std::os::unix::fs::FileExt;
        let t = Instant::now();
        self.file.write_all_at(&[7u8; 256], self.at).unwrap();
        self.file.sync_data().unwrap();
        self.at += 256;
        t.elapsed()
    }
}

/// A call with no workspace, no grants and no policy.
fn bare_context() -> CallContext {
    CallContext {
        caller: Caller {
            agent: "bench".into(),
            tool: "echo".into(),
        },
        workspace: None,
        gate: Arc::new(AllowList::new()),
        secrets: Arc::new(StaticSecrets::new()),
        limits: None,
    }
}

/// Echo through the same runtime and framing, with nothing in between:
/// like the broker, it makes each call's instance before the call arrives.
#[derive(Clone)]
struct BareEcho {
    runtime: Arc<ToolRuntime>,
    echo: Arc<LoadedComponent>,
    spare: Arc<Mutex<Spare>>,
}

impl ServerHandler for BareEcho {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        Ok(tokio::task::block_in_place(|| self.echo_now(request)).into())
    }
}

impl BareEcho {
    fn echo_now(&self, request: CallToolRequestParams) -> CallToolResult {
        let input = Value::Object(request.arguments.unwrap_or_default()).to_string();
        let mut spare = self.spare.lock().unwrap();
        match self
            .runtime
            .call_with(&mut spare, &self.echo, "echo", &input, &bare_context())
        {
            Ok(out) => {
                let mut result =
                    CallToolResult::success(vec![ContentBlock::text(out.output.clone())]);
                result.structured_content = serde_json::from_str(&out.output).ok();
                result
            }
            Err(e) => CallToolResult::error(vec![ContentBlock::text(e.error.to_string())]),
        }
    }
}

/// The broker's hot path, without policy or audit: answered on the
/// connection's reader thread, as the broker answers a plain `tools/call`.
impl InlineCalls for BareEcho {
    fn call_tool_inline(&self, request: CallToolRequestParams) -> InlineAnswer {
        InlineAnswer::Now(self.echo_now(request))
    }

    fn idle(&self) {
        self.runtime
            .refill(&mut self.spare.lock().unwrap(), &self.echo);
    }
}

fn bare_server(dir: &Path) -> (tokio::runtime::Runtime, std::path::PathBuf) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (runtime, echo) = echo_runtime();
    let (runtime, echo) = (Arc::new(runtime), Arc::new(echo));
    let socket = dir.join("bare.sock");
    let listener = {
        let _e = rt.enter();
        tokio::net::UnixListener::bind(&socket).unwrap()
    };
    let handler = BareEcho {
        runtime,
        echo,
        spare: Default::default(),
    };
    rt.spawn(async move {
        let limits = BrokerLimits::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (h, limits) = (handler.clone(), limits.clone());
            tokio::spawn(async move { serve_with_limits(stream, &limits, h).await });
        }
    });
    (rt, socket)
}

/// Two threads bouncing one line over a Unix socket: the floor any
/// request/response over a socket pays on this machine (two thread
/// wake-ups), before any protocol.
fn socket_floor(dir: &Path) -> Latency {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::{UnixListener, UnixStream};
    let path = dir.join("floor.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut line = String::new();
        while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if w.write_all(line.as_bytes()).is_err() {
                break;
            }
            line.clear();
        }
    });
    let s = UnixStream::connect(&path).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    let frame = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n";
    let mut once = || {
        let t = Instant::now();
        w.write_all(frame).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        t.elapsed()
    };
    for _ in 0..scale(3_000) {
        once();
    }
    latency((0..scale(20_000)).map(|_| once()).collect())
}

/// A runtime with the echo component loaded, as the broker's.
fn echo_runtime() -> (ToolRuntime, LoadedComponent) {
    let runtime = ToolRuntime::builder().build().unwrap();
    let echo = runtime
        .load(&std::fs::read(component_path("echo")).unwrap())
        .unwrap();
    (runtime, echo)
}

/// The tool call alone, in this process, with no socket.
fn direct_echo() -> Latency {
    let (runtime, echo) = echo_runtime();
    let ctx = bare_context();
    let input = r#"{"message":"hello"}"#;
    for _ in 0..scale(3_000) {
        runtime.call(&echo, "echo", input, &ctx).unwrap();
    }
    let samples = (0..scale(20_000))
        .map(|_| {
            let t = Instant::now();
            runtime.call(&echo, "echo", input, &ctx).unwrap();
            t.elapsed()
        })
        .collect();
    latency(samples)
}

/// The tool call alone, in an instance made before the call (as the
/// broker does while a connection is idle): what is left on a call's path.
fn ready_echo() -> Latency {
    let (runtime, echo) = echo_runtime();
    let ctx = bare_context();
    let input = r#"{"message":"hello"}"#;
    let mut spare = Spare::default();
    let mut once = || {
        runtime.refill(&mut spare, &echo);
        assert!(spare.is_ready());
        let t = Instant::now();
        runtime
            .call_with(&mut spare, &echo, "echo", input, &ctx)
            .unwrap();
        t.elapsed()
    };
    for _ in 0..scale(3_000) {
        once();
    }
    latency((0..scale(20_000)).map(|_| once()).collect())
}

fn ping(socket: &Path) -> Latency {
    let mut c = McpClient::ready(socket);
    for _ in 0..scale(3_000) {
        c.request("ping", json!({}));
    }
    let samples = (0..scale(20_000))
        .map(|_| {
            let t = Instant::now();
            c.request("ping", json!({}));
            t.elapsed()
        })
        .collect();
    latency(samples)
}

/// Sequential denied calls: `files_write` outside notes/ (a permit in scope
/// whose condition is false) and `http_get` by a batch agent (no permit in
/// scope, so every permit of the action is looked at), alternately.
fn sequential_denied(socket: &Path) -> Latency {
    let mut c = LoadClient::ready(socket);
    let calls = [
        r#"{"name":"files_write","arguments":{"path":"docs/a.md","content":"x"}}"#,
        r#"{"name":"http_get","arguments":{"url":"https://api.github.com/"}}"#,
    ];
    for n in 0..scale(2_000) {
        c.call(calls[n % 2], true);
    }
    let samples = (0..scale(10_000))
        .map(|n| {
            let t = Instant::now();
            c.call(calls[n % 2], true);
            t.elapsed()
        })
        .collect();
    latency(samples)
}

fn sequential(socket: &Path) -> Latency {
    sequential_with(LoadClient::ready(socket))
}

fn sequential_with(mut c: LoadClient) -> Latency {
    for _ in 0..scale(3_000) {
        c.echo();
    }
    let samples = (0..scale(20_000))
        .map(|_| {
            let t = Instant::now();
            c.echo();
            t.elapsed()
        })
        .collect();
    latency(samples)
}

/// Sequential round trips, and bare fsyncs on the same disk in blocks
/// between them: this disk's fsync drifts by tens of microseconds from one
/// second to the next, so strict mode's p50 is compared with fsyncs made
/// during the same seconds rather than with one measured earlier. Blocks,
/// not single fsyncs between calls, so that the client still calls in a
/// loop as `sequential` does.
fn sequential_beside_fsync(socket: &Path, dir: &Path) -> (Latency, Latency, Latency) {
    let mut c = LoadClient::ready(socket);
    let mut appending = FsyncProbe::create(dir, false);
    let mut in_room = FsyncProbe::create(dir, true);
    for _ in 0..scale(3_000) {
        c.echo();
    }
    let (mut calls, mut appends, mut rooms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..20 {
        calls.extend((0..scale(1_000)).map(|_| {
            let t = Instant::now();
            c.echo();
            t.elapsed()
        }));
        appends.extend((0..scale(250)).map(|_| appending.once()));
        rooms.extend((0..scale(250)).map(|_| in_room.once()));
    }
    (latency(calls), latency(appends), latency(rooms))
}

/// Calls per second with one closed-loop client per socket.
fn throughput(sockets: &[std::path::PathBuf], seconds: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = sockets
        .iter()
        .map(|s| {
            let (s, stop, count) = (s.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || {
                let mut c = LoadClient::ready(&s);
                while !stop.load(Ordering::Relaxed) {
                    c.echo();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let start_count = count.load(Ordering::Relaxed);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let n = count.load(Ordering::Relaxed) - start_count;
    let rate = n as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    rate
}

fn bench_agents() -> (Vec<&'static str>, Vec<Value>) {
    let names: Vec<&'static str> = (0..AGENTS)
        .map(|i| &*Box::leak(format!("agent-{i}").into_boxed_str()))
        .collect();
    let mut entities = Vec::new();
    for n in &names {
        entities.push(json!({"uid": {"type": "Agent", "id": n}, "attrs": {"workspace": {"__entity": {"type": "Workspace", "id": n}}}, "parents": [{"type": "Team", "id": "batch"}]}));
        entities.push(json!({"uid": {"type": "Workspace", "id": n}, "attrs": {}, "parents": []}));
    }
    (names, entities)
}

fn broker(durability: Durability) -> TestBroker {
    broker_observed(durability, None)
}

fn broker_observed(
    durability: Durability,
    audit_observer: Option<Arc<dyn corral_audit::RecordObserver>>,
) -> TestBroker {
    let (agents, extra_entities) = bench_agents();
    TestBroker::start(BrokerOptions {
        durability,
        agents,
        extra_entities,
        limits: BrokerLimits {
            rate_per_second: 1e9,
            rate_burst: 1e9,
            ..BrokerLimits::default()
        },
        audit_observer,
        ..BrokerOptions::default()
    })
}

/// A broker whose records feed the host's metrics, a dashboard endpoint
/// over its log, and one page streaming `/events`, read as fast as they
/// come on a thread of its own; `received` counts the events it read.
struct Streaming {
    broker: TestBroker,
    received: Arc<AtomicU64>,
    _web: corral_web::WebServer,
    _rt: tokio::runtime::Runtime,
}

fn dashboard_streaming(durability: Durability) -> Streaming {
    use std::io::Read;
    let metrics = Arc::new(corral_web::Metrics::new());
    let broker = broker_observed(durability, Some(metrics.clone()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let web = rt
        .block_on(corral_web::serve(
            corral_web::WebConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                token: None,
            },
            metrics,
            Some(corral_web::Dashboard {
                audit: broker.audit_path.clone(),
                policies: None,
                live: true,
            }),
        ))
        .unwrap();
    let mut page = std::net::TcpStream::connect(web.addr()).unwrap();
    let addr = web.addr();
    write!(
        page,
        "GET /events HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = page.read(&mut buf) {
            if n == 0 {
                break;
            }
            // Only the events count, not a refusal's or a header's bytes.
            let events = buf[..n]
                .windows(14)
                .filter(|w| w == b"event: records")
                .count();
            counter.fetch_add(events as u64, Ordering::Relaxed);
        }
    });
    // The stream is open once its first keep-alive or event could arrive.
    std::thread::sleep(Duration::from_millis(200));
    Streaming {
        broker,
        received,
        _web: web,
        _rt: rt,
    }
}

/// One appender waiting for each record in turn: what a call's decision
/// record costs on its own.
fn append_latency(dir: &Path, durability: Durability) -> Latency {
    let path = dir.join(format!("latency-{}.db", durability_name(durability)));
    let log = AuditLog::open(AuditConfig::new(&path).durability(durability)).unwrap();
    let entry = |n: usize| {
        let mut e = Entry::new(Kind::Call, "agent-0", "echo", "Tool::\"echo\"");
        e.arguments = json!({"message": "hello", "n": n});
        e.verdict = Some(corral_audit::Verdict::Allow);
        e.policy_ids = vec!["echo-for-all-agents".into()];
        e
    };
    for n in 0..scale(1_000) {
        log.append_blocking(entry(n)).unwrap();
    }
    let samples = (0..scale(10_000))
        .map(|n| {
            let e = entry(n);
            let t = Instant::now();
            log.append_blocking(e).unwrap();
            t.elapsed()
        })
        .collect();
    latency(samples)
}

/// The policy decision for one echo call: as the broker makes it
/// (`decide_tool_call`: the starter policy for echo reads no context, so
/// it is decided once per agent and tool), and through a Cedar request and
/// the indexed authorizer, as every call was decided before.
/// How a decision is measured in [`decision_latency`].
#[derive(Clone, Copy, PartialEq)]
enum DecisionPath {
    /// `decide_tool_call` of an allowed echo, as the broker decides.
    Broker,
    /// The same as a full Cedar request and `authorize`.
    Request,
    /// `decide_tool_call` of a denied `files_write`: the decision and its
    /// explanation, as the broker decides a denial now.
    DeniedExplained,
    /// The same denial as Cedar's response alone, no explanation: what a
    /// denial cost before explanations.
    DeniedCedarOnly,
}

fn decision_latency(b: &TestBroker, path: DecisionPath) -> Latency {
    let echo = json!({"message": "hello"});
    let outside = json!({"path": "docs/a.md", "content": "x"});
    let once = || {
        let t = Instant::now();
        let engine = b.policies.current();
        let common = corral_policy::Common::now("bench-session", 1);
        let allowed = match path {
            DecisionPath::Broker => engine
                .decide_tool_call("agent-0", "echo", &echo, &common)
                .map(|d| d.allowed),
            DecisionPath::Request => engine
                .tool_request("agent-0", "echo", &echo, &common)
                .map(|r| engine.authorize(&r).allowed),
            DecisionPath::DeniedExplained => engine
                .decide_tool_call("agent-0", "files_write", &outside, &common)
                .map(|d| {
                    assert!(!d.findings.is_empty());
                    d.allowed
                }),
            DecisionPath::DeniedCedarOnly => engine
                .tool_request("agent-0", "files_write", &outside, &common)
                // No forbid applies here, so a satisfied policy means allow.
                .map(|r| {
                    engine
                        .authorize_raw(&r)
                        .is_ok_and(|resp| resp.diagnostics().reason().next().is_some())
                }),
        };
        let e = t.elapsed();
        let denied = matches!(
            path,
            DecisionPath::DeniedExplained | DecisionPath::DeniedCedarOnly
        );
        assert_eq!(allowed.ok(), Some(!denied));
        e
    };
    for _ in 0..scale(3_000) {
        once();
    }
    latency((0..scale(20_000)).map(|_| once()).collect())
}

fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::Strict => "strict",
        Durability::Batched { .. } => "batched",
    }
}

fn appends_per_second(dir: &Path, durability: Durability) -> f64 {
    let path = dir.join(format!("appends-{durability:?}.db").replace([' ', '{', '}', ':'], ""));
    let log = AuditLog::open(AuditConfig::new(&path).durability(durability)).unwrap();
    let per_thread = scale(40_000);
    let t = Instant::now();
    let threads: Vec<_> = (0..AGENTS)
        .map(|i| {
            let log = log.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let mut pending = Vec::with_capacity(512);
                for n in 0..per_thread {
                    let mut e =
                        Entry::new(Kind::Call, &format!("agent-{i}"), "echo", "Tool::\"echo\"");
                    e.arguments = json!({"message": "hello", "n": n});
                    e.verdict = Some(corral_audit::Verdict::Allow);
                    e.policy_ids = vec!["echo-for-all-agents".into()];
                    pending.push(log.append(e));
                    if pending.len() == 512 {
                        rt.block_on(async {
                            for t in pending.drain(..) {
                                t.recorded().await.unwrap();
                            }
                        });
                    }
                }
                rt.block_on(async {
                    for t in pending.drain(..) {
                        t.recorded().await.unwrap();
                    }
                });
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    (per_thread * AGENTS) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not, and
    // then this only checks that it builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    corral_tests::huge_pages_as_corral_sets_them();
    let dir = tempfile::tempdir().unwrap();
    let secs = if std::env::var_os("CORRAL_BENCH_QUICK").is_some() {
        1.0
    } else {
        4.0
    };

    for (room, what) in [(false, "growing the file"), (true, "into room     ")] {
        let fsync = bare_fsync(dir.path(), room);
        println!(
            "bare fsync, {what}: p50 {:.1} µs, p99 {:.1} µs (256 B + fdatasync)",
            us(fsync.p50),
            us(fsync.p99)
        );
    }

    let floor = socket_floor(dir.path());
    println!(
        "socket ping-pong, no protocol:   p50 {:.1} µs, p99 {:.1} µs",
        us(floor.p50),
        us(floor.p99)
    );
    let direct = direct_echo();
    println!(
        "echo call, no socket:            p50 {:.1} µs, p99 {:.1} µs",
        us(direct.p50),
        us(direct.p99)
    );
    let ready = ready_echo();
    println!(
        "  in an instance made ahead:     p50 {:.1} µs, p99 {:.1} µs",
        us(ready.p50),
        us(ready.p99)
    );
    let (bare_rt, bare_socket) = bare_server(dir.path());
    let pinged = ping(&bare_socket);
    println!(
        "MCP ping over the socket:        p50 {:.1} µs, p99 {:.1} µs",
        us(pinged.p50),
        us(pinged.p99)
    );
    let bare = sequential(&bare_socket);
    println!(
        "bare echo over the socket:       p50 {:.1} µs, p99 {:.1} µs",
        us(bare.p50),
        us(bare.p99)
    );
    let bare_sockets = vec![bare_socket.clone(); AGENTS];
    let bare_tput = throughput(&bare_sockets, secs);
    println!("bare echo, {AGENTS} clients:            {bare_tput:.0} calls/s");
    drop(bare_rt);

    let only = std::env::var("CORRAL_BENCH_ONLY").ok();
    let mut rows = Vec::new();
    let mut strict_fsync = None;
    for (name, durability) in [
        (
            "batched",
            Durability::Batched {
                window: Duration::from_millis(10),
            },
        ),
        ("strict", Durability::Strict),
    ] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let b = broker(durability);
        if name == "batched" {
            for (path, what) in [
                (DecisionPath::Broker, "policy decision alone:           "),
                (DecisionPath::Request, "  as a Cedar request + authorize:"),
                (
                    DecisionPath::DeniedCedarOnly,
                    "a denial, Cedar's response only:",
                ),
                (
                    DecisionPath::DeniedExplained,
                    "  the same, explained:           ",
                ),
            ] {
                let d = decision_latency(&b, path);
                println!("{what} p50 {:.1} µs, p99 {:.1} µs", us(d.p50), us(d.p99));
            }
            let allowed = sequential(&b.socket("agent-0"));
            let denied = sequential_denied(&b.socket("agent-0"));
            println!(
                "broker, batched, allowed echo:   p50 {:.1} µs, p99 {:.1} µs; denied calls (explained): p50 {:.1} µs ({:.2}× allowed), p99 {:.1} µs",
                us(allowed.p50),
                us(allowed.p99),
                us(denied.p50),
                us(denied.p50) / us(allowed.p50),
                us(denied.p99)
            );
            // Alternated, twice each: the better p50 of each side.
            let streaming = dashboard_streaming(durability);
            let before = streaming.received.load(Ordering::Relaxed);
            let mut plain = Vec::new();
            let mut open = Vec::new();
            for _ in 0..2 {
                plain.push(sequential(&b.socket("agent-0")));
                open.push(sequential(&streaming.broker.socket("agent-0")));
            }
            let streamed = streaming.received.load(Ordering::Relaxed) - before;
            let best = |l: &[Latency]| {
                l.iter()
                    .map(|x| (us(x.p50), us(x.p99)))
                    .fold((f64::MAX, f64::MAX), |a, b| (a.0.min(b.0), a.1.min(b.1)))
            };
            let (plain, open) = (best(&plain), best(&open));
            println!(
                "broker, batched, allowed echo with metrics and a dashboard streaming every decision: p50 {:.1} µs ({:.2}× without, {:.1} µs in the same run), p99 {:.1} µs ({:.1} µs without); the page received {} batches",
                open.0,
                open.0 / plain.0,
                plain.0,
                open.1,
                plain.1,
                streamed
            );
            assert!(streamed > 0, "the dashboard stream received no event");
            // The stdio bridge, alternated with the direct socket, twice
            // each: what the relay adds to a round trip.
            let mut direct = Vec::new();
            let mut bridged = Vec::new();
            for _ in 0..2 {
                direct.push(sequential(&b.socket("agent-0")));
                bridged.push(sequential_with(LoadClient::through_bridge(
                    &b.socket("agent-0"),
                )));
            }
            let (direct, bridged) = (best(&direct), best(&bridged));
            println!(
                "broker, batched, allowed echo through the stdio bridge (corral-agent mcp): p50 {:.1} µs (+{:.1} µs over the direct socket's {:.1} µs in the same run [≤ +30], {:.2}×), p99 {:.1} µs ({:.1} µs direct)",
                bridged.0,
                bridged.0 - direct.0,
                direct.0,
                bridged.0 / direct.0,
                bridged.1,
                direct.1
            );
        }
        let a = append_latency(dir.path(), durability);
        println!(
            "audit record alone, {name:<7}:    p50 {:.1} µs, p99 {:.1} µs",
            us(a.p50),
            us(a.p99)
        );
        let lat = if durability == Durability::Strict {
            let (lat, appending, in_room) =
                sequential_beside_fsync(&b.socket("agent-0"), dir.path());
            for (what, fsync) in [("growing the file", &appending), ("into room", &in_room)] {
                println!(
                    "  between strict calls, bare fsync {what}: p50 {:.1} µs, p99 {:.1} µs",
                    us(fsync.p50),
                    us(fsync.p99)
                );
            }
            strict_fsync = Some((appending, in_room));
            lat
        } else {
            sequential(&b.socket("agent-0"))
        };
        let sockets: Vec<_> = (0..AGENTS)
            .map(|i| b.socket(&format!("agent-{i}")))
            .collect();
        let tput = throughput(&sockets, secs);
        println!(
            "broker, audit {name:<7}          p50 {:.1} µs, p99 {:.1} µs; {AGENTS} agents: {tput:.0} calls/s",
            us(lat.p50),
            us(lat.p99)
        );
        rows.push((name, lat, tput));
        drop(b);
    }
    if only.is_some() {
        return;
    }
    let batched_appends = appends_per_second(
        dir.path(),
        Durability::Batched {
            window: Duration::from_millis(10),
        },
    );
    let strict_appends = appends_per_second(dir.path(), Durability::Strict);
    println!(
        "audit appends, {AGENTS} writers: batched {batched_appends:.0}/s, strict {strict_appends:.0}/s"
    );

    println!("\nsummary (targets in brackets):");
    for (name, lat, tput) in &rows {
        let over = us(lat.p50) - us(bare.p50);
        println!(
            "  {name:<7} p50 {:.1} µs = bare echo + {over:.1} µs ({:.2}×); p99 {:.1} µs ({:.2}× bare); {tput:.0} calls/s = {:.2}× bare",
            us(lat.p50),
            us(lat.p50) / us(bare.p50),
            us(lat.p99),
            us(lat.p99) / us(bare.p99),
            tput / bare_tput,
        );
    }
    println!(
        "  floor: two threads bouncing a line over a Unix socket take p50 {:.1} µs here, before any protocol or work",
        us(floor.p50)
    );
    let strict = &rows[1];
    let (appending, fsync) = strict_fsync.expect("the strict row measures its own fsync");
    // Against the spool's own write, bare: the stricter of the two.
    println!(
        "  batched: p50 ≤ 50 µs, p99 ≤ 200 µs, ≥ 15,000 calls/s; strict: p50 − bare fsync into room between its calls = {:.1} µs [≤ 50] (− one growing the file: {:.1} µs), ≥ 5,000 calls/s; appends ≥ 50,000/s",
        us(strict.1.p50) - us(fsync.p50),
        us(strict.1.p50) - us(appending.p50)
    );
    // The socket, MCP and the Wasm call cost what the bare echo costs with
    // or without a broker: what is left is policy, audit and session.
    println!(
        "  the broker's own share of p50: batched {:.1} µs (p50 − bare echo), strict {:.1} µs (p50 − bare echo − bare fsync)",
        us(rows[0].1.p50) - us(bare.p50),
        us(strict.1.p50) - us(bare.p50) - us(fsync.p50)
    );
}
