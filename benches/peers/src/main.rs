//! Issue 17 peers: apalis-postgres and apalis-redis (apalis 1.0.0), one
//! full cycle per job — enqueue, reserve, ack — timed the same way for
//! each configuration and printed as one JSON object per line on stdout
//! (progress on stderr). See scripts/queue_bench/README.md.
//!
//! One timed run: push N jobs from one producer (`push`, one job a call,
//! for batch 1; `push_bulk` of 100 jobs a call for batch 100), then start
//! the consumers and wait until the handler (which does nothing but
//! count) has run N times; then stop the workers and wait for them to
//! return, which flushes apalis's buffered acks (task results) to the
//! backend. Wall time from the first push to the workers' return; jobs/s
//! = N / that. The backend's count of finished jobs is checked after each
//! run (outside the timed window).
//!
//! Consumers: `--model concurrency` (default) runs one worker with
//! `.concurrency(c)` (apalis's way: one fetch loop, c handlers in flight);
//! `--model workers` runs c workers of concurrency 1, each with its own
//! fetch loop (closer to c independent reservers). The fetch batch is
//! apalis's `Config::batch_size`: 1 for batch 1, 100 for batch 100.
//!
//! ```sh
//! SQLX_OFFLINE=true CARGO_TARGET_DIR=/work/peers-target \
//!   cargo build --release -j1 --manifest-path benches/peers/Cargo.toml
//! /work/peers-target/release/echorelay-queue-peers --runs 5
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use apalis_postgres::PostgresStorage;
use apalis_redis::RedisStorage;
use serde_json::json;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::Notify;
use tokio::task::JoinSet;

const APALIS_VERSION: &str = "1.0.0";

static DONE: AtomicUsize = AtomicUsize::new(0);
static TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);
static ALL_DONE: Notify = Notify::const_new();

