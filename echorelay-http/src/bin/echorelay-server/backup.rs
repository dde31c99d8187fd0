//! `echorelay-server backup …` and `audit verify --against-backup`
//! (feature `backup`). RUNBOOK.md walks through them.
//!
//! | variable | meaning |
//! |---|---|
//! | `ECHORELAY_BACKUP_URL` | where backups go: `s3://bucket/prefix` (credentials, region and endpoint from the usual `AWS_*` variables) or `file:///absolute/path` |
//! | `ECHORELAY_BACKUP_RECIPIENTS` | the age X25519 recipients (`age1…`, comma-separated) every backup is encrypted to; needed to make backups |
//! | `DATABASE_URL`, `SECRET_KEY`, `SECRET_KEY_PREVIOUS` | as for `serve`: the store backed up, the keyring that authenticates manifests |

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use chrono::NaiveTime;
use clap::Subcommand;
use echorelay::core::backup::crypt::{Identities, Recipients};
use echorelay::core::backup::schedule::{PassOutcome, Schedule};
use echorelay::core::backup::service::{self, BackupService, BackupSource, Retention};
use echorelay::core::backup::{BackupError, BackupTarget};
use echorelay::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};

use crate::Outcome;

/// `backup` subcommands.
#[derive(Subcommand)]
pub enum BackupCommand {
    /// Make one backup now: a logical snapshot of the store (accounts,
    /// projects, members, keys, audit chains) and a `pg_dump` of
    /// DATABASE_URL, encrypted to ECHORELAY_BACKUP_RECIPIENTS, to
    /// ECHORELAY_BACKUP_URL, with every audit chain's head in its
    /// manifest. Prints the backup's id.
    Run,
    /// List the complete backups (those with a manifest), oldest first.
    List,
    /// Download every object of a backup, check its SHA-256 and age
    /// authentication against the authenticated manifest; import nothing.
    Verify {
        /// The backup's id (default: the newest).
        id: Option<String>,
        /// The age identity file (AGE-SECRET-KEY-1… lines).
        #[arg(long, short = 'i')]
        identity: PathBuf,
    },
    /// Restore a backup into DATABASE_URL: its manifest authenticated
    /// first, then its dump streamed once into `pg_restore` in one
    /// transaction, checked as it streams (the last chunk is released
    /// only once the whole object matches its hash): all or nothing.
    /// Refuses a database that holds any table unless --force.
    Restore {
        /// The backup's id.
        id: String,
        /// The age identity file.
        #[arg(long, short = 'i')]
        identity: PathBuf,
        /// Restore over a database that is not empty (objects of the dump
        /// are dropped and recreated).
        #[arg(long)]
        force: bool,
    },
    /// Delete backups that retention does not keep, and incomplete ones
    /// older than the newest complete backup.
    Prune {
        /// Newest backup of each of the last N days.
        #[arg(long, default_value_t = Retention::default().daily)]
        keep_daily: usize,
        /// … of each of the last N ISO weeks.
        #[arg(long, default_value_t = Retention::default().weekly)]
        keep_weekly: usize,
        /// … of each of the last N months.
        #[arg(long, default_value_t = Retention::default().monthly)]
        keep_monthly: usize,
    },
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The target of ECHORELAY_BACKUP_URL.
pub fn target_from_env() -> Result<Arc<dyn BackupTarget>, BackupError> {
    let url = env("ECHORELAY_BACKUP_URL").ok_or_else(|| {
        BackupError::Config(
            "ECHORELAY_BACKUP_URL is not set (s3://bucket/prefix or file:///path)".into(),
        )
    })?;
    Ok(Arc::new(echorelay::s3::S3Target::from_url(&url)?))
}

fn recipients_from_env() -> Result<Recipients, BackupError> {
    Recipients::parse(&env("ECHORELAY_BACKUP_RECIPIENTS").unwrap_or_default())
}

fn identities(path: &Path) -> Result<Arc<Identities>, BackupError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BackupError::Identity(format!("cannot read {}: {}", path.display(), e.kind()))
    })?;
    Ok(Arc::new(Identities::parse(&text)?))
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// The Postgres URL backups are made from: the in-memory store's data
/// lives in one process, so no other process can back it up.
fn dump_url() -> Result<String, BackupError> {
    env("DATABASE_URL").ok_or_else(|| {
        BackupError::Config("backups from echorelay-server need DATABASE_URL (Postgres): an in-memory store is backed up by its embedder through the library".into())
    })
}

