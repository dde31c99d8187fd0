//! The relay's throughput in one process, in memory (BENCHMARKS.md, issue
//! 19): the real server (`router` + `server::serve`) and delivery workers
//! (`HttpTransport`, the SSRF guard allowing 127.0.0.1) with a local
//! receiver that answers 204 at once, all on loopback.
//!
//! Phases, each on a fresh relay:
//! 1. ceiling: `GET /nope` (the server's 404, no authentication, no body
//!    read), the same connections and request count;
//! 2. accept only: `POST /v1/in/{endpoint}` with a 1 KiB body, no workers;
//! 3. drain only: the workers deliver that backlog;
//! 4. end to end: workers running while the messages are POSTed; the
//!    latency of each message from the start of its POST to its arrival
//!    at the receiver (p50, p99).
//!
//! Run: `cargo run --release -p echorelay-http --example relay_throughput -- [MESSAGES] [CONNECTIONS] [WORKERS]`
//! (defaults 20000, 16, 32).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Request, StatusCode, header};
use echorelay::core::access::Caller;
use echorelay::core::access::surface::{ConfigWrite, Keys};
use echorelay::core::config::{AuthInput, NewTarget};
use echorelay::core::egress::EgressPolicy;
use echorelay::core::keys::{Environment, MintRequest};
use echorelay::core::relay::{AttemptOutcome, RelayConfig};
use echorelay::prelude::*;
use echorelay_http::delivery::HttpTransport;
use echorelay_http::server::{ServeOptions, ServerLimits};
use echorelay_http::{HttpConfig, router};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use secrecy::SecretString;

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receiver(arrivals: Arrivals) -> std::net::SocketAddr {
    let app = axum::Router::new().fallback(move |headers: HeaderMap, _body: Bytes| {
        let arrivals = arrivals.clone();
        async move {
            if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
                arrivals
                    .lock()
                    .unwrap()
                    .insert(id.to_owned(), Instant::now());
            }
            StatusCode::NO_CONTENT
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

struct Relay {
    relay: EchoRelay,
    addr: std::net::SocketAddr,
    key: String,
    endpoint: String,
}

async fn relay(target: std::net::SocketAddr) -> Relay {
    let relay = EchoRelay::builder()
        .relay_config(RelayConfig::default())
        .build()
        .unwrap();
    let owner = UserId::random();
    relay
        .config()
        .create_project(owner, None, "bench", "Bench")
        .await
        .unwrap();
    let caller = Caller::dangerous_user_stepped_up(owner, None);
    let w = relay
        .voter()
        .authorize::<ConfigWrite>(&caller, "bench")
        .await
        .unwrap();
    let line = relay.config().create_line(&w, "l").await.unwrap();
    let ep = relay
        .config()
        .create_endpoint(&w, line.id, "in")
        .await
        .unwrap();
    relay
        .config()
        .create_target(
            &w,
            line.id,
            NewTarget {
                name: "receiver".into(),
                url: format!("http://127.0.0.1:{}/hook", target.port()),
                auth: AuthInput::Bearer(SecretString::from("bench-token")),
                signing_secret: None,
            },
        )
        .await
        .unwrap();
    let k = relay
        .voter()
        .authorize::<Keys>(&caller, "bench")
        .await
        .unwrap();
    let key = relay
        .keys()
        .mint(
            &k,
            MintRequest {
                environment: Environment::Test,
                role: Role::Editor,
                label: String::new(),
            },
        )
        .await
        .unwrap();
    let app = router(relay.clone(), HttpConfig::local()).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    // Keep-alive connections without a request cap: the load measures
    // the relay, not reconnections.
    let options = ServeOptions {
        tls: None,
        limits: ServerLimits {
            max_requests_per_connection: None,
            ..ServerLimits::default()
        },
    };
    tokio::spawn(async move {
        echorelay_http::server::serve(l, app, options, std::future::pending())
            .await
            .unwrap()
    });
    Relay {
        relay,
        addr,
        key: key.plaintext.expose_secret().to_owned(),
        endpoint: ep.id.to_string(),
    }
}

/// `messages` requests over `connections` keep-alive connections; the
/// start time of each accepted message by id.
async fn load(
    r: &Relay,
    messages: usize,
    connections: usize,
    post: bool,
) -> (Duration, HashMap<String, Instant>) {
    let body = Bytes::from(vec![b'x'; 1024]);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let n = messages / connections + usize::from(c < messages % connections);
        let (addr, key, endpoint, body) = (r.addr, r.key.clone(), r.endpoint.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut starts = Vec::with_capacity(n);
            for _ in 0..n {
                let t0 = Instant::now();
                let req = if post {
                    Request::post(format!("/v1/in/{endpoint}"))
                        .header(header::HOST, "bench")
                        .header(header::AUTHORIZATION, format!("Bearer {key}"))
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Full::new(body.clone()))
                        .unwrap()
                } else {
                    Request::get("/nope")
                        .header(header::HOST, "bench")
                        .body(Full::new(Bytes::new()))
                        .unwrap()
                };
                sender.ready().await.unwrap();
                let res = sender.send_request(req).await.unwrap();
                let status = res.status();
                let bytes = res.into_body().collect().await.unwrap().to_bytes();
                if post {
                    assert_eq!(status, StatusCode::ACCEPTED);
                    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    starts.push((v["message_id"].as_str().unwrap().to_owned(), t0));
                } else {
                    assert_eq!(status, StatusCode::NOT_FOUND);
                }
            }
            starts
        }));
    }
    let mut starts = HashMap::new();
    for t in tasks {
        starts.extend(t.await.unwrap());
    }
    (started.elapsed(), starts)
}

