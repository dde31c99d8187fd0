//! [`MemQueue`]: the job queue in memory.
//!
//! Keeps the contract of `echorelay_core::queue` exactly, under a lock of
//! its own (not [`MemStore`](crate::MemStore)'s). Every operation decides
//! and writes in one critical section. Clones share the queue.
//!
//! Indexes, per queue: the jobs not leased, ordered by `(run_at, seq)`;
//! the leased jobs, ordered by `(lease_until, seq)` (an expired lease is
//! found at its front, and is due since its end, as if lease and retry time
//! were one column); the dead jobs by id; the de-duplication keys held.
//! `seq` is the enqueue order, so jobs due at the same instant come out
//! first in, first out. Reserve, ack, nack and extend cost O(log n) per
//! job; `stats` counts the due part of each index (O(due jobs)).
//!
//! Idle consumers are woken ([`Queue::wait_for_jobs`]) by an enqueue, a
//! nack with a retry, and a redrive in the same process. A job that
//! becomes due by the passing of time (a delay, an expired lease) wakes
//! nobody: the consumer's poll finds it.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use echorelay_core::queue::{
    DeadJob, DedupKey, ErrorClass, JobId, LeaseNonce, LeaseToken, MAX_BATCH, NackOutcome, NewJob,
    Queue, QueueError, QueueName, QueueStats, ReservedJob, Retry,
};
use tokio::sync::Notify;

/// The queue's conditional operations: each decides and writes in one
/// atomic step. With the `faults` feature, `MemQueue::racy` breaks one of
/// them (check, yield, write), for the suite's self-test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QueueConditional {
    /// `Queue::reserve`: a job is leased by one reservation only.
    Reserve,
    /// `Queue::ack` and `Queue::ack_many`: only the current lease acks.
    Ack,
    /// `Queue::nack`: only the current lease nacks.
    Nack,
    /// `Queue::extend`: only the current lease extends.
    Extend,
    /// `Queue::enqueue`'s de-duplication: one job per key held.
    Enqueue,
    /// `Queue::redrive`: only a dead job is redriven.
    Redrive,
}

impl QueueConditional {
    /// Every conditional operation.
    pub const ALL: [QueueConditional; 6] = [
        QueueConditional::Reserve,
        QueueConditional::Ack,
        QueueConditional::Nack,
        QueueConditional::Extend,
        QueueConditional::Enqueue,
        QueueConditional::Redrive,
    ];
}

/// An index key: a time and the enqueue sequence (unique per job).
type Key = (DateTime<Utc>, u64);

/// A time index: key → job.
type TimeIndex = BTreeMap<Key, JobId>;

/// Hashes job ids: core makes them from 128 random bits and only core
/// inserts them, so a multiply-rotate over their bytes, keyed per queue,
/// spreads them as well as SipHash at a fraction of its cost (SipHash was
/// a quarter of a full cycle's time). Lookups of ids from outside (a
/// token's job) do not change the table.
#[derive(Debug, Clone)]
struct IdHashing(u64);

impl Default for IdHashing {
    fn default() -> Self {
        Self(RandomState::new().hash_one(0x6a6f_6273u64) | 1)
    }
}

impl BuildHasher for IdHashing {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.0)
    }
}

#[derive(Debug)]
struct IdHasher(u64);

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(b))
                .wrapping_mul(MIX)
                .rotate_left(31);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(MIX);
    }
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(MIX);
        h ^ (h >> 29)
    }
}

/// The due part of a time index at `now`.
fn due(now: DateTime<Utc>) -> std::ops::RangeToInclusive<Key> {
    ..=(now, u64::MAX)
}

#[derive(Debug, Clone)]
enum JobState {
    /// Not leased: waiting from `run_at`, delayed before.
    Ready { run_at: DateTime<Utc> },
    /// Leased with `nonce` until `until` (waiting again from `until`).
    Leased {
        nonce: LeaseNonce,
        until: DateTime<Utc>,
    },
    /// In the dead-letter set.
    Dead {
        class: ErrorClass,
        died_at: DateTime<Utc>,
    },
}

