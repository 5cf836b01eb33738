//! Shared set-up: stores on fresh prefixes, a raw fred client for checks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use failed_tasks_redis::{RedisConfig, RedisStore};
use fred::prelude::{ClientLike, Config};
use fred::types::{ClusterHash, CustomCommand, Value};

/// A prefix no other store of this process uses.
pub fn unique_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{{ft-{}-{}}}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A test configuration: short timeouts, a fresh prefix.
pub fn config(url: &str) -> RedisConfig {
    RedisConfig {
        url: url.to_owned(),
        key_prefix: unique_prefix(),
        command_timeout: Duration::from_millis(1000),
        ..RedisConfig::default()
    }
}

/// A connected store on `config`.
pub async fn store_with(config: RedisConfig) -> RedisStore {
    let store = RedisStore::connect(config).await.expect("connect");
    assert!(
        store.wait_connected(Duration::from_secs(10)).await,
        "store did not connect"
    );
    store
}

/// A connected store on a fresh prefix.
pub async fn store(url: &str) -> RedisStore {
    store_with(config(url)).await
}

/// A raw client for set-up and checks.
pub async fn raw(url: &str) -> fred::clients::Client {
    let client = fred::clients::Client::new(Config::from_url(url).unwrap(), None, None, None);
    client.init().await.expect("raw client connects");
    client
}

/// Run a raw command routed by the hash slot of `slot_key`.
pub async fn cmd<R: fred::types::FromValue>(
    client: &fred::clients::Client,
    slot_key: &str,
    name: &'static str,
    args: Vec<Value>,
) -> R {
    let slot = fred::util::redis_keyslot(slot_key.as_bytes());
    let command = CustomCommand::new_static(name, ClusterHash::Custom(slot), false);
    client.custom(command, args).await.unwrap()
}

/// All keys of `prefix` (on its slot).
pub async fn keys_of(client: &fred::clients::Client, prefix: &str) -> Vec<String> {
    // KEYS is fine in tests: the data sets are small. The prefix's tag pins the slot.
    let pattern = format!("{}*", prefix.replace('{', "\\{").replace('}', "\\}"));
    cmd(client, prefix, "KEYS", vec![pattern.into()]).await
}

/// The keys under `prefix` that hold data: without batch receipts (`PREFIX:batch:*`, left by
/// every `record_batch` and expiring by themselves after minutes) and the audit log.
pub async fn data_keys_of(client: &fred::clients::Client, prefix: &str) -> Vec<String> {
    let receipt = format!("{prefix}:batch:");
    // The audit log records actions (the janitor's trims among them), not failed tasks.
    let audit = format!("{prefix}:audit");
    let mut keys = keys_of(client, prefix).await;
    keys.retain(|k| !k.starts_with(&receipt) && *k != audit);
    keys
}

/// A connected store on a fresh prefix with two worker queues on its retry stream.
pub async fn store_with_queues(
    url: &str,
) -> (
    RedisStore,
    failed_tasks_redis::RedisRetryQueue,
    failed_tasks_redis::RedisRetryQueue,
) {
    let store = store(url).await;
    let a = queue(&store, "worker-a").await;
    let b = queue(&store, "worker-b").await;
    (store, a, b)
}

/// A connected worker queue named `consumer` on `store`'s retry stream.
pub async fn queue(store: &RedisStore, consumer: &str) -> failed_tasks_redis::RedisRetryQueue {
    let q = failed_tasks_redis::RedisRetryQueue::connect(store.config(), consumer)
        .await
        .expect("queue config");
    assert!(
        q.wait_connected(Duration::from_secs(10)).await,
        "queue did not connect"
    );
    q
}

/// A connected store of `shards` shards on a fresh prefix.
pub async fn sharded(url: &str, shards: u32) -> RedisStore {
    store_with(RedisConfig {
        shards,
        ..config(url)
    })
    .await
}

/// A connected store of `shards` shards with two worker queues on its retry streams.
pub async fn sharded_with_queues(
    url: &str,
    shards: u32,
) -> (
    RedisStore,
    failed_tasks_redis::RedisRetryQueue,
    failed_tasks_redis::RedisRetryQueue,
) {
    let store = sharded(url, shards).await;
    let a = queue(&store, "worker-a").await;
    let b = queue(&store, "worker-b").await;
    (store, a, b)
}
