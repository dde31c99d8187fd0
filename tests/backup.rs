//! Backups through the one handle (`EchoRelay::backups`) on the in-memory
//! target: the round trip, and every kind of corruption and misuse refused
//! with a typed error before a byte of it is handed out as verified
//! (issue 18, S12). Many random trials each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use echorelay::core::backup::crypt::{Identities, Recipients, SealedWriter};
use echorelay::core::backup::manifest::{self, HeadEntry};
use echorelay::core::backup::service::{
    BackupService, BackupSource, Retention, audit_heads, compare_heads,
};
use echorelay::core::backup::{BackupError, BackupTarget, ObjectPath, read_all};
use echorelay::prelude::*;
use rand::{Rng, RngCore, SeedableRng};

/// A source of known bytes (or one that fails half-way).
struct Bytesource {
    name: &'static str,
    data: Vec<u8>,
    fail_after: Option<usize>,
}

#[async_trait]
impl BackupSource for Bytesource {
    fn name(&self) -> &str {
        self.name
    }
    async fn write_to(&self, out: &mut SealedWriter) -> Result<(), BackupError> {
        for (i, chunk) in self.data.chunks(100_000).enumerate() {
            if self.fail_after == Some(i) {
                return Err(BackupError::Source("the source failed half-way".into()));
            }
            out.write(chunk).await?;
        }
        Ok(())
    }
}

fn keypair() -> (Recipients, Arc<Identities>) {
    let id = age::x25519::Identity::generate();
    let r = Recipients::parse(&id.to_public().to_string()).unwrap();
    let text = format!(
        "# test identity\n{}\n",
        secrecy::ExposeSecret::expose_secret(&id.to_string())
    );
    (r, Arc::new(Identities::parse(&text).unwrap()))
}

struct World {
    relay: EchoRelay,
    target: Arc<MemBackupTarget>,
    backups: BackupService,
    recipients: Recipients,
    identities: Arc<Identities>,
}

async fn world() -> World {
    let relay = EchoRelay::builder().build().unwrap();
    let target = Arc::new(MemBackupTarget::with_part_size(64 * 1024));
    let backups = relay.backups(target.clone());
    let (recipients, identities) = keypair();
    World {
        relay,
        target,
        backups,
        recipients,
        identities,
    }
}

fn random_bytes(rng: &mut impl RngCore, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill_bytes(&mut v);
    v
}

async fn plaintext(w: &World, m: &manifest::Manifest, name: &str) -> Result<Vec<u8>, BackupError> {
    let mut rx = w.backups.open(m, name, w.identities.clone()).await?;
    let mut out = Vec::new();
    while let Some(chunk) = rx.recv().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

#[tokio::test]
async fn a_backup_round_trips_and_holds_no_plaintext() {
    let w = world().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    // A marker that must never appear in what the target stores.
    let mut data = random_bytes(&mut rng, 700_000);
    data[1000..1032].copy_from_slice(b"PLAINTEXT-MARKER-PLAINTEXT-MARKR");
    let src = Bytesource {
        name: "snapshot",
        data: data.clone(),
        fail_after: None,
    };
    let heads = vec![HeadEntry {
        chain: None,
        seq: 3,
        hash: "ab".repeat(32),
    }];
    let m = w
        .backups
        .run(&w.recipients, &[&src], heads.clone())
        .await
        .unwrap();
    assert_eq!(m.audit_heads, heads);
    assert_eq!(m.store, "memory");
    assert_eq!(m.recipients, w.recipients.fingerprints());
    assert_eq!(m.objects[0].plaintext_size, data.len() as u64);

    let listed = w.backups.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, m.id);
    assert_eq!(w.backups.manifest(&m.id, &w.identities).await.unwrap(), m);
    assert_eq!(plaintext(&w, &m, "snapshot").await.unwrap(), data);
    let report = w
        .backups
        .verify(&m.id, w.identities.clone(), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.plaintext_bytes, data.len() as u64);

    for o in w.target.list(None).await.unwrap() {
        let stored = read_all(w.target.as_ref(), &o.path, 10 << 20)
            .await
            .unwrap();
        assert!(
            stored.starts_with(b"age-encryption.org/v1\n"),
            "{} is an age file",
            o.path
        );
        assert!(
            !stored.windows(16).any(|x| x == b"PLAINTEXT-MARKER"),
            "{} holds plaintext",
            o.path
        );
        assert!(
            !stored.windows(8).any(|x| x == b"snapshot"),
            "the manifest is encrypted too"
        );
    }
}

