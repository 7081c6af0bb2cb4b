//! The OpenAPI document at `/v1/openapi.json`, generated from one table of
//! operations that the tests check against the router.

use axum::Json;
use serde_json::{Map, Value, json};

/// One documented operation.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub scope: &'static str,
    pub summary: &'static str,
    pub body: Option<&'static str>,
}

pub const OPERATIONS: &[Operation] = &[
    Operation {
        method: "post",
        path: "/v1/contacts",
        scope: "write",
        summary: "Create a contact, or update the one with the same email or external_id",
        body: Some("ContactInput"),
    },
    Operation {
        method: "get",
        path: "/v1/contacts/{id}",
        scope: "read",
        summary: "One contact",
        body: None,
    },
    Operation {
        method: "patch",
        path: "/v1/contacts/{id}",
        scope: "write",
        summary: "Change a contact: given fields replace (email too), attributes merge",
        body: Some("ContactInput"),
    },
    Operation {
        method: "delete",
        path: "/v1/contacts/{id}",
        scope: "write",
        summary: "Delete a contact and its events",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/contacts/{id}/timeline",
        scope: "read",
        summary: "The contact's touchpoints, newest first (?limit, ?before)",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/events",
        scope: "ingest",
        summary: "Ingest one event, or {\"events\": [...]} (up to 1,000, per-item results)",
        body: Some("EventInput"),
    },
    Operation {
        method: "get",
        path: "/v1/plugins",
        scope: "read",
        summary: "Installed plugins: versions (each with its sha256), the live and the previous one",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/plugins",
        scope: "admin",
        summary: "Upload a component built by `nachfass plugin build` (?activate=false to keep it for later)",
        body: Some("Component"),
    },
    Operation {
        method: "post",
        path: "/v1/plugins/pull",
        scope: "admin",
        summary: "Install a plugin from an allowed OCI registry ({reference, activate}); checked like an upload",
        body: Some("Pull"),
    },
    Operation {
        method: "post",
        path: "/v1/plugins/{name}/activate",
        scope: "admin",
        summary: "Make an installed version live (409 needs_approval when it asks for capabilities the live one lacks)",
        body: Some("Activate"),
    },
    Operation {
        method: "post",
        path: "/v1/plugins/{name}/versions/{version}/approve",
        scope: "admin",
        summary: "Approve exactly what a version asks for beyond the live one (its review's needs_approval) and make it live",
        body: Some("CapabilityDiff"),
    },
    Operation {
        method: "post",
        path: "/v1/plugins/{name}/rollback",
        scope: "admin",
        summary: "Return to the version live before the last activation",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/trusted-keys",
        scope: "admin",
        summary: "Publisher keys whose signed plugin bundles are accepted, and the signature policy",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/trusted-keys",
        scope: "admin",
        summary: "Trust a publisher's key ({public_key: \"ed25519:…\", publisher}); audited",
        body: Some("TrustedKey"),
    },
    Operation {
        method: "delete",
        path: "/v1/trusted-keys/{key}",
        scope: "admin",
        summary: "Stop trusting a key (installed versions stay); audited",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/bindings",
        scope: "read",
        summary: "Scorer and segment bindings",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/bindings",
        scope: "admin",
        summary: "Bind a plugin as a scorer or a segment (a segment is rebuilt, a scorer re-scores every contact, as a durable task)",
        body: Some("Binding"),
    },
    Operation {
        method: "put",
        path: "/v1/bindings/{name}",
        scope: "admin",
        summary: "Change a binding (plugin, version pin, configuration, limits); its segment is rebuilt or its scorer re-scores every contact",
        body: Some("Binding"),
    },
    Operation {
        method: "delete",
        path: "/v1/bindings/{name}",
        scope: "admin",
        summary: "Remove a binding",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/bindings/{name}/resume",
        scope: "admin",
        summary: "Resume a binding the circuit breaker paused",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/plugins/{name}/backtests",
        scope: "admin",
        summary: "Backtest an installed version of a scorer or segment-rule plugin against the stored history beside the live one (202; a durable job, nothing live changes)",
        body: Some("Backtest"),
    },
    Operation {
        method: "get",
        path: "/v1/plugins/{name}/backtests",
        scope: "read",
        summary: "The plugin's backtests, newest first, with progress and reports",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/backtests/{id}",
        scope: "read",
        summary: "One backtest: progress, and the report (score histogram, changed scores, MQL/SQL earlier/later/never, segment entered/left, outcomes) when done",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/contacts/{id}/replay",
        scope: "read",
        summary: "Replay the contact's events through a scorer binding (?binding=NAME&version=V): each step with delta, reasons, score and stage, beside the stored history",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/plugin-tasks",
        scope: "read",
        summary: "Segment rebuilds and re-scores that plugin and binding changes queued, newest first, with progress",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/plugin-tasks/{id}",
        scope: "read",
        summary: "One rebuild or re-score with its progress",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/plugin-audit",
        scope: "read",
        summary: "Uploads, activations, rollbacks and breaker events from the audit log",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/segments/{name}",
        scope: "read",
        summary: "Segment size and rebuild progress",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/segments/{name}/members",
        scope: "read",
        summary: "Member contact ids (?after, ?limit)",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/openapi.json",
        scope: "none",
        summary: "This document",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/journeys",
        scope: "read",
        summary: "Journeys: latest version, trigger and runs by status",
        body: None,
    },
    Operation {
        method: "put",
        path: "/v1/journeys/{name}",
        scope: "admin",
        summary: "Save a journey definition as its next version (validated; 201 new, 200 unchanged)",
        body: Some("Journey"),
    },
    Operation {
        method: "get",
        path: "/v1/journeys/{name}",
        scope: "read",
        summary: "A journey: latest definition, versions, runs by status",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/journeys/{name}/versions/{version}",
        scope: "read",
        summary: "One saved version of a journey",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/journeys/{name}/stop",
        scope: "admin",
        summary: "Take no new entries; running runs go on",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/journeys/{name}/start",
        scope: "admin",
        summary: "Take new entries again",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/journeys/{name}/enroll",
        scope: "write",
        summary: "Enrol a contact by hand (re-entry policy applies)",
        body: Some("Enroll"),
    },
    Operation {
        method: "get",
        path: "/v1/journey-templates",
        scope: "read",
        summary: "Ready-made journeys to install and adapt",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/journey-templates/{template}/install",
        scope: "admin",
        summary: "Install a ready-made journey, sending through a channel binding",
        body: Some("Install"),
    },
    Operation {
        method: "get",
        path: "/v1/contacts/{id}/journeys",
        scope: "read",
        summary: "The contact's journey runs, newest first",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/contacts/{id}/messages",
        scope: "read",
        summary: "The contact's queued and sent messages, newest first",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/contacts/{id}/consents",
        scope: "read",
        summary: "The contact's consents and suppressions",
        body: None,
    },
    Operation {
        method: "put",
        path: "/v1/contacts/{id}/consents",
        scope: "write",
        summary: "Record a consent or its withdrawal, with source and proof",
        body: Some("Consent"),
    },
    Operation {
        method: "get",
        path: "/v1/scheduler",
        scope: "read",
        summary: "Jobs due, scheduled, leased and failed, and the lag of the oldest due job",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/contacts/{id}/export",
        scope: "admin",
        summary: "Everything stored about the contact, as one JSON document (access request; audited)",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/contacts/{id}/erase",
        scope: "admin",
        summary: "Erase the contact: personal data and events deleted, a salted hash of each address kept (audited)",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/contacts/{id}/object",
        scope: "write",
        summary: "The contact objects to marketing: suppressed, marketing journeys ended (audited)",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/contacts/{id}/audit",
        scope: "admin",
        summary: "The audit log of the contact's data-protection actions",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/journeys/{name}/validate",
        scope: "read",
        summary: "Check a definition without saving it: {\"valid\", \"problems\"} (every problem a save would report)",
        body: Some("Journey"),
    },
    Operation {
        method: "get",
        path: "/v1/demo/mailbox",
        scope: "read",
        summary: "The demo mailbox (only while `nachfass demo` serves): delivered messages as recipients see them, and deferred sends with why and until when",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/demo/mailbox",
        scope: "none",
        summary: "A delivery from the demo-mailbox channel plugin (Bearer: the binding's token)",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/callbacks/{binding}",
        scope: "none",
        summary: "A provider's delivery report, parsed and verified by the binding's connector",
        body: None,
    },
    Operation {
        method: "get",
        path: "/t/o/{token}",
        scope: "none",
        summary: "Open pixel of a message (signed token)",
        body: None,
    },
    Operation {
        method: "get",
        path: "/t/c/{token}",
        scope: "none",
        summary: "Click redirect to a link of the message (signed token; no open redirect)",
        body: None,
    },
    Operation {
        method: "get",
        path: "/u/{token}",
        scope: "none",
        summary: "Unsubscribe page",
        body: None,
    },
    Operation {
        method: "post",
        path: "/u/{token}",
        scope: "none",
        summary: "Unsubscribe (the page's button or RFC 8058 one-click)",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/contacts/{id}/consents/request",
        scope: "write",
        summary: "Double opt-in: pending consent and a confirmation message with a signed link (reminder after a day, expiry after a week)",
        body: Some("ConsentRequest"),
    },
    Operation {
        method: "get",
        path: "/c/{token}",
        scope: "none",
        summary: "The double opt-in confirmation page (signed token); changes nothing",
        body: None,
    },
    Operation {
        method: "post",
        path: "/c/{token}",
        scope: "none",
        summary: "Confirm a double opt-in request: the page's button",
        body: None,
    },
    Operation {
        method: "get",
        path: "/healthz",
        scope: "none",
        summary: "Liveness: the process answers",
        body: None,
    },
    Operation {
        method: "get",
        path: "/readyz",
        scope: "none",
        summary: "Readiness: database reachable, migrations applied, every bound plugin loaded (503 with the problems otherwise)",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/journeys/{name}/preview",
        scope: "read",
        summary: "Render a send step (and variant) for one contact, as it would go out",
        body: Some("Preview"),
    },
    Operation {
        method: "get",
        path: "/v1/journeys/{name}/kpis",
        scope: "read",
        summary: "KPIs per step, variant and channel (?from, ?to in Unix ms), A/B results and promotions",
        body: None,
    },
    Operation {
        method: "post",
        path: "/v1/journeys/{name}/ab/promote",
        scope: "admin",
        summary: "Promote significant winners of auto-promoting A/B tests (new version)",
        body: None,
    },
    Operation {
        method: "get",
        path: "/metrics",
        scope: "read",
        summary: "Prometheus metrics (text format)",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/stats/overview",
        scope: "read",
        summary: "Dashboard overview: contacts, events per day (30 days), active journeys, sends, open and click rate",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/stats/segments",
        scope: "read",
        summary: "Segments with members and size per day (30 days)",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/stats/plugins",
        scope: "read",
        summary: "Calls, errors, traps and mean latency per plugin version",
        body: None,
    },
    Operation {
        method: "get",
        path: "/v1/contacts/{id}/scores",
        scope: "read",
        summary: "The contact's score history with reasons, newest first",
        body: None,
    },
    Operation {
        method: "get",
        path: "/dashboard",
        scope: "none",
        summary: "The operator dashboard (log in with an API key)",
        body: None,
    },
];

