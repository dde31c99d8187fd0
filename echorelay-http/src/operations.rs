//! The relay's operations over REST ([`echorelay::core::deliveries`]): a
//! project's messages (never their bodies), each one's deliveries and
//! attempts, the dead letters of a target and their redrive, and the
//! project's deliveries counted by state. Reads take the config-read
//! surface (every member and key, viewers included); a redrive takes the
//! ingest surface (editors, owners and their keys: who may send a message
//! may send it again).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use echorelay::core::access::surface::{ConfigRead, Ingest};
use echorelay::core::config::Slug;
use echorelay::core::deliveries::{
    DeliveryCounts, DeliveryRecord, MessageDetail, MessageRecord, RedriveAll,
};
use echorelay::core::ids::{MessageId, TargetId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Authorized;
use crate::error::ApiError;
use crate::routes::path_id;

fn default_limit() -> usize {
    100
}

fn page_limit(limit: usize) -> Result<usize, ApiError> {
    if (1..=echorelay::core::deliveries::MAX_LOG_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request("invalid_query", "limit is 1 to 500"))
    }
}

/// The query of [`messages`].
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    /// The page after this message (exclusive; newest first): the
    /// `next_before` of the page before. Absent: the newest.
    #[serde(default)]
    pub before: Option<MessageId>,
    /// Page size, 1 to 500 (default 100).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: usize,
}

/// The answer of [`messages`].
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagesAnswer {
    /// A page of the project's messages, newest first.
    pub messages: Vec<MessageRecord>,
    /// The `before` of the next page: the last id when this page is full;
    /// `null` when this was the last page.
    pub next_before: Option<MessageId>,
}

/// `GET /v1/projects/{slug}/messages?before=&limit=`: the project's
/// messages, newest first (never their bodies).
#[utoipa::path(
    get,
    path = "/v1/projects/{slug}/messages",
    tag = "operations",
    params(("slug" = Slug, Path, description = "The project's slug"), MessagesQuery),
    responses((status = 200, description = "A page of messages, newest first", body = MessagesAnswer), crate::openapi::AuthErrors, crate::openapi::QueryErrors, crate::openapi::NotFound),
    security(("api_key" = []), ("session" = []))
)]
pub async fn messages(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigRead>,
    query: Result<Query<MessagesQuery>, QueryRejection>,
) -> Result<Json<MessagesAnswer>, ApiError> {
    let Query(q) = query.map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            "before is a message id (msg_ and 32 hex digits), limit a number",
        )
    })?;
    let limit = page_limit(q.limit)?;
    let messages = state
        .relay
        .operations()
        .messages(&grant, q.before, limit)
        .await?;
    let next_before = (messages.len() == limit)
        .then(|| messages.last().map(|m| m.id))
        .flatten();
    Ok(Json(MessagesAnswer {
        messages,
        next_before,
    }))
}

/// `GET /v1/projects/{slug}/messages/{message_id}`: one message, where
/// each of its deliveries stands, and its attempts (status, latency,
/// error class, a short excerpt of the answer; never a credential).
#[utoipa::path(
    get,
    path = "/v1/projects/{slug}/messages/{message_id}",
    tag = "operations",
    params(("slug" = Slug, Path, description = "The project's slug"), ("message_id" = MessageId, Path, description = "The message's id")),
    responses((status = 200, description = "The message, its deliveries and attempts", body = MessageDetail), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound),
    security(("api_key" = []), ("session" = []))
)]
pub async fn message(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigRead>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<MessageDetail>, ApiError> {
    let id: MessageId = path_id(&id, "message")?;
    Ok(Json(state.relay.operations().message(&grant, id).await?))
}

/// The query of [`dead_letters`].
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadLettersQuery {
    /// The page after this message id (exclusive): the `next_after` of
    /// the page before. Absent: from the first.
    #[serde(default)]
    pub after: Option<MessageId>,
    /// Page size, 1 to 500 (default 100).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: usize,
}

/// The answer of [`dead_letters`].
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLettersAnswer {
    /// A page of the target's dead deliveries, by message id.
    pub dead_letters: Vec<DeliveryRecord>,
    /// The `after` of the next page; `null` when this was the last page.
    pub next_after: Option<MessageId>,
}

/// `GET /v1/projects/{slug}/targets/{target_id}/dead-letters?after=&limit=`:
/// the target's dead letters, by message id.
#[utoipa::path(
    get,
    path = "/v1/projects/{slug}/targets/{target_id}/dead-letters",
    tag = "operations",
    params(("slug" = Slug, Path, description = "The project's slug"), ("target_id" = TargetId, Path, description = "The target's id"), DeadLettersQuery),
    responses((status = 200, description = "A page of dead letters", body = DeadLettersAnswer), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::QueryErrors),
    security(("api_key" = []), ("session" = []))
)]
pub async fn dead_letters(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigRead>,
    Path((_, target)): Path<(String, String)>,
    query: Result<Query<DeadLettersQuery>, QueryRejection>,
) -> Result<Json<DeadLettersAnswer>, ApiError> {
    let target: TargetId = path_id(&target, "target")?;
    let Query(q) = query.map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            "after is a message id (msg_ and 32 hex digits), limit a number",
        )
    })?;
    let limit = page_limit(q.limit)?;
    let dead_letters = state
        .relay
        .operations()
        .dead_letters(&grant, target, q.after, limit)
        .await?;
    let next_after = (dead_letters.len() == limit)
        .then(|| dead_letters.last().map(|d| d.message))
        .flatten();
    Ok(Json(DeadLettersAnswer {
        dead_letters,
        next_after,
    }))
}

