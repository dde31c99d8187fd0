//! Conformance checks for the port contracts written down in
//! [`echorelay_core::ports`] ("Contracts every backend keeps" and each
//! method's documentation): missing records, audit sequence numbers and
//! ordering, byte-compared emails, eviction and paging order, half-open
//! time windows, purge boundaries, all-or-nothing writes and
//! compare-and-swap versions.
//!
//! Most checks call the ports directly (`h.store`), because the contract is
//! the port's: a service would hide a backend that gets it wrong. Times are
//! whole seconds, so a backend that keeps microseconds stores them exactly.

use chrono::{DateTime, Duration, Utc};
use echorelay_core::access::Role;
use echorelay_core::access::surface::{ConfigRead, ConfigWrite, Keys};
use echorelay_core::account::password::hash_password_async;
use echorelay_core::account::service::PasswordStep;
use echorelay_core::account::{
    AccountAction, AccountRecord, AttemptScope, BackupCodeRecord, ChallengeKind, ChallengeRecord,
    DeviceRecord, IpFamily, SessionRecord,
};
use echorelay_core::audit::{
    Actor, AuditDraft, AuditEvent, BillingKind, ConfigEntity, ConfigOp, Currency, EventKind,
    verify_chain,
};
use echorelay_core::config::{
    AuthInput, ConfigChange, Line, NewTarget, Project, ProjectTree, Slug, Target, TargetPatch,
    Write,
};
use echorelay_core::error::StoreError;
use echorelay_core::ids::{
    DeviceId, EndpointId, KeyId, LineId, ProjectId, SessionId, TargetId, UserId,
};
use echorelay_core::keys::{Environment, LifecyclePolicy, MintRequest};
use echorelay_core::ports::TreeImport;
use secrecy::SecretString;

use crate::{Backend, Harness};

const PASSWORD: &str = "correct horse battery staple";

/// 32 random bytes (a token hash nobody else holds).
fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(UserId::random().as_bytes());
    b[16..].copy_from_slice(UserId::random().as_bytes());
    b
}

/// 16 random bytes.
fn random16() -> [u8; 16] {
    *UserId::random().as_bytes()
}

/// A fresh, already normalised email address.
fn random_email() -> String {
    format!("{}@example.com", &UserId::random().to_string()[4..16])
}

/// Creates an account through the port (so backends with foreign keys have
/// the row that sessions, devices, codes and attempts refer to).
async fn account<B: Backend>(h: &Harness<B>, email: &str) -> UserId {
    let hash = hash_password_async(
        SecretString::from(PASSWORD),
        crate::test_account_policy().password,
    )
    .await
    .unwrap();
    let rec = AccountRecord {
        id: UserId::random(),
        email: email.to_owned(),
        password_hash: hash,
        epoch: 0,
        created_at: h.clock_now(),
    };
    let id = rec.id;
    h.store.create_account(rec).await.unwrap();
    id
}

/// The account the store finds for exactly these email bytes.
async fn id_by_email<B: Backend>(h: &Harness<B>, email: &str) -> Option<UserId> {
    h.store.account_by_email(email).await.unwrap().map(|a| a.id)
}

