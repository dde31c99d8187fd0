//! The job queue ([`Queue`]) on PostgreSQL: table `queue_jobs`
//! (`migrations/0004_queue.sql`, documented in `SCHEMA.md`).
//!
//! One row per job. `run_at` holds both times the contract needs, so that
//! "due" is one index range: with no lease it is when the job is due; with
//! a lease (`lease_nonce` set) it is when the lease ends, after which the
//! job is due again. Every method is one statement (its own transaction):
//!
//! - **enqueue**: `INSERT … SELECT FROM unnest(…) ON CONFLICT (queue,
//!   dedup_key) WHERE … DO UPDATE … RETURNING id`: the partial unique index
//!   on live keys decides de-duplication, and the conflicting row's id
//!   comes back from the same statement (the no-op update locks it, so it
//!   is the holder at commit). All or nothing.
//! - **reserve**: `SELECT … FOR UPDATE SKIP LOCKED` of the earliest due
//!   rows (an index range of `queue_jobs_due`), then in the same statement
//!   one `UPDATE` leases them (attempts + 1, the nonce, `run_at` = the
//!   lease end) and another moves the ones whose attempts are spent to the
//!   dead-letter set (`lease_expired`). Both updates find their rows by
//!   `ctid` (a TID scan: the rows are locked by this statement, so they
//!   cannot move before it commits), never by a join the planner could
//!   turn into a scan of the table. Racing reservers skip each other's
//!   rows: disjoint by construction.
//! - **ack / nack / extend**: a `DELETE`/`UPDATE` whose `WHERE` is the
//!   lease check (`id`, `lease_nonce`, `run_at > now`); zero rows is
//!   [`QueueError::StaleLease`]. Row locks make an ack racing a
//!   re-reservation end with exactly one of them having the job.
//! - Acked and purged jobs are deleted, never kept.
//!
//! Time is always the `now` argument, never the database's clock.
//!
//! ## Wake-ups (LISTEN/NOTIFY)
//!
//! An enqueue with a job due now, a nack whose retry is due now and a
//! redrive send `pg_notify('echorelay_queue_' ‖ left(md5(current_schema()),
//! 16), '<queue> <n>')` inside their statement, `n` the number of jobs made
//! due, so the notification is delivered at commit and only if it commits.
//! A listener wakes `n` waiters of the queue (one per job, not all of
//! them: with many idle consumers, waking all sent most of them to reserve
//! nothing); a payload without a count wakes every waiter of the queue. Each [`PgStore`] (shared by its
//! clones) runs at most one listener, started by the first
//! [`Queue::wait_for_jobs`] on its own connection (`application_name`:
//! the store's name + `-queue-listener`), reconnecting after any error.
//! A waiter returns when a notification for its queue arrives, when the
//! listener (re)connects (notifications may have been missed meanwhile),
//! or after `max_wait`. Notifications are a hint, never the record: a
//! delayed job becoming due sends nothing and is found by the caller's
//! next reserve after `max_wait` (the backstop poll), and a notification
//! lost with a connection only costs that wait.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use echorelay_core::queue::{
    DeadJob, ErrorClass, JobId, LeaseNonce, LeaseToken, MAX_ATTEMPTS, MAX_BATCH, NackOutcome,
    NewJob, Queue, QueueError, QueueName, QueueStats, ReservedJob, Retry, check_batch,
};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use tokio::sync::Notify;

use crate::PgStore;

/// The notification channel of the queue, per schema: `echorelay_queue_`
/// and the first 16 hex digits of the MD5 of the schema name.
const CHANNEL_SQL: &str = "'echorelay_queue_' || left(md5(current_schema()), 16)";

/// How often `reserve` tops a batch up after moving spent jobs to the
/// dead-letter set in its way (then it returns what it has: fewer is
/// allowed).
const RESERVE_ROUNDS: usize = 8;

/// How often a redrive is retried after a concurrent enqueue took the
/// redriven job's de-duplication key between the check and the write.
const REDRIVE_ROUNDS: usize = 4;

