//! Retention: trim failed tasks beyond the maximum age and count, archiving them first.
//!
//! One run ([`RedisStore::trim_once`]) goes through the shards one after the other. In each
//! it takes the shard's Redis lock (`SET NX PX` with a random token; released only by its
//! owner through a compare-and-delete script), so several server processes may run janitors
//! and still trim each task once. It then removes, in batches of at most [`BATCH`] members
//! per script call, first every task older than `max_age`, then the oldest tasks beyond the
//! shard's share of `max_count`. With an archive directory configured, each batch is
//! appended as JSON lines to `failed-tasks-YYYY-MM-DD.jsonl` (UTC day of the trim) and
//! flushed to disk *before* the batch is removed; a failed archive write stops the run
//! without removing anything of that batch. A task re-recorded between the archive write and
//! the removal stays stored (and is archived twice at worst): archiving is at-least-once.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use failed_tasks_domain::Timestamp;
use failed_tasks_store::StoreError;
use fred::types::Value;

use crate::layout::{member_id, LexRange};
use crate::scripts::Scripts;
use crate::shard::Shard;
use crate::store::{millis_of, now_ms, value_text, RedisStore};
use failed_tasks_store::stored;

/// Most members trimmed by one script call.
pub const BATCH: usize = 500;

/// Most batches of one run, so a run (and the lock) stays short; the next run goes on.
const MAX_BATCHES_PER_RUN: usize = 200;

/// What one janitor run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrimReport {
    /// Another janitor held the lock; nothing was done.
    pub locked_out: bool,
    /// Records removed because they were older than `max_age`.
    pub removed_by_age: u64,
    /// Records removed because there were more than `max_count`.
    pub removed_by_count: u64,
    /// Lines appended to the archive.
    pub archived: u64,
}

/// Log one janitor run: what it trimmed at info level when anything, every run at debug
/// (how tests, and curious operators, see that retention ran without waiting on its timing).
fn log_run(run: &Result<TrimReport, StoreError>) {
    match run {
        Ok(r) => {
            if r.removed_by_age + r.removed_by_count > 0 {
                tracing::info!(
                    removed_by_age = r.removed_by_age,
                    removed_by_count = r.removed_by_count,
                    archived = r.archived,
                    "janitor trimmed failed tasks"
                );
            }
            tracing::debug!(
                locked_out = r.locked_out,
                removed_by_age = r.removed_by_age,
                removed_by_count = r.removed_by_count,
                "janitor run finished"
            );
        }
        Err(e) => tracing::warn!(error = %e, "janitor run failed"),
    }
}

/// The running janitor; dropping it stops it after the run in progress.
pub type JanitorHandle = failed_tasks_store::Background;

impl RedisStore {
    /// Run [`trim_once`](Self::trim_once) every `janitor_interval` in a background task until
    /// the handle is dropped or stopped. Errors are logged and the next tick tries again.
    pub fn spawn_janitor(&self) -> JanitorHandle {
        let store = self.clone();
        let every = self
            .config()
            .retention
            .janitor_interval
            .max(Duration::from_millis(10));
        JanitorHandle::every(every, move || {
            let store = store.clone();
            async move {
                log_run(&store.trim_once(now_ms()).await);
                std::ops::ControlFlow::Continue(())
            }
        })
    }

    /// One janitor run as of `now_ms` (milliseconds since the epoch) over every shard, one
    /// after the other, each under its own lock (`max_count` is applied per shard,
    /// `ceil(max_count / shards)` each); the reports added up.
    pub async fn trim_once(&self, now_ms: i64) -> Result<TrimReport, StoreError> {
        let mut total = TrimReport {
            locked_out: true,
            ..TrimReport::default()
        };
        for shard in self.shards().readers() {
            let r = shard.trim_once(now_ms).await?;
            total.locked_out &= r.locked_out;
            total.removed_by_age += r.removed_by_age;
            total.removed_by_count += r.removed_by_count;
            total.archived += r.archived;
        }
        if total.removed_by_age + total.removed_by_count > 0 {
            let entry = failed_tasks_store::audit::AuditEntry::janitor_trim(
                Timestamp::saturating_from_unix_millis(now_ms),
                total.removed_by_age,
                total.removed_by_count,
            );
            // The trim is done: an entry that cannot be appended is logged, not returned.
            if let Err(e) = failed_tasks_store::AuditStore::audit_append(self, &entry).await {
                tracing::warn!(error = %e, "the janitor's audit entry could not be appended");
            }
        }
        Ok(total)
    }
}

