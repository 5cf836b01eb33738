//! The HTTP adapter end to end: a real hyper server on an ephemeral loopback port, a real
//! client, the contract's envelope, statuses, headers and limits.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod admin;
mod audit;
mod conns;
mod export;
mod files;
mod gates;
mod groups;
mod helpers;
mod metrics;
mod openapi;
mod replays;
mod retries;
mod roles;
mod search;
mod slow_readers;
mod stats;
mod stored;
mod strict;
mod successes;
mod ui;

use std::sync::Arc;
use std::time::{Duration, Instant};

use failed_tasks_domain::FailedTask;
use failed_tasks_query::Deadlines;
use failed_tasks_store::{MemoryStore, MockStatusStore, StatusStore, StoreError};
use helpers::{get, memory, request, spawn_app, tasks_only, test_config, SlowList, TestServer};
use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIST: &str = "/codebase-embedder/api/v1/tasks/failed";

async fn seeded() -> TestServer {
    let store = MemoryStore::new();
    for t in FailedTask::seed_examples() {
        store.record(&t).await.unwrap();
    }
    spawn_app(memory(Arc::new(store)), Deadlines::default(), test_config()).await
}

/// The source document's example tasks, as the contract prints them, plus the additive
/// `NextRetryAt` (none scheduled: this server records without retries) and `FinalFailure`
/// of the default retry policy (3 retries of 8 made; authorization is never
/// retried; 1 retry of 8 made).
fn seed_json(id: &str) -> serde_json::Value {
    match id {
        "task_001" => json!({"TaskId":"task_001","TaskType":"embedding","ClientId":"client123",
            "CodebasePath":"/projects/myapp","StartTime":"2025-01-24T09:00:00Z","FailTime":"2025-01-24T09:15:00Z",
            "ErrorCode":"TIMEOUT_ERROR","ErrorMessage":"向量嵌入服务超时，请求超过30秒未响应","RetryCount":3,
            "ProcessedFiles":75,"ErrorCategory":"service_timeout","NextRetryAt":null,"FinalFailure":false}),
        "task_002" => json!({"TaskId":"task_002","TaskType":"indexing","ClientId":"client456",
            "CodebasePath":"/projects/another","StartTime":"2025-01-24T09:20:00Z","FailTime":"2025-01-24T09:22:00Z",
            "ErrorCode":"PERMISSION_DENIED","ErrorMessage":"没有权限访问指定代码库","RetryCount":0,
            "ProcessedFiles":0,"ErrorCategory":"authorization","NextRetryAt":null,"FinalFailure":true}),
        "task_003" => json!({"TaskId":"task_003","TaskType":"cleaning","ClientId":"client789",
            "CodebasePath":"/projects/old","StartTime":"2025-01-24T10:00:00Z","FailTime":"2025-01-24T10:01:00Z",
            "ErrorCode":"STORAGE_ERROR","ErrorMessage":"存储空间不足，无法完成清理操作","RetryCount":1,
            "ProcessedFiles":50,"ErrorCategory":"resource_exhausted","NextRetryAt":null,"FinalFailure":false}),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn lists_the_seed_tasks_newest_first_field_for_field() {
    let server = seeded().await;
    let a = get(&server, LIST).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(
        a.json(),
        json!({"Code":0,"Message":"ok","Success":true,"Data":{"TotalTasks":3,
            "Tasks":[seed_json("task_003"), seed_json("task_002"), seed_json("task_001")],
            "NextCursor":null}})
    );
}

#[tokio::test]
async fn every_other_method_is_405_with_allow_get() {
    let server = seeded().await;
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        for path in [LIST, "/codebase-embedder/api/v1/tasks/failed/task_001"] {
            let a = request(&server, method.clone(), path, &[]).await;
            assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(a.header("allow"), Some("GET"));
            assert_eq!(a.header("content-type"), Some("application/json"));
            assert_eq!(
                a.json(),
                json!({"Code":405,"Message":"method not allowed","Success":false,"Data":null})
            );
        }
    }
}

#[tokio::test]
async fn unknown_paths_are_404_with_the_envelope() {
    let server = seeded().await;
    for path in [
        "/",
        "/codebase-embedder/api/v1/tasks",
        "/codebase-embedder/api/v2/tasks/failed",
        "/tasks/failed",
    ] {
        let a = get(&server, path).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            a.json(),
            json!({"Code":404,"Message":"not found","Success":false,"Data":null})
        );
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let server = seeded().await;
    let a = get(&server, LIST).await;
    let id = a.header("x-request-id").expect("x-request-id").to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let b = get(&server, LIST).await;
    assert_ne!(
        b.header("x-request-id"),
        Some(id.as_str()),
        "ids are per request"
    );
    // A client's own id is kept, so logs on both sides line up.
    let c = request(
        &server,
        Method::GET,
        "/nope",
        &[("x-request-id", "abc-123")],
    )
    .await;
    assert_eq!(c.header("x-request-id"), Some("abc-123"));
    // A control character in it is not echoed.
    let d = request(&server, Method::DELETE, LIST, &[("x-request-id", "a b")]).await;
    assert_ne!(d.header("x-request-id"), Some("a b"));
    assert!(d.header("x-request-id").is_some());
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let server = seeded().await;
    for (query, name) in [
        ("pageSize=0", "pageSize"),
        ("pageSize=5000", "pageSize"),
        ("category=bogus", "category"),
        ("since=not-a-time", "since"),
        ("cursor=tampered", "cursor"),
        ("color=red", "color"),
    ] {
        let a = get(&server, &format!("{LIST}?{query}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query}");
        let v = a.json();
        assert_eq!(v["Code"], 400);
        assert_eq!(v["Success"], false);
        assert_eq!(v["Data"], serde_json::Value::Null);
        let msg = v["Message"].as_str().unwrap();
        assert!(
            msg.contains(name),
            "{query}: message {msg:?} does not name {name}"
        );
    }
}

#[tokio::test]
async fn pages_follow_the_cursor_and_filters_apply() {
    let server = seeded().await;
    let first = get(&server, &format!("{LIST}?pageSize=2")).await.json();
    assert_eq!(first["Data"]["TotalTasks"], 3);
    assert_eq!(
        first["Data"]["Tasks"],
        json!([seed_json("task_003"), seed_json("task_002")])
    );
    let cursor = first["Data"]["NextCursor"]
        .as_str()
        .expect("a next cursor")
        .to_owned();
    let second = get(&server, &format!("{LIST}?pageSize=2&cursor={cursor}"))
        .await
        .json();
    assert_eq!(second["Data"]["Tasks"], json!([seed_json("task_001")]));
    assert_eq!(second["Data"]["NextCursor"], serde_json::Value::Null);

    let filtered = get(&server, &format!("{LIST}?category=authorization"))
        .await
        .json();
    assert_eq!(filtered["Data"]["TotalTasks"], 1);
    assert_eq!(filtered["Data"]["Tasks"], json!([seed_json("task_002")]));
    let window = get(
        &server,
        &format!("{LIST}?since=2025-01-24T09:15:00Z&until=2025-01-24T17:22:00%2B08:00"),
    )
    .await
    .json();
    assert_eq!(
        window["Data"]["Tasks"],
        json!([seed_json("task_002"), seed_json("task_001")])
    );
}

#[tokio::test]
async fn one_task_by_id_and_404_when_absent() {
    let store = MemoryStore::new();
    let mut raw = FailedTask::seed_examples()[0].clone().into_parts();
    raw.task_id = "repo/a b#1".into();
    store.record(&FailedTask::new(raw).unwrap()).await.unwrap();
    let server = spawn_app(memory(Arc::new(store)), Deadlines::default(), test_config()).await;
    let a = get(
        &server,
        "/codebase-embedder/api/v1/tasks/failed/repo%2Fa%20b%231",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["Data"]["TaskId"], "repo/a b#1");
    let b = get(&server, "/codebase-embedder/api/v1/tasks/failed/task_999").await;
    assert_eq!(b.status, StatusCode::NOT_FOUND);
    assert_eq!(b.json()["Code"], 404);
    assert_eq!(b.json()["Data"], serde_json::Value::Null);
}

fn store_failing_ping(err: StoreError) -> failed_tasks_store::Stores {
    let mut store = MockStatusStore::new();
    store.expect_ping().returning(move || Err(err.clone()));
    store.expect_list().never();
    store.expect_condition().returning(Default::default);
    tasks_only(Arc::new(store))
}

#[tokio::test]
async fn unreachable_store_is_503_with_the_source_message() {
    let server = spawn_app(
        store_failing_ping(StoreError::Unavailable("connection refused".into())),
        Deadlines::default(),
        test_config(),
    )
    .await;
    let started = Instant::now();
    let a = get(&server, LIST).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a known-down store answers at once"
    );
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.header("retry-after"), Some("5"));
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert_eq!(
        a.json(),
        json!({"Code":500,"Message":"Redis服务不可用，请稍后再试","Success":false,"Data":null})
    );
    let r = get(&server, "/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    let h = get(&server, "/healthz").await;
    assert_eq!(
        h.status,
        StatusCode::OK,
        "liveness does not depend on the store"
    );
}

/// A store whose ping never answers.
struct Hanging;

#[async_trait::async_trait]
impl StatusStore for Hanging {
    async fn ping(&self) -> Result<(), StoreError> {
        std::future::pending().await
    }
    async fn list(
        &self,
        _: &failed_tasks_domain::ListQuery,
    ) -> Result<failed_tasks_store::FailedTaskPage, StoreError> {
        std::future::pending().await
    }
    async fn get(&self, _: &failed_tasks_domain::TaskId) -> Result<Option<FailedTask>, StoreError> {
        std::future::pending().await
    }
    async fn record(
        &self,
        _: &FailedTask,
    ) -> Result<failed_tasks_store::RecordOutcome, StoreError> {
        std::future::pending().await
    }
    async fn record_batch(
        &self,
        _: &[FailedTask],
    ) -> Result<Vec<failed_tasks_store::RecordOutcome>, StoreError> {
        std::future::pending().await
    }
    async fn remove(&self, _: &failed_tasks_domain::TaskId) -> Result<bool, StoreError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_hanging_store_is_503_within_the_health_deadline() {
    let deadlines = Deadlines {
        health_check: Duration::from_millis(300),
        request: Duration::from_secs(2),
    };
    let server = spawn_app(tasks_only(Arc::new(Hanging)), deadlines, test_config()).await;
    let started = Instant::now();
    let a = get(&server, LIST).await;
    let took = started.elapsed();
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["Message"], "Redis服务不可用，请稍后再试");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "took {took:?}"
    );
}

