//! The listing's fast path: a store that keeps the wire JSON answers with it, and the body
//! is assembled around those bytes; what the server cannot vouch for falls back.

use std::sync::Arc;

use bytes::Bytes;
use failed_tasks_domain::{FailedTask, ListQuery, TaskId};
use failed_tasks_query::Deadlines;
use failed_tasks_store::{
    FailedTaskPage, MemoryStore, RecordOutcome, StatusStore, StoreError, StoredJsonPage,
};
use hyper::StatusCode;

use crate::helpers::{get, spawn_app, test_config};

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
    async fn list_stored_json(&self, q: &ListQuery) -> Result<Option<StoredJsonPage>, StoreError> {
        let page = self.inner.list(q).await?;
        let policy = failed_tasks_domain::RetryPolicy::default();
        let tasks = page
            .tasks
            .iter()
            .map(|t| {
                let mut v =
                    serde_json::to_value(failed_tasks_http::wire::WireTask::new(t, &policy))
                        .unwrap();
                v.as_object_mut().unwrap().remove("FinalFailure");
                Bytes::from((self.edit)(v.to_string()))
            })
            .collect();
        Ok(Some(StoredJsonPage {
            total: page.total,
            tasks,
            next_cursor: page.next_cursor,
            skipped_corrupt: page.skipped_corrupt,
        }))
    }
    async fn get(&self, id: &TaskId) -> Result<Option<FailedTask>, StoreError> {
        self.inner.get(id).await
    }
    async fn record(&self, t: &FailedTask) -> Result<RecordOutcome, StoreError> {
        self.inner.record(t).await
    }
    async fn remove(&self, id: &TaskId) -> Result<bool, StoreError> {
        self.inner.remove(id).await
    }
}

async fn seeded(edit: fn(String) -> String, list_works: bool) -> Arc<dyn StatusStore> {
    let inner = MemoryStore::new();
    for t in FailedTask::seed_examples() {
        inner.record(&t).await.unwrap();
    }
    Arc::new(StoresJson {
        inner,
        edit,
        list_works,
    })
}

async fn reference(path: &str) -> serde_json::Value {
    let inner = MemoryStore::new();
    for t in FailedTask::seed_examples() {
        inner.record(&t).await.unwrap();
    }
    let server = spawn_app(Arc::new(inner), Deadlines::default(), test_config()).await;
    get(&server, path).await.json()
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
    }
}

#[tokio::test]
async fn what_the_server_cannot_vouch_for_is_served_decoded() {
    // An unknown category, an extra field, a wrong-typed count, a truncated object.
    let edits: [fn(String) -> String; 4] = [
        |s| s.replace("\"authorization\"", "\"bogus\""),
        |s| s.replacen('{', "{\"Extra\":1,", 1),
        |s| s.replace("\"RetryCount\":0", "\"RetryCount\":\"0\""),
        |s| s[..s.len() - 1].to_owned(),
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
