//! Atomicity under concurrency, malformed records, script reloads, record expiry, latency.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use failed_tasks_domain::{
    ErrorCategory, ErrorSignature, FailedTask, ListQuery, NewFailedTask, PageLimits, PageSize,
    TaskFilter, TaskId,
};
use failed_tasks_redis::RedisStore;
use failed_tasks_store::{conformance, StatusStore, StoreError};
use failed_tasks_testkit::RedisServer;
use fred::types::Value;

use crate::helpers;

fn variant(id: usize, n: usize) -> FailedTask {
    FailedTask::new(NewFailedTask {
        task_id: format!("task{id:03}"),
        task_type: ["embedding", "indexing", "cleaning"][n % 3].into(),
        client_id: format!("client{}", n % 4),
        codebase_path: "/p".into(),
        start_time: failed_tasks_domain::Timestamp::from_unix_millis(conformance::BASE_MS).unwrap(),
        fail_time: failed_tasks_domain::Timestamp::from_unix_millis(
            conformance::BASE_MS + (n % 97) as i64 * 1000,
        )
        .unwrap(),
        error_code: ["TIMEOUT_ERROR", "PERMISSION_DENIED", "X"][n % 3].into(),
        error_message: format!("attempt {n}"),
        retry_count: n as u32,
        processed_files: n as u64,
        error_category: Some(ErrorCategory::ALL[n % 5]),
    })
    .unwrap()
}

