//! Secret vault: AES-256-GCM encryption of outbound secrets, a rotating
//! keyring, and masking for read APIs (invariants S4 and S5).
//!
//! Outbound secrets (bearer tokens, basic-auth passwords, signing secrets,
//! TOTP seeds) are stored only as [`Ciphertext`], produced by a
//! [`SecretVault`]. The production vault is [`AesGcmVault`]: AES-256-GCM from
//! the `aes-gcm` crate, with a fresh random 96-bit nonce for every
//! [`SecretVault::seal`], read directly from the operating system's CSPRNG
//! (`getrandom`, through `rand`'s [`OsRng`]) on every seal. There is no
//! userspace RNG state, so nonce uniqueness does not depend on a generator
//! noticing a `fork` or a VM snapshot being restored. No cryptography is
//! implemented here.
//!
//! # Binding to project, record and field (S4)
//!
//! Every seal and open takes a [`SecretContext`] naming the project, the
//! record (row) and the field the secret belongs to. Its
//! [`aad`](SecretContext::aad) is passed to AES-GCM as associated data:
//!
//! ```text
//! b"echorelay/v1" || u32be(len(project)) || project
//!                 || u32be(len(record))  || record
//!                 || u32be(len(field))   || field
//! ```
//!
//! The length prefixes make the encoding unambiguous (`("ab", "c")` and
//! `("a", "bc")` differ), so a ciphertext copied to another project, another
//! row or another field of the same row fails authentication with
//! [`VaultError::Decrypt`] instead of decrypting.
//!
//! # Ciphertext format
//!
//! Binary form ([`Ciphertext::to_bytes`] / [`Ciphertext::from_bytes`]):
//!
//! | bytes | length | content |
//! |---|---|---|
//! | `0` | 1 | format version, currently `1` |
//! | `1..5` | 4 | [`VaultKeyId`] of the key that sealed it |
//! | `5..17` | 12 | random AES-GCM nonce |
//! | `17..len-16` | 0 or more | AES-256-GCM ciphertext (same length as the plaintext) |
//! | `len-16..len` | 16 | GCM authentication tag |
//!
//! The minimum length is therefore [`MIN_CIPHERTEXT_LEN`] (33 bytes, an empty
//! plaintext). Text form ([`Ciphertext::to_text`], [`Display`](fmt::Display),
//! [`FromStr`], serde): `"erv1:"` followed by the binary form in URL-safe
//! base64 without padding. Decoding never panics: malformed input is
//! [`VaultError::Malformed`] and an unknown version byte is
//! [`VaultError::UnsupportedVersion`].
//!
//! # Keyring and rotation
//!
//! A [`Keyring`] holds the *current* [`SecretKey`], which seals everything new,
//! and any number of *previous* keys, which are only used to open. Each key is
//! identified by its [`VaultKeyId`] (4 bytes of a domain-separated SHA-256 of the
//! key), stored in every ciphertext, so opening picks the right key directly;
//! a ciphertext whose key is not in the ring is [`VaultError::UnknownKey`].
//!
//! A key must be 32 random bytes. Generate one with `openssl rand -hex 32`
//! or `head -c 32 /dev/urandom | base64`. [`SecretKey::parse`] refuses keys
//! that are obviously not random (one repeated byte, a short repeating
//! pattern, a counting sequence, few distinct bytes, or printable text).
//!
//! To rotate: make the new key current, keep the old one as previous, then
//! run the rewrap pass ([`crate::rewrap::Rewrap::run`]), which sweeps every
//! stored ciphertext with [`SecretVault::rewrap`] (open with whichever key
//! sealed it, seal again under the current key); ciphertexts for which
//! [`SecretVault::is_current`] is true are left alone. Once
//! [`crate::rewrap::Rewrap::key_usage`] shows nothing under the old key,
//! it can be dropped from the ring.
//!
//! # Masking (S5)
//!
//! Read APIs never return a stored secret: they return [`mask`]ed text.
//! A secret of at least 12 characters shows as `"••••"` followed by its last
//! 4 characters (characters, not bytes); anything shorter shows as just
//! `"••••"`, so short secrets reveal nothing. [`Masked`] carries such text.
//! [`SecretKey`], [`Keyring`] and [`AesGcmVault`] print only key ids in their
//! `Debug` output, and no [`VaultError`] ever carries key material, input
//! strings or plaintext.
//!
//! # Example
//!
//! ```
//! use echorelay_core::vault::{AesGcmVault, Keyring, SecretContext, SecretKey, SecretVault};
//! use secrecy::ExposeSecret;
//!
//! # fn main() -> Result<(), echorelay_core::vault::VaultError> {
//! // Typically read from the SECRET_KEY environment variable. (An example
//! // key: never use a key that has appeared in documentation.)
//! let key = SecretKey::parse("f33e7e870678487b4aa7202067e8c1058607ac5ba8fdb57669851951a06754ce")?;
//! let vault = AesGcmVault::new(Keyring::new(key));
//!
//! let ctx = SecretContext { project: "acme", record: "endpoint-42", field: "bearer_token" };
//! let sealed = vault.seal_str("s3cr3t-t0ken", &ctx)?;
//! let stored = sealed.to_text(); // "erv1:..."
//!
//! let parsed: echorelay_core::vault::Ciphertext = stored.parse()?;
//! let opened = vault.open_string(&parsed, &ctx)?;
//! assert_eq!(opened.expose_secret(), "s3cr3t-t0ken");
//!
//! // The same ciphertext does not open for another field.
//! let other = SecretContext { field: "password", ..ctx };
//! assert!(vault.open(&parsed, &other).is_err());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use rand::RngCore as _;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize as _, Zeroizing};

/// The current (and only) binary format version.
pub const CIPHERTEXT_VERSION: u8 = 1;

/// Prefix of the text form of a [`Ciphertext`].
pub const TEXT_PREFIX: &str = "erv1:";

/// Length of the header: version, key id and nonce.
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;

/// Length of the AES-GCM nonce.
const NONCE_LEN: usize = 12;

/// Length of the AES-GCM authentication tag.
const TAG_LEN: usize = 16;

/// Minimum length of the binary form: header plus tag (empty plaintext).
pub const MIN_CIPHERTEXT_LEN: usize = HEADER_LEN + TAG_LEN;

/// Length of a secret key in bytes.
const KEY_LEN: usize = 32;

/// Domain separator of [`VaultKeyId`] derivation.
const KEY_ID_DOMAIN: &[u8] = b"echorelay.vault.key-id.v1";

/// Domain separator at the start of the associated data.
const AAD_DOMAIN: &[u8] = b"echorelay/v1";

/// Longest trimmed key string worth decoding (base64 of 32 bytes is 44
/// characters padded, hex is 64); anything longer is rejected up front.
const MAX_KEY_TEXT_LEN: usize = 88;

/// A key whose bytes repeat with a period of at most this many bytes is
/// refused.
const MAX_REFUSED_PERIOD: usize = 16;

/// A key with fewer distinct byte values than this is refused.
const MIN_DISTINCT_KEY_BYTES: u32 = 12;

// Reasons for refusing a key that is obviously not random. Never include the
// key or the input.
const REFUSED_ALL_EQUAL: &str = "not random: all 32 bytes are the same value";
const REFUSED_COUNTING: &str =
    "not random: the bytes count up or down by a fixed step (like 00 01 02 ...)";
const REFUSED_PERIODIC: &str = "not random: a pattern of 16 bytes or fewer repeats";
const REFUSED_FEW_DISTINCT: &str = "not random: fewer than 12 distinct byte values";
const REFUSED_PRINTABLE: &str =
    "not random: all 32 bytes are printable ASCII (a passphrase, not a random key)";

/// Base64 engines for key parsing: padding optional, canonical trailing bits.
const KEY_B64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const KEY_B64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// What can go wrong in the vault. No variant carries key material, the input
/// that failed to parse, or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// A secret key string (or keyring) is not acceptable.
    #[error("invalid secret key: {reason}")]
    InvalidSecretKey {
        /// What was wrong, without echoing the input.
        reason: &'static str,
    },
    /// A ciphertext (binary or text form) is not well formed.
    #[error("malformed ciphertext: {reason}")]
    Malformed {
        /// What was wrong, without echoing the input.
        reason: &'static str,
    },
    /// The ciphertext's format version byte is not one this build knows.
    #[error("unsupported ciphertext version {0}")]
    UnsupportedVersion(u8),
    /// The ciphertext was sealed with a key that is not in the keyring.
    #[error("ciphertext was sealed with unknown key {0}")]
    UnknownKey(VaultKeyId),
    /// Authentication failed: the ciphertext was tampered with, belongs to
    /// another project, record or field, or the key is wrong. Deliberately
    /// does not say which.
    #[error("ciphertext failed authentication")]
    Decrypt,
    /// Encryption failed (no randomness from the operating system, or an
    /// input too large for AES-GCM).
    #[error("encryption failed")]
    Encrypt,
    /// The decrypted secret is not valid UTF-8 where a string was asked for.
    #[error("decrypted secret is not valid UTF-8")]
    Utf8,
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

