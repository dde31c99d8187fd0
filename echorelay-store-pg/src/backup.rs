//! Postgres in backups (feature `backup`): [`PgDumpSource`] streams
//! `pg_dump --format=custom` of the whole database into a backup (through
//! the encryption: nothing is staged on disk), and [`restore_dump`] feeds a
//! decrypted dump to `pg_restore --single-transaction`, so a restore either
//! completes or leaves the database as it was.
//!
//! `pg_dump` and `pg_restore` come from the PostgreSQL client package, at
//! least the server's major version (Debian: `postgresql-client`). The
//! connection URL is passed without its password: the password goes in
//! `PGPASSWORD`, so it never shows in the process list, and no error or log
//! line holds it (URLs are shown redacted).

use std::process::Stdio;

use async_trait::async_trait;
use echorelay_core::backup::BackupError;
use echorelay_core::backup::crypt::{PlaintextChunks, SealedWriter};
use echorelay_core::backup::schedule::{SlotGuard, SlotLock};
use echorelay_core::backup::service::BackupSource;
use echorelay_core::redact::redact_url;
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// The name of the dump's object in a backup.
pub const DUMP_NAME: &str = "pg_dump";

/// A libpq connection: the URL without its password, and the password.
struct Conn {
    url: String,
    password: Option<String>,
}

impl Conn {
    fn parse(url: &str) -> Result<Self, BackupError> {
        let mut u = url::Url::parse(url).map_err(|_| {
            BackupError::Source(format!("DATABASE_URL does not parse: {}", redact_url(url)))
        })?;
        let password = u.password().map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        });
        if password.is_some() {
            let _ = u.set_password(None);
        }
        Ok(Self {
            url: u.to_string(),
            password,
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        if let Some(p) = &self.password {
            c.env("PGPASSWORD", p);
        }
        c.kill_on_drop(true);
        c
    }
}

/// `pg_dump --format=custom` of the database at a URL, as a backup source.
///
/// The archive is compressed by pg_dump (zlib) at level 1 by default: on
/// the 2-core benchmark machine level 1 took a third of the CPU time of
/// pg_dump's default (level 6) for a dump 2.6 % larger (1 GB of random
/// bytea, BENCHMARKS.md, issue 18); age does not compress.
pub struct PgDumpSource {
    url: String,
    compress: u8,
}

impl std::fmt::Debug for PgDumpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDumpSource")
            .field("url", &redact_url(&self.url))
            .field("compress", &self.compress)
            .finish()
    }
}

impl PgDumpSource {
    /// The source for the database at `url` (a `postgres://` URL).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            compress: 1,
        }
    }

    /// pg_dump's zlib level, 0 (none) to 9 (clamped); default 1.
    pub fn compress(mut self, level: u8) -> Self {
        self.compress = level.min(9);
        self
    }
}

async fn stderr_of(child: &mut tokio::process::Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s).await;
    }
    // The tools name the database and objects, never the password (it is
    // not on their command line); keep the message short.
    s.lines().take(5).collect::<Vec<_>>().join(" / ")
}

#[async_trait]
impl BackupSource for PgDumpSource {
    fn name(&self) -> &str {
        DUMP_NAME
    }

    async fn write_to(&self, out: &mut SealedWriter) -> Result<(), BackupError> {
        let conn = Conn::parse(&self.url)?;
        let mut child = conn
            .command("pg_dump")
            .args(["--format=custom", "--no-owner", "--no-privileges"])
            .arg(format!("--compress={}", self.compress))
            .arg("--dbname")
            .arg(&conn.url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                BackupError::Source(format!(
                    "pg_dump could not start ({e}): install the PostgreSQL client"
                ))
            })?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| BackupError::Source("pg_dump has no output".into()))?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = stdout
                .read(&mut buf)
                .await
                .map_err(|e| BackupError::Source(format!("reading pg_dump: {e}")))?;
            if n == 0 {
                break;
            }
            out.write(&buf[..n]).await?;
        }
        let status = child
            .wait()
            .await
            .map_err(|e| BackupError::Source(format!("pg_dump: {e}")))?;
        if !status.success() {
            let why = stderr_of(&mut child).await;
            return Err(BackupError::Source(format!(
                "pg_dump failed ({status}): {why}"
            )));
        }
        Ok(())
    }
}

