//! The REST API's handlers. Each project-scoped handler takes an
//! [`Authorized`] grant of the surface it needs and calls one core service
//! method with it; nothing here decides who may do what.

use std::str::FromStr;

use axum::Extension;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use echorelay::core::StoreError;
use echorelay::core::audit::{
    self, Actor, BillingEvent, BillingKind, ChainHead, Currency, PageStatus,
};
use echorelay::core::config::{
    DEFAULT_SIGNING_GRACE, Endpoint, Line, LineView, SigningRotation, Slug, TargetView,
};
use echorelay::core::ids::{EndpointId, KeyId, LineId, TargetId};
use echorelay::core::keys::{KeyView, PolicyError};
use echorelay::core::ports::MAX_LIST_PAGE;
use echorelay::prelude::{
    AuditEvent, AuditRead, AuthInput, Billing, ConfigRead, ConfigWrite, Environment, ExposeSecret,
    Grant, Keys, Members, MintRequest, MintedKey, NewTarget, Role, RotateOptions, SecretString,
    TargetPatch, UserId,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Authenticated, Authorized, bearer};
use crate::client::ClientInfo;
use crate::error::ApiError;
use crate::json::JsonBody;

/// `GET /v1/projects/{slug}/lines`: the project's lines with their
/// endpoints and targets, every secret masked. One answer, not paged: it
/// is bounded, since a project holds at most 10000 lines, endpoints and
/// targets together (creating one more is 409 `limit_reached`).
#[utoipa::path(
    get,
    path = "/v1/projects/{slug}/lines",
    tag = "config",
    params(("slug" = Slug, Path, description = "The project's slug")),
    responses((status = 200, description = "Lines, endpoints and targets, secrets masked: the whole tree (at most 10000 entities)", body = LinesAnswer), crate::openapi::AuthErrors),
    security(("api_key" = []), ("session" = []))
)]
pub async fn lines(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigRead>,
) -> Result<Json<LinesAnswer>, ApiError> {
    let lines = state.relay.config().lines(&grant).await?;
    Ok(Json(LinesAnswer { lines }))
}

/// The answer of [`lines`].
#[derive(Debug, Serialize, ToSchema)]
pub struct LinesAnswer {
    /// Lines, endpoints and masked targets.
    pub lines: Vec<LineView>,
}

/// The query of the listings paged by id ([`list_keys`], [`members`]):
/// `after` (exclusive) and `limit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeysQuery {
    /// The page after this key id (exclusive): the `next_after` of the
    /// page before. Absent: from the first.
    #[serde(default)]
    pub after: Option<KeyId>,
    /// Page size, 1 to 500 (default 100).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: usize,
}

/// A listing's `limit` as the document states it: 1 to 500, else 400
/// `invalid_query` (nothing is clamped silently).
fn list_limit(limit: usize) -> Result<usize, ApiError> {
    if (1..=MAX_LIST_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request("invalid_query", "limit is 1 to 500"))
    }
}

/// The `next_after` of a page of `limit`: its last id when the page is
/// full (there may be more), else `None` (this was the last page).
fn next_after<T, I: Copy>(page: &[T], limit: usize, id: impl Fn(&T) -> I) -> Option<I> {
    (page.len() == limit).then(|| page.last().map(id)).flatten()
}

/// `GET /v1/projects/{slug}/keys?after=&limit=`: the project's keys
/// (hints only), paged by id.
#[utoipa::path(
    get,
    path = "/v1/projects/{slug}/keys",
    tag = "keys",
    params(("slug" = Slug, Path, description = "The project's slug"), KeysQuery),
    responses((status = 200, description = "A page of keys (hints, never a key), by id", body = KeysAnswer), crate::openapi::AuthErrors, crate::openapi::QueryErrors),
    security(("api_key" = []), ("session" = []))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    Authorized(grant): Authorized<Keys>,
    query: Result<Query<KeysQuery>, QueryRejection>,
) -> Result<Json<KeysAnswer>, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            "after is a key id (key_ and 32 hex digits), limit a number",
        )
    })?;
    let limit = list_limit(q.limit)?;
    let keys = state.relay.keys().list_page(&grant, q.after, limit).await?;
    let next_after = next_after(&keys, limit, |k| k.id);
    Ok(Json(KeysAnswer { keys, next_after }))
}

/// The answer of [`list_keys`].
#[derive(Debug, Serialize, ToSchema)]
pub struct KeysAnswer {
    /// A page of the project's keys, ascending by id.
    pub keys: Vec<KeyView>,
    /// The `after` of the next page: the last id when this page is full;
    /// `null` when this was the last page.
    pub next_after: Option<KeyId>,
}

/// The body of [`mint_key`].
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintBody {
    /// `live` or `test`.
    pub environment: Environment,
    /// `viewer`, `editor` or `owner`: at most the minter's own role.
    pub role: Role,
    /// A label for listings (at most 100 characters, no control
    /// characters).
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub label: String,
}

/// A new key: its listing and, in this one answer only, its plaintext.
#[derive(Debug, Serialize, ToSchema)]
pub struct MintedAnswer {
    /// The key as listed.
    pub key: KeyView,
    /// The key itself. Shown once: store it now.
    pub plaintext: String,
}

