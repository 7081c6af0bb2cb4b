//! What lives in a plugin call's `Store`: the empty WASI context, the
//! binding's configuration, the resource limiter and the HTTP allow-list.
//! A store serves one call (or one batch) and is dropped after it, so
//! nothing leaks from one contact to the next.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::{host, since_v0_1_0};
use super::limits::{Limits, RuntimeLimits};
use super::manifest::World;
use super::outgoing_http::AllowList;

/// Stderr kept per call, so a guest panic message can be reported.
const STDERR_CAPTURE: usize = 4096;
/// Log lines one call may write; more are dropped.
const MAX_LOG_LINES: u32 = 64;
/// Longest log line kept.
const MAX_LOG_LINE: usize = 1024;

/// How an operator set up one use of a plugin: its configuration, limits
/// and, for channels, where it may send HTTP requests.
#[derive(Clone, Debug, Default)]
pub struct Binding {
    /// Binding name, for logs.
    pub name: String,
    pub config: BTreeMap<String, String>,
    pub limits: Limits,
    /// `host` or `host:port` entries; `*.example.com` allows subdomains.
    pub allow_http: Vec<String>,
    /// Also keeps the plugin's log lines here (`plugin test --logs`).
    pub log_sink: Option<LogSink>,
}

/// Log lines a plugin wrote, kept for whoever ran it (besides `tracing`).
#[derive(Clone, Debug, Default)]
pub struct LogSink(Arc<std::sync::Mutex<Vec<(host::Level, String)>>>);

impl LogSink {
    /// The lines so far, as `(level, message)`, level in lower case.
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        let lines = self.0.lock().map(|l| l.clone()).unwrap_or_default();
        lines
            .into_iter()
            .map(|(level, message)| {
                let level = match level {
                    host::Level::Trace => "trace",
                    host::Level::Debug => "debug",
                    host::Level::Info => "info",
                    host::Level::Warn => "warn",
                    host::Level::Error => "error",
                };
                (level, message)
            })
            .collect()
    }

    fn push(&self, level: host::Level, message: &str) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push((level, message.to_owned()));
        }
    }
}

impl Binding {
    pub fn new(name: &str, world: World) -> Binding {
        Binding {
            name: name.to_owned(),
            config: BTreeMap::new(),
            limits: Limits::for_world(world),
            allow_http: Vec::new(),
            log_sink: None,
        }
    }

    pub fn with_config(mut self, key: &str, value: &str) -> Binding {
        self.config.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Binding {
        self.limits = limits;
        self
    }

    pub fn allowing_http(mut self, destination: &str) -> Binding {
        self.allow_http.push(destination.to_owned());
        self
    }
}

/// The data of one call's store.
pub struct CallState {
    plugin: Arc<str>,
    binding: Arc<Binding>,
    now: i64,
    /// What the WASI clocks read: `now`, shared so a reused store's next
    /// call moves them too.
    clock: Arc<AtomicI64>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    allow_list: AllowList,
    pub(super) limiter: CallLimiter,
    pub(super) stderr: MemoryOutputPipe,
    log_lines: u32,
}

impl CallState {
    /// `declared_hosts` are the plugin version's `http_hosts`: the binding's
    /// allow-list only takes effect within them.
    pub fn new(
        plugin: Arc<str>,
        binding: Arc<Binding>,
        declared_hosts: &[String],
        limits: &Limits,
        now: i64,
    ) -> CallState {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let clock = Arc::new(AtomicI64::new(now));
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FrozenClock(clock.clone()))
            .monotonic_clock(FrozenClock(clock.clone()))
            .build();
        CallState {
            allow_list: AllowList::new(&binding.allow_http).within(declared_hosts),
            plugin,
            binding,
            now,
            clock,
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: CallLimiter::new(limits.memory_bytes),
            stderr,
            log_lines: 0,
        }
    }

    /// Starts another call on the same store at `now` (a replay's next
    /// event): `host.now` and the WASI clocks read it, and the call's log
    /// lines count from zero.
    pub(super) fn next_call(&mut self, now: i64) {
        self.now = now;
        self.clock.store(now, Ordering::Relaxed);
        self.log_lines = 0;
    }

    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// Linear memory the instance holds now, all memories together.
    pub fn memory_bytes_now(&self) -> usize {
        self.limiter.memory_bytes_now
    }

    /// The guest's stderr, e.g. a Rust panic message.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_owned()
    }
}

