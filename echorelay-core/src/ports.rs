//! The ports: what a backend implements. Each trait has only the methods an
//! implementor must write; the rules that use them live in the services
//! ([`crate::keys::KeyService`], [`crate::config::ConfigService`],
//! [`crate::access::Voter`], [`crate::audit`]).
//!
//! Every mutating method of [`KeyStore`], [`ConfigStore`] and
//! [`MembershipStore`] takes its [`AuditDraft`] and must store the change
//! and the sealed event ([`crate::audit::seal`]) in one atomic step, or
//! neither (S11). [`AccountStore`] and [`SessionStore`] do not: account
//! and session events are appended by the service through [`AuditSink`]
//! right after the change, in a separate step, because sessions may live
//! in another backend (Redis) than the log; a crash between the two can
//! lose such an event, never record one for a change that did not happen.
//! Methods that return `Err` must have written nothing.
//!
//! `Arc<T>` of any port is the port, so `Arc<dyn …>` and shared backends work.
//!
//! ## Contracts every backend keeps
//!
//! These are what the in-memory backend does and what the conformance
//! suite (`echorelay-testkit`) checks, one test each; SQL and Redis
//! adapters must do the same.
//!
//! - **Linearizable reads of security state.** [`KeyStore::key_status_by_hash`]
//!   must observe every [`KeyStore::revoke_key`] that returned before it was
//!   called (S3). An override that caches (in process, in Redis) breaks S3
//!   unless the revoking write invalidates every cache before it returns.
//!   The same holds for sessions, devices, challenges and TOTP steps.
//! - **Ids and order.** Every id orders by its 16 raw bytes (Postgres
//!   `bytea` order, and the order of its lowercase-hex text form). Paged
//!   methods take `after` (exclusive) and `limit`, return at most `limit`
//!   records in ascending id order, and a page shorter than `limit` is the
//!   last one.
//! - **Bytes, not rules.** Adapters compare stored text byte for byte.
//!   Email addresses are normalised once, by core
//!   ([`crate::account::service::normalize_email`]: trimmed, lowercased
//!   with Unicode's full lowercase mapping) before they reach a store; an
//!   adapter must not case-fold or collate them again (no `citext`, no
//!   case-insensitive collation).
//! - **Time boundaries.** Windows are half-open: an attempt at exactly
//!   `since` is outside `(since, …]`; a record whose expiry is exactly
//!   `now` has expired.
//! - **All or nothing.** Every method that touches several records
//!   ([`AccountStore::revoke_devices`], [`SessionStore::delete_sessions_of`],
//!   [`ConfigStore::import_tree`], [`AccountStore::reset_second_factor`],
//!   `DeleteLine`) does all of it or nothing.
//! - **Conditional writes.** The methods named *atomically* below decide
//!   and write in one step (a transaction with a row lock, a conditional
//!   `UPDATE … WHERE`, a Lua script or `WATCH`/`MULTI`): of racing callers
//!   exactly the documented number win. The suite releases its racing
//!   callers from a barrier and is itself tested against a store that
//!   checks, yields and then writes (`echorelay-store-mem`,
//!   `tests/racy_store_is_caught.rs`), for the ten conditions a login,
//!   a key or the audit chain depends on under concurrency, and against a
//!   Postgres store that runs a check and a write as two statements
//!   (`echorelay-store-pg`, feature `racy`, `tests/racy_pg_is_caught.rs`)
//!   for the TOTP step, challenges and backup codes; the others
//!   (`activate_totp`, `replace_totp_seed`, `replace_pending_reveal`,
//!   `replace_password_hash`, versions, the device cap, `revoke_key`) are
//!   held to the same rule and checked sequentially.
//! - **Caps.** A project's tree holds at most
//!   [`MAX_TREE_ENTITIES`](crate::config::MAX_TREE_ENTITIES) lines,
//!   endpoints and targets together: [`ConfigStore::apply`] refuses a
//!   create beyond it and [`ConfigStore::import_tree`] a larger tree
//!   (`LimitReached`, nothing written), decided by
//!   [`rules::tree_has_room`] in the write's atomic step. Reads that would
//!   grow with a tenant's history are paged instead
//!   ([`KeyStore::keys_page`], [`MembershipStore::members_page`],
//!   [`AuditLog::events`], [`AuditLog::events_for_user_page`]).
//! - **Versions.** [`Target::version`](crate::config::Target::version) and
//!   [`Project::version`](crate::config::Project::version) are
//!   compare-and-swap counters kept by the store: see
//!   [`ConfigStore::apply`] and [`ConfigStore::import_tree`].

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::access::Role;
use crate::account::password::PasswordHash;
use crate::account::{
    AccountRecord, AttemptScope, BackupCodeRecord, ChallengeRecord, DeviceRecord, SessionRecord,
    TotpRecord,
};
use crate::audit::{AuditDraft, AuditEvent, ChainHead, SealedHead, UserEventCursor};
use crate::config::{ConfigChange, Project, ProjectTree, Slug, Target};
use crate::deliveries::{
    AttemptRecord, DeliveryCounts, DeliveryRecord, MessageCursor, MessageRecord,
};
use crate::error::StoreError;
use crate::ids::{DeviceId, EndpointId, KeyId, MessageId, ProjectId, SessionId, TargetId, UserId};
use crate::keys::{KeyHash, KeyRecord, KeyStatus, PendingReveal, Supersession};
use crate::vault::Ciphertext;

/// Result of a port call.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// The largest page the listing service methods take
/// ([`KeyService::list_page`](crate::keys::KeyService::list_page),
/// [`ConfigService::members_page`](crate::config::ConfigService::members_page)).
pub const MAX_LIST_PAGE: usize = 500;

/// A listing's `limit`: 1 to [`MAX_LIST_PAGE`], never clamped.
///
/// # Errors
/// [`crate::Error::InvalidInput`] outside that range.
pub(crate) fn list_limit(limit: usize) -> crate::Result<usize> {
    if (1..=MAX_LIST_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(crate::Error::InvalidInput(
            "a page's limit must be 1 to 500",
        ))
    }
}

