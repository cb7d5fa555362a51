//! Descriptor-relative file calls that never follow a link and never leave
//! the directory they start from: every place where Corral's host works in
//! a directory an agent can change (its workspace, what it leaves in its
//! socket directory) goes through here, and this is the one file of the
//! host with those system calls.
//!
//! An agent can change its workspace from inside its container while the
//! host works in it, so a path that was checked can be swapped for a link
//! before it is used. Every open here is `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV` and `O_NONBLOCK`: a link met anywhere on the way fails
//! the call instead of being followed, and opening a FIFO or a device
//! cannot block.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn cpath(path: &str) -> io::Result<CString> {
    let path = if path.is_empty() { "." } else { path };
    CString::new(path).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The kernel's `struct open_how` (libc's is non-exhaustive, so it cannot
/// be built here).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` beneath `dir` (`""` is `dir` itself) with `flags`
/// (`O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK` are always added).
pub fn open(dir: &OwnedFd, path: &str, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let c = cpath(path)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK) as u64,
        mode: if flags & libc::O_CREAT != 0 {
            u64::from(mode)
        } else {
            0
        },
        resolve: libc::RESOLVE_BENEATH
            | libc::RESOLVE_NO_SYMLINKS
            | libc::RESOLVE_NO_MAGICLINKS
            | libc::RESOLVE_NO_XDEV,
    };
    // SAFETY: `c` is NUL-terminated and `how` is a valid `open_how` of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Opens the directory `path` beneath `dir`.
pub fn open_dir(dir: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    open(dir, path, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Opens the absolute directory `path` (the workspace root itself, which
/// the host chose) without following a final link.
pub fn open_root(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `c` is NUL-terminated.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstat`.
pub fn stat(fd: &OwnedFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is written by the kernel before it is read.
    check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat returned 0, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// `fstatat` of the entry `name` in `dir`, not following it.
pub fn stat_entry(dir: &OwnedFd, name: &str) -> io::Result<libc::stat> {
    let c = cpath(name)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `c` is NUL-terminated; `st` is written by the kernel before it is read.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT,
        )
    })?;
    // SAFETY: fstatat returned 0, so it filled `st`.
    Ok(unsafe { st.assume_init() })
}

/// The target of the link `name` in `dir`.
pub fn read_link(dir: &OwnedFd, name: &str) -> io::Result<String> {
    let c = cpath(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `buf` has the length passed, and readlinkat writes at most that.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    String::from_utf8(buf)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "link target is not UTF-8"))
}

/// `mkdirat` of `name` in `dir` (mode 0777 less the umask); an existing
/// entry is left for the next open to judge.
pub fn make_dir(dir: &OwnedFd, name: &str) -> io::Result<()> {
    make_dir_mode(dir, name, 0o777)
}

/// `mkdirat` of `name` in `dir` with `mode`; an existing entry is left for
/// the next open to judge.
pub fn make_dir_mode(dir: &OwnedFd, name: &str, mode: libc::mode_t) -> io::Result<()> {
    let c = cpath(name)?;
    // SAFETY: `c` is NUL-terminated.
    match check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) }) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// `unlinkat` of `name` in `dir` (a directory with `AT_REMOVEDIR`).
pub fn remove(dir: &OwnedFd, name: &str, is_dir: bool) -> io::Result<()> {
    let c = cpath(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `c` is NUL-terminated; unlinkat never follows links.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })
}

/// `ftruncate`.
pub fn truncate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::other("length too large"))?;
    // SAFETY: a plain syscall on a descriptor the caller owns.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })
}

/// What kind of file `st` describes, for messages.
pub fn kind_name(st: &libc::stat) -> &'static str {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "an unknown kind of file",
    }
}

/// Whether `st` is of `kind` (`libc::S_IFREG`, `S_IFDIR`, …).
pub fn is(st: &libc::stat, kind: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == kind
}

/// `fchown` and `fchmod` of an opened file or directory.
pub fn own(fd: &OwnedFd, uid: u32, gid: u32, mode: Option<libc::mode_t>) -> io::Result<()> {
    // SAFETY: plain syscalls on a descriptor the caller owns.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })?;
    if let Some(mode) = mode {
        // SAFETY: as above.
        check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })?;
    }
    Ok(())
}

/// Gives the entry `name` in `dir` to `uid:gid`, the entry itself if it
/// is a link (`fchownat` with `AT_SYMLINK_NOFOLLOW`).
pub fn own_entry(dir: &OwnedFd, name: &str, uid: u32, gid: u32) -> io::Result<()> {
    let c = cpath(name)?;
    // SAFETY: `c` is NUL-terminated; the flag keeps a link from being followed.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            c.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Sets the mode of the entry `name` in `dir`. Linux's `fchmodat` follows
/// a final link (it has no flag against it before `fchmodat2`), so the
/// entry is checked first and must not be a link; call it only in a
/// directory nobody else can change.
pub fn chmod_entry(dir: &OwnedFd, name: &str, mode: libc::mode_t) -> io::Result<()> {
    if is(&stat_entry(dir, name)?, libc::S_IFLNK) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a symbolic link",
        ));
    }
    let c = cpath(name)?;
    // SAFETY: `c` is NUL-terminated.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode, 0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_link_is_followed_anywhere_on_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("f"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
        std::os::unix::fs::symlink("sub", dir.path().join("inside")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/g"), "y").unwrap();
        let root = open_root(dir.path()).unwrap();
        for path in ["out/f", "inside/g", "out", "../x"] {
            assert!(open(&root, path, libc::O_RDONLY, 0).is_err(), "{path}");
        }
        assert!(open(&root, "sub/g", libc::O_RDONLY, 0).is_ok());
    }

    #[test]
    fn a_fifo_opens_without_blocking_and_says_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let c = CString::new(dir.path().join("p").to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let root = open_root(dir.path()).unwrap();
        let fd = open(&root, "p", libc::O_RDONLY, 0).unwrap();
        assert_eq!(kind_name(&stat(&fd).unwrap()), "a FIFO");
    }
}
