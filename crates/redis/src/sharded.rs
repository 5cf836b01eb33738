//! [`ShardedStore`]: one deployment's failures split over several [`RedisStore`]s (shards),
//! each with its own hash tag, so that on a Redis Cluster they spread over the masters.
//!
//! # Responsibility
//! A layer over [`RedisStore`], not a change to its scripts: every shard is a complete
//! `RedisStore` (records, indexes, counters, groups, due set, retry stream) on its own
//! prefix, `shard_key(prefix, i, n)` (`{failed-tasks:0.2}` … `{failed-tasks:15.63}` for 16: see `shard_key`; with one
//! shard exactly the configured prefix). All shards share one fred client.
//!
//! # Invariants
//! - **Stable placement.** A task lives in shard [`shard_of`]`(id, n)`: FNV-1a (64 bit)
//!   of the task id's UTF-8 bytes, modulo `n`. The hash must never change (it would
//!   strand every stored task); a test pins its values.
//! - **Writes stay single-slot.** Every write of one task is the shard's own script on
//!   the shard's slot; a batch is split per shard and each part is one script: all or
//!   nothing *per shard*. When some parts fail, the error names the failed shards and
//!   says the other parts were stored (recording the batch again is safe: an upsert).
//! - **Reads merge.** A page is a k-way merge of the shards' index members by the one sort
//!   key (members sort byte-wise in `SortKey` order), each shard asked for its next
//!   `page + 1` members after the cursor in parallel; only the cut page's records are
//!   read. The cursor is unchanged (the sort key). Totals, statistics, attempts, groups
//!   and retry gauges are merged per-shard answers.
//! - **Resharding.** With `resharding_from`, reads see the shards of both counts and show a
//!   task seen in both once (by `TaskId`); writes go to the new shard and then remove the
//!   task from its old shard.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::stats::{Bucket, BucketTops, Dimension, MinuteCounts, READ_PER_BUCKET};
use failed_tasks_domain::{
    Cursor, ErrorSignature, FailedTask, FailureGroup, GroupCursor, GroupPage, GroupQuery,
    ListQuery, RetryPlan, RetryStatus, TaskId, TaskType, Timestamp,
};
use failed_tasks_store::{
    Background, CancelRetry, DeliverReport, Delivery, FailedTaskPage, RecordOutcome, Resolve,
    RetryDetails, RetryGauges, RetryNow, RetryQueue, RetryStore, StatsStore, StatusStore,
    StoreError, StoredPage, StoredPages, Stores,
};
use fred::types::Value;
use futures_util::future::join_all;

use crate::config::{shard_key, RedisConfig};
use crate::conn::Conn;
use crate::janitor::TrimReport;
use crate::layout::{member_id, ms_part, parse_member, zrange_bylex, Keys, LexRange};
use crate::queue::{RedisRetryQueue, MAX_BLOCK, MAX_CLAIM};
use crate::stats::{pairs, parse_group_member, positive};
use crate::store::{now_ms, stored_record, Inner, Loaded, RedisStore};

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
/// evenly by the hash).
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

/// Most group members read to count the distinct groups of all shards; beyond it the
/// total is the sum of the shards' counts (an upper bound: a group in several shards is
/// counted in each).
const GROUP_UNION_LIMIT: u64 = 10_000;

/// The Redis store split into shards. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShardedStore {
    inner: Arc<ShardedInner>,
}

#[derive(Debug)]
struct ShardedInner {
    config: RedisConfig,
    /// The shards tasks are written to, by index (`shards` of them).
    shards: Vec<RedisStore>,
    /// While resharding: the shards of the old count, by index.
    previous: Vec<RedisStore>,
    /// Every distinct shard a read must see: `shards`, then those of `previous` with
    /// another prefix.
    readers: Vec<RedisStore>,
}

/// A shard store on an existing client.
fn shard_on(conn: &Conn, config: RedisConfig) -> RedisStore {
    RedisStore {
        inner: Arc::new(Inner {
            conn: conn.on_slot_of(&config.key_prefix),
            keys: Keys::new(&config.key_prefix),
            config,
            scheduler_token: uuid::Uuid::new_v4().to_string(),
        }),
    }
}

/// `e` of the same kind with `context` added to its message.
fn with_context(e: StoreError, context: &str) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("{m}; {context}")),
        StoreError::Timeout(m) => StoreError::Timeout(format!("{m}; {context}")),
        StoreError::Full(m) => StoreError::Full(format!("{m}; {context}")),
        StoreError::Rejected(m) => StoreError::Rejected(format!("{m}; {context}")),
        StoreError::Internal(m) => StoreError::Internal(format!("{m}; {context}")),
        StoreError::Corrupt { key, reason } => StoreError::Corrupt {
            key,
            reason: format!("{reason}; {context}"),
        },
    }
}

/// A k-way merge of one sorted set per shard, read newest first (`ZRANGE … BYLEX REV`) in
/// batches from an exclusive bound: every shard with an empty buffer is refilled in
/// parallel before the largest head is taken.
struct LexMerge {
    heads: Vec<Head>,
    batch: usize,
}

struct Head {
    key: String,
    max: String,
    min: String,
    buf: VecDeque<String>,
    done: bool,
}

