//! `GET /tasks/failed-groups` and the listing's `signature=`.

use std::sync::Arc;

use failed_tasks_domain::{ErrorCategory, FailedTask, NewFailedTask};
use failed_tasks_query::Deadlines;
use failed_tasks_store::{MemoryStore, StatusStore};
use hyper::StatusCode;

use crate::helpers::{get, memory, spawn_app, test_config};

const GROUPS: &str = "/codebase-embedder/api/v1/tasks/failed-groups";
const LIST: &str = "/codebase-embedder/api/v1/tasks/failed";

fn failure(id: &str, minute: i64, client: &str, code: &str, message: &str) -> FailedTask {
    FailedTask::new(NewFailedTask {
        task_id: id.into(),
        task_type: "embedding".into(),
        client_id: client.into(),
        start_time: failed_tasks_domain::Timestamp::from_unix_millis(1_737_709_200_000).unwrap(),
        fail_time: failed_tasks_domain::Timestamp::from_unix_millis(
            1_737_709_200_000 + minute * 60_000,
        )
        .unwrap(),
        error_code: code.into(),
        error_message: message.into(),
        error_category: Some(ErrorCategory::ServiceTimeout),
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test]
async fn failures_group_by_signature_and_the_listing_filters_by_it() {
    let store = MemoryStore::new();
    for t in [
        failure(
            "a",
            1,
            "c1",
            "TIMEOUT_ERROR",
            "向量嵌入服务超时，请求超过30秒未响应",
        ),
        failure(
            "b",
            2,
            "c2",
            "TIMEOUT_ERROR",
            "向量嵌入服务超时，请求超过45秒未响应",
        ),
        failure(
            "c",
            3,
            "c1",
            "TIMEOUT_ERROR",
            "向量嵌入服务超时，请求超过60秒未响应",
        ),
        failure(
            "d",
            4,
            "c9",
            "DEADLINE_EXCEEDED",
            "deadline of 5s exceeded for /projects/x",
        ),
    ] {
        store.record(&t).await.unwrap();
    }
    let server = spawn_app(memory(Arc::new(store)), Deadlines::default(), test_config()).await;
    let a = get(&server, GROUPS).await;
    assert_eq!(a.status, StatusCode::OK);
    let d = &a.json()["Data"];
    assert_eq!(d["TotalGroups"], 2);
    let g = &d["Groups"];
    assert_eq!(g[0]["ErrorCode"], "DEADLINE_EXCEEDED", "last seen first");
    assert_eq!(g[1]["ErrorCode"], "TIMEOUT_ERROR");
    assert_eq!(g[1]["Count"], 3);
    assert_eq!(g[1]["ClientsAffected"], 2);
    assert_eq!(g[1]["FirstSeen"], "2025-01-24T09:01:00Z");
    assert_eq!(g[1]["LastSeen"], "2025-01-24T09:03:00Z");
    assert_eq!(g[1]["SampleTaskId"], "c");
    assert_eq!(g[1]["Pattern"], "向量嵌入服务超时，请求超过<n>秒未响应");
    let sig = g[1]["Signature"].as_str().unwrap().to_owned();

    let listed = get(&server, &format!("{LIST}?signature={sig}"))
        .await
        .json();
    let ids: Vec<&str> = listed["Data"]["Tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["TaskId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c", "b", "a"]);
    assert_eq!(listed["Data"]["TotalTasks"], 3);

    // Paging one group at a time.
    let p1 = get(&server, &format!("{GROUPS}?pageSize=1")).await.json();
    let cursor = p1["Data"]["NextCursor"]
        .as_str()
        .unwrap_or_else(|| panic!("{p1}"))
        .to_owned();
    let p2 = get(&server, &format!("{GROUPS}?pageSize=1&cursor={cursor}"))
        .await
        .json();
    assert_eq!(p2["Data"]["Groups"][0]["Signature"], sig.as_str());
    assert_eq!(p2["Data"]["NextCursor"], serde_json::Value::Null);

    for bad in ["signature=xyz", "signature=ABCDEF0123456789"] {
        assert_eq!(
            get(&server, &format!("{LIST}?{bad}")).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    for bad in ["cursor=nope", "pageSize=0", "category=data_error"] {
        assert_eq!(
            get(&server, &format!("{GROUPS}?{bad}")).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
}
