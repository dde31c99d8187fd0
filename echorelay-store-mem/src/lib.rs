//! # echorelay-store-mem
//!
//! Every echorelay port in memory: the embedded default, and the backend of
//! tests and examples. One [`MemStore`] holds all state behind one lock, so
//! each mutation and its audit event are written in one atomic step (S11),
//! and conditional writes (rotation, reveal) are decided under that lock.
//! Clones share the same state: hand one to each service. The job queue is
//! [`MemQueue`], with a lock of its own, and the backup target
//! [`MemBackupTarget`], with another.
//!
//! ```
//! use echorelay_store_mem::MemStore;
//! let store = MemStore::new();
//! let shared = store.clone(); // same data
//! # let _ = shared;
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use echorelay_core::access::Role;
use echorelay_core::account::password::PasswordHash;
use echorelay_core::account::{
    AccountRecord, AttemptScope, BackupCodeRecord, ChallengeRecord, DeviceRecord, SessionRecord,
    TotpRecord,
};
use echorelay_core::audit::{
    Actor, AuditDraft, AuditEvent, AuditKeys, ChainHead, SealedHead, UserEventCursor, seal,
    seal_keyed,
};
use echorelay_core::config::{
    ConfigChange, Endpoint, Line, Project, ProjectTree, Slug, Target, Write,
};
use echorelay_core::error::StoreError;
use echorelay_core::ids::{
    DeviceId, EndpointId, KeyId, LineId, MessageId, ProjectId, SessionId, TargetId, UserId,
};
use echorelay_core::keys::{KeyHash, KeyRecord, KeyStatus, PendingReveal, Supersession};
use echorelay_core::ports::{
    AccountStore, AuditLog, AuditSink, ConfigStore, IdempotencyStore, IngestRoute, KeyStore,
    MembershipStore, SessionStore, SnapshotData, SnapshotStore, StoreResult, ThrottleStore,
    TreeImport, rules,
};
use echorelay_core::vault::Ciphertext;

mod backup;
mod log;
mod queue;

pub use backup::{DEFAULT_MEM_PART_SIZE, MemBackupTarget};
pub use queue::{MemQueue, QueueConditional};

#[derive(Debug, Default)]
struct State {
    projects: HashMap<ProjectId, Project>,
    slugs: HashMap<Slug, ProjectId>,
    members: HashMap<(ProjectId, UserId), Role>,
    lines: BTreeMap<LineId, Line>,
    endpoints: BTreeMap<EndpointId, Endpoint>,
    targets: BTreeMap<TargetId, Target>,
    keys: HashMap<KeyId, KeyRecord>,
    key_hashes: HashMap<KeyHash, KeyId>,
    audit: HashMap<Option<ProjectId>, Vec<AuditEvent>>,
    /// With audit keys: each chain's sealed head, replaced by every append.
    audit_heads: HashMap<Option<ProjectId>, SealedHead>,
    audit_keys: Option<Arc<AuditKeys>>,
    accounts: HashMap<UserId, AccountRecord>,
    emails: HashMap<String, UserId>,
    totp: HashMap<UserId, TotpRecord>,
    attempts: HashMap<AttemptScope, Vec<DateTime<Utc>>>,
    backup_codes: HashMap<UserId, Vec<BackupCodeRecord>>,
    devices: HashMap<DeviceId, DeviceRecord>,
    device_tokens: HashMap<[u8; 32], DeviceId>,
    sessions: HashMap<SessionId, SessionRecord>,
    session_tokens: HashMap<[u8; 32], SessionId>,
    challenges: HashMap<[u8; 32], ChallengeRecord>,
    /// Idempotency keys of inbound messages: (project, key) → the first
    /// message and when the claim expires.
    idempotency: HashMap<(ProjectId, String), (MessageId, DateTime<Utc>)>,
    /// The delivery log.
    log: log::LogState,
}

impl State {
    fn remove_device(&mut self, id: DeviceId) {
        if let Some(d) = self.devices.remove(&id) {
            self.device_tokens.remove(&d.token_hash);
        }
    }

    fn remove_session(&mut self, id: SessionId) -> bool {
        match self.sessions.remove(&id) {
            Some(s) => {
                self.session_tokens.remove(&s.token_hash);
                true
            }
            None => false,
        }
    }

    fn append(&mut self, draft: AuditDraft) -> AuditEvent {
        let head = self
            .audit
            .get(&draft.project)
            .and_then(|c| c.last())
            .map(AuditEvent::head);
        self.append_after(draft, head)
    }

    /// Seals `draft` after `head` (tagged, and the chain's head sealed, when
    /// the store has audit keys) and appends it.
    fn append_after(&mut self, draft: AuditDraft, head: Option<ChainHead>) -> AuditEvent {
        let event = match &self.audit_keys {
            Some(keys) => {
                let (event, sealed) = seal_keyed(draft, head, keys);
                self.audit_heads.insert(event.project, sealed);
                event
            }
            None => seal(draft, head),
        };
        self.audit
            .entry(event.project)
            .or_default()
            .push(event.clone());
        event
    }
}

/// The in-memory backend. Cheap to clone; clones share state.
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    state: Arc<RwLock<State>>,
    #[cfg(feature = "faults")]
    faults: Arc<faults::Faults>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, tags every audit event and seals each chain's head
    /// under `keys` ([`seal_keyed`]): verify with
    /// [`AuditService::keyed`](echorelay_core::audit::AuditService::keyed).
    /// Shared by clones.
    #[must_use]
    pub fn with_audit_keys(self, keys: Arc<AuditKeys>) -> Self {
        self.write_unchecked().audit_keys = Some(keys);
        self
    }

    fn write_unchecked(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> StoreResult<RwLockReadGuard<'_, State>> {
        #[cfg(feature = "faults")]
        self.faults.check_up()?;
        // Every mutation validates before it changes anything, so a panic
        // elsewhere cannot leave half a write behind: recover from poison.
        Ok(self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn write(&self) -> StoreResult<RwLockWriteGuard<'_, State>> {
        #[cfg(feature = "faults")]
        self.faults.check_up()?;
        Ok(self.state.write().unwrap_or_else(|p| p.into_inner()))
    }

    /// A conditional write: `check` decides (and may refuse) under the
    /// lock, `apply` writes what it decided, in the same critical section.
    /// With the `faults` feature, a store made by `MemStore::racy` runs
    /// the named method as check, yield, write instead: the broken store
    /// the conformance suite must catch.
    async fn conditional<P, R>(
        &self,
        method: Conditional,
        check: impl FnOnce(&State) -> StoreResult<P>,
        apply: impl FnOnce(&mut State, P) -> R,
    ) -> StoreResult<R> {
        #[cfg(feature = "faults")]
        if self.faults.racy == Some(method) {
            let plan = check(&*self.read()?)?;
            faults::race_window().await;
            return Ok(apply(&mut *self.write()?, plan));
        }
        let _ = method;
        let mut s = self.write()?;
        let plan = check(&s)?;
        Ok(apply(&mut s, plan))
    }
}

