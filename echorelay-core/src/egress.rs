//! Egress rules: the SSRF guard for customer-supplied delivery URLs.
//!
//! A relay that POSTs to URLs its tenants type in must not become a way
//! into its own network: the cloud metadata service, the database on
//! `10.0.0.5`, the admin port on `127.0.0.1`. This module holds the rules,
//! as pure functions (no I/O, no DNS); the HTTP client that resolves and
//! connects calls them. The rules Svix and Convoy ship, plus the corners
//! such guards are usually bypassed through.
//!
//! # The rules
//!
//! [`EgressPolicy::check_url`] takes a URL as the tenant wrote it and
//! parses it with the WHATWG parser (the `url` crate, the one reqwest and
//! browsers use) into an [`EgressUrl`]. It refuses: more than
//! [`MAX_URL_LEN`] bytes (before or after normalization), whitespace or
//! control characters (the parser would silently drop tabs and newlines),
//! relative URLs, schemes other than `https` (and `http` if
//! [`EgressPolicy::allow_http`]), user info (`user:pass@`), a missing host,
//! the local machine's names (`localhost`, `*.localhost`, `localhost.`,
//! `localhost.localdomain`, `localhost4`, `localhost6`, `ip6-localhost`,
//! `ip6-loopback`, after IDNA mapping, so `ⓛocalhost` too), and an IP
//! literal host that [`EgressPolicy::check_ip`] refuses. IPv4 literals are
//! judged after the parser's normalization, so `127.1`, `0x7f.1`,
//! `0177.0.0.1`, `2130706433`, `%31%32%37.0.0.1` and full-width digits are
//! all `127.0.0.1`. Any port is allowed.
//!
//! [`EgressPolicy::check_ip`] refuses every address that is not globally
//! routable unicast ([`classify`] names why, as an [`AddressClass`]),
//! unless the operator's allowlist ([`EgressPolicy::allow`]) opens it:
//!
//! * IPv4: `0.0.0.0/8` (on Linux, connecting to `0.0.0.0` reaches
//!   localhost), `10/8`, `100.64/10` (CGNAT), `127/8`, `169.254/16`,
//!   `172.16/12`, `192.0.0/24`, `192.0.2/24`, `192.88.99/24` (the
//!   deprecated 6to4 relay anycast, RFC 7526), `192.168/16`, `198.18/15`,
//!   `198.51.100/24`, `203.0.113/24`, `224/4`, `240/4`,
//!   `255.255.255.255`.
//! * Metadata services, by address, so the error says so: `169.254.169.254`
//!   (AWS, GCP, Azure, DigitalOcean…), `169.254.170.2` (ECS task
//!   credentials), `169.254.170.23` (EKS Pod Identity), `192.0.0.192`
//!   (Oracle), `100.100.100.200` (Alibaba), `fd00:ec2::254` (AWS IMDS over
//!   IPv6), `fd00:ec2::23` (EKS Pod Identity over IPv6), and
//!   `168.63.129.16`: Azure's WireServer, a *public* address that the
//!   hypervisor answers inside every Azure VM; refused although routable.
//! * IPv6: `::`, `::1`, `100::/64`, `2001::/23` (IETF protocol
//!   assignments, Teredo `2001::/32` included), `2001:db8::/32` and
//!   `3fff::/20` (documentation), `fc00::/7`, `fe80::/10`, `fec0::/10`,
//!   `ff00::/8`, and everything outside `2000::/3`, the only space IANA
//!   allocates for global unicast (this covers `5f00::/16` SRv6 and the
//!   rest of the reserved space).
//!
//! ## IPv4 inside IPv6
//!
//! * IPv4-mapped `::ffff:a.b.c.d` *is* the IPv4 address on a dual-stack
//!   socket: it is judged exactly as `a.b.c.d` (same class, and the
//!   allowlist is matched against `a.b.c.d`; an allowlist entry written
//!   inside `::ffff:0:0/96` with a prefix of 96 or more is stored as the
//!   IPv4 network it means).
//! * NAT64 `64:ff9b::/96` and the local-use `64:ff9b:1::/48`, and 6to4
//!   `2002::/16` (IPv4 in bits 16..48): judged by the embedded IPv4, so
//!   `64:ff9b::8.8.8.8` is public and `64:ff9b::127.0.0.1` is
//!   [`AddressClass::EmbeddedIpv4`] with the inner class. For
//!   `64:ff9b:1::/48` the IPv4 is read from the last 32 bits (the RFC 6052
//!   `/96` layout); a network whose local NAT64 uses a shorter prefix puts
//!   it elsewhere and must filter at the translator.
//! * IPv4-compatible `::a.b.c.d` (deprecated, RFC 4291; Linux's `sit0`
//!   can route `::/96` to the IPv4 address): always refused. With a refused
//!   IPv4 inside it is [`AddressClass::EmbeddedIpv4`]; with a public one
//!   [`AddressClass::Reserved`] (no webhook lives at `::8.8.8.8`).
//! * Teredo `2001::/32`: always refused ([`AddressClass::Teredo`]); the
//!   client's IPv4 (the bitwise NOT of the last 32 bits) is judged too
//!   when the allowlist opens a Teredo address.
//!
//! ## The allowlist
//!
//! [`EgressPolicy::allow`] opens a CIDR (tests allow `127.0.0.1/32` for a
//! local receiver; an operator may allow the private network of an
//! internal receiver). It is matched against the address as given (after
//! IPv4-mapped addresses become IPv4). For the forms that carry an IPv4
//! which some box will translate to (NAT64, 6to4, IPv4-compatible,
//! Teredo), allowing the IPv6 address is not enough when the embedded
//! IPv4 is refused: that IPv4 must be allowed too. Otherwise allowing
//! `64:ff9b::/96` (so an IPv6-only relay can reach IPv4 webhooks through
//! its NAT64) would also open `64:ff9b::169.254.169.254`, and allowing
//! `127.0.0.1/32` does not open `64:ff9b::127.0.0.1` (a different host:
//! the translator's loopback). Allowed addresses are opened by address
//! only: `localhost` stays refused by name (use `127.0.0.1`).
//!
//! # What the HTTP client must do
//!
//! 1. Run [`EgressPolicy::check_url`] and from then on use only the
//!    returned [`EgressUrl`] (its normalized URL, host and port), never the
//!    string the tenant typed.
//! 2. Resolve a domain host itself, and run [`EgressPolicy::check_ip`] on
//!    *every* resolved address ([`EgressPolicy::check_resolved`]): one
//!    refused address refuses the delivery, so a name that points inside
//!    at all is not delivered to.
//! 3. Connect to the checked address (pin it: a resolver override or a
//!    connector that takes the `SocketAddr`), never resolve the name again
//!    (DNS rebinding), and keep the name for SNI and `Host`.
//! 4. Never follow redirects (a `302` to `http://169.254.169.254/` is the
//!    classic bypass); a redirect is the delivery's result.
//! 5. Use no proxy from the environment (`HTTP_PROXY`), which would
//!    connect on the relay's behalf to whatever the URL names.
//!
//! Refusals carry a stable class ([`EgressError::class`], for example
//! `ssrf_loopback`) that the worker records as the dead letter's error
//! class.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use url::{Host, Url};

/// The longest URL accepted, in bytes (the input and its normalized form).
pub const MAX_URL_LEN: usize = 2048;

