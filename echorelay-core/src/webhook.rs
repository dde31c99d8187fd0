//! Standard Webhooks signatures: signing what echorelay delivers and
//! verifying what it receives (<https://www.standardwebhooks.com>, the
//! symmetric `v1` scheme of `spec/standard-webhooks.md` 1.0.0).
//!
//! ## Secret
//!
//! A target's signing secret is text: `whsec_` followed by the key in
//! standard base64 (padding optional). [`crate::config::generate_signing_secret`]
//! makes 32 random bytes; [`SigningSecret::parse`] accepts keys of
//! [`MIN_KEY_LEN`] to [`MAX_KEY_LEN`] bytes (24 to 64, what the spec and
//! Svix allow) and refuses anything else: an empty key, a missing prefix,
//! bad base64. The decoded key is zeroized on drop and `Debug` prints only
//! `SigningSecret(whsec_…)`.
//!
//! ## Signature
//!
//! ```text
//! v1,base64(HMAC-SHA256(key, msg_id || "." || timestamp || "." || body))
//! ```
//!
//! `timestamp` is Unix seconds in decimal, `body` the exact bytes sent.
//! [`sign`] makes one signature, [`signature_header`] the
//! `webhook-signature` header of several: during a secret rotation's grace
//! every active secret signs, and the signatures are joined by single
//! spaces.
//!
//! A message id must be 1 to [`MAX_MSG_ID_LEN`] bytes with no `.`: the spec
//! asks that id and timestamp never contain one, because
//! `sign("a.1", t, b)` covers the same bytes as `sign("a", 1, "{t}.{b}")`.
//! [`sign`] refuses such an id, so a signature echorelay made never
//! verifies for another (id, timestamp, body).
//!
//! ## Verification
//!
//! [`Verifier::verify`] checks, in this order: the id (as above); the
//! timestamp header (ASCII digits only, no sign, no leading zero, at most
//! [`MAX_TIMESTAMP_LEN`] characters, fits an `i64`); the signature header
//! ([`parse_signature_header`]); that the timestamp is within the tolerance
//! ([`DEFAULT_TOLERANCE`], 5 minutes) of `now` either way (exactly the
//! tolerance passes); and finally that some `v1` entry equals the MAC under
//! some secret, compared in constant time. Unknown versions (`v1a`, `v2`)
//! and `v1` entries that are not the padded base64 of 32 bytes are skipped;
//! a header with no usable entry is [`WebhookError::NoSignature`].
//!
//! No error carries a secret, a signature or the body.
//!
//! ```
//! use chrono::DateTime;
//! use echorelay_core::webhook::{SigningSecret, Verifier, sign};
//!
//! # fn main() -> Result<(), echorelay_core::webhook::WebhookError> {
//! // An example secret: never use one that has appeared in documentation.
//! let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let body = br#"{"test": 2432232314}"#;
//! let header = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body)?;
//! assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
//!
//! let verifier = Verifier::new([secret])?;
//! let now = DateTime::from_timestamp(1614265330 + 60, 0).unwrap_or_default();
//! verifier.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &header, body, now)?;
//! # Ok(())
//! # }
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq as _};
use zeroize::Zeroizing;

/// Prefix of a signing secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest accepted key, in bytes (192 bits).
pub const MIN_KEY_LEN: usize = 24;
/// Longest accepted key, in bytes (512 bits).
pub const MAX_KEY_LEN: usize = 64;
/// Longest accepted message id, in bytes.
pub const MAX_MSG_ID_LEN: usize = 256;
/// Longest accepted timestamp header, in characters.
pub const MAX_TIMESTAMP_LEN: usize = 20;
/// Longest accepted signature header, in bytes (8 KiB).
pub const MAX_SIGNATURE_HEADER_LEN: usize = 8 * 1024;
/// Most space-separated entries accepted in a signature header.
pub const MAX_SIGNATURE_ENTRIES: usize = 64;
/// How far a timestamp may be from now, either way, by default.
pub const DEFAULT_TOLERANCE: Duration = Duration::minutes(5);
/// The version tag of the HMAC-SHA256 scheme.
pub const VERSION_V1: &str = "v1";
/// Length of a `v1` MAC, in bytes.
pub const MAC_LEN: usize = 32;

