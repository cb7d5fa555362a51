//! The default agent image, built from a tar context through the API.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::backend::SandboxError;

/// The repository part of the image's tag.
pub const IMAGE_REPO: &str = "corral-agent";

/// The files of the build context.
pub struct AgentImage {
    /// `agent-image/`: Dockerfile, passwd, group.
    pub dir: PathBuf,
    /// The static musl `corral-agent`.
    pub binary: PathBuf,
}

impl AgentImage {
    /// The build context as a tar archive, byte-for-byte reproducible
    /// (fixed modes, owners and times), so its digest names its content.
    pub fn context(&self) -> Result<Vec<u8>, SandboxError> {
        let mut tar = tar::Builder::new(Vec::new());
        let files: [(&str, PathBuf, u32); 4] = [
            ("Dockerfile", self.dir.join("Dockerfile"), 0o644),
            ("passwd", self.dir.join("passwd"), 0o644),
            ("group", self.dir.join("group"), 0o644),
            ("corral-agent", self.binary.clone(), 0o755),
        ];
        for (name, path, mode) in files {
            let bytes = std::fs::read(&path).map_err(|e| {
                SandboxError::Image(format!(
                    "cannot read {} ({e}); build the agent with `cargo xtask build-agent`",
                    path.display()
                ))
            })?;
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(mode);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            tar.append_data(&mut header, name, bytes.as_slice())
                .map_err(|e| SandboxError::Image(format!("packing {name}: {e}")))?;
        }
        tar.into_inner()
            .map_err(|e| SandboxError::Image(format!("packing the context: {e}")))
    }

    /// `corral-agent:<16 hex digits of the context's sha256>`.
    pub fn tag_for(context: &[u8]) -> String {
        let digest = hex::encode(Sha256::digest(context));
        format!("{IMAGE_REPO}:{}", &digest[..16])
    }
}
