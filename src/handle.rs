//! [`EchoRelay`]: every service over one store, one vault and one clock.
//!
//! The services of [`echorelay_core`] are generic over their ports, so an
//! embedder can split them across backends (see
//! [`KeyService::from_parts`] and [`AccountService::from_parts`]). Most
//! deployments keep everything in one backend; for them this module wires
//! the whole set once:
//!
//! - [`EchoRelay::from_env`] reads `DATABASE_URL`, `REDIS_URL`, `SECRET_KEY`,
//!   `SECRET_KEY_PREVIOUS`, `ECHORELAY_MIGRATE` and `ECHORELAY_KEY_CACHE`
//!   (the table is on
//!   [`EchoRelayBuilder::from_env_vars`]);
//! - [`EchoRelay::builder`] takes the parts from code (tests, custom
//!   stores, a manual clock).
//!
//! The store is held as [`SharedStore`] (`Arc<dyn Store>`), so the handle
//! has one type whichever backend is behind it, and clones of it (and of
//! its services) share the store, the vault and the clock. The job queue
//! is a backend of its own ([`SharedQueue`], `Arc<dyn Queue>`), behind
//! [`EchoRelay::queue`]: a [`MemQueue`] unless the builder is given another.

use std::any::TypeId;
use std::fmt;
use std::sync::Arc;

use echorelay_core::account::{AccountPolicy, AccountService};
use echorelay_core::audit::{AuditKeys, AuditService};
use echorelay_core::clock::{Clock, SystemClock};
use echorelay_core::config::ConfigService;
use echorelay_core::deliveries::OperationsService;
use echorelay_core::keys::KeyService;
use echorelay_core::ports::{
    AccountStore, AuditLog, AuditSink, ConfigStore, DeliveryLog, IdempotencyStore, KeyStore,
    MembershipStore, SessionStore, SnapshotStore, ThrottleStore,
};
use echorelay_core::queue::{Queue, QueueConfig, QueueError, QueueName, QueueService};
use echorelay_core::relay::{DeliveryService, RelayConfig, RelayService, Transport};
use echorelay_core::rewrap::Rewrap;
use echorelay_core::vault::{AesGcmVault, Keyring, SecretKey, VaultError};
use echorelay_store_mem::{MemQueue, MemStore};
use secrecy::{ExposeSecret, SecretString};

/// A backend that implements every port: what [`EchoRelay`] runs on.
///
/// Gives a [`MemStore`] or `PgStore` (held only by the builder) the audit
/// keys of `keyring`, or finds the ones a `PgStore` was built with; `None`
/// for any other store.
fn give_audit_keys(store: &mut SharedStore, keyring: &Keyring) -> Option<Arc<AuditKeys>> {
    let any: &mut dyn std::any::Any = Arc::get_mut(store)?;
    if let Some(mem) = any.downcast_mut::<MemStore>() {
        let keys = AuditKeys::from_keyring(keyring);
        *mem = mem.clone().with_audit_keys(keys.clone());
        return Some(keys);
    }
    #[cfg(feature = "pg")]
    if let Some(pg) = any.downcast_mut::<echorelay_store_pg::PgStore>() {
        if let Some(keys) = pg.audit_keys() {
            return Some(keys.clone());
        }
        let keys = AuditKeys::from_keyring(keyring);
        *pg = pg.clone().with_audit_keys(keys.clone());
        return Some(keys);
    }
    None
}

#[cfg(feature = "backup")]
/// The backup schedule's lock for `store`: a Postgres advisory lock on a
/// `PgStore`'s database, else the in-process lock.
fn slot_lock_of(store: &SharedStore) -> echorelay_core::backup::schedule::SharedSlotLock {
    #[cfg(feature = "pg")]
    {
        let any: &dyn std::any::Any = &**store;
        let pg = any
            .downcast_ref::<echorelay_store_pg::PgStore>()
            .or_else(|| {
                any.downcast_ref::<Arc<echorelay_store_pg::PgStore>>()
                    .map(|a| &**a)
            });
        if let Some(pg) = pg {
            return Arc::new(echorelay_store_pg::backup::PgSlotLock::new(
                pg.pool().clone(),
            ));
        }
    }
    let _ = store;
    Arc::new(echorelay_core::backup::schedule::LocalSlotLock::new())
}

/// Implemented for every type that implements all seven ports (and is
/// `Send + Sync + 'static`): [`MemStore`], `PgStore` (feature `pg`), an
/// `Arc` of either, and `Arc<dyn Store>` itself.
pub trait Store:
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
    + DeliveryLog
    + Send
    + Sync
    + std::any::Any
{
}

impl<T> Store for T where
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
        + DeliveryLog
        + Send
        + Sync
        + 'static
{
}

/// The store every service of an [`EchoRelay`] shares.
pub type SharedStore = Arc<dyn Store>;

/// The vault every service of an [`EchoRelay`] shares.
pub type SharedVault = Arc<AesGcmVault>;

/// The job queue behind [`EchoRelay::queue`]: any [`Queue`] backend.
pub type SharedQueue = Arc<dyn Queue>;

