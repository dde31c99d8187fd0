//! The backup target suite: checks of the contract in
//! [`echorelay_core::backup::target`]'s module docs, run by every backup
//! target through [`backup_target_tests!`](crate::backup_target_tests!).
//!
//! Each check takes a [`BackupHarness`]: the target under test, fresh and
//! empty (a backend on a shared bucket gives each check a random prefix of
//! its own). [`run`] runs a check on its own task and then deletes every
//! object of the target through the port, whether the check passed or
//! not, so a shared bucket is left clean.
//!
//! Sizes come from the target's own [`BackupTarget::buffer_bound`] `B`
//! ([`sizes`]): 0, 1, `B − 1`, `B`, `B + 1` and `2.5 B + 7`. The bound of
//! every target here is a whole number of parts, so `B ± 1` straddle a
//! part boundary and `2.5 B` spans several parts. Objects are written in
//! chunks of varied sizes, from 1 byte to more than `B` ([`chunks`]), and
//! hold random bytes.
//!
//! Differences between servers are a parameter, [`CreateRaces`], never a
//! skipped check: a test server whose conditional create is not atomic
//! (moto) runs the race check with weaker assertions and a report.
//!
//! The race check ([`racing_creates_have_one_winner`]) releases
//! [`RACERS`] creates of one path together from a barrier
//! ([`crate::race`]), after a round of concurrent listings that opens the
//! connections they need, in [`RACE_ROUNDS`] rounds. That it catches a
//! target whose create checks, yields, then writes is itself tested
//! (`echorelay-store-mem/tests/racy_backup_is_caught.rs`, against
//! `MemBackupTarget::racy`).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use echorelay_core::backup::{BackupError, BackupTarget, ObjectMeta, ObjectPath};
use rand::RngCore;

/// Callers of the race check.
pub const RACERS: usize = 8;
/// Rounds of the race check, each on a path of its own.
pub const RACE_ROUNDS: usize = 5;

/// What the server behind a target does with racing creates of one path:
/// a parameter of the suite, for test servers that break the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateRaces {
    /// Exactly one create wins: the contract. Every target in memory or on
    /// a filesystem, and Amazon S3 (`If-None-Match: *` is decided
    /// atomically there).
    OneWins,
    /// The server honours a conditional create but checks and writes
    /// without a lock (moto: `If-None-Match: *` is looked up, then the
    /// object is written), so racing creates may all see no object and
    /// more than one win. The race check then still asserts that at least
    /// one wins, every loser is `AlreadyExists` and the object is one
    /// winner's, and prints how many rounds had more than one winner. Only
    /// for a test server known to be racy; never for a target that is
    /// meant to keep the contract.
    ServerIsRacy,
}

/// A backup target under test.
#[derive(Clone)]
pub struct BackupHarness {
    /// The target, fresh and empty when the check starts.
    pub target: Arc<dyn BackupTarget>,
    /// What racing creates may do (see [`CreateRaces`]).
    pub create_races: CreateRaces,
}

impl BackupHarness {
    /// Wraps `target`, which keeps the contract ([`CreateRaces::OneWins`]).
    pub fn new(target: impl BackupTarget + 'static) -> Self {
        Self {
            target: Arc::new(target),
            create_races: CreateRaces::OneWins,
        }
    }

    /// The same target, with racing creates allowed to do what `races`
    /// says.
    pub fn with_create_races(mut self, races: CreateRaces) -> Self {
        self.create_races = races;
        self
    }

    /// The target's [`BackupTarget::buffer_bound`].
    pub fn bound(&self) -> usize {
        self.target.buffer_bound()
    }

    /// Uploads `data` through [`BackupTarget::upload`] in [`chunks`] and
    /// finishes; checks the size `finish` returns.
    pub async fn upload(&self, path: &ObjectPath, data: &Bytes) {
        let mut w = self.target.upload(path).await.expect("backup: upload");
        for chunk in chunks(data, self.bound()) {
            w.write(chunk).await.expect("backup: write");
        }
        let size = w.finish().await.expect("backup: finish");
        assert_eq!(
            size,
            data.len() as u64,
            "backup: finish returned another size than was written to {path}"
        );
    }

