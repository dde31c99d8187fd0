//! Conformance suite for [`AccountStore`](echorelay_core::ports::AccountStore)
//! and [`SessionStore`](echorelay_core::ports::SessionStore), driven through
//! [`AccountService`](echorelay_core::account::AccountService): the login
//! flow, TOTP, backup codes, trusted devices and sessions (S7–S9).

use std::net::IpAddr;

use chrono::Duration;
use echorelay_core::Error;
use echorelay_core::account::AttemptScope;
use echorelay_core::account::service::{LoginComplete, PasswordStep, SecondFactor, StepUp};
use echorelay_core::account::token::{Token, TokenKind};
use echorelay_core::account::totp::{TotpSeed, code_for_step, step_at};
use echorelay_core::account::{
    AccountAction, ChallengeKind, ChallengeRecord, DeviceRecord, IpFamily, LoginFailure,
    SessionRecord,
};
use echorelay_core::audit::{Actor, EventKind};
use echorelay_core::clock::Clock;
use echorelay_core::ids::{DeviceId, SessionId, UserId};
use secrecy::{ExposeSecret, SecretString};

use crate::{Backend, Harness};

const PASSWORD: &str = "correct horse battery staple";

fn v4() -> IpAddr {
    "198.51.100.20".parse().unwrap()
}
fn v6() -> IpAddr {
    "2001:db8::20".parse().unwrap()
}
fn pw(s: &str) -> SecretString {
    SecretString::from(s)
}

/// An account that finished enrollment: what the user knows and holds.
pub struct Enrolled {
    /// Account id.
    pub user: UserId,
    /// Login email.
    pub email: String,
    /// The seed as the authenticator app holds it.
    pub seed: TotpSeed,
    /// The ten backup codes.
    pub backup_codes: Vec<SecretString>,
    /// The session enrollment opened.
    pub login: LoginComplete,
}

impl<B: Backend> Harness<B> {
    /// The TOTP code an authenticator app shows now, `offset` steps away.
    pub fn totp_code(&self, seed: &TotpSeed, offset: i64) -> SecretString {
        let params = self.accounts.policy().totp;
        let now = u64::try_from(self.clock.now().timestamp()).unwrap();
        let step = step_at(&params, now).checked_add_signed(offset).unwrap();
        SecretString::from(code_for_step(seed, &params, step).unwrap().as_str())
    }

    /// Registers and enrolls an account from `ip`.
    pub async fn enrolled(&self, ip: IpAddr, trust_device: bool) -> Enrolled {
        let email = format!("{}@example.com", &UserId::random().to_string()[4..14]);
        let user = self
            .accounts
            .register(&email, pw(PASSWORD), Some(ip))
            .await
            .unwrap();
        let PasswordStep::EnrollmentRequired(ch) = self
            .accounts
            .login_password(&email, pw(PASSWORD), ip, None)
            .await
            .unwrap()
        else {
            panic!("accounts: a new account must enroll first");
        };
        let offer = self
            .accounts
            .begin_enrollment(ch.token.expose_secret(), ip)
            .await
            .unwrap();
        let seed = TotpSeed::from_base32(offer.secret_base32.expose_secret()).unwrap();
        let done = self
            .accounts
            .confirm_enrollment(
                ch.token.expose_secret(),
                &self.totp_code(&seed, 0),
                ip,
                trust_device,
            )
            .await
            .unwrap();
        Enrolled {
            user,
            email,
            seed,
            backup_codes: done.backup_codes,
            login: done.login,
        }
    }

    /// A full login with password and the current TOTP code, half a step
    /// after the last one (so the code is never a replay).
    pub async fn totp_login(&self, a: &Enrolled, ip: IpAddr, trust_device: bool) -> LoginComplete {
        let ch = self.second_factor_challenge(&a.email, ip).await;
        self.clock.advance(Duration::seconds(30));
        self.accounts
            .login_second_factor(
                &ch,
                SecondFactor::Totp(self.totp_code(&a.seed, 0)),
                ip,
                trust_device,
            )
            .await
            .expect("accounts: password + TOTP login")
    }

    /// A fresh password step, then `factor` on its challenge.
    pub async fn try_second_factor(
        &self,
        email: &str,
        factor: SecondFactor,
        ip: IpAddr,
    ) -> Result<LoginComplete, Error> {
        let ch = self.second_factor_challenge(email, ip).await;
        self.accounts
            .login_second_factor(&ch, factor, ip, false)
            .await
    }

    async fn second_factor_challenge(&self, email: &str, ip: IpAddr) -> String {
        match self
            .accounts
            .login_password(email, pw(PASSWORD), ip, None)
            .await
            .unwrap()
        {
            PasswordStep::SecondFactorRequired(ch) => ch.token.expose_secret().to_owned(),
            other => panic!("accounts: expected a second-factor challenge, got {other:?}"),
        }
    }

    /// Panics unless the user's audit trail holds each of `actions`.
    pub async fn assert_audited(&self, user: UserId, actions: &[AccountAction]) {
        let audited = self.actions_of(user).await;
        for action in actions {
            assert!(audited.contains(action), "accounts: {action:?} not audited");
        }
    }

    /// The account actions audited about `user`, in log order.
    async fn actions_of(&self, user: UserId) -> Vec<AccountAction> {
        crate::all_events_for_user(&self.store, user)
            .await
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Account { action, .. } => Some(action),
                _ => None,
            })
            .collect()
    }

    async fn count_audited(&self, user: UserId, action: AccountAction) -> usize {
        let audited = self.actions_of(user).await;
        audited.iter().filter(|a| **a == action).count()
    }

    async fn failures_of(&self, user: UserId) -> Vec<LoginFailure> {
        crate::all_events_for_user(&self.store, user)
            .await
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Account {
                    failure: Some(f), ..
                } => Some(f),
                _ => None,
            })
            .collect()
    }
}

fn unauthenticated<T: std::fmt::Debug>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::Unauthenticated))
}