#[tokio::test]
async fn query_failure_is_500_without_internal_detail() {
    let mut store = MockStatusStore::new();
    store.expect_ping().returning(|| Ok(()));
    // No stored-JSON fast path (a tasks-only store): the listing goes to `list`.
    store.expect_list().returning(|_| {
        Err(StoreError::Rejected(
            "WRONGTYPE Operation against a key holding the wrong kind of value".into(),
        ))
    });
    let server = spawn_app(
        tasks_only(Arc::new(store)),
        Deadlines::default(),
        test_config(),
    )
    .await;
    let a = get(&server, LIST).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        a.json(),
        json!({"Code":500,"Message":"查询失败任务时发生内部错误","Success":false,"Data":null})
    );
    let body = String::from_utf8_lossy(&a.body);
    assert!(
        !body.contains("WRONGTYPE"),
        "internal detail leaked: {body}"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let server = seeded().await;
    let h = get(&server, "/healthz").await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.json()["Data"]["Status"], "alive");
    let r = get(&server, "/readyz").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["Data"]["Status"], "ready");
}

async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    within: Duration,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_client_sending_headers_too_slowly_is_cut_off() {
    let server = seeded().await; // header-read timeout 300 ms
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /codebase-embedder/api/v1/tasks/failed HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let closed = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(closed.is_some(), "connection still open after 3 s");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed only after {:?}",
        started.elapsed()
    );
    // Nothing was served for the incomplete head.
    let text = String::from_utf8_lossy(closed.as_deref().unwrap_or_default()).into_owned();
    assert!(!text.contains("200 OK"), "{text}");
}

