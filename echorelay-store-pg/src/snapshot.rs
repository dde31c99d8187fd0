//! `SnapshotStore`: a logical snapshot (core's `backup::snapshot`) written
//! verbatim into an empty database, in one transaction.
//!
//! The transaction first takes a transaction-scoped advisory lock
//! (`echorelay.restore`), so two restores queue, then checks that no
//! account, project, key or audit event exists; every row is then
//! inserted as the snapshot has it (ids, versions, chain positions, tags)
//! and each chain's `audit_heads` row is set to its last event, with the
//! sealed head's tag when the snapshot has one. A failure anywhere rolls
//! the whole restore back.

use std::collections::HashMap;

use async_trait::async_trait;
use echorelay_core::audit::{Actor, AuditEvent, SealedHead};
use echorelay_core::error::StoreError;
use echorelay_core::ids::ProjectId;
use echorelay_core::ports::{SnapshotData, SnapshotStore, StoreResult};
use sqlx::PgConnection;

use crate::accounts::{DEVICE_COLUMNS, put_backup_codes};
use crate::audit::chain_key;
use crate::config::{insert_project, insert_tree_entities};
use crate::keys::insert_in;
use crate::row::{enum_text, i64_of, idb, json_of, opt_idb};
use crate::{PgStore, backend, db_err};

async fn insert_event(conn: &mut PgConnection, e: &AuditEvent) -> StoreResult<()> {
    let actor_user = match e.actor {
        Actor::User(u) => Some(u.as_bytes().to_vec()),
        _ => None,
    };
    sqlx::query(
        "INSERT INTO audit_events \
           (chain, seq, id, project, at, actor, actor_user, ip, subject, kind, prev_hash, hash, \
            tag_key, tag) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(chain_key(e.project))
    .bind(i64_of(e.seq)?)
    .bind(idb(&e.id))
    .bind(opt_idb(&e.project))
    .bind(e.at)
    .bind(json_of(&e.actor)?)
    .bind(actor_user)
    .bind(e.ip.map(|ip| ip.to_string()))
    .bind(opt_idb(&e.subject))
    .bind(json_of(&e.kind)?)
    .bind(&e.prev_hash.0[..])
    .bind(&e.hash.0[..])
    .bind(e.tag.map(|t| t.key_id.0.to_vec()))
    .bind(e.tag.map(|t| t.tag.0.to_vec()))
    .execute(&mut *conn)
    .await
    .map_err(db_err("audit event"))?;
    Ok(())
}

#[async_trait]
impl SnapshotStore for PgStore {
    async fn restore_snapshot(&self, data: SnapshotData) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('echorelay.restore', 0))")
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let occupied: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM accounts) OR EXISTS (SELECT 1 FROM projects) \
                 OR EXISTS (SELECT 1 FROM api_keys) OR EXISTS (SELECT 1 FROM audit_events)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        if occupied {
            return Err(StoreError::Conflict {
                reason: "a snapshot is restored only into an empty store",
            });
        }
        for a in &data.accounts {
            sqlx::query(
                "INSERT INTO accounts (id, email, password_hash, epoch, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(idb(&a.id))
            .bind(&a.email)
            .bind(a.password_hash.as_str())
            .bind(i64_of(a.epoch)?)
            .bind(a.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err("account"))?;
        }
        for t in &data.totp {
            sqlx::query(
                "INSERT INTO totp_factors (user_id, seed, active, last_step, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(idb(&t.user))
            .bind(t.seed.to_bytes())
            .bind(t.active)
            .bind(t.last_step.map(i64_of).transpose()?)
            .bind(t.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err("totp factor"))?;
        }
        for (user, codes) in &data.backup_codes {
            put_backup_codes(&mut tx, *user, codes).await?;
        }
        for d in &data.devices {
            sqlx::query(&format!(
                "INSERT INTO devices ({DEVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ))
            .bind(idb(&d.id))
            .bind(idb(&d.user))
            .bind(&d.token_hash[..])
            .bind(d.created_at)
            .bind(d.expires_at)
            .bind(d.last_used_at)
            .bind(enum_text(&d.ip_family))
            .bind(i64_of(d.epoch)?)
            .execute(&mut *tx)
            .await
            .map_err(db_err("device"))?;
        }
        for tree in &data.projects {
            insert_project(&mut tx, &tree.project, tree.project.version).await?;
            insert_tree_entities(&mut tx, tree).await?;
        }
        for (project, user, role) in &data.members {
            sqlx::query("INSERT INTO memberships (project, user_id, role) VALUES ($1, $2, $3)")
                .bind(idb(project))
                .bind(idb(user))
                .bind(role.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_err("membership"))?;
        }
        for k in &data.keys {
            insert_in(&mut tx, k).await?;
        }
        let mut heads: HashMap<Option<ProjectId>, &AuditEvent> = HashMap::new();
        for e in &data.events {
            insert_event(&mut tx, e).await?;
            heads.insert(e.project, e);
        }
        let sealed: HashMap<Option<ProjectId>, SealedHead> =
            data.sealed_heads.iter().copied().collect();
        for (chain, last) in heads {
            let tag = sealed.get(&chain).map(|s| s.tag);
            sqlx::query(
                "INSERT INTO audit_heads (chain, seq, hash, tag_key, tag) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (chain) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, \
                   tag_key = EXCLUDED.tag_key, tag = EXCLUDED.tag",
            )
            .bind(chain_key(chain))
            .bind(i64_of(last.seq)?)
            .bind(&last.hash.0[..])
            .bind(tag.map(|t| t.key_id.0.to_vec()))
            .bind(tag.map(|t| t.tag.0.to_vec()))
            .execute(&mut *tx)
            .await
            .map_err(db_err("audit head"))?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(())
    }
}