/// The whole flow: a new account reaches only enrollment; enrollment gives
/// an otpauth URI, a QR code and ten backup codes and activates only after
/// a valid code; later logins need password and TOTP; the seed is stored
/// only as ciphertext.
pub async fn login_flow_enrolls_then_requires_totp<B: Backend>(h: Harness<B>) {
    let email = "Ana@Example.com";
    let user = h
        .accounts
        .register(email, pw(PASSWORD), Some(v4()))
        .await
        .unwrap();
    assert!(
        matches!(
            h.accounts
                .register("ana@example.com", pw(PASSWORD), None)
                .await,
            Err(Error::Store(_))
        ),
        "accounts: duplicate email"
    );
    let step = h
        .accounts
        .login_password("ana@example.com", pw(PASSWORD), v4(), None)
        .await
        .unwrap();
    let PasswordStep::EnrollmentRequired(ch) = step else {
        panic!("accounts: no enrollment for a new account")
    };
    let token = ch.token.expose_secret().to_owned();
    // The enrollment challenge is not a second-factor challenge: no session
    // without a second factor.
    assert!(unauthenticated(
        h.accounts
            .login_second_factor(&token, SecondFactor::Totp(pw("123456")), v4(), false)
            .await
    ));
    let offer = h.accounts.begin_enrollment(&token, v4()).await.unwrap();
    let uri = offer.otpauth_uri.expose_secret();
    assert!(
        uri.starts_with("otpauth://totp/EchoRelay:ana%40example.com?secret="),
        "accounts: {uri}"
    );
    assert!(offer.qr_svg.contains("<svg"));
    // The service reports the policy it was built with, not a default.
    assert_eq!(*h.accounts.policy(), crate::test_account_policy());
    // Its Debug names what it is and nothing of the seed.
    assert_eq!(format!("{offer:?}"), "EnrollmentOffer(<redacted>)");
    let seed = TotpSeed::from_base32(offer.secret_base32.expose_secret()).unwrap();
    // Stored only as ciphertext, inactive until confirmed.
    let rec = h.store.totp(user).await.unwrap().unwrap();
    assert!(!rec.active);
    assert!(
        !serde_json::to_string(&rec)
            .unwrap()
            .contains(offer.secret_base32.expose_secret())
    );
    let wrong = if h.totp_code(&seed, 0).expose_secret() == "111111" {
        "222222"
    } else {
        "111111"
    };
    assert!(unauthenticated(
        h.accounts
            .confirm_enrollment(&token, &pw(wrong), v4(), false)
            .await
            .map(|_| ())
    ));
    assert!(!h.store.totp(user).await.unwrap().unwrap().active);
    let done = h
        .accounts
        .confirm_enrollment(&token, &h.totp_code(&seed, 0), v4(), false)
        .await
        .unwrap();
    assert_eq!(done.backup_codes.len(), 10);
    assert!(h.store.totp(user).await.unwrap().unwrap().active);
    assert_eq!(
        h.accounts
            .authenticate(done.login.session.token.expose_secret(), v4())
            .await
            .unwrap()
            .user,
        user
    );
    // The challenge was single-use.
    assert!(unauthenticated(
        h.accounts
            .confirm_enrollment(&token, &h.totp_code(&seed, 0), v4(), false)
            .await
            .map(|_| ())
    ));
    // Next login: password, then TOTP. The enrollment code's step is spent.
    let ch = h.second_factor_challenge(email, v4()).await;
    assert!(unauthenticated(
        h.accounts
            .login_second_factor(&ch, SecondFactor::Totp(h.totp_code(&seed, 0)), v4(), false)
            .await
    ));
    h.clock.advance(Duration::seconds(30));
    // The second-factor challenge is single-use: the failed try consumed it.
    assert!(unauthenticated(
        h.accounts
            .login_second_factor(&ch, SecondFactor::Totp(h.totp_code(&seed, 0)), v4(), false)
            .await
    ));
    let ok = h
        .try_second_factor(email, SecondFactor::Totp(h.totp_code(&seed, 0)), v4())
        .await
        .unwrap();
    assert!(
        h.accounts
            .authenticate(ok.session.token.expose_secret(), v4())
            .await
            .is_ok()
    );
    assert!(
        h.failures_of(user)
            .await
            .contains(&LoginFailure::ReplayedCode),
        "accounts: replay not audited"
    );
    // Wrong password and unknown account: the same opaque error, audited.
    assert!(unauthenticated(
        h.accounts
            .login_password(email, pw("wrong"), v4(), None)
            .await
    ));
    assert!(unauthenticated(
        h.accounts
            .login_password("nobody@example.com", pw(PASSWORD), v4(), None)
            .await
    ));
    assert!(unauthenticated(
        h.accounts.login_password(email, pw(""), v4(), None).await
    ));
    assert!(unauthenticated(
        h.accounts
            .login_password(email, pw(&"x".repeat(5000)), v4(), None)
            .await
    ));
    assert!(
        h.failures_of(user)
            .await
            .contains(&LoginFailure::BadPassword)
    );
    // Exactly the longest password is checked like any other (a wrong
    // password for this account); one byte more is malformed input,
    // refused before the account is looked up.
    let max = echorelay_core::account::password::MAX_PASSWORD_BYTES;
    let bad_passwords = |f: Vec<LoginFailure>| {
        f.iter()
            .filter(|f| **f == LoginFailure::BadPassword)
            .count()
    };
    let malformed = || async {
        h.store
            .events(None, 0, usize::MAX)
            .await
            .unwrap()
            .iter()
            .filter(|e| {
                matches!(
                    e.kind,
                    EventKind::Account {
                        failure: Some(LoginFailure::Malformed),
                        ..
                    }
                )
            })
            .count()
    };
    // Past the progressive delay of the failures above.
    h.clock.advance(Duration::minutes(1));
    let (bad_before, malformed_before) =
        (bad_passwords(h.failures_of(user).await), malformed().await);
    assert!(unauthenticated(
        h.accounts
            .login_password(email, pw(&"x".repeat(max)), v4(), None)
            .await
    ));
    assert_eq!(bad_passwords(h.failures_of(user).await), bad_before + 1);
    assert!(unauthenticated(
        h.accounts
            .login_password(email, pw(&"x".repeat(max + 1)), v4(), None)
            .await
    ));
    assert_eq!(bad_passwords(h.failures_of(user).await), bad_before + 1);
    assert_eq!(malformed().await, malformed_before + 1);
    let global = h.store.events(None, 0, usize::MAX).await.unwrap();
    assert!(global.iter().any(|e| matches!(
        e.kind,
        EventKind::Account {
            failure: Some(LoginFailure::UnknownAccount),
            ..
        }
    )));
    // No audit event carries a password, code or token.
    let all = serde_json::to_string(&global).unwrap();
    for secret in [
        PASSWORD,
        offer.secret_base32.expose_secret(),
        ok.session.token.expose_secret(),
        done.backup_codes[0].expose_secret(),
    ] {
        assert!(
            !all.contains(secret),
            "accounts: a secret reached the audit log"
        );
    }
    let actions: Vec<AccountAction> = global
        .iter()
        .filter(|e| e.subject == Some(user))
        .filter_map(|e| match e.kind {
            EventKind::Account { action, .. } => Some(action),
            _ => None,
        })
        .collect();
    for a in [
        AccountAction::Registered,
        AccountAction::TwoFactorEnrolled,
        AccountAction::LoginSucceeded,
        AccountAction::LoginFailed,
    ] {
        assert!(actions.contains(&a), "accounts: {a:?} not audited");
    }
    assert!(
        global
            .iter()
            .filter(|e| e.subject == Some(user))
            .all(|e| e.ip.is_some())
    );
}

/// RFC 6238 skew: ±1 step accepted, ±2 rejected; a step once accepted is
/// never accepted again.
pub async fn totp_skew_and_replay<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    h.clock.advance(Duration::minutes(10));
    let totp = |off| SecondFactor::Totp(h.totp_code(&a.seed, off));
    for off in [-2, 2] {
        assert!(
            unauthenticated(h.try_second_factor(&a.email, totp(off), v4()).await),
            "accounts: skew {off} accepted"
        );
    }
    h.try_second_factor(&a.email, totp(-1), v4())
        .await
        .expect("skew -1");
    // The same code again: replay.
    assert!(unauthenticated(
        h.try_second_factor(&a.email, totp(-1), v4()).await
    ));
    h.try_second_factor(&a.email, totp(0), v4())
        .await
        .expect("current step");
    h.try_second_factor(&a.email, totp(1), v4())
        .await
        .expect("skew +1");
    // Now the current step is older than the last accepted one.
    assert!(unauthenticated(
        h.try_second_factor(&a.email, totp(0), v4()).await
    ));
    // Malformed codes: the generic error, no panic.
    for bad in ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦"] {
        assert!(unauthenticated(
            h.try_second_factor(&a.email, SecondFactor::Totp(pw(bad)), v4())
                .await
        ));
    }
    assert!(
        h.failures_of(a.user)
            .await
            .contains(&LoginFailure::ReplayedCode)
    );
}

/// Two requests with the same valid code on two challenges: one session.
pub async fn same_code_on_two_challenges_wins_once<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    h.clock.advance(Duration::seconds(30));
    let mut calls = Vec::new();
    for _ in 0..4 {
        let ch = h.second_factor_challenge(&a.email, v4()).await;
        let (other, code) = (h.another_process(), h.totp_code(&a.seed, 0));
        calls.push(async move {
            other
                .accounts
                .login_second_factor(&ch, SecondFactor::Totp(code), v4(), false)
                .await
                .is_ok()
        });
    }
    let wins = h.race(calls).await.into_iter().filter(|ok| *ok).count();
    assert_eq!(wins, 1, "accounts: one TOTP code opened {wins} sessions");
}

/// One challenge submitted many times at once (each with another valid
/// backup code) opens one session: the challenge is taken atomically.
pub async fn one_challenge_is_used_once_under_races<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    let ch = h.second_factor_challenge(&a.email, v4()).await;
    let mut calls = Vec::new();
    for code in a.backup_codes.iter().take(4).cloned() {
        let (other, ch) = (h.another_process(), ch.clone());
        calls.push(async move {
            other
                .accounts
                .login_second_factor(&ch, SecondFactor::BackupCode(code), v4(), false)
                .await
                .is_ok()
        });
    }
    let wins = h.race(calls).await.into_iter().filter(|ok| *ok).count();
    assert_eq!(wins, 1, "accounts: one challenge opened {wins} sessions");
}

/// Callers per round of the port-level race checks (within the Postgres
/// store's default pool of 10).
pub const PORT_RACERS: usize = 8;
/// Rounds per port-level race check, each on fresh state.
pub const PORT_ROUNDS: u64 = 5;

/// How many of `outcomes` won.
fn wins_of(outcomes: Vec<bool>) -> usize {
    outcomes.into_iter().filter(|won| *won).count()
}

/// [`AccountStore::advance_totp_step`](echorelay_core::ports::AccountStore::advance_totp_step)
/// raced directly, without the service's attempt counter spreading the
/// callers out: in each of [`PORT_ROUNDS`] rounds, [`PORT_RACERS`] callers
/// advance to the same new step and exactly one wins (a TOTP code is
/// accepted once).
pub async fn advance_totp_step_wins_once_under_races<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    let start = h
        .store
        .totp(a.user)
        .await
        .unwrap()
        .and_then(|t| t.last_step)
        .expect("accounts: an enrolled factor has a last step");
    for round in 1..=PORT_ROUNDS {
        let step = start + round;
        let calls: Vec<_> = (0..PORT_RACERS)
            .map(|_| {
                let store = h.store.clone();
                async move { store.advance_totp_step(a.user, step).await.unwrap() }
            })
            .collect();
        let wins = wins_of(h.race(calls).await);
        assert_eq!(
            wins, 1,
            "accounts: step {step} was accepted {wins} times by racing advance_totp_step calls"
        );
    }
    let last = h
        .store
        .totp(a.user)
        .await
        .unwrap()
        .and_then(|t| t.last_step);
    assert_eq!(last, Some(start + PORT_ROUNDS));
}

