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
//! - [`pages`]: the account pages a person uses in a browser (`/account`:
//!   sign-in, second factor, enrollment, backup codes, sessions and
//!   trusted browsers, step-up, password change), server-rendered under a
//!   strict CSP with a CSRF token in every form.
//! - [`security_txt`]: `/.well-known/security.txt` (RFC 9116), refused at
//!   start when expired or more than a year ahead.
//! - [`server::serve`]: the socket side, plain or TLS ([`tls`]), with
//!   header-read, handshake and idle timeouts and a connection cap
//!   ([`server::ServerLimits`]), an accept loop that survives `EMFILE`,
//!   and graceful shutdown.
//!
//! ```no_run
//! use echorelay::prelude::*;
//! use echorelay_http::server::{ServeOptions, serve};
//! use echorelay_http::{HttpConfig, router};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let relay = EchoRelay::from_env().await?;
//! let app = router(relay, HttpConfig::local())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // Plain HTTP on loopback, the default limits, until Ctrl-C.
//! serve(listener, app, ServeOptions::default(), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(()) }
//! ```
//!
//! Routes (JSON; errors are `{"error": CODE, "message": TEXT}`):
//!
//! | method and path | surface | answer |
//! |---|---|---|
//! | `GET /v1/projects/{slug}/lines` | config read | lines, endpoints, targets; secrets masked; one answer, bounded by the tree cap (at most 10000 lines, endpoints and targets together) |
//! | `POST /v1/projects/{slug}/lines` | config write | 201, the line; 409 `limit_reached` at the tree cap |
//! | `PATCH`, `DELETE /v1/projects/{slug}/lines/{line_id}` | config write | the renamed line; 204 |
//! | `POST /v1/projects/{slug}/lines/{line_id}/endpoints` | config write | 201, the endpoint; 409 `limit_reached` at the tree cap |
//! | `DELETE /v1/projects/{slug}/endpoints/{endpoint_id}` | config write | 204 |
//! | `POST /v1/projects/{slug}/lines/{line_id}/targets` | config write | 201, the masked target and its signing secret once; 409 `limit_reached` at the tree cap |
//! | `GET /v1/projects/{slug}/targets/{target_id}` | config read | the target, masked |
//! | `PATCH`, `DELETE /v1/projects/{slug}/targets/{target_id}` | config write | the masked target (a new `signing_secret` here replaces the current one and ends every retired one at once); 204 |
//! | `POST /v1/projects/{slug}/targets/{target_id}/signing-secret/rotate` | config write, stepped up | the masked target and the new signing secret once; the old one signs beside it for `grace_secs` (default 86400, at most 604800) |
//! | `GET /v1/projects/{slug}/messages?before=&limit=` | config read | `{messages, next_before}`: the project's messages, newest first (never their bodies) |
//! | `GET /v1/projects/{slug}/messages/{message_id}` | config read | the message, each delivery's state and every attempt (status, latency, error class, an excerpt of the answer) |
//! | `GET /v1/projects/{slug}/targets/{target_id}/dead-letters?after=&limit=` | config read | `{dead_letters, next_after}` |
//! | `POST /v1/projects/{slug}/targets/{target_id}/dead-letters/{message_id}/redrive` | ingest (editors, owners) | 202; 409 if it is not a dead letter |
//! | `POST /v1/projects/{slug}/targets/{target_id}/dead-letters/redrive` | ingest (editors, owners) | `{redriven, more}`: up to 1000 at a time |
//! | `GET /v1/projects/{slug}/deliveries/stats` | config read | the project's deliveries by state |
//! | `POST /v1/projects/{slug}/billing` | billing | 201, the sealed audit event |
//! | `GET /v1/projects/{slug}/members?after=&limit=` | members | `{members, next_after}`: a page of members and roles by user id (`after` a user id, exclusive; `limit` 1–500, default 100; 400 `invalid_query` otherwise); `next_after` is the last id of a full page, else `null` |
//! | `PUT`, `DELETE /v1/projects/{slug}/members/{user_id}` | members, stepped up | 204 |
//! | `GET /v1/projects/{slug}/audit?after=&limit=&verify=` | audit read | a page of events (`limit` 1–500); with `verify=true` that page verified (`chain`: the range checked, linked to the event `after`, and whether it reached the chain's head); paging through with `verify=true` verifies the whole chain |
//! | `GET /v1/projects/{slug}/keys?after=&limit=` | keys | `{keys, next_after}`: a page of the keys' listings (hints, never a key) by id (`after` a key id, exclusive; `limit` 1–500, default 100; 400 `invalid_query` otherwise) |
//! | `POST /v1/projects/{slug}/keys` | keys | 201, the new key's plaintext once |
//! | `POST /v1/projects/{slug}/keys/{key_id}/rotate` | keys | 201, the successor's plaintext once |
//! | `DELETE /v1/projects/{slug}/keys/{key_id}` | keys | 204 |
//! | `POST /v1/projects/{slug}/keys/{key_id}/reveal` | keys, stepped up | an auto-rotated successor's plaintext, once |
//! | `POST /v1/keys/successor` | the presenting key itself | its auto-rotated successor, once |
//! | `POST /v1/auth/login` | public | the next step: `second_factor`, `enrollment`, or `authenticated` (a trusted device) |
//! | `POST /v1/auth/second-factor` | a challenge | session cookie; optionally a trusted-device cookie |
//! | `POST /v1/auth/enrollment` | a challenge | the TOTP secret, its `otpauth://` URI and the QR code as SVG |
//! | `POST /v1/auth/enrollment/confirm` | a challenge | session cookie and ten backup codes, once |
//! | `POST /v1/auth/step-up` | session | 204: sensitive operations allowed for 10 minutes; the session is renewed (new session and CSRF cookies, the old token ends) |
//! | `POST /v1/auth/logout`, `/v1/auth/logout-everywhere` | session | 204, cookies cleared |
//! | `GET /v1/me/sessions` | session | the account's sessions and trusted devices |
//! | `DELETE /v1/me/sessions/{id}` | session | 204 |
//! | `DELETE /v1/me/devices`, `/v1/me/devices/{id}` | session, stepped up | how many were revoked |
//! | `POST /v1/me/backup-codes` | session, stepped up | ten new backup codes, once |
//! | `POST /v1/me/password` | session | `{csrf_token, expires_at}`: the password changed (current one checked, the policy's feedback as 422), every other session and every trusted device ended, this session renewed |
//! | `GET /v1/me/export?after=` | session | the GDPR Article 15 export (JSON attachment, `echorelay.personal-data.v2`): at most 1000 audit events per document, `next_after` (a cursor, docs/FORMATS.md §3.4) until the last |
//! | `GET /.well-known/security.txt` | public | RFC 9116 text |
//! | `GET /licenses` | public | every direct dependency's license text and copyright notice (HTML) |
//! | `GET /account`, `/account/sign-in`, … | browser | the account pages ([`pages`]): HTML forms, not part of the OpenAPI document |
//! | `POST /mcp` | API key, verified per request and per tool call | MCP (JSON-RPC, streamable HTTP, stateless): `list_projects`, `read_config`, `list_keys`, `list_messages`, `read_message`, `recent_audit_events`; secrets masked ([`mcp`]) |
//!
//! Project routes take an API key or a session cookie; a
//! cookie-authenticated write needs `X-CSRF-Token` ([`cookies`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod account;
pub mod auth;
pub mod client;
pub mod cookies;
pub mod delivery;
pub mod error;
pub mod headers;
pub mod inbound;
pub mod json;
pub mod mcp;
pub mod openapi;
pub mod operations;
pub mod pages;
pub mod routes;
pub mod security_txt;
pub mod server;
pub mod tls;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use echorelay::EchoRelay;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    /// The rendered security.txt and its `Expires`.
    security_txt: Option<(Arc<str>, chrono::DateTime<chrono::Utc>)>,
}

