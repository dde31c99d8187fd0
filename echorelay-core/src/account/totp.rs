//! TOTP (S7): RFC 6238 time-based one-time passwords, as pure functions.
//!
//! The defaults are what authenticator apps expect: HMAC-SHA-1, 6 digits,
//! a 30-second step, and one step of skew either way (±1 accepted, ±2
//! refused). The HOTP computation (HMAC + dynamic truncation) is done by
//! the `totp-rs` crate; this module adds the seed type, parameter checks,
//! a constant-time match over the skew windows, the `otpauth://` URI and
//! its QR code.
//!
//! Not here: replay tracking, throttling and storage. [`match_step`]
//! returns the matched time step; the caller records it and refuses any
//! step less than or equal to the last accepted one (RFC 6238 §5.2).
//!
//! ```
//! use echorelay_core::account::totp::{self, TotpParams, TotpSeed};
//!
//! let seed = TotpSeed::generate();
//! let params = TotpParams::default();
//! let now = 1_700_000_000;
//! let step = totp::step_at(&params, now);
//! let code = totp::code_for_step(&seed, &params, step).unwrap();
//! assert_eq!(totp::match_step(&seed, &params, &code, now).unwrap(), Some(step));
//! ```

use std::fmt;
use std::fmt::Write as _;

use rand::RngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

/// The HMAC hash of a TOTP factor (RFC 6238 §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TotpAlgorithm {
    /// HMAC-SHA-1: the default, and the only one every authenticator app
    /// honours (some silently fall back to it for the others).
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl TotpAlgorithm {
    /// The name used in `otpauth://` URIs: `SHA1`, `SHA256` or `SHA512`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TotpAlgorithm::Sha1 => "SHA1",
            TotpAlgorithm::Sha256 => "SHA256",
            TotpAlgorithm::Sha512 => "SHA512",
        }
    }

    const fn to_lib(self) -> totp_rs::Algorithm {
        match self {
            TotpAlgorithm::Sha1 => totp_rs::Algorithm::SHA1,
            TotpAlgorithm::Sha256 => totp_rs::Algorithm::SHA256,
            TotpAlgorithm::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

/// The parameters of a TOTP factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotpParams {
    /// The HMAC hash.
    pub algorithm: TotpAlgorithm,
    /// Digits per code (6 to 8).
    pub digits: u32,
    /// Length of a time step in seconds (1 to 300).
    pub step_secs: u64,
    /// Steps accepted either side of the current one (at most 10).
    pub skew: u64,
}

impl Default for TotpParams {
    /// SHA-1, 6 digits, 30-second steps, skew 1: what authenticator apps
    /// expect.
    fn default() -> Self {
        Self {
            algorithm: TotpAlgorithm::Sha1,
            digits: 6,
            step_secs: 30,
            skew: 1,
        }
    }
}

impl TotpParams {
    /// Checks the parameters: `digits` 6..=8 (RFC 4226 §5.3), `step_secs`
    /// 1..=300, `skew` at most 10.
    ///
    /// # Errors
    ///
    /// [`TotpError::BadParams`] when any is out of range.
    pub fn validate(&self) -> Result<(), TotpError> {
        if (6..=8).contains(&self.digits) && (1..=300).contains(&self.step_secs) && self.skew <= 10
        {
            Ok(())
        } else {
            Err(TotpError::BadParams)
        }
    }
}

/// Length in bytes of a generated seed (160 bits, as RFC 4226 §4
/// recommends).
pub const SEED_LEN: usize = 20;

/// Shortest seed accepted by [`TotpSeed::from_bytes`] (128 bits, RFC 4226
/// §4).
const SEED_MIN: usize = 16;
/// Longest seed accepted by [`TotpSeed::from_bytes`] (one SHA-512 block).
const SEED_MAX: usize = 64;

/// A TOTP shared secret. Wiped from memory on drop; its `Debug` output is
/// redacted and it has no `Display` or `Serialize`: store it only as vault
/// ciphertext (via [`TotpSeed::expose_bytes`]).
pub struct TotpSeed(Zeroizing<Vec<u8>>);

impl fmt::Debug for TotpSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSeed(<redacted>)")
    }
}

