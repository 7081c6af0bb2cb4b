//! Group commit of touchpoints: a group of events (a batch request, or
//! single requests that arrived together) is checked with a few reads and
//! written with one statement per table, in one transaction. Contacts are
//! found or created from the identities the events carry exactly as one
//! event at a time would (`contacts::upsert_in`), item by item in memory
//! over the contacts the group names, so a later item sees the contact an
//! earlier one created or changed.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use sqlx::Row;

use super::bulk::{self, Col, EventRow};
use super::contacts::{normalize_email, normalize_external_id};
use super::events::{PROCESS_GRACE_MS, validate_kind};
use super::suppressions::stop_of;
use super::{Dialect, Store, StoreError, cached_plans_from_here_in, is_unique_violation, new_id};
use crate::model::Event;
use crate::store::{EventInput, Ingested};

/// A contact the group names, as the group's items so far left it.
struct Named {
    email: Option<String>,
    external_id: Option<String>,
    /// Created by this group (inserted with its final identities).
    created: bool,
    /// Found by an identity: stored contacts get `updated_at` as
    /// `upsert_in` writes it.
    touched: bool,
}

/// The contacts of the group's identities, and which identity names which.
#[derive(Default)]
struct Identities {
    contacts: HashMap<String, Named>,
    by_email: HashMap<String, String>,
    by_external: HashMap<String, String>,
    /// Stored contacts whose identities an item changed, with the
    /// identities after that item, in item order.
    changes: Vec<(String, Option<String>, Option<String>)>,
    /// Contacts this group creates, in the order they were created.
    created: Vec<String>,
}

impl Identities {
    /// The contact of one item's identity, as `upsert_in` finds, updates or
    /// creates it: (contact id, created by this item).
    fn resolve(
        &mut self,
        email: Option<String>,
        external_id: Option<String>,
    ) -> Result<(String, bool), StoreError> {
        let by_external = external_id
            .as_ref()
            .and_then(|e| self.by_external.get(e))
            .cloned();
        let by_email = email.as_ref().and_then(|e| self.by_email.get(e)).cloned();
        let found = match (by_external, by_email) {
            (Some(a), Some(b)) if a != b => {
                return Err(StoreError::Conflict(format!(
                    "the email belongs to contact {b} and the external_id to contact {a}; merge them first"
                )));
            }
            (Some(found), _) | (None, Some(found)) => Some(found),
            (None, None) => None,
        };
        let Some(id) = found else {
            let id = new_id("c");
            if let Some(email) = &email {
                self.by_email.insert(email.clone(), id.clone());
            }
            if let Some(external_id) = &external_id {
                self.by_external.insert(external_id.clone(), id.clone());
            }
            self.contacts.insert(
                id.clone(),
                Named {
                    email,
                    external_id,
                    created: true,
                    touched: true,
                },
            );
            self.created.push(id.clone());
            return Ok((id, true));
        };
        let Some(named) = self.contacts.get_mut(&id) else {
            return Err(StoreError::Invalid(format!("contact {id} was not loaded")));
        };
        named.touched = true;
        let email = email.or_else(|| named.email.clone());
        let external_id = external_id.or_else(|| named.external_id.clone());
        if email == named.email && external_id == named.external_id {
            return Ok((id, false));
        }
        // The identity moves: the old values no longer name this contact.
        if let Some(old) = named.email.take() {
            self.by_email.remove(&old);
        }
        if let Some(old) = named.external_id.take() {
            self.by_external.remove(&old);
        }
        if let Some(email) = &email {
            self.by_email.insert(email.clone(), id.clone());
        }
        if let Some(external_id) = &external_id {
            self.by_external.insert(external_id.clone(), id.clone());
        }
        named.email = email.clone();
        named.external_id = external_id.clone();
        if !named.created {
            self.changes.push((id.clone(), email, external_id));
        }
        Ok((id, false))
    }
}

/// Where one item of the group stands.
enum Item {
    /// Answered already (a bad item, a resend of a stored event).
    Done(Result<Ingested, StoreError>),
    /// The same client event id as an earlier item of the group.
    Repeat(usize),
    /// To store, for this contact.
    Store { contact_id: String, created: bool },
}

/// When the effects of a group's own events are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applying {
    /// By a later transaction: each event waits unapplied, with the
    /// group's `process_events` backstop job.
    Later,
    /// In the group's own transaction, before it commits: the events are
    /// stored applied and need no backstop.
    InTransaction,
}

