//! The delivery client (`echorelay_http::delivery::HttpTransport`) against
//! real sockets: TLS to a receiver whose certificate names the URL's host,
//! the SSRF guard (loopback, metadata, `[::1]`, a name that resolves to a
//! private address, a redirect to loopback), a hanging receiver and one
//! that answers far more than the excerpt, and the kept-alive connections
//! (reused only for the host and the address just checked, closed when
//! their answer was not read to the end) (issue 19).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use echorelay::core::egress::EgressPolicy;
use echorelay::core::relay::{OutboundRequest, Transport, TransportError};
use echorelay_http::delivery::{HttpTransport, StaticResolver};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

fn request(url: &str) -> OutboundRequest {
    OutboundRequest {
        url: url.to_owned(),
        headers: vec![
            ("webhook-id", "msg_1".to_owned()),
            ("content-type", "application/json".to_owned()),
        ],
        authorization: Some(SecretString::from("Bearer secret-token")),
        body: br#"{"z":1,"a":2}"#.to_vec(),
        timeout: Duration::from_secs(5),
        excerpt: 64,
    }
}

/// A receiver that answers every connection with `answer` (raw HTTP),
/// after reading the request head; records the raw requests.
async fn receiver(answer: &'static [u8]) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut c, _) = l.accept().await.unwrap();
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = c.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                // Read the body too (Content-Length) before answering.
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Ok(n) =
                    tokio::time::timeout(Duration::from_millis(50), c.read(&mut buf)).await
                {
                    got.extend_from_slice(&buf[..n.unwrap_or(0)]);
                }
                s.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&got).into_owned());
                let _ = c.write_all(answer).await;
                let _ = c.shutdown().await;
            });
        }
    });
    (addr, seen)
}

fn local() -> EgressPolicy {
    EgressPolicy::default()
        .allow_http(true)
        .allow("127.0.0.1/32".parse().unwrap())
}

#[tokio::test]
async fn plain_http_to_an_allowed_receiver_sends_everything_and_reads_the_answer() {
    let (addr, seen) = receiver(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").await;
    let t = HttpTransport::new(local()).unwrap();
    let r = t
        .post(request(&format!(
            "http://127.0.0.1:{}/hook?x=1",
            addr.port()
        )))
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    let raw = seen.lock().unwrap()[0].clone();
    assert!(raw.starts_with("POST /hook?x=1 HTTP/1.1\r\n"), "{raw}");
    let lower = raw.to_ascii_lowercase();
    assert!(
        lower.contains("authorization: bearer secret-token"),
        "{raw}"
    );
    assert!(lower.contains("webhook-id: msg_1"));
    assert!(lower.contains(&format!("host: 127.0.0.1:{}", addr.port())));
    assert!(
        raw.ends_with(r#"{"z":1,"a":2}"#),
        "the body byte for byte: {raw}"
    );
}

#[tokio::test]
async fn internal_addresses_are_refused_before_connecting() {
    let t = HttpTransport::new(EgressPolicy::default().allow_http(true))
        .unwrap()
        .resolver(Arc::new(
            StaticResolver::default()
                .with("internal.example.com", &["10.0.0.1".parse().unwrap()])
                .with(
                    "mixed.example.com",
                    &[
                        "93.184.215.14".parse().unwrap(),
                        "127.0.0.1".parse().unwrap(),
                    ],
                ),
        ));
    for (url, class) in [
        ("https://127.0.0.1/", "ssrf_loopback"),
        ("https://169.254.169.254/latest/meta-data", "ssrf_metadata"),
        ("https://[::1]/", "ssrf_loopback"),
        ("https://internal.example.com/", "ssrf_private"),
        ("https://mixed.example.com/", "ssrf_loopback"),
        ("https://localhost/", "ssrf_local_name"),
    ] {
        match t.post(request(url)).await {
            Err(e @ TransportError::Refused(_)) => assert_eq!(e.class(), class, "{url}"),
            other => panic!("{url}: {other:?}"),
        }
    }
    // Without --allow-http, http is refused whatever the address.
    let strict = HttpTransport::new(EgressPolicy::default()).unwrap();
    let e = strict
        .post(request("http://93.184.215.14/"))
        .await
        .unwrap_err();
    assert_eq!(e.class(), "url_scheme");
}

#[tokio::test]
async fn a_redirect_to_loopback_is_an_answer_never_followed() {
    // The receiver is allowed; the loopback address it redirects to
    // (another port) would not be, and is never contacted.
    let (target, hit) = receiver(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    let answer: &'static [u8] = Box::leak(
        format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:{}/\r\nContent-Length: 0\r\n\r\n",
            target.port()
        )
        .into_bytes()
        .into_boxed_slice(),
    );
    let (addr, _) = receiver(answer).await;
    let t = HttpTransport::new(local()).unwrap();
    let r = t
        .post(request(&format!("http://127.0.0.1:{}/", addr.port())))
        .await
        .unwrap();
    assert_eq!(r.status, 302);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(hit.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_hanging_receiver_times_out_and_a_huge_answer_is_read_only_to_the_excerpt() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (c, _) = l.accept().await.unwrap();
            held.push(c);
        }
    });
    let t = HttpTransport::new(local()).unwrap();
    let mut r = request(&format!("http://127.0.0.1:{}/", hang.port()));
    r.timeout = Duration::from_millis(500);
    let started = std::time::Instant::now();
    assert!(matches!(t.post(r).await, Err(TransportError::Timeout)));
    assert!(started.elapsed() < Duration::from_secs(3));

    // 64 MiB announced and streamed: the client stops after the excerpt.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let big = l.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        let (mut c, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = c.read(&mut buf).await;
        let _ = c
            .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 67108864\r\n\r\n")
            .await;
        let chunk = vec![b'x'; 65536];
        for _ in 0..1024 {
            if c.write_all(&chunk).await.is_err() {
                break;
            }
            counter.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    });
    let r = t
        .post(request(&format!("http://127.0.0.1:{}/", big.port())))
        .await
        .unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(r.excerpt.len(), 64);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sent.load(Ordering::Relaxed) < 16 * 1024 * 1024,
        "the client kept reading: {} bytes",
        sent.load(Ordering::Relaxed)
    );
}

