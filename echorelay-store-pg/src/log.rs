//! `DeliveryLog`: the relay's delivery log, tables `relay_messages`,
//! `relay_deliveries` and `relay_attempts` (migration 0008).
//!
//! Writes come in batches (the relay's group commit, `echorelay_core`'s
//! `deliveries` docs) and each batch is one statement: messages with
//! `INSERT … SELECT FROM UNNEST … ON CONFLICT DO NOTHING RETURNING`, and
//! in the same statement the deliveries of the messages it inserted;
//! attempts with a CTE that updates each delivery and inserts the attempt
//! only where the delivery exists (a batch holding two attempts of one
//! delivery takes one statement per repeat, in one transaction); the redrive mark is one
//! conditional `UPDATE … WHERE state = 'dead' AND attempts = $n`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use echorelay_core::deliveries::{
    AttemptRecord, AttemptResult, DeliveryCounts, DeliveryRecord, DeliveryState, MessageCursor,
    MessageRecord,
};
use echorelay_core::error::StoreError;
use echorelay_core::ids::{MessageId, ProjectId, TargetId};
use echorelay_core::ports::{DeliveryLog, StoreResult};
use sqlx::postgres::PgRow;

use crate::row::{Reader, i64_of, idb, opt_idb};
use crate::{PgStore, backend, db_err, limit_of};

const MESSAGE_COLUMNS: &str = "project, id, endpoint, received_at, content_type, size";
const DELIVERY_COLUMNS: &str = "project, message, target, state, attempts, job, updated_at, \
     next_attempt_at, last_status, last_class";
const ATTEMPT_COLUMNS: &str = "project, message, target, job, attempt, at, status, class, \
     latency_ms, result, next_attempt_at, excerpt";

fn message_of(row: &PgRow) -> StoreResult<MessageRecord> {
    let r = Reader::new(row, "relay_messages", "id");
    Ok(MessageRecord {
        id: r.id("id")?,
        project: r.id("project")?,
        endpoint: r.id("endpoint")?,
        received_at: r.time("received_at")?,
        content_type: r.get("content_type")?,
        size: r.u64("size")?,
    })
}

fn u32_of(r: &Reader<'_>, column: &str) -> StoreResult<u32> {
    let v = r.u64(column)?;
    u32::try_from(v).map_err(|_| r.corrupt(column, format!("{v} out of range")))
}

fn status_of(r: &Reader<'_>, column: &str) -> StoreResult<Option<u16>> {
    let v: Option<i32> = r.get(column)?;
    v.map(|v| u16::try_from(v).map_err(|_| r.corrupt(column, format!("status {v}"))))
        .transpose()
}

fn delivery_of(row: &PgRow) -> StoreResult<DeliveryRecord> {
    let r = Reader::new(row, "relay_deliveries", "message");
    Ok(DeliveryRecord {
        message: r.id("message")?,
        project: r.id("project")?,
        target: r.id("target")?,
        state: r.parsed("state", |s| {
            DeliveryState::parse(s).ok_or_else(|| format!("unknown state {s:?}"))
        })?,
        attempts: u32_of(&r, "attempts")?,
        job: r.opt_id("job")?,
        updated_at: r.time("updated_at")?,
        next_attempt_at: r.opt_time("next_attempt_at")?,
        last_status: status_of(&r, "last_status")?,
        last_class: r.get("last_class")?,
    })
}

fn attempt_of(row: &PgRow) -> StoreResult<AttemptRecord> {
    let r = Reader::new(row, "relay_attempts", "message");
    Ok(AttemptRecord {
        message: r.id("message")?,
        project: r.id("project")?,
        target: r.id("target")?,
        job: r.id("job")?,
        attempt: u32_of(&r, "attempt")?,
        at: r.time("at")?,
        status: status_of(&r, "status")?,
        class: r.get("class")?,
        latency_ms: u32_of(&r, "latency_ms")?,
        result: r.parsed("result", |s| {
            AttemptResult::parse(s).ok_or_else(|| format!("unknown result {s:?}"))
        })?,
        next_attempt_at: r.opt_time("next_attempt_at")?,
        excerpt: r.get("excerpt")?,
    })
}

