//! The relay through the one handle, in memory, with a scripted transport
//! (the HTTP client and its SSRF guard are tested in echorelay-http):
//! accept → queue → sign → deliver → ack, retries with the backoff,
//! dead letters, `Retry-After`, and every refusal at the door (issue 19).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use echorelay::core::access::Caller;
use echorelay::core::access::surface::{ConfigWrite, Keys};
use echorelay::core::audit::{ConfigEntity, ConfigOp, EventKind};
use echorelay::core::clock::ManualClock;
use echorelay::core::config::{AuthInput, NewTarget, TargetPatch};
use echorelay::core::egress::EgressPolicy;
use echorelay::core::ids::{EndpointId, TargetId};
use echorelay::core::keys::{Environment, MintRequest};
use echorelay::core::queue::QueueName;
use echorelay::core::relay::{
    AttemptOutcome, DELIVERY_QUEUE, OutboundRequest, OutboundResponse, RelayConfig, RelayError,
    Transport, TransportError,
};
use echorelay::core::webhook::{SigningSecret, Verifier};
use echorelay::prelude::*;
use secrecy::{ExposeSecret, SecretString};

/// What the scripted transport saw: URL, headers, authorization, body.
#[derive(Debug, Clone)]
struct Seen {
    url: String,
    headers: Vec<(String, String)>,
    authorization: Option<String>,
    body: Vec<u8>,
}

/// Answers from a script, then 200; records every request.
#[derive(Default)]
struct Scripted {
    script: Mutex<VecDeque<Result<OutboundResponse, TransportError>>>,
    seen: Mutex<Vec<Seen>>,
}

impl Scripted {
    fn answering(script: Vec<Result<OutboundResponse, TransportError>>) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.into()),
            seen: Mutex::default(),
        })
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn status(code: u16) -> Result<OutboundResponse, TransportError> {
    Ok(OutboundResponse {
        status: code,
        retry_after: None,
        excerpt: Vec::new(),
    })
}

#[async_trait]
impl Transport for Scripted {
    async fn post(&self, r: OutboundRequest) -> Result<OutboundResponse, TransportError> {
        // What a real client would refuse before connecting.
        EgressPolicy::default().check_url(&r.url)?;
        self.seen.lock().unwrap().push(Seen {
            url: r.url.clone(),
            headers: r
                .headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect(),
            authorization: r
                .authorization
                .as_ref()
                .map(|a| a.expose_secret().to_owned()),
            body: r.body.clone(),
        });
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| status(200))
    }
}

struct World {
    relay: EchoRelay,
    clock: ManualClock,
    key: String,
    viewer_key: String,
    endpoint: EndpointId,
    targets: Vec<(TargetId, String)>,
    project: ProjectId,
}

/// A project with one line, an endpoint and `n` bearer targets; an
/// editor key and a viewer key.
async fn world(n: usize, urls: &[&str]) -> World {
    let clock = ManualClock::at_unix(1_767_225_600);
    let relay = EchoRelay::builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let owner = UserId::random();
    let p = relay
        .config()
        .create_project(owner, None, "relay", "Relay")
        .await
        .unwrap();
    let caller = Caller::dangerous_user_stepped_up(owner, None);
    let w = relay
        .voter()
        .authorize::<ConfigWrite>(&caller, "relay")
        .await
        .unwrap();
    let line = relay.config().create_line(&w, "orders").await.unwrap();
    let endpoint = relay
        .config()
        .create_endpoint(&w, line.id, "in")
        .await
        .unwrap()
        .id;
    let mut targets = Vec::new();
    for i in 0..n {
        let created = relay
            .config()
            .create_target(
                &w,
                line.id,
                NewTarget {
                    name: format!("t{i}"),
                    url: urls.get(i).map_or_else(
                        || format!("https://hooks{i}.example.com/in"),
                        |u| (*u).to_owned(),
                    ),
                    auth: AuthInput::Bearer(SecretString::from(format!("token-{i}"))),
                    signing_secret: None,
                },
            )
            .await
            .unwrap();
        targets.push((
            created.view.id,
            created.signing_secret.expose_secret().to_owned(),
        ));
    }
    let k = relay
        .voter()
        .authorize::<Keys>(&caller, "relay")
        .await
        .unwrap();
    let mint = |role| MintRequest {
        environment: Environment::Live,
        role,
        label: String::new(),
    };
    let key = relay.keys().mint(&k, mint(Role::Editor)).await.unwrap();
    let viewer = relay.keys().mint(&k, mint(Role::Viewer)).await.unwrap();
    World {
        relay,
        clock,
        key: key.plaintext.expose_secret().to_owned(),
        viewer_key: viewer.plaintext.expose_secret().to_owned(),
        endpoint,
        targets,
        project: p.id,
    }
}

