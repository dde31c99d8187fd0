//! `AccountStore`: accounts, TOTP factors, backup codes, attempt counters
//! and trusted devices.
//!
//! Locking, always taken in this order so no two methods can deadlock:
//! the account row (`FOR UPDATE`, or the `UPDATE` of its epoch), then the
//! TOTP row, then backup codes, then the account's device lock (an
//! advisory transaction lock, because devices have no foreign key to
//! accounts). Attempt counters take an advisory lock per scope.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use echorelay_core::account::password::PasswordHash;
use echorelay_core::account::{
    AccountRecord, AttemptScope, BackupCodeRecord, DeviceRecord, TotpRecord,
};
use echorelay_core::error::StoreError;
use echorelay_core::ids::{DeviceId, UserId};
use echorelay_core::ports::{AccountStore, StoreResult, ThrottleStore};
use echorelay_core::vault::Ciphertext;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;

use crate::row::{Reader, enum_text, i64_of, idb, opt_idb};
use crate::{PgStore, backend, db_err, limit_of};

const ACCOUNT_COLUMNS: &str = "id, email, password_hash, epoch, created_at";
const TOTP_COLUMNS: &str = "user_id, seed, active, last_step, created_at";
pub(crate) const DEVICE_COLUMNS: &str =
    "id, user_id, token_hash, created_at, expires_at, last_used_at, ip_family, epoch";

fn account_of(row: &PgRow) -> StoreResult<AccountRecord> {
    let r = Reader::new(row, "accounts", "id");
    Ok(AccountRecord {
        id: r.id("id")?,
        email: r.text("email")?,
        password_hash: r.parsed("password_hash", PasswordHash::parse)?,
        epoch: r.u64("epoch")?,
        created_at: r.time("created_at")?,
    })
}

fn totp_of(row: &PgRow) -> StoreResult<TotpRecord> {
    let r = Reader::new(row, "totp_factors", "user_id");
    Ok(TotpRecord {
        user: r.id("user_id")?,
        seed: r.ciphertext("seed")?,
        active: r.boolean("active")?,
        last_step: r.opt_u64("last_step")?,
        created_at: r.time("created_at")?,
    })
}

fn backup_code_of(row: &PgRow) -> StoreResult<BackupCodeRecord> {
    let r = Reader::new(row, "backup_codes", "user_id");
    // `idx` is selected as text so an out-of-range value is a typed
    // `Corrupt`, like every other column.
    Ok(BackupCodeRecord {
        index: r.parsed("idx", |s| s.parse::<u8>())?,
        salt: r.bytes::<16>("salt")?,
        hash: r.bytes::<32>("hash")?,
    })
}

fn device_of(row: &PgRow) -> StoreResult<DeviceRecord> {
    let r = Reader::new(row, "devices", "id");
    Ok(DeviceRecord {
        id: r.id("id")?,
        user: r.id("user_id")?,
        token_hash: r.bytes::<32>("token_hash")?,
        created_at: r.time("created_at")?,
        expires_at: r.time("expires_at")?,
        last_used_at: r.opt_time("last_used_at")?,
        ip_family: r.enum_text("ip_family")?,
        epoch: r.u64("epoch")?,
    })
}