/// A TLS receiver for `name` on 127.0.0.1.
async fn tls_receiver(cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> SocketAddr {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der())),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (c, _) = l.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(c).await else {
                    return;
                };
                let mut buf = [0u8; 8192];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_verifies_the_certificate_for_the_urls_host() {
    let cert = rcgen::generate_simple_self_signed(vec!["receiver.example.com".into()]).unwrap();
    let addr = tls_receiver(&cert).await;
    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let policy = EgressPolicy::default().allow("127.0.0.1/32".parse().unwrap());
    let resolver = Arc::new(
        StaticResolver::default()
            .with("receiver.example.com", &[loopback])
            .with("impostor.example.com", &[loopback]),
    );
    let t = HttpTransport::with_roots(policy.clone(), roots)
        .unwrap()
        .resolver(resolver.clone());
    let r = t
        .post(request(&format!(
            "https://receiver.example.com:{}/in",
            addr.port()
        )))
        .await
        .unwrap();
    assert_eq!((r.status, r.excerpt.as_slice()), (200, &b"ok"[..]));
    // The same receiver under another name: the certificate does not
    // match, nothing is sent.
    let e = t
        .post(request(&format!(
            "https://impostor.example.com:{}/in",
            addr.port()
        )))
        .await
        .unwrap_err();
    assert_eq!(e.class(), "tls", "{e}");
    // With the public roots only, the self-signed receiver is refused.
    let public = HttpTransport::new(policy).unwrap().resolver(resolver);
    let e = public
        .post(request(&format!(
            "https://receiver.example.com:{}/in",
            addr.port()
        )))
        .await
        .unwrap_err();
    assert_eq!(e.class(), "tls", "{e}");
}

