//! Corral's policy engine.
//!
//! - [`schema`]: the JSON Schema → Cedar mapping that gives each tool a
//!   typed action.
//! - [`load`]: the schema, and errors with file:line:column.
//! - [`loaded`]: a directory (or file) of `.cedar` policies, `@id` on every
//!   one, `@approval` and `@shadow` sorted out, strict validation.
//! - [`index`]: evaluating only the policies whose scope can match, with
//!   results identical to Cedar's full scan.
//! - [`engine`]: fail-closed decisions ([`decision`]) that name their
//!   deciding policies and the policy-set hash, over requests built from
//!   [`request`]'s parts.
//! - [`explain`]: a denial explained down to the condition that failed.
//! - [`approval`]: `@approval` permits, which make a request an ask.
//! - [`provenance`]: each tool's publisher, digest and source as the
//!   attributes of its `Tool` and `Plugin` entities.
//! - [`store`]: the live set and hot reload.
//! - [`gate`]: `CapabilityGate` on Cedar for the tool runtime.
//!
//! This crate links Cedar and never wasmtime: it is what policy authors'
//! tooling builds.

pub mod approval;
mod decision;
mod engine;
pub mod explain;
mod gate;
mod index;
mod load;
mod loaded;
pub mod provenance;
mod request;
mod schema;
mod store;

pub use approval::{ApprovalNeeded, Approvers, AskingPolicy};
pub use cedar_policy::EntityUid;
pub use decision::{Decision, PolicyError, RequestError, ShadowVerdict};
pub use engine::{ApproveRequest, EngineSources, PolicyEngine};
pub use gate::{CapabilityDecision, CedarGate};
pub use index::{IndexError, PolicyIndex};
pub use load::{CombinedSchema, LoadErrors, Location, Problem, read_entities};
pub use loaded::{LoadedPolicies, PolicyIds, load_policies, load_policies_with, read_policy_dir};
pub use request::{Common, RequestEntity, uid};
pub use schema::{CedarType, RESERVED_ACTIONS, SchemaError, ToolAction};
pub use store::{PolicyStore, WatchGuard};
