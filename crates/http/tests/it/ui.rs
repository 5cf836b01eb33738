//! The dashboard's files at `/ui/`: redirect, content types, ETag and 304, the security
//! headers, open even when the API needs a read token.

use std::sync::Arc;

use failed_tasks_http::{Token, CONTENT_SECURITY_POLICY_VALUE};
use failed_tasks_query::Deadlines;
use failed_tasks_store::MemoryStore;
use hyper::{Method, StatusCode};

use crate::helpers::{get, request, spawn_app, test_config, Answer};

fn assert_security_headers(a: &Answer, what: &str) {
    let csp = a
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"));
    assert_eq!(csp, CONTENT_SECURITY_POLICY_VALUE, "{what}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    assert_eq!(
        a.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(a.header("referrer-policy"), Some("no-referrer"), "{what}");
    assert_eq!(a.header("x-frame-options"), Some("DENY"), "{what}");
    assert!(a.header("x-request-id").is_some(), "{what}");
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_validators_and_the_policy() {
    let config = failed_tasks_http::HttpConfig {
        read_token: Token::new("reader"),
        ..test_config()
    };
    let server = spawn_app(
        crate::helpers::memory(Arc::new(MemoryStore::new())),
        Deadlines::default(),
        config,
    )
    .await;

    let r = get(&server, "/ui").await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.header("location"), Some("/ui/"));
    assert_security_headers(&r, "/ui");
    let r = get(&server, "/ui?lang=zh").await;
    assert_eq!(r.header("location"), Some("/ui/?lang=zh"));

    // Open without the read token: the files hold no data; the API they call checks it.
    let page = get(&server, "/ui/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.body.as_ref(), failed_tasks_ui::get("").unwrap().body);
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert_security_headers(&page, "/ui/");
    let etag = page.header("etag").expect("an ETag").to_owned();
    assert_eq!(etag, failed_tasks_ui::get("index.html").unwrap().etag());
    assert_eq!(
        get(&server, "/codebase-embedder/api/v1/tasks/failed")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let same = request(&server, Method::GET, "/ui/", &[("if-none-match", &etag)]).await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert!(same.body.is_empty());
    assert_eq!(same.header("etag"), Some(etag.as_str()));
    assert_eq!(same.header("cache-control"), Some("no-cache"));
    assert_security_headers(&same, "304");
    let weak = format!("W/{etag}");
    let listed = format!("\"0000000000000000\", {weak}");
    let also = request(
        &server,
        Method::GET,
        "/ui/index.html",
        &[("if-none-match", &listed)],
    )
    .await;
    assert_eq!(
        also.status,
        StatusCode::NOT_MODIFIED,
        "a list with a weak match"
    );
    let stale = request(
        &server,
        Method::GET,
        "/ui/",
        &[("if-none-match", "\"0000000000000000\"")],
    )
    .await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.body.len(), page.body.len());

    for asset in failed_tasks_ui::ASSETS {
        let a = get(&server, &format!("/ui/{}", asset.path)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", asset.path);
        assert_eq!(
            a.header("content-type"),
            Some(asset.content_type),
            "{}",
            asset.path
        );
        assert_eq!(a.body.as_ref(), asset.body, "{}", asset.path);
        assert_eq!(
            a.header("etag"),
            Some(asset.etag().as_str()),
            "{}",
            asset.path
        );
    }

    for path in [
        "/ui/nope.js",
        "/ui/../Cargo.toml",
        "/ui/views/",
        "/ui//app.js",
    ] {
        let a = get(&server, path).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(a.json()["Code"], 404, "{path}");
        assert_security_headers(&a, path);
    }
    let post = request(&server, Method::POST, "/ui/", &[]).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header("allow"), Some("GET"));
}
