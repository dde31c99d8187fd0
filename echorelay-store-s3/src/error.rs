//! The adapter's own error, mapped to core's [`BackupError`] in one place
//! (`From<S3Error>`), and the scrubbing that keeps credentials and URL
//! queries out of every message.

use std::fmt;

use echorelay_core::backup::{BackupError, ObjectPath};

/// An operation of the target, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Create,
    Upload,
    Write,
    Finish,
    Abort,
    Get,
    Read,
    List,
    Delete,
}

impl Op {
    /// Whether a "not found" from object_store means the object is
    /// missing (a read of one object); for any other operation it means
    /// the bucket or directory is.
    fn reads_one_object(self) -> bool {
        matches!(self, Op::Get | Op::Read)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Create => "create",
            Op::Upload => "starting an upload to",
            Op::Write => "uploading a part of",
            Op::Finish => "completing the upload of",
            Op::Abort => "aborting the upload of",
            Op::Get => "get",
            Op::Read => "reading",
            Op::List => "list",
            Op::Delete => "delete",
        })
    }
}

/// What went wrong in the adapter.
#[derive(Debug, thiserror::Error)]
pub(crate) enum S3Error {
    /// object_store refused or failed an operation.
    #[error("{op} {path} at {target}: {}", scrub(&chain(&**source)))]
    Store {
        op: Op,
        /// The object (or prefix) the operation was about, or the target's
        /// root.
        path: String,
        /// Which object is missing, when the operation reads one.
        object: Option<ObjectPath>,
        target: String,
        source: Box<object_store::Error>,
    },
    /// A write or finish after an earlier part failed.
    #[error("the upload of {path} at {target} failed earlier; abort it and start a new upload")]
    Broken { path: ObjectPath, target: String },
    /// More parts than S3 takes in one upload.
    #[error(
        "{path} at {target} is larger than {max_parts} parts of {part_size} bytes, S3's \
         limit for one object; raise the part size (S3Options::part_size)"
    )]
    TooManyParts {
        path: ObjectPath,
        target: String,
        max_parts: usize,
        part_size: usize,
    },
    /// The target's URL or options are unusable.
    #[error("{0}")]
    Config(String),
}

impl From<S3Error> for BackupError {
    fn from(e: S3Error) -> Self {
        use object_store::Error as E;
        let text = e.to_string();
        match e {
            S3Error::Store {
                op, object, source, ..
            } => match *source {
                E::NotFound { .. } if op.reads_one_object() => match object {
                    Some(p) => BackupError::NotFound(p),
                    None => BackupError::Unavailable(text),
                },
                E::NotFound { .. } => BackupError::Access(format!(
                    "{text} (the bucket or directory does not exist, or these credentials \
                     cannot see it: check the target URL)"
                )),
                E::AlreadyExists { .. } => match object {
                    Some(p) => BackupError::AlreadyExists(p),
                    None => BackupError::Unavailable(text),
                },
                E::Unauthenticated { .. } | E::PermissionDenied { .. } => {
                    BackupError::Access(format!(
                        "{text} (check the credentials, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and the bucket policy)"
                    ))
                }
                E::NotImplemented { .. }
                | E::NotSupported { .. }
                | E::UnknownConfigurationKey { .. } => BackupError::Config(text),
                _ => BackupError::Unavailable(text),
            },
            S3Error::Broken { .. } => BackupError::Unavailable(text),
            S3Error::TooManyParts { .. } | S3Error::Config(_) => BackupError::Config(text),
        }
    }
}

/// `e`'s message followed by those of its sources (each once: a message
/// that already repeats its source's is not repeated), e.g. `… error
/// sending request: client error (Connect): tcp connect error: Connection
/// refused (os error 111)`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// The longest message kept from object_store (a server's error body can
/// be long); longer ones are cut with `…`.
const MAX_MESSAGE: usize = 600;

/// XML elements of S3 error bodies whose contents are replaced: the
/// access key's id and what a signature was computed over.
const SECRET_ELEMENTS: [&str; 6] = [
    "AWSAccessKeyId",
    "SignatureProvided",
    "StringToSign",
    "StringToSignBytes",
    "CanonicalRequest",
    "CanonicalRequestBytes",
];

/// `text` fit for an error message or a log: every URL in it without its
/// user info, query or fragment; the contents of S3's signature-related
/// error elements replaced by `***`; cut to [`MAX_MESSAGE`] characters.
pub(crate) fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // The scheme: letters, digits, `+`, `-`, `.` before `://`.
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |j| j + 1);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '<' | '>' | ','))
            .map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..start]);
        out.push_str(&clean_url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    for element in SECRET_ELEMENTS {
        out = hide_element(&out, element);
    }
    if out.chars().count() > MAX_MESSAGE {
        out = out.chars().take(MAX_MESSAGE).collect();
        out.push('…');
    }
    out
}

/// A URL without its user info, query and fragment.
pub(crate) fn clean_url(url: &str) -> String {
    let base = url.split(['?', '#']).next().unwrap_or_default();
    let Some(i) = base.find("://") else {
        return base.to_owned();
    };
    let (scheme, rest) = base.split_at(i + 3);
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}{host}{path}")
}

fn hide_element(text: &str, element: &str) -> String {
    let open = format!("<{element}>");
    let close = format!("</{element}>");
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(&open) {
        let after = i + open.len();
        out.push_str(&rest[..after]);
        out.push_str("***");
        match rest[after..].find(&close) {
            Some(j) => rest = &rest[after + j..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_user_info_query_and_fragment() {
        assert_eq!(
            scrub(
                "error sending request for url (http://AKIA:s3cr3t@127.0.0.1:9/b/k?uploadId=x&X-Amz-Signature=abc#f): refused"
            ),
            "error sending request for url (http://127.0.0.1:9/b/k): refused"
        );
        assert_eq!(scrub("no url here"), "no url here");
        assert_eq!(
            scrub("a https://h/p?q=1 and s3://b/x?token=t, done"),
            "a https://h/p and s3://b/x, done"
        );
        assert_eq!(clean_url("file:///tmp/x"), "file:///tmp/x");
    }

    #[test]
    fn signature_elements_are_hidden() {
        let body = "<Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>AKIAEXAMPLE</AWSAccessKeyId>\
                    <StringToSign>AWS4-HMAC-SHA256\n2026</StringToSign><SignatureProvided>abcdef</SignatureProvided></Error>";
        let s = scrub(body);
        for secret in ["AKIAEXAMPLE", "AWS4-HMAC", "abcdef"] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
        assert!(s.contains("<Code>SignatureDoesNotMatch</Code>"));
        assert!(s.contains("<AWSAccessKeyId>***</AWSAccessKeyId>"));
        assert_eq!(scrub("<StringToSign>cut"), "<StringToSign>***");
    }

    #[test]
    fn long_messages_are_cut() {
        let s = scrub(&"é".repeat(2000));
        assert_eq!(s.chars().count(), MAX_MESSAGE + 1);
        assert!(s.ends_with('…'));
    }
}