/// Identifies a [`SecretKey`] without revealing it: the first 4 bytes of
/// `SHA-256("echorelay.vault.key-id.v1" || key)`. Stored in every
/// [`Ciphertext`]. `Debug` and `Display` show it as 8 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaultKeyId(pub [u8; 4]);

impl VaultKeyId {
    fn of(key: &[u8; KEY_LEN]) -> Self {
        let digest = Sha256::new()
            .chain_update(KEY_ID_DOMAIN)
            .chain_update(key)
            .finalize();
        let [a, b, c, d, ..] = <[u8; 32]>::from(digest);
        VaultKeyId([a, b, c, d])
    }
}

impl fmt::Display for VaultKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for VaultKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultKeyId({self})")
    }
}

/// Whether base64 key text reads like words rather than randomness: only
/// letters (padding aside), and at most 10 of one case. See
/// [`SecretKey::parse`] for the false-refusal probability.
fn looks_like_words(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    if !body.bytes().all(|b| b.is_ascii_alphabetic()) {
        return false;
    }
    let upper = body.bytes().filter(u8::is_ascii_uppercase).count();
    let lower = body.len() - upper;
    upper.min(lower) <= 10
}

/// A 256-bit vault key (`SECRET_KEY`). Zeroized on drop; `Debug` shows only
/// its [`VaultKeyId`]; it has no `Display` and no `Serialize`.
#[derive(Clone)]
pub struct SecretKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: VaultKeyId,
}

impl SecretKey {
    /// Parses a key from text (`SECRET_KEY`). Surrounding ASCII whitespace is
    /// ignored. Accepted: exactly 64 hex characters (either case), or base64
    /// (standard or URL-safe alphabet, with or without padding) of exactly 32
    /// bytes.
    ///
    /// The decoded 32 bytes must then look random: they are refused if they
    /// are all the same byte, count up or down by a fixed step (`00 01 02
    /// …`), repeat a pattern of 16 bytes or fewer, have fewer than 12
    /// distinct byte values, or are all printable ASCII (0x20 to 0x7e: a
    /// passphrase rather than a key). A key of 32 uniformly random bytes is
    /// refused with probability below 2<sup>-45</sup> (almost all of it from
    /// the printable-ASCII rule). Generate keys with `openssl rand -hex 32`
    /// or `head -c 32 /dev/urandom | base64`.
    ///
    /// The base64 text itself is judged too: text of letters only (no
    /// digit, no `+/-_`) with at most 10 letters of one case (upper or
    /// lower) is refused, whatever it decodes to: that is a sentence
    /// written without spaces (`thequickbrownfox…`, `CorrectHorse…`), which
    /// happens to be valid base64 of 32 bytes that look random. The base64
    /// of 32 uniformly random bytes is letters only with probability
    /// (52/64)<sup>42</sup> · 12/16 ≈ 1.2·10<sup>-4</sup>, and then has at
    /// most 10 of one case with probability ≈ 6·10<sup>-4</sup>: a random
    /// key is refused by this rule with probability ≈ 7.4·10<sup>-8</sup>
    /// (about 2<sup>-23.7</sup>; generate another).
    ///
    /// # Errors
    ///
    /// [`VaultError::InvalidSecretKey`] for anything else; the reason says
    /// which rule failed and never includes the input or the key bytes.
    pub fn parse(s: &str) -> Result<SecretKey, VaultError> {
        let s = s.trim_ascii();
        let invalid = |reason| Err(VaultError::InvalidSecretKey { reason });
        if s.is_empty() {
            return invalid("empty; expected 32 bytes as 64 hex characters or base64");
        }
        if s.len() > MAX_KEY_TEXT_LEN {
            return invalid("too long; expected 32 bytes as 64 hex characters or base64");
        }
        let all_hex = s.bytes().all(|b| b.is_ascii_hexdigit());
        if all_hex && s.len() == 2 * KEY_LEN {
            let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
            return match hex::decode_to_slice(s, bytes.as_mut_slice()) {
                Ok(()) => SecretKey::checked(bytes),
                Err(_) => invalid("expected 32 bytes as 64 hex characters or base64"),
            };
        }
        if all_hex && s.len() != 43 {
            // Only unpadded base64 of 32 bytes (43 characters) can consist of
            // hex digits alone, so anything else all-hex was meant as hex.
            return invalid("hex key has the wrong length; expected exactly 64 hex characters");
        }
        let engine = if s.bytes().any(|b| b == b'-' || b == b'_') {
            &KEY_B64_URL_SAFE
        } else {
            &KEY_B64_STANDARD
        };
        // Reserve enough up front that decoding never reallocates (which
        // would leave an unzeroized copy behind).
        let mut decoded = Zeroizing::new(Vec::with_capacity(MAX_KEY_TEXT_LEN));
        if engine.decode_vec(s, &mut decoded).is_err() {
            return invalid("expected 32 bytes as 64 hex characters or base64");
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        if decoded.len() != KEY_LEN {
            return invalid("base64 decodes to the wrong number of bytes; expected exactly 32");
        }
        bytes.copy_from_slice(&decoded);
        // The byte rules name their reason first; then the text's own.
        if non_random_reason(&bytes).is_none() && looks_like_words(s) {
            return invalid(
                "base64 of letters only, nearly all in one case: a passphrase rather than a key",
            );
        }
        SecretKey::checked(bytes)
    }

    /// Generates a fresh random key from the operating system's CSPRNG.
    ///
    /// # Panics
    ///
    /// Only if the operating system cannot provide randomness at all.
    pub fn generate() -> SecretKey {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(bytes.as_mut_slice());
        SecretKey::from_zeroizing(bytes)
    }

    /// The key as 64 lowercase hex characters, the form [`SecretKey::parse`]
    /// reads: for a tool that prints a newly generated key once. Handle
    /// with care; the intermediate copy is wiped.
    pub fn to_hex(&self) -> SecretString {
        let text = Zeroizing::new(hex::encode(self.bytes.as_slice()));
        SecretString::from(text.as_str())
    }

    /// Wraps raw key bytes **without** checking that they look random (test
    /// vectors and embedders that derive or unwrap keys themselves). Keys
    /// from configuration should go through [`SecretKey::parse`] or
    /// [`SecretKey::try_from_bytes`], which refuse obviously non-random keys.
    /// The argument's copy is zeroized.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> SecretKey {
        let key = Zeroizing::new(bytes);
        bytes.zeroize();
        SecretKey::from_zeroizing(key)
    }

    /// Wraps raw key bytes after the same randomness checks as
    /// [`SecretKey::parse`]. The argument's copy is zeroized, whether or not
    /// the key is accepted.
    ///
    /// # Errors
    ///
    /// [`VaultError::InvalidSecretKey`] if the bytes are obviously not random
    /// (see [`SecretKey::parse`]); the reason never includes the key bytes.
    pub fn try_from_bytes(mut bytes: [u8; KEY_LEN]) -> Result<SecretKey, VaultError> {
        let key = Zeroizing::new(bytes);
        bytes.zeroize();
        SecretKey::checked(key)
    }

    /// Accepts `bytes` only if they do not look obviously non-random.
    fn checked(bytes: Zeroizing<[u8; KEY_LEN]>) -> Result<SecretKey, VaultError> {
        match non_random_reason(&bytes) {
            Some(reason) => Err(VaultError::InvalidSecretKey { reason }),
            None => Ok(SecretKey::from_zeroizing(bytes)),
        }
    }

    fn from_zeroizing(bytes: Zeroizing<[u8; KEY_LEN]>) -> SecretKey {
        let id = VaultKeyId::of(&bytes);
        SecretKey { bytes, id }
    }

    /// The key's identifier, as stored in every ciphertext it seals.
    pub fn id(&self) -> VaultKeyId {
        self.id
    }

    /// Constant-time comparison of the key material.
    fn same_key(&self, other: &SecretKey) -> bool {
        bool::from(self.bytes.as_slice().ct_eq(other.bytes.as_slice()))
    }

    fn cipher(&self) -> Aes256Gcm {
        let key: &Key<Aes256Gcm> = (&*self.bytes).into();
        Aes256Gcm::new(key)
    }
}

