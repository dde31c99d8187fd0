//! Account routes: the login steps (password, then TOTP or a backup code,
//! or enrollment for an account without a second factor), step-up,
//! logout, and the caller's sessions, trusted devices and backup codes.
//!
//! Every login step answers the one 401 on any failure (core's opaque
//! `Unauthenticated`); the reason goes to the audit log.

use std::net::IpAddr;
use std::str::FromStr;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use echorelay::core::account::export::{PersonalData, personal_data};
use echorelay::core::account::service::{AccessList, NewSession};
use echorelay::core::audit::UserEventCursor;
use echorelay::core::ids::{DeviceId, SessionId};
use echorelay::core::ports::AccountStore;
use echorelay::prelude::{
    ExposeSecret, LoginComplete, PasswordStep, SecondFactor, SecretString, StepUp,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::SessionAuth;
use crate::client::ClientInfo;
use crate::cookies;
use crate::error::ApiError;
use crate::json::JsonBody;

/// The client's address (every request has one behind the outer layer).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<ClientInfo>()
            .map(|c| ClientIp(c.ip))
            .ok_or_else(ApiError::unauthenticated)
    }
}

/// `POST /v1/auth/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// The account's email.
    pub email: String,
    /// Its password.
    #[schema(value_type = String)]
    pub password: SecretString,
}

/// What a login step leads to.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum LoginAnswer {
    /// Send a TOTP code or a backup code with `challenge` to
    /// `POST /v1/auth/second-factor`.
    SecondFactor {
        /// The challenge token.
        challenge: String,
        /// Its expiry.
        expires_at: DateTime<Utc>,
    },
    /// The account has no second factor yet: `POST /v1/auth/enrollment`.
    Enrollment {
        /// The challenge token.
        challenge: String,
        /// Its expiry.
        expires_at: DateTime<Utc>,
    },
    /// Logged in: the session cookie is set. Repeat `csrf_token` in
    /// `X-CSRF-Token` on every write.
    Authenticated {
        /// The session's CSRF token.
        csrf_token: String,
        /// The session's absolute end.
        expires_at: DateTime<Utc>,
    },
}

/// `POST /v1/auth/login`: the password step.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body = LoginBody,
    responses((status = 200, description = "The next step", body = LoginAnswer), crate::openapi::AuthErrors, crate::openapi::BodyErrors),
    security(())
)]
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Response, ApiError> {
    let device = cookies::get(&headers, cookies::DEVICE);
    let step = state
        .relay
        .accounts()
        .login_password(&body.email, body.password, ip, device)
        .await?;
    Ok(match step {
        PasswordStep::SecondFactorRequired(c) => Json(LoginAnswer::SecondFactor {
            challenge: c.token.expose_secret().to_owned(),
            expires_at: c.expires_at,
        })
        .into_response(),
        PasswordStep::EnrollmentRequired(c) => Json(LoginAnswer::Enrollment {
            challenge: c.token.expose_secret().to_owned(),
            expires_at: c.expires_at,
        })
        .into_response(),
        PasswordStep::Authenticated(session) => logged_in(
            LoginComplete {
                session,
                device: None,
            },
            None,
        ),
    })
}

/// The answer to a completed login: cookies set, the CSRF token in the
/// body (and `extra`, for enrollment's backup codes).
fn logged_in(done: LoginComplete, backup_codes: Option<Vec<String>>) -> Response {
    let token = done.session.token.expose_secret();
    let csrf = cookies::csrf_token(token);
    let answer = Json(LoginAnswer::Authenticated {
        csrf_token: csrf.clone(),
        expires_at: done.session.expires_at,
    });
    let mut response = match backup_codes {
        None => answer.into_response(),
        Some(codes) => Json(Enrolled {
            backup_codes: codes,
            login: answer.0,
        })
        .into_response(),
    };
    let h = response.headers_mut();
    set_session_cookies(h, &done.session, &csrf);
    for cookie in done
        .device
        .as_ref()
        .map(|d| {
            cookies::set(
                cookies::DEVICE,
                d.token.expose_secret(),
                Some(d.expires_at),
                true,
            )
        })
        .into_iter()
        .flatten()
    {
        h.append(header::SET_COOKIE, cookie);
    }
    response
}

