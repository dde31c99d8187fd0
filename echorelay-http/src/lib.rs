//! # echorelay-http
//!
//! echorelay over HTTP, on axum and tower: the security page's promises as
//! a client sees them.
//!
//! - [`auth::authenticate`]: `Authorization: Bearer er_…` or the session
//!   cookie (writes with a CSRF token: [`cookies`]), verified
//!   through core on every request (S3 holds on keep-alive connections);
//!   401 with `WWW-Authenticate: Bearer` and one generic body on any
//!   failure; `Deprecation`/`Sunset`/`Link` on answers to a key that has a
//!   successor.
//! - [`auth::Authorized`]: the grant of a surface for the path's project,
//!   from the one voter (S10); every denial is the same 403.
//! - [`headers::outer`]: the client address (from the connection, or a
//!   trusted proxy's header: [`client::ProxyConfig`]), TLS only, and the
//!   security headers on every answer.
//! - [`security_txt`]: `/.well-known/security.txt` (RFC 9116), refused at
//!   start when expired or more than a year ahead.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use echorelay::prelude::*;
//! use echorelay_http::{HttpConfig, router};
//!
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! let relay = EchoRelay::from_env().await?;
//! let app = router(relay, HttpConfig::local())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // The client address comes from the connection: serve with connect info.
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(()) }
//! ```
//!
//! Routes (JSON; errors are `{"error": CODE, "message": TEXT}`):
//!
//! | method and path | surface | answer |
//! |---|---|---|
//! | `GET /v1/projects/{slug}/lines` | config read | lines, endpoints, targets; secrets masked |
//! | `POST /v1/projects/{slug}/lines` | config write | 201, the line |
//! | `PATCH`, `DELETE /v1/projects/{slug}/lines/{line_id}` | config write | the renamed line; 204 |
//! | `POST /v1/projects/{slug}/lines/{line_id}/endpoints` | config write | 201, the endpoint |
//! | `DELETE /v1/projects/{slug}/endpoints/{endpoint_id}` | config write | 204 |
//! | `POST /v1/projects/{slug}/lines/{line_id}/targets` | config write | 201, the masked target and its signing secret once |
//! | `GET /v1/projects/{slug}/targets/{target_id}` | config read | the target, masked |
//! | `PATCH`, `DELETE /v1/projects/{slug}/targets/{target_id}` | config write | the masked target; 204 |
//! | `POST /v1/projects/{slug}/billing` | billing | 201, the sealed audit event |
//! | `GET /v1/projects/{slug}/members` | members | members and roles |
//! | `PUT`, `DELETE /v1/projects/{slug}/members/{user_id}` | members, stepped up | 204 |
//! | `GET /v1/projects/{slug}/audit?after=&limit=&verify=` | audit read | a page of events; with `verify=true` the chain's status |
//! | `GET /v1/projects/{slug}/keys` | keys | the keys' listings (hints, never a key) |
//! | `POST /v1/projects/{slug}/keys` | keys | 201, the new key's plaintext once |
//! | `POST /v1/projects/{slug}/keys/{key_id}/rotate` | keys | 201, the successor's plaintext once |
//! | `DELETE /v1/projects/{slug}/keys/{key_id}` | keys | 204 |
//! | `POST /v1/projects/{slug}/keys/{key_id}/reveal` | keys, stepped up | an auto-rotated successor's plaintext, once |
//! | `POST /v1/keys/successor` | the presenting key itself | its auto-rotated successor, once |
//! | `POST /v1/auth/login` | public | the next step: `second_factor`, `enrollment`, or `authenticated` (a trusted device) |
//! | `POST /v1/auth/second-factor` | a challenge | session cookie; optionally a trusted-device cookie |
//! | `POST /v1/auth/enrollment` | a challenge | the TOTP secret, its `otpauth://` URI and the QR code as SVG |
//! | `POST /v1/auth/enrollment/confirm` | a challenge | session cookie and ten backup codes, once |
//! | `POST /v1/auth/step-up` | session | 204: sensitive operations allowed for 10 minutes |
//! | `POST /v1/auth/logout`, `/v1/auth/logout-everywhere` | session | 204, cookies cleared |
//! | `GET /v1/me/sessions` | session | the account's sessions and trusted devices |
//! | `DELETE /v1/me/sessions/{id}` | session | 204 |
//! | `DELETE /v1/me/devices`, `/v1/me/devices/{id}` | session, stepped up | how many were revoked |
//! | `POST /v1/me/backup-codes` | session, stepped up | ten new backup codes, once |
//! | `GET /v1/me/export` | session | the GDPR Article 15 export (JSON attachment) |
//! | `GET /.well-known/security.txt` | public | RFC 9116 text |
//!
//! Project routes take an API key or a session cookie; a
//! cookie-authenticated write needs `X-CSRF-Token` ([`cookies`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod account;
pub mod auth;
pub mod client;
pub mod cookies;
pub mod error;
pub mod headers;
pub mod json;
pub mod routes;
pub mod security_txt;
pub mod tls;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use echorelay::EchoRelay;

