//! The conformance suite must be able to fail. For each conditional method
//! of the ports, a store that checks, yields and then writes (instead of
//! deciding and writing in one atomic step) must fail the suite's race
//! check for that method, on every run. If one of these tests fails, the
//! suite has stopped catching racy backends.

use echorelay_store_mem::{Conditional, MemStore};
use echorelay_testkit::Harness;

/// The check of the suite that must catch each racy method.
async fn check(method: Conditional) {
    let h = Harness::new(MemStore::racy(method));
    use echorelay_testkit::{access, accounts, audit, deliveries, idempotency, keys};
    match method {
        Conditional::AdvanceTotpStep => accounts::same_code_on_two_challenges_wins_once(h).await,
        Conditional::ReserveAttempt => accounts::parallel_guesses_respect_the_limit(h).await,
        Conditional::ConsumeBackupCode => {
            accounts::backup_codes_are_single_use_under_races(h).await
        }
        Conditional::TakeChallenge => accounts::one_challenge_is_used_once_under_races(h).await,
        Conditional::TakePendingReveal => keys::concurrent_reveals_reveal_once(h).await,
        Conditional::RotateKey => keys::concurrent_rotate_due_makes_one_successor(h).await,
        Conditional::InsertKey => {
            keys::mints_racing_the_revocation_of_their_key_do_not_survive(h).await
        }
        Conditional::ReplaceSession => accounts::concurrent_renewals_leave_one_session(h).await,
        Conditional::SetRole => access::owners_demoting_each_other_keep_one(h).await,
        Conditional::AuditAppend => audit::concurrent_appends_keep_one_chain(h).await,
        Conditional::ClaimIdempotencyKey => {
            idempotency::racing_claims_of_one_key_have_one_winner(h).await
        }
        Conditional::RecordAttempt => deliveries::racing_attempts_are_all_counted(h).await,
        Conditional::MarkRedriven => deliveries::a_redrive_mark_wins_once(h).await,
        other => panic!("no race check names {other:?}"),
    }
}

async fn assert_caught(method: Conditional) {
    echorelay_testkit::self_test::quiet_expected_panics("racy store");
    let outcome = tokio::spawn(check(method)).await;
    assert!(
        outcome.as_ref().is_err_and(|e| e.is_panic()),
        "the suite passed against a store whose {method:?} checks, yields, then writes"
    );
}

macro_rules! caught {
    ($($name:ident => $method:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                assert_caught(Conditional::$method).await;
            }
        )*

        #[test]
        fn every_conditional_method_has_a_racy_check() {
            let covered = [$(Conditional::$method),*];
            for m in Conditional::ALL {
                assert!(covered.contains(&m), "{m:?} has no racy-store test");
            }
        }
    };
}

caught!(
    racy_advance_totp_step_is_caught => AdvanceTotpStep,
    racy_reserve_attempt_is_caught => ReserveAttempt,
    racy_consume_backup_code_is_caught => ConsumeBackupCode,
    racy_take_challenge_is_caught => TakeChallenge,
    racy_take_pending_reveal_is_caught => TakePendingReveal,
    racy_rotate_key_is_caught => RotateKey,
    racy_insert_key_is_caught => InsertKey,
    racy_replace_session_is_caught => ReplaceSession,
    racy_set_role_is_caught => SetRole,
    racy_audit_append_is_caught => AuditAppend,
    racy_claim_idempotency_key_is_caught => ClaimIdempotencyKey,
    racy_record_attempt_is_caught => RecordAttempt,
    racy_mark_redriven_is_caught => MarkRedriven,
);
