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
