//! The account pages a person uses in a browser: sign-in, the second
//! factor (TOTP or a backup code, "trust this browser"), first-login
//! enrollment (QR code and secret), backup codes (shown once, download,
//! print), the account page (sessions, trusted devices, projects),
//! step-up, password change, sign-out and sign-out everywhere.
//!
//! Server-rendered HTML (maud, escaping by default), no JavaScript needed
//! (one small script only wires the Print button), one stylesheet. Every
//! page is sent with a strict Content-Security-Policy ([`PAGE_CSP`]: no
//! inline script or style), `Cache-Control: no-store` and, from the outer
//! layer, `Referrer-Policy: no-referrer`.
//!
//! Every form carries a CSRF token in a hidden field `csrf`: after
//! sign-in, the session's token ([`cookies::csrf_token`], as the JSON API
//! takes in `X-CSRF-Token`); before it, a double-submit token derived from
//! the random `__Host-er_form` cookie. A login challenge travels in the
//! `__Host-er_challenge` cookie (`HttpOnly`, `SameSite=Strict`, for the
//! challenge's lifetime), never in a URL or a page. Failed sign-ins say the
//! same words whether the account exists or is throttled.

mod view;

use std::net::IpAddr;
use std::str::FromStr;

use axum::Router;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use echorelay::Error;
use echorelay::core::StoreError;
use echorelay::core::account::IpFamily;
use echorelay::core::account::password::MAX_PASSWORD_BYTES;
use echorelay::core::ids::{DeviceId, SessionId};
use echorelay::core::ports::{AccountStore, ConfigStore, MembershipStore};
use echorelay::prelude::{
    AuthenticatedSession, ExposeSecret, LoginComplete, PasswordStep, SecondFactor, SecretString,
    StepUp,
};
use maud::{Markup, html};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::account::ClientIp;
use crate::cookies;
use view::{Errors, Field, Frame, csrf_field, field, page, trust_box, when};

/// The pages' Content-Security-Policy: nothing inline, the one stylesheet
/// and the one script from this origin, forms only to this origin, no
/// framing, no `<base>`.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The cookie of the double-submit token of the forms before sign-in.
pub const FORM_COOKIE: &str = "__Host-er_form";
/// The cookie holding a login challenge between the steps.
pub const CHALLENGE_COOKIE: &str = "__Host-er_challenge";

/// The longest email the service takes (core's rule).
const MAX_EMAIL: usize = 254;
/// The longest TOTP or backup code a field takes.
const MAX_CODE: usize = 32;

const STYLE: &str = include_str!("style.css");
const PRINT_JS: &str = include_str!("print.js");

/// The pages' routes (merged into [`crate::router`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/account", get(overview))
        .route("/account/sign-in", get(sign_in_page).post(sign_in))
        .route(
            "/account/second-factor",
            get(second_factor_page).post(second_factor),
        )
        .route("/account/enroll", get(enroll_page).post(enroll))
        .route("/account/step-up", get(step_up_page).post(step_up))
        .route(
            "/account/password",
            get(password_page).post(change_password),
        )
        .route(
            "/account/backup-codes",
            get(backup_codes_page).post(new_backup_codes),
        )
        .route("/account/backup-codes/download", post(download_codes))
        .route("/account/sessions/end", post(end_session))
        .route("/account/devices/revoke", post(revoke_devices))
        .route("/account/sign-out", post(sign_out))
        .route("/account/sign-out-everywhere", post(sign_out_everywhere))
        .route("/account/style.css", get(stylesheet))
        .route("/account/print.js", get(print_script))
}

// --- answers ---------------------------------------------------------------

/// An HTML answer with the pages' headers.
fn html(status: StatusCode, markup: Markup) -> Response {
    let mut r = (status, markup.into_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    r
}

fn secure_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// 303 to `to` (a path of ours, never with a secret).
fn see_other(to: &str) -> Response {
    let mut r = Redirect::to(to).into_response();
    secure_headers(r.headers_mut());
    r
}

fn with_cookies(mut r: Response, set: impl IntoIterator<Item = HeaderValue>) -> Response {
    for c in set {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

/// A `__Host-` cookie for `secs` seconds (relative, so a server whose
/// clock is not the browser's still works), `SameSite=Strict`.
fn short_cookie(name: &str, value: &str, secs: i64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        secs.max(1)
    ))
    .ok()
}

/// The session's cookies (as the JSON API sets them).
fn session_cookies(session: &echorelay::prelude::NewSession) -> Vec<HeaderValue> {
    let token = session.token.expose_secret();
    let csrf = cookies::csrf_token(token);
    let expires = Some(session.expires_at);
    [
        cookies::set(cookies::SESSION, token, expires, true),
        cookies::set(cookies::CSRF, &csrf, expires, false),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The cookies of a completed sign-in: the session's, the trusted
/// device's when one was made, and the spent challenge's cleared.
fn login_cookies(done: &LoginComplete) -> Vec<HeaderValue> {
    let mut set = session_cookies(&done.session);
    set.push(cookies::clear(CHALLENGE_COOKIE));
    if let Some(d) = &done.device {
        set.extend(cookies::set(
            cookies::DEVICE,
            d.token.expose_secret(),
            Some(d.expires_at),
            true,
        ));
    }
    set
}

fn unavailable() -> Response {
    let errors = Errors::none();
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        page(
            Frame::new("Try again in a minute", &errors),
            html! { p { "The service cannot reach its storage just now. Nothing was changed. Wait a minute, then " a href="/account" { "try again" } "." } },
        ),
    )
}

/// The answer to a core error that is no one's input: 503 for an
/// outage, else a generic page (logged).
fn failed(e: Error) -> Response {
    match e {
        Error::Unavailable | Error::Store(StoreError::Backend { .. }) => unavailable(),
        other => {
            tracing::error!(error = %other, "account page failed");
            let errors = Errors::none();
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                page(
                    Frame::new("Something went wrong", &errors),
                    html! { p { "The request could not be completed. " a href="/account" { "Go back to your account" } " and try again." } },
                ),
            )
        }
    }
}

// --- CSRF ------------------------------------------------------------------

fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
}

