//! The outer layers every request passes: who the client is, TLS only,
//! and the security headers on every response.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::client::TlsConnection;
use crate::error::ApiError;

/// Works out the client ([`ClientInfo`](crate::client::ClientInfo): address, TLS) from the connection
/// and, for a trusted proxy only, its headers; refuses a request whose
/// trusted proxy names no usable client (400 `client_unknown`,
/// [`UnknownClient`](crate::client::UnknownClient)); refuses plaintext requests
/// when TLS is required; sets the security headers on every answer
/// (`nosniff`, frame denial, no referrer, HSTS when TLS is required, and
/// `no-store` on every JSON answer: they are per caller).
pub async fn outer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let tls = req.extensions().get::<TlsConnection>().is_some();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let mut response = match peer {
        None => {
            // A server that does not say who is connected cannot pin
            // sessions or throttle: refuse rather than guess.
            tracing::error!("request without connection info: serve with connect info");
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
            .into_response()
        }
        Some(peer) => match state.config.proxies.client(peer, req.headers(), tls) {
            // A trusted proxy that names no client (or garbage): refused,
            // never taken as the proxy's own address (that would pin
            // sessions, throttle and audit by the proxy). The body is
            // generic: no echo of the header.
            Err(why) => {
                tracing::info!(%peer, reason = %why, "refused: the proxy named no usable client address");
                ApiError::bad_request(
                    "client_unknown",
                    "the forwarding proxy did not name the client",
                )
                .into_response()
            }
            Ok(client) if state.config.require_tls && !client.https => ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "tls_required",
                "this service answers over HTTPS only",
            )
            .into_response(),
            Ok(client) => {
                req.extensions_mut().insert(client);
                next.run(req).await
            }
        },
    };
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The account pages set their own (as strict: no inline script or
    // style); every other answer allows nothing at all.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if state.config.require_tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    let json = h
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
