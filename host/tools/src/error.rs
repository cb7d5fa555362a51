//! Errors of the tool runtime. Each names what was wrong and what to do
//! next, because they end up in front of tool authors and operators.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use corral_gate::{Caller, Denial, Refusal};

/// Loading a component (from bytes or a registry entry) failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read tool component {path}: {source}")]
    Read {
        /// The component file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the one pinned.
    #[error(
        "tool component {path} does not match its pinned sha256\n  expected: {expected}\n  actual:   {actual}\nIf you rebuilt the tool on purpose, update the pin in the configuration; otherwise the file was altered and must not be loaded."
    )]
    DigestMismatch {
        /// The component file.
        path: PathBuf,
        /// The pinned sha256.
        expected: String,
        /// The file's sha256.
        actual: String,
    },
    /// The pin is not a sha256.
    #[error("invalid sha256 pin `{pin}` for {path}: expected 64 hexadecimal digits")]
    BadPin {
        /// The component file.
        path: PathBuf,
        /// The pin as written.
        pin: String,
    },
    /// wasmtime could not compile it.
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// It does not export the tool interface.
    #[error(
        "this component does not target corral:tool@0.1.0: {missing}.\nBuild it against the WIT in `wit/` with world `corral:tool/tool-component` (see examples/tools/)."
    )]
    WrongWorld {
        /// What it lacks.
        missing: String,
    },
    /// It imports something tools may not.
    #[error(
        "this component imports `{import}`, which Corral does not provide to tools.\nTools may import only the interfaces of the `corral:tool/tool-component` world at 0.1.0 (workspace, logging, wasi:http/outgoing-handler, wall clock, random) and the WASI 0.2 interfaces toolchains link (wasi:io, wasi:cli, wasi:filesystem, wasi:sockets, monotonic clock), which Corral links with nothing behind them. Rebuild the tool against `wit/` (`corral tool build`)."
    )]
    ForbiddenImport {
        /// The import, with its version.
        import: String,
    },
    /// Linking failed.
    #[error("linking the component failed: {0}")]
    Link(String),
    /// Its `describe` trapped or failed.
    #[error("the component's `describe` failed: {0}")]
    Describe(String),
    /// A tool it describes breaks the rules for names, schemas or text.
    #[error("the component describes tool `{tool}` badly: {problem}")]
    BadToolInfo {
        /// The tool.
        tool: String,
        /// What is wrong.
        problem: String,
    },
    /// Two components offer the same tool name.
    #[error(
        "tool name `{tool}` is offered by two components: {first} and {second}.\nTool names must be unique across a host; rename one of them or load only one."
    )]
    DuplicateTool {
        /// The tool.
        tool: String,
        /// The first component offering it.
        first: String,
        /// The second.
        second: String,
    },
    /// The artifact cache is unusable.
    #[error("artifact cache {dir}: {problem}")]
    Cache {
        /// The cache's directory.
        dir: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The engine could not be built from the configuration.
    #[error("building the runtime failed: {0}")]
    Engine(String),
}

/// Which per-call limit a call broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A memory grew past the limit.
    Memory {
        /// The limit, in bytes.
        bytes: u64,
    },
    /// The call ran past its deadline.
    WallTime {
        /// The time allowed.
        limit: Duration,
    },
    /// The output was larger than allowed.
    Output {
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The tool logged more than allowed.
    LogVolume {
        /// The limit, in bytes.
        limit: u64,
    },
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Memory { bytes } => write!(f, "memory limit ({})", human_bytes(*bytes)),
            Limit::WallTime { limit } => write!(f, "wall-time limit ({} ms)", limit.as_millis()),
            Limit::Output { bytes, limit } => write!(
                f,
                "output limit ({} returned, {} allowed)",
                human_bytes(*bytes),
                human_bytes(*limit)
            ),
            Limit::LogVolume { limit } => write!(f, "log-volume limit ({})", human_bytes(*limit)),
        }
    }
}

pub(crate) fn human_bytes(n: u64) -> String {
    const KI: u64 = 1024;
    if n >= KI * KI && n.is_multiple_of(KI * KI) {
        format!("{} MiB", n / (KI * KI))
    } else if n >= KI && n.is_multiple_of(KI) {
        format!("{} KiB", n / KI)
    } else {
        format!("{n} bytes")
    }
}

/// What went wrong in a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// The component offers no tool of that name.
    UnknownTool,
    /// The tool rejected its input (WIT `invalid-input`), or the host did
    /// (input not a JSON object).
    InvalidInput(String),
    /// A capability was refused (WIT `denied`).
    Denied(Denial),
    /// The tool reported failure (WIT `failed`).
    Failed(String),
    /// The tool reported a timeout of its own (WIT `timed-out`).
    TimedOut(String),
    /// The call broke a host limit and was stopped.
    LimitExceeded(Limit),
    /// The guest trapped (panic, unreachable, stack overflow …).
    Trap(String),
    /// The tool returned something that is not JSON.
    BadOutput(String),
    /// The host could not run the call at all.
    Host(String),
}

/// A failed call, with who made it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CallError {
    /// The agent and tool.
    pub caller: Caller,
    /// What went wrong.
    pub failure: CallFailure,
}

impl CallError {
    /// The failure's class, which names it to clients and in the audit
    /// log's outcomes.
    pub fn class(&self) -> Refusal {
        match self.failure {
            CallFailure::UnknownTool => Refusal::UnknownTool,
            CallFailure::InvalidInput(_) => Refusal::InvalidInput,
            CallFailure::Denied(_) => Refusal::Denied,
            CallFailure::Failed(_) => Refusal::Failed,
            CallFailure::TimedOut(_) => Refusal::TimedOut,
            CallFailure::LimitExceeded(_) => Refusal::LimitExceeded,
            CallFailure::Trap(_) => Refusal::Trap,
            CallFailure::BadOutput(_) => Refusal::BadOutput,
            CallFailure::Host(_) => Refusal::HostError,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Caller { agent, tool } = &self.caller;
        write!(f, "agent `{agent}`, tool `{tool}`: ")?;
        match &self.failure {
            CallFailure::UnknownTool => {
                write!(
                    f,
                    "no such tool; `corral tool inspect` lists what a component offers"
                )
            }
            CallFailure::InvalidInput(m) => {
                write!(
                    f,
                    "invalid input: {m}; check the input against the tool's input schema"
                )
            }
            CallFailure::Denied(d) => write!(
                f,
                "denied: {d}; if this should be allowed, ask a policy author to grant it"
            ),
            CallFailure::Failed(m) => write!(f, "failed: {m}"),
            CallFailure::TimedOut(m) => write!(f, "timed out: {m}"),
            CallFailure::LimitExceeded(l) => write!(
                f,
                "stopped: the call exceeded its {l}; raise the limit in the tool's configuration if the tool legitimately needs more"
            ),
            CallFailure::Trap(m) => write!(f, "the tool crashed: {m}"),
            CallFailure::BadOutput(m) => write!(f, "returned output that is not valid JSON: {m}"),
            CallFailure::Host(m) => write!(f, "host error: {m}"),
        }
    }
}
