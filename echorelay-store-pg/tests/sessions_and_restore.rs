//! The Postgres session store and snapshot restore, beyond what the
//! conformance suite observes through the services: `replace_session`
//! refuses a new session that reuses the old one's id or token (and keeps
//! the old one), `delete_session` says whether the session existed,
//! `warm_up` really opens the connections a race needs, and
//! a restored snapshot keeps each event's acting user, so a user's export
//! (`events_for_user_page`) finds the same events after a restore as
//! before it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::Duration;
use echorelay_core::access::Principal;
use echorelay_core::access::surface::ConfigWrite;
use echorelay_core::account::{AccountRecord, IpFamily, SessionRecord};
use echorelay_core::backup::snapshot;
use echorelay_core::error::StoreError;
use echorelay_core::ids::{SessionId, UserId};
use echorelay_core::ports::{AccountStore, AuditLog, SessionStore, SnapshotStore};
use echorelay_store_pg::{PgStore, test_database};
use echorelay_testkit::{Harness, all_events_for_user};

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(UserId::random().as_bytes());
    b[16..].copy_from_slice(UserId::random().as_bytes());
    b
}

fn session(user: UserId, now: chrono::DateTime<chrono::Utc>) -> SessionRecord {
    SessionRecord {
        id: SessionId::random(),
        token_hash: random32(),
        user,
        created_at: now,
        last_seen_at: now,
        verified_at: now,
        expires_at: now + Duration::hours(12),
        ip_family: IpFamily::V4,
        epoch: 0,
    }
}

async fn account(h: &Harness<PgStore>) -> UserId {
    let hash = echorelay_core::account::password::hash_password_async(
        secrecy::SecretString::from("correct horse battery staple 42"),
        echorelay_testkit::test_account_policy().password,
    )
    .await
    .unwrap();
    let rec = AccountRecord {
        id: UserId::random(),
        email: format!("{}@example.com", &UserId::random().to_string()[4..16]),
        password_hash: hash,
        epoch: 0,
        created_at: h.clock_now(),
    };
    let id = rec.id;
    h.store.create_account(rec).await.unwrap();
    id
}

/// `replace_session(old, new)`: a `new` with `old`'s id, or with `old`'s
/// token, is refused with `AlreadyExists`, and the refusal rolls back the
/// delete (the old session is still there); a `new` with its own id and
/// token replaces `old`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_session_may_not_reuse_the_old_id_or_token() {
    let Some(db) = test_database().await else {
        return;
    };
    let h = Harness::new(db.fresh_store().await.unwrap());
    let now = h.clock_now();
    let user = account(&h).await;
    let old = session(user, now);
    h.store.insert_session(old.clone()).await.unwrap();

    let same_id = SessionRecord {
        id: old.id,
        ..session(user, now)
    };
    let same_token = SessionRecord {
        token_hash: old.token_hash,
        ..session(user, now)
    };
    for (what, new) in [("id", same_id), ("token", same_token)] {
        let r = h.store.replace_session(old.id, new.clone()).await;
        assert!(
            matches!(r, Err(StoreError::AlreadyExists { kind: "session" })),
            "a replacement reusing the old {what} was not refused: {r:?}"
        );
        assert_eq!(
            h.store.session_by_token(&old.token_hash).await.unwrap(),
            Some(old.clone()),
            "a refused replacement (same {what}) lost the old session"
        );
        assert!(
            h.store
                .session_by_token(&new.token_hash)
                .await
                .unwrap()
                .is_none_or(|s| s == old),
            "a refused replacement (same {what}) stored the new session"
        );
    }

    let fresh = session(user, now);
    h.store
        .replace_session(old.id, fresh.clone())
        .await
        .unwrap();
    assert_eq!(h.store.sessions_of(user).await.unwrap(), vec![fresh]);
}

/// `delete_session` says whether the session existed: `true` once, then
/// `false`, and `false` for an id that never was; another session of the
/// account stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_session_says_whether_it_existed() {
    let Some(db) = test_database().await else {
        return;
    };
    let h = Harness::new(db.fresh_store().await.unwrap());
    let now = h.clock_now();
    let user = account(&h).await;
    let (gone, kept) = (session(user, now), session(user, now));
    h.store.insert_session(gone.clone()).await.unwrap();
    h.store.insert_session(kept.clone()).await.unwrap();
    assert!(h.store.delete_session(gone.id).await.unwrap());
    assert!(
        !h.store.delete_session(gone.id).await.unwrap(),
        "deleting a deleted session returned true"
    );
    assert!(
        !h.store.delete_session(SessionId::random()).await.unwrap(),
        "deleting an unknown session returned true"
    );
    assert_eq!(h.store.sessions_of(user).await.unwrap(), vec![kept]);
}

/// `warm_up(n)` leaves `n` connections open in the pool (at most its
/// size), so that racing callers start together rather than one connect
/// apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_opens_the_connections_it_is_asked_for() {
    let Some(db) = test_database().await else {
        return;
    };
    let store = db.fresh_store_with(|o| o.max_connections(6)).await.unwrap();
    let before = store.pool().size();
    assert!(before < 4, "the pool already holds {before} connections");
    store.warm_up(4).await.unwrap();
    assert!(
        store.pool().size() >= 4,
        "warm_up(4) left {} connections",
        store.pool().size()
    );
    // More than the pool holds: its size, without waiting for an acquire
    // timeout.
    let start = std::time::Instant::now();
    store.warm_up(100).await.unwrap();
    assert_eq!(store.pool().size(), 6);
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

/// A restored snapshot keeps who acted: the owner of a project (who has no
/// account here) finds the same events in their export of the restored
/// store as in the original's, among them events whose subject is someone
/// else or no one (found only by their acting user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_snapshot_keeps_each_events_acting_user() {
    let Some(db) = test_database().await else {
        return;
    };
    let h = Harness::new(db.fresh_store().await.unwrap());
    let (p, owner) = h.project().await;
    let Principal::User(owner_id) = owner.principal else {
        panic!("a project's owner is a user");
    };
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let line = h.config.create_line(&w, "line").await.unwrap();
    h.config.rename_line(&w, line.id, "renamed").await.unwrap();

    let before = all_events_for_user(&h.store, owner_id).await;
    assert!(
        before.iter().any(|e| e.subject != Some(owner_id)),
        "the owner acted on nothing but themselves: the test shows nothing"
    );
    let at = h.clock_now();
    let mut bytes = Vec::new();
    snapshot::export(&h.store, "postgres", at, &mut bytes)
        .await
        .unwrap();
    let anchors = vec![(Some(p.id), h.store.head(Some(p.id)).await.unwrap().unwrap())];
    let data = snapshot::parse(&bytes, &anchors).unwrap();

    let restored = db.fresh_store().await.unwrap();
    restored.restore_snapshot(data).await.unwrap();
    let after = all_events_for_user(&restored, owner_id).await;
    assert_eq!(
        after.iter().map(|e| (e.project, e.seq)).collect::<Vec<_>>(),
        before
            .iter()
            .map(|e| (e.project, e.seq))
            .collect::<Vec<_>>(),
        "the restored store's export of the acting user differs"
    );
}
