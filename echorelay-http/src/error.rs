//! Errors as HTTP answers: one JSON shape, `{"error": CODE, "message":
//! TEXT}`, a status by category, and never an echo of what the client sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use echorelay::Error;
use echorelay::core::StoreError;
use serde::Serialize;

/// An error answer. `code` is stable (clients match on it); `message` is
/// for people and never contains a secret, a password, a key or any other
/// value from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
}

impl ApiError {
    /// An error with its status, stable code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 401: the one answer for every authentication failure (missing,
    /// malformed, unknown, revoked or expired credential).
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "authentication required",
        )
    }

    /// 403: the one answer for every denial (unknown project, another
    /// project, or a role without this surface).
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "not allowed")
    }

    /// 503: the backend could not be reached; nothing was authenticated.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service is unavailable, retry later",
        )
    }

    /// 400 for a request that is malformed (`code` says how).
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code,
            message: &self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"echorelay\""),
            );
        }
        response
    }
}

impl From<Error> for ApiError {
    /// Core errors by category. Their messages carry no input (core's
    /// rule), so client errors show them; server errors are logged and
    /// answered with a generic message.
    fn from(e: Error) -> Self {
        use StatusCode as S;
        match e {
            Error::Unauthenticated => Self::unauthenticated(),
            Error::Unavailable => Self::unavailable(),
            Error::Denied(_) => Self::forbidden(),
            Error::ReauthenticationRequired => Self::new(
                S::FORBIDDEN,
                "reauthentication_required",
                "confirm your password or a TOTP code, then retry",
            ),
            Error::InvalidKey(_)
            | Error::Policy(_)
            | Error::Config(_)
            | Error::Password(_)
            | Error::InvalidInput(_) => {
                Self::new(S::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
            }
            Error::Store(StoreError::NotFound { kind }) => {
                Self::new(S::NOT_FOUND, "not_found", format!("{kind} not found"))
            }
            Error::Store(StoreError::AlreadyExists { kind }) => Self::new(
                S::CONFLICT,
                "already_exists",
                format!("{kind} already exists"),
            ),
            Error::Store(StoreError::Conflict { reason }) => {
                Self::new(S::CONFLICT, "conflict", reason)
            }
            Error::Store(StoreError::LimitReached { reason }) => {
                Self::new(S::CONFLICT, "limit_reached", reason)
            }
            Error::Store(StoreError::Backend { .. }) => {
                tracing::error!(error = %e, "backend failed");
                Self::unavailable()
            }
            other => {
                tracing::error!(error = %other, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use echorelay::core::access::AccessDenied;

    #[test]
    fn categories_map_to_statuses() {
        let cases: Vec<(Error, StatusCode, &str)> = vec![
            (
                Error::Unauthenticated,
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
            ),
            (
                Error::Unavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            ),
            (AccessDenied.into(), StatusCode::FORBIDDEN, "forbidden"),
            (
                Error::ReauthenticationRequired,
                StatusCode::FORBIDDEN,
                "reauthentication_required",
            ),
            (
                Error::InvalidInput("x"),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
            ),
            (
                StoreError::NotFound { kind: "key" }.into(),
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                StoreError::AlreadyExists { kind: "project" }.into(),
                StatusCode::CONFLICT,
                "already_exists",
            ),
            (
                StoreError::Conflict { reason: "r" }.into(),
                StatusCode::CONFLICT,
                "conflict",
            ),
            (
                StoreError::LimitReached { reason: "r" }.into(),
                StatusCode::CONFLICT,
                "limit_reached",
            ),
            (
                StoreError::backend(std::io::Error::other("down")).into(),
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
            ),
            (
                StoreError::Corrupt {
                    table: "t",
                    id: "i".into(),
                    problem: "p".into(),
                }
                .into(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
            ),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!((api.status(), api.code()), (status, code));
        }
    }

    #[test]
    fn a_401_names_the_bearer_scheme() {
        let r = ApiError::unauthenticated().into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"echorelay\""
        );
        assert!(
            ApiError::forbidden()
                .into_response()
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .is_none()
        );
    }
}
