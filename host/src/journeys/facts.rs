//! What the steps of a batch read, loaded for the whole batch in a few
//! queries (runs, contacts with segments, consents, suppressions, recent
//! sends, erased addresses, channel bindings; for routing, the events and
//! their contacts) instead of some ten per step. Steps of one batch see each other's writes where the gate needs
//! them: an attribute a step sets, a message a step queues (for the
//! frequency cap). A step that rolls back makes its contact's facts be read
//! again. Anything not loaded (a run enqueued by the batch itself) is read
//! from the database as before.
//!
//! The batch's writes are held here too (`writes`), until the batch ends.

use std::collections::{HashMap, HashSet};

use sqlx::AnyConnection;

use super::Journeys;
use super::writes::StepWrites;
use crate::model::{Contact, Event};
use crate::privacy::address_hash;
use crate::store::bindings::bindings_in;
use crate::store::consents::{ConsentStatus, Purpose, consent_in, consents_in};
use crate::store::contacts::{contact_in, contacts_in};
use crate::store::outbox::{marketing_sends_of_in, marketing_sends_since_in};
use crate::store::runs::{Run, latest_runs_of_in, run_in, runs_in};
use crate::store::suppressions::{Suppression, suppressions_in, suppressions_of_in};
use crate::store::timeline::{event_in, events_in};
use crate::store::tracking::{erased_at_in, erased_of_in};
use crate::store::{BindingDef, BindingKind, Dialect, StoreError};

#[derive(Default)]
pub(super) struct StepFacts {
    runs: HashMap<String, Run>,
    /// The contact of each loaded run, kept after the run is taken.
    run_contacts: HashMap<String, String>,
    contacts: HashMap<String, Contact>,
    /// Contacts whose consents, suppressions and recent sends are loaded.
    loaded: HashSet<String>,
    consents: HashMap<(String, String), (ConsentStatus, i64)>,
    suppressions: HashMap<String, Vec<Suppression>>,
    recent_sends: HashMap<String, Vec<i64>>,
    /// The loaded recent sends are those after this time.
    sends_since: i64,
    /// Erasure times of the loaded contacts' addresses, by address hash.
    erased: HashMap<String, i64>,
    erased_checked: HashSet<String>,
    channel_bindings: Option<Vec<BindingDef>>,
    /// Events to route, by id; kept for the first steps of the runs they
    /// start (see [`Self::for_started`]).
    events: HashMap<String, Event>,
    /// The events that started the loaded runs, for rendering.
    triggers: HashMap<String, Event>,
    /// Routing: the latest run of each journey, by contact, then journey,
    /// as the batch's routing leaves them (open runs among them). A contact
    /// is here once its runs are loaded, if only with none.
    latest_runs: HashMap<String, HashMap<String, Run>>,
    /// What the batch's steps write, held until the batch ends.
    pub writes: StepWrites,
}

impl StepFacts {
    /// Loads what the steps of runs `run_ids` will read at `now`.
    pub async fn load(
        journeys: &Journeys,
        tx: &mut AnyConnection,
        run_ids: &[String],
        now: i64,
    ) -> Result<StepFacts, StoreError> {
        let dialect = journeys.pipeline.store.dialect();
        let runs = runs_in(tx, dialect, run_ids).await?;
        let mut contact_ids: Vec<String> = runs.values().map(|r| r.contact_id.clone()).collect();
        contact_ids.sort_unstable();
        contact_ids.dedup();
        let contacts = contacts_in(tx, dialect, &contact_ids).await?;
        let mut trigger_ids: Vec<String> = runs
            .values()
            .filter_map(|r| r.trigger_event.clone())
            .collect();
        trigger_ids.sort_unstable();
        trigger_ids.dedup();
        let triggers = events_in(tx, dialect, &trigger_ids).await?;
        StepFacts::for_runs(journeys, tx, runs, contacts, triggers, now).await
    }

    /// The first steps of the runs a batch of events started: the runs as
    /// written, their contacts and trigger events as routing read them
    /// (routing changes neither). Three reads fewer for every such batch
    /// than [`Self::load`], which would read back what it has at hand.
    pub async fn for_started(
        journeys: &Journeys,
        tx: &mut AnyConnection,
        started: Vec<Run>,
        routed: &mut StepFacts,
        now: i64,
    ) -> Result<StepFacts, StoreError> {
        let mut contacts = HashMap::new();
        let mut triggers = HashMap::new();
        for run in &started {
            if let Some(contact) = routed.contacts.get(&run.contact_id) {
                contacts.insert(run.contact_id.clone(), contact.clone());
            }
            let trigger = run.trigger_event.as_ref();
            if let Some((id, event)) = trigger.and_then(|id| routed.events.remove_entry(id)) {
                triggers.insert(id, event);
            }
        }
        let runs = started.into_iter().map(|r| (r.id.clone(), r)).collect();
        StepFacts::for_runs(journeys, tx, runs, contacts, triggers, now).await
    }

