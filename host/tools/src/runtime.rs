//! The engine, the linker and the per-call store.
//!
//! One [`ToolRuntime`] per process holds the wasmtime `Engine` (pooling
//! allocator, copy-on-write memory images, epoch interruption) and a
//! `Linker` with exactly the imports the `corral:tool` world allows. A
//! component is compiled once into a [`LoadedComponent`] holding its
//! `InstancePre`; every call gets a fresh `Store` and a fresh instance, so
//! calls share nothing and a call's failure cannot leak into the next.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    Store, Trap,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::address::InternalNetworks;
use crate::bindings::{ToolComponent, ToolComponentPre, types as wit_types};
use crate::cache::ArtifactCache;
use crate::error::{CallError, CallFailure, Limit, LoadError};
use crate::guard::{CapabilityGuard, CapabilityUse};
use crate::info::{ToolInfo, validate_tool_info};
use crate::workspace::Workspace;
use corral_gate::{Caller, CapabilityGate, Denial, SecretStore};

/// Limits applied to one call. Every field has a safe default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest size any one linear memory of the instance may grow to.
    pub memory_bytes: u64,
    /// Wall-clock time from instantiation to the call's return, including
    /// time spent waiting on HTTP.
    pub wall_time: Duration,
    /// Largest output (JSON text) a call may return.
    pub output_bytes: u64,
    /// Total bytes of log messages one call may emit.
    pub log_bytes: u64,
    /// Largest file a call may read or write through the workspace.
    pub file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            wall_time: Duration::from_secs(10),
            output_bytes: 1 << 20,
            log_bytes: 64 << 10,
            file_bytes: 16 << 20,
        }
    }
}

/// How instances are allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Preallocated slots reused across calls: the fast path.
    Pooling {
        /// Instances that may be live at once across all calls.
        max_instances: u32,
    },
    /// mmap per instance; slower, but no up-front reservation.
    OnDemand,
}

/// Builder for a [`ToolRuntime`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    allocation: Allocation,
    max_memory_bytes: u64,
    epoch_tick: Duration,
    default_limits: Limits,
    cache_dir: Option<PathBuf>,
    keep_resident_bytes: usize,
    internal_networks: InternalNetworks,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            allocation: Allocation::Pooling { max_instances: 256 },
            max_memory_bytes: 256 << 20,
            epoch_tick: Duration::from_millis(5),
            default_limits: Limits::default(),
            cache_dir: None,
            // Rust guests put a 1 MiB stack below their data; the hot pages
            // sit just under and just above that boundary.
            keep_resident_bytes: 4 << 20,
            internal_networks: InternalNetworks::default(),
        }
    }
}

impl RuntimeBuilder {
    pub fn allocation(mut self, allocation: Allocation) -> Self {
        self.allocation = allocation;
        self
    }

    /// The ceiling for any call's `memory_bytes`: with pooling, each slot
    /// reserves this much address space.
    pub fn max_memory_bytes(mut self, bytes: u64) -> Self {
        self.max_memory_bytes = bytes;
        self
    }

    /// With pooling on Linux 6.7+, how much of each linear memory may stay
    /// resident between calls (only dirtied pages are reset). 0 disables.
    pub fn keep_resident_bytes(mut self, bytes: usize) -> Self {
        self.keep_resident_bytes = bytes;
        self
    }

    /// The granularity of wall-time enforcement.
    pub fn epoch_tick(mut self, tick: Duration) -> Self {
        self.epoch_tick = tick;
        self
    }

    pub fn default_limits(mut self, limits: Limits) -> Self {
        self.default_limits = limits;
        self
    }

    /// Internal address ranges an operator opened to named hosts. Default:
    /// none, so a request whose host resolves to a loopback, private,
    /// link-local, unique-local, multicast, unspecified or metadata
    /// address is refused before any policy is asked. The trade-off: an
    /// internal API must be named here as well as permitted by policy.
    pub fn internal_networks(mut self, networks: InternalNetworks) -> Self {
        self.internal_networks = networks;
        self
    }

