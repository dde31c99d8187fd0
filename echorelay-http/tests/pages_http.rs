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
    enrolled(w).await.1
}

const PASSWORD: &str = "correct+horse+battery+staple+2026";

/// hal's account, enrolled through core: the TOTP seed, the session
/// enrollment signed in, and the backup codes.
async fn enrolled(w: &World) -> (TotpSeed, String, Vec<String>) {
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
    let codes = done
        .backup_codes
        .iter()
        .map(|c| c.expose_secret().to_owned())
        .collect();
    (
        seed,
        done.login.session.token.expose_secret().to_owned(),
        codes,
    )
}

/// The TOTP code of the world's time, 30 s on (so no code is replayed).
fn next_code(w: &World, seed: &TotpSeed) -> String {
    w.clock.advance(chrono::Duration::seconds(30));
    let params = w.relay.accounts().policy().totp;
    code_for_step(
        seed,
        &params,
        step_at(&params, w.clock.now().timestamp() as u64),
    )
    .unwrap()
    .to_string()
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

/// The cookies a browser keeps: set by `Set-Cookie`, dropped by an empty
/// value (the pages clear a cookie with an empty value and `Max-Age=0`).
#[derive(Default)]
struct Cookies(Vec<(String, String)>);

impl Cookies {
    fn take(&mut self, a: &Answer) {
        for v in a.headers.get_all(header::SET_COOKIE) {
            let v = v.to_str().unwrap();
            assert!(v.starts_with("__Host-"), "{v}");
            assert!(v.contains("; Path=/; Secure"), "{v}");
            let (name, rest) = v.split_once('=').unwrap();
            let value = rest.split(';').next().unwrap();
            self.0.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.0.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    /// A browser holding only this session's cookie.
    fn signed_in(token: &str) -> Self {
        Self(vec![("__Host-er_session".into(), token.to_owned())])
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.join("; ")
    }
}

/// The value of the page's first hidden `csrf` field.
fn csrf_of(page: &str) -> String {
    let field = "name=\"csrf\" value=\"";
    let at = page.find(field).expect("a CSRF field") + field.len();
    page[at..].split('"').next().unwrap().to_owned()
}

async fn post_form(
    c: &mut Client,
    jar: &Cookies,
    path: &str,
    form: &str,
    extra: &[(&str, &str)],
) -> Answer {
    let cookie = jar.header();
    let mut headers = vec![("cookie", cookie.as_str())];
    headers.extend_from_slice(extra);
    let a = c
        .send(
            Method::POST,
            path,
            None,
            &headers,
            Some((
                "application/x-www-form-urlencoded",
                form.as_bytes().to_vec(),
            )),
        )
        .await;
    check(&a, path);
    a
}

/// A form posted with the browser's cookies and nothing else.
async fn post(c: &mut Client, jar: &Cookies, path: &str, form: &str) -> Answer {
    post_form(c, jar, path, form, &[]).await
}

/// A page fetched with the browser's cookies.
async fn get_page(c: &mut Client, jar: &Cookies, path: &str) -> Answer {
    let cookie = jar.header();
    c.send(
        Method::GET,
        path,
        None,
        &[("cookie", cookie.as_str())],
        None,
    )
    .await
}

fn location(a: &Answer) -> &str {
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.text());
    a.headers[header::LOCATION].to_str().unwrap()
}

/// Sign-in, second factor and sign-out through the forms, as a browser
/// without JavaScript sends them: each form's token is checked (missing,
/// wrong, from another site: refused, nothing done), the challenge rides
/// in its short cookie, and the session's cookies come and go.
async fn the_forms_sign_in_and_out_with_their_tokens(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    let (seed, _, _) = enrolled(&w).await;
    let mut jar = Cookies::default();

    // The sign-in page sets the form cookie; its field carries the token.
    let page = c.get("/account/sign-in", None).await;
    check(&page, "sign-in page");
    jar.take(&page);
    let form_cookie = jar
        .get("__Host-er_form")
        .expect("the form cookie")
        .to_owned();
    assert_eq!(form_cookie.len(), 64);
    let token = csrf_of(&page.text());
    let password = format!("password={PASSWORD}&email=hal%40example.com");

    // Refused without the token, with a wrong one, from another site, and
    // without the cookie the token belongs to.
    for (form, extra, without_cookie) in [
        (password.to_owned(), vec![], false),
        (format!("csrf={}&{password}", "0".repeat(64)), vec![], false),
        (
            format!("csrf={token}&{password}"),
            vec![("sec-fetch-site", "cross-site")],
            false,
        ),
        (format!("csrf={token}&{password}"), vec![], true),
    ] {
        let jar_now = if without_cookie {
            Cookies::default()
        } else {
            Cookies(jar.0.clone())
        };
        let a = post_form(&mut c, &jar_now, "/account/sign-in", &form, &extra).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{form} {extra:?}");
        assert!(a.text().contains("This form has expired"), "{}", a.text());
        assert!(a.headers.get(header::LOCATION).is_none());
    }
    // A page shown again keeps the same token for the same cookie.
    let again = get_page(&mut c, &jar, "/account/sign-in").await;
    assert!(again.headers.get(header::SET_COOKIE).is_none());
    assert_eq!(csrf_of(&again.text()), token);

    // With it: on to the second factor, the challenge in its cookie for
    // at most the challenge's 5 minutes.
    let a = post(
        &mut c,
        &jar,
        "/account/sign-in",
        &format!("csrf={token}&{password}"),
    )
    .await;
    assert_eq!(location(&a), "/account/second-factor");
    let challenge = a
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("__Host-er_challenge="))
        .expect("the challenge cookie");
    assert!(
        challenge.contains("HttpOnly; SameSite=Strict; Max-Age="),
        "{challenge}"
    );
    let max_age: i64 = challenge
        .rsplit("Max-Age=")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&max_age), "{challenge}");
    jar.take(&a);
    assert!(jar.get("__Host-er_challenge").unwrap().starts_with("erc_"));

    // The code, then the account: the session's cookies set, the
    // challenge's cleared.
    w.clock.advance(chrono::Duration::seconds(30));
    let params = w.relay.accounts().policy().totp;
    let code = code_for_step(
        &seed,
        &params,
        step_at(&params, w.clock.now().timestamp() as u64),
    )
    .unwrap()
    .to_string();
    let a = post(
        &mut c,
        &jar,
        "/account/second-factor",
        &format!("csrf={token}&code={code}"),
    )
    .await;
    assert_eq!(location(&a), "/account");
    jar.take(&a);
    assert_eq!(jar.get("__Host-er_challenge"), None);
    let session = jar.get("__Host-er_session").expect("a session").to_owned();
    assert!(session.starts_with("ers_"));
    let csrf = jar.get("__Host-er_csrf").expect("a CSRF cookie").to_owned();
    assert_eq!(csrf, echorelay_http::cookies::csrf_token(&session));
    let account = get_page(&mut c, &jar, "/account").await;
    assert_eq!(account.status, StatusCode::OK);
    assert!(account.text().contains("This session"));
    assert_eq!(csrf_of(&account.text()), csrf);

    // Signing out takes the session's token, not the form's, nor one from
    // another site.
    for (form, extra) in [
        (format!("csrf={token}"), vec![]),
        (String::new(), vec![]),
        (
            format!("csrf={csrf}"),
            vec![("sec-fetch-site", "cross-site")],
        ),
    ] {
        let a = post_form(&mut c, &jar, "/account/sign-out", &form, &extra).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{form}");
        assert!(a.text().contains("This form is out of date"));
    }
    let still = get_page(&mut c, &jar, "/account").await;
    assert_eq!(still.status, StatusCode::OK, "still signed in");
    let a = post(&mut c, &jar, "/account/sign-out", &format!("csrf={csrf}")).await;
    assert_eq!(location(&a), "/account/sign-in?m=signed-out");
    jar.take(&a);
    assert_eq!(jar.get("__Host-er_session"), None);
    let gone = c
        .send(
            Method::GET,
            "/account",
            None,
            &[("cookie", format!("__Host-er_session={session}").as_str())],
            None,
        )
        .await;
    assert_eq!(location(&gone), "/account/sign-in?m=ended");
}

