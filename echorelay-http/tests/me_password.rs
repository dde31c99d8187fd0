//! `POST /v1/me/password` over real HTTP: the policy's feedback on a weak
//! password, a wrong current password, CSRF, and what a change ends:
//! every other session, every trusted device, the old token of this
//! session (renewed, not ended).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use chrono::Duration;
use common::*;
use echorelay::core::account::totp::{TotpSeed, code_for_step, step_at};
use echorelay::prelude::*;
use echorelay_http::HttpConfig;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple 2026";
const NEW_PASSWORD: &str = "velvet otter quarry lantern 1987";

fn code(w: &World, seed: &TotpSeed) -> String {
    w.clock.advance(Duration::seconds(30));
    let params = w.relay.accounts().policy().totp;
    let step = step_at(&params, w.clock.now().timestamp() as u64);
    code_for_step(seed, &params, step).unwrap().to_string()
}

/// Password, then TOTP (trusting the device when asked): the browser holds
/// the session.
async fn log_in(
    w: &World,
    j: &mut Browser,
    seed: &TotpSeed,
    password: &str,
    trust: bool,
) -> Answer {
    w.clock.advance(Duration::seconds(5));
    let login = j
        .post(
            "/v1/auth/login",
            json!({"email": "gus@example.com", "password": password}),
        )
        .await;
    if login.status != StatusCode::OK || login.json()["step"] != "second_factor" {
        return login;
    }
    let challenge = login.json()["challenge"].as_str().unwrap().to_owned();
    j.post(
        "/v1/auth/second-factor",
        json!({"challenge": challenge, "code": code(w, seed), "trust_device": trust}),
    )
    .await
}

async fn changing_the_password_ends_every_other_session_and_device(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut a = Browser::new(server.connect().await);
    let mut b = Browser::new(server.connect().await);
    w.relay
        .accounts()
        .register("gus@example.com", SecretString::from(PASSWORD), Some(w.ip))
        .await
        .unwrap();
    let login = a
        .post(
            "/v1/auth/login",
            json!({"email": "gus@example.com", "password": PASSWORD}),
        )
        .await;
    let challenge = login.json()["challenge"].as_str().unwrap().to_owned();
    let offer = a
        .post("/v1/auth/enrollment", json!({"challenge": challenge}))
        .await;
    let seed = TotpSeed::from_base32(offer.json()["secret"].as_str().unwrap()).unwrap();
    let done = a
        .post(
            "/v1/auth/enrollment/confirm",
            json!({"challenge": challenge, "code": code(&w, &seed), "trust_device": true}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert!(a.device.is_some());
    // A second session, on a trusted device too.
    assert_eq!(
        log_in(&w, &mut b, &seed, PASSWORD, true).await.status,
        StatusCode::OK
    );
    let list = a
        .call(Method::GET, "/v1/me/sessions", None, false)
        .await
        .json();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
    assert_eq!(list["devices"].as_array().unwrap().len(), 2);

    // Without the CSRF token: refused.
    let body = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    let no_csrf = a
        .call(Method::POST, "/v1/me/password", Some(body.clone()), false)
        .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    assert_eq!(no_csrf.json()["error"], "csrf");
    // A weak or short new password: the policy says which rule.
    for (weak, words) in [
        ("password1234", "too common"),
        ("short", "at least 12 characters"),
    ] {
        let r = a
            .post(
                "/v1/me/password",
                json!({"current_password": PASSWORD, "new_password": weak}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.json()["error"], "invalid");
        let message = r.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(words), "{message}");
        assert!(!message.contains(weak), "no echo of the password");
    }
    // A wrong current password: 403, nothing changed.
    let wrong = a
        .post(
            "/v1/me/password",
            json!({"current_password": "not my password at all", "new_password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(wrong.json()["error"], "current_password");
    // An unknown field is a typed 400.
    let extra = a
        .post(
            "/v1/me/password",
            json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "x": 1}),
        )
        .await;
    assert_eq!(extra.status, StatusCode::BAD_REQUEST);

    // The change.
    w.clock.advance(Duration::seconds(5));
    let old_token = a.session.clone();
    let changed = a.post("/v1/me/password", body).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    assert_eq!(changed.json()["csrf_token"].as_str(), a.csrf.as_deref());
    assert_ne!(a.session, old_token, "this session is renewed");
    assert_eq!(a.device, None, "the device cookie is cleared");
    let list = a.call(Method::GET, "/v1/me/sessions", None, false).await;
    assert_eq!(list.status, StatusCode::OK);
    let list = list.json();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["devices"].as_array().unwrap().len(), 0, "{list}");
    // The other session ended; the old token of this one too.
    assert_eq!(
        b.call(Method::GET, "/v1/me/sessions", None, false)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let renewed = a.session.replace(old_token.unwrap());
    assert_eq!(
        a.call(Method::GET, "/v1/me/sessions", None, false)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    a.session = renewed;
    // The old password no longer signs in; the other device's cookie no
    // longer skips TOTP.
    b.session = None;
    assert_eq!(
        log_in(&w, &mut b, &seed, PASSWORD, false).await.status,
        StatusCode::UNAUTHORIZED
    );
    w.clock.advance(Duration::seconds(5));
    let login = b
        .post(
            "/v1/auth/login",
            json!({"email": "gus@example.com", "password": NEW_PASSWORD}),
        )
        .await;
    assert_eq!(login.json()["step"], "second_factor", "{}", login.text());
}

on_every_store!(changing_the_password_ends_every_other_session_and_device);
