//! The replay routes over the memory store: a dry run changes nothing; a replay is made,
//! followed (its runner driven here by explicit times), listed, aborted and audited; bad
//! input is a 400 naming the field (nothing made), an unknown replay 404, ending one twice
//! 409; the bulk retry keeps a replay of its own.

use std::sync::Arc;

use failed_tasks_domain::{JitterRng, Timestamp};
use failed_tasks_http::{HttpConfig, Token};
use failed_tasks_query::{Deadlines, FailedTaskService, ReplayRunner, ReplayRunnerConfig};
use failed_tasks_store::{MemoryStore, RetryQueue, Stores};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{
    get, request, request_with_body, spawn_service, test_config, Answer, TestServer,
};

const BASE: &str = "/codebase-embedder/api/v1";
const AUTH: (&str, &str) = ("authorization", "Bearer t0ken");
const JSON: (&str, &str) = ("content-type", "application/json");

async fn server() -> (TestServer, Arc<MemoryStore>, FailedTaskService) {
    let store = Arc::new(MemoryStore::new());
    let service = FailedTaskService::new(Stores::from(store.clone()), Deadlines::default())
        .with_jitter(JitterRng::new(1));
    let config = HttpConfig {
        admin_token: Token::new("t0ken"),
        ..test_config()
    };
    (spawn_service(service.clone(), config).await, store, service)
}

async fn post(server: &TestServer, path: &str, body: &str) -> Answer {
    request_with_body(
        server,
        Method::POST,
        &format!("{BASE}{path}"),
        &[AUTH, JSON, ("x-reason", "from the test")],
        body.to_owned(),
    )
    .await
}

async fn delete(server: &TestServer, path: &str) -> Answer {
    request(server, Method::DELETE, &format!("{BASE}{path}"), &[AUTH]).await
}

