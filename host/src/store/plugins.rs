//! Plugins as cluster state: every uploaded version (component bytes and
//! manifest, addressed by SHA-256) and each plugin's live and previous
//! version. Nodes load from here; every change is announced on PostgreSQL
//! (`NOTIFY nachfass_plugins`) and found by a periodic reconcile anyway.

use std::collections::BTreeMap;

use sqlx::Row;

use super::tasks::enqueue_consequences_in;
use super::tracking::{AuditEntry, audit_from_row, audit_in};
use super::{Dialect, Store, StoreError};
use crate::runtime::Manifest;
use crate::runtime::capabilities::CapabilityDiff;

/// The PostgreSQL channel every plugin change is announced on.
pub const PLUGINS_CHANNEL: &str = "nachfass_plugins";

/// A stored plugin version, without its bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredVersion {
    pub sha256: String,
    pub manifest: Manifest,
}

/// Which version of a plugin serves its bindings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginState {
    pub name: String,
    pub world: String,
    pub live: String,
    pub previous: Option<String>,
}

/// What a version was granted: an admin's approval of capabilities beyond
/// the live version, and whether it was ever live (then it needs no review
/// to go live again).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    pub approved: Option<CapabilityDiff>,
    pub was_live: bool,
}

/// What a breaker's rollback did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BreakerRollback {
    /// The previous version is live again.
    RolledBack { to: String },
    /// The failing version is no longer live: another node acted first.
    NotLive,
    /// There is no previous version: the binding has to be paused.
    NoPrevious,
}

/// What saving a version did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    /// A new version.
    New,
    /// The same name, version and content was stored already.
    Unchanged,
}