/// Why an address is refused: the kind of address it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressClass {
    /// `0.0.0.0/8` ("this network") or `::`.
    Unspecified,
    /// `127/8` or `::1`.
    Loopback,
    /// RFC 1918: `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// Carrier-grade NAT, `100.64/10`.
    Cgnat,
    /// `169.254/16` or `fe80::/10`.
    LinkLocal,
    /// A cloud metadata or host-agent service (see the module docs).
    Metadata,
    /// IETF protocol assignments: `192.0.0.0/24`, `2001::/23`.
    ProtocolAssignment,
    /// Benchmarking, `198.18/15`.
    Benchmarking,
    /// Documentation: `192.0.2/24`, `198.51.100/24`, `203.0.113/24`,
    /// `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `224/4` or `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Reserved or unallocated: `240/4`, `192.88.99/24`, IPv6 outside
    /// `2000::/3` (IPv4-compatible addresses of public IPv4s included).
    Reserved,
    /// Unique local IPv6, `fc00::/7`.
    UniqueLocal,
    /// Deprecated site-local IPv6, `fec0::/10`.
    SiteLocal,
    /// The IPv6 discard prefix, `100::/64`.
    Discard,
    /// Teredo, `2001::/32`.
    Teredo,
    /// An IPv6 address that carries a refused IPv4 address, which a
    /// translator or tunnel would deliver to.
    EmbeddedIpv4 {
        /// How the IPv4 address is carried.
        via: Ipv4Embedding,
        /// The class of the IPv4 address.
        inner: Box<AddressClass>,
    },
}

/// How an IPv6 address carries an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ipv4Embedding {
    /// IPv4-compatible `::a.b.c.d` (deprecated).
    Compatible,
    /// NAT64, the well-known prefix `64:ff9b::/96`.
    Nat64,
    /// NAT64, the local-use prefix `64:ff9b:1::/48` (last 32 bits).
    LocalNat64,
    /// 6to4, `2002::/16` (bits 16..48).
    SixToFour,
    /// Teredo, `2001::/32` (the client, bitwise NOT of the last 32 bits).
    Teredo,
}

impl AddressClass {
    /// The stable error class, `ssrf_` and the kind, for example
    /// `ssrf_loopback` or `ssrf_embedded_metadata`: 1–64 characters of
    /// `a-z 0-9 _`, a valid [`crate::queue::ErrorClass`].
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unspecified => "ssrf_unspecified",
            Self::Loopback => "ssrf_loopback",
            Self::Private => "ssrf_private",
            Self::Cgnat => "ssrf_cgnat",
            Self::LinkLocal => "ssrf_link_local",
            Self::Metadata => "ssrf_metadata",
            Self::ProtocolAssignment => "ssrf_protocol_assignment",
            Self::Benchmarking => "ssrf_benchmarking",
            Self::Documentation => "ssrf_documentation",
            Self::Multicast => "ssrf_multicast",
            Self::Broadcast => "ssrf_broadcast",
            Self::Reserved => "ssrf_reserved",
            Self::UniqueLocal => "ssrf_unique_local",
            Self::SiteLocal => "ssrf_site_local",
            Self::Discard => "ssrf_discard",
            Self::Teredo => "ssrf_teredo",
            Self::EmbeddedIpv4 { inner, .. } => match **inner {
                Self::Unspecified => "ssrf_embedded_unspecified",
                Self::Loopback => "ssrf_embedded_loopback",
                Self::Private => "ssrf_embedded_private",
                Self::Cgnat => "ssrf_embedded_cgnat",
                Self::LinkLocal => "ssrf_embedded_link_local",
                Self::Metadata => "ssrf_embedded_metadata",
                Self::ProtocolAssignment => "ssrf_embedded_protocol_assignment",
                Self::Benchmarking => "ssrf_embedded_benchmarking",
                Self::Documentation => "ssrf_embedded_documentation",
                Self::Multicast => "ssrf_embedded_multicast",
                Self::Broadcast => "ssrf_embedded_broadcast",
                Self::Reserved => "ssrf_embedded_reserved",
                // Not IPv4 classes: never built.
                _ => "ssrf_embedded",
            },
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a URL or an address is refused. Never contains the URL's user info.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// Longer than [`MAX_URL_LEN`] bytes, as given or once normalized.
    #[error("url is {len} bytes, more than {max}")]
    TooLong {
        /// The length.
        len: usize,
        /// The limit, [`MAX_URL_LEN`].
        max: usize,
    },
    /// A relative URL.
    #[error("url is not absolute")]
    NotAbsolute,
    /// Not a URL, or one with whitespace or control characters.
    #[error("malformed url: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// A scheme other than `https` (or `http`, when allowed).
    #[error("scheme `{scheme}` is not allowed")]
    SchemeNotAllowed {
        /// The scheme, lowercase.
        scheme: String,
    },
    /// The URL has user info (`user:pass@`); credentials belong in the
    /// target's auth.
    #[error("url carries user info (user:password@); put credentials in the target's auth")]
    UserInfo,
    /// The URL has no host.
    #[error("url has no host")]
    NoHost,
    /// The host names the local machine (`localhost` and its kin).
    #[error("host `{host}` names the local machine")]
    LocalName {
        /// The host, normalized.
        host: String,
    },
    /// The address is not globally routable unicast and not allowed.
    #[error("address {addr} is refused ({class})")]
    Forbidden {
        /// The address, as given.
        addr: IpAddr,
        /// What kind of address it is.
        class: AddressClass,
    },
}

impl EgressError {
    /// The stable error class to record (a valid
    /// [`crate::queue::ErrorClass`]): [`AddressClass::as_str`] for
    /// [`EgressError::Forbidden`], `ssrf_local_name` for
    /// [`EgressError::LocalName`], `url_…` for the rest.
    pub fn class(&self) -> &'static str {
        match self {
            Self::TooLong { .. } => "url_too_long",
            Self::NotAbsolute => "url_not_absolute",
            Self::Malformed { .. } => "url_malformed",
            Self::SchemeNotAllowed { .. } => "url_scheme",
            Self::UserInfo => "url_userinfo",
            Self::NoHost => "url_no_host",
            Self::LocalName { .. } => "ssrf_local_name",
            Self::Forbidden { class, .. } => class.as_str(),
        }
    }
}

/// A URL's host, as checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EgressHost {
    /// A domain name (lowercase, punycode): resolve it and check every
    /// address with [`EgressPolicy::check_resolved`].
    Domain(String),
    /// An IP literal, already checked.
    Ip(IpAddr),
}

/// A URL that passed [`EgressPolicy::check_url`]: normalized, with its host
/// and port. Connect with this, not with the string the tenant typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressUrl {
    url: Url,
    host: EgressHost,
    port: u16,
}

impl EgressUrl {
    /// The normalized URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The normalized URL as text.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The host.
    pub fn host(&self) -> &EgressHost {
        &self.host
    }

    /// The port: the URL's, or 443 for `https` and 80 for `http`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The normalized URL.
    pub fn into_url(self) -> Url {
        self.url
    }
}

/// What the relay may connect to: `https` only and no exceptions by
/// default; `http` and CIDRs of otherwise refused addresses on request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allow_http: bool,
    allowed: Vec<IpNet>,
}

