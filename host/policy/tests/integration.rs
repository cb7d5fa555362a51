//! The crate's integration tests, one module per subject, in one binary
//! (each would otherwise link the crate and its dependencies again).

mod approval;
mod differential;
mod engine;
mod explain;
