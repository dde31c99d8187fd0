//! The account service: registration, the login state machine, sessions,
//! trusted devices, backup codes and the account's own security operations.
//!
//! ## The login flow
//!
//! ```text
//! login_password ──► EnrollmentRequired(challenge) ──► begin_enrollment ──► confirm_enrollment ──► session + backup codes
//!                ├─► SecondFactorRequired(challenge) ──► login_second_factor (TOTP or backup code) ──► session
//!                └─► Authenticated(session)            (a valid trusted-device cookie skipped the TOTP step only)
//! ```
//!
//! Each step consumes what the previous one handed out: a challenge is a
//! 256-bit token, valid for 5 minutes, bound to the IP family of the
//! password step, and removed atomically when it yields a session, so it is
//! single-use. No session exists for an account that has not passed a
//! second factor (S7): the only ways to a session are a verified TOTP code,
//! a backup code, a confirmed enrollment, or a trusted device that was
//! itself issued after a second factor.
//!
//! Every failure the caller sees is [`Error::Unauthenticated`] (the reason
//! is written to the audit log as [`LoginFailure`]), or
//! [`Error::Unavailable`] when the backend cannot be reached: never a
//! success.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use zeroize::Zeroizing;

use super::password;
use super::token::{Token, TokenKind};
use super::totp::{self, TotpSeed};
use super::{
    AccountAction, AccountPolicy, AccountRecord, AttemptScope, ChallengeKind, ChallengeRecord,
    DeviceRecord, IpFamily, LoginFailure, SessionRecord, TotpRecord, backup,
};
use crate::audit::{Actor, AuditDraft, EventKind};
use crate::clock::Clock;
use crate::error::{Error, Result, StoreError};
use crate::ids::{DeviceId, SessionId, UserId};
use crate::ports::{AccountStore, AuditSink, SessionStore, ThrottleStore};
use crate::vault::{SecretContext, SecretVault};

pub(crate) const SEED_PROJECT: &str = "accounts";
pub(crate) const SEED_FIELD: &str = "account.totp_seed";

/// A new session: hand `token` to the client as a cookie, once.
#[derive(Debug)]
pub struct NewSession {
    /// The cookie value.
    pub token: Token,
    /// Public handle (for listings).
    pub id: SessionId,
    /// The account.
    pub user: UserId,
    /// Absolute end.
    pub expires_at: DateTime<Utc>,
}

/// A new trusted device: hand `token` to the client as a cookie, once.
#[derive(Debug)]
pub struct NewDevice {
    /// The cookie value.
    pub token: Token,
    /// Public handle.
    pub id: DeviceId,
    /// Fixed expiry.
    pub expires_at: DateTime<Utc>,
}

/// A pending step: hand `token` back with the next request.
#[derive(Debug)]
pub struct Challenge {
    /// The challenge token.
    pub token: Token,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
}

/// What the password step leads to.
#[derive(Debug)]
pub enum PasswordStep {
    /// The account has no active second factor: only enrollment is open.
    EnrollmentRequired(Challenge),
    /// Enter a TOTP code or a backup code.
    SecondFactorRequired(Challenge),
    /// A valid trusted-device cookie skipped the TOTP step.
    Authenticated(NewSession),
}

/// A second factor as typed by the user.
#[derive(Debug)]
pub enum SecondFactor {
    /// A 6-digit TOTP code.
    Totp(SecretString),
    /// A backup code.
    BackupCode(SecretString),
}

/// A completed login.
#[derive(Debug)]
pub struct LoginComplete {
    /// The session.
    pub session: NewSession,
    /// A trusted-device cookie, when one was asked for.
    pub device: Option<NewDevice>,
}

/// What enrollment shows the user: scan the QR code or type the secret.
pub struct EnrollmentOffer {
    /// The `otpauth://` URI (it contains the seed).
    pub otpauth_uri: SecretString,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: Zeroizing<String>,
    /// The seed in base32, for typing.
    pub secret_base32: SecretString,
}

impl std::fmt::Debug for EnrollmentOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrollmentOffer(<redacted>)")
    }
}

/// A confirmed enrollment: a session and the backup codes, shown once.
#[derive(Debug)]
pub struct Enrolled {
    /// The login it completed.
    pub login: LoginComplete,
    /// Ten backup codes. Show them once; only salted hashes are kept.
    pub backup_codes: Vec<SecretString>,
}

/// A request's session, after every check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedSession {
    /// The account.
    pub user: UserId,
    /// The session's public handle.
    pub session: SessionId,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Absolute end.
    pub expires_at: DateTime<Utc>,
    /// The IP family it is pinned to.
    pub ip_family: IpFamily,
    /// The credential epoch it belongs to.
    pub epoch: u64,
    /// The last password or second-factor check in this session.
    pub verified_at: DateTime<Utc>,
    /// Whether `verified_at` is within the step-up window (set by the
    /// service; this type cannot be built outside it).
    stepped_up: bool,
}

impl AuthenticatedSession {
    /// Whether the user re-proved a credential within the policy's
    /// step-up window: sensitive operations need it.
    pub fn is_stepped_up(&self) -> bool {
        self.stepped_up
    }

    /// The caller this session acts as, for the voter; it carries the
    /// step-up state, so membership changes and key reveals work only
    /// shortly after a login or [`AccountService::step_up`].
    pub fn caller(&self, ip: Option<IpAddr>) -> crate::access::Caller {
        crate::access::Caller::user(self.user, ip).with_step_up(self.stepped_up)
    }

    fn require_step_up(&self) -> Result<()> {
        if self.stepped_up {
            Ok(())
        } else {
            Err(Error::ReauthenticationRequired)
        }
    }
}

/// A credential re-proved in a session (step-up).
#[derive(Debug)]
pub enum StepUp {
    /// The account's password.
    Password(SecretString),
    /// A current TOTP code.
    Totp(SecretString),
}

/// A live session, as listed to its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionView {
    /// Handle (to end it).
    pub id: SessionId,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last seen.
    pub last_seen_at: DateTime<Utc>,
    /// IP family.
    pub ip_family: IpFamily,
}

