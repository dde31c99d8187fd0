//! Project API keys: format, hashing at rest, lifecycle and verification
//! (invariants S1, S2, S3).
//!
//! ## Format
//!
//! `er_live_` or `er_test_`, then 33 characters drawn uniformly from the 62
//! base62 characters by the OS CSPRNG (196 bits), then a 6-character base62
//! CRC32 of everything before it. [`parse_key`] rejects a typo or a made-up
//! key on the checksum alone, without touching a store.
//!
//! ## At rest
//!
//! Only `SHA-256(key)` ([`KeyHash`]) and a display hint (`er_live_…abcd`) are
//! stored. The plaintext leaves the library once, as a [`PlaintextKey`]: at
//! mint, at an operator rotation, or at the single reveal of an auto-rotated
//! successor (held until then only as vault ciphertext, S1).
//!
//! ## Lifecycle
//!
//! A key minted at `t` is due for auto-rotation at `t + cadence − overlap`.
//! Rotation at `r` mints a successor and gives the predecessor an expiry at
//! `max(t + cadence, r + overlap)` for auto-rotation (a late scheduler never
//! shortens the overlap) or `r + overlap` for an operator rotation. The
//! predecessor verifies as [`KeyPhase::Overlap`] until its expiry, then as
//! [`KeyPhase::Grace`] for `grace`, then never again. A key with no
//! successor does not expire by itself: a stalled scheduler is not an
//! outage. Revocation is immediate (S3): verification reads the store on
//! every call and keeps no cache.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use rand::distributions::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::access::surface::Keys;
use crate::access::{AccessDenied, Grant, Role};
use crate::audit::{Actor, AuditDraft, EventKind, KeyAction};
use crate::clock::Clock;
use crate::error::{Error, Result, StoreError};
use crate::ids::{KeyId, ProjectId};
use crate::ports::{ConfigStore, KeyStore};
use crate::vault::{Ciphertext, SecretContext, SecretVault};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Length of the random part.
pub const RANDOM_LEN: usize = 33;
/// Length of the checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Length of the prefix (`er_live_` / `er_test_`).
pub const PREFIX_LEN: usize = 8;
/// Total length of a key.
pub const KEY_LEN: usize = PREFIX_LEN + RANDOM_LEN + CHECKSUM_LEN;

/// Which environment a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Environment {
    /// Production traffic (`er_live_`).
    Live,
    /// Test traffic (`er_test_`).
    Test,
}

impl Environment {
    /// The key prefix for this environment.
    pub const fn prefix(self) -> &'static str {
        match self {
            Environment::Live => "er_live_",
            Environment::Test => "er_test_",
        }
    }
}

/// Why a key string was rejected by [`parse_key`]. Never contains the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFormatError {
    /// Does not start with `er_live_` or `er_test_`.
    #[error("API key must start with er_live_ or er_test_")]
    WrongPrefix,
    /// Has the wrong length, in bytes (a key is [`KEY_LEN`] ASCII
    /// characters, so any other byte length is wrong).
    #[error("API key must be {KEY_LEN} ASCII characters long, got {0} bytes")]
    WrongLength(usize),
    /// Holds a character outside base62 after the prefix.
    #[error("API key has a non-base62 character at position {0}")]
    BadCharacter(usize),
    /// The checksum does not match (a typo, or not a key we made).
    #[error("API key checksum does not match")]
    BadChecksum,
}

fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut v = crc32fast::hash(body) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(v % 62) as usize];
        v /= 62;
    }
    out
}

/// Checks a key's form and checksum without touching any store.
///
/// ```
/// use echorelay_core::keys::{parse_key, KeyFormatError};
/// assert_eq!(parse_key("er_live_nope"), Err(KeyFormatError::WrongLength(12)));
/// assert_eq!(parse_key("sk_live_x"), Err(KeyFormatError::WrongPrefix));
/// ```
pub fn parse_key(s: &str) -> Result<Environment, KeyFormatError> {
    let b = s.as_bytes();
    let env = if b.starts_with(b"er_live_") {
        Environment::Live
    } else if b.starts_with(b"er_test_") {
        Environment::Test
    } else {
        return Err(KeyFormatError::WrongPrefix);
    };
    if b.len() != KEY_LEN {
        return Err(KeyFormatError::WrongLength(b.len()));
    }
    if let Some(pos) = b[PREFIX_LEN..]
        .iter()
        .position(|c| !c.is_ascii_alphanumeric())
    {
        return Err(KeyFormatError::BadCharacter(PREFIX_LEN + pos));
    }
    let (body, sum) = b.split_at(KEY_LEN - CHECKSUM_LEN);
    if checksum(body) != sum {
        return Err(KeyFormatError::BadChecksum);
    }
    Ok(env)
}

/// An API key's plaintext. Zeroized on drop; `Debug` shows only the hint.
pub struct PlaintextKey {
    secret: SecretString,
    environment: Environment,
}