impl EgressPolicy {
    /// Whether `http://` URLs are accepted (default: no).
    #[must_use]
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Opens `net`, otherwise refused (see the module docs for what this
    /// does and does not open). A network inside `::ffff:0:0/96` with a
    /// prefix of 96 or more is stored as the IPv4 network it means.
    #[must_use]
    pub fn allow(mut self, net: IpNet) -> Self {
        let net = match net {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => {
                match v6
                    .network()
                    .to_ipv4_mapped()
                    .and_then(|a| Ipv4Net::new(a, v6.prefix_len().saturating_sub(96)).ok())
                {
                    Some(v4) => IpNet::V4(v4),
                    None => net,
                }
            }
            _ => net,
        };
        self.allowed.push(net.trunc());
        self
    }

    /// Whether `http://` URLs are accepted.
    pub fn http_allowed(&self) -> bool {
        self.allow_http
    }

    /// The allowed networks, as stored.
    pub fn allowlist(&self) -> &[IpNet] {
        &self.allowed
    }

    fn allows(&self, ip: IpAddr) -> bool {
        self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// Checks a delivery URL as the tenant wrote it (see the module docs)
    /// and returns it normalized. An IP literal host is checked with
    /// [`EgressPolicy::check_ip`]; a domain must still be resolved and
    /// checked by the caller.
    pub fn check_url(&self, input: &str) -> Result<EgressUrl, EgressError> {
        if input.len() > MAX_URL_LEN {
            return Err(EgressError::TooLong {
                len: input.len(),
                max: MAX_URL_LEN,
            });
        }
        if input.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(EgressError::Malformed {
                reason: "contains whitespace or control characters".to_owned(),
            });
        }
        let url = Url::parse(input).map_err(|e| match e {
            url::ParseError::RelativeUrlWithoutBase => EgressError::NotAbsolute,
            e => EgressError::Malformed {
                reason: e.to_string(),
            },
        })?;
        if url.as_str().len() > MAX_URL_LEN {
            return Err(EgressError::TooLong {
                len: url.as_str().len(),
                max: MAX_URL_LEN,
            });
        }
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => {
                return Err(EgressError::SchemeNotAllowed {
                    scheme: other.to_owned(),
                });
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EgressError::UserInfo);
        }
        let host = match url.host() {
            None => return Err(EgressError::NoHost),
            Some(Host::Domain(d)) => {
                let bare = d.trim_end_matches('.');
                if bare.is_empty() {
                    return Err(EgressError::NoHost);
                }
                if is_local_name(bare) {
                    return Err(EgressError::LocalName { host: d.to_owned() });
                }
                EgressHost::Domain(d.to_owned())
            }
            Some(Host::Ipv4(a)) => EgressHost::Ip(IpAddr::V4(a)),
            Some(Host::Ipv6(a)) => EgressHost::Ip(IpAddr::V6(a)),
        };
        if let EgressHost::Ip(ip) = host {
            self.check_ip(ip)?;
        }
        let port = url.port_or_known_default().ok_or(EgressError::NoHost)?;
        Ok(EgressUrl { url, host, port })
    }

    /// Checks an address the client is about to connect to: refused if
    /// [`classify`] names it and the allowlist does not open it (for the
    /// IPv6 forms that carry an IPv4, the IPv4 must be public or allowed
    /// as well).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), EgressError> {
        let judged = canonical(ip);
        let Some(class) = classify(judged) else {
            return Ok(());
        };
        if !self.allows(judged) {
            return Err(EgressError::Forbidden { addr: ip, class });
        }
        if let IpAddr::V6(v6) = judged
            && let Some((via, v4)) = embedded_ipv4(v6)
            && let Some(inner) = classify_v4(v4)
            && !self.allows(IpAddr::V4(v4))
        {
            return Err(EgressError::Forbidden {
                addr: ip,
                class: AddressClass::EmbeddedIpv4 {
                    via,
                    inner: Box::new(inner),
                },
            });
        }
        Ok(())
    }

    /// Checks every address a host name resolved to: the first refused
    /// one refuses the lot (a name that points inside at all is not
    /// delivered to). No addresses is not a refusal.
    pub fn check_resolved<I>(&self, addrs: I) -> Result<(), EgressError>
    where
        I: IntoIterator<Item = IpAddr>,
    {
        addrs.into_iter().try_for_each(|ip| self.check_ip(ip))
    }
}

/// Names that always mean this machine (RFC 6761 `localhost` and what
/// common `/etc/hosts` files add), matched without trailing dots.
const LOCAL_NAMES: [&str; 6] = [
    "localhost",
    "localhost.localdomain",
    "localhost4",
    "localhost6",
    "ip6-localhost",
    "ip6-loopback",
];

fn is_local_name(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    LOCAL_NAMES.contains(&host.as_str()) || host.ends_with(".localhost")
}

/// Why `ip` is refused, or `None` for a globally routable unicast address.
/// An IPv4-mapped IPv6 address has its IPv4 address's class.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(a) => classify_v4(a),
        IpAddr::V6(a) => classify_v6(a),
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; anything else unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Metadata services by address (see the module docs).
const METADATA_V4: [Ipv4Addr; 6] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(169, 254, 170, 23),
    Ipv4Addr::new(192, 0, 0, 192),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
];

const METADATA_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
];

/// Refused IPv4 ranges: network, prefix length, class. Disjoint except
/// broadcast inside `240/4`, which comes first.
const V4_RANGES: [(Ipv4Addr, u8, AddressClass); 16] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8, AddressClass::Unspecified),
    (Ipv4Addr::new(10, 0, 0, 0), 8, AddressClass::Private),
    (Ipv4Addr::new(100, 64, 0, 0), 10, AddressClass::Cgnat),
    (Ipv4Addr::new(127, 0, 0, 0), 8, AddressClass::Loopback),
    (Ipv4Addr::new(169, 254, 0, 0), 16, AddressClass::LinkLocal),
    (Ipv4Addr::new(172, 16, 0, 0), 12, AddressClass::Private),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        AddressClass::ProtocolAssignment,
    ),
    (Ipv4Addr::new(192, 0, 2, 0), 24, AddressClass::Documentation),
    (Ipv4Addr::new(192, 88, 99, 0), 24, AddressClass::Reserved),
    (Ipv4Addr::new(192, 168, 0, 0), 16, AddressClass::Private),
    (Ipv4Addr::new(198, 18, 0, 0), 15, AddressClass::Benchmarking),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        AddressClass::Documentation,
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        AddressClass::Documentation,
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, AddressClass::Multicast),
    (
        Ipv4Addr::new(255, 255, 255, 255),
        32,
        AddressClass::Broadcast,
    ),
    (Ipv4Addr::new(240, 0, 0, 0), 4, AddressClass::Reserved),
];

/// Refused IPv6 ranges after the special cases (unspecified, loopback,
/// IPv4 inside, metadata). Most-specific first; outside `2000::/3` is
/// [`AddressClass::Reserved`] after these.
const V6_RANGES: [(Ipv6Addr, u8, AddressClass); 9] = [
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        AddressClass::Discard,
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        32,
        AddressClass::Teredo,
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        AddressClass::ProtocolAssignment,
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        AddressClass::Documentation,
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        AddressClass::Documentation,
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        AddressClass::UniqueLocal,
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        AddressClass::LinkLocal,
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        AddressClass::SiteLocal,
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        AddressClass::Multicast,
    ),
];

fn in_v4(a: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0);
    u32::from(a) & mask == u32::from(net)
}

fn in_v6(a: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0);
    u128::from(a) & mask == u128::from(net)
}

fn classify_v4(a: Ipv4Addr) -> Option<AddressClass> {
    if METADATA_V4.contains(&a) {
        return Some(AddressClass::Metadata);
    }
    V4_RANGES
        .iter()
        .find(|(net, len, _)| in_v4(a, *net, *len))
        .map(|(_, _, class)| class.clone())
}

/// The IPv4 address carried by `a` for the forms a translator or tunnel
/// delivers to (not IPv4-mapped: that one is the IPv4 address itself).
fn embedded_ipv4(a: Ipv6Addr) -> Option<(Ipv4Embedding, Ipv4Addr)> {
    let o = a.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);
    let local_nat64 = Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0);
    let six_to_four = Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0);
    let teredo = Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0);
    if in_v6(a, nat64, 96) {
        Some((Ipv4Embedding::Nat64, last))
    } else if in_v6(a, local_nat64, 48) {
        Some((Ipv4Embedding::LocalNat64, last))
    } else if in_v6(a, six_to_four, 16) {
        Some((
            Ipv4Embedding::SixToFour,
            Ipv4Addr::new(o[2], o[3], o[4], o[5]),
        ))
    } else if in_v6(a, teredo, 32) {
        Some((
            Ipv4Embedding::Teredo,
            Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]),
        ))
    } else if in_v6(a, Ipv6Addr::UNSPECIFIED, 96) && u128::from(a) > 1 {
        Some((Ipv4Embedding::Compatible, last))
    } else {
        None
    }
}

