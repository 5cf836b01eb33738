//! The retry-gate routes over the memory store: make, list (with held counts), release; a
//! hold keeps retries of its scope from the workers without burning their attempt; bad
//! input is a 400 naming the field (nothing made), an unknown gate 404, the cap 409, a
//! store without retries 501.

use std::sync::Arc;
use std::time::Duration;

use failed_tasks_domain::{JitterRng, Timestamp};
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

async fn server() -> (TestServer, Arc<MemoryStore>, FailedTaskService) {
    let store = Arc::new(MemoryStore::new());
    let service = FailedTaskService::new(Stores::from(store.clone()), Deadlines::default())
        .with_jitter(JitterRng::new(1));
    (
        spawn_service(service.clone(), config()).await,
        store,
        service,
    )
}

async fn post(server: &TestServer, path: &str, body: &str) -> Answer {
    request_with_body(
        server,
        Method::POST,
        &format!("{BASE}{path}"),
        &[AUTH, JSON],
        body.to_owned(),
    )
    .await
}

async fn gates(server: &TestServer) -> Value {
    let a = get(server, &format!("{BASE}/retry-gates")).await;
    assert_eq!(a.status, StatusCode::OK);
    a.json()["Data"]["Gates"].clone()
}

fn failure(id: &str, task_type: &str) -> Value {
    json!({"TaskId": id, "TaskType": task_type, "ClientId": "c1", "CodebasePath": "/p",
        "StartTime": "2025-01-24T09:00:00Z", "FailTime": "2025-01-24T09:15:00Z",
        "ErrorCode": "TIMEOUT_ERROR", "ErrorMessage": "timed out", "RetryCount": 1,
        "ProcessedFiles": 1})
}