fn session(
    user: UserId,
    created_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> SessionRecord {
    SessionRecord {
        id: SessionId::random(),
        token_hash: random32(),
        user,
        created_at,
        last_seen_at,
        verified_at: created_at,
        expires_at,
        ip_family: IpFamily::V4,
        epoch: 0,
    }
}

fn device(id: DeviceId, user: UserId, created_at: DateTime<Utc>) -> DeviceRecord {
    DeviceRecord {
        id,
        user,
        token_hash: random32(),
        created_at,
        expires_at: created_at + Duration::days(30),
        last_used_at: None,
        ip_family: IpFamily::V4,
        epoch: 0,
    }
}

fn challenge(user: UserId, expires_at: DateTime<Utc>) -> ChallengeRecord {
    ChallengeRecord {
        token_hash: random32(),
        user,
        kind: ChallengeKind::SecondFactor,
        expires_at,
        ip_family: IpFamily::V4,
        epoch: 0,
    }
}

/// An event that records no stored mutation: a billing event in a
/// project's chain, an account event in the global chain.
fn draft(
    chain: Option<ProjectId>,
    at: DateTime<Utc>,
    actor: Actor,
    subject: Option<UserId>,
) -> AuditDraft {
    let kind = match chain {
        Some(_) => EventKind::Billing {
            billing: BillingKind::BalanceAdjustment,
            amount_minor: 100,
            currency: Currency::parse("EUR").unwrap(),
            reference: None,
        },
        None => EventKind::Account {
            action: AccountAction::LoginSucceeded,
            failure: None,
        },
    };
    AuditDraft {
        project: chain,
        at,
        actor,
        ip: None,
        subject,
        kind,
    }
}

/// The audit draft of a configuration change made by the system.
fn config_draft(
    project: ProjectId,
    at: DateTime<Utc>,
    entity: ConfigEntity,
    op: ConfigOp,
    id: String,
) -> AuditDraft {
    AuditDraft {
        project: Some(project),
        at,
        actor: Actor::System,
        ip: None,
        subject: None,
        kind: EventKind::Config { entity, op, id },
    }
}

/// A target with a bearer token.
fn target_input() -> NewTarget {
    NewTarget {
        name: "orders".into(),
        url: "https://hooks.example.com/orders".into(),
        auth: AuthInput::Bearer(SecretString::from("tok_live_4f9a8b7c6d5e4f3a2b1c")),
        signing_secret: None,
    }
}

/// `(chain, seq)`: which event this is.
fn link(e: &AuditEvent) -> (Option<ProjectId>, u64) {
    (e.project, e.seq)
}

/// Touching a session or device that does not exist (never did, or was
/// deleted) returns `false` and creates nothing; touching a session never
/// moves `last_seen_at` backwards (`max(last_seen_at, at)`); touching a
/// device sets `last_used_at` and never its expiry
/// ([`SessionStore::touch_session`], [`AccountStore::touch_device`]).
///
/// [`SessionStore::touch_session`]: echorelay_core::ports::SessionStore::touch_session
/// [`AccountStore::touch_device`]: echorelay_core::ports::AccountStore::touch_device
pub async fn touch_on_a_missing_record_creates_nothing<B: Backend>(h: Harness<B>) {
    let now = h.clock_now();
    let user = account(&h, &random_email()).await;
    assert!(
        !h.store
            .touch_session(SessionId::random(), now)
            .await
            .unwrap(),
        "contracts: touch_session on an unknown id returned true"
    );
    assert!(
        !h.store.touch_device(DeviceId::random(), now).await.unwrap(),
        "contracts: touch_device on an unknown id returned true"
    );
    // Records that existed and are gone (an upsert would bring them back).
    let s = session(user, now, now, now + Duration::hours(12));
    let d = device(DeviceId::random(), user, now);
    h.store.insert_session(s.clone()).await.unwrap();
    h.store.add_device(d.clone(), 5).await.unwrap();
    assert!(h.store.delete_session(s.id).await.unwrap());
    assert_eq!(h.store.revoke_devices(user, Some(d.id)).await.unwrap(), 1);
    let later = now + Duration::seconds(1);
    assert!(
        !h.store.touch_session(s.id, later).await.unwrap(),
        "contracts: touch_session on a deleted session returned true"
    );
    assert!(
        !h.store.touch_device(d.id, later).await.unwrap(),
        "contracts: touch_device on a revoked device returned true"
    );
    assert!(
        h.store
            .session_by_token(&s.token_hash)
            .await
            .unwrap()
            .is_none(),
        "contracts: touch_session brought a deleted session back"
    );
    assert!(
        h.store.sessions_of(user).await.unwrap().is_empty(),
        "contracts: touch_session created a session"
    );
    assert!(
        h.store
            .device_by_token(&d.token_hash)
            .await
            .unwrap()
            .is_none(),
        "contracts: touch_device brought a revoked device back"
    );
    assert!(
        h.store.devices_of(user).await.unwrap().is_empty(),
        "contracts: touch_device created a device"
    );

    // A live session: last_seen_at = max(last_seen_at, at).
    let live = session(user, now, now, now + Duration::hours(12));
    h.store.insert_session(live.clone()).await.unwrap();
    let last_seen = |r: Option<SessionRecord>| r.expect("contracts: live session").last_seen_at;
    assert!(
        h.store
            .touch_session(live.id, now - Duration::seconds(10))
            .await
            .unwrap(),
        "contracts: touch_session on a live session returned false"
    );
    assert_eq!(
        last_seen(h.store.session_by_token(&live.token_hash).await.unwrap()),
        now,
        "contracts: touch_session moved last_seen_at backwards"
    );
    let t5 = now + Duration::seconds(5);
    assert!(h.store.touch_session(live.id, t5).await.unwrap());
    assert_eq!(
        last_seen(h.store.session_by_token(&live.token_hash).await.unwrap()),
        t5,
        "contracts: touch_session did not record a later time"
    );
    assert!(h.store.touch_session(live.id, later).await.unwrap());
    assert_eq!(
        last_seen(h.store.session_by_token(&live.token_hash).await.unwrap()),
        t5,
        "contracts: touch_session moved last_seen_at backwards"
    );
    assert_eq!(h.store.sessions_of(user).await.unwrap().len(), 1);

    // A live device: last_used_at = at, the expiry never moves.
    let dev = device(DeviceId::random(), user, now);
    h.store.add_device(dev.clone(), 5).await.unwrap();
    assert!(
        h.store.touch_device(dev.id, t5).await.unwrap(),
        "contracts: touch_device on a live device returned false"
    );
    let stored = h
        .store
        .device_by_token(&dev.token_hash)
        .await
        .unwrap()
        .expect("contracts: live device");
    assert_eq!(stored.last_used_at, Some(t5), "contracts: touch_device");
    assert_eq!(
        stored.expires_at, dev.expires_at,
        "contracts: touch_device changed the expiry"
    );
}

/// Each chain's `seq` runs 1, 2, 3, … without gaps; `events` selects by
/// sequence number (`seq > after`), ascending, at most `limit`; `head` is
/// the newest link ([`AuditLog::events`], [`AuditLog::head`]).
///
/// [`AuditLog::events`]: echorelay_core::ports::AuditLog::events
/// [`AuditLog::head`]: echorelay_core::ports::AuditLog::head
pub async fn audit_seq_is_gap_free_and_paged_by_seq<B: Backend>(h: Harness<B>) {
    let (p, _) = h.project().await;
    let chain = Some(p.id);
    let mut appended = Vec::new();
    for _ in 0..5 {
        let e = h
            .store
            .append(draft(chain, h.clock_now(), Actor::System, None))
            .await
            .unwrap();
        appended.push(e);
    }
    let all = h.store.events(chain, 0, usize::MAX).await.unwrap();
    let n = u64::try_from(all.len()).unwrap();
    // The project's creation event, then ours.
    assert_eq!(n, 6, "contracts: chain holds {n} events, expected 6");
    let seqs = |v: &[AuditEvent]| v.iter().map(|e| e.seq).collect::<Vec<u64>>();
    assert_eq!(
        seqs(&all),
        (1..=n).collect::<Vec<u64>>(),
        "contracts: audit seq is not 1..=n without gaps"
    );
    assert_eq!(
        all[1..],
        appended[..],
        "contracts: append returned another event than the stored one"
    );
    verify_chain(chain, &all, None).expect("contracts: the chain does not verify");
    assert_eq!(
        seqs(&h.store.events(chain, 2, 2).await.unwrap()),
        vec![3, 4],
        "contracts: events(after 2, limit 2)"
    );
    assert_eq!(
        seqs(&h.store.events(chain, 4, 10).await.unwrap()),
        vec![5, 6],
        "contracts: events(after 4, limit 10)"
    );
    assert!(
        h.store.events(chain, n, 10).await.unwrap().is_empty(),
        "contracts: events after the last seq is not empty"
    );
    assert!(
        h.store
            .events(chain, n, usize::MAX)
            .await
            .unwrap()
            .is_empty(),
        "contracts: events after the last seq is not empty"
    );
    assert!(
        h.store.events(chain, 0, 0).await.unwrap().is_empty(),
        "contracts: events with limit 0 is not empty"
    );
    assert_eq!(
        h.store.head(chain).await.unwrap(),
        Some(all.last().unwrap().head()),
        "contracts: head is not the last event's"
    );
}

/// The user export is ordered by time, then chain (the global chain first,
/// then projects by id), then `seq`; never by insertion order
/// ([`AuditLog::events_for_user_page`]).
///
/// [`AuditLog::events_for_user_page`]: echorelay_core::ports::AuditLog::events_for_user_page
pub async fn user_export_is_ordered_by_time_then_chain_then_seq<B: Backend>(h: Harness<B>) {
    let user = UserId::random();
    let (p, _) = h.project().await;
    let (q, _) = h.project().await;
    let (a, b) = if p.id < q.id {
        (p.id, q.id)
    } else {
        (q.id, p.id)
    };
    let t0 = h.clock_now();
    let t1 = t0 + Duration::seconds(1);
    let other = Actor::User(UserId::random());
    // Appended in an order that is neither time, chain nor seq order.
    let steps = [
        (Some(b), t0, other, Some(user)),
        (Some(b), t1, other, Some(user)),
        (Some(a), t1, other, Some(user)),
        (None, t1, other, Some(user)),
        (Some(a), t1, Actor::User(user), None),
        (None, t1, Actor::User(user), None),
    ];
    let mut appended = Vec::new();
    for (chain, at, actor, subject) in steps {
        let e = h
            .store
            .append(draft(chain, at, actor, subject))
            .await
            .unwrap();
        appended.push(link(&e));
    }
    // An event about someone else is not exported.
    h.store
        .append(draft(Some(a), t0, other, Some(UserId::random())))
        .await
        .unwrap();
    let expected: Vec<_> = [0, 3, 5, 2, 4, 1].iter().map(|&i| appended[i]).collect();
    let got: Vec<_> = h
        .store
        .events_for_user_page(user, None, 100)
        .await
        .unwrap()
        .iter()
        .map(link)
        .collect();
    assert_eq!(
        got, expected,
        "contracts: events_for_user_page is not ordered by (at, chain with global first then project id, seq)"
    );
}

/// The user export pages by cursor ([`AuditLog::events_for_user_page`]):
/// each page holds the events after the cursor (exclusive) in the export's
/// order, at most `limit`, across chains and across events with equal
/// times; walking pages of any size from `None` yields every event once,
/// in order; a cursor between events (no event at it) starts after it.
///
/// [`AuditLog::events_for_user_page`]: echorelay_core::ports::AuditLog::events_for_user_page
pub async fn user_export_pages_by_cursor_across_chains_and_equal_times<B: Backend>(h: Harness<B>) {
    use echorelay_core::audit::UserEventCursor;
    let user = UserId::random();
    let (p, _) = h.project().await;
    let (q, _) = h.project().await;
    let t0 = h.clock_now();
    let t1 = t0 + Duration::seconds(1);
    let other = Actor::User(UserId::random());
    // Equal times in three chains, several events per chain and time, and
    // someone else's events in between.
    for at in [t1, t0, t1, t0] {
        for chain in [Some(q.id), None, Some(p.id)] {
            h.store
                .append(draft(chain, at, other, Some(user)))
                .await
                .unwrap();
            h.store
                .append(draft(chain, at, other, Some(UserId::random())))
                .await
                .unwrap();
            h.store
                .append(draft(chain, at, Actor::User(user), None))
                .await
                .unwrap();
        }
    }
    let all = h.store.events_for_user_page(user, None, 100).await.unwrap();
    assert_eq!(all.len(), 24, "contracts: the user's events");
    let key = |e: &AuditEvent| (e.at, e.project, e.seq);
    assert!(
        all.windows(2).all(|w| key(&w[0]) < key(&w[1])),
        "contracts: events_for_user_page is not in (at, chain, seq) order"
    );
    let cursor = |e: &AuditEvent| UserEventCursor::of(e).unwrap();
    for size in [1, 2, 5, 7, 24, 25] {
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let page = h
                .store
                .events_for_user_page(user, after, size)
                .await
                .unwrap();
            assert!(
                page.len() <= size,
                "contracts: a page longer than its limit"
            );
            let full = page.len() == size;
            after = page.last().map(cursor);
            walked.extend(page);
            if !full {
                break;
            }
        }
        assert_eq!(
            walked.iter().map(link).collect::<Vec<_>>(),
            all.iter().map(link).collect::<Vec<_>>(),
            "contracts: walking the user's events in pages of {size}"
        );
    }
    for (i, e) in all.iter().enumerate() {
        let rest = h
            .store
            .events_for_user_page(user, Some(cursor(e)), 3)
            .await
            .unwrap();
        let want: Vec<_> = all[i + 1..].iter().take(3).map(link).collect();
        assert_eq!(
            rest.iter().map(link).collect::<Vec<_>>(),
            want,
            "contracts: the page after event {i} (the cursor is exclusive)"
        );
    }
    // A cursor at no event: the global chain at t0 with a seq between two
    // of the user's events there, and a time before everything.
    let global_t0: Vec<&AuditEvent> = all
        .iter()
        .filter(|e| e.project.is_none() && e.at == t0)
        .collect();
    let between = UserEventCursor::new(t0, None, global_t0[0].seq + 1).unwrap();
    assert_ne!(global_t0[1].seq, global_t0[0].seq + 1);
    let first = h
        .store
        .events_for_user_page(user, Some(between), 1)
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(link).collect::<Vec<_>>(),
        vec![link(global_t0[1])],
        "contracts: a cursor between events"
    );
    let before = UserEventCursor::new(t0 - Duration::seconds(1), Some(p.id), 1).unwrap();
    assert_eq!(
        h.store
            .events_for_user_page(user, Some(before), 100)
            .await
            .unwrap()
            .len(),
        24
    );
    assert!(
        h.store
            .events_for_user_page(user, Some(cursor(&all[23])), 100)
            .await
            .unwrap()
            .is_empty(),
        "contracts: the page after the last event"
    );
    assert!(
        h.store
            .events_for_user_page(user, None, 0)
            .await
            .unwrap()
            .is_empty(),
        "contracts: a page of limit 0"
    );
}