    /// Where to keep compiled artifacts; without it every load compiles.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    pub fn build(self) -> Result<ToolRuntime, LoadError> {
        let engine_err = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        if self.default_limits.memory_bytes > self.max_memory_bytes {
            return Err(LoadError::Engine(format!(
                "default memory limit {} exceeds the runtime's max_memory_bytes {}",
                self.default_limits.memory_bytes, self.max_memory_bytes
            )));
        }
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.memory_init_cow(true);
        if let Allocation::Pooling { max_instances } = self.allocation {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(max_instances);
            // Rust components carry a main module plus small adapter and
            // shim modules; a handful of core instances, memories and
            // tables each.
            pool.total_core_instances(max_instances * 8);
            pool.total_memories(max_instances * 2);
            pool.total_tables(max_instances * 4);
            pool.max_memory_size(self.max_memory_bytes as usize);
            // With PAGEMAP_SCAN (Linux 6.7+), a returned slot is reset by
            // rewriting only the pages the call dirtied and stays resident:
            // no madvise, no TLB shootdown, no page faults on reuse (an echo
            // call dirties about five pages). Nothing is left to decommit,
            // so batching would only hold slots back from reuse: with a
            // batch of 1 each slot returns at once and the next call gets
            // the same cache-warm slot. Measured here: p50 39 -> 12 us.
            //
            // Without the ioctl, keeping memory resident would mean a memset
            // of the whole region, which costs more than it saves; there,
            // batching the madvise calls is the better trade.
            if self.keep_resident_bytes > 0 && PoolingAllocationConfig::is_pagemap_scan_available()
            {
                pool.pagemap_scan(Enabled::Yes);
                pool.linear_memory_keep_resident(self.keep_resident_bytes);
                pool.table_keep_resident(64 << 10);
                pool.decommit_batch_size(1);
            } else {
                pool.decommit_batch_size(8);
            }
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(engine_err)?;
        let linker = build_linker(&engine).map_err(engine_err)?;
        let cache = self.cache_dir.map(ArtifactCache::open).transpose()?;
        let ticker = EpochTicker::start(engine.clone(), self.epoch_tick);
        let max_spares = match self.allocation {
            Allocation::Pooling { max_instances } => max_instances / 2,
            Allocation::OnDemand => MAX_ON_DEMAND_SPARES,
        };
        Ok(ToolRuntime {
            engine,
            linker,
            cache,
            default_limits: self.default_limits,
            max_memory_bytes: self.max_memory_bytes,
            epoch_tick: self.epoch_tick,
            spares: Arc::new(SpareBudget {
                live: Default::default(),
                max: max_spares,
            }),
            internal_networks: Arc::new(self.internal_networks),
            _ticker: ticker,
        })
    }
}

/// Drives epoch interruption: a thread that bumps the engine's epoch every
/// tick, so a guest that never returns is stopped within a tick of its
/// deadline. Stopped when the runtime is dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("corral-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .ok();
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The interfaces a tool may import, by name without version. Anything
/// else is refused at load time with a message naming it.
///
/// The first group is the `corral:tool/tool-component` world itself; the
/// second is plumbing that Rust's (and other toolchains') WASI adapters
/// import even when unused, given harmless implementations: no stdin,
/// captured stdout/stderr, an empty environment, no terminal.
pub const ALLOWED_IMPORTS: &[&str] = &[
    "corral:tool/types",
    "corral:tool/workspace",
    "corral:tool/logging",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    // plumbing
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
];

/// The export every tool must have.
pub const TOOL_EXPORT: &str = "corral:tool/tool@0.1.0";

