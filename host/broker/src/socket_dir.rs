//! An agent's socket directory, set up so that the agent cannot change it.
//!
//! The directory is bind-mounted into the agent's container, and the host
//! (often root) works on it while that container may still be running.
//! So the directory belongs to the host's user, not the agent's: the agent
//! gets search permission through its group (mode 0710) and write
//! permission on the socket alone, which is all `connect` needs. It can
//! create, rename or remove nothing here, so no link it plants can be
//! followed. Every step still goes through descriptors and no-follow
//! calls, because a directory left by an older Corral may belong to the
//! agent until the first step below takes it back.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

fn cstr(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DirError {
    let what = what.into();
    move |source| DirError::Io { what, source }
}

fn kind(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR | libc::S_IFBLK => "a device",
        _ => "an unknown kind of file",
    }
}

/// `fstatat` without following a final link.
fn stat_at(dir: &OwnedFd, name: &str) -> io::Result<libc::stat> {
    let name = cstr(name)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated and `st` is written by the kernel before it is read.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(rc)?;
    // SAFETY: fstatat returned 0, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is written by the kernel before it is read.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat returned 0, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// Opens the directory `name` under `parent` (or the absolute `path` when
/// `parent` is `None`), never through a link.
fn open_dir(parent: Option<&OwnedFd>, name: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(name.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let at = parent.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `c` is NUL-terminated; the returned descriptor is owned below.
    let fd = unsafe { libc::openat(at, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
    let root_fd =
        open_dir(None, root).map_err(io_err(format!("cannot open {}", root.display())))?;
    let c_name = cstr(name).map_err(io_err("bad directory name"))?;
    match stat_at(&root_fd, name) {
        Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => {
            return Err(DirError::NotADirectory {
                kind: kind(st.st_mode),
            });
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // SAFETY: `c_name` is NUL-terminated.
            check(unsafe { libc::mkdirat(root_fd.as_raw_fd(), c_name.as_ptr(), 0o700) })
                .map_err(io_err("cannot create it"))?;
        }
        Err(e) => return Err(io_err("cannot inspect it")(e)),
    }
    let dir = open_dir(Some(&root_fd), Path::new(name)).map_err(io_err("cannot open it"))?;
    // Taken back before anything else is looked at: from here on only the
    // host can add, rename or remove entries.
    // SAFETY: plain syscalls on a descriptor this function owns.
    let me = unsafe { libc::geteuid() };
    let (gid, mode) = match group {
        // SAFETY: as above.
        Some(gid) => (gid, 0o710),
        None => (unsafe { libc::getegid() }, 0o700),
    };
    // SAFETY: plain syscalls on a descriptor this function owns.
    check(unsafe { libc::fchown(dir.as_raw_fd(), me, gid) })
        .map_err(io_err(format!("cannot give it to uid {me}, gid {gid}")))?;
    // SAFETY: as above.
    check(unsafe { libc::fchmod(dir.as_raw_fd(), mode) })
        .map_err(io_err(format!("cannot set mode {mode:o}")))?;
    let st = fstat(&dir).map_err(io_err("cannot inspect it"))?;
    if st.st_uid != me || st.st_mode & 0o7777 != mode {
        return Err(io_err("its owner or mode did not change")(
            io::Error::other(format!("uid {} mode {:o}", st.st_uid, st.st_mode & 0o7777)),
        ));
    }
    let found = match stat_at(&dir, socket) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFSOCK => {
            let c = cstr(socket).map_err(io_err("bad socket name"))?;
            // SAFETY: `c` is NUL-terminated; unlinkat never follows links.
            check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) })
                .map_err(io_err(format!("cannot remove the old socket `{socket}`")))?;
            Found::StaleSocket
        }
        Ok(st) => {
            return Err(DirError::NotASocket {
                name: socket.to_string(),
                kind: kind(st.st_mode),
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
    let st = stat_at(dir, name).map_err(io_err("cannot inspect the new socket"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(DirError::NotASocket {
            name: name.to_string(),
            kind: kind(st.st_mode),
        });
    }
    let c = cstr(name).map_err(io_err("bad socket name"))?;
    // SAFETY: `c` is NUL-terminated; the final component is not followed
    // (fchmodat ignores links only through flags Linux lacks, so the kind
    // check above and the host-owned directory stand for it).
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), 0o600, 0) })
        .map_err(io_err("cannot set the socket's mode to 0600"))?;
    if let Some((uid, gid)) = owner {
        // SAFETY: as above; AT_SYMLINK_NOFOLLOW keeps a link from being followed.
        check(unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                c.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map_err(io_err(format!(
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
