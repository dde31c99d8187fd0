//! `KeyStore`: API key records (hashes only) in `api_keys`.
//!
//! Conditions are decided by the database: rotation is one conditional
//! `UPDATE … WHERE successor IS NULL AND revoked_at IS NULL` (racing
//! rotations queue on the row lock and the losers see the condition fail),
//! a reveal is taken under a row lock, a revocation is a conditional
//! `UPDATE`. Each writes its audit event in the same transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use echorelay_core::audit::{Actor, AuditDraft};
use echorelay_core::error::StoreError;
use echorelay_core::ids::{KeyId, ProjectId};
use echorelay_core::keys::{KeyHash, KeyRecord, KeyStatus, PendingReveal, Supersession};
use echorelay_core::ports::{KeyStore, StoreResult};
use echorelay_core::vault::Ciphertext;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use crate::cache::notify_in;
use crate::row::{Reader, enum_text, idb, json_of, opt_idb};
use crate::{PgStore, backend, db_err, limit_of};

pub(crate) const KEY_COLUMNS: &str = "id, project, environment, role, hash, hint, label, \
     created_by, created_at, rotate_at, predecessor, successor, rotated_at, expires_at, \
     grace_ends_at, revoked_at, reveal_ciphertext, reveal_until, collected_by";

/// Verification's one query (the hot path): a literal, so no string is
/// built per call.
const STATUS_BY_HASH: &str = "SELECT id, project, environment, role, rotate_at, successor, \
     rotated_at, expires_at, grace_ends_at, revoked_at FROM api_keys WHERE hash = $1";

fn supersession_of(r: &Reader<'_>) -> StoreResult<Option<Supersession>> {
    let Some(successor) = r.opt_id("successor")? else {
        return Ok(None);
    };
    let (Some(rotated_at), Some(expires_at), Some(grace_ends_at)) = (
        r.opt_time("rotated_at")?,
        r.opt_time("expires_at")?,
        r.opt_time("grace_ends_at")?,
    ) else {
        return Err(r.corrupt("successor", "set without its rotation times"));
    };
    Ok(Some(Supersession {
        successor,
        rotated_at,
        expires_at,
        grace_ends_at,
    }))
}

/// A stored hash as a one-element list (an unreadable one, impossible by
/// the column's CHECK, as none: the row was written by this code).
fn hash_list(stored: &[u8]) -> Vec<KeyHash> {
    <[u8; 32]>::try_from(stored)
        .ok()
        .map(KeyHash)
        .into_iter()
        .collect()
}

pub(crate) fn key_of(row: &PgRow) -> StoreResult<KeyRecord> {
    let r = Reader::new(row, "api_keys", "id");
    let pending_reveal = match (
        r.opt_ciphertext("reveal_ciphertext")?,
        r.opt_time("reveal_until")?,
    ) {
        (Some(ciphertext), Some(until)) => Some(PendingReveal { ciphertext, until }),
        _ => None,
    };
    Ok(KeyRecord {
        id: r.id("id")?,
        project: r.id("project")?,
        environment: r.enum_text("environment")?,
        role: r.parsed("role", |s| s.parse::<echorelay_core::access::Role>())?,
        hash: KeyHash(r.bytes::<32>("hash")?),
        hint: r.text("hint")?,
        label: r.text("label")?,
        created_by: r.json("created_by")?,
        created_at: r.time("created_at")?,
        rotate_at: r.time("rotate_at")?,
        predecessor: r.opt_id("predecessor")?,
        superseded: supersession_of(&r)?,
        revoked_at: r.opt_time("revoked_at")?,
        pending_reveal,
        collected_by: r.opt_id("collected_by")?,
    })
}

pub(crate) fn status_of(row: &PgRow) -> StoreResult<KeyStatus> {
    let r = Reader::new(row, "api_keys", "id");
    Ok(KeyStatus {
        id: r.id("id")?,
        project: r.id("project")?,
        environment: r.enum_text("environment")?,
        role: r.parsed("role", |s| s.parse::<echorelay_core::access::Role>())?,
        rotate_at: r.time("rotate_at")?,
        superseded: supersession_of(&r)?,
        revoked: r.opt_time("revoked_at")?.is_some(),
    })
}

pub(crate) async fn insert_in(conn: &mut PgConnection, k: &KeyRecord) -> StoreResult<()> {
    let s = k.superseded;
    sqlx::query(&format!(
        "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
    ))
    .bind(idb(&k.id))
    .bind(idb(&k.project))
    .bind(enum_text(&k.environment))
    .bind(k.role.as_str())
    .bind(&k.hash.0[..])
    .bind(&k.hint)
    .bind(&k.label)
    .bind(json_of(&k.created_by)?)
    .bind(k.created_at)
    .bind(k.rotate_at)
    .bind(opt_idb(&k.predecessor))
    .bind(s.map(|s| s.successor.as_bytes().to_vec()))
    .bind(s.map(|s| s.rotated_at))
    .bind(s.map(|s| s.expires_at))
    .bind(s.map(|s| s.grace_ends_at))
    .bind(k.revoked_at)
    .bind(k.pending_reveal.as_ref().map(|p| p.ciphertext.to_bytes()))
    .bind(k.pending_reveal.as_ref().map(|p| p.until))
    .bind(opt_idb(&k.collected_by))
    .execute(&mut *conn)
    .await
    .map_err(db_err("key"))?;
    Ok(())
}

