//! Backups (S12, S15): the [`BackupTarget`] port that encrypted backup
//! objects are written to.
//!
//! A target is an object store (S3-compatible buckets and the local
//! filesystem in `echorelay-store-s3`, memory in `echorelay-store-mem`);
//! core decides what goes in a backup and encrypts every object before it
//! reaches the target.

#[cfg(feature = "backup")]
pub mod crypt;
pub mod manifest;
#[cfg(feature = "backup")]
pub mod schedule;
#[cfg(feature = "backup")]
pub mod service;
pub mod snapshot;
pub mod target;

pub use target::{
    BackupError, BackupTarget, MAX_PATH_LEN, ObjectMeta, ObjectPath, ObjectReader, ObjectWriter,
    read_all,
};
