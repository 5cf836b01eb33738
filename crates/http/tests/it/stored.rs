//! The listing's fast path: a store that keeps stored records answers with them, and the
//! body is rendered from their headers; what the server cannot vouch for falls back.

use std::sync::Arc;

use bytes::Bytes;
use failed_tasks_domain::{
    ErrorSignature, FailedTask, ListQuery, NextRetry, RetryPlan, RetryPolicy, RetryStatus,
    ScheduledBy, TaskId, Timestamp,
};
use failed_tasks_http::wire::WireTask;
use failed_tasks_query::Deadlines;
use failed_tasks_store::{
    stored, FailedTaskPage, MemoryStore, RecordOutcome, RetryStore, StatusStore, StoreError,
    StoredPage, StoredPages, Stores,
};
use hyper::StatusCode;

use crate::helpers::{get, memory, spawn_app, test_config};

const LIST: &str = "/codebase-embedder/api/v1/tasks/failed";

/// A memory store that also answers `list_stored`, with each task's stored record passed
/// through `edit` (to store what a tampered Redis, or an earlier version, would hold).
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
impl StoredPages for StoresJson {
    async fn list_stored(&self, q: &ListQuery) -> Result<StoredPage, StoreError> {
        let page = self.inner.list(q).await?;
        // As the Redis store keeps them.
        let records = page
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let sig = ErrorSignature::of_task(t);
                Bytes::from((self.edit)(stored::encode(t, &sig, &page.retry_status(i))))
            })
            .collect();
        Ok(StoredPage {
            total: page.total,
            records,
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
    Stores::new("stores-json", store.clone()).with_stored(store)
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
async fn stored_pages_equal_the_decoded_ones() {
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
async fn records_of_an_earlier_version_are_served_decoded() {
    // A v3 record (the task as wire JSON after the header) is not rendered: the page comes
    // from the decoded path, byte for byte the same.
    fn to_v3(s: String) -> String {
        let (task, status) = stored::decode(&s).unwrap();
        stored::encode_v3(&task, &ErrorSignature::of_task(&task), &status)
    }
    let server = spawn_app(
        seeded(to_v3, true).await,
        Deadlines::default(),
        test_config(),
    )
    .await;
    let a = get(&server, LIST).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, reference_body(LIST, true).await);
}

#[tokio::test]
async fn what_the_server_cannot_vouch_for_is_served_decoded() {
    // An unknown category, a header field too many, an attempt that is no number, an
    // unknown retry state, a scheduled retry without its due time, no header line.
    let edits: [fn(String) -> String; 6] = [
        |s| s.replace("\tauthorization\t", "\tbogus\t"),
        |s| s.replacen('\n', "\textra\n", 1),
        |s| s.replacen("\tf\t1\t", "\tf\tone\t", 1),
        |s| s.replacen("\tf\t", "\tq\t", 1),
        |s| s.replace("\t2025-01-24T09:15:08.250Z\n", "\t\n"),
        |s| s.replace('\n', " "),
    ];
    let inner = filled(true).await;
    let page = inner
        .list(&ListQuery::first_page(
            failed_tasks_domain::PageLimits::DEFAULT,
        ))
        .await
        .unwrap();
    let records: Vec<String> = page
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| stored::encode(t, &ErrorSignature::of_task(t), &page.retry_status(i)))
        .collect();
    for edit in edits {
        assert!(
            records.iter().any(|r| edit(r.clone()) != *r),
            "the edit changes a record"
        );
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

/// The one place stored bytes become API bytes, `stored::Record::write_wire_json`, writes
/// exactly what `WireTask` serializes: every field, its order, its escaping, for every
/// retry status and awkward text.
#[test]
fn rendered_records_equal_the_wire_type_for_every_field() {
    let policy = RetryPolicy::default();
    let due = Timestamp::from_unix_millis(1_737_710_108_250).unwrap();
    let statuses = [
        RetryStatus::Scheduled(NextRetry {
            attempt: 2,
            due,
            by: ScheduledBy::Policy,
        }),
        RetryStatus::Scheduled(NextRetry {
            attempt: 9,
            due: Timestamp::from_unix_millis(0).unwrap(),
            by: ScheduledBy::Operator,
        }),
        RetryStatus::Final,
        RetryStatus::Unscheduled,
    ];
    let mut tasks = FailedTask::seed_examples();
    for (i, text) in [
        "said \"no\"\tand\nleft\r",
        "back\\slash / <b>&amp;</b>",
        "ünïcödé 日本語 🙂",
        "",
    ]
    .iter()
    .enumerate()
    {
        let mut raw = tasks[i % 3].clone().into_parts();
        raw.error_message = (*text).to_owned();
        raw.task_id = format!("id \"{i}\" \\ é");
        raw.client_id = format!("client/{text:.3}");
        raw.codebase_path = format!("C:\\repo\\{i} \"x\"");
        raw.start_time = Timestamp::from_unix_millis(1_737_700_000_001 + i as i64).unwrap();
        tasks.push(FailedTask::new(raw).unwrap());
    }
    let mut compared = 0;
    for t in &tasks {
        for status in &statuses {
            let want = serde_json::to_string(&WireTask::new(t, status, &policy)).unwrap();
            let record = stored::encode(t, &ErrorSignature::of_task(t), status);
            let r = stored::Record::parse(record.as_bytes()).unwrap();
            let mut got = Vec::new();
            let final_failure = policy
                .decide(r.category(), r.error_code(), r.retry_count(), 0.0)
                .is_give_up();
            r.write_wire_json(Some(final_failure), &mut got).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), want);
            compared += 1;
        }
    }
    assert_eq!(compared, tasks.len() * statuses.len());
}
