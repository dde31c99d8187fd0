//! `server::serve` in-process, plain and TLS, with limits small enough
//! for a test: a request head trickled past the header timeout is cut
//! without an answer, a TLS connection that never says ClientHello is
//! closed after the handshake timeout, a stalled body after the idle
//! timeout; the connection cap holds (one more waits until a slot frees);
//! a connection carries at most its allowed requests; shutdown closes idle
//! connections and returns; out-of-range limits are a typed error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod probe;

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use axum::http::{StatusCode, header};
use echorelay::prelude::*;
use echorelay_http::server::{ServeError, ServeOptions, ServerLimits, serve};
use echorelay_http::tls::config_from_pem;
use echorelay_http::{HttpConfig, router};
use probe::*;

const SHORT: Duration = Duration::from_secs(1);

/// Long enough never to be the limit that acts in a test.
const LONG: Duration = Duration::from_secs(60);

fn limits() -> ServerLimits {
    ServerLimits {
        header_read_timeout: LONG,
        tls_handshake_timeout: LONG,
        idle_timeout: LONG,
        max_requests_per_connection: None,
        max_connections: 64,
    }
}

async fn start(limits: ServerLimits, tls: Option<&Tls>) -> SocketAddr {
    let relay = EchoRelay::builder().build().unwrap();
    let (config, tls) = match tls {
        None => (HttpConfig::local(), None),
        Some(t) => (
            HttpConfig::production(),
            Some(config_from_pem(t.cert_pem.as_bytes(), t.key_pem.as_bytes()).unwrap()),
        ),
    };
    let app = router(relay, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = ServeOptions { tls, limits };
    tokio::spawn(serve(listener, app, options, std::future::pending()));
    addr
}

#[tokio::test]
async fn a_trickled_request_head_is_cut_without_an_answer() {
    let header = ServerLimits {
        header_read_timeout: SHORT,
        ..limits()
    };
    let addr = start(header, None).await;
    // The same server answers a head sent at once.
    assert_eq!(plain_get(addr, "/openapi.json").await, StatusCode::OK);
    trickled_head_gets_no_answer(
        tokio::net::TcpStream::connect(addr).await.unwrap(),
        3 * SHORT,
    )
    .await;

    let tls = Tls::new();
    let addr = start(header, Some(&tls)).await;
    trickled_head_gets_no_answer(tls.connect(addr).await.unwrap(), 3 * SHORT).await;
}

#[tokio::test]
async fn a_tls_connection_without_a_client_hello_is_closed() {
    let tls = Tls::new();
    let addr = start(
        ServerLimits {
            tls_handshake_timeout: SHORT,
            ..limits()
        },
        Some(&tls),
    )
    .await;
    silent_tls_connection_is_closed(addr).await;
    // A real client still gets through, its requests marked as TLS (with
    // TLS required, a plaintext one would be refused).
    let (mut sender, _task) = client(tls.connect(addr).await.unwrap()).await;
    let (status, headers) = fetch(&mut sender, "/v1/projects/none/lines").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
    plaintext_to_tls_gets_no_http_answer(addr).await;
}

#[tokio::test]
async fn a_stalled_body_is_cut_by_the_idle_timeout() {
    let addr = start(
        ServerLimits {
            idle_timeout: SHORT,
            ..limits()
        },
        None,
    )
    .await;
    stalled_body_is_cut(addr).await;
}

#[tokio::test]
async fn the_connection_cap_holds() {
    let addr = start(
        ServerLimits {
            max_connections: 2,
            ..limits()
        },
        None,
    )
    .await;
    connection_cap_holds(addr, 2).await;
}

#[tokio::test]
async fn a_connection_carries_at_most_its_allowed_requests() {
    let addr = start(
        ServerLimits {
            max_requests_per_connection: NonZeroUsize::new(3),
            ..limits()
        },
        None,
    )
    .await;
    requests_per_connection_are_capped(addr, 3).await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_returns() {
    let relay = EchoRelay::builder().build().unwrap();
    let app = router(relay, HttpConfig::local()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app, ServeOptions::default(), async {
        let _ = stopped.await;
    }));
    let (mut sender, task) = client(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
    assert_eq!(
        fetch(&mut sender, "/openapi.json").await.unwrap().0,
        StatusCode::OK
    );
    stop.send(()).unwrap();
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the idle keep-alive connection was closed")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn out_of_range_limits_are_a_typed_error() {
    for bad in [
        ServerLimits {
            max_connections: 0,
            ..limits()
        },
        ServerLimits {
            header_read_timeout: Duration::ZERO,
            ..limits()
        },
        ServerLimits {
            tls_handshake_timeout: Duration::ZERO,
            ..limits()
        },
        ServerLimits {
            idle_timeout: Duration::ZERO,
            ..limits()
        },
    ] {
        let relay = EchoRelay::builder().build().unwrap();
        let app = router(relay, HttpConfig::local()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let options = ServeOptions {
            tls: None,
            limits: bad,
        };
        assert!(matches!(
            serve(listener, app, options, std::future::pending()).await,
            Err(ServeError::Limit(_))
        ));
    }
    assert_eq!(ServerLimits::default().validate(), Ok(()));
}