/// The variable holding the Postgres URL; unset means the in-memory store.
pub const DATABASE_URL: &str = "DATABASE_URL";
/// The variable holding the Redis URL of the job queue (cargo feature
/// `redis`); unset means the queue of `DATABASE_URL`'s backend.
pub const REDIS_URL: &str = "REDIS_URL";
/// The variable holding the vault key (64 hex characters, or base64 of 32
/// bytes).
pub const SECRET_KEY: &str = "SECRET_KEY";
/// The variable holding previous vault keys during a rotation,
/// comma-separated.
pub const SECRET_KEY_PREVIOUS: &str = "SECRET_KEY_PREVIOUS";
/// The variable that makes [`EchoRelay::from_env`] apply pending
/// migrations (`1` or `true`).
pub const ECHORELAY_MIGRATE: &str = "ECHORELAY_MIGRATE";
/// The variable that turns on the Postgres store's key-verification cache
/// (`1` or `true`; see `echorelay_store_pg::cache`): a revocation then
/// waits for every live cache's acknowledgement, so S3 still holds.
pub const ECHORELAY_KEY_CACHE: &str = "ECHORELAY_KEY_CACHE";

/// Why an [`EchoRelay`] could not be set up.
///
/// No variant carries key material or the text of a variable that failed
/// to parse, and none includes `DATABASE_URL` (it may hold a password).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A vault key (from `SECRET_KEY` or `SECRET_KEY_PREVIOUS`, or given to
    /// the builder) is not acceptable.
    #[error("{var} is not acceptable: {source} (generate a key with `openssl rand -hex 32`)")]
    Vault {
        /// The variable the key came from.
        var: &'static str,
        /// What is wrong with it; never the key itself.
        #[source]
        source: VaultError,
    },
    /// No vault key was given, and the store keeps data beyond this
    /// process: a generated key would leave that data unreadable after a
    /// restart.
    #[error(
        "SECRET_KEY is not set: a persistent store needs a fixed vault key (generate one with `openssl rand -hex 32`)"
    )]
    MissingSecretKey,
    /// `SECRET_KEY_PREVIOUS` is set but `SECRET_KEY` is not.
    #[error("SECRET_KEY_PREVIOUS is set but SECRET_KEY is not")]
    PreviousWithoutCurrent,
    /// `DATABASE_URL` is set, but this build has no Postgres backend.
    #[error(
        "DATABASE_URL is set, but echorelay was built without the Postgres backend: enable its cargo feature `pg` (or unset DATABASE_URL for the in-memory store)"
    )]
    PgFeatureMissing,
    /// The Postgres store did not start: unreachable, refused login, or a
    /// schema that is behind (set `ECHORELAY_MIGRATE=1`) or ahead.
    #[cfg(feature = "pg")]
    #[error("{0}{hint}", hint = migrate_hint(.0))]
    Pg(#[from] echorelay_store_pg::PgError),
    /// The Redis queue at `REDIS_URL` did not start: unreachable, refused
    /// login, or a URL that does not parse.
    #[cfg(feature = "redis")]
    #[error("the Redis queue at REDIS_URL did not start: {0}")]
    Redis(#[source] QueueError),
    /// The Redis session store at `REDIS_URL` did not start.
    #[cfg(feature = "redis")]
    #[error("the Redis session store at REDIS_URL did not start: {0}")]
    RedisSessions(#[source] echorelay_store_redis::sessions::ConnectError),
    /// A variable has a value this crate does not understand.
    #[error("{var} is invalid: {reason}")]
    InvalidVar {
        /// The variable.
        var: &'static str,
        /// What is accepted instead.
        reason: &'static str,
    },
    /// The [`AccountPolicy`] was rejected by [`AccountService::new`].
    #[error("account policy rejected: {0}")]
    Policy(#[source] echorelay_core::Error),
    /// The [`QueueConfig`] was rejected by [`QueueConfig::validate`].
    #[error("queue settings rejected: {0}")]
    Queue(#[source] QueueError),
}

/// What to do about a schema that is behind, in [`EchoRelay::from_env`]'s
/// terms.
#[cfg(feature = "pg")]
fn migrate_hint(e: &echorelay_store_pg::PgError) -> &'static str {
    match e {
        echorelay_store_pg::PgError::SchemaBehind { .. } => {
            " (with EchoRelay::from_env: set ECHORELAY_MIGRATE=1 to apply pending migrations at start)"
        }
        _ => "",
    }
}

/// Every service of echorelay over one store, one vault and one clock.
///
/// Build it with [`EchoRelay::from_env`] (deployments) or
/// [`EchoRelay::builder`] (tests, custom stores); then use the services:
///
/// | accessor | service | for |
/// |---|---|---|
/// | [`keys`](EchoRelay::keys) | [`KeyService`] | API keys: mint, verify, rotate, revoke |
/// | [`config`](EchoRelay::config) | [`ConfigService`] | projects, lines, endpoints, targets, members |
/// | [`voter`](EchoRelay::voter) | [`Voter`](echorelay_core::access::Voter) | grants for every project surface |
/// | [`accounts`](EchoRelay::accounts) | [`AccountService`] | registration, login, TOTP, sessions |
/// | [`audit`](EchoRelay::audit) | [`AuditService`] | reading and verifying a project's audit log |
/// | [`rewrap`](EchoRelay::rewrap) | [`Rewrap`] | re-sealing after a `SECRET_KEY` rotation |
/// | [`queue`](EchoRelay::queue) | [`QueueService`] | the job queue: enqueue, reserve, ack, nack, dead letters |
///
/// Cloning is cheap (reference counts) and clones share everything.
#[derive(Clone)]
pub struct EchoRelay {
    store: SharedStore,
    vault: SharedVault,
    clock: Arc<dyn Clock>,
    keys: KeyService<SharedStore, SharedVault>,
    config: ConfigService<SharedStore, SharedVault>,
    voter: echorelay_core::access::Voter<SharedStore>,
    accounts: AccountService<SharedStore, SharedVault>,
    audit: AuditService<SharedStore>,
    rewrap: Rewrap<SharedStore, SharedVault>,
    queue: QueueService<SharedQueue>,
    relay: RelayService<SharedStore, SharedVault, SharedQueue>,
    operations: OperationsService<SharedStore, SharedQueue>,
    /// The vault's keyring, for the backup manifests' MAC.
    #[cfg_attr(not(feature = "backup"), allow(dead_code))]
    keyring: Arc<Keyring>,
    #[cfg(feature = "backup")]
    slot_lock: echorelay_core::backup::schedule::SharedSlotLock,
    store_type: &'static str,
    sessions_type: &'static str,
    throttles_type: &'static str,
    queue_type: &'static str,
}

impl fmt::Debug for EchoRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoRelay")
            .field("store", &self.store_type)
            .field("sessions", &self.sessions_type)
            .field("throttles", &self.throttles_type)
            .field("queue", &self.queue_type)
            .field("vault", &self.vault)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl EchoRelay {
    /// Sets everything up from the process environment; see
    /// [`EchoRelayBuilder::from_env_vars`] for the variables and the rules.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), echorelay::SetupError> {
    /// let relay = echorelay::EchoRelay::from_env().await?;
    /// # let _ = relay;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A [`SetupError`] naming what is missing or wrong.
    pub async fn from_env() -> Result<EchoRelay, SetupError> {
        EchoRelayBuilder::from_env().await?.build()
    }

    /// [`EchoRelay::from_env`] reading variables through `lookup` instead
    /// of the process environment: the testable form (tests cannot safely
    /// change the environment of a multi-threaded process).
    ///
    /// # Errors
    /// As [`EchoRelay::from_env`].
    pub async fn from_env_vars(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<EchoRelay, SetupError> {
        EchoRelayBuilder::from_env_vars(lookup).await?.build()
    }

    /// A builder starting from the defaults: a new [`MemStore`], a new
    /// [`MemQueue`] with [`QueueConfig::default`], a generated vault key
    /// (allowed only with a [`MemStore`]), [`SystemClock`] and
    /// [`AccountPolicy::default`].
    pub fn builder() -> EchoRelayBuilder {
        EchoRelayBuilder::default()
    }

    /// API keys: mint, verify, rotate, revoke, reveal, and the
    /// auto-rotation pass.
    pub fn keys(&self) -> &KeyService<SharedStore, SharedVault> {
        &self.keys
    }

    /// Projects and their configuration: lines, endpoints, targets (secrets
    /// sealed and masked), members, export and import.
    pub fn config(&self) -> &ConfigService<SharedStore, SharedVault> {
        &self.config
    }

    /// The voter: the only maker of the grants that project-scoped calls
    /// take.
    pub fn voter(&self) -> &echorelay_core::access::Voter<SharedStore> {
        &self.voter
    }

    /// Accounts: registration, the login steps (password, then TOTP or a
    /// backup code), sessions, trusted devices and step-up.
    pub fn accounts(&self) -> &AccountService<SharedStore, SharedVault> {
        &self.accounts
    }

    /// A project's audit log, under an audit-read grant: pages of events
    /// and verification of the hash chain.
    pub fn audit(&self) -> &AuditService<SharedStore> {
        &self.audit
    }

    /// The `SECRET_KEY` rotation pass: re-seals every stored secret under
    /// the current key and reports which keys are still in use.
    pub fn rewrap(&self) -> &Rewrap<SharedStore, SharedVault> {
        &self.rewrap
    }

    /// The job queue: core's rules ([`QueueService`]: limits, ids, lease
    /// nonces, the backoff, time from [`EchoRelay::clock`]) over the queue
    /// backend. Job payloads carry references, never secrets (S13).
    pub fn queue(&self) -> &QueueService<SharedQueue> {
        &self.queue
    }

    /// The relay's inbound side: [`RelayService::accept`] turns a message
    /// POSTed to an endpoint into one delivery job per target of its line
    /// (on [`DELIVERY_QUEUE`](echorelay_core::relay::DELIVERY_QUEUE) of
    /// this handle's queue backend).
    pub fn relay(&self) -> &RelayService<SharedStore, SharedVault, SharedQueue> {
        &self.relay
    }

    /// The relay's operations: a project's messages, their deliveries and
    /// attempts, dead letters per target and their redrive, under a grant
    /// (reads: [`ConfigRead`](echorelay_core::access::surface::ConfigRead);
    /// redrive: [`Ingest`](echorelay_core::access::surface::Ingest)).
    pub fn operations(&self) -> &OperationsService<SharedStore, SharedQueue> {
        &self.operations
    }

    /// A delivery worker over this handle's store, vault and queue that
    /// sends through `transport` (`echorelay_http::delivery::HttpTransport`
    /// with its SSRF guard, or a test double): see
    /// [`DeliveryService`]. Each worker keeps its own cache of opened
    /// target secrets; make one per worker, not one per batch.
    pub fn delivery<T: Transport>(
        &self,
        transport: T,
    ) -> DeliveryService<SharedStore, SharedVault, SharedQueue, T> {
        let queue = QueueService::with_config(
            self.queue.queue().clone(),
            self.clock.clone(),
            self.relay.config().queue_config(*self.queue.config()),
        )
        .unwrap_or_else(|_| self.queue.clone());
        DeliveryService::new(
            self.config.clone(),
            self.store.clone(),
            self.voter.clone(),
            queue,
            transport,
            *self.relay.config(),
            self.clock.clone(),
        )
    }

    /// The store behind every service, for what no service covers (the
    /// global audit chain, housekeeping). Writing through it bypasses the
    /// services' rules and audit events.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// The vault (its [`key_ids`](AesGcmVault::key_ids) tell which keys it
    /// opens with).
    pub fn vault(&self) -> &SharedVault {
        &self.vault
    }

    /// The clock every service asks.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    #[cfg(feature = "backup")]
    /// Backups of this relay's store to `target` (feature `backup`):
    /// manifests authenticated under this relay's `SECRET_KEY` keyring,
    /// time from its clock. The sources (a `pg_dump`, …) are the
    /// caller's; see [`echorelay_core::backup`].
    pub fn backups(
        &self,
        target: Arc<dyn echorelay_core::backup::BackupTarget>,
    ) -> echorelay_core::backup::service::BackupService {
        let store = echorelay_core::backup::service::StoreInfo {
            kind: self.store_kind().into(),
            schema_version: if self.store_kind() == "postgres" {
                schema_version_pg()
            } else {
                0
            },
        };
        echorelay_core::backup::service::BackupService::new(
            target,
            self.keyring.clone(),
            self.clock.clone(),
            store,
        )
    }

    #[cfg(feature = "backup")]
    fn store_kind(&self) -> &'static str {
        if self.store_type.ends_with("PgStore") {
            "postgres"
        } else {
            "memory"
        }
    }

    #[cfg(feature = "backup")]
    /// A logical snapshot of this relay's store as a backup source
    /// (feature `backup`; [`echorelay_core::backup::snapshot`]): accounts
    /// with their sealed factors, every project's tree, members and key
    /// records, every audit chain. Works on every backend.
    pub fn snapshot_source(
        &self,
    ) -> echorelay_core::backup::snapshot::SnapshotSource<'_, dyn Store> {
        echorelay_core::backup::snapshot::SnapshotSource::new(
            self.store.as_ref(),
            self.store_kind(),
            self.clock.now(),
        )
    }

    #[cfg(feature = "backup")]
    /// Makes one backup of this relay (feature `backup`): every audit
    /// chain's head read first, then the [snapshot](Self::snapshot_source)
    /// and `extra` sources (a `pg_dump`, …), encrypted to `recipients`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use echorelay::core::backup::crypt::{Identities, Recipients};
    /// use echorelay::prelude::*;
    ///
    /// let keyring = Keyring::new(SecretKey::generate());
    /// let relay = EchoRelay::builder().keyring(keyring.clone()).build()?;
    /// let backups = relay.backups(Arc::new(MemBackupTarget::new()));
    /// let identity = age::x25519::Identity::generate();
    /// let recipients = Recipients::parse(&identity.to_public().to_string())?;
    /// let manifest = relay.back_up(&backups, &recipients, &[]).await?;
    ///
    /// // Into a new, empty store with the same SECRET_KEY keyring:
    /// let secret = identity.to_string();
    /// let identities = Arc::new(Identities::parse(secrecy::ExposeSecret::expose_secret(&secret))?);
    /// let restored = EchoRelay::builder().keyring(keyring).build()?;
    /// restored.restore_snapshot(&backups, &manifest.id, identities).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`BackupError`](echorelay_core::backup::BackupError): the store
    /// could not be read, encryption or the target failed.
    pub async fn back_up(
        &self,
        backups: &echorelay_core::backup::service::BackupService,
        recipients: &echorelay_core::backup::crypt::Recipients,
        extra: &[&dyn echorelay_core::backup::service::BackupSource],
    ) -> Result<echorelay_core::backup::manifest::Manifest, echorelay_core::backup::BackupError>
    {
        let heads = echorelay_core::backup::service::audit_heads(self.store.as_ref())
            .await
            .map_err(|e| {
                echorelay_core::backup::BackupError::Source(format!("reading the audit heads: {e}"))
            })?;
        let snapshot = self.snapshot_source();
        let mut sources: Vec<&dyn echorelay_core::backup::service::BackupSource> = vec![&snapshot];
        sources.extend_from_slice(extra);
        backups.run(recipients, &sources, heads).await
    }

    #[cfg(feature = "backup")]
    /// Restores the snapshot of backup `id` into this relay's store, which
    /// must be empty (feature `backup`): the snapshot is downloaded,
    /// checked and parsed first
    /// ([`BackupService::read_snapshot`](echorelay_core::backup::service::BackupService::read_snapshot)),
    /// then written in one atomic step. This relay needs the keyring the
    /// backup was made under (sealed values stay sealed). Sessions are not
    /// restored: everyone signs in again. Returns what was restored.
    ///
    /// # Errors
    /// As `read_snapshot`; [`BackupError::NotEmpty`](echorelay_core::backup::BackupError::NotEmpty)
    /// for a store that holds anything; `Source` when the store failed
    /// (nothing written).
    pub async fn restore_snapshot(
        &self,
        backups: &echorelay_core::backup::service::BackupService,
        id: &str,
        identities: Arc<echorelay_core::backup::crypt::Identities>,
    ) -> Result<echorelay_core::backup::snapshot::Counts, echorelay_core::backup::BackupError> {
        use echorelay_core::backup::BackupError;
        use echorelay_core::error::StoreError;
        let data = backups.read_snapshot(id, identities).await?;
        let counts = echorelay_core::backup::snapshot::Counts::of(&data);
        match self.store.restore_snapshot(data).await {
            Ok(()) => Ok(counts),
            Err(StoreError::Conflict { reason }) => Err(BackupError::NotEmpty(reason.into())),
            Err(e) => Err(BackupError::Source(format!("writing the snapshot: {e}"))),
        }
    }

    #[cfg(feature = "backup")]
    /// The lock the backup schedule takes so that one process backs up per
    /// slot (feature `backup`): on a `PgStore`, a Postgres advisory lock
    /// shared by every process on the database; otherwise a
    /// [`LocalSlotLock`](echorelay_core::backup::schedule::LocalSlotLock)
    /// shared by this handle's clones.
    pub fn backup_lock(&self) -> &echorelay_core::backup::schedule::SharedSlotLock {
        &self.slot_lock
    }

    /// The Rust type of the store given to the builder (for logs), e.g.
    /// `echorelay_store_mem::MemStore`.
    pub fn store_type(&self) -> &'static str {
        self.store_type
    }

    /// The Rust type of the backend holding sessions and login challenges
    /// (for logs): the store's unless placed elsewhere, e.g.
    /// `echorelay_store_redis::sessions::RedisSessions` with `REDIS_URL`.
    pub fn sessions_type(&self) -> &'static str {
        self.sessions_type
    }

    /// The Rust type of the backend holding the throttles' attempt
    /// counters (for logs), as [`EchoRelay::sessions_type`].
    pub fn throttles_type(&self) -> &'static str {
        self.throttles_type
    }

    /// The Rust type of the queue backend (for logs), e.g.
    /// `echorelay_store_mem::queue::MemQueue`.
    pub fn queue_type(&self) -> &'static str {
        self.queue_type
    }
}