    /// The whole object at `path`.
    pub async fn read(&self, path: &ObjectPath) -> Vec<u8> {
        self.try_read(path)
            .await
            .unwrap_or_else(|e| panic!("backup: reading {path} failed: {e}"))
    }

    /// The whole object at `path`, or the port's error.
    pub async fn try_read(&self, path: &ObjectPath) -> Result<Vec<u8>, BackupError> {
        let mut r = self.target.get(path).await?;
        let mut out = Vec::new();
        while let Some(chunk) = r.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// The listing under `prefix` (everything when `None`).
    pub async fn list(&self, prefix: Option<&ObjectPath>) -> Vec<ObjectMeta> {
        self.target.list(prefix).await.expect("backup: list")
    }

    /// The paths listed under `prefix`.
    pub async fn paths(&self, prefix: Option<&ObjectPath>) -> Vec<String> {
        self.list(prefix)
            .await
            .into_iter()
            .map(|m| m.path.as_str().to_owned())
            .collect()
    }

    /// Asserts that nothing is at `path`: `get` is `NotFound` (naming the
    /// path) and no listing shows it.
    pub async fn assert_absent(&self, path: &ObjectPath, when: &str) {
        match self.target.get(path).await {
            Err(BackupError::NotFound(p)) => {
                assert_eq!(&p, path, "backup: NotFound named another path")
            }
            Err(e) => panic!("backup: get {path} {when}: expected NotFound, got {e}"),
            Ok(_) => panic!("backup: an object is at {path} {when}"),
        }
        let all = self.paths(None).await;
        assert!(
            !all.iter().any(|p| p == path.as_str()),
            "backup: {path} is listed {when}: {all:?}"
        );
    }

    /// Opens the target's connections before a race: `callers`
    /// concurrent listings released from a barrier.
    pub async fn warm_up(&self, callers: usize) {
        let calls: Vec<_> = (0..callers)
            .map(|_| {
                let t = self.target.clone();
                async move {
                    t.list(None).await.expect("backup: the warm-up failed");
                }
            })
            .collect();
        crate::race(calls).await;
    }

    /// Deletes every object of the target (best effort).
    pub async fn clean_up(&self) {
        if let Ok(all) = self.target.list(None).await {
            for meta in all {
                let _ = self.target.delete(&meta.path).await;
            }
        }
    }
}

/// What [`run`] and [`backup_target_tests!`](crate::backup_target_tests!)
/// take: a target (which keeps the contract) or a [`BackupHarness`] (a
/// target with its [`CreateRaces`] parameter).
pub trait IntoHarness {
    /// The harness.
    fn into_harness(self) -> BackupHarness;
}

impl<T: BackupTarget + 'static> IntoHarness for T {
    fn into_harness(self) -> BackupHarness {
        BackupHarness::new(self)
    }
}

impl IntoHarness for BackupHarness {
    fn into_harness(self) -> BackupHarness {
        self
    }
}

/// Runs `check` on `target` on a task of its own, then deletes every
/// object of the target; a panic of the check is raised again after the
/// cleanup.
pub async fn run<F, Fut>(target: impl IntoHarness, check: F)
where
    F: FnOnce(BackupHarness) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let h = target.into_harness();
    let outcome = tokio::spawn(check(h.clone())).await;
    h.clean_up().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A path of the suite.
pub fn path(s: &str) -> ObjectPath {
    ObjectPath::new(s).expect("a valid path")
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Bytes {
    let mut v = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut v);
    v.into()
}

/// The object sizes checked for a target whose bound is `bound`: 0, 1,
/// `bound − 1`, `bound`, `bound + 1` and `2.5 × bound + 7` (several parts).
pub fn sizes(bound: usize) -> Vec<usize> {
    let mut s = vec![
        0,
        1,
        bound.saturating_sub(1),
        bound,
        bound + 1,
        2 * bound + bound / 2 + 7,
    ];
    s.dedup();
    s
}

