//! Checks every request passes before a handler sees it, and the one JSON
//! error shape for answers that no handler wrote (unknown route, wrong
//! method, oversized URI or headers, bad path encoding, body too large).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::extract::Caller;
use super::{ApiError, AppState};
use crate::store::Scope;

/// Longest request target (path and query) answered; longer ones get 414.
pub const MAX_URI_BYTES: usize = 8 << 10;

/// Largest total size of request header names and values; more gets 431.
pub const MAX_HEADER_BYTES: usize = 32 << 10;

/// Most request headers; more gets 431.
pub const MAX_HEADERS: usize = 100;

/// Where in a JSON document the first NUL character (U+0000) is, in a
/// key or a string value: `events[3].email`, `attributes`. PostgreSQL
/// cannot store NUL in text, so both databases refuse it at the edge.
pub fn nul_path(value: &Value) -> Option<String> {
    fn walk(value: &Value, path: &mut String) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            Value::Object(map) => map.iter().any(|(key, item)| {
                if key.contains('\0') {
                    // The key itself: name the object holding it.
                    return true;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    walk(value, &mut path).then(|| {
        if path.is_empty() {
            "the body".to_owned()
        } else {
            format!("`{path}`")
        }
    })
}

/// The 422 for a NUL character at `place`.
pub fn nul_error(place: &str) -> ApiError {
    ApiError::invalid(format!(
        "{place} contains a NUL character (U+0000), which is not accepted in text; remove it"
    ))
}

/// Refuses NUL characters in path parameters and query parameters, naming
/// the parameter. Runs on matched routes only (it reads the route's
/// template to name the parameter).
pub async fn refuse_nul(request: Request, next: Next) -> Response {
    if let Some(place) = nul_in_target(&request) {
        return nul_error(&place).into_response();
    }
    next.run(request).await
}

fn nul_in_target(request: &Request) -> Option<String> {
    let uri = request.uri();
    if let Some(template) = request.extensions().get::<MatchedPath>() {
        let names = template.as_str().split('/');
        for (name, raw) in names.zip(uri.path().split('/')) {
            let decoded = percent_encoding::percent_decode_str(raw).collect::<Vec<u8>>();
            if decoded.contains(&0) {
                let name = name.trim_start_matches('{').trim_end_matches('}');
                return Some(format!("path parameter `{name}`"));
            }
        }
    }
    let query = uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, value)| key.contains('\0') || value.contains('\0'))
        .map(|(key, _)| format!("query parameter `{}`", key.replace('\0', "\\0")))
}

/// Checks the key and its scope before a body or query is read, for the routes whose
/// `#[utoipa::path]` names a scope (`security`, read back from the
/// generated document): a key without the scope gets 403
/// whatever it sent, not a 422 about its JSON. The checked key is handed
/// to the handler's [`Caller`] so it is looked up once.
pub async fn scope_first(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let needed = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| super::openapi::scope_of(request.method().as_str(), path.as_str()));
    // Every operation with a scope, with or without a body: a query string
    // is input too (a key without the scope gets 403, not a 422 about it).
    let Some(needed) = needed else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let caller = match Caller::from_request_parts(&mut parts, &state).await {
        Ok(caller) => caller,
        Err(refused) => return refused.into_response(),
    };
    let allowed = match needed {
        // Events come from sites (ingest) and from back ends (write).
        Scope::Ingest => caller.0.allows(Scope::Ingest) || caller.0.allows(Scope::Write),
        scope => caller.0.allows(scope),
    };
    if !allowed {
        return ApiError::Forbidden(needed.as_str()).into_response();
    }
    parts.extensions.insert(caller.0);
    next.run(Request::from_parts(parts, body)).await
}

/// Answers 414 and 431 in the JSON shape before routing, and rewrites
/// error answers no handler wrote (empty or plain text: unknown route,
/// wrong method, a path that does not decode, a body too large) into it.
/// HTML pages (unsubscribe, confirmation) also get security headers.
pub async fn error_shape(request: Request, next: Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return error_response(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request URI is longer than {MAX_URI_BYTES} bytes; shorten it"),
        );
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "send at most {MAX_HEADERS} request headers and {MAX_HEADER_BYTES} bytes of them"
            ),
        );
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let mut response = if response.status().as_u16() >= 400 && !is_json_or_html(&response) {
        reshape(response, &method, &path).await
    } else {
        response
    };
    if is_html(&response) {
        add_page_headers(response.headers_mut());
    }
    response
}

fn content_type(response: &Response) -> &str {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn is_html(response: &Response) -> bool {
    content_type(response).starts_with("text/html")
}

fn is_json_or_html(response: &Response) -> bool {
    let kind = content_type(response);
    kind.starts_with("application/json") || kind.starts_with("text/html")
}

/// Keeps the status and the text (as the message), in our JSON shape.
async fn reshape(response: Response, method: &axum::http::Method, path: &str) -> Response {
    let status = response.status();
    let allow = response.headers().get(header::ALLOW).cloned();
    // These bodies are short texts axum wrote; read at most a little.
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (code, message) = match status {
        // Not `not_found`: that says a named thing does not exist.
        StatusCode::NOT_FOUND => ("no_route", format!("no route for {method} {path}")),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            match allow.as_ref().and_then(|v| v.to_str().ok()) {
                Some(allowed) => format!("{method} is not allowed on {path}; use {allowed}"),
                None => format!("{method} is not allowed on {path}"),
            },
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "request body too large".to_owned()),
        StatusCode::REQUEST_TIMEOUT => ("timeout", text),
        s if s.is_client_error() => ("bad_request", text),
        _ => ("internal", "internal error".to_owned()),
    };
    let mut reshaped = error_response(status, code, message);
    if let Some(allow) = allow {
        reshaped.headers_mut().insert(header::ALLOW, allow);
    }
    reshaped
}

pub fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body = json!({ "error": { "code": code, "message": message, "details": null } });
    (status, axum::Json(body)).into_response()
}

/// What a page served to a browser may do: load only from this server,
/// never be framed, and not leak its URL (it may hold a token) as a
/// referrer. Inline script and style stay allowed: the dashboard is one
/// self-contained page.
fn add_page_headers(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// Why reading a request body stopped early.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}; send it at once")]
pub struct BodyTimedOut(pub Duration);

/// A request body that fails once `limit` has passed since the request
/// head arrived: a client that stalls its body cannot hold a connection.
pub struct DeadlineBody {
    inner: Body,
    limit: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    pub fn new(inner: Body, limit: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(this.limit)))))
                } else {
                    Poll::Pending
                }
            }
            ready => ready,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a body error (as an extractor reports it) was the deadline.
pub fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<BodyTimedOut>() {
            return true;
        }
        source = error.source();
    }
    false
}
