//! The MCP read API end to end: rmcp's own client over streamable HTTP
//! against the whole router (the same outer layers as the REST API), on
//! every store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{StatusCode, header};
use common::*;
use echorelay::prelude::*;
use echorelay_http::HttpConfig;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{ClientInitializeError, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ErrorData, RoleClient, ServiceError, ServiceExt};
use serde_json::{Value, json};

/// The challenge of the one 401.
const CHALLENGE: &str = "Bearer realm=\"echorelay\"";

/// An MCP client session.
type Mcp = RunningService<RoleClient, ()>;

/// Opens an MCP session on `server` that sends `key` as the bearer of
/// every request (rmcp's `auth_header` takes the token without `Bearer `).
async fn connect(server: &Server, key: Option<&str>) -> Result<Mcp, ClientInitializeError> {
    // rmcp's client is reqwest 0.13, which (with the workspace's features
    // unified: echorelay-store-s3 builds it without a bundled rustls
    // provider) needs the process default installed first, as any
    // embedder's reqwest client does (echorelay-store-s3 docs).
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let mut config =
        StreamableHttpClientTransportConfig::with_uri(format!("http://{}/mcp", server.addr));
    if let Some(key) = key {
        config = config.auth_header(key);
    }
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
}

async fn call(
    mcp: &Mcp,
    tool: &'static str,
    arguments: Value,
) -> Result<CallToolResult, ServiceError> {
    let Value::Object(arguments) = arguments else {
        panic!("tool arguments are an object");
    };
    mcp.call_tool(CallToolRequestParams::new(tool).with_arguments(arguments))
        .await
}

/// The JSON-RPC error a call was answered with.
fn mcp_error(outcome: Result<CallToolResult, ServiceError>) -> ErrorData {
    match outcome {
        Err(ServiceError::McpError(e)) => e,
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

/// Everything a result carries (text and structured content).
fn everything(result: &CallToolResult) -> String {
    serde_json::to_string(result).unwrap()
}

/// The `seq` of each event `recent_audit_events` returned.
fn seqs(result: &CallToolResult) -> Vec<u64> {
    result.structured_content.as_ref().expect("structured")["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("a seq"))
        .collect()
}

async fn a_viewer_key_lists_the_tools_and_reads_its_project_masked(w: World) {
    w.project("acme").await;
    let (key, _) = w.key("acme", Role::Viewer).await;
    let server = w.serve(HttpConfig::local()).await;
    let mcp = connect(&server, Some(&key))
        .await
        .expect("a good key connects");

    let tools = mcp.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| &*t.name).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "list_keys",
            "list_messages",
            "list_projects",
            "read_config",
            "read_message",
            "recent_audit_events"
        ]
    );
    for tool in &tools {
        assert_eq!(
            tool.annotations.as_ref().and_then(|a| a.read_only_hint),
            Some(true),
            "{} says it is read-only",
            tool.name
        );
    }

    let projects = call(&mcp, "list_projects", json!({})).await.unwrap();
    assert_eq!(
        projects.structured_content,
        Some(json!({"projects": [{"slug": "acme", "name": "A project"}]}))
    );

    let config = call(&mcp, "read_config", json!({"project": "acme"}))
        .await
        .unwrap();
    assert_ne!(config.is_error, Some(true));
    let text = &config.content[0].as_text().expect("a text block").text;
    assert!(text.contains("shop.example.com"), "the target: {text}");
    assert!(text.contains("••••"), "its token, masked: {text}");
    let all = everything(&config);
    assert!(!all.contains(TARGET_TOKEN), "the token itself: {all}");
    assert!(!all.contains(&key));
}

