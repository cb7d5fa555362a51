//! File systems of their own for what an agent shares with the host.
//!
//! An agent's workspace is a bind mount of a host directory, so without
//! more an agent could fill the file system that also holds the audit log
//! (after which every call is refused, since no decision can be
//! recorded). So each workspace is its own ext4 file system, in an image
//! file whose blocks are all allocated when it is made: the agent's own
//! writes and its tools' writes both land there, are bounded by its size,
//! and the space is the agent's from the start, so it can never be taken
//! from the log. The agents' socket directories live on a small tmpfs.
//!
//! A second gain: `/proc/self/mountinfo` in a container shows each mount's
//! path inside its own file system. On a file system of its own the
//! workspace shows as `/` and the socket directory as `/<agent>`, so the
//! container learns nothing of the host's directory layout.
//!
//! Mounting needs root, `mkfs.ext4` and loop devices.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why an agent's file system could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DiskError {
    /// The image, mount point or directory concerned.
    pub path: PathBuf,
    /// What failed, and how.
    pub message: String,
}

fn err(path: &Path, message: impl Into<String>) -> DiskError {
    DiskError {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount's root inside its file system.
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Its file system type.
    pub fs_type: String,
    /// Its source (a device, or the file system's name).
    pub source: String,
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`; names
/// are bytes, not necessarily UTF-8.
fn unescape(field: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8) + (b - b'0')));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

fn text(field: &[u8]) -> String {
    unescape(field).to_string_lossy().into_owned()
}

/// Parses mountinfo.
pub fn parse_mountinfo(bytes: &[u8]) -> Vec<MountEntry> {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let sep = line.windows(3).position(|w| w == b" - ")?;
            let left: Vec<&[u8]> = line[..sep].split(|b| *b == b' ').collect();
            let mut right = line[sep + 3..].split(|b| *b == b' ');
            Some(MountEntry {
                root: text(left.get(3)?),
                mount_point: unescape(left.get(4)?),
                fs_type: text(right.next()?),
                source: text(right.next()?),
            })
        })
        .collect()
}

/// This process's mounts. Unreadable mountinfo reads as no mounts, which
/// makes every mount step try to mount and fail loudly, never skip.
pub fn mounts() -> Vec<MountEntry> {
    std::fs::read("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default()
}

/// The last mount at `path`, if `path` is a mount point.
fn mount_at(path: &Path) -> Option<MountEntry> {
    mounts().into_iter().rev().find(|m| m.mount_point == path)
}

fn run(cmd: &mut Command, path: &Path) -> Result<String, DiskError> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| err(path, format!("cannot run {shown}: {e}")))?;
    if !out.status.success() {
        return Err(err(
            path,
            format!(
                "{shown} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A file system this process mounted; unmounted when dropped.
#[derive(Debug)]
pub struct Mounted {
    at: PathBuf,
}

impl Mounted {
    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.at
    }

    /// Leaves it mounted: a container that could not be stopped still
    /// uses it, and the next start takes it over as it is.
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Lazy: a container that has not quite gone keeps it until it does.
        let done = Command::new("umount").arg("-l").arg(&self.at).output();
        if !done.is_ok_and(|o| o.status.success()) {
            tracing::warn!(path = %self.at.display(), "could not unmount");
        }
    }
}

/// Mounts a fresh tmpfs of `bytes` at `dir` (mode 0700) for the agents'
/// socket directories, unless one is already there (left by a host that
/// was killed), which is used as it is.
pub fn socket_tmpfs(dir: &Path, bytes: u64) -> Result<Mounted, DiskError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create: {e}")))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| err(dir, format!("cannot resolve: {e}")))?;
    match mount_at(&dir) {
        Some(m) if m.fs_type == "tmpfs" => return Ok(Mounted { at: dir }),
        Some(m) => {
            return Err(err(
                &dir,
                format!(
                    "is already a mount point of {} ({}); unmount it and start again",
                    m.source, m.fs_type
                ),
            ));
        }
        None => {}
    }
    run(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("mode=0700,size={bytes},nosuid,nodev,noexec"))
            .arg("corral-sockets")
            .arg(&dir),
        &dir,
    )?;
    Ok(Mounted { at: dir })
}

/// An agent's workspace, on a file system of its own.
pub struct AgentDisk {
    /// The image file; all its blocks allocated.
    pub image: PathBuf,
    /// How large the file system is.
    pub bytes: u64,
}

impl AgentDisk {
    /// Makes the image if it is missing (allocated in full, so the space
    /// is reserved now or the agent does not start) and mounts it at
    /// `workspace`. What the workspace held before is copied in first and
    /// the old directory kept beside it as `<workspace>.before-disk`, so
    /// nothing is lost. A workspace already mounted from this image (a
    /// host that was killed) is used as it is. `may_copy` is false while
    /// anything else may be changing the workspace (a container left from
    /// an earlier start): then a workspace with content is refused rather
    /// than copied.
    pub fn mount(&self, workspace: &Path, may_copy: bool) -> Result<Mounted, DiskError> {
        std::fs::create_dir_all(workspace)
            .map_err(|e| err(workspace, format!("cannot create: {e}")))?;
        let workspace = workspace
            .canonicalize()
            .map_err(|e| err(workspace, format!("cannot resolve: {e}")))?;
        if let Some(m) = mount_at(&workspace) {
            let attached = run(
                Command::new("losetup").arg("-j").arg(&self.image),
                &self.image,
            )
            .unwrap_or_default();
            if attached
                .lines()
                .any(|l| l.split(':').next() == Some(m.source.as_str()))
            {
                return Ok(Mounted { at: workspace });
            }
            return Err(err(
                &workspace,
                format!(
                    "is already a mount point of {} ({}), not of the agent's disk {}; unmount it and start again",
                    m.source,
                    m.fs_type,
                    self.image.display()
                ),
            ));
        }
        // An image still attached but not mounted here was unmounted while
        // a container held it: mounting it a second time would give two
        // ext4 instances one set of blocks.
        let attached = run(
            Command::new("losetup").arg("-j").arg(&self.image),
            &self.image,
        )?;
        if let Some(device) = attached.lines().next().and_then(|l| l.split(':').next()) {
            return Err(err(
                &self.image,
                format!(
                    "the agent's disk is still attached to {device}, held by a container from an earlier start; \
                     remove that container (`corral agents stop AGENT`) and start again"
                ),
            ));
        }
        if !self.image.exists() {
            self.create()?;
        }
        let has_content = std::fs::read_dir(&workspace)
            .map_err(|e| err(&workspace, format!("cannot read: {e}")))?
            .next()
            .is_some();
        if has_content && !may_copy {
            return Err(err(
                &workspace,
                "holds files to move onto the agent's own disk, but a container of this agent from an earlier start \
                 still exists and could change them while they are copied; remove it (`corral agents stop AGENT`) and start again",
            ));
        }
        if has_content {
            self.move_in(&workspace)?;
        }
        self.mount_image(workspace)
    }

    /// Mounts the image at `at` (a loop device, no setuid, no devices).
    fn mount_image(&self, at: PathBuf) -> Result<Mounted, DiskError> {
        run(
            Command::new("mount")
                .args(["-t", "ext4", "-o", "loop,nosuid,nodev"])
                .arg(&self.image)
                .arg(&at),
            &at,
        )?;
        Ok(Mounted { at })
    }

    fn create(&self) -> Result<(), DiskError> {
        let image = &self.image;
        if let Some(dir) = image.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(dir, format!("cannot create: {e}")))?;
        }
        let partial = image.with_extension("img.partial");
        let file = std::fs::File::create(&partial)
            .map_err(|e| err(&partial, format!("cannot create: {e}")))?;
        let len = libc::off_t::try_from(self.bytes)
            .map_err(|_| err(image, "the disk size is too large"))?;
        // SAFETY: a plain syscall on a file this function owns.
        let rc = unsafe { libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(&file), 0, len) };
        if rc != 0 {
            let _ = std::fs::remove_file(&partial);
            return Err(err(
                image,
                format!(
                    "cannot reserve {} MiB for the agent's disk: {}; free space on this file system or lower disk_mib",
                    self.bytes >> 20,
                    std::io::Error::from_raw_os_error(rc)
                ),
            ));
        }
        drop(file);
        run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-m", "0", "-L", "corral-agent"])
                .arg(&partial),
            &partial,
        )?;
        std::fs::rename(&partial, image).map_err(|e| err(image, format!("cannot rename: {e}")))
    }

    /// Copies what `workspace` holds into the image and keeps the old
    /// directory beside it.
    fn move_in(&self, workspace: &Path) -> Result<(), DiskError> {
        let staging = self.image.with_extension("mnt");
        std::fs::create_dir_all(&staging)
            .map_err(|e| err(&staging, format!("cannot create: {e}")))?;
        let staged = self.mount_image(staging)?;
        // -a keeps links as links: nothing the agent planted is followed.
        let mut source = workspace.as_os_str().to_owned();
        source.push("/.");
        run(
            Command::new("cp").arg("-a").arg(source).arg(staged.path()),
            workspace,
        )?;
        drop(staged);
        let mut kept = workspace.as_os_str().to_owned();
        kept.push(".before-disk");
        let kept = PathBuf::from(kept);
        std::fs::rename(workspace, &kept)
            .map_err(|e| err(workspace, format!("cannot move it aside: {e}")))?;
        std::fs::create_dir(workspace)
            .map_err(|e| err(workspace, format!("cannot create: {e}")))?;
        let _ = writeln!(
            std::io::stderr(),
            "corral: moved {} onto the agent's own disk {}; the old directory is kept as {}",
            workspace.display(),
            self.image.display(),
            kept.display()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_read_with_their_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 36 0:40 / /run/corral rw - tmpfs corral-sockets rw,size=1024k\n\
                    41 36 0:41 / /w/agenté rw - ext4 /dev/loop0 rw\n\
                    42 36 0:42 / /w/\\12é\\ rw - ext4 /dev/loop1 rw\n";
        let m = parse_mountinfo(text.as_bytes());
        assert_eq!(m[2].mount_point, PathBuf::from("/w/agenté"));
        assert_eq!(
            m[3].mount_point,
            PathBuf::from("/w/\\12é\\"),
            "a short escape stays as it is"
        );
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[0].root, "/mnt1");
        assert_eq!(m[0].fs_type, "ext3");
        assert_eq!(m[1].source, "corral-sockets");
    }
}