/// `data` cut into chunks of varied sizes: 1, 7, 4096 and 65,537 bytes,
/// half the bound plus 3, and the bound plus 5, over and over (zero-copy
/// slices).
pub fn chunks(data: &Bytes, bound: usize) -> Vec<Bytes> {
    let cycle = [1, 7, 4096, 65_537, bound / 2 + 3, bound + 5];
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let n = cycle[i % cycle.len()].min(data.len() - at).max(1);
        out.push(data.slice(at..at + n));
        at += n;
        i += 1;
    }
    out
}

/// Asserts that `got` is `want` byte for byte, naming the first difference
/// (never printing the objects).
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "backup: {what}: read back {} bytes, wrote {}; first difference at byte {first}",
        got.len(),
        want.len()
    );
}

fn expect_already_exists(r: Result<(), BackupError>, path: &ObjectPath, what: &str) {
    match r {
        Err(BackupError::AlreadyExists(p)) => {
            assert_eq!(&p, path, "backup: AlreadyExists named another path")
        }
        Err(e) => panic!("backup: {what}: expected AlreadyExists, got {e}"),
        Ok(()) => panic!("backup: {what}: a create over an existing object succeeded"),
    }
}

/// `create` stores an object only where none is: a second create of the
/// path is `AlreadyExists` and leaves the first content, also over an
/// object made by an upload; an empty object can be created.
pub async fn create_stores_once_and_keeps_the_first(h: BackupHarness) {
    let p = path("c/manifest");
    let first = random_bytes(1000);
    h.target
        .create(&p, first.clone())
        .await
        .expect("backup: create");
    assert_same_bytes(&h.read(&p).await, &first, "a created object");
    let again = h.target.create(&p, random_bytes(1000)).await;
    expect_already_exists(again, &p, "a second create");
    let shorter = h.target.create(&p, Bytes::from_static(b"x")).await;
    expect_already_exists(shorter, &p, "a third create");
    assert_same_bytes(
        &h.read(&p).await,
        &first,
        "the object after refused creates",
    );

    let q = path("c/uploaded");
    let uploaded = random_bytes(h.bound() + 1);
    h.upload(&q, &uploaded).await;
    let over = h.target.create(&q, random_bytes(10)).await;
    expect_already_exists(over, &q, "a create over an uploaded object");
    assert_same_bytes(&h.read(&q).await, &uploaded, "the uploaded object");

    let e = path("c/empty");
    h.target
        .create(&e, Bytes::new())
        .await
        .expect("backup: create an empty object");
    assert!(
        h.read(&e).await.is_empty(),
        "backup: the empty object has bytes"
    );
    let listed = h.list(Some(&path("c"))).await;
    let sizes: Vec<(&str, u64)> = listed.iter().map(|m| (m.path.as_str(), m.size)).collect();
    assert_eq!(
        sizes,
        [
            ("c/empty", 0),
            ("c/manifest", 1000),
            ("c/uploaded", uploaded.len() as u64)
        ],
        "backup: the listing after creates"
    );
}

/// [`RACERS`] creates of one path released together: exactly one is `Ok`,
/// every other is `AlreadyExists`, and the object is the winner's, in each
/// of [`RACE_ROUNDS`] rounds. (With [`CreateRaces::ServerIsRacy`]: at
/// least one is `Ok`, the others `AlreadyExists`, the object is one
/// winner's, and the rounds with more than one winner are reported.)
pub async fn racing_creates_have_one_winner(h: BackupHarness) {
    let mut shared_wins = 0;
    for round in 0..RACE_ROUNDS {
        let p = path(&format!("race/{round}/manifest"));
        let contents: Vec<Bytes> = (0..RACERS).map(|_| random_bytes(512)).collect();
        let calls: Vec<_> = contents
            .iter()
            .map(|c| {
                let (t, p, c) = (h.target.clone(), p.clone(), c.clone());
                async move { t.create(&p, c).await }
            })
            .collect();
        h.warm_up(RACERS).await;
        let results = crate::race(calls).await;
        let winners: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_ok())
            .map(|(i, _)| i)
            .collect();
        match h.create_races {
            CreateRaces::OneWins => assert_eq!(
                winners.len(),
                1,
                "backup: {RACERS} racing creates of {p} (round {round}): {} succeeded",
                winners.len()
            ),
            CreateRaces::ServerIsRacy => assert!(
                !winners.is_empty(),
                "backup: {RACERS} racing creates of {p} (round {round}): none succeeded"
            ),
        }
        if winners.len() > 1 {
            shared_wins += 1;
        }
        for (i, r) in results.into_iter().enumerate() {
            if !winners.contains(&i) {
                expect_already_exists(r, &p, "a racing create that lost");
            }
        }
        let stored = h.read(&p).await;
        assert!(
            winners.iter().any(|&w| stored[..] == contents[w][..]),
            "backup: the object after a race of {p} is no winner's"
        );
    }
    if h.create_races == CreateRaces::ServerIsRacy {
        eprintln!(
            "backup: {} (CreateRaces::ServerIsRacy): {shared_wins} of {RACE_ROUNDS} rounds of \
             {RACERS} racing creates had more than one winner",
            h.target.describe(),
        );
    }
}

