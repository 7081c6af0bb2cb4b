//! Bindings (a plugin with its configuration, used as a scorer or a
//! segment), the score history and segment memberships.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::rates::Rate;
use super::tracking::audit_in;
use super::{Store, StoreError, is_unique_violation, new_id};
use crate::model::ScoreChange;
use crate::runtime::LimitOverrides;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BindingKind {
    Scorer,
    Segment,
    /// A channel connector that journeys send through.
    Channel,
}

impl BindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingKind::Scorer => "scorer",
            BindingKind::Segment => "segment",
            BindingKind::Channel => "channel",
        }
    }
}

/// A named use of a plugin. A segment's name is the segment's name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingDef {
    pub name: String,
    pub kind: BindingKind,
    /// Plugin name; its live version serves the binding unless `version`
    /// pins one.
    pub plugin: String,
    /// A pinned version (`1.2.0`) or semantic-version range (`^1.2`);
    /// absent, the binding follows the plugin's live version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What `host.config` answers. Numbers and booleans are accepted and
    /// kept as their text (`25`, `true`), the form plugins read. Only the
    /// keys the plugin's manifest declares.
    #[serde(default, deserialize_with = "config_values")]
    pub config: BTreeMap<String, String>,
    /// Hosts a channel binding may reach over HTTP (`host`, `host:port`,
    /// `*.example.com`); nothing else is reachable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_http: Vec<String>,
    /// Limits of this binding's calls; unset fields keep the world's
    /// defaults. Checked against the server's maxima when bound.
    #[serde(default, skip_serializing_if = "LimitOverrides::is_empty")]
    pub limits: LimitOverrides,
    /// A channel's delivery rate limit, for the whole cluster:
    /// `{"per_second": 10, "burst": 20}` or `{"per_minute": 30}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// Set (to the reason) when the circuit breaker paused the binding: it
    /// then contributes no score and changes no membership until an
    /// operator resumes it.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
}

/// Configuration values as strings, numbers or booleans; anything else
/// (objects, lists, null) is refused with the key named.
fn config_values<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(key, value)| {
            let text = match value {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "configuration key `{key}` must be a string, number or boolean, not {other}"
                    )));
                }
            };
            Ok((key, text))
        })
        .collect()
}

/// One recorded score change.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ScoreEntry {
    pub binding: String,
    pub delta: i64,
    pub reasons: Vec<String>,
    pub event_id: Option<String>,
    pub at: i64,
}

