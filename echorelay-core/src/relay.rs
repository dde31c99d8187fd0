//! The relay (S3, S5, S13): a message accepted at an inbound endpoint
//! becomes one delivery job per target of the endpoint's line, and the
//! delivery worker signs each (Standard Webhooks, [`crate::webhook`]) and
//! POSTs it with the target's sealed credentials.
//!
//! - [`RelayService::accept`] verifies the API key through core on every
//!   call (a revoked key fails on its next request), asks the voter for
//!   the [`Ingest`](crate::access::Surface::Ingest) surface (editors,
//!   owners and their keys), finds the endpoint in the key's own project
//!   (an endpoint of another project is "unknown", like one that does not
//!   exist), and enqueues every job of the message in one all-or-nothing
//!   batch ([`QueueService::enqueue_many`]): no message without its jobs,
//!   no job without its message. A job carries the message and references
//!   ([`DeliveryJob`], docs/FORMATS.md Part 7), never a secret.
//! - [`DeliveryService::run_once`] reserves jobs, opens each target's
//!   secrets only through the audited delivery capability
//!   ([`Voter::dangerous_delivery_grant`], asked once per project and
//!   kept until a target read through it is gone, +
//!   [`ConfigService::delivery_secrets`]), cached per target version so a
//!   delivery costs no audit event unless the target changed, signs,
//!   sends through a [`Transport`] (the HTTP client with the SSRF guard of
//!   [`crate::egress`] lives in `echorelay-http`), and acks, retries with
//!   the backoff (honouring `Retry-After`) or dead-letters by
//!   [`decide`]. Deliveries of one batch run concurrently, so a slow
//!   target does not hold up the others.
//!
//! Delivery is at least once: a worker that dies after the target
//! answered but before its ack lands makes the job due again when its
//! lease ends, and the target sees the same `webhook-id` twice. Receivers
//! de-duplicate by `webhook-id`.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::access::{Caller, Grant, Voter, surface};
use crate::clock::Clock;
use crate::config::{AuthInput, ConfigService, DeliverySecrets};
use crate::deliveries::{
    AttemptRecord, AttemptResult, DeliveryRecord, DeliveryState, MessageRecord, excerpt_of,
};
use crate::egress::EgressError;
use crate::group_commit::GroupCommit;
use crate::ids::{EndpointId, MessageId, ProjectId, TargetId};
use crate::keys::KeyService;
use crate::ports::{
    AccountStore, AuditSink, ConfigStore, DeliveryLog, IdempotencyStore, KeyStore, MembershipStore,
};
use crate::queue::{
    EnqueueOptions, ErrorClass, MAX_BATCH, NackOutcome, NackPolicy, Queue, QueueConfig, QueueError,
    QueueName, QueueService, ReservedJob,
};
use crate::vault::SecretVault;
use crate::webhook::{self, SigningSecret};

/// The queue delivery jobs go to.
pub const DELIVERY_QUEUE: &str = "deliveries";

/// The default limit of an inbound body: 256 KiB.
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;

/// Room for a job's header beside its body in the queue's payload limit.
const JOB_HEADER_ROOM: usize = 8 * 1024;

/// The most messages (on accept) or attempts (on delivery) one write to
/// the delivery log holds: concurrent writers share a commit
/// ([`crate::deliveries`], "Group commit").
const LOG_BATCH: usize = 64;

/// The longest content type kept with a message.
pub const MAX_CONTENT_TYPE: usize = 255;

/// The relay's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// The largest inbound body, in bytes. Default [`DEFAULT_MAX_BODY`].
    pub max_body: usize,
    /// Attempts per delivery before it is dead-lettered. Default 10.
    pub max_attempts: u32,
    /// How long a worker holds a job before another may take it.
    /// Default 60 s; must exceed `request_timeout`.
    pub lease: Duration,
    /// The longest a target may take to answer. Default 15 s.
    pub request_timeout: Duration,
    /// Whether a 4xx answer other than 408 and 429 is final (dead-letter
    /// at once, the default) or retried like a 5xx.
    pub final_4xx: bool,
    /// Bytes of a target's answer kept for the delivery record. Default
    /// 512.
    pub excerpt: usize,
    /// How long an `Idempotency-Key` is remembered. Default 24 h.
    pub idempotency_ttl: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
            max_attempts: 10,
            lease: Duration::from_secs(60),
            request_timeout: Duration::from_secs(15),
            final_4xx: true,
            excerpt: 512,
            idempotency_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl RelayConfig {
    /// The queue settings the relay's jobs need: a payload limit that
    /// holds the largest body and its job header.
    pub fn queue_config(&self, base: QueueConfig) -> QueueConfig {
        QueueConfig {
            max_payload: base
                .max_payload
                .max(self.max_body.saturating_add(JOB_HEADER_ROOM)),
            ..base
        }
    }
}

