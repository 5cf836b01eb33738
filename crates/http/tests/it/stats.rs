//! `GET /tasks/failed-stats` and `POST /admin/task-attempts` over HTTP, with fail times
//! relative to now so the window holds them.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use failed_tasks_domain::stats::AlertThresholds;
use failed_tasks_domain::{FailedTask, NewFailedTask};
use failed_tasks_http::{HttpConfig, Token};
use failed_tasks_query::{Deadlines, FailedTaskService};
use failed_tasks_store::{MemoryStore, StatusStore};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{get, request_with_body, spawn_service};

const STATS: &str = "/codebase-embedder/api/v1/tasks/failed-stats";
const ATTEMPTS: &str = "/codebase-embedder/api/v1/admin/task-attempts";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn failure(id: usize, minutes_ago: i64, category: &str, code: &str) -> FailedTask {
    let fail = now_ms() - minutes_ago * 60_000;
    FailedTask::new(NewFailedTask {
        task_id: format!("s{id}"),
        task_type: if id.is_multiple_of(2) {
            "embedding"
        } else {
            "indexing"
        }
        .into(),
        client_id: format!("client{}", id % 3),
        start_time: failed_tasks_domain::Timestamp::from_unix_millis(fail - 1000).unwrap(),
        fail_time: failed_tasks_domain::Timestamp::from_unix_millis(fail).unwrap(),
        error_code: code.into(),
        error_category: Some(failed_tasks_domain::ErrorCategory::parse(category).unwrap()),
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn stats_count_the_window_and_fire_the_rules_that_hold() {
    let store = Arc::new(MemoryStore::new());
    // 40 minutes ago: 3 old ones; last 2 minutes: a burst of 30 authorization failures.
    let mut tasks: Vec<FailedTask> = (0..3)
        .map(|i| failure(i, 40, "service_timeout", "TIMEOUT_ERROR"))
        .collect();
    tasks.extend((3..33).map(|i| failure(i, (i % 2) as i64, "authorization", "PERMISSION_DENIED")));
    // Outside a 1h window: never counted.
    tasks.push(failure(99, 180, "data_error", "PARSE_ERROR"));
    store.record_batch(&tasks).await.unwrap();

    let thresholds = AlertThresholds {
        category_max: 20,
        error_code_max: 1000,
        ..Default::default()
    };
    let service = FailedTaskService::new(crate::helpers::memory(store), Deadlines::default())
        .with_alert_thresholds(thresholds);
    let config = HttpConfig {
        admin_token: Token::new("t"),
        ..crate::helpers::test_config()
    };
    let server = spawn_service(service, config).await;

    let a = get(&server, &format!("{STATS}?window=1h")).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let d = &a.json()["Data"];
    assert_eq!(d["TotalFailures"], 33);
    let by_cat: Vec<(String, u64)> = d["ByCategory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["Name"].as_str().unwrap().to_owned(),
                v["Count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        by_cat.contains(&("authorization".to_owned(), 30)),
        "{by_cat:?}"
    );
    assert!(by_cat.contains(&("service_timeout".to_owned(), 3)));
    assert!(by_cat.contains(&("data_error".to_owned(), 0)));
    assert_eq!(
        d["ByErrorCode"][0],
        json!({"Name":"PERMISSION_DENIED","Count":30})
    );
    assert_eq!(d["Timeline"].as_array().unwrap().len(), 60);
    let timeline_sum: u64 = d["Timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Count"].as_u64().unwrap())
        .sum();
    assert_eq!(timeline_sum, 33);
    assert_eq!(d["Attempts"], Value::Null);
    let rules: Vec<&str> = d["Alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["Rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"sudden_increase"), "{rules:?}");
    assert!(rules.contains(&"category_threshold"), "{rules:?}");
    let cat = d["Alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["Rule"] == "category_threshold")
        .unwrap();
    assert_eq!(cat["Subject"], "authorization");
    assert_eq!(cat["Level"], "warning", "30 is above 20 but not above 500");
    assert_eq!(cat["Figure"], 30.0);
    assert_eq!(cat["Threshold"], 20.0);
    assert!(cat["Since"].as_str().unwrap().ends_with(":00Z"));

    // Attempts make a failure rate: 33 failures / 100 attempts = 0.33 > 0.2.
    let r = request_with_body(
        &server,
        Method::POST,
        ATTEMPTS,
        &[
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
        ],
        json!([{"TaskType":"embedding","Count":60},{"TaskType":"indexing","Count":40}]).to_string(),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["Data"]["Recorded"], 100);
    let d = get(&server, &format!("{STATS}?window=1h")).await.json()["Data"].clone();
    assert_eq!(d["Attempts"], 100);
    assert!((d["FailureRate"].as_f64().unwrap() - 0.33).abs() < 1e-9);
    let rate = d["Alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["Rule"] == "failure_rate")
        .expect("rate alert");
    assert_eq!(rate["Threshold"], 0.2);
    assert_eq!(rate["Level"], "warning", "0.33 is not above 0.5");

    // A 5-minute window holds only the burst.
    let d = get(&server, &format!("{STATS}?window=5m")).await.json()["Data"].clone();
    assert_eq!(d["TotalFailures"], 30);
}

#[tokio::test]
async fn bad_windows_and_attempts_are_400() {
    let service = FailedTaskService::new(
        crate::helpers::memory(Arc::new(MemoryStore::new())),
        Deadlines::default(),
    );
    let config = HttpConfig {
        admin_token: Token::new("t"),
        ..crate::helpers::test_config()
    };
    let server = spawn_service(service, config).await;
    for q in [
        "window=1m",
        "window=8d",
        "window=90s",
        "window=soon",
        "span=1h",
    ] {
        let a = get(&server, &format!("{STATS}?{q}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{q}");
    }
    for body in [
        json!({"TaskType":"embedding"}),
        json!({"TaskType":"embedding","Count":-1}),
        json!({"Count":3}),
        json!([]),
    ] {
        let a = request_with_body(
            &server,
            Method::POST,
            ATTEMPTS,
            &[
                ("authorization", "Bearer t"),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
    }
    let d = get(&server, STATS).await.json()["Data"].clone();
    assert_eq!(
        d["Timeline"].as_array().unwrap().len(),
        60,
        "the default window is 1h"
    );
    assert_eq!(
        d["Attempts"],
        Value::Null,
        "rejected reports stored nothing"
    );
}

#[tokio::test]
async fn a_store_without_statistics_answers_501_naming_it() {
    // A store that keeps tasks and nothing else (as the read-only compat source).
    let store = Arc::new(MemoryStore::new());
    let service = FailedTaskService::new(
        failed_tasks_store::Stores::new("tasks-only", store.clone()),
        Deadlines::default(),
    );
    let config = HttpConfig {
        admin_token: Token::new("t"),
        ..crate::helpers::test_config()
    };
    let server = spawn_service(service, config).await;
    let want = "the tasks-only store does not support failure statistics, task attempts and failure groups";
    for path in [
        format!("{STATS}?window=1h"),
        "/codebase-embedder/api/v1/tasks/failed-groups".to_owned(),
    ] {
        let a = get(&server, &path).await;
        assert_eq!(a.status, StatusCode::NOT_IMPLEMENTED, "{path}");
        assert_eq!(
            a.json(),
            json!({"Code": 501, "Message": want, "Success": false, "Data": null}),
            "{path}"
        );
    }
    let a = request_with_body(
        &server,
        Method::POST,
        ATTEMPTS,
        &[
            ("authorization", "Bearer t"),
            ("content-type", "application/json"),
        ],
        json!({"TaskType": "embedding", "Count": 3}).to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(a.json()["Message"], want);
    // Bad input is still refused first, as on every store.
    let a = get(&server, &format!("{STATS}?window=soon")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // The tasks themselves are served as always.
    let a = get(&server, "/codebase-embedder/api/v1/tasks/failed").await;
    assert_eq!(a.status, StatusCode::OK);
}
