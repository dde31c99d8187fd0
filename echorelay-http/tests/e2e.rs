//! End to end over real HTTP: the server on an ephemeral port, a client
//! holding one keep-alive connection (hyper's connection-level client, so
//! a test knows every request used the same connection).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{HeaderName, Method, StatusCode, header};
use chrono::{Duration, Utc};
use common::*;
use echorelay::prelude::*;
use echorelay_http::client::ProxyConfig;
use echorelay_http::security_txt::SecurityTxt;
use echorelay_http::{HttpConfig, StartError, router};
use serde_json::json;

async fn every_credential_failure_is_one_401(w: World) {
    w.project("acme").await;
    let (key, id) = w.key("acme", Role::Viewer).await;
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;

    let missing = c.get("/v1/projects/acme/lines", None).await;
    let revoked_key = {
        let (k, kid) = w.key("acme", Role::Viewer).await;
        w.revoke("acme", kid).await;
        k
    };
    let unknown = "er_test_0000000000000000000000000000000000000000";
    let answers = [
        missing,
        c.get("/v1/projects/acme/lines", Some("not-a-key")).await,
        c.get("/v1/projects/acme/lines", Some(unknown)).await,
        c.get("/v1/projects/acme/lines", Some(&revoked_key)).await,
        c.send(
            Method::GET,
            "/v1/projects/acme/lines",
            None,
            &[("authorization", &format!("Basic {key}"))],
            None,
        )
        .await,
    ];
    for a in &answers {
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            a.headers[header::WWW_AUTHENTICATE],
            "Bearer realm=\"echorelay\""
        );
        assert_eq!(a.body, answers[0].body, "one generic body");
        assert_security_headers(a);
    }
    assert_eq!(answers[0].json()["error"], "unauthenticated");
    // The good key works on the same connection.
    assert_eq!(
        c.get("/v1/projects/acme/lines", Some(&key)).await.status,
        StatusCode::OK
    );
    let _ = id;
}

