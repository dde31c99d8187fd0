//! Roles, surfaces and the one voter that decides every project-scoped
//! operation (invariant S10).
//!
//! ## The table
//!
//! | role | config read | config write | keys | billing | members | audit read | ingest |
//! |---|---|---|---|---|---|---|---|
//! | viewer | allow | deny | deny | deny | deny | deny | deny |
//! | editor | allow | allow | deny | deny | deny | deny | allow |
//! | owner | allow | allow | allow | allow | allow | allow | allow |
//!
//! A caller that is not a member of the project named by the slug is denied
//! for every surface, and so is an API key presented for a project other than
//! its own. Anything not in the table is denied.
//!
//! ## What an API key may do
//!
//! An API key acts with the role fixed on it, with two exceptions that keep
//! a leaked machine credential from becoming lasting human access:
//!
//! - **Members**: never. A key cannot add, change or remove members,
//!   whatever its role.
//! - **Keys** (mint, list, rotate, revoke, reveal): only in a project whose
//!   owner turned on [`Project::api_keys_manage_keys`]
//!   (off by default). When it is on, revoking a key also revokes every key
//!   it minted, transitively, and its auto-rotated successor if that was
//!   not collected yet ([`crate::keys::KeyService::revoke`]).
//!
//! A key collects its own auto-rotated successor without any grant, by
//! presenting itself ([`crate::keys::KeyService::collect_successor`]).
//!
//! The delivery surface is in no role's column: the relay's own delivery
//! worker gets it from [`Voter::dangerous_delivery_grant`].
//!
//! ## Impossible by construction
//!
//! Project-scoped operations take a [`Grant<S>`], where `S` is the surface
//! (a marker type from [`surface`]). A grant has private fields and only
//! [`Voter::authorize`] makes one, so code cannot reach a project's data
//! without passing the voter, and a read grant cannot be used for a write.

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::audit::Actor;
use crate::config::{Project, Slug};
use crate::error::{Error, Result};
use crate::ids::{ProjectId, UserId};
use crate::keys::VerifiedKey;
use crate::ports::{ConfigStore, MembershipStore};

/// A member's role in a project. Ordered: `Viewer < Editor < Owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Reads configuration.
    Viewer,
    /// Reads and writes configuration.
    Editor,
    /// Everything, including keys, billing and membership.
    Owner,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Editor, Role::Owner];

    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "editor" => Ok(Role::Editor),
            "owner" => Ok(Role::Owner),
            _ => Err(Error::InvalidInput("unknown role")),
        }
    }
}

/// A project surface that the voter gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Surface {
    /// Reading lines, endpoints and targets (secrets masked).
    ConfigRead,
    /// Creating, updating and deleting lines, endpoints and targets.
    ConfigWrite,
    /// API keys: minting, listing, rotating, revoking, revealing, and the
    /// project's key policy.
    Keys,
    /// Billing events: purchases, refunds, adjustments.
    Billing,
    /// Adding, changing and removing project members (users only).
    Members,
    /// Reading the project's audit log.
    AuditRead,
    /// Opening a target's secrets to deliver to it (the relay's worker,
    /// never a user or an API key).
    Delivery,
    /// Publishing messages to the project's inbound endpoints
    /// (`POST /v1/in/{endpoint}`): editors and owners, and their API
    /// keys; a viewer's read-only key cannot inject messages.
    Ingest,
}

impl Surface {
    /// Every surface.
    pub const ALL: [Surface; 8] = [
        Surface::ConfigRead,
        Surface::ConfigWrite,
        Surface::Keys,
        Surface::Billing,
        Surface::Members,
        Surface::AuditRead,
        Surface::Delivery,
        Surface::Ingest,
    ];
}

/// The documented role table: may `role` use `surface`? (The delivery
/// surface is in no role's column.)
pub const fn role_allows(role: Role, surface: Surface) -> bool {
    matches!(
        (role, surface),
        (_, Surface::ConfigRead)
            | (
                Role::Editor | Role::Owner,
                Surface::ConfigWrite | Surface::Ingest
            )
            | (
                Role::Owner,
                Surface::Keys | Surface::Billing | Surface::Members | Surface::AuditRead
            )
    )
}

