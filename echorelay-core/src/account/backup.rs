//! Backup codes: ten single-use codes shown once at enrollment.
//!
//! A code is 16 characters of Crockford's base32 (80 bits), shown in groups
//! of four (`k7mq-3xwd-9fne-t2hp`). Typing is forgiving: case, spaces and
//! hyphens are ignored, and the look-alikes `i`/`l` read as `1`, `o` as `0`. Each is stored as SHA-256 over a random 16-byte salt and the
//! normalized code; 80 random bits make a slow hash unnecessary.

use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::BackupCodeRecord;

/// Codes per set.
pub const CODES_PER_SET: usize = 10;
/// Crockford's base32 alphabet, lowercase: no `i`, `l`, `o`, `u`.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const CODE_LEN: usize = 16;

fn alphabet() -> &'static [u8] {
    ALPHABET
}

/// A freshly generated set: the plaintext codes (show once) and what to
/// store.
pub struct BackupCodeSet {
    /// The codes, formatted for display.
    pub codes: Vec<SecretString>,
    /// Their salted hashes.
    pub records: Vec<BackupCodeRecord>,
}

impl std::fmt::Debug for BackupCodeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackupCodeSet({} codes, <redacted>)", self.codes.len())
    }
}

fn digest(salt: &[u8; 16], normalized: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"echorelay.backup-code.v1\0");
    h.update(salt);
    h.update(normalized);
    h.finalize().into()
}

/// Generates a new set of [`CODES_PER_SET`] codes.
pub fn generate() -> BackupCodeSet {
    let mut rng = rand::rngs::OsRng;
    let abc = alphabet();
    let mut codes = Vec::with_capacity(CODES_PER_SET);
    let mut records = Vec::with_capacity(CODES_PER_SET);
    for index in 0..CODES_PER_SET {
        let raw: Zeroizing<Vec<u8>> = Zeroizing::new(
            (0..CODE_LEN)
                .map(|_| abc[rng.gen_range(0..abc.len())])
                .collect(),
        );
        let mut salt = [0u8; 16];
        rng.fill(&mut salt);
        let mut shown = Zeroizing::new(String::with_capacity(CODE_LEN + 3));
        for (i, c) in raw.iter().enumerate() {
            if i > 0 && i % 4 == 0 {
                shown.push('-');
            }
            shown.push(char::from(*c));
        }
        records.push(BackupCodeRecord {
            index: index as u8,
            salt,
            hash: digest(&salt, &raw),
        });
        codes.push(SecretString::from(shown.as_str()));
    }
    BackupCodeSet { codes, records }
}

/// Normalizes typed input: drops spaces and hyphens, lowercases. `None` if
/// the result is not a well-formed code.
pub fn normalize(input: &str) -> Option<Zeroizing<Vec<u8>>> {
    let out: Zeroizing<Vec<u8>> = Zeroizing::new(
        input
            .bytes()
            .filter(|b| *b != b'-' && *b != b' ')
            .map(|b| match b.to_ascii_lowercase() {
                b'i' | b'l' => b'1',
                b'o' => b'0',
                other => other,
            })
            .collect(),
    );
    if out.len() == CODE_LEN && out.iter().all(|b| alphabet().contains(b)) {
        Some(out)
    } else {
        None
    }
}

/// The stored code that `input` matches, if any. Compares against every
/// record in constant time.
pub fn find<'a>(
    records: &'a [BackupCodeRecord],
    input: &SecretString,
) -> Option<&'a BackupCodeRecord> {
    let normalized = normalize(input.expose_secret())?;
    let mut found = None;
    for r in records {
        if bool::from(digest(&r.salt, &normalized).ct_eq(&r.hash)) {
            found = Some(r);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_long_enough_unique_and_match_their_records() {
        let set = generate();
        assert_eq!(set.codes.len(), 10);
        // 16 characters of a 32-letter alphabet: 80 bits.
        const { assert!(CODE_LEN * 5 >= 64) };
        for (i, c) in set.codes.iter().enumerate() {
            assert_eq!(c.expose_secret().len(), 19);
            assert_eq!(find(&set.records, c).map(|r| r.index), Some(i as u8));
            let sloppy = c.expose_secret().replace('-', " ").to_uppercase();
            assert_eq!(
                find(&set.records, &SecretString::from(sloppy)).map(|r| r.index),
                Some(i as u8)
            );
        }
        assert_eq!(
            find(&set.records, &SecretString::from("aaaa-aaaa-aaaa-aaaa")),
            None
        );
        assert_eq!(find(&set.records, &SecretString::from("short")), None);
        assert_eq!(
            find(&set.records, &SecretString::from("ÄÄÄÄ-ÄÄÄÄ-ÄÄÄÄ-ÄÄÄÄ")),
            None
        );
        assert!(!format!("{set:?}").contains(set.codes[0].expose_secret()));
        let again = generate();
        assert_eq!(find(&again.records, &set.codes[0]), None);
    }
}
