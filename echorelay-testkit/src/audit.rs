//! Conformance suite for [`AuditSink`](echorelay_core::ports::AuditSink) and
//! [`AuditLog`] (S11).

use echorelay_core::Error;
use echorelay_core::access::surface::{Billing, ConfigWrite};
use echorelay_core::audit::{
    Actor, AuditDraft, BillingEvent, BillingKind, Currency, EventKind, record_billing, verify_chain,
};
use echorelay_core::ids::{ProjectId, UserId};
use echorelay_core::ports::AuditLog;

use crate::{Backend, Harness};

/// Extension used by the suites: how many events concern a user.
#[allow(async_fn_in_trait)]
pub trait UserEvents {
    /// Count of events whose actor or subject is `user`.
    async fn events_for_user_of(&self, user: UserId) -> usize;
}

impl<T: AuditLog> UserEvents for T {
    async fn events_for_user_of(&self, user: UserId) -> usize {
        crate::all_events_for_user(self, user).await.len()
    }
}

async fn all<B: Backend>(
    h: &Harness<B>,
    chain: Option<ProjectId>,
) -> Vec<echorelay_core::audit::AuditEvent> {
    h.store.events(chain, 0, usize::MAX).await.unwrap()
}

/// A chain built by real mutations verifies; paging returns it in order.
pub async fn chain_verifies_and_pages<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    for i in 0..12 {
        h.config
            .create_line(&w, &format!("line {i}"))
            .await
            .unwrap();
    }
    let events = all(&h, Some(p.id)).await;
    assert_eq!(events.len(), 13);
    let head = verify_chain(Some(p.id), &events, None).unwrap().unwrap();
    assert_eq!(Some(head), h.store.head(Some(p.id)).await.unwrap());
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = h.store.events(Some(p.id), after, 5).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 5);
        after = page.last().unwrap().seq;
        paged.extend(page);
    }
    assert_eq!(paged, events);
    assert!(
        events
            .iter()
            .all(|e| e.actor == owner.actor() && e.ip == owner.ip)
    );
    // Another project's chain is separate and starts at 1.
    let (q, _) = h.project().await;
    assert_eq!(all(&h, Some(q.id)).await[0].seq, 1);
}

/// Appends racing from many tasks still form one unbroken chain.
pub async fn concurrent_appends_keep_one_chain<B: Backend>(h: Harness<B>) {
    let (p, _) = h.project().await;
    let mut calls = Vec::new();
    for i in 0..16 {
        let store = h.store.clone();
        let at = h.clock_now();
        calls.push(async move {
            let draft = AuditDraft {
                project: Some(p.id),
                at,
                actor: Actor::System,
                ip: None,
                subject: None,
                kind: EventKind::Billing {
                    billing: BillingKind::BalanceAdjustment,
                    amount_minor: i + 1,
                    currency: Currency::parse("EUR").unwrap(),
                    reference: None,
                },
            };
            store.append(draft).await.unwrap()
        });
    }
    crate::race(calls).await;
    let events = all(&h, Some(p.id)).await;
    assert_eq!(events.len(), 17);
    verify_chain(Some(p.id), &events, None).unwrap();
}

