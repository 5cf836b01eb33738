//! The retry routes over the memory store: retry now, cancel, resolve, retry by filter,
//! `NextRetryAt` and `Attempts` on the wire, the `retry=` filter, `Recovered`, and what bad
//! input and a store without retries answer (a clear 4xx/501, nothing written).

use std::sync::Arc;
use std::time::Duration;

use failed_tasks_domain::{JitterRng, RetryConfig, RetryPolicy, Timestamp};
use failed_tasks_http::{HttpConfig, Token};
use failed_tasks_query::{Deadlines, FailedTaskService};
use failed_tasks_store::{MemoryStore, RetryQueue, Stores};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    get, request, request_with_body, spawn_service, test_config, Answer, TestServer,
};

const BASE: &str = "/codebase-embedder/api/v1";
const AUTH: (&str, &str) = ("authorization", "Bearer t0ken");
const JSON: (&str, &str) = ("content-type", "application/json");

fn config() -> HttpConfig {
    HttpConfig {
        admin_token: Token::new("t0ken"),
        ..test_config()
    }
}

/// A policy with short delays (1 s doubling up to 5 min, 3 retries), no jitter: the times
/// below are exact.
fn service(store: &Arc<MemoryStore>) -> FailedTaskService {
    let policy = RetryPolicy::new(RetryConfig {
        max_retries: 3,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(300),
        jitter: 0.0,
        ..RetryConfig::default()
    })
    .unwrap();
    FailedTaskService::new(Stores::from(store.clone()), Deadlines::default())
        .with_retry_policy(policy)
        .with_jitter(JitterRng::new(1))
}

async fn server() -> (TestServer, Arc<MemoryStore>, FailedTaskService) {
    let store = Arc::new(MemoryStore::new());
    let service = service(&store);
    (
        spawn_service(service.clone(), config()).await,
        store,
        service,
    )
}

fn failure(id: &str, code: &str, retry_count: u32) -> Value {
    json!({"TaskId": id, "TaskType": "embedding", "ClientId": "c1", "CodebasePath": "/p",
        "StartTime": "2025-01-24T09:00:00Z", "FailTime": "2025-01-24T09:15:00Z", "ErrorCode": code,
        "ErrorMessage": "failed", "RetryCount": retry_count, "ProcessedFiles": 1})
}

async fn admin(server: &TestServer, method: Method, path: &str) -> Answer {
    request(server, method, &format!("{BASE}{path}"), &[AUTH]).await
}

