//! Tenant configuration: project → lines → endpoints and targets.
//!
//! A target's bearer token, basic-auth password and signing secret are
//! sealed by the vault with associated data naming the project, the target
//! and the field (S4), so the stored form ([`Target`]) holds only
//! ciphertext. Reads return [`TargetView`], where every secret is masked
//! (S5); the plaintext exists only inside [`ConfigService`] while it is
//! masked or handed to the delivery path.
//!
//! The whole tree of a project exports to JSON ([`ConfigService::export`],
//! ciphertext only) and imports from it ([`ConfigService::import`]), which
//! validates everything — shape, references, and that every ciphertext opens
//! under its own project, record and field — before writing anything.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::access::surface::{ConfigRead, ConfigWrite, Keys, Members};
use crate::access::{Grant, Role};
use crate::audit::{Actor, AuditDraft, ConfigEntity, ConfigOp, EventKind};
use crate::clock::Clock;
use crate::error::{Error, Result, StoreError};
use crate::ids::{EndpointId, LineId, ProjectId, TargetId, UserId};
use crate::keys::LifecyclePolicy;
use crate::ports::{AuditSink, ConfigStore, MembershipStore, TreeImport};
use crate::vault::{Ciphertext, Masked, SecretContext, SecretVault};

/// What was wrong with configuration input. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A slug must be 3–63 characters of `a-z`, `0-9` and single inner `-`,
    /// starting with a letter.
    #[error("invalid slug: {0}")]
    Slug(&'static str),
    /// A name must be 1–200 characters with no control characters.
    #[error("invalid {0} name: must be 1-200 characters without control characters")]
    Name(&'static str),
    /// A target URL must be an absolute `https://` (or `http://`) URL of
    /// at most 2048 printable ASCII characters (RFC 3986: percent-encode
    /// the rest, punycode for hosts).
    #[error("invalid target url: {0}")]
    Url(&'static str),
    /// A secret must be 1–4096 characters without control characters.
    #[error("invalid {0}: must be 1-4096 characters without control characters")]
    Secret(&'static str),
    /// A basic-auth username must be 1–200 characters without `:`.
    #[error("invalid basic-auth username")]
    Username,
    /// The JSON does not match the export format.
    #[error("config JSON does not parse: {0}")]
    Json(String),
    /// The export is from an unsupported format version.
    #[error("unsupported config export version {0}")]
    Version(u32),
    /// The tree refers to something it does not contain, or repeats an id.
    #[error("inconsistent config tree: {0}")]
    Tree(&'static str),
    /// The key lifecycle policy is invalid.
    #[error("invalid key policy: {0}")]
    Policy(#[from] crate::keys::PolicyError),
}

/// A project's URL name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

impl Slug {
    /// Validates a slug.
    ///
    /// ```
    /// use echorelay_core::config::Slug;
    /// assert!(Slug::parse("acme-prod").is_ok());
    /// assert!(Slug::parse("Acme").is_err());
    /// assert!(Slug::parse("a--b").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let b = s.as_bytes();
        if !(3..=63).contains(&b.len()) {
            return Err(ConfigError::Slug("length must be 3 to 63"));
        }
        if !b[0].is_ascii_lowercase() {
            return Err(ConfigError::Slug("must start with a lowercase letter"));
        }
        if !b
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        {
            return Err(ConfigError::Slug("only a-z, 0-9 and - are allowed"));
        }
        if s.ends_with('-') || s.contains("--") {
            return Err(ConfigError::Slug("no trailing or doubled -"));
        }
        Ok(Self(s.to_owned()))
    }
    /// The slug text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Slug {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A project's slug: 3-63 characters of a-z, 0-9 and single inner -, starting with a letter",
            ))
            .pattern(Some("^[a-z][a-z0-9]*(-[a-z0-9]+)*$"))
            .min_length(Some(3))
            .max_length(Some(63))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Slug {}

impl TryFrom<String> for Slug {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, ConfigError> {
        Self::parse(&s)
    }
}
impl From<Slug> for String {
    fn from(s: Slug) -> String {
        s.0
    }
}
impl std::fmt::Display for Slug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_name(kind: &'static str, s: &str) -> Result<(), ConfigError> {
    let n = s.chars().count();
    if n == 0 || n > 200 || s.chars().any(char::is_control) {
        return Err(ConfigError::Name(kind));
    }
    Ok(())
}

fn check_url(u: &str) -> Result<(), ConfigError> {
    if u.len() > 2048 {
        return Err(ConfigError::Url("longer than 2048 bytes"));
    }
    if !u.is_ascii() {
        return Err(ConfigError::Url(
            "must be ASCII (percent-encode the path, punycode the host)",
        ));
    }
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or(ConfigError::Url("must start with https:// or http://"))?;
    if u.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ConfigError::Url(
            "contains whitespace or control characters",
        ));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err(ConfigError::Url("has no host"));
    }
    if host.contains('@') {
        return Err(ConfigError::Url(
            "credentials belong in the target's auth, not the URL",
        ));
    }
    Ok(())
}

fn check_username(u: &str) -> Result<(), ConfigError> {
    if u.is_empty() || u.chars().count() > 200 || u.contains(':') || u.chars().any(char::is_control)
    {
        return Err(ConfigError::Username);
    }
    Ok(())
}

fn check_secret(kind: &'static str, s: &str) -> Result<(), ConfigError> {
    if s.is_empty() || s.chars().count() > 4096 || s.chars().any(char::is_control) {
        return Err(ConfigError::Secret(kind));
    }
    Ok(())
}

/// A project (tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Id.
    pub id: ProjectId,
    /// URL name, unique.
    pub slug: Slug,
    /// Display name.
    pub name: String,
    /// How the project's API keys rotate.
    pub key_policy: LifecyclePolicy,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// The version of the project's whole configuration, kept by the
    /// store: every change in the project moves it by one. Writes that
    /// work from a read (`UpdateProject`, an import) are compare-and-swap
    /// on it ([`ConfigStore::apply`]).
    #[serde(default)]
    pub version: u64,
    /// Whether the project's API keys may use the keys surface (mint,
    /// list, rotate, revoke, reveal, policy). Off by default, so a leaked
    /// key cannot make itself permanent; only an owner who is a user turns
    /// it on ([`ConfigService::set_api_keys_manage_keys`]).
    #[serde(default)]
    pub api_keys_manage_keys: bool,
}