/// Builds an [`EchoRelay`] from parts; see [`EchoRelay::builder`] for the
/// defaults, and [`EchoRelayBuilder::from_env`] for a builder preloaded
/// from the environment (to swap the clock or the account policy of a
/// deployment-configured handle).
///
/// ```
/// use std::sync::Arc;
/// use echorelay::prelude::*;
/// use echorelay::core::clock::ManualClock;
///
/// let clock = ManualClock::at_unix(1_767_225_600);
/// let relay = EchoRelay::builder()
///     .store(MemStore::new())
///     .keyring(Keyring::new(SecretKey::generate()))
///     .clock(Arc::new(clock.clone()))
///     .build()?;
/// # let _ = relay;
/// # Ok::<(), SetupError>(())
/// ```
pub struct EchoRelayBuilder {
    store: SharedStore,
    store_type: &'static str,
    ephemeral_key_ok: bool,
    audit_keys: Option<Arc<AuditKeys>>,
    keyring: Option<Keyring>,
    clock: Arc<dyn Clock>,
    policy: AccountPolicy,
    queue: SharedQueue,
    queue_type: &'static str,
    queue_config: QueueConfig,
    relay_config: RelayConfig,
    sessions: Option<(Arc<dyn SessionStore>, &'static str)>,
    throttles: Option<(Arc<dyn ThrottleStore>, &'static str)>,
    /// From `REDIS_URL`: given the account policy's TTLs at `build`.
    #[cfg(feature = "redis")]
    redis_sessions: Option<echorelay_store_redis::RedisSessions>,
}

impl Default for EchoRelayBuilder {
    fn default() -> Self {
        Self {
            store: Arc::new(MemStore::new()),
            store_type: std::any::type_name::<MemStore>(),
            ephemeral_key_ok: true,
            audit_keys: None,
            keyring: None,
            clock: Arc::new(SystemClock),
            policy: AccountPolicy::default(),
            queue: Arc::new(MemQueue::new()),
            queue_type: std::any::type_name::<MemQueue>(),
            queue_config: QueueConfig::default(),
            relay_config: RelayConfig::default(),
            sessions: None,
            throttles: None,
            #[cfg(feature = "redis")]
            redis_sessions: None,
        }
    }
}

impl fmt::Debug for EchoRelayBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EchoRelayBuilder")
            .field("store", &self.store_type)
            .field("queue", &self.queue_type)
            .field("sessions", &self.sessions.as_ref().map(|s| s.1))
            .field("throttles", &self.throttles.as_ref().map(|t| t.1))
            .field("queue_config", &self.queue_config)
            .field("keyring", &self.keyring)
            .field("clock", &self.clock)
            .field("policy", &self.policy)
            .finish()
    }
}