/// Why the relay refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The API key is missing, malformed, unknown, revoked or expired.
    #[error("authentication failed")]
    Unauthenticated,
    /// The key's role may not publish messages (viewer keys).
    #[error("this key may not publish messages")]
    Denied,
    /// No such endpoint in the key's project.
    #[error("unknown endpoint")]
    UnknownEndpoint,
    /// The body is over the limit.
    #[error("the body is over the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The endpoint's line has more targets than one message may fan out
    /// to atomically.
    #[error("the line has {targets} targets; a message fans out to at most {MAX_BATCH}")]
    TooManyTargets {
        /// How many.
        targets: usize,
    },
    /// A content type that is not printable ASCII or is too long.
    #[error("malformed content type")]
    BadContentType,
    /// An `Idempotency-Key` that is not 1 to 255 visible ASCII
    /// characters.
    #[error("malformed idempotency key: 1 to 255 visible ASCII characters")]
    BadIdempotencyKey,
    /// A job payload that is not a delivery job of this format.
    #[error("malformed delivery job: {0}")]
    MalformedJob(&'static str),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Core failed (the store, the vault).
    #[error(transparent)]
    Core(crate::Error),
}

impl From<crate::Error> for RelayError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Unauthenticated => RelayError::Unauthenticated,
            crate::Error::Denied(_) => RelayError::Denied,
            other => RelayError::Core(other),
        }
    }
}

/// One delivery job: the message and where it goes (docs/FORMATS.md
/// Part 7). Never a secret: the worker opens the target's credentials
/// when it delivers.
#[derive(Clone, PartialEq, Eq)]
pub struct DeliveryJob {
    /// The message (its `webhook-id`).
    pub message: MessageId,
    /// The project.
    pub project: ProjectId,
    /// The endpoint it came in at.
    pub endpoint: EndpointId,
    /// The target it goes to.
    pub target: TargetId,
    /// When it was accepted.
    pub received_at: DateTime<Utc>,
    /// Its content type, as received.
    pub content_type: Option<String>,
    /// Its body, byte for byte as received.
    pub body: Vec<u8>,
}

impl fmt::Debug for DeliveryJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryJob")
            .field("message", &self.message)
            .field("project", &self.project)
            .field("target", &self.target)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

const JOB_MAGIC: &[u8] = b"erjob1\n";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobHeader {
    message: MessageId,
    project: ProjectId,
    endpoint: EndpointId,
    target: TargetId,
    received_at: DateTime<Utc>,
    content_type: Option<String>,
}

