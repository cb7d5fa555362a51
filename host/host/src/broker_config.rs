//! `corral.toml`'s `[broker]` section: the limits each agent's broker
//! socket enforces.

use serde::Deserialize;

/// Limits each agent's broker socket enforces.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Sustained tool calls per second per agent.
    #[serde(default = "d_rate")]
    pub rate_per_second: f64,
    /// The bucket's size: calls an agent may make at once after a pause.
    #[serde(default = "d_burst")]
    pub rate_burst: f64,
    /// Tool calls running at once per agent.
    #[serde(default = "d_in_flight")]
    pub max_in_flight: usize,
    /// Connections one agent may hold open.
    #[serde(default = "d_connections")]
    pub max_connections: usize,
    /// The longest a tool call may take, in milliseconds.
    #[serde(default = "d_call_timeout")]
    pub call_timeout_ms: u64,
}

fn d_rate() -> f64 {
    50.0
}
fn d_burst() -> f64 {
    100.0
}
fn d_in_flight() -> usize {
    8
}
fn d_connections() -> usize {
    4
}
fn d_call_timeout() -> u64 {
    30_000
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            rate_per_second: d_rate(),
            rate_burst: d_burst(),
            max_in_flight: d_in_flight(),
            max_connections: d_connections(),
            call_timeout_ms: d_call_timeout(),
        }
    }
}
