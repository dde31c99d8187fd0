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
//! 4. sends the request on a kept-alive connection to **that host at that
//!    checked address** if one is idle, else on a new one, and reads the
//!    status, `Retry-After` and at most `excerpt` bytes of the body; the
//!    rest is never read (a target that answers a gigabyte costs
//!    nothing). Redirects are answers like any other: never followed.
//!
//! Keep-alive: a connection goes back to the idle set only when its answer
//! was read to the end within the excerpt (otherwise it is closed), and
//! it is found again only under the same scheme, host name and the
//! address that the new delivery's own resolution just checked, so a
//! connection is never reused for a host, or an address, it was not
//! checked for, and a DNS change takes effect on the next delivery. At
//! most [`MAX_IDLE_PER_HOST`] idle connections per key, each for at most
//! [`IDLE_TIMEOUT`]. A request that an idle connection could not take (the
//! target had closed it) goes out on a new connection; one that was sent
//! and then failed is not sent again here (the queue retries it).
//!
//! The whole exchange, connection included, is bounded by the request's
//! timeout. Environment proxy settings are ignored.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use echorelay::core::egress::{EgressHost, EgressPolicy};
use echorelay::core::relay::{OutboundRequest, OutboundResponse, Transport, TransportError};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::client::conn::http1::SendRequest;
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

/// The most idle kept-alive connections per scheme, host and address.
pub const MAX_IDLE_PER_HOST: usize = 64;

/// How long a connection stays idle before it is closed (below the
/// common servers' own keep-alive timeouts, so the target rarely closes
/// it first).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Where an idle connection may be used again: scheme (`https`?), host
/// name as in the URL (lowercase), and the checked address it is
/// connected to.
type PoolKey = (bool, String, SocketAddr);

type Sender = SendRequest<Full<Bytes>>;

/// Idle kept-alive connections; see the module docs.
struct Pool {
    idle: HashMap<PoolKey, Vec<(Sender, Instant)>>,
    swept: Option<Instant>,
    timeout: Duration,
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            idle: HashMap::new(),
            swept: None,
            timeout: IDLE_TIMEOUT,
        }
    }
}

impl Pool {
    /// An idle connection for `key` that is still open and fresh.
    fn take(&mut self, key: &PoolKey) -> Option<Sender> {
        let list = self.idle.get_mut(key)?;
        let mut found = None;
        while let Some((sender, since)) = list.pop() {
            if !sender.is_closed() && since.elapsed() < self.timeout {
                found = Some(sender);
                break;
            }
        }
        if list.is_empty() {
            self.idle.remove(key);
        }
        found
    }

    /// Keeps `sender` for `key` (unless that key holds the most already),
    /// and once per timeout drops every closed or stale connection.
    fn put(&mut self, key: PoolKey, sender: Sender) {
        let now = Instant::now();
        let timeout = self.timeout;
        if self.swept.is_none_or(|t| now.duration_since(t) >= timeout) {
            self.swept = Some(now);
            self.idle.retain(|_, list| {
                list.retain(|(s, since)| !s.is_closed() && now.duration_since(*since) < timeout);
                !list.is_empty()
            });
        }
        let list = self.idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_HOST {
            list.push((sender, now));
        }
    }

    fn len(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }
}

/// Core's [`Transport`] over HTTP/1.1 with the SSRF guard; see the module
/// docs.
#[derive(Clone)]
pub struct HttpTransport {
    policy: EgressPolicy,
    resolver: Arc<dyn Resolve>,
    tls: TlsConnector,
    pool: Arc<Mutex<Pool>>,
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
            pool: Arc::default(),
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

    /// Closes kept-alive connections after `timeout` idle (default
    /// [`IDLE_TIMEOUT`]; zero keeps none).
    #[must_use]
    pub fn idle_timeout(self, timeout: Duration) -> Self {
        if let Ok(mut p) = self.pool.lock() {
            p.timeout = timeout;
        }
        self
    }

    /// Idle kept-alive connections held now.
    pub fn idle_connections(&self) -> usize {
        self.pool.lock().map_or(0, |p| p.len())
    }

    fn take_idle(&self, key: &PoolKey) -> Option<Sender> {
        self.pool.lock().ok()?.take(key)
    }

    fn put_idle(&self, key: PoolKey, sender: Sender) {
        if let Ok(mut p) = self.pool.lock() {
            p.put(key, sender);
        }
    }

    /// A new connection to `addr` (TLS for `https`, verified for `host`),
    /// its driver spawned.
    async fn connect(&self, key: &PoolKey) -> Result<Sender, TransportError> {
        let (https, host, addr) = key;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| TransportError::Connect(e.kind().to_string()))?;
        let _ = tcp.set_nodelay(true);
        if *https {
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
            handshake(TokioIo::new(tls)).await
        } else {
            handshake(TokioIo::new(tcp)).await
        }
    }
}

/// An HTTP/1.1 connection over `io`; its driver runs until the connection
/// ends (the target closes it, or every handle to it is dropped).
async fn handshake<IO>(io: IO) -> Result<Sender, TransportError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| TransportError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
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
            let host = url
                .url()
                .host_str()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let key: PoolKey = (
                url.url().scheme() == "https",
                host,
                SocketAddr::new(addrs[0], port),
            );
            let excerpt = request.excerpt;
            let mut req = build(&url, &key.1, request)?;
            if let Some(mut idle) = self.take_idle(&key) {
                match idle.try_send_request(req).await {
                    Ok(res) => return self.answer(key, idle, res, excerpt).await,
                    Err(mut e) => match e.take_message() {
                        // Not sent: the target had closed it.
                        Some(back) => req = back,
                        None => return Err(TransportError::Connect(e.into_error().to_string())),
                    },
                }
            }
            let mut sender = self.connect(&key).await?;
            let res = sender
                .send_request(req)
                .await
                .map_err(|e| TransportError::Connect(e.to_string()))?;
            self.answer(key, sender, res, excerpt).await
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| TransportError::Timeout)?
    }
}

impl HttpTransport {
    /// Reads the answer: status, `Retry-After` and at most `excerpt` bytes
    /// of the body. The connection is kept only if the body ended within
    /// that.
    async fn answer(
        &self,
        key: PoolKey,
        sender: Sender,
        res: hyper::Response<hyper::body::Incoming>,
        excerpt: usize,
    ) -> Result<OutboundResponse, TransportError> {
        let status = res.status().as_u16();
        let retry_after = retry_after(res.headers().get(header::RETRY_AFTER));
        let mut body = res.into_body();
        let mut kept = Vec::new();
        let ended = loop {
            if body.is_end_stream() {
                break true;
            }
            if kept.len() >= excerpt {
                break false;
            }
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = excerpt - kept.len();
                        kept.extend_from_slice(&data[..data.len().min(room)]);
                        if data.len() > room {
                            break false;
                        }
                    }
                }
                None => break true,
                Some(Err(_)) => break false,
            }
        };
        if ended {
            self.put_idle(key, sender);
        }
        // Otherwise the rest of the body is never read: dropping the
        // body and the sender closes the connection.
        Ok(OutboundResponse {
            status,
            retry_after,
            excerpt: kept,
        })
    }
}

/// The request for `url` (`host` as the URL names it).
fn build(
    url: &echorelay::core::egress::EgressUrl,
    host: &str,
    request: OutboundRequest,
) -> Result<hyper::Request<Full<Bytes>>, TransportError> {
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
    builder
        .body(Full::new(Bytes::from(request.body)))
        .map_err(protocol)
}