/// A group checked against the client event ids already stored, to be
/// written by [`Store::write_group_in`].
pub struct PreparedGroup {
    items: Vec<Option<Item>>,
}

/// A group written in a transaction that has not committed yet. With
/// [`Applying::InTransaction`] only its contacts are written so far:
/// [`Store::write_profile_effects_in`] inserts its events with the events
/// their effects cause, queues their route jobs and counts them on their
/// days, in the transaction's last statement. So the effects are computed
/// before the transaction switches to cached plans for its inserts, and
/// the day counters' rows are locked in one order and only until the
/// commit, not while plugins run.
pub struct WrittenGroup {
    events: Vec<GroupEvent>,
    items: Vec<Option<Item>>,
    /// Where in `events` the group's own events are (not system events).
    own: Vec<usize>,
    /// Whether `events` are still to insert (see above).
    unwritten: bool,
    /// Whether its events are routed to journeys: decided once per
    /// transaction, for the effects written after it too.
    pub(super) routes: bool,
}

/// One event of a group.
struct GroupEvent {
    /// Where in the group's inputs.
    index: usize,
    event: Event,
    /// Its contact was created for it.
    contact_created: bool,
    client_event_id: Option<String>,
    system: bool,
}

impl WrittenGroup {
    /// The group's own new events (not system events), in input order:
    /// those whose effects are to apply.
    pub fn fresh(&self) -> impl Iterator<Item = &Event> {
        self.own.iter().map(|&at| &self.events[at].event)
    }

    /// The group's events still to insert (none once they are): rows
    /// marked applied, and the ids of the system events among them (to
    /// route).
    pub(super) fn unwritten_rows(
        &self,
        now: i64,
    ) -> Result<(Vec<EventRow<'_>>, Vec<&str>), StoreError> {
        if !self.unwritten {
            return Ok((Vec::new(), Vec::new()));
        }
        let rows = self
            .events
            .iter()
            .map(|e| event_row(e, now, Some(now)))
            .collect::<Result<Vec<_>, _>>()?;
        let system = self
            .events
            .iter()
            .filter(|e| e.system)
            .map(|e| e.event.id.as_str())
            .collect();
        Ok((rows, system))
    }
}

/// The row of a group's event.
fn event_row(
    e: &GroupEvent,
    now: i64,
    processed_at: Option<i64>,
) -> Result<EventRow<'_>, StoreError> {
    Ok(EventRow {
        id: &e.event.id,
        contact_id: &e.event.contact_id,
        kind: &e.event.kind,
        at: e.event.at,
        properties: serde_json::to_string(&e.event.properties)
            .map_err(|err| StoreError::Invalid(err.to_string()))?
            .into(),
        client_event_id: e.client_event_id.as_deref(),
        received_at: now,
        processed_at,
    })
}

impl Store {
    /// The group commit of [`Store::ingest_events`]: one result per input.
    /// A database error (a concurrent writer took an identity or client
    /// event id meanwhile) fails the whole group, and nothing is written.
    pub(super) async fn ingest_group(
        &self,
        inputs: &[EventInput],
        now: i64,
    ) -> Result<Vec<Result<Ingested, StoreError>>, StoreError> {
        let prepared = {
            let mut conn = self.pool.acquire().await?;
            self.prepare_group_in(&mut conn, inputs).await?
        };
        let mut tx = self.write_tx().await?;
        let written = self
            .write_group_in(&mut tx, inputs, prepared, now, Applying::Later)
            .await?;
        tx.commit().await?;
        self.jobs_wake.notify();
        Ok(self.group_results(inputs, written, now).await)
    }

    /// The reads of a group before it is written: client event ids stored
    /// already (a resend is answered as one) or repeated within the group,
    /// and unknown kinds. On `conn`: SQLite's before the write
    /// transaction, so its one writer is not held for them; PostgreSQL's in
    /// it, which spares taking a second connection from the pool.
    pub async fn prepare_group_in(
        &self,
        conn: &mut sqlx::AnyConnection,
        inputs: &[EventInput],
    ) -> Result<PreparedGroup, StoreError> {
        let client_ids: Vec<&str> = inputs
            .iter()
            .filter_map(|i| i.client_event_id.as_deref())
            .collect();
        let known = self.events_by_client_ids_in(conn, &client_ids).await?;
        let mut items: Vec<Option<Item>> = Vec::with_capacity(inputs.len());
        // A client event id seen earlier in this group: the item that stores it.
        let mut first_with: HashMap<&str, usize> = HashMap::new();
        for (index, input) in inputs.iter().enumerate() {
            if let Err(e) = validate_kind(&input.kind) {
                items.push(Some(Item::Done(Err(e))));
                continue;
            }
            if let Some(client_id) = input.client_event_id.as_deref() {
                if let Some(existing) = known.get(client_id) {
                    let outcome = self.resent(input, existing.clone()).await;
                    items.push(Some(Item::Done(outcome)));
                    continue;
                }
                if let Some(&first) = first_with.get(client_id) {
                    items.push(Some(Item::Repeat(first)));
                    continue;
                }
                first_with.insert(client_id, index);
            }
            // Its contact is found in the transaction.
            items.push(None);
        }
        Ok(PreparedGroup { items })
    }