impl From<MintedKey> for MintedAnswer {
    fn from(m: MintedKey) -> Self {
        Self {
            plaintext: m.plaintext.expose_secret().to_owned(),
            key: m.view,
        }
    }
}

/// `POST /v1/projects/{slug}/keys`: mints a key (201, plaintext once).
///
/// A session must have stepped up (403 `reauthentication_required`
/// otherwise), as for a reveal: the answer is a credential that outlives
/// the session, a logout everywhere and the minter's membership alike
/// (see [`remove_member`]), so a stolen session cookie past its step-up
/// window must not be able to make one. An API key (with the keys
/// surface) mints without one: it has no second factor to re-prove, and
/// a key minted by a key is revoked with it.
#[utoipa::path(
    post,
    path = "/v1/projects/{slug}/keys",
    tag = "keys",
    params(("slug" = Slug, Path, description = "The project's slug")),
    request_body = MintBody,
    responses((status = 201, description = "The new key; its plaintext only here", body = MintedAnswer), crate::openapi::AuthErrors, crate::openapi::BodyErrors),
    security(("api_key" = []), ("session" = []))
)]
pub async fn mint_key(
    State(state): State<AppState>,
    Authorized(grant): Authorized<Keys>,
    JsonBody(body): JsonBody<MintBody>,
) -> Result<Response, ApiError> {
    grant.require_step_up()?;
    let minted = state
        .relay
        .keys()
        .mint(
            &grant,
            MintRequest {
                environment: body.environment,
                role: body.role,
                label: body.label,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(MintedAnswer::from(minted))).into_response())
}

/// The body of [`rotate_key`]: `{}` takes the project policy's overlap
/// and grace.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Seconds the old key stays valid beside its successor: shorter than
    /// the project's cadence (409 otherwise), which is at most 3650 days.
    #[serde(default, deserialize_with = "crate::json::integer::optional")]
    #[schema(minimum = 0, maximum = 315_359_999)]
    pub overlap_seconds: Option<i64>,
    /// Seconds of grace after the overlap: shorter than the project's
    /// cadence (409 otherwise).
    #[serde(default, deserialize_with = "crate::json::integer::optional")]
    #[schema(minimum = 0, maximum = 315_359_999)]
    pub grace_seconds: Option<i64>,
}

/// The longest overlap or grace any policy allows: just under the longest
/// cadence (3650 days).
const MAX_ROTATION_SECONDS: i64 = 3650 * 86_400 - 1;

/// A duration in seconds within what the document states (0 to just under
/// 3650 days; 400 otherwise).
fn seconds(s: Option<i64>) -> Result<Option<Duration>, ApiError> {
    s.map(|s| {
        (0..=MAX_ROTATION_SECONDS)
            .contains(&s)
            .then(|| Duration::try_seconds(s))
            .flatten()
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_field",
                    "overlap_seconds and grace_seconds are 0 to 315359999",
                )
            })
    })
    .transpose()
}

fn key_id(text: &str) -> Result<KeyId, ApiError> {
    KeyId::from_str(text).map_err(|_| ApiError::bad_request("invalid_id", "not a key id"))
}

/// `POST /v1/projects/{slug}/keys/{key_id}/rotate`: an operator rotation
/// (201, the successor's plaintext once). A session must have stepped up
/// (403 `reauthentication_required` otherwise): the successor is a new
/// credential, as for [`mint_key`]; an API key rotates without one.
#[utoipa::path(
    post,
    path = "/v1/projects/{slug}/keys/{key_id}/rotate",
    tag = "keys",
    params(("slug" = Slug, Path, description = "The project's slug"), ("key_id" = KeyId, Path, description = "The key's id")),
    request_body = RotateBody,
    responses((status = 201, description = "The successor; its plaintext only here", body = MintedAnswer), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound, crate::openapi::Conflict),
    security(("api_key" = []), ("session" = []))
)]
pub async fn rotate_key(
    State(state): State<AppState>,
    Authorized(grant): Authorized<Keys>,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<RotateBody>,
) -> Result<Response, ApiError> {
    grant.require_step_up()?;
    let opts = RotateOptions {
        overlap: seconds(body.overlap_seconds)?,
        grace: seconds(body.grace_seconds)?,
    };
    let id = key_id(&id)?;
    let minted = match state.relay.keys().rotate(&grant, id, opts).await {
        // Within what any policy allows, but not shorter than this
        // project's cadence: a conflict with its stored policy.
        Err(echorelay::Error::Policy(e @ (PolicyError::Overlap | PolicyError::Grace))) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                e.to_string(),
            ));
        }
        other => other?,
    };
    Ok((StatusCode::CREATED, Json(MintedAnswer::from(minted))).into_response())
}