/// Stores API key records (hashes, never plaintext).
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Inserts a new key. `AlreadyExists` if the id or hash is taken.
    ///
    /// Atomically conditional on its creator: a key whose `created_by` is
    /// [`Actor::ApiKey`](crate::audit::Actor::ApiKey) is inserted only if
    /// that key exists and is not revoked, decided in one step with the
    /// insert and serialized with [`KeyStore::revoke_key`] of the creator
    /// (a row lock held to commit; the in-memory store's one lock):
    /// otherwise `Conflict` and no change. This is what lets a revocation's
    /// cascade catch every key minted by the revoked one.
    async fn insert_key(&self, key: KeyRecord, audit: AuditDraft) -> StoreResult<()>;
    /// The key with this hash, if any (revoked and expired ones included).
    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>>;
    /// The key with this id, if any.
    async fn key_by_id(&self, id: KeyId) -> StoreResult<Option<KeyRecord>>;
    /// What verification needs of the key with this hash. Provided: narrows
    /// [`KeyStore::key_by_hash`]; backends override it to serve the hot
    /// path without building the whole record.
    async fn key_status_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyStatus>> {
        Ok(self.key_by_hash(hash).await?.map(|r| r.status()))
    }
    /// All keys of a project, oldest first. For the revocation cascade,
    /// which must see every key a revoked one made; listings page with
    /// [`KeyStore::keys_page`].
    async fn keys_of_project(&self, project: ProjectId) -> StoreResult<Vec<KeyRecord>>;
    /// The project's keys: one page, ids after `after`, ascending by id, at
    /// most `limit` (the listing: `GET …/keys`).
    async fn keys_page(
        &self,
        project: ProjectId,
        after: Option<KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>>;
    /// Keys that are current (no successor, not revoked) with
    /// `rotate_at <= now`, plus keys whose pending reveal ended
    /// (`until <= now`): one page, ids after `after`, ascending by id, at
    /// most `limit`.
    async fn keys_needing_attention(
        &self,
        now: DateTime<Utc>,
        after: Option<KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>>;
    /// Keys that hold a pending reveal (sealed successor plaintext): one
    /// page, ids after `after`, ascending by id, at most `limit`. For the
    /// SECRET_KEY rewrap pass.
    async fn keys_with_pending_reveal(
        &self,
        after: Option<KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>>;
    /// Atomically: if the key's pending reveal is still sealed as
    /// `expected`, replaces its ciphertext by `new` (same `until`), appends
    /// `audit` and returns `true`; otherwise (taken, revoked, or rewrapped
    /// meanwhile) changes nothing and returns `false`.
    async fn replace_pending_reveal(
        &self,
        id: KeyId,
        expected: &Ciphertext,
        new: Ciphertext,
        audit: AuditDraft,
    ) -> StoreResult<bool>;
    /// Atomically: if `predecessor` is still current (no successor, not
    /// revoked), record `supersession` on it and insert `successor`;
    /// otherwise `Conflict` and no change. This condition is what makes
    /// concurrent rotation produce exactly one successor. The successor's
    /// creator is held to [`KeyStore::insert_key`]'s condition in the same
    /// step (a key rotating another key in must not be revoked).
    async fn rotate_key(
        &self,
        predecessor: KeyId,
        supersession: Supersession,
        successor: KeyRecord,
        audit: AuditDraft,
    ) -> StoreResult<()>;
    /// Marks the key revoked at `at` and drops any pending reveal.
    /// `NotFound` if absent; `Conflict` if already revoked, and then (as
    /// after a revocation) only once the revocation is visible to every
    /// verification: a store with caches waits for their acknowledgement
    /// again, so a revoke retried after a failure that followed its commit
    /// does not return earlier than the first should have.
    async fn revoke_key(&self, id: KeyId, at: DateTime<Utc>, audit: AuditDraft) -> StoreResult<()>;
    /// Atomically removes and returns the key's pending reveal; `None` (and
    /// no audit event) if there is none. Of concurrent callers, at most one
    /// gets it. With a `collector` (the key presenting itself to collect
    /// its successor), the take is conditional on the collector existing
    /// and not being revoked, in the same step and serialized with its
    /// revocation (else `Conflict`, no change), and records it as the
    /// record's [`KeyRecord::collected_by`].
    async fn take_pending_reveal(
        &self,
        id: KeyId,
        collector: Option<KeyId>,
        audit: AuditDraft,
    ) -> StoreResult<Option<PendingReveal>>;
}

/// Stores projects and their configuration tree (ciphertext only).
#[async_trait]
pub trait ConfigStore: Send + Sync {
    /// Creates a project and makes `owner` its owner. `AlreadyExists` if the
    /// id or slug is taken.
    async fn create_project(
        &self,
        project: Project,
        owner: UserId,
        audit: AuditDraft,
    ) -> StoreResult<()>;
    /// The project with this slug.
    async fn project_by_slug(&self, slug: &Slug) -> StoreResult<Option<Project>>;
    /// The project with this id.
    async fn project(&self, id: ProjectId) -> StoreResult<Option<Project>>;
    /// Every project, by slug.
    async fn list_projects(&self) -> StoreResult<Vec<Project>>;
    /// Applies one change, atomically with its audit event. Every change
    /// names its project, and an entity of another project is `NotFound`.
    /// Creates are `AlreadyExists` on a taken id; updates and deletes are
    /// `NotFound` on a missing one; a child whose line is missing is
    /// `NotFound`. Deleting a line deletes its endpoints and targets.
    ///
    /// Tree cap: creating a line, endpoint or target in a project that
    /// already holds [`MAX_TREE_ENTITIES`](crate::config::MAX_TREE_ENTITIES)
    /// of them together is `LimitReached` and no change, decided by
    /// [`rules::tree_has_room`] from the count read in the same atomic step
    /// as the insert (Postgres: under the project's row lock).
    ///
    /// Versions (compare-and-swap): a created target is stored with
    /// `version = 0`. `PutTarget(Update, t)` is applied only if the stored
    /// target's version is still `t.version`, and stores it with
    /// `t.version + 1`; `UpdateProject(p)` likewise against the project's
    /// version. Otherwise `Conflict` and no change, so a writer working
    /// from a stale read (a rewrap pass, an import, a second editor) never
    /// reverts a concurrent change. Every successful change in a project
    /// also moves the project's version by one (it versions the whole
    /// tree). Other fields of `UpdateProject` than name and key policy
    /// (slug, creation time) must be unchanged, else `Conflict`.
    async fn apply(&self, change: ConfigChange, audit: AuditDraft) -> StoreResult<()>;
    /// The project's whole tree. `NotFound` for an unknown project.
    async fn tree(&self, project: ProjectId) -> StoreResult<ProjectTree>;
    /// What the relay's accept path needs for a message at `endpoint`, in
    /// one read (it runs for every inbound message): the project, and
    /// where the message goes, the ids of the targets of the endpoint's
    /// line in the tree's order (by creation time, then id). `None` for
    /// an unknown project; [`IngestRoute::targets`] is `None` if the
    /// project has no such endpoint (an endpoint of another project
    /// included).
    async fn ingest_route(
        &self,
        project: ProjectId,
        endpoint: EndpointId,
    ) -> StoreResult<Option<IngestRoute>>;
    /// One target of the project; `None` if absent or of another project.
    async fn target(&self, project: ProjectId, id: TargetId) -> StoreResult<Option<Target>>;
    /// Targets of every project: one page, ids after `after`, ascending by
    /// id, at most `limit`. For the SECRET_KEY rewrap pass.
    async fn targets_page(&self, after: Option<TargetId>, limit: usize)
    -> StoreResult<Vec<Target>>;
    /// Replaces the project's lines, endpoints and targets (and its name
    /// and policy) with `import.tree`, all or nothing, atomically with the
    /// audit event. The tree has been validated by the caller.
    ///
    /// - Existing project: with `expect_version = Some(v)`, `Conflict`
    ///   unless the project's version is still `v`. Memberships are kept.
    ///   The stored version becomes the old one plus one.
    /// - New project: `owner_if_new` becomes its owner (a project never
    ///   exists without one); `None` is `Conflict`. Version 0.
    ///
    /// `AlreadyExists` if the slug is held by another project id, or an id
    /// in the tree belongs to another project's entity. `LimitReached` if
    /// the tree holds more than
    /// [`MAX_TREE_ENTITIES`](crate::config::MAX_TREE_ENTITIES) lines,
    /// endpoints and targets ([`rules::tree_has_room`]).
    async fn import_tree(&self, import: TreeImport, audit: AuditDraft) -> StoreResult<()>;
}

/// What [`ConfigStore::ingest_route`] reads: a project and where a
/// message at one of its endpoints goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestRoute {
    /// The project.
    pub project: Project,
    /// The targets of the endpoint's line, oldest first; `None` if the
    /// project has no such endpoint.
    pub targets: Option<Vec<TargetId>>,
}

/// What [`ConfigStore::import_tree`] writes.
#[derive(Debug, Clone)]
pub struct TreeImport {
    /// The whole tree.
    pub tree: ProjectTree,
    /// For an existing project: the version it must still have.
    pub expect_version: Option<u64>,
    /// For a new project: its owner.
    pub owner_if_new: Option<UserId>,
}

/// Stores project memberships.
#[async_trait]
pub trait MembershipStore: Send + Sync {
    /// The user's role in the project, if a member.
    async fn role_of(&self, user: UserId, project: ProjectId) -> StoreResult<Option<Role>>;
    /// Sets (or with `None` removes) a membership, in one atomic step with
    /// its audit event. `NotFound` for an unknown project, or when removing
    /// a membership that does not exist. `Conflict` (and no change) when
    /// the change would leave the project without an owner: the owner
    /// count is checked in the same atomic step as the write (Postgres:
    /// under a lock on the project's memberships), so of two owners
    /// demoting each other concurrently, one fails.
    async fn set_role(
        &self,
        project: ProjectId,
        user: UserId,
        role: Option<Role>,
        audit: AuditDraft,
    ) -> StoreResult<()>;
    /// Projects the user belongs to, with roles, by project id.
    async fn memberships_of(&self, user: UserId) -> StoreResult<Vec<(ProjectId, Role)>>;
    /// The project's members, with roles: one page, user ids after
    /// `after`, ascending, at most `limit`.
    async fn members_page(
        &self,
        project: ProjectId,
        after: Option<UserId>,
        limit: usize,
    ) -> StoreResult<Vec<(UserId, Role)>>;
}

/// Appends events that record no stored mutation (billing events recorded
/// by the billing system, account events).
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// Seals and appends one event ([`crate::audit::seal`] with the
    /// chain's head, in one atomic step: `seq` gap-free under concurrent
    /// appends); returns it. `NotFound` for a project chain whose project
    /// does not exist.
    async fn append(&self, audit: AuditDraft) -> StoreResult<AuditEvent>;
    /// Atomically: if the chain's newest event is still `head` and the
    /// store has audit keys, seals `head` anew under the current key
    /// (replacing the sealed head) and returns `true`; otherwise changes
    /// nothing and returns `false`. For a `SECRET_KEY` rotation
    /// ([`AuditService::reseal`](crate::audit::AuditService::reseal), which
    /// verifies the chain first).
    async fn reseal_head(&self, chain: Option<ProjectId>, head: ChainHead) -> StoreResult<bool>;
}