async fn roles_decide_the_tools_and_other_projects_look_unknown(w: World) {
    w.project("acme").await;
    w.project("umbrella").await;
    let (viewer, _) = w.key("acme", Role::Viewer).await;
    let (owner, _) = w.key("acme", Role::Owner).await;
    let (stranger, _) = w.key("umbrella", Role::Owner).await;
    let server = w.serve(HttpConfig::local()).await;
    let acme = json!({"project": "acme"});

    // A viewer reads configuration only.
    let v = connect(&server, Some(&viewer)).await.unwrap();
    let denied = mcp_error(call(&v, "list_keys", acme.clone()).await);
    assert_eq!(denied.data, Some(json!({"error": "forbidden"})));
    assert_eq!(
        mcp_error(call(&v, "recent_audit_events", acme.clone()).await),
        denied
    );

    // Another project's key: acme looks exactly like no project at all.
    let s = connect(&server, Some(&stranger)).await.unwrap();
    let foreign = mcp_error(call(&s, "read_config", acme.clone()).await);
    let unknown = mcp_error(call(&s, "read_config", json!({"project": "no-such-project"})).await);
    assert_eq!(foreign, unknown);
    assert_eq!(foreign, denied, "one denial, whatever the reason");
    let said = serde_json::to_string(&[&denied, &foreign]).unwrap();
    for secret in [&viewer, &owner, &stranger] {
        assert!(!said.contains(secret.as_str()), "an error echoes no key");
    }

    // An owner key gets both.
    let o = connect(&server, Some(&owner)).await.unwrap();
    let keys = call(&o, "list_keys", acme.clone()).await.unwrap();
    assert_ne!(keys.is_error, Some(true));
    let listed = everything(&keys);
    for secret in [&viewer, &owner] {
        assert!(!listed.contains(secret.as_str()), "a listing shows no key");
    }
    let count = keys.structured_content.as_ref().unwrap()["keys"]
        .as_array()
        .map(Vec::len);
    assert_eq!(count, Some(2), "acme's two keys: {listed}");

    let newest = call(
        &o,
        "recent_audit_events",
        json!({"project": "acme", "limit": 2}),
    )
    .await
    .unwrap();
    let log = w.audit("acme").await;
    let tail: Vec<u64> = log[log.len() - 2..].iter().map(|e| e.seq).collect();
    assert_eq!(seqs(&newest), tail, "the two newest, oldest first");
    let page = call(&o, "recent_audit_events", acme).await.unwrap();
    assert_eq!(seqs(&page).len(), log.len().min(50), "50 by default");
}

/// `list_keys` pages by id like `GET …/keys` (`after`, `limit`,
/// `next_after`; out of range is an invalid-params error, not clamped),
/// and `recent_audit_events` with `verify: true` verifies the events it
/// returns, up to the chain's head.
async fn list_keys_pages_and_recent_events_verify(w: World) {
    w.project("acme").await;
    let (owner, owner_id) = w.key("acme", Role::Owner).await;
    let (_, viewer_id) = w.key("acme", Role::Viewer).await;
    let mut ids = [owner_id.to_string(), viewer_id.to_string()];
    ids.sort();
    let server = w.serve(HttpConfig::local()).await;
    let o = connect(&server, Some(&owner)).await.unwrap();
    let first = call(&o, "list_keys", json!({"project": "acme", "limit": 1}))
        .await
        .unwrap();
    let first = first.structured_content.unwrap();
    assert_eq!(first["keys"][0]["id"], ids[0]);
    assert_eq!(first["next_after"], ids[0]);
    let rest = call(
        &o,
        "list_keys",
        json!({"project": "acme", "after": ids[0], "limit": 5}),
    )
    .await
    .unwrap()
    .structured_content
    .unwrap();
    assert_eq!(rest["keys"].as_array().unwrap().len(), 1);
    assert_eq!(rest["keys"][0]["id"], ids[1]);
    assert_eq!(rest["next_after"], Value::Null);
    for bad in [
        json!({"project": "acme", "limit": 0}),
        json!({"project": "acme", "limit": 501}),
        json!({"project": "acme", "after": "key_zz"}),
    ] {
        let e = mcp_error(call(&o, "list_keys", bad.clone()).await);
        assert_eq!(e.code.0, -32602, "{bad}: {e:?}");
    }

    let log = w.audit("acme").await;
    let verified = call(
        &o,
        "recent_audit_events",
        json!({"project": "acme", "limit": 3, "verify": true}),
    )
    .await
    .unwrap();
    assert_eq!(seqs(&verified).len(), 3);
    let chain = &verified.structured_content.as_ref().unwrap()["chain"];
    let head = log.last().unwrap().seq;
    assert_eq!(chain["status"], "verified", "{chain}");
    assert_eq!(chain["after"], head - 3);
    assert_eq!(chain["through"], head);
    assert_eq!(chain["reached_head"], true);
    let plain = call(&o, "recent_audit_events", json!({"project": "acme"}))
        .await
        .unwrap();
    assert!(plain.structured_content.unwrap().get("chain").is_none());
}