fn count_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Locks the account row for the rest of the transaction; `false` if the
/// account does not exist.
async fn lock_account(conn: &mut PgConnection, user: UserId) -> StoreResult<bool> {
    let row = sqlx::query("SELECT id FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(idb(&user))
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
    Ok(row.is_some())
}

/// Serialises every change to the account's set of devices (insert plus
/// eviction, a 2FA reset) for the rest of the transaction, across
/// processes.
async fn lock_devices(conn: &mut PgConnection, user: UserId) -> StoreResult<()> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(\
           hashtextextended('echorelay.devices:' || encode($1::bytea, 'hex'), 0))",
    )
    .bind(idb(&user))
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Replaces the account's backup codes, in the caller's transaction (which
/// holds the account row lock, so concurrent replacements queue).
pub(crate) async fn put_backup_codes(
    conn: &mut PgConnection,
    user: UserId,
    codes: &[BackupCodeRecord],
) -> StoreResult<()> {
    sqlx::query("DELETE FROM backup_codes WHERE user_id = $1")
        .bind(idb(&user))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    if codes.is_empty() {
        return Ok(());
    }
    let idx: Vec<i16> = codes.iter().map(|c| i16::from(c.index)).collect();
    let salts: Vec<Vec<u8>> = codes.iter().map(|c| c.salt.to_vec()).collect();
    let hashes: Vec<Vec<u8>> = codes.iter().map(|c| c.hash.to_vec()).collect();
    sqlx::query(
        "INSERT INTO backup_codes (user_id, idx, salt, hash) \
         SELECT $1, c.idx, c.salt, c.hash \
         FROM UNNEST($2::smallint[], $3::bytea[], $4::bytea[]) AS c (idx, salt, hash)",
    )
    .bind(idb(&user))
    .bind(idx)
    .bind(salts)
    .bind(hashes)
    .execute(&mut *conn)
    .await
    .map_err(db_err("backup code"))?;
    Ok(())
}

#[async_trait]
impl AccountStore for PgStore {
    async fn create_account(&self, account: AccountRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO accounts (id, email, password_hash, epoch, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(idb(&account.id))
        .bind(&account.email)
        .bind(account.password_hash.as_str())
        .bind(i64_of(account.epoch)?)
        .bind(account.created_at)
        .execute(&self.pool)
        .await
        .map_err(db_err("account"))?;
        Ok(())
    }

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<AccountRecord>> {
        // The column's collation is "C": equality is byte equality.
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE email = $1"
        ))
        .bind(email)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(account_of).transpose()
    }

    async fn account(&self, id: UserId) -> StoreResult<Option<AccountRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
        ))
        .bind(idb(&id))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(account_of).transpose()
    }

    async fn accounts_page(
        &self,
        after: Option<UserId>,
        limit: usize,
    ) -> StoreResult<Vec<AccountRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts \
             WHERE id > coalesce($1::bytea, '\\x'::bytea) ORDER BY id LIMIT $2"
        ))
        .bind(opt_idb(&after))
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(account_of).collect()
    }

    async fn replace_password_hash(
        &self,
        user: UserId,
        expected: &PasswordHash,
        new: PasswordHash,
        bump_epoch: bool,
    ) -> StoreResult<bool> {
        // One statement: the conditional UPDATE decides (re-checked on the
        // newest row version under concurrent writers), and the existence
        // probe tells an unknown account from a lost race. Accounts are
        // never deleted, so the probe cannot go stale.
        let row = sqlx::query(
            "WITH a AS (SELECT id FROM accounts WHERE id = $1), \
                  u AS (UPDATE accounts \
                        SET password_hash = $3, \
                            epoch = epoch + CASE WHEN $4::boolean THEN 1 ELSE 0 END \
                        WHERE id = $1 AND password_hash = $2 RETURNING id) \
             SELECT EXISTS (SELECT 1 FROM a) AS found, EXISTS (SELECT 1 FROM u) AS changed",
        )
        .bind(idb(&user))
        .bind(expected.as_str())
        .bind(new.as_str())
        .bind(bump_epoch)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        let r = Reader::new(&row, "accounts", "id").named(hex_of(&user));
        if !r.boolean("found")? {
            return Err(StoreError::NotFound { kind: "account" });
        }
        r.boolean("changed")
    }

    async fn totp(&self, user: UserId) -> StoreResult<Option<TotpRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TOTP_COLUMNS} FROM totp_factors WHERE user_id = $1"
        ))
        .bind(idb(&user))
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(totp_of).transpose()
    }

    async fn put_pending_totp(&self, totp: TotpRecord) -> StoreResult<()> {
        let last_step = totp.last_step.map(i64_of).transpose()?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if !lock_account(&mut tx, totp.user).await? {
            return Err(StoreError::NotFound { kind: "account" });
        }
        // The upsert's WHERE is checked on the locked, newest version of
        // an existing factor: an active one is left alone (no row back).
        let written = sqlx::query(
            "INSERT INTO totp_factors (user_id, seed, active, last_step, created_at) \
             VALUES ($1, $2, false, $3, $4) \
             ON CONFLICT (user_id) DO UPDATE \
               SET seed = EXCLUDED.seed, active = false, \
                   last_step = EXCLUDED.last_step, created_at = EXCLUDED.created_at \
               WHERE NOT totp_factors.active \
             RETURNING user_id",
        )
        .bind(idb(&totp.user))
        .bind(totp.seed.to_bytes())
        .bind(last_step)
        .bind(totp.created_at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err("second factor"))?;
        if written.is_none() {
            return Err(StoreError::Conflict {
                reason: "an active second factor exists",
            });
        }
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn activate_totp(
        &self,
        user: UserId,
        seed: &Ciphertext,
        step: u64,
        codes: Vec<BackupCodeRecord>,
    ) -> StoreResult<()> {
        let step = i64_of(step)?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        // A factor cannot exist without its account (foreign key).
        if !lock_account(&mut tx, user).await? {
            return Err(StoreError::NotFound {
                kind: "second factor",
            });
        }
        let row = sqlx::query(
            "WITH t AS (SELECT user_id FROM totp_factors WHERE user_id = $1), \
                  u AS (UPDATE totp_factors SET active = true, last_step = $3 \
                        WHERE user_id = $1 AND NOT active AND seed = $2 RETURNING user_id) \
             SELECT EXISTS (SELECT 1 FROM t) AS found, EXISTS (SELECT 1 FROM u) AS changed",
        )
        .bind(idb(&user))
        .bind(seed.to_bytes())
        .bind(step)
        .fetch_one(&mut *tx)
        .await
        .map_err(backend)?;
        let r = Reader::new(&row, "totp_factors", "user_id").named(hex_of(&user));
        if !r.boolean("found")? {
            return Err(StoreError::NotFound {
                kind: "second factor",
            });
        }
        if !r.boolean("changed")? {
            return Err(StoreError::Conflict {
                reason: "second factor is active or was replaced",
            });
        }
        put_backup_codes(&mut tx, user, &codes).await?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn advance_totp_step(&self, user: UserId, step: u64) -> StoreResult<bool> {
        #[cfg(feature = "racy")]
        if self.is_racy(crate::Racy::AdvanceTotpStep) {
            return self.racy_advance_totp_step(user, step).await;
        }
        let step = i64_of(step)?;
        let done = sqlx::query(
            "UPDATE totp_factors SET last_step = $2 \
             WHERE user_id = $1 AND active AND (last_step IS NULL OR last_step < $2)",
        )
        .bind(idb(&user))
        .bind(step)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn totp_page(&self, after: Option<UserId>, limit: usize) -> StoreResult<Vec<TotpRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOTP_COLUMNS} FROM totp_factors \
             WHERE ($1::bytea IS NULL OR user_id > $1) ORDER BY user_id LIMIT $2"
        ))
        .bind(opt_idb(&after))
        .bind(limit_of(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(totp_of).collect()
    }

    async fn replace_totp_seed(
        &self,
        user: UserId,
        expected: &Ciphertext,
        new: Ciphertext,
    ) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE totp_factors SET seed = $3 WHERE user_id = $1 AND seed = $2")
                .bind(idb(&user))
                .bind(expected.to_bytes())
                .bind(new.to_bytes())
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn reset_second_factor(&self, user: UserId) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let bumped =
            sqlx::query("UPDATE accounts SET epoch = epoch + 1 WHERE id = $1 RETURNING id")
                .bind(idb(&user))
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        if bumped.is_none() {
            return Err(StoreError::NotFound { kind: "account" });
        }
        for sql in [
            "DELETE FROM totp_factors WHERE user_id = $1",
            "DELETE FROM backup_codes WHERE user_id = $1",
        ] {
            sqlx::query(sql)
                .bind(idb(&user))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        // Under the device lock, so a device added concurrently is either
        // seen here or added after the reset committed.
        lock_devices(&mut tx, user).await?;
        sqlx::query("DELETE FROM devices WHERE user_id = $1")
            .bind(idb(&user))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn backup_codes(&self, user: UserId) -> StoreResult<Vec<BackupCodeRecord>> {
        let rows = sqlx::query(
            "SELECT user_id, idx::text AS idx, salt, hash FROM backup_codes \
             WHERE user_id = $1 ORDER BY backup_codes.idx",
        )
        .bind(idb(&user))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(backup_code_of).collect()
    }

    async fn replace_backup_codes(
        &self,
        user: UserId,
        codes: Vec<BackupCodeRecord>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        if !lock_account(&mut tx, user).await? {
            return Err(StoreError::NotFound { kind: "account" });
        }
        put_backup_codes(&mut tx, user, &codes).await?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn consume_backup_code(
        &self,
        user: UserId,
        code: &BackupCodeRecord,
    ) -> StoreResult<bool> {
        #[cfg(feature = "racy")]
        if self.is_racy(crate::Racy::ConsumeBackupCode) {
            return self.racy_consume_backup_code(user, code).await;
        }
        let done =
            sqlx::query("DELETE FROM backup_codes WHERE user_id = $1 AND idx = $2 AND hash = $3")
                .bind(idb(&user))
                .bind(i16::from(code.index))
                .bind(&code.hash[..])
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_device(&self, device: DeviceRecord, cap: usize) -> StoreResult<Vec<DeviceId>> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        lock_devices(&mut tx, device.user).await?;
        sqlx::query(&format!(
            "INSERT INTO devices ({DEVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(idb(&device.id))
        .bind(idb(&device.user))
        .bind(&device.token_hash[..])
        .bind(device.created_at)
        .bind(device.expires_at)
        .bind(device.last_used_at)
        .bind(enum_text(&device.ip_family))
        .bind(i64_of(device.epoch)?)
        .execute(&mut *tx)
        .await
        .map_err(db_err("device"))?;
        // Keep the `cap` newest by (created_at, id); evict the rest, oldest
        // first.
        let rows = sqlx::query(
            "WITH ranked AS (\
               SELECT id, row_number() OVER (ORDER BY created_at DESC, id DESC) AS pos \
               FROM devices WHERE user_id = $1), \
             gone AS (\
               DELETE FROM devices d USING ranked r \
               WHERE d.id = r.id AND r.pos > $2 \
               RETURNING d.id, d.created_at) \
             SELECT id FROM gone ORDER BY created_at, id",
        )
        .bind(idb(&device.user))
        .bind(limit_of(cap))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let evicted = rows
            .iter()
            .map(|row| Reader::new(row, "devices", "id").id::<DeviceId>("id"))
            .collect::<StoreResult<Vec<_>>>()?;
        tx.commit().await.map_err(backend)?;
        Ok(evicted)
    }

    async fn device_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<DeviceRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE token_hash = $1"
        ))
        .bind(&token_hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(device_of).transpose()
    }

    async fn devices_of(&self, user: UserId) -> StoreResult<Vec<DeviceRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 ORDER BY created_at, id"
        ))
        .bind(idb(&user))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(device_of).collect()
    }

    async fn touch_device(&self, id: DeviceId, at: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE devices SET last_used_at = $2 WHERE id = $1")
            .bind(idb(&id))
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn revoke_devices(&self, user: UserId, which: Option<DeviceId>) -> StoreResult<usize> {
        // One statement: all or nothing.
        let done = sqlx::query(
            "DELETE FROM devices WHERE user_id = $1 AND ($2::bytea IS NULL OR id = $2)",
        )
        .bind(idb(&user))
        .bind(opt_idb(&which))
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(count_of(done.rows_affected()))
    }
}

