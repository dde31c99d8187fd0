//! The append-only, tamper-evident audit log (invariant S11).
//!
//! Every event belongs to one *chain*: a project's chain, or the global chain
//! for events about no project (account events). Within a chain, events carry
//! a sequence number starting at 1 and a SHA-256 hash over the previous
//! event's hash and this event's canonical JSON, so any edit, reorder,
//! insertion or deletion breaks [`verify_chain`] at a named link. Deleting the
//! newest events is caught by checking against an anchored [`ChainHead`]
//! (kept, for example, in every backup).
//!
//! For keys, config and memberships, stores never take an event alone for
//! a mutation: every mutating port method takes the mutation *and* its
//! [`AuditDraft`] and writes both in one atomic step, calling [`seal`] with
//! the chain's current head. Account and session events are the exception:
//! the account service appends them through [`crate::ports::AuditSink`]
//! right after the change, in their own step (sessions may live in another
//! backend than the log), so a crash in between can lose such an event but
//! never invent one. The log's port ([`crate::ports::AuditLog`]) has no
//! update or delete.
//!
//! Events never carry a secret value: the kinds below have no field that
//! could hold one.

use std::fmt;
use std::net::IpAddr;

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::access::Role;
use crate::ids::{EventId, KeyId, ProjectId, UserId};
use crate::keys::Environment;
use crate::vault::{Keyring, VaultKeyId};

/// Who did it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Actor {
    /// A signed-in user.
    User(UserId),
    /// An API key (by record id, never the key).
    ApiKey(KeyId),
    /// echorelay itself (scheduled work such as auto-rotation).
    System,
}

/// Which kind of configuration entity changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ConfigEntity {
    /// A project (creation, policy change, import).
    Project,
    /// A line.
    Line,
    /// An inbound endpoint.
    Endpoint,
    /// An outbound target.
    Target,
}

/// What happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ConfigOp {
    /// Created.
    Create,
    /// Updated.
    Update,
    /// Deleted.
    Delete,
    /// Replaced whole from an import.
    Import,
    /// Its secrets were opened for a delivery (the delivery capability).
    SecretsOpened,
}

/// A key lifecycle step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum KeyAction {
    /// A key was minted.
    Mint,
    /// An operator rotated a key.
    Rotate,
    /// The scheduler rotated a key.
    AutoRotate,
    /// A key was revoked.
    Revoke,
    /// An auto-rotated successor's plaintext was revealed (once).
    Reveal,
    /// An unrevealed successor's plaintext was destroyed at the end of its
    /// predecessor's grace.
    RevealExpired,
}

/// A billing event kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BillingKind {
    /// Credits bought.
    CreditPurchase,
    /// Money returned.
    Refund,
    /// A manual balance adjustment (may be negative).
    BalanceAdjustment,
}

/// An ISO 4217 currency code: three ASCII uppercase letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a three-letter uppercase code such as `EUR`.
    pub fn parse(s: &str) -> Result<Self, crate::Error> {
        match s.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(crate::Error::InvalidInput(
                "currency must be three uppercase letters (ISO 4217)",
            )),
        }
    }
    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Currency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::ids::string_schema(
            "An ISO 4217 currency code, e.g. `EUR`".to_owned(),
            Some("^[A-Z]{3}$".to_owned()),
        )
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Currency {}

impl TryFrom<String> for Currency {
    type Error = crate::Error;
    fn try_from(s: String) -> Result<Self, crate::Error> {
        Self::parse(&s)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

/// What an event records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventKind {
    /// A configuration mutation.
    Config {
        /// Entity kind.
        entity: ConfigEntity,
        /// Operation.
        op: ConfigOp,
        /// The entity's id.
        id: String,
    },
    /// A key lifecycle event.
    Key {
        /// The step.
        action: KeyAction,
        /// The key concerned.
        key_id: KeyId,
        /// Its environment.
        environment: Environment,
        /// Its role.
        role: Role,
        /// The successor, for rotations.
        successor: Option<KeyId>,
    },
    /// A billing event.
    Billing {
        /// Kind.
        billing: BillingKind,
        /// Amount in minor units (cents); negative for debits.
        amount_minor: i64,
        /// Currency.
        currency: Currency,
        /// The payment provider's reference, if any.
        reference: Option<String>,
    },
    /// An account security event (login, second factor, devices,
    /// sessions). Recorded in the global chain with the account as subject.
    Account {
        /// What happened.
        action: crate::account::AccountAction,
        /// Why a login step failed (never shown to the caller).
        failure: Option<crate::account::LoginFailure>,
    },
    /// A membership change.
    Membership {
        /// The member.
        user: UserId,
        /// The new role, or `None` when removed.
        role: Option<Role>,
    },
    /// A sealed value was moved to the current SECRET_KEY (the rewrap
    /// pass); the value itself did not change.
    Rewrap {
        /// What kind of record.
        sealed: crate::rewrap::SealedKind,
        /// The record's id (target, user or key id).
        id: String,
    },
}

/// An event before it joins a chain: what a mutation hands the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDraft {
    /// The chain: a project, or `None` for the global chain.
    pub project: Option<ProjectId>,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: Actor,
    /// From where.
    pub ip: Option<IpAddr>,
    /// The user the event is about, if not the actor (GDPR export).
    pub subject: Option<UserId>,
    /// What.
    pub kind: EventKind,
}

/// A 32-byte SHA-256 value, shown as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Hash32(pub [u8; 32]);

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for Hash32 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Hash32 {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::ids::string_schema(
            "A SHA-256 or HMAC-SHA256 value: 64 lowercase hex digits".to_owned(),
            Some("^[0-9a-f]{64}$".to_owned()),
        )
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Hash32 {}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut b = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut b).map_err(serde::de::Error::custom)?;
        Ok(Self(b))
    }
}

/// A stored audit event: a draft sealed into its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// Unique id.
    pub id: EventId,
    /// Position in its chain, from 1.
    pub seq: u64,
    /// The chain: a project, or `None` for the global chain.
    pub project: Option<ProjectId>,
    /// When (UTC).
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: Actor,
    /// Source IP.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub ip: Option<IpAddr>,
    /// The user the event is about, if any.
    pub subject: Option<UserId>,
    /// What.
    pub kind: EventKind,
    /// Hash of the previous event in the chain (zero for the first).
    pub prev_hash: Hash32,
    /// This event's hash.
    pub hash: Hash32,
    /// The tag over `hash` under the deployment's audit key, when the store
    /// was given [`AuditKeys`]: without `SECRET_KEY`, nobody (a database
    /// owner included) can make one, so a rewritten and re-hashed chain no
    /// longer verifies ([`ChainVerifier::keyed`]). Not part of `hash`: an
    /// account holder checks the hashes of their GDPR export without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<AuditTag>,
}

/// An HMAC-SHA256 tag (docs/FORMATS.md, "Audit tags") under the audit key
/// derived from the `SECRET_KEY` whose id is `key_id`.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditTag {
    /// The `SECRET_KEY` the tag's key was derived from (8 hex digits).
    #[serde(with = "key_id_hex")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^[0-9a-f]{8}$"))]
    pub key_id: VaultKeyId,
    /// The tag.
    pub tag: Hash32,
}

impl fmt::Debug for AuditTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditTag({}:{:?})", self.key_id, self.tag)
    }
}

mod key_id_hex {
    use crate::vault::VaultKeyId;

    pub(super) fn serialize<S: serde::Serializer>(
        id: &VaultKeyId,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_string())
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<VaultKeyId, D::Error> {
        let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        let mut b = [0u8; 4];
        hex::decode_to_slice(text.as_bytes(), &mut b).map_err(serde::de::Error::custom)?;
        Ok(VaultKeyId(b))
    }
}

/// A chain's head as its store keeps it beside the chain, with a tag that
/// binds it to the chain: a store that drops the newest events cannot make
/// the tag for the shorter chain's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedHead {
    /// The head.
    pub head: ChainHead,
    /// Its tag.
    pub tag: AuditTag,
}

const AUDIT_KEY_INFO: &[u8] = b"echorelay.audit.key.v1";
const EVENT_TAG_DOMAIN: &[u8] = b"echorelay.audit.event.v1\0";
const HEAD_TAG_DOMAIN: &[u8] = b"echorelay.audit.head.v1\0";

/// The keys that tag audit chains: one per `SECRET_KEY` of the keyring,
/// derived with HKDF-SHA256 (info `echorelay.audit.key.v1`), so tagging
/// uses no key that also seals secrets. The current key tags; previous
/// keys still verify what they tagged, so a `SECRET_KEY` rotation keeps
/// old events verifiable while the old key stays in `SECRET_KEY_PREVIOUS`.
/// `Debug` shows key ids only.
#[derive(Clone)]
pub struct AuditKeys {
    /// Current first.
    keys: Vec<(VaultKeyId, Zeroizing<[u8; 32]>)>,
}

impl fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.keys.iter().map(|(id, _)| id.to_string()).collect();
        f.debug_struct("AuditKeys").field("key_ids", &ids).finish()
    }
}

impl AuditKeys {
    /// The audit keys of `keyring`'s keys.
    pub fn from_keyring(keyring: &Keyring) -> Arc<AuditKeys> {
        Arc::new(AuditKeys {
            keys: keyring.subkeys(AUDIT_KEY_INFO),
        })
    }

    /// The id of the key that tags.
    pub fn current_id(&self) -> VaultKeyId {
        self.keys.first().map_or(VaultKeyId([0; 4]), |(id, _)| *id)
    }

