//! Who is on the other end of a request: the socket's address, or, when
//! that is a proxy the operator trusts (`--trusted-proxy`), the client
//! the proxy names in `X-Forwarded-For`. A header any client can set is
//! never believed on its own.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// The client's address. Walks `X-Forwarded-For` from the right (the
/// entry the nearest proxy appended) past trusted proxies; the first
/// other address is the client.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else {
            return Some(peer);
        };
        for part in value.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => chain.push(ip),
                // A malformed chain proves nothing beyond the proxy.
                Err(_) => return Some(peer),
            }
        }
    }
    Some(
        chain
            .into_iter()
            .rev()
            .find(|ip| !trusted.contains(ip))
            .unwrap_or(peer),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", xff.parse().unwrap());
        headers
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let h = headers("198.51.100.1, 203.0.113.9");
        assert_eq!(client_ip(Some(client), &h, &[]), Some(client));
        assert_eq!(client_ip(Some(proxy), &h, &[]), Some(proxy));
        assert_eq!(client_ip(Some(proxy), &h, &[proxy]), Some(client));
        let inner: IpAddr = "10.0.0.3".parse().unwrap();
        let h = headers("203.0.113.9, 10.0.0.3");
        assert_eq!(client_ip(Some(proxy), &h, &[proxy, inner]), Some(client));
        assert_eq!(
            client_ip(Some(proxy), &headers("junk"), &[proxy]),
            Some(proxy)
        );
        assert_eq!(client_ip(None, &h, &[proxy]), None);
    }
}