#[derive(Debug)]
struct Job {
    lane: usize,
    seq: u64,
    payload: Vec<u8>,
    max_attempts: u32,
    attempts: u32,
    enqueued_at: DateTime<Utc>,
    /// The de-duplication key this job holds (none once it died).
    dedup: Option<DedupKey>,
    state: JobState,
}

/// One named queue's indexes.
#[derive(Debug)]
struct Lane {
    ready: TimeIndex,
    leased: TimeIndex,
    dead: BTreeSet<JobId>,
    dedup: HashMap<DedupKey, JobId>,
    notify: Arc<Notify>,
}

impl Lane {
    fn new() -> Self {
        Self {
            ready: TimeIndex::new(),
            leased: TimeIndex::new(),
            dead: BTreeSet::new(),
            dedup: HashMap::new(),
            notify: Arc::new(Notify::new()),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    jobs: HashMap<JobId, Job, IdHashing>,
    lanes: Vec<Lane>,
    names: HashMap<QueueName, usize>,
    seq: u64,
}

impl State {
    fn lane_of(&self, queue: &QueueName) -> Option<usize> {
        self.names.get(queue).copied()
    }

    fn lane_or_new(&mut self, queue: &QueueName) -> usize {
        if let Some(&i) = self.names.get(queue) {
            return i;
        }
        self.lanes.push(Lane::new());
        let i = self.lanes.len() - 1;
        self.names.insert(queue.clone(), i);
        i
    }

    /// Sets the state of `id` and moves it to the index of that state; a
    /// dead job gives up its de-duplication key.
    fn set_state(&mut self, id: JobId, state: JobState) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let Some(lane) = self.lanes.get_mut(job.lane) else {
            return;
        };
        unindex(lane, job, id);
        match &state {
            JobState::Ready { run_at } => {
                lane.ready.insert((*run_at, job.seq), id);
            }
            JobState::Leased { until, .. } => {
                lane.leased.insert((*until, job.seq), id);
            }
            JobState::Dead { .. } => {
                lane.dead.insert(id);
                // The key is freed, but the job keeps it: a redrive takes
                // it back if no live job holds it meanwhile.
                if let Some(key) = &job.dedup
                    && lane.dedup.get(key) == Some(&id)
                {
                    lane.dedup.remove(key);
                }
            }
        }
        job.state = state;
    }

    /// Deletes `id` and everything that points at it.
    fn delete(&mut self, id: JobId) {
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        let Some(lane) = self.lanes.get_mut(job.lane) else {
            return;
        };
        unindex(lane, &job, id);
        if let Some(key) = &job.dedup
            && lane.dedup.get(key) == Some(&id)
        {
            lane.dedup.remove(key);
        }
    }

    /// The lease `token` holds at `now`, if it still does.
    fn check_lease(&self, token: &LeaseToken, now: DateTime<Utc>) -> Result<(), QueueError> {
        match self.jobs.get(&token.job()).map(|j| &j.state) {
            Some(JobState::Leased { nonce, until }) if *nonce == token.nonce() && *until > now => {
                Ok(())
            }
            _ => Err(QueueError::StaleLease),
        }
    }

    /// Wakes one waiter of `lane` per job made due (at most a batch's
    /// worth), not all of them: a waiter that was not needed would only
    /// reserve nothing. A job made due while no one waits leaves a permit,
    /// so the next waiter looks at once.
    fn notify(&self, lane: usize, jobs: usize) {
        if let Some(l) = self.lanes.get(lane) {
            for _ in 0..jobs.min(MAX_BATCH) {
                l.notify.notify_one();
            }
        }
    }

    fn redrive_job(&mut self, id: JobId, now: DateTime<Utc>) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let lane = job.lane;
        self.set_state(id, JobState::Ready { run_at: now });
        if let Some(job) = self.jobs.get_mut(&id) {
            job.attempts = 0;
            // Its de-duplication key again, unless a live job took it.
            if let Some(key) = job.dedup.clone()
                && let Some(l) = self.lanes.get_mut(lane)
            {
                match l.dedup.entry(key) {
                    std::collections::hash_map::Entry::Occupied(_) => job.dedup = None,
                    std::collections::hash_map::Entry::Vacant(free) => {
                        free.insert(id);
                    }
                }
            }
        }
        self.notify(lane, 1);
    }
}

