//! `nachfass demo`: one command to a running demo. It installs the
//! example plugins built into the binary, loads a realistic data set
//! (thousands of contacts with weeks of touchpoints, through the live
//! pipeline), installs the ready-made journeys bound to a demo mailbox
//! channel, creates an admin key, and serves — while new visitors sign up
//! and simulated recipients open, click, buy and unsubscribe.

mod plugins;
mod recipients;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use super::serve::{DatabaseArgs, Server, run_server};
use super::{CliError, fail};
use crate::clock::{Clock, ManualClock, SystemClock};
use crate::ingest::Pipeline;
use crate::journeys::Journeys;
use crate::journeys::definition::Purpose;
use crate::mailbox::Mailbox;
use crate::model::Value;
use crate::policy::Policy;
use crate::runtime::{Registry, Runtime, RuntimeConfig};
use crate::scoring::StageThresholds;
use crate::store::{BindingDef, BindingKind, ContactInput, EventInput, Scope, Store};

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Contacts to create.
    #[arg(long, default_value_t = 1000)]
    pub contacts: u32,
    /// Days of touchpoints before now.
    #[arg(long, default_value_t = 21)]
    pub days: u32,
    /// Where the example plugins are written (and `serve` finds them).
    #[arg(long, default_value = "plugins.d")]
    pub plugins_dir: PathBuf,
    /// Address and port the demo serves on.
    #[arg(long, env = "NACHFASS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Load the data set and exit: no journeys, no key, no server.
    #[arg(long)]
    pub no_serve: bool,
}

const DAY: i64 = 24 * 60 * 60 * 1000;

/// The demo's channel binding; the ready-made journeys send through it.
const CHANNEL: &str = "email";

/// A small deterministic generator, so every demo looks the same.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.roll(items.len() as u64) as usize]
    }
}

