//! The admin API: token checks, recording (one, batch, all or nothing, upsert), removal
//! (one, bulk by filter), body limits and content types.

use std::sync::Arc;

use failed_tasks_domain::FailedTask;
use failed_tasks_http::{HttpConfig, Token};
use failed_tasks_query::Deadlines;
use failed_tasks_store::{MemoryStore, StatusStore};
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{get, memory, request, request_with_body, spawn_app, test_config, TestServer};

const ADMIN: &str = "/codebase-embedder/api/v1/admin/failed-tasks";
const LIST: &str = "/codebase-embedder/api/v1/tasks/failed";
const TOKEN: &str = "test-admin-token";
const AUTH: (&str, &str) = ("authorization", "Bearer test-admin-token");
const JSON: (&str, &str) = ("content-type", "application/json");

async fn admin_server(store: Arc<MemoryStore>) -> TestServer {
    let config = HttpConfig {
        admin_token: Token::new(TOKEN),
        ..test_config()
    };
    spawn_app(memory(store), Deadlines::default(), config).await
}

fn task_json(id: &str, fail: &str, category: &str, client: &str) -> serde_json::Value {
    json!({"TaskId": id, "TaskType": "embedding", "ClientId": client, "CodebasePath": "/p",
        "StartTime": "2025-01-24T09:00:00Z", "FailTime": fail, "ErrorCode": "TIMEOUT_ERROR",
        "ErrorMessage": "timed out", "RetryCount": 2, "ProcessedFiles": 10, "ErrorCategory": category})
}

async fn post(server: &TestServer, body: &serde_json::Value) -> crate::helpers::Answer {
    request_with_body(server, Method::POST, ADMIN, &[AUTH, JSON], body.to_string()).await
}

#[tokio::test]
async fn admin_routes_are_disabled_without_a_token() {
    let server = spawn_app(
        memory(Arc::new(MemoryStore::new())),
        Deadlines::default(),
        test_config(),
    )
    .await;
    for (method, path) in [
        (Method::POST, ADMIN.to_owned()),
        (Method::DELETE, format!("{ADMIN}/x")),
    ] {
        let a = request_with_body(&server, method, &path, &[AUTH, JSON], "{}").await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert_eq!(
            a.json(),
            json!({"Code":403,"Message":"admin API disabled","Success":false,"Data":null})
        );
    }
}

#[tokio::test]
async fn missing_or_wrong_tokens_are_401_with_a_challenge() {
    let store = Arc::new(MemoryStore::new());
    let server = admin_server(store.clone()).await;
    let body = task_json("t1", "2025-01-24T09:15:00Z", "service_timeout", "c1").to_string();
    for headers in [
        vec![JSON],
        vec![JSON, ("authorization", "Bearer nope")],
        vec![JSON, ("authorization", "Basic dGVzdA==")],
    ] {
        let a = request_with_body(&server, Method::POST, ADMIN, &headers, body.clone()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            a.header("www-authenticate"),
            Some("Bearer realm=\"failed-tasks\"")
        );
        assert_eq!(a.json()["Code"], 401);
    }
    assert!(store.is_empty(), "an unauthorised request stored something");
}

