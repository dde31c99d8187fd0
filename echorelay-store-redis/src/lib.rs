//! # echorelay-store-redis
//!
//! The job queue of echorelay on Redis: [`RedisQueue`] implements core's
//! [`Queue`] port (`echorelay_core::queue`, whose module docs are the
//! contract) over the `redis` crate's [`ConnectionManager`], which
//! reconnects by itself after a dropped connection.
//!
//! ```no_run
//! use echorelay_store_redis::{RedisOptions, RedisQueue};
//!
//! # async fn demo() -> Result<(), echorelay_core::queue::QueueError> {
//! let queue = RedisQueue::connect_with(
//!     RedisOptions::new("redis://127.0.0.1:6379").prefix("echorelay"),
//! )
//! .await?;
//! # let _ = queue;
//! # Ok(()) }
//! ```
//!
//! ## Key layout
//!
//! Every key starts with the hash tag `{prefix}` ([`RedisOptions::prefix`],
//! default `echorelay`), so on Redis Cluster every key of one prefix lives
//! in one slot, and every key a script touches is in the slot of the keys
//! it declares. (The scripts that act on a lease token, ack, nack and
//! extend, declare the job's key and derive its queue's keys from the job
//! record: same slot, which Redis Cluster accepts, although Redis's docs
//! ask scripts to declare every key.) The connection itself is to one
//! server (`redis::Client` with its `ConnectionManager`, which does not
//! follow a cluster's `MOVED` redirects): a standalone Redis or a primary.
//! Running on a cluster also needs the crate's cluster-aware client, which
//! this crate does not use yet; the key layout is ready for it.
//! Different prefixes are separate queue stores on one server (the tests
//! use a random prefix each).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}:q:<queue>:ready` | zset | jobs not leased, scored by their due time: waiting (score ≤ now) and delayed (score > now) |
//! | `{prefix}:q:<queue>:leased` | zset | leased jobs, scored by their lease end; a score ≤ now is an expired lease, so the job is waiting again |
//! | `{prefix}:q:<queue>:dead` | zset | the dead-letter set, every score 0, so `ZRANGEBYLEX` pages it by id |
//! | `{prefix}:q:<queue>:dedup` | hash | de-duplication key → job id, for jobs waiting, delayed or in flight |
//! | `{prefix}:j:<id>` | hash | one job: queue, payload, attempts, max attempts, enqueue time, de-duplication key, the lease's nonce while leased, the last error class, when it went dead |
//! | `{prefix}:wake:<queue>` | pub/sub channel | "jobs may be due", the message their number (decimal): published by enqueue, nack and redrive; a waiter is woken per job, every waiter for a message that is not a number |
//!
//! Ids are the 32 lowercase hex digits of the job id, which sort like the
//! id's bytes: the dead-letter set pages by id ascending. Times are
//! microseconds since the Unix epoch (exact in a zset score up to 2^53 µs,
//! about the year 2255; a time outside that is `InvalidArgument`), always
//! the `now` core passes, never the server's clock. An acked job's hash is
//! deleted; a purged dead job's too.
//!
//! ## Atomicity
//!
//! Every operation is one Lua script (`EVALSHA`, loaded again by itself
//! after a server restart): Redis runs a script to its end before any
//! other command, so a reservation, an ack, a nack, an extend, each
//! decide and write in one step, and racing callers see each other's
//! whole effect or none. A script reads and checks every record it will
//! touch before its first write, so a record it cannot read
//! (`QueueError::Corrupt`) leaves everything as it was. `ack_many` is one
//! script for the whole batch, each token decided on its own.
//!
//! ## Bounded scripts
//!
//! No script walks a whole backlog, and none `unpack`s a list into a
//! Redis call (Lua's stack limit: apalis's Redis queue fails with "too
//! many results to unpack" at 20,000 due jobs). A reservation of `n` (at
//! most [`MAX_BATCH`], 1,000) reads at
//! most `n` due jobs (`ZRANGEBYSCORE … LIMIT 0 n`) and at most `4n`
//! expired leases, merges them by due time and leases the `n` earliest;
//! expired leases are reserved straight from the leased set, never moved
//! back in bulk. Batch calls take at most 1,000 items; `redrive_dead` and
//! `purge_dead` run in scripts of at most 1,000 jobs each. The tests
//! reserve 50,000 due jobs in batches.
//!
//! ## Waking idle consumers
//!
//! [`Queue::wait_for_jobs`] opens, on first use, one pub/sub connection
//! per [`RedisQueue`] (`PSUBSCRIBE {prefix}:wake:*`) and returns when a
//! script publishes for that queue (a job made due), or after `max_wait`.
//! A lost subscription wakes every waiter and is reopened with a backoff.
//! Messages are not queued anywhere: a wake-up published while nobody
//! listens is lost, which the contract allows (consumers reserve after
//! every wait, and `max_wait` is the backstop poll).
//!
//! ## Durability
//!
//! Redis keeps the queue in memory; what survives a restart is what its
//! persistence settings say. With neither AOF nor RDB snapshots (the CI
//! server's setting, and Redis's without a config file that enables them)
//! **a restart loses everything**: every waiting, delayed, leased and dead
//! job and every de-duplication key; consumers holding leases then get
//! `StaleLease` on their ack. With RDB snapshots only, a restart loses
//! whatever changed since the last snapshot (jobs acked since then come
//! back, jobs enqueued since then are gone). With `appendonly yes` and
//! `appendfsync always` an operation that returned is on disk; with
//! `appendfsync everysec` (Redis's default for AOF) up to about a second
//! of operations can be lost. The scripts themselves are reloaded
//! automatically after a restart. Choose Postgres for jobs that must not
//! be lost, or configure Redis's AOF accordingly.
//!
//! ## Errors
//!
//! A connection that fails, drops or times out is
//! [`QueueError::Unavailable`]; then whether the operation happened is
//! unknown (an ack retried after it did is refused as stale). The manager
//! reconnects in the background. A key of the wrong type or a record that
//! does not parse is [`QueueError::Corrupt`]. Nothing panics on what the
//! server holds or returns.
//!
//! ## Tests
//!
//! The tests run against `REDIS_URL` (see [`test_redis`]): each on its own
//! random prefix, whose keys are deleted afterwards.
#![forbid(unsafe_code)]

