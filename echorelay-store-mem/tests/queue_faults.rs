//! Consumers dropped mid-job (S13): 10,000 jobs, eight consumer tasks
//! that are aborted at random while they hold leases (and replaced), a
//! clock that moves on so those leases expire. At the end every job was
//! acked exactly once (counted from successful ack results) or is in the
//! dead-letter set: none lost, none acked twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echorelay_core::clock::{Clock, ManualClock};
use echorelay_core::queue::{
    Backoff, EnqueueOptions, ErrorClass, JobId, MAX_BATCH, NackPolicy, QueueConfig, QueueError,
    QueueName, QueueService,
};
use echorelay_store_mem::MemQueue;

const JOBS: usize = 10_000;
const CONSUMERS: usize = 8;
const MAX_ATTEMPTS: u32 = 5;
const LEASE: Duration = Duration::from_secs(30);

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
    acks: Mutex<HashMap<JobId, u32>>,
    reserved: AtomicU64,
    nacked: AtomicU64,
    stale: AtomicU64,
    dropped: AtomicU64,
}

/// One consumer: reserves batches, works each job (yielding, so an abort
/// lands while it holds leases), then acks (alone or in a batch), nacks,
/// or forgets the job (its lease runs out).
async fn consume(svc: QueueService<MemQueue>, name: QueueName, counts: Arc<Counts>) {
    let mut rng = Rng::new();
    let fail = ErrorClass::new("flaky").unwrap();
    loop {
        let n = 1 + rng.below(20) as usize;
        let jobs = svc.reserve(&name, n, LEASE).await.unwrap();
        if jobs.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        counts
            .reserved
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        let mut to_ack = Vec::new();
        for j in jobs {
            // "Work": an abort may land here, and a long batch may
            // outlive its leases.
            if rng.below(4) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            } else {
                tokio::task::yield_now().await;
            }
            match rng.below(100) {
                0..=4 => {
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                }
                5..=14 => {
                    match svc.nack(&j.token, NackPolicy::Backoff, &fail).await {
                        Ok(_) => counts.nacked.fetch_add(1, Ordering::Relaxed),
                        Err(QueueError::StaleLease) => counts.stale.fetch_add(1, Ordering::Relaxed),
                        Err(e) => panic!("nack: {e}"),
                    };
                }
                15..=54 => to_ack.push(j.token),
                _ => match svc.ack(&j.token).await {
                    // Counted in the same poll as the ack's result: an
                    // abort cannot fall between the two.
                    Ok(()) => *counts.acks.lock().unwrap().entry(j.id()).or_default() += 1,
                    Err(QueueError::StaleLease) => {
                        counts.stale.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("ack: {e}"),
                },
            }
        }
        if !to_ack.is_empty() {
            let out = svc.ack_many(&to_ack).await.unwrap();
            let mut acks = counts.acks.lock().unwrap();
            for (t, r) in to_ack.iter().zip(out) {
                match r {
                    Ok(()) => *acks.entry(t.job()).or_default() += 1,
                    Err(QueueError::StaleLease) => {
                        counts.stale.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => panic!("ack_many: {e}"),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_aborted_mid_job_lose_nothing_and_ack_nothing_twice() {
    let clock = ManualClock::at_unix(1_767_225_600);
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    let config = QueueConfig {
        backoff: Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(20),
        },
        ..QueueConfig::default()
    };
    let svc = QueueService::with_config(MemQueue::new(), c, config).unwrap();
    let name = QueueName::new("faults").unwrap();
    let mut all = HashSet::new();
    for batch in 0..JOBS / MAX_BATCH {
        let jobs = (0..MAX_BATCH)
            .map(|i| {
                let payload = format!("job-{}", batch * MAX_BATCH + i).into_bytes();
                (payload, EnqueueOptions::new().max_attempts(MAX_ATTEMPTS))
            })
            .collect();
        all.extend(svc.enqueue_many(&name, jobs).await.unwrap());
    }
    assert_eq!(all.len(), JOBS);

    let counts = Arc::new(Counts::default());
    let spawn = || tokio::spawn(consume(svc.clone(), name.clone(), counts.clone()));
    let mut consumers: Vec<_> = (0..CONSUMERS).map(|_| spawn()).collect();
    let mut rng = Rng::new();
    let mut aborts = 0u64;
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Abort a random consumer about every other millisecond, while it
        // holds leases (it yields between jobs), and start a new one.
        if rng.below(2) == 0 {
            let i = rng.below(CONSUMERS as u64) as usize;
            consumers[i].abort();
            aborts += 1;
            consumers[i] = spawn();
        }
        // Every tick (about a millisecond), 5 s pass: leases of aborted
        // consumers expire after about six ticks, retries come due, and
        // a slow batch outlives some of its leases (its acks are refused).
        clock.advance(chrono::Duration::seconds(5));
        let s = svc.stats(&name).await.unwrap();
        if s.waiting + s.delayed + s.in_flight == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the queue did not drain: {s:?}"
        );
    }
    for c in &consumers {
        c.abort();
    }
    for c in consumers {
        let _ = c.await;
    }

    let acks = counts.acks.lock().unwrap().clone();
    let twice: Vec<_> = acks.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs acked more than once: {twice:?}");
    let mut dead = HashSet::new();
    let mut after = None;
    loop {
        let page = svc.dead_jobs(&name, after, 1000).await.unwrap();
        dead.extend(page.iter().map(|d| d.id));
        if page.len() < 1000 {
            break;
        }
        after = page.last().map(|d| d.id);
    }
    let acked: HashSet<JobId> = acks.keys().copied().collect();
    assert!(acked.is_disjoint(&dead), "a job was acked and is dead");
    assert!(acked.iter().chain(&dead).all(|id| all.contains(id)));
    let lost: Vec<_> = all
        .difference(&acked)
        .filter(|id| !dead.contains(id))
        .collect();
    assert!(lost.is_empty(), "{} jobs were lost", lost.len());
    assert_eq!(acked.len() + dead.len(), JOBS);
    eprintln!(
        "queue faults: {JOBS} jobs: {} acked once, {} dead, 0 lost, 0 acked twice; \
         {aborts} consumers aborted, {} reservations ({} redeliveries), {} nacks, \
         {} leases dropped on purpose, {} stale acks/nacks refused; {:.1} s",
        acked.len(),
        dead.len(),
        counts.reserved.load(Ordering::Relaxed),
        counts.reserved.load(Ordering::Relaxed) - JOBS as u64,
        counts.nacked.load(Ordering::Relaxed),
        counts.dropped.load(Ordering::Relaxed),
        counts.stale.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
    );
}
