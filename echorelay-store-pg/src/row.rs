//! Reading stored rows back into core's records, and core's values into
//! column values. Every decoding failure is a typed
//! [`StoreError::Corrupt`] naming the table, the row and the column: a
//! hand-edited enum, a truncated hash or a malformed ciphertext never
//! becomes a panic or a valid result.

use chrono::{DateTime, Utc};
use echorelay_core::error::StoreError;
use echorelay_core::ids::{
    DeviceId, EndpointId, EventId, JobId, KeyId, LineId, MessageId, ProjectId, SessionId, TargetId,
    UserId,
};
use echorelay_core::ports::StoreResult;
use echorelay_core::vault::Ciphertext;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::postgres::PgRow;

/// An id type of core: 16 raw bytes.
pub(crate) trait Id16: Copy {
    fn from16(b: [u8; 16]) -> Self;
    fn bytes16(&self) -> &[u8; 16];
}

macro_rules! id16 {
    ($($t:ty),*) => {$(
        impl Id16 for $t {
            fn from16(b: [u8; 16]) -> Self {
                <$t>::from_bytes(b)
            }
            fn bytes16(&self) -> &[u8; 16] {
                self.as_bytes()
            }
        }
    )*};
}
id16!(
    ProjectId, LineId, EndpointId, TargetId, KeyId, UserId, SessionId, DeviceId, EventId,
    MessageId, JobId
);

/// The id's column value.
pub(crate) fn idb<T: Id16>(id: &T) -> &[u8] {
    id.bytes16()
}

/// An optional id's column value.
pub(crate) fn opt_idb<T: Id16>(id: &Option<T>) -> Option<Vec<u8>> {
    id.as_ref().map(|i| i.bytes16().to_vec())
}

/// A u64 counter as a bigint column value.
pub(crate) fn i64_of(v: u64) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Conflict {
        reason: "counter out of range for the database (above 2^63 - 1)",
    })
}

/// The stored text of a unit enum: its serde (snake_case) name.
pub(crate) fn enum_text<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        // Unit enums of core serialize to a string; anything else would be
        // refused by the column's CHECK, not stored silently.
        _ => String::new(),
    }
}

/// A value's JSON column form.
pub(crate) fn json_of<T: Serialize>(v: &T) -> StoreResult<serde_json::Value> {
    serde_json::to_value(v).map_err(StoreError::backend)
}

/// Reads one row of `table`, naming the row in every error (by the hex of
/// its key column, computed only when an error is built).
pub(crate) struct Reader<'r> {
    row: &'r PgRow,
    table: &'static str,
    key: &'r str,
    name: Option<String>,
    chain_and_seq: bool,
}

impl<'r> Reader<'r> {
    /// A reader whose errors name the row by its `key` column (bytea as
    /// hex, or text), or `?` if even that is unreadable.
    pub(crate) fn new(row: &'r PgRow, table: &'static str, key: &'r str) -> Self {
        Self {
            row,
            table,
            key,
            name: None,
            chain_and_seq: false,
        }
    }

    /// Names the row by its `chain` and `seq` columns (audit events),
    /// computed only when an error is built.
    pub(crate) fn by_chain_and_seq(mut self) -> Self {
        self.chain_and_seq = true;
        self
    }

    /// Names the row by `name` instead (for composite keys).
    pub(crate) fn named(mut self, name: String) -> Self {
        self.name = Some(name);
        self
    }

