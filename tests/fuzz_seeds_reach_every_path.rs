//! The fuzz targets' seed corpora (fuzz/corpus, made by
//! scripts/fuzz_seeds.py) reach every path the targets check: valid keys
//! that pass `parse_key` (the accept path the fuzzer never found on its
//! own), a seed for each rejection, ciphertexts that decode on both the
//! binary and the text path, and lease tokens that parse (and display as
//! their input) next to near-misses that do not. A seed set that stops doing so fails here,
//! not silently in a fuzz run.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;

use echorelay::core::keys::{KeyFormatError, parse_key};
use echorelay::core::queue::LeaseToken;
use echorelay::core::vault::Ciphertext;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
        })
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn key_seeds_reach_accept_and_every_rejection() {
    let mut accepted = 0;
    let mut rejections = HashSet::new();
    for (name, bytes) in seeds("key_parse") {
        let Ok(s) = std::str::from_utf8(&bytes) else {
            continue;
        };
        match parse_key(s) {
            Ok(_) => {
                assert!(name.starts_with("seed-valid"), "{name} parsed");
                accepted += 1;
            }
            Err(e) => {
                assert!(!name.starts_with("seed-valid"), "{name}: {e}");
                rejections.insert(std::mem::discriminant(&e));
            }
        }
    }
    assert!(accepted >= 20, "only {accepted} valid key seeds");
    for e in [
        KeyFormatError::WrongPrefix,
        KeyFormatError::WrongLength(0),
        KeyFormatError::BadCharacter(0),
        KeyFormatError::BadChecksum,
    ] {
        assert!(
            rejections.contains(&std::mem::discriminant(&e)),
            "no seed is rejected as {e:?}"
        );
    }
}

#[test]
fn ciphertext_seeds_decode_on_both_paths() {
    let (mut binary, mut text, mut refused) = (0, 0, 0);
    for (_, bytes) in seeds("ciphertext_decode") {
        let b = Ciphertext::from_bytes(&bytes).is_ok();
        let t = std::str::from_utf8(&bytes)
            .ok()
            .is_some_and(|s| Ciphertext::from_text(s).is_ok());
        binary += usize::from(b);
        text += usize::from(t);
        refused += usize::from(!b && !t);
    }
    assert!(
        binary >= 4 && text >= 4 && refused >= 10,
        "{binary} {text} {refused}"
    );
}

#[test]
fn lease_token_seeds_reach_accept_and_refusal() {
    let (mut accepted, mut refused) = (0, 0);
    for (name, bytes) in seeds("lease_token") {
        let Ok(s) = std::str::from_utf8(&bytes) else {
            assert_eq!(name, "seed-not-utf8");
            continue;
        };
        match s.parse::<LeaseToken>() {
            Ok(token) => {
                assert!(name.starts_with("seed-valid"), "{name} parsed");
                assert_eq!(token.to_string(), s, "{name} re-displays differently");
                accepted += 1;
            }
            Err(_) => {
                assert!(!name.starts_with("seed-valid"), "{name} was refused");
                refused += 1;
            }
        }
    }
    assert!(accepted >= 13 && refused >= 22, "{accepted} {refused}");
}