impl TotpSeed {
    /// A fresh [`SEED_LEN`]-byte seed from the OS CSPRNG.
    ///
    /// # Panics
    ///
    /// Only if the operating system's random source fails (`OsRng`), in
    /// which case no secure seed can be made at all.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; SEED_LEN]);
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// A seed from raw bytes, e.g. after opening its vault ciphertext.
    ///
    /// # Errors
    ///
    /// [`TotpError::BadSeed`] unless it is 16 to 64 bytes long.
    pub fn from_bytes(b: &[u8]) -> Result<Self, TotpError> {
        if (SEED_MIN..=SEED_MAX).contains(&b.len()) {
            Ok(Self(Zeroizing::new(b.to_vec())))
        } else {
            Err(TotpError::BadSeed)
        }
    }

    /// A seed typed in RFC 4648 base32 (what an authenticator app stores):
    /// case-insensitive, spaces and `=` padding ignored.
    ///
    /// # Errors
    ///
    /// [`TotpError::BadSeed`] for a character outside the alphabet or a
    /// decoded length outside 16 to 64 bytes.
    pub fn from_base32(text: &str) -> Result<Self, TotpError> {
        // What the user typed is the seed: every copy is wiped on drop.
        let canonical: Zeroizing<String> = Zeroizing::new(
            text.chars()
                .filter(|c| *c != ' ' && *c != '=')
                .map(|c| c.to_ascii_uppercase())
                .collect(),
        );
        let bytes = Zeroizing::new(base32::decode(BASE32, &canonical).ok_or(TotpError::BadSeed)?);
        Self::from_bytes(&bytes)
    }

    /// The raw seed bytes (to seal them in the vault). Handle with care.
    pub fn expose_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The seed in RFC 4648 base32, uppercase, without padding: the form
    /// authenticator apps accept for manual entry.
    pub fn to_base32(&self) -> SecretString {
        SecretString::from(encode_base32(&self.0).as_str())
    }
}

/// What can go wrong with TOTP input. None of the messages contains a
/// code or a seed.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TotpError {
    /// The code has the wrong length or a character other than an ASCII
    /// digit.
    #[error("malformed TOTP code")]
    MalformedCode,
    /// The seed is not 16 to 64 bytes long.
    #[error("TOTP seed must be 16 to 64 bytes")]
    BadSeed,
    /// The parameters fail [`TotpParams::validate`].
    #[error("invalid TOTP parameters")]
    BadParams,
    /// The URI could not be encoded as a QR code.
    #[error("the otpauth URI could not be encoded as a QR code")]
    Qr,
}

/// The time step (counter) for a Unix time: `unix_secs / step_secs`
/// (RFC 6238 §4.2, T0 = 0).
///
/// Parameters with `step_secs == 0` (which [`TotpParams::validate`]
/// refuses) give step 0 rather than a panic.
pub fn step_at(params: &TotpParams, unix_secs: u64) -> u64 {
    unix_secs.checked_div(params.step_secs).unwrap_or(0)
}

/// The code for a time step (zero-padded to `digits`).
///
/// # Errors
///
/// [`TotpError::BadParams`] if `params` fail [`TotpParams::validate`].
pub fn code_for_step(
    seed: &TotpSeed,
    params: &TotpParams,
    step: u64,
) -> Result<Zeroizing<String>, TotpError> {
    let generator = Generator::new(seed, params)?;
    generator.code(step)
}

