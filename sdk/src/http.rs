//! Outgoing HTTP for channel connectors, over wasi:http.
//!
//! A blocking request/response API: connectors send one request per message,
//! so streams and futures would only add ceremony. Use it through
//! [`Ctx::http`](crate::Ctx::http) so native tests can answer it.

use std::fmt;

/// Largest response body read; the rest is cut off.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(url: &str) -> Request {
        Request::new("GET", url)
    }

    pub fn post(url: &str) -> Request {
        Request::new("POST", url)
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// The first header named `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum HttpError {
    /// The URL is not `http(s)://host[:port]/path`.
    InvalidUrl(String),
    /// The host refused the request: the binding does not allow that
    /// destination, or the plugin is not a channel.
    Denied(String),
    /// The request failed on the way: connection, timeout, protocol.
    Failed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::InvalidUrl(why) => write!(f, "invalid URL: {why}"),
            HttpError::Denied(why) => write!(f, "request denied by the host: {why}"),
            HttpError::Failed(why) => write!(f, "request failed: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A URL split into the parts wasi:http wants.
#[derive(Debug, PartialEq)]
pub struct Url<'a> {
    pub https: bool,
    pub authority: &'a str,
    pub path_with_query: &'a str,
}

pub fn parse_url(url: &str) -> Result<Url<'_>, HttpError> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(HttpError::InvalidUrl(format!(
            "`{url}` must start with http:// or https://"
        )));
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() || authority.contains('@') {
        return Err(HttpError::InvalidUrl(format!("`{url}` has no plain host")));
    }
    Ok(Url {
        https,
        authority,
        path_with_query: if path.is_empty() { "/" } else { path },
    })
}

pub(crate) fn send(request: &Request) -> Result<Response, HttpError> {
    wasi_send(request)
}

fn wasi_send(request: &Request) -> Result<Response, HttpError> {
    use crate::bindings::channel::wasi::http::outgoing_handler;
    use crate::bindings::channel::wasi::http::types::{
        ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
    };
    use crate::bindings::channel::wasi::io::streams::StreamError;

    let url = parse_url(&request.url)?;
    let failed = |what: &str| HttpError::Failed(what.to_owned());
    let headers = Fields::new();
    // A known length spares the receiver a chunked body.
    let has_length = request
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    if !has_length && (!request.body.is_empty() || request.method != "GET") {
        headers
            .append("content-length", request.body.len().to_string().as_bytes())
            .map_err(|e| HttpError::Failed(format!("header content-length: {e:?}")))?;
    }
    for (name, value) in &request.headers {
        headers
            .append(name, value.as_bytes())
            .map_err(|e| HttpError::Failed(format!("header `{name}`: {e:?}")))?;
    }
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "HEAD" => Method::Head,
        other => Method::Other(other.to_owned()),
    };
    outgoing
        .set_method(&method)
        .map_err(|()| failed("method"))?;
    let scheme = if url.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    outgoing
        .set_scheme(Some(&scheme))
        .map_err(|()| failed("scheme"))?;
    outgoing
        .set_authority(Some(url.authority))
        .map_err(|()| HttpError::InvalidUrl(format!("bad host `{}`", url.authority)))?;
    outgoing
        .set_path_with_query(Some(url.path_with_query))
        .map_err(|()| HttpError::InvalidUrl(format!("bad path `{}`", url.path_with_query)))?;

    let body = outgoing.body().map_err(|()| failed("request body"))?;
    let map_code = |code: ErrorCode| match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied(format!(
            "{} is not on this binding's allow-list",
            url.authority
        )),
        other => HttpError::Failed(format!("{other:?}")),
    };
    let future = outgoing_handler::handle(outgoing, None).map_err(map_code)?;
    // When the host refuses the request it closes the body; the reason is
    // in the response future, so a failed write is reported only after it.
    let mut write_error = None;
    {
        let stream = body.write().map_err(|()| failed("request body stream"))?;
        for chunk in request.body.chunks(4096) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                write_error = Some(HttpError::Failed(format!("writing the body: {e:?}")));
                break;
            }
        }
    }
    let finished = OutgoingBody::finish(body, None);

    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(map_code(code)),
        Some(Err(())) | None => return Err(failed("no response")),
    };
    if let Some(error) = write_error {
        return Err(error);
    }
    finished.map_err(map_code)?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let incoming = response.consume().map_err(|()| failed("response body"))?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| failed("response body stream"))?;
        while body.len() < MAX_RESPONSE_BYTES {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(HttpError::Failed(format!("reading the body: {e:?}"))),
            }
        }
    }
    drop(IncomingBody::finish(incoming));
    body.truncate(MAX_RESPONSE_BYTES);
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let url = parse_url("https://hooks.example.com:8443/in?x=1").unwrap();
        assert_eq!(
            url,
            Url {
                https: true,
                authority: "hooks.example.com:8443",
                path_with_query: "/in?x=1"
            }
        );
        assert_eq!(parse_url("http://a").unwrap().path_with_query, "/");
        assert!(parse_url("ftp://a/b").is_err());
        assert!(parse_url("https://user@a/b").is_err());
        assert!(parse_url("https:///b").is_err());
    }
}
