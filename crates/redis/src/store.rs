//! [`RedisStore`]: the [`StatusStore`] port on Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use failed_tasks_domain::stats::{minute_of, BucketTops, MinuteCounts, MINUTE_MS};
use failed_tasks_domain::{
    Cursor, ErrorPattern, FailedTask, GroupPage, GroupQuery, ListQuery, RetryPlan, RetryStatus,
    TaskFilter, TaskId, TaskType,
};
use failed_tasks_store::{
    FailedTaskPage, RecordOutcome, StatsStore, StatusStore, StoreError, StoredPage, StoredPages,
    Stores,
};
use fred::bytes::Bytes;
use fred::types::Value;

use crate::config::RedisConfig;
use crate::conn::Conn;
use crate::layout::{member_id, Keys, LexRange, MS_DIGITS};
use crate::scripts::Scripts;
use failed_tasks_store::stored;

/// Records skipped because they could not be decoded, since the process started.
static CORRUPT_SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Members read per round trip when walking an index with more than one equality filter.
const COMBINED_BATCH: usize = 500;

/// Most tasks [`RedisStore::record_batch`] takes: a batch is one `record_many` script call
/// (all or nothing), and a script blocks Redis while it runs; 1,000 tasks take about 10 ms
/// of Redis time (measured in `docs/redis-layout.md`).
pub const MAX_BATCH: usize = 1000;

/// The Redis status store. Cheap to clone: clones share one connection.
#[derive(Debug, Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) conn: Conn,
    pub(crate) keys: Keys,
    pub(crate) config: RedisConfig,
    /// This store's token for the retry scheduler's lock (one per store instance).
    pub(crate) scheduler_token: String,
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

/// A lazy walk over one index, newest first, optionally keeping only members that are also
/// in every one of `others`.
struct Walk {
    index: String,
    others: Vec<String>,
    max: String,
    min: String,
    done: bool,
}

impl Walk {
    async fn next_batch(&mut self, conn: &Conn, n: usize) -> Result<Vec<String>, StoreError> {
        if self.done || n == 0 {
            return Ok(Vec::new());
        }
        let members: Vec<String> = conn
            .cmd(
                "reading an index",
                "ZRANGE",
                crate::layout::zrange_bylex(&self.index, &self.max, &self.min, true, n as i64),
            )
            .await?;
        if members.len() < n {
            self.done = true;
        }
        if let Some(last) = members.last() {
            self.max = format!("({last}");
        }
        if self.others.is_empty() || members.is_empty() {
            return Ok(members);
        }
        let mut keep = vec![true; members.len()];
        let checks = self.others.iter().map(|other| {
            let mut args: Vec<Value> = Vec::with_capacity(members.len() + 1);
            args.push(other.as_str().into());
            args.extend(members.iter().map(|m| Value::from(m.as_str())));
            conn.cmd::<Vec<Value>>("checking an index", "ZMSCORE", args)
        });
        for scores in futures_util::future::join_all(checks).await {
            for (k, s) in keep.iter_mut().zip(scores?) {
                *k &= !matches!(s, Value::Null);
            }
        }
        Ok(members
            .into_iter()
            .zip(keep)
            .filter_map(|(m, k)| k.then_some(m))
            .collect())
    }
}

