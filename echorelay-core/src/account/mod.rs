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
//! | the GDPR Article 15 export | [`export`] | — |
//!
//! Stored records hold only hashes of tokens and codes and vault ciphertext
//! of TOTP seeds. Every failure a caller sees is the one generic
//! [`crate::Error::Unauthenticated`]; the reason goes to the audit log as a
//! [`LoginFailure`].
//!
//! Account events (S11's log, not its atomicity): the service appends each
//! one through [`crate::ports::AuditSink`] right after the change it
//! records, in a separate step, since sessions may live in another
//! backend than the log. A crash between the two can lose an event, never
//! record one for a change that did not happen; an append that fails is
//! returned as the operation's error after the change was made (failed
//! login steps only log it).

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, SessionId, UserId};
use crate::vault::Ciphertext;

pub mod backup;
pub mod export;
pub mod password;
pub mod service;
pub mod token;
pub mod totp;

pub use service::AccountService;

/// IPv4 or IPv6. An IPv4-mapped IPv6 address counts as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// What an attempt throttle counts ([`crate::ports::ThrottleStore::reserve_attempt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AttemptScope {
    /// Second-factor attempts of an account (TOTP, backup codes,
    /// enrollment confirmation).
    SecondFactor(UserId),
    /// Password logins against an account that present no trusted device
    /// of it: the bucket anyone who knows the email can fill.
    Password(UserId),
    /// Password logins that present a valid trusted-device cookie of the
    /// account: counted per device, so guesses by others (the
    /// [`AttemptScope::Password`] bucket) never lock out the holder of a
    /// device, and a stolen device cookie is still throttled.
    DevicePassword(DeviceId),
    /// Password re-checks inside a live session of the account (step-up,
    /// password change): only holders of a session reach this bucket.
    SessionPassword(UserId),
    /// Password attempts from one source: an IPv4 address, or the /64 an
    /// IPv6 address is in (one host usually holds a whole /64). Build it
    /// with [`AttemptScope::password_source`]; a loopback or unspecified
    /// address has none.
    PasswordSource(IpAddr),
}

impl AttemptScope {
    /// The password throttle of the source `ip`: the IPv4 address (an
    /// IPv4-mapped IPv6 address counts as IPv4), or its IPv6 /64.
    ///
    /// ```
    /// use echorelay_core::account::AttemptScope;
    /// let a = AttemptScope::password_source("2001:db8:1:2::5".parse().unwrap());
    /// let b = AttemptScope::password_source("2001:db8:1:2:ffff::1".parse().unwrap());
    /// assert_eq!(a, b);
    /// assert_eq!(a.key(), "password_source:2001:db8:1:2::/64");
    /// ```
    pub fn password_source(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => AttemptScope::PasswordSource(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AttemptScope::PasswordSource(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                    AttemptScope::PasswordSource(IpAddr::V6(net))
                }
            },
        }
    }

    /// The per-source password throttle of `ip`, or `None` when the
    /// address says nothing about the client: a loopback or unspecified
    /// address is what every request shows behind a local proxy that is
    /// not configured as trusted, so one bucket for it would be one global
    /// bucket (forty bad logins would lock everybody out).
    ///
    /// ```
    /// use echorelay_core::account::AttemptScope;
    /// assert!(AttemptScope::meaningful_source("127.0.0.1".parse().unwrap()).is_none());
    /// assert!(AttemptScope::meaningful_source("::ffff:127.0.0.1".parse().unwrap()).is_none());
    /// assert!(AttemptScope::meaningful_source("::1".parse().unwrap()).is_none());
    /// assert!(AttemptScope::meaningful_source("203.0.113.7".parse().unwrap()).is_some());
    /// ```
    pub fn meaningful_source(ip: IpAddr) -> Option<Self> {
        let ip = ip.to_canonical();
        if ip.is_loopback() || ip.is_unspecified() {
            None
        } else {
            Some(Self::password_source(ip))
        }
    }

    /// The stable text form a store keys the counter by:
    /// `second_factor:usr_…`, `password:usr_…`, `device_password:dev_…`,
    /// `session_password:usr_…`, `password_source:<ipv4>` or
    /// `password_source:<ipv6 network>/64`.
    pub fn key(&self) -> String {
        match self {
            AttemptScope::SecondFactor(u) => format!("second_factor:{u}"),
            AttemptScope::Password(u) => format!("password:{u}"),
            AttemptScope::DevicePassword(d) => format!("device_password:{d}"),
            AttemptScope::SessionPassword(u) => format!("session_password:{u}"),
            AttemptScope::PasswordSource(IpAddr::V4(ip)) => format!("password_source:{ip}"),
            AttemptScope::PasswordSource(IpAddr::V6(ip)) => format!("password_source:{ip}/64"),
        }
    }
}

