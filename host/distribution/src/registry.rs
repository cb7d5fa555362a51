//! Talking to an OCI registry through `oci-client`: push an artifact, find
//! a tag's digest, pull a pinned artifact with every size and digest
//! checked, and read or append cosign signatures.

use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::error::DistributionError;
use crate::layout::{self, Artifact, MANIFEST_MEDIA_TYPE, WasmManifest, digest_of};
use crate::reference::ToolReference;

/// The cosign signature layer's media type and its signature annotation.
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Most signatures read for one artifact (cosign's own cap is 1,000).
const MAX_SIGNATURES: usize = 64;
/// Largest signature payload read.
const MAX_PAYLOAD_BYTES: u64 = 16 << 10;

/// How Corral talks to registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Registries (`host:port`) reached over plain HTTP although not on
    /// loopback. Default: none.
    pub insecure: Vec<String>,
    /// The largest component pulled. Default 64 MiB; a Python component is
    /// about 18 MiB.
    pub max_tool_bytes: u64,
    /// Connect and read timeout of each request. Default 30 s.
    pub timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: Vec::new(),
            max_tool_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
        }
    }
}

/// A pulled, checked artifact.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// The manifest's digest.
    pub digest: String,
    /// The checked manifest.
    pub checked: WasmManifest,
    /// The component.
    pub wasm: Vec<u8>,
}

/// One cosign signature: the payload and its base64 signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignatureEntry {
    /// The simple-signing payload's bytes.
    #[serde(with = "b64_bytes")]
    pub payload: Vec<u8>,
    /// Base64 DER ECDSA signature.
    pub signature: String,
}

mod b64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::Deserialize;

    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'d, D: serde::Deserializer<'d>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// A client for one registry.
pub struct RegistryClient {
    client: Client,
    auth: RegistryAuth,
    options: RegistryOptions,
}

impl RegistryClient {
    /// A client for `reference`'s registry, with credentials from the
    /// Docker config file. Plain HTTP only to loopback or a registry in
    /// `options.insecure`.
    pub fn new(
        reference: &ToolReference,
        options: RegistryOptions,
    ) -> Result<Self, DistributionError> {
        // reqwest needs a process-wide rustls provider; installing it twice
        // is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let registry = reference.registry().to_string();
        let plain = reference.is_loopback() || options.insecure.iter().any(|r| r == &registry);
        let protocol = if plain {
            ClientProtocol::HttpsExcept(vec![registry.clone()])
        } else {
            ClientProtocol::Https
        };
        let client = Client::try_from(ClientConfig {
            protocol,
            connect_timeout: Some(options.timeout),
            read_timeout: Some(options.timeout),
            platform_resolver: None,
            ..Default::default()
        })
        .map_err(|e| DistributionError::Registry {
            reference: reference.to_string(),
            operation: "set up a client",
            message: e.to_string(),
        })?;
        Ok(RegistryClient {
            client,
            auth: crate::auth::credentials(&registry),
            options,
        })
    }

    fn failed(
        reference: &ToolReference,
        operation: &'static str,
        e: OciDistributionError,
    ) -> DistributionError {
        DistributionError::Registry {
            reference: reference.to_string(),
            operation,
            message: describe(&e),
        }
    }

    /// Pushes `artifact` (with `wasm` as its layer) under the reference's
    /// tag and returns the manifest digest.
    pub async fn push(
        &self,
        reference: &ToolReference,
        artifact: &Artifact,
        wasm: &[u8],
    ) -> Result<String, DistributionError> {
        let r = reference.oci();
        self.client
            .store_auth_if_needed(r.resolve_registry(), &self.auth)
            .await;
        for (bytes, digest) in [
            (wasm.to_vec(), &artifact.layer_descriptor.digest),
            (artifact.config.clone(), &artifact.config_descriptor.digest),
        ] {
            self.client
                .push_blob(r, bytes, digest)
                .await
                .map_err(|e| Self::failed(reference, "accept a blob", e))?;
        }
        self.push_manifest(reference, r, artifact.manifest.clone())
            .await?;
        Ok(artifact.digest.clone())
    }

    async fn push_manifest(
        &self,
        reference: &ToolReference,
        r: &Reference,
        body: Vec<u8>,
    ) -> Result<(), DistributionError> {
        let content_type =
            MANIFEST_MEDIA_TYPE
                .parse()
                .map_err(|_| DistributionError::Registry {
                    reference: reference.to_string(),
                    operation: "accept the manifest",
                    message: "bad content type".into(),
                })?;
        self.client
            .push_manifest_raw(r, body, content_type)
            .await
            .map_err(|e| Self::failed(reference, "accept the manifest", e))?;
        Ok(())
    }

    /// The digest the reference's tag names now.
    pub async fn resolve(&self, reference: &ToolReference) -> Result<String, DistributionError> {
        let (raw, digest) = self.manifest(reference, reference.oci()).await?;
        drop(raw);
        Ok(digest)
    }

