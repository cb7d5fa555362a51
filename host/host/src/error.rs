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
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secret(#[from] MissingSecret),
    #[error(transparent)]
    Audit(#[from] corral_audit::AuditError),
    #[error(transparent)]
    Sandbox(#[from] corral_sandbox::SandboxError),
    #[error(transparent)]
    Disk(#[from] corral_sandbox::DiskError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Tools(#[from] crate::tools::ToolsError),
    #[error(transparent)]
    Tool(#[from] corral_tools::LoadError),
    #[error(transparent)]
    Model(#[from] corral_models::ModelError),
    /// Anything else that stops the start, in words that say what to fix.
    #[error("{0}")]
    Setup(String),
}
