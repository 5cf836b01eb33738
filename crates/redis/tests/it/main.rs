//! Integration tests of the Redis store against private redis-server processes (never the
//! machine's 127.0.0.1:6379): conformance (single server and cluster), retention, atomicity,
//! faults and malformed records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod batch;
mod batch_faults;
mod compat;
mod conformance;
mod faults;
mod files;
mod gate_faults;
mod health;
mod integrity;
mod migrate;
mod retention;
mod retry_faults;
mod sharded;
mod slot_moves;
mod stats;