/// A trusted device, as listed to its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceView {
    /// Handle (to revoke it).
    pub id: DeviceId,
    /// Issued.
    pub created_at: DateTime<Utc>,
    /// Fixed expiry.
    pub expires_at: DateTime<Utc>,
    /// Last used.
    pub last_used_at: Option<DateTime<Utc>>,
    /// IP family it was issued to.
    pub ip_family: IpFamily,
}

/// An account's live sessions and trusted devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessList {
    /// Sessions.
    pub sessions: Vec<SessionView>,
    /// Devices.
    pub devices: Vec<DeviceView>,
}

/// Normalizes an email address for lookups: trimmed, lowercased, checked
/// for a plausible shape.
pub fn normalize_email(input: &str) -> Result<String> {
    let e = input.trim().to_lowercase();
    let bad = Error::InvalidInput("email must look like name@domain (at most 254 characters)");
    if e.len() > 254 || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad);
    }
    match e.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(e)
        }
        _ => Err(bad),
    }
}

/// The account service.
///
/// Its three ports may live in different backends (the expected deployment
/// keeps accounts and the audit log in Postgres and sessions in Redis):
/// `A` stores accounts and credentials, `S` sessions and login challenges,
/// `L` the audit log, `T` the throttles' attempt counters. With one
/// backend for all four, `S`, `L` and `T` default to `A` and
/// [`AccountService::new`] takes it once. (A [`Composed`](crate::ports::Composed)
/// store is the other way to split them: one value, every port.)
#[derive(Debug, Clone)]
pub struct AccountService<A, V, S = A, L = A, T = A> {
    accounts: A,
    sessions: S,
    audit: L,
    throttles: T,
    vault: V,
    clock: Arc<dyn Clock>,
    policy: AccountPolicy,
}

impl<A, V> AccountService<A, V>
where
    A: AccountStore + SessionStore + ThrottleStore + AuditSink + Clone,
    V: SecretVault,
{
    /// A service whose accounts, sessions and audit log all live in
    /// `store`, sealing TOTP seeds with `vault`.
    ///
    /// # Errors
    /// As [`AccountService::from_parts`].
    pub fn new(store: A, vault: V, clock: Arc<dyn Clock>, policy: AccountPolicy) -> Result<Self> {
        Self::from_parts(
            store.clone(),
            store.clone(),
            store.clone(),
            store,
            vault,
            clock,
            policy,
        )
    }
}

