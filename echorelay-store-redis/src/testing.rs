//! Test support: a fresh random prefix per test (so tests share one server,
//! run in parallel and leave nothing behind), and the skip rule for
//! machines without Redis.
//!
//! - `REDIS_URL` set and reachable: tests run.
//! - `ECHORELAY_REQUIRE_SERVICES=1` (CI): an unset or unreachable
//!   `REDIS_URL` fails the test.
//! - Otherwise (a laptop without Redis): tests skip, and the process
//!   prints one line saying so.

use std::sync::{Arc, Once};
use std::time::Duration;

use echorelay_core::queue::QueueError;
use rand::RngCore;

use crate::{RedisOptions, RedisQueue, RedisSessions, SessionTtl, redact_url};

/// A Redis server the tests may use.
#[derive(Clone)]
pub struct TestRedis {
    url: String,
}

impl std::fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRedis")
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

static SKIP_NOTICE: Once = Once::new();

/// The test server from `REDIS_URL`, or `None` (skip) when it is unset or
/// unreachable and `ECHORELAY_REQUIRE_SERVICES` is not `1`.
///
/// # Panics
///
/// When services are required and Redis is unset or unreachable: in CI
/// that is a failure, not a skip.
pub async fn test_redis() -> Option<TestRedis> {
    let required = std::env::var("ECHORELAY_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    let url = match std::env::var("REDIS_URL") {
        Ok(u) if !u.is_empty() => u,
        _ if required => panic!("ECHORELAY_REQUIRE_SERVICES=1 but REDIS_URL is not set"),
        _ => {
            SKIP_NOTICE.call_once(|| {
                eprintln!("echorelay-store-redis: REDIS_URL is not set; Redis tests skipped");
            });
            return None;
        }
    };
    match ping(&url).await {
        Ok(()) => Some(TestRedis { url }),
        Err(e) if required => {
            panic!("ECHORELAY_REQUIRE_SERVICES=1 but Redis at REDIS_URL is unreachable: {e}")
        }
        Err(e) => {
            SKIP_NOTICE.call_once(|| {
                eprintln!("echorelay-store-redis: Redis unreachable ({e}); Redis tests skipped");
            });
            None
        }
    }
}

async fn ping(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|_| "REDIS_URL does not parse".to_owned())?;
    let connect = client.get_multiplexed_async_connection();
    let mut conn = tokio::time::timeout(Duration::from_secs(3), connect)
        .await
        .map_err(|_| "connection timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl TestRedis {
    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A queue on a new random prefix (`er-test-` and 16 hex digits); the
    /// prefix's keys are deleted when the last clone of the queue (and of
    /// its [`another_process`](TestRedis::another_process) queues) is
    /// dropped.
    pub async fn fresh_queue(&self) -> Result<RedisQueue, QueueError> {
        self.fresh_queue_with(|o| o).await
    }

    /// [`TestRedis::fresh_queue`] with options adjusted by `f` (timeouts);
    /// the prefix is set here.
    pub async fn fresh_queue_with(
        &self,
        f: impl FnOnce(RedisOptions) -> RedisOptions,
    ) -> Result<RedisQueue, QueueError> {
        let (prefix, guard) = self.new_prefix();
        let mut queue =
            RedisQueue::connect_with(f(RedisOptions::new(&self.url)).prefix(&prefix)).await?;
        queue._cleanup = Some(guard);
        Ok(queue)
    }

    /// A session store on a new random prefix with the TTLs of the
    /// testkit's policy, cleaned up like [`TestRedis::fresh_queue`]'s.
    ///
    /// # Panics
    /// When the store cannot connect (a test failure).
    pub async fn fresh_sessions(&self) -> RedisSessions {
        let (prefix, guard) = self.new_prefix();
        let mut s = RedisSessions::connect_with(
            RedisOptions::new(&self.url).prefix(&prefix),
            SessionTtl::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("connecting the session store: {e}"));
        s._cleanup = Some(guard);
        s
    }

    /// Another session store on the same prefix as `sessions`, with a
    /// connection of its own: a second process.
    ///
    /// # Panics
    /// When the store cannot connect (a test failure).
    pub async fn another_sessions(&self, sessions: &RedisSessions) -> RedisSessions {
        let mut other = RedisSessions::connect_with(
            RedisOptions::new(&self.url).prefix(sessions.prefix()),
            sessions.ttl(),
        )
        .await
        .unwrap_or_else(|e| panic!("connecting the session store: {e}"));
        other._cleanup = sessions._cleanup.clone();
        other
    }

    fn new_prefix(&self) -> (String, Arc<PrefixGuard>) {
        let mut b = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut b);
        let prefix = format!("er-test-{}", hex::encode(b));
        let guard = Arc::new(PrefixGuard {
            url: self.url.clone(),
            prefix: prefix.clone(),
        });
        (prefix, guard)
    }

    /// Another queue on the same prefix as `queue`, with a connection of
    /// its own: a second process.
    pub async fn another_process(&self, queue: &RedisQueue) -> Result<RedisQueue, QueueError> {
        let mut other =
            RedisQueue::connect_with(RedisOptions::new(&self.url).prefix(queue.prefix())).await?;
        other._cleanup = queue._cleanup.clone();
        Ok(other)
    }
}

/// Deletes a test prefix's keys when the last queue using it goes away.
#[derive(Debug)]
pub(crate) struct PrefixGuard {
    url: String,
    prefix: String,
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        let url = self.url.clone();
        let pattern = format!("{{{}}}:*", self.prefix);
        // Drop runs inside the test's runtime; a thread with its own
        // runtime does the (blocking) cleanup.
        let t = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(client) = redis::Client::open(url.as_str()) else {
                    return;
                };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return;
                };
                let mut cursor: u64 = 0;
                loop {
                    let Ok((next, keys)) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async::<(u64, Vec<String>)>(&mut conn)
                        .await
                    else {
                        return;
                    };
                    if !keys.is_empty() {
                        let _ = redis::cmd("UNLINK")
                            .arg(&keys)
                            .query_async::<i64>(&mut conn)
                            .await;
                    }
                    if next == 0 {
                        return;
                    }
                    cursor = next;
                }
            });
        });
        let _ = t.join();
    }
}
