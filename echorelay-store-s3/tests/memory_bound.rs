//! The writer's memory bound, measured: 256 MiB uploaded in 1 MiB chunks
//! through a writer with the default options (16 MiB parts, 2 in flight:
//! `buffer_bound` = 48 MiB), to a directory and, when `ECHORELAY_S3_URL`
//! is set, to S3. A counting global allocator (its own test binary, one
//! test, so nothing else allocates meanwhile) records the process's peak
//! of live heap bytes from just after the upload starts to its finish;
//! that peak, less the live bytes at the start, must stay within
//! `buffer_bound + SLACK`. The slack is the test's own chunk (1 MiB, alive
//! while it is written) plus 2 MiB for the HTTP client's and the
//! runtime's buffers. The object is then read back and compared, chunk by
//! chunk, and deleted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use echorelay_core::backup::{BackupTarget, ObjectPath};
use echorelay_store_s3::{
    DEFAULT_PART_SIZE, DEFAULT_PARTS_IN_FLIGHT, S3Target, fresh_fs_target_with, test_s3,
};
use peak_alloc::PeakAlloc;
use rand::RngCore;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

const MIB: usize = 1024 * 1024;
/// The object's size.
const TOTAL: usize = 256 * MIB;
/// The size of each write.
const CHUNK: usize = MIB;
/// Allowed above the bound: the chunk being written, and 2 MiB for the
/// HTTP client's and the runtime's own buffers.
const SLACK: usize = CHUNK + 2 * MIB;

/// Chunk `i` of the object: `pattern` with `i` in its first 8 bytes.
fn chunk(pattern: &[u8], i: usize) -> Vec<u8> {
    let mut c = pattern.to_vec();
    c[..8].copy_from_slice(&(i as u64).to_le_bytes());
    c
}

/// Uploads the object to `target`; returns the peak of live heap bytes
/// above the start during the upload.
async fn upload_and_measure(target: &S3Target, pattern: &[u8]) -> usize {
    let path = ObjectPath::new("memory-bound/object").unwrap();
    // Warm up: open the connections and initialise what is lazy.
    let warm = ObjectPath::new("memory-bound/warm").unwrap();
    let mut w = target.upload(&warm).await.unwrap();
    w.write(Bytes::from_static(b"warm")).await.unwrap();
    w.finish().await.unwrap();
    target.delete(&warm).await.unwrap();

    let mut w = target.upload(&path).await.unwrap();
    HEAP.reset_peak_usage();
    let base = HEAP.current_usage();
    for i in 0..TOTAL / CHUNK {
        w.write(Bytes::from(chunk(pattern, i))).await.unwrap();
    }
    let size = w.finish().await.unwrap();
    let peak = HEAP.peak_usage().saturating_sub(base);
    assert_eq!(size, TOTAL as u64);
    peak
}

/// Reads the object back and compares it with what was written, without
/// holding more than a chunk; then deletes it.
async fn read_back_and_delete(target: &S3Target, pattern: &[u8]) {
    let path = ObjectPath::new("memory-bound/object").unwrap();
    let listed = target.list(None).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].size, TOTAL as u64);
    let mut r = target.get(&path).await.unwrap();
    let mut at = 0usize;
    let mut expected = (usize::MAX, Vec::new());
    while let Some(got) = r.next_chunk().await.unwrap() {
        let mut got = &got[..];
        while !got.is_empty() {
            let i = at / CHUNK;
            if expected.0 != i {
                expected = (i, chunk(pattern, i));
            }
            let within = at % CHUNK;
            let n = got.len().min(CHUNK - within);
            assert!(
                got[..n] == expected.1[within..within + n],
                "the object differs from what was written in bytes {at}..{}",
                at + n
            );
            at += n;
            got = &got[n..];
        }
    }
    assert_eq!(at, TOTAL, "the object read back is short");
    target.delete(&path).await.unwrap();
}

async fn check(name: &str, target: S3Target, pattern: &[u8]) {
    let bound = target.buffer_bound();
    assert_eq!(bound, 48 * MIB, "the default bound");
    let started = std::time::Instant::now();
    let peak = upload_and_measure(&target, pattern).await;
    let took = started.elapsed();
    eprintln!(
        "memory bound, {name}: uploaded {} MiB in {:.1} s; buffer_bound {} MiB, peak live heap \
         above the start {:.2} MiB (allowed: bound + {} MiB slack)",
        TOTAL / MIB,
        took.as_secs_f64(),
        bound / MIB,
        peak as f64 / MIB as f64,
        SLACK / MIB,
    );
    assert!(
        peak <= bound + SLACK,
        "{name}: the upload's peak heap, {peak} bytes, is above buffer_bound ({bound}) + {SLACK}"
    );
    read_back_and_delete(&target, pattern).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_holds_at_most_its_buffer_bound() {
    let mut pattern = vec![0u8; CHUNK];
    rand::rngs::OsRng.fill_bytes(&mut pattern);
    let defaults = |o: echorelay_store_s3::S3Options| {
        o.part_size(DEFAULT_PART_SIZE)
            .parts_in_flight(DEFAULT_PARTS_IN_FLIGHT)
    };

    let fs = fresh_fs_target_with(defaults).unwrap();
    check("directory", fs, &pattern).await;

    if let Some(s3) = test_s3().await {
        let target = s3.fresh_target_with(defaults).unwrap();
        check("S3", target, &pattern).await;
    }
}
