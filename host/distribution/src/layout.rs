//! The Wasm OCI artifact layout of the CNCF TAG Runtime guidance: an OCI
//! image manifest whose config is `application/vnd.wasm.config.v0+json`
//! and whose one layer is the component, `application/wasm`. Writing it,
//! and refusing any manifest that is not it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config's media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The component layer's media type.
pub const WASM_MEDIA_TYPE: &str = "application/wasm";

/// Largest manifest read (the distribution spec suggests registries
/// accept 4 MiB; a Wasm manifest is well under 1 KiB).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 10;
/// Largest config blob read.
pub const MAX_CONFIG_BYTES: u64 = 64 << 10;

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// What the content is.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its length in bytes.
    pub size: u64,
    /// Free annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// The manifest as Corral reads it: only the fields it checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's own media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// The layers.
    pub layers: Vec<Descriptor>,
}

/// A manifest that passed [`check`]: its one component layer.
#[derive(Debug, Clone)]
pub struct WasmManifest {
    /// The config blob's descriptor.
    pub config: Descriptor,
    /// The component's descriptor.
    pub layer: Descriptor,
}

/// An artifact ready to push: the exact bytes, so the digest is known.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The manifest's JSON.
    pub manifest: Vec<u8>,
    /// Its digest: the artifact's identity.
    pub digest: String,
    /// The config JSON.
    pub config: Vec<u8>,
    /// The config's descriptor.
    pub config_descriptor: Descriptor,
    /// The component's descriptor.
    pub layer_descriptor: Descriptor,
}

/// Lays out `wasm` as an artifact. `imports` and `exports` are the
/// component's interface names, recorded in the config as the guidance
/// suggests.
pub fn artifact(wasm: &[u8], file_name: &str, imports: &[String], exports: &[String]) -> Artifact {
    let layer_digest = digest_of(wasm);
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
        "component": { "imports": imports, "exports": exports, "target": "corral:tool/tool-component@0.1.0" },
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let config_descriptor = Descriptor {
        media_type: CONFIG_MEDIA_TYPE.into(),
        digest: digest_of(&config),
        size: config.len() as u64,
        annotations: None,
    };
    let layer_descriptor = Descriptor {
        media_type: WASM_MEDIA_TYPE.into(),
        digest: layer_digest,
        size: wasm.len() as u64,
        annotations: Some(
            [(
                "org.opencontainers.image.title".to_string(),
                file_name.to_string(),
            )]
            .into(),
        ),
    };
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.into()),
        config: config_descriptor.clone(),
        layers: vec![layer_descriptor.clone()],
    };
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    Artifact {
        digest: digest_of(&manifest),
        manifest,
        config,
        config_descriptor,
        layer_descriptor,
    }
}

/// Checks a manifest's bytes: an OCI image manifest with the Wasm config
/// and exactly one `application/wasm` layer no larger than `max_layer`.
/// The error text says what is wrong.
pub fn check(raw: &[u8], max_layer: u64) -> Result<WasmManifest, String> {
    let manifest: Manifest = serde_json::from_slice(raw)
        .map_err(|e| format!("the manifest is not an OCI image manifest: {e}"))?;
    if manifest.schema_version != 2 {
        return Err(format!(
            "schemaVersion is {}, not 2",
            manifest.schema_version
        ));
    }
    if let Some(mt) = &manifest.media_type
        && mt != MANIFEST_MEDIA_TYPE
    {
        return Err(format!(
            "the manifest's media type is `{mt}`, not `{MANIFEST_MEDIA_TYPE}`"
        ));
    }
    if manifest.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(format!(
            "the config's media type is `{}`, not `{CONFIG_MEDIA_TYPE}`",
            manifest.config.media_type
        ));
    }
    if manifest.config.size > MAX_CONFIG_BYTES {
        return Err(format!(
            "the config is {} bytes, over the cap of {MAX_CONFIG_BYTES}",
            manifest.config.size
        ));
    }
    let [layer] = manifest.layers.as_slice() else {
        return Err(format!(
            "it has {} layers; a tool is exactly one component layer",
            manifest.layers.len()
        ));
    };
    if layer.media_type != WASM_MEDIA_TYPE {
        return Err(format!(
            "its layer is `{}`, not `{WASM_MEDIA_TYPE}`",
            layer.media_type
        ));
    }
    if layer.size > max_layer {
        return Err(format!(
            "its layer is {} bytes, over the cap of {max_layer} (raise `[registry] max_tool_bytes` if the tool is right)",
            layer.size
        ));
    }
    for d in [&manifest.config, layer] {
        if !is_sha256_digest(&d.digest) {
            return Err(format!("`{}` is not a sha256 digest", d.digest));
        }
    }
    Ok(WasmManifest {
        config: manifest.config.clone(),
        layer: layer.clone(),
    })
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_with(layers: serde_json::Value, config_type: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": config_type, "digest": digest_of(b"{}"), "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    fn layer(media_type: &str, size: u64) -> serde_json::Value {
        serde_json::json!({"mediaType": media_type, "digest": digest_of(b"x"), "size": size})
    }

    #[test]
    fn what_corral_writes_it_accepts() {
        let a = artifact(b"\0asm", "echo.wasm", &[], &[]);
        let m = check(&a.manifest, 1 << 20).unwrap();
        assert_eq!(m.layer.digest, digest_of(b"\0asm"));
        assert_eq!(a.digest, digest_of(&a.manifest));
    }

    #[test]
    fn a_non_wasm_layer_several_layers_and_an_oversized_layer_are_refused() {
        let cases = [
            (
                manifest_with(
                    serde_json::json!([layer("application/vnd.oci.image.layer.v1.tar+gzip", 1)]),
                    CONFIG_MEDIA_TYPE,
                ),
                "not `application/wasm`",
            ),
            (
                manifest_with(
                    serde_json::json!([layer(WASM_MEDIA_TYPE, 1), layer(WASM_MEDIA_TYPE, 1)]),
                    CONFIG_MEDIA_TYPE,
                ),
                "2 layers",
            ),
            (
                manifest_with(serde_json::json!([]), CONFIG_MEDIA_TYPE),
                "0 layers",
            ),
            (
                manifest_with(
                    serde_json::json!([layer(WASM_MEDIA_TYPE, 1 << 30)]),
                    CONFIG_MEDIA_TYPE,
                ),
                "over the cap",
            ),
            (
                manifest_with(
                    serde_json::json!([layer(WASM_MEDIA_TYPE, 1)]),
                    "application/vnd.oci.image.config.v1+json",
                ),
                "config's media type",
            ),
            (
                b"<html>not json</html>".to_vec(),
                "not an OCI image manifest",
            ),
        ];
        for (raw, expected) in cases {
            let err = check(&raw, 1 << 20).unwrap_err();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}
