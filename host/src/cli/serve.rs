//! `nachfass serve` and `nachfass keys create`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::{CliError, fail};
use crate::api::connections::{self, ConnectionLimits};
use crate::api::{AppState, EventTimes, OciSettings, app};
use crate::clock::{Clock, SystemClock};
use crate::ingest::Pipeline;
use crate::journeys::Journeys;
use crate::oci::{AllowedRegistries, OciClient};
use crate::plugins::Plugins;
use crate::policy::Policy;
use crate::runtime::signature::{SignaturePolicy, TrustPolicy};
use crate::runtime::watch::PluginDir;
use crate::runtime::{Registry, Runtime, RuntimeConfig, RuntimeLimits};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::scoring::StageThresholds;
use crate::store::{Dialect, Scope, Store};

/// Where the data lives. Shared by `serve` and `keys`.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// `sqlite://path` (created if missing) or `postgres://user:pass@host/db`.
    #[arg(
        long,
        env = "NACHFASS_DATABASE_URL",
        default_value = "sqlite://nachfass.db"
    )]
    pub database: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Address and port to listen on.
    #[arg(long, env = "NACHFASS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Plugins directory: loaded at start, then watched for new versions.
    #[arg(long, env = "NACHFASS_PLUGINS_DIR", default_value = "plugins.d")]
    pub plugins_dir: PathBuf,
    /// How often the plugins directory is scanned, in milliseconds.
    #[arg(long, env = "NACHFASS_PLUGINS_SCAN_MS", default_value_t = 1000)]
    pub plugins_scan_ms: u64,
    /// How often this node re-reads the cluster's plugin state, in
    /// milliseconds. On PostgreSQL changes arrive at once by LISTEN/NOTIFY;
    /// this is the safety net (and SQLite's only way).
    #[arg(long, env = "NACHFASS_PLUGINS_RECONCILE_MS", default_value_t = 1000)]
    pub plugins_reconcile_ms: u64,
    /// Serve the API only; leave journeys and sends to other nodes.
    #[arg(long, env = "NACHFASS_NO_SCHEDULER")]
    pub no_scheduler: bool,
    /// How long a node holds a claimed job before others may take it, in
    /// milliseconds.
    #[arg(long, env = "NACHFASS_LEASE_MS", default_value_t = 60_000)]
    pub lease_ms: i64,
    /// Largest plugin component accepted, in bytes (uploads and the plugins
    /// directory). The default fits Python and JavaScript components, which
    /// carry their interpreter.
    #[arg(long, env = "NACHFASS_MAX_COMPONENT_BYTES", default_value_t = crate::runtime::limits::DEFAULT_MAX_COMPONENT_BYTES)]
    pub max_component_bytes: usize,
    /// The address recipients reach this server at, for tracking,
    /// unsubscribe and confirmation links (default: http://<listen>).
    #[arg(long, env = "NACHFASS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Whether plugins must be signed by a trusted publisher key
    /// (`nachfass trust add`). A signature that does not match or a key
    /// that is not trusted is always refused.
    #[arg(long, env = "NACHFASS_SIGNATURES", value_enum, default_value_t = SignaturePolicy::Optional)]
    pub signatures: SignaturePolicy,
    /// An OCI registry (`host[:port]`) plugins may be installed from with
    /// POST /v1/plugins/pull; repeatable. None by default.
    #[arg(
        long = "oci-registry",
        env = "NACHFASS_OCI_REGISTRIES",
        value_delimiter = ','
    )]
    pub oci_registries: Vec<String>,
    /// Token for private OCI registries.
    #[arg(long, env = "NACHFASS_OCI_TOKEN", hide_env_values = true)]
    pub oci_token: Option<String>,
    /// A reverse proxy whose `X-Forwarded-For` names the client (for the
    /// double opt-in proof); repeatable. From any other peer the header is
    /// ignored and the socket's address counts.
    #[arg(
        long = "trusted-proxy",
        env = "NACHFASS_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Seconds a client has to send a request's head, counted from when
    /// the connection waits for it: an idle keep-alive connection is
    /// closed after this too.
    #[arg(long, env = "NACHFASS_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body after its head.
    #[arg(long, env = "NACHFASS_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,
    /// Most open client connections; more wait until one closes.
    #[arg(long, env = "NACHFASS_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Oldest event time accepted, in Unix milliseconds (default
    /// 2000-01-01).
    #[arg(long, env = "NACHFASS_OLDEST_EVENT_MS", default_value_t = crate::api::DEFAULT_OLDEST_EVENT_MS)]
    pub oldest_event_ms: i64,
    /// How far ahead of the server's clock an event time may be, in
    /// milliseconds (default one day).
    #[arg(long, env = "NACHFASS_EVENT_AHEAD_MS", default_value_t = crate::api::DEFAULT_EVENT_AHEAD_MS)]
    pub event_ahead_ms: i64,
}

