//! The scenarios, written once, run on every store.

use std::collections::HashSet;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::client::{call, get, get_text, post};
use crate::Env;

use crate::LIST;
const ADMIN: &str = "/codebase-embedder/api/v1/admin/failed-tasks";

fn task(id: &str, minute: u32, category: &str, client: &str, code: &str, ty: &str) -> Value {
    json!({"TaskId": id, "TaskType": ty, "ClientId": client, "CodebasePath": format!("/projects/{client}"),
        "StartTime": "2025-01-24T08:00:00Z", "FailTime": format!("2025-01-24T{:02}:{:02}:00Z", 9 + minute / 60, minute % 60),
        "ErrorCode": code, "ErrorMessage": format!("{code} in {id}"), "RetryCount": 1, "ProcessedFiles": 5,
        "ErrorCategory": category})
}

fn ids(page: &Value) -> Vec<String> {
    page["Data"]["Tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["TaskId"].as_str().unwrap().to_owned())
        .collect()
}

fn seed() -> Value {
    json!([
        {"TaskId":"task_001","TaskType":"embedding","ClientId":"client123","CodebasePath":"/projects/myapp",
         "StartTime":"2025-01-24T09:00:00Z","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"TIMEOUT_ERROR",
         "ErrorMessage":"向量嵌入服务超时，请求超过30秒未响应","RetryCount":3,"ProcessedFiles":75,"ErrorCategory":"service_timeout"},
        {"TaskId":"task_002","TaskType":"indexing","ClientId":"client456","CodebasePath":"/projects/another",
         "StartTime":"2025-01-24T09:20:00Z","FailTime":"2025-01-24T09:22:00Z","ErrorCode":"PERMISSION_DENIED",
         "ErrorMessage":"没有权限访问指定代码库","RetryCount":0,"ProcessedFiles":0,"ErrorCategory":"authorization"},
        {"TaskId":"task_003","TaskType":"cleaning","ClientId":"client789","CodebasePath":"/projects/old",
         "StartTime":"2025-01-24T10:00:00Z","FailTime":"2025-01-24T10:01:00Z","ErrorCode":"STORAGE_ERROR",
         "ErrorMessage":"存储空间不足，无法完成清理操作","RetryCount":1,"ProcessedFiles":50,"ErrorCategory":"resource_exhausted"}
    ])
}

/// The seed as the API shows it: with the additive NextRetryAt and FinalFailure of the
/// default policy without jitter (task_001's fourth retry is due 30 s x 2^3 after it failed,
/// task_003's second 30 s x 2).
fn seed_shown() -> Value {
    let mut s = seed();
    let next = [
        json!("2025-01-24T09:19:00Z"),
        json!(null),
        json!("2025-01-24T10:02:00Z"),
    ];
    for (i, (fin, next)) in [false, true, false].into_iter().zip(next).enumerate() {
        s[i]["NextRetryAt"] = next;
        s[i]["FinalFailure"] = json!(fin);
    }
    s
}

pub async fn seed_tasks_are_listed_newest_first(env: &Env) {
    let (status, v) = post(env, seed()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let page = get(env, LIST).await;
    let s = seed_shown();
    assert_eq!(
        page,
        json!({"Code":0,"Message":"ok","Success":true,
            "Data":{"TotalTasks":3,"Tasks":[s[2], s[1], s[0]],"NextCursor":null}})
    );
}

pub async fn recording_again_updates_and_moves_indexes(env: &Env) {
    post(
        env,
        task(
            "x",
            1,
            "service_timeout",
            "alice",
            "TIMEOUT_ERROR",
            "embedding",
        ),
    )
    .await;
    post(
        env,
        task(
            "y",
            2,
            "service_timeout",
            "alice",
            "TIMEOUT_ERROR",
            "embedding",
        ),
    )
    .await;
    let (_, v) = post(
        env,
        task(
            "x",
            30,
            "authorization",
            "bob",
            "PERMISSION_DENIED",
            "indexing",
        ),
    )
    .await;
    assert_eq!(v["Data"], json!({"Recorded":1,"Created":0,"Updated":1}));
    assert_eq!(get(env, LIST).await["Data"]["TotalTasks"], 2);
    assert_eq!(
        ids(&get(env, LIST).await),
        ["x", "y"],
        "x moved to its new fail time"
    );
    assert_eq!(
        ids(&get(env, &format!("{LIST}?clientId=alice")).await),
        ["y"]
    );
    assert_eq!(ids(&get(env, &format!("{LIST}?clientId=bob")).await), ["x"]);
    assert_eq!(
        ids(&get(env, &format!("{LIST}?category=service_timeout")).await),
        ["y"]
    );
    assert_eq!(
        ids(&get(env, &format!("{LIST}?errorCode=PERMISSION_DENIED")).await),
        ["x"]
    );
    assert_eq!(
        ids(&get(env, &format!("{LIST}?taskType=indexing")).await),
        ["x"]
    );
}

pub async fn a_bad_batch_stores_nothing(env: &Env) {
    let mut bad = task("c", 3, "data_error", "c", "PARSE_ERROR", "indexing");
    bad["FailTime"] = json!("2025-01-24T07:00:00Z"); // before StartTime
    let batch = json!([
        task("a", 1, "data_error", "c", "PARSE_ERROR", "indexing"),
        task("b", 2, "data_error", "c", "PARSE_ERROR", "indexing"),
        bad
    ]);
    let (status, v) = post(env, batch).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["Message"].as_str().unwrap().contains("[2].FailTime"),
        "{v}"
    );
    assert_eq!(get(env, LIST).await["Data"]["TotalTasks"], 0);
}

pub async fn paging_is_complete_while_failures_arrive(env: &Env) {
    let batch: Vec<Value> = (0..250)
        .map(|i| {
            task(
                &format!("t{i:03}"),
                i % 90,
                "system_error",
                "c",
                "INTERNAL",
                "embedding",
            )
        })
        .collect();
    post(env, Value::Array(batch)).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut late = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("{LIST}?pageSize=40&cursor={c}"),
            None => format!("{LIST}?pageSize=40"),
        };
        let page = get(env, &path).await;
        seen.extend(ids(&page));
        late += 1;
        post(
            env,
            task(
                &format!("late{late}"),
                200 + late,
                "system_error",
                "c",
                "INTERNAL",
                "embedding",
            ),
        )
        .await;
        match page["Data"]["NextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250, "pages lost or repeated tasks");
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        250,
        "a task was listed twice"
    );
}

