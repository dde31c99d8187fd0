//! The whole conformance suite on the deployment's split: sessions,
//! challenges and throttle counters on Redis, everything else on Postgres
//! (`Composed` of a fresh schema and a fresh Redis prefix per check).
//! Skips with one line when either service is unreachable and
//! `ECHORELAY_REQUIRE_SERVICES` is not 1.
#![allow(clippy::expect_used)]

echorelay_testkit::conformance_tests!(optional async {
    let db = echorelay_store_pg::test_database().await?;
    let redis = echorelay_store_redis::test_redis().await?;
    let sessions = redis.fresh_sessions().await;
    Some(echorelay_core::ports::Composed::new(
        db.fresh_store().await.expect("a fresh, migrated schema"),
        sessions.clone(),
        sessions,
    ))
});
