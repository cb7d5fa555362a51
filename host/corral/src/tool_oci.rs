//! `corral tool push | pull | sign | keygen`, and `inspect` of a registry
//! reference: the publisher's and the operator's side of distribution.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use corral_distribution::signature::{Payload, PrivateKey};
use corral_distribution::{
    Publishers, RegistryClient, RegistryOptions, SignatureEntry, ToolReference, ToolStore,
    TrustRule, layout,
};
use corral_tools::{LoadedComponent, ToolRuntime};

use crate::shown;

/// Where registries are, and how to reach them.
#[derive(Args, Debug, Clone)]
pub(crate) struct RegistryArgs {
    /// Reach this registry (`host:port`) over plain HTTP although it is not
    /// on loopback (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure: Vec<String>,
}

impl RegistryArgs {
    fn options(&self) -> RegistryOptions {
        RegistryOptions {
            insecure: self.insecure.clone(),
            ..RegistryOptions::default()
        }
    }
}

/// Who is trusted, for `pull` and `inspect`.
#[derive(Args, Debug, Clone)]
pub(crate) struct TrustArgs {
    /// A trusted publisher and their public key (repeatable).
    #[arg(long = "publisher", value_name = "NAME=KEY.pub")]
    publishers: Vec<String>,
    /// Accept the tool although no listed publisher signed it.
    #[arg(long)]
    allow_unsigned: bool,
}

impl TrustArgs {
    pub(crate) fn publishers(&self) -> Result<Publishers> {
        let mut out = Publishers::none();
        for spec in &self.publishers {
            let Some((name, path)) = spec.split_once('=') else {
                bail!(
                    "--publisher {spec}: write NAME=KEYFILE, e.g. --publisher acme=keys/acme.pub"
                );
            };
            out.add_file(name, Path::new(path))?;
        }
        Ok(out)
    }
}

fn runtime_block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(rt.block_on(f))
}

/// `corral tool push FILE REF`: checks the component as loading would,
/// then pushes it in the Wasm OCI layout and prints the pinned reference.
pub(crate) fn push(
    rt: &ToolRuntime,
    file: &Path,
    reference: &str,
    registry: &RegistryArgs,
) -> Result<u8> {
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let component = rt.load(&wasm).with_context(|| {
        format!(
            "{} is not a tool Corral would load; nothing was pushed",
            file.display()
        )
    })?;
    let reference = ToolReference::parse(reference)?;
    if reference.digest().is_some() {
        bail!(
            "{reference}: push to a tag (REGISTRY/REPOSITORY:TAG); the digest is what the push produces"
        );
    }
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "component.wasm".into());
    let exports = vec![corral_tools::TOOL_EXPORT.to_string()];
    let artifact = layout::artifact(&wasm, &name, component.imports(), &exports);
    let client = RegistryClient::new(&reference, registry.options())?;
    let digest = runtime_block_on(client.push(&reference, &artifact, &wasm))??;
    let pinned = reference.pinned(&digest);
    println!("pushed {pinned}");
    println!("tools: {}", tool_names(&component));
    println!();
    println!("sign it:   corral tool sign --key cosign.key {pinned}");
    println!("serve it:  [[tools]]");
    println!("           oci = \"{pinned}\"");
    Ok(0)
}

