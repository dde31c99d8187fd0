//! The suite's race checks must catch a realistic racy Postgres adapter,
//! not only one that sleeps: for each method [`Racy`] can break (a check
//! and a write as two statements on the pool, back to back, no sleep), the
//! suite's port-level race check for it runs against such a store
//! [`RUNS`] times and must fail in at least [`REQUIRED`] of them. If this
//! fails, a broken adapter could break TOTP replay protection, single-use
//! challenges or single-use backup codes and still pass CI.
//!
//! Feature `racy` (`cargo test --workspace --all-features` builds it, as
//! CI does); needs Postgres like the other tests here (skips without it
//! unless `ECHORELAY_REQUIRE_SERVICES=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use echorelay_store_pg::{PgStore, Racy, TestDatabase};
use echorelay_testkit::{Harness, accounts, self_test};

/// Runs per racy method.
const RUNS: usize = 20;
/// Runs in which the suite must catch it.
const REQUIRED: usize = 19;

/// The suite's check that must catch `method`.
async fn check(method: Racy, h: Harness<PgStore>) {
    match method {
        Racy::AdvanceTotpStep => accounts::advance_totp_step_wins_once_under_races(h).await,
        Racy::TakeChallenge => {
            accounts::take_challenge_gives_one_caller_the_challenge_under_races(h).await
        }
        Racy::ConsumeBackupCode => accounts::consume_backup_code_succeeds_once_under_races(h).await,
        other => panic!("no race check names {other:?}"),
    }
}

/// In how many of [`RUNS`] runs, each on a fresh racy store, the check
/// failed.
async fn caught(db: &TestDatabase, method: Racy) -> usize {
    self_test::quiet_expected_panics("racy Postgres store");
    self_test::times_caught(RUNS, || {
        let db = db.clone();
        async move {
            let store = db
                .fresh_store_with(|o| o.racy(method))
                .await
                .expect("a fresh, migrated schema");
            check(method, Harness::new(store)).await;
        }
    })
    .await
}

async fn assert_caught(method: Racy) {
    let Some(db) = echorelay_store_pg::test_database().await else {
        return;
    };
    let n = caught(&db, method).await;
    println!("racy Postgres {method:?}: caught in {n} of {RUNS} runs");
    assert!(
        n >= REQUIRED,
        "the suite caught a Postgres store whose {method:?} checks, then writes, in only {n} of {RUNS} runs (need {REQUIRED})"
    );
}

macro_rules! caught {
    ($($name:ident => $method:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                assert_caught(Racy::$method).await;
            }
        )*

        #[test]
        fn every_racy_method_has_a_test() {
            let covered = [$(Racy::$method),*];
            for m in Racy::ALL {
                assert!(covered.contains(&m), "{m:?} has no racy-Postgres test");
            }
        }
    };
}

caught!(
    racy_advance_totp_step_is_caught => AdvanceTotpStep,
    racy_take_challenge_is_caught => TakeChallenge,
    racy_consume_backup_code_is_caught => ConsumeBackupCode,
);
