//! Journey KPIs from the message log and the runs: per journey, step,
//! variant and channel, over a time range. Definitions (each rate with its
//! denominator) are in the README. Everything is one indexed aggregate
//! query per figure group, so a dashboard over millions of events stays
//! fast.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use crate::journeys::definition::JourneyDef;
use crate::store::{Store, StoreError};

/// Counts for one group of messages (a step, a variant, a channel, or the
/// whole journey).
/// Read straight from the per-group query; the figures it does not
/// select (delivered, responded, converted, rates) start at zero.
#[derive(Clone, Debug, Default, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct MessageKpis {
    pub step: Option<String>,
    pub variant: Option<String>,
    pub channel: Option<String>,
    /// Queued for sending (passed the policy gate).
    pub queued: i64,
    /// Handed over to the provider.
    pub sent: i64,
    /// Refused or given up on.
    pub failed: i64,
    pub bounced_hard: i64,
    pub bounced_soft: i64,
    /// Sent minus bounced.
    #[sqlx(default)]
    pub delivered: i64,
    pub opened_unique: i64,
    pub opened_total: i64,
    pub clicked_unique: i64,
    pub clicked_total: i64,
    pub unsubscribed: i64,
    pub complained: i64,
    /// Messages followed by a response event within the attribution window.
    #[sqlx(default)]
    pub responded: i64,
    /// Messages followed by the run's goal within the attribution window.
    #[sqlx(default)]
    pub converted: i64,
    #[sqlx(skip)]
    pub rates: Rates,
}

/// Each rate is a share in 0..1 (`None` when its denominator is 0).
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rates {
    /// bounced (hard + soft) ÷ sent
    pub bounce: Option<f64>,
    /// unique opens ÷ delivered
    pub open: Option<f64>,
    /// unique clicks ÷ delivered
    pub click: Option<f64>,
    /// unique clicks ÷ unique opens
    pub click_to_open: Option<f64>,
    /// total opens ÷ unique opens
    pub open_factor: Option<f64>,
    /// total clicks ÷ unique clicks
    pub click_factor: Option<f64>,
    /// unsubscribes ÷ delivered
    pub unsubscribe: Option<f64>,
    /// complaints ÷ delivered
    pub complaint: Option<f64>,
    /// responded ÷ delivered
    pub response: Option<f64>,
    /// converted ÷ delivered
    pub conversion: Option<f64>,
}

fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

impl MessageKpis {
    fn finish(&mut self) {
        self.delivered = (self.sent - self.bounced_hard - self.bounced_soft).max(0);
        self.rates = Rates {
            bounce: ratio(self.bounced_hard + self.bounced_soft, self.sent),
            open: ratio(self.opened_unique, self.delivered),
            click: ratio(self.clicked_unique, self.delivered),
            click_to_open: ratio(self.clicked_unique, self.opened_unique),
            open_factor: ratio(self.opened_total, self.opened_unique),
            click_factor: ratio(self.clicked_total, self.clicked_unique),
            unsubscribe: ratio(self.unsubscribed, self.delivered),
            complaint: ratio(self.complained, self.delivered),
            response: ratio(self.responded, self.delivered),
            conversion: ratio(self.converted, self.delivered),
        };
    }

    fn add(&mut self, other: &MessageKpis) {
        self.queued += other.queued;
        self.sent += other.sent;
        self.failed += other.failed;
        self.bounced_hard += other.bounced_hard;
        self.bounced_soft += other.bounced_soft;
        self.opened_unique += other.opened_unique;
        self.opened_total += other.opened_total;
        self.clicked_unique += other.clicked_unique;
        self.clicked_total += other.clicked_total;
        self.unsubscribed += other.unsubscribed;
        self.complained += other.complained;
        self.responded += other.responded;
        self.converted += other.converted;
    }
}

/// The figures of one journey over a time range.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JourneyKpis {
    pub journey: String,
    pub from: i64,
    pub to: i64,
    pub attribution_window_ms: i64,
    /// Runs started in the range.
    pub entered: i64,
    /// Of those, runs that reached a goal within the attribution window.
    pub converted: i64,
    /// converted ÷ entered
    pub conversion_rate: Option<f64>,
    /// Time from entry to goal of the converted runs.
    pub time_to_goal_median_ms: Option<i64>,
    pub time_to_goal_p90_ms: Option<i64>,
    /// Sum of the goal events' `value`.
    pub revenue: f64,
    /// The journey's fixed cost plus its cost per message × sent.
    pub cost: f64,
    /// (revenue − cost) ÷ cost
    pub roi: Option<f64>,
    pub messages: MessageKpis,
    pub by_step: Vec<MessageKpis>,
}

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