/// The sign-in form says what is wrong with each field, at the limits
/// exactly (254 characters of email, 4,096 bytes of password), shows the
/// email again only when it is one the field takes, and tells a refused
/// code (`?m=refused`) as the form's error.
async fn the_sign_in_form_says_what_is_wrong_at_each_limit(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    enrolled(&w).await;
    let page = c.get("/account/sign-in", None).await;
    let mut jar = Cookies::default();
    jar.take(&page);
    let token = csrf_of(&page.text());
    let email_of = |n: usize| format!("{}@example.com", "a".repeat(n - 12));
    let field_value = |text: &str| {
        text.find("id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" value=\"")
            .is_some()
    };
    let cases: [(String, String, &str, bool); 7] = [
        // (email, password, the words, the email shown again)
        (email_of(254), "wrong".into(), "is not right", true),
        (
            email_of(255),
            "wrong".into(),
            "has at most 254 characters",
            false,
        ),
        (
            "hal@example.com".into(),
            "p".repeat(4096),
            "is not right",
            true,
        ),
        (
            "hal@example.com".into(),
            "p".repeat(4097),
            "has at most 4096 bytes",
            true,
        ),
        (
            "   ".into(),
            "wrong".into(),
            "Enter your email address.",
            true,
        ),
        (
            "hal@example.com".into(),
            String::new(),
            "Enter your password.",
            true,
        ),
        (
            String::new(),
            String::new(),
            "Enter your email address.",
            true,
        ),
    ];
    for (email, password, words, shown) in cases {
        let form = format!(
            "csrf={token}&email={}&password={password}",
            email.replace('@', "%40").replace(' ', "+")
        );
        let a = post(&mut c, &jar, "/account/sign-in", &form).await;
        let what = format!(
            "{} chars of email, {} of password",
            email.len(),
            password.len()
        );
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{what}");
        let text = a.text();
        assert!(text.contains(words), "{what}: {text}");
        assert!(text.contains("<title>Error: Sign in"), "{what}");
        assert_eq!(field_value(&text), shown, "{what}: {text}");
        if shown && !email.trim().is_empty() {
            assert!(text.contains(&format!("value=\"{email}\"")), "{what}");
        }
    }
    // A stale form shows the email again only when the field takes it.
    for (email, shown) in [(email_of(254), true), (email_of(255), false)] {
        let form = format!("csrf=stale&email={}&password=x", email.replace('@', "%40"));
        let a = post(&mut c, &jar, "/account/sign-in", &form).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert_eq!(field_value(&a.text()), shown, "{}", email.len());
    }
    // A refused code sends the person here: the form's error says why.
    let refused = c.get("/account/sign-in?m=refused", None).await;
    check(&refused, "?m=refused");
    assert!(refused.text().contains("That code was not accepted"));
    assert!(refused.text().contains("<title>Error: Sign in"));
    let plain = c.get("/account/sign-in?m=restart", None).await;
    assert!(!plain.text().contains("<title>Error:"));
    assert!(plain.text().contains("That sign-in attempt has expired"));
}

