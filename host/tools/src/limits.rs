//! The limits of one call, and the limiter that holds a call's memory
//! and tables to them.

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Limits applied to one call. Every field has a safe default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest size any one linear memory of the instance may grow to.
    pub memory_bytes: u64,
    /// Wall-clock time from instantiation to the call's return, including
    /// time spent waiting on HTTP.
    pub wall_time: Duration,
    /// Largest output (JSON text) a call may return.
    pub output_bytes: u64,
    /// Total bytes of log messages one call may emit.
    pub log_bytes: u64,
    /// Largest file a call may read or write through the workspace.
    pub file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            wall_time: Duration::from_secs(10),
            output_bytes: 1 << 20,
            log_bytes: 64 << 10,
            file_bytes: 16 << 20,
        }
    }
}

/// Caps linear memory and table growth for one call, and remembers that
/// it refused a growth so the trap that usually follows (a guest's
/// allocation failure aborts) is reported as the memory limit.
pub(crate) struct CallLimiter {
    pub(crate) memory_bytes: usize,
    pub(crate) memory_refused: bool,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_the_limit_is_refused_and_remembered() {
        let mut limiter = CallLimiter {
            memory_bytes: 1 << 20,
            memory_refused: false,
        };
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!limiter.memory_refused);
        assert!(!limiter.memory_growing(0, (1 << 20) + 1, None).unwrap());
        assert!(limiter.memory_refused);
        assert!(!limiter.table_growing(0, 100_001, None).unwrap());
    }

    #[test]
    fn the_defaults_are_bounded() {
        let limits = Limits::default();
        assert!(limits.memory_bytes > 0 && limits.memory_bytes <= 1 << 30);
        assert!(!limits.wall_time.is_zero());
    }
}
