//! The suite's race checks must catch a Redis session store that checks
//! with one command and writes with another (no script, no sleep): for
//! each conditional method [`RedisSessions::racy`] breaks, the suite's
//! race checks for it run against such a store [`RUNS`] times and must
//! fail in at least [`REQUIRED`] of them.
//!
//! Feature `racy` (`cargo test --workspace --all-features` builds it, as
//! CI does); needs Redis (skips without it unless
//! `ECHORELAY_REQUIRE_SERVICES=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Once;

use echorelay_core::ports::Composed;
use echorelay_store_mem::MemStore;
use echorelay_store_redis::{RedisSessions, TestRedis};
use echorelay_testkit::{Harness, accounts};

/// Runs per racy method.
const RUNS: usize = 20;
/// Runs in which the suite must catch it.
const REQUIRED: usize = 19;

type Racy = Composed<MemStore, RedisSessions, RedisSessions>;

#[derive(Debug, Clone, Copy)]
enum Method {
    ReplaceSession,
    ReplaceSessionByRenewal,
    TakeChallenge,
    TakeChallengeByLogin,
    ReserveAttempt,
    ReserveAttemptByLogin,
}

async fn check(method: Method, h: Harness<Racy>) {
    match method {
        Method::ReplaceSession => accounts::replace_session_wins_once_under_races(h).await,
        Method::ReplaceSessionByRenewal => accounts::concurrent_renewals_leave_one_session(h).await,
        Method::TakeChallenge => {
            accounts::take_challenge_gives_one_caller_the_challenge_under_races(h).await
        }
        Method::TakeChallengeByLogin => accounts::one_challenge_is_used_once_under_races(h).await,
        Method::ReserveAttempt => accounts::reserve_attempt_respects_the_limit_under_races(h).await,
        Method::ReserveAttemptByLogin => accounts::parallel_guesses_respect_the_limit(h).await,
    }
}

/// Quiet panics inside the checks: the failure against the racy store is
/// the expected outcome, one line each, no backtrace.
fn quiet_expected_panics() {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_check = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("tokio-"));
            if in_check {
                eprintln!("(expected) racy Redis store caught: {info}");
            } else {
                default(info);
            }
        }));
    });
}

async fn caught(redis: &TestRedis, method: Method) -> usize {
    quiet_expected_panics();
    let mut caught = 0;
    for _ in 0..RUNS {
        let racy = redis.fresh_sessions().await.racy();
        let store = Composed::new(MemStore::new(), racy.clone(), racy);
        let outcome = tokio::spawn(check(method, Harness::new(store))).await;
        if outcome.is_err_and(|e| e.is_panic()) {
            caught += 1;
        }
    }
    caught
}

async fn assert_caught(method: Method) {
    let Some(redis) = echorelay_store_redis::test_redis().await else {
        return;
    };
    let n = caught(&redis, method).await;
    println!("racy Redis {method:?}: caught in {n} of {RUNS} runs");
    assert!(
        n >= REQUIRED,
        "the suite caught a Redis store whose {method:?} checks, then writes, in only {n} of {RUNS} runs (need {REQUIRED})"
    );
}

macro_rules! caught {
    ($($name:ident => $method:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                assert_caught(Method::$method).await;
            }
        )*
    };
}

caught!(
    racy_replace_session_is_caught => ReplaceSession,
    racy_take_challenge_is_caught => TakeChallenge,
    racy_reserve_attempt_is_caught => ReserveAttempt,
);
