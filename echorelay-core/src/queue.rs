//! The job queue: the port every queue backend implements ([`Queue`]), its
//! types, and core's rules over it (the backoff schedule, limits, lease
//! tokens).
//!
//! This module stands apart from the tenant-config, access and audit
//! modules: it imports none of them, so a backend that only queues (Redis)
//! depends on nothing else of core's records.
//!
//! ## The contract every backend keeps
//!
//! Jobs live in named queues ([`QueueName`]). A job is in exactly one of
//! four states, decided from what the store holds and the `now` core passes:
//!
//! | state | held as | counted in [`QueueStats`] as |
//! |---|---|---|
//! | waiting | not leased (or its lease expired at or before `now`), `run_at <= now` | `waiting` |
//! | delayed | not leased, `run_at > now` | `delayed` |
//! | in flight | leased, `lease_until > now` | `in_flight` |
//! | dead | in the dead-letter set | `dead` |
//!
//! A job whose lease has expired is waiting again: at-least-once delivery
//! through a consumer's crash (S13). An acked job is deleted.
//!
//! - **Enqueue** stores every job of the call or none. A job with a
//!   de-duplication key that a job of the same queue in state waiting,
//!   delayed or in flight already holds is not stored: that job's id is
//!   returned in its place (a dead or acked job frees its key).
//! - **Reserve** takes up to `n` due jobs (waiting), earliest `run_at`
//!   first (ties in any order), and atomically, per job: increments its
//!   attempt count, stores the reservation's nonce as its lease and
//!   `lease_until` as its lease end. Racing reservers get disjoint jobs: a
//!   job is held by at most one lease at a time. A due job whose attempts
//!   have already reached its `max_attempts` (its last attempt's lease
//!   expired) is not handed out: it moves to the dead-letter set with the
//!   class [`ErrorClass::LEASE_EXPIRED`].
//! - **Lease tokens.** `ack`, `nack` and `extend` act only when the token's
//!   job exists, is leased with the token's nonce, and its lease ends after
//!   `now`; otherwise they return [`QueueError::StaleLease`] and change
//!   nothing. A lease ending exactly at `now` has expired. Each is atomic
//!   with its check, so an ack racing the lease's expiry and a new
//!   reservation has exactly one outcome.
//! - **Nack** with [`Retry::At`] makes the job delayed until that time
//!   (stored in the backend, never held in a worker's memory), unless its
//!   attempts have reached `max_attempts`; then, and with [`Retry::Never`],
//!   it moves to the dead-letter set with the nack's class.
//! - **Dead letters** are listed by job id ascending (`after` exclusive,
//!   at most `limit`), redriven (waiting again at `now`, attempts reset to
//!   0, the class cleared; a job that is not dead is
//!   [`QueueError::NotDead`]) and purged. A dead job frees its
//!   de-duplication key; a redriven job takes it back only if no live
//!   job of the queue holds it meanwhile (else it goes on without one).
//! - **Ids** are core's (random 128 bits); an enqueue of an id the queue
//!   already holds is [`QueueError::InvalidArgument`] and stores nothing.
//! - **Time** is the `now` core passes (from the `Clock` port), never the
//!   backend's own clock.
//!
//! Every method that returns `Err` has changed nothing, except the `*_many`
//! methods, which report each item on its own, and
//! [`QueueError::Unavailable`]: over a network the outcome of a call whose
//! answer was lost is unknown (an ack may have been applied: acking again
//! is then [`QueueError::StaleLease`], and an enqueue retried with its
//! de-duplication key stores nothing twice).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::RngCore;

mod backoff;
mod service;
#[cfg(test)]
mod tests;

pub use backoff::Backoff;
pub use service::{
    DEAD_BATCH, EnqueueOptions, MAX_DEAD_PAGE, NackPolicy, QueueConfig, QueueService, RunAt,
};

/// The default largest payload: 256 KiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 256 * 1024;

/// The most jobs one enqueue, reserve or ack-many call takes.
pub const MAX_BATCH: usize = 1000;

