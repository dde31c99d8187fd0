//! Passwords (S6): bcrypt, compatible with PHP's `password_hash` and
//! Symfony's `NativePasswordHasher`.
//!
//! - New hashes are bcrypt at cost [`DEFAULT_COST`] (13, Symfony's default;
//!   configurable through [`PasswordPolicy`], never below [`MIN_COST`]) and
//!   are written with the `$2y$` prefix, so a PHP/Symfony application that
//!   shares the table accepts them as they are. `$2y$`, `$2b$` and `$2a$`
//!   hashes verify (`$2x$`, the prefix of the old sign-extension bug, is
//!   refused as malformed).
//! - Symfony's rule for long input, applied on hash *and* on verify: a
//!   password longer than 72 bytes or containing a NUL byte is first replaced
//!   by `base64(SHA-512(password))`, of which bcrypt uses the first 72 bytes.
//!   So nothing is silently truncated (two long passwords that differ only
//!   after byte 72 are different passwords), and hashes made by Symfony for
//!   such passwords verify here.
//! - An empty password never verifies and cannot be hashed; a password over
//!   [`MAX_PASSWORD_BYTES`] is refused.
//! - The comparison of digests is constant-time (`bcrypt::verify` compares
//!   with `subtle::ConstantTimeEq`).
//! - [`hash_password_async`] and [`verify_password_async`] run bcrypt on the
//!   blocking pool (`spawn_blocking`), so a login never stalls the executor.
//! - [`verify_dummy`] / [`verify_dummy_async`] spend one full verification
//!   for an unknown account, so a login for an account that does not exist
//!   costs the same time as one that does (no enumeration by timing).

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, Zeroizing};

/// The bcrypt cost of new hashes unless configured otherwise (Symfony's
/// default): about half a second per hash or verification on a 2020s core.
pub const DEFAULT_COST: u32 = 13;
/// The lowest cost a [`PasswordPolicy`] accepts for new hashes.
pub const MIN_COST: u32 = 10;
/// The highest cost bcrypt can express.
pub const MAX_COST: u32 = 31;
/// The longest password accepted, in bytes (UTF-8). Longer input is refused
/// with [`PasswordError::TooLong`] (Symfony's limit too).
pub const MAX_PASSWORD_BYTES: usize = 4096;

/// How many bytes of input bcrypt uses.
const BCRYPT_INPUT_BYTES: usize = 72;
/// Length of a bcrypt hash string: `$2y$13$` + 22 chars salt + 31 chars digest.
const HASH_LEN: usize = 60;
/// The lowest cost bcrypt itself accepts. Hashes below [`MIN_COST`] (made by
/// older applications) still verify; [`needs_rehash`] flags them.
const BCRYPT_MIN_COST: u32 = 4;
/// The password behind every dummy hash (see [`dummy_hash`]). Knowing it
/// gains nothing: [`verify_dummy`] never reports a match.
const DUMMY_PASSWORD: &[u8] = b"echorelay: no such account";

/// Why a password could not be hashed or checked. None of the messages
/// contains a password or a hash.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PasswordError {
    /// The password is empty (it can never be set, and never verifies).
    #[error("password is empty")]
    Empty,
    /// The password is longer than [`MAX_PASSWORD_BYTES`].
    #[error("password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// A bcrypt cost outside [`MIN_COST`]`..=`[`MAX_COST`].
    #[error("bcrypt cost {0} is outside {MIN_COST}..={MAX_COST}")]
    CostOutOfRange(u32),
    /// The stored string is not a `$2a$`/`$2b$`/`$2y$` bcrypt hash.
    #[error("malformed bcrypt hash")]
    MalformedHash,
    /// bcrypt itself failed (no OS randomness for a salt) or the blocking
    /// task running it did not complete (panic, runtime shut down, no runtime).
    #[error("password hashing failed")]
    Hashing,
    /// A new password is shorter than the policy's minimum (in characters).
    #[error("password must be at least {min} characters long")]
    TooShort {
        /// The minimum.
        min: usize,
    },
    /// A new password is common, breached or easy to guess (a dictionary
    /// word, a keyboard pattern, a repeat, the user's own email...).
    #[error("password is too common or too easy to guess; choose a longer, less predictable one")]
    TooWeak,
    /// The policy's own settings are out of range.
    #[error("password policy: minimum length must be 8-128 characters, minimum strength 0-4")]
    PolicyOutOfRange,
}

/// Default minimum length of a new password, in characters (ASVS V2.1.1).
pub const DEFAULT_MIN_CHARS: usize = 12;
/// Default minimum strength of a new password: zxcvbn score 3 of 4, "safely
/// unguessable" (about 10^10 guesses; ASVS V2.1.7).
pub const DEFAULT_MIN_STRENGTH: u8 = 3;
/// How much of a new password the strength estimator reads: enough to
/// judge it, and a bound on the estimator's time for 4096-byte input.
const STRENGTH_PREFIX_CHARS: usize = 100;

/// How new passwords are checked and hashed: the bcrypt cost, and the
/// rules a new password must meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PasswordPolicy {
    cost: u32,
    min_chars: usize,
    min_strength: u8,
}