fn build_linker(engine: &Engine) -> wasmtime::Result<Linker<CallState>> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::p2::bindings::cli;
    use wasmtime_wasi::random::{WasiRandom, WasiRandomView};

    let mut linker = Linker::<CallState>::new(engine);
    // io, wall and monotonic clocks, random, stdin/stdout/stderr.
    wasmtime_wasi::p2::add_to_linker_proxy_interfaces_sync(&mut linker)?;
    let l = &mut linker;
    wasmtime_wasi::p2::bindings::random::insecure::add_to_linker::<CallState, WasiRandom>(
        l,
        |t| <CallState as WasiRandomView>::random(t),
    )?;
    wasmtime_wasi::p2::bindings::random::insecure_seed::add_to_linker::<CallState, WasiRandom>(
        l,
        |t| <CallState as WasiRandomView>::random(t),
    )?;
    cli::exit::add_to_linker::<CallState, WasiCli>(l, <CallState as WasiCliView>::cli)?;
    cli::environment::add_to_linker::<CallState, WasiCli>(l, <CallState as WasiCliView>::cli)?;
    cli::terminal_input::add_to_linker::<CallState, WasiCli>(l, <CallState as WasiCliView>::cli)?;
    cli::terminal_output::add_to_linker::<CallState, WasiCli>(l, <CallState as WasiCliView>::cli)?;
    cli::terminal_stdin::add_to_linker::<CallState, WasiCli>(l, <CallState as WasiCliView>::cli)?;
    cli::terminal_stdout::add_to_linker::<CallState, WasiCli>(l, <CallState as WasiCliView>::cli)?;
    cli::terminal_stderr::add_to_linker::<CallState, WasiCli>(l, <CallState as WasiCliView>::cli)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(l)?;
    crate::bindings::corral::tool::types::add_to_linker::<CallState, HasSelf<CallState>>(l, |s| s)?;
    crate::bindings::corral::tool::workspace::add_to_linker::<CallState, HasSelf<CallState>>(
        l,
        |s| s,
    )?;
    crate::bindings::corral::tool::logging::add_to_linker::<CallState, HasSelf<CallState>>(
        l,
        |s| s,
    )?;
    Ok(linker)
}

/// A compiled, checked component, ready to instantiate.
pub struct LoadedComponent {
    sha256: String,
    pre: ToolComponentPre<CallState>,
    tools: Vec<ToolInfo>,
    /// Unique within the process: which component a [`Spare`]'s instance
    /// was made from.
    id: u64,
    /// Set once instantiating it ahead of a call was seen to reach the
    /// host (any of Corral's host functions, stderr, a broken limit) or
    /// failed: such a component gets no instance ahead of its call, where
    /// that reach would meet a gate that is not the call's, and a failing
    /// start would be paid for twice.
    made_on_arrival: AtomicBool,
}

/// The call's gate, with its deadline counted from now: the one a fresh
/// instance is made with, and the one an instance made ahead is armed with.
fn call_guard(
    ctx: &CallContext,
    limits: Limits,
    internal: &Arc<InternalNetworks>,
) -> CapabilityGuard {
    CapabilityGuard::new(
        ctx.caller.clone(),
        ctx.gate.clone(),
        ctx.secrets.clone(),
        internal.clone(),
        Instant::now() + limits.wall_time,
    )
}

fn call_workspace(ctx: &CallContext, limits: Limits) -> Option<Workspace> {
    ctx.workspace
        .clone()
        .map(|root| Workspace::new(root, limits.file_bytes))
}