/// An upload is invisible until `finish`: before it, with several parts
/// written, `get` is `NotFound` and no listing shows the path; after it,
/// the object is listed with its size and reads back.
pub async fn uploads_are_invisible_until_finished(h: BackupHarness) {
    let p = path("u/data");
    let data = random_bytes(2 * h.bound() + 1);
    let mut w = h.target.upload(&p).await.expect("backup: upload");
    for chunk in chunks(&data, h.bound()) {
        w.write(chunk).await.expect("backup: write");
    }
    h.assert_absent(&p, "before finish").await;
    assert!(
        h.list(Some(&path("u"))).await.is_empty(),
        "backup: an unfinished upload is listed"
    );
    let size = w.finish().await.expect("backup: finish");
    assert_eq!(size, data.len() as u64, "backup: the size finish returned");
    let listed = h.list(Some(&path("u"))).await;
    assert_eq!(
        listed.len(),
        1,
        "backup: the finished upload is not listed once"
    );
    assert_eq!(listed[0].path, p);
    assert_eq!(listed[0].size, data.len() as u64, "backup: the listed size");
    assert_same_bytes(&h.read(&p).await, &data, "a finished upload");
}

/// An aborted upload and a dropped one leave nothing at their paths, with
/// or without parts written; the paths stay free for a create.
pub async fn aborted_and_dropped_uploads_leave_nothing(h: BackupHarness) {
    let data = random_bytes(h.bound() + 1);
    let aborted = path("a/aborted");
    let mut w = h.target.upload(&aborted).await.expect("backup: upload");
    for chunk in chunks(&data, h.bound()) {
        w.write(chunk).await.expect("backup: write");
    }
    w.abort().await.expect("backup: abort");
    h.assert_absent(&aborted, "after abort").await;

    let dropped = path("a/dropped");
    let mut w = h.target.upload(&dropped).await.expect("backup: upload");
    for chunk in chunks(&data, h.bound()) {
        w.write(chunk).await.expect("backup: write");
    }
    drop(w);
    h.assert_absent(&dropped, "after the writer was dropped")
        .await;

    let untouched = path("a/untouched");
    let w = h.target.upload(&untouched).await.expect("backup: upload");
    w.abort().await.expect("backup: abort an empty upload");
    h.assert_absent(&untouched, "after an empty upload was aborted")
        .await;

    for p in [&aborted, &dropped, &untouched] {
        h.target
            .create(p, Bytes::from_static(b"free"))
            .await
            .unwrap_or_else(|e| panic!("backup: create at {p} after its upload ended: {e}"));
    }
    // Still nothing from the dropped upload, after a pause for any
    // cleanup it started.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        h.read(&dropped).await,
        b"free",
        "backup: a dropped upload surfaced later"
    );
}

