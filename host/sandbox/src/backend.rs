//! What the rest of Corral needs from a container engine. Docker is the
//! implementation today; another engine implements this trait and nothing
//! above it changes.

use crate::spec::ContainerSpec;

#[derive(Debug, thiserror::Error)]
/// What can go wrong with a container engine; every backend reports its
/// failures in these terms.
pub enum SandboxError {
    #[error(
        "the Docker engine is not reachable ({0}); start it, or check that /var/run/docker.sock exists and is readable"
    )]
    Unreachable(String),
    #[error("agent `{agent}`: the engine refused to {action}: {message}")]
    Engine {
        agent: String,
        action: &'static str,
        message: String,
    },
    #[error("agent image: {0}")]
    Image(String),
    #[error(
        "agent `{agent}` was not started: the engine did not apply {option} ({why}); Corral never runs a weaker container — fix the engine's support for it"
    )]
    Hardening {
        agent: String,
        option: &'static str,
        why: String,
    },
}

/// A container as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// The value of the `corral.agent` label.
    pub agent: String,
    pub image: String,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
}

pub trait ContainerBackend {
    /// Creates the agent's container, hardened as `spec` says; a rejected
    /// hardening option is an error, never a weaker container.
    fn create(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, SandboxError>> + Send;
    fn start(&self, agent: &str, id: &str)
    -> impl Future<Output = Result<(), SandboxError>> + Send;
    /// Stops within `grace_secs`, then kills.
    fn stop(
        &self,
        agent: &str,
        id: &str,
        grace_secs: i32,
    ) -> impl Future<Output = Result<(), SandboxError>> + Send;
    fn remove(
        &self,
        agent: &str,
        id: &str,
    ) -> impl Future<Output = Result<(), SandboxError>> + Send;
    fn inspect(
        &self,
        agent: &str,
        id: &str,
    ) -> impl Future<Output = Result<ContainerInfo, SandboxError>> + Send;
    /// Every container carrying the `corral.agent` label, running or not.
    fn list(&self) -> impl Future<Output = Result<Vec<ContainerInfo>, SandboxError>> + Send;
    /// Everything the container has written: (stdout, stderr).
    fn logs(
        &self,
        agent: &str,
        id: &str,
    ) -> impl Future<Output = Result<(String, String), SandboxError>> + Send;
}