/// The job handler: does nothing but count; the N-th wakes the timer.
async fn handle(_job: u64) -> Result<(), BoxDynError> {
    let n = DONE.fetch_add(1, Ordering::SeqCst) + 1;
    if n == TARGET.load(Ordering::SeqCst) {
        ALL_DONE.notify_one();
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Postgres,
    Redis,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Model {
    Concurrency,
    Workers,
}

impl Model {
    fn name(self) -> &'static str {
        match self {
            Model::Concurrency => "concurrency",
            Model::Workers => "workers",
        }
    }
}

struct Opts {
    backends: Vec<Backend>,
    consumers: Vec<usize>,
    batches: Vec<usize>,
    pg_jobs: Vec<usize>,
    redis_jobs: Vec<usize>,
    runs: usize,
    models: Vec<Model>,
    pg_url: String,
    redis_url: String,
    timeout: Duration,
}

fn list(v: &str) -> Vec<usize> {
    v.split(',')
        .map(|x| x.trim().replace('_', "").parse().expect("a number"))
        .collect()
}

fn opts() -> Opts {
    let mut o = Opts {
        backends: vec![Backend::Postgres, Backend::Redis],
        consumers: vec![1, 8],
        batches: vec![1, 100],
        pg_jobs: vec![5_000],
        redis_jobs: vec![5_000, 50_000],
        runs: 5,
        models: vec![Model::Concurrency],
        pg_url: std::env::var("APALIS_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/bench_apalis".into()),
        redis_url: std::env::var("APALIS_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into()),
        timeout: Duration::from_secs(300),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--backend" => {
                o.backends = val
                    .split(',')
                    .map(|b| match b {
                        "postgres" | "pg" => Backend::Postgres,
                        "redis" => Backend::Redis,
                        other => panic!("unknown backend {other}"),
                    })
                    .collect()
            }
            "--consumers" => o.consumers = list(&val),
            "--batch" => o.batches = list(&val),
            "--jobs" => {
                o.pg_jobs = list(&val);
                o.redis_jobs = list(&val);
            }
            "--pg-jobs" => o.pg_jobs = list(&val),
            "--redis-jobs" => o.redis_jobs = list(&val),
            "--runs" => o.runs = val.parse().expect("runs"),
            "--model" => {
                o.models = match val.as_str() {
                    "concurrency" => vec![Model::Concurrency],
                    "workers" => vec![Model::Workers],
                    "both" => vec![Model::Concurrency, Model::Workers],
                    other => panic!("unknown model {other}"),
                }
            }
            "--pg-url" => o.pg_url = val,
            "--redis-url" => o.redis_url = val,
            "--timeout" => o.timeout = Duration::from_secs(val.parse().expect("seconds")),
            "-h" | "--help" => {
                eprintln!(
                    "echorelay-queue-peers [--backend postgres,redis] [--consumers 1,8] \
                     [--batch 1,100] [--jobs N,..|--pg-jobs N,..|--redis-jobs N,..] [--runs 5] \
                     [--model concurrency|workers|both] [--pg-url URL] [--redis-url URL] \
                     [--timeout SECONDS]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    o
}

/// What one timed run measured.
struct Run {
    push: Duration,
    total: Duration,
}

type Res<T> = Result<T, String>;

fn reset(target: usize) {
    DONE.store(0, Ordering::SeqCst);
    TARGET.store(target, Ordering::SeqCst);
    // Drop a permit a previous run may have left behind.
    let n = ALL_DONE.notified();
    tokio::pin!(n);
    n.as_mut().enable();
    ALL_DONE.notify_waiters();
}

/// Waits until the handler has counted `jobs`, or a worker has ended (an
/// error), or the timeout; then stops the workers and waits for them.
async fn drain(
    jobs: usize,
    ctxs: Vec<WorkerContext>,
    mut set: JoinSet<Result<(), String>>,
    timeout: Duration,
) -> Res<()> {
    let outcome = tokio::select! {
        _ = ALL_DONE.notified() => Ok(()),
        r = set.join_next() => Err(match r {
            Some(Ok(Err(e))) => format!("a worker failed: {e}"),
            Some(Ok(Ok(()))) => "a worker stopped before all jobs were done".to_string(),
            Some(Err(e)) => format!("a worker panicked: {e}"),
            None => "no workers".to_string(),
        }),
        _ = tokio::time::sleep(timeout) => Err(format!(
            "timeout after {timeout:?}: {} of {jobs} jobs handled",
            DONE.load(Ordering::SeqCst)
        )),
    };
    for c in &ctxs {
        let _ = c.stop();
    }
    // The workers flush their buffered acks as they stop.
    let flushed = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("a worker failed while stopping: {e}")),
                Err(e) => return Err(format!("a worker panicked: {e}")),
            }
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|_| Err("workers did not stop within 60 s".into()));
    outcome.and(flushed)
}

async fn pg_run(
    pool: &PgPool,
    consumers: usize,
    batch: usize,
    jobs: usize,
    model: Model,
    run: usize,
    timeout: Duration,
) -> Res<Run> {
    sqlx::query("TRUNCATE apalis.jobs, apalis.workers")
        .execute(pool)
        .await
        .map_err(|e| e.to_string())?;
    let queue = format!("peers-pg-{}-{run}", std::process::id());
    let config = apalis_postgres::Config::default()
        .queue(&queue)
        .batch_size(batch);
    let mut producer = PostgresStorage::<u64>::new(pool).with_config(config.clone());
    reset(jobs);

    let start = Instant::now();
    if batch == 1 {
        for i in 0..jobs as u64 {
            producer.push(i).await.map_err(|e| format!("push: {e}"))?;
        }
    } else {
        let mut i = 0u64;
        while (i as usize) < jobs {
            let k = batch.min(jobs - i as usize) as u64;
            producer
                .push_bulk((i..i + k).collect())
                .await
                .map_err(|e| format!("push_bulk: {e}"))?;
            i += k;
        }
    }
    let push = start.elapsed();

    let (workers, per_worker) = match model {
        Model::Concurrency => (1, consumers),
        Model::Workers => (consumers, 1),
    };
    let mut ctxs = Vec::new();
    let mut set = JoinSet::new();
    for w in 0..workers {
        let ctx = WorkerContext::new(&format!("{queue}-w{w}"));
        let backend = PostgresStorage::<u64>::new(pool).with_config(config.clone());
        let worker = WorkerBuilder::new(&ctx)
            .backend(backend)
            .concurrency(per_worker)
            .build(handle);
        ctxs.push(ctx);
        set.spawn(async move { worker.run().await.map_err(|e| e.to_string()) });
    }
    drain(jobs, ctxs, set, timeout).await?;
    let total = start.elapsed();

    let done: i64 =
        sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'")
            .bind(&queue)
            .fetch_one(pool)
            .await
            .map_err(|e| e.to_string())?;
    if done as usize != jobs {
        return Err(format!("{done} of {jobs} jobs are Done in apalis.jobs after the run"));
    }
    Ok(Run { push, total })
}

async fn redis_clean(conn: &mut redis::aio::ConnectionManager, prefix: &str) -> Res<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(|e| e.to_string())?;
        if !keys.is_empty() {
            let _: i64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

#[allow(clippy::too_many_arguments)]
async fn redis_run(
    conn: &redis::aio::ConnectionManager,
    consumers: usize,
    batch: usize,
    jobs: usize,
    model: Model,
    run: usize,
    timeout: Duration,
) -> Res<Run> {
    let queue = format!("peers-redis-{}-{run}-{jobs}", std::process::id());
    let config = apalis_redis::Config::default()
        .queue(&queue)
        .batch_size(batch);
    let mut producer = RedisStorage::<u64>::new(conn.clone()).with_config(config.clone());
    reset(jobs);

    let result = async {
        let start = Instant::now();
        if batch == 1 {
            for i in 0..jobs as u64 {
                producer.push(i).await.map_err(|e| format!("push: {e}"))?;
            }
        } else {
            let mut i = 0u64;
            while (i as usize) < jobs {
                let k = batch.min(jobs - i as usize) as u64;
                producer
                    .push_bulk((i..i + k).collect())
                    .await
                    .map_err(|e| format!("push_bulk: {e}"))?;
                i += k;
            }
        }
        let push = start.elapsed();

        let (workers, per_worker) = match model {
            Model::Concurrency => (1, consumers),
            Model::Workers => (consumers, 1),
        };
        let mut ctxs = Vec::new();
        let mut set = JoinSet::new();
        for w in 0..workers {
            let ctx = WorkerContext::new(&format!("{queue}-w{w}"));
            let backend = RedisStorage::<u64>::new(conn.clone()).with_config(config.clone());
            let worker = WorkerBuilder::new(&ctx)
                .backend(backend)
                .concurrency(per_worker)
                .build(handle);
            ctxs.push(ctx);
            set.spawn(async move { worker.run().await.map_err(|e| e.to_string()) });
        }
        drain(jobs, ctxs, set, timeout).await?;
        let total = start.elapsed();

        let mut c = conn.clone();
        let done: usize = redis::cmd("SCARD")
            .arg(config.done_jobs_set())
            .query_async(&mut c)
            .await
            .map_err(|e| e.to_string())?;
        if done != jobs {
            return Err(format!("{done} of {jobs} jobs are in the done set after the run"));
        }
        Ok(Run { push, total })
    }
    .await;
    let mut c = conn.clone();
    redis_clean(&mut c, &queue).await?;
    result
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = opts();
    let mut pg: Option<PgPool> = None;
    let mut rd: Option<redis::aio::ConnectionManager> = None;
    for &backend in &o.backends {
        let setup: Res<()> = match backend {
            Backend::Postgres if pg.is_none() => async {
                let pool = PgPoolOptions::new()
                    .max_connections(20)
                    .connect(&o.pg_url)
                    .await
                    .map_err(|e| format!("connect {}: {e}", o.pg_url))?;
                PostgresStorage::setup(&pool)
                    .await
                    .map_err(|e| format!("apalis-postgres setup: {e}"))?;
                pg = Some(pool);
                Ok(())
            }
            .await,
            Backend::Redis if rd.is_none() => async {
                let conn = apalis_redis::connect(o.redis_url.as_str())
                    .await
                    .map_err(|e| format!("connect {}: {e}", o.redis_url))?;
                rd = Some(conn);
                Ok(())
            }
            .await,
            _ => Ok(()),
        };
        if let Err(e) = setup {
            eprintln!("peers: {backend:?}: {e}");
            std::process::exit(1);
        }
        let job_counts = match backend {
            Backend::Postgres => &o.pg_jobs,
            Backend::Redis => &o.redis_jobs,
        };
        for &jobs in job_counts {
            for &batch in &o.batches {
                for &consumers in &o.consumers {
                    for &model in &o.models {
                        // With one consumer both models are the same.
                        if consumers == 1 && model == Model::Workers && o.models.len() > 1 {
                            continue;
                        }
                        let (name, label) = match backend {
                            Backend::Postgres => ("apalis-postgres", "postgres"),
                            Backend::Redis => ("apalis-redis", "redis"),
                        };
                        let mut rates = Vec::new();
                        let mut push_s = Vec::new();
                        let mut total_s = Vec::new();
                        let mut error = None;
                        for run in 1..=o.runs {
                            let r = match backend {
                                Backend::Postgres => {
                                    pg_run(
                                        pg.as_ref().expect("pool"),
                                        consumers,
                                        batch,
                                        jobs,
                                        model,
                                        run,
                                        o.timeout,
                                    )
                                    .await
                                }
                                Backend::Redis => {
                                    redis_run(
                                        rd.as_ref().expect("conn"),
                                        consumers,
                                        batch,
                                        jobs,
                                        model,
                                        run,
                                        o.timeout,
                                    )
                                    .await
                                }
                            };
                            match r {
                                Ok(r) => {
                                    let rate = jobs as f64 / r.total.as_secs_f64();
                                    eprintln!(
                                        "peers: {name} c{consumers} ({}) b{batch} N={jobs} run {run}: \
                                         push {:.2} s, total {:.2} s, {:.1} jobs/s",
                                        model.name(),
                                        r.push.as_secs_f64(),
                                        r.total.as_secs_f64(),
                                        rate
                                    );
                                    rates.push(round1(rate));
                                    push_s.push((r.push.as_secs_f64() * 1000.0).round() / 1000.0);
                                    total_s.push((r.total.as_secs_f64() * 1000.0).round() / 1000.0);
                                }
                                Err(e) => {
                                    eprintln!(
                                        "peers: {name} c{consumers} ({}) b{batch} N={jobs} run {run}: \
                                         error: {e}",
                                        model.name()
                                    );
                                    error = Some(e);
                                    break;
                                }
                            }
                        }
                        let mut row = json!({
                            "system": format!("{name} {APALIS_VERSION}"),
                            "backend": label,
                            "consumers": consumers,
                            "batch": batch,
                            "jobs": jobs,
                            "backlog": jobs,
                            "jobs_per_s": rates,
                            "median": median(&rates).map(round1),
                            "mode": "enqueue all, then drain",
                            "consumer_model": match model {
                                Model::Concurrency => format!("1 worker, concurrency {consumers}"),
                                Model::Workers => format!("{consumers} workers, concurrency 1"),
                            },
                            "fetch_batch_size": batch,
                            "push": if batch == 1 { "push (1 job a call)" } else { "push_bulk (100 jobs a call)" },
                            "push_s": push_s,
                            "total_s": total_s,
                        });
                        if let Some(e) = error {
                            row["error"] = json!(e);
                        }
                        println!("{row}");
                    }
                }
            }
        }
    }
}
