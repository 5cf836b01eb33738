//! `q` and `pathPrefix` over HTTP: the listing's answer says how it searched, bad values are
//! 400s naming the parameter (nothing removed or retried), and the bulk routes take them.

use std::sync::Arc;

use failed_tasks_domain::FailedTask;
use failed_tasks_http::{HttpConfig, Token};
use failed_tasks_query::Deadlines;
use failed_tasks_store::{MemoryStore, StatusStore};
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{get, memory, request, spawn_app, test_config, TestServer};

const LIST: &str = "/codebase-embedder/api/v1/tasks/failed";
const ADMIN: &str = "/codebase-embedder/api/v1/admin/failed-tasks";
const RETRIES: &str = "/codebase-embedder/api/v1/admin/retries";
const AUTH: (&str, &str) = ("authorization", "Bearer admin-token");

async fn seeded() -> (Arc<MemoryStore>, TestServer) {
    let store = Arc::new(MemoryStore::new());
    for t in FailedTask::seed_examples() {
        store.record(&t).await.unwrap();
    }
    let config = HttpConfig {
        admin_token: Token::new("admin-token"),
        ..test_config()
    };
    let server = spawn_app(memory(store.clone()), Deadlines::default(), config).await;
    (store, server)
}

fn ids(answer: &serde_json::Value) -> Vec<String> {
    answer["Data"]["Tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["TaskId"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_answer_says_how_it_searched() {
    let (_, server) = seeded().await;
    // Pattern text: the group "向量嵌入服务超时，请求超过<n>秒未响应".
    let a = get(&server, &format!("{LIST}?q=%E8%B6%85%E6%97%B6"))
        .await
        .json();
    assert_eq!(ids(&a), ["task_001"]);
    assert_eq!(a["Data"]["Search"], "groups");
    assert_eq!(a["Data"]["Complete"], true);
    assert_eq!(a["Data"]["TotalTasks"], 1);
    // An error code names its groups too, case-insensitively.
    let b = get(&server, &format!("{LIST}?q=permission_DENIED"))
        .await
        .json();
    assert_eq!(ids(&b), ["task_002"]);
    assert_eq!(b["Data"]["Search"], "groups");
    // Digits (here in a task id) are only in concrete values: a walk.
    let c = get(&server, &format!("{LIST}?q=TASK_00")).await.json();
    assert_eq!(ids(&c), ["task_003", "task_002", "task_001"]);
    assert_eq!(c["Data"]["Search"], "walk");
    assert_eq!(c["Data"]["Complete"], true);
    assert_eq!(c["Data"]["NextCursor"], json!(null));
    // A path, with the other filters (AND).
    let d = get(
        &server,
        &format!("{LIST}?q=%2Fprojects%2F&category=authorization"),
    )
    .await;
    assert_eq!(ids(&d.json()), ["task_002"]);
    // A directory boundary: /projects/my is no directory of /projects/myapp.
    let e = get(
        &server,
        &format!("{LIST}?pathPrefix=%2Fprojects%2Fmyapp%2F"),
    )
    .await
    .json();
    assert_eq!(ids(&e), ["task_001"]);
    assert_eq!(e["Data"]["Search"], "walk");
    let f = get(&server, &format!("{LIST}?pathPrefix=%2Fprojects%2Fmy"))
        .await
        .json();
    assert_eq!(ids(&f), Vec::<String>::new());
    // Paging a search: a cursor per page, no repeats.
    let g = get(&server, &format!("{LIST}?q=task&pageSize=2"))
        .await
        .json();
    assert_eq!(ids(&g), ["task_003", "task_002"]);
    let cursor = g["Data"]["NextCursor"].as_str().unwrap().to_owned();
    let h = get(
        &server,
        &format!("{LIST}?q=task&pageSize=2&cursor={cursor}"),
    )
    .await
    .json();
    assert_eq!(ids(&h), ["task_001"]);
    assert_eq!(h["Data"]["NextCursor"], json!(null));
    // Without a search, the answer is as it always was.
    let plain = get(&server, LIST).await.json();
    assert!(plain["Data"].get("Search").is_none());
    assert!(plain["Data"].get("Complete").is_none());
}

#[tokio::test]
async fn bad_search_values_are_400s_naming_the_parameter() {
    let (store, server) = seeded().await;
    let long = "x".repeat(201);
    let cases = [
        ("q=", "q"),
        ("q=%20%20", "q"),
        (long.as_str(), "q"),
        ("pathPrefix=projects", "pathPrefix"),
        ("pathPrefix=", "pathPrefix"),
    ];
    for (query, name) in cases {
        let query = if query == long {
            format!("q={long}")
        } else {
            query.to_owned()
        };
        for (method, path) in [
            (Method::GET, LIST),
            (Method::DELETE, ADMIN),
            (Method::POST, RETRIES),
        ] {
            let a = request(&server, method.clone(), &format!("{path}?{query}"), &[AUTH]).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{method} {query}");
            let message = a.json()["Message"].as_str().unwrap().to_owned();
            assert!(message.contains(name), "{method} {query}: {message}");
        }
    }
    assert_eq!(store.len(), 3, "nothing was removed");
}

#[tokio::test]
async fn bulk_removal_takes_the_search() {
    let (store, server) = seeded().await;
    let a = request(
        &server,
        Method::DELETE,
        &format!("{ADMIN}?q=task_00&pathPrefix=%2Fprojects%2Fold"),
        &[AUTH],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["Data"], json!({"Removed":1,"Complete":true}));
    assert_eq!(store.len(), 2);
    let left = get(&server, LIST).await.json();
    assert_eq!(ids(&left), ["task_002", "task_001"]);
}