/// Locks the rows of `ids` (ascending, so two transactions locking the
/// same pair cannot deadlock) until the transaction ends, and returns those
/// that are not revoked. A revocation (`UPDATE … SET revoked_at`) of any of
/// them waits for this transaction, and this one sees a revocation that
/// committed first: the creating key's condition of
/// [`KeyStore::insert_key`], serialized with its revocation.
async fn lock_live(conn: &mut PgConnection, ids: &[KeyId]) -> StoreResult<Vec<KeyId>> {
    let mut sorted: Vec<Vec<u8>> = ids.iter().map(|k| idb(k).to_vec()).collect();
    sorted.sort();
    sorted.dedup();
    let rows: Vec<(Vec<u8>, bool)> = sqlx::query_as(
        "SELECT id, revoked_at IS NULL FROM api_keys WHERE id = ANY($1) ORDER BY id FOR UPDATE",
    )
    .bind(&sorted)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(rows
        .into_iter()
        .filter(|(_, live)| *live)
        .filter_map(|(id, _)| ids.iter().copied().find(|k| idb(k) == id.as_slice()))
        .collect())
}

/// The creating key of `k`, if a key made it.
fn creator_of(k: &KeyRecord) -> Option<KeyId> {
    match k.created_by {
        Actor::ApiKey(c) => Some(c),
        _ => None,
    }
}

fn creator_revoked() -> StoreError {
    StoreError::Conflict {
        reason: "the creating key is revoked",
    }
}

impl PgStore {
    /// The status straight from the database (the cache's source).
    pub(crate) async fn status_from_db(&self, hash: &KeyHash) -> StoreResult<Option<KeyStatus>> {
        let row = sqlx::query(STATUS_BY_HASH)
            .bind(&hash.0[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(status_of).transpose()
    }
}

#[async_trait]
impl KeyStore for PgStore {
    async fn insert_key(&self, key: KeyRecord, audit: AuditDraft) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if let Some(c) = creator_of(&key)
            && lock_live(&mut tx, &[c]).await?.is_empty()
        {
            return Err(creator_revoked());
        }
        insert_in(&mut tx, &key).await?;
        self.append_in(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        // A cache may hold nothing for a new hash (it caches found keys
        // only), so there is nothing to invalidate.
        Ok(())
    }

    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = $1"
        ))
        .bind(&hash.0[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(key_of).transpose()
    }

    async fn key_by_id(&self, id: KeyId) -> StoreResult<Option<KeyRecord>> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(idb(&id))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(key_of).transpose()
    }

    async fn key_status_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyStatus>> {
        match &self.cache {
            Some(c) => c.status(self, hash).await,
            None => self.status_from_db(hash).await,
        }
    }

