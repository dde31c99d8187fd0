//! Conformance suite for [`DeliveryLog`](echorelay_core::ports::DeliveryLog):
//! the relay's delivery log round-trips, pages newest first, keeps each
//! delivery's state by its latest attempt, is read per project only, and
//! its two conditional writes (an attempt's count, the redrive mark) hold
//! under racing callers.

use chrono::{DateTime, Duration, Utc};
use echorelay_core::deliveries::{
    AttemptRecord, AttemptResult, DeliveryCounts, DeliveryRecord, DeliveryState, MessageCursor,
    MessageRecord,
};
use echorelay_core::error::StoreError;
use echorelay_core::ids::{EndpointId, JobId, MessageId, ProjectId, TargetId};

use crate::{Backend, Harness};

fn message(project: ProjectId, at: DateTime<Utc>) -> MessageRecord {
    MessageRecord {
        id: MessageId::random(),
        project,
        endpoint: EndpointId::random(),
        received_at: at,
        content_type: Some("application/json".into()),
        size: 42,
    }
}

fn pending(m: &MessageRecord, target: TargetId) -> DeliveryRecord {
    DeliveryRecord {
        message: m.id,
        project: m.project,
        target,
        state: DeliveryState::Pending,
        attempts: 0,
        job: None,
        updated_at: m.received_at,
        next_attempt_at: None,
        last_status: None,
        last_class: None,
    }
}

fn attempt(
    m: &MessageRecord,
    target: TargetId,
    job: JobId,
    n: u32,
    at: DateTime<Utc>,
    result: AttemptResult,
) -> AttemptRecord {
    let failed = result != AttemptResult::Delivered;
    AttemptRecord {
        message: m.id,
        project: m.project,
        target,
        job,
        attempt: n,
        at,
        status: Some(if failed { 503 } else { 200 }),
        class: failed.then(|| "http_503".to_owned()),
        latency_ms: 12,
        result,
        next_attempt_at: (result == AttemptResult::Retrying).then(|| at + Duration::seconds(30)),
        excerpt: Some("busy ✓".into()),
    }
}

/// Whole seconds: every backend stores microseconds at least.
fn now_of<B: Backend>(h: &Harness<B>) -> DateTime<Utc> {
    DateTime::from_timestamp(h.clock_now().timestamp(), 0).unwrap()
}

