//! The host side of `corral:tool/workspace`: path rules and the file
//! operations themselves.
//!
//! A path reaches the disk in three steps, and the gate decides on the
//! path that will really be touched, not on the path as written:
//!
//! 1. [`normalize`] checks the path lexically: absolute paths and `..` are
//!    refused before anything else happens.
//! 2. [`Workspace::resolve`] walks the path one component at a time, each
//!    looked up (`fstatat`, `readlinkat`) in the directory opened for the
//!    one before, following links inside the workspace to the canonical,
//!    workspace-relative path (`notes/dotlink` that points at `../.env`
//!    resolves to `.env`); a link that leads outside, by an absolute
//!    target or by climbing above the root, is refused. Directories are
//!    opened; nothing is read, written or created.
//! 3. After the gate has said yes to the canonical path, the operation
//!    works in the directory the walk opened, with [`corral_fd`],
//!    which follows no link at all: a directory renamed or replaced by a
//!    link after step 2 is not the one used, and a link swapped in for the
//!    last component fails the call. What stays name-based is that last
//!    component: an entry renamed into its place between the decision and
//!    the open is the one opened, within the same directory.
//!
//! Only regular files and directories are used. A FIFO, socket or device
//! is refused (opened without blocking, so it cannot hold the call), and a
//! read takes at most the size cap plus one byte. A regular file with more
//! than one hard link is refused for reading and writing: its other names
//! may be outside the workspace, where neither the agent nor its policy
//! should reach.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use corral_gate::Denial;

use corral_fd as beneath;

/// The longest path a tool may name, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// The most entries one `list-dir` returns.
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// The most links one path may pass through, as the kernel's own limit.
const MAX_LINK_HOPS: usize = 40;

/// Why a workspace operation failed; mirrors WIT `fs-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsFailure {
    /// The gate refused.
    Denied(Denial),
    /// The path is absolute, climbs out, or leads outside the workspace.
    InvalidPath(String),
    /// Nothing is there.
    NotFound(String),
    /// A file where a directory was needed, or the other way round.
    WrongKind(String),
    /// Larger than the call's file limit, in bytes.
    TooLarge(u64),
    /// The system refused, and why.
    Io(String),
}