impl Store {
    pub async fn create_binding(&self, def: &BindingDef, now: i64) -> Result<(), StoreError> {
        let valid = !def.name.is_empty()
            && def.name.len() <= 64
            && def
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            return Err(StoreError::Invalid(format!(
                "binding name `{}` must be 1-64 characters of a-z, 0-9, `-` or `_`",
                def.name
            )));
        }
        let config =
            serde_json::to_string(&def.config).map_err(|e| StoreError::Invalid(e.to_string()))?;
        if def.kind != BindingKind::Channel && !def.allow_http.is_empty() {
            return Err(StoreError::Invalid(
                "only channel bindings may reach hosts over HTTP; remove allow_http".into(),
            ));
        }
        if let Some(bad) = def
            .allow_http
            .iter()
            .find(|h| h.is_empty() || h.contains([',', '/', ' ']))
        {
            return Err(StoreError::Invalid(format!(
                "allow_http entry `{bad}` must be a host, host:port or *.domain"
            )));
        }
        let limits =
            serde_json::to_string(&def.limits).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let rate = rate_column(def)?;
        let mut tx = self.write_tx().await?;
        // A bucket left by an earlier binding of this name starts over.
        sqlx::query("DELETE FROM rate_buckets WHERE binding = $1")
            .bind(def.name.clone())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO bindings (name, kind, plugin, config, allow_http, limits, created_at, version, rate) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(def.name.clone())
            .bind(def.kind.as_str())
            .bind(def.plugin.clone())
            .bind(config)
            .bind(def.allow_http.join(","))
            .bind(limits)
            .bind(now)
            .bind(def.version.clone())
            .bind(rate)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("a binding named `{}` exists", def.name))
                } else {
                    e.into()
                }
            })?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn bindings(&self, kind: BindingKind) -> Result<Vec<BindingDef>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        bindings_in(&mut conn, kind).await
    }

    /// Adds a score change to the contact's score and history, atomically.
    /// Returns the new score.
    pub async fn apply_score(
        &self,
        contact_id: &str,
        binding: &str,
        change: &ScoreChange,
        event_id: Option<&str>,
        now: i64,
    ) -> Result<i64, StoreError> {
        let reasons = serde_json::to_string(&change.reasons)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO score_changes (id, contact_id, binding, delta, reasons, event_id, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new_id("s"))
        .bind(contact_id.to_owned())
        .bind(binding.to_owned())
        .bind(change.delta)
        .bind(reasons)
        .bind(event_id.map(str::to_owned))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "UPDATE contacts SET score = score + $1, updated_at = $2 WHERE id = $3 RETURNING score",
        )
        .bind(change.delta)
        .bind(now)
        .bind(contact_id.to_owned())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.try_get("score")?)
    }

    pub async fn score_history(&self, contact_id: &str) -> Result<Vec<ScoreEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT binding, delta, reasons, event_id, at FROM score_changes WHERE contact_id = $1 ORDER BY at, id",
        )
        .bind(contact_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let reasons: String = row.try_get("reasons")?;
                Ok(ScoreEntry {
                    binding: row.try_get("binding")?,
                    delta: row.try_get("delta")?,
                    reasons: serde_json::from_str(&reasons)
                        .map_err(|e| StoreError::Invalid(e.to_string()))?,
                    event_id: row.try_get("event_id")?,
                    at: row.try_get("at")?,
                })
            })
            .collect()
    }

    pub async fn set_stage(
        &self,
        contact_id: &str,
        stage: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE contacts SET stage = $1, updated_at = $2 WHERE id = $3")
            .bind(stage.to_owned())
            .bind(now)
            .bind(contact_id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The segments a contact belongs to.
    pub async fn memberships(&self, contact_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT segment FROM segment_members WHERE contact_id = $1 ORDER BY segment",
        )
        .bind(contact_id.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok(row.try_get("segment")?)).collect()
    }

    /// Sets membership; returns whether it changed.
    pub async fn set_membership(
        &self,
        segment: &str,
        contact_id: &str,
        member: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = if member {
            let inserted = sqlx::query(
                "INSERT INTO segment_members (segment, contact_id, since) VALUES ($1, $2, $3)",
            )
            .bind(segment.to_owned())
            .bind(contact_id.to_owned())
            .bind(now)
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(done) => done.rows_affected(),
                Err(e) if is_unique_violation(&e) => 0,
                Err(e) => return Err(e.into()),
            }
        } else {
            sqlx::query("DELETE FROM segment_members WHERE segment = $1 AND contact_id = $2")
                .bind(segment.to_owned())
                .bind(contact_id.to_owned())
                .execute(&self.pool)
                .await?
                .rows_affected()
        };
        Ok(done > 0)
    }
}

impl Store {
    /// Every binding: scorers, segments and channels.
    pub async fn all_bindings(&self) -> Result<Vec<BindingDef>, StoreError> {
        let mut all = self.bindings(BindingKind::Scorer).await?;
        all.extend(self.bindings(BindingKind::Segment).await?);
        all.extend(self.bindings(BindingKind::Channel).await?);
        Ok(all)
    }

    /// Removes a binding and, for a segment, its members. Returns whether it existed.
    pub async fn delete_binding(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM segment_members WHERE segment = $1")
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM rate_buckets WHERE binding = $1")
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM bindings WHERE name = $1")
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }
}