impl RedisStore {
    /// Build the store and start connecting in the background.
    ///
    /// Fails only on a configuration problem (bad URL or scheme, a prefix without exactly
    /// one hash tag); never because Redis is down: calls answer
    /// [`StoreError::Unavailable`] until the client has (re)connected by itself.
    pub async fn connect(config: RedisConfig) -> Result<RedisStore, StoreError> {
        let conn = Conn::start(&config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                keys: Keys::new(&config.key_prefix),
                config,
                scheduler_token: uuid::Uuid::new_v4().to_string(),
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
        self.inner.conn.is_connected()
    }

    /// Wait (at most `within`) until the client is connected and Redis answers; for
    /// start-up checks and tests. Gives up early when Redis's eviction policy forbids
    /// serving ([`StoreProblem::Evicting`](failed_tasks_store::StoreProblem::Evicting)).
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.is_connected() && self.inner.conn.ping().await.is_ok() {
                return true;
            }
            if self.condition().problem == Some(failed_tasks_store::StoreProblem::Evicting) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub(crate) fn conn(&self) -> &Conn {
        &self.inner.conn
    }

    /// The names of this store's keys.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// Index keys of the filter's equality conditions.
    pub(crate) fn equality_indexes(&self, f: &TaskFilter) -> Vec<String> {
        let k = self.keys();
        let mut out = Vec::new();
        if let Some(c) = f.category {
            out.push(k.category(c));
        }
        if let Some(t) = &f.task_type {
            out.push(k.task_type(t));
        }
        if let Some(c) = &f.client_id {
            out.push(k.client(c));
        }
        if let Some(c) = &f.error_code {
            out.push(k.error_code(c));
        }
        if let Some(s) = &f.signature {
            out.push(k.signature(s));
        }
        if let Some(r) = f.retry {
            out.push(k.retry_state(r));
        }
        out
    }

    /// The walk of a query with several equality filters, from `cursor`: over the smallest
    /// of their indexes, keeping the members present in every other one.
    async fn plan_combined(
        &self,
        indexes: Vec<String>,
        filter: &TaskFilter,
        cursor: Option<&Cursor>,
    ) -> Result<Walk, StoreError> {
        let range = LexRange::new(filter.since, filter.until, cursor.map(Cursor::position));
        let cards = indexes.iter().map(|i| {
            self.conn()
                .cmd::<u64>("sizing an index", "ZCARD", vec![i.as_str().into()])
        });
        let cards = futures_util::future::join_all(cards).await;
        let mut sized = Vec::with_capacity(indexes.len());
        for (i, c) in indexes.into_iter().zip(cards) {
            sized.push((c?, i));
        }
        sized.sort();
        let mut names = sized.into_iter().map(|(_, i)| i);
        let index = names.next().unwrap_or_else(|| self.keys().all());
        let others: Vec<String> = names.collect();
        Ok(Walk {
            index,
            others,
            max: range.max,
            min: range.min,
            done: false,
        })
    }

    /// Count the members of a combined-filter walk over the whole time window: O(M) in the
    /// size M of the narrowest index within the window, in batches of [`COMBINED_BATCH`].
    async fn count_combined(
        &self,
        filter: &TaskFilter,
        template: &Walk,
    ) -> Result<u64, StoreError> {
        let range = LexRange::new(filter.since, filter.until, None);
        let mut walk = Walk {
            index: template.index.clone(),
            others: template.others.clone(),
            max: range.max,
            min: range.min,
            done: false,
        };
        let mut total = 0u64;
        while !walk.done {
            total += walk.next_batch(self.conn(), COMBINED_BATCH).await?.len() as u64;
        }
        Ok(total)
    }

    /// Load and check the records of `members`, in order.
    async fn load(&self, members: &[String]) -> Result<Vec<Loaded>, StoreError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Value> = members
            .iter()
            .map(|m| Value::from(self.keys().record(member_id(m).unwrap_or_default())))
            .collect();
        let values: Vec<Value> = self.conn().cmd("reading records", "MGET", keys).await?;
        Ok(self.check(members, values))
    }

    /// Decode the records read for `members` (same order) and check that each still belongs
    /// to its index entry.
    pub(crate) fn check(&self, members: &[String], values: Vec<Value>) -> Vec<Loaded> {
        let mut out = Vec::with_capacity(members.len());
        for (m, v) in members.iter().zip(values) {
            let key = || self.keys().record(member_id(m).unwrap_or_default());
            let text = match &v {
                Value::Null => {
                    out.push(Loaded::Missing);
                    continue;
                }
                // Borrow the reply's bytes: no copy before decoding.
                Value::Bytes(b) => std::str::from_utf8(b).ok(),
                Value::String(s) => Some(&**s),
                _ => None,
            };
            let loaded = match text {
                None => {
                    note_corrupt(&key(), "record is not UTF-8 text");
                    Loaded::Corrupt
                }
                Some(text) => match stored::decode(text) {
                    Ok((task, status)) if is_member_of(m, &task) => Loaded::Task(task, status),
                    // The record moved (re-recorded over a corrupt one): a stale entry.
                    Ok(_) => Loaded::Missing,
                    Err(reason) => {
                        note_corrupt(&key(), &reason);
                        Loaded::Corrupt
                    }
                },
            };
            out.push(loaded);
        }
        out
    }

