//! Load for the relay benchmark beside Svix (BENCHMARKS.md, issue 19;
//! `scripts/bench_relay.sh`): drives either server over real HTTP and
//! runs the receiver both deliver to, in this process.
//!
//! Every message is a 1,019-byte JSON payload `{"sent_us":…,"pad":"…"}`
//! carrying its send time (µs since the Unix epoch, this process's
//! clock). echorelay gets it as the body of `POST /v1/in/{endpoint}` and
//! delivers it byte for byte; Svix gets it wrapped as
//! `{"eventType":…,"payload":…}` (`--svix-event-type`) at
//! `POST /api/v1/app/{app}/msg/` and delivers the payload re-serialized
//! (keys reordered, the same 1,019 bytes).
//!
//! The receiver (axum on hyper, answers 200 at once) takes the message id
//! from `webhook-id` or `svix-id`, counts each id once (repeats are
//! counted as duplicates), and records send → delivery latency from the
//! payload's `sent_us`.
//!
//! Modes:
//! - `e2e`: the receiver runs while `--connections` keep-alive
//!   connections POST for `--duration` seconds (or `--messages`), then
//!   waits until every accepted message has arrived (or
//!   `--drain-timeout`);
//! - `accept`: the same load; the receiver only counts (run it against a
//!   server that does not deliver);
//! - `drain`: the receiver alone, until `--expect` messages have arrived
//!   (or `--drain-timeout`; with `--expect 0`, until no message for
//!   `--idle` seconds after the first); prints `listening ADDR` when
//!   ready, so a script can start the worker then;
//! - `provision` (echorelay on Postgres, from `DATABASE_URL` and
//!   `SECRET_KEY`): a project `bench`, a line, an endpoint, one target at
//!   `http://{--receiver}/hook` without auth, an editor API key; prints
//!   `endpoint ep_…` and `key er_test_…`.
//!
//! Each load mode prints a human line and one machine-readable line,
//! `RESULT {json}`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, Request, StatusCode, Uri, header};
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;

/// The payload's size in bytes, as the Svix anchor measured it.
const PAYLOAD_BYTES: usize = 1019;

#[derive(Parser)]
#[command(about = "Load and receiver for scripts/bench_relay.sh")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// POST while the receiver counts and times deliveries; wait for them all.
    E2e(Load),
    /// POST while the receiver only counts (a server that does not deliver).
    Accept(Load),
    /// The receiver alone, until a backlog has arrived.
    Drain(Drain),
    /// Make echorelay's project, endpoint, target and key (Postgres).
    Provision {
        /// The receiver's address, for the target's URL.
        #[arg(long, default_value = "127.0.0.1:9911")]
        receiver: SocketAddr,
    },
}

#[derive(clap::Args, Clone)]
struct Load {
    /// The URL messages are POSTed to (`http://` only).
    #[arg(long)]
    url: String,
    /// The Authorization header's value (e.g. `Bearer er_test_…`).
    #[arg(long)]
    auth: String,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds of load (ignored with --messages).
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Send this many messages instead of for --duration.
    #[arg(long)]
    messages: Option<usize>,
    /// Wrap each payload as Svix's `{"eventType":TYPE,"payload":…}`.
    #[arg(long)]
    svix_event_type: Option<String>,
    #[command(flatten)]
    rx: Rx,
}

#[derive(clap::Args, Clone)]
struct Drain {
    /// Messages to wait for (0: until --idle seconds without one).
    #[arg(long, default_value_t = 0)]
    expect: usize,
    /// With --expect 0: seconds without a delivery, after the first, that end the wait.
    #[arg(long, default_value_t = 5.0)]
    idle: f64,
    #[command(flatten)]
    rx: Rx,
}

#[derive(clap::Args, Clone)]
struct Rx {
    /// Where the receiver listens.
    #[arg(long, default_value = "127.0.0.1:9911")]
    receiver: SocketAddr,
    /// Seconds to wait for deliveries after the load (e2e) or in all (drain).
    #[arg(long, default_value_t = 120.0)]
    drain_timeout: f64,
    /// A label copied into the RESULT line (e.g. `echorelay`, `svix`).
    #[arg(long, default_value = "")]
    label: String,
}

fn now_us() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

