//! The audit log: `AuditSink` and `AuditLog`, and `PgStore::append_in`, which
//! every mutating method calls inside its own transaction (S11).
//!
//! Sequencing: each chain has one row in `audit_heads`; an append locks it
//! (`INSERT … ON CONFLICT DO UPDATE … RETURNING`, one round trip), seals the
//! event after the head it read, inserts it and moves the head, all in the
//! caller's transaction. Writers of one chain queue on that row lock from
//! any number of pools, so `seq` is gap-free, and a rolled-back mutation
//! takes its event (and the head move) with it. `(chain, seq)` is also the
//! primary key: a second line of defence. Decided over "unique (chain, seq)
//! with retry", which under 8 writers would retry most appends (measured in
//! BENCHMARKS.md: the lock serialises only the last two statements).

use async_trait::async_trait;
use echorelay_core::audit::{
    Actor, AuditDraft, AuditEvent, AuditTag, ChainHead, Hash32, SealedHead, UserEventCursor, seal,
    seal_keyed,
};
use echorelay_core::ids::{ProjectId, UserId};
use echorelay_core::ports::{AuditLog, AuditSink, StoreResult};
use echorelay_core::vault::VaultKeyId;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use crate::row::{Reader, idb, json_of, opt_idb};
use crate::{PgStore, backend, db_err, limit_of};

/// The chain key: the project id, or empty for the global chain.
pub(crate) fn chain_key(project: Option<ProjectId>) -> Vec<u8> {
    project.map(|p| p.as_bytes().to_vec()).unwrap_or_default()
}

impl PgStore {
    /// Seals `draft` after its chain's head and stores it, in the caller's
    /// transaction (tagged, with the head row's tag replaced, when the store
    /// has audit keys). `NotFound` for a project chain whose project is
    /// missing.
    pub(crate) async fn append_in(
        &self,
        conn: &mut PgConnection,
        draft: AuditDraft,
    ) -> StoreResult<AuditEvent> {
        let chain = chain_key(draft.project);
        let head = sqlx::query(
            "INSERT INTO audit_heads (chain, seq, hash) VALUES ($1, 0, $2) \
         ON CONFLICT (chain) DO UPDATE SET chain = EXCLUDED.chain RETURNING seq, hash",
        )
        .bind(&chain)
        .bind(&[0u8; 32][..])
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
        let r = Reader::new(&head, "audit_heads", "chain");
        // A new chain's head row is (0, zero hash), which seals the first
        // event exactly as no head does: seq 1, previous hash zero.
        let prev = ChainHead {
            seq: r.u64("seq")?,
            hash: Hash32(r.bytes::<32>("hash")?),
        };
        let (event, sealed) = match &self.audit_keys {
            Some(keys) => {
                let (e, h) = seal_keyed(draft, Some(prev), keys);
                (e, Some(h))
            }
            None => (seal(draft, Some(prev)), None),
        };
        let actor_user = match event.actor {
            Actor::User(u) => Some(u.as_bytes().to_vec()),
            _ => None,
        };
        sqlx::query(
            "WITH e AS (INSERT INTO audit_events \
           (chain, seq, id, project, at, actor, actor_user, ip, subject, kind, prev_hash, hash, \
            tag_key, tag) \
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING chain) \
         UPDATE audit_heads SET seq = $2, hash = $12, tag_key = $15, tag = $16 \
         WHERE chain = (SELECT chain FROM e)",
        )
        .bind(&chain)
        .bind(crate::row::i64_of(event.seq)?)
        .bind(idb(&event.id))
        .bind(opt_idb(&event.project))
        .bind(event.at)
        .bind(json_of(&event.actor)?)
        .bind(actor_user)
        .bind(event.ip.map(|ip| ip.to_string()))
        .bind(opt_idb(&event.subject))
        .bind(json_of(&event.kind)?)
        .bind(&event.prev_hash.0[..])
        .bind(&event.hash.0[..])
        .bind(event.tag.map(|t| t.key_id.0.to_vec()))
        .bind(event.tag.map(|t| t.tag.0.to_vec()))
        .bind(sealed.map(|h| h.tag.key_id.0.to_vec()))
        .bind(sealed.map(|h| h.tag.tag.0.to_vec()))
        .execute(&mut *conn)
        .await
        .map_err(db_err("audit event"))?;
        Ok(event)
    }
}

/// A tag from its two columns: both or neither.
fn tag_of(r: &Reader<'_>) -> StoreResult<Option<AuditTag>> {
    match (r.opt_bytes::<4>("tag_key")?, r.opt_bytes::<32>("tag")?) {
        (Some(k), Some(t)) => Ok(Some(AuditTag {
            key_id: VaultKeyId(k),
            tag: Hash32(t),
        })),
        (None, None) => Ok(None),
        _ => Err(r.corrupt("tag", "set without its key id")),
    }
}