impl PlaintextKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate(environment: Environment) -> Self {
        let mut s = Zeroizing::new(String::with_capacity(KEY_LEN));
        s.push_str(environment.prefix());
        let mut rng = rand::rngs::OsRng;
        for _ in 0..RANDOM_LEN {
            s.push(char::from(rng.sample(Alphanumeric)));
        }
        let sum = checksum(s.as_bytes());
        s.extend(sum.iter().map(|&c| char::from(c)));
        Self {
            secret: SecretString::from(s.as_str()),
            environment,
        }
    }

    /// Parses (and checksums) a presented key.
    pub fn parse(s: &str) -> Result<Self, KeyFormatError> {
        let environment = parse_key(s)?;
        Ok(Self {
            secret: SecretString::from(s),
            environment,
        })
    }

    /// The key text. Hand it to the user once; never log it.
    pub fn expose_secret(&self) -> &str {
        self.secret.expose_secret()
    }

    /// The environment.
    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// SHA-256 of the key: the only form stored.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(self.expose_secret())
    }

    /// The display hint, e.g. `er_live_…abcd`.
    pub fn hint(&self) -> String {
        hint_of(self.expose_secret())
    }
}

fn hint_of(key: &str) -> String {
    let tail = key.get(key.len().saturating_sub(4)..).unwrap_or("");
    let prefix = key.get(..PREFIX_LEN).unwrap_or("");
    format!("{prefix}…{tail}")
}

impl fmt::Debug for PlaintextKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlaintextKey({}, <redacted>)", self.hint())
    }
}

/// SHA-256 of an API key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Hashes a key's text.
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", hex::encode(&self.0[..4]))
    }
}

impl Serialize for KeyHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for KeyHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut b = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut b).map_err(serde::de::Error::custom)?;
        Ok(Self(b))
    }
}

/// Why a lifecycle policy is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Cadence must be positive and at most ten years.
    #[error("cadence must be between 1 second and 3650 days")]
    Cadence,
    /// Overlap must be non-negative and shorter than the cadence.
    #[error("overlap must be at least 0 and shorter than the cadence")]
    Overlap,
    /// Grace must be non-negative and shorter than the cadence.
    #[error("grace must be at least 0 and shorter than the cadence")]
    Grace,
}

/// How a project's keys rotate. Defaults: 90-day cadence, 7-day overlap,
/// 24-hour grace. Deserializing validates, so a stored policy cannot be
/// out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPolicy")]
pub struct LifecyclePolicy {
    cadence_secs: i64,
    overlap_secs: i64,
    grace_secs: i64,
}

#[derive(Deserialize)]
struct RawPolicy {
    cadence_secs: i64,
    overlap_secs: i64,
    grace_secs: i64,
}

impl TryFrom<RawPolicy> for LifecyclePolicy {
    type Error = PolicyError;
    fn try_from(r: RawPolicy) -> Result<Self, PolicyError> {
        let p = Self {
            cadence_secs: r.cadence_secs,
            overlap_secs: r.overlap_secs,
            grace_secs: r.grace_secs,
        };
        p.validate()?;
        Ok(p)
    }
}

impl Default for LifecyclePolicy {
    fn default() -> Self {
        Self {
            cadence_secs: 90 * 86_400,
            overlap_secs: 7 * 86_400,
            grace_secs: 86_400,
        }
    }
}

impl LifecyclePolicy {
    /// A validated policy.
    ///
    /// ```
    /// use chrono::Duration;
    /// use echorelay_core::keys::{LifecyclePolicy, PolicyError};
    /// let p = LifecyclePolicy::new(Duration::days(30), Duration::days(3), Duration::hours(12)).unwrap();
    /// assert_eq!(p.overlap(), Duration::days(3));
    /// let bad = LifecyclePolicy::new(Duration::days(7), Duration::days(7), Duration::hours(1));
    /// assert_eq!(bad, Err(PolicyError::Overlap));
    /// ```
    pub fn new(cadence: Duration, overlap: Duration, grace: Duration) -> Result<Self, PolicyError> {
        let p = Self {
            cadence_secs: cadence.num_seconds(),
            overlap_secs: overlap.num_seconds(),
            grace_secs: grace.num_seconds(),
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks the rules (also run on deserialized policies).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.cadence_secs < 1 || self.cadence_secs > 3650 * 86_400 {
            return Err(PolicyError::Cadence);
        }
        if self.overlap_secs < 0 || self.overlap_secs >= self.cadence_secs {
            return Err(PolicyError::Overlap);
        }
        if self.grace_secs < 0 || self.grace_secs >= self.cadence_secs {
            return Err(PolicyError::Grace);
        }
        Ok(())
    }

    /// Time from mint to the key's scheduled expiry.
    pub fn cadence(&self) -> Duration {
        Duration::seconds(self.cadence_secs)
    }
    /// Time both keys verify after a rotation.
    pub fn overlap(&self) -> Duration {
        Duration::seconds(self.overlap_secs)
    }
    /// Time a superseded key still verifies after its expiry.
    pub fn grace(&self) -> Duration {
        Duration::seconds(self.grace_secs)
    }
}

/// What happened to a key that has a successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Supersession {
    /// The successor.
    pub successor: KeyId,
    /// When the rotation happened.
    pub rotated_at: DateTime<Utc>,
    /// End of the overlap: the key's expiry.
    pub expires_at: DateTime<Utc>,
    /// End of the grace: after this the key never verifies.
    pub grace_ends_at: DateTime<Utc>,
}

