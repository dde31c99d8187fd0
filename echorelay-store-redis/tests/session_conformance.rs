//! The whole conformance suite with sessions, challenges and throttle
//! counters on Redis and everything else in memory: `Composed` of a
//! `MemStore` and a `RedisSessions` on a fresh prefix per check. Skips with
//! one line when Redis is unreachable and `ECHORELAY_REQUIRE_SERVICES` is
//! not 1.

echorelay_testkit::conformance_tests!(optional async {
    let redis = echorelay_store_redis::test_redis().await?;
    let sessions = redis.fresh_sessions().await;
    Some(echorelay_core::ports::Composed::new(
        echorelay_store_mem::MemStore::new(),
        sessions.clone(),
        sessions,
    ))
});