/// Runs one backup of `relay` now: its snapshot and a `pg_dump`. Used by
/// `backup run` (Postgres only: another process's in-memory store is out
/// of reach; `serve` backs its own up).
pub async fn run_once(
    relay: &EchoRelay,
    backups: &BackupService,
) -> Result<String, Box<dyn std::error::Error>> {
    let recipients = recipients_from_env()?;
    let dump = echorelay::pg::backup::PgDumpSource::new(dump_url()?);
    let m = relay.back_up(backups, &recipients, &[&dump]).await?;
    Ok(m.id)
}

fn parse_time(s: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M"))
        .map_err(|_| format!("{s:?} is not a time of day, HH:MM or HH:MM:SS (UTC)"))
}

/// `serve`'s backup schedule (when ECHORELAY_BACKUP_URL is set).
#[derive(clap::Args, Debug)]
pub struct ScheduleArgs {
    /// With ECHORELAY_BACKUP_URL set, back up daily at this time, UTC
    /// (HH:MM or HH:MM:SS), and once at start if no backup covers the
    /// last slot (a missed one). However many servers run on one
    /// database, one backs up per slot (a Postgres advisory lock).
    #[arg(long, default_value = "03:00", value_parser = parse_time)]
    backup_at: NaiveTime,
    /// After each scheduled backup, keep the newest backup of each of
    /// the last N days (and delete what no rule keeps).
    #[arg(long, default_value_t = Retention::default().daily)]
    backup_keep_daily: usize,
    /// … of each of the last N ISO weeks.
    #[arg(long, default_value_t = Retention::default().weekly)]
    backup_keep_weekly: usize,
    /// … of each of the last N months.
    #[arg(long, default_value_t = Retention::default().monthly)]
    backup_keep_monthly: usize,
    /// Seconds before trying again when a scheduled backup failed (or
    /// another server held the lock) and no backup covers the slot yet.
    #[arg(long, default_value_t = Schedule::default().retry.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    backup_retry_secs: u64,
    /// In memory only: before serving, restore the snapshot of this
    /// backup (an id, or `newest`) from ECHORELAY_BACKUP_URL into the
    /// empty store; SECRET_KEY must be the keyring it was made under.
    /// Sessions are not restored: everyone signs in again.
    #[arg(long, value_name = "ID", requires = "restore_identity")]
    restore_backup: Option<String>,
    /// The age identity file for --restore-backup.
    #[arg(long, value_name = "FILE", requires = "restore_backup")]
    restore_identity: Option<PathBuf>,
}

/// `serve --restore-backup`: fills the in-memory store from a backup's
/// snapshot before anything is served.
pub async fn restore_at_start(
    relay: &EchoRelay,
    args: &ScheduleArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let (Some(id), Some(identity)) = (&args.restore_backup, &args.restore_identity) else {
        return Ok(());
    };
    if !relay.store_type().ends_with("MemStore") {
        return Err("--restore-backup is for the in-memory store; restore a Postgres database with `echorelay-server backup restore` (RUNBOOK.md)".into());
    }
    let backups = relay.backups(target_from_env()?);
    let ids = identities(identity)?;
    let id = if id == "newest" {
        backups
            .newest()
            .await?
            .ok_or_else(|| BackupError::NoSuchBackup("(none yet)".into()))?
    } else {
        id.clone()
    };
    let counts = relay.restore_snapshot(&backups, &id, ids).await?;
    println!(
        "echorelay-server: restored backup {id}: {} accounts, {} projects, {} members, {} keys, {} audit events",
        counts.accounts, counts.projects, counts.members, counts.keys, counts.events
    );
    Ok(())
}

impl ScheduleArgs {
    /// Whether `serve` restores a backup at start.
    pub fn restores(&self) -> bool {
        self.restore_backup.is_some()
    }

    fn schedule(&self) -> Schedule {
        Schedule {
            at: self.backup_at,
            retention: Retention {
                daily: self.backup_keep_daily,
                weekly: self.backup_keep_weekly,
                monthly: self.backup_keep_monthly,
            },
            retry: std::time::Duration::from_secs(self.backup_retry_secs),
        }
    }
}