/// Messages as columns, for `UNNEST`.
#[derive(Default)]
struct MessageColumns {
    project: Vec<Vec<u8>>,
    id: Vec<Vec<u8>>,
    endpoint: Vec<Vec<u8>>,
    received_at: Vec<DateTime<Utc>>,
    content_type: Vec<Option<String>>,
    size: Vec<i64>,
}

impl MessageColumns {
    fn push(&mut self, m: &MessageRecord) -> StoreResult<()> {
        self.size.push(i64_of(m.size)?);
        self.project.push(idb(&m.project).to_vec());
        self.id.push(idb(&m.id).to_vec());
        self.endpoint.push(idb(&m.endpoint).to_vec());
        self.received_at.push(m.received_at);
        self.content_type.push(m.content_type.clone());
        Ok(())
    }
}

/// Deliveries as columns, for `UNNEST`.
#[derive(Default)]
struct DeliveryColumns {
    project: Vec<Vec<u8>>,
    message: Vec<Vec<u8>>,
    target: Vec<Vec<u8>>,
    state: Vec<&'static str>,
    attempts: Vec<i64>,
    job: Vec<Option<Vec<u8>>>,
    updated_at: Vec<DateTime<Utc>>,
    next_attempt_at: Vec<Option<DateTime<Utc>>>,
    last_status: Vec<Option<i32>>,
    last_class: Vec<Option<String>>,
}

impl DeliveryColumns {
    fn push(&mut self, d: &DeliveryRecord) {
        self.project.push(idb(&d.project).to_vec());
        self.message.push(idb(&d.message).to_vec());
        self.target.push(idb(&d.target).to_vec());
        self.state.push(d.state.as_str());
        self.attempts.push(i64::from(d.attempts));
        self.job.push(opt_idb(&d.job));
        self.updated_at.push(d.updated_at);
        self.next_attempt_at.push(d.next_attempt_at);
        self.last_status.push(d.last_status.map(i32::from));
        self.last_class.push(d.last_class.clone());
    }
}

/// Attempts as columns, for `UNNEST`; `ord` is the attempt's place in
/// its batch.
#[derive(Default)]
struct AttemptColumns {
    ord: Vec<i64>,
    project: Vec<Vec<u8>>,
    message: Vec<Vec<u8>>,
    target: Vec<Vec<u8>>,
    job: Vec<Vec<u8>>,
    attempt: Vec<i64>,
    at: Vec<DateTime<Utc>>,
    status: Vec<Option<i32>>,
    class: Vec<Option<String>>,
    latency_ms: Vec<i64>,
    result: Vec<&'static str>,
    next_attempt_at: Vec<Option<DateTime<Utc>>>,
    excerpt: Vec<Option<String>>,
    state: Vec<Option<&'static str>>,
}

impl AttemptColumns {
    fn push(&mut self, ord: usize, a: &AttemptRecord) -> StoreResult<()> {
        self.ord.push(i64_of(ord as u64)?);
        self.project.push(idb(&a.project).to_vec());
        self.message.push(idb(&a.message).to_vec());
        self.target.push(idb(&a.target).to_vec());
        self.job.push(idb(&a.job).to_vec());
        self.attempt.push(i64::from(a.attempt));
        self.at.push(a.at);
        self.status.push(a.status.map(i32::from));
        self.class.push(a.class.clone());
        self.latency_ms.push(i64::from(a.latency_ms));
        self.result.push(a.result.as_str());
        self.next_attempt_at.push(a.next_attempt_at);
        self.excerpt.push(a.excerpt.clone());
        self.state.push(a.result.state().map(DeliveryState::as_str));
        Ok(())
    }
}

/// The one result of a batch of one.
fn one_of(results: Vec<StoreResult<()>>) -> StoreResult<()> {
    results
        .into_iter()
        .next()
        .unwrap_or(Err(StoreError::Corrupt {
            table: "relay_messages",
            id: String::new(),
            problem: "no result for a batch of one".into(),
        }))
}

