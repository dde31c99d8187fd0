//! The revocation cascade rescans until a scan finds nothing new: a key
//! minted by a dependent after the cascade's first scan, and before that
//! dependent was revoked, is revoked by the next round (issue 16,
//! finding 1). Deterministic: the store mints it right after the scan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use echorelay_core::Error;
use echorelay_core::access::surface::{Keys, Members};
use echorelay_core::access::{Caller, Grant, Role};
use echorelay_core::audit::AuditDraft;
use echorelay_core::clock::Clock;
use echorelay_core::ids::{KeyId, ProjectId};
use echorelay_core::keys::{
    Environment, KeyHash, KeyRecord, KeyService, MintRequest, PendingReveal, Supersession,
};
use echorelay_core::ports::{KeyStore, StoreResult};
use echorelay_core::vault::{AesGcmVault, Ciphertext};
use echorelay_store_mem::MemStore;
use echorelay_testkit::Harness;

type Minter = (KeyService<MemStore, Arc<AesGcmVault>>, Grant<Keys>);

/// A key store that, right after the first project scan, mints a key with
/// the grant it holds (a request that passed authentication earlier).
struct MintedAfterTheScan {
    store: MemStore,
    once: Mutex<Option<Minter>>,
    minted: Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl KeyStore for MintedAfterTheScan {
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
        let scan = self.store.keys_of_project(project).await?;
        let pending = self.once.lock().unwrap().take();
        if let Some((svc, grant)) = pending {
            let req = MintRequest {
                environment: Environment::Live,
                role: Role::Owner,
                label: "late".into(),
            };
            let m = svc
                .mint(&grant, req)
                .await
                .expect("the dependent is still live");
            *self.minted.lock().unwrap() = Some(m.plaintext.expose_secret().to_owned());
        }
        Ok(scan)
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
        self.store.keys_needing_attention(now, after, limit).await
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

fn owner_key() -> MintRequest {
    MintRequest {
        environment: Environment::Live,
        role: Role::Owner,
        label: "machine".into(),
    }
}

#[tokio::test]
async fn a_key_minted_by_a_dependent_after_the_first_scan_is_revoked_by_the_next() {
    let h = Harness::new(MemStore::new());
    let (p, owner) = h.project().await;
    let members = h.grant::<Members>(&owner, &p).await;
    h.config
        .set_api_keys_manage_keys(&members, true)
        .await
        .unwrap();
    let g = h.grant::<Keys>(&owner, &p).await;
    // The owner mints A; A mints B.
    let a = h.keys.mint(&g, owner_key()).await.unwrap();
    let a_caller = Caller::api_key(
        h.keys.verify(a.plaintext.expose_secret()).await.unwrap(),
        None,
    );
    let ga = h.grant::<Keys>(&a_caller, &p).await;
    let b = h.keys.mint(&ga, owner_key()).await.unwrap();
    let b_caller = Caller::api_key(
        h.keys.verify(b.plaintext.expose_secret()).await.unwrap(),
        None,
    );
    let gb = h.grant::<Keys>(&b_caller, &p).await;

    let store = Arc::new(MintedAfterTheScan {
        store: h.store.clone(),
        once: Mutex::new(Some((h.keys.clone(), gb))),
        minted: Mutex::new(None),
    });
    let clock: Arc<dyn Clock> = Arc::new(h.clock.clone());
    let revoker = KeyService::from_parts(store.clone(), h.store.clone(), h.vault.clone(), clock);
    revoker.revoke(&g, a.view.id).await.unwrap();

    let late = store
        .minted
        .lock()
        .unwrap()
        .clone()
        .expect("a key was minted after the scan");
    for key in [
        a.plaintext.expose_secret(),
        b.plaintext.expose_secret(),
        late.as_str(),
    ] {
        assert!(
            matches!(h.keys.verify(key).await, Err(Error::Unauthenticated)),
            "a key hanging off the revoked one still verifies"
        );
    }
}
