//! [`BackupService`]: makes, lists, verifies and opens backups on a
//! [`BackupTarget`] (layout in docs/FORMATS.md, Part 5).
//!
//! A backup `ID` is the objects `backups/ID/NAME.age`, one per source,
//! then `backups/ID/manifest.age`, written last with a conditional create.
//! Before the manifest is written every object is read back and its
//! SHA-256 compared with what was uploaded (the process that backs up
//! holds public keys only, so this read-back is its verification). A
//! backup without a manifest is incomplete: never listed, never restored,
//! and deleted by [`BackupService::prune`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use sha2::{Digest, Sha256};

use super::crypt::{self, Expected, Identities, PlaintextChunks, Recipients, SealedWriter};
use super::manifest::{self, HeadEntry, Manifest, ObjectEntry};
use super::target::{BackupError, BackupTarget, ObjectPath};
use crate::clock::Clock;
use crate::vault::Keyring;

/// What a backup is made of: one object per source.
#[async_trait]
pub trait BackupSource: Send + Sync {
    /// The object's name in the manifest (`snapshot`, `pg_dump`): ASCII
    /// letters, digits, `_` and `-`.
    fn name(&self) -> &str;
    /// Writes the source's bytes to `out` (which encrypts them).
    async fn write_to(&self, out: &mut SealedWriter) -> Result<(), BackupError>;
}

/// Settings of a [`BackupService`] that describe the store backed up.
#[derive(Debug, Clone)]
pub struct StoreInfo {
    /// `memory` or `postgres`.
    pub kind: String,
    /// The store's schema version (Postgres: the last migration).
    pub schema_version: i64,
}

/// One complete backup as listed (no decryption needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupListing {
    /// Its id.
    pub id: String,
    /// When it started (from its id).
    pub started_at: DateTime<Utc>,
    /// Bytes stored, manifest included.
    pub size: u64,
}

/// What [`BackupService::verify`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The manifest (authenticated).
    pub manifest: Manifest,
    /// Objects downloaded, hashed and decrypted.
    pub objects: usize,
    /// Plaintext bytes decrypted.
    pub plaintext_bytes: u64,
}

/// How many backups to keep (the newest of each period), like `restic
/// forget --keep-daily …`. A backup kept by any rule stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest backup of each of the last `daily` days that have one.
    pub daily: usize,
    /// … of each of the last `weekly` ISO weeks.
    pub weekly: usize,
    /// … of each of the last `monthly` months.
    pub monthly: usize,
}

impl Default for Retention {
    /// 7 daily, 4 weekly, 12 monthly.
    fn default() -> Self {
        Self {
            daily: 7,
            weekly: 4,
            monthly: 12,
        }
    }
}

impl Retention {
    /// The ids of `backups` to keep: the newest of each period, per
    /// rule, newest periods first. Never empty while `backups` is not
    /// (the newest backup is always kept).
    pub fn keep<'a>(&self, backups: &'a [BackupListing]) -> Vec<&'a str> {
        let mut sorted: Vec<&BackupListing> = backups.iter().collect();
        sorted.sort_by(|a, b| b.id.cmp(&a.id));
        let mut keep: Vec<&str> = Vec::new();
        let mut rule = |n: usize, period: &dyn Fn(NaiveDate) -> (i32, u32)| {
            let mut seen: Vec<(i32, u32)> = Vec::new();
            for b in &sorted {
                let p = period(b.started_at.date_naive());
                if seen.contains(&p) {
                    continue;
                }
                if seen.len() == n {
                    break;
                }
                seen.push(p);
                if !keep.contains(&b.id.as_str()) {
                    keep.push(b.id.as_str());
                }
            }
        };
        rule(self.daily, &|d| (d.year(), d.ordinal()));
        rule(self.weekly, &|d| {
            let w = d.iso_week();
            (w.year(), w.week())
        });
        rule(self.monthly, &|d| (d.year(), d.month()));
        if let Some(newest) = sorted.first()
            && !keep.contains(&newest.id.as_str())
        {
            keep.push(newest.id.as_str());
        }
        keep
    }
}

/// Makes, lists, verifies and opens backups; see the module docs.
#[derive(Clone)]
pub struct BackupService {
    target: Arc<dyn BackupTarget>,
    keyring: Arc<Keyring>,
    clock: Arc<dyn Clock>,
    store: StoreInfo,
}

impl fmt::Debug for BackupService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackupService")
            .field("target", &self.target.describe())
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

fn dir(id: &str) -> String {
    format!("backups/{id}")
}

