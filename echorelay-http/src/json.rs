//! JSON request bodies: `application/json` only (else 415), within the
//! body limit (else 413), every field known (request types deny unknown
//! fields), and a malformed body answered with a 400 that names where it
//! went wrong — the path of the field, never its value (a value may be a
//! secret).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the body is larger than {BODY_LIMIT} bytes"),
                )
            } else {
                ApiError::bad_request("unreadable_body", "the body could not be read")
            }
        })?;
        // Every request body is an object: a struct would also take a JSON
        // array of its fields in order, which no document states.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request(
                "invalid_field",
                "the body is not the expected object (or names an unknown field)",
            ));
        }
        parse(&bytes).map(JsonBody)
    }
}

/// Parses a whole JSON document into `T`, with errors that name the field.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => ApiError::bad_request(
                "invalid_field",
                if path == "." {
                    "the body is not the expected object (or names an unknown field)".to_owned()
                } else {
                    format!("invalid, missing or unknown field `{path}`")
                },
            ),
            _ => ApiError::bad_request(
                "malformed_json",
                format!(
                    "malformed JSON at line {} column {}",
                    inner.line(),
                    inner.column()
                ),
            ),
        }
    })?;
    de.end().map_err(|_| {
        ApiError::bad_request("malformed_json", "trailing characters after the JSON value")
    })?;
    Ok(value)
}

/// An `i64` field that also takes an integral JSON number written with a
/// fraction (`12.0`): JSON Schema's `integer` is any number without a
/// fractional part, so a client's serializer may write it either way.
pub(crate) mod integer {
    use serde::Deserialize;
    use serde::de::{Deserializer, Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(i64),
        Float(f64),
    }

    fn integral<E: Error>(n: Number) -> Result<i64, E> {
        match n {
            Number::Int(i) => Ok(i),
            // The range check before the cast (`as` saturates), strict at
            // both ends: -2^63 - 1 and 2^63 round to ±2^63 as floats.
            Number::Float(f)
                if f.fract() == 0.0
                    && f > -9_223_372_036_854_775_808.0
                    && f < 9_223_372_036_854_775_808.0 =>
            {
                Ok(f as i64)
            }
            Number::Float(_) => Err(E::custom("not an integer in range")),
        }
    }

    /// A required `i64`.
    pub(crate) fn required<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        integral(Number::deserialize(d)?)
    }

    /// An optional `i64` (`null` or absent: `None`).
    pub(crate) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<Number>::deserialize(d)?.map(integral).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        label: String,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        token: u32,
    }

    fn message(r: Result<Req, ApiError>) -> (String, String) {
        let e = r.unwrap_err();
        let body = format!("{e:?}");
        (e.code().to_owned(), body)
    }

    #[test]
    fn errors_name_the_field_never_the_value() {
        let (code, body) = message(parse(
            br#"{"label": "x", "inner": {"token": "s3cr3t-value"}}"#,
        ));
        assert_eq!(code, "invalid_field");
        assert!(body.contains("inner.token"), "{body}");
        assert!(!body.contains("s3cr3t"), "{body}");

        let (code, body) = message(parse(br#"{"label": "x", "sneaky": "s3cr3t-value"}"#));
        assert_eq!(code, "invalid_field");
        assert!(!body.contains("s3cr3t"), "{body}");

        let (code, body) = message(parse(br#"{"label": "s3cr3t"#));
        assert_eq!(code, "malformed_json");
        assert!(!body.contains("s3cr3t"), "{body}");

        let (code, _) = message(parse(br#"{"label": "x"} {}"#));
        assert_eq!(code, "malformed_json");
        let (code, _) = message(parse(b"\xff\xfe"));
        assert_eq!(code, "malformed_json");
        assert!(parse::<Req>(br#"{"label": "x"}"#).is_ok());
    }

    #[derive(Debug, Deserialize)]
    struct Amount {
        #[serde(deserialize_with = "integer::required")]
        n: i64,
        #[serde(default, deserialize_with = "integer::optional")]
        m: Option<i64>,
    }

    #[test]
    fn integers_may_be_written_with_a_zero_fraction() {
        let a: Amount = parse(br#"{"n": 12.0, "m": -3}"#).unwrap();
        assert_eq!((a.n, a.m), (12, Some(-3)));
        let a: Amount = parse(br#"{"n": -9223372036854775808, "m": null}"#).unwrap();
        assert_eq!((a.n, a.m), (i64::MIN, None));
        for bad in [
            &br#"{"n": 1.5}"#[..],
            br#"{"n": 9223372036854775808.0}"#,
            br#"{"n": "1"}"#,
            br#"{"n": 1, "m": 0.25}"#,
        ] {
            assert!(
                parse::<Amount>(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