/// Why `key` is obviously not random, or `None` if it passes. The rules, and
/// the probability that 32 uniformly random bytes break each one (so that a
/// properly generated key is refused):
///
/// - all 32 bytes equal: 256 / 256^32 = 2^-248;
/// - a counting sequence, `key[i] = key[i-1] + d (mod 256)` for one step `d`
///   (`d = 1` is `00 01 02 …`, `d = 255` counts down): 65536 / 256^32 =
///   2^-240;
/// - periodic, `key[i] = key[i-p]` for all `i` with a period `p` in
///   `2..=16`: at most the sum of 256^p / 256^32, about 2^-128 (period 16
///   dominates);
/// - fewer than 12 distinct byte values: exactly 6.4e-26, about 2^-83.7
///   (summing `C(256,k) k! S(32,k) / 256^32` for `k < 12`, with `S` the
///   Stirling numbers of the second kind); the expected number of distinct
///   values is 30.1;
/// - all bytes printable ASCII (0x20..=0x7e): (95/256)^32 = 1.7e-14, about
///   2^-45.8.
///
/// Together: about 1.7e-14, almost all from the printable rule.
///
/// Every rule looks at all 32 bytes, with no early exit and no table indexed
/// by key bytes, so the work done does not depend on the key (this is
/// written to avoid data-dependent branches, not a constant-time guarantee;
/// the hex and base64 decoders before it make no such effort either).
fn non_random_reason(key: &[u8; KEY_LEN]) -> Option<&'static str> {
    let [first, second, ..] = *key;
    let step = second.wrapping_sub(first);
    let mut all_equal = true;
    let mut counting = true;
    let mut printable = true;
    let mut expected = first;
    for &b in key {
        all_equal &= b == first;
        counting &= b == expected;
        printable &= (0x20..=0x7e).contains(&b);
        expected = expected.wrapping_add(step);
    }
    let mut periodic = false;
    for period in 2..=MAX_REFUSED_PERIOD {
        let mut repeats = true;
        for (b, earlier) in key[period..].iter().zip(key.iter()) {
            repeats &= b == earlier;
        }
        periodic |= repeats;
    }
    let mut distinct = 0u32;
    for value in 0..=u8::MAX {
        let mut present = false;
        for &b in key {
            present |= b == value;
        }
        distinct += u32::from(present);
    }
    if all_equal {
        Some(REFUSED_ALL_EQUAL)
    } else if counting {
        Some(REFUSED_COUNTING)
    } else if periodic {
        Some(REFUSED_PERIODIC)
    } else if distinct < MIN_DISTINCT_KEY_BYTES {
        Some(REFUSED_FEW_DISTINCT)
    } else if printable {
        Some(REFUSED_PRINTABLE)
    } else {
        None
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(<redacted>, id={})", self.id)
    }
}

/// The current key plus previous keys still accepted for opening.
/// `Debug` shows key ids only.
#[derive(Clone)]
pub struct Keyring {
    current: SecretKey,
    previous: Vec<SecretKey>,
}

impl Keyring {
    /// A keyring with only a current key.
    pub fn new(current: SecretKey) -> Keyring {
        Keyring {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds a previous key (used only to open). Adding a key that is already
    /// in the ring has no effect.
    #[must_use]
    pub fn with_previous(mut self, key: SecretKey) -> Keyring {
        let already = std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|k| k.id == key.id && k.same_key(&key));
        if !already {
            self.previous.push(key);
        }
        self
    }

    /// Parses the current key and the previous keys with [`SecretKey::parse`].
    ///
    /// # Errors
    ///
    /// [`VaultError::InvalidSecretKey`] if any key does not parse, or with
    /// reason `"duplicate key in keyring"` if two keys have the same id.
    pub fn parse(current: &str, previous: &[&str]) -> Result<Keyring, VaultError> {
        let mut ring = Keyring::new(SecretKey::parse(current)?);
        for text in previous {
            let key = SecretKey::parse(text)?;
            if ring.key_ids().any(|id| id == key.id) {
                return Err(VaultError::InvalidSecretKey {
                    reason: "duplicate key in keyring",
                });
            }
            ring.previous.push(key);
        }
        Ok(ring)
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> VaultKeyId {
        self.current.id
    }

    /// Ids of all keys, current first, then previous keys in the order added.
    pub fn key_ids(&self) -> impl Iterator<Item = VaultKeyId> + '_ {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(SecretKey::id)
    }

    /// One 32-byte subkey per key, current first, each
    /// HKDF-SHA256(ikm = the key, no salt, `info`) (RFC 5869), named by
    /// the id of the key it comes from. For purposes other than sealing
    /// (the audit chain's tags), so no key is used for two things.
    pub(crate) fn subkeys(&self, info: &[u8]) -> Vec<(VaultKeyId, Zeroizing<[u8; KEY_LEN]>)> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|k| {
                let mut out = Zeroizing::new([0u8; KEY_LEN]);
                // 32 bytes is far below HKDF-SHA256's limit (255 * 32):
                // expand cannot fail here.
                let _ = hkdf::Hkdf::<Sha256>::new(None, k.bytes.as_slice())
                    .expand(info, out.as_mut_slice());
                (k.id, out)
            })
            .collect()
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let previous: Vec<VaultKeyId> = self.previous.iter().map(SecretKey::id).collect();
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field("previous", &previous)
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Context (associated data)
// ---------------------------------------------------------------------------

/// Where a secret lives. Bound to the ciphertext as AES-GCM associated data,
/// so a ciphertext opens only with the same project, record and field (S4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretContext<'a> {
    /// The owning project (tenant).
    pub project: &'a str,
    /// The record (row) holding the secret, e.g. an endpoint id.
    pub record: &'a str,
    /// The field of the record, e.g. `"bearer_token"`.
    pub field: &'a str,
}

impl SecretContext<'_> {
    /// The associated data: `b"echorelay/v1"`, then for each of project,
    /// record and field its length as a big-endian `u32` and its bytes.
    ///
    /// A part longer than `u32::MAX` bytes would saturate its length prefix;
    /// the vault refuses such contexts, so this never makes two contexts
    /// indistinguishable in practice.
    pub fn aad(&self) -> Vec<u8> {
        let parts = [self.project, self.record, self.field];
        let len = AAD_DOMAIN.len() + parts.iter().map(|p| 4 + p.len()).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(AAD_DOMAIN);
        for part in parts {
            let n = u32::try_from(part.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }

    /// The associated data, or `None` if a part is too long to encode.
    fn checked_aad(&self) -> Option<Vec<u8>> {
        let fits = [self.project, self.record, self.field]
            .iter()
            .all(|p| u32::try_from(p.len()).is_ok());
        fits.then(|| self.aad())
    }
}

// ---------------------------------------------------------------------------
// Ciphertext
// ---------------------------------------------------------------------------

/// A sealed secret: format version, key id, nonce, and AES-GCM output
/// (ciphertext followed by the 16-byte tag). See the [module docs](self) for
/// the binary and text forms. Not secret: `Debug` shows version, key id and
/// length.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Ciphertext {
    version: u8,
    key_id: VaultKeyId,
    nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte GCM tag.
    sealed: Vec<u8>,
}

impl Ciphertext {
    /// The format version (currently always [`CIPHERTEXT_VERSION`]).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The id of the key that sealed this ciphertext.
    pub fn key_id(&self) -> VaultKeyId {
        self.key_id
    }

    /// Length of the binary form in bytes.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.sealed.len()
    }

    /// Always false: even an empty plaintext seals to [`MIN_CIPHERTEXT_LEN`]
    /// bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The binary form (see the [module docs](self)).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.push(self.version);
        out.extend_from_slice(&self.key_id.0);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Parses the binary form. Never panics.
    ///
    /// # Errors
    ///
    /// [`VaultError::Malformed`] if the input is shorter than
    /// [`MIN_CIPHERTEXT_LEN`], [`VaultError::UnsupportedVersion`] if the
    /// version byte is not [`CIPHERTEXT_VERSION`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Ciphertext, VaultError> {
        let Some(&version) = bytes.first() else {
            return Err(VaultError::Malformed {
                reason: "empty input",
            });
        };
        if version != CIPHERTEXT_VERSION {
            return Err(VaultError::UnsupportedVersion(version));
        }
        let Some((header, sealed)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(VaultError::Malformed {
                reason: "too short",
            });
        };
        if sealed.len() < TAG_LEN {
            return Err(VaultError::Malformed {
                reason: "too short",
            });
        }
        let [_, k0, k1, k2, k3, nonce @ ..] = *header;
        Ok(Ciphertext {
            version,
            key_id: VaultKeyId([k0, k1, k2, k3]),
            nonce,
            sealed: sealed.to_vec(),
        })
    }

    /// The text form: `"erv1:"` + URL-safe unpadded base64 of the binary form.
    pub fn to_text(&self) -> String {
        let bytes = self.to_bytes();
        let mut out = String::with_capacity(TEXT_PREFIX.len() + bytes.len().div_ceil(3) * 4);
        out.push_str(TEXT_PREFIX);
        URL_SAFE_NO_PAD.encode_string(&bytes, &mut out);
        out
    }

    /// Parses the text form. Strict: no surrounding whitespace, no padding,
    /// URL-safe alphabet only. Never panics.
    ///
    /// # Errors
    ///
    /// [`VaultError::Malformed`] for a missing prefix or bad base64, then as
    /// [`Ciphertext::from_bytes`].
    pub fn from_text(text: &str) -> Result<Ciphertext, VaultError> {
        let Some(body) = text.strip_prefix(TEXT_PREFIX) else {
            return Err(VaultError::Malformed {
                reason: "missing \"erv1:\" prefix",
            });
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| VaultError::Malformed {
                reason: "invalid base64url",
            })?;
        Ciphertext::from_bytes(&bytes)
    }
}

