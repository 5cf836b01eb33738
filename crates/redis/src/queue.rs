//! [`RedisRetryQueue`]: the worker side of the retry streams, as a consumer of their group.
//!
//! Every shard has its own stream (the move from its due set into it is one script on its
//! slot). On each, `claim` is `XREADGROUP GROUP g c COUNT n BLOCK ms STREAMS key >`, `ack` is
//! `XACK`, `reclaim_stale` is `XAUTOCLAIM` from `0-0` (then `XPENDING` for the delivery
//! counts). With one shard a claim blocks on its stream; with several (on a cluster each
//! on its own slot, so one `XREADGROUP` cannot name them all) the streams are read in turn
//! without blocking. The queue has its own connection: a blocking read holds its connection
//! for the block time, which must not delay the store's other commands. The group is
//! created on first use (`XGROUP CREATE … 0 MKSTREAM`, from the stream's start, so requests
//! added before any worker joined are delivered too) and again when Redis lost it
//! (`NOGROUP`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::{
    ClientId, CodebasePath, ErrorCategory, ErrorCode, RetryFiles, RetryRequest, ScheduledBy,
    TaskId, TaskType, Timestamp,
};
use failed_tasks_store::{Delivery, RetryQueue, StoreError};
use fred::types::Value;

use crate::config::RedisConfig;
use crate::conn::Conn;
use crate::layout::{STREAM_FIELDS, STREAM_FILE_FIELDS};
use crate::shard::{Shard, Shards};

/// The longest a claim blocks, whatever it asks for.
pub const MAX_BLOCK: Duration = Duration::from_secs(10);

/// Most requests one call claims or reclaims.
pub const MAX_CLAIM: usize = 1_000;

/// A worker's handle on the retry streams of every shard: one consumer of the configured
/// group on each, over one blocking connection. With one shard its delivery ids are the
/// stream's entry ids; with several, `{shard}/{entry id}` (which its `ack` understands).
///
/// With several shards, `claim` reads the shards in turn (starting at a rotating shard, so
/// none starves) without blocking; when none has anything it sleeps briefly (10 ms,
/// doubling up to 100 ms) and reads again until `block` has passed: a new request waits at
/// most about 100 ms more than on one stream.
#[derive(Debug)]
pub struct RedisRetryQueue {
    streams: Vec<Stream>,
    consumer: String,
    next: AtomicUsize,
    lease: Duration,
}

/// One shard's stream, as the queue's consumer of its group.
#[derive(Debug)]
struct Stream {
    shard: Shard,
    /// The stream's key (`retry_stream_key`, or `{prefix}:retries`).
    key: String,
    group_ready: AtomicBool,
}

/// Field/value pairs of a stream entry (RESP2 flat array or RESP3 map).
fn field_pairs(v: Value) -> Vec<(String, String)> {
    match v {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let (Some(k), Some(v)) = (k.as_string(), v.as_string()) {
                    out.push((k, v));
                }
            }
            out
        }
        Value::Map(m) => m
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_string()?)))
            .collect(),
        _ => Vec::new(),
    }
}

/// `[[id, fields], …]` as `(id, fields)`; entries that were deleted (nil) are left out.
fn entries(v: Value) -> Vec<(String, Vec<(String, String)>)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|e| {
            let Value::Array(mut parts) = e else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let id = parts.pop()?.as_string()?;
            Some((id, field_pairs(fields)))
        })
        .collect()
}

/// The entries of an `XREADGROUP` reply for one stream (nil when the block timed out).
fn read_reply(v: Value) -> Vec<(String, Vec<(String, String)>)> {
    match v {
        Value::Array(streams) => streams
            .into_iter()
            .flat_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => kv.pop().map(entries).unwrap_or_default(),
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(m) => m.inner().into_values().flat_map(entries).collect(),
        _ => Vec::new(),
    }
}

/// A request from a stream entry's fields; the error names what is wrong.
pub(crate) fn parse_request(fields: &[(String, String)]) -> Result<RetryRequest, String> {
    let map: HashMap<&str, &str> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let get = |name: &str| {
        map.get(name)
            .copied()
            .ok_or_else(|| format!("field {name} is missing"))
    };
    let [task_id, task_type, client_id, codebase_path, attempt, error_code, category, due_at, by] =
        STREAM_FIELDS;
    let err = |e: failed_tasks_domain::ValidationError| e.to_string();
    Ok(RetryRequest {
        task_id: TaskId::parse(get(task_id)?).map_err(err)?,
        task_type: TaskType::parse(get(task_type)?).map_err(err)?,
        client_id: ClientId::parse(get(client_id)?).map_err(err)?,
        codebase_path: CodebasePath::parse(get(codebase_path)?).map_err(err)?,
        attempt: get(attempt)?
            .parse()
            .map_err(|_| format!("{attempt} is not a whole number"))?,
        error_code: ErrorCode::parse(get(error_code)?).map_err(err)?,
        error_category: ErrorCategory::parse(get(category)?).map_err(err)?,
        due_at: Timestamp::parse_rfc3339(due_at, get(due_at)?).map_err(err)?,
        scheduled_by: ScheduledBy::parse(get(by)?).map_err(err)?,
        files: parse_files(&map)?,
    })
}

