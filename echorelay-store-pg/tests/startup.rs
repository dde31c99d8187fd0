//! A wrong or unusable `DATABASE_URL` is a clear, typed error when the
//! store starts (`PgStore::connect_with`), never at the first request: a
//! malformed URL, nothing listening, an unknown database or role, TLS that
//! the URL requires but cannot get, and a schema that is behind, ahead of,
//! or different from this build's migrations.
//!
//! The tests that need no server (malformed URLs, a closed port, a stub
//! that refuses TLS) always run; the others skip without `DATABASE_URL`
//! (and fail with `ECHORELAY_REQUIRE_SERVICES=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use echorelay_store_pg::{PgError, PgOptions, PgStore, test_database};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `url` with one more query parameter.
fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// `url` with its path (the database name) replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// `url` with its user replaced by `user` (no password).
fn with_user(url: &str, user: &str) -> String {
    let authority_start = url.find("://").map(|i| i + 3).expect("a URL");
    let rest = &url[authority_start..];
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    format!("{}{user}@{host}", &url[..authority_start])
}

fn random_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        hex::encode(&echorelay_core::ids::ProjectId::random().as_bytes()[..8])
    )
}

/// The schema a store works in (the first entry of its `search_path`).
async fn schema_of(store: &PgStore) -> String {
    sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// How many tables `schema` has.
async fn table_count(c: &mut PgConnection, schema: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = $1")
        .bind(schema)
        .fetch_one(c)
        .await
        .unwrap()
}

/// Drops a schema this test created itself, also when the test fails.
struct DropSchema {
    url: String,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Drop runs on the test's runtime: clean up from a thread with a
        // runtime of its own.
        let t = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut c = PgConnection::connect(&url).await.unwrap();
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut c)
                    .await
                    .unwrap();
                let _ = c.close().await;
            });
        });
        let _ = t.join();
    }
}

/// Malformed URLs fail before any connection attempt, as `PgError::Url`,
/// with a message that says so, and never echo a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_urls_are_url_errors() {
    let cases: &[(&str, &str)] = &[
        ("postgres://root@127.0.0.1:notaport/test", "port"),
        ("postgres://root:hunter2@127.0.0.1:notaport/test", "port"),
        ("not a url", "invalid DATABASE_URL"),
        ("mysql://x", "mysql"),
        ("mysql://root:hunter2@127.0.0.1:5432/test", "mysql"),
        (
            "postgres://root@127.0.0.1:5432/test?sslmode=sometimes",
            "sometimes",
        ),
    ];
    for (url, mentions) in cases {
        let start = Instant::now();
        let err =
            PgStore::connect_with(PgOptions::new(*url).acquire_timeout(Duration::from_secs(2)))
                .await
                .expect_err(url);
        let shown = err.to_string();
        assert!(matches!(err, PgError::Url(_)), "{url}: {err:?}");
        assert!(
            shown.starts_with("invalid DATABASE_URL: "),
            "{url}: {shown}"
        );
        assert!(
            shown.contains(mentions),
            "{url}: {shown:?} lacks {mentions:?}"
        );
        assert!(
            !format!("{shown} {err:?}").contains("hunter2"),
            "{url}: the password is echoed: {shown}"
        );
        // Refused while parsing, not after a connection attempt.
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{url}: took {:?}",
            start.elapsed()
        );
    }
}

/// Nothing listens on the port: `PgError::Connect` once the acquire
/// timeout has passed (sqlx retries a refused connection until then), not
/// a hang and not a later failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_connect_error_within_the_timeout() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("postgres://root:hunter2@127.0.0.1:{port}/test");
    let start = Instant::now();
    let err = PgStore::connect_with(PgOptions::new(&url).acquire_timeout(Duration::from_secs(2)))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, PgError::Connect(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("could not connect to PostgreSQL"),
        "{err}"
    );
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

/// The server answers, but the database or the role does not exist:
/// `PgError::Connect` carrying the server's error (SQLSTATE 3D000 and
/// 28000), whose message names what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_database_or_role_is_a_connect_error() {
    let Some(db) = test_database().await else {
        return;
    };
    let name = random_name("er_no_such_db");
    let role = random_name("er_no_such_role");
    for (url, code, missing) in [
        (with_database(db.url(), &name), "3D000", &name),
        (with_user(db.url(), &role), "28000", &role),
    ] {
        let start = Instant::now();
        let err =
            PgStore::connect_with(PgOptions::new(&url).acquire_timeout(Duration::from_secs(2)))
                .await
                .unwrap_err();
        let PgError::Connect(sqlx::Error::Database(d)) = &err else {
            panic!("{url}: expected Connect(Database), got {err:?}");
        };
        assert_eq!(d.code().as_deref(), Some(code), "{url}: {d}");
        let shown = err.to_string();
        assert!(
            shown.starts_with("could not connect to PostgreSQL")
                && shown.contains(missing.as_str()),
            "{url}: {shown}"
        );
        // The server's refusal is final: no retrying until the timeout.
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{url}: {:?}",
            start.elapsed()
        );
    }
}