/// Sets the session cookie and its CSRF cookie (`csrf`, derived from the
/// session token) on an answer.
fn set_session_cookies(h: &mut HeaderMap, session: &NewSession, csrf: &str) {
    let expires = Some(session.expires_at);
    for cookie in [
        cookies::set(
            cookies::SESSION,
            session.token.expose_secret(),
            expires,
            true,
        ),
        cookies::set(cookies::CSRF, csrf, expires, false),
    ]
    .into_iter()
    .flatten()
    {
        h.append(header::SET_COOKIE, cookie);
    }
}

/// `POST /v1/auth/second-factor`: exactly one of `code` and `backup_code`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorBody {
    /// The challenge from the password step.
    pub challenge: SecretString,
    /// A 6-digit TOTP code.
    #[serde(default)]
    pub code: Option<SecretString>,
    /// A backup code (single use).
    #[serde(default)]
    pub backup_code: Option<SecretString>,
    /// Remember this browser: later logins skip the TOTP step (never the
    /// password) until the device cookie expires.
    #[serde(default)]
    pub trust_device: bool,
}

impl utoipa::PartialSchema for SecondFactorBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        let string = crate::openapi::described_string;
        crate::openapi::exactly_one_of(
            "The challenge from the password step and exactly one of `code` and `backup_code`",
            &[
                ("challenge", string("The challenge from the password step.")),
                (
                    "trust_device",
                    ObjectBuilder::new()
                        .schema_type(Type::Boolean)
                        .description(Some("Remember this browser: later logins skip the TOTP step (never the password) until the device cookie expires."))
                        .build(),
                ),
            ],
            &["challenge"],
            [
                ("code", string("A 6-digit TOTP code.")),
                ("backup_code", string("A backup code (single use).")),
            ],
        )
    }
}

impl ToSchema for SecondFactorBody {}

/// `POST /v1/auth/second-factor`: completes a login.
#[utoipa::path(
    post,
    path = "/v1/auth/second-factor",
    tag = "auth",
    request_body = SecondFactorBody,
    responses((status = 200, description = "Logged in; session cookie set", body = LoginAnswer), crate::openapi::AuthErrors, crate::openapi::BodyErrors),
    security(())
)]
pub async fn second_factor(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<SecondFactorBody>,
) -> Result<Response, ApiError> {
    let factor = match (body.code, body.backup_code) {
        (Some(code), None) => SecondFactor::Totp(code),
        (None, Some(code)) => SecondFactor::BackupCode(code),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "send exactly one of `code` and `backup_code`",
            ));
        }
    };
    let done = state
        .relay
        .accounts()
        .login_second_factor(
            body.challenge.expose_secret(),
            factor,
            ip,
            body.trust_device,
        )
        .await?;
    Ok(logged_in(done, None))
}

/// `POST /v1/auth/enrollment`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentBody {
    /// The challenge from the password step.
    #[schema(value_type = String)]
    pub challenge: SecretString,
}

/// What enrollment shows: scan the QR code or type the secret.
#[derive(Serialize, ToSchema)]
pub struct EnrollmentAnswer {
    /// The `otpauth://` URI.
    pub otpauth_uri: String,
    /// The seed in base32, for typing.
    pub secret: String,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: String,
}

/// `POST /v1/auth/enrollment`: starts TOTP enrollment (no-store: the
/// answer holds the seed).
#[utoipa::path(
    post,
    path = "/v1/auth/enrollment",
    tag = "auth",
    request_body = EnrollmentBody,
    responses((status = 200, description = "The TOTP secret, its URI and QR code", body = EnrollmentAnswer), crate::openapi::AuthErrors, crate::openapi::BodyErrors),
    security(())
)]
pub async fn begin_enrollment(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<EnrollmentBody>,
) -> Result<Json<EnrollmentAnswer>, ApiError> {
    let offer = state
        .relay
        .accounts()
        .begin_enrollment(body.challenge.expose_secret(), ip)
        .await?;
    Ok(Json(EnrollmentAnswer {
        otpauth_uri: offer.otpauth_uri.expose_secret().to_owned(),
        secret: offer.secret_base32.expose_secret().to_owned(),
        qr_svg: offer.qr_svg.to_string(),
    }))
}

/// `POST /v1/auth/enrollment/confirm`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    /// The enrollment's challenge.
    #[schema(value_type = String)]
    pub challenge: SecretString,
    /// A current code from the authenticator.
    #[schema(value_type = String)]
    pub code: SecretString,
    /// Remember this browser.
    #[serde(default)]
    pub trust_device: bool,
}

