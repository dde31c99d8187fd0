//! The ports: what a backend implements. Each trait has only the methods an
//! implementor must write; the rules that use them live in the services
//! ([`crate::keys::KeyService`], [`crate::config::ConfigService`],
//! [`crate::access::Voter`], [`crate::audit`]).
//!
//! Every mutating method takes its [`AuditDraft`] and must store the change
//! and the sealed event ([`crate::audit::seal`]) in one atomic step, or
//! neither (S11). Methods that return `Err` must have written nothing.
//!
//! `Arc<T>` of any port is the port, so `Arc<dyn …>` and shared backends work.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::access::Role;
use crate::audit::{AuditDraft, AuditEvent, ChainHead};
use crate::config::{ConfigChange, Project, ProjectTree, Slug};
use crate::error::StoreError;
use crate::ids::{KeyId, ProjectId, UserId};
use crate::keys::{KeyHash, KeyRecord, PendingReveal, Supersession};

/// Result of a port call.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// Stores API key records (hashes, never plaintext).
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Inserts a new key. `AlreadyExists` if the id or hash is taken.
    async fn insert_key(&self, key: KeyRecord, audit: AuditDraft) -> StoreResult<()>;
    /// The key with this hash, if any (revoked and expired ones included).
    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>>;
    /// The key with this id, if any.
    async fn key_by_id(&self, id: KeyId) -> StoreResult<Option<KeyRecord>>;
    /// All keys of a project, oldest first.
    async fn keys_of_project(&self, project: ProjectId) -> StoreResult<Vec<KeyRecord>>;
    /// Keys that are current (no successor, not revoked) with
    /// `rotate_at <= now`, plus keys whose pending reveal ended
    /// (`until <= now`).
    async fn keys_needing_attention(&self, now: DateTime<Utc>) -> StoreResult<Vec<KeyRecord>>;
    /// Atomically: if `predecessor` is still current (no successor, not
    /// revoked), record `supersession` on it and insert `successor`;
    /// otherwise `Conflict` and no change. This condition is what makes
    /// concurrent rotation produce exactly one successor.
    async fn rotate_key(
        &self,
        predecessor: KeyId,
        supersession: Supersession,
        successor: KeyRecord,
        audit: AuditDraft,
    ) -> StoreResult<()>;
    /// Marks the key revoked at `at` and drops any pending reveal.
    /// `NotFound` if absent; `Conflict` if already revoked.
    async fn revoke_key(&self, id: KeyId, at: DateTime<Utc>, audit: AuditDraft) -> StoreResult<()>;
    /// Atomically removes and returns the key's pending reveal; `None` (and
    /// no audit event) if there is none. Of concurrent callers, at most one
    /// gets it.
    async fn take_pending_reveal(
        &self,
        id: KeyId,
        audit: AuditDraft,
    ) -> StoreResult<Option<PendingReveal>>;
}

/// Stores projects and their configuration tree (ciphertext only).
#[async_trait]
pub trait ConfigStore: Send + Sync {
    /// Creates a project and makes `owner` its owner. `AlreadyExists` if the
    /// id or slug is taken.
    async fn create_project(
        &self,
        project: Project,
        owner: UserId,
        audit: AuditDraft,
    ) -> StoreResult<()>;
    /// The project with this slug.
    async fn project_by_slug(&self, slug: &Slug) -> StoreResult<Option<Project>>;
    /// The project with this id.
    async fn project(&self, id: ProjectId) -> StoreResult<Option<Project>>;
    /// Every project, by slug.
    async fn list_projects(&self) -> StoreResult<Vec<Project>>;
    /// Applies one change. Every change names its project, and an entity
    /// of another project is `NotFound`. Creates are `AlreadyExists` on a
    /// taken id; updates and deletes are `NotFound` on a missing one; a
    /// child whose line is missing is `NotFound`. Deleting a line deletes
    /// its endpoints and targets.
    async fn apply(&self, change: ConfigChange, audit: AuditDraft) -> StoreResult<()>;
    /// The project's whole tree. `NotFound` for an unknown project.
    async fn tree(&self, project: ProjectId) -> StoreResult<ProjectTree>;
    /// Replaces the project's lines, endpoints and targets (and its name
    /// and policy) with `tree`, creating the project if absent. The tree
    /// has been validated by the caller. `AlreadyExists` if the slug is held
    /// by another project id.
    async fn import_tree(&self, tree: ProjectTree, audit: AuditDraft) -> StoreResult<()>;
}

