//! What can stop the host from starting: each error names what was wrong
//! and what to do.

use corral_channels::{ChannelError, MissingSecret};

/// A configuration that cannot be used; the text names the file, the key
/// and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// `corral.toml` or the secrets file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A secret a section names is not set.
    #[error(transparent)]
    Secret(#[from] MissingSecret),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] corral_audit::AuditError),
    /// The container engine.
    #[error(transparent)]
    Sandbox(#[from] corral_sandbox::SandboxError),
    /// A disk or the sockets' file system could not be mounted.
    #[error(transparent)]
    Disk(#[from] corral_sandbox::DiskError),
    /// A channel could not start.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// Tools could not be loaded or given actions.
    #[error(transparent)]
    Tools(#[from] crate::tools::ToolsError),
    /// A tool's component could not be read.
    #[error(transparent)]
    Tool(#[from] corral_tools::LoadError),
    /// A model client could not be built.
    #[error(transparent)]
    Model(#[from] corral_models::ModelError),
    /// Anything else that stops the start, in words that say what to fix.
    #[error("{0}")]
    Setup(String),
}
