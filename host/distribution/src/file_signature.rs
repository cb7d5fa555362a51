//! Signatures of a local component file, kept beside it as `FILE.sig`: the
//! same payload and signature as a registry signature, over the file's
//! digest (`sha256:<hex>` of its bytes) with the identity `file`, so the
//! same publishers and the same verdict apply.

use std::path::{Path, PathBuf};

use crate::error::DistributionError;
use crate::registry::SignatureEntry;
use crate::signature::{Payload, PrivateKey};
use crate::store::{read_signatures, write_atomically};

/// The identity a file signature's payload names.
pub const FILE_IDENTITY: &str = "file";

/// Where `file`'s signatures are kept.
pub fn signature_file(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// The signatures kept beside `file` (none when there is no `.sig`).
pub fn file_signatures(file: &Path) -> Result<Vec<SignatureEntry>, DistributionError> {
    read_signatures(&signature_file(file))
}

/// Signs `file` with `key`, adding to the signatures beside it, and
/// returns the digest signed. The `.sig` file is replaced atomically.
pub fn sign_file(file: &Path, key: &PrivateKey) -> Result<String, DistributionError> {
    let bytes = std::fs::read(file).map_err(|e| DistributionError::store(file, e))?;
    let digest = crate::layout::digest_of(&bytes);
    let payload = Payload::new(FILE_IDENTITY, &digest).to_bytes();
    let entry = SignatureEntry {
        signature: key.sign(&payload),
        payload,
    };
    let mut entries = file_signatures(file)?;
    entries.retain(|e| e != &entry);
    entries.push(entry);
    let path = signature_file(file);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let json = serde_json::to_vec_pretty(&entries)
        .map_err(|e| DistributionError::store(&path, std::io::Error::other(e)))?;
    write_atomically(dir, &path, &json)?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::Publishers;

    #[test]
    fn a_signed_file_names_its_publisher_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tool.wasm");
        std::fs::write(&file, b"component").unwrap();
        let key = PrivateKey::generate();
        let digest = sign_file(&file, &key).unwrap();
        let mut trust = Publishers::none();
        trust.add("acme", key.public());
        let entries = file_signatures(&file).unwrap();
        assert_eq!(
            trust
                .signer("tool.wasm", FILE_IDENTITY, &digest, &entries)
                .unwrap(),
            "acme"
        );
        std::fs::write(&file, b"another component").unwrap();
        let changed = crate::layout::digest_of(b"another component");
        let err = trust
            .signer("tool.wasm", FILE_IDENTITY, &changed, &entries)
            .unwrap_err()
            .to_string();
        assert!(err.contains("over sha256:"), "{err}");
    }
}