/// The listings page by id ([`KeyStore::keys_page`],
/// [`MembershipStore::members_page`]): one project's records only,
/// ascending by id, `after` exclusive, at most `limit`, a short page last.
///
/// [`KeyStore::keys_page`]: echorelay_core::ports::KeyStore::keys_page
/// [`MembershipStore::members_page`]: echorelay_core::ports::MembershipStore::members_page
pub async fn keys_and_members_page_by_id<B: Backend>(h: Harness<B>) {
    use echorelay_core::access::surface::Members;
    let (p, owner) = h.project().await;
    let (other, other_owner) = h.project().await;
    let keys = h.grant::<Keys>(&owner, &p).await;
    let foreign = h.grant::<Keys>(&other_owner, &other).await;
    let req = || MintRequest {
        environment: Environment::Test,
        role: Role::Viewer,
        label: "paged".into(),
    };
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(h.keys.mint(&keys, req()).await.unwrap().view.id);
        h.keys.mint(&foreign, req()).await.unwrap();
    }
    ids.sort();
    let members = h.grant::<Members>(&owner, &p).await;
    let mut users = vec![owner_id(&owner)];
    for _ in 0..6 {
        let u = UserId::random();
        h.config
            .set_member(&members, u, Some(Role::Viewer))
            .await
            .unwrap();
        users.push(u);
    }
    let other_members = h.grant::<Members>(&other_owner, &other).await;
    h.config
        .set_member(&other_members, UserId::random(), Some(Role::Editor))
        .await
        .unwrap();
    users.sort();

    for size in [1, 2, 3, 7, 8] {
        let mut walked = Vec::new();
        loop {
            let page = h
                .store
                .keys_page(p.id, walked.last().copied(), size)
                .await
                .unwrap();
            assert!(
                page.len() <= size,
                "contracts: keys_page longer than its limit"
            );
            assert!(
                page.iter().all(|k| k.project == p.id),
                "contracts: keys_page crossed projects"
            );
            let full = page.len() == size;
            walked.extend(page.iter().map(|k| k.id));
            if !full {
                break;
            }
        }
        assert_eq!(walked, ids, "contracts: keys_page in pages of {size}");

        let mut walked: Vec<UserId> = Vec::new();
        loop {
            let page = h
                .store
                .members_page(p.id, walked.last().copied(), size)
                .await
                .unwrap();
            assert!(
                page.len() <= size,
                "contracts: members_page longer than its limit"
            );
            let full = page.len() == size;
            walked.extend(page.iter().map(|(u, _)| *u));
            if !full {
                break;
            }
        }
        assert_eq!(walked, users, "contracts: members_page in pages of {size}");
    }
    // `after` is exclusive and need not be a listed id.
    let after_third = h.store.keys_page(p.id, Some(ids[2]), 100).await.unwrap();
    assert_eq!(
        after_third.iter().map(|k| k.id).collect::<Vec<_>>(),
        ids[3..].to_vec()
    );
    let before_all = KeyId::from_bytes([0; 16]);
    assert_eq!(
        h.store
            .keys_page(p.id, Some(before_all), 100)
            .await
            .unwrap()
            .len(),
        7
    );
    let last = *ids.last().unwrap();
    assert!(
        h.store
            .keys_page(p.id, Some(last), 100)
            .await
            .unwrap()
            .is_empty()
    );
    let roles = h.store.members_page(p.id, None, 100).await.unwrap();
    assert_eq!(
        roles.iter().filter(|(_, r)| *r == Role::Owner).count(),
        1,
        "contracts: members_page roles"
    );
    // The service refuses limits outside 1..=500, never clamps them.
    for bad in [0, 501] {
        assert!(matches!(
            h.keys.list_page(&keys, None, bad).await,
            Err(echorelay_core::Error::InvalidInput(_))
        ));
        assert!(matches!(
            h.config.members_page(&members, None, bad).await,
            Err(echorelay_core::Error::InvalidInput(_))
        ));
    }
    assert_eq!(h.keys.list_page(&keys, None, 500).await.unwrap().len(), 7);
    assert_eq!(
        h.config
            .members_page(&members, Some(users[0]), 500)
            .await
            .unwrap()
            .len(),
        6
    );
}

fn owner_id(c: &echorelay_core::access::Caller) -> UserId {
    match c.principal {
        echorelay_core::access::Principal::User(u) => u,
        _ => panic!("contracts: the project's owner is a user"),
    }
}

