//! What the suite does not cover: options and URLs, the key prefix, the
//! mapping of failures to typed errors without secrets in them, and what a
//! directory target leaves on disk. The S3 tests run against
//! `ECHORELAY_S3_URL` and skip like the suite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use echorelay_core::backup::{BackupError, BackupTarget, ObjectPath};
use echorelay_store_s3::{S3Options, S3Target, test_s3};

fn path(s: &str) -> ObjectPath {
    ObjectPath::new(s).unwrap()
}

fn config_error(r: Result<S3Target, BackupError>) -> String {
    match r {
        Err(BackupError::Config(m)) => m,
        other => panic!("expected a Config error, got {other:?}"),
    }
}

/// A new empty directory under the system's temporary one.
fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!(
        "echorelay-adapter-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn file_url(dir: &Path) -> String {
    url::Url::from_directory_path(dir).unwrap().to_string()
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn options_are_checked_and_the_bound_is_stated() {
    let m = config_error(S3Target::open(
        S3Options::new("s3://bucket/p").part_size(5 * 1024 * 1024 - 1),
    ));
    assert!(m.contains("at least 5242880"), "{m}");
    for n in [0, 65] {
        let m = config_error(S3Target::open(
            S3Options::new("s3://bucket/p").parts_in_flight(n),
        ));
        assert!(m.contains("parts in flight"), "{m}");
    }
    let m = config_error(S3Target::open(S3Options::new("file:///tmp").part_size(0)));
    assert!(m.contains("part size"), "{m}");
    let m = config_error(S3Target::from_url(
        "file:///nonexistent/echorelay-backups-here",
    ));
    assert!(
        m.contains("/nonexistent/echorelay-backups-here is not an existing directory"),
        "{m}"
    );

    let o = S3Options::new("s3://bucket/p")
        .part_size(8 * 1024 * 1024)
        .parts_in_flight(3)
        .endpoint("http://127.0.0.1:9");
    assert_eq!(o.buffer_bound(), 32 * 1024 * 1024);
    let t = S3Target::open(o).unwrap();
    assert_eq!(t.buffer_bound(), 32 * 1024 * 1024);
    assert_eq!(t.part_size(), 8 * 1024 * 1024);
    assert_eq!(t.parts_in_flight(), 3);
    let d = S3Target::open(S3Options::new("s3://bucket").endpoint("http://127.0.0.1:9")).unwrap();
    assert_eq!(
        d.buffer_bound(),
        echorelay_store_s3::DEFAULT_PART_SIZE * (echorelay_store_s3::DEFAULT_PARTS_IN_FLIGHT + 1),
        "the default bound"
    );
    assert_eq!(d.buffer_bound(), 48 * 1024 * 1024);

    let dir = temp_dir("bound");
    let fs = S3Target::open(S3Options::new(file_url(&dir)).part_size(1000)).unwrap();
    assert_eq!(fs.buffer_bound(), 3000, "1000-byte parts, 2 in flight");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn descriptions_and_debug_hold_no_secret() {
    let o = S3Options::new("s3://bucket/some/prefix")
        .endpoint("http://AKIDEXAMPLE:hunter2@127.0.0.1:9/?X-Amz-Security-Token=tok3n");
    let shown = format!("{o:?}");
    let t = S3Target::open(o).unwrap();
    let described = t.describe();
    assert_eq!(described, "s3://bucket/some/prefix at http://127.0.0.1:9/");
    for text in [shown, described, format!("{t:?}")] {
        for secret in ["AKIDEXAMPLE", "hunter2", "tok3n", "Security-Token"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    let dir = temp_dir("describe");
    let fs = S3Target::from_url(&file_url(&dir)).unwrap();
    assert_eq!(fs.describe(), format!("file://{}", dir.display()));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_target_leaves_no_staging_files_and_no_empty_directories() {
    let dir = temp_dir("staging");
    let t = S3Target::open(S3Options::new(file_url(&dir)).part_size(1000)).unwrap();
    let data = Bytes::from(vec![7u8; 3500]);

    let mut w = t.upload(&path("a/b/aborted")).await.unwrap();
    w.write(data.clone()).await.unwrap();
    assert_eq!(files(&dir).len(), 1, "a staging file while the upload runs");
    assert!(
        files(&dir)[0].starts_with("a/b/aborted#"),
        "{:?}",
        files(&dir)
    );
    assert!(
        t.list(None).await.unwrap().is_empty(),
        "staging files are not listed"
    );
    w.abort().await.unwrap();
    assert!(files(&dir).is_empty(), "after abort: {:?}", files(&dir));

    let mut w = t.upload(&path("a/b/dropped")).await.unwrap();
    w.write(data.clone()).await.unwrap();
    drop(w);
    let mut left = files(&dir);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = files(&dir);
    }
    assert!(left.is_empty(), "after a drop: {left:?}");

    let mut w = t.upload(&path("a/b/kept")).await.unwrap();
    w.write(data.clone()).await.unwrap();
    assert_eq!(w.finish().await.unwrap(), 3500);
    t.create(&path("a/c"), Bytes::from_static(b"m"))
        .await
        .unwrap();
    assert_eq!(files(&dir), ["a/b/kept", "a/c"]);
    t.delete(&path("a/b/kept")).await.unwrap();
    assert!(!dir.join("a/b").exists(), "an emptied directory stays");
    assert!(
        dir.join("a").exists(),
        "a directory that still holds a file went"
    );
    t.delete(&path("a/c")).await.unwrap();
    assert!(dir.exists(), "the target's own directory went");
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_directory_target_sees_only_its_own_objects() {
    let dir = temp_dir("nested");
    std::fs::create_dir_all(dir.join("inner")).unwrap();
    std::fs::create_dir_all(dir.join("innerx")).unwrap();
    let outer = S3Target::from_url(&file_url(&dir)).unwrap();
    let inner = S3Target::from_url(&file_url(&dir.join("inner"))).unwrap();
    inner
        .create(&path("x/y"), Bytes::from_static(b"1"))
        .await
        .unwrap();
    outer
        .create(&path("innerx/z"), Bytes::from_static(b"22"))
        .await
        .unwrap();
    let listed: Vec<_> = outer
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.path.to_string(), m.size))
        .collect();
    assert_eq!(
        listed,
        [("inner/x/y".to_owned(), 1), ("innerx/z".to_owned(), 2)]
    );
    let listed: Vec<_> = inner
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.path.to_string())
        .collect();
    assert_eq!(listed, ["x/y"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_path_is_the_key_prefix() {
    let Some(s3) = test_s3().await else { return };
    let outer = s3.fresh_target().unwrap();
    let prefix = outer
        .describe()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let inner =
        S3Target::open(S3Options::new(format!("{prefix}/inner")).part_size(5 * 1024 * 1024))
            .unwrap();
    let sibling =
        S3Target::open(S3Options::new(format!("{prefix}/innerx")).part_size(5 * 1024 * 1024))
            .unwrap();
    inner
        .create(&path("x/y"), Bytes::from_static(b"1"))
        .await
        .unwrap();
    sibling
        .create(&path("z"), Bytes::from_static(b"22"))
        .await
        .unwrap();
    let listed: Vec<_> = outer
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.path.to_string(), m.size))
        .collect();
    assert_eq!(
        listed,
        [("inner/x/y".to_owned(), 1), ("innerx/z".to_owned(), 2)]
    );
    let listed: Vec<_> = inner
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.path.to_string())
        .collect();
    assert_eq!(listed, ["x/y"], "a sibling prefix leaked into the listing");
    assert_eq!(
        echorelay_core::backup::read_all(&inner, &path("x/y"), 10)
            .await
            .unwrap(),
        b"1"
    );
    for p in ["inner/x/y", "innerx/z"] {
        outer.delete(&path(p)).await.unwrap();
    }
    assert!(outer.list(None).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_an_access_error() {
    let Some(s3) = test_s3().await else { return };
    // The test server's endpoint and keys (from the environment), another
    // bucket.
    let url = format!("s3://echorelay-missing-{}", std::process::id());
    assert!(s3.url().starts_with("s3://"), "{}", s3.url());
    let t = S3Target::open(S3Options::new(&url).retry(0, Duration::from_secs(5))).unwrap();
    let p = path("backups/x");
    let access = |r: Result<(), BackupError>, what: &str| match r {
        Err(BackupError::Access(m)) => {
            assert!(m.contains("echorelay-missing-"), "{what}: {m}");
            assert!(m.contains("does not exist"), "{what}: {m}");
        }
        other => panic!("{what}: expected Access, got {other:?}"),
    };
    access(t.create(&p, Bytes::from_static(b"x")).await, "create");
    access(t.upload(&p).await.map(|_| ()), "upload");
    // object_store reports a failed listing as a generic error, whatever
    // the status: Unavailable, with the server's own words kept.
    match t.list(None).await {
        Err(BackupError::Unavailable(m)) => assert!(m.contains("NoSuchBucket"), "{m}"),
        other => panic!("list: expected Unavailable, got {other:?}"),
    }
    // A read cannot tell a missing bucket from a missing object.
    assert!(matches!(t.get(&p).await, Err(BackupError::NotFound(q)) if q == p));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_unavailable_and_says_no_secret() {
    // Needs the test server's keys in the environment (so that no other
    // credential source is tried); the endpoint itself is a closed port.
    if test_s3().await.is_none() {
        return;
    }
    let t = S3Target::open(
        S3Options::new("s3://echorelay-test/p")
            .endpoint("http://AKIDEXAMPLE:hunter2@127.0.0.1:1/?X-Amz-Security-Token=tok3n")
            .allow_http(true)
            .retry(0, Duration::from_secs(2)),
    )
    .unwrap();
    let p = path("backups/x");
    let errors = [
        t.list(None).await.map(|_| ()).unwrap_err(),
        t.create(&p, Bytes::from_static(b"x")).await.unwrap_err(),
        t.get(&p).await.map(|_| ()).unwrap_err(),
        t.delete(&p).await.unwrap_err(),
    ];
    for e in errors {
        let text = e.to_string();
        eprintln!("{text}");
        assert!(matches!(e, BackupError::Unavailable(_)), "{text}");
        assert!(text.contains("127.0.0.1:1"), "says where: {text}");
        for secret in ["AKIDEXAMPLE", "hunter2", "tok3n", "Security-Token", "?"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}

/// The suite's sizes come from the bound (a whole number of parts); these
/// are one part's edges: `part_size − 1`, `part_size`, `part_size + 1`.
async fn round_trip_at_one_part(t: &S3Target) {
    use echorelay_testkit::backup::{assert_same_bytes, chunks, random_bytes};
    let part = t.part_size();
    for n in [part - 1, part, part + 1] {
        let p = path(&format!("part-edges/{n}"));
        let data = random_bytes(n);
        let mut w = t.upload(&p).await.unwrap();
        for c in chunks(&data, t.buffer_bound()) {
            w.write(c).await.unwrap();
        }
        assert_eq!(w.finish().await.unwrap(), n as u64);
        let got = echorelay_core::backup::read_all(t, &p, n).await.unwrap();
        assert_same_bytes(&got, &data, &format!("an object of {n} bytes"));
        t.delete(&p).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_at_one_parts_edges() {
    let fs = echorelay_store_s3::fresh_fs_target().unwrap();
    round_trip_at_one_part(&fs).await;
    if let Some(s3) = test_s3().await {
        round_trip_at_one_part(&s3.fresh_target().unwrap()).await;
    }
}
