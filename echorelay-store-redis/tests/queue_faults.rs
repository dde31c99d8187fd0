//! Faults, counted over 10,000 jobs: consumers, each on a connection of
//! its own, are dropped mid-job over and over (their tasks aborted, and
//! their connections killed by the server with `CLIENT KILL`) while they
//! hold leases. At the end every job was acked exactly once or is in the
//! dead-letter set: none lost, none acked twice, and every connection
//! manager came back by itself.
//!
//! A Redis restart is not tested: the server is shared with other tests,
//! and the crate docs ("Durability") say what a restart without
//! persistence loses (everything).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use echorelay_core::queue::{
    ErrorClass, JobId, LeaseNonce, LeaseToken, NewJob, Queue, QueueError, QueueName, Retry,
};
use echorelay_store_redis::{RedisQueue, redis, test_redis};

const JOBS: usize = 10_000;
const CONSUMERS: usize = 6;
/// One job in this many always fails (nack), with 3 attempts: it must end
/// dead.
const POISON_EVERY: usize = 50;
const LEASE: TimeDelta = TimeDelta::milliseconds(1_000);

#[derive(Default)]
struct Tally {
    /// Successful acks per job.
    acks: HashMap<JobId, u32>,
    /// Jobs an ack was sent for (recorded before the call, since the
    /// consumer may be aborted or cut off before the answer arrives).
    ack_sent: HashSet<JobId>,
    /// Of those, jobs whose ack got no answer (`Unavailable`) and whose
    /// retried ack was refused as stale: the first may or may not have
    /// happened.
    unanswered: HashSet<JobId>,
    stale_acks: u64,
    unavailable: u64,
    redeliveries: u64,
    nacks: u64,
}

fn client_name(tag: &str, consumer: usize) -> String {
    format!("erf-{tag}-c{consumer}")
}

/// Names the consumer's current connection, so the chaos task can find it.
async fn name_connection(queue: &RedisQueue, name: &str) {
    let mut conn = queue.connection();
    let _ = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(name)
        .query_async::<()>(&mut conn)
        .await;
}