#[async_trait]
impl ThrottleStore for PgStore {
    async fn reserve_attempt(
        &self,
        scope: &AttemptScope,
        at: DateTime<Utc>,
        since: DateTime<Utc>,
        max: u32,
    ) -> StoreResult<bool> {
        let key = scope.key();
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('echorelay.attempts:' || $1::text, 0))",
        )
        .bind(&key)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        sqlx::query("DELETE FROM attempts WHERE scope = $1 AND at <= $2")
            .bind(&key)
            .bind(since)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let inserted = sqlx::query(
            "INSERT INTO attempts (scope, at) SELECT $1, $2 \
             WHERE (SELECT count(*) FROM attempts WHERE scope = $1 AND at > $3) < $4",
        )
        .bind(&key)
        .bind(at)
        .bind(since)
        .bind(i64::from(max))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(inserted.rows_affected() > 0)
    }

    async fn attempts_since(
        &self,
        scope: &AttemptScope,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<DateTime<Utc>>> {
        let rows = sqlx::query("SELECT scope, at FROM attempts WHERE scope = $1 AND at > $2")
            .bind(scope.key())
            .bind(since)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| Reader::new(row, "attempts", "scope").time("at"))
            .collect()
    }

    async fn clear_attempts(&self, scope: &AttemptScope) -> StoreResult<()> {
        sqlx::query("DELETE FROM attempts WHERE scope = $1")
            .bind(scope.key())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

fn hex_of(user: &UserId) -> String {
    hex::encode(idb(user))
}