/// The scope an operation needs, if it needs a key.
pub fn scope_of(method: &str, path: &str) -> Option<crate::store::Scope> {
    use crate::store::Scope;
    let op = OPERATIONS
        .iter()
        .find(|op| op.path == path && op.method.eq_ignore_ascii_case(method))?;
    match op.scope {
        "admin" => Some(Scope::Admin),
        "write" => Some(Scope::Write),
        "read" => Some(Scope::Read),
        "ingest" => Some(Scope::Ingest),
        _ => None,
    }
}

/// The query parameters an operation reads.
fn query_parameters(method: &str, path: &str) -> Vec<Value> {
    let text = json!({ "type": "string" });
    let integer = json!({ "type": "integer", "format": "int64" });
    let count = json!({ "type": "integer", "minimum": 0, "maximum": 4_294_967_295_u64 });
    let boolean = json!({ "type": "boolean" });
    let params: Vec<(&str, &Value)> = match (method, path) {
        ("get", "/v1/contacts") => vec![
            ("stage", &text),
            ("segment", &text),
            ("min_score", &integer),
            ("q", &text),
            ("after", &text),
            ("limit", &count),
        ],
        ("get", "/v1/contacts/{id}/timeline") => vec![("limit", &count), ("before", &integer)],
        ("get", "/v1/segments/{name}/members") => vec![("after", &text), ("limit", &count)],
        ("get", "/v1/journeys/{name}/kpis") => vec![("from", &integer), ("to", &integer)],
        ("post", "/v1/plugins") => vec![("activate", &boolean)],
        ("get", "/v1/contacts/{id}/replay") => vec![("binding", &text), ("version", &text)],
        _ => Vec::new(),
    };
    params
        .into_iter()
        .map(|(name, schema)| json!({ "name": name, "in": "query", "required": false, "schema": schema }))
        .collect()
}

