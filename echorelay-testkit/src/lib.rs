//! # echorelay-testkit
//!
//! The conformance suite: checks of the port contracts and the security
//! invariants, and every backend runs all of it unchanged. Each check is a
//! `pub async fn` taking a [`Harness`] (the backend wired to the core
//! services with a test clock and a fresh vault key); the modules group them
//! by area ([`keys`], [`config`], [`rewrap`], [`access`], [`audit`],
//! [`accounts`], [`contracts`]). Differences between backends are a
//! parameter (an expression that makes a fresh, empty backend), never
//! skipped checks.
//!
//! A backend runs the suite by invoking [`conformance_tests!`] once in an
//! integration test, as `echorelay-store-mem/tests/conformance.rs` does:
//!
//! ```text
//! echorelay_testkit::conformance_tests!(async { echorelay_store_mem::MemStore::new() });
//! ```
//!
//! The macro expands to one `#[tokio::test]` per check (multi-threaded
//! runtime, two workers), each on its own fresh backend, so `cargo test`
//! names every failing check. Its list is the suite: a new check is added
//! there, and a backend picks it up without changes.
//!
//! Race checks start their callers with [`Harness::race`]: the backend
//! first opens the connections they need ([`Harness::warm_up`]), then every
//! call is spawned on its own task and all are released together from a
//! barrier ([`race`]), so a backend whose conditional write checks and then
//! writes is caught. The conditional port methods a login depends on are
//! also raced directly, in rounds (`accounts::*_under_races`), not only
//! through the services. That the suite can fail is itself tested against
//! such broken stores (`MemStore::racy`, in
//! `echorelay-store-mem/tests/racy_store_is_caught.rs`; `PgOptions::racy`,
//! in `echorelay-store-pg/tests/racy_pg_is_caught.rs`).
//!
//! Queue backends run the queue suite, [`queue`], through [`queue_tests!`]
//! (same two forms; a [`queue::QueueHarness`] instead of a [`Harness`]):
//!
//! ```text
//! echorelay_testkit::queue_tests!(async { echorelay_store_mem::MemQueue::new() });
//! ```
//!
//! Backup targets run the backup target suite, [`backup`], through
//! [`backup_target_tests!`] (same two forms; a
//! [`backup::BackupHarness`], and every object the check left is deleted
//! afterwards):
//!
//! ```text
//! echorelay_testkit::backup_target_tests!(async { echorelay_store_mem::MemBackupTarget::new() });
//! ```
//!
//! A failing check panics with a message naming the suite and the check:
//! this crate is test code, where a panic is the failure report.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Test code: a panic is how a check reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use echorelay_core::access::{Caller, Voter};
use echorelay_core::account::{AccountPolicy, AccountService, password::PasswordPolicy};
use echorelay_core::clock::{Clock, ManualClock};
use echorelay_core::config::{ConfigService, Project};
use echorelay_core::ids::UserId;
use echorelay_core::keys::KeyService;
use echorelay_core::ports::{
    AccountStore, AuditLog, AuditSink, ConfigStore, IdempotencyStore, KeyStore, MembershipStore,
    SessionStore, SnapshotStore, ThrottleStore,
};
use echorelay_core::vault::{AesGcmVault, Keyring, SecretKey};

pub mod access;
pub mod accounts;
pub mod audit;
pub mod backup;
pub mod config;
pub mod contracts;
pub mod deliveries;
pub mod idempotency;
pub mod keys;
pub mod queue;
pub mod rewrap;
pub mod snapshot;

/// Everything a full backend implements.
pub trait Backend:
    KeyStore
    + ConfigStore
    + MembershipStore
    + AuditLog
    + AuditSink
    + AccountStore
    + SessionStore
    + ThrottleStore
    + SnapshotStore
    + IdempotencyStore
    + echorelay_core::ports::DeliveryLog
    + Clone
    + Send
    + Sync
    + 'static
{
}
impl<T> Backend for T where
    T: KeyStore
        + ConfigStore
        + MembershipStore
        + AuditLog
        + AuditSink
        + AccountStore
        + SessionStore
        + ThrottleStore
        + SnapshotStore
        + IdempotencyStore
        + echorelay_core::ports::DeliveryLog
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The account policy the suite runs with: the defaults, except bcrypt at
/// its minimum cost (10) and 40 password attempts per source and window,
/// so the suite stays fast. Cost 13 is the default and is tested in the
/// password module.
pub fn test_account_policy() -> AccountPolicy {
    AccountPolicy {
        password: PasswordPolicy::new(10).expect("cost 10 is valid"),
        // Low enough that the suite reaches it quickly, high enough for
        // the logins one check makes from one address.
        max_password_attempts_per_source: 40,
        ..AccountPolicy::default()
    }
}

