//! The whole queue suite (`echorelay_testkit::queue_tests!`) against
//! Postgres: one test per check, each on a fresh schema of its own
//! (dropped afterwards). Skips with one line when `DATABASE_URL` is unset
//! and `ECHORELAY_REQUIRE_SERVICES` is not 1.
#![allow(clippy::expect_used)]

echorelay_testkit::queue_tests!(optional async {
    let db = echorelay_store_pg::test_database().await?;
    Some(db.fresh_store().await.expect("a fresh, migrated schema"))
});
