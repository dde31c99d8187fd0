//! # echorelay-store-pg
//!
//! Every echorelay port on PostgreSQL (sqlx, tokio, rustls): keys, config,
//! memberships, the audit log, accounts (factors, backup codes, attempt
//! counters, devices), sessions and challenges, and the job queue. Any
//! number of processes may share one database and every invariant holds
//! (S15):
//!
//! - each mutation and its audit event commit in one transaction, and the
//!   audit table refuses `UPDATE`, `DELETE` and `TRUNCATE` in the database
//!   itself (S11);
//! - conditional writes decide in the database (a conditional `UPDATE`, a
//!   row lock, or an advisory lock per counter), so of racing callers in
//!   any number of processes exactly the documented number win;
//! - verification reads the database on every call (S3); the optional key
//!   cache ([`KeyCacheConfig`]) keeps S3 by having every revocation wait
//!   for every live cache's acknowledgement (see [`cache`]).
//!
//! `PgStore` is also a job queue
//! ([`Queue`](echorelay_core::queue::Queue), module [`queue`]): one table,
//! `queue_jobs`, each method one statement (`FOR UPDATE SKIP LOCKED` to
//! reserve, the lease checked in the `WHERE` of every ack, nack and
//! extend). A committed enqueue or ack is durable as any committed row:
//! once the call returned `Ok`, a crash or restart of the process or the
//! database loses nothing (at-least-once: a job whose consumer died is due
//! again when its lease ends). Acked jobs are deleted. LISTEN/NOTIFY only
//! wakes idle consumers early; it is a hint, never the record, and a
//! delayed job coming due (or a lost notification) is found by the
//! consumer's next poll.
//!
//! The schema is `migrations/` (embedded with [`sqlx::migrate!`]) and is
//! documented in `SCHEMA.md` next to this crate. Migrations run only when
//! asked ([`PgStore::migrate`], or [`PgOptions::migrate`]); a store refuses
//! to start on a schema that is behind or ahead of the code.
//!
//! ```no_run
//! # async fn demo() -> Result<(), echorelay_store_pg::PgError> {
//! use echorelay_store_pg::{PgOptions, PgStore};
//! let store = PgStore::connect_with(
//!     PgOptions::new("postgres://root@127.0.0.1:5432/test").migrate(true),
//! )
//! .await?;
//! # let _ = store;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use echorelay_core::error::StoreError;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

mod accounts;
mod audit;
#[cfg(feature = "backup")]
pub mod backup;
pub mod cache;
mod config;
mod idempotency;
mod keys;
mod log;
pub mod queue;
#[cfg(feature = "racy")]
mod racy;
pub mod roles;
mod row;
mod sessions;
mod snapshot;
mod testing;

pub use cache::KeyCacheConfig;
#[cfg(feature = "racy")]
pub use racy::Racy;

/// The embedded migrations (`migrations/*.sql`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Why a store could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The URL could not be parsed.
    #[error("invalid DATABASE_URL: {0}")]
    Url(#[source] sqlx::Error),
    /// The URL asks for TLS (`sslmode=require`, `verify-ca`,
    /// `verify-full`) and the server does not offer it, or its certificate
    /// was refused.
    #[error(
        "TLS to PostgreSQL failed (the URL's sslmode requires TLS: the server does not offer it, or its certificate was refused): {0}"
    )]
    Tls(#[source] sqlx::Error),
    /// The server could not be reached or refused the login.
    #[error("could not connect to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    /// Running the migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A migration this code needs is not applied: run `migrate`.
    #[error(
        "the database schema is behind this code: migration {version} ({description}) is not applied; run the migrations (PgStore::migrate, or `migrate` in the server binary)"
    )]
    SchemaBehind {
        /// The first missing migration.
        version: i64,
        /// Its description.
        description: String,
    },
    /// The database has a migration this code does not know (written by a
    /// newer version): refuse rather than misread its data.
    #[error(
        "the database schema is newer than this code: migration {version} is applied but unknown to this build"
    )]
    SchemaAhead {
        /// The unknown migration.
        version: i64,
    },
    /// An applied migration differs from this code's copy.
    #[error("migration {version} was changed after it was applied (checksum mismatch)")]
    SchemaModified {
        /// The migration.
        version: i64,
    },
    /// A query during start-up failed.
    #[error("PostgreSQL query failed during start-up: {0}")]
    Query(#[source] sqlx::Error),
    /// A role name outside `[a-z_][a-z0-9_]{0,62}`
    /// ([`PgStore::grant_service_role`]).
    #[error("a role name is 1 to 63 lowercase letters, digits and _, not starting with a digit")]
    InvalidRole,
}