/// A backend wired to the core services, with a test clock.
pub struct Harness<B: Backend> {
    /// The backend under test.
    pub store: B,
    /// The clock every service reads; move it to move time.
    pub clock: ManualClock,
    /// The vault.
    pub vault: Arc<AesGcmVault>,
    /// Key service.
    pub keys: KeyService<B, Arc<AesGcmVault>>,
    /// Config service.
    pub config: ConfigService<B, Arc<AesGcmVault>>,
    /// Voter.
    pub voter: Voter<B>,
    /// Account service.
    pub accounts: AccountService<B, Arc<AesGcmVault>>,
}

impl<B: Backend> Harness<B> {
    /// Wires `store` with a fresh vault key and a clock at 2026-01-01.
    pub fn new(store: B) -> Self {
        let vault = Arc::new(AesGcmVault::new(Keyring::new(SecretKey::generate())));
        Self::with_vault(store, vault)
    }

    /// Wires `store` with the given vault.
    pub fn with_vault(store: B, vault: Arc<AesGcmVault>) -> Self {
        Self::wire(store, vault, ManualClock::at_unix(1_767_225_600))
    }

    /// A second set of services over the same backend, vault and clock:
    /// another "process".
    pub fn another_process(&self) -> Self {
        Self::wire(self.store.clone(), self.vault.clone(), self.clock.clone())
    }

    fn wire(store: B, vault: Arc<AesGcmVault>, clock: ManualClock) -> Self {
        let c: Arc<dyn Clock> = Arc::new(clock.clone());
        Self {
            keys: KeyService::new(store.clone(), vault.clone(), c.clone()),
            config: ConfigService::new(store.clone(), vault.clone(), c.clone()),
            voter: Voter::new(store.clone()),
            accounts: AccountService::new(store.clone(), vault.clone(), c, test_account_policy())
                .expect("valid policy"),
            store,
            clock,
            vault,
        }
    }

    /// The voter's grant of surface `K` in `project` for `caller`; panics if
    /// denied.
    pub async fn grant<K: echorelay_core::access::surface::SurfaceKind>(
        &self,
        caller: &Caller,
        project: &Project,
    ) -> echorelay_core::access::Grant<K> {
        self.voter
            .authorize::<K>(caller, project.slug.as_str())
            .await
            .expect("the voter denied a grant the check needs")
    }

    /// Creates a project with a random slug owned by a new user; returns
    /// the project and its owner as a caller.
    pub async fn project(&self) -> (Project, Caller) {
        let owner = UserId::random();
        let slug = format!("p-{}", &UserId::random().to_string()[4..16]);
        let ip = Some("203.0.113.9".parse().unwrap());
        let p = self
            .config
            .create_project(owner, ip, &slug, "Test project")
            .await
            .unwrap();
        (p, Caller::dangerous_user_stepped_up(owner, ip))
    }
}