fn same(a: &str, b: Option<&str>) -> bool {
    b.is_some_and(|b| a.as_bytes().ct_eq(b.as_bytes()).into())
}

/// The double-submit token of a `__Host-er_form` cookie value.
fn form_token(cookie: &str) -> String {
    hex::encode(Sha256::digest(format!("echorelay form csrf v1\0{cookie}")))
}

/// The form token for this browser, and the cookie to set when it has
/// none yet.
fn anonymous_token(headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match cookies::get(headers, FORM_COOKIE) {
        Some(c) => (form_token(c), None),
        None => {
            let value = hex::encode(rand::random::<[u8; 32]>());
            let set = HeaderValue::from_str(&format!(
                "{FORM_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict"
            ))
            .ok();
            (form_token(&value), set)
        }
    }
}

fn anonymous_ok(headers: &HeaderMap, sent: Option<&str>) -> bool {
    !cross_site(headers)
        && cookies::get(headers, FORM_COOKIE).is_some_and(|c| same(&form_token(c), sent))
}

const REFUSED_CODE: &str = "That code was not accepted: it was wrong, already used, or there were too many attempts, or the sign-in took longer than 5 minutes. Sign in again with your password, then use a new code.";

const STALE_FORM: &str =
    "This form has expired or did not come from this site. It has been renewed: fill it in again.";

// --- the signed-in person -----------------------------------------------------

struct Me {
    session: AuthenticatedSession,
    token: String,
    csrf: String,
    ip: IpAddr,
}

/// The session of the request, or the answer to give instead: sign in
/// again (the cookies cleared) or try later.
async fn me(state: &AppState, headers: &HeaderMap, ip: IpAddr) -> Result<Me, Response> {
    let Some(token) = cookies::get(headers, cookies::SESSION) else {
        return Err(see_other("/account/sign-in"));
    };
    match state.relay.accounts().authenticate(token, ip).await {
        Ok(session) => Ok(Me {
            session,
            csrf: cookies::csrf_token(token),
            token: token.to_owned(),
            ip,
        }),
        Err(Error::Unauthenticated) => Err(with_cookies(
            see_other("/account/sign-in?m=ended"),
            [
                cookies::clear(cookies::SESSION),
                cookies::clear(cookies::CSRF),
            ],
        )),
        Err(e) => Err(failed(e)),
    }
}

impl FromRequestParts<AppState> for Me {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let ClientIp(ip) = ClientIp::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        me(state, &parts.headers, ip).await
    }
}

/// A form of ours: the CSRF token it carries.
trait CsrfField {
    fn csrf(&self) -> Option<&str>;
}

macro_rules! csrf_field_of {
    ($($form:ty),* $(,)?) => {$(
        impl CsrfField for $form {
            fn csrf(&self) -> Option<&str> {
                self.csrf.as_deref()
            }
        }
    )*};
}

csrf_field_of!(
    SignInForm,
    SecondFactorForm,
    CodeForm,
    IdForm,
    StepUpForm,
    CsrfForm,
    CodesForm,
    PasswordForm,
);

/// A signed-in person's form, read and its CSRF token checked; the
/// rejection is the page to answer with instead (sign in again, the form
/// could not be read, or it is out of date: nothing was changed).
struct Posted<T>(Me, T);

impl<T: DeserializeOwned + CsrfField + Send> FromRequest<AppState> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let me = Me::from_request_parts(&mut parts, state).await;
        let cross = cross_site(&parts.headers);
        // The body is read before any answer, so that the connection
        // stays usable (an unread body would end it).
        let form = Form::<T>::from_request(Request::from_parts(parts, body), state).await;
        let me = me?;
        let Ok(Form(form)) = form else {
            return Err(bad_form_page(
                StatusCode::BAD_REQUEST,
                &me.csrf,
                "The form could not be read: a field is far too long, or it was not sent by this page. Nothing was changed.",
            ));
        };
        if cross || !same(&me.csrf, form.csrf()) {
            return Err(titled_bad_form_page(
                "Form expired",
                StatusCode::FORBIDDEN,
                &me.csrf,
                "This form is out of date: it was opened before a sign-in, a confirmation or a password change, or it did not come from this site. Nothing was changed.",
            ));
        }
        Ok(Posted(me, form))
    }
}

/// A form sent before sign-in that is not taken: the status and the
/// errors its page shows again, and the form when it could be read (to
/// fill in again what is safe to show).
struct Refused<T> {
    status: StatusCode,
    errors: Errors,
    form: Option<T>,
}

/// A form sent before sign-in, read and its double-submit token checked.
fn anonymous_form<T: CsrfField>(
    headers: &HeaderMap,
    form: Result<Form<T>, FormRejection>,
) -> Result<T, Refused<T>> {
    let Ok(Form(form)) = form else {
        return Err(Refused {
            status: StatusCode::BAD_REQUEST,
            errors: unreadable(),
            form: None,
        });
    };
    if !anonymous_ok(headers, form.csrf()) {
        return Err(Refused {
            status: StatusCode::FORBIDDEN,
            errors: Errors::form(STALE_FORM),
            form: Some(form),
        });
    }
    Ok(form)
}

/// A notice named by `?m=` (a fixed list: nothing from the URL is shown).
#[derive(Debug, Default, Deserialize)]
struct Notice {
    #[serde(default)]
    m: Option<String>,
    #[serde(default, rename = "for")]
    for_: Option<String>,
}