/// The 1,019-byte payload sent at `sent_us`.
fn payload(sent_us: u64) -> String {
    let bare = format!(r#"{{"sent_us":{sent_us},"pad":""}}"#);
    let pad = PAYLOAD_BYTES.checked_sub(bare.len()).unwrap();
    let p = format!(r#"{{"sent_us":{sent_us},"pad":"{}"}}"#, "x".repeat(pad));
    debug_assert_eq!(p.len(), PAYLOAD_BYTES);
    p
}

// ---------------------------------------------------------------- receiver

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    /// Send → delivery, µs, of each id's first delivery.
    latency_us: Vec<u64>,
    /// Arrival of each id's first delivery.
    arrivals: Vec<Instant>,
    duplicates: usize,
    /// Deliveries without an id header or a readable `sent_us`.
    unreadable: usize,
}

type Shared = Arc<Mutex<Seen>>;

async fn receiver(addr: SocketAddr) -> Shared {
    let seen: Shared = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let s = s.clone();
        async move {
            let at = Instant::now();
            let now = now_us();
            let id = headers
                .get("webhook-id")
                .or_else(|| headers.get("svix-id"))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let sent = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("sent_us").and_then(serde_json::Value::as_u64));
            let mut g = s.lock().unwrap();
            match (id, sent) {
                (Some(id), Some(sent)) => {
                    if g.ids.insert(id) {
                        g.latency_us.push(now.saturating_sub(sent));
                        g.arrivals.push(at);
                    } else {
                        g.duplicates += 1;
                    }
                }
                _ => g.unreadable += 1,
            }
            StatusCode::OK
        }
    });
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("receiver: cannot listen on {addr}: {e}"));
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    seen
}

fn delivered(seen: &Shared) -> usize {
    seen.lock().unwrap().ids.len()
}