/// Numbers [`LoadedComponent`]s.
static NEXT_COMPONENT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl LoadedComponent {
    /// Hex sha256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// What `describe` returned, validated.
    pub fn tools(&self) -> &[ToolInfo] {
        &self.tools
    }

    pub fn tool(&self, name: &str) -> Option<&ToolInfo> {
        self.tools.iter().find(|t| t.name == name)
    }
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("sha256", &self.sha256)
            .field(
                "tools",
                &self.tools.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Most instances made ahead of their calls at once without pooling,
/// where no pool bounds them.
const MAX_ON_DEMAND_SPARES: u32 = 64;

/// One caller's instance made before its call arrives, and the instance
/// of its last call, not yet freed.
///
/// Instantiating and freeing are most of a short call's cost, and both can
/// happen while nothing waits: a caller (the broker's connection) calls
/// [`ToolRuntime::refill`] once it has answered, and the next call of the
/// same component starts in an instance that exists already. That
/// instance is still fresh: made for this call alone, never called before,
/// and given its caller, grants and deadlines only when the call arrives.
/// Made with no grants, it cannot have touched anything; a component whose
/// instantiation reaches the host at all is never made ahead.
#[derive(Default)]
pub struct Spare {
    ready: Option<Ready>,
    spent: Option<Store<CallState>>,
}

struct Ready {
    component: u64,
    memory_bytes: usize,
    store: Store<CallState>,
    instance: ToolComponent,
    _slot: SpareSlot,
}

impl Spare {
    /// Whether an instance is ready for a call.
    pub fn is_ready(&self) -> bool {
        self.ready.is_some()
    }
}

/// Keeps a finished call's instance in `spare`, to be freed off the call
/// path, with nothing the call could still act through: its resource table
/// goes now, and with it any HTTP request the guest started and never
/// awaited (which freeing the store aborts), and its workspace.
fn retire(spare: &mut Spare, mut store: Store<CallState>) {
    let state = store.data_mut();
    state.table = ResourceTable::new();
    state.workspace = None;
    spare.spent = Some(store);
}

/// One call's inputs, beyond the tool and its input.
#[derive(Clone)]
pub struct CallContext {
    pub caller: Caller,
    /// The agent's workspace; `None` means workspace operations fail.
    pub workspace: Option<PathBuf>,
    pub gate: Arc<dyn CapabilityGate>,
    pub secrets: Arc<dyn SecretStore>,
    /// Overrides the runtime's default limits for this call.
    pub limits: Option<Limits>,
}

/// A log line a tool emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

/// What a successful call produced.
#[derive(Debug, Clone)]
pub struct CallOutput {
    /// The tool's output, JSON text, checked to parse.
    pub output: String,
    pub logs: Vec<LogLine>,
    pub capabilities: Vec<CapabilityUse>,
    pub duration: Duration,
}

/// A failed call, with what the tool did before it failed.
#[derive(Debug, Clone)]
pub struct CallReport {
    pub error: CallError,
    pub logs: Vec<LogLine>,
    pub capabilities: Vec<CapabilityUse>,
    /// The tail of what the guest wrote to stderr (panic messages land
    /// here).
    pub stderr: String,
}

/// Per-call store data.
pub(crate) struct CallState {
    wasi: WasiCtx,
    /// A second handle on the guest's stderr pipe, read after a crash.
    stderr: MemoryOutputPipe,
    table: ResourceTable,
    http_ctx: WasiHttpCtx,
    pub(crate) guard: CapabilityGuard,
    pub(crate) workspace: Option<Workspace>,
    limiter: CallLimiter,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) log_bytes: u64,
    pub(crate) limits: Limits,
    /// Set by a host function that ended the call for breaking a limit,
    /// so the resulting trap is reported as that limit.
    pub(crate) broke: Option<Limit>,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.guard,
        }
    }
}

/// Caps linear memory and table growth for one call, and remembers that
/// it refused a growth so the trap that usually follows (a guest's
/// allocation failure aborts) is reported as the memory limit.
struct CallLimiter {
    memory_bytes: usize,
    memory_refused: bool,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Bytes of guest stderr kept for error reports.
const STDERR_CAPTURE: usize = 4096;

/// Runs tool components. Cheap to share behind an `Arc`; `call` may run
/// concurrently from many threads.
pub struct ToolRuntime {
    engine: Engine,
    linker: Linker<CallState>,
    cache: Option<ArtifactCache>,
    default_limits: Limits,
    max_memory_bytes: u64,
    epoch_tick: Duration,
    /// Instances made ahead of their calls ([`Spare`]) that may exist at
    /// once: with pooling, half the pool, so that spares held by idle
    /// connections can never take the slots that calls need.
    spares: Arc<SpareBudget>,
    internal_networks: Arc<InternalNetworks>,
    _ticker: EpochTicker,
}

struct SpareBudget {
    live: std::sync::atomic::AtomicU32,
    max: u32,
}

impl SpareBudget {
    fn take(self: &Arc<Self>) -> Option<SpareSlot> {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| SpareSlot(self.clone()))
    }
}

/// One unit of [`SpareBudget`], given back when the instance it paid for
/// is used or dropped.
struct SpareSlot(Arc<SpareBudget>);

impl Drop for SpareSlot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ToolRuntime {
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn default_limits(&self) -> Limits {
        self.default_limits
    }

