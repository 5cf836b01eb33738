//! The shards of a [`RedisStore`](crate::RedisStore): one deployment's failures split over
//! `redis_shards` sets of keys, each under a hash tag of its own, so that on a Redis Cluster
//! they spread over the masters. With one shard (the default) the one set is exactly the
//! configured prefix's keys.
//!
//! A [`Shard`] (crate-private) is a complete set of the layout's keys (records, indexes,
//! counters, groups, due set, retry stream) on a client routed to its slot; it owns the
//! command-level reads and the scripts, written once. [`Shards`] is the set a
//! configuration names (the write shards, and while resharding the old ones too), built in
//! one place for the store, the retry queue and `reshard`.
//!
//! # Invariants
//! - **Stable placement.** A task lives in shard [`shard_of`]`(id, n)`: FNV-1a (64 bit)
//!   of the task id's UTF-8 bytes, modulo `n`. The hash must never change (it would
//!   strand every stored task); a test pins its values.
//! - **Writes stay single-slot.** Every write of one task is its shard's script on its
//!   shard's slot.

use std::time::Duration;

use failed_tasks_domain::{TaskFilter, TaskId};
use failed_tasks_store::StoreProblem;

use crate::config::{shard_key, RedisConfig};
use crate::conn::Conn;
use crate::layout::Keys;

/// The shard of a task id among `shards`: FNV-1a 64 of the id's bytes, modulo `shards`.
/// **Never change this**: stored tasks are found by it.
pub fn shard_of(task_id: &str, shards: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in task_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    u32::try_from(h % u64::from(shards.max(1))).unwrap_or(0)
}

/// The configuration of shard `i` of `n` built from the deployment's: its prefix and retry
/// stream carry the shard in their hash tag, and it keeps its share of `max_count`
/// (`ceil(max_count / n)`: retention by count is applied per shard, tasks being spread
/// evenly by the hash). Shard 0 of 1 is the deployment's configuration itself.
pub fn shard_config(config: &RedisConfig, i: u32, n: u32) -> RedisConfig {
    RedisConfig {
        key_prefix: shard_key(&config.key_prefix, i, n),
        retry_stream_key: config
            .retry_stream_key
            .as_deref()
            .map(|k| shard_key(k, i, n)),
        retention: failed_tasks_store::Retention {
            max_count: config
                .retention
                .max_count
                .div_ceil(u64::from(n.max(1)))
                .max(1),
            ..config.retention
        },
        shards: 1,
        resharding_from: None,
        ..config.clone()
    }
}

/// One shard: its keys, its own configuration ([`shard_config`]) and the client routed to
/// its slot.
#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) conn: Conn,
    pub(crate) keys: Keys,
    pub(crate) config: RedisConfig,
    /// This shard's token for the retry scheduler's lock (one per store instance).
    pub(crate) scheduler_token: String,
}