/// May an API key (of a role that allows `surface`) use it in `project`?
/// Never the members surface; the keys surface only where the project's
/// owner allowed it.
pub const fn api_key_allows(project_allows_key_management: bool, surface: Surface) -> bool {
    match surface {
        Surface::Members | Surface::Delivery => false,
        Surface::Keys => project_allows_key_management,
        _ => true,
    }
}

/// Marker types naming a surface at the type level, for [`Grant<S>`].
pub mod surface {
    use super::Surface;

    /// A surface known at compile time.
    pub trait SurfaceKind: Send + Sync + 'static {
        /// The runtime surface this marker stands for.
        const SURFACE: Surface;
    }

    macro_rules! marker {
        ($(#[$d:meta])* $name:ident) => {
            $(#[$d])*
            #[derive(Debug, Clone, Copy)]
            pub struct $name;
            impl SurfaceKind for $name {
                const SURFACE: Surface = Surface::$name;
            }
        };
    }
    marker!(
        /// [`Surface::ConfigRead`].
        ConfigRead
    );
    marker!(
        /// [`Surface::ConfigWrite`].
        ConfigWrite
    );
    marker!(
        /// [`Surface::Keys`].
        Keys
    );
    marker!(
        /// [`Surface::Billing`].
        Billing
    );
    marker!(
        /// [`Surface::Members`].
        Members
    );
    marker!(
        /// [`Surface::AuditRead`].
        AuditRead
    );
    marker!(
        /// [`Surface::Delivery`].
        Delivery
    );
    marker!(
        /// [`Surface::Ingest`].
        Ingest
    );
}

use surface::SurfaceKind;

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A signed-in user; their role comes from project membership. The id
    /// must come from authentication, normally
    /// [`crate::account::AccountService::authenticate`].
    User(UserId),
    /// A verified API key; its project and role are fixed on the key.
    ApiKey(VerifiedKey),
}

/// A principal plus where the request came from (recorded in audit events).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// The request's source IP, when known.
    pub ip: Option<IpAddr>,
    /// Whether the user re-proved a credential recently (step-up); only
    /// [`crate::account::service::AuthenticatedSession::caller`] and
    /// [`Caller::dangerous_user_stepped_up`] set it.
    stepped_up: bool,
}

impl Caller {
    /// A user calling from `ip`.
    ///
    /// Such a caller has not stepped up: operations that need a recent
    /// password or second-factor check (membership changes, key reveals)
    /// refuse it with [`Error::ReauthenticationRequired`]. Build callers
    /// from a session with
    /// [`AuthenticatedSession::caller`](crate::account::service::AuthenticatedSession::caller).
    pub fn user(user: UserId, ip: Option<IpAddr>) -> Self {
        Self {
            principal: Principal::User(user),
            ip,
            stepped_up: false,
        }
    }

    /// A user the embedder has re-authenticated itself, within its own
    /// step-up window (for example an identity provider's `max_age` /
    /// `auth_time`). Use only when that is true: it unlocks membership
    /// changes and key reveals.
    pub fn dangerous_user_stepped_up(user: UserId, ip: Option<IpAddr>) -> Self {
        Self {
            stepped_up: true,
            ..Self::user(user, ip)
        }
    }

    pub(crate) fn with_step_up(mut self, stepped_up: bool) -> Self {
        self.stepped_up = stepped_up;
        self
    }

    /// An API key calling from `ip`.
    pub fn api_key(key: VerifiedKey, ip: Option<IpAddr>) -> Self {
        Self {
            principal: Principal::ApiKey(key),
            ip,
            stepped_up: false,
        }
    }

    /// The audit actor for this caller.
    pub fn actor(&self) -> Actor {
        match &self.principal {
            Principal::User(u) => Actor::User(*u),
            Principal::ApiKey(k) => Actor::ApiKey(k.key_id),
        }
    }
}