    fn mac(key: &[u8; 32], domain: &[u8], parts: &[&[u8]]) -> Hash32 {
        // HMAC takes keys of any length: new_from_slice cannot fail.
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
            return Hash32::default();
        };
        m.update(domain);
        for p in parts {
            m.update(p);
        }
        Hash32(m.finalize().into_bytes().into())
    }

    fn tag_with_current(&self, domain: &[u8], parts: &[&[u8]]) -> AuditTag {
        match self.keys.first() {
            Some((id, key)) => AuditTag {
                key_id: *id,
                tag: Self::mac(key, domain, parts),
            },
            None => AuditTag {
                key_id: VaultKeyId([0; 4]),
                tag: Hash32::default(),
            },
        }
    }

    fn check(&self, tag: &AuditTag, domain: &[u8], parts: &[&[u8]]) -> bool {
        self.keys
            .iter()
            .filter(|(id, _)| *id == tag.key_id)
            .any(|(_, key)| bool::from(Self::mac(key, domain, parts).0.ct_eq(&tag.tag.0)))
    }

    fn head_parts(chain: Option<ProjectId>, head: &ChainHead) -> [Vec<u8>; 3] {
        [
            chain.map(|p| p.as_bytes().to_vec()).unwrap_or_default(),
            head.seq.to_be_bytes().to_vec(),
            head.hash.0.to_vec(),
        ]
    }

    /// Whether `id` names one of these keys.
    pub fn knows(&self, id: VaultKeyId) -> bool {
        self.keys.iter().any(|(k, _)| *k == id)
    }

    /// The tag of an event whose hash is `hash`.
    pub fn tag_event(&self, hash: &Hash32) -> AuditTag {
        self.tag_with_current(EVENT_TAG_DOMAIN, &[&hash.0])
    }

    /// Whether `e` carries a valid tag under one of these keys.
    pub fn event_is_authentic(&self, e: &AuditEvent) -> bool {
        e.tag
            .is_some_and(|t| self.check(&t, EVENT_TAG_DOMAIN, &[&e.hash.0]))
    }

    /// `head` of `chain` (`None`: the global chain), sealed.
    pub fn seal_head(&self, chain: Option<ProjectId>, head: ChainHead) -> SealedHead {
        let [c, s, h] = Self::head_parts(chain, &head);
        SealedHead {
            head,
            tag: self.tag_with_current(HEAD_TAG_DOMAIN, &[&c, &s, &h]),
        }
    }

    /// Whether `sealed` is a head of `chain` sealed under one of these keys.
    pub fn head_is_authentic(&self, chain: Option<ProjectId>, sealed: &SealedHead) -> bool {
        let [c, s, h] = Self::head_parts(chain, &sealed.head);
        self.check(&sealed.tag, HEAD_TAG_DOMAIN, &[&c, &s, &h])
    }
}

/// A position in one user's events across every chain, in the order of
/// [`crate::ports::AuditLog::events_for_user_page`]: time, then chain (the
/// global chain first, then projects by id), then `seq`. It orders exactly
/// that way (`Ord`: `at`, then `chain` with `None` first, then `seq`).
///
/// Text form (docs/FORMATS.md §3.4), what the GDPR export's `next_after`
/// holds and `GET /v1/me/export?after=` takes:
/// `<at>.<chain>.<seq>`, where `<at>` is the event's time in microseconds
/// since 1970-01-01T00:00:00Z (decimal, `-` for earlier times, no leading
/// zeros; years 1 to 9999), `<chain>` is `global` or the project id
/// (`prj_` and 32 lowercase hex digits), and `<seq>` is 1 to 2^63−1
/// (decimal, no leading zeros). Each position has exactly one text, and
/// [`UserEventCursor::from_str`](std::str::FromStr::from_str) takes only
/// that text (any other input is [`InvalidCursor`], never a panic):
///
/// ```
/// use echorelay_core::audit::UserEventCursor;
/// let c: UserEventCursor = "1795996800000000.global.42".parse().unwrap();
/// assert_eq!(c.seq(), 42);
/// assert_eq!(c.to_string(), "1795996800000000.global.42");
/// assert!("1795996800000000.global.042".parse::<UserEventCursor>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserEventCursor {
    at: DateTime<Utc>,
    chain: Option<ProjectId>,
    seq: u64,
}

/// A text that is not a [`UserEventCursor`]. Says what was wrong, never
/// echoes the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor: {0}")]
pub struct InvalidCursor(pub &'static str);

/// Earliest time a cursor holds: 0001-01-01T00:00:00Z, in microseconds.
const CURSOR_MIN_MICROS: i64 = -62_135_596_800_000_000;
/// Latest: 9999-12-31T23:59:59.999999Z.
const CURSOR_MAX_MICROS: i64 = 253_402_300_799_999_999;

impl UserEventCursor {
    /// The position of `event`.
    ///
    /// # Errors
    /// [`InvalidCursor`] for an event outside the years 1 to 9999, or with
    /// a `seq` of 0 or above 2^63−1 (no stored event has either).
    pub fn of(event: &AuditEvent) -> Result<Self, InvalidCursor> {
        Self::new(event.at, event.project, event.seq)
    }

    /// The position (`at`, `chain`, `seq`); `at` is truncated to
    /// microseconds, what stored events keep.
    ///
    /// # Errors
    /// [`InvalidCursor`] for a time outside the years 1 to 9999, or a
    /// `seq` of 0 or above 2^63−1.
    pub fn new(
        at: DateTime<Utc>,
        chain: Option<ProjectId>,
        seq: u64,
    ) -> Result<Self, InvalidCursor> {
        let micros = at.timestamp_micros();
        if !(CURSOR_MIN_MICROS..=CURSOR_MAX_MICROS).contains(&micros) {
            return Err(InvalidCursor("time outside the years 1 to 9999"));
        }
        if seq == 0 || seq > i64::MAX as u64 {
            return Err(InvalidCursor("seq must be 1 to 9223372036854775807"));
        }
        let at = DateTime::from_timestamp_micros(micros)
            .ok_or(InvalidCursor("time outside the years 1 to 9999"))?;
        Ok(Self { at, chain, seq })
    }

    /// The event's time.
    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }

    /// The event's chain (`None`: the global chain).
    pub fn chain(&self) -> Option<ProjectId> {
        self.chain
    }

    /// The event's `seq` in its chain.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether `event` comes after this position in the user export's order.
    pub fn is_before(&self, event: &AuditEvent) -> bool {
        (event.at, event.project, event.seq) > (self.at, self.chain, self.seq)
    }
}

impl fmt::Display for UserEventCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.", self.at.timestamp_micros())?;
        match self.chain {
            Some(p) => write!(f, "{p}")?,
            None => f.write_str("global")?,
        }
        write!(f, ".{}", self.seq)
    }
}

/// A decimal number in its one canonical text: digits only (a leading `-`
/// when `signed`), no leading zeros, at most 19 digits.
fn canonical_decimal(text: &str, signed: bool) -> Option<i64> {
    let digits = match text.strip_prefix('-') {
        Some(rest) if signed => rest,
        Some(_) => return None,
        None => text,
    };
    let canonical = !digits.is_empty()
        && digits.len() <= 19
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && !(digits == "0" && text.starts_with('-'));
    if !canonical {
        return None;
    }
    text.parse::<i64>().ok()
}

impl std::str::FromStr for UserEventCursor {
    type Err = InvalidCursor;

    fn from_str(text: &str) -> Result<Self, InvalidCursor> {
        let mut parts = text.split('.');
        let (Some(at), Some(chain), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidCursor("expected <at>.<chain>.<seq>"));
        };
        let micros = canonical_decimal(at, true).ok_or(InvalidCursor(
            "<at> must be microseconds as a decimal number",
        ))?;
        if !(CURSOR_MIN_MICROS..=CURSOR_MAX_MICROS).contains(&micros) {
            return Err(InvalidCursor("time outside the years 1 to 9999"));
        }
        let at = DateTime::from_timestamp_micros(micros)
            .ok_or(InvalidCursor("time outside the years 1 to 9999"))?;
        let chain = match chain {
            "global" => None,
            id if id.bytes().all(|b| !b.is_ascii_uppercase()) => Some(
                id.parse::<ProjectId>()
                    .map_err(|_| InvalidCursor("<chain> must be global or a project id"))?,
            ),
            _ => return Err(InvalidCursor("<chain> must be global or a project id")),
        };
        let seq = canonical_decimal(seq, false)
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s >= 1)
            .ok_or(InvalidCursor("<seq> must be 1 to 9223372036854775807"))?;
        Self::new(at, chain, seq)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for UserEventCursor {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::ids::string_schema(
            "A position in the account's audit events (docs/FORMATS.md §3.4): \
             `<at>.<chain>.<seq>`, the event's time in microseconds since 1970 \
             (years 1 to 9999), `global` or its project id, and its seq \
             (1 to 2^63-1)"
                .to_owned(),
            Some(
                r"^(0|-?[1-9][0-9]{0,17})\.(global|prj_[0-9a-f]{32})\.[1-9][0-9]{0,18}$".to_owned(),
            ),
        )
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for UserEventCursor {}

impl Serialize for UserEventCursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UserEventCursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The newest link of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainHead {
    /// Its sequence number.
    pub seq: u64,
    /// Its hash.
    pub hash: Hash32,
}

impl AuditEvent {
    /// This event as a chain head.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash,
        }
    }
}

