//! The delivery log (issue 19, operations): what the relay did with each
//! message, for the project that sent it — the message (never its body),
//! one [`DeliveryRecord`] per target it went to, and every attempt with
//! its status, latency, error class and a short excerpt of the answer.
//! Dead letters are deliveries in the state [`DeliveryState::Dead`], per
//! target, and are redriven from here ([`OperationsService::redrive`]).
//!
//! The log is written through the [`DeliveryLog`] port by the relay
//! ([`crate::relay::RelayService::accept`] records the message and its
//! deliveries before it enqueues the jobs;
//! [`crate::relay::DeliveryService`] records each attempt after it settles
//! the job) and read by [`OperationsService`]. The queue stays the source
//! of truth for what will be delivered; the log says what happened.
//!
//! Two facts follow from writing the log beside the queue, not in one
//! transaction with it (the queue may be Redis and the log Postgres):
//! - a process that dies between the log write and the enqueue leaves a
//!   message listed with deliveries `pending` that were never enqueued
//!   (nothing is delivered; the sender got no 202 and retries);
//! - an attempt whose record fails to write (the log's store is down) is
//!   still delivered, acked or retried: the log misses that attempt.
//!
//! **Group commit.** The relay writes the log through batches
//! ([`DeliveryLog::record_messages`], [`DeliveryLog::record_attempts`]):
//! accepts (and attempts) that run at the same time share one store call,
//! on Postgres one statement and one commit, instead of one each. A
//! writer still waits for its own record's result before it answers (an
//! accept is not acknowledged before its message is in the log), so
//! nothing above changes; a lone writer is written at once, and under
//! load each commit takes everyone who arrived during the one before (at
//! most 64). Measured in BENCHMARKS.md (issue 19).
//!
//! Who may do what, through the voter: reading the log (messages,
//! deliveries, attempts, dead letters, counts) is [`ConfigRead`] — every
//! member and key of the project, viewers included (no body, no secret is
//! in it); redriving is [`Ingest`] — editors and owners and their keys,
//! who may send the message again anyway.
//!
//! [`ConfigRead`]: crate::access::surface::ConfigRead
//! [`Ingest`]: crate::access::surface::Ingest

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::access::Grant;
use crate::access::surface::{ConfigRead, Ingest};
use crate::clock::Clock;
use crate::error::{Error, Result, StoreError};
use crate::ids::{EndpointId, JobId, MessageId, ProjectId, TargetId};
use crate::ports::DeliveryLog;
use crate::queue::{Queue, QueueError, QueueName, QueueService};

/// The longest excerpt of a target's answer kept with an attempt, in
/// bytes of UTF-8 (a longer one is cut at a character boundary).
pub const MAX_EXCERPT: usize = 1024;

/// How long the log keeps a message by default: 30 days.
pub const DEFAULT_LOG_RETENTION: chrono::Duration = chrono::Duration::days(30);

/// The most records one page of the log returns.
pub const MAX_LOG_PAGE: usize = 500;

/// The most attempts [`OperationsService::message`] returns for one
/// message (the newest).
pub const MAX_ATTEMPTS_SHOWN: usize = 1000;

/// The most dead letters one [`OperationsService::redrive_all`] call
/// redrives.
pub const MAX_REDRIVE_ALL: usize = 1000;

/// A message as the log keeps it: never its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageRecord {
    /// The message's id (its `webhook-id`).
    pub id: MessageId,
    /// The project.
    pub project: ProjectId,
    /// The endpoint it came in at.
    pub endpoint: EndpointId,
    /// When it was accepted.
    pub received_at: DateTime<Utc>,
    /// Its content type, as received.
    pub content_type: Option<String>,
    /// Its body's length in bytes.
    pub size: u64,
}

/// Where one delivery (a message to one target) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeliveryState {
    /// Enqueued, not attempted yet (or redriven).
    Pending,
    /// Attempted, due again.
    Retrying,
    /// Delivered (the target answered 2xx).
    Delivered,
    /// In the dead-letter set: out of attempts or refused for good.
    Dead,
}