/// Why the voter denied (for tests and operator logs; callers only ever see
/// the opaque [`AccessDenied`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// No project has this slug.
    UnknownProject,
    /// The user is not a member of the project.
    NotMember,
    /// The API key belongs to another project.
    OtherProject,
    /// The role does not allow the surface.
    RoleTooLow,
    /// API keys may not use this surface (members and delivery never;
    /// keys unless the project allows it).
    NotForApiKeys,
}

/// The voter's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, acting with `role` in `project`.
    Allow {
        /// The project the slug names.
        project: ProjectId,
        /// The caller's role there.
        role: Role,
    },
    /// Denied.
    Deny(DenyReason),
}

/// The one error a denied caller sees. It does not say whether the project
/// exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access denied")]
pub struct AccessDenied;

/// Proof that the voter allowed surface `S` on one project for one caller.
///
/// Only [`Voter::authorize`] constructs a grant. Project-scoped operations
/// take `&Grant<S>` and act on [`Grant::project`] only.
pub struct Grant<S: SurfaceKind> {
    project: Project,
    role: Role,
    actor: Actor,
    ip: Option<IpAddr>,
    stepped_up: bool,
    _surface: PhantomData<S>,
}

impl<S: SurfaceKind> Grant<S> {
    /// The project this grant is for.
    pub fn project(&self) -> &Project {
        &self.project
    }
    /// The project's id.
    pub fn project_id(&self) -> ProjectId {
        self.project.id
    }
    /// The caller's role in the project.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The caller, as the audit log records it.
    pub fn actor(&self) -> Actor {
        self.actor
    }
    /// The caller's source IP.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// For sensitive operations (ASVS V3.7.1): a user caller must have
    /// stepped up recently; API keys and the system pass (they have no
    /// second factor to re-prove, and never reach the members surface).
    ///
    /// # Errors
    /// [`Error::ReauthenticationRequired`] for a user who has not.
    pub fn require_step_up(&self) -> Result<()> {
        match self.actor {
            Actor::User(_) if !self.stepped_up => Err(Error::ReauthenticationRequired),
            _ => Ok(()),
        }
    }
}

impl<S: SurfaceKind> fmt::Debug for Grant<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("surface", &S::SURFACE)
            .field("project", &self.project.id)
            .field("role", &self.role)
            .field("actor", &self.actor)
            .finish()
    }
}

/// The voter: decides every surface from role and project membership.
#[derive(Debug, Clone)]
pub struct Voter<S> {
    store: S,
}

impl<S: ConfigStore + MembershipStore> Voter<S> {
    /// A voter reading projects and memberships from `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// Decides whether `caller` may use `surface` in the project named `slug`.
    pub async fn decide(&self, caller: &Caller, slug: &str, surface: Surface) -> Result<Decision> {
        Ok(self.decide_project(caller, slug, surface).await?.0)
    }

    async fn decide_project(
        &self,
        caller: &Caller,
        slug: &str,
        surface: Surface,
    ) -> Result<(Decision, Option<Project>)> {
        // A slug that does not parse cannot name any project (and the
        // caller can tell that from the slug alone).
        let Ok(slug) = Slug::parse(slug) else {
            return Ok((Decision::Deny(DenyReason::UnknownProject), None));
        };
        let project = self.store.project_by_slug(&slug).await?;
        self.decide_for(caller, project, surface).await
    }

