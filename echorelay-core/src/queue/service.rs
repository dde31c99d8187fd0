//! [`QueueService`]: core's rules over a [`Queue`] backend.
//!
//! What the service decides, so that no adapter has to:
//!
//! - **Ids and nonces**: every job id is random (128 bits from the OS
//!   CSPRNG), every `reserve` call leases its jobs with a fresh
//!   [`LeaseNonce`].
//! - **Limits**: payloads up to [`QueueConfig::max_payload`]; batches of 1
//!   to [`MAX_BATCH`]; leases longer than zero and at most [`MAX_LEASE`];
//!   attempts 1 to [`MAX_ATTEMPTS`]; dead-letter pages of 1 to
//!   [`MAX_DEAD_PAGE`]. A batch is checked whole before the backend is
//!   called: one bad item and nothing is stored.
//! - **Time**: `now` comes from the [`Clock`] and is cut to whole
//!   microseconds (the precision Postgres stores), and a lease or delay is
//!   rounded up to whole microseconds, so every backend sees the same
//!   instants. A run time in the past is due now (no job can jump the
//!   queue by being backdated).
//! - **Retries**: [`NackPolicy::Backoff`] waits [`Backoff::delay`] of the
//!   token's attempt; [`NackPolicy::After`] waits the given time (a
//!   target's `Retry-After`, say) but never longer than the backoff's
//!   `cap`, so a target cannot park a job for longer than the operator
//!   allows between attempts; [`NackPolicy::Never`] dead-letters it.
//!
//! Payloads are references (an event id, a delivery id), never secrets
//! (S13): a backend stores them as they are, and a dead job keeps its
//! payload until it is purged.
//!
//! Every operation runs in a `tracing` span named `queue.<operation>` (at
//! debug level) with the queue's name, or the job's id for the operations
//! that take a token, and counts or sizes: never payload bytes, never a
//! whole lease token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use rand::RngCore;
use tracing::Instrument;

use super::{
    Backoff, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_PAYLOAD, DeadJob, DedupKey, ErrorClass, JobId,
    LeaseNonce, LeaseToken, MAX_ATTEMPTS, MAX_BATCH, MAX_LEASE, NackOutcome, NewJob, Queue,
    QueueError, QueueName, QueueStats, ReservedJob, Retry,
};
use crate::clock::Clock;

/// The largest page of [`QueueService::dead_jobs`].
pub const MAX_DEAD_PAGE: usize = 1000;

/// How many dead jobs [`QueueService::redrive_all`] and
/// [`QueueService::purge_dead`] hand the backend per call.
pub const DEAD_BATCH: usize = 500;

/// The service's settings; [`QueueConfig::default`] has the documented
/// defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// The largest payload in bytes. Default: [`DEFAULT_MAX_PAYLOAD`]
    /// (256 KiB).
    pub max_payload: usize,
    /// The retry schedule. Default: [`Backoff::default`] (1 s doubling to
    /// 1 h, full jitter).
    pub backoff: Backoff,
    /// The attempts of a job enqueued without its own. Default:
    /// [`DEFAULT_MAX_ATTEMPTS`] (25).
    pub default_max_attempts: u32,
    /// The backstop of [`QueueService::reserve_wait`]: the longest it
    /// waits for a backend's wake-up before it looks again. Default: 1 s.
    pub poll: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
            backoff: Backoff::default(),
            default_max_attempts: DEFAULT_MAX_ATTEMPTS,
            poll: Duration::from_secs(1),
        }
    }
}

impl QueueConfig {
    /// Checks the settings: a payload limit above zero, default attempts
    /// of 1 to [`MAX_ATTEMPTS`], a poll above zero.
    pub fn validate(&self) -> Result<(), QueueError> {
        if self.max_payload == 0 {
            return Err(QueueError::InvalidArgument("payload limit"));
        }
        check_attempts(self.default_max_attempts)?;
        if self.poll.is_zero() {
            return Err(QueueError::InvalidArgument("poll interval"));
        }
        Ok(())
    }
}

