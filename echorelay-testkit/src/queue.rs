//! The queue suite: checks of the contract in [`echorelay_core::queue`]'s
//! module docs, run by every queue backend through
//! [`queue_tests!`](crate::queue_tests!).
//!
//! Each check takes a [`QueueHarness`]: the backend, a [`ManualClock`] at
//! 2026-01-01T00:00:00Z, a [`QueueService`] over both, and a fresh random
//! queue name, so checks never see each other's jobs even on a shared
//! database. Most checks go through the service (core's rules are part of
//! what an embedder gets); the race checks call the port with explicit
//! times, so each racer's `now` is exactly what the check means.
//!
//! Race checks release their callers together from a barrier
//! ([`QueueHarness::race`], after a round of concurrent `stats` calls that
//! opens the connections they need), in rounds, and two-party races
//! alternate which party is spawned last, so a backend that checks,
//! yields, then writes is caught (`echorelay-store-mem/tests/racy_queue_is_caught.rs`
//! shows each one failing against `MemQueue::racy`).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use echorelay_core::clock::{Clock, ManualClock};
use echorelay_core::queue::{
    DEFAULT_MAX_ATTEMPTS, DedupKey, EnqueueOptions, ErrorClass, JobId, LeaseNonce, LeaseToken,
    MAX_ATTEMPTS, MAX_BATCH, MAX_LEASE, NackOutcome, NackPolicy, Queue, QueueError, QueueName,
    QueueService, QueueStats, ReservedJob, Retry, RunAt,
};

/// What the suite needs of a queue backend.
pub trait TestQueue: Queue + Clone + Send + Sync + 'static {}
impl<T: Queue + Clone + Send + Sync + 'static> TestQueue for T {}

/// The lease the checks reserve with.
pub const LEASE: Duration = Duration::from_secs(30);
/// Callers of the many-party race checks.
pub const RACERS: usize = 8;
/// Rounds of the two-party race checks (each about even odds of
/// interleaving against a check-yield-write backend).
pub const PAIR_ROUNDS: usize = 40;
/// Rounds of the many-party race checks.
pub const MANY_ROUNDS: usize = 10;

/// A queue backend wired to a [`QueueService`] with a test clock.
pub struct QueueHarness<Q: TestQueue> {
    /// The backend under test.
    pub queue: Q,
    /// The clock the service reads; move it to move time.
    pub clock: ManualClock,
    /// Core's service over the backend.
    pub service: QueueService<Q>,
    /// This check's queue (fresh and random).
    pub name: QueueName,
}

impl<Q: TestQueue> QueueHarness<Q> {
    /// Wires `queue` with the default [`QueueConfig`](echorelay_core::queue::QueueConfig)
    /// and a clock at 2026-01-01.
    pub fn new(queue: Q) -> Self {
        let clock = ManualClock::at_unix(1_767_225_600);
        let c: Arc<dyn Clock> = Arc::new(clock.clone());
        Self {
            service: QueueService::new(queue.clone(), c),
            queue,
            clock,
            name: fresh_name(),
        }
    }

    /// Another fresh queue name.
    pub fn other_name(&self) -> QueueName {
        fresh_name()
    }

    /// The service's now.
    pub fn now(&self) -> DateTime<Utc> {
        self.service.now()
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.clock
            .advance(chrono::Duration::from_std(d).expect("a test duration"));
    }

    /// Sets the clock to `t`.
    pub fn set(&self, t: DateTime<Utc>) {
        self.clock.set(t);
    }

    /// The stats of this check's queue now.
    pub async fn stats(&self) -> QueueStats {
        self.service.stats(&self.name).await.expect("queue: stats")
    }

    /// Opens the backend's connections before a race: `callers`
    /// concurrent `stats` calls released from a barrier.
    pub async fn warm_up(&self, callers: usize) {
        let calls: Vec<_> = (0..callers)
            .map(|_| {
                let (q, name, now) = (self.queue.clone(), self.name.clone(), self.now());
                async move {
                    q.stats(&name, now)
                        .await
                        .expect("queue: the warm-up failed");
                }
            })
            .collect();
        crate::race(calls).await;
    }

    /// [`QueueHarness::warm_up`] for `calls.len()` callers, then
    /// [`crate::race`].
    pub async fn race<F>(&self, calls: Vec<F>) -> Vec<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.warm_up(calls.len()).await;
        crate::race(calls).await
    }

    async fn put(&self, payload: &[u8]) -> JobId {
        self.put_with(payload, EnqueueOptions::new()).await
    }

    async fn put_with(&self, payload: &[u8], options: EnqueueOptions) -> JobId {
        self.service
            .enqueue(&self.name, payload.to_vec(), options)
            .await
            .expect("queue: enqueue")
    }

    async fn reserve(&self, n: usize) -> Vec<ReservedJob> {
        self.service
            .reserve(&self.name, n, LEASE)
            .await
            .expect("queue: reserve")
    }

    async fn reserve_one(&self) -> ReservedJob {
        let mut got = self.reserve(1).await;
        assert_eq!(
            got.len(),
            1,
            "queue: expected one due job, got {}",
            got.len()
        );
        got.remove(0)
    }

    /// Makes a job of `max_attempts` attempts and kills it with a nack;
    /// returns its id.
    async fn dead_job(&self, payload: &[u8]) -> JobId {
        let id = self
            .put_with(payload, EnqueueOptions::new().max_attempts(1))
            .await;
        let j = self.reserve_one().await;
        assert_eq!(j.id(), id, "queue: reserved another job than the one made");
        let out = self
            .service
            .nack(&j.token, NackPolicy::Never, &class("killed"))
            .await
            .expect("queue: nack");
        assert_eq!(out, NackOutcome::Dead);
        id
    }
}

fn fresh_name() -> QueueName {
    let id = JobId::random().to_string();
    QueueName::new(&format!("t-{}", &id[4..20])).expect("a valid name")
}

fn class(s: &str) -> ErrorClass {
    ErrorClass::new(s).expect("a valid class")
}

fn key(s: &str) -> DedupKey {
    DedupKey::new(s).expect("a valid key")
}

fn fresh_key() -> DedupKey {
    key(&JobId::random().to_string())
}

fn stats(waiting: u64, delayed: u64, in_flight: u64, dead: u64) -> QueueStats {
    QueueStats {
        waiting,
        delayed,
        in_flight,
        dead,
    }
}

fn invalid<T>(what: &'static str) -> Result<T, QueueError> {
    Err(QueueError::InvalidArgument(what))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn plus(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).expect("a test duration")
}

const MICRO: Duration = Duration::from_micros(1);

/// Every way to use `token` (ack, nack, extend, ack-many) is refused as
/// stale, and the queue's stats do not move.
async fn assert_stale<Q: TestQueue>(h: &QueueHarness<Q>, token: &LeaseToken, what: &str) {
    let before = h.stats().await;
    let s = &h.service;
    assert_eq!(
        s.ack(token).await,
        Err(QueueError::StaleLease),
        "queue: ack {what}"
    );
    assert_eq!(
        s.nack(token, NackPolicy::Never, &class("x")).await,
        Err(QueueError::StaleLease),
        "queue: nack {what}"
    );
    assert_eq!(
        s.nack(token, NackPolicy::After(secs(5)), &class("x")).await,
        Err(QueueError::StaleLease),
        "queue: nack (retry) {what}"
    );
    assert_eq!(
        s.extend(token, secs(600)).await,
        Err(QueueError::StaleLease),
        "queue: extend {what}"
    );
    assert_eq!(
        s.ack_many(std::slice::from_ref(token)).await,
        Ok(vec![Err(QueueError::StaleLease)]),
        "queue: ack_many {what}"
    );
    assert_eq!(
        h.stats().await,
        before,
        "queue: a refused {what} changed the queue"
    );
}

