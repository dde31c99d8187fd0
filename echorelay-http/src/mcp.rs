//! The MCP read API: six read-only tools over the Model Context Protocol
//! (rmcp, streamable HTTP) at [`PATH`], for an API key.
//!
//! | tool | surface | answer |
//! |---|---|---|
//! | `list_projects` | config read | the key's project (a key belongs to exactly one): slug and name |
//! | `read_config` `{project}` | config read | lines, endpoints and targets; secrets masked |
//! | `list_keys` `{project, after?, limit?}` | keys | a page of the keys' listings (hints, never a key), by id: after the key id `after`, `limit` of them (default 100, 1 to 500, else an invalid-params error), with `next_after` as over HTTP |
//! | `list_messages` `{project, before?, limit?}` | config read | a page of the project's messages, newest first (never their bodies), with `next_before` as over HTTP |
//! | `read_message` `{project, message}` | config read | the message, where each delivery stands and its attempts (status, latency, error class, an excerpt of the answer; never a credential) |
//! | `recent_audit_events` `{project, limit?, verify?}` | audit read | the newest `limit` events (default 50, at most 500), oldest first; with `verify: true` those events verified as `GET …/audit?verify=true` verifies a page (`chain`) |
//!
//! Authentication is per HTTP request, never per MCP session (S3):
//!
//! - [`router`] puts a layer on the route that answers the one 401
//!   (`WWW-Authenticate: Bearer realm="echorelay"`, the REST API's body)
//!   unless `Authorization: Bearer …` verifies, so a client sees
//!   HTTP-level authentication on `initialize` and on every later request.
//! - Every tool call verifies the bearer of the request it arrived on
//!   again (rmcp hands each request's [`Parts`] to the handler) and asks
//!   the voter for a grant of its surface. Nothing verified is kept
//!   between calls, so a revoked key fails on the next call even if this
//!   module is ever mounted without the layer, or served with sessions.
//!
//! Only an API key is accepted: a session cookie is no credential here, so
//! there is nothing ambient for a browser to send (no CSRF).
//!
//! Tool failures are JSON-RPC errors with a fixed message and the REST
//! API's stable code in `data.error`: `unauthenticated` (-32001),
//! `forbidden` (-32003: the same for an unknown project, another
//! project's, and a role without the surface), `not_found` (-32002: a
//! message that is not the project's), `invalid_query` (-32602:
//! arguments out of range), `unavailable` (-32004) and
//! `internal` (-32603). No message carries the key, a secret or any other
//! value from the request.
//!
//! Transport: stateless, answering with plain JSON (rmcp's
//! `legacy_session_mode = false`, `json_response = true`). There is no
//! session table, no per-session task and no SSE stream to keep alive or
//! to outlive a key; the tools never talk back to the client mid-call, so
//! nothing needs a session. rmcp's
//! `Host` allow-list (loopback names by default, 403 otherwise) is
//! switched off: it defends unauthenticated servers on localhost against
//! DNS rebinding, and here every request needs a bearer key that a
//! rebinding page does not have. [`crate::headers::outer`] still decides
//! who the client is and whether TLS is required.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use echorelay::EchoRelay;
use echorelay::core::audit::AuditEvent;
use echorelay::core::ids::KeyId;
use echorelay::core::ports::{AuditLog as _, MAX_LIST_PAGE};
use echorelay::prelude::{
    AuditRead, Caller, ConfigRead, ExposeSecret, Grant, Keys, ProjectId, SecretString, SurfaceKind,
};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ErrorCode, Extensions};
use rmcp::schemars::JsonSchema;
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::bearer;
use crate::client::ClientInfo;
use crate::error::ApiError;
use crate::routes::{ChainAnswer, KeysAnswer, LinesAnswer};

/// Where the MCP endpoint is served.
pub const PATH: &str = "/mcp";

/// Keys `list_keys` returns without a `limit`.
const DEFAULT_KEYS: u32 = 100;
/// Events `recent_audit_events` returns without a `limit`.
const DEFAULT_EVENTS: u32 = 50;
/// The most events `recent_audit_events` returns.
const MAX_EVENTS: u32 = 500;

/// The MCP endpoint: POST [`PATH`] (JSON-RPC), behind the bearer-key
/// layer. Merge it into the application router, inside
/// [`crate::headers::outer`].
pub fn router(state: AppState) -> Router<AppState> {
    let relay = state.relay;
    Router::new()
        .route_service(PATH, service(relay.clone()))
        .route_layer(middleware::from_fn(envelope))
        .route_layer(middleware::from_fn_with_state(relay, require_key))
}