/// A driver error as the queue's error: a time outside what Postgres
/// stores is the caller's argument; anything else is the backend.
fn queue_err(e: sqlx::Error) -> QueueError {
    if let sqlx::Error::Database(d) = &e {
        match d.code().as_deref() {
            // datetime_field_overflow: a time Postgres cannot store.
            Some("22008") => return QueueError::InvalidArgument("time out of range"),
            // A job id that is already stored (core draws 128 random bits;
            // only a caller of the port replaying a job gets here).
            Some("23505") if d.constraint() == Some("queue_jobs_pkey") => {
                return QueueError::InvalidArgument("job id already exists");
            }
            _ => {}
        }
    }
    QueueError::Unavailable(e.to_string())
}

/// Whether `e` is a unique violation of the de-duplication index.
fn is_dedup_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if d.code().as_deref() == Some("23505") && d.constraint() == Some("queue_jobs_dedup"))
}

fn corrupt(id: &[u8], column: &str, problem: impl std::fmt::Display) -> QueueError {
    QueueError::Corrupt(format!(
        "queue_jobs row {}: column {column}: {problem}",
        hex::encode(id)
    ))
}

/// Reads one column of a `queue_jobs` row, naming the row (by `id`) and
/// the column in the error, never the value.
struct JobRow<'r> {
    row: &'r PgRow,
    id: Vec<u8>,
}

impl<'r> JobRow<'r> {
    fn new(row: &'r PgRow) -> Self {
        let id = row.try_get::<Vec<u8>, _>("id").unwrap_or_default();
        Self { row, id }
    }

    fn get<T>(&self, column: &str) -> Result<T, QueueError>
    where
        T: for<'a> sqlx::Decode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        self.row
            .try_get::<T, _>(column)
            .map_err(|e| corrupt(&self.id, column, e))
    }

    fn id(&self) -> Result<JobId, QueueError> {
        <[u8; 16]>::try_from(self.id.as_slice())
            .map(JobId::from_bytes)
            .map_err(|_| {
                corrupt(
                    &self.id,
                    "id",
                    format!("{} bytes, expected 16", self.id.len()),
                )
            })
    }

    fn count(&self, column: &str) -> Result<u32, QueueError> {
        let v: i32 = self.get(column)?;
        u32::try_from(v)
            .ok()
            .filter(|v| *v <= MAX_ATTEMPTS)
            .ok_or_else(|| corrupt(&self.id, column, format!("{v} out of range")))
    }

    fn time(&self, column: &str) -> Result<DateTime<Utc>, QueueError> {
        self.get(column)
    }
}

fn i32_of(n: u32, what: &'static str) -> Result<i32, QueueError> {
    i32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_ATTEMPTS as i32).contains(n))
        .ok_or(QueueError::InvalidArgument(what))
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Sorts `(due time, job)` pairs earliest first and drops the times.
fn earliest_first(mut jobs: Vec<(DateTime<Utc>, ReservedJob)>) -> Vec<ReservedJob> {
    jobs.sort_by_key(|(due, _)| *due);
    jobs.into_iter().map(|(_, j)| j).collect()
}

/// The reserve statement (`$1` queue, `$2` now, `$3` n, `$4` nonce, `$5`
/// lease end), for tests that check its plan.
#[doc(hidden)]
pub const RESERVE_SQL: &str = "\
    WITH due AS ( \
        SELECT id, ctid AS tid, run_at, attempts >= max_attempts AS spent FROM queue_jobs \
        WHERE queue = $1 AND state = 'ready' AND run_at <= $2 \
        ORDER BY run_at LIMIT $3 \
        FOR UPDATE SKIP LOCKED \
    ), \
    spent AS ( \
        UPDATE queue_jobs SET state = 'dead', lease_nonce = NULL, \
            error_class = 'lease_expired', died_at = $2 \
        WHERE ctid = ANY (ARRAY(SELECT tid FROM due WHERE spent)) \
        RETURNING id \
    ), \
    leased AS ( \
        UPDATE queue_jobs SET attempts = attempts + 1, lease_nonce = $4, run_at = $5 \
        WHERE ctid = ANY (ARRAY(SELECT tid FROM due WHERE NOT spent)) \
        RETURNING id, payload, attempts, max_attempts, enqueued_at, run_at \
    ) \
    SELECT l.id, l.payload, l.attempts, l.max_attempts, l.enqueued_at, l.run_at, \
        d.run_at AS due_at, false AS died \
    FROM leased l JOIN due d ON d.id = l.id \
    UNION ALL \
    SELECT id, NULL, NULL, NULL, NULL, NULL, NULL, true FROM spent";