/// Takes `job` (`id`) out of the index its state puts it in.
fn unindex(lane: &mut Lane, job: &Job, id: JobId) {
    match &job.state {
        JobState::Ready { run_at } => {
            lane.ready.remove(&(*run_at, job.seq));
        }
        JobState::Leased { until, .. } => {
            lane.leased.remove(&(*until, job.seq));
        }
        JobState::Dead { .. } => {
            lane.dead.remove(&id);
        }
    }
}

/// What an enqueue decided for each job.
enum Placement {
    /// Store it.
    Insert(NewJob),
    /// The job that holds its key.
    Existing(JobId),
}

/// What a reserve decided.
struct ReservePlan {
    /// Out of attempts: to the dead-letter set.
    die: Vec<JobId>,
    /// To lease.
    take: Vec<JobId>,
}

/// The job queue in memory; see the module docs. `MemQueue::new()` is
/// empty; clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemQueue {
    state: Arc<Mutex<State>>,
    #[cfg(feature = "faults")]
    racy: Option<QueueConditional>,
}

impl MemQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// A queue whose `op` checks under the lock, lets go of it, yields,
    /// then writes what it decided without checking again: a broken
    /// backend that the queue suite's race checks must catch. Test builds
    /// only (feature `faults`).
    #[cfg(feature = "faults")]
    pub fn racy(op: QueueConditional) -> Self {
        Self {
            state: Arc::default(),
            racy: Some(op),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every operation checks before it changes anything and nothing in
        // a critical section panics on input: recover from poison.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `check` decides under the lock, `apply` writes what it decided in
    /// the same critical section; in a queue made by `MemQueue::racy(op)`,
    /// check, yield and write instead.
    async fn conditional<P, R>(
        &self,
        op: QueueConditional,
        check: impl FnOnce(&State) -> Result<P, QueueError>,
        apply: impl FnOnce(&mut State, P) -> R,
    ) -> Result<R, QueueError> {
        #[cfg(feature = "faults")]
        if self.racy == Some(op) {
            let plan = check(&self.lock())?;
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            return Ok(apply(&mut self.lock(), plan));
        }
        let _ = op;
        let mut s = self.lock();
        let plan = check(&s)?;
        Ok(apply(&mut s, plan))
    }

    fn ack_check(s: &State, token: &LeaseToken, now: DateTime<Utc>) -> Result<(), QueueError> {
        s.check_lease(token, now)
    }

    fn ack_apply(s: &mut State, token: &LeaseToken) {
        s.delete(token.job());
    }
}

fn plan_enqueue(
    s: &State,
    queue: &QueueName,
    jobs: Vec<NewJob>,
) -> Result<Vec<Placement>, QueueError> {
    let lane = s.lane_of(queue).and_then(|i| s.lanes.get(i));
    let mut batch_keys: HashMap<&DedupKey, JobId> = HashMap::new();
    let mut batch_ids =
        std::collections::HashSet::with_capacity_and_hasher(jobs.len(), IdHashing::default());
    // First the checks (ids unique), then the placements, so a refusal
    // leaves nothing half decided.
    for job in &jobs {
        if s.jobs.contains_key(&job.id) || !batch_ids.insert(job.id) {
            return Err(QueueError::InvalidArgument("duplicate job id"));
        }
    }
    let mut placements = Vec::with_capacity(jobs.len());
    let mut keys_to_jobs = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let existing = job.dedup_key.as_ref().and_then(|k| {
            lane.and_then(|l| l.dedup.get(k).copied())
                .or_else(|| batch_keys.get(k).copied())
        });
        if existing.is_none()
            && let Some(k) = &job.dedup_key
        {
            batch_keys.insert(k, job.id);
        }
        keys_to_jobs.push(existing);
    }
    for (job, existing) in jobs.into_iter().zip(keys_to_jobs) {
        placements.push(match existing {
            Some(id) => Placement::Existing(id),
            None => Placement::Insert(job),
        });
    }
    Ok(placements)
}