/// A line: a relay route with inbound endpoints and outbound targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Line {
    /// Id.
    pub id: LineId,
    /// Project.
    pub project: ProjectId,
    /// Name.
    pub name: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// An inbound endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Endpoint {
    /// Id.
    pub id: EndpointId,
    /// Project.
    pub project: ProjectId,
    /// Line.
    pub line: LineId,
    /// Name.
    pub name: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A target's outbound auth as stored: secrets are ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StoredAuth {
    /// No auth header.
    None,
    /// `Authorization: Bearer …`.
    Bearer {
        /// Sealed token.
        token: Ciphertext,
    },
    /// HTTP basic auth.
    Basic {
        /// Username (not secret).
        username: String,
        /// Sealed password.
        password: Ciphertext,
    },
}

/// An outbound target as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Id.
    pub id: TargetId,
    /// Project.
    pub project: ProjectId,
    /// Line.
    pub line: LineId,
    /// Name.
    pub name: String,
    /// Delivery URL.
    pub url: String,
    /// Outbound auth.
    pub auth: StoredAuth,
    /// Sealed Standard Webhooks signing secret (`whsec_…`).
    pub signing_secret: Ciphertext,
    /// Signing secrets a rotation retired and that still sign until their
    /// end ([`ConfigService::rotate_signing_secret`]); at most
    /// [`MAX_RETIRED_SIGNING_SECRETS`], latest end first. Absent from the
    /// serialized form when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_signing_secrets: Vec<RetiredSecret>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last updated.
    pub updated_at: DateTime<Utc>,
    /// Compare-and-swap version, kept by the store: 0 when created, one
    /// more on every update ([`ConfigStore::apply`]).
    #[serde(default)]
    pub version: u64,
}

/// A signing secret retired by a rotation, as stored: sealed under the
/// field [`fields::retired_signing_secret`]`(until)`, so its end is bound
/// into the ciphertext's associated data — a database writer who moves
/// `until` later, or moves the ciphertext into the current slot, gets a
/// secret that no longer opens (S4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredSecret {
    /// The sealed `whsec_…` secret.
    pub secret: Ciphertext,
    /// It signs until this time (whole seconds), then never again.
    pub until: DateTime<Utc>,
}

/// Create or update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Must not exist yet.
    Create,
    /// Must exist.
    Update,
}

/// One configuration change, as handed to [`ConfigStore::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigChange {
    /// Create or update a line.
    PutLine(Write, Line),
    /// Delete a line with its endpoints and targets.
    DeleteLine(ProjectId, LineId),
    /// Create or update an endpoint.
    PutEndpoint(Write, Endpoint),
    /// Delete an endpoint.
    DeleteEndpoint(ProjectId, EndpointId),
    /// Create or update a target.
    PutTarget(Write, Target),
    /// Delete a target.
    DeleteTarget(ProjectId, TargetId),
    /// Replace the project's name and key policy.
    UpdateProject(Project),
}

/// A project's whole configuration, as exported and imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectTree {
    /// The project.
    pub project: Project,
    /// Its lines.
    pub lines: Vec<Line>,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Its targets.
    pub targets: Vec<Target>,
}

/// The JSON export envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ExportEnvelope {
    format: String,
    version: u32,
    tree: ProjectTree,
}

const EXPORT_FORMAT: &str = "echorelay.config";
const MAX_IMPORT_BYTES: usize = 16 << 20;
/// The most lines, endpoints and targets (together) one project's tree
/// holds. Creating one more is refused (`Store(LimitReached)`, decided by
/// the store with [`crate::ports::rules::tree_has_room`]), and an import
/// may carry at most as many, so every export imports again, and reading
/// a whole tree ([`ConfigService::lines`], [`ConfigService::export`]) is
/// bounded work.
pub const MAX_TREE_ENTITIES: usize = 10_000;
const MAX_IMPORT_ENTITIES: usize = MAX_TREE_ENTITIES;
const EXPORT_VERSION: u32 = 1;

/// Outbound auth as given by a caller (plaintext secrets).
#[derive(Debug, Clone)]
pub enum AuthInput {
    /// No auth.
    None,
    /// A bearer token.
    Bearer(SecretString),
    /// Basic auth.
    Basic {
        /// Username.
        username: String,
        /// Password.
        password: SecretString,
    },
}

/// Outbound auth as read: masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AuthView {
    /// No auth.
    None,
    /// A bearer token, masked.
    Bearer {
        /// Masked token.
        token: Masked,
    },
    /// Basic auth; the password shows as `••••` only (a chosen password's
    /// last characters say too much).
    Basic {
        /// Username.
        username: String,
        /// Masked password.
        password: Masked,
    },
}

/// A target as read: every secret masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TargetView {
    /// Id.
    pub id: TargetId,
    /// Line.
    pub line: LineId,
    /// Name.
    pub name: String,
    /// URL.
    pub url: String,
    /// Auth, masked.
    pub auth: AuthView,
    /// Signing secret, masked.
    pub signing_secret: Masked,
    /// Retired signing secrets that still sign, latest end first (empty
    /// when there are none).
    pub retired_signing_secrets: Vec<RetiredView>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

