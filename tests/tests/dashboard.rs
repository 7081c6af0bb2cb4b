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
use nachfass::journeys::Journeys;
use nachfass::policy::Policy;
use nachfass::runtime::Registry;
use nachfass::runtime::manifest::embed;
use nachfass::runtime::registry::Activation;
use nachfass::scheduler::{Scheduler, SchedulerConfig};
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
    let pipeline = nachfass_tests::world::pipeline(store.clone(), registry, Arc::new(SystemClock));
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

/// version-tag built as 1.0.0 or 2.0.0, packed under one name.
fn version_tag(version: u8) -> Vec<u8> {
    let guest = if version == 1 {
        guests::VERSION_TAG
    } else {
        guests::VERSION_TAG_NEXT
    };
    let mut manifest = guest.manifest();
    manifest.name = "version-tag".into();
    embed(&guest.bytes(), &manifest).unwrap()
}

/// The plugin as `GET /v1/plugins` lists it.
fn listed_plugin(port: u16, key: &str, name: &str) -> Value {
    let (status, listed) = http(port, "GET", "/v1/plugins", Some(key), None);
    assert_eq!(status, 200, "{listed}");
    listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} is listed: {listed}"))
        .clone()
}

/// The binding as `GET /v1/bindings` lists it.
fn listed_binding(port: u16, key: &str, name: &str) -> Value {
    let (status, listed) = http(port, "GET", "/v1/bindings", Some(key), None);
    assert_eq!(status, 200, "{listed}");
    listed["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == name)
        .unwrap_or_else(|| panic!("{name} is listed: {listed}"))
        .clone()
}

/// The operator deploys from the dashboard: uploads through the form (a
/// version kept for later, then activated; a component with its manifest
/// file beside it), activates an older version and rolls back with the
/// buttons, sees each refusal (not a component, a version that needs
/// approval, a misspelt configuration key) in the server's words, creates a binding and watches its re-score
/// reach done without reloading, pins a version in the edit form, and
/// resumes a binding the circuit breaker paused (tripped for real by the
/// flaky-scorer fixture). Every step is checked through the API as well.
async fn the_dashboard_deploys_plugins_and_bindings(dialect: &'static str) {
    let (url, temp) = nachfass_tests::database(dialect).await;
    let store = nachfass::store::Store::connect(&url).await.unwrap();
    let pipeline = nachfass_tests::world::pipeline(
        store.clone(),
        Arc::new(Registry::new(runtime())),
        Arc::new(SystemClock),
    );
    let (_, key) = store
        .create_api_key("dashboard", &[Scope::Admin], 0)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let journeys = Journeys::new(pipeline, Policy::default());
    // No scheduler runs in the background: the test runs the queued tasks
    // while the browser looks, so the page must refresh on its own.
    let scheduler = Scheduler::new(journeys.clone(), SchedulerConfig::default());
    let state = AppState::with_journeys(journeys, None);
    let server = tokio::spawn(async move { axum::serve(listener, app(state)).await });

    let key_for_setup = key.clone();
    tokio::task::spawn_blocking(move || {
        let key = key_for_setup.as_str();
        let upload = |bytes: &[u8], query: &str, expected: u16| {
            let path = format!("/v1/plugins{query}");
            let (status, answer) =
                http_bytes(port, "POST", &path, Some(key), "application/wasm", bytes);
            assert_eq!(status, expected, "{answer}");
        };
        upload(&version_tag(1), "", 201);
        for guest in [guests::ENGAGEMENT, guests::FLAKY_SCORER] {
            upload(&std::fs::read(guest.packed()).unwrap(), "", 201);
        }
        // relay 1.1.0 wants one more host than the live 1.0.0.
        for (version, hosts, query) in [
            ("1.0.0", vec!["a.example"], ""),
            ("1.1.0", vec!["a.example", "b.example"], "?activate=false"),
        ] {
            let mut manifest = guests::WEBHOOK.manifest();
            manifest.name = "relay".into();
            manifest.version = version.into();
            manifest.http_hosts = hosts.into_iter().map(str::to_owned).collect();
            upload(&embed(&guests::WEBHOOK.bytes(), &manifest).unwrap(), query, 201);
        }
        let post = |path: &str, body: Value| {
            let (status, answer) = http(port, "POST", path, Some(key), Some(&body.to_string()));
            assert!((200..300).contains(&status), "{path}: {status} {answer}");
        };
        for email in ["a@deploy.example", "b@deploy.example", "c@deploy.example"] {
            post(
                "/v1/events",
                json!({ "kind": "page.visited", "email": email, "properties": { "url": "/pricing" } }),
            );
        }
        // The flaky scorer traps from its eleventh call on: the breaker
        // pauses its binding (no earlier version to roll back to).
        post(
            "/v1/bindings",
            json!({ "name": "flaky", "kind": "scorer", "plugin": "flaky-scorer" }),
        );
        for seq in 1..=30 {
            post(
                "/v1/events",
                json!({ "kind": "page.visited", "email": "f@deploy.example", "properties": { "seq": seq } }),
            );
        }
        let flaky = listed_binding(port, key, "flaky");
        assert!(
            flaky["paused"].as_str().unwrap_or_default().contains("10 of 20 calls"),
            "{dialect}: {flaky}"
        );
    })
    .await
    .unwrap();

    let base = format!("http://127.0.0.1:{port}");
    let runtime_handle = tokio::runtime::Handle::current();
    let files = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking(move || {
        let key = key.as_str();
        let browser = Browser::start();
        browser.go(&format!("{base}/dashboard?lang=de#key={key}"));
        browser.wait_for_text("Ereignisse pro Tag");
        browser.go(&format!("{base}/dashboard#/plugins"));
        browser.wait_until("document.getElementById('upload-file')");

        // Upload through the form: a file that is no component is refused
        // in the server's words.
        let choose = |path: &std::path::Path| {
            let input = browser.element("#upload-file");
            browser.call(
                "POST",
                &format!("/element/{input}/value"),
                json!({ "text": path.to_str().unwrap() }),
            );
            browser.script("document.getElementById('upload-button').click()");
        };
        let junk = files.path().join("notes.wasm");
        std::fs::write(&junk, "not a component").unwrap();
        choose(&junk);
        let refused = browser.wait_until(
            "document.getElementById('upload-result').className === 'bad' && document.getElementById('upload-result').innerText.length > 0",
        );
        let (status, by_api) = http_bytes(
            port,
            "POST",
            "/v1/plugins",
            Some(key),
            "application/wasm",
            b"not a component",
        );
        assert_eq!(status, 422, "{by_api}");
        let message = by_api["error"]["message"].as_str().unwrap();
        assert!(refused.contains(message), "{message} on the page:\n{refused}");
        browser.script("document.getElementById('upload').reset()");
        // version-tag 2.0.0 uploaded without activating: installed, and
        // 1.0.0 stays live; its Activate button makes it live.
        browser.script("document.getElementById('upload-later').checked = true");
        let next = files.path().join("version-tag-2.0.0.wasm");
        std::fs::write(&next, version_tag(2)).unwrap();
        choose(&next);
        browser.wait_for_text("version-tag@2.0.0 installiert, nicht live.");
        assert_eq!(listed_plugin(port, key, "version-tag")["live"], "1.0.0");
        browser.script(
            "document.querySelector('[data-version=\"version-tag@2.0.0\"] button.activate').click()",
        );
        let activated = browser.wait_until(
            "document.querySelector('[data-version=\"version-tag@2.0.0\"] .tag.live')",
        );
        assert!(activated.contains("version-tag@2.0.0 ist live."), "{activated}");
        assert_eq!(listed_plugin(port, key, "version-tag")["live"], "2.0.0");
        // A component from another toolchain: no manifest inside, its
        // `.manifest.json` chosen beside it (sent as a multipart form).
        let raw = files.path().join("b2b_fit.wasm");
        std::fs::write(&raw, guests::B2B_FIT.bytes()).unwrap();
        let sidecar = files.path().join("b2b_fit.manifest.json");
        std::fs::write(&sidecar, serde_json::to_vec(&guests::B2B_FIT.manifest()).unwrap()).unwrap();
        let manifest_input = browser.element("#upload-manifest");
        browser.call(
            "POST",
            &format!("/element/{manifest_input}/value"),
            json!({ "text": sidecar.to_str().unwrap() }),
        );
        choose(&raw);
        let b2b = format!("b2b-fit@{}", guests::B2B_FIT.manifest().version);
        let uploaded = browser.wait_for_text(&format!("{b2b} installiert und live."));
        assert!(uploaded.contains("b2b-fit"), "{uploaded}");
        assert_eq!(
            listed_plugin(port, key, "b2b-fit")["live"],
            guests::B2B_FIT.manifest().version.as_str()
        );
        browser.screenshot(&format!("plugins-uploaded-{dialect}"));

        // Activate the older version, then roll back to the newer.
        browser.script(
            "document.querySelector('[data-version=\"version-tag@1.0.0\"] button.activate').click()",
        );
        browser.wait_until(
            "document.querySelector('[data-version=\"version-tag@1.0.0\"] .tag.live') && document.querySelector('[data-plugin=\"version-tag\"] button.rollback')",
        );
        let plugin = listed_plugin(port, key, "version-tag");
        assert_eq!(
            (plugin["live"].as_str(), plugin["previous"].as_str()),
            (Some("1.0.0"), Some("2.0.0")),
            "{dialect}: {plugin}"
        );
        browser.script("document.querySelector('[data-plugin=\"version-tag\"] button.rollback').click()");
        let rolled = browser.wait_until(
            "document.querySelector('[data-version=\"version-tag@2.0.0\"] .tag.live')",
        );
        assert!(rolled.contains("version-tag@2.0.0 ist live."), "{rolled}");
        assert_eq!(listed_plugin(port, key, "version-tag")["live"], "2.0.0");

        // A version that asks for more than the live one: refused, and
        // the page says why; nothing changed.
        browser.script(
            "document.querySelector('[data-version=\"relay@1.1.0\"] button.activate').click()",
        );
        let refused = browser.wait_until(
            "document.querySelector('[data-plugin=\"relay\"] .bad').innerText.includes('asks for more')",
        );
        assert!(
            refused.contains("relay@1.1.0 asks for more than the live relay@1.0.0"),
            "{refused}"
        );
        assert_eq!(listed_plugin(port, key, "relay")["live"], "1.0.0");
        browser.script("document.querySelector('[data-plugin=\"relay\"]').scrollIntoView()");
        browser.screenshot(&format!("plugins-refused-{dialect}"));

        // A binding with a misspelt key: the server's 422, with the known
        // keys, and no binding.
        let fill = |name: &str, plugin: &str, config: &str| {
            browser.script(&format!(
                "const f = document.getElementById('binding-form'); f.name.value = {}; f.kind.value = 'scorer'; f.plugin.value = {}; f.config.value = {}; document.getElementById('binding-save').click()",
                json!(name),
                json!(plugin),
                json!(config)
            ));
        };
        fill("eng", "engagement", "pricing_point=15");
        let refused = browser.wait_until(
            "document.getElementById('binding-result').innerText.includes('unknown configuration key')",
        );
        assert!(
            refused.contains("binding `eng`: unknown configuration key `pricing_point` for plugin `engagement`; known keys: points, pricing_points, pricing_path, max_per_day"),
            "{refused}"
        );
        let (_, bindings) = http(port, "GET", "/v1/bindings", Some(key), None);
        assert_eq!(bindings["bindings"].as_array().unwrap().len(), 1, "{bindings}");
        browser.script("document.getElementById('binding-panel').scrollIntoView()");
        browser.screenshot(&format!("binding-refused-{dialect}"));

        // Fixed: created, and its re-score task shows up, still waiting.
        browser.script("document.getElementById('binding-config').value = 'pricing_points=15'; document.getElementById('binding-save').click()");
        browser.wait_for_text("Bindung eng angelegt.");
        let task_row = "document.querySelector('#tasks tr[data-target=\"eng\"]')";
        let waiting = browser.wait_until(&format!("{task_row}?.dataset.done === 'false'"));
        assert!(waiting.contains("läuft"), "{waiting}");
        // Something typed meanwhile stays: the panel refreshes, not the page.
        browser.script("document.getElementById('binding-name').value = 'typed'");
        // Another node's scheduler (here: the test's) runs the task.
        runtime_handle.block_on(scheduler.run_until_idle()).unwrap();
        let (_, tasks) = http(port, "GET", "/v1/plugin-tasks", Some(key), None);
        let task = tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == "eng")
            .unwrap()
            .clone();
        assert_eq!(
            (task["kind"].as_str(), task["done"].as_bool(), task["error"].clone()),
            (Some("rescore"), Some(true), Value::Null),
            "{task}"
        );
        let total = task["total"].as_i64().unwrap();
        assert_eq!(total, 4, "four contacts re-scored: {task}");
        let done = browser.wait_until(&format!("{task_row}?.dataset.done === 'true'"));
        assert!(
            done.contains(&format!("{total}/{total}")) && done.contains("fertig"),
            "{done}"
        );
        assert_eq!(
            browser.script("return document.getElementById('binding-name').value"),
            "typed"
        );
        browser.script("document.getElementById('tasks-panel').scrollIntoView()");
        browser.screenshot(&format!("binding-task-done-{dialect}"));

        // A binding created through the form follows live; the edit form
        // pins it to 1.0.0.
        browser.script("newBinding()");
        fill("tagged", "version-tag", "");
        browser.wait_for_text("Bindung tagged angelegt.");
        assert_eq!(
            listed_binding(port, key, "tagged")["runs"],
            "version-tag@2.0.0"
        );
        browser.script("document.querySelector('[data-binding=\"tagged\"] button.edit').click()");
        let editing = browser.wait_until(
            "document.getElementById('binding-name').readOnly && document.getElementById('binding-name').value === 'tagged'",
        );
        assert!(editing.contains("Bindung tagged bearbeiten"), "{editing}");
        // A limit line that is not key=value is caught before sending.
        browser.script("document.getElementById('binding-limits').value = 'fuel 5000000'; document.getElementById('binding-save').click()");
        let caught = browser.wait_until(
            "document.getElementById('binding-result').innerText.includes('key=value')",
        );
        assert!(caught.contains("Limits, Zeile 1"), "{caught}");
        browser.script("document.getElementById('binding-version').value = '1.0.0'; document.getElementById('binding-limits').value = 'fuel=5000000'; document.getElementById('binding-save').click()");
        let pinned = browser.wait_until(
            "document.querySelector('[data-binding=\"tagged\"] .runs')?.innerText === 'version-tag@1.0.0' && document.querySelector('[data-binding=\"tagged\"] .pin').innerText === '1.0.0'",
        );
        assert!(pinned.contains("Limits: fuel=5000000"), "{pinned}");
        let tagged = listed_binding(port, key, "tagged");
        assert_eq!(
            (tagged["version"].as_str(), tagged["runs"].as_str(), tagged["limits"]["fuel"].as_u64()),
            (Some("1.0.0"), Some("version-tag@1.0.0"), Some(5_000_000)),
            "{dialect}: {tagged}"
        );

        // The breaker's pause, shown with its reason; Resume resets it.
        let paused = browser.wait_until(
            "document.querySelector('[data-binding=\"flaky\"] .tag.paused')",
        );
        assert!(
            paused.contains("pausiert (Breaker)") && paused.contains("10 of 20 calls of flaky-scorer@2.0.0"),
            "{paused}"
        );
        assert!(paused.contains("binding.paused"), "the log shows the pause:\n{paused}");
        browser.script("document.getElementById('bindings').scrollIntoView()");
        // Long reasons and log details wrap: nothing runs off the page.
        assert_eq!(
            browser.script("return document.documentElement.scrollWidth <= document.documentElement.clientWidth"),
            Value::Bool(true),
            "the plugins page fits the window"
        );
        browser.screenshot(&format!("binding-paused-{dialect}"));
        browser.script("document.querySelector('[data-binding=\"flaky\"] button.resume').click()");
        let resumed = browser.wait_until(
            "document.querySelector('[data-binding=\"flaky\"]') && !document.querySelector('[data-binding=\"flaky\"] .tag.paused')",
        );
        assert!(resumed.contains("Fortgesetzt."), "{resumed}");
        assert_eq!(listed_binding(port, key, "flaky")["paused"], Value::Null);

        // Delete asks first (the click runs after the script returns, so
        // the dialog does not block it); accepted, the binding is gone.
        browser.script("setTimeout(() => document.querySelector('[data-binding=\"eng\"] button.delete').click(), 0)");
        let started = Instant::now();
        let question = loop {
            let (status, answer) = http(
                browser.port,
                "GET",
                &format!("/session/{}/alert/text", browser.session),
                None,
                None,
            );
            if status == 200 {
                break answer["value"].as_str().unwrap_or_default().to_owned();
            }
            assert!(started.elapsed() < Duration::from_secs(15), "no question asked: {answer}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(question, "Bindung eng löschen?");
        browser.call("POST", "/alert/accept", Value::Null);
        let deleted = browser.wait_until(
            "document.getElementById('bindings') && !document.querySelector('[data-binding=\"eng\"]')",
        );
        assert!(deleted.contains("Bindung eng gelöscht."), "{deleted}");
        let (_, bindings) = http(port, "GET", "/v1/bindings", Some(key), None);
        assert!(
            bindings["bindings"].as_array().unwrap().iter().all(|b| b["name"] != "eng"),
            "{bindings}"
        );

        // The same page in English.
        browser.go(&format!("{base}/dashboard?lang=en#/plugins"));
        let english = browser.wait_for_text("Upload a plugin");
        for expected in ["Create a binding", "Tasks", "follows live", "Activate", "Roll back to"] {
            assert!(english.contains(expected), "`{expected}` in English:\n{english}");
        }
        browser.screenshot(&format!("plugins-deploy-en-{dialect}"));
    })
    .await
    .unwrap();
    server.abort();
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    the_dashboard_deploys_plugins_and_bindings
);

/// The operator checks a change before it goes live, from the dashboard:
/// starts a shadow of version-tag 2.0.0 beside the live 1.0.0 with the
/// button, sees its agreement and disagreements (each linking to the
/// contact's profile) after live traffic, starts a backtest and reads its
/// histograms, stage, outcome and consequence tables, then promotes the
/// shadow with the button. Every step is checked through the API too.
async fn the_dashboard_shows_backtests_and_shadows(dialect: &'static str) {
    let (url, temp) = nachfass_tests::database(dialect).await;
    let store = nachfass::store::Store::connect(&url).await.unwrap();
    let pipeline = nachfass_tests::world::pipeline(
        store.clone(),
        Arc::new(Registry::new(runtime())),
        Arc::new(SystemClock),
    );
    let (_, key) = store
        .create_api_key("dashboard", &[Scope::Admin], 0)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let journeys = Journeys::new(pipeline, Policy::default());
    let scheduler = Scheduler::new(journeys.clone(), SchedulerConfig::default());
    let state = AppState::with_journeys(journeys, None);
    let server = tokio::spawn(async move { axum::serve(listener, app(state)).await });
    let base = format!("http://127.0.0.1:{port}");
    let runtime_handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let key = key.as_str();
        for (bytes, query) in [(version_tag(1), ""), (version_tag(2), "?activate=false")] {
            let path = format!("/v1/plugins{query}");
            let (status, answer) =
                http_bytes(port, "POST", &path, Some(key), "application/wasm", &bytes);
            assert_eq!(status, 201, "{answer}");
        }
        let post = |path: &str, body: Value| {
            let (status, answer) = http(port, "POST", path, Some(key), Some(&body.to_string()));
            assert!((200..300).contains(&status), "{path}: {status} {answer}");
            answer
        };
        post(
            "/v1/bindings",
            json!({ "name": "tag", "kind": "scorer", "plugin": "version-tag" }),
        );
        runtime_handle.block_on(scheduler.run_until_idle()).unwrap();

        let browser = Browser::start();
        browser.go(&format!("{base}/dashboard?lang=de#key={key}"));
        browser.wait_for_text("Ereignisse pro Tag");
        browser.go(&format!("{base}/dashboard#/changes"));
        browser.wait_until("document.getElementById('shadow-start-0')");
        browser.script("document.getElementById('shadow-version-0').value = '2.0.0'; document.getElementById('shadow-start-0').click()");
        browser.wait_for_text("Läuft im Schatten.");
        let (status, report) = http(port, "GET", "/v1/bindings/tag/shadow", Some(key), None);
        assert_eq!(status, 200, "{report}");
        assert_eq!(
            (&report["shadow"]["version"], &report["shadow"]["status"]),
            (&json!("2.0.0"), &json!("active")),
            "{dialect}: {report}"
        );

        // Live traffic: each visit scores +1 live, +2 in the shadow.
        let mut contact = String::new();
        for email in ["a@check.example", "b@check.example", "a@check.example"] {
            let ingested = post(
                "/v1/events",
                json!({ "kind": "page.visited", "email": email }),
            );
            contact = ingested["event"]["contact_id"].as_str().unwrap().to_owned();
        }
        browser.go(&format!("{base}/dashboard#/overview"));
        browser.go(&format!("{base}/dashboard#/changes"));
        let page = browser.wait_until("document.querySelector('[data-shadow=\"tag\"] .calls')?.innerText === '3'");
        let (_, report) = http(port, "GET", "/v1/bindings/tag/shadow", Some(key), None);
        assert_eq!(report["calls"], json!(3), "{report}");
        assert!(page.contains("Übereinstimmung 0.0 %"), "{page}");
        assert!(page.contains("Live schalten"), "{page}");
        let link = format!("a[href=\"#/contacts/{contact}\"]");
        browser.wait_until(&format!("document.querySelector('[data-shadow=\"tag\"] {link}')"));

        // A backtest from the page, run by the scheduler, read on the page.
        browser.script("document.getElementById('backtest-version-0').value = '2.0.0'; document.getElementById('backtest-start-0').click()");
        browser.wait_for_text("Backtest läuft");
        runtime_handle.block_on(scheduler.run_until_idle()).unwrap();
        let (_, listed) = http(port, "GET", "/v1/plugins/version-tag/backtests", Some(key), None);
        let report = listed["backtests"][0]["report"].clone();
        assert_eq!(report["scores"]["changed"], json!(2), "{dialect}: {listed}");
        browser.go(&format!("{base}/dashboard#/overview"));
        browser.go(&format!("{base}/dashboard#/changes"));
        let page = browser.wait_until("document.querySelector('[data-backtest=\"version-tag\"] .changed')?.innerText === '2'");
        for wanted in ["Scores am Ende", "Stufen", "Ergebnisse", "Folgen (Richtlinien geprüft, nichts versandt)"] {
            assert!(page.contains(wanted), "{wanted}: {page}");
        }
        assert_eq!(
            browser.script("return document.querySelectorAll('[data-backtest=\"version-tag\"] svg.chart').length"),
            json!(2)
        );
        browser.wait_until(&format!("document.querySelector('[data-backtest=\"version-tag\"] {link}')"));
        browser.screenshot(&format!("changes-{dialect}"));

        // The sample links to the contact's profile.
        browser.script(&format!("document.querySelector('[data-shadow=\"tag\"] {link}').click()"));
        browser.wait_until(&format!("location.hash === '#/contacts/{contact}'"));
        browser.wait_for_text("a@check.example");

        // Promote the shadow: 2.0.0 is live, the shadow is over.
        browser.go(&format!("{base}/dashboard#/changes"));
        browser.wait_until("document.getElementById('shadow-promote-0')");
        browser.script("document.getElementById('shadow-promote-0').click()");
        browser.wait_for_text("version-tag@2.0.0 ist live.");
        assert_eq!(listed_plugin(port, key, "version-tag")["live"], json!("2.0.0"));
        let (_, report) = http(port, "GET", "/v1/bindings/tag/shadow", Some(key), None);
        assert_eq!(report["shadow"]["status"], json!("promoted"), "{report}");
        browser.screenshot(&format!("changes-promoted-{dialect}"));
    })
    .await
    .unwrap();
    server.abort();
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    the_dashboard_shows_backtests_and_shadows
);

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
    // Variants go by a hash of the (random) contact id, so the first few
    // sends may all get one; the page refreshes while the demo sends more.
    browser.wait_up_to(
        Duration::from_secs(90),
        "document.querySelector('#ab') && ['personal', 'first-step'].every((v) => document.querySelector('#ab').innerText.includes(v))",
    );
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
    // The navigation turns German at once, the page when it is redrawn:
    // wait for the page itself.
    browser.wait_until("document.querySelector('#page h1')?.innerText.startsWith('Postfach')");
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
