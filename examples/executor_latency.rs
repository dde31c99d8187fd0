//! Does bcrypt stall the async executor? A measurement for S6 / issue 3.
//!
//! On a tokio multi-thread runtime with 2 worker threads, a cheap task loops
//! `tokio::time::sleep(1 ms)` and records how late each wake-up is, in three
//! runs:
//!
//! 1. no load (1 s);
//! 2. 8 concurrent `verify_password_async` at cost 13: bcrypt runs on the
//!    blocking pool (`spawn_blocking`), the workers stay free;
//! 3. for contrast, the same 8 verifications called directly on the executor
//!    (`verify_password` inside `tokio::spawn`): both workers are blocked for
//!    whole bcrypt computations, and the sleeper waits for them.
//!
//! Each loaded run lasts as long as its 8 verifications (about 2 s on 2
//! cores). Run: `cargo run --release --example executor_latency`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use echorelay::core::account::password::{
    PasswordHash, PasswordPolicy, hash_password, verify_password, verify_password_async,
};
use secrecy::SecretString;

const PASSWORD: &str = "correct horse battery staple";
const CONCURRENT: usize = 8;
const TICK: Duration = Duration::from_millis(1);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    None,
    BlockingPool,
    OnExecutor,
}

/// Sleeps 1 ms in a loop until `stop`, returning each wake-up's lateness.
async fn sleeper(stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut late = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let asked = Instant::now();
        tokio::time::sleep(TICK).await;
        late.push(asked.elapsed().saturating_sub(TICK));
    }
    late
}

struct Run {
    late: Vec<Duration>,
    wall: Duration,
}

async fn run(load: Load, hash: PasswordHash) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let sleeper = tokio::spawn(sleeper(stop.clone()));
    tokio::time::sleep(Duration::from_millis(20)).await;

    let start = Instant::now();
    let mut jobs = Vec::new();
    for _ in 0..CONCURRENT {
        let hash = hash.clone();
        jobs.push(tokio::spawn(async move {
            let pw = SecretString::from(PASSWORD);
            match load {
                Load::None => true,
                Load::BlockingPool => verify_password_async(pw, hash).await.unwrap(),
                // What not to do: a whole bcrypt computation on a worker.
                Load::OnExecutor => verify_password(&pw, &hash).unwrap(),
            }
        }));
    }
    for job in jobs {
        assert!(job.await.unwrap());
    }
    if load == Load::None {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let wall = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut late = sleeper.await.unwrap();
    late.sort();
    Run { late, wall }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let policy = PasswordPolicy::new(13).unwrap();
    let t = Instant::now();
    let hash = hash_password(&SecretString::from(PASSWORD), policy).unwrap();
    let one = t.elapsed();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();

    println!(
        "cores: {}, tokio workers: 2, bcrypt cost 13 (one hash here took {:.3} s)",
        std::thread::available_parallelism().map_or(0, usize::from),
        one.as_secs_f64()
    );
    println!("lateness of a task sleeping 1 ms in a loop:");
    println!(
        "{:<48} {:>10} {:>10} {:>11} {:>6} {:>8}",
        "load", "p50", "p99", "max", "wakes", "wall"
    );
    for (name, load) in [
        ("none", Load::None),
        (
            "8 x verify_password_async (blocking pool)",
            Load::BlockingPool,
        ),
        (
            "8 x verify_password on the executor (blocking)",
            Load::OnExecutor,
        ),
    ] {
        let r = rt.block_on(run(load, hash.clone()));
        println!(
            "{name:<48} {:>10} {:>10} {:>11} {:>6} {:>6.2} s",
            ms(percentile(&r.late, 0.50)),
            ms(percentile(&r.late, 0.99)),
            ms(r.late.last().copied().unwrap_or_default()),
            r.late.len(),
            r.wall.as_secs_f64()
        );
    }
}