/// `sslmode=require` against a server that does not offer TLS (a stub that
/// answers the SSLRequest with `N`): `PgError::Tls`, and no plaintext
/// fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_tls_that_the_server_does_not_offer_is_a_tls_error() {
    for mode in ["require", "verify-ca", "verify-full"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stub = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 8];
            s.read_exact(&mut request).await.unwrap();
            s.write_all(b"N").await.unwrap();
            // Whatever the client sends next (a plaintext startup message
            // would be a fallback): read until it closes.
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
            (request, rest)
        });
        let url = format!("postgres://root@127.0.0.1:{port}/test?sslmode={mode}");
        let start = Instant::now();
        let err =
            PgStore::connect_with(PgOptions::new(&url).acquire_timeout(Duration::from_secs(5)))
                .await
                .unwrap_err();
        assert!(matches!(err, PgError::Tls(_)), "{mode}: {err:?}");
        assert!(err.to_string().contains("TLS"), "{mode}: {err}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{mode}: took {:?}",
            start.elapsed()
        );
        let (request, rest) = stub.await.unwrap();
        // The SSLRequest: length 8, code 80877103.
        assert_eq!(request, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], "{mode}");
        assert!(
            rest.is_empty(),
            "{mode}: the client sent {} bytes in plaintext after the refusal",
            rest.len()
        );
    }
}

/// Against the real server (ssl=on, self-signed certificate): `disable`
/// connects in plaintext, `prefer` and `require` connect over TLS (they do
/// not check the certificate, as in libpq).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_prefer_and_require_connect_to_the_real_server() {
    let Some(db) = test_database().await else {
        return;
    };
    let fresh = db.fresh_store().await.unwrap();
    let schema = schema_of(&fresh).await;
    for (mode, tls) in [("disable", false), ("prefer", true), ("require", true)] {
        let url = with_param(db.url(), &format!("sslmode={mode}"));
        let store = PgStore::connect_with(
            PgOptions::new(&url)
                .schema(&schema)
                .acquire_timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
        let ssl: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(ssl, tls, "sslmode={mode}");
        store.check_schema().await.unwrap();
    }
}

/// `verify-full` and `verify-ca` against the real server, whose certificate
/// is self-signed (Debian's snakeoil): the certificate is refused, and
/// that is `PgError::Tls` naming the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_modes_refuse_the_self_signed_certificate() {
    let Some(db) = test_database().await else {
        return;
    };
    for mode in ["verify-full", "verify-ca"] {
        let url = with_param(db.url(), &format!("sslmode={mode}"));
        let start = Instant::now();
        let err =
            PgStore::connect_with(PgOptions::new(&url).acquire_timeout(Duration::from_secs(5)))
                .await
                .unwrap_err();
        assert!(matches!(err, PgError::Tls(_)), "{mode}: {err:?}");
        let shown = err.to_string();
        assert!(shown.contains("certificate"), "{mode}: {shown}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{mode}: took {:?}",
            start.elapsed()
        );
    }
}

/// A schema without migrations: `SchemaBehind` naming migration 1 (no
/// tables are created behind the operator's back); with `migrate(true)`
/// the store starts, and afterwards it starts without migrating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_without_migrations_is_behind_until_migrated() {
    let Some(db) = test_database().await else {
        return;
    };
    let schema = random_name("er_startup");
    let mut c = PgConnection::connect(db.url()).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut c)
        .await
        .unwrap();
    let _guard = DropSchema {
        url: db.url().to_owned(),
        schema: schema.clone(),
    };
    let err = PgStore::connect_with(PgOptions::new(db.url()).schema(&schema))
        .await
        .unwrap_err();
    let PgError::SchemaBehind {
        version,
        description,
    } = &err
    else {
        panic!("expected SchemaBehind, got {err:?}");
    };
    assert_eq!((*version, description.as_str()), (1, "schema"));
    let shown = err.to_string();
    assert!(
        shown.contains("behind") && shown.contains("migration 1 (schema)"),
        "{shown}"
    );
    assert_eq!(
        table_count(&mut c, &schema).await,
        0,
        "a refused start created tables"
    );

    let store = PgStore::connect_with(PgOptions::new(db.url()).schema(&schema).migrate(true))
        .await
        .unwrap();
    store.check_schema().await.unwrap();
    assert_eq!(schema_of(&store).await, schema);
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(applied, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(table_count(&mut c, &schema).await > 1);

    // Now current: a plain connect (no migrate) starts.
    let again = PgStore::connect_with(PgOptions::new(db.url()).schema(&schema))
        .await
        .unwrap();
    again.check_schema().await.unwrap();
    let _ = c.close().await;
}