impl EchoRelayBuilder {
    /// A builder preloaded from the process environment; see
    /// [`EchoRelayBuilder::from_env_vars`].
    ///
    /// # Errors
    /// As [`EchoRelayBuilder::from_env_vars`].
    pub async fn from_env() -> Result<EchoRelayBuilder, SetupError> {
        Self::from_env_vars(|name| std::env::var(name).ok()).await
    }

    /// A builder whose store and vault key come from the variables that
    /// `lookup` returns (the testable form of
    /// [`EchoRelayBuilder::from_env`]). A variable that is unset, empty or
    /// only whitespace counts as unset.
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `DATABASE_URL` | set: the Postgres store at that URL (cargo feature `pg`; without it, [`SetupError::PgFeatureMissing`]), which is also the job queue ([`EchoRelay::queue`], table `queue_jobs`). Unset: a new in-memory [`MemStore`] and [`MemQueue`]. |
    /// | `SECRET_KEY` | the vault key: 64 hex characters or base64 of 32 random bytes (`openssl rand -hex 32`), checked by [`SecretKey::parse`]. |
    /// | `SECRET_KEY_PREVIOUS` | during a key rotation, the previous keys, comma-separated: they still open, never seal ([`Keyring::parse`]). |
    /// | `ECHORELAY_MIGRATE` | `1` or `true`: apply pending migrations at start. `0`, `false` or unset: don't; a schema that is behind is then `SetupError::Pg` at start, never a failure later. Ignored by the in-memory store. |
    /// | `REDIS_URL` | set: the job queue is a `RedisQueue` at that URL, key prefix `echorelay` (cargo feature `redis`; without it the variable is ignored with a warning, since other software sets it too). Unset: the queue stays the builder's default, a [`MemQueue`]. |
    /// | `ECHORELAY_KEY_CACHE` | `1` or `true`: the Postgres store keeps verified keys in an in-process cache with the default `KeyCacheConfig` (60 s entries, 5 s lease); every revocation and rotation waits until each live cache has dropped the key, so a revoked key still fails on the next request. `0`, `false` or unset: every verification reads the database. Ignored by the in-memory store (which has nothing to cache). |
    ///
    /// A missing `SECRET_KEY` is an error with Postgres
    /// ([`SetupError::MissingSecretKey`], checked before connecting):
    /// secrets sealed under a generated key would be unreadable after a
    /// restart. With the in-memory store a missing key is replaced by a
    /// generated one, with a `tracing` warning, since the data dies with
    /// the process anyway.
    ///
    /// The account policy is [`AccountPolicy::default`] and the clock
    /// [`SystemClock`]; change them on the returned builder.
    ///
    /// ```
    /// # async fn demo() -> Result<(), echorelay::SetupError> {
    /// use std::collections::HashMap;
    /// let vars = HashMap::from([("ECHORELAY_MIGRATE", "0")]);
    /// let relay = echorelay::EchoRelayBuilder::from_env_vars(|name| {
    ///     vars.get(name).map(|v| v.to_string())
    /// })
    /// .await?
    /// .build()?;
    /// assert_eq!(relay.store_type(), "echorelay_store_mem::MemStore");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`SetupError::Vault`] for a key that does not parse (the error
    /// names the variable, never the key), [`SetupError::InvalidVar`] for
    /// an `ECHORELAY_MIGRATE` or `ECHORELAY_KEY_CACHE` that is not a flag,
    /// and the Postgres errors
    /// above.
    pub async fn from_env_vars(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<EchoRelayBuilder, SetupError> {
        let env = EnvConfig::read(&lookup)?;
        let builder = EchoRelayBuilder::default();
        let builder = match env.keyring {
            Some(keyring) => builder.keyring(keyring),
            None => builder,
        };
        // The Postgres store, also the queue unless another backend is
        // chosen below.
        #[cfg(feature = "pg")]
        let mut pg_queue: Option<echorelay_store_pg::PgStore> = None;
        let builder = match env.database_url {
            None => builder,
            #[cfg(feature = "pg")]
            Some(url) => {
                if builder.keyring.is_none() {
                    return Err(SetupError::MissingSecretKey);
                }
                let keys = builder
                    .keyring
                    .as_ref()
                    .map(AuditKeys::from_keyring)
                    .ok_or(SetupError::MissingSecretKey)?;
                let mut options = echorelay_store_pg::PgOptions::new(url.expose_secret().trim())
                    .migrate(env.migrate)
                    .audit_keys(keys.clone());
                if env.key_cache {
                    options = options.key_cache(echorelay_store_pg::KeyCacheConfig::default());
                }
                let store = echorelay_store_pg::PgStore::connect_with(options).await?;
                if store.runs_as_owner().await.unwrap_or(false) {
                    tracing::warn!(
                        "echorelay: the database role owns the tables (or is a superuser): it could rewrite the audit log with SQL; run the migrations as the owner and the service as a role given PgStore::grant_service_role (`echorelay-server migrate --grant-to ROLE`)"
                    );
                }
                tracing::info!(
                    migrate = env.migrate,
                    key_cache = env.key_cache,
                    "echorelay: Postgres store connected"
                );
                pg_queue = Some(store.clone());
                builder.store(store).audit_keys(keys)
            }
            #[cfg(not(feature = "pg"))]
            Some(_) => return Err(SetupError::PgFeatureMissing),
        };
        // ---- The queue backend (issue 17) --------------------------------
        // REDIS_URL set → the Redis queue (feature `redis`: the match
        // below wins, being applied last), else DATABASE_URL set → the
        // Postgres queue (feature `pg`: the store's own pool, table
        // `queue_jobs`, one LISTEN connection started by the first wait),
        // else the builder's default, a MemQueue.
        #[cfg(feature = "pg")]
        let builder = match pg_queue {
            Some(store) => builder.queue(store),
            None => builder,
        };
        // ------------------------------------------------------------------
        let builder = match env.redis_url {
            None => builder,
            #[cfg(feature = "redis")]
            Some(url) => {
                let url = url.expose_secret().trim();
                let queue = echorelay_store_redis::RedisQueue::connect(url)
                    .await
                    .map_err(SetupError::Redis)?;
                // Sessions, challenges and throttle counters too (S9,
                // S15); their TTLs follow the account policy at `build`.
                let sessions = echorelay_store_redis::RedisSessions::connect(url)
                    .await
                    .map_err(SetupError::RedisSessions)?;
                tracing::info!(
                    prefix = queue.prefix(),
                    "echorelay: Redis connected: job queue, sessions, challenges, throttles"
                );
                let mut builder = builder.queue(queue);
                builder.redis_sessions = Some(sessions);
                builder
            }
            #[cfg(not(feature = "redis"))]
            Some(_) => {
                // Not an error (unlike DATABASE_URL without `pg`): REDIS_URL
                // is a common variable that other software on the host may
                // set, and CI exports it for every build.
                tracing::warn!(
                    "echorelay: REDIS_URL is set, but echorelay was built without the Redis queue (cargo feature `redis`): the job queue is not on Redis"
                );
                builder
            }
        };
        Ok(builder)
    }

    /// The store for every service. Default: a new [`MemStore`].
    ///
    /// A [`MemStore`] or `PgStore` passed here is given the audit keys
    /// derived from the keyring at [`build`](EchoRelayBuilder::build)
    /// (a `PgStore` built with `PgOptions::audit_keys` keeps its own), so
    /// every audit event is tagged and [`EchoRelay::audit`] checks the tags.
    /// Any other store tags with the keys it was built with, which the
    /// builder must then be told ([`audit_keys`](EchoRelayBuilder::audit_keys)).
    pub fn store<S: Store>(mut self, store: S) -> Self {
        self.ephemeral_key_ok = TypeId::of::<S>() == TypeId::of::<MemStore>();
        self.store_type = std::any::type_name::<S>();
        self.audit_keys = None;
        self.store = Arc::new(store);
        self
    }

    /// The keys the store tags audit events with
    /// ([`AuditKeys::from_keyring`] of its keyring): [`EchoRelay::audit`]
    /// then checks every tag and each chain's sealed head, so an edit,
    /// deletion or cut-off end made with database access alone is found.
    /// Without it (and for a store other than [`MemStore`]), it checks the
    /// hashes only.
    pub fn audit_keys(mut self, keys: Arc<AuditKeys>) -> Self {
        self.audit_keys = Some(keys);
        self
    }

    /// The vault's keys (see [`Keyring::parse`] and
    /// [`Keyring::with_previous`]).
    ///
    /// Without one, [`build`](EchoRelayBuilder::build) generates a key if
    /// the store is a [`MemStore`] (its data dies with the process anyway;
    /// a `tracing` warning says so) and fails with
    /// [`SetupError::MissingSecretKey`] for any other store.
    pub fn keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// The clock every service asks. Default: [`SystemClock`].
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The account policy (bcrypt cost, TOTP, lockouts, session
    /// lifetimes). Default: [`AccountPolicy::default`].
    pub fn account_policy(mut self, policy: AccountPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Where sessions and login challenges live ([`SessionStore`]).
    /// Default: the [`store`](EchoRelayBuilder::store). Every other port
    /// stays there (see [`echorelay_core::ports::Composed`]).
    ///
    /// A TTL store keeps records for durations it is told: give a
    /// `RedisSessions` the TTLs of the same account policy
    /// (`SessionTtl::from_policy`), or it may end sessions early (never
    /// late). [`EchoRelayBuilder::from_env`] does that for `REDIS_URL`.
    pub fn sessions<S: SessionStore + 'static>(mut self, sessions: S) -> Self {
        self.sessions = Some((Arc::new(sessions), std::any::type_name::<S>()));
        #[cfg(feature = "redis")]
        {
            self.redis_sessions = None;
        }
        self
    }

    /// Where the throttles' attempt counters live ([`ThrottleStore`]).
    /// Default: the [`store`](EchoRelayBuilder::store).
    pub fn throttles<T: ThrottleStore + 'static>(mut self, throttles: T) -> Self {
        self.throttles = Some((Arc::new(throttles), std::any::type_name::<T>()));
        #[cfg(feature = "redis")]
        {
            self.redis_sessions = None;
        }
        self
    }

    /// The job queue's backend. Default: a new [`MemQueue`] (jobs live as
    /// long as the process).
    pub fn queue<Q: Queue + 'static>(mut self, queue: Q) -> Self {
        self.queue_type = std::any::type_name::<Q>();
        self.queue = Arc::new(queue);
        self
    }