/// How to connect: the URL (TLS modes pass through to sqlx: `sslmode=…`
/// in the URL), the pool size, whether to migrate, and the key cache.
/// Its `Debug` shows the URL with the password redacted
/// ([`redact_url`]).
#[derive(Clone)]
pub struct PgOptions {
    url: String,
    max_connections: u32,
    acquire_timeout: Duration,
    migrate: bool,
    schema: Option<String>,
    key_cache: Option<KeyCacheConfig>,
    application_name: String,
    test_before_acquire: bool,
    audit_keys: Option<Arc<echorelay_core::audit::AuditKeys>>,
    #[cfg(feature = "racy")]
    racy: Option<Racy>,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("migrate", &self.migrate)
            .field("schema", &self.schema)
            .field("key_cache", &self.key_cache)
            .field("application_name", &self.application_name)
            .field("test_before_acquire", &self.test_before_acquire)
            .finish()
    }
}

/// Whether a connection to `host` with `ssl` deserves the start-up
/// warning: the host is not loopback (`localhost`, 127.0.0.0/8, `::1`) nor
/// a Unix socket directory (`/…`), and the TLS mode is not `verify-full`
/// (every other mode, `verify-ca` included, accepts a certificate for
/// another name, or none).
pub(crate) fn unverified_remote(host: &str, ssl: PgSslMode) -> bool {
    if matches!(ssl, PgSslMode::VerifyFull) || host.starts_with('/') {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback());
    !loopback
}

/// `url` with its password replaced by `***` (for logs and `Debug`): core's
/// [`echorelay_core::redact::redact_url`], shared with the Redis crate.
pub use echorelay_core::redact::redact_url;

impl PgOptions {
    /// Options for `url` (`postgres://user@host:port/db?sslmode=…`): a pool
    /// of 10 connections, a 3 s acquire timeout (so an outage is an error
    /// soon, never a hang), no migrations, no cache.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            migrate: false,
            schema: None,
            key_cache: None,
            audit_keys: None,
            application_name: "echorelay".to_owned(),
            test_before_acquire: false,
            #[cfg(feature = "racy")]
            racy: None,
        }
    }

    /// Ping every connection before handing it out (sqlx's default; off
    /// here). Off, a connection the server dropped fails the one query it
    /// is used for (a `Backend` error: authentication fails closed with
    /// `Unavailable`) and is then discarded; on, every query pays one more
    /// round trip (measured in BENCHMARKS.md).
    pub fn test_before_acquire(mut self, yes: bool) -> Self {
        self.test_before_acquire = yes;
        self
    }

    /// The `application_name` the pool's connections report (shown in
    /// `pg_stat_activity`; default `echorelay`).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// Tags every audit event and seals each chain's head under `keys`
    /// ([`echorelay_core::audit::seal_keyed`]), so an edit, a deletion or a
    /// cut-off end made with database access alone fails verification
    /// ([`AuditService::keyed`](echorelay_core::audit::AuditService::keyed)).
    /// `EchoRelay::from_env` sets the keys derived from `SECRET_KEY`.
    pub fn audit_keys(mut self, keys: Arc<echorelay_core::audit::AuditKeys>) -> Self {
        self.audit_keys = Some(keys);
        self
    }

    /// Pool size.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a query waits for a connection before it fails with
    /// [`StoreError::Backend`] (fail closed during an outage).
    pub fn acquire_timeout(mut self, t: Duration) -> Self {
        self.acquire_timeout = t;
        self
    }

    /// Apply pending migrations at connect (otherwise a schema that is
    /// behind is [`PgError::SchemaBehind`]).
    pub fn migrate(mut self, yes: bool) -> Self {
        self.migrate = yes;
        self
    }

    /// Use this schema (the first entry of `search_path`) instead of the
    /// role's default. It must exist.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Serve [`echorelay_core::ports::KeyStore::key_status_by_hash`] from
    /// an in-process cache that keeps S3 (see [`cache`]).
    pub fn key_cache(mut self, config: KeyCacheConfig) -> Self {
        self.key_cache = Some(config);
        self
    }

    /// Test builds only (feature `racy`, never in a deployment): the store
    /// runs `method` as a check and a write, two statements, so racing
    /// callers can both win. The suite must catch it (see [`Racy`]).
    #[cfg(feature = "racy")]
    pub fn racy(mut self, method: Racy) -> Self {
        self.racy = Some(method);
        self
    }

    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions, PgError> {
        let mut o = PgConnectOptions::from_str(&self.url).map_err(PgError::Url)?;
        // sqlx ignores the scheme: `mysql://…` would otherwise be dialled
        // as PostgreSQL (and fail, if at all, as a connection error).
        // (Leading spaces and control characters are ignored, as the URL
        // parser does.)
        let scheme = self
            .url
            .trim_start_matches(|c: char| c <= ' ')
            .split_once(':')
            .map(|(s, _)| s.to_ascii_lowercase());
        if !matches!(scheme.as_deref(), Some("postgres" | "postgresql")) {
            return Err(PgError::Url(sqlx::Error::Configuration(
                format!(
                    "the URL scheme is {:?}, expected postgres:// or postgresql://",
                    scheme.unwrap_or_default()
                )
                .into(),
            )));
        }
        if let Some(schema) = &self.schema {
            o = o.options([("search_path", schema.as_str())]);
        }
        Ok(o.application_name(&self.application_name))
    }
}

