//! # echorelay
//!
//! The security and persistence core of a multi-tenant webhook relay, as a
//! library. This facade re-exports the domain ([`core`]) and the in-memory
//! backend ([`mem`], and [`MemStore`] at the root), which today is the only
//! backend.
//!
//! Postgres, Redis and S3 backends and an HTTP layer are planned, to be
//! offered through cargo features `pg`, `redis`, `s3` and `http`. They are
//! not available yet: this crate has no cargo features.
//!
//! See the README (its snippets are compiled as doctests of this crate),
//! `examples/quickstart.rs` for a tour, and `ARCHITECTURE.md` for the map
//! from each security invariant to the code and the test.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use echorelay_core as core;
pub use echorelay_store_mem as mem;

pub use echorelay_core::{Error, Result};
pub use echorelay_store_mem::MemStore;

/// The README's Rust snippets, compiled by `cargo test --doc -p echorelay`.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
