//! Which publishers' signatures a host accepts, and the verdict on one
//! artifact: signed by a listed publisher, or refused with the reason.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::DistributionError;
use crate::registry::SignatureEntry;
use crate::signature::{Payload, PublicKey, SIGNATURE_TYPE};

/// Named publisher keys (`[trust.publishers]` in corral.toml).
#[derive(Debug, Clone, Default)]
pub struct Publishers {
    keys: BTreeMap<String, PublicKey>,
}

/// The publisher attribute of a tool that no listed publisher signed.
pub const UNSIGNED: &str = "unsigned";

impl Publishers {
    /// No publisher: every registry tool must be `allow_unsigned`.
    pub fn none() -> Self {
        Publishers::default()
    }

    /// Adds a publisher from its PEM public key file.
    pub fn add_file(&mut self, name: &str, path: &Path) -> Result<(), DistributionError> {
        let pem = std::fs::read_to_string(path).map_err(|e| DistributionError::Key {
            path: path.to_path_buf(),
            source: crate::error::KeyError::new(format!(
                "cannot read publisher `{name}`'s key: {e}"
            )),
        })?;
        let key = PublicKey::from_pem(&pem).map_err(|source| DistributionError::Key {
            path: path.to_path_buf(),
            source,
        })?;
        self.add(name, key);
        Ok(())
    }

    /// Adds a publisher.
    pub fn add(&mut self, name: &str, key: PublicKey) {
        self.keys.insert(name.to_string(), key);
    }

    /// Whether no publisher is listed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The listed publisher who signed `digest`, among `entries`; the
    /// error says why none did. A signature counts only if its payload is
    /// a cosign signature naming exactly `digest` and `identity` (the
    /// repository, `REGISTRY/REPOSITORY`, or `file` for a local file): a
    /// publisher's signature of one artifact cannot vouch for a copy of it
    /// pushed somewhere else, or for a file.
    pub fn signer(
        &self,
        reference: &str,
        identity: &str,
        digest: &str,
        entries: &[SignatureEntry],
    ) -> Result<String, DistributionError> {
        let untrusted = |problem: String| DistributionError::Untrusted {
            reference: reference.to_string(),
            problem,
        };
        if entries.is_empty() {
            return Err(untrusted(format!(
                "it has no signature (no `{}` tag). Sign it with `corral tool sign --key KEY {reference}` (or `cosign sign --key`), or mark the tool `allow_unsigned = true` in corral.toml",
                crate::registry::signature_tag(digest)
            )));
        }
        let mut misplaced = Vec::new();
        for entry in entries {
            for (name, key) in &self.keys {
                if !key.verifies(&entry.payload, &entry.signature) {
                    continue;
                }
                match serde_json::from_slice::<Payload>(&entry.payload) {
                    Ok(p) if p.critical.kind != SIGNATURE_TYPE => {
                        misplaced.push(format!("a payload of type `{}`", p.critical.kind));
                    }
                    Ok(p) if p.critical.image.docker_manifest_digest != digest => {
                        misplaced.push(p.critical.image.docker_manifest_digest);
                    }
                    Ok(p) if p.critical.identity.docker_reference != identity => {
                        misplaced.push(format!(
                            "`{}` (signed for that repository, not `{identity}`)",
                            p.critical.identity.docker_reference
                        ));
                    }
                    Ok(_) => return Ok(name.clone()),
                    Err(_) => misplaced.push("an unreadable payload".into()),
                }
            }
        }
        if !misplaced.is_empty() {
            return Err(untrusted(format!(
                "a listed publisher's signature is there, but over {} rather than {digest} in `{identity}`; the signature was moved from another artifact. Sign this one.",
                misplaced.join(", ")
            )));
        }
        let listed: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        Err(untrusted(format!(
            "it has {} signature(s), none by a listed publisher ({}). Add the signer's public key under [trust.publishers] if you trust them, or mark the tool `allow_unsigned = true`",
            entries.len(),
            if listed.is_empty() {
                "none are listed".to_string()
            } else {
                listed.join(", ")
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::PrivateKey;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn signed(key: &PrivateKey, digest: &str) -> SignatureEntry {
        signed_as(key, "r/x", digest)
    }

    fn signed_as(key: &PrivateKey, identity: &str, digest: &str) -> SignatureEntry {
        let payload = Payload::new(identity, digest).to_bytes();
        SignatureEntry {
            signature: key.sign(&payload),
            payload,
        }
    }

    #[test]
    fn the_listed_signer_is_named_and_everything_else_is_refused_with_its_reason() {
        let acme = PrivateKey::generate();
        let stranger = PrivateKey::generate();
        let mut trust = Publishers::none();
        trust.add("acme", acme.public());
        assert_eq!(
            trust
                .signer(
                    "r/x",
                    "r/x",
                    D1,
                    &[signed(&stranger, D1), signed(&acme, D1)]
                )
                .unwrap(),
            "acme"
        );
        let cases = [
            (vec![], "no signature"),
            (
                vec![signed(&stranger, D1)],
                "none by a listed publisher (acme)",
            ),
            (vec![signed(&acme, D2)], "over sha256:2222"),
            (
                vec![signed_as(&acme, "r/other", D1)],
                "signed for that repository",
            ),
        ];
        for (entries, expected) in cases {
            let err = trust
                .signer("r/x", "r/x", D1, &entries)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}