impl Store {
    /// Stores a component with its manifest. The same `name@version` with
    /// other content, or a version of another world than the plugin's, is
    /// a conflict; nothing changes then.
    pub async fn save_plugin_version(
        &self,
        sha256: &str,
        manifest: &Manifest,
        component: &[u8],
        now: i64,
    ) -> Result<Saved, StoreError> {
        let json =
            serde_json::to_string(manifest).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut tx = self.write_tx().await?;
        let existing =
            sqlx::query("SELECT sha256, world, version FROM plugin_versions WHERE name = $1")
                .bind(manifest.name.clone())
                .fetch_all(&mut *tx)
                .await?;
        for row in &existing {
            let (hash, world, version): (String, String, String) = (
                row.try_get("sha256")?,
                row.try_get("world")?,
                row.try_get("version")?,
            );
            if world != manifest.world.as_str() {
                return Err(StoreError::Conflict(format!(
                    "plugin `{}` is a {world}; a new version cannot change it to a {}. Publish it under a new name",
                    manifest.name, manifest.world
                )));
            }
            if version == manifest.version {
                return if hash == sha256 {
                    Ok(Saved::Unchanged)
                } else {
                    Err(StoreError::Conflict(format!(
                        "{} is already installed with different content; give the new build a new version",
                        manifest.id()
                    )))
                };
            }
        }
        let same_bytes = sqlx::query("SELECT name, version FROM plugin_versions WHERE sha256 = $1")
            .bind(sha256.to_owned())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = same_bytes {
            let (name, version): (String, String) = (row.try_get("name")?, row.try_get("version")?);
            return Err(StoreError::Conflict(format!(
                "this component is stored already as {name}@{version}; a new version needs a new build"
            )));
        }
        sqlx::query(
            "INSERT INTO plugin_versions (sha256, name, version, world, manifest, component, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(sha256.to_owned())
        .bind(manifest.name.clone())
        .bind(manifest.version.clone())
        .bind(manifest.world.as_str())
        .bind(json)
        .bind(component.to_vec())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit_in(
            &mut tx,
            "operator",
            "plugin.uploaded",
            None,
            &serde_json::json!({ "plugin": manifest.name, "version": manifest.version, "sha256": sha256 }),
            now,
        )
        .await?;
        notify_in(&mut tx, self.dialect).await?;
        tx.commit().await?;
        Ok(Saved::New)
    }

    /// Every stored version, oldest first, without the component bytes.
    pub async fn plugin_versions(&self) -> Result<Vec<StoredVersion>, StoreError> {
        let rows =
            sqlx::query("SELECT sha256, manifest FROM plugin_versions ORDER BY created_at, sha256")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let manifest: String = row.try_get("manifest")?;
                Ok(StoredVersion {
                    sha256: row.try_get("sha256")?,
                    manifest: Manifest::from_json(manifest.as_bytes())
                        .map_err(|e| StoreError::Invalid(e.to_string()))?,
                })
            })
            .collect()
    }

    /// The component bytes of a stored version.
    pub async fn plugin_component(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        let row = sqlx::query("SELECT component FROM plugin_versions WHERE sha256 = $1")
            .bind(sha256.to_owned())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("plugin version {sha256}")))?;
        Ok(row.try_get("component")?)
    }

    /// Live and previous version of every plugin.
    pub async fn plugin_states(&self) -> Result<Vec<PluginState>, StoreError> {
        let rows = sqlx::query("SELECT name, world, live, previous FROM plugins ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(PluginState {
                    name: row.try_get("name")?,
                    world: row.try_get("world")?,
                    live: row.try_get("live")?,
                    previous: row.try_get("previous")?,
                })
            })
            .collect()
    }

    /// Makes a stored version live; the version live before becomes the
    /// previous one. `only_if_newer` leaves a newer or equal live version in
    /// place (how a plugins directory is imported). `expect_live` is the
    /// live version a capability review was made against: if another
    /// version went live meanwhile, nothing changes (a conflict). Returns
    /// whether the live version changed.
    pub async fn set_live_plugin(
        &self,
        name: &str,
        version: &str,
        only_if_newer: bool,
        expect_live: Option<&str>,
        actor: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let changed = set_live_in(
            &mut tx,
            self.dialect,
            name,
            version,
            only_if_newer,
            expect_live,
            actor,
            now,
        )
        .await?;
        if changed {
            notify_in(&mut tx, self.dialect).await?;
            tx.commit().await?;
        }
        Ok(changed)
    }

    /// Records an admin's approval of `granted` for `name@version` (added
    /// to earlier approvals) and makes the version live, in one
    /// transaction, only while `against` is still the live version the
    /// review was made against.
    pub async fn approve_plugin_version(
        &self,
        name: &str,
        version: &str,
        against: &str,
        granted: &CapabilityDiff,
        actor: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        let row =
            sqlx::query("SELECT approved FROM plugin_versions WHERE name = $1 AND version = $2")
                .bind(name.to_owned())
                .bind(version.to_owned())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| {
                    StoreError::NotFound(format!("plugin {name}@{version} is not installed"))
                })?;
        let earlier: Option<String> = row.try_get("approved")?;
        let approved = match earlier {
            Some(json) => approval_from_json(&json)?.merged(granted),
            None => granted.clone(),
        };
        let json =
            serde_json::to_string(&approved).map_err(|e| StoreError::Invalid(e.to_string()))?;
        sqlx::query(
            "UPDATE plugin_versions SET approved = $1, approved_by = $2, approved_at = $3 \
             WHERE name = $4 AND version = $5",
        )
        .bind(json)
        .bind(actor.to_owned())
        .bind(now)
        .bind(name.to_owned())
        .bind(version.to_owned())
        .execute(&mut *tx)
        .await?;
        audit_in(
            &mut tx,
            actor,
            "plugin.approved",
            None,
            &serde_json::json!({ "plugin": name, "version": version, "against": against, "approved": granted }),
            now,
        )
        .await?;
        set_live_in(
            &mut tx,
            self.dialect,
            name,
            version,
            false,
            Some(against),
            actor,
            now,
        )
        .await?;
        notify_in(&mut tx, self.dialect).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The review state of each stored version of `name`, by version.
    pub async fn plugin_grants(&self, name: &str) -> Result<BTreeMap<String, Grant>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, approved, went_live_at FROM plugin_versions WHERE name = $1",
        )
        .bind(name.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let approved: Option<String> = row.try_get("approved")?;
                let went_live_at: Option<i64> = row.try_get("went_live_at")?;
                Ok((
                    row.try_get("version")?,
                    Grant {
                        approved: approved.as_deref().map(approval_from_json).transpose()?,
                        was_live: went_live_at.is_some(),
                    },
                ))
            })
            .collect()
    }

    /// The audit log of plugin and binding changes (uploads, activations,
    /// rollbacks, breaker trips and resumes), oldest first.
    pub async fn plugin_audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, contact_id, detail FROM audit_log \
             WHERE action LIKE 'plugin.%' OR action LIKE 'binding.%' ORDER BY at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    /// The circuit breaker's rollback of `version`, only if it is still live
    /// (the first node to trip acts, the others find it done). The failed
    /// version is not kept as the previous one, so a second trip pauses
    /// instead of flipping back to it.
    pub async fn breaker_rollback(
        &self,
        name: &str,
        version: &str,
        reason: &str,
        now: i64,
    ) -> Result<BreakerRollback, StoreError> {
        let mut tx = self.write_tx().await?;
        let Some((live, previous)) = live_versions_in(&mut tx, self.dialect, name).await? else {
            return Ok(BreakerRollback::NotLive);
        };
        if live != version {
            return Ok(BreakerRollback::NotLive);
        }
        let Some(previous) = previous else {
            return Ok(BreakerRollback::NoPrevious);
        };
        sqlx::query(
            "UPDATE plugins SET live = $1, previous = NULL, updated_at = $2 WHERE name = $3",
        )
        .bind(previous.clone())
        .bind(now)
        .bind(name.to_owned())
        .execute(&mut *tx)
        .await?;
        enqueue_consequences_in(
            &mut tx,
            name,
            &format!("{name}@{previous} live again (circuit breaker)"),
            now,
        )
        .await?;
        audit_in(
            &mut tx,
            "breaker",
            "plugin.rolled_back",
            None,
            &serde_json::json!({ "plugin": name, "from": live, "to": previous, "reason": reason }),
            now,
        )
        .await?;
        notify_in(&mut tx, self.dialect).await?;
        tx.commit().await?;
        Ok(BreakerRollback::RolledBack { to: previous })
    }

    /// Makes the previous version live again (and the live one previous).
    /// Returns the version now live.
    pub async fn rollback_plugin(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<String, StoreError> {
        let mut tx = self.write_tx().await?;
        let (live, previous) = live_versions_in(&mut tx, self.dialect, name)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("no plugin named `{name}` is installed"))
            })?;
        let Some(previous) = previous else {
            return Err(StoreError::Conflict(format!(
                "plugin `{name}` has no previous version to roll back to"
            )));
        };
        sqlx::query("UPDATE plugins SET live = $1, previous = $2, updated_at = $3 WHERE name = $4")
            .bind(previous.clone())
            .bind(live.clone())
            .bind(now)
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?;
        enqueue_consequences_in(
            &mut tx,
            name,
            &format!("{name}@{previous} live again (rollback)"),
            now,
        )
        .await?;
        audit_in(
            &mut tx,
            actor,
            "plugin.rolled_back",
            None,
            &serde_json::json!({ "plugin": name, "from": live, "to": previous, "reason": reason }),
            now,
        )
        .await?;
        notify_in(&mut tx, self.dialect).await?;
        tx.commit().await?;
        Ok(previous)
    }
}

