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
mod cache;
mod error;
/// The capability vocabulary, re-exported from `corral-gate`.
pub use corral_gate as gate;
mod connect;
mod guard;
mod host_impl;
mod http;
mod info;
mod registry;
mod runtime;
mod workspace;

pub use address::{BadCidr, Cidr, InternalNetworks, internal_class};
pub use cache::ArtifactCache;
pub use corral_gate::{
    AllowList, Caller, Capability, CapabilityGate, Denial, FileOp, GateDecision, HttpRequestInfo,
    SecretStore, StaticSecrets,
};
pub use error::{CallError, CallFailure, Limit, LoadError};
pub use guard::CapabilityUse;
pub use info::{Capabilities, ToolInfo, check_tool_name};
pub use registry::{RegisteredComponent, ToolRegistry, ToolSource, file_sha256, load_pinned};
pub use runtime::{
    ALLOWED_IMPORTS, Allocation, CallContext, CallOutput, CallReport, Limits, LoadedComponent,
    LogLine, RuntimeBuilder, Spare, TOOL_EXPORT, ToolRuntime,
};
pub use workspace::normalize as normalize_workspace_path;
