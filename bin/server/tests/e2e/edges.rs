//! Fail times at the edges, on every store: beyond the allowed clock skew is refused (400
//! naming the field, nothing stored); older than the retention age is recorded and named in
//! the answer (`PastRetention`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use failed_tasks_domain::Timestamp;
use failed_tasks_query::{Deadlines, FailTimeLimits, FailedTaskService};
use failed_tasks_store::Stores;
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::client::{get, post};

use crate::LIST;
const DAY_MS: i64 = 24 * 3600 * 1000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn at(id: &str, fail_ms: i64) -> Value {
    let fail = Timestamp::saturating_from_unix_millis(fail_ms).to_rfc3339();
    json!({"TaskId": id, "TaskType": "embedding", "ClientId": "c1", "FailTime": fail,
        "ErrorCode": "TIMEOUT_ERROR", "ErrorCategory": "service_timeout"})
}

async fn scenario(stores: Stores) {
    // Recording schedules no retries here: only the fail times matter.
    let stores = Stores {
        retries: None,
        ..stores
    };
    let service = FailedTaskService::new(stores, Deadlines::default()).with_fail_time_limits(
        FailTimeLimits {
            clock_skew: Duration::from_secs(300),
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
        },
    );
    let env = crate::serve_service(service).await;
    let now = now_ms();

    // Beyond the skew: refused, naming the field (and the item of a batch); nothing stored.
    let (status, v) = post(&env, json!([at("ok", now), at("ahead", now + 3_600_000)])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let msg = v["Message"].as_str().unwrap();
    assert!(msg.contains("[1].FailTime"), "{msg}");
    let (status, v) = post(&env, at("y9999", 253_402_300_799_000)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["Message"].as_str().unwrap().contains("FailTime"), "{v}");
    assert_eq!(get(&env, LIST).await["Data"]["TotalTasks"], 0);

    // Within the skew: recorded.
    let (status, v) = post(&env, at("soon", now + 60_000)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["Data"], json!({"Recorded":1,"Created":1,"Updated":0}));

    // Older than the retention age: recorded, and named in the answer.
    let (status, v) = post(
        &env,
        json!([at("recent", now - DAY_MS), at("old", now - 40 * DAY_MS)]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        v["Data"],
        json!({"Recorded":2,"Created":2,"Updated":0,"PastRetention":["old"]})
    );
    let page = get(&env, LIST).await;
    assert_eq!(page["Data"]["TotalTasks"], 3, "{page}");
}

#[tokio::test]
async fn fail_times_at_the_edges_on_the_memory_store() {
    scenario(crate::memory_store().await).await;
}

#[tokio::test]
async fn fail_times_at_the_edges_on_the_redis_store() {
    scenario(crate::redis_store().await).await;
}