    fn row_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        if self.chain_and_seq {
            let chain: Vec<u8> = self.row.try_get("chain").unwrap_or_default();
            let seq: i64 = self.row.try_get("seq").unwrap_or_default();
            return format!("chain {} seq {seq}", hex::encode(chain));
        }
        match self.row.try_get::<Vec<u8>, _>(self.key) {
            Ok(b) => hex::encode(b),
            Err(_) => self
                .row
                .try_get::<String, _>(self.key)
                .unwrap_or_else(|_| "?".to_owned()),
        }
    }

    /// A typed error naming the table, the row and the column (never the
    /// value).
    pub(crate) fn corrupt(&self, column: &str, problem: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            table: self.table,
            id: self.row_name(),
            problem: format!("column {column}: {problem}"),
        }
    }

    pub(crate) fn get<T>(&self, column: &str) -> StoreResult<T>
    where
        T: for<'a> sqlx::Decode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        self.row
            .try_get::<T, _>(column)
            .map_err(|e| self.corrupt(column, e))
    }

    pub(crate) fn bytes<const N: usize>(&self, column: &str) -> StoreResult<[u8; N]> {
        let v: Vec<u8> = self.get(column)?;
        v.as_slice()
            .try_into()
            .map_err(|_| self.corrupt(column, format!("{} bytes, expected {N}", v.len())))
    }

    pub(crate) fn opt_bytes<const N: usize>(&self, column: &str) -> StoreResult<Option<[u8; N]>> {
        let v: Option<Vec<u8>> = self.get(column)?;
        v.map(|b| {
            <[u8; N]>::try_from(b.as_slice())
                .map_err(|_| self.corrupt(column, format!("{} bytes, expected {N}", b.len())))
        })
        .transpose()
    }

    pub(crate) fn id<T: Id16>(&self, column: &str) -> StoreResult<T> {
        Ok(T::from16(self.bytes::<16>(column)?))
    }

    pub(crate) fn opt_id<T: Id16>(&self, column: &str) -> StoreResult<Option<T>> {
        let v: Option<Vec<u8>> = self.get(column)?;
        v.map(|b| {
            <[u8; 16]>::try_from(b.as_slice())
                .map(T::from16)
                .map_err(|_| self.corrupt(column, format!("{} bytes, expected 16", b.len())))
        })
        .transpose()
    }

    pub(crate) fn text(&self, column: &str) -> StoreResult<String> {
        self.get(column)
    }

    pub(crate) fn boolean(&self, column: &str) -> StoreResult<bool> {
        self.get(column)
    }

    pub(crate) fn time(&self, column: &str) -> StoreResult<DateTime<Utc>> {
        self.get(column)
    }

    pub(crate) fn opt_time(&self, column: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.get(column)
    }

    pub(crate) fn u64(&self, column: &str) -> StoreResult<u64> {
        let v: i64 = self.get(column)?;
        u64::try_from(v).map_err(|_| self.corrupt(column, format!("negative counter {v}")))
    }

    pub(crate) fn opt_u64(&self, column: &str) -> StoreResult<Option<u64>> {
        let v: Option<i64> = self.get(column)?;
        v.map(|v| u64::try_from(v).map_err(|_| self.corrupt(column, format!("negative {v}"))))
            .transpose()
    }

    /// A unit enum stored as its snake_case name.
    pub(crate) fn enum_text<T: DeserializeOwned>(&self, column: &str) -> StoreResult<T> {
        let s: String = self.get(column)?;
        serde_json::from_value(serde_json::Value::String(s.clone()))
            .map_err(|_| self.corrupt(column, format!("unknown value {s:?}")))
    }

    /// A value stored as core's JSON form (validated by its deserializer).
    pub(crate) fn json<T: DeserializeOwned>(&self, column: &str) -> StoreResult<T> {
        let v: serde_json::Value = self.get(column)?;
        serde_json::from_value(v).map_err(|e| self.corrupt(column, e))
    }

    /// A vault ciphertext stored in its binary form.
    pub(crate) fn ciphertext(&self, column: &str) -> StoreResult<Ciphertext> {
        let b: Vec<u8> = self.get(column)?;
        Ciphertext::from_bytes(&b).map_err(|e| self.corrupt(column, e))
    }

    pub(crate) fn opt_ciphertext(&self, column: &str) -> StoreResult<Option<Ciphertext>> {
        let b: Option<Vec<u8>> = self.get(column)?;
        b.map(|b| Ciphertext::from_bytes(&b).map_err(|e| self.corrupt(column, e)))
            .transpose()
    }

    /// Any value, parsed from text by `parse`.
    pub(crate) fn parsed<T, E: std::fmt::Display>(
        &self,
        column: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> StoreResult<T> {
        let s: String = self.get(column)?;
        parse(&s).map_err(|e| self.corrupt(column, e))
    }

    /// An optional value, parsed from text by `parse`.
    pub(crate) fn opt_parsed<T, E: std::fmt::Display>(
        &self,
        column: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> StoreResult<Option<T>> {
        let s: Option<String> = self.get(column)?;
        s.map(|s| parse(&s).map_err(|e| self.corrupt(column, e)))
            .transpose()
    }
}
