//! Accounts over real HTTP: password + TOTP, enrollment, trusted devices,
//! CSRF on cookie writes, idle expiry, IP-family pinning (direct and
//! through a trusted proxy), step-up, logout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use axum::http::{HeaderName, Method, StatusCode, header};
use chrono::Duration;
use common::*;
use echorelay::core::account::totp::{TotpSeed, code_for_step, step_at};
use echorelay::core::audit::{Actor, KeyAction};
use echorelay::prelude::*;
use echorelay_http::client::ProxyConfig;
use echorelay_http::{HttpConfig, router};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple 2026";

/// The code an authenticator shows at the world's time, `offset` steps on.
fn code(w: &World, seed: &TotpSeed, offset: u64) -> String {
    let params = w.relay.accounts().policy().totp;
    let step = step_at(&params, w.clock.now().timestamp() as u64) + offset;
    code_for_step(seed, &params, step).unwrap().to_string()
}

/// Registers `email` and enrolls it through the HTTP API; the browser
/// holds the session. Returns the seed and the backup codes.
async fn enroll(w: &World, b: &mut Browser, email: &str) -> (TotpSeed, Vec<String>) {
    w.relay
        .accounts()
        .register(email, SecretString::from(PASSWORD), Some(w.ip))
        .await
        .unwrap();
    let login = b
        .post(
            "/v1/auth/login",
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    assert_eq!(login.json()["step"], "enrollment");
    let challenge = login.json()["challenge"].as_str().unwrap().to_owned();
    let offer = b
        .post("/v1/auth/enrollment", json!({"challenge": challenge}))
        .await;
    assert_eq!(offer.status, StatusCode::OK);
    assert_eq!(offer.headers[header::CACHE_CONTROL], "no-store");
    let offer = offer.json();
    assert!(offer["qr_svg"].as_str().unwrap().contains("<svg"));
    assert!(
        offer["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    let seed = TotpSeed::from_base32(offer["secret"].as_str().unwrap()).unwrap();
    let done = b
        .post(
            "/v1/auth/enrollment/confirm",
            json!({"challenge": challenge, "code": code(w, &seed, 0)}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert_eq!(done.json()["step"], "authenticated");
    let codes: Vec<String> = done.json()["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    let set = done
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    let session = set
        .iter()
        .find(|c| c.starts_with("__Host-er_session="))
        .unwrap();
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(session.contains(attr), "{session}");
    }
    assert!(b.session.is_some() && b.csrf.is_some());
    (seed, codes)
}

async fn password_then_totp_then_a_trusted_device(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut b = Browser::new(server.connect().await);
    let (seed, _) = enroll(&w, &mut b, "dana@example.com").await;
    let me = b.get("/v1/me/sessions").await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["sessions"].as_array().unwrap().len(), 1);

    // Log out; the cookie no longer works.
    let old = b.session.clone();
    assert_eq!(
        b.post("/v1/auth/logout", json!({})).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(b.session, None, "the cookie was cleared");
    b.session = old;
    assert_eq!(
        b.get("/v1/me/sessions").await.status,
        StatusCode::UNAUTHORIZED
    );
    b.session = None;

    // Password, then TOTP (a later step: a code is accepted once), and
    // trust this browser.
    w.clock.advance(Duration::seconds(30));
    let login = b
        .post(
            "/v1/auth/login",
            json!({"email": "dana@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.json()["step"], "second_factor");
    let challenge = login.json()["challenge"].as_str().unwrap().to_owned();
    let wrong = b
        .post(
            "/v1/auth/second-factor",
            json!({"challenge": challenge, "code": "000000"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // The challenge was used up by the wrong code: log in again.
    let login = b
        .post(
            "/v1/auth/login",
            json!({"email": "dana@example.com", "password": PASSWORD}),
        )
        .await;
    let challenge = login.json()["challenge"].as_str().unwrap().to_owned();
    let done = b
        .post(
            "/v1/auth/second-factor",
            json!({"challenge": challenge, "code": code(&w, &seed, 0), "trust_device": true}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert!(b.device.is_some(), "a trusted-device cookie");

    // With the device cookie, the password alone completes the login.
    b.session = None;
    let login = b
        .post(
            "/v1/auth/login",
            json!({"email": "dana@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.json()["step"], "authenticated");
    assert_eq!(
        b.get("/v1/me/sessions").await.json()["devices"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Revoking this one device (the login counts as a recent step-up):
    // the next login asks for the TOTP code again.
    let device = b.get("/v1/me/sessions").await.json()["devices"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = b
        .call(
            Method::DELETE,
            &format!("/v1/me/devices/{device}"),
            None,
            true,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text());
    assert_eq!(revoked.json()["revoked"], 1);
    let login = b
        .post(
            "/v1/auth/login",
            json!({"email": "dana@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.json()["step"], "second_factor");
    // Never without the password.
    let wrong = b
        .post(
            "/v1/auth/login",
            json!({"email": "dana@example.com", "password": "nope nope nope nope"}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let unknown = b
        .post(
            "/v1/auth/login",
            json!({"email": "nobody@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.body, unknown.body, "one answer for every failure");
}

async fn a_backup_code_works_once(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut b = Browser::new(server.connect().await);
    let (_, codes) = enroll(&w, &mut b, "eve@example.com").await;
    for expected in [StatusCode::OK, StatusCode::UNAUTHORIZED] {
        let login = b
            .post(
                "/v1/auth/login",
                json!({"email": "eve@example.com", "password": PASSWORD}),
            )
            .await;
        let challenge = login.json()["challenge"].as_str().unwrap().to_owned();
        let a = b
            .post(
                "/v1/auth/second-factor",
                json!({"challenge": challenge, "backup_code": codes[3]}),
            )
            .await;
        assert_eq!(a.status, expected);
    }
    let both = b
        .post(
            "/v1/auth/second-factor",
            json!({"challenge": "erc_x", "backup_code": codes[4], "code": "123456"}),
        )
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
}

async fn cookie_writes_need_the_csrf_token_and_sessions_reach_projects(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut b = Browser::new(server.connect().await);
    enroll(&w, &mut b, "fay@example.com").await;
    let user = w
        .relay
        .store()
        .account_by_email("fay@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    w.relay
        .config()
        .create_project(user, Some(w.ip), "acme", "Acme")
        .await
        .unwrap();

    assert_eq!(
        b.get("/v1/projects/acme/lines").await.status,
        StatusCode::OK
    );
    let mint = json!({"environment": "test", "role": "viewer", "label": "from the console"});
    let without = b
        .call(
            Method::POST,
            "/v1/projects/acme/keys",
            Some(mint.clone()),
            false,
        )
        .await;
    assert_eq!(without.status, StatusCode::FORBIDDEN);
    assert_eq!(without.json()["error"], "csrf");
    let with = b.post("/v1/projects/acme/keys", mint.clone()).await;
    assert_eq!(with.status, StatusCode::CREATED, "{}", with.text());
    b.extra.push(("sec-fetch-site", "cross-site".into()));
    assert_eq!(
        b.post("/v1/projects/acme/keys", mint).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        b.get("/v1/projects/acme/lines").await.status,
        StatusCode::FORBIDDEN
    );
    b.extra.clear();
    // Another user's project: the same 403 as an unknown one.
    let other = UserId::random();
    w.relay
        .config()
        .create_project(other, None, "umbrella", "Umbrella")
        .await
        .unwrap();
    let a = b.get("/v1/projects/umbrella/lines").await;
    let u = b.get("/v1/projects/nothing/lines").await;
    assert_eq!((a.status, &a.body), (StatusCode::FORBIDDEN, &u.body));
    // An API key cannot use the account routes.
    let key = with.json()["plaintext"].as_str().unwrap().to_owned();
    let mut c = server.connect().await;
    assert_eq!(
        c.get("/v1/me/sessions", Some(&key)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn sessions_expire_when_idle_and_sensitive_calls_need_a_step_up(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut b = Browser::new(server.connect().await);
    let (seed, _) = enroll(&w, &mut b, "gil@example.com").await;

    // Within the step-up window of the login: allowed.
    assert_eq!(
        b.call(Method::DELETE, "/v1/me/devices", None, true)
            .await
            .status,
        StatusCode::OK
    );
    // 20 minutes on (used every 10 minutes, so not idle): step up first.
    for _ in 0..2 {
        w.clock.advance(Duration::minutes(10));
        assert_eq!(b.get("/v1/me/sessions").await.status, StatusCode::OK);
    }
    let refused = b.call(Method::DELETE, "/v1/me/devices", None, true).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json()["error"], "reauthentication_required");
    let codes = b.post("/v1/me/backup-codes", json!({})).await;
    assert_eq!(codes.status, StatusCode::FORBIDDEN);
    let bad = b
        .post("/v1/auth/step-up", json!({"password": "wrong wrong wrong"}))
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    let ok = b
        .post("/v1/auth/step-up", json!({"code": code(&w, &seed, 0)}))
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{}", ok.text());
    let codes = b.post("/v1/me/backup-codes", json!({})).await;
    assert_eq!(codes.status, StatusCode::OK);
    assert_eq!(codes.json()["backup_codes"].as_array().unwrap().len(), 10);

    // 31 idle minutes: the session is gone.
    w.clock.advance(Duration::minutes(31));
    assert_eq!(
        b.get("/v1/me/sessions").await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Issue 16 (9a): a step-up renews the session (no fixation across a
/// privilege change): the answer sets a new session cookie and a new CSRF
/// cookie; the old token no longer authenticates, the new one does, with
/// the step-up's privilege, and the old CSRF token does not pass with it.
async fn a_step_up_renews_the_session(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut b = Browser::new(server.connect().await);
    let (seed, _) = enroll(&w, &mut b, "ren@example.com").await;
    for _ in 0..2 {
        w.clock.advance(Duration::minutes(10));
        assert_eq!(b.get("/v1/me/sessions").await.status, StatusCode::OK);
    }
    let (old_session, old_csrf) = (b.session.clone().unwrap(), b.csrf.clone().unwrap());
    let ok = b
        .post("/v1/auth/step-up", json!({"code": code(&w, &seed, 0)}))
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{}", ok.text());
    let new_session = set_cookie(&ok, "__Host-er_session").expect("a new session cookie");
    let new_csrf = set_cookie(&ok, "__Host-er_csrf").expect("a new CSRF cookie");
    assert_ne!(new_session, old_session);
    assert_ne!(new_csrf, old_csrf);

    // The old cookie is dead.
    let mut old = Browser::new(server.connect().await);
    old.session = Some(old_session);
    old.csrf = Some(old_csrf.clone());
    assert_eq!(
        old.get("/v1/me/sessions").await.status,
        StatusCode::UNAUTHORIZED
    );
    // The new session with the old CSRF token: refused.
    let mut mixed = Browser::new(server.connect().await);
    mixed.session = Some(new_session.clone());
    mixed.csrf = Some(old_csrf);
    assert_eq!(
        mixed
            .call(Method::DELETE, "/v1/me/devices", None, true)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // The new cookies work, stepped up: a sensitive write passes.
    assert_eq!(b.session.as_deref(), Some(new_session.as_str()));
    let sessions = b.get("/v1/me/sessions").await;
    assert_eq!(sessions.status, StatusCode::OK);
    assert_eq!(
        b.call(Method::DELETE, "/v1/me/devices", None, true)
            .await
            .status,
        StatusCode::OK
    );
}

async fn a_session_is_pinned_to_its_ip_family_directly(w: World) {
    // One dual-stack listener: IPv4 clients arrive as mapped addresses
    // and count as IPv4.
    let app = router(w.relay.clone(), HttpConfig::local()).unwrap();
    let Ok(listener) = tokio::net::TcpListener::bind("[::]:0").await else {
        println!("skipped: no IPv6 on this machine");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let v4 = Server {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let v6 = Server {
        addr: SocketAddr::new("::1".parse().unwrap(), port),
    };
    let mut b = Browser::new(v4.connect().await);
    enroll(&w, &mut b, "hal@example.com").await;
    assert_eq!(b.get("/v1/me/sessions").await.status, StatusCode::OK);
    let session = b.session.clone();
    let mut b6 = Browser::new(v6.connect().await);
    b6.session = session;
    assert_eq!(
        b6.get("/v1/me/sessions").await.status,
        StatusCode::UNAUTHORIZED
    );
    // A cookie showing up from the other family may be stolen: core ends
    // the session, for its own family too.
    assert_eq!(
        b.get("/v1/me/sessions").await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn behind_a_trusted_proxy_the_family_is_the_clients(w: World) {
    let trusted = HttpConfig {
        proxies: ProxyConfig::trusting(
            vec!["127.0.0.0/8".parse().unwrap()],
            HeaderName::from_static("cf-connecting-ip"),
        ),
        ..HttpConfig::local()
    };
    let server = w.serve(trusted).await;
    let mut b = Browser::new(server.connect().await);
    b.extra.push(("cf-connecting-ip", "198.51.100.40".into()));
    enroll(&w, &mut b, "ida@example.com").await;
    // The CDN's egress changes, the client's family does not: still in.
    b.extra[0].1 = "198.51.100.99".into();
    assert_eq!(b.get("/v1/me/sessions").await.status, StatusCode::OK);
    // The client moves to IPv6: out.
    b.extra[0].1 = "2001:db8::40".into();
    assert_eq!(
        b.get("/v1/me/sessions").await.status,
        StatusCode::UNAUTHORIZED
    );

    // Without the proxy trusted, the same header is ignored: the session
    // made from loopback (IPv4) stays in whatever the header says.
    let untrusted = w.serve(HttpConfig::local()).await;
    let mut b = Browser::new(untrusted.connect().await);
    enroll(&w, &mut b, "jo@example.com").await;
    b.extra.push(("cf-connecting-ip", "2001:db8::41".into()));
    assert_eq!(b.get("/v1/me/sessions").await.status, StatusCode::OK);
}

async fn logout_everywhere_ends_every_session(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut one = Browser::new(server.connect().await);
    let (seed, _) = enroll(&w, &mut one, "kim@example.com").await;
    let mut two = Browser::new(server.connect().await);
    w.clock.advance(Duration::seconds(30));
    let login = two
        .post(
            "/v1/auth/login",
            json!({"email": "kim@example.com", "password": PASSWORD}),
        )
        .await;
    let challenge = login.json()["challenge"].as_str().unwrap().to_owned();
    let done = two
        .post(
            "/v1/auth/second-factor",
            json!({"challenge": challenge, "code": code(&w, &seed, 0)}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK);
    assert_eq!(
        one.get("/v1/me/sessions").await.json()["sessions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // One ends the other's session (the newer one) by its id.
    let listed = one.get("/v1/me/sessions").await.json();
    let newest = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|s| s["created_at"].as_str().unwrap().to_owned())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ended = one
        .call(
            Method::DELETE,
            &format!("/v1/me/sessions/{newest}"),
            None,
            true,
        )
        .await;
    assert_eq!(ended.status, StatusCode::NO_CONTENT);
    assert_eq!(
        two.get("/v1/me/sessions").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(one.get("/v1/me/sessions").await.status, StatusCode::OK);
    assert_eq!(
        one.post("/v1/auth/logout-everywhere", json!({}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        one.get("/v1/me/sessions").await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn owners_manage_members_by_session_and_the_export_holds_no_credential(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut owner = Browser::new(server.connect().await);
    enroll(&w, &mut owner, "lee@example.com").await;
    let mut other = Browser::new(server.connect().await);
    enroll(&w, &mut other, "max@example.com").await;
    let id = |email: &'static str| {
        let store = w.relay.store().clone();
        async move { store.account_by_email(email).await.unwrap().unwrap().id }
    };
    let (lee, max) = (id("lee@example.com").await, id("max@example.com").await);
    w.relay
        .config()
        .create_project(lee, Some(w.ip), "acme", "Acme")
        .await
        .unwrap();

    // A non-member: the same 403 on every members route.
    let path = format!("/v1/projects/acme/members/{max}");
    assert_eq!(
        other.get("/v1/projects/acme/members").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        other
            .call(Method::PUT, &path, Some(json!({"role": "owner"})), true)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // The owner (stepped up by the login) adds max as an editor.
    let put = owner
        .call(Method::PUT, &path, Some(json!({"role": "editor"})), true)
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{}", put.text());
    let members = owner.get("/v1/projects/acme/members").await.json();
    assert_eq!(members["members"].as_array().unwrap().len(), 2);
    assert_eq!(members["next_after"], serde_json::Value::Null);
    // Paged by user id: one at a time, then the rest after `next_after`.
    let mut ids = [lee.to_string(), max.to_string()];
    ids.sort();
    let first = owner.get("/v1/projects/acme/members?limit=1").await.json();
    assert_eq!(first["members"].as_array().unwrap().len(), 1);
    assert_eq!(first["members"][0]["user"], ids[0]);
    assert_eq!(first["next_after"], ids[0]);
    let rest = owner
        .get(&format!(
            "/v1/projects/acme/members?limit=1&after={}",
            ids[0]
        ))
        .await
        .json();
    assert_eq!(rest["members"][0]["user"], ids[1]);
    assert_eq!(rest["next_after"], ids[1], "a full page names the next");
    let empty = owner
        .get(&format!("/v1/projects/acme/members?after={}", ids[1]))
        .await
        .json();
    assert!(empty["members"].as_array().unwrap().is_empty());
    assert_eq!(empty["next_after"], serde_json::Value::Null);
    for bad in [
        "limit=0",
        "limit=501",
        "limit=x",
        "after=key_00000000000000000000000000000000",
        "page=2",
    ] {
        let a = owner.get(&format!("/v1/projects/acme/members?{bad}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(a.json()["error"], "invalid_query", "{bad}");
    }
    // Now a member, but an editor: still no members surface.
    assert_eq!(
        other.get("/v1/projects/acme/members").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        other.get("/v1/projects/acme/lines").await.status,
        StatusCode::OK
    );
    // The last owner cannot leave.
    let me = format!("/v1/projects/acme/members/{lee}");
    assert_eq!(
        owner.call(Method::DELETE, &me, None, true).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        owner.call(Method::DELETE, &path, None, true).await.status,
        StatusCode::NO_CONTENT
    );

    let export = owner.get("/v1/me/export").await;
    assert_eq!(export.status, StatusCode::OK);
    assert_eq!(export.headers[header::CACHE_CONTROL], "no-store");
    assert!(
        export.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    let data = export.json();
    assert_eq!(data["format"], "echorelay.personal-data.v2");
    assert!(data.get("next_after").is_none(), "one document holds all");
    assert_eq!(data["account"]["email"], "lee@example.com");
    assert_eq!(data["account"]["totp_active"], true);
    assert_eq!(data["memberships"][0]["slug"], "acme");
    assert_eq!(data["memberships"][0]["role"], "owner");
    assert_eq!(data["sessions"].as_array().unwrap().len(), 1);
    let events = data["audit_events"].as_array().unwrap();
    assert!(
        events.len() >= 3,
        "login, project, membership changes: {}",
        events.len()
    );
    let text = export.text();
    for secret in ["$2y$", "$2b$", "ers_", "erd_", "password_hash", "seed"] {
        assert!(!text.contains(secret), "{secret} in the export");
    }
    assert!(!text.contains("max@example.com"), "nobody else's data");
    // The events after a cursor (docs/FORMATS.md §3.4): the first event's
    // position gives the rest.
    let first = &events[0];
    let at = chrono::DateTime::parse_from_rfc3339(first["at"].as_str().unwrap())
        .unwrap()
        .timestamp_micros();
    let chain = first["project"].as_str().unwrap_or("global");
    let cursor = format!("{at}.{chain}.{}", first["seq"]);
    let rest = owner.get(&format!("/v1/me/export?after={cursor}")).await;
    assert_eq!(rest.status, StatusCode::OK, "{}", rest.text());
    let rest = rest.json();
    assert_eq!(rest["account"]["email"], "lee@example.com");
    assert_eq!(rest["audit_events"].as_array().unwrap()[..], events[1..]);
    for bad in [
        "after=1.global",
        "after=01.global.1",
        "after=1.global.0",
        "before=1",
    ] {
        let a = owner.get(&format!("/v1/me/export?{bad}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(a.json()["error"], "invalid_query", "{bad}");
    }
    // API keys cannot export anyone.
    let mut c = server.connect().await;
    assert_eq!(
        c.get("/v1/me/export", Some("er_test_x")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// The account id of `email`.
async fn account_id(w: &World, email: &str) -> UserId {
    w.relay
        .store()
        .account_by_email(email)
        .await
        .unwrap()
        .unwrap()
        .id
}

/// Issue 16 (2): minting and rotating hand out a credential that outlives
/// the session, so a session past its step-up window is refused, as for
/// a reveal; after a step-up both work.
async fn minting_and_rotating_by_session_need_a_step_up(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut b = Browser::new(server.connect().await);
    let (seed, _) = enroll(&w, &mut b, "nia@example.com").await;
    let nia = account_id(&w, "nia@example.com").await;
    w.relay
        .config()
        .create_project(nia, Some(w.ip), "acme", "Acme")
        .await
        .unwrap();
    let mint = json!({"environment": "test", "role": "owner", "label": "by session"});

    // Within the login's step-up window.
    let first = b.post("/v1/projects/acme/keys", mint.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    let id = first.json()["key"]["id"].as_str().unwrap().to_owned();
    let rotate = format!("/v1/projects/acme/keys/{id}/rotate");

    // 20 minutes on, kept alive: past the window.
    for _ in 0..2 {
        w.clock.advance(Duration::minutes(10));
        assert_eq!(b.get("/v1/me/sessions").await.status, StatusCode::OK);
    }
    let count = |a: Answer| a.json()["keys"].as_array().unwrap().len();
    let keys_before = count(b.get("/v1/projects/acme/keys").await);
    for refused in [
        b.post("/v1/projects/acme/keys", mint.clone()).await,
        b.post(&rotate, json!({})).await,
    ] {
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(refused.json()["error"], "reauthentication_required");
        assert!(!refused.text().contains("er_test_"), "no key in a refusal");
    }
    // Reading keys needs no step-up; nothing was minted or rotated.
    let listed = b.get("/v1/projects/acme/keys").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(count(listed), keys_before, "nothing was minted");

    let ok = b
        .post("/v1/auth/step-up", json!({"code": code(&w, &seed, 0)}))
        .await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{}", ok.text());
    let minted = b.post("/v1/projects/acme/keys", mint).await;
    assert_eq!(minted.status, StatusCode::CREATED, "{}", minted.text());
    let rotated = b.post(&rotate, json!({})).await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.text());
    assert!(
        rotated.json()["plaintext"]
            .as_str()
            .unwrap()
            .starts_with("er_test_")
    );
}

/// Issue 16 (2): a member who leaves takes no key along: the keys they
/// minted are revoked with the removal (a demotion revokes those above
/// the new role), audited as the owner's; others' keys stay.
async fn a_departed_members_keys_are_revoked(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut owner = Browser::new(server.connect().await);
    enroll(&w, &mut owner, "oli@example.com").await;
    let mut member = Browser::new(server.connect().await);
    enroll(&w, &mut member, "pat@example.com").await;
    let (oli, pat) = (
        account_id(&w, "oli@example.com").await,
        account_id(&w, "pat@example.com").await,
    );
    w.relay
        .config()
        .create_project(oli, Some(w.ip), "acme", "Acme")
        .await
        .unwrap();
    let path = format!("/v1/projects/acme/members/{pat}");
    let put = owner
        .call(Method::PUT, &path, Some(json!({"role": "owner"})), true)
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{}", put.text());

    let pats_owner_key = mint(&mut member, "owner").await;
    let pats_editor_key = mint(&mut member, "editor").await;
    let pats_viewer_key = mint(&mut member, "viewer").await;
    let olis_key = mint(&mut owner, "owner").await;
    let mut c = server.connect().await;
    for k in [
        &pats_owner_key,
        &pats_editor_key,
        &pats_viewer_key,
        &olis_key,
    ] {
        assert_eq!(works(&mut c, k.clone()).await, StatusCode::OK);
    }

    // Demoted to editor: the owner key goes; the editor key (exactly the
    // new role) and the viewer key stay.
    let put = owner
        .call(Method::PUT, &path, Some(json!({"role": "editor"})), true)
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT, "{}", put.text());
    assert_eq!(
        works(&mut c, pats_owner_key.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(works(&mut c, pats_editor_key.clone()).await, StatusCode::OK);
    assert_eq!(works(&mut c, pats_viewer_key.clone()).await, StatusCode::OK);

    // Removed: every key they minted goes; the owner's own key stays.
    let revoked_before = revocations_by(&w, oli).await;
    let removed = owner.call(Method::DELETE, &path, None, true).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", removed.text());
    for k in [pats_editor_key, pats_viewer_key] {
        assert_eq!(works(&mut c, k).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(works(&mut c, olis_key).await, StatusCode::OK);
    assert_eq!(
        revocations_by(&w, oli).await,
        revoked_before + 2,
        "two audited revocations, by the owner who removed them"
    );
    // Again: no such membership (and nothing left to revoke).
    let again = owner.call(Method::DELETE, &path, None, true).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

/// Mints a key of `role` in `acme` by session; its plaintext.
async fn mint(b: &mut Browser, role: &'static str) -> String {
    let body = json!({"environment": "test", "role": role, "label": role});
    let a = b.post("/v1/projects/acme/keys", body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    a.json()["plaintext"].as_str().unwrap().to_owned()
}

/// The status of a read of `acme` with `key`.
async fn works(c: &mut Client, key: String) -> StatusCode {
    c.get("/v1/projects/acme/lines", Some(&key)).await.status
}

/// How many key revocations the audit log of `acme` holds by `user`.
async fn revocations_by(w: &World, user: UserId) -> usize {
    let caller = Caller::user(user, None);
    let grant = w
        .relay
        .voter()
        .authorize::<AuditRead>(&caller, "acme")
        .await
        .unwrap();
    w.relay
        .audit()
        .events(&grant, 0, 1000)
        .await
        .unwrap()
        .iter()
        .filter(|e| {
            e.actor == Actor::User(user)
                && matches!(
                    e.kind,
                    EventKind::Key {
                        action: KeyAction::Revoke,
                        ..
                    }
                )
        })
        .count()
}

on_every_store!(
    minting_and_rotating_by_session_need_a_step_up,
    a_departed_members_keys_are_revoked,
    password_then_totp_then_a_trusted_device,
    a_backup_code_works_once,
    cookie_writes_need_the_csrf_token_and_sessions_reach_projects,
    sessions_expire_when_idle_and_sensitive_calls_need_a_step_up,
    a_step_up_renews_the_session,
    a_session_is_pinned_to_its_ip_family_directly,
    behind_a_trusted_proxy_the_family_is_the_clients,
    logout_everywhere_ends_every_session,
    owners_manage_members_by_session_and_the_export_holds_no_credential,
);