/// `DELETE /v1/projects/{slug}/keys/{key_id}`: revokes the key and what
/// hangs off it (204). From the moment this answers, the key fails.
#[utoipa::path(
    delete,
    path = "/v1/projects/{slug}/keys/{key_id}",
    tag = "keys",
    params(("slug" = Slug, Path, description = "The project's slug"), ("key_id" = KeyId, Path, description = "The key's id")),
    responses((status = 204, description = "Revoked: the next request with it fails"), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound, crate::openapi::Conflict),
    security(("api_key" = []), ("session" = []))
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    Authorized(grant): Authorized<Keys>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.relay.keys().revoke(&grant, key_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The successor a key collected.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuccessorAnswer {
    /// The successor key. Shown once: store it now.
    pub plaintext: String,
}

/// `POST /v1/keys/successor`: a key in its overlap or grace collects its
/// auto-rotated successor, once (any role; 404 when there is none to
/// collect). Only an API key presents itself here (`Authorization:
/// Bearer`, never a session cookie), so there is no step-up to ask for:
/// whoever holds the key already holds the credential the successor
/// replaces.
#[utoipa::path(
    post,
    path = "/v1/keys/successor",
    tag = "keys",
    responses((status = 200, description = "The presenting key's auto-rotated successor, once", body = SuccessorAnswer), crate::openapi::AuthErrors, crate::openapi::NotFound),
    security(("api_key" = []))
)]
pub async fn collect_successor(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<SuccessorAnswer>, ApiError> {
    // The outer layer put the client in; without it, no guess.
    let ip = req
        .extensions()
        .get::<ClientInfo>()
        .map(|c| c.ip)
        .ok_or_else(ApiError::unauthenticated)?;
    let token = bearer(req.headers()).ok_or_else(ApiError::unauthenticated)?;
    let successor = state
        .relay
        .keys()
        .collect_successor(token, Some(ip))
        .await?;
    Ok(Json(SuccessorAnswer {
        plaintext: successor.expose_secret().to_owned(),
    }))
}

/// Parses a path id of type `T` (400 `invalid_id` otherwise).
pub(crate) fn path_id<T: FromStr>(text: &str, kind: &'static str) -> Result<T, ApiError> {
    T::from_str(text).map_err(|_| ApiError::bad_request("invalid_id", format!("not a {kind} id")))
}

/// `POST /v1/projects/{slug}/keys/{key_id}/reveal`: an auto-rotated
/// successor's plaintext, once (owners who stepped up).
#[utoipa::path(
    post,
    path = "/v1/projects/{slug}/keys/{key_id}/reveal",
    tag = "keys",
    params(("slug" = Slug, Path, description = "The project's slug"), ("key_id" = KeyId, Path, description = "The key's id")),
    responses((status = 200, description = "The successor, once", body = SuccessorAnswer), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound),
    security(("api_key" = []), ("session" = []))
)]
pub async fn reveal_key(
    State(state): State<AppState>,
    Authorized(grant): Authorized<Keys>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<SuccessorAnswer>, ApiError> {
    let key = state.relay.keys().reveal(&grant, key_id(&id)?).await?;
    Ok(Json(SuccessorAnswer {
        plaintext: key.expose_secret().to_owned(),
    }))
}

/// A name, for lines and endpoints.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    /// The name (1–200 characters, no control characters).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
}

/// `POST /v1/projects/{slug}/lines`: a new line (201; 409
/// `limit_reached` when the project already holds 10000 lines, endpoints
/// and targets).
#[utoipa::path(
    post,
    path = "/v1/projects/{slug}/lines",
    tag = "config",
    params(("slug" = Slug, Path, description = "The project's slug")),
    request_body = NameBody,
    responses((status = 201, description = "The new line", body = Line), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::TreeFull),
    security(("api_key" = []), ("session" = []))
)]
pub async fn create_line(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigWrite>,
    JsonBody(body): JsonBody<NameBody>,
) -> Result<Response, ApiError> {
    let line = state.relay.config().create_line(&grant, &body.name).await?;
    Ok((StatusCode::CREATED, Json(line)).into_response())
}

/// `PATCH /v1/projects/{slug}/lines/{line_id}`: renames a line.
#[utoipa::path(
    patch,
    path = "/v1/projects/{slug}/lines/{line_id}",
    tag = "config",
    params(("slug" = Slug, Path, description = "The project's slug"), ("line_id" = LineId, Path, description = "The line's id")),
    request_body = NameBody,
    responses((status = 200, description = "The renamed line", body = Line), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound, crate::openapi::Conflict),
    security(("api_key" = []), ("session" = []))
)]
pub async fn rename_line(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigWrite>,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<NameBody>,
) -> Result<Json<Line>, ApiError> {
    let id: LineId = path_id(&id, "line")?;
    Ok(Json(
        state
            .relay
            .config()
            .rename_line(&grant, id, &body.name)
            .await?,
    ))
}