/// A successor's plaintext waiting for its single reveal (vault ciphertext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingReveal {
    /// The sealed key text.
    pub ciphertext: Ciphertext,
    /// Destroyed after this instant (the predecessor's grace end).
    pub until: DateTime<Utc>,
}

/// A stored key: never the plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Record id.
    pub id: KeyId,
    /// Owning project.
    pub project: ProjectId,
    /// Environment.
    pub environment: Environment,
    /// Role the key acts with.
    pub role: Role,
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// Display hint.
    pub hint: String,
    /// Optional label.
    pub label: String,
    /// Who minted it.
    pub created_by: Actor,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When auto-rotation becomes due.
    pub rotate_at: DateTime<Utc>,
    /// The key it replaced, if any.
    pub predecessor: Option<KeyId>,
    /// Set once a successor exists.
    pub superseded: Option<Supersession>,
    /// Set when revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// For an auto-rotated successor: its plaintext, sealed, until revealed.
    pub pending_reveal: Option<PendingReveal>,
    /// For an auto-rotated successor: the key that collected its plaintext
    /// by presenting itself ([`KeyService::collect_successor`]), if one
    /// did. Revoking that key revokes this one: whoever held the old key
    /// holds the new one.
    #[serde(default)]
    pub collected_by: Option<KeyId>,
}

/// The part of a [`KeyRecord`] that verification reads: small and `Copy`,
/// so a backend can serve the hot path without cloning the whole record
/// ([`KeyStore::key_status_by_hash`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyStatus {
    /// Record id.
    pub id: KeyId,
    /// Project.
    pub project: ProjectId,
    /// Environment.
    pub environment: Environment,
    /// Role.
    pub role: Role,
    /// When auto-rotation is due.
    pub rotate_at: DateTime<Utc>,
    /// Set once a successor exists.
    pub superseded: Option<Supersession>,
    /// Whether the key is revoked.
    pub revoked: bool,
}

impl KeyStatus {
    /// The key's phase at `now`, or `None` if it must be rejected.
    pub fn phase(&self, now: DateTime<Utc>) -> Option<KeyPhase> {
        if self.revoked {
            return None;
        }
        match self.superseded {
            None => Some(KeyPhase::Active {
                rotate_at: self.rotate_at,
            }),
            Some(s) if now < s.expires_at => Some(KeyPhase::Overlap {
                successor: s.successor,
                expires_at: s.expires_at,
            }),
            Some(s) if now < s.grace_ends_at => Some(KeyPhase::Grace {
                successor: s.successor,
                until: s.grace_ends_at,
            }),
            Some(_) => None,
        }
    }
}

/// How a verified key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum KeyPhase {
    /// Current key.
    Active {
        /// When auto-rotation is due.
        rotate_at: DateTime<Utc>,
    },
    /// A successor exists; this key is valid until `expires_at`.
    Overlap {
        /// The successor to switch to.
        successor: KeyId,
        /// This key's expiry.
        expires_at: DateTime<Utc>,
    },
    /// Past expiry, still accepted until `until`.
    Grace {
        /// The successor to switch to.
        successor: KeyId,
        /// The first instant this key is rejected.
        until: DateTime<Utc>,
    },
}

impl KeyRecord {
    /// The key's phase at `now`, or `None` if it must be rejected.
    pub fn phase(&self, now: DateTime<Utc>) -> Option<KeyPhase> {
        self.status().phase(now)
    }

    /// The fields verification needs.
    pub fn status(&self) -> KeyStatus {
        KeyStatus {
            id: self.id,
            project: self.project,
            environment: self.environment,
            role: self.role,
            rotate_at: self.rotate_at,
            superseded: self.superseded,
            revoked: self.revoked_at.is_some(),
        }
    }

    /// Whether this key may be rotated (not revoked, no successor yet).
    pub fn is_current(&self) -> bool {
        self.revoked_at.is_none() && self.superseded.is_none()
    }
}

/// What a successful verification tells the caller.
///
/// Only [`KeyService::verify`] makes one (the fields are private and it does
/// not deserialize), so a [`crate::access::Principal::ApiKey`] always stands
/// for a key that really verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedKey {
    pub(crate) project: ProjectId,
    pub(crate) key_id: KeyId,
    pub(crate) environment: Environment,
    pub(crate) role: Role,
    pub(crate) phase: KeyPhase,
    pub(crate) superseded: Option<Supersession>,
}

impl VerifiedKey {
    /// The key's project.
    pub fn project(&self) -> ProjectId {
        self.project
    }
    /// The key's record id.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
    /// Environment.
    pub fn environment(&self) -> Environment {
        self.environment
    }
    /// The role the key acts with.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Active, in overlap (switch to the successor) or in grace.
    pub fn phase(&self) -> KeyPhase {
        self.phase
    }
    /// Once the key has a successor: the first instant it is rejected
    /// (the end of its grace), what a client must have switched by (the
    /// HTTP `Sunset` header, RFC 8594). `None` while it has none: a key
    /// without a successor never expires.
    pub fn sunset(&self) -> Option<DateTime<Utc>> {
        self.superseded.map(|s| s.grace_ends_at)
    }
    /// Once the key has a successor: when it was rotated, from which on
    /// clients should switch (the HTTP `Deprecation` header, RFC 9745).
    pub fn deprecated_since(&self) -> Option<DateTime<Utc>> {
        self.superseded.map(|s| s.rotated_at)
    }
}