/// A fresh store for one call, with limits applied: fuel (set for the
/// call by [`start_call_budget`]), and an epoch deadline at the wall-clock backstop (a
/// running guest never yields to the async timeout, the epoch stops it).
pub fn store(
    engine: &wasmtime::Engine,
    state: CallState,
    limits: &Limits,
    runtime: &RuntimeLimits,
) -> Store<CallState> {
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    if runtime.consume_fuel {
        // Instantiating runs no plugin code worth metering (a Python or
        // JavaScript component maps a pre-initialised heap): the wall-clock
        // deadline bounds it, the call's fuel starts in `start_call_budget`.
        // Only fails when the engine does not meter fuel, checked above.
        let _ = store.set_fuel(u64::MAX);
    }
    store.epoch_deadline_trap();
    restart_deadline(&mut store, limits, runtime);
    store
}

/// The wall-clock backstop, counted from now in epoch ticks.
pub fn restart_deadline(store: &mut Store<CallState>, limits: &Limits, runtime: &RuntimeLimits) {
    let tick = runtime.epoch_tick.as_nanos().max(1);
    let ticks = limits.wall_time.as_nanos().div_ceil(tick);
    store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX).max(1));
}

/// Gives the call its fuel, once the instance exists. Instantiating a
/// Python or JavaScript component maps a pre-initialised interpreter heap
/// and fills tables of thousands of functions: the host's work, bounded by
/// the wall-clock deadline, not the plugin's instructions.
pub fn start_call_budget(store: &mut Store<CallState>, limits: &Limits, runtime: &RuntimeLimits) {
    if runtime.consume_fuel {
        let _ = store.set_fuel(limits.fuel);
    }
}

/// A linker with what `world` grants: WASI with an empty context for all,
/// the `host` interface for all, outgoing HTTP and mail for channels only;
/// `host` and `mail` in every WIT version the host speaks, so a component
/// finds the one it was built against.
pub fn linker(engine: &wasmtime::Engine, world: World) -> wasmtime::Result<Linker<CallState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    host::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)?;
    since_v0_1_0::host::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)?;
    if world == World::Channel {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        super::bindings::mail::add_to_linker::<CallState, HasSelf<CallState>>(
            &mut linker,
            |state| state,
        )?;
        since_v0_1_0::mail::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| {
            state
        })?;
    }
    Ok(linker)
}

/// `host@0.1.0` is `host@0.2.0` under its old name.
impl since_v0_1_0::host::Host for CallState {
    fn log(&mut self, level: since_v0_1_0::host::Level, message: String) {
        use since_v0_1_0::host::Level as Old;
        let level = match level {
            Old::Trace => host::Level::Trace,
            Old::Debug => host::Level::Debug,
            Old::Info => host::Level::Info,
            Old::Warn => host::Level::Warn,
            Old::Error => host::Level::Error,
        };
        host::Host::log(self, level, message);
    }

    fn config(&mut self, key: String) -> Option<String> {
        host::Host::config(self, key)
    }

    fn now(&mut self) -> i64 {
        host::Host::now(self)
    }
}

impl host::Host for CallState {
    fn log(&mut self, level: host::Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let cut = (0..=MAX_LOG_LINE)
                .rev()
                .find(|&i| message.is_char_boundary(i))
                .unwrap_or(0);
            message.truncate(cut);
            message.push('…');
        }
        if let Some(sink) = &self.binding.log_sink {
            sink.push(level, &message);
        }
        let (plugin, binding) = (&*self.plugin, &self.binding.name);
        match level {
            host::Level::Trace => tracing::trace!(plugin, binding, "{message}"),
            host::Level::Debug => tracing::debug!(plugin, binding, "{message}"),
            host::Level::Info => tracing::info!(plugin, binding, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, binding, "{message}"),
            host::Level::Error => tracing::error!(plugin, binding, "{message}"),
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.binding.config.get(&key).cloned()
    }

    fn now(&mut self) -> i64 {
        self.now
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.allow_list,
        }
    }
}

/// Caps linear memory and counts of instances and tables, and remembers
/// whether the memory cap was hit so the error can say so.
pub struct CallLimiter {
    memory_bytes: usize,
    pub(super) memory_exceeded: bool,
    /// Sum of the memories' sizes (creation counts as growth from 0).
    memory_bytes_now: usize,
}

impl CallLimiter {
    fn new(memory_bytes: usize) -> CallLimiter {
        CallLimiter {
            memory_bytes,
            memory_exceeded: false,
            memory_bytes_now: 0,
        }
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_exceeded = true;
            wasmtime::bail!("memory limit of {} bytes exceeded", self.memory_bytes);
        }
        self.memory_bytes_now = self
            .memory_bytes_now
            .saturating_add(desired.saturating_sub(current));
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        32
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        8
    }
}

/// WASI clocks stand still at the evaluation time: a plugin sees the same
/// time through std as through `host.now`, and replays are reproducible.
struct FrozenClock(Arc<AtomicI64>);

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.load(Ordering::Relaxed)).unwrap_or(0))
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        u64::try_from(self.0.load(Ordering::Relaxed))
            .unwrap_or(0)
            .saturating_mul(1_000_000)
    }
}
