//! The one shape of an agent container.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::models::{ContainerCreateBody, HostConfig};

/// Where the agent's workspace appears inside its container.
pub const WORKSPACE_IN_CONTAINER: &str = "/workspace";
/// Where the agent's broker-socket directory appears inside its container.
pub const SOCKET_DIR_IN_CONTAINER: &str = "/run/corral";

/// Resource limits, with defaults for an interactive agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: i64,
    /// CPU in billionths of a CPU (Docker's `NanoCpus`).
    pub nano_cpus: i64,
    pub pids: i64,
    pub tmp_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 512 << 20,
            nano_cpus: 1_000_000_000,
            pids: 128,
            tmp_bytes: 64 << 20,
        }
    }
}

/// What one agent container is made of.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub agent: String,
    pub image: String,
    /// Host directory mounted read-write at [`WORKSPACE_IN_CONTAINER`].
    pub workspace: PathBuf,
    /// Host directory holding the agent's broker socket, mounted at
    /// [`SOCKET_DIR_IN_CONTAINER`].
    pub socket_dir: PathBuf,
    /// `uid:gid`; must match the owner of `socket_dir`.
    pub user: String,
    pub limits: Limits,
    /// Arguments to `corral-agent`.
    pub command: Vec<String>,
}

impl ContainerSpec {
    pub fn name(&self) -> String {
        format!("corral-agent-{}", self.agent)
    }

    /// The engine request. Every hardening option is explicit here; the
    /// engine refusing any of them fails the create (see `Docker::create`).
    pub fn body(&self) -> ContainerCreateBody {
        let mut tmpfs = HashMap::new();
        tmpfs.insert(
            "/tmp".to_string(),
            format!("rw,noexec,nosuid,nodev,size={}", self.limits.tmp_bytes),
        );
        let mut labels = HashMap::new();
        labels.insert(crate::AGENT_LABEL.to_string(), self.agent.clone());
        ContainerCreateBody {
            image: Some(self.image.clone()),
            cmd: Some(self.command.clone()),
            user: Some(self.user.clone()),
            env: Some(vec![format!(
                "CORRAL_SOCKET={SOCKET_DIR_IN_CONTAINER}/mcp.sock"
            )]),
            working_dir: Some(WORKSPACE_IN_CONTAINER.into()),
            labels: Some(labels),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                readonly_rootfs: Some(true),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                privileged: Some(false),
                memory: Some(self.limits.memory_bytes),
                // Equal to memory: no swap on top.
                memory_swap: Some(self.limits.memory_bytes),
                nano_cpus: Some(self.limits.nano_cpus),
                pids_limit: Some(self.limits.pids),
                ipc_mode: Some("private".into()),
                tmpfs: Some(tmpfs),
                binds: Some(vec![
                    format!("{}:{WORKSPACE_IN_CONTAINER}:rw", self.workspace.display()),
                    format!("{}:{SOCKET_DIR_IN_CONTAINER}:rw", self.socket_dir.display()),
                ]),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        }
    }
}
