//! `nachfass demo`: a realistic data set so a newcomer sees scores and
//! segments at once — the example plugins built and bound, thousands of
//! contacts with a few weeks of touchpoints, all through the live pipeline.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::serve::DatabaseArgs;
use super::{CliError, fail};
use crate::clock::{Clock, ManualClock, SystemClock};
use crate::ingest::Pipeline;
use crate::model::Value;
use crate::runtime::{Registry, Runtime, RuntimeConfig};
use crate::scoring::StageThresholds;
use crate::store::{BindingDef, BindingKind, ContactInput, EventInput, Store};

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Contacts to create.
    #[arg(long, default_value_t = 2000)]
    pub contacts: u32,
    /// Days of touchpoints before now.
    #[arg(long, default_value_t = 21)]
    pub days: u32,
    /// Where the built example plugins go (and `serve` finds them).
    #[arg(long, default_value = "plugins.d")]
    pub plugins_dir: PathBuf,
}

const DAY: i64 = 24 * 60 * 60 * 1000;
const EXAMPLES: [&str; 4] = [
    "scoring/engagement",
    "scoring/b2b-fit",
    "rules/attribute-match",
    "rules/inactive-days",
];

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
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    std::fs::create_dir_all(&args.plugins_dir).map_err(fail)?;
    for example in EXAMPLES {
        writeln!(out, "building {example}").map_err(fail)?;
        let mut sink = Vec::new();
        super::plugin::build_into(&source.join(example), &args.plugins_dir, &mut sink)?;
    }
    let store = Store::connect(&args.db.database).await.map_err(fail)?;
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
            version: None,
        };
        match store.create_binding(&def, now).await {
            Ok(()) | Err(crate::store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(fail(e)),
        }
    }

    let start = now - i64::from(args.days) * DAY;
    let clock = Arc::new(ManualClock::new(start));
    let pipeline = Pipeline {
        store: store.clone(),
        registry,
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
    for i in 0..args.contacts {
        clock.set(start + dice.roll(u64::from(args.days).max(1) * DAY as u64 / 4) as i64);
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
    writeln!(
        out,
        "demo loaded: {} contacts, {events} touchpoints in {}\nnext: nachfass keys create --name admin --scope admin --database {db}\n      nachfass serve --database {db}",
        args.contacts,
        args.db.database,
        db = args.db.database
    )
    .map_err(fail)
}
