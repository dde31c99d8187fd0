//! The Redis queue's own checks, beyond the shared suite: races between
//! separate connections, time boundaries, backlogs of 50,000 jobs against
//! the script limits, wake-ups across connections, and what it does with
//! records it cannot read. Each test runs on a random prefix of its own;
//! they skip with one line when `REDIS_URL` is unset and
//! `ECHORELAY_REQUIRE_SERVICES` is not 1.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use echorelay_core::queue::{
    DedupKey, ErrorClass, JobId, LeaseNonce, LeaseToken, NackOutcome, NewJob, Queue, QueueError,
    QueueName, QueueStats, Retry,
};
use echorelay_store_redis::{RedisQueue, TestRedis, redis, test_redis};

/// A fixed origin, so times are exact.
fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
}

fn q(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

fn job(payload: &[u8], run_at: DateTime<Utc>, max_attempts: u32, key: Option<&str>) -> NewJob {
    NewJob {
        id: JobId::random(),
        payload: payload.to_vec(),
        run_at,
        max_attempts,
        dedup_key: key.map(|k| DedupKey::new(k).unwrap()),
    }
}

async fn fresh() -> Option<(TestRedis, RedisQueue)> {
    let redis = test_redis().await?;
    let queue = redis
        .fresh_queue()
        .await
        .expect("a queue on a fresh prefix");
    Some((redis, queue))
}

async fn stats(queue: &RedisQueue, name: &QueueName, now: DateTime<Utc>) -> QueueStats {
    queue.stats(name, now).await.unwrap()
}

#[tokio::test]
async fn reserve_takes_the_earliest_due_and_ack_deletes() {
    let Some((_r, queue)) = fresh().await else {
        return;
    };
    let name = q("mail");
    let jobs = vec![
        job(b"c", t(30), 3, None),
        job(b"a", t(10), 3, None),
        job(b"b", t(20), 3, None),
        job(b"later", t(5_000), 3, None),
    ];
    let ids = queue.enqueue(&name, jobs.clone(), t(0)).await.unwrap();
    assert_eq!(ids, jobs.iter().map(|j| j.id).collect::<Vec<_>>());
    assert_eq!(
        stats(&queue, &name, t(100)).await,
        QueueStats {
            waiting: 3,
            delayed: 1,
            in_flight: 0,
            dead: 0
        }
    );
    let got = queue
        .reserve(&name, 2, LeaseNonce::random(), t(1_100), t(100))
        .await
        .unwrap();
    let payloads: Vec<_> = got.iter().map(|j| j.payload.clone()).collect();
    assert_eq!(payloads, vec![b"a".to_vec(), b"b".to_vec()]);
    assert!(got.iter().all(|j| j.attempt == 1 && j.max_attempts == 3));
    assert!(
        got.iter()
            .all(|j| j.enqueued_at == t(0) && j.lease_until == t(1_100))
    );
    assert_eq!(
        stats(&queue, &name, t(100)).await,
        QueueStats {
            waiting: 1,
            delayed: 1,
            in_flight: 2,
            dead: 0
        }
    );
    queue.ack(&got[0].token, t(200)).await.unwrap();
    assert_eq!(
        queue.ack(&got[0].token, t(200)).await,
        Err(QueueError::StaleLease)
    );
    let outcomes = queue
        .ack_many(&[got[1].token, got[0].token], t(200))
        .await
        .unwrap();
    assert_eq!(outcomes, vec![Ok(()), Err(QueueError::StaleLease)]);
    assert_eq!(
        stats(&queue, &name, t(200)).await,
        QueueStats {
            waiting: 1,
            delayed: 1,
            in_flight: 0,
            dead: 0
        }
    );
    // Another queue of the same prefix sees none of it.
    assert_eq!(
        stats(&queue, &q("other"), t(200)).await,
        QueueStats::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_connections_reserving_one_backlog_get_disjoint_jobs() {
    let Some((redis, queue)) = fresh().await else {
        return;
    };
    let name = q("race");
    let total = 2_000;
    for chunk in 0..(total / 500) {
        let jobs = (0..500)
            .map(|i| job(format!("{chunk}-{i}").as_bytes(), t(0), 5, None))
            .collect();
        queue.enqueue(&name, jobs, t(0)).await.unwrap();
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mine = redis.another_process(&queue).await.unwrap();
        let (barrier, name) = (barrier.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut got = Vec::new();
            loop {
                let batch = mine
                    .reserve(&name, 7, LeaseNonce::random(), t(60_000), t(1))
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|j| j.id()));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut count = 0;
    for task in tasks {
        for id in task.await.unwrap() {
            count += 1;
            assert!(seen.insert(id), "job {id} handed out twice");
        }
    }
    assert_eq!(count, total);
    assert_eq!(stats(&queue, &name, t(1)).await.in_flight, total as u64);
}

#[tokio::test]
async fn a_lease_ending_exactly_now_has_expired_and_stale_tokens_change_nothing() {
    let Some((redis, queue)) = fresh().await else {
        return;
    };
    let other = redis.another_process(&queue).await.unwrap();
    let name = q("stale");
    let class = ErrorClass::new("http_503").unwrap();
    queue
        .enqueue(&name, vec![job(b"x", t(0), 5, None)], t(0))
        .await
        .unwrap();
    let first = queue
        .reserve(&name, 1, LeaseNonce::random(), t(1_000), t(0))
        .await
        .unwrap();
    let token = first[0].token;
    // One microsecond before the end: held.
    let just_before = t(1_000) - TimeDelta::microseconds(1);
    assert_eq!(
        stats(&queue, &name, just_before).await,
        QueueStats {
            waiting: 0,
            delayed: 0,
            in_flight: 1,
            dead: 0
        }
    );
    queue.extend(&token, t(1_000), just_before).await.unwrap();
    // Exactly at the end: expired, waiting again; every use of the token
    // is refused and changes nothing.
    assert_eq!(
        stats(&queue, &name, t(1_000)).await,
        QueueStats {
            waiting: 1,
            delayed: 0,
            in_flight: 0,
            dead: 0
        }
    );
    assert_eq!(
        queue.ack(&token, t(1_000)).await,
        Err(QueueError::StaleLease)
    );
    assert_eq!(
        queue.extend(&token, t(9_000), t(1_000)).await,
        Err(QueueError::StaleLease)
    );
    assert_eq!(
        queue
            .nack(&token, Retry::At(t(2_000)), &class, t(1_000))
            .await,
        Err(QueueError::StaleLease)
    );
    assert_eq!(
        stats(&queue, &name, t(1_000)).await,
        QueueStats {
            waiting: 1,
            delayed: 0,
            in_flight: 0,
            dead: 0
        }
    );
    // Re-reserved by another connection: the old token stays stale even
    // at a time its own lease would still have run.
    let second = other
        .reserve(&name, 1, LeaseNonce::random(), t(5_000), t(1_000))
        .await
        .unwrap();
    assert_eq!(second[0].id(), token.job());
    assert_eq!(second[0].attempt, 2);
    assert_eq!(queue.ack(&token, t(500)).await, Err(QueueError::StaleLease));
    // A forged nonce and a token for a job that never existed.
    let forged = LeaseToken::new(token.job(), LeaseNonce::random(), 2);
    assert_eq!(
        queue.ack(&forged, t(1_001)).await,
        Err(QueueError::StaleLease)
    );
    let unknown = LeaseToken::new(JobId::random(), LeaseNonce::random(), 1);
    assert_eq!(
        queue.ack(&unknown, t(1_001)).await,
        Err(QueueError::StaleLease)
    );
    assert_eq!(
        queue.extend(&unknown, t(9_000), t(1_001)).await,
        Err(QueueError::StaleLease)
    );
    // The holder's token works.
    other.ack(&second[0].token, t(4_999)).await.unwrap();
    assert_eq!(stats(&queue, &name, t(1_001)).await, QueueStats::default());
}

#[tokio::test]
async fn dedup_keys_return_the_holder_and_are_freed_by_ack_and_death() {
    let Some((_r, queue)) = fresh().await else {
        return;
    };
    let name = q("dedup");
    let class = ErrorClass::new("boom").unwrap();
    let a = job(b"a", t(0), 1, Some("order-1"));
    let ids = queue.enqueue(&name, vec![a.clone()], t(0)).await.unwrap();
    assert_eq!(ids, vec![a.id]);
    // Waiting: the key is held, within a batch too.
    let b = job(b"b", t(0), 1, Some("order-1"));
    let c = job(b"c", t(0), 1, Some("order-2"));
    let d = job(b"d", t(0), 1, Some("order-2"));
    let ids = queue
        .enqueue(&name, vec![b, c.clone(), d], t(0))
        .await
        .unwrap();
    assert_eq!(ids, vec![a.id, c.id, c.id]);
    assert_eq!(stats(&queue, &name, t(0)).await.waiting, 2);
    // A key is per queue.
    let e = job(b"e", t(0), 1, Some("order-1"));
    assert_eq!(
        queue
            .enqueue(&q("elsewhere"), vec![e.clone()], t(0))
            .await
            .unwrap(),
        vec![e.id]
    );
    // In flight: still held.
    let got = queue
        .reserve(&name, 2, LeaseNonce::random(), t(1_000), t(0))
        .await
        .unwrap();
    let f = job(b"f", t(0), 1, Some("order-1"));
    assert_eq!(
        queue.enqueue(&name, vec![f], t(0)).await.unwrap(),
        vec![a.id]
    );
    // Acked (a) and dead (c, one attempt): both keys free again.
    let ta = got.iter().find(|j| j.id() == a.id).unwrap().token;
    let tc = got.iter().find(|j| j.id() == c.id).unwrap().token;
    queue.ack(&ta, t(1)).await.unwrap();
    assert_eq!(
        queue.nack(&tc, Retry::At(t(5)), &class, t(1)).await,
        Ok(NackOutcome::Dead)
    );
    let g = job(b"g", t(0), 1, Some("order-1"));
    let h = job(b"h", t(0), 1, Some("order-2"));
    let ids = queue
        .enqueue(&name, vec![g.clone(), h.clone()], t(2))
        .await
        .unwrap();
    assert_eq!(ids, vec![g.id, h.id]);
    // A redriven job takes its key back only if nobody holds it: h does.
    queue.redrive(&name, c.id, t(3)).await.unwrap();
    let i = job(b"i", t(0), 1, Some("order-2"));
    assert_eq!(
        queue.enqueue(&name, vec![i], t(3)).await.unwrap(),
        vec![h.id]
    );
    // ... and takes it back when nobody does (as the Postgres queue does).
    let x = job(b"x", t(0), 1, Some("order-3"));
    queue
        .enqueue(&q("redrive"), vec![x.clone()], t(3))
        .await
        .unwrap();
    let rx = queue
        .reserve(&q("redrive"), 1, LeaseNonce::random(), t(10), t(3))
        .await
        .unwrap();
    queue
        .nack(&rx[0].token, Retry::Never, &class, t(4))
        .await
        .unwrap();
    queue.redrive(&q("redrive"), x.id, t(5)).await.unwrap();
    let y = job(b"y", t(0), 1, Some("order-3"));
    assert_eq!(
        queue.enqueue(&q("redrive"), vec![y], t(5)).await.unwrap(),
        vec![x.id]
    );
    // An id already stored, or twice in a batch, is refused whole.
    let fresh = job(b"j", t(0), 1, None);
    for batch in [
        vec![fresh.clone(), g.clone()],
        vec![fresh.clone(), fresh.clone()],
    ] {
        assert_eq!(
            queue.enqueue(&name, batch, t(3)).await,
            Err(QueueError::InvalidArgument("duplicate job id"))
        );
    }
    assert_eq!(stats(&queue, &name, t(3)).await.waiting, 3);
}

#[tokio::test]
async fn nack_delays_until_attempts_run_out_then_dead_jobs_page_by_id_and_redrive() {
    let Some((_r, queue)) = fresh().await else {
        return;
    };
    let name = q("retry");
    let class = ErrorClass::new("timeout").unwrap();
    let j = job(b"payload", t(0), 2, None);
    queue.enqueue(&name, vec![j.clone()], t(0)).await.unwrap();
    let r1 = queue
        .reserve(&name, 1, LeaseNonce::random(), t(100), t(0))
        .await
        .unwrap();
    assert_eq!(
        queue
            .nack(&r1[0].token, Retry::At(t(500)), &class, t(10))
            .await,
        Ok(NackOutcome::Retrying(t(500)))
    );
    // Delayed: not reservable before its time, the retry time kept in Redis.
    assert_eq!(
        stats(&queue, &name, t(499)).await,
        QueueStats {
            waiting: 0,
            delayed: 1,
            in_flight: 0,
            dead: 0
        }
    );
    assert!(
        queue
            .reserve(&name, 1, LeaseNonce::random(), t(600), t(499))
            .await
            .unwrap()
            .is_empty()
    );
    let r2 = queue
        .reserve(&name, 1, LeaseNonce::random(), t(600), t(500))
        .await
        .unwrap();
    assert_eq!(r2[0].attempt, 2);
    // Attempts exactly reached: dead, whatever the retry asks.
    assert_eq!(
        queue
            .nack(&r2[0].token, Retry::At(t(900)), &class, t(510))
            .await,
        Ok(NackOutcome::Dead)
    );
    let dead = queue.dead_jobs(&name, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].id,
            dead[0].attempts,
            dead[0].max_attempts,
            dead[0].error_class.as_str()
        ),
        (j.id, 2, 2, "timeout")
    );
    assert_eq!((dead[0].enqueued_at, dead[0].died_at), (t(0), t(510)));
    assert_eq!(dead[0].payload, b"payload");
    // Retry::Never goes dead on the first attempt.
    let k = job(b"k", t(0), 9, None);
    queue.enqueue(&name, vec![k.clone()], t(0)).await.unwrap();
    let rk = queue
        .reserve(&name, 1, LeaseNonce::random(), t(2_000), t(600))
        .await
        .unwrap();
    assert_eq!(
        queue.nack(&rk[0].token, Retry::Never, &class, t(600)).await,
        Ok(NackOutcome::Dead)
    );
    // Redrive: waiting at now, attempts reset; a live job is not dead.
    assert_eq!(queue.redrive(&name, k.id, t(700)).await, Ok(()));
    assert_eq!(
        queue.redrive(&name, k.id, t(700)).await,
        Err(QueueError::NotDead)
    );
    assert_eq!(
        queue.redrive(&name, JobId::random(), t(700)).await,
        Err(QueueError::NotDead)
    );
    let again = queue
        .reserve(&name, 5, LeaseNonce::random(), t(2_000), t(700))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id(), again[0].attempt), (k.id, 1));
    queue.ack(&again[0].token, t(701)).await.unwrap();

    // Paging by id ascending, `after` exclusive, a short page last.
    let mut ids = Vec::new();
    for _ in 0..25 {
        let j = job(b"d", t(0), 1, None);
        ids.push(j.id);
        queue.enqueue(&name, vec![j], t(1_000)).await.unwrap();
    }
    let got = queue
        .reserve(&name, 25, LeaseNonce::random(), t(5_000), t(1_000))
        .await
        .unwrap();
    for r in &got {
        queue
            .nack(&r.token, Retry::Never, &class, t(1_001))
            .await
            .unwrap();
    }
    ids.push(j.id);
    ids.sort_by_key(|id| *id.as_bytes());
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = queue.dead_jobs(&name, after, 10).await.unwrap();
        paged.extend(page.iter().map(|d| d.id));
        after = page.last().map(|d| d.id);
        if page.len() < 10 {
            break;
        }
    }
    assert_eq!(paged, ids);
    assert_eq!(stats(&queue, &name, t(1_001)).await.dead, 26);
    assert_eq!(queue.redrive_dead(&name, 10, t(1_002)).await, Ok(10));
    assert_eq!(
        queue
            .dead_jobs(&name, None, 100)
            .await
            .unwrap()
            .first()
            .map(|d| d.id),
        Some(ids[10])
    );
    assert_eq!(queue.purge_dead(&name, 1_500).await, Ok(16));
    assert_eq!(
        stats(&queue, &name, t(1_002)).await,
        QueueStats {
            waiting: 10,
            delayed: 0,
            in_flight: 0,
            dead: 0
        }
    );
}

