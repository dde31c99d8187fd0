//! The auto-rotation pass: a key it cannot handle (here: the vault cannot
//! seal the successor's plaintext) is counted as an error, left current for
//! the next pass, and does not stop the pass; and a pass pages through more
//! due keys than one page holds.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use echorelay_core::StoreError;
use echorelay_core::access::Role;
use echorelay_core::access::surface::Keys;
use echorelay_core::audit::AuditDraft;
use echorelay_core::clock::Clock;
use echorelay_core::ids::{KeyId, ProjectId};
use echorelay_core::keys::{
    Environment, KeyHash, KeyRecord, KeyService, MintRequest, PendingReveal, Supersession,
};
use echorelay_core::ports::{KeyStore, StoreResult};
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

/// A key store whose attention list is read before another process
/// rotates: the list is stale by the time this pass acts on it.
struct RotatedMeanwhile {
    store: MemStore,
    other: KeyService<MemStore, Arc<AesGcmVault>>,
}

#[async_trait::async_trait]
impl KeyStore for RotatedMeanwhile {
    async fn insert_key(&self, key: KeyRecord, audit: AuditDraft) -> StoreResult<()> {
        self.store.insert_key(key, audit).await
    }
    async fn key_by_hash(&self, hash: &KeyHash) -> StoreResult<Option<KeyRecord>> {
        self.store.key_by_hash(hash).await
    }
    async fn key_by_id(&self, id: KeyId) -> StoreResult<Option<KeyRecord>> {
        self.store.key_by_id(id).await
    }
    async fn keys_of_project(&self, project: ProjectId) -> StoreResult<Vec<KeyRecord>> {
        self.store.keys_of_project(project).await
    }
    async fn keys_page(
        &self,
        project: ProjectId,
        after: Option<KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>> {
        self.store.keys_page(project, after, limit).await
    }
    async fn keys_needing_attention(
        &self,
        now: DateTime<Utc>,
        after: Option<KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>> {
        let page = self.store.keys_needing_attention(now, after, limit).await?;
        // The other process wins every key on this page.
        let report = self
            .other
            .rotate_due()
            .await
            .map_err(|_| StoreError::Conflict {
                reason: "other pass failed",
            })?;
        assert_eq!(report.rotated, page.len());
        Ok(page)
    }
    async fn keys_with_pending_reveal(
        &self,
        after: Option<KeyId>,
        limit: usize,
    ) -> StoreResult<Vec<KeyRecord>> {
        self.store.keys_with_pending_reveal(after, limit).await
    }
    async fn replace_pending_reveal(
        &self,
        id: KeyId,
        expected: &Ciphertext,
        new: Ciphertext,
        audit: AuditDraft,
    ) -> StoreResult<bool> {
        self.store
            .replace_pending_reveal(id, expected, new, audit)
            .await
    }
    async fn rotate_key(
        &self,
        predecessor: KeyId,
        supersession: Supersession,
        successor: KeyRecord,
        audit: AuditDraft,
    ) -> StoreResult<()> {
        self.store
            .rotate_key(predecessor, supersession, successor, audit)
            .await
    }
    async fn revoke_key(&self, id: KeyId, at: DateTime<Utc>, audit: AuditDraft) -> StoreResult<()> {
        self.store.revoke_key(id, at, audit).await
    }
    async fn take_pending_reveal(
        &self,
        id: KeyId,
        collector: Option<KeyId>,
        audit: AuditDraft,
    ) -> StoreResult<Option<PendingReveal>> {
        self.store.take_pending_reveal(id, collector, audit).await
    }
}

/// A pass that loses every key to another process counts each lost race,
/// rotates none and reports no error: one successor per key in all.
#[tokio::test]
async fn a_pass_that_loses_the_race_counts_each_lost_key() {
    let h = due_keys(3).await;
    let clock: Arc<dyn Clock> = Arc::new(h.clock.clone());
    let other = KeyService::new(h.store.clone(), h.vault.clone(), clock.clone());
    let stale = Arc::new(RotatedMeanwhile {
        store: h.store.clone(),
        other,
    });
    let late = KeyService::from_parts(stale, Arc::new(h.store.clone()), h.vault.clone(), clock);
    let report = late.rotate_due().await.unwrap();
    assert_eq!(
        (report.rotated, report.lost_races, report.errors),
        (0, 3, 0)
    );
}
