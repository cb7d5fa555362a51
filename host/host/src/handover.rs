//! Handing the agent its own part of its workspace, without following
//! anything the agent planted there.
//!
//! The agent loop keeps its history in `<workspace>/.corral`, written as
//! the container's user, so the host (often root) gives that directory to
//! the agent's uid. The agent can write its workspace, so by now `.corral`
//! may be a link to anywhere: the directory is opened without following a
//! link and changed through that descriptor, so the change can only ever
//! land on a real directory inside the workspace.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use corral_fd as fd;

/// The directory inside a workspace that the agent loop owns.
pub const AGENT_DIR: &str = ".corral";

/// Why `.corral` could not be handed over.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct HandoverError {
    pub path: PathBuf,
    pub message: String,
}

/// Creates `<workspace>/.corral` if missing and gives it to `uid:gid`.
pub fn hand_over(workspace: &Path, uid: u32, gid: u32) -> Result<(), HandoverError> {
    let path = workspace.join(AGENT_DIR);
    let err = |message: String| HandoverError {
        path: path.clone(),
        message,
    };
    let root =
        fd::open_root(workspace).map_err(|e| err(format!("cannot open the workspace: {e}")))?;
    fd::make_dir(&root, AGENT_DIR).map_err(|e| err(format!("cannot create it: {e}")))?;
    let dir = fd::open_dir(&root, AGENT_DIR).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => err(
            "is not a directory (a link or a file, which the agent may have put there); \
             remove it and start again"
                .into(),
        ),
        _ => err(format!("cannot open it: {e}")),
    })?;
    let mut budget = MAX_ENTRIES;
    give(&dir, uid, gid, 0, &mut budget)
        .map_err(|e| err(format!("cannot give it to {uid}:{gid}: {e}")))
}

/// How deep and how many entries [`give`] walks: the agent made the tree,
/// and a host start must not take forever over it.
const MAX_DEPTH: usize = 32;
const MAX_ENTRIES: usize = 100_000;

/// Gives `dir` and everything in it to `uid:gid`, through descriptors:
/// each entry is changed relative to its opened parent without following
/// it, and only real directories are entered. An agent whose uid changed
/// (a host that gave every agent the same one before) keeps its history.
fn give(dir: &OwnedFd, uid: u32, gid: u32, depth: usize, budget: &mut usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    fd::own(dir, uid, gid, None)?;
    if depth == MAX_DEPTH {
        return Err(io::Error::other(format!(
            "deeper than {MAX_DEPTH} directories"
        )));
    }
    // The opened directory itself, not a path that could have changed.
    let listing = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
    for entry in listing {
        let entry = entry?;
        *budget = budget
            .checked_sub(1)
            .ok_or_else(|| io::Error::other(format!("more than {MAX_ENTRIES} entries")))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| io::Error::other("a name that is not UTF-8"))?;
        let st = fd::stat_entry(dir, &name)?;
        // A file with another name somewhere is not the agent's to own: the
        // other name may be a file the host wrote, hard-linked here.
        if fd::is(&st, libc::S_IFREG) && st.st_nlink > 1 {
            continue;
        }
        fd::own_entry(dir, &name, uid, gid)?;
        if fd::is(&st, libc::S_IFDIR) {
            give(&fd::open_dir(dir, &name)?, uid, gid, depth + 1, budget)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_link_in_place_of_the_directory_is_refused_and_its_target_untouched() {
        let ws = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        let before = std::fs::metadata(target.path()).unwrap();
        std::os::unix::fs::symlink(target.path(), ws.path().join(AGENT_DIR)).unwrap();
        let me = before.uid();
        let e = hand_over(ws.path(), me + 1, me + 1).unwrap_err();
        assert!(e.message.contains("not a directory"), "{e}");
        let after = std::fs::metadata(target.path()).unwrap();
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    }

    #[test]
    fn what_is_inside_is_handed_over_and_links_are_not_followed() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let dir = ws.path().join(AGENT_DIR);
        std::fs::create_dir_all(dir.join("conversations")).unwrap();
        std::fs::write(dir.join("conversations/a.jsonl"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.join("out")).unwrap();
        hand_over(ws.path(), 4242, 4343).unwrap();
        for p in ["", "conversations", "conversations/a.jsonl"] {
            let m = std::fs::symlink_metadata(dir.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (4242, 4343), "{p}");
        }
        let link = std::fs::symlink_metadata(dir.join("out")).unwrap();
        assert_eq!(link.uid(), 4242, "the link itself");
        let target = std::fs::metadata(outside.path()).unwrap();
        assert_ne!(target.uid(), 4242, "not what it points at");
    }

    #[test]
    fn a_real_directory_is_created_and_handed_over() {
        let ws = tempfile::tempdir().unwrap();
        let me = std::fs::metadata(ws.path()).unwrap();
        hand_over(ws.path(), me.uid(), me.gid()).unwrap();
        assert!(ws.path().join(AGENT_DIR).is_dir());
    }
}