    /// The one decision, for a project looked up by slug or id. An unknown
    /// project and a foreign one take the same path: the membership lookup
    /// runs either way (against an id no project has), so the two cannot be
    /// told apart by timing.
    async fn decide_for(
        &self,
        caller: &Caller,
        project: Option<Project>,
        surface: Surface,
    ) -> Result<(Decision, Option<Project>)> {
        let id = project
            .as_ref()
            .map_or(ProjectId::from_bytes([0; 16]), |p| p.id);
        let role = match &caller.principal {
            Principal::User(user) => self.store.role_of(*user, id).await?,
            Principal::ApiKey(key) => (key.project == id).then_some(key.role),
        };
        let Some(project) = project else {
            return Ok((Decision::Deny(DenyReason::UnknownProject), None));
        };
        let Some(role) = role else {
            let why = match caller.principal {
                Principal::User(_) => DenyReason::NotMember,
                Principal::ApiKey(_) => DenyReason::OtherProject,
            };
            return Ok((Decision::Deny(why), None));
        };
        if !role_allows(role, surface) {
            return Ok((Decision::Deny(DenyReason::RoleTooLow), None));
        }
        if matches!(caller.principal, Principal::ApiKey(_))
            && !api_key_allows(project.api_keys_manage_keys, surface)
        {
            return Ok((Decision::Deny(DenyReason::NotForApiKeys), None));
        }
        let decision = Decision::Allow {
            project: project.id,
            role,
        };
        Ok((decision, Some(project)))
    }

    /// Authorizes surface `K` for `caller` in the project named `slug`,
    /// returning the grant that project-scoped operations require.
    ///
    /// # Errors
    /// [`Error::Denied`] for every denial, whatever the reason.
    pub async fn authorize<K: SurfaceKind>(&self, caller: &Caller, slug: &str) -> Result<Grant<K>> {
        let decided = self.decide_project(caller, slug, K::SURFACE).await?;
        Self::grant(caller, decided)
    }

    /// As [`Voter::authorize`], for a project named by its id.
    ///
    /// # Errors
    /// [`Error::Denied`] for every denial, whatever the reason.
    pub async fn authorize_id<K: SurfaceKind>(
        &self,
        caller: &Caller,
        project: ProjectId,
    ) -> Result<Grant<K>> {
        let found = self.store.project(project).await?;
        self.authorize_found(caller, found).await
    }

    /// As [`Voter::authorize_id`], for a project the caller has just read
    /// from the store (`None`: it is not there), so that a read that
    /// fetches more than the project (the relay's
    /// [`ConfigStore::ingest_route`](crate::ports::ConfigStore::ingest_route))
    /// is one round trip.
    pub(crate) async fn authorize_found<K: SurfaceKind>(
        &self,
        caller: &Caller,
        found: Option<Project>,
    ) -> Result<Grant<K>> {
        let decided = self.decide_for(caller, found, K::SURFACE).await?;
        Self::grant(caller, decided)
    }

    /// The delivery capability for one project: lets the relay's own
    /// delivery worker open that project's target secrets
    /// ([`crate::config::ConfigService::delivery_secrets`], audited on
    /// every use). No user or API key can obtain it through
    /// [`Voter::authorize`]; call this only from the worker.
    ///
    /// # Errors
    /// `Store(NotFound)` for an unknown project.
    pub async fn dangerous_delivery_grant(
        &self,
        project: ProjectId,
    ) -> Result<Grant<surface::Delivery>> {
        let project = self
            .store
            .project(project)
            .await?
            .ok_or(crate::error::StoreError::NotFound { kind: "project" })?;
        Ok(Grant {
            project,
            role: Role::Viewer,
            actor: Actor::System,
            ip: None,
            stepped_up: false,
            _surface: PhantomData,
        })
    }

    fn grant<K: SurfaceKind>(
        caller: &Caller,
        decided: (Decision, Option<Project>),
    ) -> Result<Grant<K>> {
        match decided {
            (Decision::Allow { role, .. }, Some(project)) => Ok(Grant {
                project,
                role,
                actor: caller.actor(),
                ip: caller.ip,
                stepped_up: caller.stepped_up,
                _surface: PhantomData,
            }),
            (decision, _) => {
                tracing::debug!(?decision, surface = ?K::SURFACE, "voter denied");
                Err(AccessDenied.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_monotonic_in_role() {
        for s in Surface::ALL {
            for pair in Role::ALL.windows(2) {
                assert!(!role_allows(pair[0], s) || role_allows(pair[1], s));
            }
        }
    }
}
