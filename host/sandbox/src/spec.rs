//! The one shape of an agent container.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::models::{ContainerCreateBody, HostConfig};

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

fn security_opts() -> Vec<String> {
    vec![
        "no-new-privileges:true".into(),
        format!("seccomp={}", seccomp_profile()),
    ]
}

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
    /// Screened (`screen_mount`) and granted by a Cedar `mount` decision.
    pub extra_mounts: Vec<crate::ExtraMount>,
}

impl ContainerSpec {
    pub fn name(&self) -> String {
        format!("corral-agent-{}", self.agent)
    }

    /// Checks what the engine actually applied against what was asked:
    /// an engine can accept an option and ignore it (a kernel without a
    /// cgroup controller turns a limit into a warning). Names the first
    /// option that did not hold.
    pub fn check_applied(
        &self,
        host: &HostConfig,
        user: Option<&str>,
        warnings: &[String],
    ) -> Result<(), (&'static str, String)> {
        if let Some(w) = warnings.first() {
            return Err(("engine warnings", format!("the engine warned: {w}")));
        }
        let asked = self.body();
        let want = asked.host_config.unwrap_or_default();
        let same = |name: &'static str, ok: bool, got: String| {
            if ok {
                Ok(())
            } else {
                Err((name, format!("asked for {name}, the engine applied {got}")))
            }
        };
        same(
            "NetworkMode none",
            host.network_mode.as_deref() == Some("none"),
            format!("{:?}", host.network_mode),
        )?;
        same(
            "ReadonlyRootfs",
            host.readonly_rootfs == Some(true),
            format!("{:?}", host.readonly_rootfs),
        )?;
        same(
            "CapDrop ALL",
            host.cap_drop
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c == "ALL")),
            format!("{:?}", host.cap_drop),
        )?;
        same(
            "no-new-privileges",
            host.security_opt
                .as_ref()
                .is_some_and(|o| o.iter().any(|o| o.starts_with("no-new-privileges"))),
            format!("{:?}", host.security_opt),
        )?;
        same(
            "seccomp profile",
            host.security_opt.as_ref().is_some_and(|o| {
                o.iter()
                    .any(|o| o.strip_prefix("seccomp=") == Some(seccomp_profile()))
            }),
            "another profile or none".into(),
        )?;
        same(
            "Privileged false",
            host.privileged != Some(true),
            "privileged".into(),
        )?;
        same(
            "Memory",
            host.memory == want.memory,
            format!("{:?}", host.memory),
        )?;
        same(
            "NanoCpus",
            host.nano_cpus == want.nano_cpus,
            format!("{:?}", host.nano_cpus),
        )?;
        same(
            "PidsLimit",
            host.pids_limit == want.pids_limit,
            format!("{:?}", host.pids_limit),
        )?;
        same(
            "Binds",
            host.binds == want.binds,
            format!("{:?}", host.binds),
        )?;
        same(
            "User",
            user == Some(self.user.as_str()),
            format!("{user:?}"),
        )?;
        Ok(())
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
                security_opt: Some(security_opts()),
                privileged: Some(false),
                memory: Some(self.limits.memory_bytes),
                // Equal to memory: no swap on top.
                memory_swap: Some(self.limits.memory_bytes),
                nano_cpus: Some(self.limits.nano_cpus),
                pids_limit: Some(self.limits.pids),
                ipc_mode: Some("private".into()),
                // The engine's minimal init as PID 1: it reaps zombies and
                // forwards SIGTERM, so `docker stop` ends the agent at once
                // instead of waiting out the grace period to kill it.
                init: Some(true),
                tmpfs: Some(tmpfs),
                binds: Some(
                    [
                        format!("{}:{WORKSPACE_IN_CONTAINER}:rw", self.workspace.display()),
                        format!("{}:{SOCKET_DIR_IN_CONTAINER}:rw", self.socket_dir.display()),
                    ]
                    .into_iter()
                    .chain(self.extra_mounts.iter().map(crate::ExtraMount::bind))
                    .collect(),
                ),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            agent: "a".into(),
            image: "corral-agent:x".into(),
            workspace: "/w".into(),
            socket_dir: "/s".into(),
            user: "10001:10001".into(),
            limits: Limits::default(),
            command: vec![],
            extra_mounts: vec![],
        }
    }

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

    #[test]
    fn what_was_asked_passes_and_each_weakening_is_named() {
        let s = spec();
        let asked = s.body().host_config.unwrap();
        assert_eq!(s.check_applied(&asked, Some("10001:10001"), &[]), Ok(()));

        let weaker = [
            (
                "NetworkMode none",
                HostConfig {
                    network_mode: Some("bridge".into()),
                    ..asked.clone()
                },
            ),
            (
                "ReadonlyRootfs",
                HostConfig {
                    readonly_rootfs: Some(false),
                    ..asked.clone()
                },
            ),
            (
                "CapDrop ALL",
                HostConfig {
                    cap_drop: None,
                    ..asked.clone()
                },
            ),
            (
                "no-new-privileges",
                HostConfig {
                    security_opt: Some(vec![]),
                    ..asked.clone()
                },
            ),
            (
                "seccomp profile",
                HostConfig {
                    security_opt: Some(vec![
                        "no-new-privileges:true".into(),
                        "seccomp=unconfined".into(),
                    ]),
                    ..asked.clone()
                },
            ),
            (
                "Memory",
                HostConfig {
                    memory: Some(0),
                    ..asked.clone()
                },
            ),
            (
                "PidsLimit",
                HostConfig {
                    pids_limit: None,
                    ..asked.clone()
                },
            ),
            (
                "Binds",
                HostConfig {
                    binds: Some(vec!["/:/host".into()]),
                    ..asked.clone()
                },
            ),
        ];
        for (option, host) in weaker {
            let (named, _) = s
                .check_applied(&host, Some("10001:10001"), &[])
                .unwrap_err();
            assert_eq!(named, option);
        }
        assert_eq!(
            s.check_applied(&asked, Some("0:0"), &[]).unwrap_err().0,
            "User"
        );
        let warned = s.check_applied(&asked, Some("10001:10001"), &["no swap limit".into()]);
        assert!(warned.unwrap_err().1.contains("no swap limit"));
    }
}
