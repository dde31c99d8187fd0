//! The backup target port: an object store that backups are written to.
//!
//! A target stores opaque, already encrypted objects under
//! [`ObjectPath`]s. It knows nothing of what a backup is: core writes the
//! objects of one backup (each encrypted before it reaches the target,
//! S12) and then its manifest, last, with [`BackupTarget::create`] — a
//! conditional create that fails if the object exists. A backup without a
//! manifest is incomplete and is never listed as a backup nor restored.
//!
//! ## Contract (checked by `echorelay_testkit::backup_target_tests!`)
//!
//! - [`BackupTarget::create`] stores the object only if no object is at
//!   the path; otherwise [`BackupError::AlreadyExists`] and the existing
//!   object is unchanged. Two racing creates of one path: exactly one wins.
//! - [`BackupTarget::upload`] streams an object of any size: the writer
//!   holds at most the target's stated [`BackupTarget::buffer_bound`]
//!   bytes at once. The object becomes visible only at
//!   [`ObjectWriter::finish`]; before it (and after [`ObjectWriter::abort`]
//!   or a drop) nothing is at the path. An upload replaces any object at
//!   the path (uploads go to fresh, unique paths; the manifest, written by
//!   `create`, is what makes them part of a backup).
//! - [`BackupTarget::get`] streams the object back in chunks, byte for
//!   byte; a missing object is [`BackupError::NotFound`].
//! - [`BackupTarget::list`] returns every object under a prefix (a path
//!   that starts with it, segment-wise), with its size, sorted by path.
//! - [`BackupTarget::delete`] removes an object; deleting a missing one is
//!   `Ok` (idempotent, as S3 is).

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

/// Errors of a backup target or of a backup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// An object path is malformed (see [`ObjectPath`]).
    #[error("invalid object path: {0}")]
    InvalidPath(&'static str),
    /// A conditional create found an object at the path.
    #[error("an object already exists at {0}")]
    AlreadyExists(ObjectPath),
    /// No object at the path.
    #[error("no object at {0}")]
    NotFound(ObjectPath),
    /// The target's location or configuration is unusable (wrong URL,
    /// unknown scheme, bad options). Says what to fix; holds no credential.
    #[error("backup target misconfigured: {0}")]
    Config(String),
    /// The target refused the credentials or the bucket (wrong bucket,
    /// wrong keys, no permission).
    #[error("backup target refused access: {0}")]
    Access(String),
    /// The target could not be reached or failed mid-operation (network,
    /// server error, full disk). The operation may be retried.
    #[error("backup target unavailable: {0}")]
    Unavailable(String),
    /// `ECHORELAY_BACKUP_RECIPIENTS` is missing or malformed.
    #[error("backup recipients: {0}")]
    Recipients(String),
    /// The identity file is missing or malformed.
    #[error("backup identity: {0}")]
    Identity(String),
    /// Encryption could not run; nothing was uploaded in plaintext.
    #[error("backup encryption failed: {0}")]
    Encryption(String),
    /// None of the identities decrypts this object: the backup was made
    /// for other recipients.
    #[error("{0} is not encrypted to any of the given identities")]
    WrongIdentity(ObjectPath),
    /// An object or manifest does not verify: truncated, altered, swapped,
    /// or a manifest that does not authenticate.
    #[error("{path} does not verify: {problem}")]
    Corrupt {
        /// The object.
        path: ObjectPath,
        /// What is wrong (no content of the object).
        problem: String,
    },
    /// The backup was made by a newer echorelay (its format version is
    /// unknown here): restore it with that version or newer.
    #[error(
        "backup format {found} is newer than this echorelay reads ({supported}); use a newer echorelay"
    )]
    UnsupportedFormat {
        /// The format the manifest names.
        found: String,
        /// The format this build reads.
        supported: &'static str,
    },
    /// No backup with that id (or no complete one: its manifest is
    /// missing).
    #[error("no complete backup {0}")]
    NoSuchBackup(String),
    /// Restore refused: the destination is not empty (pass `--force`).
    #[error("the restore destination is not empty: {0}")]
    NotEmpty(String),
    /// A store or tool used by the backup failed (the source of the
    /// data, `pg_dump`/`pg_restore`).
    #[error("backup source failed: {0}")]
    Source(String),
}

impl BackupError {
    /// [`BackupError::Corrupt`] for `path`.
    pub fn corrupt(path: &ObjectPath, problem: &str) -> Self {
        Self::Corrupt {
            path: path.clone(),
            problem: problem.to_owned(),
        }
    }
}

/// Where an object lives in a target: `/`-separated segments of ASCII
/// letters, digits, `.`, `_` and `-`; no empty, `.` or `..` segment, no
/// leading or trailing `/`; at most 512 bytes. Paths are relative to the
/// target's own prefix (an S3 URL's key prefix, a directory).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectPath(String);

/// The longest [`ObjectPath`], in bytes.
pub const MAX_PATH_LEN: usize = 512;

