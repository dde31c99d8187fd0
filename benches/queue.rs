//! Queue throughput (issue 17): one full cycle per job — enqueue, reserve,
//! ack — through [`QueueService`] (core's rules: ids, nonces, the clock,
//! limits), on each backend.
//!
//! Every consumer task loops `enqueue b → reserve b → ack b` (b = 1, or 100
//! with `enqueue_many` / `reserve(100)` / `ack_many`), like one pgbench
//! client running the raw-SQL ceiling; a criterion iteration ends when the
//! consumers together have acked `jobs` jobs. Throughput is reported in
//! jobs (elements) per second. Optional waiting backlogs are filled before
//! a group: every cycle enqueues as many jobs as it acks, so the backlog
//! stays the same size while it is measured (the oldest jobs, the backlog,
//! are the ones reserved first).
//!
//! Run (see BENCHMARKS.md, "Issue 17", and `scripts/bench_queue.sh`,
//! which runs the ceilings and peers in the same run):
//!
//! ```sh
//! DATABASE_URL=postgres://root@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379 \
//!   cargo bench --features pg,redis --bench queue
//! ```
//!
//! Without `DATABASE_URL` / `REDIS_URL` the Postgres / Redis groups are
//! skipped with one printed line. `ECHORELAY_BENCH_QUEUE` picks groups by
//! name, comma-separated, a trailing `*` matching any suffix
//! (`queue_mem`, `queue_pg`, `queue_pg_backlog_*`, `queue_redis*`).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use echorelay::MemQueue;
use echorelay::core::clock::{Clock, SystemClock};
use echorelay::core::queue::{EnqueueOptions, Queue, QueueName, QueueService};

const LEASE: Duration = Duration::from_secs(60);
const PAYLOAD: &[u8] = b"{\"event\":\"bench\",\"n\":1}";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn wanted(group: &str) -> bool {
    match std::env::var("ECHORELAY_BENCH_QUEUE") {
        Ok(v) if !v.is_empty() => v
            .split(',')
            .map(str::trim)
            .any(|w| match w.strip_suffix('*') {
                Some(prefix) => group.starts_with(prefix),
                None => group == w,
            }),
        _ => true,
    }
}