/// Billing events need a billing grant, valid amounts, and are chained.
pub async fn billing_events_are_validated_and_recorded<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let g = h.grant::<Billing>(&owner, &p).await;
    let eur = Currency::parse("EUR").unwrap();
    let ev = |kind, amount_minor| BillingEvent {
        kind,
        amount_minor,
        currency: eur,
        reference: Some("pi_123".into()),
    };
    let clock = h.clock.clone();
    record_billing(&h.store, &clock, &g, ev(BillingKind::CreditPurchase, 5000))
        .await
        .unwrap();
    record_billing(&h.store, &clock, &g, ev(BillingKind::Refund, 1000))
        .await
        .unwrap();
    record_billing(
        &h.store,
        &clock,
        &g,
        ev(BillingKind::BalanceAdjustment, -250),
    )
    .await
    .unwrap();
    // A reference is 1 to 200 printable characters (characters, not
    // bytes: 200 two-byte letters are fine).
    let with_ref = |reference: String| BillingEvent {
        reference: Some(reference),
        ..ev(BillingKind::CreditPurchase, 1)
    };
    for good in ["x".repeat(200), "\u{e9}".repeat(200)] {
        record_billing(&h.store, &clock, &g, with_ref(good))
            .await
            .unwrap();
    }
    let head = h.store.head(Some(p.id)).await.unwrap();
    for bad in [
        ev(BillingKind::CreditPurchase, 0),
        ev(BillingKind::Refund, -5),
        ev(BillingKind::BalanceAdjustment, 0),
        with_ref(String::new()),
        with_ref("x".repeat(201)),
        with_ref("pi_\n123".into()),
    ] {
        assert!(
            matches!(
                record_billing(&h.store, &clock, &g, bad.clone()).await,
                Err(Error::InvalidInput(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(h.store.head(Some(p.id)).await.unwrap(), head);
    let events = all(&h, Some(p.id)).await;
    let billing: Vec<i64> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Billing { amount_minor, .. } => Some(amount_minor),
            _ => None,
        })
        .collect();
    assert_eq!(billing, vec![5000, 1000, -250, 1, 1]);
    verify_chain(Some(p.id), &events, None).unwrap();
    // An event for a project that does not exist is refused.
    let stray = AuditDraft {
        project: Some(ProjectId::random()),
        at: h.clock_now(),
        actor: Actor::System,
        ip: None,
        subject: None,
        kind: events[0].kind.clone(),
    };
    assert!(h.store.append(stray).await.is_err());
}

/// The GDPR export finds what a user did and what was done about them,
/// across projects and the global chain.
pub async fn user_export_finds_actor_and_subject_events<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let (q, owner_q) = h.project().await;
    let user = match owner.principal {
        echorelay_core::access::Principal::User(u) => u,
        _ => unreachable!(),
    };
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    h.config.create_line(&w, "a").await.unwrap();
    let gq = h
        .voter
        .authorize::<echorelay_core::access::surface::Members>(&owner_q, q.slug.as_str())
        .await
        .unwrap();
    h.config
        .set_member(&gq, user, Some(echorelay_core::access::Role::Viewer))
        .await
        .unwrap();
    let global = AuditDraft {
        project: None,
        at: h.clock_now(),
        actor: Actor::User(user),
        ip: None,
        subject: None,
        kind: EventKind::Membership { user, role: None },
    };
    h.store.append(global).await.unwrap();
    let mine = crate::all_events_for_user(&h.store, user).await;
    // project create + line create (actor), membership in q (subject), global event.
    assert_eq!(mine.len(), 4, "audit: export found {mine:?}");
    assert!(mine.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(
        mine.iter()
            .any(|e| e.project == Some(q.id) && e.subject == Some(user))
    );
    assert!(mine.iter().any(|e| e.project.is_none()));
}

/// Reading the audit log is a service call under the audit-read grant
/// (owners, owner keys; not editors): pages by seq, and the chain verifies
/// page by page, with and without an anchor.
pub async fn audit_log_is_read_under_a_grant_and_verifies<B: Backend>(h: Harness<B>) {
    use echorelay_core::access::surface::AuditRead;
    use echorelay_core::access::{Caller, Role};
    use echorelay_core::audit::AuditService;
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    for i in 0..5 {
        h.config.create_line(&w, &format!("l{i}")).await.unwrap();
    }
    let m = h
        .grant::<echorelay_core::access::surface::Members>(&owner, &p)
        .await;
    let editor = UserId::random();
    h.config
        .set_member(&m, editor, Some(Role::Editor))
        .await
        .unwrap();
    assert!(matches!(
        h.voter
            .authorize::<AuditRead>(&Caller::user(editor, None), p.slug.as_str())
            .await,
        Err(Error::Denied(_))
    ));
    let g = h.grant::<AuditRead>(&owner, &p).await;
    let svc = AuditService::new(h.store.clone());
    let page = svc.events(&g, 2, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    let status = svc.verify(&g, None).await.unwrap();
    assert_eq!(status.events, 7, "audit: creation + 5 lines + membership");
    let head = status.head.unwrap();
    assert_eq!(head.seq, 7);
    assert_eq!(svc.verify(&g, Some(head)).await.unwrap().head, Some(head));
    // An anchor the chain never reached is a truncation.
    let beyond = echorelay_core::audit::ChainHead {
        seq: 99,
        hash: head.hash,
    };
    assert!(matches!(
        svc.verify(&g, Some(beyond)).await,
        Err(Error::Audit(_))
    ));
}

/// A chain longer than one page (`audit::MAX_PAGE`, 1000) verifies whole:
/// the service reads it page by page.
pub async fn long_chains_verify_across_pages<B: Backend>(h: Harness<B>) {
    use echorelay_core::access::surface::AuditRead;
    use echorelay_core::audit::{AuditService, MAX_PAGE};
    let (p, owner) = h.project().await;
    for i in 0..MAX_PAGE {
        let draft = AuditDraft {
            project: Some(p.id),
            at: h.clock_now(),
            actor: Actor::System,
            ip: None,
            subject: None,
            kind: EventKind::Billing {
                billing: BillingKind::BalanceAdjustment,
                amount_minor: i64::try_from(i).unwrap() + 1,
                currency: Currency::parse("EUR").unwrap(),
                reference: None,
            },
        };
        h.store.append(draft).await.unwrap();
    }
    let g = h.grant::<AuditRead>(&owner, &p).await;
    let status = AuditService::new(h.store.clone())
        .verify(&g, None)
        .await
        .unwrap();
    // The creation event plus the 1000 appended.
    assert_eq!(status.events, 1001);
    assert_eq!(status.head.map(|x| x.seq), Some(1001));
}

/// [`AuditService::verify_page`](echorelay_core::audit::AuditService::verify_page)
/// over a backend: each page is the page `events` returns, verified with
/// its predecessor; pages walked one after the other cover the chain, and
/// the last says it reached the head (the store's head); a page past the
/// end verifies nothing; limits outside 1..=1000 are refused.
pub async fn pages_verify_one_after_the_other<B: Backend>(h: Harness<B>) {
    use echorelay_core::access::surface::AuditRead;
    use echorelay_core::audit::{AuditService, MAX_PAGE};
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    for i in 0..12 {
        h.config.create_line(&w, &format!("l{i}")).await.unwrap();
    }
    let g = h.grant::<AuditRead>(&owner, &p).await;
    let svc = AuditService::new(h.store.clone());
    let head = h.store.head(Some(p.id)).await.unwrap().unwrap();
    assert_eq!(head.seq, 13);
    let mut after = 0;
    let mut walked = Vec::new();
    loop {
        let page = svc.verify_page(&g, after, 5).await.unwrap();
        assert_eq!(page.events, svc.events(&g, after, 5).await.unwrap());
        let s = page.status;
        assert_eq!((s.after, s.events), (after, page.events.len() as u64));
        assert_eq!(s.through, page.events.last().map_or(after, |e| e.seq));
        assert!(!s.keyed);
        walked.extend(page.events);
        if s.reached_head {
            assert_eq!(s.head, Some(head), "audit: the last page's head");
            break;
        }
        assert_eq!(s.head, None);
        after = s.through;
    }
    assert_eq!(walked, all(&h, Some(p.id)).await);
    // After the head: an empty page, linked to the head.
    let tail = svc.verify_page(&g, 13, 5).await.unwrap();
    assert!(tail.events.is_empty() && tail.status.reached_head);
    assert_eq!(tail.status.head, Some(head));
    // Past the end: nothing to verify.
    let past = svc.verify_page(&g, 40, 5).await.unwrap();
    assert_eq!((past.status.through, past.status.events), (40, 0));
    for bad in [0, MAX_PAGE + 1] {
        assert!(matches!(
            svc.verify_page(&g, 0, bad).await,
            Err(Error::InvalidInput(_))
        ));
    }
}