/// A confirmed enrollment: logged in, with ten backup codes shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct Enrolled {
    /// The backup codes. Only salted hashes are kept.
    pub backup_codes: Vec<String>,
    /// The login it completed (always `authenticated`).
    #[serde(flatten)]
    #[schema(value_type = AuthenticatedAnswer)]
    pub login: LoginAnswer,
}

/// For the OpenAPI document: [`LoginAnswer::Authenticated`] as
/// [`Enrolled`] flattens it (a generated client takes `allOf` of objects
/// only, not of a `oneOf`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AuthenticatedAnswer {
    /// Always `authenticated`.
    #[schema(value_type = String, pattern = "^authenticated$")]
    step: String,
    /// The session's CSRF token.
    csrf_token: String,
    /// The session's absolute end.
    expires_at: DateTime<Utc>,
}

/// `POST /v1/auth/enrollment/confirm`: activates TOTP and logs in.
#[utoipa::path(
    post,
    path = "/v1/auth/enrollment/confirm",
    tag = "auth",
    request_body = ConfirmBody,
    responses((status = 200, description = "Logged in, with backup codes shown once", body = Enrolled), crate::openapi::AuthErrors, crate::openapi::BodyErrors),
    security(())
)]
pub async fn confirm_enrollment(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<ConfirmBody>,
) -> Result<Response, ApiError> {
    let enrolled = state
        .relay
        .accounts()
        .confirm_enrollment(
            body.challenge.expose_secret(),
            &body.code,
            ip,
            body.trust_device,
        )
        .await?;
    let codes = enrolled
        .backup_codes
        .iter()
        .map(|c| c.expose_secret().to_owned())
        .collect();
    Ok(logged_in(enrolled.login, Some(codes)))
}

/// `POST /v1/auth/step-up`: exactly one of `password` and `code`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUpBody {
    /// The account's password.
    #[serde(default)]
    pub password: Option<SecretString>,
    /// A current TOTP code.
    #[serde(default)]
    pub code: Option<SecretString>,
}

impl utoipa::PartialSchema for StepUpBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let string = crate::openapi::described_string;
        crate::openapi::exactly_one_of(
            "Exactly one of `password` and `code`",
            &[],
            &[],
            [
                ("password", string("The account's password.")),
                ("code", string("A current TOTP code.")),
            ],
        )
    }
}

impl ToSchema for StepUpBody {}

/// `POST /v1/auth/step-up`: re-proves the session's owner for the
/// sensitive operations of the next 10 minutes (204). The session is
/// renewed with its privilege (no session fixation across a step-up): the
/// answer sets a new session cookie and a new CSRF cookie, and the old
/// session token stops working.
#[utoipa::path(
    post,
    path = "/v1/auth/step-up",
    tag = "auth",
    request_body = StepUpBody,
    responses((status = 204, description = "Stepped up for 10 minutes; the session is renewed (new session and CSRF cookies set, the old token ends)"), crate::openapi::AuthErrors, crate::openapi::BodyErrors),
    security(("session" = []))
)]
pub async fn step_up(
    State(state): State<AppState>,
    me: SessionAuth,
    JsonBody(body): JsonBody<StepUpBody>,
) -> Result<Response, ApiError> {
    let proof = match (body.password, body.code) {
        (Some(p), None) => StepUp::Password(p),
        (None, Some(c)) => StepUp::Totp(c),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "send exactly one of `password` and `code`",
            ));
        }
    };
    let accounts = state.relay.accounts();
    accounts
        .step_up(me.token.expose_secret(), me.ip, proof)
        .await?;
    let renewed = accounts
        .renew_session(me.token.expose_secret(), me.ip)
        .await?;
    let csrf = cookies::csrf_token(renewed.token.expose_secret());
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_session_cookies(response.headers_mut(), &renewed, &csrf);
    Ok(response)
}

fn cleared(mut response: Response) -> Response {
    let h = response.headers_mut();
    for name in [cookies::SESSION, cookies::CSRF] {
        h.append(header::SET_COOKIE, cookies::clear(name));
    }
    response
}

/// `POST /v1/auth/logout`: ends this session (204).
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    responses((status = 204, description = "Logged out; cookies cleared"), crate::openapi::AuthErrors),
    security(("session" = []))
)]
pub async fn logout(State(state): State<AppState>, me: SessionAuth) -> Result<Response, ApiError> {
    state
        .relay
        .accounts()
        .logout(me.token.expose_secret(), me.ip)
        .await?;
    Ok(cleared(StatusCode::NO_CONTENT.into_response()))
}

