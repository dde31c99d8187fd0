//! Criterion benchmarks for TOTP verification (issue 3, item 9):
//! `totp::match_step` with the default parameters (HMAC-SHA-1, 6 digits,
//! 30-second steps, skew ±1).
//!
//! - `totp/match_step_valid`: a code of the current step;
//! - `totp/match_step_invalid`: a well-formed code that matches no window.
//!
//! Both cost the same three HMACs: `match_step` generates and compares
//! every window without stopping at a match, so the two timings should be
//! equal within noise (a visible gap would hint at an early exit).
//!
//! Run: `cargo bench --bench totp`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use echorelay::core::account::totp::{self, TotpParams, TotpSeed};

fn bench_match_step(c: &mut Criterion) {
    let seed = TotpSeed::generate();
    let params = TotpParams::default();
    let now = 1_700_000_015;
    let step = totp::step_at(&params, now);

    let valid = totp::code_for_step(&seed, &params, step).unwrap();
    // A well-formed code equal to none of the three windows' codes.
    let windows: Vec<String> = (step - params.skew..=step + params.skew)
        .map(|s| totp::code_for_step(&seed, &params, s).unwrap().to_string())
        .collect();
    let invalid = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| !windows.contains(c))
        .unwrap();
    assert_eq!(
        totp::match_step(&seed, &params, &invalid, now).unwrap(),
        None
    );
    assert_eq!(
        totp::match_step(&seed, &params, &valid, now).unwrap(),
        Some(step)
    );

    let mut group = c.benchmark_group("totp");
    group.bench_function("match_step_valid", |b| {
        b.iter(|| {
            totp::match_step(
                black_box(&seed),
                black_box(&params),
                black_box(valid.as_str()),
                black_box(now),
            )
            .unwrap()
        })
    });
    group.bench_function("match_step_invalid", |b| {
        b.iter(|| {
            totp::match_step(
                black_box(&seed),
                black_box(&params),
                black_box(invalid.as_str()),
                black_box(now),
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_match_step);
criterion_main!(benches);