/// Name of the header carrying the message id.
pub const HEADER_ID: &str = "webhook-id";
/// Name of the header carrying the timestamp.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Name of the header carrying the signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// Standard base64 of the key, decoded as leniently as the reference
/// libraries do: with or without padding, and ignoring non-zero bits after
/// the last byte (`…SwBr`, from the Python library's tests, is accepted).
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Padded standard base64 of [`MAC_LEN`] bytes is this long.
const MAC_BASE64_LEN: usize = 44;

/// Why a secret, a message or a header was refused. Never contains a
/// secret, a signature or the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The secret does not start with `whsec_`.
    #[error("signing secret must start with whsec_")]
    SecretPrefix,
    /// The secret is `whsec_` and nothing else.
    #[error("signing secret is empty")]
    EmptySecret,
    /// The text after `whsec_` is not standard base64.
    #[error("signing secret is not standard base64")]
    SecretEncoding,
    /// The key is shorter than [`MIN_KEY_LEN`] or longer than
    /// [`MAX_KEY_LEN`] bytes.
    #[error("signing secret must be {MIN_KEY_LEN} to {MAX_KEY_LEN} bytes")]
    SecretLength,
    /// No secret to sign or verify with.
    #[error("no signing secret given")]
    NoSecret,
    /// The message id is empty.
    #[error("message id is empty")]
    EmptyMessageId,
    /// The message id is longer than [`MAX_MSG_ID_LEN`] bytes.
    #[error("message id is longer than {MAX_MSG_ID_LEN} bytes")]
    MessageIdTooLong,
    /// The message id contains a `.`, the separator of the signed content.
    #[error("message id contains a '.'")]
    MessageIdHasDot,
    /// The timestamp is not Unix seconds as a canonical non-negative
    /// decimal integer of at most [`MAX_TIMESTAMP_LEN`] characters.
    #[error("timestamp is not a non-negative integer of Unix seconds")]
    InvalidTimestamp,
    /// The timestamp is more than the tolerance before now.
    #[error("timestamp is too old")]
    TooOld,
    /// The timestamp is more than the tolerance after now.
    #[error("timestamp is too far in the future")]
    TooNew,
    /// The signature header is empty or only whitespace.
    #[error("signature header is empty")]
    EmptySignatureHeader,
    /// The signature header is longer than [`MAX_SIGNATURE_HEADER_LEN`]
    /// bytes.
    #[error("signature header is longer than {MAX_SIGNATURE_HEADER_LEN} bytes")]
    SignatureHeaderTooLong,
    /// The signature header has more than [`MAX_SIGNATURE_ENTRIES`]
    /// entries.
    #[error("signature header has more than {MAX_SIGNATURE_ENTRIES} entries")]
    TooManySignatures,
    /// The signature header holds no usable `v1` entry.
    #[error("signature header has no v1 signature")]
    NoSignature,
    /// No `v1` entry matches any secret.
    #[error("no signature matches")]
    SignatureMismatch,
}

/// A decoded Standard Webhooks signing key. Zeroized on drop; `Debug`
/// shows only `SigningSecret(whsec_…)`. There is no way to print or
/// serialize the key.
#[derive(Clone)]
pub struct SigningSecret {
    key: Zeroizing<Vec<u8>>,
}

impl SigningSecret {
    /// Parses `whsec_` + standard base64 (padding optional) of a key of
    /// [`MIN_KEY_LEN`] to [`MAX_KEY_LEN`] bytes.
    ///
    /// ```
    /// use echorelay_core::webhook::{SigningSecret, WebhookError};
    /// assert_eq!(SigningSecret::parse("whsec_").err(), Some(WebhookError::EmptySecret));
    /// assert_eq!(SigningSecret::parse("c2VjcmV0").err(), Some(WebhookError::SecretPrefix));
    /// ```
    pub fn parse(text: &str) -> Result<Self, WebhookError> {
        let b64 = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(WebhookError::SecretPrefix)?;
        if b64.is_empty() {
            return Err(WebhookError::EmptySecret);
        }
        // Padded base64 of MAX_KEY_LEN bytes is 88 characters: anything
        // longer is too long (or not base64) without decoding it.
        if b64.len() > MAX_KEY_LEN.div_ceil(3) * 4 {
            return Err(WebhookError::SecretLength);
        }
        // Decode into a zeroized buffer large enough for any input that
        // got here (the decoder's estimate for 88 characters is 66 bytes).
        let mut buf = Zeroizing::new([0u8; MAX_KEY_LEN + 3]);
        let n = KEY_BASE64
            .decode_slice(b64, &mut buf[..])
            .map_err(|e| match e {
                base64::DecodeSliceError::OutputSliceTooSmall => WebhookError::SecretLength,
                base64::DecodeSliceError::DecodeError(_) => WebhookError::SecretEncoding,
            })?;
        let key = buf.get(..n).ok_or(WebhookError::SecretLength)?;
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&key.len()) {
            return Err(WebhookError::SecretLength);
        }
        Ok(Self {
            key: Zeroizing::new(key.to_vec()),
        })
    }

    /// The MAC of `msg_id.timestamp.body` under this key.
    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; MAC_LEN] {
        // HMAC takes keys of any length: new_from_slice cannot fail.
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return [0; MAC_LEN];
        };
        m.update(msg_id.as_bytes());
        m.update(b".");
        m.update(timestamp.to_string().as_bytes());
        m.update(b".");
        m.update(body);
        m.finalize().into_bytes().into()
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(whsec_…)")
    }
}