pub async fn serve(args: ServeArgs, cache_dir: Option<PathBuf>) -> Result<(), CliError> {
    let store = Store::connect(&args.db.database)
        .await
        .map_err(|e| fail(format!("database {}: {e}", args.db.database)))?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache_dir.unwrap_or_else(|| PathBuf::from(".nachfass-cache"))),
        trust: Some(TrustPolicy {
            signatures: args.signatures,
            ..TrustPolicy::default()
        }),
        limits: RuntimeLimits {
            max_component_bytes: args.max_component_bytes,
            ..RuntimeLimits::default()
        },
    })
    .map_err(|e| fail(format!("cannot start the plugin runtime: {e:#}")))?;
    store
        .reload_trust(&runtime)
        .await
        .map_err(|e| fail(format!("cannot read trusted keys: {e}")))?;
    spawn_trust_reload(store.clone(), runtime.clone());
    let registry = Arc::new(Registry::new(runtime));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // The database is the truth about plugins: load what it holds, then
    // import the plugins directory into it, then follow other nodes.
    let cluster = Arc::new(Plugins::new(store.clone(), registry.clone(), clock.clone()));
    cluster.reconcile().await.map_err(|e| {
        fail(format!(
            "cannot load the plugins stored in the database: {e}"
        ))
    })?;
    std::fs::create_dir_all(&args.plugins_dir).map_err(|e| {
        fail(format!(
            "plugins directory {}: {e}",
            args.plugins_dir.display()
        ))
    })?;
    let mut plugins_dir = PluginDir::new(&args.plugins_dir);
    plugins_dir.scan(&*cluster).await;
    plugins_dir.spawn(cluster.clone(), Duration::from_millis(args.plugins_scan_ms));
    let listen_url = (store.dialect() == Dialect::Postgres).then(|| args.db.database.clone());
    Plugins::clone(&cluster)
        .spawn_sync(Duration::from_millis(args.plugins_reconcile_ms), listen_url);

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| fail(format!("cannot listen on {}: {e}", args.listen)))?;
    let address = listener.local_addr().map_err(fail)?;
    tracing::info!(%address, database = %args.db.database, plugins = %args.plugins_dir.display(), "nachfass listening");
    if store.count_api_keys().await.map_err(fail)? == 0 {
        tracing::warn!(
            "no API key yet: create the first with `nachfass keys create --name admin --scope admin --database {}`",
            args.db.database
        );
    }
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{address}"));
    run_server(Server {
        store,
        registry,
        listener,
        plugins_dir: args.plugins_dir,
        scheduler: (!args.no_scheduler).then_some(args.lease_ms),
        public_url,
        oci: OciSettings {
            allowed: AllowedRegistries(args.oci_registries.clone()),
            client: OciClient::new(args.oci_token.clone()),
        },
        mailbox: None,
        edge: Edge {
            trusted_proxies: args.trusted_proxies.clone(),
            event_times: EventTimes {
                oldest: args.oldest_event_ms,
                ahead: args.event_ahead_ms,
            },
            limits: ConnectionLimits {
                header_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
                body_timeout: Duration::from_secs(args.body_timeout_secs.max(1)),
                max_connections: args.max_connections.max(1),
            },
        },
    })
    .await
}

