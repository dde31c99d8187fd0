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
    /// `/refuse` answers 422 while this is set.
    refusing: std::sync::atomic::AtomicBool,
}

/// A receiver on 127.0.0.1: `/flaky` answers 500 twice, then 200; `/slow`
/// takes 1.5 s; `/refuse` answers 422 (with a body) while `refusing` is
/// set; anything else 200.
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
                    tokio::time::sleep(Duration::from_millis(1500)).await;
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
                    (StatusCode::INTERNAL_SERVER_ERROR, "")
                } else if path == "/refuse" && s.refusing.load(Ordering::SeqCst) {
                    (StatusCode::UNPROCESSABLE_ENTITY, "unknown order")
                } else {
                    (StatusCode::OK, "")
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

/// Whether the `standardwebhooks` package (PyPI; the Standard Webhooks
/// reference library, not our verifier) accepts `h` under `secret`.
/// `None` when the package is not installed and services are not
/// required (CI installs it: `.ci/run`).
fn python_verifies(h: &Hit, secret: &str) -> Option<bool> {
    use std::io::Write;
    const SCRIPT: &str = "import sys
from standardwebhooks.webhooks import Webhook
secret, wid, ts, sig = sys.argv[1:5]
body = sys.stdin.buffer.read()
try:
    Webhook(secret).verify(body, {'webhook-id': wid, 'webhook-timestamp': ts, 'webhook-signature': sig})
except Exception as e:
    print(type(e).__name__, e)
    sys.exit(3)
";
    let found = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !std::env::var("ECHORELAY_REQUIRE_SERVICES").is_ok_and(|v| v == "1"),
            "ECHORELAY_REQUIRE_SERVICES=1 but the Python package standardwebhooks is not installed"
        );
        eprintln!("relay_e2e: standardwebhooks (PyPI) not installed; its check skipped");
        return None;
    }
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            SCRIPT,
            secret,
            header(h, "webhook-id"),
            header(h, "webhook-timestamp"),
            header(h, "webhook-signature"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&h.body).unwrap();
    Some(child.wait().unwrap().success())
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
            if let Some(ok) = python_verifies(&h, secret) {
                assert!(
                    ok,
                    "{path}: the standardwebhooks package refuses our signature"
                );
                assert_eq!(python_verifies(&h, other), Some(false));
            }
        }
    }
    // The third attempt succeeded: nothing more arrives.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(seen.hits("/flaky").len(), 3);
    assert!(srv.logged("relay: delivered"));
    assert!(srv.logged("http_500"));

    // A retried POST with its Idempotency-Key: the first message's id,
    // nothing new enqueued, delivered once.
    let mut c = Server { addr: srv.addr }.connect().await;
    let mut posts = Vec::new();
    for _ in 0..2 {
        posts.push(
            c.send(
                Method::POST,
                &format!("/v1/in/{endpoint}"),
                Some(&key),
                &[("idempotency-key", "order-42")],
                Some(("application/json", br#"{"once": true}"#.to_vec())),
            )
            .await,
        );
    }
    assert!(posts.iter().all(|p| p.status == StatusCode::ACCEPTED));
    let (first, again) = (posts[0].json(), posts[1].json());
    assert_eq!(first["message_id"], again["message_id"]);
    assert_eq!(
        (first["replayed"].clone(), first["deliveries"].clone()),
        (json!(false), json!(2))
    );
    assert_eq!(
        (again["replayed"].clone(), again["deliveries"].clone()),
        (json!(true), json!(0))
    );
    until("the idempotent message", &srv, || {
        seen.hits("/ok").len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(seen.hits("/ok").len(), 2, "delivered once");
    assert_eq!(
        header(&seen.hits("/ok")[1], "webhook-id"),
        first["message_id"].as_str().unwrap()
    );

    // The door: a bad key, an unknown endpoint, a body over 256 KiB (on a
    // new connection: the old one sat idle past the server's limit).
    let mut c = Server { addr: srv.addr }.connect().await;
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
    let over = inbound(&mut c, &key, &endpoint, &vec![b' '; 256 * 1024 + 1]).await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(over.json()["error"], "too_large");
    // Far over the limit, the body is refused before it is read, with the
    // same answer.
    let mut c = Server { addr: srv.addr }.connect().await;
    let far = inbound(&mut c, &key, &endpoint, &vec![b' '; 1024 * 1024]).await;
    assert_eq!(far.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(far.json()["error"], "too_large");
    // A body that cannot be read (a chunk size that is not hex) is a bad
    // request, not an oversized one.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut raw = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        raw.write_all(
            format!(
                "POST /v1/in/{endpoint} HTTP/1.1\r\nhost: relay\r\n\
                 authorization: Bearer {key}\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut answer))
            .await
            .expect("the server answers and closes")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(answer.contains("invalid_body"), "{answer}");
    }
    // A key revoked between two requests on one keep-alive connection:
    // the second is refused. (A new connection for the setup: the server
    // closes one after refusing an oversized body unread.)
    let mut c = Server { addr: srv.addr }.connect().await;
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

/// `--concurrency`: three messages to a target that takes 1.5 s overlap
/// with `--concurrency 3` (at least two in flight at once: a loop may wake
/// late on a loaded machine), and go one at a time with 1.
#[tokio::test]
async fn the_concurrency_flag_bounds_the_deliveries_in_flight() {
    for (n, expected) in [("3", 2..=3), ("1", 1..=1)] {
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
        let max = seen.max_in_flight.load(Ordering::SeqCst);
        assert!(
            expected.contains(&max),
            "--concurrency {n}: {max} in flight at most"
        );
    }
}

/// A delivery loop takes the next job as soon as it has finished one: it
/// pauses (a second) only after the queue failed. One loop delivers eight
/// waiting messages in well under the seven seconds that a pause after
/// each delivery would take.
#[tokio::test]
async fn a_delivery_loop_takes_waiting_jobs_back_to_back() {
    let (raddr, seen) = receiver().await;
    let (srv, key) = server(&[
        "--allow-http",
        "--allow-net",
        "127.0.0.1/32",
        "--concurrency",
        "1",
    ]);
    let mut c = Server { addr: srv.addr }.connect().await;
    let (endpoint, _) = configure(
        &mut c,
        &key,
        &[("ok", format!("http://127.0.0.1:{}/ok", raddr.port()))],
    )
    .await;
    let start = std::time::Instant::now();
    for _ in 0..8 {
        assert_eq!(
            inbound(&mut c, &key, &endpoint, b"{}").await.status,
            StatusCode::ACCEPTED
        );
    }
    until("eight deliveries", &srv, || seen.hits("/ok").len() == 8).await;
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "eight deliveries took {took:?}"
    );
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

/// A `work` process, killed when dropped; what it logged.
#[cfg(feature = "pg")]
struct WorkProcess {
    child: std::process::Child,
    log: Arc<Mutex<String>>,
}

#[cfg(feature = "pg")]
impl Drop for WorkProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "pg")]
fn work_process(env: &[(&str, &str)], flags: &[&str]) -> WorkProcess {
    use std::io::BufRead;
    let mut child = std::process::Command::new(server_process::BIN)
        .env_remove("DATABASE_URL")
        .env_remove("SECRET_KEY")
        .env_remove("REDIS_URL")
        .arg("work")
        .args(flags)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    WorkProcess { child, log }
}

#[cfg(feature = "pg")]
const KEY: &str = "6a4e66c27687161095467ef0a963538822927a9e557405703abffe6271b315f6";

/// The store and the queue shared by separate processes: `serve` takes
/// the webhook, a separate `work` process delivers it, with the queue in
/// Postgres (DATABASE_URL alone) and in Redis (REDIS_URL beside it, a
/// Redis database of its own); the receiver checks the signature with
/// core's verifier and the `standardwebhooks` package.
#[cfg(feature = "pg")]
#[tokio::test]
async fn serve_and_a_separate_worker_share_the_queue_on_postgres_and_on_redis() {
    use echorelay::core::access::Caller;
    use echorelay::core::access::surface::{Keys, Members};
    use echorelay::core::keys::{Environment, MintRequest};
    use echorelay::prelude::*;

    let Some(db) = echorelay::pg::test_database().await else {
        return;
    };
    let redis = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty());
    let required = std::env::var("ECHORELAY_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    assert!(
        redis.is_some() || !required,
        "ECHORELAY_REQUIRE_SERVICES=1 but REDIS_URL is not set"
    );
    let mut queues: Vec<Option<String>> = vec![None];
    // The binary uses the Redis queue only with the feature `redis`.
    #[cfg(feature = "redis")]
    if let Some(base) = &redis {
        // A database of its own, emptied first: no other test's jobs.
        let url = format!("{}/7", base.trim_end_matches('/'));
        let flushed = std::process::Command::new("redis-cli")
            .args(["-u", &url, "FLUSHDB"])
            .output()
            .unwrap();
        assert!(flushed.status.success());
        queues.push(Some(url));
    }
    for redis_url in queues {
        let (url, name, mut admin) = server_process::scratch_database(db.url(), "relay").await;
        let mut env = vec![("DATABASE_URL", url.as_str()), ("SECRET_KEY", KEY)];
        if let Some(r) = &redis_url {
            env.push(("REDIS_URL", r.as_str()));
        }
        let m = server_process::run(&["migrate"], &env);
        assert!(m.ok, "{}{}", m.out, m.err);

        // The project and an owner key, through the library.
        let relay = EchoRelayBuilder::from_env_vars(|n| match n {
            "DATABASE_URL" => Some(url.clone()),
            "SECRET_KEY" => Some(KEY.to_owned()),
            _ => None,
        })
        .await
        .unwrap()
        .build()
        .unwrap();
        let owner = UserId::random();
        relay
            .config()
            .create_project(owner, None, "demo", "Demo")
            .await
            .unwrap();
        let caller = Caller::dangerous_user_stepped_up(owner, None);
        let members = relay
            .voter()
            .authorize::<Members>(&caller, "demo")
            .await
            .unwrap();
        relay
            .config()
            .set_api_keys_manage_keys(&members, true)
            .await
            .unwrap();
        let k = relay
            .voter()
            .authorize::<Keys>(&caller, "demo")
            .await
            .unwrap();
        let key = relay
            .keys()
            .mint(
                &k,
                MintRequest {
                    environment: Environment::Test,
                    role: Role::Owner,
                    label: "e2e".into(),
                },
            )
            .await
            .unwrap()
            .plaintext
            .expose_secret()
            .to_owned();
        drop(relay);

        let (raddr, seen) = receiver().await;
        let srv = server_process::serve(&[], &env, None);
        let worker = work_process(&env, &["--allow-http", "--allow-net", "127.0.0.1/32"]);
        let mut c = Server { addr: srv.addr }.connect().await;
        let (endpoint, secrets) = configure(
            &mut c,
            &key,
            &[("ok", format!("http://127.0.0.1:{}/ok", raddr.port()))],
        )
        .await;
        let a = inbound(&mut c, &key, &endpoint, br#"{"n": 1}"#).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
        let start = std::time::Instant::now();
        while seen.hits("/ok").is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no delivery ({redis_url:?}); worker log:\n{}",
                worker.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let h = &seen.hits("/ok")[0];
        assert_eq!(&h.body[..], br#"{"n": 1}"#);
        assert_eq!(
            header(h, "webhook-id"),
            a.json()["message_id"].as_str().unwrap()
        );
        assert!(verifies(h, &secrets[0]));
        if let Some(ok) = python_verifies(h, &secrets[0]) {
            assert!(ok);
        }
        assert!(worker.log.lock().unwrap().contains("relay: delivered"));
        drop(worker);
        drop(srv);
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

/// SIGTERM while a delivery is in flight: the server stops taking
/// requests, the worker finishes the delivery it holds (and records it),
/// and the process exits cleanly.
#[cfg(unix)]
#[tokio::test]
async fn sigterm_lets_the_delivery_in_flight_finish() {
    let (raddr, seen) = receiver().await;
    let (mut srv, key) = server(&["--allow-http", "--allow-net", "127.0.0.1/32"]);
    let mut c = Server { addr: srv.addr }.connect().await;
    let (endpoint, _) = configure(
        &mut c,
        &key,
        &[("slow", format!("http://127.0.0.1:{}/slow", raddr.port()))],
    )
    .await;
    assert_eq!(
        inbound(&mut c, &key, &endpoint, b"{}").await.status,
        StatusCode::ACCEPTED
    );
    // The receiver holds the request for 1.5 s: signal in the middle.
    until("the delivery to start", &srv, || {
        seen.in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    let pid = srv.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = srv.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(seen.hits("/slow").len(), 1);
    let log = srv.log.lock().unwrap().clone();
    let stopping = log
        .find("relay: stopping")
        .expect("the workers were told to stop");
    let delivered = log
        .find("relay: delivered")
        .expect("the delivery was recorded");
    assert!(stopping < delivered, "{log}");
}

/// A target's signing secret rotated over REST: through the grace every
/// delivery carries one signature per active secret, so a receiver
/// holding the old secret and one holding the new both verify (ours and
/// the `standardwebhooks` package); a secret set by PATCH ends the old
/// ones at once; a grace past 7 days is refused.
#[tokio::test]
async fn a_rotated_signing_secret_signs_beside_the_new_one_through_its_grace() {
    let (raddr, seen) = receiver().await;
    let (srv, key) = server(&["--allow-http", "--allow-net", "127.0.0.1/32"]);
    let mut c = Server { addr: srv.addr }.connect().await;
    let (endpoint, secrets) = configure(
        &mut c,
        &key,
        &[("ok", format!("http://127.0.0.1:{}/ok", raddr.port()))],
    )
    .await;
    let old = secrets[0].clone();
    let lines = c.get("/v1/projects/demo/lines", Some(&key)).await;
    let target = lines.json()["lines"][0]["targets"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotate = format!("/v1/projects/demo/targets/{target}/signing-secret/rotate");

    let too_long = c
        .post_json(&rotate, &key, json!({"grace_secs": 604_801}))
        .await;
    assert!(
        too_long.status.is_client_error(),
        "grace past 7 days: {} {}",
        too_long.status,
        too_long.text()
    );
    let before = chrono::Utc::now().timestamp();
    let r = c.post_json(&rotate, &key, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let new = r.json()["signing_secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    let retired = r.json()["target"]["retired_signing_secrets"].clone();
    assert_eq!(retired.as_array().unwrap().len(), 1, "{retired}");
    let ends = chrono::DateTime::parse_from_rfc3339(retired[0]["until"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!(
        (before + 86_400..=before + 86_402).contains(&ends),
        "{ends}"
    );
    assert!(!r.text().contains(&old[6..]), "the old secret is not shown");

    let a = inbound(&mut c, &key, &endpoint, br#"{"n": 1}"#).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    until("the delivery", &srv, || seen.hits("/ok").len() == 1).await;
    let hit = seen.hits("/ok").remove(0);
    assert_eq!(header(&hit, "webhook-signature").split(' ').count(), 2);
    for secret in [&old, &new] {
        assert!(
            verifies(&hit, secret),
            "during the grace, under each secret"
        );
        if let Some(ok) = python_verifies(&hit, secret) {
            assert!(ok, "standardwebhooks refuses a signature of the grace");
        }
    }

    // Set by PATCH: the old secrets end now.
    let set = echorelay::core::config::generate_signing_secret();
    let p = c
        .send(
            Method::PATCH,
            &format!("/v1/projects/demo/targets/{target}"),
            Some(&key),
            &[],
            Some((
                "application/json",
                serde_json::to_vec(&json!({"signing_secret": set.expose_secret()})).unwrap(),
            )),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text());
    assert_eq!(p.json()["retired_signing_secrets"], json!([]));
    let a = inbound(&mut c, &key, &endpoint, br#"{"n": 2}"#).await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    until("the second delivery", &srv, || seen.hits("/ok").len() == 2).await;
    let hit = seen.hits("/ok").remove(1);
    assert_eq!(header(&hit, "webhook-signature").split(' ').count(), 1);
    assert!(verifies(&hit, set.expose_secret()));
    assert!(!verifies(&hit, &old) && !verifies(&hit, &new));
}

/// A target that refuses (422) dead-letters the message at once; the
/// operations routes list it (the attempt's status, class and excerpt,
/// never the target's token), redrive it once it accepts (202, then
/// delivered, a second redrive 409), and count by state. The maintenance
/// pass keeps the log by `--delivery-log-days`: 30 by default, and with 0
/// a server purges each message at its next pass.
#[tokio::test]
async fn a_dead_letter_is_listed_and_redriven_over_rest_and_the_log_is_kept_by_its_flag() {
    let (raddr, seen) = receiver().await;
    seen.refusing.store(true, Ordering::SeqCst);
    let (srv, key) = server(&[
        "--allow-http",
        "--allow-net",
        "127.0.0.1/32",
        "--maintenance-interval-secs",
        "1",
    ]);
    let mut c = Server { addr: srv.addr }.connect().await;
    let (endpoint, _) = configure(
        &mut c,
        &key,
        &[(
            "refuse",
            format!("http://127.0.0.1:{}/refuse", raddr.port()),
        )],
    )
    .await;
    let lines = c.get("/v1/projects/demo/lines", Some(&key)).await;
    let target = lines.json()["lines"][0]["targets"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = inbound(&mut c, &key, &endpoint, br#"{"order": 7}"#).await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let message = a.json()["message_id"].as_str().unwrap().to_owned();
    let dead_path = format!("/v1/projects/demo/targets/{target}/dead-letters");
    let mut dead = json!(null);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        dead = c.get(&dead_path, Some(&key)).await.json();
        if dead["dead_letters"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        dead["dead_letters"][0]["message"],
        message.as_str(),
        "{dead}"
    );
    assert_eq!(dead["dead_letters"][0]["last_status"], 422);
    assert_eq!(dead["dead_letters"][0]["last_class"], "http_422");
    // A short page has no next page; a full one names where it ends.
    assert_eq!(dead["next_after"], json!(null), "{dead}");
    let one = c
        .get(&format!("{dead_path}?limit=1"), Some(&key))
        .await
        .json();
    assert_eq!(one["next_after"], message.as_str(), "{one}");
    let detail_path = format!("/v1/projects/demo/messages/{message}");
    let detail = c.get(&detail_path, Some(&key)).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.text());
    let d = detail.json();
    assert_eq!(d["message"]["size"], 12);
    assert_eq!(d["attempts"][0]["status"], 422);
    assert_eq!(d["attempts"][0]["result"], "dead");
    assert_eq!(d["attempts"][0]["excerpt"], "unknown order");
    assert!(!detail.text().contains("tok-refuse"), "the target's token");
    let stats = c
        .get("/v1/projects/demo/deliveries/stats", Some(&key))
        .await;
    assert_eq!(stats.json()["dead"], 1);

    // The target accepts again: redrive.
    seen.refusing.store(false, Ordering::SeqCst);
    let redrive = format!("{dead_path}/{message}/redrive");
    let r = c.post_json(&redrive, &key, json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    until("the redriven delivery", &srv, || {
        seen.hits("/refuse").len() == 2
    })
    .await;
    let start = std::time::Instant::now();
    loop {
        let d = c.get(&detail_path, Some(&key)).await.json();
        if d["deliveries"][0]["state"] == "delivered" {
            assert_eq!(d["deliveries"][0]["attempts"], 2);
            assert_eq!(d["attempts"][1]["status"], 200);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = c.post_json(&redrive, &key, json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    let all = c
        .post_json(&format!("{dead_path}/redrive"), &key, json!({}))
        .await;
    assert_eq!(all.json(), json!({"redriven": 0, "more": false}));
    // Passes run every second here; 30 days keep the message.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let listed = c.get("/v1/projects/demo/messages", Some(&key)).await.json();
    assert_eq!(listed["messages"][0]["id"], message.as_str(), "{listed}");
    // Pages: two more messages; without a limit all three (the default
    // page is 100) and no next page; by two, a full page then the rest.
    for _ in 0..2 {
        let a = inbound(&mut c, &key, &endpoint, b"{}").await;
        assert_eq!(a.status, StatusCode::ACCEPTED);
    }
    let all = c.get("/v1/projects/demo/messages", Some(&key)).await.json();
    assert_eq!(all["messages"].as_array().map(Vec::len), Some(3), "{all}");
    assert_eq!(all["next_before"], json!(null), "{all}");
    let first = c
        .get("/v1/projects/demo/messages?limit=2", Some(&key))
        .await
        .json();
    assert_eq!(
        first["messages"].as_array().map(Vec::len),
        Some(2),
        "{first}"
    );
    assert_eq!(first["next_before"], first["messages"][1]["id"], "{first}");
    let before = first["next_before"].as_str().unwrap();
    let rest = c
        .get(
            &format!("/v1/projects/demo/messages?limit=2&before={before}"),
            Some(&key),
        )
        .await
        .json();
    assert_eq!(rest["messages"].as_array().map(Vec::len), Some(1), "{rest}");
    assert_eq!(rest["messages"][0], all["messages"][2], "{rest}");
    assert_eq!(rest["next_before"], json!(null), "{rest}");
    for bad in ["0", "501"] {
        let r = c
            .get(
                &format!("/v1/projects/demo/messages?limit={bad}"),
                Some(&key),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    drop(srv);

    // With 0 days, the next pass purges it.
    let (srv, key) = server(&[
        "--allow-http",
        "--allow-net",
        "127.0.0.1/32",
        "--maintenance-interval-secs",
        "1",
        "--delivery-log-days",
        "0",
    ]);
    let mut c = Server { addr: srv.addr }.connect().await;
    let (endpoint, _) = configure(
        &mut c,
        &key,
        &[("ok", format!("http://127.0.0.1:{}/ok", raddr.port()))],
    )
    .await;
    let a = inbound(&mut c, &key, &endpoint, b"{}").await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    let start = std::time::Instant::now();
    loop {
        let listed = c.get("/v1/projects/demo/messages", Some(&key)).await.json();
        if listed["messages"] == json!([]) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{listed}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(srv.logged("old messages purged from the delivery log"));
}
