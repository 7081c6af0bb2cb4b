//! Aggregates for the operator dashboard: events per day, message
//! outcomes, segment joins per day.

use sqlx::{FromRow, Row};

use super::outbox::OutboxStatus;
use super::{Store, StoreError};

/// Messages queued since a time, by what became of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromRow)]
pub struct MessageCounts {
    /// Handed to a provider.
    pub sent: i64,
    /// Opened at least once.
    pub opened: i64,
    /// Clicked at least once.
    pub clicked: i64,
    /// Reported bounced.
    pub bounced: i64,
}

impl Store {
    /// Touchpoints per day (days since the epoch, UTC) from `since_day`
    /// on, oldest first; days without events are left out.
    pub async fn events_per_day(&self, since_day: i64) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT day, CAST(SUM(events) AS BIGINT) AS n FROM event_days WHERE day >= $1 GROUP BY day ORDER BY day",
        )
        .bind(since_day)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("day")?, r.try_get("n")?)))
            .collect()
    }

    /// Messages queued since `since` (Unix ms), by outcome.
    pub async fn message_counts(&self, since: i64) -> Result<MessageCounts, StoreError> {
        let counts = sqlx::query_as::<_, MessageCounts>(
            "SELECT COUNT(CASE WHEN status = $1 THEN 1 END) AS sent, \
                    COUNT(CASE WHEN opens > 0 THEN 1 END) AS opened, \
                    COUNT(CASE WHEN clicks > 0 THEN 1 END) AS clicked, \
                    COUNT(CASE WHEN bounce IS NOT NULL THEN 1 END) AS bounced \
             FROM outbox WHERE created_at >= $2",
        )
        .bind(OutboxStatus::Delivered)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(counts)
    }

    /// How many of a segment's members joined on each day (days since the
    /// epoch, UTC), oldest first.
    pub async fn segment_joins_per_day(
        &self,
        segment: &str,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT since / 86400000 AS day, COUNT(*) AS n FROM segment_members WHERE segment = $1 GROUP BY since / 86400000 ORDER BY day",
        )
        .bind(segment.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("day")?, r.try_get("n")?)))
            .collect()
    }
}
