//! The Redis status store on fred, and the compatibility source for the original Go
//! service's records.
//!
//! # Responsibility
//! [`RedisStore`] implements the [`StatusStore`](failed_tasks_store::StatusStore) port on
//! Redis (single server, Sentinel or Cluster): one string record per task plus sorted-set
//! indexes, failure counters and failure groups, written atomically by Lua scripts, trimmed
//! by a background janitor. It is also a [`RetryStore`](failed_tasks_store::RetryStore): a
//! retry is scheduled in the record's script, and due retries move into a Redis stream that
//! workers read through [`RedisRetryQueue`] (docs/retries.md). One deployment may be split
//! into `redis_shards` shards, each the whole layout under a hash tag of its own, so that on
//! a cluster they spread over the masters; the one store serves 1..N shards (one by default:
//! exactly the configured prefix's keys). The full key layout, with the command and
//! complexity of every query, is in `docs/redis-layout.md`.
//!
//! # Layout
//! - [`config`]: [`RedisConfig`], with defaults; [`shard_key`] (a shard's hash tag).
//! - `conn`: the fred client (timeouts, reconnect policy, fail-fast, no redirection followed
//!   by fred), the one path of every command (a command refused for its moving cluster slot is
//!   sent again), and the error mapping.
//! - `health`: the cause of a connection problem and Redis's `maxmemory-policy`, checked
//!   after every (re)connection (an evicting Redis is refused unless allowed).
//! - `layout`: key names, index members `{fail_ms:015}:{task_id}`, lex bounds.
//! - The stored value (header line + the error message) is defined in
//!   `failed_tasks_store::stored`, shared with the tools that read records.
//! - `scripts`: the Lua scripts (record, record a batch, remove, trim, attempts, lock release;
//!   deliver, retry now, cancel, resolve; migrate).
//! - `shard`: the crate-private `Shard` (a client routed to its slot, its keys, its
//!   configuration), which owns the commands and scripts, and `Shards`, the set a
//!   configuration names (also while resharding), built in one place for the store, the
//!   retry queue and `reshard`; [`shard_of`] (a task's shard), [`shard_config`].
//! - [`store`]: [`RedisStore`] over its shards, its `StatusStore` implementation (a task to
//!   its shard; a batch split per shard, one script each) and the writes' commands.
//! - `pages`: `list` and the `StoredPages` read fast path: a k-way merge of the shards'
//!   index walks, two pipelined round trips (with one shard exactly the single walk's
//!   commands); records returned as the reply's bytes.
//! - `stats`, `groups`: the counters, attempts and pages of failure groups, per shard and
//!   merged.
//! - `retries`: the `RetryStore` implementation (scheduler step, retry now, cancel, resolve,
//!   attempt history, gauges).
//! - `notify`: the notifications capability (`NotifyStore`): the notifier's lease, state,
//!   seen signatures, one outbox stream and one delivery hash per target, in the first
//!   write shard's slot, every write a script fenced by the lease.
//! - `queue`: [`RedisRetryQueue`], a consumer of every shard's retry stream's group
//!   (`XREADGROUP`, `XACK`, `XAUTOCLAIM`) on its own connection.
//! - [`migrate`]: [`RedisStore::migrate_step`], one resumable, idempotent batch of rewriting
//!   records of earlier layouts in one shard (`failed-tasks-server migrate`).
//! - [`reshard`](mod@reshard): moving tasks to a new shard count (`failed-tasks-server reshard`).
//! - [`janitor`]: retention by age and count, with archiving, under a Redis lock per shard.
//! - [`compat`]: [`CompatStore`], a read-only `StatusStore` over the Go service's
//!   `request:id:{id}` records (SCAN + MGET; O(keyspace) per request, documented there).
//!
//! # Invariants
//! - Every key of a shard starts with the shard's prefix, which holds exactly one hash tag:
//!   all keys of a shard share one cluster slot, so every script is atomic on a cluster too.
//! - A task lives in one shard ([`shard_of`], a stable hash of its id, pinned by a test):
//!   every write of one task is one script on one slot; a batch is all or nothing per shard.
//! - A record, its seven index entries (all, category, type, client, code, signature, retry
//!   state), its failure group, its hour's counters and its due-set entry are only ever
//!   written or removed together, inside one script; an upsert finds the old entries from
//!   the old record's header.
//! - A due retry leaves the due set exactly when it enters the stream (one script).
//! - Statistics and groups are never computed by scanning tasks: a statistics request reads
//!   named fields of one counter hash per shard and hour of its range and at most
//!   `READ_PER_BUCKET` + 1 members of each capped breakdown set of its buckets (never more
//!   with more distinct values), a page of groups O(log G + page) entries per shard.
//! - Index members sort byte-wise in exactly the domain's `SortKey` order (newest first, then
//!   task id descending), so a cursor is an exclusive lex bound, the same for any number of
//!   shards: O(log N + page) per page and shard.
//! - No attempt of a command waits longer than the command timeout (fred's timeout plus
//!   `tokio::time::timeout` around every call), and a command refused because its cluster
//!   slot is moving is sent again for at most one more command timeout; while disconnected,
//!   calls fail at once with `Unavailable`.
//! - No call gets another call's reply: fred follows no cluster redirection (its `ASK` path
//!   mixes up pipelined replies, docs/fred-ask-redirections.md), and no script runs on a
//!   slot in migration (each declares the slot's guard key).
//! - Connecting never fails because Redis is down; the client reconnects by itself.
//! - No `unwrap`/`expect` on anything from Redis, the network or configuration.

#![forbid(unsafe_code)]

mod audit;
mod breaker;
pub mod compat;
pub mod config;
mod conn;
mod files;
mod gates;
mod groups;
mod health;
pub mod janitor;
mod layout;
pub mod migrate;
mod notify;
mod pages;
mod queue;
mod replays;
pub mod reshard;
mod retries;
mod scripts;
mod shard;
mod stats;
pub mod store;

pub use compat::{CompatConfig, CompatStore};
pub use config::{redact_url, shard_key, RedisConfig, MAX_SHARDS};
#[doc(hidden)]
pub use conn::{call_options, fred_client};
pub use janitor::{JanitorHandle, TrimReport};
pub use layout::Keys;
pub use migrate::{MigrateStep, Migrated};
pub use queue::RedisRetryQueue;
pub use reshard::{reshard, ReshardProgress};
pub use shard::{shard_config, shard_of};
pub use store::{RedisStore, OUTCOME_UNKNOWN};
