//! The OpenAPI document matches the routes: every documented operation is
//! served (never the fallback's "no such route", never 405), and what it
//! answers to a bare request is one of its documented responses; every
//! authenticated operation names a security requirement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::*;
use echorelay_http::HttpConfig;

async fn the_document_matches_the_routes(w: World) {
    w.project("acme").await;
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    let doc = c.get("/openapi.json", None).await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 30, "{} paths", paths.len());
    let fallback = serde_json::json!({"error": "not_found", "message": "no such route"});
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            operations += 1;
            let concrete = path
                .replace("{slug}", "acme")
                .replace("{key_id}", "key_00000000000000000000000000000000")
                .replace("{line_id}", "lin_00000000000000000000000000000000")
                .replace("{target_id}", "tgt_00000000000000000000000000000000")
                .replace("{endpoint_id}", "end_00000000000000000000000000000000")
                .replace("{user_id}", "usr_00000000000000000000000000000000")
                .replace("{message_id}", "msg_00000000000000000000000000000000")
                .replace("{id}", "x");
            assert!(!concrete.contains('{'), "{concrete}");
            let a = c.send(m.clone(), &concrete, None, &[], None).await;
            assert_ne!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
            let body: Option<serde_json::Value> = serde_json::from_slice(&a.body).ok();
            assert_ne!(
                body.as_ref(),
                Some(&fallback),
                "{m} {path} is documented but not served"
            );
            let documented = op["responses"].as_object().unwrap();
            assert!(
                documented.contains_key(a.status.as_str()),
                "{m} {path} answered {} which it does not document ({:?})",
                a.status,
                documented.keys().collect::<Vec<_>>()
            );
            let security = op["security"].as_array().unwrap();
            let public = security.iter().all(|s| s.as_object().unwrap().is_empty());
            if !public {
                assert!(documented.contains_key("401"), "{m} {path}");
                assert_eq!(
                    a.status,
                    StatusCode::UNAUTHORIZED,
                    "{m} {path} without a credential"
                );
            }
        }
    }
    assert!(operations >= 36, "{operations} operations");
    // And a route that is not documented is not served.
    let nothing = c.get("/v1/undocumented", None).await;
    assert_eq!(nothing.status, StatusCode::NOT_FOUND);
    assert_eq!(nothing.json(), fallback);
}

on_every_store!(the_document_matches_the_routes);

/// Where `schema` (at `at`) says nothing a client could type: an object
/// without properties, additional properties or a composition, or (outside
/// `free_form`) no schema at all (`{}`).
fn untyped(at: &str, schema: &serde_json::Map<String, serde_json::Value>, out: &mut Vec<String>) {
    const SHAPES: [&str; 7] = [
        "properties",
        "additionalProperties",
        "oneOf",
        "allOf",
        "anyOf",
        "$ref",
        "patternProperties",
    ];
    let typ = schema.get("type");
    let is_object = match typ {
        Some(serde_json::Value::String(t)) => t == "object",
        Some(serde_json::Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => false,
    };
    let shaped = SHAPES.iter().any(|k| schema.contains_key(*k));
    if is_object && !shaped {
        out.push(format!("{at}: an object without properties"));
    }
    let described_only = schema
        .keys()
        .all(|k| matches!(k.as_str(), "description" | "title" | "examples" | "default"));
    if described_only {
        out.push(format!("{at}: no schema at all"));
    }
}

/// Every `$ref` under `value`.
fn references(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| references(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

/// `key` as a JSON pointer segment (RFC 6901).
fn pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Walks every schema under `value` (JSON pointer `at`), collecting the
/// untyped ones. `in_schema` is true once inside a schema object.
fn walk(at: &str, value: &serde_json::Value, in_schema: bool, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if in_schema {
                untyped(at, map, out);
            }
            for (k, v) in map {
                let here = format!("{at}/{}", pointer(k));
                match k.as_str() {
                    // Schema-valued keywords.
                    "schema" | "items" | "additionalProperties" | "not" => {
                        if v.is_object() {
                            walk(&here, v, true, out);
                        }
                    }
                    // Maps of name → schema.
                    "properties" | "schemas" | "patternProperties" if v.is_object() => {
                        for (name, s) in v.as_object().into_iter().flatten() {
                            walk(&format!("{here}/{}", pointer(name)), s, true, out);
                        }
                    }
                    // Lists of schemas.
                    "oneOf" | "allOf" | "anyOf" | "prefixItems" => {
                        for (i, s) in v.as_array().into_iter().flatten().enumerate() {
                            walk(&format!("{here}/{i}"), s, true, out);
                        }
                    }
                    // Anything else (paths, operations, responses, examples
                    // inside schemas are values, not schemas).
                    "examples" | "example" | "default" | "enum" | "const" if in_schema => {}
                    _ => walk(&here, v, false, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                walk(&format!("{at}/{i}"), v, false, out);
            }
        }
        _ => {}
    }
}

/// Every request and response body, and every schema they refer to, is
/// typed: no `Object` without properties (and no bare `{}`) anywhere but
/// the two documents whose shape belongs to another specification: this
/// OpenAPI document itself and MCP's JSON-RPC messages.
async fn every_schema_is_typed(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    let doc = c.get("/openapi.json", None).await.json();
    let mut untyped = Vec::new();
    walk("#", &doc, false, &mut untyped);
    let free_form = [
        "#/paths/~1openapi.json/",
        "#/paths/~1mcp/",
        // A JSON-RPC method's parameters: MCP's to define.
        "#/components/schemas/JsonRpcMessage/properties/params/",
    ];
    let (allowed, untyped): (Vec<String>, Vec<String>) = untyped
        .into_iter()
        .partition(|at| free_form.iter().any(|f| at.starts_with(f)));
    // Those are free-form (and the walker sees them).
    assert_eq!(allowed.len(), 3, "{allowed:?}");
    assert!(
        untyped.is_empty(),
        "untyped schemas:\n{}",
        untyped.join("\n")
    );
    // Every reference resolves.
    let mut refs = Vec::new();
    references(&doc, &mut refs);
    assert!(refs.len() > 50, "{} references", refs.len());
    for r in refs {
        let target = r.strip_prefix('#').and_then(|p| doc.pointer(p));
        assert!(target.is_some(), "unresolvable reference {r}");
    }
    // The bodies the finding named are components with their fields.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (name, field) in [
        ("LineView", "targets"),
        ("KeyView", "hint"),
        ("TargetView", "signing_secret"),
        ("AuditEvent", "hash"),
        ("AccessList", "sessions"),
        ("ChainHead", "seq"),
    ] {
        assert!(
            schemas[name]["properties"].get(field).is_some(),
            "{name} has no `{field}`: {}",
            schemas[name]
        );
    }
    // And the walker finds what it looks for.
    let mut found = Vec::new();
    let bare = serde_json::json!({"components": {"schemas": {"A": {"type": "object"}, "B": {"type": "object", "properties": {"x": {}}}}}});
    walk("#", &bare, false, &mut found);
    assert_eq!(
        found,
        [
            "#/components/schemas/A: an object without properties",
            "#/components/schemas/B/properties/x: no schema at all"
        ]
    );
}

#[tokio::test]
async fn every_schema_is_typed_in_memory() {
    every_schema_is_typed(World::in_memory()).await;
}
