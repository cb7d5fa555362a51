//! Each `[[tools]]` entry made into a pinned component file and its
//! provenance: a file is hashed (or checked against its pin); a registry
//! reference is taken from the tool store, or pulled, checked and verified
//! against `[trust.publishers]` before the store is written.

use corral_distribution::{
    Publishers, RegistryOptions, ToolReference, ToolStore, TrustRule, layout::digest_of,
};
use corral_policy::provenance::Provenance;
use corral_tools::{ToolSource, file_sha256};

use crate::config::HostConfig;
use crate::error::HostError;
use crate::tools::PinnedTool;

/// The tool store: `<state_dir>/tools`.
pub fn tool_store(config: &HostConfig) -> Result<ToolStore, HostError> {
    ToolStore::open(config.state_dir.join("tools")).map_err(|e| HostError::Setup(e.to_string()))
}

/// The publishers `[trust.publishers]` lists, their keys read.
pub fn publishers(config: &HostConfig) -> Result<Publishers, HostError> {
    let mut publishers = Publishers::none();
    for (name, path) in &config.trust.publishers {
        publishers
            .add_file(name, path)
            .map_err(|e| HostError::Setup(format!("[trust.publishers] {name}: {e}")))?;
    }
    Ok(publishers)
}

/// `[registry]` as the distribution crate takes it.
pub fn registry_options(config: &HostConfig) -> RegistryOptions {
    RegistryOptions {
        insecure: config.registry.insecure.clone(),
        max_tool_bytes: config.registry.max_tool_bytes,
        ..RegistryOptions::default()
    }
}

/// The world check loading makes, before a pulled component is stored.
/// Compiled artifacts are cached, so loading it again later is cheap.
fn check_component(wasm: &[u8]) -> Result<(), String> {
    let runtime = crate::tools::runtime_with_cache(
        corral_tools::Limits::default(),
        corral_tools::InternalNetworks::default(),
    )
    .map_err(|e| e.to_string())?;
    runtime.load(wasm).map(|_| ()).map_err(|e| e.to_string())
}

/// The listed publisher who signed a local file (its `FILE.sig`), or
/// `unsigned`. A signature no listed publisher made is not an error (the
/// file is trusted by its pin), but it is said.
fn file_publisher(
    config: &HostConfig,
    path: &std::path::Path,
    digest: &str,
) -> Result<String, HostError> {
    let entries =
        corral_distribution::file_signatures(path).map_err(|e| HostError::Setup(e.to_string()))?;
    if entries.is_empty() {
        return Ok(corral_distribution::UNSIGNED.to_string());
    }
    match publishers(config)?.signer(
        &path.display().to_string(),
        corral_distribution::FILE_IDENTITY,
        digest,
        &entries,
    ) {
        Ok(name) => Ok(name),
        Err(e) => {
            tracing::warn!(tool = %path.display(), "its signature does not count: {e}");
            Ok(corral_distribution::UNSIGNED.to_string())
        }
    }
}

/// Every `[[tools]]` entry, pinned, in order.
pub(crate) async fn pinned_tools(config: &HostConfig) -> Result<Vec<PinnedTool>, HostError> {
    let mut out = Vec::new();
    let mut registry = None;
    for t in &config.tools {
        if let Some(path) = &t.path {
            let sha256 = match &t.sha256 {
                Some(s) => s.clone(),
                None => {
                    let digest = file_sha256(path)?;
                    tracing::warn!(tool = %path.display(), %digest, "tool not pinned in corral.toml; using its current digest");
                    digest
                }
            };
            let mut pinned = PinnedTool::file(ToolSource {
                path: path.clone(),
                sha256,
            });
            pinned.provenance.publisher = file_publisher(config, path, &pinned.provenance.digest)?;
            out.push(pinned);
            continue;
        }
        let Some(text) = &t.oci else { continue };
        if registry.is_none() {
            registry = Some((
                tool_store(config)?,
                publishers(config)?,
                registry_options(config),
            ));
        }
        let Some((store, publishers, options)) = &registry else {
            continue;
        };
        let reference = ToolReference::parse(text)
            .map_err(|e| HostError::Setup(format!("[[tools]] oci: {e}")))?;
        let rule = TrustRule {
            publishers,
            allow_unsigned: t.allow_unsigned,
        };
        let fetched = corral_distribution::fetch(store, options, &reference, rule, &|wasm| {
            check_component(wasm)
        })
        .await
        .map_err(|e| HostError::Setup(format!("tool {reference} was not loaded: {e}")))?;
        if fetched.resolved_from_tag {
            tracing::warn!(
                tool = %reference,
                pinned = %fetched.reference,
                "registry tool not pinned in corral.toml; using what its tag names now. Pin it: oci = \"{}\"",
                fetched.reference
            );
        }
        let layer = digest_of(&fetched.wasm);
        let path = store.blob_file(&layer).ok_or_else(|| {
            HostError::Setup(format!(
                "tool {reference}: the store has no file for {layer}"
            ))
        })?;
        out.push(PinnedTool {
            source: ToolSource {
                path,
                sha256: layer[7..].to_string(),
            },
            provenance: Provenance {
                publisher: fetched.publisher,
                digest: layer,
                source: format!("oci:{}", fetched.reference),
            },
        });
    }
    Ok(out)
}
