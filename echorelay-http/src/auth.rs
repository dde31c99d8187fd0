//! Authentication as a layer, authorization as an extractor.
//!
//! [`authenticate`] verifies `Authorization: Bearer er_…` (or the session
//! cookie) through core on every request: nothing about a verified key or a grant is kept per
//! connection, so a revocation (S3) stops the very next request, also on a
//! keep-alive connection. [`Authorized`] reads the project slug from the
//! path and asks the one voter (S10) for a grant of its surface.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use echorelay::prelude::{
    AuthenticatedSession, Caller, Grant, SecretString, SurfaceKind, VerifiedKey,
};

use crate::AppState;
use crate::client::ClientInfo;
use crate::cookies;
use crate::error::ApiError;

/// Where a key in its overlap or grace collects its successor (the `Link`
/// it is sent with `rel="successor-version"`).
pub const SUCCESSOR_PATH: &str = "/v1/keys/successor";

/// The authenticated caller of this request (a request extension, made by
/// [`authenticate`] for this request only).
#[derive(Debug, Clone)]
pub struct Authenticated {
    caller: Caller,
    via: Via,
}

/// The credential a request was authenticated with.
#[derive(Debug, Clone)]
pub enum Via {
    /// An API key (`Authorization: Bearer er_…`).
    ApiKey(VerifiedKey),
    /// A session cookie; the token is kept for the calls that take it
    /// (logout, backup codes).
    Session {
        /// The checked session.
        session: AuthenticatedSession,
        /// The cookie's value.
        token: SecretString,
    },
}

impl Authenticated {
    /// The caller, as the voter takes it.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// How the request was authenticated.
    pub fn via(&self) -> &Via {
        &self.via
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

/// The layer: authenticates the request by its API key or, without an
/// `Authorization` header, by its session cookie (a write must then carry
/// the CSRF token: [`crate::cookies`]). Every credential failure is the
/// one 401 (`WWW-Authenticate: Bearer`, one generic body); 503 if the
/// store cannot be reached. The caller goes to the handler in the
/// request's extensions. Answers to a key that has a successor carry
/// `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and a `Link` to collect
/// the successor.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(ip) = req.extensions().get::<ClientInfo>().map(|c| c.ip) else {
        return ApiError::unauthenticated().into_response();
    };
    let auth = if req.headers().contains_key(header::AUTHORIZATION) {
        let Some(token) = bearer(req.headers()) else {
            return ApiError::unauthenticated().into_response();
        };
        match state.relay.keys().verify(token).await {
            Ok(key) => Authenticated {
                caller: Caller::api_key(key.clone(), Some(ip)),
                via: Via::ApiKey(key),
            },
            Err(e) => return ApiError::from(e).into_response(),
        }
    } else if let Some(cookie) = cookies::get(req.headers(), cookies::SESSION) {
        let session = match state.relay.accounts().authenticate(cookie, ip).await {
            Ok(s) => s,
            Err(e) => return ApiError::from(e).into_response(),
        };
        if !cookies::csrf_ok(req.method(), req.headers(), cookie) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "a cookie-authenticated write needs the X-CSRF-Token header",
            )
            .into_response();
        }
        Authenticated {
            caller: session.caller(Some(ip)),
            via: Via::Session {
                session,
                token: SecretString::from(cookie),
            },
        }
    } else {
        return ApiError::unauthenticated().into_response();
    };
    let lifecycle = match &auth.via {
        Via::ApiKey(key) => (key.deprecated_since(), key.sunset()),
        Via::Session { .. } => (None, None),
    };
    req.extensions_mut().insert(auth);
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

/// The benchmark's stand-in for [`authenticate`]: `key` as the caller of
/// every request, never verified again (see
/// `bench_router_preauthenticated`; only without a real credential check
/// can the check's own cost be measured).
pub(crate) fn preauthenticated(
    key: VerifiedKey,
) -> impl Fn(
    State<AppState>,
    Request,
    Next,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>
+ Clone
+ Send
+ Sync
+ 'static {
    move |_state, mut req, next| {
        let ip = req.extensions().get::<ClientInfo>().map(|c| c.ip);
        req.extensions_mut().insert(Authenticated {
            caller: Caller::api_key(key.clone(), ip),
            via: Via::ApiKey(key.clone()),
        });
        Box::pin(async move { next.run(req).await })
    }
}

/// The session of a request authenticated by its session cookie (the
/// `/v1/me` routes); an API key is refused with the one 401.
#[derive(Debug, Clone)]
pub struct SessionAuth {
    /// The checked session.
    pub session: AuthenticatedSession,
    /// The cookie's value.
    pub token: SecretString,
    /// The client's address.
    pub ip: std::net::IpAddr,
}

impl FromRequestParts<AppState> for SessionAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        let ip = parts
            .extensions
            .get::<ClientInfo>()
            .map(|c| c.ip)
            .ok_or_else(ApiError::unauthenticated)?;
        match parts.extensions.get::<Authenticated>().map(|a| &a.via) {
            Some(Via::Session { session, token }) => Ok(SessionAuth {
                session: session.clone(),
                token: token.clone(),
                ip,
            }),
            _ => Err(ApiError::unauthenticated()),
        }
    }
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
