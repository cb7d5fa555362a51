//! Corral's host as a library: `corral.toml` parsed and checked
//! ([`HostConfig`]), and the running host ([`Host`]) that wires the policy
//! store, the audit log, the broker and its agents, the models, the
//! container supervisor and the channels. The `corral` binary is a thin
//! command line over this crate and the others, as `cedar-policy-cli` is
//! over `cedar-policy`.
//!
//! Adding a channel touches the channel's module in `corral-channels`, the
//! field for its section in [`HostConfig`], and one line in
//! [`HostConfig::channel_sections`]; nothing else changes.

mod agents;
mod approvals_config;
mod broker_config;
mod budgets;
mod config;
mod error;
mod handover;
mod host;
mod mailbox;
mod observe_config;
mod parts;
mod schedules_config;
mod secrets;
mod supervise;
mod tool_config;
mod tool_sources;
mod tools;
mod web_config;

pub use config::{
    AgentConfig, AgentLimits, ApprovalsSection, BackendName, BrokerConfig, ConfigError,
    DurabilityName, HostConfig, HttpConfig, ImageConfig, InternalConfig, ModelConfig, ProviderName,
    RegistryConfig, SandboxConfig, ToolConfig, TrustConfig,
};
pub use error::HostError;
pub use host::{Host, HostOptions, ShutdownReport};
pub use observe_config::{AgentMode, ObserveSection};
pub use secrets::Secrets;
pub use tool_sources::{publishers, registry_options, tool_store};
pub use tools::{LoadedTools, PinnedTool, ToolsError, load_tools, runtime_with_cache};
pub use web_config::WebSection;