/// The failed files an entry carries (`FailedFiles` with `Files` or `FilesKey`), if any.
fn parse_files(map: &HashMap<&str, &str>) -> Result<Option<RetryFiles>, String> {
    let [files_key, files, failed_files] = STREAM_FILE_FIELDS;
    let Some(n) = map.get(failed_files) else {
        return Ok(None);
    };
    Ok(Some(RetryFiles {
        failed_files: n
            .parse()
            .map_err(|_| format!("{failed_files} is not a whole number"))?,
        paths: map.get(files).map(|p| {
            p.split('\n')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        }),
        files_key: map.get(files_key).map(|k| (*k).to_owned()),
    }))
}

impl RedisRetryQueue {
    /// A consumer named `consumer` (unique per worker, e.g. host and process id) of the
    /// retry stream of each of `config`'s shards (and, while resharding, of the old count's
    /// too) and its consumer group, on its own connection. Fails only on a configuration
    /// problem; calls answer `Unavailable` until Redis is reachable.
    pub async fn connect(config: &RedisConfig, consumer: &str) -> Result<Self, StoreError> {
        if consumer.is_empty() || consumer.chars().any(char::is_control) {
            return Err(StoreError::Rejected(
                "a retry consumer name must be non-empty text without control characters"
                    .to_owned(),
            ));
        }
        let conn = Conn::start_blocking(config, MAX_BLOCK)?;
        let streams = Shards::new(&conn, config)
            .into_readers()
            .into_iter()
            .map(|shard| Stream {
                key: shard.config.retry_stream(),
                shard,
                group_ready: AtomicBool::new(false),
            })
            .collect();
        Ok(Self {
            streams,
            consumer: consumer.to_owned(),
            next: AtomicUsize::new(0),
            lease: config.retry_consumer_lease,
        })
    }

    /// The configured lease (`retry_consumer_lease`): pass it to
    /// [`reclaim_stale`](RetryQueue::reclaim_stale).
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// This consumer's name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Wait (at most `within`) until the queue's connection answers.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        self.streams[0].shard.wait_answering(within).await
    }

    /// `d`'s ids as the queue hands them out: with several shards, prefixed by the shard.
    fn tag(&self, shard: usize, mut d: Vec<Delivery>) -> Vec<Delivery> {
        if self.streams.len() > 1 {
            for x in &mut d {
                x.id = format!("{shard}/{}", x.id);
            }
        }
        d
    }

    /// The shard and stream entry id of a delivery id handed out by [`tag`](Self::tag).
    fn untag<'a>(&self, id: &'a str) -> Option<(usize, &'a str)> {
        if self.streams.len() == 1 {
            return Some((0, id));
        }
        id.split_once('/')
            .and_then(|(s, rest)| Some((s.parse::<usize>().ok()?, rest)))
            .filter(|(s, _)| *s < self.streams.len())
    }

    /// One pass over the shards without blocking, from a rotating start, until `max` are
    /// claimed.
    async fn pass(&self, max: usize) -> Result<Vec<Delivery>, StoreError> {
        let n = self.streams.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut out = Vec::new();
        for k in 0..n {
            let i = (start + k) % n;
            let got = self.streams[i]
                .claim(&self.consumer, max - out.len(), Duration::ZERO)
                .await?;
            out.extend(self.tag(i, got));
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }
}

