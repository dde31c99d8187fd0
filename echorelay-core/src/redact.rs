//! Secrets kept out of logs: a connection URL with its password hidden.

/// `url` with its password replaced by `***`: the one in the user info
/// (`postgres://user:PASSWORD@host/db`, `redis://:PASSWORD@host`) and any
/// `password=` or `pass=` query parameter (libpq's and redis-rs's forms),
/// whatever their case. Meant for logs and `Debug`; the result is not for
/// connecting.
///
/// ```
/// use echorelay_core::redact::redact_url;
/// assert_eq!(redact_url("postgres://u:hunter2@h/d"), "postgres://u:***@h/d");
/// assert_eq!(redact_url("redis://h:6379?pass=hunter2"), "redis://h:6379?pass=***");
/// ```
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.find("://") {
        Some(i) => {
            let (scheme, rest) = base.split_at(i + 3);
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            match authority.rsplit_once('@') {
                Some((user_info, host)) => {
                    let user = user_info.split_once(':').map_or(user_info, |(u, _)| u);
                    let hidden = if user_info.contains(':') { ":***" } else { "" };
                    format!("{scheme}{user}{hidden}@{host}{path}")
                }
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    if let Some(q) = query {
        out.push('?');
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _))
                    if k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("pass") =>
                {
                    format!("{k}=***")
                }
                _ => p.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}