    async fn manifest(
        &self,
        reference: &ToolReference,
        r: &Reference,
    ) -> Result<(Vec<u8>, String), DistributionError> {
        let (raw, digest) = tokio::time::timeout(
            self.options.timeout,
            self.client
                .pull_manifest_raw(r, &self.auth, &[MANIFEST_MEDIA_TYPE]),
        )
        .await
        .map_err(|_| timed_out(reference, "answer for the manifest"))?
        .map_err(|e| Self::failed(reference, "return the manifest", e))?;
        if raw.len() as u64 > layout::MAX_MANIFEST_BYTES {
            return Err(DistributionError::TooLarge {
                reference: reference.to_string(),
                what: "manifest",
                size: raw.len() as u64,
                cap: layout::MAX_MANIFEST_BYTES,
            });
        }
        let actual = digest_of(&raw);
        if actual != digest {
            return Err(DistributionError::DigestMismatch {
                reference: reference.to_string(),
                what: "manifest",
                expected: digest,
                actual,
            });
        }
        Ok((raw.to_vec(), digest))
    }

    /// Pulls the artifact `digest` names in the reference's repository:
    /// the manifest (which must be the Wasm layout) and its component, each
    /// hashed against its digest and held to its cap.
    pub async fn pull(
        &self,
        reference: &ToolReference,
        digest: &str,
    ) -> Result<Pulled, DistributionError> {
        let pinned = reference.oci().clone_with_digest(digest.to_string());
        let (manifest, got) = self.manifest(reference, &pinned).await?;
        if got != digest {
            return Err(DistributionError::DigestMismatch {
                reference: reference.to_string(),
                what: "manifest",
                expected: digest.to_string(),
                actual: got,
            });
        }
        let checked = layout::check(&manifest, self.options.max_tool_bytes).map_err(|problem| {
            DistributionError::NotAWasmArtifact {
                reference: reference.to_string(),
                problem,
            }
        })?;
        let wasm = self
            .blob(
                reference,
                &pinned,
                &checked.layer.digest,
                "component",
                checked.layer.size.min(self.options.max_tool_bytes),
            )
            .await?;
        if wasm.len() as u64 != checked.layer.size {
            return Err(DistributionError::NotAWasmArtifact {
                reference: reference.to_string(),
                problem: format!(
                    "the component is {} bytes, but the manifest says {}",
                    wasm.len(),
                    checked.layer.size
                ),
            });
        }
        Ok(Pulled {
            manifest,
            digest: digest.to_string(),
            checked,
            wasm,
        })
    }