    /// The facts of steps of `runs`, whose contacts and trigger events are
    /// known: the gate's reads for those contacts (consents, suppressions,
    /// recent sends, erased addresses) and the channel bindings.
    async fn for_runs(
        journeys: &Journeys,
        tx: &mut AnyConnection,
        runs: HashMap<String, Run>,
        contacts: HashMap<String, Contact>,
        triggers: HashMap<String, Event>,
        now: i64,
    ) -> Result<StepFacts, StoreError> {
        let dialect = journeys.pipeline.store.dialect();
        let run_contacts: HashMap<String, String> = runs
            .values()
            .map(|r| (r.id.clone(), r.contact_id.clone()))
            .collect();
        let mut contact_ids: Vec<String> = run_contacts.values().cloned().collect();
        contact_ids.sort_unstable();
        contact_ids.dedup();
        let sends_since = now - journeys.policy.cap.per.millis;
        let secret = journeys.pipeline.store.signing_secret();
        // Every address a send may go to: email, phone, or the id itself.
        let hashes: Vec<String> = contacts
            .values()
            .flat_map(|c| [c.email.as_deref(), c.phone.as_deref(), Some(c.id.as_str())])
            .flatten()
            .map(|address| address_hash(secret, address))
            .collect();
        Ok(StepFacts {
            consents: consents_in(tx, dialect, &contact_ids, Purpose::Marketing).await?,
            suppressions: suppressions_of_in(tx, dialect, &contact_ids).await?,
            recent_sends: marketing_sends_of_in(tx, dialect, &contact_ids, sends_since).await?,
            erased: erased_of_in(tx, dialect, &hashes).await?,
            erased_checked: hashes.into_iter().collect(),
            channel_bindings: Some(bindings_in(tx, BindingKind::Channel).await?),
            loaded: contacts.keys().cloned().collect(),
            sends_since,
            runs,
            run_contacts,
            contacts,
            triggers,
            ..StepFacts::default()
        })
    }

    /// Loads the events routed by a batch, their contacts (routing changes
    /// neither) and the contacts' latest runs.
    pub async fn load_events(
        journeys: &Journeys,
        tx: &mut AnyConnection,
        event_ids: &[String],
    ) -> Result<StepFacts, StoreError> {
        let dialect = journeys.pipeline.store.dialect();
        let events = events_in(tx, dialect, event_ids).await?;
        let mut contact_ids: Vec<String> = events.values().map(|e| e.contact_id.clone()).collect();
        contact_ids.sort_unstable();
        contact_ids.dedup();
        let mut facts = StepFacts {
            contacts: contacts_in(tx, dialect, &contact_ids).await?,
            events,
            ..StepFacts::default()
        };
        let runs = latest_runs_of_in(tx, dialect, &contact_ids).await?;
        facts.runs_loaded(&contact_ids, runs);
        Ok(facts)
    }

    /// The contact's open runs as routing left them, oldest first; read
    /// (and locked) now if the batch did not load them.
    pub async fn open_runs(
        &mut self,
        tx: &mut AnyConnection,
        dialect: Dialect,
        contact_id: &str,
    ) -> Result<Vec<Run>, StoreError> {
        if !self.latest_runs.contains_key(contact_id) {
            let ids = [contact_id.to_owned()];
            let runs = latest_runs_of_in(tx, dialect, &ids).await?;
            self.runs_loaded(&ids, runs);
        }
        let mut open: Vec<Run> = self
            .latest_runs
            .get(contact_id)
            .into_iter()
            .flat_map(HashMap::values)
            .filter(|run| run.ended_at.is_none())
            .cloned()
            .collect();
        open.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(open)
    }

    /// The contact's latest run of `journey` as routing left it (after
    /// [`Self::open_runs`] for that contact).
    pub fn latest_run(&self, contact_id: &str, journey: &str) -> Option<&Run> {
        self.latest_runs.get(contact_id)?.get(journey)
    }

    /// The latest runs of `contact_ids`, as read: each contact is known
    /// from now on, if only with no runs.
    fn runs_loaded(&mut self, contact_ids: &[String], runs: Vec<Run>) {
        for id in contact_ids {
            self.latest_runs.entry(id.clone()).or_default();
        }
        for run in runs {
            self.run_routed(run);
        }
    }

    /// Routing changed or started `run`: later events of the batch see it.
    pub fn run_routed(&mut self, run: Run) {
        self.latest_runs
            .entry(run.contact_id.clone())
            .or_default()
            .insert(run.journey.clone(), run);
    }

