//! Who is on the other end: the client address and whether the request
//! came over TLS, from the connection, or from a trusted proxy's headers
//! when (and only when) the connection comes from a configured proxy range.
//!
//! The address feeds IP-family pinning of sessions, login throttling and
//! the audit log, so a header is believed only from a proxy: otherwise a
//! client could pick its own address, and sessions behind a CDN would die
//! whenever the CDN's egress address changed family.
//!
//! From a trusted proxy, the client is what its header says, or nobody:
//! when the header is missing, empty or unparsable where an address is
//! needed, [`ProxyConfig::client`] answers [`UnknownClient`] and the
//! request is refused ([`crate::headers::outer`]: 400
//! `client_unknown`). It never falls back to the proxy's own address:
//! that would put every such client in the proxy's throttle bucket, its
//! address in the audit log, and let a stolen IPv4 session cookie be
//! replayed over an IPv6 client (the proxy's family) past the pinning.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// Headers a proxy names the client or the protocol in: from a peer that
/// is not trusted they are ignored, and with no proxy configured their
/// arrival is logged once (a proxy nobody told us about).
const FORWARDING_HEADERS: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "forwarded",
    "x-real-ip",
];

/// Which peers are proxies, and which header of theirs names the client.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    trusted: Vec<IpNet>,
    client_header: Option<HeaderName>,
    /// Set once the "forwarded headers but no proxy" warning was logged.
    warned: Arc<AtomicBool>,
}

/// Why the client of a request from a trusted proxy cannot be determined
/// (the request is refused; the proxy's own address is never used
/// instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UnknownClient {
    /// The header is missing, or its list has no entry at all.
    #[error("the proxy named no client")]
    Missing,
    /// A hop that had to be read is not an address (`unknown`, an
    /// obfuscated identifier, garbage, an empty entry).
    #[error("a forwarded hop is not an address")]
    Malformed,
    /// A header value is not visible ASCII text.
    #[error("a forwarding header is not text")]
    NotText,
    /// A single-address header came more than once.
    #[error("the client header came more than once")]
    Ambiguous,
}

impl ProxyConfig {
    /// No proxy: the connection's peer is the client, and no forwarding
    /// header is believed.
    pub fn none() -> Self {
        Self::default()
    }

    /// Connections from `ranges` are proxies; `client_header` is where
    /// they put the client's address: `x-forwarded-for` (a list, read
    /// from the right, skipping trusted hops: [`parse_forwarded_for`]) or
    /// a single-address header such as `cf-connecting-ip`.
    pub fn trusting(ranges: Vec<IpNet>, client_header: HeaderName) -> Self {
        Self {
            trusted: ranges,
            client_header: Some(client_header),
            warned: Arc::default(),
        }
    }

    /// Whether `ip` is in a trusted proxy range.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that arrived from `peer` with `headers`.
    ///
    /// From a peer that is not a trusted proxy: the peer, over TLS only if
    /// we terminated it (`tls`); every forwarding header is ignored. From a
    /// trusted proxy: the client its header names, over TLS if we
    /// terminated it or the last `X-Forwarded-Proto` value is `https`.
    ///
    /// # Errors
    /// [`UnknownClient`] when a trusted proxy's header does not name a
    /// client (missing, empty, unparsable where an address is needed, or
    /// a single-address header sent twice).
    pub fn client(
        &self,
        peer: SocketAddr,
        headers: &HeaderMap,
        tls: bool,
    ) -> Result<ClientInfo, UnknownClient> {
        let peer_ip = peer.ip().to_canonical();
        if !self.is_trusted(peer_ip) {
            if self.should_warn_unconfigured(headers) {
                tracing::warn!(
                    "a request carries forwarding headers (X-Forwarded-For, Forwarded, …) but no \
                     trusted proxy is configured: they are ignored and the connection's peer is \
                     taken as the client; behind a proxy, configure it (--trust-proxy)"
                );
            }
            return Ok(ClientInfo {
                ip: peer_ip,
                https: tls,
            });
        }
        let ip = match &self.client_header {
            Some(name) => self.named_in(name, headers)?,
            None => return Err(UnknownClient::Missing),
        };
        // A proxy that terminated TLS says so; a plaintext hop from the
        // proxy to us is its business (Cloudflare "Full" uses TLS here).
        // Like X-Forwarded-For, the list grows to the right: the value
        // our proxy appended is the last one.
        let forwarded_https = header_list(headers, "x-forwarded-proto")
            .ok()
            .and_then(|hops| hops.last().map(|p| p.trim().eq_ignore_ascii_case("https")))
            .unwrap_or(false);
        Ok(ClientInfo {
            ip,
            https: tls || forwarded_https,
        })
    }

