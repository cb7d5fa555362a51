//! The host side of `corral:tool/workspace`: path rules and the file
//! operations themselves.
//!
//! A path reaches the disk in three steps, and the gate decides on the
//! path that will really be touched, not on the path as written:
//!
//! 1. [`normalize`] checks the path lexically: absolute paths and `..` are
//!    refused before anything else happens.
//! 2. [`Workspace::resolve`] follows links inside the workspace to the
//!    canonical, workspace-relative path (`notes/dotlink` that points at
//!    `../.env` resolves to `.env`); a link that leads outside, by an
//!    absolute target or by climbing above the root, is refused. Only
//!    `lstat` and `readlink` run here: nothing is opened, read or created.
//! 3. After the gate has said yes to the canonical path, the operation
//!    opens exactly that path with [`crate::beneath`], which follows no link
//!    at all: if the agent swaps a link in after step 2, the operation
//!    fails instead of going where the link points.
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

use crate::beneath;

/// The longest path a tool may name, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// The most entries one `list-dir` returns.
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// The most links one path may pass through, as the kernel's own limit.
const MAX_LINK_HOPS: usize = 40;

/// Why a workspace operation failed; mirrors WIT `fs-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsFailure {
    Denied(Denial),
    InvalidPath(String),
    NotFound(String),
    WrongKind(String),
    TooLarge(u64),
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

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
fn split_last(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl Workspace {
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

    /// The canonical workspace-relative path that `path` (normalized)
    /// touches: links inside the workspace followed (the last component
    /// too when `follow_last`), a link that leads outside refused. Parts
    /// that do not exist yet are kept as written.
    pub fn resolve(&mut self, path: &str, follow_last: bool) -> Result<String, FsFailure> {
        let dir = self.dir()?;
        let mut todo: VecDeque<String> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        let mut missing = false;
        while let Some(part) = todo.pop_front() {
            match part.as_str() {
                "" | "." => continue,
                ".." if missing => {
                    return Err(FsFailure::NotFound(format!(
                        "`{path}` goes through `{}`, which does not exist",
                        done.join("/")
                    )));
                }
                ".." => {
                    if done.pop().is_none() {
                        return Err(outside(path));
                    }
                    continue;
                }
                _ => {}
            }
            let here = join(&done, &part);
            if missing {
                done.push(part);
                continue;
            }
            let st = match beneath::stat_entry(dir, &here) {
                Ok(st) => st,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing = true;
                    done.push(part);
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
                let target = beneath::read_link(dir, &here).map_err(|e| map_io(e, &here))?;
                if target.starts_with('/') {
                    return Err(outside(path));
                }
                for t in target.split('/').rev() {
                    todo.push_front(t.to_string());
                }
                continue;
            }
            done.push(part);
        }
        Ok(done.join("/"))
    }

    /// Reads the regular file at the canonical `path`.
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, FsFailure> {
        let limit = self.max_file_bytes;
        let fd = beneath::open(self.dir()?, path, libc::O_RDONLY | libc::O_NOCTTY, 0)
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

    /// Writes `contents` to the canonical `path`, creating missing parent
    /// directories.
    pub fn write(&mut self, path: &str, contents: &[u8]) -> Result<(), FsFailure> {
        if path.is_empty() {
            return Err(FsFailure::WrongKind(
                "the workspace root is a directory".into(),
            ));
        }
        if contents.len() as u64 > self.max_file_bytes {
            return Err(FsFailure::TooLarge(contents.len() as u64));
        }
        let (parent, name) = split_last(path);
        let parent_fd = self.make_dirs(parent)?;
        let fd = beneath::open(
            &parent_fd,
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

    /// Opens the directory `path`, creating what is missing of it.
    fn make_dirs(&mut self, path: &str) -> Result<OwnedFd, FsFailure> {
        let root = self.dir()?;
        let mut fd = beneath::open_dir(root, "").map_err(|e| map_io(e, ""))?;
        let mut done = Vec::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            done.push(part);
            let here = done.join("/");
            beneath::make_dir(&fd, part).map_err(|e| map_io(e, &here))?;
            fd = beneath::open_dir(&fd, part).map_err(|e| map_io(e, &here))?;
        }
        Ok(fd)
    }

    pub fn list(&mut self, path: &str) -> Result<Vec<(String, Kind, u64)>, FsFailure> {
        let fd =
            beneath::open(self.dir()?, path, libc::O_RDONLY, 0).map_err(|e| map_io(e, path))?;
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

    /// The entry at the canonical `path` itself (a link is not followed).
    pub fn stat(&mut self, path: &str) -> Result<(Kind, u64, Option<u64>), FsFailure> {
        let st = if path.is_empty() {
            beneath::stat(self.dir()?)
        } else {
            let (parent, name) = split_last(path);
            let parent_fd =
                beneath::open_dir(self.dir()?, parent).map_err(|e| map_io(e, parent))?;
            beneath::stat_entry(&parent_fd, name)
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
            .map(|s| s * 1000 + st.st_mtime_nsec as u64 / 1_000_000);
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

    /// Removes the entry at the canonical `path` (a link, not its target).
    pub fn remove(&mut self, path: &str) -> Result<(), FsFailure> {
        if path.is_empty() {
            return Err(FsFailure::Denied(Denial::new(
                "the workspace root cannot be removed",
            )));
        }
        let (parent, name) = split_last(path);
        let parent_fd = beneath::open_dir(self.dir()?, parent).map_err(|e| map_io(e, parent))?;
        let st = beneath::stat_entry(&parent_fd, name).map_err(|e| map_io(e, path))?;
        beneath::remove(&parent_fd, name, beneath::is(&st, libc::S_IFDIR))
            .map_err(|e| map_io(e, path))
    }
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
    File,
    Directory,
    Symlink,
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
