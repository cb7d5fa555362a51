//! The engine's configuration: how instances are allocated, the memory
//! and time bounds, and building the [`ToolRuntime`] from them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::address::InternalNetworks;
use crate::cache::ArtifactCache;
use crate::epoch::EpochTicker;
use crate::error::LoadError;
use crate::limits::Limits;
use crate::linker::build_linker;
use crate::runtime::ToolRuntime;
use crate::spare::{MAX_ON_DEMAND_SPARES, SpareBudget};

impl ToolRuntime {
    /// A builder with the defaults each of its settings documents.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }
}

/// How instances are allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Preallocated slots reused across calls: the fast path.
    Pooling {
        /// Instances that may be live at once across all calls.
        max_instances: u32,
    },
    /// mmap per instance; slower, but no up-front reservation.
    OnDemand,
}

/// Builder for a [`ToolRuntime`].
#[derive(Debug, Clone)]
pub struct RuntimeBuilder {
    allocation: Allocation,
    max_memory_bytes: u64,
    epoch_tick: Duration,
    default_limits: Limits,
    cache_dir: Option<PathBuf>,
    keep_resident_bytes: usize,
    internal_networks: InternalNetworks,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            allocation: Allocation::Pooling { max_instances: 256 },
            max_memory_bytes: 256 << 20,
            epoch_tick: Duration::from_millis(5),
            default_limits: Limits::default(),
            cache_dir: None,
            // Rust guests put a 1 MiB stack below their data; the hot pages
            // sit just under and just above that boundary.
            keep_resident_bytes: 4 << 20,
            internal_networks: InternalNetworks::default(),
        }
    }
}

impl RuntimeBuilder {
    /// How instances are allocated. Default: pooling, 256 instances.
    pub fn allocation(mut self, allocation: Allocation) -> Self {
        self.allocation = allocation;
        self
    }

    /// The ceiling for any call's `memory_bytes`: with pooling, each slot
    /// reserves this much address space.
    pub fn max_memory_bytes(mut self, bytes: u64) -> Self {
        self.max_memory_bytes = bytes;
        self
    }

    /// With pooling on Linux 6.7+, how much of each linear memory may stay
    /// resident between calls (only dirtied pages are reset). 0 disables.
    pub fn keep_resident_bytes(mut self, bytes: usize) -> Self {
        self.keep_resident_bytes = bytes;
        self
    }

    /// The granularity of wall-time enforcement.
    pub fn epoch_tick(mut self, tick: Duration) -> Self {
        self.epoch_tick = tick;
        self
    }

    /// The limits a call gets unless its context overrides them.
    pub fn default_limits(mut self, limits: Limits) -> Self {
        self.default_limits = limits;
        self
    }

    /// Internal address ranges an operator opened to named hosts. Default:
    /// none, so a request whose host resolves to a loopback, private,
    /// link-local, unique-local, multicast, unspecified or metadata
    /// address is refused before any policy is asked. The trade-off: an
    /// internal API must be named here as well as permitted by policy.
    pub fn internal_networks(mut self, networks: InternalNetworks) -> Self {
        self.internal_networks = networks;
        self
    }

    /// Where to keep compiled artifacts; without it every load compiles.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// The runtime: the engine, the linker and the epoch ticker.
    pub fn build(self) -> Result<ToolRuntime, LoadError> {
        let engine_err = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        if self.default_limits.memory_bytes > self.max_memory_bytes {
            return Err(LoadError::Engine(format!(
                "default memory limit {} exceeds the runtime's max_memory_bytes {}",
                self.default_limits.memory_bytes, self.max_memory_bytes
            )));
        }
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.memory_init_cow(true);
        if let Allocation::Pooling { max_instances } = self.allocation {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_component_instances(max_instances);
            // A Rust component instantiates three core modules (main,
            // WASI adapter, shim); a componentize-py one fourteen (CPython
            // and its libraries, dynamically linked). Core-instance slots
            // are address space until used, so the pool holds enough for
            // every instance to be a Python one; a Rust call reuses the
            // same few warm slots either way.
            pool.total_core_instances(max_instances * 16);
            pool.total_memories(max_instances * 2);
            pool.total_tables(max_instances * 4);
            pool.max_memory_size(self.max_memory_bytes as usize);
            // With PAGEMAP_SCAN (Linux 6.7+), a returned slot is reset by
            // rewriting only the pages the call dirtied and stays resident:
            // no madvise, no TLB shootdown, no page faults on reuse (an echo
            // call dirties about five pages). Nothing is left to decommit,
            // so batching would only hold slots back from reuse: with a
            // batch of 1 each slot returns at once and the next call gets
            // the same cache-warm slot (`ARCHITECTURE.md` gives the
            // measured gain and the bench that shows it).
            //
            // Without the ioctl, keeping memory resident would mean a memset
            // of the whole region, which costs more than it saves; there,
            // batching the madvise calls is the better trade.
            if self.keep_resident_bytes > 0 && PoolingAllocationConfig::is_pagemap_scan_available()
            {
                pool.pagemap_scan(Enabled::Yes);
                pool.linear_memory_keep_resident(self.keep_resident_bytes);
                pool.table_keep_resident(64 << 10);
                pool.decommit_batch_size(1);
            } else {
                pool.decommit_batch_size(8);
            }
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(engine_err)?;
        let linker = build_linker(&engine).map_err(engine_err)?;
        let cache = self.cache_dir.map(ArtifactCache::open).transpose()?;
        let ticker = EpochTicker::start(engine.clone(), self.epoch_tick);
        let max_spares = match self.allocation {
            Allocation::Pooling { max_instances } => max_instances / 2,
            Allocation::OnDemand => MAX_ON_DEMAND_SPARES,
        };
        Ok(ToolRuntime {
            engine,
            linker,
            cache,
            default_limits: self.default_limits,
            max_memory_bytes: self.max_memory_bytes,
            epoch_tick: self.epoch_tick,
            spares: Arc::new(SpareBudget {
                live: Default::default(),
                max: max_spares,
            }),
            internal_networks: Arc::new(self.internal_networks),
            _ticker: ticker,
        })
    }
}