/// Account security settings. Defaults follow the security page.
///
/// ## Login throttling (ASVS V2.2.1)
///
/// Password guessing is throttled without letting an attacker lock out an
/// account they do not control:
///
/// - **Per account, progressive.** Failed password logins against an
///   account that present no trusted device of it count in one bucket per
///   account ([`AttemptScope::Password`]). After `k` failures in the
///   window, the next attempt is refused until
///   [`AccountPolicy::password_backoff`] × 2^(k−1) after the last one
///   (capped at the window), and never more than
///   [`AccountPolicy::max_password_failures`] are checked per window.
///   While refused, the right password fails like a wrong one (no
///   verdict, so guessing cannot go on); a success without a device
///   resets the bucket.
/// - **A trusted device gets through.** A login presenting a valid
///   trusted-device cookie of the account (issued only after a second
///   factor, so it proves prior possession) is counted per device
///   ([`AttemptScope::DevicePassword`]) and not against the account or
///   the source: someone else's guesses never refuse it, and a stolen
///   device cookie is still throttled. Such a login does not reset the
///   account's bucket, so an attack in progress stays throttled. Password
///   re-checks inside a session (step-up, password change) count in a
///   bucket only session holders reach ([`AttemptScope::SessionPassword`]).
///   An owner without a trusted device waits the delay out like anyone.
/// - **Per source, only where the source means something.** Every
///   password attempt from one IPv4 address or IPv6 /64 counts against
///   [`AccountPolicy::max_password_attempts_per_source`]: it refuses that
///   source only. Loopback and unspecified addresses are not throttled per
///   source ([`AttemptScope::meaningful_source`]): behind a local proxy
///   that is not trusted (no `--trust-proxy`) every client shows them, and
///   the bucket would be global. Per-account throttling still applies.
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
    /// Password attempts checked per window against one account without a
    /// trusted device (default 10; a success resets the count), and per
    /// trusted device or per account's sessions. While refused, every
    /// attempt fails the same way, right password or not (see the type's
    /// docs: a trusted device of the account is not refused by others'
    /// failures).
    pub max_password_failures: u32,
    /// The first delay of the progressive password throttle: after `k`
    /// failures in the window, the next attempt of the same bucket waits
    /// `password_backoff × 2^(k−1)` after the last one, at most the window
    /// (default 1 second: 1 s, 2 s, 4 s, … 256 s after nine).
    pub password_backoff: Duration,
    /// Password attempts (successful or not) from one source per window:
    /// an IPv4 address or an IPv6 /64 (default 100).
    pub max_password_attempts_per_source: u32,
    /// The failure-counting window of every throttle; a lockout lasts
    /// until the oldest attempt in the window ages out.
    pub failure_window: Duration,
    /// Trusted devices kept per account; the oldest is evicted (default 5).
    pub max_trusted_devices: usize,
    /// Sessions kept per account (default 50): a login beyond it ends the
    /// account's oldest sessions (by creation, ties by id), audited as
    /// `SessionEnded` by the system. Concurrent logins may leave a few
    /// more for a moment; every login trims again.
    pub max_sessions: usize,
    /// Fixed lifetime of a trusted device (default 30 days), never
    /// extended by use.
    pub device_lifetime: Duration,
    /// Idle timeout of a session (default 30 minutes).
    pub session_idle: Duration,
    /// Absolute lifetime of a session (default 12 hours).
    pub session_absolute: Duration,
    /// Lifetime of a second-factor or enrollment challenge (default 5 min).
    pub challenge_lifetime: Duration,
    /// How recent a password or second-factor check must be for sensitive
    /// operations: regenerating backup codes, revoking devices, changing
    /// membership, revealing keys (default 10 minutes; ASVS V3.7.1).
    pub step_up_window: Duration,
}

impl Default for AccountPolicy {
    fn default() -> Self {
        Self {
            password: password::PasswordPolicy::default(),
            totp: totp::TotpParams::default(),
            issuer: "EchoRelay",
            max_second_factor_failures: 5,
            max_password_failures: 10,
            password_backoff: Duration::seconds(1),
            max_password_attempts_per_source: 100,
            failure_window: Duration::minutes(15),
            max_trusted_devices: 5,
            max_sessions: 50,
            device_lifetime: Duration::days(30),
            session_idle: Duration::minutes(30),
            session_absolute: Duration::hours(12),
            challenge_lifetime: Duration::minutes(5),
            step_up_window: Duration::minutes(10),
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
    /// The sealed seed (context: project `accounts`, record the account's
    /// `UserId` text, field `account.totp_seed`; docs/FORMATS.md §1.7).
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
    /// Last time the user proved a credential in this session (the login,
    /// or a step-up re-authentication).
    pub verified_at: DateTime<Utc>,
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// The user re-proved a credential in a session (step-up).
    Reauthenticated,
}

/// Why a login step failed. Recorded, never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