/// When an enqueued job is first due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunAt {
    /// Now.
    #[default]
    Now,
    /// After this long.
    After(Duration),
    /// At this time (a time in the past is now).
    At(DateTime<Utc>),
}

/// The options of one enqueued job; `EnqueueOptions::default()` is due now,
/// with the configured attempts and no de-duplication key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnqueueOptions {
    /// When it is first due.
    pub run_at: RunAt,
    /// Its attempts before it goes dead (1 to [`MAX_ATTEMPTS`]); `None`:
    /// [`QueueConfig::default_max_attempts`].
    pub max_attempts: Option<u32>,
    /// Its de-duplication key: while a job of the queue holding it is
    /// waiting, delayed or in flight, an enqueue with the key returns that
    /// job's id and stores nothing.
    pub dedup_key: Option<DedupKey>,
}

impl EnqueueOptions {
    /// Due now, default attempts, no key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Due after `delay`.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.run_at = RunAt::After(delay);
        self
    }

    /// Due at `at`.
    #[must_use]
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = RunAt::At(at);
        self
    }

    /// At most `n` attempts.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// De-duplicated by `key`.
    #[must_use]
    pub fn dedup_key(mut self, key: DedupKey) -> Self {
        self.dedup_key = Some(key);
        self
    }
}

/// What a failed attempt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackPolicy {
    /// Retry after [`Backoff::delay`] of the token's attempt.
    Backoff,
    /// Retry after this long (for example a target's `Retry-After`),
    /// capped at the backoff's `cap`.
    After(Duration),
    /// Do not retry: dead-letter the job now.
    Never,
}

/// Core's rules over a [`Queue`] backend: see the module docs. Cheap to
/// clone when `Q` is (an `Arc`); clones share the backend.
#[derive(Clone)]
pub struct QueueService<Q: Queue> {
    queue: Q,
    clock: Arc<dyn Clock>,
    config: QueueConfig,
}

impl<Q: Queue> fmt::Debug for QueueService<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueService")
            .field("clock", &self.clock)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn check_attempts(n: u32) -> Result<u32, QueueError> {
    if (1..=MAX_ATTEMPTS).contains(&n) {
        Ok(n)
    } else {
        Err(QueueError::InvalidArgument("max attempts"))
    }
}

fn check_batch(n: usize) -> Result<(), QueueError> {
    if (1..=MAX_BATCH).contains(&n) {
        Ok(())
    } else {
        Err(QueueError::InvalidArgument("batch size"))
    }
}

/// `d` as a chrono delta, rounded up to whole microseconds.
fn micros_up(d: Duration, what: &'static str) -> Result<TimeDelta, QueueError> {
    let micros = d.as_nanos().div_ceil(1000);
    i64::try_from(micros)
        .ok()
        .map(TimeDelta::microseconds)
        .ok_or(QueueError::InvalidArgument(what))
}

/// `now + d`, `d` rounded up to whole microseconds.
fn after(now: DateTime<Utc>, d: Duration, what: &'static str) -> Result<DateTime<Utc>, QueueError> {
    now.checked_add_signed(micros_up(d, what)?)
        .ok_or(QueueError::InvalidArgument(what))
}

fn check_lease(lease: Duration) -> Result<(), QueueError> {
    if lease.is_zero() || lease > MAX_LEASE {
        Err(QueueError::InvalidArgument("lease length"))
    } else {
        Ok(())
    }
}