#[derive(Serialize)]
struct Canonical<'a> {
    v: u8,
    id: &'a EventId,
    seq: u64,
    project: &'a Option<ProjectId>,
    at: String,
    actor: &'a Actor,
    ip: &'a Option<IpAddr>,
    subject: &'a Option<UserId>,
    kind: &'a EventKind,
}

fn event_hash(e: &AuditEvent) -> Hash32 {
    let canonical = Canonical {
        v: 1,
        id: &e.id,
        seq: e.seq,
        project: &e.project,
        at: e.at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        actor: &e.actor,
        ip: &e.ip,
        subject: &e.subject,
        kind: &e.kind,
    };
    let mut h = Sha256::new();
    h.update(b"echorelay.audit.v1\0");
    h.update(e.prev_hash.0);
    // Serializing plain structs and enums to JSON cannot fail; an empty body
    // would still be chained and caught by verification.
    h.update(serde_json::to_vec(&canonical).unwrap_or_default());
    Hash32(h.finalize().into())
}

/// Seals `draft` as the next event after `prev` (the chain's current head,
/// `None` for an empty chain). Stores call this inside the same atomic step
/// that writes the mutation.
pub fn seal(draft: AuditDraft, prev: Option<ChainHead>) -> AuditEvent {
    let (seq, prev_hash) = match prev {
        Some(h) => (h.seq + 1, h.hash),
        None => (1, Hash32::default()),
    };
    let mut e = AuditEvent {
        id: EventId::random(),
        seq,
        project: draft.project,
        // Microseconds: what SQL timestamps keep, so a stored event still
        // hashes the same when read back.
        at: draft.at.trunc_subsecs(6),
        actor: draft.actor,
        ip: draft.ip,
        subject: draft.subject,
        kind: draft.kind,
        prev_hash,
        hash: Hash32::default(),
        tag: None,
    };
    e.hash = event_hash(&e);
    e
}

/// [`seal`], then tags the event under `keys` and seals the chain's new
/// head: what a store given [`AuditKeys`] writes, the event with its tag
/// and the [`SealedHead`] beside the chain, in the same atomic step.
pub fn seal_keyed(
    draft: AuditDraft,
    prev: Option<ChainHead>,
    keys: &AuditKeys,
) -> (AuditEvent, SealedHead) {
    let mut e = seal(draft, prev);
    e.tag = Some(keys.tag_event(&e.hash));
    let head = keys.seal_head(e.project, e.head());
    (e, head)
}

/// The first broken link found by [`verify_chain`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {problem}")]
pub struct ChainBreak {
    /// The sequence number expected at the broken link.
    pub seq: u64,
    /// What is wrong there.
    pub problem: BreakKind,
}

/// How a chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakKind {
    /// An event is missing, or events are out of order.
    Sequence,
    /// The event's content does not match its hash (edited).
    ContentEdited,
    /// The event does not link to its predecessor's hash.
    Link,
    /// The event belongs to another chain.
    WrongChain,
    /// The chain ends before the anchored head, or differs from it.
    Truncated,
    /// The event carries no valid tag under the deployment's audit keys
    /// (rewritten by someone without `SECRET_KEY`, or tagged under a key
    /// no longer in the keyring).
    NotAuthentic,
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakKind::Sequence => "missing or reordered event",
            BreakKind::ContentEdited => "event content does not match its hash",
            BreakKind::Link => "event does not link to its predecessor",
            BreakKind::WrongChain => "event belongs to another chain",
            BreakKind::Truncated => "chain is shorter than, or differs from, its anchored head",
            BreakKind::NotAuthentic => "event is not tagged under this deployment's audit key",
        })
    }
}

/// Verifies a whole chain, given in stored order from seq 1. With `anchor`
/// (a head recorded earlier, e.g. in a backup), also proves that no event up
/// to the anchor was removed from the end. Returns the chain's head.
pub fn verify_chain<'a>(
    chain: Option<ProjectId>,
    events: impl IntoIterator<Item = &'a AuditEvent>,
    anchor: Option<ChainHead>,
) -> Result<Option<ChainHead>, ChainBreak> {
    let mut v = ChainVerifier::new(chain, anchor);
    for e in events {
        v.push(e)?;
    }
    v.finish()
}

/// [`verify_chain`] one event at a time, for chains read page by page; and,
/// [resumed](ChainVerifier::resume) after a known predecessor, for one
/// segment of a chain ([`AuditService::verify_page`]).
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    chain: Option<ProjectId>,
    anchors: Vec<(ChainHead, bool)>,
    keys: Option<Arc<AuditKeys>>,
    /// Keyed, and the store kept no sealed head: a chain with events has
    /// lost it (or was cut and had it removed).
    head_missing: bool,
    /// The seq of the sealed head, once its own tag checked: an event whose
    /// tag cannot be checked (none, or under a key no longer in the
    /// keyring) is accepted up to it, since the hash chain fixes it.
    sealed_up_to: u64,
    prev: Option<ChainHead>,
    /// A segment ([`ChainVerifier::resume`]): legacy events wait in
    /// `unfixed` for an authentic event or the sealed head after them.
    segment: bool,
    /// Resumed at a predecessor: the next push is that event, whose own
    /// link (to the event before it, outside the segment) is not checked.
    resume_at: Option<u64>,
    /// The seq of the first pushed event (the predecessor, if resumed).
    first: Option<u64>,
    /// In a segment: the first legacy event (untagged, or tagged under a
    /// key no longer in the keyring) not yet fixed by an authentic event
    /// or the sealed head at or after it.
    unfixed: Option<u64>,
}

/// What [`ChainVerifier::finish_segment`] verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The seq of the first event checked (the predecessor, when resumed
    /// after one); `None` when nothing was pushed.
    pub first: Option<u64>,
    /// The last event checked.
    pub last: Option<ChainHead>,
}

impl ChainVerifier {
    /// A verifier for `chain`, expecting seq 1 first.
    pub fn new(chain: Option<ProjectId>, anchor: Option<ChainHead>) -> Self {
        Self {
            chain,
            anchors: anchor.map(|a| (a, false)).into_iter().collect(),
            keys: None,
            head_missing: false,
            sealed_up_to: 0,
            prev: None,
            segment: false,
            resume_at: None,
            first: None,
            unfixed: None,
        }
    }

    /// Makes this verifier check one segment of the chain instead of the
    /// whole: the events after `predecessor` (`None`: from seq 1), then
    /// [`ChainVerifier::finish_segment`]. Call after
    /// [`ChainVerifier::keyed`], before any push.
    ///
    /// The predecessor is checked like any event (chain, content against
    /// its hash, its tag), except its link to the event before it, which
    /// lies outside the segment; the segment's first event must link to
    /// it. So verifying a chain's pages one after the other, each resumed
    /// after the last event of the one before, checks every link of the
    /// chain.
    ///
    /// Tags in a segment: an event tagged under one of the keys must check
    /// (else a break at once). A legacy event (untagged, or tagged under a
    /// key no longer in the keyring) is accepted only when an authentic
    /// event (its tag checks) or the authentic sealed head at or after it
    /// is reached within the segment: that one's hash fixes every event
    /// linked before it. The whole-chain check is the same rule where the
    /// sealed head closes the range.
    ///
    /// # Errors
    /// The predecessor's break, if it has one.
    pub fn resume(mut self, predecessor: Option<&AuditEvent>) -> Result<Self, ChainBreak> {
        self.segment = true;
        if let Some(p) = predecessor {
            self.resume_at = Some(p.seq);
            self.push(p)?;
        }
        Ok(self)
    }

    /// Also checks tags under `keys`, and takes the store's sealed head
    /// (read before the events) as one more anchor once its own tag
    /// checks: so an edit re-hashed with the public [`seal`], a deletion,
    /// or a cut-off end made with database access alone is a break. A
    /// chain with events whose store kept no sealed head breaks as
    /// truncated.
    ///
    /// An event tagged under one of `keys` must check. An event without a
    /// tag (written before the store had keys) or tagged under a key no
    /// longer in the keyring (a retired `SECRET_KEY`) is accepted only
    /// when an authentic anchor at or after it is reached: the hash chain
    /// then fixes it, since no event up to that anchor can change without
    /// changing the anchor's hash.
    ///
    /// # Errors
    /// [`BreakKind::NotAuthentic`] if the sealed head's tag does not check.
    pub fn keyed(
        mut self,
        keys: Arc<AuditKeys>,
        sealed: Option<SealedHead>,
    ) -> Result<Self, ChainBreak> {
        match sealed {
            Some(s) if keys.head_is_authentic(self.chain, &s) => {
                self.sealed_up_to = s.head.seq;
                self.anchors.push((s.head, false));
            }
            Some(s) => {
                return Err(ChainBreak {
                    seq: s.head.seq,
                    problem: BreakKind::NotAuthentic,
                });
            }
            None => self.head_missing = true,
        }
        self.keys = Some(keys);
        Ok(self)
    }

