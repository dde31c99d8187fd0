//! Logical snapshots: everything a store holds that outlives a session,
//! read through the ports, so every backend is backed up the same way and
//! a snapshot of one backend restores into another (docs/FORMATS.md §5.6).
//!
//! A snapshot is UTF-8 JSON Lines: a `header` record, then `account`,
//! `totp`, `backup_codes`, `device`, `project`, `member`, `key`, `event`
//! and `sealed_head` records, then an `end` record that counts the
//! records between. [`export`] writes one through the read ports;
//! [`parse`] reads one back into a [`SnapshotData`] and checks it (the
//! format version, the count, every id unique, every reference resolved,
//! every audit chain linked and reaching the heads a manifest recorded)
//! before anything is written; [`SnapshotStore::restore_snapshot`](crate::ports::SnapshotStore::restore_snapshot) then
//! writes it in one atomic step into an empty store.
//!
//! Sealed values (target secrets, TOTP seeds, pending reveals) stay
//! sealed: a restore needs the same `SECRET_KEY` keyring. Sessions, login
//! challenges, throttle counters and queued jobs are not in a snapshot.
//!
//! A snapshot of a store that is being written to is consistent per
//! record, not across records (an event appended during the export may or
//! may not be in it); the manifest's audit heads are read before the
//! export starts, so every chain in it reaches them. For Postgres the
//! `pg_dump` beside it is the transactionally consistent copy.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::target::BackupError;
use crate::access::Role;
use crate::account::{AccountRecord, BackupCodeRecord, DeviceRecord, TotpRecord};
use crate::audit::{AuditEvent, AuditTag, ChainHead, Hash32, SealedHead, verify_chain};
use crate::config::ProjectTree;
use crate::ids::{ProjectId, UserId};
use crate::keys::KeyRecord;
use crate::ports::{AccountStore, AuditLog, ConfigStore, KeyStore, MembershipStore, SnapshotData};

/// The format this build writes and reads.
pub const FORMAT: &str = "echorelay-snapshot/1";

/// The snapshot's object name in a backup (`backups/ID/snapshot.age`).
pub const OBJECT_NAME: &str = "snapshot";

/// Records read per port call while exporting.
const PAGE: usize = 500;

/// Bytes buffered before they are handed to the sink.
const FLUSH_AT: usize = 256 * 1024;

/// One line of a snapshot.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Record {
    Header {
        format: String,
        store: String,
        taken_at: DateTime<Utc>,
    },
    Account {
        account: AccountRecord,
    },
    Totp {
        totp: TotpRecord,
    },
    BackupCodes {
        user: UserId,
        codes: Vec<BackupCodeRecord>,
    },
    Device {
        device: DeviceRecord,
    },
    Project {
        tree: ProjectTree,
    },
    Member {
        project: ProjectId,
        user: UserId,
        role: Role,
    },
    Key {
        key: KeyRecord,
    },
    Event {
        event: AuditEvent,
    },
    SealedHead {
        chain: Option<ProjectId>,
        seq: u64,
        hash: Hash32,
        tag: AuditTag,
    },
    End {
        records: u64,
    },
}

/// Why a snapshot was refused by [`parse`]. Messages name lines, record
/// kinds and ids, never a value a record holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// A line is not a record of this format.
    #[error("line {line}: {problem}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong (the JSON error's category and column).
        problem: String,
    },
    /// Written by a newer echorelay.
    #[error("snapshot format {0:?} is newer than this echorelay reads ({FORMAT})")]
    UnsupportedFormat(String),
    /// Records contradict each other (a repeated id, a reference to
    /// nothing, a count that does not match).
    #[error("the snapshot is inconsistent: {0}")]
    Inconsistent(String),
    /// An audit chain does not verify, or does not reach the head the
    /// manifest recorded.
    #[error("audit chain {chain}: {problem}")]
    Chain {
        /// The chain: `global` or a project id.
        chain: String,
        /// The break.
        problem: String,
    },
}

/// How many records of each kind a snapshot holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Accounts.
    pub accounts: u64,
    /// Projects.
    pub projects: u64,
    /// Memberships.
    pub members: u64,
    /// API key records.
    pub keys: u64,
    /// Audit events, every chain.
    pub events: u64,
    /// Records between the header and the end (every kind).
    pub records: u64,
}

