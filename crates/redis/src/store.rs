//! [`RedisStore`]: the [`StatusStore`] port on Redis, over one or several shards.
//!
//! The store is a set of shards (one by default: exactly the configured prefix's keys),
//! which own the commands and scripts; it implements each port trait once, over all of them:
//! a task's reads and writes go to its shard, reads of many tasks merge the shards' answers,
//! and a batch is split per shard, each part one script (all or nothing per shard; when
//! parts fail, the error names the failed shards and says the other parts were stored).
//! While resharding (`resharding_from`), reads see the shards of both counts and show a
//! task seen in both once; writes go to the new shard and then remove the task from its
//! old one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use failed_tasks_domain::stats::{minute_of, MINUTE_MS};
use failed_tasks_domain::{ErrorPattern, FailedTask, ListQuery, RetryPlan, TaskId};
use failed_tasks_store::{
    FailedTaskPage, RecordOutcome, StatusStore, StoreError, StoredPage, StoredPages, Stores,
};
use fred::types::Value;
use futures_util::future::join_all;

use crate::config::RedisConfig;
use crate::conn::Conn;
use crate::layout::Keys;
use crate::scripts::Scripts;
use crate::shard::{Shard, Shards};
use failed_tasks_store::stored;

/// Records skipped because they could not be decoded, since the process started.
static CORRUPT_SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Most tasks one `record_many` script call takes (a shard's part of a batch): a batch is
/// one script call per shard (all or nothing), and a script blocks Redis while it runs;
/// 1,000 tasks take about 10 ms of Redis time (measured in `docs/redis-layout.md`).
pub const MAX_BATCH: usize = 1000;

/// The Redis store. Cheap to clone: clones share one client (one connection per node).
#[derive(Debug, Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: RedisConfig,
    shards: Shards,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn millis_of(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The hour (since the epoch) a minute falls in: counters are kept in one hash per hour.
pub(crate) fn hour_of(minute: i64) -> i64 {
    minute.div_euclid(60)
}

/// The first millisecond after `hour`.
pub(crate) fn hour_end_ms(hour: i64) -> i64 {
    hour.saturating_add(1).saturating_mul(60 * MINUTE_MS)
}

/// A reply value as text, if it is one.
pub(crate) fn value_text(v: Value) -> Option<Result<String, Vec<u8>>> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(Ok(s.to_string())),
        Value::Bytes(b) => Some(String::from_utf8(b.to_vec()).map_err(|e| e.into_bytes())),
        Value::Integer(i) => Some(Ok(i.to_string())),
        Value::Double(d) => Some(Ok(d.to_string())),
        other => Some(Err(format!("{other:?}").into_bytes())),
    }
}