/// A migration this build does not know (written by a newer version):
/// `SchemaAhead`, and `migrate` does not paper over it. An applied
/// migration whose checksum differs, or that failed: `SchemaModified`.
/// Restored, the same schema starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_ahead_or_modified_is_refused() {
    let Some(db) = test_database().await else {
        return;
    };
    let fresh = db.fresh_store().await.unwrap();
    let schema = schema_of(&fresh).await;
    let pool = fresh.pool();
    let connect = |migrate: bool| {
        PgStore::connect_with(PgOptions::new(db.url()).schema(&schema).migrate(migrate))
    };

    const FUTURE: i64 = 99_999_999_999_999;
    sqlx::query(
        "INSERT INTO _sqlx_migrations \
         (version, description, installed_on, success, checksum, execution_time) \
         VALUES ($1, 'from the future', now(), true, '\\x00', 0)",
    )
    .bind(FUTURE)
    .execute(pool)
    .await
    .unwrap();
    let err = connect(false).await.unwrap_err();
    assert!(
        matches!(err, PgError::SchemaAhead { version } if version == FUTURE),
        "{err:?}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains("newer") && shown.contains(&FUTURE.to_string()),
        "{shown}"
    );
    // A running store's own check says the same.
    assert!(matches!(
        fresh.check_schema().await,
        Err(PgError::SchemaAhead { version }) if version == FUTURE
    ));
    // Migrating does not make an unknown migration acceptable.
    let err = connect(true).await.unwrap_err();
    assert!(
        matches!(
            err,
            PgError::Migrate(sqlx::migrate::MigrateError::VersionMissing(v)) if v == FUTURE
        ),
        "{err:?}"
    );
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(FUTURE)
        .execute(pool)
        .await
        .unwrap();
    connect(false).await.unwrap();

    // A modified migration.
    let checksum: Vec<u8> =
        sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = 1")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(checksum.len(), 48, "a SHA-384 checksum");
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 1")
        .execute(pool)
        .await
        .unwrap();
    let err = connect(false).await.unwrap_err();
    assert!(
        matches!(err, PgError::SchemaModified { version: 1 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("migration 1 was changed"), "{err}");
    let err = connect(true).await.unwrap_err();
    assert!(
        matches!(
            err,
            PgError::Migrate(sqlx::migrate::MigrateError::VersionMismatch(1))
        ),
        "{err:?}"
    );

    // A migration recorded as failed (right checksum).
    sqlx::query("UPDATE _sqlx_migrations SET checksum = $1, success = false WHERE version = 1")
        .bind(&checksum)
        .execute(pool)
        .await
        .unwrap();
    let err = connect(false).await.unwrap_err();
    assert!(
        matches!(err, PgError::SchemaModified { version: 1 }),
        "{err:?}"
    );
    let err = connect(true).await.unwrap_err();
    assert!(
        matches!(err, PgError::Migrate(sqlx::migrate::MigrateError::Dirty(1))),
        "{err:?}"
    );

    sqlx::query("UPDATE _sqlx_migrations SET success = true WHERE version = 1")
        .execute(pool)
        .await
        .unwrap();
    connect(false).await.unwrap().check_schema().await.unwrap();
    fresh.check_schema().await.unwrap();
}

/// `url` with a password added to its user info.
fn with_password(url: &str, password: &str) -> String {
    let authority_start = url.find("://").map(|i| i + 3).expect("a URL");
    let rest = &url[authority_start..];
    match rest.split_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{}{user}:{password}@{host}", &url[..authority_start])
        }
        None => format!("{}postgres:{password}@{rest}", &url[..authority_start]),
    }
}

/// Issue 16 (9c): neither the options nor a store with the key cache (whose
/// listener keeps its own connect options) print the database password in
/// `Debug`. The test server trusts its clients, so the password is only
/// carried, never checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_of_the_options_and_a_cached_store_hides_the_password() {
    let Some(db) = test_database().await else {
        return;
    };
    let schema = random_name("er_debug");
    let mut c = PgConnection::connect(db.url()).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut c)
        .await
        .unwrap();
    let _guard = DropSchema {
        url: db.url().to_owned(),
        schema: schema.clone(),
    };
    let url = with_password(db.url(), "hunter2-debug-secret");
    let options = PgOptions::new(&url)
        .schema(&schema)
        .migrate(true)
        .key_cache(echorelay_store_pg::KeyCacheConfig::default());
    assert!(!format!("{options:?}").contains("hunter2"));
    let store = PgStore::connect_with(options).await.unwrap();
    let debug = format!("{store:?}");
    assert!(debug.contains("KeyCache"), "{debug}");
    assert!(!debug.contains("hunter2"), "{debug}");
    let _ = c.close().await;
}
