//! What Redis itself does with the session store's keys (issue 20): the
//! TTLs it sets are never shorter than the contract in `ports.rs`
//! (`min(expires_at, last_seen_at + idle)` for a session, re-set by every
//! touch; `expires_at` for a challenge; the window for a throttle), a
//! touch never brings back a deleted session, and an account's index
//! drops the sessions Redis expired. Skips without Redis unless
//! `ECHORELAY_REQUIRE_SERVICES=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Duration, Utc};
use echorelay_core::account::{
    AttemptScope, ChallengeKind, ChallengeRecord, IpFamily, SessionRecord,
};
use echorelay_core::ids::{SessionId, UserId};
use echorelay_core::ports::{SessionStore, ThrottleStore};
use echorelay_store_redis::RedisSessions;
use rand::RngCore;
use redis::aio::ConnectionManager;

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap()
}

fn hash() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

fn session(user: UserId, last_seen: DateTime<Utc>, expires: DateTime<Utc>) -> SessionRecord {
    SessionRecord {
        id: SessionId::random(),
        token_hash: hash(),
        user,
        created_at: last_seen,
        last_seen_at: last_seen,
        verified_at: last_seen,
        expires_at: expires,
        ip_family: IpFamily::V4,
        epoch: 0,
    }
}

async fn pttl(conn: &mut ConnectionManager, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
}

fn session_key(s: &RedisSessions, id: SessionId) -> String {
    format!("{{{}}}:s:{}", s.prefix(), hex::encode(id.as_bytes()))
}

/// `pttl` is longer than `floor` (the contract) and at most `floor` plus
/// the slack.
fn within(pttl: i64, floor: Duration, s: &RedisSessions, what: &str) {
    let floor = floor.num_milliseconds();
    let ceiling = floor + s.ttl().slack.num_milliseconds();
    assert!(
        pttl > floor && pttl <= ceiling,
        "{what}: PTTL {pttl} ms; the contract needs more than {floor} ms, the slack allows up to {ceiling} ms"
    );
}

#[tokio::test]
async fn ttls_are_never_shorter_than_the_contract() {
    let Some(redis) = echorelay_store_redis::test_redis().await else {
        return;
    };
    let s = redis.fresh_sessions().await;
    let mut conn = s.connection();
    let user = UserId::random();
    let idle = s.ttl().idle;

    // Idle-bound: 30 minutes (plus slack), not the 12 hours of its end.
    let long = session(user, now(), now() + Duration::hours(12));
    s.insert_session(long.clone()).await.unwrap();
    let key = session_key(&s, long.id);
    within(pttl(&mut conn, &key).await, idle, &s, "a new session");
    let token_key = format!("{{{}}}:st:{}", s.prefix(), hex::encode(long.token_hash));
    within(pttl(&mut conn, &token_key).await, idle, &s, "its token key");

    // A touch 10 minutes on re-sets it from then: idle again.
    assert!(
        s.touch_session(long.id, now() + Duration::minutes(10))
            .await
            .unwrap()
    );
    within(pttl(&mut conn, &key).await, idle, &s, "a touched session");

    // End-bound: a session 5 minutes from its end expires with it.
    let short = session(user, now(), now() + Duration::minutes(5));
    s.insert_session(short.clone()).await.unwrap();
    within(
        pttl(&mut conn, &session_key(&s, short.id)).await,
        Duration::minutes(5),
        &s,
        "a session near its end",
    );
    // Touched 4 minutes on: one minute left.
    assert!(
        s.touch_session(short.id, now() + Duration::minutes(4))
            .await
            .unwrap()
    );
    within(
        pttl(&mut conn, &session_key(&s, short.id)).await,
        Duration::minutes(1),
        &s,
        "a touched session near its end",
    );

    // A challenge: its lifetime.
    let ch = ChallengeRecord {
        token_hash: hash(),
        user,
        kind: ChallengeKind::SecondFactor,
        expires_at: now() + s.ttl().challenge,
        ip_family: IpFamily::V6,
        epoch: 0,
    };
    s.insert_challenge(ch.clone()).await.unwrap();
    let ckey = format!("{{{}}}:c:{}", s.prefix(), hex::encode(ch.token_hash));
    within(
        pttl(&mut conn, &ckey).await,
        s.ttl().challenge,
        &s,
        "a challenge",
    );

    // A throttle: the window after its latest attempt.
    let scope = AttemptScope::SecondFactor(user);
    assert!(
        s.reserve_attempt(&scope, now(), now() - Duration::minutes(15), 5)
            .await
            .unwrap()
    );
    let tkey = format!("{{{}}}:t:{}", s.prefix(), scope.key());
    within(
        pttl(&mut conn, &tkey).await,
        Duration::minutes(15),
        &s,
        "a throttle",
    );
}

#[tokio::test]
async fn a_touch_never_revives_and_expired_sessions_leave_the_index() {
    let Some(redis) = echorelay_store_redis::test_redis().await else {
        return;
    };
    let s = redis.fresh_sessions().await;
    let mut conn = s.connection();
    let user = UserId::random();
    let a = session(user, now(), now() + Duration::hours(1));
    let b = session(
        user,
        now() + Duration::seconds(1),
        now() + Duration::hours(1),
    );
    s.insert_session(a.clone()).await.unwrap();
    s.insert_session(b.clone()).await.unwrap();

    assert!(s.delete_session(a.id).await.unwrap());
    assert!(!s.touch_session(a.id, now()).await.unwrap());
    assert!(!s.mark_verified(a.id, now()).await.unwrap());
    let exists: i64 = redis::cmd("EXISTS")
        .arg(session_key(&s, a.id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "a touch created a deleted session again");

    // Redis expires b by itself: it leaves the account's index on the
    // next read, and is gone from every method.
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(session_key(&s, b.id))
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(s.sessions_of(user).await.unwrap().is_empty());
    let index = format!("{{{}}}:su:{}", s.prefix(), hex::encode(user.as_bytes()));
    let members: i64 = redis::cmd("ZCARD")
        .arg(&index)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, 0, "the index kept an expired session");
    assert!(!s.touch_session(b.id, now()).await.unwrap());
    assert_eq!(s.delete_sessions_of(user, None).await.unwrap(), 0);
}

/// Purging goes past its 1,000-entry batch: 1,001 expired sessions and
/// 1,001 expired challenges are all deleted and counted.
#[tokio::test]
async fn purge_goes_past_one_batch() {
    let Some(redis) = echorelay_store_redis::test_redis().await else {
        return;
    };
    let s = redis.fresh_sessions().await;
    let user = UserId::random();
    for _ in 0..1001 {
        s.insert_session(session(user, now(), now() + Duration::minutes(1)))
            .await
            .unwrap();
        s.insert_challenge(ChallengeRecord {
            token_hash: hash(),
            user,
            kind: ChallengeKind::Enrollment,
            expires_at: now(),
            ip_family: IpFamily::V4,
            epoch: 0,
        })
        .await
        .unwrap();
    }
    let later = now() + Duration::minutes(1);
    assert_eq!(
        s.purge_expired(later, later - Duration::minutes(30))
            .await
            .unwrap(),
        2002
    );
    assert!(s.sessions_of(user).await.unwrap().is_empty());
}