async fn a_revoked_key_fails_on_the_next_call_of_the_same_session(w: World) {
    w.project("acme").await;
    let (key, id) = w.key("acme", Role::Viewer).await;
    let server = w.serve(HttpConfig::local()).await;
    let mcp = connect(&server, Some(&key)).await.unwrap();
    let acme = json!({"project": "acme"});
    let read = call(&mcp, "read_config", acme.clone()).await.unwrap();
    assert_ne!(read.is_error, Some(true));

    w.revoke("acme", id).await;

    // The same client session, the very next call.
    let refused = call(&mcp, "read_config", acme)
        .await
        .expect_err("a revoked key's next call");
    assert_eq!(refused.auth_challenge(), Some(CHALLENGE), "{refused:?}");
    assert!(call(&mcp, "list_projects", json!({})).await.is_err());
}

async fn connecting_without_a_good_key_fails(w: World) {
    w.project("acme").await;
    let (good, _) = w.key("acme", Role::Viewer).await;
    let (revoked, id) = w.key("acme", Role::Viewer).await;
    w.revoke("acme", id).await;
    let server = w.serve(HttpConfig::local()).await;

    let unknown = "er_test_0000000000000000000000000000000000000000";
    for key in [
        None,
        Some("not-a-key"),
        Some(unknown),
        Some(revoked.as_str()),
    ] {
        let refused = connect(&server, key)
            .await
            .expect_err("no session without a good key");
        assert_eq!(
            refused.auth_challenge(),
            Some(CHALLENGE),
            "{key:?}: {refused:?}"
        );
    }

    // Over plain HTTP: the REST API's one 401, with the outer layers.
    let mut c = server.connect().await;
    let missing = c.get("/mcp", None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers[header::WWW_AUTHENTICATE], CHALLENGE);
    assert_eq!(missing.json()["error"], "unauthenticated");
    assert_security_headers(&missing);
    // A good key passes, whatever the Host (this client sends
    // `relay.test`): rmcp's loopback-only Host check is off. A GET is
    // refused there only because the server is stateless (no SSE stream).
    assert_eq!(
        c.get("/mcp", Some(&good)).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

/// A message sent with an editor key is listed and read by a viewer key
/// over MCP, newest first and paged, with its delivery to the line's
/// target; another project's key and an unknown message see nothing.
async fn messages_are_listed_and_read_without_bodies(w: World) {
    w.project("acme").await;
    w.project("umbrella").await;
    let owner = Caller::dangerous_user_stepped_up(w.owner, Some(w.ip));
    let write = w
        .relay
        .voter()
        .authorize::<ConfigWrite>(&owner, "acme")
        .await
        .unwrap();
    let read = w
        .relay
        .voter()
        .authorize::<ConfigRead>(&owner, "acme")
        .await
        .unwrap();
    let line = w.relay.config().lines(&read).await.unwrap()[0].line.id;
    let endpoint = w
        .relay
        .config()
        .create_endpoint(&write, line, "in")
        .await
        .unwrap()
        .id;
    let (editor, _) = w.key("acme", Role::Editor).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        let body = format!("{{\"order\": {i}, \"secret-ish\": \"body-{i}-zz\"}}");
        let a = w
            .relay
            .relay()
            .accept(
                &editor,
                endpoint,
                Some("application/json"),
                None,
                body.into_bytes(),
                None,
            )
            .await
            .unwrap();
        sent.push(a.message.to_string());
        w.clock.advance(chrono::Duration::seconds(1));
    }
    let (viewer, _) = w.key("acme", Role::Viewer).await;
    let (stranger, _) = w.key("umbrella", Role::Owner).await;
    let server = w.serve(HttpConfig::local()).await;
    let v = connect(&server, Some(&viewer)).await.unwrap();
    let page = call(&v, "list_messages", json!({"project": "acme", "limit": 2}))
        .await
        .unwrap();
    let page = page.structured_content.expect("structured");
    let ids: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [sent[2].as_str(), sent[1].as_str()], "newest first");
    let rest = call(
        &v,
        "list_messages",
        json!({"project": "acme", "before": page["next_before"]}),
    )
    .await
    .unwrap();
    let rest = rest.structured_content.unwrap();
    assert_eq!(rest["messages"][0]["id"], sent[0].as_str());
    assert_eq!(rest["next_before"], Value::Null);
    let one = call(
        &v,
        "read_message",
        json!({"project": "acme", "message": sent[0]}),
    )
    .await
    .unwrap();
    let all = everything(&one);
    let one = one.structured_content.unwrap();
    assert_eq!(one["message"]["size"], 39);
    assert_eq!(one["deliveries"][0]["state"], "pending");
    assert_eq!(one["attempts"], json!([]));
    assert!(!all.contains("body-0-zz"), "no body in the log: {all}");
    assert!(!all.contains(TARGET_TOKEN));
    // Unknown, or another project's: not found; a bad id: invalid.
    let unknown = mcp_error(
        call(
            &v,
            "read_message",
            json!({"project": "acme", "message": echorelay::core::ids::MessageId::random().to_string()}),
        )
        .await,
    );
    assert_eq!(unknown.data.unwrap()["error"], "not_found");
    let s = connect(&server, Some(&stranger)).await.unwrap();
    let theirs = mcp_error(
        call(
            &s,
            "read_message",
            json!({"project": "umbrella", "message": sent[0]}),
        )
        .await,
    );
    assert_eq!(theirs.data.unwrap()["error"], "not_found");
    let listed = call(&s, "list_messages", json!({"project": "umbrella"}))
        .await
        .unwrap();
    assert_eq!(listed.structured_content.unwrap()["messages"], json!([]));
    let bad = mcp_error(
        call(
            &v,
            "read_message",
            json!({"project": "acme", "message": "msg_1"}),
        )
        .await,
    );
    assert_eq!(bad.data.unwrap()["error"], "invalid_query");
}

