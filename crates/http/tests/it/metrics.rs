//! `/metrics` parses as Prometheus text and counts what happened.

use std::sync::Arc;

use failed_tasks_domain::FailedTask;
use failed_tasks_http::{HttpConfig, Token};
use failed_tasks_query::Deadlines;
use failed_tasks_store::{MemoryStore, StatusStore};
use hyper::{Method, StatusCode};
use prometheus_parse::{Scrape, Value};

use crate::helpers::{get, memory, request, request_with_body, spawn_app, tasks_only, test_config};

pub(crate) fn scrape(body: &[u8]) -> Scrape {
    let text = String::from_utf8(body.to_vec()).unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("a Prometheus text scrape")
}

pub(crate) fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test]
async fn metrics_parse_and_count_requests_recordings_and_stored_tasks() {
    let store = Arc::new(MemoryStore::new());
    for t in FailedTask::seed_examples() {
        store.record(&t).await.unwrap();
    }
    let config = HttpConfig {
        admin_token: Token::new("t"),
        ..test_config()
    };
    let server = spawn_app(memory(store), Deadlines::default(), config).await;
    let list = "/codebase-embedder/api/v1/tasks/failed";
    for _ in 0..3 {
        assert_eq!(get(&server, list).await.status, StatusCode::OK);
    }
    assert_eq!(
        get(&server, &format!("{list}?pageSize=0")).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        request(&server, Method::POST, list, &[]).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let body = r#"[{"TaskId":"n1","TaskType":"embedding","ClientId":"c","FailTime":"2025-01-24T11:00:00Z","ErrorCode":"TIMEOUT_ERROR"},
                  {"TaskId":"n2","TaskType":"embedding","ClientId":"c","FailTime":"2025-01-24T11:01:00Z","ErrorCode":"TIMEOUT_ERROR"}]"#;
    let a = request_with_body(
        &server,
        Method::POST,
        "/codebase-embedder/api/v1/admin/failed-tasks",
        &[
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);

    let m = get(&server, "/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let s = scrape(&m.body);
    let req = "failed_tasks_http_requests_total";
    assert_eq!(
        value(&s, req, &[("route", "list_failed"), ("status", "200")]),
        Some(3.0)
    );
    assert_eq!(
        value(&s, req, &[("route", "list_failed"), ("status", "400")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, req, &[("route", "list_failed"), ("status", "405")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "failed_tasks_recorded_total",
            &[
                ("category", "service_timeout"),
                ("error_code", "TIMEOUT_ERROR"),
                ("task_type", "embedding")
            ]
        ),
        Some(2.0)
    );
    // 3 seed tasks + 2 recorded: one authorization, one resource_exhausted, three timeouts.
    assert_eq!(
        value(
            &s,
            "failed_tasks_stored",
            &[("category", "service_timeout")]
        ),
        Some(3.0)
    );
    assert_eq!(
        value(&s, "failed_tasks_stored", &[("category", "authorization")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "failed_tasks_stored", &[("category", "data_error")]),
        Some(0.0)
    );
    // The latency histogram counted the five list requests.
    assert_eq!(
        value(
            &s,
            "failed_tasks_http_request_duration_seconds",
            &[("route", "list_failed")]
        ),
        Some(5.0)
    );
    assert!(
        s.docs.contains_key("failed_tasks_corrupt_records_skipped"),
        "{:?}",
        s.docs.keys()
    );
}

/// A server on `store` whose connection check always fails (Redis unreachable).
async fn serve_unreachable(
    mut store: failed_tasks_store::MockStatusStore,
) -> crate::helpers::TestServer {
    store.expect_ping().returning(|| {
        Err(failed_tasks_store::StoreError::Unavailable(
            "refused".into(),
        ))
    });
    spawn_app(
        tasks_only(Arc::new(store)),
        Deadlines::default(),
        test_config(),
    )
    .await
}

#[tokio::test]
async fn store_errors_are_counted_by_kind() {
    let mut store = failed_tasks_store::MockStatusStore::new();
    store.expect_condition().returning(Default::default);
    let server = serve_unreachable(store).await;
    for _ in 0..2 {
        let a = get(&server, "/codebase-embedder/api/v1/tasks/failed").await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let m = get(&server, "/metrics").await;
    assert_eq!(
        m.status,
        StatusCode::OK,
        "metrics answer even when the store is down"
    );
    let s = scrape(&m.body);
    // Two list requests and the scrape's own gauge refresh.
    assert_eq!(
        value(
            &s,
            "failed_tasks_store_errors_total",
            &[("kind", "unavailable")]
        ),
        Some(3.0)
    );
}

/// The store adapter's restarts of its connection task (`StoreCondition::connection_restarts`,
/// counted by the adapter since it was built) show as a counter that follows that count.
#[tokio::test]
async fn connection_task_restarts_are_counted() {
    let restarts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut store = failed_tasks_store::MockStatusStore::new();
    let seen = restarts.clone();
    store
        .expect_condition()
        .returning(move || failed_tasks_store::StoreCondition {
            connection_restarts: seen.load(std::sync::atomic::Ordering::SeqCst),
            ..Default::default()
        });
    // (The scrape's stored-tasks refresh fails; the rest is shown.)
    let server = serve_unreachable(store).await;
    let name = "failed_tasks_store_connection_restarts_total";
    let s = scrape(&get(&server, "/metrics").await.body);
    assert_eq!(value(&s, name, &[]), Some(0.0));
    restarts.store(2, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..2 {
        let s = scrape(&get(&server, "/metrics").await.body);
        assert_eq!(value(&s, name, &[]), Some(2.0));
    }
}

/// Recordings are counted by the use case: those made by Rust code calling the service
/// directly (an embedder, `--demo`) are in `/metrics` as well as those through HTTP. Before,
/// the HTTP handler counted them, and only its own.
#[tokio::test]
async fn recordings_through_the_use_case_are_counted_wherever_they_come_from() {
    let service = failed_tasks_query::FailedTaskService::new(
        memory(Arc::new(MemoryStore::new())),
        Deadlines::default(),
    );
    let server = crate::helpers::spawn_service(service.clone(), test_config()).await;
    let seed = FailedTask::seed_examples();
    service.record_failures(&seed).await.unwrap();
    service
        .report_attempts(
            &failed_tasks_domain::TaskType::embedding(),
            7,
            failed_tasks_domain::Timestamp::now(),
        )
        .await
        .unwrap();
    let s = scrape(&get(&server, "/metrics").await.body);
    for t in &seed {
        assert_eq!(
            value(
                &s,
                "failed_tasks_recorded_total",
                &[
                    ("category", t.error_category().as_str()),
                    ("error_code", t.error_code().as_str()),
                    ("task_type", t.task_type().as_str()),
                ]
            ),
            Some(1.0),
            "{}",
            t.task_id()
        );
    }
    assert_eq!(
        value(
            &s,
            "failed_tasks_task_attempts_total",
            &[("task_type", "embedding")]
        ),
        Some(7.0)
    );
}
