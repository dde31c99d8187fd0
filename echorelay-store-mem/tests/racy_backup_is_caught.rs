//! The backup target suite must be able to fail. A target whose create
//! checks under its lock, lets go, yields, and then writes
//! (`MemBackupTarget::racy`, feature `faults`) must fail the suite's race
//! check in at least 19 of 20 runs, each on a fresh target; the sound
//! target must pass it in all of them. If this test fails, the suite has
//! stopped catching racy backup targets.

use std::sync::Once;

use echorelay_store_mem::MemBackupTarget;
use echorelay_testkit::backup;

/// Runs of the race check.
const RUNS: usize = 20;
/// Runs that must fail against the racy target.
const MUST_CATCH: usize = 19;

fn quiet_expected_panics() {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The suite failing against the racy target is the expected
            // outcome: print nothing for it, keep other panics loud.
            let in_check = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("tokio-"));
            if !in_check {
                default(info);
            }
        }));
    });
}

/// How many of `RUNS` runs of the race check failed on targets from
/// `fresh`, and the first failure's first line.
async fn failures(fresh: fn() -> MemBackupTarget) -> (usize, String) {
    quiet_expected_panics();
    let mut failed = 0;
    let mut first = None;
    for _ in 0..RUNS {
        let run = backup::run(fresh(), backup::racing_creates_have_one_winner);
        if let Err(e) = tokio::spawn(run).await
            && e.is_panic()
        {
            failed += 1;
            let payload = e.into_panic();
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()));
            first = first.or(text);
        }
    }
    let first = first.unwrap_or_default();
    (failed, first.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racy_create_is_caught() {
    let (caught, first) = failures(MemBackupTarget::racy).await;
    eprintln!("racy create: the race check caught it in {caught} of {RUNS} runs (first: {first})");
    assert!(
        caught >= MUST_CATCH,
        "the backup suite's race check caught a target whose create checks, yields, then writes in only {caught} of {RUNS} runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sound_target_passes_every_run() {
    let (failed, first) = failures(MemBackupTarget::new).await;
    assert_eq!(failed, 0, "the sound target failed the race check: {first}");
}