/// `POST /v1/auth/logout-everywhere`: ends every session of the account,
/// this one included (204).
#[utoipa::path(
    post,
    path = "/v1/auth/logout-everywhere",
    tag = "auth",
    responses((status = 204, description = "Every session ended"), crate::openapi::AuthErrors),
    security(("session" = []))
)]
pub async fn logout_everywhere(
    State(state): State<AppState>,
    me: SessionAuth,
) -> Result<Response, ApiError> {
    state
        .relay
        .accounts()
        .logout_everywhere(me.session.user, Some(me.ip))
        .await?;
    Ok(cleared(StatusCode::NO_CONTENT.into_response()))
}

/// `GET /v1/me/sessions`: the account's live sessions and trusted devices.
#[utoipa::path(
    get,
    path = "/v1/me/sessions",
    tag = "me",
    responses((status = 200, description = "Sessions and trusted devices", body = AccessList), crate::openapi::AuthErrors),
    security(("session" = []))
)]
pub async fn access_list(
    State(state): State<AppState>,
    me: SessionAuth,
) -> Result<Json<AccessList>, ApiError> {
    Ok(Json(
        state.relay.accounts().access_list(me.session.user).await?,
    ))
}

/// `DELETE /v1/me/sessions/{id}`: ends one of the account's sessions (204).
#[utoipa::path(
    delete,
    path = "/v1/me/sessions/{id}",
    tag = "me",
    params(("id" = SessionId, Path, description = "The session's id")),
    responses((status = 204, description = "Ended"), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound),
    security(("session" = []))
)]
pub async fn end_session(
    State(state): State<AppState>,
    me: SessionAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = SessionId::from_str(&id)
        .map_err(|_| ApiError::bad_request("invalid_id", "not a session id"))?;
    state
        .relay
        .accounts()
        .end_session(me.session.user, id, Some(me.ip))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How many trusted devices were revoked.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    /// The count.
    pub revoked: usize,
}

/// `DELETE /v1/me/devices/{id}`: revokes one trusted device (needs a
/// step-up).
#[utoipa::path(
    delete,
    path = "/v1/me/devices/{id}",
    tag = "me",
    params(("id" = DeviceId, Path, description = "The device's id")),
    responses((status = 200, description = "How many were revoked", body = Revoked), crate::openapi::AuthErrors, crate::openapi::BodyErrors),
    security(("session" = []))
)]
pub async fn revoke_device(
    State(state): State<AppState>,
    me: SessionAuth,
    Path(id): Path<String>,
) -> Result<Json<Revoked>, ApiError> {
    let id = DeviceId::from_str(&id)
        .map_err(|_| ApiError::bad_request("invalid_id", "not a device id"))?;
    let revoked = state
        .relay
        .accounts()
        .revoke_devices(&me.session, Some(id), Some(me.ip))
        .await?;
    Ok(Json(Revoked { revoked }))
}

/// `DELETE /v1/me/devices`: revokes every trusted device (needs a
/// step-up).
#[utoipa::path(
    delete,
    path = "/v1/me/devices",
    tag = "me",
    responses((status = 200, description = "How many were revoked", body = Revoked), crate::openapi::AuthErrors),
    security(("session" = []))
)]
pub async fn revoke_all_devices(
    State(state): State<AppState>,
    me: SessionAuth,
) -> Result<Json<Revoked>, ApiError> {
    let revoked = state
        .relay
        .accounts()
        .revoke_devices(&me.session, None, Some(me.ip))
        .await?;
    Ok(Json(Revoked { revoked }))
}

/// `POST /v1/me/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    /// The password in use now.
    #[schema(value_type = String)]
    pub current_password: SecretString,
    /// The new one: at least 12 characters and not easy to guess (the
    /// password policy; a refusal says which rule failed).
    #[schema(value_type = String)]
    pub new_password: SecretString,
}

