//! The browser side of accounts: `__Host-` cookies and the CSRF token.
//!
//! Cookies are `__Host-`-prefixed (so no subdomain can set or shadow
//! them), `Secure`, `HttpOnly` and `SameSite=Lax`. A write authenticated
//! by the session cookie must also carry `X-CSRF-Token`: SHA-256 of the
//! session token, hex. A page of ours can read it (from the login answer,
//! or the `__Host-er_csrf` cookie, which is not `HttpOnly`); another site
//! cannot, because it never sees the session token. A request whose
//! `Sec-Fetch-Site` says `cross-site` is refused outright.

use axum::http::{HeaderMap, HeaderValue, Method, header};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie.
pub const SESSION: &str = "__Host-er_session";
/// The trusted-device cookie.
pub const DEVICE: &str = "__Host-er_device";
/// The CSRF token, readable by our own pages.
pub const CSRF: &str = "__Host-er_csrf";
/// The header a cookie-authenticated write repeats the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The value of cookie `name` in the request, if sent exactly once.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v);
    match (found.next(), found.next()) {
        (Some(v), None) if !v.is_empty() => Some(v),
        _ => None,
    }
}

/// A `Set-Cookie` value for `name=value` with our attributes, until
/// `expires` (a session cookie without it). `http_only` is off only for
/// the CSRF token.
pub fn set(
    name: &str,
    value: &str,
    expires: Option<DateTime<Utc>>,
    http_only: bool,
) -> Option<HeaderValue> {
    let mut s = format!("{name}={value}; Path=/; Secure; SameSite=Lax");
    if http_only {
        s.push_str("; HttpOnly");
    }
    if let Some(t) = expires {
        s.push_str("; Expires=");
        s.push_str(&crate::auth::http_date(t));
    }
    HeaderValue::from_str(&s).ok()
}

/// A `Set-Cookie` value that deletes cookie `name`.
pub fn clear(name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}=; Path=/; Secure; SameSite=Lax; HttpOnly; Max-Age=0"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The CSRF token of a session token.
pub fn csrf_token(session_token: &str) -> String {
    hex::encode(Sha256::digest(format!(
        "echorelay csrf v1\0{session_token}"
    )))
}

/// Whether a request authenticated by `session_token` may proceed:
/// safe methods always; anything else only with the right
/// `X-CSRF-Token`, compared in constant time. Any `cross-site` request is
/// refused, whatever its method.
pub fn csrf_ok(method: &Method, headers: &HeaderMap, session_token: &str) -> bool {
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    if cross_site {
        return false;
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let Some(sent) = headers.get(CSRF_HEADER) else {
        return false;
    };
    let expected = csrf_token(session_token);
    sent.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_once_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-er_session=ers_x; b=2"),
        );
        assert_eq!(get(&h, SESSION), Some("ers_x"));
        assert_eq!(get(&h, "er_session"), None);
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-er_session=ers_y"),
        );
        assert_eq!(get(&h, SESSION), None, "two values: neither");
    }

    #[test]
    fn an_empty_cookie_value_is_no_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-er_session=; b=2"),
        );
        assert_eq!(get(&h, SESSION), None);
        assert_eq!(get(&h, "a"), Some("1"));
    }

    #[test]
    fn set_cookie_has_every_attribute() {
        let v = set(SESSION, "ers_x", None, true).unwrap();
        assert_eq!(
            v,
            "__Host-er_session=ers_x; Path=/; Secure; SameSite=Lax; HttpOnly"
        );
        let csrf = set(CSRF, "ab", None, false).unwrap();
        assert!(!csrf.to_str().unwrap().contains("HttpOnly"));
        assert!(clear(DEVICE).to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn writes_need_the_token_and_nothing_cross_site_passes() {
        let token = "ers_session";
        let mut h = HeaderMap::new();
        assert!(csrf_ok(&Method::GET, &h, token));
        assert!(!csrf_ok(&Method::POST, &h, token));
        h.insert(
            CSRF_HEADER,
            HeaderValue::from_str(&csrf_token("ers_other")).unwrap(),
        );
        assert!(!csrf_ok(&Method::DELETE, &h, token));
        h.insert(
            CSRF_HEADER,
            HeaderValue::from_str(&csrf_token(token)).unwrap(),
        );
        assert!(csrf_ok(&Method::DELETE, &h, token));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!csrf_ok(&Method::DELETE, &h, token));
        assert!(!csrf_ok(&Method::GET, &h, token));
    }
}
