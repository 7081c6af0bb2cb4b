//! The timeline as a job sees it inside its transaction: the one writer of
//! events nachfass causes itself, and reads of single events.

use std::collections::{BTreeMap, HashMap};

use sqlx::{AnyConnection, Row};

use super::{StoreError, new_id};
use crate::model::{Event, Fields};

/// Writes an event nachfass caused (`journey.entered`, `message.sent`)
/// inside the caller's transaction. It is not routed to journeys again,
/// and it is born applied (`processed_at`): nothing scores it, and the
/// batched pipeline's activity counts it like every applied event.
pub async fn record_in(
    conn: &mut AnyConnection,
    contact_id: &str,
    kind: &str,
    properties: Fields,
    now: i64,
) -> Result<Event, StoreError> {
    let event = Event {
        id: new_id("e"),
        contact_id: contact_id.to_owned(),
        kind: kind.to_owned(),
        at: now,
        properties,
    };
    let json =
        serde_json::to_string(&event.properties).map_err(|e| StoreError::Invalid(e.to_string()))?;
    sqlx::query(
        "INSERT INTO events (id, contact_id, kind, at, properties, received_at, processed_at) \
         VALUES ($1, $2, $3, $4, $5, $4, $4)",
    )
    .bind(event.id.clone())
    .bind(event.contact_id.clone())
    .bind(event.kind.clone())
    .bind(now)
    .bind(json)
    .execute(conn)
    .await?;
    // Not counted in `event_days`: that counts touchpoints, and a hot
    // counter row inside every job's transaction would serialize the
    // scheduler.
    Ok(event)
}

pub async fn event_in(conn: &mut AnyConnection, id: &str) -> Result<Option<Event>, StoreError> {
    let row = sqlx::query("SELECT id, contact_id, kind, at, properties FROM events WHERE id = $1")
        .bind(id.to_owned())
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(super::events::from_row).transpose()
}

/// The events of `ids` that exist, by id: [`event_in`] for many at once.
pub async fn events_in(
    conn: &mut AnyConnection,
    dialect: super::Dialect,
    ids: &[String],
) -> Result<HashMap<String, Event>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT id, contact_id, kind, at, properties FROM events WHERE {}",
        super::bulk::json_in(dialect, "id", 1)
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(super::bulk::to_json(ids)?)
        .fetch_all(conn)
        .await?;
    let mut events = HashMap::with_capacity(rows.len());
    for row in rows {
        let event = super::events::from_row(&row)?;
        events.insert(event.id.clone(), event);
    }
    Ok(events)
}

/// When the contact last had an event of each kind.
pub async fn last_event_times_in(
    conn: &mut AnyConnection,
    contact_id: &str,
    kinds: &[String],
) -> Result<BTreeMap<String, i64>, StoreError> {
    let mut last = BTreeMap::new();
    for kind in kinds {
        let row =
            sqlx::query("SELECT MAX(at) AS at FROM events WHERE contact_id = $1 AND kind = $2")
                .bind(contact_id.to_owned())
                .bind(kind.clone())
                .fetch_one(&mut *conn)
                .await?;
        if let Some(at) = row.try_get::<Option<i64>, _>("at")? {
            last.insert(kind.clone(), at);
        }
    }
    Ok(last)
}