fn apply_enqueue(
    s: &mut State,
    queue: &QueueName,
    placements: Vec<Placement>,
    now: DateTime<Utc>,
) -> Vec<JobId> {
    let lane = s.lane_or_new(queue);
    let mut ids = Vec::with_capacity(placements.len());
    let mut inserted = 0;
    for p in placements {
        match p {
            Placement::Existing(id) => ids.push(id),
            Placement::Insert(job) => {
                s.seq += 1;
                let seq = s.seq;
                if let (Some(key), Some(l)) = (&job.dedup_key, s.lanes.get_mut(lane)) {
                    l.dedup.insert(key.clone(), job.id);
                }
                if let Some(l) = s.lanes.get_mut(lane) {
                    l.ready.insert((job.run_at, seq), job.id);
                }
                s.jobs.insert(
                    job.id,
                    Job {
                        lane,
                        seq,
                        payload: job.payload,
                        max_attempts: job.max_attempts,
                        attempts: 0,
                        enqueued_at: now,
                        dedup: job.dedup_key,
                        state: JobState::Ready { run_at: job.run_at },
                    },
                );
                ids.push(job.id);
                inserted += 1;
            }
        }
    }
    if inserted > 0 {
        s.notify(lane, inserted);
    }
    ids
}

fn plan_reserve(s: &State, queue: &QueueName, n: usize, now: DateTime<Utc>) -> ReservePlan {
    let mut plan = ReservePlan {
        die: Vec::new(),
        take: Vec::new(),
    };
    let Some(lane) = s.lane_of(queue).and_then(|i| s.lanes.get(i)) else {
        return plan;
    };
    let mut ready = lane.ready.range(due(now)).peekable();
    let mut expired = lane.leased.range(due(now)).peekable();
    while plan.take.len() < n {
        let next = match (ready.peek(), expired.peek()) {
            (Some(a), Some(b)) if a.0 <= b.0 => ready.next(),
            (Some(_), Some(_)) => expired.next(),
            (Some(_), None) => ready.next(),
            (None, Some(_)) => expired.next(),
            (None, None) => None,
        };
        let Some((_, &id)) = next else {
            break;
        };
        match s.jobs.get(&id) {
            Some(job) if job.attempts >= job.max_attempts => plan.die.push(id),
            Some(_) => plan.take.push(id),
            None => {}
        }
    }
    plan
}