    /// Compiles (or fetches from cache) and checks a component, then reads
    /// its `describe`.
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedComponent, LoadError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, bytes, &sha256)?,
            None => Component::new(&self.engine, bytes)
                .map_err(|e| LoadError::Compile(format!("{e:#}")))?,
        };
        self.check_world(&component)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = ToolComponentPre::new(instance_pre).map_err(|e| LoadError::WrongWorld {
            missing: format!("{e:#}"),
        })?;
        let mut loaded = LoadedComponent {
            sha256,
            pre,
            tools: Vec::new(),
            id: NEXT_COMPONENT_ID.fetch_add(1, Ordering::Relaxed),
            made_on_arrival: AtomicBool::new(false),
        };
        loaded.tools = self.describe(&loaded)?;
        Ok(loaded)
    }

    fn check_world(&self, component: &Component) -> Result<(), LoadError> {
        use wasmtime::component::types::ComponentItem;
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            let unversioned = name.split('@').next().unwrap_or(name);
            if !ALLOWED_IMPORTS.contains(&unversioned) {
                return Err(LoadError::ForbiddenImport {
                    import: name.to_string(),
                });
            }
        }
        let exports: Vec<(String, ComponentItem)> = ty
            .exports(&self.engine)
            .map(|(n, e)| (n.to_string(), e.ty))
            .collect();
        let Some((_, item)) = exports.iter().find(|(n, _)| n == TOOL_EXPORT) else {
            let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
            return Err(LoadError::WrongWorld {
                missing: format!(
                    "it does not export `{TOOL_EXPORT}` (it exports: {})",
                    if names.is_empty() {
                        "nothing".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            });
        };
        let ComponentItem::ComponentInstance(inst) = item else {
            return Err(LoadError::WrongWorld {
                missing: format!("its export `{TOOL_EXPORT}` is not an interface instance"),
            });
        };
        let funcs: Vec<String> = inst
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        for required in ["describe", "call"] {
            if !funcs.iter().any(|f| f == required) {
                return Err(LoadError::WrongWorld {
                    missing: format!("its `{TOOL_EXPORT}` export has no `{required}` function"),
                });
            }
        }
        Ok(())
    }

    fn describe(&self, component: &LoadedComponent) -> Result<Vec<ToolInfo>, LoadError> {
        // `describe` must not need any capability: give it none.
        let ctx = CallContext {
            caller: Caller {
                agent: "corral-host".into(),
                tool: "describe".into(),
            },
            workspace: None,
            gate: Arc::new(corral_gate::AllowList::new()),
            secrets: Arc::new(corral_gate::StaticSecrets::new()),
            limits: None,
        };
        let (mut store, instance) = self
            .instantiate(component, &ctx)
            .map_err(|e| LoadError::Describe(format!("{e:#}")))?;
        let raw = instance
            .corral_tool_tool()
            .call_describe(&mut store)
            .map_err(|e| LoadError::Describe(describe_trap(&store, e)))?;
        if raw.is_empty() {
            return Err(LoadError::Describe("it offers no tools".into()));
        }
        let mut tools = Vec::with_capacity(raw.len());
        for info in raw {
            let info = ToolInfo::from(info);
            validate_tool_info(&info)?;
            if tools.iter().any(|t: &ToolInfo| t.name == info.name) {
                return Err(LoadError::BadToolInfo {
                    tool: info.name.clone(),
                    problem: "described twice by the same component".into(),
                });
            }
            tools.push(info);
        }
        Ok(tools)
    }

    /// The store for one call of `ctx`, and the instance in it.
    fn instantiate(
        &self,
        component: &LoadedComponent,
        ctx: &CallContext,
    ) -> wasmtime::Result<(Store<CallState>, ToolComponent)> {
        let limits = ctx.limits.unwrap_or(self.default_limits);
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        // The builder's defaults are already what a tool should get: no
        // args, no env, no preopens, empty stdin, no sockets. Only stderr
        // is kept, for crash reports.
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        let state = CallState {
            wasi,
            stderr,
            table: ResourceTable::new(),
            http_ctx: WasiHttpCtx::new(),
            guard: call_guard(ctx, limits, &self.internal_networks),
            workspace: call_workspace(ctx, limits),
            limiter: CallLimiter {
                memory_bytes: self.memory_limit(&limits),
                memory_refused: false,
            },
            logs: Vec::new(),
            log_bytes: 0,
            limits,
            broke: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(self.deadline_ticks(limits.wall_time));
        store.epoch_deadline_trap();
        let instance = component.pre.instantiate(&mut store)?;
        Ok((store, instance))
    }

    fn memory_limit(&self, limits: &Limits) -> usize {
        limits.memory_bytes.min(self.max_memory_bytes) as usize
    }

    /// Makes `spare`'s instance ready for the next call of `component`,
    /// off the call path: frees the instance of the call before, then
    /// instantiates a fresh one under the default limits, with no caller,
    /// no grants, no workspace and no secrets. Its call gives it those
    /// ([`Self::call_with`]). Does nothing if the spare already holds one
    /// for `component`, or if the runtime's budget for spares is spent; a
    /// component whose instantiation reaches the host, or fails, gets no
    /// spare.
    pub fn refill(&self, spare: &mut Spare, component: &LoadedComponent) {
        spare.spent = None;
        let memory_bytes = self.memory_limit(&self.default_limits);
        if spare
            .ready
            .as_ref()
            .is_some_and(|r| r.component == component.id && r.memory_bytes == memory_bytes)
        {
            return;
        }
        spare.ready = None;
        if component.made_on_arrival.load(Ordering::Relaxed) {
            return;
        }
        let Some(slot) = self.spares.take() else {
            return;
        };
        let unarmed = CallContext {
            caller: Caller {
                agent: String::new(),
                tool: String::new(),
            },
            workspace: None,
            gate: Arc::new(corral_gate::AllowList::new()),
            secrets: Arc::new(corral_gate::StaticSecrets::new()),
            limits: None,
        };
        let made = self
            .instantiate(component, &unarmed)
            .ok()
            .filter(|(store, _)| {
                let state = store.data();
                !state.guard.was_reached()
                    && state.logs.is_empty()
                    && state.broke.is_none()
                    && state.stderr.contents().is_empty()
            });
        let Some((store, instance)) = made else {
            // The call will instantiate for itself, and report any error.
            tracing::debug!(component = %component.sha256, "instantiating ahead reaches the host or fails; calls of this component instantiate on arrival");
            component.made_on_arrival.store(true, Ordering::Relaxed);
            return;
        };
        spare.ready = Some(Ready {
            component: component.id,
            memory_bytes,
            store,
            instance,
            _slot: slot,
        });
    }

    /// Gives an instance made ahead (by [`Self::refill`]) what its call
    /// has: the caller, gate, secrets, workspace, limits and deadlines.
    fn arm(&self, store: &mut Store<CallState>, ctx: &CallContext, limits: Limits) {
        let state = store.data_mut();
        state.guard = call_guard(ctx, limits, &self.internal_networks);
        state.workspace = call_workspace(ctx, limits);
        state.limits = limits;
        store.set_epoch_deadline(self.deadline_ticks(limits.wall_time));
    }

    fn deadline_ticks(&self, wall: Duration) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        (wall.as_nanos().div_ceil(tick) as u64).max(1)
    }

    /// Runs `tool` of `component` on `input` (a JSON object as text) in a
    /// fresh instance. Blocking: from async code, call it inside
    /// `spawn_blocking`.
    pub fn call(
        &self,
        component: &LoadedComponent,
        tool: &str,
        input: &str,
        ctx: &CallContext,
    ) -> Result<CallOutput, Box<CallReport>> {
        self.call_with(&mut Spare::default(), component, tool, input, ctx)
    }

    /// [`Self::call`], in `spare`'s instance if it holds a fresh one of
    /// `component` under the same memory limit (else in one made now).
    /// The instance is kept in `spare` after the call, to be freed by the
    /// next [`Self::refill`] or with the spare: freeing it is the slowest
    /// part of a short call, and nothing waits for it.
    pub fn call_with(
        &self,
        spare: &mut Spare,
        component: &LoadedComponent,
        tool: &str,
        input: &str,
        ctx: &CallContext,
    ) -> Result<CallOutput, Box<CallReport>> {
        let started = Instant::now();
        let fail = |failure| {
            Box::new(CallReport {
                error: CallError {
                    caller: ctx.caller.clone(),
                    failure,
                },
                logs: Vec::new(),
                capabilities: Vec::new(),
                stderr: String::new(),
            })
        };
        if component.tool(tool).is_none() {
            return Err(fail(CallFailure::UnknownTool));
        }
        if !input_is_object(input) {
            return Err(fail(CallFailure::InvalidInput(
                "the input must be a JSON object".into(),
            )));
        }
        let limits = ctx.limits.unwrap_or(self.default_limits);
        spare.spent = None;
        let ready = spare.ready.take().filter(|r| {
            r.component == component.id && r.memory_bytes == self.memory_limit(&limits)
        });
        let (mut store, instance) = match ready {
            Some(Ready {
                mut store,
                instance,
                ..
            }) => {
                self.arm(&mut store, ctx, limits);
                (store, instance)
            }
            None => match self.instantiate(component, ctx) {
                Ok(v) => v,
                Err(e) => return Err(fail(CallFailure::Host(format!("instantiating: {e:#}")))),
            },
        };
        let result = instance
            .corral_tool_tool()
            .call_call(&mut store, tool, input);
        let failure = match result {
            Ok(Ok(output)) => {
                let len = output.len() as u64;
                if len > limits.output_bytes {
                    Some(CallFailure::LimitExceeded(Limit::Output {
                        bytes: len,
                        limit: limits.output_bytes,
                    }))
                } else if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&output) {
                    Some(CallFailure::BadOutput(e.to_string()))
                } else {
                    let state = store.data_mut();
                    let done = CallOutput {
                        output,
                        logs: std::mem::take(&mut state.logs),
                        capabilities: state.guard.take_uses(),
                        duration: started.elapsed(),
                    };
                    retire(spare, store);
                    return Ok(done);
                }
            }
            Ok(Err(tool_error)) => Some(match tool_error {
                wit_types::ToolError::InvalidInput(m) => CallFailure::InvalidInput(m),
                wit_types::ToolError::Denied(d) => CallFailure::Denied(Denial {
                    reason: d.reason,
                    policy_ids: d.policy_ids,
                }),
                wit_types::ToolError::Failed(m) => CallFailure::Failed(m),
                wit_types::ToolError::TimedOut(m) => CallFailure::TimedOut(m),
            }),
            Err(trap) => Some(self.classify_trap(&store, &trap, limits)),
        };
        let stderr = stderr_tail(&store);
        let state = store.data_mut();
        let report = Box::new(CallReport {
            error: CallError {
                caller: ctx.caller.clone(),
                failure: failure.unwrap_or(CallFailure::Host("unknown failure".into())),
            },
            logs: std::mem::take(&mut state.logs),
            capabilities: state.guard.take_uses(),
            stderr,
        });
        retire(spare, store);
        Err(report)
    }

    fn classify_trap(
        &self,
        store: &Store<CallState>,
        trap: &wasmtime::Error,
        limits: Limits,
    ) -> CallFailure {
        let state = store.data();
        if let Some(limit) = state.broke {
            return CallFailure::LimitExceeded(limit);
        }
        if state.limiter.memory_refused {
            return CallFailure::LimitExceeded(Limit::Memory {
                bytes: limits.memory_bytes,
            });
        }
        if trap.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return CallFailure::LimitExceeded(Limit::WallTime {
                limit: limits.wall_time,
            });
        }
        let mut msg = match trap.downcast_ref::<Trap>() {
            Some(t) => t.to_string(),
            None => format!("{trap:#}"),
        };
        let stderr = stderr_tail(store);
        if !stderr.is_empty() {
            msg.push_str("; guest stderr: ");
            msg.push_str(stderr.trim());
        }
        CallFailure::Trap(msg)
    }
}

fn input_is_object(input: &str) -> bool {
    input.trim_start().starts_with('{')
        && serde_json::from_str::<serde::de::IgnoredAny>(input).is_ok()
}

fn stderr_tail(store: &Store<CallState>) -> String {
    String::from_utf8_lossy(&store.data().stderr.contents()).into_owned()
}

fn describe_trap(store: &Store<CallState>, e: wasmtime::Error) -> String {
    let stderr = stderr_tail(store);
    if stderr.is_empty() {
        format!("{e:#}")
    } else {
        format!("{e:#}; guest stderr: {}", stderr.trim())
    }
}