impl Shard {
    /// Shard `i` of `n` of the deployment `config`, on `conn`'s client.
    fn new(conn: &Conn, config: &RedisConfig, i: u32, n: u32) -> Self {
        let config = shard_config(config, i, n);
        Self {
            conn: conn.on_slot_of(&config.key_prefix),
            keys: Keys::new(&config.key_prefix),
            config,
            scheduler_token: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Wait (at most `within`) until the client is connected and Redis answers on this
    /// shard's slot. Gives up early when Redis's eviction policy forbids serving
    /// ([`StoreProblem::Evicting`]).
    pub(crate) async fn wait_answering(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.conn.is_connected() && self.conn.ping().await.is_ok() {
                return true;
            }
            if self.conn.health().condition().problem == Some(StoreProblem::Evicting) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Index keys of the filter's equality conditions ([`Keys::filter_indexes`]).
    pub(crate) fn equality_indexes(&self, f: &TaskFilter) -> Vec<String> {
        self.keys.filter_indexes(f)
    }

    /// The one index that answers `f` (its equality filter's, or `idx:all`), when it has at
    /// most one equality filter.
    pub(crate) fn single_index(&self, f: &TaskFilter) -> Option<String> {
        let mut indexes = self.equality_indexes(f);
        match indexes.len() {
            0 => Some(self.keys.all()),
            1 => indexes.pop(),
            _ => None,
        }
    }
}

/// Every shard of one configuration: the `shards` tasks are written to and, while
/// resharding (`resharding_from`), the old count's shards, which reads see too.
#[derive(Debug)]
pub(crate) struct Shards {
    /// Every distinct shard a read must see: the write shards by index, then those of the
    /// old count with a prefix of their own.
    readers: Vec<Shard>,
    /// How many of `readers` (the first ones) are the write shards.
    write: usize,
    /// While resharding: the old count's shards, as positions in `readers`.
    previous: Vec<usize>,
}

impl Shards {
    /// The shards of `config` on `conn`'s client (one connection per node for all of them).
    pub(crate) fn new(conn: &Conn, config: &RedisConfig) -> Self {
        let n = config.shards.max(1);
        let mut readers: Vec<Shard> = (0..n).map(|i| Shard::new(conn, config, i, n)).collect();
        let mut previous = Vec::new();
        if let Some(f) = config.resharding_from.filter(|f| *f != n) {
            for i in 0..f {
                let old = Shard::new(conn, config, i, f);
                let known = readers
                    .iter()
                    .position(|s| s.keys.prefix() == old.keys.prefix());
                previous.push(known.unwrap_or_else(|| {
                    readers.push(old);
                    readers.len() - 1
                }));
            }
        }
        Self {
            readers,
            write: n as usize,
            previous,
        }
    }

    /// Every shard a read must see (the write shards first, by index).
    pub(crate) fn readers(&self) -> &[Shard] {
        &self.readers
    }

    /// Every shard a read must see, by value (for a consumer of each one's stream).
    pub(crate) fn into_readers(self) -> Vec<Shard> {
        self.readers
    }

    /// The shards tasks are written to, by index.
    pub(crate) fn write(&self) -> &[Shard] {
        &self.readers[..self.write]
    }

    /// Whether a task may be in two shards (while resharding): reads then show it once.
    pub(crate) fn resharding(&self) -> bool {
        !self.previous.is_empty()
    }

    /// The write shard of a task id (or of a task type's name: the attempts counters).
    pub(crate) fn of(&self, id: &str) -> &Shard {
        &self.readers[shard_of(id, self.write as u32) as usize]
    }

    /// While resharding: the old shard of `id`, when it has another prefix than the new one.
    pub(crate) fn old_of(&self, id: &TaskId) -> Option<&Shard> {
        if self.previous.is_empty() {
            return None;
        }
        let old = self.previous[shard_of(id.as_str(), self.previous.len() as u32) as usize];
        let new = shard_of(id.as_str(), self.write as u32) as usize;
        (old != new).then(|| &self.readers[old])
    }

    /// The positions of `items` per write shard (by the shard of each one's task id), for
    /// the shards that get any.
    pub(crate) fn split<T>(
        &self,
        items: &[T],
        id: impl Fn(&T) -> &str,
    ) -> Vec<(usize, Vec<usize>)> {
        let mut parts: Vec<Vec<usize>> = vec![Vec::new(); self.write];
        for (pos, item) in items.iter().enumerate() {
            parts[shard_of(id(item), self.write as u32) as usize].push(pos);
        }
        parts
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The placement hash is part of the stored layout: these values must never change.
    #[test]
    fn the_shard_of_a_task_id_never_changes() {
        let pinned: Vec<u32> = ["task_001", "t00000", "", "a/b{c}", "ü"]
            .iter()
            .map(|id| shard_of(id, 16))
            .collect();
        assert_eq!(pinned, PINNED);
        assert_eq!(shard_of("anything", 1), 0);
        // The published FNV-1a 64 test vector: "a" hashes to 0xaf63dc4c8601ec8c.
        assert_eq!(shard_of("a", 16), 0xc);
        assert_eq!(
            shard_of("a", 1000),
            (0xaf63_dc4c_8601_ec8c_u64 % 1000) as u32
        );
    }

    const PINNED: [u32; 5] = [0, 9, 5, 14, 10];

    #[test]
    fn shard_configs_split_the_retention_count() {
        let c = RedisConfig {
            retention: failed_tasks_store::Retention {
                max_count: 1_000_000,
                ..Default::default()
            },
            shards: 16,
            ..RedisConfig::default()
        };
        let s = shard_config(&c, 3, 16);
        assert_eq!(s.key_prefix, "{failed-tasks:3.20}");
        assert_eq!(s.retry_stream(), "{failed-tasks:3.20}:retries");
        assert_eq!(s.retention.max_count, 62_500);
        assert_eq!(s.shards, 1);
        assert!(s.validate().is_ok());
        assert_eq!(
            shard_config(&RedisConfig::default(), 0, 1),
            RedisConfig::default()
        );
    }
}