    /// Whether this request should log the warning that forwarding headers
    /// arrive with no proxy configured: true once per configuration, for
    /// the first such request.
    fn should_warn_unconfigured(&self, headers: &HeaderMap) -> bool {
        if !self.trusted.is_empty() {
            return false;
        }
        let forwarded = FORWARDING_HEADERS
            .iter()
            .any(|name| headers.contains_key(*name));
        forwarded && !self.warned.swap(true, Ordering::Relaxed)
    }

    fn named_in(&self, name: &HeaderName, headers: &HeaderMap) -> Result<IpAddr, UnknownClient> {
        if name == "x-forwarded-for" {
            let lines = header_lines(headers, name)?;
            parse_forwarded_for(&lines, |ip| self.is_trusted(ip))
        } else {
            let mut values = headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (None, _) => Err(UnknownClient::Missing),
                (Some(_), Some(_)) => Err(UnknownClient::Ambiguous),
                (Some(value), None) => {
                    let text = value.to_str().map_err(|_| UnknownClient::NotText)?;
                    parse_hop(text).ok_or(UnknownClient::Malformed)
                }
            }
        }
    }
}

/// Every line of header `name`, in order, as text.
fn header_lines<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Vec<&'h str>, UnknownClient> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().map_err(|_| UnknownClient::NotText))
        .collect()
}

/// The comma-separated entries of every line of header `name`, as one
/// list in order.
fn header_list<'h>(
    headers: &'h HeaderMap,
    name: &'static str,
) -> Result<Vec<&'h str>, UnknownClient> {
    Ok(header_lines(headers, &HeaderName::from_static(name))?
        .into_iter()
        .flat_map(|line| line.split(','))
        .collect())
}

/// The client an `X-Forwarded-For` list names, given its header lines in
/// order (several lines are one list, comma-separated).
///
/// Every proxy appends the address it received from, so the list is read
/// from the right: trusted hops (`is_trusted`) are skipped and the first
/// address that is not trusted is the client. Entries to its left are
/// never looked at (a client can write anything there). When every entry
/// is trusted, the leftmost is the client (a request from inside the
/// trusted network). An entry may carry a port (`1.2.3.4:5678`,
/// `[::1]:443`), brackets (`[::1]`) or an IPv6 zone (`fe80::1%eth0`);
/// IPv4-mapped IPv6 addresses come back as IPv4.
///
/// # Errors
/// [`UnknownClient::Missing`] for no lines at all;
/// [`UnknownClient::Malformed`] when an entry that has to be read (from
/// the right up to and including the client) is not an address, an empty
/// entry included.
pub fn parse_forwarded_for(
    lines: &[&str],
    is_trusted: impl Fn(IpAddr) -> bool,
) -> Result<IpAddr, UnknownClient> {
    if lines.is_empty() {
        return Err(UnknownClient::Missing);
    }
    let mut leftmost = None;
    for hop in lines.iter().rev().flat_map(|line| line.rsplit(',')) {
        let ip = parse_hop(hop).ok_or(UnknownClient::Malformed)?;
        if !is_trusted(ip) {
            return Ok(ip);
        }
        leftmost = Some(ip);
    }
    leftmost.ok_or(UnknownClient::Missing)
}