use crate::client::ProxyConfig;
use crate::error::ApiError;
use crate::security_txt::{SecurityTxt, SecurityTxtError};

/// How the HTTP layer is deployed.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Trusted proxies and the header they name the client in.
    pub proxies: ProxyConfig,
    /// Refuse plaintext requests (403 `tls_required`) and send HSTS.
    /// Off only for local use on loopback.
    pub require_tls: bool,
    /// The security.txt to publish; `None` answers 404 there.
    pub security_txt: Option<SecurityTxt>,
}

impl HttpConfig {
    /// For local use on loopback: no proxy, plaintext allowed, no
    /// security.txt.
    pub fn local() -> Self {
        Self {
            proxies: ProxyConfig::none(),
            require_tls: false,
            security_txt: None,
        }
    }

    /// In production: TLS required, no proxy until configured.
    pub fn production() -> Self {
        Self {
            require_tls: true,
            ..Self::local()
        }
    }
}

/// The state every handler gets.
#[derive(Clone)]
pub struct AppState {
    relay: EchoRelay,
    config: Arc<HttpConfig>,
    security_txt: Option<Arc<str>>,
}

/// Why the router cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configured security.txt is refused.
    #[error(transparent)]
    SecurityTxt(#[from] SecurityTxtError),
}

/// The whole HTTP API over `relay`. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: the client
/// address comes from the connection.
///
/// # Errors
/// [`StartError::SecurityTxt`] when the configured security.txt has
/// expired or expires more than a year from now (the relay's clock).
pub fn router(relay: EchoRelay, config: HttpConfig) -> Result<Router, StartError> {
    let security_txt = match &config.security_txt {
        Some(file) => {
            file.validate(relay.clock().now())?;
            Some(Arc::from(file.render()))
        }
        None => None,
    };
    let state = AppState {
        relay,
        config: Arc::new(config),
        security_txt,
    };
    let project = "/v1/projects/{slug}";
    let api = Router::new()
        .route(
            &format!("{project}/lines"),
            get(routes::lines).post(routes::create_line),
        )
        .route(
            &format!("{project}/lines/{{line_id}}"),
            patch(routes::rename_line).delete(routes::delete_line),
        )
        .route(
            &format!("{project}/lines/{{line_id}}/endpoints"),
            post(routes::create_endpoint),
        )
        .route(
            &format!("{project}/lines/{{line_id}}/targets"),
            post(routes::create_target),
        )
        .route(
            &format!("{project}/endpoints/{{endpoint_id}}"),
            delete(routes::delete_endpoint),
        )
        .route(
            &format!("{project}/targets/{{target_id}}"),
            get(routes::get_target)
                .patch(routes::update_target)
                .delete(routes::delete_target),
        )
        .route(
            &format!("{project}/keys"),
            get(routes::list_keys).post(routes::mint_key),
        )
        .route(
            &format!("{project}/keys/{{key_id}}"),
            delete(routes::revoke_key),
        )
        .route(
            &format!("{project}/keys/{{key_id}}/rotate"),
            post(routes::rotate_key),
        )
        .route(
            &format!("{project}/keys/{{key_id}}/reveal"),
            post(routes::reveal_key),
        )
        .route(&format!("{project}/billing"), post(routes::record_billing))
        .route(&format!("{project}/members"), get(routes::members))
        .route(
            &format!("{project}/members/{{user_id}}"),
            put(routes::set_member).delete(routes::remove_member),
        )
        .route(&format!("{project}/audit"), get(routes::audit_log))
        .route(auth::SUCCESSOR_PATH, post(routes::collect_successor))
        .route("/v1/auth/step-up", post(account::step_up))
        .route("/v1/auth/logout", post(account::logout))
        .route(
            "/v1/auth/logout-everywhere",
            post(account::logout_everywhere),
        )
        .route("/v1/me/sessions", get(account::access_list))
        .route("/v1/me/sessions/{id}", delete(account::end_session))
        .route("/v1/me/devices", delete(account::revoke_all_devices))
        .route("/v1/me/devices/{id}", delete(account::revoke_device))
        .route(
            "/v1/me/backup-codes",
            post(account::regenerate_backup_codes),
        )
        .route("/v1/me/export", get(account::export))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Ok(Router::new()
        .route("/.well-known/security.txt", get(security_txt_page))
        .route("/v1/auth/login", post(account::login))
        .route("/v1/auth/second-factor", post(account::second_factor))
        .route("/v1/auth/enrollment", post(account::begin_enrollment))
        .route(
            "/v1/auth/enrollment/confirm",
            post(account::confirm_enrollment),
        )
        .merge(api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(json::BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            headers::outer,
        ))
        .with_state(state))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn security_txt_page(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Response {
    match &state.security_txt {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            text.to_string(),
        )
            .into_response(),
        None => not_found().await.into_response(),
    }
}