fn notice_text(m: Option<&str>) -> Option<&'static str> {
    Some(match m? {
        "ended" => "Your session has ended. Sign in again.",
        "restart" => "That sign-in attempt has expired or was already used. Sign in again.",
        "signed-out" => "You are signed out.",
        "signed-out-everywhere" => "You are signed out on every device.",
        "stepped-up" => {
            "Confirmed. For the next 10 minutes you can revoke devices and make new backup codes."
        }
        "password-changed" => {
            "Your password is changed. Every other session and every trusted browser has been signed out."
        }
        "device-revoked" => "The browser is no longer trusted: it will ask for a code again.",
        "devices-revoked" => "No browser is trusted any more: each will ask for a code again.",
        "device-gone" => "That browser was not trusted any more.",
        "session-ended" => "The session is signed out.",
        "session-gone" => "That session had already ended.",
        _ => return None,
    })
}

fn query(q: Result<Query<Notice>, QueryRejection>) -> Notice {
    q.map(|Query(n)| n).unwrap_or_default()
}

// --- sign-in -----------------------------------------------------------------

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    password: Option<SecretString>,
}

fn sign_in_view(token: &str, email: Option<&str>, notice: Option<&str>, errors: &Errors) -> Markup {
    page(
        Frame::new("Sign in", errors).notice(notice),
        html! {
            form method="post" action="/account/sign-in" novalidate {
                (csrf_field(token))
                (field(&Field::new("email", "Email address", "email", "username", MAX_EMAIL).value(email), errors))
                (field(&Field::new("password", "Password", "password", "current-password", MAX_PASSWORD_BYTES), errors))
                button type="submit" { "Continue" }
            }
            p.hint { "After the password, you confirm with a code from your authenticator app." }
        },
    )
}

/// A sign-in page with the form cookie set when needed.
fn sign_in_answer(
    status: StatusCode,
    headers: &HeaderMap,
    email: Option<&str>,
    notice: Option<&str>,
    errors: &Errors,
) -> Response {
    let (token, set) = anonymous_token(headers);
    with_cookies(
        html(status, sign_in_view(&token, email, notice, errors)),
        set,
    )
}

async fn sign_in_page(headers: HeaderMap, q: Result<Query<Notice>, QueryRejection>) -> Response {
    let q = query(q);
    // A refused code is told as an error of the form it leads back to.
    let errors = match q.m.as_deref() {
        Some("refused") => Errors::form(REFUSED_CODE),
        _ => Errors::none(),
    };
    sign_in_answer(
        StatusCode::OK,
        &headers,
        None,
        notice_text(q.m.as_deref()),
        &errors,
    )
}

/// The email typed, to show again in the form: only one the field takes.
fn shown_email(email: &str) -> Option<&str> {
    (email.chars().count() <= MAX_EMAIL).then_some(email)
}

fn unreadable() -> Errors {
    Errors::form(
        "The form could not be read: a field is far too long, or it was not sent by this page. Shorten it and try again.",
    )
}

async fn sign_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let form = match anonymous_form(&headers, form) {
        Ok(f) => f,
        Err(r) => {
            let email = r.form.and_then(|f| f.email);
            let shown = email.as_deref().and_then(shown_email);
            return sign_in_answer(r.status, &headers, shown, None, &r.errors);
        }
    };
    let email = form.email.unwrap_or_default();
    let shown = shown_email(&email);
    let mut errors = Errors::none();
    if email.trim().is_empty() {
        errors.add("email", "Enter your email address.");
    } else if email.chars().count() > MAX_EMAIL {
        errors.add(
            "email",
            format!("An email address has at most {MAX_EMAIL} characters: check it."),
        );
    }
    let password = form.password.unwrap_or_else(|| SecretString::from(""));
    if password.expose_secret().is_empty() {
        errors.add("password", "Enter your password.");
    } else if password.expose_secret().len() > MAX_PASSWORD_BYTES {
        errors.add(
            "password",
            format!("A password has at most {MAX_PASSWORD_BYTES} bytes: check it."),
        );
    }
    if !errors.is_empty() {
        return sign_in_answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            &headers,
            shown,
            None,
            &errors,
        );
    }
    let device = cookies::get(&headers, cookies::DEVICE);
    match state
        .relay
        .accounts()
        .login_password(&email, password, ip, device)
        .await
    {
        Ok(PasswordStep::SecondFactorRequired(c)) => {
            challenge_to(&state, c, "/account/second-factor")
        }
        Ok(PasswordStep::EnrollmentRequired(c)) => challenge_to(&state, c, "/account/enroll"),
        Ok(PasswordStep::Authenticated(session)) => with_cookies(
            see_other("/account"),
            session_cookies(&session)
                .into_iter()
                .chain([cookies::clear(CHALLENGE_COOKIE)]),
        ),
        // The same words for a wrong password, an unknown account and a
        // throttled one.
        Err(Error::Unauthenticated) => sign_in_answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            &headers,
            shown,
            None,
            &Errors::field(
                "password",
                "The email address or the password is not right, or there were too many attempts. Check both and try again; after several failed attempts, wait a few minutes first.",
            ),
        ),
        Err(e) => failed(e),
    }
}

/// 303 to the next step with the challenge in its cookie.
fn challenge_to(state: &AppState, c: echorelay::prelude::Challenge, to: &str) -> Response {
    let secs = (c.expires_at - state.relay.clock().now()).num_seconds();
    with_cookies(
        see_other(to),
        short_cookie(CHALLENGE_COOKIE, c.token.expose_secret(), secs),
    )
}

fn restart() -> Response {
    with_cookies(
        see_other("/account/sign-in?m=restart"),
        [cookies::clear(CHALLENGE_COOKIE)],
    )
}

// --- second factor -------------------------------------------------------------

#[derive(Deserialize)]
struct SecondFactorForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    code: Option<SecretString>,
    #[serde(default)]
    backup_code: Option<SecretString>,
    #[serde(default)]
    trust_device: Option<String>,
}

fn trust_days(state: &AppState) -> i64 {
    state.relay.accounts().policy().device_lifetime.num_days()
}

