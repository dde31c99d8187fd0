//! Conformance suite for [`MembershipStore`](echorelay_core::ports::MembershipStore)
//! and the voter (S10): the full role × surface × membership matrix.

use echorelay_core::Error;
use echorelay_core::access::surface::{self, Keys, Members, SurfaceKind};
use echorelay_core::access::{Caller, Decision, DenyReason, Role, Surface, Voter};
use echorelay_core::ids::UserId;
use echorelay_core::keys::{Environment, MintRequest};

use crate::{Backend, Harness};

/// The documented table (ARCHITECTURE.md, `access` module docs), written out
/// independently of the code: surfaces in the order of [`Surface::ALL`]
/// (config read, config write, keys, billing, members, audit read,
/// delivery, ingest).
pub const DOCUMENTED_TABLE: [(Role, [bool; 8]); 3] = [
    (
        Role::Viewer,
        [true, false, false, false, false, false, false, false],
    ),
    (
        Role::Editor,
        [true, true, false, false, false, false, false, true],
    ),
    (
        Role::Owner,
        [true, true, true, true, true, true, false, true],
    ),
];

/// What API-key callers may do beyond their role's column, written out
/// independently: the keys surface only when the project allows it,
/// members and delivery never.
pub const API_KEY_COLUMNS: [(Surface, Option<bool>); 8] = [
    (Surface::ConfigRead, None),
    (Surface::ConfigWrite, None),
    (Surface::Keys, Some(true)),
    (Surface::Billing, None),
    (Surface::Members, Some(false)),
    (Surface::AuditRead, None),
    (Surface::Delivery, Some(false)),
    (Surface::Ingest, None),
];

fn documented(role: Role, surface: Surface) -> bool {
    let i = Surface::ALL.iter().position(|s| *s == surface).unwrap();
    DOCUMENTED_TABLE.iter().find(|(r, _)| *r == role).unwrap().1[i]
}

/// The documented decision for a caller of `role`; `key_flag` is `Some`
/// for API-key callers (the project's `api_keys_manage_keys`).
fn documented_for(role: Role, surface: Surface, key_flag: Option<bool>) -> bool {
    let by_role = documented(role, surface);
    match (
        key_flag,
        API_KEY_COLUMNS.iter().find(|(s, _)| *s == surface),
    ) {
        (None, _) => by_role,
        (Some(_), Some((_, Some(false)))) => false,
        (Some(flag), Some((_, Some(true)))) => by_role && flag,
        (Some(_), _) => by_role,
    }
}

async fn typed<B: Backend, K: SurfaceKind>(v: &Voter<B>, c: &Caller, slug: &str) -> bool {
    match v.authorize::<K>(c, slug).await {
        Ok(g) => {
            assert_eq!(g.actor(), c.actor());
            true
        }
        Err(Error::Denied(_)) => false,
        Err(e) => panic!("access: voter failed: {e}"),
    }
}

async fn authorize_any<B: Backend>(v: &Voter<B>, c: &Caller, slug: &str, s: Surface) -> bool {
    match s {
        Surface::ConfigRead => typed::<B, surface::ConfigRead>(v, c, slug).await,
        Surface::ConfigWrite => typed::<B, surface::ConfigWrite>(v, c, slug).await,
        Surface::Keys => typed::<B, surface::Keys>(v, c, slug).await,
        Surface::Billing => typed::<B, surface::Billing>(v, c, slug).await,
        Surface::Members => typed::<B, surface::Members>(v, c, slug).await,
        Surface::AuditRead => typed::<B, surface::AuditRead>(v, c, slug).await,
        Surface::Ingest => typed::<B, surface::Ingest>(v, c, slug).await,
        Surface::Delivery => typed::<B, surface::Delivery>(v, c, slug).await,
        other => panic!("access: no typed check for {other:?}"),
    }
}

async fn authorize_id_any<B: Backend>(
    v: &Voter<B>,
    c: &Caller,
    id: echorelay_core::ids::ProjectId,
    s: Surface,
) -> bool {
    macro_rules! by_id {
        ($k:ty) => {
            match v.authorize_id::<$k>(c, id).await {
                Ok(g) => {
                    assert_eq!(g.project_id(), id);
                    true
                }
                Err(Error::Denied(_)) => false,
                Err(e) => panic!("access: voter failed: {e}"),
            }
        };
    }
    match s {
        Surface::ConfigRead => by_id!(surface::ConfigRead),
        Surface::ConfigWrite => by_id!(surface::ConfigWrite),
        Surface::Keys => by_id!(surface::Keys),
        Surface::Billing => by_id!(surface::Billing),
        Surface::Members => by_id!(surface::Members),
        Surface::AuditRead => by_id!(surface::AuditRead),
        Surface::Ingest => by_id!(surface::Ingest),
        Surface::Delivery => by_id!(surface::Delivery),
        other => panic!("access: no typed check for {other:?}"),
    }
}