pub async fn filters_combine_and_totals_match(env: &Env) {
    let cats = ["service_timeout", "authorization", "data_error"];
    let batch: Vec<Value> = (0..60)
        .map(|i| {
            task(
                &format!("f{i:02}"),
                i,
                cats[i as usize % 3],
                &format!("client{}", i % 4),
                "E",
                if i % 2 == 0 { "embedding" } else { "indexing" },
            )
        })
        .collect();
    post(env, Value::Array(batch)).await;
    let page = get(
        env,
        &format!("{LIST}?category=authorization&clientId=client1&taskType=indexing"),
    )
    .await;
    // i % 3 == 1 and i % 4 == 1 and i odd: i = 1, 13, 25, 37, 49
    assert_eq!(ids(&page), ["f49", "f37", "f25", "f13", "f01"]);
    assert_eq!(page["Data"]["TotalTasks"], 5);
    let window = get(
        env,
        &format!("{LIST}?since=2025-01-24T09:10:00Z&until=2025-01-24T09:14:00Z"),
    )
    .await;
    assert_eq!(ids(&window), ["f14", "f13", "f12", "f11", "f10"]);
    assert_eq!(window["Data"]["TotalTasks"], 5);
    let first = get(env, &format!("{LIST}?category=data_error&pageSize=3")).await;
    assert_eq!(first["Data"]["TotalTasks"], 20);
    assert_eq!(ids(&first), ["f59", "f56", "f53"]);
}

