//! The daily backup slot (S15): one backup per slot however many
//! processes run the schedule.
//!
//! Every process that runs the schedule calls [`BackupService::scheduled_pass`]
//! when a slot comes due (and once at start). The pass takes a
//! [`SlotLock`] without waiting (Postgres: an advisory lock; in one
//! process: [`LocalSlotLock`]), then asks the target whether a complete
//! backup started at or after the slot. Only if none did does it back up.
//! The target is the record of what ran, so a process that comes second
//! (it lost the lock, or it arrives after the winner finished) finds the
//! slot covered and does nothing; a slot missed while every process was
//! down is found uncovered at the next start and runs then.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveTime, Utc};

use super::crypt::Recipients;
use super::manifest::{HeadEntry, Manifest};
use super::service::{BackupService, BackupSource, Retention};
use super::target::BackupError;

/// A lock that lets one holder at a time run a scheduled duty, across
/// every process that shares the lock's backend.
#[async_trait]
pub trait SlotLock: Send + Sync + fmt::Debug {
    /// Takes the lock `name` if it is free, without waiting; `None` if
    /// another holder has it. The lock is held until the guard is
    /// released or dropped (or its process dies).
    async fn try_acquire(&self, name: &str) -> Result<Option<Box<dyn SlotGuard>>, BackupError>;
}

/// A held [`SlotLock`]. Dropping it releases the lock too; `release`
/// does so at once and reports nothing (a lock whose release fails is
/// freed when its connection closes).
#[async_trait]
pub trait SlotGuard: Send {
    /// Releases the lock.
    async fn release(self: Box<Self>);
}

/// A [`SlotLock`] inside one process: the in-memory store's lock (its
/// data lives in one process, so its backups are made there alone).
/// Clones share the lock; separately made `LocalSlotLock`s do not (two
/// relays in one test process never block each other). `EchoRelay` makes
/// one per handle and its clones share it.
#[derive(Debug, Clone, Default)]
pub struct LocalSlotLock {
    held: Arc<Mutex<HashSet<String>>>,
}

impl LocalSlotLock {
    /// A lock no one holds.
    pub fn new() -> Self {
        Self::default()
    }
}

struct LocalGuard {
    held: Arc<Mutex<HashSet<String>>>,
    name: String,
}

impl Drop for LocalGuard {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&self.name);
    }
}

#[async_trait]
impl SlotGuard for LocalGuard {
    async fn release(self: Box<Self>) {}
}

#[async_trait]
impl SlotLock for LocalSlotLock {
    async fn try_acquire(&self, name: &str) -> Result<Option<Box<dyn SlotGuard>>, BackupError> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if !held.insert(name.to_owned()) {
            return Ok(None);
        }
        Ok(Some(Box::new(LocalGuard {
            held: self.held.clone(),
            name: name.to_owned(),
        })))
    }
}

/// When backups run and how many are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The daily slot, UTC (default 03:00:00).
    pub at: NaiveTime,
    /// What pruning keeps after each pass.
    pub retention: Retention,
    /// How long to wait before trying again when a pass failed or another
    /// process held the lock and the slot is still not covered (default
    /// 10 minutes).
    pub retry: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            at: NaiveTime::MIN + chrono::Duration::hours(3),
            retention: Retention::default(),
            retry: Duration::from_secs(600),
        }
    }
}

impl Schedule {
    /// The slot due at or before `now`: today's [`Schedule::at`] once it
    /// has passed, else yesterday's.
    pub fn slot_at_or_before(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let today = now.date_naive().and_time(self.at).and_utc();
        if today <= now {
            today
        } else {
            today - chrono::Duration::days(1)
        }
    }

    /// The first slot after `now`.
    pub fn next_slot(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.slot_at_or_before(now) + chrono::Duration::days(1)
    }

    /// How long to wait after a pass at `now` that ended in `outcome`:
    /// until the next slot once this one is covered, else
    /// [`Schedule::retry`] (but never past the next slot).
    pub fn wait_after(
        &self,
        now: DateTime<Utc>,
        outcome: &Result<PassOutcome, BackupError>,
    ) -> Duration {
        let until_next = (self.next_slot(now) - now).to_std().unwrap_or_default();
        match outcome {
            Ok(PassOutcome::Ran { .. } | PassOutcome::Covered { .. }) => until_next,
            Ok(PassOutcome::Busy) | Err(_) => self.retry.min(until_next),
        }
    }
}

/// What one [`BackupService::scheduled_pass`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassOutcome {
    /// It made backup `manifest.id` for `slot`, then pruned `pruned`.
    Ran {
        /// The slot it covered.
        slot: DateTime<Utc>,
        /// The new backup's manifest.
        manifest: Box<Manifest>,
        /// Backups deleted by retention afterwards.
        pruned: Vec<String>,
    },
    /// A complete backup, `by`, already covers `slot` (another process,
    /// or `backup run`); it pruned `pruned`.
    Covered {
        /// The slot.
        slot: DateTime<Utc>,
        /// The backup that covers it.
        by: String,
        /// Backups deleted by retention.
        pruned: Vec<String>,
    },
    /// Another process holds the lock (it is backing up or pruning).
    Busy,
}

