//! What a client sees of a served socket, shared by the tests of
//! `server::serve` in-process (tests/server.rs) and of the binary's
//! `serve` as a process (tests/serve_bin.rs): a certificate and a TLS
//! client that trusts it, requests over hyper's client, and the probes
//! for each limit, each with a generous deadline that only bounds a
//! failing test (nothing here measures speed).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Bounds every wait of a probe: far longer than any timeout under test.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A self-signed certificate for `localhost` and a client that trusts it
/// (and nothing else).
pub struct Tls {
    pub cert_pem: String,
    pub key_pem: String,
    pub connector: TlsConnector,
}

impl Tls {
    pub fn new() -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Tls {
            cert_pem: cert.cert.pem(),
            key_pem: cert.signing_key.serialize_pem(),
            connector: TlsConnector::from(Arc::new(client)),
        }
    }

    pub async fn connect(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        self.connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }
}

/// A keep-alive HTTP/1 client on `io`; its connection task's handle says
/// when the server ended the connection.
pub async fn client<I>(io: I) -> (SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header(header::HOST, "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// GET `path` on the connection: its status and headers.
pub async fn fetch(
    sender: &mut SendRequest<Full<Bytes>>,
    path: &str,
) -> hyper::Result<(StatusCode, HeaderMap)> {
    sender.ready().await?;
    let res = sender.send_request(get(path)).await?;
    let (status, headers) = (res.status(), res.headers().clone());
    // Read to its end: a body dropped half-read ends the connection.
    res.into_body().collect().await?;
    Ok((status, headers))
}

/// One GET on a new plain connection.
pub async fn plain_get(addr: SocketAddr, path: &str) -> StatusCode {
    let (mut sender, _task) = client(TcpStream::connect(addr).await.unwrap()).await;
    fetch(&mut sender, path).await.unwrap().0
}

/// Everything the server sends until it closes the connection; `None` if
/// it was still open at [`DEADLINE`].
pub async fn until_closed<I: AsyncRead + Unpin>(io: &mut I) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| got)
}

pub fn is_http_answer(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes).contains("HTTP/1.")
}

/// A request head sent a few bytes at a time over `over` (past the header
/// timeout under test): the server closes the connection and never
/// answers. Write errors are expected once it has closed.
pub async fn trickled_head_gets_no_answer<I: AsyncRead + AsyncWrite + Unpin>(
    mut io: I,
    over: Duration,
) {
    let head = b"GET /openapi.json HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nUser-Agent: slowloris\r\n\r\n";
    let chunks: Vec<&[u8]> = head.chunks(4).collect();
    let pause = over / u32::try_from(chunks.len()).unwrap();
    for chunk in chunks {
        if io.write_all(chunk).await.is_err() || io.flush().await.is_err() {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    let got = until_closed(&mut io)
        .await
        .expect("the server closes a trickled head's connection");
    assert!(
        !is_http_answer(&got),
        "a trickled head was answered: {got:?}"
    );
}

/// A connection that never sends a ClientHello is closed by the server.
pub async fn silent_tls_connection_is_closed(addr: SocketAddr) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let got = until_closed(&mut tcp)
        .await
        .expect("the server closes a connection without a ClientHello");
    assert!(!is_http_answer(&got), "{got:?}");
}

/// Plaintext HTTP to a TLS port gets no HTTP answer.
pub async fn plaintext_to_tls_gets_no_http_answer(addr: SocketAddr) {
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /openapi.json HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut plain).await.unwrap_or_default();
    assert!(!is_http_answer(&got), "{got:?}");
}

/// A head that arrived, then a body that stalls: the connection is closed
/// by the idle timeout (the header timeout is over once the head is in).
pub async fn stalled_body_is_cut(addr: SocketAddr) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"POST /v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"email\":",
    )
    .await
    .unwrap();
    let got = until_closed(&mut tcp)
        .await
        .expect("the server closes a connection whose body stalls");
    assert!(!is_http_answer(&got), "{got:?}");
}

/// With a cap of `cap` connections, `cap` open keep-alive connections
/// hold every slot: one more is not served until one of them closes.
pub async fn connection_cap_holds(addr: SocketAddr, cap: usize) {
    let mut held = Vec::new();
    for _ in 0..cap {
        let (mut sender, task) = client(TcpStream::connect(addr).await.unwrap()).await;
        assert_eq!(
            fetch(&mut sender, "/openapi.json").await.unwrap().0,
            StatusCode::OK
        );
        held.push((sender, task));
    }
    // The kernel completes the TCP handshake (the backlog); the server
    // does not accept it while every slot is taken.
    let (mut sender, _task) = client(TcpStream::connect(addr).await.unwrap()).await;
    let mut waiting = Box::pin(async move { fetch(&mut sender, "/openapi.json").await });
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), &mut waiting)
            .await
            .is_err(),
        "a connection past the cap was served"
    );
    // One closes: the waiting one is served.
    let (sender, task) = held.remove(0);
    drop(sender);
    let _ = task.await;
    let (status, _) = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    drop(held);
}

/// With at most `max` requests per connection, the `max`th answer says
/// `Connection: close` and the server then ends the connection.
pub async fn requests_per_connection_are_capped(addr: SocketAddr, max: usize) {
    let (mut sender, task) = client(TcpStream::connect(addr).await.unwrap()).await;
    for n in 1..=max {
        let (status, headers) = fetch(&mut sender, "/openapi.json").await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let close = headers
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        assert_eq!(close, n == max, "request {n} of {max}: {headers:?}");
    }
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the connection ends after the last allowed request")
        .unwrap();
    assert!(fetch(&mut sender, "/openapi.json").await.is_err());
}