/// A message and its deliveries read back as written; attempts move a
/// delivery's state (a lost lease does not), count, and read back oldest
/// first, the newest `limit` of them; an attempt of a delivery that is
/// not in the log is `NotFound` and writes nothing; another project sees
/// nothing; a taken message id is `AlreadyExists`; delete removes all.
pub async fn the_log_round_trips_and_attempts_move_the_state<B: Backend>(h: Harness<B>) {
    let s = &h.store;
    let now = now_of(&h);
    let p = ProjectId::random();
    let (t1, t2) = (TargetId::from_bytes([1; 16]), TargetId::from_bytes([2; 16]));
    let m = message(p, now);
    s.record_message(m.clone(), vec![pending(&m, t2), pending(&m, t1)])
        .await
        .unwrap();
    assert_eq!(s.message(p, m.id).await.unwrap(), Some(m.clone()));
    assert_eq!(
        s.deliveries_of(p, m.id).await.unwrap(),
        vec![pending(&m, t1), pending(&m, t2)],
        "deliveries: by target id"
    );
    let again = s.record_message(m.clone(), vec![]).await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists { .. })),
        "deliveries: a taken message id: {again:?}"
    );

    let job = JobId::random();
    let a1 = attempt(
        &m,
        t1,
        job,
        1,
        now + Duration::seconds(1),
        AttemptResult::Retrying,
    );
    s.record_attempt(a1.clone()).await.unwrap();
    let d = s.delivery(p, m.id, t1).await.unwrap().unwrap();
    assert_eq!(
        (
            d.state,
            d.attempts,
            d.job,
            d.last_status,
            d.last_class.as_deref()
        ),
        (
            DeliveryState::Retrying,
            1,
            Some(job),
            Some(503),
            Some("http_503")
        )
    );
    assert_eq!(d.next_attempt_at, a1.next_attempt_at);
    assert_eq!(d.updated_at, a1.at);
    // A lost lease is recorded, counted, and leaves the state alone.
    let lost = attempt(
        &m,
        t1,
        job,
        1,
        now + Duration::seconds(2),
        AttemptResult::LeaseLost,
    );
    s.record_attempt(lost.clone()).await.unwrap();
    let d = s.delivery(p, m.id, t1).await.unwrap().unwrap();
    assert_eq!((d.state, d.attempts), (DeliveryState::Retrying, 2));
    assert_eq!(
        d.updated_at, a1.at,
        "deliveries: a lost lease moved the time"
    );
    let c = s.delivery_counts(p).await.unwrap();
    assert_eq!(
        (c.retrying, c.delivered, c.dead),
        (1, 0, 0),
        "deliveries: a retrying delivery is counted as retrying"
    );
    let a2 = attempt(
        &m,
        t1,
        job,
        2,
        now + Duration::seconds(3),
        AttemptResult::Delivered,
    );
    s.record_attempt(a2.clone()).await.unwrap();
    let d = s.delivery(p, m.id, t1).await.unwrap().unwrap();
    assert_eq!(
        (
            d.state,
            d.attempts,
            d.last_status,
            d.last_class,
            d.next_attempt_at
        ),
        (DeliveryState::Delivered, 3, Some(200), None, None)
    );
    assert_eq!(
        s.attempts_of(p, m.id, 10).await.unwrap(),
        vec![a1.clone(), lost.clone(), a2.clone()],
        "deliveries: attempts oldest first, as written"
    );
    assert_eq!(
        s.attempts_of(p, m.id, 2).await.unwrap(),
        vec![lost, a2],
        "deliveries: the newest two, oldest first"
    );
    // Unknown delivery: refused, nothing written.
    let stray = attempt(&m, TargetId::random(), job, 1, now, AttemptResult::Dead);
    assert!(matches!(
        s.record_attempt(stray).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(s.attempts_of(p, m.id, 10).await.unwrap().len(), 3);
    // Another project sees none of it.
    let q = ProjectId::random();
    assert_eq!(s.message(q, m.id).await.unwrap(), None);
    assert!(s.deliveries_of(q, m.id).await.unwrap().is_empty());
    assert_eq!(s.delivery(q, m.id, t1).await.unwrap(), None);
    assert!(s.attempts_of(q, m.id, 10).await.unwrap().is_empty());
    assert_eq!(
        s.delivery_counts(q).await.unwrap(),
        DeliveryCounts::default()
    );
    let mut forged = attempt(&m, t2, job, 1, now, AttemptResult::Dead);
    forged.project = q;
    assert!(matches!(
        s.record_attempt(forged).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        s.delivery_counts(p).await.unwrap(),
        DeliveryCounts {
            pending: 1,
            delivered: 1,
            ..DeliveryCounts::default()
        }
    );
    // Delete takes the message, its deliveries and attempts.
    s.delete_message(p, m.id).await.unwrap();
    assert_eq!(s.message(p, m.id).await.unwrap(), None);
    assert!(s.deliveries_of(p, m.id).await.unwrap().is_empty());
    assert!(s.attempts_of(p, m.id, 10).await.unwrap().is_empty());
    s.delete_message(p, m.id).await.unwrap();
}

/// Batches ([`DeliveryLog::record_messages`], `record_attempts`: what the
/// relay's group commit writes) answer each record as the one-at-a-time
/// calls would, in order: a taken id, a second copy of an id in the batch
/// and deliveries that are not the message's refuse that message only
/// (and write none of it); two attempts of one delivery both count, the
/// later one's state last; an attempt of a delivery not in the log is
/// `NotFound` beside others that are written.
///
/// [`DeliveryLog::record_messages`]: echorelay_core::ports::DeliveryLog::record_messages
pub async fn batches_answer_each_record_as_one_call_would<B: Backend>(h: Harness<B>) {
    let s = &h.store;
    let now = now_of(&h);
    let p = ProjectId::random();
    let (t1, t2) = (TargetId::from_bytes([1; 16]), TargetId::from_bytes([2; 16]));
    let taken = message(p, now);
    s.record_message(taken.clone(), vec![pending(&taken, t1)])
        .await
        .unwrap();
    let ok1 = message(p, now);
    let ok2 = message(p, now + Duration::seconds(1));
    let stray = message(p, now);
    let twice = message(p, now);
    let mut retaken = taken.clone();
    retaken.size = 7;
    let results = s
        .record_messages(vec![
            (ok1.clone(), vec![pending(&ok1, t1), pending(&ok1, t2)]),
            (retaken, vec![pending(&taken, t2)]),
            (stray.clone(), vec![pending(&ok1, t1)]),
            (
                twice.clone(),
                vec![pending(&twice, t1), pending(&twice, t1)],
            ),
            (ok1.clone(), vec![]),
            (ok2.clone(), vec![]),
        ])
        .await
        .unwrap();
    let kinds: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(()) => "ok".into(),
            Err(StoreError::AlreadyExists { .. }) => "taken".into(),
            Err(StoreError::Conflict { .. }) => "conflict".into(),
            Err(e) => format!("{e:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        ["ok", "taken", "conflict", "conflict", "taken", "ok"],
        "one result per message, in order"
    );
    assert_eq!(s.message(p, ok1.id).await.unwrap(), Some(ok1.clone()));
    assert_eq!(s.deliveries_of(p, ok1.id).await.unwrap().len(), 2);
    assert_eq!(s.message(p, ok2.id).await.unwrap(), Some(ok2.clone()));
    assert_eq!(s.message(p, taken.id).await.unwrap(), Some(taken.clone()));
    assert_eq!(
        s.deliveries_of(p, taken.id).await.unwrap(),
        vec![pending(&taken, t1)],
        "the taken message is as it was"
    );
    for refused in [&stray, &twice] {
        assert_eq!(s.message(p, refused.id).await.unwrap(), None);
        assert_eq!(s.deliveries_of(p, refused.id).await.unwrap(), vec![]);
    }

    let job = JobId::random();
    let first = attempt(
        &ok1,
        t1,
        job,
        1,
        now + Duration::seconds(2),
        AttemptResult::Retrying,
    );
    let lost = attempt(
        &stray,
        t1,
        job,
        1,
        now + Duration::seconds(2),
        AttemptResult::Retrying,
    );
    let second = attempt(
        &ok1,
        t1,
        job,
        2,
        now + Duration::seconds(3),
        AttemptResult::Delivered,
    );
    let other = attempt(
        &ok1,
        t2,
        job,
        1,
        now + Duration::seconds(4),
        AttemptResult::Dead,
    );
    let results = s
        .record_attempts(vec![first.clone(), lost, second.clone(), other.clone()])
        .await
        .unwrap();
    assert!(
        results[0].is_ok() && results[2].is_ok() && results[3].is_ok(),
        "{results:?}"
    );
    assert!(
        matches!(results[1], Err(StoreError::NotFound { .. })),
        "{:?}",
        results[1]
    );
    let d1 = s.delivery(p, ok1.id, t1).await.unwrap().unwrap();
    assert_eq!(
        (d1.attempts, d1.state, d1.updated_at, d1.last_status),
        (2, DeliveryState::Delivered, second.at, Some(200)),
        "both attempts counted, the later one's state last"
    );
    assert_eq!(
        s.attempts_of(p, ok1.id, 10).await.unwrap(),
        vec![first, second, other.clone()],
        "every attempt, oldest first"
    );
    let d2 = s.delivery(p, ok1.id, t2).await.unwrap().unwrap();
    assert_eq!((d2.attempts, d2.state), (1, DeliveryState::Dead));
    assert_eq!(s.attempts_of(p, stray.id, 10).await.unwrap(), vec![]);
    assert_eq!(
        s.record_attempts(vec![]).await.unwrap().len(),
        0,
        "an empty batch"
    );
    assert_eq!(s.record_messages(vec![]).await.unwrap().len(), 0);
}

/// Messages page newest first (time, then id, descending) from a cursor,
/// exclusive; dead letters page per target by message id; counts by
/// state; purge removes exactly the messages received before its time.
pub async fn messages_page_newest_first_and_dead_letters_per_target<B: Backend>(h: Harness<B>) {
    let s = &h.store;
    let now = now_of(&h);
    let p = ProjectId::random();
    let (t, other) = (TargetId::random(), TargetId::random());
    // 7 messages; two share a time (the id breaks the tie).
    let mut ms: Vec<MessageRecord> = (0..7)
        .map(|i| message(p, now + Duration::seconds(i.min(5))))
        .collect();
    for m in &ms {
        s.record_message(m.clone(), vec![pending(m, t), pending(m, other)])
            .await
            .unwrap();
    }
    ms.sort_by_key(|m| std::cmp::Reverse((m.received_at, m.id)));
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s.messages_page(p, cursor, 3).await.unwrap();
        seen.extend(page.iter().map(|m| m.id));
        match page.last() {
            Some(last) if page.len() == 3 => {
                cursor = Some(MessageCursor {
                    received_at: last.received_at,
                    id: last.id,
                });
            }
            _ => break,
        }
    }
    assert_eq!(
        seen,
        ms.iter().map(|m| m.id).collect::<Vec<_>>(),
        "deliveries: newest first, each once"
    );
    assert!(
        s.messages_page(ProjectId::random(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Four of t's deliveries die, one of other's.
    let job = JobId::random();
    for m in &ms[..4] {
        s.record_attempt(attempt(m, t, job, 1, now, AttemptResult::Dead))
            .await
            .unwrap();
    }
    s.record_attempt(attempt(&ms[0], other, job, 1, now, AttemptResult::Dead))
        .await
        .unwrap();
    let mut dead: Vec<MessageId> = ms[..4].iter().map(|m| m.id).collect();
    dead.sort();
    let first = s.dead_deliveries_page(p, t, None, 3).await.unwrap();
    let rest = s
        .dead_deliveries_page(p, t, Some(first[2].message), 3)
        .await
        .unwrap();
    let paged: Vec<MessageId> = first.iter().chain(&rest).map(|d| d.message).collect();
    assert_eq!(paged, dead, "deliveries: dead letters by message id");
    assert!(first.iter().chain(&rest).all(|d| d.target == t));
    assert!(
        s.dead_deliveries_page(ProjectId::random(), t, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.delivery_counts(p).await.unwrap(),
        DeliveryCounts {
            pending: 9,
            retrying: 0,
            delivered: 0,
            dead: 5,
        }
    );
    // Purge: strictly before its time. Messages at now+0..now+4 go (five),
    // those at now+5 (two) stay.
    let cut = now + Duration::seconds(5);
    assert_eq!(s.purge_delivery_log(cut).await.unwrap(), 5);
    let left = s.messages_page(p, None, 10).await.unwrap();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|m| m.received_at == cut));
    // The two newest stay: ms[0] dead for both targets, ms[1] dead for t.
    assert_eq!(
        s.delivery_counts(p).await.unwrap(),
        DeliveryCounts {
            pending: 1,
            dead: 3,
            ..DeliveryCounts::default()
        }
    );
    assert_eq!(s.purge_delivery_log(cut).await.unwrap(), 0);
}

/// The redrive mark: only a dead delivery with exactly the attempts the
/// caller read becomes pending; and of racing marks one wins.
pub async fn a_redrive_mark_wins_once<B: Backend>(h: Harness<B>) {
    let s = &h.store;
    let now = now_of(&h);
    let p = ProjectId::random();
    let t = TargetId::random();
    let m = message(p, now);
    s.record_message(m.clone(), vec![pending(&m, t)])
        .await
        .unwrap();
    let later = now + Duration::seconds(9);
    assert!(
        !s.mark_redriven(p, m.id, t, 0, later).await.unwrap(),
        "pending"
    );
    let job = JobId::random();
    s.record_attempt(attempt(&m, t, job, 1, now, AttemptResult::Dead))
        .await
        .unwrap();
    assert!(
        !s.mark_redriven(p, m.id, t, 0, later).await.unwrap(),
        "stale count"
    );
    assert!(
        !s.mark_redriven(ProjectId::random(), m.id, t, 1, later)
            .await
            .unwrap()
    );
    assert!(s.mark_redriven(p, m.id, t, 1, later).await.unwrap());
    let d = s.delivery(p, m.id, t).await.unwrap().unwrap();
    assert_eq!(
        (d.state, d.updated_at, d.attempts),
        (DeliveryState::Pending, later, 1)
    );
    assert!(
        !s.mark_redriven(p, m.id, t, 1, later).await.unwrap(),
        "twice"
    );

    for round in 0..5u32 {
        s.record_attempt(attempt(&m, t, job, 1, now, AttemptResult::Dead))
            .await
            .unwrap();
        let n = round + 2;
        let calls = (0..8)
            .map(|_| {
                let store = h.store.clone();
                async move { store.mark_redriven(p, m.id, t, n, later).await.unwrap() }
            })
            .collect();
        let won = h.race(calls).await.into_iter().filter(|w| *w).count();
        assert_eq!(
            won, 1,
            "deliveries: {won} racing redrive marks won in round {round}"
        );
    }
}

/// Attempts recorded at once for one delivery are all counted.
pub async fn racing_attempts_are_all_counted<B: Backend>(h: Harness<B>) {
    let s = &h.store;
    let now = now_of(&h);
    let p = ProjectId::random();
    let t = TargetId::random();
    let m = message(p, now);
    s.record_message(m.clone(), vec![pending(&m, t)])
        .await
        .unwrap();
    let job = JobId::random();
    for round in 1..=3u32 {
        let calls = (0..8)
            .map(|i| {
                let store = h.store.clone();
                let a = attempt(&m, t, job, i, now, AttemptResult::LeaseLost);
                async move { store.record_attempt(a).await.unwrap() }
            })
            .collect();
        h.race(calls).await;
        let d = s.delivery(p, m.id, t).await.unwrap().unwrap();
        assert_eq!(
            d.attempts,
            8 * round,
            "deliveries: racing attempts lost updates in round {round}"
        );
    }
    assert_eq!(s.attempts_of(p, m.id, 100).await.unwrap().len(), 24);
}