impl LexMerge {
    fn new(keys: Vec<String>, range: &LexRange, batch: usize) -> Self {
        Self {
            heads: keys
                .into_iter()
                .map(|key| Head {
                    key,
                    max: range.max.clone(),
                    min: range.min.clone(),
                    buf: VecDeque::new(),
                    done: false,
                })
                .collect(),
            batch: batch.max(1),
        }
    }

    /// The next member and its shard (index into `shards`), or `None` when all are read.
    async fn next(&mut self, shards: &[RedisStore]) -> Result<Option<(usize, String)>, StoreError> {
        let batch = self.batch;
        let refills = self
            .heads
            .iter_mut()
            .zip(shards)
            .filter(|(h, _)| h.buf.is_empty() && !h.done)
            .map(|(h, shard)| async move {
                let members: Vec<String> = shard
                    .conn()
                    .cmd(
                        "reading an index",
                        "ZRANGE",
                        zrange_bylex(&h.key, &h.max, &h.min, true, batch as i64),
                    )
                    .await?;
                if members.len() < batch {
                    h.done = true;
                }
                if let Some(last) = members.last() {
                    h.max = format!("({last}");
                }
                h.buf.extend(members);
                Ok::<_, StoreError>(())
            });
        for r in join_all(refills).await {
            r?;
        }
        let best = self
            .heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.buf.front().map(|m| (i, m)))
            .max_by(|a, b| a.1.cmp(b.1))
            .map(|(i, _)| i);
        Ok(best.and_then(|i| self.heads[i].buf.pop_front().map(|m| (i, m))))
    }
}

/// One shard's part of a failure group.
struct GroupPart {
    count: u64,
    newest: Option<String>,
    oldest: Option<String>,
    desc: HashMap<String, String>,
}

impl ShardedStore {
    /// Build the store on one fred client and start connecting in the background: the
    /// shards of `config.shards` (and of `config.resharding_from`, while resharding).
    /// Fails only on a configuration problem, like [`RedisStore::connect`].
    pub async fn connect(config: RedisConfig) -> Result<ShardedStore, StoreError> {
        config.validate()?;
        let conn = Conn::start(&config)?;
        let n = config.shards;
        let shards: Vec<RedisStore> = (0..n)
            .map(|i| shard_on(&conn, shard_config(&config, i, n)))
            .collect();
        let previous: Vec<RedisStore> = match config.resharding_from {
            Some(f) if f != n => (0..f)
                .map(|i| shard_on(&conn, shard_config(&config, i, f)))
                .collect(),
            _ => Vec::new(),
        };
        let mut readers = shards.clone();
        for p in &previous {
            if !shards
                .iter()
                .any(|s| s.keys().prefix() == p.keys().prefix())
            {
                readers.push(p.clone());
            }
        }
        Ok(Self {
            inner: Arc::new(ShardedInner {
                config,
                shards,
                previous,
                readers,
            }),
        })
    }

    /// The configuration the store was built with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The shards tasks are written to, by index.
    pub fn shards(&self) -> &[RedisStore] {
        &self.inner.shards
    }

    /// The shard `task_id` is written to.
    pub fn shard_for(&self, task_id: &TaskId) -> &RedisStore {
        let n = self.inner.shards.len() as u32;
        &self.inner.shards[shard_of(task_id.as_str(), n) as usize]
    }

    /// While resharding: the old shard of `task_id`, when it has another prefix than the
    /// new one.
    fn old_shard_for(&self, task_id: &TaskId) -> Option<&RedisStore> {
        let previous = &self.inner.previous;
        if previous.is_empty() {
            return None;
        }
        let old = &previous[shard_of(task_id.as_str(), previous.len() as u32) as usize];
        (old.keys().prefix() != self.shard_for(task_id).keys().prefix()).then_some(old)
    }

    fn single(&self) -> Option<&RedisStore> {
        (self.inner.readers.len() == 1).then(|| &self.inner.readers[0])
    }

    /// Whether the client currently holds a working connection.
    pub fn is_connected(&self) -> bool {
        self.inner.shards[0].is_connected()
    }

    /// As [`RedisStore::wait_connected`] (the shards share one client).
    pub async fn wait_connected(&self, within: Duration) -> bool {
        // Boxed: embedders' futures nest this deep enough to reach the compiler's depth limit.
        Box::pin(self.inner.shards[0].wait_connected(within)).await
    }

    /// One janitor run over every shard (each under its own lock; `max_count` is applied
    /// per shard, `ceil(max_count / shards)` each), the reports added up.
    pub async fn trim_once(&self, now_ms: i64) -> Result<TrimReport, StoreError> {
        let mut total = TrimReport {
            locked_out: true,
            ..TrimReport::default()
        };
        for shard in &self.inner.readers {
            let r = shard.trim_once(now_ms).await?;
            total.locked_out &= r.locked_out;
            total.removed_by_age += r.removed_by_age;
            total.removed_by_count += r.removed_by_count;
            total.archived += r.archived;
        }
        Ok(total)
    }

    /// Run [`trim_once`](Self::trim_once) every `janitor_interval` until the handle is
    /// dropped or stopped.
    pub fn spawn_janitor(&self) -> Background {
        if let Some(one) = self.single() {
            return one.spawn_janitor();
        }
        let store = self.clone();
        let every = self
            .inner
            .config
            .retention
            .janitor_interval
            .max(Duration::from_millis(10));
        Background::every(every, move || {
            let store = store.clone();
            async move {
                crate::janitor::log_run(&store.trim_once(now_ms()).await);
                std::ops::ControlFlow::Continue(())
            }
        })
    }