#[tokio::test]
async fn a_failed_backup_leaves_nothing_listed_or_stored() {
    let w = world().await;
    let good = Bytesource {
        name: "a",
        data: vec![7; 300_000],
        fail_after: None,
    };
    let bad = Bytesource {
        name: "b",
        data: vec![9; 300_000],
        fail_after: Some(1),
    };
    let err = w
        .backups
        .run(&w.recipients, &[&good, &bad], vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, BackupError::Source(_)), "{err:?}");
    assert!(w.backups.list().await.unwrap().is_empty());
    assert!(
        w.target.list(None).await.unwrap().is_empty(),
        "objects of a failed run are deleted"
    );
}

#[tokio::test]
async fn the_wrong_identity_and_bad_keys_are_typed_errors() {
    let w = world().await;
    let src = Bytesource {
        name: "snapshot",
        data: vec![1; 1000],
        fail_after: None,
    };
    let m = w.backups.run(&w.recipients, &[&src], vec![]).await.unwrap();
    let (_, other) = keypair();
    assert!(matches!(
        w.backups.manifest(&m.id, &other).await,
        Err(BackupError::WrongIdentity(_))
    ));
    assert!(matches!(
        w.backups.verify(&m.id, other, &|_| {}).await,
        Err(BackupError::WrongIdentity(_))
    ));
    for bad in [
        "",
        "  ,",
        "age1notakey",
        "AGE-SECRET-KEY-1ABC",
        "ssh-ed25519 AAAA",
    ] {
        assert!(
            matches!(Recipients::parse(bad), Err(BackupError::Recipients(_))),
            "{bad:?}"
        );
    }
    for bad in ["", "# only a comment\n", "age1qqqq", "not a key"] {
        let e = Identities::parse(bad).unwrap_err();
        assert!(matches!(e, BackupError::Identity(_)), "{bad:?}");
        assert!(!e.to_string().contains("qqqq") && !e.to_string().contains("not a key"));
    }
    assert!(matches!(
        w.backups
            .manifest("20261205T030000Z-00000000", &w.identities)
            .await,
        Err(BackupError::NoSuchBackup(_))
    ));
    assert!(matches!(
        w.backups.manifest("../../etc", &w.identities).await,
        Err(BackupError::NoSuchBackup(_))
    ));
    // Identities never show their secret in Debug.
    assert!(!format!("{:?}", w.identities).contains("AGE-SECRET-KEY"));
}

/// Replaces the object at `path` by `bytes` (what anyone with write
/// access to the bucket can do).
async fn overwrite(t: &dyn BackupTarget, path: &ObjectPath, bytes: Vec<u8>) {
    t.delete(path).await.unwrap();
    t.create(path, Bytes::from(bytes)).await.unwrap();
}

