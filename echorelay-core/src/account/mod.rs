//! Account security: passwords, TOTP, backup codes, trusted devices,
//! sessions and the login flow (invariants S6–S9, S11).
//!
//! | part | module | invariant |
//! |---|---|---|
//! | bcrypt with Symfony/PHP interop | [`password`] | S6 |
//! | RFC 6238 TOTP | [`totp`] | S7 |
//! | backup codes | [`backup`] | S7 |
//! | tokens for sessions, devices and challenges | [`token`] | S8, S9 |
//! | the login state machine and account operations | [`service`] | S7–S9, S11 |
//!
//! Stored records hold only hashes of tokens and codes and vault ciphertext
//! of TOTP seeds. Every failure a caller sees is the one generic
//! [`crate::Error::Unauthenticated`]; the reason goes to the audit log as a
//! [`LoginFailure`].

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, SessionId, UserId};
use crate::vault::Ciphertext;

pub mod backup;
pub mod password;
pub mod service;
pub mod token;
pub mod totp;

pub use service::AccountService;

/// IPv4 or IPv6. An IPv4-mapped IPv6 address counts as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpFamily {
    /// IPv4 (including `::ffff:a.b.c.d`).
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of `ip`.
    ///
    /// ```
    /// use echorelay_core::account::IpFamily;
    /// assert_eq!(IpFamily::of("::ffff:192.0.2.1".parse().unwrap()), IpFamily::V4);
    /// assert_eq!(IpFamily::of("2001:db8::1".parse().unwrap()), IpFamily::V6);
    /// ```
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

/// Account security settings. Defaults follow the security page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountPolicy {
    /// bcrypt cost for new hashes (default 13, minimum 10).
    pub password: password::PasswordPolicy,
    /// TOTP parameters (SHA-1, 6 digits, 30 s, ±1 step).
    pub totp: totp::TotpParams,
    /// Issuer shown in authenticator apps.
    pub issuer: &'static str,
    /// Failed second-factor attempts allowed per window before a lockout.
    pub max_second_factor_failures: u32,
    /// The failure-counting window; a lockout lasts until the oldest
    /// failure in the window ages out.
    pub failure_window: Duration,
    /// Trusted devices kept per account; the oldest is evicted (default 5).
    pub max_trusted_devices: usize,
    /// Fixed lifetime of a trusted device (default 30 days), never
    /// extended by use.
    pub device_lifetime: Duration,
    /// Idle timeout of a session (default 30 minutes).
    pub session_idle: Duration,
    /// Absolute lifetime of a session (default 12 hours).
    pub session_absolute: Duration,
    /// Lifetime of a second-factor or enrollment challenge (default 5 min).
    pub challenge_lifetime: Duration,
}

impl Default for AccountPolicy {
    fn default() -> Self {
        Self {
            password: password::PasswordPolicy::default(),
            totp: totp::TotpParams::default(),
            issuer: "EchoRelay",
            max_second_factor_failures: 5,
            failure_window: Duration::minutes(15),
            max_trusted_devices: 5,
            device_lifetime: Duration::days(30),
            session_idle: Duration::minutes(30),
            session_absolute: Duration::hours(12),
            challenge_lifetime: Duration::minutes(5),
        }
    }
}

/// A user account as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Id.
    pub id: UserId,
    /// Login email, lowercased.
    pub email: String,
    /// bcrypt hash.
    pub password_hash: password::PasswordHash,
    /// Credential epoch: bumped by a password change or 2FA reset. Sessions,
    /// devices and challenges of an older epoch are dead.
    pub epoch: u64,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// An account's TOTP factor as stored: the seed only as vault ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpRecord {
    /// The account.
    pub user: UserId,
    /// The sealed seed (AAD: account, `totp.seed`).
    pub seed: Ciphertext,
    /// Whether enrollment was confirmed with a valid code.
    pub active: bool,
    /// The last accepted time step; codes of this step or earlier are
    /// refused (RFC 6238 §5.2).
    pub last_step: Option<u64>,
    /// When the factor was created.
    pub created_at: DateTime<Utc>,
}

/// One backup code as stored: a salted hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCodeRecord {
    /// Position in its set (0–9).
    pub index: u8,
    /// Random salt.
    pub salt: [u8; 16],
    /// SHA-256(salt ‖ normalized code).
    pub hash: [u8; 32],
}

/// A trusted device as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Public handle.
    pub id: DeviceId,
    /// The account.
    pub user: UserId,
    /// SHA-256 of the cookie token.
    pub token_hash: [u8; 32],
    /// Issued.
    pub created_at: DateTime<Utc>,
    /// Fixed expiry (issue + lifetime); never extended.
    pub expires_at: DateTime<Utc>,
    /// Last time it skipped a second factor.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Family of the IP it was issued to.
    pub ip_family: IpFamily,
    /// The account's credential epoch when issued.
    pub epoch: u64,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Public handle.
    pub id: SessionId,
    /// SHA-256 of the cookie token.
    pub token_hash: [u8; 32],
    /// The account.
    pub user: UserId,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last request.
    pub last_seen_at: DateTime<Utc>,
    /// Absolute end.
    pub expires_at: DateTime<Utc>,
    /// The IP family it is pinned to.
    pub ip_family: IpFamily,
    /// The account's credential epoch when created.
    pub epoch: u64,
}

/// What a login challenge lets its holder do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeKind {
    /// Enter a TOTP or backup code.
    SecondFactor,
    /// Enroll TOTP (the account has no active second factor).
    Enrollment,
}

/// A pending login step as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeRecord {
    /// SHA-256 of the challenge token.
    pub token_hash: [u8; 32],
    /// The account that passed the password step.
    pub user: UserId,
    /// What comes next.
    pub kind: ChallengeKind,
    /// Expiry (issue + 5 minutes by default).
    pub expires_at: DateTime<Utc>,
    /// Family of the IP that passed the password step.
    pub ip_family: IpFamily,
    /// The account's credential epoch at the password step.
    pub epoch: u64,
}

/// An account security event, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountAction {
    /// Account created.
    Registered,
    /// A login completed: a session exists.
    LoginSucceeded,
    /// A login step failed (see the failure).
    LoginFailed,
    /// TOTP enrollment confirmed.
    TwoFactorEnrolled,
    /// TOTP removed (reset); devices revoked.
    TwoFactorReset,
    /// A backup code was used.
    BackupCodeUsed,
    /// A new set of backup codes replaced the old one.
    BackupCodesRegenerated,
    /// A device was trusted.
    DeviceTrusted,
    /// One or all trusted devices were revoked.
    DeviceRevoked,
    /// A session ended (logout, expiry seen, IP family change, or ended by
    /// the user).
    SessionEnded,
    /// The password changed; other sessions and all devices ended.
    PasswordChanged,
}

/// Why a login step failed. Recorded, never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginFailure {
    /// No account has this email.
    UnknownAccount,
    /// Wrong password.
    BadPassword,
    /// Wrong TOTP code.
    BadCode,
    /// A TOTP code of an already used time step.
    ReplayedCode,
    /// Wrong or used backup code.
    BadBackupCode,
    /// Too many failed second-factor attempts.
    LockedOut,
    /// The challenge is unknown, used or expired.
    BadChallenge,
    /// The request came from another IP family than the challenge or
    /// session.
    IpFamilyChanged,
    /// Malformed input (code format, token format, oversized password).
    Malformed,
    /// The session passed its idle timeout or absolute lifetime.
    Expired,
    /// The password changed or the second factor was reset since the
    /// session, device or challenge was issued.
    CredentialsChanged,
}
