//! The whole conformance suite again, with the verification cache on: the
//! cache must change nothing the suite can observe (S3 in particular:
//! `keys::revoke_is_effective_on_the_next_request_in_every_process`).
#![allow(clippy::expect_used)]

echorelay_testkit::conformance_tests!(optional async {
    let db = echorelay_store_pg::test_database().await?;
    Some(
        db.fresh_store_with(|o| o.key_cache(echorelay_store_pg::KeyCacheConfig::default()))
            .await
            .expect("a fresh, migrated schema with a key cache"),
    )
});
