//! `DeliveryLog` in memory: under the store's one lock, like everything
//! else, so each method is atomic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use echorelay_core::deliveries::{
    AttemptRecord, DeliveryCounts, DeliveryRecord, DeliveryState, MessageCursor, MessageRecord,
};
use echorelay_core::error::StoreError;
use echorelay_core::ids::{MessageId, ProjectId, TargetId};
use echorelay_core::ports::{DeliveryLog, StoreResult};

use crate::{Conditional, MemStore};

const MIN_MSG: MessageId = MessageId::from_bytes([0; 16]);
const MAX_MSG: MessageId = MessageId::from_bytes([0xff; 16]);

#[derive(Debug, Default)]
pub(crate) struct LogState {
    messages: HashMap<(ProjectId, MessageId), MessageRecord>,
    /// (project, time, id) of every message: newest-first pages, purges.
    by_time: BTreeSet<(ProjectId, DateTime<Utc>, MessageId)>,
    /// Deliveries by (project, target, message): dead letters per target.
    deliveries: BTreeMap<(ProjectId, TargetId, MessageId), DeliveryRecord>,
    /// Each message's targets, in target order.
    targets: HashMap<(ProjectId, MessageId), Vec<TargetId>>,
    attempts: HashMap<(ProjectId, MessageId), Vec<AttemptRecord>>,
}

impl LogState {
    fn remove(&mut self, project: ProjectId, id: MessageId) -> bool {
        let Some(m) = self.messages.remove(&(project, id)) else {
            return false;
        };
        self.by_time.remove(&(project, m.received_at, id));
        for t in self.targets.remove(&(project, id)).unwrap_or_default() {
            self.deliveries.remove(&(project, t, id));
        }
        self.attempts.remove(&(project, id));
        true
    }
}

#[async_trait]
impl DeliveryLog for MemStore {
    async fn record_message(
        &self,
        message: MessageRecord,
        deliveries: Vec<DeliveryRecord>,
    ) -> StoreResult<()> {
        let mut s = self.write()?;
        let (p, id) = (message.project, message.id);
        if s.log.messages.contains_key(&(p, id)) {
            return Err(StoreError::AlreadyExists { kind: "message" });
        }
        let mut targets: Vec<TargetId> = deliveries.iter().map(|d| d.target).collect();
        targets.sort();
        targets.dedup();
        if targets.len() != deliveries.len()
            || deliveries.iter().any(|d| d.message != id || d.project != p)
        {
            return Err(StoreError::Conflict {
                reason: "deliveries must be of this message, one per target",
            });
        }
        let log = &mut s.log;
        log.by_time.insert((p, message.received_at, id));
        log.messages.insert((p, id), message);
        for d in deliveries {
            log.deliveries.insert((p, d.target, id), d);
        }
        log.targets.insert((p, id), targets);
        Ok(())
    }

    async fn delete_message(&self, project: ProjectId, id: MessageId) -> StoreResult<()> {
        self.write()?.log.remove(project, id);
        Ok(())
    }

    async fn record_attempt(&self, attempt: AttemptRecord) -> StoreResult<()> {
        let key = (attempt.project, attempt.target, attempt.message);
        self.conditional(
            Conditional::RecordAttempt,
            move |s| {
                s.log
                    .deliveries
                    .get(&key)
                    .map(|d| d.attempts)
                    .ok_or(StoreError::NotFound { kind: "delivery" })
            },
            move |s, seen| {
                let log = &mut s.log;
                let Some(d) = log.deliveries.get_mut(&key) else {
                    return;
                };
                d.attempts = seen.saturating_add(1);
                d.job = Some(attempt.job);
                d.last_status = attempt.status;
                d.last_class = attempt.class.clone();
                d.next_attempt_at = attempt.next_attempt_at;
                if let Some(state) = attempt.result.state() {
                    d.state = state;
                    d.updated_at = attempt.at;
                }
                log.attempts
                    .entry((attempt.project, attempt.message))
                    .or_default()
                    .push(attempt);
            },
        )
        .await
    }