    /// The relay's settings (body limit, attempts, lease, request
    /// timeout, what a 4xx means). Default: [`RelayConfig::default`]. Its
    /// jobs go through a queue service whose payload limit holds the
    /// largest body ([`RelayConfig::queue_config`]).
    pub fn relay_config(mut self, config: RelayConfig) -> Self {
        self.relay_config = config;
        self
    }

    /// The queue's settings (payload limit, backoff, default attempts,
    /// poll). Default: [`QueueConfig::default`].
    pub fn queue_config(mut self, config: QueueConfig) -> Self {
        self.queue_config = config;
        self
    }

    /// Wires the services.
    ///
    /// This computes one bcrypt hash at the policy's cost (the account
    /// service's timing decoy): about half a second at the default cost 13.
    ///
    /// # Errors
    /// [`SetupError::MissingSecretKey`] without a keyring on a store other
    /// than [`MemStore`]; [`SetupError::Policy`] if the account policy is
    /// rejected; [`SetupError::Queue`] if the queue settings are.
    pub fn build(self) -> Result<EchoRelay, SetupError> {
        let keyring = match self.keyring {
            Some(keyring) => keyring,
            None if self.ephemeral_key_ok => {
                tracing::warn!(
                    "echorelay: no SECRET_KEY; sealing with a generated key that lives only as long as this process (acceptable only because the store is in memory)"
                );
                Keyring::new(SecretKey::generate())
            }
            None => return Err(SetupError::MissingSecretKey),
        };
        let mut store = self.store;
        let audit_keys = match self.audit_keys {
            Some(keys) => Some(keys),
            None => give_audit_keys(&mut store, &keyring),
        };
        let keyring_for_backups = Arc::new(keyring.clone());
        #[cfg(feature = "backup")]
        let slot_lock = slot_lock_of(&store);
        let (mut sessions, mut throttles) = (self.sessions, self.throttles);
        #[cfg(feature = "redis")]
        if let Some(redis) = self.redis_sessions {
            let redis =
                redis.with_ttl(echorelay_store_redis::SessionTtl::from_policy(&self.policy));
            let name = std::any::type_name::<echorelay_store_redis::RedisSessions>();
            sessions = Some((Arc::new(redis.clone()), name));
            throttles = Some((Arc::new(redis), name));
        }
        let sessions_type = sessions.as_ref().map_or(self.store_type, |s| s.1);
        let throttles_type = throttles.as_ref().map_or(self.store_type, |t| t.1);
        if sessions.is_some() || throttles.is_some() {
            let durable = store.clone();
            let s: Arc<dyn SessionStore> = match sessions {
                Some((s, _)) => s,
                None => durable.clone(),
            };
            let t: Arc<dyn ThrottleStore> = match throttles {
                Some((t, _)) => t,
                None => durable.clone(),
            };
            store = Arc::new(echorelay_core::ports::Composed::new(durable, s, t));
        }
        let vault: SharedVault = Arc::new(AesGcmVault::new(keyring));
        let clock = self.clock;
        let relay_queue = QueueService::with_config(
            self.queue.clone(),
            clock.clone(),
            self.relay_config.queue_config(self.queue_config),
        )
        .map_err(SetupError::Queue)?;
        let queue = QueueService::with_config(self.queue, clock.clone(), self.queue_config)
            .map_err(SetupError::Queue)?;
        let operations = OperationsService::new(
            store.clone(),
            relay_queue.clone(),
            QueueName::new(echorelay_core::relay::DELIVERY_QUEUE).map_err(SetupError::Queue)?,
            clock.clone(),
        );
        let relay = RelayService::new(
            KeyService::new(store.clone(), vault.clone(), clock.clone()),
            echorelay_core::access::Voter::new(store.clone()),
            store.clone(),
            relay_queue,
            self.relay_config,
            clock.clone(),
        );
        let accounts =
            AccountService::new(store.clone(), vault.clone(), clock.clone(), self.policy)
                .map_err(SetupError::Policy)?;
        Ok(EchoRelay {
            keys: KeyService::new(store.clone(), vault.clone(), clock.clone()),
            config: ConfigService::new(store.clone(), vault.clone(), clock.clone()),
            voter: echorelay_core::access::Voter::new(store.clone()),
            accounts,
            audit: match audit_keys {
                Some(keys) => AuditService::keyed(store.clone(), keys),
                None => AuditService::new(store.clone()),
            },
            rewrap: Rewrap::new(store.clone(), vault.clone(), clock.clone()),
            queue,
            relay,
            operations,
            store,
            vault,
            clock,
            keyring: keyring_for_backups,
            #[cfg(feature = "backup")]
            slot_lock,
            store_type: self.store_type,
            sessions_type,
            throttles_type,
            queue_type: self.queue_type,
        })
    }
}

