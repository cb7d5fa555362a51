//! What the rest of Corral needs from a container engine. Docker is the
//! implementation today; another engine implements this trait and nothing
//! above it changes.

use crate::docker::{Docker, SandboxError};
use crate::spec::ContainerSpec;

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

impl ContainerBackend for Docker {
    async fn create(&self, spec: &ContainerSpec) -> Result<String, SandboxError> {
        Docker::create(self, spec).await
    }

    async fn start(&self, agent: &str, id: &str) -> Result<(), SandboxError> {
        Docker::start(self, agent, id).await
    }

    async fn stop(&self, agent: &str, id: &str, grace_secs: i32) -> Result<(), SandboxError> {
        Docker::stop(self, agent, id, grace_secs).await
    }

    async fn remove(&self, agent: &str, id: &str) -> Result<(), SandboxError> {
        Docker::remove(self, agent, id).await
    }

    async fn inspect(&self, agent: &str, id: &str) -> Result<ContainerInfo, SandboxError> {
        Docker::inspect(self, agent, id).await
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, SandboxError> {
        Docker::list(self).await
    }

    async fn logs(&self, agent: &str, id: &str) -> Result<(String, String), SandboxError> {
        Docker::output(self, agent, id).await
    }
}
