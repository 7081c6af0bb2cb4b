//! Per-binding resource limits, their defaults and the server-wide maxima
//! a binding may not exceed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::manifest::World;

/// The instruction budget of one rule or scorer call: the figure Shopify
/// Functions use, far above what a real rule needs (a scorer call takes
/// a few thousand instructions) and far below a runaway loop's appetite.
pub const DEFAULT_FUEL: u64 = 11_000_000;

/// What one plugin call may use. Set per binding; defaults per world.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The CPU limit: wasm instructions the guest may execute (wasmtime
    /// fuel). Deterministic, unlike a time limit: a call that fits on an
    /// idle machine fits on a busy one.
    pub fuel: u64,
    /// Time the whole call may take, including waiting on the host (HTTP).
    /// Only a backstop for what fuel does not count (host waits); generous
    /// so that a loaded machine never fails a healthy plugin.
    #[serde(rename = "wall_time_ms", with = "millis")]
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
                fuel: DEFAULT_FUEL,
                wall_time: Duration::from_secs(1),
                memory_bytes: 32 << 20,
                max_output_bytes: 64 << 10,
            },
            // Connectors format, sign and parse: a larger budget, and wall
            // time for the provider's answer.
            World::Channel => Limits {
                fuel: 50 * DEFAULT_FUEL,
                wall_time: Duration::from_secs(10),
                memory_bytes: 64 << 20,
                max_output_bytes: 1 << 20,
            },
        }
    }

    /// Batches of many contacts get fuel and wall time in proportion, so a
    /// rule that may use 11M instructions per contact may use 1.1G for 100.
    pub fn scaled(&self, items: usize) -> Limits {
        let factor = u32::try_from(items.max(1)).unwrap_or(u32::MAX);
        Limits {
            fuel: self.fuel.saturating_mul(u64::from(factor)),
            wall_time: self.wall_time.saturating_mul(factor),
            max_output_bytes: self.max_output_bytes.saturating_mul(items.max(1)),
            ..self.clone()
        }
    }

    /// These limits with the fields of `overrides` that are set.
    pub fn with_overrides(&self, overrides: &LimitOverrides) -> Limits {
        Limits {
            fuel: overrides.fuel.unwrap_or(self.fuel),
            wall_time: overrides
                .wall_time_ms
                .map_or(self.wall_time, Duration::from_millis),
            memory_bytes: overrides.memory_bytes.unwrap_or(self.memory_bytes),
            max_output_bytes: overrides.max_output_bytes.unwrap_or(self.max_output_bytes),
        }
    }

    /// Refuses limits above the server's maxima (or of zero), naming each.
    pub fn check_within(&self, max: &RuntimeLimits) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut check = |name: &str, value: u128, limit: u128| {
            if value == 0 {
                problems.push(format!("{name} must be above 0"));
            } else if value > limit {
                problems.push(format!(
                    "{name} {value} is over the server's maximum of {limit}"
                ));
            }
        };
        check("fuel", u128::from(self.fuel), u128::from(max.max_fuel));
        check(
            "wall_time_ms",
            self.wall_time.as_millis(),
            max.max_wall_time.as_millis(),
        );
        check(
            "memory_bytes",
            self.memory_bytes as u128,
            max.max_memory_bytes as u128,
        );
        check(
            "max_output_bytes",
            self.max_output_bytes as u128,
            max.max_output_bytes as u128,
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Limits a binding sets for itself; what it leaves out keeps the world's
/// default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Instructions per call (wasmtime fuel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Wall-clock backstop per call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<usize>,
}

impl LimitOverrides {
    pub fn is_empty(&self) -> bool {
        *self == LimitOverrides::default()
    }
}

/// The default of [`RuntimeLimits::max_component_bytes`]: room for a
/// componentize-py component.
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 32 << 20;

/// Limits the whole runtime shares, and the maxima of per-binding limits.
#[derive(Clone, Debug)]
pub struct RuntimeLimits {
    /// Largest component accepted, checked before compiling. Python and
    /// JavaScript components carry their interpreter (componentize-py:
    /// ~18 MB, componentize-js: ~13 MB).
    pub max_component_bytes: usize,
    /// Largest linear memory any binding may ask for; sizes the pooling
    /// allocator's slots.
    pub max_memory_bytes: usize,
    /// Largest instruction budget a binding may ask for.
    pub max_fuel: u64,
    /// Longest wall-clock backstop a binding may ask for.
    pub max_wall_time: Duration,
    /// Largest output bound a binding may ask for.
    pub max_output_bytes: usize,
    /// Instances alive at once across all plugins (pool size; fewer under
    /// an address-space limit, see `runtime::pool`).
    pub max_instances: u32,
    /// Wasm stack per call; deep recursion traps here.
    pub max_wasm_stack: usize,
    /// Granularity of the wall-clock backstop (epoch deadline).
    pub epoch_tick: Duration,
    /// Count instructions (fuel). Off only to measure what metering costs:
    /// then the wall-clock backstop is the only CPU limit.
    pub consume_fuel: bool,
}

impl Default for RuntimeLimits {
    fn default() -> Self {
        RuntimeLimits {
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            max_memory_bytes: 64 << 20,
            max_fuel: 1_000 * DEFAULT_FUEL,
            max_wall_time: Duration::from_secs(60),
            max_output_bytes: 16 << 20,
            max_instances: 256,
            max_wasm_stack: 512 << 10,
            epoch_tick: Duration::from_millis(5),
            consume_fuel: true,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_maxima_hold() {
        let base = Limits::for_world(World::Scorer);
        let set = LimitOverrides {
            fuel: Some(20_000_000),
            ..LimitOverrides::default()
        };
        let limits = base.with_overrides(&set);
        assert_eq!(limits.fuel, 20_000_000);
        assert_eq!(limits.wall_time, base.wall_time);
        assert!(limits.check_within(&RuntimeLimits::default()).is_ok());
        let greedy = base.with_overrides(&LimitOverrides {
            fuel: Some(u64::MAX),
            memory_bytes: Some(0),
            ..LimitOverrides::default()
        });
        let why = greedy.check_within(&RuntimeLimits::default()).unwrap_err();
        assert!(why.contains("fuel") && why.contains("maximum"), "{why}");
        assert!(why.contains("memory_bytes must be above 0"), "{why}");
    }

    #[test]
    fn batches_scale_fuel() {
        let limits = Limits::for_world(World::SegmentRule).scaled(100);
        assert_eq!(limits.fuel, 100 * DEFAULT_FUEL);
    }
}
