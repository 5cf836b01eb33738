//! The failed files of a task on Redis: their key, its expiry, and what a file costs.

use failed_tasks_domain::{NewFailedFile, TaskFiles};
use failed_tasks_store::conformance::task;
use failed_tasks_store::{FilesStore, StatusStore};
use failed_tasks_testkit::RedisServer;

use crate::helpers;

/// 1,000 files of a realistic codebase (paths of 40 to 50 bytes, a few error codes and
/// messages) take at most 120 bytes each in Redis, measured with `MEMORY USAGE`; the key
/// expires with the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_files_cost_at_most_120_bytes_each() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    let t = task(
        "files-mem",
        0,
        failed_tasks_domain::ErrorCategory::ServiceTimeout,
        "embedding",
        "c1",
        "EMBED_FAILED",
    );
    store.record(&t).await.unwrap();
    let codes = ["EMBEDDING_TIMEOUT", "RATE_LIMITED", "PARSE_ERROR"];
    let messages = [
        "embedding provider did not answer within 30s",
        "429 Too Many Requests from the embedding provider",
        "could not split the file into chunks",
    ];
    let raw: Vec<NewFailedFile> = (0..1000)
        .map(|i| NewFailedFile {
            path: format!("src/components/module_{:02}/widget_{i:04}_view.tsx", i % 37),
            operation: ["add", "modify", "delete"][i % 3].into(),
            error_code: codes[i % 3].into(),
            error_message: messages[i % 3].into(),
        })
        .collect();
    let files = TaskFiles::new(None, Some(raw), 10_000, "")
        .unwrap()
        .unwrap();
    assert!(store.put_files(t.task_id(), &files).await.unwrap());
    assert_eq!(store.files(t.task_id()).await.unwrap().unwrap(), files);

    let raw = helpers::raw(&server.url()).await;
    let key = store.keys().files("files-mem");
    let bytes: i64 = helpers::cmd(
        &raw,
        &key,
        "MEMORY",
        vec![
            "USAGE".into(),
            key.as_str().into(),
            "SAMPLES".into(),
            0.into(),
        ],
    )
    .await;
    eprintln!("MEMORY USAGE of a key of 1,000 failed files: {bytes} bytes");
    assert!(
        bytes > 0 && bytes <= 120 * 1000,
        "{bytes} bytes for 1,000 files"
    );
    let ttl: i64 = helpers::cmd(&raw, &key, "PTTL", vec![key.as_str().into()]).await;
    let record = store.keys().record("files-mem");
    let record_ttl: i64 = helpers::cmd(&raw, &record, "PTTL", vec![record.as_str().into()]).await;
    assert!(
        ttl > 0 && (record_ttl - ttl).abs() < 60_000,
        "{ttl} vs {record_ttl}"
    );
}
