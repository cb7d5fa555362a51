//! Each agent's place on the host, made before anything serves it: its
//! uid, its workspace (on a disk of its own when configured), its
//! `.corral` handed over, and the check that no workspace can reach the
//! host's state or another agent's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use corral_sandbox::{AgentDisk, Mounted};

use crate::config::{AgentConfig, HostConfig};
use crate::error::HostError;

/// The uid that runs this process: a non-root host cannot hand sockets to
/// another user, so its containers run as itself.
pub(crate) fn own_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((u32::MAX, u32::MAX))
}

/// The host's state directory, created private to the host's user.
pub(crate) fn private_dir(path: &Path) -> Result<(), HostError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).map_err(|e| {
        HostError::Setup(format!(
            "cannot create the state directory {}: {e}",
            path.display()
        ))
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| HostError::Setup(format!("cannot make {} private: {e}", path.display())))
}

/// The uid and gid each agent runs as on this host.
pub(crate) struct Ids {
    host: (u32, u32),
    shared: Option<String>,
}

impl Ids {
    pub(crate) fn new(config: &HostConfig) -> Ids {
        Ids {
            host: own_ids(),
            shared: config.image.user.clone(),
        }
    }

    /// Whether the host runs as root, and so can give each agent a uid
    /// of its own, mount its disk, and hand it its socket.
    pub(crate) fn root(&self) -> bool {
        self.host.0 == 0
    }

    /// Each agent runs as a uid of its own; a host that is not root cannot
    /// hand sockets to other users, so its containers run as itself.
    pub(crate) fn of(&self, agent: &AgentConfig) -> (u32, u32) {
        if self.root() {
            agent.ids(self.shared.as_deref())
        } else {
            self.host
        }
    }
}

/// Why one agent cannot be served; the others still are.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unservable(pub String);

/// Mounts the agent's disk (when it has one) and prepares its workspace.
/// `leftover` names agents whose containers outlived the last host: their
/// workspaces may be changing, so they are never copied onto a new disk
/// (a copy made as root while the agent swaps a directory for a link
/// could take host files with it).
pub(crate) fn place(
    config: &HostConfig,
    agent: &AgentConfig,
    ids: &Ids,
    leftover: &BTreeSet<String>,
    mounted: &mut Vec<Mounted>,
) -> Result<PathBuf, Unservable> {
    let (uid, gid) = ids.of(agent);
    let disk = (agent.limits.disk_mib > 0).then(|| AgentDisk {
        image: config
            .state_dir
            .join("disks")
            .join(format!("{}.img", agent.id)),
        bytes: agent.limits.disk_mib << 20,
    });
    match disk {
        Some(_) if !ids.root() => Err(Unservable(format!(
            "its disk_mib = {} needs a host running as root (to mount the agent's own file system); \
             run corral up as root, or set disk_mib = 0 in [agents.limits] to leave its workspace unbounded",
            agent.limits.disk_mib
        ))),
        Some(disk) => {
            let m = disk
                .mount(&agent.workspace, !leftover.contains(&agent.id))
                .map_err(|e| Unservable(format!("cannot mount its own disk: {e}")))?;
            mounted.push(m);
            prepare_workspace(&agent.workspace, uid, gid)
        }
        None => prepare_workspace(&agent.workspace, uid, gid),
    }
}

/// Creates the agent's workspace if missing and hands the agent its
/// `.corral` directory. What the agent could have put there stops this
/// agent, never the host.
fn prepare_workspace(workspace: &Path, uid: u32, gid: u32) -> Result<PathBuf, Unservable> {
    let ws = std::fs::create_dir_all(workspace)
        .and_then(|()| workspace.canonicalize())
        .map_err(|e| {
            Unservable(format!(
                "cannot create its workspace {}: {e}",
                workspace.display()
            ))
        })?;
    crate::handover::hand_over(&ws, uid, gid).map_err(|e| Unservable(e.to_string()))?;
    Ok(ws)
}

/// An agent can write anything in its workspace, so no workspace may hold
/// another agent's workspace, the policies, the host's state (sockets,
/// audit log) or the secrets file.
pub(crate) fn check_isolation(config: &HostConfig) -> Result<(), HostError> {
    let workspaces: Vec<(&str, &Path)> = config
        .agents
        .iter()
        .map(|a| (a.id.as_str(), a.workspace.as_path()))
        .collect();
    let canonical = |p: &Path| -> PathBuf {
        p.canonicalize().unwrap_or_else(|_| {
            // A file not created yet: its directory, canonical, plus its name.
            match (
                p.parent().and_then(|d| d.canonicalize().ok()),
                p.file_name(),
            ) {
                (Some(dir), Some(name)) => dir.join(name),
                _ => p.to_path_buf(),
            }
        })
    };
    let mut guarded = vec![
        ("policies", canonical(&config.policies)),
        ("state_dir", canonical(&config.state_dir)),
        ("audit", canonical(&config.audit_path())),
    ];
    if let Some(secrets) = &config.secrets_file {
        guarded.push(("secrets_file", canonical(secrets)));
    }
    for (i, (agent, workspace)) in workspaces.iter().enumerate() {
        for (what, path) in &guarded {
            if path.starts_with(workspace) {
                return Err(HostError::Setup(format!(
                    "{what} {} is inside agent `{agent}`'s workspace {}, where the agent could change it; move one of them",
                    path.display(),
                    workspace.display()
                )));
            }
        }
        for (other, theirs) in &workspaces[i + 1..] {
            if theirs.starts_with(workspace) || workspace.starts_with(theirs) {
                return Err(HostError::Setup(format!(
                    "agents `{agent}` and `{other}` share a workspace ({} and {}); give each its own",
                    workspace.display(),
                    theirs.display()
                )));
            }
        }
    }
    Ok(())
}