mod reply;
mod scripts;
mod session_scripts;
pub mod sessions;
mod testing;
mod wake;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use echorelay_core::queue::{
    DeadJob, ErrorClass, JobId, LeaseNonce, LeaseToken, MAX_BATCH, NackOutcome, NewJob, Queue,
    QueueError, QueueName, QueueStats, ReservedJob, Retry, check_batch,
};
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use redis;
pub use sessions::{RedisSessions, SessionTtl};
pub use testing::{TestRedis, test_redis};

use reply::{
    array, bytes, corrupt, corrupt_job, count, hex_id, int, job_id, micros, status, text, time,
};

/// The default key prefix (hash tag): `echorelay`.
pub const DEFAULT_PREFIX: &str = "echorelay";

/// How to connect a [`RedisQueue`].
#[derive(Clone)]
pub struct RedisOptions {
    url: String,
    prefix: String,
    response_timeout: Duration,
    connection_timeout: Duration,
}

impl RedisOptions {
    /// Options for the server at `url` (`redis://[user:password@]host:port[/db]`,
    /// `rediss://` is not compiled in), with the default prefix and
    /// timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            response_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(2),
        }
    }

    /// The key prefix, used as the hash tag of every key: 1 to 64
    /// characters of `A-Z a-z 0-9 . _ : -`. Queues under different
    /// prefixes never see each other.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a command may wait for its answer before it is
    /// `Unavailable` (default 5 s). A script that timed out may still have
    /// run.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long one connection attempt may take (default 2 s).
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("response_timeout", &self.response_timeout)
            .field("connection_timeout", &self.connection_timeout)
            .finish()
    }
}

/// `url` with its password replaced by `***` (for logs and `Debug`): core's
/// [`echorelay_core::redact::redact_url`], shared with the Postgres crate.
pub use echorelay_core::redact::redact_url;