/// The store's conditional methods: each decides and writes in one atomic
/// step. With the `faults` feature, `MemStore::racy` breaks one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Conditional {
    /// `AccountStore::advance_totp_step`.
    AdvanceTotpStep,
    /// `ThrottleStore::reserve_attempt`.
    ReserveAttempt,
    /// `AccountStore::consume_backup_code`.
    ConsumeBackupCode,
    /// `SessionStore::take_challenge`.
    TakeChallenge,
    /// `KeyStore::take_pending_reveal`.
    TakePendingReveal,
    /// `KeyStore::insert_key` (the creating key's liveness).
    InsertKey,
    /// `KeyStore::rotate_key`.
    RotateKey,
    /// `SessionStore::replace_session`.
    ReplaceSession,
    /// `MembershipStore::set_role` (the last-owner rule).
    SetRole,
    /// `AuditSink::append` (the chain head).
    AuditAppend,
    /// `IdempotencyStore::claim_idempotency_key`.
    ClaimIdempotencyKey,
    /// `DeliveryLog::record_attempt` (the attempt count).
    RecordAttempt,
    /// `DeliveryLog::mark_redriven`.
    MarkRedriven,
}

impl Conditional {
    /// Every conditional method.
    pub const ALL: [Conditional; 13] = [
        Conditional::AdvanceTotpStep,
        Conditional::ReserveAttempt,
        Conditional::ConsumeBackupCode,
        Conditional::TakeChallenge,
        Conditional::TakePendingReveal,
        Conditional::InsertKey,
        Conditional::RotateKey,
        Conditional::ReplaceSession,
        Conditional::SetRole,
        Conditional::AuditAppend,
        Conditional::ClaimIdempotencyKey,
        Conditional::RecordAttempt,
        Conditional::MarkRedriven,
    ];
}

#[cfg(feature = "faults")]
mod faults {
    use std::sync::atomic::{AtomicBool, Ordering};

    use echorelay_core::error::StoreError;

    use super::{Conditional, MemStore};

    #[derive(Debug, Default)]
    pub(crate) struct Faults {
        pub(crate) racy: Option<Conditional>,
        outage: AtomicBool,
    }

    impl Faults {
        pub(crate) fn check_up(&self) -> Result<(), StoreError> {
            if self.outage.load(Ordering::SeqCst) {
                return Err(StoreError::backend(Outage));
            }
            Ok(())
        }
    }

    /// Long enough that every task released by a barrier checks before any
    /// writes.
    pub(crate) async fn race_window() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    /// The error of a simulated outage.
    #[derive(Debug)]
    pub struct Outage;

    impl std::fmt::Display for Outage {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("simulated backend outage")
        }
    }

    impl std::error::Error for Outage {}

    impl MemStore {
        /// A store whose `method` checks, yields, then writes: a broken
        /// backend that the conformance suite's race tests must catch.
        /// Test builds only (feature `faults`).
        pub fn racy(method: Conditional) -> Self {
            Self {
                state: Default::default(),
                faults: std::sync::Arc::new(Faults {
                    racy: Some(method),
                    outage: AtomicBool::new(false),
                }),
            }
        }

        /// Simulates an outage: while `down`, every call fails with
        /// `StoreError::Backend`. Shared by clones. Test builds only
        /// (feature `faults`).
        pub fn set_outage(&self, down: bool) {
            self.faults.outage.store(down, Ordering::SeqCst);
        }
    }
}

#[cfg(feature = "faults")]
pub use faults::Outage;

/// One page of `items`: ids after `after`, ascending, at most `limit`.
fn page<'a, T: Clone + 'a, K: Ord + Copy>(
    items: impl Iterator<Item = &'a T>,
    id: impl Fn(&T) -> K,
    after: Option<K>,
    limit: usize,
) -> Vec<T> {
    let mut v: Vec<&T> = items.filter(|x| after.is_none_or(|a| id(x) > a)).collect();
    v.sort_by_key(|x| id(x));
    v.into_iter().take(limit).cloned().collect()
}

fn not_found(kind: &'static str) -> StoreError {
    StoreError::NotFound { kind }
}

#[async_trait]
impl KeyStore for MemStore {
    async fn insert_key(&self, key: KeyRecord, audit: AuditDraft) -> StoreResult<()> {
        let (id, hash, project, creator) = (key.id, key.hash, key.project, key.created_by);
        let check = move |s: &State| {
            if !s.projects.contains_key(&project) {
                return Err(not_found("project"));
            }
            if s.keys.contains_key(&id) || s.key_hashes.contains_key(&hash) {
                return Err(StoreError::AlreadyExists { kind: "key" });
            }
            creator_is_live(s, &creator)
        };
        let apply = |s: &mut State, ()| {
            s.key_hashes.insert(key.hash, key.id);
            s.keys.insert(key.id, key);
            s.append(audit);
        };
        self.conditional(Conditional::InsertKey, check, apply).await
    }

    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>> {
        let s = self.read()?;
        Ok(s.key_hashes
            .get(hash)
            .and_then(|id| s.keys.get(id))
            .cloned())
    }

    async fn key_status_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyStatus>> {
        let s = self.read()?;
        Ok(s.key_hashes
            .get(hash)
            .and_then(|id| s.keys.get(id))
            .map(KeyRecord::status))
    }