/// Checks the backup configuration at `serve`'s start and returns the
/// schedule's task, or `None` when ECHORELAY_BACKUP_URL is not set. A
/// configuration that cannot back up (no recipients, a bad URL) stops the
/// server from starting: it never runs without the backups it was told
/// to make. Each backup holds the store's snapshot, and on Postgres a
/// `pg_dump` beside it.
pub fn scheduler(
    relay: &EchoRelay,
    args: &ScheduleArgs,
) -> Result<Option<impl std::future::Future<Output = ()> + Send + 'static>, BackupError> {
    if env("ECHORELAY_BACKUP_URL").is_none() {
        return Ok(None);
    }
    let backups = relay.backups(target_from_env()?);
    let recipients = recipients_from_env()?;
    let dump = env("DATABASE_URL").map(echorelay::pg::backup::PgDumpSource::new);
    let schedule = args.schedule();
    let relay = relay.clone();
    tracing::info!(at = %schedule.at, target = %backups.target().describe(), "backup: scheduled daily (UTC)");
    Ok(Some(async move {
        loop {
            let snapshot = relay.snapshot_source();
            let mut sources: Vec<&dyn BackupSource> = vec![&snapshot];
            if let Some(dump) = &dump {
                sources.push(dump);
            }
            let outcome = match service::audit_heads(relay.store().as_ref()).await {
                Ok(heads) => {
                    backups
                        .scheduled_pass(
                            relay.backup_lock().as_ref(),
                            &schedule,
                            &recipients,
                            &sources,
                            heads,
                        )
                        .await
                }
                Err(e) => Err(BackupError::Source(format!("reading the audit heads: {e}"))),
            };
            match &outcome {
                Ok(PassOutcome::Ran {
                    slot,
                    manifest,
                    pruned,
                }) => tracing::info!(
                    backup = %manifest.id, slot = %slot, pruned = pruned.len(),
                    "backup: made the slot's backup"
                ),
                Ok(PassOutcome::Covered { slot, by, pruned }) => tracing::info!(
                    backup = %by, slot = %slot, pruned = pruned.len(),
                    "backup: the slot is covered"
                ),
                Ok(PassOutcome::Busy) => {
                    tracing::info!("backup: another process holds the backup lock")
                }
                Err(e) => tracing::error!(error = %e, "backup: the scheduled backup failed"),
            }
            let wait = schedule.wait_after(relay.clock().now(), &outcome);
            tokio::time::sleep(wait).await;
        }
    }))
}

/// The relay for `command`: from the environment for `run` (it reads the
/// audit heads from the store). The others must not open the database as
/// a store (during an incident it is empty, behind, or about to be
/// replaced): they get an in-memory relay with the same `SECRET_KEY`
/// keyring, which is all they need of it.
async fn relay_for(command: &BackupCommand) -> Result<EchoRelay, Box<dyn std::error::Error>> {
    if !matches!(command, BackupCommand::Run) {
        let authenticates = matches!(
            command,
            BackupCommand::Verify { .. } | BackupCommand::Restore { .. }
        );
        if authenticates && env("SECRET_KEY").is_none() {
            return Err("verify and restore need SECRET_KEY (and SECRET_KEY_PREVIOUS) as at the time of the backup: the manifest is authenticated under it and the restored secrets are sealed under it".into());
        }
        let relay = EchoRelayBuilder::from_env_vars(|name| match name {
            "DATABASE_URL" | "REDIS_URL" => None,
            _ => std::env::var(name).ok(),
        })
        .await?
        .build()?;
        return Ok(relay);
    }
    Ok(EchoRelay::from_env().await?)
}