/// A key as listed (no hash, no plaintext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyView {
    /// Record id.
    pub id: KeyId,
    /// Environment.
    pub environment: Environment,
    /// Role.
    pub role: Role,
    /// Display hint.
    pub hint: String,
    /// Label.
    pub label: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Auto-rotation due.
    pub rotate_at: DateTime<Utc>,
    /// Predecessor.
    pub predecessor: Option<KeyId>,
    /// Supersession, if rotated.
    pub superseded: Option<Supersession>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Whether an auto-rotated plaintext waits for its reveal.
    pub reveal_pending: bool,
}

impl From<&KeyRecord> for KeyView {
    fn from(r: &KeyRecord) -> Self {
        Self {
            id: r.id,
            environment: r.environment,
            role: r.role,
            hint: r.hint.clone(),
            label: r.label.clone(),
            created_at: r.created_at,
            rotate_at: r.rotate_at,
            predecessor: r.predecessor,
            superseded: r.superseded,
            revoked_at: r.revoked_at,
            reveal_pending: r.pending_reveal.is_some(),
        }
    }
}

/// A newly minted key: the listing view plus the plaintext, shown once.
#[derive(Debug)]
pub struct MintedKey {
    /// What listings will show.
    pub view: KeyView,
    /// The key text. This is the only time it leaves the library.
    pub plaintext: PlaintextKey,
}

/// What to mint.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// Environment.
    pub environment: Environment,
    /// Role; at most the minter's own role.
    pub role: Role,
    /// Label shown in listings (at most 100 characters).
    pub label: String,
}

/// Options of an operator rotation.
#[derive(Debug, Clone, Copy, Default)]
pub struct RotateOptions {
    /// Overlap; the project policy's when `None`. Zero ends the old key's
    /// validity at once (it then enters grace).
    pub overlap: Option<Duration>,
    /// Grace; the project policy's when `None`. With zero overlap and zero
    /// grace the old key stops at once.
    pub grace: Option<Duration>,
}

/// What one auto-rotation pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Successors minted by this pass.
    pub rotated: usize,
    /// Keys another process rotated first (no successor made here).
    pub lost_races: usize,
    /// Unrevealed successor plaintexts destroyed.
    pub reveals_expired: usize,
    /// Keys this pass could not handle (backend or vault errors); they are
    /// retried by the next pass and logged with `tracing`.
    pub errors: usize,
}

/// Where a new key record comes from: a mint request or a predecessor.
struct Origin {
    project: ProjectId,
    role: Role,
    label: String,
    predecessor: Option<KeyId>,
}

impl Origin {
    fn successor_of(old: &KeyRecord) -> Self {
        Self {
            project: old.project,
            role: old.role,
            label: old.label.clone(),
            predecessor: Some(old.id),
        }
    }
}

fn nothing_to_reveal() -> Error {
    StoreError::NotFound {
        kind: "pending reveal",
    }
    .into()
}

/// The keys that hang off `root` among a project's keys, transitively:
/// keys it minted or rotated in (`created_by` is the key), its
/// auto-rotated successor while the plaintext waits uncollected, and a
/// successor collected by presenting it (`collected_by`): whoever held
/// the key holds that one too.
fn dependents(all: &[KeyRecord], root: KeyId) -> Vec<&KeyRecord> {
    let mut out: Vec<&KeyRecord> = Vec::new();
    let mut frontier = vec![root];
    while let Some(k) = frontier.pop() {
        for r in all {
            let hangs = r.created_by == Actor::ApiKey(k)
                || (r.predecessor == Some(k)
                    && (r.pending_reveal.is_some() || r.collected_by == Some(k)));
            if hangs && r.id != root && !out.iter().any(|x| x.id == r.id) {
                out.push(r);
                frontier.push(r.id);
            }
        }
    }
    out
}

/// Keys the auto-rotation pass loads at a time.
const ATTENTION_PAGE: usize = 500;

pub(crate) const REVEAL_FIELD: &str = "api_key.pending_reveal";

pub(crate) fn reveal_context(project: &ProjectId, key: &KeyId) -> (String, String) {
    (project.to_string(), key.to_string())
}

/// The key service: mint, verify, rotate, revoke, reveal and the
/// auto-rotation pass.
///
/// `K` stores keys, `C` projects (for their key policy); with one backend
/// for both, `C` defaults to `K` and [`KeyService::new`] takes it once.
#[derive(Debug, Clone)]
pub struct KeyService<K, V, C = K> {
    keys: K,
    config: C,
    vault: V,
    clock: Arc<dyn Clock>,
}