/// One forwarded address: optional spaces or tabs around it, an optional
/// port (`1.2.3.4:80`, `[2001:db8::1]:443`), optional brackets around an
/// IPv6 address and an optional zone (`fe80::1%eth0`), which is dropped.
/// IPv4-mapped IPv6 comes back as IPv4.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim_matches([' ', '\t']);
    let ip = if let Some(rest) = hop.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !after.is_empty() {
            port(after.strip_prefix(':')?)?;
        }
        IpAddr::V6(ipv6(inner)?)
    } else if let Some((host, p)) = hop.split_once(':').filter(|(_, p)| !p.contains(':')) {
        // Exactly one colon: an IPv4 address and a port.
        port(p)?;
        IpAddr::V4(host.parse::<Ipv4Addr>().ok()?)
    } else if hop.contains(':') {
        IpAddr::V6(ipv6(hop)?)
    } else {
        IpAddr::V4(hop.parse::<Ipv4Addr>().ok()?)
    };
    Some(ip.to_canonical())
}

/// An IPv6 address with an optional, non-empty zone (dropped).
fn ipv6(text: &str) -> Option<Ipv6Addr> {
    let addr = match text.split_once('%') {
        Some((addr, zone)) if !zone.is_empty() && zone.bytes().all(|b| b.is_ascii_graphic()) => {
            addr
        }
        Some(_) => return None,
        None => text,
    };
    addr.parse().ok()
}