/// `DELETE /v1/projects/{slug}/lines/{line_id}`: the line with its
/// endpoints and targets (204).
#[utoipa::path(
    delete,
    path = "/v1/projects/{slug}/lines/{line_id}",
    tag = "config",
    params(("slug" = Slug, Path, description = "The project's slug"), ("line_id" = LineId, Path, description = "The line's id")),
    responses((status = 204, description = "Deleted, with its endpoints and targets"), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound),
    security(("api_key" = []), ("session" = []))
)]
pub async fn delete_line(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigWrite>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .relay
        .config()
        .delete_line(&grant, path_id(&id, "line")?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/projects/{slug}/lines/{line_id}/endpoints`: a new inbound
/// endpoint (201; 409 `limit_reached` at the tree cap, as for
/// [`create_line`]).
#[utoipa::path(
    post,
    path = "/v1/projects/{slug}/lines/{line_id}/endpoints",
    tag = "config",
    params(("slug" = Slug, Path, description = "The project's slug"), ("line_id" = LineId, Path, description = "The line's id")),
    request_body = NameBody,
    responses((status = 201, description = "The new endpoint", body = Endpoint), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound, crate::openapi::TreeFull),
    security(("api_key" = []), ("session" = []))
)]
pub async fn create_endpoint(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigWrite>,
    Path((_, line)): Path<(String, String)>,
    JsonBody(body): JsonBody<NameBody>,
) -> Result<Response, ApiError> {
    let line: LineId = path_id(&line, "line")?;
    let ep = state
        .relay
        .config()
        .create_endpoint(&grant, line, &body.name)
        .await?;
    Ok((StatusCode::CREATED, Json(ep)).into_response())
}

/// `DELETE /v1/projects/{slug}/endpoints/{endpoint_id}` (204).
#[utoipa::path(
    delete,
    path = "/v1/projects/{slug}/endpoints/{endpoint_id}",
    tag = "config",
    params(("slug" = Slug, Path, description = "The project's slug"), ("endpoint_id" = EndpointId, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Deleted"), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound),
    security(("api_key" = []), ("session" = []))
)]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigWrite>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id: EndpointId = path_id(&id, "endpoint")?;
    state.relay.config().delete_endpoint(&grant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A target's outbound auth as sent: secrets in, never out.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthBody {
    /// No auth. (A struct variant: serde refuses unknown fields beside
    /// the tag only for those.)
    None {},
    /// `Authorization: Bearer TOKEN` on deliveries.
    Bearer {
        /// The token (sealed at once; read back masked): 1–4096
        /// characters, no control characters.
        #[schema(value_type = String, min_length = 1, max_length = 4096, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
        token: SecretString,
    },
    /// Basic auth on deliveries.
    Basic {
        /// Username: 1–200 characters, no `:` and no control characters.
        #[schema(
            min_length = 1,
            max_length = 200,
            pattern = r"^[^:\u0000-\u001f\u007f-\u009f]*$"
        )]
        username: String,
        /// Password (sealed at once; read back as `••••`): 1–4096
        /// characters, no control characters.
        #[schema(value_type = String, min_length = 1, max_length = 4096, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
        password: SecretString,
    },
}

impl From<AuthBody> for AuthInput {
    fn from(a: AuthBody) -> Self {
        match a {
            AuthBody::None {} => AuthInput::None,
            AuthBody::Bearer { token } => AuthInput::Bearer(token),
            AuthBody::Basic { username, password } => AuthInput::Basic { username, password },
        }
    }
}

/// `POST /v1/projects/{slug}/lines/{line_id}/targets`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetBody {
    /// Name (1–200 characters, no control characters).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    /// Where deliveries go: `https://` (or `http://`), at most 2048
    /// printable ASCII characters, no credentials in the host part.
    #[schema(
        max_length = 2048,
        pattern = r"^https?://[\x21\x22\x24-\x2e\x30-\x3e\x41-\x7e]+([/?#][\x21-\x7e]*)?$"
    )]
    pub url: String,
    /// Outbound auth.
    pub auth: AuthBody,
    /// The signing secret (1–4096 characters, no control characters);
    /// generated (`whsec_…`) when left out.
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 4096, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub signing_secret: Option<SecretString>,
}

/// A new target: masked, plus its signing secret once (to give to the
/// receiver).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTargetAnswer {
    /// The target as read (secrets masked).
    pub target: TargetView,
    /// The signing secret. Shown once.
    pub signing_secret: String,
}

/// `POST /v1/projects/{slug}/lines/{line_id}/targets`: a new target (201;
/// 409 `limit_reached` at the tree cap, as for [`create_line`]).
#[utoipa::path(
    post,
    path = "/v1/projects/{slug}/lines/{line_id}/targets",
    tag = "config",
    params(("slug" = Slug, Path, description = "The project's slug"), ("line_id" = LineId, Path, description = "The line's id")),
    request_body = TargetBody,
    responses((status = 201, description = "The masked target and its signing secret, once", body = CreatedTargetAnswer), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound, crate::openapi::TreeFull),
    security(("api_key" = []), ("session" = []))
)]
pub async fn create_target(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigWrite>,
    Path((_, line)): Path<(String, String)>,
    JsonBody(body): JsonBody<TargetBody>,
) -> Result<Response, ApiError> {
    let line: LineId = path_id(&line, "line")?;
    let created = state
        .relay
        .config()
        .create_target(
            &grant,
            line,
            NewTarget {
                name: body.name,
                url: body.url,
                auth: body.auth.into(),
                signing_secret: body.signing_secret,
            },
        )
        .await?;
    let answer = CreatedTargetAnswer {
        target: created.view,
        signing_secret: created.signing_secret.expose_secret().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `PATCH /v1/projects/{slug}/targets/{target_id}`: fields left out stay.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetPatchBody {
    /// New name (as for a new target).
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: Option<String>,
    /// New URL (as for a new target).
    #[serde(default)]
    #[schema(
        max_length = 2048,
        pattern = r"^https?://[\x21\x22\x24-\x2e\x30-\x3e\x41-\x7e]+([/?#][\x21-\x7e]*)?$"
    )]
    pub url: Option<String>,
    /// New auth.
    #[serde(default)]
    pub auth: Option<AuthBody>,
    /// New signing secret (as for a new target).
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 4096, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub signing_secret: Option<SecretString>,
}