// ---------------------------------------------------------------------------
// The basic cycle and the limits
// ---------------------------------------------------------------------------

/// Enqueue → reserve → ack: the payload comes back byte for byte, as
/// attempt 1 of the default attempts, with the enqueue time and the lease
/// end core asked for; a held job is not handed out twice; an acked job is
/// deleted (no state counts it) and its token is stale; the token's text
/// form parses back to the same token and acks.
pub async fn enqueue_reserve_ack_round_trip<Q: TestQueue>(h: QueueHarness<Q>) {
    let t0 = h.now();
    let payload: Vec<u8> = (0..=255u8).collect();
    let id = h.put(&payload).await;
    assert_eq!(h.stats().await, stats(1, 0, 0, 0));
    let j = h.reserve_one().await;
    assert_eq!(j.id(), id);
    assert_eq!(j.payload, payload, "queue: the payload changed");
    assert_eq!((j.attempt, j.token.attempt()), (1, 1));
    assert_eq!(j.max_attempts, DEFAULT_MAX_ATTEMPTS);
    assert_eq!(j.enqueued_at, t0);
    assert_eq!(j.lease_until, plus(t0, LEASE));
    assert_eq!(h.stats().await, stats(0, 0, 1, 0));
    assert!(
        h.reserve(10).await.is_empty(),
        "queue: a held job was handed out again"
    );
    let parsed: LeaseToken = j.token.to_string().parse().expect("queue: token text");
    assert_eq!(parsed, j.token);
    h.service.ack(&parsed).await.expect("queue: ack");
    assert_eq!(
        h.stats().await,
        stats(0, 0, 0, 0),
        "queue: an acked job is still counted"
    );
    assert!(h.reserve(10).await.is_empty());
    assert!(
        h.service
            .dead_jobs(&h.name, None, 10)
            .await
            .unwrap()
            .is_empty(),
        "queue: an acked job went to the dead-letter set"
    );
    assert_stale(&h, &j.token, "after the ack").await;
}

/// A payload of exactly the limit is stored and comes back whole; one
/// byte more is `PayloadTooLarge`, alone or in a batch, and nothing of
/// that call is stored. An empty payload is a payload.
pub async fn payload_limit_is_exact<Q: TestQueue>(h: QueueHarness<Q>) {
    let limit = h.service.config().max_payload;
    let at_limit: Vec<u8> = (0..limit).map(|i| (i % 251) as u8).collect();
    let id = h.put(&at_limit).await;
    let over = vec![1u8; limit + 1];
    let too_large = QueueError::PayloadTooLarge {
        len: limit + 1,
        limit,
    };
    assert_eq!(
        h.service
            .enqueue(&h.name, over.clone(), EnqueueOptions::new())
            .await,
        Err(too_large.clone())
    );
    let batch = vec![
        (b"small".to_vec(), EnqueueOptions::new()),
        (over, EnqueueOptions::new()),
    ];
    assert_eq!(h.service.enqueue_many(&h.name, batch).await, Err(too_large));
    assert_eq!(
        h.stats().await,
        stats(1, 0, 0, 0),
        "queue: a refused payload was stored"
    );
    let j = h.reserve_one().await;
    assert_eq!(j.id(), id);
    assert!(
        j.payload == at_limit,
        "queue: the payload at the limit changed"
    );
    h.service.ack(&j.token).await.unwrap();
    h.put(b"").await;
    assert!(h.reserve_one().await.payload.is_empty());
}

/// A batch is stored whole or not at all: a bad job anywhere in it
/// (attempts out of range, a payload over the limit) or more than
/// `MAX_BATCH` jobs store nothing; `MAX_BATCH` jobs are stored with one
/// distinct id each, in order; two jobs of one batch with one key store
/// one job; an empty batch is nothing.
pub async fn batch_enqueue_is_all_or_nothing<Q: TestQueue>(h: QueueHarness<Q>) {
    let s = &h.service;
    let job = |i: usize| (format!("job-{i}").into_bytes(), EnqueueOptions::new());
    let mut bad = (0..10).map(job).collect::<Vec<_>>();
    bad[7].1 = EnqueueOptions::new().max_attempts(0);
    assert_eq!(
        s.enqueue_many(&h.name, bad).await,
        Err(QueueError::InvalidArgument("max attempts"))
    );
    assert_eq!(
        s.enqueue_many(&h.name, (0..=MAX_BATCH).map(job).collect())
            .await,
        Err(QueueError::InvalidArgument("batch size"))
    );
    assert_eq!(
        h.stats().await,
        stats(0, 0, 0, 0),
        "queue: a refused batch stored jobs"
    );
    assert_eq!(s.enqueue_many(&h.name, Vec::new()).await, Ok(Vec::new()));

    let ids = s
        .enqueue_many(&h.name, (0..MAX_BATCH).map(job).collect())
        .await
        .expect("queue: a full batch");
    assert_eq!(ids.len(), MAX_BATCH);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), MAX_BATCH);
    assert_eq!(h.stats().await, stats(MAX_BATCH as u64, 0, 0, 0));
    let got = h.reserve(MAX_BATCH).await;
    assert_eq!(got.len(), MAX_BATCH);
    for j in &got {
        let i = ids
            .iter()
            .position(|id| *id == j.id())
            .expect("queue: an unknown id");
        assert_eq!(
            j.payload,
            format!("job-{i}").into_bytes(),
            "queue: ids out of order"
        );
    }
    let acks = s
        .ack_many(&got.iter().map(|j| j.token).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(acks.iter().all(Result::is_ok));

    let k = fresh_key();
    let twins = vec![
        (
            b"first".to_vec(),
            EnqueueOptions::new().dedup_key(k.clone()),
        ),
        (b"plain".to_vec(), EnqueueOptions::new()),
        (b"second".to_vec(), EnqueueOptions::new().dedup_key(k)),
    ];
    let ids = s.enqueue_many(&h.name, twins).await.unwrap();
    assert_eq!(ids[0], ids[2], "queue: one key, two jobs in one batch");
    assert_ne!(ids[0], ids[1]);
    assert_eq!(h.stats().await, stats(2, 0, 0, 0));
    let payloads: HashSet<Vec<u8>> = h.reserve(10).await.into_iter().map(|j| j.payload).collect();
    assert_eq!(
        payloads,
        HashSet::from([b"first".to_vec(), b"plain".to_vec()])
    );
}