    async fn keys_of_project(&self, project: ProjectId) -> StoreResult<Vec<KeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE project = $1 ORDER BY created_at, id"
        ))
        .bind(idb(&project))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(key_of).collect()
    }

    async fn keys_page(
        &self,
        project: ProjectId,
        after: Option<KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>> {
        // The empty bytea sorts before every id: `after = None` is the
        // same index range scan (api_keys_by_project_and_id) from the start.
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys \
             WHERE project = $1 AND id > coalesce($2::bytea, '\\x'::bytea) \
             ORDER BY id LIMIT $3"
        ))
        .bind(idb(&project))
        .bind(opt_idb(&after))
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(key_of).collect()
    }

    async fn keys_needing_attention(
        &self,
        now: DateTime<Utc>,
        after: Option<KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys \
             WHERE ((successor IS NULL AND revoked_at IS NULL AND rotate_at <= $1) \
                    OR reveal_until <= $1) \
               AND ($2::bytea IS NULL OR id > $2) \
             ORDER BY id LIMIT $3"
        ))
        .bind(now)
        .bind(opt_idb(&after))
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(key_of).collect()
    }

    async fn keys_with_pending_reveal(
        &self,
        after: Option<KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys \
             WHERE reveal_ciphertext IS NOT NULL AND ($1::bytea IS NULL OR id > $1) \
             ORDER BY id LIMIT $2"
        ))
        .bind(opt_idb(&after))
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(key_of).collect()
    }

    async fn replace_pending_reveal(
        &self,
        id: KeyId,
        expected: &Ciphertext,
        new: Ciphertext,
        audit: AuditDraft,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let done = sqlx::query(
            "UPDATE api_keys SET reveal_ciphertext = $3 \
             WHERE id = $1 AND reveal_ciphertext = $2",
        )
        .bind(idb(&id))
        .bind(expected.to_bytes())
        .bind(new.to_bytes())
        .execute(&mut *tx)
        .await
        .map_err(backend)?
        .rows_affected()
            == 1;
        if !done {
            return Ok(false);
        }
        self.append_in(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn rotate_key(
        &self,
        predecessor: KeyId,
        supersession: Supersession,
        successor: KeyRecord,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        if supersession.successor != successor.id {
            return Err(StoreError::Conflict {
                reason: "supersession names another successor",
            });
        }
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // Both rows locked in one order before either is written: the
        // predecessor, and the key rotating it in (if a key does).
        if let Some(c) = creator_of(&successor) {
            let live = lock_live(&mut tx, &[predecessor, c]).await?;
            if !live.contains(&c) {
                return Err(creator_revoked());
            }
        }
        let updated: Option<Vec<u8>> = sqlx::query_scalar(
            "UPDATE api_keys SET successor = $2, rotated_at = $3, expires_at = $4, \
                 grace_ends_at = $5 \
             WHERE id = $1 AND successor IS NULL AND revoked_at IS NULL AND project = $6 \
             RETURNING hash",
        )
        .bind(idb(&predecessor))
        .bind(idb(&supersession.successor))
        .bind(supersession.rotated_at)
        .bind(supersession.expires_at)
        .bind(supersession.grace_ends_at)
        .bind(idb(&successor.project))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(old_hash) = updated else {
            // Why not: absent, or no longer current, or another project.
            let row: Option<(Vec<u8>,)> =
                sqlx::query_as("SELECT project FROM api_keys WHERE id = $1")
                    .bind(idb(&predecessor))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
            return Err(match row {
                None => StoreError::NotFound { kind: "key" },
                Some((p,)) if p.as_slice() != successor.project.as_bytes() => {
                    StoreError::Conflict {
                        reason: "successor belongs to another project",
                    }
                }
                Some(_) => StoreError::Conflict {
                    reason: "key is no longer current",
                },
            });
        };
        insert_in(&mut tx, &successor).await?;
        // The predecessor now expires: every cache must drop it.
        let seqs = notify_in(&mut tx, &hash_list(&old_hash)).await?;
        self.append_in(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        self.await_invalidation(seqs).await
    }

    async fn revoke_key(&self, id: KeyId, at: DateTime<Utc>, audit: AuditDraft) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let hash: Option<Vec<u8>> = sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = $2, reveal_ciphertext = NULL, reveal_until = NULL \
             WHERE id = $1 AND revoked_at IS NULL RETURNING hash",
        )
        .bind(idb(&id))
        .bind(at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let Some(hash) = hash else {
            let revoked: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT hash FROM api_keys WHERE id = $1")
                    .bind(idb(&id))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
            let Some(hash) = revoked else {
                return Err(StoreError::NotFound { kind: "key" });
            };
            // Already revoked, perhaps by an attempt that failed while it
            // waited for the caches (a 503 after its commit): a retry must
            // not answer before every cache dropped the key either. The
            // invalidation is sent again (no data changes) and waited for
            // like the first; notifications arrive in commit order, so an
            // acknowledgement of this one covers the earlier one.
            let seqs = notify_in(&mut tx, &hash_list(&hash)).await?;
            tx.commit().await.map_err(backend)?;
            self.await_invalidation(seqs).await?;
            return Err(StoreError::Conflict {
                reason: "key already revoked",
            });
        };
        let seqs = notify_in(&mut tx, &hash_list(&hash)).await?;
        self.append_in(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        // S3: `revoke` returns only once no cache can still accept it.
        self.await_invalidation(seqs).await
    }

    async fn take_pending_reveal(
        &self,
        id: KeyId,
        collector: Option<KeyId>,
        audit: AuditDraft,
    ) -> StoreResult<Option<PendingReveal>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if let Some(c) = collector {
            let live = lock_live(&mut tx, &[id, c]).await?;
            if !live.contains(&c) {
                return Err(creator_revoked());
            }
        }
        let row = sqlx::query(
            "SELECT id, reveal_ciphertext, reveal_until FROM api_keys WHERE id = $1 FOR UPDATE",
        )
        .bind(idb(&id))
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?
        .ok_or(StoreError::NotFound { kind: "key" })?;
        let r = Reader::new(&row, "api_keys", "id");
        let (Some(ciphertext), Some(until)) = (
            r.opt_ciphertext("reveal_ciphertext")?,
            r.opt_time("reveal_until")?,
        ) else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE api_keys SET reveal_ciphertext = NULL, reveal_until = NULL, \
                 collected_by = COALESCE($2, collected_by) WHERE id = $1",
        )
        .bind(idb(&id))
        .bind(opt_idb(&collector))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        self.append_in(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(PendingReveal { ciphertext, until }))
    }
}