    /// The index keys a query walks in each reader, when it has at most one equality
    /// filter (the merged fast path); `None` otherwise.
    fn single_index(&self, query: &ListQuery) -> Option<Vec<String>> {
        let mut keys = Vec::with_capacity(self.inner.readers.len());
        for shard in &self.inner.readers {
            let mut idx = shard.equality_indexes(&query.filter);
            if idx.len() > 1 {
                return None;
            }
            keys.push(idx.pop().unwrap_or_else(|| shard.keys().all()));
        }
        Some(keys)
    }

    /// The merged fast path: the total (sum of `ZLEXCOUNT`s), the page's `size + 1`
    /// members (k-way merge, a task seen in two shards once) and their records (`MGET`
    /// per shard, in parallel). `None` for queries with several equality filters.
    #[allow(clippy::type_complexity)]
    async fn merged_members(
        &self,
        query: &ListQuery,
    ) -> Result<Option<(u64, Vec<(usize, String, Value)>)>, StoreError> {
        let Some(keys) = self.single_index(query) else {
            return Ok(None);
        };
        let readers = &self.inner.readers;
        let filter = &query.filter;
        let want = query.page_size.as_usize() + 1;
        let total_range = LexRange::new(filter.since, filter.until, None);
        let range = LexRange::new(
            filter.since,
            filter.until,
            query.cursor.as_ref().map(Cursor::position),
        );
        let counts = readers.iter().zip(&keys).map(|(shard, key)| {
            shard.conn().cmd::<u64>(
                "counting an index",
                "ZLEXCOUNT",
                vec![
                    key.as_str().into(),
                    total_range.min.as_str().into(),
                    total_range.max.as_str().into(),
                ],
            )
        });
        // Each shard holds about 1/n of the page (the hash spreads tasks evenly): ask each
        // for twice its share plus two; a shard whose share runs out before the page is
        // full is read again from where it stopped (exact either way, one more round trip).
        let per_shard = (want.div_ceil(readers.len()) * 2 + 2).min(want);
        let mut merge = LexMerge::new(keys.clone(), &range, per_shard);
        let mut picked: Vec<(usize, String)> = Vec::with_capacity(want);
        let mut ids: HashSet<String> = HashSet::with_capacity(want);
        // The first `next` fills every shard's buffer at once, alongside the counts.
        let (counts, first) = tokio::join!(join_all(counts), merge.next(readers));
        let mut total = 0u64;
        for c in counts {
            total = total.saturating_add(c?);
        }
        let mut next = first?;
        while let Some((shard, member)) = next {
            let id = member_id(&member).unwrap_or_default().to_owned();
            if ids.insert(id) {
                picked.push((shard, member));
            }
            if picked.len() >= want {
                break;
            }
            next = merge.next(readers).await?;
        }
        // The records, one MGET per shard that has some, in parallel.
        let mut per_shard: HashMap<usize, Vec<usize>> = HashMap::new();
        for (pos, (shard, _)) in picked.iter().enumerate() {
            per_shard.entry(*shard).or_default().push(pos);
        }
        let reads = per_shard.iter().map(|(shard, positions)| {
            let store = &readers[*shard];
            let keys: Vec<Value> = positions
                .iter()
                .map(|p| {
                    Value::from(
                        store
                            .keys()
                            .record(member_id(&picked[*p].1).unwrap_or_default()),
                    )
                })
                .collect();
            async move {
                let values: Vec<Value> = store.conn().cmd("reading records", "MGET", keys).await?;
                if values.len() != positions.len() {
                    return Err(StoreError::Internal(format!(
                        "MGET answered {} values for {} keys",
                        values.len(),
                        positions.len()
                    )));
                }
                Ok((positions, values))
            }
        });
        let mut values: Vec<Value> = vec![Value::Null; picked.len()];
        for r in join_all(reads).await {
            let (positions, vs) = r?;
            for (p, v) in positions.iter().zip(vs) {
                values[*p] = v;
            }
        }
        Ok(Some((
            total,
            picked
                .into_iter()
                .zip(values)
                .map(|((s, m), v)| (s, m, v))
                .collect(),
        )))
    }

    /// The slow path: every reader's own page, merged by the sort key (a task seen twice
    /// once), cut to the page size.
    async fn merged_pages(&self, query: &ListQuery) -> Result<FailedTaskPage, StoreError> {
        let size = query.page_size.as_usize();
        let pages = join_all(self.inner.readers.iter().map(|s| s.list(query))).await;
        let mut total = 0u64;
        let mut skipped = 0u64;
        let mut more = false;
        let mut all: Vec<(FailedTask, RetryStatus)> = Vec::new();
        for page in pages {
            let page = page?;
            total = total.saturating_add(page.total);
            skipped += page.skipped_corrupt;
            more |= page.next_cursor.is_some();
            for (i, t) in page.tasks.iter().enumerate() {
                all.push((t.clone(), page.retry_status(i)));
            }
        }
        all.sort_by_key(|(t, _)| t.sort_key());
        let mut seen = HashSet::with_capacity(all.len());
        all.retain(|(t, _)| seen.insert(t.task_id().clone()));
        more |= all.len() > size;
        all.truncate(size);
        let next_cursor = if more {
            all.last().map(|(t, _)| Cursor::after(t.sort_key()))
        } else {
            None
        };
        let (tasks, retry) = all.into_iter().unzip();
        Ok(FailedTaskPage {
            total,
            tasks,
            next_cursor,
            skipped_corrupt: skipped,
            retry,
        })
    }

