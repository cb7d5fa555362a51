//! What one agent may ask of the broker, and how fast.

use std::sync::{Arc, Condvar, Mutex};
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

/// The calls one agent may have running at once. Calls wait for a slot on
/// the thread that will run them (the connection's reader), so this is a
/// plain blocking semaphore, not an async one.
#[derive(Debug)]
pub(crate) struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A taken slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Slots>);

impl Slots {
    pub(crate) fn new(n: usize) -> Arc<Slots> {
        Arc::new(Slots {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        })
    }

    /// Takes a slot, waiting at most `timeout` for one.
    pub(crate) fn take(self: &Arc<Self>, timeout: Duration) -> Option<Slot> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if *free == 0 {
            let deadline = Instant::now() + timeout;
            while *free == 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                free = self
                    .freed
                    .wait_timeout(free, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        *free -= 1;
        Some(Slot(self.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
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

    #[test]
    fn slots_wait_then_give_up() {
        let slots = Slots::new(1);
        let first = slots.take(Duration::ZERO).expect("a free slot");
        assert!(slots.take(Duration::from_millis(20)).is_none());
        let waiter = {
            let slots = slots.clone();
            std::thread::spawn(move || slots.take(Duration::from_secs(10)).is_some())
        };
        std::thread::sleep(Duration::from_millis(20));
        drop(first);
        assert!(waiter.join().unwrap(), "a freed slot goes to the waiter");
    }
}