#[tokio::test]
async fn corrupted_objects_never_verify_and_never_release_their_end() {
    let w = world().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let data = random_bytes(&mut rng, 200_000);
    let src = Bytesource {
        name: "snapshot",
        data: data.clone(),
        fail_after: None,
    };
    let m = w.backups.run(&w.recipients, &[&src], vec![]).await.unwrap();
    let m2 = w
        .backups
        .run(
            &w.recipients,
            &[&Bytesource {
                name: "snapshot",
                data: random_bytes(&mut rng, 200_000),
                fail_after: None,
            }],
            vec![],
        )
        .await
        .unwrap();
    let path = ObjectPath::new(&m.objects[0].path).unwrap();
    let original = read_all(w.target.as_ref(), &path, 1 << 20).await.unwrap();

    let trials = 60;
    for trial in 0..trials {
        let mut bytes = original.clone();
        let kind = trial % 4;
        match kind {
            // One bit flipped anywhere.
            0 => {
                let i = rng.gen_range(0..bytes.len());
                bytes[i] ^= 1 << rng.gen_range(0..8);
            }
            // Truncated anywhere.
            1 => bytes.truncate(rng.gen_range(0..bytes.len())),
            // Bytes appended.
            2 => {
                let n = rng.gen_range(1..100);
                bytes.extend(random_bytes(&mut rng, n));
            }
            // Swapped for the other backup's object (a valid age file to
            // the same recipients).
            _ => {
                bytes = read_all(
                    w.target.as_ref(),
                    &ObjectPath::new(&m2.objects[0].path).unwrap(),
                    1 << 20,
                )
                .await
                .unwrap();
            }
        }
        overwrite(w.target.as_ref(), &path, bytes).await;
        let got = plaintext(&w, &m, "snapshot").await;
        assert!(
            matches!(got, Err(BackupError::Corrupt { .. })),
            "trial {trial} kind {kind}: {got:?}"
        );
        let verified = w.backups.verify(&m.id, w.identities.clone(), &|_| {}).await;
        assert!(
            matches!(verified, Err(BackupError::Corrupt { .. })),
            "trial {trial}"
        );
        // Never the whole plaintext: a restore tool cannot finish on it.
        let mut rx = w
            .backups
            .open(&m, "snapshot", w.identities.clone())
            .await
            .unwrap();
        let mut released = 0usize;
        while let Some(Ok(c)) = rx.recv().await {
            released += c.len();
        }
        assert!(
            released < data.len(),
            "trial {trial}: all {released} bytes released"
        );
    }
    overwrite(w.target.as_ref(), &path, original).await;
    assert_eq!(plaintext(&w, &m, "snapshot").await.unwrap(), data);
}

#[tokio::test]
async fn manifests_that_lie_move_or_come_from_elsewhere_are_refused() {
    let w = world().await;
    let src = Bytesource {
        name: "snapshot",
        data: vec![5; 50_000],
        fail_after: None,
    };
    let m1 = w.backups.run(&w.recipients, &[&src], vec![]).await.unwrap();
    let m2 = w.backups.run(&w.recipients, &[&src], vec![]).await.unwrap();
    let p1 = ObjectPath::new(&format!("backups/{}/manifest.age", m1.id)).unwrap();
    let p2 = ObjectPath::new(&format!("backups/{}/manifest.age", m2.id)).unwrap();

    // A manifest moved to another backup's place.
    let b2 = read_all(w.target.as_ref(), &p2, 1 << 20).await.unwrap();
    let b1 = read_all(w.target.as_ref(), &p1, 1 << 20).await.unwrap();
    overwrite(w.target.as_ref(), &p1, b2).await;
    assert!(matches!(
        w.backups.manifest(&m1.id, &w.identities).await,
        Err(BackupError::Corrupt { .. })
    ));
    overwrite(w.target.as_ref(), &p1, b1).await;

    // A manifest written by someone with the public key but not SECRET_KEY.
    let other = EchoRelay::builder()
        .build()
        .unwrap()
        .backups(w.target.clone());
    let forged = other.run(&w.recipients, &[&src], vec![]).await.unwrap();
    assert!(matches!(
        w.backups.manifest(&forged.id, &w.identities).await,
        Err(BackupError::Corrupt { .. })
    ));
    assert!(matches!(
        w.backups
            .verify(&forged.id, w.identities.clone(), &|_| {})
            .await,
        Err(BackupError::Corrupt { .. })
    ));

    // A manifest whose hash lies (sealed under the right key: only the
    // hash check can catch it).
    let mut lying = m1.clone();
    lying.objects[0].sha256 = "00".repeat(32);
    assert!(matches!(
        plaintext(&w, &lying, "snapshot").await,
        Err(BackupError::Corrupt { .. })
    ));
    let mut lying = m1.clone();
    lying.objects[0].plaintext_size -= 1;
    assert!(matches!(
        plaintext(&w, &lying, "snapshot").await,
        Err(BackupError::Corrupt { .. })
    ));

    // A backup from a newer format: refused by name.
    let newer = br#"{"format":"echorelay.backup-envelope.v2","manifest":"{}","mac":{"key_id":"00000000","tag":"00"}}"#;
    let sealed = echorelay::core::backup::crypt::encrypt_small(&w.recipients, newer).unwrap();
    overwrite(w.target.as_ref(), &p2, sealed).await;
    assert!(matches!(
        w.backups.manifest(&m2.id, &w.identities).await,
        Err(BackupError::UnsupportedFormat { .. })
    ));
}

