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

use clap::Subcommand;
use echorelay::core::backup::crypt::{Identities, Recipients};
use echorelay::core::backup::service::{self, BackupService, Retention};
use echorelay::core::backup::{BackupError, BackupTarget};
use echorelay::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};

use crate::Outcome;

/// `backup` subcommands.
#[derive(Subcommand)]
pub enum BackupCommand {
    /// Make one backup now: `pg_dump` of DATABASE_URL, encrypted to
    /// ECHORELAY_BACKUP_RECIPIENTS, to ECHORELAY_BACKUP_URL, with every
    /// audit chain's head in its manifest. Prints the backup's id.
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
    /// Restore a backup into DATABASE_URL: verify it whole first, then
    /// `pg_restore` in one transaction (all or nothing). Refuses a
    /// database that holds any table unless --force.
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

/// Runs one backup of `relay` now (the store's own source: `pg_dump` on
/// Postgres). Used by `backup run` and the schedule in `serve`.
pub async fn run_once(
    relay: &EchoRelay,
    backups: &BackupService,
) -> Result<String, Box<dyn std::error::Error>> {
    let recipients = recipients_from_env()?;
    let Some(url) = env("DATABASE_URL") else {
        return Err("the in-memory store has nothing to back up from another process: set DATABASE_URL (embedders back up a MemStore through the library)".into());
    };
    let heads = service::audit_heads(relay.store().as_ref()).await?;
    let dump = echorelay::pg::backup::PgDumpSource::new(url);
    let m = backups.run(&recipients, &[&dump], heads).await?;
    Ok(m.id)
}

/// The relay for `command`: from the environment, except that `restore`
/// must not open the destination database as a store (it is empty, or
/// about to be replaced): it gets an in-memory relay with the same
/// `SECRET_KEY` keyring, which is all a restore needs of it.
async fn relay_for(command: &BackupCommand) -> Result<EchoRelay, Box<dyn std::error::Error>> {
    if matches!(command, BackupCommand::Restore { .. }) {
        if env("SECRET_KEY").is_none() {
            return Err("restore needs SECRET_KEY (and SECRET_KEY_PREVIOUS) as at the time of the backup: the manifest is authenticated under it and the restored secrets are sealed under it".into());
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
            let m = verify(&backups, &id, ids.clone()).await?;
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

/// `audit verify --against-backup`: every chain head recorded by the
/// newest backup that verifies must still be in the live chain.
pub async fn audit_against_backup(relay: &EchoRelay, identity: &Path) -> Outcome {
    let backups = relay.backups(target_from_env()?);
    let ids = identities(identity)?;
    let listed = backups.list().await?;
    for b in listed.iter().rev() {
        let m = match backups.manifest(&b.id, &ids).await {
            Ok(m) => m,
            Err(e) => {
                println!(
                    "backup {}: skipped, its manifest does not verify: {e}",
                    b.id
                );
                continue;
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
        return Ok(ExitCode::FAILURE);
    }
    Err(BackupError::NoSuchBackup("no backup with a manifest that verifies".into()).into())
}