impl PasswordPolicy {
    /// A policy with the given bcrypt cost, which must be within
    /// [`MIN_COST`]`..=`[`MAX_COST`] (each step doubles the time), and
    /// the default rules for new passwords: at least [`DEFAULT_MIN_CHARS`]
    /// characters and strength [`DEFAULT_MIN_STRENGTH`].
    pub fn new(cost: u32) -> Result<Self, PasswordError> {
        if (MIN_COST..=MAX_COST).contains(&cost) {
            Ok(Self {
                cost,
                min_chars: DEFAULT_MIN_CHARS,
                min_strength: DEFAULT_MIN_STRENGTH,
            })
        } else {
            Err(PasswordError::CostOutOfRange(cost))
        }
    }

    /// The same policy with other rules for new passwords: a minimum
    /// length of 8–128 characters and a minimum zxcvbn score of 0–4 (0
    /// turns the common-password check off; not recommended).
    pub fn with_rules(self, min_chars: usize, min_strength: u8) -> Result<Self, PasswordError> {
        if !(8..=128).contains(&min_chars) || min_strength > 4 {
            return Err(PasswordError::PolicyOutOfRange);
        }
        Ok(Self {
            min_chars,
            min_strength,
            ..self
        })
    }

    /// The bcrypt cost of new hashes.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// Checks a new password (registration, change) against the rules:
    /// not empty, at most [`MAX_PASSWORD_BYTES`], at least the minimum
    /// number of characters, and not common, breached or guessable. The
    /// last check is zxcvbn (Dropbox's estimator, with its shipped lists
    /// of the most common passwords from public breaches, English words,
    /// names and keyboard patterns; offline), told about `context` (the
    /// user's email, the site name) so a password made of those is weak.
    ///
    /// ```
    /// use echorelay_core::account::password::{PasswordError, PasswordPolicy};
    /// let p = PasswordPolicy::default();
    /// assert_eq!(p.check_new_password("short", &[]), Err(PasswordError::TooShort { min: 12 }));
    /// assert_eq!(p.check_new_password("password1234", &[]), Err(PasswordError::TooWeak));
    /// assert!(p.check_new_password("velvet-otter-quarry-1987", &[]).is_ok());
    /// ```
    pub fn check_new_password(
        &self,
        password: &str,
        context: &[&str],
    ) -> Result<(), PasswordError> {
        if password.is_empty() {
            return Err(PasswordError::Empty);
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        if password.chars().count() < self.min_chars {
            return Err(PasswordError::TooShort {
                min: self.min_chars,
            });
        }
        if self.min_strength != 0 {
            let end = password
                .char_indices()
                .nth(STRENGTH_PREFIX_CHARS)
                .map_or(password.len(), |(i, _)| i);
            let estimate = zxcvbn::zxcvbn(&password[..end], context);
            if u8::from(estimate.score()) < self.min_strength {
                return Err(PasswordError::TooWeak);
            }
        }
        Ok(())
    }
}

impl Default for PasswordPolicy {
    /// Cost [`DEFAULT_COST`] (13), default rules for new passwords.
    fn default() -> Self {
        Self {
            cost: DEFAULT_COST,
            min_chars: DEFAULT_MIN_CHARS,
            min_strength: DEFAULT_MIN_STRENGTH,
        }
    }
}

/// A bcrypt password hash as stored: a 60-character `$2a$`/`$2b$`/`$2y$`
/// string, the exact text PHP's `password_hash` produces and
/// `password_verify` accepts.
///
/// Only [`PasswordHash::parse`] (also used by `FromStr`, `TryFrom<String>`
/// and deserialization) and [`hash_password`] make one, so a value of this
/// type is always well-formed. It serializes as the plain string. `Debug`
/// shows only the prefix and cost, never the salt or the digest.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Parses a stored hash: `$2a$`, `$2b$` or `$2y$`, a two-digit cost
    /// (04–31: hashes below [`MIN_COST`] made elsewhere still verify), `$`,
    /// then 53 characters of bcrypt's base64 (22 of salt, 31 of digest), 60
    /// characters in all. Anything else is [`PasswordError::MalformedHash`].
    pub fn parse(s: &str) -> Result<Self, PasswordError> {
        let b = s.as_bytes();
        // Every byte is then checked to be ASCII: the frame below byte by
        // byte, the rest against bcrypt's alphabet.
        if b.len() != HASH_LEN {
            return Err(PasswordError::MalformedHash);
        }
        let well_framed = b.starts_with(b"$2")
            && matches!(b.get(2), Some(b'a' | b'b' | b'y'))
            && b.get(3) == Some(&b'$')
            && b.get(6) == Some(&b'$');
        if !well_framed {
            return Err(PasswordError::MalformedHash);
        }
        let cost = cost_digits(b).ok_or(PasswordError::MalformedHash)?;
        if !(BCRYPT_MIN_COST..=MAX_COST).contains(&cost) {
            return Err(PasswordError::MalformedHash);
        }
        let body = b.get(7..).unwrap_or_default();
        if !body
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'/'))
        {
            return Err(PasswordError::MalformedHash);
        }
        // The last character of the salt and of the digest carry unused
        // bits, which must be zero; bcrypt's own parser is the judge (so
        // verification can never fail on a hash that parsed).
        if bcrypt::HashParts::from_str(s).is_err() {
            return Err(PasswordError::MalformedHash);
        }
        Ok(Self(s.to_owned()))
    }

    /// The hash as stored (to write to a database column).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The bcrypt cost recorded in the hash.
    pub fn cost(&self) -> u32 {
        // Always Some: the string was validated by `parse` or made here.
        cost_digits(self.0.as_bytes()).unwrap_or(0)
    }
}