/// [`SessionStore::take_challenge`](echorelay_core::ports::SessionStore::take_challenge)
/// raced directly: in each of [`PORT_ROUNDS`] rounds a fresh challenge is
/// taken by [`PORT_RACERS`] callers at once; exactly one gets it, and it
/// is gone afterwards.
pub async fn take_challenge_gives_one_caller_the_challenge_under_races<B: Backend>(h: Harness<B>) {
    let email = format!("{}@example.com", &UserId::random().to_string()[4..14]);
    let user = h
        .accounts
        .register(&email, pw(PASSWORD), Some(v4()))
        .await
        .unwrap();
    for round in 0..PORT_ROUNDS {
        let challenge = ChallengeRecord {
            token_hash: Token::generate(TokenKind::Challenge).hash(),
            user,
            kind: ChallengeKind::SecondFactor,
            expires_at: h.clock.now() + Duration::minutes(5),
            ip_family: IpFamily::V4,
            epoch: 0,
        };
        h.store.insert_challenge(challenge.clone()).await.unwrap();
        let calls: Vec<_> = (0..PORT_RACERS)
            .map(|_| {
                let (store, hash) = (h.store.clone(), challenge.token_hash);
                async move { store.take_challenge(&hash).await.unwrap() }
            })
            .collect();
        let taken: Vec<_> = h.race(calls).await.into_iter().flatten().collect();
        assert_eq!(
            taken.len(),
            1,
            "accounts: round {round}: one challenge was taken {} times by racing callers",
            taken.len()
        );
        assert_eq!(taken[0], challenge);
        assert_eq!(
            h.store.challenge(&challenge.token_hash).await.unwrap(),
            None
        );
    }
}

/// [`ThrottleStore::reserve_attempt`](echorelay_core::ports::ThrottleStore::reserve_attempt)
/// raced directly: in each of [`PORT_ROUNDS`] rounds, on a fresh scope
/// holding `round` attempts already, [`PORT_RACERS`] callers reserve
/// against a limit of `round + 2`; exactly two win, and the scope then
/// holds the limit.
pub async fn reserve_attempt_respects_the_limit_under_races<B: Backend>(h: Harness<B>) {
    for round in 0..PORT_ROUNDS {
        let scope = AttemptScope::SecondFactor(UserId::random());
        let now = h.clock.now();
        let since = now - Duration::minutes(15);
        let prior = u32::try_from(round).unwrap();
        for i in 0..prior {
            let at = now - Duration::seconds(i64::from(i) + 1);
            assert!(
                h.store
                    .reserve_attempt(&scope, at, since, prior)
                    .await
                    .unwrap()
            );
        }
        let max = prior + 2;
        let calls: Vec<_> = (0..PORT_RACERS)
            .map(|_| {
                let (store, scope) = (h.store.clone(), scope);
                async move {
                    store
                        .reserve_attempt(&scope, now, since, max)
                        .await
                        .unwrap()
                }
            })
            .collect();
        let wins = wins_of(h.race(calls).await);
        assert_eq!(
            wins, 2,
            "accounts: round {round}: {wins} racing reservations passed a limit with room for 2"
        );
        assert_eq!(
            h.store.attempts_since(&scope, since).await.unwrap().len(),
            max as usize,
            "accounts: round {round}: racing reservations recorded past the limit"
        );
    }
}

/// [`SessionStore::replace_session`](echorelay_core::ports::SessionStore::replace_session)
/// raced directly: in each of [`PORT_ROUNDS`] rounds [`PORT_RACERS`]
/// callers replace the same session, each by a new one of its own;
/// exactly one succeeds (the others get `NotFound`), and the account is
/// left with the old session gone and one new one.
pub async fn replace_session_wins_once_under_races<B: Backend>(h: Harness<B>) {
    let email = format!("{}@example.com", &UserId::random().to_string()[4..14]);
    let user = h
        .accounts
        .register(&email, pw(PASSWORD), Some(v4()))
        .await
        .unwrap();
    let now = h.clock.now();
    let fresh = || SessionRecord {
        id: SessionId::random(),
        token_hash: Token::generate(TokenKind::Session).hash(),
        user,
        created_at: now,
        last_seen_at: now,
        verified_at: now,
        expires_at: now + Duration::hours(1),
        ip_family: IpFamily::V4,
        epoch: 0,
    };
    for round in 0..PORT_ROUNDS {
        let old = fresh();
        h.store.insert_session(old.clone()).await.unwrap();
        let calls: Vec<_> = (0..PORT_RACERS)
            .map(|_| {
                let (store, new) = (h.store.clone(), fresh());
                async move { store.replace_session(old.id, new).await.is_ok() }
            })
            .collect();
        let wins = wins_of(h.race(calls).await);
        assert_eq!(
            wins, 1,
            "accounts: round {round}: one session was replaced {wins} times by racing callers"
        );
        let left = h.store.sessions_of(user).await.unwrap();
        assert_eq!(
            left.len(),
            1,
            "accounts: round {round}: racing replacements left {} sessions",
            left.len()
        );
        assert_ne!(left[0].id, old.id);
        assert!(
            h.store
                .session_by_token(&old.token_hash)
                .await
                .unwrap()
                .is_none()
        );
        assert!(h.store.delete_session(left[0].id).await.unwrap());
    }
}

/// [`AccountStore::consume_backup_code`](echorelay_core::ports::AccountStore::consume_backup_code)
/// raced directly: in each of [`PORT_ROUNDS`] rounds [`PORT_RACERS`]
/// callers consume the same, not yet used code; exactly one succeeds, and
/// only that code is gone.
pub async fn consume_backup_code_succeeds_once_under_races<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    let codes = h.store.backup_codes(a.user).await.unwrap();
    assert!(codes.len() as u64 >= PORT_ROUNDS);
    for (round, code) in codes.iter().take(PORT_ROUNDS as usize).enumerate() {
        let calls: Vec<_> = (0..PORT_RACERS)
            .map(|_| {
                let (store, code) = (h.store.clone(), code.clone());
                async move { store.consume_backup_code(a.user, &code).await.unwrap() }
            })
            .collect();
        let wins = wins_of(h.race(calls).await);
        assert_eq!(
            wins, 1,
            "accounts: round {round}: one backup code was consumed {wins} times by racing callers"
        );
        assert_eq!(
            h.store.backup_codes(a.user).await.unwrap().len(),
            codes.len() - round - 1
        );
    }
}

/// Many concurrent renewals of one session: one new session, the old
/// cookie dead, nothing duplicated.
pub async fn concurrent_renewals_leave_one_session<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    let cookie = a.login.session.token.expose_secret().to_owned();
    let mut calls = Vec::new();
    for _ in 0..6 {
        let (other, cookie) = (h.another_process(), cookie.clone());
        calls.push(async move { other.accounts.renew_session(&cookie, v4()).await.is_ok() });
    }
    let wins = h.race(calls).await.into_iter().filter(|ok| *ok).count();
    assert_eq!(wins, 1, "accounts: one session was renewed {wins} times");
    assert_eq!(
        h.store.sessions_of(a.user).await.unwrap().len(),
        1,
        "accounts: concurrent renewals left extra sessions"
    );
    assert!(unauthenticated(
        h.accounts.authenticate(&cookie, v4()).await
    ));
}

/// Failed codes are throttled: after the limit even a correct code is
/// refused until the window passes.
pub async fn failed_codes_lock_out<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    h.clock.advance(Duration::minutes(1));
    let max = h.accounts.policy().max_second_factor_failures;
    let wrong = if h.totp_code(&a.seed, 0).expose_secret() == "111111" {
        "222222"
    } else {
        "111111"
    };
    // One failure a second: the lock lasts until the oldest of the last
    // `max` failures leaves the window.
    let first_failure = h.clock.now();
    for i in 0..max {
        if i > 0 {
            h.clock.advance(Duration::seconds(1));
        }
        assert!(unauthenticated(
            h.try_second_factor(&a.email, SecondFactor::Totp(pw(wrong)), v4())
                .await
        ));
    }
    let until = h
        .accounts
        .second_factor_locked_until(a.user)
        .await
        .unwrap()
        .expect("accounts: no lockout after the limit");
    assert_eq!(
        until,
        first_failure + h.accounts.policy().failure_window,
        "accounts: the lock must end when the oldest counted failure ages out"
    );
    assert!(unauthenticated(
        h.try_second_factor(&a.email, SecondFactor::Totp(h.totp_code(&a.seed, 0)), v4())
            .await
    ));
    assert!(unauthenticated(
        h.try_second_factor(
            &a.email,
            SecondFactor::BackupCode(a.backup_codes[0].clone()),
            v4()
        )
        .await
    ));
    assert!(
        h.failures_of(a.user)
            .await
            .contains(&LoginFailure::LockedOut)
    );
    // The backup code was not spent by the refused attempt.
    assert_eq!(h.store.backup_codes(a.user).await.unwrap().len(), 10);
    h.clock.set(until);
    assert_eq!(
        h.accounts.second_factor_locked_until(a.user).await.unwrap(),
        None
    );
    h.try_second_factor(&a.email, SecondFactor::Totp(h.totp_code(&a.seed, 0)), v4())
        .await
        .expect("after the lockout");
}