/// `GET /v1/projects/{slug}/targets/{target_id}`: one target, masked.
#[utoipa::path(
    get,
    path = "/v1/projects/{slug}/targets/{target_id}",
    tag = "config",
    params(("slug" = Slug, Path, description = "The project's slug"), ("target_id" = TargetId, Path, description = "The target's id")),
    responses((status = 200, description = "The target, secrets masked", body = TargetView), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound),
    security(("api_key" = []), ("session" = []))
)]
pub async fn get_target(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigRead>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<TargetView>, ApiError> {
    let id: TargetId = path_id(&id, "target")?;
    Ok(Json(state.relay.config().target(&grant, id).await?))
}

/// `PATCH /v1/projects/{slug}/targets/{target_id}`.
#[utoipa::path(
    patch,
    path = "/v1/projects/{slug}/targets/{target_id}",
    tag = "config",
    params(("slug" = Slug, Path, description = "The project's slug"), ("target_id" = TargetId, Path, description = "The target's id")),
    request_body = TargetPatchBody,
    responses((status = 200, description = "The updated target, masked", body = TargetView), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound, crate::openapi::Conflict),
    security(("api_key" = []), ("session" = []))
)]
pub async fn update_target(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigWrite>,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<TargetPatchBody>,
) -> Result<Json<TargetView>, ApiError> {
    let id: TargetId = path_id(&id, "target")?;
    let patch = TargetPatch {
        name: body.name,
        url: body.url,
        auth: body.auth.map(Into::into),
        signing_secret: body.signing_secret,
    };
    Ok(Json(
        state
            .relay
            .config()
            .update_target(&grant, id, patch)
            .await?,
    ))
}

/// `POST /v1/projects/{slug}/targets/{target_id}/signing-secret/rotate`:
/// both fields may be left out (`{}`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSigningSecretBody {
    /// How long the current secret keeps signing beside the new one, in
    /// seconds (0 to 604800, 7 days; default 86400, 24 hours). 0 ends it
    /// at once.
    #[serde(default, deserialize_with = "crate::json::integer::optional")]
    #[schema(minimum = 0, maximum = 604800)]
    pub grace_secs: Option<i64>,
    /// The new signing secret (as for a new target); generated
    /// (`whsec_…`) when left out.
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 4096, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub signing_secret: Option<SecretString>,
}

/// A rotated signing secret: the target, masked (the retired secrets
/// listed with the end of their grace), and the new secret once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSigningSecretAnswer {
    /// The target as read (secrets masked).
    pub target: TargetView,
    /// The new signing secret. Shown once.
    pub signing_secret: String,
}

/// `POST /v1/projects/{slug}/targets/{target_id}/signing-secret/rotate`:
/// the new secret signs from now on; the one it replaces keeps signing
/// beside it through the grace (every delivery carries a signature per
/// active secret). At most 10 retired secrets are kept. A session must
/// have stepped up.
#[utoipa::path(
    post,
    path = "/v1/projects/{slug}/targets/{target_id}/signing-secret/rotate",
    tag = "config",
    params(("slug" = Slug, Path, description = "The project's slug"), ("target_id" = TargetId, Path, description = "The target's id")),
    request_body = RotateSigningSecretBody,
    responses((status = 200, description = "The masked target and its new signing secret, once", body = RotatedSigningSecretAnswer), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound, crate::openapi::Conflict),
    security(("api_key" = []), ("session" = []))
)]
pub async fn rotate_signing_secret(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigWrite>,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<RotateSigningSecretBody>,
) -> Result<Json<RotatedSigningSecretAnswer>, ApiError> {
    let id: TargetId = path_id(&id, "target")?;
    let rotation = SigningRotation {
        grace: match body.grace_secs {
            None => DEFAULT_SIGNING_GRACE,
            Some(s) => (0..=604_800)
                .contains(&s)
                .then(|| Duration::seconds(s))
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_field", "grace_secs is 0 to 604800")
                })?,
        },
        signing_secret: body.signing_secret,
    };
    let rotated = state
        .relay
        .config()
        .rotate_signing_secret(&grant, id, rotation)
        .await?;
    Ok(Json(RotatedSigningSecretAnswer {
        target: rotated.view,
        signing_secret: rotated.signing_secret.expose_secret().to_owned(),
    }))
}