impl fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ciphertext")
            .field("version", &self.version)
            .field("key_id", &self.key_id)
            .field("len", &self.len())
            .finish()
    }
}

impl fmt::Display for Ciphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl FromStr for Ciphertext {
    type Err = VaultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ciphertext::from_text(s)
    }
}

impl serde::Serialize for Ciphertext {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_text())
    }
}

impl<'de> serde::Deserialize<'de> for Ciphertext {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl serde::de::Visitor<'_> for TextVisitor {
            type Value = Ciphertext;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an \"erv1:\" vault ciphertext string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Ciphertext, E> {
                // The error's Display never includes the input.
                Ciphertext::from_text(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(TextVisitor)
    }
}

// ---------------------------------------------------------------------------
// Vault
// ---------------------------------------------------------------------------

/// Seals and opens secrets bound to a [`SecretContext`]. Synchronous: it is
/// pure CPU work.
pub trait SecretVault: Send + Sync {
    /// Encrypts `plaintext` for `ctx` under the current key.
    ///
    /// # Errors
    ///
    /// [`VaultError::Encrypt`] if no nonce could be drawn or the input is
    /// too large.
    fn seal(&self, plaintext: &[u8], ctx: &SecretContext<'_>) -> Result<Ciphertext, VaultError>;

    /// Decrypts `ct`, which must have been sealed for the same `ctx`.
    ///
    /// # Errors
    ///
    /// [`VaultError::UnsupportedVersion`], [`VaultError::UnknownKey`] if the
    /// key is not in the keyring, and the opaque [`VaultError::Decrypt`] for
    /// a wrong context, tampering or a wrong key.
    fn open(
        &self,
        ct: &Ciphertext,
        ctx: &SecretContext<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError>;

    /// Whether `ct` is already sealed under the current key and format, so
    /// [`rewrap`](SecretVault::rewrap) would leave it unchanged.
    fn is_current(&self, ct: &Ciphertext) -> bool;

    /// Re-seals `ct` under the current key (key rotation). Returns a clone
    /// if it is already [current](SecretVault::is_current); note that this
    /// shortcut does not authenticate `ct` against `ctx`.
    ///
    /// # Errors
    ///
    /// As [`open`](SecretVault::open) and [`seal`](SecretVault::seal).
    fn rewrap(&self, ct: &Ciphertext, ctx: &SecretContext<'_>) -> Result<Ciphertext, VaultError> {
        if self.is_current(ct) {
            return Ok(ct.clone());
        }
        let plaintext = self.open(ct, ctx)?;
        self.seal(&plaintext, ctx)
    }

    /// Encrypts a string secret; see [`seal`](SecretVault::seal).
    ///
    /// # Errors
    ///
    /// As [`seal`](SecretVault::seal).
    fn seal_str(&self, secret: &str, ctx: &SecretContext<'_>) -> Result<Ciphertext, VaultError> {
        self.seal(secret.as_bytes(), ctx)
    }

    /// Decrypts a string secret; see [`open`](SecretVault::open).
    ///
    /// # Errors
    ///
    /// As [`open`](SecretVault::open), plus [`VaultError::Utf8`] if the
    /// plaintext is not UTF-8.
    fn open_string(
        &self,
        ct: &Ciphertext,
        ctx: &SecretContext<'_>,
    ) -> Result<SecretString, VaultError> {
        let bytes = self.open(ct, ctx)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| VaultError::Utf8)?;
        // Exact-size copy straight into the secret box: no reallocation
        // leaves plaintext behind.
        Ok(SecretString::from(Box::<str>::from(text)))
    }
}

macro_rules! forward_secret_vault {
    ($ptr:ident) => {
        impl<T: SecretVault + ?Sized> SecretVault for $ptr<T> {
            fn seal(
                &self,
                plaintext: &[u8],
                ctx: &SecretContext<'_>,
            ) -> Result<Ciphertext, VaultError> {
                (**self).seal(plaintext, ctx)
            }

            fn open(
                &self,
                ct: &Ciphertext,
                ctx: &SecretContext<'_>,
            ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
                (**self).open(ct, ctx)
            }

            fn is_current(&self, ct: &Ciphertext) -> bool {
                (**self).is_current(ct)
            }

            fn rewrap(
                &self,
                ct: &Ciphertext,
                ctx: &SecretContext<'_>,
            ) -> Result<Ciphertext, VaultError> {
                (**self).rewrap(ct, ctx)
            }

            fn seal_str(
                &self,
                secret: &str,
                ctx: &SecretContext<'_>,
            ) -> Result<Ciphertext, VaultError> {
                (**self).seal_str(secret, ctx)
            }

            fn open_string(
                &self,
                ct: &Ciphertext,
                ctx: &SecretContext<'_>,
            ) -> Result<SecretString, VaultError> {
                (**self).open_string(ct, ctx)
            }
        }
    };
}

forward_secret_vault!(Arc);
forward_secret_vault!(Box);

/// The production [`SecretVault`]: AES-256-GCM over a [`Keyring`], with a
/// fresh random 96-bit nonce per seal, read from the operating system (see
/// the module docs). The AES key schedules are computed once, in
/// [`AesGcmVault::new`], and zeroized on drop (the `aes` and `ghash`
/// crates' `zeroize` features are on). `Debug` shows key ids only.
#[derive(Clone)]
pub struct AesGcmVault {
    current: (VaultKeyId, Aes256Gcm),
    previous: Vec<(VaultKeyId, Aes256Gcm)>,
}

impl AesGcmVault {
    /// Builds the vault, precomputing one cipher per key. The keyring (and
    /// its raw key bytes) is dropped, and zeroized, afterwards.
    pub fn new(keyring: Keyring) -> AesGcmVault {
        let current = (keyring.current.id, keyring.current.cipher());
        let previous = keyring
            .previous
            .iter()
            .map(|k| (k.id, k.cipher()))
            .collect();
        AesGcmVault { current, previous }
    }

    /// The id of the key that seals.
    pub fn current_key_id(&self) -> VaultKeyId {
        self.current.0
    }

    /// Ids of all keys accepted for opening, current first.
    pub fn key_ids(&self) -> impl Iterator<Item = VaultKeyId> + '_ {
        self.ciphers().map(|(id, _)| *id)
    }

    fn ciphers(&self) -> impl Iterator<Item = &(VaultKeyId, Aes256Gcm)> {
        std::iter::once(&self.current).chain(&self.previous)
    }
}

impl fmt::Debug for AesGcmVault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let previous: Vec<VaultKeyId> = self.previous.iter().map(|(id, _)| *id).collect();
        f.debug_struct("AesGcmVault")
            .field("current", &self.current.0)
            .field("previous", &previous)
            .finish()
    }
}

impl SecretVault for AesGcmVault {
    fn seal(&self, plaintext: &[u8], ctx: &SecretContext<'_>) -> Result<Ciphertext, VaultError> {
        let aad = ctx.checked_aad().ok_or(VaultError::Encrypt)?;
        let mut nonce = [0u8; NONCE_LEN];
        // Straight from the OS (getrandom) for every nonce. A userspace
        // generator (rand's ThreadRng) would save the syscall (measured at
        // ~580 ns on these VMs earlier) but makes uniqueness depend on its
        // fork handling: rand 0.8 reseeds after fork only when its 256-byte
        // output buffer next runs out, so parent and child can hand out the
        // same buffered bytes (up to 252, i.e. 21 identical nonces), and
        // rand 0.9 dropped fork reseeding altogether. A nonce repeated under
        // one key reveals the XOR of the two plaintexts and lets an attacker
        // recover the GHASH key and forge, so correctness wins here.
        OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|_| VaultError::Encrypt)?;
        let (key_id, cipher) = &self.current;
        let nonce_ref: &Nonce<_> = (&nonce).into();
        let sealed = cipher
            .encrypt(
                nonce_ref,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Encrypt)?;
        Ok(Ciphertext {
            version: CIPHERTEXT_VERSION,
            key_id: *key_id,
            nonce,
            sealed,
        })
    }

    fn open(
        &self,
        ct: &Ciphertext,
        ctx: &SecretContext<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, VaultError> {
        if ct.version != CIPHERTEXT_VERSION {
            return Err(VaultError::UnsupportedVersion(ct.version));
        }
        let aad = ctx.checked_aad().ok_or(VaultError::Decrypt)?;
        let nonce: &Nonce<_> = (&ct.nonce).into();
        let mut known = false;
        // Normally exactly one key matches; more than one only on a 32-bit
        // id collision between distinct keys, where each is tried in turn.
        for (_, cipher) in self.ciphers().filter(|(id, _)| *id == ct.key_id) {
            known = true;
            if let Ok(plaintext) = cipher.decrypt(
                nonce,
                Payload {
                    msg: &ct.sealed,
                    aad: &aad,
                },
            ) {
                return Ok(Zeroizing::new(plaintext));
            }
        }
        if known {
            Err(VaultError::Decrypt)
        } else {
            Err(VaultError::UnknownKey(ct.key_id))
        }
    }

    fn is_current(&self, ct: &Ciphertext) -> bool {
        ct.version == CIPHERTEXT_VERSION && ct.key_id == self.current.0
    }
}

