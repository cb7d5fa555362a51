//! Secret values by the variable names `corral.toml` gives: the
//! environment first, then the optional secrets file, which must be private
//! to its owner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use corral_channels::{MissingSecret, SecretSource};

use crate::error::ConfigError;

/// Secret values by variable name: the environment, then the secrets file.
pub struct Secrets {
    pub(crate) file: BTreeMap<String, String>,
    pub(crate) file_path: Option<PathBuf>,
}

impl Secrets {
    /// The value of `name`, if set and not empty.
    pub fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.file.get(name).cloned())
    }
}

impl SecretSource for Secrets {
    /// The value, or an error naming where it was looked for.
    fn require(&self, name: &str, what: &str) -> Result<String, MissingSecret> {
        self.get(name).ok_or_else(|| {
            let file = self
                .file_path
                .as_ref()
                .map(|p| format!(" or in the secrets file {}", p.display()))
                .unwrap_or_default();
            MissingSecret(format!("{what}: set the environment variable {name}{file}"))
        })
    }
}

/// Reads the secrets file, refusing one others may read.
pub(crate) fn read_secrets_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        ConfigError(format!(
            "secrets_file {}: cannot read it: {e}",
            path.display()
        ))
    })?;
    if meta.mode() & 0o077 != 0 {
        return Err(ConfigError(format!(
            "secrets_file {}: readable by others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "secrets_file {}: cannot read it: {e}",
            path.display()
        ))
    })?;
    toml::from_str(&text).map_err(|e| {
        // The parser's message quotes the offending line, which may hold
        // a secret: say where, not what.
        let line = e.span().map(|s| text[..s.start].lines().count().max(1));
        ConfigError(format!(
            "secrets_file {}: not a table of NAME = \"value\" strings (near line {})",
            path.display(),
            line.map_or("?".into(), |l| l.to_string())
        ))
    })
}
