//! [`CompatStore`]: the original Go service's status records, read as failed tasks.
//!
//! The Go embedder keeps one string per request, `request:id:{id}`, holding
//! `{"process":"failed","totalProgress":..,"fileList":[{"path":..,"status":..,"operate":..}]}`
//! and written with `SET .. EX` (24 h by default). This source lists the records whose
//! `process` is `"failed"` (case-insensitive) as failed tasks. It is read-only: `record` and
//! `remove` answer [`StoreError::Rejected`].
//!
//! # What the records do not say, and the values given instead
//! | field | value |
//! |---|---|
//! | `TaskId` | the key without its prefix |
//! | `FailTime` | estimated: now − (configured expiry − remaining TTL), i.e. when the record was last written, to the second; the Unix epoch when the key has no expiry |
//! | `StartTime` | the same as `FailTime` (not recorded) |
//! | `ProcessedFiles` | entries of `fileList` whose `status` is done-like: `done`, `success`, `succeeded`, `successful`, `completed`, `complete`, `finished`, `ok` (case-insensitive) |
//! | `TaskType` | `unknown` |
//! | `ClientId` | `unknown` |
//! | `CodebasePath` | empty |
//! | `ErrorCode` | `UNKNOWN` |
//! | `ErrorCategory` | `system_error` |
//! | `ErrorMessage` | says the cause is not recorded by the original service |
//! | `RetryCount` | 0 |
//! | failed files (`GET …/tasks/failed/{taskId}/files`, `FailedFiles`) | the `fileList` entries whose `status` is `failed` (case-insensitive), each path once; `operate` `add`/`create`/`new` → `add`, `delete`/`remove` → `delete`, anything else → `modify`; `ErrorCode` `UNKNOWN`, no message |
//!
//! # Cost
//! There is no index: every `list` walks the keyspace with `SCAN MATCH prefix* COUNT n`
//! (`scan_cluster` on a cluster) and reads each page of keys with one `MGET` plus pipelined
//! `PTTL`s (per hash slot on a cluster), never one round trip per key. It is O(keyspace) per
//! request and holds the failed records in memory while sorting them; it exists to read an
//! existing deployment, not to serve at scale. A malformed record (bad JSON, a missing
//! `process`) is skipped and counted like in [`RedisStore`](crate::RedisStore).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::{
    Cursor, ErrorCategory, ErrorCode, ErrorMessage, FailedFile, FailedTask, FileOperation,
    FilePath, ListQuery, NewFailedTask, TaskFiles, TaskId, Timestamp, DEFAULT_MAX_FAILED_FILES,
};
use failed_tasks_store::{
    FailedTaskPage, FilesStore, RecordOutcome, StatusStore, StoreError, Stores,
};
use fred::prelude::ClientLike;
use fred::types::scan::Scanner;
use fred::types::Value;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::config::RedisConfig;
use crate::conn::Conn;
use crate::store::{millis_of, note_corrupt, now_ms, value_text};

/// Where the Go service's records are and how they were written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatConfig {
    /// The Redis URL, as in [`RedisConfig::url`].
    pub url: String,
    /// The key prefix of the Go service's records.
    pub key_prefix: String,
    /// The expiry the Go service sets on each record (`SET .. EX`), used to estimate when
    /// the record was written.
    pub record_expiry: Duration,
    /// The longest any single Redis call may take.
    pub command_timeout: Duration,
    /// `COUNT` hint of each `SCAN` call.
    pub scan_count: u32,
}

impl Default for CompatConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            key_prefix: "request:id:".to_owned(),
            record_expiry: Duration::from_secs(24 * 3600),
            command_timeout: Duration::from_secs(2),
            scan_count: 1000,
        }
    }
}

/// The read-only compatibility source (see the module docs).
#[derive(Debug, Clone)]
pub struct CompatStore {
    conn: Conn,
    config: CompatConfig,
}

#[derive(Deserialize)]
struct GoStatus {
    process: String,
    #[serde(rename = "fileList", default)]
    file_list: Option<Vec<GoFile>>,
}

#[derive(Deserialize)]
struct GoFile {
    #[serde(default)]
    status: Option<serde_json::Value>,
    #[serde(default)]
    path: Option<serde_json::Value>,
    #[serde(default)]
    operate: Option<serde_json::Value>,
}