/// A keep-alive HTTP/1.1 receiver (hyper) on `ip` (port 0: any) answering
/// 200 with `body`; counts the connections it accepted.
async fn keep_alive_receiver(
    ip: &str,
    port: u16,
    body: &'static [u8],
) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (c, _) = l.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(body)),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(c), service)
                    .await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn deliveries_to_one_host_and_address_share_a_kept_alive_connection() {
    let (addr, connections) = keep_alive_receiver("127.0.0.1", 0, b"ok").await;
    let t = HttpTransport::new(local()).unwrap();
    let url = format!("http://127.0.0.1:{}/hook", addr.port());
    for _ in 0..3 {
        let r = t.post(request(&url)).await.unwrap();
        assert_eq!((r.status, r.excerpt.as_slice()), (200, &b"ok"[..]));
        assert_eq!(t.idle_connections(), 1);
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one connection for three deliveries"
    );
    // A clone shares the idle set.
    t.clone().post(request(&url)).await.unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_answer_longer_than_the_excerpt_closes_its_connection() {
    let (addr, connections) = keep_alive_receiver("127.0.0.1", 0, &[b'x'; 65]).await;
    let t = HttpTransport::new(local()).unwrap();
    let url = format!("http://127.0.0.1:{}/hook", addr.port());
    for n in 1..=2 {
        let r = t.post(request(&url)).await.unwrap();
        assert_eq!(r.excerpt.len(), 64, "read up to the excerpt");
        assert_eq!(
            t.idle_connections(),
            0,
            "not kept: its answer was not read to the end"
        );
        assert_eq!(connections.load(Ordering::SeqCst), n);
    }
    // Exactly the excerpt's length is read to the end: kept.
    let (addr, connections) = keep_alive_receiver("127.0.0.1", 0, &[b'x'; 64]).await;
    let url = format!("http://127.0.0.1:{}/hook", addr.port());
    for _ in 0..2 {
        assert_eq!(t.post(request(&url)).await.unwrap().excerpt.len(), 64);
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_target_closed_is_replaced_and_the_delivery_still_goes_out() {
    // The raw receiver answers and closes every connection.
    let (addr, seen) = receiver(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    let t = HttpTransport::new(local()).unwrap();
    let url = format!("http://127.0.0.1:{}/hook", addr.port());
    for _ in 0..3 {
        assert_eq!(t.post(request(&url)).await.unwrap().status, 200);
        // Let the close arrive.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "every delivery reached the receiver"
    );
}

/// A resolver whose answer the test changes.
struct Moving(std::sync::Mutex<IpAddr>);

#[async_trait::async_trait]
impl echorelay_http::delivery::Resolve for Moving {
    async fn resolve(&self, _host: &str, _port: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok(vec![*self.0.lock().unwrap()])
    }
}

#[tokio::test]
async fn a_kept_connection_is_used_only_for_the_address_just_checked() {
    let (a, on_a) = keep_alive_receiver("127.0.0.1", 0, b"a").await;
    let (_, on_b) = keep_alive_receiver("127.0.0.2", a.port(), b"b").await;
    let resolver = Arc::new(Moving(std::sync::Mutex::new("127.0.0.1".parse().unwrap())));
    let policy = EgressPolicy::default()
        .allow_http(true)
        .allow("127.0.0.1/32".parse().unwrap());
    let t = HttpTransport::new(policy)
        .unwrap()
        .resolver(resolver.clone());
    let url = format!("http://hooks.example:{}/hook", a.port());
    assert_eq!(t.post(request(&url)).await.unwrap().excerpt, b"a");
    assert_eq!(t.idle_connections(), 1);
    // The name now resolves to an address the policy refuses: refused,
    // although a connection to the old address is idle.
    *resolver.0.lock().unwrap() = "127.0.0.2".parse().unwrap();
    assert!(matches!(
        t.post(request(&url)).await,
        Err(TransportError::Refused(_))
    ));
    // Allowed, it goes to the new address on a new connection.
    let t2 = HttpTransport::new(
        EgressPolicy::default()
            .allow_http(true)
            .allow("127.0.0.0/8".parse().unwrap()),
    )
    .unwrap()
    .resolver(resolver.clone());
    *resolver.0.lock().unwrap() = "127.0.0.1".parse().unwrap();
    assert_eq!(t2.post(request(&url)).await.unwrap().excerpt, b"a");
    *resolver.0.lock().unwrap() = "127.0.0.2".parse().unwrap();
    assert_eq!(t2.post(request(&url)).await.unwrap().excerpt, b"b");
    assert_eq!(
        (on_a.load(Ordering::SeqCst), on_b.load(Ordering::SeqCst)),
        (2, 1)
    );
    // And another host name at the same address does not share it.
    let other = format!("http://other.example:{}/hook", a.port());
    assert_eq!(t2.post(request(&other)).await.unwrap().excerpt, b"b");
    assert_eq!(on_b.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_its_timeout_and_swept_from_every_host() {
    let (a, on_a) = keep_alive_receiver("127.0.0.1", 0, b"a").await;
    let (b, _) = keep_alive_receiver("127.0.0.1", 0, b"b").await;
    let t = HttpTransport::new(local())
        .unwrap()
        .idle_timeout(Duration::from_millis(200));
    let to_a = format!("http://127.0.0.1:{}/hook", a.port());
    t.post(request(&to_a)).await.unwrap();
    t.post(request(&to_a)).await.unwrap();
    assert_eq!(on_a.load(Ordering::SeqCst), 1, "reused within the timeout");
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Another host's delivery sweeps the expired one away.
    t.post(request(&format!("http://127.0.0.1:{}/hook", b.port())))
        .await
        .unwrap();
    assert_eq!(t.idle_connections(), 1, "only the new one is kept");
    t.post(request(&to_a)).await.unwrap();
    assert_eq!(on_a.load(Ordering::SeqCst), 2, "expired: a new connection");
    tokio::time::sleep(Duration::from_millis(400)).await;
    t.post(request(&to_a)).await.unwrap();
    assert_eq!(
        on_a.load(Ordering::SeqCst),
        3,
        "expired again, without a sweep first"
    );
}

#[tokio::test]
async fn a_sweep_keeps_the_live_connections_of_other_hosts() {
    let (a, _) = keep_alive_receiver("127.0.0.1", 0, b"a").await;
    let (b, _) = keep_alive_receiver("127.0.0.1", 0, b"b").await;
    let (c, _) = keep_alive_receiver("127.0.0.1", 0, b"c").await;
    let t = HttpTransport::new(local())
        .unwrap()
        .idle_timeout(Duration::from_secs(3));
    let url = |p: u16| format!("http://127.0.0.1:{p}/hook");
    // The first put sweeps (nothing yet) and starts the sweep timer.
    t.post(request(&url(a.port()))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    t.post(request(&url(c.port()))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // a's is 3.2 s old (expired), c's 2.2 s (live): the sweep with b's
    // put drops a's only.
    t.post(request(&url(b.port()))).await.unwrap();
    assert_eq!(t.idle_connections(), 2);
}

#[tokio::test]
async fn at_most_max_idle_connections_are_kept_per_host() {
    // A receiver that answers once MAX + 1 requests are in flight, so
    // each has its own connection.
    let n = echorelay_http::delivery::MAX_IDLE_PER_HOST + 1;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    tokio::spawn(async move {
        loop {
            let (c, _) = l.accept().await.unwrap();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let barrier = barrier.clone();
                    async move {
                        barrier.wait().await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(c), service)
                    .await;
            });
        }
    });
    let t = HttpTransport::new(local()).unwrap();
    let url = format!("http://127.0.0.1:{}/hook", addr.port());
    let sends: Vec<_> = (0..n)
        .map(|_| {
            let (t, url) = (t.clone(), url.clone());
            tokio::spawn(async move { t.post(request(&url)).await.unwrap() })
        })
        .collect();
    for s in sends {
        assert_eq!(s.await.unwrap().status, 200);
    }
    assert_eq!(t.idle_connections(), n - 1);
}

#[tokio::test]
async fn an_answer_in_several_frames_is_cut_at_the_excerpt() {
    // Two chunks of 40 bytes: the second is cut to the 24 that fit in 64.
    let (addr, _) = receiver(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          28\r\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\
          28\r\nbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n0\r\n\r\n",
    )
    .await;
    let t = HttpTransport::new(local()).unwrap();
    let r = t
        .post(request(&format!("http://127.0.0.1:{}/hook", addr.port())))
        .await
        .unwrap();
    assert_eq!(r.excerpt, [&[b'a'; 40][..], &[b'b'; 24][..]].concat());
    assert_eq!(t.idle_connections(), 0);
}
