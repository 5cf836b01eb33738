//! `POST /admin/task-successes` over HTTP on the memory store: a later success supersedes
//! the older failures of its task type, client and codebase (out of the listing, counted as
//! `Superseded` in the statistics, apart from `Recovered`); bad input is a 400 naming the
//! field and supersedes nothing.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use failed_tasks_http::{HttpConfig, Token};
use failed_tasks_query::{Deadlines, FailedTaskService};
use failed_tasks_store::{MemoryStore, Stores};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{get, request_with_body, spawn_service, TestServer};

const SUCCESSES: &str = "/codebase-embedder/api/v1/admin/task-successes";
const FAILED: &str = "/codebase-embedder/api/v1/admin/failed-tasks";
const LIST: &str = "/codebase-embedder/api/v1/tasks/failed";

fn rfc3339(ms_ago: i64) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - ms_ago;
    failed_tasks_domain::Timestamp::from_unix_millis(ms)
        .unwrap()
        .to_rfc3339()
}

fn failure(id: &str, task_type: &str, client: &str, path: &str, ms_ago: i64) -> Value {
    json!({"TaskId": id, "TaskType": task_type, "ClientId": client, "CodebasePath": path,
        "FailTime": rfc3339(ms_ago), "ErrorCode": "TIMEOUT_ERROR", "RetryCount": 0})
}

async fn post(server: &TestServer, path: &str, body: Value) -> (StatusCode, Value) {
    let a = request_with_body(
        server,
        Method::POST,
        path,
        &[
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await;
    (a.status, a.json())
}

async fn server() -> (TestServer, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let service = FailedTaskService::new(Stores::from(store.clone()), Deadlines::default());
    let config = HttpConfig {
        admin_token: Token::new("t"),
        ..crate::helpers::test_config()
    };
    (spawn_service(service, config).await, store)
}

#[tokio::test]
async fn a_success_supersedes_the_older_failures_of_its_codebase() {
    let (server, store) = server().await;
    let batch = json!([
        failure("old1", "embedding", "c1", "/repo", 60_000),
        failure("old2", "embedding", "c1", "/repo", 30_000),
        failure("other-client", "embedding", "c2", "/repo", 60_000),
        failure("other-type", "indexing", "c1", "/repo", 60_000),
        failure("other-path", "embedding", "c1", "/repo/sub", 60_000),
    ]);
    assert_eq!(post(&server, FAILED, batch).await.0, StatusCode::OK);
    let success = json!({"TaskType": "embedding", "ClientId": "c1", "CodebasePath": "/repo",
        "Time": rfc3339(10_000)});
    let (status, v) = post(&server, SUCCESSES, success.clone()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["Data"], json!({"Reported": 1, "Superseded": 2}));
    // A failure recorded after the success stays.
    let newer = failure("newer", "embedding", "c1", "/repo", 0);
    assert_eq!(post(&server, FAILED, newer).await.0, StatusCode::OK);
    assert_eq!(
        post(&server, SUCCESSES, json!([success])).await.1["Data"],
        json!({"Reported": 1, "Superseded": 0})
    );
    let listed = get(&server, &format!("{LIST}?pageSize=100")).await.json();
    let mut ids: Vec<&str> = listed["Data"]["Tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["TaskId"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["newer", "other-client", "other-path", "other-type"]);
    let stats = get(
        &server,
        "/codebase-embedder/api/v1/tasks/failed-stats?window=1h",
    )
    .await
    .json();
    assert_eq!(stats["Data"]["Superseded"], 2);
    assert_eq!(stats["Data"]["Recovered"], 0);
    assert_eq!(stats["Data"]["TotalFailures"], 6);
    assert_eq!(store.len(), 4);
}

#[tokio::test]
async fn bad_success_reports_are_400s_naming_the_field_and_change_nothing() {
    let (server, store) = server().await;
    let batch = json!([failure("old1", "embedding", "c1", "/repo", 60_000)]);
    assert_eq!(post(&server, FAILED, batch).await.0, StatusCode::OK);
    let ok = json!({"TaskType": "embedding", "ClientId": "c1", "CodebasePath": "/repo"});
    let cases = [
        (
            json!({"TaskType": "embedding", "ClientId": "c1"}),
            "CodebasePath",
        ),
        (
            json!({"TaskType": "embedding", "ClientId": "c1", "CodebasePath": ""}),
            "CodebasePath",
        ),
        (
            json!({"ClientId": "c1", "CodebasePath": "/repo"}),
            "TaskType",
        ),
        (
            json!({"TaskType": "embedding", "ClientId": "c1", "CodebasePath": "/repo",
                "Time": "yesterday"}),
            "Time",
        ),
        (
            json!({"TaskType": "embedding", "ClientId": "c1", "CodebasePath": "/repo",
                "Time": "2999-01-01T00:00:00Z"}),
            "Time",
        ),
        (
            json!({"TaskType": "embedding", "ClientId": "c1", "CodebasePath": "/repo",
                "Color": "blue"}),
            "Color",
        ),
        (
            json!([ok.clone(), {"TaskType": "embedding", "CodebasePath": "/repo"}]),
            "[1].ClientId",
        ),
        (json!([]), "body"),
        (Value::Array(vec![ok.clone(); 1001]), "body"),
        (json!("text"), "body"),
    ];
    for (body, field) in cases {
        let (status, v) = post(&server, SUCCESSES, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["Message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("invalid body: {field}:")),
            "{body}: {v}"
        );
    }
    assert_eq!(store.len(), 1, "nothing was superseded");
}
