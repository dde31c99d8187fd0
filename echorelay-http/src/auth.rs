//! Authentication as a layer, authorization as an extractor.
//!
//! [`require_api_key`] verifies `Authorization: Bearer er_…` through core
//! on every request: nothing about a verified key or a grant is kept per
//! connection, so a revocation (S3) stops the very next request, also on a
//! keep-alive connection. [`Authorized`] reads the project slug from the
//! path and asks the one voter (S10) for a grant of its surface.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use echorelay::prelude::{Caller, Grant, SurfaceKind, VerifiedKey};

use crate::AppState;
use crate::client::ClientInfo;
use crate::error::ApiError;

/// Where a key in its overlap or grace collects its successor (the `Link`
/// it is sent with `rel="successor-version"`).
pub const SUCCESSOR_PATH: &str = "/v1/keys/successor";

/// The authenticated caller of this request (a request extension, made by
/// [`require_api_key`] for this request only).
#[derive(Debug, Clone)]
pub struct Authenticated {
    caller: Caller,
    key: VerifiedKey,
}

impl Authenticated {
    /// The caller, as the voter takes it.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The verified API key.
    pub fn key(&self) -> &VerifiedKey {
        &self.key
    }
}

/// The bearer token of `Authorization: Bearer …`: exactly one header, the
/// scheme in any case. Anything else is no credential.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The layer: verifies the request's API key (401 with
/// `WWW-Authenticate: Bearer` and one generic body on any failure, 503 if
/// the store cannot be reached), hands the caller to the handler in the
/// request's extensions, and marks the answers to a key that has a
/// successor with `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and a
/// `Link` to collect the successor.
pub async fn require_api_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let ip = req.extensions().get::<ClientInfo>().map(|c| c.ip);
    let Some(token) = bearer(req.headers()) else {
        return ApiError::unauthenticated().into_response();
    };
    let key = match state.relay.keys().verify(token).await {
        Ok(key) => key,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let lifecycle = (key.deprecated_since(), key.sunset());
    req.extensions_mut().insert(Authenticated {
        caller: Caller::api_key(key.clone(), ip),
        key,
    });
    let mut response = next.run(req).await;
    if let (Some(since), Some(sunset)) = lifecycle {
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&format!("@{}", since.timestamp())) {
            headers.insert("deprecation", v);
        }
        if let Ok(v) = HeaderValue::from_str(&http_date(sunset)) {
            headers.insert("sunset", v);
        }
        if let Ok(v) =
            HeaderValue::from_str(&format!("<{SUCCESSOR_PATH}>; rel=\"successor-version\""))
        {
            headers.append(header::LINK, v);
        }
    }
    response
}

/// An IMF-fixdate (RFC 9110 §5.6.7), the form of `Sunset`.
pub(crate) fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// A grant of surface `S` for the project named by the path's `{slug}`,
/// decided by the voter for the authenticated caller. Every denial —
/// unknown project, another project, a role without `S` — is the same
/// 403: the voter gives the same answer for all of them, and so does the
/// HTTP layer, so a response never tells whether a project exists.
pub struct Authorized<S: SurfaceKind>(pub Grant<S>);

impl<S: SurfaceKind> Authorized<S> {
    /// The grant.
    pub fn grant(&self) -> &Grant<S> {
        &self.0
    }
}

impl<S: SurfaceKind> FromRequestParts<AppState> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = parts
            .extensions
            .get::<Authenticated>()
            .cloned()
            .ok_or_else(ApiError::unauthenticated)?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::forbidden())?;
        let slug = params.get("slug").ok_or_else(ApiError::forbidden)?;
        let grant = state
            .relay
            .voter()
            .authorize::<S>(auth.caller(), slug)
            .await?;
        Ok(Authorized(grant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn bearer_takes_one_header_in_any_case() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bEaReR  er_test_x "),
        );
        assert_eq!(bearer(&h), Some("er_test_x"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic er_test_x"),
        );
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(bearer(&h), None, "two credentials: neither");
    }

    #[test]
    fn sunset_is_an_imf_fixdate() {
        let t = Utc.with_ymd_and_hms(2027, 3, 7, 8, 9, 10).unwrap();
        assert_eq!(http_date(t), "Sun, 07 Mar 2027 08:09:10 GMT");
    }
}
