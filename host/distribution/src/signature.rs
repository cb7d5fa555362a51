//! cosign's key-based signatures: the simple-signing payload, ECDSA P-256
//! over SHA-256 in ASN.1 DER, and cosign's key files, so that a tool
//! signed by `cosign sign --key` verifies here and the other way round.
//!
//! RustCrypto's crates carry the cryptography; the `sigstore` crate would
//! have brought a C crypto library (aws-lc or OpenSSL) and Rekor, Fulcio
//! and TUF clients that key-based signing does not use.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_secretbox::aead::Aead;
use crypto_secretbox::{KeyInit, XSalsa20Poly1305};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use serde::{Deserialize, Serialize};

use crate::error::KeyError;

/// The PEM label cosign writes for a private key.
const PRIVATE_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The label older cosign releases wrote; still read.
const LEGACY_PRIVATE_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// The `critical.type` of a container signature.
pub(crate) const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The simple-signing payload: what a signature covers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Payload {
    /// The claims a verifier must check.
    pub critical: Critical,
    /// Free annotations; `null` when there are none.
    pub optional: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The payload's checked part.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Critical {
    /// The repository the artifact was signed in.
    pub identity: Identity,
    /// The signed manifest.
    pub image: Image,
    /// Always `cosign container image signature`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Where the artifact was signed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    /// The repository, without tag or digest.
    #[serde(rename = "docker-reference")]
    pub docker_reference: String,
}

/// The manifest a payload is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Image {
    /// `sha256:<hex>` of the manifest.
    #[serde(rename = "docker-manifest-digest")]
    pub docker_manifest_digest: String,
}

impl Payload {
    /// The payload cosign signs for `digest` in `repository`.
    pub fn new(repository: &str, digest: &str) -> Self {
        Payload {
            critical: Critical {
                identity: Identity {
                    docker_reference: repository.to_string(),
                },
                image: Image {
                    docker_manifest_digest: digest.to_string(),
                },
                kind: SIGNATURE_TYPE.to_string(),
            },
            optional: None,
        }
    }

