//! Test support: a fresh target per test, on the S3 server of
//! `ECHORELAY_S3_URL` under a random key prefix, or in a new temporary
//! directory; and the skip rule for machines without an S3 server.
//!
//! - `ECHORELAY_S3_URL` set (e.g. `s3://echorelay-test`, with the `AWS_*`
//!   variables of the server, as `.ci/run` sets them after
//!   `scripts/s3_server.sh`) and the bucket reachable: tests run.
//! - `ECHORELAY_REQUIRE_SERVICES=1` (CI): an unset `ECHORELAY_S3_URL` or an
//!   unreachable bucket fails the test.
//! - Otherwise (a laptop without an S3 server): tests skip, and the process
//!   prints one line saying so.
//!
//! - `ECHORELAY_S3_RACY_CREATE=1`: the server's conditional create is
//!   not atomic under races (moto), see [`TestS3::server_is_racy`].
//!
//! The directory targets need nothing and always run.

use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use echorelay_core::backup::{BackupError, BackupTarget};
use rand::RngCore;

use crate::{MIN_S3_PART_SIZE, S3Options, S3Target};

/// The part size of the test S3 targets: S3's minimum, 5 MiB.
pub const TEST_S3_PART_SIZE: usize = MIN_S3_PART_SIZE;
/// The part size of the test directory targets: 256 KiB.
pub const TEST_FS_PART_SIZE: usize = 256 * 1024;

/// An S3 server the tests may use.
#[derive(Debug, Clone)]
pub struct TestS3 {
    url: String,
}

static SKIP_NOTICE: Once = Once::new();

/// The test server from `ECHORELAY_S3_URL`, or `None` (skip) when it is
/// unset or unreachable and `ECHORELAY_REQUIRE_SERVICES` is not `1`.
///
/// # Panics
///
/// When services are required and the server is unset or unreachable: in
/// CI that is a failure, not a skip.
pub async fn test_s3() -> Option<TestS3> {
    let required = std::env::var("ECHORELAY_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    let url = match std::env::var("ECHORELAY_S3_URL") {
        Ok(u) if !u.is_empty() => u,
        _ if required => panic!("ECHORELAY_REQUIRE_SERVICES=1 but ECHORELAY_S3_URL is not set"),
        _ => {
            SKIP_NOTICE.call_once(|| {
                eprintln!(
                    "echorelay-store-s3: ECHORELAY_S3_URL is not set; S3 tests skipped \
                     (scripts/s3_server.sh starts a local server)"
                );
            });
            return None;
        }
    };
    let s3 = TestS3 { url };
    match s3.reachable().await {
        Ok(()) => Some(s3),
        Err(e) if required => {
            panic!(
                "ECHORELAY_REQUIRE_SERVICES=1 but the S3 bucket of ECHORELAY_S3_URL is unusable: {e}"
            )
        }
        Err(e) => {
            SKIP_NOTICE.call_once(|| {
                eprintln!("echorelay-store-s3: S3 unusable ({e}); S3 tests skipped");
            });
            None
        }
    }
}

impl TestS3 {
    /// The server's bucket URL (`ECHORELAY_S3_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether `ECHORELAY_S3_RACY_CREATE=1` says the server's conditional
    /// create is not atomic under races (moto's is not: it looks the key
    /// up, then writes, without a lock). The suite then runs its race
    /// check with `CreateRaces::ServerIsRacy`. Unset (the default), the
    /// race check is strict, as it must be for Amazon S3 or MinIO.
    pub fn server_is_racy(&self) -> bool {
        std::env::var("ECHORELAY_S3_RACY_CREATE").is_ok_and(|v| v == "1")
    }

    async fn reachable(&self) -> Result<(), BackupError> {
        let t = self.fresh_target_with(|o| o.retry(1, Duration::from_secs(5)))?;
        match tokio::time::timeout(Duration::from_secs(10), t.list(None)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(BackupError::Unavailable("no answer within 10 s".to_owned())),
        }
    }

    /// A target under a new random prefix of the bucket (`er-test-` and 16
    /// hex digits), with parts of [`TEST_S3_PART_SIZE`], 2 in flight.
    pub fn fresh_target(&self) -> Result<S3Target, BackupError> {
        self.fresh_target_with(|o| o)
    }

    /// [`TestS3::fresh_target`] with options adjusted by `f`.
    pub fn fresh_target_with(
        &self,
        f: impl FnOnce(S3Options) -> S3Options,
    ) -> Result<S3Target, BackupError> {
        let url = format!("{}/{}", self.url.trim_end_matches('/'), random_name());
        S3Target::open(f(S3Options::new(url)
            .part_size(TEST_S3_PART_SIZE)
            .parts_in_flight(2)))
    }
}

/// A target in a new temporary directory, with parts of
/// [`TEST_FS_PART_SIZE`], 2 in flight; the directory is removed with the
/// target's last clone.
pub fn fresh_fs_target() -> Result<S3Target, BackupError> {
    fresh_fs_target_with(|o| o)
}

/// [`fresh_fs_target`] with options adjusted by `f`.
pub fn fresh_fs_target_with(
    f: impl FnOnce(S3Options) -> S3Options,
) -> Result<S3Target, BackupError> {
    let dir = std::env::temp_dir().join(format!("echorelay-{}", random_name()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| BackupError::Unavailable(format!("creating {}: {e}", dir.display())))?;
    let guard = Arc::new(DirGuard { dir: dir.clone() });
    let url = url::Url::from_directory_path(&dir)
        .map_err(|()| BackupError::Config(format!("{} is not absolute", dir.display())))?;
    let mut target = S3Target::open(f(S3Options::new(url.as_str())
        .part_size(TEST_FS_PART_SIZE)
        .parts_in_flight(2)))?;
    target._cleanup = Some(guard);
    Ok(target)
}

/// `er-test-` and 16 random hex digits.
fn random_name() -> String {
    let mut b = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!("er-test-{}", hex::encode(b))
}

/// Removes a test directory when the last target using it goes away.
#[derive(Debug)]
pub(crate) struct DirGuard {
    dir: PathBuf,
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