    /// Split `items` by the shard of each one's task id; each part keeps the positions of
    /// its items in `items`.
    fn split<T: Clone>(
        &self,
        items: &[T],
        id: impl Fn(&T) -> &TaskId,
    ) -> Vec<(usize, Vec<usize>, Vec<T>)> {
        let n = self.inner.shards.len() as u32;
        let mut parts: Vec<(Vec<usize>, Vec<T>)> = vec![(Vec::new(), Vec::new()); n as usize];
        for (pos, item) in items.iter().enumerate() {
            let s = shard_of(id(item).as_str(), n) as usize;
            parts[s].0.push(pos);
            parts[s].1.push(item.clone());
        }
        parts
            .into_iter()
            .enumerate()
            .filter(|(_, (p, _))| !p.is_empty())
            .map(|(s, (p, t))| (s, p, t))
            .collect()
    }

    /// Record a batch split per shard, each part one script (all or nothing per shard), in
    /// parallel; then, while resharding, remove each task from its old shard.
    async fn record_split(
        &self,
        batch: &[(FailedTask, RetryPlan)],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        if let (Some(one), true) = (self.single(), self.inner.previous.is_empty()) {
            return one.record_planned_batch(batch).await;
        }
        let parts = self.split(batch, |(t, _)| t.task_id());
        let n = self.inner.shards.len();
        let calls = parts.iter().map(|(s, _, items)| {
            let shard = &self.inner.shards[*s];
            async move { shard.record_planned_batch(items).await }
        });
        let results = join_all(calls).await;
        let mut outcomes = vec![RecordOutcome::Created; batch.len()];
        let mut failed: Vec<String> = Vec::new();
        let mut first_error = None;
        for ((s, positions, _), r) in parts.iter().zip(results) {
            match r {
                Ok(outs) => {
                    for (p, o) in positions.iter().zip(outs) {
                        outcomes[*p] = o;
                    }
                }
                Err(e) => {
                    failed.push(s.to_string());
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            let stored = parts.len() - failed.len();
            return Err(with_context(
                e,
                &format!(
                    "shards {} of {n} failed; the tasks of the {stored} other shard(s) of this batch were stored \
                     (a batch is all or nothing per shard): recording it again is safe (an upsert)",
                    failed.join(", ")
                ),
            ));
        }
        for (i, (task, _)) in batch.iter().enumerate() {
            if let Some(old) = self.old_shard_for(task.task_id()) {
                if old.remove(task.task_id()).await? {
                    outcomes[i] = RecordOutcome::Updated;
                }
            }
        }
        Ok(outcomes)
    }

    /// A per-task call on the task's shard, then (while resharding, when the task is not
    /// there) on its old shard.
    async fn on_task<T, F, Fut>(
        &self,
        id: &TaskId,
        not_found: impl Fn(&T) -> bool,
        call: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(RedisStore) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let first = call(self.shard_for(id).clone()).await?;
        match self.old_shard_for(id) {
            Some(old) if not_found(&first) => call(old.clone()).await,
            _ => Ok(first),
        }
    }

    /// One shard's part of the group `sig`: size, newest and oldest member, description.
    async fn group_part(shard: &RedisStore, sig: &ErrorSignature) -> Result<GroupPart, StoreError> {
        let conn = shard.conn();
        let keys = shard.keys();
        let index = keys.signature(sig);
        let edge = |rev: bool| {
            let mut args: Vec<Value> = vec![index.as_str().into()];
            if rev {
                args.extend(["+".into(), "-".into(), "BYLEX".into(), "REV".into()]);
            } else {
                args.extend(["-".into(), "+".into(), "BYLEX".into()]);
            }
            args.extend(["LIMIT".into(), 0i64.into(), 1i64.into()]);
            conn.cmd::<Vec<String>>("reading a group", "ZRANGE", args)
        };
        let count = conn.cmd::<u64>("sizing a group", "ZCARD", vec![index.as_str().into()]);
        let desc = conn.cmd::<Value>(
            "reading a group",
            "HGETALL",
            vec![keys.group(sig.as_str()).into()],
        );
        let (count, newest, oldest, desc) = tokio::join!(count, edge(true), edge(false), desc);
        Ok(GroupPart {
            count: count?,
            newest: newest?.into_iter().next(),
            oldest: oldest?.into_iter().next(),
            desc: pairs(desc?).into_iter().collect(),
        })
    }

    /// The group `sig` whose entry `member` was met in the merge, from every shard's part;
    /// `None` when its newest entry in some shard sorts above `member` (it belongs to an
    /// earlier position: shown there) or it vanished.
    async fn merged_group(
        &self,
        member: &str,
        last_seen: Timestamp,
        sig: &ErrorSignature,
    ) -> Result<Option<FailureGroup>, StoreError> {
        let readers = &self.inner.readers;
        let parts = join_all(readers.iter().map(|s| Self::group_part(s, sig))).await;
        let mut count = 0u64;
        let mut newest: Option<(usize, String)> = None;
        let mut oldest: Option<String> = None;
        let mut clients: HashSet<String> = HashSet::new();
        let mut desc: Option<(usize, HashMap<String, String>)> = None;
        for (i, part) in parts.into_iter().enumerate() {
            let part = part?;
            if part
                .desc
                .get("ord")
                .is_some_and(|ord| ord.as_str() > member)
            {
                return Ok(None);
            }
            count += part.count;
            if let Some(n) = part.newest {
                if newest.as_ref().is_none_or(|(_, m)| n > *m) {
                    newest = Some((i, n));
                }
            }
            if let Some(o) = part.oldest {
                if oldest.as_ref().is_none_or(|m| o < *m) {
                    oldest = Some(o);
                }
            }
            for (field, value) in &part.desc {
                if let Some(client) = field.strip_prefix("cl:") {
                    if positive(value).is_some() {
                        clients.insert(client.to_owned());
                    }
                }
            }
            if desc.is_none() && part.desc.contains_key("cat") {
                desc = Some((i, part.desc));
            }
        }
        let (Some((newest_shard, newest)), Some(oldest)) = (newest, oldest) else {
            return Ok(None);
        };
        let (Some(sample), Some(first_seen)) = (
            member_id(&newest).and_then(|id| TaskId::parse(id).ok()),
            parse_member(&oldest).map(|k| k.fail_time()),
        ) else {
            tracing::warn!(signature = %sig, "skipping a group with malformed members");
            return Ok(None);
        };
        let (desc_shard, desc) = desc.unwrap_or((newest_shard, HashMap::new()));
        let pattern = match readers[desc_shard].pattern_of(sig, &desc, &sample).await? {
            Some(p) => p,
            None => match readers[newest_shard]
                .pattern_of(sig, &HashMap::new(), &sample)
                .await?
            {
                Some(p) => p,
                None => {
                    tracing::warn!(signature = %sig, "skipping a group whose description is lost");
                    return Ok(None);
                }
            },
        };
        Ok(Some(FailureGroup {
            pattern,
            count,
            first_seen: first_seen.min(last_seen),
            last_seen,
            clients_affected: clients.len() as u64,
            sample_task_id: sample,
        }))
    }

    /// How many distinct groups the shards hold together (see [`GROUP_UNION_LIMIT`]).
    async fn group_total(&self) -> Result<u64, StoreError> {
        let readers = &self.inner.readers;
        let cards = join_all(readers.iter().map(|s| {
            s.conn()
                .cmd::<u64>("counting groups", "ZCARD", vec![s.keys().groups().into()])
        }))
        .await;
        let mut sum = 0u64;
        for c in cards {
            sum = sum.saturating_add(c?);
        }
        if sum > GROUP_UNION_LIMIT {
            return Ok(sum);
        }
        let all = join_all(readers.iter().map(|s| {
            s.conn().cmd::<Vec<String>>(
                "reading groups",
                "ZRANGE",
                vec![s.keys().groups().into(), 0i64.into(), (-1i64).into()],
            )
        }))
        .await;
        let mut sigs = HashSet::new();
        for members in all {
            for m in members? {
                if let Some((_, sig)) = parse_group_member(&m) {
                    sigs.insert(sig);
                }
            }
        }
        Ok(sigs.len() as u64)
    }
}

#[async_trait]
impl StatusStore for ShardedStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.shards[0].ping().await
    }