fn manifest_path(id: &str) -> Result<ObjectPath, BackupError> {
    ObjectPath::new(&format!("{}/manifest.age", dir(id)))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && name != "manifest"
}

impl BackupService {
    /// A service writing to `target`, authenticating manifests with the
    /// keyring's current key.
    pub fn new(
        target: Arc<dyn BackupTarget>,
        keyring: Arc<Keyring>,
        clock: Arc<dyn Clock>,
        store: StoreInfo,
    ) -> Self {
        Self {
            target,
            keyring,
            clock,
            store,
        }
    }

    /// The clock's now.
    pub(super) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The target.
    pub fn target(&self) -> &Arc<dyn BackupTarget> {
        &self.target
    }

    /// Makes a backup of `sources`, encrypted to `recipients`, recording
    /// `heads` (every audit chain's head). Each object is uploaded
    /// encrypted, read back and compared; the manifest is written last.
    /// On any failure the objects written so far are deleted (best
    /// effort) and no manifest exists: the backup is not complete.
    pub async fn run(
        &self,
        recipients: &Recipients,
        sources: &[&dyn BackupSource],
        heads: Vec<HeadEntry>,
    ) -> Result<Manifest, BackupError> {
        let started = self.clock.now();
        let id = manifest::backup_id(started, rand::random::<u32>());
        let mut written: Vec<ObjectPath> = Vec::new();
        let result = self
            .run_inner(&id, started, recipients, sources, heads, &mut written)
            .await;
        if result.is_err() {
            for p in &written {
                let _ = self.target.delete(p).await;
            }
        }
        result
    }

    async fn run_inner(
        &self,
        id: &str,
        started: DateTime<Utc>,
        recipients: &Recipients,
        sources: &[&dyn BackupSource],
        heads: Vec<HeadEntry>,
        written: &mut Vec<ObjectPath>,
    ) -> Result<Manifest, BackupError> {
        if sources.is_empty() || sources.len() > manifest::MAX_OBJECTS {
            return Err(BackupError::Source("a backup needs 1 to 64 sources".into()));
        }
        let mut objects = Vec::with_capacity(sources.len());
        for source in sources {
            let name = source.name();
            if !valid_name(name) || objects.iter().any(|o: &ObjectEntry| o.name == name) {
                return Err(BackupError::Source(format!(
                    "bad or repeated source name {name:?}"
                )));
            }
            let path = ObjectPath::new(&format!("{}/{name}.age", dir(id)))?;
            written.push(path.clone());
            let mut w = SealedWriter::start(self.target.as_ref(), &path, recipients).await?;
            if let Err(e) = source.write_to(&mut w).await {
                let _ = w.abort().await;
                return Err(e);
            }
            let sealed = w.finish().await?;
            self.read_back(&path, sealed.size, &sealed.sha256).await?;
            tracing::info!(
                backup = id,
                object = name,
                bytes = sealed.size,
                "backup object written and read back"
            );
            objects.push(ObjectEntry {
                name: name.to_owned(),
                path: path.as_str().to_owned(),
                size: sealed.size,
                sha256: hex::encode(sealed.sha256),
                plaintext_size: sealed.plaintext_size,
            });
        }
        let m = Manifest {
            format: manifest::FORMAT.to_owned(),
            id: id.to_owned(),
            created_at: started,
            echorelay_version: env!("CARGO_PKG_VERSION").to_owned(),
            store: self.store.kind.clone(),
            schema_version: self.store.schema_version,
            recipients: recipients.fingerprints(),
            objects,
            audit_heads: heads,
        };
        let envelope = manifest::seal(&m, &self.keyring)?;
        let sealed = crypt::encrypt_small(recipients, &envelope)?;
        let mpath = manifest_path(id)?;
        self.target.create(&mpath, Bytes::from(sealed)).await?;
        tracing::info!(backup = id, "backup complete");
        Ok(m)
    }

    /// Downloads `path` and compares its size and SHA-256.
    async fn read_back(
        &self,
        path: &ObjectPath,
        size: u64,
        sha256: &[u8; 32],
    ) -> Result<(), BackupError> {
        let mut r = self.target.get(path).await?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = r.next_chunk().await? {
            n += chunk.len() as u64;
            h.update(&chunk);
        }
        let got: [u8; 32] = h.finalize().into();
        if n != size || got != *sha256 {
            return Err(BackupError::corrupt(
                path,
                "read back differs from what was uploaded",
            ));
        }
        Ok(())
    }