/// `n` fresh job ids from the thread's CSPRNG (`rand::thread_rng`:
/// ChaCha12 seeded and periodically reseeded from the OS; no system call
/// per job, which measured a third of the in-memory cycle).
fn job_ids(n: usize) -> Vec<JobId> {
    let mut bytes = vec![0u8; n * 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
        .chunks_exact(16)
        .map(|c| {
            let mut b = [0u8; 16];
            b.copy_from_slice(c);
            JobId::from_bytes(b)
        })
        .collect()
}

impl<Q: Queue> QueueService<Q> {
    /// The service over `queue` with [`QueueConfig::default`].
    pub fn new(queue: Q, clock: Arc<dyn Clock>) -> Self {
        Self {
            queue,
            clock,
            config: QueueConfig::default(),
        }
    }

    /// The service over `queue` with `config`.
    ///
    /// # Errors
    /// [`QueueError::InvalidArgument`] if [`QueueConfig::validate`] refuses
    /// `config`.
    pub fn with_config(
        queue: Q,
        clock: Arc<dyn Clock>,
        config: QueueConfig,
    ) -> Result<Self, QueueError> {
        config.validate()?;
        Ok(Self {
            queue,
            clock,
            config,
        })
    }

    /// The backend.
    pub fn queue(&self) -> &Q {
        &self.queue
    }

    /// The settings.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// The clock's time, cut to whole microseconds.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now().trunc_subsecs(6)
    }

    /// Checks one job and decides its id and due time.
    fn new_job(
        &self,
        id: JobId,
        payload: Vec<u8>,
        options: EnqueueOptions,
        now: DateTime<Utc>,
    ) -> Result<NewJob, QueueError> {
        if payload.len() > self.config.max_payload {
            return Err(QueueError::PayloadTooLarge {
                len: payload.len(),
                limit: self.config.max_payload,
            });
        }
        let max_attempts = check_attempts(
            options
                .max_attempts
                .unwrap_or(self.config.default_max_attempts),
        )?;
        let run_at = match options.run_at {
            RunAt::Now => now,
            RunAt::After(d) => after(now, d, "delay")?,
            RunAt::At(t) => t.trunc_subsecs(6).max(now),
        };
        Ok(NewJob {
            id,
            payload,
            run_at,
            max_attempts,
            dedup_key: options.dedup_key,
        })
    }

    /// Enqueues one job; returns its id, or the id of the job of `queue`
    /// already holding its de-duplication key (then nothing is stored).
    ///
    /// # Errors
    /// [`QueueError::PayloadTooLarge`], [`QueueError::InvalidArgument`]
    /// (attempts, a delay past the end of time), or the backend's error;
    /// nothing is stored.
    pub async fn enqueue(
        &self,
        queue: &QueueName,
        payload: Vec<u8>,
        options: EnqueueOptions,
    ) -> Result<JobId, QueueError> {
        let span = tracing::debug_span!("queue.enqueue", queue = %queue, count = 1usize, bytes = payload.len());
        async move {
            let now = self.now();
            let id = job_ids(1)
                .pop()
                .ok_or(QueueError::InvalidArgument("job id"))?;
            let job = self.new_job(id, payload, options, now)?;
            let ids = self.queue.enqueue(queue, vec![job], now).await?;
            ids.first().copied().ok_or_else(|| {
                QueueError::Corrupt("the backend returned no id for an enqueued job".into())
            })
        }
        .instrument(span)
        .await
    }

    /// Enqueues up to [`MAX_BATCH`] jobs in one call, all or none: every
    /// job is checked before the backend is called. Returns one id per
    /// job, in order (see [`QueueService::enqueue`]). An empty batch is
    /// `Ok` and calls nothing.
    ///
    /// # Errors
    /// As [`QueueService::enqueue`] for the first bad job, or
    /// [`QueueError::InvalidArgument`] for more than [`MAX_BATCH`] jobs;
    /// nothing is stored.
    pub async fn enqueue_many(
        &self,
        queue: &QueueName,
        jobs: Vec<(Vec<u8>, EnqueueOptions)>,
    ) -> Result<Vec<JobId>, QueueError> {
        let span = tracing::debug_span!("queue.enqueue_many", queue = %queue, count = jobs.len());
        async move {
            if jobs.is_empty() {
                return Ok(Vec::new());
            }
            check_batch(jobs.len())?;
            let now = self.now();
            let n = jobs.len();
            let new_jobs = jobs
                .into_iter()
                .zip(job_ids(n))
                .map(|((payload, options), id)| self.new_job(id, payload, options, now))
                .collect::<Result<Vec<_>, _>>()?;
            let ids = self.queue.enqueue(queue, new_jobs, now).await?;
            if ids.len() != n {
                return Err(QueueError::Corrupt(format!(
                    "the backend returned {} ids for {n} enqueued jobs",
                    ids.len()
                )));
            }
            Ok(ids)
        }
        .instrument(span)
        .await
    }

    /// Leases up to `n` (1 to [`MAX_BATCH`]) due jobs of `queue` for
    /// `lease` (more than zero, at most [`MAX_LEASE`]), earliest first,
    /// under one fresh nonce. Returns what was due: possibly nothing.
    ///
    /// # Errors
    /// [`QueueError::InvalidArgument`] for `n` or `lease`; the backend's
    /// error.
    pub async fn reserve(
        &self,
        queue: &QueueName,
        n: usize,
        lease: Duration,
    ) -> Result<Vec<ReservedJob>, QueueError> {
        let span = tracing::debug_span!("queue.reserve", queue = %queue, n, reserved = tracing::field::Empty);
        async move {
            check_batch(n)?;
            check_lease(lease)?;
            let now = self.now();
            let lease_until = after(now, lease, "lease length")?;
            let jobs = self
                .queue
                .reserve(queue, n, LeaseNonce::random(), lease_until, now)
                .await?;
            tracing::Span::current().record("reserved", jobs.len());
            Ok(jobs)
        }
        .instrument(span)
        .await
    }

    /// [`QueueService::reserve`], waiting up to `max_wait` for jobs: when
    /// nothing is due it waits for the backend's wake-up
    /// ([`Queue::wait_for_jobs`]) at most [`QueueConfig::poll`] at a time,
    /// and looks again, until a job comes or `max_wait` (real time) has
    /// passed. Returns nothing only after `max_wait`.
    ///
    /// # Errors
    /// As [`QueueService::reserve`].
    pub async fn reserve_wait(
        &self,
        queue: &QueueName,
        n: usize,
        lease: Duration,
        max_wait: Duration,
    ) -> Result<Vec<ReservedJob>, QueueError> {
        let span = tracing::debug_span!("queue.reserve_wait", queue = %queue, n, max_wait_ms = max_wait.as_millis());
        async move {
            check_batch(n)?;
            check_lease(lease)?;
            let start = tokio::time::Instant::now();
            loop {
                let jobs = self.reserve(queue, n, lease).await?;
                let remaining = max_wait.saturating_sub(start.elapsed());
                if !jobs.is_empty() || remaining.is_zero() {
                    return Ok(jobs);
                }
                self.queue
                    .wait_for_jobs(queue, remaining.min(self.config.poll))
                    .await?;
            }
        }
        .instrument(span)
        .await
    }

    /// Acks (deletes) the job whose lease `token` holds.
    ///
    /// # Errors
    /// [`QueueError::StaleLease`] if the lease is no longer held (nothing
    /// changed); the backend's error.
    pub async fn ack(&self, token: &LeaseToken) -> Result<(), QueueError> {
        let span = tracing::debug_span!("queue.ack", job = %token.job());
        async move { self.queue.ack(token, self.now()).await }
            .instrument(span)
            .await
    }

    /// Acks up to [`MAX_BATCH`] jobs, each on its own: one outcome per
    /// token, in order. An empty list is `Ok` and calls nothing.
    ///
    /// # Errors
    /// [`QueueError::InvalidArgument`] for more than [`MAX_BATCH`] tokens;
    /// the backend's error (then which were acked is unknown).
    pub async fn ack_many(
        &self,
        tokens: &[LeaseToken],
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        let span = tracing::debug_span!(
            "queue.ack_many",
            count = tokens.len(),
            acked = tracing::field::Empty
        );
        async move {
            if tokens.is_empty() {
                return Ok(Vec::new());
            }
            check_batch(tokens.len())?;
            let out = self.queue.ack_many(tokens, self.now()).await?;
            if out.len() != tokens.len() {
                return Err(QueueError::Corrupt(format!(
                    "the backend returned {} outcomes for {} tokens",
                    out.len(),
                    tokens.len()
                )));
            }
            tracing::Span::current().record("acked", out.iter().filter(|r| r.is_ok()).count());
            Ok(out)
        }
        .instrument(span)
        .await
    }

    /// Gives the job of `token` back after a failed attempt, recording
    /// `class`: delayed per `policy`, or dead if it was its last attempt
    /// (or `policy` is [`NackPolicy::Never`]).
    ///
    /// # Errors
    /// [`QueueError::StaleLease`] if the lease is no longer held (nothing
    /// changed); [`QueueError::InvalidArgument`] for a retry time past the
    /// end of time; the backend's error.
    pub async fn nack(
        &self,
        token: &LeaseToken,
        policy: NackPolicy,
        class: &ErrorClass,
    ) -> Result<NackOutcome, QueueError> {
        let span = tracing::debug_span!(
            "queue.nack",
            job = %token.job(),
            attempt = token.attempt(),
            class = class.as_str(),
            outcome = tracing::field::Empty
        );
        async move {
            let now = self.now();
            let retry = match policy {
                NackPolicy::Never => Retry::Never,
                NackPolicy::Backoff => {
                    let delay = self
                        .config
                        .backoff
                        .delay(token.attempt(), &mut rand::thread_rng());
                    Retry::At(after(now, delay, "retry delay")?)
                }
                NackPolicy::After(d) => {
                    Retry::At(after(now, d.min(self.config.backoff.cap), "retry delay")?)
                }
            };
            let outcome = self.queue.nack(token, retry, class, now).await?;
            let shown = match outcome {
                NackOutcome::Retrying(_) => "retrying",
                NackOutcome::Dead => "dead",
            };
            tracing::Span::current().record("outcome", shown);
            Ok(outcome)
        }
        .instrument(span)
        .await
    }

    /// Extends the lease of `token` to `lease` (more than zero, at most
    /// [`MAX_LEASE`]) from now.
    ///
    /// # Errors
    /// [`QueueError::InvalidArgument`] for `lease`;
    /// [`QueueError::StaleLease`] if the lease is no longer held (nothing
    /// changed); the backend's error.
    pub async fn extend(&self, token: &LeaseToken, lease: Duration) -> Result<(), QueueError> {
        let span = tracing::debug_span!("queue.extend", job = %token.job());
        async move {
            check_lease(lease)?;
            let now = self.now();
            let until = after(now, lease, "lease length")?;
            self.queue.extend(token, until, now).await
        }
        .instrument(span)
        .await
    }

    /// A page of `queue`'s dead-letter set: at most `limit` (1 to
    /// [`MAX_DEAD_PAGE`]) jobs with ids above `after`, ascending. A page
    /// shorter than `limit` is the last.
    ///
    /// # Errors
    /// [`QueueError::InvalidArgument`] for `limit`; the backend's error.
    pub async fn dead_jobs(
        &self,
        queue: &QueueName,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<DeadJob>, QueueError> {
        let span = tracing::debug_span!("queue.dead_jobs", queue = %queue, limit);
        async move {
            if !(1..=MAX_DEAD_PAGE).contains(&limit) {
                return Err(QueueError::InvalidArgument("page size"));
            }
            self.queue.dead_jobs(queue, after, limit).await
        }
        .instrument(span)
        .await
    }

    /// Makes the dead job `id` of `queue` waiting again, its attempts
    /// reset.
    ///
    /// # Errors
    /// [`QueueError::NotDead`] if it is not in `queue`'s dead-letter set
    /// (nothing changed); the backend's error.
    pub async fn redrive(&self, queue: &QueueName, id: JobId) -> Result<(), QueueError> {
        let span = tracing::debug_span!("queue.redrive", queue = %queue, job = %id);
        async move { self.queue.redrive(queue, id, self.now()).await }
            .instrument(span)
            .await
    }

    /// Redrives every dead job of `queue`, [`DEAD_BATCH`] per backend call;
    /// returns how many.
    ///
    /// # Errors
    /// The backend's error (the jobs redriven before it stay redriven).
    pub async fn redrive_all(&self, queue: &QueueName) -> Result<u64, QueueError> {
        let span = tracing::debug_span!("queue.redrive_all", queue = %queue, count = tracing::field::Empty);
        async move {
            let total = self
                .drain(|| async { self.queue.redrive_dead(queue, DEAD_BATCH, self.now()).await })
                .await?;
            tracing::Span::current().record("count", total);
            Ok(total)
        }
        .instrument(span)
        .await
    }

    /// Deletes every dead job of `queue`, [`DEAD_BATCH`] per backend call;
    /// returns how many.
    ///
    /// # Errors
    /// The backend's error (the jobs deleted before it stay deleted).
    pub async fn purge_dead(&self, queue: &QueueName) -> Result<u64, QueueError> {
        let span =
            tracing::debug_span!("queue.purge_dead", queue = %queue, count = tracing::field::Empty);
        async move {
            let total = self
                .drain(|| async { self.queue.purge_dead(queue, DEAD_BATCH).await })
                .await?;
            tracing::Span::current().record("count", total);
            Ok(total)
        }
        .instrument(span)
        .await
    }

    /// Calls `batch` until it returns fewer than [`DEAD_BATCH`]; the sum.
    async fn drain<F, Fut>(&self, batch: F) -> Result<u64, QueueError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<u64, QueueError>>,
    {
        let mut total = 0u64;
        loop {
            let n = batch().await?;
            total = total.saturating_add(n);
            if n < DEAD_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// The counts of `queue` now: waiting, delayed, in flight, dead.
    ///
    /// # Errors
    /// The backend's error.
    pub async fn stats(&self, queue: &QueueName) -> Result<QueueStats, QueueError> {
        let span = tracing::debug_span!("queue.stats", queue = %queue);
        async move { self.queue.stats(queue, self.now()).await }
            .instrument(span)
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations_round_up_to_whole_microseconds() {
        assert_eq!(
            micros_up(Duration::from_nanos(1), "x").unwrap(),
            TimeDelta::microseconds(1)
        );
        assert_eq!(
            micros_up(Duration::from_nanos(1000), "x").unwrap(),
            TimeDelta::microseconds(1)
        );
        assert_eq!(
            micros_up(Duration::from_nanos(1001), "x").unwrap(),
            TimeDelta::microseconds(2)
        );
        assert_eq!(
            micros_up(Duration::MAX, "huge"),
            Err(QueueError::InvalidArgument("huge"))
        );
        let now = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        assert_eq!(
            after(now, Duration::from_secs(u64::MAX / 2_000_000), "delay"),
            Err(QueueError::InvalidArgument("delay"))
        );
    }

    #[test]
    fn the_default_config_is_valid_and_bad_ones_are_refused() {
        assert_eq!(QueueConfig::default().validate(), Ok(()));
        let d = QueueConfig::default();
        for bad in [
            QueueConfig {
                max_payload: 0,
                ..d
            },
            QueueConfig {
                default_max_attempts: 0,
                ..d
            },
            QueueConfig {
                default_max_attempts: MAX_ATTEMPTS + 1,
                ..d
            },
            QueueConfig {
                poll: Duration::ZERO,
                ..d
            },
        ] {
            assert!(matches!(
                bad.validate(),
                Err(QueueError::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn job_ids_are_distinct() {
        let ids = job_ids(1000);
        let set: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(set.len(), 1000);
    }
}
