//! Bearer tokens for sessions, trusted devices and login challenges.
//!
//! A token is a kind prefix (`ers_`, `erd_`, `erc_`) and 256 bits from the
//! OS CSPRNG in unpadded base64url (43 characters). Only its SHA-256 is
//! stored; the plaintext goes to the client once, as a cookie value.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A session cookie.
    Session,
    /// A trusted-device cookie.
    Device,
    /// A login challenge (between the password and second-factor steps).
    Challenge,
}

impl TokenKind {
    fn prefix(self) -> &'static str {
        match self {
            TokenKind::Session => "ers_",
            TokenKind::Device => "erd_",
            TokenKind::Challenge => "erc_",
        }
    }
}

const BODY_LEN: usize = 43;

/// Why a presented token was refused (internal; callers see one generic
/// failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed token")]
pub struct MalformedToken;

/// A secret token. `Debug` shows only its kind.
pub struct Token {
    kind: TokenKind,
    secret: SecretString,
}

impl Token {
    /// A fresh token.
    pub fn generate(kind: TokenKind) -> Self {
        let mut b = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut *b);
        let mut s = Zeroizing::new(String::with_capacity(4 + BODY_LEN));
        s.push_str(kind.prefix());
        URL_SAFE_NO_PAD.encode_string(*b, &mut s);
        Self {
            kind,
            secret: SecretString::from(s.as_str()),
        }
    }

    /// Checks a presented token's shape for `kind` (without any store
    /// access) and returns its hash.
    pub fn hash_presented(kind: TokenKind, presented: &str) -> Result<[u8; 32], MalformedToken> {
        let body = presented
            .strip_prefix(kind.prefix())
            .ok_or(MalformedToken)?;
        if body.len() != BODY_LEN
            || !body
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(MalformedToken);
        }
        Ok(hash(presented))
    }

    /// The cookie value. Hand it to the client; never log it.
    pub fn expose_secret(&self) -> &str {
        self.secret.expose_secret()
    }

    /// SHA-256 of the token: the only stored form.
    pub fn hash(&self) -> [u8; 32] {
        hash(self.expose_secret())
    }

    /// The kind.
    pub fn kind(&self) -> TokenKind {
        self.kind
    }
}

fn hash(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({:?}, <redacted>)", self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_256_bits_and_check_their_kind() {
        let t = Token::generate(TokenKind::Session);
        assert_eq!(t.expose_secret().len(), 4 + BODY_LEN);
        assert_eq!(
            Token::hash_presented(TokenKind::Session, t.expose_secret()),
            Ok(t.hash())
        );
        assert_eq!(
            Token::hash_presented(TokenKind::Device, t.expose_secret()),
            Err(MalformedToken)
        );
        assert!(Token::hash_presented(TokenKind::Session, "ers_short").is_err());
        assert!(
            Token::hash_presented(TokenKind::Session, &format!("ers_{}", "é".repeat(22))).is_err()
        );
        assert!(!format!("{t:?}").contains(&t.expose_secret()[4..]));
        assert_ne!(Token::generate(TokenKind::Session).hash(), t.hash());
    }

    /// The stored form is SHA-256 of the whole cookie value, prefix
    /// included (independent vector: `printf erd_… | sha256sum`).
    #[test]
    fn the_stored_hash_is_sha256_of_the_cookie_value() {
        let presented = format!("erd_{}zZ09-_", "A".repeat(37));
        assert_eq!(
            Token::hash_presented(TokenKind::Device, &presented).map(hex::encode),
            Ok("06f5fcb6a9b8a06547c304deabc65f7912694a40a4c8ed73db6d02df4064e6cd".to_owned())
        );
    }

    #[test]
    fn presented_tokens_are_checked_at_their_boundaries() {
        let body = |n: usize| "A".repeat(n);
        // Every base64url character is accepted, in a body of exactly 43.
        for tail in ["-_", "zZ", "09"] {
            let ok = format!("ers_{}{tail}", body(41));
            assert!(
                Token::hash_presented(TokenKind::Session, &ok).is_ok(),
                "{ok}"
            );
        }
        // One short, one long, and characters outside base64url.
        for bad in [
            format!("ers_{}", body(42)),
            format!("ers_{}", body(44)),
            format!("ers_{}+", body(42)),
            format!("ers_{}/", body(42)),
            format!("ers_{}=", body(42)),
            format!("ers_{}.", body(42)),
            format!("ers_{} ", body(42)),
            body(47),
        ] {
            assert_eq!(
                Token::hash_presented(TokenKind::Session, &bad),
                Err(MalformedToken),
                "{bad}"
            );
        }
    }

    #[test]
    fn each_kind_has_its_prefix_and_debug_names_only_the_kind() {
        for (kind, prefix, debug) in [
            (TokenKind::Session, "ers_", "Token(Session, <redacted>)"),
            (TokenKind::Device, "erd_", "Token(Device, <redacted>)"),
            (TokenKind::Challenge, "erc_", "Token(Challenge, <redacted>)"),
        ] {
            let t = Token::generate(kind);
            assert_eq!(t.kind(), kind);
            assert!(t.expose_secret().starts_with(prefix), "{kind:?}");
            assert_eq!(format!("{t:?}"), debug);
            assert_eq!(Token::hash_presented(kind, t.expose_secret()), Ok(t.hash()));
        }
    }
}