/// The step among `[now - skew, now + skew]` whose code equals `code`, or
/// `None`.
///
/// Surrounding whitespace is trimmed; what remains must be exactly
/// `digits` ASCII digits (no inner spaces or hyphens, no non-ASCII
/// digits). Every window is then generated and compared in constant time,
/// without stopping at a match, so the timing does not reveal which window
/// matched or how much of the code was right. If (improbably) two windows
/// share the code, the earlier step is returned.
///
/// This does not track replays: the caller must refuse a returned step
/// that is not greater than the last one it accepted for the account.
///
/// # Errors
///
/// [`TotpError::BadParams`] for invalid `params`;
/// [`TotpError::MalformedCode`] for a code of the wrong format.
pub fn match_step(
    seed: &TotpSeed,
    params: &TotpParams,
    code: &str,
    unix_secs: u64,
) -> Result<Option<u64>, TotpError> {
    let generator = Generator::new(seed, params)?;
    let code = code.trim();
    if code.len() != generator.digits || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpError::MalformedCode);
    }

    let now = step_at(params, unix_secs);
    let first = now.saturating_sub(params.skew);
    let last = now.saturating_add(params.skew);

    let mut found = Choice::from(0);
    let mut matched = 0u64;
    for step in first..=last {
        let candidate = generator.code(step)?;
        let equal = candidate.as_bytes().ct_eq(code.as_bytes());
        // Keep the first match: select `step` only if equal and none yet.
        matched = u64::conditional_select(&matched, &step, equal & !found);
        found |= equal;
    }
    Ok(if bool::from(found) {
        Some(matched)
    } else {
        None
    })
}

/// `otpauth://totp/ISSUER:ACCOUNT?secret=BASE32&issuer=ISSUER&algorithm=SHA1&digits=6&period=30`
/// (the Key Uri Format read by authenticator apps).
///
/// Issuer and account are percent-encoded (everything but `A-Z a-z 0-9 - .
/// _ ~`, so a `:` inside either cannot be mistaken for the separator). An
/// empty issuer is left out of the label and the query. The URI contains
/// the seed, so it is returned as a secret.
pub fn otpauth_uri(
    seed: &TotpSeed,
    params: &TotpParams,
    issuer: &str,
    account: &str,
) -> SecretString {
    let issuer = percent_encode(issuer);
    let account = percent_encode(account);
    let head = if issuer.is_empty() {
        format!("otpauth://totp/{account}?secret=")
    } else {
        format!("otpauth://totp/{issuer}:{account}?secret=")
    };
    let issuer_param = if issuer.is_empty() {
        String::new()
    } else {
        format!("&issuer={issuer}")
    };
    let tail = format!(
        "{issuer_param}&algorithm={}&digits={}&period={}",
        params.algorithm.as_str(),
        params.digits,
        params.step_secs
    );

    // One allocation of the exact final size: no reallocation leaves a
    // stray copy of the seed in freed memory.
    let secret = encode_base32(&seed.0);
    let mut uri = String::with_capacity(head.len() + secret.len() + tail.len());
    uri.push_str(&head);
    uri.push_str(&secret);
    uri.push_str(&tail);
    SecretString::from(uri)
}

/// A QR code of the URI (from [`otpauth_uri`]) as an SVG document, at
/// least 256×256 px, for the enrollment page. It encodes the seed, so it
/// is wiped on drop.
///
/// Limitation: the `qrcode` crate's own working buffers (the module grid
/// and the SVG string while it grows) are freed without being wiped.
///
/// # Errors
///
/// [`TotpError::Qr`] if the URI is too long for a QR code.
pub fn qr_svg(uri: &SecretString) -> Result<Zeroizing<String>, TotpError> {
    let code = qrcode::QrCode::new(uri.expose_secret().as_bytes()).map_err(|_| TotpError::Qr)?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(256, 256)
        .build();
    Ok(Zeroizing::new(svg))
}

/// A `totp-rs` generator keyed with the seed. Built with a 1-second step
/// so that its "time" argument is the counter itself: [`code`] takes a
/// step number and no multiplication can overflow. The skew windows are
/// walked by [`match_step`], not by `totp-rs` (whose `check` stops at the
/// first match).
///
/// [`code`]: Generator::code
struct Generator {
    totp: totp_rs::Totp,
    digits: usize,
}

impl Generator {
    fn new(seed: &TotpSeed, params: &TotpParams) -> Result<Self, TotpError> {
        params.validate()?;
        let digits = u8::try_from(params.digits).map_err(|_| TotpError::BadParams)?;
        // The builder and the `Totp` copy the seed into `totp_rs::Secret`,
        // which (feature `zeroize`) is wiped on drop.
        let totp = totp_rs::Builder::new()
            .with_algorithm(params.algorithm.to_lib())
            .with_digits(digits)
            .with_skew(0)
            .with_step_duration(1)
            .with_secret(seed.expose_bytes())
            .build()
            .map_err(|e| match e {
                totp_rs::TotpError::SecretTooShort { .. } => TotpError::BadSeed,
                _ => TotpError::BadParams,
            })?;
        Ok(Self {
            totp,
            digits: usize::from(digits),
        })
    }