/// A retired signing secret as read: masked, with the end of its grace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetiredView {
    /// The secret, masked.
    pub signing_secret: Masked,
    /// It signs until this time.
    pub until: DateTime<Utc>,
}

/// A line with its endpoints and targets, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LineView {
    /// The line.
    pub line: Line,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Its targets, masked.
    pub targets: Vec<TargetView>,
}

/// A new target.
#[derive(Debug, Clone)]
pub struct NewTarget {
    /// Name.
    pub name: String,
    /// URL.
    pub url: String,
    /// Auth.
    pub auth: AuthInput,
    /// Signing secret; generated (`whsec_` + 32 random bytes) when `None`.
    pub signing_secret: Option<SecretString>,
}

/// Changes to a target; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TargetPatch {
    /// New name.
    pub name: Option<String>,
    /// New URL.
    pub url: Option<String>,
    /// New auth.
    pub auth: Option<AuthInput>,
    /// New signing secret. Setting it here replaces the current one at
    /// once and ends every retired one (the answer to a leaked secret);
    /// [`ConfigService::rotate_signing_secret`] keeps the old one signing
    /// through a grace.
    pub signing_secret: Option<SecretString>,
}

/// Default grace of a rotated signing secret: 24 hours, as Svix.
pub const DEFAULT_SIGNING_GRACE: chrono::Duration = chrono::Duration::hours(24);
/// Longest grace a rotation may give the secret it retires: 7 days.
pub const MAX_SIGNING_GRACE: chrono::Duration = chrono::Duration::days(7);
/// Most retired signing secrets a target keeps (as Svix); a rotation past
/// it drops the one whose grace ends first.
pub const MAX_RETIRED_SIGNING_SECRETS: usize = 10;

/// A signing-secret rotation ([`ConfigService::rotate_signing_secret`]).
#[derive(Debug, Clone)]
pub struct SigningRotation {
    /// How long the current secret keeps signing beside the new one
    /// (0 to [`MAX_SIGNING_GRACE`]; 0 ends it at once).
    pub grace: chrono::Duration,
    /// The new secret; generated (`whsec_` + 32 random bytes) when `None`.
    pub signing_secret: Option<SecretString>,
}

impl Default for SigningRotation {
    fn default() -> Self {
        Self {
            grace: DEFAULT_SIGNING_GRACE,
            signing_secret: None,
        }
    }
}

/// A rotated signing secret: the target as read and the new secret, shown
/// once.
#[derive(Debug)]
pub struct RotatedSigningSecret {
    /// The masked view, the retired secrets listed with their ends.
    pub view: TargetView,
    /// The new secret's plaintext (to give to the receiver).
    pub signing_secret: SecretString,
}

/// A created target: its view and the signing secret, shown once.
#[derive(Debug)]
pub struct CreatedTarget {
    /// The masked view.
    pub view: TargetView,
    /// The signing secret's plaintext (to give to the receiver).
    pub signing_secret: SecretString,
}

/// A target's outbound secrets in plaintext, for the delivery worker only
/// ([`ConfigService::delivery_secrets`]). `Debug` is redacted; the values
/// zeroize on drop.
pub struct DeliverySecrets {
    /// The target.
    pub target: TargetId,
    /// The target's version these secrets belong to: cache by it, and
    /// fetch again when the stored version moves.
    pub version: u64,
    /// Delivery URL.
    pub url: String,
    /// Outbound auth, in plaintext.
    pub auth: AuthInput,
    /// The Standard Webhooks signing secret (`whsec_…`).
    pub signing_secret: SecretString,
    /// Retired signing secrets whose grace had not ended when these were
    /// opened, with their ends: a signer uses those still before their end
    /// at the time it signs ([`DeliverySecrets::signing_secrets_at`]).
    pub retired_signing_secrets: Vec<(SecretString, DateTime<Utc>)>,
}

impl DeliverySecrets {
    /// Every secret that signs at `now`: the current one first, then each
    /// retired one whose end is after `now`.
    pub fn signing_secrets_at(&self, now: DateTime<Utc>) -> Vec<&SecretString> {
        std::iter::once(&self.signing_secret)
            .chain(
                self.retired_signing_secrets
                    .iter()
                    .filter(|(_, until)| *until > now)
                    .map(|(s, _)| s),
            )
            .collect()
    }
}

impl std::fmt::Debug for DeliverySecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliverySecrets")
            .field("target", &self.target)
            .field("version", &self.version)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Field names bound into the associated data.
pub mod fields {
    /// A bearer token.
    pub const BEARER_TOKEN: &str = "target.auth.bearer_token";
    /// A basic-auth password.
    pub const BASIC_PASSWORD: &str = "target.auth.basic_password";
    /// A signing secret.
    pub const SIGNING_SECRET: &str = "target.signing_secret";

    /// A retired signing secret that signs until `until`: the end, in Unix
    /// seconds, is part of the field (`target.signing_secret.retired.<secs>`).
    pub fn retired_signing_secret(until: chrono::DateTime<chrono::Utc>) -> String {
        format!("{SIGNING_SECRET}.retired.{}", until.timestamp())
    }
}

/// Creates a signing secret in the Standard Webhooks form.
pub fn generate_signing_secret() -> SecretString {
    use base64::Engine;
    use rand::RngCore;
    let mut b = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut *b);
    let s = zeroize::Zeroizing::new(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(*b)
    ));
    SecretString::from(s.as_str())
}

/// The configuration service: every read and write of a project's tree.
#[derive(Debug, Clone)]
pub struct ConfigService<S, V> {
    store: S,
    vault: V,
    clock: Arc<dyn Clock>,
}