/// The operation of a Go `operate` value: `add`/`create`/`new` are added, `delete`/`remove`
/// deleted, anything else (`modify`, `update`, unknown) modified: re-embedding is what a
/// retry of it does.
fn operation_of(operate: Option<&serde_json::Value>) -> FileOperation {
    let text = match operate {
        Some(serde_json::Value::String(s)) => s.to_ascii_lowercase(),
        _ => String::new(),
    };
    match text.as_str() {
        "add" | "create" | "new" | "added" | "created" => FileOperation::Add,
        "delete" | "remove" | "deleted" | "removed" => FileOperation::Delete,
        _ => FileOperation::Modify,
    }
}

/// The failed files of a Go record: the `fileList` entries whose `status` is `failed`
/// (case-insensitive), each path once (the first entry wins; an entry without a usable path
/// is skipped), with error code `UNKNOWN` and no message (the Go service records neither),
/// at most [`DEFAULT_MAX_FAILED_FILES`] listed; `FailedFiles` counts them all. `None` when
/// the record is not a failure or names no failed file.
fn failed_files_of(status: &GoStatus) -> Option<TaskFiles> {
    if !status.process.eq_ignore_ascii_case("failed") {
        return None;
    }
    let failed: Vec<&GoFile> = status
        .file_list
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|f| matches!(&f.status, Some(serde_json::Value::String(s)) if s.eq_ignore_ascii_case("failed")))
        .collect();
    if failed.is_empty() {
        return None;
    }
    let code = ErrorCode::parse("UNKNOWN").ok()?;
    let message = ErrorMessage::parse("").ok()?;
    let mut seen = std::collections::HashSet::new();
    let files: Vec<FailedFile> = failed
        .iter()
        .filter_map(|f| {
            let Some(serde_json::Value::String(p)) = &f.path else {
                return None;
            };
            let path = FilePath::parse("path", p.as_str()).ok()?;
            seen.insert(p.clone()).then(|| FailedFile {
                path,
                operation: operation_of(f.operate.as_ref()),
                error_code: code.clone(),
                error_message: message.clone(),
            })
        })
        .take(DEFAULT_MAX_FAILED_FILES)
        .collect();
    Some(TaskFiles::from_valid(failed.len() as u64, Some(files)))
}

const DONE_STATUSES: &[&str] = &[
    "done",
    "success",
    "succeeded",
    "successful",
    "completed",
    "complete",
    "finished",
    "ok",
];

/// What one Go record means for us.
enum Parsed {
    Failed(Box<FailedTask>),
    NotFailed,
}

impl CompatStore {
    /// Build the source and start connecting in the background (never fails because Redis
    /// is down; see [`RedisStore::connect`](crate::RedisStore::connect)).
    pub async fn connect(config: CompatConfig) -> Result<CompatStore, StoreError> {
        if config.key_prefix.is_empty() || config.key_prefix.contains(['*', '?', '[']) {
            return Err(StoreError::Rejected(format!(
                "compat key prefix {:?} must be non-empty and free of glob characters",
                config.key_prefix
            )));
        }
        let conn = Conn::start(&RedisConfig {
            url: config.url.clone(),
            command_timeout: config.command_timeout,
            // Read-only over the Go service's Redis: its eviction policy is that service's.
            allow_eviction: true,
            ..RedisConfig::default()
        })?;
        Ok(Self { conn, config })
    }

    fn parse(&self, id: &str, text: &str, pttl_ms: i64, now: i64) -> Result<Parsed, String> {
        let status: GoStatus =
            serde_json::from_str(text).map_err(|e| format!("bad status JSON: {e}"))?;
        if !status.process.eq_ignore_ascii_case("failed") {
            return Ok(Parsed::NotFailed);
        }
        let processed = status
            .file_list
            .unwrap_or_default()
            .iter()
            .filter(|f| {
                matches!(&f.status, Some(serde_json::Value::String(s))
                    if DONE_STATUSES.iter().any(|d| s.eq_ignore_ascii_case(d)))
            })
            .count() as u64;
        let fail_ms = if pttl_ms > 0 {
            let written = now - (millis_of(self.config.record_expiry) - pttl_ms);
            // To the second: the estimate then stays put between two page requests.
            (written.div_euclid(1000) * 1000).clamp(0, Timestamp::MAX_MILLIS)
        } else {
            0
        };
        FailedTask::new(NewFailedTask {
            task_id: id.to_owned(),
            task_type: "unknown".to_owned(),
            client_id: "unknown".to_owned(),
            codebase_path: String::new(),
            start_time: Timestamp::saturating_from_unix_millis(fail_ms),
            fail_time: Timestamp::saturating_from_unix_millis(fail_ms),
            error_code: "UNKNOWN".to_owned(),
            error_message: "the original service records that the task failed, not why".to_owned(),
            retry_count: 0,
            processed_files: processed,
            error_category: Some(ErrorCategory::SystemError),
        })
        .map(|t| Parsed::Failed(Box::new(t)))
        .map_err(|e| format!("unusable record: {e}"))
    }