/// Whether `body` is a JSON-RPC 2.0 request or notification exactly as the
/// document's `JsonRpcMessage` states: an object with `jsonrpc: "2.0"`, a
/// string `method`, an optional integer or string `id` (never `null`), an
/// optional object (or `null`) `params`, and nothing else.
fn is_envelope(body: &[u8]) -> bool {
    let Ok(serde_json::Value::Object(m)) = serde_json::from_slice(body) else {
        return false;
    };
    let known = m
        .keys()
        .all(|k| matches!(k.as_str(), "jsonrpc" | "id" | "method" | "params"));
    let id = match m.get("id") {
        None | Some(serde_json::Value::String(_)) => true,
        Some(serde_json::Value::Number(n)) => n.is_i64(),
        Some(_) => false,
    };
    known
        && id
        && m.get("jsonrpc").and_then(|v| v.as_str()) == Some("2.0")
        && m.get("method").is_some_and(serde_json::Value::is_string)
        && m.get("params").is_none_or(|p| p.is_object() || p.is_null())
}

/// The layer under the key check: a POST whose body is not a JSON-RPC
/// message as documented is answered 400 here, before rmcp (which takes
/// some such bodies and answers others 415).
async fn envelope(req: Request, next: Next) -> Response {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, crate::json::BODY_LIMIT).await else {
        return ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {} bytes", crate::json::BODY_LIMIT),
        )
        .into_response();
    };
    if !is_envelope(&bytes) {
        return ApiError::bad_request(
            "invalid_message",
            "not a JSON-RPC 2.0 request or notification (jsonrpc, method, id, params)",
        )
        .into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// rmcp's streamable HTTP service, stateless with JSON answers.
fn service(relay: EchoRelay) -> StreamableHttpService<ReadApi, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        // The bearer key is the defence; see the module docs.
        .disable_allowed_hosts()
        // Tool arguments are a slug and a number.
        .with_max_request_body_bytes(crate::json::BODY_LIMIT);
    // Stateless: the factory runs for every POST. Build the tool table once.
    let tools = ReadApi::tool_router();
    StreamableHttpService::new(
        move || {
            Ok(ReadApi {
                relay: relay.clone(),
                tool_router: tools.clone(),
            })
        },
        std::sync::Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// The layer: the one 401 unless the request's bearer key verifies (503
/// if the store cannot be reached). The tools verify it again.
async fn require_key(State(relay): State<EchoRelay>, req: Request, next: Next) -> Response {
    let Some(token) = bearer(req.headers()) else {
        return ApiError::unauthenticated().into_response();
    };
    if let Err(e) = relay.keys().verify(token).await {
        return ApiError::from(e).into_response();
    }
    next.run(req).await
}

/// The MCP server of one request. It holds no caller: each tool call
/// authenticates its own request.
#[derive(Clone)]
struct ReadApi {
    relay: EchoRelay,
    tool_router: ToolRouter<Self>,
}

/// The argument of the tools that read one project.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
struct ProjectArgs {
    /// The project's slug (as in `/v1/projects/{slug}`).
    project: String,
}

/// The arguments of `list_keys`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
struct KeysArgs {
    /// The project's slug (as in `/v1/projects/{slug}`).
    project: String,
    /// The page after this key id (`key_` and 32 hex digits; the
    /// `next_after` of the page before). Absent: from the first.
    #[serde(default)]
    #[schemars(regex(pattern = r"^key_[0-9a-fA-F]{32}$"))]
    after: Option<String>,
    /// Page size: default 100, 1 to 500.
    #[serde(default)]
    #[schemars(range(min = 1, max = 500))]
    limit: Option<u32>,
}

/// The arguments of `list_messages`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
struct MessagesArgs {
    /// The project's slug (as in `/v1/projects/{slug}`).
    project: String,
    /// The page after this message (`msg_` and 32 hex digits; the
    /// `next_before` of the page before), newest first. Absent: the newest.
    #[serde(default)]
    #[schemars(regex(pattern = r"^msg_[0-9a-fA-F]{32}$"))]
    before: Option<String>,
    /// Page size: default 100, 1 to 500.
    #[serde(default)]
    #[schemars(range(min = 1, max = 500))]
    limit: Option<u32>,
}

/// The arguments of `read_message`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
struct MessageArgs {
    /// The project's slug (as in `/v1/projects/{slug}`).
    project: String,
    /// The message's id (`msg_` and 32 hex digits).
    #[schemars(regex(pattern = r"^msg_[0-9a-fA-F]{32}$"))]
    message: String,
}

/// The answer of `list_messages`.
#[derive(Debug, Serialize)]
struct MessagesPage {
    messages: Vec<echorelay::core::deliveries::MessageRecord>,
    next_before: Option<echorelay::core::ids::MessageId>,
}

/// The arguments of `recent_audit_events`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
#[serde(deny_unknown_fields)]
struct AuditArgs {
    /// The project's slug (as in `/v1/projects/{slug}`).
    project: String,
    /// How many of the newest events: default 50, at most 500.
    #[serde(default)]
    #[schemars(range(min = 1, max = 500))]
    limit: Option<u32>,
    /// Also verify those events, their link to the event before them and,
    /// at the chain's head, the sealed head (`chain` in the answer).
    #[serde(default)]
    verify: Option<bool>,
}

/// The answer of `list_projects`.
#[derive(Debug, Serialize)]
struct ProjectsAnswer {
    projects: Vec<ProjectSummary>,
}

/// One project, as `list_projects` shows it.
#[derive(Debug, Serialize)]
struct ProjectSummary {
    slug: String,
    name: String,
}

/// The answer of `recent_audit_events`.
#[derive(Debug, Serialize)]
struct RecentEvents {
    /// The newest events, oldest first.
    events: Vec<AuditEvent>,
    /// The chain's newest sequence number when read (0: no events).
    head: u64,
    /// With `verify: true`: what verifying these events found.
    #[serde(skip_serializing_if = "Option::is_none")]
    chain: Option<ChainAnswer>,
}

#[tool_router]
impl ReadApi {
    /// The project this API key belongs to (a key sees exactly one): its slug and name.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn list_projects(
        &self,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let (caller, project) = self.authenticate(&ctx.extensions).await?;
        let grant: Grant<ConfigRead> = self
            .relay
            .voter()
            .authorize_id(&caller, project)
            .await
            .map_err(tool_error)?;
        let project = grant.project();
        answer(&ProjectsAnswer {
            projects: vec![ProjectSummary {
                slug: project.slug.to_string(),
                name: project.name.clone(),
            }],
        })
    }

    /// The project's lines with their endpoints and targets; every secret is masked.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn read_config(
        &self,
        Parameters(ProjectArgs { project }): Parameters<ProjectArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let grant = self.grant::<ConfigRead>(&ctx.extensions, &project).await?;
        let lines = self
            .relay
            .config()
            .lines(&grant)
            .await
            .map_err(tool_error)?;
        answer(&LinesAnswer { lines })
    }

    /// A page of the project's API keys as listed, by id: hints, never a key (owner keys, where the project lets keys manage keys). `after`: the `next_after` of the page before; `limit`: 1 to 500 (default 100).
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn list_keys(
        &self,
        Parameters(KeysArgs {
            project,
            after,
            limit,
        }): Parameters<KeysArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let grant = self.grant::<Keys>(&ctx.extensions, &project).await?;
        let after = after
            .map(|a| a.parse::<KeyId>())
            .transpose()
            .map_err(|_| invalid_params())?;
        let limit = usize::try_from(limit.unwrap_or(DEFAULT_KEYS))
            .ok()
            .filter(|l| (1..=MAX_LIST_PAGE).contains(l))
            .ok_or_else(invalid_params)?;
        let keys = self
            .relay
            .keys()
            .list_page(&grant, after, limit)
            .await
            .map_err(tool_error)?;
        let next_after = (keys.len() == limit)
            .then(|| keys.last().map(|k| k.id))
            .flatten();
        answer(&KeysAnswer { keys, next_after })
    }

    /// A page of the project's messages, newest first (never their bodies). `before`: the `next_before` of the page before; `limit`: 1 to 500 (default 100).
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn list_messages(
        &self,
        Parameters(MessagesArgs {
            project,
            before,
            limit,
        }): Parameters<MessagesArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let grant = self.grant::<ConfigRead>(&ctx.extensions, &project).await?;
        let before = before
            .map(|b| b.parse::<echorelay::core::ids::MessageId>())
            .transpose()
            .map_err(|_| invalid_params())?;
        let limit = usize::try_from(limit.unwrap_or(DEFAULT_KEYS))
            .ok()
            .filter(|l| (1..=echorelay::core::deliveries::MAX_LOG_PAGE).contains(l))
            .ok_or_else(invalid_params)?;
        let messages = self
            .relay
            .operations()
            .messages(&grant, before, limit)
            .await
            .map_err(tool_error)?;
        let next_before = (messages.len() == limit)
            .then(|| messages.last().map(|m| m.id))
            .flatten();
        answer(&MessagesPage {
            messages,
            next_before,
        })
    }

    /// One of the project's messages: where each of its deliveries stands and its attempts (status, latency, error class, an excerpt of the answer; never a credential).
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn read_message(
        &self,
        Parameters(MessageArgs { project, message }): Parameters<MessageArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let grant = self.grant::<ConfigRead>(&ctx.extensions, &project).await?;
        let id = message
            .parse::<echorelay::core::ids::MessageId>()
            .map_err(|_| invalid_params())?;
        let detail = self
            .relay
            .operations()
            .message(&grant, id)
            .await
            .map_err(tool_error)?;
        answer(&detail)
    }

    /// The newest events of the project's audit log, oldest first: `limit` of them (default 50, at most 500; owner keys). With `verify: true`, those events are verified too (`chain`), as `GET …/audit?verify=true` verifies a page.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn recent_audit_events(
        &self,
        Parameters(AuditArgs {
            project,
            limit,
            verify,
        }): Parameters<AuditArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let grant = self.grant::<AuditRead>(&ctx.extensions, &project).await?;
        let limit = limit.unwrap_or(DEFAULT_EVENTS).clamp(1, MAX_EVENTS);
        // Events come oldest first after a sequence number: start `limit`
        // before the head. The grant has already decided access.
        let head = self
            .relay
            .store()
            .head(Some(grant.project_id()))
            .await
            .map_err(|e| tool_error(e.into()))?
            .map_or(0, |h| h.seq);
        let after = head.saturating_sub(u64::from(limit));
        let page = usize::try_from(limit).unwrap_or(usize::MAX);
        let audit = self.relay.audit();
        let (events, chain) = if verify == Some(true) {
            match audit.verify_page(&grant, after, page).await {
                Ok(verified) => (verified.events, Some(ChainAnswer::from(verified.status))),
                Err(echorelay::Error::Audit(b)) => (
                    audit
                        .events(&grant, after, page)
                        .await
                        .map_err(tool_error)?,
                    Some(ChainAnswer::Broken {
                        seq: b.seq,
                        problem: b.problem.to_string(),
                    }),
                ),
                Err(e) => return Err(tool_error(e)),
            }
        } else {
            (
                audit
                    .events(&grant, after, page)
                    .await
                    .map_err(tool_error)?,
                None,
            )
        };
        answer(&RecentEvents {
            events,
            head,
            chain,
        })
    }
}