#[tokio::test]
async fn a_due_job_out_of_attempts_is_dead_lettered_at_reserve() {
    let Some((_r, queue)) = fresh().await else {
        return;
    };
    let name = q("expiry");
    let j = job(b"x", t(0), 1, Some("only-once"));
    queue
        .enqueue(&name, vec![j.clone(), job(b"y", t(50), 3, None)], t(0))
        .await
        .unwrap();
    let r = queue
        .reserve(&name, 1, LeaseNonce::random(), t(100), t(0))
        .await
        .unwrap();
    assert_eq!(r[0].id(), j.id);
    // Its only lease expired: waiting in the counts, but never handed out.
    assert_eq!(stats(&queue, &name, t(100)).await.waiting, 2);
    let next = queue
        .reserve(&name, 5, LeaseNonce::random(), t(1_000), t(100))
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(),
        vec![b"y".to_vec()]
    );
    let dead = queue.dead_jobs(&name, None, 5).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id, dead[0].attempts), (j.id, 1));
    assert_eq!(dead[0].error_class.as_str(), ErrorClass::LEASE_EXPIRED);
    assert_eq!(dead[0].died_at, t(100));
    // Its key is free.
    let again = job(b"x2", t(0), 1, Some("only-once"));
    assert_eq!(
        queue
            .enqueue(&name, vec![again.clone()], t(100))
            .await
            .unwrap(),
        vec![again.id]
    );
}