/// The name of the lock every scheduled pass takes.
pub const LOCK_NAME: &str = "echorelay.backup";

impl BackupService {
    /// One pass of the daily schedule at the clock's now: under `lock`
    /// (skipped with [`PassOutcome::Busy`] if another process holds it),
    /// backs up `sources` unless a complete backup started at or after
    /// the slot due now, then prunes by `schedule.retention`. `heads` are
    /// taken by the caller before the pass (recorded heads must be in the
    /// data backed up after them). A failed backup is not retried here:
    /// the caller waits [`Schedule::wait_after`] and calls again.
    pub async fn scheduled_pass(
        &self,
        lock: &dyn SlotLock,
        schedule: &Schedule,
        recipients: &Recipients,
        sources: &[&dyn BackupSource],
        heads: Vec<HeadEntry>,
    ) -> Result<PassOutcome, BackupError> {
        let Some(guard) = lock.try_acquire(LOCK_NAME).await? else {
            return Ok(PassOutcome::Busy);
        };
        let result = self.locked_pass(schedule, recipients, sources, heads).await;
        guard.release().await;
        result
    }

    async fn locked_pass(
        &self,
        schedule: &Schedule,
        recipients: &Recipients,
        sources: &[&dyn BackupSource],
        heads: Vec<HeadEntry>,
    ) -> Result<PassOutcome, BackupError> {
        let slot = schedule.slot_at_or_before(self.now());
        let covering = self
            .list()
            .await?
            .into_iter()
            .rev()
            .find(|b| b.started_at >= slot);
        if let Some(b) = covering {
            let pruned = self.prune(schedule.retention).await?;
            return Ok(PassOutcome::Covered {
                slot,
                by: b.id,
                pruned,
            });
        }
        let manifest = self.run(recipients, sources, heads).await?;
        let pruned = self.prune(schedule.retention).await?;
        Ok(PassOutcome::Ran {
            slot,
            manifest: Box::new(manifest),
            pruned,
        })
    }
}

/// A [`SlotLock`] shared by reference, as handles hold it.
pub type SharedSlotLock = Arc<dyn SlotLock>;

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_slot_is_todays_once_it_has_passed() {
        let s = Schedule::default();
        assert_eq!(
            s.slot_at_or_before(t("2026-12-05T03:00:00Z")),
            t("2026-12-05T03:00:00Z")
        );
        assert_eq!(
            s.slot_at_or_before(t("2026-12-05T02:59:59Z")),
            t("2026-12-04T03:00:00Z")
        );
        assert_eq!(
            s.slot_at_or_before(t("2026-12-05T23:00:00Z")),
            t("2026-12-05T03:00:00Z")
        );
        assert_eq!(
            s.next_slot(t("2026-12-05T03:00:00Z")),
            t("2026-12-06T03:00:00Z")
        );
        assert_eq!(
            s.next_slot(t("2026-12-05T02:59:59Z")),
            t("2026-12-05T03:00:00Z")
        );
    }

    #[test]
    fn a_covered_slot_waits_for_the_next_and_a_failed_one_retries() {
        let s = Schedule::default();
        let now = t("2026-12-05T03:00:10Z");
        let next = Duration::from_secs(24 * 3600 - 10);
        assert_eq!(s.wait_after(now, &Ok(PassOutcome::Busy)), s.retry);
        assert_eq!(
            s.wait_after(now, &Err(BackupError::Unavailable("x".into()))),
            s.retry
        );
        let covered = Ok(PassOutcome::Covered {
            slot: t("2026-12-05T03:00:00Z"),
            by: "x".into(),
            pruned: vec![],
        });
        assert_eq!(s.wait_after(now, &covered), next);
        // A retry never overshoots the next slot.
        let late = t("2026-12-06T02:59:00Z");
        assert_eq!(
            s.wait_after(late, &Ok(PassOutcome::Busy)),
            Duration::from_secs(60)
        );
    }

    #[tokio::test]
    async fn a_local_lock_has_one_holder_until_released() {
        let lock = LocalSlotLock::new();
        let name = "test.a_local_lock_has_one_holder";
        let first = lock.try_acquire(name).await.unwrap().unwrap();
        assert!(lock.clone().try_acquire(name).await.unwrap().is_none());
        // Another lock is another lock.
        assert!(
            LocalSlotLock::new()
                .try_acquire(name)
                .await
                .unwrap()
                .is_some()
        );
        assert!(lock.try_acquire("test.another").await.unwrap().is_some());
        first.release().await;
        let again = lock.try_acquire(name).await.unwrap();
        assert!(again.is_some());
        drop(again);
        assert!(lock.try_acquire(name).await.unwrap().is_some());
    }
}