pub async fn run(command: BackupCommand) -> Outcome {
    let relay = relay_for(&command).await?;
    let backups = relay.backups(target_from_env()?);
    match command {
        BackupCommand::Run => {
            let id = run_once(&relay, &backups).await?;
            println!("{id}");
        }
        BackupCommand::List => {
            for b in backups.list().await? {
                println!("{}\t{}\t{} bytes", b.id, b.started_at.to_rfc3339(), b.size);
            }
        }
        BackupCommand::Verify { id, identity } => {
            let ids = identities(&identity)?;
            let id = match id {
                Some(id) => id,
                None => backups
                    .newest()
                    .await?
                    .ok_or_else(|| BackupError::NoSuchBackup("(none yet)".into()))?,
            };
            verify(&backups, &id, ids).await?;
        }
        BackupCommand::Restore {
            id,
            identity,
            force,
        } => {
            let ids = identities(&identity)?;
            let Some(url) = env("DATABASE_URL") else {
                return Err("restore needs DATABASE_URL (the database to restore into)".into());
            };
            // Refuse early, before a long verification.
            let existing = echorelay::pg::backup::user_relations(&url).await?;
            if existing > 0 && !force {
                return Err(BackupError::NotEmpty(format!(
                    "the database holds {existing} relations; restore into an empty database or pass --force"
                ))
                .into());
            }
            // The manifest is authenticated here; the dump is checked as it
            // streams (size, SHA-256, age authentication), its last chunk
            // held back until all of it checked out, so pg_restore's one
            // transaction cannot commit a corrupt or truncated dump.
            let m = backups.manifest(&id, &ids).await?;
            let dump = m
                .objects
                .iter()
                .find(|o| o.name == echorelay::pg::backup::DUMP_NAME)
                .ok_or_else(|| BackupError::NoSuchBackup(format!("{id} holds no pg_dump")))?;
            let progress = bar(dump.plaintext_size, "restore");
            let chunks = backups.open(&m, &dump.name, ids).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let p = progress.clone();
            let forward = tokio::spawn(async move {
                let mut chunks = chunks;
                while let Some(item) = chunks.recv().await {
                    if let Ok(b) = &item {
                        p.inc(b.len() as u64);
                    }
                    if tx.send(item).await.is_err() {
                        break;
                    }
                }
            });
            let fed = echorelay::pg::backup::restore_dump(&url, rx, force).await;
            let _ = forward.await;
            progress.finish_and_clear();
            let fed = fed?;
            println!(
                "restored {id} ({fed} bytes of pg_dump) into the database; run `echorelay-server migrate` (and `--grant-to ROLE` if you use one), then `echorelay-server audit verify --against-backup -i …`"
            );
        }
        BackupCommand::Prune {
            keep_daily,
            keep_weekly,
            keep_monthly,
        } => {
            let gone = backups
                .prune(Retention {
                    daily: keep_daily,
                    weekly: keep_weekly,
                    monthly: keep_monthly,
                })
                .await?;
            for id in &gone {
                println!("deleted {id}");
            }
            println!("{} backups deleted", gone.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(
    backups: &BackupService,
    id: &str,
    ids: Arc<Identities>,
) -> Result<echorelay::core::backup::manifest::Manifest, Box<dyn std::error::Error>> {
    let m = backups.manifest(id, &ids).await?;
    let total: u64 = m.objects.iter().map(|o| o.plaintext_size).sum();
    let progress = bar(total, "verify");
    let p = progress.clone();
    let report = backups.verify(id, ids, &move |n| p.inc(n)).await;
    progress.finish_and_clear();
    let report = report?;
    println!(
        "{id}: verified {} objects, {} bytes, made {} by echorelay {} from {} (schema {}), {} audit chain heads",
        report.objects,
        report.plaintext_bytes,
        report.manifest.created_at.to_rfc3339(),
        report.manifest.echorelay_version,
        report.manifest.store,
        report.manifest.schema_version,
        report.manifest.audit_heads.len()
    );
    let _ = std::io::stdout().flush();
    Ok(report.manifest)
}

/// `audit verify --against-backup [--backup-id ID]`: every chain head
/// recorded by backup `ID` (default: the newest backup that verifies)
/// must still be in the live chain.
pub async fn audit_against_backup(relay: &EchoRelay, identity: &Path, id: Option<&str>) -> Outcome {
    let backups = relay.backups(target_from_env()?);
    let ids = identities(identity)?;
    let m = match id {
        Some(id) => backups.manifest(id, &ids).await?,
        None => {
            let mut found = None;
            for b in backups.list().await?.iter().rev() {
                match backups.manifest(&b.id, &ids).await {
                    Ok(m) => {
                        found = Some(m);
                        break;
                    }
                    Err(e) => println!(
                        "backup {}: skipped, its manifest does not verify: {e}",
                        b.id
                    ),
                }
            }
            found.ok_or_else(|| {
                BackupError::NoSuchBackup("no backup with a manifest that verifies".into())
            })?
        }
    };
    let mismatches = service::compare_heads(relay.store().as_ref(), &m.audit_heads).await?;
    if mismatches.is_empty() {
        println!(
            "against backup {}: all {} chain heads it recorded are in the live chains",
            m.id,
            m.audit_heads.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for x in &mismatches {
        println!("against backup {}: {x}", m.id);
    }
    Ok(ExitCode::FAILURE)
}