impl ReadApi {
    /// Authenticates the request a call arrived on: its bearer key,
    /// verified now, and the client address [`crate::headers::outer`]
    /// worked out. Returns the caller and its key's project.
    async fn authenticate(&self, ext: &Extensions) -> Result<(Caller, ProjectId), ErrorData> {
        // rmcp puts each HTTP request's parts into the extensions of the
        // JSON-RPC message it carried; without them (not over HTTP) there
        // is no credential.
        let (token, ip) = {
            let parts = ext.get::<Parts>().ok_or_else(unauthenticated)?;
            let token = bearer(&parts.headers).ok_or_else(unauthenticated)?;
            // The outer layer put the client in; without it, no guess.
            let ip = parts
                .extensions
                .get::<ClientInfo>()
                .map(|c| c.ip)
                .ok_or_else(unauthenticated)?;
            (SecretString::from(token), Some(ip))
        };
        let key = self
            .relay
            .keys()
            .verify(token.expose_secret())
            .await
            .map_err(tool_error)?;
        let project = key.project();
        Ok((Caller::api_key(key, ip), project))
    }

    /// A grant of surface `S` in the project `slug` for this call's caller.
    async fn grant<S: SurfaceKind>(
        &self,
        ext: &Extensions,
        slug: &str,
    ) -> Result<Grant<S>, ErrorData> {
        let (caller, _) = self.authenticate(ext).await?;
        self.relay
            .voter()
            .authorize::<S>(&caller, slug)
            .await
            .map_err(tool_error)
    }
}

