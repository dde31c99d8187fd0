//! The `EchoRelay` handle: the builder wires working services over one
//! store, and `from_env_vars` (the testable form of `from_env`) applies the
//! documented rules, with errors that never carry key material.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use echorelay::core::clock::ManualClock;
use echorelay::core::vault::VaultKeyId;
use echorelay::prelude::*;

const KEY_A: &str = "6a4e66c27687161095467ef0a963538822927a9e557405703abffe6271b315f6";
const KEY_B: &str = "917675fc9f29ce9cf2ae80cbfbca06f4f7134968364dc754e7b13d778df84265";

/// bcrypt at the minimum cost: the default (13) costs ~0.5 s per hash.
fn cheap_policy() -> AccountPolicy {
    AccountPolicy {
        password: PasswordPolicy::new(10).unwrap(),
        ..AccountPolicy::default()
    }
}

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn id_of(key: &str) -> VaultKeyId {
    SecretKey::parse(key).unwrap().id()
}

/// A project, a key minted under the voter's grant, and the key verified:
/// the services of one handle work together.
async fn mint_and_verify(relay: &EchoRelay) -> (ProjectId, VerifiedKey) {
    let owner = UserId::random();
    let slug = format!("t-{}", &UserId::random().to_string()[4..16]);
    let ip = Some("203.0.113.10".parse().unwrap());
    let project = relay
        .config()
        .create_project(owner, ip, &slug, "Test")
        .await
        .unwrap();
    let grant = relay
        .voter()
        .authorize::<Keys>(&Caller::dangerous_user_stepped_up(owner, ip), &slug)
        .await
        .unwrap();
    let minted = relay
        .keys()
        .mint(
            &grant,
            MintRequest {
                environment: Environment::Test,
                role: Role::Editor,
                label: "ci".into(),
            },
        )
        .await
        .unwrap();
    let verified = relay
        .keys()
        .verify(minted.plaintext.expose_secret())
        .await
        .unwrap();
    assert_eq!(verified.project(), project.id);
    assert_eq!(verified.role(), Role::Editor);
    (project.id, verified)
}

#[tokio::test]
async fn builder_on_memstore_wires_every_service_over_one_store() {
    let mem = MemStore::new();
    let clock = ManualClock::at_unix(1_767_225_600);
    let relay = EchoRelay::builder()
        .store(mem.clone())
        .keyring(Keyring::parse(KEY_A, &[KEY_B]).unwrap())
        .clock(Arc::new(clock.clone()))
        .account_policy(cheap_policy())
        .build()
        .unwrap();
    assert_eq!(relay.store_type(), "echorelay_store_mem::MemStore");
    assert_eq!(
        relay.vault().key_ids().collect::<Vec<_>>(),
        [id_of(KEY_A), id_of(KEY_B)]
    );
    assert_eq!(relay.clock().now(), clock.now());

    let (project, verified) = mint_and_verify(&relay).await;
    assert_eq!(verified.environment(), Environment::Test);

    // One store: the given MemStore, the handle's store and a clone of the
    // handle all see the same audit chain, and it verifies.
    let from_mem = mem.events(Some(project), 0, 100).await.unwrap();
    let from_handle = relay
        .clone()
        .store()
        .events(Some(project), 0, 100)
        .await
        .unwrap();
    assert_eq!(from_mem, from_handle);
    assert!(from_mem.len() >= 2, "project creation and mint are audited");

    // Accounts share the store too (cheap policy: bcrypt cost 10).
    let dana = relay
        .accounts()
        .register(
            "dana@example.com",
            SecretString::from("correct horse battery staple"),
            None,
        )
        .await
        .unwrap();
    let global = mem.events(None, 0, 100).await.unwrap();
    assert!(global.iter().any(|e| e.subject == Some(dana)));

    // The rewrap pass runs over the same store and vault.
    let report = relay.rewrap().run(100).await.unwrap();
    assert!(report.is_complete());
}

#[tokio::test]
async fn builder_defaults_to_memory_and_a_generated_key() {
    let relay = EchoRelay::builder()
        .account_policy(cheap_policy())
        .build()
        .unwrap();
    assert_eq!(relay.store_type(), "echorelay_store_mem::MemStore");
    assert_eq!(relay.vault().key_ids().count(), 1);
    mint_and_verify(&relay).await;
}

