//! Services over separate stores, without forwarding types: accounts,
//! sessions, throttle counters and the audit log each in a backend of its
//! own (the expected Postgres + Redis deployment splits them two ways),
//! and keys with projects from two handles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;

use echorelay_core::account::AttemptScope;
use echorelay_core::account::service::{PasswordStep, SecondFactor};
use echorelay_core::account::totp::{TotpSeed, code_for_step, step_at};
use echorelay_core::account::{AccountPolicy, AccountService};
use echorelay_core::clock::{Clock, ManualClock};
use echorelay_core::keys::KeyService;
use echorelay_core::ports::{AccountStore, AuditLog, SessionStore, ThrottleStore};
use echorelay_core::vault::{AesGcmVault, Keyring, SecretKey};
use echorelay_store_mem::MemStore;
use echorelay_testkit::test_account_policy;
use secrecy::{ExposeSecret, SecretString};

#[tokio::test]
async fn accounts_sessions_throttles_and_audit_in_four_stores() {
    let (accounts, sessions, throttles, audit) = (
        MemStore::new(),
        MemStore::new(),
        MemStore::new(),
        MemStore::new(),
    );
    let clock = ManualClock::at_unix(1_767_225_600);
    let vault = Arc::new(AesGcmVault::new(Keyring::new(SecretKey::generate())));
    let svc = AccountService::from_parts(
        accounts.clone(),
        sessions.clone(),
        throttles.clone(),
        audit.clone(),
        vault,
        Arc::new(clock.clone()) as Arc<dyn Clock>,
        test_account_policy(),
    )
    .unwrap();
    let ip: IpAddr = "192.0.2.10".parse().unwrap();
    let pw = || SecretString::from("correct horse battery staple");
    let user = svc
        .register("split@example.com", pw(), Some(ip))
        .await
        .unwrap();
    let PasswordStep::EnrollmentRequired(ch) = svc
        .login_password("split@example.com", pw(), ip, None)
        .await
        .unwrap()
    else {
        panic!("expected enrollment")
    };
    let offer = svc
        .begin_enrollment(ch.token.expose_secret(), ip)
        .await
        .unwrap();
    let seed = TotpSeed::from_base32(offer.secret_base32.expose_secret()).unwrap();
    let params = svc.policy().totp;
    let code = |at: u64| {
        SecretString::from(
            code_for_step(&seed, &params, step_at(&params, at))
                .unwrap()
                .as_str(),
        )
    };
    let now = || u64::try_from(clock.now().timestamp()).unwrap();
    let done = svc
        .confirm_enrollment(ch.token.expose_secret(), &code(now()), ip, false)
        .await
        .unwrap();
    svc.authenticate(done.login.session.token.expose_secret(), ip)
        .await
        .unwrap();
    // A later TOTP login, too.
    clock.advance(chrono::Duration::seconds(30));
    let PasswordStep::SecondFactorRequired(ch) = svc
        .login_password("split@example.com", pw(), ip, None)
        .await
        .unwrap()
    else {
        panic!("expected a second factor")
    };
    svc.login_second_factor(
        ch.token.expose_secret(),
        SecondFactor::Totp(code(now())),
        ip,
        false,
    )
    .await
    .unwrap();
    // A wrong password: counted in the throttles' store only.
    let wrong = SecretString::from("not the password at all");
    assert!(
        svc.login_password("split@example.com", wrong, ip, None)
            .await
            .is_err()
    );
    let scope = AttemptScope::Password(user);
    let since = clock.now() - chrono::Duration::hours(1);
    assert_eq!(
        throttles.attempts_since(&scope, since).await.unwrap().len(),
        1
    );
    for other in [&accounts, &sessions, &audit] {
        assert!(
            other
                .attempts_since(&scope, since)
                .await
                .unwrap()
                .is_empty()
        );
    }
    // Each port wrote only to its own store.
    assert!(accounts.account(user).await.unwrap().is_some());
    assert!(sessions.account(user).await.unwrap().is_none());
    assert_eq!(sessions.sessions_of(user).await.unwrap().len(), 2);
    assert!(accounts.sessions_of(user).await.unwrap().is_empty());
    for (store, has_events) in [
        (&audit, true),
        (&accounts, false),
        (&sessions, false),
        (&throttles, false),
    ] {
        let events = store.events_for_user_page(user, None, 1000).await.unwrap();
        assert_eq!(!events.is_empty(), has_events);
    }
}

#[tokio::test]
async fn key_service_from_two_handles() {
    use echorelay_core::access::surface::Keys;
    use echorelay_core::access::{Caller, Role, Voter};
    use echorelay_core::config::ConfigService;
    use echorelay_core::ids::UserId;
    use echorelay_core::keys::{Environment, MintRequest};
    let store = MemStore::new();
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_unix(1_767_225_600));
    let vault = Arc::new(AesGcmVault::new(Keyring::new(SecretKey::generate())));
    let config = ConfigService::new(store.clone(), vault.clone(), clock.clone());
    let owner = UserId::random();
    config
        .create_project(owner, None, "split-keys", "Split")
        .await
        .unwrap();
    let grant = Voter::new(store.clone())
        .authorize::<Keys>(
            &Caller::dangerous_user_stepped_up(owner, None),
            "split-keys",
        )
        .await
        .unwrap();
    // Keys through a trait object, projects through the concrete store.
    let keys: Arc<MemStore> = Arc::new(store.clone());
    let svc = KeyService::from_parts(keys, store.clone(), vault, clock);
    let req = MintRequest {
        environment: Environment::Test,
        role: Role::Viewer,
        label: "split".into(),
    };
    let minted = svc.mint(&grant, req).await.unwrap();
    let verified = svc.verify(minted.plaintext.expose_secret()).await.unwrap();
    assert_eq!(verified.key_id(), minted.view.id);
    assert!(svc.verify("er_live_not-a-key").await.is_err());
}

#[test]
fn policy_limits_of_zero_are_refused() {
    use echorelay_core::Error;
    let vault = Arc::new(AesGcmVault::new(Keyring::new(SecretKey::generate())));
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_unix(1_767_225_600));
    let base = test_account_policy();
    let zeroed = [
        AccountPolicy {
            max_trusted_devices: 0,
            ..base
        },
        AccountPolicy {
            max_second_factor_failures: 0,
            ..base
        },
        AccountPolicy {
            max_password_failures: 0,
            ..base
        },
        AccountPolicy {
            max_password_attempts_per_source: 0,
            ..base
        },
        AccountPolicy {
            step_up_window: chrono::Duration::zero(),
            ..base
        },
    ];
    for p in zeroed {
        let r = AccountService::new(MemStore::new(), vault.clone(), clock.clone(), p);
        assert!(matches!(r, Err(Error::InvalidInput(_))), "{p:?} accepted");
    }
    assert!(AccountService::new(MemStore::new(), vault, clock, base).is_ok());
}
