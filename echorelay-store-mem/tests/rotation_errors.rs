//! The auto-rotation pass: a key it cannot handle (here: the vault cannot
//! seal the successor's plaintext) is counted as an error, left current for
//! the next pass, and does not stop the pass; and a pass pages through more
//! due keys than one page holds.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use echorelay_core::access::Role;
use echorelay_core::access::surface::Keys;
use echorelay_core::clock::Clock;
use echorelay_core::keys::{Environment, KeyService, MintRequest};
use echorelay_core::vault::{AesGcmVault, Ciphertext, SecretContext, SecretVault, VaultError};
use echorelay_store_mem::MemStore;
use echorelay_testkit::Harness;
use zeroize::Zeroizing;

/// A vault that opens but cannot seal (say, its key was withdrawn).
struct CannotSeal(Arc<AesGcmVault>);

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

/// A harness with `n` keys minted in one project, all due for rotation.
async fn due_keys(n: usize) -> Harness<MemStore> {
    let h = Harness::new(MemStore::new());
    let (p, owner) = h.project().await;
    let grant = h.grant::<Keys>(&owner, &p).await;
    for _ in 0..n {
        let req = MintRequest {
            environment: Environment::Test,
            role: Role::Viewer,
            label: String::new(),
        };
        h.keys.mint(&grant, req).await.unwrap();
    }
    h.clock.advance(chrono::Duration::days(84));
    h
}

#[tokio::test]
async fn a_key_that_cannot_rotate_is_counted_and_retried() {
    let h = due_keys(2).await;
    let clock: Arc<dyn Clock> = Arc::new(h.clock.clone());
    let broken = KeyService::new(h.store.clone(), CannotSeal(h.vault.clone()), clock);
    let report = broken.rotate_due().await.unwrap();
    assert_eq!((report.rotated, report.errors), (0, 2));
    // Left for the next pass, which a working vault completes.
    let report = h.keys.rotate_due().await.unwrap();
    assert_eq!((report.rotated, report.errors), (2, 0));
}

/// The pass loads due keys in pages of 500: with 501 due, every one is
/// rotated, in one pass.
#[tokio::test]
async fn a_pass_pages_through_every_due_key() {
    let h = due_keys(501).await;
    let report = h.keys.rotate_due().await.unwrap();
    assert_eq!((report.rotated, report.errors), (501, 0));
}
