//! SECRET_KEY rotation: one pass over everything the vault has sealed
//! (invariant S4 across a key change).
//!
//! After a new SECRET_KEY becomes current (the old one kept as *previous*
//! in the [`Keyring`](crate::vault::Keyring)), [`Rewrap::run`] opens every
//! sealed value with whichever key sealed it and seals it again under the
//! current key:
//!
//! | kind | where | context (project, record, field) |
//! |---|---|---|
//! | [`SealedKind::TargetSecret`] | target bearer token, basic-auth password, signing secret | project id, target id, `target.*` |
//! | [`SealedKind::TotpSeed`] | an account's TOTP seed (active or pending) | `accounts`, user id, `account.totp_seed` |
//! | [`SealedKind::PendingReveal`] | an auto-rotated API key waiting for its reveal | project id, key id, `api_key.pending_reveal` |
//!
//! A kind sealed by a later version is added to [`SealedKind`] and to the
//! pass here, so the pass stays the one place that knows them all.
//!
//! The pass is **paged and resumable**: [`Rewrap::page`] handles at most
//! `limit` records after a [`RewrapCursor`] and returns the next cursor
//! (serializable, for a job that stops and resumes). Each write is
//! **conditional**: a target is written back compare-and-swap on its
//! version, a TOTP seed or pending reveal only if it is still the
//! ciphertext that was opened, so a concurrent edit is never overwritten
//! with stale values (a lost race is re-read and retried). A record that
//! fails to open is **reported by id** and does not stop the pass.
//!
//! [`Rewrap::key_usage`] counts the stored ciphertexts per vault key id:
//! once the old key's count is zero, it can leave the keyring.
//!
//! ```text
//! 1. SECRET_KEY=new, SECRET_KEY_PREVIOUS=old   (deploy)
//! 2. Rewrap::run                               (until report.is_complete())
//! 3. Rewrap::key_usage → old key id absent     (nothing sealed under it)
//! 4. drop SECRET_KEY_PREVIOUS                  (deploy)
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::audit::{Actor, AuditDraft, EventKind};
use crate::clock::Clock;
use crate::config::{StoredAuth, Target, Write, fields};
use crate::error::{Error, Result, StoreError};
use crate::ids::{KeyId, ProjectId, UserId};
use crate::keys::{REVEAL_FIELD, reveal_context};
use crate::ports::{AccountStore, AuditSink, ConfigStore, KeyStore};
use crate::vault::{Ciphertext, SecretContext, SecretVault};

/// How often a lost race on one record is re-read and retried before the
/// record is reported as a conflict (to be picked up by the next pass).
const RETRIES: usize = 3;

/// What kind of sealed value a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SealedKind {
    /// A target's outbound secrets.
    TargetSecret,
    /// An account's TOTP seed.
    TotpSeed,
    /// An auto-rotated API key's sealed plaintext.
    PendingReveal,
}

impl SealedKind {
    /// Every kind, in the order the pass visits them.
    pub const ALL: [SealedKind; 3] = [
        SealedKind::TargetSecret,
        SealedKind::TotpSeed,
        SealedKind::PendingReveal,
    ];

    fn next(self) -> Option<SealedKind> {
        let i = Self::ALL.iter().position(|k| *k == self)?;
        Self::ALL.get(i + 1).copied()
    }
}

/// One record that holds sealed values: its kind and id (as text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRecord {
    /// The kind.
    pub kind: SealedKind,
    /// The record's id: target, user or key id.
    pub id: String,
}

/// Where a pass stands: the kind being visited and the last record done.
/// Serializes to JSON so a job can persist it and resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewrapCursor {
    kind: SealedKind,
    after: Option<String>,
}

impl Default for RewrapCursor {
    fn default() -> Self {
        Self::start()
    }
}

impl RewrapCursor {
    /// The beginning of a pass.
    pub fn start() -> Self {
        Self {
            kind: SealedKind::TargetSecret,
            after: None,
        }
    }

    /// The kind the cursor is in.
    pub fn kind(&self) -> SealedKind {
        self.kind
    }

    fn after<T: std::str::FromStr>(&self) -> Result<Option<T>> {
        self.after
            .as_deref()
            .map(|s| {
                s.parse()
                    .map_err(|_| Error::InvalidInput("rewrap cursor names a malformed id"))
            })
            .transpose()
    }
}

/// What one page of the pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapPage {
    /// Records moved to the current key.
    pub rewrapped: usize,
    /// Records already sealed under the current key.
    pub current: usize,
    /// Records whose values did not open (unknown key, tampering, wrong
    /// context): left as they are, named here.
    pub failed: Vec<SealedRecord>,
    /// Records that kept changing under the pass (three lost races):
    /// left for the next pass.
    pub conflicts: Vec<SealedRecord>,
    /// Where to continue; `None` when the pass is done.
    pub next: Option<RewrapCursor>,
}

