//! The Docker engine's create request for a [`ContainerSpec`], with every
//! hardening option explicit, and the check of what the engine applied.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig};

use crate::spec::{
    ContainerSpec, SOCKET_DIR_IN_CONTAINER, WORKSPACE_IN_CONTAINER, seccomp_profile,
};

fn security_opts() -> Vec<String> {
    vec![
        "no-new-privileges:true".into(),
        format!("seccomp={}", seccomp_profile()),
    ]
}

/// Checks what the engine actually applied against what was asked:
/// an engine can accept an option and ignore it (a kernel without a
/// cgroup controller turns a limit into a warning). Names the first
/// option that did not hold.
pub(super) fn check_applied(
    spec: &ContainerSpec,
    host: &HostConfig,
    user: Option<&str>,
    warnings: &[String],
) -> Result<(), (&'static str, String)> {
    if let Some(w) = warnings.first() {
        return Err(("engine warnings", format!("the engine warned: {w}")));
    }
    let asked = body(spec);
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
        user == Some(spec.user.as_str()),
        format!("{user:?}"),
    )?;
    Ok(())
}

/// The engine request. Every hardening option is explicit here; the
/// engine refusing any of them fails the create (see `Docker::create`).
pub(super) fn body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut tmpfs = HashMap::new();
    tmpfs.insert(
        "/tmp".to_string(),
        format!("rw,noexec,nosuid,nodev,size={}", spec.limits.tmp_bytes),
    );
    let mut labels = HashMap::new();
    labels.insert(crate::AGENT_LABEL.to_string(), spec.agent.clone());
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: Some(spec.command.clone()),
        user: Some(spec.user.clone()),
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
            memory: Some(spec.limits.memory_bytes),
            // Equal to memory: no swap on top.
            memory_swap: Some(spec.limits.memory_bytes),
            nano_cpus: Some(spec.limits.nano_cpus),
            pids_limit: Some(spec.limits.pids),
            ipc_mode: Some("private".into()),
            // The engine's minimal init as PID 1: it reaps zombies and
            // forwards SIGTERM, so `docker stop` ends the agent at once
            // instead of waiting out the grace period to kill it.
            init: Some(true),
            tmpfs: Some(tmpfs),
            binds: Some(
                [
                    format!("{}:{WORKSPACE_IN_CONTAINER}:rw", spec.workspace.display()),
                    format!("{}:{SOCKET_DIR_IN_CONTAINER}:rw", spec.socket_dir.display()),
                ]
                .into_iter()
                .chain(spec.extra_mounts.iter().map(crate::ExtraMount::bind))
                .collect(),
            ),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Limits;

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
    fn what_was_asked_passes_and_each_weakening_is_named() {
        let s = spec();
        let asked = body(&s).host_config.unwrap();
        assert_eq!(check_applied(&s, &asked, Some("10001:10001"), &[]), Ok(()));

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
            let (named, _) = check_applied(&s, &host, Some("10001:10001"), &[]).unwrap_err();
            assert_eq!(named, option);
        }
        assert_eq!(
            check_applied(&s, &asked, Some("0:0"), &[]).unwrap_err().0,
            "User"
        );
        let warned = check_applied(&s, &asked, Some("10001:10001"), &["no swap limit".into()]);
        assert!(warned.unwrap_err().1.contains("no swap limit"));
    }
}
