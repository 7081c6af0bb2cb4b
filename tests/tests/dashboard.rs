//! The operator dashboard in a real browser: headless Chromium driven by
//! chromedriver (WebDriver) against the server on 127.0.0.1. Data is
//! created through the API; the test logs in with a key, opens every page,
//! checks it shows that data, and saves a screenshot of each page to
//! `target/test-artifacts/screenshots/`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use nachfass::api::{AppState, app};
use nachfass::clock::SystemClock;
use nachfass::ingest::Pipeline;
use nachfass::journeys::Journeys;
use nachfass::policy::Policy;
use nachfass::runtime::Registry;
use nachfass::runtime::manifest::embed;
use nachfass::runtime::registry::Activation;
use nachfass::scheduler::{Scheduler, SchedulerConfig};
use nachfass::scoring::StageThresholds;
use nachfass::store::Scope;
use nachfass_tests::server::{free_port, http, http_bytes};
use nachfass_tests::{HttpSink, guests, runtime, stores};
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver with one headless Chromium session.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (tests/run installs Debian's chromium-driver)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
            "binary": chromium(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"] } } } });
        let (status, answer) = http(
            port,
            "POST",
            "/session",
            None,
            Some(&capabilities.to_string()),
        );
        assert_eq!(status, 200, "{answer}");
        let session = answer["value"]["sessionId"].as_str().unwrap().to_owned();
        Browser {
            driver,
            port,
            session,
        }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        // WebDriver wants a JSON object with every POST, `{}` at least.
        let body = (method == "POST").then(|| {
            if body.is_null() {
                "{}".to_owned()
            } else {
                body.to_string()
            }
        });
        let (status, answer) = http(self.port, method, &path, None, body.as_deref());
        assert_eq!(status, 200, "{method} {path}: {answer}");
        answer["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            json!({ "using": "css selector", "value": css }),
        );
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    /// Waits until the page's text contains `wanted`; returns the text.
    fn wait_for_text(&self, wanted: &str) -> String {
        let started = Instant::now();
        loop {
            let text = self
                .script("return document.body.innerText")
                .as_str()
                .unwrap_or("")
                .to_owned();
            if text.contains(wanted) {
                return text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "`{wanted}` never appeared; the page shows:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `condition` (JavaScript) is true; returns the page text.
    fn wait_until(&self, condition: &str) -> String {
        self.wait_up_to(Duration::from_secs(15), condition)
    }

    /// [`Browser::wait_until`] with a longer patience, for a server that
    /// fills its pages while it runs.
    fn wait_up_to(&self, patience: Duration, condition: &str) -> String {
        let started = Instant::now();
        while self.script(&format!("return Boolean({condition})")) != Value::Bool(true) {
            assert!(
                started.elapsed() < patience,
                "never true: {condition}\nthe page shows:\n{}",
                self.script("return document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.script("return document.body.innerText")
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    fn screenshot(&self, name: &str) {
        let png = self.call("GET", "/screenshot", Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = http(self.port, "DELETE", &path, None, None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Puts a valid definition back into the editor: the installed one with
/// the added step.
fn edit_back(browser: &Browser) {
    browser.script(
        "const area = document.getElementById('definition'); api('/v1/journeys/cart-abandonment').then((j) => { j.definition.steps.push({ id: 'last-wait', type: 'wait', duration: '2d' }); area.value = JSON.stringify(j.definition, null, 2); area.dispatchEvent(new Event('input')); })",
    );
    browser.wait_until(
        "document.querySelector('#flow-preview [data-step=\"last-wait\"]') && !document.getElementById('valid').hidden && document.querySelectorAll('#problems li').length === 0",
    );
}

fn chromium() -> String {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Debian's chromium is installed (tests/run installs it)")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_api_created() {
    let (_, store, temp) = stores().await.into_iter().next().unwrap();
    let registry = Arc::new(Registry::new(runtime()));
    for guest in [guests::ENGAGEMENT, guests::ATTRIBUTE_MATCH, guests::WEBHOOK] {
        registry
            .install_file(&guest.packed(), Activation::Now)
            .await
            .unwrap();
    }
    let pipeline = Pipeline {
        store: store.clone(),
        registry,
        clock: Arc::new(SystemClock),
        stages: StageThresholds::default(),
    };
    let (_, key) = store
        .create_api_key("dashboard", &[Scope::Admin], 0)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let journeys = Journeys::new(pipeline, Policy::default());
    let scheduler = Scheduler::new(journeys.clone(), SchedulerConfig::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scheduling = tokio::spawn(scheduler.run_forever(stopped));
    let state = AppState::with_journeys(journeys, None);
    let server = tokio::spawn(async move { axum::serve(listener, app(state)).await });
    let sink = HttpSink::start(200).await;

    // Data, all through the API.
    let api = |method: &'static str, path: String, body: Value| {
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            let (status, answer) = http(port, method, &path, Some(&key), Some(&body.to_string()));
            assert!(
                (200..300).contains(&status),
                "{method} {path}: {status} {answer}"
            );
            answer
        })
    };
    api(
        "POST",
        "/v1/bindings".into(),
        json!({ "name": "engagement", "kind": "scorer", "plugin": "engagement" }),
    )
    .await
    .unwrap();
    api(
        "POST",
        "/v1/bindings".into(),
        json!({ "name": "pricing-visitors", "kind": "segment", "plugin": "attribute-match",
        "config": { "attribute": "contact.score", "op": "gt", "value": "0" } }),
    )
    .await
    .unwrap();
    api("POST", "/v1/bindings".into(), json!({ "name": "hook", "kind": "channel", "plugin": "webhook",
        "config": { "url": format!("http://{}/hook", sink.addr), "secret": "s" }, "allow_http": [sink.addr.to_string()] })).await.unwrap();
    api("PUT", "/v1/journeys/welcome-b2b".into(), json!({ "name": "welcome-b2b", "purpose": "transactional",
        "trigger": { "event": { "kind": "signup" } },
        "steps": [ { "id": "hello", "type": "send", "binding": "hook", "template": { "subject": "Hallo", "text": "Willkommen" } },
                   { "id": "pause", "type": "wait", "duration": "2d" } ] })).await.unwrap();
    for (email, kind) in [
        ("ada@dashboard.example", "signup"),
        ("ada@dashboard.example", "page.visited"),
        ("bob@dashboard.example", "signup"),
    ] {
        api(
            "POST",
            "/v1/events".into(),
            json!({ "kind": kind, "email": email, "properties": { "url": "/pricing" } }),
        )
        .await
        .unwrap();
    }

    // Both welcome messages delivered before the browser looks.
    let started = Instant::now();
    loop {
        use sqlx::Row;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE status = 'delivered'")
            .fetch_one(store.pool())
            .await
            .unwrap();
        if row.try_get::<i64, _>("n").unwrap() == 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the welcome messages were not delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An upgrade that wants one more host waits for approval.
    for (version, hosts, expected) in [
        ("1.0.0", vec!["a.example"], 201),
        ("1.1.0", vec!["a.example", "b.example"], 202),
    ] {
        let mut manifest = guests::WEBHOOK.manifest();
        manifest.name = "relay".into();
        manifest.version = version.into();
        manifest.http_hosts = hosts.into_iter().map(str::to_owned).collect();
        let bytes = embed(&guests::WEBHOOK.bytes(), &manifest).unwrap();
        let key = key.clone();
        let (status, answer) = tokio::task::spawn_blocking(move || {
            http_bytes(
                port,
                "POST",
                "/v1/plugins",
                Some(&key),
                "application/wasm",
                &bytes,
            )
        })
        .await
        .unwrap();
        assert_eq!(status, expected, "{answer}");
    }
    let base = format!("http://127.0.0.1:{port}");
    let key_for_browser = key.clone();
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start();
        // German by choice (the demo test covers English and the switch).
        browser.go(&format!("{base}/dashboard?lang=de"));
        let text = browser.wait_for_text("API-Schlüssel");
        assert!(
            !text.contains("Kontakte"),
            "nothing is visible before logging in"
        );
        browser.screenshot("login");
        let input = browser.element("#key");
        browser.call(
            "POST",
            &format!("/element/{input}/value"),
            json!({ "text": key_for_browser }),
        );
        let button = browser.element("#login-button");
        browser.call("POST", &format!("/element/{button}/click"), Value::Null);

        let overview = browser.wait_for_text("Ereignisse pro Tag");
        let contacts = browser.script("return document.getElementById('stat-contacts').innerText");
        assert_eq!(contacts, "2", "{overview}");
        browser.screenshot("overview");

        browser.go(&format!("{base}/dashboard#/contacts"));
        browser.wait_for_text("bob@dashboard.example");
        browser.screenshot("contacts");
        browser.go(&format!("{base}/dashboard#/contacts?q=ada"));
        let list = browser.wait_until(
            "document.getElementById('search') && document.getElementById('search').value === 'ada' \
             && !document.body.innerText.includes('bob@dashboard.example')",
        );
        assert!(list.contains("ada@dashboard.example"), "search finds: {list}");
        let link = browser.element("#contacts a");
        browser.call("POST", &format!("/element/{link}/click"), Value::Null);
        let profile = browser.wait_for_text("Zeitleiste");
        for expected in [
            "page.visited",
            "signup",
            "Score-Verlauf",
            "pricing-visitors",
            "message.sent",
        ] {
            assert!(
                profile.contains(expected),
                "the profile shows {expected}:\n{profile}"
            );
        }
        browser.screenshot("contact");

        browser.go(&format!("{base}/dashboard#/segments"));
        browser.wait_for_text("pricing-visitors");
        browser.screenshot("segments");

        browser.go(&format!("{base}/dashboard#/journeys"));
        browser.wait_for_text("welcome-b2b");
        browser.screenshot("journeys");
        browser.go(&format!("{base}/dashboard#/journeys/welcome-b2b"));
        let flow = browser.wait_for_text("Ablauf");
        assert!(
            flow.contains("hello") && flow.contains("2 versandt"),
            "the flow shows the step and its sends:\n{flow}"
        );
        browser.screenshot("journey");

        browser.go(&format!("{base}/dashboard#/plugins"));
        let plugins = browser.wait_for_text("attribute-match");
        assert!(
            plugins.contains("webhook") && plugins.contains("engagement"),
            "{plugins}"
        );
        browser.screenshot("plugins");
        // The pending review shows what the upgrade asks for; Approve
        // grants exactly that and the version goes live.
        let review = browser.wait_until("document.querySelector('[data-review=\"relay@1.1.0\"]')");
        assert!(
            review.contains("Wartet auf Genehmigung") && review.contains("HTTP-Ziele: b.example"),
            "{review}"
        );
        browser.screenshot("plugin-review");
        browser.script("document.querySelector('[data-review=\"relay@1.1.0\"] button').click()");
        browser.wait_until("!document.getElementById('reviews') && document.getElementById('plugins')");
        let (status, listed) = http(port, "GET", "/v1/plugins", Some(&key_for_browser), None);
        assert_eq!(status, 200);
        let relay = listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "relay")
            .unwrap();
        assert_eq!(relay["live"], "1.1.0", "approved in the dashboard: {relay}");

        // Journeys edited where operators look: install a ready-made one,
        // break and fix its definition (problems inline, flow redrawn as
        // typed), save it as a new version, stop and start it.
        browser.go(&format!("{base}/dashboard#/journeys"));
        browser.wait_until("document.getElementById('install-button')");
        browser.script(
            "document.getElementById('template').value = 'cart-abandonment'; document.getElementById('install-binding').value = 'hook'; document.getElementById('install-button').click()",
        );
        let installed = browser.wait_until("location.hash === '#/journeys/cart-abandonment' && document.getElementById('flow')");
        assert!(installed.contains("reminder-2") && installed.contains("v1"), "{installed}");
        browser.script("document.querySelector('#edit button').click()");
        browser.wait_until("document.querySelectorAll('#flow-preview .step').length === 4");
        let valid = browser.wait_until("!document.getElementById('valid').hidden");
        assert!(valid.contains("Gültig."), "{valid}");
        // A step pointing nowhere: the server's problem appears inline.
        let edit = |change: &str| {
            browser.script(&format!(
                "const area = document.getElementById('definition'); const def = JSON.parse(area.value); {change}; area.value = JSON.stringify(def, null, 2); area.dispatchEvent(new Event('input'))"
            ));
        };
        edit("def.steps[0].next = 'nirgendwo'");
        let problems = browser.wait_until("document.querySelectorAll('#problems li').length > 0");
        assert!(problems.contains("nirgendwo"), "the problem is shown inline:\n{problems}");
        browser.screenshot("journey-editor-problem");
        // Fixed, and a step added: the flow is redrawn, the problems go.
        edit("delete def.steps[0].next; def.steps.push({ id: 'last-wait', type: 'wait', duration: '2d' })");
        browser.wait_until("document.querySelector('#flow-preview [data-step=\"last-wait\"]') && !document.getElementById('valid').hidden");
        browser.script("document.getElementById('definition').value = 'not json'; document.getElementById('definition').dispatchEvent(new Event('input'))");
        let broken = browser.wait_until("document.querySelectorAll('#problems li').length > 0");
        assert!(broken.contains("JSON"), "{broken}");
        edit_back(&browser);
        browser.screenshot("journey-editor");
        browser.script("document.getElementById('save').click()");
        let saved = browser.wait_until("location.hash === '#/journeys/cart-abandonment' && document.getElementById('flow')");
        assert!(saved.contains("v2") && saved.contains("last-wait"), "a new version:\n{saved}");
        browser.script("document.getElementById('toggle').click()");
        browser.wait_until("document.getElementById('journey-state')?.innerText === 'gestoppt'");
        browser.script("document.getElementById('toggle').click()");
        browser.wait_until("document.getElementById('journey-state')?.innerText === 'aktiv'");
        browser.screenshot("journey-saved");
    })
    .await
    .unwrap();
    server.abort();
    let _ = stop.send(true);
    scheduling.await.unwrap();
    temp.cleanup(store).await;
}

/// `nachfass demo` as a new user meets it: a copy of the binary alone in
/// an empty directory, no environment (so no cargo, no source tree).
struct Demo {
    child: Child,
    dir: tempfile::TempDir,
    /// The dashboard link the demo printed, key in the fragment.
    link: String,
    base: String,
}

impl Demo {
    fn start(database: Option<&str>) -> Demo {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("nachfass");
        std::fs::copy(nachfass_tests::server::binary(), &binary).unwrap();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(&binary);
        command
            .current_dir(dir.path())
            .env_clear()
            .args([
                "demo",
                "--contacts",
                "120",
                "--days",
                "14",
                "--listen",
                &listen,
            ])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap());
        if let Some(database) = database {
            command.args(["--database", database]);
        }
        let mut child = command.spawn().unwrap();
        // Read on a thread to the end: the demo keeps its stdout, and a
        // closed pipe would end it.
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (lines, printed_lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let mut printed = String::new();
        let mut link = None;
        for line in printed_lines {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("/dashboard#key=") {
                link = Some(line.trim().to_owned());
                break;
            }
        }
        let link = link.unwrap_or_else(|| panic!("the demo printed no dashboard link:\n{printed}"));
        assert!(
            printed.contains("120 contacts") && printed.contains("example plugins"),
            "{printed}"
        );
        Demo {
            child,
            dir,
            link,
            base: format!("http://{listen}"),
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // A demo that ended early says why (shown with a failing test).
        if let Ok(Some(status)) = self.child.try_wait() {
            let log =
                std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "the demo ended with {status}:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The done-when of the first ten minutes: from `nachfass demo` to a
/// dashboard where a journey shows sends, opens, clicks and a conversion,
/// the mailbox shows each message as its recipient sees it, and a
/// deferred send says why and until when.
fn the_demo_shows_follow_ups_happening(dialect: &str, database: Option<&str>) {
    let demo = Demo::start(database);
    // The plugins the demo wrote are the ones built from plugins/ with
    // the host, manifest embedded.
    let written = std::fs::read(demo.dir.path().join("plugins.d/demo-mailbox-0.1.0.wasm")).unwrap();
    let built = nachfass::runtime::manifest::embed(
        &guests::DEMO_MAILBOX.bytes(),
        &guests::DEMO_MAILBOX.manifest(),
    )
    .unwrap();
    assert!(
        written == built,
        "the embedded demo-mailbox is the built one"
    );

    let browser = Browser::start();
    // English by choice: the link with `?lang=en` before its fragment.
    let english = demo.link.replacen("/dashboard#", "/dashboard?lang=en#", 1);
    browser.go(&english);
    browser.wait_for_text("Overview");
    let dashboard = format!("{}/dashboard?lang=en", demo.base);
    browser.go(&format!("{dashboard}#/journeys/welcome-nurture"));
    let kpi = |id: &str| format!("Number(document.getElementById('{id}')?.dataset.n) > 0");
    let page = browser.wait_up_to(
        Duration::from_secs(120),
        &["kpi-sent", "kpi-opened", "kpi-clicked", "kpi-converted"]
            .map(kpi)
            .join(" && "),
    );
    for english in [
        "Flow",
        "sent",
        "Open rate",
        "Click rate",
        "Conversion",
        "Revenue",
    ] {
        assert!(
            page.contains(english),
            "`{english}` on the English page:\n{page}"
        );
    }
    assert!(!page.contains("versandt"), "{page}");
    let ab = browser.wait_until("document.querySelectorAll('#ab tr').length > 1");
    assert!(ab.contains("personal") && ab.contains("first-step"), "{ab}");
    browser.screenshot(&format!("demo-journey-en-{dialect}"));

    browser.go(&format!("{dashboard}#/mailbox"));
    let mailbox =
        browser.wait_until("document.querySelectorAll('#mailbox tr[data-message]').length > 0");
    assert!(
        mailbox.contains("opened") && mailbox.contains("bought"),
        "{mailbox}"
    );
    // The switch turns the page German, and the choice stays.
    browser.script("document.getElementById('lang-de').click()");
    browser.wait_for_text("Postfach");
    let deferred = browser.wait_up_to(
        Duration::from_secs(60),
        // The page refreshes itself every five seconds.
        "document.querySelectorAll('#deferred tr').length > 1",
    );
    assert!(
        deferred.contains("Zurückgestellt") && deferred.contains("geöffnet"),
        "{deferred}"
    );
    assert!(
        deferred.contains("deferred: outside send window until"),
        "a deferred send says why and until when:\n{deferred}"
    );
    browser.screenshot(&format!("demo-mailbox-de-{dialect}"));
    browser.go(&format!(
        "{}/dashboard#/journeys/welcome-nurture",
        demo.base
    ));
    let german = browser.wait_for_text("Ablauf");
    assert!(
        german.contains("versandt") && german.contains("Umsatz"),
        "{german}"
    );

    // A welcome as its recipient sees it: greeting, tracked links.
    browser.go(&format!("{}/dashboard#/mailbox", demo.base));
    browser.wait_until("document.querySelectorAll('#mailbox tr[data-message]').length > 0");
    let welcome = browser.script(
        "const row = [...document.querySelectorAll('#mailbox tr[data-message]')].find((r) => r.innerText.includes('welcome')); return row && row.dataset.message",
    );
    let id = welcome
        .as_str()
        .expect("a welcome in the mailbox")
        .to_owned();
    browser.go(&format!("{}/dashboard#/mailbox/{id}", demo.base));
    let message = browser.wait_until("document.getElementById('mail-text')");
    assert!(
        message.contains("Hallo ") || message.contains("Guten Tag,"),
        "{message}"
    );
    assert!(
        message.contains(&format!("{}/t/c/", demo.base)),
        "tracked links:\n{message}"
    );
    assert!(!message.contains("Hallo ,"), "{message}");
    browser.screenshot(&format!("demo-message-{dialect}"));

    // The API reference the dashboard links to, served by the binary.
    let href =
        browser.script("return document.querySelector('header a[href=\"/api-docs\"]') !== null");
    assert_eq!(
        href,
        Value::Bool(true),
        "the dashboard links the API reference"
    );
    browser.go(&format!("{}/api-docs", demo.base));
    let reference = browser.wait_for_text("operations");
    for expected in [
        "/v1/journeys/{name}/kpis",
        "/v1/events",
        "EventInput",
        "scope: admin",
    ] {
        assert!(
            reference.contains(expected),
            "`{expected}` in the reference:\n{reference}"
        );
    }
    browser.screenshot(&format!("demo-api-reference-{dialect}"));
}

#[test]
fn the_demo_runs_from_a_lone_binary_and_follow_ups_visibly_happen_sqlite() {
    the_demo_shows_follow_ups_happening("sqlite", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_from_a_lone_binary_and_follow_ups_visibly_happen_postgres() {
    let (_, url, temp) = nachfass_tests::databases().await.pop().unwrap();
    let database = url.clone();
    tokio::task::spawn_blocking(move || {
        the_demo_shows_follow_ups_happening("postgres", Some(&database))
    })
    .await
    .unwrap();
    let store = nachfass::store::Store::connect(&url).await.unwrap();
    temp.cleanup(store).await;
}