fn schemas() -> Value {
    let text = json!({ "type": "string" });
    let email = json!({ "type": "string", "format": "email" });
    let fields = json!({ "type": "object", "additionalProperties": {
        "description": "null, boolean, number, string, list of strings, or {\"timestamp\": ms}" } });
    json!({
        "ContactInput": { "type": "object", "additionalProperties": false, "properties": {
            "email": email, "external_id": text, "phone": text,
            "timezone": { "type": "string", "description": "An IANA time zone, e.g. Europe/Berlin" },
            "attributes": fields } },
        "EventInput": { "type": "object", "additionalProperties": false, "required": ["kind"],
            "anyOf": [ { "required": ["contact_id"] }, { "required": ["email"] }, { "required": ["external_id"] } ],
            "properties": {
            "kind": { "type": "string", "pattern": "^[a-z][a-z0-9._-]{0,63}$" }, "at": { "type": "integer", "minimum": i64::MIN, "maximum": i64::MAX,
                "description": "Unix epoch ms, from 2000-01-01 (configurable) to a day ahead of the server's clock" }, "properties": fields,
            "client_event_id": text, "contact_id": text, "email": email, "external_id": text } },
        "Activate": { "type": "object", "additionalProperties": false, "required": ["version"], "properties": { "version": text } },
        "Backtest": { "type": "object", "additionalProperties": false, "required": ["version"], "properties": {
            "version": { "type": "string", "description": "an installed version of the plugin (the candidate)" },
            "bindings": { "type": "array", "items": text, "description": "scorer bindings of the plugin; default all" },
            "from": { "type": "integer", "description": "Unix epoch ms, inclusive; default 90 days before to" },
            "to": { "type": "integer", "description": "Unix epoch ms, exclusive; default now" },
            "goal_events": { "type": "array", "items": text, "description": "default [\"purchase\", \"demo.booked\"]" },
            "window_days": { "type": "integer", "minimum": 1, "maximum": 365, "description": "days after MQL a goal counts; default 30" } } },
        "Binding": { "type": "object", "additionalProperties": false, "required": ["name", "kind", "plugin"], "properties": {
            "name": text, "kind": { "enum": ["scorer", "segment", "channel"] }, "plugin": text,
            "version": { "type": "string", "description": "pin: a version (1.2.0) or a range (^1.2); absent follows the live version" },
            "config": { "type": "object", "description": "only the keys the plugin's manifest declares", "additionalProperties": { "type": ["string", "number", "boolean"] } },
            "allow_http": { "type": "array", "items": text },
            "limits": { "type": "object", "additionalProperties": false, "properties": {
                "fuel": { "type": "integer", "description": "instructions per call (default 11000000 for rules and scorers)" },
                "wall_time_ms": { "type": "integer" }, "memory_bytes": { "type": "integer" }, "max_output_bytes": { "type": "integer" } } } } },
        "Journey": { "type": "object", "description": "A journey definition: name, description, purpose (marketing | transactional), trigger, re_entry, goals, send_window, steps; see the README", "required": ["name", "trigger", "steps"] },
        "Enroll": { "type": "object", "additionalProperties": false, "required": ["contact_id"], "properties": { "contact_id": text } },
        "ConsentRequest": { "type": "object", "additionalProperties": false, "required": ["channel", "binding"], "properties": {
            "channel": text, "purpose": { "enum": ["marketing", "transactional"] }, "binding": text,
            "source": text, "text_version": text, "ip": text, "user_agent": text } },
        "Preview": { "type": "object", "additionalProperties": false, "required": ["contact_id", "step"], "properties": {
            "contact_id": text, "step": text, "variant": text, "event_id": text } },
        "Install": { "type": "object", "additionalProperties": false, "required": ["binding"], "properties": { "binding": text, "name": text } },
        "Consent": { "type": "object", "additionalProperties": false, "required": ["channel", "status"], "properties": {
            "channel": text, "purpose": { "enum": ["marketing", "transactional"] }, "status": { "enum": ["granted", "pending", "withdrawn"] },
            "source": text, "text_version": text, "ip": text, "user_agent": text } },
        "Component": { "type": "string", "format": "binary" },
        "CapabilityDiff": { "type": "object", "additionalProperties": false, "properties": {
            "imports": { "type": "array", "items": text, "description": "imported interfaces, e.g. wasi:http/outgoing-handler@0.2" },
            "config": { "type": "array", "items": text, "description": "configuration keys" },
            "http_hosts": { "type": "array", "items": text, "description": "outgoing HTTP hosts; * for any host a binding allows" },
            "limits": { "type": "object", "additionalProperties": false, "properties": {
                "fuel": { "type": "integer", "minimum": 0 }, "wall_time_ms": { "type": "integer", "minimum": 0 },
                "memory_bytes": { "type": "integer", "minimum": 0 }, "max_output_bytes": { "type": "integer", "minimum": 0 } } } } },
        "Pull": { "type": "object", "additionalProperties": false, "required": ["reference"], "properties": {
            "reference": text, "activate": { "type": "boolean" } } },
        "TrustedKey": { "type": "object", "additionalProperties": false, "required": ["public_key", "publisher"], "properties": {
            "public_key": { "type": "string", "pattern": "^ed25519:[0-9a-f]{64}$" }, "publisher": text } },
        "Merge": { "type": "object", "additionalProperties": false, "required": ["from"], "properties": { "from": text } },
        "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": {
            "code": text, "message": text, "details": {} } } } },
    })
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for op in OPERATIONS {
        let mut operation = json!({
            "summary": op.summary,
            "responses": {
                "200": { "description": "OK" },
                "401": { "description": "No or unknown API key", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                "403": { "description": format!("The key lacks the `{}` scope", op.scope) },
                "422": { "description": "Invalid input; the message says what and where" },
            },
        });
        if op.scope != "none" {
            operation["security"] = json!([{ "apiKey": [op.scope] }]);
        }
        if let Some(body) = op.body {
            let media = if body == "Component" {
                // Any type is accepted; a generic one lets clients (and
                // API fuzzers) send the bytes as they are.
                "application/octet-stream"
            } else {
                "application/json"
            };
            operation["requestBody"] = json!({ "required": true, "content": { media: { "schema": { "$ref": format!("#/components/schemas/{body}") } } } });
        }
        let mut params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        params.extend(query_parameters(op.method, op.path));
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        let entry = paths.entry(op.path).or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "nachfass", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "apiKey": { "type": "http", "scheme": "bearer" } },
        },
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}

/// A browsable reference at `/api-docs`, built into the binary: one page
/// that renders this document in the browser, with no assets from
/// elsewhere, so it works offline.
pub async fn reference() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../../dashboard/api-docs.html"))
}