#[tokio::test]
async fn the_manifest_is_created_once_and_a_half_written_backup_is_not_listed() {
    let w = world().await;
    let src = Bytesource {
        name: "snapshot",
        data: vec![5; 10],
        fail_after: None,
    };
    let m = w.backups.run(&w.recipients, &[&src], vec![]).await.unwrap();
    let p = ObjectPath::new(&format!("backups/{}/manifest.age", m.id)).unwrap();
    assert!(matches!(
        w.target.create(&p, Bytes::from_static(b"x")).await,
        Err(BackupError::AlreadyExists(_))
    ));
    // Objects without a manifest (a run that died): not a backup.
    let dead = ObjectPath::new("backups/20000101T000000Z-00000000/snapshot.age").unwrap();
    w.target
        .create(&dead, Bytes::from_static(b"partial"))
        .await
        .unwrap();
    assert_eq!(w.backups.list().await.unwrap().len(), 1);
    // Pruning removes it (it is older than the newest complete backup)
    // and keeps the newest.
    let gone = w
        .backups
        .prune(Retention {
            daily: 0,
            weekly: 0,
            monthly: 0,
        })
        .await
        .unwrap();
    assert_eq!(gone, vec!["20000101T000000Z-00000000".to_owned()]);
    assert_eq!(w.backups.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn audit_heads_find_a_rewritten_or_truncated_chain() {
    let w = world().await;
    let owner = UserId::random();
    w.relay
        .config()
        .create_project(owner, None, "acme", "Acme")
        .await
        .unwrap();
    let heads = audit_heads(w.relay.store().as_ref()).await.unwrap();
    assert!(!heads.is_empty());
    assert!(
        compare_heads(w.relay.store().as_ref(), &heads)
            .await
            .unwrap()
            .is_empty()
    );
    // Appends since are fine.
    w.relay
        .config()
        .create_project(owner, None, "beta", "Beta")
        .await
        .unwrap();
    assert!(
        compare_heads(w.relay.store().as_ref(), &heads)
            .await
            .unwrap()
            .is_empty()
    );
    // A head whose hash differs: rewritten; a seq beyond the chain: truncated.
    let mut lie = heads.clone();
    lie[0].hash = "00".repeat(32);
    let found = compare_heads(w.relay.store().as_ref(), &lie).await.unwrap();
    assert!(found[0].to_string().contains("rewritten"), "{}", found[0]);
    let mut cut = heads.clone();
    cut[0].seq += 100;
    let found = compare_heads(w.relay.store().as_ref(), &cut).await.unwrap();
    assert!(found[0].to_string().contains("truncated"), "{}", found[0]);
}

mod schedule {
    use super::*;
    use echorelay::core::backup::schedule::{
        LocalSlotLock, PassOutcome, Schedule, SlotGuard, SlotLock,
    };
    use echorelay::core::clock::ManualClock;

    /// A relay on a manual clock at `at`, its backups on a memory target.
    fn at(now: &str) -> (World, ManualClock) {
        let clock = ManualClock::new(
            chrono::DateTime::parse_from_rfc3339(now)
                .unwrap()
                .with_timezone(&chrono::Utc),
        );
        let relay = EchoRelay::builder()
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        let target = Arc::new(MemBackupTarget::with_part_size(64 * 1024));
        let backups = relay.backups(target.clone());
        let (recipients, identities) = keypair();
        let w = World {
            relay,
            target,
            backups,
            recipients,
            identities,
        };
        (w, clock)
    }

    fn source() -> Bytesource {
        Bytesource {
            name: "snapshot",
            data: b"the data".to_vec(),
            fail_after: None,
        }
    }

    /// A lock that is always held by someone else.
    #[derive(Debug)]
    struct Taken;

    #[async_trait]
    impl SlotLock for Taken {
        async fn try_acquire(&self, _: &str) -> Result<Option<Box<dyn SlotGuard>>, BackupError> {
            Ok(None)
        }
    }

    async fn pass(w: &World, lock: &dyn SlotLock, s: &Schedule) -> PassOutcome {
        w.backups
            .scheduled_pass(lock, s, &w.recipients, &[&source()], vec![])
            .await
            .unwrap()
    }

    /// The first pass finds the last slot (yesterday 03:00, at 02:00)
    /// uncovered and backs up; a second finds it covered; at 03:00 the new
    /// slot is uncovered again, and one backup covers it.
    #[tokio::test]
    async fn a_slot_is_backed_up_once_and_a_missed_one_at_start() {
        let (w, clock) = at("2026-12-05T02:00:00Z");
        let s = Schedule::default();
        let lock = LocalSlotLock::new();
        let PassOutcome::Ran { slot, manifest, .. } = pass(&w, &lock, &s).await else {
            panic!("the missed slot runs at start")
        };
        assert_eq!(slot.to_rfc3339(), "2026-12-04T03:00:00+00:00");
        let covered = pass(&w, &lock, &s).await;
        assert!(
            matches!(&covered, PassOutcome::Covered { by, .. } if *by == manifest.id),
            "{covered:?}"
        );
        // One second before the slot: still covered; at the slot: runs.
        clock.advance(chrono::Duration::seconds(3599));
        assert!(matches!(
            pass(&w, &lock, &s).await,
            PassOutcome::Covered { .. }
        ));
        clock.advance(chrono::Duration::seconds(1));
        let ran = pass(&w, &lock, &s).await;
        let PassOutcome::Ran {
            slot,
            manifest: newer,
            pruned,
        } = &ran
        else {
            panic!("{ran:?}")
        };
        assert_eq!(slot.to_rfc3339(), "2026-12-05T03:00:00+00:00");
        // Both backups started on Dec 5: the daily rule keeps the newer.
        assert_eq!(pruned, &vec![manifest.id.clone()]);
        assert!(matches!(
            pass(&w, &lock, &s).await,
            PassOutcome::Covered { by, .. } if by == newer.id
        ));
        let listed = w.backups.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, newer.id);
    }

    /// With the lock held elsewhere the pass does nothing, not even prune;
    /// while one pass holds the in-process lock, another is Busy.
    #[tokio::test]
    async fn a_held_lock_makes_the_pass_busy() {
        let (w, _clock) = at("2026-12-05T04:00:00Z");
        let s = Schedule::default();
        let lock = LocalSlotLock::new();
        assert_eq!(pass(&w, &Taken, &s).await, PassOutcome::Busy);
        assert!(w.backups.list().await.unwrap().is_empty());
        assert!(w.target.list(None).await.unwrap().is_empty());
        let guard = lock
            .try_acquire(echorelay::core::backup::schedule::LOCK_NAME)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(pass(&w, &lock, &s).await, PassOutcome::Busy);
        guard.release().await;
        assert!(matches!(pass(&w, &lock, &s).await, PassOutcome::Ran { .. }));
    }

    /// Each pass prunes by the schedule's retention, covered or not: ten
    /// daily backups cut to the three newest days.
    #[tokio::test]
    async fn each_pass_prunes_by_its_retention() {
        let (w, clock) = at("2026-11-20T03:00:00Z");
        let lock = LocalSlotLock::new();
        let s = Schedule {
            retention: Retention {
                daily: 3,
                weekly: 0,
                monthly: 0,
            },
            ..Schedule::default()
        };
        let keep_all = Schedule {
            retention: Retention {
                daily: 100,
                weekly: 0,
                monthly: 0,
            },
            ..Schedule::default()
        };
        for _ in 0..10 {
            assert!(matches!(
                pass(&w, &lock, &keep_all).await,
                PassOutcome::Ran { .. }
            ));
            clock.advance(chrono::Duration::days(1));
        }
        assert_eq!(w.backups.list().await.unwrap().len(), 10);
        // Nov 30 03:00: uncovered; it backs up, then keeps 3 days.
        let PassOutcome::Ran { pruned, .. } = pass(&w, &lock, &s).await else {
            panic!("the slot runs")
        };
        assert_eq!(pruned.len(), 8);
        let left: Vec<String> = w
            .backups
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.id[..8].to_owned())
            .collect();
        assert_eq!(left, ["20261128", "20261129", "20261130"]);
    }

    /// A failed backup leaves the slot uncovered: the next pass runs it.
    #[tokio::test]
    async fn a_failed_pass_leaves_the_slot_to_the_next() {
        let (w, _clock) = at("2026-12-05T04:00:00Z");
        let s = Schedule::default();
        let lock = LocalSlotLock::new();
        let failing = Bytesource {
            name: "snapshot",
            data: vec![7; 300_000],
            fail_after: Some(1),
        };
        let err = w
            .backups
            .scheduled_pass(&lock, &s, &w.recipients, &[&failing], vec![])
            .await;
        assert!(matches!(err, Err(BackupError::Source(_))), "{err:?}");
        assert!(w.backups.list().await.unwrap().is_empty());
        assert!(matches!(pass(&w, &lock, &s).await, PassOutcome::Ran { .. }));
    }
}