    /// The zero-padded code of counter `step` (RFC 4226 HOTP of the step).
    fn code(&self, step: u64) -> Result<Zeroizing<String>, TotpError> {
        // With step duration 1, time == counter.
        let token = self.totp.generate(step);
        // Capacity is the final length: formatting never reallocates.
        let mut out = Zeroizing::new(String::with_capacity(self.digits));
        // Writing into a String cannot fail; the length check guards the
        // invariant anyway.
        write!(out, "{token}").map_err(|_| TotpError::BadParams)?;
        if out.len() != self.digits {
            return Err(TotpError::BadParams);
        }
        Ok(out)
    }
}

/// RFC 4648 base32, uppercase, unpadded: the form authenticator apps take.
const BASE32: base32::Alphabet = base32::Alphabet::Rfc4648 { padding: false };

/// The base32 form of seed bytes, wiped on drop (the `base32` crate
/// returns a plain `String`; it is wrapped before anything copies it).
fn encode_base32(bytes: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(base32::encode(BASE32, bytes))
}

/// Percent-encodes every UTF-8 byte outside the RFC 3986 unreserved set
/// (`A-Z a-z 0-9 - . _ ~`) as `%XX`, uppercase hex.
fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod base32_decode_tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn base32_round_trips_and_rejects_garbage() {
        for _ in 0..20 {
            let seed = TotpSeed::generate();
            let text = seed.to_base32();
            let back = TotpSeed::from_base32(text.expose_secret()).unwrap();
            assert_eq!(back.expose_bytes(), seed.expose_bytes());
            let sloppy = text.expose_secret().to_lowercase();
            assert_eq!(
                TotpSeed::from_base32(&sloppy).unwrap().expose_bytes(),
                seed.expose_bytes()
            );
        }
        let rfc = TotpSeed::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        assert_eq!(rfc.expose_bytes(), b"12345678901234567890");
        assert_eq!(
            TotpSeed::from_base32("GEZ1").unwrap_err(),
            TotpError::BadSeed
        );
        assert_eq!(TotpSeed::from_base32("").unwrap_err(), TotpError::BadSeed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEED_SHA1: &[u8] = b"12345678901234567890";
    const SEED_SHA256: &[u8] = b"12345678901234567890123456789012";
    const SEED_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    /// RFC 6238 Appendix B: (time, T, SHA-1, SHA-256, SHA-512), 8 digits,
    /// 30-second steps.
    const RFC6238: [(u64, u64, &str, &str, &str); 6] = [
        (
            59,
            0x0000_0000_0000_0001,
            "94287082",
            "46119246",
            "90693936",
        ),
        (
            1_111_111_109,
            0x0000_0000_0235_23EC,
            "07081804",
            "68084774",
            "25091201",
        ),
        (
            1_111_111_111,
            0x0000_0000_0235_23ED,
            "14050471",
            "67062674",
            "99943326",
        ),
        (
            1_234_567_890,
            0x0000_0000_0273_EF07,
            "89005924",
            "91819424",
            "93441116",
        ),
        (
            2_000_000_000,
            0x0000_0000_03F9_40AA,
            "69279037",
            "90698825",
            "38618901",
        ),
        (
            20_000_000_000,
            0x0000_0000_27BC_86AA,
            "65353130",
            "77737706",
            "47863826",
        ),
    ];

    fn rfc_params(algorithm: TotpAlgorithm) -> TotpParams {
        TotpParams {
            algorithm,
            digits: 8,
            ..TotpParams::default()
        }
    }

    fn sha1_seed() -> TotpSeed {
        TotpSeed::from_bytes(SEED_SHA1).unwrap()
    }

    #[test]
    fn defaults_are_what_apps_expect() {
        let p = TotpParams::default();
        assert_eq!(p.algorithm, TotpAlgorithm::Sha1);
        assert_eq!((p.digits, p.step_secs, p.skew), (6, 30, 1));
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn rfc6238_appendix_b_all_18_vectors() {
        let cases = [
            (TotpAlgorithm::Sha1, SEED_SHA1),
            (TotpAlgorithm::Sha256, SEED_SHA256),
            (TotpAlgorithm::Sha512, SEED_SHA512),
        ];
        let mut checked = 0;
        for (time, t, sha1, sha256, sha512) in RFC6238 {
            for ((algorithm, seed_bytes), expected) in cases.iter().zip([sha1, sha256, sha512]) {
                let seed = TotpSeed::from_bytes(seed_bytes).unwrap();
                let params = rfc_params(*algorithm);
                let step = step_at(&params, time);
                assert_eq!(step, t, "T for time {time}");
                let code = code_for_step(&seed, &params, step).unwrap();
                assert_eq!(code.as_str(), expected, "{algorithm:?} at {time}");
                assert_eq!(
                    match_step(&seed, &params, expected, time).unwrap(),
                    Some(t),
                    "{algorithm:?} at {time} via match_step"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 18);
    }

    #[test]
    fn six_digit_codes_are_zero_padded() {
        // A code is the truncated value mod 10^digits, left-padded with
        // zeros: every code is exactly 6 digits, and among these steps
        // (fixed seed, so deterministic) some start with '0'.
        let seed = sha1_seed();
        let params = TotpParams::default();
        let mut leading_zero = 0;
        for step in 0..200 {
            let code = code_for_step(&seed, &params, step).unwrap();
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
            leading_zero += usize::from(code.starts_with('0'));
        }
        assert!(leading_zero > 0);
        // RFC 4226 Appendix D, counter 0 with the same seed: 755224.
        assert_eq!(code_for_step(&seed, &params, 0).unwrap().as_str(), "755224");
        // RFC 4226 Appendix D, counter 9: 520489.
        assert_eq!(code_for_step(&seed, &params, 9).unwrap().as_str(), "520489");
    }

    #[test]
    fn skew_one_accepted_two_rejected() {
        let seed = sha1_seed();
        let params = TotpParams::default();
        let now = 1_700_000_015;
        let step = step_at(&params, now);
        for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let s = step.checked_add_signed(offset).unwrap();
            let code = code_for_step(&seed, &params, s).unwrap();
            let got = match_step(&seed, &params, &code, now).unwrap();
            if accepted {
                assert_eq!(got, Some(s), "offset {offset}");
            } else {
                // A ±2 code could only match by a (10^-6) collision with a
                // window's code; the fixed seed and time here have none.
                assert_eq!(got, None, "offset {offset}");
            }
        }
    }

    #[test]
    fn skew_zero_accepts_only_current_step() {
        let seed = sha1_seed();
        let params = TotpParams {
            skew: 0,
            ..TotpParams::default()
        };
        let now = 1_700_000_015;
        let step = step_at(&params, now);
        let prev = code_for_step(&seed, &params, step - 1).unwrap();
        let cur = code_for_step(&seed, &params, step).unwrap();
        assert_eq!(match_step(&seed, &params, &prev, now).unwrap(), None);
        assert_eq!(match_step(&seed, &params, &cur, now).unwrap(), Some(step));
    }

    #[test]
    fn windows_at_the_edges_of_time_do_not_overflow() {
        let seed = sha1_seed();
        let params = TotpParams::default();
        // Step 0: no step -1 exists.
        let code = code_for_step(&seed, &params, 0).unwrap();
        assert_eq!(match_step(&seed, &params, &code, 0).unwrap(), Some(0));
        // Far future: the last representable step.
        let last = step_at(&params, u64::MAX);
        let code = code_for_step(&seed, &params, last).unwrap();
        assert_eq!(
            match_step(&seed, &params, &code, u64::MAX).unwrap(),
            Some(last)
        );
        // code_for_step of any counter never overflows.
        assert!(code_for_step(&seed, &params, u64::MAX).is_ok());
    }

    #[test]
    fn surrounding_whitespace_is_trimmed() {
        let seed = sha1_seed();
        let params = TotpParams::default();
        let now = 1_700_000_000;
        let step = step_at(&params, now);
        let code = code_for_step(&seed, &params, step).unwrap();
        let padded = format!("  {}\n", code.as_str());
        assert_eq!(
            match_step(&seed, &params, &padded, now).unwrap(),
            Some(step)
        );
    }

    #[test]
    fn malformed_codes_are_refused() {
        let seed = sha1_seed();
        let params = TotpParams::default();
        let now = 1_700_000_000;
        let code = code_for_step(&seed, &params, step_at(&params, now)).unwrap();
        let (a, b) = code.split_at(3);
        for bad in [
            "12345",
            "1234567",
            "abcdef",
            "12345a",
            "",
            "   ",
            "١٢٣٤٥٦",
            "１２３４５６",
            "+12345",
            "-12345",
            "12 345",
            &format!("{a} {b}"),
            &format!("{a}-{b}"),
            "123\u{0}56",
        ] {
            assert_eq!(
                match_step(&seed, &params, bad, now),
                Err(TotpError::MalformedCode),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_params_are_refused() {
        let seed = sha1_seed();
        let ok = TotpParams::default();
        for bad in [
            TotpParams { digits: 5, ..ok },
            TotpParams { digits: 9, ..ok },
            TotpParams {
                digits: u32::MAX,
                ..ok
            },
            TotpParams { step_secs: 0, ..ok },
            TotpParams {
                step_secs: 301,
                ..ok
            },
            TotpParams { skew: 11, ..ok },
        ] {
            assert_eq!(bad.validate(), Err(TotpError::BadParams));
            assert_eq!(code_for_step(&seed, &bad, 1), Err(TotpError::BadParams));
            assert_eq!(
                match_step(&seed, &bad, "123456", 1_700_000_000),
                Err(TotpError::BadParams)
            );
        }
        assert_eq!(step_at(&TotpParams { step_secs: 0, ..ok }, 100), 0);
        for good in [
            TotpParams {
                digits: 8,
                step_secs: 1,
                skew: 0,
                ..ok
            },
            TotpParams {
                digits: 7,
                step_secs: 300,
                skew: 10,
                ..ok
            },
        ] {
            assert_eq!(good.validate(), Ok(()));
        }
    }

    #[test]
    fn seed_lengths() {
        assert_eq!(
            TotpSeed::from_bytes(&[7; 15]).err(),
            Some(TotpError::BadSeed)
        );
        assert_eq!(TotpSeed::from_bytes(&[]).err(), Some(TotpError::BadSeed));
        assert_eq!(
            TotpSeed::from_bytes(&[7; 65]).err(),
            Some(TotpError::BadSeed)
        );
        assert_eq!(
            TotpSeed::from_bytes(&[7; 16]).unwrap().expose_bytes(),
            &[7; 16]
        );
        assert_eq!(
            TotpSeed::from_bytes(&[7; 64]).unwrap().expose_bytes().len(),
            64
        );
    }

    #[test]
    fn generated_seeds_are_20_random_bytes() {
        let a = TotpSeed::generate();
        let b = TotpSeed::generate();
        assert_eq!(a.expose_bytes().len(), SEED_LEN);
        assert_eq!(b.expose_bytes().len(), SEED_LEN);
        assert_ne!(a.expose_bytes(), b.expose_bytes());
        // Usable as is.
        let params = TotpParams::default();
        let code = code_for_step(&a, &params, 42).unwrap();
        assert_eq!(code.len(), 6);
    }

    #[test]
    fn seed_debug_is_redacted() {
        let seed = sha1_seed();
        let shown = format!("{seed:?}");
        assert_eq!(shown, "TotpSeed(<redacted>)");
        assert!(!shown.contains("1234"));
        assert!(!format!("{:?}", seed.to_base32()).contains("GEZDG"));
    }

    #[test]
    fn base32_known_values() {
        assert_eq!(
            sha1_seed().to_base32().expose_secret(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        // RFC 4648 §10 vectors, unpadded (built directly: seeds are >= 16).
        for (input, expected) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(*encode_base32(input.as_bytes()), expected, "{input:?}");
        }
    }

    #[test]
    fn base32_matches_totp_rs() {
        for len in 16..=64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let seed = TotpSeed::from_bytes(&bytes).unwrap();
            let theirs = totp_rs::Secret::from(bytes.as_slice()).to_base32();
            assert_eq!(seed.to_base32().expose_secret(), theirs, "len {len}");
        }
    }

    #[test]
    fn otpauth_uri_format() {
        let seed = sha1_seed();
        let uri = otpauth_uri(
            &seed,
            &TotpParams::default(),
            "Echo Relay",
            "ana@example.com",
        );
        assert_eq!(
            uri.expose_secret(),
            "otpauth://totp/Echo%20Relay:ana%40example.com\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Echo%20Relay&algorithm=SHA1&digits=6&period=30"
        );
        // The URI is secret: Debug does not show it.
        assert!(!format!("{uri:?}").contains("GEZDG"));
    }

    #[test]
    fn otpauth_uri_escapes_separators_and_unicode() {
        let seed = sha1_seed();
        let params = TotpParams {
            algorithm: TotpAlgorithm::Sha256,
            digits: 8,
            step_secs: 60,
            skew: 1,
        };
        let uri = otpauth_uri(&seed, &params, "A:B&C", "zoë/x?y=1#~._-");
        assert_eq!(
            uri.expose_secret(),
            "otpauth://totp/A%3AB%26C:zo%C3%AB%2Fx%3Fy%3D1%23~._-\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=A%3AB%26C&algorithm=SHA256&digits=8&period=60"
        );
        // No issuer: label is the account alone and no issuer parameter.
        let uri = otpauth_uri(&seed, &TotpParams::default(), "", "ana");
        assert_eq!(
            uri.expose_secret(),
            "otpauth://totp/ana?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn qr_svg_is_an_svg_document() {
        let seed = TotpSeed::generate();
        let uri = otpauth_uri(
            &seed,
            &TotpParams::default(),
            "Echo Relay",
            "ana@example.com",
        );
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<?xml") || svg.starts_with("<svg"));
        assert!(svg.contains("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn qr_svg_refuses_oversized_input() {
        let huge = SecretString::from("x".repeat(8000));
        assert_eq!(qr_svg(&huge), Err(TotpError::Qr));
    }

    #[test]
    fn errors_do_not_leak() {
        for e in [
            TotpError::MalformedCode,
            TotpError::BadSeed,
            TotpError::BadParams,
            TotpError::Qr,
        ] {
            assert!(!e.to_string().is_empty());
        }
    }

    proptest! {
        #[test]
        fn match_step_never_panics(code in any::<String>(), now in any::<u64>()) {
            let seed = sha1_seed();
            let r = match_step(&seed, &TotpParams::default(), &code, now);
            if code.trim().len() != 6 {
                prop_assert_eq!(r, Err(TotpError::MalformedCode));
            }
        }

        #[test]
        fn match_step_never_panics_on_digit_strings(
            code in "[0-9]{0,10}",
            now in any::<u64>(),
            digits in 0u32..12,
            step_secs in 0u64..400,
            skew in 0u64..20,
        ) {
            let seed = sha1_seed();
            let params = TotpParams { algorithm: TotpAlgorithm::Sha512, digits, step_secs, skew };
            let _ = match_step(&seed, &params, &code, now);
            let _ = code_for_step(&seed, &params, now);
        }

        #[test]
        fn generated_code_always_matches_its_step(step in 1u64..(u64::MAX / 30 - 1)) {
            let seed = sha1_seed();
            let params = TotpParams::default();
            let code = code_for_step(&seed, &params, step).unwrap();
            let now = step * 30 + 29;
            // Some(step), unless (chance 10^-6) step - 1 has the same code:
            // then the earlier step is the one reported.
            let got = match_step(&seed, &params, &code, now).unwrap();
            prop_assert!(got == Some(step) || got == Some(step - 1));
            let got = got.unwrap_or(step);
            prop_assert_eq!(code_for_step(&seed, &params, got).unwrap(), code);
        }
    }
}