pub async fn demo(
    args: DemoArgs,
    cache_dir: Option<PathBuf>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let written = plugins::write_into(&args.plugins_dir).map_err(fail)?;
    writeln!(
        out,
        "{} example plugins in {}",
        written.len(),
        args.plugins_dir.display()
    )
    .map_err(fail)?;
    let store = Store::connect(&args.db.database)
        .await
        .map_err(|e| fail(format!("database {}: {e}", args.db.database)))?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache_dir.unwrap_or_else(|| PathBuf::from(".nachfass-cache"))),
        ..RuntimeConfig::default()
    })
    .map_err(|e| fail(format!("{e:#}")))?;
    let registry = Arc::new(Registry::new(runtime));
    // Imported into the database, where every node of the cluster finds them.
    let cluster =
        crate::plugins::Plugins::new(store.clone(), registry.clone(), Arc::new(SystemClock));
    let mut dir = crate::runtime::watch::PluginDir::new(&args.plugins_dir);
    for report in dir.scan(&cluster).await {
        report
            .outcome
            .map_err(|e| fail(format!("{}: {e}", report.path.display())))?;
    }
    // Bound before anything is set up: a port in use fails at once, and
    // the mailbox binding names the real address.
    let listener = if args.no_serve {
        None
    } else {
        Some(
            tokio::net::TcpListener::bind(&args.listen)
                .await
                .map_err(|e| fail(format!("cannot listen on {}: {e}", args.listen)))?,
        )
    };
    let address = listener
        .as_ref()
        .map(|l| l.local_addr().map_err(fail))
        .transpose()?;

    let bindings = [
        ("engagement", BindingKind::Scorer, "engagement", vec![]),
        ("fit", BindingKind::Scorer, "b2b-fit", vec![]),
        (
            "software",
            BindingKind::Segment,
            "attribute-match",
            vec![
                ("attribute", "industry"),
                ("op", "eq"),
                ("value", "software"),
            ],
        ),
        (
            "mittelstand",
            BindingKind::Segment,
            "attribute-match",
            vec![("attribute", "employees"), ("op", "gt"), ("value", "249")],
        ),
        (
            "hot-leads",
            BindingKind::Segment,
            "attribute-match",
            vec![
                ("attribute", "contact.score"),
                ("op", "gt"),
                ("value", "90"),
            ],
        ),
        (
            "inactive-14",
            BindingKind::Segment,
            "inactive-days",
            vec![("days", "14")],
        ),
    ];
    let now = SystemClock.now();
    for (name, kind, plugin, config) in bindings {
        let def = BindingDef {
            name: name.into(),
            kind,
            plugin: plugin.into(),
            config: config
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            allow_http: Vec::new(),
            limits: Default::default(),
            paused: None,
            rate: None,
            version: None,
        };
        match store.create_binding(&def, now).await {
            Ok(()) | Err(crate::store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(fail(e)),
        }
    }

    if store.count_contacts().await.map_err(fail)? > 0 {
        writeln!(
            out,
            "{} already holds contacts: the demo data set is not loaded again",
            args.db.database
        )
        .map_err(fail)?;
    } else {
        load(&store, &registry, args.contacts, args.days, now, out).await?;
        writeln!(out, "demo data loaded into {}", args.db.database).map_err(fail)?;
    }
    let (Some(listener), Some(address)) = (listener, address) else {
        return writeln!(
            out,
            "next: nachfass keys create --name admin --scope admin --database {db}\n      nachfass serve --database {db}",
            db = args.db.database
        )
        .map_err(fail);
    };

    // The demo channel: the demo-mailbox plugin posts every message to
    // this server's mailbox, with a token made for this run.
    let token = uuid::Uuid::new_v4().simple().to_string();
    let channel = BindingDef {
        name: CHANNEL.into(),
        kind: BindingKind::Channel,
        plugin: "demo-mailbox".into(),
        config: [
            (
                "url".to_owned(),
                format!("http://{address}/v1/demo/mailbox"),
            ),
            ("token".to_owned(), token.clone()),
        ]
        .into(),
        allow_http: vec![address.to_string()],
        version: None,
        limits: Default::default(),
        paused: None,
        rate: None,
    };
    store.delete_binding(CHANNEL).await.map_err(fail)?;
    store.create_binding(&channel, now).await.map_err(fail)?;
    let base = format!("http://{address}");
    let pipeline = Pipeline {
        store: store.clone(),
        registry: registry.clone(),
        clock: Arc::new(SystemClock),
        stages: StageThresholds::default(),
    };
    let journeys = Journeys::new(pipeline, Policy::default());
    journeys.set_public_url(&base);
    for ready in crate::journeys::ready_made::all() {
        let Some(mut def) = crate::journeys::ready_made::adapt(ready.name, CHANNEL, None) else {
            continue;
        };
        // Every day from 08:00 to 20:00 in the contact's zone: the demo's
        // visitors live where it is daytime now, whatever the weekday.
        if def.purpose == Purpose::Marketing {
            def.send_window = Some(
                serde_json::from_value(json!({
                    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                    "start": "08:00", "end": "20:00"
                }))
                .map_err(fail)?,
            );
        }
        journeys.save_def(&def).await.map_err(fail)?;
    }
    let (_, key) = store
        .create_api_key("demo admin", &[Scope::Admin], now)
        .await
        .map_err(fail)?;
    // One write, so a reader that stops at the link never cuts it short.
    let banner = format!(
        "\nnachfass demo is running — open the dashboard:\n\n  {base}/dashboard#key={key}\n\nAPI key (admin, shown once): {key}\nAPI reference: {base}/api-docs\nNew visitors sign up every few seconds; their follow-ups land in the dashboard's mailbox,\nwhere simulated recipients open, click, buy or unsubscribe. Ctrl-C stops the demo.\n"
    );
    out.write_all(banner.as_bytes()).map_err(fail)?;
    out.flush().map_err(fail)?;

    let mailbox = Arc::new(Mailbox::new(token));
    tokio::spawn(recipients::run(recipients::Demo {
        base: base.clone(),
        key,
        mailbox: mailbox.clone(),
    }));
    run_server(Server {
        store,
        registry,
        listener,
        plugins_dir: args.plugins_dir,
        scheduler: Some(60_000),
        public_url: base,
        oci: crate::api::OciSettings::default(),
        mailbox: Some(mailbox),
        edge: Default::default(),
    })
    .await
}

