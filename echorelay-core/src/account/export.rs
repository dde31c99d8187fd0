//! The GDPR Article 15 export: everything echorelay keeps about one
//! account, as one JSON document, without a single credential.
//!
//! The format (`"format": "echorelay.personal-data.v1"`) is documented in
//! `docs/FORMATS.md` §3: the account (id, email, creation time, whether
//! TOTP is active), its memberships (project id, slug, role), its live
//! sessions and trusted devices (as [`super::service::AccessList`] lists
//! them), and every audit event whose actor or subject it is. Password
//! hashes, TOTP seeds, backup-code hashes and token hashes are never part
//! of it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::access::Role;
use crate::audit::{Actor, AuditEvent};
use crate::ids::{ProjectId, UserId};
use crate::ports::{AccountStore, AuditLog, ConfigStore, MembershipStore};
use crate::{Result, StoreError};

use super::service::AccessList;

/// The format name written into every export.
pub const FORMAT: &str = "echorelay.personal-data.v1";

/// One account's personal data.
#[derive(Debug, Clone, Serialize)]
pub struct PersonalData {
    /// Always [`FORMAT`].
    pub format: &'static str,
    /// When the export was made.
    pub generated_at: DateTime<Utc>,
    /// The account.
    pub account: AccountData,
    /// Projects the account is a member of.
    pub memberships: Vec<MembershipData>,
    /// Live sessions and trusted devices.
    #[serde(flatten)]
    pub access: AccessList,
    /// Every audit event whose actor or subject is the account, ordered by
    /// time, then chain, then sequence.
    pub audit_events: Vec<AuditEvent>,
}

/// The account itself, without credentials.
#[derive(Debug, Clone, Serialize)]
pub struct AccountData {
    /// Id.
    pub id: UserId,
    /// Login email.
    pub email: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Whether TOTP is active (the seed itself is not exported).
    pub totp_active: bool,
}

/// A membership.
#[derive(Debug, Clone, Serialize)]
pub struct MembershipData {
    /// The project.
    pub project: ProjectId,
    /// Its slug now (`None` if the project is gone).
    pub slug: Option<String>,
    /// The account's role there.
    pub role: Role,
}

/// Assembles `user`'s export from `store` and its `access` list (from
/// [`super::service::AccountService::access_list`]). Only for the account
/// itself (the caller authenticated as `user`) or an operator answering
/// its request.
///
/// # Errors
/// `Store(NotFound)` for an unknown account; store errors.
pub async fn personal_data<S>(
    store: &S,
    access: AccessList,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<PersonalData>
where
    S: AccountStore + MembershipStore + AuditLog + ConfigStore + ?Sized,
{
    let account = store
        .account(user)
        .await?
        .ok_or(StoreError::NotFound { kind: "account" })?;
    let totp_active = store.totp(user).await?.is_some_and(|t| t.active);
    let mut memberships = Vec::new();
    for (project, role) in store.memberships_of(user).await? {
        let slug = store.project(project).await?.map(|p| p.slug.to_string());
        memberships.push(MembershipData {
            project,
            slug,
            role,
        });
    }
    // Only events about this account, whatever the store returned: an
    // export must never carry another person's data.
    let audit_events = store
        .events_for_user(user)
        .await?
        .into_iter()
        .filter(|e| e.actor == Actor::User(user) || e.subject == Some(user))
        .collect();
    Ok(PersonalData {
        format: FORMAT,
        generated_at: now,
        account: AccountData {
            id: account.id,
            email: account.email,
            created_at: account.created_at,
            totp_active,
        },
        memberships,
        access,
        audit_events,
    })
}