/// Bad input is a typed error and changes nothing: malformed queue names,
/// batch sizes of 0 and `MAX_BATCH + 1`, leases of zero and above
/// `MAX_LEASE`, attempts of 0 and `MAX_ATTEMPTS + 1`, a delay past the end
/// of time, page sizes of 0 and 1001, malformed keys, classes and token
/// texts; a queue nobody used is empty and has nothing to redrive. The
/// boundaries themselves (`MAX_LEASE`, `MAX_ATTEMPTS`, `MAX_BATCH`) are
/// accepted.
pub async fn bad_input_is_refused_and_changes_nothing<Q: TestQueue>(h: QueueHarness<Q>) {
    let s = &h.service;
    for bad in ["", "Bad", "a b", "-a", &"a".repeat(65)] {
        assert_eq!(QueueName::new(bad), Err(QueueError::InvalidName), "{bad:?}");
    }
    assert_eq!(s.reserve(&h.name, 0, LEASE).await, invalid("batch size"));
    assert_eq!(
        s.reserve(&h.name, MAX_BATCH + 1, LEASE).await,
        invalid("batch size")
    );
    assert_eq!(
        s.reserve(&h.name, 1, Duration::ZERO).await,
        invalid("lease length")
    );
    assert_eq!(
        s.reserve(&h.name, 1, MAX_LEASE + MICRO).await,
        invalid("lease length")
    );
    assert_eq!(s.reserve(&h.name, MAX_BATCH, MAX_LEASE).await, Ok(vec![]));
    for n in [0, MAX_ATTEMPTS + 1] {
        assert_eq!(
            s.enqueue(
                &h.name,
                b"x".to_vec(),
                EnqueueOptions::new().max_attempts(n)
            )
            .await,
            invalid("max attempts")
        );
    }
    assert_eq!(
        s.enqueue(
            &h.name,
            b"x".to_vec(),
            EnqueueOptions::new().delay(Duration::MAX)
        )
        .await,
        invalid("delay")
    );
    for limit in [0, 1001] {
        assert_eq!(
            s.dead_jobs(&h.name, None, limit).await,
            invalid("page size")
        );
    }
    assert!(DedupKey::new("").is_err() && DedupKey::new("a b").is_err());
    assert!(ErrorClass::new("").is_err() && ErrorClass::new("HTTP_503").is_err());
    for text in [
        "",
        "lease_",
        "lease_zz_1",
        "job_00112233445566778899aabbccddeeff",
    ] {
        assert_eq!(text.parse::<LeaseToken>(), Err(QueueError::InvalidToken));
    }
    assert_eq!(
        h.stats().await,
        stats(0, 0, 0, 0),
        "queue: bad input stored something"
    );

    let id = h
        .put_with(b"x", EnqueueOptions::new().max_attempts(MAX_ATTEMPTS))
        .await;
    assert_eq!(h.reserve_one().await.max_attempts, MAX_ATTEMPTS);

    let unused = h.other_name();
    assert_eq!(s.stats(&unused).await, Ok(QueueStats::default()));
    assert_eq!(s.reserve(&unused, 10, LEASE).await, Ok(vec![]));
    assert_eq!(s.dead_jobs(&unused, None, 10).await, Ok(vec![]));
    assert_eq!(s.redrive(&unused, id).await, Err(QueueError::NotDead));
    assert_eq!(s.redrive_all(&unused).await, Ok(0));
    assert_eq!(s.purge_dead(&unused).await, Ok(0));
    assert_eq!(h.stats().await, stats(0, 0, 1, 0));
}

// ---------------------------------------------------------------------------
// De-duplication
// ---------------------------------------------------------------------------

/// A key is held while its job is delayed, waiting or in flight (also
/// after a nack that retries): an enqueue with it returns that job's id
/// and stores nothing (the first payload stays). An acked job frees its
/// key, and so does a dead one.
pub async fn dedup_keys_are_held_until_ack_or_death<Q: TestQueue>(h: QueueHarness<Q>) {
    let k = fresh_key();
    let with_key = || EnqueueOptions::new().dedup_key(k.clone());
    let first = h.put_with(b"first", with_key().delay(secs(60))).await;
    assert_eq!(
        h.put_with(b"again", with_key()).await,
        first,
        "queue: delayed job lost its key"
    );
    assert_eq!(h.stats().await, stats(0, 1, 0, 0));
    h.advance(secs(60));
    assert_eq!(
        h.put_with(b"again", with_key()).await,
        first,
        "queue: waiting job lost its key"
    );
    let j = h.reserve_one().await;
    assert_eq!((j.id(), j.payload.as_slice()), (first, &b"first"[..]));
    assert_eq!(
        h.put_with(b"again", with_key()).await,
        first,
        "queue: job in flight lost its key"
    );
    let out = h
        .service
        .nack(&j.token, NackPolicy::After(secs(10)), &class("retry"))
        .await
        .unwrap();
    assert!(matches!(out, NackOutcome::Retrying(_)));
    assert_eq!(
        h.put_with(b"again", with_key()).await,
        first,
        "queue: a retried job lost its key"
    );
    assert_eq!(h.stats().await, stats(0, 1, 0, 0));
    h.advance(secs(10));
    let j = h.reserve_one().await;
    h.service.ack(&j.token).await.unwrap();

    let second = h.put_with(b"second", with_key()).await;
    assert_ne!(second, first, "queue: an acked job kept its key");
    let j = h.reserve_one().await;
    assert_eq!(j.id(), second);
    h.service
        .nack(&j.token, NackPolicy::Never, &class("gave_up"))
        .await
        .unwrap();
    let third = h.put_with(b"third", with_key()).await;
    assert_ne!(third, second, "queue: a dead job kept its key");
    assert_eq!(h.stats().await, stats(1, 0, 0, 1));
}

// ---------------------------------------------------------------------------
// Leases
// ---------------------------------------------------------------------------

/// A lease ending exactly at `now` has expired: one microsecond before,
/// its holder acks and the job counts as in flight; at the end, ack, nack,
/// extend and ack-many are stale and change nothing, the job counts as
/// waiting and is handed out again as the next attempt.
pub async fn a_lease_ending_exactly_now_has_expired<Q: TestQueue>(h: QueueHarness<Q>) {
    let t0 = h.now();
    h.put(b"a").await;
    h.put(b"b").await;
    let got = h.reserve(2).await;
    assert_eq!(got.len(), 2);
    h.set(plus(t0, LEASE - MICRO));
    assert_eq!(h.stats().await, stats(0, 0, 2, 0));
    h.service
        .ack(&got[0].token)
        .await
        .expect("queue: ack 1 µs before the end");
    h.set(plus(t0, LEASE));
    assert_eq!(
        h.stats().await,
        stats(1, 0, 0, 0),
        "queue: an expired lease is not waiting"
    );
    assert_stale(&h, &got[1].token, "at the lease's end").await;
    let again = h.reserve_one().await;
    assert_eq!(again.id(), got[1].id());
    assert_eq!(again.attempt, 2);
    assert_ne!(again.token, got[1].token);
    h.service.ack(&again.token).await.unwrap();
}

/// Stale tokens are refused (ack, nack, extend, ack-many) and change
/// nothing: a forged nonce, another job's id under a real nonce, a job that
/// never existed, a lease that expired (not yet reserved again), a job
/// someone else reserved since, a job already acked, a job already
/// nacked. The holder's own token keeps working throughout.
pub async fn stale_tokens_are_refused_and_change_nothing<Q: TestQueue>(h: QueueHarness<Q>) {
    let t0 = h.now();
    h.put(b"a").await;
    h.put(b"b").await;
    let got = h.reserve(2).await;
    assert_eq!(got.len(), 2);
    let (a, b) = (&got[0], &got[1]);
    let c = h.put(b"c").await; // waiting, never reserved
    let forged = LeaseToken::new(a.id(), LeaseNonce::random(), a.attempt);
    assert_stale(&h, &forged, "with a forged nonce").await;
    assert_stale(
        &h,
        &LeaseToken::new(c, a.token.nonce(), 1),
        "of a job not reserved",
    )
    .await;
    assert_stale(
        &h,
        &LeaseToken::new(JobId::random(), a.token.nonce(), 1),
        "of no job",
    )
    .await;
    h.service
        .extend(&a.token, LEASE * 2)
        .await
        .expect("queue: the holder's extend");

    h.set(plus(t0, LEASE)); // b expired; a was extended at t0
    assert_stale(&h, &b.token, "after its lease expired").await;
    let b2 = h.reserve(10).await;
    let b2 = b2
        .iter()
        .find(|j| j.id() == b.id())
        .expect("queue: b again");
    assert_stale(&h, &b.token, "after another reservation").await;
    h.service
        .ack(&b2.token)
        .await
        .expect("queue: the new holder's ack");
    assert_stale(&h, &b2.token, "after the ack").await;

    let j = h.put(b"d").await;
    let d = h
        .reserve(10)
        .await
        .into_iter()
        .find(|x| x.id() == j)
        .unwrap();
    h.service
        .nack(&d.token, NackPolicy::After(secs(3600)), &class("later"))
        .await
        .unwrap();
    assert_stale(&h, &d.token, "after the nack").await;
}