/// Reads the audit log. There is no update or delete.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Events of one chain (`None`: the global chain) with `seq > after`,
    /// ascending by `seq`, at most `limit`. Selected by sequence number,
    /// not by position. Each chain's `seq` runs 1, 2, 3, … without gaps,
    /// also under concurrent appends.
    async fn events(
        &self,
        chain: Option<ProjectId>,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<AuditEvent>>;
    /// The chain's newest link.
    async fn head(&self, chain: Option<ProjectId>) -> StoreResult<Option<ChainHead>>;
    /// The chain's head as sealed by the last append of a store given
    /// [`AuditKeys`](crate::audit::AuditKeys) ([`crate::audit::seal_keyed`]),
    /// kept beside the chain and replaced in the same atomic step as each
    /// append; `None` for a chain never appended to with keys.
    async fn sealed_head(&self, chain: Option<ProjectId>) -> StoreResult<Option<SealedHead>>;
    /// Events whose actor or subject is the user (for the GDPR Article 15
    /// export), ordered by time, then chain (the global chain first, then
    /// projects by id), then `seq`: one page, the events after the cursor
    /// `after` in that order (exclusive; `None`: from the first), at most
    /// `limit`. A page shorter than `limit` is the last one.
    async fn events_for_user_page(
        &self,
        user: UserId,
        after: Option<UserEventCursor>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEvent>>;
}

/// Stores accounts and their credentials: password hash, TOTP factor,
/// backup codes, second-factor attempts and trusted devices.
///
/// Every account has a credential *epoch*; sessions, devices and challenges
/// are stamped with the epoch they were made under, and the service rejects
/// any whose stamp is behind. A password change or a 2FA reset bumps the
/// epoch atomically with the change, so nothing made before it survives,
/// even when sessions live in another store.
///
/// Account security events are appended to the audit log by the service
/// through [`AuditSink`] right after the change they record, in a separate
/// step (not atomically with it: see the module docs).
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates an account. `AlreadyExists` if the id is taken or another
    /// account's email is byte-equal (no case folding: core normalises).
    async fn create_account(&self, account: AccountRecord) -> StoreResult<()>;
    /// The account whose stored email equals `email` byte for byte (core
    /// normalises it first; the adapter must not fold case again).
    async fn account_by_email(&self, email: &str) -> StoreResult<Option<AccountRecord>>;
    /// The account with this id.
    async fn account(&self, id: UserId) -> StoreResult<Option<AccountRecord>>;
    /// Every account, paged by id (see "Ids and order"): for logical
    /// snapshots ([`crate::backup::snapshot`]).
    async fn accounts_page(
        &self,
        after: Option<UserId>,
        limit: usize,
    ) -> StoreResult<Vec<AccountRecord>>;
    /// Compare-and-swap: replaces the password hash only if the stored one
    /// is still `expected`, and with `bump_epoch` also increments the
    /// credential epoch, in one step. Returns whether it changed.
    /// `NotFound` for an unknown account.
    async fn replace_password_hash(
        &self,
        user: UserId,
        expected: &PasswordHash,
        new: PasswordHash,
        bump_epoch: bool,
    ) -> StoreResult<bool>;
    /// The account's TOTP factor, active or pending.
    async fn totp(&self, user: UserId) -> StoreResult<Option<TotpRecord>>;
    /// Stores a pending (inactive) factor, replacing a pending one.
    /// `Conflict` if an active factor exists.
    ///
    /// (Sealed seeds are rewrapped with [`AccountStore::totp_page`] and
    /// [`AccountStore::replace_totp_seed`].)
    async fn put_pending_totp(&self, totp: TotpRecord) -> StoreResult<()>;
    /// Atomically: if the factor is still pending *and* its sealed seed is
    /// `seed` (the one the code was checked against), activates it with
    /// `last_step = step` and replaces the backup codes with `codes`;
    /// otherwise `Conflict` and no change.
    async fn activate_totp(
        &self,
        user: UserId,
        seed: &Ciphertext,
        step: u64,
        codes: Vec<BackupCodeRecord>,
    ) -> StoreResult<()>;
    /// Atomically: if `step` is later than the last accepted step (or none
    /// was accepted), records it and returns `true`; else `false` (also
    /// when there is no factor). Of racing callers with the same step,
    /// exactly one gets `true`.
    async fn advance_totp_step(&self, user: UserId, step: u64) -> StoreResult<bool>;
    /// TOTP factors (active and pending) of every account: one page, user
    /// ids after `after`, ascending, at most `limit`.
    async fn totp_page(&self, after: Option<UserId>, limit: usize) -> StoreResult<Vec<TotpRecord>>;
    /// Atomically: if the account's factor is still sealed as `expected`,
    /// replaces the seed ciphertext by `new` (nothing else changes) and
    /// returns `true`; otherwise `false` and no change.
    async fn replace_totp_seed(
        &self,
        user: UserId,
        expected: &Ciphertext,
        new: Ciphertext,
    ) -> StoreResult<bool>;
    /// In one step: removes the factor and the backup codes, revokes every
    /// trusted device and increments the credential epoch (a 2FA reset).
    async fn reset_second_factor(&self, user: UserId) -> StoreResult<()>;
    /// The account's unused backup codes.
    async fn backup_codes(&self, user: UserId) -> StoreResult<Vec<BackupCodeRecord>>;
    /// Replaces the whole set of backup codes.
    async fn replace_backup_codes(
        &self,
        user: UserId,
        codes: Vec<BackupCodeRecord>,
    ) -> StoreResult<()>;
    /// Atomically removes the account's code whose `index` and `hash` both
    /// equal `code`'s (the salt is not compared: the hash covers it), so a
    /// code of a replaced set never matches; `true` if it was there. Of
    /// racing callers, exactly one gets `true`.
    async fn consume_backup_code(&self, user: UserId, code: &BackupCodeRecord)
    -> StoreResult<bool>;
    /// Adds a trusted device, then evicts the account's oldest devices
    /// (ordered by `created_at`, ties by device id; never by insertion
    /// order, which SQL does not keep) until at most `cap` remain, in one
    /// step (Postgres: under a lock on the account row). Returns the
    /// evicted ids. The new device itself can be evicted when it sorts
    /// first. `AlreadyExists` on an id or token collision.
    async fn add_device(&self, device: DeviceRecord, cap: usize) -> StoreResult<Vec<DeviceId>>;
    /// The device whose token hashes to `token_hash`.
    async fn device_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<DeviceRecord>>;
    /// The account's devices, by `created_at`, ties by id.
    async fn devices_of(&self, user: UserId) -> StoreResult<Vec<DeviceRecord>>;
    /// Records a use: sets `last_used_at = at` (last writer wins; it is
    /// informational, never extends anything, never changes the expiry).
    /// Returns `false`, and creates nothing, if the device is gone (a
    /// concurrent eviction or revocation is not an error).
    async fn touch_device(&self, id: DeviceId, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Revokes one device of the account, or all with `None`, all or
    /// nothing. Returns how many were removed (0 for a device of another
    /// account, which is left alone).
    async fn revoke_devices(&self, user: UserId, which: Option<DeviceId>) -> StoreResult<usize>;
}

/// Counts attempts at a throttled step (password logins, second-factor
/// codes, step-up re-checks) per [`AttemptScope`]: short-lived counters, so
/// a deployment may keep them apart from the accounts (Redis beside
/// Postgres), shared by every process. The limits themselves are the
/// service's ([`crate::account::AccountPolicy`]); a store only counts.
#[async_trait]
pub trait ThrottleStore: Send + Sync {
    /// Atomically: if fewer than `max` attempts are recorded for `scope`
    /// strictly after `since`, records one at `at` and returns `true`;
    /// otherwise `false`. Of racing callers, no more than `max` minus the
    /// recorded count get `true`. Every checked attempt reserves first and
    /// counts until [`ThrottleStore::clear_attempts`], so concurrent guesses
    /// cannot pass the limit together. Older attempts may be dropped.
    /// Counters survive across processes: they are state in the store.
    async fn reserve_attempt(
        &self,
        scope: &AttemptScope,
        at: DateTime<Utc>,
        since: DateTime<Utc>,
        max: u32,
    ) -> StoreResult<bool>;
    /// Recorded attempts of `scope` strictly after `since` (one at exactly
    /// `since` is outside), in any order.
    async fn attempts_since(
        &self,
        scope: &AttemptScope,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<DateTime<Utc>>>;
    /// Forgets the recorded attempts of `scope` (after a success).
    async fn clear_attempts(&self, scope: &AttemptScope) -> StoreResult<()>;
}

/// Stores sessions and pending login challenges (token hashes only).
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Inserts a session. `AlreadyExists` on an id or token collision.
    async fn insert_session(&self, session: SessionRecord) -> StoreResult<()>;
    /// The session whose token hashes to `token_hash`.
    async fn session_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<SessionRecord>>;
    /// Records activity: `last_seen_at = max(last_seen_at, at)`. Returns
    /// `false`, and creates nothing, if the session is gone. A TTL store
    /// refreshes the record's expiry here (see
    /// [`SessionStore::purge_expired`]).
    async fn touch_session(&self, id: SessionId, at: DateTime<Utc>) -> StoreResult<bool>;
    /// A request's session lookup: the session whose token hashes to
    /// `token_hash`, as it was stored before this call, and whether it was
    /// then touched at `at` ([`SessionStore::touch_session`]). It is
    /// touched only while live at `at` (`expires_at > at` and
    /// `last_seen_at + idle > at`, the same boundaries core checks): an
    /// ended session is never refreshed. Core checks every rule on the
    /// returned record either way and ends the session if one fails.
    ///
    /// The default looks up, then touches (two calls); a backend with
    /// round trips to save does both in one step (Redis: one script).
    async fn session_for_request(
        &self,
        token_hash: &[u8; 32],
        at: DateTime<Utc>,
        idle: chrono::Duration,
    ) -> StoreResult<Option<(SessionRecord, bool)>> {
        let Some(s) = self.session_by_token(token_hash).await? else {
            return Ok(None);
        };
        let live = at < s.expires_at
            && s.last_seen_at
                .checked_add_signed(idle)
                .is_some_and(|end| at < end);
        let touched = live && self.touch_session(s.id, at).await?;
        Ok(Some((s, touched)))
    }
    /// Records a step-up: `verified_at = max(verified_at, at)`. Returns
    /// `false`, and creates nothing, if the session is gone.
    async fn mark_verified(&self, id: SessionId, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Atomically replaces session `old` by `new` (a new id and token).
    /// `NotFound` if `old` is gone.
    async fn replace_session(&self, old: SessionId, new: SessionRecord) -> StoreResult<()>;
    /// Deletes a session; `true` if it existed.
    async fn delete_session(&self, id: SessionId) -> StoreResult<bool>;
    /// The account's sessions, by `created_at`, ties by id.
    async fn sessions_of(&self, user: UserId) -> StoreResult<Vec<SessionRecord>>;
    /// Deletes the account's sessions except `keep`, all or nothing;
    /// returns how many. Other accounts' sessions are never touched.
    async fn delete_sessions_of(&self, user: UserId, keep: Option<SessionId>)
    -> StoreResult<usize>;
    /// Stores a login challenge.
    async fn insert_challenge(&self, challenge: ChallengeRecord) -> StoreResult<()>;
    /// The challenge whose token hashes to `token_hash`.
    async fn challenge(&self, token_hash: &[u8; 32]) -> StoreResult<Option<ChallengeRecord>>;
    /// Atomically removes and returns the challenge. Of racing callers, at
    /// most one gets it.
    async fn take_challenge(&self, token_hash: &[u8; 32]) -> StoreResult<Option<ChallengeRecord>>;
    /// Deletes challenges with `expires_at <= now` and sessions with
    /// `expires_at <= now` or `last_seen_at <= idle_cutoff`; returns how
    /// many (challenges and sessions together). Expiry is data on each
    /// record, and the service checks it on
    /// every read, so purging is housekeeping, never a security control.
    /// A TTL store (Redis) may instead expire records by itself: a
    /// challenge at `expires_at`; a session at
    /// `min(expires_at, last_seen_at + idle)`, re-set on every
    /// [`SessionStore::touch_session`]. It must never expire a record
    /// earlier than that.
    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<usize>;
    /// Opens what `callers` concurrent calls need and keeps it open (a
    /// pooled backend: that many connections, as far as its pool allows),
    /// so they start together instead of one connect apart.
    /// Housekeeping, never a security control; the default does nothing
    /// (a backend without connections). The conformance suite calls it
    /// before every race, so that a store whose conditional write checks
    /// and then writes is raced by callers that really overlap; an
    /// embedder may call it at start-up.
    async fn warm_up(&self, callers: usize) -> StoreResult<()> {
        let _ = callers;
        Ok(())
    }
}

/// Remembers the `Idempotency-Key`s of inbound messages
/// ([`crate::relay::RelayService::accept`]): per project, the first
/// message id sent under a key, for a limited time (24 h by default).
/// Short-lived, like sessions: not in a snapshot.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// In one atomic step: if `key` is held in `project` by a claim that
    /// has not expired at `now` (its `expires_at` is after `now`), returns
    /// that claim's message; otherwise records `key` → `message` until
    /// `expires_at` (replacing an expired claim) and returns `None`. Of
    /// any number of concurrent claims of one key, exactly one gets
    /// `None`, and the others its message.
    async fn claim_idempotency_key(
        &self,
        project: ProjectId,
        key: &str,
        message: MessageId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<Option<MessageId>>;
    /// Removes the claim of `key` if it is still `message`'s (the message
    /// could not be enqueued, so a retry must not be told it was).
    async fn release_idempotency_key(
        &self,
        project: ProjectId,
        key: &str,
        message: MessageId,
    ) -> StoreResult<()>;
    /// Deletes claims that expired at or before `now`; returns how many.
    /// Housekeeping: an expired claim is already ignored by a claim.
    async fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> StoreResult<usize>;
}

/// The delivery log ([`crate::deliveries`]): messages (never their
/// bodies), one delivery per message and target, and every attempt. Read
/// per project only. Like the queue it is operational history, not
/// configuration: not in a snapshot; old entries are purged
/// ([`DeliveryLog::purge_delivery_log`]).
#[async_trait]
pub trait DeliveryLog: Send + Sync {
    /// Records a message and its deliveries (all `pending`, no attempt),
    /// all or nothing. `AlreadyExists` if the message id is taken.
    async fn record_message(
        &self,
        message: MessageRecord,
        deliveries: Vec<DeliveryRecord>,
    ) -> StoreResult<()>;
    /// Records several messages, each with its deliveries, as
    /// [`DeliveryLog::record_message`] would one at a time: one result per
    /// message, in order (a taken id refuses that message only, and so
    /// does a second copy of an id within the batch). `Err` if the whole
    /// call failed. The relay's accept path writes through this, so
    /// concurrent accepts share a commit ([`crate::deliveries`]); the
    /// default calls `record_message` for each.
    async fn record_messages(
        &self,
        batch: Vec<(MessageRecord, Vec<DeliveryRecord>)>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        let mut results = Vec::with_capacity(batch.len());
        for (message, deliveries) in batch {
            results.push(self.record_message(message, deliveries).await);
        }
        Ok(results)
    }
    /// Removes a message and its deliveries and attempts (its jobs could
    /// not be enqueued). Removing nothing is not an error.
    async fn delete_message(&self, project: ProjectId, id: MessageId) -> StoreResult<()>;
    /// Records an attempt and, in the same atomic step, updates its
    /// delivery: one more attempt, the attempt's job, status and class,
    /// `next_attempt_at`, and — unless the result is
    /// [`AttemptResult::LeaseLost`](crate::deliveries::AttemptResult::LeaseLost)
    /// — the state its result gives, at the attempt's time. `NotFound`
    /// (nothing written) if the delivery is not in the log.
    async fn record_attempt(&self, attempt: AttemptRecord) -> StoreResult<()>;
    /// Records several attempts as [`DeliveryLog::record_attempt`] would
    /// one at a time, in order (two attempts of one delivery both count,
    /// the later one's state last): one result per attempt. `Err` if the
    /// whole call failed. The delivery worker writes through this; the
    /// default calls `record_attempt` for each.
    async fn record_attempts(
        &self,
        batch: Vec<AttemptRecord>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        let mut results = Vec::with_capacity(batch.len());
        for attempt in batch {
            results.push(self.record_attempt(attempt).await);
        }
        Ok(results)
    }
    /// Atomically: if the delivery is `dead` and still has exactly
    /// `attempts` attempts recorded, makes it `pending` at `at` and
    /// returns `true`; otherwise changes nothing and returns `false`.
    async fn mark_redriven(
        &self,
        project: ProjectId,
        message: MessageId,
        target: TargetId,
        attempts: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// One message of `project`.
    async fn message(
        &self,
        project: ProjectId,
        id: MessageId,
    ) -> StoreResult<Option<MessageRecord>>;
    /// Up to `limit` messages of `project`, newest first (by
    /// `received_at`, then id, both descending), strictly after `cursor`
    /// in that order.
    async fn messages_page(
        &self,
        project: ProjectId,
        cursor: Option<MessageCursor>,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>>;
    /// A message's deliveries, by target id.
    async fn deliveries_of(
        &self,
        project: ProjectId,
        message: MessageId,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    /// One delivery.
    async fn delivery(
        &self,
        project: ProjectId,
        message: MessageId,
        target: TargetId,
    ) -> StoreResult<Option<DeliveryRecord>>;
    /// The newest `limit` attempts of a message, returned oldest first
    /// (by time, then target id, then attempt number).
    async fn attempts_of(
        &self,
        project: ProjectId,
        message: MessageId,
        limit: usize,
    ) -> StoreResult<Vec<AttemptRecord>>;
    /// Up to `limit` deliveries of `target` in the state `dead`, by
    /// message id, after `after` (exclusive).
    async fn dead_deliveries_page(
        &self,
        project: ProjectId,
        target: TargetId,
        after: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    /// `project`'s deliveries counted by state.
    async fn delivery_counts(&self, project: ProjectId) -> StoreResult<DeliveryCounts>;
    /// Deletes the messages received before `before`, with their
    /// deliveries and attempts, whatever their state; returns how many
    /// messages.
    async fn purge_delivery_log(&self, before: DateTime<Utc>) -> StoreResult<usize>;
}

/// Everything a logical snapshot holds ([`crate::backup::snapshot`],
/// docs/FORMATS.md §5.6), as [`SnapshotStore::restore_snapshot`] writes
/// it: checked by core before it reaches a store (every audit chain
/// verifies, every reference resolves, no id repeats). Sessions, login
/// challenges, throttle counters, the key caches and queued jobs are not
/// part of it: after a restore from a snapshot everyone signs in again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotData {
    /// Accounts, with their password hashes and credential epochs.
    pub accounts: Vec<AccountRecord>,
    /// TOTP factors (seeds sealed).
    pub totp: Vec<TotpRecord>,
    /// Each account's unused backup codes (salted hashes).
    pub backup_codes: Vec<(UserId, Vec<BackupCodeRecord>)>,
    /// Trusted devices (token hashes).
    pub devices: Vec<DeviceRecord>,
    /// Every project with its lines, endpoints and targets (secrets
    /// sealed), versions as stored.
    pub projects: Vec<ProjectTree>,
    /// Memberships: project, user, role.
    pub members: Vec<(ProjectId, UserId, Role)>,
    /// API key records (hashes, sealed pending reveals).
    pub keys: Vec<KeyRecord>,
    /// Every audit event of every chain, each chain in `seq` order.
    pub events: Vec<AuditEvent>,
    /// The sealed head of each chain that has one.
    pub sealed_heads: Vec<(Option<ProjectId>, SealedHead)>,
}

impl SnapshotData {
    /// Whether it holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
            && self.projects.is_empty()
            && self.keys.is_empty()
            && self.events.is_empty()
    }
}

/// Restores a logical snapshot ([`crate::backup::snapshot`]) into a store.
/// Reading one goes through the other ports.
#[async_trait]
pub trait SnapshotStore: Send + Sync {
    /// Writes `data` verbatim (ids, hashes, versions, chain positions and
    /// tags as given) in one atomic step, or nothing. Only into an empty
    /// store: `Conflict` if it holds any account, project, key or audit
    /// event (decided in the same atomic step). Core has checked `data`
    /// ([`crate::backup::snapshot::parse`]); the store writes it.
    async fn restore_snapshot(&self, data: SnapshotData) -> StoreResult<()>;
}

/// The decisions of the conditional port methods, written once for every
/// adapter: an adapter reads the current state under its lock (or in its
/// transaction), asks these, and writes only on `Ok`. So the rule is the
/// same in memory, in SQL and anywhere else.
pub mod rules {
    use super::StoreResult;
    use crate::access::Role;
    use crate::config::Project;
    use crate::error::StoreError;
    use crate::ids::UserId;

    /// [`super::MembershipStore::set_role`]: from the member's `current`
    /// role to `new` (`None`: removed), with `owners` owners in the project
    /// now. `NotFound` when removing a non-member; `Conflict` when the last
    /// owner would leave or be demoted.
    ///
    /// ```
    /// use echorelay_core::access::Role;
    /// use echorelay_core::ports::rules::role_change;
    /// assert!(role_change(Some(Role::Owner), Some(Role::Editor), 1).is_err());
    /// assert!(role_change(Some(Role::Owner), Some(Role::Editor), 2).is_ok());
    /// assert!(role_change(None, None, 1).is_err());
    /// ```
    pub fn role_change(current: Option<Role>, new: Option<Role>, owners: usize) -> StoreResult<()> {
        if new.is_none() && current.is_none() {
            return Err(StoreError::NotFound { kind: "membership" });
        }
        if current == Some(Role::Owner) && new != Some(Role::Owner) && owners <= 1 {
            return Err(StoreError::Conflict {
                reason: "a project keeps at least one owner",
            });
        }
        Ok(())
    }

    /// [`super::ConfigChange::UpdateProject`](crate::config::ConfigChange::UpdateProject):
    /// slug and creation time unchanged, and the stored version still the
    /// one the update was made from.
    pub fn project_update(stored: &Project, update: &Project) -> StoreResult<()> {
        if stored.slug != update.slug || stored.created_at != update.created_at {
            return Err(StoreError::Conflict {
                reason: "a project's slug and creation time cannot change",
            });
        }
        if stored.version != update.version {
            return Err(StoreError::Conflict {
                reason: "the project changed since it was read",
            });
        }
        Ok(())
    }

    /// The tree cap of [`super::ConfigStore::apply`] and
    /// [`super::ConfigStore::import_tree`]: a project holding `current`
    /// lines, endpoints and targets together may take `adding` more only
    /// while the sum stays at most
    /// [`MAX_TREE_ENTITIES`](crate::config::MAX_TREE_ENTITIES); otherwise
    /// `LimitReached`. A create asks with `adding = 1` and the project's
    /// count read under its lock; an import, which replaces the tree,
    /// with `current = 0` and the size of the new tree. So every tree a
    /// store holds exports into a document that imports again.
    ///
    /// ```
    /// use echorelay_core::config::MAX_TREE_ENTITIES;
    /// use echorelay_core::ports::rules::tree_has_room;
    /// assert!(tree_has_room(MAX_TREE_ENTITIES - 1, 1).is_ok());
    /// assert!(tree_has_room(MAX_TREE_ENTITIES, 1).is_err());
    /// assert!(tree_has_room(0, MAX_TREE_ENTITIES).is_ok());
    /// assert!(tree_has_room(0, MAX_TREE_ENTITIES + 1).is_err());
    /// ```
    pub fn tree_has_room(current: usize, adding: usize) -> StoreResult<()> {
        match current.checked_add(adding) {
            Some(total) if total <= crate::config::MAX_TREE_ENTITIES => Ok(()),
            _ => Err(StoreError::LimitReached {
                reason: "a project holds at most 10000 lines, endpoints and targets together",
            }),
        }
    }

    /// [`super::ConfigStore::import_tree`]'s preconditions, given the
    /// stored project's version (`None`: no such project).
    pub fn import(
        stored_version: Option<u64>,
        expect_version: Option<u64>,
        owner_if_new: Option<UserId>,
    ) -> StoreResult<()> {
        match (stored_version, owner_if_new) {
            (Some(v), _) if expect_version.is_some_and(|e| e != v) => Err(StoreError::Conflict {
                reason: "the project changed since it was exported",
            }),
            (None, None) => Err(StoreError::Conflict {
                reason: "a new project needs an owner",
            }),
            _ => Ok(()),
        }
    }
}

/// Every port over up to three backends: sessions and login challenges in
/// `S`, throttle counters in `T`, everything else (the durable state:
/// keys, projects, members, accounts, credentials, the audit log, the
/// delivery log, idempotency keys, snapshots) in `D`.
///
/// The expected deployment keeps `D` in Postgres and `S` and `T` in Redis
/// (S9, S15): what is hot and short-lived beside what must last. Each
/// method goes to exactly one part, so every contract above holds as long
/// as each part keeps its own. `warm_up` warms `D` and `S` (the race
/// checks race conditional writes of both).
///
/// ```
/// use echorelay_core::ports::{AccountStore, Composed, SessionStore, ThrottleStore};
/// // Sessions and throttles in `hot`, the rest in `durable`.
/// fn split<D: AccountStore + SessionStore, H: SessionStore + ThrottleStore + Clone>(
///     durable: D,
///     hot: H,
/// ) -> impl AccountStore + SessionStore + ThrottleStore {
///     Composed::new(durable, hot.clone(), hot)
/// }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Composed<D, S = D, T = S> {
    durable: D,
    sessions: S,
    throttles: T,
}

impl<D, S, T> Composed<D, S, T> {
    /// `durable` for everything but sessions (`sessions`) and throttle
    /// counters (`throttles`).
    pub fn new(durable: D, sessions: S, throttles: T) -> Self {
        Self {
            durable,
            sessions,
            throttles,
        }
    }

    /// The backend of the durable ports.
    pub fn durable(&self) -> &D {
        &self.durable
    }

    /// The backend of [`SessionStore`].
    pub fn sessions(&self) -> &S {
        &self.sessions
    }

    /// The backend of [`ThrottleStore`].
    pub fn throttles(&self) -> &T {
        &self.throttles
    }
}

macro_rules! forward {
    ($tr:ident => $field:ident : $p:ident { $(async fn $m:ident(&self $(, $a:ident : $t:ty)*) -> $r:ty;)* }) => {
        forward!($tr { $(async fn $m(&self $(, $a: $t)*) -> $r;)* });
        #[async_trait]
        impl<D: Send + Sync, S: Send + Sync, T: Send + Sync> $tr for Composed<D, S, T>
        where
            $p: $tr,
        {
            $(async fn $m(&self $(, $a: $t)*) -> $r { self.$field.$m($($a),*).await })*
        }
    };
    ($tr:ident { $(async fn $m:ident(&self $(, $a:ident : $t:ty)*) -> $r:ty;)* }) => {
        #[async_trait]
        impl<T: $tr + ?Sized> $tr for Arc<T> {
            $(async fn $m(&self $(, $a: $t)*) -> $r { (**self).$m($($a),*).await })*
        }
    };
}

forward!(KeyStore => durable: D {
    async fn insert_key(&self, key: KeyRecord, audit: AuditDraft) -> StoreResult<()>;
    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>>;
    async fn key_by_id(&self, id: KeyId) -> StoreResult<Option<KeyRecord>>;
    async fn key_status_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyStatus>>;
    async fn keys_of_project(&self, project: ProjectId) -> StoreResult<Vec<KeyRecord>>;
    async fn keys_page(&self, project: ProjectId, after: Option<KeyId>, limit: usize) -> StoreResult<Vec<KeyRecord>>;
    async fn keys_needing_attention(&self, now: DateTime<Utc>, after: Option<KeyId>, limit: usize) -> StoreResult<Vec<KeyRecord>>;
    async fn keys_with_pending_reveal(&self, after: Option<KeyId>, limit: usize) -> StoreResult<Vec<KeyRecord>>;
    async fn replace_pending_reveal(&self, id: KeyId, expected: &Ciphertext, new: Ciphertext, audit: AuditDraft) -> StoreResult<bool>;
    async fn rotate_key(&self, predecessor: KeyId, supersession: Supersession, successor: KeyRecord, audit: AuditDraft) -> StoreResult<()>;
    async fn revoke_key(&self, id: KeyId, at: DateTime<Utc>, audit: AuditDraft) -> StoreResult<()>;
    async fn take_pending_reveal(&self, id: KeyId, collector: Option<KeyId>, audit: AuditDraft) -> StoreResult<Option<PendingReveal>>;
});

forward!(ConfigStore => durable: D {
    async fn create_project(&self, project: Project, owner: UserId, audit: AuditDraft) -> StoreResult<()>;
    async fn project_by_slug(&self, slug: &Slug) -> StoreResult<Option<Project>>;
    async fn project(&self, id: ProjectId) -> StoreResult<Option<Project>>;
    async fn list_projects(&self) -> StoreResult<Vec<Project>>;
    async fn apply(&self, change: ConfigChange, audit: AuditDraft) -> StoreResult<()>;
    async fn tree(&self, project: ProjectId) -> StoreResult<ProjectTree>;
    async fn ingest_route(&self, project: ProjectId, endpoint: EndpointId) -> StoreResult<Option<IngestRoute>>;
    async fn target(&self, project: ProjectId, id: TargetId) -> StoreResult<Option<Target>>;
    async fn targets_page(&self, after: Option<TargetId>, limit: usize) -> StoreResult<Vec<Target>>;
    async fn import_tree(&self, import: TreeImport, audit: AuditDraft) -> StoreResult<()>;
});

forward!(MembershipStore => durable: D {
    async fn role_of(&self, user: UserId, project: ProjectId) -> StoreResult<Option<Role>>;
    async fn set_role(&self, project: ProjectId, user: UserId, role: Option<Role>, audit: AuditDraft) -> StoreResult<()>;
    async fn memberships_of(&self, user: UserId) -> StoreResult<Vec<(ProjectId, Role)>>;
    async fn members_page(&self, project: ProjectId, after: Option<UserId>, limit: usize) -> StoreResult<Vec<(UserId, Role)>>;
});

forward!(AuditSink => durable: D {
    async fn append(&self, audit: AuditDraft) -> StoreResult<AuditEvent>;
    async fn reseal_head(&self, chain: Option<ProjectId>, head: ChainHead) -> StoreResult<bool>;
});

forward!(AuditLog => durable: D {
    async fn events(&self, chain: Option<ProjectId>, after: u64, limit: usize) -> StoreResult<Vec<AuditEvent>>;
    async fn head(&self, chain: Option<ProjectId>) -> StoreResult<Option<ChainHead>>;
    async fn sealed_head(&self, chain: Option<ProjectId>) -> StoreResult<Option<SealedHead>>;
    async fn events_for_user_page(&self, user: UserId, after: Option<UserEventCursor>, limit: usize) -> StoreResult<Vec<AuditEvent>>;
});

forward!(AccountStore => durable: D {
    async fn create_account(&self, account: AccountRecord) -> StoreResult<()>;
    async fn account_by_email(&self, email: &str) -> StoreResult<Option<AccountRecord>>;
    async fn account(&self, id: UserId) -> StoreResult<Option<AccountRecord>>;
    async fn accounts_page(&self, after: Option<UserId>, limit: usize) -> StoreResult<Vec<AccountRecord>>;
    async fn replace_password_hash(&self, user: UserId, expected: &PasswordHash, new: PasswordHash, bump_epoch: bool) -> StoreResult<bool>;
    async fn totp(&self, user: UserId) -> StoreResult<Option<TotpRecord>>;
    async fn put_pending_totp(&self, totp: TotpRecord) -> StoreResult<()>;
    async fn activate_totp(&self, user: UserId, seed: &Ciphertext, step: u64, codes: Vec<BackupCodeRecord>) -> StoreResult<()>;
    async fn advance_totp_step(&self, user: UserId, step: u64) -> StoreResult<bool>;
    async fn totp_page(&self, after: Option<UserId>, limit: usize) -> StoreResult<Vec<TotpRecord>>;
    async fn replace_totp_seed(&self, user: UserId, expected: &Ciphertext, new: Ciphertext) -> StoreResult<bool>;
    async fn reset_second_factor(&self, user: UserId) -> StoreResult<()>;
    async fn backup_codes(&self, user: UserId) -> StoreResult<Vec<BackupCodeRecord>>;
    async fn replace_backup_codes(&self, user: UserId, codes: Vec<BackupCodeRecord>) -> StoreResult<()>;
    async fn consume_backup_code(&self, user: UserId, code: &BackupCodeRecord) -> StoreResult<bool>;
    async fn add_device(&self, device: DeviceRecord, cap: usize) -> StoreResult<Vec<DeviceId>>;
    async fn device_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<DeviceRecord>>;
    async fn devices_of(&self, user: UserId) -> StoreResult<Vec<DeviceRecord>>;
    async fn touch_device(&self, id: DeviceId, at: DateTime<Utc>) -> StoreResult<bool>;
    async fn revoke_devices(&self, user: UserId, which: Option<DeviceId>) -> StoreResult<usize>;
});

forward!(ThrottleStore => throttles: T {
    async fn reserve_attempt(&self, scope: &AttemptScope, at: DateTime<Utc>, since: DateTime<Utc>, max: u32) -> StoreResult<bool>;
    async fn attempts_since(&self, scope: &AttemptScope, since: DateTime<Utc>) -> StoreResult<Vec<DateTime<Utc>>>;
    async fn clear_attempts(&self, scope: &AttemptScope) -> StoreResult<()>;
});

forward!(SessionStore {
    async fn insert_session(&self, session: SessionRecord) -> StoreResult<()>;
    async fn session_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<SessionRecord>>;
    async fn touch_session(&self, id: SessionId, at: DateTime<Utc>) -> StoreResult<bool>;
    async fn session_for_request(&self, token_hash: &[u8; 32], at: DateTime<Utc>, idle: chrono::Duration) -> StoreResult<Option<(SessionRecord, bool)>>;
    async fn mark_verified(&self, id: SessionId, at: DateTime<Utc>) -> StoreResult<bool>;
    async fn replace_session(&self, old: SessionId, new: SessionRecord) -> StoreResult<()>;
    async fn delete_session(&self, id: SessionId) -> StoreResult<bool>;
    async fn sessions_of(&self, user: UserId) -> StoreResult<Vec<SessionRecord>>;
    async fn delete_sessions_of(&self, user: UserId, keep: Option<SessionId>) -> StoreResult<usize>;
    async fn insert_challenge(&self, challenge: ChallengeRecord) -> StoreResult<()>;
    async fn challenge(&self, token_hash: &[u8; 32]) -> StoreResult<Option<ChallengeRecord>>;
    async fn take_challenge(&self, token_hash: &[u8; 32]) -> StoreResult<Option<ChallengeRecord>>;
    async fn purge_expired(&self, now: DateTime<Utc>, idle_cutoff: DateTime<Utc>) -> StoreResult<usize>;
    async fn warm_up(&self, callers: usize) -> StoreResult<()>;
});

#[async_trait]
impl<D, S, T> SessionStore for Composed<D, S, T>
where
    D: SessionStore,
    S: SessionStore,
    T: Send + Sync,
{
    async fn insert_session(&self, session: SessionRecord) -> StoreResult<()> {
        self.sessions.insert_session(session).await
    }
    async fn session_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<SessionRecord>> {
        self.sessions.session_by_token(token_hash).await
    }
    async fn touch_session(&self, id: SessionId, at: DateTime<Utc>) -> StoreResult<bool> {
        self.sessions.touch_session(id, at).await
    }
    async fn session_for_request(
        &self,
        token_hash: &[u8; 32],
        at: DateTime<Utc>,
        idle: chrono::Duration,
    ) -> StoreResult<Option<(SessionRecord, bool)>> {
        self.sessions
            .session_for_request(token_hash, at, idle)
            .await
    }
    async fn mark_verified(&self, id: SessionId, at: DateTime<Utc>) -> StoreResult<bool> {
        self.sessions.mark_verified(id, at).await
    }
    async fn replace_session(&self, old: SessionId, new: SessionRecord) -> StoreResult<()> {
        self.sessions.replace_session(old, new).await
    }
    async fn delete_session(&self, id: SessionId) -> StoreResult<bool> {
        self.sessions.delete_session(id).await
    }
    async fn sessions_of(&self, user: UserId) -> StoreResult<Vec<SessionRecord>> {
        self.sessions.sessions_of(user).await
    }
    async fn delete_sessions_of(
        &self,
        user: UserId,
        keep: Option<SessionId>,
    ) -> StoreResult<usize> {
        self.sessions.delete_sessions_of(user, keep).await
    }
    async fn insert_challenge(&self, challenge: ChallengeRecord) -> StoreResult<()> {
        self.sessions.insert_challenge(challenge).await
    }
    async fn challenge(&self, token_hash: &[u8; 32]) -> StoreResult<Option<ChallengeRecord>> {
        self.sessions.challenge(token_hash).await
    }
    async fn take_challenge(&self, token_hash: &[u8; 32]) -> StoreResult<Option<ChallengeRecord>> {
        self.sessions.take_challenge(token_hash).await
    }
    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<usize> {
        self.sessions.purge_expired(now, idle_cutoff).await
    }
    async fn warm_up(&self, callers: usize) -> StoreResult<()> {
        self.durable.warm_up(callers).await?;
        self.sessions.warm_up(callers).await
    }
}

forward!(SnapshotStore => durable: D {
    async fn restore_snapshot(&self, data: SnapshotData) -> StoreResult<()>;
});

forward!(DeliveryLog => durable: D {
    async fn record_message(&self, message: MessageRecord, deliveries: Vec<DeliveryRecord>) -> StoreResult<()>;
    async fn record_messages(&self, batch: Vec<(MessageRecord, Vec<DeliveryRecord>)>) -> StoreResult<Vec<StoreResult<()>>>;
    async fn delete_message(&self, project: ProjectId, id: MessageId) -> StoreResult<()>;
    async fn record_attempt(&self, attempt: AttemptRecord) -> StoreResult<()>;
    async fn record_attempts(&self, batch: Vec<AttemptRecord>) -> StoreResult<Vec<StoreResult<()>>>;
    async fn mark_redriven(&self, project: ProjectId, message: MessageId, target: TargetId, attempts: u32, at: DateTime<Utc>) -> StoreResult<bool>;
    async fn message(&self, project: ProjectId, id: MessageId) -> StoreResult<Option<MessageRecord>>;
    async fn messages_page(&self, project: ProjectId, cursor: Option<MessageCursor>, limit: usize) -> StoreResult<Vec<MessageRecord>>;
    async fn deliveries_of(&self, project: ProjectId, message: MessageId) -> StoreResult<Vec<DeliveryRecord>>;
    async fn delivery(&self, project: ProjectId, message: MessageId, target: TargetId) -> StoreResult<Option<DeliveryRecord>>;
    async fn attempts_of(&self, project: ProjectId, message: MessageId, limit: usize) -> StoreResult<Vec<AttemptRecord>>;
    async fn dead_deliveries_page(&self, project: ProjectId, target: TargetId, after: Option<MessageId>, limit: usize) -> StoreResult<Vec<DeliveryRecord>>;
    async fn delivery_counts(&self, project: ProjectId) -> StoreResult<DeliveryCounts>;
    async fn purge_delivery_log(&self, before: DateTime<Utc>) -> StoreResult<usize>;
});

forward!(IdempotencyStore => durable: D {
    async fn claim_idempotency_key(&self, project: ProjectId, key: &str, message: MessageId, now: DateTime<Utc>, expires_at: DateTime<Utc>) -> StoreResult<Option<MessageId>>;
    async fn release_idempotency_key(&self, project: ProjectId, key: &str, message: MessageId) -> StoreResult<()>;
    async fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> StoreResult<usize>;
});
