//! One call's inputs and its store's data: the caller, gate, secrets,
//! workspace and limits it runs with, and the WASI and HTTP views the
//! linker's host functions reach them through.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::address::InternalNetworks;
use crate::error::Limit;
use crate::guard::CapabilityGuard;
use crate::limits::{CallLimiter, Limits};
use crate::workspace::Workspace;
use corral_gate::{Caller, CapabilityGate, SecretStore};

/// One call's inputs, beyond the tool and its input.
#[derive(Clone)]
pub struct CallContext {
    /// The agent and tool, for the gate and for errors.
    pub caller: Caller,
    /// The agent's workspace; `None` means workspace operations fail.
    pub workspace: Option<PathBuf>,
    /// Decides each file, HTTP and secret use.
    pub gate: Arc<dyn CapabilityGate>,
    /// Where secrets' values come from, once the gate allows them.
    pub secrets: Arc<dyn SecretStore>,
    /// Overrides the runtime's default limits for this call.
    pub limits: Option<Limits>,
}

/// A log line a tool emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// What it said.
    pub message: String,
}

/// Per-call store data.
pub(crate) struct CallState {
    pub(crate) wasi: WasiCtx,
    /// A second handle on the guest's stderr pipe, read after a crash.
    pub(crate) stderr: MemoryOutputPipe,
    pub(crate) table: ResourceTable,
    pub(crate) http_ctx: WasiHttpCtx,
    pub(crate) guard: CapabilityGuard,
    pub(crate) workspace: Option<Workspace>,
    pub(crate) limiter: CallLimiter,
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

/// Bytes of guest stderr kept for error reports.
pub(crate) const STDERR_CAPTURE: usize = 4096;

/// The call's gate, with its deadline counted from now: the one a fresh
/// instance is made with, and the one an instance made ahead is armed with.
pub(crate) fn call_guard(
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

pub(crate) fn call_workspace(ctx: &CallContext, limits: Limits) -> Option<Workspace> {
    ctx.workspace
        .clone()
        .map(|root| Workspace::new(root, limits.file_bytes))
}
