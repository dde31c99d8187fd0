//! # echorelay
//!
//! The security and persistence core of a multi-tenant webhook relay, as a
//! library. This facade re-exports the domain ([`core`]) and the in-memory
//! backend ([`mem`]); the Postgres, Redis, S3 and HTTP crates arrive behind
//! the cargo features `pg`, `redis`, `s3` and `http`.
//!
//! See `examples/quickstart.rs` for a tour.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use echorelay_core as core;
pub use echorelay_store_mem as mem;

pub use echorelay_core::{Error, Result};
pub use echorelay_store_mem::MemStore;