fn second_factor_view(state: &AppState, token: &str, errors: &Errors) -> Markup {
    let days = trust_days(state);
    page(
        Frame::new("Confirm it is you", errors),
        html! {
            form method="post" action="/account/second-factor" novalidate {
                (csrf_field(token))
                (field(&Field::new("code", "Code from your authenticator app", "text", "one-time-code", MAX_CODE).inputmode("numeric").hint("6 digits, as your app shows them now."), errors))
                (trust_box("trust-totp", days))
                button type="submit" { "Sign in" }
            }
            h2 { "No access to your app?" }
            form method="post" action="/account/second-factor" novalidate {
                (csrf_field(token))
                (field(&Field::new("backup_code", "Backup code", "text", "one-time-code", MAX_CODE).hint("One of the codes you saved when you set up the app. Each works once."), errors))
                (trust_box("trust-backup", days))
                button.secondary type="submit" { "Sign in with a backup code" }
            }
        },
    )
}

fn second_factor_answer(
    state: &AppState,
    status: StatusCode,
    headers: &HeaderMap,
    errors: &Errors,
) -> Response {
    let (token, set) = anonymous_token(headers);
    with_cookies(html(status, second_factor_view(state, &token, errors)), set)
}

async fn second_factor_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if cookies::get(&headers, CHALLENGE_COOKIE).is_none() {
        return restart();
    }
    second_factor_answer(&state, StatusCode::OK, &headers, &Errors::none())
}

/// A code typed into `name`: trimmed; an error when empty or too long.
fn code_of(
    errors: &mut Errors,
    name: &'static str,
    v: Option<SecretString>,
) -> Option<SecretString> {
    let v = v?;
    let s = v.expose_secret().trim();
    if s.is_empty() {
        None
    } else if s.chars().count() > MAX_CODE {
        errors.add(
            name,
            format!("A code has at most {MAX_CODE} characters: check it."),
        );
        None
    } else {
        Some(SecretString::from(s))
    }
}

async fn second_factor(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<Form<SecondFactorForm>, FormRejection>,
) -> Response {
    let form = match anonymous_form(&headers, form) {
        Ok(f) => f,
        Err(r) => return second_factor_answer(&state, r.status, &headers, &r.errors),
    };
    let Some(challenge) = cookies::get(&headers, CHALLENGE_COOKIE) else {
        return restart();
    };
    let mut errors = Errors::none();
    let which = form.backup_code.is_some();
    let code = code_of(&mut errors, "code", form.code);
    let backup = code_of(&mut errors, "backup_code", form.backup_code);
    let factor = match (code, backup) {
        (Some(c), None) => SecondFactor::Totp(c),
        (None, Some(b)) => SecondFactor::BackupCode(b),
        _ => {
            if errors.is_empty() {
                if which {
                    errors.add("backup_code", "Enter one of your backup codes.");
                } else {
                    errors.add(
                        "code",
                        "Enter the 6-digit code your authenticator app shows.",
                    );
                }
            }
            return second_factor_answer(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                &headers,
                &errors,
            );
        }
    };
    let trust = form.trust_device.is_some();
    match state
        .relay
        .accounts()
        .login_second_factor(challenge, factor, ip, trust)
        .await
    {
        Ok(done) => with_cookies(see_other("/account"), login_cookies(&done)),
        // The challenge is spent whatever the outcome: start again.
        Err(Error::Unauthenticated) => with_cookies(
            see_other("/account/sign-in?m=refused"),
            [cookies::clear(CHALLENGE_COOKIE)],
        ),
        Err(e) => failed(e),
    }
}

// --- enrollment ----------------------------------------------------------------

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    code: Option<SecretString>,
    #[serde(default)]
    trust_device: Option<String>,
}

fn confirm_form(state: &AppState, token: &str, errors: &Errors) -> Markup {
    html! {
        form method="post" action="/account/enroll" novalidate {
            (csrf_field(token))
            (field(&Field::new("code", "Code from your authenticator app", "text", "one-time-code", MAX_CODE).inputmode("numeric").hint("6 digits, as your app shows them now."), errors))
            (trust_box("trust-enroll", trust_days(state)))
            button type="submit" { "Confirm and sign in" }
        }
    }
}

async fn enroll_page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Response {
    let Some(challenge) = cookies::get(&headers, CHALLENGE_COOKIE) else {
        return restart();
    };
    let offer = match state.relay.accounts().begin_enrollment(challenge, ip).await {
        Ok(o) => o,
        Err(Error::Unauthenticated) => return restart(),
        Err(e) => return failed(e),
    };
    let secret = offer.secret_base32.expose_secret();
    let grouped: Vec<&str> = secret
        .as_bytes()
        .chunks(4)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    let (token, set) = anonymous_token(&headers);
    let errors = Errors::none();
    let body = html! {
        p { "Your account needs a second factor. Set up an authenticator app (any app that follows RFC 6238, such as a password manager's) once:" }
        ol.steps {
            li {
                "Scan this QR code with the app:"
                figure.qr-box { (view::qr(&offer.qr_svg)) }
            }
            li {
                "Or type this secret into the app (spaces do not matter):"
                p { code.secret id="totp-secret" { (grouped.join(" ")) } }
            }
            li { "Type the code the app then shows." }
        }
        p.hint { "This secret is shown only on this page: loading the page again makes a new one." }
        (confirm_form(&state, &token, &errors))
    };
    with_cookies(
        html(
            StatusCode::OK,
            page(Frame::new("Set up your authenticator app", &errors), body),
        ),
        set,
    )
}

/// The confirmation form alone (the secret is not shown twice).
fn confirm_again(
    state: &AppState,
    status: StatusCode,
    headers: &HeaderMap,
    errors: &Errors,
) -> Response {
    let (token, set) = anonymous_token(headers);
    let body = html! {
        (confirm_form(state, &token, errors))
        p { "Lost the secret? " a href="/account/enroll" { "Show a new QR code" } " (the old one then stops working)." }
    };
    with_cookies(
        html(
            status,
            page(Frame::new("Set up your authenticator app", errors), body),
        ),
        set,
    )
}