/// A batch of `n` jobs or tokens for one port call: 1 to [`MAX_BATCH`],
/// else [`QueueError::InvalidArgument`]. Core checks it before a call;
/// backends check it again on their own entry (the port can be called
/// directly), through this one rule.
pub fn check_batch(n: usize) -> Result<(), QueueError> {
    if (1..=MAX_BATCH).contains(&n) {
        Ok(())
    } else {
        Err(QueueError::InvalidArgument("batch size"))
    }
}

/// The longest lease: 12 hours.
pub const MAX_LEASE: Duration = Duration::from_secs(12 * 3600);

/// The most attempts a job may be given.
pub const MAX_ATTEMPTS: u32 = 1000;

/// The default attempts of a job: 25.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 25;

/// Errors of the queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// A queue name that is not 1 to 64 characters of `a-z 0-9 . _ -`
    /// starting with a letter or digit.
    #[error("malformed queue name")]
    InvalidName,
    /// A payload larger than the configured limit; nothing was stored.
    #[error("payload of {len} bytes exceeds the limit of {limit}")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An argument out of its documented range (lease length, batch size,
    /// attempts, a de-duplication key, an error class, a page size).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// A lease token that does not parse.
    #[error("malformed lease token")]
    InvalidToken,
    /// The lease is no longer held: it expired, the job was re-reserved,
    /// acked, nacked or is gone. Nothing changed.
    #[error("the lease is no longer held")]
    StaleLease,
    /// The job is not in the dead-letter set.
    #[error("the job is not dead")]
    NotDead,
    /// The backend could not be reached or failed. The outcome is
    /// unknown when the answer was lost after the call was sent: an
    /// applied ack, retried, is [`QueueError::StaleLease`].
    #[error("queue backend unavailable: {0}")]
    Unavailable(String),
    /// The backend holds something it cannot read back.
    #[error("queue backend holds a corrupt record: {0}")]
    Corrupt(String),
}

/// A queue's name: 1 to 64 characters of `a-z 0-9 . _ -`, starting with a
/// letter or digit (safe in a Redis key, a Postgres value and a log line).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(String);

impl QueueName {
    /// Checks and wraps `name`.
    pub fn new(name: &str) -> Result<Self, QueueError> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(QueueError::InvalidName)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl FromStr for QueueName {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A job's id: `job_` and 32 hex digits (random 128 bits).
pub use crate::ids::JobId;

/// Why a job failed, as recorded on it: 1 to 64 characters of
/// `a-z 0-9 . _ -` (for example `http_503`, `timeout`, `connect`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ErrorClass(String);

impl ErrorClass {
    /// The class core records when a job's last attempt's lease expired.
    pub const LEASE_EXPIRED: &'static str = "lease_expired";

    /// Checks and wraps `class`.
    pub fn new(class: &str) -> Result<Self, QueueError> {
        let ok = (1..=64).contains(&class.len())
            && class
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if ok {
            Ok(Self(class.to_owned()))
        } else {
            Err(QueueError::InvalidArgument("error class"))
        }
    }

    /// [`ErrorClass::LEASE_EXPIRED`] as a class.
    pub fn lease_expired() -> Self {
        Self(Self::LEASE_EXPIRED.to_owned())
    }

    /// The class.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A de-duplication key: 1 to 200 bytes of printable ASCII.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DedupKey(String);

impl DedupKey {
    /// Checks and wraps `key`.
    pub fn new(key: &str) -> Result<Self, QueueError> {
        let ok = (1..=200).contains(&key.len()) && key.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if ok {
            Ok(Self(key.to_owned()))
        } else {
            Err(QueueError::InvalidArgument("de-duplication key"))
        }
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The 128-bit random nonce of one reservation: every job a `reserve` call
/// hands out is leased with it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseNonce([u8; 16]);

impl LeaseNonce {
    /// A fresh nonce from the thread's CSPRNG (`rand::thread_rng`:
    /// ChaCha12, seeded and reseeded from the OS; unpredictable, with no
    /// system call per reservation).
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut b);
        Self(b)
    }

    /// The nonce from its raw bytes.
    pub const fn from_bytes(b: [u8; 16]) -> Self {
        Self(b)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for LeaseNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not a secret (a lease is checked against the store), but short.
        write!(f, "LeaseNonce({}…)", hex::encode(&self.0[..4]))
    }
}

/// The proof of holding a job's lease: the job, the reservation's nonce
/// and the attempt it was handed out as.
///
/// Text form (docs/FORMATS.md, Part 4): `lease_` + 32 lowercase hex digits
/// of the job id + 32 lowercase hex digits of the nonce + `_` + the
/// attempt in decimal (1 to [`MAX_ATTEMPTS`], no leading zero). Only the job and the nonce are
/// checked by the store; the attempt serves core's backoff.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken {
    job: JobId,
    nonce: LeaseNonce,
    attempt: u32,
}

impl LeaseToken {
    /// A token for `job`, leased with `nonce` as attempt `attempt`.
    pub const fn new(job: JobId, nonce: LeaseNonce, attempt: u32) -> Self {
        Self {
            job,
            nonce,
            attempt,
        }
    }

    /// The job.
    pub const fn job(&self) -> JobId {
        self.job
    }

    /// The reservation's nonce.
    pub const fn nonce(&self) -> LeaseNonce {
        self.nonce
    }

    /// The attempt (1 for the first).
    pub const fn attempt(&self) -> u32 {
        self.attempt
    }
}

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lease_{}{}_{}",
            hex::encode(self.job.as_bytes()),
            hex::encode(self.nonce.0),
            self.attempt
        )
    }
}

