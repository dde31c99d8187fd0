//! The one way to serve the router on a socket, plain or TLS: [`serve`]
//! accepts TCP, optionally completes a rustls handshake, and serves each
//! connection with hyper's HTTP/1 connection builder, marking its requests
//! with the peer's address (`ConnectInfo<SocketAddr>`) and, over TLS,
//! [`TlsConnection`].
//!
//! What a client cannot do to it ([`ServerLimits`]):
//!
//! - hold a connection by trickling a request head: the whole head must
//!   arrive within [`header_read_timeout`](ServerLimits::header_read_timeout)
//!   of the server starting to wait for it (slowloris);
//! - hold a TLS connection without finishing the handshake, or without
//!   ever sending a ClientHello: [`tls_handshake_timeout`](ServerLimits::tls_handshake_timeout);
//! - hold a connection on which nothing moves (a stalled body, a response
//!   the client does not read): [`idle_timeout`](ServerLimits::idle_timeout);
//! - keep one connection forever: [`max_requests_per_connection`](ServerLimits::max_requests_per_connection);
//! - exhaust the process's file descriptors with connections:
//!   [`max_connections`](ServerLimits::max_connections).
//!
//! And the accept loop never ends on an accept error (`EMFILE`, `ENFILE`,
//! `ENOBUFS`): it logs, backs off from 10 ms doubling to 1 s, and goes on,
//! so a burst of connections degrades the server instead of stopping it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tower::ServiceExt;

use crate::client::TlsConnection;

/// What one client may hold of the server. [`Default`] is for a server
/// facing the internet; every field is public so a deployment can tune
/// one and keep the rest (`ServerLimits { max_connections: 256,
/// ..Default::default() }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// How long the whole request head (request line and headers) may take
    /// to arrive, counted from when the server starts waiting for it: from
    /// the connection's start (after the TLS handshake), and on a
    /// keep-alive connection from the end of the previous response. So it
    /// is also how long a keep-alive connection may sit idle between
    /// requests. Past it the connection is closed without an answer.
    /// Default 10 s.
    pub header_read_timeout: Duration,
    /// How long a TLS handshake may take from the TCP accept, ClientHello
    /// included. Past it the connection is closed. Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// How long a connection may go without a byte read or written (a
    /// request body that stalls, a client that does not read its
    /// response, a handler that does not answer). Past it the connection
    /// is closed. With the defaults it is longer than the header timeout,
    /// so it matters once a head has arrived. Default 60 s.
    pub idle_timeout: Duration,
    /// How many requests one connection may carry; the answer to the last
    /// one says `Connection: close` and the connection then ends. `None`:
    /// no limit. Default 1000.
    pub max_requests_per_connection: Option<NonZeroUsize>,
    /// How many connections are served at once, TLS handshakes included.
    /// When that many are open the server stops accepting: new
    /// connections wait in the kernel's listen backlog (and are served in
    /// turn as slots free up) rather than being accepted and dropped, so a
    /// burst delays clients instead of failing them, and the process never
    /// holds more sockets than this. Keep it below the file-descriptor
    /// limit (`ulimit -n`). Default 1024.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_requests_per_connection: NonZeroUsize::new(1000),
            max_connections: 1024,
        }
    }
}

/// How [`serve`] serves: TLS or not, and the limits.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Terminate TLS with this configuration (see
    /// [`tls::config_from_pem`](crate::tls::config_from_pem)); `None`
    /// serves plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// What one client may hold.
    pub limits: ServerLimits,
}

/// Why [`serve`] did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A limit is out of range.
    #[error("server limit out of range: {0}")]
    Limit(&'static str),
}

