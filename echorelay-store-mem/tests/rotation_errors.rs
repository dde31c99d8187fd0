//! A key the auto-rotation pass cannot handle (here: the vault cannot
//! seal the successor's plaintext) is counted as an error, logged, left
//! current for the next pass, and does not stop the pass.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use echorelay_core::access::surface::Keys;
use echorelay_core::access::{Caller, Role, Voter};
use echorelay_core::clock::{Clock, ManualClock};
use echorelay_core::config::ConfigService;
use echorelay_core::ids::UserId;
use echorelay_core::keys::{Environment, KeyService, MintRequest};
use echorelay_core::vault::{
    AesGcmVault, Ciphertext, Keyring, SecretContext, SecretKey, SecretVault, VaultError,
};
use echorelay_store_mem::MemStore;
use zeroize::Zeroizing;

/// A vault that opens but cannot seal (say, its key was withdrawn).
struct CannotSeal(AesGcmVault);

impl SecretVault for CannotSeal {
    fn seal(&self, _: &[u8], _: &SecretContext<'_>) -> Result<Ciphertext, VaultError> {
        Err(VaultError::Encrypt)
    }
    fn open(
        &self,
        ct: &Ciphertext,
        ctx: &SecretContext<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        self.0.open(ct, ctx)
    }
    fn is_current(&self, ct: &Ciphertext) -> bool {
        self.0.is_current(ct)
    }
}

#[tokio::test]
async fn a_key_that_cannot_rotate_is_counted_and_retried() {
    let store = MemStore::new();
    let clock = ManualClock::at_unix(1_767_225_600);
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    let vault = AesGcmVault::new(Keyring::new(SecretKey::generate()));
    let config = ConfigService::new(store.clone(), vault.clone(), c.clone());
    let owner = UserId::random();
    config
        .create_project(owner, None, "no-seal", "x")
        .await
        .unwrap();
    let me = Caller::dangerous_user_stepped_up(owner, None);
    let grant = Voter::new(store.clone())
        .authorize::<Keys>(&me, "no-seal")
        .await
        .unwrap();
    let good = KeyService::new(store.clone(), vault.clone(), c.clone());
    for _ in 0..2 {
        let req = MintRequest {
            environment: Environment::Live,
            role: Role::Viewer,
            label: String::new(),
        };
        good.mint(&grant, req).await.unwrap();
    }
    clock.advance(chrono::Duration::days(84));
    let broken = KeyService::new(store.clone(), CannotSeal(vault), c);
    let report = broken.rotate_due().await.unwrap();
    assert_eq!((report.rotated, report.errors), (0, 2));
    // Left for the next pass, which a working vault completes.
    let report = good.rotate_due().await.unwrap();
    assert_eq!((report.rotated, report.errors), (2, 0));
}

/// The pass loads due keys in pages of 500: with 501 due, every one is
/// rotated, in one pass.
#[tokio::test]
async fn a_pass_pages_through_every_due_key() {
    let store = MemStore::new();
    let clock = ManualClock::at_unix(1_767_225_600);
    let c: Arc<dyn Clock> = Arc::new(clock.clone());
    let vault = AesGcmVault::new(Keyring::new(SecretKey::generate()));
    let config = ConfigService::new(store.clone(), vault.clone(), c.clone());
    let owner = UserId::random();
    config
        .create_project(owner, None, "many-keys", "x")
        .await
        .unwrap();
    let me = Caller::dangerous_user_stepped_up(owner, None);
    let grant = Voter::new(store.clone())
        .authorize::<Keys>(&me, "many-keys")
        .await
        .unwrap();
    let keys = KeyService::new(store.clone(), vault, c);
    for _ in 0..501 {
        let req = MintRequest {
            environment: Environment::Test,
            role: Role::Viewer,
            label: String::new(),
        };
        keys.mint(&grant, req).await.unwrap();
    }
    clock.advance(chrono::Duration::days(84));
    let report = keys.rotate_due().await.unwrap();
    assert_eq!((report.rotated, report.errors), (501, 0));
}
