//! Who is on the other end: the client address and whether the request
//! came over TLS, from the connection, or from a trusted proxy's headers
//! when (and only when) the connection comes from a configured proxy range.
//!
//! The address feeds IP-family pinning of sessions, login throttling and
//! the audit log, so a header is believed only from a proxy: otherwise a
//! client could pick its own address, and sessions behind a CDN would die
//! whenever the CDN's egress address changed family.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// Which peers are proxies, and which header of theirs names the client.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    trusted: Vec<IpNet>,
    client_header: Option<HeaderName>,
}

impl ProxyConfig {
    /// No proxy: the connection's peer is the client, and no forwarding
    /// header is believed.
    pub fn none() -> Self {
        Self::default()
    }

    /// Connections from `ranges` are proxies; `client_header` is where
    /// they put the client's address: `x-forwarded-for` (a list, read
    /// from the right, skipping trusted hops) or a single-address header
    /// such as `cf-connecting-ip`.
    pub fn trusting(ranges: Vec<IpNet>, client_header: HeaderName) -> Self {
        Self {
            trusted: ranges,
            client_header: Some(client_header),
        }
    }

    /// Whether `ip` is in a trusted proxy range.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that arrived from `peer` with `headers`.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap, tls: bool) -> ClientInfo {
        let peer_ip = peer.ip().to_canonical();
        if !self.is_trusted(peer_ip) {
            return ClientInfo {
                ip: peer_ip,
                https: tls,
            };
        }
        let ip = self
            .client_header
            .as_ref()
            .and_then(|name| self.named_in(name, headers))
            .unwrap_or(peer_ip);
        // A proxy that terminated TLS says so; a plaintext hop from the
        // proxy to us is its business (Cloudflare "Full" uses TLS here).
        let forwarded_https = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        ClientInfo {
            ip,
            https: tls || forwarded_https,
        }
    }

    fn named_in(&self, name: &HeaderName, headers: &HeaderMap) -> Option<IpAddr> {
        if name == "x-forwarded-for" {
            // Every proxy appends the address it received from; the last
            // address that is not one of ours is the client. Several
            // header lines are one list, in order.
            let hops: Vec<IpAddr> = headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().ok())
                .collect::<Option<Vec<_>>>()?
                .iter()
                .flat_map(|line| line.split(','))
                .map(|hop| hop.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()))
                .collect::<Result<_, _>>()
                .ok()?;
            hops.iter()
                .rev()
                .find(|ip| !self.is_trusted(**ip))
                .or(hops.first())
                .copied()
        } else {
            let mut values = headers.get_all(name).iter();
            let (Some(value), None) = (values.next(), values.next()) else {
                return None;
            };
            value
                .to_str()
                .ok()?
                .trim()
                .parse::<IpAddr>()
                .ok()
                .map(|ip| ip.to_canonical())
        }
    }
}

/// What the server knows of a request's client, in its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address (IPv4-mapped IPv6 addresses as IPv4).
    pub ip: IpAddr,
    /// Whether the client reached us over TLS (directly, or through a
    /// trusted proxy that says so).
    pub https: bool,
}

/// Marks a connection the server terminated TLS on (put in the request's
/// extensions by the TLS acceptor).
#[derive(Debug, Clone, Copy)]
pub struct TlsConnection;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn peer(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), 40000)
    }

    fn behind(header: &'static str) -> ProxyConfig {
        ProxyConfig::trusting(
            vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8::/32".parse().unwrap(),
            ],
            HeaderName::from_static(header),
        )
    }

    #[test]
    fn an_untrusted_peers_headers_are_ignored() {
        let cfg = behind("x-forwarded-for");
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = cfg.client(peer("203.0.113.9"), &h, false);
        assert_eq!(c.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert!(!c.https);
        // And with no proxy configured at all.
        let c = ProxyConfig::none().client(peer("203.0.113.9"), &h, false);
        assert_eq!(c.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert!(!c.https);
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_past_trusted_hops() {
        let cfg = behind("x-forwarded-for");
        // A client-supplied first entry is not believed: the proxy's own
        // append (the last untrusted hop) wins.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.1.2.3")]);
        let c = cfg.client(peer("10.0.0.1"), &h, false);
        assert_eq!(c.ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2001:db8::5, 198.51.100.8"),
        ]);
        let c = cfg.client(peer("2001:db8::1"), &h, false);
        assert_eq!(c.ip, "198.51.100.8".parse::<IpAddr>().unwrap());
        // Only proxies in the list: the first one.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
        let c = cfg.client(peer("10.0.0.1"), &h, false);
        assert_eq!(c.ip, "10.9.9.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_malformed_or_missing_header_falls_back_to_the_peer() {
        let cfg = behind("x-forwarded-for");
        for h in [
            headers(&[("x-forwarded-for", "not-an-ip")]),
            headers(&[("x-forwarded-for", "198.51.100.7,")]),
            headers(&[]),
        ] {
            let c = cfg.client(peer("10.0.0.1"), &h, false);
            assert_eq!(c.ip, "10.0.0.1".parse::<IpAddr>().unwrap());
        }
        let cfg = behind("cf-connecting-ip");
        let h = headers(&[
            ("cf-connecting-ip", "198.51.100.7"),
            ("cf-connecting-ip", "198.51.100.8"),
        ]);
        let c = cfg.client(peer("10.0.0.1"), &h, false);
        assert_eq!(
            c.ip,
            "10.0.0.1".parse::<IpAddr>().unwrap(),
            "two values: neither"
        );
    }

    #[test]
    fn a_single_address_header_and_the_forwarded_protocol() {
        let cfg = behind("cf-connecting-ip");
        let h = headers(&[
            ("cf-connecting-ip", " 2001:db8:ffff::42 "),
            ("x-forwarded-proto", "HTTPS"),
        ]);
        let c = cfg.client(peer("10.0.0.1"), &h, false);
        assert_eq!(c.ip, "2001:db8:ffff::42".parse::<IpAddr>().unwrap());
        assert!(c.https);
        let h = headers(&[("x-forwarded-proto", "http")]);
        assert!(!cfg.client(peer("10.0.0.1"), &h, false).https);
        assert!(cfg.client(peer("10.0.0.1"), &h, true).https, "our own TLS");
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let cfg = behind("x-forwarded-for");
        let c = cfg.client(
            peer("::ffff:10.0.0.1"),
            &headers(&[("x-forwarded-for", "::ffff:198.51.100.7")]),
            false,
        );
        assert_eq!(c.ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert!(c.ip.is_ipv4());
    }
}