/// Members `{fail_ms:015}:{id}` of a task, as the store writes them.
fn member_of(t: &FailedTask) -> String {
    format!("{:015}:{}", t.fail_time().unix_millis(), t.task_id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_recorders_leave_every_index_consistent() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    // 50 tasks x 200 writes = 10,000 failures over 300 ids, with changing fail times,
    // categories, task types, clients and codes.
    let writers = (0..50).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            for j in 0..200 {
                let n = w * 200 + j;
                store.record(&variant((n * 7) % 300, n)).await.unwrap();
            }
        })
    });
    for w in futures_util::future::join_all(writers).await {
        w.unwrap();
    }

    // Check with raw commands: every record is in exactly its seven indexes, and every index
    // entry has its record; then the counters and groups against the records.
    let raw = helpers::raw(&server.url()).await;
    let prefix = store.config().key_prefix.clone();
    let keys = helpers::keys_of(&raw, &prefix).await;
    let mut records: BTreeMap<String, FailedTask> = BTreeMap::new();
    for k in keys.iter().filter(|k| k.contains(":task:")) {
        let id = k.rsplit(":task:").next().unwrap();
        let t = store
            .get(&TaskId::parse(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        records.insert(k.clone(), t);
    }
    assert_eq!(records.len(), 300, "one record per id");
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in records.values() {
        let m = member_of(t);
        let state = failed_tasks_store::RetryStore::retry_details(&store, t.task_id())
            .await
            .unwrap()
            .unwrap()
            .status
            .state();
        for idx in [
            "all".to_owned(),
            format!("retry:{state}"),
            format!("category:{}", t.error_category()),
            format!("type:{}", t.task_type()),
            format!("client:{}", t.client_id()),
            format!("code:{}", t.error_code()),
            format!("sig:{}", ErrorSignature::of_task(t)),
        ] {
            expected
                .entry(format!("{prefix}:idx:{idx}"))
                .or_default()
                .insert(m.clone());
        }
    }
    let mut actual: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for k in keys.iter().filter(|k| k.contains(":idx:")) {
        let members: Vec<String> = helpers::cmd(
            &raw,
            &prefix,
            "ZRANGE",
            vec![k.as_str().into(), 0i64.into(), (-1i64).into()],
        )
        .await;
        actual.insert(k.clone(), members.into_iter().collect());
    }
    assert_eq!(actual, expected, "indexes differ from the records");
    // The minute counters and the groups equal brute force over the same records.
    let tasks: Vec<FailedTask> = records.values().cloned().collect();
    let base_minute = conformance::BASE_MS / 60_000;
    crate::stats::assert_consistent(&store, &tasks, base_minute - 1, base_minute + 5).await;
    let page = store
        .list(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap();
    assert_eq!(page.total, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_skipped_counted_and_reported() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    let prefix = store.config().key_prefix.clone();
    for n in 0..6 {
        store.record(&variant(n, n)).await.unwrap();
    }
    let raw = helpers::raw(&server.url()).await;
    let good = |n: usize| {
        let t = variant(n, n);
        let json = format!(
            "{{\"TaskId\":\"{}\",\"TaskType\":\"embedding\",\"ClientId\":\"c\",\"CodebasePath\":\"/p\",\
             \"StartTime\":\"2025-01-24T09:00:00Z\",\"FailTime\":\"2025-01-24T09:00:00Z\",\
             \"ErrorCode\":\"E\",\"ErrorMessage\":\"m\",\"RetryCount\":1,\"ProcessedFiles\":2,\
             \"ErrorCategory\":\"CATEGORY\"}}",
            t.task_id()
        );
        let header = format!(
            "v1\t{}\t{}\t{}\t{}\t{}\n",
            member_of(&t),
            t.error_category(),
            t.task_type(),
            t.client_id(),
            t.error_code()
        );
        (header, json)
    };
    let (h1, j1) = good(1);
    let (h2, j2) = good(2);
    // A current (v4) record as stored, its header then broken: an unknown category.
    let v4: String = helpers::cmd(
        &raw,
        &prefix,
        "GET",
        vec![format!("{prefix}:task:task003").into()],
    )
    .await;
    let category = variant(3, 3).error_category().as_str().to_owned();
    let bad_v4 = v4.replacen(&format!("\t{category}\t"), "\tsometimes\t", 1);
    assert_ne!(bad_v4, v4);
    let (h3, j3) = good(3);
    let bad_values = [
        (1, format!("{h1}{}", j1.replace("CATEGORY", "sometimes"))), // unknown category
        (
            2,
            format!(
                "{h2}{}",
                j2.replace("\"RetryCount\":1", "\"RetryCount\":\"one\"")
            ),
        ), // wrong type
        (3, bad_v4),                                                 // bad v4 header
        (4, "no header at all".to_owned()),                          // no header
    ];
    let _ = (h3, j3);
    for (n, v) in &bad_values {
        let key = format!("{prefix}:task:task{n:03}");
        let _: Value =
            helpers::cmd(&raw, &prefix, "SET", vec![key.into(), v.as_str().into()]).await;
    }
    let before = RedisStore::corrupt_records_skipped();
    let page = store
        .list(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap();
    let ids: Vec<&str> = page.tasks.iter().map(|t| t.task_id().as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"task000") && ids.contains(&"task005"));
    assert_eq!(page.skipped_corrupt, 4);
    assert_eq!(page.total, 2, "total leaves skipped records out");
    assert!(RedisStore::corrupt_records_skipped() >= before + 4);
    // The stored-records path answers the same page (it falls back to the decoded one).
    let stored = failed_tasks_store::StoredPages::list_stored(
        &store,
        &ListQuery::first_page(PageLimits::DEFAULT),
    )
    .await
    .unwrap();
    assert_eq!((stored.total, stored.skipped_corrupt), (2, 4));

    // Small pages still reach every good task, with a cursor past the corrupt ones.
    let (ids, _) = conformance::walk(&store, &TaskFilter::all(), 1).await;
    assert_eq!(ids.len(), 2);

    for n in 1..=4 {
        let id = TaskId::parse(format!("task{n:03}")).unwrap();
        match store.get(&id).await {
            Err(StoreError::Corrupt { key, .. }) => assert!(key.ends_with(id.as_str())),
            other => panic!("get of corrupt task{n:03}: {other:?}"),
        }
    }
    // Recording over a corrupt record repairs it; removing one clears it.
    store.record(&variant(1, 1)).await.unwrap();
    assert!(store
        .get(&TaskId::parse("task001").unwrap())
        .await
        .unwrap()
        .is_some());
    assert!(store
        .remove(&TaskId::parse("task004").unwrap())
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_reloaded_after_script_flush_and_records_expire() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    let prefix = store.config().key_prefix.clone();
    let raw = helpers::raw(&server.url()).await;
    store.record(&variant(1, 1)).await.unwrap();
    let _: Value = helpers::cmd(&raw, &prefix, "SCRIPT", vec!["FLUSH".into()]).await;
    store.record(&variant(2, 2)).await.unwrap();
    assert!(store
        .remove(&TaskId::parse("task001").unwrap())
        .await
        .unwrap());
    // A record carries an expiry: max age + slack after its fail time, at least the slack.
    let ttl: i64 = helpers::cmd(
        &raw,
        &prefix,
        "PTTL",
        vec![format!("{prefix}:task:task002").into()],
    )
    .await;
    let slack = store.config().record_ttl_slack.as_millis() as i64;
    assert!(ttl > 0 && ttl <= slack + 1000, "ttl {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_latency_at_one_thousand_tasks() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    let tasks = conformance::mixed_tasks(1000);
    let started = Instant::now();
    let writes = tasks.chunks(100).map(|chunk| {
        let store = store.clone();
        let chunk = chunk.to_vec();
        async move {
            for t in &chunk {
                store.record(t).await.unwrap();
            }
        }
    });
    futures_util::future::join_all(writes).await;
    let record_rate = 1000.0 / started.elapsed().as_secs_f64();
    let query = ListQuery {
        filter: TaskFilter::all(),
        page_size: PageSize::new(50, PageLimits::DEFAULT).unwrap(),
        cursor: None,
    };
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        let page = store.list(&query).await.unwrap();
        assert_eq!(page.tasks.len(), 50);
    }
    let per_page = started.elapsed() / rounds;
    eprintln!(
        "page of 50 at 1,000 tasks: {per_page:?} per list (debug build); \
         recording: {record_rate:.0}/s with 10 concurrent writers"
    );
    assert!(per_page < Duration::from_millis(100), "{per_page:?}");
}
