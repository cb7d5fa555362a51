//! An agent's socket directory, set up so that the agent cannot change it.
//!
//! The directory is bind-mounted into the agent's container, and the host
//! (often root) works on it while that container may still be running.
//! So the directory belongs to the host's user, not the agent's: the agent
//! gets search permission through its group (mode 0710) and write
//! permission on the socket alone, which is all `connect` needs. It can
//! create, rename or remove nothing here, so no link it plants can be
//! followed. Every step still goes through descriptors and no-follow
//! calls (`corral_fd`), because a directory left by an older Corral may
//! belong to the agent until the first step below takes it back.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use corral_fd as fd;

/// What is at the socket's path before the broker binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    Nothing,
    /// A socket left by an earlier broker: removed.
    StaleSocket,
}

/// Why the socket directory could not be made safe.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("is {kind}, not a directory the broker made")]
    NotADirectory { kind: &'static str },
    #[error(
        "`{name}` in it is {kind}, not a socket: something other than the broker put it there; \
         remove it and restart"
    )]
    NotASocket { name: String, kind: &'static str },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DirError {
    let what = what.into();
    move |source| DirError::Io { what, source }
}

/// Makes `<root>/<name>` a directory the agent can enter but not change,
/// and clears the way for its socket. `group` is the agent's gid (`None`:
/// the agent runs as the broker's own user). Returns the directory's
/// descriptor, for [`own_socket`].
pub(crate) fn prepare(
    root: &Path,
    name: &str,
    socket: &str,
    group: Option<u32>,
) -> Result<(OwnedFd, Found), DirError> {
    let root_fd = fd::open_root(root).map_err(io_err(format!("cannot open {}", root.display())))?;
    match fd::stat_entry(&root_fd, name) {
        Ok(st) if !fd::is(&st, libc::S_IFDIR) => {
            return Err(DirError::NotADirectory {
                kind: fd::kind_name(&st),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fd::make_dir_mode(&root_fd, name, 0o700).map_err(io_err("cannot create it"))?;
        }
        Err(e) => return Err(io_err("cannot inspect it")(e)),
    }
    let dir = fd::open_dir(&root_fd, name).map_err(io_err("cannot open it"))?;
    // Taken back before anything else is looked at: from here on only the
    // host can add, rename or remove entries.
    // SAFETY: these only read the process's own ids.
    let (me, my_group) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (gid, mode) = match group {
        Some(gid) => (gid, 0o710),
        None => (my_group, 0o700),
    };
    fd::own(&dir, me, gid, Some(mode)).map_err(io_err(format!(
        "cannot give it to uid {me}, gid {gid}, mode {mode:o}"
    )))?;
    let st = fd::stat(&dir).map_err(io_err("cannot inspect it"))?;
    if st.st_uid != me || st.st_mode & 0o7777 != mode {
        return Err(io_err("its owner or mode did not change")(
            io::Error::other(format!("uid {} mode {:o}", st.st_uid, st.st_mode & 0o7777)),
        ));
    }
    let found = match fd::stat_entry(&dir, socket) {
        Ok(st) if fd::is(&st, libc::S_IFSOCK) => {
            fd::remove(&dir, socket, false)
                .map_err(io_err(format!("cannot remove the old socket `{socket}`")))?;
            Found::StaleSocket
        }
        Ok(st) => {
            return Err(DirError::NotASocket {
                name: socket.to_string(),
                kind: fd::kind_name(&st),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Found::Nothing,
        Err(e) => return Err(io_err(format!("cannot inspect `{socket}`"))(e)),
    };
    Ok((dir, found))
}

/// Gives the freshly bound socket `name` in `dir` mode 0600 and, if asked,
/// to `owner`, without following links. The directory is the host's, so
/// nothing can have replaced the socket; the kind is checked all the same.
pub(crate) fn own_socket(
    dir: &OwnedFd,
    name: &str,
    owner: Option<(u32, u32)>,
) -> Result<(), DirError> {
    let st = fd::stat_entry(dir, name).map_err(io_err("cannot inspect the new socket"))?;
    if !fd::is(&st, libc::S_IFSOCK) {
        return Err(DirError::NotASocket {
            name: name.to_string(),
            kind: fd::kind_name(&st),
        });
    }
    fd::chmod_entry(dir, name, 0o600).map_err(io_err("cannot set the socket's mode to 0600"))?;
    if let Some((uid, gid)) = owner {
        fd::own_entry(dir, name, uid, gid).map_err(io_err(format!(
            "cannot give the socket to uid {uid}, gid {gid}"
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn a_link_at_the_socket_path_is_named_and_its_target_untouched() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a");
        std::fs::create_dir(&dir).unwrap();
        let target = root.path().join("precious");
        std::fs::write(&target, "x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("mcp.sock")).unwrap();
        let err = prepare(root.path(), "a", "mcp.sock", None).unwrap_err();
        assert!(
            err.to_string().contains("a symbolic link, not a socket"),
            "{err}"
        );
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o644);
    }

    #[test]
    fn a_link_in_place_of_the_directory_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join("a")).unwrap();
        let err = prepare(root.path(), "a", "mcp.sock", None).unwrap_err();
        assert!(err.to_string().contains("a symbolic link"), "{err}");
        let mode = std::fs::metadata(elsewhere.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o755, "the link's target kept its mode");
    }

    #[test]
    fn a_stale_socket_is_removed_and_the_directory_taken_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let _old = std::os::unix::net::UnixListener::bind(dir.join("mcp.sock")).unwrap();
        let (_, found) = prepare(root.path(), "a", "mcp.sock", None).unwrap();
        assert_eq!(found, Found::StaleSocket);
        assert!(!dir.join("mcp.sock").exists());
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }
}
