//! What the broker tells whoever keeps its metrics: refusals made before
//! any policy decision (which the audit log does not hold, so a flood
//! cannot fill it) and how long decisions take.

use std::time::Duration;

/// Told of what happens to tool calls outside the audit log. Called on the
/// calling thread: keep it to a few atomic updates.
pub trait CallObserver: Send + Sync {
    /// A call or a connection was refused by a limit before policy:
    /// `rate` (the agent's rate), `busy` (no free call slot in time) or
    /// `connections` (too many connections).
    fn refused(&self, reason: &'static str);
    /// A call's decision was recorded `took` after the call arrived.
    fn decided(&self, took: Duration);
}