/// The stale-lease condition every token operation shares: `$1` the job,
/// `$2` the nonce, `$3` now.
const HELD: &str = "id = $1 AND state = 'ready' AND lease_nonce = $2 AND run_at > $3";

/// The columns a redrive sets; `$3` is now. A redriven job keeps its
/// de-duplication key unless a live job of its queue holds it now (then it
/// is redriven without one: two live jobs never share a key).
const REDRIVE_SET: &str = "state = 'ready', run_at = $3, attempts = 0, lease_nonce = NULL, \
     error_class = NULL, died_at = NULL";

#[async_trait]
impl Queue for PgStore {
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
        // Within the batch, the first job with a key is the candidate for
        // it; later ones get whatever the key resolves to.
        let mut seen: HashSet<&str> = HashSet::new();
        let mut ids: Vec<&[u8]> = Vec::with_capacity(jobs.len());
        let mut run_ats = Vec::with_capacity(jobs.len());
        let mut attempts = Vec::with_capacity(jobs.len());
        let mut keys: Vec<Option<&str>> = Vec::with_capacity(jobs.len());
        let mut payloads: Vec<&[u8]> = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let key = job.dedup_key.as_ref().map(|k| k.as_str());
            if let Some(k) = key
                && !seen.insert(k)
            {
                continue;
            }
            ids.push(job.id.as_bytes());
            run_ats.push(job.run_at);
            attempts.push(i32_of(job.max_attempts, "max attempts")?);
            keys.push(key);
            payloads.push(&job.payload);
        }
        // How many waiters to wake: the jobs due now (a job whose key
        // resolved to a live one may count; a spare wake-up only reserves
        // nothing).
        let due_now =
            i32::try_from(jobs.iter().filter(|j| j.run_at <= now).count()).unwrap_or(i32::MAX);
        let rows = sqlx::query(&format!(
            "WITH ins AS ( \
                 INSERT INTO queue_jobs (id, queue, state, run_at, attempts, max_attempts, \
                     dedup_key, payload, enqueued_at) \
                 SELECT j.id, $1, 'ready', j.run_at, 0, j.max_attempts, j.dedup_key, j.payload, $2 \
                 FROM unnest($3::bytea[], $4::timestamptz[], $5::int4[], $6::text[], $7::bytea[]) \
                     AS j (id, run_at, max_attempts, dedup_key, payload) \
                 ON CONFLICT (queue, dedup_key) WHERE dedup_key IS NOT NULL AND state = 'ready' \
                 DO UPDATE SET dedup_key = EXCLUDED.dedup_key \
                 RETURNING id, dedup_key \
             ), \
             woke AS (SELECT pg_notify({CHANNEL_SQL}, $1 || ' ' || $8::int4)::text AS x \
                 WHERE $8::int4 > 0) \
             SELECT id, dedup_key FROM ins \
             UNION ALL SELECT NULL::bytea, x FROM woke"
        ))
        .bind(queue.as_str())
        .bind(now)
        .bind(&ids)
        .bind(&run_ats)
        .bind(&attempts)
        .bind(&keys)
        .bind(&payloads)
        .bind(due_now)
        .fetch_all(&self.pool)
        .await
        .map_err(queue_err)?;
        let mut by_key: HashMap<String, JobId> = HashMap::new();
        let mut own: HashSet<JobId> = HashSet::new();
        for row in &rows {
            let r = JobRow::new(row);
            let raw: Option<Vec<u8>> = r.get("id")?;
            if raw.is_none() {
                continue; // the notification's row
            }
            let id = r.id()?;
            match r.get::<Option<String>>("dedup_key")? {
                Some(k) => {
                    by_key.insert(k, id);
                }
                None => {
                    own.insert(id);
                }
            }
        }
        jobs.iter()
            .map(|job| match &job.dedup_key {
                Some(k) => by_key.get(k.as_str()).copied().ok_or_else(|| {
                    QueueError::Corrupt(format!(
                        "enqueue: no job returned for a de-duplication key of {}",
                        job.id
                    ))
                }),
                None if own.contains(&job.id) => Ok(job.id),
                None => Err(QueueError::Corrupt(format!(
                    "enqueue: job {} was not returned",
                    job.id
                ))),
            })
            .collect()
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
        if lease_until <= now {
            return Err(QueueError::InvalidArgument("lease length"));
        }
        let mut out: Vec<(DateTime<Utc>, ReservedJob)> = Vec::with_capacity(n);
        for _ in 0..RESERVE_ROUNDS {
            let want = n - out.len();
            let rows = sqlx::query(RESERVE_SQL)
                .bind(queue.as_str())
                .bind(now)
                .bind(limit_of(want))
                .bind(&nonce.as_bytes()[..])
                .bind(lease_until)
                .fetch_all(&self.pool)
                .await
                .map_err(queue_err)?;
            let mut died = 0usize;
            for row in &rows {
                let r = JobRow::new(row);
                if r.get::<bool>("died")? {
                    died += 1;
                    continue;
                }
                let attempt = r.count("attempts")?;
                out.push((
                    r.time("due_at")?,
                    ReservedJob {
                        token: LeaseToken::new(r.id()?, nonce, attempt),
                        payload: r.get("payload")?,
                        attempt,
                        max_attempts: r.count("max_attempts")?,
                        enqueued_at: r.time("enqueued_at")?,
                        lease_until: r.time("run_at")?,
                    },
                ));
            }
            // Spent jobs took places in the batch: look again, unless the
            // batch is full or there was nothing more to take.
            if died == 0 || rows.len() < want || out.len() >= n {
                break;
            }
        }
        Ok(earliest_first(out))
    }

    async fn ack(&self, token: &LeaseToken, now: DateTime<Utc>) -> Result<(), QueueError> {
        let done = sqlx::query(&format!("DELETE FROM queue_jobs WHERE {HELD}"))
            .bind(&token.job().as_bytes()[..])
            .bind(&token.nonce().as_bytes()[..])
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(queue_err)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(QueueError::StaleLease)
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
        let ids: Vec<[u8; 16]> = tokens.iter().map(|t| *t.job().as_bytes()).collect();
        let nonces: Vec<[u8; 16]> = tokens.iter().map(|t| *t.nonce().as_bytes()).collect();
        let ids: Vec<&[u8]> = ids.iter().map(|b| &b[..]).collect();
        let nonces: Vec<&[u8]> = nonces.iter().map(|b| &b[..]).collect();
        let rows = sqlx::query(
            "DELETE FROM queue_jobs j \
             USING unnest($1::bytea[], $2::bytea[]) AS t (id, nonce) \
             WHERE j.id = t.id AND j.state = 'ready' AND j.lease_nonce = t.nonce \
               AND j.run_at > $3 \
             RETURNING j.id, j.lease_nonce",
        )
        .bind(&ids)
        .bind(&nonces)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(queue_err)?;
        let mut acked: HashSet<(Vec<u8>, Vec<u8>)> = HashSet::with_capacity(rows.len());
        for row in &rows {
            let r = JobRow::new(row);
            acked.insert((r.id()?.as_bytes().to_vec(), r.get("lease_nonce")?));
        }
        // Each deleted (job, nonce) answers its first token; a repeat of a
        // token in the batch is stale, as it would be one call later.
        Ok(tokens
            .iter()
            .map(|t| {
                let key = (t.job().as_bytes().to_vec(), t.nonce().as_bytes().to_vec());
                if acked.remove(&key) {
                    Ok(())
                } else {
                    Err(QueueError::StaleLease)
                }
            })
            .collect())
    }

    async fn nack(
        &self,
        token: &LeaseToken,
        retry: Retry,
        class: &ErrorClass,
        now: DateTime<Utc>,
    ) -> Result<NackOutcome, QueueError> {
        let retry_at = match retry {
            Retry::At(t) => Some(t),
            Retry::Never => None,
        };
        let row = sqlx::query(&format!(
            "WITH u AS ( \
                 UPDATE queue_jobs SET \
                     state = CASE WHEN $4::timestamptz IS NULL OR attempts >= max_attempts \
                             THEN 'dead' ELSE 'ready' END, \
                     run_at = CASE WHEN $4::timestamptz IS NULL OR attempts >= max_attempts \
                              THEN run_at ELSE $4 END, \
                     lease_nonce = NULL, \
                     error_class = CASE WHEN $4::timestamptz IS NULL OR attempts >= max_attempts \
                                   THEN $5 END, \
                     died_at = CASE WHEN $4::timestamptz IS NULL OR attempts >= max_attempts \
                               THEN $3 END \
                 WHERE {HELD} \
                 RETURNING queue, state, run_at \
             ) \
             SELECT state, run_at, \
                 CASE WHEN state = 'ready' AND run_at <= $3 \
                      THEN pg_notify({CHANNEL_SQL}, queue || ' 1')::text END AS woke \
             FROM u"
        ))
        .bind(&token.job().as_bytes()[..])
        .bind(&token.nonce().as_bytes()[..])
        .bind(now)
        .bind(retry_at)
        .bind(class.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(queue_err)?;
        let Some(row) = row else {
            return Err(QueueError::StaleLease);
        };
        let id = token.job();
        let state: String = row
            .try_get("state")
            .map_err(|e| corrupt(id.as_bytes(), "state", e))?;
        match state.as_str() {
            "dead" => Ok(NackOutcome::Dead),
            "ready" => Ok(NackOutcome::Retrying(
                row.try_get("run_at")
                    .map_err(|e| corrupt(id.as_bytes(), "run_at", e))?,
            )),
            other => Err(corrupt(
                id.as_bytes(),
                "state",
                format!("unknown value {other:?}"),
            )),
        }
    }

    async fn extend(
        &self,
        token: &LeaseToken,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        if lease_until <= now {
            return Err(QueueError::InvalidArgument("lease length"));
        }
        let done = sqlx::query(&format!("UPDATE queue_jobs SET run_at = $4 WHERE {HELD}"))
            .bind(&token.job().as_bytes()[..])
            .bind(&token.nonce().as_bytes()[..])
            .bind(now)
            .bind(lease_until)
            .execute(&self.pool)
            .await
            .map_err(queue_err)?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(QueueError::StaleLease)
        }
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
        let rows = sqlx::query(
            "SELECT id, payload, attempts, max_attempts, error_class, enqueued_at, died_at \
             FROM queue_jobs \
             WHERE queue = $1 AND state = 'dead' AND ($2::bytea IS NULL OR id > $2) \
             ORDER BY id LIMIT $3",
        )
        .bind(queue.as_str())
        .bind(after.as_ref().map(|a| &a.as_bytes()[..]))
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(queue_err)?;
        rows.iter()
            .map(|row| {
                let r = JobRow::new(row);
                let class: String = r.get("error_class")?;
                Ok(DeadJob {
                    id: r.id()?,
                    payload: r.get("payload")?,
                    attempts: r.count("attempts")?,
                    max_attempts: r.count("max_attempts")?,
                    error_class: ErrorClass::new(&class)
                        .map_err(|_| corrupt(&r.id, "error_class", "not an error class"))?,
                    enqueued_at: r.time("enqueued_at")?,
                    died_at: r.time("died_at")?,
                })
            })
            .collect()
    }

    async fn redrive(
        &self,
        queue: &QueueName,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let sql = format!(
            "UPDATE queue_jobs j SET {REDRIVE_SET}, \
                 dedup_key = CASE WHEN EXISTS (SELECT 1 FROM queue_jobs o \
                     WHERE o.queue = j.queue AND o.state = 'ready' AND o.dedup_key = j.dedup_key) \
                 THEN NULL ELSE j.dedup_key END \
             WHERE j.queue = $1 AND j.id = $2 AND j.state = 'dead' \
             RETURNING pg_notify({CHANNEL_SQL}, j.queue || ' 1')::text AS woke"
        );
        for _ in 0..REDRIVE_ROUNDS {
            let done = sqlx::query(&sql)
                .bind(queue.as_str())
                .bind(&id.as_bytes()[..])
                .bind(now)
                .fetch_optional(&self.pool)
                .await;
            match done {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => return Err(QueueError::NotDead),
                Err(e) if is_dedup_conflict(&e) => continue,
                Err(e) => return Err(queue_err(e)),
            }
        }
        Err(QueueError::Unavailable(
            "redrive: the job's de-duplication key kept being taken".into(),
        ))
    }

    async fn redrive_dead(
        &self,
        queue: &QueueName,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<u64, QueueError> {
        if limit == 0 {
            return Ok(0);
        }
        // Of dead jobs sharing a key, only the lowest id may take it back.
        let sql = format!(
            "WITH d AS ( \
                 SELECT id, dedup_key, \
                     row_number() OVER (PARTITION BY dedup_key ORDER BY id) AS nth \
                 FROM (SELECT id, dedup_key FROM queue_jobs \
                       WHERE queue = $1 AND state = 'dead' \
                       ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) s \
             ), \
             u AS ( \
                 UPDATE queue_jobs j SET {REDRIVE_SET}, \
                     dedup_key = CASE WHEN d.dedup_key IS NULL OR d.nth > 1 OR EXISTS ( \
                         SELECT 1 FROM queue_jobs o WHERE o.queue = $1 AND o.state = 'ready' \
                             AND o.dedup_key = d.dedup_key) \
                     THEN NULL ELSE d.dedup_key END \
                 FROM d WHERE j.id = d.id \
                 RETURNING j.id \
             ) \
             SELECT count(*) AS n, \
                 CASE WHEN count(*) > 0 \
                      THEN pg_notify({CHANNEL_SQL}, $1 || ' ' || count(*))::text END AS woke \
             FROM u"
        );
        for _ in 0..REDRIVE_ROUNDS {
            let done = sqlx::query(&sql)
                .bind(queue.as_str())
                .bind(limit_of(limit))
                .bind(now)
                .fetch_one(&self.pool)
                .await;
            match done {
                Ok(row) => {
                    let n: i64 = row
                        .try_get("n")
                        .map_err(|e| QueueError::Corrupt(format!("redrive count: {e}")))?;
                    return Ok(u64::try_from(n).unwrap_or(0));
                }
                Err(e) if is_dedup_conflict(&e) => continue,
                Err(e) => return Err(queue_err(e)),
            }
        }
        Err(QueueError::Unavailable(
            "redrive: de-duplication keys kept being taken".into(),
        ))
    }

    async fn purge_dead(&self, queue: &QueueName, limit: usize) -> Result<u64, QueueError> {
        if limit == 0 {
            return Ok(0);
        }
        let done = sqlx::query(
            "WITH d AS (SELECT id FROM queue_jobs WHERE queue = $1 AND state = 'dead' \
                        ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) \
             DELETE FROM queue_jobs j USING d WHERE j.id = d.id",
        )
        .bind(queue.as_str())
        .bind(limit_of(limit))
        .execute(&self.pool)
        .await
        .map_err(queue_err)?;
        Ok(done.rows_affected())
    }

    async fn stats(&self, queue: &QueueName, now: DateTime<Utc>) -> Result<QueueStats, QueueError> {
        let row = sqlx::query(
            "SELECT \
                 count(*) FILTER (WHERE run_at <= $2) AS waiting, \
                 count(*) FILTER (WHERE run_at > $2 AND lease_nonce IS NULL) AS delayed, \
                 count(*) FILTER (WHERE run_at > $2 AND lease_nonce IS NOT NULL) AS in_flight, \
                 (SELECT count(*) FROM queue_jobs WHERE queue = $1 AND state = 'dead') AS dead \
             FROM queue_jobs WHERE queue = $1 AND state = 'ready'",
        )
        .bind(queue.as_str())
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(queue_err)?;
        let count = |c: &str| -> Result<u64, QueueError> {
            let v: i64 = row
                .try_get(c)
                .map_err(|e| QueueError::Corrupt(format!("stats {c}: {e}")))?;
            Ok(u64::try_from(v).unwrap_or(0))
        };
        Ok(QueueStats {
            waiting: count("waiting")?,
            delayed: count("delayed")?,
            in_flight: count("in_flight")?,
            dead: count("dead")?,
        })
    }

    async fn wait_for_jobs(&self, queue: &QueueName, max_wait: Duration) -> Result<(), QueueError> {
        let notify = self.queue_waker.notify_for(queue.as_str());
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        self.queue_waker.ensure_started();
        let _ = tokio::time::timeout(max_wait, woken).await;
        Ok(())
    }
}

