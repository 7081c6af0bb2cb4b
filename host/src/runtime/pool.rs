//! The engine and its pooling instance allocator.
//!
//! The pool reserves address space for every instance slot up front, so
//! taking a slot per call or per batch costs no `mmap`. What it reserves
//! is `slots × memories per slot × (reservation + guard)`: with wasmtime's
//! default of 4 GiB per memory (bounds checks elided by guard pages) 256
//! slots reserve about 2 TiB, which a process under an address-space limit
//! (`ulimit -v`, some containers) cannot map. So the engine is built with
//! the fastest layout that maps: guarded, then compact (each memory
//! reserves only the server's largest memory limit; wasmtime adds bounds
//! checks), then compact with ever fewer slots, down to
//! [`MIN_INSTANCES`]. What was chosen is logged and kept in
//! [`PoolPlan`].

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::limits::RuntimeLimits;

/// Fewest instance slots worth starting with: below this a busy server
/// would fail calls for want of a slot.
pub const MIN_INSTANCES: u32 = 8;

/// Linear memories per instance slot. A Rust guest has one; a Python or
/// JavaScript component may carry a second.
const MEMORIES_PER_INSTANCE: u32 = 2;

/// wasmtime's defaults for 64-bit hosts: a 4 GiB reservation and a 32 MiB
/// guard per memory let compiled code skip bounds checks.
const GUARDED_RESERVATION: u64 = 4 << 30;
const GUARDED_GUARD: u64 = 32 << 20;

/// The compact layout's guard: catches small offsets past the end without
/// a check; larger ones are checked.
const COMPACT_GUARD: u64 = 64 << 10;
/// Freed slots whose pages go back to the kernel together.
const DECOMMIT_BATCH: usize = 32;
/// Bytes of each table zeroed in place instead of given back.
const TABLE_KEEP_RESIDENT: usize = 16 << 10;
/// Bytes of each linear memory reset in place instead of given back.
const MEMORY_KEEP_RESIDENT: usize = 1 << 20;

/// How linear memories are laid out in the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// 4 GiB reserved per memory: no bounds checks in compiled code.
    Guarded,
    /// Each memory reserves the server's largest memory limit: much less
    /// address space, at the price of bounds checks.
    Compact,
}

/// What the pool was built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolPlan {
    pub layout: Layout,
    /// Instances alive at once across all plugins; one more fails with
    /// [`RuntimeErrorKind::Exhausted`](super::RuntimeErrorKind::Exhausted).
    pub instances: u32,
    /// Address space the linear-memory slots reserve (tables and stacks
    /// come on top: a few MiB per slot).
    pub memory_bytes_reserved: u64,
}

impl PoolPlan {
    fn new(layout: Layout, instances: u32, limits: &RuntimeLimits) -> PoolPlan {
        let per_memory = match layout {
            Layout::Guarded => {
                GUARDED_RESERVATION.max(limits.max_memory_bytes as u64) + GUARDED_GUARD
            }
            Layout::Compact => limits.max_memory_bytes as u64 + COMPACT_GUARD,
        };
        PoolPlan {
            layout,
            instances,
            memory_bytes_reserved: u64::from(instances * MEMORIES_PER_INSTANCE)
                .saturating_mul(per_memory),
        }
    }

    /// The plans to try, fastest first.
    fn candidates(limits: &RuntimeLimits) -> Vec<PoolPlan> {
        let most = limits.max_instances.max(1);
        let mut plans = vec![
            PoolPlan::new(Layout::Guarded, most, limits),
            PoolPlan::new(Layout::Compact, most, limits),
        ];
        let mut instances = most / 2;
        while instances >= MIN_INSTANCES {
            plans.push(PoolPlan::new(Layout::Compact, instances, limits));
            instances /= 2;
        }
        plans
    }