/// Checks a guest-supplied path and returns it normalized: relative,
/// `/`-separated, with `.` and empty components removed (`""` is the root).
pub fn normalize(path: &str) -> Result<String, FsFailure> {
    if path.len() > MAX_PATH_BYTES {
        return Err(FsFailure::InvalidPath(format!(
            "path is {} bytes long; the limit is {MAX_PATH_BYTES}",
            path.len()
        )));
    }
    if path.contains('\0') {
        return Err(FsFailure::InvalidPath("path contains a NUL byte".into()));
    }
    if path.starts_with('/') {
        return Err(FsFailure::Denied(Denial::new(format!(
            "absolute path `{path}` is outside the workspace; use a path relative to the workspace root"
        ))));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(FsFailure::Denied(Denial::new(format!(
                    "path `{path}` uses `..` and would leave the workspace"
                ))));
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// An opened workspace. Opening is deferred to the first operation so that
/// calls that never touch files pay nothing.
pub struct Workspace {
    root: PathBuf,
    dir: Option<OwnedFd>,
    max_file_bytes: u64,
}

fn join(done: &[String], name: &str) -> String {
    let mut p = done.join("/");
    if !p.is_empty() {
        p.push('/');
    }
    p.push_str(name);
    p
}

impl Workspace {
    /// The workspace at `root`, with files capped at `max_file_bytes`.
    pub fn new(root: PathBuf, max_file_bytes: u64) -> Self {
        Workspace {
            root,
            dir: None,
            max_file_bytes,
        }
    }

    fn dir(&mut self) -> Result<&OwnedFd, FsFailure> {
        if self.dir.is_none() {
            let dir = beneath::open_root(&self.root).map_err(|e| {
                FsFailure::Io(format!(
                    "cannot open workspace {}: {e}",
                    self.root.display()
                ))
            })?;
            self.dir = Some(dir);
        }
        // The branch above filled it.
        self.dir
            .as_ref()
            .ok_or_else(|| FsFailure::Io("workspace not open".into()))
    }

    /// Resolves `path` (normalized) to what an operation will touch, one
    /// component at a time, each looked up in the directory opened for the
    /// component before it: links inside the workspace are followed (the
    /// last one too when `follow_last`), a link that leads outside is
    /// refused. The result holds the canonical workspace-relative path,
    /// for the gate and the record, and the opened directory the
    /// operation will work in, so that a directory renamed or replaced
    /// after the decision is not the one used.
    pub fn resolve(&mut self, path: &str, follow_last: bool) -> Result<Resolved, FsFailure> {
        let root = self.dir()?;
        let mut todo: VecDeque<String> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        // `done[i]` was opened as `dirs[i + 1]`; `dirs[0]` is the root.
        let mut done: Vec<String> = Vec::new();
        let mut dirs: Vec<OwnedFd> = vec![beneath::open_dir(root, "").map_err(|e| map_io(e, ""))?];
        let mut rest: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = todo.pop_front() {
            match part.as_str() {
                "" | "." => continue,
                ".." if !rest.is_empty() => {
                    return Err(FsFailure::NotFound(format!(
                        "`{path}` goes through `{}`, which does not exist",
                        join(&done, &rest.join("/"))
                    )));
                }
                ".." => {
                    if done.pop().is_none() {
                        return Err(outside(path));
                    }
                    dirs.pop();
                    continue;
                }
                _ => {}
            }
            if !rest.is_empty() {
                rest.push(part);
                continue;
            }
            let here = join(&done, &part);
            let parent = dirs.last().ok_or_else(|| outside(path))?;
            let st = match beneath::stat_entry(parent, &part) {
                Ok(st) => st,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    rest.push(part);
                    continue;
                }
                Err(e) => return Err(map_io(e, &here)),
            };
            let last = todo.is_empty();
            if beneath::is(&st, libc::S_IFLNK) && (!last || follow_last) {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(FsFailure::Io(format!(
                        "`{path}` passes through more than {MAX_LINK_HOPS} links"
                    )));
                }
                let target = beneath::read_link(parent, &part).map_err(|e| map_io(e, &here))?;
                if target.starts_with('/') {
                    return Err(outside(path));
                }
                for t in target.split('/').rev() {
                    todo.push_front(t.to_string());
                }
                continue;
            }
            if beneath::is(&st, libc::S_IFDIR) && (!last || follow_last) {
                let dir = beneath::open_dir(parent, &part).map_err(|e| map_io(e, &here))?;
                dirs.push(dir);
                done.push(part);
                continue;
            }
            if !last {
                return Err(FsFailure::WrongKind(format!(
                    "a parent of `{path}` is not a directory: `{here}` is {}",
                    beneath::kind_name(&st)
                )));
            }
            rest.push(part);
        }
        let canonical = join(&done, &rest.join("/"));
        let dir = dirs.pop().ok_or_else(|| outside(path))?;
        Ok(Resolved {
            path: canonical.trim_end_matches('/').to_string(),
            dir,
            rest,
        })
    }

    /// Reads the regular file `at` names.
    pub fn read(&mut self, at: &Resolved) -> Result<Vec<u8>, FsFailure> {
        let limit = self.max_file_bytes;
        let path = at.path.as_str();
        if at.rest.is_empty() {
            return Err(FsFailure::WrongKind(format!(
                "`{}` is a directory, not a file",
                shown(path)
            )));
        }
        let fd = beneath::open(
            &at.dir,
            &at.rest.join("/"),
            libc::O_RDONLY | libc::O_NOCTTY,
            0,
        )
        .map_err(|e| map_io(e, path))?;
        let st = beneath::stat(&fd).map_err(|e| map_io(e, path))?;
        usable_file(&st, path)?;
        if st.st_size as u64 > limit {
            return Err(FsFailure::TooLarge(st.st_size as u64));
        }
        let mut out = Vec::with_capacity(st.st_size as usize);
        std::fs::File::from(fd)
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| map_io(e, path))?;
        if out.len() as u64 > limit {
            return Err(FsFailure::TooLarge(out.len() as u64));
        }
        Ok(out)
    }

    /// Writes `contents` to the file `at` names, creating missing parent
    /// directories.
    pub fn write(&mut self, at: &Resolved, contents: &[u8]) -> Result<(), FsFailure> {
        let path = at.path.as_str();
        let Some((name, parents)) = at.rest.split_last() else {
            return Err(FsFailure::WrongKind(format!(
                "`{}` is a directory",
                shown(path)
            )));
        };
        if contents.len() as u64 > self.max_file_bytes {
            return Err(FsFailure::TooLarge(contents.len() as u64));
        }
        let mut dir = beneath::open_dir(&at.dir, "").map_err(|e| map_io(e, path))?;
        for part in parents {
            beneath::make_dir(&dir, part).map_err(|e| map_io(e, path))?;
            dir = beneath::open_dir(&dir, part).map_err(|e| map_io(e, path))?;
        }
        let fd = beneath::open(
            &dir,
            name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_NOCTTY,
            0o666,
        )
        .map_err(|e| map_io(e, path))?;
        let st = beneath::stat(&fd).map_err(|e| map_io(e, path))?;
        usable_file(&st, path)?;
        beneath::truncate(&fd, 0).map_err(|e| map_io(e, path))?;
        std::fs::File::from(fd)
            .write_all(contents)
            .map_err(|e| map_io(e, path))
    }

    /// Lists the directory `at` names.
    pub fn list(&mut self, at: &Resolved) -> Result<Vec<(String, Kind, u64)>, FsFailure> {
        let path = at.path.as_str();
        let fd = if at.rest.is_empty() {
            beneath::open_dir(&at.dir, "")
        } else {
            beneath::open(&at.dir, &at.rest.join("/"), libc::O_RDONLY, 0)
        }
        .map_err(|e| map_io(e, path))?;
        let st = beneath::stat(&fd).map_err(|e| map_io(e, path))?;
        if !beneath::is(&st, libc::S_IFDIR) {
            return Err(FsFailure::WrongKind(format!(
                "`{}` is {}, not a directory",
                shown(path),
                beneath::kind_name(&st)
            )));
        }
        let dir = cap_std::fs::Dir::from_std_file(std::fs::File::from(fd));
        let mut out = Vec::new();
        for entry in dir.entries().map_err(|e| map_io(e, path))? {
            let entry = entry.map_err(|e| map_io(e, path))?;
            if out.len() == MAX_LIST_ENTRIES {
                return Err(FsFailure::Io(format!(
                    "`{}` has more than {MAX_LIST_ENTRIES} entries; list a subdirectory",
                    shown(path)
                )));
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let ft = entry.file_type().map_err(|e| map_io(e, path))?;
            let kind = Kind::from(ft);
            let size = if kind == Kind::File {
                entry.metadata().map(|m| m.len()).unwrap_or(0)
            } else {
                0
            };
            out.push((name, kind, size));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The entry `at` names itself (a link is not followed).
    pub fn stat(&mut self, at: &Resolved) -> Result<(Kind, u64, Option<u64>), FsFailure> {
        let path = at.path.as_str();
        let st = match at.rest.as_slice() {
            [] => beneath::stat(&at.dir),
            [name] => beneath::stat_entry(&at.dir, name),
            _ => {
                return Err(FsFailure::NotFound(format!(
                    "`{}` does not exist",
                    shown(path)
                )));
            }
        }
        .map_err(|e| map_io(e, path))?;
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Directory,
            libc::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        };
        let modified = u64::try_from(st.st_mtime)
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .map(|ms| ms + st.st_mtime_nsec as u64 / 1_000_000);
        Ok((
            kind,
            if kind == Kind::File {
                st.st_size as u64
            } else {
                0
            },
            modified,
        ))
    }

    /// Removes the entry `at` names (a link, not its target).
    pub fn remove(&mut self, at: &Resolved) -> Result<(), FsFailure> {
        let path = at.path.as_str();
        match at.rest.as_slice() {
            [] => Err(FsFailure::Denied(Denial::new(
                "the workspace root cannot be removed",
            ))),
            [name] => {
                let st = beneath::stat_entry(&at.dir, name).map_err(|e| map_io(e, path))?;
                beneath::remove(&at.dir, name, beneath::is(&st, libc::S_IFDIR))
                    .map_err(|e| map_io(e, path))
            }
            _ => Err(FsFailure::NotFound(format!("`{path}` does not exist"))),
        }
    }
}

/// What [`Workspace::resolve`] found: the canonical path and where to act.
pub struct Resolved {
    /// Workspace-relative, links resolved; `""` is the root. What the gate
    /// decides and the record shows.
    pub path: String,
    /// The deepest directory on the path that exists, opened.
    dir: OwnedFd,
    /// The components below `dir`: none when the path is that directory,
    /// one for an entry in it, more when parents are still to be made.
    rest: Vec<String>,
}

fn shown(path: &str) -> &str {
    if path.is_empty() { "." } else { path }
}

fn outside(path: &str) -> FsFailure {
    FsFailure::Denied(Denial::new(format!(
        "`{path}` resolves outside the workspace (through a symlink)"
    )))
}

/// Only a regular file with one name is read or written.
fn usable_file(st: &libc::stat, path: &str) -> Result<(), FsFailure> {
    if beneath::is(st, libc::S_IFDIR) {
        return Err(FsFailure::WrongKind(format!(
            "`{}` is a directory, not a file",
            shown(path)
        )));
    }
    if !beneath::is(st, libc::S_IFREG) {
        return Err(FsFailure::WrongKind(format!(
            "`{path}` is {}; only regular files and directories can be used",
            beneath::kind_name(st)
        )));
    }
    if st.st_nlink > 1 {
        return Err(FsFailure::Denied(Denial::new(format!(
            "`{path}` has {} hard links, and its other names may be outside the workspace; \
             copy it to a file of its own first",
            st.st_nlink
        ))));
    }
    Ok(())
}

/// The kind of a directory entry; mirrors WIT `entry-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (listed, never followed out of the workspace).
    Symlink,
    /// Anything else (a FIFO, a socket, a device).
    Other,
}