/// The variables of [`EchoRelayBuilder::from_env_vars`], parsed.
struct EnvConfig {
    /// Held as a secret: the URL may carry a password.
    database_url: Option<SecretString>,
    /// Held as a secret, as `database_url`.
    redis_url: Option<SecretString>,
    keyring: Option<Keyring>,
    #[cfg_attr(not(feature = "pg"), allow(dead_code))]
    migrate: bool,
    #[cfg_attr(not(feature = "pg"), allow(dead_code))]
    key_cache: bool,
}

impl EnvConfig {
    fn read(lookup: &impl Fn(&str) -> Option<String>) -> Result<EnvConfig, SetupError> {
        // Values go straight into `SecretString`s, zeroized on drop.
        let get = |name: &str| {
            lookup(name)
                .map(SecretString::from)
                .filter(|v| !v.expose_secret().trim().is_empty())
        };
        let flag = |var: &'static str| match get(var) {
            None => Ok(false),
            Some(v) => match v.expose_secret().trim() {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                _ => Err(SetupError::InvalidVar {
                    var,
                    reason: "expected 1, true, 0 or false",
                }),
            },
        };
        let migrate = flag(ECHORELAY_MIGRATE)?;
        let key_cache = flag(ECHORELAY_KEY_CACHE)?;
        let keyring = match (get(SECRET_KEY), get(SECRET_KEY_PREVIOUS)) {
            (None, None) => None,
            (None, Some(_)) => return Err(SetupError::PreviousWithoutCurrent),
            (Some(current), previous) => Some(parse_keyring(&current, previous.as_ref())?),
        };
        Ok(EnvConfig {
            database_url: get(DATABASE_URL),
            redis_url: get(REDIS_URL),
            keyring,
            migrate,
            key_cache,
        })
    }
}

/// Parses `SECRET_KEY` and the comma-separated `SECRET_KEY_PREVIOUS`,
/// naming the variable at fault.
fn parse_keyring(
    current: &SecretString,
    previous: Option<&SecretString>,
) -> Result<Keyring, SetupError> {
    let vault = |var| move |source| SetupError::Vault { var, source };
    let current = current.expose_secret();
    SecretKey::parse(current).map_err(vault(SECRET_KEY))?;
    let previous: Vec<&str> = previous
        .map(|p| {
            p.expose_secret()
                .split(',')
                .filter(|k| !k.trim().is_empty())
                .collect()
        })
        .unwrap_or_default();
    for key in &previous {
        SecretKey::parse(key).map_err(vault(SECRET_KEY_PREVIOUS))?;
    }
    // Each key parses on its own; what is left is a duplicate.
    Keyring::parse(current, &previous).map_err(vault(SECRET_KEY_PREVIOUS))
}

#[cfg(all(feature = "backup", feature = "pg"))]
fn schema_version_pg() -> i64 {
    echorelay_store_pg::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

#[cfg(all(feature = "backup", not(feature = "pg")))]
fn schema_version_pg() -> i64 {
    0
}
