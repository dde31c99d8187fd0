//! `DeliveryLog`: the relay's delivery log, tables `relay_messages`,
//! `relay_deliveries` and `relay_attempts` (migration 0008).
//!
//! A message and its deliveries are inserted in one transaction; an
//! attempt is one statement (a CTE that updates the delivery and inserts
//! the attempt only if the delivery exists); the redrive mark is one
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

#[async_trait]
impl DeliveryLog for PgStore {
    async fn record_message(
        &self,
        message: MessageRecord,
        deliveries: Vec<DeliveryRecord>,
    ) -> StoreResult<()> {
        if deliveries
            .iter()
            .any(|d| d.message != message.id || d.project != message.project)
        {
            return Err(StoreError::Conflict {
                reason: "deliveries must be of this message, one per target",
            });
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(&format!(
            "INSERT INTO relay_messages ({MESSAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(idb(&message.project))
        .bind(idb(&message.id))
        .bind(idb(&message.endpoint))
        .bind(message.received_at)
        .bind(&message.content_type)
        .bind(i64_of(message.size)?)
        .execute(&mut *tx)
        .await
        .map_err(db_err("message"))?;
        if !deliveries.is_empty() {
            let targets: Vec<Vec<u8>> =
                deliveries.iter().map(|d| idb(&d.target).to_vec()).collect();
            let states: Vec<&str> = deliveries.iter().map(|d| d.state.as_str()).collect();
            let attempts: Vec<i64> = deliveries.iter().map(|d| i64::from(d.attempts)).collect();
            let jobs: Vec<Option<Vec<u8>>> = deliveries.iter().map(|d| opt_idb(&d.job)).collect();
            let updated: Vec<DateTime<Utc>> = deliveries.iter().map(|d| d.updated_at).collect();
            let next: Vec<Option<DateTime<Utc>>> =
                deliveries.iter().map(|d| d.next_attempt_at).collect();
            let status: Vec<Option<i32>> = deliveries
                .iter()
                .map(|d| d.last_status.map(i32::from))
                .collect();
            let class: Vec<Option<String>> =
                deliveries.iter().map(|d| d.last_class.clone()).collect();
            sqlx::query(&format!(
                "INSERT INTO relay_deliveries ({DELIVERY_COLUMNS}) \
                 SELECT $1, $2, * FROM UNNEST($3::bytea[], $4::text[], $5::bigint[], $6::bytea[], \
                     $7::timestamptz[], $8::timestamptz[], $9::integer[], $10::text[])"
            ))
            .bind(idb(&message.project))
            .bind(idb(&message.id))
            .bind(targets)
            .bind(states)
            .bind(attempts)
            .bind(jobs)
            .bind(updated)
            .bind(next)
            .bind(status)
            .bind(class)
            .execute(&mut *tx)
            .await
            .map_err(db_err("delivery"))?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(())
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
        let state = a.result.state().map(DeliveryState::as_str);
        let row = sqlx::query(&format!(
            "WITH d AS ( \
                 UPDATE relay_deliveries SET attempts = attempts + 1, job = $4, \
                     last_status = $7, last_class = $8, next_attempt_at = $11, \
                     state = COALESCE($13, state), \
                     updated_at = CASE WHEN $13 IS NULL THEN updated_at ELSE $6 END \
                 WHERE project = $1 AND message = $2 AND target = $3 \
                 RETURNING 1 \
             ) \
             INSERT INTO relay_attempts ({ATTEMPT_COLUMNS}) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM d \
             RETURNING 1"
        ))
        .bind(idb(&a.project))
        .bind(idb(&a.message))
        .bind(idb(&a.target))
        .bind(idb(&a.job))
        .bind(i64::from(a.attempt))
        .bind(a.at)
        .bind(a.status.map(i32::from))
        .bind(&a.class)
        .bind(i64::from(a.latency_ms))
        .bind(a.result.as_str())
        .bind(a.next_attempt_at)
        .bind(&a.excerpt)
        .bind(state)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("attempt"))?;
        match row {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound { kind: "delivery" }),
        }
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
