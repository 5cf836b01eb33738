//! The compatibility source over records written exactly as the Go service writes them.

use std::time::Duration;

use failed_tasks_domain::{
    ErrorCategory, FailedTask, ListQuery, PageLimits, PageSize, TaskFilter, TaskId,
};
use failed_tasks_redis::{CompatConfig, CompatStore};
use failed_tasks_store::{conformance, StatusStore, StoreError};
use failed_tasks_testkit::{RedisCluster, RedisServer};
use fred::types::Value;

use crate::helpers;

const DAY: i64 = 24 * 3600;

async fn go_set(raw: &fred::clients::Client, key: &str, json: &str, ex: Option<i64>) {
    let mut args: Vec<Value> = vec![key.into(), json.into()];
    if let Some(ex) = ex {
        args.push("EX".into());
        args.push(ex.into());
    }
    let _: Value = helpers::cmd(raw, key, "SET", args).await;
}

fn status(process: &str, statuses: &[&str]) -> String {
    let files: Vec<String> = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| format!(r#"{{"path":"src/f{i}.go","status":"{s}","operate":"add"}}"#))
        .collect();
    format!(
        r#"{{"process":"{process}","totalProgress":{},"fileList":[{}]}}"#,
        statuses.len(),
        files.join(",")
    )
}

async fn seed(url: &str) -> fred::clients::Client {
    let raw = helpers::raw(url).await;
    // Failed ones, written 10 s, 1 h and 2 h ago (remaining TTL shows the age).
    go_set(
        &raw,
        "request:id:req-a",
        &status("failed", &["done", "success", "failed", "processing"]),
        Some(DAY - 10),
    )
    .await;
    go_set(
        &raw,
        "request:id:req-b",
        &status("failed", &[]),
        Some(DAY - 3600),
    )
    .await;
    go_set(
        &raw,
        "request:id:req-c",
        &status("FAILED", &["completed"]),
        Some(DAY - 7200),
    )
    .await;
    // Not failed: completed, processing.
    go_set(
        &raw,
        "request:id:req-ok",
        &status("completed", &["done"]),
        Some(DAY),
    )
    .await;
    go_set(
        &raw,
        "request:id:req-run",
        &status("processing", &["done"]),
        Some(DAY),
    )
    .await;
    // Expired: gone by the time we list.
    go_set(&raw, "request:id:req-gone", &status("failed", &[]), None).await;
    let _: Value = helpers::cmd(
        &raw,
        "request:id:req-gone",
        "PEXPIRE",
        vec!["request:id:req-gone".into(), 1i64.into()],
    )
    .await;
    // Malformed.
    go_set(&raw, "request:id:req-bad", "{not json", Some(DAY)).await;
    go_set(
        &raw,
        "request:id:req-noproc",
        r#"{"totalProgress":1}"#,
        Some(DAY),
    )
    .await;
    // Unrelated keys.
    go_set(&raw, "other:req-x", &status("failed", &[]), Some(DAY)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    raw
}

async fn check(url: &str) {
    let _raw = seed(url).await;
    let store = CompatStore::connect(CompatConfig {
        url: url.to_owned(),
        command_timeout: Duration::from_secs(1),
        scan_count: 3, // several SCAN pages even for this small keyspace
        ..CompatConfig::default()
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "compat store did not connect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let page = store
        .list(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap();
    let ids: Vec<&str> = page.tasks.iter().map(|t| t.task_id().as_str()).collect();
    assert_eq!(ids, ["req-a", "req-b", "req-c"], "newest first");
    assert_eq!(page.total, 3);
    assert_eq!(page.skipped_corrupt, 2);
    let a = &page.tasks[0];
    assert_eq!(a.processed_files(), 2);
    assert_eq!(a.error_code().as_str(), "UNKNOWN");
    assert_eq!(a.error_category(), ErrorCategory::SystemError);
    assert_eq!(a.client_id().as_str(), "unknown");
    let age_ms = now_ms() - page.tasks[1].fail_time().unix_millis();
    assert!(
        (3_595_000..3_700_000).contains(&age_ms),
        "req-b age {age_ms}"
    );

    // Paging and filters work like any store.
    let (ids, _) = conformance::walk(&store, &TaskFilter::all(), 1).await;
    assert_eq!(ids, ["req-a", "req-b", "req-c"]);
    let since = TaskFilter {
        since: Some(failed_tasks_domain::Timestamp::from_unix_millis(now_ms() - 60_000).unwrap()),
        ..TaskFilter::default()
    };
    let q = ListQuery {
        filter: since,
        page_size: PageSize::new(10, PageLimits::DEFAULT).unwrap(),
        cursor: None,
    };
    assert_eq!(store.list(&q).await.unwrap().total, 1);

    let id = |id: &str| TaskId::parse(id.to_owned()).unwrap();
    assert_eq!(
        store
            .get(&id("req-c"))
            .await
            .unwrap()
            .unwrap()
            .processed_files(),
        1
    );
    assert_eq!(store.get(&id("req-ok")).await.unwrap(), None);
    assert_eq!(store.get(&id("req-gone")).await.unwrap(), None);
    assert_eq!(store.get(&id("nope")).await.unwrap(), None);
    assert!(matches!(
        store.get(&id("req-bad")).await,
        Err(StoreError::Corrupt { .. })
    ));

    // The failed files: the fileList entries whose status is failed.
    use failed_tasks_store::FilesStore;
    let files = store.files(&id("req-a")).await.unwrap().unwrap();
    assert_eq!(files.failed_files(), 1);
    let list = files.files().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].path.as_str(), "src/f2.go");
    assert_eq!(list[0].operation, failed_tasks_domain::FileOperation::Add);
    assert_eq!(list[0].error_code.as_str(), "UNKNOWN");
    assert_eq!(
        store.files(&id("req-b")).await.unwrap(),
        None,
        "none failed"
    );
    assert_eq!(
        store.files(&id("req-ok")).await.unwrap(),
        None,
        "not a failure"
    );
    assert_eq!(store.files(&id("nope")).await.unwrap(), None);
    assert!(matches!(
        store.put_files(&id("req-a"), &files).await,
        Err(StoreError::Rejected(_))
    ));

    let t = FailedTask::seed_examples().remove(0);
    assert!(
        matches!(store.record(&t).await, Err(StoreError::Rejected(m)) if m.contains("read-only"))
    );
    assert!(matches!(
        store.remove(t.task_id()).await,
        Err(StoreError::Rejected(_))
    ));
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_reads_go_records_on_a_single_server() {
    let server = RedisServer::start();
    check(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_reads_go_records_on_a_cluster() {
    let cluster = RedisCluster::start();
    check(&cluster.url()).await;
}