/// Acks `tokens` (one call, or one per token), retrying calls that got no
/// answer; records each outcome.
async fn ack_all(queue: &RedisQueue, tokens: Vec<LeaseToken>, batched: bool, tally: &Mutex<Tally>) {
    let groups: Vec<Vec<LeaseToken>> = if batched {
        vec![tokens]
    } else {
        tokens.into_iter().map(|t| vec![t]).collect()
    };
    for group in groups {
        tally
            .lock()
            .unwrap()
            .ack_sent
            .extend(group.iter().map(|t| t.job()));
        let mut unanswered = false;
        loop {
            match queue.ack_many(&group, Utc::now()).await {
                Ok(outcomes) => {
                    let mut t = tally.lock().unwrap();
                    for (token, outcome) in group.iter().zip(outcomes) {
                        match outcome {
                            Ok(()) => *t.acks.entry(token.job()).or_default() += 1,
                            Err(QueueError::StaleLease) if unanswered => {
                                t.unanswered.insert(token.job());
                            }
                            Err(QueueError::StaleLease) => t.stale_acks += 1,
                            Err(e) => panic!("ack: {e}"),
                        }
                    }
                    break;
                }
                Err(QueueError::Unavailable(_)) => {
                    unanswered = true;
                    tally.lock().unwrap().unavailable += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("ack_many: {e}"),
            }
        }
    }
}

async fn consume(
    queue: RedisQueue,
    name: QueueName,
    conn_name: String,
    batched: bool,
    poison: Arc<HashSet<JobId>>,
    tally: Arc<Mutex<Tally>>,
) {
    let class = ErrorClass::new("poison").unwrap();
    loop {
        // Every round: a connection the manager replaced has no name.
        name_connection(&queue, &conn_name).await;
        let now = Utc::now();
        let got = match queue
            .reserve(&name, 10, LeaseNonce::random(), now + LEASE, now)
            .await
        {
            Ok(got) => got,
            Err(QueueError::Unavailable(_)) => {
                tally.lock().unwrap().unavailable += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Err(e) => panic!("reserve: {e}"),
        };
        if got.is_empty() {
            let _ = queue.wait_for_jobs(&name, Duration::from_millis(50)).await;
            continue;
        }
        tally.lock().unwrap().redeliveries += got.iter().filter(|j| j.attempt > 1).count() as u64;
        // The work: long enough that kills land while leases are held.
        tokio::time::sleep(Duration::from_millis(3 * got.len() as u64)).await;
        let mut done = Vec::new();
        for job in got {
            if poison.contains(&job.id()) {
                let retry = Retry::At(Utc::now() + TimeDelta::milliseconds(20));
                match queue.nack(&job.token, retry, &class, Utc::now()).await {
                    Ok(_) => tally.lock().unwrap().nacks += 1,
                    Err(QueueError::StaleLease) => {}
                    Err(QueueError::Unavailable(_)) => tally.lock().unwrap().unavailable += 1,
                    Err(e) => panic!("nack: {e}"),
                }
            } else {
                done.push(job.token);
            }
        }
        ack_all(&queue, done, batched, &tally).await;
    }
}

/// Kills every connection named `name` (there is at most one).
async fn kill_named(admin: &mut redis::aio::MultiplexedConnection, name: &str) -> u64 {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .unwrap();
    let mut killed = 0;
    for line in list.lines() {
        let field = |k: &str| {
            line.split(' ')
                .find_map(|f| f.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
        };
        if field("name") == Some(name)
            && let Some(id) = field("id")
        {
            let n: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("ID")
                .arg(id)
                .query_async(admin)
                .await
                .unwrap_or(0);
            killed += n as u64;
        }
    }
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_dropped_mid_job_lose_nothing_and_ack_nothing_twice() {
    let Some(redis) = test_redis().await else {
        return;
    };
    let setup = redis.fresh_queue().await.unwrap();
    let tag = setup.prefix().trim_start_matches("er-test-").to_owned();
    let name = QueueName::new("faults").unwrap();

    // 10,000 jobs; every 50th poisoned with 3 attempts.
    let mut all = Vec::with_capacity(JOBS);
    let mut poison = HashSet::new();
    let now = Utc::now();
    for chunk in 0..(JOBS / 1_000) {
        let jobs: Vec<NewJob> = (0..1_000)
            .map(|i| {
                let poisoned = (chunk * 1_000 + i).is_multiple_of(POISON_EVERY);
                NewJob {
                    id: JobId::random(),
                    payload: format!("job {chunk}-{i}").into_bytes(),
                    run_at: now,
                    max_attempts: if poisoned { 3 } else { 25 },
                    dedup_key: None,
                }
            })
            .collect();
        for j in &jobs {
            all.push(j.id);
            if j.max_attempts == 3 {
                poison.insert(j.id);
            }
        }
        setup.enqueue(&name, jobs, now).await.unwrap();
    }
    let poison = Arc::new(poison);
    let tally = Arc::new(Mutex::new(Tally::default()));

    let mut queues = Vec::new();
    for _ in 0..CONSUMERS {
        queues.push(redis.another_process(&setup).await.unwrap());
    }
    let spawn = |i: usize| {
        tokio::spawn(consume(
            queues[i].clone(),
            name.clone(),
            client_name(&tag, i),
            i.is_multiple_of(2),
            poison.clone(),
            tally.clone(),
        ))
    };
    let mut consumers: Vec<_> = (0..CONSUMERS).map(spawn).collect();

    let admin_client = redis::Client::open(redis.url()).unwrap();
    let mut admin = admin_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let started = Instant::now();
    let (mut aborts, mut kills, mut rounds) = (0u64, 0u64, 0usize);
    let finished = loop {
        assert!(
            started.elapsed() < Duration::from_secs(55),
            "not drained in 55 s"
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        let s = setup.stats(&name, Utc::now()).await.unwrap();
        if s.waiting + s.delayed + s.in_flight == 0 {
            break s;
        }
        // Chaos for the first 15 s, then let the backlog drain.
        if started.elapsed() < Duration::from_secs(15) {
            let victim = (rounds / 2) % CONSUMERS;
            if rounds.is_multiple_of(2) {
                consumers[victim].abort();
                let _ = (&mut consumers[victim]).await;
                consumers[victim] = spawn(victim);
                aborts += 1;
            } else {
                kills += kill_named(&mut admin, &client_name(&tag, victim)).await;
            }
            rounds += 1;
        }
    };
    let elapsed = started.elapsed();
    for c in &consumers {
        c.abort();
    }
    for c in consumers {
        let _ = c.await;
    }

    // Every manager came back: each answers on its (reconnected) connection.
    for q in &queues {
        q.stats(&name, Utc::now())
            .await
            .expect("the connection manager recovered");
    }

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let mut dead = HashSet::new();
    let mut after = None;
    loop {
        let page = setup.dead_jobs(&name, after, 500).await.unwrap();
        dead.extend(page.iter().map(|d| d.id));
        after = page.last().map(|d| d.id);
        if page.len() < 500 {
            break;
        }
    }
    assert_eq!(finished.dead, dead.len() as u64);

    // The job hashes left are exactly the dead ones.
    let mut job_keys = 0usize;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{}}}:j:*", setup.prefix()))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut admin)
            .await
            .unwrap();
        job_keys += keys.len();
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(job_keys, dead.len(), "a job record outlived its ack");

    let (mut acked_once, mut acked_unanswered, mut lost) = (0, 0, Vec::new());
    for id in &all {
        let acks = tally.acks.get(id).copied().unwrap_or(0);
        assert!(acks <= 1, "job {id} acked {acks} times");
        assert!(!(acks == 1 && dead.contains(id)), "job {id} acked and dead");
        if poison.contains(id) {
            assert!(dead.contains(id), "poisoned job {id} is not dead");
        }
        if acks == 1 {
            acked_once += 1;
        } else if dead.contains(id) {
        } else if tally.ack_sent.contains(id) {
            // Gone from Redis (checked above), neither acked with an
            // answer nor dead: an ack sent for it whose answer never
            // arrived (the consumer was aborted, or its connection killed)
            // deleted it. Only an ack holding the lease deletes a job here
            // (nothing is purged), and only once.
            acked_unanswered += 1;
        } else {
            lost.push(*id);
        }
    }
    assert!(
        lost.is_empty(),
        "{} jobs lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    assert_eq!(acked_once + acked_unanswered + dead.len(), JOBS);
    assert!(
        aborts >= 10 && kills >= 10,
        "too little chaos: {aborts} aborts, {kills} kills"
    );
    eprintln!(
        "{JOBS} jobs in {elapsed:.1?}: {acked_once} acked once with an answer, \
         {acked_unanswered} acked by a call whose answer was lost, {} dead ({} poisoned); \
         {aborts} consumer tasks aborted, {kills} connections killed; \
         {} calls unavailable ({} acks retried and refused as stale), {} redeliveries, \
         {} stale acks refused, {} nacks",
        dead.len(),
        poison.len(),
        tally.unavailable,
        tally.unanswered.len(),
        tally.redeliveries,
        tally.stale_acks,
        tally.nacks,
    );
}

/// The wake-up subscription killed by the server (`CLIENT KILL TYPE
/// pubsub`) is reopened by itself: a later enqueue on another connection
/// still wakes a waiter well before `max_wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_wake_up_subscription_is_reopened() {
    let Some(redis) = test_redis().await else {
        return;
    };
    let queue = redis.fresh_queue().await.unwrap();
    let producer = redis.another_process(&queue).await.unwrap();
    let name = QueueName::new("wake").unwrap();
    // Open the subscription.
    queue
        .wait_for_jobs(&name, Duration::from_millis(100))
        .await
        .unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    for round in 0..3 {
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut admin)
            .await
            .unwrap();
        assert!(killed >= 1, "round {round}: no subscription to kill");
        // The subscriber notices, backs off (50 ms) and subscribes again.
        tokio::time::sleep(Duration::from_millis(300)).await;
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
        let now = Utc::now();
        let job = NewJob {
            id: JobId::random(),
            payload: b"w".to_vec(),
            run_at: now,
            max_attempts: 1,
            dedup_key: None,
        };
        producer.enqueue(&name, vec![job], now).await.unwrap();
        let waited = waiter.await.unwrap();
        assert!(
            waited < Duration::from_secs(2),
            "round {round}: waited {waited:?}"
        );
    }
}