/// Adapters compare emails byte for byte: the port does not fold case, and
/// core normalises once before the store (trimmed, lowercased), so a login
/// typed differently still finds the account
/// ([`AccountStore::account_by_email`], "Bytes, not rules").
///
/// [`AccountStore::account_by_email`]: echorelay_core::ports::AccountStore::account_by_email
pub async fn emails_are_compared_as_bytes<B: Backend>(h: Harness<B>) {
    let local = &UserId::random().to_string()[4..16];
    let lower = format!("ana.{local}@example.com");
    let capital = format!("Ana.{local}@example.com");
    let ana = account(&h, &lower).await;
    assert!(
        id_by_email(&h, &capital).await.is_none(),
        "contracts: account_by_email folded case (citext or a case-insensitive collation?)"
    );
    assert_eq!(
        id_by_email(&h, &lower).await,
        Some(ana),
        "contracts: account_by_email did not find the stored bytes"
    );
    // Uniqueness is byte-wise too: another row whose email differs only in
    // case is another account (core never sends one; the adapter must not
    // collate).
    let other = account(&h, &capital).await;
    assert_eq!(
        id_by_email(&h, &capital).await,
        Some(other),
        "contracts: account_by_email"
    );
    assert_eq!(
        id_by_email(&h, &lower).await,
        Some(ana),
        "contracts: account_by_email"
    );

    // Through the service: normalised once, before the store.
    let typed = format!("Bob.{local}@Example.COM");
    let normalised = format!("bob.{local}@example.com");
    let bob = h
        .accounts
        .register(&typed, SecretString::from(PASSWORD), None)
        .await
        .unwrap();
    assert_eq!(
        id_by_email(&h, &normalised).await,
        Some(bob),
        "contracts: the service did not store the normalised email"
    );
    assert!(
        id_by_email(&h, &typed).await.is_none(),
        "contracts: account_by_email folded case"
    );
    let step = h
        .accounts
        .login_password(
            &format!(" {normalised} "),
            SecretString::from(PASSWORD),
            "198.51.100.7".parse().unwrap(),
            None,
        )
        .await;
    assert!(
        matches!(step, Ok(PasswordStep::EnrollmentRequired(_))),
        "contracts: login with a differently typed email failed: {step:?}"
    );
}

/// Device eviction orders by `created_at`, ties by id (raw bytes), never
/// by insertion order; the new device itself is evicted when it sorts
/// first; `devices_of` is ordered the same way
/// ([`AccountStore::add_device`], [`AccountStore::devices_of`]).
///
/// [`AccountStore::add_device`]: echorelay_core::ports::AccountStore::add_device
/// [`AccountStore::devices_of`]: echorelay_core::ports::AccountStore::devices_of
pub async fn device_eviction_orders_by_creation_then_id<B: Backend>(h: Harness<B>) {
    let t = h.clock_now();
    let user = account(&h, &random_email()).await;
    // Ids that order low < mid < high by raw bytes (the first byte) and the
    // other way round read as little-endian integers (the last byte).
    let middle = random16();
    let id = |first: u8, last: u8| {
        let mut b = middle;
        b[0] = first;
        b[15] = last;
        DeviceId::from_bytes(b)
    };
    let (low, mid, high) = (id(0x01, 0xff), id(0x02, 0x80), id(0x03, 0x00));
    let ids = |v: Vec<DeviceRecord>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
    // Inserted neither in id order nor against it: oldest-inserted would
    // evict `high`, newest-inserted `mid`.
    for d in [high, low] {
        assert_eq!(
            h.store.add_device(device(d, user, t), 2).await.unwrap(),
            Vec::<DeviceId>::new(),
            "contracts: add_device evicted below the cap"
        );
    }
    assert_eq!(
        h.store.add_device(device(mid, user, t), 2).await.unwrap(),
        vec![low],
        "contracts: add_device must evict the smallest id among equal created_at"
    );
    assert_eq!(
        ids(h.store.devices_of(user).await.unwrap()),
        vec![mid, high],
        "contracts: devices_of is not ordered by (created_at, id)"
    );
    // Older than every device at the cap: evicted at once.
    let early = device(id(0x04, 0x00), user, t - Duration::hours(1));
    assert_eq!(
        h.store.add_device(early.clone(), 2).await.unwrap(),
        vec![early.id],
        "contracts: a new device that sorts first must be the one evicted"
    );
    assert!(
        h.store
            .device_by_token(&early.token_hash)
            .await
            .unwrap()
            .is_none(),
        "contracts: the evicted new device is still there"
    );
    // created_at decides before the id.
    let late = id(0x00, 0x01);
    assert!(
        h.store
            .add_device(device(late, user, t + Duration::seconds(1)), 3)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(h.store.devices_of(user).await.unwrap()),
        vec![mid, high, late],
        "contracts: devices_of is not ordered by (created_at, id)"
    );
}

/// A backup code is consumed only when both its index and its hash match;
/// the salt is not compared; a consumed code is gone
/// ([`AccountStore::consume_backup_code`]).
///
/// [`AccountStore::consume_backup_code`]: echorelay_core::ports::AccountStore::consume_backup_code
pub async fn backup_codes_match_on_index_and_hash<B: Backend>(h: Harness<B>) {
    let user = account(&h, &random_email()).await;
    let codes: Vec<BackupCodeRecord> = (0..3)
        .map(|index| BackupCodeRecord {
            index,
            salt: random16(),
            hash: random32(),
        })
        .collect();
    h.store
        .replace_backup_codes(user, codes.clone())
        .await
        .unwrap();
    let (c0, c1) = (&codes[0], &codes[1]);
    let same_index_other_hash = BackupCodeRecord {
        hash: c1.hash,
        ..c0.clone()
    };
    assert!(
        !h.store
            .consume_backup_code(user, &same_index_other_hash)
            .await
            .unwrap(),
        "contracts: a code matched on its index alone"
    );
    let same_hash_other_index = BackupCodeRecord {
        index: c1.index,
        ..c0.clone()
    };
    assert!(
        !h.store
            .consume_backup_code(user, &same_hash_other_index)
            .await
            .unwrap(),
        "contracts: a code matched on its hash alone"
    );
    assert_eq!(
        h.store.backup_codes(user).await.unwrap().len(),
        3,
        "contracts: a refused consume removed a code"
    );
    let other_salt = BackupCodeRecord {
        salt: random16(),
        ..c0.clone()
    };
    assert!(
        h.store
            .consume_backup_code(user, &other_salt)
            .await
            .unwrap(),
        "contracts: consume_backup_code compared the salt (only index and hash count)"
    );
    assert!(
        !h.store.consume_backup_code(user, c0).await.unwrap(),
        "contracts: a backup code was consumed twice"
    );
    let mut left = h.store.backup_codes(user).await.unwrap();
    left.sort_by_key(|c| c.index);
    assert_eq!(
        left,
        codes[1..].to_vec(),
        "contracts: the remaining backup codes"
    );
}

/// Attempt windows are half-open, `(since, …]`: an attempt at exactly
/// `since` is outside ([`ThrottleStore::reserve_attempt`],
/// [`ThrottleStore::attempts_since`], "Time boundaries").
///
/// [`ThrottleStore::reserve_attempt`]: echorelay_core::ports::ThrottleStore::reserve_attempt
/// [`ThrottleStore::attempts_since`]: echorelay_core::ports::ThrottleStore::attempts_since
pub async fn attempt_windows_are_half_open<B: Backend>(h: Harness<B>) {
    let user = account(&h, &random_email()).await;
    let scope = AttemptScope::SecondFactor(user);
    let user = &scope;
    let t0 = h.clock_now();
    let (t1, t2) = (t0 + Duration::seconds(1), t0 + Duration::seconds(2));
    assert!(
        h.store
            .reserve_attempt(user, t0, t0 - Duration::hours(1), 5)
            .await
            .unwrap(),
        "contracts: reserve_attempt refused the first attempt"
    );
    assert!(
        h.store.attempts_since(user, t0).await.unwrap().is_empty(),
        "contracts: attempts_since(t0) holds the attempt at exactly t0"
    );
    assert_eq!(
        h.store
            .attempts_since(user, t0 - Duration::seconds(1))
            .await
            .unwrap(),
        vec![t0],
        "contracts: attempts_since(t0 - 1s)"
    );
    assert!(
        h.store.reserve_attempt(user, t1, t0, 1).await.unwrap(),
        "contracts: reserve_attempt counted an attempt at exactly `since`"
    );
    assert!(
        !h.store.reserve_attempt(user, t2, t0, 1).await.unwrap(),
        "contracts: reserve_attempt went over max"
    );
    assert_eq!(
        h.store.attempts_since(user, t0).await.unwrap(),
        vec![t1],
        "contracts: a refused reserve_attempt recorded an attempt"
    );
    // Scopes are separate counters: the account's password counter and
    // another account's second-factor counter are untouched.
    let other = AttemptScope::Password(*match user {
        AttemptScope::SecondFactor(u) => u,
        _ => unreachable!(),
    });
    assert!(
        h.store
            .attempts_since(&other, t0 - Duration::hours(1))
            .await
            .unwrap()
            .is_empty(),
        "contracts: attempt scopes share a counter"
    );
    let ip6 = AttemptScope::password_source("2001:db8:7:7::1".parse().unwrap());
    assert!(h.store.reserve_attempt(&ip6, t1, t0, 1).await.unwrap());
    let same_64 = AttemptScope::password_source("2001:db8:7:7:abcd::9".parse().unwrap());
    assert!(
        !h.store.reserve_attempt(&same_64, t2, t0, 1).await.unwrap(),
        "contracts: one IPv6 /64 is one source"
    );
}