/// Concurrent guesses cannot pass the limit together: of many parallel
/// wrong attempts, at most the limit are checked; the rest are locked out.
pub async fn parallel_guesses_respect_the_limit<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    h.clock.advance(Duration::minutes(1));
    let wrong = if h.totp_code(&a.seed, 0).expose_secret() == "111111" {
        "222222"
    } else {
        "111111"
    };
    let mut calls = Vec::new();
    for _ in 0..12 {
        let ch = h.second_factor_challenge(&a.email, v4()).await;
        let other = h.another_process();
        calls.push(async move {
            other
                .accounts
                .login_second_factor(&ch, SecondFactor::Totp(pw(wrong)), v4(), false)
                .await
                .is_err()
        });
    }
    assert!(h.race(calls).await.into_iter().all(|failed| failed));
    let f = h.failures_of(a.user).await;
    let checked = f.iter().filter(|x| **x == LoginFailure::BadCode).count();
    let locked = f.iter().filter(|x| **x == LoginFailure::LockedOut).count();
    assert_eq!(
        checked,
        h.accounts.policy().max_second_factor_failures as usize,
        "accounts: {checked} guesses were checked"
    );
    assert_eq!(locked, 12 - checked);
}

/// The enrollment confirmation is throttled too.
pub async fn enrollment_confirmation_is_throttled<B: Backend>(h: Harness<B>) {
    let email = "enroll-throttle@example.com";
    h.accounts
        .register(email, pw(PASSWORD), None)
        .await
        .unwrap();
    let PasswordStep::EnrollmentRequired(ch) = h
        .accounts
        .login_password(email, pw(PASSWORD), v4(), None)
        .await
        .unwrap()
    else {
        panic!("accounts: expected enrollment")
    };
    let token = ch.token.expose_secret();
    let offer = h.accounts.begin_enrollment(token, v4()).await.unwrap();
    let seed = TotpSeed::from_base32(offer.secret_base32.expose_secret()).unwrap();
    let wrong = if h.totp_code(&seed, 0).expose_secret() == "111111" {
        "222222"
    } else {
        "111111"
    };
    for _ in 0..h.accounts.policy().max_second_factor_failures {
        assert!(unauthenticated(
            h.accounts
                .confirm_enrollment(token, &pw(wrong), v4(), false)
                .await
                .map(|_| ())
        ));
    }
    // Locked: even the right code is refused now.
    assert!(unauthenticated(
        h.accounts
            .confirm_enrollment(token, &h.totp_code(&seed, 0), v4(), false)
            .await
            .map(|_| ())
    ));
    // A second-factor challenge is no enrollment challenge, and vice versa.
    assert!(unauthenticated(
        h.accounts
            .login_second_factor(
                token,
                SecondFactor::Totp(h.totp_code(&seed, 0)),
                v4(),
                false
            )
            .await
    ));
}

/// Backup codes are single-use even when many requests race with the same
/// code; regenerating invalidates the whole previous set.
pub async fn backup_codes_are_single_use_under_races<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    let code = a.backup_codes[3].clone();
    let mut challenges = Vec::new();
    for _ in 0..8 {
        challenges.push(h.second_factor_challenge(&a.email, v4()).await);
    }
    let mut calls = Vec::new();
    for ch in challenges {
        let other = h.another_process();
        let code = code.clone();
        calls.push(async move {
            other
                .accounts
                .login_second_factor(&ch, SecondFactor::BackupCode(code), v4(), false)
                .await
                .is_ok()
        });
    }
    let wins = h.race(calls).await.into_iter().filter(|ok| *ok).count();
    assert_eq!(wins, 1, "accounts: a backup code worked {wins} times");
    assert_eq!(h.store.backup_codes(a.user).await.unwrap().len(), 9);
    // The losers were throttled as attempts: never more recorded than the
    // limit allows. (Whether the factor is locked now depends on whether
    // the winner's success, which resets the counter, came before or after
    // the losers' reservations: a real database orders them either way.)
    let window_start = h.clock_now() - h.accounts.policy().failure_window;
    let recorded = h
        .store
        .attempts_since(&AttemptScope::SecondFactor(a.user), window_start)
        .await
        .unwrap()
        .len();
    assert!(
        recorded <= h.accounts.policy().max_second_factor_failures as usize,
        "accounts: {recorded} second-factor attempts recorded in one window"
    );
    h.clock.advance(h.accounts.policy().failure_window);
    // Typing is forgiving (case, spaces), and a used code stays used.
    let sloppy = pw(&a.backup_codes[5]
        .expose_secret()
        .to_uppercase()
        .replace('-', " "));
    let ch = h.second_factor_challenge(&a.email, v4()).await;
    h.accounts
        .login_second_factor(&ch, SecondFactor::BackupCode(sloppy), v4(), false)
        .await
        .expect("sloppy backup code");
    let ch = h.second_factor_challenge(&a.email, v4()).await;
    assert!(unauthenticated(
        h.accounts
            .login_second_factor(&ch, SecondFactor::BackupCode(code), v4(), false)
            .await
    ));
    // Regenerate (after a step-up: the login was long ago): every old code
    // dies.
    let cookie = a.login.session.token.expose_secret();
    h.accounts
        .step_up(cookie, v4(), StepUp::Password(pw(PASSWORD)))
        .await
        .unwrap();
    let fresh = h
        .accounts
        .regenerate_backup_codes(cookie, v4())
        .await
        .unwrap();
    assert_eq!(fresh.len(), 10);
    let ch = h.second_factor_challenge(&a.email, v4()).await;
    assert!(unauthenticated(
        h.accounts
            .login_second_factor(
                &ch,
                SecondFactor::BackupCode(a.backup_codes[0].clone()),
                v4(),
                false
            )
            .await
    ));
    h.try_second_factor(&a.email, SecondFactor::BackupCode(fresh[0].clone()), v4())
        .await
        .expect("new set");
    h.assert_audited(
        a.user,
        &[
            AccountAction::BackupCodeUsed,
            AccountAction::BackupCodesRegenerated,
        ],
    )
    .await;
}

/// Trusted devices: capped (oldest evicted), fixed expiry never extended by
/// use, skip only the TOTP step, revoked on request, password change and
/// 2FA reset.
pub async fn trusted_devices_are_capped_fixed_and_skip_only_totp<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), true).await;
    let first = a
        .login
        .device
        .as_ref()
        .expect("device requested at enrollment");
    let mut cookies = vec![first.token.expose_secret().to_owned()];
    let cap = h.accounts.policy().max_trusted_devices;
    for _ in 0..cap {
        let done = h.totp_login(&a, v4(), true).await;
        cookies.push(done.device.unwrap().token.expose_secret().to_owned());
    }
    let list = h.accounts.access_list(a.user).await.unwrap();
    assert_eq!(list.devices.len(), cap, "accounts: device cap not kept");
    // Exactly one device was evicted, and only that eviction is audited.
    assert_eq!(
        h.count_audited(a.user, AccountAction::DeviceRevoked).await,
        1,
        "accounts: a device revocation audited without an eviction"
    );
    assert_eq!(
        h.count_audited(a.user, AccountAction::DeviceTrusted).await,
        cap + 1
    );
    assert!(
        list.devices.iter().all(|d| d.id != first.id),
        "accounts: the oldest device was not the one evicted"
    );
    // The evicted cookie no longer skips TOTP; a live one does.
    let step = h
        .accounts
        .login_password(&a.email, pw(PASSWORD), v4(), Some(&cookies[0]))
        .await
        .unwrap();
    assert!(matches!(step, PasswordStep::SecondFactorRequired(_)));
    let newest = cookies.last().unwrap().clone();
    let step = h
        .accounts
        .login_password(&a.email, pw(PASSWORD), v4(), Some(&newest))
        .await
        .unwrap();
    let PasswordStep::Authenticated(s) = step else {
        panic!("accounts: a trusted device did not skip TOTP")
    };
    assert!(
        h.accounts
            .authenticate(s.token.expose_secret(), v4())
            .await
            .is_ok()
    );
    // Never the password.
    assert!(unauthenticated(
        h.accounts
            .login_password(&a.email, pw("wrong"), v4(), Some(&newest))
            .await
    ));
    // Forged device cookies are ignored.
    for forged in [
        "erd_x",
        "ers_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "erd_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let step = h
            .accounts
            .login_password(&a.email, pw(PASSWORD), v4(), Some(forged))
            .await
            .unwrap();
        assert!(matches!(step, PasswordStep::SecondFactorRequired(_)));
    }
    // Use never extends the expiry.
    let before = h
        .accounts
        .access_list(a.user)
        .await
        .unwrap()
        .devices
        .last()
        .unwrap()
        .clone();
    h.clock.set(before.expires_at - Duration::minutes(1));
    assert!(matches!(
        h.accounts
            .login_password(&a.email, pw(PASSWORD), v4(), Some(&newest))
            .await
            .unwrap(),
        PasswordStep::Authenticated(_)
    ));
    let after = h
        .accounts
        .access_list(a.user)
        .await
        .unwrap()
        .devices
        .into_iter()
        .find(|d| d.id == before.id)
        .unwrap();
    assert_eq!(after.expires_at, before.expires_at);
    assert!(after.last_used_at.is_some());
    h.clock.set(before.expires_at);
    assert!(matches!(
        h.accounts
            .login_password(&a.email, pw(PASSWORD), v4(), Some(&newest))
            .await
            .unwrap(),
        PasswordStep::SecondFactorRequired(_)
    ));
}