/// `extend` moves the lease's end to `now + lease`, longer or shorter; the
/// job stays in flight until then and expires exactly then. Bad lease
/// lengths are refused and leave the lease as it was.
pub async fn extend_moves_the_lease_end<Q: TestQueue>(h: QueueHarness<Q>) {
    let t0 = h.now();
    h.put(b"a").await;
    let j = h.reserve_one().await;
    h.set(plus(t0, secs(20)));
    h.service.extend(&j.token, secs(60)).await.unwrap(); // until t0 + 80 s
    for bad in [Duration::ZERO, MAX_LEASE + MICRO] {
        assert_eq!(
            h.service.extend(&j.token, bad).await,
            Err(QueueError::InvalidArgument("lease length"))
        );
    }
    h.set(plus(t0, secs(80) - MICRO));
    assert_eq!(
        h.stats().await,
        stats(0, 0, 1, 0),
        "queue: extend did not hold the lease"
    );
    assert!(h.reserve(10).await.is_empty());
    h.set(plus(t0, secs(79)));
    h.service.extend(&j.token, secs(3)).await.unwrap(); // shorter: until t0 + 82 s
    h.set(plus(t0, secs(82) - MICRO));
    assert_eq!(h.stats().await, stats(0, 0, 1, 0));
    h.set(plus(t0, secs(82)));
    assert_eq!(
        h.stats().await,
        stats(1, 0, 0, 0),
        "queue: an extended lease did not expire at its end"
    );
    assert_stale(&h, &j.token, "after the extended lease ended").await;
    let again = h.reserve_one().await;
    assert_eq!((again.id(), again.attempt), (j.id(), 2));
    h.service
        .extend(&again.token, MAX_LEASE)
        .await
        .expect("queue: extend by MAX_LEASE");
    h.set(plus(t0, secs(82) + MAX_LEASE - MICRO));
    h.service.ack(&again.token).await.unwrap();
}

// ---------------------------------------------------------------------------
// Retries, attempts and dead letters
// ---------------------------------------------------------------------------

/// A nack with the backoff delays the job by at most the backoff's
/// ceiling for its attempt; a delayed job is due exactly at its retry
/// time; `After(d)` retries after `d`, capped at the backoff's cap;
/// `Never` dead-letters it at once with its class and attempts.
pub async fn nack_retries_by_backoff_or_after_or_never<Q: TestQueue>(h: QueueHarness<Q>) {
    let backoff = h.service.config().backoff;
    h.put(b"a").await;
    let j = h.reserve_one().await;
    let now = h.now();
    let out = h
        .service
        .nack(&j.token, NackPolicy::Backoff, &class("timeout"))
        .await
        .unwrap();
    let NackOutcome::Retrying(at) = out else {
        panic!("queue: a first attempt died: {out:?}");
    };
    assert!(
        at >= now && at <= plus(now, backoff.ceiling(1)),
        "queue: retry at {at}"
    );
    if at > now {
        assert_eq!(h.stats().await, stats(0, 1, 0, 0));
        h.set(at - chrono::Duration::microseconds(1));
        assert!(
            h.reserve(1).await.is_empty(),
            "queue: a delayed job was handed out early"
        );
    }
    h.set(at);
    let j = h.reserve_one().await;
    assert_eq!(j.attempt, 2);

    let now = h.now();
    let out = h
        .service
        .nack(&j.token, NackPolicy::After(secs(90)), &class("http_429"))
        .await;
    assert_eq!(out, Ok(NackOutcome::Retrying(plus(now, secs(90)))));
    h.advance(secs(90));
    let j = h.reserve_one().await;
    let now = h.now();
    let out = h
        .service
        .nack(
            &j.token,
            NackPolicy::After(backoff.cap * 2),
            &class("http_429"),
        )
        .await;
    assert_eq!(
        out,
        Ok(NackOutcome::Retrying(plus(now, backoff.cap))),
        "queue: After is not capped"
    );
    h.advance(backoff.cap);
    let j = h.reserve_one().await;
    assert_eq!(j.attempt, 4);
    let died = h.now();
    let out = h
        .service
        .nack(&j.token, NackPolicy::Never, &class("http_410"))
        .await;
    assert_eq!(out, Ok(NackOutcome::Dead));
    let dead = h.service.dead_jobs(&h.name, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].id,
            dead[0].attempts,
            dead[0].error_class.as_str(),
            dead[0].died_at
        ),
        (j.id(), 4, "http_410", died)
    );
    assert_eq!(h.stats().await, stats(0, 0, 0, 1));
}

/// Attempts are counted by the store: the nack of the attempt that
/// reaches `max_attempts` exactly dead-letters the job (with its payload,
/// attempts, class, enqueue and death times), whatever the retry asked;
/// the nacks before it retry.
pub async fn max_attempts_exactly_reached_dead_letters<Q: TestQueue>(h: QueueHarness<Q>) {
    let t0 = h.now();
    let id = h
        .put_with(b"three tries", EnqueueOptions::new().max_attempts(3))
        .await;
    for attempt in 1..=2 {
        let j = h.reserve_one().await;
        assert_eq!((j.id(), j.attempt, j.max_attempts), (id, attempt, 3));
        let out = h
            .service
            .nack(&j.token, NackPolicy::Backoff, &class("http_503"))
            .await
            .unwrap();
        let NackOutcome::Retrying(at) = out else {
            panic!("queue: attempt {attempt} of 3 died");
        };
        h.set(at.max(h.now()));
    }
    let j = h.reserve_one().await;
    assert_eq!(j.attempt, 3);
    let died = h.now();
    let out = h
        .service
        .nack(&j.token, NackPolicy::After(secs(1)), &class("http_503"))
        .await;
    assert_eq!(
        out,
        Ok(NackOutcome::Dead),
        "queue: the last attempt's nack retried"
    );
    let dead = h.service.dead_jobs(&h.name, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.id, id);
    assert_eq!(d.payload, b"three tries");
    assert_eq!((d.attempts, d.max_attempts), (3, 3));
    assert_eq!(d.error_class.as_str(), "http_503");
    assert_eq!((d.enqueued_at, d.died_at), (t0, died));
    assert_eq!(h.stats().await, stats(0, 0, 0, 1));
    assert!(
        h.reserve(10).await.is_empty(),
        "queue: a dead job was handed out"
    );

    let one = h
        .put_with(b"one try", EnqueueOptions::new().max_attempts(1))
        .await;
    let j = h.reserve_one().await;
    assert_eq!(j.id(), one);
    assert_eq!(
        h.service
            .nack(&j.token, NackPolicy::After(Duration::ZERO), &class("x"))
            .await,
        Ok(NackOutcome::Dead)
    );
}

/// A due job whose last attempt's lease expired is not handed out: the
/// next reserve moves it to the dead-letter set with the class
/// `lease_expired`. Until then it counts as waiting (the state table).
pub async fn an_expired_last_attempt_is_dead_lettered_at_reserve<Q: TestQueue>(h: QueueHarness<Q>) {
    let id = h
        .put_with(b"once", EnqueueOptions::new().max_attempts(1))
        .await;
    let j = h.reserve_one().await;
    h.advance(LEASE);
    assert_eq!(h.stats().await, stats(1, 0, 0, 0));
    assert!(
        h.reserve(10).await.is_empty(),
        "queue: a job out of attempts was handed out"
    );
    let dead = h.service.dead_jobs(&h.name, None, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "queue: the expired last attempt is not dead");
    assert_eq!(
        (dead[0].id, dead[0].attempts, dead[0].error_class.as_str()),
        (id, 1, ErrorClass::LEASE_EXPIRED)
    );
    assert_eq!(dead[0].died_at, h.now());
    assert_eq!(h.stats().await, stats(0, 0, 0, 1));
    assert_stale(&h, &j.token, "of a job that died of it").await;
}