    async fn key_by_id(&self, id: KeyId) -> StoreResult<Option<KeyRecord>> {
        Ok(self.read()?.keys.get(&id).cloned())
    }

    async fn keys_of_project(&self, project: ProjectId) -> StoreResult<Vec<KeyRecord>> {
        let s = self.read()?;
        let mut v: Vec<KeyRecord> = s
            .keys
            .values()
            .filter(|k| k.project == project)
            .cloned()
            .collect();
        v.sort_by_key(|k| (k.created_at, k.id));
        Ok(v)
    }

    async fn keys_page(
        &self,
        project: ProjectId,
        after: Option<KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>> {
        let s = self.read()?;
        Ok(page(
            s.keys.values().filter(|k| k.project == project),
            |k| k.id,
            after,
            limit,
        ))
    }

    async fn keys_needing_attention(
        &self,
        now: DateTime<Utc>,
        after: Option<KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>> {
        let s = self.read()?;
        Ok(page(
            s.keys.values().filter(|k| {
                (k.superseded.is_none() && k.revoked_at.is_none() && k.rotate_at <= now)
                    || k.pending_reveal.as_ref().is_some_and(|p| p.until <= now)
            }),
            |k| k.id,
            after,
            limit,
        ))
    }

    async fn keys_with_pending_reveal(
        &self,
        after: Option<KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>> {
        let s = self.read()?;
        Ok(page(
            s.keys.values().filter(|k| k.pending_reveal.is_some()),
            |k| k.id,
            after,
            limit,
        ))
    }

    async fn replace_pending_reveal(
        &self,
        id: KeyId,
        expected: &Ciphertext,
        new: Ciphertext,
        audit: AuditDraft,
    ) -> StoreResult<bool> {
        let mut s = self.write()?;
        let Some(p) = s.keys.get_mut(&id).and_then(|k| k.pending_reveal.as_mut()) else {
            return Ok(false);
        };
        if p.ciphertext != *expected {
            return Ok(false);
        }
        p.ciphertext = new;
        s.append(audit);
        Ok(true)
    }

    async fn rotate_key(
        &self,
        predecessor: KeyId,
        supersession: Supersession,
        successor: KeyRecord,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        let (succ_id, succ_hash, succ_project) = (successor.id, successor.hash, successor.project);
        let succ_creator = successor.created_by;
        let check = move |s: &State| {
            let old = s.keys.get(&predecessor).ok_or(not_found("key"))?;
            if old.superseded.is_some() || old.revoked_at.is_some() {
                return Err(StoreError::Conflict {
                    reason: "key is no longer current",
                });
            }
            if supersession.successor != succ_id {
                return Err(StoreError::Conflict {
                    reason: "supersession names another successor",
                });
            }
            if old.project != succ_project {
                return Err(StoreError::Conflict {
                    reason: "successor belongs to another project",
                });
            }
            if s.keys.contains_key(&succ_id) || s.key_hashes.contains_key(&succ_hash) {
                return Err(StoreError::AlreadyExists { kind: "key" });
            }
            creator_is_live(s, &succ_creator)
        };
        let apply = |s: &mut State, ()| {
            if let Some(old) = s.keys.get_mut(&predecessor) {
                old.superseded = Some(supersession);
            }
            s.key_hashes.insert(successor.hash, successor.id);
            s.keys.insert(successor.id, successor);
            s.append(audit);
        };
        self.conditional(Conditional::RotateKey, check, apply).await
    }

    async fn revoke_key(&self, id: KeyId, at: DateTime<Utc>, audit: AuditDraft) -> StoreResult<()> {
        let mut s = self.write()?;
        let k = s.keys.get_mut(&id).ok_or(not_found("key"))?;
        if k.revoked_at.is_some() {
            return Err(StoreError::Conflict {
                reason: "key already revoked",
            });
        }
        k.revoked_at = Some(at);
        k.pending_reveal = None;
        s.append(audit);
        Ok(())
    }

    async fn take_pending_reveal(
        &self,
        id: KeyId,
        collector: Option<KeyId>,
        audit: AuditDraft,
    ) -> StoreResult<Option<PendingReveal>> {
        let check = |s: &State| {
            let k = s.keys.get(&id).ok_or(not_found("key"))?;
            if let Some(c) = collector {
                creator_is_live(s, &Actor::ApiKey(c))?;
            }
            Ok(k.pending_reveal.clone())
        };
        let apply = |s: &mut State, taken: Option<PendingReveal>| {
            if taken.is_some() {
                if let Some(k) = s.keys.get_mut(&id) {
                    k.pending_reveal = None;
                    if collector.is_some() {
                        k.collected_by = collector;
                    }
                }
                s.append(audit);
            }
            taken
        };
        self.conditional(Conditional::TakePendingReveal, check, apply)
            .await
    }
}

/// `KeyStore::insert_key`'s condition: a key made by a key is made only
/// while that key exists and is not revoked.
fn creator_is_live(s: &State, creator: &Actor) -> StoreResult<()> {
    match creator {
        Actor::ApiKey(c) => match s.keys.get(c) {
            Some(k) if k.revoked_at.is_none() => Ok(()),
            _ => Err(StoreError::Conflict {
                reason: "the creating key is revoked",
            }),
        },
        _ => Ok(()),
    }
}

fn project_children(s: &State, project: ProjectId) -> (Vec<Line>, Vec<Endpoint>, Vec<Target>) {
    let mut lines: Vec<Line> = s
        .lines
        .values()
        .filter(|l| l.project == project)
        .cloned()
        .collect();
    lines.sort_by_key(|l| (l.created_at, l.id));
    let mut eps: Vec<Endpoint> = s
        .endpoints
        .values()
        .filter(|e| e.project == project)
        .cloned()
        .collect();
    eps.sort_by_key(|e| (e.created_at, e.id));
    let mut tgts: Vec<Target> = s
        .targets
        .values()
        .filter(|t| t.project == project)
        .cloned()
        .collect();
    tgts.sort_by_key(|t| (t.created_at, t.id));
    (lines, eps, tgts)
}

fn check_put<K: Ord, V>(
    map: &BTreeMap<K, V>,
    id: &K,
    w: Write,
    owner_ok: impl Fn(&V) -> bool,
    kind: &'static str,
) -> StoreResult<()> {
    match (w, map.get(id)) {
        (Write::Create, Some(_)) => Err(StoreError::AlreadyExists { kind }),
        (Write::Update, None) => Err(not_found(kind)),
        (Write::Update, Some(v)) if !owner_ok(v) => Err(not_found(kind)),
        _ => Ok(()),
    }
}

/// The tree cap ([`rules::tree_has_room`]) for a write `w` in `project`:
/// a create adds one entity to what the project holds now.
fn tree_room(s: &State, project: ProjectId, w: Write) -> StoreResult<()> {
    if w != Write::Create {
        return Ok(());
    }
    let held = s.lines.values().filter(|l| l.project == project).count()
        + s.endpoints
            .values()
            .filter(|e| e.project == project)
            .count()
        + s.targets.values().filter(|t| t.project == project).count();
    rules::tree_has_room(held, 1)
}

fn line_in(s: &State, project: ProjectId, line: LineId) -> StoreResult<()> {
    match s.lines.get(&line) {
        Some(l) if l.project == project => Ok(()),
        _ => Err(not_found("line")),
    }
}

#[async_trait]
impl ConfigStore for MemStore {
    async fn create_project(
        &self,
        project: Project,
        owner: UserId,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        let mut s = self.write()?;
        if s.projects.contains_key(&project.id) || s.slugs.contains_key(&project.slug) {
            return Err(StoreError::AlreadyExists { kind: "project" });
        }
        s.slugs.insert(project.slug.clone(), project.id);
        s.members.insert((project.id, owner), Role::Owner);
        s.projects.insert(
            project.id,
            Project {
                version: 0,
                ..project
            },
        );
        s.append(audit);
        Ok(())
    }

    async fn project_by_slug(&self, slug: &Slug) -> StoreResult<Option<Project>> {
        let s = self.read()?;
        Ok(s.slugs.get(slug).and_then(|id| s.projects.get(id)).cloned())
    }

    async fn project(&self, id: ProjectId) -> StoreResult<Option<Project>> {
        Ok(self.read()?.projects.get(&id).cloned())
    }

    async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        let mut v: Vec<Project> = self.read()?.projects.values().cloned().collect();
        v.sort_by(|a, b| a.slug.cmp(&b.slug));
        Ok(v)
    }

    async fn apply(&self, change: ConfigChange, audit: AuditDraft) -> StoreResult<()> {
        let mut s = self.write()?;
        let project = match change {
            ConfigChange::PutLine(w, line) => {
                if !s.projects.contains_key(&line.project) {
                    return Err(not_found("project"));
                }
                check_put(&s.lines, &line.id, w, |l| l.project == line.project, "line")?;
                tree_room(&s, line.project, w)?;
                let p = line.project;
                s.lines.insert(line.id, line);
                p
            }
            ConfigChange::DeleteLine(p, id) => {
                line_in(&s, p, id)?;
                s.lines.remove(&id);
                s.endpoints.retain(|_, e| e.line != id);
                s.targets.retain(|_, t| t.line != id);
                p
            }
            ConfigChange::PutEndpoint(w, ep) => {
                line_in(&s, ep.project, ep.line)?;
                check_put(
                    &s.endpoints,
                    &ep.id,
                    w,
                    |e| e.project == ep.project,
                    "endpoint",
                )?;
                tree_room(&s, ep.project, w)?;
                let p = ep.project;
                s.endpoints.insert(ep.id, ep);
                p
            }
            ConfigChange::DeleteEndpoint(p, id) => match s.endpoints.get(&id) {
                Some(e) if e.project == p => {
                    s.endpoints.remove(&id);
                    p
                }
                _ => return Err(not_found("endpoint")),
            },
            ConfigChange::PutTarget(w, t) => {
                line_in(&s, t.project, t.line)?;
                check_put(&s.targets, &t.id, w, |x| x.project == t.project, "target")?;
                tree_room(&s, t.project, w)?;
                let version = match (w, s.targets.get(&t.id)) {
                    (Write::Update, Some(cur)) if cur.version != t.version => {
                        return Err(StoreError::Conflict {
                            reason: "the target changed since it was read",
                        });
                    }
                    (Write::Update, _) => t.version + 1,
                    (Write::Create, _) => 0,
                };
                let p = t.project;
                s.targets.insert(t.id, Target { version, ..t });
                p
            }
            ConfigChange::DeleteTarget(p, id) => match s.targets.get(&id) {
                Some(t) if t.project == p => {
                    s.targets.remove(&id);
                    p
                }
                _ => return Err(not_found("target")),
            },
            ConfigChange::UpdateProject(p) => {
                let cur = s.projects.get(&p.id).ok_or(not_found("project"))?;
                rules::project_update(cur, &p)?;
                let id = p.id;
                // The version moves once, below, like for every change.
                s.projects.insert(id, p);
                id
            }
            // `ConfigChange` is non-exhaustive for users of core; a variant
            // this adapter does not know changes nothing.
            #[allow(unreachable_patterns)]
            _ => {
                return Err(StoreError::Conflict {
                    reason: "unsupported change",
                });
            }
        };
        if let Some(p) = s.projects.get_mut(&project) {
            p.version += 1;
        }
        s.append(audit);
        Ok(())
    }

    async fn tree(&self, project: ProjectId) -> StoreResult<ProjectTree> {
        let s = self.read()?;
        let p = s
            .projects
            .get(&project)
            .ok_or(not_found("project"))?
            .clone();
        let (lines, endpoints, targets) = project_children(&s, project);
        Ok(ProjectTree {
            project: p,
            lines,
            endpoints,
            targets,
        })
    }

    async fn ingest_route(
        &self,
        project: ProjectId,
        endpoint: EndpointId,
    ) -> StoreResult<Option<IngestRoute>> {
        let s = self.read()?;
        let Some(p) = s.projects.get(&project) else {
            return Ok(None);
        };
        let targets = s
            .endpoints
            .get(&endpoint)
            .filter(|e| e.project == project)
            .map(|ep| {
                let mut targets: Vec<&Target> =
                    s.targets.values().filter(|t| t.line == ep.line).collect();
                targets.sort_by_key(|t| (t.created_at, t.id));
                targets.iter().map(|t| t.id).collect()
            });
        Ok(Some(IngestRoute {
            project: p.clone(),
            targets,
        }))
    }

    async fn target(&self, project: ProjectId, id: TargetId) -> StoreResult<Option<Target>> {
        Ok(self
            .read()?
            .targets
            .get(&id)
            .filter(|t| t.project == project)
            .cloned())
    }

    async fn targets_page(
        &self,
        after: Option<TargetId>,
        limit: usize,
    ) -> StoreResult<Vec<Target>> {
        let s = self.read()?;
        Ok(page(s.targets.values(), |t| t.id, after, limit))
    }

    async fn import_tree(&self, import: TreeImport, audit: AuditDraft) -> StoreResult<()> {
        let mut s = self.write()?;
        let TreeImport {
            mut tree,
            expect_version,
            owner_if_new,
        } = import;
        let pid = tree.project.id;
        rules::import(
            s.projects.get(&pid).map(|p| p.version),
            expect_version,
            owner_if_new,
        )?;
        // The import replaces the whole tree.
        rules::tree_has_room(
            0,
            tree.lines.len() + tree.endpoints.len() + tree.targets.len(),
        )?;
        if let Some(holder) = s.slugs.get(&tree.project.slug)
            && *holder != pid
        {
            return Err(StoreError::AlreadyExists {
                kind: "project slug",
            });
        }
        // Ids must not collide with another project's entities.
        let foreign = tree
            .lines
            .iter()
            .any(|l| s.lines.get(&l.id).is_some_and(|x| x.project != pid))
            || tree
                .endpoints
                .iter()
                .any(|e| s.endpoints.get(&e.id).is_some_and(|x| x.project != pid))
            || tree
                .targets
                .iter()
                .any(|t| s.targets.get(&t.id).is_some_and(|x| x.project != pid));
        if foreign {
            return Err(StoreError::AlreadyExists {
                kind: "config entity id",
            });
        }
        match s.projects.get(&pid).cloned() {
            Some(old) => {
                s.slugs.remove(&old.slug);
                tree.project.version = old.version + 1;
            }
            None => {
                tree.project.version = 0;
                if let Some(owner) = owner_if_new {
                    s.members.insert((pid, owner), Role::Owner);
                }
            }
        }
        s.lines.retain(|_, l| l.project != pid);
        s.endpoints.retain(|_, e| e.project != pid);
        s.targets.retain(|_, t| t.project != pid);
        s.slugs.insert(tree.project.slug.clone(), pid);
        s.projects.insert(pid, tree.project);
        s.lines.extend(tree.lines.into_iter().map(|l| (l.id, l)));
        s.endpoints
            .extend(tree.endpoints.into_iter().map(|e| (e.id, e)));
        s.targets
            .extend(tree.targets.into_iter().map(|t| (t.id, t)));
        s.append(audit);
        Ok(())
    }
}

#[async_trait]
impl MembershipStore for MemStore {
    async fn role_of(&self, user: UserId, project: ProjectId) -> StoreResult<Option<Role>> {
        Ok(self.read()?.members.get(&(project, user)).copied())
    }

    async fn set_role(
        &self,
        project: ProjectId,
        user: UserId,
        role: Option<Role>,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        let check = |s: &State| {
            if !s.projects.contains_key(&project) {
                return Err(not_found("project"));
            }
            let current = s.members.get(&(project, user)).copied();
            let owners = s
                .members
                .iter()
                .filter(|((p, _), r)| *p == project && **r == Role::Owner)
                .count();
            rules::role_change(current, role, owners)
        };
        let apply = |s: &mut State, ()| {
            match role {
                Some(r) => s.members.insert((project, user), r),
                None => s.members.remove(&(project, user)),
            };
            s.append(audit);
        };
        self.conditional(Conditional::SetRole, check, apply).await
    }

    async fn memberships_of(&self, user: UserId) -> StoreResult<Vec<(ProjectId, Role)>> {
        let s = self.read()?;
        let mut v: Vec<(ProjectId, Role)> = s
            .members
            .iter()
            .filter(|((_, u), _)| *u == user)
            .map(|((p, _), r)| (*p, *r))
            .collect();
        v.sort();
        Ok(v)
    }

    async fn members_page(
        &self,
        project: ProjectId,
        after: Option<UserId>,
        limit: usize,
    ) -> StoreResult<Vec<(UserId, Role)>> {
        let s = self.read()?;
        let members: Vec<(UserId, Role)> = s
            .members
            .iter()
            .filter(|((p, _), _)| *p == project)
            .map(|((_, u), r)| (*u, *r))
            .collect();
        Ok(page(members.iter(), |(u, _)| *u, after, limit))
    }
}

#[async_trait]
impl AuditSink for MemStore {
    async fn append(&self, audit: AuditDraft) -> StoreResult<AuditEvent> {
        let chain = audit.project;
        let check = move |s: &State| {
            if let Some(p) = chain
                && !s.projects.contains_key(&p)
            {
                return Err(not_found("project"));
            }
            Ok(s.audit
                .get(&chain)
                .and_then(|c| c.last())
                .map(AuditEvent::head))
        };
        let apply = |s: &mut State, head: Option<ChainHead>| s.append_after(audit, head);
        self.conditional(Conditional::AuditAppend, check, apply)
            .await
    }

    async fn reseal_head(&self, chain: Option<ProjectId>, head: ChainHead) -> StoreResult<bool> {
        let mut s = self.write()?;
        let current = s
            .audit
            .get(&chain)
            .and_then(|c| c.last())
            .map(AuditEvent::head);
        let Some(keys) = s.audit_keys.clone() else {
            return Ok(false);
        };
        if current != Some(head) {
            return Ok(false);
        }
        s.audit_heads.insert(chain, keys.seal_head(chain, head));
        Ok(true)
    }
}

#[async_trait]
impl AuditLog for MemStore {
    async fn events(
        &self,
        chain: Option<ProjectId>,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<AuditEvent>> {
        let s = self.read()?;
        let Some(events) = s.audit.get(&chain) else {
            return Ok(Vec::new());
        };
        // Ordered by seq: the first event with seq > after.
        let start = events.partition_point(|e| e.seq <= after);
        Ok(events[start..].iter().take(limit).cloned().collect())
    }

    async fn head(&self, chain: Option<ProjectId>) -> StoreResult<Option<ChainHead>> {
        Ok(self
            .read()?
            .audit
            .get(&chain)
            .and_then(|v| v.last())
            .map(AuditEvent::head))
    }

    async fn sealed_head(&self, chain: Option<ProjectId>) -> StoreResult<Option<SealedHead>> {
        Ok(self.read()?.audit_heads.get(&chain).copied())
    }

    async fn events_for_user_page(
        &self,
        user: UserId,
        after: Option<UserEventCursor>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEvent>> {
        let s = self.read()?;
        // Time, then chain (`None`, the global chain, first), then seq.
        let mut v: Vec<&AuditEvent> = s
            .audit
            .values()
            .flatten()
            .filter(|e| e.actor == Actor::User(user) || e.subject == Some(user))
            .filter(|e| after.is_none_or(|c| c.is_before(e)))
            .collect();
        v.sort_by_key(|e| (e.at, e.project, e.seq));
        Ok(v.into_iter().take(limit).cloned().collect())
    }
}

#[async_trait]
impl IdempotencyStore for MemStore {
    async fn claim_idempotency_key(
        &self,
        project: ProjectId,
        key: &str,
        message: MessageId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<Option<MessageId>> {
        let slot = (project, key.to_owned());
        let probe = slot.clone();
        self.conditional(
            Conditional::ClaimIdempotencyKey,
            move |s| {
                Ok(s.idempotency
                    .get(&probe)
                    .filter(|(_, until)| *until > now)
                    .map(|(m, _)| *m))
            },
            move |s, held| {
                if held.is_none() {
                    s.idempotency.insert(slot, (message, expires_at));
                }
                held
            },
        )
        .await
    }

    async fn release_idempotency_key(
        &self,
        project: ProjectId,
        key: &str,
        message: MessageId,
    ) -> StoreResult<()> {
        let mut s = self.write()?;
        let slot = (project, key.to_owned());
        if s.idempotency.get(&slot).is_some_and(|(m, _)| *m == message) {
            s.idempotency.remove(&slot);
        }
        Ok(())
    }

    async fn purge_idempotency_keys(&self, now: DateTime<Utc>) -> StoreResult<usize> {
        let mut s = self.write()?;
        let before = s.idempotency.len();
        s.idempotency.retain(|_, (_, until)| *until > now);
        Ok(before - s.idempotency.len())
    }
}

#[async_trait]
impl SnapshotStore for MemStore {
    async fn restore_snapshot(&self, data: SnapshotData) -> StoreResult<()> {
        let mut s = self.write()?;
        if !(s.accounts.is_empty()
            && s.projects.is_empty()
            && s.keys.is_empty()
            && s.audit.values().all(Vec::is_empty))
        {
            return Err(StoreError::Conflict {
                reason: "a snapshot is restored only into an empty store",
            });
        }
        // Everything else a snapshot does not hold (sessions, challenges,
        // attempts) goes too: it belonged to no account now.
        let keys = s.audit_keys.take();
        *s = State {
            audit_keys: keys,
            ..State::default()
        };
        for a in data.accounts {
            s.emails.insert(a.email.clone(), a.id);
            s.accounts.insert(a.id, a);
        }
        for t in data.totp {
            s.totp.insert(t.user, t);
        }
        s.backup_codes.extend(data.backup_codes);
        for d in data.devices {
            s.device_tokens.insert(d.token_hash, d.id);
            s.devices.insert(d.id, d);
        }
        for tree in data.projects {
            s.slugs.insert(tree.project.slug.clone(), tree.project.id);
            s.projects.insert(tree.project.id, tree.project);
            s.lines.extend(tree.lines.into_iter().map(|l| (l.id, l)));
            s.endpoints
                .extend(tree.endpoints.into_iter().map(|e| (e.id, e)));
            s.targets
                .extend(tree.targets.into_iter().map(|t| (t.id, t)));
        }
        for (project, user, role) in data.members {
            s.members.insert((project, user), role);
        }
        for k in data.keys {
            s.key_hashes.insert(k.hash, k.id);
            s.keys.insert(k.id, k);
        }
        for e in data.events {
            s.audit.entry(e.project).or_default().push(e);
        }
        s.audit_heads.extend(data.sealed_heads);
        Ok(())
    }
}

#[async_trait]
impl AccountStore for MemStore {
    async fn create_account(&self, account: AccountRecord) -> StoreResult<()> {
        let mut s = self.write()?;
        if s.accounts.contains_key(&account.id) || s.emails.contains_key(&account.email) {
            return Err(StoreError::AlreadyExists { kind: "account" });
        }
        s.emails.insert(account.email.clone(), account.id);
        s.accounts.insert(account.id, account);
        Ok(())
    }

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<AccountRecord>> {
        let s = self.read()?;
        Ok(s.emails
            .get(email)
            .and_then(|id| s.accounts.get(id))
            .cloned())
    }

    async fn account(&self, id: UserId) -> StoreResult<Option<AccountRecord>> {
        Ok(self.read()?.accounts.get(&id).cloned())
    }

    async fn accounts_page(
        &self,
        after: Option<UserId>,
        limit: usize,
    ) -> StoreResult<Vec<AccountRecord>> {
        let s = self.read()?;
        Ok(page(s.accounts.values(), |a| a.id, after, limit))
    }

    async fn replace_password_hash(
        &self,
        user: UserId,
        expected: &PasswordHash,
        new: PasswordHash,
        bump_epoch: bool,
    ) -> StoreResult<bool> {
        let mut s = self.write()?;
        let a = s.accounts.get_mut(&user).ok_or(not_found("account"))?;
        if a.password_hash != *expected {
            return Ok(false);
        }
        a.password_hash = new;
        if bump_epoch {
            a.epoch += 1;
        }
        Ok(true)
    }

    async fn totp(&self, user: UserId) -> StoreResult<Option<TotpRecord>> {
        Ok(self.read()?.totp.get(&user).cloned())
    }

    async fn put_pending_totp(&self, totp: TotpRecord) -> StoreResult<()> {
        let mut s = self.write()?;
        if !s.accounts.contains_key(&totp.user) {
            return Err(not_found("account"));
        }
        if s.totp.get(&totp.user).is_some_and(|t| t.active) {
            return Err(StoreError::Conflict {
                reason: "an active second factor exists",
            });
        }
        s.totp.insert(
            totp.user,
            TotpRecord {
                active: false,
                ..totp
            },
        );
        Ok(())
    }

    async fn activate_totp(
        &self,
        user: UserId,
        seed: &Ciphertext,
        step: u64,
        codes: Vec<BackupCodeRecord>,
    ) -> StoreResult<()> {
        let mut s = self.write()?;
        let t = s.totp.get_mut(&user).ok_or(not_found("second factor"))?;
        if t.active || t.seed != *seed {
            return Err(StoreError::Conflict {
                reason: "second factor is active or was replaced",
            });
        }
        t.active = true;
        t.last_step = Some(step);
        s.backup_codes.insert(user, codes);
        Ok(())
    }

    async fn advance_totp_step(&self, user: UserId, step: u64) -> StoreResult<bool> {
        let check = |s: &State| {
            Ok(s.totp
                .get(&user)
                .is_some_and(|t| t.active && t.last_step.is_none_or(|last| step > last)))
        };
        let apply = |s: &mut State, ok: bool| {
            if let Some(t) = s.totp.get_mut(&user).filter(|_| ok) {
                t.last_step = Some(step);
            }
            ok
        };
        self.conditional(Conditional::AdvanceTotpStep, check, apply)
            .await
    }

    async fn totp_page(&self, after: Option<UserId>, limit: usize) -> StoreResult<Vec<TotpRecord>> {
        let s = self.read()?;
        Ok(page(s.totp.values(), |t| t.user, after, limit))
    }

    async fn replace_totp_seed(
        &self,
        user: UserId,
        expected: &Ciphertext,
        new: Ciphertext,
    ) -> StoreResult<bool> {
        let mut s = self.write()?;
        match s.totp.get_mut(&user) {
            Some(t) if t.seed == *expected => {
                t.seed = new;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn reset_second_factor(&self, user: UserId) -> StoreResult<()> {
        let mut s = self.write()?;
        let a = s.accounts.get_mut(&user).ok_or(not_found("account"))?;
        a.epoch += 1;
        s.totp.remove(&user);
        s.backup_codes.remove(&user);
        let ids: Vec<DeviceId> = s
            .devices
            .values()
            .filter(|d| d.user == user)
            .map(|d| d.id)
            .collect();
        for id in ids {
            s.remove_device(id);
        }
        Ok(())
    }

    async fn backup_codes(&self, user: UserId) -> StoreResult<Vec<BackupCodeRecord>> {
        Ok(self
            .read()?
            .backup_codes
            .get(&user)
            .cloned()
            .unwrap_or_default())
    }

    async fn replace_backup_codes(
        &self,
        user: UserId,
        codes: Vec<BackupCodeRecord>,
    ) -> StoreResult<()> {
        let mut s = self.write()?;
        if !s.accounts.contains_key(&user) {
            return Err(not_found("account"));
        }
        s.backup_codes.insert(user, codes);
        Ok(())
    }

    async fn consume_backup_code(
        &self,
        user: UserId,
        code: &BackupCodeRecord,
    ) -> StoreResult<bool> {
        let check = |s: &State| {
            Ok(s.backup_codes.get(&user).is_some_and(|codes| {
                codes
                    .iter()
                    .any(|c| c.index == code.index && c.hash == code.hash)
            }))
        };
        let apply = |s: &mut State, found: bool| {
            if let Some(codes) = s.backup_codes.get_mut(&user) {
                codes.retain(|c| !(c.index == code.index && c.hash == code.hash));
            }
            found
        };
        self.conditional(Conditional::ConsumeBackupCode, check, apply)
            .await
    }

    async fn add_device(&self, device: DeviceRecord, cap: usize) -> StoreResult<Vec<DeviceId>> {
        let mut s = self.write()?;
        if s.devices.contains_key(&device.id) || s.device_tokens.contains_key(&device.token_hash) {
            return Err(StoreError::AlreadyExists { kind: "device" });
        }
        let user = device.user;
        s.device_tokens.insert(device.token_hash, device.id);
        s.devices.insert(device.id, device);
        let mut mine: Vec<(DateTime<Utc>, DeviceId)> = s
            .devices
            .values()
            .filter(|d| d.user == user)
            .map(|d| (d.created_at, d.id))
            .collect();
        mine.sort();
        let excess = mine.len().saturating_sub(cap);
        let evicted: Vec<DeviceId> = mine.into_iter().take(excess).map(|(_, id)| id).collect();
        for id in &evicted {
            s.remove_device(*id);
        }
        Ok(evicted)
    }

    async fn device_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<DeviceRecord>> {
        let s = self.read()?;
        Ok(s.device_tokens
            .get(token_hash)
            .and_then(|id| s.devices.get(id))
            .cloned())
    }

    async fn devices_of(&self, user: UserId) -> StoreResult<Vec<DeviceRecord>> {
        let s = self.read()?;
        let mut v: Vec<DeviceRecord> = s
            .devices
            .values()
            .filter(|d| d.user == user)
            .cloned()
            .collect();
        v.sort_by_key(|d| (d.created_at, d.id));
        Ok(v)
    }

    async fn touch_device(&self, id: DeviceId, at: DateTime<Utc>) -> StoreResult<bool> {
        let mut s = self.write()?;
        Ok(match s.devices.get_mut(&id) {
            Some(d) => {
                d.last_used_at = Some(at);
                true
            }
            None => false,
        })
    }

    async fn revoke_devices(&self, user: UserId, which: Option<DeviceId>) -> StoreResult<usize> {
        let mut s = self.write()?;
        let ids: Vec<DeviceId> = s
            .devices
            .values()
            .filter(|d| d.user == user && which.is_none_or(|w| w == d.id))
            .map(|d| d.id)
            .collect();
        for id in &ids {
            s.remove_device(*id);
        }
        Ok(ids.len())
    }
}

#[async_trait]
impl ThrottleStore for MemStore {
    async fn reserve_attempt(
        &self,
        scope: &AttemptScope,
        at: DateTime<Utc>,
        since: DateTime<Utc>,
        max: u32,
    ) -> StoreResult<bool> {
        let check = |s: &State| {
            let recent = s
                .attempts
                .get(scope)
                .map_or(0, |v| v.iter().filter(|t| **t > since).count());
            Ok(recent < max as usize)
        };
        let apply = |s: &mut State, ok: bool| {
            let attempts = s.attempts.entry(*scope).or_default();
            attempts.retain(|t| *t > since);
            if ok {
                attempts.push(at);
            }
            ok
        };
        self.conditional(Conditional::ReserveAttempt, check, apply)
            .await
    }

    async fn attempts_since(
        &self,
        scope: &AttemptScope,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<DateTime<Utc>>> {
        let s = self.read()?;
        Ok(s.attempts
            .get(scope)
            .map(|v| v.iter().filter(|t| **t > since).copied().collect())
            .unwrap_or_default())
    }

    async fn clear_attempts(&self, scope: &AttemptScope) -> StoreResult<()> {
        self.write()?.attempts.remove(scope);
        Ok(())
    }
}

#[async_trait]
impl SessionStore for MemStore {
    async fn insert_session(&self, session: SessionRecord) -> StoreResult<()> {
        let mut s = self.write()?;
        if s.sessions.contains_key(&session.id)
            || s.session_tokens.contains_key(&session.token_hash)
        {
            return Err(StoreError::AlreadyExists { kind: "session" });
        }
        s.session_tokens.insert(session.token_hash, session.id);
        s.sessions.insert(session.id, session);
        Ok(())
    }

    async fn session_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<SessionRecord>> {
        let s = self.read()?;
        Ok(s.session_tokens
            .get(token_hash)
            .and_then(|id| s.sessions.get(id))
            .cloned())
    }

    async fn touch_session(&self, id: SessionId, at: DateTime<Utc>) -> StoreResult<bool> {
        let mut s = self.write()?;
        Ok(match s.sessions.get_mut(&id) {
            Some(rec) => {
                rec.last_seen_at = rec.last_seen_at.max(at);
                true
            }
            None => false,
        })
    }

    async fn mark_verified(&self, id: SessionId, at: DateTime<Utc>) -> StoreResult<bool> {
        let mut s = self.write()?;
        Ok(match s.sessions.get_mut(&id) {
            Some(rec) => {
                rec.verified_at = rec.verified_at.max(at);
                true
            }
            None => false,
        })
    }

    async fn replace_session(&self, old: SessionId, new: SessionRecord) -> StoreResult<()> {
        let (new_id, new_hash) = (new.id, new.token_hash);
        let check = move |s: &State| {
            if !s.sessions.contains_key(&old) {
                return Err(not_found("session"));
            }
            if s.sessions.contains_key(&new_id) || s.session_tokens.contains_key(&new_hash) {
                return Err(StoreError::AlreadyExists { kind: "session" });
            }
            Ok(())
        };
        let apply = |s: &mut State, ()| {
            s.remove_session(old);
            s.session_tokens.insert(new.token_hash, new.id);
            s.sessions.insert(new.id, new);
        };
        self.conditional(Conditional::ReplaceSession, check, apply)
            .await
    }

    async fn delete_session(&self, id: SessionId) -> StoreResult<bool> {
        Ok(self.write()?.remove_session(id))
    }

    async fn sessions_of(&self, user: UserId) -> StoreResult<Vec<SessionRecord>> {
        let s = self.read()?;
        let mut v: Vec<SessionRecord> = s
            .sessions
            .values()
            .filter(|x| x.user == user)
            .cloned()
            .collect();
        v.sort_by_key(|x| (x.created_at, x.id));
        Ok(v)
    }

    async fn delete_sessions_of(
        &self,
        user: UserId,
        keep: Option<SessionId>,
    ) -> StoreResult<usize> {
        let mut s = self.write()?;
        let ids: Vec<SessionId> = s
            .sessions
            .values()
            .filter(|x| x.user == user && Some(x.id) != keep)
            .map(|x| x.id)
            .collect();
        for id in &ids {
            s.remove_session(*id);
        }
        Ok(ids.len())
    }

    async fn insert_challenge(&self, challenge: ChallengeRecord) -> StoreResult<()> {
        let mut s = self.write()?;
        if s.challenges.contains_key(&challenge.token_hash) {
            return Err(StoreError::AlreadyExists { kind: "challenge" });
        }
        s.challenges.insert(challenge.token_hash, challenge);
        Ok(())
    }

    async fn challenge(&self, token_hash: &[u8; 32]) -> StoreResult<Option<ChallengeRecord>> {
        Ok(self.read()?.challenges.get(token_hash).cloned())
    }

    async fn take_challenge(&self, token_hash: &[u8; 32]) -> StoreResult<Option<ChallengeRecord>> {
        let check = |s: &State| Ok(s.challenges.get(token_hash).cloned());
        let apply = |s: &mut State, found: Option<ChallengeRecord>| {
            s.challenges.remove(token_hash);
            found
        };
        self.conditional(Conditional::TakeChallenge, check, apply)
            .await
    }

    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<usize> {
        let mut s = self.write()?;
        let before = s.challenges.len();
        s.challenges.retain(|_, c| c.expires_at > now);
        let mut purged = before - s.challenges.len();
        let dead: Vec<SessionId> = s
            .sessions
            .values()
            .filter(|x| x.expires_at <= now || x.last_seen_at <= idle_cutoff)
            .map(|x| x.id)
            .collect();
        for id in dead {
            purged += usize::from(s.remove_session(id));
        }
        Ok(purged)
    }
}