#[tool_handler(
    router = self.tool_router,
    name = "echorelay",
    instructions = "Read-only access to the echorelay project of the API key sent as `Authorization: Bearer`. Secrets are always masked."
)]
impl ServerHandler for ReadApi {}

/// A tool's answer: the JSON as text, and as structured content.
fn answer<T: Serialize>(value: &T) -> Result<CallToolResult, ErrorData> {
    let value = serde_json::to_value(value).map_err(|e| {
        tracing::error!(error = %e, "an MCP answer did not serialize");
        internal()
    })?;
    Ok(CallToolResult::structured(value))
}

/// A core error as a tool error: its category, with a fixed message.
fn tool_error(e: echorelay::Error) -> ErrorData {
    // The REST API's classification, which also logs backend and internal
    // failures; its messages are not reused (only fixed text goes out).
    let api = ApiError::from(e);
    match api.status() {
        StatusCode::UNAUTHORIZED => unauthenticated(),
        StatusCode::FORBIDDEN => forbidden(),
        StatusCode::SERVICE_UNAVAILABLE => unavailable(),
        // A message that is not the project's (or none): as over HTTP.
        StatusCode::NOT_FOUND => error(-32002, "not_found", "not found"),
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => invalid_params(),
        _ => {
            tracing::error!(code = api.code(), "an MCP read failed");
            internal()
        }
    }
}