/// Record `n` timeouts of client `client` (retried by the default policy later on).
async fn record(server: &TestServer, client: &str, n: usize) {
    let tasks: Vec<Value> = (0..n)
        .map(|i| {
            json!({"TaskId": format!("{client}-{i:03}"), "TaskType": "embedding",
                "ClientId": client, "CodebasePath": "/p",
                "StartTime": "2025-01-24T09:00:00Z", "FailTime": "2025-01-24T09:15:00Z",
                "ErrorCode": "TIMEOUT_ERROR", "ErrorMessage": "timed out", "RetryCount": 1,
                "ProcessedFiles": 1})
        })
        .collect();
    let a = post(
        server,
        "/admin/failed-tasks",
        &Value::Array(tasks).to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
}

async fn replays(server: &TestServer) -> Value {
    let a = get(server, &format!("{BASE}/replays")).await;
    assert_eq!(a.status, StatusCode::OK);
    a.json()["Data"]["Replays"].clone()
}

async fn replay(server: &TestServer, id: &str) -> Value {
    let a = get(server, &format!("{BASE}/replays/{id}")).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    a.json()["Data"].clone()
}

async fn audit_actions(server: &TestServer) -> Vec<(String, String, String)> {
    let a = get(server, &format!("{BASE}/audit")).await;
    a.json()["Data"]["Entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["Action"].as_str().unwrap_or_default().to_owned(),
                e["Target"].as_str().unwrap_or_default().to_owned(),
                e["Reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_replay_is_made_followed_aborted_and_audited() {
    let (server, store, service) = server().await;
    record(&server, "c1", 30).await;
    record(&server, "c2", 5).await;

    // A dry run counts and samples, and changes nothing.
    let a = post(
        &server,
        "/admin/replays",
        r#"{"Filters":{"clientId":"c1"},"Reason":"provider back","DryRun":true}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    assert_eq!(a.json()["Data"]["Matching"], 30);
    let sample = a.json()["Data"]["SampleTaskIds"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(sample.len(), 20);
    assert_eq!(sample[0], "c1-029");
    assert_eq!(replays(&server).await, json!([]));

    // A paced replay.
    let a = post(
        &server,
        "/admin/replays",
        r#"{"Filters":{"clientId":"c1","category":"service_timeout"},"Reason":"provider back","PerSecond":20}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    assert_eq!(a.json()["Data"]["Matching"], 30);
    let id = a.json()["Data"]["ReplayId"].as_str().unwrap().to_owned();
    let r = replay(&server, &id).await;
    assert_eq!(r["State"], "running");
    assert_eq!(r["Actor"], "admin");
    assert_eq!(r["Reason"], "provider back");
    assert_eq!(r["PerSecond"], 20.0);
    assert_eq!(
        r["Filters"],
        json!({"clientId": "c1", "category": "service_timeout"})
    );
    assert_eq!(
        (r["Matched"].clone(), r["Scheduled"].clone()),
        (json!(30), json!(0))
    );
    let created = Timestamp::parse_rfc3339("Created", r["Created"].as_str().unwrap()).unwrap();

    // The runner, driven here: 20 a second.
    let runner = ReplayRunner::new(service.clone(), ReplayRunnerConfig::default());
    let at = |ms: i64| Timestamp::from_unix_millis(created.unix_millis() + ms).unwrap();
    assert_eq!(runner.step(at(1_000)).await.unwrap().scheduled, 20);
    let r = replay(&server, &id).await;
    assert_eq!(
        (r["State"].clone(), r["Scheduled"].clone()),
        (json!("running"), json!(20))
    );
    // Made due, not handed out yet: none delivered.
    assert_eq!(
        (r["Tracked"].clone(), r["Delivered"].clone()),
        (json!(20), json!(0))
    );
    assert_eq!(runner.step(at(2_000)).await.unwrap().scheduled, 10);
    let r = replay(&server, &id).await;
    assert_eq!(r["State"], "done");
    assert_eq!(
        (r["Visited"].clone(), r["Scheduled"].clone()),
        (json!(30), json!(30))
    );
    assert!(r["Finished"].is_string());
    // Those 30 are due now: the scheduler hands each to the workers once (with the c2
    // ones, whose policy retries fell due long ago).
    service.deliver_due(at(2_000), 1000).await.unwrap();
    let claimed = store
        .retry_queue()
        .claim(100, std::time::Duration::from_millis(1))
        .await
        .unwrap();
    let c1: std::collections::HashSet<String> = claimed
        .iter()
        .filter(|d| d.request.client_id.as_str() == "c1")
        .map(|d| d.request.task_id.to_string())
        .collect();
    assert_eq!((c1.len(), claimed.len()), (30, 35));
    // Handed out: all 30 delivered. Then the workers report: 10 resolved, 5 failed again.
    let r = replay(&server, &id).await;
    assert_eq!(
        [
            &r["Tracked"],
            &r["Delivered"],
            &r["Resolved"],
            &r["FailedAgain"]
        ],
        [&json!(30), &json!(30), &json!(0), &json!(0)]
    );
    let mine: Vec<_> = claimed
        .iter()
        .filter(|d| d.request.client_id.as_str() == "c1")
        .collect();
    for d in &mine[..10] {
        service
            .resolve(&d.request.task_id, at(3_000))
            .await
            .unwrap();
    }
    for d in &mine[10..15] {
        let mut again = failed_tasks_store::StatusStore::get(&*store, &d.request.task_id)
            .await
            .unwrap()
            .unwrap()
            .into_parts();
        again.retry_count = d.request.attempt;
        again.fail_time = at(3_000);
        service
            .record_failure(&failed_tasks_domain::FailedTask::new(again).unwrap())
            .await
            .unwrap();
    }
    let r = replay(&server, &id).await;
    assert_eq!(
        [
            &r["Tracked"],
            &r["Delivered"],
            &r["Resolved"],
            &r["FailedAgain"]
        ],
        [&json!(30), &json!(30), &json!(10), &json!(5)]
    );

    // Ended: an abort is 409.
    let a = delete(&server, &format!("/admin/replays/{id}")).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{:?}", a.json());

    // Another one, aborted before it ran.
    let a = post(
        &server,
        "/admin/replays",
        r#"{"Filters":{"clientId":"c2"},"Reason":"try c2"}"#,
    )
    .await;
    let other = a.json()["Data"]["ReplayId"].as_str().unwrap().to_owned();
    let a = delete(&server, &format!("/admin/replays/{other}")).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    assert_eq!(a.json()["Data"]["Status"], "aborted");
    assert_eq!(replay(&server, &other).await["State"], "aborted");
    assert_eq!(runner.step(at(10_000)).await.unwrap().visited, 0);

    // Listed newest first; audited once each.
    let listed = replays(&server).await;
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ReplayId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [other.as_str(), id.as_str()]);
    let audit = audit_actions(&server).await;
    let created: Vec<_> = audit.iter().filter(|e| e.0 == "replay_created").collect();
    assert_eq!(created.len(), 2);
    assert!(created.iter().any(|e| e.1 == id && e.2 == "from the test"));
    let aborted: Vec<_> = audit.iter().filter(|e| e.0 == "replay_aborted").collect();
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].1, other);

    // Unknown: 404; malformed: 400 naming replayId.
    for path in ["/replays/r-nope"] {
        let a = get(&server, &format!("{BASE}{path}")).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
    }
    let a = delete(&server, "/admin/replays/r-nope").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = get(&server, &format!("{BASE}/replays/a.b")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.json()["Message"].as_str().unwrap().contains("replayId"));
}

#[tokio::test]
async fn bad_input_is_400_naming_the_field_and_makes_nothing() {
    let (server, _, _) = server().await;
    record(&server, "c1", 3).await;
    let cases = [
        (r#"{"Reason":"r"}"#, "Filters"),
        (r#"{"Filters":{},"Reason":"r"}"#, "Filters"),
        (r#"{"Filters":{"clientId":"c1"}}"#, "Reason: is required"),
        (r#"{"Filters":{"clientId":"c1"},"Reason":" "}"#, "Reason"),
        (
            r#"{"Filters":{"clientId":"c1"},"Reason":"r","PerSecond":0}"#,
            "PerSecond",
        ),
        (
            r#"{"Filters":{"clientId":"c1"},"Reason":"r","PerSecond":20000}"#,
            "PerSecond",
        ),
        (
            r#"{"Filters":{"clientId":"c1"},"Reason":"r","PerSecond":"fast"}"#,
            "PerSecond: must be a number",
        ),
        (
            r#"{"Filters":{"category":"nope"},"Reason":"r"}"#,
            "Filters.category",
        ),
        (
            r#"{"Filters":{"pageSize":"5"},"Reason":"r"}"#,
            "Filters.pageSize",
        ),
        (
            r#"{"Filters":{"clientId":5},"Reason":"r"}"#,
            "Filters.clientId",
        ),
        (
            r#"{"Filters":{"since":"2025-02-01T00:00:00Z","until":"2025-01-01T00:00:00Z"},"Reason":"r"}"#,
            "since",
        ),
        (
            r#"{"Filters":{"clientId":"c1"},"Reason":"r","Colour":"red"}"#,
            "unknown field `Colour`",
        ),
        ("[]", "body"),
        ("{", "body"),
    ];
    for (body, names) in cases {
        let a = post(&server, "/admin/replays", body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        let msg = a.json()["Message"].as_str().unwrap().to_owned();
        assert!(msg.contains(names), "{body}: {msg}");
    }
    assert_eq!(replays(&server).await, json!([]));
    let a = get(&server, &format!("{BASE}/replays?pageSize=5")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_bulk_retry_keeps_a_replay_that_is_done() {
    let (server, _, _) = server().await;
    record(&server, "c1", 4).await;
    let a = post(&server, "/admin/retries?clientId=c1", "").await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    let data = a.json()["Data"].clone();
    assert_eq!(
        (data["Retried"].clone(), data["Complete"].clone()),
        (json!(4), json!(true))
    );
    let id = data["ReplayId"].as_str().unwrap().to_owned();
    let r = replay(&server, &id).await;
    assert_eq!(r["State"], "done");
    assert_eq!(
        (r["Matched"].clone(), r["Scheduled"].clone()),
        (json!(4), json!(4))
    );
    assert_eq!(r["Reason"], "from the test");
    assert_eq!(r["Filters"], json!({"clientId": "c1"}));
}