impl DeliveryJob {
    /// The payload: `erjob1\n`, the header as one line of JSON, `\n`,
    /// then the body's bytes as they are.
    pub fn encode(&self) -> Vec<u8> {
        let header = JobHeader {
            message: self.message,
            project: self.project,
            endpoint: self.endpoint,
            target: self.target,
            received_at: self.received_at,
            content_type: self.content_type.clone(),
        };
        let mut out = Vec::with_capacity(JOB_MAGIC.len() + 256 + self.body.len());
        out.extend_from_slice(JOB_MAGIC);
        // Ids, a time and a short string: serializing to memory cannot
        // fail.
        if serde_json::to_writer(&mut out, &header).is_ok() {
            out.push(b'\n');
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// Reads a payload written by [`DeliveryJob::encode`].
    ///
    /// # Errors
    /// [`RelayError::MalformedJob`] naming what is wrong.
    pub fn decode(payload: &[u8]) -> Result<Self, RelayError> {
        let rest = payload
            .strip_prefix(JOB_MAGIC)
            .ok_or(RelayError::MalformedJob("not a delivery job"))?;
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or(RelayError::MalformedJob("no header line"))?;
        let header: JobHeader =
            serde_json::from_slice(&rest[..end]).map_err(|_| RelayError::MalformedJob("header"))?;
        if header
            .content_type
            .as_deref()
            .is_some_and(|c| !content_type_ok(c))
        {
            return Err(RelayError::MalformedJob("content type"));
        }
        Ok(Self {
            message: header.message,
            project: header.project,
            endpoint: header.endpoint,
            target: header.target,
            received_at: header.received_at,
            content_type: header.content_type,
            body: rest[end + 1..].to_vec(),
        })
    }
}

fn content_type_ok(c: &str) -> bool {
    !c.is_empty() && c.len() <= MAX_CONTENT_TYPE && c.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// What [`RelayService::accept`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The message's id.
    pub message: MessageId,
    /// Delivery jobs enqueued: one per target of the line (0 when it has
    /// none, and for a replay).
    pub deliveries: usize,
    /// The `Idempotency-Key` was used before in this project: `message` is
    /// the first message sent under it, and nothing was enqueued now.
    pub replayed: bool,
}

/// The longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

fn idempotency_key_ok(k: &str) -> bool {
    (1..=MAX_IDEMPOTENCY_KEY).contains(&k.len()) && k.bytes().all(|b| (0x21..0x7f).contains(&b))
}

/// Accepts inbound messages; see the module docs.
pub struct RelayService<S, V, Q: Queue> {
    keys: KeyService<S, V>,
    voter: Voter<S>,
    store: S,
    queue: QueueService<Q>,
    config: RelayConfig,
    clock: Arc<dyn Clock>,
    messages: Arc<GroupCommit<(MessageRecord, Vec<DeliveryRecord>)>>,
}

impl<S: Clone, V: Clone, Q: Queue + Clone> Clone for RelayService<S, V, Q> {
    fn clone(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            voter: self.voter.clone(),
            store: self.store.clone(),
            queue: self.queue.clone(),
            config: self.config,
            clock: self.clock.clone(),
            messages: self.messages.clone(),
        }
    }
}

impl<S, V, Q> RelayService<S, V, Q>
where
    S: KeyStore
        + ConfigStore
        + MembershipStore
        + AuditSink
        + AccountStore
        + IdempotencyStore
        + DeliveryLog
        + Clone
        + 'static,
    V: SecretVault,
    Q: Queue,
{
    /// A relay accepting with `keys` and `voter`, reading endpoints from
    /// `store`, enqueueing on `queue` (whose payload limit must hold
    /// [`RelayConfig::queue_config`]).
    pub fn new(
        keys: KeyService<S, V>,
        voter: Voter<S>,
        store: S,
        queue: QueueService<Q>,
        config: RelayConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let log = store.clone();
        let messages = GroupCommit::new(LOG_BATCH, move |batch| {
            let log = log.clone();
            async move { log.record_messages(batch).await }
        });
        Self {
            keys,
            voter,
            store,
            queue,
            config,
            clock,
            messages: Arc::new(messages),
        }
    }

    /// The settings.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Accepts `body` at `endpoint` for the holder of `presented_key`:
    /// see the module docs. With an `idempotency_key`, the first message
    /// accepted under that key in the project (within
    /// [`RelayConfig::idempotency_ttl`]) is the answer to every later one,
    /// which enqueues nothing ([`Accepted::replayed`]).
    ///
    /// # Errors
    /// [`RelayError::Unauthenticated`], [`RelayError::Denied`],
    /// [`RelayError::UnknownEndpoint`] (also for another project's
    /// endpoint), [`RelayError::BodyTooLarge`],
    /// [`RelayError::BadContentType`], [`RelayError::BadIdempotencyKey`],
    /// [`RelayError::TooManyTargets`], or the queue's or store's error;
    /// nothing is enqueued then (and the idempotency key is free again).
    pub async fn accept(
        &self,
        presented_key: &str,
        endpoint: EndpointId,
        content_type: Option<&str>,
        idempotency_key: Option<&str>,
        body: Vec<u8>,
        ip: Option<IpAddr>,
    ) -> Result<Accepted, RelayError> {
        let key = self.keys.verify(presented_key).await?;
        let project = key.project();
        let caller = Caller::api_key(key, ip);
        let (found, route) = match self
            .store
            .ingest_route(project, endpoint)
            .await
            .map_err(crate::Error::from)?
        {
            Some(r) => (Some(r.project), r.targets),
            None => (None, None),
        };
        let grant = self
            .voter
            .authorize_found::<surface::Ingest>(&caller, found)
            .await?;
        if body.len() > self.config.max_body {
            return Err(RelayError::BodyTooLarge {
                limit: self.config.max_body,
            });
        }
        if content_type.is_some_and(|c| !content_type_ok(c)) {
            return Err(RelayError::BadContentType);
        }
        if idempotency_key.is_some_and(|k| !idempotency_key_ok(k)) {
            return Err(RelayError::BadIdempotencyKey);
        }
        let Some(targets) = route else {
            return Err(RelayError::UnknownEndpoint);
        };
        if targets.len() > MAX_BATCH {
            return Err(RelayError::TooManyTargets {
                targets: targets.len(),
            });
        }
        let message = MessageId::random();
        let received_at = self.clock.now();
        if let Some(k) = idempotency_key {
            let until = chrono::Duration::from_std(self.config.idempotency_ttl)
                .ok()
                .and_then(|ttl| received_at.checked_add_signed(ttl))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            let held = self
                .store
                .claim_idempotency_key(grant.project_id(), k, message, received_at, until)
                .await
                .map_err(crate::Error::from)?;
            if let Some(first) = held {
                return Ok(Accepted {
                    message: first,
                    deliveries: 0,
                    replayed: true,
                });
            }
        }
        let jobs = targets
            .iter()
            .map(|&target| {
                let job = DeliveryJob {
                    message,
                    project: grant.project_id(),
                    endpoint,
                    target,
                    received_at,
                    content_type: content_type.map(str::to_owned),
                    body: body.clone(),
                };
                (
                    job.encode(),
                    EnqueueOptions::new().max_attempts(self.config.max_attempts),
                )
            })
            .collect();
        let queue = delivery_queue()?;
        let project = grant.project_id();
        // The log first (docs of `crate::deliveries`): a message the jobs
        // of which could not be enqueued is removed from it again.
        let record = MessageRecord {
            id: message,
            project,
            endpoint,
            received_at,
            content_type: content_type.map(str::to_owned),
            size: body.len() as u64,
        };
        let deliveries = targets
            .iter()
            .map(|&target| DeliveryRecord {
                message,
                project,
                target,
                state: DeliveryState::Pending,
                attempts: 0,
                job: None,
                updated_at: received_at,
                next_attempt_at: None,
                last_status: None,
                last_class: None,
            })
            .collect();
        let logged = self.messages.write((record, deliveries)).await;
        let enqueued = match logged {
            Ok(()) => self
                .queue
                .enqueue_many(&queue, jobs)
                .await
                .map_err(RelayError::from),
            Err(e) => Err(crate::Error::from(e).into()),
        };
        let ids = match enqueued {
            Ok(ids) => ids,
            Err(e) => {
                // Best effort: a retry must not be told it was sent, and
                // the log must not list what was never enqueued.
                if let Some(k) = idempotency_key {
                    let _ = self
                        .store
                        .release_idempotency_key(project, k, message)
                        .await;
                }
                let _ = self.store.delete_message(project, message).await;
                return Err(e);
            }
        };
        tracing::debug!(message = %message, deliveries = ids.len(), "relay: message accepted");
        Ok(Accepted {
            message,
            deliveries: ids.len(),
            replayed: false,
        })
    }
}

impl<S, V, Q> RelayService<S, V, Q>
where
    S: IdempotencyStore,
    Q: Queue,
{
    /// Deletes the `Idempotency-Key` claims that expired by now (the
    /// scheduled maintenance runs it); returns how many.
    ///
    /// # Errors
    /// The store's error.
    pub async fn purge_idempotency_keys(&self) -> Result<usize, RelayError> {
        Ok(self
            .store
            .purge_idempotency_keys(self.clock.now())
            .await
            .map_err(crate::Error::from)?)
    }
}

fn delivery_queue() -> Result<QueueName, RelayError> {
    QueueName::new(DELIVERY_QUEUE).map_err(RelayError::Queue)
}

/// A request the worker sends. `Debug` shows the URL and header names,
/// never the credentials.
pub struct OutboundRequest {
    /// The target's URL.
    pub url: String,
    /// Headers other than `Authorization`: the Standard Webhooks headers,
    /// `content-type`, `user-agent`.
    pub headers: Vec<(&'static str, String)>,
    /// The `Authorization` header's value, if the target has auth.
    pub authorization: Option<SecretString>,
    /// The body, byte for byte as received.
    pub body: Vec<u8>,
    /// The longest the target may take to answer (headers and body).
    pub timeout: Duration,
    /// Bytes of the answer to keep.
    pub excerpt: usize,
}

impl fmt::Debug for OutboundRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundRequest")
            .field("url", &self.url)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            )
            .field("authorization", &self.authorization.as_ref().map(|_| "…"))
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A target's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundResponse {
    /// The status code.
    pub status: u16,
    /// Its `Retry-After`, in seconds form or as a date, made relative.
    pub retry_after: Option<Duration>,
    /// The first bytes of its body (at most the request's `excerpt`).
    pub excerpt: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The egress policy refused the URL or an address it resolved to.
    #[error("refused by the egress policy: {0}")]
    Refused(#[from] EgressError),
    /// The host name did not resolve.
    #[error("the host did not resolve")]
    Dns,
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// The connection failed or broke.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The answer was not HTTP.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl TransportError {
    /// The error class recorded with the attempt.
    pub fn class(&self) -> &'static str {
        match self {
            TransportError::Refused(e) => e.class(),
            TransportError::Dns => "dns",
            TransportError::Timeout => "timeout",
            TransportError::Connect(_) => "connect",
            TransportError::Tls(_) => "tls",
            TransportError::Protocol(_) => "protocol",
        }
    }
}