/// `POST /v1/projects/{slug}/targets/{target_id}/dead-letters/{message_id}/redrive`:
/// the dead letter is due again, its attempts reset (202); 409 if it is
/// not a dead letter (never was, redriven already, delivered since).
#[utoipa::path(
    post,
    path = "/v1/projects/{slug}/targets/{target_id}/dead-letters/{message_id}/redrive",
    tag = "operations",
    params(("slug" = Slug, Path, description = "The project's slug"), ("target_id" = TargetId, Path, description = "The target's id"), ("message_id" = MessageId, Path, description = "The message's id")),
    responses((status = 202, description = "Redriven: due again"), crate::openapi::AuthErrors, crate::openapi::BodyErrors, crate::openapi::NotFound, crate::openapi::Conflict),
    security(("api_key" = []), ("session" = []))
)]
pub async fn redrive(
    State(state): State<AppState>,
    Authorized(grant): Authorized<Ingest>,
    Path((_, target, message)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let target: TargetId = path_id(&target, "target")?;
    let message: MessageId = path_id(&message, "message")?;
    state
        .relay
        .operations()
        .redrive(&grant, target, message)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /v1/projects/{slug}/targets/{target_id}/dead-letters/redrive`:
/// up to 1000 of the target's dead letters due again; `more` says whether
/// some remain (call again).
#[utoipa::path(
    post,
    path = "/v1/projects/{slug}/targets/{target_id}/dead-letters/redrive",
    tag = "operations",
    params(("slug" = Slug, Path, description = "The project's slug"), ("target_id" = TargetId, Path, description = "The target's id")),
    responses((status = 200, description = "How many were redriven, and whether more remain", body = RedriveAll), crate::openapi::AuthErrors, crate::openapi::BodyErrors),
    security(("api_key" = []), ("session" = []))
)]
pub async fn redrive_all(
    State(state): State<AppState>,
    Authorized(grant): Authorized<Ingest>,
    Path((_, target)): Path<(String, String)>,
) -> Result<Json<RedriveAll>, ApiError> {
    let target: TargetId = path_id(&target, "target")?;
    Ok(Json(
        state.relay.operations().redrive_all(&grant, target).await?,
    ))
}

/// `GET /v1/projects/{slug}/deliveries/stats`: the project's deliveries
/// counted by state (the project's own; never the global queue's).
#[utoipa::path(
    get,
    path = "/v1/projects/{slug}/deliveries/stats",
    tag = "operations",
    params(("slug" = Slug, Path, description = "The project's slug")),
    responses((status = 200, description = "Deliveries by state", body = DeliveryCounts), crate::openapi::AuthErrors),
    security(("api_key" = []), ("session" = []))
)]
pub async fn stats(
    State(state): State<AppState>,
    Authorized(grant): Authorized<ConfigRead>,
) -> Result<Json<DeliveryCounts>, ApiError> {
    Ok(Json(state.relay.operations().counts(&grant).await?))
}
