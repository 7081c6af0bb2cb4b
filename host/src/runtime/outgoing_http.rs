//! The outgoing HTTP allow-list of a channel binding, enforced in the
//! wasi:http `send_request` hook before any connection is made; allowed
//! requests go over one shared client that keeps connections alive.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

/// Destinations a binding may reach: `host`, `host:port` or `*.domain`,
/// within the hosts its plugin version declares (if it declares any).
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    entries: Vec<Destination>,
    /// The plugin's `http_hosts`; `None` when it declares none.
    declared: Option<Vec<Destination>>,
}

/// Is `entry` a `host`, `host:port` or `*.domain` an allow-list can hold?
pub fn is_destination(entry: &str) -> bool {
    !entry.contains([',', '/', ' ']) && Destination::parse(entry).is_some()
}

/// Does allow-list entry `wider` let through everything `narrower` does?
/// `*.example.com` covers `api.example.com` and `*.eu.example.com`; ports
/// must be the same (no port: the scheme's default).
pub fn covers(wider: &str, narrower: &str) -> bool {
    let (Some(wider), Some(narrower)) = (Destination::parse(wider), Destination::parse(narrower))
    else {
        return false;
    };
    let host_ok = match wider.host.strip_prefix("*.") {
        Some(domain) => narrower.host.ends_with(&format!(".{domain}")),
        None => wider.host == narrower.host,
    };
    host_ok && wider.port == narrower.port
}

#[derive(Clone, Debug)]
struct Destination {
    host: String,
    port: Option<u16>,
}

impl AllowList {
    pub fn new(entries: &[String]) -> AllowList {
        AllowList {
            entries: entries
                .iter()
                .filter_map(|e| Destination::parse(e))
                .collect(),
            declared: None,
        }
    }

    /// Restricts the list to the hosts a plugin declares (`http_hosts` of
    /// its manifest): a binding's entry outside them reaches nothing, so a
    /// declaration an admin approved is a promise the runtime keeps. An
    /// empty declaration leaves the binding's list as it is.
    pub fn within(mut self, declared: &[String]) -> AllowList {
        if !declared.is_empty() {
            self.declared = Some(
                declared
                    .iter()
                    .filter_map(|e| Destination::parse(e))
                    .collect(),
            );
        }
        self
    }

    /// Is `host:port` allowed? Hosts compare case-insensitively; an entry
    /// without a port allows the scheme's default port only.
    pub fn allows(&self, host: &str, port: u16, default_port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let any = |entries: &[Destination]| {
            entries.iter().any(|entry| {
                let host_ok = match entry.host.strip_prefix("*.") {
                    Some(domain) => host.ends_with(&format!(".{domain}")),
                    None => entry.host == host,
                };
                host_ok && entry.port.unwrap_or(default_port) == port
            })
        };
        any(&self.entries) && self.declared.as_deref().is_none_or(any)
    }
}

impl Destination {
    fn parse(entry: &str) -> Option<Destination> {
        let entry = entry.trim().to_ascii_lowercase();
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port.parse().ok()?)),
            None => (entry, None),
        };
        (!host.is_empty()).then_some(Destination { host, port })
    }
}

impl WasiHttpHooks for AllowList {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        drop(fut);
        let uri = request.uri();
        let https = uri.scheme_str() == Some("https");
        let default_port = if https { 443 } else { 80 };
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri.port_u16().unwrap_or(default_port);
        if !self.allows(&host, port, default_port) {
            tracing::warn!(%host, port, "outgoing HTTP denied: not on the binding's allow-list, or not among the hosts the plugin declares");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        Box::new(async move {
            let response = send_pooled(request, options).await?;
            let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

/// How long a connection to a provider may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a response may pause between two reads.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP client for every plugin call of this process, so connections to
/// a provider are kept alive and reused from call to call (a connection and
/// a TLS session per message cost more than the message). It follows no
/// redirect and uses no proxy from the environment: the allow-list check
/// above sees every destination.
fn shared_client() -> Result<&'static reqwest::Client, HttpError> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        // reqwest is built without a default TLS provider; use ring, the
        // one the rest of the binary (lettre, oci-client) links.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())
    });
    client
        .as_ref()
        .map_err(|e| HttpError::InternalError(Some(format!("no HTTP client: {e}"))))
}

/// Sends a plugin's request over the shared client. The request body is
/// taken whole first (plugins send messages, not streams); the response
/// body streams back.
async fn send_pooled(
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<http::Response<WasiBody>, HttpError> {
    let client = shared_client()?;
    let first_byte = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(Duration::from_secs(600));
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let url = parts.uri.to_string();
    let sent = client
        .request(parts.method, url)
        .headers(parts.headers)
        .body(body)
        .send();
    let response = match tokio::time::timeout(first_byte, sent).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return Err(request_error(&e)),
        Err(_) => return Err(HttpError::HttpResponseTimeout),
    };
    let response: http::Response<reqwest::Body> = response.into();
    Ok(response.map(|body| body.map_err(|e| body_error(&e)).boxed_unsync()))
}

fn request_error(e: &reqwest::Error) -> HttpError {
    if e.is_timeout() {
        HttpError::ConnectionTimeout
    } else if e.is_connect() {
        HttpError::ConnectionRefused
    } else {
        HttpError::InternalError(Some(e.to_string()))
    }
}

fn body_error(e: &reqwest::Error) -> HttpError {
    if e.is_timeout() {
        HttpError::ConnectionReadTimeout
    } else {
        HttpError::HttpResponseIncomplete
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ports_and_wildcards() {
        let list = AllowList::new(&[
            "hooks.example.com".into(),
            "127.0.0.1:8080".into(),
            "*.crm.example".into(),
        ]);
        assert!(list.allows("hooks.example.com", 443, 443));
        assert!(list.allows("HOOKS.example.com.", 80, 80));
        assert!(!list.allows("hooks.example.com", 8443, 443));
        assert!(list.allows("127.0.0.1", 8080, 80));
        assert!(!list.allows("127.0.0.1", 8081, 80));
        assert!(list.allows("eu.crm.example", 443, 443));
        assert!(!list.allows("crm.example", 443, 443));
        assert!(!list.allows("evilcrm.example", 443, 443));
        assert!(!AllowList::default().allows("localhost", 80, 80));
    }

    #[test]
    fn a_declaration_restricts_the_binding() {
        let binding = ["hooks.example.com".to_owned(), "*.sms.example".to_owned()];
        let declared = ["*.sms.example".to_owned()];
        let list = AllowList::new(&binding).within(&declared);
        assert!(list.allows("eu.sms.example", 443, 443));
        assert!(
            !list.allows("hooks.example.com", 443, 443),
            "allowed by the binding, not declared by the plugin"
        );
        let list = AllowList::new(&["eu.sms.example".to_owned()]).within(&declared);
        assert!(
            !list.allows("us.sms.example", 443, 443),
            "declared, not allowed by the binding"
        );
        assert!(
            AllowList::new(&binding)
                .within(&[])
                .allows("hooks.example.com", 443, 443)
        );
    }

    #[test]
    fn coverage_of_entries() {
        assert!(covers("api.example.com", "API.example.com"));
        assert!(covers("*.example.com", "api.example.com"));
        assert!(covers("*.example.com", "*.eu.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("api.example.com", "api.example.com:8443"));
        assert!(!covers("api.example.com", "*.example.com"));
        assert!(is_destination("127.0.0.1:8080"));
        assert!(!is_destination("https://x.example"));
        assert!(!is_destination("x.example:port"));
    }
}