/// Devices end on request, on password change and on 2FA reset.
pub async fn devices_are_revoked_by_request_password_change_and_reset<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), true).await;
    let second = h.totp_login(&a, v4(), true).await;
    let dev = second.device.unwrap();
    // Fresh from the login: stepped up.
    let session = h
        .accounts
        .authenticate(second.session.token.expose_secret(), v4())
        .await
        .unwrap();
    assert_eq!(
        h.accounts
            .revoke_devices(&session, Some(dev.id), Some(v4()))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        h.accounts.access_list(a.user).await.unwrap().devices.len(),
        1
    );
    assert!(
        h.accounts
            .revoke_devices(&session, Some(dev.id), Some(v4()))
            .await
            .is_err()
    );
    // Password change: every device and every session ends.
    let other_session = second.session.token.expose_secret().to_owned();
    let new_pw = "a different long passphrase";
    let s = h
        .accounts
        .change_password(
            a.login.session.token.expose_secret(),
            pw(PASSWORD),
            pw(new_pw),
            v4(),
        )
        .await
        .unwrap();
    assert!(
        h.accounts
            .access_list(a.user)
            .await
            .unwrap()
            .devices
            .is_empty()
    );
    assert!(unauthenticated(
        h.accounts.authenticate(&other_session, v4()).await
    ));
    assert!(unauthenticated(
        h.accounts
            .authenticate(a.login.session.token.expose_secret(), v4())
            .await
    ));
    assert!(
        h.accounts
            .authenticate(s.token.expose_secret(), v4())
            .await
            .is_ok()
    );
    assert!(unauthenticated(
        h.accounts
            .login_password(&a.email, pw(PASSWORD), v4(), None)
            .await
    ));
    assert!(unauthenticated(
        h.accounts
            .change_password(s.token.expose_secret(), pw("not it"), pw("x"), v4())
            .await
    ));
    // Past the progressive delay of the old password's failure.
    h.clock.advance(Duration::minutes(1));
    // 2FA reset: devices, codes and sessions end; the next login enrolls.
    let ch = match h
        .accounts
        .login_password(&a.email, pw(new_pw), v4(), None)
        .await
        .unwrap()
    {
        PasswordStep::SecondFactorRequired(c) => c,
        other => panic!("{other:?}"),
    };
    h.clock.advance(Duration::seconds(30));
    let third = h
        .accounts
        .login_second_factor(
            ch.token.expose_secret(),
            SecondFactor::Totp(h.totp_code(&a.seed, 0)),
            v4(),
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        h.accounts.access_list(a.user).await.unwrap().devices.len(),
        1
    );
    h.accounts
        .reset_two_factor(a.user, Actor::System, None)
        .await
        .unwrap();
    assert!(
        h.accounts
            .access_list(a.user)
            .await
            .unwrap()
            .devices
            .is_empty()
    );
    assert!(h.store.backup_codes(a.user).await.unwrap().is_empty());
    assert!(unauthenticated(
        h.accounts
            .authenticate(third.session.token.expose_secret(), v4())
            .await
    ));
    let cookie = third.device.unwrap().token.expose_secret().to_owned();
    assert!(matches!(
        h.accounts
            .login_password(&a.email, pw(new_pw), v4(), Some(&cookie))
            .await
            .unwrap(),
        PasswordStep::EnrollmentRequired(_)
    ));
    h.assert_audited(
        a.user,
        &[
            AccountAction::DeviceTrusted,
            AccountAction::DeviceRevoked,
            AccountAction::PasswordChanged,
            AccountAction::TwoFactorReset,
        ],
    )
    .await;
}

/// Sessions: idle timeout, absolute lifetime, IP-family pinning (mapped
/// IPv4 counts as IPv4), a new id on renewal, logout, log out everywhere,
/// listing and ending one.
pub async fn sessions_expire_and_are_pinned_to_the_ip_family<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    let cookie = a.login.session.token.expose_secret().to_owned();
    let mapped: IpAddr = "::ffff:198.51.100.99".parse().unwrap();
    assert!(
        h.accounts.authenticate(&cookie, mapped).await.is_ok(),
        "accounts: mapped IPv4 is IPv4"
    );
    // Activity keeps it alive past the idle timeout…
    for _ in 0..4 {
        h.clock.advance(Duration::minutes(20));
        assert!(h.accounts.authenticate(&cookie, v4()).await.is_ok());
    }
    // …but not past the idle timeout without activity.
    h.clock.advance(Duration::minutes(30));
    assert!(unauthenticated(
        h.accounts.authenticate(&cookie, v4()).await
    ));
    // Absolute lifetime, even with activity.
    let h2 = h.another_process();
    let b = h2.enrolled(v4(), false).await;
    let cookie = b.login.session.token.expose_secret().to_owned();
    let mut t = 0;
    while t < 12 * 60 - 20 {
        h.clock.advance(Duration::minutes(20));
        t += 20;
        assert!(
            h.accounts.authenticate(&cookie, v4()).await.is_ok(),
            "accounts: ended at {t} min"
        );
    }
    h.clock.advance(Duration::minutes(20));
    assert!(
        unauthenticated(h.accounts.authenticate(&cookie, v4()).await),
        "accounts: absolute lifetime not enforced"
    );
    // IP family switch ends the session, for good.
    let c = h.enrolled(v4(), false).await;
    let cookie = c.login.session.token.expose_secret().to_owned();
    assert!(unauthenticated(
        h.accounts.authenticate(&cookie, v6()).await
    ));
    assert!(unauthenticated(
        h.accounts.authenticate(&cookie, v4()).await
    ));
    assert!(
        h.failures_of(c.user)
            .await
            .contains(&LoginFailure::IpFamilyChanged)
    );
    // Renewal: new id, old cookie dead.
    let d = h.enrolled(v6(), false).await;
    let old = d.login.session.token.expose_secret().to_owned();
    let renewed = h.accounts.renew_session(&old, v6()).await.unwrap();
    assert_ne!(renewed.id, d.login.session.id);
    assert!(unauthenticated(h.accounts.authenticate(&old, v6()).await));
    assert!(
        h.accounts
            .authenticate(renewed.token.expose_secret(), v6())
            .await
            .is_ok()
    );
    // Listing, ending one, logout, log out everywhere.
    let other = h.totp_login(&d, v6(), false).await;
    let list = h.accounts.access_list(d.user).await.unwrap();
    assert_eq!(list.sessions.len(), 2);
    h.accounts
        .end_session(d.user, other.session.id, None)
        .await
        .unwrap();
    assert!(unauthenticated(
        h.accounts
            .authenticate(other.session.token.expose_secret(), v6())
            .await
    ));
    assert!(
        h.accounts
            .end_session(c.user, renewed.id, None)
            .await
            .is_err(),
        "accounts: ended another user's session"
    );
    h.accounts
        .logout(renewed.token.expose_secret(), v6())
        .await
        .unwrap();
    assert!(unauthenticated(
        h.accounts
            .authenticate(renewed.token.expose_secret(), v6())
            .await
    ));
    let s1 = h.totp_login(&d, v6(), false).await;
    assert_eq!(h.accounts.logout_everywhere(d.user, None).await.unwrap(), 1);
    assert!(unauthenticated(
        h.accounts
            .authenticate(s1.session.token.expose_secret(), v6())
            .await
    ));
    // Forged and malformed session cookies.
    for forged in [
        "",
        "ers_",
        "ers_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "erd_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert!(unauthenticated(h.accounts.authenticate(forged, v4()).await));
    }
}