    fn config(&self, limits: &RuntimeLimits) -> Config {
        let slots = self.instances;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(8))
            .total_memories(slots.saturating_mul(MEMORIES_PER_INSTANCE))
            .total_tables(slots.saturating_mul(8))
            .total_stacks(slots)
            .max_memory_size(limits.max_memory_bytes)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            // A slot's pages are given back to the kernel in batches, and a
            // table's first pages are zeroed in place: each `madvise` made
            // every core flush its TLB, which was a fifth of a delivery's
            // cost. Either way the next instance sees nothing of the last.
            // Up to a MiB of a memory's pages stay resident and are reset
            // in place; with PAGEMAP_SCAN (Linux 6.7+) only the pages the
            // instance dirtied are, so reuse neither faults nor flushes.
            .decommit_batch_size(DECOMMIT_BATCH)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .consume_fuel(limits.consume_fuel)
            .max_wasm_stack(limits.max_wasm_stack)
            // Python and JavaScript components start from a pre-initialised
            // heap of 10+ MB: mapping it copy-on-write keeps a fresh
            // instance per call cheap (wasmtime's default, stated here
            // because the sandbox depends on it).
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // `perf` can name the plugins' compiled functions (it reads
        // /tmp/perf-<pid>.map) when an operator profiles a node.
        if std::env::var_os("NACHFASS_PERF_MAP").is_some() {
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if self.layout == Layout::Compact {
            wasm.memory_reservation(limits.max_memory_bytes as u64)
                .memory_guard_size(COMPACT_GUARD)
                .memory_reservation_for_growth(0);
        }
        wasm
    }
}

/// Builds the engine with the first plan whose pool maps.
pub fn engine(limits: &RuntimeLimits) -> anyhow::Result<(Engine, PoolPlan)> {
    let mut last_error = None;
    let candidates = PoolPlan::candidates(limits);
    for plan in &candidates {
        match Engine::new(&plan.config(limits)) {
            Ok(engine) => {
                if plan.layout != Layout::Guarded || plan.instances != limits.max_instances {
                    tracing::warn!(
                        instances = plan.instances,
                        layout = ?plan.layout,
                        reserved_mib = plan.memory_bytes_reserved >> 20,
                        "the plugin pool is smaller than configured: the address space is limited (ulimit -v)"
                    );
                } else {
                    tracing::debug!(instances = plan.instances, "plugin pool ready");
                }
                return Ok((engine, *plan));
            }
            Err(e) => {
                tracing::debug!(instances = plan.instances, layout = ?plan.layout, error = %e, "plugin pool does not fit");
                last_error = Some(e);
            }
        }
    }
    let smallest = candidates
        .last()
        .copied()
        .unwrap_or_else(|| PoolPlan::new(Layout::Compact, MIN_INSTANCES, limits));
    Err(anyhow::anyhow!(
        "the plugin pool cannot reserve its address space: even {} instance slots of {} MiB linear memory need {} MiB. Raise the address-space limit (`ulimit -v`) or lower the largest memory a binding may use. Last error: {}",
        smallest.instances,
        limits.max_memory_bytes >> 20,
        smallest.memory_bytes_reserved >> 20,
        last_error.map_or_else(String::new, |e| format!("{e:#}"))
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plans_go_from_fast_to_small() {
        let limits = RuntimeLimits::default();
        let plans = PoolPlan::candidates(&limits);
        assert_eq!(plans[0].layout, Layout::Guarded);
        assert_eq!(plans[0].instances, limits.max_instances);
        // 256 slots × 2 memories × (4 GiB + 32 MiB): what a default pool
        // used to ask for unconditionally.
        assert_eq!(
            plans[0].memory_bytes_reserved,
            512 * ((4 << 30) + (32 << 20))
        );
        assert_eq!(plans[1].layout, Layout::Compact);
        assert_eq!(
            plans[1].memory_bytes_reserved,
            512 * ((64 << 20) + (64 << 10)),
            "compact: each memory reserves the largest a binding may ask for"
        );
        let last = plans.last().unwrap();
        assert_eq!(last.instances, MIN_INSTANCES);
        assert!(
            plans
                .windows(2)
                .all(|w| w[0].memory_bytes_reserved > w[1].memory_bytes_reserved)
        );
    }
}
