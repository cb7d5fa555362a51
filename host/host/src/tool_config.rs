//! `corral.toml`'s tool sections: `[[tools]]` (a component file pinned by
//! sha256, or a registry reference pinned by digest), `[trust]` (the
//! publishers whose signatures count) and `[registry]` (how registries are
//! reached), and the checks that refuse an entry that is neither or both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ConfigError;

macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(ConfigError(format!($($arg)*)))
    };
}

/// One `[[tools]]` entry: a component file or a registry reference.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    /// The component file.
    pub path: Option<PathBuf>,
    /// The file's sha256. Without it the file's current digest is used,
    /// and a warning says so.
    pub sha256: Option<String>,
    /// `REGISTRY/REPOSITORY:TAG@sha256:DIGEST`. Without the digest the
    /// tag is resolved at start, and a warning prints the pin.
    pub oci: Option<String>,
    /// Load this registry tool although no listed publisher signed it.
    /// Its `publisher` attribute is then `"unsigned"`, which the starter
    /// policy `no-unsigned-registry-tools` forbids calling.
    #[serde(default)]
    pub allow_unsigned: bool,
}

/// `[trust]`: whose signatures registry tools may carry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// Publisher name → PEM public key file (cosign's `cosign.pub`, or
    /// `corral tool keygen`'s). The name becomes the tool's `publisher`.
    #[serde(default)]
    pub publishers: BTreeMap<String, PathBuf>,
}

/// `[registry]`: how registries are reached.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registries (`host:port`) reached over plain HTTP although they are
    /// not on loopback.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// The largest component pulled, in bytes (default 64 MiB).
    #[serde(default = "d_max_tool_bytes")]
    pub max_tool_bytes: u64,
}

fn d_max_tool_bytes() -> u64 {
    64 << 20
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure: Vec::new(),
            max_tool_bytes: d_max_tool_bytes(),
        }
    }
}

/// Refuses a `[[tools]]` entry that names no component or two, or a key
/// that does not fit where it comes from.
pub(crate) fn check_tools(tools: &[ToolConfig], path: &Path) -> Result<(), ConfigError> {
    let file = path.display();
    for (i, t) in tools.iter().enumerate() {
        let n = i + 1;
        match (&t.path, &t.oci) {
            (Some(_), Some(_)) => bail!(
                "{file}: [[tools]] entry {n} has both `path` and `oci`; a tool comes from one place, so keep one"
            ),
            (None, None) => bail!(
                "{file}: [[tools]] entry {n} has neither `path` nor `oci`; give the component file or its registry reference"
            ),
            (None, Some(r)) if t.sha256.is_some() => bail!(
                "{file}: [[tools]] entry {n} (`{r}`): `sha256` pins files; pin a registry tool with `@sha256:…` in `oci`"
            ),
            (Some(p), None) if t.allow_unsigned => bail!(
                "{file}: [[tools]] entry {n} ({}): `allow_unsigned` is for registry tools (`oci`); a local file is trusted by its `sha256`",
                p.display()
            ),
            _ => {}
        }
    }
    Ok(())
}