impl<K: KeyStore + ConfigStore + Clone, V: SecretVault> KeyService<K, V> {
    /// A service over `store` (keys and projects), sealing pending reveals
    /// with `vault`.
    pub fn new(store: K, vault: V, clock: Arc<dyn Clock>) -> Self {
        Self::from_parts(store.clone(), store, vault, clock)
    }
}

impl<K: KeyStore, V: SecretVault, C: ConfigStore> KeyService<K, V, C> {
    /// A service over separate ports: keys in `keys`, projects in `config`.
    pub fn from_parts(keys: K, config: C, vault: V, clock: Arc<dyn Clock>) -> Self {
        Self {
            keys,
            config,
            vault,
            clock,
        }
    }

    fn draft(
        &self,
        grant_actor: Actor,
        ip: Option<std::net::IpAddr>,
        rec: &KeyRecord,
        action: KeyAction,
        successor: Option<KeyId>,
        at: DateTime<Utc>,
    ) -> AuditDraft {
        AuditDraft {
            project: Some(rec.project),
            at,
            actor: grant_actor,
            ip,
            subject: None,
            kind: EventKind::Key {
                action,
                key_id: rec.id,
                environment: rec.environment,
                role: rec.role,
                successor,
            },
        }
    }

    fn new_record(
        origin: Origin,
        plaintext: &PlaintextKey,
        created_by: Actor,
        now: DateTime<Utc>,
        policy: &LifecyclePolicy,
    ) -> KeyRecord {
        KeyRecord {
            id: KeyId::random(),
            project: origin.project,
            environment: plaintext.environment(),
            role: origin.role,
            hash: plaintext.hash(),
            hint: plaintext.hint(),
            label: origin.label,
            created_by,
            created_at: now,
            rotate_at: now + policy.cadence() - policy.overlap(),
            predecessor: origin.predecessor,
            superseded: None,
            revoked_at: None,
            pending_reveal: None,
            collected_by: None,
        }
    }

    async fn policy(&self, project: ProjectId) -> Result<LifecyclePolicy> {
        let p = self
            .config
            .project(project)
            .await?
            .ok_or(StoreError::NotFound { kind: "project" })?;
        Ok(p.key_policy)
    }