    /// Checks the next event in stored order.
    pub fn push(&mut self, e: &AuditEvent) -> Result<(), ChainBreak> {
        // A resumed segment's first event is its predecessor: its seq is
        // known, its own link lies outside the segment.
        let (expected, link) = match self.resume_at.take() {
            Some(seq) => (seq, None),
            None => (
                self.prev.map_or(1, |p| p.seq + 1),
                Some(self.prev.map(|p| p.hash).unwrap_or_default()),
            ),
        };
        let brk = |problem| ChainBreak {
            seq: expected,
            problem,
        };
        if e.project != self.chain {
            return Err(brk(BreakKind::WrongChain));
        }
        if e.seq != expected {
            return Err(brk(BreakKind::Sequence));
        }
        if link.is_some_and(|l| e.prev_hash != l) {
            return Err(brk(BreakKind::Link));
        }
        if event_hash(e) != e.hash {
            return Err(brk(BreakKind::ContentEdited));
        }
        if let Some(keys) = &self.keys {
            if keys.event_is_authentic(e) {
                // Its hash fixes every event linked before it.
                self.unfixed = None;
            } else {
                let forged = e.tag.is_some_and(|t| keys.knows(t.key_id));
                if forged || (!self.segment && e.seq > self.sealed_up_to) {
                    return Err(brk(BreakKind::NotAuthentic));
                }
                if self.segment {
                    self.unfixed = self.unfixed.or(Some(e.seq));
                }
            }
        }
        for (a, seen) in &mut self.anchors {
            if e.seq == a.seq {
                // The hashes alone are unkeyed: without this, a rewritten
                // and re-hashed chain would pass an unkeyed check.
                if e.hash != a.hash {
                    return Err(brk(BreakKind::Truncated));
                }
                *seen = true;
            }
        }
        if self.segment
            && self.keys.is_some()
            && e.seq == self.sealed_up_to
            && self.sealed_up_to > 0
        {
            // The authentic sealed head, reached: it fixes what came before.
            self.unfixed = None;
        }
        self.first = self.first.or(Some(e.seq));
        self.prev = Some(e.head());
        Ok(())
    }

    /// Ends the check: the head of what was pushed, or a break if an
    /// anchor was never reached (truncation).
    pub fn finish(self) -> Result<Option<ChainHead>, ChainBreak> {
        let next = self.prev.map_or(1, |p| p.seq + 1);
        let truncated = ChainBreak {
            seq: next,
            problem: BreakKind::Truncated,
        };
        if self.anchors.iter().any(|(_, seen)| !seen) {
            return Err(truncated);
        }
        if self.head_missing && self.prev.is_some() {
            return Err(truncated);
        }
        Ok(self.prev)
    }

    /// Ends the check of a segment ([`ChainVerifier::resume`]).
    /// `reached_end`: the store had no event after the last one pushed
    /// (a page shorter than asked for), so the segment ends at the chain's
    /// head.
    ///
    /// A break when a legacy event in the segment was not fixed by an
    /// authentic event or the sealed head after it (`NotAuthentic` at the
    /// first such event); and, at the chain's end, when an anchor (the
    /// sealed head) lies beyond the last event, or the keyed chain has
    /// events but no sealed head (`Truncated`: events or the head row were
    /// removed). An anchor before the segment is no concern of it.
    pub fn finish_segment(self, reached_end: bool) -> Result<Segment, ChainBreak> {
        if let Some(seq) = self.unfixed {
            return Err(ChainBreak {
                seq,
                problem: BreakKind::NotAuthentic,
            });
        }
        let next = self.prev.map_or(1, |p| p.seq + 1);
        let truncated = ChainBreak {
            seq: next,
            problem: BreakKind::Truncated,
        };
        if self.head_missing && self.prev.is_some() {
            return Err(truncated);
        }
        if reached_end {
            let start = self.first.unwrap_or(next);
            if self.anchors.iter().any(|(a, seen)| !seen && a.seq >= start) {
                return Err(truncated);
            }
        }
        Ok(Segment {
            first: self.first,
            last: self.prev,
        })
    }

    /// Whether tags are checked.
    pub fn is_keyed(&self) -> bool {
        self.keys.is_some()
    }
}

/// Most events an [`AuditService::events`] page returns.
pub const MAX_PAGE: usize = 1000;

/// A verified chain: its head and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainStatus {
    /// The newest link (`None` for an empty chain).
    pub head: Option<ChainHead>,
    /// How many events were verified.
    pub events: u64,
    /// Whether every event's tag and the sealed head were checked under
    /// the deployment's audit keys (else the hashes only).
    pub keyed: bool,
}

/// What [`AuditService::verify_page`] verified: one page of a chain, linked
/// to its predecessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PageStatus {
    /// The page's `after`. When above 0, the event with this seq (the
    /// predecessor) was checked too, and the page's first event links to
    /// it.
    pub after: u64,
    /// The last seq verified: the events with `after < seq <= through`
    /// were checked (`through == after`: the page was empty).
    pub through: u64,
    /// How many events of the page were checked.
    pub events: u64,
    /// Whether the page reached the chain's head: the store had no event
    /// after `through` when read (also for a full page), and (keyed) the
    /// sealed head was reached and matched. Paging through the chain with verification checks the
    /// whole chain; this says when the last page did.
    pub reached_head: bool,
    /// The chain's head when the page reached it (`None` otherwise, or for
    /// an empty chain).
    pub head: Option<ChainHead>,
    /// Whether every tag and the sealed head were checked under the
    /// deployment's audit keys (else the hashes only).
    pub keyed: bool,
}

/// A page of a chain and what its verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPage {
    /// The page's events, by `seq`.
    pub events: Vec<AuditEvent>,
    /// What was verified.
    pub status: PageStatus,
}

/// Reading a project's audit log, under the voter's audit-read grant
/// (owners; owner-role API keys too).
#[derive(Debug, Clone)]
pub struct AuditService<L> {
    log: L,
    keys: Option<Arc<AuditKeys>>,
}

impl<L: crate::ports::AuditLog + crate::ports::AuditSink> AuditService<L> {
    /// After a `SECRET_KEY` rotation (with the old key still in the
    /// keyring): verifies the chain, then seals its verified head under
    /// the current key, so the chain stays verifiable once the old key is
    /// gone. Returns whether the head was resealed (`false`: already under
    /// the current key, unkeyed, or appended to meanwhile, which seals it
    /// anew anyway).
    ///
    /// # Errors
    /// [`crate::Error::Audit`] if the chain does not verify: a broken
    /// chain is never resealed.
    pub async fn reseal(&self, chain: Option<ProjectId>) -> crate::Result<bool> {
        let Some(keys) = &self.keys else {
            return Ok(false);
        };
        if let Some(sealed) = self.log.sealed_head(chain).await?
            && sealed.tag.key_id == keys.current_id()
        {
            return Ok(false);
        }
        let status = self.verify_chain(chain, None).await?;
        match status.head {
            Some(head) => Ok(self.log.reseal_head(chain, head).await?),
            None => Ok(false),
        }
    }
}

impl<L: crate::ports::AuditLog> AuditService<L> {
    /// A service reading `log`, checking hashes only (for a store given
    /// no [`AuditKeys`]).
    pub fn new(log: L) -> Self {
        Self { log, keys: None }
    }

    /// A service that also checks every tag and the sealed head under
    /// `keys`: the verification for a store that tags with them.
    pub fn keyed(log: L, keys: Arc<AuditKeys>) -> Self {
        Self {
            log,
            keys: Some(keys),
        }
    }

    /// One page of the project's chain: events with `seq > after`,
    /// ascending, at most `limit` (capped at [`MAX_PAGE`]).
    pub async fn events(
        &self,
        grant: &crate::access::Grant<crate::access::surface::AuditRead>,
        after: u64,
        limit: usize,
    ) -> crate::Result<Vec<AuditEvent>> {
        Ok(self
            .log
            .events(Some(grant.project_id()), after, limit.min(MAX_PAGE))
            .await?)
    }

    /// Verifies the project's whole chain, page by page; with `anchor` (a
    /// head recorded earlier) also proves nothing up to it was cut off.
    /// Keyed ([`AuditService::keyed`]): every tag and the sealed head are
    /// checked too.
    ///
    /// # Errors
    /// [`crate::Error::Audit`] naming the first broken link.
    pub async fn verify(
        &self,
        grant: &crate::access::Grant<crate::access::surface::AuditRead>,
        anchor: Option<ChainHead>,
    ) -> crate::Result<ChainStatus> {
        self.verify_chain(Some(grant.project_id()), anchor).await
    }

    /// One page of the project's chain ([`AuditService::events`]: `seq >
    /// after`, at most `limit`), verified as a segment: its predecessor
    /// (the event `after`, when above 0) is read and checked, then every
    /// event of the page in order (seq, link to the one before, hash and,
    /// keyed, its tag); when the page reaches the chain's head, the sealed
    /// head too (a cut-off end is a break). Legacy events in the page
    /// (untagged, or under a retired key) pass only when an authentic
    /// event or the sealed head after them is reached within the page
    /// ([`ChainVerifier::resume`]).
    ///
    /// Bounded work: the sealed head, the predecessor, the page and one
    /// event after it (read to know whether the page ends at the head,
    /// not verified: it belongs to the next page). Paging
    /// through the whole log this way, each page after the last seq of
    /// the one before, verifies the whole chain; [`AuditService::verify`]
    /// does that in one call (for operators: `echorelay-server audit
    /// verify`).
    ///
    /// # Errors
    /// [`crate::Error::Audit`] naming the first broken link in the range;
    /// [`crate::Error::InvalidInput`] for a `limit` outside 1 to
    /// [`MAX_PAGE`].
    pub async fn verify_page(
        &self,
        grant: &crate::access::Grant<crate::access::surface::AuditRead>,
        after: u64,
        limit: usize,
    ) -> crate::Result<VerifiedPage> {
        self.verify_segment(Some(grant.project_id()), after, limit)
            .await
    }