fn apply_reserve(
    s: &mut State,
    plan: ReservePlan,
    nonce: LeaseNonce,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<ReservedJob> {
    for id in plan.die {
        s.set_state(
            id,
            JobState::Dead {
                class: ErrorClass::lease_expired(),
                died_at: now,
            },
        );
    }
    let mut out = Vec::with_capacity(plan.take.len());
    for id in plan.take {
        // set_state, inlined: one lookup per job on the hot path.
        let Some(job) = s.jobs.get_mut(&id) else {
            continue;
        };
        let Some(lane) = s.lanes.get_mut(job.lane) else {
            continue;
        };
        unindex(lane, job, id);
        lane.leased.insert((until, job.seq), id);
        job.state = JobState::Leased { nonce, until };
        job.attempts = job.attempts.saturating_add(1);
        out.push(ReservedJob {
            token: LeaseToken::new(id, nonce, job.attempts),
            payload: job.payload.clone(),
            attempt: job.attempts,
            max_attempts: job.max_attempts,
            enqueued_at: job.enqueued_at,
            lease_until: until,
        });
    }
    out
}

#[async_trait]
impl Queue for MemQueue {
    async fn enqueue(
        &self,
        queue: &QueueName,
        jobs: Vec<NewJob>,
        now: DateTime<Utc>,
    ) -> Result<Vec<JobId>, QueueError> {
        self.conditional(
            QueueConditional::Enqueue,
            |s| plan_enqueue(s, queue, jobs),
            |s, placements| apply_enqueue(s, queue, placements, now),
        )
        .await
    }

    async fn reserve(
        &self,
        queue: &QueueName,
        n: usize,
        nonce: LeaseNonce,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReservedJob>, QueueError> {
        self.conditional(
            QueueConditional::Reserve,
            |s| Ok(plan_reserve(s, queue, n, now)),
            |s, plan| apply_reserve(s, plan, nonce, lease_until, now),
        )
        .await
    }

    async fn ack(&self, token: &LeaseToken, now: DateTime<Utc>) -> Result<(), QueueError> {
        self.conditional(
            QueueConditional::Ack,
            |s| Self::ack_check(s, token, now),
            |s, ()| Self::ack_apply(s, token),
        )
        .await
    }

    async fn ack_many(
        &self,
        tokens: &[LeaseToken],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<(), QueueError>>, QueueError> {
        #[cfg(feature = "faults")]
        if self.racy == Some(QueueConditional::Ack) {
            let mut out = Vec::with_capacity(tokens.len());
            for t in tokens {
                out.push(self.ack(t, now).await);
            }
            return Ok(out);
        }
        let mut s = self.lock();
        Ok(tokens
            .iter()
            .map(|t| {
                Self::ack_check(&s, t, now)?;
                Self::ack_apply(&mut s, t);
                Ok(())
            })
            .collect())
    }

    async fn nack(
        &self,
        token: &LeaseToken,
        retry: Retry,
        class: &ErrorClass,
        now: DateTime<Utc>,
    ) -> Result<NackOutcome, QueueError> {
        self.conditional(
            QueueConditional::Nack,
            |s| {
                s.check_lease(token, now)?;
                let out_of_attempts = s
                    .jobs
                    .get(&token.job())
                    .is_some_and(|j| j.attempts >= j.max_attempts);
                Ok(match retry {
                    Retry::At(t) if !out_of_attempts => NackOutcome::Retrying(t),
                    _ => NackOutcome::Dead,
                })
            },
            |s, outcome| {
                let id = token.job();
                match outcome {
                    NackOutcome::Retrying(t) => {
                        s.set_state(id, JobState::Ready { run_at: t });
                        if let Some(lane) = s.jobs.get(&id).map(|j| j.lane) {
                            s.notify(lane, 1);
                        }
                    }
                    NackOutcome::Dead => s.set_state(
                        id,
                        JobState::Dead {
                            class: class.clone(),
                            died_at: now,
                        },
                    ),
                }
                outcome
            },
        )
        .await
    }

    async fn extend(
        &self,
        token: &LeaseToken,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        self.conditional(
            QueueConditional::Extend,
            |s| s.check_lease(token, now),
            |s, ()| {
                let id = token.job();
                if let Some(Job {
                    state: JobState::Leased { nonce, .. },
                    ..
                }) = s.jobs.get(&id)
                {
                    let nonce = *nonce;
                    s.set_state(
                        id,
                        JobState::Leased {
                            nonce,
                            until: lease_until,
                        },
                    );
                }
            },
        )
        .await
    }

    async fn dead_jobs(
        &self,
        queue: &QueueName,
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<DeadJob>, QueueError> {
        let s = self.lock();
        let Some(lane) = s.lane_of(queue).and_then(|i| s.lanes.get(i)) else {
            return Ok(Vec::new());
        };
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::new();
        for id in lane.dead.range((from, Bound::Unbounded)).take(limit) {
            let Some(job) = s.jobs.get(id) else {
                return Err(QueueError::Corrupt(format!("dead job {id} has no record")));
            };
            let JobState::Dead { class, died_at } = &job.state else {
                return Err(QueueError::Corrupt(format!("job {id} is listed dead")));
            };
            out.push(DeadJob {
                id: *id,
                payload: job.payload.clone(),
                attempts: job.attempts,
                max_attempts: job.max_attempts,
                error_class: class.clone(),
                enqueued_at: job.enqueued_at,
                died_at: *died_at,
            });
        }
        Ok(out)
    }

    async fn redrive(
        &self,
        queue: &QueueName,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        self.conditional(
            QueueConditional::Redrive,
            |s| {
                let dead = s
                    .lane_of(queue)
                    .and_then(|i| s.lanes.get(i))
                    .is_some_and(|l| l.dead.contains(&id));
                if dead {
                    Ok(())
                } else {
                    Err(QueueError::NotDead)
                }
            },
            |s, ()| s.redrive_job(id, now),
        )
        .await
    }

    async fn redrive_dead(
        &self,
        queue: &QueueName,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<u64, QueueError> {
        let mut s = self.lock();
        let Some(lane) = s.lane_of(queue).and_then(|i| s.lanes.get(i)) else {
            return Ok(0);
        };
        let ids: Vec<JobId> = lane.dead.iter().take(limit).copied().collect();
        for &id in &ids {
            s.redrive_job(id, now);
        }
        Ok(ids.len() as u64)
    }

    async fn purge_dead(&self, queue: &QueueName, limit: usize) -> Result<u64, QueueError> {
        let mut s = self.lock();
        let Some(lane) = s.lane_of(queue).and_then(|i| s.lanes.get(i)) else {
            return Ok(0);
        };
        let ids: Vec<JobId> = lane.dead.iter().take(limit).copied().collect();
        for &id in &ids {
            s.delete(id);
        }
        Ok(ids.len() as u64)
    }

    async fn stats(&self, queue: &QueueName, now: DateTime<Utc>) -> Result<QueueStats, QueueError> {
        let s = self.lock();
        let Some(lane) = s.lane_of(queue).and_then(|i| s.lanes.get(i)) else {
            return Ok(QueueStats::default());
        };
        let ready_due = lane.ready.range(due(now)).count() as u64;
        let expired = lane.leased.range(due(now)).count() as u64;
        Ok(QueueStats {
            waiting: ready_due + expired,
            delayed: lane.ready.len() as u64 - ready_due,
            in_flight: lane.leased.len() as u64 - expired,
            dead: lane.dead.len() as u64,
        })
    }

    async fn wait_for_jobs(&self, queue: &QueueName, max_wait: Duration) -> Result<(), QueueError> {
        let notify = {
            let mut s = self.lock();
            let lane = s.lane_or_new(queue);
            s.lanes.get(lane).map(|l| l.notify.clone())
        };
        if let Some(notify) = notify {
            // A timeout is the backstop, not an error.
            let _ = tokio::time::timeout(max_wait, notify.notified()).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + secs, 0).unwrap()
    }

    fn job(run_at: DateTime<Utc>) -> NewJob {
        NewJob {
            id: JobId::random(),
            payload: b"p".to_vec(),
            run_at,
            max_attempts: 2,
            dedup_key: None,
        }
    }

    /// Every index agrees with the job records.
    fn consistent(q: &MemQueue) {
        let s = q.lock();
        let mut indexed = 0;
        for lane in &s.lanes {
            indexed += lane.ready.len() + lane.leased.len() + lane.dead.len();
            for ((at, seq), id) in &lane.ready {
                let j = &s.jobs[id];
                assert!(matches!(j.state, JobState::Ready { run_at } if run_at == *at));
                assert_eq!(j.seq, *seq);
            }
            for ((at, _), id) in &lane.leased {
                assert!(matches!(s.jobs[id].state, JobState::Leased { until, .. } if until == *at));
            }
            for id in &lane.dead {
                assert!(matches!(s.jobs[id].state, JobState::Dead { .. }));
            }
            for (k, id) in &lane.dedup {
                assert_eq!(s.jobs[id].dedup.as_ref(), Some(k));
            }
        }
        assert_eq!(indexed, s.jobs.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_due_job_wakes_one_waiter_and_a_job_made_due_unwatched_is_not_missed() {
        let q = std::sync::Arc::new(MemQueue::new());
        let name = QueueName::new("q").unwrap();
        let waiting: Vec<_> = (0..4)
            .map(|_| {
                let (q, name) = (q.clone(), name.clone());
                tokio::spawn(async move {
                    q.wait_for_jobs(&name, Duration::from_secs(10))
                        .await
                        .unwrap();
                })
            })
            .collect();
        let settle = Duration::from_millis(200);
        let woken =
            |w: &[tokio::task::JoinHandle<()>]| w.iter().filter(|w| w.is_finished()).count();
        tokio::time::sleep(settle).await;
        assert_eq!(woken(&waiting), 0);
        q.enqueue(&name, vec![job(t(0)), job(t(0))], t(0))
            .await
            .unwrap();
        tokio::time::sleep(settle).await;
        assert_eq!(woken(&waiting), 2, "one waiter per job");
        let got = q
            .reserve(&name, 1, LeaseNonce::random(), t(30), t(0))
            .await
            .unwrap();
        q.nack(
            &got[0].token,
            Retry::At(t(0)),
            &ErrorClass::new("x").unwrap(),
            t(0),
        )
        .await
        .unwrap();
        tokio::time::sleep(settle).await;
        assert_eq!(woken(&waiting), 3, "a retry due now wakes one more");
        for w in waiting {
            w.abort();
        }
        // Made due while no one waits: the next waiter looks at once.
        q.enqueue(&name, vec![job(t(0))], t(0)).await.unwrap();
        let started = std::time::Instant::now();
        q.wait_for_jobs(&name, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn indexes_follow_every_transition() {
        let q = MemQueue::new();
        let name = QueueName::new("q").unwrap();
        let mut j = job(t(0));
        j.dedup_key = Some(DedupKey::new("k").unwrap());
        let ids = q
            .enqueue(&name, vec![j, job(t(5)), job(t(0))], t(0))
            .await
            .unwrap();
        consistent(&q);
        let got = q
            .reserve(&name, 10, LeaseNonce::random(), t(30), t(0))
            .await
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id(), ids[0]);
        consistent(&q);
        q.ack(&got[0].token, t(1)).await.unwrap();
        consistent(&q);
        let out = q
            .nack(
                &got[1].token,
                Retry::At(t(2)),
                &ErrorClass::new("x").unwrap(),
                t(1),
            )
            .await
            .unwrap();
        assert_eq!(out, NackOutcome::Retrying(t(2)));
        consistent(&q);
        let again = q
            .reserve(&name, 10, LeaseNonce::random(), t(40), t(10))
            .await
            .unwrap();
        assert_eq!(again.len(), 2);
        consistent(&q);
        // The retried job is on its second and last attempt: after its
        // lease expires, the next reserve kills it.
        let dead = q
            .reserve(&name, 10, LeaseNonce::random(), t(100), t(40))
            .await
            .unwrap();
        assert_eq!(dead.len(), 1);
        consistent(&q);
        assert_eq!(q.stats(&name, t(40)).await.unwrap().dead, 1);
        assert_eq!(q.redrive_dead(&name, 10, t(41)).await.unwrap(), 1);
        consistent(&q);
        assert_eq!(q.purge_dead(&name, 10).await.unwrap(), 0);
    }
}