    /// Mints a key. The plaintext is in the result and nowhere else.
    ///
    /// Hands out a credential, so a user must have stepped up recently
    /// (as for [`KeyService::reveal`]); API keys pass. The store mints for
    /// a key only while that key is not revoked ([`KeyStore::insert_key`]).
    ///
    /// # Errors
    /// [`Error::ReauthenticationRequired`] for a user without a recent
    /// step-up; [`Error::Denied`] if `req.role` is above the minter's role;
    /// [`Error::InvalidInput`] for an over-long label; `Store(Conflict)`
    /// if the minting key was revoked meanwhile.
    pub async fn mint(&self, grant: &Grant<Keys>, req: MintRequest) -> Result<MintedKey> {
        grant.require_step_up()?;
        if req.role > grant.role() {
            return Err(AccessDenied.into());
        }
        if req.label.chars().count() > 100 || req.label.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "key label must be at most 100 characters without control characters",
            ));
        }
        let now = self.clock.now();
        // The stored policy, not the grant's snapshot of the project.
        let policy = self.policy(grant.project_id()).await?;
        let plaintext = PlaintextKey::generate(req.environment);
        let origin = Origin {
            project: grant.project_id(),
            role: req.role,
            label: req.label,
            predecessor: None,
        };
        let rec = Self::new_record(origin, &plaintext, grant.actor(), now, &policy);
        let audit = self.draft(grant.actor(), grant.ip(), &rec, KeyAction::Mint, None, now);
        let view = KeyView::from(&rec);
        self.keys.insert_key(rec, audit).await?;
        Ok(MintedKey { view, plaintext })
    }

    /// Verifies a presented key. Every failure is the same opaque
    /// [`Error::Unauthenticated`]; a malformed key is rejected before any
    /// store access.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for any rejected key;
    /// [`Error::Unavailable`] when the store cannot be reached (never a
    /// valid key).
    pub async fn verify(&self, presented: &str) -> Result<VerifiedKey> {
        self.verify_inner(presented)
            .await
            .map_err(Error::into_auth_failure)
    }

    async fn verify_inner(&self, presented: &str) -> Result<VerifiedKey> {
        if parse_key(presented).is_err() {
            return Err(Error::Unauthenticated);
        }
        let hash = KeyHash::of(presented);
        let rec = self
            .keys
            .key_status_by_hash(&hash)
            .await?
            .ok_or(Error::Unauthenticated)?;
        let phase = rec.phase(self.clock.now()).ok_or(Error::Unauthenticated)?;
        Ok(VerifiedKey {
            project: rec.project,
            key_id: rec.id,
            environment: rec.environment,
            role: rec.role,
            phase,
            superseded: rec.superseded,
        })
    }

    async fn project_key(&self, project: ProjectId, id: KeyId) -> Result<KeyRecord> {
        match self.keys.key_by_id(id).await? {
            Some(r) if r.project == project => Ok(r),
            // Another project's key looks exactly like a missing one.
            _ => Err(StoreError::NotFound { kind: "key" }.into()),
        }
    }

    /// One page of the project's keys: ids after `after`, ascending by
    /// id, at most `limit` (1 to [`MAX_LIST_PAGE`](crate::ports::MAX_LIST_PAGE)).
    /// A page shorter than `limit` is the last; the next page starts after
    /// the last id of a full one.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a `limit` outside 1 to 500 (never
    /// clamped).
    pub async fn list_page(
        &self,
        grant: &Grant<Keys>,
        after: Option<KeyId>,
        limit: usize,
    ) -> Result<Vec<KeyView>> {
        let limit = crate::ports::list_limit(limit)?;
        let keys = self
            .keys
            .keys_page(grant.project_id(), after, limit)
            .await?;
        Ok(keys.iter().map(KeyView::from).collect())
    }

    /// Operator rotation: mints a successor (plaintext returned here, once)
    /// and starts the old key's overlap.
    ///
    /// Hands out a credential, so a user must have stepped up recently;
    /// API keys pass.
    ///
    /// # Errors
    /// [`Error::ReauthenticationRequired`] for a user without a recent
    /// step-up; `Store(NotFound)` for a key not in this project;
    /// `Store(Conflict)` if the key is revoked or already has a successor,
    /// or the rotating key was revoked meanwhile.
    pub async fn rotate(
        &self,
        grant: &Grant<Keys>,
        id: KeyId,
        opts: RotateOptions,
    ) -> Result<MintedKey> {
        grant.require_step_up()?;
        let old = self.project_key(grant.project_id(), id).await?;
        if !old.is_current() {
            return Err(StoreError::Conflict {
                reason: "key is revoked or already rotated",
            }
            .into());
        }
        // The stored policy, not the grant's snapshot of the project.
        let policy = self.policy(grant.project_id()).await?;
        let overlap = opts.overlap.unwrap_or_else(|| policy.overlap());
        let grace = opts.grace.unwrap_or_else(|| policy.grace());
        if overlap < Duration::zero() || overlap >= policy.cadence() {
            return Err(PolicyError::Overlap.into());
        }
        if grace < Duration::zero() || grace >= policy.cadence() {
            return Err(PolicyError::Grace.into());
        }
        let now = self.clock.now();
        let plaintext = PlaintextKey::generate(old.environment);
        let succ = Self::new_record(
            Origin::successor_of(&old),
            &plaintext,
            grant.actor(),
            now,
            &policy,
        );
        let sup = Supersession {
            successor: succ.id,
            rotated_at: now,
            expires_at: now + overlap,
            grace_ends_at: now + overlap + grace,
        };
        let audit = self.draft(
            grant.actor(),
            grant.ip(),
            &old,
            KeyAction::Rotate,
            Some(succ.id),
            now,
        );
        let view = KeyView::from(&succ);
        self.keys.rotate_key(old.id, sup, succ, audit).await?;
        Ok(MintedKey { view, plaintext })
    }

    /// Hard revoke: from the moment this returns, no verifier sharing the
    /// store accepts the key (S3). Also destroys a pending reveal.
    ///
    /// What hangs off the key goes with it, revoked right after it (each
    /// atomically with its own audit event), transitively: every key it
    /// minted or rotated in (when the project lets keys manage keys), its
    /// auto-rotated successor if that was not collected yet, and a
    /// successor collected by presenting it ([`KeyRecord::collected_by`]:
    /// whoever held the revoked key holds that one, so a leaked key's
    /// holder keeps nothing by collecting first). A successor revealed to
    /// an operator, or made by an operator's rotation, stays: it is its
    /// operator's credential; revoke it by its own id.
    ///
    /// Nothing escapes the cascade by racing it: the store mints, rotates
    /// and collects on behalf of a key only while that key is not revoked,
    /// serialized with its revocation ([`KeyStore::insert_key`],
    /// [`KeyStore::rotate_key`], [`KeyStore::take_pending_reveal`]). So a
    /// key made by a revoked key committed before that revocation did, and
    /// the cascade rescans after each round of revocations until a scan
    /// finds nothing new: the last scan sees every key made by a key it
    /// lists as revoked.
    ///
    /// # Errors
    /// `Store(NotFound)` for a key not in this project; `Store(Conflict)`
    /// if it was already revoked (what hangs off it is revoked anyway, so
    /// a retry after a partial failure completes the cascade).
    pub async fn revoke(&self, grant: &Grant<Keys>, id: KeyId) -> Result<()> {
        let rec = self.project_key(grant.project_id(), id).await?;
        let now = self.clock.now();
        // Also when already revoked: the store answers `Conflict` only once
        // the revocation is visible everywhere (a retry after a failure
        // that followed the commit waits like the first attempt).
        let mut retry = rec.revoked_at.is_some();
        let audit = self.draft(
            grant.actor(),
            grant.ip(),
            &rec,
            KeyAction::Revoke,
            None,
            now,
        );
        let first = self
            .keys
            .revoke_key(id, now, audit)
            .await
            .map_err(Error::from);
        loop {
            let all = self.keys.keys_of_project(grant.project_id()).await?;
            let mut revoked_now = 0usize;
            for dependent in dependents(&all, id) {
                if dependent.revoked_at.is_some() {
                    // A retry confirms what an earlier attempt revoked
                    // (the store waits for its caches, then refuses).
                    if retry {
                        let audit = self.draft(
                            grant.actor(),
                            grant.ip(),
                            dependent,
                            KeyAction::Revoke,
                            None,
                            now,
                        );
                        match self.keys.revoke_key(dependent.id, now, audit).await {
                            // Already revoked: nothing new for the rescan.
                            Ok(()) | Err(StoreError::Conflict { .. }) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    continue;
                }
                let audit = self.draft(
                    grant.actor(),
                    grant.ip(),
                    dependent,
                    KeyAction::Revoke,
                    None,
                    now,
                );
                match self.keys.revoke_key(dependent.id, now, audit).await {
                    Ok(()) => revoked_now += 1,
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            retry = false;
            if revoked_now == 0 {
                return first;
            }
        }
    }

    /// Reveals an auto-rotated successor's plaintext, exactly once. The
    /// sealed copy is destroyed in the same step.
    ///
    /// # Errors
    /// `Store(NotFound)` if there is nothing (any longer) to reveal.
    pub async fn reveal(&self, grant: &Grant<Keys>, id: KeyId) -> Result<PlaintextKey> {
        grant.require_step_up()?;
        let rec = self.project_key(grant.project_id(), id).await?;
        self.take_reveal(&rec, grant.actor(), None, grant.ip())
            .await
    }

    /// Rotation without a human (S2 for machine clients): a key in its
    /// overlap or grace presents itself and receives its auto-rotated
    /// successor's plaintext, exactly once, whatever its role. The
    /// successor then verifies as usual; the presented key keeps working
    /// until its grace ends. Audited as a reveal by the presenting key.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] / [`Error::Unavailable`] as
    /// [`KeyService::verify`] for the presented key; `Store(NotFound)` when
    /// there is nothing to collect: the key has no successor yet, it was
    /// collected or revealed already, or an operator rotated it (the
    /// operator holds that successor).
    pub async fn collect_successor(
        &self,
        presented: &str,
        ip: Option<std::net::IpAddr>,
    ) -> Result<PlaintextKey> {
        let me = self.verify(presented).await?;
        let successor = match me.phase {
            KeyPhase::Overlap { successor, .. } | KeyPhase::Grace { successor, .. } => successor,
            KeyPhase::Active { .. } => return Err(nothing_to_reveal()),
        };
        let rec = self.project_key(me.project, successor).await?;
        self.take_reveal(&rec, Actor::ApiKey(me.key_id), Some(me.key_id), ip)
            .await
    }

    /// Opens and parses the pending reveal before destroying the sealed
    /// copy (a vault failure cannot lose the key), then takes it: of
    /// concurrent callers exactly one gets it. `collector` is the key
    /// presenting itself to collect its successor, if that is who takes it.
    async fn take_reveal(
        &self,
        rec: &KeyRecord,
        actor: Actor,
        collector: Option<KeyId>,
        ip: Option<std::net::IpAddr>,
    ) -> Result<PlaintextKey> {
        let now = self.clock.now();
        let pending = match &rec.pending_reveal {
            Some(p) if p.until > now && rec.revoked_at.is_none() => p,
            _ => return Err(nothing_to_reveal()),
        };
        let (p, r) = reveal_context(&rec.project, &rec.id);
        let ctx = SecretContext {
            project: &p,
            record: &r,
            field: REVEAL_FIELD,
        };
        let text = self.vault.open_string(&pending.ciphertext, &ctx)?;
        let key = PlaintextKey::parse(text.expose_secret())?;
        let audit = self.draft(actor, ip, rec, KeyAction::Reveal, None, now);
        // Exactly one caller takes the sealed copy. It may differ from the
        // one opened above (a rewrap pass re-sealed it meanwhile), but a
        // record has one successor key: what we opened is its plaintext.
        // A collector revoked meanwhile: `Store(Conflict)`, nothing taken.
        match self
            .keys
            .take_pending_reveal(rec.id, collector, audit)
            .await?
        {
            Some(_) => Ok(key),
            None => Err(nothing_to_reveal()),
        }
    }

    /// The auto-rotation pass: rotates every key whose rotation is due and
    /// destroys expired pending reveals. Idempotent: running it twice, or
    /// from many processes at once, makes exactly one successor per key (the
    /// store's rotation is conditional on the key still being current).
    ///
    /// A failure on one key (backend, vault) does not stop the pass: it is
    /// counted in [`RotationReport::errors`], logged, and retried next time.
    pub async fn rotate_due(&self) -> Result<RotationReport> {
        let now = self.clock.now();
        let mut report = RotationReport::default();
        let mut policies: std::collections::HashMap<ProjectId, LifecyclePolicy> =
            Default::default();
        let mut after = None;
        loop {
            let page = self
                .keys
                .keys_needing_attention(now, after, ATTENTION_PAGE)
                .await?;
            for old in &page {
                if let Err(e) = self.attend(old, now, &mut policies, &mut report).await {
                    tracing::warn!(key = %old.id, error = %e, "auto-rotation pass failed for a key");
                    report.errors += 1;
                }
            }
            after = page.last().map(|k| k.id);
            if page.len() < ATTENTION_PAGE {
                return Ok(report);
            }
        }
    }

    async fn attend(
        &self,
        old: &KeyRecord,
        now: DateTime<Utc>,
        policies: &mut std::collections::HashMap<ProjectId, LifecyclePolicy>,
        report: &mut RotationReport,
    ) -> Result<()> {
        if let Some(p) = &old.pending_reveal
            && p.until <= now
        {
            let audit = self.draft(
                Actor::System,
                None,
                old,
                KeyAction::RevealExpired,
                None,
                now,
            );
            if self
                .keys
                .take_pending_reveal(old.id, None, audit)
                .await?
                .is_some()
            {
                report.reveals_expired += 1;
            }
        }
        if !(old.is_current() && old.rotate_at <= now) {
            return Ok(());
        }
        let policy = match policies.get(&old.project) {
            Some(p) => *p,
            None => {
                let p = self.policy(old.project).await?;
                policies.insert(old.project, p);
                p
            }
        };
        let plaintext = PlaintextKey::generate(old.environment);
        let mut succ = Self::new_record(
            Origin::successor_of(old),
            &plaintext,
            Actor::System,
            now,
            &policy,
        );
        // A late pass never shortens the overlap.
        let expires_at = (old.created_at + policy.cadence()).max(now + policy.overlap());
        let sup = Supersession {
            successor: succ.id,
            rotated_at: now,
            expires_at,
            grace_ends_at: expires_at + policy.grace(),
        };
        let (p, r) = reveal_context(&succ.project, &succ.id);
        let ctx = SecretContext {
            project: &p,
            record: &r,
            field: REVEAL_FIELD,
        };
        succ.pending_reveal = Some(PendingReveal {
            ciphertext: self.vault.seal_str(plaintext.expose_secret(), &ctx)?,
            until: sup.grace_ends_at,
        });
        let audit = self.draft(
            Actor::System,
            None,
            old,
            KeyAction::AutoRotate,
            Some(succ.id),
            now,
        );
        match self.keys.rotate_key(old.id, sup, succ, audit).await {
            Ok(()) => report.rotated += 1,
            Err(StoreError::Conflict { .. }) => report.lost_races += 1,
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_parse_and_have_the_documented_shape() {
        for env in [Environment::Live, Environment::Test] {
            let k = PlaintextKey::generate(env);
            let s = k.expose_secret();
            assert_eq!(s.len(), KEY_LEN);
            assert!(s.starts_with(env.prefix()));
            assert_eq!(parse_key(s), Ok(env));
            assert!(!format!("{k:?}").contains(&s[PREFIX_LEN..PREFIX_LEN + 10]));
        }
    }

    #[test]
    fn parser_names_what_is_wrong() {
        let k = PlaintextKey::generate(Environment::Live);
        let s = k.expose_secret().to_owned();
        assert_eq!(
            parse_key(&s.replace("er_live_", "er_prod_")),
            Err(KeyFormatError::WrongPrefix)
        );
        assert_eq!(
            parse_key(&s[..KEY_LEN - 1]),
            Err(KeyFormatError::WrongLength(KEY_LEN - 1))
        );
        let mut bad = s.clone().into_bytes();
        bad[10] = b'-';
        assert_eq!(
            parse_key(std::str::from_utf8(&bad).unwrap()),
            Err(KeyFormatError::BadCharacter(10))
        );
        let mut typo = s.into_bytes();
        typo[12] = if typo[12] == b'a' { b'b' } else { b'a' };
        assert_eq!(
            parse_key(std::str::from_utf8(&typo).unwrap()),
            Err(KeyFormatError::BadChecksum)
        );
        assert_eq!(parse_key(""), Err(KeyFormatError::WrongPrefix));
        assert!(parse_key("er_live_é").is_err());
    }

    #[test]
    fn default_policy_is_the_published_one() {
        let p = LifecyclePolicy::default();
        assert_eq!(p.cadence(), Duration::days(90));
        assert_eq!(p.overlap(), Duration::days(7));
        assert_eq!(p.grace(), Duration::hours(24));
        assert!(p.validate().is_ok());
        assert_eq!(
            LifecyclePolicy::new(Duration::zero(), Duration::zero(), Duration::zero()),
            Err(PolicyError::Cadence)
        );
        assert_eq!(
            LifecyclePolicy::new(Duration::days(1), Duration::seconds(-1), Duration::zero()),
            Err(PolicyError::Overlap)
        );
        assert_eq!(
            LifecyclePolicy::new(Duration::days(1), Duration::zero(), Duration::days(2)),
            Err(PolicyError::Grace)
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,60}") {
            let _ = parse_key(&s);
        }

        #[test]
        fn any_single_character_change_is_rejected(pos in PREFIX_LEN..KEY_LEN, c in "[0-9A-Za-z]") {
            let k = PlaintextKey::generate(Environment::Test);
            let mut b = k.expose_secret().as_bytes().to_vec();
            let c = c.as_bytes()[0];
            prop_assume!(b[pos] != c);
            b[pos] = c;
            prop_assert!(parse_key(std::str::from_utf8(&b).unwrap()).is_err());
        }
    }
}