#[tokio::test]
async fn hold_list_and_release() {
    let (server, store, service) = server().await;
    let a = post(
        &server,
        "/admin/retry-gates",
        r#"{"Scope":{"TaskType":"embedding","ErrorCategory":"service_timeout"},"Mode":"hold","Reason":"provider outage"}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    assert_eq!(a.json()["Data"]["Status"], "created");
    let id = a.json()["Data"]["GateId"].as_str().unwrap().to_owned();
    let a = post(
        &server,
        "/admin/failed-tasks",
        &json!([
            failure("e1", "embedding"),
            failure("e2", "embedding"),
            failure("i1", "indexing")
        ])
        .to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    // The scheduler step, driven here: only the indexing retry goes out.
    let now = Timestamp::now();
    assert_eq!(service.deliver_due(now, 100).await.unwrap().moved, 1);
    let listed = gates(&server).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let g = &listed[0];
    assert_eq!(g["GateId"], id.as_str());
    assert_eq!(
        g["Scope"],
        json!({"TaskType":"embedding","ErrorCategory":"service_timeout"})
    );
    assert_eq!(g["Mode"], "hold");
    assert_eq!(g["PerSecond"], Value::Null);
    assert_eq!(g["Reason"], "provider outage");
    assert_eq!(g["CreatedBy"], "operator");
    assert_eq!(g["Until"], Value::Null);
    assert_eq!(g["Held"], 2);
    let metrics = String::from_utf8(get(&server, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("\nfailed_tasks_retry_gates 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nfailed_tasks_retries_held 2\n"),
        "{metrics}"
    );
    // Held retries stay scheduled for attempt 2.
    let one = get(&server, &format!("{BASE}/tasks/failed/e1"))
        .await
        .json();
    assert!(one["Data"]["NextRetryAt"].is_string());
    // Release: 404 the second time.
    let path = format!("{BASE}/admin/retry-gates/{id}");
    let a = request(&server, Method::DELETE, &path, &[AUTH]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json()["Data"],
        json!({"GateId": id, "Status": "released"})
    );
    let a = request(&server, Method::DELETE, &path, &[AUTH]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["Message"], format!("retry gate {id} not found"));
    assert_eq!(gates(&server).await, json!([]));
    assert_eq!(service.deliver_due(now, 100).await.unwrap().moved, 2);
    let queue = store.retry_queue();
    let got = queue.claim(10, Duration::from_millis(10)).await.unwrap();
    assert_eq!(got.len(), 3);
    assert!(
        got.iter().all(|d| d.request.attempt == 2),
        "no attempt burnt"
    );
}

#[tokio::test]
async fn a_limit_with_until_is_listed_with_its_rate() {
    let (server, _, _) = server().await;
    let until = Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 3_600_000)
        .unwrap()
        .to_rfc3339();
    let body = json!({"Scope":{"Signature":"0123456789abcdef","ClientId":"c1","ErrorCode":"X"},
        "Mode":"limit","PerSecond":2.5,"Reason":"ramp up","Until":until});
    let a = post(&server, "/admin/retry-gates", &body.to_string()).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    let g = &gates(&server).await[0];
    assert_eq!(g["Mode"], "limit");
    assert_eq!(g["PerSecond"], 2.5);
    assert_eq!(g["Until"], until.as_str());
    assert_eq!(
        g["Scope"],
        json!({"ErrorCode":"X","ClientId":"c1","Signature":"0123456789abcdef"})
    );
}

#[tokio::test]
async fn bad_input_is_400_naming_the_field_and_makes_nothing() {
    let (server, _, _) = server().await;
    let hold = r#""Mode":"hold","Reason":"r""#;
    let cases: Vec<(String, &str)> = vec![
        (
            format!(r#"{{"Scope":{{"Queue":"x"}},{hold}}}"#),
            "unknown field `Queue`",
        ),
        (
            format!(r#"{{"Scope":{{"TaskType":""}},{hold}}}"#),
            "Scope.TaskType",
        ),
        (
            format!(r#"{{"Scope":{{"ErrorCategory":"nope"}},{hold}}}"#),
            "Scope.ErrorCategory",
        ),
        (
            format!(r#"{{"Scope":{{"Signature":"xyz"}},{hold}}}"#),
            "Scope.Signature",
        ),
        (
            format!(r#"{{"Colour":"red",{hold}}}"#),
            "unknown field `Colour`",
        ),
        (
            r#"{"Mode":"limit","PerSecond":0,"Reason":"r"}"#.to_owned(),
            "PerSecond",
        ),
        (
            r#"{"Mode":"limit","PerSecond":-5,"Reason":"r"}"#.to_owned(),
            "PerSecond",
        ),
        (
            r#"{"Mode":"limit","PerSecond":"50","Reason":"r"}"#.to_owned(),
            "PerSecond: must be a number",
        ),
        (
            r#"{"Mode":"limit","PerSecond":1000001,"Reason":"r"}"#.to_owned(),
            "PerSecond",
        ),
        (
            r#"{"Mode":"limit","Reason":"r"}"#.to_owned(),
            "PerSecond: is required",
        ),
        (
            r#"{"Mode":"hold","PerSecond":5,"Reason":"r"}"#.to_owned(),
            "PerSecond: is only for Mode limit",
        ),
        (r#"{"Mode":"pause","Reason":"r"}"#.to_owned(), "Mode"),
        (r#"{"Reason":"r"}"#.to_owned(), "Mode: is required"),
        (r#"{"Mode":"hold"}"#.to_owned(), "Reason: is required"),
        (
            r#"{"Mode":"hold","Reason":""}"#.to_owned(),
            "Reason: is required",
        ),
        (format!(r#"{{{hold},"Until":"tomorrow"}}"#), "Until"),
        (
            format!(r#"{{{hold},"Until":"2020-01-01T00:00:00Z"}}"#),
            "Until: must be in the future",
        ),
        ("[]".to_owned(), "body"),
        ("{".to_owned(), "body"),
    ];
    for (body, names) in cases {
        let a = post(&server, "/admin/retry-gates", &body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        let msg = a.json()["Message"].as_str().unwrap().to_owned();
        assert!(msg.contains(names), "{body}: {msg}");
    }
    assert_eq!(gates(&server).await, json!([]));
    // A malformed id is 400, an unknown one 404; parameters are refused.
    let a = request(
        &server,
        Method::DELETE,
        &format!("{BASE}/admin/retry-gates/a.b"),
        &[AUTH],
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = request(
        &server,
        Method::DELETE,
        &format!("{BASE}/admin/retry-gates/g1"),
        &[AUTH],
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = get(&server, &format!("{BASE}/retry-gates?x=1")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // Without the admin token: refused.
    let a = request_with_body(
        &server,
        Method::POST,
        &format!("{BASE}/admin/retry-gates"),
        &[JSON],
        format!("{{{hold}}}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn more_than_a_thousand_gates_is_409() {
    let (server, _, _) = server().await;
    for i in 0..1000 {
        let body = json!({"Scope":{"ClientId":format!("c{i}")},"Mode":"hold","Reason":"r"});
        let a = post(&server, "/admin/retry-gates", &body.to_string()).await;
        assert_eq!(a.status, StatusCode::OK, "{i}");
    }
    let a = post(
        &server,
        "/admin/retry-gates",
        r#"{"Mode":"hold","Reason":"r"}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.json()["Code"], 409);
    assert_eq!(
        a.json()["Message"],
        "1000 retry gates are active already; release one first"
    );
    assert_eq!(gates(&server).await.as_array().unwrap().len(), 1000);
}

#[tokio::test]
async fn a_store_without_retries_answers_501() {
    let store = Arc::new(MemoryStore::new());
    let plain = FailedTaskService::new(crate::helpers::memory(store), Deadlines::default());
    let server = spawn_service(plain, config()).await;
    let a = post(
        &server,
        "/admin/retry-gates",
        r#"{"Mode":"hold","Reason":"r"}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(
        a.json()["Message"],
        "the memory store does not support retries"
    );
    let a = get(&server, &format!("{BASE}/retry-gates")).await;
    assert_eq!(a.status, StatusCode::NOT_IMPLEMENTED);
    let a = request(
        &server,
        Method::DELETE,
        &format!("{BASE}/admin/retry-gates/g1"),
        &[AUTH],
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_IMPLEMENTED);
}
