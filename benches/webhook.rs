//! Criterion benchmarks of Standard Webhooks signing (issue 19, item 7:
//! "signing a 1 KiB payload ≤ 2 µs median"), side by side in the same run
//! with their ceiling:
//!
//! - `webhook/sign_1k`: `webhook::sign` of a 1 KiB body (HMAC-SHA256 of
//!   `id.timestamp.body`, then `v1,` + base64), what the worker does per
//!   delivery;
//! - `webhook/hmac_1k_ceiling`: the bare HMAC-SHA256 of the same bytes
//!   with the `hmac` and `sha2` crates, no formatting: the floor any
//!   signer pays;
//! - `webhook/verify_1k`: `Verifier::verify` of the same message (a
//!   receiver's cost: parse the headers, one MAC, a constant-time compare).
//!
//! Run: `cargo bench --bench webhook`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use echorelay::core::webhook::{self, SigningSecret, Verifier};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

fn bench_signing(c: &mut Criterion) {
    let text = echorelay::core::config::generate_signing_secret();
    let secret = SigningSecret::parse(text.expose_secret()).unwrap();
    let key_bytes = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&text.expose_secret()["whsec_".len()..])
            .unwrap()
    };
    let body = vec![b'x'; 1024];
    let id = "msg_2b1c3d4e5f60718293a4b5c6d7e8f901";
    let ts: i64 = 1_767_225_600;
    let mut g = c.benchmark_group("webhook");
    g.bench_function("sign_1k", |b| {
        b.iter(|| webhook::sign(black_box(&secret), black_box(id), ts, black_box(&body)).unwrap())
    });
    g.bench_function("hmac_1k_ceiling", |b| {
        b.iter(|| {
            let mut m = Hmac::<Sha256>::new_from_slice(black_box(&key_bytes)).unwrap();
            m.update(black_box(id).as_bytes());
            m.update(b".");
            m.update(b"1767225600");
            m.update(b".");
            m.update(black_box(&body));
            m.finalize().into_bytes()
        })
    });
    let header = webhook::sign(&secret, id, ts, &body).unwrap();
    let verifier = Verifier::new([SigningSecret::parse(text.expose_secret()).unwrap()]).unwrap();
    let now = chrono::DateTime::from_timestamp(ts, 0).unwrap();
    g.bench_function("verify_1k", |b| {
        b.iter(|| {
            verifier
                .verify(
                    black_box(id),
                    "1767225600",
                    black_box(&header),
                    black_box(&body),
                    now,
                )
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_signing);
criterion_main!(benches);
