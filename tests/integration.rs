//! Corral's cross-crate integration tests, one module per subject, in one
//! binary (each would otherwise link wasmtime, Cedar and SQLite again).

mod broker;
mod broker_limits;
mod cedar_gate;
mod observe;
mod python_tools;
mod registry;
mod rmcp_client;
mod tidy;
mod tool_runtime;