/// Redrive makes a dead job waiting at now with its attempts reset and
/// its class cleared (it leaves the dead-letter set, and its attempts
/// count from one again); a job that is not dead (waiting, in flight,
/// unknown, another queue's, already redriven) is `NotDead` and nothing
/// changes.
pub async fn redrive_resets_attempts_and_refuses_what_is_not_dead<Q: TestQueue>(
    h: QueueHarness<Q>,
) {
    let id = h
        .put_with(b"twice", EnqueueOptions::new().max_attempts(2))
        .await;
    for _ in 0..2 {
        let j = h.reserve_one().await;
        h.service
            .nack(&j.token, NackPolicy::After(Duration::ZERO), &class("boom"))
            .await
            .unwrap();
    }
    h.put(b"x").await;
    h.put(b"y").await;
    let f = h.reserve(10).await;
    assert_eq!(f.len(), 2);
    // One back to waiting, one in flight.
    let (waiting, in_flight) = (f[0].id(), f[1].id());
    h.service
        .nack(&f[0].token, NackPolicy::After(Duration::ZERO), &class("x"))
        .await
        .unwrap();
    let other = h.other_name();
    let before = h.stats().await;
    assert_eq!(before.dead, 1);
    for (queue, job) in [
        (&h.name, waiting),
        (&h.name, in_flight),
        (&h.name, JobId::random()),
        (&other, id),
    ] {
        assert_eq!(
            h.service.redrive(queue, job).await,
            Err(QueueError::NotDead)
        );
    }
    assert_eq!(
        h.stats().await,
        before,
        "queue: a refused redrive changed the queue"
    );

    h.service
        .redrive(&h.name, id)
        .await
        .expect("queue: redrive");
    assert_eq!(
        h.service.redrive(&h.name, id).await,
        Err(QueueError::NotDead)
    );
    assert!(
        h.service
            .dead_jobs(&h.name, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let after = h.stats().await;
    assert_eq!((after.waiting, after.dead), (before.waiting + 1, 0));
    let again = h.reserve(10).await;
    let j = again
        .iter()
        .find(|j| j.id() == id)
        .expect("queue: the redriven job");
    assert_eq!(
        (j.attempt, j.max_attempts),
        (1, 2),
        "queue: redrive did not reset the attempts"
    );
    let out = h
        .service
        .nack(&j.token, NackPolicy::After(Duration::ZERO), &class("boom"))
        .await;
    assert!(
        matches!(out, Ok(NackOutcome::Retrying(_))),
        "queue: {out:?}"
    );
}

/// `dead_jobs` pages by id ascending: `after` is exclusive, at most
/// `limit` per page, a short page is the last; an `after` that is no dead
/// job's id still pages from it.
pub async fn dead_jobs_page_by_id<Q: TestQueue>(h: QueueHarness<Q>) {
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(h.dead_job(format!("dead-{i}").as_bytes()).await);
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut after = None;
    let mut sizes = Vec::new();
    loop {
        let page = h.service.dead_jobs(&h.name, after, 3).await.unwrap();
        sizes.push(page.len());
        for (k, d) in page.iter().enumerate() {
            assert_eq!(
                (d.attempts, d.max_attempts, d.error_class.as_str()),
                (1, 1, "killed")
            );
            assert_eq!(
                d.id,
                ids[seen.len() + k],
                "queue: dead jobs out of id order"
            );
            assert!(d.payload.starts_with(b"dead-"));
        }
        seen.extend(page.iter().map(|d| d.id));
        if page.len() < 3 {
            break;
        }
        after = page.last().map(|d| d.id);
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    assert_eq!(seen, ids);
    let from = h
        .service
        .dead_jobs(&h.name, Some(ids[3]), 10)
        .await
        .unwrap();
    assert_eq!(
        from.iter().map(|d| d.id).collect::<Vec<_>>(),
        ids[4..].to_vec(),
        "queue: after is exclusive"
    );
    // An id between two dead jobs' ids (ids[3] + 1).
    let between = JobId::from_bytes((u128::from_be_bytes(*ids[3].as_bytes()) + 1).to_be_bytes());
    let from = h
        .service
        .dead_jobs(&h.name, Some(between), 10)
        .await
        .unwrap();
    assert_eq!(
        from.iter().map(|d| d.id).collect::<Vec<_>>(),
        ids[4..].to_vec()
    );
    let below_all = JobId::from_bytes([0; 16]);
    assert_eq!(
        h.service
            .dead_jobs(&h.name, Some(below_all), 10)
            .await
            .unwrap()
            .len(),
        7
    );
    let above_all = JobId::from_bytes([0xff; 16]);
    assert!(
        h.service
            .dead_jobs(&h.name, Some(above_all), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Kills `n` jobs of max 1 attempt by letting their leases expire and
/// reserving until nothing is waiting.
async fn kill_by_expiry<Q: TestQueue>(h: &QueueHarness<Q>, n: usize) {
    let before = h.stats().await.dead;
    let mut left = n;
    while left > 0 {
        let batch = left.min(MAX_BATCH);
        let jobs = (0..batch)
            .map(|i| {
                (
                    format!("bulk-{i}").into_bytes(),
                    EnqueueOptions::new().max_attempts(1),
                )
            })
            .collect();
        h.service.enqueue_many(&h.name, jobs).await.unwrap();
        left -= batch;
    }
    let mut taken = 0;
    while taken < n {
        let got = h.reserve(MAX_BATCH).await.len();
        assert!(got > 0, "queue: fewer jobs due than enqueued");
        taken += got;
    }
    h.advance(LEASE);
    for _ in 0..=n {
        if h.stats().await.waiting == 0 {
            break;
        }
        assert!(h.reserve(MAX_BATCH).await.is_empty());
    }
    assert_eq!(h.stats().await, stats(0, 0, 0, before + n as u64));
}

/// `redrive_all` and `purge_dead` take every dead job of the queue, more
/// than one backend batch of them (1,100), and nothing of another queue;
/// the redriven jobs start again at attempt 1.
pub async fn redrive_all_and_purge_take_every_dead_job<Q: TestQueue>(h: QueueHarness<Q>) {
    const N: usize = 1100;
    let other = h.other_name();
    let keep = {
        let id = h
            .service
            .enqueue(
                &other,
                b"other".to_vec(),
                EnqueueOptions::new().max_attempts(1),
            )
            .await
            .unwrap();
        let j = h.service.reserve(&other, 1, LEASE).await.unwrap();
        h.service
            .nack(&j[0].token, NackPolicy::Never, &class("x"))
            .await
            .unwrap();
        id
    };
    assert_eq!(h.service.redrive_all(&h.name).await, Ok(0));
    kill_by_expiry(&h, N).await;
    assert_eq!(h.service.redrive_all(&h.name).await, Ok(N as u64));
    assert_eq!(h.stats().await, stats(N as u64, 0, 0, 0));
    let mut attempts = HashSet::new();
    let mut tokens = Vec::new();
    while tokens.len() < N {
        let got = h.reserve(MAX_BATCH).await;
        assert!(!got.is_empty(), "queue: redriven jobs are missing");
        attempts.extend(got.iter().map(|j| j.attempt));
        tokens.extend(got.iter().map(|j| j.token));
    }
    assert_eq!(
        attempts,
        HashSet::from([1]),
        "queue: redrive_all kept attempts"
    );
    for chunk in tokens.chunks(MAX_BATCH) {
        assert!(
            h.service
                .ack_many(chunk)
                .await
                .unwrap()
                .iter()
                .all(Result::is_ok)
        );
    }
    kill_by_expiry(&h, N).await;
    assert_eq!(h.service.purge_dead(&h.name).await, Ok(N as u64));
    assert_eq!(h.stats().await, stats(0, 0, 0, 0));
    assert_eq!(h.service.purge_dead(&h.name).await, Ok(0));
    let others = h.service.dead_jobs(&other, None, 10).await.unwrap();
    assert_eq!(
        others.len(),
        1,
        "queue: another queue's dead job was touched"
    );
    assert_eq!(others[0].id, keep);
}

// ---------------------------------------------------------------------------
// Stats, batches, isolation, order, waiting
// ---------------------------------------------------------------------------

/// `stats` counts each state at `now`: waiting (due, and expired leases),
/// delayed, in flight, dead; and follows the clock as delays end and
/// leases expire.
pub async fn stats_count_each_state<Q: TestQueue>(h: QueueHarness<Q>) {
    h.dead_job(b"dead").await;
    for _ in 0..3 {
        h.put(b"now").await;
    }
    for _ in 0..2 {
        h.put_with(b"later", EnqueueOptions::new().delay(secs(60)))
            .await;
    }
    assert_eq!(h.stats().await, stats(3, 2, 0, 1));
    let got = h.reserve(2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(h.stats().await, stats(1, 2, 2, 1));
    h.service.extend(&got[0].token, secs(45)).await.unwrap();
    h.advance(LEASE);
    assert_eq!(
        h.stats().await,
        stats(2, 2, 1, 1),
        "queue: an expired lease is not waiting"
    );
    h.advance(secs(30));
    assert_eq!(
        h.stats().await,
        stats(5, 0, 0, 1),
        "queue: a due delay is not waiting"
    );
}

/// `ack_many` reports each token on its own, in order: valid tokens ack,
/// a forged, expired, duplicated (already acked earlier in the same call)
/// or unknown one is stale and changes nothing; more than `MAX_BATCH`
/// tokens are refused; no tokens is nothing.
pub async fn ack_many_reports_each_token<Q: TestQueue>(h: QueueHarness<Q>) {
    for i in 0..4 {
        h.put(format!("{i}").as_bytes()).await;
    }
    let got = h.reserve(4).await;
    assert_eq!(got.len(), 4);
    let (a, b, c, d) = (got[0].token, got[1].token, got[2].token, got[3].token);
    let forged_b = LeaseToken::new(b.job(), LeaseNonce::random(), b.attempt());
    let unknown = LeaseToken::new(JobId::random(), a.nonce(), 1);
    let out = h
        .service
        .ack_many(&[a, forged_b, c, a, unknown, d])
        .await
        .unwrap();
    let stale = Err(QueueError::StaleLease);
    assert_eq!(
        out,
        vec![
            Ok(()),
            stale.clone(),
            Ok(()),
            stale.clone(),
            stale.clone(),
            Ok(())
        ]
    );
    assert_eq!(
        h.stats().await,
        stats(0, 0, 1, 0),
        "queue: a stale token in ack_many acked"
    );
    assert_eq!(h.service.ack_many(&[b]).await, Ok(vec![Ok(())]));

    let t0 = h.now();
    h.put(b"e").await;
    let e = h.reserve_one().await;
    h.set(plus(t0, LEASE));
    assert_eq!(h.service.ack_many(&[e.token]).await, Ok(vec![stale]));
    assert_eq!(h.stats().await, stats(1, 0, 0, 0));
    assert_eq!(h.service.ack_many(&[]).await, Ok(vec![]));
    assert_eq!(
        h.service.ack_many(&vec![e.token; MAX_BATCH + 1]).await,
        Err(QueueError::InvalidArgument("batch size"))
    );
}

/// Queues are isolated: jobs, de-duplication keys, reservations, dead
/// letters, redrives, purges and stats of one queue never touch another's.
pub async fn queues_are_isolated<Q: TestQueue>(h: QueueHarness<Q>) {
    let (q1, q2) = (h.name.clone(), h.other_name());
    let s = &h.service;
    let k = fresh_key();
    let one = s
        .enqueue(
            &q1,
            b"one".to_vec(),
            EnqueueOptions::new().dedup_key(k.clone()),
        )
        .await
        .unwrap();
    let two = s
        .enqueue(&q2, b"two".to_vec(), EnqueueOptions::new().dedup_key(k))
        .await
        .unwrap();
    assert_ne!(one, two, "queue: a key was shared across queues");
    assert_eq!(s.stats(&q2).await, Ok(stats(1, 0, 0, 0)));
    let got = s.reserve(&q2, 10, LEASE).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id()).collect::<Vec<_>>(), vec![two]);
    s.nack(&got[0].token, NackPolicy::Never, &class("x"))
        .await
        .unwrap();
    assert!(s.dead_jobs(&q1, None, 10).await.unwrap().is_empty());
    assert_eq!(s.redrive(&q1, two).await, Err(QueueError::NotDead));
    assert_eq!(s.redrive_all(&q1).await, Ok(0));
    assert_eq!(s.purge_dead(&q1).await, Ok(0));
    assert_eq!(s.stats(&q2).await, Ok(stats(0, 0, 0, 1)));
    assert_eq!(s.stats(&q1).await, Ok(stats(1, 0, 0, 0)));
    let got = s.reserve(&q1, 10, LEASE).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id()).collect::<Vec<_>>(), vec![one]);
}

/// Reserve hands out the earliest `run_at` first and at most `n`; a job
/// whose delay has not ended is not due; a run time in the past is due now.
pub async fn reserve_hands_out_the_earliest_due_first<Q: TestQueue>(h: QueueHarness<Q>) {
    let mut by_delay = Vec::new();
    for d in [30u64, 10, 0, 20, 50] {
        let id = h
            .put_with(
                format!("{d}").as_bytes(),
                EnqueueOptions::new().delay(secs(d)),
            )
            .await;
        by_delay.push((d, id));
    }
    let id_of = |d: u64| by_delay.iter().find(|(x, _)| *x == d).map(|(_, id)| *id);
    h.advance(secs(40));
    let ids = |jobs: Vec<ReservedJob>| jobs.iter().map(|j| j.id()).collect::<HashSet<_>>();
    let first = ids(h.reserve(2).await);
    assert_eq!(
        first,
        [id_of(0), id_of(10)].into_iter().flatten().collect(),
        "queue: not earliest first"
    );
    let second = ids(h.reserve(10).await);
    assert_eq!(
        second,
        [id_of(20), id_of(30)].into_iter().flatten().collect()
    );
    let past = h
        .put_with(
            b"past",
            EnqueueOptions {
                run_at: RunAt::At(h.now() - chrono::Duration::hours(1)),
                ..EnqueueOptions::new()
            },
        )
        .await;
    assert_eq!(ids(h.reserve(10).await), HashSet::from([past]));
    h.advance(secs(10));
    assert_eq!(
        ids(h.reserve(10).await),
        [id_of(50)].into_iter().flatten().collect()
    );
}

/// `reserve_wait` returns as soon as a job can be had (within the poll
/// backstop of one second, also for a backend without wake-ups), and
/// returns nothing only after its wait.
pub async fn reserve_wait_wakes_or_gives_up<Q: TestQueue>(h: QueueHarness<Q>) {
    let s = h.service.clone();
    let name = h.name.clone();
    let start = std::time::Instant::now();
    let waiter = tokio::spawn(async move { s.reserve_wait(&name, 1, LEASE, secs(20)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id = h.put(b"wake up").await;
    let got = waiter.await.expect("queue: the waiter panicked").unwrap();
    let took = start.elapsed();
    assert_eq!(got.iter().map(|j| j.id()).collect::<Vec<_>>(), vec![id]);
    assert!(
        took < secs(5),
        "queue: reserve_wait took {took:?} for a job enqueued after 100 ms"
    );
    let start = std::time::Instant::now();
    let none = h
        .service
        .reserve_wait(&h.name, 1, LEASE, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(none.is_empty());
    assert!(start.elapsed() >= Duration::from_millis(300));
}

// ---------------------------------------------------------------------------
// Races
// ---------------------------------------------------------------------------

/// What one racer did.
#[derive(Debug)]
enum Outcome {
    Done(Result<(), QueueError>),
    Nacked(Result<NackOutcome, QueueError>),
    Reserved(Result<Vec<ReservedJob>, QueueError>),
}

impl Outcome {
    /// Whether a racer that used an old token succeeded (a stale refusal is
    /// `false`, anything else unexpected panics).
    fn token_won(&self) -> bool {
        match self {
            Outcome::Done(Ok(())) | Outcome::Nacked(Ok(_)) => true,
            Outcome::Done(Err(QueueError::StaleLease))
            | Outcome::Nacked(Err(QueueError::StaleLease)) => false,
            other => panic!("queue: a racer failed: {other:?}"),
        }
    }
}

type Racer = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// Eight consumers reserving one backlog at once (batches of 7, until
/// nothing is left) get disjoint jobs that together cover it, and every
/// job's lease is its holder's (all ack). Three rounds of 200 jobs.
pub async fn racing_consumers_get_disjoint_jobs<Q: TestQueue>(h: QueueHarness<Q>) {
    for round in 0..3 {
        let backlog: HashSet<JobId> = h
            .service
            .enqueue_many(
                &h.name,
                (0..200)
                    .map(|i| (format!("{i}").into_bytes(), EnqueueOptions::new()))
                    .collect(),
            )
            .await
            .unwrap()
            .into_iter()
            .collect();
        let calls: Vec<_> = (0..RACERS)
            .map(|_| {
                let (q, name, now) = (h.queue.clone(), h.name.clone(), h.now());
                async move {
                    let mut mine = Vec::new();
                    loop {
                        let got = q
                            .reserve(&name, 7, LeaseNonce::random(), plus(now, LEASE), now)
                            .await
                            .expect("queue: reserve");
                        if got.is_empty() {
                            return mine;
                        }
                        mine.extend(got.into_iter().map(|j| j.token));
                    }
                }
            })
            .collect();
        let tokens: Vec<LeaseToken> = h.race(calls).await.into_iter().flatten().collect();
        let ids: HashSet<JobId> = tokens.iter().map(LeaseToken::job).collect();
        assert_eq!(
            ids.len(),
            tokens.len(),
            "queue: round {round}: {} jobs were handed to two consumers",
            tokens.len() - ids.len()
        );
        assert_eq!(
            ids, backlog,
            "queue: round {round}: the consumers did not cover the backlog"
        );
        for chunk in tokens.chunks(MAX_BATCH) {
            let acks = h.service.ack_many(chunk).await.unwrap();
            assert!(
                acks.iter().all(Result::is_ok),
                "queue: round {round}: a holder's lease was not its own"
            );
        }
        assert_eq!(h.stats().await, stats(0, 0, 0, 0));
    }
}

/// One job per round on a queue of its own: reserved by `a` at `t0`
/// (lease `LEASE`); returns `(queue, a's reservation, t0)`.
async fn held_job<Q: TestQueue>(h: &QueueHarness<Q>) -> (QueueName, ReservedJob, DateTime<Utc>) {
    let name = h.other_name();
    h.service
        .enqueue(&name, b"contested".to_vec(), EnqueueOptions::new())
        .await
        .unwrap();
    let t0 = h.now();
    let mut got = h.service.reserve(&name, 1, LEASE).await.unwrap();
    assert_eq!(got.len(), 1);
    (name, got.remove(0), t0)
}

/// The old holder's operation on the job.
#[derive(Debug, Clone, Copy)]
enum Use {
    Ack,
    Nack,
    Extend,
}

/// Races the old holder's `op` (at `a_now`) against a new reservation at
/// the lease's end, once per round, alternating which is spawned last;
/// returns `(a won, b got the job)` per round, after checking that
/// whoever won holds the job.
async fn expiry_race<Q: TestQueue>(
    h: &QueueHarness<Q>,
    op: Use,
    a_expired: bool,
) -> Vec<(bool, bool)> {
    let mut outcomes = Vec::new();
    for round in 0..PAIR_ROUNDS {
        let (name, a, t0) = held_job(h).await;
        let end = plus(t0, LEASE);
        let a_now = if a_expired {
            end
        } else {
            end - chrono::Duration::milliseconds(1)
        };
        let far = plus(t0, secs(3600));
        let holder: Racer = {
            let (q, token) = (h.queue.clone(), a.token);
            Box::pin(async move {
                match op {
                    Use::Ack => Outcome::Done(q.ack(&token, a_now).await),
                    Use::Nack => Outcome::Nacked(
                        q.nack(&token, Retry::At(far), &class("raced"), a_now).await,
                    ),
                    Use::Extend => Outcome::Done(q.extend(&token, far, a_now).await),
                }
            })
        };
        let newcomer: Racer = {
            let (q, name) = (h.queue.clone(), name.clone());
            Box::pin(async move {
                Outcome::Reserved(
                    q.reserve(&name, 1, LeaseNonce::random(), plus(end, LEASE), end)
                        .await,
                )
            })
        };
        let calls = if round % 2 == 0 {
            vec![holder, newcomer]
        } else {
            vec![newcomer, holder]
        };
        let (mut a_won, mut b_job) = (None, None);
        for out in h.race(calls).await {
            match out {
                Outcome::Reserved(r) => {
                    let mut jobs = r.expect("queue: the new reservation failed");
                    assert!(jobs.len() <= 1);
                    b_job = jobs.pop();
                }
                other => a_won = Some(other.token_won()),
            }
        }
        let a_won = a_won.expect("queue: the holder did not report");
        if let Some(b) = &b_job {
            assert_eq!(b.id(), a.id());
            assert_eq!(b.attempt, 2);
            // The new holder's lease is real: its ack works.
            assert_eq!(
                h.queue.ack(&b.token, end).await,
                Ok(()),
                "queue: round {round}: {op:?} by the old holder broke the new lease"
            );
        }
        outcomes.push((a_won, b_job.is_some()));
        h.advance(secs(60));
    }
    outcomes
}

fn assert_one_outcome(op: Use, outcomes: &[(bool, bool)]) {
    for (round, (a_won, b_got)) in outcomes.iter().enumerate() {
        assert!(
            a_won != b_got,
            "queue: round {round}: {op:?} racing the lease's expiry and a new reservation: the old holder {} and the newcomer {}",
            if *a_won { "succeeded" } else { "was refused" },
            if *b_got { "got the job" } else { "got nothing" },
        );
    }
}

/// A stale holder's ack (its lease ended exactly at its `now`) racing
/// another consumer's reservation is refused every round, and the other
/// consumer gets the job; the refused holder's nack and extend are refused
/// after it too. 40 rounds.
pub async fn a_stale_holders_ack_is_refused_while_another_reserves<Q: TestQueue>(
    h: QueueHarness<Q>,
) {
    let outcomes = expiry_race(&h, Use::Ack, true).await;
    for (round, (a_won, b_got)) in outcomes.iter().enumerate() {
        assert!(!a_won, "queue: round {round}: an expired lease acked");
        assert!(
            b_got,
            "queue: round {round}: the expired job was not handed out again"
        );
    }
    let (_, a, t0) = held_job(&h).await;
    let end = plus(t0, LEASE);
    assert_eq!(
        h.queue.ack(&a.token, end).await,
        Err(QueueError::StaleLease)
    );
    assert_eq!(
        h.queue.nack(&a.token, Retry::Never, &class("x"), end).await,
        Err(QueueError::StaleLease)
    );
    assert_eq!(
        h.queue.extend(&a.token, plus(end, LEASE), end).await,
        Err(QueueError::StaleLease)
    );
}

/// The holder's ack 1 ms before its lease ends, racing a reservation at
/// the end: exactly one of them succeeds, every round (40).
pub async fn ack_racing_lease_expiry_has_one_outcome<Q: TestQueue>(h: QueueHarness<Q>) {
    assert_one_outcome(Use::Ack, &expiry_race(&h, Use::Ack, false).await);
}

/// The holder's nack (retry in an hour) 1 ms before its lease ends, racing
/// a reservation at the end: exactly one of them succeeds, every round.
pub async fn nack_racing_lease_expiry_has_one_outcome<Q: TestQueue>(h: QueueHarness<Q>) {
    assert_one_outcome(Use::Nack, &expiry_race(&h, Use::Nack, false).await);
}

/// The holder's extend (by an hour) 1 ms before its lease ends, racing a
/// reservation at the end: exactly one of them succeeds, every round.
pub async fn extend_racing_lease_expiry_has_one_outcome<Q: TestQueue>(h: QueueHarness<Q>) {
    assert_one_outcome(Use::Extend, &expiry_race(&h, Use::Extend, false).await);
}

/// Eight racers present one token at once, as ack, ack-many or nack
/// (rounds of each alone and of the three mixed): exactly one wins, the
/// rest are stale, and the job is gone (ack won) or delayed (nack won).
/// Ten rounds.
pub async fn racing_uses_of_one_token_win_once<Q: TestQueue>(h: QueueHarness<Q>) {
    for round in 0..MANY_ROUNDS {
        let (name, a, t0) = held_job(&h).await;
        let far = plus(t0, secs(3600));
        let calls: Vec<Racer> = (0..RACERS)
            .map(|i| {
                let (q, token) = (h.queue.clone(), a.token);
                // Rounds of acks only, nacks only, ack-many only, and
                // of the three mixed (in a different order each time).
                let kind = match round % 4 {
                    3 => (i + round / 4) % 3,
                    k => k,
                };
                let racer: Racer = Box::pin(async move {
                    match kind {
                        0 => Outcome::Done(q.ack(&token, t0).await),
                        1 => Outcome::Nacked(
                            q.nack(&token, Retry::At(far), &class("raced"), t0).await,
                        ),
                        _ => Outcome::Done(
                            q.ack_many(&[token], t0)
                                .await
                                .expect("queue: ack_many")
                                .pop()
                                .expect("queue: one outcome"),
                        ),
                    }
                });
                racer
            })
            .collect();
        let outs = h.race(calls).await;
        let winners: Vec<&Outcome> = outs.iter().filter(|o| o.token_won()).collect();
        assert_eq!(
            winners.len(),
            1,
            "queue: round {round}: one token won {} times: {outs:?}",
            winners.len()
        );
        let expected = match winners[0] {
            Outcome::Nacked(_) => stats(0, 1, 0, 0),
            _ => stats(0, 0, 0, 0),
        };
        assert_eq!(h.service.stats(&name).await, Ok(expected));
    }
}

/// Eight enqueues with one de-duplication key at once store one job, and
/// all eight get its id. Ten rounds, a fresh key each.
pub async fn racing_enqueues_with_one_key_store_one_job<Q: TestQueue>(h: QueueHarness<Q>) {
    for round in 0..MANY_ROUNDS {
        let k = fresh_key();
        let calls: Vec<_> = (0..RACERS)
            .map(|i| {
                let (s, name, k) = (h.service.clone(), h.name.clone(), k.clone());
                async move {
                    s.enqueue(
                        &name,
                        format!("{i}").into_bytes(),
                        EnqueueOptions::new().dedup_key(k),
                    )
                    .await
                    .expect("queue: enqueue")
                }
            })
            .collect();
        let ids: HashSet<JobId> = h.race(calls).await.into_iter().collect();
        assert_eq!(
            ids.len(),
            1,
            "queue: round {round}: one key, {} jobs",
            ids.len()
        );
        let waiting = h.stats().await.waiting;
        assert_eq!(
            waiting,
            round as u64 + 1,
            "queue: round {round}: one key stored {waiting} jobs in all"
        );
    }
    let all = h.reserve(MAX_BATCH).await;
    assert_eq!(all.len(), MANY_ROUNDS);
}

/// Eight redrives of one dead job at once: one succeeds, the others are
/// `NotDead`, and the job is handed out once, as attempt 1. Ten rounds.
pub async fn racing_redrives_of_one_dead_job_win_once<Q: TestQueue>(h: QueueHarness<Q>) {
    for round in 0..MANY_ROUNDS {
        let id = h.dead_job(b"dead").await;
        let calls: Vec<_> = (0..RACERS)
            .map(|_| {
                let (s, name) = (h.service.clone(), h.name.clone());
                async move { s.redrive(&name, id).await }
            })
            .collect();
        let outs = h.race(calls).await;
        let ok = outs.iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            ok, 1,
            "queue: round {round}: one dead job was redriven {ok} times"
        );
        assert!(
            outs.iter()
                .all(|r| matches!(r, Ok(()) | Err(QueueError::NotDead))),
            "{outs:?}"
        );
        let got = h.reserve(10).await;
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].id(), got[0].attempt), (id, 1));
        h.service.ack(&got[0].token).await.unwrap();
        assert_eq!(h.stats().await, stats(0, 0, 0, 0));
    }
}

/// Generates one `#[tokio::test]` per queue check, each on a fresh
/// backend made by `$fresh` (an expression producing a future of the
/// queue). This list is the queue suite.
///
/// ```text
/// echorelay_testkit::queue_tests!(async { echorelay_store_mem::MemQueue::new() });
/// ```
///
/// With `optional`, `$fresh` produces a future of `Option<queue>`, and
/// `None` skips the check (the service is absent and not required):
///
/// ```text
/// echorelay_testkit::queue_tests!(optional async { some_queue_if_configured().await });
/// ```
#[macro_export]
macro_rules! queue_tests {
    (optional $fresh:expr) => {
        $crate::queue_tests!(@list optional $fresh);
    };
    ($fresh:expr) => {
        $crate::queue_tests!(@list required $fresh);
    };
    (@list $mode:ident $fresh:expr) => {
        $crate::queue_tests!(@each $mode $fresh;
            enqueue_reserve_ack_round_trip,
            payload_limit_is_exact,
            batch_enqueue_is_all_or_nothing,
            bad_input_is_refused_and_changes_nothing,
            dedup_keys_are_held_until_ack_or_death,
            a_lease_ending_exactly_now_has_expired,
            stale_tokens_are_refused_and_change_nothing,
            extend_moves_the_lease_end,
            nack_retries_by_backoff_or_after_or_never,
            max_attempts_exactly_reached_dead_letters,
            an_expired_last_attempt_is_dead_lettered_at_reserve,
            redrive_resets_attempts_and_refuses_what_is_not_dead,
            dead_jobs_page_by_id,
            redrive_all_and_purge_take_every_dead_job,
            stats_count_each_state,
            ack_many_reports_each_token,
            queues_are_isolated,
            reserve_hands_out_the_earliest_due_first,
            reserve_wait_wakes_or_gives_up,
            racing_consumers_get_disjoint_jobs,
            a_stale_holders_ack_is_refused_while_another_reserves,
            ack_racing_lease_expiry_has_one_outcome,
            nack_racing_lease_expiry_has_one_outcome,
            extend_racing_lease_expiry_has_one_outcome,
            racing_uses_of_one_token_win_once,
            racing_enqueues_with_one_key_store_one_job,
            racing_redrives_of_one_dead_job_win_once,
        );
    };
    (@each $mode:ident $fresh:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(queue) = $crate::queue_tests!(@fresh $mode $fresh) else {
                    return;
                };
                $crate::queue::$check($crate::queue::QueueHarness::new(queue)).await;
            }
        )*
    };
    (@fresh required $fresh:expr) => {
        Some($fresh.await)
    };
    (@fresh optional $fresh:expr) => {
        $fresh.await
    };
}