fn tool_names(c: &LoadedComponent) -> String {
    c.tools()
        .iter()
        .map(|t| shown::inline(&t.name).into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `corral tool pull REF`: fetch, check, verify and store.
pub(crate) fn pull(
    rt: &ToolRuntime,
    reference: &str,
    store: &Path,
    registry: &RegistryArgs,
    trust: &TrustArgs,
) -> Result<u8> {
    let reference = ToolReference::parse(reference)?;
    let store = ToolStore::open(store)?;
    let publishers = trust.publishers()?;
    let rule = TrustRule {
        publishers: &publishers,
        allow_unsigned: trust.allow_unsigned,
    };
    let check = |wasm: &[u8]| rt.load(wasm).map(|_| ()).map_err(|e| e.to_string());
    let fetched = runtime_block_on(corral_distribution::fetch(
        &store,
        &registry.options(),
        &reference,
        rule,
        &check,
    ))??;
    let component = rt.load(&fetched.wasm)?;
    println!(
        "{} {}",
        if fetched.from_store {
            "already stored"
        } else {
            "pulled"
        },
        fetched.reference
    );
    println!(
        "  publisher  {}",
        shown::inline(&fetched.publisher.to_string())
    );
    println!("  component  {}", layout::digest_of(&fetched.wasm));
    println!("  tools      {}", tool_names(&component));
    println!("  store      {}", store.dir().display());
    if fetched.resolved_from_tag {
        eprintln!(
            "warning: {reference} names no digest; pin it as oci = \"{}\"",
            fetched.reference
        );
    }
    Ok(0)
}

/// `corral tool sign --key KEY REF`: signs the manifest the reference
/// names (cosign's format) and stores the signature beside it.
pub(crate) fn sign(
    rt: &ToolRuntime,
    key: &Path,
    reference: &str,
    registry: &RegistryArgs,
) -> Result<u8> {
    let pem = std::fs::read_to_string(key)
        .with_context(|| format!("cannot read key {}", key.display()))?;
    let password = std::env::var("COSIGN_PASSWORD").unwrap_or_default();
    let private = PrivateKey::from_encrypted_pem(&pem, password.as_bytes())
        .with_context(|| format!("{}: cannot use this key", key.display()))?;
    let file = Path::new(reference);
    if file.is_file() {
        if ToolReference::parse(reference).is_ok() {
            bail!(
                "`{reference}` is both a file here and a registry reference; nothing was signed. Write ./{reference} to sign the file, or run this elsewhere to sign the registry's artifact"
            );
        }
        // A signature vouches for a tool: only a component that loads is signed.
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        rt.load(&bytes).with_context(|| {
            format!(
                "{} is not a tool Corral would load; nothing was signed",
                file.display()
            )
        })?;
        let digest = corral_distribution::sign_file(file, &private)?;
        println!("signed {} ({digest})", file.display());
        println!(
            "  signature  {}",
            corral_distribution::signature_file(file).display()
        );
        return Ok(0);
    }
    let reference = ToolReference::parse(reference)?;
    let client = RegistryClient::new(&reference, registry.options())?;
    let digest = match reference.digest() {
        Some(d) => d.to_string(),
        None => {
            let d = runtime_block_on(client.resolve(&reference))??;
            eprintln!("warning: {reference} names no digest; signing what its tag names now, {d}");
            d
        }
    };
    let pinned = reference.pinned(&digest);
    // Only a Wasm tool artifact is signed: a signature vouches for a tool.
    runtime_block_on(client.pull(&pinned, &digest))??;
    let payload = Payload::new(&reference.repository_name(), &digest).to_bytes();
    let entry = SignatureEntry {
        signature: private.sign(&payload),
        payload,
    };
    runtime_block_on(client.push_signature(&pinned, &digest, &entry))??;
    println!("signed {pinned}");
    println!(
        "  signature  {}",
        corral_distribution::signature_tag(&digest)
    );
    Ok(0)
}

/// `corral tool keygen`: a cosign-compatible key pair, the private key
/// encrypted with `COSIGN_PASSWORD`.
pub(crate) fn keygen(prefix: &Path) -> Result<u8> {
    let key_path = prefix.with_extension("key");
    let pub_path = prefix.with_extension("pub");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            bail!(
                "{} already exists; nothing was written. Move it away or choose another --out",
                p.display()
            );
        }
    }
    let password = std::env::var("COSIGN_PASSWORD").unwrap_or_default();
    if password.is_empty() {
        eprintln!(
            "warning: COSIGN_PASSWORD is empty, so the private key is encrypted with an empty password"
        );
    }
    let key = PrivateKey::generate();
    let pem = key.to_encrypted_pem(password.as_bytes())?;
    write_new(&key_path, pem.as_bytes(), 0o600)?;
    write_new(&pub_path, key.public().to_pem()?.as_bytes(), 0o644)?;
    println!("private key  {} (keep it secret)", key_path.display());
    println!(
        "public key   {} (give it to operators: [trust.publishers] NAME = \"…\")",
        pub_path.display()
    );
    Ok(0)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// What `inspect` of a reference shows beside the component.
pub(crate) struct RemoteFacts {
    pub reference: String,
    pub publisher: String,
    pub wasm: Vec<u8>,
}

/// Fetches a reference for `inspect` into a scratch store: nothing is
/// kept, and an unsigned tool is shown, with its status, not refused.
pub(crate) fn fetch_for_inspect(
    rt: &ToolRuntime,
    reference: &str,
    registry: &RegistryArgs,
    trust: &TrustArgs,
) -> Result<RemoteFacts> {
    let reference = ToolReference::parse(reference)?;
    let scratch = tempfile::tempdir().context("creating a scratch store")?;
    let store = ToolStore::open(scratch.path())?;
    let publishers = trust.publishers()?;
    let options = registry.options();
    let client = RegistryClient::new(&reference, options.clone())?;
    let (digest, entries) = runtime_block_on(async {
        let digest = match reference.digest() {
            Some(d) => d.to_string(),
            None => client.resolve(&reference).await?,
        };
        let entries = client
            .signatures(&reference.pinned(&digest), &digest)
            .await?;
        Ok::<_, corral_distribution::DistributionError>((digest, entries))
    })??;
    let status = match publishers.signer(
        &reference.to_string(),
        &reference.repository_name(),
        &digest,
        &entries,
    ) {
        Ok(name) => format!("signed by {name}"),
        Err(e) if entries.is_empty() => format!("unsigned ({e})"),
        Err(e) => format!("{} signature(s), not trusted here: {e}", entries.len()),
    };
    let rule = TrustRule {
        publishers: &publishers,
        allow_unsigned: true,
    };
    let check = |wasm: &[u8]| rt.load(wasm).map(|_| ()).map_err(|e| e.to_string());
    let fetched = runtime_block_on(corral_distribution::fetch(
        &store,
        &options,
        &reference.pinned(&digest),
        rule,
        &check,
    ))??;
    Ok(RemoteFacts {
        reference: fetched.reference.to_string(),
        publisher: status,
        wasm: fetched.wasm,
    })
}

/// The default store for `corral tool pull`: `.corral/tools`, where
/// `corral up` with the default `state_dir` looks.
pub(crate) fn default_store() -> PathBuf {
    PathBuf::from(".corral").join("tools")
}