#[tokio::test]
async fn record_one_then_update_it_without_duplicating() {
    let store = Arc::new(MemoryStore::new());
    let server = admin_server(store.clone()).await;
    let a = post(
        &server,
        &task_json("t1", "2025-01-24T09:15:00Z", "service_timeout", "c1"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    assert_eq!(
        a.json()["Data"],
        json!({"Recorded":1,"Created":1,"Updated":0})
    );

    let mut again = task_json("t1", "2025-01-24T11:00:00Z", "authorization", "c2");
    again["RetryCount"] = json!(3);
    let b = post(&server, &again).await;
    assert_eq!(
        b.json()["Data"],
        json!({"Recorded":1,"Created":0,"Updated":1})
    );

    let listed = get(&server, LIST).await.json();
    assert_eq!(listed["Data"]["TotalTasks"], 1);
    let mut shown = again.clone();
    shown["NextRetryAt"] = json!(null);
    shown["FinalFailure"] = json!(true); // authorization is never retried
    assert_eq!(listed["Data"]["Tasks"][0], shown);
    let old_category = get(&server, &format!("{LIST}?category=service_timeout"))
        .await
        .json();
    assert_eq!(
        old_category["Data"]["TotalTasks"], 0,
        "the old category index still lists it"
    );
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    let store = Arc::new(MemoryStore::new());
    let server = admin_server(store.clone()).await;
    let mut bad = task_json("t3", "2025-01-24T09:15:00Z", "service_timeout", "c1");
    bad["RetryCount"] = json!(-1);
    let batch = json!([
        task_json("t1", "2025-01-24T09:15:00Z", "service_timeout", "c1"),
        task_json("t2", "2025-01-24T09:16:00Z", "data_error", "c1"),
        bad,
    ]);
    let a = post(&server, &batch).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let msg = a.json()["Message"].as_str().unwrap().to_owned();
    assert!(msg.contains("[2].RetryCount"), "{msg}");
    assert!(store.is_empty(), "a rejected batch stored something");

    let good = json!([
        task_json("t1", "2025-01-24T09:15:00Z", "service_timeout", "c1"),
        task_json("t2", "2025-01-24T09:16:00Z", "data_error", "c1"),
    ]);
    let b = post(&server, &good).await;
    assert_eq!(
        b.json()["Data"],
        json!({"Recorded":2,"Created":2,"Updated":0})
    );
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn invalid_bodies_are_clear_400s_that_store_nothing() {
    let store = Arc::new(MemoryStore::new());
    let server = admin_server(store.clone()).await;
    let base = task_json("t1", "2025-01-24T09:15:00Z", "service_timeout", "c1");
    let mutate = |field: &str, value: serde_json::Value| {
        let mut t = base.clone();
        if value.is_null() {
            t.as_object_mut().unwrap().remove(field);
        } else {
            t[field] = value;
        }
        t
    };
    let table = [
        (mutate("TaskId", serde_json::Value::Null), "TaskId"),
        (mutate("TaskId", json!("x".repeat(257))), "TaskId"),
        (mutate("ClientId", json!("a\u{0}b")), "ClientId"),
        (
            mutate("ErrorMessage", json!("m".repeat(8 * 1024 + 1))),
            "ErrorMessage",
        ),
        (
            mutate("FailTime", json!("2025-01-24T08:00:00Z")),
            "FailTime",
        ),
        (
            mutate("ErrorCategory", json!("catastrophe")),
            "ErrorCategory",
        ),
        (mutate("ProcessedFiles", json!(-5)), "ProcessedFiles"),
        (mutate("RetryCount", json!("3")), "RetryCount"),
    ];
    for (body, field) in table {
        let a = post(&server, &body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{field}");
        let msg = a.json()["Message"].as_str().unwrap().to_owned();
        assert!(msg.contains(field), "{field}: {msg}");
    }
    let a = request_with_body(&server, Method::POST, ADMIN, &[AUTH, JSON], "{not json").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(store.is_empty());
}

#[tokio::test]
async fn wrong_content_type_is_415_and_oversized_body_is_413() {
    let store = Arc::new(MemoryStore::new());
    let config = HttpConfig {
        admin_token: Token::new(TOKEN),
        max_body_bytes: 1024,
        ..test_config()
    };
    let server = spawn_app(memory(store.clone()), Deadlines::default(), config).await;
    let body = task_json("t1", "2025-01-24T09:15:00Z", "service_timeout", "c1").to_string();
    let a = request_with_body(
        &server,
        Method::POST,
        ADMIN,
        &[AUTH, ("content-type", "text/plain")],
        body,
    )
    .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(a.json()["Code"], 415);
    let big = serde_json::Value::Array(vec![
        task_json(
            "t1",
            "2025-01-24T09:15:00Z",
            "service_timeout",
            "c1"
        );
        10
    ])
    .to_string();
    assert!(big.len() > 1024);
    let b = request_with_body(&server, Method::POST, ADMIN, &[AUTH, JSON], big).await;
    assert_eq!(b.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(b.json()["Code"], 413);
    assert!(store.is_empty());
}

#[tokio::test]
async fn remove_one_and_bulk_by_filter() {
    let store = Arc::new(MemoryStore::new());
    for t in FailedTask::seed_examples() {
        store.record(&t).await.unwrap();
    }
    let server = admin_server(store.clone()).await;
    let a = request(
        &server,
        Method::DELETE,
        &format!("{ADMIN}/task_001"),
        &[AUTH],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["Data"], json!({"Removed":1,"Complete":true}));
    let b = request(
        &server,
        Method::DELETE,
        &format!("{ADMIN}/task_001"),
        &[AUTH],
    )
    .await;
    assert_eq!(b.status, StatusCode::NOT_FOUND);

    let c = request(&server, Method::DELETE, ADMIN, &[AUTH]).await;
    assert_eq!(
        c.status,
        StatusCode::BAD_REQUEST,
        "a bare bulk delete must not wipe the store"
    );
    assert_eq!(store.len(), 2);

    let d = request(
        &server,
        Method::DELETE,
        &format!("{ADMIN}?category=authorization"),
        &[AUTH],
    )
    .await;
    assert_eq!(d.json()["Data"], json!({"Removed":1,"Complete":true}));
    let listed = get(&server, LIST).await.json();
    assert_eq!(listed["Data"]["TotalTasks"], 1);
    assert_eq!(listed["Data"]["Tasks"][0]["TaskId"], "task_003");
}

#[tokio::test]
async fn admin_routes_answer_405_with_their_methods() {
    let server = admin_server(Arc::new(MemoryStore::new())).await;
    let a = request(&server, Method::GET, ADMIN, &[AUTH]).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.header("allow"), Some("POST, DELETE"));
    let b = request(&server, Method::PUT, &format!("{ADMIN}/x"), &[AUTH]).await;
    assert_eq!(b.header("allow"), Some("DELETE"));
}

#[tokio::test]
async fn a_read_token_protects_the_read_routes_only() {
    let store = Arc::new(MemoryStore::new());
    let config = HttpConfig {
        admin_token: Token::new(TOKEN),
        read_token: Token::new("reader"),
        ..test_config()
    };
    let server = spawn_app(memory(store), Deadlines::default(), config).await;
    assert_eq!(get(&server, LIST).await.status, StatusCode::UNAUTHORIZED);
    let ok = request(
        &server,
        Method::GET,
        LIST,
        &[("authorization", "Bearer reader")],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let admin_reads = request(&server, Method::GET, LIST, &[AUTH]).await;
    assert_eq!(admin_reads.status, StatusCode::OK);
    assert_eq!(get(&server, "/healthz").await.status, StatusCode::OK);
    let reader_cannot_write = request_with_body(
        &server,
        Method::POST,
        ADMIN,
        &[("authorization", "Bearer reader"), JSON],
        "{}",
    )
    .await;
    // A known token without the role: 403 naming the role it needs and the one it has.
    assert_eq!(reader_cannot_write.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reader_cannot_write.json()["Message"],
        "this needs the admin role; the token \"read\" has the read role"
    );
}