impl Counts {
    /// The counts of `data`.
    pub fn of(data: &SnapshotData) -> Self {
        let n = |x: usize| x as u64;
        Self {
            accounts: n(data.accounts.len()),
            projects: n(data.projects.len()),
            members: n(data.members.len()),
            keys: n(data.keys.len()),
            events: n(data.events.len()),
            records: n(data.accounts.len()
                + data.totp.len()
                + data.backup_codes.len()
                + data.devices.len()
                + data.projects.len()
                + data.members.len()
                + data.keys.len()
                + data.events.len()
                + data.sealed_heads.len()),
        }
    }
}

/// Where [`export`] writes: a `Vec<u8>`, or (feature `backup`) the
/// encrypting writer of a backup object.
#[async_trait]
pub trait SnapshotSink: Send {
    /// Appends `bytes`.
    async fn put(&mut self, bytes: &[u8]) -> Result<(), BackupError>;
}

#[async_trait]
impl SnapshotSink for Vec<u8> {
    async fn put(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

#[cfg(feature = "backup")]
#[async_trait]
impl SnapshotSink for super::crypt::SealedWriter {
    async fn put(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        self.write(bytes).await
    }
}

struct Writer<'a> {
    sink: &'a mut dyn SnapshotSink,
    buf: Vec<u8>,
    counts: Counts,
}

impl Writer<'_> {
    async fn put(&mut self, r: &Record) -> Result<(), BackupError> {
        serde_json::to_writer(&mut self.buf, r).map_err(|e| {
            BackupError::Source(format!("writing the snapshot: {}", e.classify_text()))
        })?;
        self.buf.push(b'\n');
        if !matches!(r, Record::Header { .. } | Record::End { .. }) {
            self.counts.records += 1;
        }
        if self.buf.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), BackupError> {
        if !self.buf.is_empty() {
            self.sink.put(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }
}

trait ClassifyText {
    fn classify_text(&self) -> &'static str;
}

impl ClassifyText for serde_json::Error {
    fn classify_text(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "not a record of this format",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}

fn read_err(e: crate::error::StoreError) -> BackupError {
    BackupError::Source(format!("reading the store for the snapshot: {e}"))
}

/// Writes a snapshot of `store` to `sink` through the read ports: every
/// account with its factors and devices, every project's tree, members
/// and keys, then every audit chain (the global one first) with its
/// sealed head. `store_kind` (`memory`, `postgres`) goes in the header.
///
/// # Errors
/// [`BackupError::Source`] when the store cannot be read; the sink's
/// errors as they are.
pub async fn export<S>(
    store: &S,
    store_kind: &str,
    taken_at: DateTime<Utc>,
    sink: &mut dyn SnapshotSink,
) -> Result<Counts, BackupError>
where
    S: AccountStore + ConfigStore + MembershipStore + KeyStore + AuditLog + ?Sized,
{
    let mut w = Writer {
        sink,
        buf: Vec::with_capacity(FLUSH_AT + 64 * 1024),
        counts: Counts::default(),
    };
    w.put(&Record::Header {
        format: FORMAT.to_owned(),
        store: store_kind.to_owned(),
        taken_at,
    })
    .await?;

    let mut after = None;
    loop {
        let page = store.accounts_page(after, PAGE).await.map_err(read_err)?;
        for account in &page {
            let user = account.id;
            w.put(&Record::Account {
                account: account.clone(),
            })
            .await?;
            w.counts.accounts += 1;
            if let Some(totp) = store.totp(user).await.map_err(read_err)? {
                w.put(&Record::Totp { totp }).await?;
            }
            let codes = store.backup_codes(user).await.map_err(read_err)?;
            if !codes.is_empty() {
                w.put(&Record::BackupCodes { user, codes }).await?;
            }
            for device in store.devices_of(user).await.map_err(read_err)? {
                w.put(&Record::Device { device }).await?;
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.id),
            _ => break,
        }
    }

    let projects = store.list_projects().await.map_err(read_err)?;
    for p in &projects {
        let tree = store.tree(p.id).await.map_err(read_err)?;
        w.put(&Record::Project { tree }).await?;
        w.counts.projects += 1;
        let mut after = None;
        loop {
            let page = store
                .members_page(p.id, after, PAGE)
                .await
                .map_err(read_err)?;
            for (user, role) in &page {
                w.put(&Record::Member {
                    project: p.id,
                    user: *user,
                    role: *role,
                })
                .await?;
                w.counts.members += 1;
            }
            match page.last() {
                Some((last, _)) if page.len() == PAGE => after = Some(*last),
                _ => break,
            }
        }
        let mut after = None;
        loop {
            let page = store.keys_page(p.id, after, PAGE).await.map_err(read_err)?;
            for key in &page {
                w.put(&Record::Key { key: key.clone() }).await?;
                w.counts.keys += 1;
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.id),
                _ => break,
            }
        }
    }

    let chains = std::iter::once(None).chain(projects.iter().map(|p| Some(p.id)));
    for chain in chains {
        let mut after = 0u64;
        loop {
            let page = store.events(chain, after, PAGE).await.map_err(read_err)?;
            for event in &page {
                w.put(&Record::Event {
                    event: event.clone(),
                })
                .await?;
                w.counts.events += 1;
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = last.seq,
                _ => break,
            }
        }
        if let Some(s) = store.sealed_head(chain).await.map_err(read_err)? {
            w.put(&Record::SealedHead {
                chain,
                seq: s.head.seq,
                hash: s.head.hash,
                tag: s.tag,
            })
            .await?;
        }
    }

    let records = w.counts.records;
    w.put(&Record::End { records }).await?;
    w.flush().await?;
    Ok(w.counts)
}

/// Writes `data` in the snapshot format, records in the order of its
/// vectors (what [`export`] streams from a store, for data already in
/// memory: tests, fuzz seeds, conversions).
pub fn to_bytes(data: &SnapshotData, store_kind: &str, taken_at: DateTime<Utc>) -> Vec<u8> {
    let mut records = vec![Record::Header {
        format: FORMAT.to_owned(),
        store: store_kind.to_owned(),
        taken_at,
    }];
    records.extend(
        data.accounts
            .iter()
            .cloned()
            .map(|account| Record::Account { account }),
    );
    records.extend(data.totp.iter().cloned().map(|totp| Record::Totp { totp }));
    records.extend(
        data.backup_codes
            .iter()
            .cloned()
            .map(|(user, codes)| Record::BackupCodes { user, codes }),
    );
    records.extend(
        data.devices
            .iter()
            .cloned()
            .map(|device| Record::Device { device }),
    );
    records.extend(
        data.projects
            .iter()
            .cloned()
            .map(|tree| Record::Project { tree }),
    );
    records.extend(
        data.members
            .iter()
            .map(|&(project, user, role)| Record::Member {
                project,
                user,
                role,
            }),
    );
    records.extend(data.keys.iter().cloned().map(|key| Record::Key { key }));
    records.extend(
        data.events
            .iter()
            .cloned()
            .map(|event| Record::Event { event }),
    );
    records.extend(
        data.sealed_heads
            .iter()
            .map(|(chain, s)| Record::SealedHead {
                chain: *chain,
                seq: s.head.seq,
                hash: s.head.hash,
                tag: s.tag,
            }),
    );
    records.push(Record::End {
        records: Counts::of(data).records,
    });
    let mut out = Vec::new();
    for r in &records {
        // Records are plain data: serializing them to memory cannot fail.
        if serde_json::to_writer(&mut out, r).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

fn chain_name(chain: Option<ProjectId>) -> String {
    chain.map_or_else(|| "global".to_owned(), |p| p.to_string())
}

fn inconsistent(what: impl Into<String>) -> SnapshotError {
    SnapshotError::Inconsistent(what.into())
}

/// Reads a snapshot written by [`export`] and checks it before anything
/// is written anywhere: the header's format, one record per line, the
/// `end` count, every id unique (accounts and their emails, devices and
/// their token hashes, projects and their slugs, lines, endpoints,
/// targets, memberships, keys and their hashes), every reference
/// resolved (a factor's or device's account, a member's, key's or
/// event's project, a tree's lines), every audit chain linked from
/// `seq` 1 ([`verify_chain`]) with its sealed head on its last event, and
/// every chain of `anchors` (the heads a backup's manifest recorded)
/// reaching its anchor.
///
/// # Errors
/// [`SnapshotError`], naming the line or the record; nothing of the
/// input's values.
pub fn parse(
    bytes: &[u8],
    anchors: &[(Option<ProjectId>, ChainHead)],
) -> Result<SnapshotData, SnapshotError> {
    let mut data = SnapshotData::default();
    let mut lines = bytes.split(|b| *b == b'\n').enumerate();
    let mut seen_end: Option<(usize, u64)> = None;
    let mut records = 0u64;
    let mut header = false;
    for (i, line) in lines.by_ref() {
        let n = i + 1;
        if line.is_empty() {
            // Only the newline ending the last record leaves an empty
            // piece, and only after the end record.
            if seen_end.is_some() {
                break;
            }
            return Err(SnapshotError::Malformed {
                line: n,
                problem: "empty line".into(),
            });
        }
        if seen_end.is_some() {
            return Err(SnapshotError::Malformed {
                line: n,
                problem: "a record after the end record".into(),
            });
        }
        let record: Record =
            serde_json::from_slice(line).map_err(|e| SnapshotError::Malformed {
                line: n,
                problem: format!("{} (column {})", e.classify_text(), e.column()),
            })?;
        if !header && !matches!(record, Record::Header { .. }) {
            return Err(SnapshotError::Malformed {
                line: n,
                problem: "the first record is not the header".into(),
            });
        }
        match record {
            Record::Header { format, .. } => {
                if header {
                    return Err(SnapshotError::Malformed {
                        line: n,
                        problem: "a second header".into(),
                    });
                }
                if format != FORMAT {
                    if format.starts_with("echorelay-snapshot/") {
                        let found = format.chars().take(64).collect();
                        return Err(SnapshotError::UnsupportedFormat(found));
                    }
                    return Err(SnapshotError::Malformed {
                        line: n,
                        problem: "not an echorelay snapshot".into(),
                    });
                }
                header = true;
                continue;
            }
            Record::End { records: count } => {
                seen_end = Some((n, count));
                continue;
            }
            Record::Account { account } => data.accounts.push(account),
            Record::Totp { totp } => data.totp.push(totp),
            Record::BackupCodes { user, codes } => data.backup_codes.push((user, codes)),
            Record::Device { device } => data.devices.push(device),
            Record::Project { tree } => data.projects.push(tree),
            Record::Member {
                project,
                user,
                role,
            } => data.members.push((project, user, role)),
            Record::Key { key } => data.keys.push(key),
            Record::Event { event } => data.events.push(event),
            Record::SealedHead {
                chain,
                seq,
                hash,
                tag,
            } => data.sealed_heads.push((
                chain,
                SealedHead {
                    head: ChainHead { seq, hash },
                    tag,
                },
            )),
        }
        records += 1;
    }
    let Some((end_line, count)) = seen_end else {
        return Err(SnapshotError::Malformed {
            line: 0,
            problem: if header {
                "no end record: the snapshot is cut short".into()
            } else {
                "empty: no header".into()
            },
        });
    };
    if count != records {
        return Err(SnapshotError::Malformed {
            line: end_line,
            problem: format!("the end record counts {count} records, the snapshot holds {records}"),
        });
    }
    check(&data, anchors)?;
    Ok(data)
}

fn unique<T: std::hash::Hash + Eq>(
    seen: &mut HashSet<T>,
    value: T,
    what: &str,
) -> Result<(), SnapshotError> {
    if seen.insert(value) {
        Ok(())
    } else {
        Err(inconsistent(format!("a repeated {what}")))
    }
}

/// The consistency checks of [`parse`].
fn check(
    data: &SnapshotData,
    anchors: &[(Option<ProjectId>, ChainHead)],
) -> Result<(), SnapshotError> {
    let mut users = HashSet::new();
    let mut emails = HashSet::new();
    for a in &data.accounts {
        unique(&mut users, a.id, "account id")?;
        unique(&mut emails, a.email.as_str(), "account email")?;
    }
    let known_user = |u: &UserId, what: &str| {
        if users.contains(u) {
            Ok(())
        } else {
            Err(inconsistent(format!(
                "{what} of an account not in the snapshot"
            )))
        }
    };
    let mut seen = HashSet::new();
    for t in &data.totp {
        known_user(&t.user, "a TOTP factor")?;
        unique(&mut seen, t.user, "TOTP factor of one account")?;
    }
    let mut seen = HashSet::new();
    for (u, codes) in &data.backup_codes {
        known_user(u, "backup codes")?;
        unique(&mut seen, *u, "set of backup codes of one account")?;
        let mut idx = HashSet::new();
        for c in codes {
            unique(&mut idx, c.index, "backup code index")?;
        }
    }
    let mut ids = HashSet::new();
    let mut tokens = HashSet::new();
    for d in &data.devices {
        known_user(&d.user, "a trusted device")?;
        unique(&mut ids, d.id, "device id")?;
        unique(&mut tokens, d.token_hash, "device token hash")?;
    }

    let mut projects = HashSet::new();
    let mut slugs = HashSet::new();
    let mut entities = HashSet::new();
    for t in &data.projects {
        let pid = t.project.id;
        unique(&mut projects, pid, "project id")?;
        unique(&mut slugs, t.project.slug.as_str(), "project slug")?;
        let lines: HashSet<_> = t.lines.iter().map(|l| l.id).collect();
        for l in &t.lines {
            unique(&mut entities, l.id.to_string(), "line id")?;
            if l.project != pid {
                return Err(inconsistent("a line filed under another project"));
            }
        }
        for e in &t.endpoints {
            unique(&mut entities, e.id.to_string(), "endpoint id")?;
            if e.project != pid || !lines.contains(&e.line) {
                return Err(inconsistent("an endpoint outside its project's lines"));
            }
        }
        for x in &t.targets {
            unique(&mut entities, x.id.to_string(), "target id")?;
            if x.project != pid || !lines.contains(&x.line) {
                return Err(inconsistent("a target outside its project's lines"));
            }
        }
    }
    let known_project = |p: &ProjectId, what: &str| {
        if projects.contains(p) {
            Ok(())
        } else {
            Err(inconsistent(format!(
                "{what} of a project not in the snapshot"
            )))
        }
    };
    let mut seen = HashSet::new();
    for (p, u, _) in &data.members {
        // A member need not have an account here: projects are owned by
        // user ids, and accounts may live in another deployment.
        known_project(p, "a membership")?;
        unique(&mut seen, (*p, *u), "membership")?;
    }
    let mut ids = HashSet::new();
    let mut hashes = HashSet::new();
    for k in &data.keys {
        known_project(&k.project, "an API key")?;
        unique(&mut ids, k.id, "key id")?;
        unique(&mut hashes, k.hash, "key hash")?;
    }

    // Audit chains: each in seq order, linked, from seq 1.
    let mut chains: BTreeMap<Option<ProjectId>, Vec<&AuditEvent>> = BTreeMap::new();
    let mut event_ids = HashSet::new();
    for e in &data.events {
        if let Some(p) = &e.project {
            known_project(p, "an audit event")?;
        }
        unique(&mut event_ids, e.id, "audit event id")?;
        chains.entry(e.project).or_default().push(e);
    }
    let anchored: HashMap<Option<ProjectId>, ChainHead> = anchors.iter().copied().collect();
    for (chain, head) in &anchored {
        if !chains.contains_key(chain) {
            return Err(SnapshotError::Chain {
                chain: chain_name(*chain),
                problem: format!("missing: the manifest records its head at seq {}", head.seq),
            });
        }
    }
    let mut heads = HashMap::new();
    for (chain, events) in &chains {
        let head = verify_chain(*chain, events.iter().copied(), anchored.get(chain).copied())
            .map_err(|b| SnapshotError::Chain {
                chain: chain_name(*chain),
                problem: b.to_string(),
            })?;
        heads.insert(*chain, head);
    }
    let mut seen = HashSet::new();
    for (chain, sealed) in &data.sealed_heads {
        unique(&mut seen, *chain, "sealed head of one chain")?;
        if heads.get(chain).copied().flatten() != Some(sealed.head) {
            return Err(SnapshotError::Chain {
                chain: chain_name(*chain),
                problem: "its sealed head is not its last event".into(),
            });
        }
    }
    Ok(())
}

#[cfg(feature = "backup")]
pub use source::SnapshotSource;

#[cfg(feature = "backup")]
mod source {
    use async_trait::async_trait;
    use chrono::{DateTime, Utc};

    use super::super::crypt::SealedWriter;
    use super::super::service::BackupSource;
    use super::super::target::BackupError;
    use crate::ports::{AccountStore, AuditLog, ConfigStore, KeyStore, MembershipStore};

    /// A [`BackupSource`] that writes a snapshot of a store ([`super::export`]),
    /// as the backup object named [`super::OBJECT_NAME`].
    pub struct SnapshotSource<'a, S: ?Sized> {
        store: &'a S,
        kind: String,
        taken_at: DateTime<Utc>,
    }

    impl<'a, S: ?Sized> SnapshotSource<'a, S> {
        /// A snapshot of `store` (`store_kind`: `memory`, `postgres`),
        /// stamped `taken_at`.
        pub fn new(store: &'a S, store_kind: &str, taken_at: DateTime<Utc>) -> Self {
            Self {
                store,
                kind: store_kind.to_owned(),
                taken_at,
            }
        }
    }

    #[async_trait]
    impl<S> BackupSource for SnapshotSource<'_, S>
    where
        S: AccountStore + ConfigStore + MembershipStore + KeyStore + AuditLog + ?Sized,
    {
        fn name(&self) -> &str {
            super::OBJECT_NAME
        }

        async fn write_to(&self, out: &mut SealedWriter) -> Result<(), BackupError> {
            super::export(self.store, &self.kind, self.taken_at, out).await?;
            Ok(())
        }
    }
}