#[tokio::test]
async fn an_expired_lease_is_due_at_its_lease_end_in_order_with_waiting_jobs() {
    let Some((_r, queue)) = fresh().await else {
        return;
    };
    let name = q("order");
    let early = job(b"early", t(0), 5, None);
    queue
        .enqueue(&name, vec![early.clone()], t(0))
        .await
        .unwrap();
    queue
        .reserve(&name, 1, LeaseNonce::random(), t(300), t(0))
        .await
        .unwrap();
    queue
        .enqueue(
            &name,
            vec![
                job(b"at200", t(200), 5, None),
                job(b"at400", t(400), 5, None),
            ],
            t(0),
        )
        .await
        .unwrap();
    let got = queue
        .reserve(&name, 3, LeaseNonce::random(), t(2_000), t(500))
        .await
        .unwrap();
    let order: Vec<_> = got.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(
        order,
        vec![b"at200".to_vec(), b"early".to_vec(), b"at400".to_vec()]
    );
}

/// 50,000 due jobs, then 50,000 expired leases, reserved in batches of
/// 1,000: no script ever sees the whole backlog (apalis's Redis queue
/// fails with "too many results to unpack" at 20,000).
#[tokio::test]
async fn fifty_thousand_due_jobs_and_expired_leases_reserve_in_batches() {
    let Some((_r, queue)) = fresh().await else {
        return;
    };
    let name = q("backlog");
    let total = 50_000;
    let started = Instant::now();
    for chunk in 0..(total / 1_000) {
        let jobs = (0..1_000)
            .map(|i| job(&[(chunk % 256) as u8, (i % 256) as u8], t(i), 5, None))
            .collect();
        queue.enqueue(&name, jobs, t(0)).await.unwrap();
    }
    let enqueued = started.elapsed();
    assert_eq!(stats(&queue, &name, t(1_000)).await.waiting, total as u64);

    let mut seen = HashSet::new();
    let started = Instant::now();
    loop {
        let got = queue
            .reserve(&name, 1_000, LeaseNonce::random(), t(10_000), t(1_000))
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        seen.extend(got.into_iter().map(|r| r.id()));
    }
    let reserved = started.elapsed();
    assert_eq!(seen.len(), total);
    assert_eq!(stats(&queue, &name, t(9_999)).await.in_flight, total as u64);

    // Every lease expired at once: 50,000 waiting in the leased set.
    assert_eq!(stats(&queue, &name, t(10_000)).await.waiting, total as u64);
    let started = Instant::now();
    let mut again = HashSet::new();
    let mut tokens = Vec::new();
    loop {
        let got = queue
            .reserve(&name, 1_000, LeaseNonce::random(), t(20_000), t(10_000))
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        assert!(got.iter().all(|r| r.attempt == 2));
        again.extend(got.iter().map(|r| r.id()));
        tokens.extend(got.into_iter().map(|r| r.token));
    }
    let redelivered = started.elapsed();
    assert_eq!(again, seen);
    let started = Instant::now();
    for batch in tokens.chunks(1_000) {
        let outcomes = queue.ack_many(batch, t(10_001)).await.unwrap();
        assert!(outcomes.iter().all(Result::is_ok));
    }
    let acked = started.elapsed();
    assert_eq!(stats(&queue, &name, t(10_001)).await, QueueStats::default());
    eprintln!(
        "50,000 jobs: enqueued in {enqueued:?}, reserved in {reserved:?}, \
         expired leases reserved again in {redelivered:?}, acked in {acked:?} (batches of 1,000)"
    );
}

