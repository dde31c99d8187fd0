//! Criterion benchmarks for the hot paths of issue 2, each beside the
//! reference it is judged against, measured in the same run:
//!
//! - `verify/echorelay` (KeyService::verify on the in-memory store) vs
//!   `verify/reference_sha256_hashmap` (SHA-256 of the key + a HashMap hit);
//! - `vault/echorelay_seal_open_64B` vs `vault/reference_aes_gcm_64B` (the
//!   aes-gcm crate alone, fixed nonce, no framing);
//! - `audit/append_in_memory` (seal + chain append);
//! - `session/authenticate_in_memory` (cookie check: shape, SHA-256, lookup,
//!   idle/absolute/IP-family checks, the account's credential epoch, touch)
//!   among 10,000 sessions.
//!
//! Run: `cargo bench --bench core`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use criterion::{Criterion, criterion_group, criterion_main};
use echorelay::MemStore;
use echorelay::core::access::surface::Keys;
use echorelay::core::access::{Caller, Role, Voter};
use echorelay::core::audit::{Actor, AuditDraft, BillingKind, Currency, EventKind};
use echorelay::core::clock::{Clock, SystemClock};
use echorelay::core::config::ConfigService;
use echorelay::core::ids::UserId;
use echorelay::core::keys::{Environment, KeyService, MintRequest};
use echorelay::core::ports::AuditSink;
use echorelay::core::vault::{AesGcmVault, Keyring, SecretContext, SecretKey, SecretVault};
use sha2::{Digest, Sha256};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn bench_verify(c: &mut Criterion) {
    let rt = rt();
    let store = MemStore::new();
    let vault = Arc::new(AesGcmVault::new(Keyring::new(SecretKey::generate())));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let keys = KeyService::new(store.clone(), vault.clone(), clock.clone());
    let config = ConfigService::new(store.clone(), vault, clock);
    let voter = Voter::new(store.clone());
    let owner = UserId::random();
    let key = rt.block_on(async {
        let p = config
            .create_project(owner, None, "bench", "Bench")
            .await
            .unwrap();
        let g = voter
            .authorize::<Keys>(
                &Caller::dangerous_user_stepped_up(owner, None),
                p.slug.as_str(),
            )
            .await
            .unwrap();
        // 10,000 other keys in the store, so the lookup is not trivial.
        for _ in 0..10_000 {
            keys.mint(
                &g,
                MintRequest {
                    environment: Environment::Live,
                    role: Role::Viewer,
                    label: String::new(),
                },
            )
            .await
            .unwrap();
        }
        let k = keys
            .mint(
                &g,
                MintRequest {
                    environment: Environment::Live,
                    role: Role::Editor,
                    label: "bench".into(),
                },
            )
            .await
            .unwrap();
        k.plaintext.expose_secret().to_owned()
    });
    let mut reference: HashMap<[u8; 32], u64> = (0..10_000u64)
        .map(|i| (Sha256::digest(i.to_le_bytes()).into(), i))
        .collect();
    reference.insert(Sha256::digest(key.as_bytes()).into(), 42);

    let mut g = c.benchmark_group("verify");
    g.bench_function("echorelay", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(keys.verify(black_box(&key)).await.unwrap()) })
    });
    g.bench_function("reference_sha256_hashmap", |b| {
        b.iter(|| {
            let h: [u8; 32] = Sha256::digest(black_box(key.as_bytes())).into();
            black_box(reference.get(&h).copied())
        })
    });
    g.finish();
}