impl Stream {
    /// Create the consumer group (from the stream's start) unless it exists.
    async fn ensure_group(&self) -> Result<(), StoreError> {
        if self.group_ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        let created: Result<Value, StoreError> = self
            .shard
            .conn
            .cmd(
                "creating the retry consumer group",
                "XGROUP",
                vec![
                    "CREATE".into(),
                    self.key.as_str().into(),
                    self.group().into(),
                    "0".into(),
                    "MKSTREAM".into(),
                ],
            )
            .await;
        match created {
            Ok(_) => {}
            // (`BUSYGROUP` maps to Unavailable, like the transient `BUSY` it starts with.)
            Err(e) if e.to_string().contains("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        self.group_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Run `call`, re-creating the group once when Redis answers `NOGROUP` (a Redis that
    /// restarted without its data).
    async fn with_group<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        self.ensure_group().await?;
        match call().await {
            Err(StoreError::Rejected(msg)) if msg.contains("NOGROUP") => {
                self.group_ready.store(false, Ordering::Relaxed);
                self.ensure_group().await?;
                call().await
            }
            other => other,
        }
    }

    /// Turn stream entries into deliveries; malformed entries are acknowledged (so they do
    /// not come back forever) and logged.
    async fn deliveries(
        &self,
        raw: Vec<(String, Vec<(String, String)>)>,
        counts: &HashMap<String, u64>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut out = Vec::with_capacity(raw.len());
        let mut bad = Vec::new();
        for (id, fields) in raw {
            match parse_request(&fields) {
                Ok(request) => out.push(Delivery {
                    deliveries: counts.get(&id).copied().unwrap_or(1),
                    id,
                    request,
                }),
                Err(reason) => {
                    tracing::warn!(stream = %self.key, id = %id, %reason, "dropping a malformed retry request");
                    bad.push(id);
                }
            }
        }
        if !bad.is_empty() {
            self.ack(&bad).await?;
        }
        Ok(out)
    }

    /// The delivery counts of pending entries `first..=last` of this consumer.
    async fn delivery_counts(
        &self,
        consumer: &str,
        first: &str,
        last: &str,
        n: usize,
    ) -> Result<HashMap<String, u64>, StoreError> {
        let v: Value = self
            .shard
            .conn
            .cmd(
                "reading delivery counts",
                "XPENDING",
                vec![
                    self.key.as_str().into(),
                    self.group().into(),
                    first.into(),
                    last.into(),
                    i64::try_from(n).unwrap_or(i64::MAX).into(),
                    consumer.into(),
                ],
            )
            .await?;
        let Value::Array(rows) = v else {
            return Ok(HashMap::new());
        };
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let Value::Array(parts) = row else {
                    return None;
                };
                let id = parts.first()?.as_string()?;
                let count = parts.get(3)?.as_u64()?;
                Some((id, count))
            })
            .collect())
    }

    /// The workers' consumer group.
    fn group(&self) -> &str {
        &self.shard.config.retry_consumer_group
    }

    /// `XREADGROUP … COUNT max BLOCK block … >` (a zero `block` waits 1 ms).
    async fn claim(
        &self,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>, StoreError> {
        let raw = self
            .with_group(|| async {
                let v: Value = self
                    .shard
                    .conn
                    .cmd_blocking(
                        "claiming retry requests",
                        "XREADGROUP",
                        vec![
                            "GROUP".into(),
                            self.group().into(),
                            consumer.into(),
                            "COUNT".into(),
                            i64::try_from(max).unwrap_or(1).into(),
                            "BLOCK".into(),
                            i64::try_from(block.as_millis()).unwrap_or(0).max(1).into(),
                            "STREAMS".into(),
                            self.key.as_str().into(),
                            ">".into(),
                        ],
                        block,
                    )
                    .await?;
                Ok(read_reply(v))
            })
            .await?;
        self.deliveries(raw, &HashMap::new()).await
    }

    async fn ack(&self, ids: &[String]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut args: Vec<Value> = Vec::with_capacity(ids.len() + 2);
        args.push(self.key.as_str().into());
        args.push(self.group().into());
        args.extend(ids.iter().map(|id| Value::from(id.as_str())));
        self.with_group(|| {
            self.shard
                .conn
                .cmd("acknowledging retry requests", "XACK", args.clone())
        })
        .await
    }

    /// `XAUTOCLAIM … min-idle lease …` from `0-0`, following its cursor (at most 10 calls),
    /// then `XPENDING` for the delivery counts; the reclaim counter grows by the number
    /// reclaimed.
    async fn reclaim_stale(
        &self,
        consumer: &str,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut raw = Vec::new();
        let mut cursor = "0-0".to_owned();
        for _ in 0..10 {
            let start = cursor.clone();
            let want = max - raw.len();
            let v: Vec<Value> = self
                .with_group(|| {
                    self.shard.conn.cmd(
                        "reclaiming stale retry requests",
                        "XAUTOCLAIM",
                        vec![
                            self.key.as_str().into(),
                            self.group().into(),
                            consumer.into(),
                            i64::try_from(lease.as_millis()).unwrap_or(i64::MAX).into(),
                            start.as_str().into(),
                            "COUNT".into(),
                            i64::try_from(want).unwrap_or(1).into(),
                        ],
                    )
                })
                .await?;
            let mut parts = v.into_iter();
            let next = parts.next().and_then(|c| c.as_string()).unwrap_or_default();
            raw.extend(parts.next().map(entries).unwrap_or_default());
            if next.is_empty() || next == "0-0" || raw.len() >= max {
                break;
            }
            cursor = next;
        }
        if raw.is_empty() {
            return Ok(Vec::new());
        }
        let first = raw.first().map(|(id, _)| id.clone()).unwrap_or_default();
        let last = raw.last().map(|(id, _)| id.clone()).unwrap_or_default();
        // Entries come in id order; the range holds only this consumer's pending ones.
        let counts = self
            .delivery_counts(consumer, &first, &last, raw.len() * 2 + 10)
            .await?;
        let n = raw.len() as i64;
        let _: i64 = self
            .shard
            .conn
            .cmd(
                "counting reclaimed requests",
                "INCRBY",
                vec![self.shard.keys.reclaimed().into(), n.into()],
            )
            .await?;
        self.deliveries(raw, &counts).await
    }
}

