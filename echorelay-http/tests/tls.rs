//! The server terminating TLS itself (a CDN's "Full (Strict)" origin),
//! with a certificate made for the test: requests over it count as HTTPS
//! with TLS required, get HSTS, and an API key works; a plaintext
//! connection to the TLS port gets no HTTP answer at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Request, StatusCode, header};
use common::*;
use echorelay::prelude::*;
use echorelay_http::tls::{TlsError, config_from_pem, serve_tls};
use echorelay_http::{HttpConfig, router};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

async fn the_server_terminates_tls_with_its_own_certificate(w: World) {
    w.project("acme").await;
    let (key, _) = w.key("acme", Role::Viewer).await;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let config = config_from_pem(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let app = router(w.relay.clone(), HttpConfig::production()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_tls(listener, app, config));

    let mut roots = RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    for (auth, expected) in [
        (Some(key.as_str()), StatusCode::OK),
        (None, StatusCode::UNAUTHORIZED),
    ] {
        let mut req = Request::get("/v1/projects/acme/lines").header(header::HOST, "localhost");
        if let Some(k) = auth {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let res = sender
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), expected, "over TLS, with TLS required");
        assert!(
            res.headers()[header::STRICT_TRANSPORT_SECURITY]
                .to_str()
                .unwrap()
                .contains("max-age=")
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(!String::from_utf8_lossy(&body).contains("tls_required"));
    }

    // Plaintext HTTP to the TLS port: no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /v1/projects/acme/lines HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        plain.read_to_end(&mut got),
    )
    .await;
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1"),
        "{got:?}"
    );
}

#[test]
fn unusable_pem_is_a_typed_error() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (c, k) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    assert!(matches!(
        config_from_pem(b"", k.as_bytes()),
        Err(TlsError::Pem {
            what: "certificate"
        })
    ));
    assert!(matches!(
        config_from_pem(c.as_bytes(), b"nope"),
        Err(TlsError::Pem {
            what: "private key"
        })
    ));
    assert!(matches!(
        config_from_pem(c.as_bytes(), other.signing_key.serialize_pem().as_bytes()),
        Err(TlsError::Config(_))
    ));
}

on_every_store!(the_server_terminates_tls_with_its_own_certificate,);
