//! Timing differences an attacker could measure (issue 6, item 9):
//!
//! - the password step for an unknown email, a known account with a wrong
//!   password (hash at the policy's cost), and a known account whose hash
//!   is a cheaper legacy one (cost 10 under a policy of 12, padded with
//!   dummy work to the policy's cost), all through
//!   `AccountService::login_password` on the in-memory store;
//! - the voter deciding for a project slug that does not exist and for one
//!   that exists but is not the caller's.
//!
//! `cargo bench --bench timing`; the medians and their differences go in
//! BENCHMARKS.md. Cost 12 (not 13) keeps the run short; the padding rule
//! is the same at any cost.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use echorelay::MemStore;
use echorelay::core::access::{Caller, Surface, Voter};
use echorelay::core::account::password::PasswordPolicy;
use echorelay::core::account::{AccountPolicy, AccountService};
use echorelay::core::clock::{Clock, SystemClock};
use echorelay::core::config::ConfigService;
use echorelay::core::ids::UserId;
use echorelay::core::vault::{AesGcmVault, Keyring, SecretKey};
use secrecy::SecretString;

const PASSWORD: &str = "correct horse battery staple";

fn policy(cost: u32) -> AccountPolicy {
    AccountPolicy {
        password: PasswordPolicy::new(cost).unwrap(),
        // The bench makes thousands of attempts: no throttling here.
        max_password_failures: u32::MAX,
        max_password_attempts_per_source: u32::MAX,
        ..AccountPolicy::default()
    }
}

fn bench_login(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = MemStore::new();
    let vault = Arc::new(AesGcmVault::new(Keyring::new(SecretKey::generate())));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let current =
        AccountService::new(store.clone(), vault.clone(), clock.clone(), policy(12)).unwrap();
    let legacy = AccountService::new(store.clone(), vault, clock, policy(10)).unwrap();
    rt.block_on(async {
        current
            .register("current@example.com", SecretString::from(PASSWORD), None)
            .await
            .unwrap();
        legacy
            .register("legacy@example.com", SecretString::from(PASSWORD), None)
            .await
            .unwrap();
    });
    let ip = "192.0.2.1".parse().unwrap();
    let mut group = c.benchmark_group("login_timing");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(8));
    for (name, email) in [
        ("unknown_account", "nobody@example.com"),
        ("known_wrong_password_cost12", "current@example.com"),
        ("legacy_cost10_wrong_password_padded", "legacy@example.com"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(current.login_password(
                    black_box(email),
                    SecretString::from("wrong password, on purpose"),
                    ip,
                    None,
                ))
                .unwrap_err()
            })
        });
    }
    group.finish();
}

fn bench_voter(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = MemStore::new();
    let vault = Arc::new(AesGcmVault::new(Keyring::new(SecretKey::generate())));
    let config = ConfigService::new(store.clone(), vault, Arc::new(SystemClock));
    let voter = Voter::new(store.clone());
    rt.block_on(async {
        // 1,000 projects of other owners, as a populated store.
        for i in 0..1000 {
            config
                .create_project(UserId::random(), None, &format!("p{i}-x"), "P")
                .await
                .unwrap();
        }
    });
    let caller = Caller::user(UserId::random(), None);
    let mut group = c.benchmark_group("voter_timing");
    for (name, slug) in [
        ("unknown_slug", "no-such-project"),
        ("foreign_slug", "p500-x"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(voter.decide(&caller, black_box(slug), Surface::ConfigRead))
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_login, bench_voter);
criterion_main!(benches);
