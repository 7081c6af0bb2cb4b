//! Public endpoints recipients and providers reach without an API key:
//! open pixel `/t/o/{token}`, click redirect `/t/c/{token}`, unsubscribe
//! page and RFC 8058 one-click `/u/{token}`, and provider callbacks
//! `/v1/callbacks/{binding}` (authenticated by the connector, e.g. a
//! signature it checks).

use axum::Json;
use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::ApiBytes;
use super::{ApiError, AppState};
use crate::feedback::CallbackError;
use crate::model::{Callback, Value as FieldValue};
use crate::store::OutboxEntry;
use crate::tracking::{LINKS, TokenKind};

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn refused() -> ApiError {
    ApiError::NotFound("this link is not valid: it may have been altered or cut short".into())
}

/// The message a genuine token of the wanted kind names.
async fn message_of(
    state: &AppState,
    token: &str,
    wanted: fn(TokenKind) -> bool,
) -> Result<(TokenKind, OutboxEntry), ApiError> {
    let tracking = state.journeys.tracking();
    let (kind, outbox_id) = tracking
        .verify(token)
        .filter(|(k, _)| wanted(*k))
        .ok_or_else(refused)?;
    let entry = state
        .pipeline
        .store
        .outbox_entry(&outbox_id)
        .await?
        .ok_or_else(refused)?;
    Ok((kind, entry))
}

/// Records what the recipient did; see [`crate::feedback::record`].
async fn record(
    state: &AppState,
    entry: &OutboxEntry,
    what: &str,
    extra: &[(&str, &str)],
) -> Result<(), ApiError> {
    Ok(crate::feedback::record(&state.pipeline, entry, what, extra).await?)
}

#[utoipa::path(get, path = "/t/o/{token}", tag = "tracking",
    summary = "Open pixel of a message (signed token)",
    params(("token" = String, Path, description = "The signed token from the message")),
    responses(
        (status = 200, description = "A transparent 1×1 GIF; the open is recorded", content_type = "image/gif", body = Vec<u8>),
        (status = 404, description = "Not a genuine open token", body = ErrorBody),
    ))]
pub async fn open(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let (_, entry) = message_of(&state, &token, |k| k == TokenKind::Open).await?;
    record(&state, &entry, "opened", &[]).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PIXEL,
    )
        .into_response())
}

/// Redirects to the link of the message the token names; a URL from the
/// request is never followed, so this is no open redirect.
#[utoipa::path(get, path = "/t/c/{token}", tag = "tracking",
    summary = "Click redirect to a link of the message (signed token; no open redirect)",
    params(("token" = String, Path, description = "The signed token from the message")),
    responses(
        (status = 302, description = "To the link; the click is recorded", headers(("location" = String))),
        (status = 404, description = "Not a genuine click token", body = ErrorBody),
    ))]
pub async fn click(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let (kind, entry) = message_of(&state, &token, |k| matches!(k, TokenKind::Click(_))).await?;
    let TokenKind::Click(index) = kind else {
        return Err(refused());
    };
    let message: crate::model::Message = serde_json::from_str(&entry.message)
        .map_err(|e| ApiError::Internal(format!("outbox {}: {e}", entry.id)))?;
    let url = match message.metadata.get(LINKS) {
        Some(FieldValue::Texts(links)) => links.get(index as usize).cloned(),
        _ => None,
    }
    .ok_or_else(refused)?;
    record(&state, &entry, "clicked", &[("url", &url)]).await?;
    Ok((StatusCode::FOUND, [(header::LOCATION, url)]).into_response())
}

/// The unsubscribe page: GET asks, POST (the page's button, or a mail
/// client's RFC 8058 one-click) unsubscribes.
#[utoipa::path(method(get, post), path = "/u/{token}", tag = "tracking",
    summary = "Unsubscribe page (GET); unsubscribe (POST: the page's button or RFC 8058 one-click)",
    params(("token" = String, Path, description = "The signed token from the message")),
    responses(
        (status = 200, description = "The page asking (GET), or saying it is done (POST)", content_type = "text/html", body = String),
        (status = 404, description = "Not a genuine unsubscribe token", body = ErrorBody),
    ))]
pub async fn unsubscribe(
    State(state): State<AppState>,
    method: Method,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let (_, entry) = message_of(&state, &token, |k| k == TokenKind::Unsubscribe).await?;
    if method == Method::GET {
        let page = format!(
            "<!doctype html><html lang=\"de\"><meta charset=\"utf-8\"><title>Abmelden</title>\
             <body><h1>Keine weiteren Nachrichten?</h1>\
             <form method=\"post\" action=\"/u/{token}\"><button type=\"submit\">Abmelden</button></form></body></html>"
        );
        return Ok(Html(page).into_response());
    }
    // Suppressed at once, before any queued message goes out; the event
    // then ends the contact's marketing journeys.
    let detail = json!({ "message": entry.idempotency_key, "channel": entry.channel });
    crate::privacy::unsubscribe(&state.pipeline, &entry.contact_id, "recipient", &detail).await?;
    record(&state, &entry, "unsubscribed", &[]).await?;
    Ok(Html(
        "<!doctype html><html lang=\"de\"><meta charset=\"utf-8\"><title>Abgemeldet</title>\
         <body><h1>Sie sind abgemeldet.</h1><p>Sie erhalten keine Werbung mehr von uns.</p></body></html>",
    )
    .into_response())
}