    /// The first page of a walk over one index, with the total: `ZLEXCOUNT` and
    /// `ZRANGE … BYLEX REV LIMIT` sent together (the client pipelines them: one round trip),
    /// then `MGET` of the records. Two round trips, but no Lua: a script that returns the
    /// records costs Redis about 4x the CPU of plain commands (copying every value into Lua
    /// and back), which caps pages per second on Redis's single thread.
    async fn first_page(
        &self,
        index: &str,
        total: &LexRange,
        walk: &LexRange,
        n: usize,
    ) -> Result<(u64, Vec<Bytes>, Vec<Value>), StoreError> {
        // Without bounds, the cheaper forms: ZCARD is O(1), and a range by rank skips the
        // byte comparisons of a lex range (all scores are 0, so rank order is lex order).
        let count = if total.min == "-" && total.max == "+" {
            ("ZCARD", vec![index.into()])
        } else {
            (
                "ZLEXCOUNT",
                vec![
                    index.into(),
                    total.min.as_str().into(),
                    total.max.as_str().into(),
                ],
            )
        };
        let range_args = if walk.min == "-" && walk.max == "+" {
            vec![
                index.into(),
                0i64.into(),
                (n as i64 - 1).into(),
                "REV".into(),
            ]
        } else {
            crate::layout::zrange_bylex(index, &walk.max, &walk.min, true, n as i64)
        };
        // Members as the reply's bytes: no UTF-8 check or copy per member.
        let (total, members): (u64, Vec<Bytes>) = self
            .conn()
            .cmd_pair(
                "counting and reading an index",
                count,
                ("ZRANGE", range_args),
            )
            .await?;
        if members.is_empty() {
            return Ok((total, members, Vec::new()));
        }
        // Every record key in one allocation, each key a slice of it.
        let prefix = self.keys().record_prefix();
        let size: usize = members.iter().map(|m| prefix.len() + m.len()).sum();
        let mut buf = fred::bytes::BytesMut::with_capacity(size);
        let keys: Vec<Value> = members
            .iter()
            .map(|m| {
                buf.extend_from_slice(prefix.as_bytes());
                buf.extend_from_slice(m.get(MS_DIGITS + 1..).unwrap_or_default());
                Value::Bytes(buf.split().freeze())
            })
            .collect();
        let values: Vec<Value> = self.conn().cmd("reading records", "MGET", keys).await?;
        if values.len() != members.len() {
            return Err(StoreError::Internal(format!(
                "MGET answered {} values for {} keys",
                values.len(),
                members.len()
            )));
        }
        Ok((total, members, values))
    }

    /// [`first_page`](Self::first_page) of `query` on `index` (its time window, from its
    /// cursor), with the walk's bounds.
    async fn first_page_of(
        &self,
        index: &str,
        query: &ListQuery,
        n: usize,
    ) -> Result<(LexRange, u64, Vec<Bytes>, Vec<Value>), StoreError> {
        let f = &query.filter;
        let range = LexRange::new(
            f.since,
            f.until,
            query.cursor.as_ref().map(Cursor::position),
        );
        let total_range = LexRange::new(f.since, f.until, None);
        let (total, members, values) = self.first_page(index, &total_range, &range, n).await?;
        Ok((range, total, members, values))
    }

    /// Keys and arguments of the `record` script for one task with its retry plan (also one
    /// task's share of `record_many`).
    pub(crate) fn record_call(
        &self,
        task: &FailedTask,
        plan: RetryPlan,
    ) -> ([Value; 7], [Value; 4]) {
        let k = self.keys();
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
        let cfg = &self.inner.config;
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
            .saturating_add(millis_of(self.conn().timeout()))
            .saturating_sub(1))
    }

    /// Redis's clock (`TIME`), in ms since the epoch.
    async fn redis_now_ms(&self) -> Result<i64, StoreError> {
        let time: Vec<String> = self
            .conn()
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
}