/// The data set: contacts with attributes and weeks of touchpoints,
/// scored and segmented by the live pipeline at their historical times.
async fn load(
    store: &Store,
    registry: &Arc<Registry>,
    contacts: u32,
    days: u32,
    now: i64,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let start = now - i64::from(days) * DAY;
    let clock = Arc::new(ManualClock::new(start));
    let pipeline = Pipeline {
        store: store.clone(),
        registry: registry.clone(),
        clock: clock.clone(),
        stages: StageThresholds::default(),
    };
    let mut dice = Dice(42);
    let industries = [
        "software",
        "software",
        "manufacturing",
        "retail",
        "finance",
        "consulting",
        "logistics",
    ];
    let positions = [
        "CEO",
        "CTO",
        "Head of Marketing",
        "Marketing Manager",
        "Sales Lead",
        "Assistant",
        "Founder",
    ];
    let kinds = [
        "email.opened",
        "email.opened",
        "email.clicked",
        "page.visited",
        "page.visited",
        "download",
        "webinar.registered",
        "webinar.attended",
        "form.submitted",
    ];
    let mut events = 0u64;
    for i in 0..contacts {
        clock.set(start + dice.roll(u64::from(days).max(1) * DAY as u64 / 4) as i64);
        let employees = [5, 20, 80, 300, 1200][dice.roll(5) as usize] + dice.roll(50) as i64;
        let contact = ContactInput {
            email: Some(format!("kontakt{i}@firma{}.example", i % 700)),
            attributes: [
                (
                    "industry".to_owned(),
                    Value::Text(dice.pick(&industries).to_owned()),
                ),
                ("employees".to_owned(), Value::Integer(employees)),
                (
                    "position".to_owned(),
                    Value::Text(dice.pick(&positions).to_owned()),
                ),
                (
                    "budget".to_owned(),
                    Value::Integer(dice.roll(60_000) as i64),
                ),
            ]
            .into(),
            ..ContactInput::default()
        };
        let record = pipeline.upsert_contact(&contact).await.map_err(fail)?;
        let touchpoints = dice.roll(12);
        let mut at = clock.now();
        for _ in 0..touchpoints {
            at += dice.roll(3 * DAY as u64) as i64;
            if at > now {
                break;
            }
            clock.set(at);
            let kind = dice.pick(&kinds);
            let mut event = EventInput {
                kind: kind.into(),
                at: Some(at),
                contact_id: Some(record.contact.id.clone()),
                ..EventInput::default()
            };
            if kind == "page.visited" {
                let url = dice.pick(&[
                    "/blog/follow-up",
                    "/pricing",
                    "/features",
                    "/pricing?plan=pro",
                    "/about",
                ]);
                event.properties.insert(
                    "url".into(),
                    Value::Text(format!("https://nachfass.example{url}")),
                );
            }
            pipeline.ingest(&event).await.map_err(fail)?;
            events += 1;
        }
        if (i + 1) % 500 == 0 {
            writeln!(out, "{} contacts, {events} touchpoints", i + 1).map_err(fail)?;
        }
    }
    clock.set(now);
    for segment in ["software", "mittelstand", "hot-leads", "inactive-14"] {
        let progress = crate::segments::rebuild(&pipeline, segment, now, |_| {})
            .await
            .map_err(fail)?;
        let size = store.segment_size(segment).await.map_err(fail)?;
        writeln!(
            out,
            "segment {segment}: {size} members ({} evaluated)",
            progress.evaluated
        )
        .map_err(fail)?;
    }
    writeln!(out, "loaded: {contacts} contacts, {events} touchpoints").map_err(fail)
}
