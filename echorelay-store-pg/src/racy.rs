//! Test support, feature `racy` (never in a deployment): a [`PgStore`]
//! whose chosen conditional method is broken the way a hand-written
//! adapter plausibly breaks it. The method runs as a check (a `SELECT`)
//! and a write (an `UPDATE` or `DELETE`) as two separate statements on the
//! pool, back to back: no sleep, no transaction, no lock tying them. Of
//! callers racing it, several may pass the check before the first write
//! lands, so more than one wins.
//!
//! The conformance suite must catch each of these
//! (`tests/racy_pg_is_caught.rs`); if it stops doing so, a broken adapter
//! could break TOTP replay protection, single-use backup codes or
//! single-use challenges and still pass CI.
//!
//! ```text
//! let store = db.fresh_store_with(|o| o.racy(Racy::AdvanceTotpStep)).await?;
//! ```

use echorelay_core::account::{BackupCodeRecord, ChallengeRecord};
use echorelay_core::ids::UserId;
use echorelay_core::ports::StoreResult;

use crate::row::{Reader, i64_of, idb};
use crate::{PgStore, backend};

/// The conditional method a racy store breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Racy {
    /// `AccountStore::advance_totp_step`: reads the last step, then writes
    /// the new one unconditionally (a TOTP code can be replayed).
    AdvanceTotpStep,
    /// `SessionStore::take_challenge`: reads the challenge, then deletes it
    /// (a challenge can be used twice).
    TakeChallenge,
    /// `AccountStore::consume_backup_code`: looks the code up, then deletes
    /// it (a backup code can be used twice).
    ConsumeBackupCode,
}

impl Racy {
    /// Every method a racy store can break.
    pub const ALL: [Racy; 3] = [
        Racy::AdvanceTotpStep,
        Racy::TakeChallenge,
        Racy::ConsumeBackupCode,
    ];
}

impl PgStore {
    /// Whether this store breaks `method` (feature `racy`).
    pub(crate) fn is_racy(&self, method: Racy) -> bool {
        self.racy == Some(method)
    }

    /// [`Racy::AdvanceTotpStep`]: the check, then the write.
    pub(crate) async fn racy_advance_totp_step(
        &self,
        user: UserId,
        step: u64,
    ) -> StoreResult<bool> {
        let row = sqlx::query("SELECT active, last_step FROM totp_factors WHERE user_id = $1")
            .bind(idb(&user))
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Ok(false);
        };
        let r = Reader::new(&row, "totp_factors", "user_id");
        let newer = r.opt_u64("last_step")?.is_none_or(|last| last < step);
        if !r.boolean("active")? || !newer {
            return Ok(false);
        }
        sqlx::query("UPDATE totp_factors SET last_step = $2 WHERE user_id = $1")
            .bind(idb(&user))
            .bind(i64_of(step)?)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(true)
    }

    /// [`Racy::TakeChallenge`]: the read, then the delete.
    pub(crate) async fn racy_take_challenge(
        &self,
        token_hash: &[u8; 32],
    ) -> StoreResult<Option<ChallengeRecord>> {
        let Some(found) = echorelay_core::ports::SessionStore::challenge(self, token_hash).await?
        else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM challenges WHERE token_hash = $1")
            .bind(&token_hash[..])
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(Some(found))
    }

    /// [`Racy::ConsumeBackupCode`]: the lookup, then the delete.
    pub(crate) async fn racy_consume_backup_code(
        &self,
        user: UserId,
        code: &BackupCodeRecord,
    ) -> StoreResult<bool> {
        let found = sqlx::query(
            "SELECT idx FROM backup_codes WHERE user_id = $1 AND idx = $2 AND hash = $3",
        )
        .bind(idb(&user))
        .bind(i16::from(code.index))
        .bind(&code.hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        if found.is_none() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM backup_codes WHERE user_id = $1 AND idx = $2")
            .bind(idb(&user))
            .bind(i16::from(code.index))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(true)
    }
}