/// `consumers` tasks cycle until `jobs` jobs are acked in all; returns the
/// wall time.
async fn cycle<Q: Queue + 'static>(
    svc: &Arc<QueueService<Q>>,
    queue: &QueueName,
    consumers: usize,
    batch: usize,
    jobs: u64,
) -> Duration {
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(consumers);
    for _ in 0..consumers {
        let svc = svc.clone();
        let queue = queue.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            while acked.load(Ordering::Relaxed) < jobs {
                if batch == 1 {
                    svc.enqueue(&queue, PAYLOAD.to_vec(), EnqueueOptions::new())
                        .await
                        .unwrap();
                } else {
                    let batch_jobs = (0..batch)
                        .map(|_| (PAYLOAD.to_vec(), EnqueueOptions::new()))
                        .collect();
                    svc.enqueue_many(&queue, batch_jobs).await.unwrap();
                }
                let got = svc.reserve(&queue, batch, LEASE).await.unwrap();
                let n = got.len() as u64;
                if batch == 1 {
                    for job in &got {
                        svc.ack(&job.token).await.unwrap();
                    }
                } else {
                    let tokens: Vec<_> = got.iter().map(|j| j.token).collect();
                    for outcome in svc.ack_many(&tokens).await.unwrap() {
                        outcome.unwrap();
                    }
                }
                acked.fetch_add(n, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// Fills `queue` with `n` waiting jobs, 1,000 per call.
async fn fill<Q: Queue>(svc: &QueueService<Q>, queue: &QueueName, n: u64) {
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let jobs = (0..k)
            .map(|_| (PAYLOAD.to_vec(), EnqueueOptions::new()))
            .collect();
        svc.enqueue_many(queue, jobs).await.unwrap();
        left -= k;
    }
}

/// The four cycle shapes (1 or 8 consumers, batch 1 or 100) over `svc`,
/// each iteration acking `single_jobs` (batch 1) or `batched_jobs`.
fn shapes<Q: Queue + 'static>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    group_name: &str,
    svc: &Arc<QueueService<Q>>,
    (single_jobs, batched_jobs): (u64, u64),
    backlog: u64,
    before_each: &dyn Fn(),
) {
    let queue = QueueName::new(&format!("bench-{group_name}")).unwrap();
    if backlog > 0 {
        let t = Instant::now();
        rt.block_on(fill(svc, &queue, backlog));
        eprintln!(
            "{group_name}: filled a backlog of {backlog} in {:?}",
            t.elapsed()
        );
    }
    let mut group = c.benchmark_group(group_name);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for (consumers, batch) in [(1usize, 1usize), (8, 1), (1, 100), (8, 100)] {
        let jobs = if batch == 1 {
            single_jobs
        } else {
            batched_jobs
        };
        before_each();
        group.throughput(Throughput::Elements(jobs));
        group.bench_function(
            BenchmarkId::new(format!("c{consumers}_b{batch}"), jobs),
            |b| {
                b.to_async(rt).iter_custom(|iters| {
                    let svc = svc.clone();
                    let queue = queue.clone();
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += cycle(&svc, &queue, consumers, batch, jobs).await;
                        }
                        total
                    }
                });
            },
        );
    }
    group.finish();
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

fn bench_mem(c: &mut Criterion) {
    if !wanted("queue_mem") {
        return;
    }
    let rt = runtime();
    let svc = Arc::new(QueueService::new(MemQueue::new(), clock()));
    shapes(c, &rt, "queue_mem", &svc, (50_000, 200_000), 0, &|| {});
}

fn bench_pg(c: &mut Criterion) {
    use echorelay::pg::test_database;
    let rt = runtime();
    let Some(db) = rt.block_on(test_database()) else {
        eprintln!("queue bench: DATABASE_URL unset or unreachable; Postgres skipped");
        return;
    };
    for backlog in [0u64, 1_000, 100_000, 1_000_000] {
        let name = if backlog == 0 {
            "queue_pg".to_owned()
        } else {
            format!("queue_pg_backlog_{backlog}")
        };
        if !wanted(&name) {
            continue;
        }
        // A fresh schema per group: each backlog is measured on its own.
        let store = rt.block_on(db.fresh_store()).unwrap();
        let pool = store.pool().clone();
        let svc = Arc::new(QueueService::new(store, clock()));
        // Each shape starts on a vacuumed table, as the pgbench ceiling
        // and pgqueuer do: the dead rows of the shape before are not
        // charged to the next.
        let vacuum = || {
            rt.block_on(sqlx::query("VACUUM ANALYZE queue_jobs").execute(&pool))
                .unwrap();
        };
        shapes(c, &rt, &name, &svc, (2_000, 20_000), backlog, &vacuum);
    }
}

fn bench_redis(c: &mut Criterion) {
    use echorelay::redis::test_redis;
    let rt = runtime();
    let Some(server) = rt.block_on(test_redis()) else {
        eprintln!("queue bench: REDIS_URL unset or unreachable; Redis skipped");
        return;
    };
    for backlog in [0u64, 5_000, 50_000] {
        let name = if backlog == 0 {
            "queue_redis".to_owned()
        } else {
            format!("queue_redis_backlog_{backlog}")
        };
        if !wanted(&name) {
            continue;
        }
        let q = rt.block_on(server.fresh_queue()).unwrap();
        let svc = Arc::new(QueueService::new(q, clock()));
        shapes(c, &rt, &name, &svc, (5_000, 50_000), backlog, &|| {});
    }
}

criterion_group!(benches, bench_mem, bench_pg, bench_redis);
criterion_main!(benches);