/// Challenges expire after 5 minutes, are bound to the IP family of the
/// password step, and are single-use.
pub async fn challenges_expire_and_are_pinned<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    h.clock.advance(Duration::seconds(30));
    let totp = || SecondFactor::Totp(h.totp_code(&a.seed, 0));
    // Bound to the IP family of the password step.
    let ch = h.second_factor_challenge(&a.email, v4()).await;
    assert!(unauthenticated(
        h.accounts
            .login_second_factor(&ch, totp(), v6(), false)
            .await
    ));
    // Expires after 5 minutes.
    let ch = h.second_factor_challenge(&a.email, v4()).await;
    h.clock.advance(Duration::minutes(5));
    assert!(unauthenticated(
        h.accounts
            .login_second_factor(&ch, totp(), v4(), false)
            .await
    ));
    // Single-use: after a success it is gone.
    let ch = h.second_factor_challenge(&a.email, v4()).await;
    h.accounts
        .login_second_factor(&ch, totp(), v4(), false)
        .await
        .unwrap();
    h.clock.advance(Duration::seconds(30));
    assert!(
        unauthenticated(
            h.accounts
                .login_second_factor(&ch, totp(), v4(), false)
                .await
        ),
        "accounts: challenge reused"
    );
    // Challenges issued before a password change die with it.
    let old_ch = h.second_factor_challenge(&a.email, v4()).await;
    let new_pw = "another long passphrase";
    let s = h.totp_login(&a, v4(), false).await;
    h.accounts
        .change_password(
            s.session.token.expose_secret(),
            pw(PASSWORD),
            pw(new_pw),
            v4(),
        )
        .await
        .unwrap();
    h.clock.advance(Duration::seconds(30));
    assert!(
        unauthenticated(
            h.accounts
                .login_second_factor(&old_ch, totp(), v4(), false)
                .await
        ),
        "accounts: pre-change challenge survived"
    );
    for forged in [
        "",
        "erc_x",
        "ers_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert!(unauthenticated(
            h.accounts
                .login_second_factor(forged, SecondFactor::Totp(pw("123456")), v4(), false)
                .await
        ));
        assert!(unauthenticated(
            h.accounts.begin_enrollment(forged, v4()).await.map(|_| ())
        ));
    }
    let f = h.failures_of(a.user).await;
    for why in [
        LoginFailure::IpFamilyChanged,
        LoginFailure::BadChallenge,
        LoginFailure::CredentialsChanged,
    ] {
        assert!(f.contains(&why), "accounts: {why:?} not audited");
    }
}

/// A session, device or login completed against the old credentials dies
/// with a password change or a 2FA reset, even when it was made after the
/// deletes (the credential epoch, not the deletes, decides).
pub async fn old_credentials_die_with_the_epoch<B: Backend>(h: Harness<B>) {
    use echorelay_core::account::SessionRecord;
    use echorelay_core::account::token::{Token, TokenKind};
    use echorelay_core::ids::SessionId;
    let a = h.enrolled(v4(), false).await;
    let epoch = h.store.account(a.user).await.unwrap().unwrap().epoch;
    h.accounts
        .reset_two_factor(a.user, echorelay_core::audit::Actor::System, None)
        .await
        .unwrap();
    assert_eq!(
        h.store.account(a.user).await.unwrap().unwrap().epoch,
        epoch + 1
    );
    // A login that raced the reset writes its session afterwards, stamped
    // with the old epoch: it must not authenticate.
    let t = Token::generate(TokenKind::Session);
    let now = h.clock.now();
    let late = SessionRecord {
        id: SessionId::random(),
        token_hash: t.hash(),
        user: a.user,
        created_at: now,
        last_seen_at: now,
        verified_at: now,
        expires_at: now + Duration::hours(1),
        ip_family: echorelay_core::account::IpFamily::V4,
        epoch,
    };
    h.store.insert_session(late).await.unwrap();
    assert!(unauthenticated(
        h.accounts.authenticate(t.expose_secret(), v4()).await
    ));
    assert!(
        h.failures_of(a.user)
            .await
            .contains(&LoginFailure::CredentialsChanged)
    );
    // Compare-and-swap on the password hash: a stale writer loses.
    let acct = h.store.account(a.user).await.unwrap().unwrap();
    let other = echorelay_core::account::password::hash_password(
        &pw("x"),
        echorelay_core::account::password::PasswordPolicy::new(10).unwrap(),
    )
    .unwrap();
    assert!(
        h.store
            .replace_password_hash(a.user, &acct.password_hash, other.clone(), false)
            .await
            .unwrap()
    );
    assert!(
        !h.store
            .replace_password_hash(
                a.user,
                &acct.password_hash,
                acct.password_hash.clone(),
                false
            )
            .await
            .unwrap(),
        "accounts: stale hash write won"
    );
    assert_eq!(
        h.store
            .account(a.user)
            .await
            .unwrap()
            .unwrap()
            .password_hash,
        other
    );
}

/// Expired sessions and challenges are purged; live ones are kept.
pub async fn purge_removes_only_expired_sessions_and_challenges<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    let _pending = h.second_factor_challenge(&a.email, v4()).await;
    h.clock.advance(Duration::minutes(20));
    let live = h.totp_login(&a, v4(), false).await;
    // The 5-minute challenge is expired; the enrollment session has been
    // idle for 20.5 minutes: not yet.
    assert_eq!(h.accounts.purge_expired().await.unwrap(), 1);
    h.clock.advance(Duration::minutes(10));
    // Now the enrollment session is idle past 30 minutes; the later one
    // only 10.
    assert_eq!(h.accounts.purge_expired().await.unwrap(), 1);
    let left = h.store.sessions_of(a.user).await.unwrap();
    assert_eq!(
        left.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![live.session.id]
    );
}

/// The documented delay of the progressive password throttle after
/// `failures` recorded failures ([`echorelay_core::account::AccountPolicy`]).
fn backoff(policy: &echorelay_core::account::AccountPolicy, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::zero();
    }
    let d = policy.password_backoff * 2i32.pow(failures - 1);
    d.min(policy.failure_window)
}

/// The password step is throttled per account and per source address
/// (ASVS V2.2.1), with counters in the store (shared by every process):
/// while refused, the right password fails exactly like a wrong one; the
/// refusal lifts when the window passes. A success resets the account's
/// count.
pub async fn password_step_is_throttled<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    let policy = *h.accounts.policy();
    let wrong = || pw("not the password at all");
    // One short of the limit, each after its delay, then a success: the
    // count starts over.
    for k in 0..policy.max_password_failures - 1 {
        h.clock.advance(backoff(&policy, k));
        let proc_ = h.another_process();
        assert!(unauthenticated(
            proc_
                .accounts
                .login_password(&a.email, wrong(), v4(), None)
                .await
        ));
    }
    h.clock
        .advance(backoff(&policy, policy.max_password_failures - 1));
    h.accounts
        .login_password(&a.email, pw(PASSWORD), v4(), None)
        .await
        .expect("accounts: a success under the limit");
    for _ in 0..policy.max_password_failures {
        assert!(unauthenticated(
            h.another_process()
                .accounts
                .login_password(&a.email, wrong(), v4(), None)
                .await
        ));
    }
    // Refused: the right password is refused the same way, from anywhere.
    assert!(unauthenticated(
        h.accounts
            .login_password(&a.email, pw(PASSWORD), v6(), None)
            .await
    ));
    assert!(
        h.failures_of(a.user)
            .await
            .contains(&LoginFailure::LockedOut),
        "accounts: the password lockout was not audited"
    );
    h.clock.advance(policy.failure_window);
    h.accounts
        .login_password(&a.email, pw(PASSWORD), v4(), None)
        .await
        .expect("accounts: after the window");

    // Per source: many accounts (here: unknown emails) from one address.
    let source: IpAddr = "203.0.113.77".parse().unwrap();
    for i in 0..policy.max_password_attempts_per_source {
        let email = format!("nobody{i}@example.com");
        assert!(unauthenticated(
            h.accounts
                .login_password(&email, wrong(), source, None)
                .await
        ));
    }
    assert!(
        unauthenticated(
            h.accounts
                .login_password(&a.email, pw(PASSWORD), source, None)
                .await
        ),
        "accounts: the source limit let a login through"
    );
    // Another source is not affected.
    h.accounts
        .login_password(&a.email, pw(PASSWORD), v4(), None)
        .await
        .expect("accounts: another source");
}

