//! A worker receives the failed files of a retry through the facade's retry worker,
//! re-embeds them, succeeds on some and reports the rest as the next failure, whose retry
//! carries only those; on the memory store and on Redis (inline and by key). Delivery is
//! driven by the test (`without_scheduler`).

use std::time::Duration;

use failed_tasks::domain::{NewFailedFile, RetryFiles, RetryRequest, TaskFiles};
use failed_tasks::{FailedTask, FailedTasks, NewFailedTask, RedisConfig, Timestamp};
use failed_tasks_testkit::RedisServer;

fn failure(retry_count: u32, ago_ms: i64) -> FailedTask {
    let at = Timestamp::from_unix_millis(Timestamp::now().unix_millis() - ago_ms).unwrap();
    FailedTask::new(NewFailedTask {
        task_id: "codebase-sync".into(),
        task_type: "embedding".into(),
        client_id: "client123".into(),
        codebase_path: "/projects/myapp".into(),
        start_time: at,
        fail_time: at,
        error_code: "RATE_LIMITED".into(),
        retry_count,
        ..NewFailedTask::default()
    })
    .unwrap()
}

fn files(paths: &[String]) -> TaskFiles {
    let raw = paths
        .iter()
        .map(|p| NewFailedFile {
            path: p.clone(),
            operation: "modify".into(),
            error_code: "RATE_LIMITED".into(),
            error_message: "429".into(),
        })
        .collect();
    TaskFiles::new(None, Some(raw), 10_000, "")
        .unwrap()
        .unwrap()
}

/// Deliver what is due and claim the one request.
async fn next_retry(failures: &FailedTasks) -> RetryRequest {
    let worker = failures.retry_worker("w1").await.unwrap();
    failures.deliver_due(Timestamp::now(), 100).await.unwrap();
    let mut got = worker
        .queue()
        .claim(10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    let d = got.pop().unwrap();
    worker
        .queue()
        .ack(std::slice::from_ref(&d.id))
        .await
        .unwrap();
    d.request
}

/// The paths a retry names: inline, or read page by page from the service.
async fn paths_of(failures: &FailedTasks, r: &RetryRequest) -> Vec<String> {
    let Some(RetryFiles {
        paths, files_key, ..
    }) = &r.files
    else {
        panic!("the retry carries no files: {r:?}");
    };
    if let Some(p) = paths {
        return p.clone();
    }
    assert!(files_key.is_some());
    let limits = failed_tasks::PageLimits::DEFAULT;
    let mut q = failed_tasks::domain::FilesQuery {
        page_size: failed_tasks::domain::PageSize::new(7, limits).unwrap(),
        after: None,
        error_code: None,
    };
    let mut out = Vec::new();
    loop {
        let page = failures.failed_files(&r.task_id, &q).await.unwrap();
        out.extend(page.files.iter().map(|f| f.path.as_str().to_owned()));
        match page.next_cursor {
            Some(c) => q.after = Some(c),
            None => return out,
        }
    }
}

async fn partial_success(failures: &FailedTasks, n: usize) {
    let all: Vec<String> = (0..n).map(|i| format!("src/file_{i:02}.rs")).collect();
    // Failed ten minutes ago: its first retry is due.
    failures
        .record_failures_with_files(&[failure(0, 600_000)], &[Some(files(&all))])
        .await
        .unwrap();
    let first = next_retry(failures).await;
    assert_eq!(first.attempt, 1);
    assert_eq!(first.files.as_ref().unwrap().failed_files, n as u64);
    assert_eq!(paths_of(failures, &first).await, all);

    // Re-embedded: every other file still fails; reported as the next failure.
    let still: Vec<String> = all.iter().step_by(2).cloned().collect();
    failures
        .record_failures_with_files(&[failure(first.attempt, 300_000)], &[Some(files(&still))])
        .await
        .unwrap();
    let second = next_retry(failures).await;
    assert_eq!(second.attempt, 2);
    assert_eq!(
        second.files.as_ref().unwrap().failed_files,
        still.len() as u64
    );
    assert_eq!(paths_of(failures, &second).await, still);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_retries_only_the_failed_files_in_memory() {
    let failures = FailedTasks::builder()
        .without_scheduler()
        .start()
        .await
        .unwrap();
    partial_success(&failures, 24).await;
    failures.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_retries_only_the_failed_files_on_redis() {
    for n in [6, 24] {
        let redis = RedisServer::start();
        let failures = FailedTasks::builder()
            .redis(RedisConfig {
                url: redis.url(),
                ..RedisConfig::default()
            })
            .without_scheduler()
            .start()
            .await
            .unwrap();
        // 6 files go inline, then 3; 24 by key, then 12 (more than the 10 inline).
        partial_success(&failures, n).await;
        failures.shutdown().await;
    }
}