    fn condition(&self) -> failed_tasks_store::StoreCondition {
        self.inner.shards[0].condition()
    }

    async fn list(&self, query: &ListQuery) -> Result<FailedTaskPage, StoreError> {
        if let Some(one) = self.single() {
            return one.list(query).await;
        }
        let size = query.page_size.as_usize();
        if let Some((total, picked)) = self.merged_members(query).await? {
            let more = picked.len() > size;
            let mut tasks = Vec::with_capacity(size);
            let mut retry = Vec::with_capacity(size);
            for (shard, member, value) in picked.into_iter().take(size) {
                let loaded =
                    self.inner.readers[shard].check(std::slice::from_ref(&member), vec![value]);
                match loaded.into_iter().next() {
                    Some(Loaded::Task(t, s))
                        if query.filter.matches(&t) && query.filter.matches_status(&s) =>
                    {
                        tasks.push(t);
                        retry.push(s);
                    }
                    // A record missing, corrupt or not matching its entry: the slow path
                    // skips and counts it as a single store does.
                    _ => return self.merged_pages(query).await,
                }
            }
            let next_cursor = if more {
                tasks.last().map(|t| Cursor::after(t.sort_key()))
            } else {
                None
            };
            return Ok(FailedTaskPage {
                total,
                tasks,
                next_cursor,
                skipped_corrupt: 0,
                retry,
            });
        }
        self.merged_pages(query).await
    }

    async fn get(&self, task_id: &TaskId) -> Result<Option<FailedTask>, StoreError> {
        self.on_task(
            task_id,
            Option::is_none,
            |s| async move { s.get(task_id).await },
        )
        .await
    }

    async fn record(&self, task: &FailedTask) -> Result<RecordOutcome, StoreError> {
        let outcome = self.shard_for(task.task_id()).record(task).await?;
        match self.old_shard_for(task.task_id()) {
            Some(old) if old.remove(task.task_id()).await? => Ok(RecordOutcome::Updated),
            _ => Ok(outcome),
        }
    }

    async fn record_batch(&self, tasks: &[FailedTask]) -> Result<Vec<RecordOutcome>, StoreError> {
        let planned: Vec<(FailedTask, RetryPlan)> = tasks
            .iter()
            .map(|t| (t.clone(), RetryPlan::NotScheduled))
            .collect();
        self.record_split(&planned).await
    }

