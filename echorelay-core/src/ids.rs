//! Identifiers. Every id is a random 128-bit value shown as 32 lowercase hex
//! characters with a short type prefix (`prj_`, `key_`, …), so ids of
//! different kinds can never be confused in logs or URLs.

use std::fmt;
use std::str::FromStr;

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The error for an id string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {kind} id")]
pub struct InvalidId {
    /// Which kind of id was expected.
    pub kind: &'static str,
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 16]);

        impl $name {
            /// The text prefix of this kind of id.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id from the OS CSPRNG.
            pub fn random() -> Self {
                let mut b = [0u8; 16];
                rand::rngs::OsRng.fill_bytes(&mut b);
                Self(b)
            }

            /// The id from its 16 raw bytes.
            pub const fn from_bytes(b: [u8; 16]) -> Self {
                Self(b)
            }

            /// The 16 raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(Self::PREFIX)?;
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                let err = InvalidId { kind: $kind };
                let hexpart = s.strip_prefix(Self::PREFIX).ok_or(err.clone())?;
                if hexpart.len() != 32 {
                    return Err(err);
                }
                let mut b = [0u8; 16];
                hex::decode_to_slice(hexpart, &mut b).map_err(|_| err)?;
                Ok(Self(b))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                id_schema(Self::PREFIX, $kind)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

/// A string schema with a description and a pattern (the types whose
/// serde form is text: ids, hashes, masks, currencies).
#[cfg(feature = "openapi")]
pub(crate) fn string_schema(
    description: String,
    pattern: Option<String>,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(pattern)
        .into()
}

/// The schema of an id with `prefix`: exactly what [`FromStr`] accepts
/// (hex in either case; ids are written in lowercase).
#[cfg(feature = "openapi")]
fn id_schema(prefix: &str, kind: &str) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!("A {kind} id: `{prefix}` and 32 hex digits")))
        .pattern(Some(format!("^{prefix}[0-9a-fA-F]{{32}}$")))
        .examples([format!("{prefix}0123456789abcdef0123456789abcdef")])
        .into()
}

define_id!(
    /// A project (tenant).
    ProjectId, "prj_", "project"
);
define_id!(
    /// A line: a relay route inside a project.
    LineId, "lin_", "line"
);
define_id!(
    /// An inbound endpoint of a line.
    EndpointId, "end_", "endpoint"
);
define_id!(
    /// An outbound target of a line.
    TargetId, "tgt_", "target"
);
define_id!(
    /// An API key record (not the key itself).
    KeyId, "key_", "key"
);
define_id!(
    /// A user account.
    UserId, "usr_", "user"
);
define_id!(
    /// A session (its public handle; the cookie value is separate and secret).
    SessionId, "ses_", "session"
);
define_id!(
    /// A trusted device (its public handle; the cookie value is secret).
    DeviceId, "dev_", "device"
);
define_id!(
    /// An audit event.
    EventId, "evt_", "event"
);
define_id!(
    /// A queued job.
    JobId, "job_", "job"
);
define_id!(
    /// A message accepted at an inbound endpoint (its Standard Webhooks
    /// `webhook-id`).
    MessageId, "msg_", "message"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_other_kinds() {
        let id = ProjectId::random();
        let s = id.to_string();
        assert!(s.starts_with("prj_"));
        assert_eq!(s.parse::<ProjectId>(), Ok(id));
        assert!(s.parse::<LineId>().is_err());
        assert!("prj_zz".parse::<ProjectId>().is_err());
        assert!("prj_".parse::<ProjectId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ProjectId>(&json).unwrap(), id);
    }
}
