//! The outgoing HTTP allow-list of a channel binding, enforced in the
//! wasi:http `send_request` hook before any connection is made.

use std::future::Future;

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
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
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
