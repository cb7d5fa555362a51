//! The content-addressed store of pulled tools under `state_dir`: blobs
//! by digest, written atomically (a temporary file, fsync, rename), and
//! checked against their digest on every read, so a pinned tool starts
//! with the registry down and a damaged file is never loaded.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::DistributionError;
use crate::layout::{digest_of, is_sha256_digest};
use crate::registry::SignatureEntry;

/// The store.
#[derive(Debug, Clone)]
pub struct ToolStore {
    dir: PathBuf,
}

impl ToolStore {
    /// Opens (creating) the store in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, DistributionError> {
        let dir = dir.into();
        for sub in ["blobs/sha256", "signatures", "tmp"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|e| DistributionError::store(&d, e))?;
        }
        Ok(ToolStore { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        is_sha256_digest(digest).then(|| self.dir.join("blobs/sha256").join(&digest[7..]))
    }

    /// The file holding the blob `digest`, if it is stored. Read it through
    /// [`Self::get`] unless a later check hashes it again (loading a tool
    /// does).
    pub fn blob_file(&self, digest: &str) -> Option<PathBuf> {
        self.blob_path(digest).filter(|p| p.is_file())
    }

    /// Whether the blob `digest` is stored.
    pub fn has(&self, digest: &str) -> bool {
        self.blob_path(digest).is_some_and(|p| p.is_file())
    }

    /// Stores `bytes` and returns their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<String, DistributionError> {
        let digest = digest_of(bytes);
        let path = self.blob_path(&digest).ok_or_else(|| {
            DistributionError::store(&self.dir, std::io::Error::other("not a sha256 digest"))
        })?;
        if !path.is_file() {
            self.write_atomically(&path, bytes)?;
        }
        Ok(digest)
    }

    /// The blob `digest`, checked; `None` when it is not stored.
    pub fn get(&self, digest: &str) -> Result<Option<Vec<u8>>, DistributionError> {
        let Some(path) = self.blob_path(digest) else {
            return Ok(None);
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DistributionError::store(&path, e)),
        };
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(DistributionError::store(
                &path,
                std::io::Error::other(format!(
                    "the file hashes to {actual}, not its name; it was altered. Remove it and pull the tool again."
                )),
            ));
        }
        Ok(Some(bytes))
    }

    /// Records the signatures fetched for the manifest `digest`.
    pub fn put_signatures(
        &self,
        digest: &str,
        entries: &[SignatureEntry],
    ) -> Result<(), DistributionError> {
        let path = self
            .dir
            .join("signatures")
            .join(crate::registry::signature_tag(digest));
        let json = serde_json::to_vec_pretty(entries)
            .map_err(|e| DistributionError::store(&path, std::io::Error::other(e)))?;
        self.write_atomically(&path, &json)
    }

    /// The signatures recorded for the manifest `digest` (none if none).
    pub fn signatures(&self, digest: &str) -> Result<Vec<SignatureEntry>, DistributionError> {
        read_signatures(
            &self
                .dir
                .join("signatures")
                .join(crate::registry::signature_tag(digest)),
        )
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), DistributionError> {
        write_atomically(&self.dir.join("tmp"), path, bytes)
    }
}

/// The largest signature list read (64 signatures are about 100 KiB).
const MAX_SIGNATURE_LIST_BYTES: u64 = 1 << 20;

/// A list of signatures kept as JSON at `path`; none when there is no file.
/// Read only from a regular file, not through a link, and capped: a
/// `FILE.sig` comes from whoever shipped the file.
pub(crate) fn read_signatures(path: &Path) -> Result<Vec<SignatureEntry>, DistributionError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DistributionError::store(path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| DistributionError::store(path, e))?;
    if !meta.is_file() || meta.len() > MAX_SIGNATURE_LIST_BYTES {
        return Err(DistributionError::store(
            path,
            std::io::Error::other(format!(
                "not a signature list: a signature list is a regular file of at most {MAX_SIGNATURE_LIST_BYTES} bytes"
            )),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SIGNATURE_LIST_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| DistributionError::store(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        DistributionError::store(
            path,
            std::io::Error::other(format!("not a signature list: {e}")),
        )
    })
}

/// Writes `bytes` to `path` through a temporary file in `tmp_dir` (on the
/// same file system), fsynced and renamed into place.
pub(crate) fn write_atomically(
    tmp_dir: &Path,
    path: &Path,
    bytes: &[u8],
) -> Result<(), DistributionError> {
    let mut tmp = tempfile::NamedTempFile::new_in(tmp_dir)
        .map_err(|e| DistributionError::store(tmp_dir, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| DistributionError::store(tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| DistributionError::store(path, e.error))?;
    if let Some(parent) = path.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_and_an_altered_blob_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ToolStore::open(dir.path()).unwrap();
        let d = store.put(b"component").unwrap();
        assert!(store.has(&d));
        assert_eq!(store.get(&d).unwrap().unwrap(), b"component");
        std::fs::write(dir.path().join("blobs/sha256").join(&d[7..]), b"tampered").unwrap();
        let err = store.get(&d).unwrap_err().to_string();
        assert!(err.contains("altered"), "{err}");
        assert!(store.get("sha256:nothex").unwrap().is_none());
        // Nothing is left behind in tmp.
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_signature_list_behind_a_link_or_not_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("tool.wasm.sig");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(read_signatures(&link).is_err());
        let fifo_like = dir.path().join("dir.sig");
        std::fs::create_dir(&fifo_like).unwrap();
        assert!(read_signatures(&fifo_like).is_err());
    }

    #[test]
    fn signatures_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = ToolStore::open(dir.path()).unwrap();
        let d = digest_of(b"m");
        assert!(store.signatures(&d).unwrap().is_empty());
        let e = SignatureEntry {
            payload: b"{}".to_vec(),
            signature: "c2ln".into(),
        };
        store.put_signatures(&d, std::slice::from_ref(&e)).unwrap();
        assert_eq!(store.signatures(&d).unwrap(), vec![e]);
    }
}
