//! Contacts: identity by normalized email and/or external id, so ingesting
//! a known identity updates instead of duplicating.

use std::collections::HashMap;

use serde::Deserialize;
use sqlx::{Any, AnyConnection, Row, Transaction};

use super::{Store, StoreError, is_unique_violation, new_id};
use crate::model::{Contact, Fields};

/// What identifies a contact from outside.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
}

/// A contact to create or update. Attributes are merged: keys given here
/// replace stored ones, others stay.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactInput {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    #[schema(inline)]
    pub attributes: Fields,
}

/// A stored contact and whether this call created it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContactRecord {
    pub contact: Contact,
    pub created: bool,
}

/// `  Ada@Example.COM ` → `ada@example.com`; refuses what is no address.
pub fn normalize_email(raw: &str) -> Result<String, StoreError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        });
    if valid {
        Ok(email)
    } else {
        Err(StoreError::Invalid(format!(
            "`{raw}` is not an email address"
        )))
    }
}

pub(super) fn normalize_external_id(raw: &str) -> Result<String, StoreError> {
    let id = raw.trim();
    if id.is_empty() || id.len() > 200 {
        return Err(StoreError::Invalid(
            "external_id must be 1-200 characters".into(),
        ));
    }
    Ok(id.to_owned())
}

/// A time zone must be an IANA name (`Europe/Berlin`): send windows are
/// computed in it, and a name nobody knows would silently mean UTC.
fn validate_timezone(timezone: Option<&str>) -> Result<(), StoreError> {
    match timezone {
        Some(name) if name.parse::<chrono_tz::Tz>().is_err() => Err(StoreError::Invalid(format!(
            "timezone `{name}` is not an IANA time zone; use a name like `Europe/Berlin` or `UTC`"
        ))),
        _ => Ok(()),
    }
}

pub(super) fn from_row(row: &sqlx::any::AnyRow) -> Result<Contact, StoreError> {
    let attributes: String = row.try_get("attributes")?;
    Ok(Contact {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        external_id: row.try_get("external_id")?,
        phone: row.try_get("phone")?,
        timezone: row.try_get("timezone")?,
        score: row.try_get("score")?,
        stage: row.try_get("stage")?,
        attributes: serde_json::from_str(&attributes)
            .map_err(|e| StoreError::Invalid(format!("stored attributes are not valid: {e}")))?,
        segments: Vec::new(),
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
    })
}