pub async fn one_task_and_removals(env: &Env) {
    post(env, seed()).await;
    let one = get(env, &format!("{LIST}/task_002")).await;
    let mut shown = seed_shown()[1].clone();
    shown["Attempts"] = json!([{"Attempt":0,"FailTime":"2025-01-24T09:22:00Z",
        "ErrorCode":"PERMISSION_DENIED","ErrorCategory":"authorization","ScheduledBy":null}]);
    // Its failure named no files.
    shown["FailedFiles"] = json!(0);
    assert_eq!(one["Data"], shown);
    let (status, _) = call(env, Method::GET, &format!("{LIST}/task_404"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, v) = call(env, Method::DELETE, &format!("{ADMIN}/task_002"), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _) = call(env, Method::GET, &format!("{LIST}/task_002"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, v) = call(
        env,
        Method::DELETE,
        &format!("{ADMIN}?until=2025-01-24T09:30:00Z"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["Data"], json!({"Removed":1,"Complete":true}));
    assert_eq!(ids(&get(env, LIST).await), ["task_003"]);
}

/// A failure `minutes_ago` before now (whole seconds), for the statistics windows.
fn recent(
    id: &str,
    minutes_ago: i64,
    category: &str,
    client: &str,
    code: &str,
    msg: &str,
) -> Value {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = |ms: i64| {
        failed_tasks_domain::Timestamp::from_unix_millis(ms)
            .unwrap()
            .to_rfc3339()
    };
    let fail_ms = (now_s - minutes_ago * 60) * 1000;
    json!({"TaskId": id, "TaskType": "embedding", "ClientId": client, "CodebasePath": "/projects/p",
        "StartTime": at(fail_ms - 60_000), "FailTime": at(fail_ms), "ErrorCode": code,
        "ErrorMessage": msg, "RetryCount": 1, "ProcessedFiles": 5, "ErrorCategory": category})
}

fn category_count(stats: &Value, category: &str) -> u64 {
    stats["Data"]["ByCategory"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Name"] == category)
        .and_then(|c| c["Count"].as_u64())
        .unwrap_or_else(|| panic!("no {category} in {stats}"))
}

pub async fn stats_and_groups_follow_writes(env: &Env) {
    const STATS: &str = "/codebase-embedder/api/v1/tasks/failed-stats";
    const GROUPS: &str = "/codebase-embedder/api/v1/tasks/failed-groups";
    let (status, v) = post(
        env,
        json!([
            recent(
                "g1",
                3,
                "service_timeout",
                "c1",
                "TIMEOUT_ERROR",
                "timed out after 30 s"
            ),
            recent(
                "g2",
                5,
                "service_timeout",
                "c2",
                "TIMEOUT_ERROR",
                "timed out after 45 s"
            ),
            recent(
                "g3",
                7,
                "service_timeout",
                "c1",
                "TIMEOUT_ERROR",
                "timed out after 12 s"
            ),
            recent(
                "s1",
                4,
                "resource_exhausted",
                "c3",
                "STORAGE_ERROR",
                "disk full"
            ),
            recent("old", 120, "data_error", "c1", "PARSE_ERROR", "bad row 7"),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");

    let hour = get(env, &format!("{STATS}?window=1h")).await;
    assert_eq!(hour["Data"]["TotalFailures"], 4, "{hour}");
    assert_eq!(category_count(&hour, "service_timeout"), 3);
    assert_eq!(category_count(&hour, "resource_exhausted"), 1);
    assert_eq!(category_count(&hour, "data_error"), 0);
    let three = get(env, &format!("{STATS}?window=3h")).await;
    assert_eq!(three["Data"]["TotalFailures"], 5, "{three}");
    assert_eq!(category_count(&three, "data_error"), 1);

    let groups = get(env, GROUPS).await;
    assert_eq!(groups["Data"]["TotalGroups"], 3, "{groups}");
    let g = &groups["Data"]["Groups"][0];
    assert_eq!(g["SampleTaskId"], "g1", "{groups}");
    assert_eq!(g["Count"], 3);
    assert_eq!(g["ClientsAffected"], 2);
    assert_eq!(g["Pattern"], "timed out after <n> s");
    assert_eq!(g["ErrorCode"], "TIMEOUT_ERROR");
    let sig = g["Signature"].as_str().unwrap().to_owned();
    let members = get(env, &format!("{LIST}?signature={sig}")).await;
    assert_eq!(ids(&members), ["g1", "g2", "g3"]);
    assert_eq!(members["Data"]["TotalTasks"], 3);

    // Removing the newest member shrinks the group and lets the storage error lead.
    let (status, v) = call(env, Method::DELETE, &format!("{ADMIN}/g1"), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let groups = get(env, GROUPS).await;
    assert_eq!(
        groups["Data"]["Groups"][0]["SampleTaskId"], "s1",
        "{groups}"
    );
    assert_eq!(groups["Data"]["Groups"][1]["Signature"], sig.as_str());
    assert_eq!(groups["Data"]["Groups"][1]["Count"], 2);
    assert_eq!(groups["Data"]["Groups"][1]["SampleTaskId"], "g2");
    let hour = get(env, &format!("{STATS}?window=1h")).await;
    assert_eq!(hour["Data"]["TotalFailures"], 3, "{hour}");
    assert_eq!(category_count(&hour, "service_timeout"), 2);
    assert_eq!(hour["Data"]["Attempts"], Value::Null);

    // Reported attempts give the failure rate.
    let (status, v) = call(
        env,
        Method::POST,
        "/codebase-embedder/api/v1/admin/task-attempts",
        Some(
            json!([{"TaskType": "embedding", "Count": 20}, {"TaskType": "indexing", "Count": 10}]),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let hour = get(env, &format!("{STATS}?window=1h")).await;
    assert_eq!(hour["Data"]["Attempts"], 30, "{hour}");
    assert_eq!(hour["Data"]["FailureRate"], 0.1);
}

/// Unknown tasks, malformed ids, a retry of a resolved task, a resolve of an unknown one:
/// a clear 4xx in the envelope, and nothing written.
pub async fn retry_routes_refuse_bad_input(env: &Env) {
    let now = failed_tasks_domain::Timestamp::now();
    let (status, _) = post(
        env,
        json!([
            crate::retries::failure_json(0, 0, now),
            crate::retries::failure_json(1, 0, now)
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = call(env, Method::POST, &format!("{ADMIN}/e0000/resolve"), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let before = get(env, LIST).await;
    let before_one = get(env, &format!("{LIST}/e0001")).await;
    let cases: [(Method, String, StatusCode); 9] = [
        (
            Method::POST,
            format!("{ADMIN}/nope/retry"),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            format!("{ADMIN}/nope/resolve"),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::DELETE,
            format!("{ADMIN}/nope/retry"),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            format!("{ADMIN}/e0000/retry"),
            StatusCode::CONFLICT,
        ),
        (
            Method::DELETE,
            format!("{ADMIN}/e0000/retry"),
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            format!("{ADMIN}/%C3%28/retry"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            format!("{ADMIN}/a%09b/resolve"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            format!("{ADMIN}/e0001/retry?force=1"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/codebase-embedder/api/v1/admin/retries".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, path, want) in cases {
        let (status, v) = call(env, method.clone(), &path, None).await;
        assert_eq!(status, want, "{method} {path}: {v}");
        assert_eq!(v["Success"], false, "{v}");
        assert_eq!(v["Code"], want.as_u16(), "{v}");
        assert!(!v["Message"].as_str().unwrap().is_empty());
    }
    // Resolving a resolved task again is idempotent, not an error.
    let (status, v) = call(env, Method::POST, &format!("{ADMIN}/e0000/resolve"), None).await;
    assert_eq!(
        (status, v["Data"]["Status"].clone()),
        (StatusCode::OK, json!("already_resolved"))
    );
    assert_eq!(get(env, LIST).await, before, "nothing written");
    assert_eq!(get(env, &format!("{LIST}/e0001")).await, before_one);
}

/// `q`, `pathPrefix` and the export, the same on every store: the export is the paged
/// listing row by row, and a search is the brute-force filter of what was recorded.
pub async fn search_and_export_match_the_listing(env: &Env) {
    let batch: Vec<Value> = (0..60)
        .map(|i| {
            task(
                &format!("s{i:02}"),
                i,
                ["service_timeout", "data_error"][i as usize % 2],
                &format!("client{}", i % 4),
                ["TIMEOUT_ERROR", "PARSE_ERROR"][i as usize % 2],
                "embedding",
            )
        })
        .collect();
    post(env, Value::Array(batch)).await;
    let listed = |page: &Value| -> Vec<Value> { page["Data"]["Tasks"].as_array().unwrap().clone() };
    let all = get(env, &format!("{LIST}?pageSize=1000")).await;
    let ndjson = get_text(
        env,
        "/codebase-embedder/api/v1/tasks/failed/export?format=ndjson",
    )
    .await;
    let rows: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows, listed(&all));
    let csv = get_text(
        env,
        "/codebase-embedder/api/v1/tasks/failed/export?format=csv&clientId=client1",
    )
    .await;
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 16, "a header and client1's 15: {csv}");
    assert!(
        lines[1].starts_with("s57,embedding,client1,/projects/client1,"),
        "{}",
        lines[1]
    );

    // A code names its group (groups); a concrete id is walked.
    let by_code = get(env, &format!("{LIST}?q=parse_error&pageSize=1000")).await;
    assert_eq!(by_code["Data"]["Search"], "groups");
    assert_eq!(by_code["Data"]["TotalTasks"], 30);
    let want: Vec<String> = (0..60)
        .rev()
        .filter(|i| i % 2 == 1)
        .map(|i| format!("s{i:02}"))
        .collect();
    assert_eq!(ids(&by_code), want);
    let by_id = get(env, &format!("{LIST}?q=S1&pathPrefix=/projects/client2/")).await;
    assert_eq!(by_id["Data"]["Search"], "walk");
    assert_eq!(ids(&by_id), ["s18", "s14", "s10"]);
    let exported = get_text(
        env,
        "/codebase-embedder/api/v1/tasks/failed/export?format=ndjson&q=S1&pathPrefix=/projects/client2/",
    )
    .await;
    let rows: Vec<Value> = exported
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows, listed(&by_id));
}