/// `DELETE /v1/projects/{slug}/targets/{target_id}` (204).
#[utoipa::path(
    delete,
    path = "/v1/projects/{slug}/targets/{target_id}",
    tag = "config",
    params(("slug" = Slug, Path, description = "The project's slug"), ("target_id" = TargetId, Path, description = "The target's id")),
    responses((status = 204, description = "Deleted"), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound),
    security(("api_key" = []), ("session" = []))
)]
pub async fn delete_target(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigWrite>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id: TargetId = path_id(&id, "target")?;
    state.relay.config().delete_target(&grant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/projects/{slug}/billing`, by `kind`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BillingBody {
    /// Credits bought.
    CreditPurchase {
        /// Amount in minor units, positive.
        #[schema(minimum = 1)]
        #[serde(deserialize_with = "crate::json::integer::required")]
        amount_minor: i64,
        /// ISO 4217 code, e.g. `EUR`.
        #[schema(pattern = "^[A-Z]{3}$")]
        currency: String,
        /// The payment provider's reference (1–200 characters, no
        /// control characters).
        #[serde(default)]
        #[schema(
            min_length = 1,
            max_length = 200,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )]
        reference: Option<String>,
    },
    /// Money returned.
    Refund {
        /// Amount in minor units, positive.
        #[schema(minimum = 1)]
        #[serde(deserialize_with = "crate::json::integer::required")]
        amount_minor: i64,
        /// ISO 4217 code, e.g. `EUR`.
        #[schema(pattern = "^[A-Z]{3}$")]
        currency: String,
        /// The payment provider's reference (1–200 characters, no
        /// control characters).
        #[serde(default)]
        #[schema(
            min_length = 1,
            max_length = 200,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )]
        reference: Option<String>,
    },
    /// A manual balance adjustment (may be negative, never zero).
    BalanceAdjustment {
        /// Amount in minor units, non-zero (negative: a debit).
        #[schema(schema_with = crate::openapi::nonzero_amount)]
        #[serde(deserialize_with = "crate::json::integer::required")]
        amount_minor: i64,
        /// ISO 4217 code, e.g. `EUR`.
        #[schema(pattern = "^[A-Z]{3}$")]
        currency: String,
        /// The payment provider's reference (1–200 characters, no
        /// control characters).
        #[serde(default)]
        #[schema(
            min_length = 1,
            max_length = 200,
            pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"
        )]
        reference: Option<String>,
    },
}

/// `POST /v1/projects/{slug}/billing`: records a billing event in the
/// project's audit chain (201, the sealed event).
#[utoipa::path(
    post,
    path = "/v1/projects/{slug}/billing",
    tag = "project",
    params(("slug" = Slug, Path, description = "The project's slug")),
    request_body = BillingBody,
    responses((status = 201, description = "The sealed audit event", body = AuditEvent), crate::openapi::AuthErrors, crate::openapi::BodyErrors),
    security(("api_key" = []), ("session" = []))
)]
pub async fn record_billing(
    State(state): State<AppState>,
    Authorized(grant): Authorized<Billing>,
    JsonBody(body): JsonBody<BillingBody>,
) -> Result<Response, ApiError> {
    let (kind, amount_minor, currency, reference) = match body {
        BillingBody::CreditPurchase {
            amount_minor,
            currency,
            reference,
        } => (
            BillingKind::CreditPurchase,
            amount_minor,
            currency,
            reference,
        ),
        BillingBody::Refund {
            amount_minor,
            currency,
            reference,
        } => (BillingKind::Refund, amount_minor, currency, reference),
        BillingBody::BalanceAdjustment {
            amount_minor,
            currency,
            reference,
        } => (
            BillingKind::BalanceAdjustment,
            amount_minor,
            currency,
            reference,
        ),
    };
    let event = BillingEvent {
        kind,
        amount_minor,
        currency: Currency::parse(&currency)?,
        reference,
    };
    let relay = &state.relay;
    let sealed = audit::record_billing(
        relay.store().as_ref(),
        relay.clock().as_ref(),
        &grant,
        event,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(sealed)).into_response())
}

/// A member and their role.
#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    /// The account.
    #[schema(value_type = String)]
    pub user: UserId,
    /// Its role.
    pub role: Role,
}

/// `GET /v1/projects/{slug}/members` query: `after` (exclusive) and
/// `limit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MembersQuery {
    /// The page after this user id (exclusive): the `next_after` of the
    /// page before. Absent: from the first.
    #[serde(default)]
    pub after: Option<UserId>,
    /// Page size, 1 to 500 (default 100).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: usize,
}

/// The answer of [`members`].
#[derive(Debug, Serialize, ToSchema)]
pub struct MembersAnswer {
    /// A page of the project's members, ascending by user id.
    pub members: Vec<Member>,
    /// The `after` of the next page: the last user id when this page is
    /// full; `null` when this was the last page.
    pub next_after: Option<UserId>,
}

/// `GET /v1/projects/{slug}/members?after=&limit=` (owners): members and
/// roles, paged by user id.
#[utoipa::path(
    get,
    path = "/v1/projects/{slug}/members",
    tag = "project",
    params(("slug" = Slug, Path, description = "The project's slug"), MembersQuery),
    responses((status = 200, description = "A page of members and roles, by user id", body = MembersAnswer), crate::openapi::AuthErrors, crate::openapi::QueryErrors),
    security(("session" = []))
)]
pub async fn members(
    State(state): State<AppState>,
    Authorized(grant): Authorized<Members>,
    query: Result<Query<MembersQuery>, QueryRejection>,
) -> Result<Json<MembersAnswer>, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            "after is a user id (usr_ and 32 hex digits), limit a number",
        )
    })?;
    let limit = list_limit(q.limit)?;
    let page = state
        .relay
        .config()
        .members_page(&grant, q.after, limit)
        .await?;
    let next_after = next_after(&page, limit, |(user, _)| *user);
    Ok(Json(MembersAnswer {
        members: page
            .into_iter()
            .map(|(user, role)| Member { user, role })
            .collect(),
        next_after,
    }))
}