/// Password guessing against one account backs off progressively: after
/// `k` failures the next attempt, right password or not, is refused until
/// `password_backoff × 2^(k−1)` after the last one, and the refusals are
/// not counted as checks (audited as lockouts, not as bad passwords).
pub async fn password_guessing_backs_off<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    let policy = *h.accounts.policy();
    let rounds = 4;
    for k in 1..=rounds {
        assert!(unauthenticated(
            h.accounts
                .login_password(&a.email, pw("not the password at all"), v4(), None)
                .await
        ));
        // Just before the delay ends (it doubles each round), even the
        // right password is refused.
        let before = backoff(&policy, k) - Duration::milliseconds(1);
        h.clock.advance(before);
        assert!(
            unauthenticated(
                h.accounts
                    .login_password(&a.email, pw(PASSWORD), v4(), None)
                    .await
            ),
            "accounts: the right password was checked {before} after failure {k}"
        );
        // Exactly at its end, the next guess is checked.
        h.clock.advance(Duration::milliseconds(1));
    }
    let failures = h.failures_of(a.user).await;
    let count = |f: LoginFailure| failures.iter().filter(|x| **x == f).count();
    assert_eq!(count(LoginFailure::BadPassword), rounds as usize);
    assert_eq!(count(LoginFailure::LockedOut), rounds as usize);
    // The delay over, the right password gets through and resets the count.
    h.accounts
        .login_password(&a.email, pw(PASSWORD), v4(), None)
        .await
        .expect("accounts: the right password after the delay");
    assert!(unauthenticated(
        h.accounts
            .login_password(&a.email, pw("not the password at all"), v4(), None)
            .await
    ));
    h.clock.advance(backoff(&policy, 1));
    h.accounts
        .login_password(&a.email, pw(PASSWORD), v4(), None)
        .await
        .expect("accounts: one failure after a reset waits only the first delay");
}

/// Others' guesses never lock out the holder of a trusted device (ASVS
/// V2.2.1): after an attacker exhausted the account's password throttle
/// and the shared source address, the owner with the right password and
/// the device cookie logs in, and steps up in a session; a device cookie
/// alone does not open unthrottled guessing.
pub async fn guesses_do_not_lock_out_a_trusted_device<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), true).await;
    let device = a
        .login
        .device
        .as_ref()
        .expect("accounts: enrollment trusted the device")
        .token
        .expose_secret()
        .to_owned();
    let policy = *h.accounts.policy();
    // Attacker and victim behind one NAT address.
    let nat: IpAddr = "203.0.113.50".parse().unwrap();
    let wrong = || pw("not the password at all");
    for k in 0..policy.max_password_failures {
        h.clock.advance(backoff(&policy, k));
        assert!(unauthenticated(
            h.accounts
                .login_password(&a.email, wrong(), nat, None)
                .await
        ));
    }
    for i in 0..policy.max_password_attempts_per_source {
        let email = format!("victimless{i}@example.com");
        assert!(unauthenticated(
            h.accounts.login_password(&email, wrong(), nat, None).await
        ));
    }
    // The attack works on everyone without a device of the account.
    assert!(unauthenticated(
        h.accounts
            .login_password(&a.email, pw(PASSWORD), v4(), None)
            .await
    ));
    // The owner's device gets through, from the flooded address too.
    let step = h
        .accounts
        .login_password(&a.email, pw(PASSWORD), nat, Some(&device))
        .await
        .expect("accounts: the trusted device was locked out by others' guesses");
    let PasswordStep::Authenticated(session) = step else {
        panic!("accounts: a trusted device must skip the TOTP step, got {step:?}");
    };
    // A step-up by password in a session is not refused either.
    h.accounts
        .step_up(
            session.token.expose_secret(),
            nat,
            StepUp::Password(pw(PASSWORD)),
        )
        .await
        .expect("accounts: step-up refused by others' guesses");
    // And the device login did not reset the attacker's bucket.
    assert!(unauthenticated(
        h.accounts
            .login_password(&a.email, pw(PASSWORD), v4(), None)
            .await
    ));
    // A device cookie is throttled on its own: a wrong password with it
    // makes the next one wait.
    assert!(unauthenticated(
        h.accounts
            .login_password(&a.email, wrong(), nat, Some(&device))
            .await
    ));
    assert!(unauthenticated(
        h.accounts
            .login_password(&a.email, pw(PASSWORD), nat, Some(&device))
            .await
    ));
    h.clock.advance(backoff(&policy, 1));
    h.accounts
        .login_password(&a.email, pw(PASSWORD), nat, Some(&device))
        .await
        .expect("accounts: the device after its own delay");
}

/// An account keeps at most `max_sessions` sessions: a login beyond the
/// cap ends the oldest (audited as ended by the system), never the new one
/// and never another account's.
pub async fn sessions_per_account_are_capped<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), true).await;
    let other = h.enrolled(v4(), false).await;
    let device = a
        .login
        .device
        .as_ref()
        .expect("accounts: enrollment trusted the device")
        .token
        .expose_secret()
        .to_owned();
    let cap = h.accounts.policy().max_sessions;
    let mut tokens = vec![a.login.session.token.expose_secret().to_owned()];
    // The enrollment session plus cap - 1 logins: at the cap, nothing ends.
    let login = || async {
        h.clock.advance(Duration::seconds(1));
        match h
            .accounts
            .login_password(&a.email, pw(PASSWORD), v4(), Some(&device))
            .await
            .expect("accounts: a device login")
        {
            PasswordStep::Authenticated(s) => s.token.expose_secret().to_owned(),
            other => panic!("accounts: expected a session, got {other:?}"),
        }
    };
    for _ in 1..cap {
        tokens.push(login().await);
    }
    assert_eq!(h.store.sessions_of(a.user).await.unwrap().len(), cap);
    let ended_before = h.count_audited(a.user, AccountAction::SessionEnded).await;
    tokens.push(login().await);
    assert_eq!(
        h.store.sessions_of(a.user).await.unwrap().len(),
        cap,
        "accounts: the session cap was not kept"
    );
    assert!(
        unauthenticated(h.accounts.authenticate(&tokens[0], v4()).await),
        "accounts: the oldest session survived the cap"
    );
    for t in [&tokens[1], &tokens[cap]] {
        assert!(h.accounts.authenticate(t, v4()).await.is_ok());
    }
    assert_eq!(
        h.count_audited(a.user, AccountAction::SessionEnded).await,
        ended_before + 1,
        "accounts: the eviction was not audited"
    );
    assert!(
        h.accounts
            .authenticate(other.login.session.token.expose_secret(), v4())
            .await
            .is_ok()
    );
}

/// Loopback addresses (every client, behind a local proxy that is not
/// trusted) are not one global per-source bucket: an attacker's bad logins
/// from `127.0.0.1` do not stop another user showing the same address.
pub async fn a_loopback_source_is_not_a_global_bucket<B: Backend>(h: Harness<B>) {
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let a = h.enrolled(loopback, false).await;
    let policy = *h.accounts.policy();
    for i in 0..policy.max_password_attempts_per_source + 5 {
        let email = format!("guess{i}@example.com");
        assert!(unauthenticated(
            h.accounts
                .login_password(&email, pw("not the password at all"), loopback, None)
                .await
        ));
    }
    for ip in [loopback, "::ffff:127.0.0.1".parse().unwrap()] {
        let step = h
            .accounts
            .login_password(&a.email, pw(PASSWORD), ip, None)
            .await
            .expect("accounts: others' bad logins from loopback locked a user out");
        assert!(matches!(step, PasswordStep::SecondFactorRequired(_)));
    }
}

/// New passwords follow the policy (ASVS V2.1.1, V2.1.7): at least 12
/// characters, not common or guessable, at most 4096 bytes; a refused
/// password changes nothing.
pub async fn new_passwords_follow_the_policy<B: Backend>(h: Harness<B>) {
    use echorelay_core::account::password::PasswordError;
    for (bad, why) in [
        ("short-1", PasswordError::TooShort { min: 12 }),
        ("password1234", PasswordError::TooWeak),
        ("qwertyuiopasdf", PasswordError::TooWeak),
        ("newuser@example.com!", PasswordError::TooWeak),
    ] {
        assert_eq!(
            h.accounts
                .register("newuser@example.com", pw(bad), None)
                .await
                .err()
                .map(|e| e.to_string()),
            Some(Error::Password(why).to_string()),
            "accounts: {bad:?} was not refused as expected"
        );
    }
    let long = "x".repeat(4097);
    assert!(matches!(
        h.accounts
            .register("newuser@example.com", pw(&long), None)
            .await,
        Err(Error::Password(PasswordError::TooLong))
    ));
    assert!(
        h.store
            .account_by_email("newuser@example.com")
            .await
            .unwrap()
            .is_none(),
        "accounts: a refused registration wrote an account"
    );
    // A long random-looking passphrase up to the byte limit is fine.
    let ok = format!("velvet otter quarry {}", "9".repeat(4000));
    assert!(ok.len() <= 4096);
    h.accounts
        .register("newuser@example.com", pw(&ok), None)
        .await
        .expect("accounts: a long passphrase");
    // change_password applies the same rules and changes nothing when it
    // refuses.
    let a = h.enrolled(v4(), false).await;
    let cookie = a.login.session.token.expose_secret().to_owned();
    assert!(matches!(
        h.accounts
            .change_password(&cookie, pw(PASSWORD), pw("password1234"), v4())
            .await,
        Err(Error::Password(PasswordError::TooWeak))
    ));
    h.accounts
        .authenticate(&cookie, v4())
        .await
        .expect("accounts: a refused change ended the session");
}