/// What a whole pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Records moved to the current key.
    pub rewrapped: usize,
    /// Records already sealed under the current key.
    pub current: usize,
    /// Records whose values did not open.
    pub failed: Vec<SealedRecord>,
    /// Records left for the next pass after repeated lost races.
    pub conflicts: Vec<SealedRecord>,
}

impl RewrapReport {
    /// Whether every record is now sealed under the current key.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && self.conflicts.is_empty()
    }
}

/// How many stored ciphertexts each vault key sealed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUsage {
    /// Ciphertext count per vault key id.
    pub by_key: BTreeMap<crate::vault::VaultKeyId, usize>,
}

impl KeyUsage {
    /// Whether anything stored is still sealed under `key`: while it is,
    /// `key` must stay in the keyring.
    pub fn in_use(&self, key: crate::vault::VaultKeyId) -> bool {
        // Only counted keys have an entry, and every count is at least 1.
        self.by_key.contains_key(&key)
    }
}

enum Outcome {
    Rewrapped,
    Current,
    Gone,
}

/// A stored record that holds sealed values.
enum Holder {
    Target(Target),
    Totp(crate::account::TotpRecord),
    Reveal(crate::keys::KeyRecord),
}

impl Holder {
    fn record(&self) -> SealedRecord {
        match self {
            Holder::Target(t) => record(SealedKind::TargetSecret, t.id),
            Holder::Totp(t) => record(SealedKind::TotpSeed, t.user),
            Holder::Reveal(k) => record(SealedKind::PendingReveal, k.id),
        }
    }

    /// The record's ciphertexts.
    fn sealed(&self) -> Vec<&Ciphertext> {
        match self {
            Holder::Target(t) => sealed_fields(t).map(|(_, ct)| ct).collect(),
            Holder::Totp(t) => vec![&t.seed],
            Holder::Reveal(k) => k.pending_reveal.iter().map(|p| &p.ciphertext).collect(),
        }
    }
}

/// The SECRET_KEY rewrap pass and the key-usage query. Operator actions:
/// no grant; every rewritten record gets a system audit event.
#[derive(Debug, Clone)]
pub struct Rewrap<S, V> {
    store: S,
    vault: V,
    clock: Arc<dyn Clock>,
}