/// Why the router cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configured security.txt is refused.
    #[error(transparent)]
    SecurityTxt(#[from] SecurityTxtError),
    /// The OpenAPI document could not be serialized.
    #[error("cannot write the OpenAPI document: {0}")]
    OpenApi(serde_json::Error),
}

/// The whole HTTP API over `relay`. Serve it with [`server::serve`] (or
/// axum's with `into_make_service_with_connect_info::<SocketAddr>()`): the
/// client address comes from the connection.
///
/// # Errors
/// [`StartError::SecurityTxt`] when the configured security.txt has
/// expired or expires more than a year from now (the relay's clock).
pub fn router(relay: EchoRelay, config: HttpConfig) -> Result<Router, StartError> {
    build(relay, config, None)
}

/// For the authentication-overhead benchmark only (feature `bench`): the
/// same router, but every authenticated route takes `key` as already
/// verified, without looking at the request's credential. Never serve
/// this: it authenticates everyone as `key`.
#[cfg(feature = "bench")]
pub fn bench_router_preauthenticated(
    relay: EchoRelay,
    config: HttpConfig,
    key: echorelay::prelude::VerifiedKey,
) -> Result<Router, StartError> {
    build(relay, config, Some(key))
}

fn build(
    relay: EchoRelay,
    config: HttpConfig,
    preauthenticated: Option<echorelay::prelude::VerifiedKey>,
) -> Result<Router, StartError> {
    let security_txt = match &config.security_txt {
        Some(file) => {
            file.validate(relay.clock().now())?;
            Some((Arc::from(file.render()), file.expires))
        }
        None => None,
    };
    let state = AppState {
        relay,
        config: Arc::new(config),
        security_txt,
    };
    // The router and the OpenAPI document come from the same lists: a
    // route cannot be served without being documented. One `routes!` per
    // path.
    let authenticated = OpenApiRouter::new()
        .routes(routes!(routes::lines, routes::create_line))
        .routes(routes!(routes::rename_line, routes::delete_line))
        .routes(routes!(routes::create_endpoint))
        .routes(routes!(routes::create_target))
        .routes(routes!(routes::delete_endpoint))
        .routes(routes!(
            routes::get_target,
            routes::update_target,
            routes::delete_target
        ))
        .routes(routes!(routes::rotate_signing_secret))
        .routes(routes!(operations::messages))
        .routes(routes!(operations::message))
        .routes(routes!(operations::dead_letters))
        .routes(routes!(operations::redrive))
        .routes(routes!(operations::redrive_all))
        .routes(routes!(operations::stats))
        .routes(routes!(routes::list_keys, routes::mint_key))
        .routes(routes!(routes::revoke_key))
        .routes(routes!(routes::rotate_key))
        .routes(routes!(routes::reveal_key))
        .routes(routes!(routes::record_billing))
        .routes(routes!(routes::members))
        .routes(routes!(routes::set_member, routes::remove_member))
        .routes(routes!(routes::audit_log))
        .routes(routes!(routes::collect_successor))
        .routes(routes!(account::step_up))
        .routes(routes!(account::logout))
        .routes(routes!(account::logout_everywhere))
        .routes(routes!(account::access_list))
        .routes(routes!(account::end_session))
        .routes(routes!(account::revoke_all_devices))
        .routes(routes!(account::revoke_device))
        .routes(routes!(account::regenerate_backup_codes))
        .routes(routes!(account::change_password))
        .routes(routes!(account::export));
    let authenticated = match preauthenticated {
        None => authenticated.route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        )),
        Some(key) => authenticated.route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::preauthenticated(key),
        )),
    };
    // The inbound door takes bodies up to the relay's limit (one more
    // byte, so an over-limit body is told from a limit-sized one).
    let inbound_routes =
        OpenApiRouter::new()
            .routes(routes!(inbound::accept))
            .layer(DefaultBodyLimit::max(
                state.relay.relay().config().max_body.saturating_add(1),
            ));
    let (app, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(account::login))
        .routes(routes!(account::second_factor))
        .routes(routes!(account::begin_enrollment))
        .routes(routes!(account::confirm_enrollment))
        .routes(routes!(security_txt_page))
        .routes(routes!(openapi_json))
        .routes(routes!(licenses_page))
        .merge(inbound_routes)
        .merge(authenticated)
        .split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    openapi::close_variants(&mut doc);
    openapi::optional_inbound_body(&mut doc);
    let doc: Arc<str> = Arc::from(doc.to_pretty_json().map_err(StartError::OpenApi)?);
    Ok(app
        .merge(mcp::router(state.clone()))
        .merge(pages::router())
        .fallback(not_found)
        .layer(axum::Extension(OpenApiDocument(doc)))
        .layer(DefaultBodyLimit::max(json::BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            headers::outer,
        ))
        .with_state(state))
}