/// A server ready to run: `serve` and `demo` both end in one.
pub(super) struct Server {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub listener: tokio::net::TcpListener,
    pub plugins_dir: PathBuf,
    /// The scheduler's lease in milliseconds; `None` runs no scheduler.
    pub scheduler: Option<i64>,
    pub public_url: String,
    /// Registries plugins may be pulled from.
    pub oci: OciSettings,
    pub mailbox: Option<Arc<crate::mailbox::Mailbox>>,
    pub edge: Edge,
}

/// What the HTTP edge enforces: which proxies may name the client, the
/// event times accepted, and the connection limits.
#[derive(Clone, Debug, Default)]
pub(super) struct Edge {
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub event_times: EventTimes,
    pub limits: ConnectionLimits,
}

/// Serves the API, the dashboard and (if asked) the scheduler until Ctrl-C
/// or SIGTERM.
pub(super) async fn run_server(server: Server) -> Result<(), CliError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = server.store.clone();
    let pipeline = Pipeline {
        store: server.store,
        registry: server.registry,
        clock,
        stages: StageThresholds::default(),
    };
    let journeys = Journeys::new(pipeline, Policy::default());
    journeys.set_public_url(&server.public_url);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scheduler = server.scheduler.map(|lease_ms| {
        let config = SchedulerConfig {
            lease_ms,
            ..SchedulerConfig::default()
        };
        let scheduler = Scheduler::new(journeys.clone(), config);
        tracing::info!(worker = scheduler.worker(), "scheduler running");
        tokio::spawn(scheduler.run_forever(stopped))
    });
    let mut state = AppState::with_journeys(journeys, Some(server.plugins_dir));
    state.oci = server.oci;
    state.trusted_proxies = Arc::new(server.edge.trusted_proxies);
    state.event_times = server.edge.event_times;
    if let Some(mailbox) = server.mailbox {
        state = state.with_mailbox(mailbox);
    }
    connections::serve(
        server.listener,
        app(state),
        server.edge.limits,
        shutdown_signal(),
    )
    .await;
    let _ = stop.send(true);
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    // Shadow observations still queued: written now, or lost with a crash.
    if let Err(e) = store.flush_shadow_results().await {
        tracing::warn!(error = %e, "shadow results queued at shutdown not recorded");
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM as systemd and container runtimes send it: either
/// drains in-flight requests and stops the scheduler, which gives back its
/// leases.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down: draining requests");
}

/// Follows trusted-key changes made on other nodes.
fn spawn_trust_reload(store: Store, runtime: Runtime) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TRUST_RELOAD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = store.reload_trust(&runtime).await {
                tracing::warn!("reloading trusted keys failed; keeping the last ones: {e}");
            }
        }
    });
}

/// How often a node re-reads the trusted keys.
const TRUST_RELOAD: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// A name to recognise the key by.
    #[arg(long)]
    pub name: String,
    /// Scopes: admin, write, read, ingest; repeatable.
    #[arg(long = "scope", required = true, value_parser = parse_scope)]
    pub scopes: Vec<Scope>,
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| format!("`{s}` is not a scope: use admin, write, read or ingest"))
}

/// Prints the new key's secret: the only time it is shown.
pub async fn create_key(args: CreateKeyArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let store = Store::connect(&args.db.database).await.map_err(fail)?;
    let (key, secret) = store
        .create_api_key(&args.name, &args.scopes, SystemClock.now())
        .await
        .map_err(fail)?;
    writeln!(out, "{secret}").map_err(fail)?;
    tracing::info!(id = %key.id, name = %key.name, "API key created");
    Ok(())
}