/// Runs `workers` delivery loops until `stop`; counts deliveries.
fn workers(relay: &EchoRelay, n: usize, stop: tokio::sync::watch::Receiver<bool>) {
    let policy = EgressPolicy::default()
        .allow_http(true)
        .allow("127.0.0.1/32".parse().unwrap());
    let worker = Arc::new(relay.delivery(HttpTransport::new(policy).unwrap()));
    for _ in 0..n {
        let (worker, stop) = (worker.clone(), stop.clone());
        tokio::spawn(async move {
            while !*stop.borrow() {
                for a in worker
                    .run_wait(1, Duration::from_millis(200))
                    .await
                    .unwrap()
                {
                    assert_eq!(a.outcome, AttemptOutcome::Delivered, "{a:?}");
                }
            }
        });
    }
}

async fn until_delivered(arrivals: &Arrivals, n: usize) {
    while arrivals.lock().unwrap().len() < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let messages = args.first().copied().unwrap_or(20_000);
    let connections = args.get(1).copied().unwrap_or(16);
    let nworkers = args.get(2).copied().unwrap_or(32);
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    println!("messages {messages}, connections {connections}, workers {nworkers}, body 1 KiB");

    // 1. ceiling, and 2./3. accept only, then drain only.
    let arrivals: Arrivals = Arc::default();
    let r = relay(receiver(arrivals.clone()).await).await;
    let (d, _) = load(&r, messages, connections, false).await;
    println!(
        "ceiling   GET /nope (404)        {:>9.0} req/s",
        rate(messages, d)
    );
    let (d, _) = load(&r, messages, connections, true).await;
    println!(
        "accept    POST /v1/in/{{endpoint}} {:>9.0} req/s",
        rate(messages, d)
    );
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let t0 = Instant::now();
    workers(&r.relay, nworkers, stop);
    until_delivered(&arrivals, messages).await;
    println!(
        "drain     backlog → receiver     {:>9.0} msg/s",
        rate(messages, t0.elapsed())
    );
    let _ = stop_tx.send(true);

    // 4. end to end, on a fresh relay.
    let arrivals: Arrivals = Arc::default();
    let r = relay(receiver(arrivals.clone()).await).await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    workers(&r.relay, nworkers, stop);
    let t0 = Instant::now();
    let (_, starts) = load(&r, messages, connections, true).await;
    until_delivered(&arrivals, messages).await;
    let total = t0.elapsed();
    let _ = stop_tx.send(true);
    let got = arrivals.lock().unwrap();
    let mut lat: Vec<Duration> = starts
        .iter()
        .map(|(id, t)| got[id].saturating_duration_since(*t))
        .collect();
    lat.sort();
    println!(
        "e2e       accept → deliver       {:>9.0} msg/s   p50 {:.1} ms   p99 {:.1} ms",
        rate(messages, total),
        pct(&lat, 0.50).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3
    );
}