impl<S, V> Rewrap<S, V>
where
    S: KeyStore + ConfigStore + AccountStore + AuditSink,
    V: SecretVault,
{
    /// The pass over `store`, sealing with `vault`'s current key.
    pub fn new(store: S, vault: V, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            vault,
            clock,
        }
    }

    /// Runs the whole pass, `page_size` records at a time.
    pub async fn run(&self, page_size: usize) -> Result<RewrapReport> {
        let mut report = RewrapReport::default();
        let mut cursor = Some(RewrapCursor::start());
        while let Some(c) = cursor {
            let page = self.page(&c, page_size).await?;
            report.rewrapped += page.rewrapped;
            report.current += page.current;
            report.failed.extend(page.failed);
            report.conflicts.extend(page.conflicts);
            cursor = page.next;
        }
        Ok(report)
    }

    /// Handles at most `limit` records after `cursor` (`limit` 0 is taken
    /// as 1). A failure to reach the store ends the page with an error;
    /// resume from the same cursor.
    pub async fn page(&self, cursor: &RewrapCursor, limit: usize) -> Result<RewrapPage> {
        let (batch, next) = self.fetch(cursor, limit).await?;
        let mut page = RewrapPage {
            next,
            ..RewrapPage::default()
        };
        for rec in batch {
            let outcome = match &rec {
                Holder::Target(t) => self.target(t.clone()).await,
                Holder::Totp(t) => self.totp(t.user, t.seed.clone()).await,
                Holder::Reveal(k) => match &k.pending_reveal {
                    Some(p) => self.reveal(k.project, k.id, p.ciphertext.clone()).await,
                    None => Ok(Outcome::Gone),
                },
            };
            tally(&mut page, rec.record(), outcome)?;
        }
        Ok(page)
    }

    /// Counts stored ciphertexts per vault key, over every sealed kind,
    /// `page_size` records at a time.
    pub async fn key_usage(&self, page_size: usize) -> Result<KeyUsage> {
        let mut usage = KeyUsage::default();
        let mut cursor = Some(RewrapCursor::start());
        while let Some(c) = cursor {
            let (batch, next) = self.fetch(&c, page_size).await?;
            for rec in &batch {
                for ct in rec.sealed() {
                    *usage.by_key.entry(ct.key_id()).or_default() += 1;
                }
            }
            cursor = next;
        }
        Ok(usage)
    }

    /// One page of records of the cursor's kind, and where the next page
    /// starts: the same kind after the last record when the page was full,
    /// otherwise the next kind (`None` after the last).
    async fn fetch(
        &self,
        cursor: &RewrapCursor,
        limit: usize,
    ) -> Result<(Vec<Holder>, Option<RewrapCursor>)> {
        let limit = limit.max(1);
        let batch: Vec<Holder> = match cursor.kind {
            SealedKind::TargetSecret => self
                .store
                .targets_page(cursor.after()?, limit)
                .await?
                .into_iter()
                .map(Holder::Target)
                .collect(),
            SealedKind::TotpSeed => self
                .store
                .totp_page(cursor.after()?, limit)
                .await?
                .into_iter()
                .map(Holder::Totp)
                .collect(),
            SealedKind::PendingReveal => self
                .store
                .keys_with_pending_reveal(cursor.after()?, limit)
                .await?
                .into_iter()
                .map(Holder::Reveal)
                .collect(),
        };
        let next = match batch.last() {
            Some(last) if batch.len() >= limit => Some(RewrapCursor {
                kind: cursor.kind,
                after: Some(last.record().id),
            }),
            _ => cursor
                .kind
                .next()
                .map(|kind| RewrapCursor { kind, after: None }),
        };
        Ok((batch, next))
    }

    fn draft(&self, project: Option<ProjectId>, sealed: SealedKind, id: String) -> AuditDraft {
        AuditDraft {
            project,
            at: self.clock.now(),
            actor: Actor::System,
            ip: None,
            subject: None,
            kind: EventKind::Rewrap { sealed, id },
        }
    }

    /// Rewraps one target, compare-and-swap on its version; a lost race is
    /// re-read and retried.
    async fn target(&self, mut t: Target) -> Result<Outcome> {
        for _ in 0..RETRIES {
            if sealed_fields(&t).all(|(_, ct)| self.vault.is_current(ct)) {
                return Ok(Outcome::Current);
            }
            let (p, r) = (t.project.to_string(), t.id.to_string());
            let mut next = t.clone();
            for (field, ct) in sealed_fields_mut(&mut next) {
                let ctx = SecretContext {
                    project: &p,
                    record: &r,
                    field: &field,
                };
                *ct = self.vault.rewrap(ct, &ctx)?;
            }
            let audit = self.draft(Some(t.project), SealedKind::TargetSecret, r);
            match self
                .store
                .apply(
                    crate::config::ConfigChange::PutTarget(Write::Update, next),
                    audit,
                )
                .await
            {
                Ok(()) => return Ok(Outcome::Rewrapped),
                Err(StoreError::Conflict { .. }) => {}
                Err(StoreError::NotFound { .. }) => return Ok(Outcome::Gone),
                Err(e) => return Err(e.into()),
            }
            match self.store.target(t.project, t.id).await? {
                Some(fresh) => t = fresh,
                None => return Ok(Outcome::Gone),
            }
        }
        Err(StoreError::Conflict {
            reason: "target kept changing during the rewrap",
        }
        .into())
    }

    /// Rewraps one TOTP seed, conditional on the stored ciphertext.
    async fn totp(&self, user: UserId, mut seed: Ciphertext) -> Result<Outcome> {
        let u = user.to_string();
        let ctx = SecretContext {
            project: crate::account::service::SEED_PROJECT,
            record: &u,
            field: crate::account::service::SEED_FIELD,
        };
        for _ in 0..RETRIES {
            if self.vault.is_current(&seed) {
                return Ok(Outcome::Current);
            }
            let new = self.vault.rewrap(&seed, &ctx)?;
            if self.store.replace_totp_seed(user, &seed, new).await? {
                let mut audit = self.draft(None, SealedKind::TotpSeed, u.clone());
                audit.subject = Some(user);
                self.store.append(audit).await?;
                return Ok(Outcome::Rewrapped);
            }
            match self.store.totp(user).await? {
                Some(fresh) => seed = fresh.seed,
                None => return Ok(Outcome::Gone),
            }
        }
        Err(StoreError::Conflict {
            reason: "TOTP factor kept changing during the rewrap",
        }
        .into())
    }

    /// Rewraps one pending reveal, conditional on the stored ciphertext.
    async fn reveal(&self, project: ProjectId, id: KeyId, mut ct: Ciphertext) -> Result<Outcome> {
        let (p, r) = reveal_context(&project, &id);
        let ctx = SecretContext {
            project: &p,
            record: &r,
            field: REVEAL_FIELD,
        };
        for _ in 0..RETRIES {
            if self.vault.is_current(&ct) {
                return Ok(Outcome::Current);
            }
            let new = self.vault.rewrap(&ct, &ctx)?;
            let audit = self.draft(Some(project), SealedKind::PendingReveal, r.clone());
            if self
                .store
                .replace_pending_reveal(id, &ct, new, audit)
                .await?
            {
                return Ok(Outcome::Rewrapped);
            }
            match self
                .store
                .key_by_id(id)
                .await?
                .and_then(|k| k.pending_reveal)
            {
                Some(fresh) => ct = fresh.ciphertext,
                None => return Ok(Outcome::Gone),
            }
        }
        Err(StoreError::Conflict {
            reason: "pending reveal kept changing during the rewrap",
        }
        .into())
    }
}