    /// Writes a prepared group in `tx`: finds or creates its contacts and
    /// stores its events. With [`Applying::InTransaction`] the caller
    /// computes their effects and writes them with the events
    /// ([`Store::write_profile_effects_in`]) in `tx` before it commits.
    pub async fn write_group_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        inputs: &[EventInput],
        prepared: PreparedGroup,
        now: i64,
        applying: Applying,
    ) -> Result<WrittenGroup, StoreError> {
        let PreparedGroup { mut items } = prepared;
        let dialect = self.dialect;
        let routes = self.routes_events_in(tx).await?;
        self.find_contacts(tx, inputs, &mut items).await?;
        let Identities {
            contacts: named,
            changes,
            created,
            ..
        } = self.resolve_identities(tx, inputs, &mut items).await?;

        // The events, and per contact the newest time of its own events.
        let mut events: Vec<GroupEvent> = Vec::new();
        let mut last_seen: BTreeMap<&str, i64> = BTreeMap::new();
        for (index, item) in items.iter().enumerate() {
            let Some(Item::Store {
                contact_id,
                created,
            }) = item
            else {
                continue;
            };
            let input = &inputs[index];
            let at = input.at.unwrap_or(now);
            if !input.system {
                let seen = last_seen.entry(contact_id.as_str()).or_insert(at);
                *seen = (*seen).max(at);
            }
            let event = Event {
                id: new_id("e"),
                contact_id: contact_id.clone(),
                kind: input.kind.clone(),
                at,
                properties: input.properties.clone(),
            };
            events.push(GroupEvent {
                index,
                event,
                contact_created: *created,
                client_event_id: input.client_event_id.clone(),
                system: input.system,
            });
        }
        let unwritten = applying == Applying::InTransaction;

        for (id, email, external_id) in &changes {
            sqlx::query(
                "UPDATE contacts SET email = $1, external_id = $2, updated_at = $3 WHERE id = $4",
            )
            .bind(email.clone())
            .bind(external_id.clone())
            .bind(now)
            .bind(id.clone())
            .execute(&mut **tx)
            .await
            .map_err(conflict_on_unique)?;
        }
        if !unwritten {
            // The reads are done; each event row is checked by its foreign key.
            cached_plans_from_here_in(tx, dialect).await?;
        }
        insert_contacts(tx, dialect, &created, &named, &last_seen, now).await?;
        if !unwritten {
            let rows = events
                .iter()
                .map(|e| event_row(e, now, e.system.then_some(now)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            bulk::insert_events_in(tx, dialect, &rows).await?;
        }
        // Stored contacts the group saw or found: `last_seen_at` moves
        // forward, `updated_at` as the identity upsert wrote it.
        let mut seen: BTreeMap<&str, SeenRow<'_>> = BTreeMap::new();
        for (id, at) in &last_seen {
            if !named.get(*id).is_some_and(|n| n.created) {
                seen.insert(
                    id,
                    SeenRow {
                        id,
                        at: Some(*at),
                        touched: false,
                    },
                );
            }
        }
        for (id, n) in &named {
            if n.touched && !n.created {
                seen.entry(id)
                    .or_insert(SeenRow {
                        id,
                        at: None,
                        touched: false,
                    })
                    .touched = true;
            }
        }
        let seen_rows: Vec<SeenRow<'_>> = seen.into_values().collect();
        update_seen(tx, dialect, &seen_rows, now).await?;
        let own: Vec<usize> = (0..events.len()).filter(|&at| !events[at].system).collect();
        if !routes {
            // No journey yet, so no event is routed, but a stop event still
            // suppresses: its route job applies that (see `stop_of`).
            let stops: Vec<super::jobs::RouteEvent> = events
                .iter()
                .filter(|e| stop_of(&e.event.kind, &e.event.properties, now).is_some())
                .map(|e| super::jobs::RouteEvent {
                    event_id: e.event.id.clone(),
                })
                .collect();
            super::jobs::enqueue_many_in(tx, dialect, &stops, now, now).await?;
        }
        if !unwritten {
            if routes {
                let system: Vec<super::jobs::RouteEvent> = events
                    .iter()
                    .filter(|e| e.system)
                    .map(|e| super::jobs::RouteEvent {
                        event_id: e.event.id.clone(),
                    })
                    .collect();
                super::jobs::enqueue_many_in(tx, dialect, &system, now, now).await?;
            }
            if !own.is_empty() {
                let job = super::jobs::ProcessEvents {
                    events: own.iter().map(|&at| events[at].event.id.clone()).collect(),
                };
                super::jobs::enqueue_in(tx, &job, now + PROCESS_GRACE_MS, now).await?;
            }
            bulk::count_days_in(
                tx,
                dialect,
                events.iter().map(|e| (e.event.id.as_str(), e.event.at)),
            )
            .await?;
        }
        Ok(WrittenGroup {
            events,
            items,
            own,
            unwritten,
            routes,
        })
    }

    /// One result per input of a group whose transaction committed.
    pub async fn group_results(
        &self,
        inputs: &[EventInput],
        written: WrittenGroup,
        now: i64,
    ) -> Vec<Result<Ingested, StoreError>> {
        let WrittenGroup { events, items, .. } = written;
        let mut results: Vec<Option<Result<Ingested, StoreError>>> =
            inputs.iter().map(|_| None).collect();
        for e in events {
            results[e.index] = Some(Ok(Ingested {
                event: e.event,
                duplicate: false,
                contact_created: e.contact_created,
            }));
        }
        for (index, item) in items.into_iter().enumerate() {
            match item {
                Some(Item::Done(outcome)) => results[index] = Some(outcome),
                // A resend inside the group answers like a resend of the stored one.
                Some(Item::Repeat(first)) => {
                    let outcome = match &results[first] {
                        Some(Ok(stored)) => self.resent(&inputs[index], stored.event.clone()).await,
                        _ => self.ingest_event(&inputs[index], now).await,
                    };
                    results[index] = Some(outcome);
                }
                Some(Item::Store { .. }) | None => {}
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(StoreError::Invalid("event was not stored".into()))))
            .collect()
    }

    /// Items naming a `contact_id`: stored if it exists, refused if not.
    async fn find_contacts(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        inputs: &[EventInput],
        items: &mut [Option<Item>],
    ) -> Result<(), StoreError> {
        let ids: Vec<&str> = items
            .iter()
            .zip(inputs)
            .filter(|(item, _)| item.is_none())
            .filter_map(|(_, input)| input.contact_id.as_deref())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT id FROM contacts WHERE {}",
            bulk::json_in(self.dialect, "id", 1)
        );
        let found: HashSet<String> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(bulk::to_json(&ids)?)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|row| row.try_get("id"))
            .collect::<Result<_, _>>()?;
        for (item, input) in items.iter_mut().zip(inputs) {
            let (None, Some(id)) = (&item, &input.contact_id) else {
                continue;
            };
            *item = Some(if found.contains(id) {
                Item::Store {
                    contact_id: id.clone(),
                    created: false,
                }
            } else {
                Item::Done(Err(StoreError::NotFound(format!("contact {id}"))))
            });
        }
        Ok(())
    }

    /// Items naming their contact by email or external id: found, updated
    /// or created in item order, as one upsert at a time would.
    async fn resolve_identities(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        inputs: &[EventInput],
        items: &mut [Option<Item>],
    ) -> Result<Identities, StoreError> {
        // The normalized identities of every remaining item (or why not).
        let mut wanted = Vec::with_capacity(inputs.len());
        for (item, input) in items.iter_mut().zip(inputs) {
            if item.is_some() {
                wanted.push(None);
                continue;
            }
            let normalized = (|| {
                let email = input.email.as_deref().map(normalize_email).transpose()?;
                let external_id = input
                    .external_id
                    .as_deref()
                    .map(normalize_external_id)
                    .transpose()?;
                if email.is_none() && external_id.is_none() {
                    return Err(StoreError::Invalid(
                        "an event needs a contact_id, an email or an external_id".into(),
                    ));
                }
                Ok((email, external_id))
            })();
            match normalized {
                Ok(identity) => wanted.push(Some(identity)),
                Err(e) => {
                    *item = Some(Item::Done(Err(e)));
                    wanted.push(None);
                }
            }
        }
        let emails: Vec<&str> = wanted
            .iter()
            .flatten()
            .filter_map(|(e, _)| e.as_deref())
            .collect();
        let externals: Vec<&str> = wanted
            .iter()
            .flatten()
            .filter_map(|(_, x)| x.as_deref())
            .collect();
        let mut identities = Identities::default();
        if emails.is_empty() && externals.is_empty() {
            return Ok(identities);
        }
        let sql = format!(
            "SELECT id, email, external_id FROM contacts WHERE {} \
             UNION SELECT id, email, external_id FROM contacts WHERE {}",
            bulk::json_in(self.dialect, "email", 1),
            bulk::json_in(self.dialect, "external_id", 2)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(bulk::to_json(&emails)?)
            .bind(bulk::to_json(&externals)?)
            .fetch_all(&mut **tx)
            .await?;
        for row in rows {
            let id: String = row.try_get("id")?;
            let email: Option<String> = row.try_get("email")?;
            let external_id: Option<String> = row.try_get("external_id")?;
            if let Some(email) = &email {
                identities.by_email.insert(email.clone(), id.clone());
            }
            if let Some(external_id) = &external_id {
                identities
                    .by_external
                    .insert(external_id.clone(), id.clone());
            }
            identities.contacts.insert(
                id,
                Named {
                    email,
                    external_id,
                    created: false,
                    touched: false,
                },
            );
        }
        for (item, identity) in items.iter_mut().zip(wanted) {
            let Some((email, external_id)) = identity else {
                continue;
            };
            *item = Some(match identities.resolve(email, external_id) {
                Ok((contact_id, created)) => Item::Store {
                    contact_id,
                    created,
                },
                Err(e) => Item::Done(Err(e)),
            });
        }
        Ok(identities)
    }
}