impl DeliveryState {
    /// The state's name as stored and shown (`pending`, `retrying`,
    /// `delivered`, `dead`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Retrying => "retrying",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "retrying" => Self::Retrying,
            "delivered" => Self::Delivered,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

/// One delivery: a message to one target, as it stands after its latest
/// attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryRecord {
    /// The message.
    pub message: MessageId,
    /// The project.
    pub project: ProjectId,
    /// The target.
    pub target: TargetId,
    /// Its state.
    pub state: DeliveryState,
    /// Attempts recorded, every round (a redrive starts a new round of
    /// the queue's attempts; this keeps counting).
    pub attempts: u32,
    /// The queue job of the latest attempt (`None` before the first).
    pub job: Option<JobId>,
    /// When the state last changed.
    pub updated_at: DateTime<Utc>,
    /// When it is due again (state `retrying`).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The latest attempt's HTTP status, if the target answered.
    pub last_status: Option<u16>,
    /// The latest attempt's error class (`http_503`, `timeout`,
    /// `ssrf_loopback`, …), if it failed.
    pub last_class: Option<String>,
}

/// What became of an attempt, as the log keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AttemptResult {
    /// Delivered: acked.
    Delivered,
    /// Retried later.
    Retrying,
    /// Dead-lettered.
    Dead,
    /// The worker's lease ended before it settled the job: another worker
    /// has it; the delivery's state is left to that one.
    LeaseLost,
}

impl AttemptResult {
    /// The name as stored and shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retrying => "retrying",
            Self::Dead => "dead",
            Self::LeaseLost => "lease_lost",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "delivered" => Self::Delivered,
            "retrying" => Self::Retrying,
            "dead" => Self::Dead,
            "lease_lost" => Self::LeaseLost,
            _ => return None,
        })
    }

    /// The delivery's state after an attempt with this result (`None`:
    /// unchanged).
    pub const fn state(self) -> Option<DeliveryState> {
        match self {
            Self::Delivered => Some(DeliveryState::Delivered),
            Self::Retrying => Some(DeliveryState::Retrying),
            Self::Dead => Some(DeliveryState::Dead),
            Self::LeaseLost => None,
        }
    }
}

/// One delivery attempt: never the request's credentials, and of the
/// answer only its status and a short excerpt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptRecord {
    /// The message.
    pub message: MessageId,
    /// The project.
    pub project: ProjectId,
    /// The target.
    pub target: TargetId,
    /// The queue job.
    pub job: JobId,
    /// The queue's attempt number (from 1; a redrive starts again at 1).
    pub attempt: u32,
    /// When the attempt ended.
    pub at: DateTime<Utc>,
    /// The HTTP status, if the target answered.
    pub status: Option<u16>,
    /// The error class, if it failed.
    pub class: Option<String>,
    /// How long the request took, in milliseconds.
    pub latency_ms: u32,
    /// What became of the job.
    pub result: AttemptResult,
    /// When it is due again (result `retrying`).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The first bytes of the target's answer as text (invalid UTF-8
    /// replaced), at most [`MAX_EXCERPT`] bytes.
    pub excerpt: Option<String>,
}

/// A project's deliveries counted by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryCounts {
    /// Enqueued, not attempted yet.
    pub pending: u64,
    /// Due again.
    pub retrying: u64,
    /// Delivered.
    pub delivered: u64,
    /// Dead letters.
    pub dead: u64,
}

/// Where a page of messages starts: after this message, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageCursor {
    /// The last message's time.
    pub received_at: DateTime<Utc>,
    /// The last message's id.
    pub id: MessageId,
}

/// One message with where each of its deliveries stands and its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageDetail {
    /// The message.
    pub message: MessageRecord,
    /// One per target it went to, by target id.
    pub deliveries: Vec<DeliveryRecord>,
    /// Its attempts, oldest first (at most [`MAX_ATTEMPTS_SHOWN`], the
    /// newest).
    pub attempts: Vec<AttemptRecord>,
}

/// What [`OperationsService::redrive_all`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedriveAll {
    /// Dead letters redriven.
    pub redriven: u64,
    /// Whether dead letters of this target remain (call again).
    pub more: bool,
}

/// Keeps an excerpt of an answer: lossy UTF-8, at most [`MAX_EXCERPT`]
/// bytes, cut at a character boundary; `None` when empty.
pub fn excerpt_of(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_EXCERPT)]);
    let mut end = text.len().min(MAX_EXCERPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].to_owned())
}

/// Reads the delivery log and redrives dead letters, under a grant; see
/// the module docs.
pub struct OperationsService<S, Q: Queue> {
    store: S,
    queue: QueueService<Q>,
    queue_name: QueueName,
    clock: Arc<dyn Clock>,
}