async fn record(server: &TestServer, body: Value) {
    let a = request_with_body(
        server,
        Method::POST,
        &format!("{BASE}/admin/failed-tasks"),
        &[AUTH, JSON],
        body.to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
}

fn ts(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339("t", text).unwrap()
}

#[tokio::test]
async fn retry_now_cancel_resolve_and_the_wire() {
    let (server, store, service) = server().await;
    record(
        &server,
        json!([
            failure("slow", "TIMEOUT_ERROR", 1),
            failure("denied", "PERMISSION_DENIED", 0),
            failure("later", "TIMEOUT_ERROR", 0)
        ]),
    )
    .await;
    // NextRetryAt: FailTime + 1 s x 2^1 for "slow"; null for the final "denied".
    let list = get(&server, &format!("{BASE}/tasks/failed")).await.json();
    let by_id = |id: &str| {
        list["Data"]["Tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["TaskId"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id("slow")["NextRetryAt"], "2025-01-24T09:15:02Z");
    assert_eq!(by_id("denied")["NextRetryAt"], Value::Null);
    assert_eq!(by_id("denied")["FinalFailure"], true);
    let scheduled = get(&server, &format!("{BASE}/tasks/failed?retry=scheduled"))
        .await
        .json();
    assert_eq!(scheduled["Data"]["TotalTasks"], 2);
    let finals = get(&server, &format!("{BASE}/tasks/failed?retry=final"))
        .await
        .json();
    assert_eq!(finals["Data"]["Tasks"][0]["TaskId"], "denied");
    // One task with its attempts.
    let one = get(&server, &format!("{BASE}/tasks/failed/slow"))
        .await
        .json();
    assert_eq!(one["Data"]["NextRetryAt"], "2025-01-24T09:15:02Z");
    assert_eq!(
        one["Data"]["Attempts"],
        json!([{"Attempt":1,"FailTime":"2025-01-24T09:15:00Z","ErrorCode":"TIMEOUT_ERROR",
            "ErrorCategory":"service_timeout","ScheduledBy":null}])
    );

    // Retry now, twice: the second finds it delivered and delivers nothing.
    let a = admin(&server, Method::POST, "/admin/failed-tasks/later/retry").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json()["Data"],
        json!({"TaskId":"later","Attempt":1,"Status":"scheduled"})
    );
    let moved = service
        .deliver_due(ts("2030-01-01T00:00:00Z"), 100)
        .await
        .unwrap();
    assert_eq!(moved.moved, 2, "slow's retry and the one made due now");
    let again = admin(&server, Method::POST, "/admin/failed-tasks/later/retry").await;
    assert_eq!(
        again.json()["Data"],
        json!({"TaskId":"later","Attempt":1,"Status":"already_delivered"})
    );
    assert_eq!(
        service
            .deliver_due(ts("2030-01-01T00:00:00Z"), 100)
            .await
            .unwrap()
            .moved,
        0
    );
    let queue = store.retry_queue();
    let got = queue.claim(10, Duration::from_millis(10)).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|d| d.request.task_id.as_str()).collect();
    assert_eq!(ids, ["slow", "later"], "in due order");
    // Cancel: a delivered retry cannot be called back (409); a final one has none.
    let c = admin(&server, Method::DELETE, "/admin/failed-tasks/slow/retry").await;
    assert_eq!(c.status, StatusCode::CONFLICT);
    assert_eq!(c.json()["Code"], 409);
    let c = admin(&server, Method::DELETE, "/admin/failed-tasks/denied/retry").await;
    assert_eq!(c.json()["Data"]["Status"], "not_scheduled");
    // An explicit override of the final failure, then a cancel of it.
    let o = admin(&server, Method::POST, "/admin/failed-tasks/denied/retry").await;
    assert_eq!(o.json()["Data"]["Status"], "scheduled");
    let c = admin(&server, Method::DELETE, "/admin/failed-tasks/denied/retry").await;
    assert_eq!(
        c.json()["Data"],
        json!({"TaskId":"denied","Attempt":1,"Status":"cancelled"})
    );
    let none = get(&server, &format!("{BASE}/tasks/failed?retry=none"))
        .await
        .json();
    assert_eq!(none["Data"]["Tasks"][0]["TaskId"], "denied");

    // Resolve: gone from the listing, counted as recovered, idempotent; a later retry is 409.
    let r = admin(&server, Method::POST, "/admin/failed-tasks/slow/resolve").await;
    assert_eq!(
        r.json()["Data"],
        json!({"TaskId":"slow","Attempt":null,"Status":"resolved"})
    );
    let r = admin(&server, Method::POST, "/admin/failed-tasks/slow/resolve").await;
    assert_eq!(r.json()["Data"]["Status"], "already_resolved");
    let gone = get(&server, &format!("{BASE}/tasks/failed/slow")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let list = get(&server, &format!("{BASE}/tasks/failed")).await.json();
    assert_eq!(list["Data"]["TotalTasks"], 2);
    let stats = get(&server, &format!("{BASE}/tasks/failed-stats?window=5m"))
        .await
        .json();
    assert_eq!(stats["Data"]["Recovered"], 1);
    let late = admin(&server, Method::POST, "/admin/failed-tasks/slow/retry").await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    assert!(late.json()["Message"]
        .as_str()
        .unwrap()
        .contains("resolved"));

    // The metrics show the counters and gauges.
    let m = String::from_utf8_lossy(&get(&server, "/metrics").await.body).into_owned();
    for line in [
        "failed_tasks_retries_scheduled_total{by=\"policy\"} 2",
        "failed_tasks_retries_scheduled_total{by=\"operator\"} 2",
        "failed_tasks_retries_delivered_total 2",
        "failed_tasks_retries_recovered_total 1",
        "failed_tasks_retries_cancelled_total 1",
        "failed_tasks_retry_queue_pending 2",
    ] {
        assert!(m.contains(line), "{line} missing from\n{m}");
    }
}

#[tokio::test]
async fn retry_by_filter_needs_a_filter_and_counts() {
    let (server, _, service) = server().await;
    let batch: Vec<Value> = (0..12)
        .map(|i| failure(&format!("g{i:02}"), "PERMISSION_DENIED", 0))
        .collect();
    record(&server, Value::Array(batch)).await;
    let bare = admin(&server, Method::POST, "/admin/retries").await;
    assert_eq!(bare.status, StatusCode::BAD_REQUEST);
    assert!(bare.json()["Message"]
        .as_str()
        .unwrap()
        .contains("at least one"));
    let paged = admin(
        &server,
        Method::POST,
        "/admin/retries?category=authorization&pageSize=5",
    )
    .await;
    assert_eq!(paged.status, StatusCode::BAD_REQUEST);
    let a = admin(&server, Method::POST, "/admin/retries?retry=final").await;
    let mut data = a.json()["Data"].clone();
    // The answer keeps its fields and adds the replay that records it.
    let replay = data["ReplayId"].take();
    assert!(replay.is_string(), "{data}");
    assert_eq!(
        data,
        json!({"Retried":12,"AlreadyDelivered":0,"Complete":true,"ReplayId":null})
    );
    assert_eq!(
        service
            .deliver_due(ts("2030-01-01T00:00:00Z"), 100)
            .await
            .unwrap()
            .moved,
        12
    );
    let a = admin(
        &server,
        Method::POST,
        "/admin/retries?category=authorization",
    )
    .await;
    let mut data = a.json()["Data"].clone();
    assert!(data["ReplayId"].take().is_string());
    assert_eq!(
        data,
        json!({"Retried":0,"AlreadyDelivered":12,"Complete":true,"ReplayId":null})
    );
    assert_eq!(
        service
            .deliver_due(ts("2030-01-01T00:00:00Z"), 100)
            .await
            .unwrap()
            .moved,
        0
    );
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_writes_nothing() {
    let (server, _, service) = server().await;
    record(&server, json!(failure("t1", "TIMEOUT_ERROR", 0))).await;
    let before = get(&server, &format!("{BASE}/tasks/failed")).await.body;
    let cases: Vec<(Method, String, &str, StatusCode)> = vec![
        (
            Method::POST,
            "/admin/failed-tasks/nope/retry".into(),
            "",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            "/admin/failed-tasks/nope/retry".into(),
            "",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/admin/failed-tasks/nope/resolve".into(),
            "",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/admin/failed-tasks/%FF/retry".into(),
            "",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/admin/failed-tasks/a%00b/resolve".into(),
            "",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            format!("/admin/failed-tasks/{}/retry", "x".repeat(300)),
            "",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/admin/failed-tasks/t1/retry?now=1".into(),
            "",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/admin/failed-tasks/t1/retry".into(),
            "{\"At\":1}",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/admin/failed-tasks/t1/resolve".into(),
            "x",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/admin/failed-tasks/t1/retry".into(),
            "",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::POST,
            "/admin/failed-tasks/t1/rerun".into(),
            "",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/admin/retries?retry=soon".into(),
            "",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/admin/retries?category=data_error".into(),
            "[1]",
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, path, body, want) in cases {
        let a = request_with_body(
            &server,
            method.clone(),
            &format!("{BASE}{path}"),
            &[AUTH],
            body.to_owned(),
        )
        .await;
        assert_eq!(a.status, want, "{method} {path}: {:?}", a.json());
        assert_eq!(a.json()["Success"], false);
        assert_eq!(a.json()["Data"], Value::Null);
    }
    // Without the token: 401.
    let a = request(
        &server,
        Method::POST,
        &format!("{BASE}/admin/failed-tasks/t1/retry"),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // Nothing changed: the same listing, the retry still due at its own time only.
    assert_eq!(
        get(&server, &format!("{BASE}/tasks/failed")).await.body,
        before
    );
    assert_eq!(
        service
            .deliver_due(ts("2025-01-24T09:15:00Z"), 10)
            .await
            .unwrap()
            .moved,
        0
    );
    assert_eq!(
        service
            .deliver_due(ts("2025-01-24T09:15:01Z"), 10)
            .await
            .unwrap()
            .moved,
        1
    );
    // An empty JSON object is no body (what browsers send): accepted (the retry was just
    // delivered, so it is not delivered again).
    let a = request_with_body(
        &server,
        Method::POST,
        &format!("{BASE}/admin/failed-tasks/t1/retry"),
        &[AUTH, JSON],
        " {} ",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["Data"]["Status"], "already_delivered");
}

#[tokio::test]
async fn a_store_without_retries_answers_501() {
    let store = Arc::new(MemoryStore::new());
    let plain = FailedTaskService::new(crate::helpers::memory(store), Deadlines::default());
    let server = spawn_service(plain, config()).await;
    record(&server, json!(failure("t1", "TIMEOUT_ERROR", 0))).await;
    for (method, path) in [
        (Method::POST, "/admin/failed-tasks/t1/retry"),
        (Method::DELETE, "/admin/failed-tasks/t1/retry"),
        (Method::POST, "/admin/failed-tasks/t1/resolve"),
        (Method::POST, "/admin/retries?category=service_timeout"),
    ] {
        let a = admin(&server, method, path).await;
        assert_eq!(a.status, StatusCode::NOT_IMPLEMENTED, "{path}");
        assert_eq!(a.json()["Code"], 501);
        assert_eq!(
            a.json()["Message"],
            "the memory store does not support retries",
            "{path}"
        );
    }
    let a = get(&server, &format!("{BASE}/tasks/failed?retry=final")).await;
    assert_eq!(a.status, StatusCode::NOT_IMPLEMENTED);
    // The task itself is listed as always, with no retry scheduled.
    let one = get(&server, &format!("{BASE}/tasks/failed/t1"))
        .await
        .json();
    assert_eq!(one["Data"]["NextRetryAt"], Value::Null);
    assert_eq!(one["Data"]["Attempts"], json!([]));
}
