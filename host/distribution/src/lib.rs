//! Tool components over OCI registries, for publishers and the operators
//! who load their tools.
//!
//! - [`layout`]: the CNCF TAG Runtime Wasm artifact (config
//!   `application/vnd.wasm.config.v0+json`, one `application/wasm` layer),
//!   written by `corral tool push` and required of everything pulled.
//! - [`RegistryClient`]: push, resolve a tag, pull with every size and
//!   digest checked, read and append cosign signatures (`oci-client`
//!   speaks the distribution protocol). Plain HTTP only to loopback or a
//!   registry named as insecure; credentials from the Docker config file.
//! - [`ToolStore`]: pulled tools by digest under `state_dir`, written
//!   atomically and re-hashed on every read, so a pinned tool starts with
//!   the registry down.
//! - [`signature`]: cosign's key-based format (simple-signing payload
//!   under the `sha256-<digest>.sig` tag; ECDSA P-256; cosign's key files).
//! - [`sign_file`]: a local file's signatures, kept beside it as
//!   `FILE.sig`, judged by the same publishers.
//! - [`Publishers`] and [`fetch()`]: a registry tool loads only when a
//!   listed publisher signed exactly its digest, or it is marked
//!   `allow_unsigned`; the store is written only after every check passed.
//!
//! This crate knows nothing of wasmtime or Cedar: the world check happens
//! when the bytes are loaded, and the verdict reaches policy as the tool's
//! `Plugin` attributes.

mod auth;
mod error;
mod fetch;
mod file_signature;
pub mod layout;
mod reference;
mod registry;
pub mod signature;
mod store;
mod trust;

pub use error::{DistributionError, KeyError};
pub use fetch::{ComponentCheck, FetchedTool, TrustRule, fetch, from_store, verdict};
pub use file_signature::{FILE_IDENTITY, file_signatures, sign_file, signature_file};
pub use reference::ToolReference;
pub use registry::{
    Pulled, RegistryClient, RegistryOptions, SIGNATURE_ANNOTATION, SIGNATURE_MEDIA_TYPE,
    SignatureEntry, signature_tag,
};
pub use store::ToolStore;
pub use trust::{Publishers, UNSIGNED};
