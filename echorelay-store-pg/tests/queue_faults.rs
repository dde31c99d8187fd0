//! Consumers killed mid-job on Postgres (S13, S15): 10,000 jobs, six
//! consumers each on its own `PgStore` (its own pool: a separate
//! process as far as the database can tell), killed again and again while
//! they hold leases, both by aborting the consumer task and by
//! `pg_terminate_backend` of its pool's connections (and, now and then,
//! of its LISTEN connection). Leases are short (1 s, real time), so the
//! jobs of killed consumers are redelivered. At the end every job was
//! acked exactly once or is in the dead-letter set: none lost, none acked
//! twice; and every consumer's pool works again after its kills.
//!
//! An ack cut off by a kill has an unknown outcome (the `DELETE` may have
//! committed before the connection died or the task was dropped): such a
//! job counts as acked when it is gone from the table and had such an ack
//! (nothing else deletes jobs here), and the run prints how many.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echorelay_core::clock::{Clock, SystemClock};
use echorelay_core::queue::{
    Backoff, EnqueueOptions, ErrorClass, JobId, LeaseToken, MAX_BATCH, NackPolicy, QueueConfig,
    QueueError, QueueName, QueueService,
};
use echorelay_store_pg::{PgStore, test_database};

const JOBS: usize = 10_000;
const CONSUMERS: usize = 6;
const MAX_ATTEMPTS: u32 = 5;
const LEASE: Duration = Duration::from_secs(1);
/// A kill every this many milliseconds.
const TICK_MS: u64 = 40;

/// A small xorshift generator (no dependency; seeded per task).
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let b = JobId::random();
        Self(u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap()) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Default)]
struct Counts {
    /// Successful acks per job.
    acks: Mutex<HashMap<JobId, u32>>,
    /// Acks sent whose outcome was never seen (cut off by a kill, or
    /// answered with `Unavailable`), by token.
    unknown: Mutex<HashSet<LeaseToken>>,
    reserved: AtomicU64,
    nacked: AtomicU64,
    stale: AtomicU64,
    dropped: AtomicU64,
    /// `Unavailable` answers (killed connections).
    unavailable: AtomicU64,
}

impl Counts {
    /// Marks the acks of `tokens` as sent, before they are; returns for
    /// each whether an earlier ack of it has an unknown outcome.
    fn sending(&self, tokens: &[LeaseToken]) -> Vec<bool> {
        let mut unknown = self.unknown.lock().unwrap();
        tokens.iter().map(|t| !unknown.insert(*t)).collect()
    }