impl Store {
    /// Replaces a binding's plugin, pin, configuration, allow-list, limits
    /// and rate (its name and kind stay). A paused binding stays paused; a
    /// rate's bucket keeps its tokens, up to a new burst.
    pub async fn update_binding(&self, def: &BindingDef) -> Result<(), StoreError> {
        let config =
            serde_json::to_string(&def.config).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let limits =
            serde_json::to_string(&def.limits).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let rate = rate_column(def)?;
        let done = sqlx::query(
            "UPDATE bindings SET plugin = $1, version = $2, config = $3, allow_http = $4, limits = $5, rate = $6 \
             WHERE name = $7 AND kind = $8",
        )
        .bind(def.plugin.clone())
        .bind(def.version.clone())
        .bind(config)
        .bind(def.allow_http.join(","))
        .bind(limits)
        .bind(rate)
        .bind(def.name.clone())
        .bind(def.kind.as_str())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "{:?} binding {}",
                def.kind, def.name
            )));
        }
        Ok(())
    }

    /// Pauses a binding (the circuit breaker found no version to roll back
    /// to). Returns whether it was active until now.
    pub async fn pause_binding(
        &self,
        name: &str,
        reason: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let done =
            sqlx::query("UPDATE bindings SET paused = $1 WHERE name = $2 AND paused IS NULL")
                .bind(reason.to_owned())
                .bind(name.to_owned())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if done == 1 {
            audit_in(
                &mut tx,
                "breaker",
                "binding.paused",
                None,
                &serde_json::json!({ "binding": name, "reason": reason }),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(done == 1)
    }

    /// An operator resumes a paused binding. Returns whether it was paused.
    pub async fn resume_binding(&self, name: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let exists = sqlx::query("SELECT paused FROM bindings WHERE name = $1")
            .bind(name.to_owned())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("binding {name}")))?;
        let paused: Option<String> = exists.try_get("paused")?;
        if paused.is_none() {
            return Ok(false);
        }
        sqlx::query("UPDATE bindings SET paused = NULL WHERE name = $1")
            .bind(name.to_owned())
            .execute(&mut *tx)
            .await?;
        audit_in(
            &mut tx,
            "operator",
            "binding.resumed",
            None,
            &serde_json::json!({ "binding": name, "was": paused }),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl Store {
    /// The profile contribution `binding` last gave `contact_id`.
    pub async fn profile_points(&self, contact_id: &str, binding: &str) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT points FROM profile_scores WHERE contact_id = $1 AND binding = $2")
                .bind(contact_id.to_owned())
                .bind(binding.to_owned())
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some(row) => row.try_get("points")?,
            None => 0,
        })
    }

    pub async fn set_profile_points(
        &self,
        contact_id: &str,
        binding: &str,
        points: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM profile_scores WHERE contact_id = $1 AND binding = $2")
            .bind(contact_id.to_owned())
            .bind(binding.to_owned())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO profile_scores (contact_id, binding, points) VALUES ($1, $2, $3)")
            .bind(contact_id.to_owned())
            .bind(binding.to_owned())
            .bind(points)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The bindings of one kind, on the caller's connection (a job's
/// transaction must not wait for a second connection from the pool).
pub async fn bindings_in(
    conn: &mut sqlx::AnyConnection,
    kind: BindingKind,
) -> Result<Vec<BindingDef>, StoreError> {
    bindings_of_kinds_in(conn, kind, kind).await
}

/// The scorer and the segment bindings, in one read on the caller's
/// connection: what applying events runs.
pub async fn profile_bindings_in(
    conn: &mut sqlx::AnyConnection,
) -> Result<(Vec<BindingDef>, Vec<BindingDef>), StoreError> {
    let all = bindings_of_kinds_in(conn, BindingKind::Scorer, BindingKind::Segment).await?;
    Ok(all
        .into_iter()
        .partition(|def| def.kind == BindingKind::Scorer))
}

/// The bindings of kind `a` or `b`, by name.
async fn bindings_of_kinds_in(
    conn: &mut sqlx::AnyConnection,
    a: BindingKind,
    b: BindingKind,
) -> Result<Vec<BindingDef>, StoreError> {
    let rows = sqlx::query(
        "SELECT name, kind, plugin, version, config, allow_http, limits, rate, paused FROM bindings \
         WHERE kind IN ($1, $2) ORDER BY name",
    )
    .bind(a.as_str())
    .bind(b.as_str())
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let kind: String = row.try_get("kind")?;
            let kind = [a, b]
                .into_iter()
                .find(|k| k.as_str() == kind)
                .ok_or_else(|| StoreError::Invalid(format!("binding of unknown kind `{kind}`")))?;
            let config: String = row.try_get("config")?;
            let allow_http: String = row.try_get("allow_http")?;
            let limits: String = row.try_get("limits")?;
            let rate: Option<String> = row.try_get("rate")?;
            Ok(BindingDef {
                name: row.try_get("name")?,
                kind,
                plugin: row.try_get("plugin")?,
                version: row.try_get("version")?,
                config: serde_json::from_str(&config)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
                allow_http: allow_http
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect(),
                limits: serde_json::from_str(&limits)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
                rate: rate
                    .map(|r| serde_json::from_str(&r))
                    .transpose()
                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
                paused: row.try_get("paused")?,
            })
        })
        .collect()
}

/// A binding's rate as stored (JSON, or NULL), once it is checked: only
/// channels send, so only they may have one.
fn rate_column(def: &BindingDef) -> Result<Option<String>, StoreError> {
    let Some(rate) = &def.rate else {
        return Ok(None);
    };
    if def.kind != BindingKind::Channel {
        return Err(StoreError::Invalid(format!(
            "only channel bindings send messages and may have a rate; remove rate from {} binding `{}`",
            def.kind.as_str(),
            def.name
        )));
    }
    rate.check().map_err(StoreError::Invalid)?;
    serde_json::to_string(rate)
        .map(Some)
        .map_err(|e| StoreError::Invalid(e.to_string()))
}