/// Inserts the contacts the group created, with their final identities
/// and the newest time of their events.
async fn insert_contacts(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    dialect: Dialect,
    created: &[String],
    named: &HashMap<String, Named>,
    last_seen: &BTreeMap<&str, i64>,
    now: i64,
) -> Result<(), StoreError> {
    #[derive(Serialize)]
    struct ContactRow<'a> {
        id: &'a str,
        email: Option<&'a str>,
        external_id: Option<&'a str>,
        last_seen_at: Option<i64>,
    }
    let rows: Vec<ContactRow<'_>> = created
        .iter()
        .filter_map(|id| {
            let contact = named.get(id)?;
            Some(ContactRow {
                id,
                email: contact.email.as_deref(),
                external_id: contact.external_id.as_deref(),
                last_seen_at: last_seen.get(id.as_str()).copied(),
            })
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let from = bulk::json_rows(
        dialect,
        1,
        &[
            ("id", Col::Text),
            ("email", Col::Text),
            ("external_id", Col::Text),
            ("last_seen_at", Col::Int),
        ],
    );
    let sql = format!(
        "INSERT INTO contacts (id, email, external_id, attributes, created_at, updated_at, last_seen_at) \
         SELECT j.id, j.email, j.external_id, '{{}}', $2, $2, j.last_seen_at FROM {from}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(bulk::to_json(&rows)?)
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(conflict_on_unique)?;
    Ok(())
}

/// A stored contact of the group: the newest time of its own events, and
/// whether an identity found it.
#[derive(Serialize)]
struct SeenRow<'a> {
    id: &'a str,
    at: Option<i64>,
    touched: bool,
}

/// Moves `last_seen_at` forward (never back) and sets `updated_at` of the
/// contacts found by identity, in one statement, in contact id order.
async fn update_seen(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    dialect: Dialect,
    rows: &[SeenRow<'_>],
    now: i64,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let from = bulk::json_rows(
        dialect,
        1,
        &[("id", Col::Text), ("at", Col::Int), ("touched", Col::Bool)],
    );
    let keyed = bulk::rows_match(dialect, "contacts.id", 1, "id");
    let sql = format!(
        "UPDATE contacts SET \
         last_seen_at = CASE WHEN j.at IS NOT NULL AND (contacts.last_seen_at IS NULL OR contacts.last_seen_at < j.at) \
                        THEN j.at ELSE contacts.last_seen_at END, \
         updated_at = CASE WHEN j.touched THEN $2 ELSE contacts.updated_at END \
         FROM {from} WHERE contacts.id = j.id{keyed}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(bulk::to_json(rows)?)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn conflict_on_unique(error: sqlx::Error) -> StoreError {
    if is_unique_violation(&error) {
        StoreError::Conflict("another contact has this email or external_id".into())
    } else {
        error.into()
    }
}