/// The Postgres backend: every port of core. Cheap to clone (a pool
/// handle); clones share the pool and the key cache.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    cache: Option<Arc<cache::KeyCache>>,
    audit_keys: Option<Arc<echorelay_core::audit::AuditKeys>>,
    queue_waker: Arc<queue::QueueWaker>,
    _schema: Option<Arc<testing::SchemaGuard>>,
    #[cfg(feature = "racy")]
    racy: Option<Racy>,
}

impl PgStore {
    /// Connects to `url` and checks that the schema is current (no
    /// migrations are run: see [`PgStore::connect_with`]).
    pub async fn connect(url: &str) -> Result<Self, PgError> {
        Self::connect_with(PgOptions::new(url)).await
    }

    /// Connects with `options`: opens one connection now (a wrong URL,
    /// refused TLS or a down server is an error here, not at the first
    /// request), migrates if asked, checks the schema, and starts the key
    /// cache's listener if configured.
    pub async fn connect_with(options: PgOptions) -> Result<Self, PgError> {
        let connect = options.connect_options()?;
        if unverified_remote(connect.get_host(), connect.get_ssl_mode()) {
            tracing::warn!(
                url = %redact_url(&options.url),
                "PostgreSQL on a non-loopback host without sslmode=verify-full: the server's \
                 certificate or name is not checked, so anyone on the path can read and change \
                 the traffic (passwords, key hashes); add ?sslmode=verify-full (and sslrootcert=…)"
            );
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(options.test_before_acquire)
            .connect_with(connect.clone())
            .await
            .map_err(|e| connect_error(e, connect.get_ssl_mode()))?;
        let mut store = Self {
            pool,
            cache: None,
            audit_keys: options.audit_keys.clone(),
            queue_waker: queue::QueueWaker::new(&connect),
            _schema: None,
            #[cfg(feature = "racy")]
            racy: options.racy,
        };
        if options.migrate {
            store.migrate().await?;
        }
        store.check_schema().await?;
        if let Some(config) = options.key_cache {
            store.cache = Some(cache::KeyCache::start(store.pool.clone(), connect, config).await?);
        }
        Ok(store)
    }

    /// This store, tagging audit events under `keys` from now on (see
    /// [`PgOptions::audit_keys`]).
    #[must_use]
    pub fn with_audit_keys(mut self, keys: Arc<echorelay_core::audit::AuditKeys>) -> Self {
        self.audit_keys = Some(keys);
        self
    }

    /// The audit keys this store tags with, if any.
    pub fn audit_keys(&self) -> Option<&Arc<echorelay_core::audit::AuditKeys>> {
        self.audit_keys.as_ref()
    }

    /// Applies every pending migration (idempotent; safe to run from
    /// several processes at once: sqlx takes an advisory lock).
    pub async fn migrate(&self) -> Result<(), PgError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Checks that exactly this code's migrations are applied, unchanged.
    pub async fn check_schema(&self) -> Result<(), PgError> {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables \
             WHERE tablename = '_sqlx_migrations' AND schemaname = current_schema())",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(PgError::Query)?;
        let applied: Vec<(i64, Vec<u8>, bool)> = if exists {
            sqlx::query_as(
                "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(&self.pool)
            .await
            .map_err(PgError::Query)?
        } else {
            Vec::new()
        };
        for (version, checksum, success) in &applied {
            match MIGRATOR.iter().find(|m| m.version == *version) {
                None => return Err(PgError::SchemaAhead { version: *version }),
                Some(m) if m.checksum.as_ref() != checksum.as_slice() || !success => {
                    return Err(PgError::SchemaModified { version: *version });
                }
                Some(_) => {}
            }
        }
        for m in MIGRATOR.iter() {
            if !m.migration_type.is_down_migration() && !applied.iter().any(|a| a.0 == m.version) {
                return Err(PgError::SchemaBehind {
                    version: m.version,
                    description: m.description.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The connection pool (for an embedder's own queries, health checks
    /// and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The key cache, if configured.
    pub fn key_cache(&self) -> Option<&cache::KeyCache> {
        self.cache.as_deref()
    }
}

fn connect_error(e: sqlx::Error, ssl_mode: PgSslMode) -> PgError {
    match e {
        sqlx::Error::Tls(_) => PgError::Tls(e),
        // A refused certificate (or any failed handshake) comes from rustls
        // as an I/O error of kind `InvalidData`; nothing else on the
        // connect path reports that kind.
        sqlx::Error::Io(ref io)
            if io.kind() == std::io::ErrorKind::InvalidData
                && !matches!(ssl_mode, PgSslMode::Disable | PgSslMode::Allow) =>
        {
            PgError::Tls(e)
        }
        sqlx::Error::Configuration(_) => PgError::Url(e),
        other => PgError::Connect(other),
    }
}

/// Maps a driver error of a query on `kind` records into core's categories:
/// a unique violation is `AlreadyExists { kind }`, a foreign-key violation
/// is `NotFound` of the referenced record, anything else `Backend`.
pub(crate) fn db_err(kind: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| {
        if let sqlx::Error::Database(d) = &e {
            match d.code().as_deref() {
                Some("23505") => return StoreError::AlreadyExists { kind },
                Some("23503") => {
                    let c = d.constraint().unwrap_or_default();
                    let kind = if c.contains("line") {
                        "line"
                    } else if c.contains("user") {
                        "account"
                    } else {
                        "project"
                    };
                    return StoreError::NotFound { kind };
                }
                _ => {}
            }
        }
        StoreError::backend(e)
    }
}

/// A driver error as `Backend` (no record kind involved).
pub(crate) fn backend(e: sqlx::Error) -> StoreError {
    StoreError::backend(e)
}

/// Clamps a page size to what `LIMIT` takes.
pub(crate) fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub use testing::{TestDatabase, test_database};

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16 (9c): the password never shows in `Debug`.
    #[test]
    fn debug_and_redact_url_hide_the_password() {
        for url in [
            "postgres://relay:hunter2-pw@db.example.com:5432/relay?sslmode=verify-full",
            "postgresql://relay:hunter2-pw@[2001:db8::1]/relay",
            "postgres://relay@db.example.com/relay?sslmode=require&password=hunter2-pw",
            "postgres://relay:hunter2-pw@db.example.com/relay?PASSWORD=hunter2-pw&x=1",
            "postgres://relay:hunter2-pw:more@db.example.com/relay",
        ] {
            let options = PgOptions::new(url).key_cache(KeyCacheConfig::default());
            let debug = format!("{options:?}");
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(debug.contains("relay"), "the rest is shown: {debug}");
            assert!(!redact_url(url).contains("hunter2"));
        }
        assert_eq!(
            redact_url("postgres://u:p@h:1/d?sslmode=require"),
            "postgres://u:***@h:1/d?sslmode=require"
        );
        assert_eq!(redact_url("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(
            redact_url("postgres:///d?host=/tmp"),
            "postgres:///d?host=/tmp"
        );
    }

    /// Issue 16 (9d): which connections get the start-up warning.
    #[test]
    fn a_remote_host_without_verify_full_is_warned_about() {
        for mode in [
            PgSslMode::Disable,
            PgSslMode::Allow,
            PgSslMode::Prefer,
            PgSslMode::Require,
            PgSslMode::VerifyCa,
        ] {
            assert!(unverified_remote("db.example.com", mode), "{mode:?}");
            assert!(unverified_remote("10.0.0.5", mode));
            assert!(unverified_remote("[2001:db8::1]", mode));
            for local in [
                "localhost",
                "LOCALHOST",
                "127.0.0.1",
                "127.1.2.3",
                "::1",
                "[::1]",
                "/var/run/postgresql",
            ] {
                assert!(!unverified_remote(local, mode), "{local} {mode:?}");
            }
        }
        assert!(!unverified_remote("db.example.com", PgSslMode::VerifyFull));
        // From a URL, as connect_with reads it.
        let o = PgOptions::new("postgres://u@db.example.com/d?sslmode=require")
            .connect_options()
            .unwrap();
        assert!(unverified_remote(o.get_host(), o.get_ssl_mode()));
        let o = PgOptions::new("postgres://u@db.example.com/d?sslmode=verify-full")
            .connect_options()
            .unwrap();
        assert!(!unverified_remote(o.get_host(), o.get_ssl_mode()));
    }
}
