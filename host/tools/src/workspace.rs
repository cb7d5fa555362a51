//! The host side of `corral:tool/workspace`: path rules and the file
//! operations themselves.
//!
//! Two independent fences keep a tool inside its workspace. First, paths
//! are checked lexically: absolute paths and `..` are refused before
//! anything else happens, so a refusal never depends on what exists on
//! disk. Second, every operation goes through a `cap_std::fs::Dir` opened
//! on the workspace root, which resolves each component relative to that
//! directory and refuses any symlink that leads outside it; so a link
//! planted inside the workspace cannot be used to reach out.

use std::io;
use std::path::PathBuf;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use corral_gate::Denial;

/// The longest path a tool may name, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// The most entries one `list-dir` returns.
pub const MAX_LIST_ENTRIES: usize = 10_000;

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
    dir: Option<Dir>,
    max_file_bytes: u64,
}

fn for_cap_std(path: &str) -> &str {
    if path.is_empty() { "." } else { path }
}

impl Workspace {
    pub fn new(root: PathBuf, max_file_bytes: u64) -> Self {
        Workspace {
            root,
            dir: None,
            max_file_bytes,
        }
    }

    fn dir(&mut self) -> Result<&Dir, FsFailure> {
        if self.dir.is_none() {
            let dir = Dir::open_ambient_dir(&self.root, ambient_authority()).map_err(|e| {
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

    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, FsFailure> {
        let limit = self.max_file_bytes;
        let dir = self.dir()?;
        let meta = dir
            .metadata(for_cap_std(path))
            .map_err(|e| map_io(e, path))?;
        if meta.is_dir() {
            return Err(FsFailure::WrongKind(format!(
                "`{path}` is a directory, not a file"
            )));
        }
        if meta.len() > limit {
            return Err(FsFailure::TooLarge(meta.len()));
        }
        dir.read(for_cap_std(path)).map_err(|e| map_io(e, path))
    }

    pub fn write(&mut self, path: &str, contents: &[u8]) -> Result<(), FsFailure> {
        if path.is_empty() {
            return Err(FsFailure::WrongKind(
                "the workspace root is a directory".into(),
            ));
        }
        if contents.len() as u64 > self.max_file_bytes {
            return Err(FsFailure::TooLarge(contents.len() as u64));
        }
        let dir = self.dir()?;
        if let Some((parent, _)) = path.rsplit_once('/') {
            // Resolve the parent through the sandbox first: an escaping
            // symlink on the way is reported as such, and only a parent
            // that is truly missing gets created.
            match dir.metadata(parent) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(FsFailure::WrongKind(format!(
                        "`{parent}` is not a directory"
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    dir.create_dir_all(parent).map_err(|e| map_io(e, parent))?;
                }
                Err(e) => return Err(map_io(e, parent)),
            }
        }
        dir.write(path, contents).map_err(|e| map_io(e, path))
    }

    pub fn list(&mut self, path: &str) -> Result<Vec<(String, Kind, u64)>, FsFailure> {
        let dir = self.dir()?;
        let meta = dir
            .metadata(for_cap_std(path))
            .map_err(|e| map_io(e, path))?;
        if !meta.is_dir() {
            return Err(FsFailure::WrongKind(format!(
                "`{path}` is a file, not a directory"
            )));
        }
        let mut out = Vec::new();
        for entry in dir
            .read_dir(for_cap_std(path))
            .map_err(|e| map_io(e, path))?
        {
            let entry = entry.map_err(|e| map_io(e, path))?;
            if out.len() == MAX_LIST_ENTRIES {
                return Err(FsFailure::Io(format!(
                    "`{path}` has more than {MAX_LIST_ENTRIES} entries; list a subdirectory"
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

    pub fn stat(&mut self, path: &str) -> Result<(Kind, u64, Option<u64>), FsFailure> {
        let dir = self.dir()?;
        let meta = dir
            .symlink_metadata(for_cap_std(path))
            .map_err(|e| map_io(e, path))?;
        let kind = Kind::from(meta.file_type());
        let modified = meta
            .modified()
            .ok()
            .map(|t| t.into_std())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64);
        Ok((
            kind,
            if kind == Kind::File { meta.len() } else { 0 },
            modified,
        ))
    }

    pub fn remove(&mut self, path: &str) -> Result<(), FsFailure> {
        if path.is_empty() {
            return Err(FsFailure::Denied(Denial::new(
                "the workspace root cannot be removed",
            )));
        }
        let dir = self.dir()?;
        let meta = dir.symlink_metadata(path).map_err(|e| map_io(e, path))?;
        if meta.is_dir() {
            dir.remove_dir(path).map_err(|e| map_io(e, path))
        } else {
            dir.remove_file(path).map_err(|e| map_io(e, path))
        }
    }
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
    let shown = if path.is_empty() { "." } else { path };
    match e.kind() {
        io::ErrorKind::NotFound => FsFailure::NotFound(format!("`{shown}` does not exist")),
        // cap-std reports a path that resolves outside the directory (an
        // escaping symlink) as PermissionDenied; say what actually happened.
        io::ErrorKind::PermissionDenied if e.to_string().contains("outside") => {
            FsFailure::Denied(Denial::new(format!(
                "`{shown}` resolves outside the workspace (through a symlink)"
            )))
        }
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
