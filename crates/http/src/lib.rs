//! The HTTP adapter of the failed-task store, on raw hyper 1.x and hyper-util.
//!
//! # Layout
//! - [`server`]: [`serve`] takes a bound listener, the shared [`App`] and a shutdown future;
//!   it applies the connection limits (first-byte and header-read timeouts, header size,
//!   connection count) and drains in-flight requests on shutdown.
//! - `conn`: what the server knows of each connection (requests in flight, progress of its
//!   responses and writes): idle connections are closed and make room at the cap, stalled
//!   ones are dropped.
//! - `body`: response bodies, counted against the response-bytes caps until sent, large ones
//!   in anonymous memory maps, or streamed through a queue of two parts (the export).
//! - `export`: `GET …/tasks/failed/export`: every match as CSV or NDJSON, page after page,
//!   at the client's pace, stopped when the client leaves.
//! - [`app`](App): the state every request shares ([`App`], [`HttpConfig`]).
//! - [`routes`]: the route table, [`ROUTES`]: path template, methods, access, body and
//!   handler of every route; dispatch, `Allow`, the metrics' labels and the OpenAPI check
//!   read it.
//! - `router`: dispatch over the table: unknown paths 404, a method a route does not answer
//!   405 with `Allow`, bearer-token checks, body limits.
//! - `request`: what a handler receives (`Call`); `reply`: what it answers (`Reply`, the
//!   envelope, the mapping of use-case errors onto statuses and messages).
//! - [`ingest`]: request bodies of the admin API, validated field by field.
//! - [`metrics`]: the Prometheus metrics served at `/metrics`.
//! - `handlers`: one function per route, calling the query use cases.
//! - `params`: query-string parsing into validated domain queries.
//! - `ui`: the dashboard's static files at `/ui/` (from `failed-tasks-ui`) with their
//!   caching (`ETag`, `304`) and security headers (CSP, `nosniff`, `Referrer-Policy`).
//! - [`wire`]: the JSON types with the contract's exact field names and the envelope. They
//!   are converted explicitly from domain types, so renaming a Rust field cannot change the API.
//!
//! # Invariants
//! - Every API response, error or not, carries the envelope (`Code`, `Message`, `Success`,
//!   `Data`) and every response an `X-Request-Id` header (the dashboard's files are the only
//!   bodies that are not envelopes); every log line of a request carries the same id.
//! - Internal error detail goes to the log, never into a response body.
//! - No request outlives the use case's deadlines; no connection outlives the header-read
//!   timeout without sending a complete request head, the idle timeout without a request, or
//!   the write-stall timeout without taking its answers.
//! - Response bytes held for clients never exceed the caps (beyond: 503), except answers of
//!   at most 16 KiB.

#![forbid(unsafe_code)]

mod app;
mod auth;
mod body;
mod conn;
mod export;
mod handlers;
pub mod ingest;
pub mod metrics;
mod params;
mod reply;
mod request;
mod router;
pub mod routes;
pub mod server;
mod ui;
pub mod wire;

pub use app::{App, HttpConfig};
pub use auth::{check_tokens, NamedToken, Role, Token};
pub use metrics::Metrics;
pub use routes::{BASE_PATH, ROUTES};
pub use server::serve;
pub use ui::CONTENT_SECURITY_POLICY_VALUE;
