//! The whole backup target suite, on a temporary directory (always) and on
//! the S3 server of `ECHORELAY_S3_URL` (each check under a random key
//! prefix of its own, emptied afterwards; skipped with one line when the
//! variable is unset and `ECHORELAY_REQUIRE_SERVICES` is not 1).
//!
//! moto, the CI's server, honours `If-None-Match: *` but checks and writes
//! without a lock, so two racing creates can both win there (seen once in
//! about 120 strict runs of the race check's 5 rounds of 8 racers, moto
//! 5.2.6). CI says so with `ECHORELAY_S3_RACY_CREATE=1`, and the race check
//! runs with `CreateRaces::ServerIsRacy`: weaker assertions, and a printed
//! count of the rounds with more than one winner. Against Amazon S3 or
//! MinIO, leave it unset: the check is strict.
#![allow(clippy::expect_used)]

mod fs {
    echorelay_testkit::backup_target_tests!(async {
        echorelay_store_s3::fresh_fs_target().expect("a target in a temporary directory")
    });
}

mod s3 {
    use echorelay_testkit::backup::{BackupHarness, CreateRaces};

    echorelay_testkit::backup_target_tests!(optional async {
        let s3 = echorelay_store_s3::test_s3().await?;
        let target = s3.fresh_target().expect("a target on a fresh prefix");
        let races = if s3.server_is_racy() {
            CreateRaces::ServerIsRacy
        } else {
            CreateRaces::OneWins
        };
        Some(BackupHarness::new(target).with_create_races(races))
    });
}
