//! S2, as a property: for random lifecycle policies, key roles, scheduler
//! delays, operator rotations (any time, any overlap and grace) and request
//! times before and after the rotation, a careful client never sees a
//! rejected request, and a client that never switches is rejected only after
//! the grace ends. After an auto-rotation the careful client collects its
//! successor itself, by presenting its own key
//! (`KeyService::collect_successor`), at any moment inside the overlap: no
//! human has to reveal it, whatever the key's role.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::Duration;
use echorelay::MemStore;
use echorelay::core::access::surface::Keys;
use echorelay::core::access::{Caller, Role, Voter};
use echorelay::core::clock::{Clock, ManualClock};
use echorelay::core::config::ConfigService;
use echorelay::core::ids::UserId;
use echorelay::core::keys::{
    Environment, KeyPhase, KeyService, LifecyclePolicy, MintRequest, PlaintextKey, RotateOptions,
};
use echorelay::core::vault::{AesGcmVault, Keyring, SecretKey};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    cadence: i64,
    overlap: i64,
    grace: i64,
    /// Scheduler lag after `rotate_at`, as a fraction of the cadence.
    lag: f64,
    /// When the careful client switches, as a fraction of the overlap.
    switch: f64,
    /// Request times, as fractions of the whole observed span (from the
    /// mint, so some fall before the rotation).
    probes: Vec<f64>,
    /// The key's role.
    role: Role,
    /// An operator rotation instead of the scheduler's: when (fraction of
    /// the cadence after mint), overlap and grace (fractions of the
    /// cadence, below 1).
    operator: Option<(f64, f64, f64)>,
}

fn case() -> impl Strategy<Value = Case> {
    (3_600i64..200 * 86_400)
        .prop_flat_map(|cadence| (Just(cadence), 0..cadence, 0..cadence))
        .prop_flat_map(|(cadence, overlap, grace)| {
            (
                Just(cadence),
                Just(overlap),
                Just(grace),
                0.0..2.0f64,
                0.0..1.0f64,
                prop::collection::vec(0.0..1.0f64, 1..24),
                prop::option::of((0.0..1.0f64, 0.0..0.999f64, 0.0..0.999f64)),
                prop::sample::select(Role::ALL.to_vec()),
            )
        })
        .prop_map(
            |(cadence, overlap, grace, lag, switch, probes, operator, role)| Case {
                cadence,
                overlap,
                grace,
                lag,
                switch,
                probes,
                operator,
                role,
            },
        )
}

async fn run(c: Case) -> Result<(), TestCaseError> {
    let clock = ManualClock::at_unix(1_767_225_600);
    let dyn_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let store = MemStore::new();
    let vault = Arc::new(AesGcmVault::new(Keyring::new(SecretKey::generate())));
    let keys = KeyService::new(store.clone(), vault.clone(), dyn_clock.clone());
    let config = ConfigService::new(store.clone(), vault, dyn_clock);
    let voter = Voter::new(store.clone());
    let user = UserId::random();
    let me = Caller::dangerous_user_stepped_up(user, None);
    let p = config
        .create_project(user, None, "s2-prop", "S2")
        .await
        .unwrap();
    let policy = LifecyclePolicy::new(
        Duration::seconds(c.cadence),
        Duration::seconds(c.overlap),
        Duration::seconds(c.grace),
    )
    .unwrap();
    let g = voter.authorize::<Keys>(&me, p.slug.as_str()).await.unwrap();
    config.set_key_policy(&g, policy).await.unwrap();
    let old = keys
        .mint(
            &g,
            MintRequest {
                environment: Environment::Live,
                role: c.role,
                label: String::new(),
            },
        )
        .await
        .unwrap();
    let t0 = clock.now();
    let secs = |f: f64| Duration::seconds((f * c.cadence as f64) as i64);

    // When the rotation happens, and the predecessor's expiry and grace it
    // must get.
    let (r, expires_at, grace) = match c.operator {
        // The scheduler runs late by `lag`; a late pass never shortens the
        // overlap.
        None => {
            let r = old.view.rotate_at + secs(c.lag);
            let expires = (t0 + policy.cadence()).max(r + policy.overlap());
            (r, expires, policy.grace())
        }
        Some((at, overlap, grace)) => {
            let r = t0 + secs(at);
            (r, r + secs(overlap), secs(grace))
        }
    };
    let grace_end = expires_at + grace;
    let switch_at =
        r + Duration::seconds(((expires_at - r).num_seconds() as f64 * c.switch) as i64);

    // Probe times over [t0, grace_end + cadence/2], plus the edges.
    let span = (grace_end - t0).num_seconds() + c.cadence / 2;
    let mut times: Vec<_> = c
        .probes
        .iter()
        .map(|f| t0 + Duration::seconds((f * span as f64) as i64))
        .collect();
    times.extend([
        t0,
        r - Duration::seconds(1),
        r,
        switch_at,
        expires_at - Duration::seconds(1),
        expires_at,
        grace_end - Duration::seconds(1),
        grace_end,
    ]);
    times.retain(|t| *t >= t0);
    times.sort();

    let mut new: Option<PlaintextKey> = None;
    let mut rotated = false;
    for t in times {
        if t >= r && !rotated {
            clock.set(r);
            match c.operator {
                None => {
                    prop_assert_eq!(keys.rotate_due().await.unwrap().rotated, 1);
                    let phase = keys.verify(old.plaintext.expose_secret()).await;
                    let Ok(KeyPhase::Overlap { expires_at: e, .. }) = phase.map(|v| v.phase())
                    else {
                        return Err(TestCaseError::fail(
                            "predecessor not in overlap right after rotation",
                        ));
                    };
                    prop_assert_eq!(e, expires_at, "expiry other than documented");
                }
                Some(_) => {
                    let opts = RotateOptions {
                        overlap: Some(expires_at - r),
                        grace: Some(grace),
                    };
                    let minted = keys.rotate(&g, old.view.id, opts).await.unwrap();
                    new = Some(minted.plaintext);
                }
            }
            rotated = true;
        }
        clock.set(t);
        if rotated && new.is_none() && t >= switch_at {
            // The machine client fetches its successor itself, with its
            // own (still valid) key: no owner involved.
            clock.set(switch_at);
            let got = keys
                .collect_successor(old.plaintext.expose_secret(), None)
                .await;
            prop_assert!(
                got.is_ok(),
                "collection failed at {}: {:?}",
                switch_at,
                got.err()
            );
            new = got.ok();
            clock.set(t);
        }
        let now = clock.now();
        let careful = match &new {
            Some(k) if now >= switch_at => k.expose_secret(),
            _ => old.plaintext.expose_secret(),
        };
        prop_assert!(
            keys.verify(careful).await.is_ok(),
            "careful client rejected at {now} (rotation {r}, switch {switch_at}, expiry {expires_at})"
        );
        let lazy_ok = keys.verify(old.plaintext.expose_secret()).await.is_ok();
        prop_assert_eq!(
            lazy_ok,
            now < grace_end,
            "lazy client at {} (grace end {})",
            now,
            grace_end
        );
        // S2 literally: from the successor's creation to the grace end, at
        // least one of the two verifies.
        if let Some(k) = &new {
            let new_ok = keys.verify(k.expose_secret()).await.is_ok();
            prop_assert!(new_ok || lazy_ok);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn rotation_never_causes_an_outage_for_a_careful_client(c in case()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(run(c))?;
    }
}