impl<S: ConfigStore + MembershipStore + AuditSink, V: SecretVault> ConfigService<S, V> {
    /// A service over `store`, sealing secrets with `vault`.
    pub fn new(store: S, vault: V, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            vault,
            clock,
        }
    }

    fn draft<K: crate::access::surface::SurfaceKind>(
        &self,
        grant: &Grant<K>,
        entity: ConfigEntity,
        op: ConfigOp,
        id: String,
        at: DateTime<Utc>,
    ) -> AuditDraft {
        AuditDraft {
            project: Some(grant.project_id()),
            at,
            actor: grant.actor(),
            ip: grant.ip(),
            subject: None,
            kind: EventKind::Config { entity, op, id },
        }
    }

    /// Creates a project owned by `owner` (who becomes its first member).
    pub async fn create_project(
        &self,
        owner: UserId,
        ip: Option<std::net::IpAddr>,
        slug: &str,
        name: &str,
    ) -> Result<Project> {
        let slug = Slug::parse(slug)?;
        check_name("project", name)?;
        let now = self.clock.now();
        let project = Project {
            id: ProjectId::random(),
            slug,
            name: name.to_owned(),
            key_policy: LifecyclePolicy::default(),
            created_at: now,
            version: 0,
            api_keys_manage_keys: false,
        };
        let audit = AuditDraft {
            project: Some(project.id),
            at: now,
            actor: Actor::User(owner),
            ip,
            subject: None,
            kind: EventKind::Config {
                entity: ConfigEntity::Project,
                op: ConfigOp::Create,
                id: project.id.to_string(),
            },
        };
        self.store
            .create_project(project.clone(), owner, audit)
            .await?;
        Ok(project)
    }

    /// Sets the project's API key lifecycle policy (applies to keys minted
    /// or rotated from now on). Owner-only (the key surface): a policy can
    /// shorten the life of every key.
    pub async fn set_key_policy(&self, grant: &Grant<Keys>, policy: LifecyclePolicy) -> Result<()> {
        policy.validate().map_err(ConfigError::from)?;
        self.update_project(grant, |p| p.key_policy = policy).await
    }

    /// Read-modify-write of the project's own fields, compare-and-swap on
    /// its version: if anything in the project changed between the read
    /// and the write, the store refuses with `Store(Conflict)` and nothing
    /// is written (the caller retries).
    async fn update_project<K: crate::access::surface::SurfaceKind>(
        &self,
        grant: &Grant<K>,
        change: impl FnOnce(&mut Project),
    ) -> Result<()> {
        let mut project = self
            .store
            .project(grant.project_id())
            .await?
            .ok_or(StoreError::NotFound { kind: "project" })?;
        change(&mut project);
        let audit = self.draft(
            grant,
            ConfigEntity::Project,
            ConfigOp::Update,
            project.id.to_string(),
            self.clock.now(),
        );
        self.store
            .apply(ConfigChange::UpdateProject(project), audit)
            .await?;
        Ok(())
    }

    /// Lets the project's API keys use the keys surface (mint, list,
    /// rotate, revoke, reveal), or stops them. Members grant: an owner who
    /// is a user (API keys never hold one).
    pub async fn set_api_keys_manage_keys(
        &self,
        grant: &Grant<Members>,
        allow: bool,
    ) -> Result<()> {
        grant.require_step_up()?;
        self.update_project(grant, |p| p.api_keys_manage_keys = allow)
            .await
    }

    /// One page of the project's members and their roles: user ids after
    /// `after`, ascending, at most `limit` (1 to
    /// [`MAX_LIST_PAGE`](crate::ports::MAX_LIST_PAGE)). A page shorter than
    /// `limit` is the last.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a `limit` outside 1 to 500 (never
    /// clamped).
    pub async fn members_page(
        &self,
        grant: &Grant<Members>,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<(UserId, Role)>> {
        let limit = crate::ports::list_limit(limit)?;
        Ok(self
            .store
            .members_page(grant.project_id(), after, limit)
            .await?)
    }

    /// Sets (or removes, with `None`) a member's role.
    ///
    /// # Errors
    /// `Store(Conflict)` when the change would leave the project without an
    /// owner.
    pub async fn set_member(
        &self,
        grant: &Grant<Members>,
        user: UserId,
        role: Option<Role>,
    ) -> Result<()> {
        grant.require_step_up()?;
        let project = grant.project_id();
        // The last-owner rule is decided by the store, atomically with the
        // write (`MembershipStore::set_role`): two owners demoting each
        // other at once cannot both succeed.
        let audit = AuditDraft {
            project: Some(project),
            at: self.clock.now(),
            actor: grant.actor(),
            ip: grant.ip(),
            subject: Some(user),
            kind: EventKind::Membership { user, role },
        };
        self.store.set_role(project, user, role, audit).await?;
        Ok(())
    }

    /// Creates a line.
    pub async fn create_line(&self, grant: &Grant<ConfigWrite>, name: &str) -> Result<Line> {
        check_name("line", name)?;
        let now = self.clock.now();
        let line = Line {
            id: LineId::random(),
            project: grant.project_id(),
            name: name.to_owned(),
            created_at: now,
        };
        let audit = self.draft(
            grant,
            ConfigEntity::Line,
            ConfigOp::Create,
            line.id.to_string(),
            now,
        );
        self.store
            .apply(ConfigChange::PutLine(Write::Create, line.clone()), audit)
            .await?;
        Ok(line)
    }

    /// Renames a line.
    pub async fn rename_line(
        &self,
        grant: &Grant<ConfigWrite>,
        id: LineId,
        name: &str,
    ) -> Result<Line> {
        check_name("line", name)?;
        let tree = self.store.tree(grant.project_id()).await?;
        let mut line = tree
            .lines
            .into_iter()
            .find(|l| l.id == id)
            .ok_or(StoreError::NotFound { kind: "line" })?;
        line.name = name.to_owned();
        let audit = self.draft(
            grant,
            ConfigEntity::Line,
            ConfigOp::Update,
            id.to_string(),
            self.clock.now(),
        );
        self.store
            .apply(ConfigChange::PutLine(Write::Update, line.clone()), audit)
            .await?;
        Ok(line)
    }

    /// Deletes a line with its endpoints and targets.
    pub async fn delete_line(&self, grant: &Grant<ConfigWrite>, id: LineId) -> Result<()> {
        let audit = self.draft(
            grant,
            ConfigEntity::Line,
            ConfigOp::Delete,
            id.to_string(),
            self.clock.now(),
        );
        self.store
            .apply(ConfigChange::DeleteLine(grant.project_id(), id), audit)
            .await?;
        Ok(())
    }

    /// Creates an inbound endpoint on a line.
    pub async fn create_endpoint(
        &self,
        grant: &Grant<ConfigWrite>,
        line: LineId,
        name: &str,
    ) -> Result<Endpoint> {
        check_name("endpoint", name)?;
        let now = self.clock.now();
        let ep = Endpoint {
            id: EndpointId::random(),
            project: grant.project_id(),
            line,
            name: name.to_owned(),
            created_at: now,
        };
        let audit = self.draft(
            grant,
            ConfigEntity::Endpoint,
            ConfigOp::Create,
            ep.id.to_string(),
            now,
        );
        self.store
            .apply(ConfigChange::PutEndpoint(Write::Create, ep.clone()), audit)
            .await?;
        Ok(ep)
    }

    /// Deletes an endpoint.
    pub async fn delete_endpoint(&self, grant: &Grant<ConfigWrite>, id: EndpointId) -> Result<()> {
        let audit = self.draft(
            grant,
            ConfigEntity::Endpoint,
            ConfigOp::Delete,
            id.to_string(),
            self.clock.now(),
        );
        self.store
            .apply(ConfigChange::DeleteEndpoint(grant.project_id(), id), audit)
            .await?;
        Ok(())
    }

    fn seal(
        &self,
        project: ProjectId,
        target: TargetId,
        field: &str,
        secret: &SecretString,
    ) -> Result<Ciphertext> {
        let (p, r) = (project.to_string(), target.to_string());
        Ok(self.vault.seal_str(
            secret.expose_secret(),
            &SecretContext {
                project: &p,
                record: &r,
                field,
            },
        )?)
    }

    fn open(&self, t: &Target, field: &str, ct: &Ciphertext) -> Result<SecretString> {
        let (p, r) = (t.project.to_string(), t.id.to_string());
        Ok(self.vault.open_string(
            ct,
            &SecretContext {
                project: &p,
                record: &r,
                field,
            },
        )?)
    }

    fn seal_auth(&self, project: ProjectId, id: TargetId, auth: &AuthInput) -> Result<StoredAuth> {
        Ok(match auth {
            AuthInput::None => StoredAuth::None,
            AuthInput::Bearer(token) => {
                check_secret("bearer token", token.expose_secret())?;
                StoredAuth::Bearer {
                    token: self.seal(project, id, fields::BEARER_TOKEN, token)?,
                }
            }
            AuthInput::Basic { username, password } => {
                check_username(username)?;
                check_secret("basic-auth password", password.expose_secret())?;
                StoredAuth::Basic {
                    username: username.clone(),
                    password: self.seal(project, id, fields::BASIC_PASSWORD, password)?,
                }
            }
        })
    }

    /// Masks a stored target for reading. Decrypts each secret only to mask
    /// it; fails if a ciphertext does not belong to this target (S4).
    pub fn view(&self, t: &Target) -> Result<TargetView> {
        let mask = |field: &str, ct| self.open(t, field, ct).map(|s| Masked::of(&s));
        let auth = match &t.auth {
            StoredAuth::None => AuthView::None,
            StoredAuth::Bearer { token } => AuthView::Bearer {
                token: mask(fields::BEARER_TOKEN, token)?,
            },
            StoredAuth::Basic { username, password } => AuthView::Basic {
                username: username.clone(),
                // Opened all the same: proves the ciphertext is this field's.
                password: mask(fields::BASIC_PASSWORD, password).map(|_| Masked::hidden())?,
            },
        };
        Ok(TargetView {
            id: t.id,
            line: t.line,
            name: t.name.clone(),
            url: t.url.clone(),
            auth,
            signing_secret: mask(fields::SIGNING_SECRET, &t.signing_secret)?,
            retired_signing_secrets: t
                .retired_signing_secrets
                .iter()
                .map(|r| {
                    Ok(RetiredView {
                        signing_secret: mask(&fields::retired_signing_secret(r.until), &r.secret)?,
                        until: r.until,
                    })
                })
                .collect::<Result<_>>()?,
            updated_at: t.updated_at,
        })
    }

    fn check_sealed(&self, t: &Target) -> Result<()> {
        match &t.auth {
            StoredAuth::None => {}
            StoredAuth::Bearer { token } => check_secret(
                "bearer token",
                self.open(t, fields::BEARER_TOKEN, token)?.expose_secret(),
            )?,
            StoredAuth::Basic { password, .. } => check_secret(
                "basic-auth password",
                self.open(t, fields::BASIC_PASSWORD, password)?
                    .expose_secret(),
            )?,
        }
        check_secret(
            "signing secret",
            self.open(t, fields::SIGNING_SECRET, &t.signing_secret)?
                .expose_secret(),
        )?;
        if t.retired_signing_secrets.len() > MAX_RETIRED_SIGNING_SECRETS {
            return Err(ConfigError::Tree("more than 10 retired signing secrets").into());
        }
        for r in &t.retired_signing_secrets {
            check_secret(
                "retired signing secret",
                self.open(t, &fields::retired_signing_secret(r.until), &r.secret)?
                    .expose_secret(),
            )?;
        }
        Ok(())
    }

    /// Creates a target; its secrets are sealed before they reach the store.
    pub async fn create_target(
        &self,
        grant: &Grant<ConfigWrite>,
        line: LineId,
        input: NewTarget,
    ) -> Result<CreatedTarget> {
        check_name("target", &input.name)?;
        check_url(&input.url)?;
        let id = TargetId::random();
        let project = grant.project_id();
        let signing = match input.signing_secret {
            Some(s) => {
                check_secret("signing secret", s.expose_secret())?;
                s
            }
            None => generate_signing_secret(),
        };
        let now = self.clock.now();
        let target = Target {
            id,
            project,
            line,
            name: input.name,
            url: input.url,
            auth: self.seal_auth(project, id, &input.auth)?,
            signing_secret: self.seal(project, id, fields::SIGNING_SECRET, &signing)?,
            retired_signing_secrets: Vec::new(),
            created_at: now,
            updated_at: now,
            version: 0,
        };
        let view = self
            .put_target(grant, Write::Create, ConfigOp::Create, target, now)
            .await?;
        Ok(CreatedTarget {
            view,
            signing_secret: signing,
        })
    }

    async fn stored_target(&self, project: ProjectId, id: TargetId) -> Result<Target> {
        Ok(self
            .store
            .target(project, id)
            .await?
            .ok_or(StoreError::NotFound { kind: "target" })?)
    }

    /// Updates a target. Compare-and-swap on the target's version: if it
    /// changed between this call's read and its write, the store refuses
    /// with `Store(Conflict)` and nothing is written (read again, retry).
    pub async fn update_target(
        &self,
        grant: &Grant<ConfigWrite>,
        id: TargetId,
        patch: TargetPatch,
    ) -> Result<TargetView> {
        let mut t = self.stored_target(grant.project_id(), id).await?;
        if let Some(name) = patch.name {
            check_name("target", &name)?;
            t.name = name;
        }
        if let Some(url) = patch.url {
            check_url(&url)?;
            t.url = url;
        }
        if let Some(auth) = &patch.auth {
            t.auth = self.seal_auth(t.project, t.id, auth)?;
        }
        if let Some(s) = &patch.signing_secret {
            check_secret("signing secret", s.expose_secret())?;
            t.signing_secret = self.seal(t.project, t.id, fields::SIGNING_SECRET, s)?;
            t.retired_signing_secrets.clear();
        }
        let now = self.clock.now();
        t.updated_at = now;
        self.put_target(grant, Write::Update, ConfigOp::Update, t, now)
            .await
    }

    /// Masks `t` (which proves every ciphertext opens under its own
    /// context), then writes it with its audit event; the masked view.
    async fn put_target(
        &self,
        grant: &Grant<ConfigWrite>,
        write: Write,
        op: ConfigOp,
        t: Target,
        now: DateTime<Utc>,
    ) -> Result<TargetView> {
        let view = self.view(&t)?;
        let audit = self.draft(grant, ConfigEntity::Target, op, t.id.to_string(), now);
        self.store
            .apply(ConfigChange::PutTarget(write, t), audit)
            .await?;
        Ok(view)
    }

    /// Rotates a target's signing secret: the new one (given, or
    /// generated) becomes current, and the current one keeps signing
    /// beside it until `now + grace` — deliveries carry one signature per
    /// active secret, so a receiver can switch when it likes. Retired
    /// secrets whose grace has ended are dropped; past
    /// [`MAX_RETIRED_SIGNING_SECRETS`] the one ending first goes. A grace
    /// of 0 retires nothing. It hands out a credential, so a signed-in
    /// user must have stepped up. Compare-and-swap on the target's
    /// version, as [`ConfigService::update_target`]; audited as an update.
    ///
    /// # Errors
    /// [`Error::ReauthenticationRequired`] for a user who has not stepped
    /// up; [`Error::InvalidInput`] for a grace below 0 or above
    /// [`MAX_SIGNING_GRACE`]; `Config(Secret)` for a given secret that
    /// fails the checks; `Store(NotFound)`, `Store(Conflict)`.
    pub async fn rotate_signing_secret(
        &self,
        grant: &Grant<ConfigWrite>,
        id: TargetId,
        rotation: SigningRotation,
    ) -> Result<RotatedSigningSecret> {
        grant.require_step_up()?;
        if rotation.grace < chrono::Duration::zero() || rotation.grace > MAX_SIGNING_GRACE {
            return Err(Error::InvalidInput("grace must be between 0 and 7 days"));
        }
        let next = match rotation.signing_secret {
            Some(s) => {
                check_secret("signing secret", s.expose_secret())?;
                s
            }
            None => generate_signing_secret(),
        };
        let mut t = self.stored_target(grant.project_id(), id).await?;
        let now = self.clock.now();
        t.retired_signing_secrets.retain(|r| r.until > now);
        if rotation.grace > chrono::Duration::zero() {
            // Whole seconds: the end is bound into the field by its Unix
            // seconds, so it must be exactly what is stored.
            let until = DateTime::from_timestamp((now + rotation.grace).timestamp(), 0)
                .ok_or(Error::InvalidInput("grace ends out of range"))?;
            let current = self.open(&t, fields::SIGNING_SECRET, &t.signing_secret)?;
            let secret = self.seal(
                t.project,
                t.id,
                &fields::retired_signing_secret(until),
                &current,
            )?;
            t.retired_signing_secrets
                .push(RetiredSecret { secret, until });
        }
        t.retired_signing_secrets
            .sort_by_key(|r| std::cmp::Reverse(r.until));
        t.retired_signing_secrets
            .truncate(MAX_RETIRED_SIGNING_SECRETS);
        t.signing_secret = self.seal(t.project, t.id, fields::SIGNING_SECRET, &next)?;
        t.updated_at = now;
        let view = self
            .put_target(grant, Write::Update, ConfigOp::Update, t, now)
            .await?;
        Ok(RotatedSigningSecret {
            view,
            signing_secret: next,
        })
    }

    /// Deletes a target.
    pub async fn delete_target(&self, grant: &Grant<ConfigWrite>, id: TargetId) -> Result<()> {
        let audit = self.draft(
            grant,
            ConfigEntity::Target,
            ConfigOp::Delete,
            id.to_string(),
            self.clock.now(),
        );
        self.store
            .apply(ConfigChange::DeleteTarget(grant.project_id(), id), audit)
            .await?;
        Ok(())
    }

    /// Opens a target's secrets for a delivery: the one narrow way to the
    /// plaintext, for the relay's delivery worker, which holds the
    /// delivery grant ([`crate::access::Voter::dangerous_delivery_grant`]).
    /// Every call is audited (`SecretsOpened` in the project's chain, by
    /// the system); a worker caches the result per target version instead
    /// of calling this for every delivery.
    ///
    /// # Errors
    /// `Store(NotFound)` for a target not in the granted project;
    /// [`Error::Vault`] if a secret does not open (the audit event is not
    /// written then).
    pub async fn delivery_secrets(
        &self,
        grant: &Grant<crate::access::surface::Delivery>,
        id: TargetId,
    ) -> Result<DeliverySecrets> {
        let t = self.stored_target(grant.project_id(), id).await?;
        let auth = match &t.auth {
            StoredAuth::None => AuthInput::None,
            StoredAuth::Bearer { token } => {
                AuthInput::Bearer(self.open(&t, fields::BEARER_TOKEN, token)?)
            }
            StoredAuth::Basic { username, password } => AuthInput::Basic {
                username: username.clone(),
                password: self.open(&t, fields::BASIC_PASSWORD, password)?,
            },
        };
        let signing_secret = self.open(&t, fields::SIGNING_SECRET, &t.signing_secret)?;
        let now = self.clock.now();
        let retired_signing_secrets = t
            .retired_signing_secrets
            .iter()
            .filter(|r| r.until > now)
            .map(|r| {
                self.open(&t, &fields::retired_signing_secret(r.until), &r.secret)
                    .map(|s| (s, r.until))
            })
            .collect::<Result<Vec<_>>>()?;
        let audit = self.draft(
            grant,
            ConfigEntity::Target,
            ConfigOp::SecretsOpened,
            id.to_string(),
            now,
        );
        self.store.append(audit).await?;
        Ok(DeliverySecrets {
            target: t.id,
            version: t.version,
            url: t.url,
            auth,
            signing_secret,
            retired_signing_secrets,
        })
    }

    /// The stored version of a target the worker delivers to, opening
    /// nothing and auditing nothing: a worker compares it with the
    /// version of the [`DeliverySecrets`] it cached, and calls
    /// [`ConfigService::delivery_secrets`] only when it moved.
    ///
    /// # Errors
    /// `Store(NotFound)` for a target not in the granted project.
    pub async fn delivery_version(
        &self,
        grant: &Grant<crate::access::surface::Delivery>,
        id: TargetId,
    ) -> Result<u64> {
        Ok(self.stored_target(grant.project_id(), id).await?.version)
    }

    /// Reads one target, masked.
    pub async fn target(&self, grant: &Grant<ConfigRead>, id: TargetId) -> Result<TargetView> {
        let t = self.stored_target(grant.project_id(), id).await?;
        self.view(&t)
    }

    /// Reads the project's lines with endpoints and masked targets: the
    /// whole tree in one answer, which is bounded, since a tree holds at
    /// most [`MAX_TREE_ENTITIES`] lines, endpoints and targets.
    pub async fn lines(&self, grant: &Grant<ConfigRead>) -> Result<Vec<LineView>> {
        let tree = self.store.tree(grant.project_id()).await?;
        let mut out = Vec::with_capacity(tree.lines.len());
        for line in tree.lines {
            let endpoints = tree
                .endpoints
                .iter()
                .filter(|e| e.line == line.id)
                .cloned()
                .collect();
            let targets = tree
                .targets
                .iter()
                .filter(|t| t.line == line.id)
                .map(|t| self.view(t))
                .collect::<Result<_>>()?;
            out.push(LineView {
                line,
                endpoints,
                targets,
            });
        }
        Ok(out)
    }

    /// Exports the project's tree as JSON: ciphertext only, never plaintext.
    /// Bounded like [`ConfigService::lines`]; the export holds at most
    /// [`MAX_TREE_ENTITIES`] entities, so it imports again.
    pub async fn export(&self, grant: &Grant<ConfigRead>) -> Result<String> {
        let tree = self.store.tree(grant.project_id()).await?;
        export_json(tree)
    }

    /// Imports a tree exported by [`ConfigService::export`] into the
    /// granted project (same project id), replacing its name, lines,
    /// endpoints and targets. The project's slug, key policy, creation
    /// time and `api_keys_manage_keys` stay as they are (an editor may not
    /// change them). Validates everything first; on
    /// any error nothing is written.
    ///
    /// The import replaces the tree as it is at the moment of the write;
    /// what it copies from the stored project (slug, key policy, creation
    /// time) is read and written compare-and-swap on the project's
    /// version, so a policy change racing the import is never reverted:
    /// the import is refused with `Store(Conflict)` instead, nothing
    /// written (import again).
    pub async fn import(&self, grant: &Grant<ConfigWrite>, json: &str) -> Result<ProjectTree> {
        let mut tree = self.validate_import(json)?;
        if tree.project.id != grant.project_id() {
            return Err(ConfigError::Tree("export belongs to another project").into());
        }
        let current = self
            .store
            .project(grant.project_id())
            .await?
            .ok_or(StoreError::NotFound { kind: "project" })?;
        tree.project.slug = current.slug;
        tree.project.key_policy = current.key_policy;
        tree.project.created_at = current.created_at;
        tree.project.api_keys_manage_keys = current.api_keys_manage_keys;
        // What the store will hold after this write.
        tree.project.version = current.version + 1;
        let audit = self.draft(
            grant,
            ConfigEntity::Project,
            ConfigOp::Import,
            tree.project.id.to_string(),
            self.clock.now(),
        );
        let import = TreeImport {
            tree: tree.clone(),
            expect_version: Some(current.version),
            owner_if_new: None,
        };
        self.store.import_tree(import, audit).await?;
        Ok(tree)
    }

    /// Restores a whole project (slug and key policy included) from a
    /// backup, as the system, overwriting whatever the project holds now
    /// (no version check: a restore is meant to go back). There is no
    /// grant: restoring is an operator action outside any project, so only
    /// the backup job may call this. Same validation as
    /// [`ConfigService::import`]. A project that does not exist any more is
    /// recreated with `owner` as its owner (a project never exists without
    /// one); an existing project keeps its members and `owner` is unused.
    pub async fn dangerous_restore(&self, json: &str, owner: UserId) -> Result<ProjectTree> {
        let tree = self.validate_import(json)?;
        let audit = AuditDraft {
            project: Some(tree.project.id),
            at: self.clock.now(),
            actor: Actor::System,
            ip: None,
            subject: None,
            kind: EventKind::Config {
                entity: ConfigEntity::Project,
                op: ConfigOp::Import,
                id: tree.project.id.to_string(),
            },
        };
        let import = TreeImport {
            tree: tree.clone(),
            expect_version: None,
            owner_if_new: Some(owner),
        };
        self.store.import_tree(import, audit).await?;
        Ok(tree)
    }

    /// Parses and checks an export without writing: shape, version, names,
    /// URLs, references, unique ids, and that every ciphertext opens under
    /// its own project, target and field.
    pub fn validate_import(&self, json: &str) -> Result<ProjectTree> {
        if json.len() > MAX_IMPORT_BYTES {
            return Err(ConfigError::Tree("export larger than 16 MiB").into());
        }
        let env: ExportEnvelope =
            serde_json::from_str(json).map_err(|e| ConfigError::Json(json_error_position(&e)))?;
        if env.format != EXPORT_FORMAT {
            return Err(ConfigError::Json("not an echorelay config export".into()).into());
        }
        if env.version != EXPORT_VERSION {
            return Err(ConfigError::Version(env.version).into());
        }
        let tree = env.tree;
        if tree.lines.len() + tree.endpoints.len() + tree.targets.len() > MAX_IMPORT_ENTITIES {
            return Err(ConfigError::Tree("more than 10000 lines, endpoints and targets").into());
        }
        let pid = tree.project.id;
        check_name("project", &tree.project.name)?;
        tree.project
            .key_policy
            .validate()
            .map_err(ConfigError::from)?;
        let mut lines = HashSet::new();
        for l in &tree.lines {
            check_name("line", &l.name)?;
            if l.project != pid {
                return Err(ConfigError::Tree("line of another project").into());
            }
            if !lines.insert(l.id) {
                return Err(ConfigError::Tree("duplicate line id").into());
            }
        }
        let mut eps = HashSet::new();
        for e in &tree.endpoints {
            check_name("endpoint", &e.name)?;
            if e.project != pid || !lines.contains(&e.line) {
                return Err(ConfigError::Tree("endpoint refers to a line not in the tree").into());
            }
            if !eps.insert(e.id) {
                return Err(ConfigError::Tree("duplicate endpoint id").into());
            }
        }
        let mut tgts = HashSet::new();
        for t in &tree.targets {
            check_name("target", &t.name)?;
            check_url(&t.url)?;
            if t.project != pid || !lines.contains(&t.line) {
                return Err(ConfigError::Tree("target refers to a line not in the tree").into());
            }
            if !tgts.insert(t.id) {
                return Err(ConfigError::Tree("duplicate target id").into());
            }
            if let StoredAuth::Basic { username, .. } = &t.auth {
                check_username(username)?;
            }
            // Opening proves each ciphertext belongs to this very field, and
            // the plaintext must pass the same checks as on input.
            self.check_sealed(t)?;
        }
        Ok(tree)
    }
}

/// Serializes a tree in the export format.
pub fn export_json(tree: ProjectTree) -> Result<String> {
    let env = ExportEnvelope {
        format: EXPORT_FORMAT.into(),
        version: EXPORT_VERSION,
        tree,
    };
    serde_json::to_string_pretty(&env)
        .map_err(|_| Error::InvalidInput("config tree does not serialize"))
}

fn json_error_position(e: &serde_json::Error) -> String {
    // serde_json's messages can quote input (which may hold ciphertext or
    // names, never plaintext secrets); keep only the category and position.
    let cat = match e.classify() {
        serde_json::error::Category::Io => "io error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected or invalid field",
        serde_json::error::Category::Eof => "unexpected end of input",
    };
    format!("{cat} at line {} column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://example.com/hook").is_ok());
        assert!(check_url("http://127.0.0.1:8080").is_ok());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("https://").is_err());
        assert!(check_url("https://user:pw@host/").is_err());
        assert!(check_url("https://a b").is_err());
    }

    #[test]
    fn slugs_are_checked() {
        for ok in ["abc", "acme-prod", "a1-b2"] {
            assert!(Slug::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["ab", "1abc", "abc-", "a--b", "ABC", "a_b", &"a".repeat(64)] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
    }
}
