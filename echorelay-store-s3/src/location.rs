//! The target URL: `s3://bucket[/prefix]` or `file:///absolute/dir`.

use std::path::PathBuf;

use echorelay_core::backup::ObjectPath;

use crate::error::S3Error;

/// Where a target's objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A bucket, and the key prefix every object's key starts with.
    S3 {
        bucket: String,
        prefix: Option<ObjectPath>,
    },
    /// A directory; object paths are relative to it.
    Fs { dir: PathBuf },
}

const EXPECTED: &str = "expected s3://bucket[/prefix] or file:///absolute/directory";

/// Parses `url`. Errors never repeat the URL (it may hold what looks like
/// credentials); they say what is wrong with it.
pub(crate) fn parse(url: &str) -> Result<Location, S3Error> {
    let config = |what: &str| S3Error::Config(format!("the target URL {what} ({EXPECTED})"));
    if has_dot_segment(url) {
        // The URL standard would resolve them (`s3://b/a/../c` is
        // `s3://b/c`): refuse rather than write somewhere unexpected.
        return Err(config("has a `.` or `..` path segment"));
    }
    let u = url::Url::parse(url).map_err(|e| config(&format!("does not parse: {e}")))?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err(config(
            "holds user info: credentials come from the environment (AWS_ACCESS_KEY_ID, \
             AWS_SECRET_ACCESS_KEY), never from the URL",
        ));
    }
    if u.query().is_some() {
        return Err(config(
            "has a query: options come from the environment (AWS_*) or S3Options, never \
             from the URL",
        ));
    }
    if u.fragment().is_some() {
        return Err(config("has a fragment"));
    }
    if u.port().is_some() {
        return Err(config(
            "has a port: set the endpoint (AWS_ENDPOINT_URL or S3Options::endpoint) instead",
        ));
    }
    match u.scheme() {
        "s3" => {
            let bucket = u.host_str().unwrap_or_default();
            if !valid_bucket(bucket) {
                return Err(config(
                    "has no valid bucket name (3 to 63 of a-z 0-9 . -, starting and ending \
                     with a letter or digit)",
                ));
            }
            let path = u.path().trim_matches('/');
            let prefix = if path.is_empty() {
                None
            } else {
                Some(ObjectPath::new(path).map_err(|e| {
                    config(&format!(
                        "has a key prefix that is not a valid object path: {e}"
                    ))
                })?)
            };
            Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix,
            })
        }
        "file" => {
            if u.host_str()
                .is_some_and(|h| !h.is_empty() && h != "localhost")
            {
                return Err(config(
                    "names a host: a file URL is file:///absolute/directory (three slashes)",
                ));
            }
            let dir = u
                .to_file_path()
                .map_err(|()| config("is not an absolute directory path"))?;
            // Without a trailing `/`.
            Ok(Location::Fs {
                dir: dir.components().collect(),
            })
        }
        other => Err(config(&format!("has the unsupported scheme `{other}`"))),
    }
}

/// Whether the path of `url` (before any query or fragment) has a `.` or
/// `..` segment, percent-encoded or not.
fn has_dot_segment(url: &str) -> bool {
    let base = url.split(['?', '#']).next().unwrap_or_default();
    let path = base.split_once("://").map_or(base, |(_, rest)| rest);
    path.split('/').skip(1).any(|segment| {
        let s = segment.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    })
}

/// S3's bucket naming rules (the general-purpose ones).
fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: Option<&str>) -> Location {
        Location::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.map(|p| ObjectPath::new(p).unwrap()),
        }
    }

    #[test]
    fn good_urls_parse() {
        assert_eq!(parse("s3://my-bucket").unwrap(), s3("my-bucket", None));
        assert_eq!(parse("s3://my-bucket/").unwrap(), s3("my-bucket", None));
        assert_eq!(
            parse("s3://b.example/backups/prod").unwrap(),
            s3("b.example", Some("backups/prod"))
        );
        assert_eq!(
            parse("s3://bkt/backups/").unwrap(),
            s3("bkt", Some("backups"))
        );
        assert_eq!(
            parse("file:///var/backups/echorelay").unwrap(),
            Location::Fs {
                dir: PathBuf::from("/var/backups/echorelay")
            }
        );
        assert_eq!(
            parse("file:///var/backups/echorelay/").unwrap(),
            Location::Fs {
                dir: PathBuf::from("/var/backups/echorelay")
            }
        );
        assert_eq!(
            parse("file://localhost/srv").unwrap(),
            Location::Fs {
                dir: PathBuf::from("/srv")
            }
        );
    }

    #[test]
    fn bad_urls_are_config_errors_that_do_not_repeat_them() {
        for (url, secret) in [
            ("s3://AKIA:hunter2@bucket/p", "hunter2"),
            ("s3://bucket/p?secret=hunter2", "hunter2"),
            ("s3://bucket/p#hunter2", "hunter2"),
            ("s3://bucket:9000/p", "9000"),
            ("s3://B_ad/p", "B_ad"),
            ("s3://ab/p", "ab/p"),
            ("s3:///p", ":///p"),
            ("s3://bucket/a b", "a b"),
            ("s3://bucket/a/../b", "../"),
            ("s3://bucket/a/%2E%2e/b", "%2E"),
            ("s3://bucket/./b", "./b"),
            ("file:///srv/../etc", "etc"),
            ("s3://bucket/a//b", "a//b"),
            ("gs://mybkt/p", "mybkt"),
            ("file://myhost/dir", "myhost"),
            ("not a url hunter2", "hunter2"),
            ("", "hunter2"),
        ] {
            let e = parse(url).unwrap_err();
            assert!(matches!(e, S3Error::Config(_)), "{url}: {e:?}");
            let text = e.to_string();
            assert!(!text.contains(secret), "{url}: {text}");
            assert!(text.contains("expected s3://"), "{url}: {text}");
        }
        assert!(parse("gs://b/p").unwrap_err().to_string().contains("`gs`"));
    }
}
