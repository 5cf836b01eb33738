//! The failed files of a task over HTTP on the memory store: recorded with the failure
//! (`FailedFiles`, `Files`), paged by path with counts per error code
//! (`GET …/tasks/failed/{taskId}/files`), shown as a count in the task's detail, replaced by
//! a new failure, gone with the task; bad input is a 400 naming the field and index (413
//! over the limit, naming it) and stores nothing.

use std::sync::Arc;

use failed_tasks_http::{HttpConfig, Token};
use failed_tasks_query::{Deadlines, FailedTaskService};
use failed_tasks_store::{MemoryStore, Stores};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{get, request_with_body, spawn_service, TestServer};

const FAILED: &str = "/codebase-embedder/api/v1/admin/failed-tasks";
const TASKS: &str = "/codebase-embedder/api/v1/tasks/failed";

fn failure(id: &str, files: Value) -> Value {
    let mut t = json!({"TaskId": id, "TaskType": "embedding", "ClientId": "c1",
        "CodebasePath": "/repo", "FailTime": "2025-01-24T09:15:00Z", "ErrorCode": "PARTIAL"});
    if let Value::Object(extra) = files {
        t.as_object_mut().unwrap().extend(extra);
    }
    t
}

fn files(n: usize) -> Value {
    let list: Vec<Value> = (0..n)
        .rev()
        .map(|i| {
            let op = ["add", "modify", "delete"][i % 3];
            json!({"Path": format!("src/f{i:03}.rs"), "Operation": op,
                "ErrorCode": if i % 4 == 0 { "RATE_LIMITED" } else { "TIMEOUT" },
                "ErrorMessage": "provider said no"})
        })
        .collect();
    json!({ "Files": list })
}

async fn send(server: &TestServer, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
    let a = request_with_body(
        server,
        method,
        path,
        &[
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
        ],
        if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
    )
    .await;
    (a.status, a.json())
}

async fn server(max_failed_files: usize) -> (TestServer, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let service = FailedTaskService::new(Stores::from(store.clone()), Deadlines::default());
    let config = HttpConfig {
        admin_token: Token::new("t"),
        max_failed_files,
        ..crate::helpers::test_config()
    };
    (spawn_service(service, config).await, store)
}

#[tokio::test]
async fn files_are_paged_counted_replaced_and_removed() {
    let (server, _store) = server(100).await;
    let (status, _) = send(&server, Method::POST, FAILED, failure("t1", files(25))).await;
    assert_eq!(status, StatusCode::OK);

    let detail = get(&server, &format!("{TASKS}/t1")).await.json();
    assert_eq!(detail["Data"]["FailedFiles"], 25);

    let mut paths = Vec::new();
    let mut url = format!("{TASKS}/t1/files?pageSize=10");
    loop {
        let a = get(&server, &url).await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        let data = a.json()["Data"].clone();
        assert_eq!(data["FailedFiles"], 25);
        assert_eq!(data["TotalFiles"], 25);
        assert_eq!(
            data["ErrorCodes"],
            json!([{"ErrorCode": "RATE_LIMITED", "Count": 7}, {"ErrorCode": "TIMEOUT", "Count": 18}])
        );
        for f in data["Files"].as_array().unwrap() {
            paths.push(f["Path"].as_str().unwrap().to_owned());
        }
        match data["NextCursor"].as_str() {
            Some(c) => url = format!("{TASKS}/t1/files?pageSize=10&cursor={c}"),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).map(|i| format!("src/f{i:03}.rs")).collect();
    assert_eq!(paths, want);

    let a = get(&server, &format!("{TASKS}/t1/files?errorCode=RATE_LIMITED")).await;
    let data = a.json()["Data"].clone();
    assert_eq!(data["TotalFiles"], 7);
    assert_eq!(data["Files"][0]["Path"], "src/f000.rs");
    assert_eq!(data["Files"][0]["Operation"], "add");
    assert_eq!(data["Files"][0]["ErrorMessage"], "provider said no");

    // A new failure of the task replaces its files: here only a count.
    let (status, _) = send(
        &server,
        Method::POST,
        FAILED,
        failure("t1", json!({"FailedFiles": 3})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let data = get(&server, &format!("{TASKS}/t1/files")).await.json()["Data"].clone();
    assert_eq!(
        (data["FailedFiles"].clone(), data["ListedFiles"].clone()),
        (json!(3), json!(0))
    );
    // And without either: none.
    send(&server, Method::POST, FAILED, failure("t1", Value::Null)).await;
    let detail = get(&server, &format!("{TASKS}/t1")).await.json();
    assert_eq!(detail["Data"]["FailedFiles"], 0);

    let (status, _) = send(
        &server,
        Method::DELETE,
        &format!("{FAILED}/t1"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let a = get(&server, &format!("{TASKS}/t1/files")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["Code"], 404);
}

#[tokio::test]
async fn bad_files_are_refused_naming_the_field_and_store_nothing() {
    let (server, store) = server(10).await;
    let bad_op = json!({"Files": [{"Path": "a", "Operation": "add", "ErrorCode": "E"},
        {"Path": "b", "Operation": "rename", "ErrorCode": "E"}]});
    let batch = json!([failure("ok", Value::Null), failure("bad", bad_op)]);
    let (status, body) = send(&server, Method::POST, FAILED, batch).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let msg = body["Message"].as_str().unwrap();
    assert!(msg.contains("[1].Files[1].Operation"), "{msg}");

    let twice = json!({"Files": [{"Path": "a", "Operation": "add", "ErrorCode": "E"},
        {"Path": "a", "Operation": "delete", "ErrorCode": "E"}]});
    let (status, body) = send(&server, Method::POST, FAILED, failure("t", twice)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["Message"].as_str().unwrap().contains("Files[1].Path"));

    let (status, body) = send(&server, Method::POST, FAILED, failure("t", files(11))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["Code"], 413);
    let msg = body["Message"].as_str().unwrap();
    assert!(msg.contains("Files") && msg.contains("at most 10"), "{msg}");
    assert!(store.is_empty());

    send(&server, Method::POST, FAILED, failure("t", files(3))).await;
    for (query, field) in [
        ("pageSize=0", "pageSize"),
        ("cursor=nonsense!", "cursor"),
        ("errorCode=", "errorCode"),
        ("status=failed", "status"),
        ("errorCode=A&errorCode=B", "errorCode"),
    ] {
        let a = get(&server, &format!("{TASKS}/t/files?{query}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query}");
        let msg = a.json()["Message"].as_str().unwrap().to_owned();
        assert!(msg.contains(field), "{query}: {msg}");
    }
}
