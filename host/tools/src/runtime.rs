//! Loading and calling components: compile and check once, then a fresh
//! instance per call (or one made ahead, see [`crate::spare`]), armed with
//! the call's gate and limits and run to its end.
//!
//! One [`ToolRuntime`] per process holds the wasmtime `Engine` (pooling
//! allocator, copy-on-write memory images, epoch interruption) and a
//! `Linker` with exactly the imports the `corral:tool` world allows
//! ([`crate::linker`]). A component is compiled once into a
//! [`LoadedComponent`] holding its `InstancePre`; every call gets a fresh
//! `Store` and a fresh instance, so calls share nothing and a call's
//! failure cannot leak into the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi_http::WasiHttpCtx;

use crate::address::InternalNetworks;
use crate::bindings::{ToolComponent, ToolComponentPre, types as wit_types};
use crate::cache::ArtifactCache;
use crate::call_state::{
    CallContext, CallState, LogLine, STDERR_CAPTURE, call_guard, call_workspace,
};
use crate::epoch::EpochTicker;
use crate::error::{CallError, CallFailure, Limit, LoadError};
use crate::guard::CapabilityUse;
use crate::info::{ToolInfo, validate_tool_info};
use crate::limits::{CallLimiter, Limits};
use crate::linker::{check_world, null_wasi};
use crate::spare::{Ready, Spare, SpareBudget, retire};
use corral_gate::{Caller, Denial};

/// A compiled, checked component, ready to instantiate.
pub struct LoadedComponent {
    pub(crate) sha256: String,
    /// What it imports, with versions, in the component's order.
    pub(crate) imports: Vec<String>,
    pub(crate) pre: ToolComponentPre<CallState>,
    pub(crate) tools: Vec<ToolInfo>,
    /// Unique within the process: which component a [`Spare`]'s instance
    /// was made from.
    pub(crate) id: u64,
    /// Set once instantiating it ahead of a call was seen to reach the
    /// host (any of Corral's host functions, stderr, a broken limit) or
    /// failed: such a component gets no instance ahead of its call, where
    /// that reach would meet a gate that is not the call's, and a failing
    /// start would be paid for twice.
    pub(crate) made_on_arrival: AtomicBool,
}

/// Numbers [`LoadedComponent`]s.
static NEXT_COMPONENT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl LoadedComponent {
    /// Hex sha256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The interfaces it imports, with versions: what `corral tool
    /// inspect` shows an operator.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// What `describe` returned, validated.
    pub fn tools(&self) -> &[ToolInfo] {
        &self.tools
    }

    /// The tool `name`, if this component offers it.
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

/// What a successful call produced.
#[derive(Debug, Clone)]
pub struct CallOutput {
    /// The tool's output, JSON text, checked to parse.
    pub output: String,
    /// What it logged.
    pub logs: Vec<LogLine>,
    /// Each capability it asked for, and the answer.
    pub capabilities: Vec<CapabilityUse>,
    /// From instantiation to return.
    pub duration: Duration,
}

/// A failed call, with what the tool did before it failed.
#[derive(Debug, Clone)]
pub struct CallReport {
    /// What went wrong.
    pub error: CallError,
    /// What it logged before.
    pub logs: Vec<LogLine>,
    /// Each capability it asked for, and the answer.
    pub capabilities: Vec<CapabilityUse>,
    /// The tail of what the guest wrote to stderr (panic messages land
    /// here).
    pub stderr: String,
}

/// Runs tool components. Cheap to share behind an `Arc`; `call` may run
/// concurrently from many threads.
pub struct ToolRuntime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<CallState>,
    pub(crate) cache: Option<ArtifactCache>,
    pub(crate) default_limits: Limits,
    pub(crate) max_memory_bytes: u64,
    pub(crate) epoch_tick: Duration,
    /// Instances made ahead of their calls ([`Spare`]) that may exist at
    /// once: with pooling, half the pool, so that spares held by idle
    /// connections can never take the slots that calls need.
    pub(crate) spares: Arc<SpareBudget>,
    pub(crate) internal_networks: Arc<InternalNetworks>,
    pub(crate) _ticker: EpochTicker,
}

impl ToolRuntime {
    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The limits a call gets unless its context overrides them.
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
        let imports = check_world(&self.engine, &component)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = ToolComponentPre::new(instance_pre).map_err(|e| LoadError::WrongWorld {
            missing: format!("{e:#}"),
        })?;
        let mut loaded = LoadedComponent {
            sha256,
            imports,
            pre,
            tools: Vec::new(),
            id: NEXT_COMPONENT_ID.fetch_add(1, Ordering::Relaxed),
            made_on_arrival: AtomicBool::new(false),
        };
        loaded.tools = self.describe(&loaded)?;
        Ok(loaded)
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
        // Only stderr is kept, for crash reports.
        let wasi = null_wasi(stderr.clone());
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
