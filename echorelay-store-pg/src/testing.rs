//! Test support: a fresh, migrated schema per test (so tests run in
//! parallel and leave nothing behind), and the skip rule for machines
//! without Postgres.
//!
//! - `DATABASE_URL` set and reachable: tests run.
//! - `ECHORELAY_REQUIRE_SERVICES=1` (CI): an unset or unreachable
//!   `DATABASE_URL` fails the test.
//! - Otherwise (a laptop without Postgres): tests skip, and the process
//!   prints one line saying so.

use std::sync::Once;

use rand::RngCore;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::{PgError, PgOptions, PgStore};

/// A Postgres server the tests may use.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    url: String,
}

static SKIP_NOTICE: Once = Once::new();

/// The test database from `DATABASE_URL`, or `None` (skip) when it is
/// unset or unreachable and `ECHORELAY_REQUIRE_SERVICES` is not `1`.
///
/// # Panics
///
/// When services are required and the database is unset or unreachable:
/// in CI that is a failure, not a skip.
pub async fn test_database() -> Option<TestDatabase> {
    let required = std::env::var("ECHORELAY_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    let url = match std::env::var("DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ if required => {
            panic!("ECHORELAY_REQUIRE_SERVICES=1 but DATABASE_URL is not set")
        }
        _ => {
            SKIP_NOTICE.call_once(|| {
                eprintln!("echorelay-store-pg: DATABASE_URL is not set; Postgres tests skipped");
            });
            return None;
        }
    };
    match PgConnection::connect(&url).await {
        Ok(c) => {
            let _ = c.close().await;
            Some(TestDatabase { url })
        }
        Err(e) if required => {
            panic!("ECHORELAY_REQUIRE_SERVICES=1 but Postgres at DATABASE_URL is unreachable: {e}")
        }
        Err(e) => {
            SKIP_NOTICE.call_once(|| {
                eprintln!("echorelay-store-pg: Postgres unreachable ({e}); Postgres tests skipped");
            });
            None
        }
    }
}

impl TestDatabase {
    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A store on a new schema of its own, migrated; the schema is dropped
    /// when the last clone of the store is dropped.
    pub async fn fresh_store(&self) -> Result<PgStore, PgError> {
        self.fresh_store_with(|o| o).await
    }

    /// [`TestDatabase::fresh_store`] with options adjusted by `f` (pool
    /// size, key cache). The schema and migration options are set here.
    pub async fn fresh_store_with(
        &self,
        f: impl FnOnce(PgOptions) -> PgOptions,
    ) -> Result<PgStore, PgError> {
        let schema = self.create_schema().await?;
        let guard = std::sync::Arc::new(SchemaGuard {
            url: self.url.clone(),
            schema: schema.clone(),
        });
        let options = f(PgOptions::new(&self.url)).schema(&schema).migrate(true);
        let mut store = PgStore::connect_with(options).await?;
        store._schema = Some(guard);
        Ok(store)
    }

    /// Another store on the same schema as `store` (its own pool and, with
    /// `f`, its own cache): a second process.
    pub async fn another_process(
        &self,
        store: &PgStore,
        f: impl FnOnce(PgOptions) -> PgOptions,
    ) -> Result<PgStore, PgError> {
        self.another_process_at(store, &self.url, f).await
    }

    /// [`TestDatabase::another_process`] connecting through `url` (for
    /// example a proxy the test can cut to simulate an outage).
    pub async fn another_process_at(
        &self,
        store: &PgStore,
        url: &str,
        f: impl FnOnce(PgOptions) -> PgOptions,
    ) -> Result<PgStore, PgError> {
        let schema = store
            ._schema
            .as_ref()
            .map(|g| g.schema.clone())
            .unwrap_or_else(|| "public".to_owned());
        let mut other = PgStore::connect_with(f(PgOptions::new(url)).schema(&schema)).await?;
        other._schema = store._schema.clone();
        Ok(other)
    }

    async fn create_schema(&self) -> Result<String, PgError> {
        let mut b = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut b);
        let schema = format!("er_test_{}", hex::encode(b));
        let mut c = PgConnection::connect(&self.url)
            .await
            .map_err(PgError::Connect)?;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut c)
            .await
            .map_err(PgError::Query)?;
        let _ = c.close().await;
        Ok(schema)
    }
}

/// Drops a test schema when the last store using it goes away.
#[derive(Debug)]
pub(crate) struct SchemaGuard {
    url: String,
    pub(crate) schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let url = self.url.clone();
        let schema = self.schema.clone();
        // Drop runs inside the test's runtime; a thread with its own
        // runtime does the (blocking) cleanup.
        let t = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut c) = PgConnection::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&mut c)
                        .await;
                    let _ = c.close().await;
                }
            });
        });
        let _ = t.join();
    }
}