async fn roles_decide_each_surface_and_other_projects_look_unknown(w: World) {
    w.project("acme").await;
    w.project("umbrella").await;
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    let mint = json!({"environment": "test", "role": "viewer", "label": "ci"});

    for (role, read, keys) in [
        (Role::Viewer, StatusCode::OK, StatusCode::FORBIDDEN),
        (Role::Editor, StatusCode::OK, StatusCode::FORBIDDEN),
        (Role::Owner, StatusCode::OK, StatusCode::OK),
    ] {
        let (key, _) = w.key("acme", role).await;
        let lines = c.get("/v1/projects/acme/lines", Some(&key)).await;
        assert_eq!(lines.status, read, "{role} reads config");
        let list = c.get("/v1/projects/acme/keys", Some(&key)).await;
        assert_eq!(list.status, keys, "{role} lists keys");
        let minted = c
            .post_json("/v1/projects/acme/keys", &key, mint.clone())
            .await;
        let expected = if keys == StatusCode::OK {
            StatusCode::CREATED
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(minted.status, expected, "{role} mints");

        // Another project and a project that does not exist: the same 403.
        let other = c.get("/v1/projects/umbrella/lines", Some(&key)).await;
        let unknown = c
            .get("/v1/projects/no-such-project/lines", Some(&key))
            .await;
        assert_eq!(
            other.status,
            StatusCode::FORBIDDEN,
            "{role} in another project"
        );
        assert_eq!(other.body, unknown.body);
        assert_eq!(other.json()["error"], "forbidden");
    }
}

async fn a_revoked_key_fails_on_the_next_request_of_the_same_connection(w: World) {
    w.project("acme").await;
    let (owner_key, _) = w.key("acme", Role::Owner).await;
    let (key, id) = w.key("acme", Role::Viewer).await;
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    for _ in 0..3 {
        assert_eq!(
            c.get("/v1/projects/acme/lines", Some(&key)).await.status,
            StatusCode::OK
        );
    }
    // Revoked over HTTP, on this same connection.
    let revoke = c
        .send(
            Method::DELETE,
            &format!("/v1/projects/acme/keys/{id}"),
            Some(&owner_key),
            &[],
            None,
        )
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT);
    let after = c.get("/v1/projects/acme/lines", Some(&key)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    // Still one connection: the owner's key goes on working on it.
    assert_eq!(
        c.get("/v1/projects/acme/keys", Some(&owner_key))
            .await
            .status,
        StatusCode::OK
    );
}

async fn reads_are_masked_and_keys_are_shown_once(w: World) {
    w.project("acme").await;
    let (owner_key, _) = w.key("acme", Role::Owner).await;
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;

    let lines = c.get("/v1/projects/acme/lines", Some(&owner_key)).await;
    assert_eq!(lines.status, StatusCode::OK);
    assert_eq!(lines.headers[header::CACHE_CONTROL], "no-store");
    let text = lines.text();
    assert!(!text.contains(TARGET_TOKEN), "{text}");
    assert!(
        !text.contains("whsec_"),
        "the signing secret is masked too: {text}"
    );
    let token = &lines.json()["lines"][0]["targets"][0]["auth"]["token"];
    assert!(token.as_str().unwrap().starts_with("••••"), "{token}");

    let minted = c
        .post_json(
            "/v1/projects/acme/keys",
            &owner_key,
            json!({"environment": "live", "role": "editor", "label": "deploy"}),
        )
        .await;
    assert_eq!(minted.status, StatusCode::CREATED);
    let plaintext = minted.json()["plaintext"].as_str().unwrap().to_owned();
    assert!(plaintext.starts_with("er_live_"));
    let list = c.get("/v1/projects/acme/keys", Some(&owner_key)).await;
    assert!(
        !list.text().contains(&plaintext),
        "listings show hints only"
    );
    assert_eq!(list.json()["keys"].as_array().unwrap().len(), 2);
    // The new key works, with its role.
    assert_eq!(
        c.get("/v1/projects/acme/lines", Some(&plaintext))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        c.get("/v1/projects/acme/keys", Some(&plaintext))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

async fn a_key_with_a_successor_is_told_its_sunset_and_collects_it_once(w: World) {
    w.project("acme").await;
    let (key, _) = w.key("acme", Role::Viewer).await;
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    let fresh = c.get("/v1/projects/acme/lines", Some(&key)).await;
    assert!(fresh.headers.get("sunset").is_none());
    assert!(fresh.headers.get("deprecation").is_none());

    // The scheduler auto-rotates it (90-day cadence, 7-day overlap).
    w.clock.advance(Duration::days(84));
    let rotated_at = w.clock.now();
    let report = w.relay.keys().rotate_due().await.unwrap();
    assert_eq!(report.rotated, 1);

    let old = c.get("/v1/projects/acme/lines", Some(&key)).await;
    assert_eq!(old.status, StatusCode::OK);
    let sunset = w.clock.now() + Duration::days(7) + Duration::hours(24);
    assert_eq!(
        old.headers["sunset"],
        sunset.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
    );
    assert_eq!(
        old.headers["deprecation"],
        format!("@{}", rotated_at.timestamp())
    );
    assert_eq!(
        old.headers[header::LINK],
        "</v1/keys/successor>; rel=\"successor-version\""
    );

    let collected = c.post_json("/v1/keys/successor", &key, json!({})).await;
    assert_eq!(collected.status, StatusCode::OK);
    let successor = collected.json()["plaintext"].as_str().unwrap().to_owned();
    let new = c.get("/v1/projects/acme/lines", Some(&successor)).await;
    assert_eq!(new.status, StatusCode::OK);
    assert!(new.headers.get("sunset").is_none());
    let again = c.post_json("/v1/keys/successor", &key, json!({})).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "collected once");

    // Past the grace the old key is refused.
    w.clock.advance(Duration::days(8) + Duration::hours(1));
    assert_eq!(
        c.get("/v1/projects/acme/lines", Some(&key)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn bad_input_is_a_typed_4xx_that_echoes_nothing(w: World) {
    w.project("acme").await;
    let (owner_key, _) = w.key("acme", Role::Owner).await;
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    let path = "/v1/projects/acme/keys";

    let wrong_type = c
        .send(
            Method::POST,
            path,
            Some(&owner_key),
            &[],
            Some(("text/plain", b"{}".to_vec())),
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let malformed = c
        .send(
            Method::POST,
            path,
            Some(&owner_key),
            &[],
            Some((
                "application/json",
                br#"{"environment": "live", "role": "#.to_vec(),
            )),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.json()["error"], "malformed_json");

    let bad_field = c
        .post_json(
            path,
            &owner_key,
            json!({"environment": "staging-s3cr3t", "role": "viewer", "label": "x"}),
        )
        .await;
    assert_eq!(bad_field.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_field.json()["error"], "invalid_field");
    assert!(
        bad_field.text().contains("environment"),
        "{}",
        bad_field.text()
    );
    assert!(!bad_field.text().contains("s3cr3t"), "{}", bad_field.text());

    let unknown_field = c
        .post_json(
            path,
            &owner_key,
            json!({"environment": "live", "role": "viewer", "label": "x", "admin": true}),
        )
        .await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);

    let not_utf8 = c
        .send(
            Method::POST,
            path,
            Some(&owner_key),
            &[],
            Some(("application/json", vec![0xff, 0xfe, 0x7b])),
        )
        .await;
    assert_eq!(not_utf8.status, StatusCode::BAD_REQUEST);

    let too_large = c
        .send(
            Method::POST,
            path,
            Some(&owner_key),
            &[],
            Some(("application/json", vec![b' '; 65 * 1024])),
        )
        .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);

    let bad_id = c
        .send(
            Method::DELETE,
            "/v1/projects/acme/keys/not-an-id",
            Some(&owner_key),
            &[],
            None,
        )
        .await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_id.json()["error"], "invalid_id");

    let label = c
        .post_json(
            path,
            &owner_key,
            json!({"environment": "live", "role": "viewer", "label": "x".repeat(101)}),
        )
        .await;
    assert_eq!(label.status, StatusCode::UNPROCESSABLE_ENTITY);

    // A header block larger than the server reads (hyper's limit): 431,
    // and the connection is not reused.
    let huge = "x".repeat(512 * 1024);
    let mut big = server.connect().await;
    let a = big
        .send(
            Method::GET,
            "/v1/projects/acme/lines",
            Some(&owner_key),
            &[("x-padding", &huge)],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    let no_route = c.get("/v1/nothing-here", Some(&owner_key)).await;
    assert_eq!(no_route.status, StatusCode::NOT_FOUND);
    assert_security_headers(&no_route);
    for a in [
        &wrong_type,
        &malformed,
        &bad_field,
        &unknown_field,
        &not_utf8,
        &too_large,
        &bad_id,
        &label,
    ] {
        assert!(!a.text().contains(&owner_key), "no answer echoes the key");
        assert_security_headers(a);
    }
}

fn proxied(trusted: &str, header: &'static str) -> HttpConfig {
    HttpConfig {
        proxies: ProxyConfig::trusting(
            vec![trusted.parse().unwrap()],
            HeaderName::from_static(header),
        ),
        ..HttpConfig::production()
    }
}

async fn plaintext_is_refused_unless_a_trusted_proxy_terminated_tls(w: World) {
    w.project("acme").await;
    let (key, _) = w.key("acme", Role::Viewer).await;
    let https = [("x-forwarded-proto", "https")];

    // TLS required, no proxy trusted: a forwarded header changes nothing.
    let server = w.serve(HttpConfig::production()).await;
    let mut c = server.connect().await;
    for extra in [&[][..], &https[..]] {
        let a = c
            .send(
                Method::GET,
                "/v1/projects/acme/lines",
                Some(&key),
                extra,
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert_eq!(a.json()["error"], "tls_required");
        assert!(
            a.headers[header::STRICT_TRANSPORT_SECURITY]
                .to_str()
                .unwrap()
                .starts_with("max-age=")
        );
    }

    // Loopback is the trusted proxy here; it names the client.
    let server = w.serve(proxied("127.0.0.0/8", "x-forwarded-for")).await;
    let mut c = server.connect().await;
    let client = ("x-forwarded-for", "198.51.100.23");
    let plain = c
        .send(
            Method::GET,
            "/v1/projects/acme/lines",
            Some(&key),
            &[client],
            None,
        )
        .await;
    assert_eq!(plain.status, StatusCode::FORBIDDEN);
    assert_eq!(plain.json()["error"], "tls_required");
    let a = c
        .send(
            Method::GET,
            "/v1/projects/acme/lines",
            Some(&key),
            &[client, https[0]],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
}

async fn the_audit_log_records_the_client_a_trusted_proxy_names_and_only_then(w: World) {
    w.project("acme").await;
    let (owner_key, _) = w.key("acme", Role::Owner).await;
    let mint = json!({"environment": "test", "role": "viewer", "label": "via proxy"});
    let forwarded = [
        ("x-forwarded-for", "198.51.100.23"),
        ("x-forwarded-proto", "https"),
    ];
    let body = || Some(("application/json", serde_json::to_vec(&mint).unwrap()));

    let trusted = w.serve(proxied("127.0.0.0/8", "x-forwarded-for")).await;
    let mut c = trusted.connect().await;
    let a = c
        .send(
            Method::POST,
            "/v1/projects/acme/keys",
            Some(&owner_key),
            &forwarded,
            body(),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let last = w.audit("acme").await.pop().unwrap();
    assert_eq!(last.ip, Some("198.51.100.23".parse().unwrap()));

    // The same header from a sender that is not a configured proxy.
    let untrusted = w.serve(HttpConfig::local()).await;
    let mut c = untrusted.connect().await;
    let a = c
        .send(
            Method::POST,
            "/v1/projects/acme/keys",
            Some(&owner_key),
            &forwarded,
            body(),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let last = w.audit("acme").await.pop().unwrap();
    assert_eq!(last.ip, Some("127.0.0.1".parse().unwrap()));
}

/// Issue 16 (5): a trusted proxy's list with an unparsable hop where the
/// client should be, an empty entry, or no list at all is refused (400,
/// one generic body): the proxy's own address is never taken as the
/// client, so nothing is done, throttled or audited in its name.
async fn a_proxy_that_names_no_usable_client_is_refused(w: World) {
    w.project("acme").await;
    let (owner_key, _) = w.key("acme", Role::Owner).await;
    let mint = json!({"environment": "test", "role": "viewer", "label": "via proxy"});
    let body = || Some(("application/json", serde_json::to_vec(&mint).unwrap()));
    let https = ("x-forwarded-proto", "https");
    let server = w.serve(proxied("127.0.0.0/8", "x-forwarded-for")).await;
    let mut c = server.connect().await;
    let before = w.audit("acme").await.len();
    let mut answers = Vec::new();
    for extra in [
        &[("x-forwarded-for", "198.51.100.23, not-an-address"), https][..],
        &[("x-forwarded-for", "198.51.100.23,"), https][..],
        &[("x-forwarded-for", "unknown"), https][..],
        &[https][..],
    ] {
        let a = c
            .send(
                Method::POST,
                "/v1/projects/acme/keys",
                Some(&owner_key),
                extra,
                body(),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{extra:?}");
        assert_eq!(a.json()["error"], "client_unknown");
        assert!(!a.text().contains("not-an-address"), "no echo");
        assert_security_headers(&a);
        answers.push(a.body);
    }
    assert!(answers.iter().all(|b| *b == answers[0]), "one body");
    assert_eq!(w.audit("acme").await.len(), before, "nothing was minted");

    // Garbage left of the client is not read; ports, brackets and zones
    // are taken off; the protocol is the proxy's (last) value.
    for (xff, proto, client) in [
        (
            "garbage, 198.51.100.24:5678",
            "http, https",
            "198.51.100.24",
        ),
        ("[2001:db8::24]:443", "https", "2001:db8::24"),
        ("fe80::24%eth0", "https", "fe80::24"),
    ] {
        let a = c
            .send(
                Method::POST,
                "/v1/projects/acme/keys",
                Some(&owner_key),
                &[("x-forwarded-for", xff), ("x-forwarded-proto", proto)],
                body(),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{xff}");
        let last = w.audit("acme").await.pop().unwrap();
        assert_eq!(last.ip, Some(client.parse().unwrap()));
    }
    let a = c
        .send(
            Method::POST,
            "/v1/projects/acme/keys",
            Some(&owner_key),
            &[
                ("x-forwarded-for", "198.51.100.25"),
                ("x-forwarded-proto", "https, http"),
            ],
            body(),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "the last protocol is http");
    assert_eq!(a.json()["error"], "tls_required");
}

fn security_txt(expires_in: Duration, now: chrono::DateTime<Utc>) -> SecurityTxt {
    SecurityTxt {
        contact: vec!["mailto:security@example.com".into()],
        expires: now + expires_in,
        encryption: vec!["https://example.com/pgp-key.txt".into()],
        acknowledgments: vec![],
        policy: vec!["https://example.com/security-policy".into()],
        preferred_languages: vec!["en".into()],
        canonical: vec!["https://relay.example.com/.well-known/security.txt".into()],
    }
}

async fn security_txt_is_served_and_a_stale_one_refused_at_start(w: World) {
    let now = w.clock.now();
    let config = HttpConfig {
        security_txt: Some(security_txt(Duration::days(200), now)),
        ..HttpConfig::local()
    };
    let server = w.serve(config).await;
    let mut c = server.connect().await;
    let a = c.get("/.well-known/security.txt", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    let text = a.text();
    assert!(
        text.contains("Contact: mailto:security@example.com\r\n"),
        "{text}"
    );
    assert!(text.contains("Expires: 2027-06-19T00:00:00Z\r\n"), "{text}");
    assert_security_headers(&a);

    // Issue 16 (9b): the server outlives the file's Expires: 404 from
    // then on, on the same running server (checked per request).
    w.clock.advance(Duration::days(200) - Duration::seconds(1));
    assert_eq!(
        c.get("/.well-known/security.txt", None).await.status,
        StatusCode::OK,
        "a second before"
    );
    w.clock.advance(Duration::seconds(1));
    let expired = c.get("/.well-known/security.txt", None).await;
    assert_eq!(expired.status, StatusCode::NOT_FOUND);
    assert!(!expired.text().contains("Contact:"));
    let now = w.clock.now();

    for stale in [Duration::zero(), Duration::days(-1), Duration::days(367)] {
        let config = HttpConfig {
            security_txt: Some(security_txt(stale, now)),
            ..HttpConfig::local()
        };
        assert!(matches!(
            router(w.relay.clone(), config),
            Err(StartError::SecurityTxt(_))
        ));
    }
    // Without one configured: 404.
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    assert_eq!(
        c.get("/.well-known/security.txt", None).await.status,
        StatusCode::NOT_FOUND
    );
}

/// One call of the role matrix: what each caller gets.
struct Case {
    method: Method,
    path: String,
    body: Option<serde_json::Value>,
    /// Viewer, editor and owner keys of the project, then an owner key of
    /// another project.
    expect: [u16; 4],
}

async fn every_project_route_is_decided_by_role_and_membership(w: World) {
    w.project("acme").await;
    w.project("umbrella").await;
    let keys = [
        w.key("acme", Role::Viewer).await.0,
        w.key("acme", Role::Editor).await.0,
        w.key("acme", Role::Owner).await.0,
        w.key("umbrella", Role::Owner).await.0,
    ];
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    let lines = c
        .get("/v1/projects/acme/lines", Some(&keys[2]))
        .await
        .json();
    let line = lines["lines"][0]["line"]["id"].as_str().unwrap().to_owned();
    let target = lines["lines"][0]["targets"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = c
        .post_json(
            &format!("/v1/projects/acme/lines/{line}/endpoints"),
            &keys[2],
            json!({"name": "in"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let endpoint = created.json()["id"].as_str().unwrap().to_owned();
    let (_, rotatee) = w.key("acme", Role::Viewer).await;
    let (_, revokee) = w.key("acme", Role::Viewer).await;
    let p = "/v1/projects/acme";
    let target_body = json!({
        "name": "crm", "url": "https://crm.example.com/in",
        "auth": {"type": "basic", "username": "relay", "password": "hunter2-hunter2"}
    });
    let billing = json!({"kind": "credit_purchase", "amount_minor": 5000, "currency": "EUR", "reference": "in_1"});
    let cases = [
        Case {
            method: Method::GET,
            path: format!("{p}/lines"),
            body: None,
            expect: [200, 200, 200, 403],
        },
        Case {
            method: Method::POST,
            path: format!("{p}/lines"),
            body: Some(json!({"name": "new"})),
            expect: [403, 201, 201, 403],
        },
        Case {
            method: Method::PATCH,
            path: format!("{p}/lines/{line}"),
            body: Some(json!({"name": "renamed"})),
            expect: [403, 200, 200, 403],
        },
        Case {
            method: Method::POST,
            path: format!("{p}/lines/{line}/endpoints"),
            body: Some(json!({"name": "e"})),
            expect: [403, 201, 201, 403],
        },
        Case {
            method: Method::POST,
            path: format!("{p}/lines/{line}/targets"),
            body: Some(target_body),
            expect: [403, 201, 201, 403],
        },
        Case {
            method: Method::GET,
            path: format!("{p}/targets/{target}"),
            body: None,
            expect: [200, 200, 200, 403],
        },
        Case {
            method: Method::PATCH,
            path: format!("{p}/targets/{target}"),
            body: Some(json!({"name": "shop2"})),
            expect: [403, 200, 200, 403],
        },
        Case {
            method: Method::GET,
            path: format!("{p}/keys"),
            body: None,
            expect: [403, 403, 200, 403],
        },
        Case {
            method: Method::POST,
            path: format!("{p}/billing"),
            body: Some(billing),
            expect: [403, 403, 201, 403],
        },
        // No API key reaches the members surface, whatever its role.
        Case {
            method: Method::GET,
            path: format!("{p}/members"),
            body: None,
            expect: [403, 403, 403, 403],
        },
        Case {
            method: Method::GET,
            path: format!("{p}/audit"),
            body: None,
            expect: [403, 403, 200, 403],
        },
        Case {
            method: Method::DELETE,
            path: format!("{p}/endpoints/{endpoint}"),
            body: None,
            expect: [403, 204, 404, 403],
        },
        Case {
            method: Method::POST,
            path: format!("{p}/keys"),
            body: Some(json!({"environment": "test", "role": "viewer", "label": "m"})),
            expect: [403, 403, 201, 403],
        },
        Case {
            method: Method::POST,
            path: format!("{p}/keys/{rotatee}/reveal"),
            body: None,
            expect: [403, 403, 404, 403],
        },
        Case {
            method: Method::PUT,
            path: format!("{p}/members/{}", w.owner),
            body: Some(json!({"role": "viewer"})),
            expect: [403, 403, 403, 403],
        },
        Case {
            method: Method::DELETE,
            path: format!("{p}/members/{}", w.owner),
            body: None,
            expect: [403, 403, 403, 403],
        },
        Case {
            method: Method::DELETE,
            path: format!("{p}/keys/{revokee}"),
            body: None,
            expect: [403, 403, 204, 403],
        },
        Case {
            method: Method::POST,
            path: format!("{p}/keys/{rotatee}/rotate"),
            body: Some(json!({"overlap_seconds": 3600})),
            expect: [403, 403, 201, 403],
        },
        Case {
            method: Method::DELETE,
            path: format!("{p}/targets/{target}"),
            body: None,
            expect: [403, 204, 404, 403],
        },
        Case {
            method: Method::DELETE,
            path: format!("{p}/lines/{line}"),
            body: None,
            expect: [403, 204, 404, 403],
        },
    ];
    for case in &cases {
        for (who, key) in keys.iter().enumerate() {
            let body = case
                .body
                .as_ref()
                .map(|b| ("application/json", serde_json::to_vec(b).unwrap()));
            let a = c
                .send(case.method.clone(), &case.path, Some(key), &[], body)
                .await;
            assert_eq!(
                a.status.as_u16(),
                case.expect[who],
                "{} {} as caller {who}: {}",
                case.method,
                case.path,
                a.text()
            );
            assert!(!a.text().contains("hunter2"), "{}", a.text());
        }
    }
    // Every change was audited, with the caller and its address.
    let events = w.audit("acme").await;
    let changes = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Config { .. }))
        .count();
    assert!(changes >= 8, "{changes} config events");
    assert!(events.iter().all(|e| e.ip.is_some()));
}

async fn the_audit_log_pages_and_verifies_and_a_successor_is_revealed_once(w: World) {
    w.project("acme").await;
    let (owner_key, _) = w.key("acme", Role::Owner).await;
    let (viewer_key, viewer_id) = w.key("acme", Role::Viewer).await;
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    let first = c
        .get("/v1/projects/acme/audit?limit=2", Some(&owner_key))
        .await;
    assert_eq!(first.status, StatusCode::OK);
    let page = first.json();
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    assert!(page.get("chain").is_none());
    let after = page["next_after"].as_u64().unwrap();
    let rest = c
        .get(
            &format!("/v1/projects/acme/audit?after={after}&limit=500&verify=true"),
            Some(&owner_key),
        )
        .await
        .json();
    let total = 2 + rest["events"].as_array().unwrap().len() as u64;
    assert_eq!(rest["next_after"], serde_json::Value::Null);
    // The page was verified, linked to the event `after`, up to the head.
    let chain = &rest["chain"];
    assert_eq!(chain["status"], "verified", "{chain}");
    assert_eq!(chain["after"], after);
    assert_eq!(chain["through"], total);
    assert_eq!(chain["events"], total - 2);
    assert_eq!(chain["reached_head"], true);
    assert_eq!(chain["head"]["seq"], total);
    assert_eq!(chain["keyed"], true);
    // A page short of the head says so.
    let first = c
        .get(
            "/v1/projects/acme/audit?limit=2&verify=true",
            Some(&owner_key),
        )
        .await
        .json();
    assert_eq!(first["chain"]["status"], "verified");
    assert_eq!(
        (
            first["chain"]["after"].as_u64(),
            first["chain"]["through"].as_u64()
        ),
        (Some(0), Some(2))
    );
    assert_eq!(first["chain"]["reached_head"], false);
    assert_eq!(first["chain"]["head"], serde_json::Value::Null);
    let bad = c
        .get("/v1/projects/acme/audit?limit=lots", Some(&owner_key))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // `after` spans exactly the sequence numbers: i64::MAX is a (past the
    // end, empty) page, one more is refused, not clamped.
    let last = c
        .get(
            "/v1/projects/acme/audit?after=9223372036854775807&limit=1",
            Some(&owner_key),
        )
        .await;
    assert_eq!(last.status, StatusCode::OK, "{}", last.text());
    assert_eq!(last.json()["events"], json!([]));
    for past in ["9223372036854775808", "18446744073709551615"] {
        let over = c
            .get(
                &format!("/v1/projects/acme/audit?after={past}&limit=1"),
                Some(&owner_key),
            )
            .await;
        assert_eq!(
            over.status,
            StatusCode::BAD_REQUEST,
            "{past}: {}",
            over.text()
        );
        assert_eq!(over.json()["error"], "invalid_query", "{past}");
    }

    // An auto-rotated successor, revealed by an owner key, once.
    w.clock.advance(Duration::days(84));
    w.relay.keys().rotate_due().await.unwrap();
    let listed = c
        .get("/v1/projects/acme/keys", Some(&owner_key))
        .await
        .json();
    let successor = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["predecessor"] == viewer_id.to_string())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/projects/acme/keys/{successor}/reveal");
    let revealed = c.post_json(&path, &owner_key, json!({})).await;
    assert_eq!(
        revealed.status,
        StatusCode::OK,
        "{path}: {}",
        revealed.text()
    );
    let plaintext = revealed.json()["plaintext"].as_str().unwrap().to_owned();
    assert_eq!(
        c.get("/v1/projects/acme/lines", Some(&plaintext))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        c.post_json(&path, &owner_key, json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    // The old key cannot collect it any more.
    assert_eq!(
        c.post_json("/v1/keys/successor", &viewer_key, json!({}))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

/// Keys are listed a page at a time, by id: `next_after` names the next
/// page while a page is full; bad paging parameters are 400
/// `invalid_query`, never clamped. And a project whose tree is full
/// refuses a new line, endpoint or target with 409 `limit_reached`.
async fn keys_are_paged_and_a_full_tree_refuses_more(w: World) {
    use echorelay::core::audit::{AuditDraft, ConfigEntity, ConfigOp};
    use echorelay::core::config::{Line, MAX_TREE_ENTITIES, ProjectTree};
    use echorelay::core::ids::LineId;
    use echorelay::core::ports::{ConfigStore, TreeImport};
    w.project("acme").await;
    let (owner_key, owner_id) = w.key("acme", Role::Owner).await;
    let mut ids = vec![owner_id.to_string()];
    for _ in 0..4 {
        ids.push(w.key("acme", Role::Viewer).await.1.to_string());
    }
    ids.sort();
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    let mut walked: Vec<String> = Vec::new();
    let mut path = "/v1/projects/acme/keys?limit=2".to_owned();
    loop {
        let page = c.get(&path, Some(&owner_key)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let page = page.json();
        let keys = page["keys"].as_array().unwrap();
        assert!(keys.len() <= 2);
        walked.extend(keys.iter().map(|k| k["id"].as_str().unwrap().to_owned()));
        match page["next_after"].as_str() {
            Some(next) => {
                assert_eq!(keys.len(), 2, "a short page names no next");
                assert_eq!(keys[1]["id"], next);
                path = format!("/v1/projects/acme/keys?limit=2&after={next}");
            }
            None => break,
        }
    }
    assert_eq!(walked, ids);
    let all = c
        .get("/v1/projects/acme/keys", Some(&owner_key))
        .await
        .json();
    assert_eq!(
        all["keys"].as_array().unwrap().len(),
        5,
        "default limit 100"
    );
    assert_eq!(all["next_after"], serde_json::Value::Null);
    for bad in [
        "limit=0",
        "limit=501",
        "limit=-1",
        "after=key_zz",
        "after=usr_00000000000000000000000000000000",
        "offset=2",
    ] {
        let a = c
            .get(&format!("/v1/projects/acme/keys?{bad}"), Some(&owner_key))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.text());
        assert_eq!(a.json()["error"], "invalid_query", "{bad}");
    }

    // Fill the tree to its cap behind the API (one import), then ask for
    // one more of each.
    let store = w.relay.store();
    let project = store
        .project_by_slug(&echorelay::core::config::Slug::parse("acme").unwrap())
        .await
        .unwrap()
        .unwrap();
    let tree = store.tree(project.id).await.unwrap();
    let line = tree.lines[0].id;
    let mut lines = tree.lines.clone();
    let room = MAX_TREE_ENTITIES - tree.endpoints.len() - tree.targets.len() - lines.len();
    lines.extend((0..room).map(|i| Line {
        id: LineId::random(),
        project: project.id,
        name: format!("filler {i}"),
        created_at: project.created_at,
    }));
    let full = TreeImport {
        tree: ProjectTree { lines, ..tree },
        expect_version: Some(project.version),
        owner_if_new: None,
    };
    let draft = AuditDraft {
        project: Some(project.id),
        at: w.clock.now(),
        actor: echorelay::core::audit::Actor::System,
        ip: None,
        subject: None,
        kind: echorelay::core::audit::EventKind::Config {
            entity: ConfigEntity::Project,
            op: ConfigOp::Import,
            id: project.id.to_string(),
        },
    };
    store.import_tree(full, draft).await.unwrap();
    let creates = [
        "/v1/projects/acme/lines".to_owned(),
        format!("/v1/projects/acme/lines/{line}/endpoints"),
    ];
    for path in &creates {
        let a = c
            .post_json(path, &owner_key, json!({"name": "one more"}))
            .await;
        assert_eq!(a.status, StatusCode::CONFLICT, "{path}: {}", a.text());
        assert_eq!(a.json()["error"], "limit_reached");
    }
    let a = c
        .post_json(
            &format!("/v1/projects/acme/lines/{line}/targets"),
            &owner_key,
            json!({"name": "t", "url": "https://example.com/x", "auth": {"type": "none"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.text());
    assert_eq!(a.json()["error"], "limit_reached");
    // The whole tree is still one answer.
    let lines = c.get("/v1/projects/acme/lines", Some(&owner_key)).await;
    assert_eq!(lines.status, StatusCode::OK);
    assert_eq!(
        lines.json()["lines"].as_array().unwrap().len(),
        MAX_TREE_ENTITIES - 1
    );
}

on_every_store!(
    every_credential_failure_is_one_401,
    keys_are_paged_and_a_full_tree_refuses_more,
    roles_decide_each_surface_and_other_projects_look_unknown,
    a_revoked_key_fails_on_the_next_request_of_the_same_connection,
    reads_are_masked_and_keys_are_shown_once,
    a_key_with_a_successor_is_told_its_sunset_and_collects_it_once,
    bad_input_is_a_typed_4xx_that_echoes_nothing,
    plaintext_is_refused_unless_a_trusted_proxy_terminated_tls,
    the_audit_log_records_the_client_a_trusted_proxy_names_and_only_then,
    a_proxy_that_names_no_usable_client_is_refused,
    security_txt_is_served_and_a_stale_one_refused_at_start,
    every_project_route_is_decided_by_role_and_membership,
    the_audit_log_pages_and_verifies_and_a_successor_is_revealed_once,
);

/// `?verify=true` verifies the page asked for, bounded: an event edited
/// in the database (a superuser, the append-only triggers off) is found by
/// the page that holds it and by the page after it (its predecessor),
/// never by pages that do not reach it; walking every page with it finds
/// it. Postgres only: the in-memory store cannot be edited behind
/// echorelay's back.
#[tokio::test]
async fn verify_finds_an_edit_in_the_page_that_holds_it_or_follows_it() {
    let Some((w, store)) = World::postgres_with_store().await else {
        return;
    };
    w.project("acme").await;
    let (owner_key, _) = w.key("acme", Role::Owner).await;
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    let intact = c
        .get(
            "/v1/projects/acme/audit?limit=500&verify=true",
            Some(&owner_key),
        )
        .await
        .json();
    let events = intact["events"].as_array().unwrap().len() as u64;
    assert!(events >= 5, "{events} events");
    assert_eq!(intact["chain"]["status"], "verified");
    assert_eq!(intact["chain"]["reached_head"], true);

    // Seq 3's source address, edited in place.
    let chain = intact["events"][0]["project"].as_str().unwrap().to_owned();
    let chain: echorelay::core::ids::ProjectId = chain.parse().unwrap();
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    let edited =
        sqlx::query("UPDATE audit_events SET ip = '198.51.100.66' WHERE chain = $1 AND seq = 3")
            .bind(chain.as_bytes().as_slice())
            .execute(&mut *tx)
            .await
            .unwrap();
    assert_eq!(edited.rows_affected(), 1);
    tx.commit().await.unwrap();

    let page = |after: u64, limit: u64| {
        format!("/v1/projects/acme/audit?after={after}&limit={limit}&verify=true")
    };
    // A page before the edit does not reach it.
    let before = verdict(&mut c, &page(0, 2), &owner_key).await;
    assert_eq!(before["status"], "verified", "{before}");
    assert_eq!(before["through"], 2);
    // The page holding it, and the page after it, find it.
    for (after, limit) in [(2, 2), (0, 500), (3, 2)] {
        let found = verdict(&mut c, &page(after, limit), &owner_key).await;
        assert_eq!(found["status"], "broken", "after={after}: {found}");
        assert_eq!(found["seq"], 3, "after={after}: {found}");
        assert_eq!(found["problem"], "event content does not match its hash");
    }
    // Pages past it verify on their own.
    let later = verdict(&mut c, &page(4, 500), &owner_key).await;
    assert_eq!(later["status"], "verified", "{later}");
    assert_eq!(later["reached_head"], true);
    // Walking every page with verify=true finds it.
    let mut after = 0;
    let mut broken = None;
    loop {
        let a = c.get(&page(after, 2), Some(&owner_key)).await.json();
        if a["chain"]["status"] == "broken" {
            broken = Some(a["chain"]["seq"].clone());
            break;
        }
        match a["next_after"].as_u64() {
            Some(n) => after = n,
            None => break,
        }
    }
    assert_eq!(broken, Some(json!(3)));
}

/// The `chain` of the audit page at `path`.
async fn verdict(c: &mut Client, path: &str, key: &str) -> serde_json::Value {
    let a = c.get(path, Some(key)).await;
    assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.text());
    a.json()["chain"].clone()
}