impl From<cap_std::fs::FileType> for Kind {
    fn from(ft: cap_std::fs::FileType) -> Self {
        if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Directory
        } else if ft.is_file() {
            Kind::File
        } else {
            Kind::Other
        }
    }
}

fn map_io(e: io::Error, path: &str) -> FsFailure {
    let shown = shown(path);
    match e.raw_os_error() {
        // openat2 met a link, or a mount, that appeared after the path was
        // resolved: the workspace changed under the call.
        Some(libc::ELOOP) | Some(libc::EXDEV) => {
            return FsFailure::Denied(Denial::new(format!(
                "`{shown}` changed while the call used it (a link or mount appeared on the way); try again"
            )));
        }
        Some(libc::ENXIO) => {
            return FsFailure::WrongKind(format!(
                "`{shown}` is not a regular file; only regular files and directories can be used"
            ));
        }
        _ => {}
    }
    match e.kind() {
        io::ErrorKind::NotFound => FsFailure::NotFound(format!("`{shown}` does not exist")),
        io::ErrorKind::PermissionDenied => FsFailure::Denied(Denial::new(format!(
            "the host's file system refused access to `{shown}`"
        ))),
        io::ErrorKind::NotADirectory => {
            FsFailure::WrongKind(format!("a parent of `{shown}` is not a directory"))
        }
        io::ErrorKind::IsADirectory => FsFailure::WrongKind(format!("`{shown}` is a directory")),
        io::ErrorKind::DirectoryNotEmpty => {
            FsFailure::Io(format!("directory `{shown}` is not empty"))
        }
        _ => FsFailure::Io(format!("`{shown}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_accepts_relative_paths() {
        assert_eq!(normalize("").unwrap(), "");
        assert_eq!(normalize(".").unwrap(), "");
        assert_eq!(normalize("a/./b//c").unwrap(), "a/b/c");
        assert_eq!(normalize("notes/today.md").unwrap(), "notes/today.md");
    }

    #[test]
    fn an_operation_uses_the_directory_its_decision_saw() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(ws.path().join("a")).unwrap();
        std::fs::write(ws.path().join("a/f"), "decided").unwrap();
        std::fs::write(outside.path().join("f"), "outside").unwrap();
        let mut w = Workspace::new(ws.path().to_path_buf(), 1 << 20);
        let at = w.resolve("a/f", true).unwrap();
        assert_eq!(at.path, "a/f");
        // After the decision, the agent swaps the directory for a link out.
        std::fs::rename(ws.path().join("a"), ws.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.path().join("a")).unwrap();
        assert_eq!(w.read(&at).unwrap(), b"decided");
        w.write(&at, b"written").unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.path().join("f")).unwrap(),
            "outside"
        );
        // A fresh resolution sees the link and refuses it.
        assert!(matches!(w.resolve("a/f", true), Err(FsFailure::Denied(_))));
    }

    #[test]
    fn links_inside_resolve_to_their_target_and_links_out_are_refused() {
        let ws = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ws.path().join("notes/deep")).unwrap();
        std::os::unix::fs::symlink("../.env", ws.path().join("notes/dotlink")).unwrap();
        std::os::unix::fs::symlink("../../..", ws.path().join("notes/deep/up")).unwrap();
        std::os::unix::fs::symlink("deep", ws.path().join("notes/d")).unwrap();
        let mut w = Workspace::new(ws.path().to_path_buf(), 1 << 20);
        assert_eq!(w.resolve("notes/dotlink", true).unwrap().path, ".env");
        assert_eq!(
            w.resolve("notes/dotlink", false).unwrap().path,
            "notes/dotlink"
        );
        assert_eq!(
            w.resolve("notes/d/new/file", true).unwrap().path,
            "notes/deep/new/file"
        );
        assert!(matches!(
            w.resolve("notes/deep/up/x", true),
            Err(FsFailure::Denied(_))
        ));
    }

    #[test]
    fn normalize_refuses_escapes() {
        for p in ["../x", "a/../../x", "a/..", "/etc/passwd", "/"] {
            assert!(matches!(normalize(p), Err(FsFailure::Denied(_))), "{p}");
        }
        assert!(matches!(normalize("a\0b"), Err(FsFailure::InvalidPath(_))));
        assert!(matches!(
            normalize(&"a".repeat(5000)),
            Err(FsFailure::InvalidPath(_))
        ));
    }
}