#[async_trait]
impl DeliveryLog for PgStore {
    async fn record_message(
        &self,
        message: MessageRecord,
        deliveries: Vec<DeliveryRecord>,
    ) -> StoreResult<()> {
        one_of(self.record_messages(vec![(message, deliveries)]).await?)
    }

    async fn record_messages(
        &self,
        batch: Vec<(MessageRecord, Vec<DeliveryRecord>)>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        // Refused before the statement: deliveries of another message or
        // a target twice, and a second copy of an id in the batch.
        let mut results: Vec<Option<StoreResult<()>>> = Vec::with_capacity(batch.len());
        let mut seen = std::collections::HashSet::new();
        for (m, deliveries) in &batch {
            let mut targets = std::collections::HashSet::new();
            let refused = if deliveries
                .iter()
                .any(|d| d.message != m.id || d.project != m.project || !targets.insert(d.target))
            {
                Some(Err(StoreError::Conflict {
                    reason: "deliveries must be of this message, one per target",
                }))
            } else if !seen.insert((m.project, m.id)) {
                Some(Err(StoreError::AlreadyExists { kind: "message" }))
            } else {
                None
            };
            results.push(refused);
        }
        let sent: Vec<&(MessageRecord, Vec<DeliveryRecord>)> = batch
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_none())
            .map(|(b, _)| b)
            .collect();
        let mut inserted = std::collections::HashSet::new();
        if !sent.is_empty() {
            let mut m = MessageColumns::default();
            let mut d = DeliveryColumns::default();
            for (message, deliveries) in &sent {
                m.push(message)?;
                for delivery in deliveries {
                    d.push(delivery);
                }
            }
            // One statement: the messages whose ids were free, then the
            // deliveries of exactly those; RETURNING names them.
            let rows = sqlx::query(&format!(
                "WITH m AS ( \
                     INSERT INTO relay_messages ({MESSAGE_COLUMNS}) \
                     SELECT * FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[], \
                         $4::timestamptz[], $5::text[], $6::bigint[]) \
                     ON CONFLICT (project, id) DO NOTHING \
                     RETURNING project, id \
                 ), d AS ( \
                     INSERT INTO relay_deliveries ({DELIVERY_COLUMNS}) \
                     SELECT u.* FROM UNNEST($7::bytea[], $8::bytea[], $9::bytea[], \
                         $10::text[], $11::bigint[], $12::bytea[], $13::timestamptz[], \
                         $14::timestamptz[], $15::integer[], $16::text[]) \
                         AS u(project, message, target, state, attempts, job, updated_at, \
                              next_attempt_at, last_status, last_class) \
                     JOIN m ON m.project = u.project AND m.id = u.message \
                 ) \
                 SELECT project, id FROM m"
            ))
            .bind(m.project)
            .bind(m.id)
            .bind(m.endpoint)
            .bind(m.received_at)
            .bind(m.content_type)
            .bind(m.size)
            .bind(d.project)
            .bind(d.message)
            .bind(d.target)
            .bind(d.state)
            .bind(d.attempts)
            .bind(d.job)
            .bind(d.updated_at)
            .bind(d.next_attempt_at)
            .bind(d.last_status)
            .bind(d.last_class)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
            for row in &rows {
                let r = Reader::new(row, "relay_messages", "id");
                inserted.insert((r.id::<ProjectId>("project")?, r.id::<MessageId>("id")?));
            }
        }
        Ok(batch
            .iter()
            .zip(results)
            .map(|((m, _), r)| {
                r.unwrap_or_else(|| {
                    if inserted.contains(&(m.project, m.id)) {
                        Ok(())
                    } else {
                        Err(StoreError::AlreadyExists { kind: "message" })
                    }
                })
            })
            .collect())
    }

    async fn delete_message(&self, project: ProjectId, id: MessageId) -> StoreResult<()> {
        sqlx::query("DELETE FROM relay_messages WHERE project = $1 AND id = $2")
            .bind(idb(&project))
            .bind(idb(&id))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn record_attempt(&self, a: AttemptRecord) -> StoreResult<()> {
        one_of(self.record_attempts(vec![a]).await?)
    }

    async fn record_attempts(
        &self,
        batch: Vec<AttemptRecord>,
    ) -> StoreResult<Vec<StoreResult<()>>> {
        // One statement per round; a round holds each delivery at most
        // once (an UPDATE changes a row once per statement), so a second
        // attempt of one delivery goes in the next round, after the first.
        let mut round_of = Vec::with_capacity(batch.len());
        let mut seen: std::collections::HashMap<(ProjectId, MessageId, TargetId), usize> =
            std::collections::HashMap::new();
        for a in &batch {
            let n = seen.entry((a.project, a.message, a.target)).or_insert(0);
            round_of.push(*n);
            *n += 1;
        }
        let rounds = round_of.iter().max().map_or(0, |m| m + 1);
        let mut done = vec![false; batch.len()];
        let mut tx = if rounds > 1 {
            Some(self.pool.begin().await.map_err(backend)?)
        } else {
            None
        };
        let sql = format!(
            "WITH a AS ( \
                 SELECT * FROM UNNEST($1::bigint[], $2::bytea[], $3::bytea[], $4::bytea[], \
                     $5::bytea[], $6::bigint[], $7::timestamptz[], $8::integer[], $9::text[], \
                     $10::bigint[], $11::text[], $12::timestamptz[], $13::text[], $14::text[]) \
                     AS a(ord, project, message, target, job, attempt, at, status, class, \
                          latency_ms, result, next_attempt_at, excerpt, state) \
             ), d AS ( \
                 UPDATE relay_deliveries r SET attempts = r.attempts + 1, job = a.job, \
                     last_status = a.status, last_class = a.class, \
                     next_attempt_at = a.next_attempt_at, \
                     state = COALESCE(a.state, r.state), \
                     updated_at = CASE WHEN a.state IS NULL THEN r.updated_at ELSE a.at END \
                 FROM a \
                 WHERE r.project = a.project AND r.message = a.message AND r.target = a.target \
                 RETURNING a.ord \
             ), i AS ( \
                 INSERT INTO relay_attempts ({ATTEMPT_COLUMNS}) \
                 SELECT a.project, a.message, a.target, a.job, a.attempt, a.at, a.status, \
                     a.class, a.latency_ms, a.result, a.next_attempt_at, a.excerpt \
                 FROM a JOIN d ON d.ord = a.ord \
             ) \
             SELECT ord FROM d"
        );
        for round in 0..rounds {
            let mut c = AttemptColumns::default();
            for (i, a) in batch.iter().enumerate() {
                if round_of[i] == round {
                    c.push(i, a)?;
                }
            }
            // Planned for each batch (not a cached generic plan): a plan
            // made while the table was small would go on scanning it
            // whole as it grows, where the primary key finds each row.
            let query = sqlx::query(&sql)
                .persistent(false)
                .bind(c.ord)
                .bind(c.project)
                .bind(c.message)
                .bind(c.target)
                .bind(c.job)
                .bind(c.attempt)
                .bind(c.at)
                .bind(c.status)
                .bind(c.class)
                .bind(c.latency_ms)
                .bind(c.result)
                .bind(c.next_attempt_at)
                .bind(c.excerpt)
                .bind(c.state);
            let rows = match tx.as_mut() {
                Some(tx) => query.fetch_all(&mut **tx).await,
                None => query.fetch_all(&self.pool).await,
            }
            .map_err(db_err("attempt"))?;
            for row in &rows {
                let ord: i64 = Reader::new(row, "relay_attempts", "ord").get("ord")?;
                if let Some(d) = usize::try_from(ord).ok().and_then(|i| done.get_mut(i)) {
                    *d = true;
                }
            }
        }
        if let Some(tx) = tx {
            tx.commit().await.map_err(backend)?;
        }
        Ok(done
            .into_iter()
            .map(|d| {
                if d {
                    Ok(())
                } else {
                    Err(StoreError::NotFound { kind: "delivery" })
                }
            })
            .collect())
    }

    async fn mark_redriven(
        &self,
        project: ProjectId,
        message: MessageId,
        target: TargetId,
        attempts: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let r = sqlx::query(
            "UPDATE relay_deliveries SET state = 'pending', updated_at = $5, \
                 next_attempt_at = NULL \
             WHERE project = $1 AND message = $2 AND target = $3 \
               AND state = 'dead' AND attempts = $4",
        )
        .bind(idb(&project))
        .bind(idb(&message))
        .bind(idb(&target))
        .bind(i64::from(attempts))
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(r.rows_affected() == 1)
    }

    async fn message(
        &self,
        project: ProjectId,
        id: MessageId,
    ) -> StoreResult<Option<MessageRecord>> {
        sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM relay_messages WHERE project = $1 AND id = $2"
        ))
        .bind(idb(&project))
        .bind(idb(&id))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(message_of)
        .transpose()
    }

    async fn messages_page(
        &self,
        project: ProjectId,
        cursor: Option<MessageCursor>,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM relay_messages \
             WHERE project = $1 AND ($2::timestamptz IS NULL OR (received_at, id) < ($2, $3)) \
             ORDER BY received_at DESC, id DESC LIMIT $4"
        ))
        .bind(idb(&project))
        .bind(cursor.map(|c| c.received_at))
        .bind(cursor.map(|c| idb(&c.id).to_vec()))
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(message_of).collect()
    }

    async fn deliveries_of(
        &self,
        project: ProjectId,
        message: MessageId,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM relay_deliveries \
             WHERE project = $1 AND message = $2 ORDER BY target"
        ))
        .bind(idb(&project))
        .bind(idb(&message))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(delivery_of).collect()
    }

    async fn delivery(
        &self,
        project: ProjectId,
        message: MessageId,
        target: TargetId,
    ) -> StoreResult<Option<DeliveryRecord>> {
        sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM relay_deliveries \
             WHERE project = $1 AND message = $2 AND target = $3"
        ))
        .bind(idb(&project))
        .bind(idb(&message))
        .bind(idb(&target))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(delivery_of)
        .transpose()
    }

    async fn attempts_of(
        &self,
        project: ProjectId,
        message: MessageId,
        limit: usize,
    ) -> StoreResult<Vec<AttemptRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT * FROM ( \
                 SELECT {ATTEMPT_COLUMNS} FROM relay_attempts \
                 WHERE project = $1 AND message = $2 \
                 ORDER BY at DESC, target DESC, attempt DESC LIMIT $3 \
             ) newest ORDER BY at, target, attempt"
        ))
        .bind(idb(&project))
        .bind(idb(&message))
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(attempt_of).collect()
    }

    async fn dead_deliveries_page(
        &self,
        project: ProjectId,
        target: TargetId,
        after: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM relay_deliveries \
             WHERE project = $1 AND target = $2 AND state = 'dead' \
               AND ($3::bytea IS NULL OR message > $3) \
             ORDER BY message LIMIT $4"
        ))
        .bind(idb(&project))
        .bind(idb(&target))
        .bind(opt_idb(&after))
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(delivery_of).collect()
    }

    async fn delivery_counts(&self, project: ProjectId) -> StoreResult<DeliveryCounts> {
        let rows = sqlx::query(
            "SELECT state, count(*) AS n FROM relay_deliveries WHERE project = $1 GROUP BY state",
        )
        .bind(idb(&project))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let mut c = DeliveryCounts::default();
        for row in &rows {
            let r = Reader::new(row, "relay_deliveries", "state");
            let n = r.u64("n")?;
            match r.parsed("state", |s| {
                DeliveryState::parse(s).ok_or_else(|| format!("unknown state {s:?}"))
            })? {
                DeliveryState::Pending => c.pending = n,
                DeliveryState::Retrying => c.retrying = n,
                DeliveryState::Delivered => c.delivered = n,
                DeliveryState::Dead => c.dead = n,
            }
        }
        Ok(c)
    }

    async fn purge_delivery_log(&self, before: DateTime<Utc>) -> StoreResult<usize> {
        let r = sqlx::query("DELETE FROM relay_messages WHERE received_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(usize::try_from(r.rows_affected()).unwrap_or(usize::MAX))
    }
}