/// A request's lookup returns the session as it was stored and touches it
/// only while it is live: a session at its idle or absolute end is
/// returned untouched (never refreshed), a live one is touched at `at`,
/// and an unknown token is `None`
/// ([`SessionStore::session_for_request`], "Time boundaries").
///
/// [`SessionStore::session_for_request`]: echorelay_core::ports::SessionStore::session_for_request
pub async fn session_for_request_touches_only_live_sessions<B: Backend>(h: Harness<B>) {
    let user = account(&h, &random_email()).await;
    let now = h.clock_now();
    let idle = Duration::minutes(30);
    let second = Duration::seconds(1);
    let created = now - Duration::hours(1);
    let live = session(user, created, now - idle + second, now + Duration::hours(1));
    let idle_end = session(user, created, now - idle, now + Duration::hours(1));
    let absolute_end = session(user, created, now - second, now);
    for s in [&live, &idle_end, &absolute_end] {
        h.store.insert_session(s.clone()).await.unwrap();
    }
    let (seen, touched) = h
        .store
        .session_for_request(&live.token_hash, now, idle)
        .await
        .unwrap()
        .expect("contracts: session_for_request lost a live session");
    assert_eq!(
        seen, live,
        "contracts: session_for_request returns the record as stored"
    );
    assert!(
        touched,
        "contracts: session_for_request did not touch a live session"
    );
    let after = h
        .store
        .session_by_token(&live.token_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.last_seen_at, now);
    for (s, what) in [
        (&idle_end, "at its idle end"),
        (&absolute_end, "at its absolute end"),
    ] {
        let (seen, touched) = h
            .store
            .session_for_request(&s.token_hash, now, idle)
            .await
            .unwrap()
            .expect("contracts: session_for_request lost an ended session");
        assert_eq!(&seen, s);
        assert!(
            !touched,
            "contracts: session_for_request touched a session {what}"
        );
        let after = h
            .store
            .session_by_token(&s.token_hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            after.last_seen_at, s.last_seen_at,
            "contracts: session_for_request refreshed a session {what}"
        );
    }
    assert!(
        h.store
            .session_for_request(&random32(), now, idle)
            .await
            .unwrap()
            .is_none()
    );
}

/// Replacing a session that is gone is `NotFound`, and the new session is
/// not stored ([`SessionStore::replace_session`]).
///
/// [`SessionStore::replace_session`]: echorelay_core::ports::SessionStore::replace_session
pub async fn replacing_a_gone_session_is_not_found<B: Backend>(h: Harness<B>) {
    let user = account(&h, &random_email()).await;
    let now = h.clock_now();
    let gone = session(user, now, now, now + Duration::hours(1));
    let new = session(user, now, now, now + Duration::hours(1));
    assert!(
        matches!(
            h.store.replace_session(gone.id, new.clone()).await,
            Err(StoreError::NotFound { .. })
        ),
        "contracts: replacing a gone session must be NotFound"
    );
    assert!(
        h.store
            .session_by_token(&new.token_hash)
            .await
            .unwrap()
            .is_none()
    );
    assert!(h.store.sessions_of(user).await.unwrap().is_empty());
}

/// Purging removes exactly the records at or past their boundary
/// (`expires_at <= now`, `last_seen_at <= idle_cutoff`) and keeps those
/// one second inside it; it returns how many it removed
/// ([`SessionStore::purge_expired`], "Time boundaries").
///
/// [`SessionStore::purge_expired`]: echorelay_core::ports::SessionStore::purge_expired
pub async fn purge_boundaries<B: Backend>(h: Harness<B>) {
    let user = account(&h, &random_email()).await;
    let now = h.clock_now();
    let idle_cutoff = now - Duration::minutes(30);
    let created = idle_cutoff - Duration::minutes(1);
    let second = Duration::seconds(1);
    let later = now + Duration::hours(1);
    let expired = session(user, created, now, now);
    let not_expired = session(user, created, now, now + second);
    let idle = session(user, created, idle_cutoff, later);
    let not_idle = session(user, created, idle_cutoff + second, later);
    for s in [&expired, &not_expired, &idle, &not_idle] {
        h.store.insert_session(s.clone()).await.unwrap();
    }
    let ch_expired = challenge(user, now);
    let ch_live = challenge(user, now + second);
    for c in [&ch_expired, &ch_live] {
        h.store.insert_challenge(c.clone()).await.unwrap();
    }
    assert_eq!(
        h.store.purge_expired(now, idle_cutoff).await.unwrap(),
        3,
        "contracts: purge_expired count"
    );
    for (s, kept, what) in [
        (&expired, false, "expires_at == now"),
        (&not_expired, true, "expires_at == now + 1s"),
        (&idle, false, "last_seen_at == idle_cutoff"),
        (&not_idle, true, "last_seen_at == idle_cutoff + 1s"),
    ] {
        assert_eq!(
            h.store
                .session_by_token(&s.token_hash)
                .await
                .unwrap()
                .is_some(),
            kept,
            "contracts: purge_expired and a session with {what}"
        );
    }
    assert!(
        h.store
            .challenge(&ch_expired.token_hash)
            .await
            .unwrap()
            .is_none(),
        "contracts: purge_expired kept a challenge with expires_at == now"
    );
    assert!(
        h.store
            .challenge(&ch_live.token_hash)
            .await
            .unwrap()
            .is_some(),
        "contracts: purge_expired removed a challenge with expires_at == now + 1s"
    );
}

/// `keys_needing_attention` pages by id: `after` is exclusive, each page
/// ascends by id and holds at most `limit`, a shorter page is the last,
/// and the pages together hold every due key once ("Ids and order",
/// [`KeyStore::keys_needing_attention`]).
///
/// [`KeyStore::keys_needing_attention`]: echorelay_core::ports::KeyStore::keys_needing_attention
pub async fn keys_needing_attention_pages_by_id<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let g = h.grant::<Keys>(&owner, &p).await;
    let mut minted = Vec::new();
    for _ in 0..5 {
        let req = MintRequest {
            environment: Environment::Live,
            role: Role::Editor,
            label: "contracts".into(),
        };
        minted.push(h.keys.mint(&g, req).await.unwrap().view.id);
    }
    assert!(
        h.store
            .keys_needing_attention(h.clock_now(), None, 10)
            .await
            .unwrap()
            .is_empty(),
        "contracts: fresh keys need attention"
    );
    h.clock.advance(Duration::days(84));
    let now = h.clock_now();
    let mut sizes = Vec::new();
    let mut seen: Vec<KeyId> = Vec::new();
    let mut after = None;
    loop {
        let page = h.store.keys_needing_attention(now, after, 2).await.unwrap();
        assert!(page.len() <= 2, "contracts: a page over its limit");
        let ids: Vec<KeyId> = page.iter().map(|k| k.id).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "contracts: a page not ascending by id: {ids:?}"
        );
        if let (Some(a), Some(first)) = (after, ids.first()) {
            assert!(
                *first > a,
                "contracts: a page starts at or before `after` ({first:?} <= {a:?})"
            );
        }
        sizes.push(ids.len());
        seen.extend(&ids);
        after = ids.last().copied().or(after);
        if ids.len() < 2 || sizes.len() > 5 {
            break;
        }
    }
    assert_eq!(sizes, vec![2, 2, 1], "contracts: page sizes");
    assert!(
        h.store
            .keys_needing_attention(now, after, 2)
            .await
            .unwrap()
            .is_empty(),
        "contracts: a page after the last key is not empty"
    );
    minted.sort();
    assert_eq!(
        seen, minted,
        "contracts: the pages are not every due key, once each, in id order"
    );
}