    /// Every complete backup (its manifest exists), oldest first.
    pub async fn list(&self) -> Result<Vec<BackupListing>, BackupError> {
        let prefix = ObjectPath::new("backups")?;
        let objects = self.target.list(Some(&prefix)).await?;
        let mut sizes: BTreeMap<String, (u64, bool)> = BTreeMap::new();
        for o in objects {
            let mut parts = o.path.as_str().splitn(3, '/');
            let (Some(_), Some(id), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            if !manifest::is_backup_id(id) {
                continue;
            }
            let e = sizes.entry(id.to_owned()).or_insert((0, false));
            e.0 += o.size;
            if rest == "manifest.age" {
                e.1 = true;
            }
        }
        Ok(sizes
            .into_iter()
            .filter(|(_, (_, complete))| *complete)
            .filter_map(|(id, (size, _))| {
                Some(BackupListing {
                    started_at: manifest::started_at(&id)?,
                    id,
                    size,
                })
            })
            .collect())
    }

    /// The authenticated manifest of backup `id`.
    pub async fn manifest(
        &self,
        id: &str,
        identities: &Identities,
    ) -> Result<Manifest, BackupError> {
        if !manifest::is_backup_id(id) {
            return Err(BackupError::NoSuchBackup(id.to_owned()));
        }
        let path = manifest_path(id)?;
        let ct = match super::target::read_all(
            self.target.as_ref(),
            &path,
            manifest::MAX_MANIFEST_BYTES + 64 * 1024,
        )
        .await
        {
            Err(BackupError::NotFound(_)) => return Err(BackupError::NoSuchBackup(id.to_owned())),
            other => other?,
        };
        let plain = crypt::decrypt_small(identities, &ct, manifest::MAX_MANIFEST_BYTES, &path)?;
        let m = manifest::open(&plain, &self.keyring, &path)?;
        if m.id != id {
            return Err(BackupError::corrupt(
                &path,
                "names another backup (a manifest moved or swapped)",
            ));
        }
        Ok(m)
    }

    /// The newest complete backup's id, if any.
    pub async fn newest(&self) -> Result<Option<String>, BackupError> {
        Ok(self.list().await?.pop().map(|b| b.id))
    }

    /// Streams object `name` of the backup whose manifest is `m`, checked
    /// and decrypted (see [`PlaintextChunks`]).
    pub async fn open(
        &self,
        m: &Manifest,
        name: &str,
        identities: Arc<Identities>,
    ) -> Result<PlaintextChunks, BackupError> {
        let entry =
            m.objects.iter().find(|o| o.name == name).ok_or_else(|| {
                BackupError::NoSuchBackup(format!("{} has no object {name}", m.id))
            })?;
        let path = ObjectPath::new(&entry.path)?;
        let mut sha = [0u8; 32];
        hex::decode_to_slice(&entry.sha256, &mut sha)
            .map_err(|_| BackupError::corrupt(&path, "malformed hash in the manifest"))?;
        crypt::open_object(
            self.target.clone(),
            path,
            identities,
            Expected {
                size: entry.size,
                sha256: sha,
                plaintext_size: entry.plaintext_size,
            },
        )
        .await
    }

    /// Downloads every object of backup `id`, checks its size, SHA-256
    /// and age authentication, and imports nothing. `progress` is called
    /// with the plaintext bytes of each chunk as it verifies.
    pub async fn verify(
        &self,
        id: &str,
        identities: Arc<Identities>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<VerifyReport, BackupError> {
        let m = self.manifest(id, &identities).await?;
        let mut total = 0u64;
        for o in &m.objects {
            let mut chunks = self.open(&m, &o.name, identities.clone()).await?;
            while let Some(item) = chunks.recv().await {
                let n = item?.len() as u64;
                total += n;
                progress(n);
            }
        }
        Ok(VerifyReport {
            objects: m.objects.len(),
            plaintext_bytes: total,
            manifest: m,
        })
    }

    /// Downloads, checks and parses the logical snapshot of backup `id`
    /// ([`super::snapshot`]): the manifest authenticated, the object's
    /// size, SHA-256 and age authentication checked, then
    /// [`snapshot::parse`](super::snapshot::parse) with the manifest's
    /// audit heads as anchors. Nothing is written anywhere; restore the
    /// result with [`SnapshotStore::restore_snapshot`](crate::ports::SnapshotStore::restore_snapshot).
    /// Holds the snapshot's plaintext in memory (the size of what the
    /// store it restores into will hold).
    ///
    /// # Errors
    /// As [`BackupService::verify`]; a backup without a snapshot is
    /// `NoSuchBackup`; a snapshot that does not parse or check is
    /// `Corrupt` (`UnsupportedFormat` when a newer echorelay wrote it).
    pub async fn read_snapshot(
        &self,
        id: &str,
        identities: Arc<Identities>,
    ) -> Result<crate::ports::SnapshotData, BackupError> {
        use super::snapshot::{self, SnapshotError};
        let m = self.manifest(id, &identities).await?;
        let entry = m
            .objects
            .iter()
            .find(|o| o.name == snapshot::OBJECT_NAME)
            .ok_or_else(|| BackupError::NoSuchBackup(format!("{id} holds no snapshot")))?;
        let path = ObjectPath::new(&entry.path)?;
        let mut anchors = Vec::with_capacity(m.audit_heads.len());
        for h in &m.audit_heads {
            let chain = match &h.chain {
                None => None,
                Some(text) => Some(text.parse::<crate::ids::ProjectId>().map_err(|_| {
                    BackupError::corrupt(&path, "the manifest names a malformed chain")
                })?),
            };
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&h.hash, &mut hash).map_err(|_| {
                BackupError::corrupt(&path, "the manifest holds a malformed head hash")
            })?;
            anchors.push((
                chain,
                crate::audit::ChainHead {
                    seq: h.seq,
                    hash: crate::audit::Hash32(hash),
                },
            ));
        }
        let cap = usize::try_from(entry.plaintext_size).unwrap_or(usize::MAX);
        let mut plain = Vec::with_capacity(cap.min(64 * 1024 * 1024));
        let mut chunks = self.open(&m, snapshot::OBJECT_NAME, identities).await?;
        while let Some(item) = chunks.recv().await {
            plain.extend_from_slice(&item?);
        }
        snapshot::parse(&plain, &anchors).map_err(|e| match e {
            SnapshotError::UnsupportedFormat(found) => BackupError::UnsupportedFormat {
                found,
                supported: snapshot::FORMAT,
            },
            other => BackupError::corrupt(&path, &other.to_string()),
        })
    }

    /// Deletes what retention does not keep: complete backups outside
    /// `retention` (only while a newer complete backup exists — every
    /// complete backup was read back before its manifest was written),
    /// and incomplete ones (no manifest) older than `stale_after` of the
    /// newest complete one. Returns the ids deleted.
    pub async fn prune(&self, retention: Retention) -> Result<Vec<String>, BackupError> {
        let complete = self.list().await?;
        let Some(newest) = complete.last().map(|b| b.id.clone()) else {
            return Ok(Vec::new());
        };
        let keep = retention.keep(&complete);
        let mut doomed: Vec<String> = complete
            .iter()
            .filter(|b| !keep.contains(&b.id.as_str()) && b.id < newest)
            .map(|b| b.id.clone())
            .collect();
        // Incomplete backups older than the newest complete one: a run
        // that died (a running one is newer than every complete one).
        let prefix = ObjectPath::new("backups")?;
        let all = self.target.list(Some(&prefix)).await?;
        for o in &all {
            let id = o.path.as_str().split('/').nth(1).unwrap_or_default();
            if manifest::is_backup_id(id)
                && id < newest.as_str()
                && !complete.iter().any(|b| b.id == id)
                && !doomed.iter().any(|d| d == id)
            {
                doomed.push(id.to_owned());
            }
        }
        for id in &doomed {
            // The manifest first: a half-deleted backup is incomplete,
            // never a complete one missing objects.
            let mpath = manifest_path(id)?;
            self.target.delete(&mpath).await?;
            for o in all
                .iter()
                .filter(|o| o.path.as_str().split('/').nth(1) == Some(id))
            {
                self.target.delete(&o.path).await?;
            }
            tracing::info!(backup = %id, "backup pruned");
        }
        Ok(doomed)
    }
}

/// Every audit chain's head (the global chain, then each project's), to
/// record in a backup's manifest.
pub async fn audit_heads<S>(store: &S) -> Result<Vec<HeadEntry>, crate::Error>
where
    S: crate::ports::ConfigStore + crate::ports::AuditLog + ?Sized,
{
    let mut chains: Vec<Option<crate::ids::ProjectId>> = vec![None];
    chains.extend(store.list_projects().await?.into_iter().map(|p| Some(p.id)));
    let mut out = Vec::with_capacity(chains.len());
    for chain in chains {
        if let Some(h) = store.head(chain).await? {
            out.push(HeadEntry {
                chain: chain.map(|p| p.to_string()),
                seq: h.seq,
                hash: hex::encode(h.hash.0),
            });
        }
    }
    Ok(out)
}

/// How a live chain differs from the head a backup recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadMismatch {
    /// The chain no longer reaches the recorded head's sequence number:
    /// events were deleted (truncated), or the chain is gone.
    Truncated {
        /// The chain (`None`: global).
        chain: Option<String>,
        /// The recorded head's sequence number.
        recorded: u64,
        /// The live head's, if any.
        live: Option<u64>,
    },
    /// The event at the recorded sequence number has another hash: the
    /// chain was rewritten up to there (even if every hash after it was
    /// recomputed).
    Rewritten {
        /// The chain.
        chain: Option<String>,
        /// The sequence number.
        seq: u64,
    },
}