/// An error with a JSON-RPC code, a fixed message and the REST API's code.
fn error(code: i32, api_code: &'static str, message: &'static str) -> ErrorData {
    ErrorData::new(
        ErrorCode(code),
        message,
        Some(serde_json::json!({ "error": api_code })),
    )
}

/// Every authentication failure: missing, malformed, unknown, revoked or
/// expired key.
fn unauthenticated() -> ErrorData {
    error(-32001, "unauthenticated", "authentication required")
}

/// Every denial: unknown project, another project, a role without the
/// surface.
fn forbidden() -> ErrorData {
    error(-32003, "forbidden", "not allowed")
}

/// The store could not be reached.
fn unavailable() -> ErrorData {
    error(
        -32004,
        "unavailable",
        "the service is unavailable, retry later",
    )
}

/// Tool arguments out of what the tool's schema states (a malformed key
/// id, a limit outside 1 to 500): never clamped.
fn invalid_params() -> ErrorData {
    error(
        ErrorCode::INVALID_PARAMS.0,
        "invalid_query",
        "an id is malformed, or a limit is not 1 to 500",
    )
}

/// Anything else (logged).
fn internal() -> ErrorData {
    error(ErrorCode::INTERNAL_ERROR.0, "internal", "internal error")
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use axum::http::header;
    use echorelay::prelude::{Environment, MintRequest, Role, UserId};

    use super::*;

    /// The extensions rmcp gives a call that arrived with `authorization`.
    fn arrived_with(authorization: &str, client: Option<IpAddr>) -> Extensions {
        let (mut parts, ()) = axum::http::Request::builder()
            .header(header::AUTHORIZATION, authorization)
            .body(())
            .unwrap()
            .into_parts();
        if let Some(ip) = client {
            parts.extensions.insert(ClientInfo { ip, https: false });
        }
        let mut ext = Extensions::new();
        ext.insert(parts);
        ext
    }

    /// S3 inside the tools, without the HTTP layer: each call verifies its
    /// own request, so a key revoked between two calls fails the second.
    #[tokio::test]
    async fn every_call_verifies_its_own_key() {
        let relay = EchoRelay::builder()
            .account_policy(echorelay_testkit::test_account_policy())
            .build()
            .unwrap();
        let owner = UserId::random();
        relay
            .config()
            .create_project(owner, None, "acme", "Acme")
            .await
            .unwrap();
        let keys = relay
            .voter()
            .authorize::<Keys>(&Caller::dangerous_user_stepped_up(owner, None), "acme")
            .await
            .unwrap();
        let minted = relay
            .keys()
            .mint(
                &keys,
                MintRequest {
                    environment: Environment::Test,
                    role: Role::Viewer,
                    label: "mcp".into(),
                },
            )
            .await
            .unwrap();
        let api = ReadApi {
            relay: relay.clone(),
            tool_router: ReadApi::tool_router(),
        };
        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        let ext = arrived_with(
            &format!("Bearer {}", minted.plaintext.expose_secret()),
            Some(ip),
        );

        let (caller, project) = api.authenticate(&ext).await.unwrap();
        assert_eq!(caller.ip, Some(ip), "the address headers::outer found");
        assert_eq!(project, keys.project_id());
        assert!(api.grant::<ConfigRead>(&ext, "acme").await.is_ok());
        assert_eq!(
            api.grant::<Keys>(&ext, "acme").await.unwrap_err(),
            forbidden(),
            "a viewer"
        );

        // A good key on a request without the client address the outer
        // layer works out: refused, not served without an address.
        let no_client = arrived_with(
            &format!("Bearer {}", minted.plaintext.expose_secret()),
            None,
        );
        assert_eq!(
            api.authenticate(&no_client).await.unwrap_err(),
            unauthenticated()
        );

        relay.keys().revoke(&keys, minted.view.id).await.unwrap();
        assert_eq!(api.authenticate(&ext).await.unwrap_err(), unauthenticated());
        assert_eq!(
            api.grant::<ConfigRead>(&ext, "acme").await.unwrap_err(),
            unauthenticated()
        );

        // No request parts (not over HTTP), another scheme, no token: the same.
        for ext in [
            Extensions::new(),
            arrived_with("Basic x", None),
            arrived_with("Bearer ", None),
        ] {
            assert_eq!(api.authenticate(&ext).await.unwrap_err(), unauthenticated());
        }
    }

    #[test]
    fn errors_carry_fixed_text_and_the_rest_codes() {
        let denied = tool_error(echorelay::core::access::AccessDenied.into());
        assert_eq!(denied, forbidden());
        assert_eq!(
            denied.data,
            Some(serde_json::json!({ "error": "forbidden" }))
        );
        assert_eq!(
            tool_error(echorelay::Error::Unauthenticated),
            unauthenticated()
        );
        assert_eq!(tool_error(echorelay::Error::Unavailable), unavailable());
        assert_eq!(
            tool_error(echorelay::Error::InvalidInput("x")),
            invalid_params()
        );
        let missing = tool_error(echorelay::core::StoreError::NotFound { kind: "message" }.into());
        assert_eq!(
            missing.data,
            Some(serde_json::json!({ "error": "not_found" }))
        );
        assert_eq!(missing.code, ErrorCode(-32002));
        let vault = tool_error(echorelay::core::vault::VaultError::Decrypt.into());
        assert_eq!(vault, internal());
    }
}