    /// Values and remaining TTLs of `keys` (all in one hash slot on a cluster).
    /// One task's status record: its key, its text and its `PTTL` (`None`: no record).
    async fn status_text(
        &self,
        task_id: &TaskId,
    ) -> Result<Option<(String, String, i64)>, StoreError> {
        let key = format!("{}{}", self.config.key_prefix, task_id);
        let mut read = self.read_group(std::slice::from_ref(&key)).await?;
        let Some((value, pttl)) = read.pop() else {
            return Ok(None);
        };
        match value_text(value) {
            None => Ok(None),
            Some(Err(_)) => Err(StoreError::Corrupt {
                key,
                reason: "status record is not UTF-8 text".to_owned(),
            }),
            Some(Ok(text)) => Ok(Some((key, text, pttl))),
        }
    }

    async fn read_group(&self, keys: &[String]) -> Result<Vec<(Value, i64)>, StoreError> {
        let values = self.conn.cmd_by_key::<Vec<Value>>(
            "reading status records",
            "MGET",
            keys.iter().map(|k| Value::from(k.as_str())).collect(),
        );
        let ttls = futures_util::future::join_all(keys.iter().map(|k| {
            self.conn
                .cmd_by_key::<i64>("reading a record's TTL", "PTTL", vec![k.as_str().into()])
        }));
        let (values, ttls) = tokio::join!(values, ttls);
        let mut out = Vec::with_capacity(keys.len());
        for (v, t) in values?.into_iter().zip(ttls) {
            out.push((v, t?));
        }
        Ok(out)
    }

    /// Read and parse one page of scanned keys, adding failed tasks to `found`.
    async fn absorb(
        &self,
        keys: Vec<String>,
        found: &mut Vec<FailedTask>,
        corrupt: &mut u64,
    ) -> Result<(), StoreError> {
        let mut groups: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        if self.conn.client().is_clustered() {
            for k in keys {
                groups
                    .entry(fred::util::redis_keyslot(k.as_bytes()))
                    .or_default()
                    .push(k);
            }
        } else {
            groups.insert(0, keys);
        }
        let reads = groups.values().map(|g| self.read_group(g));
        let results = futures_util::future::join_all(reads).await;
        let now = now_ms();
        for (keys, result) in groups.values().zip(results) {
            for (key, (value, pttl)) in keys.iter().zip(result?) {
                let Some(id) = key.strip_prefix(&self.config.key_prefix) else {
                    continue;
                };
                match value_text(value) {
                    None => {} // expired between SCAN and MGET
                    Some(Err(_)) => {
                        note_corrupt(key, "status record is not UTF-8 text");
                        *corrupt += 1;
                    }
                    Some(Ok(text)) => match self.parse(id, &text, pttl, now) {
                        Ok(Parsed::Failed(t)) => found.push(*t),
                        Ok(Parsed::NotFailed) => {}
                        Err(reason) => {
                            note_corrupt(key, &reason);
                            *corrupt += 1;
                        }
                    },
                }
            }
        }
        Ok(())
    }