/// How the worker sends a request: the HTTP client of `echorelay-http`
/// (with the SSRF guard), or a test double.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends `request` and reads the answer (headers, and at most
    /// `request.excerpt` bytes of its body). Never follows redirects.
    async fn post(&self, request: OutboundRequest) -> Result<OutboundResponse, TransportError>;
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for Arc<T> {
    async fn post(&self, request: OutboundRequest) -> Result<OutboundResponse, TransportError> {
        (**self).post(request).await
    }
}

/// What to do with a job after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Delivered: ack.
    Ack,
    /// Try again with this policy.
    Retry(NackPolicy),
    /// Do not try again: dead-letter.
    Dead,
}

/// The delivery rule: 2xx acks; 408, 429, 5xx and every transport error
/// but a refusal retry (429 and 503 after their `Retry-After`); other
/// answers (3xx: redirects are not followed; 4xx) dead-letter when
/// `final_4xx`, else retry; an egress refusal dead-letters. Returns the
/// decision and the error class (`None` for a success).
pub fn decide(
    result: &Result<OutboundResponse, TransportError>,
    final_4xx: bool,
) -> (Decision, Option<String>) {
    match result {
        Ok(r) if (200..300).contains(&r.status) => (Decision::Ack, None),
        Ok(r) => {
            let class = format!("http_{}", r.status);
            let retry = match r.retry_after {
                Some(d) if matches!(r.status, 429 | 503) => NackPolicy::After(d),
                _ => NackPolicy::Backoff,
            };
            let decision = if r.status == 408 || r.status == 429 || r.status >= 500 || !final_4xx {
                Decision::Retry(retry)
            } else {
                Decision::Dead
            };
            (decision, Some(class))
        }
        Err(TransportError::Refused(e)) => (Decision::Dead, Some(e.class().to_owned())),
        Err(e) => (
            Decision::Retry(NackPolicy::Backoff),
            Some(e.class().to_owned()),
        ),
    }
}