/// For the OpenAPI document only: the MCP endpoint (JSON-RPC 2.0 over the
/// MCP streamable HTTP transport, stateless, JSON answers). The body is a
/// JSON-RPC request (`initialize`, `tools/list`, `tools/call`); see the
/// MCP specification.
#[utoipa::path(
    post,
    path = "/mcp",
    tag = "mcp",
    request_body(content = JsonRpcMessage, description = "A JSON-RPC 2.0 request or notification", content_type = "application/json"),
    responses(
        (status = 200, description = "A JSON-RPC 2.0 answer (tool failures are JSON-RPC errors: -32001 unauthenticated, -32002 not found, -32003 forbidden, -32004 unavailable, -32602 invalid arguments)", body = serde_json::Value),
        (status = 202, description = "A notification was accepted"),
        (status = 400, description = "Not a JSON-RPC request"),
        (status = 405, description = "Not POST (the endpoint is stateless: no GET stream, no DELETE)"),
        (status = 406, description = "The Accept header does not allow JSON"),
        (status = 413, description = "The body is larger than 64 KiB"),
        (status = 415, description = "Not application/json"),
        (status = 422, description = "A JSON-RPC request the server cannot take"),
        crate::openapi::AuthErrors
    ),
    security(("api_key" = []))
)]
#[allow(dead_code)]
pub(crate) fn documented() {}

/// For the OpenAPI document only: a JSON-RPC id.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub(crate) enum JsonRpcId {
    /// A number.
    Number(i64),
    /// A string.
    String(String),
}

/// For the OpenAPI document only: a JSON-RPC 2.0 request (with `id`) or
/// notification (without), as the MCP client sends it.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct JsonRpcMessage {
    /// Always `2.0`.
    #[schema(value_type = String, pattern = "^2\\.0$")]
    jsonrpc: String,
    /// The request's id (a notification has none; never `null`).
    #[schema(nullable = false)]
    id: Option<JsonRpcId>,
    /// The method, e.g. `initialize`, `tools/list`, `tools/call`.
    method: String,
    /// The method's parameters (`null`: none).
    params: Option<std::collections::HashMap<String, serde_json::Value>>,
}
