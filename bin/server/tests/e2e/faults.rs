//! Redis faults as an HTTP client sees them, on private redis-servers.

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::client::{get, get_text, post};
use failed_tasks_testkit::RedisServer;

use crate::LIST;

/// A batch of `n` tasks with ids `{name}-{j}`.
fn batch(name: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|j| {
                json!({"TaskId": format!("{name}-{j}"), "TaskType": "embedding",
                    "ClientId": format!("client{}", j % 5), "CodebasePath": "/projects/p",
                    "FailTime": "2025-01-24T09:15:00Z", "ErrorCode": "TIMEOUT_ERROR",
                    "ErrorMessage": "the embedder timed out", "ErrorCategory": "service_timeout"})
            })
            .collect(),
    )
}

/// A Redis that reaches `maxmemory` under `noeviction`: the batch it refuses answers 507
/// "store is full" (not a generic 500), none of its tasks is stored, every acknowledged task
/// is, and the metrics count the refusal as `kind="full"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_answers_507_and_stores_nothing_of_the_refused_batch() {
    let redis =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    let env = crate::serve(crate::redis_store_at(&redis.url()).await).await;
    let mut acknowledged = 0u64;
    let mut refused = None;
    for b in 0..20 {
        let (status, v) = post(&env, batch(&format!("b{b}"), 1000)).await;
        match status {
            StatusCode::OK => acknowledged += 1,
            StatusCode::INSUFFICIENT_STORAGE => {
                refused = Some(v);
                break;
            }
            other => panic!("batch {b}: {other} {v}"),
        }
    }
    let v = refused.expect("4 MB are full within 20 batches of 1,000 tasks");
    assert!(acknowledged >= 1, "the first batch fits");
    assert_eq!(v["Code"], 507, "{v}");
    assert_eq!(v["Success"], false);
    assert!(
        v["Message"].as_str().unwrap().contains("store is full"),
        "{v}"
    );
    let page = get(&env, &format!("{LIST}?pageSize=1")).await;
    assert_eq!(page["Data"]["TotalTasks"], acknowledged * 1000, "{page}");
    let metrics = get_text(&env, "/metrics").await;
    assert!(
        metrics.contains("failed_tasks_store_errors_total{kind=\"full\"} 1"),
        "{metrics}"
    );
}