async fn enroll(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    form: Result<Form<CodeForm>, FormRejection>,
) -> Response {
    let form = match anonymous_form(&headers, form) {
        Ok(f) => f,
        Err(r) => return confirm_again(&state, r.status, &headers, &r.errors),
    };
    let Some(challenge) = cookies::get(&headers, CHALLENGE_COOKIE) else {
        return restart();
    };
    let mut errors = Errors::none();
    let Some(code) = code_of(&mut errors, "code", form.code) else {
        if errors.is_empty() {
            errors.add(
                "code",
                "Enter the 6-digit code your authenticator app shows.",
            );
        }
        return confirm_again(&state, StatusCode::UNPROCESSABLE_ENTITY, &headers, &errors);
    };
    let trust = form.trust_device.is_some();
    match state
        .relay
        .accounts()
        .confirm_enrollment(challenge, &code, ip, trust)
        .await
    {
        Ok(enrolled) => {
            let done = enrolled.login;
            let set = login_cookies(&done);
            let csrf = cookies::csrf_token(done.session.token.expose_secret());
            let codes: Vec<String> = enrolled
                .backup_codes
                .iter()
                .map(|c| c.expose_secret().to_owned())
                .collect();
            with_cookies(
                codes_page(&csrf, &codes, "Your app is set up: save your backup codes"),
                set,
            )
        }
        Err(Error::Unauthenticated) => confirm_again(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            &headers,
            &Errors::field(
                "code",
                "That code did not match. Type the code your app shows now (check that your phone's clock is right). After too many attempts, or after 5 minutes, sign in again.",
            ),
        ),
        Err(e) => failed(e),
    }
}

fn codes_page(csrf: &str, codes: &[String], title: &str) -> Response {
    let errors = Errors::none();
    html(
        StatusCode::OK,
        page(
            Frame::new(title, &errors).signed_in(csrf).print(),
            view::backup_codes(codes, csrf, Some(("/account", "Continue to your account"))),
        ),
    )
}

// --- the account page ------------------------------------------------------------

fn family(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "IPv4",
        IpFamily::V6 => "IPv6",
    }
}