/// The cost digits at bytes 4..6 of a hash string, if both are ASCII digits.
fn cost_digits(b: &[u8]) -> Option<u32> {
    match (b.get(4), b.get(5)) {
        (Some(t @ b'0'..=b'9'), Some(u @ b'0'..=b'9')) => {
            Some(u32::from(t - b'0') * 10 + u32::from(u - b'0'))
        }
        _ => None,
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // "$2y$13$" only: the salt and digest stay out of logs.
        let head = self.0.get(..7).unwrap_or("");
        write!(f, "PasswordHash({head}…)")
    }
}

impl FromStr for PasswordHash {
    type Err = PasswordError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for PasswordHash {
    type Error = PasswordError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<PasswordHash> for String {
    fn from(h: PasswordHash) -> Self {
        h.0
    }
}

/// The bytes bcrypt sees for a password, by Symfony's rule: a password
/// longer than 72 bytes or containing a NUL byte becomes
/// `base64(SHA-512(password))` (88 characters); then the input is cut to the
/// 72 bytes bcrypt uses, explicitly, as PHP's bcrypt does.
fn symfony_input(pw: &[u8]) -> Zeroizing<Vec<u8>> {
    if pw.len() > BCRYPT_INPUT_BYTES || pw.contains(&0) {
        let mut digest = Sha512::digest(pw);
        // `encode` allocates exactly once; `into_bytes` moves, never copies.
        let mut encoded = Zeroizing::new(STANDARD.encode(digest.as_slice()).into_bytes());
        digest.as_mut_slice().zeroize();
        encoded.truncate(BCRYPT_INPUT_BYTES);
        encoded
    } else {
        Zeroizing::new(pw.to_vec())
    }
}

/// Refuses an empty or oversized password for hashing.
fn check_new_password(pw: &[u8]) -> Result<(), PasswordError> {
    if pw.is_empty() {
        Err(PasswordError::Empty)
    } else if pw.len() > MAX_PASSWORD_BYTES {
        Err(PasswordError::TooLong)
    } else {
        Ok(())
    }
}

/// bcrypt of already-prepared input (at most 72 bytes), as `$2y$`.
fn hash_input(input: &[u8], cost: u32) -> Result<PasswordHash, PasswordError> {
    let parts = bcrypt::hash_with_result(input, cost).map_err(|_| PasswordError::Hashing)?;
    Ok(PasswordHash(
        parts.format_for_version(bcrypt::Version::TwoY),
    ))
}

/// Hashes a new password with bcrypt at the policy's cost, as a `$2y$` hash
/// that PHP and Symfony accept. Blocks for the whole bcrypt computation
/// (about 0.5 s at cost 13): from async code use [`hash_password_async`].
///
/// Errors: [`PasswordError::Empty`], [`PasswordError::TooLong`] (over
/// [`MAX_PASSWORD_BYTES`]), [`PasswordError::Hashing`] (no OS randomness).
pub fn hash_password(
    password: &SecretString,
    policy: PasswordPolicy,
) -> Result<PasswordHash, PasswordError> {
    let pw = password.expose_secret().as_bytes();
    check_new_password(pw)?;
    let input = symfony_input(pw);
    hash_input(&input, policy.cost())
}

/// Checks a password against a stored hash (`$2y$`, `$2b$` or `$2a$`),
/// applying Symfony's rule for long or NUL-containing passwords. The digest
/// comparison is constant-time. Blocks for the whole bcrypt computation: from
/// async code use [`verify_password_async`].
///
/// An empty password is `Ok(false)`, whatever the hash. A password over
/// [`MAX_PASSWORD_BYTES`] is [`PasswordError::TooLong`] (without running
/// bcrypt). Callers that face users should turn every `Err` and `Ok(false)`
/// into the same generic authentication failure.
pub fn verify_password(
    password: &SecretString,
    hash: &PasswordHash,
) -> Result<bool, PasswordError> {
    let pw = password.expose_secret().as_bytes();
    if pw.is_empty() {
        return Ok(false);
    }
    if pw.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    let input = symfony_input(pw);
    // bcrypt::verify recomputes with the stored salt and compares the 23-byte
    // digests with subtle's ConstantTimeEq.
    bcrypt::verify(&input[..], hash.as_str()).map_err(|e| match e {
        bcrypt::BcryptError::InvalidHash(_) | bcrypt::BcryptError::CostNotAllowed(_) => {
            PasswordError::MalformedHash
        }
        _ => PasswordError::Hashing,
    })
}

/// Whether a hash should be replaced on the next successful login: its cost
/// differs from the policy's, or it is not a `$2y$` hash.
pub fn needs_rehash(hash: &PasswordHash, policy: PasswordPolicy) -> bool {
    hash.cost() != policy.cost() || !hash.as_str().starts_with("$2y$")
}

/// Runs a bcrypt job on the blocking pool of the current tokio runtime.
async fn on_blocking_pool<T, F>(job: F) -> Result<T, PasswordError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, PasswordError> + Send + 'static,
{
    // try_current instead of spawn_blocking's panic outside a runtime.
    let handle = tokio::runtime::Handle::try_current().map_err(|_| PasswordError::Hashing)?;
    handle
        .spawn_blocking(job)
        .await
        .map_err(|_| PasswordError::Hashing)?
}

/// [`hash_password`] on tokio's blocking pool, so the executor's worker
/// threads stay free for other requests. If this future is dropped, the
/// computation still runs to its end on the pool; the result is discarded.
/// Outside a tokio runtime: [`PasswordError::Hashing`].
pub async fn hash_password_async(
    password: SecretString,
    policy: PasswordPolicy,
) -> Result<PasswordHash, PasswordError> {
    check_new_password(password.expose_secret().as_bytes())?;
    on_blocking_pool(move || hash_password(&password, policy)).await
}

/// The answer for passwords that never reach bcrypt: empty never verifies,
/// over [`MAX_PASSWORD_BYTES`] is refused. Checked before a blocking-pool
/// hop.
fn verdict_without_bcrypt(password: &SecretString) -> Option<Result<bool, PasswordError>> {
    match password.expose_secret().len() {
        0 => Some(Ok(false)),
        n if n > MAX_PASSWORD_BYTES => Some(Err(PasswordError::TooLong)),
        _ => None,
    }
}

/// [`verify_password`] on tokio's blocking pool, so the executor's worker
/// threads stay free for other requests. If this future is dropped, the
/// computation still runs to its end on the pool; the result is discarded.
/// Outside a tokio runtime: [`PasswordError::Hashing`].
pub async fn verify_password_async(
    password: SecretString,
    hash: PasswordHash,
) -> Result<bool, PasswordError> {
    if let Some(verdict) = verdict_without_bcrypt(&password) {
        return verdict;
    }
    on_blocking_pool(move || verify_password(&password, &hash)).await
}

/// One lazily made hash per cost (index = cost), of a fixed password.
static DUMMY_HASHES: [OnceLock<PasswordHash>; MAX_COST as usize + 1] =
    [const { OnceLock::new() }; MAX_COST as usize + 1];

/// A `$2y$` hash at the policy's cost that no account owns, for
/// [`verify_dummy`]. Made once per cost and process (the first call costs one
/// bcrypt hash: call it at startup to keep the first unknown-account login
/// as fast as the others).
///
/// Errors: [`PasswordError::Hashing`] if the hash cannot be made (no OS
/// randomness); a later call tries again.
pub fn dummy_hash(policy: PasswordPolicy) -> Result<&'static PasswordHash, PasswordError> {
    dummy_hash_at(policy.cost())
}

/// The dummy hash at any cost bcrypt accepts (legacy hashes go below
/// [`MIN_COST`]).
fn dummy_hash_at(cost: u32) -> Result<&'static PasswordHash, PasswordError> {
    let slot = usize::try_from(cost)
        .ok()
        .filter(|_| cost >= BCRYPT_MIN_COST)
        .and_then(|i| DUMMY_HASHES.get(i))
        .ok_or(PasswordError::CostOutOfRange(cost))?;
    if let Some(hash) = slot.get() {
        return Ok(hash);
    }
    // Two threads racing here both hash; one result is kept. Harmless.
    let made = hash_input(DUMMY_PASSWORD, cost)?;
    Ok(slot.get_or_init(|| made))
}