/// The signed-in forms do what their buttons say: end another session
/// (this one stays) or this one (signed out); stop trusting one browser
/// or every one, after a step-up that leads back where it was asked for;
/// and the second factor takes a backup code, with its length checked.
async fn the_signed_in_forms_do_what_their_buttons_say(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    let (seed, token, codes) = enrolled(&w).await;
    let accounts = w.relay.accounts();
    let ip = "127.0.0.1".parse().unwrap();
    // Two more sessions, each trusting its browser.
    let mut others = Vec::new();
    for _ in 0..2 {
        let code = next_code(&w, &seed);
        let PasswordStep::SecondFactorRequired(ch) = accounts
            .login_password(
                "hal@example.com",
                SecretString::from(PASSWORD.replace('+', " ")),
                ip,
                None,
            )
            .await
            .unwrap()
        else {
            panic!("a second factor")
        };
        let done = accounts
            .login_second_factor(
                ch.token.expose_secret(),
                SecondFactor::Totp(SecretString::from(code)),
                ip,
                true,
            )
            .await
            .unwrap();
        others.push(done);
    }
    let mut jar = Cookies::signed_in(&token);
    let csrf = echorelay_http::cookies::csrf_token(&token);
    let page = get_page(&mut c, &jar, "/account").await;
    let text = page.text();
    assert_eq!(text.matches("Another session").count(), 2, "{text}");
    assert_eq!(text.matches("This session").count(), 1);
    assert!(text.contains("<dd>IPv4</dd>"), "{text}");
    // Times read as dates, to the minute, in UTC.
    let shown = text
        .split("<dt>Signed in</dt><dd>")
        .nth(1)
        .and_then(|rest| rest.split("</dd>").next())
        .unwrap();
    let at = chrono::NaiveDateTime::parse_from_str(shown, "%Y-%m-%d %H:%M UTC").unwrap();
    assert!(
        (w.clock.now().naive_utc() - at).num_minutes().abs() <= 2,
        "{shown}"
    );
    assert_eq!(text.matches("Stop trusting this browser").count(), 2);

    // Ending another session: it ends, this one stays; again: gone.
    let other = others[0].session.id.to_string();
    let a = post(
        &mut c,
        &jar,
        "/account/sessions/end",
        &format!("csrf={csrf}&id={other}"),
    )
    .await;
    assert_eq!(location(&a), "/account?m=session-ended");
    assert!(
        a.headers.get(header::SET_COOKIE).is_none(),
        "this session stays"
    );
    assert!(
        accounts
            .authenticate(others[0].session.token.expose_secret(), ip)
            .await
            .is_err()
    );
    let a = post(
        &mut c,
        &jar,
        "/account/sessions/end",
        &format!("csrf={csrf}&id={other}"),
    )
    .await;
    assert_eq!(location(&a), "/account?m=session-gone");
    let a = post(
        &mut c,
        &jar,
        "/account/sessions/end",
        &format!("csrf={csrf}&id=nonsense"),
    )
    .await;
    assert_eq!(location(&a), "/account?m=session-gone");

    // Revoking a browser past the step-up window asks to confirm first,
    // for the devices; confirming leads back to the account.
    w.clock.advance(chrono::Duration::minutes(11));
    let device = others[0].device.as_ref().unwrap().id.to_string();
    let a = post(
        &mut c,
        &jar,
        "/account/devices/revoke",
        &format!("csrf={csrf}&id={device}"),
    )
    .await;
    assert_eq!(location(&a), "/account/step-up?for=devices");
    let step = get_page(&mut c, &jar, "/account/step-up?for=devices").await;
    check(&step, "step-up page");
    assert!(step.text().contains("Changing which browsers are trusted"));
    assert!(step.text().contains("name=\"for\" value=\"devices\""));
    let a = post(
        &mut c,
        &jar,
        "/account/step-up",
        &format!("csrf={csrf}&for=devices&password={PASSWORD}"),
    )
    .await;
    assert_eq!(location(&a), "/account?m=stepped-up");
    jar.take(&a);
    let renewed = jar.get("__Host-er_session").unwrap().to_owned();
    assert_ne!(renewed, token, "a step-up renews the session");
    let csrf = echorelay_http::cookies::csrf_token(&renewed);
    let a = post(
        &mut c,
        &jar,
        "/account/devices/revoke",
        &format!("csrf={csrf}&id={device}"),
    )
    .await;
    assert_eq!(location(&a), "/account?m=device-revoked");
    assert_eq!(
        accounts
            .access_list(others[1].session.user)
            .await
            .unwrap()
            .devices
            .len(),
        1
    );
    let a = post(
        &mut c,
        &jar,
        "/account/devices/revoke",
        &format!("csrf={csrf}&id={device}"),
    )
    .await;
    assert_eq!(location(&a), "/account?m=device-gone");
    let a = post(
        &mut c,
        &jar,
        "/account/devices/revoke",
        &format!("csrf={csrf}"),
    )
    .await;
    assert_eq!(location(&a), "/account?m=device-gone");
    let a = post(
        &mut c,
        &jar,
        "/account/devices/revoke",
        &format!("csrf={csrf}&id=all"),
    )
    .await;
    assert_eq!(location(&a), "/account?m=devices-revoked");
    assert!(
        accounts
            .access_list(others[1].session.user)
            .await
            .unwrap()
            .devices
            .is_empty()
    );

    // A step-up asked for the backup codes leads back to them.
    let a = post(
        &mut c,
        &jar,
        "/account/step-up",
        &format!("csrf={csrf}&for=backup-codes&password={PASSWORD}"),
    )
    .await;
    assert_eq!(location(&a), "/account/backup-codes?m=stepped-up");
    jar.take(&a);
    let renewed = jar.get("__Host-er_session").unwrap().to_owned();
    let csrf = echorelay_http::cookies::csrf_token(&renewed);
    // A code of exactly 32 characters is taken as a code (and is wrong);
    // one of 33 is told as too long.
    for (n, words) in [
        (32, "That was not right"),
        (33, "A code has at most 32 characters"),
    ] {
        let a = post(
            &mut c,
            &jar,
            "/account/step-up",
            &format!("csrf={csrf}&for=devices&code={}", "1".repeat(n)),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{n}");
        assert!(a.text().contains(words), "{n}: {}", a.text());
    }
    // A password over 4,096 bytes is told as such, never tried.
    let a = post(
        &mut c,
        &jar,
        "/account/step-up",
        &format!("csrf={csrf}&for=devices&password={}", "p".repeat(4097)),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        a.text().contains("A password has at most 4096 bytes"),
        "{}",
        a.text()
    );
    // The app's code confirms as the password does.
    let code = next_code(&w, &seed);
    let a = post(
        &mut c,
        &jar,
        "/account/step-up",
        &format!("csrf={csrf}&for=devices&code={code}"),
    )
    .await;
    assert_eq!(location(&a), "/account?m=stepped-up");
    jar.take(&a);
    let renewed = jar.get("__Host-er_session").unwrap().to_owned();
    let csrf = echorelay_http::cookies::csrf_token(&renewed);

    // Ending this session from its own card signs out here.
    let this = accounts
        .authenticate(&renewed, ip)
        .await
        .unwrap()
        .session
        .to_string();
    let a = post(
        &mut c,
        &jar,
        "/account/sessions/end",
        &format!("csrf={csrf}&id={this}"),
    )
    .await;
    assert_eq!(location(&a), "/account/sign-in?m=signed-out");
    jar.take(&a);
    assert_eq!(jar.get("__Host-er_session"), None);

    // The second factor by a backup code, through the forms: the page
    // offers trust for the policy's days; a code over 32 characters is
    // told as such (the challenge is kept); the code signs in.
    let page = c.get("/account/sign-in", None).await;
    jar.take(&page);
    let form_token = csrf_of(&page.text());
    let a = post(
        &mut c,
        &jar,
        "/account/sign-in",
        &format!("csrf={form_token}&email=hal%40example.com&password={PASSWORD}"),
    )
    .await;
    assert_eq!(location(&a), "/account/second-factor");
    jar.take(&a);
    let second = get_page(&mut c, &jar, "/account/second-factor").await;
    let days = accounts.policy().device_lifetime.num_days();
    assert!(
        second
            .text()
            .contains(&format!("Trust this browser for {days} days"))
    );
    for (field, n) in [("backup_code", 33), ("code", 33)] {
        let a = post(
            &mut c,
            &jar,
            "/account/second-factor",
            &format!("csrf={form_token}&{field}={}", "1".repeat(n)),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert!(
            a.text().contains("A code has at most 32 characters"),
            "{field}"
        );
    }
    for (form, words) in [
        ("code=+++", "Enter the 6-digit code"),
        ("backup_code=", "Enter one of your backup codes."),
    ] {
        let a = post(
            &mut c,
            &jar,
            "/account/second-factor",
            &format!("csrf={form_token}&{form}"),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{form}");
        assert!(a.text().contains(words), "{form}: {}", a.text());
    }
    let a = post(
        &mut c,
        &jar,
        "/account/second-factor",
        &format!("csrf={form_token}&backup_code={}", codes[0]),
    )
    .await;
    assert_eq!(location(&a), "/account");
    jar.take(&a);
    assert!(jar.get("__Host-er_session").is_some());
}

/// The password form: the account it is for (for password managers),
/// each field's error tied to its field, the limits exactly, the new
/// password typed twice, and a change that works.
async fn the_password_form_marks_each_field_and_changes_the_password(w: World) {
    let server = w.serve(HttpConfig::local()).await;
    let mut c = server.connect().await;
    let (_, token, _) = enrolled(&w).await;
    let mut jar = Cookies::signed_in(&token);
    let csrf = echorelay_http::cookies::csrf_token(&token);
    let page = get_page(&mut c, &jar, "/account/password").await;
    check(&page, "password page");
    assert!(
        page.text().contains(
            "<input type=\"hidden\" name=\"username\" autocomplete=\"username\" value=\"hal@example.com\">"
        ),
        "{}",
        page.text()
    );
    let new = "velvet+otter+quarry+lantern+1987";
    let cases = [
        // (current, new, again, the field marked, the words)
        (
            "p".repeat(4097),
            new.to_owned(),
            new.to_owned(),
            "current_password",
            "A password has at most 4096 bytes.",
        ),
        (
            String::new(),
            new.to_owned(),
            new.to_owned(),
            "current_password",
            "Enter your current password.",
        ),
        (
            "p".repeat(4096),
            new.to_owned(),
            new.to_owned(),
            "current_password",
            "Your current password is not right",
        ),
        (
            PASSWORD.to_owned(),
            new.to_owned(),
            "velvet+otter+quarry+lantern+1988".to_owned(),
            "confirm_password",
            "The two new passwords differ",
        ),
        (
            PASSWORD.to_owned(),
            "short".to_owned(),
            "short".to_owned(),
            "new_password",
            "The new password must be at least 12 characters long.",
        ),
        (
            PASSWORD.to_owned(),
            String::new(),
            String::new(),
            "new_password",
            "Enter a new password.",
        ),
    ];
    for (current, new_password, again, field, words) in cases {
        let form = format!(
            "csrf={csrf}&current_password={current}&new_password={new_password}&confirm_password={again}"
        );
        let a = post(&mut c, &jar, "/account/password", &form).await;
        let what = format!("{field}: {words}");
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{what}");
        let text = a.text();
        let marked = format!(
            "<p class=\"error\" id=\"{field}-error\"><span class=\"visually-hidden\">Error: </span>{words}"
        );
        assert!(text.contains(&marked), "{what}: {text}");
        assert!(
            text.contains(&format!("id=\"{field}\" name=\"{field}\"")),
            "{what}"
        );
        assert_eq!(text.matches("aria-invalid=\"true\"").count(), 1, "{what}");
    }
    // Past the back-off the one wrong current password started.
    w.clock.advance(chrono::Duration::minutes(5));
    let a = post(
        &mut c,
        &jar,
        "/account/password",
        &format!(
            "csrf={csrf}&current_password={PASSWORD}&new_password={new}&confirm_password={new}"
        ),
    )
    .await;
    assert_eq!(location(&a), "/account?m=password-changed");
    jar.take(&a);
    assert_ne!(jar.get("__Host-er_session").unwrap(), token, "renewed");
    assert!(
        w.relay
            .accounts()
            .login_password(
                "hal@example.com",
                SecretString::from(new.replace('+', " ")),
                "127.0.0.1".parse().unwrap(),
                None,
            )
            .await
            .is_ok()
    );
}

on_every_store!(
    the_password_form_marks_each_field_and_changes_the_password,
    hostile_input_never_breaks_a_page,
    the_forms_sign_in_and_out_with_their_tokens,
    the_sign_in_form_says_what_is_wrong_at_each_limit,
    the_signed_in_forms_do_what_their_buttons_say
);