fn record(kind: SealedKind, id: impl std::fmt::Display) -> SealedRecord {
    SealedRecord {
        kind,
        id: id.to_string(),
    }
}

/// Adds one record's outcome to the page. A vault failure names the
/// record; repeated lost races name it as a conflict; a backend failure
/// ends the page (the cursor has not moved past it).
fn tally(page: &mut RewrapPage, rec: SealedRecord, outcome: Result<Outcome>) -> Result<()> {
    match outcome {
        Ok(Outcome::Rewrapped) => page.rewrapped += 1,
        Ok(Outcome::Current) | Ok(Outcome::Gone) => page.current += 1,
        Err(Error::Vault(e)) => {
            tracing::warn!(kind = ?rec.kind, id = %rec.id, error = %e, "sealed value does not open; left as is");
            page.failed.push(rec);
        }
        Err(Error::Store(StoreError::Conflict { .. })) => page.conflicts.push(rec),
        Err(e) => return Err(e),
    }
    Ok(())
}

/// A target's sealed values with the field name each is bound to.
pub(crate) fn sealed_fields(t: &Target) -> impl Iterator<Item = (Cow<'static, str>, &Ciphertext)> {
    let auth = match &t.auth {
        StoredAuth::None => None,
        StoredAuth::Bearer { token } => Some((Cow::Borrowed(fields::BEARER_TOKEN), token)),
        StoredAuth::Basic { password, .. } => {
            Some((Cow::Borrowed(fields::BASIC_PASSWORD), password))
        }
    };
    auth.into_iter()
        .chain(std::iter::once((
            Cow::Borrowed(fields::SIGNING_SECRET),
            &t.signing_secret,
        )))
        .chain(t.retired_signing_secrets.iter().map(|r| {
            (
                Cow::Owned(fields::retired_signing_secret(r.until)),
                &r.secret,
            )
        }))
}

fn sealed_fields_mut(t: &mut Target) -> Vec<(Cow<'static, str>, &mut Ciphertext)> {
    let mut out = Vec::with_capacity(2 + t.retired_signing_secrets.len());
    match &mut t.auth {
        StoredAuth::None => {}
        StoredAuth::Bearer { token } => out.push((Cow::Borrowed(fields::BEARER_TOKEN), token)),
        StoredAuth::Basic { password, .. } => {
            out.push((Cow::Borrowed(fields::BASIC_PASSWORD), password))
        }
    }
    out.push((Cow::Borrowed(fields::SIGNING_SECRET), &mut t.signing_secret));
    for r in &mut t.retired_signing_secrets {
        out.push((
            Cow::Owned(fields::retired_signing_secret(r.until)),
            &mut r.secret,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_refuses_malformed_ids() {
        let c = RewrapCursor {
            kind: SealedKind::TotpSeed,
            after: Some(UserId::random().to_string()),
        };
        let json = serde_json::to_string(&c).unwrap_or_default();
        assert_eq!(serde_json::from_str::<RewrapCursor>(&json).ok(), Some(c));
        let bad = RewrapCursor {
            kind: SealedKind::TotpSeed,
            after: Some("usr_nothex".into()),
        };
        assert!(matches!(bad.after::<UserId>(), Err(Error::InvalidInput(_))));
        assert_eq!(SealedKind::TargetSecret.next(), Some(SealedKind::TotpSeed));
        assert_eq!(SealedKind::PendingReveal.next(), None);
    }

    #[test]
    fn a_report_is_complete_only_without_failures_and_conflicts() {
        let rec = record(SealedKind::TotpSeed, "usr_x");
        let mut r = RewrapReport::default();
        assert!(r.is_complete());
        r.conflicts.push(rec.clone());
        assert!(!r.is_complete());
        r.conflicts.clear();
        r.failed.push(rec);
        assert!(!r.is_complete());
    }
}