/// Generates one `#[tokio::test]` per conformance check, each on a fresh
/// backend made by `$fresh` (an expression producing a future of the
/// backend). This list is the suite: a backend that invokes the macro runs
/// every check.
///
/// ```text
/// echorelay_testkit::conformance_tests!(async { echorelay_store_mem::MemStore::new() });
/// ```
///
/// (As in `echorelay-store-mem/tests/conformance.rs`.) A backend that
/// needs a service passes `optional` and an expression producing a future
/// of `Option<backend>`; `None` skips the check (the service is absent and
/// not required), as `echorelay-store-pg/tests/conformance.rs` does:
///
/// ```text
/// echorelay_testkit::conformance_tests!(optional async {
///     let db = echorelay_store_pg::test_database().await?;
///     Some(db.fresh_store().await.expect("a fresh schema"))
/// });
/// ```
#[macro_export]
macro_rules! conformance_tests {
    (optional $fresh:expr) => {
        $crate::conformance_tests!(@list optional $fresh);
    };
    ($fresh:expr) => {
        $crate::conformance_tests!(@list required $fresh);
    };
    (@list $mode:ident $fresh:expr) => {
        $crate::conformance_tests!(@each $mode $fresh;
            keys::mint_then_verify_stores_only_the_hash,
            keys::malformed_and_unknown_keys_fail_opaquely,
            keys::revoke_is_effective_on_the_next_request_in_every_process,
            keys::operator_rotation_overlap_then_grace,
            keys::zero_overlap_zero_grace_is_immediate,
            keys::auto_rotation_reveals_successor_exactly_once,
            keys::unrevealed_successor_is_destroyed_after_grace,
            keys::concurrent_rotate_due_makes_one_successor,
            keys::keys_of_another_project_are_invisible,
            keys::failed_mutations_write_no_audit_event,
            keys::port_refusals_write_no_audit_event,
            keys::concurrent_reveals_reveal_once,
            keys::a_key_collects_its_own_successor_once,
            keys::revoking_a_key_revokes_what_it_minted,
            keys::mints_racing_the_revocation_of_their_key_do_not_survive,
            keys::keys_minted_by_a_dependent_racing_the_revocation_do_not_survive,
            keys::rotations_racing_the_revocation_of_their_key_do_not_survive,
            keys::collections_racing_the_revocation_of_their_key_do_not_survive,
            keys::a_collected_successor_goes_with_its_predecessor,
            keys::minting_and_rotating_need_a_step_up,
            keys::a_key_is_minted_up_to_the_minters_role,
            keys::a_moved_pending_reveal_does_not_open,
            keys::operator_rotation_options_are_checked_at_their_boundaries,
            keys::a_longer_cadence_lengthens_the_overlap_of_keys_already_minted,
            config::secrets_are_stored_sealed_and_read_masked,
            config::moved_ciphertext_does_not_decrypt,
            config::crud_is_audited_and_scoped_to_the_project,
            config::export_import_round_trip_and_bad_input,
            config::slugs_are_unique,
            config::delivery_secrets_are_narrow_and_audited,
            config::refused_changes_write_nothing,
            config::names_and_urls_are_checked_at_their_boundaries,
            config::secrets_and_usernames_are_checked_at_their_boundaries,
            config::lines_read_back_with_their_own_endpoints_and_targets,
            config::endpoints_lead_to_the_targets_of_their_line,
            config::imports_refuse_moved_secrets_and_oversized_documents,
            config::the_tree_cap_holds_at_its_boundary,
            config::rotated_signing_secrets_sign_through_their_grace,
            rewrap::rewrap_covers_every_sealed_value,
            rewrap::rewrap_reports_what_does_not_open_and_resumes,
            rewrap::rewrap_never_overwrites_a_concurrent_change,
            access::role_matrix_equals_the_documented_table,
            access::membership_changes_take_effect_and_are_audited,
            access::last_owner_is_kept,
            access::owners_demoting_each_other_keep_one,
            audit::chain_verifies_and_pages,
            audit::concurrent_appends_keep_one_chain,
            audit::billing_events_are_validated_and_recorded,
            audit::user_export_finds_actor_and_subject_events,
            audit::audit_log_is_read_under_a_grant_and_verifies,
            audit::long_chains_verify_across_pages,
            audit::pages_verify_one_after_the_other,
            accounts::login_flow_enrolls_then_requires_totp,
            accounts::totp_skew_and_replay,
            accounts::same_code_on_two_challenges_wins_once,
            accounts::one_challenge_is_used_once_under_races,
            accounts::concurrent_renewals_leave_one_session,
            accounts::failed_codes_lock_out,
            accounts::parallel_guesses_respect_the_limit,
            accounts::enrollment_confirmation_is_throttled,
            accounts::backup_codes_are_single_use_under_races,
            accounts::advance_totp_step_wins_once_under_races,
            accounts::take_challenge_gives_one_caller_the_challenge_under_races,
            accounts::consume_backup_code_succeeds_once_under_races,
            accounts::reserve_attempt_respects_the_limit_under_races,
            accounts::replace_session_wins_once_under_races,
            accounts::trusted_devices_are_capped_fixed_and_skip_only_totp,
            accounts::devices_are_revoked_by_request_password_change_and_reset,
            accounts::sessions_expire_and_are_pinned_to_the_ip_family,
            accounts::challenges_expire_and_are_pinned,
            accounts::old_credentials_die_with_the_epoch,
            accounts::purge_removes_only_expired_sessions_and_challenges,
            accounts::password_step_is_throttled,
            accounts::password_guessing_backs_off,
            accounts::guesses_do_not_lock_out_a_trusted_device,
            accounts::a_loopback_source_is_not_a_global_bucket,
            accounts::sessions_per_account_are_capped,
            accounts::new_passwords_follow_the_policy,
            accounts::sensitive_operations_need_a_recent_step_up,
            accounts::a_user_ends_only_their_own_sessions,
            accounts::access_list_shows_only_live_sessions_and_devices,
            contracts::mark_verified_never_moves_back_or_creates,
            contracts::touch_on_a_missing_record_creates_nothing,
            contracts::audit_seq_is_gap_free_and_paged_by_seq,
            contracts::user_export_is_ordered_by_time_then_chain_then_seq,
            contracts::user_export_pages_by_cursor_across_chains_and_equal_times,
            contracts::keys_and_members_page_by_id,
            contracts::personal_data_holds_the_accounts_own_events_only,
            contracts::emails_are_compared_as_bytes,
            contracts::device_eviction_orders_by_creation_then_id,
            contracts::backup_codes_match_on_index_and_hash,
            contracts::attempt_windows_are_half_open,
            contracts::purge_boundaries,
            contracts::session_for_request_touches_only_live_sessions,
            contracts::replacing_a_gone_session_is_not_found,
            contracts::keys_needing_attention_pages_by_id,
            contracts::multi_record_changes_are_all_or_nothing,
            contracts::config_writes_are_compare_and_swap,
            contracts::a_new_project_from_an_import_has_an_owner,
            idempotency::idempotency_keys_are_claimed_once_per_project_until_they_expire,
            idempotency::racing_claims_of_one_key_have_one_winner,
            deliveries::the_log_round_trips_and_attempts_move_the_state,
            deliveries::batches_answer_each_record_as_one_call_would,
            deliveries::messages_page_newest_first_and_dead_letters_per_target,
            deliveries::a_redrive_mark_wins_once,
            deliveries::racing_attempts_are_all_counted,
        );
        $crate::conformance_tests!(@pairs $mode $fresh;
            snapshot::a_snapshot_restores_every_record,
            snapshot::a_snapshot_restores_only_into_an_empty_store,
        );
    };
    (@pairs $mode:ident $fresh:expr; $($suite:ident :: $check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(backend) = $crate::conformance_tests!(@fresh $mode $fresh) else {
                    return;
                };
                let Some(second) = $crate::conformance_tests!(@fresh $mode $fresh) else {
                    return;
                };
                $crate::$suite::$check($crate::Harness::new(backend), second).await;
            }
        )*
    };
    (@each $mode:ident $fresh:expr; $($suite:ident :: $check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(backend) = $crate::conformance_tests!(@fresh $mode $fresh) else {
                    return;
                };
                $crate::$suite::$check($crate::Harness::new(backend)).await;
            }
        )*
    };
    (@fresh required $fresh:expr) => {
        Some($fresh.await)
    };
    (@fresh optional $fresh:expr) => {
        $fresh.await
    };
}