/// [`verify_password`], then, for a hash cheaper than the policy's cost (a
/// legacy hash from an older application, say cost 10 under a policy of
/// 13), dummy verifications at the hash's own cost until the total bcrypt
/// work equals one verification at the policy's cost: `2^(P-c) - 1` more
/// at cost `c`, so `2^c * 2^(P-c) = 2^P` key expansions in all. A login
/// for such an account then costs what one for an unknown account costs
/// ([`verify_dummy`] at the policy's cost), and cheap legacy hashes do not
/// make accounts enumerable by timing. (A hash *dearer* than the policy
/// cannot be padded down: keep the policy's cost at least the highest cost
/// in the table.)
pub fn verify_password_padded(
    password: &SecretString,
    hash: &PasswordHash,
    policy: PasswordPolicy,
) -> Result<bool, PasswordError> {
    let verdict = verify_password(password, hash);
    let c = hash.cost();
    for _ in 0..padding_verifications(c, policy.cost()) {
        // Made on the first call, then read from its `OnceLock`.
        let dummy = dummy_hash_at(c)?;
        let _ = verify_password(password, dummy);
    }
    verdict
}

/// How many dummy verifications at `hash_cost` bring one verification at
/// that cost up to the work of one at `policy_cost`: `2^(P-c) - 1`, or
/// none for a hash at or above the policy's cost.
fn padding_verifications(hash_cost: u32, policy_cost: u32) -> u64 {
    policy_cost
        .checked_sub(hash_cost)
        .and_then(|d| 1u64.checked_shl(d))
        .map_or(0, |n| n - 1)
}

