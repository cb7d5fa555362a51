//! Extra host mounts: resolved and screened here, decided by Cedar's
//! `mount` action by the caller, read-only unless the grant says writable.
//!
//! Order matters: the path is canonicalized first (symlinks resolved), so
//! neither the blocklist nor the policy can be fooled by a link; the
//! blocklist applies whatever the policies say.

use std::path::{Component, Path, PathBuf};

/// Names that never enter a container, anywhere in a mounted path or
/// directly inside a mounted directory.
pub const BLOCKED_NAMES: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    "docker.sock",
    ".env",
    ".netrc",
    ".git-credentials",
    ".npmrc",
    ".pypirc",
    "id_rsa",
    "id_ecdsa",
    "id_ed25519",
];

/// Path suffixes blocked the same way (`.config/gcloud`).
const BLOCKED_SUFFIXES: &[&[&str]] = &[&[".config", "gcloud"]];

/// Extensions of private-key files.
const BLOCKED_EXTENSIONS: &[&str] = &["pem", "key", "p12", "pfx"];

/// System trees that are never mounted, nor any path under them.
const BLOCKED_ROOTS: &[&str] = &["/proc", "/sys", "/dev", "/boot", "/etc", "/run", "/var/run"];

/// A screened extra mount, ready for a Cedar `mount` decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraMount {
    /// Canonical, symlinks resolved.
    pub host_path: PathBuf,
    /// Where it appears in the container.
    pub container_path: String,
    /// Whether writing was granted.
    pub writable: bool,
}

impl ExtraMount {
    /// The bind string: read-only unless writable was granted.
    pub fn bind(&self) -> String {
        format!(
            "{}:{}:{}",
            self.host_path.display(),
            self.container_path,
            if self.writable { "rw" } else { "ro" }
        )
    }
}

/// Why an extra mount was refused before any policy was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// The path does not resolve.
    #[error("extra mount {path}: cannot resolve it ({why}); mount an existing path")]
    Unresolvable {
        /// The path as asked.
        path: String,
        /// Why it does not resolve.
        why: String,
    },
    /// The built-in blocklist refuses it.
    #[error(
        "extra mount {path} (resolved to {resolved}) is blocked: {why}; no policy can allow it"
    )]
    Blocked {
        /// The path as asked.
        path: String,
        /// What it resolved to.
        resolved: String,
        /// Which rule blocks it.
        why: String,
    },
    /// The target inside the container is not allowed.
    #[error(
        "extra mount target `{0}` must be an absolute path inside the container, not /, /workspace or /run/corral"
    )]
    BadTarget(String),
}

fn blocked_name(name: &str) -> Option<String> {
    if BLOCKED_NAMES.contains(&name) {
        return Some(format!("`{name}` holds credentials"));
    }
    let ext = Path::new(name).extension().and_then(|e| e.to_str());
    if ext.is_some_and(|e| BLOCKED_EXTENSIONS.contains(&e)) {
        return Some(format!("`{name}` looks like a private key"));
    }
    None
}

/// Canonicalizes `host_path` and applies the blocklist.
pub fn screen(
    host_path: &Path,
    container_path: &str,
    writable: bool,
) -> Result<ExtraMount, MountError> {
    let shown = host_path.display().to_string();
    let reserved = |t: &str| container_path == t || container_path.starts_with(&format!("{t}/"));
    let target_ok = container_path.starts_with('/')
        && !container_path.trim_end_matches('/').is_empty()
        && !container_path.split('/').any(|c| c == "..")
        && !reserved(crate::WORKSPACE_IN_CONTAINER)
        && !reserved(crate::SOCKET_DIR_IN_CONTAINER);
    if !target_ok {
        return Err(MountError::BadTarget(container_path.to_string()));
    }
    let resolved = host_path
        .canonicalize()
        .map_err(|e| MountError::Unresolvable {
            path: shown.clone(),
            why: e.to_string(),
        })?;
    let blocked = |why: String| MountError::Blocked {
        path: shown.clone(),
        resolved: resolved.display().to_string(),
        why,
    };
    if resolved == Path::new("/") {
        return Err(blocked("it is the host's root".into()));
    }
    for root in BLOCKED_ROOTS {
        if resolved.starts_with(root) {
            return Err(blocked(format!("it is under {root}")));
        }
    }
    let names: Vec<String> = resolved
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    for name in &names {
        if let Some(why) = blocked_name(name) {
            return Err(blocked(why));
        }
    }
    for suffix in BLOCKED_SUFFIXES {
        if names
            .windows(suffix.len())
            .any(|w| w.iter().map(String::as_str).eq(suffix.iter().copied()))
        {
            return Err(blocked(format!("`{}` holds credentials", suffix.join("/"))));
        }
    }
    // A directory that directly holds a credential store (a home
    // directory with .ssh, say) would expose it.
    if resolved.is_dir()
        && let Ok(entries) = std::fs::read_dir(&resolved)
    {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(why) = blocked_name(&name) {
                return Err(blocked(format!("it contains {why}")));
            }
            if name == ".config" && entry.path().join("gcloud").exists() {
                return Err(blocked("it contains `.config/gcloud`".into()));
            }
        }
    }
    Ok(ExtraMount {
        host_path: resolved,
        container_path: container_path.to_string(),
        writable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_system_trees_and_links_to_them_are_blocked() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let data = base.join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("report.csv"), "a,b").unwrap();
        let ok = screen(&data, "/data", false).unwrap();
        assert_eq!(ok.host_path, data);
        assert_eq!(ok.bind(), format!("{}:/data:ro", data.display()));

        let home = base.join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::write(home.join(".ssh/id_ed25519"), "k").unwrap();
        let e = screen(&home, "/home", false).unwrap_err();
        assert!(e.to_string().contains("contains `.ssh`"), "{e}");
        let e = screen(&home.join(".ssh"), "/keys", false).unwrap_err();
        assert!(matches!(e, MountError::Blocked { .. }), "{e}");

        // A symlink is judged by where it leads.
        std::os::unix::fs::symlink(home.join(".ssh"), base.join("innocent")).unwrap();
        let e = screen(&base.join("innocent"), "/x", false).unwrap_err();
        assert!(e.to_string().contains(".ssh"), "{e}");

        std::fs::write(base.join("server.pem"), "k").unwrap();
        assert!(screen(&base.join("server.pem"), "/cert", false).is_err());
        std::fs::create_dir_all(base.join("u/.config/gcloud")).unwrap();
        assert!(screen(&base.join("u/.config/gcloud"), "/g", false).is_err());

        for system in ["/", "/etc", "/proc/self", "/var/run"] {
            assert!(screen(Path::new(system), "/x", false).is_err(), "{system}");
        }
        assert!(matches!(
            screen(&base.join("missing"), "/x", false),
            Err(MountError::Unresolvable { .. })
        ));
        for target in [
            "relative",
            "/",
            "/workspace",
            "/workspace/sub",
            "/run/corral",
            "/a/../b",
        ] {
            assert!(
                matches!(screen(&data, target, false), Err(MountError::BadTarget(_))),
                "{target}"
            );
        }
    }
}