impl fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseToken")
            .field("job", &self.job)
            .field("nonce", &self.nonce)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl FromStr for LeaseToken {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body = s.strip_prefix("lease_").ok_or(QueueError::InvalidToken)?;
        let (ids, attempt) = body.split_once('_').ok_or(QueueError::InvalidToken)?;
        // Lowercase only: the text form is canonical (Display writes
        // lowercase, and an accepted token re-displays identically).
        if ids.len() != 64 || !ids.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(QueueError::InvalidToken);
        }
        let mut raw = [0u8; 32];
        hex::decode_to_slice(ids, &mut raw).map_err(|_| QueueError::InvalidToken)?;
        let (job, nonce) = raw.split_at(16);
        let job: [u8; 16] = job.try_into().map_err(|_| QueueError::InvalidToken)?;
        let nonce: [u8; 16] = nonce.try_into().map_err(|_| QueueError::InvalidToken)?;
        let digits_ok = !attempt.is_empty()
            && attempt.len() <= 4
            && attempt.bytes().all(|b| b.is_ascii_digit())
            && !attempt.starts_with('0');
        if !digits_ok {
            return Err(QueueError::InvalidToken);
        }
        let attempt: u32 = attempt.parse().map_err(|_| QueueError::InvalidToken)?;
        if attempt > MAX_ATTEMPTS {
            return Err(QueueError::InvalidToken);
        }
        Ok(Self::new(
            JobId::from_bytes(job),
            LeaseNonce(nonce),
            attempt,
        ))
    }
}

/// A job as core hands it to [`Queue::enqueue`]: checked, with its id and
/// due time decided.
#[derive(Clone, PartialEq, Eq)]
pub struct NewJob {
    /// The job's id (random, made by core).
    pub id: JobId,
    /// The payload (at most the configured limit).
    pub payload: Vec<u8>,
    /// When it is first due.
    pub run_at: DateTime<Utc>,
    /// Attempts before it goes dead: 1 to [`MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// The de-duplication key, if any.
    pub dedup_key: Option<DedupKey>,
}

impl fmt::Debug for NewJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewJob")
            .field("id", &self.id)
            .field("payload_len", &self.payload.len())
            .field("run_at", &self.run_at)
            .field("max_attempts", &self.max_attempts)
            .field("dedup_key", &self.dedup_key)
            .finish()
    }
}

