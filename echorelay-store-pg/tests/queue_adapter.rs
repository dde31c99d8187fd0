//! The Postgres queue adapter on its own (the port, called with explicit
//! times): de-duplication, disjoint reservations under `SKIP LOCKED`,
//! stale tokens, expiry at exactly `now`, attempts and the dead-letter
//! set, LISTEN/NOTIFY across processes, and the reserve path's index. The
//! shared suite (`queue_conformance.rs`) checks every rule on every
//! backend; these tests check what is Postgres's own. Skips without
//! `DATABASE_URL` (unless `ECHORELAY_REQUIRE_SERVICES=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use echorelay_core::queue::{
    DedupKey, ErrorClass, JobId, LeaseNonce, NackOutcome, NewJob, Queue, QueueError, QueueName,
    QueueStats, Retry,
};
use echorelay_store_pg::{PgStore, test_database};
use rand::RngCore;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_893_456_000, 0).unwrap()
}

fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s)
}

fn q(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

fn job(payload: &[u8], run_at: DateTime<Utc>) -> NewJob {
    NewJob {
        id: JobId::random(),
        payload: payload.to_vec(),
        run_at,
        max_attempts: 3,
        dedup_key: None,
    }
}

fn keyed(key: &str, run_at: DateTime<Utc>) -> NewJob {
    NewJob {
        dedup_key: Some(DedupKey::new(key).unwrap()),
        ..job(key.as_bytes(), run_at)
    }
}

fn class(c: &str) -> ErrorClass {
    ErrorClass::new(c).unwrap()
}

fn unique(prefix: &str) -> String {
    let mut b = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("{prefix}-{}", hex::encode(b))
}

async fn rows(store: &PgStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM queue_jobs")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_goes_through_enqueue_reserve_ack_and_is_deleted() {
    let Some(db) = test_database().await else {
        return;
    };
    let s = db.fresh_store().await.unwrap();
    let jobs = q("jobs");
    let (a, b, c) = (
        job(b"a", t0()),
        job(b"b", t0() - secs(5)),
        job(b"c", t0() + secs(60)),
    );
    let ids = s
        .enqueue(&jobs, vec![a.clone(), b.clone(), c.clone()], t0())
        .await
        .unwrap();
    assert_eq!(ids, vec![a.id, b.id, c.id]);
    assert_eq!(
        s.stats(&jobs, t0()).await.unwrap(),
        QueueStats {
            waiting: 2,
            delayed: 1,
            in_flight: 0,
            dead: 0
        }
    );
    // Earliest first; the delayed one is not due.
    let r = s
        .reserve(&jobs, 10, LeaseNonce::random(), t0() + secs(30), t0())
        .await
        .unwrap();
    assert_eq!(
        r.iter().map(|j| j.id()).collect::<Vec<_>>(),
        vec![b.id, a.id]
    );
    assert_eq!(r[0].payload, b"b");
    assert_eq!(r[0].attempt, 1);
    assert_eq!(r[0].token.attempt(), 1);
    assert_eq!(r[0].max_attempts, 3);
    assert_eq!(r[0].enqueued_at, t0());
    assert_eq!(r[0].lease_until, t0() + secs(30));
    assert_eq!(s.stats(&jobs, t0()).await.unwrap().in_flight, 2);
    s.ack(&r[0].token, t0() + secs(1)).await.unwrap();
    assert_eq!(
        s.ack(&r[0].token, t0() + secs(1)).await,
        Err(QueueError::StaleLease)
    );
    let out = s
        .ack_many(&[r[1].token, r[1].token, r[0].token], t0() + secs(2))
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            Ok(()),
            Err(QueueError::StaleLease),
            Err(QueueError::StaleLease)
        ]
    );
    assert_eq!(rows(&s).await, 1, "acked jobs are deleted, not kept");
    // Another queue sees nothing of this one.
    assert_eq!(
        s.stats(&q("other"), t0()).await.unwrap(),
        QueueStats::default()
    );
    assert!(
        s.reserve(
            &q("other"),
            5,
            LeaseNonce::random(),
            t0() + secs(99),
            t0() + secs(90)
        )
        .await
        .unwrap()
        .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_keys_hold_while_live_and_enqueue_is_all_or_nothing() {
    let Some(db) = test_database().await else {
        return;
    };
    let s = db.fresh_store().await.unwrap();
    let jobs = q("jobs");
    let first = keyed("order-1", t0());
    let id = s.enqueue(&jobs, vec![first.clone()], t0()).await.unwrap();
    assert_eq!(id, vec![first.id]);
    // Same key again, and twice within one batch: the holder's id.
    let (again, twin, free, other) = (
        keyed("order-1", t0()),
        keyed("order-2", t0()),
        job(b"x", t0()),
        keyed("order-2", t0()),
    );
    let ids = s
        .enqueue(
            &jobs,
            vec![again.clone(), twin.clone(), free.clone(), other.clone()],
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(ids, vec![first.id, twin.id, free.id, twin.id]);
    assert_eq!(rows(&s).await, 3);
    // The key is per queue.
    let elsewhere = keyed("order-1", t0());
    assert_eq!(
        s.enqueue(&q("elsewhere"), vec![elsewhere.clone()], t0())
            .await
            .unwrap(),
        vec![elsewhere.id]
    );
    // In flight still holds it; dead frees it.
    let r = s
        .reserve(&jobs, 1, LeaseNonce::random(), t0() + secs(10), t0())
        .await
        .unwrap();
    assert_eq!(r[0].id(), first.id);
    assert_eq!(
        s.enqueue(&jobs, vec![keyed("order-1", t0())], t0())
            .await
            .unwrap(),
        vec![first.id]
    );
    assert_eq!(
        s.nack(&r[0].token, Retry::Never, &class("http_410"), t0())
            .await
            .unwrap(),
        NackOutcome::Dead
    );
    let fresh = keyed("order-1", t0());
    assert_eq!(
        s.enqueue(&jobs, vec![fresh.clone()], t0()).await.unwrap(),
        vec![fresh.id]
    );
    // The dead job redriven while the key is held again: redriven, keyless.
    s.redrive(&jobs, first.id, t0()).await.unwrap();
    let dup: Option<String> = sqlx::query_scalar("SELECT dedup_key FROM queue_jobs WHERE id = $1")
        .bind(&first.id.as_bytes()[..])
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(dup, None);

    // All or nothing: one job of the batch fails, none is stored.
    let before = rows(&s).await;
    let bad_time = job(b"late", DateTime::<Utc>::MIN_UTC);
    let err = s
        .enqueue(&jobs, vec![job(b"ok", t0()), bad_time], t0())
        .await
        .unwrap_err();
    assert_eq!(err, QueueError::InvalidArgument("time out of range"));
    let replayed = NewJob {
        id: free.id,
        ..job(b"replay", t0())
    };
    let err = s
        .enqueue(&jobs, vec![keyed("order-9", t0()), replayed], t0())
        .await
        .unwrap_err();
    assert_eq!(err, QueueError::InvalidArgument("job id already exists"));
    assert_eq!(rows(&s).await, before);
    assert!(
        s.enqueue(&jobs, vec![keyed("order-9", t0())], t0())
            .await
            .is_ok(),
        "the failed batch took no key"
    );
}

/// Eight reservers on four stores (pools), released together over one
/// backlog, get disjoint jobs that cover it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservers_get_disjoint_jobs() {
    let Some(db) = test_database().await else {
        return;
    };
    let s = db.fresh_store().await.unwrap();
    let jobs = q("jobs");
    let mut all = HashSet::new();
    for _ in 0..4 {
        let batch: Vec<NewJob> = (0..500).map(|i| job(&[i as u8], t0())).collect();
        all.extend(s.enqueue(&jobs, batch, t0()).await.unwrap());
    }
    let mut stores = vec![s.clone()];
    for _ in 0..3 {
        stores.push(db.another_process(&s, |o| o).await.unwrap());
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (st, barrier, jobs) = (stores[i % 4].clone(), barrier.clone(), jobs.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut got = Vec::new();
            loop {
                let r = st
                    .reserve(&jobs, 7, LeaseNonce::random(), t0() + secs(60), t0())
                    .await
                    .unwrap();
                if r.is_empty() {
                    return got;
                }
                got.extend(r.into_iter().map(|j| j.id()));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut per_task = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        per_task.push(got.len());
        for id in got {
            assert!(seen.insert(id), "{id} handed out twice");
        }
    }
    assert_eq!(seen, all);
    println!("2000 jobs over 8 reservers: {per_task:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_tokens_change_nothing_and_a_lease_ending_now_has_expired() {
    let Some(db) = test_database().await else {
        return;
    };
    let s = db.fresh_store().await.unwrap();
    let jobs = q("jobs");
    s.enqueue(&jobs, vec![job(b"x", t0())], t0()).await.unwrap();
    let until = t0() + secs(10);
    let a = s
        .reserve(&jobs, 1, LeaseNonce::random(), until, t0())
        .await
        .unwrap()
        .remove(0);
    // One microsecond before the end the lease holds.
    let just_before = until - TimeDelta::microseconds(1);
    s.extend(&a.token, until, just_before).await.unwrap();
    // Exactly at its end it has expired: every token operation is stale,
    // and the job is waiting.
    for r in [
        s.ack(&a.token, until).await,
        s.extend(&a.token, until + secs(5), until).await,
        s.nack(&a.token, Retry::At(until), &class("x"), until)
            .await
            .map(|_| ()),
    ] {
        assert_eq!(r, Err(QueueError::StaleLease));
    }
    assert_eq!(s.stats(&jobs, until).await.unwrap().waiting, 1);
    // Re-reserved by B at that instant: A's token stays refused, even at
    // a time inside A's old lease; B's works.
    let b = s
        .reserve(&jobs, 1, LeaseNonce::random(), until + secs(10), until)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(b.id(), a.id());
    assert_eq!(b.attempt, 2);
    assert_eq!(
        s.ack(&a.token, t0() + secs(1)).await,
        Err(QueueError::StaleLease)
    );
    assert_eq!(
        s.ack_many(&[a.token], t0() + secs(1)).await.unwrap(),
        vec![Err(QueueError::StaleLease)]
    );
    // A forged token (right job, another nonce) is stale too.
    let forged = echorelay_core::queue::LeaseToken::new(a.id(), LeaseNonce::random(), 2);
    assert_eq!(
        s.ack(&forged, until + secs(1)).await,
        Err(QueueError::StaleLease)
    );
    s.ack(&b.token, until + secs(1)).await.unwrap();
    assert_eq!(rows(&s).await, 0);
    // Bad arguments are typed errors and change nothing.
    assert!(matches!(
        s.reserve(&jobs, 0, LeaseNonce::random(), until, t0()).await,
        Err(QueueError::InvalidArgument(_))
    ));
    assert!(matches!(
        s.reserve(&jobs, 1001, LeaseNonce::random(), until, t0())
            .await,
        Err(QueueError::InvalidArgument(_))
    ));
    assert!(matches!(
        s.reserve(&jobs, 1, LeaseNonce::random(), t0(), t0()).await,
        Err(QueueError::InvalidArgument(_))
    ));
    assert_eq!(
        s.redrive(&jobs, JobId::random(), t0()).await,
        Err(QueueError::NotDead)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_counted_and_spent_jobs_go_dead() {
    let Some(db) = test_database().await else {
        return;
    };
    let s = db.fresh_store().await.unwrap();
    let jobs = q("jobs");
    let j = NewJob {
        max_attempts: 2,
        ..job(b"two", t0())
    };
    s.enqueue(&jobs, vec![j.clone()], t0()).await.unwrap();
    let lease = |t: DateTime<Utc>| t + secs(30);
    let r1 = s
        .reserve(&jobs, 1, LeaseNonce::random(), lease(t0()), t0())
        .await
        .unwrap()
        .remove(0);
    let retry = t0() + secs(5);
    assert_eq!(
        s.nack(
            &r1.token,
            Retry::At(retry),
            &class("http_503"),
            t0() + secs(1)
        )
        .await
        .unwrap(),
        NackOutcome::Retrying(retry)
    );
    assert_eq!(
        s.stats(&jobs, t0() + secs(1)).await.unwrap(),
        QueueStats {
            waiting: 0,
            delayed: 1,
            in_flight: 0,
            dead: 0
        }
    );
    assert!(
        s.reserve(&jobs, 1, LeaseNonce::random(), lease(t0()), t0() + secs(4))
            .await
            .unwrap()
            .is_empty()
    );
    let r2 = s
        .reserve(&jobs, 1, LeaseNonce::random(), lease(retry), retry)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(r2.attempt, 2);
    // Attempts reached max: a retry asked for is dead instead.
    assert_eq!(
        s.nack(
            &r2.token,
            Retry::At(retry + secs(5)),
            &class("http_503"),
            retry
        )
        .await
        .unwrap(),
        NackOutcome::Dead
    );
    let dead = s.dead_jobs(&jobs, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id, dead[0].attempts, dead[0].max_attempts),
        (j.id, 2, 2)
    );
    assert_eq!(dead[0].error_class.as_str(), "http_503");
    assert_eq!(dead[0].died_at, retry);
    assert_eq!(dead[0].payload, b"two");
    // Redrive: waiting now, attempts from zero.
    s.redrive(&jobs, j.id, retry).await.unwrap();
    assert_eq!(
        s.redrive(&jobs, j.id, retry).await,
        Err(QueueError::NotDead)
    );
    let r3 = s
        .reserve(&jobs, 1, LeaseNonce::random(), lease(retry), retry)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(r3.attempt, 1);

    // Expired leases on the last attempt: dead at reserve with
    // lease_expired, and the batch is topped up with live jobs.
    let spent: Vec<NewJob> = (0..3)
        .map(|i| NewJob {
            max_attempts: 1,
            ..job(&[i], t0() - secs(100))
        })
        .collect();
    let spent_ids: HashSet<JobId> = spent.iter().map(|j| j.id).collect();
    s.enqueue(&jobs, spent, t0()).await.unwrap();
    let held = s
        .reserve(&jobs, 3, LeaseNonce::random(), t0() + secs(1), t0())
        .await
        .unwrap();
    assert_eq!(
        held.iter().map(|j| j.id()).collect::<HashSet<_>>(),
        spent_ids
    );
    let fresh: Vec<NewJob> = (0..2).map(|i| job(&[i], t0() + secs(2))).collect();
    let fresh_ids: HashSet<JobId> = fresh.iter().map(|j| j.id).collect();
    s.enqueue(&jobs, fresh, t0()).await.unwrap();
    let later = t0() + secs(3);
    let got = s
        .reserve(&jobs, 3, LeaseNonce::random(), later + secs(10), later)
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|j| j.id()).collect::<HashSet<_>>(),
        fresh_ids
    );
    let dead: Vec<_> = s.dead_jobs(&jobs, None, 100).await.unwrap();
    let expired: HashSet<JobId> = dead
        .iter()
        .filter(|d| d.error_class.as_str() == ErrorClass::LEASE_EXPIRED)
        .map(|d| d.id)
        .collect();
    assert_eq!(expired, spent_ids);
    for d in &dead {
        assert_eq!(d.died_at, later);
    }

    // Paging by id, redrive and purge in batches.
    let mut page = s.dead_jobs(&jobs, None, 2).await.unwrap();
    let rest = s.dead_jobs(&jobs, Some(page[1].id), 2).await.unwrap();
    page.extend(rest);
    let mut sorted = page.clone();
    sorted.sort_by_key(|d| *d.id.as_bytes());
    assert_eq!(page, sorted);
    assert_eq!(page.len(), 3);
    assert_eq!(s.redrive_dead(&jobs, 2, later).await.unwrap(), 2);
    assert_eq!(s.purge_dead(&jobs, 5).await.unwrap(), 1);
    assert_eq!(s.stats(&jobs, later).await.unwrap().dead, 0);
    assert_eq!(s.stats(&jobs, later).await.unwrap().waiting, 2);
}

/// The redrive of many dead jobs sharing a key: only one takes it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redriving_dead_jobs_never_makes_two_live_jobs_share_a_key() {
    let Some(db) = test_database().await else {
        return;
    };
    let s = db.fresh_store().await.unwrap();
    let jobs = q("jobs");
    for _ in 0..3 {
        s.enqueue(&jobs, vec![keyed("k", t0())], t0())
            .await
            .unwrap();
        let r = s
            .reserve(&jobs, 1, LeaseNonce::random(), t0() + secs(9), t0())
            .await
            .unwrap();
        s.nack(&r[0].token, Retry::Never, &class("gone"), t0())
            .await
            .unwrap();
    }
    assert_eq!(s.stats(&jobs, t0()).await.unwrap().dead, 3);
    assert_eq!(s.redrive_dead(&jobs, 100, t0()).await.unwrap(), 3);
    let keys: Vec<Option<String>> =
        sqlx::query_scalar("SELECT dedup_key FROM queue_jobs ORDER BY id")
            .fetch_all(s.pool())
            .await
            .unwrap();
    assert_eq!(keys.iter().filter(|k| k.is_some()).count(), 1, "{keys:?}");
    assert_eq!(s.stats(&jobs, t0()).await.unwrap().waiting, 3);
}

/// A payload at the default limit goes through whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_at_the_limit_round_trips() {
    let Some(db) = test_database().await else {
        return;
    };
    let s = db.fresh_store().await.unwrap();
    let jobs = q("jobs");
    let mut big = vec![0u8; echorelay_core::queue::DEFAULT_MAX_PAYLOAD];
    rand::rngs::OsRng.fill_bytes(&mut big);
    s.enqueue(&jobs, vec![job(&big, t0())], t0()).await.unwrap();
    let r = s
        .reserve(&jobs, 1, LeaseNonce::random(), t0() + secs(1), t0())
        .await
        .unwrap();
    assert_eq!(r[0].payload, big);
}

/// A waiter in another process (its own store and listener) is woken by
/// an enqueue within a fraction of a second, with a 30 s backstop; a
/// waiter on another queue is not; and the listener comes back after its
/// connection is terminated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_wakes_a_waiter_in_another_process() {
    let Some(db) = test_database().await else {
        return;
    };
    let producer = db.fresh_store().await.unwrap();
    let name = unique("er-queue-consumer");
    let consumer = db
        .another_process(&producer, |o| o.application_name(name.clone()))
        .await
        .unwrap();
    let jobs = q("jobs");
    // The first wait starts the listener and returns when it is up.
    let start = Instant::now();
    consumer
        .wait_for_jobs(&jobs, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(consumer.queue_listener_connected());
    assert!(start.elapsed() < Duration::from_secs(5));

    for round in 0..2 {
        let waiter = {
            let (c, jobs) = (consumer.clone(), jobs.clone());
            tokio::spawn(async move {
                c.wait_for_jobs(&jobs, Duration::from_secs(30))
                    .await
                    .unwrap();
                Instant::now()
            })
        };
        let other = {
            let c = consumer.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                c.wait_for_jobs(&q("other"), Duration::from_millis(1500))
                    .await
                    .unwrap();
                start.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = Instant::now();
        producer
            .enqueue(&jobs, vec![job(b"wake", t0())], t0())
            .await
            .unwrap();
        let woke = waiter.await.unwrap();
        let latency = woke.saturating_duration_since(sent);
        println!("round {round}: woken {latency:?} after the enqueue (backstop 30 s)");
        assert!(latency < Duration::from_secs(2), "{latency:?}");
        assert!(other.await.unwrap() >= Duration::from_millis(1400));

        // Kill the listener's connection: waiters are woken (they may have
        // missed something), the listener reconnects, and wakes again.
        if round == 0 {
            let waiter = {
                let (c, jobs) = (consumer.clone(), jobs.clone());
                tokio::spawn(async move { c.wait_for_jobs(&jobs, Duration::from_secs(30)).await })
            };
            tokio::time::sleep(Duration::from_millis(200)).await;
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1",
            )
            .bind(consumer.queue_listener_application_name())
            .fetch_all(producer.pool())
            .await
            .unwrap();
            assert_eq!(killed, vec![true]);
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("woken by the lost connection")
                .unwrap()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !consumer.queue_listener_connected() || Instant::now() < deadline {
                if consumer.queue_listener_connected() {
                    break;
                }
                consumer
                    .wait_for_jobs(&jobs, Duration::from_millis(100))
                    .await
                    .unwrap();
            }
            assert!(consumer.queue_listener_connected());
        }
    }
    // A nack that retries now and a redrive notify too.
    let r = producer
        .reserve(&jobs, 10, LeaseNonce::random(), t0() + secs(9), t0())
        .await
        .unwrap();
    for (i, step) in ["nack", "redrive"].into_iter().enumerate() {
        let waiter = {
            let (c, jobs) = (consumer.clone(), jobs.clone());
            tokio::spawn(async move {
                let start = Instant::now();
                c.wait_for_jobs(&jobs, Duration::from_secs(30))
                    .await
                    .unwrap();
                start.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        if i == 0 {
            producer
                .nack(&r[0].token, Retry::At(t0()), &class("x"), t0())
                .await
                .unwrap();
        } else {
            producer
                .nack(&r[1].token, Retry::Never, &class("x"), t0())
                .await
                .unwrap();
            // The dead-lettering nack sends nothing; let a stray wake-up
            // pass before the redrive is measured.
            producer.redrive(&jobs, r[1].id(), t0()).await.unwrap();
        }
        let waited = waiter.await.unwrap();
        assert!(waited < Duration::from_secs(3), "{step}: {waited:?}");
    }
}

/// `n` waiters of `name` on `store`, each with a 10 s backstop.
fn waiters(store: &PgStore, name: &QueueName, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (store, name) = (store.clone(), name.clone());
            tokio::spawn(async move {
                store
                    .wait_for_jobs(&name, Duration::from_secs(10))
                    .await
                    .unwrap();
            })
        })
        .collect()
}

/// How many of `waiting` have returned, after `settle`.
async fn woken(waiting: &[tokio::task::JoinHandle<()>], settle: Duration) -> usize {
    tokio::time::sleep(settle).await;
    waiting.iter().filter(|w| w.is_finished()).count()
}

/// A notification wakes one waiter per job it made due (enqueue, a nack
/// retrying now, a redrive of several), not every idle consumer; a
/// notification without a count (a bare queue name) wakes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_wakes_one_waiter_per_due_job_and_a_bare_name_wakes_all() {
    let Some(db) = test_database().await else {
        return;
    };
    let producer = db.fresh_store().await.unwrap();
    let consumer = db
        .another_process(&producer, |o| o.application_name(unique("er-queue-herd")))
        .await
        .unwrap();
    let name = q("herd");
    // The listener is up before anyone waits (its connecting wakes all).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !consumer.queue_listener_connected() && Instant::now() < deadline {
        consumer
            .wait_for_jobs(&name, Duration::from_millis(100))
            .await
            .unwrap();
    }
    assert!(consumer.queue_listener_connected());
    let settle = Duration::from_millis(400);

    let waiting = waiters(&consumer, &name, 8);
    assert_eq!(woken(&waiting, settle).await, 0);
    // Two due jobs and a delayed one in one batch: two waiters.
    producer
        .enqueue(
            &name,
            vec![job(b"a", t0()), job(b"b", t0()), job(b"c", t0() + secs(60))],
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(woken(&waiting, settle).await, 2, "one waiter per due job");
    // A nack whose retry is due now: one more.
    let r = producer
        .reserve(&name, 2, LeaseNonce::random(), t0() + secs(30), t0())
        .await
        .unwrap();
    assert_eq!(r.len(), 2);
    producer
        .nack(&r[0].token, Retry::At(t0()), &class("x"), t0())
        .await
        .unwrap();
    assert_eq!(woken(&waiting, settle).await, 3);
    // Two dead jobs redriven in one call: two more.
    producer
        .nack(&r[1].token, Retry::Never, &class("x"), t0())
        .await
        .unwrap();
    let again = producer
        .reserve(&name, 1, LeaseNonce::random(), t0() + secs(30), t0())
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    producer
        .nack(&again[0].token, Retry::Never, &class("x"), t0())
        .await
        .unwrap();
    assert_eq!(
        woken(&waiting, settle).await,
        3,
        "dead-lettering wakes no one"
    );
    assert_eq!(producer.redrive_dead(&name, 10, t0()).await.unwrap(), 2);
    assert_eq!(woken(&waiting, settle).await, 5);
    // A payload without a count wakes every waiter of its queue.
    sqlx::query("SELECT pg_notify('echorelay_queue_' || left(md5(current_schema()), 16), 'herd')")
        .execute(producer.pool())
        .await
        .unwrap();
    assert_eq!(woken(&waiting, settle).await, 8);
}

/// Postgres plans the reserve statement over the partial index
/// `queue_jobs_due`, and the blocks it touches do not grow with the
/// backlog (1,000 vs 100,000 waiting jobs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_uses_the_partial_index_and_its_cost_does_not_grow_with_the_backlog() {
    let Some(db) = test_database().await else {
        return;
    };
    let s = db.fresh_store().await.unwrap();
    let mut blocks = Vec::new();
    for backlog in [1_000i64, 100_000] {
        sqlx::query("TRUNCATE queue_jobs")
            .execute(s.pool())
            .await
            .unwrap();
        // The backlog of the measured queue, plus as many jobs of another
        // queue, dead jobs and leased ones.
        sqlx::query(
            "INSERT INTO queue_jobs (id, queue, state, run_at, attempts, max_attempts, \
                 payload, enqueued_at, error_class, died_at) \
             SELECT decode(md5(q || st || g::text), 'hex'), q, st, \
                 $2::timestamptz - (g % 1000) * interval '1 ms', 0, 5, '\\x00', $2, \
                 CASE WHEN st = 'dead' THEN 'x' END, CASE WHEN st = 'dead' THEN $2 END \
             FROM generate_series(1, $1) g, \
                 (VALUES ('jobs', 'ready'), ('other', 'ready'), ('jobs', 'dead')) v (q, st)",
        )
        .bind(backlog)
        .bind(t0())
        .execute(s.pool())
        .await
        .unwrap();
        sqlx::query("ANALYZE queue_jobs")
            .execute(s.pool())
            .await
            .unwrap();
        let mut tx = s.pool().begin().await.unwrap();
        let plan: Vec<String> = sqlx::query_scalar(&format!(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {}",
            echorelay_store_pg::queue::RESERVE_SQL
        ))
        .bind("jobs")
        .bind(t0())
        .bind(100i64)
        .bind(&LeaseNonce::random().as_bytes()[..])
        .bind(t0() + secs(30))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        let text = plan.join("\n");
        assert!(
            text.contains("Index Scan using queue_jobs_due on queue_jobs"),
            "backlog {backlog}:\n{text}"
        );
        // The locked rows are updated through their ctid, never by a scan.
        assert_eq!(
            text.matches("Tid Scan on queue_jobs").count(),
            2,
            "backlog {backlog}:\n{text}"
        );
        assert!(!text.contains("Seq Scan"), "backlog {backlog}:\n{text}");
        // The first "Buffers:" line is the whole statement's.
        let touched: u64 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Buffers: shared"))
            .map(|b| {
                b.split_whitespace()
                    .filter_map(|kv| kv.split_once('=').map(|(_, v)| v.parse::<u64>().unwrap()))
                    .sum()
            })
            .unwrap();
        println!("backlog {backlog}: reserve of 100 touched {touched} blocks");
        blocks.push(touched);
    }
    assert!(
        blocks[1] <= blocks[0] * 2 + 50,
        "the reserve's cost grew with the backlog: {blocks:?}"
    );
}