/// An upload to a path that holds an object replaces it, at `finish`:
/// until then the old object reads back; an aborted one changes nothing.
pub async fn an_upload_replaces_an_object_only_at_finish(h: BackupHarness) {
    let p = path("r/object");
    let old = random_bytes(1000);
    h.target
        .create(&p, old.clone())
        .await
        .expect("backup: create");

    let new = random_bytes(h.bound() + 1);
    let mut w = h.target.upload(&p).await.expect("backup: upload");
    for chunk in chunks(&new, h.bound()) {
        w.write(chunk).await.expect("backup: write");
    }
    w.abort().await.expect("backup: abort");
    assert_same_bytes(
        &h.read(&p).await,
        &old,
        "the object after an aborted replacement",
    );

    let mut w = h.target.upload(&p).await.expect("backup: upload");
    for chunk in chunks(&new, h.bound()) {
        w.write(chunk).await.expect("backup: write");
    }
    assert_same_bytes(
        &h.read(&p).await,
        &old,
        "the object before the replacement finished",
    );
    w.finish().await.expect("backup: finish");
    assert_same_bytes(&h.read(&p).await, &new, "the object after the replacement");
    let listed = h.list(Some(&path("r"))).await;
    assert_eq!(listed.len(), 1, "backup: a replaced object is listed once");
    assert_eq!(
        listed[0].size,
        new.len() as u64,
        "backup: the replaced size"
    );
}

/// Objects of every size in [`sizes`] read back byte for byte, and are
/// listed with their sizes; a created object too.
pub async fn objects_round_trip_byte_for_byte(h: BackupHarness) {
    let mut want = Vec::new();
    for (i, n) in sizes(h.bound()).into_iter().enumerate() {
        let p = path(&format!("s/{i:02}-{n}"));
        let data = random_bytes(n);
        h.upload(&p, &data).await;
        assert_same_bytes(&h.read(&p).await, &data, &format!("an object of {n} bytes"));
        want.push((p.as_str().to_owned(), n as u64));
    }
    let created = path("s/created");
    let data = random_bytes(70_001);
    h.target
        .create(&created, data.clone())
        .await
        .expect("backup: create");
    assert_same_bytes(&h.read(&created).await, &data, "a created object");
    want.push((created.as_str().to_owned(), 70_001));
    let got: Vec<(String, u64)> = h
        .list(Some(&path("s")))
        .await
        .into_iter()
        .map(|m| (m.path.as_str().to_owned(), m.size))
        .collect();
    assert_eq!(got, want, "backup: the listing of round-tripped objects");
}

/// `get` of a path where nothing is, was never, or was deleted is
/// `NotFound` naming that path; listing a prefix with nothing under it is
/// empty.
pub async fn missing_objects_are_not_found(h: BackupHarness) {
    h.assert_absent(&path("m/never"), "never written").await;
    let p = path("m/deleted");
    h.target
        .create(&p, Bytes::from_static(b"gone soon"))
        .await
        .expect("backup: create");
    h.target.delete(&p).await.expect("backup: delete");
    h.assert_absent(&p, "after delete").await;
    assert!(
        h.list(Some(&path("m"))).await.is_empty(),
        "backup: m is not empty"
    );
    assert!(
        h.list(Some(&path("nothing/here"))).await.is_empty(),
        "backup: a missing prefix lists something"
    );
}

/// `list` returns every object under a prefix, segment-wise (`l/a` holds
/// `l/a/b`, not `l/ab` nor `l/a-z`), the object at the prefix itself, with
/// sizes, sorted by path; `None` lists everything.
pub async fn list_is_sorted_segment_wise_with_sizes(h: BackupHarness) {
    let objects = [
        ("m/x", 2),
        ("l/b", 6),
        ("l/a/c/d", 0),
        ("l/ab", 5),
        ("l/a.z", 4),
        ("l/a/b", 3),
        ("l/a-z", 1),
    ];
    for (p, n) in objects {
        h.target
            .create(&path(p), random_bytes(n))
            .await
            .expect("backup: create");
    }
    let listed = |prefix: Option<&str>| {
        let h = h.clone();
        let prefix = prefix.map(path);
        async move {
            h.list(prefix.as_ref())
                .await
                .into_iter()
                .map(|m| (m.path.as_str().to_owned(), m.size))
                .collect::<Vec<_>>()
        }
    };
    let own = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(p, n)| (p.to_string(), *n)).collect()
    };
    assert_eq!(
        listed(Some("l/a")).await,
        own(&[("l/a/b", 3), ("l/a/c/d", 0)]),
        "backup: list l/a"
    );
    assert_eq!(
        listed(Some("l")).await,
        own(&[
            ("l/a-z", 1),
            ("l/a.z", 4),
            ("l/a/b", 3),
            ("l/a/c/d", 0),
            ("l/ab", 5),
            ("l/b", 6)
        ]),
        "backup: list l (sorted by path)"
    );
    assert_eq!(
        listed(None).await,
        own(&[
            ("l/a-z", 1),
            ("l/a.z", 4),
            ("l/a/b", 3),
            ("l/a/c/d", 0),
            ("l/ab", 5),
            ("l/b", 6),
            ("m/x", 2)
        ]),
        "backup: list everything"
    );
    assert_eq!(
        listed(Some("l/a/b")).await,
        own(&[("l/a/b", 3)]),
        "backup: list at an object's own path"
    );
    assert_eq!(
        listed(Some("l/a/c")).await,
        own(&[("l/a/c/d", 0)]),
        "backup: list l/a/c"
    );
}