/// Stores project memberships.
#[async_trait]
pub trait MembershipStore: Send + Sync {
    /// The user's role in the project, if a member.
    async fn role_of(&self, user: UserId, project: ProjectId) -> StoreResult<Option<Role>>;
    /// Sets (or with `None` removes) a membership. `NotFound` for an
    /// unknown project.
    async fn set_role(
        &self,
        project: ProjectId,
        user: UserId,
        role: Option<Role>,
        audit: AuditDraft,
    ) -> StoreResult<()>;
    /// Projects the user belongs to, with roles.
    async fn memberships_of(&self, user: UserId) -> StoreResult<Vec<(ProjectId, Role)>>;
    /// The project's members, with roles.
    async fn members_of(&self, project: ProjectId) -> StoreResult<Vec<(UserId, Role)>>;
}

/// Appends events that record no stored mutation (billing events recorded
/// by the billing system, account events).
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// Seals and appends one event; returns it.
    async fn append(&self, audit: AuditDraft) -> StoreResult<AuditEvent>;
}

/// Reads the audit log. There is no update or delete.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Events of one chain (`None`: the global chain) with `seq > after`, in
    /// order, at most `limit`.
    async fn events(
        &self,
        chain: Option<ProjectId>,
        after: u64,
        limit: usize,
    ) -> StoreResult<Vec<AuditEvent>>;
    /// The chain's newest link.
    async fn head(&self, chain: Option<ProjectId>) -> StoreResult<Option<ChainHead>>;
    /// Every event whose actor or subject is the user, oldest first (for
    /// the GDPR Article 15 export).
    async fn events_for_user(&self, user: UserId) -> StoreResult<Vec<AuditEvent>>;
}

macro_rules! forward {
    ($tr:ident { $(async fn $m:ident(&self $(, $a:ident : $t:ty)*) -> $r:ty;)* }) => {
        #[async_trait]
        impl<T: $tr + ?Sized> $tr for Arc<T> {
            $(async fn $m(&self $(, $a: $t)*) -> $r { (**self).$m($($a),*).await })*
        }
    };
}

forward!(KeyStore {
    async fn insert_key(&self, key: KeyRecord, audit: AuditDraft) -> StoreResult<()>;
    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>>;
    async fn key_by_id(&self, id: KeyId) -> StoreResult<Option<KeyRecord>>;
    async fn keys_of_project(&self, project: ProjectId) -> StoreResult<Vec<KeyRecord>>;
    async fn keys_needing_attention(&self, now: DateTime<Utc>) -> StoreResult<Vec<KeyRecord>>;
    async fn rotate_key(&self, predecessor: KeyId, supersession: Supersession, successor: KeyRecord, audit: AuditDraft) -> StoreResult<()>;
    async fn revoke_key(&self, id: KeyId, at: DateTime<Utc>, audit: AuditDraft) -> StoreResult<()>;
    async fn take_pending_reveal(&self, id: KeyId, audit: AuditDraft) -> StoreResult<Option<PendingReveal>>;
});

forward!(ConfigStore {
    async fn create_project(&self, project: Project, owner: UserId, audit: AuditDraft) -> StoreResult<()>;
    async fn project_by_slug(&self, slug: &Slug) -> StoreResult<Option<Project>>;
    async fn project(&self, id: ProjectId) -> StoreResult<Option<Project>>;
    async fn list_projects(&self) -> StoreResult<Vec<Project>>;
    async fn apply(&self, change: ConfigChange, audit: AuditDraft) -> StoreResult<()>;
    async fn tree(&self, project: ProjectId) -> StoreResult<ProjectTree>;
    async fn import_tree(&self, tree: ProjectTree, audit: AuditDraft) -> StoreResult<()>;
});

forward!(MembershipStore {
    async fn role_of(&self, user: UserId, project: ProjectId) -> StoreResult<Option<Role>>;
    async fn set_role(&self, project: ProjectId, user: UserId, role: Option<Role>, audit: AuditDraft) -> StoreResult<()>;
    async fn memberships_of(&self, user: UserId) -> StoreResult<Vec<(ProjectId, Role)>>;
    async fn members_of(&self, project: ProjectId) -> StoreResult<Vec<(UserId, Role)>>;
});

forward!(AuditSink {
    async fn append(&self, audit: AuditDraft) -> StoreResult<AuditEvent>;
});

forward!(AuditLog {
    async fn events(&self, chain: Option<ProjectId>, after: u64, limit: usize) -> StoreResult<Vec<AuditEvent>>;
    async fn head(&self, chain: Option<ProjectId>) -> StoreResult<Option<ChainHead>>;
    async fn events_for_user(&self, user: UserId) -> StoreResult<Vec<AuditEvent>>;
});