    /// Compact JSON, in cosign's field order.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings and maps always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A publisher's key pair.
pub struct PrivateKey(SigningKey);

/// A public key that verifies signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> Self {
        use p256::elliptic_curve::Generate;
        PrivateKey(SigningKey::generate())
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }

    /// Signs `payload`: base64 of the DER signature, as cosign stores it.
    pub fn sign(&self, payload: &[u8]) -> String {
        let sig: Signature = self.0.sign(payload);
        B64.encode(sig.to_der().as_bytes())
    }

    /// cosign's encrypted key file, scrypt (N=65536, r=8, p=1, cosign's
    /// default) and NaCl secretbox over the PKCS#8 key.
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<String, KeyError> {
        let der = self
            .0
            .to_pkcs8_der()
            .map_err(|e| KeyError::new(format!("encoding the key: {e}")))?;
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut salt).map_err(|e| KeyError::new(format!("no randomness: {e}")))?;
        getrandom::fill(&mut nonce).map_err(|e| KeyError::new(format!("no randomness: {e}")))?;
        let params = ScryptParams {
            n: 65536,
            r: 8,
            p: 1,
        };
        let key = box_key(password, &salt, &params)?;
        let ciphertext = XSalsa20Poly1305::new(&key.into())
            .encrypt(&nonce.into(), der.as_bytes())
            .map_err(|_| KeyError::new("encrypting the key failed".into()))?;
        let file = EncryptedKey {
            kdf: Kdf {
                name: "scrypt".into(),
                params,
                salt: B64.encode(salt),
            },
            cipher: Cipher {
                name: "nacl/secretbox".into(),
                nonce: B64.encode(nonce),
            },
            ciphertext: B64.encode(ciphertext),
        };
        let json = serde_json::to_vec(&file).map_err(|e| KeyError::new(e.to_string()))?;
        pem_rfc7468::encode_string(PRIVATE_LABEL, pem_rfc7468::LineEnding::LF, &json)
            .map_err(|e| KeyError::new(format!("encoding PEM: {e}")))
    }

    /// Reads cosign's encrypted key file.
    pub fn from_encrypted_pem(pem: &str, password: &[u8]) -> Result<Self, KeyError> {
        let (label, json) = pem_rfc7468::decode_vec(pem.as_bytes())
            .map_err(|e| KeyError::new(format!("not a PEM file: {e}")))?;
        if label != PRIVATE_LABEL && label != LEGACY_PRIVATE_LABEL {
            return Err(KeyError::new(format!(
                "a PEM `{label}`, not a cosign private key (`{PRIVATE_LABEL}`)"
            )));
        }
        let file: EncryptedKey = serde_json::from_slice(&json)
            .map_err(|e| KeyError::new(format!("not a cosign key: {e}")))?;
        if file.kdf.name != "scrypt" || file.cipher.name != "nacl/secretbox" {
            return Err(KeyError::new(format!(
                "unsupported key encryption `{}` with `{}`; cosign keys use scrypt and nacl/secretbox",
                file.kdf.name, file.cipher.name
            )));
        }
        let salt = b64(&file.kdf.salt, "salt")?;
        let nonce: [u8; 24] = b64(&file.cipher.nonce, "nonce")?
            .try_into()
            .map_err(|_| KeyError::new("the nonce is not 24 bytes".into()))?;
        let ciphertext = b64(&file.ciphertext, "ciphertext")?;
        let key = box_key(password, &salt, &file.kdf.params)?;
        let der = XSalsa20Poly1305::new(&key.into())
            .decrypt(&nonce.into(), ciphertext.as_slice())
            .map_err(|_| {
                KeyError::new("wrong password (set COSIGN_PASSWORD to the key's password)".into())
            })?;
        SigningKey::from_pkcs8_der(&der)
            .map(PrivateKey)
            .map_err(|e| KeyError::new(format!("the key is not an ECDSA P-256 key: {e}")))
    }
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` (what `cosign generate-key-pair` writes).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        VerifyingKey::from_public_key_pem(pem)
            .map(PublicKey)
            .map_err(|e| KeyError::new(format!("not an ECDSA P-256 public key in PEM: {e}")))
    }

    /// The PEM text.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError::new(e.to_string()))
    }

    /// Whether `signature` (base64 DER) is this key's over `payload`. High-S
    /// signatures are accepted, as Go's verifier does.
    pub fn verifies(&self, payload: &[u8], signature_b64: &str) -> bool {
        let Ok(der) = B64.decode(signature_b64.trim()) else {
            return false;
        };
        let Ok(sig) = Signature::from_der(&der) else {
            return false;
        };
        self.0.verify(payload, &sig).is_ok()
    }
}

fn b64(text: &str, what: &str) -> Result<Vec<u8>, KeyError> {
    B64.decode(text)
        .map_err(|e| KeyError::new(format!("the key's {what} is not base64: {e}")))
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u32,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

#[derive(Serialize, Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

/// The secretbox key: scrypt with the parameters cosign accepts, and no
/// others, so a crafted key file cannot ask for unbounded memory.
fn box_key(password: &[u8], salt: &[u8], p: &ScryptParams) -> Result<[u8; 32], KeyError> {
    if !matches!((p.n, p.r, p.p), (32768 | 65536 | 131072, 8, 1)) {
        return Err(KeyError::new(format!(
            "unsupported scrypt parameters N={} r={} p={}",
            p.n, p.r, p.p
        )));
    }
    let params = scrypt::Params::new(p.n.trailing_zeros() as u8, p.r, p.p)
        .map_err(|e| KeyError::new(format!("scrypt parameters: {e}")))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key)
        .map_err(|e| KeyError::new(format!("scrypt: {e}")))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn the_payload_is_cosigns_compact_json() {
        let p = Payload::new("localhost:5000/tools/echo", DIGEST);
        assert_eq!(
            String::from_utf8(p.to_bytes()).unwrap(),
            format!(
                r#"{{"critical":{{"identity":{{"docker-reference":"localhost:5000/tools/echo"}},"image":{{"docker-manifest-digest":"{DIGEST}"}},"type":"cosign container image signature"}},"optional":null}}"#
            )
        );
    }

    #[test]
    fn a_signature_verifies_with_its_key_only_and_only_over_its_payload() {
        let key = PrivateKey::generate();
        let payload = Payload::new("r/x", DIGEST).to_bytes();
        let sig = key.sign(&payload);
        assert!(key.public().verifies(&payload, &sig));
        assert!(!PrivateKey::generate().public().verifies(&payload, &sig));
        let other = Payload::new("r/x", &DIGEST.replace('1', "2")).to_bytes();
        assert!(!key.public().verifies(&other, &sig));
        assert!(!key.public().verifies(&payload, "not base64!"));
    }

    #[test]
    fn key_files_round_trip_and_a_wrong_password_is_named() {
        let key = PrivateKey::generate();
        let pem = key.to_encrypted_pem(b"pw").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        let back = PrivateKey::from_encrypted_pem(&pem, b"pw").unwrap();
        assert_eq!(back.public(), key.public());
        let err = PrivateKey::from_encrypted_pem(&pem, b"nope").err().unwrap();
        assert!(err.to_string().contains("wrong password"), "{err}");
        let public = PublicKey::from_pem(&key.public().to_pem().unwrap()).unwrap();
        assert_eq!(public, key.public());
    }

    /// A key file written here by the `sigstore` crate (password `rspw`,
    /// N=32768): another implementation's files are read as written.
    #[test]
    fn a_key_file_written_by_another_implementation_is_read() {
        let pem = include_str!("../testdata/sigstore-rs.key");
        let key = PrivateKey::from_encrypted_pem(pem, b"rspw").unwrap();
        let payload = b"x";
        assert!(key.public().verifies(payload, &key.sign(payload)));
    }

    #[test]
    fn scrypt_parameters_outside_cosigns_set_are_refused() {
        let err = box_key(
            b"",
            b"salt",
            &ScryptParams {
                n: 1 << 30,
                r: 8,
                p: 1,
            },
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("unsupported scrypt"), "{err}");
    }
}