#[tokio::test]
async fn a_client_sending_nothing_is_cut_off() {
    let server = seeded().await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let closed = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert_eq!(
        closed,
        Some(Vec::new()),
        "an idle connection must be closed, silently"
    );
}

#[tokio::test]
async fn oversized_heads_and_bodies_are_refused() {
    let server = seeded().await;
    let big = "x".repeat(32 * 1024);
    let a = request(&server, Method::GET, LIST, &[("x-padding", &big)]).await;
    assert_eq!(a.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /codebase-embedder/api/v1/tasks/failed HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        .await
        .unwrap();
    let reply = read_until_closed(&mut s, Duration::from_secs(3))
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"Code\":413"), "{text}");
}

#[tokio::test]
async fn shutdown_drains_and_stops_accepting() {
    let server = seeded().await;
    let addr = server.addr;
    assert_eq!(get(&server, LIST).await.status, StatusCode::OK);
    drop(server);
    // The listener is closed shortly after the shutdown signal.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "still accepting after shutdown");
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let store = MemoryStore::new();
    for t in FailedTask::seed_examples() {
        store.record(&t).await.unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::new(failed_tasks_http::App::new(
        failed_tasks_query::FailedTaskService::new(
            tasks_only(Arc::new(SlowList::new(store, Duration::from_millis(500)))),
            Deadlines::default(),
        ),
        test_config(),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(failed_tasks_http::serve(listener, app, async move {
        let _ = stopped.await;
    }));
    let server = TestServer::at(addr);
    let in_flight = tokio::spawn(async move { get(&server, LIST).await });
    tokio::time::sleep(Duration::from_millis(100)).await; // the request is being served
    stop.send(()).unwrap();
    let answer = in_flight.await.unwrap();
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "the in-flight request was cut off"
    );
    assert_eq!(answer.json()["Data"]["TotalTasks"], 3);
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("serve returns once drained")
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}