/// How many user relations (tables, sequences, views…) the database at
/// `url` holds outside the system schemas.
pub async fn user_relations(url: &str) -> Result<i64, BackupError> {
    let mut c = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| BackupError::Source(format!("connecting to {}: {e}", redact_url(url))))?;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
    )
    .fetch_one(&mut c)
    .await
    .map_err(|e| BackupError::Source(format!("inspecting {}: {e}", redact_url(url))))?;
    let _ = c.close().await;
    Ok(n)
}

/// Restores a decrypted dump into the database at `url` with
/// `pg_restore --single-transaction --exit-on-error`: all or nothing.
/// Refuses a database that holds any relation unless `force` (then
/// objects the dump holds are dropped first: `--clean --if-exists`).
/// If the stream reports an error (the object does not verify), the
/// restore is abandoned before it commits. Returns the bytes fed.
pub async fn restore_dump(
    url: &str,
    mut chunks: PlaintextChunks,
    force: bool,
) -> Result<u64, BackupError> {
    let existing = user_relations(url).await?;
    if existing > 0 && !force {
        return Err(BackupError::NotEmpty(format!(
            "{} holds {existing} relations; restore into an empty database or pass --force",
            redact_url(url)
        )));
    }
    let conn = Conn::parse(url)?;
    let mut cmd = conn.command("pg_restore");
    cmd.args([
        "--single-transaction",
        "--exit-on-error",
        "--no-owner",
        "--no-privileges",
    ]);
    if force {
        cmd.args(["--clean", "--if-exists"]);
    }
    let mut child = cmd
        .arg("--dbname")
        .arg(&conn.url)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            BackupError::Source(format!(
                "pg_restore could not start ({e}): install the PostgreSQL client"
            ))
        })?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| BackupError::Source("pg_restore has no input".into()))?;
    let mut fed = 0u64;
    while let Some(item) = chunks.recv().await {
        match item {
            Ok(b) => {
                fed += b.len() as u64;
                if let Err(e) = stdin.write_all(&b).await {
                    // pg_restore stopped early: its status says why.
                    drop(stdin);
                    let _ = child.wait().await;
                    let why = stderr_of(&mut child).await;
                    return Err(BackupError::Source(format!(
                        "pg_restore stopped ({e}): {why}"
                    )));
                }
            }
            Err(e) => {
                // Kill before end of input: the single transaction never
                // commits, the database stays as it was.
                let _ = child.kill().await;
                return Err(e);
            }
        }
    }
    drop(stdin);
    let status = child
        .wait()
        .await
        .map_err(|e| BackupError::Source(format!("pg_restore: {e}")))?;
    if !status.success() {
        let why = stderr_of(&mut child).await;
        return Err(BackupError::Source(format!(
            "pg_restore failed ({status}): {why}"
        )));
    }
    Ok(fed)
}

/// The backup schedule's [`SlotLock`] on Postgres: a session-level
/// advisory lock (`pg_try_advisory_lock`) keyed by
/// `hashtextextended('echorelay.slot:' || name, 0)`, held on a connection
/// of its own (opened with the pool's options, outside the pool) for as
/// long as the guard lives. Every process on the database shares it; a
/// process that dies mid-backup frees it when its connection drops.
#[derive(Debug, Clone)]
pub struct PgSlotLock {
    pool: sqlx::PgPool,
}

impl PgSlotLock {
    /// The lock on the database of `pool`.
    pub fn new(pool: sqlx::PgPool) -> Self {
        Self { pool }
    }
}

struct PgSlotGuard {
    conn: Option<sqlx::PgConnection>,
    name: String,
}

const SLOT_KEY: &str = "hashtextextended('echorelay.slot:' || $1::text, 0)";

#[async_trait]
impl SlotGuard for PgSlotGuard {
    async fn release(mut self: Box<Self>) {
        if let Some(mut conn) = self.conn.take() {
            let _ = sqlx::query(&format!("SELECT pg_advisory_unlock({SLOT_KEY})"))
                .bind(&self.name)
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
        }
    }
}

#[async_trait]
impl SlotLock for PgSlotLock {
    async fn try_acquire(&self, name: &str) -> Result<Option<Box<dyn SlotGuard>>, BackupError> {
        let options = self.pool.connect_options();
        let mut conn = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(|e| BackupError::Source(format!("the backup lock's connection: {e}")))?;
        let got: bool = sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock({SLOT_KEY})"))
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| BackupError::Source(format!("taking the backup lock: {e}")))?;
        if !got {
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(Box::new(PgSlotGuard {
            conn: Some(conn),
            name: name.to_owned(),
        })))
    }
}