/// Count a corrupt record and log it with its key.
pub(crate) fn note_corrupt(key: &str, reason: &str) {
    CORRUPT_SKIPPED.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(key, reason, "skipping corrupt failed-task record");
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

impl RedisStore {
    /// Build the store and start connecting in the background: one fred client for the
    /// shards of `config.shards` (and of `config.resharding_from`, while resharding).
    ///
    /// Fails only on a configuration problem (bad URL or scheme, a prefix without exactly
    /// one hash tag, a shard count out of range); never because Redis is down: calls answer
    /// [`StoreError::Unavailable`] until the client has (re)connected by itself.
    pub async fn connect(config: RedisConfig) -> Result<RedisStore, StoreError> {
        let conn = Conn::start(&config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                shards: Shards::new(&conn, &config),
                config,
            }),
        })
    }

    /// How many malformed records `list` skipped in this process, across all stores.
    pub fn corrupt_records_skipped() -> u64 {
        CORRUPT_SKIPPED.load(Ordering::Relaxed)
    }

    /// The configuration the store was built with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// Whether the client currently holds a working connection.
    pub fn is_connected(&self) -> bool {
        self.conn().is_connected()
    }

    /// Wait (at most `within`) until the client is connected and Redis answers; for
    /// start-up checks and tests. Gives up early when Redis's eviction policy forbids
    /// serving ([`StoreProblem::Evicting`](failed_tasks_store::StoreProblem::Evicting)).
    pub async fn wait_connected(&self, within: Duration) -> bool {
        // Boxed: embedders' futures nest this deep enough to reach the compiler's depth limit.
        Box::pin(self.shards().write()[0].wait_answering(within)).await
    }

    /// The names of the keys of the first shard: with one shard (the default), of every key
    /// of the store. Shard `i` of `n` has the prefix [`shard_key`](crate::shard_key)`(prefix, i, n)`.
    pub fn keys(&self) -> &Keys {
        &self.shards().write()[0].keys
    }

    pub(crate) fn shards(&self) -> &Shards {
        &self.inner.shards
    }

    /// The client (every shard's: one client, one health), routed to the first shard.
    fn conn(&self) -> &Conn {
        &self.shards().write()[0].conn
    }

    /// `read` on every shard a read must see, all at once; the answers in the shards' order.
    pub(crate) async fn every_shard<'a, T, Fut>(
        &'a self,
        mut read: impl FnMut(&'a Shard) -> Fut,
    ) -> Vec<Result<T, StoreError>>
    where
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        join_all(self.shards().readers().iter().map(|s| Box::pin(read(s)))).await
    }

    /// A per-task call on the task's shard, then (while resharding, when the task is not
    /// there) on its old shard.
    pub(crate) async fn on_task<'a, T, F, Fut>(
        &'a self,
        id: &TaskId,
        not_found: impl Fn(&T) -> bool,
        call: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(&'a Shard) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let first = call(self.shards().of(id.as_str())).await?;
        match self.shards().old_of(id) {
            Some(old) if not_found(&first) => call(old).await,
            _ => Ok(first),
        }
    }

    /// Record a batch split per shard, each part one `record_many` script (all or nothing
    /// per shard), the parts in parallel; then, while resharding, remove each task from its
    /// old shard.
    pub(crate) async fn record_split(
        &self,
        batch: &[(&FailedTask, RetryPlan)],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        let shards = self.shards();
        let parts = shards.split(batch, |(t, _)| t.task_id().as_str());
        let calls = parts.iter().map(|(s, positions)| {
            let items: Vec<(&FailedTask, RetryPlan)> =
                positions.iter().map(|p| batch[*p]).collect();
            async move { shards.write()[*s].record_planned_batch(&items).await }
        });
        let results = join_all(calls).await;
        let mut outcomes = vec![RecordOutcome::Created; batch.len()];
        let mut failed: Vec<String> = Vec::new();
        let mut first_error = None;
        for ((s, positions), r) in parts.iter().zip(results) {
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
            let n = shards.write().len();
            if n == 1 {
                return Err(e);
            }
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
            if let Some(old) = shards.old_of(task.task_id()) {
                if old.remove(task.task_id()).await? {
                    outcomes[i] = RecordOutcome::Updated;
                }
            }
        }
        Ok(outcomes)
    }
}

impl Shard {
    /// The task's record, decoded.
    pub(crate) async fn get(&self, task_id: &TaskId) -> Result<Option<FailedTask>, StoreError> {
        let key = self.keys.record(task_id.as_str());
        let value: Value = self
            .conn
            .cmd("reading a record", "GET", vec![key.as_str().into()])
            .await?;
        match value_text(value) {
            None => Ok(None),
            Some(Err(_)) => Err(StoreError::Corrupt {
                key,
                reason: "record is not UTF-8 text".to_owned(),
            }),
            Some(Ok(text)) => stored::decode(&text)
                .map(|(task, _)| Some(task))
                .map_err(|reason| StoreError::Corrupt { key, reason }),
        }
    }

    /// One `record` script call (atomic).
    async fn record(&self, task: &FailedTask) -> Result<RecordOutcome, StoreError> {
        let (keys, args) = self.record_call(task, RetryPlan::NotScheduled);
        let mut full_args = Vec::with_capacity(5);
        full_args.push(Value::from(self.keys.prefix()));
        full_args.extend(args);
        let created: i64 = self
            .conn
            .eval(&Scripts::get().record, keys.into(), full_args)
            .await?;
        Ok(outcome(created))
    }

    /// One `remove` script call: the record, its index entries, counters, group membership
    /// and history.
    pub(crate) async fn remove(&self, task_id: &TaskId) -> Result<bool, StoreError> {
        let k = &self.keys;
        let removed: i64 = self
            .conn
            .eval(
                &Scripts::get().remove,
                vec![k.record(task_id.as_str()).into()],
                vec![k.prefix().into()],
            )
            .await?;
        Ok(removed == 1)
    }