fn check_msg_id(msg_id: &str) -> Result<(), WebhookError> {
    if msg_id.is_empty() {
        Err(WebhookError::EmptyMessageId)
    } else if msg_id.len() > MAX_MSG_ID_LEN {
        Err(WebhookError::MessageIdTooLong)
    } else if msg_id.contains('.') {
        Err(WebhookError::MessageIdHasDot)
    } else {
        Ok(())
    }
}

/// Parses a `webhook-timestamp` header: ASCII digits, no sign, no leading
/// zero (so the text is exactly what the signer formatted), at most
/// [`MAX_TIMESTAMP_LEN`] characters, within `i64`.
///
/// ```
/// use echorelay_core::webhook::{parse_timestamp, WebhookError};
/// assert_eq!(parse_timestamp("1614265330"), Ok(1614265330));
/// assert_eq!(parse_timestamp("+1614265330"), Err(WebhookError::InvalidTimestamp));
/// assert_eq!(parse_timestamp("01614265330"), Err(WebhookError::InvalidTimestamp));
/// ```
pub fn parse_timestamp(text: &str) -> Result<i64, WebhookError> {
    let b = text.as_bytes();
    if b.is_empty()
        || b.len() > MAX_TIMESTAMP_LEN
        || !b.iter().all(u8::is_ascii_digit)
        || (b.len() > 1 && b[0] == b'0')
    {
        return Err(WebhookError::InvalidTimestamp);
    }
    text.parse::<i64>()
        .map_err(|_| WebhookError::InvalidTimestamp)
}

/// Signs one message: `v1,` + base64 of HMAC-SHA256(key,
/// `"{msg_id}.{timestamp}.{body}"`).
///
/// Refuses a message id that is empty, longer than [`MAX_MSG_ID_LEN`] bytes
/// or contains a `.`, and a negative timestamp (no verifier accepts one).
pub fn sign(
    secret: &SigningSecret,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, WebhookError> {
    check_msg_id(msg_id)?;
    if timestamp < 0 {
        return Err(WebhookError::InvalidTimestamp);
    }
    let mac = secret.mac(msg_id, timestamp, body);
    Ok(format!("{VERSION_V1},{}", STANDARD.encode(mac)))
}

/// The `webhook-signature` header for a message: every secret's [`sign`]
/// result, in order, joined by single spaces (during a secret rotation's
/// grace, every active secret signs).
///
/// Refuses an empty list of secrets with [`WebhookError::NoSecret`], and
/// whatever [`sign`] refuses.
pub fn signature_header(
    secrets: &[&SigningSecret],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, WebhookError> {
    if secrets.is_empty() {
        return Err(WebhookError::NoSecret);
    }
    let parts = secrets
        .iter()
        .map(|s| sign(s, msg_id, timestamp, body))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(parts.join(" "))
}

/// One usable entry of a signature header: a `v1` (HMAC-SHA256) MAC.
/// `Debug` shows only the version.
#[derive(Clone, Copy)]
pub struct SignatureEntry {
    mac: [u8; MAC_LEN],
}

impl SignatureEntry {
    /// The MAC's bytes.
    pub fn mac(&self) -> &[u8; MAC_LEN] {
        &self.mac
    }

    /// The entry's version tag (always [`VERSION_V1`]).
    pub fn version(&self) -> &'static str {
        VERSION_V1
    }
}

impl fmt::Debug for SignatureEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureEntry({VERSION_V1},…)")
    }
}

