//! `POST /v1/in/{endpoint_id}`: the relay's inbound door. Thin: the body,
//! its content type and the bearer key go to core's
//! [`RelayService::accept`](echorelay::core::relay::RelayService::accept),
//! which verifies the key on every request, asks the voter for the
//! `Ingest` surface and enqueues one delivery job per target.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use echorelay::core::ids::EndpointId;
use echorelay::core::relay::RelayError;
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

use crate::AppState;
use crate::account::ClientIp;
use crate::error::ApiError;
use crate::openapi::ErrorBody;

/// The inbound body: any bytes.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct AnyBody(#[allow(dead_code)] Vec<u8>);

/// `202` to an inbound POST.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundAccepted {
    /// The message's id: the `webhook-id` every target receives.
    #[schema(value_type = String, pattern = "^msg_[0-9a-f]{32}$")]
    pub message_id: String,
    /// Delivery jobs enqueued: one per target of the endpoint's line (0
    /// for a replay).
    pub deliveries: usize,
    /// The `Idempotency-Key` was used before in this project (within
    /// 24 h): `message_id` is the first message's, nothing new was
    /// enqueued.
    pub replayed: bool,
}

/// Refusals of the inbound door.
#[derive(IntoResponses)]
pub enum InboundErrors {
    /// A header that is not usable (a content type that is not printable
    /// ASCII or longer than 255 bytes; an `Idempotency-Key` that is not 1
    /// to 255 visible ASCII characters).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Missing, malformed, unknown, revoked or expired key.
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// The key's role may not publish (viewer keys).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such endpoint in the key's project (the same answer for an
    /// endpoint of another project and for a malformed id).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The line has more targets than one message fans out to.
    #[response(status = 409)]
    TooManyTargets(ErrorBody),
    /// The body is over the relay's limit (default 256 KiB).
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The store or the queue could not be reached; nothing was
    /// enqueued: retry.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

impl From<RelayError> for ApiError {
    fn from(e: RelayError) -> Self {
        match e {
            RelayError::Unauthenticated => ApiError::unauthenticated(),
            RelayError::Denied => ApiError::forbidden(),
            RelayError::UnknownEndpoint => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "endpoint not found")
            }
            RelayError::BodyTooLarge { limit } => too_large(limit),
            RelayError::BadContentType => {
                ApiError::bad_request("invalid_header", "malformed content type")
            }
            RelayError::BadIdempotencyKey => ApiError::bad_request(
                "invalid_header",
                "malformed Idempotency-Key: 1 to 255 visible ASCII characters",
            ),
            RelayError::TooManyTargets { targets } => ApiError::new(
                StatusCode::CONFLICT,
                "limit_reached",
                format!("the line has {targets} targets; a message fans out to at most 1000"),
            ),
            RelayError::Core(e) => ApiError::from(e),
            other => {
                tracing::error!(error = %other, "relay: accept failed");
                ApiError::unavailable()
            }
        }
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body is over the limit of {limit} bytes"),
    )
}

/// `POST /v1/in/{endpoint_id}`: relay the body (any content type, byte
/// for byte) to every target of the endpoint's line. Authenticated by a
/// project API key of an editor or owner (`Authorization: Bearer er_…`).
#[utoipa::path(
    post,
    path = "/v1/in/{endpoint_id}",
    tag = "relay",
    params(
        ("endpoint_id" = EndpointId, Path, description = "The endpoint's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retried POST safe: within 24 h, a POST with a key already used in the project answers with the first message's id and enqueues nothing (1 to 255 visible ASCII characters)", min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]{1,255}$")
    ),
    request_body(content = AnyBody, content_type = "application/octet-stream", description = "Any body, of any content type (documented here as bytes; sent with its own `Content-Type`, which is relayed), at most 256 KiB by default, relayed byte for byte as received: no body is invalid"),
    responses((status = 202, description = "Accepted: enqueued for every target", body = InboundAccepted), InboundErrors),
    security(("api_key" = []))
)]
pub async fn accept(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let relay = state.relay.relay();
    let key = crate::auth::bearer(&headers).unwrap_or_default();
    // A malformed id is answered like an unknown one, after the key.
    let endpoint = endpoint
        .parse::<EndpointId>()
        .unwrap_or_else(|_| EndpointId::from_bytes([0; 16]));
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(too_large(relay.config().max_body));
        }
        Err(_) => return Err(ApiError::bad_request("invalid_body", "unreadable body")),
    };
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::from(RelayError::BadContentType))?,
        ),
    };
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::from(RelayError::BadIdempotencyKey))?,
        ),
    };
    let accepted = relay
        .accept(
            key,
            endpoint,
            content_type,
            idempotency_key,
            body.to_vec(),
            Some(ip),
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(InboundAccepted {
            message_id: accepted.message.to_string(),
            deliveries: accepted.deliveries,
            replayed: accepted.replayed,
        }),
    )
        .into_response())
}
