//! # echorelay-core
//!
//! The domain rules and ports of echorelay, the security and persistence core
//! of a multi-tenant webhook relay. This crate does no I/O: storage lives
//! behind the port traits in [`ports`], time behind [`clock::Clock`], and every
//! backend implements those ports and runs the same conformance suite
//! (`echorelay-testkit`): today the in-memory backend
//! (`echorelay-store-mem`) and Postgres (`echorelay-store-pg`); Redis and
//! S3 backends are planned.
//!
//! | area | module | invariants |
//! |---|---|---|
//! | API keys: format, hashing, lifecycle | [`keys`] | S1, S2, S3 |
//! | secret vault: AES-256-GCM, keyring, masking | [`vault`] | S4, S5 |
//! | tenant config: projects, lines, endpoints, targets | [`config`] | S4, S5, S11 |
//! | roles and the voter | [`access`] | S10 |
//! | append-only, hash-chained audit log | [`audit`] | S11 |
//! | accounts: bcrypt, TOTP, backup codes, devices, sessions, login | [`account`] | S6–S9 |
//! | SECRET_KEY rotation: rewrap every sealed value, key usage | [`rewrap`] | S4 |
//! | job queue: the port, its contract, `QueueService`, backoff, lease tokens | [`queue`] | S13, S15 |
//! | backups: the target port | [`backup`] | S12, S15 |
//!
//! Errors are grouped by category under one top-level [`Error`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod account;
pub mod audit;
pub mod backup;
pub mod clock;
pub mod config;
pub mod deliveries;
pub mod egress;
pub mod error;
mod group_commit;
pub mod ids;
pub mod keys;
pub mod ports;
pub mod queue;
pub mod redact;
pub mod relay;
pub mod rewrap;
pub mod vault;
pub mod webhook;

pub use error::{Error, Result, StoreError};
