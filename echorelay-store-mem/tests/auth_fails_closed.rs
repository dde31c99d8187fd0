//! Authentication paths fail opaquely (S7, S9 and S3 from the outside):
//! any error inside key verification, the login steps or the session check
//! reaches the caller as `Error::Unauthenticated`, except a backend outage,
//! which is `Error::Unavailable` and never a success.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;

use echorelay_core::Error;
use echorelay_core::access::Role;
use echorelay_core::access::surface::Keys;
use echorelay_core::account::service::{PasswordStep, SecondFactor};
use echorelay_core::keys::{Environment, MintRequest};
use echorelay_core::vault::{AesGcmVault, Keyring, SecretKey};
use echorelay_store_mem::MemStore;
use echorelay_testkit::Harness;
use secrecy::{ExposeSecret, SecretString};

fn ip() -> IpAddr {
    "198.51.100.7".parse().unwrap()
}

fn pw() -> SecretString {
    SecretString::from("correct horse battery staple")
}

fn unavailable<T: std::fmt::Debug>(r: Result<T, Error>) {
    assert!(
        matches!(r, Err(Error::Unavailable)),
        "expected Unavailable, got {r:?}"
    );
}

fn unauthenticated<T: std::fmt::Debug>(r: Result<T, Error>) {
    assert!(
        matches!(r, Err(Error::Unauthenticated)),
        "expected Unauthenticated, got {r:?}"
    );
}

/// A second "process" over the same store whose SECRET_KEY is another one:
/// every sealed value fails to open there (a vault error inside the path).
fn wrong_vault(h: &Harness<MemStore>) -> Harness<MemStore> {
    let vault = Arc::new(AesGcmVault::new(Keyring::new(SecretKey::generate())));
    let other = Harness::with_vault(h.store.clone(), vault);
    other.clock.set(h.clock_now());
    other
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_verification_outage_is_unavailable() {
    let h = Harness::new(MemStore::new());
    let (p, owner) = h.project().await;
    let g = h.grant::<Keys>(&owner, &p).await;
    let req = MintRequest {
        environment: Environment::Live,
        role: Role::Viewer,
        label: "x".into(),
    };
    let k = h.keys.mint(&g, req).await.unwrap();
    h.store.set_outage(true);
    unavailable(h.keys.verify(k.plaintext.expose_secret()).await);
    h.store.set_outage(false);
    h.keys.verify(k.plaintext.expose_secret()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_steps_fail_closed() {
    let h = Harness::new(MemStore::new());
    let a = h.enrolled(ip(), false).await;
    // Password step during an outage.
    h.store.set_outage(true);
    unavailable(h.accounts.login_password(&a.email, pw(), ip(), None).await);
    // Session check during an outage.
    unavailable(
        h.accounts
            .authenticate(a.login.session.token.expose_secret(), ip())
            .await,
    );
    h.store.set_outage(false);
    h.accounts
        .authenticate(a.login.session.token.expose_secret(), ip())
        .await
        .unwrap();

    // Second factor: outage after the password step.
    let PasswordStep::SecondFactorRequired(ch) = h
        .accounts
        .login_password(&a.email, pw(), ip(), None)
        .await
        .unwrap()
    else {
        panic!("expected a second-factor challenge")
    };
    h.store.set_outage(true);
    let code = SecondFactor::Totp(h.totp_code(&a.seed, 0));
    unavailable(
        h.accounts
            .login_second_factor(ch.token.expose_secret(), code, ip(), false)
            .await,
    );
    h.store.set_outage(false);

    // Second factor: the TOTP seed does not open (vault error inside).
    let PasswordStep::SecondFactorRequired(ch) = h
        .accounts
        .login_password(&a.email, pw(), ip(), None)
        .await
        .unwrap()
    else {
        panic!("expected a second-factor challenge")
    };
    let other = wrong_vault(&h);
    let code = SecondFactor::Totp(h.totp_code(&a.seed, 1));
    unauthenticated(
        other
            .accounts
            .login_second_factor(ch.token.expose_secret(), code, ip(), false)
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_steps_fail_closed() {
    let h = Harness::new(MemStore::new());
    let email = "enroll-closed@example.com";
    h.accounts.register(email, pw(), None).await.unwrap();
    let PasswordStep::EnrollmentRequired(ch) = h
        .accounts
        .login_password(email, pw(), ip(), None)
        .await
        .unwrap()
    else {
        panic!("expected enrollment")
    };
    let token = ch.token.expose_secret();
    h.store.set_outage(true);
    unavailable(h.accounts.begin_enrollment(token, ip()).await);
    h.store.set_outage(false);
    let offer = h.accounts.begin_enrollment(token, ip()).await.unwrap();
    let seed =
        echorelay_core::account::totp::TotpSeed::from_base32(offer.secret_base32.expose_secret())
            .unwrap();
    h.store.set_outage(true);
    unavailable(
        h.accounts
            .confirm_enrollment(token, &h.totp_code(&seed, 0), ip(), false)
            .await,
    );
    h.store.set_outage(false);
    // The pending seed does not open under another SECRET_KEY.
    let other = wrong_vault(&h);
    unauthenticated(
        other
            .accounts
            .confirm_enrollment(token, &h.totp_code(&seed, 0), ip(), false)
            .await,
    );
    // The right vault still completes it.
    h.accounts
        .confirm_enrollment(token, &h.totp_code(&seed, 0), ip(), false)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_fails_closed() {
    use echorelay_core::account::service::StepUp;
    let h = Harness::new(MemStore::new());
    let a = h.enrolled(ip(), false).await;
    let cookie = a.login.session.token.expose_secret();
    h.store.set_outage(true);
    unavailable(
        h.accounts
            .step_up(cookie, ip(), StepUp::Password(pw()))
            .await,
    );
    h.store.set_outage(false);
    // The seed does not open under another SECRET_KEY: opaque.
    let other = wrong_vault(&h);
    let code = StepUp::Totp(h.totp_code(&a.seed, 1));
    unauthenticated(other.accounts.step_up(cookie, ip(), code).await);
    h.accounts
        .step_up(cookie, ip(), StepUp::Password(pw()))
        .await
        .unwrap();
}
