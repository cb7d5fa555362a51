//! Handing the agent its own part of its workspace, without following
//! anything the agent planted there.
//!
//! The agent loop keeps its history in `<workspace>/.corral`, written as
//! the container's user, so the host (often root) gives that directory to
//! the agent's uid. The agent can write its workspace, so by now `.corral`
//! may be a link to anywhere: the directory is opened without following a
//! link and changed through that descriptor, so the change can only ever
//! land on a real directory inside the workspace.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

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
    match std::fs::create_dir(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(format!("cannot create it: {e}"))),
    }
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => err(
                "is not a directory (a link or a file, which the agent may have put there); \
                 remove it and start again"
                    .into(),
            ),
            _ => err(format!("cannot open it: {e}")),
        })?;
    std::os::unix::fs::fchown(&dir, Some(uid), Some(gid))
        .map_err(|e| err(format!("cannot give it to {uid}:{gid}: {e}")))
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
    fn a_real_directory_is_created_and_handed_over() {
        let ws = tempfile::tempdir().unwrap();
        let me = std::fs::metadata(ws.path()).unwrap();
        hand_over(ws.path(), me.uid(), me.gid()).unwrap();
        assert!(ws.path().join(AGENT_DIR).is_dir());
    }
}