/// The served OpenAPI document (a request extension).
#[derive(Clone)]
struct OpenApiDocument(Arc<str>);

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = serde_json::Value)),
    security(())
)]
async fn openapi_json(
    axum::Extension(OpenApiDocument(doc)): axum::Extension<OpenApiDocument>,
) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        doc.to_string(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// The licenses of the crates the server is built from
/// (`assets/licenses.html`, made by cargo-about with `scripts/licenses.sh`;
/// `tests/licenses.rs` fails when it is stale against Cargo.lock).
const LICENSES: &str = include_str!("../assets/licenses.html");

/// Every direct dependency's license text and copyright notice.
#[utoipa::path(
    get,
    path = "/licenses",
    tag = "meta",
    responses((status = 200, description = "An HTML page", body = String, content_type = "text/html; charset=utf-8")),
    security(())
)]
async fn licenses_page() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        LICENSES,
    )
        .into_response()
}

/// The security.txt (RFC 9116), when configured and not expired.
///
/// `Expires` is checked on every request (the relay's clock), not only at
/// start: a server that runs past it answers 404, as without one, and
/// logs a warning. RFC 9116 §2.5.5 asks readers to treat an expired file
/// as stale; serving it would point researchers at contacts nobody
/// vouches for any longer. Renew it and restart.
#[utoipa::path(
    get,
    path = "/.well-known/security.txt",
    tag = "meta",
    responses(
        (status = 200, description = "The file", body = String, content_type = "text/plain; charset=utf-8"),
        crate::openapi::NotFound
    ),
    security(())
)]
async fn security_txt_page(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Response {
    let now = state.relay.clock().now();
    match &state.security_txt {
        Some((_, expires)) if *expires <= now => {
            tracing::warn!(%expires, "security.txt has expired: answering 404 until it is renewed");
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no current security.txt",
            )
            .into_response()
        }
        Some((text, _)) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            text.to_string(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no security.txt is configured",
        )
        .into_response(),
    }
}