/// `delete` removes the object and nothing else; deleting a missing
/// object is `Ok`, twice; the path can be created again.
pub async fn delete_is_idempotent(h: BackupHarness) {
    let a = path("d/a");
    let ab = path("d/ab");
    for p in [&a, &ab] {
        h.target
            .create(p, Bytes::from_static(b"data"))
            .await
            .expect("backup: create");
    }
    h.target.delete(&a).await.expect("backup: delete");
    h.assert_absent(&a, "after delete").await;
    assert_eq!(
        h.paths(None).await,
        ["d/ab"],
        "backup: delete took a neighbour"
    );
    h.target.delete(&a).await.expect("backup: delete it again");
    h.target
        .delete(&path("d/never"))
        .await
        .expect("backup: delete a path never written");
    h.target
        .create(&a, Bytes::from_static(b"again"))
        .await
        .expect("backup: create after delete");
    assert_eq!(h.read(&a).await, b"again");
}

/// [`BackupTarget::describe`] names the target without a URL query or
/// user info (where credentials would be).
pub async fn describe_names_the_target_without_secrets(h: BackupHarness) {
    let d = h.target.describe();
    assert!(!d.is_empty(), "backup: describe is empty");
    assert!(
        !d.contains('?') && !d.contains('@'),
        "backup: describe shows a query or user info: {d}"
    );
    assert!(h.bound() > 0, "backup: a buffer bound of 0");
}

/// Generates one `#[tokio::test]` per check of the backup target suite,
/// each on a fresh target made by `$fresh` (an expression producing a
/// future of the target), cleaned up afterwards through the port.
///
/// ```text
/// echorelay_testkit::backup_target_tests!(async { echorelay_store_mem::MemBackupTarget::new() });
/// ```
///
/// A target that needs a service passes `optional` and a future of
/// `Option<target>`; `None` skips the check (as
/// `echorelay-store-s3/tests/backup_conformance.rs` does). Two targets in
/// one test file go in modules of their own. The future may also yield a
/// [`BackupHarness`](crate::backup::BackupHarness) instead of a target, to
/// pass the suite's parameter ([`CreateRaces`](crate::backup::CreateRaces)).
#[macro_export]
macro_rules! backup_target_tests {
    (optional $fresh:expr) => {
        $crate::backup_target_tests!(@list optional $fresh);
    };
    ($fresh:expr) => {
        $crate::backup_target_tests!(@list required $fresh);
    };
    (@list $mode:ident $fresh:expr) => {
        $crate::backup_target_tests!(@each $mode $fresh;
            create_stores_once_and_keeps_the_first,
            racing_creates_have_one_winner,
            uploads_are_invisible_until_finished,
            aborted_and_dropped_uploads_leave_nothing,
            an_upload_replaces_an_object_only_at_finish,
            objects_round_trip_byte_for_byte,
            missing_objects_are_not_found,
            list_is_sorted_segment_wise_with_sizes,
            delete_is_idempotent,
            describe_names_the_target_without_secrets,
        );
    };
    (@each $mode:ident $fresh:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(target) = $crate::backup_target_tests!(@fresh $mode $fresh) else {
                    return;
                };
                $crate::backup::run(target, $crate::backup::$check).await;
            }
        )*
    };
    (@fresh required $fresh:expr) => {
        Some($fresh.await)
    };
    (@fresh optional $fresh:expr) => {
        $fresh.await
    };
}
