//! The audit log: each action through the API appears once, newest first, with the token's
//! name, the reason given in `X-Reason`, the count and the request id; bad reasons are 400
//! and change nothing; no secret enters it.

use std::sync::Arc;

use failed_tasks_http::{HttpConfig, NamedToken, Role, Token};
use failed_tasks_query::{Deadlines, FailedTaskService};
use failed_tasks_store::{MemoryStore, Stores};
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{request_with_body, spawn_service, test_config, Answer, TestServer};

const BASE: &str = "/codebase-embedder/api/v1";

async fn server() -> TestServer {
    let config = HttpConfig {
        admin_token: Token::new("admin-secret"),
        tokens: vec![NamedToken::new("alice", Role::Operate, "alice-secret").unwrap()],
        ..test_config()
    };
    let store = Arc::new(MemoryStore::new());
    spawn_service(
        FailedTaskService::new(Stores::from(store), Deadlines::default()),
        config,
    )
    .await
}

async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    secret: &str,
    extra: &[(&str, &str)],
    body: String,
) -> Answer {
    let auth = format!("Bearer {secret}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    request_with_body(server, method, path, &headers, body).await
}

fn task(id: &str) -> serde_json::Value {
    json!({"TaskId": id, "TaskType": "embedding", "ClientId": "c1", "CodebasePath": "/p",
        "StartTime": "2025-01-24T09:00:00Z", "FailTime": "2025-01-24T09:15:00Z",
        "ErrorCode": "TIMEOUT_ERROR", "ErrorMessage": "timed out", "RetryCount": 0,
        "ProcessedFiles": 10, "ErrorCategory": "service_timeout"})
}

async fn audit(server: &TestServer, query: &str) -> serde_json::Value {
    let a = call(
        server,
        Method::GET,
        &format!("{BASE}/audit{query}"),
        "alice-secret",
        &[],
        String::new(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    a.json()["Data"].clone()
}

#[tokio::test]
async fn every_action_appears_once_with_its_actor_reason_and_request() {
    let server = server().await;
    let admin = format!("{BASE}/admin/failed-tasks");
    let body = json!([task("t1"), task("t2"), task("t3"), task("t4")]).to_string();
    let a = call(&server, Method::POST, &admin, "admin-secret", &[], body).await;
    assert_eq!(a.status, StatusCode::OK);
    // Recording is what embedders do, not an operator action: not audited.
    assert_eq!(audit(&server, "").await["Entries"], json!([]));

    let steps: [(Method, String, &str, &str, &str); 5] = [
        (
            Method::POST,
            format!("{admin}/t1/retry"),
            "alice-secret",
            "provider%20is%20back%20%E2%9C%93",
            "req-1",
        ),
        (
            Method::DELETE,
            format!("{admin}/t1/retry"),
            "alice-secret",
            "not now",
            "req-2",
        ),
        (
            Method::POST,
            format!("{admin}/t2/resolve"),
            "alice-secret",
            "fixed by hand",
            "req-3",
        ),
        (
            Method::DELETE,
            format!("{admin}/t3"),
            "admin-secret",
            "duplicate",
            "req-4",
        ),
        (
            Method::POST,
            format!("{BASE}/admin/retries?taskType=embedding"),
            "alice-secret",
            "outage over",
            "req-5",
        ),
    ];
    for (method, path, secret, reason, id) in &steps {
        let headers = [("x-reason", *reason), ("x-request-id", *id)];
        let a = call(
            &server,
            method.clone(),
            path,
            secret,
            &headers,
            String::new(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{method} {path}: {:?}", a.json());
    }
    // A retry of an unknown task changes nothing: not audited.
    let a = call(
        &server,
        Method::POST,
        &format!("{admin}/nope/retry"),
        "alice-secret",
        &[],
        String::new(),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    let log = audit(&server, "").await;
    let entries = log["Entries"].as_array().unwrap();
    let seen: Vec<(String, String, String, String, u64, String)> = entries
        .iter()
        .map(|e| {
            (
                e["Actor"].as_str().unwrap().to_owned(),
                e["Action"].as_str().unwrap().to_owned(),
                e["Target"].as_str().unwrap().to_owned(),
                e["Reason"].as_str().unwrap().to_owned(),
                e["Count"].as_u64().unwrap(),
                e["RequestId"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        (
            "alice",
            "retry_matching",
            "taskType=embedding",
            "outage over",
            2,
            "req-5",
        ),
        ("admin", "delete", "t3", "duplicate", 1, "req-4"),
        ("alice", "resolve", "t2", "fixed by hand", 1, "req-3"),
        ("alice", "cancel_retry", "t1", "not now", 1, "req-2"),
        ("alice", "retry", "t1", "provider is back ✓", 1, "req-1"),
    ];
    let want: Vec<(String, String, String, String, u64, String)> = want
        .iter()
        .map(|(a, b, c, d, n, r)| {
            (
                a.to_string(),
                b.to_string(),
                c.to_string(),
                d.to_string(),
                *n,
                r.to_string(),
            )
        })
        .collect();
    assert_eq!(seen, want);
    assert!(entries
        .iter()
        .all(|e| e["Time"].as_str().unwrap().ends_with('Z')));
    let text = log.to_string();
    assert!(
        !text.contains("secret"),
        "a token value reached the audit log: {text}"
    );

    // Filters and pages.
    let alice = audit(&server, "?actor=alice&action=resolve").await;
    assert_eq!(alice["Entries"].as_array().unwrap().len(), 1);
    assert_eq!(alice["Entries"][0]["Target"], "t2");
    let first = audit(&server, "?pageSize=2").await;
    assert_eq!(first["Entries"].as_array().unwrap().len(), 2);
    let cursor = first["NextCursor"].as_str().unwrap().to_owned();
    let rest = audit(&server, &format!("?pageSize=10&cursor={cursor}")).await;
    assert_eq!(rest["Entries"].as_array().unwrap().len(), 3);
    assert_eq!(rest["Entries"][0]["Action"], "resolve");
    assert_eq!(rest["NextCursor"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_bad_reason_is_400_and_changes_nothing() {
    let server = server().await;
    let admin = format!("{BASE}/admin/failed-tasks");
    let a = call(
        &server,
        Method::POST,
        &admin,
        "admin-secret",
        &[],
        task("t1").to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let long = "x".repeat(501);
    for reason in ["%0Aline", "%FF%FE", "   ", long.as_str()] {
        let a = call(
            &server,
            Method::DELETE,
            &format!("{admin}/t1"),
            "admin-secret",
            &[("x-reason", reason)],
            String::new(),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{reason:?}");
        assert!(
            a.json()["Message"].as_str().unwrap().contains("X-Reason"),
            "{:?}",
            a.json()
        );
    }
    let a = call(
        &server,
        Method::GET,
        &format!("{BASE}/tasks/failed/t1"),
        "alice-secret",
        &[],
        String::new(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "the task is still there");
    assert_eq!(audit(&server, "").await["Entries"], json!([]));
    for bad in [
        "?action=nuke",
        "?pageSize=0",
        "?cursor=zz",
        "?since=yesterday",
        "?actor=",
        "?colour=red",
    ] {
        let a = call(
            &server,
            Method::GET,
            &format!("{BASE}/audit{bad}"),
            "alice-secret",
            &[],
            String::new(),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn gates_made_and_released_are_audited_with_the_gates_reason() {
    let server = server().await;
    let body =
        json!({"Scope": {"TaskType": "embedding"}, "Mode": "hold", "Reason": "provider outage"})
            .to_string();
    let a = call(
        &server,
        Method::POST,
        &format!("{BASE}/admin/retry-gates"),
        "alice-secret",
        &[],
        body,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    let gate = a.json()["Data"]["GateId"].as_str().unwrap().to_owned();
    let a = call(
        &server,
        Method::DELETE,
        &format!("{BASE}/admin/retry-gates/{gate}"),
        "alice-secret",
        &[("x-reason", "provider back")],
        String::new(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    let log = audit(&server, "").await;
    let entries: Vec<(String, String, String)> = log["Entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["Action"].as_str().unwrap().to_owned(),
                e["Target"].as_str().unwrap().to_owned(),
                e["Reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            (
                "gate_released".to_owned(),
                gate.clone(),
                "provider back".to_owned()
            ),
            (
                "gate_created".to_owned(),
                gate,
                "provider outage".to_owned()
            ),
        ]
    );
}