/// `PUT /v1/projects/{slug}/members/{user_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// The new role.
    pub role: Role,
}

/// `PUT /v1/projects/{slug}/members/{user_id}`: adds or changes a member
/// (204; owners who stepped up; never the last owner away). A demotion
/// also revokes the keys the member minted or rotated in with a role
/// above the new one (see [`remove_member`]); keys at or below it stay.
#[utoipa::path(
    put,
    path = "/v1/projects/{slug}/members/{user_id}",
    tag = "project",
    params(("slug" = Slug, Path, description = "The project's slug"), ("user_id" = UserId, Path, description = "The user's id")),
    request_body = RoleBody,
    responses((status = 204, description = "Set"), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::Conflict),
    security(("session" = []))
)]
pub async fn set_member(
    State(state): State<AppState>,
    Extension(auth): Extension<Authenticated>,
    Authorized(grant): Authorized<Members>,
    Path((_, user)): Path<(String, String)>,
    JsonBody(body): JsonBody<RoleBody>,
) -> Result<StatusCode, ApiError> {
    let user: UserId = path_id(&user, "user")?;
    state
        .relay
        .config()
        .set_member(&grant, user, Some(body.role))
        .await?;
    revoke_keys_minted_by(&state, &auth, &grant, user, Some(body.role)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/projects/{slug}/members/{user_id}` (204; owners who
/// stepped up; never the last owner).
///
/// A member who leaves takes no credential along: every key of the project
/// they minted or rotated in that is not revoked yet is revoked in the
/// same request, each with its own audit event (actor: the owner removing
/// them), with what hangs off it ([`echorelay::core::keys::KeyService::revoke`]).
/// A successor another operator rotated in stays (it is theirs), as do
/// keys minted by API keys. Should the revocation fail half-way (store
/// unreachable), the answer is that error and the membership is already
/// gone; repeating the DELETE (404: no such membership) completes the
/// revocation.
#[utoipa::path(
    delete,
    path = "/v1/projects/{slug}/members/{user_id}",
    tag = "project",
    params(("slug" = Slug, Path, description = "The project's slug"), ("user_id" = UserId, Path, description = "The user's id")),
    responses((status = 204, description = "Removed"), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::Conflict),
    security(("session" = []))
)]
pub async fn remove_member(
    State(state): State<AppState>,
    Extension(auth): Extension<Authenticated>,
    Authorized(grant): Authorized<Members>,
    Path((_, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let user: UserId = path_id(&user, "user")?;
    let removed = state.relay.config().set_member(&grant, user, None).await;
    match removed {
        // Not (any longer) a member: a retry after a revocation that
        // failed half-way; finish it, then answer the 404.
        Ok(()) | Err(echorelay::Error::Store(StoreError::NotFound { kind: "membership" })) => {
            revoke_keys_minted_by(&state, &auth, &grant, user, None).await?;
        }
        Err(_) => {}
    }
    removed?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes the project's keys that `user` minted or rotated in and that
/// are not revoked yet: all of them when `role` is `None` (they left),
/// else those whose role is above `role` (a demotion). The caller is the
/// owner who changed the membership; the revocations are theirs, audited
/// one by one.
async fn revoke_keys_minted_by(
    state: &AppState,
    auth: &Authenticated,
    members: &Grant<Members>,
    user: UserId,
    role: Option<Role>,
) -> Result<(), ApiError> {
    let relay = &state.relay;
    let records = relay
        .store()
        .keys_of_project(members.project_id())
        .await
        .map_err(echorelay::Error::from)?;
    let theirs: Vec<KeyId> = records
        .iter()
        .filter(|r| r.created_by == Actor::User(user) && r.revoked_at.is_none())
        .filter(|r| role.is_none_or(|new| r.role > new))
        .map(|r| r.id)
        .collect();
    if theirs.is_empty() {
        return Ok(());
    }
    // An owner holds the keys surface; the same voter decides it.
    let keys = relay
        .voter()
        .authorize::<Keys>(auth.caller(), members.project().slug.as_str())
        .await?;
    for id in theirs {
        match relay.keys().revoke(&keys, id).await {
            // Already revoked with an earlier one's cascade.
            Ok(()) | Err(echorelay::Error::Store(StoreError::Conflict { .. })) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `GET /v1/projects/{slug}/audit` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Events after this sequence number (0: from the start; sequence
    /// numbers are 63-bit).
    #[serde(default)]
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    pub after: u64,
    /// Page size, 1 to 500 (default 100).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: usize,
    /// Also verify this page: each event (seq, link, hash, tag), its link
    /// to the event `after`, and the sealed head when the page reaches the
    /// chain's head. Bounded work (the page and one event more); paging
    /// through the whole log with `verify=true` verifies the whole chain.
    #[serde(default)]
    pub verify: bool,
}

fn default_limit() -> usize {
    100
}

/// The largest audit page over HTTP.
const MAX_AUDIT_PAGE: usize = 500;

/// What `verify=true` found on this page.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChainAnswer {
    /// Every event with `after < seq <= through` was checked: its seq, its
    /// link to the one before (the first one's to the event `after`,
    /// whose own hash and tag were checked too), its hash and its tag.
    Verified {
        /// The page's `after`.
        after: u64,
        /// The last seq verified (`after` when the page is empty).
        through: u64,
        /// How many events of the page were verified.
        events: u64,
        /// Whether the page reached the chain's head (nothing after
        /// `through` when read), where the sealed head was checked too.
        reached_head: bool,
        /// The chain's head, when the page reached it.
        head: Option<ChainHead>,
        /// Whether tags and the sealed head were checked under the
        /// deployment's audit key (else the hashes only).
        keyed: bool,
    },
    /// The chain is broken at `seq` (at this page, its predecessor, or
    /// a cut-off end this page reached).
    Broken {
        /// The first broken link.
        seq: u64,
        /// What is wrong there.
        problem: String,
    },
}

impl From<PageStatus> for ChainAnswer {
    fn from(s: PageStatus) -> Self {
        ChainAnswer::Verified {
            after: s.after,
            through: s.through,
            events: s.events,
            reached_head: s.reached_head,
            head: s.head,
            keyed: s.keyed,
        }
    }
}

/// A page of the audit log.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Events, by sequence number.
    pub events: Vec<AuditEvent>,
    /// The `after` of the next page (`None`: this was the last).
    pub next_after: Option<u64>,
    /// With `verify=true`: what verifying this page found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainAnswer>,
}

/// `GET /v1/projects/{slug}/audit?after=&limit=&verify=`: the project's
/// audit log, paged (owners). With `verify=true` the page is verified
/// (bounded work: the page, its predecessor and the sealed head); walking
/// every page with it verifies the whole chain, and the operator's
/// `echorelay-server audit verify` does the whole chain in one run.
#[utoipa::path(
    get,
    path = "/v1/projects/{slug}/audit",
    tag = "project",
    params(("slug" = Slug, Path, description = "The project's slug"), AuditQuery),
    responses((status = 200, description = "A page of events; with verify=true, what verifying it found", body = AuditPage), crate::openapi::AuthErrors, crate::openapi::BodyErrors),
    security(("api_key" = []), ("session" = []))
)]
pub async fn audit_log(
    State(state): State<AppState>,
    Authorized(grant): Authorized<AuditRead>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            "after and limit are numbers, verify is true or false",
        )
    })?;
    // Exactly what the document states: nothing is clamped silently.
    if q.after > i64::MAX as u64 || !(1..=MAX_AUDIT_PAGE).contains(&q.limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "after is 0 to 9223372036854775807, limit 1 to 500",
        ));
    }
    let limit = q.limit;
    let audit = state.relay.audit();
    let (events, chain) = if q.verify {
        match audit.verify_page(&grant, q.after, limit).await {
            Ok(page) => (page.events, Some(ChainAnswer::from(page.status))),
            Err(echorelay::Error::Audit(b)) => (
                audit.events(&grant, q.after, limit).await?,
                Some(ChainAnswer::Broken {
                    seq: b.seq,
                    problem: b.problem.to_string(),
                }),
            ),
            Err(e) => return Err(e.into()),
        }
    } else {
        (audit.events(&grant, q.after, limit).await?, None)
    };
    let next_after = next_after(&events, limit, |e| e.seq);
    Ok(Json(AuditPage {
        events,
        next_after,
        chain,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_seconds_are_taken_exactly_within_their_bounds() {
        assert!(matches!(seconds(None), Ok(None)));
        assert_eq!(
            seconds(Some(60)).ok().flatten(),
            Some(Duration::seconds(60))
        );
        assert_eq!(seconds(Some(0)).ok().flatten(), Some(Duration::zero()));
        // Just under 3650 days, as the document states, and not one more.
        assert_eq!(MAX_ROTATION_SECONDS, 315_359_999);
        assert_eq!(
            seconds(Some(315_359_999)).ok().flatten(),
            Some(Duration::seconds(315_359_999))
        );
        assert!(seconds(Some(315_360_000)).is_err());
        assert!(seconds(Some(-1)).is_err());
        assert!(seconds(Some(i64::MAX)).is_err());
    }
}
