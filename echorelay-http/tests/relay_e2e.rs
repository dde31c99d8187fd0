//! The relay end to end over real HTTP, watched from outside: an
//! `echorelay-server serve --demo --work` process, configured through its
//! REST API with the key `--demo` printed, takes a webhook at
//! `POST /v1/in/{endpoint}` and delivers it to a local receiver, signed
//! per Standard Webhooks (verified here with core's verifier), with the
//! target's bearer token; a receiver that fails twice gets the message on
//! the third attempt; a revoked key is refused on the same keep-alive
//! connection; and each worker flag (`--concurrency`, `--allow-http`,
//! `--allow-net`) is observed from outside (issue 19).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod server_process;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use common::{Client, Server};
use echorelay::core::webhook::{SigningSecret, Verifier};
use secrecy::ExposeSecret;
use serde_json::json;
use server_process::Running;

/// One request the receiver got.
#[derive(Clone)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Seen {
    hits: Mutex<Vec<Hit>>,
    per_path: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// A receiver on 127.0.0.1: `/flaky` answers 500 twice, then 200; `/slow`
/// takes 600 ms; anything else 200.
async fn receiver() -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            async move {
                let path = uri.path().to_owned();
                let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                s.max_in_flight.fetch_max(now, Ordering::SeqCst);
                if path == "/slow" {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                }
                let n = {
                    let mut m = s.per_path.lock().unwrap();
                    let c = m.entry(path.clone()).or_default();
                    *c += 1;
                    *c
                };
                s.hits.lock().unwrap().push(Hit {
                    path: path.clone(),
                    headers,
                    body,
                });
                s.in_flight.fetch_sub(1, Ordering::SeqCst);
                if path == "/flaky" && n <= 2 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        },
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (addr, seen)
}

impl Seen {
    fn hits(&self, path: &str) -> Vec<Hit> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.path == path)
            .cloned()
            .collect()
    }
}

/// A server with `--demo --work` and `flags`; its demo key.
fn server(flags: &[&str]) -> (Running, String) {
    let mut args = vec!["--demo", "--work"];
    args.extend_from_slice(flags);
    let running = server_process::serve(&args, &[], None);
    let key = running
        .banner
        .iter()
        .find(|l| l.starts_with("er_test_"))
        .expect("--demo prints its key")
        .clone();
    (running, key)
}

/// A line with an endpoint and one bearer target per `(name, url)`, made
/// over REST; the endpoint id and each target's signing secret.
async fn configure(c: &mut Client, key: &str, targets: &[(&str, String)]) -> (String, Vec<String>) {
    let line = c
        .post_json("/v1/projects/demo/lines", key, json!({"name": "orders"}))
        .await;
    assert_eq!(line.status, StatusCode::CREATED, "{}", line.text());
    let line = line.json()["id"].as_str().unwrap().to_owned();
    let ep = c
        .post_json(
            &format!("/v1/projects/demo/lines/{line}/endpoints"),
            key,
            json!({"name": "in"}),
        )
        .await;
    assert_eq!(ep.status, StatusCode::CREATED, "{}", ep.text());
    let endpoint = ep.json()["id"].as_str().unwrap().to_owned();
    let mut secrets = Vec::new();
    for (name, url) in targets {
        let secret = echorelay::core::config::generate_signing_secret();
        let t = c
            .post_json(
                &format!("/v1/projects/demo/lines/{line}/targets"),
                key,
                json!({
                    "name": name,
                    "url": url,
                    "auth": {"type": "bearer", "token": format!("tok-{name}")},
                    "signing_secret": secret.expose_secret(),
                }),
            )
            .await;
        assert_eq!(t.status, StatusCode::CREATED, "{}", t.text());
        secrets.push(secret.expose_secret().to_owned());
    }
    (endpoint, secrets)
}

async fn inbound(c: &mut Client, key: &str, endpoint: &str, body: &[u8]) -> common::Answer {
    c.send(
        Method::POST,
        &format!("/v1/in/{endpoint}"),
        Some(key),
        &[],
        Some(("application/json", body.to_vec())),
    )
    .await
}

async fn until(what: &str, server: &Running, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}:\n{}",
            server.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header<'a>(h: &'a Hit, name: &str) -> &'a str {
    h.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .unwrap()
}

fn verifies(h: &Hit, secret: &str) -> bool {
    Verifier::new([SigningSecret::parse(secret).unwrap()])
        .unwrap()
        .verify(
            header(h, "webhook-id"),
            header(h, "webhook-timestamp"),
            header(h, "webhook-signature"),
            &h.body,
            chrono::Utc::now(),
        )
        .is_ok()
}

