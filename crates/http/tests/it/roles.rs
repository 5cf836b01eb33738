//! Named tokens and roles: every route × every role answers as the role allows (403 naming
//! the role when it does not, 401 without a known token), and a token limited to one client
//! neither sees nor touches another client's failures.

use std::sync::Arc;

use failed_tasks_domain::ClientId;
use failed_tasks_http::{HttpConfig, NamedToken, Role, Token, ROUTES};
use failed_tasks_query::{Deadlines, FailedTaskService};
use failed_tasks_store::{MemoryStore, StatusStore, Stores};
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{request_with_body, spawn_service, test_config, Answer, TestServer};

const BASE: &str = "/codebase-embedder/api/v1";

fn task(id: &str, client: &str) -> serde_json::Value {
    json!({"TaskId": id, "TaskType": "embedding", "ClientId": client, "CodebasePath": "/p",
        "StartTime": "2025-01-24T09:00:00Z", "FailTime": "2025-01-24T09:15:00Z",
        "ErrorCode": "TIMEOUT_ERROR", "ErrorMessage": "timed out", "RetryCount": 0,
        "ProcessedFiles": 10, "ErrorCategory": "service_timeout"})
}

/// A server over a memory store with retries, the three single tokens and two named ones:
/// `viewer` (read) and `ide-c1` (operate, limited to client c1).
async fn server(store: Arc<MemoryStore>) -> TestServer {
    let c1 = ClientId::parse("c1").unwrap();
    let config = HttpConfig {
        admin_token: Token::new("admin-secret"),
        operate_token: Token::new("operate-secret"),
        read_token: Token::new("read-secret"),
        tokens: vec![
            NamedToken::new("viewer", Role::Read, "viewer-secret").unwrap(),
            NamedToken::new("ide-c1", Role::Operate, "c1-secret")
                .unwrap()
                .limited_to(c1),
        ],
        ..test_config()
    };
    let service = FailedTaskService::new(Stores::from(store), Deadlines::default());
    spawn_service(service, config).await
}

async fn call(server: &TestServer, method: &Method, path: &str, token: Option<&str>) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    let body = match (method.as_str(), path) {
        ("POST", p) if p.ends_with("/admin/failed-tasks") => task("new-task", "c1").to_string(),
        ("POST", p) if p.ends_with("/admin/retry-gates") => {
            json!({"Scope": {"TaskType": "nothing-here"}, "Mode": "hold", "Reason": "roles test"})
                .to_string()
        }
        ("POST", p) if p.ends_with("/admin/replays") => {
            json!({"Filters": {"clientId": "nobody"}, "Reason": "roles test", "DryRun": true})
                .to_string()
        }
        ("POST", p) if p.ends_with("/admin/task-attempts") => {
            json!({"TaskType": "embedding", "Count": 3}).to_string()
        }
        ("POST", p) if p.ends_with("/admin/task-successes") => {
            json!({"TaskType": "embedding", "ClientId": "c1", "CodebasePath": "/nowhere"})
                .to_string()
        }
        _ => String::new(),
    };
    request_with_body(server, method.clone(), path, &headers, body).await
}

/// Every API route and method, with the role it needs.
fn matrix() -> Vec<(Method, String, Role)> {
    let failed = format!("{BASE}/tasks/failed");
    let admin = format!("{BASE}/admin/failed-tasks");
    vec![
        (Method::GET, failed.clone(), Role::Read),
        (
            Method::GET,
            format!("{failed}/export?format=ndjson"),
            Role::Read,
        ),
        (Method::GET, format!("{failed}/t1"), Role::Read),
        (Method::GET, format!("{failed}/t1/files"), Role::Read),
        (
            Method::GET,
            format!("{BASE}/tasks/failed-stats?window=1h"),
            Role::Read,
        ),
        (
            Method::GET,
            format!("{BASE}/tasks/failed-groups"),
            Role::Read,
        ),
        (Method::GET, format!("{BASE}/notifications"), Role::Read),
        (Method::GET, format!("{BASE}/audit"), Role::Read),
        (Method::GET, format!("{BASE}/retry-gates"), Role::Read),
        (Method::GET, format!("{BASE}/retry-breakers"), Role::Read),
        (Method::GET, format!("{BASE}/replays"), Role::Read),
        (
            Method::GET,
            format!("{BASE}/replays/no-such-replay"),
            Role::Read,
        ),
        (Method::POST, format!("{BASE}/admin/replays"), Role::Operate),
        (
            Method::DELETE,
            format!("{BASE}/admin/replays/no-such-replay"),
            Role::Operate,
        ),
        (
            Method::POST,
            format!("{BASE}/admin/retry-gates"),
            Role::Operate,
        ),
        (
            Method::DELETE,
            format!("{BASE}/admin/retry-gates/no-such-gate"),
            Role::Operate,
        ),
        (Method::POST, format!("{admin}/t2/retry"), Role::Operate),
        (Method::DELETE, format!("{admin}/t2/retry"), Role::Operate),
        (Method::POST, format!("{admin}/t2/resolve"), Role::Operate),
        (
            Method::POST,
            format!("{BASE}/admin/retries?clientId=nobody"),
            Role::Operate,
        ),
        (Method::POST, admin.clone(), Role::Admin),
        (
            Method::DELETE,
            format!("{admin}?clientId=nobody"),
            Role::Admin,
        ),
        (Method::DELETE, format!("{admin}/no-such-task"), Role::Admin),
        (
            Method::POST,
            format!("{BASE}/admin/task-attempts"),
            Role::Admin,
        ),
        (
            Method::POST,
            format!("{BASE}/admin/task-successes"),
            Role::Admin,
        ),
    ]
}