#[async_trait]
impl RetryQueue for RedisRetryQueue {
    /// `XREADGROUP … COUNT max BLOCK block … >` on the one stream; with several shards,
    /// their streams read in turn without blocking, pausing between passes, until `block`
    /// has passed. `block` is capped at 10 s and `max` at 1,000.
    async fn claim(&self, max: usize, block: Duration) -> Result<Vec<Delivery>, StoreError> {
        let max = max.clamp(1, MAX_CLAIM);
        let block = block.min(MAX_BLOCK);
        if let [only] = self.streams.as_slice() {
            // One stream: Redis blocks the read itself.
            return only.claim(&self.consumer, max, block).await;
        }
        let until = tokio::time::Instant::now() + block;
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

    /// `XACK` on each delivery's stream.
    async fn ack(&self, ids: &[String]) -> Result<u64, StoreError> {
        let mut per: Vec<Vec<String>> = vec![Vec::new(); self.streams.len()];
        for id in ids {
            match self.untag(id) {
                Some((s, rest)) => per[s].push(rest.to_owned()),
                None => {
                    return Err(StoreError::Rejected(format!(
                        "retry delivery id {id:?} does not name a shard ({{shard}}/{{entry id}})"
                    )))
                }
            }
        }
        let mut acked = 0;
        for (stream, ids) in self.streams.iter().zip(&per) {
            acked += stream.ack(ids).await?;
        }
        Ok(acked)
    }

    /// `XAUTOCLAIM … min-idle lease …` from `0-0` on each stream in turn, following its
    /// cursor (at most 10 calls), then `XPENDING` for the delivery counts; the reclaim
    /// counter grows by the number reclaimed.
    async fn reclaim_stale(
        &self,
        lease: Duration,
        max: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let max = max.clamp(1, MAX_CLAIM);
        let mut out = Vec::new();
        for (i, stream) in self.streams.iter().enumerate() {
            let got = stream
                .reclaim_stale(&self.consumer, lease, max - out.len())
                .await?;
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

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn requests_from_entries() {
        let good = [
            ("TaskId", "t1"),
            ("TaskType", "embedding"),
            ("ClientId", "c1"),
            ("CodebasePath", ""),
            ("Attempt", "2"),
            ("ErrorCode", "TIMEOUT_ERROR"),
            ("ErrorCategory", "service_timeout"),
            ("DueAt", "2025-01-24T09:15:02Z"),
            ("ScheduledBy", "policy"),
        ];
        let r = parse_request(&fields(&good)).unwrap();
        assert_eq!((r.task_id.as_str(), r.attempt), ("t1", 2));
        assert_eq!(r.due_at.to_rfc3339(), "2025-01-24T09:15:02Z");
        for (i, bad) in [
            ("Attempt", "two"),
            ("ErrorCategory", "bogus"),
            ("DueAt", "soon"),
            ("ScheduledBy", "cron"),
            ("TaskId", ""),
        ]
        .into_iter()
        .enumerate()
        {
            let mut f = good.to_vec();
            let slot = f.iter_mut().find(|(k, _)| *k == bad.0).unwrap();
            slot.1 = bad.1;
            assert!(parse_request(&fields(&f)).is_err(), "case {i}: {bad:?}");
        }
        let missing = &good[1..];
        assert!(parse_request(&fields(missing))
            .unwrap_err()
            .contains("TaskId"));
    }
}