/// Waits until `n` ids have arrived or `timeout` has passed since `from`;
/// whether they all came.
async fn until_delivered(seen: &Shared, n: usize, from: Instant, timeout: Duration) -> bool {
    loop {
        if delivered(seen) >= n {
            return true;
        }
        if from.elapsed() >= timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ------------------------------------------------------------------- load

#[derive(Default)]
struct Sent {
    /// API latency of each 2xx answer.
    latency: Vec<Duration>,
    /// Answers that were not 2xx, by status.
    non_2xx: BTreeMap<u16, usize>,
    /// Connections that failed (connect, handshake, send, read).
    errors: usize,
}

struct Target {
    addr: String,
    authority: String,
    path: String,
}

fn target(url: &str) -> Target {
    let uri: Uri = url.parse().unwrap_or_else(|e| panic!("--url {url}: {e}"));
    assert_eq!(uri.scheme_str(), Some("http"), "--url must be http://");
    let authority = uri.authority().expect("--url has no host").to_string();
    let port = uri.port_u16().unwrap_or(80);
    let host = uri.host().unwrap().trim_matches(['[', ']']);
    Target {
        addr: format!("{host}:{port}"),
        authority,
        path: uri
            .path_and_query()
            .map_or("/".into(), |p| p.as_str().to_owned()),
    }
}

async fn connect(addr: &str) -> Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// One connection's loop: POSTs until `stop` (or the message budget runs
/// out), reconnecting when the server closes the connection.
async fn connection(
    t: Arc<Target>,
    auth: Arc<str>,
    svix: Option<Arc<str>>,
    stop: Arc<AtomicBool>,
    budget: Option<Arc<AtomicUsize>>,
) -> Sent {
    let mut sent = Sent::default();
    let mut sender = None;
    while !stop.load(Ordering::Relaxed) {
        if let Some(b) = &budget
            && b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
        {
            break;
        }
        let s = match sender.as_mut() {
            Some(s) => s,
            None => match connect(&t.addr).await {
                Some(s) => sender.insert(s),
                None => {
                    sent.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let p = payload(now_us());
        let body = match &svix {
            Some(et) => format!(r#"{{"eventType":"{et}","payload":{p}}}"#),
            None => p,
        };
        let req = Request::post(t.path.as_str())
            .header(header::HOST, t.authority.as_str())
            .header(header::AUTHORIZATION, &*auth)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let t0 = Instant::now();
        let answer = async {
            s.ready().await?;
            let res = s.send_request(req).await?;
            let status = res.status();
            let close = res
                .headers()
                .get(header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            res.into_body().collect().await?;
            Ok::<_, hyper::Error>((status, close))
        }
        .await;
        match answer {
            Ok((status, close)) => {
                if status.is_success() {
                    sent.latency.push(t0.elapsed());
                } else {
                    *sent.non_2xx.entry(status.as_u16()).or_default() += 1;
                }
                if close {
                    sender = None;
                }
            }
            Err(_) => {
                sent.errors += 1;
                sender = None;
            }
        }
    }
    sent
}

fn pct_ms(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i].as_secs_f64() * 1e3)
}

fn pct_us_ms(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i] as f64 / 1e3)
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

async fn load(mode: &str, a: Load) {
    let e2e = mode == "e2e";
    let seen = receiver(a.rx.receiver).await;
    let t = Arc::new(target(&a.url));
    let auth: Arc<str> = a.auth.as_str().into();
    let svix: Option<Arc<str>> = a.svix_event_type.as_deref().map(Into::into);
    let stop = Arc::new(AtomicBool::new(false));
    let budget = a.messages.map(|n| Arc::new(AtomicUsize::new(n)));
    let start = Instant::now();
    let tasks: Vec<_> = (0..a.connections)
        .map(|_| {
            tokio::spawn(connection(
                t.clone(),
                auth.clone(),
                svix.clone(),
                stop.clone(),
                budget.clone(),
            ))
        })
        .collect();
    if budget.is_none() {
        tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
        stop.store(true, Ordering::Relaxed);
    }
    let mut total = Sent::default();
    for task in tasks {
        let s = task.await.unwrap();
        total.latency.extend(s.latency);
        total.errors += s.errors;
        for (k, v) in s.non_2xx {
            *total.non_2xx.entry(k).or_default() += v;
        }
    }
    let window = start.elapsed();
    let send_end = Instant::now();
    let accepted = total.latency.len();
    let drained = if e2e {
        until_delivered(
            &seen,
            accepted,
            send_end,
            Duration::from_secs_f64(a.rx.drain_timeout),
        )
        .await
    } else {
        // Whatever a server that should not deliver delivers anyway.
        tokio::time::sleep(Duration::from_millis(200)).await;
        false
    };
    total.latency.sort();
    let g = seen.lock().unwrap();
    let mut lat = g.latency_us.clone();
    lat.sort_unstable();
    let in_window = g.arrivals.iter().filter(|&&at| at <= send_end).count();
    let last = g.arrivals.iter().max().copied();
    let until_drained = last.map(|l| l.duration_since(start));
    let secs = window.as_secs_f64();
    let non_2xx: usize = total.non_2xx.values().sum();
    let r = json!({
        "label": a.rx.label,
        "mode": mode,
        "connections": a.connections,
        "window_s": secs,
        "accepted": accepted,
        "accepted_rps": accepted as f64 / secs,
        "api_p50_ms": pct_ms(&total.latency, 0.50),
        "api_p99_ms": pct_ms(&total.latency, 0.99),
        "non_2xx": non_2xx,
        "non_2xx_by_status": total.non_2xx,
        "errors": total.errors,
        "delivered": g.ids.len(),
        "delivered_in_window": in_window,
        "delivered_window_mps": in_window as f64 / secs,
        "delivered_until_drained_mps": until_drained
            .filter(|_| e2e)
            .map(|d| g.ids.len() as f64 / d.as_secs_f64()),
        "drained": drained,
        "e2e_p50_ms": if e2e { pct_us_ms(&lat, 0.50) } else { None },
        "e2e_p99_ms": if e2e { pct_us_ms(&lat, 0.99) } else { None },
        "duplicates": g.duplicates,
        "unreadable": g.unreadable,
    });
    println!(
        "{label} {mode}: {c} conns {secs:.1} s: accepted {accepted} ({rps:.0} req/s), API p50 {p50} / p99 {p99} ms, non-2xx {non_2xx}, errors {errors}; delivered {d} ({dw:.0} msg/s in the window, {du} msg/s until drained{dr}), send→delivery p50 {e50} / p99 {e99} ms, duplicates {dup}, unreadable {un}",
        label = a.rx.label,
        c = a.connections,
        rps = accepted as f64 / secs,
        p50 = fmt(r["api_p50_ms"].as_f64(), 2),
        p99 = fmt(r["api_p99_ms"].as_f64(), 2),
        errors = total.errors,
        d = g.ids.len(),
        dw = in_window as f64 / secs,
        du = fmt(r["delivered_until_drained_mps"].as_f64(), 0),
        dr = match (e2e, drained) {
            (false, _) => "",
            (true, true) => ", all",
            (true, false) => ", NOT ALL: drain timeout",
        },
        e50 = fmt(r["e2e_p50_ms"].as_f64(), 1),
        e99 = fmt(r["e2e_p99_ms"].as_f64(), 1),
        dup = g.duplicates,
        un = g.unreadable,
    );
    println!("RESULT {r}");
}

async fn drain(a: Drain) {
    let seen = receiver(a.rx.receiver).await;
    println!("listening {}", a.rx.receiver);
    let start = Instant::now();
    let timeout = Duration::from_secs_f64(a.rx.drain_timeout);
    let drained = if a.expect > 0 {
        until_delivered(&seen, a.expect, start, timeout).await
    } else {
        let idle = Duration::from_secs_f64(a.idle);
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let last = seen.lock().unwrap().arrivals.last().copied();
            if last.is_some_and(|l| l.elapsed() >= idle) || start.elapsed() >= timeout {
                break last.is_some();
            }
        }
    };
    let g = seen.lock().unwrap();
    let n = g.ids.len();
    let mut arrivals = g.arrivals.clone();
    arrivals.sort_unstable();
    let first = arrivals.first().copied();
    let last = arrivals.last().copied();
    // From the first delivery to the last (the worker's start-up is not
    // counted), and from this receiver's start (it is).
    let span = first.zip(last).map(|(f, l)| l.duration_since(f));
    let mps = span
        .filter(|s| n > 1 && !s.is_zero())
        .map(|s| (n - 1) as f64 / s.as_secs_f64());
    // From the first delivery to the one that completes 99 % of the
    // backlog: a rate a few stragglers (a task retried after a pool
    // timeout) do not decide.
    let k = (a.expect.max(n) * 99).div_ceil(100);
    let mps_99 = first
        .zip(arrivals.get(k.saturating_sub(1)).copied())
        .map(|(f, l)| l.duration_since(f))
        .filter(|s| k > 1 && !s.is_zero())
        .map(|s| (k - 1) as f64 / s.as_secs_f64());
    let since_start = last.map(|l| n as f64 / l.duration_since(start).as_secs_f64());
    let to_first = first.map(|f| f.duration_since(start).as_secs_f64());
    let r = json!({
        "label": a.rx.label,
        "mode": "drain",
        "expect": a.expect,
        "delivered": n,
        "drained": drained && (a.expect == 0 || n >= a.expect),
        "drain_mps": mps,
        "drain_99_mps": mps_99,
        "drain_since_start_mps": since_start,
        "first_delivery_s": to_first,
        "span_s": span.map(|s| s.as_secs_f64()),
        "duplicates": g.duplicates,
        "unreadable": g.unreadable,
    });
    println!(
        "{label} drain: {n}{e} delivered{all}, {mps} msg/s first→last, {m99} msg/s first→99 % ({ss} msg/s from the receiver's start; first after {tf} s), duplicates {dup}, unreadable {un}",
        label = a.rx.label,
        e = if a.expect > 0 {
            format!(" of {}", a.expect)
        } else {
            String::new()
        },
        all = if r["drained"].as_bool() == Some(true) {
            ""
        } else {
            " (NOT ALL: timeout)"
        },
        mps = fmt(mps, 0),
        m99 = fmt(mps_99, 0),
        ss = fmt(since_start, 0),
        tf = fmt(to_first, 2),
        dup = g.duplicates,
        un = g.unreadable,
    );
    println!("RESULT {r}");
}

async fn provision(receiver: SocketAddr) {
    use echorelay::core::access::Caller;
    use echorelay::core::access::surface::{ConfigWrite, Keys};
    use echorelay::core::config::{AuthInput, NewTarget};
    use echorelay::core::keys::{Environment, MintRequest};
    use echorelay::prelude::*;

    let relay = EchoRelay::from_env().await.unwrap();
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
    let line = relay.config().create_line(&w, "bench").await.unwrap();
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
                url: format!("http://{receiver}/hook"),
                auth: AuthInput::None,
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
                label: "bench".into(),
            },
        )
        .await
        .unwrap();
    println!("endpoint {}", ep.id);
    println!("key {}", key.plaintext.expose_secret());
}

#[tokio::main]
async fn main() {
    match Cli::parse().mode {
        Mode::E2e(a) => load("e2e", a).await,
        Mode::Accept(a) => load("accept", a).await,
        Mode::Drain(a) => drain(a).await,
        Mode::Provision { receiver } => provision(receiver).await,
    }
}