impl Store {
    pub async fn contact(&self, id: &str) -> Result<Contact, StoreError> {
        let row = sqlx::query(
            "SELECT id, email, external_id, phone, timezone, score, stage, attributes, created_at, last_seen_at \
             FROM contacts WHERE id = $1",
        )
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("contact {id}")))?;
        from_row(&row)
    }

    /// Creates the contact, or updates the one with the same email or
    /// external id.
    pub async fn upsert_contact(
        &self,
        input: &ContactInput,
        now: i64,
    ) -> Result<ContactRecord, StoreError> {
        let mut tx = self.write_tx().await?;
        let record = upsert_in(&mut tx, input, now).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Deletes a contact and, by cascade, its events. Returns whether it existed.
    pub async fn delete_contact(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM contacts WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[derive(Clone, Copy)]
enum Key {
    Email,
    ExternalId,
}

async fn find_by(
    tx: &mut Transaction<'_, Any>,
    key: Key,
    value: &str,
) -> Result<Option<Contact>, StoreError> {
    let sql = match key {
        Key::Email => {
            "SELECT id, email, external_id, phone, timezone, score, stage, attributes, created_at, last_seen_at \
             FROM contacts WHERE email = $1"
        }
        Key::ExternalId => {
            "SELECT id, email, external_id, phone, timezone, score, stage, attributes, created_at, last_seen_at \
             FROM contacts WHERE external_id = $1"
        }
    };
    let row = sqlx::query(sql)
        .bind(value.to_owned())
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The upsert inside a caller's transaction, so ingesting an event for a
/// new identity creates the contact and the event atomically.
pub(super) async fn upsert_in(
    tx: &mut Transaction<'_, Any>,
    input: &ContactInput,
    now: i64,
) -> Result<ContactRecord, StoreError> {
    validate_timezone(input.timezone.as_deref())?;
    let email = input.email.as_deref().map(normalize_email).transpose()?;
    let external_id = input
        .external_id
        .as_deref()
        .map(normalize_external_id)
        .transpose()?;
    if email.is_none() && external_id.is_none() {
        return Err(StoreError::Invalid(
            "a contact needs an email or an external_id".into(),
        ));
    }
    let by_external = match &external_id {
        Some(id) => find_by(tx, Key::ExternalId, id).await?,
        None => None,
    };
    let by_email = match &email {
        Some(email) => find_by(tx, Key::Email, email).await?,
        None => None,
    };
    let existing = match (by_external, by_email) {
        (Some(a), Some(b)) if a.id != b.id => {
            return Err(StoreError::Conflict(format!(
                "the email belongs to contact {} and the external_id to contact {}; merge them first",
                b.id, a.id
            )));
        }
        (Some(found), _) | (None, Some(found)) => Some(found),
        (None, None) => None,
    };
    match existing {
        Some(mut contact) => {
            contact.email = email.or(contact.email);
            contact.external_id = external_id.or(contact.external_id);
            contact.phone = input.phone.clone().or(contact.phone);
            contact.timezone = input.timezone.clone().or(contact.timezone);
            contact.attributes.extend(input.attributes.clone());
            write_fields(&mut **tx, &contact, now).await?;
            Ok(ContactRecord {
                contact,
                created: false,
            })
        }
        None => {
            let contact = Contact {
                id: new_id("c"),
                email,
                external_id,
                phone: input.phone.clone(),
                timezone: input.timezone.clone(),
                score: 0,
                stage: "subscriber".into(),
                attributes: input.attributes.clone(),
                segments: Vec::new(),
                created_at: now,
                last_seen_at: None,
            };
            let attributes = serde_json::to_string(&contact.attributes)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            sqlx::query(
                "INSERT INTO contacts (id, email, external_id, phone, timezone, attributes, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(contact.id.clone())
            .bind(contact.email.clone())
            .bind(contact.external_id.clone())
            .bind(contact.phone.clone())
            .bind(contact.timezone.clone())
            .bind(attributes)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(conflict_on_unique)?;
            Ok(ContactRecord {
                contact,
                created: true,
            })
        }
    }
}

/// Writes the fields a caller can change: identities, phone, time zone,
/// attributes.
async fn write_fields<'e>(
    executor: impl sqlx::Executor<'e, Database = Any>,
    contact: &Contact,
    now: i64,
) -> Result<(), StoreError> {
    let attributes = serde_json::to_string(&contact.attributes)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    sqlx::query(
        "UPDATE contacts SET email = $1, external_id = $2, phone = $3, timezone = $4, \
         attributes = $5, updated_at = $6 WHERE id = $7",
    )
    .bind(contact.email.clone())
    .bind(contact.external_id.clone())
    .bind(contact.phone.clone())
    .bind(contact.timezone.clone())
    .bind(attributes)
    .bind(now)
    .bind(contact.id.clone())
    .execute(executor)
    .await
    .map_err(conflict_on_unique)?;
    Ok(())
}

fn conflict_on_unique(error: sqlx::Error) -> StoreError {
    if is_unique_violation(&error) {
        StoreError::Conflict("another contact has this email or external_id".into())
    } else {
        error.into()
    }
}

impl Store {
    /// Changes a contact by id: given fields replace stored ones (an email
    /// change included), attributes merge. Another contact's email or
    /// external id is a conflict.
    pub async fn update_contact(
        &self,
        id: &str,
        patch: &ContactInput,
        now: i64,
    ) -> Result<Contact, StoreError> {
        validate_timezone(patch.timezone.as_deref())?;
        let mut contact = self.contact(id).await?;
        if let Some(email) = &patch.email {
            contact.email = Some(normalize_email(email)?);
        }
        if let Some(external_id) = &patch.external_id {
            contact.external_id = Some(normalize_external_id(external_id)?);
        }
        contact.phone = patch.phone.clone().or(contact.phone);
        contact.timezone = patch.timezone.clone().or(contact.timezone);
        contact.attributes.extend(patch.attributes.clone());
        write_fields(&self.pool, &contact, now).await?;
        Ok(contact)
    }
}

/// The contact with its segments, or `None` once deleted.
pub async fn contact_in(conn: &mut AnyConnection, id: &str) -> Result<Option<Contact>, StoreError> {
    let row = sqlx::query(
        "SELECT id, email, external_id, phone, timezone, score, stage, attributes, created_at, last_seen_at \
         FROM contacts WHERE id = $1",
    )
    .bind(id.to_owned())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut contact = from_row(&row)?;
    let rows =
        sqlx::query("SELECT segment FROM segment_members WHERE contact_id = $1 ORDER BY segment")
            .bind(id.to_owned())
            .fetch_all(conn)
            .await?;
    contact.segments = rows
        .iter()
        .map(|r| r.try_get("segment"))
        .collect::<Result<_, _>>()?;
    Ok(Some(contact))
}

/// The contacts of `ids` that exist, with their segments, by id: what
/// [`contact_in`] reads for one, in two queries for all.
pub async fn contacts_in(
    conn: &mut AnyConnection,
    dialect: super::Dialect,
    ids: &[String],
) -> Result<HashMap<String, Contact>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let ids = super::bulk::to_json(ids)?;
    let sql = format!(
        "SELECT id, email, external_id, phone, timezone, score, stage, attributes, created_at, last_seen_at \
         FROM contacts WHERE {}",
        super::bulk::json_in(dialect, "id", 1)
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ids.clone())
        .fetch_all(&mut *conn)
        .await?;
    let mut contacts = HashMap::with_capacity(rows.len());
    for row in rows {
        let contact = from_row(&row)?;
        contacts.insert(contact.id.clone(), contact);
    }
    let sql = format!(
        "SELECT contact_id, segment FROM segment_members WHERE {} ORDER BY segment",
        super::bulk::json_in(dialect, "contact_id", 1)
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(conn)
        .await?;
    for row in rows {
        let id: String = row.try_get("contact_id")?;
        if let Some(contact) = contacts.get_mut(&id) {
            contact.segments.push(row.try_get("segment")?);
        }
    }
    Ok(contacts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::normalize_email;

    #[test]
    fn emails_are_normalized_or_refused() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@localhost",
            "a da@example.com",
            "a@b@c.de",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }
}