/// On Postgres the handle's backup lock is the database's advisory lock:
/// a second handle on the same database (another pool and schema, as
/// another process would have) cannot take it until the first releases
/// it, nor can the first take it twice.
#[cfg(feature = "pg")]
#[tokio::test]
async fn the_postgres_backup_lock_is_shared_by_every_handle_on_the_database() {
    use echorelay::core::backup::schedule::LOCK_NAME;
    let Some(db) = echorelay::pg::test_database().await else {
        return;
    };
    let relay = |store| {
        EchoRelay::builder()
            .store(store)
            .keyring(Keyring::new(SecretKey::generate()))
            .build()
            .unwrap()
    };
    let a = relay(db.fresh_store().await.unwrap());
    let b = relay(db.fresh_store().await.unwrap());
    let held = a
        .backup_lock()
        .try_acquire(LOCK_NAME)
        .await
        .unwrap()
        .unwrap();
    assert!(
        b.backup_lock()
            .try_acquire(LOCK_NAME)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        a.backup_lock()
            .try_acquire(LOCK_NAME)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        b.backup_lock()
            .try_acquire("another duty")
            .await
            .unwrap()
            .is_some()
    );
    held.release().await;
    let again = b.backup_lock().try_acquire(LOCK_NAME).await.unwrap();
    assert!(again.is_some());
    // Dropped without release: freed when its connection closes.
    drop(again);
    let mut freed = None;
    for _ in 0..50 {
        freed = a.backup_lock().try_acquire(LOCK_NAME).await.unwrap();
        if freed.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(freed.is_some(), "a dropped guard frees the lock");
}