/// Whether `prefix` is usable as a hash tag and in a `PSUBSCRIBE` pattern.
fn valid_prefix(prefix: &str) -> bool {
    (1..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// Why [`open`] failed.
pub(crate) enum Open {
    /// The prefix is not a valid hash tag.
    Prefix,
    /// The URL does not parse.
    Url,
    /// The server could not be reached.
    Redis(redis::RedisError),
}

/// A client and its reconnecting connection for `options` (after checking
/// the prefix): shared by the queue and the session store.
pub(crate) async fn open(
    options: &RedisOptions,
) -> Result<(redis::Client, ConnectionManager), Open> {
    if !valid_prefix(&options.prefix) {
        return Err(Open::Prefix);
    }
    let client = redis::Client::open(options.url.as_str()).map_err(|_| Open::Url)?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(options.response_timeout))
        .set_connection_timeout(Some(options.connection_timeout))
        .set_number_of_retries(4)
        .set_max_delay(Duration::from_secs(2));
    let conn = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(Open::Redis)?;
    Ok((client, conn))
}

/// The names of one prefix's keys.
struct Keys {
    prefix: String,
    /// `{prefix}:j:`
    job: String,
    /// `{prefix}:q:`
    queue: String,
    /// `{prefix}:wake:`
    channel: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            job: format!("{{{prefix}}}:j:"),
            queue: format!("{{{prefix}}}:q:"),
            channel: format!("{{{prefix}}}:wake:"),
        }
    }

    fn of(&self, queue: &QueueName, kind: &str) -> String {
        format!("{}{}:{}", self.queue, queue.as_str(), kind)
    }

    fn job(&self, id: JobId) -> String {
        format!("{}{}", self.job, hex_id(id))
    }

    fn channel(&self, queue: &QueueName) -> String {
        format!("{}{}", self.channel, queue.as_str())
    }
}

struct Inner {
    conn: ConnectionManager,
    keys: Keys,
    url: String,
    wake: wake::Wakeups,
}

/// The job queue on Redis: see the crate docs. Clones share the
/// connection.
#[derive(Clone)]
pub struct RedisQueue {
    inner: Arc<Inner>,
    /// Deletes a test prefix's keys when the last clone goes.
    _cleanup: Option<Arc<testing::PrefixGuard>>,
}

impl fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQueue")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.keys.prefix)
            .finish_non_exhaustive()
    }
}

/// A failed command: `Corrupt` for a key of the wrong type, else
/// `Unavailable`.
fn backend(e: redis::RedisError) -> QueueError {
    if e.code() == Some("WRONGTYPE") {
        QueueError::Corrupt("a queue key holds a value of the wrong type".to_owned())
    } else {
        QueueError::Unavailable(e.to_string())
    }
}