impl RedisStore {
    /// One `record_many` script call for the whole batch, each task with its retry plan (at
    /// most [`MAX_BATCH`] tasks): all or nothing, as `record_batch`; the plans are scheduled
    /// in the same script.
    pub(crate) async fn record_planned_batch(
        &self,
        tasks: &[(FailedTask, RetryPlan)],
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
            .keys()
            .batch_receipt(&uuid::Uuid::new_v4().simple().to_string());
        let mut keys = Vec::with_capacity(tasks.len() * 7);
        let mut args = Vec::with_capacity(4 + tasks.len() * 4);
        args.push(Value::from(self.keys().prefix()));
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
        self.conn().usable("recording a batch").await?;
        let flags: Vec<i64> = match self
            .conn()
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
}

/// How long a `record_many` receipt is kept: far longer than any caller settles a batch.
const RECEIPT_LIFETIME: Duration = Duration::from_secs(600);

impl RedisStore {
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
        let until = tokio::time::Instant::now() + self.conn().timeout() * 2;
        loop {
            if let Ok(now) = self.redis_now_ms().await {
                let flags: Result<Option<String>, StoreError> = self
                    .conn()
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

/// Part of the message of an error whose batch may or may not have been stored (whole, or
/// not at all): Redis did not answer in time to tell.
pub const OUTCOME_UNKNOWN: &str = "outcome unknown";

/// A record read for `member`, as the reply's bytes (no copy), when it is a current
/// ([`stored::VERSION`]) record whose header names that member; `None` otherwise (the
/// decoded path then decides). The rest of the header is checked by whoever renders it
/// ([`stored::Record::parse`]).
pub(crate) fn stored_record(member: &[u8], value: Value) -> Option<Bytes> {
    let b = match value {
        Value::Bytes(b) => b,
        Value::String(s) => s.into_inner(),
        _ => return None,
    };
    let rest = b
        .strip_prefix(stored::VERSION.as_bytes())?
        .strip_prefix(b"\t")?;
    let after = rest.strip_prefix(member)?;
    (after.first() == Some(&b'\t')).then_some(b)
}

/// Whether `member` is the index member of `task`, without building the member string.
fn is_member_of(member: &str, task: &FailedTask) -> bool {
    member_id(member) == Some(task.task_id().as_str())
        && member
            .get(..MS_DIGITS)
            .and_then(|ms| ms.parse::<i64>().ok())
            == Some(task.fail_time().unix_millis())
        && member.as_bytes().get(MS_DIGITS) == Some(&b':')
}

fn outcome(created: i64) -> RecordOutcome {
    if created == 1 {
        RecordOutcome::Created
    } else {
        RecordOutcome::Updated
    }
}

pub(crate) enum Loaded {
    Task(FailedTask, RetryStatus),
    /// No record, or one that no longer belongs to this index entry.
    Missing,
    Corrupt,
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

    async fn list(&self, query: &ListQuery) -> Result<FailedTaskPage, StoreError> {
        let filter = &query.filter;
        let size = query.page_size.as_usize();
        let want = size + 1;
        let mut tasks: Vec<FailedTask> = Vec::with_capacity(want);
        let mut retry: Vec<RetryStatus> = Vec::with_capacity(want);
        let mut corrupt = 0u64;
        let mut missing = 0u64;
        let mut absorb = |loaded: Vec<Loaded>, tasks: &mut Vec<FailedTask>| {
            for loaded in loaded {
                match loaded {
                    Loaded::Task(t, s) if filter.matches(&t) && filter.matches_status(&s) => {
                        tasks.push(t);
                        retry.push(s);
                    }
                    Loaded::Task(..) | Loaded::Missing => missing += 1,
                    Loaded::Corrupt => corrupt += 1,
                }
                if tasks.len() >= want {
                    break;
                }
            }
        };

        let mut indexes = self.equality_indexes(filter);
        let (mut walk, total) = if indexes.len() <= 1 {
            // At most one equality filter: one index answers it; the total and the first
            // page take two round trips.
            let index = indexes.pop().unwrap_or_else(|| self.keys().all());
            let (range, total, members, values) = self.first_page_of(&index, query, want).await?;
            // (A member that is not UTF-8 is none of ours: it matches no record and is
            // skipped like any stale entry.)
            let members: Vec<String> = members
                .iter()
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .collect();
            let walk = Walk {
                index,
                others: Vec::new(),
                max: members.last().map_or(range.max, |last| format!("({last}")),
                min: range.min,
                done: members.len() < want,
            };
            absorb(self.check(&members, values), &mut tasks);
            (walk, total)
        } else {
            let walk = self
                .plan_combined(indexes, filter, query.cursor.as_ref())
                .await?;
            let total = self.count_combined(filter, &walk).await?;
            (walk, total)
        };
        let combined = !walk.others.is_empty();

        // Entries skipped above (or a combined walk) need further batches.
        while tasks.len() < want && !walk.done {
            let need = want - tasks.len();
            let n = if combined {
                need.max(COMBINED_BATCH)
            } else {
                need
            };
            let batch = walk.next_batch(self.conn(), n).await?;
            absorb(self.load(&batch).await?, &mut tasks);
        }
        let next_cursor = if tasks.len() > size {
            tasks.truncate(size);
            tasks.last().map(|t| Cursor::after(t.sort_key()))
        } else {
            None
        };
        retry.truncate(tasks.len());
        if missing > 0 {
            tracing::debug!(missing, "skipped index entries without a matching record");
        }
        Ok(FailedTaskPage {
            // Skipped entries are counted by the indexes; leave them out of the total too.
            total: total.saturating_sub(corrupt + missing),
            tasks,
            next_cursor,
            skipped_corrupt: corrupt,
            retry,
        })
    }

    async fn get(&self, task_id: &TaskId) -> Result<Option<FailedTask>, StoreError> {
        let key = self.keys().record(task_id.as_str());
        let value: Value = self
            .conn()
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

    /// One `record` script call (atomic). Unlike `record_batch` it carries no deadline, to
    /// save the `TIME` round trip: a call given up on a paused Redis may still be applied
    /// when Redis resumes. Recording is an upsert, so repeating it is harmless.
    async fn record(&self, task: &FailedTask) -> Result<RecordOutcome, StoreError> {
        let (keys, args) = self.record_call(task, RetryPlan::NotScheduled);
        let mut full_args = Vec::with_capacity(5);
        full_args.push(Value::from(self.keys().prefix()));
        full_args.extend(args);
        let created: i64 = self
            .conn()
            .eval(&Scripts::get().record, keys.into(), full_args)
            .await?;
        Ok(outcome(created))
    }

    /// One `record_many` script call for the whole batch (at most [`MAX_BATCH`] tasks): all
    /// or nothing. A refused batch (store full, a deadline passed, Redis gone) stored none of
    /// its tasks. An answer lost after the script was sent is settled by the batch's receipt
    /// (see `settle_batch`); only when Redis cannot tell in time is the error one of unknown
    /// outcome ([`OUTCOME_UNKNOWN`]: whole or not at all, safe to send again).
    async fn record_batch(&self, tasks: &[FailedTask]) -> Result<Vec<RecordOutcome>, StoreError> {
        let planned: Vec<(FailedTask, RetryPlan)> = tasks
            .iter()
            .map(|t| (t.clone(), RetryPlan::NotScheduled))
            .collect();
        self.record_planned_batch(&planned).await
    }

    async fn remove(&self, task_id: &TaskId) -> Result<bool, StoreError> {
        let k = self.keys();
        let removed: i64 = self
            .conn()
            .eval(
                &Scripts::get().remove,
                vec![k.record(task_id.as_str()).into()],
                vec![k.prefix().into()],
            )
            .await?;
        Ok(removed == 1)
    }
}

#[async_trait]
impl StatsStore for RedisStore {
    /// One `HMGET` of the range's minute fields per hour (`P:cnt:HOUR`), pipelined:
    /// O(minutes in the range), whatever the number of stored tasks or distinct values.
    async fn failure_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<MinuteCounts>, StoreError> {
        self.read_failure_counts(from_minute, to_minute).await
    }

    /// Three `ZRANGE … REV LIMIT` per bucket (`P:top:m:MINUTE:D`, `P:top:h:HOUR:D`) and one
    /// `HMGET` of untracked fields per hour, pipelined: O(buckets x `READ_PER_BUCKET`).
    async fn failure_tops(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<BucketTops>, StoreError> {
        self.read_failure_tops(from_minute, to_minute).await
    }

    async fn record_attempts(
        &self,
        task_type: &TaskType,
        minute: i64,
        count: u64,
    ) -> Result<(), StoreError> {
        self.add_attempts(task_type, minute, count).await
    }

    /// One `HGETALL` per hour of the range (`P:att:HOUR`, one field per minute and task
    /// type), pipelined.
    async fn attempt_counts(
        &self,
        from_minute: i64,
        to_minute: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        self.read_attempt_counts(from_minute, to_minute).await
    }

    /// `ZRANGE P:groups … BYLEX REV LIMIT` from the cursor, then four O(log N) reads per
    /// group of the page, pipelined: O(log G + page · log N).
    async fn list_groups(&self, query: &GroupQuery) -> Result<GroupPage, StoreError> {
        self.read_groups(query).await
    }
}

#[async_trait]
impl StoredPages for RedisStore {
    /// With at most one equality filter this is two round trips, as for `list`, and each
    /// record is the reply's bytes, checked only for its version and member (a byte
    /// comparison). Otherwise (several filters, or a record of an earlier version, missing
    /// or moved in the page) it answers from [`StatusStore::list`] and encodes the tasks.
    async fn list_stored(&self, query: &ListQuery) -> Result<StoredPage, StoreError> {
        let filter = &query.filter;
        let mut indexes = self.equality_indexes(filter);
        if indexes.len() <= 1 {
            let size = query.page_size.as_usize();
            let index = indexes.pop().unwrap_or_else(|| self.keys().all());
            // From the start of the range the count says whether a page follows, so the
            // page reads exactly `size` members and records (as the raw floor does);
            // after a cursor one more is read to know.
            let from_start = query.cursor.is_none();
            let n = if from_start { size } else { size + 1 };
            let (_, total, members, values) = self.first_page_of(&index, query, n).await?;
            let mut records = Vec::with_capacity(members.len());
            for (m, v) in members.iter().zip(values) {
                match stored_record(m, v) {
                    Some(r) => records.push(r),
                    None => break,
                }
            }
            if records.len() == members.len() {
                let more = if from_start {
                    total > members.len() as u64 && members.len() == size
                } else {
                    records.len() > size
                };
                let next_cursor = if more {
                    records.truncate(size);
                    members
                        .get(size - 1)
                        .and_then(|m| std::str::from_utf8(m).ok())
                        .and_then(crate::layout::parse_member)
                        .map(Cursor::after)
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

/// The Redis store's capabilities: all of them. A `RedisStore` is a cheap handle (clone it
/// to keep one for the janitor or the tests).
impl From<RedisStore> for Stores {
    fn from(store: RedisStore) -> Self {
        let store = Arc::new(store);
        Stores::new("redis", store.clone())
            .with_stats(store.clone())
            .with_stored(store.clone())
            .with_retries(store)
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
        let far = store.redis_now_ms().await.unwrap() + 60_000;
        let flags = store.settle_batch(&receipt, far, 3, lost()).await;
        assert_eq!(flags, Ok(vec![1, 0, 1]));
    }

    /// No receipt once Redis's clock is past the batch's deadline: it was not applied and
    /// never will be, so the original error stands.
    #[tokio::test]
    async fn no_receipt_after_the_deadline_settles_as_not_stored() {
        let server = RedisServer::start();
        let store = store_on(&server).await;
        let past = store.redis_now_ms().await.unwrap() - 1;
        let receipt = store.keys().batch_receipt("t2");
        let answer = store.settle_batch(&receipt, past, 3, lost()).await;
        assert_eq!(answer, Err(lost()));
    }

    /// Redis gone: the store cannot tell, says so, and stops trying within two command
    /// timeouts (plus the last attempt's).
    #[tokio::test]
    async fn an_unreachable_redis_leaves_the_outcome_unknown_within_bounds() {
        let mut server = RedisServer::start();
        let store = store_on(&server).await;
        let far = store.redis_now_ms().await.unwrap() + 60_000;
        server.kill();
        let started = std::time::Instant::now();
        let receipt = store.keys().batch_receipt("t3");
        match store.settle_batch(&receipt, far, 3, lost()).await {
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