    /// Every failed task in the keyspace, with the number of malformed records seen.
    async fn scan_all(&self) -> Result<(Vec<FailedTask>, u64), StoreError> {
        if !self.conn.is_connected() {
            return Err(StoreError::Unavailable(
                "scanning status records: not connected to redis".to_owned(),
            ));
        }
        let pattern = format!("{}*", self.config.key_prefix);
        let count = Some(self.config.scan_count.max(10));
        let client = self.conn.client();
        let mut stream = if client.is_clustered() {
            client.scan_cluster(pattern, count, None).boxed()
        } else {
            client.scan(pattern, count, None).boxed()
        };
        let mut found = Vec::new();
        let mut corrupt = 0u64;
        let limit = self.conn.timeout() + Duration::from_millis(100);
        loop {
            let next = tokio::time::timeout(limit, stream.next())
                .await
                .map_err(|_| {
                    StoreError::Timeout(format!(
                        "scanning status records: no answer from redis within {limit:?}"
                    ))
                })?;
            let Some(page) = next else { break };
            let mut page =
                page.map_err(|e| crate::conn::map_error("scanning status records", &e))?;
            let keys: Vec<String> = page
                .take_results()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|k| k.into_string())
                .collect();
            page.next();
            if !keys.is_empty() {
                self.absorb(keys, &mut found, &mut corrupt).await?;
            }
        }
        Ok((found, corrupt))
    }
}

#[async_trait]
impl StatusStore for CompatStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.conn.ping().await
    }

    async fn list(&self, query: &ListQuery) -> Result<FailedTaskPage, StoreError> {
        let (mut tasks, corrupt) = self.scan_all().await?;
        // No retries are scheduled here: every task is unscheduled.
        let unscheduled = failed_tasks_domain::RetryStatus::Unscheduled;
        tasks.retain(|t| query.filter.matches(t) && query.filter.matches_status(&unscheduled));
        tasks.sort_by_key(FailedTask::sort_key);
        tasks.dedup_by(|a, b| a.task_id() == b.task_id());
        let total = tasks.len() as u64;
        let size = query.page_size.as_usize();
        let mut page: Vec<FailedTask> = tasks
            .into_iter()
            .filter(|t| query.is_after_cursor(&t.sort_key()))
            .take(size + 1)
            .collect();
        let next_cursor = if page.len() > size {
            page.truncate(size);
            page.last().map(|t| Cursor::after(t.sort_key()))
        } else {
            None
        };
        Ok(FailedTaskPage {
            total,
            tasks: page,
            next_cursor,
            skipped_corrupt: corrupt,
            retry: Vec::new(),
        })
    }

    async fn get(&self, task_id: &TaskId) -> Result<Option<FailedTask>, StoreError> {
        let Some((key, text, pttl)) = self.status_text(task_id).await? else {
            return Ok(None);
        };
        match self.parse(task_id.as_str(), &text, pttl, now_ms()) {
            Ok(Parsed::Failed(t)) => Ok(Some(*t)),
            Ok(Parsed::NotFailed) => Ok(None),
            Err(reason) => Err(StoreError::Corrupt { key, reason }),
        }
    }

    async fn record(&self, _task: &FailedTask) -> Result<RecordOutcome, StoreError> {
        Err(StoreError::Rejected(
            "compat source is read-only".to_owned(),
        ))
    }

    async fn record_batch(&self, _tasks: &[FailedTask]) -> Result<Vec<RecordOutcome>, StoreError> {
        Err(StoreError::Rejected(
            "compat source is read-only".to_owned(),
        ))
    }

    async fn remove(&self, _task_id: &TaskId) -> Result<bool, StoreError> {
        Err(StoreError::Rejected(
            "compat source is read-only".to_owned(),
        ))
    }
}

/// The failed files of a Go record, read from its `fileList` (see [`failed_files_of`]); it
/// stores none.
#[async_trait]
impl FilesStore for CompatStore {
    async fn put_files(&self, _task_id: &TaskId, _files: &TaskFiles) -> Result<bool, StoreError> {
        Err(StoreError::Rejected(
            "compat source is read-only".to_owned(),
        ))
    }

    async fn files(&self, task_id: &TaskId) -> Result<Option<TaskFiles>, StoreError> {
        let Some((key, text, _)) = self.status_text(task_id).await? else {
            return Ok(None);
        };
        let status: GoStatus = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            key,
            reason: format!("bad status JSON: {e}"),
        })?;
        Ok(failed_files_of(&status))
    }
}

/// The compat source's capabilities: reading failed tasks and their failed files only (it
/// is read-only; the Go service keeps no statistics, groups or retries, and its records are
/// not in the wire form).
impl From<CompatStore> for Stores {
    fn from(store: CompatStore) -> Self {
        let store = std::sync::Arc::new(store);
        Stores::new("compat", store.clone())
            .read_only()
            .with_files(store)
    }
}
