//! Reading the scripts' replies: every shape is checked, and anything
//! unexpected is [`QueueError::Corrupt`], never a panic.

use chrono::{DateTime, Utc};
use echorelay_core::queue::{JobId, QueueError};
use redis::Value;

/// The largest time the store holds exactly: Lua numbers and zset scores
/// are doubles, exact for integers below 2^53 (µs: about 285 years either
/// side of 1970).
const MAX_MICROS: i64 = 1 << 53;

/// `t` as microseconds since the epoch, or `InvalidArgument` outside
/// ±2^53 µs.
pub(crate) fn micros(t: DateTime<Utc>) -> Result<i64, QueueError> {
    let us = t.timestamp_micros();
    if us.checked_abs().is_some_and(|a| a < MAX_MICROS) {
        Ok(us)
    } else {
        Err(QueueError::InvalidArgument("time out of range"))
    }
}

/// Microseconds since the epoch as a time.
pub(crate) fn time(us: i64) -> Result<DateTime<Utc>, QueueError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| corrupt("a time out of range"))
}

pub(crate) fn corrupt(what: &str) -> QueueError {
    QueueError::Corrupt(what.to_owned())
}

/// The elements of an array reply.
pub(crate) fn array(v: Value) -> Result<Vec<Value>, QueueError> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        _ => Err(corrupt("a script reply that is not an array")),
    }
}

/// The bytes of a string reply.
pub(crate) fn bytes(v: Value) -> Result<Vec<u8>, QueueError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        _ => Err(corrupt("a missing or non-string field")),
    }
}

/// A string reply as text.
pub(crate) fn text(v: Value) -> Result<String, QueueError> {
    String::from_utf8(bytes(v)?).map_err(|_| corrupt("a field that is not UTF-8"))
}

/// An integer reply, or a string holding a decimal integer.
pub(crate) fn int(v: Value) -> Result<i64, QueueError> {
    match v {
        Value::Int(i) => Ok(i),
        other => text(other)?
            .parse()
            .map_err(|_| corrupt("a field that is not an integer")),
    }
}

/// A count (a non-negative integer that fits the target).
pub(crate) fn count<T: TryFrom<i64>>(v: Value) -> Result<T, QueueError> {
    T::try_from(int(v)?).map_err(|_| corrupt("a count out of range"))
}

/// A job id stored as 32 hex digits.
pub(crate) fn job_id(v: Value) -> Result<JobId, QueueError> {
    let s = text(v)?;
    parse_hex_id(&s).ok_or_else(|| corrupt("a malformed job id"))
}

/// 32 lowercase hex digits as a job id.
pub(crate) fn parse_hex_id(s: &str) -> Option<JobId> {
    if s.len() != 32
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut raw = [0u8; 16];
    hex::decode_to_slice(s, &mut raw).ok()?;
    Some(JobId::from_bytes(raw))
}

/// A job id as stored: 32 lowercase hex digits.
pub(crate) fn hex_id(id: JobId) -> String {
    hex::encode(id.as_bytes())
}

/// The status word a script reply starts with, and the rest.
pub(crate) fn status(v: Value) -> Result<(String, std::vec::IntoIter<Value>), QueueError> {
    let mut items = array(v)?.into_iter();
    let word = text(
        items
            .next()
            .ok_or_else(|| corrupt("an empty script reply"))?,
    )?;
    Ok((word, items))
}

/// The `Corrupt` error for a `{'corrupt', id}` reply.
pub(crate) fn corrupt_job(mut rest: impl Iterator<Item = Value>) -> QueueError {
    match rest.next().map(text) {
        Some(Ok(id)) => QueueError::Corrupt(format!("job {id} has unreadable fields")),
        _ => corrupt("a job has unreadable fields"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_as_lowercase_hex_only() {
        let id = JobId::random();
        let s = hex_id(id);
        assert_eq!(parse_hex_id(&s), Some(id));
        assert_eq!(parse_hex_id(&s.to_uppercase()), None);
        assert_eq!(parse_hex_id(&s[1..]), None);
        assert_eq!(parse_hex_id("zz"), None);
    }

    #[test]
    fn replies_of_the_wrong_shape_are_corrupt_not_panics() {
        assert!(matches!(array(Value::Nil), Err(QueueError::Corrupt(_))));
        assert!(matches!(int(Value::Nil), Err(QueueError::Corrupt(_))));
        assert!(matches!(
            int(Value::BulkString(b"1.5e+3".to_vec())),
            Err(QueueError::Corrupt(_))
        ));
        assert_eq!(int(Value::BulkString(b"42".to_vec())), Ok(42));
        assert!(matches!(
            count::<u32>(Value::Int(-1)),
            Err(QueueError::Corrupt(_))
        ));
        assert!(matches!(
            status(Value::Array(vec![])),
            Err(QueueError::Corrupt(_))
        ));
        assert!(matches!(time(i64::MAX), Err(QueueError::Corrupt(_))));
    }

    #[test]
    fn times_beyond_2_pow_53_micros_are_refused() {
        assert!(micros(DateTime::<Utc>::MAX_UTC).is_err());
        assert!(micros(DateTime::<Utc>::MIN_UTC).is_err());
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default();
        assert_eq!(micros(t), Ok(1_700_000_000_123_456));
    }
}
