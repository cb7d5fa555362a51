//! Corral's WebAssembly tool runtime.
//!
//! Tools are components for the `corral:tool@0.1.0` world (see `wit/`).
//! This crate compiles them once, checks what they import and export,
//! and runs each call in a fresh instance under limits on memory, wall
//! time, output and log volume. Everything a tool touches outside its own
//! memory goes through a [`CapabilityGate`] first.
//!
//! The crate knows nothing of Cedar, MCP or audit: the policy engine
//! implements [`CapabilityGate`], and the broker decides whether a call
//! may happen at all before it reaches [`ToolRuntime::call`].

mod address;
mod bindings;
mod builder;
mod cache;
mod call_state;
mod connect;
mod epoch;
mod error;
mod guard;
mod host_impl;
mod http;
mod info;
mod limits;
mod linker;
mod registry;
mod runtime;
mod spare;
mod workspace;

pub use address::{BadCidr, Cidr, InternalNetworks, internal_class};
pub use builder::{Allocation, RuntimeBuilder};
pub use cache::ArtifactCache;
pub use call_state::{CallContext, LogLine};
pub use corral_gate::{
    AllowList, Caller, Capability, CapabilityGate, Denial, FileOp, GateDecision, HttpRequestInfo,
    SecretStore, StaticSecrets,
};
pub use error::{CallError, CallFailure, Limit, LoadError};
pub use guard::CapabilityUse;
pub use info::{BadToolName, Capabilities, ToolInfo, check_tool_name};
pub use limits::Limits;
pub use linker::{ALLOWED_IMPORTS, TOOL_EXPORT};
pub use registry::{RegisteredComponent, ToolRegistry, ToolSource, file_sha256, load_pinned};
pub use runtime::{CallOutput, CallReport, LoadedComponent, ToolRuntime};
pub use spare::Spare;
pub use workspace::normalize as normalize_workspace_path;