/// What happened to one reserved job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The message, if the job decoded.
    pub message: Option<MessageId>,
    /// The target, if the job decoded.
    pub target: Option<TargetId>,
    /// This attempt, from 1.
    pub attempt: u32,
    /// The answer's status, if there was one.
    pub status: Option<u16>,
    /// The error class, for anything but a success.
    pub class: Option<String>,
    /// What became of the job.
    pub outcome: AttemptOutcome,
    /// How long the request took.
    pub latency: Duration,
}

/// What became of a job after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Acked.
    Delivered,
    /// Due again at this time.
    Retrying(DateTime<Utc>),
    /// In the dead-letter set.
    Dead,
    /// The lease was lost before the ack or nack (another worker has the
    /// job now).
    LeaseLost,
}

/// How an attempt ended, before the job is settled.
struct Settle {
    decision: Decision,
    class: Option<String>,
    status: Option<u16>,
    latency: Duration,
    excerpt: Option<String>,
}

impl Settle {
    /// Refused before any request was sent.
    fn refused(decision: Decision, class: &str) -> Self {
        Self {
            decision,
            class: Some(class.to_owned()),
            status: None,
            latency: Duration::ZERO,
            excerpt: None,
        }
    }
}

/// Delivers jobs; see the module docs.
pub struct DeliveryService<S, V, Q: Queue, T> {
    config: ConfigService<S, V>,
    voter: Voter<S>,
    queue: QueueService<Q>,
    transport: T,
    relay: RelayConfig,
    clock: Arc<dyn Clock>,
    secrets: Arc<Mutex<HashMap<TargetId, Arc<DeliverySecrets>>>>,
    grants: Mutex<HashMap<ProjectId, Arc<Grant<surface::Delivery>>>>,
    attempts: GroupCommit<AttemptRecord>,
}