/// The one answer to a callback that is not accepted, whatever the
/// reason (unknown binding, connector not loaded, bad signature): the
/// caller cannot tell binding names from wrong signatures. The reason
/// goes to the log.
fn callback_refused(binding: &str, reason: &str) -> ApiError {
    tracing::warn!(%binding, %reason, "callback refused");
    ApiError::invalid(
        "the callback was refused: the binding does not accept it (check the URL, the signature and the body)",
    )
}

/// What a callback changed.
#[derive(Serialize, ToSchema)]
pub struct CallbackReport {
    /// Reports about messages this server sent, recorded.
    pub accepted: u64,
    /// Reports naming no message this server knows, ignored.
    pub unknown: u64,
}

/// A provider's delivery report, parsed by the binding's connector.
#[utoipa::path(post, path = "/v1/callbacks/{binding}", tag = "tracking",
    summary = "A provider's delivery report, parsed and verified by the binding's connector",
    params(("binding" = String, Path, description = "The channel binding the provider reports to")),
    request_body(content = String, content_type = "application/octet-stream", description = "The report as the provider sends it; the connector checks it (a signature) and parses it"),
    responses(
        (status = 200, description = "Recorded", body = CallbackReport),
        (status = 422, description = "Refused: no such binding, its plugin not loaded, or the connector declined it (one answer for all, so binding names cannot be probed)", body = ErrorBody),
    ))]
pub async fn callback(
    State(state): State<AppState>,
    Path(binding): Path<String>,
    method: Method,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<Json<CallbackReport>, ApiError> {
    let callback = Callback {
        method: method.to_string(),
        path: format!("/v1/callbacks/{binding}"),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: body.to_vec(),
    };
    let outcome = match crate::feedback::callback(&state.pipeline, &binding, &callback).await {
        Ok(outcome) => outcome,
        Err(CallbackError::Refused(reason)) => return Err(callback_refused(&binding, &reason)),
        Err(CallbackError::Plugin(failed)) => return Err(ApiError::Internal(failed)),
        Err(CallbackError::Store(e)) => return Err(e.into()),
    };
    Ok(Json(CallbackReport {
        accepted: outcome.accepted,
        unknown: outcome.unknown,
    }))
}

/// The double opt-in confirmation link: GET shows a page and changes
/// nothing (mail filters fetch links to scan them); its button POSTs,
/// and only that confirms.
#[utoipa::path(get, path = "/c/{token}", tag = "tracking",
    summary = "The double opt-in confirmation page (signed token); changes nothing",
    params(("token" = String, Path, description = "The signed token from the confirmation message")),
    responses(
        (status = 200, description = "The page with the button, or confirmed already", content_type = "text/html", body = String),
        (status = 404, description = "Not a genuine confirmation token", body = ErrorBody),
        (status = 410, description = "The request expired", content_type = "text/html", body = String),
    ))]
pub async fn confirm_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    use crate::consent::ConfirmationState;
    let shown = crate::consent::confirmation_state(&state.journeys, &token)
        .await?
        .ok_or_else(refused)?;
    Ok(match shown {
        ConfirmationState::Waiting => {
            let body = format!(
                "<h1>Anmeldung bestätigen</h1><p>Möchten Sie Nachrichten von uns erhalten?</p>\
                 <form method=\"post\" action=\"/c/{}\"><button type=\"submit\">Ja, Anmeldung bestätigen</button></form>",
                html_escape(&token)
            );
            page(StatusCode::OK, &body)
        }
        ConfirmationState::Confirmed => page(StatusCode::OK, CONFIRMED),
        ConfirmationState::Expired => page(StatusCode::GONE, EXPIRED),
    })
}

const CONFIRMED: &str = "<h1>Danke! Ihre Anmeldung ist bestätigt.</h1>";
const EXPIRED: &str = "<h1>Dieser Link ist abgelaufen. Bitte melden Sie sich erneut an.</h1>";

fn page(status: StatusCode, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"de\"><meta charset=\"utf-8\"><title>Anmeldung</title><body>{body}</body></html>"
    );
    (status, Html(page)).into_response()
}

/// Tokens are URL-safe (letters, digits, `.`, `_`), but the page must not
/// trust that of a path it echoes.
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The confirmation page's button: confirms the consent, with the client
/// address (see [`super::client::client_ip`]) and user agent as proof.
#[utoipa::path(post, path = "/c/{token}", tag = "tracking",
    summary = "Confirm a double opt-in request: the page's button",
    params(("token" = String, Path, description = "The signed token from the confirmation message")),
    responses(
        (status = 200, description = "Confirmed", content_type = "text/html", body = String),
        (status = 404, description = "Not a genuine confirmation token", body = ErrorBody),
        (status = 410, description = "The request expired", content_type = "text/html", body = String),
    ))]
pub async fn confirm(
    State(state): State<AppState>,
    Path(token): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ip = super::client::client_ip(
        peer.map(|Extension(ConnectInfo(addr))| addr.ip()),
        &headers,
        &state.trusted_proxies,
    )
    .map(|ip| ip.to_string());
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let outcome = crate::consent::confirm(&state.journeys, &token, ip.as_deref(), agent.as_deref())
        .await?
        .ok_or_else(refused)?;
    Ok(match outcome {
        crate::consent::Confirmation::Confirmed { .. }
        | crate::consent::Confirmation::AlreadyConfirmed => page(StatusCode::OK, CONFIRMED),
        crate::consent::Confirmation::Expired => page(StatusCode::GONE, EXPIRED),
    })
}