    /// Keys and arguments of the `record` script for one task with its retry plan (also one
    /// task's share of `record_many`).
    pub(crate) fn record_call(
        &self,
        task: &FailedTask,
        plan: RetryPlan,
    ) -> ([Value; 7], [Value; 4]) {
        let k = &self.keys;
        let now = now_ms();
        let fail_ms = task.fail_time().unix_millis();
        let ttl = self.retained_until(fail_ms, now).saturating_sub(now);
        // The hour's counters live as long as the longest-lived record of that hour.
        let counters_until =
            self.retained_until(hour_end_ms(hour_of(minute_of(task.fail_time()))), now);
        let pattern = ErrorPattern::of_task(task);
        let keys = [
            k.record(task.task_id().as_str()).into(),
            k.all().into(),
            k.category(task.error_category()).into(),
            k.task_type(task.task_type()).into(),
            k.client(task.client_id()).into(),
            k.error_code(task.error_code()).into(),
            k.signature(pattern.signature()).into(),
        ];
        let args = [
            stored::encode(task, pattern.signature(), &plan.status_for(task)).into(),
            ttl.into(),
            pattern.normalised_message().into(),
            counters_until.into(),
        ];
        (keys, args)
    }

    /// Until when (ms since the epoch) data about a failure at `at_ms` is kept:
    /// `max_age + record_ttl_slack` after it, and at least the slack from `now`.
    pub(crate) fn retained_until(&self, at_ms: i64, now: i64) -> i64 {
        let cfg = &self.config;
        let slack = millis_of(cfg.record_ttl_slack).max(1_000);
        at_ms
            .saturating_add(millis_of(cfg.retention.max_age))
            .saturating_add(slack)
            .max(now.saturating_add(slack))
    }

    /// The latest time, on Redis's clock (ms since the epoch), at which a script sent now may
    /// still start: any later and this client has given up waiting for it (a call is given
    /// up at least one command timeout after it was sent, which is after `TIME` answered).
    /// Reading Redis's own clock keeps the deadline free of clock skew between hosts.
    async fn script_deadline(&self) -> Result<i64, StoreError> {
        Ok(self
            .redis_now_ms()
            .await?
            .saturating_add(millis_of(self.conn.timeout()))
            .saturating_sub(1))
    }

    /// Redis's clock (`TIME`), in ms since the epoch.
    async fn redis_now_ms(&self) -> Result<i64, StoreError> {
        let time: Vec<String> = self
            .conn
            .cmd("reading the redis clock", "TIME", vec![])
            .await?;
        let part = |i: usize| time.get(i).and_then(|v| v.parse::<i64>().ok());
        match (part(0), part(1)) {
            (Some(secs), Some(micros)) => {
                Ok(secs.saturating_mul(1000).saturating_add(micros / 1000))
            }
            // Seen only while a cluster moves the store's slot (a reply of the client's
            // redirection, `OK`, handed to this command): transient, nothing was written.
            _ => Err(StoreError::Unavailable(format!(
                "TIME answered {time:?}, not seconds and microseconds"
            ))),
        }
    }

    /// One `record_many` script call for the whole batch, each task with its retry plan (at
    /// most [`MAX_BATCH`] tasks): all or nothing. A refused batch (store full, a deadline
    /// passed, Redis gone) stored none of its tasks. An answer lost after the script was
    /// sent is settled by the batch's receipt (see `settle_batch`); only when Redis cannot
    /// tell in time is the error one of unknown outcome ([`OUTCOME_UNKNOWN`]: whole or not
    /// at all, safe to send again).
    pub(crate) async fn record_planned_batch(
        &self,
        tasks: &[(&FailedTask, RetryPlan)],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        if tasks.len() > MAX_BATCH {
            return Err(StoreError::Rejected(format!(
                "a batch of {} tasks; at most {MAX_BATCH} are recorded at once",
                tasks.len()
            )));
        }
        let not_after = self.script_deadline().await?;
        let receipt = self
            .keys
            .batch_receipt(&uuid::Uuid::new_v4().simple().to_string());
        let mut keys = Vec::with_capacity(tasks.len() * 7);
        let mut args = Vec::with_capacity(4 + tasks.len() * 4);
        args.push(Value::from(self.keys.prefix()));
        args.push(Value::from(not_after));
        for (task, plan) in tasks {
            let (k, a) = self.record_call(task, *plan);
            keys.extend(k);
            args.extend(a);
        }
        args.push(Value::from(receipt.as_str()));
        args.push(Value::from(millis_of(RECEIPT_LIFETIME)));
        // Refuse here, before sending, while the link is known to be down: a batch that was
        // never sent needs no settling.
        self.conn.usable("recording a batch").await?;
        let flags: Vec<i64> = match self
            .conn
            .eval(&Scripts::get().record_many, keys, args)
            .await
        {
            Ok(flags) => flags,
            Err(e) if e.is_unavailable() => {
                self.settle_batch(&receipt, not_after, tasks.len(), e)
                    .await?
            }
            Err(e) => return Err(e),
        };
        if flags.len() != tasks.len() {
            return Err(StoreError::Internal(format!(
                "record_many answered {} flags for {} tasks",
                flags.len(),
                tasks.len()
            )));
        }
        Ok(flags.into_iter().map(outcome).collect())
    }