/// Parses a `webhook-signature` header into its usable `v1` entries.
///
/// Entries are separated by single spaces (runs of spaces are tolerated);
/// each is `version,value`. Entries of other versions (`v1a`, `v2`, …),
/// without a comma, or `v1` entries whose value is not the padded
/// standard base64 of exactly [`MAC_LEN`] bytes are skipped, so the result
/// may be empty. Refused: an empty or whitespace-only header
/// ([`WebhookError::EmptySignatureHeader`]), one longer than
/// [`MAX_SIGNATURE_HEADER_LEN`] bytes, one with more than
/// [`MAX_SIGNATURE_ENTRIES`] entries (skipped ones count).
///
/// ```
/// use echorelay_core::webhook::parse_signature_header;
/// let entries = parse_signature_header(
///     "v1a,c2ln v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
/// )?;
/// assert_eq!(entries.len(), 1);
/// # Ok::<(), echorelay_core::webhook::WebhookError>(())
/// ```
pub fn parse_signature_header(value: &str) -> Result<Vec<SignatureEntry>, WebhookError> {
    if value.len() > MAX_SIGNATURE_HEADER_LEN {
        return Err(WebhookError::SignatureHeaderTooLong);
    }
    if value.trim_ascii().is_empty() {
        return Err(WebhookError::EmptySignatureHeader);
    }
    let mut count = 0usize;
    let mut entries = Vec::new();
    for part in value.split(' ').filter(|p| !p.is_empty()) {
        count += 1;
        if count > MAX_SIGNATURE_ENTRIES {
            return Err(WebhookError::TooManySignatures);
        }
        let Some((version, b64)) = part.split_once(',') else {
            continue;
        };
        if version != VERSION_V1 || b64.len() != MAC_BASE64_LEN {
            continue;
        }
        let mut mac = [0u8; MAC_LEN + 1];
        if let Ok(MAC_LEN) = STANDARD.decode_slice(b64, &mut mac[..]) {
            let mut exact = [0u8; MAC_LEN];
            exact.copy_from_slice(&mac[..MAC_LEN]);
            entries.push(SignatureEntry { mac: exact });
        }
    }
    Ok(entries)
}

/// Verifies received webhooks against one or more secrets (several during
/// a rotation) within a tolerance of now. `Debug` shows no key.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<SigningSecret>,
    tolerance: Duration,
}

impl Verifier {
    /// A verifier with these secrets and the [`DEFAULT_TOLERANCE`].
    /// Refuses an empty list with [`WebhookError::NoSecret`].
    pub fn new(secrets: impl IntoIterator<Item = SigningSecret>) -> Result<Self, WebhookError> {
        let secrets: Vec<_> = secrets.into_iter().collect();
        if secrets.is_empty() {
            return Err(WebhookError::NoSecret);
        }
        Ok(Self {
            secrets,
            tolerance: DEFAULT_TOLERANCE,
        })
    }

    /// The same verifier with another tolerance, counted in whole seconds;
    /// a negative one counts as zero.
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = Duration::seconds(tolerance.num_seconds().max(0));
        self
    }

    /// The tolerance.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// Verifies a message: its `webhook-id`, `webhook-timestamp` and
    /// `webhook-signature` headers and its body, at `now` (see the
    /// [module documentation](crate::webhook) for the order of the checks).
    pub fn verify(
        &self,
        msg_id: &str,
        timestamp_header: &str,
        signature_header: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), WebhookError> {
        check_msg_id(msg_id)?;
        let timestamp = parse_timestamp(timestamp_header)?;
        let entries = parse_signature_header(signature_header)?;
        let age = i128::from(now.timestamp()) - i128::from(timestamp);
        let tolerance = i128::from(self.tolerance.num_seconds());
        if age > tolerance {
            return Err(WebhookError::TooOld);
        }
        if -age > tolerance {
            return Err(WebhookError::TooNew);
        }
        if entries.is_empty() {
            return Err(WebhookError::NoSignature);
        }
        // Every entry against every secret, without stopping early.
        let mut matched = Choice::from(0);
        for secret in &self.secrets {
            let expected = secret.mac(msg_id, timestamp, body);
            for entry in &entries {
                matched |= entry.mac.ct_eq(&expected);
            }
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(WebhookError::SignatureMismatch)
        }
    }
}

#[cfg(test)]
mod tests;