    async fn remove(&self, task_id: &TaskId) -> Result<bool, StoreError> {
        let removed = self.shard_for(task_id).remove(task_id).await?;
        match self.old_shard_for(task_id) {
            Some(old) => Ok(old.remove(task_id).await? || removed),
            None => Ok(removed),
        }
    }
}

/// Add `b`'s counters into `a` (the same minute).
fn add_counts(a: &mut MinuteCounts, b: MinuteCounts) {
    a.total += b.total;
    a.recovered += b.recovered;
    for (k, v) in b.by_category {
        *a.by_category.entry(k).or_default() += v;
    }
}

/// Add `b`'s counts into `a` (same bucket), by name.
fn add_tops(a: &mut BucketTops, b: BucketTops) {
    for d in Dimension::ALL {
        let list = a.of_mut(d);
        for (name, n) in b.of(d) {
            match list.iter_mut().find(|(k, _)| k == name) {
                Some((_, m)) => *m += n,
                None => list.push((name.clone(), *n)),
            }
        }
    }
    a.untracked.error_codes += b.untracked.error_codes;
    a.untracked.task_types += b.untracked.task_types;
    a.untracked.clients += b.untracked.clients;
}

#[async_trait]
impl StatsStore for ShardedStore {
    /// Every shard's counters of the range, added up per minute.
    async fn failure_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<MinuteCounts>, StoreError> {
        if let Some(one) = self.single() {
            return one.read_failure_counts(from_minute, to_minute).await;
        }
        let reads = join_all(
            self.inner
                .readers
                .iter()
                .map(|s| s.read_failure_counts(from_minute, to_minute)),
        )
        .await;
        let mut per: std::collections::BTreeMap<i64, MinuteCounts> = Default::default();
        for r in reads {
            for c in r? {
                match per.entry(c.minute) {
                    std::collections::btree_map::Entry::Occupied(mut e) => {
                        add_counts(e.get_mut(), c)
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(c);
                    }
                }
            }
        }
        Ok(per.into_values().collect())
    }

    /// Every shard's most frequent values per bucket, added up by name (and the untracked
    /// counts), cut to what one shard answers. A value cut from one shard's list can be
    /// missing or low in the sum; the lists are then longer than a read uses, so the
    /// statistics say their breakdowns are not exact.
    async fn failure_tops(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<BucketTops>, StoreError> {
        if let Some(one) = self.single() {
            return one.read_failure_tops(from_minute, to_minute).await;
        }
        let reads = join_all(
            self.inner
                .readers
                .iter()
                .map(|s| s.read_failure_tops(from_minute, to_minute)),
        )
        .await;
        let mut per: std::collections::BTreeMap<Bucket, BucketTops> = Default::default();
        for r in reads {
            for t in r? {
                let merged = per
                    .entry(t.bucket)
                    .or_insert_with(|| BucketTops::empty(t.bucket));
                add_tops(merged, t);
            }
        }
        Ok(per
            .into_values()
            .map(|mut t| {
                for d in Dimension::ALL {
                    let list = t.of_mut(d);
                    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
                    list.truncate(READ_PER_BUCKET + 1);
                }
                t
            })
            .collect())
    }

    /// Kept in the shard of the task type's name (the same hash as task ids): one script on
    /// one slot; reads add up every shard.
    async fn record_attempts(
        &self,
        task_type: &TaskType,
        minute: i64,
        count: u64,
    ) -> Result<(), StoreError> {
        let n = self.inner.shards.len() as u32;
        self.inner.shards[shard_of(task_type.as_str(), n) as usize]
            .add_attempts(task_type, minute, count)
            .await
    }

    async fn attempt_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        if let Some(one) = self.single() {
            return one.read_attempt_counts(from_minute, to_minute).await;
        }
        let reads = join_all(
            self.inner
                .readers
                .iter()
                .map(|s| s.read_attempt_counts(from_minute, to_minute)),
        )
        .await;
        let mut per: std::collections::BTreeMap<i64, u64> = Default::default();
        for r in reads {
            for (minute, n) in r? {
                *per.entry(minute).or_default() += n;
            }
        }
        Ok(per.into_iter().collect())
    }

