//! Errors, grouped by category under one top-level [`Error`].
//!
//! Whose fault an error is, and whether a caller may branch on it:
//!
//! | variant | fault | branch on it? |
//! |---|---|---|
//! | [`Error::Unauthenticated`] | caller's credentials | no: it is deliberately opaque |
//! | [`Error::Denied`] | caller's permissions | no: it never says whether the project exists |
//! | [`Error::InvalidKey`], [`Error::InvalidInput`], [`Error::Policy`], [`Error::Config`], [`Error::Password`] | caller's input | yes: the message names what was wrong |
//! | [`Error::Vault`] | configuration or tampered data | yes, for operators |
//! | [`Error::Audit`] | a tampered audit log | yes, for operators: raise an alarm |
//! | [`Error::Store`] | backend, a concurrent change or a cap | `NotFound` / `AlreadyExists` / `Conflict` / `LimitReached` yes; `Backend` is transient |
//! | [`Error::ReauthenticationRequired`] | the session is not recently verified | yes: ask for the password or a code, then retry |
//! | [`Error::Queue`] | caller's input, a lease no longer held, or the queue backend | yes: `StaleLease` means another consumer may have the job; `Unavailable` is transient |
//! | [`Error::Unavailable`] | the backend, during authentication | yes: retry later (HTTP 503); it is never a success |
//!
//! Authentication paths (key verification, the login steps, session
//! checks) return only [`Error::Unauthenticated`] or
//! [`Error::Unavailable`]: whatever failed inside (a vault error, a record
//! evicted by a concurrent request, a malformed stored value) becomes the
//! opaque `Unauthenticated`, with the reason logged through `tracing` or
//! audited; only a backend outage is told apart, so a caller can answer
//! "try again" instead of "wrong password".

use std::error::Error as StdError;

use crate::access::AccessDenied;
use crate::config::ConfigError;
use crate::keys::{KeyFormatError, PolicyError};
use crate::vault::VaultError;

/// Shorthand for results whose error is the top-level [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The top-level error of every echorelay operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The presented credential was not accepted. Deliberately says nothing
    /// about why (unknown, revoked, expired or malformed all look the same).
    #[error("authentication failed")]
    Unauthenticated,
    /// The voter denied the operation.
    #[error(transparent)]
    Denied(#[from] AccessDenied),
    /// An API key string is malformed (only returned by the parser itself;
    /// verification maps this to [`Error::Unauthenticated`]).
    #[error(transparent)]
    InvalidKey(#[from] KeyFormatError),
    /// A key lifecycle policy is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Tenant configuration input is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A new password (or the password policy) is invalid: empty, over
    /// 4096 bytes, or a cost out of range.
    #[error(transparent)]
    Password(#[from] crate::account::password::PasswordError),
    /// Input that is not configuration or a key was invalid.
    #[error("invalid input: {0}")]
    InvalidInput(&'static str),
    /// Encryption, decryption or key material failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The backend failed or refused the change.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An audit chain does not verify: an event was edited, removed,
    /// reordered or cut off (tampering, or a broken backend).
    #[error(transparent)]
    Audit(#[from] crate::audit::ChainBreak),
    /// The operation needs a recent password or second-factor check in
    /// this session (step-up, ASVS V3.7.1): call
    /// `AccountService::step_up`, then retry.
    #[error("re-authentication required")]
    ReauthenticationRequired,
    /// The backend could not be reached during authentication: nothing was
    /// authenticated (fail closed). Transient; the cause is logged.
    #[error("authentication is unavailable: the backend could not be reached")]
    Unavailable,
    /// A job queue operation failed: bad input (a name, a payload over the
    /// limit, a lease length), a stale lease, a job that is not dead, or
    /// the queue backend.
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    /// A backup operation failed: the target (its configuration, access,
    /// availability), a path, or a backup that does not verify.
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
}

impl Error {
    /// What an authentication path returns for an error from inside it:
    /// [`Error::Unavailable`] for a backend outage, the opaque
    /// [`Error::Unauthenticated`] for anything else. The original error is
    /// logged (it never holds a secret), not returned.
    pub fn into_auth_failure(self) -> Error {
        match self {
            Error::Unauthenticated => Error::Unauthenticated,
            Error::Unavailable | Error::Store(StoreError::Backend { .. }) => {
                tracing::error!(error = %self, source = ?std::error::Error::source(&self), "authentication failed closed: backend unavailable");
                Error::Unavailable
            }
            other => {
                tracing::warn!(error = %other, "authentication failed on an internal error");
                Error::Unauthenticated
            }
        }
    }
}

/// What a backend can say about a store operation. Adapters map their own
/// errors into this in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record does not exist (or is not visible in this project).
    #[error("{kind} not found")]
    NotFound {
        /// Which kind of record.
        kind: &'static str,
    },
    /// A record with the same identity (id, slug, hash) already exists.
    #[error("{kind} already exists")]
    AlreadyExists {
        /// Which kind of record.
        kind: &'static str,
    },
    /// A precondition failed: the record changed since it was read (for
    /// example another process already rotated this key).
    #[error("conflict: {reason}")]
    Conflict {
        /// What did not hold.
        reason: &'static str,
    },
    /// A cap on what one record may hold was reached (a project's tree
    /// holds at most [`MAX_TREE_ENTITIES`](crate::config::MAX_TREE_ENTITIES)
    /// lines, endpoints and targets): the change was refused and nothing
    /// written. Not transient: remove something first.
    #[error("limit reached: {reason}")]
    LimitReached {
        /// Which cap, and its value.
        reason: &'static str,
    },
    /// A stored record could not be read back: a value this code does not
    /// know (an enum written by hand, or by a newer version), a malformed
    /// id, hash or ciphertext. Names where, never what the value was (it
    /// may be secret). Never turned into a valid result.
    #[error("corrupt record in {table} ({id}): {problem}")]
    Corrupt {
        /// The table (or collection) the record is in.
        table: &'static str,
        /// The record's key, as hex or text.
        id: String,
        /// What could not be read.
        problem: String,
    },
    /// The backend itself failed (connection, I/O, driver). Transient
    /// failures may be retried.
    #[error("storage backend failed")]
    Backend {
        /// The adapter's own error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl StoreError {
    /// Wraps an adapter error as [`StoreError::Backend`].
    pub fn backend(e: impl StdError + Send + Sync + 'static) -> Self {
        Self::Backend {
            source: Box::new(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_failures_are_opaque_except_an_outage() {
        let outage = Error::Store(StoreError::backend(std::io::Error::other("down")));
        assert!(matches!(outage.into_auth_failure(), Error::Unavailable));
        assert!(matches!(
            Error::Unavailable.into_auth_failure(),
            Error::Unavailable
        ));
        for e in [
            Error::Unauthenticated,
            Error::Store(StoreError::NotFound { kind: "device" }),
            Error::Store(StoreError::Conflict { reason: "x" }),
            Error::Vault(VaultError::Decrypt),
            Error::InvalidInput("x"),
            Error::Denied(AccessDenied),
        ] {
            assert!(matches!(e.into_auth_failure(), Error::Unauthenticated));
        }
    }
}