/// A notification's payload read as (queue, jobs made due): `<queue> <n>`,
/// or a bare queue name (no count: every waiter looks).
fn wake_payload(payload: &str) -> (&str, Option<usize>) {
    match payload.rsplit_once(' ') {
        Some((queue, n)) => match n.parse::<usize>() {
            Ok(n) => (queue, Some(n)),
            Err(_) => (payload, None),
        },
        None => (payload, None),
    }
}

/// The store's queue listener: one LISTEN connection shared by every clone
/// of a [`PgStore`], started by the first wait. Its `Debug` never shows the
/// connect options (they hold the password).
pub(crate) struct QueueWaker {
    connect: PgConnectOptions,
    queues: Mutex<HashMap<String, Arc<Notify>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    connected: AtomicBool,
}

impl std::fmt::Debug for QueueWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueWaker")
            .field("application_name", &self.connect.get_application_name())
            .field("connected", &self.connected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Drop for QueueWaker {
    fn drop(&mut self) {
        if let Some(t) = self
            .task
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.abort();
        }
    }
}

impl QueueWaker {
    /// A waker whose listener connects with `connect` (the store's options)
    /// under `application_name` `<name>-queue-listener`.
    pub(crate) fn new(connect: &PgConnectOptions) -> Arc<Self> {
        let name = format!(
            "{}-queue-listener",
            connect.get_application_name().unwrap_or("echorelay")
        );
        Arc::new(Self {
            connect: connect.clone().application_name(&name),
            queues: Mutex::new(HashMap::new()),
            task: Mutex::new(None),
            connected: AtomicBool::new(false),
        })
    }

