//! Criterion benchmark for S6: echorelay's `verify_password` of a bcrypt
//! cost-13 hash (the default cost), to be set beside PHP's `password_verify`
//! of the same hash on the same machine (target: ours/PHP ≤ 1.15).
//!
//! Run both side by side, with the ratio: `scripts/bench-bcrypt.sh`.
//! Alone: `cargo bench --bench bcrypt`. The password and hash come from
//! `ECHORELAY_BENCH_PASSWORD` / `ECHORELAY_BENCH_HASH` when set (the script
//! sets them from the cost-13 vector of
//! `echorelay-core/tests/vectors/php_bcrypt.json`); otherwise that vector,
//! copied below.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use echorelay::core::account::password::{PasswordHash, verify_password};
use secrecy::SecretString;

/// The "cost 13 (Symfony default)" vector of php_bcrypt.json (made by PHP).
const DEFAULT_PASSWORD: &str = "Tr0ub4dor&3 at cost thirteen";
const DEFAULT_HASH: &str = "$2y$13$A7gpNtlEKpWxj/rd8gxp5u.Jd9nRh8DDh.iTR.TJclUTb2tauQ/ju";

fn bench_verify(c: &mut Criterion) {
    let password = std::env::var("ECHORELAY_BENCH_PASSWORD").unwrap_or(DEFAULT_PASSWORD.into());
    let hash = std::env::var("ECHORELAY_BENCH_HASH").unwrap_or(DEFAULT_HASH.into());
    let hash = PasswordHash::parse(&hash).expect("ECHORELAY_BENCH_HASH is a bcrypt hash");
    let password = SecretString::from(password);
    assert!(
        verify_password(&password, &hash).unwrap(),
        "the benchmark password does not verify against the benchmark hash"
    );

    let mut group = c.benchmark_group("bcrypt");
    // ~0.5 s per iteration: flat sampling (the same few iterations per
    // sample) instead of criterion's linear ramp, which would need ~30 s.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function(format!("verify_cost{}", hash.cost()), |b| {
        b.iter(|| verify_password(black_box(&password), black_box(&hash)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