/// Methods that touch several records do all of it or nothing, and only
/// to what they name: a failing `import_tree` writes nothing (tree and
/// audit head unchanged); `revoke_devices` and `delete_sessions_of` remove
/// exactly the account's records ("All or nothing",
/// [`ConfigStore::import_tree`], [`AccountStore::revoke_devices`],
/// [`SessionStore::delete_sessions_of`]).
///
/// [`ConfigStore::import_tree`]: echorelay_core::ports::ConfigStore::import_tree
/// [`AccountStore::revoke_devices`]: echorelay_core::ports::AccountStore::revoke_devices
/// [`SessionStore::delete_sessions_of`]: echorelay_core::ports::SessionStore::delete_sessions_of
pub async fn multi_record_changes_are_all_or_nothing<B: Backend>(h: Harness<B>) {
    let now = h.clock_now();
    // (a) An import whose tree holds another project's target id.
    let (p, p_owner) = h.project().await;
    let wp = h.grant::<ConfigWrite>(&p_owner, &p).await;
    let line_p = h.config.create_line(&wp, "p line").await.unwrap();
    h.config
        .create_endpoint(&wp, line_p.id, "p in")
        .await
        .unwrap();
    let (q, q_owner) = h.project().await;
    let wq = h.grant::<ConfigWrite>(&q_owner, &q).await;
    let line_q = h.config.create_line(&wq, "q line").await.unwrap();
    let tq = h
        .config
        .create_target(&wq, line_q.id, target_input())
        .await
        .unwrap()
        .view
        .id;
    let q_target = h.store.target(q.id, tq).await.unwrap().unwrap();
    let p_tree = h.store.tree(p.id).await.unwrap();
    let p_head = h.store.head(Some(p.id)).await.unwrap();
    let q_tree = h.store.tree(q.id).await.unwrap();
    let q_head = h.store.head(Some(q.id)).await.unwrap();
    let mut tree = p_tree.clone();
    tree.project.name = "Renamed by the import".into();
    let new_line = Line {
        id: LineId::random(),
        project: p.id,
        name: "imported".into(),
        created_at: now,
    };
    tree.targets.push(Target {
        project: p.id,
        line: new_line.id,
        ..q_target.clone()
    });
    tree.lines.push(new_line);
    tree.lines.retain(|l| l.id != line_p.id);
    tree.endpoints.clear();
    // An import into p as an editor's export would make it.
    let import_into_p = |tree: ProjectTree, expect_version: u64| {
        let import = TreeImport {
            tree,
            expect_version: Some(expect_version),
            owner_if_new: None,
        };
        let audit = config_draft(
            p.id,
            now,
            ConfigEntity::Project,
            ConfigOp::Import,
            p.id.to_string(),
        );
        h.store.import_tree(import, audit)
    };
    let r = import_into_p(tree, p_tree.project.version).await;
    assert!(
        matches!(r, Err(StoreError::AlreadyExists { .. })),
        "contracts: import_tree with another project's target id: {r:?}"
    );
    assert_eq!(
        h.store.tree(p.id).await.unwrap(),
        p_tree,
        "contracts: a failed import_tree changed the tree"
    );
    assert_eq!(
        h.store.head(Some(p.id)).await.unwrap(),
        p_head,
        "contracts: a failed import_tree wrote an audit event"
    );
    assert_eq!(
        h.store.tree(q.id).await.unwrap(),
        q_tree,
        "contracts: a failed import_tree changed the other project"
    );
    assert_eq!(h.store.head(Some(q.id)).await.unwrap(), q_head);
    // An import made from a read the project has moved past (or a version
    // it never had) is refused and writes nothing.
    for stale in [
        p_tree.project.version + 1,
        p_tree.project.version.wrapping_sub(1),
    ] {
        let r = import_into_p(p_tree.clone(), stale).await;
        assert!(
            matches!(r, Err(StoreError::Conflict { .. })),
            "contracts: import_tree expecting version {stale}: {r:?}"
        );
    }
    assert_eq!(h.store.tree(p.id).await.unwrap(), p_tree);
    assert_eq!(h.store.head(Some(p.id)).await.unwrap(), p_head);

    // (b) revoke_devices and delete_sessions_of stay inside the account.
    let user = account(&h, &random_email()).await;
    let other = account(&h, &random_email()).await;
    for _ in 0..3 {
        h.store
            .add_device(device(DeviceId::random(), user, now), 5)
            .await
            .unwrap();
    }
    let theirs = device(DeviceId::random(), other, now);
    h.store.add_device(theirs.clone(), 5).await.unwrap();
    assert_eq!(
        h.store.revoke_devices(user, Some(theirs.id)).await.unwrap(),
        0,
        "contracts: revoke_devices removed another account's device"
    );
    assert_eq!(
        h.store.revoke_devices(user, None).await.unwrap(),
        3,
        "contracts: revoke_devices(user, None) count"
    );
    assert!(
        h.store.devices_of(user).await.unwrap().is_empty(),
        "contracts: revoke_devices(user, None) left a device"
    );
    assert_eq!(
        h.store.devices_of(other).await.unwrap(),
        vec![theirs],
        "contracts: revoke_devices touched another account"
    );
    let end = now + Duration::hours(12);
    let mine: Vec<SessionRecord> = (0..3).map(|_| session(user, now, now, end)).collect();
    for s in &mine {
        h.store.insert_session(s.clone()).await.unwrap();
    }
    let their_session = session(other, now, now, end);
    h.store.insert_session(their_session.clone()).await.unwrap();
    let keep = mine[1].id;
    assert_eq!(
        h.store.delete_sessions_of(user, Some(keep)).await.unwrap(),
        2,
        "contracts: delete_sessions_of(user, keep) count"
    );
    let ids = |v: Vec<SessionRecord>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(h.store.sessions_of(user).await.unwrap()),
        vec![keep],
        "contracts: delete_sessions_of did not keep exactly `keep`"
    );
    assert_eq!(
        ids(h.store.sessions_of(other).await.unwrap()),
        vec![their_session.id],
        "contracts: delete_sessions_of touched another account"
    );
    // `keep` naming another account's session protects nothing of this one.
    assert_eq!(
        h.store
            .delete_sessions_of(user, Some(their_session.id))
            .await
            .unwrap(),
        1
    );
    assert!(h.store.sessions_of(user).await.unwrap().is_empty());
    assert_eq!(
        ids(h.store.sessions_of(other).await.unwrap()),
        vec![their_session.id],
        "contracts: delete_sessions_of touched another account"
    );
}

