//! The one shape of an agent container, in the engine's neutral terms;
//! the Docker backend turns it into its own request (`docker/request.rs`).

use std::path::PathBuf;

/// Where the agent's workspace appears inside its container.
pub const WORKSPACE_IN_CONTAINER: &str = "/workspace";
/// Where the agent's broker-socket directory appears inside its container.
pub const SOCKET_DIR_IN_CONTAINER: &str = "/run/corral";

/// Corral's own seccomp profile (`seccomp.json`): an allow-list, tighter
/// than Docker's default. Left out on purpose: `ptrace` and
/// `process_vm_*` (an agent once stopped its own PID 1 with `ptrace` and
/// the container could not exit), `personality`, `keyctl` and the other
/// keyring calls, `bpf`, `userfaultfd`, `perf_event_open`, `io_uring_*`,
/// `unshare`, `setns`, `mount` and every other call a tool runner never
/// needs; `clone` may not make namespaces, and `clone3`, whose flags a
/// filter cannot see, answers ENOSYS so that libc falls back to `clone`.
/// What the engine is sent: the profile's JSON on one line.
pub fn seccomp_profile() -> &'static str {
    static PROFILE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        serde_json::from_str::<serde_json::Value>(include_str!("seccomp.json"))
            .map(|v| v.to_string())
            // The file is part of this crate and a unit test parses it.
            .unwrap_or_default()
    });
    &PROFILE
}

/// Resource limits, with defaults for an interactive agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory, bytes (swap is not added on top).
    pub memory_bytes: i64,
    /// CPU in billionths of a CPU (Docker's `NanoCpus`).
    pub nano_cpus: i64,
    /// Processes and threads.
    pub pids: i64,
    /// The size of the noexec `/tmp`.
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
    /// The agent's id, also its container's `corral.agent` label.
    pub agent: String,
    /// The image, by tag or digest.
    pub image: String,
    /// Host directory mounted read-write at [`WORKSPACE_IN_CONTAINER`].
    pub workspace: PathBuf,
    /// Host directory holding the agent's broker socket, mounted at
    /// [`SOCKET_DIR_IN_CONTAINER`].
    pub socket_dir: PathBuf,
    /// `uid:gid`; must match the owner of `socket_dir`.
    pub user: String,
    /// Its resource limits.
    pub limits: Limits,
    /// Arguments to `corral-agent`.
    pub command: Vec<String>,
    /// Screened (`screen_mount`) and granted by a Cedar `mount` decision.
    pub extra_mounts: Vec<crate::ExtraMount>,
}

impl ContainerSpec {
    /// The container's name: `corral-agent-<agent>`.
    pub fn name(&self) -> String {
        format!("corral-agent-{}", self.agent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seccomp_profile_refuses_what_no_agent_needs() {
        let profile: serde_json::Value = serde_json::from_str(seccomp_profile()).unwrap();
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed: Vec<&str> = profile["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|r| r["names"].as_array().unwrap().iter())
            .map(|n| n.as_str().unwrap())
            .collect();
        assert!(allowed.contains(&"read") && allowed.contains(&"clone"));
        for refused in [
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "userfaultfd",
            "perf_event_open",
            "personality",
            "unshare",
            "setns",
            "mount",
            "io_uring_setup",
            "clone3",
        ] {
            assert!(!allowed.contains(&refused), "{refused} is allowed");
        }
    }
}