/// A reserved job, as [`Queue::reserve`] hands it out.
#[derive(Clone, PartialEq, Eq)]
pub struct ReservedJob {
    /// The lease: present it to ack, nack or extend.
    pub token: LeaseToken,
    /// The payload, as enqueued.
    pub payload: Vec<u8>,
    /// This attempt (1 for the first), also in the token.
    pub attempt: u32,
    /// The job's attempts before it goes dead.
    pub max_attempts: u32,
    /// When the job was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When the lease ends unless extended.
    pub lease_until: DateTime<Utc>,
}

impl ReservedJob {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.token.job()
    }
}

impl fmt::Debug for ReservedJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReservedJob")
            .field("token", &self.token)
            .field("payload_len", &self.payload.len())
            .field("attempt", &self.attempt)
            .field("max_attempts", &self.max_attempts)
            .field("enqueued_at", &self.enqueued_at)
            .field("lease_until", &self.lease_until)
            .finish()
    }
}

/// What a nack asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Due again at this time, if attempts remain.
    At(DateTime<Utc>),
    /// Not retryable: to the dead-letter set now.
    Never,
}

/// What a nack did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackOutcome {
    /// The job is delayed until this time.
    Retrying(DateTime<Utc>),
    /// The job is in the dead-letter set.
    Dead,
}

/// A job in the dead-letter set.
#[derive(Clone, PartialEq, Eq)]
pub struct DeadJob {
    /// The job's id.
    pub id: JobId,
    /// The payload, as enqueued.
    pub payload: Vec<u8>,
    /// Attempts made.
    pub attempts: u32,
    /// Its attempts before it went dead.
    pub max_attempts: u32,
    /// Why its last attempt failed.
    pub error_class: ErrorClass,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When it went dead.
    pub died_at: DateTime<Utc>,
}

impl fmt::Debug for DeadJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadJob")
            .field("id", &self.id)
            .field("payload_len", &self.payload.len())
            .field("attempts", &self.attempts)
            .field("max_attempts", &self.max_attempts)
            .field("error_class", &self.error_class)
            .field("enqueued_at", &self.enqueued_at)
            .field("died_at", &self.died_at)
            .finish()
    }
}

/// A queue's counts at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Due and not held.
    pub waiting: u64,
    /// Due later.
    pub delayed: u64,
    /// Held by a lease that has not expired.
    pub in_flight: u64,
    /// In the dead-letter set.
    pub dead: u64,
}