/// Every caller kind (users and API keys of every role) × every surface ×
/// own, foreign, unknown and malformed slugs, with the project's
/// `api_keys_manage_keys` off and on: the decision equals the documented
/// table, the typed `authorize` agrees with `decide`, and `authorize_id`
/// with `authorize`.
pub async fn role_matrix_equals_the_documented_table<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let (q, owner_q) = h.project().await;
    let owner_grant = h.grant::<Members>(&owner, &p).await;
    let mint_grant = h.grant::<Keys>(&owner, &p).await;
    let mint_q = h.grant::<Keys>(&owner_q, &q).await;
    // (caller, role in p if any, what)
    let mut callers: Vec<(Caller, Option<Role>, &str)> =
        vec![(owner.clone(), Some(Role::Owner), "owner user")];
    for role in [Role::Editor, Role::Viewer] {
        let u = UserId::random();
        h.config
            .set_member(&owner_grant, u, Some(role))
            .await
            .unwrap();
        callers.push((Caller::user(u, None), Some(role), "member user"));
    }
    callers.push((
        Caller::user(UserId::random(), None),
        None,
        "non-member user",
    ));
    callers.push((owner_q.clone(), None, "owner of another project"));
    for role in Role::ALL {
        let k = h
            .keys
            .mint(
                &mint_grant,
                MintRequest {
                    environment: Environment::Test,
                    role,
                    label: String::new(),
                },
            )
            .await
            .unwrap();
        let v = h.keys.verify(k.plaintext.expose_secret()).await.unwrap();
        callers.push((Caller::api_key(v, None), Some(role), "api key"));
    }
    let kq = h
        .keys
        .mint(
            &mint_q,
            MintRequest {
                environment: Environment::Live,
                role: Role::Owner,
                label: String::new(),
            },
        )
        .await
        .unwrap();
    let vq = h.keys.verify(kq.plaintext.expose_secret()).await.unwrap();
    callers.push((
        Caller::api_key(vq, None),
        None,
        "api key of another project",
    ));

    let mut checked = 0;
    for flag in [false, true] {
        h.config
            .set_api_keys_manage_keys(&owner_grant, flag)
            .await
            .unwrap();
        for (caller, role, what) in &callers {
            let key_flag = matches!(
                caller.principal,
                echorelay_core::access::Principal::ApiKey(_)
            )
            .then_some(flag);
            for surface in Surface::ALL {
                let by_id = authorize_id_any(&h.voter, caller, p.id, surface).await;
                let expected = role.is_some_and(|r| documented_for(r, surface, key_flag));
                assert_eq!(
                    by_id, expected,
                    "access: authorize_id {what} {role:?} {surface:?}"
                );
                let unknown = echorelay_core::ids::ProjectId::random();
                assert!(!authorize_id_any(&h.voter, caller, unknown, surface).await);
            }
            for slug in [p.slug.as_str(), "no-such-project", "NOT A SLUG", ""] {
                for surface in Surface::ALL {
                    let expected = slug == p.slug.as_str()
                        && role.is_some_and(|r| documented_for(r, surface, key_flag));
                    let d = h.voter.decide(caller, slug, surface).await.unwrap();
                    assert_eq!(
                        matches!(d, Decision::Allow { .. }),
                        expected,
                        "access: {what} {role:?} {surface:?} on {slug:?} gave {d:?}"
                    );
                    if let Decision::Allow { project, role: got } = d {
                        assert_eq!(project, p.id);
                        assert_eq!(Some(got), *role);
                    }
                    if slug != p.slug.as_str() {
                        assert_eq!(d, Decision::Deny(DenyReason::UnknownProject));
                    }
                    assert_eq!(
                        authorize_any(&h.voter, caller, slug, surface).await,
                        expected
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 2 * callers.len() * 4 * Surface::ALL.len());
}

/// Adding, changing and removing a member changes the next decision and is
/// audited with the member as subject.
pub async fn membership_changes_take_effect_and_are_audited<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let g = h.grant::<Members>(&owner, &p).await;
    let u = UserId::random();
    let c = Caller::user(u, None);
    let slug = p.slug.as_str();
    assert_eq!(
        h.voter.decide(&c, slug, Surface::ConfigRead).await.unwrap(),
        Decision::Deny(DenyReason::NotMember)
    );
    h.config
        .set_member(&g, u, Some(Role::Viewer))
        .await
        .unwrap();
    assert_eq!(h.store.role_of(u, p.id).await.unwrap(), Some(Role::Viewer));
    assert_eq!(
        h.voter
            .decide(&c, slug, Surface::ConfigWrite)
            .await
            .unwrap(),
        Decision::Deny(DenyReason::RoleTooLow)
    );
    h.config
        .set_member(&g, u, Some(Role::Editor))
        .await
        .unwrap();
    assert!(matches!(
        h.voter
            .decide(&c, slug, Surface::ConfigWrite)
            .await
            .unwrap(),
        Decision::Allow { .. }
    ));
    assert_eq!(
        h.store.memberships_of(u).await.unwrap(),
        vec![(p.id, Role::Editor)]
    );
    // What the members API lists (order-independent): the owner and u.
    let mut listed = h.config.members_page(&g, None, 500).await.unwrap();
    listed.sort();
    let echorelay_core::audit::Actor::User(owner_id) = owner.actor() else {
        panic!("the project's owner is a user")
    };
    let mut expected = vec![(owner_id, Role::Owner), (u, Role::Editor)];
    expected.sort();
    assert_eq!(listed, expected);
    h.config.set_member(&g, u, None).await.unwrap();
    assert_eq!(
        h.voter.decide(&c, slug, Surface::ConfigRead).await.unwrap(),
        Decision::Deny(DenyReason::NotMember)
    );
    assert!(
        h.config.set_member(&g, u, None).await.is_err(),
        "access: removing a non-member succeeded"
    );
    let mine = crate::audit::UserEvents::events_for_user_of(&h.store, u).await;
    assert_eq!(
        mine, 3,
        "access: membership events not found for the member"
    );
    assert!(h.store.project(p.id).await.unwrap().is_some());
}

/// The last owner cannot be removed or demoted; with a second owner they can.
pub async fn last_owner_is_kept<B: Backend>(h: Harness<B>) {
    use echorelay_core::error::StoreError;
    let (p, owner) = h.project().await;
    let me = match owner.principal {
        echorelay_core::access::Principal::User(u) => u,
        _ => unreachable!(),
    };
    let g = h.grant::<Members>(&owner, &p).await;
    let conflict =
        |r: Result<(), Error>| matches!(r, Err(Error::Store(StoreError::Conflict { .. })));
    assert!(conflict(h.config.set_member(&g, me, None).await));
    assert!(conflict(
        h.config.set_member(&g, me, Some(Role::Editor)).await
    ));
    let other = UserId::random();
    h.config
        .set_member(&g, other, Some(Role::Owner))
        .await
        .unwrap();
    h.config
        .set_member(&g, me, Some(Role::Viewer))
        .await
        .unwrap();
    assert_eq!(
        crate::audit::UserEvents::events_for_user_of(&h.store, other).await,
        1
    );
}

/// Owners demoting each other at the same moment: one demotion fails, the
/// project keeps an owner. Four owners leaving at once: one stays.
pub async fn owners_demoting_each_other_keep_one<B: Backend>(h: Harness<B>) {
    use echorelay_core::access::Principal;
    let user_of = |c: &Caller| match c.principal {
        Principal::User(u) => u,
        _ => unreachable!(),
    };
    let owners_of = |h: &Harness<B>, p: echorelay_core::ids::ProjectId| {
        let store = h.store.clone();
        async move {
            crate::all_members(&store, p)
                .await
                .into_iter()
                .filter(|(_, r)| *r == Role::Owner)
                .count()
        }
    };
    // Two owners, each demoting the other.
    let (p, a) = h.project().await;
    let b = Caller::dangerous_user_stepped_up(UserId::random(), a.ip);
    let ga = h.grant::<Members>(&a, &p).await;
    h.config
        .set_member(&ga, user_of(&b), Some(Role::Owner))
        .await
        .unwrap();
    let gb = h.grant::<Members>(&b, &p).await;
    let (pa, pb) = (h.another_process(), h.another_process());
    let (ua, ub) = (user_of(&a), user_of(&b));
    let calls = vec![
        Box::pin(async move {
            pa.config
                .set_member(&ga, ub, Some(Role::Editor))
                .await
                .is_ok()
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>,
        Box::pin(async move {
            pb.config
                .set_member(&gb, ua, Some(Role::Editor))
                .await
                .is_ok()
        }),
    ];
    let ok = h.race(calls).await.into_iter().filter(|ok| *ok).count();
    assert_eq!(ok, 1, "access: {ok} of two mutual demotions succeeded");
    assert_eq!(
        owners_of(&h, p.id).await,
        1,
        "access: owners after mutual demotion"
    );
    // Four owners removing themselves at once.
    let (q, creator) = h.project().await;
    let g = h.grant::<Members>(&creator, &q).await;
    let mut owners = vec![creator];
    for _ in 0..3 {
        let c = Caller::dangerous_user_stepped_up(UserId::random(), a.ip);
        h.config
            .set_member(&g, user_of(&c), Some(Role::Owner))
            .await
            .unwrap();
        owners.push(c);
    }
    let mut calls = Vec::new();
    for c in &owners {
        let (proc_, grant, me) = (
            h.another_process(),
            h.grant::<Members>(c, &q).await,
            user_of(c),
        );
        calls.push(async move { proc_.config.set_member(&grant, me, None).await.is_ok() });
    }
    let left = h.race(calls).await.into_iter().filter(|ok| *ok).count();
    assert_eq!(left, 3, "access: {left} of four owners could leave at once");
    assert_eq!(
        owners_of(&h, q.id).await,
        1,
        "access: owners after all left"
    );
}
