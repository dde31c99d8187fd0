//! S6 interop: hashes made by PHP's own `password_hash(PASSWORD_BCRYPT)`, under
//! Symfony's `NativePasswordHasher` rule for long or NUL-containing passwords,
//! verify with echorelay's `verify_password`, and wrong passwords do not.
//!
//! The vectors are `tests/vectors/php_bcrypt.json`, made by
//! `scripts/php_bcrypt_vectors.php` (see the header there to regenerate).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use echorelay_core::account::password::{
    PasswordHash, PasswordPolicy, needs_rehash, verify_password,
};
use secrecy::SecretString;
use serde::Deserialize;

const VECTORS: &str = include_str!("vectors/php_bcrypt.json");

#[derive(Deserialize)]
struct File {
    php_version: String,
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    note: String,
    password: String,
    hash: String,
    symfony_prehash: bool,
}

fn vectors() -> File {
    serde_json::from_str(VECTORS).expect("php_bcrypt.json parses")
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

#[test]
fn the_vector_file_covers_what_s6_promises() {
    let file = vectors();
    assert!(file.php_version.starts_with('8'), "{}", file.php_version);
    let v = &file.vectors;
    assert!(v.len() >= 8);
    let has = |f: &dyn Fn(&Vector) -> bool| v.iter().any(f);
    assert!(has(&|v| v.password.is_ascii() && v.password.len() < 72));
    assert!(has(&|v| !v.password.is_ascii() && v.password.len() <= 72));
    assert!(has(&|v| v.password.len() == 72));
    assert!(has(&|v| v.password.len() == 73));
    assert!(has(&|v| v.password.len() == 200));
    assert!(has(&|v| v.password.contains('\0')));
    assert!(has(&|v| v.hash.starts_with("$2y$10$")));
    assert!(has(&|v| v.hash.starts_with("$2y$13$")));
    assert!(has(&|v| v.hash.starts_with("$2b$")));
    assert!(has(&|v| v.hash.starts_with("$2a$")));
    for v in v {
        // The flag records Symfony's rule, which verify_password applies itself.
        let rule = v.password.len() > 72 || v.password.contains('\0');
        assert_eq!(v.symfony_prehash, rule, "{}", v.note);
    }
}

#[test]
fn every_php_vector_verifies() {
    for v in vectors().vectors {
        let hash = PasswordHash::parse(&v.hash).unwrap_or_else(|e| panic!("{}: {e}", v.note));
        assert!(
            verify_password(&secret(&v.password), &hash).unwrap(),
            "PHP vector does not verify: {}",
            v.note
        );
    }
}

#[test]
fn a_wrong_password_does_not_verify() {
    for v in vectors().vectors {
        let hash = PasswordHash::parse(&v.hash).unwrap();
        let mut wrong = v.password.clone();
        wrong.push('!');
        assert!(
            !verify_password(&secret(&wrong), &hash).unwrap(),
            "appended byte accepted: {}",
            v.note
        );
        let mut chopped = v.password.clone();
        chopped.pop();
        assert!(
            !verify_password(&secret(&chopped), &hash).unwrap(),
            "shortened password accepted: {}",
            v.note
        );
    }
}

#[test]
fn long_php_vectors_are_not_fooled_by_their_first_72_bytes() {
    for v in vectors().vectors {
        if v.password.len() <= 72 {
            continue;
        }
        let hash = PasswordHash::parse(&v.hash).unwrap();
        let first_72 = &v.password.as_bytes()[..72];
        // Only test the prefix when it is still valid UTF-8.
        if let Ok(prefix) = std::str::from_utf8(first_72) {
            assert!(
                !verify_password(&secret(prefix), &hash).unwrap(),
                "{}",
                v.note
            );
        }
    }
}

#[test]
fn php_hashes_at_the_default_cost_need_no_rehash() {
    let policy = PasswordPolicy::default();
    for v in vectors().vectors {
        let hash = PasswordHash::parse(&v.hash).unwrap();
        let expected = !(v.hash.starts_with("$2y$13$"));
        assert_eq!(needs_rehash(&hash, policy), expected, "{}", v.note);
    }
}