impl ObjectPath {
    /// Parses a path.
    pub fn new(path: &str) -> Result<Self, BackupError> {
        if path.is_empty() {
            return Err(BackupError::InvalidPath("empty"));
        }
        if path.len() > MAX_PATH_LEN {
            return Err(BackupError::InvalidPath("longer than 512 bytes"));
        }
        for segment in path.split('/') {
            if segment.is_empty() {
                return Err(BackupError::InvalidPath("empty segment"));
            }
            if segment == "." || segment == ".." {
                return Err(BackupError::InvalidPath("`.` or `..` segment"));
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(BackupError::InvalidPath(
                    "a character other than A-Z a-z 0-9 . _ -",
                ));
            }
        }
        Ok(Self(path.to_owned()))
    }

    /// `self/segment…`: `rest` is itself a valid path.
    pub fn join(&self, rest: &str) -> Result<Self, BackupError> {
        Self::new(&format!("{}/{rest}", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` is `prefix` or lies under it (segment-wise: `a/b`
    /// is under `a`, `ab` is not).
    pub fn is_under(&self, prefix: &ObjectPath) -> bool {
        self.0 == prefix.0
            || (self.0.starts_with(&prefix.0)
                && self.0.as_bytes().get(prefix.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectPath({:?})", self.0)
    }
}

/// What a listing says of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Its path, relative to the target.
    pub path: ObjectPath,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, if the target says.
    pub last_modified: Option<DateTime<Utc>>,
}

/// A streamed upload (see the module docs). Dropping it unfinished
/// abandons it: nothing becomes visible (a multipart upload left behind
/// is aborted on a best-effort basis; S3 lifecycle rules collect the
/// rest).
#[async_trait]
pub trait ObjectWriter: Send {
    /// Appends `chunk`. May wait for earlier parts to be uploaded, which
    /// is what bounds the memory held.
    async fn write(&mut self, chunk: Bytes) -> Result<(), BackupError>;
    /// Completes the object: it is visible after this returns `Ok`.
    /// Returns its size in bytes.
    async fn finish(self: Box<Self>) -> Result<u64, BackupError>;
    /// Abandons the upload: nothing becomes visible.
    async fn abort(self: Box<Self>) -> Result<(), BackupError>;
}

/// A streamed download: chunks in order, `None` at the end.
#[async_trait]
pub trait ObjectReader: Send {
    /// The next chunk, or `None` after the last.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BackupError>;
}

/// The backup target port (see the module docs for the contract).
#[async_trait]
pub trait BackupTarget: Send + Sync + fmt::Debug {
    /// Stores `bytes` at `path` only if nothing is there.
    async fn create(&self, path: &ObjectPath, bytes: Bytes) -> Result<(), BackupError>;
    /// Starts a streamed upload to `path`.
    async fn upload(&self, path: &ObjectPath) -> Result<Box<dyn ObjectWriter>, BackupError>;
    /// Streams the object at `path`.
    async fn get(&self, path: &ObjectPath) -> Result<Box<dyn ObjectReader>, BackupError>;
    /// Every object under `prefix` (every object when `None`), by path.
    async fn list(&self, prefix: Option<&ObjectPath>) -> Result<Vec<ObjectMeta>, BackupError>;
    /// Removes the object at `path`, if any.
    async fn delete(&self, path: &ObjectPath) -> Result<(), BackupError>;
    /// The most bytes an [`ObjectWriter`] of this target holds at once
    /// (its part size times the parts in flight), stated so an operator
    /// can size the process and tested by the target's suite.
    fn buffer_bound(&self) -> usize;
    /// A description for logs and errors, with no credential in it (an
    /// S3 URL without its query, a directory).
    fn describe(&self) -> String;
}

/// Reads the whole object at `path` into memory (small objects only: the
/// manifest).
pub async fn read_all(
    target: &dyn BackupTarget,
    path: &ObjectPath,
    limit: usize,
) -> Result<Vec<u8>, BackupError> {
    let mut reader = target.get(path).await?;
    let mut out = Vec::new();
    while let Some(chunk) = reader.next_chunk().await? {
        if out.len() + chunk.len() > limit {
            return Err(BackupError::Unavailable(format!(
                "{path} is larger than the {limit} bytes expected"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_only_in_their_alphabet() {
        for ok in [
            "a",
            "backups/2026-12-05T03-00-00Z/manifest.age",
            "a.b_c-d/e",
        ] {
            assert_eq!(ObjectPath::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "", "/a", "a/", "a//b", "a/../b", ".", "..", "a b", "a\\b", "é", "a/./b",
        ] {
            assert!(ObjectPath::new(bad).is_err(), "{bad:?}");
        }
        assert!(ObjectPath::new(&"a".repeat(MAX_PATH_LEN)).is_ok());
        assert!(ObjectPath::new(&"a".repeat(MAX_PATH_LEN + 1)).is_err());
    }

    #[test]
    fn under_is_segment_wise() {
        let p = |s| ObjectPath::new(s).unwrap();
        assert!(p("a/b").is_under(&p("a")));
        assert!(p("a").is_under(&p("a")));
        assert!(!p("ab").is_under(&p("a")));
        assert!(!p("a").is_under(&p("a/b")));
        assert_eq!(p("a").join("b/c").unwrap(), p("a/b/c"));
        assert!(p("a").join("../b").is_err());
    }
}
