//! What the store tells about Redis: an evicting `maxmemory-policy` is refused (unless
//! allowed) at start and after every reconnection, and the cause of a connection problem
//! (wrong or missing password, refused) is named.

use std::time::{Duration, Instant};

use failed_tasks_domain::FailedTask;
use failed_tasks_redis::{RedisConfig, RedisStore};
use failed_tasks_store::{StatusStore, StoreError, StoreProblem};
use failed_tasks_testkit::RedisServer;

use crate::helpers;

/// Wait (bounded) until `check` holds, pinging the store meanwhile.
async fn until(store: &RedisStore, what: &str, check: impl Fn(&RedisStore) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let _ = store.ping().await;
        if check(store) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 15 s; condition {:?}",
            store.condition()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn refused_for_eviction(r: Result<impl std::fmt::Debug, StoreError>, policy: &str) {
    match r {
        Err(StoreError::Unavailable(msg)) => {
            assert!(
                msg.contains("maxmemory-policy") && msg.contains(policy),
                "{msg}"
            )
        }
        other => panic!("expected a refusal naming {policy}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_is_refused_unless_allowed() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let store = RedisStore::connect(helpers::config(&server.url()))
        .await
        .unwrap();
    assert!(!store.wait_connected(Duration::from_secs(10)).await);
    let c = store.condition();
    assert_eq!(c.problem, Some(StoreProblem::Evicting));
    assert_eq!(c.eviction_policy.as_deref(), Some("allkeys-lru"));
    refused_for_eviction(store.ping().await, "allkeys-lru");
    refused_for_eviction(
        store.record(&FailedTask::seed_examples()[0]).await,
        "allkeys-lru",
    );

    // Allowed explicitly: it serves, and still reports the policy.
    let lenient = helpers::store_with(RedisConfig {
        allow_eviction: true,
        ..helpers::config(&server.url())
    })
    .await;
    lenient
        .record(&FailedTask::seed_examples()[0])
        .await
        .unwrap();
    let c = lenient.condition();
    assert_eq!(c.problem, None);
    assert_eq!(c.eviction_policy.as_deref(), Some("allkeys-lru"));

    // Fixed on the running Redis: the refusing store heals by itself.
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    until(&store, "serving after the fix", |s| {
        s.condition().problem.is_none()
    })
    .await;
    store.record(&FailedTask::seed_examples()[0]).await.unwrap();
    assert_eq!(
        store.condition().eviction_policy.as_deref(),
        Some("noeviction")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_is_checked_again_on_every_reconnection() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    store.record(&FailedTask::seed_examples()[0]).await.unwrap();
    assert_eq!(
        store.condition().eviction_policy.as_deref(),
        Some("noeviction")
    );
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]);
    // The store's connection is dropped; it reconnects by itself and reads the policy again.
    server.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    until(&store, "refusing after the reconnection", |s| {
        s.condition().problem == Some(StoreProblem::Evicting)
    })
    .await;
    refused_for_eviction(
        store.record(&FailedTask::seed_examples()[1]).await,
        "volatile-lru",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_config_command_falls_back_to_info() {
    let server = RedisServer::start_with(&[
        "--maxmemory-policy",
        "allkeys-random",
        "--rename-command",
        "CONFIG",
        "",
    ]);
    let store = RedisStore::connect(helpers::config(&server.url()))
        .await
        .unwrap();
    assert!(!store.wait_connected(Duration::from_secs(10)).await);
    assert_eq!(
        store.condition().eviction_policy.as_deref(),
        Some("allkeys-random")
    );
    refused_for_eviction(store.ping().await, "allkeys-random");
}

fn url_with_password(server: &RedisServer, password: &str) -> String {
    format!("redis://:{password}@127.0.0.1:{}", server.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_password_is_named_as_the_cause() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    for url in [url_with_password(&server, "wrong"), server.url()] {
        let store = RedisStore::connect(helpers::config(&url)).await.unwrap();
        until(&store, &format!("auth failure seen on {url}"), |s| {
            s.condition().problem == Some(StoreProblem::AuthFailed)
        })
        .await;
        let err = store.ping().await.unwrap_err();
        assert!(
            err.is_unavailable() || matches!(err, StoreError::Rejected(_)),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("WRONGPASS") || msg.contains("NOAUTH"),
            "the error names the refusal: {msg}"
        );
        assert!(!msg.contains("s3cret-pw"), "{msg}");
    }
    let good = helpers::store(&url_with_password(&server, "s3cret-pw")).await;
    good.record(&FailedTask::seed_examples()[0]).await.unwrap();
    assert_eq!(good.condition().problem, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_named_and_clears_when_redis_is_back() {
    let mut server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    server.kill();
    until(&store, "refused seen", |s| {
        s.condition().problem == Some(StoreProblem::ConnectionRefused)
    })
    .await;
    let msg = store.ping().await.unwrap_err().to_string();
    assert!(msg.contains("connection refused"), "{msg}");
    server.restart();
    until(&store, "usable again", |s| s.condition().problem.is_none()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_name_that_does_not_resolve_is_named() {
    // `.invalid` never resolves (RFC 2606); the lookup fails at once, nothing is contacted.
    let store = RedisStore::connect(helpers::config("redis://no-such-host.invalid:6379"))
        .await
        .unwrap();
    until(&store, "dns failure seen", |s| {
        s.condition().problem == Some(StoreProblem::Dns)
    })
    .await;
    let msg = store.ping().await.unwrap_err().to_string();
    assert!(msg.contains("does not resolve"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_is_named_as_a_timeout() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    server.pause();
    until(&store, "timeout seen", |s| {
        s.condition().problem == Some(StoreProblem::Timeout)
    })
    .await;
    server.resume();
    until(&store, "usable again", |s| s.condition().problem.is_none()).await;
}
