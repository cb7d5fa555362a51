//! Corral's policy engine.
//!
//! - [`schema`]: the JSON Schema → Cedar mapping that gives each tool a
//!   typed action.
//! - [`load`]: a directory of `.cedar` files, `@id` on every policy, strict
//!   validation; errors with file:line:column.
//! - [`index`]: evaluating only the policies whose scope can match, with
//!   results identical to Cedar's full scan.
//! - [`engine`]: fail-closed decisions that name their deciding policies
//!   and the policy-set hash.
//! - [`store`]: the live set and hot reload.
//! - [`gate`]: `CapabilityGate` on Cedar for the tool runtime.
//!
//! This crate links Cedar and never wasmtime: it is what policy authors'
//! tooling builds.

pub mod engine;
pub mod gate;
pub mod index;
pub mod load;
pub mod schema;
pub mod store;

pub use engine::{
    Common, Decision, EngineSources, PolicyEngine, PolicyError, RequestEntity, RequestError,
    read_entities, uid,
};
pub use gate::{CapabilityDecision, CedarGate};
pub use load::{CombinedSchema, LoadErrors, Location, Problem};
pub use schema::{CedarType, ToolAction};
pub use store::{PolicyStore, WatchGuard};