#[tokio::test]
async fn builder_refuses_a_generated_key_for_any_other_store() {
    // Any store but a plain MemStore may outlive the process.
    let err = EchoRelay::builder()
        .store(Arc::new(MemStore::new()))
        .account_policy(cheap_policy())
        .build()
        .unwrap_err();
    assert!(matches!(err, SetupError::MissingSecretKey), "{err:?}");
    assert!(err.to_string().contains("openssl rand -hex 32"));

    let relay = EchoRelay::builder()
        .store(Arc::new(MemStore::new()))
        .keyring(Keyring::new(SecretKey::generate()))
        .account_policy(cheap_policy())
        .build()
        .unwrap();
    mint_and_verify(&relay).await;
}

#[tokio::test]
async fn a_rejected_account_policy_is_a_setup_error() {
    let err = EchoRelay::builder()
        .account_policy(AccountPolicy {
            max_trusted_devices: 0,
            ..cheap_policy()
        })
        .build()
        .unwrap_err();
    assert!(matches!(err, SetupError::Policy(_)), "{err:?}");
}

/// The queue: a MemQueue by default, the builder's own otherwise (a
/// shared clone sees the handle's jobs), on the handle's clock; settings
/// the service refuses are a setup error.
#[tokio::test]
async fn the_queue_defaults_to_memory_and_the_builder_takes_another() {
    let relay = EchoRelay::builder()
        .account_policy(cheap_policy())
        .build()
        .unwrap();
    assert_eq!(relay.queue_type(), "echorelay_store_mem::queue::MemQueue");
    let name = QueueName::new("handle-test").unwrap();
    let id = relay
        .queue()
        .enqueue(&name, b"evt".to_vec(), EnqueueOptions::new())
        .await
        .unwrap();
    let jobs = relay
        .queue()
        .reserve(&name, 10, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        jobs.iter().map(ReservedJob::id).collect::<Vec<_>>(),
        vec![id]
    );
    relay.queue().ack(&jobs[0].token).await.unwrap();

    let clock = ManualClock::at_unix(1_767_225_600);
    let mine = MemQueue::new();
    let relay = EchoRelay::builder()
        .queue(mine.clone())
        .clock(Arc::new(clock.clone()))
        .account_policy(cheap_policy())
        .build()
        .unwrap();
    relay
        .queue()
        .enqueue(&name, b"evt".to_vec(), EnqueueOptions::new())
        .await
        .unwrap();
    let other = QueueService::new(mine, Arc::new(clock.clone()));
    let got = other
        .reserve(&name, 10, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        got.len(),
        1,
        "the builder's queue is not the one the handle uses"
    );
    assert_eq!(
        got[0].enqueued_at,
        clock.now(),
        "the queue does not read the handle's clock"
    );

    let err = EchoRelay::builder()
        .queue_config(QueueConfig {
            max_payload: 0,
            ..QueueConfig::default()
        })
        .account_policy(cheap_policy())
        .build()
        .unwrap_err();
    assert!(matches!(err, SetupError::Queue(_)), "{err:?}");
}

#[tokio::test]
async fn from_env_without_variables_is_in_memory_with_a_generated_key() {
    let relay = EchoRelayBuilder::from_env_vars(vars(&[]))
        .await
        .unwrap()
        .account_policy(cheap_policy())
        .build()
        .unwrap();
    assert_eq!(relay.store_type(), "echorelay_store_mem::MemStore");
    assert_eq!(relay.vault().key_ids().count(), 1);
    mint_and_verify(&relay).await;

    // Empty and blank values count as unset; this is the full path with
    // the default policy.
    let relay = EchoRelay::from_env_vars(vars(&[
        ("DATABASE_URL", ""),
        ("SECRET_KEY", "  "),
        ("SECRET_KEY_PREVIOUS", ""),
        ("ECHORELAY_MIGRATE", ""),
    ]))
    .await
    .unwrap();
    assert_eq!(relay.store_type(), "echorelay_store_mem::MemStore");
}

