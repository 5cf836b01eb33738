//! A small HTTP client for the scenarios.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::{Env, ADMIN_TOKEN, LIST};

pub async fn call(
    env: &Env,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("{}{}", env.base, path))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"));
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let resp = client
        .request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, json)
}

pub async fn get(env: &Env, path: &str) -> Value {
    let (status, v) = call(env, Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {v}");
    v
}

pub async fn post(env: &Env, body: Value) -> (StatusCode, Value) {
    call(
        env,
        Method::POST,
        "/codebase-embedder/api/v1/admin/failed-tasks",
        Some(body),
    )
    .await
}

/// `GET path` answered 200 with a text body (`/metrics`).
pub async fn get_text(env: &Env, path: &str) -> String {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::builder()
        .uri(format!("{}{}", env.base, path))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// How many tasks the listing counts for `query`.
pub async fn total(env: &Env, query: &str) -> u64 {
    get(env, &format!("{LIST}?{query}&pageSize=1")).await["Data"]["TotalTasks"]
        .as_u64()
        .unwrap()
}