#[tokio::test]
async fn a_webhook_is_delivered_signed_to_every_target_and_retried_until_it_lands() {
    let (raddr, seen) = receiver().await;
    let (srv, key) = server(&["--allow-http", "--allow-net", "127.0.0.1/32"]);
    let mut c = Server { addr: srv.addr }.connect().await;
    let base = format!("http://127.0.0.1:{}", raddr.port());
    let (endpoint, secrets) = configure(
        &mut c,
        &key,
        &[
            ("ok", format!("{base}/ok")),
            ("flaky", format!("{base}/flaky")),
        ],
    )
    .await;
    // Keys kept in the order written, spaces kept: byte for byte.
    let body = br#"{"zeta": 1,  "alpha": [2, 1]}"#;
    let a = inbound(&mut c, &key, &endpoint, body).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    let message = a.json()["message_id"].as_str().unwrap().to_owned();
    assert_eq!(a.json()["deliveries"], 2);
    until("the deliveries", &srv, || {
        seen.hits("/ok").len() == 1 && seen.hits("/flaky").len() == 3
    })
    .await;
    for (path, secret, token) in [
        ("/ok", &secrets[0], "Bearer tok-ok"),
        ("/flaky", &secrets[1], "Bearer tok-flaky"),
    ] {
        for h in seen.hits(path) {
            assert_eq!(&h.body[..], &body[..], "{path}: the body as received");
            assert_eq!(header(&h, "webhook-id"), message);
            assert_eq!(header(&h, "authorization"), token);
            assert_eq!(header(&h, "content-type"), "application/json");
            assert!(
                verifies(&h, secret),
                "{path}: signed with its target's secret"
            );
            let other = if path == "/ok" {
                &secrets[1]
            } else {
                &secrets[0]
            };
            assert!(!verifies(&h, other), "{path}: not with another target's");
        }
    }
    // The third attempt succeeded: nothing more arrives.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(seen.hits("/flaky").len(), 3);
    assert!(srv.logged("relay: delivered"));
    assert!(srv.logged("http_500"));

    // The door: a bad key, an unknown endpoint, a body over 256 KiB.
    assert_eq!(
        inbound(&mut c, "er_test_nope", &endpoint, b"{}")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        inbound(&mut c, &key, "end_00000000000000000000000000000000", b"{}")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        inbound(&mut c, &key, "nonsense", b"{}").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        inbound(&mut c, &key, &endpoint, &vec![b' '; 256 * 1024 + 1])
            .await
            .status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // A key revoked between two requests on one keep-alive connection:
    // the second is refused.
    let minted = c
        .post_json(
            "/v1/projects/demo/keys",
            &key,
            json!({"environment": "test", "role": "editor", "label": "sender"}),
        )
        .await;
    assert_eq!(minted.status, StatusCode::CREATED, "{}", minted.text());
    let sender_key = minted.json()["plaintext"].as_str().unwrap().to_owned();
    let sender_id = minted.json()["key"]["id"].as_str().unwrap().to_owned();
    let mut same = Server { addr: srv.addr }.connect().await;
    assert_eq!(
        inbound(&mut same, &sender_key, &endpoint, b"{}")
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let revoked = c
        .send(
            Method::DELETE,
            &format!("/v1/projects/demo/keys/{sender_id}"),
            Some(&key),
            &[],
            None,
        )
        .await;
    assert!(revoked.status.is_success(), "{}", revoked.text());
    assert_eq!(
        inbound(&mut same, &sender_key, &endpoint, b"{}")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

/// `--concurrency`: three messages to a target that takes 600 ms are in
/// flight together with `--concurrency 3`, one at a time with 1.
#[tokio::test]
async fn the_concurrency_flag_bounds_the_deliveries_in_flight() {
    for (n, expected) in [("3", 3), ("1", 1)] {
        let (raddr, seen) = receiver().await;
        let (srv, key) = server(&[
            "--allow-http",
            "--allow-net",
            "127.0.0.1/32",
            "--concurrency",
            n,
        ]);
        let mut c = Server { addr: srv.addr }.connect().await;
        let (endpoint, _) = configure(
            &mut c,
            &key,
            &[("slow", format!("http://127.0.0.1:{}/slow", raddr.port()))],
        )
        .await;
        for _ in 0..3 {
            assert_eq!(
                inbound(&mut c, &key, &endpoint, b"{}").await.status,
                StatusCode::ACCEPTED
            );
        }
        until("three slow deliveries", &srv, || {
            seen.hits("/slow").len() == 3
        })
        .await;
        assert_eq!(
            seen.max_in_flight.load(Ordering::SeqCst),
            expected,
            "--concurrency {n}"
        );
    }
}

/// Without `--allow-http` an `http://` target is dead-lettered
/// (`url_scheme`); without `--allow-net` a loopback one is too
/// (`ssrf_loopback`); the receiver sees neither.
#[tokio::test]
async fn without_the_egress_flags_internal_and_plain_targets_are_refused() {
    for (flags, class) in [
        (vec!["--allow-net", "127.0.0.1/32"], "url_scheme"),
        (vec!["--allow-http"], "ssrf_loopback"),
        (
            vec!["--allow-http", "--allow-net", "127.0.0.2/32"],
            "ssrf_loopback",
        ),
    ] {
        let (raddr, seen) = receiver().await;
        let (srv, key) = server(&flags);
        let mut c = Server { addr: srv.addr }.connect().await;
        let (endpoint, _) = configure(
            &mut c,
            &key,
            &[("ok", format!("http://127.0.0.1:{}/ok", raddr.port()))],
        )
        .await;
        assert_eq!(
            inbound(&mut c, &key, &endpoint, b"{}").await.status,
            StatusCode::ACCEPTED
        );
        until("the dead letter", &srv, || {
            srv.logged("relay: delivery dead-lettered") && srv.logged(class)
        })
        .await;
        assert!(seen.hits("/ok").is_empty(), "{flags:?}");
    }
}
