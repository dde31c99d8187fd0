//! `POST /v1/me/password` over real HTTP: the policy's feedback on a weak
//! password, a wrong current password, CSRF, and what a change ends:
//! every other session, every trusted device, the old token of this
//! session (renewed, not ended).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode, header};
use chrono::Duration;
use common::*;
use echorelay::core::account::totp::{TotpSeed, code_for_step, step_at};
use echorelay::prelude::*;
use echorelay_http::HttpConfig;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple 2026";
const NEW_PASSWORD: &str = "velvet otter quarry lantern 1987";

fn set_cookie(a: &Answer, name: &str) -> Option<String> {
    a.headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// A cookie jar over one connection.
struct Jar {
    client: Client,
    session: Option<String>,
    csrf: Option<String>,
    device: Option<String>,
}

impl Jar {
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Value>,
        csrf: bool,
    ) -> Answer {
        let mut cookies = Vec::new();
        if let Some(s) = &self.session {
            cookies.push(format!("__Host-er_session={s}"));
        }
        if let Some(d) = &self.device {
            cookies.push(format!("__Host-er_device={d}"));
        }
        let cookie = cookies.join("; ");
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if !cookie.is_empty() {
            extra.push(("cookie", &cookie));
        }
        if csrf && let Some(t) = &self.csrf {
            extra.push(("x-csrf-token", t));
        }
        let body = body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap()));
        let a = self.client.send(method, path, None, &extra, body).await;
        if let Some(s) = set_cookie(&a, "__Host-er_session") {
            self.session = Some(s).filter(|s| !s.is_empty());
        }
        if let Some(c) = set_cookie(&a, "__Host-er_csrf") {
            self.csrf = Some(c).filter(|c| !c.is_empty());
        }
        if let Some(d) = set_cookie(&a, "__Host-er_device") {
            self.device = Some(d).filter(|d| !d.is_empty());
        }
        a
    }

    async fn post(&mut self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body), true).await
    }
}

fn code(w: &World, seed: &TotpSeed) -> String {
    w.clock.advance(Duration::seconds(30));
    let params = w.relay.accounts().policy().totp;
    let step = step_at(&params, w.clock.now().timestamp() as u64);
    code_for_step(seed, &params, step).unwrap().to_string()
}

/// Password, then TOTP (trusting the device when asked): the jar holds
/// the session.
async fn log_in(w: &World, j: &mut Jar, seed: &TotpSeed, password: &str, trust: bool) -> Answer {
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
    let jar = |client| Jar {
        client,
        session: None,
        csrf: None,
        device: None,
    };
    let mut a = jar(server.connect().await);
    let mut b = jar(server.connect().await);
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
