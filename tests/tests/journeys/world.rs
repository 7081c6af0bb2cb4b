//! The world every journey test walks in: one database, the webhook, SMS,
//! audience and attribute-match plugins, a receiver on 127.0.0.1, a manual
//! clock and a scheduler run until idle; and the API in-process for the
//! public tracking endpoints.

use std::sync::Arc;

use nachfass::clock::{Clock, ManualClock};
use nachfass::journeys::{Journeys, ready_made};
use nachfass::model::status::{ConsentStatus, Purpose};
use nachfass::model::{Event, Value};
use nachfass::policy::Policy;
use nachfass::runtime::Registry;
use nachfass::runtime::registry::Activation;
use nachfass::scheduler::{Scheduler, SchedulerConfig};
use nachfass::store::{BindingDef, BindingKind, Consent, EventInput, Store};
use nachfass_tests::{HttpSink, TempStore, guests, runtime};

pub(crate) const HOUR: i64 = 60 * 60 * 1000;
/// Monday 2026-11-23, 10:00 in Berlin.
pub(crate) const MONDAY_10: i64 = 1_795_424_400_000;

pub(crate) struct World {
    pub(crate) store: Store,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) journeys: Arc<Journeys>,
    pub(crate) scheduler: Arc<Scheduler>,
    pub(crate) sink: HttpSink,
    pub(crate) temp: Option<TempStore>,
}

pub(crate) async fn registry() -> Arc<Registry> {
    let registry = Arc::new(Registry::new(runtime()));
    for guest in [
        guests::WEBHOOK,
        guests::SMS_HTTP,
        guests::AUDIENCE_SYNC,
        guests::ATTRIBUTE_MATCH,
    ] {
        registry
            .install_file(&guest.packed(), Activation::Now)
            .await
            .unwrap();
    }
    registry
}

impl World {
    pub(crate) async fn new(
        store: Store,
        temp: TempStore,
        registry: Arc<Registry>,
        sink_status: u16,
    ) -> World {
        let sink = HttpSink::start(sink_status).await;
        let clock = Arc::new(ManualClock::new(MONDAY_10));
        let pipeline = nachfass_tests::world::pipeline(store.clone(), registry, clock.clone());
        let hook = BindingDef {
            name: "mail-hook".into(),
            kind: BindingKind::Channel,
            plugin: "webhook".into(),
            config: [
                ("url".to_owned(), format!("http://{}/hook", sink.addr)),
                ("secret".to_owned(), "s3cret".to_owned()),
            ]
            .into(),
            allow_http: vec![sink.addr.to_string()],
            limits: Default::default(),
            paused: None,
            rate: None,
            version: None,
        };
        store.create_binding(&hook, 0).await.unwrap();
        let journeys = Journeys::new(pipeline, Policy::default());
        let scheduler = Scheduler::new(journeys.clone(), SchedulerConfig::default());
        World {
            store,
            clock,
            journeys,
            scheduler,
            sink,
            temp: Some(temp),
        }
    }

    pub(crate) async fn install(&self, template: &str) {
        let def = ready_made::adapt(template, "mail-hook", None).unwrap();
        self.journeys.save_def(&def).await.unwrap();
    }

    /// A contact with marketing consent for the webhook channel.
    pub(crate) async fn contact(&self, email: &str) -> String {
        let id = self.ingest(email, "contact.imported", &[]).await.contact_id;
        let consent = Consent {
            channel: "webhook".into(),
            purpose: Purpose::Marketing,
            status: ConsentStatus::Granted,
            source: Some("test".into()),
            text_version: None,
            ip: None,
            user_agent: None,
            updated_at: 0,
        };
        self.store
            .set_consent(&id, &consent, self.clock.now())
            .await
            .unwrap();
        id
    }

    /// [`World::contact`] for each of `emails`: their ids, in order.
    pub(crate) async fn contacts(&self, emails: &[impl AsRef<str>]) -> Vec<String> {
        let mut ids = Vec::new();
        for email in emails {
            ids.push(self.contact(email.as_ref()).await);
        }
        ids
    }

    pub(crate) async fn ingest(
        &self,
        email: &str,
        kind: &str,
        properties: &[(&str, &str)],
    ) -> Event {
        let event = self.stored(email, kind, properties).await;
        self.run().await;
        event
    }