const EVENT_COLUMNS: &str =
    "chain, seq, id, project, at, actor, ip, subject, kind, prev_hash, hash, tag_key, tag";

fn event_of(row: &PgRow) -> StoreResult<AuditEvent> {
    let r = Reader::new(row, "audit_events", "id").by_chain_and_seq();
    Ok(AuditEvent {
        id: r.id("id")?,
        seq: r.u64("seq")?,
        project: r.opt_id("project")?,
        at: r.time("at")?,
        actor: r.json("actor")?,
        ip: r.opt_parsed("ip", |s| s.parse::<std::net::IpAddr>())?,
        subject: r.opt_id("subject")?,
        kind: r.json("kind")?,
        prev_hash: Hash32(r.bytes::<32>("prev_hash")?),
        hash: Hash32(r.bytes::<32>("hash")?),
        tag: tag_of(&r)?,
    })
}

#[async_trait]
impl AuditSink for PgStore {
    async fn append(&self, audit: AuditDraft) -> StoreResult<AuditEvent> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let event = self.append_in(&mut tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(event)
    }

    async fn reseal_head(&self, chain: Option<ProjectId>, head: ChainHead) -> StoreResult<bool> {
        let Some(keys) = &self.audit_keys else {
            return Ok(false);
        };
        let sealed = keys.seal_head(chain, head);
        let done = sqlx::query(
            "UPDATE audit_heads SET tag_key = $4, tag = $5 WHERE chain = $1 AND seq = $2 AND hash = $3",
        )
        .bind(chain_key(chain))
        .bind(crate::row::i64_of(head.seq)?)
        .bind(&head.hash.0[..])
        .bind(&sealed.tag.key_id.0[..])
        .bind(&sealed.tag.tag.0[..])
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl AuditLog for PgStore {
    async fn events(
        &self,
        chain: Option<ProjectId>,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<AuditEvent>> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE chain = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3"
        ))
        .bind(chain_key(chain))
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(event_of).collect()
    }

    async fn head(&self, chain: Option<ProjectId>) -> StoreResult<Option<ChainHead>> {
        let row = sqlx::query(
            "SELECT chain, seq, hash FROM audit_events WHERE chain = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(chain_key(chain))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(|row| {
            let r = Reader::new(&row, "audit_events", "chain");
            Ok(ChainHead {
                seq: r.u64("seq")?,
                hash: Hash32(r.bytes::<32>("hash")?),
            })
        })
        .transpose()
    }

    async fn sealed_head(&self, chain: Option<ProjectId>) -> StoreResult<Option<SealedHead>> {
        let row =
            sqlx::query("SELECT chain, seq, hash, tag_key, tag FROM audit_heads WHERE chain = $1")
                .bind(chain_key(chain))
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let r = Reader::new(&row, "audit_heads", "chain");
        let Some(tag) = tag_of(&r)? else {
            return Ok(None);
        };
        Ok(Some(SealedHead {
            head: ChainHead {
                seq: r.u64("seq")?,
                hash: Hash32(r.bytes::<32>("hash")?),
            },
            tag,
        }))
    }

    async fn events_for_user_page(
        &self,
        user: UserId,
        after: Option<UserEventCursor>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEvent>> {
        // The global chain's key is empty, so it sorts before every
        // project id (bytea order): time, then chain, then seq. Each arm
        // is an index range scan in that order (audit_events_by_actor_in_order,
        // audit_events_by_subject_in_order) from the cursor, at most
        // `limit` rows; UNION drops an event that is both.
        let from = if after.is_some() {
            "AND (at, chain, seq) > ($3, $4, $5)"
        } else {
            ""
        };
        let query = format!(
            "WITH mine AS ( \
               (SELECT at, chain, seq FROM audit_events WHERE actor_user = $1 {from} \
                ORDER BY at, chain, seq LIMIT $2) \
               UNION \
               (SELECT at, chain, seq FROM audit_events WHERE subject = $1 {from} \
                ORDER BY at, chain, seq LIMIT $2)), \
             page AS (SELECT chain, seq FROM mine ORDER BY at, chain, seq LIMIT $2) \
             SELECT {EVENT_COLUMNS} FROM audit_events JOIN page USING (chain, seq) \
             ORDER BY at, chain, seq"
        );
        let mut q = sqlx::query(&query).bind(idb(&user)).bind(limit_of(limit));
        if let Some(c) = after {
            q = q
                .bind(c.at())
                .bind(chain_key(c.chain()))
                .bind(crate::row::i64_of(c.seq())?);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(backend)?;
        rows.iter().map(event_of).collect()
    }
}