    /// Records the seen outcome of an ack of `token`. A refusal after an
    /// earlier ack with an unknown outcome leaves that outcome unknown
    /// (the earlier one may have deleted the job).
    fn outcome(&self, token: &LeaseToken, was_unknown: bool, r: Result<(), QueueError>) {
        match r {
            Ok(()) => {
                self.unknown.lock().unwrap().remove(token);
                *self.acks.lock().unwrap().entry(token.job()).or_default() += 1;
            }
            Err(QueueError::StaleLease) => {
                if !was_unknown {
                    self.unknown.lock().unwrap().remove(token);
                }
                self.stale.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("ack: {e}"),
        }
    }

    fn unavailable(&self, e: &QueueError, what: &str) {
        assert!(
            matches!(e, QueueError::Unavailable(_)),
            "{what}: only killed connections may fail here: {e}"
        );
        self.unavailable.fetch_add(1, Ordering::Relaxed);
    }
}

/// One consumer: reserves batches (waiting on LISTEN/NOTIFY when idle),
/// works each job (yielding, so a kill lands while it holds leases), then
/// acks (alone or in a batch), nacks, or forgets the job (its lease runs
/// out). A failed call (its connection was killed) drops the jobs in hand.
async fn consume(svc: QueueService<PgStore>, name: QueueName, counts: Arc<Counts>) {
    let mut rng = Rng::new();
    let fail = ErrorClass::new("flaky").unwrap();
    loop {
        let n = 1 + rng.below(20) as usize;
        let jobs = match svc
            .reserve_wait(&name, n, LEASE, Duration::from_millis(100))
            .await
        {
            Ok(j) => j,
            Err(e) => {
                counts.unavailable(&e, "reserve");
                continue;
            }
        };
        counts
            .reserved
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        let mut to_ack = Vec::new();
        for j in jobs {
            // "Work": a kill may land here.
            if rng.below(4) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            } else {
                tokio::task::yield_now().await;
            }
            match rng.below(100) {
                0..=2 => {
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                }
                3..=12 => match svc.nack(&j.token, NackPolicy::Backoff, &fail).await {
                    Ok(_) => {
                        counts.nacked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(QueueError::StaleLease) => {
                        counts.stale.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => counts.unavailable(&e, "nack"),
                },
                13..=59 => to_ack.push(j.token),
                _ => ack(&svc, &[j.token], &counts, &mut rng).await,
            }
        }
        if !to_ack.is_empty() {
            ack(&svc, &to_ack, &counts, &mut rng).await;
        }
    }
}

/// Acks `tokens` (one alone, several with `ack_many`); after a failure
/// (a killed connection) retries once a random while later, as a worker
/// would: by then the lease may have expired (refused as stale), or the
/// first ack may have committed after all (refused too).
async fn ack(svc: &QueueService<PgStore>, tokens: &[LeaseToken], counts: &Counts, rng: &mut Rng) {
    for attempt in 0..2 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
        }
        let was_unknown = counts.sending(tokens);
        let out = match tokens {
            [one] => svc
                .ack(one)
                .await
                .map(|()| vec![Ok(())])
                .or_else(|e| match e {
                    QueueError::StaleLease => Ok(vec![Err(e)]),
                    e => Err(e),
                }),
            many => svc.ack_many(many).await,
        };
        match out {
            Ok(out) => {
                for ((t, r), was) in tokens.iter().zip(out).zip(was_unknown) {
                    counts.outcome(t, was, r);
                }
                return;
            }
            Err(e) => counts.unavailable(&e, "ack"),
        }
    }
}