fn bench_vault(c: &mut Criterion) {
    let vault = AesGcmVault::new(Keyring::new(SecretKey::generate()));
    let ctx = SecretContext {
        project: "prj_00000000000000000000000000000001",
        record: "tgt_00000000000000000000000000000002",
        field: "target.auth.bearer_token",
    };
    let secret = [7u8; 64];
    let cipher = Aes256Gcm::new_from_slice(&[9u8; 32]).unwrap();
    let nonce = Nonce::from_slice(&[1u8; 12]);
    let aad = ctx.aad();

    let mut g = c.benchmark_group("vault");
    g.bench_function("echorelay_seal_open_64B", |b| {
        b.iter(|| {
            let ct = vault.seal(black_box(&secret), &ctx).unwrap();
            black_box(vault.open(&ct, &ctx).unwrap())
        })
    });
    g.bench_function("reference_aes_gcm_64B", |b| {
        b.iter(|| {
            let ct = cipher
                .encrypt(
                    nonce,
                    Payload {
                        msg: black_box(&secret),
                        aad: &aad,
                    },
                )
                .unwrap();
            black_box(
                cipher
                    .decrypt(
                        nonce,
                        Payload {
                            msg: &ct,
                            aad: &aad,
                        },
                    )
                    .unwrap(),
            )
        })
    });
    g.finish();
}

fn bench_audit(c: &mut Criterion) {
    let rt = rt();
    let store = MemStore::new();
    let vault = Arc::new(AesGcmVault::new(Keyring::new(SecretKey::generate())));
    let config = ConfigService::new(store.clone(), vault, Arc::new(SystemClock));
    let p = rt
        .block_on(config.create_project(UserId::random(), None, "audit-bench", "A"))
        .unwrap();
    let draft = AuditDraft {
        project: Some(p.id),
        at: SystemClock.now(),
        actor: Actor::User(UserId::random()),
        ip: Some("203.0.113.7".parse().unwrap()),
        subject: None,
        kind: EventKind::Billing {
            billing: BillingKind::CreditPurchase,
            amount_minor: 1999,
            currency: Currency::parse("EUR").unwrap(),
            reference: Some("pi_3Nxyz".into()),
        },
    };
    let mut g = c.benchmark_group("audit");
    g.bench_function("append_in_memory", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(store.append(draft.clone()).await.unwrap()) })
    });
    g.finish();
}

fn bench_session(c: &mut Criterion) {
    use echorelay::core::account::token::{Token, TokenKind};
    use echorelay::core::account::{AccountPolicy, AccountService, IpFamily, SessionRecord};
    use echorelay::core::ids::SessionId;
    use echorelay::core::ports::{AccountStore, SessionStore};
    let rt = rt();
    let store = MemStore::new();
    let vault = Arc::new(AesGcmVault::new(Keyring::new(SecretKey::generate())));
    let accounts = AccountService::new(
        store.clone(),
        vault,
        Arc::new(SystemClock),
        AccountPolicy::default(),
    )
    .unwrap();
    let now = SystemClock.now();
    // 10,000 live sessions of one account; look one up.
    let mut token = None;
    let user = UserId::random();
    rt.block_on(async {
        let hash = echorelay::core::account::password::PasswordHash::parse(
            "$2y$10$QtzFGFSsjCb66Gz/qK36yObVbRSqZqVY8ADnrvwJsNujbrFIRzbfG",
        )
        .unwrap();
        store
            .create_account(echorelay::core::account::AccountRecord {
                id: user,
                email: "bench@example.com".into(),
                password_hash: hash,
                epoch: 0,
                created_at: now,
            })
            .await
            .unwrap();
        for _ in 0..10_000 {
            let t = Token::generate(TokenKind::Session);
            let rec = SessionRecord {
                id: SessionId::random(),
                token_hash: t.hash(),
                user,
                created_at: now,
                last_seen_at: now,
                verified_at: now,
                expires_at: now + chrono::Duration::hours(12),
                ip_family: IpFamily::V4,
                epoch: 0,
            };
            store.insert_session(rec).await.unwrap();
            token = Some(t);
        }
    });
    let cookie = token.unwrap().expose_secret().to_owned();
    let ip: std::net::IpAddr = "198.51.100.1".parse().unwrap();
    let mut g = c.benchmark_group("session");
    g.bench_function("authenticate_in_memory", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(accounts.authenticate(black_box(&cookie), ip).await.unwrap())
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_verify,
    bench_vault,
    bench_audit,
    bench_session
);
criterion_main!(benches);
