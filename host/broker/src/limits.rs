//! What one agent may ask of the broker, and how fast.

use std::time::{Duration, Instant};

/// Per-agent limits. The defaults suit an interactive agent; raise them in
/// configuration for batch workloads.
#[derive(Debug, Clone)]
pub struct BrokerLimits {
    /// Largest JSON-RPC frame (one line) accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Tool calls running at once for one agent, over all its connections.
    /// Each connection also stops reading once this many of its requests are
    /// unanswered, so a client that floods requests only fills its own
    /// socket buffer.
    pub max_in_flight: usize,
    /// Sustained tool calls per second for one agent.
    pub rate_per_second: f64,
    /// Calls above the sustained rate that may come in a burst.
    pub rate_burst: f64,
    /// Longest a tool call may take, from its arrival to its result.
    pub call_timeout: Duration,
    /// A connection with nothing in flight that sends nothing for this long
    /// is closed.
    pub idle_timeout: Duration,
    /// A frame must be complete this long after its first byte (slowloris).
    pub frame_timeout: Duration,
    /// Connections one agent may hold open at once.
    pub max_connections: usize,
}

impl Default for BrokerLimits {
    fn default() -> Self {
        BrokerLimits {
            max_frame_bytes: 1 << 20,
            max_in_flight: 8,
            rate_per_second: 50.0,
            rate_burst: 100.0,
            call_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            frame_timeout: Duration::from_secs(10),
            max_connections: 4,
        }
    }
}

/// A token bucket.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        RateLimiter {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            updated: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is available.
    pub(crate) fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.rate == 0.0 {
            Err(Duration::MAX)
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10.0, 3.0);
        assert!(r.try_take(t0).is_ok());
        assert!(r.try_take(t0).is_ok());
        assert!(r.try_take(t0).is_ok());
        let wait = r.try_take(t0).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::from_millis(90),
            "{wait:?}"
        );
        assert!(r.try_take(t0 + Duration::from_millis(100)).is_ok());
        assert!(r.try_take(t0 + Duration::from_millis(100)).is_err());
    }
}