/// [`verify_password_padded`] on tokio's blocking pool.
pub async fn verify_password_padded_async(
    password: SecretString,
    hash: PasswordHash,
    policy: PasswordPolicy,
) -> Result<bool, PasswordError> {
    if let Some(verdict) = verdict_without_bcrypt(&password) {
        return verdict;
    }
    on_blocking_pool(move || verify_password_padded(&password, &hash, policy)).await
}

/// Spends exactly the work of [`verify_password`] against a hash at the
/// policy's cost, for a login whose account does not exist, so its timing
/// matches a login with a wrong password for an account that does. Always
/// `Ok(false)`; the errors are those `verify_password` gives for the same
/// password ([`PasswordError::TooLong`]), plus [`PasswordError::Hashing`]
/// from [`dummy_hash`].
pub fn verify_dummy(
    password: &SecretString,
    policy: PasswordPolicy,
) -> Result<bool, PasswordError> {
    let hash = dummy_hash(policy)?;
    verify_password(password, hash).map(|_| false)
}

/// [`verify_dummy`] on tokio's blocking pool (see [`verify_password_async`]).
pub async fn verify_dummy_async(
    password: SecretString,
    policy: PasswordPolicy,
) -> Result<bool, PasswordError> {
    if let Some(verdict) = verdict_without_bcrypt(&password) {
        return verdict;
    }
    on_blocking_pool(move || verify_dummy(&password, policy)).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The cheapest allowed cost keeps the tests fast.
    fn fast() -> PasswordPolicy {
        PasswordPolicy::new(MIN_COST).unwrap()
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s)
    }

    /// 72 bytes of ASCII; `P72 + "X"` is 73 bytes with the same first 72.
    const P72: &str = "echorelay-72-byte-boundary/echorelay-72-byte-boundary/echorelay-72-byte-";

    /// A syntactically valid hash (bcrypt crate's own test vector, "hunter2"
    /// with an all-zero salt at cost 12).
    const VALID: &str = "$2y$12$......................21jzCB1r6pN6rp5O2Ev0ejjTAboskKm";

    #[test]
    fn new_password_rules_are_validated() {
        let p = PasswordPolicy::default();
        let strong = "velvet-otter-quarry-1987";
        assert_eq!(p.with_rules(7, 3), Err(PasswordError::PolicyOutOfRange));
        assert_eq!(p.with_rules(129, 3), Err(PasswordError::PolicyOutOfRange));
        assert_eq!(p.with_rules(12, 5), Err(PasswordError::PolicyOutOfRange));
        // The boundaries themselves are accepted.
        assert!(p.with_rules(8, 4).is_ok());
        assert!(p.with_rules(128, 4).is_ok());
        // A password that reaches the strictest score passes under it.
        let strict = p.with_rules(12, 4).unwrap();
        assert_eq!(strict.check_new_password(strong, &[]), Ok(()));
        let lax = p.with_rules(8, 0).unwrap();
        assert!(lax.check_new_password("password", &[]).is_ok());
        assert_eq!(p.check_new_password("", &[]), Err(PasswordError::Empty));
        let long = "é".repeat(2049);
        assert_eq!(
            p.check_new_password(&long, &[]),
            Err(PasswordError::TooLong)
        );
        // Exactly MAX_PASSWORD_BYTES is a valid length; one byte more is not.
        let max = format!("{strong}{}", "x".repeat(MAX_PASSWORD_BYTES - strong.len()));
        assert_eq!(p.check_new_password(&max, &[]), Ok(()));
        assert_eq!(
            p.check_new_password(&format!("{max}x"), &[]),
            Err(PasswordError::TooLong)
        );
        // Exactly 12 characters (not bytes) is enough length.
        assert_ne!(
            p.check_new_password("ééééééééééé", &[]),
            Ok(()),
            "11 characters"
        );
        assert_ne!(
            p.check_new_password("zq8#Lm2!vR7x", &[]),
            Err(PasswordError::TooShort { min: 12 })
        );
        // The user's own email does not make a strong password.
        assert_eq!(
            p.check_new_password("jane.doe@example.com", &["jane.doe@example.com"]),
            Err(PasswordError::TooWeak)
        );
    }

    #[test]
    fn padded_verify_keeps_the_verdict_of_a_legacy_hash() {
        // A cost-4 hash (an old application's) under a cost-10 policy.
        let legacy = hash_input(b"legacy password here", 4).unwrap();
        assert_eq!(legacy.cost(), 4);
        let right = secret("legacy password here");
        assert!(verify_password_padded(&right, &legacy, fast()).unwrap());
        assert!(!verify_password_padded(&secret("wrong one"), &legacy, fast()).unwrap());
        // At or above the policy's cost there is nothing to pad.
        let h = hash_password(&right, fast()).unwrap();
        assert!(verify_password_padded(&right, &h, fast()).unwrap());
        assert!(dummy_hash_at(3).is_err());
    }

    #[test]
    fn round_trip() {
        let h = hash_password(&secret("correct horse battery staple"), fast()).unwrap();
        assert!(verify_password(&secret("correct horse battery staple"), &h).unwrap());
        assert!(!verify_password(&secret("correct horse battery stapl"), &h).unwrap());
        assert!(!verify_password(&secret("Correct horse battery staple"), &h).unwrap());
    }

    #[test]
    fn unicode_round_trip() {
        let pw = "pässwörd – 密码 🔐";
        let h = hash_password(&secret(pw), fast()).unwrap();
        assert!(verify_password(&secret(pw), &h).unwrap());
        assert!(!verify_password(&secret("passwörd – 密码 🔐"), &h).unwrap());
    }

    #[test]
    fn new_hashes_are_2y_and_parse() {
        let h = hash_password(&secret("pw"), fast()).unwrap();
        assert!(h.as_str().starts_with("$2y$10$"), "{h:?}");
        assert_eq!(h.as_str().len(), 60);
        assert_eq!(PasswordHash::parse(h.as_str()).unwrap(), h);
    }

    #[test]
    fn cost_is_honoured() {
        let h = hash_password(&secret("pw"), fast()).unwrap();
        assert_eq!(h.cost(), MIN_COST);
        assert_eq!(PasswordHash::parse(VALID).unwrap().cost(), 12);
        assert_eq!(PasswordPolicy::default().cost(), DEFAULT_COST);
        assert_eq!(DEFAULT_COST, 13);
    }

    #[test]
    fn policy_bounds() {
        assert_eq!(
            PasswordPolicy::new(9),
            Err(PasswordError::CostOutOfRange(9))
        );
        assert_eq!(
            PasswordPolicy::new(0),
            Err(PasswordError::CostOutOfRange(0))
        );
        assert_eq!(
            PasswordPolicy::new(32),
            Err(PasswordError::CostOutOfRange(32))
        );
        assert_eq!(PasswordPolicy::new(10).unwrap().cost(), 10);
        assert_eq!(PasswordPolicy::new(31).unwrap().cost(), 31);
    }

    #[test]
    fn needs_rehash_on_cost_or_prefix() {
        let p12 = PasswordPolicy::new(12).unwrap();
        let p13 = PasswordPolicy::default();
        let y12 = PasswordHash::parse(VALID).unwrap();
        assert!(!needs_rehash(&y12, p12));
        assert!(needs_rehash(&y12, p13));
        let b12 = PasswordHash::parse(&VALID.replacen("$2y$", "$2b$", 1)).unwrap();
        let a12 = PasswordHash::parse(&VALID.replacen("$2y$", "$2a$", 1)).unwrap();
        assert!(needs_rehash(&b12, p12));
        assert!(needs_rehash(&a12, p12));
        // A legacy low-cost hash parses (it must still verify) and needs a rehash.
        let y04 = PasswordHash::parse(&VALID.replacen("$12$", "$04$", 1)).unwrap();
        assert_eq!(y04.cost(), 4);
        assert!(needs_rehash(&y04, fast()));
        let fresh = hash_password(&secret("pw"), fast()).unwrap();
        assert!(!needs_rehash(&fresh, fast()));
    }

    #[test]
    fn legacy_prefixes_and_low_cost_verify() {
        // One digest (bcrypt crate, cost 4, all-zero salt) under each prefix.
        let parts = bcrypt::hash_with_salt(b"hunter2", 4, [0; 16]).unwrap();
        for v in [
            bcrypt::Version::TwoY,
            bcrypt::Version::TwoB,
            bcrypt::Version::TwoA,
        ] {
            let h = PasswordHash::parse(&parts.format_for_version(v)).unwrap();
            assert_eq!(h.cost(), 4);
            assert!(verify_password(&secret("hunter2"), &h).unwrap());
            assert!(!verify_password(&secret("hunter3"), &h).unwrap());
        }
    }

    #[test]
    fn empty_never_verifies() {
        assert_eq!(
            hash_password(&secret(""), fast()),
            Err(PasswordError::Empty)
        );
        let h = hash_password(&secret("x"), fast()).unwrap();
        assert_eq!(verify_password(&secret(""), &h), Ok(false));
        // Not even against a genuine bcrypt hash of the empty string.
        let empty = bcrypt::hash_with_result(b"", 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        assert!(bcrypt::verify(b"", &empty).unwrap());
        let empty = PasswordHash::parse(&empty).unwrap();
        assert_eq!(verify_password(&secret(""), &empty), Ok(false));
    }

    #[test]
    fn over_4096_bytes_refused() {
        let max = "a".repeat(MAX_PASSWORD_BYTES);
        let over = "a".repeat(MAX_PASSWORD_BYTES + 1);
        assert_eq!(
            hash_password(&secret(&over), fast()),
            Err(PasswordError::TooLong)
        );
        let h = hash_password(&secret(&max), fast()).unwrap();
        assert_eq!(
            verify_password(&secret(&over), &h),
            Err(PasswordError::TooLong)
        );
        assert!(verify_password(&secret(&max), &h).unwrap());
        // Multi-byte: the limit is in bytes, not characters (3 bytes each).
        let over_chars = "€".repeat(1366);
        assert_eq!(
            hash_password(&secret(&over_chars), fast()),
            Err(PasswordError::TooLong)
        );
    }

    #[test]
    fn nothing_after_byte_72_is_ignored() {
        let p73 = format!("{P72}X");
        assert_eq!(P72.len(), 72);
        assert_eq!(p73.len(), 73);
        let h72 = hash_password(&secret(P72), fast()).unwrap();
        let h73 = hash_password(&secret(&p73), fast()).unwrap();
        assert!(verify_password(&secret(P72), &h72).unwrap());
        assert!(verify_password(&secret(&p73), &h73).unwrap());
        assert!(!verify_password(&secret(&p73), &h72).unwrap());
        assert!(!verify_password(&secret(P72), &h73).unwrap());
        // Two long passwords differing only at their last byte.
        let a = format!("{P72}{}", "tail-a".repeat(20));
        let b = format!("{P72}{}", "tail-a".repeat(19) + "tail-b");
        let ha = hash_password(&secret(&a), fast()).unwrap();
        assert!(verify_password(&secret(&a), &ha).unwrap());
        assert!(!verify_password(&secret(&b), &ha).unwrap());
    }

    #[test]
    fn symfony_input_rule() {
        // Up to 72 bytes without NUL: unchanged.
        assert_eq!(&symfony_input(b"abc")[..], b"abc");
        assert_eq!(&symfony_input(P72.as_bytes())[..], P72.as_bytes());
        // Known answers from PHP:
        // base64_encode(hash('sha512', "pass\0word", true)), first 72 bytes.
        let nul = "Mkfoq5D5rVdR9q8GfYQrCWlVkEWReV9db5OQvtJonMRJNigVckFd7tBhnyuIQ+UbG1irxgf9onUTKGHwjO4Y/A==";
        assert_eq!(&symfony_input(b"pass\0word")[..], &nul.as_bytes()[..72]);
        // base64_encode(hash('sha512', str_repeat('x', 73), true)).
        let x73 = "jia7Nf+QT/Y112C44oLasVVbRyp+96JAKwhPwOBXv69yzsA3Wnv2OkR78bFUY3+crW1nCsJyLF/R9HkWeeeWbw==";
        assert_eq!(
            &symfony_input("x".repeat(73).as_bytes())[..],
            &x73.as_bytes()[..72]
        );
        // Always at most 72 bytes, never containing NUL.
        for pw in [&b"\0"[..], b"a\0", &[0xffu8; 4096][..]] {
            let input = symfony_input(pw);
            assert_eq!(input.len(), 72);
            assert!(!input.contains(&0));
        }
    }

    #[test]
    fn nul_byte_password() {
        let h = hash_password(&secret("pass\0word"), fast()).unwrap();
        assert!(verify_password(&secret("pass\0word"), &h).unwrap());
        // What a NUL-terminated C string would have seen, and a near miss.
        assert!(!verify_password(&secret("pass"), &h).unwrap());
        assert!(!verify_password(&secret("pass\0wore"), &h).unwrap());
        // Passwords made only of NULs are not all equal (raw bcrypt's quirk).
        let h1 = hash_password(&secret("\0"), fast()).unwrap();
        assert!(!verify_password(&secret("\0\0"), &h1).unwrap());
    }

    #[test]
    fn malformed_hashes_are_refused() {
        let cases: Vec<String> = vec![
            String::new(),
            "$2y$10$".into(),
            "not a hash".into(),
            VALID[..59].into(),
            format!("{VALID}a"),
            // 60 bytes, but not ASCII: in the body, and in the frame.
            format!("{}é", &VALID[..58]),
            format!("$2é{}", &VALID[4..]),
            VALID.replacen("$2y$", "$2x$", 1),
            VALID.replacen("$2y$", "$2c$", 1),
            VALID.replacen("$2y$", "$1y$", 1),
            VALID.replacen("$2y$", "$2$$", 1),
            VALID.replacen("$12$", "$1a$", 1),
            VALID.replacen("$12$", "$+5$", 1),
            VALID.replacen("$12$", "$03$", 1),
            VALID.replacen("$12$", "$32$", 1),
            VALID.replacen("$12$", "$99$", 1),
            VALID.replacen("$12$", "-12$", 1),
            // A '$' or '!' or '+' inside the body.
            format!("{}${}", &VALID[..30], &VALID[31..]),
            format!("{}!{}", &VALID[..30], &VALID[31..]),
            format!("{}+{}", &VALID[..30], &VALID[31..]),
            // Non-zero unused bits in the salt's last character.
            format!("{}a{}", &VALID[..28], &VALID[29..]),
            // 60 bytes with a multi-byte character (slicing must not panic).
            "$2b$04$aaaaaaaaaaaaaaaaaaaaa£aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
            // Argon2 and other schemes are not bcrypt.
            "$argon2id$v=19$m=65536,t=4,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG".into(),
        ];
        for c in &cases {
            assert_eq!(
                PasswordHash::parse(c),
                Err(PasswordError::MalformedHash),
                "{c:?}"
            );
            assert!(c.parse::<PasswordHash>().is_err());
            assert!(
                serde_json::from_value::<PasswordHash>(serde_json::Value::String(c.clone()))
                    .is_err()
            );
        }
    }

    #[test]
    fn serde_is_the_plain_string() {
        let h = PasswordHash::parse(VALID).unwrap();
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{VALID}\""));
        let back: PasswordHash = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
        assert_eq!(String::from(back), VALID);
    }

    #[test]
    fn debug_hides_salt_and_digest() {
        let h = PasswordHash::parse(VALID).unwrap();
        let dbg = format!("{h:?}");
        assert_eq!(dbg, "PasswordHash($2y$12$…)");
        assert!(!dbg.contains("21jzCB1r6pN6rp5O2Ev0ejjTAboskKm"));
        assert!(!dbg.contains("......................"));
        let err = format!(
            "{:?} {}",
            PasswordHash::parse("$2y$10$secretsecret"),
            PasswordError::MalformedHash
        );
        assert!(!err.contains("secret"));
    }

    #[test]
    fn dummy_verification_never_matches() {
        let h = dummy_hash(fast()).unwrap();
        assert_eq!(h.cost(), MIN_COST);
        assert!(h.as_str().starts_with("$2y$"));
        assert!(
            std::ptr::eq(h, dummy_hash(fast()).unwrap()),
            "made once per cost"
        );
        let dummy_pw = secret(std::str::from_utf8(DUMMY_PASSWORD).unwrap());
        // The dummy password does match the dummy hash, yet never reports so.
        assert!(verify_password(&dummy_pw, h).unwrap());
        assert_eq!(verify_dummy(&dummy_pw, fast()), Ok(false));
        assert_eq!(verify_dummy(&secret("guess"), fast()), Ok(false));
        assert_eq!(
            verify_dummy(&secret(&"a".repeat(MAX_PASSWORD_BYTES + 1)), fast()),
            Err(PasswordError::TooLong)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_variants_run_on_the_blocking_pool() {
        let h = hash_password_async(secret("async pw"), fast())
            .await
            .unwrap();
        assert!(h.as_str().starts_with("$2y$10$"));
        assert!(
            verify_password_async(secret("async pw"), h.clone())
                .await
                .unwrap()
        );
        assert!(
            !verify_password_async(secret("async pX"), h.clone())
                .await
                .unwrap()
        );
        assert_eq!(
            verify_password_async(secret(""), h.clone()).await,
            Ok(false)
        );
        assert_eq!(
            verify_password_async(secret(&"a".repeat(4097)), h.clone()).await,
            Err(PasswordError::TooLong)
        );
        assert_eq!(
            hash_password_async(secret(""), fast()).await,
            Err(PasswordError::Empty)
        );
        assert_eq!(
            verify_dummy_async(secret("async pw"), fast()).await,
            Ok(false)
        );
        // Many at once: all complete, all correct.
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move {
                    let pw = if i % 2 == 0 { "async pw" } else { "wrong" };
                    verify_password_async(secret(pw), h).await.unwrap() == (i % 2 == 0)
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
    }

    #[test]
    fn async_outside_a_runtime_is_an_error_not_a_panic() {
        // A minimal executor: poll once with a no-op waker. Outside a tokio
        // runtime the blocking pool is unreachable, which must be an error.
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let h = PasswordHash::parse(VALID).unwrap();
        let mut fut = Box::pin(verify_password_async(secret("hunter2"), h));
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(r) => assert_eq!(r, Err(PasswordError::Hashing)),
            Poll::Pending => panic!("expected an immediate error"),
        }
    }

    #[test]
    fn a_cheap_legacy_hash_is_padded_to_the_policys_work() {
        // 2^c * (1 + extra) = 2^P key expansions in all.
        assert_eq!(padding_verifications(4, 10), 63);
        assert_eq!(padding_verifications(10, 13), 7);
        assert_eq!(padding_verifications(12, 13), 1);
        assert_eq!(padding_verifications(13, 13), 0);
        assert_eq!(padding_verifications(14, 13), 0);
        assert_eq!(padding_verifications(4, 31), (1 << 27) - 1);
    }

    #[test]
    fn passwords_that_never_reach_bcrypt_are_judged_without_the_pool() {
        // Empty and oversized passwords are answered before the hop to the
        // blocking pool: the same verdict as the blocking functions, even
        // with no runtime to hop to.
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        fn now<F: Future>(f: F) -> F::Output {
            let mut f = Box::pin(f);
            match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(r) => r,
                Poll::Pending => panic!("expected an immediate verdict"),
            }
        }
        let h = PasswordHash::parse(VALID).unwrap();
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        for (pw, verdict) in [
            ("", Ok(false)),
            (long.as_str(), Err(PasswordError::TooLong)),
        ] {
            assert_eq!(verify_password(&secret(pw), &h), verdict);
            assert_eq!(now(verify_password_async(secret(pw), h.clone())), verdict);
            assert_eq!(
                now(verify_password_padded_async(secret(pw), h.clone(), fast())),
                verdict
            );
            assert_eq!(now(verify_dummy_async(secret(pw), fast())), verdict);
        }
    }
}
