//! Journey definitions: every saved version is kept, and one row per
//! journey says whether it is active.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};

/// One saved version of a journey.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JourneyVersion {
    pub name: String,
    pub version: i64,
    pub definition: String,
    pub active: bool,
    pub created_at: i64,
}

fn version_from_row(row: &sqlx::any::AnyRow) -> Result<JourneyVersion, StoreError> {
    Ok(JourneyVersion {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        definition: row.try_get("definition")?,
        active: row.try_get::<i64, _>("active")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

pub async fn definition_in(
    conn: &mut AnyConnection,
    name: &str,
    version: i64,
) -> Result<String, StoreError> {
    let row = sqlx::query("SELECT definition FROM journeys WHERE name = $1 AND version = $2")
        .bind(name.to_owned())
        .bind(version)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("journey {name} version {version}")))?;
    Ok(row.try_get("definition")?)
}

impl Store {
    /// Saves a definition as the journey's next version, unless it equals
    /// the latest one. Returns the version and whether it is new.
    pub async fn save_journey(
        &self,
        name: &str,
        definition: &str,
        now: i64,
    ) -> Result<(i64, bool), StoreError> {
        let mut tx = self.write_tx().await?;
        let latest = sqlx::query(
            "SELECT version, definition FROM journeys WHERE name = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(name.to_owned())
        .fetch_optional(&mut *tx)
        .await?;
        let (version, created) = match latest {
            Some(row) if row.try_get::<String, _>("definition")? == definition => {
                (row.try_get("version")?, false)
            }
            Some(row) => (row.try_get::<i64, _>("version")? + 1, true),
            None => (1, true),
        };
        if created {
            sqlx::query("INSERT INTO journeys (name, version, definition, created_at) VALUES ($1, $2, $3, $4)")
                .bind(name.to_owned())
                .bind(version)
                .bind(definition.to_owned())
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        set_active_in(&mut tx, name, true, now).await?;
        tx.commit().await?;
        Ok((version, created))
    }

    pub async fn set_journey_active(
        &self,
        name: &str,
        active: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let exists = sqlx::query("SELECT name FROM journey_states WHERE name = $1")
            .bind(name.to_owned())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if exists {
            set_active_in(&mut tx, name, active, now).await?;
        }
        tx.commit().await?;
        Ok(exists)
    }

    /// The latest version of every journey.
    pub async fn latest_journeys(&self) -> Result<Vec<JourneyVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.name, j.version, j.definition, s.active, j.created_at FROM journeys j \
             JOIN journey_states s ON s.name = j.name \
             WHERE j.version = (SELECT MAX(version) FROM journeys k WHERE k.name = j.name) ORDER BY j.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    pub async fn journey_versions(&self, name: &str) -> Result<Vec<JourneyVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.name, j.version, j.definition, s.active, j.created_at FROM journeys j \
             JOIN journey_states s ON s.name = j.name WHERE j.name = $1 ORDER BY j.version DESC",
        )
        .bind(name.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }
}

/// Whether any journey was ever saved, active or stopped (see
/// [`Store::routes_events_in`]).
pub(super) async fn any_journey_in(conn: &mut AnyConnection) -> Result<bool, StoreError> {
    let found = sqlx::query("SELECT name FROM journey_states LIMIT 1")
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

async fn set_active_in(
    conn: &mut AnyConnection,
    name: &str,
    active: bool,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM journey_states WHERE name = $1")
        .bind(name.to_owned())
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO journey_states (name, active, updated_at) VALUES ($1, $2, $3)")
        .bind(name.to_owned())
        .bind(i64::from(active))
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}