// ---------------------------------------------------------------------------
// Masking
// ---------------------------------------------------------------------------

/// The mask shown in place of a secret.
const MASK: &str = "••••";

/// Secrets with at least this many characters show their last 4.
const MASK_REVEAL_MIN_CHARS: usize = 12;

/// How many trailing characters a long enough secret shows.
const MASK_REVEAL_CHARS: usize = 4;

/// Masks a secret for display (S5): `"••••"` followed by the last 4
/// characters (not bytes) if the secret has at least 12 characters, otherwise
/// just `"••••"`.
///
/// ```
/// use echorelay_core::vault::mask;
/// assert_eq!(mask("sk_live_abcdefgh1234"), "••••1234");
/// assert_eq!(mask("short"), "••••");
/// ```
pub fn mask(secret: &str) -> String {
    let mut chars = secret.char_indices().rev();
    let revealed = if secret.chars().count() >= MASK_REVEAL_MIN_CHARS {
        chars
            .nth(MASK_REVEAL_CHARS - 1)
            .map_or("", |(start, _)| &secret[start..])
    } else {
        ""
    };
    let mut out = String::with_capacity(MASK.len() + revealed.len());
    out.push_str(MASK);
    out.push_str(revealed);
    out
}

/// The masked form of a secret, safe to return from read APIs, log and
/// serialize. `Display`, `Debug` and `Serialize` all show the masked text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Masked(String);

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Masked {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::ids::string_schema(
            "A masked secret: never the secret itself (`••••`, or a prefix and the last characters)".to_owned(),
            None,
        )
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Masked {}

impl Masked {
    /// A mask that reveals nothing (`••••`), for secrets a human chose
    /// (passwords), where even the last characters say too much.
    pub fn hidden() -> Masked {
        Masked("••••".to_owned())
    }

    /// Masks `secret` with [`mask`].
    pub fn of(secret: &SecretString) -> Masked {
        Masked(mask(secret.expose_secret()))
    }

    /// The masked text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Masked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Masked({:?})", self.0)
    }
}

impl serde::Serialize for Masked {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    #[test]
    fn a_generated_key_reads_back_from_its_hex_form() {
        let key = SecretKey::generate();
        let text = key.to_hex();
        assert_eq!(text.expose_secret().len(), 64);
        assert!(
            text.expose_secret()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        let back = SecretKey::parse(text.expose_secret()).unwrap();
        assert_eq!(back.id(), key.id());
        assert!(back.same_key(&key));
    }

    use super::*;
    use base64::engine::general_purpose;
    use proptest::prelude::*;

    /// A fixed random key (from `/dev/urandom`), for tests only. Its
    /// standard base64 contains both `+` and `/`.
    const HEX_KEY: &str = "fdb5a8e2efbf78247bf864cc33c240276c00d507633b549e772002fb8de1f5d1";

    /// Another fixed random key, for tests only.
    const OTHER_HEX_KEY: &str = "fbca07045ec4c99574f77df6955af802dcff68e504fe53b4fe1546af984472f4";

    fn key_bytes() -> [u8; 32] {
        let mut b = [0u8; 32];
        hex::decode_to_slice(HEX_KEY, &mut b).unwrap();
        b
    }

    fn ctx() -> SecretContext<'static> {
        SecretContext {
            project: "acme",
            record: "endpoint-1",
            field: "bearer_token",
        }
    }

    fn vault() -> AesGcmVault {
        AesGcmVault::new(Keyring::new(SecretKey::parse(HEX_KEY).unwrap()))
    }

    #[test]
    fn round_trip() {
        let v = vault();
        for pt in [&b""[..], b"x", b"hello world", &[0u8; 1000][..]] {
            let ct = v.seal(pt, &ctx()).unwrap();
            assert_eq!(ct.version(), 1);
            assert_eq!(ct.key_id(), v.current_key_id());
            assert_eq!(ct.len(), MIN_CIPHERTEXT_LEN + pt.len());
            assert_eq!(&v.open(&ct, &ctx()).unwrap()[..], pt);
        }
        let ct = v.seal_str("tökén", &ctx()).unwrap();
        assert_eq!(v.open_string(&ct, &ctx()).unwrap().expose_secret(), "tökén");
    }

    #[test]
    fn nonces_differ() {
        let v = vault();
        let a = v.seal(b"same", &ctx()).unwrap();
        let b = v.seal(b"same", &ctx()).unwrap();
        assert_ne!(a, b);
    }

    /// Two vaults with the same key (two processes sharing SECRET_KEY)
    /// sealing the same plaintext never repeat a nonce. With 96-bit random
    /// nonces a repeat among 20,000 has probability about 2^-68.
    #[test]
    fn nonces_never_repeat_across_vaults() {
        const SEALS_PER_VAULT: usize = 10_000;
        let a = vault();
        let b = vault();
        let mut seen = std::collections::HashSet::with_capacity(2 * SEALS_PER_VAULT);
        for _ in 0..SEALS_PER_VAULT {
            for v in [&a, &b] {
                let ct = v.seal(b"same plaintext", &ctx()).unwrap();
                assert!(seen.insert(ct.nonce), "nonce repeated");
            }
        }
        assert_eq!(seen.len(), 2 * SEALS_PER_VAULT);
    }

    #[test]
    fn open_string_rejects_non_utf8() {
        let v = vault();
        let ct = v.seal(&[0xff, 0xfe], &ctx()).unwrap();
        assert_eq!(v.open_string(&ct, &ctx()).unwrap_err(), VaultError::Utf8);
    }