async fn terminate(admin: &PgStore, application_name: &str) -> usize {
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(application_name)
    .fetch_all(admin.pool())
    .await
    .unwrap();
    killed.iter().filter(|k| **k).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_killed_mid_job_lose_nothing_and_ack_nothing_twice() {
    let Some(db) = test_database().await else {
        return;
    };
    let admin = db.fresh_store().await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = QueueConfig {
        backoff: Backoff {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(300),
        },
        poll: Duration::from_millis(100),
        ..QueueConfig::default()
    };
    let tag = hex::encode(&JobId::random().as_bytes()[..4]);
    let mut stores = Vec::new();
    for i in 0..CONSUMERS {
        let app = format!("erqf-{tag}-c{i}");
        let store = db
            .another_process(&admin, |o| o.application_name(app).max_connections(2))
            .await
            .unwrap();
        stores.push(QueueService::with_config(store, clock.clone(), config).unwrap());
    }
    let producer = QueueService::with_config(admin.clone(), clock.clone(), config).unwrap();
    let name = QueueName::new("faults").unwrap();
    let mut all = HashSet::new();
    for batch in 0..JOBS / MAX_BATCH {
        let jobs = (0..MAX_BATCH)
            .map(|i| {
                let payload = format!("job-{}", batch * MAX_BATCH + i).into_bytes();
                (payload, EnqueueOptions::new().max_attempts(MAX_ATTEMPTS))
            })
            .collect();
        all.extend(producer.enqueue_many(&name, jobs).await.unwrap());
    }
    assert_eq!(all.len(), JOBS);

    let counts = Arc::new(Counts::default());
    let spawn = |i: usize| tokio::spawn(consume(stores[i].clone(), name.clone(), counts.clone()));
    let mut consumers: Vec<_> = (0..CONSUMERS).map(spawn).collect();
    let mut rng = Rng::new();
    let (mut aborts, mut terminations, mut killed_connections, mut listener_kills) =
        (0u64, 0u64, 0usize, 0usize);
    let start = Instant::now();
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(TICK_MS)).await;
        tick += 1;
        let i = rng.below(CONSUMERS as u64) as usize;
        if rng.below(2) == 0 {
            // The task dies mid-job: its leases run out.
            consumers[i].abort();
            aborts += 1;
            consumers[i] = spawn(i);
        } else {
            // Its connections die under it: the calls in flight fail
            // (or their outcome is lost), the pool reconnects.
            killed_connections += terminate(&admin, &format!("erqf-{tag}-c{i}")).await;
            terminations += 1;
        }
        if tick.is_multiple_of(40) {
            listener_kills +=
                terminate(&admin, stores[i].queue().queue_listener_application_name()).await;
        }
        if tick.is_multiple_of(10) {
            let s = producer.stats(&name).await.unwrap();
            if tick.is_multiple_of(50) {
                eprintln!("{:.1} s: {s:?}", start.elapsed().as_secs_f64());
            }
            if s.waiting + s.delayed + s.in_flight == 0 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "the queue did not drain: {s:?}"
            );
        }
    }
    let elapsed = start.elapsed();
    for c in &consumers {
        c.abort();
    }
    for c in consumers {
        let _ = c.await;
    }

    // Every consumer's pool answers again after its kills: a connection
    // killed while idle fails the one call that finds it (at most one per
    // pooled connection), then the pool reconnects.
    for s in &stores {
        let mut tries = 0;
        while let Err(e) = s.stats(&name).await {
            assert!(matches!(e, QueueError::Unavailable(_)), "{e}");
            tries += 1;
            assert!(tries <= 2, "the pool did not recover: {e}");
        }
    }

    let acks = counts.acks.lock().unwrap().clone();
    let unknown = counts.unknown.lock().unwrap().clone();
    let twice: Vec<_> = acks.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs acked more than once: {twice:?}");
    let mut dead = HashSet::new();
    let mut after = None;
    loop {
        let page = producer.dead_jobs(&name, after, 1000).await.unwrap();
        dead.extend(page.iter().map(|d| d.id));
        if page.len() < 1000 {
            break;
        }
        after = page.last().map(|d| d.id);
    }
    // What the table holds: the dead jobs, nothing else.
    let left: Vec<Vec<u8>> = sqlx::query_scalar("SELECT id FROM queue_jobs WHERE queue = 'faults'")
        .fetch_all(admin.pool())
        .await
        .unwrap();
    let left: HashSet<JobId> = left
        .iter()
        .map(|b| JobId::from_bytes(b.as_slice().try_into().unwrap()))
        .collect();
    assert_eq!(left, dead, "only dead jobs remain");
    let acked: HashSet<JobId> = acks.keys().copied().collect();
    assert!(acked.is_disjoint(&dead), "a job was acked and is dead");
    assert!(acked.iter().chain(&dead).all(|id| all.contains(id)));
    // Gone without a seen ack: deleted by an ack whose answer was lost.
    let gone_unseen: HashSet<JobId> = all
        .iter()
        .filter(|id| !acked.contains(id) && !dead.contains(id))
        .copied()
        .collect();
    let unknown: HashSet<JobId> = unknown.iter().map(|t| t.job()).collect();
    let lost: Vec<_> = gone_unseen.difference(&unknown).collect();
    assert!(lost.is_empty(), "{} jobs were lost", lost.len());
    assert_eq!(acked.len() + gone_unseen.len() + dead.len(), JOBS);
    eprintln!(
        "pg queue faults: {JOBS} jobs: {} acked once (seen), {} acked with the answer lost to a \
         kill, {} dead, 0 lost, 0 acked twice; {aborts} consumer tasks aborted, {terminations} \
         terminations ({killed_connections} connections killed, {listener_kills} listeners), \
         {} calls failed Unavailable; {} reservations ({} redeliveries), {} nacks, {} leases \
         dropped on purpose, {} stale acks/nacks refused; {:.1} s",
        acked.len(),
        gone_unseen.len(),
        dead.len(),
        counts.unavailable.load(Ordering::Relaxed),
        counts.reserved.load(Ordering::Relaxed),
        counts.reserved.load(Ordering::Relaxed) - JOBS as u64,
        counts.nacked.load(Ordering::Relaxed),
        counts.dropped.load(Ordering::Relaxed),
        counts.stale.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
    );
}
