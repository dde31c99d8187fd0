//! The delivery log's batches on Postgres (`DeliveryLog::record_attempts`):
//! a batch holding two attempts of one delivery takes one statement per
//! repeat, and those statements are one transaction, so a statement that
//! fails takes the earlier ones with it ("`Err`: the whole call failed").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use echorelay_core::deliveries::{
    AttemptRecord, AttemptResult, DeliveryRecord, DeliveryState, MessageRecord,
};
use echorelay_core::ids::{EndpointId, JobId, MessageId, ProjectId, TargetId};
use echorelay_core::ports::DeliveryLog;
use echorelay_store_pg::test_database;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600 + secs, 0).unwrap()
}

fn attempt(m: &MessageRecord, target: TargetId, n: u32, class: &str) -> AttemptRecord {
    AttemptRecord {
        message: m.id,
        project: m.project,
        target,
        job: JobId::random(),
        attempt: n,
        at: at(i64::from(n)),
        status: Some(503),
        class: Some(class.to_owned()),
        latency_ms: 3,
        result: AttemptResult::Retrying,
        next_attempt_at: Some(at(60)),
        excerpt: None,
    }
}

#[tokio::test]
async fn a_batch_whose_later_statement_fails_writes_nothing() {
    let Some(db) = test_database().await else {
        return;
    };
    let s = db.fresh_store().await.unwrap();
    let m = MessageRecord {
        id: MessageId::random(),
        project: ProjectId::random(),
        endpoint: EndpointId::random(),
        received_at: at(0),
        content_type: None,
        size: 1,
    };
    let t = TargetId::random();
    let pending = DeliveryRecord {
        message: m.id,
        project: m.project,
        target: t,
        state: DeliveryState::Pending,
        attempts: 0,
        job: None,
        updated_at: at(0),
        next_attempt_at: None,
        last_status: None,
        last_class: None,
    };
    s.record_message(m.clone(), vec![pending.clone()])
        .await
        .unwrap();
    // The second attempt of the delivery goes in a second statement, and
    // its class breaks the table's CHECK (at most 64 characters).
    let refused = s
        .record_attempts(vec![
            attempt(&m, t, 1, "http_503"),
            attempt(&m, t, 2, &"x".repeat(65)),
        ])
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        s.delivery(m.project, m.id, t).await.unwrap(),
        Some(pending),
        "the first statement's update was rolled back with the second"
    );
    assert_eq!(s.attempts_of(m.project, m.id, 10).await.unwrap(), vec![]);
    // Both valid: both written, in order.
    let results = s
        .record_attempts(vec![
            attempt(&m, t, 1, "http_503"),
            attempt(&m, t, 2, "timeout"),
        ])
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let d = s.delivery(m.project, m.id, t).await.unwrap().unwrap();
    assert_eq!((d.attempts, d.last_class.as_deref()), (2, Some("timeout")));
}
