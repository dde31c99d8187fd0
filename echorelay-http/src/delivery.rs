//! The relay's delivery client: [`HttpTransport`], core's
//! [`Transport`] over HTTP/1.1, with the SSRF guard of
//! [`echorelay::core::egress`].
//!
//! Every attempt:
//!
//! 1. checks the URL ([`EgressPolicy::check_url`]: `https` unless the
//!    operator allows `http`, no user info, no local names);
//! 2. resolves the host itself (a [`Resolve`]r: the system's by default, a
//!    table in tests) and checks **every** address it got
//!    ([`EgressPolicy::check_resolved`]): one internal address refuses the
//!    delivery;
//! 3. connects to one of the addresses it checked, so a DNS answer that
//!    changes between the check and the connection (rebinding) changes
//!    nothing; TLS (rustls, the Mozilla roots of `webpki-roots`) verifies
//!    the certificate for the host name of the URL;
//! 4. sends one request on a new connection (no pool: a connection is
//!    never reused for a host it was not checked for), and reads the
//!    status, `Retry-After` and at most `excerpt` bytes of the body; the
//!    rest is never read (a target that answers a gigabyte costs
//!    nothing). Redirects are answers like any other: never followed.
//!
//! The whole exchange, connection included, is bounded by the request's
//! timeout. Environment proxy settings are ignored.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use echorelay::core::egress::{EgressHost, EgressPolicy};
use echorelay::core::relay::{OutboundRequest, OutboundResponse, Transport, TransportError};
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use secrecy::ExposeSecret;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Resolves a host name to addresses.
#[async_trait]
pub trait Resolve: Send + Sync {
    /// Every address of `host`.
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>>;
}

/// The system's resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host, port))
            .await?
            .map(|a| a.ip())
            .collect())
    }
}

/// A fixed table of names, for tests (a name that resolves to an internal
/// address, without a DNS server).
#[derive(Debug, Clone, Default)]
pub struct StaticResolver(Vec<(String, Vec<IpAddr>)>);

impl StaticResolver {
    /// Adds `host` → `addrs`.
    #[must_use]
    pub fn with(mut self, host: &str, addrs: &[IpAddr]) -> Self {
        self.0.push((host.to_ascii_lowercase(), addrs.to_vec()));
        self
    }
}

#[async_trait]
impl Resolve for StaticResolver {
    async fn resolve(&self, host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
        self.0
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(host))
            .map(|(_, a)| a.clone())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "unknown host"))
    }
}

/// Core's [`Transport`] over HTTP/1.1 with the SSRF guard; see the module
/// docs.
#[derive(Clone)]
pub struct HttpTransport {
    policy: EgressPolicy,
    resolver: Arc<dyn Resolve>,
    tls: TlsConnector,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A client under `policy`, resolving with the system's resolver and
    /// trusting the Mozilla root certificates.
    ///
    /// # Errors
    /// [`TransportError::Tls`] if rustls cannot be set up.
    pub fn new(policy: EgressPolicy) -> Result<Self, TransportError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::with_roots(policy, roots)
    }

    /// A client trusting `roots` instead (a private CA; tests).
    ///
    /// # Errors
    /// As [`HttpTransport::new`].
    pub fn with_roots(policy: EgressPolicy, roots: RootCertStore) -> Result<Self, TransportError> {
        // The ring provider explicitly: the process may link others.
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            policy,
            resolver: Arc::new(SystemResolver),
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Resolves with `resolver` instead of the system's.
    #[must_use]
    pub fn resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = resolver;
        self
    }

    /// The egress policy.
    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }
}

fn protocol(e: impl std::fmt::Display) -> TransportError {
    TransportError::Protocol(e.to_string())
}

/// `Retry-After` as seconds or an HTTP date, relative to now; `None` if
/// absent or unreadable.
fn retry_after(v: Option<&HeaderValue>) -> Option<Duration> {
    let text = v?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[async_trait]
impl Transport for HttpTransport {
    async fn post(&self, request: OutboundRequest) -> Result<OutboundResponse, TransportError> {
        let url = self.policy.check_url(&request.url)?;
        let port = url.port();
        let timeout = request.timeout;
        let exchange = async {
            let addrs = match url.host() {
                EgressHost::Ip(ip) => vec![*ip],
                EgressHost::Domain(name) => {
                    let found = self
                        .resolver
                        .resolve(name, port)
                        .await
                        .map_err(|_| TransportError::Dns)?;
                    if found.is_empty() {
                        return Err(TransportError::Dns);
                    }
                    found
                }
            };
            self.policy.check_resolved(addrs.iter().copied())?;
            let addr = SocketAddr::new(addrs[0], port);
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(|e| TransportError::Connect(e.kind().to_string()))?;
            let _ = tcp.set_nodelay(true);
            let host = url.url().host_str().unwrap_or_default().to_owned();
            if url.url().scheme() == "https" {
                let name = ServerName::try_from(
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                )
                .map_err(|e| TransportError::Tls(e.to_string()))?;
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| TransportError::Tls(e.to_string()))?;
                exchange(TokioIo::new(tls), &url, &host, request).await
            } else {
                exchange(TokioIo::new(tcp), &url, &host, request).await
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| TransportError::Timeout)?
    }
}

async fn exchange<IO>(
    io: IO,
    url: &echorelay::core::egress::EgressUrl,
    host: &str,
    request: OutboundRequest,
) -> Result<OutboundResponse, TransportError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| TransportError::Connect(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let u = url.url();
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    };
    let authority = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let mut builder = hyper::Request::post(path).header(header::HOST, authority);
    for (name, value) in &request.headers {
        builder = builder.header(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).map_err(protocol)?,
        );
    }
    if let Some(auth) = &request.authorization {
        let mut v = HeaderValue::from_str(auth.expose_secret())
            .map_err(|_| TransportError::Protocol("unusable credentials".into()))?;
        v.set_sensitive(true);
        builder = builder.header(header::AUTHORIZATION, v);
    }
    let req = builder
        .body(Full::new(Bytes::from(request.body)))
        .map_err(protocol)?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| TransportError::Connect(e.to_string()))?;
    let status = res.status().as_u16();
    let retry_after = retry_after(res.headers().get(header::RETRY_AFTER));
    let mut body = res.into_body();
    let mut excerpt = Vec::new();
    while excerpt.len() < request.excerpt {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = request.excerpt - excerpt.len();
                    excerpt.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    // The rest of the body is never read: dropping the connection ends it.
    driver.abort();
    Ok(OutboundResponse {
        status,
        retry_after,
        excerpt,
    })
}