    /// [`AuditService::verify_page`] of any chain (`None`: the global
    /// chain), without a grant.
    ///
    /// # Errors
    /// As [`AuditService::verify_page`].
    pub async fn verify_segment(
        &self,
        chain: Option<ProjectId>,
        after: u64,
        limit: usize,
    ) -> crate::Result<VerifiedPage> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(crate::Error::InvalidInput(
                "a verified page holds 1 to 1000 events",
            ));
        }
        let mut v = ChainVerifier::new(chain, None);
        let mut sealed_seq = None;
        if let Some(keys) = &self.keys {
            // The sealed head first: events appended meanwhile come after it.
            let sealed = self.log.sealed_head(chain).await?;
            sealed_seq = sealed.map(|s| s.head.seq);
            v = v.keyed(keys.clone(), sealed)?;
        }
        let keyed = v.is_keyed();
        let predecessor = match after {
            0 => None,
            _ => self
                .log
                .events(chain, after - 1, 1)
                .await?
                .into_iter()
                .next()
                .filter(|e| e.seq == after),
        };
        // One event more than the page, unverified and not returned: it
        // says whether the page ends at the chain's head (then the sealed
        // head is checked against it), also when the page is full.
        let mut events = self.log.events(chain, after, limit + 1).await?;
        let reached_head = events.len() <= limit;
        events.truncate(limit);
        if after > 0 && predecessor.is_none() {
            // No event `after`: a gap before the page, or a chain that ends
            // before it (then nothing is left to check, unless the sealed
            // head says the chain was longer).
            let problem = if !events.is_empty() {
                Some(BreakKind::Sequence)
            } else if sealed_seq.is_some_and(|s| s >= after) {
                Some(BreakKind::Truncated)
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ChainBreak {
                    seq: after,
                    problem,
                }
                .into());
            }
            return Ok(VerifiedPage {
                events,
                status: PageStatus {
                    after,
                    through: after,
                    events: 0,
                    reached_head: true,
                    head: None,
                    keyed,
                },
            });
        }
        let mut v = v.resume(predecessor.as_ref())?;
        for e in &events {
            v.push(e)?;
        }
        let segment = v.finish_segment(reached_head)?;
        if keyed && chain.is_some() && reached_head && segment.last.is_none() {
            // A project's chain starts with the project's creation.
            return Err(ChainBreak {
                seq: 1,
                problem: BreakKind::Truncated,
            }
            .into());
        }
        let status = PageStatus {
            after,
            through: segment.last.map_or(after, |h| h.seq),
            events: events.len() as u64,
            reached_head,
            head: segment.last.filter(|_| reached_head),
            keyed,
        };
        Ok(VerifiedPage { events, status })
    }

    /// [`AuditService::verify`] of any chain (`None`: the global chain),
    /// without a grant: for operators (the server binary's `audit verify`).
    /// A project's chain starts with the project's creation, so a keyed
    /// check of an empty project chain is a break (it was cut); the global
    /// chain may be empty.
    ///
    /// # Errors
    /// [`crate::Error::Audit`] naming the first broken link.
    pub async fn verify_chain(
        &self,
        chain: Option<ProjectId>,
        anchor: Option<ChainHead>,
    ) -> crate::Result<ChainStatus> {
        let mut v = ChainVerifier::new(chain, anchor);
        if let Some(keys) = &self.keys {
            // The sealed head first: events appended meanwhile come after it.
            let sealed = self.log.sealed_head(chain).await?;
            v = v.keyed(keys.clone(), sealed)?;
        }
        let keyed = v.is_keyed();
        let mut after = 0;
        let mut count = 0u64;
        loop {
            let page = self.log.events(chain, after, MAX_PAGE).await?;
            for e in &page {
                v.push(e)?;
                count += 1;
            }
            match page.last() {
                Some(last) if page.len() == MAX_PAGE => after = last.seq,
                _ => break,
            }
        }
        let head = v.finish()?;
        if keyed && chain.is_some() && head.is_none() {
            return Err(ChainBreak {
                seq: 1,
                problem: BreakKind::Truncated,
            }
            .into());
        }
        Ok(ChainStatus {
            head,
            events: count,
            keyed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chain(n: usize) -> (ProjectId, Vec<AuditEvent>) {
        let p = ProjectId::random();
        let mut out: Vec<AuditEvent> = Vec::new();
        for i in 0..n {
            let draft = AuditDraft {
                project: Some(p),
                at: DateTime::from_timestamp(1_700_000_000 + i as i64, 0).unwrap(),
                actor: Actor::System,
                ip: Some("192.0.2.1".parse().unwrap()),
                subject: None,
                kind: EventKind::Billing {
                    billing: BillingKind::CreditPurchase,
                    amount_minor: i as i64 * 100,
                    currency: Currency::parse("EUR").unwrap(),
                    reference: None,
                },
            };
            let head = out.last().map(AuditEvent::head);
            out.push(seal(draft, head));
        }
        (p, out)
    }

    #[test]
    fn intact_chain_verifies() {
        let (p, ev) = chain(5);
        let head = verify_chain(Some(p), &ev, None).unwrap().unwrap();
        assert_eq!(head.seq, 5);
        assert!(verify_chain(Some(p), &ev, Some(ev[2].head())).is_ok());
        assert!(verify_chain(Some(p), &ev, Some(head)).is_ok());
    }

    #[test]
    fn a_rewritten_chain_fails_against_its_anchor() {
        let (p, ev) = chain(5);
        let anchor = ev[2].head();
        // Rewrite everything from the start, re-hash, and append one more:
        // internally consistent, but not the chain the anchor recorded.
        let mut forged: Vec<AuditEvent> = Vec::new();
        for e in ev.iter().chain(std::iter::once(&ev[4])) {
            let mut d = AuditDraft {
                project: e.project,
                at: e.at,
                actor: e.actor,
                ip: e.ip,
                subject: e.subject,
                kind: e.kind.clone(),
            };
            d.actor = Actor::User(UserId::random());
            let head = forged.last().map(AuditEvent::head);
            forged.push(seal(d, head));
        }
        assert!(verify_chain(Some(p), &forged, None).is_ok());
        let err = verify_chain(Some(p), &forged, Some(anchor)).unwrap_err();
        assert_eq!(err.problem, BreakKind::Truncated);
        assert_eq!(err.seq, 3);
    }

    /// A keyed chain: every event tagged, the head sealed, as a store
    /// with `keys` writes it.
    fn keyed_chain(n: usize, keys: &AuditKeys) -> (ProjectId, Vec<AuditEvent>, SealedHead) {
        let (p, plain) = chain(n);
        let mut out: Vec<AuditEvent> = Vec::new();
        let mut sealed = None;
        for e in plain {
            let draft = AuditDraft {
                project: e.project,
                at: e.at,
                actor: e.actor,
                ip: e.ip,
                subject: e.subject,
                kind: e.kind,
            };
            let (ev, head) = seal_keyed(draft, out.last().map(AuditEvent::head), keys);
            out.push(ev);
            sealed = Some(head);
        }
        (p, out, sealed.unwrap())
    }

    fn tag_of(e: &AuditEvent) -> AuditTag {
        e.tag.expect("a tagged event")
    }

    fn keys_of(ring: &Keyring) -> Arc<AuditKeys> {
        AuditKeys::from_keyring(ring)
    }

    fn keyed_check(
        p: ProjectId,
        ev: &[AuditEvent],
        keys: &Arc<AuditKeys>,
        sealed: Option<SealedHead>,
    ) -> Result<Option<ChainHead>, ChainBreak> {
        let mut v = ChainVerifier::new(Some(p), None).keyed(keys.clone(), sealed)?;
        for e in ev {
            v.push(e)?;
        }
        v.finish()
    }

    /// The vectors of docs/FORMATS.md §3.3, computed there independently
    /// (Python's hmac and hashlib).
    #[test]
    fn tags_match_the_documented_vectors() {
        use crate::vault::SecretKey;
        let key =
            SecretKey::parse("6a4e66c27687161095467ef0a963538822927a9e557405703abffe6271b315f6")
                .unwrap();
        let keys = keys_of(&Keyring::new(key));
        assert_eq!(keys.current_id().to_string(), "a3aa3dae");
        let hash = Hash32([0x11; 32]);
        let tag = keys.tag_event(&hash);
        assert_eq!(
            hex::encode(tag.tag.0),
            "3e4da78d40964132e94c91e1fee00fb029fbcc356fd03fc02714250db4613d0f"
        );
        let head = ChainHead { seq: 5, hash };
        let project: ProjectId =
            serde_json::from_value(serde_json::json!(format!("prj_{}", "22".repeat(16)))).unwrap();
        assert_eq!(
            hex::encode(keys.seal_head(Some(project), head).tag.tag.0),
            "02b6b1cc73d1b3fa7298912750578dca6ab18ce1c414eaa8c6f277f333dbefeb"
        );
        assert_eq!(
            hex::encode(keys.seal_head(None, head).tag.tag.0),
            "302d8a07df439b31b896c58e408d874fb2691de5d7861c5aaa2f139edc8e594c"
        );
    }

    #[test]
    fn a_keyed_chain_verifies_and_its_tags_round_trip() {
        use crate::vault::SecretKey;
        let keys = keys_of(&Keyring::new(SecretKey::generate()));
        let (p, ev, sealed) = keyed_chain(4, &keys);
        assert_eq!(
            keyed_check(p, &ev, &keys, Some(sealed)).unwrap(),
            Some(ev[3].head())
        );
        for e in &ev {
            let back: AuditEvent =
                serde_json::from_value(serde_json::to_value(e).unwrap()).unwrap();
            assert_eq!(&back, e);
            assert!(keys.event_is_authentic(&back));
        }
        // Another chain's head tag does not check for this chain.
        assert!(!keys.head_is_authentic(Some(ProjectId::random()), &sealed));
        assert!(!keys.head_is_authentic(None, &sealed));
        let shown_tag = format!("{:?}", tag_of(&ev[0]));
        assert_eq!(
            shown_tag,
            format!(
                "AuditTag({}:{})",
                keys.current_id(),
                hex::encode(tag_of(&ev[0]).tag.0)
            )
        );
        // Debug names the key ids, never key material.
        let shown = format!("{keys:?}");
        assert!(shown.contains(&keys.current_id().to_string()), "{shown}");
    }

    #[test]
    fn a_chain_re_hashed_without_the_key_is_not_authentic() {
        use crate::vault::SecretKey;
        let keys = keys_of(&Keyring::new(SecretKey::generate()));
        let (p, ev, sealed) = keyed_chain(5, &keys);
        // Edit seq 3 and re-seal from there with the public `seal`: the
        // hashes all check (a hashes-only verifier passes), the tags not.
        let mut forged: Vec<AuditEvent> = ev[..2].to_vec();
        for e in &ev[2..] {
            let draft = AuditDraft {
                project: e.project,
                at: e.at,
                actor: Actor::User(UserId::random()),
                ip: e.ip,
                subject: e.subject,
                kind: e.kind.clone(),
            };
            let mut f = seal(draft, forged.last().map(AuditEvent::head));
            f.tag = e.tag; // the old tags, copied: they cover other hashes
            forged.push(f);
        }
        assert!(verify_chain(Some(p), &forged, None).is_ok());
        let err = keyed_check(p, &forged, &keys, Some(sealed)).unwrap_err();
        assert_eq!((err.seq, err.problem), (3, BreakKind::NotAuthentic));
        // With the tags stripped instead, the sealed head still names the
        // real chain.
        for f in &mut forged {
            f.tag = None;
        }
        let err = keyed_check(p, &forged, &keys, Some(sealed)).unwrap_err();
        assert_eq!(err.problem, BreakKind::Truncated);
        // And a sealed head moved to the forgery's end does not check.
        let moved = SealedHead {
            head: forged[4].head(),
            tag: sealed.tag,
        };
        let err = keyed_check(p, &forged, &keys, Some(moved)).unwrap_err();
        assert_eq!(err.problem, BreakKind::NotAuthentic);
    }

    #[test]
    fn a_cut_off_or_headless_keyed_chain_is_caught() {
        use crate::vault::SecretKey;
        let keys = keys_of(&Keyring::new(SecretKey::generate()));
        let (p, ev, sealed) = keyed_chain(5, &keys);
        // The newest event deleted: its sealed head is never reached.
        let err = keyed_check(p, &ev[..4], &keys, Some(sealed)).unwrap_err();
        assert_eq!((err.seq, err.problem), (5, BreakKind::Truncated));
        // The head row moved back to seq 4 with seq 5's tag, or seq 4's
        // event tag: neither is a head tag of (4, hash 4).
        for tag in [sealed.tag, ev[3].tag.unwrap()] {
            let back = SealedHead {
                head: ev[3].head(),
                tag,
            };
            let err = keyed_check(p, &ev[..4], &keys, Some(back)).unwrap_err();
            assert_eq!(err.problem, BreakKind::NotAuthentic);
        }
        // The head row deleted too: a chain with events and no sealed head.
        let err = keyed_check(p, &ev[..4], &keys, None).unwrap_err();
        assert_eq!(err.problem, BreakKind::Truncated);
        // A chain with no event and no head is empty, not broken.
        assert_eq!(keyed_check(p, &[], &keys, None).unwrap(), None);
    }

    #[test]
    fn a_rotated_key_keeps_old_tags_verifiable_and_an_unknown_key_needs_a_sealed_head() {
        use crate::vault::SecretKey;
        let (old, new) = (SecretKey::generate(), SecretKey::generate());
        let old_ring = Keyring::new(old.clone());
        let both = keys_of(&Keyring::new(new.clone()).with_previous(old));
        let (p, ev, sealed) = keyed_chain(3, &keys_of(&old_ring));
        // Old tags check under the rotated keyring.
        assert!(keyed_check(p, &ev, &both, Some(sealed)).is_ok());
        // With the old key gone, the events' tags are under a key nobody
        // holds: a head resealed under the new key covers them (the hash
        // chain fixes every event up to it) ...
        let new_only = keys_of(&Keyring::new(new));
        let resealed = new_only.seal_head(Some(p), ev[2].head());
        assert!(keyed_check(p, &ev, &new_only, Some(resealed)).is_ok());
        // ... and an event appended after it must carry a tag that checks.
        let mut longer = ev.clone();
        let mut extra = seal(
            AuditDraft {
                project: Some(p),
                at: ev[2].at,
                actor: Actor::System,
                ip: None,
                subject: None,
                kind: ev[2].kind.clone(),
            },
            Some(ev[2].head()),
        );
        extra.tag = ev[2].tag;
        longer.push(extra);
        let err = keyed_check(p, &longer, &new_only, Some(resealed)).unwrap_err();
        assert_eq!((err.seq, err.problem), (4, BreakKind::NotAuthentic));
        // Without the reseal, nothing checks the old-key events.
        let err = keyed_check(p, &ev, &new_only, Some(sealed)).unwrap_err();
        assert_eq!(err.problem, BreakKind::NotAuthentic);
    }

    #[test]
    fn truncation_is_caught_with_an_anchor() {
        let (p, ev) = chain(5);
        let head = ev[4].head();
        let err = verify_chain(Some(p), &ev[..3], Some(head)).unwrap_err();
        assert_eq!(err.problem, BreakKind::Truncated);
        assert_eq!(err.seq, 4);
    }

    /// Checks `page` as a segment after `pred`, as `verify_page` does.
    fn segment_check(
        p: ProjectId,
        keys: &Arc<AuditKeys>,
        sealed: Option<SealedHead>,
        pred: Option<&AuditEvent>,
        page: &[AuditEvent],
        reached_end: bool,
    ) -> Result<Segment, ChainBreak> {
        let mut v = ChainVerifier::new(Some(p), None)
            .keyed(keys.clone(), sealed)?
            .resume(pred)?;
        for e in page {
            v.push(e)?;
        }
        v.finish_segment(reached_end)
    }

    fn random_keys() -> Arc<AuditKeys> {
        use crate::vault::SecretKey;
        keys_of(&Keyring::new(SecretKey::generate()))
    }

    /// `e` with its tag removed and re-hashed content unchanged: a legacy
    /// event (written before the store had keys).
    fn untagged(e: &AuditEvent) -> AuditEvent {
        AuditEvent {
            tag: None,
            ..e.clone()
        }
    }

    #[test]
    fn pages_of_an_intact_keyed_chain_verify_one_after_the_other() {
        let keys = random_keys();
        let (p, ev, sealed) = keyed_chain(7, &keys);
        let mut pred: Option<&AuditEvent> = None;
        for page in ev.chunks(3) {
            let end = page.len() < 3;
            let seg = segment_check(p, &keys, Some(sealed), pred, page, end).unwrap();
            assert_eq!(seg.last, page.last().map(AuditEvent::head));
            assert_eq!(seg.first, Some(pred.map_or(page[0].seq, |e| e.seq)));
            pred = page.last();
        }
        // An empty page after the head, reaching the end: its predecessor
        // is the sealed head itself.
        let seg = segment_check(p, &keys, Some(sealed), ev.last(), &[], true).unwrap();
        assert_eq!(seg.last, Some(ev[6].head()));
    }

    #[test]
    fn an_edit_in_the_page_or_its_predecessor_is_a_break() {
        let keys = random_keys();
        let (p, ev, sealed) = keyed_chain(6, &keys);
        let mut edited = ev.clone();
        edited[3].actor = Actor::User(UserId::random());
        // In the page.
        let err = segment_check(
            p,
            &keys,
            Some(sealed),
            Some(&edited[1]),
            &edited[2..5],
            false,
        )
        .unwrap_err();
        assert_eq!((err.seq, err.problem), (4, BreakKind::ContentEdited));
        // As the predecessor of the next page.
        let err = segment_check(p, &keys, Some(sealed), Some(&edited[3]), &edited[4..], true)
            .unwrap_err();
        assert_eq!((err.seq, err.problem), (4, BreakKind::ContentEdited));
        // A page before the edit does not see it.
        assert!(
            segment_check(
                p,
                &keys,
                Some(sealed),
                Some(&edited[0]),
                &edited[1..3],
                false
            )
            .is_ok()
        );
    }

    #[test]
    fn a_page_that_does_not_link_to_its_predecessor_is_a_break() {
        let keys = random_keys();
        let (p, ev, sealed) = keyed_chain(5, &keys);
        // The predecessor replaced by a self-consistent forgery (edited,
        // re-hashed with the public `seal`, untagged): its own hash
        // checks, the page's first link does not.
        let d = AuditDraft {
            project: Some(p),
            at: ev[1].at,
            actor: Actor::User(UserId::random()),
            ip: None,
            subject: None,
            kind: ev[1].kind.clone(),
        };
        let forged = seal(d, Some(ev[0].head()));
        assert_eq!(forged.seq, 2);
        let err =
            segment_check(p, &keys, Some(sealed), Some(&forged), &ev[2..4], false).unwrap_err();
        assert_eq!((err.seq, err.problem), (3, BreakKind::Link));
        // A predecessor of another seq than the page expects.
        let err =
            segment_check(p, &keys, Some(sealed), Some(&ev[0]), &ev[2..4], false).unwrap_err();
        assert_eq!((err.seq, err.problem), (2, BreakKind::Sequence));
    }

    #[test]
    fn a_forged_tag_in_the_page_is_a_break() {
        let keys = random_keys();
        let (p, mut ev, sealed) = keyed_chain(5, &keys);
        // A tag under the deployment's key id that does not check.
        ev[2].tag = Some(AuditTag {
            key_id: keys.current_id(),
            tag: Hash32([7; 32]),
        });
        let err =
            segment_check(p, &keys, Some(sealed), Some(&ev[0]), &ev[1..4], false).unwrap_err();
        assert_eq!((err.seq, err.problem), (3, BreakKind::NotAuthentic));
        // Re-hashed without the key, the old tag copied: the same.
        let (p, ev, sealed) = keyed_chain(5, &keys);
        let mut forged = ev[..2].to_vec();
        for e in &ev[2..] {
            let d = AuditDraft {
                project: e.project,
                at: e.at,
                actor: Actor::System,
                ip: None,
                subject: e.subject,
                kind: e.kind.clone(),
            };
            let mut f = seal(d, forged.last().map(AuditEvent::head));
            f.tag = e.tag;
            forged.push(f);
        }
        let err = segment_check(
            p,
            &keys,
            Some(sealed),
            Some(&forged[1]),
            &forged[2..4],
            false,
        )
        .unwrap_err();
        assert_eq!((err.seq, err.problem), (3, BreakKind::NotAuthentic));
    }

    #[test]
    fn a_legacy_event_is_fixed_by_a_later_authentic_one_in_the_page() {
        let keys = random_keys();
        let (p, ev, sealed) = keyed_chain(6, &keys);
        let mut mixed = ev.clone();
        mixed[1] = untagged(&ev[1]); // seq 2: written before the store had keys
        mixed[2] = untagged(&ev[2]); // seq 3
        // Seq 4's tag checks and its hash fixes 2 and 3.
        let seg = segment_check(p, &keys, Some(sealed), None, &mixed[..4], false).unwrap();
        assert_eq!(seg.last, Some(ev[3].head()));
        // The sealed head fixes the untagged events before it, when the
        // page reaches it.
        let mut tail = ev.clone();
        tail[4] = untagged(&ev[4]);
        tail[5] = untagged(&ev[5]);
        assert!(segment_check(p, &keys, Some(sealed), Some(&tail[3]), &tail[4..], true).is_ok());
    }

    #[test]
    fn a_legacy_event_not_fixed_within_the_page_is_a_break() {
        let keys = random_keys();
        let (p, ev, sealed) = keyed_chain(6, &keys);
        let mut mixed = ev.clone();
        mixed[2] = untagged(&ev[2]);
        mixed[3] = untagged(&ev[3]);
        // The page ends at seq 4, before anything authentic after seq 3.
        let err = segment_check(p, &keys, Some(sealed), Some(&mixed[1]), &mixed[2..4], false)
            .unwrap_err();
        assert_eq!((err.seq, err.problem), (3, BreakKind::NotAuthentic));
        // An untagged predecessor is not fixed by anything before it.
        let err = segment_check(p, &keys, Some(sealed), Some(&mixed[3]), &[], false).unwrap_err();
        assert_eq!((err.seq, err.problem), (4, BreakKind::NotAuthentic));
        // Tagged under a key nobody holds any more, and nothing after it in
        // the page: the same.
        let retired = random_keys();
        let (q, old, _) = keyed_chain(3, &retired);
        let resealed = keys.seal_head(Some(q), old[2].head());
        let err = segment_check(q, &keys, Some(resealed), None, &old[..2], false).unwrap_err();
        assert_eq!((err.seq, err.problem), (1, BreakKind::NotAuthentic));
        // ... while a page reaching the resealed head fixes them.
        assert!(segment_check(q, &keys, Some(resealed), None, &old, true).is_ok());
    }

    #[test]
    fn a_page_that_ends_before_the_sealed_head_is_cut_off() {
        let keys = random_keys();
        let (p, ev, sealed) = keyed_chain(5, &keys);
        // The newest events deleted: the store's last page stops at 3.
        let err = segment_check(p, &keys, Some(sealed), Some(&ev[1]), &ev[2..3], true).unwrap_err();
        assert_eq!((err.seq, err.problem), (4, BreakKind::Truncated));
        // The same page, not the last one: no concern of it.
        assert!(segment_check(p, &keys, Some(sealed), Some(&ev[1]), &ev[2..3], false).is_ok());
        // A sealed head before the segment (events appended after it was
        // read, each tagged) is no concern of a page at the end.
        let earlier = keys.seal_head(Some(p), ev[2].head());
        assert!(segment_check(p, &keys, Some(earlier), Some(&ev[3]), &ev[4..], true).is_ok());
        // The head row removed: truncated whatever the page.
        let err = segment_check(p, &keys, None, Some(&ev[1]), &ev[2..3], false).unwrap_err();
        assert_eq!(err.problem, BreakKind::Truncated);
    }

    /// An audit log over a vector, for the service's page verification.
    struct VecLog {
        events: Vec<AuditEvent>,
        sealed: Option<SealedHead>,
    }

    #[async_trait::async_trait]
    impl crate::ports::AuditLog for VecLog {
        async fn events(
            &self,
            _chain: Option<ProjectId>,
            after: u64,
            limit: usize,
        ) -> crate::ports::StoreResult<Vec<AuditEvent>> {
            Ok(self
                .events
                .iter()
                .filter(|e| e.seq > after)
                .take(limit)
                .cloned()
                .collect())
        }
        async fn head(
            &self,
            _chain: Option<ProjectId>,
        ) -> crate::ports::StoreResult<Option<ChainHead>> {
            Ok(self.events.last().map(AuditEvent::head))
        }
        async fn sealed_head(
            &self,
            _chain: Option<ProjectId>,
        ) -> crate::ports::StoreResult<Option<SealedHead>> {
            Ok(self.sealed)
        }
        async fn events_for_user_page(
            &self,
            _user: UserId,
            _after: Option<UserEventCursor>,
            _limit: usize,
        ) -> crate::ports::StoreResult<Vec<AuditEvent>> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn verify_segment_finds_an_edit_only_in_the_page_that_holds_it() {
        let keys = random_keys();
        let (p, ev, sealed) = keyed_chain(7, &keys);
        let intact = AuditService::keyed(
            VecLog {
                events: ev.clone(),
                sealed: Some(sealed),
            },
            keys.clone(),
        );
        let first = intact.verify_segment(Some(p), 0, 3).await.unwrap();
        assert_eq!(
            (
                first.status.after,
                first.status.through,
                first.status.events
            ),
            (0, 3, 3)
        );
        assert!(!first.status.reached_head && first.status.head.is_none());
        // A full page that ends at the head says so (one event more was
        // read to know).
        let full = intact.verify_segment(Some(p), 4, 3).await.unwrap();
        assert_eq!((full.status.through, full.status.events), (7, 3));
        assert!(full.status.reached_head);
        assert_eq!(full.events, ev[4..].to_vec());
        let last = intact.verify_segment(Some(p), 6, 3).await.unwrap();
        assert_eq!((last.status.through, last.status.events), (7, 1));
        assert!(last.status.reached_head);
        assert_eq!(last.status.head, Some(ev[6].head()));
        assert!(last.status.keyed);
        // Past the end: nothing to check, the head was before.
        let past = intact.verify_segment(Some(p), 9, 3).await.unwrap();
        assert_eq!((past.status.through, past.status.events), (9, 0));
        // A limit outside 1..=1000 is refused, not clamped.
        for bad in [0, MAX_PAGE + 1] {
            assert!(matches!(
                intact.verify_segment(Some(p), 0, bad).await,
                Err(crate::Error::InvalidInput(_))
            ));
        }

        let mut edited = ev.clone();
        if let EventKind::Billing { amount_minor, .. } = &mut edited[4].kind {
            *amount_minor += 1;
        }
        let svc = AuditService::keyed(
            VecLog {
                events: edited,
                sealed: Some(sealed),
            },
            keys.clone(),
        );
        let brk = |r: crate::Result<VerifiedPage>| match r {
            Err(crate::Error::Audit(b)) => (b.seq, b.problem),
            other => panic!("not a break: {other:?}"),
        };
        assert!(svc.verify_segment(Some(p), 0, 3).await.is_ok());
        assert_eq!(
            brk(svc.verify_segment(Some(p), 3, 3).await),
            (5, BreakKind::ContentEdited)
        );
        // The next page checks its predecessor, the edited event.
        assert_eq!(
            brk(svc.verify_segment(Some(p), 5, 3).await),
            (5, BreakKind::ContentEdited)
        );

        // Events deleted from the middle: the page after the gap says so.
        let mut gap = ev.clone();
        gap.remove(3);
        let svc = AuditService::keyed(
            VecLog {
                events: gap,
                sealed: Some(sealed),
            },
            keys.clone(),
        );
        assert_eq!(
            brk(svc.verify_segment(Some(p), 4, 3).await),
            (4, BreakKind::Sequence)
        );
        // Cut off at the end: the last page, and a page after it.
        let svc = AuditService::keyed(
            VecLog {
                events: ev[..5].to_vec(),
                sealed: Some(sealed),
            },
            keys.clone(),
        );
        assert_eq!(
            brk(svc.verify_segment(Some(p), 3, 3).await),
            (6, BreakKind::Truncated)
        );
        assert_eq!(
            brk(svc.verify_segment(Some(p), 6, 3).await),
            (6, BreakKind::Truncated)
        );
        // Also when the last page is full.
        assert_eq!(
            brk(svc.verify_segment(Some(p), 2, 3).await),
            (6, BreakKind::Truncated)
        );
        assert!(svc.verify_segment(Some(p), 1, 3).await.is_ok());
        // An empty project chain was cut.
        let svc = AuditService::keyed(
            VecLog {
                events: Vec::new(),
                sealed: None,
            },
            keys,
        );
        assert_eq!(
            brk(svc.verify_segment(Some(p), 0, 3).await),
            (1, BreakKind::Truncated)
        );
    }

    fn cursor_strategy() -> impl Strategy<Value = UserEventCursor> {
        (
            CURSOR_MIN_MICROS..=CURSOR_MAX_MICROS,
            proptest::option::of(any::<[u8; 16]>()),
            1..=i64::MAX as u64,
        )
            .prop_map(|(micros, chain, seq)| {
                let at = DateTime::from_timestamp_micros(micros).unwrap();
                UserEventCursor::new(at, chain.map(ProjectId::from_bytes), seq).unwrap()
            })
    }

    proptest! {
        /// Every cursor's text parses back to it.
        #[test]
        fn cursor_text_round_trips(c in cursor_strategy()) {
            let text = c.to_string();
            prop_assert_eq!(text.parse::<UserEventCursor>(), Ok(c));
            let json = serde_json::to_string(&c).unwrap();
            prop_assert_eq!(serde_json::from_str::<UserEventCursor>(&json).unwrap(), c);
        }

        /// The parser is total and canonical: any text either is refused
        /// with a typed error or is the one text of the cursor it names.
        #[test]
        fn cursor_parser_is_total_and_canonical(text in r"-?[0-9]{0,20}\.(global|prj_[0-9a-fA-F]{30,33}|[a-z_]{0,8})\.-?[0-9]{0,21}|\PC{0,64}") {
            if let Ok(c) = text.parse::<UserEventCursor>() {
                prop_assert_eq!(c.to_string(), text);
            }
        }
    }

    #[test]
    fn cursors_refuse_what_is_not_their_one_text() {
        let p = "prj_00112233445566778899aabbccddeeff";
        let ok = format!("1795996800000000.{p}.7");
        let c: UserEventCursor = ok.parse().unwrap();
        assert_eq!(
            (c.seq(), c.chain().map(|p| p.to_string())),
            (7, Some(p.to_owned()))
        );
        assert_eq!(c.at().timestamp(), 1_795_996_800);
        assert_eq!(
            "-1.global.1"
                .parse::<UserEventCursor>()
                .unwrap()
                .at()
                .timestamp_micros(),
            -1
        );
        for bad in [
            "",
            "1.global",
            "1.global.1.1",
            "01.global.1",
            "-0.global.1",
            "+1.global.1",
            "1.global.0",
            "1.global.01",
            "1.global.9223372036854775808",
            "1.global.-1",
            "1.GLOBAL.1",
            "1.prj_00112233445566778899AABBCCDDEEFF.1",
            "1.prj_0011.1",
            "1.key_00112233445566778899aabbccddeeff.1",
            "253402300800000000.global.1",
            "-62135596800000001.global.1",
            "99999999999999999999.global.1",
            " 1.global.1",
        ] {
            assert!(bad.parse::<UserEventCursor>().is_err(), "{bad:?}");
        }
        assert!(
            "253402300799999999.global.9223372036854775807"
                .parse::<UserEventCursor>()
                .is_ok()
        );
        assert!(
            "-62135596800000000.global.1"
                .parse::<UserEventCursor>()
                .is_ok()
        );
        // Ordered as the export is: time, then the global chain first, then seq.
        let at = DateTime::from_timestamp(1_795_996_800, 0).unwrap();
        let global = UserEventCursor::new(at, None, 9).unwrap();
        let project = UserEventCursor::new(at, Some(ProjectId::random()), 1).unwrap();
        let later = UserEventCursor::new(at + chrono::Duration::microseconds(1), None, 1).unwrap();
        assert!(global < project && project < later);
        assert!(UserEventCursor::new(at, None, 0).is_err());
    }

    #[test]
    fn currency_is_validated() {
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
        assert_eq!(Currency::parse("USD").unwrap().as_str(), "USD");
    }

    #[derive(Debug, Clone)]
    enum Tamper {
        EditAmount(usize, i64),
        EditActor(usize),
        EditTime(usize, i64),
        EditIp(usize),
        Delete(usize),
        Swap(usize, usize),
        Duplicate(usize),
        Rehash(usize, i64),
    }

    fn tamper() -> impl Strategy<Value = Tamper> {
        prop_oneof![
            (0..8usize, 1..1000i64).prop_map(|(i, a)| Tamper::EditAmount(i, a)),
            (0..8usize).prop_map(Tamper::EditActor),
            (0..8usize, 1..100_000i64).prop_map(|(i, s)| Tamper::EditTime(i, s)),
            (0..8usize).prop_map(Tamper::EditIp),
            (0..8usize).prop_map(Tamper::Delete),
            (0..8usize, 0..8usize).prop_map(|(a, b)| Tamper::Swap(a, b)),
            (0..8usize).prop_map(Tamper::Duplicate),
            (0..8usize, 1..1000i64).prop_map(|(i, a)| Tamper::Rehash(i, a)),
        ]
    }

    proptest! {
        /// Any edit, reorder or deletion of stored events is caught, at or
        /// before the link that was touched.
        #[test]
        fn any_tampering_is_caught(t in tamper()) {
            let (p, mut ev) = chain(8);
            let head = ev[7].head();
            let touched: u64;
            match t {
                Tamper::EditAmount(i, a) => {
                    if let EventKind::Billing { amount_minor, .. } = &mut ev[i].kind { *amount_minor += a; }
                    touched = ev[i].seq;
                }
                Tamper::EditActor(i) => { ev[i].actor = Actor::User(UserId::random()); touched = ev[i].seq; }
                Tamper::EditTime(i, s) => { ev[i].at += chrono::Duration::seconds(s); touched = ev[i].seq; }
                Tamper::EditIp(i) => { ev[i].ip = Some("198.51.100.7".parse().unwrap()); touched = ev[i].seq; }
                Tamper::Delete(i) => { touched = ev[i].seq; ev.remove(i); }
                Tamper::Swap(a, b) => {
                    prop_assume!(a != b);
                    ev.swap(a, b);
                    touched = a.min(b) as u64 + 1;
                }
                Tamper::Duplicate(i) => { let e = ev[i].clone(); ev.insert(i, e); touched = ev[i].seq + 1; }
                Tamper::Rehash(i, a) => {
                    // An attacker who edits and recomputes the event's own
                    // hash still breaks the next link (or the anchor).
                    if let EventKind::Billing { amount_minor, .. } = &mut ev[i].kind { *amount_minor += a; }
                    ev[i].hash = event_hash(&ev[i]);
                    touched = ev[i].seq;
                }
            }
            let err = verify_chain(Some(p), &ev, Some(head)).unwrap_err();
            prop_assert!(err.seq <= touched + 1, "break {err:?} reported after touched {touched}");
        }
    }
}

/// A billing event as reported by the billing system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingEvent {
    /// Kind.
    pub kind: BillingKind,
    /// Amount in minor units; purchases and refunds must be positive.
    pub amount_minor: i64,
    /// Currency.
    pub currency: Currency,
    /// Provider reference (at most 200 printable characters).
    pub reference: Option<String>,
}

/// Records a billing event in the project's chain. Needs a billing grant.
///
/// # Errors
/// [`crate::Error::InvalidInput`] for a non-positive purchase or refund, a
/// zero adjustment, or a bad reference.
pub async fn record_billing<S: crate::ports::AuditSink + ?Sized>(
    sink: &S,
    clock: &dyn crate::clock::Clock,
    grant: &crate::access::Grant<crate::access::surface::Billing>,
    event: BillingEvent,
) -> crate::Result<AuditEvent> {
    let ok_amount = match event.kind {
        BillingKind::CreditPurchase | BillingKind::Refund => event.amount_minor > 0,
        BillingKind::BalanceAdjustment => event.amount_minor != 0,
    };
    if !ok_amount {
        return Err(crate::Error::InvalidInput(
            "purchases and refunds need a positive amount, adjustments a non-zero one",
        ));
    }
    if let Some(r) = &event.reference
        && (r.is_empty() || r.chars().count() > 200 || r.chars().any(char::is_control))
    {
        return Err(crate::Error::InvalidInput(
            "billing reference must be 1-200 printable characters",
        ));
    }
    let draft = AuditDraft {
        project: Some(grant.project_id()),
        at: clock.now(),
        actor: grant.actor(),
        ip: grant.ip(),
        subject: None,
        kind: EventKind::Billing {
            billing: event.kind,
            amount_minor: event.amount_minor,
            currency: event.currency,
            reference: event.reference,
        },
    };
    Ok(sink.append(draft).await?)
}
