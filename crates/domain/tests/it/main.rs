//! The domain's integration tests, one binary: listing order and validation properties,
//! the retry policy's decision table, error signatures, and the alert rules.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod properties;
mod retry;
mod signature;
mod stats;
