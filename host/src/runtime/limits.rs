//! Per-binding resource limits and their defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::manifest::World;

/// What one plugin call may use. Set per binding; defaults per world.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Time the guest may spend executing wasm, enforced by epoch
    /// interruption. Host calls (HTTP) do not count here.
    #[serde(with = "millis")]
    pub cpu_time: Duration,
    /// Time the whole call may take, including waiting on the host (HTTP).
    #[serde(with = "millis")]
    pub wall_time: Duration,
    /// Linear memory the instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Upper bound on strings and lists the plugin returns: the total size of
    /// a score change's reasons, an error message, a callback's events.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::for_world(World::SegmentRule)
    }
}

impl Limits {
    pub fn for_world(world: World) -> Limits {
        match world {
            World::SegmentRule | World::Scorer => Limits {
                cpu_time: Duration::from_millis(10),
                wall_time: Duration::from_millis(100),
                memory_bytes: 32 << 20,
                max_output_bytes: 64 << 10,
            },
            World::Channel => Limits {
                cpu_time: Duration::from_secs(1),
                wall_time: Duration::from_secs(10),
                memory_bytes: 64 << 20,
                max_output_bytes: 1 << 20,
            },
        }
    }

    /// Batches of many contacts get CPU and wall time in proportion, so a
    /// rule that takes 10 ms per contact may take a second for 100.
    pub fn scaled(&self, items: usize) -> Limits {
        let factor = u32::try_from(items.max(1)).unwrap_or(u32::MAX);
        Limits {
            cpu_time: self.cpu_time.saturating_mul(factor),
            wall_time: self.wall_time.saturating_mul(factor),
            max_output_bytes: self.max_output_bytes.saturating_mul(items.max(1)),
            ..self.clone()
        }
    }
}

/// The default of [`RuntimeLimits::max_component_bytes`]: room for a
/// componentize-py component.
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 32 << 20;

/// Limits the whole runtime shares.
#[derive(Clone, Debug)]
pub struct RuntimeLimits {
    /// Largest component accepted, checked before compiling. Python and
    /// JavaScript components carry their interpreter (componentize-py:
    /// ~18 MB, componentize-js: ~13 MB).
    pub max_component_bytes: usize,
    /// Largest linear memory any binding may ask for; sizes the pooling
    /// allocator's slots.
    pub max_memory_bytes: usize,
    /// Instances alive at once across all plugins (pool size).
    pub max_instances: u32,
    /// Wasm stack per call; deep recursion traps here.
    pub max_wasm_stack: usize,
    /// Granularity of the CPU deadline.
    pub epoch_tick: Duration,
}

impl Default for RuntimeLimits {
    fn default() -> Self {
        RuntimeLimits {
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            max_memory_bytes: 64 << 20,
            max_instances: 256,
            max_wasm_stack: 512 << 10,
            epoch_tick: Duration::from_millis(1),
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
