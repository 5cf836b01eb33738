//! Faults: Redis down at start, killed, restarted, paused; configuration errors.

use std::time::{Duration, Instant};

use failed_tasks_domain::{FailedTask, ListQuery, PageLimits};
use failed_tasks_redis::{RedisConfig, RedisStore};
use failed_tasks_store::{StatusStore, StoreError};
use failed_tasks_testkit::RedisServer;

use crate::helpers;

/// The configured command timeout of `helpers::config`, plus scheduling slack.
const BOUND: Duration = Duration::from_millis(1600);

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = fut.await;
    assert!(
        started.elapsed() < BOUND,
        "{what} took {:?}",
        started.elapsed()
    );
    out
}

fn assert_down(what: &str, r: Result<impl std::fmt::Debug, StoreError>) {
    match r {
        Err(e) if e.is_unavailable() => {}
        other => panic!("{what}: expected Unavailable or Timeout, got {other:?}"),
    }
}

async fn recovers(store: &RedisStore) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "store did not recover by itself");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seed = FailedTask::seed_examples();
    // The first write after a reconnect may still race the reconnection: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.record(&seed[0]).await.is_err() {
        assert!(Instant::now() < deadline, "writes did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = store
        .list(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap();
    assert!(page.total >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_then_up() {
    let mut server = RedisServer::start();
    server.kill();
    let store = RedisStore::connect(helpers::config(&server.url()))
        .await
        .expect("connect does not need redis");
    let started = Instant::now();
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "ping should answer at once while disconnected"
    );
    assert_down(
        "list",
        within(
            "list",
            store.list(&ListQuery::first_page(PageLimits::DEFAULT)),
        )
        .await,
    );
    server.restart();
    recovers(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_then_restarted_on_the_same_port() {
    let mut server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    store.record(&FailedTask::seed_examples()[1]).await.unwrap();
    server.kill();
    for _ in 0..3 {
        assert_down("ping", within("ping", store.ping()).await);
        assert_down(
            "list",
            within(
                "list",
                store.list(&ListQuery::first_page(PageLimits::DEFAULT)),
            )
            .await,
        );
        assert_down(
            "record",
            within("record", store.record(&FailedTask::seed_examples()[0])).await,
        );
    }
    server.restart();
    recovers(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_calls_return_within_the_timeout() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    store.record(&FailedTask::seed_examples()[1]).await.unwrap();
    server.pause();
    for _ in 0..2 {
        assert_down("ping", within("ping", store.ping()).await);
        assert_down(
            "list",
            within(
                "list",
                store.list(&ListQuery::first_page(PageLimits::DEFAULT)),
            )
            .await,
        );
        assert_down(
            "record",
            within("record", store.record(&FailedTask::seed_examples()[0])).await,
        );
        assert_down("trim", within("trim", store.trim_once(0)).await);
    }
    server.resume();
    recovers(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_are_rejected_up_front() {
    let base = RedisConfig::default();
    for (url, prefix, needle) in [
        ("rediss://127.0.0.1:1", "{p}", "TLS"),
        ("rediss-cluster://127.0.0.1:1", "{p}", "TLS"),
        ("http://127.0.0.1:1", "{p}", "scheme"),
        ("redis://127.0.0.1:1", "no-tag", "hash tag"),
        ("redis://127.0.0.1:1", "{a}{b}", "hash tag"),
        ("redis-sentinel://127.0.0.1:1", "{p}", "sentinel"),
    ] {
        let config = RedisConfig {
            url: url.into(),
            key_prefix: prefix.into(),
            ..base.clone()
        };
        match RedisStore::connect(config).await {
            Err(StoreError::Rejected(msg)) => {
                assert!(
                    msg.to_lowercase().contains(&needle.to_lowercase()),
                    "{url}: {msg}"
                )
            }
            other => panic!("{url} {prefix}: {other:?}"),
        }
    }
}