#[tokio::test]
async fn from_env_reads_secret_key_and_previous_keys() {
    let relay = EchoRelayBuilder::from_env_vars(vars(&[
        ("SECRET_KEY", &format!(" {KEY_A}\n")),
        ("SECRET_KEY_PREVIOUS", &format!("{KEY_B}, ")),
        ("ECHORELAY_MIGRATE", "0"),
    ]))
    .await
    .unwrap()
    .account_policy(cheap_policy())
    .build()
    .unwrap();
    assert_eq!(
        relay.vault().key_ids().collect::<Vec<_>>(),
        [id_of(KEY_A), id_of(KEY_B)]
    );
    mint_and_verify(&relay).await;
}

/// Every rendering of `err` (Display, Debug, and the Display of each
/// source) must not contain `input` nor any 8-character piece of it.
fn assert_no_key_material(err: &SetupError, input: &str) {
    let mut texts = vec![err.to_string(), format!("{err:?}"), format!("{err:#?}")];
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        texts.push(s.to_string());
        texts.push(format!("{s:?}"));
        source = s.source();
    }
    let input = input.trim();
    let chars: Vec<char> = input.chars().collect();
    for text in &texts {
        assert!(!text.contains(input), "{text}");
        for piece in chars.windows(8) {
            let piece: String = piece.iter().collect();
            assert!(
                !text.contains(&piece),
                "{piece:?} of the key is in {text:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_bad_secret_key_is_a_setup_error_without_key_material() {
    let bad_keys = [
        // Counts up: 64 hex characters, but obviously not random.
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        // One character short.
        &KEY_A[..63],
        // A passphrase.
        "correct horse battery staple correct horse battery staple",
        // Base64 of printable text.
        "Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZSBvaw==",
    ];
    for bad in bad_keys {
        let err = EchoRelay::from_env_vars(vars(&[("SECRET_KEY", bad)]))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                SetupError::Vault {
                    var: "SECRET_KEY",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("SECRET_KEY is not acceptable"));
        assert_no_key_material(&err, bad);

        // A bad previous key is named as such, and the good current key
        // leaks no more than the bad one.
        let err = EchoRelay::from_env_vars(vars(&[
            ("SECRET_KEY", KEY_A),
            ("SECRET_KEY_PREVIOUS", &format!("{KEY_B},{bad}")),
        ]))
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                SetupError::Vault {
                    var: "SECRET_KEY_PREVIOUS",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_no_key_material(&err, bad);
        assert_no_key_material(&err, KEY_A);
        assert_no_key_material(&err, KEY_B);
    }

    // The current key again in the previous list.
    let err = EchoRelay::from_env_vars(vars(&[
        ("SECRET_KEY", KEY_A),
        ("SECRET_KEY_PREVIOUS", KEY_A),
    ]))
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            SetupError::Vault {
                var: "SECRET_KEY_PREVIOUS",
                ..
            }
        ),
        "{err:?}"
    );
    assert_no_key_material(&err, KEY_A);
}

#[tokio::test]
async fn from_env_rules() {
    let err = EchoRelay::from_env_vars(vars(&[("SECRET_KEY_PREVIOUS", KEY_B)]))
        .await
        .unwrap_err();
    assert!(matches!(err, SetupError::PreviousWithoutCurrent), "{err:?}");
    assert_no_key_material(&err, KEY_B);

    for var in ["ECHORELAY_MIGRATE", "ECHORELAY_KEY_CACHE"] {
        let err = EchoRelay::from_env_vars(vars(&[(var, "yes")]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SetupError::InvalidVar { var: v, .. } if v == var),
            "{var}: {err:?}"
        );
    }
    // Both flags are ignored by the in-memory store.
    let relay = EchoRelay::from_env_vars(vars(&[
        ("ECHORELAY_MIGRATE", "true"),
        ("ECHORELAY_KEY_CACHE", "1"),
    ]))
    .await
    .unwrap();
    assert_eq!(relay.store_type(), "echorelay_store_mem::MemStore");

    // A database URL (with a password) and no SECRET_KEY.
    let url = "postgres://relay:hunter2-hunter2@127.0.0.1:1/relay";
    let err = EchoRelay::from_env_vars(vars(&[("DATABASE_URL", url)]))
        .await
        .unwrap_err();
    #[cfg(feature = "pg")]
    assert!(matches!(err, SetupError::MissingSecretKey), "{err:?}");
    #[cfg(not(feature = "pg"))]
    assert!(matches!(err, SetupError::PgFeatureMissing), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hunter2"));

    let err = EchoRelay::from_env_vars(vars(&[("DATABASE_URL", url), ("SECRET_KEY", KEY_A)]))
        .await
        .unwrap_err();
    #[cfg(not(feature = "pg"))]
    assert!(matches!(err, SetupError::PgFeatureMissing), "{err:?}");
    // Nothing listens on port 1: the store does not start, and says so.
    #[cfg(feature = "pg")]
    assert!(
        matches!(err, SetupError::Pg(echorelay::pg::PgError::Connect(_))),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains("hunter2"));
    assert_no_key_material(&err, KEY_A);

    #[cfg(feature = "pg")]
    {
        let err = EchoRelay::from_env_vars(vars(&[
            ("DATABASE_URL", "not a url"),
            ("SECRET_KEY", KEY_A),
        ]))
        .await
        .unwrap_err();
        assert!(
            matches!(err, SetupError::Pg(echorelay::pg::PgError::Url(_))),
            "{err:?}"
        );
    }
}

/// On a real server (skipped without `DATABASE_URL`): the builder over a
/// `PgStore`, and `from_env` refusing a schema that is behind.
#[cfg(feature = "pg")]
#[tokio::test]
async fn postgres() {
    let Some(db) = echorelay::pg::test_database().await else {
        return;
    };
    let store = db.fresh_store().await.unwrap();
    let relay = EchoRelay::builder()
        .store(store.clone())
        .keyring(Keyring::parse(KEY_A, &[]).unwrap())
        .account_policy(cheap_policy())
        .build()
        .unwrap();
    assert_eq!(relay.store_type(), "echorelay_store_pg::PgStore");
    let (project, _) = mint_and_verify(&relay).await;
    assert!(!store.events(Some(project), 0, 10).await.unwrap().is_empty());

    // No SECRET_KEY: refused before connecting.
    let err = EchoRelay::from_env_vars(vars(&[("DATABASE_URL", db.url())]))
        .await
        .unwrap_err();
    assert!(matches!(err, SetupError::MissingSecretKey), "{err:?}");

    // A schema without migrations (here one that does not exist), and no
    // ECHORELAY_MIGRATE: a clear error at start.
    let absent = format!("er_absent_{}", &UserId::random().to_string()[4..16]);
    let url = on_schema(db.url(), &absent);
    let err = EchoRelay::from_env_vars(vars(&[("DATABASE_URL", &url), ("SECRET_KEY", KEY_A)]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SetupError::Pg(echorelay::pg::PgError::SchemaBehind { .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("behind"), "{err}");
    assert!(err.to_string().contains("ECHORELAY_MIGRATE=1"), "{err}");
}

/// `ECHORELAY_KEY_CACHE=1` starts the Postgres store's key cache (it
/// registers a lease in the database; without the flag none is taken), and
/// with it a key revoked by another process still fails on the next
/// verification (S3).
#[cfg(feature = "pg")]
#[tokio::test]
async fn key_cache_from_the_environment() {
    let Some(db) = echorelay::pg::test_database().await else {
        return;
    };
    // The other process: a store on a fresh schema, without a cache.
    let other = db.fresh_store().await.unwrap();
    let (schema,): (String,) = sqlx_schema(&other).await;
    let url = on_schema(db.url(), &schema);
    // A cache registers its row before it starts (lease not yet taken).
    let pool = other.pool().clone();
    let caches = |live: bool| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(if live {
                "SELECT count(*) FROM key_cache_instances WHERE lease_until > now()"
            } else {
                "SELECT count(*) FROM key_cache_instances"
            })
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    let plain = EchoRelay::from_env_vars(vars(&[("DATABASE_URL", &url), ("SECRET_KEY", KEY_A)]))
        .await
        .unwrap();
    assert_eq!(caches(false).await, 0, "no cache without the flag");
    // DATABASE_URL makes Postgres the queue too: a job enqueued through
    // the handle is a row of `queue_jobs`, seen by the other process.
    assert_eq!(plain.queue_type(), "echorelay_store_pg::PgStore");
    let name = echorelay::core::queue::QueueName::new("env").unwrap();
    plain
        .queue()
        .enqueue(&name, b"from env".to_vec(), Default::default())
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_jobs WHERE queue = 'env'")
        .fetch_one(other.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1);
    drop(plain);

    let relay = EchoRelayBuilder::from_env_vars(vars(&[
        ("DATABASE_URL", &url),
        ("SECRET_KEY", KEY_A),
        ("ECHORELAY_KEY_CACHE", "1"),
    ]))
    .await
    .unwrap()
    .account_policy(cheap_policy())
    .build()
    .unwrap();
    // The cache registers, then takes its first lease from its supervisor.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while caches(true).await == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(caches(true).await, 1, "the flag starts one cache");

    // A key verified (and so cached) in `relay`, revoked through `other`.
    let owner = UserId::random();
    let ip = Some("203.0.113.10".parse().unwrap());
    relay
        .config()
        .create_project(owner, ip, "cached", "Cached")
        .await
        .unwrap();
    let grant = relay
        .voter()
        .authorize::<Keys>(&Caller::dangerous_user_stepped_up(owner, ip), "cached")
        .await
        .unwrap();
    let minted = relay
        .keys()
        .mint(
            &grant,
            MintRequest {
                environment: Environment::Live,
                role: Role::Viewer,
                label: "cached".into(),
            },
        )
        .await
        .unwrap();
    let bearer = minted.plaintext.expose_secret();
    for _ in 0..3 {
        relay.keys().verify(bearer).await.unwrap();
    }
    let other_relay = EchoRelay::builder()
        .store(other.clone())
        .keyring(Keyring::parse(KEY_A, &[]).unwrap())
        .account_policy(cheap_policy())
        .build()
        .unwrap();
    let grant = other_relay
        .voter()
        .authorize::<Keys>(&Caller::dangerous_user_stepped_up(owner, ip), "cached")
        .await
        .unwrap();
    other_relay
        .keys()
        .revoke(&grant, minted.view.id)
        .await
        .unwrap();
    let err = relay.keys().verify(bearer).await.unwrap_err();
    assert!(matches!(err, Error::Unauthenticated), "{err:?}");
}

/// The database URL with `schema` as its search path.
#[cfg(feature = "pg")]
fn on_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options[search_path]={schema}")
}

#[cfg(feature = "pg")]
async fn sqlx_schema(store: &echorelay::pg::PgStore) -> (String,) {
    sqlx::query_as("SELECT current_schema()::text")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// `REDIS_URL` alone puts on Redis what it can hold (feature `redis`):
/// the job queue, which works through `relay.queue()` and leaves nothing
/// behind, and sessions, login challenges and throttle counters (a
/// login's challenge is found in Redis by a store of its own); the
/// durable ports stay in memory.
#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_url_puts_the_queue_on_redis() {
    use echorelay::core::queue::{EnqueueOptions, QueueName};
    let Some(redis) = echorelay::redis::test_redis().await else {
        return;
    };
    let relay = EchoRelayBuilder::from_env_vars(vars(&[("REDIS_URL", redis.url())]))
        .await
        .unwrap()
        .account_policy(cheap_policy())
        .build()
        .unwrap();
    assert_eq!(relay.queue_type(), "echorelay_store_redis::RedisQueue");
    assert_eq!(relay.store_type(), "echorelay_store_mem::MemStore");
    // A queue of its own on the default prefix: acked, nothing remains.
    let name = QueueName::new(&format!("handle-{}", &UserId::random().to_string()[4..20])).unwrap();
    let queue = relay.queue();
    queue
        .enqueue(&name, b"ref".to_vec(), EnqueueOptions::new())
        .await
        .unwrap();
    let jobs = queue
        .reserve(&name, 1, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    queue.ack(&jobs[0].token).await.unwrap();
    let stats = queue.stats(&name).await.unwrap();
    assert_eq!((stats.waiting, stats.in_flight, stats.dead), (0, 0, 0));

    let redis_sessions = "echorelay_store_redis::sessions::RedisSessions";
    assert_eq!(relay.sessions_type(), redis_sessions);
    assert_eq!(relay.throttles_type(), redis_sessions);
    let hash = enrollment_challenge(&relay).await;
    let direct = echorelay::redis::RedisSessions::connect(redis.url())
        .await
        .unwrap();
    assert!(
        direct.take_challenge(&hash).await.unwrap().is_some(),
        "the challenge is in Redis"
    );
}

/// Registers a new account on `relay` and signs it in with its password:
/// the hash of the enrollment challenge it gets.
#[cfg(feature = "redis")]
async fn enrollment_challenge(relay: &EchoRelay) -> [u8; 32] {
    use echorelay::core::account::service::PasswordStep;
    use echorelay::core::account::token::{Token, TokenKind};
    let email = format!("{}@example.com", &UserId::random().to_string()[4..16]);
    let pw = || secrecy::SecretString::from("correct horse battery staple");
    let ip = "192.0.2.7".parse().unwrap();
    relay
        .accounts()
        .register(&email, pw(), Some(ip))
        .await
        .unwrap();
    let PasswordStep::EnrollmentRequired(ch) = relay
        .accounts()
        .login_password(&email, pw(), ip, None)
        .await
        .unwrap()
    else {
        panic!("expected enrollment")
    };
    Token::hash_presented(TokenKind::Challenge, ch.token.expose_secret()).unwrap()
}

/// `DATABASE_URL` and `REDIS_URL` together: the durable ports on
/// Postgres, sessions, challenges and throttles on Redis. A login leaves
/// no challenge row in Postgres; its challenge is in Redis; the account
/// is in Postgres.
#[cfg(all(feature = "redis", feature = "pg"))]
#[tokio::test]
async fn postgres_and_redis_split_the_ports() {
    use echorelay::core::ports::SessionStore;
    let (Some(db), Some(redis)) = (
        echorelay::pg::test_database().await,
        echorelay::redis::test_redis().await,
    ) else {
        return;
    };
    let store = db.fresh_store().await.unwrap();
    let (schema,) = sqlx_schema(&store).await;
    let url = on_schema(db.url(), &schema);
    let relay = EchoRelayBuilder::from_env_vars(vars(&[
        ("DATABASE_URL", &url),
        ("REDIS_URL", redis.url()),
        ("SECRET_KEY", KEY_A),
    ]))
    .await
    .unwrap()
    .account_policy(cheap_policy())
    .build()
    .unwrap();
    assert_eq!(relay.store_type(), "echorelay_store_pg::PgStore");
    assert_eq!(
        relay.sessions_type(),
        "echorelay_store_redis::sessions::RedisSessions"
    );
    assert_eq!(relay.queue_type(), "echorelay_store_redis::RedisQueue");
    let hash = enrollment_challenge(&relay).await;
    let (accounts,): (i64,) = sqlx::query_as("SELECT count(*) FROM accounts")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(accounts, 1, "the account is in Postgres");
    assert!(
        store.challenge(&hash).await.unwrap().is_none(),
        "no challenge in Postgres"
    );
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM challenges")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0);
    let direct = echorelay::redis::RedisSessions::connect(redis.url())
        .await
        .unwrap();
    assert!(
        direct.take_challenge(&hash).await.unwrap().is_some(),
        "the challenge is in Redis"
    );
}

/// An unreachable `REDIS_URL` is a setup error that does not show the
/// URL's password.
#[cfg(feature = "redis")]
#[tokio::test]
async fn an_unreachable_redis_url_is_a_setup_error_without_the_password() {
    let err =
        EchoRelayBuilder::from_env_vars(vars(&[("REDIS_URL", "redis://:hunter2@127.0.0.1:1")]))
            .await
            .unwrap_err();
    assert!(matches!(err, SetupError::Redis(_)), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
}

/// Without the feature, `REDIS_URL` (which CI and other software set) is
/// ignored: the queue stays in memory.
#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn without_the_redis_feature_redis_url_is_ignored() {
    let relay = EchoRelayBuilder::from_env_vars(vars(&[("REDIS_URL", "redis://127.0.0.1:1")]))
        .await
        .unwrap()
        .account_policy(cheap_policy())
        .build()
        .unwrap();
    assert_eq!(relay.queue_type(), "echorelay_store_mem::queue::MemQueue");
}
