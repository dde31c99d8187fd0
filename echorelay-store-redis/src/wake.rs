//! Waking idle consumers: the enqueue, nack and redrive scripts `PUBLISH`
//! on `{tag}:wake:<queue>` when they make jobs due, with how many as the
//! message; a [`RedisQueue`] that is asked to wait opens one pub/sub
//! connection of its own (lazily, `PSUBSCRIBE {tag}:wake:*`) and wakes
//! that many waiters of that queue, one per job (not every waiter: the
//! others would only reserve nothing, and with many idle consumers that
//! was most of the queue's traffic). A message that is not a count wakes
//! them all.
//!
//! Missed and spurious wake-ups are allowed by the contract: a lost
//! subscription wakes every waiter (they reserve again) and is reopened
//! with a backoff; while it is down, waiting is a plain sleep of
//! `max_wait`.
//!
//! [`RedisQueue`]: crate::RedisQueue

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use echorelay_core::queue::MAX_BATCH;

/// The subscriber of one [`RedisQueue`](crate::RedisQueue).
pub(crate) struct Wakeups {
    client: redis::Client,
    channel_prefix: String,
    connect_timeout: Duration,
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    /// One `Notify` per queue someone waited on (a handful per process).
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    /// Whether the subscription is in place.
    subscribed: watch::Sender<bool>,
}

impl Shared {
    /// The `Notify` of `queue`'s waiters (`None` if the map is poisoned).
    fn waiter(&self, queue: &str) -> Option<Arc<Notify>> {
        let mut waiters = self.waiters.lock().ok()?;
        Some(waiters.entry(queue.to_owned()).or_default().clone())
    }

    /// Wakes `jobs` waiters of `queue` (`None`: every waiter of every
    /// queue). A job made due while no one waits leaves a permit, so the
    /// next waiter looks at once.
    fn wake(&self, queue: Option<(&str, Option<usize>)>) {
        let Ok(waiters) = self.waiters.lock() else {
            return;
        };
        match queue {
            Some((q, jobs)) => {
                if let Some(n) = waiters.get(q) {
                    match jobs {
                        Some(jobs) => (0..jobs.min(MAX_BATCH)).for_each(|_| n.notify_one()),
                        None => n.notify_waiters(),
                    }
                }
            }
            None => waiters.values().for_each(|n| n.notify_waiters()),
        }
    }
}

impl Wakeups {
    pub(crate) fn new(
        client: redis::Client,
        channel_prefix: String,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            client,
            channel_prefix,
            connect_timeout,
            shared: Arc::new(Shared {
                waiters: Mutex::new(HashMap::new()),
                subscribed: watch::Sender::new(false),
            }),
            task: Mutex::new(None),
        }
    }

    /// Waits until a job of `queue` may have become due, or `max_wait`.
    pub(crate) async fn wait(&self, queue: &str, max_wait: Duration) {
        let deadline = Instant::now() + max_wait;
        let Some(notify) = self.shared.waiter(queue) else {
            tokio::time::sleep_until(deadline).await;
            return;
        };
        // Registered before the subscription is checked, so a message
        // published after the subscription is in place is never missed.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        self.ensure_running();
        let mut subscribed = self.shared.subscribed.subscribe();
        if tokio::time::timeout_at(deadline, subscribed.wait_for(|s| *s))
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }

    /// Starts the subscriber if it is not running (first wait, or its
    /// runtime ended).
    fn ensure_running(&self) {
        let Ok(mut task) = self.task.lock() else {
            return;
        };
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // A subscriber that ended with its runtime left the flag set.
        self.shared.subscribed.send_replace(false);
        *task = Some(runtime.spawn(subscribe(
            self.client.clone(),
            self.channel_prefix.clone(),
            self.connect_timeout,
            self.shared.clone(),
        )));
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock()
            && let Some(t) = task.take()
        {
            t.abort();
        }
    }
}

/// The subscriber: subscribe, relay messages to waiters, and on a lost
/// connection wake everyone and start over after a backoff (50 ms doubling
/// to 2 s).
async fn subscribe(
    client: redis::Client,
    channel_prefix: String,
    connect_timeout: Duration,
    shared: Arc<Shared>,
) {
    let pattern = format!("{channel_prefix}*");
    let mut backoff = Duration::from_millis(50);
    loop {
        match tokio::time::timeout(connect_timeout, client.get_async_pubsub()).await {
            Ok(Ok(mut pubsub)) => match pubsub.psubscribe(&pattern).await {
                Ok(()) => {
                    backoff = Duration::from_millis(50);
                    shared.subscribed.send_replace(true);
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        if let Some(queue) = msg.get_channel_name().strip_prefix(&channel_prefix) {
                            let jobs = msg.get_payload::<usize>().ok();
                            shared.wake(Some((queue, jobs)));
                        }
                    }
                    shared.subscribed.send_replace(false);
                    shared.wake(None);
                    tracing::debug!("echorelay-store-redis: wake-up subscription lost; reopening");
                }
                Err(e) => tracing::debug!(error = %e, "echorelay-store-redis: PSUBSCRIBE failed"),
            },
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "echorelay-store-redis: pub/sub connection failed")
            }
            Err(_) => tracing::debug!("echorelay-store-redis: pub/sub connection timed out"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