    /// The outcome of a batch whose answer was lost (`lost`: a timeout, or the link dropped
    /// after the script was sent). Redis may have applied it (killed after the AOF write but
    /// before the reply) or not. Within two command timeouts, read Redis's clock and then the
    /// batch's receipt: a receipt means it was applied (its flags are the answer); no receipt
    /// once the clock is past the batch's `not_after` means it never will be (the script
    /// refuses to start late, and one that started earlier finished before `TIME` answered),
    /// so `lost` is the answer. When Redis cannot tell in time, the error says the outcome is
    /// unknown: recording the batch again is safe (an upsert).
    async fn settle_batch(
        &self,
        receipt: &str,
        not_after: i64,
        n: usize,
        lost: StoreError,
    ) -> Result<Vec<i64>, StoreError> {
        let until = tokio::time::Instant::now() + self.conn.timeout() * 2;
        loop {
            if let Ok(now) = self.redis_now_ms().await {
                let flags: Result<Option<String>, StoreError> = self
                    .conn
                    .cmd("reading a batch receipt", "GET", vec![receipt.into()])
                    .await;
                match flags {
                    Ok(Some(flags)) => {
                        tracing::debug!(receipt, "a batch whose answer was lost was applied");
                        return Ok(flags.bytes().map(|b| i64::from(b == b'1')).collect());
                    }
                    Ok(None) if now > not_after => return Err(lost),
                    Ok(None) | Err(_) => {}
                }
            }
            if tokio::time::Instant::now() >= until {
                return Err(StoreError::Unavailable(format!(
                    "{lost}; whether the batch of {n} tasks was stored is unknown ({OUTCOME_UNKNOWN}): it was stored whole or not at all, and recording it again is safe"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// How long a `record_many` receipt is kept: far longer than any caller settles a batch.
const RECEIPT_LIFETIME: Duration = Duration::from_secs(600);

/// Part of the message of an error whose batch may or may not have been stored (whole, or
/// not at all): Redis did not answer in time to tell.
pub const OUTCOME_UNKNOWN: &str = "outcome unknown";

fn outcome(created: i64) -> RecordOutcome {
    if created == 1 {
        RecordOutcome::Created
    } else {
        RecordOutcome::Updated
    }
}

#[async_trait]
impl StatusStore for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.conn().ping().await
    }

    /// The cause of the last connection problem (auth, refused, timeout, DNS) and Redis's
    /// `maxmemory-policy` as last read (after each (re)connection).
    fn condition(&self) -> failed_tasks_store::StoreCondition {
        self.conn().health().condition()
    }

    /// A k-way merge of the shards' pages (`pages`): with at most one equality filter two
    /// round trips, O(log N + page) at Redis per shard.
    async fn list(&self, query: &ListQuery) -> Result<FailedTaskPage, StoreError> {
        self.page(query).await
    }

    async fn get(&self, task_id: &TaskId) -> Result<Option<FailedTask>, StoreError> {
        self.on_task(task_id, Option::is_none, |s| s.get(task_id))
            .await
    }

    /// One `record` script call on the task's shard (atomic). Unlike `record_batch` it
    /// carries no deadline, to save the `TIME` round trip: a call given up on a paused Redis
    /// may still be applied when Redis resumes. Recording is an upsert, so repeating it is
    /// harmless.
    async fn record(&self, task: &FailedTask) -> Result<RecordOutcome, StoreError> {
        let outcome = self
            .shards()
            .of(task.task_id().as_str())
            .record(task)
            .await?;
        match self.shards().old_of(task.task_id()) {
            Some(old) if old.remove(task.task_id()).await? => Ok(RecordOutcome::Updated),
            _ => Ok(outcome),
        }
    }

    /// One `record_many` script call per shard of the batch (at most [`MAX_BATCH`] tasks
    /// each): all or nothing per shard (see `Shard::record_planned_batch`).
    async fn record_batch(&self, tasks: &[FailedTask]) -> Result<Vec<RecordOutcome>, StoreError> {
        let planned: Vec<(&FailedTask, RetryPlan)> =
            tasks.iter().map(|t| (t, RetryPlan::NotScheduled)).collect();
        self.record_split(&planned).await
    }

    async fn remove(&self, task_id: &TaskId) -> Result<bool, StoreError> {
        let removed = self.shards().of(task_id.as_str()).remove(task_id).await?;
        match self.shards().old_of(task_id) {
            Some(old) => Ok(old.remove(task_id).await? || removed),
            None => Ok(removed),
        }
    }
}

#[async_trait]
impl StoredPages for RedisStore {
    /// With at most one equality filter this is two round trips, as for `list`, and each
    /// record is the reply's bytes, checked only for its version and member (a byte
    /// comparison). Otherwise (several filters, or a record of an earlier version, missing
    /// or moved in the page) it answers from [`StatusStore::list`] and encodes the tasks.
    async fn list_stored(&self, query: &ListQuery) -> Result<StoredPage, StoreError> {
        self.stored_page(query).await
    }
}

/// The Redis store's capabilities: all of them. A `RedisStore` is a cheap handle (clone it
/// to keep one for the janitor or the tests).
impl From<RedisStore> for Stores {
    fn from(store: RedisStore) -> Self {
        let store = Arc::new(store);
        Stores::new("redis", store.clone())
            .with_stats(store.clone())
            .with_stored(store.clone())
            .with_retries(store.clone())
            .with_notify(store.clone())
            .with_audit(store.clone())
            .with_breaker(store.clone())
            .with_replays(store.clone())
            .with_files(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use failed_tasks_testkit::RedisServer;

    async fn store_on(server: &RedisServer) -> RedisStore {
        let config = RedisConfig {
            url: server.url(),
            command_timeout: Duration::from_millis(500),
            ..RedisConfig::default()
        };
        let store = RedisStore::connect(config).await.expect("connect");
        assert!(store.wait_connected(Duration::from_secs(10)).await);
        store
    }

    fn shard(store: &RedisStore) -> &Shard {
        &store.shards().write()[0]
    }

    fn lost() -> StoreError {
        StoreError::Timeout("running the record_many script: no answer".into())
    }

    /// A batch whose answer was lost but whose receipt is there was applied: its flags are
    /// the answer.
    #[tokio::test]
    async fn a_receipt_settles_a_lost_answer_as_applied() {
        let server = RedisServer::start();
        let store = store_on(&server).await;
        let receipt = store.keys().batch_receipt("t1");
        server.cli(&["SET", &receipt, "101"]);
        let far = shard(&store).redis_now_ms().await.unwrap() + 60_000;
        let flags = shard(&store).settle_batch(&receipt, far, 3, lost()).await;
        assert_eq!(flags, Ok(vec![1, 0, 1]));
    }

    /// No receipt once Redis's clock is past the batch's deadline: it was not applied and
    /// never will be, so the original error stands.
    #[tokio::test]
    async fn no_receipt_after_the_deadline_settles_as_not_stored() {
        let server = RedisServer::start();
        let store = store_on(&server).await;
        let past = shard(&store).redis_now_ms().await.unwrap() - 1;
        let receipt = store.keys().batch_receipt("t2");
        let answer = shard(&store).settle_batch(&receipt, past, 3, lost()).await;
        assert_eq!(answer, Err(lost()));
    }

    /// Redis gone: the store cannot tell, says so, and stops trying within two command
    /// timeouts (plus the last attempt's).
    #[tokio::test]
    async fn an_unreachable_redis_leaves_the_outcome_unknown_within_bounds() {
        let mut server = RedisServer::start();
        let store = store_on(&server).await;
        let far = shard(&store).redis_now_ms().await.unwrap() + 60_000;
        server.kill();
        let started = std::time::Instant::now();
        let receipt = store.keys().batch_receipt("t3");
        match shard(&store).settle_batch(&receipt, far, 3, lost()).await {
            Err(StoreError::Unavailable(msg)) => assert!(msg.contains(OUTCOME_UNKNOWN), "{msg}"),
            other => panic!("expected an unknown outcome, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }
}
