//! Getting a registry tool ready to load: from the store when it is pinned
//! and already there (the registry is not asked), otherwise pulled,
//! checked, verified against the trusted publishers, and only then stored.
//! Every refusal leaves the store as it was.

use crate::error::DistributionError;
use crate::layout;
use crate::reference::ToolReference;
use crate::registry::{RegistryClient, RegistryOptions, SignatureEntry};
use crate::store::ToolStore;
use crate::trust::{Publishers, UNSIGNED};

/// What a registry tool must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct TrustRule<'a> {
    /// The publishers whose signatures count.
    pub publishers: &'a Publishers,
    /// Load it even when no listed publisher signed it.
    pub allow_unsigned: bool,
}

/// The check a component passes before it is stored: the world check
/// loading makes, which this crate cannot make itself (it does not link
/// wasmtime). The error text says what is wrong.
pub type ComponentCheck<'a> = &'a (dyn Fn(&[u8]) -> Result<(), String> + Sync);

/// A registry tool, ready to load.
#[derive(Debug, Clone)]
pub struct FetchedTool {
    /// The reference, pinned to the manifest digest.
    pub reference: ToolReference,
    /// The manifest digest.
    pub manifest_digest: String,
    /// The component.
    pub wasm: Vec<u8>,
    /// The publisher that signed it, or [`UNSIGNED`].
    pub publisher: String,
    /// Whether the reference had no digest and the registry's answer was
    /// used: the caller warns and prints the pin.
    pub resolved_from_tag: bool,
    /// Whether it came from the store without asking the registry.
    pub from_store: bool,
}

/// The trust verdict on `digest`: the signer, or [`UNSIGNED`] when that
/// is allowed.
pub fn verdict(
    rule: TrustRule<'_>,
    reference: &ToolReference,
    digest: &str,
    entries: &[SignatureEntry],
) -> Result<String, DistributionError> {
    match rule.publishers.signer(
        &reference.to_string(),
        &reference.repository_name(),
        digest,
        entries,
    ) {
        Ok(name) => Ok(name),
        Err(_) if rule.allow_unsigned => Ok(UNSIGNED.to_string()),
        Err(e) => Err(e),
    }
}

/// Reads a stored artifact: its manifest (checked against the layout) and
/// component. `None` when the manifest is not stored.
pub fn from_store(
    store: &ToolStore,
    reference: &ToolReference,
    digest: &str,
    max_tool_bytes: u64,
) -> Result<Option<Vec<u8>>, DistributionError> {
    let Some(manifest) = store.get(digest)? else {
        return Ok(None);
    };
    let checked = layout::check(&manifest, max_tool_bytes).map_err(|problem| {
        DistributionError::NotAWasmArtifact {
            reference: reference.to_string(),
            problem,
        }
    })?;
    match store.get(&checked.layer.digest)? {
        Some(wasm) => Ok(Some(wasm)),
        None => Ok(None),
    }
}

/// Gets `reference` ready to load under `rule`. The registry's part, when
/// it is asked, has one deadline: four times `options.timeout`.
pub async fn fetch(
    store: &ToolStore,
    options: &RegistryOptions,
    reference: &ToolReference,
    rule: TrustRule<'_>,
    check: ComponentCheck<'_>,
) -> Result<FetchedTool, DistributionError> {
    let deadline = options.timeout * 4;
    let in_time = |_: tokio::time::error::Elapsed| DistributionError::Registry {
        reference: reference.to_string(),
        operation: "answer",
        message: format!("it did not finish within {} s", deadline.as_secs()),
    };
    if let Some(digest) = reference.digest()
        && let Some(wasm) = from_store(store, reference, digest, options.max_tool_bytes)?
    {
        let entries = store.signatures(digest)?;
        let publisher = match verdict(rule, reference, digest, &entries) {
            Ok(p) => p,
            // The stored signatures may predate a signing: ask the registry
            // for today's, and keep them only if they pass. A registry that
            // cannot be asked leaves the first refusal standing.
            Err(refusal) => {
                let fresh = tokio::time::timeout(deadline, async {
                    let client = RegistryClient::new(reference, options.clone())?;
                    client.signatures(reference, digest).await
                })
                .await;
                match fresh {
                    Ok(Ok(entries)) => {
                        let publisher = verdict(rule, reference, digest, &entries)?;
                        store.put_signatures(digest, &entries)?;
                        publisher
                    }
                    _ => return Err(refusal),
                }
            }
        };
        return Ok(FetchedTool {
            reference: reference.clone(),
            manifest_digest: digest.to_string(),
            wasm,
            publisher,
            resolved_from_tag: false,
            from_store: true,
        });
    }
    tokio::time::timeout(
        deadline,
        pull_verify_store(store, options, reference, rule, check),
    )
    .await
    .map_err(in_time)?
}

async fn pull_verify_store(
    store: &ToolStore,
    options: &RegistryOptions,
    reference: &ToolReference,
    rule: TrustRule<'_>,
    check: ComponentCheck<'_>,
) -> Result<FetchedTool, DistributionError> {
    let client = RegistryClient::new(reference, options.clone())?;
    let (digest, resolved_from_tag) = match reference.digest() {
        Some(d) => (d.to_string(), false),
        None => (client.resolve(reference).await?, true),
    };
    let pinned = reference.pinned(&digest);
    let pulled = client.pull(&pinned, &digest).await?;
    let entries = client.signatures(&pinned, &digest).await?;
    let publisher = verdict(rule, &pinned, &digest, &entries)?;
    check(&pulled.wasm).map_err(|problem| DistributionError::NotAWasmArtifact {
        reference: pinned.to_string(),
        problem: format!("its component would not load: {problem}"),
    })?;
    // Everything is checked: now, and only now, the store is written. The
    // manifest goes last, so a stored manifest means a complete artifact.
    store.put(&pulled.wasm)?;
    store.put_signatures(&digest, &entries)?;
    store.put(&pulled.manifest)?;
    Ok(FetchedTool {
        reference: pinned,
        manifest_digest: digest,
        wasm: pulled.wasm,
        publisher,
        resolved_from_tag,
        from_store: false,
    })
}