impl<S, V, Q, T> DeliveryService<S, V, Q, T>
where
    S: DeliveryLog + Clone + 'static,
    Q: Queue,
{
    /// A worker delivering jobs of `queue` through `transport`, recording
    /// each attempt in `log`'s delivery log.
    pub fn new(
        config: ConfigService<S, V>,
        log: S,
        voter: Voter<S>,
        queue: QueueService<Q>,
        transport: T,
        relay: RelayConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let attempts = GroupCommit::new(LOG_BATCH, {
            let log = log.clone();
            move |batch| {
                let log = log.clone();
                async move { log.record_attempts(batch).await }
            }
        });
        Self {
            attempts,
            config,
            voter,
            queue,
            transport,
            relay,
            clock,
            secrets: Arc::new(Mutex::new(HashMap::new())),
            grants: Mutex::new(HashMap::new()),
        }
    }
}

impl<S, V, Q, T> DeliveryService<S, V, Q, T>
where
    S: ConfigStore + MembershipStore + AuditSink + DeliveryLog + Clone,
    V: SecretVault,
    Q: Queue,
    T: Transport,
{
    /// Reserves up to `n` due jobs (1 to [`MAX_BATCH`]) and delivers them
    /// concurrently; returns one [`Attempt`] per job (none if nothing was
    /// due).
    ///
    /// # Errors
    /// The queue's error from the reservation; a job's own failures are
    /// in its `Attempt`.
    pub async fn run_once(&self, n: usize) -> Result<Vec<Attempt>, RelayError> {
        let queue = delivery_queue()?;
        let jobs = self.queue.reserve(&queue, n, self.relay.lease).await?;
        Ok(futures_util::future::join_all(jobs.into_iter().map(|j| self.deliver(j))).await)
    }

    /// [`DeliveryService::run_once`], waiting up to `max_wait` for a job
    /// when none is due.
    ///
    /// # Errors
    /// As `run_once`.
    pub async fn run_wait(&self, n: usize, max_wait: Duration) -> Result<Vec<Attempt>, RelayError> {
        let queue = delivery_queue()?;
        let jobs = self
            .queue
            .reserve_wait(&queue, n, self.relay.lease, max_wait)
            .await?;
        Ok(futures_util::future::join_all(jobs.into_iter().map(|j| self.deliver(j))).await)
    }

    /// Delivers one reserved job and acks, nacks or dead-letters it, then
    /// records the attempt in the delivery log (best effort: a log that
    /// cannot be written does not change what was done with the job).
    pub async fn deliver(&self, job: ReservedJob) -> Attempt {
        let decoded = match DeliveryJob::decode(&job.payload) {
            Ok(d) => d,
            Err(_) => {
                return self
                    .finish(&job, None, Settle::refused(Decision::Dead, "malformed_job"))
                    .await;
            }
        };
        let secrets = match self.secrets_for(decoded.project, decoded.target).await {
            Ok(s) => s,
            Err(class) => {
                let decision = if class == "target_gone" {
                    Decision::Dead
                } else {
                    Decision::Retry(NackPolicy::Backoff)
                };
                return self
                    .finish(&job, Some(&decoded), Settle::refused(decision, class))
                    .await;
            }
        };
        let request = match self.request(&decoded, &secrets) {
            Ok(r) => r,
            Err(class) => {
                return self
                    .finish(&job, Some(&decoded), Settle::refused(Decision::Dead, class))
                    .await;
            }
        };
        let started = Instant::now();
        let result = self.transport.post(request).await;
        let latency = started.elapsed();
        let (decision, class) = decide(&result, self.relay.final_4xx);
        let (status, excerpt) = match &result {
            Ok(r) => (Some(r.status), excerpt_of(&r.excerpt)),
            Err(_) => (None, None),
        };
        self.finish(
            &job,
            Some(&decoded),
            Settle {
                decision,
                class,
                status,
                latency,
                excerpt,
            },
        )
        .await
    }

    async fn finish(&self, job: &ReservedJob, decoded: Option<&DeliveryJob>, s: Settle) -> Attempt {
        // Every class the relay makes is valid (`relay::tests` checks
        // them); the fallback is never taken.
        let error_class = ErrorClass::new(s.class.as_deref().unwrap_or("error"))
            .unwrap_or_else(|_| ErrorClass::lease_expired());
        let done = match s.decision {
            Decision::Ack => self
                .queue
                .ack(&job.token)
                .await
                .map(|()| AttemptOutcome::Delivered),
            Decision::Retry(policy) => self
                .queue
                .nack(&job.token, policy, &error_class)
                .await
                .map(outcome_of),
            Decision::Dead => self
                .queue
                .nack(&job.token, NackPolicy::Never, &error_class)
                .await
                .map(outcome_of),
        };
        let outcome = match done {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(job = %job.id(), error = %e, "relay: could not settle a delivery");
                AttemptOutcome::LeaseLost
            }
        };
        tracing::debug!(job = %job.id(), ?outcome, class = s.class.as_deref().unwrap_or(""), "relay: delivery attempt");
        if let Some(d) = decoded {
            let (result, next_attempt_at) = match outcome {
                AttemptOutcome::Delivered => (AttemptResult::Delivered, None),
                AttemptOutcome::Retrying(at) => (AttemptResult::Retrying, Some(at)),
                AttemptOutcome::Dead => (AttemptResult::Dead, None),
                AttemptOutcome::LeaseLost => (AttemptResult::LeaseLost, None),
            };
            let record = AttemptRecord {
                message: d.message,
                project: d.project,
                target: d.target,
                job: job.id(),
                attempt: job.attempt,
                at: self.clock.now(),
                status: s.status,
                class: s.class.clone(),
                latency_ms: u32::try_from(s.latency.as_millis()).unwrap_or(u32::MAX),
                result,
                next_attempt_at,
                excerpt: s.excerpt,
            };
            if let Err(e) = self.attempts.write(record).await {
                tracing::warn!(job = %job.id(), error = %e, "relay: could not record a delivery attempt");
            }
        }
        Attempt {
            message: decoded.map(|d| d.message),
            target: decoded.map(|d| d.target),
            attempt: job.attempt,
            status: s.status,
            class: s.class,
            outcome,
            latency: s.latency,
        }
    }

    /// The target's secrets: from the cache while the stored target's
    /// version is the cached one, else opened (and audited) anew.
    async fn secrets_for(
        &self,
        project: ProjectId,
        target: TargetId,
    ) -> Result<Arc<DeliverySecrets>, &'static str> {
        let grant = match self.grant_for(project).await {
            Ok(g) => g,
            Err(crate::Error::Store(crate::error::StoreError::NotFound { .. })) => {
                return Err("target_gone");
            }
            Err(_) => return Err("store"),
        };
        let version = match self.config.delivery_version(&grant, target).await {
            Ok(v) => v,
            Err(crate::Error::Store(crate::error::StoreError::NotFound { .. })) => {
                // The target is gone, perhaps with its project: neither
                // is kept.
                self.forget(target);
                if let Ok(mut g) = self.grants.lock() {
                    g.remove(&project);
                }
                return Err("target_gone");
            }
            Err(_) => return Err("store"),
        };
        if let Some(s) = self.cached(target)
            && s.version == version
        {
            return Ok(s);
        }
        match self.config.delivery_secrets(&grant, target).await {
            Ok(s) => {
                let s = Arc::new(s);
                if let Ok(mut c) = self.secrets.lock() {
                    c.insert(target, s.clone());
                }
                Ok(s)
            }
            Err(crate::Error::Store(crate::error::StoreError::NotFound { .. })) => {
                Err("target_gone")
            }
            Err(crate::Error::Vault(_)) => Err("secret_unavailable"),
            Err(_) => Err("store"),
        }
    }

    /// The project's delivery capability, asked of the voter once per
    /// project and kept: it names the project and no one's role, so it
    /// changes only when the project goes, and then every target read
    /// through it is `NotFound`, which drops it.
    async fn grant_for(&self, project: ProjectId) -> crate::Result<Arc<Grant<surface::Delivery>>> {
        if let Some(g) = self
            .grants
            .lock()
            .ok()
            .and_then(|g| g.get(&project).cloned())
        {
            return Ok(g);
        }
        let g = Arc::new(self.voter.dangerous_delivery_grant(project).await?);
        if let Ok(mut grants) = self.grants.lock() {
            grants.insert(project, g.clone());
        }
        Ok(g)
    }

    fn cached(&self, target: TargetId) -> Option<Arc<DeliverySecrets>> {
        self.secrets.lock().ok()?.get(&target).cloned()
    }

    fn forget(&self, target: TargetId) {
        if let Ok(mut c) = self.secrets.lock() {
            c.remove(&target);
        }
    }

    /// The signed request for `job` to the target of `secrets`.
    fn request(
        &self,
        job: &DeliveryJob,
        secrets: &DeliverySecrets,
    ) -> Result<OutboundRequest, &'static str> {
        let now = self.clock.now();
        // The current secret and every retired one still in its grace:
        // one signature each, so a receiver holding either verifies.
        let active = secrets
            .signing_secrets_at(now)
            .into_iter()
            .map(|s| SigningSecret::parse(s.expose_secret()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "signing_secret")?;
        let id = job.message.to_string();
        let timestamp = now.timestamp();
        let refs: Vec<&SigningSecret> = active.iter().collect();
        let signature =
            webhook::signature_header(&refs, &id, timestamp, &job.body).map_err(|_| "signing")?;
        let authorization = match &secrets.auth {
            AuthInput::None => None,
            AuthInput::Bearer(token) => Some(SecretString::from(format!(
                "Bearer {}",
                token.expose_secret()
            ))),
            AuthInput::Basic { username, password } => {
                use base64::Engine;
                let pair =
                    zeroize::Zeroizing::new(format!("{username}:{}", password.expose_secret()));
                Some(SecretString::from(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
                )))
            }
        };
        let mut headers = vec![
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
            (
                "user-agent",
                concat!("echorelay/", env!("CARGO_PKG_VERSION")).to_owned(),
            ),
        ];
        headers.push((
            "content-type",
            job.content_type
                .clone()
                .unwrap_or_else(|| "application/octet-stream".to_owned()),
        ));
        Ok(OutboundRequest {
            url: secrets.url.clone(),
            headers,
            authorization,
            body: job.body.clone(),
            timeout: self.relay.request_timeout,
            excerpt: self.relay.excerpt,
        })
    }
}

fn outcome_of(o: NackOutcome) -> AttemptOutcome {
    match o {
        NackOutcome::Retrying(at) => AttemptOutcome::Retrying(at),
        NackOutcome::Dead => AttemptOutcome::Dead,
    }
}
