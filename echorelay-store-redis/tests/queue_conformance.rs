//! The whole queue suite against Redis: one test per check, each on a
//! random key prefix of its own (deleted afterwards). Skips with one line
//! when `REDIS_URL` is unset and `ECHORELAY_REQUIRE_SERVICES` is not 1.
#![allow(clippy::expect_used)]

echorelay_testkit::queue_tests!(optional async {
    let redis = echorelay_store_redis::test_redis().await?;
    Some(redis.fresh_queue().await.expect("a queue on a fresh prefix"))
});