/// A port: 1 to 5 ASCII digits, at most 65535.
fn port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// What the server knows of a request's client, in its extensions.
///
/// [`crate::headers::outer`] puts one into every request it lets through
/// (a request whose client cannot be determined is refused there), so a
/// handler that finds none is running without the outer layer and refuses
/// too, rather than act without an address.
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
    use proptest::prelude::*;

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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
        let c = cfg.client(peer("203.0.113.9"), &h, false).unwrap();
        assert_eq!(c.ip, ip("203.0.113.9"));
        assert!(!c.https);
        // Garbage from an untrusted peer is ignored too, not refused.
        let h = headers(&[("x-forwarded-for", "not-an-ip")]);
        let c = cfg.client(peer("203.0.113.9"), &h, false).unwrap();
        assert_eq!(c.ip, ip("203.0.113.9"));
        // And with no proxy configured at all.
        let c = ProxyConfig::none()
            .client(peer("203.0.113.9"), &h, false)
            .unwrap();
        assert_eq!(c.ip, ip("203.0.113.9"));
        assert!(!c.https);
    }

    #[test]
    fn forwarded_for_is_read_from_the_right_past_trusted_hops() {
        let cfg = behind("x-forwarded-for");
        // A client-supplied first entry is not believed: the proxy's own
        // append (the last untrusted hop) wins.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.1.2.3")]);
        let c = cfg.client(peer("10.0.0.1"), &h, false).unwrap();
        assert_eq!(c.ip, ip("198.51.100.7"));
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2001:db8::5, 198.51.100.8"),
        ]);
        let c = cfg.client(peer("2001:db8::1"), &h, false).unwrap();
        assert_eq!(c.ip, ip("198.51.100.8"));
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 198.51.100.9"),
            ("x-forwarded-for", "2001:db8::5"),
        ]);
        let c = cfg.client(peer("2001:db8::1"), &h, false).unwrap();
        assert_eq!(c.ip, ip("198.51.100.9"));
        // Only proxies in the list: the first one.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
        let c = cfg.client(peer("10.0.0.1"), &h, false).unwrap();
        assert_eq!(c.ip, ip("10.9.9.9"));
        // Garbage left of the client is never read.
        let h = headers(&[("x-forwarded-for", "unknown, _hidden,, 198.51.100.7")]);
        let c = cfg.client(peer("10.0.0.1"), &h, false).unwrap();
        assert_eq!(c.ip, ip("198.51.100.7"));
    }

    /// Issue 16 (5): an unparsable hop used to make the whole list
    /// unreadable, and the proxy's own address was taken as the client.
    #[test]
    fn an_undeterminable_client_is_refused_never_the_proxy() {
        let cfg = behind("x-forwarded-for");
        for (h, why) in [
            (
                headers(&[("x-forwarded-for", "not-an-ip")]),
                UnknownClient::Malformed,
            ),
            (
                headers(&[("x-forwarded-for", "198.51.100.7,")]),
                UnknownClient::Malformed,
            ),
            (
                headers(&[("x-forwarded-for", "198.51.100.7, garbage, 10.1.2.3")]),
                UnknownClient::Malformed,
            ),
            (
                headers(&[("x-forwarded-for", "unknown")]),
                UnknownClient::Malformed,
            ),
            (
                headers(&[("x-forwarded-for", "")]),
                UnknownClient::Malformed,
            ),
            (headers(&[]), UnknownClient::Missing),
            (
                headers(&[("x-forwarded-proto", "https")]),
                UnknownClient::Missing,
            ),
        ] {
            assert_eq!(cfg.client(peer("10.0.0.1"), &h, false), Err(why), "{h:?}");
        }
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"198.51.100.7\xff").unwrap(),
        );
        assert_eq!(
            cfg.client(peer("10.0.0.1"), &h, false),
            Err(UnknownClient::NotText)
        );

        let cfg = behind("cf-connecting-ip");
        let h = headers(&[
            ("cf-connecting-ip", "198.51.100.7"),
            ("cf-connecting-ip", "198.51.100.8"),
        ]);
        assert_eq!(
            cfg.client(peer("10.0.0.1"), &h, false),
            Err(UnknownClient::Ambiguous),
            "two values: neither"
        );
        for (h, why) in [
            (headers(&[]), UnknownClient::Missing),
            (
                headers(&[("cf-connecting-ip", "nope")]),
                UnknownClient::Malformed,
            ),
        ] {
            assert_eq!(cfg.client(peer("10.0.0.1"), &h, false), Err(why));
        }
    }

    #[test]
    fn hops_may_carry_ports_brackets_and_zones() {
        let trusted = |ip: IpAddr| behind("x-forwarded-for").is_trusted(ip);
        for (hop, want) in [
            ("198.51.100.7:5678", "198.51.100.7"),
            (" \t198.51.100.7 ", "198.51.100.7"),
            ("[2001:db9::1]:443", "2001:db9::1"),
            ("[2001:db9::1]", "2001:db9::1"),
            ("2001:db9::1", "2001:db9::1"),
            ("fe80::1%eth0", "fe80::1"),
            ("[fe80::1%25eth0]:8080", "fe80::1"),
            ("::1", "::1"),
            ("[::ffff:198.51.100.7]:1", "198.51.100.7"),
        ] {
            assert_eq!(
                parse_forwarded_for(&[hop], trusted),
                Ok(ip(want)),
                "{hop:?}"
            );
        }
        for hop in [
            "198.51.100.7:",
            "198.51.100.7:65536",
            "198.51.100.7:123456",
            // Six digits even if the value fits: a port is at most five.
            "198.51.100.7:000080",
            "198.51.100.7:+80",
            "[198.51.100.7]",
            "[2001:db9::1",
            "[2001:db9::1]443",
            "[2001:db9::1]:",
            "fe80::1%",
            "198.51.100.7%eth0",
            "198.51.100.007",
            "unknown",
            "",
            "1.2.3.4 5.6.7.8",
        ] {
            assert_eq!(
                parse_forwarded_for(&[hop], trusted),
                Err(UnknownClient::Malformed),
                "{hop:?}"
            );
        }
        assert_eq!(
            parse_forwarded_for(&[], trusted),
            Err(UnknownClient::Missing)
        );
    }

    #[test]
    fn a_single_address_header_and_the_forwarded_protocol() {
        let cfg = behind("cf-connecting-ip");
        let h = headers(&[
            ("cf-connecting-ip", " 2001:db8:ffff::42 "),
            ("x-forwarded-proto", "HTTPS"),
        ]);
        let c = cfg.client(peer("10.0.0.1"), &h, false).unwrap();
        assert_eq!(c.ip, ip("2001:db8:ffff::42"));
        assert!(c.https);
        let h = headers(&[
            ("cf-connecting-ip", "198.51.100.7"),
            ("x-forwarded-proto", "http"),
        ]);
        assert!(!cfg.client(peer("10.0.0.1"), &h, false).unwrap().https);
        assert!(
            cfg.client(peer("10.0.0.1"), &h, true).unwrap().https,
            "our own TLS"
        );
    }

    /// Issue 16 (5): the protocol our proxy appended is the last value,
    /// not one the client put first.
    #[test]
    fn the_forwarded_protocol_is_the_last_value() {
        let cfg = behind("cf-connecting-ip");
        for (lines, https) in [
            (&["https, http"][..], false),
            (&["http, https"][..], true),
            (&["https", "http"][..], false),
            (&["http", " https "][..], true),
            (&["https,"][..], false),
        ] {
            let mut h = headers(&[("cf-connecting-ip", "198.51.100.7")]);
            for line in lines {
                h.append("x-forwarded-proto", HeaderValue::from_static(line));
            }
            assert_eq!(
                cfg.client(peer("10.0.0.1"), &h, false).unwrap().https,
                https,
                "{lines:?}"
            );
        }
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let cfg = behind("x-forwarded-for");
        let c = cfg
            .client(
                peer("::ffff:10.0.0.1"),
                &headers(&[("x-forwarded-for", "::ffff:198.51.100.7")]),
                false,
            )
            .unwrap();
        assert_eq!(c.ip, ip("198.51.100.7"));
        assert!(c.ip.is_ipv4());
    }

    /// Issue 16 (8): forwarding headers with no proxy configured are
    /// logged once, not per request; with a proxy configured, never.
    #[test]
    fn forwarding_headers_without_a_proxy_warn_once() {
        let none = ProxyConfig::none();
        assert!(!none.should_warn_unconfigured(&headers(&[])));
        for name in FORWARDING_HEADERS {
            let fresh = ProxyConfig::none();
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("198.51.100.7"));
            assert!(fresh.should_warn_unconfigured(&h), "{name}");
            assert!(!fresh.should_warn_unconfigured(&h), "{name}: only once");
            // A clone shares the flag (the router clones its config).
            assert!(!fresh.clone().should_warn_unconfigured(&h));
        }
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert!(!behind("x-forwarded-for").should_warn_unconfigured(&h));
    }

    fn trusted_v4() -> impl Strategy<Value = IpAddr> {
        any::<u32>().prop_map(|x| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (x & 0x00ff_ffff))))
    }

    fn trusted_v6() -> impl Strategy<Value = IpAddr> {
        any::<u128>().prop_map(|x| {
            IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8_u128 << 96) | (x & ((1 << 96) - 1)),
            ))
        })
    }

    fn untrusted() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<Ipv4Addr>().prop_map(IpAddr::V4),
            any::<Ipv6Addr>().prop_map(IpAddr::V6),
        ]
        .prop_map(|ip| ip.to_canonical())
        .prop_filter("not a proxy", |ip| {
            !behind("x-forwarded-for").is_trusted(*ip)
        })
    }

    /// An address as a proxy may write it: bare, with a port, in
    /// brackets, with a zone.
    fn written(ip: IpAddr) -> impl Strategy<Value = String> {
        (0..4u8, any::<u16>()).prop_map(move |(form, port)| match (ip, form) {
            (IpAddr::V4(a), 0 | 2) => a.to_string(),
            (IpAddr::V4(a), _) => format!("{a}:{port}"),
            (IpAddr::V6(a), 0) => a.to_string(),
            (IpAddr::V6(a), 1) => format!("[{a}]"),
            (IpAddr::V6(a), 2) => format!("[{a}]:{port}"),
            (IpAddr::V6(a), _) => format!("{a}%eth{port}"),
        })
    }

    fn written_trusted_hops() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(
            prop_oneof![trusted_v4(), trusted_v6()].prop_flat_map(written),
            0..6,
        )
    }

    /// Any printable text that may end up in a header line (commas too).
    fn garbage() -> impl Strategy<Value = String> {
        "[ -~]{0,24}"
    }

    /// `entries` as header lines: cut into lines at `cuts`, as proxies
    /// that each add a line would.
    fn as_lines(entries: &[String], cuts: &[bool]) -> Vec<String> {
        let mut lines = vec![String::new()];
        for (i, e) in entries.iter().enumerate() {
            let last = lines.len() - 1;
            if i > 0 {
                if cuts.get(i).copied().unwrap_or(false) {
                    lines.push(String::new());
                } else {
                    lines[last].push_str(", ");
                }
            }
            let last = lines.len() - 1;
            lines[last].push_str(e);
        }
        lines
    }

    fn client_of(lines: &[String]) -> Result<IpAddr, UnknownClient> {
        let cfg = behind("x-forwarded-for");
        let mut h = HeaderMap::new();
        for line in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
        }
        cfg.client(peer("10.0.0.1"), &h, false).map(|c| c.ip)
    }

    proptest! {
        /// Whatever a client put in front, and however many trusted
        /// proxies appended after the address our first proxy saw, that
        /// address is the client.
        #[test]
        fn the_client_is_the_address_before_the_trusted_hops(
            prefix in prop::collection::vec(garbage(), 0..4),
            (client, written_client) in untrusted().prop_flat_map(|ip| (Just(ip), written(ip))),
            hops in written_trusted_hops(),
            cuts in prop::collection::vec(any::<bool>(), 12),
        ) {
            let mut entries = prefix;
            entries.push(written_client);
            entries.extend(hops);
            prop_assert_eq!(client_of(&as_lines(&entries, &cuts)), Ok(client));
        }

        /// Garbage anywhere in a list of addresses never makes a trusted
        /// address the client unless every entry is one, and the answer is
        /// always one of the entries: never the peer (10.0.0.1 is in no
        /// generated list), never a guess.
        #[test]
        fn garbage_never_yields_a_trusted_address_or_the_peer(
            entries in prop::collection::vec(
                prop_oneof![
                    prop_oneof![trusted_v4(), trusted_v6()].prop_flat_map(written),
                    untrusted().prop_flat_map(written),
                    garbage(),
                ],
                0..8,
            ),
            cuts in prop::collection::vec(any::<bool>(), 8),
        ) {
            let lines = as_lines(&entries, &cuts);
            let cfg = behind("x-forwarded-for");
            let parsed: Vec<Option<IpAddr>> = lines
                .iter()
                .flat_map(|l| l.split(','))
                .map(parse_hop)
                .collect();
            prop_assume!(!parsed.contains(&Some(ip_v4_peer())));
            if let Ok(ip) = client_of(&lines) {
                prop_assert_ne!(ip, ip_v4_peer());
                prop_assert!(parsed.contains(&Some(ip)));
                if cfg.is_trusted(ip) {
                    prop_assert!(parsed.iter().all(|p| p.is_some_and(|p| cfg.is_trusted(p))));
                }
            }
        }

        /// Arbitrary header text from a trusted proxy: never a panic, and
        /// never the proxy itself.
        #[test]
        fn arbitrary_lines_never_yield_the_peer(
            lines in prop::collection::vec("[ -~]{0,40}", 0..4),
        ) {
            prop_assume!(!lines.iter().flat_map(|l| l.split(',')).any(|e| parse_hop(e) == Some(ip_v4_peer())));
            prop_assert_ne!(client_of(&lines), Ok(ip_v4_peer()));
        }
    }

    fn ip_v4_peer() -> IpAddr {
        ip("10.0.0.1")
    }
}
