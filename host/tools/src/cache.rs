//! On-disk cache of precompiled components.
//!
//! Compiling a component with Cranelift takes tens of milliseconds;
//! deserializing the cached artifact takes well under one. Artifacts are
//! keyed by the component's sha256, the wasmtime version and a hash of the
//! engine configuration, so a changed component, upgraded wasmtime or
//! different limits can never pick up a stale artifact.
//!
//! Loading an artifact runs native code that it contains, so the cache
//! directory is trusted code storage: it is created with mode 0700 and
//! refused if anyone but its owner can write to it.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::LoadError;

/// Feeds `Hash` output into sha256 so the engine's configuration hash is
/// stable across processes (std's `DefaultHasher` makes no such promise).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Unused: callers read the full digest.
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Hex digest identifying an engine's compiled-code compatibility.
pub fn engine_fingerprint(engine: &Engine) -> String {
    let mut h = Sha256Hasher(Sha256::new());
    env!("CARGO_PKG_VERSION").hash(&mut h);
    wasmtime_version().hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(&h.0.finalize()[..16])
}

fn wasmtime_version() -> &'static str {
    // Pinned in the workspace manifest; part of the key so an upgrade
    // invalidates every artifact even if the config hash happened to match.
    "48"
}

/// Compiled components on disk, keyed by the component's sha256, the
/// wasmtime version and the engine's configuration; trusted code storage,
/// so refused if others may write it.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// Opens (creating if needed) the cache at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, LoadError> {
        let dir = dir.into();
        let cache_err = |what: String| LoadError::Cache {
            dir: dir.clone(),
            problem: what,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| cache_err(format!("cannot create it: {e}")))?;
        let meta = fs::metadata(&dir).map_err(|e| cache_err(format!("cannot stat it: {e}")))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(cache_err(format!(
                "it is owned by uid {}, not by this process (uid {me}); use a cache directory you own",
                meta.uid()
            )));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(cache_err(format!(
                "it is writable by group or others (mode {:o}); run `chmod 700 {}`",
                meta.permissions().mode() & 0o777,
                dir.display()
            )));
        }
        Ok(ArtifactCache { dir })
    }

    /// The default location: `$XDG_CACHE_HOME/corral/components`, else
    /// `$HOME/.cache/corral/components`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("corral").join("components"))
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_for(&self, sha256_hex: &str, fingerprint: &str) -> PathBuf {
        self.dir.join(format!("{sha256_hex}-{fingerprint}.cwasm"))
    }

    /// Returns the compiled component, from the cache when possible.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256_hex: &str,
    ) -> Result<Component, LoadError> {
        let path = self.path_for(sha256_hex, &engine_fingerprint(engine));
        if path.exists() {
            // SAFETY: the artifact was written by `store` below, into a
            // directory that `open` verified only this user can write, under
            // a name that binds it to the source digest and this engine's
            // configuration. wasmtime additionally checks the header for
            // version and config compatibility and refuses a mismatch.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable cached artifact");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        if let Err(e) = self.store(&path, &compiled) {
            // A cache that cannot be written costs speed, not correctness.
            tracing::warn!(path = %path.display(), error = %e, "could not write artifact cache");
        }
        // SAFETY: `compiled` was produced just now by this same engine.
        unsafe { Component::deserialize(engine, &compiled) }
            .map_err(|e| LoadError::Compile(format!("{e:#}")))
    }

    fn store(&self, path: &Path, compiled: &[u8]) -> std::io::Result<()> {
        // Write-then-rename so a concurrent reader never sees half a file.
        let mut tmp = tempfile_in(&self.dir)?;
        tmp.1.write_all(compiled)?;
        tmp.1.sync_all()?;
        fs::rename(&tmp.0, path)
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, fs::File)> {
    let name = format!(".tmp-{}-{}", std::process::id(), rand_suffix());
    let path = dir.join(name);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    Ok((path, file))
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (nanos, std::thread::current().id()).hash(&mut h);
    h.finish()
}
