//! What a tripped circuit breaker does, on every node: the cluster rolls
//! the plugin back to its previous version if it has one, else pauses the
//! binding (memberships kept, no score contribution) until an operator
//! resumes it. Recorded in the audit log and as a metric.

use crate::pipeline::Pipeline;
use crate::plugins::Plugins;
use crate::runtime::Plugin;
use crate::runtime::breaker::Trip;
use crate::store::StoreError;
use crate::store::plugins::BreakerRollback;

/// Counts one call of `plugin` for `binding`; acts when the breaker trips.
/// A failure to act is logged: the call's own result stands either way.
pub(crate) async fn observe(pipeline: &Pipeline, binding: &str, plugin: &Plugin, failed: bool) {
    let Some(trip) = pipeline
        .registry
        .breakers()
        .record(binding, plugin.id(), failed)
    else {
        return;
    };
    if let Err(e) = act(pipeline, plugin, &trip).await {
        tracing::error!(binding, plugin = %plugin.id(), error = %e, "circuit breaker could not act");
    }
}

async fn act(pipeline: &Pipeline, plugin: &Plugin, trip: &Trip) -> Result<(), StoreError> {
    let manifest = plugin.manifest();
    let now = pipeline.clock.now();
    metrics::counter!(
        "nachfass_plugin_breaker_trips_total",
        "binding" => trip.binding.clone(),
        "plugin" => manifest.name.clone(),
        "version" => manifest.version.clone()
    )
    .increment(1);
    let reason = format!(
        "circuit breaker: {} of {} calls of {} for binding {} failed",
        trip.failures, trip.calls, trip.plugin, trip.binding
    );
    tracing::warn!(binding = %trip.binding, plugin = %trip.plugin, failures = trip.failures, calls = trip.calls, "circuit breaker tripped");
    pipeline
        .store
        .audit(
            "breaker",
            "plugin.breaker_tripped",
            None,
            &serde_json::json!({
                "binding": trip.binding, "plugin": manifest.name, "version": manifest.version,
                "calls": trip.calls, "failures": trip.failures,
            }),
            now,
        )
        .await?;
    match pipeline
        .store
        .breaker_rollback(&manifest.name, &manifest.version, &reason, now)
        .await?
    {
        BreakerRollback::RolledBack { to } => {
            tracing::warn!(plugin = %manifest.name, live = %to, "rolled back by the circuit breaker");
            let plugins = Plugins::new(
                pipeline.store.clone(),
                pipeline.registry.clone(),
                pipeline.clock.clone(),
            );
            if let Err(e) = plugins.reconcile().await {
                tracing::warn!(error = %e, "reconcile after the breaker's rollback failed; the periodic one follows");
            }
        }
        BreakerRollback::NotLive => {
            // Not live, yet this binding runs it: the binding pins it, and
            // a rollback of the live version would not help.
            let pinned_to_it = pipeline
                .store
                .all_bindings()
                .await?
                .into_iter()
                .find(|def| def.name == trip.binding)
                .and_then(|def| {
                    pipeline
                        .registry
                        .resolve(&def.plugin, def.version.as_deref())
                })
                .is_some_and(|runs| runs.id() == trip.plugin);
            if pinned_to_it {
                pause(pipeline, trip, &reason, now).await?;
            }
        }
        BreakerRollback::NoPrevious => pause(pipeline, trip, &reason, now).await?,
    }
    Ok(())
}

async fn pause(pipeline: &Pipeline, trip: &Trip, reason: &str, now: i64) -> Result<(), StoreError> {
    if pipeline
        .store
        .pause_binding(&trip.binding, reason, now)
        .await?
    {
        tracing::warn!(binding = %trip.binding, "paused by the circuit breaker");
    }
    Ok(())
}