impl RedisQueue {
    /// Connects to `url` with the default prefix and timeouts.
    ///
    /// # Errors
    /// `InvalidArgument` for a URL that does not parse; `Unavailable` when
    /// the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, QueueError> {
        Self::connect_with(RedisOptions::new(url)).await
    }

    /// Connects with `options`.
    ///
    /// # Errors
    /// `InvalidArgument` for a URL that does not parse or a malformed
    /// prefix; `Unavailable` when the server cannot be reached.
    pub async fn connect_with(options: RedisOptions) -> Result<Self, QueueError> {
        let (client, conn) = open(&options).await.map_err(|e| match e {
            Open::Prefix => QueueError::InvalidArgument("redis key prefix"),
            Open::Url => QueueError::InvalidArgument("redis url"),
            Open::Redis(e) => backend(e),
        })?;
        let keys = Keys::new(&options.prefix);
        let wake = wake::Wakeups::new(client, keys.channel.clone(), options.connection_timeout);
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                keys,
                url: options.redacted_url(),
                wake,
            }),
            _cleanup: None,
        })
    }

    /// The key prefix (the hash tag of every key).
    pub fn prefix(&self) -> &str {
        &self.inner.keys.prefix
    }

    /// A handle on the connection (cheap to clone, reconnects by itself),
    /// for health checks and operations of your own.
    pub fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    async fn run(&self, inv: &redis::ScriptInvocation<'_>) -> Result<Value, QueueError> {
        let mut conn = self.inner.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(backend)
    }

    /// Redrives (`purge = false`) or purges up to `limit` dead jobs, in
    /// scripts of at most [`MAX_BATCH`] jobs each.
    async fn dead_batches(
        &self,
        queue: &QueueName,
        limit: usize,
        now: Option<DateTime<Utc>>,
    ) -> Result<u64, QueueError> {
        let keys = &self.inner.keys;
        let now_us = now.map(micros).transpose()?;
        let mut done: u64 = 0;
        let mut left = limit;
        while left > 0 {
            let chunk = left.min(MAX_BATCH);
            let value = match now_us {
                Some(now_us) => {
                    let mut inv = scripts::REDRIVE.prepare_invoke();
                    inv.key(keys.of(queue, "dead"))
                        .key(keys.of(queue, "ready"))
                        .key(keys.of(queue, "dedup"))
                        .arg(&keys.job)
                        .arg(now_us)
                        .arg(keys.channel(queue))
                        .arg("first")
                        .arg(chunk);
                    self.run(&inv).await?
                }
                None => {
                    let mut inv = scripts::PURGE.prepare_invoke();
                    inv.key(keys.of(queue, "dead")).arg(&keys.job).arg(chunk);
                    self.run(&inv).await?
                }
            };
            let n: usize = count(value)?;
            done += n as u64;
            if n < chunk {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok(done)
    }
}

fn outcome_of(acked: Value) -> Result<Result<(), QueueError>, QueueError> {
    match int(acked)? {
        1 => Ok(Ok(())),
        0 => Ok(Err(QueueError::StaleLease)),
        _ => Err(corrupt("an ack outcome that is neither 0 nor 1")),
    }
}

#[async_trait]
impl Queue for RedisQueue {
    async fn enqueue(
        &self,
        queue: &QueueName,
        jobs: Vec<NewJob>,
        now: DateTime<Utc>,
    ) -> Result<Vec<JobId>, QueueError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        check_batch(jobs.len())?;
        let keys = &self.inner.keys;
        let mut inv = scripts::ENQUEUE.prepare_invoke();
        inv.key(keys.of(queue, "ready"))
            .key(keys.of(queue, "dedup"))
            .arg(&keys.job)
            .arg(queue.as_str())
            .arg(micros(now)?)
            .arg(keys.channel(queue))
            .arg(jobs.len());
        for job in &jobs {
            inv.arg(hex_id(job.id))
                .arg(job.payload.as_slice())
                .arg(micros(job.run_at)?)
                .arg(job.max_attempts)
                .arg(job.dedup_key.as_ref().map_or("", |k| k.as_str()));
        }
        let (word, rest) = status(self.run(&inv).await?)?;
        match word.as_str() {
            "ok" => {}
            "dup" => return Err(QueueError::InvalidArgument("duplicate job id")),
            _ => return Err(corrupt("an unknown enqueue status")),
        }
        let ids = rest.map(job_id).collect::<Result<Vec<_>, _>>()?;
        if ids.len() != jobs.len() {
            return Err(corrupt("an enqueue reply of the wrong length"));
        }
        Ok(ids)
    }

    async fn reserve(
        &self,
        queue: &QueueName,
        n: usize,
        nonce: LeaseNonce,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReservedJob>, QueueError> {
        check_batch(n)?;
        let keys = &self.inner.keys;
        let mut inv = scripts::RESERVE.prepare_invoke();
        inv.key(keys.of(queue, "ready"))
            .key(keys.of(queue, "leased"))
            .key(keys.of(queue, "dead"))
            .key(keys.of(queue, "dedup"))
            .arg(&keys.job)
            .arg(micros(now)?)
            .arg(n)
            .arg(hex::encode(nonce.as_bytes()))
            .arg(micros(lease_until)?)
            .arg(ErrorClass::LEASE_EXPIRED);
        let (word, mut rest) = status(self.run(&inv).await?)?;
        match word.as_str() {
            "ok" => {}
            "corrupt" => return Err(corrupt_job(rest)),
            _ => return Err(corrupt("an unknown reserve status")),
        }
        let missing = || corrupt("a short reserve reply");
        let dead: u64 = count(rest.next().ok_or_else(missing)?)?;
        let dangling: u64 = count(rest.next().ok_or_else(missing)?)?;
        if dead > 0 {
            tracing::debug!(queue = %queue, dead, "reserve dead-lettered jobs whose last lease expired");
        }
        if dangling > 0 {
            tracing::warn!(queue = %queue, dangling, "reserve dropped queue entries whose job record is missing");
        }
        let mut jobs = Vec::new();
        while let Some(id) = rest.next() {
            let id = job_id(id)?;
            let payload = bytes(rest.next().ok_or_else(missing)?)?;
            let attempt: u32 = count(rest.next().ok_or_else(missing)?)?;
            let max_attempts: u32 = count(rest.next().ok_or_else(missing)?)?;
            let enqueued_at = time(int(rest.next().ok_or_else(missing)?)?)?;
            jobs.push(ReservedJob {
                token: LeaseToken::new(id, nonce, attempt),
                payload,
                attempt,
                max_attempts,
                enqueued_at,
                lease_until,
            });
        }
        if jobs.len() > n {
            return Err(corrupt("a reserve reply longer than asked"));
        }
        Ok(jobs)
    }

    async fn ack(&self, token: &LeaseToken, now: DateTime<Utc>) -> Result<(), QueueError> {
        let mut outcomes = self.ack_many(std::slice::from_ref(token), now).await?;
        match (outcomes.pop(), outcomes.is_empty()) {
            (Some(outcome), true) => outcome,
            _ => Err(corrupt("an ack reply of the wrong length")),
        }
    }

    async fn ack_many(
        &self,
        tokens: &[LeaseToken],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        check_batch(tokens.len())?;
        let keys = &self.inner.keys;
        let mut inv = scripts::ACK.prepare_invoke();
        inv.arg(&keys.queue).arg(micros(now)?);
        for t in tokens {
            inv.key(keys.job(t.job()))
                .arg(hex_id(t.job()))
                .arg(hex::encode(t.nonce().as_bytes()));
        }
        let outcomes = array(self.run(&inv).await?)?
            .into_iter()
            .map(outcome_of)
            .collect::<Result<Vec<_>, _>>()?;
        if outcomes.len() != tokens.len() {
            return Err(corrupt("an ack reply of the wrong length"));
        }
        Ok(outcomes)
    }

    async fn nack(
        &self,
        token: &LeaseToken,
        retry: Retry,
        class: &ErrorClass,
        now: DateTime<Utc>,
    ) -> Result<NackOutcome, QueueError> {
        let keys = &self.inner.keys;
        let (mode, retry_us) = match retry {
            Retry::At(t) => ("at", micros(t)?),
            Retry::Never => ("never", 0),
        };
        let mut inv = scripts::NACK.prepare_invoke();
        inv.key(keys.job(token.job()))
            .arg(&keys.queue)
            .arg(hex_id(token.job()))
            .arg(hex::encode(token.nonce().as_bytes()))
            .arg(micros(now)?)
            .arg(mode)
            .arg(retry_us)
            .arg(class.as_str())
            .arg(&keys.channel);
        let (word, rest) = status(self.run(&inv).await?)?;
        match (word.as_str(), retry) {
            ("stale", _) => Err(QueueError::StaleLease),
            ("dead", _) => Ok(NackOutcome::Dead),
            ("retry", Retry::At(t)) => Ok(NackOutcome::Retrying(t)),
            ("corrupt", _) => Err(corrupt_job(rest)),
            _ => Err(corrupt("an unknown nack status")),
        }
    }

    async fn extend(
        &self,
        token: &LeaseToken,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let keys = &self.inner.keys;
        let mut inv = scripts::EXTEND.prepare_invoke();
        inv.key(keys.job(token.job()))
            .arg(&keys.queue)
            .arg(hex_id(token.job()))
            .arg(hex::encode(token.nonce().as_bytes()))
            .arg(micros(now)?)
            .arg(micros(lease_until)?);
        outcome_of(self.run(&inv).await?)?
    }

    async fn dead_jobs(
        &self,
        queue: &QueueName,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<DeadJob>, QueueError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = &self.inner.keys;
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({}", hex_id(id)));
        let mut inv = scripts::DEAD_PAGE.prepare_invoke();
        inv.key(keys.of(queue, "dead"))
            .arg(&keys.job)
            .arg(start)
            .arg(limit.min(i64::MAX as usize));
        let mut items = array(self.run(&inv).await?)?.into_iter();
        let missing = || corrupt("a dead job with missing fields");
        let mut jobs = Vec::new();
        while let Some(id) = items.next() {
            let id = job_id(id)?;
            let payload = bytes(items.next().ok_or_else(missing)?)?;
            let attempts: u32 = count(items.next().ok_or_else(missing)?)?;
            let max_attempts: u32 = count(items.next().ok_or_else(missing)?)?;
            let class = text(items.next().ok_or_else(missing)?)?;
            let error_class =
                ErrorClass::new(&class).map_err(|_| corrupt("a dead job's error class"))?;
            let enqueued_at = time(int(items.next().ok_or_else(missing)?)?)?;
            let died_at = time(int(items.next().ok_or_else(missing)?)?)?;
            jobs.push(DeadJob {
                id,
                payload,
                attempts,
                max_attempts,
                error_class,
                enqueued_at,
                died_at,
            });
        }
        Ok(jobs)
    }

    async fn redrive(
        &self,
        queue: &QueueName,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let keys = &self.inner.keys;
        let mut inv = scripts::REDRIVE.prepare_invoke();
        inv.key(keys.of(queue, "dead"))
            .key(keys.of(queue, "ready"))
            .key(keys.of(queue, "dedup"))
            .arg(&keys.job)
            .arg(micros(now)?)
            .arg(keys.channel(queue))
            .arg("one")
            .arg(hex_id(id));
        match int(self.run(&inv).await?)? {
            1 => Ok(()),
            0 => Err(QueueError::NotDead),
            _ => Err(corrupt("a redrive count that is neither 0 nor 1")),
        }
    }

    async fn redrive_dead(
        &self,
        queue: &QueueName,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<u64, QueueError> {
        self.dead_batches(queue, limit, Some(now)).await
    }

    async fn purge_dead(&self, queue: &QueueName, limit: usize) -> Result<u64, QueueError> {
        self.dead_batches(queue, limit, None).await
    }

    async fn stats(&self, queue: &QueueName, now: DateTime<Utc>) -> Result<QueueStats, QueueError> {
        let keys = &self.inner.keys;
        let mut inv = scripts::STATS.prepare_invoke();
        inv.key(keys.of(queue, "ready"))
            .key(keys.of(queue, "leased"))
            .key(keys.of(queue, "dead"))
            .arg(micros(now)?);
        let mut items = array(self.run(&inv).await?)?.into_iter();
        let mut next = || -> Result<u64, QueueError> {
            count(items.next().ok_or_else(|| corrupt("a short stats reply"))?)
        };
        Ok(QueueStats {
            waiting: next()?,
            delayed: next()?,
            in_flight: next()?,
            dead: next()?,
        })
    }

    async fn wait_for_jobs(&self, queue: &QueueName, max_wait: Duration) -> Result<(), QueueError> {
        self.inner.wake.wait(queue.as_str(), max_wait).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact_url("redis://:s3cret@host"), "redis://:***@host");
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        assert_eq!(
            redact_url("redis+unix:///tmp/r.sock?db=1&pass=s3cret"),
            "redis+unix:///tmp/r.sock?db=1&pass=***"
        );
        let o = RedisOptions::new("redis://:s3cret@host");
        assert!(!format!("{o:?}").contains("s3cret"));
    }

    #[test]
    fn prefixes_cannot_break_the_hash_tag_or_the_pattern() {
        assert!(valid_prefix("echorelay"));
        assert!(valid_prefix("er-test_1.a:b"));
        for bad in ["", "a{b", "a}b", "a*", "a?", "a[b]", "a b", &"x".repeat(65)] {
            assert!(!valid_prefix(bad), "{bad}");
        }
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let k = Keys::new("p");
        let q = QueueName::new("mail").unwrap_or_else(|_| unreachable!());
        assert_eq!(k.of(&q, "ready"), "{p}:q:mail:ready");
        assert_eq!(k.channel(&q), "{p}:wake:mail");
        assert!(
            k.job(JobId::from_bytes([0xab; 16]))
                .starts_with("{p}:j:abab")
        );
    }
}
