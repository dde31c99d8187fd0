//! `SessionStore`: sessions and pending login challenges (token hashes
//! only). Every conditional method is one statement (a conditional
//! `UPDATE`, a `DELETE … RETURNING`) or one transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use echorelay_core::account::{ChallengeRecord, SessionRecord};
use echorelay_core::error::StoreError;
use echorelay_core::ids::{SessionId, UserId};
use echorelay_core::ports::{SessionStore, StoreResult};
use sqlx::postgres::PgRow;
use sqlx::{Executor, Postgres};

use crate::row::{Reader, enum_text, i64_of, idb, opt_idb};
use crate::{PgStore, backend, db_err};

const SESSION_COLUMNS: &str = "id, token_hash, user_id, created_at, last_seen_at, verified_at, \
                               expires_at, ip_family, epoch";
const CHALLENGE_COLUMNS: &str = "token_hash, user_id, kind, expires_at, ip_family, epoch";

fn session_of(row: &PgRow) -> StoreResult<SessionRecord> {
    let r = Reader::new(row, "sessions", "id");
    Ok(SessionRecord {
        id: r.id("id")?,
        token_hash: r.bytes::<32>("token_hash")?,
        user: r.id("user_id")?,
        created_at: r.time("created_at")?,
        last_seen_at: r.time("last_seen_at")?,
        verified_at: r.time("verified_at")?,
        expires_at: r.time("expires_at")?,
        ip_family: r.enum_text("ip_family")?,
        epoch: r.u64("epoch")?,
    })
}

fn challenge_of(row: &PgRow) -> StoreResult<ChallengeRecord> {
    let r = Reader::new(row, "challenges", "token_hash");
    Ok(ChallengeRecord {
        token_hash: r.bytes::<32>("token_hash")?,
        user: r.id("user_id")?,
        kind: r.enum_text("kind")?,
        expires_at: r.time("expires_at")?,
        ip_family: r.enum_text("ip_family")?,
        epoch: r.u64("epoch")?,
    })
}

fn count_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Inserts one session through `conn` (the pool or a transaction).
async fn insert_session_in<'c, E>(conn: E, session: &SessionRecord) -> StoreResult<()>
where
    E: Executor<'c, Database = Postgres>,
{
    sqlx::query(&format!(
        "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(idb(&session.id))
    .bind(&session.token_hash[..])
    .bind(idb(&session.user))
    .bind(session.created_at)
    .bind(session.last_seen_at)
    .bind(session.verified_at)
    .bind(session.expires_at)
    .bind(enum_text(&session.ip_family))
    .bind(i64_of(session.epoch)?)
    .execute(conn)
    .await
    .map_err(db_err("session"))?;
    Ok(())
}

#[async_trait]
impl SessionStore for PgStore {
    async fn insert_session(&self, session: SessionRecord) -> StoreResult<()> {
        insert_session_in(&self.pool, &session).await
    }

    async fn session_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<SessionRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE token_hash = $1"
        ))
        .bind(&token_hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(session_of).transpose()
    }

    async fn touch_session(&self, id: SessionId, at: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET last_seen_at = GREATEST(last_seen_at, $2) WHERE id = $1",
        )
        .bind(idb(&id))
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn mark_verified(&self, id: SessionId, at: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE sessions SET verified_at = GREATEST(verified_at, $2) WHERE id = $1",
        )
        .bind(idb(&id))
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn replace_session(&self, old: SessionId, new: SessionRecord) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // The DELETE decides: of racing replacements of `old`, one finds
        // the row and the others wait for it, then find nothing.
        let gone = sqlx::query("DELETE FROM sessions WHERE id = $1 RETURNING id, token_hash")
            .bind(idb(&old))
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let Some(gone) = gone else {
            return Err(StoreError::NotFound { kind: "session" });
        };
        // The new session must not reuse the old one's id or token (it
        // would collide with it had the old one not just been deleted).
        let old_token = Reader::new(&gone, "sessions", "id").bytes::<32>("token_hash")?;
        if new.id == old || new.token_hash == old_token {
            return Err(StoreError::AlreadyExists { kind: "session" });
        }
        // A collision with another session rolls back (tx dropped).
        insert_session_in(&mut *tx, &new).await?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn delete_session(&self, id: SessionId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(idb(&id))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn sessions_of(&self, user: UserId) -> StoreResult<Vec<SessionRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 ORDER BY created_at, id"
        ))
        .bind(idb(&user))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(session_of).collect()
    }

    async fn delete_sessions_of(
        &self,
        user: UserId,
        keep: Option<SessionId>,
    ) -> StoreResult<usize> {
        // One statement: all or nothing.
        let done = sqlx::query(
            "DELETE FROM sessions WHERE user_id = $1 AND ($2::bytea IS NULL OR id <> $2)",
        )
        .bind(idb(&user))
        .bind(opt_idb(&keep))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(count_of(done.rows_affected()))
    }

    async fn insert_challenge(&self, challenge: ChallengeRecord) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO challenges ({CHALLENGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(&challenge.token_hash[..])
        .bind(idb(&challenge.user))
        .bind(enum_text(&challenge.kind))
        .bind(challenge.expires_at)
        .bind(enum_text(&challenge.ip_family))
        .bind(i64_of(challenge.epoch)?)
        .execute(&self.pool)
        .await
        .map_err(db_err("challenge"))?;
        Ok(())
    }

    async fn challenge(&self, token_hash: &[u8; 32]) -> StoreResult<Option<ChallengeRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE token_hash = $1"
        ))
        .bind(&token_hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(challenge_of).transpose()
    }

    async fn take_challenge(&self, token_hash: &[u8; 32]) -> StoreResult<Option<ChallengeRecord>> {
        #[cfg(feature = "racy")]
        if self.is_racy(crate::Racy::TakeChallenge) {
            return self.racy_take_challenge(token_hash).await;
        }
        // Of racing callers, one deletes the row; the others wait for it,
        // then find nothing to return.
        let row = sqlx::query(&format!(
            "DELETE FROM challenges WHERE token_hash = $1 RETURNING {CHALLENGE_COLUMNS}"
        ))
        .bind(&token_hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(challenge_of).transpose()
    }

    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<usize> {
        let row = sqlx::query(
            "WITH c AS (DELETE FROM challenges WHERE expires_at <= $1 RETURNING 1), \
                  s AS (DELETE FROM sessions \
                        WHERE expires_at <= $1 OR last_seen_at <= $2 RETURNING 1) \
             SELECT (SELECT count(*) FROM c) + (SELECT count(*) FROM s) AS purged",
        )
        .bind(now)
        .bind(idle_cutoff)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        let purged = Reader::new(&row, "sessions", "purged")
            .named("purge".to_owned())
            .u64("purged")?;
        Ok(count_of(purged))
    }

    async fn warm_up(&self, callers: usize) -> StoreResult<()> {
        // Held until the last is open, so the pool cannot hand an idle one
        // out twice: `callers` distinct connections (at most the pool's
        // size; more would wait for the acquire timeout). They go back to
        // the pool idle, where they stay (no idle reaping below 10 min).
        let max = usize::try_from(self.pool.options().get_max_connections()).unwrap_or(usize::MAX);
        let mut held = Vec::with_capacity(callers.min(max));
        for _ in 0..callers.min(max) {
            held.push(self.pool.acquire().await.map_err(backend)?);
        }
        drop(held);
        Ok(())
    }
}
