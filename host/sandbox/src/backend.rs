//! What the rest of Corral needs from a container engine. Docker is the
//! implementation today; another engine implements this trait and nothing
//! above it changes.

use crate::spec::ContainerSpec;

#[derive(Debug, thiserror::Error)]
/// What can go wrong with a container engine; every backend reports its
/// failures in these terms.
pub enum SandboxError {
    /// The engine cannot be reached.
    #[error(
        "the Docker engine is not reachable ({0}); start it, or check that /var/run/docker.sock exists and is readable"
    )]
    Unreachable(String),
    /// The engine refused an operation.
    #[error("agent `{agent}`: the engine refused to {action}: {message}")]
    Engine {
        /// The agent.
        agent: String,
        /// What it was asked to do (`create`, `start`, …).
        action: &'static str,
        /// What it said.
        message: String,
    },
    /// The agent image could not be built or found.
    #[error("agent image: {0}")]
    Image(String),
    /// The engine accepted a hardening option and did not apply it.
    #[error(
        "agent `{agent}` was not started: the engine did not apply {option} ({why}); Corral never runs a weaker container — fix the engine's support for it"
    )]
    Hardening {
        /// The agent.
        agent: String,
        /// The option (`ReadonlyRootfs`, `CapDrop ALL`, …).
        option: &'static str,
        /// What the engine applied instead.
        why: String,
    },
}

/// A container as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The engine's id for it.
    pub id: String,
    /// The value of the `corral.agent` label.
    pub agent: String,
    /// The image it runs.
    pub image: String,
    /// Whether it is running.
    pub running: bool,
    /// How it exited, once it has.
    pub exit_code: Option<i64>,
    /// Whether the kernel killed it for memory.
    pub oom_killed: bool,
}

/// What Corral needs from a container engine: the seven operations the
/// supervisor and the CLI use. Docker implements it (`docker.rs`); a
/// Kubernetes backend would map each onto a pod (`ARCHITECTURE.md`).
pub trait ContainerBackend {
    /// Creates the agent's container, hardened as `spec` says; a rejected
    /// hardening option is an error, never a weaker container.
    fn create(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, SandboxError>> + Send;
    /// Starts a created container.
    fn start(&self, agent: &str, id: &str)
    -> impl Future<Output = Result<(), SandboxError>> + Send;
    /// Stops within `grace_secs`, then kills.
    fn stop(
        &self,
        agent: &str,
        id: &str,
        grace_secs: i32,
    ) -> impl Future<Output = Result<(), SandboxError>> + Send;
    /// Removes it, stopped or not.
    fn remove(
        &self,
        agent: &str,
        id: &str,
    ) -> impl Future<Output = Result<(), SandboxError>> + Send;
    /// What the engine says of it now.
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