    pub async fn event(
        &mut self,
        tx: &mut AnyConnection,
        id: &str,
    ) -> Result<Option<Event>, StoreError> {
        match self.events.get(id) {
            Some(event) => Ok(Some(event.clone())),
            None => event_in(tx, id).await,
        }
    }

    /// The event that started a run, for rendering.
    pub async fn trigger(
        &mut self,
        tx: &mut AnyConnection,
        id: &str,
    ) -> Result<Option<Event>, StoreError> {
        match self.triggers.get(id) {
            Some(event) => Ok(Some(event.clone())),
            None => event_in(tx, id).await,
        }
    }

    /// The contact of a loaded run.
    pub fn contact_of_run(&self, run_id: &str) -> Option<String> {
        self.run_contacts.get(run_id).cloned()
    }

    /// A step rolled back: what it changed of `contact_id` is read again.
    pub fn forget(&mut self, contact_id: &str) {
        self.contacts.remove(contact_id);
        self.loaded.remove(contact_id);
    }

    /// The run, as an earlier step of the batch left it or as loaded (a
    /// loaded run is taken once, by its job).
    pub async fn run(
        &mut self,
        tx: &mut AnyConnection,
        journeys: &Journeys,
        id: &str,
    ) -> Result<Option<Run>, StoreError> {
        if let Some(run) = self.writes.latest_run(id) {
            self.runs.remove(id);
            return Ok(Some(run));
        }
        match self.runs.remove(id) {
            Some(run) => Ok(Some(run)),
            None => run_in(tx, journeys.pipeline.store.dialect(), id).await,
        }
    }

    pub async fn contact(
        &mut self,
        tx: &mut AnyConnection,
        id: &str,
    ) -> Result<Option<Contact>, StoreError> {
        match self.contacts.get(id) {
            Some(contact) => Ok(Some(contact.clone())),
            None => contact_in(tx, id).await,
        }
    }

    /// A step changed the contact (an attribute): later steps see it.
    pub fn contact_changed(&mut self, contact: &Contact) {
        if let Some(known) = self.contacts.get_mut(&contact.id) {
            known.clone_from(contact);
        }
    }

    pub async fn consent(
        &mut self,
        tx: &mut AnyConnection,
        contact_id: &str,
        channel: &str,
    ) -> Result<Option<(ConsentStatus, i64)>, StoreError> {
        if self.loaded.contains(contact_id) {
            let key = (contact_id.to_owned(), channel.to_owned());
            return Ok(self.consents.get(&key).copied());
        }
        consent_in(tx, contact_id, channel, Purpose::Marketing).await
    }

    pub async fn suppressions(
        &mut self,
        tx: &mut AnyConnection,
        contact_id: &str,
    ) -> Result<Vec<Suppression>, StoreError> {
        if self.loaded.contains(contact_id) {
            return Ok(self
                .suppressions
                .get(contact_id)
                .cloned()
                .unwrap_or_default());
        }
        suppressions_in(tx, contact_id).await
    }

    /// When the contact's marketing messages after `since` were queued.
    pub async fn recent_sends(
        &mut self,
        tx: &mut AnyConnection,
        contact_id: &str,
        since: i64,
    ) -> Result<Vec<i64>, StoreError> {
        if self.loaded.contains(contact_id) && since >= self.sends_since {
            let sends = self.recent_sends.get(contact_id);
            return Ok(sends
                .into_iter()
                .flatten()
                .copied()
                .filter(|at| *at > since)
                .collect());
        }
        marketing_sends_since_in(tx, contact_id, since).await
    }

    /// A step queued a marketing message: later steps count it.
    pub fn sent(&mut self, contact_id: &str, at: i64) {
        if self.loaded.contains(contact_id) {
            self.recent_sends
                .entry(contact_id.to_owned())
                .or_default()
                .push(at);
        }
    }

    /// When `address` was erased, if it was (`secret`: the store's
    /// signing secret, which its hash is made with).
    pub async fn erased_at(
        &mut self,
        tx: &mut AnyConnection,
        secret: &[u8],
        address: &str,
    ) -> Result<Option<i64>, StoreError> {
        let hash = address_hash(secret, address);
        if self.erased_checked.contains(&hash) {
            return Ok(self.erased.get(&hash).copied());
        }
        erased_at_in(tx, &hash).await
    }

    pub async fn channel_bindings(
        &mut self,
        tx: &mut AnyConnection,
    ) -> Result<&[BindingDef], StoreError> {
        if self.channel_bindings.is_none() {
            self.channel_bindings = Some(bindings_in(tx, BindingKind::Channel).await?);
        }
        Ok(self.channel_bindings.as_deref().unwrap_or_default())
    }
}