impl Shard {
    /// One janitor run of this shard as of `now_ms` (milliseconds since the epoch).
    async fn trim_once(&self, now_ms: i64) -> Result<TrimReport, StoreError> {
        let conn = &self.conn;
        let keys = &self.keys;
        let lock = keys.janitor_lock();
        let token = uuid::Uuid::new_v4().to_string();
        let lock_ttl = (conn.timeout() * 10).max(Duration::from_secs(30));
        let got: Value = conn
            .cmd(
                "taking the janitor lock",
                "SET",
                vec![
                    lock.as_str().into(),
                    token.as_str().into(),
                    "NX".into(),
                    "PX".into(),
                    millis_of(lock_ttl).into(),
                ],
            )
            .await?;
        if matches!(got, Value::Null) {
            return Ok(TrimReport {
                locked_out: true,
                ..TrimReport::default()
            });
        }
        let result = self.trim_locked(now_ms, &lock, &token, lock_ttl).await;
        let released: Result<i64, StoreError> = conn
            .eval(
                &Scripts::get().unlock,
                vec![lock.as_str().into()],
                vec![token.as_str().into()],
            )
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "could not release the janitor lock; it expires by itself");
        }
        result
    }

    async fn trim_locked(
        &self,
        now_ms: i64,
        lock: &str,
        token: &str,
        lock_ttl: Duration,
    ) -> Result<TrimReport, StoreError> {
        let conn = &self.conn;
        let all = self.keys.all();
        let cfg = &self.config;
        let mut report = TrimReport::default();
        let cutoff = now_ms.saturating_sub(millis_of(cfg.retention.max_age));
        let older = LexRange::older_than(cutoff);
        for batch_no in 0..MAX_BATCHES_PER_RUN {
            if batch_no > 0 {
                self.extend_lock(lock, token, lock_ttl).await?;
            }
            // Oldest first, strictly older than the cutoff.
            let members: Vec<String> = conn
                .cmd(
                    "finding old tasks",
                    "ZRANGE",
                    crate::layout::zrange_bylex(&all, &older.min, &older.max, false, BATCH as i64),
                )
                .await?;
            if members.is_empty() {
                break;
            }
            let full = members.len() == BATCH;
            report.archived += self.archive(now_ms, &members).await?;
            report.removed_by_age += self.trim_members(&members).await?;
            if !full {
                break;
            }
        }
        for _ in 0..MAX_BATCHES_PER_RUN {
            self.extend_lock(lock, token, lock_ttl).await?;
            let count: u64 = conn
                .cmd("counting tasks", "ZCARD", vec![all.as_str().into()])
                .await?;
            if count <= cfg.retention.max_count {
                break;
            }
            let excess = (count - cfg.retention.max_count).min(BATCH as u64) as i64;
            let members: Vec<String> = conn
                .cmd(
                    "finding the oldest tasks",
                    "ZRANGE",
                    crate::layout::zrange_bylex(&all, "-", "+", false, excess),
                )
                .await?;
            if members.is_empty() {
                break;
            }
            report.archived += self.archive(now_ms, &members).await?;
            report.removed_by_count += self.trim_members(&members).await?;
        }
        Ok(report)
    }

    async fn extend_lock(&self, lock: &str, token: &str, ttl: Duration) -> Result<(), StoreError> {
        let still: i64 = self
            .conn
            .eval(
                &Scripts::get().extend,
                vec![lock.into()],
                vec![token.into(), millis_of(ttl).into()],
            )
            .await?;
        if still == 1 {
            Ok(())
        } else {
            Err(StoreError::Internal(
                "janitor lost its lock (run took longer than the lock TTL); stopping".to_owned(),
            ))
        }
    }

    async fn trim_members(&self, members: &[String]) -> Result<u64, StoreError> {
        let mut args: Vec<Value> = Vec::with_capacity(members.len() + 1);
        args.push(self.keys.prefix().into());
        args.extend(members.iter().map(|m| Value::from(m.as_str())));
        let removed: i64 = self
            .conn
            .eval(&Scripts::get().trim, vec![self.keys.all().into()], args)
            .await?;
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    /// Append the records of `members` to the day's archive file, if one is configured.
    async fn archive(&self, now_ms: i64, members: &[String]) -> Result<u64, StoreError> {
        let Some(dir) = self.config.archive_dir.clone() else {
            return Ok(0);
        };
        let keys: Vec<Value> = members
            .iter()
            .map(|m| Value::from(self.keys.record(member_id(m).unwrap_or_default())))
            .collect();
        let values: Vec<Value> = self
            .conn
            .cmd("reading records to archive", "MGET", keys.clone())
            .await?;
        let mut lines = String::new();
        let mut count = 0u64;
        for (key, v) in keys.iter().zip(values) {
            let Some(text) = value_text(v) else { continue };
            let line = match text {
                Ok(t) => match stored::wire_json(&t) {
                    Ok(json) => json,
                    // Keep what was there rather than lose it silently.
                    Err(_) => corrupt_line(key, &t),
                },
                Err(bytes) => corrupt_line(key, &String::from_utf8_lossy(&bytes)),
            };
            lines.push_str(&line);
            lines.push('\n');
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        let day = Timestamp::from_unix_millis(now_ms.clamp(0, Timestamp::MAX_MILLIS))
            .map(|t| t.to_rfc3339()[..10].to_owned())
            .unwrap_or_else(|_| "unknown-day".to_owned());
        let path = dir.join(format!("failed-tasks-{day}.jsonl"));
        let written = tokio::task::spawn_blocking(move || append(dir, path, lines))
            .await
            .map_err(|e| StoreError::Internal(format!("archive writer task failed: {e}")))?;
        written?;
        Ok(count)
    }
}

fn corrupt_line(key: &Value, raw: &str) -> String {
    let key = match key {
        Value::String(s) => s.to_string(),
        other => format!("{other:?}"),
    };
    serde_json::json!({ "CorruptRecordKey": key, "Raw": raw }).to_string()
}

pub(crate) fn append(dir: PathBuf, path: PathBuf, lines: String) -> Result<(), StoreError> {
    let fail = |what: &str, e: std::io::Error| {
        StoreError::Internal(format!("archive {what} {}: {e}", path.display()))
    };
    std::fs::create_dir_all(&dir).map_err(|e| fail("creating the directory of", e))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| fail("opening", e))?;
    file.write_all(lines.as_bytes())
        .map_err(|e| fail("writing", e))?;
    file.sync_data().map_err(|e| fail("syncing", e))?;
    Ok(())
}