/// The template of a concrete path, for the coverage check.
fn template_of(path: &str) -> Option<&'static str> {
    let path = path.split('?').next().unwrap_or(path);
    ROUTES.iter().map(|r| r.template).find(|t| {
        let (ts, ps): (Vec<&str>, Vec<&str>) = (t.split('/').collect(), path.split('/').collect());
        ts.len() == ps.len()
            && ts
                .iter()
                .zip(&ps)
                .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
    })
}

#[tokio::test]
async fn every_route_answers_each_role_as_it_allows() {
    let store = Arc::new(MemoryStore::new());
    let server = server(store.clone()).await;
    let admin = format!("{BASE}/admin/failed-tasks");
    for id in ["t1", "t2"] {
        let body = task(id, "c1").to_string();
        let a = request_with_body(
            &server,
            Method::POST,
            &admin,
            &[
                ("content-type", "application/json"),
                ("authorization", "Bearer admin-secret"),
            ],
            body,
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    }
    let matrix = matrix();
    // Every API route and method that needs a token is in the matrix.
    for route in ROUTES.iter().filter(|r| r.documented) {
        if [
            "/healthz",
            "/readyz",
            "/metrics",
            "/codebase-embedder/api/v1/access",
        ]
        .contains(&route.template)
        {
            continue;
        }
        for method in route.methods() {
            assert!(
                matrix
                    .iter()
                    .any(|(m, p, _)| m.as_str() == method && template_of(p) == Some(route.template)),
                "{method} {} is missing from the matrix",
                route.template
            );
        }
    }
    let tokens = [
        ("read-secret", Role::Read, "read"),
        ("viewer-secret", Role::Read, "viewer"),
        ("operate-secret", Role::Operate, "operate"),
        ("admin-secret", Role::Admin, "admin"),
    ];
    for (method, path, needed) in &matrix {
        let a = call(&server, method, path, None).await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        let a = call(&server, method, path, Some("not-a-token")).await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}, unknown token"
        );
        for (secret, role, name) in tokens {
            let a = call(&server, method, path, Some(secret)).await;
            if role >= *needed {
                assert!(
                    a.status != StatusCode::UNAUTHORIZED && a.status != StatusCode::FORBIDDEN,
                    "{method} {path} as {name}: {} {:?}",
                    a.status,
                    a.json()
                );
            } else {
                assert_eq!(a.status, StatusCode::FORBIDDEN, "{method} {path} as {name}");
                assert_eq!(
                    a.json()["Message"],
                    format!(
                        "this needs the {needed} role; the token \"{name}\" has the {role} role"
                    ),
                    "{method} {path} as {name}"
                );
            }
        }
    }
}