    /// A k-way merge of the shards' `P:groups` from the cursor; each group met for the
    /// first time is read from every shard (pipelined per shard) and merged: sizes added,
    /// clients united, the oldest and newest members across shards. A group whose newest
    /// entry in some shard sorts above the one met belongs to that higher position (an
    /// earlier page) and is left out here.
    async fn list_groups(&self, query: &GroupQuery) -> Result<GroupPage, StoreError> {
        if let Some(one) = self.single() {
            return one.read_groups(query).await;
        }
        let readers = &self.inner.readers;
        let size = query.page_size.as_usize();
        let max = match &query.cursor {
            Some(c) => format!(
                "({}:{}",
                ms_part(c.last_seen().unix_millis()),
                c.signature()
            ),
            None => "+".to_owned(),
        };
        let range = LexRange {
            max,
            min: "-".to_owned(),
        };
        let keys = readers.iter().map(|s| s.keys().groups()).collect();
        let mut merge = LexMerge::new(keys, &range, size + 1);
        let mut seen: HashSet<ErrorSignature> = HashSet::new();
        let mut groups: Vec<FailureGroup> = Vec::with_capacity(size + 1);
        let total = self.group_total();
        let mut exhausted = false;
        let walk = async {
            while groups.len() <= size && !exhausted {
                // The next candidates: groups met for the first time, as many as missing.
                let mut candidates = Vec::new();
                while candidates.len() < size + 1 - groups.len() {
                    let Some((_, member)) = merge.next(readers).await? else {
                        exhausted = true;
                        break;
                    };
                    let Some((last_seen, sig)) = parse_group_member(&member) else {
                        tracing::warn!(
                            member = member.as_str(),
                            "skipping a malformed group entry"
                        );
                        continue;
                    };
                    if seen.insert(sig.clone()) {
                        candidates.push((member, last_seen, sig));
                    }
                }
                let reads = candidates
                    .iter()
                    .map(|(m, at, sig)| self.merged_group(m, *at, sig));
                for g in join_all(reads).await {
                    if let Some(g) = g? {
                        groups.push(g);
                    }
                }
            }
            Ok::<_, StoreError>(())
        };
        let (total, walked) = tokio::join!(total, walk);
        walked?;
        let more = groups.len() > size;
        groups.truncate(size);
        let next_cursor = if more {
            groups.last().map(GroupCursor::after)
        } else {
            None
        };
        Ok(GroupPage {
            total: total?,
            groups,
            next_cursor,
        })
    }
}

#[async_trait]
impl StoredPages for ShardedStore {
    /// The merged fast path with each record checked as [`RedisStore::list_stored`] does
    /// (a current record whose header names the member); anything else is answered from the
    /// decoded merge and encoded.
    async fn list_stored(&self, query: &ListQuery) -> Result<StoredPage, StoreError> {
        if let Some(one) = self.single() {
            return one.list_stored(query).await;
        }
        let size = query.page_size.as_usize();
        if let Some((total, picked)) = self.merged_members(query).await? {
            let more = picked.len() > size;
            let mut records = Vec::with_capacity(size);
            let mut last = None;
            let mut clean = true;
            for (_, member, value) in picked.into_iter().take(size) {
                match stored_record(member.as_bytes(), value) {
                    Some(record) => {
                        records.push(record);
                        last = Some(member);
                    }
                    None => {
                        clean = false;
                        break;
                    }
                }
            }
            if clean {
                let next_cursor = if more {
                    last.as_deref().and_then(parse_member).map(Cursor::after)
                } else {
                    None
                };
                return Ok(StoredPage {
                    total,
                    records,
                    next_cursor,
                    skipped_corrupt: 0,
                });
            }
        }
        Ok(StoredPage::encoded(&self.list(query).await?))
    }
}

#[async_trait]
impl RetryStore for ShardedStore {
    async fn record_planned(
        &self,
        batch: &[(FailedTask, RetryPlan)],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        self.record_split(batch).await
    }

    async fn retry_now(&self, task_id: &TaskId, now: Timestamp) -> Result<RetryNow, StoreError> {
        self.on_task(
            task_id,
            |r| matches!(r, RetryNow::NotFound),
            |s| async move { s.retry_now(task_id, now).await },
        )
        .await
    }

    async fn cancel_retry(&self, task_id: &TaskId) -> Result<CancelRetry, StoreError> {
        self.on_task(
            task_id,
            |r| matches!(r, CancelRetry::NotFound),
            |s| async move { s.cancel_retry(task_id).await },
        )
        .await
    }

    async fn resolve(&self, task_id: &TaskId, at: Timestamp) -> Result<Resolve, StoreError> {
        self.on_task(
            task_id,
            |r| matches!(r, Resolve::NotFound),
            |s| async move { s.resolve(task_id, at).await },
        )
        .await
    }

    async fn retry_details(&self, task_id: &TaskId) -> Result<Option<RetryDetails>, StoreError> {
        self.on_task(task_id, Option::is_none, |s| async move {
            s.retry_details(task_id).await
        })
        .await
    }