async fn overview(
    State(state): State<AppState>,
    me: Me,
    q: Result<Query<Notice>, QueryRejection>,
) -> Response {
    let q = query(q);
    let user = me.session.user;
    let store = state.relay.store();
    let access = match state.relay.accounts().access_list(user).await {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    let email = match store.account(user).await {
        Ok(a) => a.map(|a| a.email).unwrap_or_default(),
        Err(e) => return failed(e.into()),
    };
    let mut projects = Vec::new();
    match store.memberships_of(user).await {
        Ok(ms) => {
            for (id, role) in ms {
                match store.project(id).await {
                    Ok(Some(p)) => projects.push((p.name, p.slug.to_string(), role)),
                    Ok(None) => {}
                    Err(e) => return failed(e.into()),
                }
            }
        }
        Err(e) => return failed(e.into()),
    }
    projects.sort_by(|a, b| a.1.cmp(&b.1));
    let mut sessions = access.sessions;
    sessions.sort_by_key(|s| std::cmp::Reverse(s.last_seen_at));
    let csrf = me.csrf.as_str();
    let errors = Errors::none();
    let body = html! {
        p { "Signed in as " strong { (email) } "." }
        section aria-labelledby="sessions-title" {
            h2 id="sessions-title" { "Where you are signed in" }
            ul.cards {
                @for s in &sessions {
                    @let this = s.id == me.session.session;
                    li.card.current[this] {
                        p.card-title {
                            @if this { "This session" } @else { "Another session" }
                        }
                        dl {
                            dt { "Network" } dd { (family(s.ip_family)) }
                            dt { "Signed in" } dd { (when(s.created_at)) }
                            dt { "Last seen" } dd { (when(s.last_seen_at)) }
                        }
                        form method="post" action=(if this { "/account/sign-out" } else { "/account/sessions/end" }) {
                            (csrf_field(csrf))
                            input type="hidden" name="id" value=(s.id.to_string());
                            button.secondary type="submit" {
                                @if this { "Sign out here" } @else { "Sign out that session" }
                            }
                        }
                    }
                }
            }
            form method="post" action="/account/sign-out-everywhere" {
                (csrf_field(csrf))
                button.secondary type="submit" { "Sign out everywhere" }
            }
        }
        section aria-labelledby="devices-title" {
            h2 id="devices-title" { "Trusted browsers" }
            @if access.devices.is_empty() {
                p { "No browser is trusted: every sign-in asks for a code." }
            } @else {
                p { "These browsers skip the code at sign-in (never the password)." }
                ul.cards {
                    @for d in &access.devices {
                        li.card {
                            dl {
                                dt { "Network" } dd { (family(d.ip_family)) }
                                dt { "Trusted since" } dd { (when(d.created_at)) }
                                dt { "Last used" } dd { (d.last_used_at.map_or_else(|| "never".to_owned(), when)) }
                                dt { "Until" } dd { (when(d.expires_at)) }
                            }
                            form method="post" action="/account/devices/revoke" {
                                (csrf_field(csrf))
                                input type="hidden" name="id" value=(d.id.to_string());
                                button.secondary type="submit" { "Stop trusting this browser" }
                            }
                        }
                    }
                }
                form method="post" action="/account/devices/revoke" {
                    (csrf_field(csrf))
                    input type="hidden" name="id" value="all";
                    button.secondary type="submit" { "Stop trusting every browser" }
                }
            }
        }
        section aria-labelledby="projects-title" {
            h2 id="projects-title" { "Your projects" }
            @if projects.is_empty() {
                p { "You are not a member of any project yet." }
            } @else {
                ul.cards {
                    @for (name, slug, role) in &projects {
                        li.card {
                            p.card-title { (name) }
                            dl {
                                dt { "Slug" } dd { code { (slug) } }
                                dt { "Your role" } dd { (role.to_string()) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="security-title" {
            h2 id="security-title" { "Security" }
            ul {
                li { a href="/account/password" { "Change your password" } }
                li { a href="/account/backup-codes" { "Make new backup codes" } }
                li { a href="/v1/me/export" { "Download your personal data (JSON)" } }
            }
        }
    };
    html(
        StatusCode::OK,
        page(
            Frame::new("Your account", &errors)
                .signed_in(csrf)
                .notice(notice_text(q.m.as_deref())),
            body,
        ),
    )
}

#[derive(Deserialize)]
struct IdForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

fn bad_form_page(status: StatusCode, csrf: &str, message: &str) -> Response {
    titled_bad_form_page("That did not work", status, csrf, message)
}

/// A page saying what was wrong with a signed-in person's form, and the
/// way back.
fn titled_bad_form_page(title: &str, status: StatusCode, csrf: &str, message: &str) -> Response {
    let errors = Errors::form(message);
    html(
        status,
        page(
            Frame::new(title, &errors).signed_in(csrf),
            html! { p { a href="/account" { "Go back to your account" } " and try again." } },
        ),
    )
}

async fn end_session(State(state): State<AppState>, Posted(me, form): Posted<IdForm>) -> Response {
    let Some(id) = form.id.as_deref().and_then(|s| SessionId::from_str(s).ok()) else {
        return see_other("/account?m=session-gone");
    };
    match state
        .relay
        .accounts()
        .end_session(me.session.user, id, Some(me.ip))
        .await
    {
        Ok(()) if id == me.session.session => with_cookies(
            see_other("/account/sign-in?m=signed-out"),
            [
                cookies::clear(cookies::SESSION),
                cookies::clear(cookies::CSRF),
            ],
        ),
        Ok(()) => see_other("/account?m=session-ended"),
        Err(Error::Store(StoreError::NotFound { .. })) => see_other("/account?m=session-gone"),
        Err(e) => failed(e),
    }
}

async fn revoke_devices(
    State(state): State<AppState>,
    Posted(me, form): Posted<IdForm>,
) -> Response {
    let which = match form.id.as_deref() {
        Some("all") => None,
        Some(s) => match DeviceId::from_str(s) {
            Ok(id) => Some(id),
            Err(_) => return see_other("/account?m=device-gone"),
        },
        None => return see_other("/account?m=device-gone"),
    };
    match state
        .relay
        .accounts()
        .revoke_devices(&me.session, which, Some(me.ip))
        .await
    {
        Ok(_) if which.is_none() => see_other("/account?m=devices-revoked"),
        Ok(_) => see_other("/account?m=device-revoked"),
        Err(Error::ReauthenticationRequired) => see_other("/account/step-up?for=devices"),
        Err(Error::Store(StoreError::NotFound { .. })) => see_other("/account?m=device-gone"),
        Err(e) => failed(e),
    }
}

// --- step-up -------------------------------------------------------------------

#[derive(Deserialize)]
struct StepUpForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    password: Option<SecretString>,
    #[serde(default)]
    code: Option<SecretString>,
    #[serde(default, rename = "for")]
    for_: Option<String>,
}

/// Where a step-up for `for` continues (a fixed list).
fn after_step_up(for_: Option<&str>) -> (&'static str, &'static str) {
    match for_ {
        Some("backup-codes") => (
            "backup-codes",
            "Making new backup codes needs you to confirm it is you.",
        ),
        _ => (
            "devices",
            "Changing which browsers are trusted needs you to confirm it is you.",
        ),
    }
}

fn step_up_view(csrf: &str, for_: Option<&str>, errors: &Errors) -> Markup {
    let (key, why) = after_step_up(for_);
    page(
        Frame::new("Confirm it is you", errors)
            .signed_in(csrf)
            .notice(Some(why)),
        html! {
            form method="post" action="/account/step-up" novalidate {
                (csrf_field(csrf))
                input type="hidden" name="for" value=(key);
                (field(&Field::new("password", "Your password", "password", "current-password", MAX_PASSWORD_BYTES), errors))
                button type="submit" { "Confirm with my password" }
            }
            h2 { "Or with your app" }
            form method="post" action="/account/step-up" novalidate {
                (csrf_field(csrf))
                input type="hidden" name="for" value=(key);
                (field(&Field::new("code", "Code from your authenticator app", "text", "one-time-code", MAX_CODE).inputmode("numeric"), errors))
                button.secondary type="submit" { "Confirm with a code" }
            }
            p.hint { "Confirming lasts 10 minutes." }
        },
    )
}

async fn step_up_page(me: Me, q: Result<Query<Notice>, QueryRejection>) -> Response {
    let q = query(q);
    html(
        StatusCode::OK,
        step_up_view(&me.csrf, q.for_.as_deref(), &Errors::none()),
    )
}

async fn step_up(State(state): State<AppState>, Posted(me, form): Posted<StepUpForm>) -> Response {
    let for_ = form.for_.as_deref();
    let mut errors = Errors::none();
    let by_code = form.code.is_some();
    let password = form.password.filter(|p| !p.expose_secret().is_empty());
    let proof = match (password, code_of(&mut errors, "code", form.code)) {
        (Some(p), None) if p.expose_secret().len() <= MAX_PASSWORD_BYTES => StepUp::Password(p),
        (Some(_), None) => {
            errors.add(
                "password",
                format!("A password has at most {MAX_PASSWORD_BYTES} bytes: check it."),
            );
            return html(
                StatusCode::UNPROCESSABLE_ENTITY,
                step_up_view(&me.csrf, for_, &errors),
            );
        }
        (None, Some(c)) => StepUp::Totp(c),
        _ => {
            if errors.is_empty() {
                if by_code {
                    errors.add(
                        "code",
                        "Enter the 6-digit code your authenticator app shows.",
                    );
                } else {
                    errors.add("password", "Enter your password.");
                }
            }
            return html(
                StatusCode::UNPROCESSABLE_ENTITY,
                step_up_view(&me.csrf, for_, &errors),
            );
        }
    };
    let accounts = state.relay.accounts();
    match accounts.step_up(&me.token, me.ip, proof).await {
        Ok(_) => {}
        Err(Error::Unauthenticated) => {
            let name = if by_code { "code" } else { "password" };
            return html(
                StatusCode::UNPROCESSABLE_ENTITY,
                step_up_view(
                    &me.csrf,
                    for_,
                    &Errors::field(
                        name,
                        "That was not right, or there were too many attempts. Check it and try again; after several failed attempts, wait a few minutes first.",
                    ),
                ),
            );
        }
        Err(e) => return failed(e),
    }
    // A privilege change renews the session (no fixation).
    let renewed = match accounts.renew_session(&me.token, me.ip).await {
        Ok(s) => s,
        Err(Error::Unauthenticated) => return see_other("/account/sign-in?m=ended"),
        Err(e) => return failed(e),
    };
    let to = match after_step_up(for_).0 {
        "backup-codes" => "/account/backup-codes?m=stepped-up",
        _ => "/account?m=stepped-up",
    };
    with_cookies(see_other(to), session_cookies(&renewed))
}

// --- backup codes ----------------------------------------------------------------

async fn backup_codes_page(me: Me, q: Result<Query<Notice>, QueryRejection>) -> Response {
    let q = query(q);
    let errors = Errors::none();
    html(
        StatusCode::OK,
        page(
            Frame::new("Backup codes", &errors)
                .signed_in(&me.csrf)
                .notice(notice_text(q.m.as_deref())),
            html! {
                p { "Backup codes sign you in when you cannot use your authenticator app, each once. They were shown when you set up the app and are never shown again." }
                p { "Lost them, or used most of them? Make a new set: the old codes stop working at once." }
                form method="post" action="/account/backup-codes" {
                    (csrf_field(&me.csrf))
                    button type="submit" { "Make new backup codes" }
                }
            },
        ),
    )
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: Option<String>,
}

async fn new_backup_codes(
    State(state): State<AppState>,
    Posted(me, _): Posted<CsrfForm>,
) -> Response {
    match state
        .relay
        .accounts()
        .regenerate_backup_codes(&me.token, me.ip)
        .await
    {
        Ok(codes) => {
            let codes: Vec<String> = codes.iter().map(|c| c.expose_secret().to_owned()).collect();
            codes_page(&me.csrf, &codes, "Your new backup codes")
        }
        Err(Error::ReauthenticationRequired) => see_other("/account/step-up?for=backup-codes"),
        Err(Error::Unauthenticated) => see_other("/account/sign-in?m=ended"),
        Err(e @ Error::InvalidInput(_)) => {
            bad_form_page(StatusCode::UNPROCESSABLE_ENTITY, &me.csrf, &e.to_string())
        }
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
struct CodesForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    codes: Option<SecretString>,
}

/// The codes a page just showed, sent back as a text file (nothing is
/// stored or looked up: the server has only their hashes).
async fn download_codes(Posted(me, form): Posted<CodesForm>) -> Response {
    let raw = form.codes.unwrap_or_else(|| SecretString::from(""));
    let codes: Vec<&str> = raw.expose_secret().split_whitespace().collect();
    let plausible = !codes.is_empty()
        && codes.len() <= 16
        && codes.iter().all(|c| {
            c.len() <= MAX_CODE && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !plausible {
        return bad_form_page(
            StatusCode::BAD_REQUEST,
            &me.csrf,
            "Those are not backup codes. Download them from the page that shows them.",
        );
    }
    let mut text = String::from(
        "echorelay backup codes. Each signs you in once. Keep this file somewhere safe.\n\n",
    );
    for c in codes {
        text.push_str(c);
        text.push('\n');
    }
    let mut r = text.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"echorelay-backup-codes.txt\""),
    );
    secure_headers(h);
    r
}

// --- password --------------------------------------------------------------------

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    current_password: Option<SecretString>,
    #[serde(default)]
    new_password: Option<SecretString>,
    #[serde(default)]
    confirm_password: Option<SecretString>,
}

fn password_view(csrf: &str, email: &str, errors: &Errors) -> Markup {
    page(
        Frame::new("Change your password", errors).signed_in(csrf),
        html! {
            p { "Changing it signs you out of every other session and stops trusting every browser." }
            form method="post" action="/account/password" novalidate {
                (csrf_field(csrf))
                // For password managers: the account the new password is for.
                input type="hidden" name="username" autocomplete="username" value=(email);
                (field(&Field::new("current_password", "Current password", "password", "current-password", MAX_PASSWORD_BYTES), errors))
                (field(&Field::new("new_password", "New password", "password", "new-password", MAX_PASSWORD_BYTES).hint("At least 12 characters, and not easy to guess: several unrelated words work well."), errors))
                (field(&Field::new("confirm_password", "New password again", "password", "new-password", MAX_PASSWORD_BYTES), errors))
                button type="submit" { "Change password" }
            }
        },
    )
}

async fn email_of(state: &AppState, me: &Me) -> Result<String, Response> {
    match state.relay.store().account(me.session.user).await {
        Ok(a) => Ok(a.map(|a| a.email).unwrap_or_default()),
        Err(e) => Err(failed(e.into())),
    }
}

async fn password_page(State(state): State<AppState>, me: Me) -> Response {
    let email = match email_of(&state, &me).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    html(
        StatusCode::OK,
        password_view(&me.csrf, &email, &Errors::none()),
    )
}

/// A password policy refusal, as a sentence.
pub(crate) fn policy_words(e: &echorelay::core::account::password::PasswordError) -> String {
    let s = e.to_string();
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => format!("The new {}{}.", first.to_lowercase(), chars.as_str()),
        None => "The new password is not allowed.".to_owned(),
    }
}

async fn change_password(
    State(state): State<AppState>,
    Posted(me, form): Posted<PasswordForm>,
) -> Response {
    let email = match email_of(&state, &me).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let empty = || SecretString::from("");
    let current = form.current_password.unwrap_or_else(empty);
    let new = form.new_password.unwrap_or_else(empty);
    let again = form.confirm_password.unwrap_or_else(empty);
    let mut errors = Errors::none();
    let too_long = format!("A password has at most {MAX_PASSWORD_BYTES} bytes.");
    if current.expose_secret().is_empty() {
        errors.add("current_password", "Enter your current password.");
    } else if current.expose_secret().len() > MAX_PASSWORD_BYTES {
        errors.add("current_password", too_long.clone());
    }
    let policy = state.relay.accounts().policy();
    if new.expose_secret().is_empty() {
        errors.add("new_password", "Enter a new password.");
    } else if let Err(e) = policy
        .password
        .check_new_password(new.expose_secret(), &[&email, policy.issuer])
    {
        errors.add("new_password", policy_words(&e));
    } else if new.expose_secret() != again.expose_secret() {
        errors.add(
            "confirm_password",
            "The two new passwords differ: type the same one twice.",
        );
    }
    if !errors.is_empty() {
        return html(
            StatusCode::UNPROCESSABLE_ENTITY,
            password_view(&me.csrf, &email, &errors),
        );
    }
    match state
        .relay
        .accounts()
        .change_password(&me.token, current, new, me.ip)
        .await
    {
        Ok(session) => with_cookies(
            see_other("/account?m=password-changed"),
            session_cookies(&session)
                .into_iter()
                .chain([cookies::clear(cookies::DEVICE)]),
        ),
        Err(Error::Unauthenticated) => html(
            StatusCode::UNPROCESSABLE_ENTITY,
            password_view(
                &me.csrf,
                &email,
                &Errors::field(
                    "current_password",
                    "Your current password is not right, or there were too many attempts. Check it and try again; after several failed attempts, wait a few minutes first.",
                ),
            ),
        ),
        Err(Error::Password(e)) => html(
            StatusCode::UNPROCESSABLE_ENTITY,
            password_view(
                &me.csrf,
                &email,
                &Errors::field("new_password", policy_words(&e)),
            ),
        ),
        Err(Error::Store(StoreError::Conflict { .. })) => html(
            StatusCode::CONFLICT,
            password_view(
                &me.csrf,
                &email,
                &Errors::form(
                    "Your password was changed elsewhere meanwhile. Sign in again with the new one.",
                ),
            ),
        ),
        Err(e) => failed(e),
    }
}

// --- sign-out ----------------------------------------------------------------------

async fn sign_out(State(state): State<AppState>, Posted(me, _): Posted<CsrfForm>) -> Response {
    if let Err(e) = state.relay.accounts().logout(&me.token, me.ip).await {
        return failed(e);
    }
    with_cookies(
        see_other("/account/sign-in?m=signed-out"),
        [
            cookies::clear(cookies::SESSION),
            cookies::clear(cookies::CSRF),
        ],
    )
}

async fn sign_out_everywhere(
    State(state): State<AppState>,
    Posted(me, _): Posted<CsrfForm>,
) -> Response {
    if let Err(e) = state
        .relay
        .accounts()
        .logout_everywhere(me.session.user, Some(me.ip))
        .await
    {
        return failed(e);
    }
    with_cookies(
        see_other("/account/sign-in?m=signed-out-everywhere"),
        [
            cookies::clear(cookies::SESSION),
            cookies::clear(cookies::CSRF),
        ],
    )
}

// --- static -------------------------------------------------------------------------

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn print_script() -> Response {
    asset("text/javascript; charset=utf-8", PRINT_JS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every notice a redirect of these pages names (`?m=…`) has its
    /// words, and no two share them; `refused` is told as the sign-in
    /// form's error instead.
    #[test]
    fn every_notice_a_redirect_names_has_its_own_words() {
        let source = include_str!("mod.rs");
        let mut seen = std::collections::BTreeMap::new();
        for (at, _) in source.match_indices("?m=") {
            let key: String = source[at + 3..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                .collect();
            if key.is_empty() || key == "refused" {
                continue;
            }
            let words = notice_text(Some(&key)).unwrap_or_else(|| panic!("no words for ?m={key}"));
            seen.insert(key, words);
        }
        assert!(seen.len() >= 11, "{seen:?}");
        let distinct: std::collections::BTreeSet<_> = seen.values().collect();
        assert_eq!(distinct.len(), seen.len(), "{seen:?}");
        assert_eq!(notice_text(Some("refused")), None);
    }

    #[test]
    fn notices_come_from_a_fixed_list() {
        assert!(notice_text(Some("ended")).is_some());
        assert_eq!(notice_text(Some("<script>alert(1)</script>")), None);
        assert_eq!(notice_text(None), None);
    }

    #[test]
    fn form_tokens_need_the_cookie_and_a_same_site_request() {
        let mut h = HeaderMap::new();
        assert!(!anonymous_ok(&h, Some("x")));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-er_form=abc"),
        );
        let good = form_token("abc");
        assert!(anonymous_ok(&h, Some(&good)));
        assert!(!anonymous_ok(&h, Some(&form_token("abd"))));
        assert!(!anonymous_ok(&h, None));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!anonymous_ok(&h, Some(&good)));
    }

    #[test]
    fn the_qr_code_is_a_named_image_without_its_prologue() {
        let m = view::qr("<?xml version=\"1.0\"?><svg width=\"1\"></svg>").into_string();
        assert!(m.starts_with("<svg role=\"img\" aria-label="), "{m}");
    }

    #[test]
    fn policy_refusals_read_as_sentences() {
        use echorelay::core::account::password::PasswordError;
        assert_eq!(
            policy_words(&PasswordError::TooShort { min: 12 }),
            "The new password must be at least 12 characters long."
        );
    }
}