impl<S: Clone, Q: Queue + Clone> Clone for OperationsService<S, Q> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            queue: self.queue.clone(),
            queue_name: self.queue_name.clone(),
            clock: self.clock.clone(),
        }
    }
}

fn not_dead() -> Error {
    StoreError::Conflict {
        reason: "the delivery is not a dead letter",
    }
    .into()
}

fn page_limit(limit: usize) -> Result<usize> {
    if (1..=MAX_LOG_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(Error::InvalidInput("limit must be 1 to 500"))
    }
}

impl<S: DeliveryLog, Q: Queue> OperationsService<S, Q> {
    /// Operations over `store`'s log, redriving on `queue`'s queue named
    /// `queue_name` (the relay's: [`crate::relay::DELIVERY_QUEUE`]).
    pub fn new(
        store: S,
        queue: QueueService<Q>,
        queue_name: QueueName,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            queue,
            queue_name,
            clock,
        }
    }

    /// A page of the project's messages, newest first, after `before` (a
    /// message of this project: the last of the previous page).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a limit outside 1–500;
    /// `Store(NotFound)` for a `before` that is not one of the project's
    /// messages.
    pub async fn messages(
        &self,
        grant: &Grant<ConfigRead>,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<MessageRecord>> {
        let limit = page_limit(limit)?;
        let project = grant.project_id();
        let cursor = match before {
            Some(id) => {
                let m = self
                    .store
                    .message(project, id)
                    .await?
                    .ok_or(StoreError::NotFound { kind: "message" })?;
                Some(MessageCursor {
                    received_at: m.received_at,
                    id: m.id,
                })
            }
            None => None,
        };
        Ok(self.store.messages_page(project, cursor, limit).await?)
    }

    /// One of the project's messages, its deliveries and its attempts.
    ///
    /// # Errors
    /// `Store(NotFound)` for a message of another project or none.
    pub async fn message(&self, grant: &Grant<ConfigRead>, id: MessageId) -> Result<MessageDetail> {
        let project = grant.project_id();
        let message = self
            .store
            .message(project, id)
            .await?
            .ok_or(StoreError::NotFound { kind: "message" })?;
        let deliveries = self.store.deliveries_of(project, id).await?;
        let attempts = self
            .store
            .attempts_of(project, id, MAX_ATTEMPTS_SHOWN)
            .await?;
        Ok(MessageDetail {
            message,
            deliveries,
            attempts,
        })
    }

    /// A page of one target's dead letters, by message id after `after`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a limit outside 1–500.
    pub async fn dead_letters(
        &self,
        grant: &Grant<ConfigRead>,
        target: TargetId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>> {
        let limit = page_limit(limit)?;
        Ok(self
            .store
            .dead_deliveries_page(grant.project_id(), target, after, limit)
            .await?)
    }

    /// The project's deliveries counted by state.
    ///
    /// # Errors
    /// The store's error.
    pub async fn counts(&self, grant: &Grant<ConfigRead>) -> Result<DeliveryCounts> {
        Ok(self.store.delivery_counts(grant.project_id()).await?)
    }

    /// Redrives one dead letter: the job is due again with its attempts
    /// reset, and the delivery is `pending`. Of racing redrives of one
    /// dead letter exactly one succeeds.
    ///
    /// # Errors
    /// `Store(NotFound)` for a delivery of another project or none;
    /// `Store(Conflict)` for one that is not dead (never dead, already
    /// redriven, delivered since).
    pub async fn redrive(
        &self,
        grant: &Grant<Ingest>,
        target: TargetId,
        message: MessageId,
    ) -> Result<()> {
        let project = grant.project_id();
        let d = self
            .store
            .delivery(project, message, target)
            .await?
            .ok_or(StoreError::NotFound { kind: "delivery" })?;
        self.redrive_record(&d).await
    }

    async fn redrive_record(&self, d: &DeliveryRecord) -> Result<()> {
        let (DeliveryState::Dead, Some(job)) = (d.state, d.job) else {
            return Err(not_dead());
        };
        match self.queue.redrive(&self.queue_name, job).await {
            Ok(()) => {}
            Err(QueueError::NotDead) => return Err(not_dead()),
            Err(e) => return Err(Error::Queue(e)),
        }
        // Only if nothing was recorded since this read: an attempt of the
        // redriven job recorded in between keeps its state.
        self.store
            .mark_redriven(d.project, d.message, d.target, d.attempts, self.clock.now())
            .await?;
        tracing::info!(message = %d.message, target = %d.target, "relay: dead letter redriven");
        Ok(())
    }

    /// Deletes every message received more than `keep` ago, with its
    /// deliveries and attempts, whatever their state (the scheduled
    /// maintenance runs it with the operator's retention, default
    /// [`DEFAULT_LOG_RETENTION`]); returns how many messages. An operator
    /// action: no grant. A job still queued for a purged message is
    /// delivered all the same; its attempts are then not logged.
    ///
    /// # Errors
    /// The store's error; [`Error::InvalidInput`] for a negative `keep`.
    pub async fn purge_log(&self, keep: chrono::Duration) -> Result<usize> {
        if keep < chrono::Duration::zero() {
            return Err(Error::InvalidInput("a retention cannot be negative"));
        }
        let before = self
            .clock
            .now()
            .checked_sub_signed(keep)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        Ok(self.store.purge_delivery_log(before).await?)
    }

    /// Redrives up to [`MAX_REDRIVE_ALL`] dead letters of one target.
    ///
    /// # Errors
    /// The store's or the queue's error (what was redriven before it
    /// stays redriven).
    pub async fn redrive_all(&self, grant: &Grant<Ingest>, target: TargetId) -> Result<RedriveAll> {
        let project = grant.project_id();
        let mut redriven = 0u64;
        let mut after = None;
        let mut seen = 0usize;
        while seen < MAX_REDRIVE_ALL {
            let n = (MAX_REDRIVE_ALL - seen).min(MAX_LOG_PAGE);
            let page = self
                .store
                .dead_deliveries_page(project, target, after, n)
                .await?;
            seen += page.len();
            let last = page.len() < n;
            for d in &page {
                after = Some(d.message);
                match self.redrive_record(d).await {
                    Ok(()) => redriven += 1,
                    // Redriven or delivered by someone else meanwhile.
                    Err(Error::Store(StoreError::Conflict { .. })) => {}
                    Err(e) => return Err(e),
                }
            }
            if last {
                return Ok(RedriveAll {
                    redriven,
                    more: false,
                });
            }
        }
        let more = !self
            .store
            .dead_deliveries_page(project, target, after, 1)
            .await?
            .is_empty();
        Ok(RedriveAll { redriven, more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_round_trip_and_unknown_ones_are_refused() {
        for s in [
            DeliveryState::Pending,
            DeliveryState::Retrying,
            DeliveryState::Delivered,
            DeliveryState::Dead,
        ] {
            assert_eq!(DeliveryState::parse(s.as_str()), Some(s));
            let json = serde_json::to_value(s).unwrap();
            assert_eq!(json, s.as_str(), "the stored name is the JSON name");
        }
        for r in [
            AttemptResult::Delivered,
            AttemptResult::Retrying,
            AttemptResult::Dead,
            AttemptResult::LeaseLost,
        ] {
            assert_eq!(AttemptResult::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        for bad in ["", "Pending", "dead ", "lost"] {
            assert_eq!(DeliveryState::parse(bad), None);
            assert_eq!(AttemptResult::parse(bad), None);
        }
        assert_eq!(AttemptResult::LeaseLost.state(), None);
        assert_eq!(AttemptResult::Dead.state(), Some(DeliveryState::Dead));
        assert_eq!(
            AttemptResult::Retrying.state(),
            Some(DeliveryState::Retrying)
        );
        assert_eq!(
            AttemptResult::Delivered.state(),
            Some(DeliveryState::Delivered)
        );
    }

    #[test]
    fn excerpts_are_capped_at_a_character_boundary() {
        assert_eq!(excerpt_of(b""), None);
        assert_eq!(excerpt_of(b"busy").as_deref(), Some("busy"));
        let long = vec![b'a'; MAX_EXCERPT + 5];
        assert_eq!(excerpt_of(&long).map(|e| e.len()), Some(MAX_EXCERPT));
        // A two-byte character across the limit is left out whole.
        let mut cut = vec![b'a'; MAX_EXCERPT - 1];
        cut.extend_from_slice("é".as_bytes());
        assert_eq!(excerpt_of(&cut), Some("a".repeat(MAX_EXCERPT - 1)));
        // Invalid UTF-8 is replaced, never refused.
        assert_eq!(excerpt_of(&[0xff, b'x']).as_deref(), Some("\u{fffd}x"));
    }
}
