//! The Docker backend: [`ContainerBackend`] over bollard, with errors that
//! name the agent and the next step. This module and its children are the
//! only place bollard's types appear.

use std::collections::HashMap;

use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
    StopContainerOptions, WaitContainerOptions,
};

use crate::backend::{ContainerBackend, ContainerInfo, SandboxError};
use futures_util::StreamExt;

use crate::spec::ContainerSpec;

mod build;
mod request;

/// How a run-to-completion container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exited {
    /// Its exit code.
    pub code: i64,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
    /// Whether the kernel's OOM killer ended it (the memory limit held).
    pub oom_killed: bool,
}

/// A connection to the engine, version-negotiated (this machine's engine
/// speaks API 1.41; bollard defaults to a newer one).
#[derive(Clone)]
pub struct Docker {
    pub(crate) inner: bollard::Docker,
}

impl Docker {
    /// Connects to the local engine and negotiates the API version.
    pub async fn connect() -> Result<Docker, SandboxError> {
        let docker = bollard::Docker::connect_with_local_defaults()
            .map_err(|e| SandboxError::Unreachable(e.to_string()))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| SandboxError::Unreachable(e.to_string()))?;
        docker
            .ping()
            .await
            .map_err(|e| SandboxError::Unreachable(e.to_string()))?;
        Ok(Docker { inner: docker })
    }

    fn engine(
        agent: &str,
        action: &'static str,
    ) -> impl Fn(bollard::errors::Error) -> SandboxError {
        let agent = agent.to_string();
        move |e| SandboxError::Engine {
            agent: agent.clone(),
            action,
            message: e.to_string(),
        }
    }

    /// Creates the agent's container; returns its id. Any hardening option
    /// the engine rejects fails this call: a weaker container is never
    /// started in its place.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<String, SandboxError> {
        let created = self
            .inner
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name()),
                    ..CreateContainerOptions::default()
                }),
                request::body(spec),
            )
            .await
            .map_err(Self::engine(&spec.agent, "create its container"))?;
        let inspected = self
            .inner
            .inspect_container(&created.id, None)
            .await
            .map_err(Self::engine(&spec.agent, "inspect its new container"))?;
        let host = inspected.host_config.unwrap_or_default();
        let user = inspected.config.and_then(|c| c.user);
        if let Err((option, why)) =
            request::check_applied(spec, &host, user.as_deref(), &created.warnings)
        {
            // Never leave a weaker container behind.
            let _ = self.remove(&spec.agent, &created.id).await;
            return Err(SandboxError::Hardening {
                agent: spec.agent.clone(),
                option,
                why,
            });
        }
        Ok(created.id)
    }

    /// Starts a created container.
    pub async fn start(&self, agent: &str, id: &str) -> Result<(), SandboxError> {
        self.inner
            .start_container(id, None)
            .await
            .map_err(Self::engine(agent, "start its container"))
    }

    /// Waits for the container to exit and collects its output.
    pub async fn wait(&self, agent: &str, id: &str) -> Result<Exited, SandboxError> {
        let mut waits = self.inner.wait_container(id, None::<WaitContainerOptions>);
        let code = match waits.next().await {
            Some(Ok(r)) => r.status_code,
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => return Err(Self::engine(agent, "wait for its container")(e)),
            None => -1,
        };
        let (stdout, stderr) = self.output(agent, id).await?;
        Ok(Exited {
            code,
            stdout,
            stderr,
            oom_killed: self.oom_killed(agent, id).await?,
        })
    }

    /// Everything the container has written so far.
    pub async fn output(&self, agent: &str, id: &str) -> Result<(String, String), SandboxError> {
        let mut logs = self.inner.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                ..LogsOptions::default()
            }),
        );
        let (mut out, mut err) = (String::new(), String::new());
        while let Some(chunk) = logs.next().await {
            match chunk.map_err(Self::engine(agent, "read its logs"))? {
                bollard::container::LogOutput::StdOut { message } => {
                    out.push_str(&String::from_utf8_lossy(&message))
                }
                bollard::container::LogOutput::StdErr { message } => {
                    err.push_str(&String::from_utf8_lossy(&message))
                }
                _ => {}
            }
        }
        Ok((out, err))
    }

    /// Whether the kernel killed the container for memory.
    pub async fn oom_killed(&self, agent: &str, id: &str) -> Result<bool, SandboxError> {
        Ok(self.inspect(agent, id).await?.oom_killed)
    }

    /// What the engine says of the container now.
    pub async fn inspect(&self, agent: &str, id: &str) -> Result<ContainerInfo, SandboxError> {
        let c = self
            .inner
            .inspect_container(id, None)
            .await
            .map_err(Self::engine(agent, "inspect its container"))?;
        let state = c.state.unwrap_or_default();
        let config = c.config.unwrap_or_default();
        Ok(ContainerInfo {
            id: c.id.unwrap_or_default(),
            agent: config
                .labels
                .and_then(|l| l.get(crate::AGENT_LABEL).cloned())
                .unwrap_or_default(),
            image: config.image.unwrap_or_default(),
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
        })
    }

    /// Every container labelled `corral.agent`, running or not.
    pub async fn list(&self) -> Result<Vec<ContainerInfo>, SandboxError> {
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![crate::AGENT_LABEL.to_string()]);
        let found = self
            .inner
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..ListContainersOptions::default()
            }))
            .await
            .map_err(Self::engine("*", "list agent containers"))?;
        Ok(found
            .into_iter()
            .map(|c| ContainerInfo {
                id: c.id.unwrap_or_default(),
                agent: c
                    .labels
                    .and_then(|l| l.get(crate::AGENT_LABEL).cloned())
                    .unwrap_or_default(),
                image: c.image.unwrap_or_default(),
                running: c.state.is_some_and(|s| s.to_string() == "running"),
                exit_code: None,
                oom_killed: false,
            })
            .collect())
    }

    /// Stops it within `grace_secs`, then kills it.
    pub async fn stop(&self, agent: &str, id: &str, grace_secs: i32) -> Result<(), SandboxError> {
        self.inner
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(grace_secs),
                    ..StopContainerOptions::default()
                }),
            )
            .await
            .map_err(Self::engine(agent, "stop its container"))
    }

    /// The image's user and entrypoint.
    pub async fn image_config(&self, tag: &str) -> Result<(String, Vec<String>), SandboxError> {
        let image = self
            .inner
            .inspect_image(tag)
            .await
            .map_err(|e| SandboxError::Image(format!("{tag}: {e}")))?;
        let config = image.config.unwrap_or_default();
        Ok((
            config.user.unwrap_or_default(),
            config.entrypoint.unwrap_or_default(),
        ))
    }

    /// Removes a container by name if one exists (a leftover of an earlier
    /// run); absent is fine.
    pub async fn remove_named(&self, name: &str) {
        let _ = self
            .inner
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..RemoveContainerOptions::default()
                }),
            )
            .await;
    }

    /// Removes it, stopped or not.
    pub async fn remove(&self, agent: &str, id: &str) -> Result<(), SandboxError> {
        self.inner
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..RemoveContainerOptions::default()
                }),
            )
            .await
            .map_err(Self::engine(agent, "remove its container"))
    }
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
