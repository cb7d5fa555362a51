//! Why a tool could not be pushed, pulled, stored, signed or trusted. Each
//! error names the reference, what failed, and the next step.

/// A key file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl KeyError {
    pub(crate) fn new(message: String) -> Self {
        KeyError(message)
    }
}

/// A push, pull, store or verification failed.
#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    /// The reference does not parse.
    #[error(
        "`{reference}` is not an OCI reference: {problem}. Write REGISTRY/REPOSITORY:TAG, optionally with @sha256:DIGEST."
    )]
    BadReference {
        /// What was given.
        reference: String,
        /// Why it does not parse.
        problem: String,
    },
    /// Plain HTTP to a registry that is not on loopback.
    #[error(
        "{registry} is not a loopback address, so Corral will not talk to it over plain HTTP; use HTTPS, or pass --insecure-registry {registry} if this is on purpose"
    )]
    PlainHttpRefused {
        /// The registry.
        registry: String,
    },
    /// The registry could not be reached, refused, or answered nonsense.
    #[error("{reference}: the registry failed to {operation}: {message}")]
    Registry {
        /// The reference.
        reference: String,
        /// What was being done.
        operation: &'static str,
        /// What it said, or why it could not be asked.
        message: String,
    },
    /// The manifest is not a Wasm component artifact Corral accepts.
    #[error(
        "{reference}: {problem}. Corral takes the CNCF Wasm OCI layout: config `application/vnd.wasm.config.v0+json` and exactly one `application/wasm` layer (`corral tool push` writes it)."
    )]
    NotAWasmArtifact {
        /// The reference.
        reference: String,
        /// What is wrong with the manifest.
        problem: String,
    },
    /// Content did not hash to the digest that named it.
    #[error(
        "{reference}: the {what} hashes to {actual}, not {expected}; the registry or the network altered it. Nothing was stored."
    )]
    DigestMismatch {
        /// The reference.
        reference: String,
        /// Which content.
        what: &'static str,
        /// The digest that named it.
        expected: String,
        /// What it hashed to.
        actual: String,
    },
    /// Content larger than its cap.
    #[error("{reference}: the {what} is {size} bytes, over the cap of {cap}; nothing was stored")]
    TooLarge {
        /// The reference.
        reference: String,
        /// Which content.
        what: &'static str,
        /// Its size, as declared or as read so far.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// The store could not be read or written.
    #[error("tool store {path}: {source}")]
    Store {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A pinned tool is not in the store and the registry was not asked.
    #[error(
        "{reference} is not in the tool store {store}; run `corral tool pull {reference}` while the registry is reachable"
    )]
    NotStored {
        /// The reference.
        reference: String,
        /// The store's directory.
        store: std::path::PathBuf,
    },
    /// No signature, or none by a trusted publisher.
    #[error("{reference}: {problem}")]
    Untrusted {
        /// The reference.
        reference: String,
        /// What was missing or wrong, and what to do.
        problem: String,
    },
    /// A key file.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        source: KeyError,
    },
}

impl DistributionError {
    pub(crate) fn store(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        DistributionError::Store {
            path: path.into(),
            source,
        }
    }
}