fn header<'a>(s: &'a Seen, name: &str) -> &'a str {
    s.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test]
async fn a_message_reaches_every_target_signed_with_its_own_secret() {
    let w = world(3, &[]).await;
    let body = br#"{"b": 2, "a": 1}"#.to_vec();
    let accepted = w
        .relay
        .relay()
        .accept(
            &w.key,
            w.endpoint,
            Some("application/json"),
            None,
            body.clone(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(accepted.deliveries, 3);
    let transport = Scripted::answering(vec![]);
    let worker = w.relay.delivery(transport.clone());
    let attempts = worker.run_once(10).await.unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|a| a.outcome == AttemptOutcome::Delivered)
    );
    let seen = transport.seen();
    for (target, secret) in &w.targets {
        let i = w.targets.iter().position(|(t, _)| t == target).unwrap();
        let s = seen
            .iter()
            .find(|s| s.url == format!("https://hooks{i}.example.com/in"))
            .unwrap();
        // Byte for byte, key order kept.
        assert_eq!(s.body, body);
        assert_eq!(header(s, "content-type"), "application/json");
        assert_eq!(header(s, "webhook-id"), accepted.message.to_string());
        assert_eq!(
            s.authorization.as_deref(),
            Some(format!("Bearer token-{i}").as_str())
        );
        let verifier = Verifier::new([SigningSecret::parse(secret).unwrap()]).unwrap();
        verifier
            .verify(
                header(s, "webhook-id"),
                header(s, "webhook-timestamp"),
                header(s, "webhook-signature"),
                &s.body,
                w.clock.now(),
            )
            .expect("the signature verifies with the target's secret");
        // And not with another target's.
        let other = &w.targets[(i + 1) % 3].1;
        assert!(
            Verifier::new([SigningSecret::parse(other).unwrap()])
                .unwrap()
                .verify(
                    header(s, "webhook-id"),
                    header(s, "webhook-timestamp"),
                    header(s, "webhook-signature"),
                    &s.body,
                    w.clock.now(),
                )
                .is_err()
        );
    }
    // Nothing is left to deliver.
    assert!(worker.run_once(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn failures_retry_with_the_backoff_and_then_deliver_once() {
    let w = world(1, &[]).await;
    let accepted = w
        .relay
        .relay()
        .accept(&w.key, w.endpoint, None, None, b"x".to_vec(), None)
        .await
        .unwrap();
    let transport = Scripted::answering(vec![status(500), Err(TransportError::Timeout)]);
    let worker = w.relay.delivery(transport.clone());
    let first = worker.run_once(10).await.unwrap();
    assert_eq!(first[0].class.as_deref(), Some("http_500"));
    let AttemptOutcome::Retrying(at) = first[0].outcome else {
        panic!("{first:?}");
    };
    assert!(at > w.clock.now());
    // Not due before its retry time.
    assert!(worker.run_once(10).await.unwrap().is_empty());
    w.clock.set(at);
    let second = worker.run_once(10).await.unwrap();
    assert_eq!(second[0].class.as_deref(), Some("timeout"));
    let AttemptOutcome::Retrying(at) = second[0].outcome else {
        panic!("{second:?}");
    };
    w.clock.set(at);
    let third = worker.run_once(10).await.unwrap();
    assert_eq!(third[0].outcome, AttemptOutcome::Delivered);
    assert_eq!(third[0].attempt, 3);
    let seen = transport.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|s| header(s, "webhook-id") == accepted.message.to_string())
    );
    assert!(worker.run_once(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn retry_after_is_honoured_and_final_answers_dead_letter() {
    let w = world(1, &[]).await;
    w.relay
        .relay()
        .accept(&w.key, w.endpoint, None, None, b"x".to_vec(), None)
        .await
        .unwrap();
    let transport = Scripted::answering(vec![
        Ok(OutboundResponse {
            status: 429,
            retry_after: Some(Duration::from_secs(120)),
            excerpt: Vec::new(),
        }),
        status(404),
    ]);
    let worker = w.relay.delivery(transport);
    let first = worker.run_once(10).await.unwrap();
    assert_eq!(
        first[0].outcome,
        AttemptOutcome::Retrying(w.clock.now() + chrono::Duration::seconds(120))
    );
    w.clock.advance(chrono::Duration::seconds(120));
    let second = worker.run_once(10).await.unwrap();
    assert_eq!(second[0].outcome, AttemptOutcome::Dead);
    assert_eq!(second[0].class.as_deref(), Some("http_404"));
    let q = QueueName::new(DELIVERY_QUEUE).unwrap();
    assert_eq!(w.relay.queue().stats(&q).await.unwrap().dead, 1);
}

#[tokio::test]
async fn a_target_that_always_fails_ends_in_the_dead_letters_and_redrive_delivers_it() {
    let w = world(1, &[]).await;
    let relay_cfg = RelayConfig::default();
    w.relay
        .relay()
        .accept(&w.key, w.endpoint, None, None, b"x".to_vec(), None)
        .await
        .unwrap();
    let failing: Vec<_> = (0..relay_cfg.max_attempts).map(|_| status(503)).collect();
    let transport = Scripted::answering(failing);
    let worker = w.relay.delivery(transport.clone());
    let mut last = None;
    for _ in 0..relay_cfg.max_attempts {
        let a = worker.run_once(10).await.unwrap();
        assert_eq!(a.len(), 1);
        if let AttemptOutcome::Retrying(at) = a[0].outcome {
            w.clock.set(at);
        }
        last = Some(a[0].clone());
    }
    assert_eq!(last.unwrap().outcome, AttemptOutcome::Dead);
    let q = QueueName::new(DELIVERY_QUEUE).unwrap();
    let dead = w.relay.queue().dead_jobs(&q, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    w.relay.queue().redrive(&q, dead[0].id).await.unwrap();
    let again = worker.run_once(10).await.unwrap();
    assert_eq!(again[0].outcome, AttemptOutcome::Delivered);
    assert_eq!(
        transport.seen().len(),
        usize::try_from(relay_cfg.max_attempts).unwrap() + 1
    );
}

#[tokio::test]
async fn internal_targets_are_refused_and_dead_lettered_with_their_class() {
    let w = world(
        2,
        &["https://127.0.0.1/in", "https://169.254.169.254/latest"],
    )
    .await;
    w.relay
        .relay()
        .accept(&w.key, w.endpoint, None, None, b"x".to_vec(), None)
        .await
        .unwrap();
    let transport = Scripted::answering(vec![]);
    let worker = w.relay.delivery(transport.clone());
    let attempts = worker.run_once(10).await.unwrap();
    let mut classes: Vec<_> = attempts.iter().map(|a| a.class.clone().unwrap()).collect();
    classes.sort();
    assert_eq!(classes, ["ssrf_loopback", "ssrf_metadata"]);
    assert!(attempts.iter().all(|a| a.outcome == AttemptOutcome::Dead));
    assert!(transport.seen().is_empty());
}

#[tokio::test]
async fn secrets_are_opened_once_per_target_version() {
    let w = world(1, &[]).await;
    let opened = |relay: &EchoRelay| {
        let relay = relay.clone();
        let project = w.project;
        async move {
            relay
                .store()
                .events(Some(project), 0, 1000)
                .await
                .unwrap()
                .iter()
                .filter(|e| {
                    matches!(
                        e.kind,
                        EventKind::Config {
                            entity: ConfigEntity::Target,
                            op: ConfigOp::SecretsOpened,
                            ..
                        }
                    )
                })
                .count()
        }
    };
    let transport = Scripted::answering(vec![]);
    let worker = w.relay.delivery(transport.clone());
    for _ in 0..3 {
        w.relay
            .relay()
            .accept(&w.key, w.endpoint, None, None, b"x".to_vec(), None)
            .await
            .unwrap();
        worker.run_once(10).await.unwrap();
    }
    assert_eq!(
        opened(&w.relay).await,
        1,
        "one audited open for three deliveries"
    );
    // A change of the target (a new token) moves its version: opened again,
    // and the next delivery carries the new token.
    let owner_caller = {
        let members = w
            .relay
            .store()
            .members_page(w.project, None, 10)
            .await
            .unwrap();
        Caller::dangerous_user_stepped_up(members[0].0, None)
    };
    let cw = w
        .relay
        .voter()
        .authorize::<ConfigWrite>(&owner_caller, "relay")
        .await
        .unwrap();
    w.relay
        .config()
        .update_target(
            &cw,
            w.targets[0].0,
            TargetPatch {
                name: None,
                url: None,
                auth: Some(AuthInput::Bearer(SecretString::from("token-new"))),
                signing_secret: None,
            },
        )
        .await
        .unwrap();
    w.relay
        .relay()
        .accept(&w.key, w.endpoint, None, None, b"x".to_vec(), None)
        .await
        .unwrap();
    worker.run_once(10).await.unwrap();
    assert_eq!(opened(&w.relay).await, 2);
    assert_eq!(
        transport.seen().last().unwrap().authorization.as_deref(),
        Some("Bearer token-new")
    );
}

#[tokio::test]
async fn the_door_refuses_what_it_must_and_enqueues_nothing() {
    let w = world(1, &[]).await;
    let relay = w.relay.relay();
    let body = || b"x".to_vec();
    assert!(matches!(
        relay
            .accept("er_live_nope", w.endpoint, None, None, body(), None)
            .await,
        Err(RelayError::Unauthenticated)
    ));
    assert!(matches!(
        relay
            .accept(&w.viewer_key, w.endpoint, None, None, body(), None)
            .await,
        Err(RelayError::Denied)
    ));
    assert!(matches!(
        relay
            .accept(&w.key, EndpointId::random(), None, None, body(), None)
            .await,
        Err(RelayError::UnknownEndpoint)
    ));
    // Another project's endpoint looks exactly like an unknown one.
    let other = world(1, &[]).await;
    assert!(matches!(
        relay
            .accept(&w.key, other.endpoint, None, None, body(), None)
            .await,
        Err(RelayError::UnknownEndpoint)
    ));
    let limit = relay.config().max_body;
    assert!(matches!(
        relay
            .accept(&w.key, w.endpoint, None, None, vec![0; limit + 1], None)
            .await,
        Err(RelayError::BodyTooLarge { .. })
    ));
    assert!(matches!(
        relay
            .accept(
                &w.key,
                w.endpoint,
                Some("text/plain\r\nx: y"),
                None,
                body(),
                None
            )
            .await,
        Err(RelayError::BadContentType)
    ));
    let q = QueueName::new(DELIVERY_QUEUE).unwrap();
    assert_eq!(w.relay.queue().stats(&q).await.unwrap().waiting, 0);
    // The largest body is accepted, and a revoked key fails on its next
    // request.
    relay
        .accept(&w.key, w.endpoint, None, None, vec![7; limit], None)
        .await
        .unwrap();
    let owner = w
        .relay
        .store()
        .members_page(w.project, None, 10)
        .await
        .unwrap()[0]
        .0;
    let k = w
        .relay
        .voter()
        .authorize::<Keys>(&Caller::dangerous_user_stepped_up(owner, None), "relay")
        .await
        .unwrap();
    let id = w.relay.keys().verify(&w.key).await.unwrap().key_id();
    w.relay.keys().revoke(&k, id).await.unwrap();
    assert!(matches!(
        relay
            .accept(&w.key, w.endpoint, None, None, body(), None)
            .await,
        Err(RelayError::Unauthenticated)
    ));
}

fn job(body: &[u8], content_type: Option<&str>) -> echorelay::core::relay::DeliveryJob {
    echorelay::core::relay::DeliveryJob {
        message: echorelay::core::ids::MessageId::from_bytes([0x11; 16]),
        project: ProjectId::from_bytes([0x22; 16]),
        endpoint: EndpointId::from_bytes([0x33; 16]),
        target: TargetId::from_bytes([0x44; 16]),
        received_at: chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
        content_type: content_type.map(str::to_owned),
        body: body.to_vec(),
    }
}

/// Delivery job payloads (docs/FORMATS.md Part 7) round-trip, bodies with
/// newlines included, and every malformed one is refused; the fuzz
/// target's seeds (`fuzz/corpus/delivery_job`, written by this test with
/// `ECHORELAY_WRITE_SEEDS=1`) reach the accept path and the refusals.
#[test]
fn delivery_jobs_round_trip_and_malformed_payloads_are_refused() {
    use echorelay::core::relay::DeliveryJob;
    let valid = [
        (
            "valid-json",
            job(br#"{"order": 42}"#, Some("application/json")),
        ),
        (
            "valid-newlines",
            job(b"line 1\nline 2\n\n", Some("text/plain; charset=utf-8")),
        ),
        ("valid-empty", job(b"", None)),
        (
            "valid-binary",
            job(&[0, 255, 10, 13, 0], Some("application/octet-stream")),
        ),
    ];
    for (_, j) in &valid {
        assert_eq!(&DeliveryJob::decode(&j.encode()).unwrap(), j);
    }
    let good = valid[0].1.encode();
    let header_end = 7 + good[7..].iter().position(|b| *b == b'\n').unwrap();
    let header = std::str::from_utf8(&good[7..header_end])
        .unwrap()
        .to_owned();
    let with_header = |h: &str| {
        let mut v = b"erjob1\n".to_vec();
        v.extend_from_slice(h.as_bytes());
        v.extend_from_slice(b"\n{}");
        v
    };
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("bad-empty", Vec::new()),
        ("bad-magic", good[1..].to_vec()),
        ("bad-version", [b"erjob2".as_slice(), &good[6..]].concat()),
        ("bad-no-header-end", good[..header_end].to_vec()),
        (
            "bad-unknown-field",
            with_header(&header.replacen('{', r#"{"extra":1,"#, 1)),
        ),
        ("bad-id", with_header(&header.replacen("msg_", "key_", 1))),
        (
            "bad-content-type",
            with_header(&header.replace("application/json", "a\u{7f}b")),
        ),
        ("bad-not-json", with_header("{\"message\":")),
    ];
    for (name, payload) in &bad {
        assert!(DeliveryJob::decode(payload).is_err(), "{name}");
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/delivery_job");
    if std::env::var("ECHORELAY_WRITE_SEEDS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, j) in &valid {
            std::fs::write(dir.join(format!("seed-{name}")), j.encode()).unwrap();
        }
        for (name, payload) in &bad {
            std::fs::write(dir.join(format!("seed-{name}")), payload).unwrap();
        }
    }
    let (mut accepted, mut refused) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let decoded = DeliveryJob::decode(&std::fs::read(&p).unwrap());
        if name.starts_with("seed-valid-") {
            decoded.unwrap_or_else(|e| panic!("{name}: {e}"));
            accepted += 1;
        } else {
            assert!(decoded.is_err(), "{name}");
            refused += 1;
        }
    }
    assert_eq!((accepted, refused), (4, 8));
}

#[test]
fn the_delivery_rule_maps_every_answer() {
    use echorelay::core::queue::{ErrorClass, NackPolicy};
    use echorelay::core::relay::{Decision, decide};
    let answer = |status, retry_after| {
        Ok(OutboundResponse {
            status,
            retry_after,
            excerpt: Vec::new(),
        })
    };
    let d = |r: &Result<OutboundResponse, TransportError>, final_4xx| decide(r, final_4xx);
    for s in [200, 201, 204, 299] {
        assert_eq!(d(&answer(s, None), true), (Decision::Ack, None));
    }
    for s in [408, 429, 500, 502, 503, 599] {
        assert_eq!(
            d(&answer(s, None), true),
            (
                Decision::Retry(NackPolicy::Backoff),
                Some(format!("http_{s}"))
            )
        );
    }
    let after = Some(Duration::from_secs(30));
    for s in [429, 503] {
        assert_eq!(
            d(&answer(s, after), true).0,
            Decision::Retry(NackPolicy::After(Duration::from_secs(30)))
        );
    }
    // Retry-After on other answers is not a promise: the backoff rules.
    assert_eq!(
        d(&answer(500, after), true).0,
        Decision::Retry(NackPolicy::Backoff)
    );
    for s in [199, 300, 302, 400, 401, 403, 404, 410, 422] {
        assert_eq!(d(&answer(s, None), true).0, Decision::Dead, "{s}");
        assert_eq!(
            d(&answer(s, None), false).0,
            Decision::Retry(NackPolicy::Backoff),
            "{s} with final_4xx off"
        );
    }
    for e in [
        TransportError::Timeout,
        TransportError::Dns,
        TransportError::Connect("refused".into()),
        TransportError::Tls("bad certificate".into()),
        TransportError::Protocol("garbage".into()),
    ] {
        let class = e.class();
        assert_eq!(
            d(&Err(e), true),
            (Decision::Retry(NackPolicy::Backoff), Some(class.to_owned()))
        );
    }
    let refused = EgressPolicy::default()
        .check_url("https://127.0.0.1/")
        .unwrap_err();
    assert_eq!(
        d(&Err(TransportError::Refused(refused)), false),
        (Decision::Dead, Some("ssrf_loopback".into()))
    );
    // Every class the relay records is one the queue takes.
    for class in [
        "http_100",
        "http_599",
        "timeout",
        "dns",
        "connect",
        "tls",
        "protocol",
        "target_gone",
        "secret_unavailable",
        "signing_secret",
        "signing",
        "malformed_job",
        "store",
        "error",
    ] {
        ErrorClass::new(class).unwrap();
    }
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retried_post_answer_the_first_message_and_enqueue_nothing() {
    let w = world(2, &[]).await;
    let relay = w.relay.relay();
    let q = QueueName::new(DELIVERY_QUEUE).unwrap();
    let first = relay
        .accept(
            &w.key,
            w.endpoint,
            None,
            Some("order-42"),
            b"x".to_vec(),
            None,
        )
        .await
        .unwrap();
    assert!(!first.replayed);
    assert_eq!(first.deliveries, 2);
    let again = relay
        .accept(
            &w.key,
            w.endpoint,
            None,
            Some("order-42"),
            b"x".to_vec(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (again.message, again.deliveries, again.replayed),
        (first.message, 0, true)
    );
    assert_eq!(w.relay.queue().stats(&q).await.unwrap().waiting, 2);
    // Another key is another message; after 24 h the key is free again.
    let other = relay
        .accept(
            &w.key,
            w.endpoint,
            None,
            Some("order-43"),
            b"x".to_vec(),
            None,
        )
        .await
        .unwrap();
    assert_ne!(other.message, first.message);
    w.clock.advance(chrono::Duration::hours(24));
    let later = relay
        .accept(
            &w.key,
            w.endpoint,
            None,
            Some("order-42"),
            b"x".to_vec(),
            None,
        )
        .await
        .unwrap();
    assert!(!later.replayed);
    assert_ne!(later.message, first.message);
    // Malformed keys are refused before anything is claimed or enqueued.
    let long = "k".repeat(256);
    for bad in ["", "with space", "tab\t", "é", long.as_str()] {
        assert!(
            matches!(
                relay
                    .accept(&w.key, w.endpoint, None, Some(bad), b"x".to_vec(), None)
                    .await,
                Err(RelayError::BadIdempotencyKey)
            ),
            "{bad:?}"
        );
    }
    // An unauthenticated or refused request claims nothing: the key is
    // still free for the real sender.
    assert!(
        relay
            .accept(
                "er_live_nope",
                w.endpoint,
                None,
                Some("order-99"),
                b"x".to_vec(),
                None
            )
            .await
            .is_err()
    );
    let real = relay
        .accept(
            &w.key,
            w.endpoint,
            None,
            Some("order-99"),
            b"x".to_vec(),
            None,
        )
        .await
        .unwrap();
    assert!(!real.replayed);
}

/// The delivery log as a project reads it (`EchoRelay::operations`):
/// every attempt with its status, class, latency and a capped excerpt;
/// each delivery's state; dead letters per target; redrive under the
/// ingest surface only (a viewer reads but may not redrive), once; no
/// body and no credential in what is read.
#[tokio::test]
async fn operations_read_the_log_and_redrive_dead_letters_under_the_voter() {
    use echorelay::core::access::surface::{ConfigRead, Ingest};
    use echorelay::core::deliveries::{AttemptResult, DeliveryState, MAX_EXCERPT};
    let w = world(2, &[]).await;
    let caller = Caller::api_key(w.relay.keys().verify(&w.key).await.unwrap(), None);
    let viewer = Caller::api_key(w.relay.keys().verify(&w.viewer_key).await.unwrap(), None);
    let read = w
        .relay
        .voter()
        .authorize::<ConfigRead>(&viewer, "relay")
        .await
        .unwrap();
    assert!(matches!(
        w.relay.voter().authorize::<Ingest>(&viewer, "relay").await,
        Err(Error::Denied(_))
    ));
    let ingest = w
        .relay
        .voter()
        .authorize::<Ingest>(&caller, "relay")
        .await
        .unwrap();
    let accepted = w
        .relay
        .relay()
        .accept(
            &w.key,
            w.endpoint,
            Some("text/plain"),
            None,
            b"hello".to_vec(),
            None,
        )
        .await
        .unwrap();
    let ops = w.relay.operations();
    let detail = ops.message(&read, accepted.message).await.unwrap();
    assert_eq!(detail.message.size, 5);
    assert_eq!(detail.message.content_type.as_deref(), Some("text/plain"));
    assert_eq!(detail.deliveries.len(), 2);
    assert!(
        detail
            .deliveries
            .iter()
            .all(|d| d.state == DeliveryState::Pending)
    );

    // Target 0 refuses with a long body, target 1 takes it.
    let (t0, t1) = (w.targets[0].0, w.targets[1].0);
    let long = vec![b'e'; 3 * MAX_EXCERPT];
    let transport = Arc::new(ByTarget {
        answers: Mutex::new(vec![(
            "https://hooks0.example.com/in".to_owned(),
            OutboundResponse {
                status: 400,
                retry_after: None,
                excerpt: long,
            },
        )]),
    });
    let worker = w.relay.delivery(transport);
    let attempts = worker.run_once(10).await.unwrap();
    assert_eq!(attempts.len(), 2);
    let detail = ops.message(&read, accepted.message).await.unwrap();
    let state = |t| {
        detail
            .deliveries
            .iter()
            .find(|d| d.target == t)
            .unwrap()
            .clone()
    };
    assert_eq!(state(t0).state, DeliveryState::Dead);
    assert_eq!(state(t0).last_class.as_deref(), Some("http_400"));
    assert_eq!(state(t1).state, DeliveryState::Delivered);
    let refused = detail.attempts.iter().find(|a| a.target == t0).unwrap();
    assert_eq!(refused.result, AttemptResult::Dead);
    assert_eq!(refused.status, Some(400));
    assert_eq!(refused.excerpt.as_ref().map(String::len), Some(MAX_EXCERPT));
    let text = format!("{detail:?}");
    assert!(
        !text.contains("token-0") && !text.contains("hello"),
        "{text}"
    );
    assert_eq!(
        ops.counts(&read).await.unwrap(),
        echorelay::core::deliveries::DeliveryCounts {
            delivered: 1,
            dead: 1,
            ..Default::default()
        }
    );
    let dead = ops.dead_letters(&read, t0, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        ops.dead_letters(&read, t1, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        ops.dead_letters(&read, t0, None, 0).await,
        Err(Error::InvalidInput(_))
    ));

    // Redrive: once; not for a delivery that is not dead; not for another
    // project's.
    assert!(matches!(
        ops.redrive(&ingest, t1, accepted.message).await,
        Err(Error::Store(echorelay::core::StoreError::Conflict { .. }))
    ));
    ops.redrive(&ingest, t0, accepted.message).await.unwrap();
    assert!(matches!(
        ops.redrive(&ingest, t0, accepted.message).await,
        Err(Error::Store(echorelay::core::StoreError::Conflict { .. }))
    ));
    let d = ops.message(&read, accepted.message).await.unwrap();
    assert_eq!(
        d.deliveries.iter().find(|d| d.target == t0).unwrap().state,
        DeliveryState::Pending
    );
    let again = worker.run_once(10).await.unwrap();
    assert_eq!(again[0].outcome, AttemptOutcome::Delivered);
    let d = ops.message(&read, accepted.message).await.unwrap();
    let d0 = d.deliveries.iter().find(|d| d.target == t0).unwrap();
    assert_eq!((d0.state, d0.attempts), (DeliveryState::Delivered, 2));

    assert_eq!(
        ops.messages(&read, None, 10).await.unwrap().len(),
        1,
        "one message"
    );
}

/// Answers per URL from a list (then 200).
struct ByTarget {
    answers: Mutex<Vec<(String, OutboundResponse)>>,
}

#[async_trait]
impl Transport for ByTarget {
    async fn post(&self, r: OutboundRequest) -> Result<OutboundResponse, TransportError> {
        let mut answers = self.answers.lock().unwrap();
        match answers.iter().position(|(u, _)| *u == r.url) {
            Some(i) => Ok(answers.remove(i).1),
            None => status(200),
        }
    }
}

/// Redrive all of a target's dead letters, more than one page; a dead
/// job redriven behind the log's back still lets the log be redriven
/// once (the queue refuses the second).
#[tokio::test]
async fn redrive_all_takes_every_dead_letter_of_a_target() {
    use echorelay::core::access::surface::{ConfigRead, Ingest};
    let w = world(1, &[]).await;
    let caller = Caller::api_key(w.relay.keys().verify(&w.key).await.unwrap(), None);
    let ingest = w
        .relay
        .voter()
        .authorize::<Ingest>(&caller, "relay")
        .await
        .unwrap();
    let read = w
        .relay
        .voter()
        .authorize::<ConfigRead>(&caller, "relay")
        .await
        .unwrap();
    for _ in 0..7 {
        w.relay
            .relay()
            .accept(&w.key, w.endpoint, None, None, b"x".to_vec(), None)
            .await
            .unwrap();
    }
    let worker = w
        .relay
        .delivery(Scripted::answering((0..7).map(|_| status(410)).collect()));
    assert_eq!(worker.run_once(10).await.unwrap().len(), 7);
    let t = w.targets[0].0;
    assert_eq!(
        w.relay
            .operations()
            .dead_letters(&read, t, None, 500)
            .await
            .unwrap()
            .len(),
        7
    );
    let all = w.relay.operations().redrive_all(&ingest, t).await.unwrap();
    assert_eq!((all.redriven, all.more), (7, false));
    assert!(
        w.relay
            .operations()
            .dead_letters(&read, t, None, 500)
            .await
            .unwrap()
            .is_empty()
    );
    let delivered = worker.run_once(10).await.unwrap();
    assert_eq!(delivered.len(), 7);
    assert!(
        delivered
            .iter()
            .all(|a| a.outcome == AttemptOutcome::Delivered)
    );
    let counts = w.relay.operations().counts(&read).await.unwrap();
    assert_eq!((counts.delivered, counts.dead), (7, 0));
}

/// One message's delivery jobs are one enqueue, and an enqueue holds at
/// most `MAX_BATCH` (1,000) jobs: a line of 1,000 targets takes a message,
/// one of 1,001 refuses it whole and enqueues nothing.
#[tokio::test]
async fn a_line_of_more_targets_than_one_enqueue_holds_refuses_the_message_whole() {
    use echorelay::core::queue::MAX_BATCH;
    let w = world(MAX_BATCH, &[]).await;
    let relay = w.relay.relay();
    let q = QueueName::new(DELIVERY_QUEUE).unwrap();
    let accepted = relay
        .accept(&w.key, w.endpoint, None, None, b"x".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(accepted.deliveries, MAX_BATCH);
    assert_eq!(w.relay.queue().stats(&q).await.unwrap().waiting, 1000);

    let owner = w
        .relay
        .store()
        .members_page(w.project, None, 10)
        .await
        .unwrap()[0]
        .0;
    let grant = w
        .relay
        .voter()
        .authorize::<ConfigWrite>(&Caller::dangerous_user_stepped_up(owner, None), "relay")
        .await
        .unwrap();
    let line = w
        .relay
        .store()
        .target(w.project, w.targets[0].0)
        .await
        .unwrap()
        .unwrap()
        .line;
    w.relay
        .config()
        .create_target(
            &grant,
            line,
            NewTarget {
                name: "one-too-many".into(),
                url: "https://hooks.example.com/in".into(),
                auth: AuthInput::None,
                signing_secret: None,
            },
        )
        .await
        .unwrap();
    let refused = relay
        .accept(&w.key, w.endpoint, None, None, b"x".to_vec(), None)
        .await;
    assert!(
        matches!(refused, Err(RelayError::TooManyTargets { targets: 1001 })),
        "{refused:?}"
    );
    assert_eq!(w.relay.queue().stats(&q).await.unwrap().waiting, 1000);
}

/// The delivery log's retention: messages received more than `keep` ago
/// go, with their deliveries; a retention of zero takes everything up to
/// now; a negative one is refused.
#[tokio::test]
async fn purge_log_removes_the_messages_older_than_the_retention() {
    let w = world(1, &[]).await;
    let relay = w.relay.relay();
    let ops = w.relay.operations();
    let old = relay
        .accept(&w.key, w.endpoint, None, None, b"old".to_vec(), None)
        .await
        .unwrap();
    w.clock.advance(chrono::Duration::hours(1));
    for _ in 0..2 {
        relay
            .accept(&w.key, w.endpoint, None, None, b"new".to_vec(), None)
            .await
            .unwrap();
    }
    w.clock.advance(chrono::Duration::minutes(1));
    let listed = |w: &World| {
        let store = w.relay.store().clone();
        let project = w.project;
        async move {
            store
                .messages_page(project, None, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
        }
    };
    // Kept for 30 minutes: the message of an hour ago goes.
    assert_eq!(
        ops.purge_log(chrono::Duration::minutes(30)).await.unwrap(),
        1
    );
    let left = listed(&w).await;
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&old.message));
    assert!(matches!(
        ops.purge_log(chrono::Duration::seconds(-1)).await,
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(listed(&w).await.len(), 2, "a refused purge removes nothing");
    assert_eq!(ops.purge_log(chrono::Duration::zero()).await.unwrap(), 2);
    assert!(listed(&w).await.is_empty());
}

/// One redrive-all takes at most `MAX_REDRIVE_ALL` (1,000) dead letters,
/// in full pages, and says whether more are left; the next one takes them.
#[tokio::test]
async fn redrive_all_stops_at_its_cap_and_says_more_are_left() {
    use echorelay::core::access::surface::Ingest;
    use echorelay::core::deliveries::MAX_REDRIVE_ALL;
    let w = world(1, &[]).await;
    let caller = Caller::api_key(w.relay.keys().verify(&w.key).await.unwrap(), None);
    let ingest = w
        .relay
        .voter()
        .authorize::<Ingest>(&caller, "relay")
        .await
        .unwrap();
    let n = MAX_REDRIVE_ALL + 1;
    for _ in 0..n {
        w.relay
            .relay()
            .accept(&w.key, w.endpoint, None, None, b"x".to_vec(), None)
            .await
            .unwrap();
    }
    let worker = w
        .relay
        .delivery(Scripted::answering((0..n).map(|_| status(410)).collect()));
    let mut died = 0;
    while died < n {
        let ran = worker.run_once(100).await.unwrap();
        assert!(!ran.is_empty());
        died += ran.len();
    }
    let t = w.targets[0].0;
    let ops = w.relay.operations();
    let first = ops.redrive_all(&ingest, t).await.unwrap();
    assert_eq!((first.redriven, first.more), (1000, true));
    let rest = ops.redrive_all(&ingest, t).await.unwrap();
    assert_eq!((rest.redriven, rest.more), (1, false));
}