/// Target and project writes are compare-and-swap on their versions: a
/// created target has version 0 and each update adds one; a write from a
/// stale read is `Conflict` and changes nothing (no audit event either);
/// every successful change moves the project's version by exactly one
/// ("Versions", [`ConfigStore::apply`]).
///
/// [`ConfigStore::apply`]: echorelay_core::ports::ConfigStore::apply
pub async fn config_writes_are_compare_and_swap<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let project = |h: &Harness<B>| {
        let store = h.store.clone();
        async move { store.project(p.id).await.unwrap().unwrap() }
    };
    assert_eq!(
        project(&h).await.version,
        0,
        "contracts: a new project's version"
    );
    let line = h.config.create_line(&w, "l").await.unwrap();
    assert_eq!(
        project(&h).await.version,
        1,
        "contracts: a line create did not move the project version by one"
    );
    let id = h
        .config
        .create_target(&w, line.id, target_input())
        .await
        .unwrap()
        .view
        .id;
    assert_eq!(
        project(&h).await.version,
        2,
        "contracts: a target create did not move the project version by one"
    );
    let stale = h.store.target(p.id, id).await.unwrap().unwrap();
    assert_eq!(stale.version, 0, "contracts: a created target's version");
    let url = "https://hooks.example.com/moved".to_owned();
    let patch = TargetPatch {
        url: Some(url.clone()),
        ..TargetPatch::default()
    };
    h.config.update_target(&w, id, patch).await.unwrap();
    let fresh = h.store.target(p.id, id).await.unwrap().unwrap();
    assert_eq!(
        (fresh.version, fresh.url.as_str()),
        (1, url.as_str()),
        "contracts: an updated target"
    );
    assert_eq!(
        project(&h).await.version,
        3,
        "contracts: a target update did not move the project version by one"
    );

    // A stale target write.
    let head = h.store.head(Some(p.id)).await.unwrap();
    let stale_write = Target {
        name: "stale".into(),
        ..stale.clone()
    };
    let draft = |op, id: String| config_draft(p.id, h.clock_now(), ConfigEntity::Target, op, id);
    let r = h
        .store
        .apply(
            ConfigChange::PutTarget(Write::Update, stale_write),
            draft(ConfigOp::Update, id.to_string()),
        )
        .await;
    assert!(
        matches!(r, Err(StoreError::Conflict { .. })),
        "contracts: PutTarget(Update) from a stale read: {r:?}"
    );
    assert_eq!(
        h.store.target(p.id, id).await.unwrap().unwrap(),
        fresh,
        "contracts: a refused target write changed the target"
    );
    assert_eq!(
        h.store.head(Some(p.id)).await.unwrap(),
        head,
        "contracts: a refused target write was audited"
    );
    assert_eq!(project(&h).await.version, 3);

    // A stale project write.
    let current = project(&h).await;
    let stale_project = Project {
        name: "Stale name".into(),
        ..p.clone()
    };
    let project_draft = || {
        config_draft(
            p.id,
            h.clock_now(),
            ConfigEntity::Project,
            ConfigOp::Update,
            p.id.to_string(),
        )
    };
    let r = h
        .store
        .apply(ConfigChange::UpdateProject(stale_project), project_draft())
        .await;
    assert!(
        matches!(r, Err(StoreError::Conflict { .. })),
        "contracts: UpdateProject from a stale read: {r:?}"
    );
    assert_eq!(
        project(&h).await,
        current,
        "contracts: a refused project write changed the project"
    );
    assert_eq!(
        h.store.head(Some(p.id)).await.unwrap(),
        head,
        "contracts: a refused project write was audited"
    );

    // A fresh read cannot move the slug or the creation time, each alone.
    let moved_slug = Project {
        slug: Slug::parse("moved-slug").unwrap(),
        ..current.clone()
    };
    let moved_creation = Project {
        created_at: current.created_at - Duration::days(1),
        ..current.clone()
    };
    for moved in [moved_slug, moved_creation] {
        let r = h
            .store
            .apply(ConfigChange::UpdateProject(moved), project_draft())
            .await;
        assert!(
            matches!(r, Err(StoreError::Conflict { .. })),
            "contracts: UpdateProject moving the slug or creation time: {r:?}"
        );
    }
    assert_eq!(project(&h).await, current);
    assert_eq!(h.store.head(Some(p.id)).await.unwrap(), head);

    // Writes from a fresh read go through, one version each.
    let renamed = Project {
        name: "Renamed".into(),
        ..current.clone()
    };
    h.store
        .apply(ConfigChange::UpdateProject(renamed), project_draft())
        .await
        .unwrap();
    let now_project = project(&h).await;
    assert_eq!(
        (now_project.version, now_project.name.as_str()),
        (current.version + 1, "Renamed"),
        "contracts: UpdateProject from a fresh read"
    );
    let renamed_target = Target {
        name: "renamed".into(),
        ..fresh.clone()
    };
    h.store
        .apply(
            ConfigChange::PutTarget(Write::Update, renamed_target),
            draft(ConfigOp::Update, id.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(
        h.store.target(p.id, id).await.unwrap().unwrap().version,
        2,
        "contracts: a target update did not move its version by one"
    );
    assert_eq!(project(&h).await.version, current.version + 2);
    // A create stores version 0 whatever the caller passed.
    let copy = Target {
        id: TargetId::random(),
        version: 7,
        ..fresh
    };
    h.store
        .apply(
            ConfigChange::PutTarget(Write::Create, copy.clone()),
            draft(ConfigOp::Create, copy.id.to_string()),
        )
        .await
        .unwrap();
    assert_eq!(
        h.store
            .target(p.id, copy.id)
            .await
            .unwrap()
            .unwrap()
            .version,
        0,
        "contracts: a created target is stored with version 0"
    );
    assert_eq!(project(&h).await.version, current.version + 3);
}

/// A project never exists without an owner: `import_tree` of an unknown
/// project without `owner_if_new` is `Conflict` and writes nothing; with
/// one, that user is its only member, as owner, and the version is 0; a
/// `dangerous_restore` that recreates a project makes `owner` its owner
/// ([`ConfigStore::import_tree`]).
///
/// [`ConfigStore::import_tree`]: echorelay_core::ports::ConfigStore::import_tree
pub async fn a_new_project_from_an_import_has_an_owner<B: Backend>(h: Harness<B>) {
    let now = h.clock_now();
    let id = ProjectId::random();
    let slug = Slug::parse(&format!("n-{}", &UserId::random().to_string()[4..16])).unwrap();
    let tree = ProjectTree {
        project: Project {
            id,
            slug: slug.clone(),
            name: "Imported".into(),
            key_policy: LifecyclePolicy::default(),
            created_at: now,
            version: 0,
            api_keys_manage_keys: false,
        },
        lines: vec![Line {
            id: LineId::random(),
            project: id,
            name: "imported line".into(),
            created_at: now,
        }],
        endpoints: Vec::new(),
        targets: Vec::new(),
    };
    let audit = || {
        config_draft(
            id,
            now,
            ConfigEntity::Project,
            ConfigOp::Import,
            id.to_string(),
        )
    };
    let ownerless = TreeImport {
        tree: tree.clone(),
        expect_version: None,
        owner_if_new: None,
    };
    let r = h.store.import_tree(ownerless, audit()).await;
    assert!(
        matches!(r, Err(StoreError::Conflict { .. })),
        "contracts: import_tree of a new project without an owner: {r:?}"
    );
    assert!(
        h.store.project(id).await.unwrap().is_none(),
        "contracts: an ownerless import created the project"
    );
    assert!(
        h.store.project_by_slug(&slug).await.unwrap().is_none(),
        "contracts: an ownerless import took the slug"
    );
    assert!(
        h.store.head(Some(id)).await.unwrap().is_none(),
        "contracts: an ownerless import was audited"
    );
    assert!(crate::all_members(&h.store, id).await.is_empty());

    let owner = UserId::random();
    let owned = TreeImport {
        tree: tree.clone(),
        expect_version: None,
        owner_if_new: Some(owner),
    };
    h.store.import_tree(owned, audit()).await.unwrap();
    let stored = h
        .store
        .project(id)
        .await
        .unwrap()
        .expect("contracts: the imported project");
    assert_eq!(stored.version, 0, "contracts: a new project's version");
    assert_eq!(
        crate::all_members(&h.store, id).await,
        vec![(owner, Role::Owner)],
        "contracts: the members of a project made by an import"
    );
    assert_eq!(h.store.tree(id).await.unwrap().lines, tree.lines);

    // dangerous_restore of an export under a project id that does not
    // exist (yet): recreated with `owner` as its owner. Every id in the
    // tree is renamed, since another project (the source) holds them. The
    // source has no targets: their ciphertext is bound to the project and
    // target ids and would not open under new ones.
    let (src, src_owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&src_owner, &src).await;
    let line = h.config.create_line(&w, "restored line").await.unwrap();
    let ep = h
        .config
        .create_endpoint(&w, line.id, "restored in")
        .await
        .unwrap();
    let r = h.grant::<ConfigRead>(&src_owner, &src).await;
    let json = h.config.export(&r).await.unwrap();
    let src_members = crate::all_members(&h.store, src.id).await;
    let src_tree = h.store.tree(src.id).await.unwrap();
    let new_id = ProjectId::random();
    let new_slug = format!("r-{}", &UserId::random().to_string()[4..16]);
    let json = json
        .replace(&src.id.to_string(), &new_id.to_string())
        .replace(
            &format!("\"{}\"", src.slug.as_str()),
            &format!("\"{new_slug}\""),
        )
        .replace(&line.id.to_string(), &LineId::random().to_string())
        .replace(&ep.id.to_string(), &EndpointId::random().to_string());
    let restorer = UserId::random();
    let restored = h.config.dangerous_restore(&json, restorer).await.unwrap();
    assert_eq!(restored.project.id, new_id);
    let stored = h
        .store
        .project(new_id)
        .await
        .unwrap()
        .expect("contracts: the restored project");
    assert_eq!(stored.slug.as_str(), new_slug);
    assert_eq!(
        crate::all_members(&h.store, new_id).await,
        vec![(restorer, Role::Owner)],
        "contracts: the members of a project recreated by dangerous_restore"
    );
    let t = h.store.tree(new_id).await.unwrap();
    assert_eq!((t.lines.len(), t.endpoints.len()), (1, 1));
    assert_eq!(
        crate::all_members(&h.store, src.id).await,
        src_members,
        "contracts: a restore under another id changed the source's members"
    );
    assert_eq!(h.store.tree(src.id).await.unwrap(), src_tree);
}

/// `mark_verified` on a missing session creates nothing and returns
/// `false`; on a live one it never moves `verified_at` back
/// ([`SessionStore::mark_verified`]).
///
/// [`SessionStore::mark_verified`]: echorelay_core::ports::SessionStore::mark_verified
pub async fn mark_verified_never_moves_back_or_creates<B: Backend>(h: Harness<B>) {
    let user = account(&h, &random_email()).await;
    let now = h.clock_now();
    assert!(
        !h.store
            .mark_verified(SessionId::random(), now)
            .await
            .unwrap(),
        "contracts: mark_verified on a missing session"
    );
    assert!(h.store.sessions_of(user).await.unwrap().is_empty());
    let s = session(user, now, now, now + Duration::hours(1));
    let (id, hash) = (s.id, s.token_hash);
    h.store.insert_session(s).await.unwrap();
    let later = now + Duration::minutes(5);
    assert!(h.store.mark_verified(id, later).await.unwrap());
    assert!(h.store.mark_verified(id, now).await.unwrap());
    let stored = h.store.session_by_token(&hash).await.unwrap().unwrap();
    assert_eq!(
        stored.verified_at, later,
        "contracts: verified_at moved back"
    );
}

/// The GDPR export (`account::export::personal_data`) holds every event
/// the account did and every event done about it, each once, and nothing
/// about anyone else; its memberships name each project and role.
pub async fn personal_data_holds_the_accounts_own_events_only<B: Backend>(h: Harness<B>) {
    use echorelay_core::access::surface::Members;
    use echorelay_core::account::export::personal_data;
    use echorelay_core::account::service::AccessList;

    let dana = account(&h, &random_email()).await;
    let ip = Some("203.0.113.9".parse().unwrap());
    // Dana acts: she creates a project (actor only).
    let mine = h
        .config
        .create_project(
            dana,
            ip,
            &format!("d-{}", &UserId::random().to_string()[4..14]),
            "Dana's",
        )
        .await
        .unwrap();
    // Someone else adds her to their project (subject only) and does
    // something unrelated (neither).
    let (other, other_owner) = h.project().await;
    let members = h.grant::<Members>(&other_owner, &other).await;
    h.config
        .set_member(&members, dana, Some(Role::Viewer))
        .await
        .unwrap();
    let w = h.grant::<ConfigWrite>(&other_owner, &other).await;
    h.config.create_line(&w, "not about dana").await.unwrap();

    let access = AccessList {
        sessions: vec![],
        devices: vec![],
    };
    let data = personal_data(&h.store, access.clone(), dana, h.clock_now(), None)
        .await
        .unwrap();
    assert!(data.next_after.is_none(), "contracts: one page holds all");
    assert_eq!(data.account.id, dana);
    let about_dana = |e: &echorelay_core::account::export::ExportedEvent| {
        e.actor == Some(echorelay_core::audit::Actor::User(dana)) || e.subject == Some(dana)
    };
    assert!(
        data.audit_events.iter().all(about_dana),
        "{:?}",
        data.audit_events
    );
    let acted = data
        .audit_events
        .iter()
        .filter(|e| e.project == Some(mine.id) && e.subject != Some(dana))
        .count();
    let subject = data
        .audit_events
        .iter()
        .filter(|e| e.project == Some(other.id) && e.subject == Some(dana))
        .count();
    assert_eq!((acted, subject), (1, 1), "{:?}", data.audit_events);
    // The owner who added her is not in her export: neither their id nor
    // their address (issue 16, 9a).
    let added = data
        .audit_events
        .iter()
        .find(|e| e.project == Some(other.id))
        .unwrap();
    assert_eq!((added.actor, added.ip), (None, None));
    let echorelay_core::audit::Actor::User(owner_id) = members.actor() else {
        panic!("the owner is a user")
    };
    let text = serde_json::to_string(&data.audit_events).unwrap();
    assert!(!text.contains(&owner_id.to_string()), "{text}");
    let mut roles: Vec<_> = data
        .memberships
        .iter()
        .map(|m| (m.project, m.slug.clone(), m.role))
        .collect();
    roles.sort();
    let mut expected = vec![
        (mine.id, Some(mine.slug.to_string()), Role::Owner),
        (other.id, Some(other.slug.to_string()), Role::Viewer),
    ];
    expected.sort();
    assert_eq!(roles, expected);

    // More events than one document holds: the export pages them, each
    // document with the account, the next with the rest, none twice.
    use echorelay_core::account::export::EXPORT_PAGE;
    for _ in 0..EXPORT_PAGE {
        h.store
            .append(draft(None, h.clock_now(), Actor::User(dana), None))
            .await
            .unwrap();
    }
    let total = EXPORT_PAGE + data.audit_events.len();
    let first = personal_data(&h.store, access.clone(), dana, h.clock_now(), None)
        .await
        .unwrap();
    assert_eq!(first.audit_events.len(), EXPORT_PAGE);
    let after = first
        .next_after
        .expect("contracts: a full export page names the next");
    let second = personal_data(&h.store, access, dana, h.clock_now(), Some(after))
        .await
        .unwrap();
    assert_eq!(second.account.id, dana);
    assert!(
        second.next_after.is_none(),
        "contracts: the last page names none"
    );
    let mut ids: Vec<_> = first
        .audit_events
        .iter()
        .chain(&second.audit_events)
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), total);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "contracts: an event in two export pages");
}