/// Every event of `user`'s export, read page by page through
/// [`AuditLog::events_for_user_page`] (pages of 100).
pub async fn all_events_for_user<L: AuditLog + ?Sized>(
    log: &L,
    user: UserId,
) -> Vec<echorelay_core::audit::AuditEvent> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = log
            .events_for_user_page(user, after, 100)
            .await
            .expect("the user's audit events could not be read");
        let full = page.len() == 100;
        if let Some(last) = page.last() {
            after = Some(
                echorelay_core::audit::UserEventCursor::of(last)
                    .expect("a stored event has a cursor"),
            );
        }
        all.extend(page);
        if !full {
            return all;
        }
    }
}

/// Every member of `project`, read page by page through
/// [`MembershipStore::members_page`] (pages of 100).
pub async fn all_members<M: MembershipStore + ?Sized>(
    store: &M,
    project: echorelay_core::ids::ProjectId,
) -> Vec<(UserId, echorelay_core::access::Role)> {
    let mut all: Vec<(UserId, echorelay_core::access::Role)> = Vec::new();
    loop {
        let after = all.last().map(|(u, _)| *u);
        let page = store
            .members_page(project, after, 100)
            .await
            .expect("the project's members could not be read");
        let full = page.len() == 100;
        all.extend(page);
        if !full {
            return all;
        }
    }
}

