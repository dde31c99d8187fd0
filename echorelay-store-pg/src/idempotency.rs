//! `IdempotencyStore`: the `Idempotency-Key`s of inbound messages, table
//! `idempotency_keys` (migration 0006).
//!
//! A claim is one `INSERT … ON CONFLICT (project, key) DO UPDATE … WHERE
//! the stored claim expired`: a new or expired key is taken in that
//! statement; a live one is left alone, and a second statement reads its
//! message (a fresh snapshot, so it sees a claim committed by a racing
//! transaction that the first statement waited for).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use echorelay_core::ids::{MessageId, ProjectId};
use echorelay_core::ports::{IdempotencyStore, StoreResult};

use crate::row::{Reader, idb};
use crate::{PgStore, backend, db_err};

#[async_trait]
impl IdempotencyStore for PgStore {
    async fn claim_idempotency_key(
        &self,
        project: ProjectId,
        key: &str,
        message: MessageId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<Option<MessageId>> {
        let taken = sqlx::query(
            "INSERT INTO idempotency_keys (project, key, message, expires_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (project, key) DO UPDATE \
               SET message = EXCLUDED.message, expires_at = EXCLUDED.expires_at \
               WHERE idempotency_keys.expires_at <= $5 \
             RETURNING message",
        )
        .bind(idb(&project))
        .bind(key)
        .bind(idb(&message))
        .bind(expires_at)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err("idempotency key"))?;
        if taken.is_some() {
            return Ok(None);
        }
        let row =
            sqlx::query("SELECT message FROM idempotency_keys WHERE project = $1 AND key = $2")
                .bind(idb(&project))
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        match row {
            Some(row) => Ok(Some(
                Reader::new(&row, "idempotency_keys", "key").id("message")?,
            )),
            // Purged between the two statements: the claim expired.
            None => {
                Box::pin(self.claim_idempotency_key(project, key, message, now, expires_at)).await
            }
        }
    }

    async fn release_idempotency_key(
        &self,
        project: ProjectId,
        key: &str,
        message: MessageId,
    ) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE project = $1 AND key = $2 AND message = $3",
        )
        .bind(idb(&project))
        .bind(key)
        .bind(idb(&message))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> StoreResult<usize> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }
}