    /// Reads a blob, refusing it once it passes `cap` bytes, and checks
    /// its digest.
    async fn blob(
        &self,
        reference: &ToolReference,
        r: &Reference,
        digest: &str,
        what: &'static str,
        cap: u64,
    ) -> Result<Vec<u8>, DistributionError> {
        let read = async {
            let mut stream = self
                .client
                .pull_blob_stream(r, digest)
                .await
                .map_err(|e| Self::failed(reference, "return a blob", e))?;
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.stream.next().await {
                let chunk =
                    chunk.map_err(|e| stream_error(reference, what, digest, &e.to_string()))?;
                if (bytes.len() + chunk.len()) as u64 > cap {
                    return Err(DistributionError::TooLarge {
                        reference: reference.to_string(),
                        what,
                        size: (bytes.len() + chunk.len()) as u64,
                        cap,
                    });
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(bytes)
        };
        let bytes = tokio::time::timeout(self.options.timeout * 4, read)
            .await
            .map_err(|_| timed_out(reference, "send the blob"))??;
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(DistributionError::DigestMismatch {
                reference: reference.to_string(),
                what,
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// The cosign signatures stored for `digest` (the `sha256-<hex>.sig`
    /// tag); none when there is no such tag.
    pub async fn signatures(
        &self,
        reference: &ToolReference,
        digest: &str,
    ) -> Result<Vec<SignatureEntry>, DistributionError> {
        let sig_ref = signature_reference(reference, digest);
        let (raw, _) = match self.manifest(reference, &sig_ref).await {
            Ok(found) => found,
            Err(DistributionError::Registry { message, .. }) if message.starts_with(NOT_FOUND) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let manifest: layout::Manifest =
            serde_json::from_slice(&raw).map_err(|e| DistributionError::Untrusted {
                reference: reference.to_string(),
                problem: format!("its signature manifest is not an OCI manifest: {e}"),
            })?;
        let mut entries = Vec::new();
        for layer in manifest.layers.iter().take(MAX_SIGNATURES) {
            let Some(signature) = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
            else {
                continue;
            };
            if layer.size > MAX_PAYLOAD_BYTES || !layout::is_sha256_digest(&layer.digest) {
                continue;
            }
            let payload = self
                .blob(
                    reference,
                    &sig_ref,
                    &layer.digest,
                    "signature payload",
                    MAX_PAYLOAD_BYTES,
                )
                .await?;
            entries.push(SignatureEntry {
                payload,
                signature: signature.clone(),
            });
        }
        Ok(entries)
    }

    /// Adds a signature to `digest`'s signature manifest, keeping those
    /// already there, as cosign does.
    pub async fn push_signature(
        &self,
        reference: &ToolReference,
        digest: &str,
        entry: &SignatureEntry,
    ) -> Result<(), DistributionError> {
        let sig_ref = signature_reference(reference, digest);
        self.client
            .store_auth_if_needed(sig_ref.resolve_registry(), &self.auth)
            .await;
        let mut layers: Vec<layout::Descriptor> = match self.manifest(reference, &sig_ref).await {
            Ok((raw, _)) => serde_json::from_slice::<layout::Manifest>(&raw)
                .map(|m| m.layers)
                .map_err(|e| DistributionError::Untrusted {
                    reference: reference.to_string(),
                    problem: format!(
                        "its signature manifest ({}) is not an OCI manifest ({e}); nothing was signed, so the signatures already there are not lost. Remove that tag, then sign again",
                        signature_tag(digest)
                    ),
                })?,
            Err(DistributionError::Registry { message, .. }) if message.starts_with(NOT_FOUND) => {
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let payload_digest = digest_of(&entry.payload);
        layers.retain(|l| {
            l.annotations
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
                != Some(&entry.signature)
        });
        layers.push(layout::Descriptor {
            media_type: SIGNATURE_MEDIA_TYPE.into(),
            digest: payload_digest.clone(),
            size: entry.payload.len() as u64,
            annotations: Some([(SIGNATURE_ANNOTATION.to_string(), entry.signature.clone())].into()),
        });
        // The image config cosign writes: one diff_id and history entry per
        // signature layer.
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": layers.iter().map(|_| serde_json::json!({"created": "0001-01-01T00:00:00Z"})).collect::<Vec<_>>(),
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>()},
            "config": {},
        }))
        .unwrap_or_default();
        let manifest = layout::Manifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.into()),
            config: layout::Descriptor {
                media_type: "application/vnd.oci.image.config.v1+json".into(),
                digest: digest_of(&config),
                size: config.len() as u64,
                annotations: None,
            },
            layers,
        };
        for (bytes, d) in [
            (entry.payload.clone(), payload_digest),
            (config.clone(), digest_of(&config)),
        ] {
            self.client
                .push_blob(&sig_ref, bytes, &d)
                .await
                .map_err(|e| Self::failed(reference, "accept a signature blob", e))?;
        }
        let body = serde_json::to_vec(&manifest).unwrap_or_default();
        self.push_manifest(reference, &sig_ref, body).await
    }
}

/// cosign's tag for `digest`'s signatures: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

fn signature_reference(reference: &ToolReference, digest: &str) -> Reference {
    let r = reference.oci();
    Reference::with_tag(
        r.registry().to_string(),
        r.repository().to_string(),
        signature_tag(digest),
    )
}

/// How a missing manifest's message starts, so callers can tell it apart.
const NOT_FOUND: &str = "not found";

/// What went wrong, in at most 300 characters without control characters:
/// a registry's answer is not ours to print whole.
fn describe(e: &OciDistributionError) -> String {
    let text = describe_raw(e);
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    out
}

fn describe_raw(e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::ImageManifestNotFoundError(m) => format!("{NOT_FOUND}: {m}"),
        OciDistributionError::ServerError { code: 404, url, .. } => format!("{NOT_FOUND}: {url}"),
        OciDistributionError::RegistryError { envelope, url }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::NameUnknown
                )
            }) =>
        {
            format!("{NOT_FOUND}: {url}")
        }
        OciDistributionError::UnauthorizedError { url }
        | OciDistributionError::ServerError { code: 401, url, .. } => format!(
            "not authorized at {url}; log in with `docker login` (Corral reads ~/.docker/config.json, or $DOCKER_CONFIG)"
        ),
        OciDistributionError::AuthenticationFailure(m) => {
            format!("authentication failed: {m}; check the credentials `docker login` stored")
        }
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            format!("it could not be reached: {e}; is it running, and is the address right?")
        }
        other => other.to_string(),
    }
}

/// A failed blob stream. `oci-client` checks the digest as the stream
/// ends and fails it on a mismatch: that is reported as the mismatch.
fn stream_error(
    reference: &ToolReference,
    what: &'static str,
    digest: &str,
    message: &str,
) -> DistributionError {
    if message.contains("Invalid digest") {
        let actual = message
            .rsplit("got ")
            .next()
            .map(|a| a.trim().to_string())
            .unwrap_or_else(|| "something else".into());
        return DistributionError::DigestMismatch {
            reference: reference.to_string(),
            what,
            expected: digest.to_string(),
            actual,
        };
    }
    DistributionError::Registry {
        reference: reference.to_string(),
        operation: "send a blob",
        message: message.to_string(),
    }
}

fn timed_out(reference: &ToolReference, operation: &'static str) -> DistributionError {
    DistributionError::Registry {
        reference: reference.to_string(),
        operation,
        message: "it did not answer in time".into(),
    }
}
