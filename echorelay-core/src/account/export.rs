//! The GDPR Article 15 export: everything echorelay keeps about one
//! account, as JSON documents, without a single credential.
//!
//! The format (`"format": "echorelay.personal-data.v2"`) is documented in
//! `docs/FORMATS.md` §3.4: the account (id, email, creation time, whether
//! TOTP is active), its memberships (project id, slug, role), its live
//! sessions and trusted devices (as [`super::service::AccessList`] lists
//! them), and the audit events whose actor or subject it is. Password
//! hashes, TOTP seeds, backup-code hashes and token hashes are never part
//! of it.
//!
//! The audit events are paged: one document carries at most
//! [`EXPORT_PAGE`] of them, in the order of
//! [`AuditLog::events_for_user_page`], and `next_after` (a
//! [`UserEventCursor`]) names where the next document's start; the last
//! document has none. Every document carries the account, memberships and
//! access list as they are when it is made (small: sessions and devices
//! are capped per account), so each stands alone. (v1 was one document
//! with every event and no `next_after`.)
//!
//! Nor is anyone else's data: in an event the account did not do itself
//! (an owner changed its membership, a key acted on it), the actor and
//! the source IP are redacted ([`ExportedEvent`]), and so is a subject
//! other than the account. The event's id, chain position and hash stay,
//! so the holder can point the operator at the full event; the hash does
//! not let anyone confirm a guessed IP without the actor's random id.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::access::Role;
use crate::audit::{Actor, AuditEvent, EventKind, Hash32, UserEventCursor};
use crate::ids::{EventId, ProjectId, UserId};
use crate::ports::{AccountStore, AuditLog, ConfigStore, MembershipStore};
use crate::{Result, StoreError};

use super::service::AccessList;

/// The format name written into every export.
pub const FORMAT: &str = "echorelay.personal-data.v2";

/// Most audit events one export document carries.
pub const EXPORT_PAGE: usize = 1000;

/// One account's personal data.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PersonalData {
    /// Always [`FORMAT`].
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
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
    /// Audit events whose actor or subject is the account, ordered by
    /// time, then chain, then sequence; other people redacted. At most
    /// [`EXPORT_PAGE`]: the ones after the request's cursor.
    pub audit_events: Vec<ExportedEvent>,
    /// Where the next document's events start (`GET
    /// /v1/me/export?after=…`); absent on the document with the last
    /// events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<UserEventCursor>,
}

/// An audit event as the export shows it: the stored event, with what
/// identifies anyone but the account holder left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportedEvent {
    /// The event's id.
    pub id: EventId,
    /// Position in its chain, from 1.
    pub seq: u64,
    /// The chain: a project, or `None` for the global chain.
    pub project: Option<ProjectId>,
    /// When (UTC).
    pub at: DateTime<Utc>,
    /// Who: the account holder or echorelay itself (`System`); `None` for
    /// anyone else (another user, an API key), redacted.
    pub actor: Option<Actor>,
    /// The source IP, only when the account holder is the actor.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub ip: Option<IpAddr>,
    /// The user the event is about: the account holder, or `None` (none,
    /// or someone else, redacted).
    pub subject: Option<UserId>,
    /// What.
    pub kind: EventKind,
    /// The stored event's hash (the link in its chain).
    pub hash: Hash32,
}

impl ExportedEvent {
    /// `event` as `holder`'s export shows it.
    pub fn redacted(event: AuditEvent, holder: UserId) -> Self {
        let by_holder = event.actor == Actor::User(holder);
        let actor = match event.actor {
            Actor::System => Some(Actor::System),
            a if by_holder => Some(a),
            _ => None,
        };
        Self {
            id: event.id,
            seq: event.seq,
            project: event.project,
            at: event.at,
            actor,
            ip: event.ip.filter(|_| by_holder),
            subject: event.subject.filter(|s| *s == holder),
            kind: event.kind,
            hash: event.hash,
        }
    }
}

/// The account itself, without credentials.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MembershipData {
    /// The project.
    pub project: ProjectId,
    /// Its slug now (`None` if the project is gone).
    pub slug: Option<String>,
    /// The account's role there.
    pub role: Role,
}

/// Assembles one document of `user`'s export from `store` and its
/// `access` list (from
/// [`super::service::AccountService::access_list`]): the audit events
/// after `after` (`None`: from the first), at most [`EXPORT_PAGE`], and
/// the cursor of the next document when this one is full. Only for the
/// account itself (the caller authenticated as `user`) or an operator
/// answering its request.
///
/// # Errors
/// `Store(NotFound)` for an unknown account; store errors.
pub async fn personal_data<S>(
    store: &S,
    access: AccessList,
    user: UserId,
    now: DateTime<Utc>,
    after: Option<UserEventCursor>,
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
    let page = store.events_for_user_page(user, after, EXPORT_PAGE).await?;
    // A full page: the next one starts after its last event (of the
    // store's page, before the filter below).
    let next_after = match page.last() {
        Some(last) if page.len() == EXPORT_PAGE => {
            Some(UserEventCursor::of(last).map_err(|_| {
                crate::Error::InvalidInput("an audit event's position has no cursor")
            })?)
        }
        _ => None,
    };
    // Only events about this account, whatever the store returned: an
    // export must never carry another person's data.
    let audit_events = page
        .into_iter()
        .filter(|e| e.actor == Actor::User(user) || e.subject == Some(user))
        .map(|e| ExportedEvent::redacted(e, user))
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
        next_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{ConfigEntity, ConfigOp};
    use crate::ids::KeyId;

    fn event(actor: Actor, subject: Option<UserId>) -> AuditEvent {
        AuditEvent {
            id: EventId::random(),
            seq: 7,
            project: Some(ProjectId::random()),
            at: DateTime::<Utc>::UNIX_EPOCH,
            actor,
            ip: Some("198.51.100.7".parse().unwrap()),
            subject,
            kind: EventKind::Config {
                entity: ConfigEntity::Line,
                op: ConfigOp::Create,
                id: "x".into(),
            },
            prev_hash: Hash32::default(),
            hash: Hash32::default(),
            tag: None,
        }
    }

    /// Issue 16 (9a): another person's id and address never reach the
    /// holder's export; the holder's own stay.
    #[test]
    fn other_people_are_redacted_the_holder_is_not() {
        let (me, owner) = (UserId::random(), UserId::random());
        let mine = ExportedEvent::redacted(event(Actor::User(me), Some(owner)), me);
        assert_eq!(mine.actor, Some(Actor::User(me)));
        assert_eq!(mine.ip, Some("198.51.100.7".parse().unwrap()));
        assert_eq!(mine.subject, None, "the other member I acted on");

        for actor in [Actor::User(owner), Actor::ApiKey(KeyId::random())] {
            let about_me = ExportedEvent::redacted(event(actor, Some(me)), me);
            assert_eq!(about_me.actor, None);
            assert_eq!(about_me.ip, None);
            assert_eq!(about_me.subject, Some(me));
            let text = serde_json::to_string(&about_me).unwrap();
            assert!(!text.contains(&owner.to_string()), "{text}");
            assert!(!text.contains("198.51.100.7"), "{text}");
        }
        let system = ExportedEvent::redacted(event(Actor::System, Some(me)), me);
        assert_eq!(system.actor, Some(Actor::System));
        assert_eq!(system.ip, None);
    }
}