/// Runs `calls` truly concurrently: each is spawned on its own task, and
/// all are released at once from a barrier, after everything they need was
/// prepared. Returns their outputs in order; a panic in any of them is
/// re-raised here. Race checks use this, so a backend whose conditional
/// write checks, yields and then writes is caught (see the racy-store
/// self-test in `echorelay-store-mem`).
pub async fn race<F>(calls: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let barrier = Arc::new(tokio::sync::Barrier::new(calls.len()));
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|call| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                call.await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

impl<B: Backend> Harness<B> {
    /// Opens the backend's connections before a race, so the racers are
    /// released together rather than one connect apart: a pool that opens
    /// connections on demand lets the first caller finish a check and a
    /// write alone while the others still connect, and a racy backend
    /// passes. First the backend's own
    /// [`SessionStore::warm_up`] (Postgres holds `callers` pool
    /// connections at once until all are open; the default does nothing),
    /// then a round of concurrent reads released from a barrier (for a
    /// backend that keeps the default).
    pub async fn warm_up(&self, callers: usize) {
        self.store
            .warm_up(callers)
            .await
            .expect("the backend's warm-up failed");
        let calls: Vec<_> = (0..callers)
            .map(|_| {
                let store = self.store.clone();
                async move {
                    store.head(None).await.expect("the warm-up read failed");
                }
            })
            .collect();
        race(calls).await;
    }

    /// [`Harness::warm_up`] for `calls.len()` callers, then [`race`]: how
    /// every race check starts its callers.
    pub async fn race<F>(&self, calls: Vec<F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.warm_up(calls.len()).await;
        race(calls).await
    }

    /// How many events of the project's chain match `pred`.
    pub async fn count_events(
        &self,
        project: echorelay_core::ids::ProjectId,
        pred: impl Fn(&echorelay_core::audit::AuditEvent) -> bool,
    ) -> usize {
        self.store
            .events(Some(project), 0, usize::MAX)
            .await
            .expect("the audit log could not be read")
            .iter()
            .filter(|e| pred(e))
            .count()
    }

    /// The harness clock's current time.
    pub fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }
}

/// Support for the suite's self-tests (`tests/racy_*_is_caught.rs` of each
/// backend): the checks run against deliberately broken stores, where a
/// failing check is the expected outcome.
pub mod self_test {
    use std::future::Future;
    use std::sync::Once;

    /// Makes panics on tokio's worker threads (where the checks run) print
    /// one line naming `what` instead of a backtrace; other panics stay
    /// loud. Installed once per process.
    pub fn quiet_expected_panics(what: &'static str) {
        static QUIET: Once = Once::new();
        QUIET.call_once(|| {
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                let in_check = std::thread::current()
                    .name()
                    .is_some_and(|n| n.starts_with("tokio-"));
                if in_check {
                    eprintln!("(expected) {what} caught: {info}");
                } else {
                    default(info);
                }
            }));
        });
    }

    /// Runs `run()` (a check on a fresh broken store) `runs` times, each
    /// on a task of its own, and returns in how many the check failed
    /// (panicked).
    pub async fn times_caught<F, Fut>(runs: usize, mut run: F) -> usize
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut caught = 0;
        for _ in 0..runs {
            let check = run();
            if tokio::spawn(check).await.is_err_and(|e| e.is_panic()) {
                caught += 1;
            }
        }
        caught
    }
}