/// The queue port: what a backend stores and fetches. The rules (limits,
/// ids, nonces, the backoff, time) are core's, in [`QueueService`]; the
/// module docs are the contract.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Stores every job of `jobs` in `queue`, or none (see the module docs
    /// for de-duplication). Returns one id per job, in order: its own, or
    /// that of the job already holding its de-duplication key. `now` is
    /// the jobs' enqueue time.
    async fn enqueue(
        &self,
        queue: &QueueName,
        jobs: Vec<NewJob>,
        now: DateTime<Utc>,
    ) -> Result<Vec<JobId>, QueueError>;

    /// Leases up to `n` (1 to [`MAX_BATCH`]) due jobs with `nonce` until
    /// `lease_until`, earliest `run_at` first.
    async fn reserve(
        &self,
        queue: &QueueName,
        n: usize,
        nonce: LeaseNonce,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReservedJob>, QueueError>;

    /// Deletes the job if `token` holds its lease at `now`.
    async fn ack(&self, token: &LeaseToken, now: DateTime<Utc>) -> Result<(), QueueError>;

    /// [`Queue::ack`] for each token, each on its own: one outcome per
    /// token, in order. `Err` only when the backend failed (then which
    /// were acked is unknown; acking them again is refused as stale).
    async fn ack_many(
        &self,
        tokens: &[LeaseToken],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<(), QueueError>>, QueueError>;

    /// Releases the lease of `token`: the job is delayed until the retry
    /// time, or dead (see the module docs).
    async fn nack(
        &self,
        token: &LeaseToken,
        retry: Retry,
        class: &ErrorClass,
        now: DateTime<Utc>,
    ) -> Result<NackOutcome, QueueError>;

    /// Moves the lease's end to `lease_until` if `token` holds it at `now`.
    async fn extend(
        &self,
        token: &LeaseToken,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError>;

    /// The dead-letter set of `queue`, by id ascending: at most `limit`
    /// jobs after `after` (exclusive).
    async fn dead_jobs(
        &self,
        queue: &QueueName,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<DeadJob>, QueueError>;

    /// Makes the dead job `id` of `queue` waiting at `now` with its
    /// attempts reset; [`QueueError::NotDead`] if it is not dead.
    async fn redrive(
        &self,
        queue: &QueueName,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError>;

    /// Redrives up to `limit` dead jobs of `queue` (lowest ids first);
    /// returns how many. Core calls it until it returns fewer than `limit`.
    async fn redrive_dead(
        &self,
        queue: &QueueName,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<u64, QueueError>;

    /// Deletes up to `limit` dead jobs of `queue` (lowest ids first);
    /// returns how many. Core calls it until it returns fewer than `limit`.
    async fn purge_dead(&self, queue: &QueueName, limit: usize) -> Result<u64, QueueError>;

    /// The counts of `queue` at `now`.
    async fn stats(&self, queue: &QueueName, now: DateTime<Utc>) -> Result<QueueStats, QueueError>;

    /// Waits at most `max_wait` for a sign that a job of `queue` may have
    /// become due: a backend that can be told (Postgres LISTEN/NOTIFY,
    /// Redis) returns as soon as a job is enqueued, nacked or redriven
    /// there, from any process. Spurious and missed wake-ups are allowed
    /// (consumers reserve again after every wait, so `max_wait` is the
    /// backstop poll). The default has no notifications: it sleeps
    /// `max_wait`.
    async fn wait_for_jobs(&self, queue: &QueueName, max_wait: Duration) -> Result<(), QueueError> {
        let _ = queue;
        tokio::time::sleep(max_wait).await;
        Ok(())
    }
}

#[async_trait]
impl<T: Queue + ?Sized> Queue for Arc<T> {
    async fn enqueue(
        &self,
        queue: &QueueName,
        jobs: Vec<NewJob>,
        now: DateTime<Utc>,
    ) -> Result<Vec<JobId>, QueueError> {
        (**self).enqueue(queue, jobs, now).await
    }
    async fn reserve(
        &self,
        queue: &QueueName,
        n: usize,
        nonce: LeaseNonce,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReservedJob>, QueueError> {
        (**self).reserve(queue, n, nonce, lease_until, now).await
    }
    async fn ack(&self, token: &LeaseToken, now: DateTime<Utc>) -> Result<(), QueueError> {
        (**self).ack(token, now).await
    }
    async fn ack_many(
        &self,
        tokens: &[LeaseToken],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        (**self).ack_many(tokens, now).await
    }
    async fn nack(
        &self,
        token: &LeaseToken,
        retry: Retry,
        class: &ErrorClass,
        now: DateTime<Utc>,
    ) -> Result<NackOutcome, QueueError> {
        (**self).nack(token, retry, class, now).await
    }
    async fn extend(
        &self,
        token: &LeaseToken,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        (**self).extend(token, lease_until, now).await
    }
    async fn dead_jobs(
        &self,
        queue: &QueueName,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<DeadJob>, QueueError> {
        (**self).dead_jobs(queue, after, limit).await
    }
    async fn redrive(
        &self,
        queue: &QueueName,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        (**self).redrive(queue, id, now).await
    }
    async fn redrive_dead(
        &self,
        queue: &QueueName,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<u64, QueueError> {
        (**self).redrive_dead(queue, limit, now).await
    }
    async fn purge_dead(&self, queue: &QueueName, limit: usize) -> Result<u64, QueueError> {
        (**self).purge_dead(queue, limit).await
    }
    async fn stats(&self, queue: &QueueName, now: DateTime<Utc>) -> Result<QueueStats, QueueError> {
        (**self).stats(queue, now).await
    }
    async fn wait_for_jobs(&self, queue: &QueueName, max_wait: Duration) -> Result<(), QueueError> {
        (**self).wait_for_jobs(queue, max_wait).await
    }
}