impl fmt::Display for HeadMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |c: &Option<String>| c.clone().unwrap_or_else(|| "global".into());
        match self {
            Self::Truncated {
                chain,
                recorded,
                live,
            } => write!(
                f,
                "{}: truncated: the backup recorded seq {recorded}, the live chain ends at {}",
                name(chain),
                live.map_or_else(|| "nothing".to_owned(), |s| s.to_string())
            ),
            Self::Rewritten { chain, seq } => write!(
                f,
                "{}: rewritten: event {seq} differs from the one the backup recorded",
                name(chain)
            ),
        }
    }
}

/// Compares the live chains with the heads a backup recorded: each
/// recorded head must still be in its chain, same sequence number, same
/// hash. Appends since the backup are fine. Returns every mismatch.
pub async fn compare_heads<S>(
    store: &S,
    heads: &[HeadEntry],
) -> Result<Vec<HeadMismatch>, crate::Error>
where
    S: crate::ports::AuditLog + ?Sized,
{
    let mut out = Vec::new();
    for h in heads {
        let chain = match &h.chain {
            None => None,
            Some(text) => match text.parse::<crate::ids::ProjectId>() {
                Ok(p) => Some(p),
                Err(_) => {
                    out.push(HeadMismatch::Truncated {
                        chain: h.chain.clone(),
                        recorded: h.seq,
                        live: None,
                    });
                    continue;
                }
            },
        };
        let at = store.events(chain, h.seq.saturating_sub(1), 1).await?;
        match at.first() {
            Some(e) if e.seq == h.seq => {
                if hex::encode(e.hash.0) != h.hash {
                    out.push(HeadMismatch::Rewritten {
                        chain: h.chain.clone(),
                        seq: h.seq,
                    });
                }
            }
            _ => {
                let live = store.head(chain).await?.map(|x| x.seq);
                out.push(HeadMismatch::Truncated {
                    chain: h.chain.clone(),
                    recorded: h.seq,
                    live,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(id: &str) -> BackupListing {
        BackupListing {
            id: id.to_owned(),
            started_at: manifest::started_at(id).unwrap(),
            size: 1,
        }
    }

    #[test]
    fn retention_keeps_the_newest_of_each_period() {
        // Two a day for 40 days.
        let mut all = Vec::new();
        for day in 0..40u32 {
            let d =
                NaiveDate::from_ymd_opt(2026, 10, 1).unwrap() + chrono::Duration::days(day.into());
            for h in [3, 15] {
                all.push(listing(&format!(
                    "{}T{h:02}0000Z-00000000",
                    d.format("%Y%m%d")
                )));
            }
        }
        let keep = Retention {
            daily: 3,
            weekly: 2,
            monthly: 2,
        }
        .keep(&all);
        // 3 daily: Nov 9, 8, 7 (the 15:00 ones). Weekly: the newest of
        // this ISO week (Mon Nov 9) and of the last (Nov 2-8: Nov 8),
        // both kept already. Monthly: November (Nov 9) and October's
        // last, Oct 31.
        assert_eq!(
            keep,
            vec![
                "20261109T150000Z-00000000",
                "20261108T150000Z-00000000",
                "20261107T150000Z-00000000",
                "20261031T150000Z-00000000",
            ]
        );
        let weekly = Retention {
            daily: 0,
            weekly: 3,
            monthly: 0,
        }
        .keep(&all);
        assert_eq!(
            weekly,
            vec![
                "20261109T150000Z-00000000",
                "20261108T150000Z-00000000",
                "20261101T150000Z-00000000",
            ]
        );
        // Nothing to keep by any rule still keeps the newest.
        let none = Retention {
            daily: 0,
            weekly: 0,
            monthly: 0,
        }
        .keep(&all);
        assert_eq!(none, vec!["20261109T150000Z-00000000"]);
    }
}