impl ServerLimits {
    /// Checks the ranges: every timeout above zero, at least one
    /// connection and no more than a semaphore holds.
    ///
    /// # Errors
    /// [`ServeError::Limit`] naming the field.
    pub fn validate(&self) -> Result<(), ServeError> {
        if self.header_read_timeout.is_zero() {
            return Err(ServeError::Limit("header_read_timeout must be above zero"));
        }
        if self.tls_handshake_timeout.is_zero() {
            return Err(ServeError::Limit(
                "tls_handshake_timeout must be above zero",
            ));
        }
        if self.idle_timeout.is_zero() {
            return Err(ServeError::Limit("idle_timeout must be above zero"));
        }
        if self.max_connections == 0 || self.max_connections > Semaphore::MAX_PERMITS {
            return Err(ServeError::Limit(
                "max_connections must be at least 1 (and fit a semaphore)",
            ));
        }
        Ok(())
    }
}

/// The first back-off after a failed accept; doubled on each failure in a
/// row up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest back-off after failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting, lets every open connection finish its request in flight
/// (idle keep-alive connections close at once), and returns when the last
/// one has ended.
///
/// An accept error never ends it: errors that concern one connection
/// (reset before it was accepted) are skipped, others (`EMFILE` and the
/// like) are logged and retried after a back-off. A failed TLS handshake
/// closes that connection only.
///
/// # Errors
/// [`ServeError::Limit`] before serving anything when `options.limits` is
/// out of range ([`ServerLimits::validate`]).
pub async fn serve<F>(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send,
{
    let limits = options.limits;
    limits.validate()?;
    let acceptor = options.tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Every connection holds a receiver: the sender's `closed()` is the
    // moment the last connection has ended.
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        // A slot first: at the cap the server stops accepting, and new
        // connections wait in the backlog.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                // The semaphore is never closed.
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_MIN;
                accepted
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::error!(error = %e, retry_in = ?backoff, "accept failed");
                drop(slot);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            connection(tcp, peer, acceptor, app, limits, stopped).await;
            drop(slot);
        });
    }
    drop(listener);
    drop(stopped);
    // Err only when no receiver is left: nothing to tell.
    let _ = stop.send(true);
    stop.closed().await;
    Ok(())
}

/// Accept errors that concern the one connection being accepted: skip it,
/// no back-off (as hyper's and axum's servers do).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// One connection, from the accept to its end.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    limits: ServerLimits,
    mut stopped: watch::Receiver<bool>,
) {
    let activity = Activity::new();
    let io = Watched {
        inner: tcp,
        activity: activity.clone(),
    };
    match acceptor {
        None => serve_http(io, peer, false, app, limits, activity, stopped).await,
        Some(acceptor) => {
            let handshake = tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(io));
            let tls = tokio::select! {
                tls = handshake => tls,
                _ = stopped.changed() => return,
            };
            match tls {
                Ok(Ok(tls)) => serve_http(tls, peer, true, app, limits, activity, stopped).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// HTTP/1 on an established connection (TLS done, if any).
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    tls: bool,
    app: Router,
    limits: ServerLimits,
    activity: Activity,
    mut stopped: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let served = Arc::new(AtomicUsize::new(0));
    let max_requests = limits.max_requests_per_connection;
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        if tls {
            req.extensions_mut().insert(TlsConnection);
        }
        let n = served.fetch_add(1, Ordering::Relaxed) + 1;
        let app = app.clone();
        async move {
            let mut res = match app.oneshot(req).await {
                Ok(res) => res,
                Err(never) => match never {},
            };
            // hyper ends the connection after an answer that says so.
            if max_requests.is_some_and(|max| n >= max.get()) {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(res)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = activity.idle_for(limits.idle_timeout) => {
                tracing::debug!(%peer, "connection idle: closed");
                return;
            }
            changed = stopped.changed(), if !stopping => {
                // A dropped sender is a shutdown too.
                let _ = changed;
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When a connection last moved a byte, in milliseconds since it began.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Completes once no byte has moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A transport that records each byte moved in [`Activity`].
struct Watched<T> {
    inner: T,
    activity: Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