/// Step-up re-authentication (ASVS V3.7.1): regenerating backup codes,
/// revoking devices, changing membership and revealing keys need a
/// password or TOTP check within the step-up window; a login counts, and
/// so does `step_up`, which is throttled and opaque like a login step.
pub async fn sensitive_operations_need_a_recent_step_up<B: Backend>(h: Harness<B>) {
    use echorelay_core::access::Role;
    use echorelay_core::access::surface::{Keys, Members};
    let a = h.enrolled(v4(), true).await;
    let cookie = a.login.session.token.expose_secret().to_owned();
    let (p, owner) = h.project().await;
    let m = h.grant::<Members>(&owner, &p).await;
    h.config
        .set_member(&m, a.user, Some(Role::Owner))
        .await
        .unwrap();
    let window = h.accounts.policy().step_up_window;
    // Fresh from the login: allowed.
    let s = h.accounts.authenticate(&cookie, v4()).await.unwrap();
    assert!(s.is_stepped_up());
    let g = h.grant::<Members>(&s.caller(None), &p).await;
    h.config
        .set_member(&g, UserId::random(), Some(Role::Viewer))
        .await
        .unwrap();
    // One second inside the window: still stepped up; at its end: not.
    h.clock.advance(window / 2);
    h.accounts.authenticate(&cookie, v4()).await.unwrap();
    h.clock.advance(window - window / 2 - Duration::seconds(1));
    assert!(
        h.accounts
            .authenticate(&cookie, v4())
            .await
            .unwrap()
            .is_stepped_up()
    );
    h.clock.advance(Duration::seconds(1));
    assert!(
        !h.accounts
            .authenticate(&cookie, v4())
            .await
            .unwrap()
            .is_stepped_up()
    );
    let s = h.accounts.authenticate(&cookie, v4()).await.unwrap();
    assert!(!s.is_stepped_up());
    let needs = |r: Result<(), Error>| matches!(r, Err(Error::ReauthenticationRequired));
    assert!(needs(
        h.accounts
            .regenerate_backup_codes(&cookie, v4())
            .await
            .map(|_| ())
    ));
    assert!(needs(
        h.accounts
            .revoke_devices(&s, None, Some(v4()))
            .await
            .map(|_| ())
    ));
    let g = h.grant::<Members>(&s.caller(None), &p).await;
    assert!(needs(
        h.config
            .set_member(&g, UserId::random(), Some(Role::Viewer))
            .await
    ));
    let k = h.grant::<Keys>(&s.caller(None), &p).await;
    assert!(needs(
        h.keys
            .reveal(&k, echorelay_core::ids::KeyId::random())
            .await
            .map(|_| ())
    ));
    // A bare user id (no session) never counts as stepped up.
    let bare = echorelay_core::access::Caller::user(a.user, None);
    let g = h.grant::<Members>(&bare, &p).await;
    assert!(needs(
        h.config.set_member(&g, a.user, Some(Role::Owner)).await
    ));
    // A wrong password does not step up, and says nothing more.
    assert!(unauthenticated(
        h.accounts
            .step_up(&cookie, v4(), StepUp::Password(pw("wrong password here")))
            .await
    ));
    // A TOTP code does.
    let s = h
        .accounts
        .step_up(&cookie, v4(), StepUp::Totp(h.totp_code(&a.seed, 0)))
        .await
        .unwrap();
    assert!(s.is_stepped_up());
    assert_eq!(s.verified_at, h.clock_now());
    // Its replay does not.
    assert!(unauthenticated(
        h.accounts
            .step_up(&cookie, v4(), StepUp::Totp(h.totp_code(&a.seed, 0)))
            .await
    ));
    assert!(
        h.accounts
            .authenticate(&cookie, v4())
            .await
            .unwrap()
            .is_stepped_up()
    );
    h.accounts
        .regenerate_backup_codes(&cookie, v4())
        .await
        .unwrap();
    assert_eq!(
        h.accounts
            .revoke_devices(&s, None, Some(v4()))
            .await
            .unwrap(),
        1
    );
    let g = h.grant::<Members>(&s.caller(None), &p).await;
    h.config
        .set_member(&g, UserId::random(), Some(Role::Viewer))
        .await
        .unwrap();
    h.assert_audited(a.user, &[AccountAction::Reauthenticated])
        .await;
}

/// Ending a session from the access list works only on the user's own
/// sessions: another account's session id is `NotFound` and stays alive.
pub async fn a_user_ends_only_their_own_sessions<B: Backend>(h: Harness<B>) {
    use echorelay_core::error::StoreError;
    let a = h.enrolled(v4(), false).await;
    let b = h.enrolled(v4(), false).await;
    let r = h
        .accounts
        .end_session(a.user, b.login.session.id, Some(v4()))
        .await;
    assert!(
        matches!(r, Err(Error::Store(StoreError::NotFound { .. }))),
        "accounts: a user ended another account's session: {r:?}"
    );
    h.accounts
        .authenticate(b.login.session.token.expose_secret(), v4())
        .await
        .expect("accounts: the other session died");
    h.accounts
        .end_session(a.user, a.login.session.id, Some(v4()))
        .await
        .unwrap();
    assert!(unauthenticated(
        h.accounts
            .authenticate(a.login.session.token.expose_secret(), v4())
            .await
    ));
}

/// The access list shows a session until its idle end and its absolute
/// end, and a trusted device until its expiry, to the second; nothing of
/// another credential epoch is shown. The records are written through the
/// store port, so each boundary is set exactly.
pub async fn access_list_shows_only_live_sessions_and_devices<B: Backend>(h: Harness<B>) {
    let a = h.enrolled(v4(), false).await;
    let idle = h.accounts.policy().session_idle;
    let epoch = h.store.account(a.user).await.unwrap().unwrap().epoch;
    let t = h.clock.now() + Duration::hours(1);
    let session = |last_seen_at, expires_at, epoch| SessionRecord {
        id: SessionId::random(),
        token_hash: Token::generate(TokenKind::Session).hash(),
        user: a.user,
        created_at: t - Duration::days(1),
        last_seen_at,
        verified_at: t - Duration::days(1),
        expires_at,
        ip_family: IpFamily::V4,
        epoch,
    };
    let device = |expires_at, epoch| DeviceRecord {
        id: DeviceId::random(),
        user: a.user,
        token_hash: Token::generate(TokenKind::Device).hash(),
        created_at: t - Duration::days(1),
        expires_at,
        last_used_at: None,
        ip_family: IpFamily::V4,
        epoch,
    };
    let far = t + Duration::days(1);
    // Idle end at t; absolute end at t; another epoch; live throughout.
    let s_idle = session(t - idle, far, epoch);
    let s_absolute = session(t, t, epoch);
    let s_other_epoch = session(t, far, epoch + 1);
    let s_live = session(t, far, epoch);
    let d_expiring = device(t, epoch);
    let d_other_epoch = device(far, epoch + 1);
    let d_live = device(far, epoch);
    let sessions = [&s_idle, &s_absolute, &s_other_epoch, &s_live];
    let devices = [&d_expiring, &d_other_epoch, &d_live];
    for s in sessions {
        h.store.insert_session(s.clone()).await.unwrap();
    }
    let cap = h.accounts.policy().max_trusted_devices;
    for d in devices {
        h.store.add_device(d.clone(), cap).await.unwrap();
    }
    let h = &h;
    let listed = |at| async move {
        h.clock.set(at);
        let list = h.accounts.access_list(a.user).await.unwrap();
        let s: Vec<SessionId> = sessions
            .iter()
            .map(|r| r.id)
            .filter(|id| list.sessions.iter().any(|v| v.id == *id))
            .collect();
        let d: Vec<DeviceId> = devices
            .iter()
            .map(|r| r.id)
            .filter(|id| list.devices.iter().any(|v| v.id == *id))
            .collect();
        (s, d)
    };
    assert_eq!(
        listed(t - Duration::seconds(1)).await,
        (
            vec![s_idle.id, s_absolute.id, s_live.id],
            vec![d_expiring.id, d_live.id]
        ),
        "accounts: the access list before the ends"
    );
    assert_eq!(
        listed(t).await,
        (vec![s_live.id], vec![d_live.id]),
        "accounts: the access list at the ends"
    );
}