/// A plugin's live and previous versions, the row locked until the end
/// of the transaction on PostgreSQL (on SQLite the write transaction is
/// the lock). Two nodes changing the live version at once (an activation
/// and a breaker's rollback, two approvals) so take turns, the second
/// deciding on what the first wrote: read unlocked, a rollback could
/// undo an activation committed meanwhile, and two approvals of the same
/// live version could both pass their check.
async fn live_versions_in(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
    name: &str,
) -> Result<Option<(String, Option<String>)>, StoreError> {
    let sql = match dialect {
        Dialect::Postgres => "SELECT live, previous FROM plugins WHERE name = $1 FOR UPDATE",
        Dialect::Sqlite => "SELECT live, previous FROM plugins WHERE name = $1",
    };
    let row = sqlx::query(sql)
        .bind(name.to_owned())
        .fetch_optional(conn)
        .await?;
    row.map(|row| Ok((row.try_get("live")?, row.try_get("previous")?)))
        .transpose()
}

/// The body of [`Store::set_live_plugin`], inside the caller's
/// transaction; announcing and committing are the caller's.
#[allow(clippy::too_many_arguments)]
async fn set_live_in(
    tx: &mut sqlx::AnyConnection,
    dialect: Dialect,
    name: &str,
    version: &str,
    only_if_newer: bool,
    expect_live: Option<&str>,
    actor: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let stored = sqlx::query("SELECT world FROM plugin_versions WHERE name = $1 AND version = $2")
        .bind(name.to_owned())
        .bind(version.to_owned())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(stored) = stored else {
        let installed: Vec<String> =
            sqlx::query("SELECT version FROM plugin_versions WHERE name = $1 ORDER BY created_at")
                .bind(name.to_owned())
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| row.try_get("version"))
                .collect::<Result<_, _>>()?;
        return Err(if installed.is_empty() {
            StoreError::NotFound(format!("no plugin named `{name}` is installed"))
        } else {
            StoreError::NotFound(format!(
                "plugin `{name}` has no version {version}; installed: {}",
                installed.join(", ")
            ))
        });
    };
    let world: String = stored.try_get("world")?;
    let live = live_versions_in(&mut *tx, dialect, name)
        .await?
        .map(|(live, _)| live);
    if let Some(expected) = expect_live
        && live.as_deref() != Some(expected)
    {
        return Err(StoreError::Conflict(format!(
            "the live version of `{name}` changed from {expected} to {} meanwhile; look at what {version} asks for again",
            live.as_deref().unwrap_or("none")
        )));
    }
    match live {
        None => {
            sqlx::query(
                "INSERT INTO plugins (name, world, live, previous, updated_at) VALUES ($1, $2, $3, NULL, $4)",
            )
            .bind(name.to_owned())
            .bind(world)
            .bind(version.to_owned())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        Some(live) => {
            let newer = match (
                semver::Version::parse(version),
                semver::Version::parse(&live),
            ) {
                (Ok(new), Ok(old)) => new > old,
                _ => false,
            };
            if live == version || (only_if_newer && !newer) {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE plugins SET live = $1, previous = $2, updated_at = $3 WHERE name = $4",
            )
            .bind(version.to_owned())
            .bind(live)
            .bind(now)
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?;
        }
    }
    sqlx::query(
        "UPDATE plugin_versions SET went_live_at = $1 \
         WHERE name = $2 AND version = $3 AND went_live_at IS NULL",
    )
    .bind(now)
    .bind(name.to_owned())
    .bind(version.to_owned())
    .execute(&mut *tx)
    .await?;
    enqueue_consequences_in(&mut *tx, name, &format!("{name}@{version} live"), now).await?;
    audit_in(
        &mut *tx,
        actor,
        "plugin.activated",
        None,
        &serde_json::json!({ "plugin": name, "version": version }),
        now,
    )
    .await?;
    Ok(true)
}

fn approval_from_json(json: &str) -> Result<CapabilityDiff, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Invalid(format!("stored approval is not valid: {e}")))
}

/// Tells the other nodes (PostgreSQL only) that plugin state changed; the
/// notice is delivered when the transaction commits, never before.
pub(super) async fn notify_in(
    conn: &mut sqlx::AnyConnection,
    dialect: Dialect,
) -> Result<(), StoreError> {
    if dialect == Dialect::Postgres {
        // The channel is PLUGINS_CHANNEL; NOTIFY takes no bind parameters.
        sqlx::query("NOTIFY nachfass_plugins").execute(conn).await?;
    }
    Ok(())
}
