//! The REST API's handlers. Each project-scoped handler takes an
//! [`Authorized`] grant of the surface it needs and calls one core service
//! method with it; nothing here decides who may do what.

use std::str::FromStr;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use echorelay::core::config::LineView;
use echorelay::core::ids::KeyId;
use echorelay::core::keys::KeyView;
use echorelay::prelude::{
    ConfigRead, Environment, Keys, MintRequest, MintedKey, Role, RotateOptions,
};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Authorized, bearer};
use crate::client::ClientInfo;
use crate::error::ApiError;
use crate::json::JsonBody;

/// `GET /v1/projects/{slug}/lines`: the project's lines with their
/// endpoints and targets, every secret masked.
pub async fn lines(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigRead>,
) -> Result<Json<LinesAnswer>, ApiError> {
    let lines = state.relay.config().lines(&grant).await?;
    Ok(Json(LinesAnswer { lines }))
}

/// The answer of [`lines`].
#[derive(Debug, Serialize)]
pub struct LinesAnswer {
    /// Lines, endpoints and masked targets.
    pub lines: Vec<LineView>,
}

/// `GET /v1/projects/{slug}/keys`: the project's keys (hints only).
pub async fn list_keys(
    State(state): State<AppState>,
    Authorized(grant): Authorized<Keys>,
) -> Result<Json<KeysAnswer>, ApiError> {
    let keys = state.relay.keys().list(&grant).await?;
    Ok(Json(KeysAnswer { keys }))
}

/// The answer of [`list_keys`].
#[derive(Debug, Serialize)]
pub struct KeysAnswer {
    /// Every key of the project, newest last.
    pub keys: Vec<KeyView>,
}

/// The body of [`mint_key`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintBody {
    /// `live` or `test`.
    pub environment: Environment,
    /// `viewer`, `editor` or `owner`: at most the minter's own role.
    pub role: Role,
    /// A label for listings (at most 100 characters).
    pub label: String,
}

/// A new key: its listing and, in this one answer only, its plaintext.
#[derive(Debug, Serialize)]
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
pub async fn mint_key(
    State(state): State<AppState>,
    Authorized(grant): Authorized<Keys>,
    JsonBody(body): JsonBody<MintBody>,
) -> Result<Response, ApiError> {
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Seconds the old key stays valid beside its successor.
    #[serde(default)]
    pub overlap_seconds: Option<i64>,
    /// Seconds of grace after the overlap.
    #[serde(default)]
    pub grace_seconds: Option<i64>,
}

fn seconds(s: Option<i64>) -> Result<Option<Duration>, ApiError> {
    s.map(|s| {
        Duration::try_seconds(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "a duration out of range",
            )
        })
    })
    .transpose()
}

fn key_id(text: &str) -> Result<KeyId, ApiError> {
    KeyId::from_str(text).map_err(|_| ApiError::bad_request("invalid_id", "not a key id"))
}

/// `POST /v1/projects/{slug}/keys/{key_id}/rotate`: an operator rotation
/// (201, the successor's plaintext once).
pub async fn rotate_key(
    State(state): State<AppState>,
    Authorized(grant): Authorized<Keys>,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<RotateBody>,
) -> Result<Response, ApiError> {
    let opts = RotateOptions {
        overlap: seconds(body.overlap_seconds)?,
        grace: seconds(body.grace_seconds)?,
    };
    let minted = state
        .relay
        .keys()
        .rotate(&grant, key_id(&id)?, opts)
        .await?;
    Ok((StatusCode::CREATED, Json(MintedAnswer::from(minted))).into_response())
}

/// `DELETE /v1/projects/{slug}/keys/{key_id}`: revokes the key and what
/// hangs off it (204). From the moment this answers, the key fails.
pub async fn revoke_key(
    State(state): State<AppState>,
    Authorized(grant): Authorized<Keys>,
    Path((_, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.relay.keys().revoke(&grant, key_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The successor a key collected.
#[derive(Debug, Serialize)]
pub struct SuccessorAnswer {
    /// The successor key. Shown once: store it now.
    pub plaintext: String,
}

/// `POST /v1/keys/successor`: a key in its overlap or grace collects its
/// auto-rotated successor, once (any role; 404 when there is none to
/// collect).
pub async fn collect_successor(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<SuccessorAnswer>, ApiError> {
    let ip = req.extensions().get::<ClientInfo>().map(|c| c.ip);
    let token = bearer(req.headers()).ok_or_else(ApiError::unauthenticated)?;
    let successor = state.relay.keys().collect_successor(token, ip).await?;
    Ok(Json(SuccessorAnswer {
        plaintext: successor.expose_secret().to_owned(),
    }))
}