fn classify_v6(a: Ipv6Addr) -> Option<AddressClass> {
    if a == Ipv6Addr::UNSPECIFIED {
        return Some(AddressClass::Unspecified);
    }
    if a == Ipv6Addr::LOCALHOST {
        return Some(AddressClass::Loopback);
    }
    if let Some(v4) = a.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    match embedded_ipv4(a) {
        // Refused whatever the client: see the V6_RANGES entry.
        Some((Ipv4Embedding::Teredo, _)) | None => {}
        Some((via, v4)) => match classify_v4(v4) {
            Some(inner) => {
                return Some(AddressClass::EmbeddedIpv4 {
                    via,
                    inner: Box::new(inner),
                });
            }
            // Deprecated: falls through to Reserved (outside 2000::/3).
            None if via == Ipv4Embedding::Compatible => {}
            None => return None,
        },
    }
    if METADATA_V6.contains(&a) {
        return Some(AddressClass::Metadata);
    }
    if let Some((_, _, class)) = V6_RANGES.iter().find(|(net, len, _)| in_v6(a, *net, *len)) {
        return Some(class.clone());
    }
    if !in_v6(a, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        return Some(AddressClass::Reserved);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use AddressClass as C;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn emb(via: Ipv4Embedding, inner: AddressClass) -> AddressClass {
        AddressClass::EmbeddedIpv4 {
            via,
            inner: Box::new(inner),
        }
    }

    fn v4_in_v6(prefix: [u16; 6], v4: Ipv4Addr) -> Ipv6Addr {
        let o = v4.octets();
        let [a, b, c, d, e, f] = prefix;
        let g = u16::from_be_bytes([o[0], o[1]]);
        let h = u16::from_be_bytes([o[2], o[3]]);
        Ipv6Addr::new(a, b, c, d, e, f, g, h)
    }

    fn nat64(v4: Ipv4Addr) -> Ipv6Addr {
        v4_in_v6([0x64, 0xff9b, 0, 0, 0, 0], v4)
    }

    fn local_nat64(v4: Ipv4Addr) -> Ipv6Addr {
        v4_in_v6([0x64, 0xff9b, 1, 0, 0, 0], v4)
    }

    fn six_to_four(v4: Ipv4Addr) -> Ipv6Addr {
        let o = v4.octets();
        Ipv6Addr::new(
            0x2002,
            u16::from_be_bytes([o[0], o[1]]),
            u16::from_be_bytes([o[2], o[3]]),
            0,
            0,
            0,
            0,
            1,
        )
    }

    fn compatible(v4: Ipv4Addr) -> Ipv6Addr {
        v4_in_v6([0; 6], v4)
    }

    fn teredo(client: Ipv4Addr) -> Ipv6Addr {
        let o = client.octets().map(|b| !b);
        // Server 65.54.227.120, cone flag, port 40000 obfuscated.
        Ipv6Addr::new(
            0x2001,
            0,
            0x4136,
            0xe378,
            0x8000,
            !40000,
            u16::from_be_bytes([o[0], o[1]]),
            u16::from_be_bytes([o[2], o[3]]),
        )
    }

    /// Every range: an address inside, both edges, just outside.
    fn table() -> Vec<(&'static str, Option<AddressClass>)> {
        vec![
            // 0.0.0.0/8
            ("0.0.0.0", Some(C::Unspecified)),
            ("0.1.2.3", Some(C::Unspecified)),
            ("0.255.255.255", Some(C::Unspecified)),
            ("1.0.0.0", None),
            // 10/8
            ("9.255.255.255", None),
            ("10.0.0.0", Some(C::Private)),
            ("10.0.0.1", Some(C::Private)),
            ("10.255.255.255", Some(C::Private)),
            ("11.0.0.0", None),
            // 100.64/10
            ("100.63.255.255", None),
            ("100.64.0.0", Some(C::Cgnat)),
            ("100.100.100.199", Some(C::Cgnat)),
            ("100.100.100.200", Some(C::Metadata)),
            ("100.127.255.255", Some(C::Cgnat)),
            ("100.128.0.0", None),
            // 127/8
            ("126.255.255.255", None),
            ("127.0.0.0", Some(C::Loopback)),
            ("127.0.0.1", Some(C::Loopback)),
            ("127.0.0.2", Some(C::Loopback)),
            ("127.255.255.255", Some(C::Loopback)),
            ("128.0.0.0", None),
            // 169.254/16
            ("169.253.255.255", None),
            ("169.254.0.0", Some(C::LinkLocal)),
            ("169.254.169.253", Some(C::LinkLocal)),
            ("169.254.169.254", Some(C::Metadata)),
            ("169.254.169.255", Some(C::LinkLocal)),
            ("169.254.170.2", Some(C::Metadata)),
            ("169.254.170.23", Some(C::Metadata)),
            ("169.254.255.255", Some(C::LinkLocal)),
            ("169.255.0.0", None),
            // 172.16/12
            ("172.15.255.255", None),
            ("172.16.0.0", Some(C::Private)),
            ("172.20.1.1", Some(C::Private)),
            ("172.31.255.255", Some(C::Private)),
            ("172.32.0.0", None),
            // 192.0.0/24
            ("191.255.255.255", None),
            ("192.0.0.0", Some(C::ProtocolAssignment)),
            ("192.0.0.9", Some(C::ProtocolAssignment)),
            ("192.0.0.192", Some(C::Metadata)),
            ("192.0.0.255", Some(C::ProtocolAssignment)),
            ("192.0.1.0", None),
            // 192.0.2/24
            ("192.0.1.255", None),
            ("192.0.2.0", Some(C::Documentation)),
            ("192.0.2.1", Some(C::Documentation)),
            ("192.0.2.255", Some(C::Documentation)),
            ("192.0.3.0", None),
            // 192.88.99/24
            ("192.88.98.255", None),
            ("192.88.99.0", Some(C::Reserved)),
            ("192.88.99.1", Some(C::Reserved)),
            ("192.88.99.255", Some(C::Reserved)),
            ("192.88.100.0", None),
            // 192.168/16
            ("192.167.255.255", None),
            ("192.168.0.0", Some(C::Private)),
            ("192.168.1.1", Some(C::Private)),
            ("192.168.255.255", Some(C::Private)),
            ("192.169.0.0", None),
            // 198.18/15
            ("198.17.255.255", None),
            ("198.18.0.0", Some(C::Benchmarking)),
            ("198.19.0.1", Some(C::Benchmarking)),
            ("198.19.255.255", Some(C::Benchmarking)),
            ("198.20.0.0", None),
            // 198.51.100/24
            ("198.51.99.255", None),
            ("198.51.100.0", Some(C::Documentation)),
            ("198.51.100.7", Some(C::Documentation)),
            ("198.51.100.255", Some(C::Documentation)),
            ("198.51.101.0", None),
            // 203.0.113/24
            ("203.0.112.255", None),
            ("203.0.113.0", Some(C::Documentation)),
            ("203.0.113.7", Some(C::Documentation)),
            ("203.0.113.255", Some(C::Documentation)),
            ("203.0.114.0", None),
            // 224/4, 240/4, broadcast
            ("223.255.255.255", None),
            ("224.0.0.0", Some(C::Multicast)),
            ("232.1.2.3", Some(C::Multicast)),
            ("239.255.255.255", Some(C::Multicast)),
            ("240.0.0.0", Some(C::Reserved)),
            ("250.1.2.3", Some(C::Reserved)),
            ("255.255.255.254", Some(C::Reserved)),
            ("255.255.255.255", Some(C::Broadcast)),
            // Azure WireServer: public, refused.
            ("168.63.129.15", None),
            ("168.63.129.16", Some(C::Metadata)),
            ("168.63.129.17", None),
            // Public.
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.215.14", None),
            // ::, ::1, IPv4-compatible ::/96
            ("::", Some(C::Unspecified)),
            ("::1", Some(C::Loopback)),
            ("::2", Some(emb(Ipv4Embedding::Compatible, C::Unspecified))),
            (
                "::127.0.0.1",
                Some(emb(Ipv4Embedding::Compatible, C::Loopback)),
            ),
            ("::8.8.8.8", Some(C::Reserved)),
            (
                "::255.255.255.255",
                Some(emb(Ipv4Embedding::Compatible, C::Broadcast)),
            ),
            ("::1:0:0", Some(C::Reserved)),
            // ::ffff:0:0/96: the IPv4 address itself
            ("::fffe:ffff:ffff", Some(C::Reserved)),
            ("::ffff:0.0.0.0", Some(C::Unspecified)),
            ("::ffff:127.0.0.1", Some(C::Loopback)),
            ("::ffff:10.0.0.1", Some(C::Private)),
            ("::ffff:169.254.169.254", Some(C::Metadata)),
            ("::ffff:8.8.8.8", None),
            ("::ffff:255.255.255.255", Some(C::Broadcast)),
            ("::1:0:0:0", Some(C::Reserved)),
            // 64:ff9b::/96
            ("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", Some(C::Reserved)),
            ("64:ff9b::", Some(emb(Ipv4Embedding::Nat64, C::Unspecified))),
            (
                "64:ff9b::127.0.0.1",
                Some(emb(Ipv4Embedding::Nat64, C::Loopback)),
            ),
            ("64:ff9b::8.8.8.8", None),
            (
                "64:ff9b::255.255.255.255",
                Some(emb(Ipv4Embedding::Nat64, C::Broadcast)),
            ),
            ("64:ff9b::1:0:0", Some(C::Reserved)),
            // 64:ff9b:1::/48
            ("64:ff9b:0:ffff:ffff:ffff:ffff:ffff", Some(C::Reserved)),
            (
                "64:ff9b:1::",
                Some(emb(Ipv4Embedding::LocalNat64, C::Unspecified)),
            ),
            (
                "64:ff9b:1::10.0.0.1",
                Some(emb(Ipv4Embedding::LocalNat64, C::Private)),
            ),
            ("64:ff9b:1::8.8.8.8", None),
            ("64:ff9b:1:ffff:ffff:ffff:808:808", None),
            ("64:ff9b:2::", Some(C::Reserved)),
            // 100::/64
            ("ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(C::Reserved)),
            ("100::", Some(C::Discard)),
            ("100::ffff:ffff:ffff:ffff", Some(C::Discard)),
            ("100:0:0:1::", Some(C::Reserved)),
            // 2001::/32 Teredo, 2001::/23
            ("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001::", Some(C::Teredo)),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some(C::Teredo)),
            ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", Some(C::Teredo)),
            ("2001:1::", Some(C::ProtocolAssignment)),
            ("2001:2::1", Some(C::ProtocolAssignment)),
            (
                "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(C::ProtocolAssignment),
            ),
            ("2001:200::", None),
            // 2001:db8::/32
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:db8::", Some(C::Documentation)),
            ("2001:db8::1", Some(C::Documentation)),
            (
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(C::Documentation),
            ),
            ("2001:db9::", None),
            // 2002::/16 6to4
            ("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            (
                "2002::",
                Some(emb(Ipv4Embedding::SixToFour, C::Unspecified)),
            ),
            (
                "2002:7f00:1::1",
                Some(emb(Ipv4Embedding::SixToFour, C::Loopback)),
            ),
            ("2002:808:808::1", None),
            (
                "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(emb(Ipv4Embedding::SixToFour, C::Broadcast)),
            ),
            ("2003::", None),
            // 3fff::/20
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("3fff::", Some(C::Documentation)),
            (
                "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(C::Documentation),
            ),
            ("3fff:1000::", None),
            // 2000::/3 edges
            ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(C::Reserved)),
            ("2000::", None),
            ("4000::", Some(C::Reserved)),
            ("5f00::1", Some(C::Reserved)),
            // fc00::/7
            ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(C::Reserved)),
            ("fc00::", Some(C::UniqueLocal)),
            ("fd00:ec2::253", Some(C::UniqueLocal)),
            ("fd00:ec2::254", Some(C::Metadata)),
            ("fd00:ec2::23", Some(C::Metadata)),
            (
                "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(C::UniqueLocal),
            ),
            ("fe00::", Some(C::Reserved)),
            // fe80::/10, fec0::/10, ff00::/8
            ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(C::Reserved)),
            ("fe80::", Some(C::LinkLocal)),
            ("fe80::1", Some(C::LinkLocal)),
            (
                "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(C::LinkLocal),
            ),
            ("fec0::", Some(C::SiteLocal)),
            (
                "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(C::SiteLocal),
            ),
            ("ff00::", Some(C::Multicast)),
            ("ff02::1", Some(C::Multicast)),
            (
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some(C::Multicast),
            ),
            // Public IPv6.
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001::200e", None),
        ]
    }

    #[test]
    fn every_range_inside_at_its_edges_and_just_outside() {
        let policy = EgressPolicy::default();
        for (addr, want) in &table() {
            let a = ip(addr);
            assert_eq!(classify(a), *want, "{addr}");
            match want {
                None => assert_eq!(policy.check_ip(a), Ok(()), "{addr}"),
                Some(class) => assert_eq!(
                    policy.check_ip(a),
                    Err(EgressError::Forbidden {
                        addr: a,
                        class: class.clone()
                    }),
                    "{addr}"
                ),
            }
        }
    }

    #[test]
    fn ipv4_inside_ipv6_is_judged_by_the_ipv4() {
        let policy = EgressPolicy::default();
        for (v4, class) in [
            ("127.0.0.1", C::Loopback),
            ("10.0.0.1", C::Private),
            ("169.254.169.254", C::Metadata),
        ] {
            let v4: Ipv4Addr = v4.parse().unwrap();
            let mapped = v4.to_ipv6_mapped();
            assert_eq!(classify(mapped.into()), Some(class.clone()), "{mapped}");
            for (via, v6) in [
                (Ipv4Embedding::Nat64, nat64(v4)),
                (Ipv4Embedding::LocalNat64, local_nat64(v4)),
                (Ipv4Embedding::SixToFour, six_to_four(v4)),
                (Ipv4Embedding::Compatible, compatible(v4)),
            ] {
                assert_eq!(classify(v6.into()), Some(emb(via, class.clone())), "{v6}");
            }
            for v6 in [
                mapped,
                nat64(v4),
                local_nat64(v4),
                six_to_four(v4),
                compatible(v4),
                teredo(v4),
            ] {
                assert!(policy.check_ip(v6.into()).is_err(), "{v6}");
            }
        }
        // The public ones pass, except the deprecated forms.
        let public: Ipv4Addr = "8.8.8.8".parse().unwrap();
        for v6 in [
            public.to_ipv6_mapped(),
            nat64(public),
            local_nat64(public),
            six_to_four(public),
        ] {
            assert_eq!(policy.check_ip(v6.into()), Ok(()), "{v6}");
        }
        assert_eq!(classify(compatible(public).into()), Some(C::Reserved));
        assert_eq!(classify(teredo(public).into()), Some(C::Teredo));
    }

    #[test]
    fn forbidden_reports_the_address_as_given() {
        let a = ip("::ffff:127.0.0.1");
        assert_eq!(
            EgressPolicy::default().check_ip(a),
            Err(EgressError::Forbidden {
                addr: a,
                class: C::Loopback
            })
        );
    }

    fn local_receiver() -> EgressPolicy {
        EgressPolicy::default()
            .allow_http(true)
            .allow("127.0.0.1/32".parse().unwrap())
    }

    #[test]
    fn the_allowlist_opens_exactly_its_networks() {
        let policy = local_receiver();
        assert_eq!(policy.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check_ip(ip("::ffff:127.0.0.1")), Ok(()));
        for refused in [
            "127.0.0.2",
            "127.0.0.0",
            "::ffff:127.0.0.2",
            "::1",
            "10.0.0.1",
        ] {
            assert!(policy.check_ip(ip(refused)).is_err(), "{refused}");
        }
        // Not the translated or tunnelled forms: another host's loopback.
        let lo: Ipv4Addr = Ipv4Addr::LOCALHOST;
        for v6 in [nat64(lo), six_to_four(lo), compatible(lo)] {
            assert!(policy.check_ip(v6.into()).is_err(), "{v6}");
        }
        // A private network for an internal receiver.
        let internal = EgressPolicy::default()
            .allow("10.0.0.0/8".parse().unwrap())
            .allow("fd12:3456::/32".parse().unwrap());
        assert_eq!(internal.check_ip(ip("10.1.2.3")), Ok(()));
        assert_eq!(internal.check_ip(ip("fd12:3456::1")), Ok(()));
        assert!(internal.check_ip(ip("fd12:3457::1")).is_err());
        assert!(internal.check_ip(ip("11.0.0.0")).is_ok());
        assert!(internal.check_ip(ip("172.16.0.1")).is_err());
    }

    #[test]
    fn allowing_an_embedding_prefix_does_not_open_refused_ipv4s() {
        let nat = EgressPolicy::default().allow("64:ff9b::/96".parse().unwrap());
        // Public through the NAT64: allowed anyway.
        assert_eq!(
            nat.check_ip(nat64("8.8.8.8".parse().unwrap()).into()),
            Ok(())
        );
        let meta = nat64("169.254.169.254".parse().unwrap());
        assert_eq!(
            nat.check_ip(meta.into()),
            Err(EgressError::Forbidden {
                addr: meta.into(),
                class: emb(Ipv4Embedding::Nat64, C::Metadata)
            })
        );
        // With the IPv4 allowed as well, it opens.
        let both = nat.clone().allow("10.0.0.0/8".parse().unwrap());
        assert_eq!(
            both.check_ip(nat64("10.9.8.7".parse().unwrap()).into()),
            Ok(())
        );
        assert!(
            both.check_ip(nat64("192.168.0.1".parse().unwrap()).into())
                .is_err()
        );

        // 6to4 and IPv4-compatible, the same.
        let six = EgressPolicy::default().allow("2002::/16".parse().unwrap());
        assert!(
            six.check_ip(six_to_four(Ipv4Addr::LOCALHOST).into())
                .is_err()
        );
        let compat = EgressPolicy::default().allow("::/96".parse().unwrap());
        assert!(
            compat
                .check_ip(compatible(Ipv4Addr::LOCALHOST).into())
                .is_err()
        );
        // A public IPv4-compatible address is Reserved, opened by the entry.
        assert_eq!(
            compat.check_ip(compatible("8.8.8.8".parse().unwrap()).into()),
            Ok(())
        );

        // Teredo: allowing it judges the client.
        let ter = EgressPolicy::default().allow("2001::/32".parse().unwrap());
        assert_eq!(
            ter.check_ip(teredo("8.8.8.8".parse().unwrap()).into()),
            Ok(())
        );
        let t = teredo(Ipv4Addr::LOCALHOST);
        assert_eq!(
            ter.check_ip(t.into()),
            Err(EgressError::Forbidden {
                addr: t.into(),
                class: emb(Ipv4Embedding::Teredo, C::Loopback)
            })
        );
        assert!(
            EgressPolicy::default()
                .check_ip(teredo("8.8.8.8".parse().unwrap()).into())
                .is_err()
        );
    }

    #[test]
    fn mapped_allowlist_entries_mean_ipv4() {
        let policy = EgressPolicy::default().allow("::ffff:127.0.0.0/120".parse().unwrap());
        assert_eq!(
            policy.allowlist(),
            &["127.0.0.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(policy.check_ip(ip("127.0.0.9")), Ok(()));
        assert_eq!(policy.check_ip(ip("::ffff:127.0.0.9")), Ok(()));
        assert!(policy.check_ip(ip("127.0.1.0")).is_err());
        // Host bits are dropped; a wide IPv6 entry does not cover mapped
        // addresses (they are IPv4).
        let wide = EgressPolicy::default()
            .allow("10.1.2.3/8".parse().unwrap())
            .allow("::/0".parse().unwrap());
        assert_eq!(wide.allowlist()[0], "10.0.0.0/8".parse::<IpNet>().unwrap());
        assert!(wide.check_ip(ip("::ffff:127.0.0.1")).is_err());
        assert_eq!(wide.check_ip(ip("fc00::1")), Ok(()));
    }

    #[test]
    fn check_resolved_refuses_the_lot_for_one_refused_address() {
        let policy = EgressPolicy::default();
        assert_eq!(
            policy.check_resolved([ip("8.8.8.8"), ip("2606:4700:4700::1111")]),
            Ok(())
        );
        assert_eq!(policy.check_resolved([]), Ok(()));
        assert_eq!(
            policy.check_resolved([ip("8.8.8.8"), ip("10.0.0.1")]),
            Err(EgressError::Forbidden {
                addr: ip("10.0.0.1"),
                class: C::Private
            })
        );
    }

    #[test]
    fn https_urls_are_parsed_and_normalized() {
        let policy = EgressPolicy::default();
        let u = policy.check_url("https://Example.COM/hook?x=1#f").unwrap();
        assert_eq!(u.host(), &EgressHost::Domain("example.com".into()));
        assert_eq!(u.port(), 443);
        assert_eq!(u.as_str(), "https://example.com/hook?x=1#f");
        let u = policy.check_url("HTTPS://example.com:8443").unwrap();
        assert_eq!((u.port(), u.as_str()), (8443, "https://example.com:8443/"));
        let u = policy.check_url("https://8.8.8.8/").unwrap();
        assert_eq!(u.host(), &EgressHost::Ip(ip("8.8.8.8")));
        let u = policy
            .check_url("https://[2606:4700:4700::1111]:9000/x")
            .unwrap();
        assert_eq!(u.host(), &EgressHost::Ip(ip("2606:4700:4700::1111")));
        assert_eq!(u.port(), 9000);
        // IDNA: punycode.
        let u = policy.check_url("https://bücher.example/").unwrap();
        assert_eq!(
            u.host(),
            &EgressHost::Domain("xn--bcher-kva.example".into())
        );
        // WHATWG's backslash: what is returned is what to connect to.
        let u = policy.check_url("https:\\\\example.com\\x").unwrap();
        assert_eq!(u.as_str(), "https://example.com/x");
        assert_eq!(u.clone().into_url(), *u.url());
    }

    #[test]
    fn http_only_when_allowed() {
        assert_eq!(
            EgressPolicy::default().check_url("http://example.com/"),
            Err(EgressError::SchemeNotAllowed {
                scheme: "http".into()
            })
        );
        assert!(!EgressPolicy::default().http_allowed());
        let policy = EgressPolicy::default().allow_http(true);
        assert!(policy.http_allowed());
        let u = policy.check_url("http://example.com/").unwrap();
        assert_eq!(u.port(), 80);
        assert_eq!(
            policy.check_url("https://example.com/").unwrap().port(),
            443
        );
    }

    #[test]
    fn other_schemes_and_relative_urls_are_refused() {
        let policy = EgressPolicy::default().allow_http(true);
        for (url, scheme) in [
            ("ftp://example.com/", "ftp"),
            ("file:///etc/passwd", "file"),
            ("gopher://127.0.0.1:6379/_INFO", "gopher"),
            ("javascript:alert(1)", "javascript"),
            ("data:text/plain,x", "data"),
            ("ws://example.com/", "ws"),
            ("HTTPX://example.com/", "httpx"),
        ] {
            assert_eq!(
                policy.check_url(url),
                Err(EgressError::SchemeNotAllowed {
                    scheme: scheme.into()
                }),
                "{url}"
            );
        }
        for url in [
            "/hook",
            "example.com/hook",
            "//example.com/hook",
            "",
            "?x",
            "#x",
        ] {
            assert_eq!(
                policy.check_url(url),
                Err(EgressError::NotAbsolute),
                "{url}"
            );
        }
    }

    #[test]
    fn user_info_is_refused() {
        for url in [
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "https://:pw@example.com/",
            "https://user:pw@8.8.8.8/",
        ] {
            let err = EgressPolicy::default().check_url(url).unwrap_err();
            assert_eq!(err, EgressError::UserInfo, "{url}");
            assert!(!err.to_string().contains("pw"));
        }
    }

    #[test]
    fn local_names_are_refused() {
        let policy = local_receiver();
        for (url, host) in [
            ("https://localhost/", "localhost"),
            ("https://LOCALHOST./", "localhost."),
            ("https://localhost../", "localhost.."),
            ("https://localhost:8443/", "localhost"),
            ("http://localhost:8080/", "localhost"),
            ("https://api.localhost/", "api.localhost"),
            ("https://a.b.LocalHost./", "a.b.localhost."),
            ("https://localhost.localdomain/", "localhost.localdomain"),
            ("https://ip6-localhost/", "ip6-localhost"),
            ("https://localhost%2e/", "localhost."),
            ("https://\u{24db}ocalhost/", "localhost"),
        ] {
            assert_eq!(
                policy.check_url(url),
                Err(EgressError::LocalName { host: host.into() }),
                "{url}"
            );
        }
        // Names that merely contain it are fine.
        for url in [
            "https://localhost.example.com/",
            "https://mylocalhost/",
            "https://localhostx/",
        ] {
            assert!(policy.check_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn ip_literal_hosts_are_checked_after_normalization() {
        let policy = EgressPolicy::default();
        let lo = ip("127.0.0.1");
        for url in [
            "https://127.0.0.1/",
            "https://127.1/",
            "https://0x7f.1/",
            "https://0x7f000001/",
            "https://2130706433/",
            "https://0177.0.0.1/",
            "https://127.0.0.1./",
            "https://%31%32%37.0.0.1/",
            "https://\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}/",
            "https://127.0.0.1:8443/admin",
        ] {
            assert_eq!(
                policy.check_url(url),
                Err(EgressError::Forbidden {
                    addr: lo,
                    class: C::Loopback
                }),
                "{url}"
            );
        }
        for (url, addr, class) in [
            ("https://[::1]/", "::1", C::Loopback),
            (
                "https://[::ffff:127.0.0.1]/",
                "::ffff:127.0.0.1",
                C::Loopback,
            ),
            ("https://[::ffff:7f00:1]/", "::ffff:127.0.0.1", C::Loopback),
            ("https://0/", "0.0.0.0", C::Unspecified),
            (
                "https://169.254.169.254/latest/meta-data/",
                "169.254.169.254",
                C::Metadata,
            ),
            ("https://[fd00:ec2::254]/", "fd00:ec2::254", C::Metadata),
            ("https://10.0.0.1/", "10.0.0.1", C::Private),
            (
                "https://[64:ff9b::a9fe:a9fe]/",
                "64:ff9b::169.254.169.254",
                emb(Ipv4Embedding::Nat64, C::Metadata),
            ),
        ] {
            assert_eq!(
                policy.check_url(url),
                Err(EgressError::Forbidden {
                    addr: ip(addr),
                    class
                }),
                "{url}"
            );
        }
    }

    #[test]
    fn the_local_receiver_of_the_tests_is_reachable() {
        let policy = local_receiver();
        let u = policy.check_url("http://127.0.0.1:8080/hook").unwrap();
        assert_eq!(u.host(), &EgressHost::Ip(ip("127.0.0.1")));
        assert_eq!(u.port(), 8080);
        assert!(policy.check_url("http://127.1:8080/hook").is_ok());
        assert!(policy.check_url("http://127.0.0.2:8080/hook").is_err());
        assert!(policy.check_url("http://[::1]:8080/hook").is_err());
    }

    #[test]
    fn malformed_urls_are_refused() {
        let policy = EgressPolicy::default();
        for url in [
            "https://",
            "https:///",
            "https://exa mple.com/",
            " https://example.com/",
            "https://example.com/\n",
            "https://exa\tmple.com/",
            "https://example.com/\r\nHost: evil",
            "https://[fe80::1%25eth0]/",
            "https://[::1/",
            "https://1.2.3.4.5/",
            "https://256.0.0.1/",
            "https://example.com:99999/",
            "https://exa<mple.com/",
        ] {
            assert!(
                matches!(policy.check_url(url), Err(EgressError::Malformed { .. })),
                "{url}: {:?}",
                policy.check_url(url)
            );
        }
    }

    #[test]
    fn long_urls_are_refused() {
        let policy = EgressPolicy::default();
        let base = "https://example.com/";
        let fits = format!("{base}{}", "a".repeat(MAX_URL_LEN - base.len()));
        assert_eq!(policy.check_url(&fits).unwrap().as_str().len(), MAX_URL_LEN);
        let long = format!("{fits}a");
        assert_eq!(
            policy.check_url(&long),
            Err(EgressError::TooLong {
                len: MAX_URL_LEN + 1,
                max: MAX_URL_LEN
            })
        );
        // Short as typed, long once percent-encoded.
        let grows = format!("{base}{}", "é".repeat(1000));
        assert!(grows.len() <= MAX_URL_LEN);
        assert!(matches!(
            policy.check_url(&grows),
            Err(EgressError::TooLong { .. })
        ));
    }

    #[test]
    fn error_classes_are_stable_valid_and_distinct() {
        use std::collections::HashSet;
        let mut classes: Vec<AddressClass> = vec![
            C::Unspecified,
            C::Loopback,
            C::Private,
            C::Cgnat,
            C::LinkLocal,
            C::Metadata,
            C::ProtocolAssignment,
            C::Benchmarking,
            C::Documentation,
            C::Multicast,
            C::Broadcast,
            C::Reserved,
            C::UniqueLocal,
            C::SiteLocal,
            C::Discard,
            C::Teredo,
        ];
        let v4_classes = classes[..12].to_vec();
        for inner in v4_classes {
            classes.push(emb(Ipv4Embedding::Nat64, inner));
        }
        let mut seen = HashSet::new();
        for class in &classes {
            let s = class.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert_eq!(crate::queue::ErrorClass::new(s).unwrap().as_str(), s);
            assert_eq!(class.to_string(), s);
        }
        assert_eq!(C::Loopback.as_str(), "ssrf_loopback");
        assert_eq!(
            emb(Ipv4Embedding::SixToFour, C::Metadata).as_str(),
            "ssrf_embedded_metadata"
        );
        let errors = [
            EgressError::TooLong { len: 1, max: 0 },
            EgressError::NotAbsolute,
            EgressError::Malformed {
                reason: String::new(),
            },
            EgressError::SchemeNotAllowed {
                scheme: "ftp".into(),
            },
            EgressError::UserInfo,
            EgressError::NoHost,
            EgressError::LocalName {
                host: "localhost".into(),
            },
        ];
        for e in &errors {
            let s = e.class();
            assert!(seen.insert(s), "{s} twice");
            assert!(crate::queue::ErrorClass::new(s).is_ok(), "{s}");
        }
        let f = EgressError::Forbidden {
            addr: ip("::1"),
            class: C::Loopback,
        };
        assert_eq!(f.class(), "ssrf_loopback");
        assert_eq!(f.to_string(), "address ::1 is refused (ssrf_loopback)");
    }

    /// Addresses in and around the special ranges, and anywhere.
    fn any_v4() -> impl Strategy<Value = Ipv4Addr> {
        let bases: Vec<(u32, u32)> = V4_RANGES
            .iter()
            .map(|(net, len, _)| (u32::from(*net), u32::from(*len)))
            .collect();
        prop_oneof![
            any::<u32>().prop_map(Ipv4Addr::from),
            (proptest::sample::select(bases), any::<u32>()).prop_map(|((net, len), host)| {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                // Inside, or one off either end.
                Ipv4Addr::from(
                    (net | (host & !mask))
                        .wrapping_add(host % 3)
                        .wrapping_sub(1),
                )
            }),
        ]
    }

    fn any_v6() -> impl Strategy<Value = Ipv6Addr> {
        let bases: Vec<(u128, u32)> = V6_RANGES
            .iter()
            .map(|(net, len, _)| (u128::from(*net), u32::from(*len)))
            .chain([
                (
                    u128::from(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0)),
                    96,
                ),
                (
                    u128::from(Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0)),
                    48,
                ),
                (u128::from(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0)), 16),
                (0xffff_0000_0000, 96),
                (0, 96),
                (u128::from(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0)), 3),
            ])
            .collect();
        prop_oneof![
            any::<u128>().prop_map(Ipv6Addr::from),
            (proptest::sample::select(bases), any::<u128>()).prop_map(|((net, len), host)| {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                Ipv6Addr::from(
                    (net | (host & !mask))
                        .wrapping_add(host % 3)
                        .wrapping_sub(1),
                )
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn mapped_ipv4_is_the_ipv4(v4 in any_v4()) {
            let mapped = v4.to_ipv6_mapped();
            prop_assert_eq!(classify(v4.into()), classify(mapped.into()));
            let policy = EgressPolicy::default();
            prop_assert_eq!(policy.check_ip(v4.into()).is_ok(), policy.check_ip(mapped.into()).is_ok());
            let local = local_receiver();
            prop_assert_eq!(local.check_ip(v4.into()).is_ok(), local.check_ip(mapped.into()).is_ok());
        }

        #[test]
        fn translated_ipv4_is_refused_with_the_ipv4(v4 in any_v4()) {
            let refused = classify(v4.into()).is_some();
            for (via, v6) in [
                (Ipv4Embedding::Nat64, nat64(v4)),
                (Ipv4Embedding::LocalNat64, local_nat64(v4)),
                (Ipv4Embedding::SixToFour, six_to_four(v4)),
            ] {
                let class = classify(v6.into());
                prop_assert_eq!(class.is_some(), refused);
                if let Some(inner) = classify(v4.into()) {
                    prop_assert_eq!(class, Some(emb(via, inner)));
                }
            }
            prop_assert!(classify(compatible(v4).into()).is_some());
            prop_assert!(classify(teredo(v4).into()).is_some());
        }

        #[test]
        fn std_refusals_are_refused_v4(a in any_v4()) {
            let class = classify(a.into());
            prop_assert_eq!(a.is_private(), class == Some(C::Private));
            prop_assert_eq!(a.is_loopback(), class == Some(C::Loopback));
            prop_assert_eq!(a.is_multicast(), class == Some(C::Multicast));
            prop_assert_eq!(a.is_broadcast(), class == Some(C::Broadcast));
            prop_assert_eq!(a.is_documentation(), class == Some(C::Documentation));
            if a.is_link_local() {
                prop_assert!(matches!(class, Some(C::LinkLocal | C::Metadata)));
            }
            if a.is_unspecified() {
                prop_assert_eq!(class, Some(C::Unspecified));
            }
        }

        #[test]
        fn std_refusals_are_refused_v6(a in any_v6()) {
            let class = classify(a.into());
            if a.is_loopback() {
                prop_assert_eq!(&class, &Some(C::Loopback));
            }
            if a.is_unspecified() {
                prop_assert_eq!(&class, &Some(C::Unspecified));
            }
            if a.is_multicast() {
                prop_assert_eq!(&class, &Some(C::Multicast));
            }
            if a.is_unique_local() {
                prop_assert!(matches!(class, Some(C::UniqueLocal | C::Metadata)));
            }
            if a.is_unicast_link_local() {
                prop_assert_eq!(&class, &Some(C::LinkLocal));
            }
            // Public IPv6 is global unicast space.
            if class.is_none() {
                prop_assert!(a.to_ipv4_mapped().is_some()
                    || a.segments()[0] & 0xe000 == 0x2000
                    || a.segments()[..2] == [0x64, 0xff9b]);
            }
        }

        #[test]
        fn check_ip_never_panics_and_agrees_with_classify(a in any_v6(), b in any_v4()) {
            for ip in [IpAddr::V6(a), IpAddr::V4(b)] {
                prop_assert_eq!(EgressPolicy::default().check_ip(ip).is_ok(), classify(ip).is_none());
                let _ = local_receiver().check_ip(ip);
            }
        }

        #[test]
        fn check_url_never_panics(s in ".{0,64}") {
            let _ = EgressPolicy::default().check_url(&s);
            let _ = local_receiver().check_url(&s);
        }

        #[test]
        fn check_url_accepts_only_what_it_promises(
            scheme in "(https?|HTTPS|ftp|file|)",
            sep in "(://|:/|:|:\\\\\\\\|///)",
            user in "([a-z:]{0,4}@)?",
            host in "[a-zA-Z0-9.%:\\[\\]x_-]{0,24}",
            port in "(:[0-9]{0,6})?",
            rest in "[/?#a-z%.\\\\]{0,12}",
        ) {
            let input = format!("{scheme}{sep}{user}{host}{port}{rest}");
            let policy = local_receiver();
            if let Ok(u) = policy.check_url(&input) {
                prop_assert!(matches!(u.url().scheme(), "https" | "http"));
                prop_assert!(u.url().username().is_empty() && u.url().password().is_none());
                prop_assert!(u.as_str().len() <= MAX_URL_LEN);
                prop_assert_eq!(Some(u.port()), u.url().port_or_known_default());
                match u.host() {
                    EgressHost::Ip(ip) => prop_assert_eq!(policy.check_ip(*ip), Ok(())),
                    EgressHost::Domain(d) => {
                        prop_assert!(!is_local_name(d.trim_end_matches('.')));
                        prop_assert!(d.parse::<IpAddr>().is_err());
                    }
                }
            }
        }
    }

    /// Every IPv4 class reached through an IPv6 embedding has its own
    /// error class, `ssrf_embedded_` and the IPv4 class's kind, whatever
    /// the embedding.
    #[test]
    fn embedded_classes_name_their_ipv4_class() {
        let v4_classes = [
            C::Unspecified,
            C::Loopback,
            C::Private,
            C::Cgnat,
            C::LinkLocal,
            C::Metadata,
            C::ProtocolAssignment,
            C::Benchmarking,
            C::Documentation,
            C::Multicast,
            C::Broadcast,
            C::Reserved,
        ];
        let mut seen = std::collections::BTreeSet::new();
        for via in [
            Ipv4Embedding::Compatible,
            Ipv4Embedding::Nat64,
            Ipv4Embedding::LocalNat64,
            Ipv4Embedding::SixToFour,
            Ipv4Embedding::Teredo,
        ] {
            for c in &v4_classes {
                let kind = c.as_str().strip_prefix("ssrf_").unwrap();
                let name = emb(via, c.clone()).as_str();
                assert_eq!(name, format!("ssrf_embedded_{kind}"), "{c:?} via {via:?}");
                seen.insert(name);
            }
        }
        assert_eq!(seen.len(), v4_classes.len());
        assert_eq!(
            emb(Ipv4Embedding::Nat64, C::Teredo).as_str(),
            "ssrf_embedded"
        );
    }

    /// Allowing the Teredo prefix opens a Teredo address only when the
    /// client IPv4 it carries (stored inverted) is public or allowed too:
    /// each of the four bytes is read back as it was written.
    #[test]
    fn an_allowed_teredo_address_still_needs_its_client_public_or_allowed() {
        let p = EgressPolicy::default().allow("2001::/32".parse().unwrap());
        for (client, inner) in [
            (Ipv4Addr::new(169, 254, 169, 254), C::Metadata),
            (Ipv4Addr::new(127, 0, 0, 1), C::Loopback),
            (Ipv4Addr::new(10, 1, 2, 3), C::Private),
        ] {
            let addr = IpAddr::V6(teredo(client));
            assert_eq!(
                p.check_ip(addr),
                Err(EgressError::Forbidden {
                    addr,
                    class: emb(Ipv4Embedding::Teredo, inner),
                }),
                "{client}"
            );
        }
        assert_eq!(
            p.check_ip(IpAddr::V6(teredo(Ipv4Addr::new(8, 8, 4, 4)))),
            Ok(())
        );
        let both = p.allow("169.254.169.254/32".parse().unwrap());
        assert_eq!(
            both.check_ip(IpAddr::V6(teredo(Ipv4Addr::new(169, 254, 169, 254)))),
            Ok(())
        );
    }

    /// `::1` opened by the allowlist is opened: it is the loopback, not
    /// an IPv4-compatible form of 0.0.0.1.
    #[test]
    fn an_allowed_ipv6_loopback_is_open() {
        let p = EgressPolicy::default().allow("::1/128".parse().unwrap());
        assert_eq!(p.check_ip(ip("::1")), Ok(()));
        assert!(EgressPolicy::default().check_ip(ip("::1")).is_err());
        assert!(p.check_ip(ip("::2")).is_err());
    }
}