#[tokio::test]
async fn wait_for_jobs_is_woken_by_an_enqueue_on_another_connection() {
    let Some((redis, queue)) = fresh().await else {
        return;
    };
    let producer = redis.another_process(&queue).await.unwrap();
    let name = q("wake");
    // Nothing published: the wait runs to max_wait.
    let started = Instant::now();
    queue
        .wait_for_jobs(&name, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(290));

    for round in 0..3 {
        let waiter = {
            let (queue, name) = (queue.clone(), name.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                queue
                    .wait_for_jobs(&name, Duration::from_secs(10))
                    .await
                    .unwrap();
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        // A job for another queue and a delayed job do not wake it.
        producer
            .enqueue(&q("not-this"), vec![job(b"o", t(0), 1, None)], t(0))
            .await
            .unwrap();
        producer
            .enqueue(&name, vec![job(b"d", t(60_000), 1, None)], t(0))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !waiter.is_finished(),
            "round {round}: woken by a job it cannot take"
        );
        let sent = Instant::now();
        producer
            .enqueue(&name, vec![job(b"w", t(0), 1, None)], t(0))
            .await
            .unwrap();
        let waited = waiter.await.unwrap();
        let latency = sent.elapsed();
        assert!(
            waited < Duration::from_secs(2),
            "round {round}: waited {waited:?}"
        );
        eprintln!("round {round}: woken {latency:?} after the enqueue (max_wait 10 s)");
    }
}

/// Spawns `n` waiters of `name` (10 s each); returns their handles.
fn waiters(queue: &RedisQueue, name: &QueueName, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let (queue, name) = (queue.clone(), name.clone());
            tokio::spawn(async move {
                queue
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

#[tokio::test]
async fn an_enqueue_wakes_one_waiter_per_due_job_and_an_unreadable_message_wakes_all() {
    let Some((redis, queue)) = fresh().await else {
        return;
    };
    let producer = redis.another_process(&queue).await.unwrap();
    let name = q("herd");
    let waiting = waiters(&queue, &name, 5);
    let settle = Duration::from_millis(300);
    assert_eq!(woken(&waiting, settle).await, 0);
    // Two due jobs and a delayed one in one batch: two waiters.
    producer
        .enqueue(
            &name,
            vec![
                job(b"a", t(0), 1, None),
                job(b"b", t(0), 1, None),
                job(b"c", t(60_000), 1, None),
            ],
            t(0),
        )
        .await
        .unwrap();
    assert_eq!(woken(&waiting, settle).await, 2, "one waiter per due job");
    producer
        .enqueue(&name, vec![job(b"d", t(0), 1, None)], t(0))
        .await
        .unwrap();
    assert_eq!(woken(&waiting, settle).await, 3);
    // A message that is not a count (an older writer's, say) wakes all.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{{{}}}:wake:herd", queue.prefix()))
        .arg("?")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(woken(&waiting, settle).await, 5);
}

#[tokio::test]
async fn records_it_cannot_read_are_corrupt_and_change_nothing() {
    let Some((redis, queue)) = fresh().await else {
        return;
    };
    let name = q("corrupt");
    let good = job(b"good", t(0), 3, None);
    let bad = job(b"bad", t(1), 3, None);
    queue
        .enqueue(&name, vec![good.clone(), bad.clone()], t(0))
        .await
        .unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let bad_key = format!(
        "{{{}}}:j:{}",
        queue.prefix(),
        hex::encode(bad.id.as_bytes())
    );
    redis::cmd("HSET")
        .arg(&bad_key)
        .arg("m")
        .arg("many")
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();
    let before = stats(&queue, &name, t(5)).await;
    let r = queue
        .reserve(&name, 5, LeaseNonce::random(), t(100), t(5))
        .await;
    assert!(
        matches!(r, Err(QueueError::Corrupt(ref m)) if m.contains(&hex::encode(bad.id.as_bytes()))),
        "{r:?}"
    );
    assert_eq!(stats(&queue, &name, t(5)).await, before);
    // The good job alone is served (it sorts first).
    let r = queue
        .reserve(&name, 1, LeaseNonce::random(), t(100), t(5))
        .await
        .unwrap();
    assert_eq!(r[0].id(), good.id);

    // A queue key of the wrong type.
    let other = q("wrongtype");
    let ready = format!("{{{}}}:q:wrongtype:ready", queue.prefix());
    redis::cmd("SET")
        .arg(&ready)
        .arg("x")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        queue.stats(&other, t(0)).await,
        Err(QueueError::Corrupt(_))
    ));
    assert!(matches!(
        queue
            .reserve(&other, 1, LeaseNonce::random(), t(100), t(0))
            .await,
        Err(QueueError::Corrupt(_))
    ));

    // A queue entry whose job record is gone is dropped, not served.
    let gone = job(b"gone", t(0), 3, None);
    queue
        .enqueue(&q("dangling"), vec![gone.clone()], t(0))
        .await
        .unwrap();
    let key = format!(
        "{{{}}}:j:{}",
        queue.prefix(),
        hex::encode(gone.id.as_bytes())
    );
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<i64>(&mut conn)
        .await
        .unwrap();
    assert!(
        queue
            .reserve(&q("dangling"), 1, LeaseNonce::random(), t(100), t(0))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        stats(&queue, &q("dangling"), t(0)).await,
        QueueStats::default()
    );
}

#[tokio::test]
async fn bad_arguments_are_typed_errors() {
    let Some((_r, queue)) = fresh().await else {
        return;
    };
    let name = q("bad");
    for n in [0, 1_001] {
        assert_eq!(
            queue
                .reserve(&name, n, LeaseNonce::random(), t(10), t(0))
                .await,
            Err(QueueError::InvalidArgument("batch size"))
        );
    }
    let far = DateTime::<Utc>::MAX_UTC;
    assert!(matches!(
        queue
            .enqueue(&name, vec![job(b"x", far, 1, None)], t(0))
            .await,
        Err(QueueError::InvalidArgument(_))
    ));
    assert_eq!(stats(&queue, &name, t(0)).await, QueueStats::default());
    let tokens = vec![LeaseToken::new(JobId::random(), LeaseNonce::random(), 1); 1_001];
    assert!(matches!(
        queue.ack_many(&tokens, t(0)).await,
        Err(QueueError::InvalidArgument(_))
    ));
    assert_eq!(queue.ack_many(&[], t(0)).await, Ok(vec![]));
    assert_eq!(queue.enqueue(&name, vec![], t(0)).await, Ok(vec![]));
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_a_bad_prefix_refused() {
    // Nothing listens on port 1.
    let r = RedisQueue::connect_with(
        echorelay_store_redis::RedisOptions::new("redis://127.0.0.1:1")
            .connection_timeout(Duration::from_millis(200)),
    )
    .await;
    assert!(matches!(r, Err(QueueError::Unavailable(_))), "{r:?}");
    let r = RedisQueue::connect("not a url").await;
    assert_eq!(r.err(), Some(QueueError::InvalidArgument("redis url")));
    let r = RedisQueue::connect_with(
        echorelay_store_redis::RedisOptions::new("redis://127.0.0.1").prefix("a}b"),
    )
    .await;
    assert_eq!(
        r.err(),
        Some(QueueError::InvalidArgument("redis key prefix"))
    );
}
