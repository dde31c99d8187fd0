//! # echorelay
//!
//! The security and persistence core of a multi-tenant webhook relay, as a
//! library. Start with [`EchoRelay`]: one handle holding every service
//! (API keys, configuration, the voter, accounts, the audit log, the
//! `SECRET_KEY` rewrap, the job queue) over one store, one queue, one vault
//! and one clock, and
//! [`prelude`] for the names an embedder needs:
//!
//! ```no_run
//! use echorelay::prelude::*;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // DATABASE_URL set: Postgres (feature `pg`); unset: in memory.
//! let relay = EchoRelay::from_env().await?;
//! let verified = relay.keys().verify("er_live_…").await?;
//! # let _ = verified;
//! # Ok(()) }
//! ```
//!
//! Backends:
//!
//! | backend | how | cargo feature |
//! |---|---|---|
//! | in memory | [`MemStore`] and [`MemQueue`] ([`mem`]); the default of [`EchoRelay::from_env`] and [`EchoRelay::builder`] | always |
//! | PostgreSQL | `PgStore` (`echorelay::pg`), the store and the queue; `DATABASE_URL` in [`EchoRelay::from_env`] | `pg` |
//! | Redis (the job queue only) | `RedisQueue` (`echorelay::redis`); `REDIS_URL` in [`EchoRelay::from_env`] (it wins over `DATABASE_URL` for the queue) | `redis` |
//! | backup targets in memory | [`MemBackupTarget`] ([`mem`]) | always |
//! | backup targets on S3-compatible buckets and local directories | `S3Target` (`echorelay::s3`), from `s3://bucket/prefix` or `file:///dir` | `s3` |
//!
//! The HTTP layer is its own crate, `echorelay-http`.
//!
//! The domain itself is [`core`] (services, rules and the port traits);
//! its services can also be wired by hand, each port on its own backend
//! (`from_parts`).
//!
//! See the README (its snippets are compiled as doctests of this crate),
//! `examples/quickstart.rs` for a tour, and `ARCHITECTURE.md` for the map
//! from each security invariant to the code and the test.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod handle;

pub use echorelay_core as core;
pub use echorelay_store_mem as mem;
/// The PostgreSQL backend (`echorelay-store-pg`): [`pg::PgStore`],
/// [`pg::PgOptions`], [`pg::PgError`].
#[cfg(feature = "pg")]
pub use echorelay_store_pg as pg;
/// The Redis job queue (`echorelay-store-redis`): [`redis::RedisQueue`],
/// [`redis::RedisOptions`].
#[cfg(feature = "redis")]
pub use echorelay_store_redis as redis;
/// Backup targets on S3-compatible buckets and local directories
/// (`echorelay-store-s3`): [`s3::S3Target`], [`s3::S3Options`].
#[cfg(feature = "s3")]
pub use echorelay_store_s3 as s3;
/// The `secrecy` crate the API uses for passwords, codes and tokens
/// (`SecretString`), so embedders need not depend on it themselves.
pub use secrecy;

pub use echorelay_core::{Error, Result};
pub use echorelay_store_mem::{MemBackupTarget, MemQueue, MemStore};
#[cfg(feature = "pg")]
pub use echorelay_store_pg::PgStore;
#[cfg(feature = "redis")]
pub use echorelay_store_redis::{RedisQueue, RedisSessions};
#[cfg(feature = "s3")]
pub use echorelay_store_s3::S3Target;
pub use handle::{
    EchoRelay, EchoRelayBuilder, SetupError, SharedQueue, SharedStore, SharedVault, Store,
};

/// Everything an embedder needs, in one `use echorelay::prelude::*;`.
///
/// The handle ([`EchoRelay`], [`EchoRelayBuilder`], [`SetupError`],
/// [`Store`]), the errors ([`Error`], [`Result`]), the backends
/// ([`MemStore`], `PgStore` with feature `pg`, `RedisQueue` with feature
/// `redis`), callers, roles and the
/// surface markers for [`Voter::authorize`](crate::core::access::Voter::authorize)
/// (`Keys`, `ConfigRead`, …), the request and result types of the key,
/// config and login calls, the vault key types, the clock, and
/// `secrecy`'s [`SecretString`](secrecy::SecretString) and
/// [`ExposeSecret`](secrecy::ExposeSecret), and the queue's names
/// ([`MemQueue`], [`SharedQueue`], `QueueName`, `EnqueueOptions`,
/// `NackPolicy`, `ErrorClass`, `DedupKey`, `LeaseToken`, `ReservedJob`,
/// `QueueStats`, `QueueError`, …), and the backup targets
/// ([`MemBackupTarget`], `S3Target` and `S3Options` with feature `s3`; the
/// port's other names are in `echorelay::core::backup`).
///
/// The port traits are imported anonymously (`as _`): their methods work
/// on [`EchoRelay::store`] without their names entering your scope.
///
/// Note that [`Result`] here is `echorelay::Result<T, E = Error>`: with a
/// second parameter it is the standard `Result`.
pub mod prelude {
    pub use crate::handle::{EchoRelay, EchoRelayBuilder, SetupError, SharedQueue, Store};
    #[cfg(feature = "pg")]
    pub use crate::pg::{PgOptions, PgStore};
    #[cfg(feature = "redis")]
    pub use crate::redis::{RedisOptions, RedisQueue, RedisSessions, SessionTtl};
    #[cfg(feature = "s3")]
    pub use crate::s3::{S3Options, S3Target};
    pub use crate::{Error, MemBackupTarget, MemQueue, MemStore, Result};

    pub use echorelay_core::access::surface::{
        AuditRead, Billing, ConfigRead, ConfigWrite, Delivery, Keys, Members, SurfaceKind,
    };
    pub use echorelay_core::access::{Caller, Decision, Grant, Role, Surface};
    pub use echorelay_core::account::AccountPolicy;
    pub use echorelay_core::account::password::PasswordPolicy;
    pub use echorelay_core::account::service::{
        AuthenticatedSession, Challenge, Enrolled, EnrollmentOffer, LoginComplete, NewDevice,
        NewSession, PasswordStep, SecondFactor, StepUp,
    };
    pub use echorelay_core::audit::{AuditEvent, EventKind};
    pub use echorelay_core::clock::{Clock, SystemClock};
    pub use echorelay_core::config::{
        AuthInput, AuthView, NewTarget, RotatedSigningSecret, SigningRotation, TargetPatch,
    };
    pub use echorelay_core::ids::{ProjectId, UserId};
    pub use echorelay_core::keys::{
        Environment, KeyPhase, MintRequest, MintedKey, PlaintextKey, RotateOptions, VerifiedKey,
    };
    pub use echorelay_core::queue::{
        Backoff, DeadJob, DedupKey, EnqueueOptions, ErrorClass, JobId, LeaseToken, NackOutcome,
        NackPolicy, QueueConfig, QueueError, QueueName, QueueService, QueueStats, ReservedJob,
        RunAt,
    };
    pub use echorelay_core::vault::{Keyring, SecretKey};
    pub use secrecy::{ExposeSecret, SecretString};

    pub use echorelay_core::backup::BackupTarget as _;
    pub use echorelay_core::ports::{
        AccountStore as _, AuditLog as _, AuditSink as _, ConfigStore as _, KeyStore as _,
        MembershipStore as _, SessionStore as _, ThrottleStore as _,
    };
    pub use echorelay_core::queue::Queue as _;
}

/// The README's Rust snippets, compiled by `cargo test --doc -p echorelay`.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
