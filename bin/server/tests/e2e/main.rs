//! The same end-to-end suite on every store: the real HTTP adapter on an ephemeral loopback
//! port, over the in-memory store and over the Redis store (a private redis-server).
//!
//! Each scenario is an `async fn(&Env)`; `on_every_store!` runs it once per store, each on
//! an empty store (a fresh key prefix on Redis).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod client;
mod edges;
mod faults;
mod outage;
mod retries;
mod scenarios;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use failed_tasks_domain::{RetryConfig, RetryPolicy};
use failed_tasks_http::{App, HttpConfig, Token};
use failed_tasks_query::{Deadlines, FailedTaskService};
use failed_tasks_redis::{RedisConfig, RedisStore};
use failed_tasks_store::{MemoryStore, Stores};
use failed_tasks_testkit::RedisServer;

/// The failed-task listing.
pub const LIST: &str = "/codebase-embedder/api/v1/tasks/failed";

pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// A running server over one store.
#[derive(Debug)]
pub struct Env {
    pub base: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn redis() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

pub async fn memory_store() -> Stores {
    Stores::from(MemoryStore::new())
}

pub async fn redis_store() -> Stores {
    redis_store_at(&redis().url()).await
}

/// A connected Redis store on `url` (a private server), on a fresh key prefix.
pub async fn redis_store_at(url: &str) -> Stores {
    static N: AtomicU64 = AtomicU64::new(0);
    let config = RedisConfig {
        url: url.to_owned(),
        key_prefix: format!(
            "{{e2e-{}-{}}}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ),
        command_timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    };
    let store = RedisStore::connect(config).await.unwrap();
    assert!(
        store.wait_connected(Duration::from_secs(10)).await,
        "redis store did not connect"
    );
    Stores::from(store)
}

/// The service as the server builds it, with retries; no jitter, so delays are exact.
pub fn service(stores: &Stores) -> FailedTaskService {
    let policy = RetryPolicy::new(RetryConfig {
        jitter: 0.0,
        ..RetryConfig::default()
    })
    .unwrap();
    FailedTaskService::new(stores.clone(), Deadlines::default()).with_retry_policy(policy)
}

pub async fn serve(stores: Stores) -> Env {
    serve_service(service(&stores)).await
}

pub async fn serve_service(service: FailedTaskService) -> Env {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::new(App::new(
        service,
        HttpConfig {
            admin_token: Token::new(ADMIN_TOKEN),
            ..HttpConfig::default()
        },
    ));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(failed_tasks_http::serve(listener, app, async move {
        let _ = rx.await;
    }));
    Env {
        base: format!("http://{addr}"),
        _stop: tx,
    }
}

/// Run each scenario on the memory store and on the Redis store.
macro_rules! on_every_store {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let env = crate::serve(crate::memory_store().await).await;
                    crate::scenarios::$scenario(&env).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $scenario() {
                    let env = crate::serve(crate::redis_store().await).await;
                    crate::scenarios::$scenario(&env).await;
                }
            )*
        }
    };
}

on_every_store!(
    seed_tasks_are_listed_newest_first,
    recording_again_updates_and_moves_indexes,
    a_bad_batch_stores_nothing,
    paging_is_complete_while_failures_arrive,
    filters_combine_and_totals_match,
    one_task_and_removals,
    stats_and_groups_follow_writes,
    retry_routes_refuse_bad_input,
    search_and_export_match_the_listing,
);
