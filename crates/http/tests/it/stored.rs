//! The listing's fast path: a store that keeps the wire JSON answers with it, and the body
//! is assembled around those bytes; what the server cannot vouch for falls back.

use std::sync::Arc;

use bytes::Bytes;
use failed_tasks_domain::{FailedTask, ListQuery, RetryPlan, TaskId, Timestamp};
use failed_tasks_query::Deadlines;
use failed_tasks_store::{
    FailedTaskPage, MemoryStore, RecordOutcome, RetryStore, StatusStore, StoreError,
    StoredJsonPage, StoredJsonPages, Stores,
};
use hyper::StatusCode;

use crate::helpers::{get, memory, spawn_app, test_config};

const LIST: &str = "/codebase-embedder/api/v1/tasks/failed";

/// A memory store that also answers `list_stored_json`, with each task's JSON passed
/// through `edit` (to store what a tampered Redis would hold).
struct StoresJson {
    inner: MemoryStore,
    edit: fn(String) -> String,
    /// Whether `list` answers; when not, only the fast path can serve a page.
    list_works: bool,
}

#[async_trait::async_trait]
impl StatusStore for StoresJson {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn list(&self, q: &ListQuery) -> Result<FailedTaskPage, StoreError> {
        if !self.list_works {
            return Err(StoreError::Internal("list must not be called".into()));
        }
        self.inner.list(q).await
    }
    async fn get(&self, id: &TaskId) -> Result<Option<FailedTask>, StoreError> {
        self.inner.get(id).await
    }
    async fn record(&self, t: &FailedTask) -> Result<RecordOutcome, StoreError> {
        self.inner.record(t).await
    }
    async fn record_batch(&self, t: &[FailedTask]) -> Result<Vec<RecordOutcome>, StoreError> {
        self.inner.record_batch(t).await
    }
    async fn remove(&self, id: &TaskId) -> Result<bool, StoreError> {
        self.inner.remove(id).await
    }
}

#[async_trait::async_trait]
impl StoredJsonPages for StoresJson {
    async fn list_stored_json(&self, q: &ListQuery) -> Result<StoredJsonPage, StoreError> {
        let page = self.inner.list(q).await?;
        let policy = failed_tasks_domain::RetryPolicy::default();
        // As the Redis store keeps them: the wire object with NextRetryAt last, without the
        // FinalFailure the server adds.
        let tasks = page
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let wire =
                    failed_tasks_http::wire::WireTask::new(t, &page.retry_status(i), &policy);
                let mut json = serde_json::to_string(&wire).unwrap();
                let cut = json.rfind(",\"FinalFailure\"").unwrap();
                json.truncate(cut);
                json.push('}');
                Bytes::from((self.edit)(json))
            })
            .collect();
        Ok(StoredJsonPage {
            total: page.total,
            tasks,
            next_cursor: page.next_cursor,
            skipped_corrupt: page.skipped_corrupt,
        })
    }
}

/// The seed tasks: task_001 with a retry scheduled, task_002 final, task_003 unscheduled
/// (or all unscheduled, as records stored before retries existed).
async fn filled(scheduled: bool) -> MemoryStore {
    let inner = MemoryStore::new();
    let seed = FailedTask::seed_examples();
    if scheduled {
        let due = Timestamp::parse_rfc3339("due", "2025-01-24T09:15:08.250Z").unwrap();
        let plans = [
            RetryPlan::Retry { due },
            RetryPlan::Final,
            RetryPlan::NotScheduled,
        ];
        let batch: Vec<_> = seed.into_iter().zip(plans).collect();
        inner.record_planned(&batch).await.unwrap();
    } else {
        inner.record_batch(&seed).await.unwrap();
    }
    inner
}

async fn seeded_with(edit: fn(String) -> String, list_works: bool, scheduled: bool) -> Stores {
    let store = Arc::new(StoresJson {
        inner: filled(scheduled).await,
        edit,
        list_works,
    });
    Stores::new("stores-json", store.clone()).with_stored_json(store)
}

async fn seeded(edit: fn(String) -> String, list_works: bool) -> Stores {
    seeded_with(edit, list_works, true).await
}

async fn reference_body(path: &str, scheduled: bool) -> Bytes {
    let server = spawn_app(
        memory(Arc::new(filled(scheduled).await)),
        Deadlines::default(),
        test_config(),
    )
    .await;
    get(&server, path).await.body
}

async fn reference(path: &str) -> serde_json::Value {
    serde_json::from_slice(&reference_body(path, true).await).unwrap()
}

#[tokio::test]
async fn stored_json_pages_equal_the_decoded_ones() {
    // `list` fails here: every page below comes from the stored bytes.
    let server = spawn_app(
        seeded(|s| s, false).await,
        Deadlines::default(),
        test_config(),
    )
    .await;
    for path in [
        LIST.to_owned(),
        format!("{LIST}?pageSize=2"),
        format!("{LIST}?category=authorization"),
    ] {
        let a = get(&server, &path).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert_eq!(a.json(), reference(&path).await, "{path}");
        // Byte for byte: the same field order, NextRetryAt and FinalFailure included.
        assert_eq!(
            String::from_utf8_lossy(&a.body),
            String::from_utf8_lossy(&reference_body(&path, true).await),
            "{path}"
        );
    }
    let body = get(&server, LIST).await.json();
    let next: Vec<&serde_json::Value> = body["Data"]["Tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["NextRetryAt"])
        .collect();
    assert_eq!(
        next,
        [
            &serde_json::Value::Null,
            &serde_json::Value::Null,
            &serde_json::json!("2025-01-24T09:15:08.250Z")
        ]
    );
}

#[tokio::test]
async fn records_stored_without_next_retry_at_get_null() {
    // Records written before retries existed have no NextRetryAt: the fast path adds null,
    // and the body still equals the decoded one byte for byte.
    let server = spawn_app(
        seeded_with(|s| s.replace(",\"NextRetryAt\":null", ""), false, false).await,
        Deadlines::default(),
        test_config(),
    )
    .await;
    let a = get(&server, LIST).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, reference_body(LIST, false).await);
}

#[tokio::test]
async fn what_the_server_cannot_vouch_for_is_served_decoded() {
    // An unknown category, an extra field, a wrong-typed count, a truncated object, a
    // NextRetryAt that is no time.
    let edits: [fn(String) -> String; 5] = [
        |s| s.replace("\"authorization\"", "\"bogus\""),
        |s| s.replacen('{', "{\"Extra\":1,", 1),
        |s| s.replace("\"RetryCount\":0", "\"RetryCount\":\"0\""),
        |s| s[..s.len() - 1].to_owned(),
        |s| s.replace("\"2025-01-24T09:15:08.250Z\"", "\"soon\""),
    ];
    for edit in edits {
        let server = spawn_app(
            seeded(edit, true).await,
            Deadlines::default(),
            test_config(),
        )
        .await;
        let a = get(&server, LIST).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.json(), reference(LIST).await);
    }
}