    async fn mark_redriven(
        &self,
        project: ProjectId,
        message: MessageId,
        target: TargetId,
        attempts: u32,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let key = (project, target, message);
        self.conditional(
            Conditional::MarkRedriven,
            move |s| {
                Ok(s.log
                    .deliveries
                    .get(&key)
                    .is_some_and(|d| d.state == DeliveryState::Dead && d.attempts == attempts))
            },
            move |s, ok| {
                let d = s.log.deliveries.get_mut(&key).filter(|_| ok);
                match d {
                    Some(d) => {
                        d.state = DeliveryState::Pending;
                        d.updated_at = at;
                        d.next_attempt_at = None;
                        true
                    }
                    None => false,
                }
            },
        )
        .await
    }

    async fn message(
        &self,
        project: ProjectId,
        id: MessageId,
    ) -> StoreResult<Option<MessageRecord>> {
        Ok(self.read()?.log.messages.get(&(project, id)).cloned())
    }

    async fn messages_page(
        &self,
        project: ProjectId,
        cursor: Option<MessageCursor>,
        limit: usize,
    ) -> StoreResult<Vec<MessageRecord>> {
        let s = self.read()?;
        let lo = Bound::Included((project, DateTime::<Utc>::MIN_UTC, MIN_MSG));
        let hi = match cursor {
            Some(c) => Bound::Excluded((project, c.received_at, c.id)),
            None => Bound::Included((project, DateTime::<Utc>::MAX_UTC, MAX_MSG)),
        };
        Ok(s.log
            .by_time
            .range((lo, hi))
            .rev()
            .take(limit)
            .filter_map(|(p, _, id)| s.log.messages.get(&(*p, *id)).cloned())
            .collect())
    }

    async fn deliveries_of(
        &self,
        project: ProjectId,
        message: MessageId,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let s = self.read()?;
        Ok(s.log
            .targets
            .get(&(project, message))
            .into_iter()
            .flatten()
            .filter_map(|t| s.log.deliveries.get(&(project, *t, message)).cloned())
            .collect())
    }

    async fn delivery(
        &self,
        project: ProjectId,
        message: MessageId,
        target: TargetId,
    ) -> StoreResult<Option<DeliveryRecord>> {
        Ok(self
            .read()?
            .log
            .deliveries
            .get(&(project, target, message))
            .cloned())
    }

    async fn attempts_of(
        &self,
        project: ProjectId,
        message: MessageId,
        limit: usize,
    ) -> StoreResult<Vec<AttemptRecord>> {
        let s = self.read()?;
        let mut v: Vec<AttemptRecord> = s
            .log
            .attempts
            .get(&(project, message))
            .cloned()
            .unwrap_or_default();
        v.sort_by_key(|a| (a.at, a.target, a.attempt));
        let skip = v.len().saturating_sub(limit);
        Ok(v.split_off(skip))
    }

    async fn dead_deliveries_page(
        &self,
        project: ProjectId,
        target: TargetId,
        after: Option<MessageId>,
        limit: usize,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let s = self.read()?;
        let lo = match after {
            Some(m) => Bound::Excluded((project, target, m)),
            None => Bound::Included((project, target, MIN_MSG)),
        };
        let hi = Bound::Included((project, target, MAX_MSG));
        Ok(s.log
            .deliveries
            .range((lo, hi))
            .map(|(_, d)| d)
            .filter(|d| d.state == DeliveryState::Dead)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn delivery_counts(&self, project: ProjectId) -> StoreResult<DeliveryCounts> {
        let s = self.read()?;
        let mut c = DeliveryCounts::default();
        let lo = (
            project,
            TargetId::from_bytes([0; 16]),
            MessageId::from_bytes([0; 16]),
        );
        let hi = (
            project,
            TargetId::from_bytes([0xff; 16]),
            MessageId::from_bytes([0xff; 16]),
        );
        for d in s.log.deliveries.range(lo..=hi).map(|(_, d)| d) {
            match d.state {
                DeliveryState::Pending => c.pending += 1,
                DeliveryState::Retrying => c.retrying += 1,
                DeliveryState::Delivered => c.delivered += 1,
                DeliveryState::Dead => c.dead += 1,
            }
        }
        Ok(c)
    }

    async fn purge_delivery_log(&self, before: DateTime<Utc>) -> StoreResult<usize> {
        let mut s = self.write()?;
        let old: Vec<(ProjectId, MessageId)> = s
            .log
            .by_time
            .iter()
            .filter(|(_, at, _)| *at < before)
            .map(|(p, _, id)| (*p, *id))
            .collect();
        let mut n = 0;
        for (p, id) in old {
            n += usize::from(s.log.remove(p, id));
        }
        Ok(n)
    }
}