    /// Every shard's scheduler step in parallel (each under its own lock, moving its due
    /// entries into its own stream in one script), `max / shards` (at least 1) each. A
    /// shard that fails is logged and left for the next step; only when every shard fails
    /// is the step an error.
    async fn deliver_due(&self, now: Timestamp, max: usize) -> Result<DeliverReport, StoreError> {
        if let Some(one) = self.single() {
            return one.deliver_due(now, max).await;
        }
        let readers = &self.inner.readers;
        let each = (max / readers.len()).max(1);
        let steps = join_all(readers.iter().map(|s| s.deliver_due(now, each))).await;
        let mut report = DeliverReport {
            locked_out: true,
            ..DeliverReport::default()
        };
        let mut first_error = None;
        let mut ok = 0usize;
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                Ok(r) => {
                    ok += 1;
                    report.locked_out &= r.locked_out;
                    report.moved += r.moved;
                    report.dropped += r.dropped;
                    report.more |= r.more;
                }
                Err(e) => {
                    tracing::warn!(shard = i, error = %e, "a shard's retry scheduler step failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if ok == 0 => Err(e),
            _ => Ok(report),
        }
    }

    /// Every shard's gauges, added up (the oldest due age: the largest).
    async fn retry_gauges(&self, now: Timestamp) -> Result<RetryGauges, StoreError> {
        if let Some(one) = self.single() {
            return one.retry_gauges(now).await;
        }
        let all = join_all(self.inner.readers.iter().map(|s| s.retry_gauges(now))).await;
        let mut g = RetryGauges::default();
        for r in all {
            let r = r?;
            g.scheduled += r.scheduled;
            g.due += r.due;
            g.oldest_due_age = g.oldest_due_age.max(r.oldest_due_age);
            g.queued += r.queued;
            g.pending += r.pending;
            g.reclaimed += r.reclaimed;
        }
        Ok(g)
    }
}

/// The sharded store's capabilities: all of them, named `redis` like a single store's.
impl From<ShardedStore> for Stores {
    fn from(store: ShardedStore) -> Self {
        let store = Arc::new(store);
        Stores::new("redis", store.clone())
            .with_stats(store.clone())
            .with_stored(store.clone())
            .with_retries(store)
    }
}

/// A worker's handle on every shard's retry stream: one consumer of the configured group
/// on each, over one blocking connection. With one shard it is exactly a
/// [`RedisRetryQueue`] (the same delivery ids); with several, a delivery id is
/// `{shard}/{stream entry id}`.
///
/// `claim` reads the shards in turn (starting at a rotating shard, so none starves) without
/// blocking; when none has anything it sleeps briefly (10 ms, doubling up to 100 ms) and
/// reads again until `block` has passed: a new request waits at most about 100 ms more
/// than on one stream.
#[derive(Debug)]
pub struct ShardedRetryQueue {
    queues: Vec<RedisRetryQueue>,
    next: AtomicUsize,
    lease: Duration,
}

impl ShardedRetryQueue {
    /// A consumer named `consumer` of every shard's stream of `config` (its `shards`, and
    /// while resharding its old shards too). Fails only on a configuration problem.
    pub async fn connect(config: &RedisConfig, consumer: &str) -> Result<Self, StoreError> {
        config.validate()?;
        let conn = Conn::start_blocking(config, MAX_BLOCK)?;
        let mut configs: Vec<RedisConfig> = (0..config.shards)
            .map(|i| shard_config(config, i, config.shards))
            .collect();
        if let Some(f) = config.resharding_from.filter(|f| *f != config.shards) {
            for i in 0..f {
                let c = shard_config(config, i, f);
                if !configs.iter().any(|k| k.key_prefix == c.key_prefix) {
                    configs.push(c);
                }
            }
        }
        let queues = configs
            .iter()
            .map(|c| RedisRetryQueue::on_conn(conn.clone(), c, consumer))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            queues,
            next: AtomicUsize::new(0),
            lease: config.retry_consumer_lease,
        })
    }

    /// The configured lease (`retry_consumer_lease`).
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Wait (at most `within`) until the queue's connection answers.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        self.queues[0].wait_connected(within).await
    }

    fn tag(&self, shard: usize, mut d: Vec<Delivery>) -> Vec<Delivery> {
        if self.queues.len() > 1 {
            for x in &mut d {
                x.id = format!("{shard}/{}", x.id);
            }
        }
        d
    }

    /// One pass over the shards, from a rotating start, until `max` are claimed.
    async fn pass(&self, max: usize) -> Result<Vec<Delivery>, StoreError> {
        let n = self.queues.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut out = Vec::new();
        for k in 0..n {
            let i = (start + k) % n;
            let want = max - out.len();
            let got = self.queues[i].claim(want, Duration::ZERO).await?;
            out.extend(self.tag(i, got));
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl RetryQueue for ShardedRetryQueue {
    async fn claim(&self, max: usize, block: Duration) -> Result<Vec<Delivery>, StoreError> {
        if self.queues.len() == 1 {
            return self.queues[0].claim(max, block).await;
        }
        let max = max.clamp(1, MAX_CLAIM);
        let until = tokio::time::Instant::now() + block.min(MAX_BLOCK);
        let mut pause = Duration::from_millis(10);
        loop {
            let got = self.pass(max).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= until {
                return Ok(got);
            }
            tokio::time::sleep(pause.min(until - now)).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    async fn ack(&self, ids: &[String]) -> Result<u64, StoreError> {
        if self.queues.len() == 1 {
            return self.queues[0].ack(ids).await;
        }
        let mut per: Vec<Vec<String>> = vec![Vec::new(); self.queues.len()];
        for id in ids {
            let shard = id
                .split_once('/')
                .and_then(|(s, rest)| Some((s.parse::<usize>().ok()?, rest)))
                .filter(|(s, _)| *s < self.queues.len());
            match shard {
                Some((s, rest)) => per[s].push(rest.to_owned()),
                None => {
                    return Err(StoreError::Rejected(format!(
                        "retry delivery id {id:?} does not name a shard ({{shard}}/{{entry id}})"
                    )))
                }
            }
        }
        let mut acked = 0;
        for (s, ids) in per.iter().enumerate() {
            if !ids.is_empty() {
                acked += self.queues[s].ack(ids).await?;
            }
        }
        Ok(acked)
    }

    async fn reclaim_stale(
        &self,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        if self.queues.len() == 1 {
            return self.queues[0].reclaim_stale(lease, max).await;
        }
        let max = max.clamp(1, MAX_CLAIM);
        let mut out = Vec::new();
        for (i, q) in self.queues.iter().enumerate() {
            let got = q.reclaim_stale(lease, max - out.len()).await?;
            out.extend(self.tag(i, got));
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
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
