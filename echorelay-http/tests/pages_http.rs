//! The account pages over plain HTTP, without a browser: every page
//! route answers hostile input (no cookie, forged cookies, garbage
//! bodies, a JSON body, duplicated fields, bad percent-encoding, a body
//! over the limit, odd queries) with an HTML page or a redirect of ours,
//! the pages' strict CSP and `no-store`, and never a 5xx.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode, header};
use common::*;
use echorelay::core::account::totp::{TotpSeed, code_for_step, step_at};
use echorelay::prelude::*;
use echorelay_http::HttpConfig;
use echorelay_http::pages::PAGE_CSP;

const GETS: &[&str] = &[
    "/account",
    "/account/sign-in",
    "/account/second-factor",
    "/account/enroll",
    "/account/step-up",
    "/account/password",
    "/account/backup-codes",
];

const POSTS: &[&str] = &[
    "/account/sign-in",
    "/account/second-factor",
    "/account/enroll",
    "/account/step-up",
    "/account/password",
    "/account/backup-codes",
    "/account/backup-codes/download",
    "/account/sessions/end",
    "/account/devices/revoke",
    "/account/sign-out",
    "/account/sign-out-everywhere",
];

fn check(a: &Answer, what: &str) {
    assert!(
        !a.status.is_server_error(),
        "{what}: {} {}",
        a.status,
        a.text()
    );
    assert_eq!(
        a.headers[header::CONTENT_SECURITY_POLICY],
        PAGE_CSP,
        "{what}"
    );
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store", "{what}");
    assert_eq!(a.headers[header::REFERRER_POLICY], "no-referrer", "{what}");
    if a.status.is_redirection() {
        let to = a.headers[header::LOCATION].to_str().unwrap();
        assert!(to.starts_with("/account"), "{what}: to {to}");
        assert!(
            !to.contains("ers_") && !to.contains("erc_"),
            "{what}: no token in {to}"
        );
    } else {
        assert_eq!(
            a.headers[header::CONTENT_TYPE],
            "text/html; charset=utf-8",
            "{what}"
        );
        let text = a.text();
        assert!(text.starts_with("<!DOCTYPE html>"), "{what}");
        assert!(!text.contains("<script>"), "{what}: no inline script");
        assert!(!text.contains("style="), "{what}: no inline style");
    }
}

/// A signed-in session's cookie value, through core (enrollment).
async fn session(w: &World) -> String {
    let accounts = w.relay.accounts();
    accounts
        .register(
            "hal@example.com",
            SecretString::from("correct horse battery staple 2026"),
            Some(w.ip),
        )
        .await
        .unwrap();
    let PasswordStep::EnrollmentRequired(c) = accounts
        .login_password(
            "hal@example.com",
            SecretString::from("correct horse battery staple 2026"),
            "127.0.0.1".parse().unwrap(),
            None,
        )
        .await
        .unwrap()
    else {
        panic!("enrollment first")
    };
    let ip = "127.0.0.1".parse().unwrap();
    let offer = accounts
        .begin_enrollment(c.token.expose_secret(), ip)
        .await
        .unwrap();
    let seed = TotpSeed::from_base32(offer.secret_base32.expose_secret()).unwrap();
    let params = accounts.policy().totp;
    let step = step_at(&params, w.clock.now().timestamp() as u64);
    let code = code_for_step(&seed, &params, step).unwrap().to_string();
    let done = accounts
        .confirm_enrollment(
            c.token.expose_secret(),
            &SecretString::from(code),
            ip,
            false,
        )
        .await
        .unwrap();
    done.login.session.token.expose_secret().to_owned()
}

async fn hostile_input_never_breaks_a_page(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    let signed_in = format!("__Host-er_session={}", session(&w).await);
    let cookies = [
        Some(signed_in.as_str()),
        None,
        Some("__Host-er_session=ers_forged; __Host-er_form=x; __Host-er_challenge=erc_forged"),
        Some("__Host-er_session=ers_\"quoted\"; __Host-er_challenge=%%%"),
        Some("__Host-er_session=a; __Host-er_session=b"),
    ];
    for cookie in cookies {
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if let Some(k) = cookie {
            extra.push(("cookie", k));
        }
        for path in GETS {
            for q in [
                "",
                "?m=%3Cscript%3E",
                "?m=ended&m=restart",
                "?for=../../x",
                "?%zz",
            ] {
                let what = format!("GET {path}{q} with {cookie:?}");
                let a = c
                    .send(Method::GET, &format!("{path}{q}"), None, &extra, None)
                    .await;
                check(&a, &what);
                assert!(!a.text().contains("<script>"), "{what}");
            }
        }
        let huge = format!("email={}", "a".repeat(70 * 1024));
        let bodies: [(&str, Vec<u8>); 7] = [
            ("application/x-www-form-urlencoded", Vec::new()),
            (
                "application/x-www-form-urlencoded",
                b"csrf=x&email=a%40b.c&password=p&code=1&backup_code=2&id=all&for=devices&codes=a+b".to_vec(),
            ),
            ("application/x-www-form-urlencoded", b"csrf=x&csrf=y&email=a&email=b".to_vec()),
            ("application/x-www-form-urlencoded", b"%ff%fe=%zz&password=%00".to_vec()),
            ("application/x-www-form-urlencoded", vec![0xff, 0xfe, 0x00, b'=', 0x80]),
            ("application/json", br#"{"email": "a@b.c", "password": "p"}"#.to_vec()),
            ("application/x-www-form-urlencoded", huge.into_bytes()),
        ];
        for path in POSTS {
            for (kind, body) in &bodies {
                let what = format!("POST {path} ({kind}, {} bytes) with {cookie:?}", body.len());
                let a = c
                    .send(Method::POST, path, None, &extra, Some((kind, body.clone())))
                    .await;
                check(&a, &what);
                assert_ne!(a.status, StatusCode::OK, "{what}: nothing done");
            }
        }
    }
    // The download of the codes a page showed: a text attachment of
    // exactly those codes; anything that is not codes is refused.
    let token = signed_in.trim_start_matches("__Host-er_session=");
    let csrf = echorelay_http::cookies::csrf_token(token);
    let extra = [("cookie", signed_in.as_str())];
    let form = |codes: &str| {
        let codes = codes.replace(' ', "+");
        format!("csrf={csrf}&codes={codes}").into_bytes()
    };
    let ok = c
        .send(
            Method::POST,
            "/account/backup-codes/download",
            None,
            &extra,
            Some((
                "application/x-www-form-urlencoded",
                form("abcd-efgh-1234 wxyz-9876-qrst"),
            )),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(
        ok.headers[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        ok.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"echorelay-backup-codes.txt\""
    );
    assert!(
        ok.text().ends_with("\nabcd-efgh-1234\nwxyz-9876-qrst\n"),
        "{}",
        ok.text()
    );
    for bad in ["", "%3Cscript%3E", &"a ".repeat(20)] {
        let a = c
            .send(
                Method::POST,
                "/account/backup-codes/download",
                None,
                &extra,
                Some(("application/x-www-form-urlencoded", form(bad))),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        check(&a, bad);
    }

    // The stylesheet and the script are served as such, and nothing else
    // is made up under /account.
    let css = c.get("/account/style.css", None).await;
    assert_eq!(css.headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    let js = c.get("/account/print.js", None).await;
    assert_eq!(
        js.headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        c.get("/account/nothing-here", None).await.status,
        StatusCode::NOT_FOUND
    );
}

on_every_store!(hostile_input_never_breaks_a_page);