    /// Stores a touchpoint without running the scheduler: its route job
    /// waits for the next round.
    pub(crate) async fn stored(
        &self,
        email: &str,
        kind: &str,
        properties: &[(&str, &str)],
    ) -> Event {
        let input = EventInput {
            kind: kind.into(),
            email: Some(email.into()),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::Text((*v).to_owned())))
                .collect(),
            ..EventInput::default()
        };
        self.journeys.pipeline.ingest(&input).await.unwrap().event
    }

    pub(crate) async fn run(&self) {
        self.scheduler.run_until_idle().await.unwrap();
    }

    /// Moves time forward in steps of at most an hour, running what falls due.
    pub(crate) async fn pass(&self, span: i64) {
        let end = self.clock.now() + span;
        while self.clock.now() < end {
            self.clock.set((self.clock.now() + HOUR).min(end));
            self.run().await;
        }
    }

    /// Subjects the receiver got for `email`, in order.
    pub(crate) fn subjects(&self, email: &str) -> Vec<String> {
        self.sink
            .received()
            .iter()
            .filter_map(|r| {
                let body: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
                (body["to"] == email).then(|| body["subject"].as_str().unwrap_or("").to_owned())
            })
            .collect()
    }

    pub(crate) async fn kinds(&self, contact: &str) -> Vec<String> {
        let mut events = self.store.timeline(contact, 500, None).await.unwrap();
        events.reverse();
        events.into_iter().map(|e| e.kind).collect()
    }

    pub(crate) async fn reasons(&self, contact: &str, kind: &str) -> Vec<String> {
        let events = self.store.timeline(contact, 500, None).await.unwrap();
        events
            .into_iter()
            .filter(|e| e.kind == kind)
            .filter_map(|e| match e.properties.get("reason") {
                Some(Value::Text(t)) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    pub(crate) async fn run_status(&self, contact: &str, journey: &str) -> Vec<String> {
        let runs = self.store.contact_runs(contact).await.unwrap();
        runs.into_iter()
            .filter(|r| r.journey == journey)
            .map(|r| r.status.to_string())
            .collect()
    }

    pub(crate) async fn close(mut self) {
        if let Some(temp) = self.temp.take() {
            temp.cleanup(self.store.clone()).await;
        }
    }
}

/// A world on one database whose webhook receiver answers `sink_status`.
pub(crate) async fn world(dialect: &'static str, sink_status: u16) -> World {
    let (store, temp) = nachfass_tests::store(dialect).await;
    World::new(store, temp, registry().await, sink_status).await
}

/// The API in-process, for the public tracking endpoints.
pub(crate) struct Web(pub(crate) axum::Router);

impl Web {
    pub(crate) fn new(w: &World) -> Web {
        Web(nachfass::api::app(nachfass::api::AppState::with_journeys(
            w.journeys.clone(),
            None,
        )))
    }

    pub(crate) async fn send(
        &self,
        method: &str,
        uri: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let mut request = axum::http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        let response = self
            .0
            .clone()
            .oneshot(request.body(axum::body::Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let bytes = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, bytes)
    }

    pub(crate) async fn get(&self, uri: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        self.send("GET", uri, Vec::new(), &[]).await
    }
}

pub(crate) fn path_of(url: &str) -> String {
    url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap()
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub(crate) async fn offer_journey(w: &World) {
    let def = serde_json::json!({ "name": "offer", "trigger": { "event": { "kind": "signup" } },
        "steps": [
            { "id": "offer", "type": "send", "binding": "mail-hook", "template": {
                "subject": "Ihr Angebot", "text": "Hier entlang: https://shop.example/angebot",
                "html": "<html><body><a href=\"https://shop.example/angebot\">Angebot</a></body></html>" } },
            { "id": "pause", "type": "wait", "duration": "2d" },
            { "id": "again", "type": "send", "binding": "mail-hook", "template": { "subject": "Noch einmal", "text": "…" } } ] });
    w.journeys.save(def.to_string().as_bytes()).await.unwrap();
}

impl World {
    /// Another channel binding of `plugin`, sending to the receiver.
    pub(crate) async fn bind(&self, name: &str, plugin: &str, config: &[(&str, &str)]) {
        let def = BindingDef {
            name: name.into(),
            kind: BindingKind::Channel,
            plugin: plugin.into(),
            config: config
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            allow_http: vec![self.sink.addr.to_string()],
            limits: Default::default(),
            paused: None,
            rate: None,
            version: None,
        };
        self.store.create_binding(&def, 0).await.unwrap();
    }

    pub(crate) async fn grant(&self, contact: &str, channel: &str) {
        let consent = Consent {
            channel: channel.into(),
            purpose: Purpose::Marketing,
            status: ConsentStatus::Granted,
            source: Some("test".into()),
            text_version: None,
            ip: None,
            user_agent: None,
            updated_at: 0,
        };
        self.store
            .set_consent(contact, &consent, self.clock.now())
            .await
            .unwrap();
    }
}

pub(crate) fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The sink's message body for one recipient.
pub(crate) fn body_for(w: &World, email: &str) -> serde_json::Value {
    w.sink
        .received()
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap())
        .find(|b| b["to"] == email)
        .unwrap()
}

pub(crate) async fn callback(w: &World, web: &Web, key: &str, status: &str) {
    let body =
        serde_json::json!({ "events": [ { "message_ref": key, "status": status } ] }).to_string();
    let timestamp = "1".to_owned();
    let signature = webhook::sign("s3cret", &timestamp, body.as_bytes());
    let headers = [
        ("X-Nachfass-Timestamp", timestamp),
        ("X-Nachfass-Signature", signature),
    ];
    let (status, _, _) = web
        .send(
            "POST",
            "/v1/callbacks/mail-hook",
            body.into_bytes(),
            &headers,
        )
        .await;
    assert_eq!(status, 200);
    w.run().await;
}