impl<A, V, S, L, T> AccountService<A, V, S, L, T>
where
    A: AccountStore,
    S: SessionStore,
    L: AuditSink,
    T: ThrottleStore,
    V: SecretVault,
{
    /// A service over separate ports: accounts and credentials in
    /// `accounts`, sessions and challenges in `sessions`, attempt counters
    /// in `throttles`, account events in `audit`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for invalid TOTP parameters, a device or
    /// session cap or failure limit of 0, or a duration that is not between 1 second and
    /// 10 years.
    pub fn from_parts(
        accounts: A,
        sessions: S,
        throttles: T,
        audit: L,
        vault: V,
        clock: Arc<dyn Clock>,
        policy: AccountPolicy,
    ) -> Result<Self> {
        policy
            .totp
            .validate()
            .map_err(|_| Error::InvalidInput("invalid TOTP parameters"))?;
        if policy.max_trusted_devices == 0
            || policy.max_sessions == 0
            || policy.max_second_factor_failures == 0
            || policy.max_password_failures == 0
            || policy.max_password_attempts_per_source == 0
        {
            return Err(Error::InvalidInput(
                "device cap and failure limit must be at least 1",
            ));
        }
        let sane = |d: Duration| d >= Duration::seconds(1) && d <= Duration::days(3650);
        let durations = [
            policy.failure_window,
            policy.device_lifetime,
            policy.session_idle,
            policy.session_absolute,
            policy.challenge_lifetime,
            policy.step_up_window,
            policy.password_backoff,
        ];
        if !durations.into_iter().all(sane) {
            return Err(Error::InvalidInput(
                "account policy durations must be between 1 second and 10 years",
            ));
        }
        // Made now, so the first unknown-account login costs what later ones do.
        password::dummy_hash(policy.password)?;
        Ok(Self {
            accounts,
            sessions,
            audit,
            throttles,
            vault,
            clock,
            policy,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &AccountPolicy {
        &self.policy
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn audit(
        &self,
        user: Option<UserId>,
        actor: Actor,
        ip: Option<IpAddr>,
        action: AccountAction,
        failure: Option<LoginFailure>,
    ) -> Result<()> {
        let draft = AuditDraft {
            project: None,
            at: self.now(),
            actor,
            ip,
            subject: user,
            kind: EventKind::Account { action, failure },
        };
        self.audit.append(draft).await?;
        Ok(())
    }

    /// Records a failed step and returns the one generic error.
    async fn fail(&self, user: Option<UserId>, ip: IpAddr, failure: LoginFailure) -> Error {
        let actor = user.map_or(Actor::System, Actor::User);
        if let Err(e) = self
            .audit(
                user,
                actor,
                Some(ip),
                AccountAction::LoginFailed,
                Some(failure),
            )
            .await
        {
            tracing::error!(error = %e, "could not audit a failed login step");
        }
        Error::Unauthenticated
    }

    /// Reserves one second-factor attempt before it is checked. Refused,
    /// and audited as a lockout, once the window holds the limit; a store
    /// failure refuses too (fail closed).
    async fn reserve_attempt(&self, user: UserId, ip: IpAddr) -> Result<()> {
        let scope = AttemptScope::SecondFactor(user);
        if self
            .reserve(&scope, self.policy.max_second_factor_failures)
            .await?
        {
            Ok(())
        } else {
            Err(self.fail(Some(user), ip, LoginFailure::LockedOut).await)
        }
    }

    /// Reserves one attempt of `scope` in the failure window.
    async fn reserve(&self, scope: &AttemptScope, max: u32) -> Result<bool> {
        let now = self.now();
        let since = now - self.policy.failure_window;
        Ok(self
            .throttles
            .reserve_attempt(scope, now, since, max)
            .await?)
    }

    /// The password throttles of a login without a trusted device,
    /// reserved before any bcrypt work: one attempt of the source when its
    /// address is meaningful (counted whatever the outcome) and, for a
    /// known account, one of the account's progressive bucket (forgotten
    /// after a success; not reserved when the source refuses). `false`
    /// when either refuses.
    async fn reserve_password(&self, user: Option<UserId>, ip: IpAddr) -> Result<bool> {
        let source_ok = match AttemptScope::meaningful_source(ip) {
            Some(source) => {
                self.reserve(&source, self.policy.max_password_attempts_per_source)
                    .await?
            }
            None => true,
        };
        // A refused source does not count against the account: it was not
        // checked.
        if !source_ok {
            return Ok(false);
        }
        match user {
            Some(u) => self.reserve_backoff(&AttemptScope::Password(u)).await,
            None => Ok(true),
        }
    }

    /// Reserves one password attempt of `scope` under the progressive
    /// throttle ([`AccountPolicy`]): refused while the delay after the last
    /// recorded attempt runs, or once the window holds
    /// `max_password_failures`. Of racing callers that saw the same count,
    /// at most one is reserved.
    async fn reserve_backoff(&self, scope: &AttemptScope) -> Result<bool> {
        let now = self.now();
        let since = now - self.policy.failure_window;
        let recorded = self.throttles.attempts_since(scope, since).await?;
        if let Some(last) = recorded.iter().max()
            && now < *last + self.backoff_after(recorded.len())
        {
            return Ok(false);
        }
        let max = u32::try_from(recorded.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
            .min(self.policy.max_password_failures);
        Ok(self
            .throttles
            .reserve_attempt(scope, now, since, max)
            .await?)
    }

    /// The delay after `failures` recorded attempts: the backoff doubled
    /// per failure after the first, at most the window.
    fn backoff_after(&self, failures: usize) -> Duration {
        let doublings = u32::try_from(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        let factor = 2i32.checked_pow(doublings).unwrap_or(i32::MAX);
        self.policy
            .password_backoff
            .checked_mul(factor)
            .map_or(self.policy.failure_window, |d| {
                d.min(self.policy.failure_window)
            })
    }

    /// Creates an account with a password and no second factor yet: its
    /// first login leads to enrollment.
    pub async fn register(
        &self,
        email: &str,
        password: SecretString,
        ip: Option<IpAddr>,
    ) -> Result<UserId> {
        let email = normalize_email(email)?;
        self.policy
            .password
            .check_new_password(password.expose_secret(), &[&email, self.policy.issuer])?;
        let hash = password::hash_password_async(password, self.policy.password).await?;
        let account = AccountRecord {
            id: UserId::random(),
            email,
            password_hash: hash,
            epoch: 0,
            created_at: self.now(),
        };
        let id = account.id;
        self.accounts.create_account(account).await?;
        self.audit(
            Some(id),
            Actor::User(id),
            ip,
            AccountAction::Registered,
            None,
        )
        .await?;
        Ok(id)
    }

    async fn new_challenge(
        &self,
        account: &AccountRecord,
        kind: ChallengeKind,
        ip: IpAddr,
    ) -> Result<Challenge> {
        let token = Token::generate(TokenKind::Challenge);
        let expires_at = self.now() + self.policy.challenge_lifetime;
        let rec = ChallengeRecord {
            token_hash: token.hash(),
            user: account.id,
            kind,
            expires_at,
            ip_family: IpFamily::of(ip),
            epoch: account.epoch,
        };
        self.sessions.insert_challenge(rec).await?;
        Ok(Challenge { token, expires_at })
    }

    /// [`AccountService::login_password`], before its errors are made opaque.
    async fn login_password_step(
        &self,
        email: &str,
        password: SecretString,
        ip: IpAddr,
        device_cookie: Option<&str>,
    ) -> Result<PasswordStep> {
        if password.expose_secret().len() > password::MAX_PASSWORD_BYTES {
            return Err(self.fail(None, ip, LoginFailure::Malformed).await);
        }
        let account = match normalize_email(email) {
            Ok(e) => self.accounts.account_by_email(&e).await?,
            Err(_) => None,
        };
        // A valid trusted device of the account is throttled on its own:
        // others' guesses (account or source buckets) never refuse it.
        let device = match &account {
            Some(a) => self.trusted_device(a, device_cookie).await?,
            None => None,
        };
        let reserved = match &device {
            Some(d) => {
                self.reserve_backoff(&AttemptScope::DevicePassword(d.id))
                    .await?
            }
            None => {
                self.reserve_password(account.as_ref().map(|a| a.id), ip)
                    .await?
            }
        };
        if !reserved {
            // Throttled: the same bcrypt work as a real check, the same
            // error, and no verdict on the password.
            let _ = password::verify_dummy_async(password, self.policy.password).await;
            let user = account.as_ref().map(|a| a.id);
            return Err(self.fail(user, ip, LoginFailure::LockedOut).await);
        }
        let Some(account) = account else {
            // Same work as a real verification: no enumeration by timing.
            let _ = password::verify_dummy_async(password, self.policy.password).await;
            return Err(self.fail(None, ip, LoginFailure::UnknownAccount).await);
        };
        let user = account.id;
        let candidate = Zeroizing::new(password.expose_secret().to_owned());
        // Padded to the policy's cost: a legacy cheaper hash takes as long
        // as an unknown account's dummy check.
        match password::verify_password_padded_async(
            password,
            account.password_hash.clone(),
            self.policy.password,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => return Err(self.fail(Some(user), ip, LoginFailure::BadPassword).await),
            Err(_) => return Err(self.fail(Some(user), ip, LoginFailure::Malformed).await),
        }
        // A device login forgets only the device's count: an attack on the
        // account's bucket stays throttled.
        let used = match &device {
            Some(d) => AttemptScope::DevicePassword(d.id),
            None => AttemptScope::Password(user),
        };
        self.throttles.clear_attempts(&used).await?;
        if password::needs_rehash(&account.password_hash, self.policy.password) {
            // Compare-and-swap: a password change that landed meanwhile wins.
            match password::hash_password_async(
                SecretString::from(candidate.as_str()),
                self.policy.password,
            )
            .await
            {
                Ok(h) => {
                    self.accounts
                        .replace_password_hash(user, &account.password_hash, h, false)
                        .await?;
                }
                Err(e) => tracing::warn!(error = %e, "could not rehash a password"),
            }
        }
        drop(candidate);
        let active = self.accounts.totp(user).await?.is_some_and(|t| t.active);
        if !active {
            return Ok(PasswordStep::EnrollmentRequired(
                self.new_challenge(&account, ChallengeKind::Enrollment, ip)
                    .await?,
            ));
        }
        if let Some(device) = device {
            // A device evicted meanwhile still proved itself a moment ago.
            self.accounts.touch_device(device.id, self.now()).await?;
            let session = self.new_session(user, account.epoch, ip, None).await?;
            self.audit(
                Some(user),
                Actor::User(user),
                Some(ip),
                AccountAction::LoginSucceeded,
                None,
            )
            .await?;
            return Ok(PasswordStep::Authenticated(session));
        }
        Ok(PasswordStep::SecondFactorRequired(
            self.new_challenge(&account, ChallengeKind::SecondFactor, ip)
                .await?,
        ))
    }

    async fn trusted_device(
        &self,
        account: &AccountRecord,
        cookie: Option<&str>,
    ) -> Result<Option<DeviceRecord>> {
        let Some(cookie) = cookie else {
            return Ok(None);
        };
        let Ok(hash) = Token::hash_presented(TokenKind::Device, cookie) else {
            return Ok(None);
        };
        let now = self.now();
        Ok(self
            .accounts
            .device_by_token(&hash)
            .await?
            .filter(|d| d.user == account.id && d.epoch == account.epoch && now < d.expires_at))
    }

    /// The challenge behind a presented token, checked for `kind`, expiry,
    /// IP family and credential epoch; every failure is audited and
    /// returned as the generic error. A second-factor challenge is taken
    /// (consumed) before the checks, so it is single-use whatever follows;
    /// a challenge of another kind is refused without being consumed. An
    /// enrollment challenge is only read: it is taken on success.
    async fn challenge_for(
        &self,
        token: &str,
        kind: ChallengeKind,
        ip: IpAddr,
    ) -> Result<ChallengeRecord> {
        let Ok(hash) = Token::hash_presented(TokenKind::Challenge, token) else {
            return Err(self.fail(None, ip, LoginFailure::Malformed).await);
        };
        let found = match self.sessions.challenge(&hash).await? {
            Some(c) if c.kind == kind => c,
            other => {
                return Err(self
                    .fail(other.map(|c| c.user), ip, LoginFailure::BadChallenge)
                    .await);
            }
        };
        let c = if kind == ChallengeKind::SecondFactor {
            match self.sessions.take_challenge(&hash).await? {
                Some(c) => c,
                None => {
                    return Err(self
                        .fail(Some(found.user), ip, LoginFailure::BadChallenge)
                        .await);
                }
            }
        } else {
            found
        };
        if let Err(why) = self.check_challenge(&c, kind, ip).await {
            return Err(self.fail(Some(c.user), ip, why).await);
        }
        Ok(c)
    }

    /// The time step `code` matches for the factor's seed; a wrong or
    /// malformed code is audited and returned as the generic error.
    async fn matched_step(&self, rec: &TotpRecord, code: &SecretString, ip: IpAddr) -> Result<u64> {
        let seed = self.seed_of(rec)?;
        match totp::match_step(
            &seed,
            &self.policy.totp,
            code.expose_secret(),
            self.unix_now(),
        ) {
            Ok(Some(step)) => Ok(step),
            Ok(None) => Err(self.fail(Some(rec.user), ip, LoginFailure::BadCode).await),
            Err(_) => Err(self.fail(Some(rec.user), ip, LoginFailure::Malformed).await),
        }
    }

    /// Checks a challenge record (already looked up or taken): kind,
    /// expiry, IP family, and that the account's credentials have not
    /// changed since.
    async fn check_challenge(
        &self,
        c: &ChallengeRecord,
        kind: ChallengeKind,
        ip: IpAddr,
    ) -> std::result::Result<(), LoginFailure> {
        if c.kind != kind || self.now() >= c.expires_at {
            return Err(LoginFailure::BadChallenge);
        }
        if c.ip_family != IpFamily::of(ip) {
            return Err(LoginFailure::IpFamilyChanged);
        }
        match self.accounts.account(c.user).await {
            Ok(Some(a)) if a.epoch == c.epoch => Ok(()),
            Ok(Some(_)) => Err(LoginFailure::CredentialsChanged),
            _ => Err(LoginFailure::BadChallenge),
        }
    }

    /// Until when the account's second factor is locked, if it is.
    pub async fn second_factor_locked_until(&self, user: UserId) -> Result<Option<DateTime<Utc>>> {
        let since = self.now() - self.policy.failure_window;
        let mut attempts = self
            .throttles
            .attempts_since(&AttemptScope::SecondFactor(user), since)
            .await?;
        let max = self.policy.max_second_factor_failures as usize;
        if attempts.len() < max {
            return Ok(None);
        }
        attempts.sort();
        // Locked until enough attempts age out of the window.
        Ok(attempts
            .get(attempts.len() - max)
            .map(|t| *t + self.policy.failure_window))
    }

    fn seed_of(&self, rec: &TotpRecord) -> Result<TotpSeed> {
        let user = rec.user.to_string();
        let ctx = SecretContext {
            project: SEED_PROJECT,
            record: &user,
            field: SEED_FIELD,
        };
        let bytes = self.vault.open(&rec.seed, &ctx)?;
        TotpSeed::from_bytes(&bytes)
            .map_err(|_| Error::InvalidInput("stored TOTP seed has a bad length"))
    }

    fn unix_now(&self) -> u64 {
        u64::try_from(self.now().timestamp()).unwrap_or(0)
    }

    /// [`AccountService::login_second_factor`], before its errors are made opaque.
    async fn login_second_factor_step(
        &self,
        challenge: &str,
        factor: SecondFactor,
        ip: IpAddr,
        trust_device: bool,
    ) -> Result<LoginComplete> {
        let c = self
            .challenge_for(challenge, ChallengeKind::SecondFactor, ip)
            .await?;
        let user = c.user;
        self.reserve_attempt(user, ip).await?;
        let used_backup = match factor {
            SecondFactor::Totp(code) => {
                let Some(rec) = self.accounts.totp(user).await?.filter(|t| t.active) else {
                    return Err(self.fail(Some(user), ip, LoginFailure::BadChallenge).await);
                };
                let step = self.matched_step(&rec, &code, ip).await?;
                // Of concurrent submissions of one code, one wins.
                if !self.accounts.advance_totp_step(user, step).await? {
                    return Err(self.fail(Some(user), ip, LoginFailure::ReplayedCode).await);
                }
                false
            }
            SecondFactor::BackupCode(code) => {
                let records = self.accounts.backup_codes(user).await?;
                let Some(record) = backup::find(&records, &code) else {
                    return Err(self.fail(Some(user), ip, LoginFailure::BadBackupCode).await);
                };
                // Of racing requests with the same code, exactly one wins;
                // a code of a replaced set never matches.
                if !self.accounts.consume_backup_code(user, record).await? {
                    return Err(self.fail(Some(user), ip, LoginFailure::BadBackupCode).await);
                }
                true
            }
        };
        self.throttles
            .clear_attempts(&AttemptScope::SecondFactor(user))
            .await?;
        if used_backup {
            self.audit(
                Some(user),
                Actor::User(user),
                Some(ip),
                AccountAction::BackupCodeUsed,
                None,
            )
            .await?;
        }
        self.complete(user, c.epoch, ip, trust_device).await
    }

    async fn complete(
        &self,
        user: UserId,
        epoch: u64,
        ip: IpAddr,
        trust_device: bool,
    ) -> Result<LoginComplete> {
        let session = self.new_session(user, epoch, ip, None).await?;
        let device = if trust_device {
            Some(self.trust_device(user, epoch, ip).await?)
        } else {
            None
        };
        self.audit(
            Some(user),
            Actor::User(user),
            Some(ip),
            AccountAction::LoginSucceeded,
            None,
        )
        .await?;
        Ok(LoginComplete { session, device })
    }

    async fn trust_device(&self, user: UserId, epoch: u64, ip: IpAddr) -> Result<NewDevice> {
        let token = Token::generate(TokenKind::Device);
        let now = self.now();
        let rec = DeviceRecord {
            id: DeviceId::random(),
            user,
            token_hash: token.hash(),
            created_at: now,
            expires_at: now + self.policy.device_lifetime,
            last_used_at: None,
            ip_family: IpFamily::of(ip),
            epoch,
        };
        let (id, expires_at) = (rec.id, rec.expires_at);
        let evicted = self
            .accounts
            .add_device(rec, self.policy.max_trusted_devices)
            .await?;
        self.audit(
            Some(user),
            Actor::User(user),
            Some(ip),
            AccountAction::DeviceTrusted,
            None,
        )
        .await?;
        if !evicted.is_empty() {
            self.audit(
                Some(user),
                Actor::System,
                Some(ip),
                AccountAction::DeviceRevoked,
                None,
            )
            .await?;
        }
        Ok(NewDevice {
            token,
            id,
            expires_at,
        })
    }

    /// A new session; `lifetime` keeps the creation and absolute end of a
    /// session it replaces.
    async fn new_session(
        &self,
        user: UserId,
        epoch: u64,
        ip: IpAddr,
        lifetime: Option<(DateTime<Utc>, DateTime<Utc>)>,
    ) -> Result<NewSession> {
        let token = Token::generate(TokenKind::Session);
        let now = self.now();
        let (created_at, expires_at) =
            lifetime.unwrap_or((now, now + self.policy.session_absolute));
        let rec = SessionRecord {
            id: SessionId::random(),
            token_hash: token.hash(),
            user,
            created_at,
            last_seen_at: now,
            verified_at: now,
            expires_at,
            ip_family: IpFamily::of(ip),
            epoch,
        };
        let id = rec.id;
        self.sessions.insert_session(rec).await?;
        if lifetime.is_none() {
            self.evict_sessions(user, id, ip).await?;
        }
        Ok(NewSession {
            token,
            id,
            user,
            expires_at,
        })
    }

    /// Ends the account's oldest sessions (by creation, ties by id) beyond
    /// [`AccountPolicy::max_sessions`], never `keep` (the new one), and
    /// audits the eviction like a device eviction.
    async fn evict_sessions(&self, user: UserId, keep: SessionId, ip: IpAddr) -> Result<()> {
        let mut sessions = self.sessions.sessions_of(user).await?;
        if sessions.len() <= self.policy.max_sessions {
            return Ok(());
        }
        sessions.sort_by_key(|s| (s.created_at, s.id));
        let excess = sessions.len() - self.policy.max_sessions;
        let mut ended = 0;
        for s in sessions.iter().filter(|s| s.id != keep).take(excess) {
            if self.sessions.delete_session(s.id).await? {
                ended += 1;
            }
        }
        if ended > 0 {
            self.audit(
                Some(user),
                Actor::System,
                Some(ip),
                AccountAction::SessionEnded,
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// [`AccountService::begin_enrollment`], before its errors are made opaque.
    async fn begin_enrollment_step(&self, challenge: &str, ip: IpAddr) -> Result<EnrollmentOffer> {
        let c = self
            .challenge_for(challenge, ChallengeKind::Enrollment, ip)
            .await?;
        let Some(account) = self.accounts.account(c.user).await? else {
            return Err(self
                .fail(Some(c.user), ip, LoginFailure::BadChallenge)
                .await);
        };
        let seed = TotpSeed::generate();
        let user = c.user.to_string();
        let ctx = SecretContext {
            project: SEED_PROJECT,
            record: &user,
            field: SEED_FIELD,
        };
        let rec = TotpRecord {
            user: c.user,
            seed: self.vault.seal(seed.expose_bytes(), &ctx)?,
            active: false,
            last_step: None,
            created_at: self.now(),
        };
        match self.accounts.put_pending_totp(rec).await {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => {
                return Err(self
                    .fail(Some(c.user), ip, LoginFailure::BadChallenge)
                    .await);
            }
            Err(e) => return Err(e.into()),
        }
        let otpauth_uri =
            totp::otpauth_uri(&seed, &self.policy.totp, self.policy.issuer, &account.email);
        let qr_svg = totp::qr_svg(&otpauth_uri)
            .map_err(|_| Error::InvalidInput("otpauth URI too long for a QR code"))?;
        Ok(EnrollmentOffer {
            otpauth_uri,
            qr_svg,
            secret_base32: seed.to_base32(),
        })
    }

    /// [`AccountService::confirm_enrollment`], before its errors are made opaque.
    async fn confirm_enrollment_step(
        &self,
        challenge: &str,
        code: &SecretString,
        ip: IpAddr,
        trust_device: bool,
    ) -> Result<Enrolled> {
        let c = self
            .challenge_for(challenge, ChallengeKind::Enrollment, ip)
            .await?;
        let user = c.user;
        self.reserve_attempt(user, ip).await?;
        let Some(rec) = self.accounts.totp(user).await?.filter(|t| !t.active) else {
            return Err(self.fail(Some(user), ip, LoginFailure::BadChallenge).await);
        };
        let step = self.matched_step(&rec, code, ip).await?;
        if self.sessions.take_challenge(&c.token_hash).await?.is_none() {
            return Err(self.fail(Some(user), ip, LoginFailure::BadChallenge).await);
        }
        let codes = backup::generate();
        match self
            .accounts
            .activate_totp(user, &rec.seed, step, codes.records)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict { .. }) => {
                return Err(self.fail(Some(user), ip, LoginFailure::BadChallenge).await);
            }
            Err(e) => return Err(e.into()),
        }
        self.throttles
            .clear_attempts(&AttemptScope::SecondFactor(user))
            .await?;
        self.audit(
            Some(user),
            Actor::User(user),
            Some(ip),
            AccountAction::TwoFactorEnrolled,
            None,
        )
        .await?;
        let login = self.complete(user, c.epoch, ip, trust_device).await?;
        Ok(Enrolled {
            login,
            backup_codes: codes.codes,
        })
    }

    /// [`AccountService::authenticate`], before its errors are made opaque.
    async fn authenticate_step(&self, cookie: &str, ip: IpAddr) -> Result<AuthenticatedSession> {
        let hash = Token::hash_presented(TokenKind::Session, cookie)
            .map_err(|_| Error::Unauthenticated)?;
        let now = self.now();
        // Looked up and, while live, touched in one step where the store
        // can (one Redis round trip); every rule is checked below on the
        // record as it was.
        let (s, touched) = self
            .sessions
            .session_for_request(&hash, now, self.policy.session_idle)
            .await?
            .ok_or(Error::Unauthenticated)?;
        let ended = if IpFamily::of(ip) != s.ip_family {
            Some(LoginFailure::IpFamilyChanged)
        } else if now >= s.expires_at || now >= s.last_seen_at + self.policy.session_idle {
            Some(LoginFailure::Expired)
        } else if self
            .accounts
            .account(s.user)
            .await?
            .is_none_or(|a| a.epoch != s.epoch)
        {
            Some(LoginFailure::CredentialsChanged)
        } else {
            None
        };
        if let Some(why) = ended {
            self.sessions.delete_session(s.id).await?;
            self.audit(
                Some(s.user),
                Actor::System,
                Some(ip),
                AccountAction::SessionEnded,
                Some(why),
            )
            .await?;
            return Err(Error::Unauthenticated);
        }
        if !touched {
            // Ended (logout, renewal) between the lookup and the touch.
            return Err(Error::Unauthenticated);
        }
        Ok(AuthenticatedSession {
            user: s.user,
            session: s.id,
            created_at: s.created_at,
            expires_at: s.expires_at,
            ip_family: s.ip_family,
            epoch: s.epoch,
            verified_at: s.verified_at,
            stepped_up: now < s.verified_at + self.policy.step_up_window,
        })
    }

    /// Issues a new session id for the same session (call on any privilege
    /// change); the old cookie stops working.
    pub async fn renew_session(&self, cookie: &str, ip: IpAddr) -> Result<NewSession> {
        let s = self.authenticate(cookie, ip).await?;
        let token = Token::generate(TokenKind::Session);
        let rec = SessionRecord {
            id: SessionId::random(),
            token_hash: token.hash(),
            user: s.user,
            created_at: s.created_at,
            last_seen_at: self.now(),
            verified_at: s.verified_at,
            expires_at: s.expires_at,
            ip_family: s.ip_family,
            epoch: s.epoch,
        };
        let (id, expires_at) = (rec.id, rec.expires_at);
        self.sessions.replace_session(s.session, rec).await?;
        Ok(NewSession {
            token,
            id,
            user: s.user,
            expires_at,
        })
    }

    /// Ends the cookie's session. Unknown cookies are ignored.
    pub async fn logout(&self, cookie: &str, ip: IpAddr) -> Result<()> {
        let Ok(hash) = Token::hash_presented(TokenKind::Session, cookie) else {
            return Ok(());
        };
        if let Some(s) = self.sessions.session_by_token(&hash).await?
            && self.sessions.delete_session(s.id).await?
        {
            self.audit(
                Some(s.user),
                Actor::User(s.user),
                Some(ip),
                AccountAction::SessionEnded,
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// Ends every session of the account ("log out everywhere").
    pub async fn logout_everywhere(&self, user: UserId, ip: Option<IpAddr>) -> Result<usize> {
        let n = self.sessions.delete_sessions_of(user, None).await?;
        self.audit(
            Some(user),
            Actor::User(user),
            ip,
            AccountAction::SessionEnded,
            None,
        )
        .await?;
        Ok(n)
    }

    /// The account's live sessions and trusted devices.
    pub async fn access_list(&self, user: UserId) -> Result<AccessList> {
        let now = self.now();
        let idle = self.policy.session_idle;
        let epoch = self.accounts.account(user).await?.map(|a| a.epoch);
        let sessions = self
            .sessions
            .sessions_of(user)
            .await?
            .into_iter()
            .filter(|s| now < s.expires_at && now < s.last_seen_at + idle && Some(s.epoch) == epoch)
            .map(|s| SessionView {
                id: s.id,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
                ip_family: s.ip_family,
            })
            .collect();
        let devices = self
            .accounts
            .devices_of(user)
            .await?
            .into_iter()
            .filter(|d| now < d.expires_at && Some(d.epoch) == epoch)
            .map(|d| DeviceView {
                id: d.id,
                created_at: d.created_at,
                expires_at: d.expires_at,
                last_used_at: d.last_used_at,
                ip_family: d.ip_family,
            })
            .collect();
        Ok(AccessList { sessions, devices })
    }

    /// Ends one of the account's sessions (from the access list).
    pub async fn end_session(&self, user: UserId, id: SessionId, ip: Option<IpAddr>) -> Result<()> {
        let mine = self
            .sessions
            .sessions_of(user)
            .await?
            .iter()
            .any(|s| s.id == id);
        if !mine || !self.sessions.delete_session(id).await? {
            return Err(StoreError::NotFound { kind: "session" }.into());
        }
        self.audit(
            Some(user),
            Actor::User(user),
            ip,
            AccountAction::SessionEnded,
            None,
        )
        .await
    }

    /// Revokes one trusted device, or all with `None`. Returns how many.
    ///
    /// # Errors
    /// [`Error::ReauthenticationRequired`] unless the session stepped up
    /// recently ([`AccountService::step_up`]).
    pub async fn revoke_devices(
        &self,
        session: &AuthenticatedSession,
        which: Option<DeviceId>,
        ip: Option<IpAddr>,
    ) -> Result<usize> {
        session.require_step_up()?;
        let user = session.user;
        let n = self.accounts.revoke_devices(user, which).await?;
        if n == 0 && which.is_some() {
            return Err(StoreError::NotFound { kind: "device" }.into());
        }
        self.audit(
            Some(user),
            Actor::User(user),
            ip,
            AccountAction::DeviceRevoked,
            None,
        )
        .await?;
        Ok(n)
    }

    /// Changes the password of the cookie's account after checking the
    /// current one (throttled like a second factor). The credential epoch
    /// moves in the same step, so every session (including this one), every
    /// trusted device and every pending challenge dies; the returned session
    /// replaces this one and keeps its absolute end.
    pub async fn change_password(
        &self,
        cookie: &str,
        current: SecretString,
        new: SecretString,
        ip: IpAddr,
    ) -> Result<NewSession> {
        let s = self.authenticate(cookie, ip).await?;
        let user = s.user;
        let account = self
            .accounts
            .account(user)
            .await?
            .ok_or(Error::Unauthenticated)?;
        let scope = AttemptScope::SessionPassword(user);
        if !self.reserve_backoff(&scope).await? {
            return Err(self.fail(Some(user), ip, LoginFailure::LockedOut).await);
        }
        if !password::verify_password_async(current, account.password_hash.clone())
            .await
            .unwrap_or(false)
        {
            return Err(self.fail(Some(user), ip, LoginFailure::BadPassword).await);
        }
        self.throttles.clear_attempts(&scope).await?;
        self.policy
            .password
            .check_new_password(new.expose_secret(), &[&account.email, self.policy.issuer])?;
        let hash = password::hash_password_async(new, self.policy.password).await?;
        if !self
            .accounts
            .replace_password_hash(user, &account.password_hash, hash, true)
            .await?
        {
            // Another change won the race; this one must not silently undo it.
            return Err(StoreError::Conflict {
                reason: "the password changed meanwhile",
            }
            .into());
        }
        // Dead already by epoch; removed for tidiness.
        self.accounts.revoke_devices(user, None).await?;
        self.sessions.delete_sessions_of(user, None).await?;
        for action in [
            AccountAction::PasswordChanged,
            AccountAction::DeviceRevoked,
            AccountAction::SessionEnded,
        ] {
            self.audit(Some(user), Actor::User(user), Some(ip), action, None)
                .await?;
        }
        self.new_session(
            user,
            account.epoch + 1,
            ip,
            Some((s.created_at, s.expires_at)),
        )
        .await
    }

    /// Removes the account's second factor and backup codes, revokes its
    /// devices and moves its credential epoch in one step, so every session
    /// and challenge dies too (support or recovery action: the caller
    /// authorizes it and is recorded as `actor`). The next login leads to
    /// enrollment.
    pub async fn reset_two_factor(
        &self,
        user: UserId,
        actor: Actor,
        ip: Option<IpAddr>,
    ) -> Result<()> {
        self.accounts.reset_second_factor(user).await?;
        self.sessions.delete_sessions_of(user, None).await?;
        for action in [
            AccountAction::TwoFactorReset,
            AccountAction::DeviceRevoked,
            AccountAction::SessionEnded,
        ] {
            self.audit(Some(user), actor, ip, action, None).await?;
        }
        Ok(())
    }

    /// Replaces the account's backup codes with a new set (shown once); the
    /// old set stops working.
    pub async fn regenerate_backup_codes(
        &self,
        cookie: &str,
        ip: IpAddr,
    ) -> Result<Vec<SecretString>> {
        let s = self.authenticate(cookie, ip).await?;
        s.require_step_up()?;
        if !self.accounts.totp(s.user).await?.is_some_and(|t| t.active) {
            return Err(Error::InvalidInput(
                "backup codes need an active second factor",
            ));
        }
        let set = backup::generate();
        self.accounts
            .replace_backup_codes(s.user, set.records)
            .await?;
        self.audit(
            Some(s.user),
            Actor::User(s.user),
            Some(ip),
            AccountAction::BackupCodesRegenerated,
            None,
        )
        .await?;
        Ok(set.codes)
    }

    /// Step 1: email and password, plus the trusted-device cookie if the
    /// browser has one. An unknown email costs the same bcrypt work as a
    /// wrong password.
    ///
    /// # Errors
    /// Only [`Error::Unauthenticated`] (any failure; the reason is audited)
    /// or [`Error::Unavailable`] (backend outage), as for every login step.
    pub async fn login_password(
        &self,
        email: &str,
        password: SecretString,
        ip: IpAddr,
        device_cookie: Option<&str>,
    ) -> Result<PasswordStep> {
        self.login_password_step(email, password, ip, device_cookie)
            .await
            .map_err(Error::into_auth_failure)
    }

    /// Step 2: a TOTP code or a backup code. The challenge is consumed by
    /// this call whatever its outcome (single-use: a wrong code means
    /// starting again with the password). With `trust_device`, also issues
    /// a trusted-device cookie (the oldest device beyond the cap is
    /// evicted).
    ///
    /// # Errors
    /// Only [`Error::Unauthenticated`] or [`Error::Unavailable`].
    pub async fn login_second_factor(
        &self,
        challenge: &str,
        factor: SecondFactor,
        ip: IpAddr,
        trust_device: bool,
    ) -> Result<LoginComplete> {
        self.login_second_factor_step(challenge, factor, ip, trust_device)
            .await
            .map_err(Error::into_auth_failure)
    }

    /// Enrollment, step 1: makes a fresh seed (sealed at rest) and returns
    /// the `otpauth://` URI and QR code. The factor stays inactive until
    /// [`AccountService::confirm_enrollment`] sees a valid code.
    ///
    /// # Errors
    /// Only [`Error::Unauthenticated`] or [`Error::Unavailable`].
    pub async fn begin_enrollment(&self, challenge: &str, ip: IpAddr) -> Result<EnrollmentOffer> {
        self.begin_enrollment_step(challenge, ip)
            .await
            .map_err(Error::into_auth_failure)
    }

    /// Enrollment, step 2: a valid code activates the factor (the very seed
    /// the code was checked against), yields ten backup codes (shown once)
    /// and completes the login. A wrong code may be retried on the same
    /// challenge within the attempt limit; success consumes it.
    ///
    /// # Errors
    /// Only [`Error::Unauthenticated`] or [`Error::Unavailable`].
    pub async fn confirm_enrollment(
        &self,
        challenge: &str,
        code: &SecretString,
        ip: IpAddr,
        trust_device: bool,
    ) -> Result<Enrolled> {
        self.confirm_enrollment_step(challenge, code, ip, trust_device)
            .await
            .map_err(Error::into_auth_failure)
    }

    /// Checks a request's session cookie: unknown, expired (idle or
    /// absolute), from the other IP family, or older than the account's
    /// last password change or 2FA reset all fail; all but the first also
    /// end the session. On success, records the activity.
    ///
    /// # Errors
    /// Only [`Error::Unauthenticated`] or [`Error::Unavailable`].
    pub async fn authenticate(&self, cookie: &str, ip: IpAddr) -> Result<AuthenticatedSession> {
        self.authenticate_step(cookie, ip)
            .await
            .map_err(Error::into_auth_failure)
    }

    /// Step-up re-authentication (ASVS V3.7.1): the user proves their
    /// password or a current TOTP code again in this session, which then
    /// counts as recently verified for [`AccountPolicy::step_up_window`]
    /// (backup codes, devices, membership changes, key reveals). Throttled
    /// like the login steps; every failure is the opaque
    /// [`Error::Unauthenticated`] (or [`Error::Unavailable`]).
    pub async fn step_up(
        &self,
        cookie: &str,
        ip: IpAddr,
        proof: StepUp,
    ) -> Result<AuthenticatedSession> {
        self.step_up_step(cookie, ip, proof)
            .await
            .map_err(Error::into_auth_failure)
    }

    async fn step_up_step(
        &self,
        cookie: &str,
        ip: IpAddr,
        proof: StepUp,
    ) -> Result<AuthenticatedSession> {
        let s = self.authenticate_step(cookie, ip).await?;
        let user = s.user;
        match proof {
            StepUp::Password(pw) => {
                let scope = AttemptScope::SessionPassword(user);
                if !self.reserve_backoff(&scope).await? {
                    let _ = password::verify_dummy_async(pw, self.policy.password).await;
                    return Err(self.fail(Some(user), ip, LoginFailure::LockedOut).await);
                }
                let account = self
                    .accounts
                    .account(user)
                    .await?
                    .ok_or(Error::Unauthenticated)?;
                if !password::verify_password_async(pw, account.password_hash)
                    .await
                    .unwrap_or(false)
                {
                    return Err(self.fail(Some(user), ip, LoginFailure::BadPassword).await);
                }
                self.throttles.clear_attempts(&scope).await?;
            }
            StepUp::Totp(code) => {
                self.reserve_attempt(user, ip).await?;
                let Some(rec) = self.accounts.totp(user).await?.filter(|t| t.active) else {
                    return Err(self.fail(Some(user), ip, LoginFailure::BadChallenge).await);
                };
                let step = self.matched_step(&rec, &code, ip).await?;
                if !self.accounts.advance_totp_step(user, step).await? {
                    return Err(self.fail(Some(user), ip, LoginFailure::ReplayedCode).await);
                }
                self.throttles
                    .clear_attempts(&AttemptScope::SecondFactor(user))
                    .await?;
            }
        }
        let now = self.now();
        if !self.sessions.mark_verified(s.session, now).await? {
            return Err(Error::Unauthenticated);
        }
        self.audit(
            Some(user),
            Actor::User(user),
            Some(ip),
            AccountAction::Reauthenticated,
            None,
        )
        .await?;
        Ok(AuthenticatedSession {
            verified_at: now,
            stepped_up: true,
            ..s
        })
    }

    /// Deletes expired challenges and sessions (schedule it; Redis-like
    /// stores may expire them by themselves). Returns how many.
    pub async fn purge_expired(&self) -> Result<usize> {
        let now = self.now();
        Ok(self
            .sessions
            .purge_expired(now, now - self.policy.session_idle)
            .await?)
    }
}