on_every_store!(
    list_keys_pages_and_recent_events_verify,
    a_viewer_key_lists_the_tools_and_reads_its_project_masked,
    roles_decide_the_tools_and_other_projects_look_unknown,
    a_revoked_key_fails_on_the_next_call_of_the_same_session,
    connecting_without_a_good_key_fails,
    messages_are_listed_and_read_without_bodies,
);

/// `recent_audit_events` with `verify: true` finds an event edited in the
/// database (a superuser, triggers off) among the events it returns.
/// Postgres only: the in-memory store cannot be edited behind echorelay's
/// back.
#[tokio::test]
async fn recent_events_verify_finds_an_edit_among_them() {
    let Some((w, store)) = World::postgres_with_store().await else {
        return;
    };
    w.project("acme").await;
    let (owner, _) = w.key("acme", Role::Owner).await;
    let log = w.audit("acme").await;
    let edited = &log[log.len() - 2];
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET ip = '198.51.100.66' WHERE chain = $1 AND seq = $2")
        .bind(edited.project.unwrap().as_bytes().as_slice())
        .bind(edited.seq as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let server = w.serve(HttpConfig::local()).await;
    let o = connect(&server, Some(&owner)).await.unwrap();
    let answer = call(
        &o,
        "recent_audit_events",
        json!({"project": "acme", "limit": 3, "verify": true}),
    )
    .await
    .unwrap()
    .structured_content
    .unwrap();
    assert_eq!(answer["chain"]["status"], "broken", "{answer}");
    assert_eq!(answer["chain"]["seq"], edited.seq);
    assert_eq!(answer["events"].as_array().unwrap().len(), 3);
}