    fn notify_for(&self, queue: &str) -> Arc<Notify> {
        let mut q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        q.entry(queue.to_owned())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Wakes the waiters a notification's payload names:
    /// `<queue> <jobs>` wakes `jobs` waiters of the queue (at most
    /// [`MAX_BATCH`]; a job made due while no one waits leaves a permit, so
    /// the next waiter looks at once); a payload without a count (a bare
    /// queue name) wakes every waiter of that queue.
    fn wake(&self, payload: &str) {
        let (queue, jobs) = wake_payload(payload);
        let q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = q.get(queue) {
            match jobs {
                Some(jobs) => (0..jobs.min(MAX_BATCH)).for_each(|_| n.notify_one()),
                None => n.notify_waiters(),
            }
        }
    }

    fn wake_all(&self) {
        let q = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        for n in q.values() {
            n.notify_waiters();
        }
    }

    /// Starts the listener task unless it runs (it ends only with its
    /// runtime or the waker).
    fn ensure_started(self: &Arc<Self>) {
        let mut task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        *task = Some(tokio::spawn(listen(
            Arc::downgrade(self),
            self.connect.clone(),
        )));
    }

    /// Whether the listener is connected and listening now.
    pub(crate) fn is_listening(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// The `application_name` of the listener's connection.
    pub(crate) fn application_name(&self) -> &str {
        self.connect.get_application_name().unwrap_or_default()
    }
}

/// Connects a listener on its own one-connection pool (so it never hands a
/// LISTENing connection back to the store's pool) and listens on the
/// schema's queue channel.
async fn connect_listener(connect: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(connect.clone())
        .await?;
    let mut listener = PgListener::connect_with(&own).await?;
    let channel: String = sqlx::query_scalar(&format!("SELECT {CHANNEL_SQL}"))
        .fetch_one(&mut listener)
        .await?;
    listener.listen(&channel).await?;
    Ok(listener)
}

async fn listen(waker: Weak<QueueWaker>, connect: PgConnectOptions) {
    let mut pause = Duration::from_millis(100);
    loop {
        let mut listener = match connect_listener(&connect).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "queue listener: connect failed; waiters poll");
                if waker.upgrade().is_none() {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        pause = Duration::from_millis(100);
        {
            let Some(w) = waker.upgrade() else { return };
            w.connected.store(true, Ordering::SeqCst);
            // Notifications sent before the LISTEN were missed: every
            // waiter looks again.
            w.wake_all();
        }
        loop {
            let msg = listener.try_recv().await;
            let Some(w) = waker.upgrade() else { return };
            match msg {
                Ok(Some(n)) => w.wake(n.payload()),
                // The connection was lost (None) or failed: reconnect.
                Ok(None) | Err(_) => {
                    w.connected.store(false, Ordering::SeqCst);
                    w.wake_all();
                    break;
                }
            }
        }
    }
}

impl PgStore {
    /// Whether this store's queue listener is connected (it starts with
    /// the first [`Queue::wait_for_jobs`]); for health checks and tests.
    pub fn queue_listener_connected(&self) -> bool {
        self.queue_waker.is_listening()
    }

    /// The `application_name` of this store's queue listener connection,
    /// as shown in `pg_stat_activity`.
    pub fn queue_listener_application_name(&self) -> &str {
        self.queue_waker.application_name()
    }
}