/// Computes a journey's KPIs for messages queued and runs started in
/// `[from, to)`.
pub async fn journey_kpis(
    store: &Store,
    def: &JourneyDef,
    from: i64,
    to: i64,
) -> Result<JourneyKpis, StoreError> {
    let settings = def.kpi.clone().unwrap_or_default();
    let window = settings.attribution_window.millis;
    // One pass over the journey's messages: each carries its own counters.
    let rows = sqlx::query_as::<_, MessageKpis>(
        "SELECT step, variant, channel, COUNT(*) AS queued, \
           COUNT(CASE WHEN status = 'delivered' THEN 1 END) AS sent, \
           COUNT(CASE WHEN status = 'failed' THEN 1 END) AS failed, \
           COUNT(CASE WHEN bounce = 'hard' THEN 1 END) AS bounced_hard, \
           COUNT(CASE WHEN bounce = 'soft' THEN 1 END) AS bounced_soft, \
           COUNT(CASE WHEN opens > 0 THEN 1 END) AS opened_unique, \
           CAST(COALESCE(SUM(opens), 0) AS BIGINT) AS opened_total, \
           COUNT(CASE WHEN clicks > 0 THEN 1 END) AS clicked_unique, \
           CAST(COALESCE(SUM(clicks), 0) AS BIGINT) AS clicked_total, \
           COUNT(CASE WHEN unsubscribes > 0 THEN 1 END) AS unsubscribed, \
           COUNT(CASE WHEN complaints > 0 THEN 1 END) AS complained \
         FROM outbox WHERE journey = $1 AND created_at >= $2 AND created_at < $3 \
         GROUP BY step, variant, channel ORDER BY step, variant, channel",
    )
    .bind(def.name.clone())
    .bind(from)
    .bind(to)
    .fetch_all(store.pool())
    .await?;
    let mut groups: BTreeMap<(String, Option<String>, String), MessageKpis> = BTreeMap::new();
    for kpis in rows {
        // Step and channel are never null in the outbox.
        let key = (
            kpis.step.clone().unwrap_or_default(),
            kpis.variant.clone(),
            kpis.channel.clone().unwrap_or_default(),
        );
        groups.insert(key, kpis);
    }

    // Conversions credited to every message of the run sent within the
    // window before the goal.
    let rows = sqlx::query(
        "SELECT o.step, o.variant, o.channel, COUNT(DISTINCT o.id) AS converted \
         FROM journey_runs r JOIN outbox o ON o.run_id = r.id \
         WHERE r.journey = $1 AND r.status = 'converted' \
           AND o.created_at >= $2 AND o.created_at < $3 AND o.status = 'delivered' \
           AND r.ended_at >= o.sent_at AND r.ended_at <= o.sent_at + $4 \
         GROUP BY o.step, o.variant, o.channel",
    )
    .bind(def.name.clone())
    .bind(from)
    .bind(to)
    .bind(window)
    .fetch_all(store.pool())
    .await?;
    for row in &rows {
        let key = (
            row.try_get("step")?,
            row.try_get("variant")?,
            row.try_get("channel")?,
        );
        if let Some(group) = groups.get_mut(&key) {
            group.converted = row.try_get("converted")?;
        }
    }
    // Responses: a configured event of the contact within the window after
    // the message.
    for kind in &settings.response_events {
        let rows = sqlx::query(
            "SELECT o.step, o.variant, o.channel, COUNT(DISTINCT o.id) AS responded \
             FROM outbox o WHERE o.journey = $1 AND o.created_at >= $2 AND o.created_at < $3 AND o.status = 'delivered' \
               AND EXISTS (SELECT 1 FROM events e WHERE e.contact_id = o.contact_id AND e.kind = $4 \
                           AND e.at >= o.sent_at AND e.at <= o.sent_at + $5) \
             GROUP BY o.step, o.variant, o.channel",
        )
        .bind(def.name.clone())
        .bind(from)
        .bind(to)
        .bind(kind.clone())
        .bind(window)
        .fetch_all(store.pool())
        .await?;
        for row in &rows {
            let key = (
                row.try_get("step")?,
                row.try_get("variant")?,
                row.try_get("channel")?,
            );
            if let Some(group) = groups.get_mut(&key) {
                group.responded += row.try_get::<i64, _>("responded")?;
            }
        }
    }

    let mut total = MessageKpis::default();
    let mut by_step: Vec<MessageKpis> = groups.into_values().collect();
    for group in &mut by_step {
        group.responded = group.responded.min(group.sent);
        total.add(group);
        group.finish();
    }
    total.finish();

    // Runs: counted in the database; only the converted ones come back,
    // for their times to goal.
    let entered: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM journey_runs WHERE journey = $1 AND started_at >= $2 AND started_at < $3",
    )
    .bind(def.name.clone())
    .bind(from)
    .bind(to)
    .fetch_one(store.pool())
    .await?
    .try_get("n")?;
    let converted_runs = sqlx::query(
        "SELECT ended_at - started_at AS took, conversion_value FROM journey_runs \
         WHERE journey = $1 AND started_at >= $2 AND started_at < $3 \
           AND status = 'converted' AND ended_at - started_at <= $4",
    )
    .bind(def.name.clone())
    .bind(from)
    .bind(to)
    .bind(window)
    .fetch_all(store.pool())
    .await?;
    let mut durations = Vec::with_capacity(converted_runs.len());
    let mut revenue = 0.0;
    for run in &converted_runs {
        durations.push(run.try_get::<i64, _>("took")?);
        revenue += run
            .try_get::<Option<f64>, _>("conversion_value")?
            .unwrap_or(0.0);
    }
    durations.sort_unstable();
    let converted = durations.len() as i64;
    let cost = settings.cost + settings.cost_per_message * total.sent as f64;
    Ok(JourneyKpis {
        journey: def.name.clone(),
        from,
        to,
        attribution_window_ms: window,
        entered,
        converted,
        conversion_rate: ratio(converted, entered),
        time_to_goal_median_ms: percentile(&durations, 0.5),
        time_to_goal_p90_ms: percentile(&durations, 0.9),
        revenue,
        cost,
        roi: (cost > 0.0).then(|| (revenue - cost) / cost),
        messages: total,
        by_step,
    })
}
