//! The `signature` filter, the minute counters, the attempts and the failure groups:
//! maintained by the write scripts, checked against brute force.

use std::collections::BTreeSet;

use failed_tasks_domain::{
    Cursor, ErrorSignature, FailedTask, ListQuery, PageLimits, PageSize, TaskFilter,
};
use failed_tasks_redis::RedisStore;
use failed_tasks_store::conformance::{expected, mixed_tasks, walk};
use failed_tasks_store::StatusStore;
use failed_tasks_testkit::RedisServer;

use crate::helpers;

/// Every page of `filter` through the stored-bytes fast path, as task ids.
async fn walk_json(store: &RedisStore, filter: &TaskFilter, size: u32) -> (Vec<String>, u64) {
    let mut ids = Vec::new();
    let mut cursor: Option<Cursor> = None;
    let mut total = None;
    loop {
        let page = store
            .list_json(&ListQuery {
                filter: filter.clone(),
                page_size: PageSize::new(size, PageLimits::DEFAULT).unwrap(),
                cursor: cursor.take(),
            })
            .await
            .unwrap();
        total.get_or_insert(page.total);
        for json in &page.tasks {
            let v: serde_json::Value = serde_json::from_slice(json).unwrap();
            ids.push(v["TaskId"].as_str().unwrap().to_owned());
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return (ids, total.unwrap_or(0)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_filter_uses_its_index_in_list_and_list_json() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    let tasks = mixed_tasks(300);
    store.record_batch(&tasks).await.unwrap();
    let signatures: BTreeSet<ErrorSignature> = tasks.iter().map(ErrorSignature::of_task).collect();
    assert!(signatures.len() > 1, "the tasks fall into several groups");
    let unknown = ErrorSignature::parse("0123456789abcdef").unwrap();
    for sig in signatures.iter().chain([&unknown]) {
        let alone = TaskFilter {
            signature: Some(sig.clone()),
            ..TaskFilter::all()
        };
        let with_client = TaskFilter {
            client_id: Some(tasks[1].client_id().clone()),
            ..alone.clone()
        };
        for f in [&alone, &with_client] {
            let want = expected(&tasks, f);
            for size in [1, 7, 1000] {
                let (ids, totals) = walk(&store, f, size).await;
                assert_eq!(ids, want, "list {f:?} size {size}");
                assert!(
                    totals.iter().all(|t| *t as usize == want.len()),
                    "{totals:?}"
                );
                let (ids, total) = walk_json(&store, f, size).await;
                assert_eq!(ids, want, "list_json {f:?} size {size}");
                assert_eq!(total as usize, want.len());
            }
        }
    }
}

/// Records written by an earlier version (a `v1` header, no signature) are still listed,
/// updated and removed cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_with_a_v1_header_are_still_served_and_replaced() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    let prefix = store.config().key_prefix.clone();
    let raw = helpers::raw(&server.url()).await;
    let tasks: Vec<FailedTask> = mixed_tasks(3);
    // Write them as the previous version did: v1 header, five indexes.
    for t in &tasks {
        let member = format!("{:015}:{}", t.fail_time().unix_millis(), t.task_id());
        let stored = format!(
            "v1\t{member}\t{}\t{}\t{}\t{}\n{}",
            t.error_category(),
            t.task_type(),
            t.client_id(),
            t.error_code(),
            serde_json::to_string(&serde_json::json!({
                "TaskId": t.task_id().as_str(), "TaskType": t.task_type().as_str(),
                "ClientId": t.client_id().as_str(), "CodebasePath": t.codebase_path().as_str(),
                "StartTime": t.start_time().to_rfc3339(), "FailTime": t.fail_time().to_rfc3339(),
                "ErrorCode": t.error_code().as_str(), "ErrorMessage": t.error_message().as_str(),
                "RetryCount": t.retry_count(), "ProcessedFiles": t.processed_files(),
                "ErrorCategory": t.error_category().as_str(),
            }))
            .unwrap()
        );
        let _: fred::types::Value = helpers::cmd(
            &raw,
            &prefix,
            "SET",
            vec![
                format!("{prefix}:task:{}", t.task_id()).into(),
                stored.into(),
            ],
        )
        .await;
        for idx in [
            "all".to_owned(),
            format!("category:{}", t.error_category()),
            format!("type:{}", t.task_type()),
            format!("client:{}", t.client_id()),
            format!("code:{}", t.error_code()),
        ] {
            let _: fred::types::Value = helpers::cmd(
                &raw,
                &prefix,
                "ZADD",
                vec![
                    format!("{prefix}:idx:{idx}").into(),
                    0i64.into(),
                    member.as_str().into(),
                ],
            )
            .await;
        }
    }
    let (ids, _) = walk(&store, &TaskFilter::all(), 10).await;
    assert_eq!(ids, expected(&tasks, &TaskFilter::all()));
    let (json_ids, _) = walk_json(&store, &TaskFilter::all(), 10).await;
    assert_eq!(json_ids, ids);
    // Re-recording upgrades the record (now in its group); removing clears everything.
    store.record(&tasks[0]).await.unwrap();
    let f = TaskFilter {
        signature: Some(ErrorSignature::of_task(&tasks[0])),
        ..TaskFilter::all()
    };
    assert_eq!(
        walk(&store, &f, 10).await.0,
        [tasks[0].task_id().to_string()]
    );
    for t in &tasks {
        assert!(store.remove(t.task_id()).await.unwrap());
    }
    assert_eq!(helpers::keys_of(&raw, &prefix).await, Vec::<String>::new());
}