#[tokio::test]
async fn without_tokens_of_a_role_its_routes_are_disabled_and_reads_stay_open() {
    let store = Arc::new(MemoryStore::new());
    let config = HttpConfig {
        operate_token: Token::new("operate-secret"),
        ..test_config()
    };
    let service = FailedTaskService::new(Stores::from(store), Deadlines::default());
    let server = spawn_service(service, config).await;
    // No read token and no client-limited token: reads need none.
    let a = call(&server, &Method::GET, &format!("{BASE}/tasks/failed"), None).await;
    assert_eq!(a.status, StatusCode::OK);
    // No admin token: recording is disabled, even for the operate token.
    for token in [None, Some("operate-secret")] {
        let a = call(
            &server,
            &Method::POST,
            &format!("{BASE}/admin/failed-tasks"),
            token,
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert_eq!(a.json()["Message"], "admin API disabled");
    }
    // The operate token may retry.
    let path = format!("{BASE}/admin/retries?clientId=nobody");
    let a = call(&server, &Method::POST, &path, Some("operate-secret")).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
}

#[tokio::test]
async fn a_client_limited_token_neither_sees_nor_touches_another_clients_failures() {
    let store = Arc::new(MemoryStore::new());
    let server = server(store.clone()).await;
    let admin = format!("{BASE}/admin/failed-tasks");
    let all: Vec<serde_json::Value> = vec![task("mine", "c1"), task("theirs", "c2")];
    let a = request_with_body(
        &server,
        Method::POST,
        &admin,
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer admin-secret"),
        ],
        serde_json::Value::Array(all).to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    let c1 = Some("c1-secret");
    let failed = format!("{BASE}/tasks/failed");

    // The listing shows c1's failures only; asking for c2's is refused.
    let a = call(&server, &Method::GET, &failed, c1).await;
    assert_eq!(a.status, StatusCode::OK);
    let ids: Vec<String> = a.json()["Data"]["Tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["TaskId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["mine"]);
    assert_eq!(a.json()["Data"]["TotalTasks"], 1);
    let a = call(&server, &Method::GET, &format!("{failed}?clientId=c1"), c1).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["Data"]["TotalTasks"], 1);
    for other in ["c2", "c%32"] {
        let a = call(
            &server,
            &Method::GET,
            &format!("{failed}?clientId={other}"),
            c1,
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{other}");
        assert!(
            a.json()["Message"]
                .as_str()
                .unwrap()
                .contains("limited to client c1"),
            "{:?}",
            a.json()
        );
    }

    // Its export and its search hold c1's failures only; asking for c2's is refused.
    let a = call(
        &server,
        &Method::GET,
        &format!("{failed}/export?format=ndjson"),
        c1,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let body = String::from_utf8(a.body.to_vec()).unwrap();
    let rows: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{body}");
    assert_eq!(rows[0]["TaskId"], "mine");
    let a = call(
        &server,
        &Method::GET,
        &format!("{failed}/export?format=csv&clientId=c2"),
        c1,
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = call(&server, &Method::GET, &format!("{failed}?q=I"), c1).await;
    let ids: Vec<String> = a.json()["Data"]["Tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["TaskId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["mine"], "both ids hold an i; c2's is not shown");

    // Another client's task does not exist for it, whatever it does with it.
    for (method, path) in [
        (Method::GET, format!("{failed}/theirs")),
        (Method::POST, format!("{admin}/theirs/retry")),
        (Method::DELETE, format!("{admin}/theirs/retry")),
        (Method::POST, format!("{admin}/theirs/resolve")),
    ] {
        let a = call(&server, &method, &path, c1).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(a.json()["Message"], "failed task theirs not found");
    }
    let a = call(&server, &Method::GET, &format!("{failed}/mine"), c1).await;
    assert_eq!(a.status, StatusCode::OK);

    // A bulk retry is kept to c1; without any filter it is refused as for anyone.
    let a = call(
        &server,
        &Method::POST,
        &format!("{BASE}/admin/retries?taskType=embedding"),
        c1,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json());
    assert_eq!(a.json()["Data"]["Retried"], 1, "{:?}", a.json());
    let a = call(&server, &Method::POST, &format!("{BASE}/admin/retries"), c1).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    // Routes that cannot be limited to one client are refused.
    for path in [
        "tasks/failed-stats?window=1h",
        "tasks/failed-groups",
        "notifications",
        "audit",
        "retry-gates",
        "retry-breakers",
    ] {
        let a = call(&server, &Method::GET, &format!("{BASE}/{path}"), c1).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}");
    }

    // c2's task is untouched.
    let theirs = store
        .get(&failed_tasks_domain::TaskId::parse("theirs").unwrap())
        .await
        .unwrap();
    assert!(theirs.is_some());
    let a = call(
        &server,
        &Method::GET,
        &format!("{failed}?clientId=c2"),
        Some("viewer-secret"),
    )
    .await;
    assert_eq!(a.json()["Data"]["TotalTasks"], 1);
}

#[tokio::test]
async fn access_tells_the_token_its_name_role_and_client() {
    let server = server(Arc::new(MemoryStore::new())).await;
    let path = format!("{BASE}/access");
    for (token, want) in [
        (
            None,
            json!({"Name": null, "Role": null, "ClientId": null, "ReadsNeedToken": true}),
        ),
        (
            Some("nope"),
            json!({"Name": null, "Role": null, "ClientId": null, "ReadsNeedToken": true}),
        ),
        (
            Some("viewer-secret"),
            json!({"Name": "viewer", "Role": "read", "ClientId": null, "ReadsNeedToken": true}),
        ),
        (
            Some("operate-secret"),
            json!({"Name": "operate", "Role": "operate", "ClientId": null, "ReadsNeedToken": true}),
        ),
        (
            Some("c1-secret"),
            json!({"Name": "ide-c1", "Role": "operate", "ClientId": "c1", "ReadsNeedToken": true}),
        ),
    ] {
        let a = call(&server, &Method::GET, &path, token).await;
        assert_eq!(a.status, StatusCode::OK, "{token:?}");
        assert_eq!(a.json()["Data"], want, "{token:?}");
    }
}