    #[test]
    fn binary_and_text_forms_round_trip() {
        let v = vault();
        let ct = v.seal(b"payload", &ctx()).unwrap();
        let bytes = ct.to_bytes();
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..5], &ct.key_id().0);
        assert_eq!(Ciphertext::from_bytes(&bytes).unwrap(), ct);

        let text = ct.to_text();
        assert!(text.starts_with("erv1:"));
        assert!(!text.contains('=') && !text.contains('+') && !text.contains('/'));
        assert_eq!(Ciphertext::from_text(&text).unwrap(), ct);
        assert_eq!(ct.to_string(), text);
        assert_eq!(text.parse::<Ciphertext>().unwrap(), ct);

        let json = serde_json::to_string(&ct).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        let back: Ciphertext = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ct);
        assert_eq!(&v.open(&back, &ctx()).unwrap()[..], b"payload");
    }

    #[test]
    fn text_form_errors() {
        assert!(matches!(
            Ciphertext::from_text(""),
            Err(VaultError::Malformed { .. })
        ));
        assert!(matches!(
            Ciphertext::from_text("erv2:AAAA"),
            Err(VaultError::Malformed { .. })
        ));
        assert!(matches!(
            Ciphertext::from_text("erv1:!!!"),
            Err(VaultError::Malformed { .. })
        ));
        assert!(matches!(
            Ciphertext::from_text("erv1:AQ"),
            Err(VaultError::Malformed { .. })
        ));
        let ct = vault().seal(b"x", &ctx()).unwrap();
        let text = ct.to_text();
        assert!(Ciphertext::from_text(&format!(" {text}")).is_err());
        assert!(Ciphertext::from_text(&format!("{text}=")).is_err());
        // Version 2 in the text form.
        let mut bytes = ct.to_bytes();
        bytes[0] = 2;
        let t2 = format!("erv1:{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(
            Ciphertext::from_text(&t2),
            Err(VaultError::UnsupportedVersion(2))
        );

        let err = serde_json::from_str::<Ciphertext>("\"erv1:secret-looking-input!\"").unwrap_err();
        assert!(!err.to_string().contains("secret-looking-input"));
        assert!(serde_json::from_str::<Ciphertext>("42").is_err());
    }

    #[test]
    fn from_bytes_errors() {
        assert!(matches!(
            Ciphertext::from_bytes(&[]),
            Err(VaultError::Malformed { .. })
        ));
        for len in 1..MIN_CIPHERTEXT_LEN {
            let mut data = vec![0u8; len];
            data[0] = 1;
            assert!(
                matches!(
                    Ciphertext::from_bytes(&data),
                    Err(VaultError::Malformed { .. })
                ),
                "len {len}"
            );
        }
        let mut data = vec![0u8; MIN_CIPHERTEXT_LEN];
        data[0] = 1;
        assert!(Ciphertext::from_bytes(&data).is_ok());
        for version in [0u8, 2, 255] {
            data[0] = version;
            assert_eq!(
                Ciphertext::from_bytes(&data),
                Err(VaultError::UnsupportedVersion(version))
            );
        }
    }

    #[test]
    fn every_flipped_byte_fails() {
        let v = vault();
        let ct = v.seal(b"the quick brown fox", &ctx()).unwrap();
        let bytes = ct.to_bytes();
        for pos in 0..bytes.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut tampered = bytes.clone();
                tampered[pos] ^= mask;
                let result = Ciphertext::from_bytes(&tampered).and_then(|c| v.open(&c, &ctx()));
                assert!(
                    result.is_err(),
                    "flip {mask:#04x} at byte {pos} was accepted"
                );
            }
        }
        // Truncation and extension fail too.
        for len in 0..bytes.len() {
            let r = Ciphertext::from_bytes(&bytes[..len]).and_then(|c| v.open(&c, &ctx()));
            assert!(r.is_err(), "truncated to {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        let r = Ciphertext::from_bytes(&longer).and_then(|c| v.open(&c, &ctx()));
        assert_eq!(r.unwrap_err(), VaultError::Decrypt);
    }

    #[test]
    fn wrong_context_fails() {
        let v = vault();
        let good = ctx();
        let ct = v.seal(b"secret", &good).unwrap();
        for bad in [
            SecretContext {
                project: "other",
                ..good
            },
            SecretContext {
                record: "endpoint-2",
                ..good
            },
            SecretContext {
                field: "password",
                ..good
            },
        ] {
            assert_eq!(v.open(&ct, &bad).unwrap_err(), VaultError::Decrypt);
            assert_eq!(v.open_string(&ct, &bad).unwrap_err(), VaultError::Decrypt);
        }
    }

    #[test]
    fn aad_is_unambiguous() {
        let a = SecretContext {
            project: "ab",
            record: "c",
            field: "d",
        };
        let b = SecretContext {
            project: "a",
            record: "bc",
            field: "d",
        };
        assert_ne!(a.aad(), b.aad());
        let mut expected = b"echorelay/v1".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 2]);
        expected.extend_from_slice(b"ab");
        expected.extend_from_slice(&[0, 0, 0, 1]);
        expected.extend_from_slice(b"c");
        expected.extend_from_slice(&[0, 0, 0, 1]);
        expected.extend_from_slice(b"d");
        assert_eq!(a.aad(), expected);

        let v = vault();
        let ct = v.seal(b"s", &a).unwrap();
        assert_eq!(v.open(&ct, &b).unwrap_err(), VaultError::Decrypt);
    }

    #[test]
    fn wrong_key_fails() {
        let v = vault();
        let ct = v.seal(b"secret", &ctx()).unwrap();
        let other = AesGcmVault::new(Keyring::new(SecretKey::generate()));
        assert_eq!(
            other.open(&ct, &ctx()).unwrap_err(),
            VaultError::UnknownKey(ct.key_id())
        );
        // Same key id claimed, different key material (forged header).
        let mut bytes = ct.to_bytes();
        bytes[1..5].copy_from_slice(&other.current_key_id().0);
        let forged = Ciphertext::from_bytes(&bytes).unwrap();
        assert_eq!(
            other.open(&forged, &ctx()).unwrap_err(),
            VaultError::Decrypt
        );
    }

    #[test]
    fn previous_key_still_opens_after_rotation() {
        let old = SecretKey::from_bytes(key_bytes());
        let old_id = old.id();
        let v1 = AesGcmVault::new(Keyring::new(old));
        let ct = v1.seal(b"legacy", &ctx()).unwrap();

        let new = SecretKey::generate();
        let new_id = new.id();
        let ring = Keyring::new(new).with_previous(SecretKey::from_bytes(key_bytes()));
        assert_eq!(ring.current_id(), new_id);
        assert_eq!(ring.key_ids().collect::<Vec<_>>(), vec![new_id, old_id]);
        let v2 = AesGcmVault::new(ring);
        assert!(!v2.is_current(&ct));
        assert_eq!(&v2.open(&ct, &ctx()).unwrap()[..], b"legacy");
        let fresh = v2.seal(b"new", &ctx()).unwrap();
        assert_eq!(fresh.key_id(), new_id);
        assert!(v2.is_current(&fresh));
    }

    #[test]
    fn rewrap_moves_to_current_key() {
        let old = SecretKey::from_bytes(key_bytes());
        let v_old = AesGcmVault::new(Keyring::new(old));
        let ct = v_old.seal(b"rotate me", &ctx()).unwrap();

        let new_hex = OTHER_HEX_KEY;
        let v = AesGcmVault::new(Keyring::parse(new_hex, &[HEX_KEY]).unwrap());
        let rewrapped = v.rewrap(&ct, &ctx()).unwrap();
        assert_eq!(rewrapped.key_id(), v.current_key_id());
        assert_ne!(rewrapped.key_id(), ct.key_id());
        assert!(v.is_current(&rewrapped));
        assert_eq!(&v.open(&rewrapped, &ctx()).unwrap()[..], b"rotate me");
        // Already current: unchanged.
        assert_eq!(v.rewrap(&rewrapped, &ctx()).unwrap(), rewrapped);
        // Rewrap under the wrong context fails.
        let bad = SecretContext {
            field: "other",
            ..ctx()
        };
        assert_eq!(v.rewrap(&ct, &bad).unwrap_err(), VaultError::Decrypt);

        // A vault with only the new key cannot open the old ciphertext, but
        // opens the rewrapped one.
        let v_new_only = AesGcmVault::new(Keyring::parse(new_hex, &[]).unwrap());
        assert_eq!(
            v_new_only.open(&ct, &ctx()).unwrap_err(),
            VaultError::UnknownKey(ct.key_id())
        );
        assert_eq!(
            &v_new_only.open(&rewrapped, &ctx()).unwrap()[..],
            b"rotate me"
        );
        // And the old-only vault cannot open the rewrapped one.
        assert_eq!(
            v_old.open(&rewrapped, &ctx()).unwrap_err(),
            VaultError::UnknownKey(rewrapped.key_id())
        );
    }

    #[test]
    fn forwarding_impls() {
        let arc: Arc<dyn SecretVault> = Arc::new(vault());
        let boxed: Box<dyn SecretVault> = Box::new(vault());
        let ct = arc.seal_str("via arc", &ctx()).unwrap();
        assert_eq!(
            boxed.open_string(&ct, &ctx()).unwrap().expose_secret(),
            "via arc"
        );
        assert!(boxed.is_current(&ct));
        assert_eq!(arc.rewrap(&ct, &ctx()).unwrap(), ct);
        fn assert_vault<V: SecretVault>(_: &V) {}
        assert_vault(&arc);
        assert_vault(&boxed);
        assert_vault(&Arc::new(vault()));
    }

    #[test]
    fn key_parse_accepts_hex_and_base64() {
        let expected = SecretKey::from_bytes(key_bytes()).id();
        let b = key_bytes();
        let inputs = [
            HEX_KEY.to_owned(),
            HEX_KEY.to_uppercase(),
            format!("  {HEX_KEY}\n"),
            general_purpose::STANDARD.encode(b),
            general_purpose::STANDARD_NO_PAD.encode(b),
            general_purpose::URL_SAFE.encode(b),
            general_purpose::URL_SAFE_NO_PAD.encode(b),
            format!("\t{}\r\n", general_purpose::STANDARD.encode(b)),
        ];
        for input in &inputs {
            assert_eq!(SecretKey::parse(input).unwrap().id(), expected, "{input}");
        }
        // The key's bytes differ between the two alphabets.
        let std_b64 = general_purpose::STANDARD.encode(b);
        let url = general_purpose::URL_SAFE_NO_PAD.encode(b);
        assert!(std_b64.contains('+') && std_b64.contains('/'));
        assert!(url.contains('-') && url.contains('_'));
        // Unpadded base64 made only of hex digits is still base64.
        let all_hex_b64 = "747A232d6CfDA1abA6DFae6E8FdcB56df5dBB93A8fc";
        assert_eq!(all_hex_b64.len(), 43);
        assert!(all_hex_b64.bytes().all(|c| c.is_ascii_hexdigit()));
        let decoded = general_purpose::STANDARD_NO_PAD
            .decode(all_hex_b64)
            .unwrap();
        let expected: [u8; 32] = decoded.try_into().unwrap();
        assert_eq!(
            SecretKey::parse(all_hex_b64).unwrap().id(),
            SecretKey::from_bytes(expected).id()
        );
    }

    #[test]
    fn key_parse_rejects() {
        let invalid = |s: &str| {
            let err = SecretKey::parse(s).unwrap_err();
            assert!(
                matches!(err, VaultError::InvalidSecretKey { .. }),
                "{s:?}: {err:?}"
            );
            if s.len() > 8 {
                assert!(!err.to_string().contains(s.trim()), "error echoes input");
            }
        };
        invalid("");
        invalid("   \n");
        invalid(&hex::encode([1u8; 31]));
        invalid(&hex::encode([1u8; 33]));
        invalid(&hex::encode([1u8; 64]));
        invalid(&general_purpose::STANDARD.encode([1u8; 31]));
        invalid(&general_purpose::STANDARD.encode([1u8; 33]));
        invalid(&general_purpose::URL_SAFE_NO_PAD.encode([1u8; 31]));
        invalid(&general_purpose::URL_SAFE_NO_PAD.encode([1u8; 33]));
        invalid("not a key at all");
        invalid("correct horse battery staple correct horse battery");
        invalid(&format!("{}z", &HEX_KEY[..63]));
        invalid(&"A".repeat(10_000));
        // Mixed alphabets.
        let mut mixed = general_purpose::STANDARD.encode(key_bytes());
        mixed.replace_range(0..1, "-");
        mixed.replace_range(1..2, "+");
        invalid(&mixed);
        // Inner whitespace.
        invalid(&format!("{} {}", &HEX_KEY[..32], &HEX_KEY[32..]));
    }

    #[test]
    fn keyring_rejects_duplicates() {
        let b64 = general_purpose::STANDARD.encode(key_bytes());
        assert_eq!(
            Keyring::parse(HEX_KEY, &[&b64]).unwrap_err(),
            VaultError::InvalidSecretKey {
                reason: "duplicate key in keyring"
            }
        );
        assert_eq!(
            Keyring::parse(HEX_KEY, &[OTHER_HEX_KEY, OTHER_HEX_KEY]).unwrap_err(),
            VaultError::InvalidSecretKey {
                reason: "duplicate key in keyring"
            }
        );
        assert_eq!(
            Keyring::parse(HEX_KEY, &[OTHER_HEX_KEY])
                .unwrap()
                .key_ids()
                .count(),
            2
        );
        assert!(matches!(
            Keyring::parse(HEX_KEY, &["garbage"]),
            Err(VaultError::InvalidSecretKey { .. })
        ));
        let ring = Keyring::new(SecretKey::from_bytes(key_bytes()))
            .with_previous(SecretKey::from_bytes(key_bytes()));
        assert_eq!(ring.key_ids().count(), 1);
    }

    /// Asserts that `bytes` are refused with `reason` by every checked path
    /// (hex, base64 both alphabets, keyring, `try_from_bytes`), and that the
    /// error does not echo the input.
    fn assert_refused(bytes: [u8; 32], reason: &'static str) {
        let expected = VaultError::InvalidSecretKey { reason };
        let hex_text = hex::encode(bytes);
        let b64_text = general_purpose::STANDARD.encode(bytes);
        let url_text = general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        for text in [&hex_text, &hex_text.to_uppercase(), &b64_text, &url_text] {
            let err = SecretKey::parse(text).unwrap_err();
            assert_eq!(err, expected, "{text}");
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(text.as_str()), "error echoes input");
            assert!(!shown.contains(&hex_text[..8]), "error echoes key bytes");
            assert_eq!(Keyring::parse(text, &[]).unwrap_err(), expected);
            assert_eq!(Keyring::parse(HEX_KEY, &[text]).unwrap_err(), expected);
        }
        assert_eq!(SecretKey::try_from_bytes(bytes).unwrap_err(), expected);
        // The unchecked constructor still takes them (test vectors).
        let _ = SecretKey::from_bytes(bytes);
    }

    fn hex32(text: &str) -> [u8; 32] {
        let mut b = [0u8; 32];
        hex::decode_to_slice(text, &mut b).unwrap();
        b
    }

    #[test]
    fn refuses_one_repeated_byte() {
        for b in [0x00u8, 0x01, 0x42, 0xab, 0xfb, 0xff] {
            assert_refused([b; 32], REFUSED_ALL_EQUAL);
        }
    }

    #[test]
    fn refuses_counting_sequences() {
        let step = |start: u8, step: u8| -> [u8; 32] {
            std::array::from_fn(|i| start.wrapping_add(step.wrapping_mul(i as u8)))
        };
        // The old documentation key 00 01 02 ... 1f.
        assert_eq!(
            hex::encode(step(0, 1)),
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        );
        assert_refused(step(0, 1), REFUSED_COUNTING);
        assert_refused(step(0xf0, 1), REFUSED_COUNTING); // wraps past ff
        assert_refused(step(0x1f, 0xff), REFUSED_COUNTING); // 1f 1e ... 00
        assert_refused(step(0xf0, 2), REFUSED_COUNTING);
        assert_refused(step(0x80, 0x35), REFUSED_COUNTING);
    }

    #[test]
    fn refuses_short_repeated_patterns() {
        assert_refused(hex32(&"01020304".repeat(8)), REFUSED_PERIODIC);
        assert_refused(hex32(&"abcd".repeat(16)), REFUSED_PERIODIC);
        let random = key_bytes();
        for period in 2..=16 {
            let repeated: [u8; 32] = std::array::from_fn(|i| random[i % period]);
            assert_refused(repeated, REFUSED_PERIODIC);
        }
        // A pattern of 17 bytes is not refused for repeating (and this one
        // has 17 distinct, non-printable bytes).
        let seventeen: [u8; 32] = std::array::from_fn(|i| random[i % 17]);
        assert!(SecretKey::try_from_bytes(seventeen).is_ok());
        // Period 16 with one byte changed in the second half is not periodic.
        let mut almost: [u8; 32] = std::array::from_fn(|i| random[i % 16]);
        almost[31] ^= 1;
        assert!(SecretKey::try_from_bytes(almost).is_ok());
    }

    #[test]
    fn refuses_few_distinct_bytes() {
        // 11 distinct values, neither periodic nor counting.
        let eleven = hex32("fdb5a8e2efbf78247bf864e224b5f8fdbf64a87bef7864f87b2478bfefe2a8b5");
        assert_refused(eleven, REFUSED_FEW_DISTINCT);
        // The same with one more distinct value (12) is accepted.
        let twelve = hex32("fdb5a8e2efbf78247bf864e224b5f8fdbf64a87bef7864f87b2478bfefe2a8cc");
        assert!(SecretKey::try_from_bytes(twelve).is_ok());
        // The 43-character all-hex base64 example of the docs: 4 values.
        let text = format!("{}A", "a".repeat(42));
        assert_eq!(
            SecretKey::parse(&text).unwrap_err(),
            VaultError::InvalidSecretKey {
                reason: REFUSED_FEW_DISTINCT
            }
        );
    }

    #[test]
    fn refuses_printable_text() {
        assert_refused(*b"correct horse battery staple 123", REFUSED_PRINTABLE);
        assert_refused(*b"Tr0ub4dor&3 is not a key either!", REFUSED_PRINTABLE);
        // Space and tilde are the ends of the printable range.
        let mut edges = *b"correct horse battery staple 12~";
        assert_refused(edges, REFUSED_PRINTABLE);
        // One byte outside 0x20..=0x7e and the rule no longer applies.
        for outside in [0x1f, 0x7f, 0x80, 0xff] {
            edges[31] = outside;
            assert!(SecretKey::try_from_bytes(edges).is_ok(), "{outside:#04x}");
        }
    }

    #[test]
    fn good_keys_accepted_by_every_form() {
        for text in [HEX_KEY, OTHER_HEX_KEY] {
            let b = hex32(text);
            let id = SecretKey::try_from_bytes(b).unwrap().id();
            assert_eq!(SecretKey::from_bytes(b).id(), id);
            for form in [
                text.to_owned(),
                general_purpose::STANDARD.encode(b),
                general_purpose::URL_SAFE_NO_PAD.encode(b),
            ] {
                assert_eq!(SecretKey::parse(&form).unwrap().id(), id, "{form}");
            }
        }
    }

    #[test]
    fn key_id_is_domain_separated_hash() {
        let key = SecretKey::from_bytes(key_bytes());
        let mut h = Sha256::new();
        h.update(b"echorelay.vault.key-id.v1");
        h.update(key_bytes());
        let d = h.finalize();
        assert_eq!(key.id().0, [d[0], d[1], d[2], d[3]]);
        assert_eq!(
            format!("{:?}", key.id()),
            format!("VaultKeyId({})", hex::encode(&d[..4]))
        );
        assert_eq!(key.id().to_string(), hex::encode(&d[..4]));
    }

    #[test]
    fn debug_output_is_redacted() {
        let key = SecretKey::parse(HEX_KEY).unwrap();
        let id = key.id();
        let key_dbg = format!("{key:?}");
        assert_eq!(key_dbg, format!("SecretKey(<redacted>, id={id})"));
        let ring = Keyring::new(key).with_previous(SecretKey::from_bytes([0xab; 32]));
        let ring_dbg = format!("{ring:?}");
        let vault_dbg = format!("{:?}", AesGcmVault::new(ring.clone()));
        for dbg in [&key_dbg, &ring_dbg, &vault_dbg] {
            assert!(!dbg.to_lowercase().contains(HEX_KEY), "{dbg}");
            assert!(!dbg.to_lowercase().contains(&HEX_KEY[..12]), "{dbg}");
            assert!(
                !dbg.to_lowercase().contains(&hex::encode([0xab; 32])[..16]),
                "{dbg}"
            );
            assert!(
                !dbg.contains(&general_purpose::STANDARD.encode(key_bytes())[..12]),
                "{dbg}"
            );
        }
        assert!(ring_dbg.contains(&id.to_string()));
        assert!(vault_dbg.contains(&id.to_string()));

        let v = vault();
        let ct = v.seal(b"plaintext-marker", &ctx()).unwrap();
        assert!(!format!("{ct:?}").contains("plaintext-marker"));
        assert!(!format!("{ct:?}").contains("<redacted>"));
    }

    #[test]
    fn errors_never_carry_secrets() {
        for e in [
            VaultError::Decrypt,
            VaultError::Encrypt,
            VaultError::Utf8,
            VaultError::UnknownKey(VaultKeyId([1, 2, 3, 4])),
            VaultError::UnsupportedVersion(9),
        ] {
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(
            VaultError::Decrypt.to_string(),
            "ciphertext failed authentication"
        );
        assert_eq!(
            VaultError::UnknownKey(VaultKeyId([1, 2, 3, 4])).to_string(),
            "ciphertext was sealed with unknown key 01020304"
        );
    }

    #[test]
    fn mask_cases() {
        assert_eq!(mask(""), "••••");
        assert_eq!(mask("abc"), "••••");
        assert_eq!(mask("abcdefghijk"), "••••"); // 11 chars
        assert_eq!(mask("abcdefghijkl"), "••••ijkl"); // 12 chars
        assert_eq!(mask("sk_live_0123456789abcdef"), "••••cdef");
        // Multibyte: counted in characters, sliced on char boundaries.
        assert_eq!(mask("ééééééééééé"), "••••"); // 11 chars, 22 bytes
        assert_eq!(mask("ééééééééééé€"), "••••ééé€"); // 12 chars
        assert_eq!(mask("pässwörd-grüße"), "••••rüße");
        assert_eq!(mask("🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑🔐"), "••••🔑🔑🔑🔐");
        assert_eq!(mask("aaaaaaaaaaaaa\u{0301}"), "••••aaa\u{0301}");

        let secret = SecretString::from("super-secret-token-XYZW");
        let m = Masked::of(&secret);
        assert_eq!(m.as_str(), "••••XYZW");
        assert_eq!(m.to_string(), "••••XYZW");
        assert_eq!(format!("{m:?}"), "Masked(\"••••XYZW\")");
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"••••XYZW\"");
        assert_eq!(Masked::of(&SecretString::from("short")).as_str(), "••••");
    }

    /// Issue 16 (9e): a sentence without spaces that happens to be valid
    /// base64 of 32 random-looking bytes is refused as a passphrase.
    #[test]
    fn a_passphrase_that_is_valid_base64_is_refused() {
        for phrase in [
            "thequickbrownfoxjumpsoverthelazydogagainnow",
            "CorrectHorseBatteryStapleIsNotAKeyForRelays",
            "CorrectHorseBatteryStapleIsNotAKeyForRelays=",
        ] {
            // It would decode to 32 bytes that pass the byte rules.
            let decoded = general_purpose::STANDARD_NO_PAD
                .decode(phrase.trim_end_matches('='))
                .unwrap();
            assert_eq!(decoded.len(), 32);
            assert_eq!(
                non_random_reason(&decoded.clone().try_into().unwrap()),
                None
            );
            let err = SecretKey::parse(phrase).unwrap_err().to_string();
            assert!(err.contains("passphrase"), "{phrase}: {err}");
            assert!(!err.contains(phrase), "no echo");
        }
        // Letters only but both cases well mixed, as random text is: kept.
        assert!(!looks_like_words(
            "AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGhIjKlMnOpQ"
        ));
        assert!(looks_like_words(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJabcdefg"
        ));
        assert!(!looks_like_words(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKabcdef"
        ));
        assert!(!looks_like_words(
            "abcdefghijklmnopqrstuvwxyzabcdefghijklmnop4"
        ));
    }

    proptest! {
        /// Issue 16 (9e): any 32 random bytes, base64 in every accepted
        /// form, parse (the text rule refuses ≈ 7·10^-8 of them).
        #[test]
        fn random_keys_in_base64_are_accepted(bytes in any::<[u8; 32]>()) {
            prop_assume!(non_random_reason(&Zeroizing::new(bytes)).is_none());
            for text in [
                general_purpose::STANDARD.encode(bytes),
                general_purpose::STANDARD_NO_PAD.encode(bytes),
                general_purpose::URL_SAFE.encode(bytes),
                general_purpose::URL_SAFE_NO_PAD.encode(bytes),
            ] {
                let key = SecretKey::parse(&text);
                prop_assert!(key.is_ok(), "{:?}", key.err());
                prop_assert_eq!(key.unwrap().id(), SecretKey::from_bytes(bytes).id());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn prop_round_trip(pt in proptest::collection::vec(any::<u8>(), 0..512),
                           project in ".{0,16}", field in "[a-z_]{1,12}") {
            let v = vault();
            let c = SecretContext { project: &project, record: "r", field: &field };
            let ct = v.seal(&pt, &c).unwrap();
            prop_assert_eq!(&v.open(&ct, &c).unwrap()[..], &pt[..]);
            let back = Ciphertext::from_text(&ct.to_text()).unwrap();
            prop_assert_eq!(&back, &ct);
            prop_assert_eq!(Ciphertext::from_bytes(&ct.to_bytes()).unwrap(), ct);
        }

        #[test]
        fn prop_flipped_bit_fails(pt in proptest::collection::vec(any::<u8>(), 0..512),
                                  pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let v = vault();
            let ct = v.seal(&pt, &ctx()).unwrap();
            let mut bytes = ct.to_bytes();
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let result = Ciphertext::from_bytes(&bytes).and_then(|c| v.open(&c, &ctx()));
            prop_assert!(result.is_err());
        }

        #[test]
        fn prop_decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128),
                                     text in "\\PC{0,80}") {
            let v = vault();
            if let Ok(ct) = Ciphertext::from_bytes(&data) {
                prop_assert_eq!(ct.to_bytes(), data.clone());
                let _ = v.open(&ct, &ctx());
            }
            let _ = Ciphertext::from_text(&text);
            let _ = Ciphertext::from_text(&format!("erv1:{text}"));
            let _ = SecretKey::parse(&text);
        }

        /// Random keys, from proptest's generator and from the operating
        /// system's, are never refused, in hex or either base64 alphabet.
        #[test]
        fn prop_random_keys_are_accepted(from_proptest in any::<[u8; 32]>()) {
            let mut from_os = [0u8; 32];
            OsRng.fill_bytes(&mut from_os);
            for b in [from_proptest, from_os] {
                let expected: Result<VaultKeyId, VaultError> = Ok(SecretKey::from_bytes(b).id());
                prop_assert_eq!(SecretKey::try_from_bytes(b).map(|k| k.id()), expected.clone());
                for text in [
                    hex::encode(b),
                    general_purpose::STANDARD.encode(b),
                    general_purpose::URL_SAFE_NO_PAD.encode(b),
                ] {
                    prop_assert_eq!(SecretKey::parse(&text).map(|k| k.id()), expected.clone());
                }
            }
        }

        #[test]
        fn prop_mask_reveals_at_most_four_chars(s in "\\PC{0,40}") {
            let m = mask(&s);
            prop_assert!(m.starts_with("••••"));
            let shown: String = m.chars().skip(4).collect();
            let n = s.chars().count();
            if n >= 12 {
                prop_assert_eq!(shown.chars().count(), 4);
                prop_assert!(s.ends_with(&shown));
            } else {
                prop_assert_eq!(shown, "");
            }
        }
    }
}
