//! The queue suite must be able to fail. For each conditional operation of
//! the queue, a queue that checks under its lock, lets go, yields, and then
//! writes what it decided (`MemQueue::racy`, feature `faults`) must fail
//! the suite's race check for that operation: in at least 19 of 20 runs,
//! each on a fresh queue. If one of these tests fails, the suite has
//! stopped catching racy queue backends.

use echorelay_store_mem::{MemQueue, QueueConditional};
use echorelay_testkit::queue::{self, QueueHarness};

/// Runs per (operation, check) pair.
const RUNS: usize = 20;
/// Runs that must fail the check.
const MUST_CATCH: usize = 19;

/// A race check of the suite.
#[derive(Debug, Clone, Copy)]
enum Check {
    DisjointConsumers,
    AckRacingExpiry,
    NackRacingExpiry,
    ExtendRacingExpiry,
    OneTokenWinsOnce,
    OneKeyOneJob,
    OneRedrive,
}

async fn run(op: QueueConditional, check: Check) {
    let h = QueueHarness::new(MemQueue::racy(op));
    match check {
        Check::DisjointConsumers => queue::racing_consumers_get_disjoint_jobs(h).await,
        Check::AckRacingExpiry => queue::ack_racing_lease_expiry_has_one_outcome(h).await,
        Check::NackRacingExpiry => queue::nack_racing_lease_expiry_has_one_outcome(h).await,
        Check::ExtendRacingExpiry => queue::extend_racing_lease_expiry_has_one_outcome(h).await,
        Check::OneTokenWinsOnce => queue::racing_uses_of_one_token_win_once(h).await,
        Check::OneKeyOneJob => queue::racing_enqueues_with_one_key_store_one_job(h).await,
        Check::OneRedrive => queue::racing_redrives_of_one_dead_job_win_once(h).await,
    }
}

async fn assert_caught(op: QueueConditional, check: Check) {
    echorelay_testkit::self_test::quiet_expected_panics("racy queue");
    let mut caught = 0;
    let mut first = None;
    for _ in 0..RUNS {
        if let Err(e) = tokio::spawn(run(op, check)).await
            && e.is_panic()
        {
            caught += 1;
            let payload = e.into_panic();
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()));
            first = first.or(text);
        }
    }
    let first = first.unwrap_or_default();
    let first = first.lines().next().unwrap_or_default();
    eprintln!("racy {op:?}: {check:?} caught it in {caught} of {RUNS} runs (first: {first})");
    assert!(
        caught >= MUST_CATCH,
        "the queue suite's {check:?} caught a queue whose {op:?} checks, yields, then writes in only {caught} of {RUNS} runs"
    );
}

macro_rules! caught {
    ($($name:ident => $op:ident by $check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                assert_caught(QueueConditional::$op, Check::$check).await;
            }
        )*

        #[test]
        fn every_conditional_queue_operation_has_a_racy_check() {
            let covered = [$(QueueConditional::$op),*];
            for op in QueueConditional::ALL {
                assert!(covered.contains(&op), "{op:?} has no racy-queue test");
            }
        }
    };
}

caught!(
    racy_reserve_is_caught => Reserve by DisjointConsumers,
    racy_ack_is_caught_racing_expiry => Ack by AckRacingExpiry,
    racy_ack_is_caught_by_one_token => Ack by OneTokenWinsOnce,
    racy_nack_is_caught_racing_expiry => Nack by NackRacingExpiry,
    racy_nack_is_caught_by_one_token => Nack by OneTokenWinsOnce,
    racy_extend_is_caught_racing_expiry => Extend by ExtendRacingExpiry,
    racy_enqueue_is_caught => Enqueue by OneKeyOneJob,
    racy_redrive_is_caught => Redrive by OneRedrive,
);
