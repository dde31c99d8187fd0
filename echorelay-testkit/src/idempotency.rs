//! Conformance suite for [`IdempotencyStore`](echorelay_core::ports::IdempotencyStore):
//! an inbound message's `Idempotency-Key` is claimed once per project until
//! it expires, and of racing claims exactly one wins.

use chrono::Duration;
use echorelay_core::ids::{MessageId, ProjectId};

use crate::{Backend, Harness};

/// A claim holds its key in its project until it expires (a claim at the
/// expiry instant finds it expired); other projects and other keys
/// (compared byte for byte) are apart; only the holder releases it; purge
/// removes exactly the expired claims.
pub async fn idempotency_keys_are_claimed_once_per_project_until_they_expire<B: Backend>(
    h: Harness<B>,
) {
    let s = &h.store;
    let (p, q) = (ProjectId::random(), ProjectId::random());
    let now = h.clock_now();
    let day = Duration::hours(24);
    let m: Vec<MessageId> = (0..8).map(|_| MessageId::random()).collect();
    let claim = |project, key: &'static str, message, at, until| async move {
        s.claim_idempotency_key(project, key, message, at, until)
            .await
            .expect("idempotency: claim")
    };
    assert_eq!(claim(p, "order-42", m[0], now, now + day).await, None);
    assert_eq!(claim(p, "order-42", m[1], now, now + day).await, Some(m[0]));
    assert_eq!(
        claim(q, "order-42", m[2], now, now + day).await,
        None,
        "another project"
    );
    assert_eq!(
        claim(p, "ORDER-42", m[3], now, now + day).await,
        None,
        "bytes, not case"
    );
    let just_before = now + day - Duration::seconds(1);
    assert_eq!(
        claim(p, "order-42", m[4], just_before, just_before + day).await,
        Some(m[0])
    );
    // At the expiry instant the claim is over: a new one takes the key.
    let at = now + day;
    assert_eq!(claim(p, "order-42", m[4], at, at + day).await, None);
    assert_eq!(claim(p, "order-42", m[5], at, at + day).await, Some(m[4]));
    // Only the holder releases.
    s.release_idempotency_key(p, "order-42", m[5])
        .await
        .unwrap();
    assert_eq!(claim(p, "order-42", m[6], at, at + day).await, Some(m[4]));
    s.release_idempotency_key(p, "order-42", m[4])
        .await
        .unwrap();
    assert_eq!(claim(p, "order-42", m[6], at, at + day).await, None);
    // Purge: the claims of `now` expired at `now + day`; m[6]'s did not.
    let purged = s.purge_idempotency_keys(at).await.unwrap();
    assert_eq!(purged, 2, "q's and ORDER-42's claims expired");
    assert_eq!(claim(q, "order-42", m[7], at, at + day).await, None);
    assert_eq!(claim(p, "order-42", m[7], at, at + day).await, Some(m[6]));
    assert_eq!(s.purge_idempotency_keys(at).await.unwrap(), 0);
}

/// Eight claims of one key released at once, in several rounds: exactly
/// one gets the key, and every other one is told its message.
pub async fn racing_claims_of_one_key_have_one_winner<B: Backend>(h: Harness<B>) {
    let p = ProjectId::random();
    let now = h.clock_now();
    for round in 0..5 {
        let key = format!("k-{round}");
        let ids: Vec<MessageId> = (0..8).map(|_| MessageId::random()).collect();
        let calls = ids
            .iter()
            .map(|&m| {
                let store = h.store.clone();
                let key = key.clone();
                async move {
                    store
                        .claim_idempotency_key(p, &key, m, now, now + Duration::hours(24))
                        .await
                        .expect("idempotency: claim")
                }
            })
            .collect();
        let out = h.race(calls).await;
        let winners: Vec<usize> = (0..8).filter(|&i| out[i].is_none()).collect();
        assert_eq!(
            winners.len(),
            1,
            "idempotency: {} claims of one key won in round {round}",
            winners.len()
        );
        let winner = ids[winners[0]];
        assert!(
            out.iter().flatten().all(|m| *m == winner),
            "idempotency: a loser was told another message than the winner's"
        );
    }
}