/// A changed password: this session goes on under a new token.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordChanged {
    /// The renewed session's CSRF token (the CSRF cookie is set too).
    pub csrf_token: String,
    /// The session's absolute end (unchanged).
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/me/password`: changes the caller's password after checking
/// the current one (throttled like a login). Every other session of the
/// account and every trusted device ends; this session is renewed (new
/// session and CSRF cookies, the trusted-device cookie cleared). A new
/// password the policy refuses is 422 `invalid` with the rule it failed;
/// a wrong current password (or too many attempts) is 403
/// `current_password`.
#[utoipa::path(
    post,
    path = "/v1/me/password",
    tag = "me",
    request_body = PasswordBody,
    responses(
        (status = 200, description = "Changed; every other session and trusted device ended, this session renewed", body = PasswordChanged),
        crate::openapi::AuthErrors,
        crate::openapi::BodyErrors,
        (status = 409, description = "The password changed meanwhile", body = crate::openapi::ErrorBody)
    ),
    security(("session" = []))
)]
pub async fn change_password(
    State(state): State<AppState>,
    me: SessionAuth,
    JsonBody(body): JsonBody<PasswordBody>,
) -> Result<Response, ApiError> {
    let accounts = state.relay.accounts();
    // The policy first: a refused new password is said so even before
    // the current one is checked (it tells nothing about the account).
    let email = state
        .relay
        .store()
        .account(me.session.user)
        .await
        .map_err(echorelay::Error::from)?
        .map(|a| a.email)
        .unwrap_or_default();
    let policy = accounts.policy();
    policy
        .password
        .check_new_password(body.new_password.expose_secret(), &[&email, policy.issuer])
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                crate::pages::policy_words(&e),
            )
        })?;
    let session = match accounts
        .change_password(
            me.token.expose_secret(),
            body.current_password,
            body.new_password,
            me.ip,
        )
        .await
    {
        Ok(s) => s,
        Err(echorelay::Error::Unauthenticated) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "current_password",
                "the current password is not right, or there were too many attempts: check it and retry in a few minutes",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let csrf = cookies::csrf_token(session.token.expose_secret());
    let mut response = Json(PasswordChanged {
        csrf_token: csrf.clone(),
        expires_at: session.expires_at,
    })
    .into_response();
    let h = response.headers_mut();
    set_session_cookies(h, &session, &csrf);
    h.append(header::SET_COOKIE, cookies::clear(cookies::DEVICE));
    Ok(response)
}

/// New backup codes, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupCodes {
    /// Ten codes; the old ones stop working.
    pub backup_codes: Vec<String>,
}

/// `POST /v1/me/backup-codes`: replaces the backup codes (needs a
/// step-up).
#[utoipa::path(
    post,
    path = "/v1/me/backup-codes",
    tag = "me",
    responses((status = 200, description = "Ten new codes, once", body = BackupCodes), crate::openapi::AuthErrors),
    security(("session" = []))
)]
pub async fn regenerate_backup_codes(
    State(state): State<AppState>,
    me: SessionAuth,
) -> Result<Json<BackupCodes>, ApiError> {
    let codes = state
        .relay
        .accounts()
        .regenerate_backup_codes(me.token.expose_secret(), me.ip)
        .await?;
    Ok(Json(BackupCodes {
        backup_codes: codes.iter().map(|c| c.expose_secret().to_owned()).collect(),
    }))
}

/// `GET /v1/me/export` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// The document after this cursor: the `next_after` of the one
    /// before (docs/FORMATS.md §3.4). Absent: the first document.
    #[serde(default)]
    pub after: Option<UserEventCursor>,
}

/// `GET /v1/me/export?after=`: the caller's GDPR Article 15 export (the
/// format `echorelay.personal-data.v2`, `docs/FORMATS.md` §3.4): account,
/// memberships, sessions, devices and the audit events about them; no
/// credential of any kind. The events are paged: at most 1000 per
/// document, and `next_after` names the next document's cursor until the
/// last one (each document repeats the account, memberships and access
/// list as they are then).
#[utoipa::path(
    get,
    path = "/v1/me/export",
    tag = "me",
    params(ExportQuery),
    responses((status = 200, description = "One document of the GDPR Article 15 export (format echorelay.personal-data.v2): at most 1000 audit events, next_after until the last", body = PersonalData), crate::openapi::AuthErrors, crate::openapi::QueryErrors),
    security(("session" = []))
)]
pub async fn export(
    State(state): State<AppState>,
    me: SessionAuth,
    query: Result<Query<ExportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            "after is a cursor as next_after gives it (<at>.<chain>.<seq>)",
        )
    })?;
    let relay = &state.relay;
    let user = me.session.user;
    let access = relay.accounts().access_list(user).await?;
    let data = personal_data(
        relay.store().as_ref(),
        access,
        user,
        relay.clock().now(),
        q.after,
    )
    .await?;
    let mut response = Json(data).into_response();
    response.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        header::HeaderValue::from_static("attachment; filename=\"echorelay-personal-data.json\""),
    );
    Ok(response)
}
