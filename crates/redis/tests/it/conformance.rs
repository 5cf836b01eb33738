//! The shared behaviour checks (listing, statistics, groups, stored-JSON pages, retries), on a
//! single server, through a Sentinel, and on a cluster.

use failed_tasks_store::{Capability, Stores};
use failed_tasks_testkit::{RedisCluster, RedisSentinel, RedisServer};

use crate::helpers;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_single_server() {
    let server = RedisServer::start();
    let url = server.url();
    failed_tasks_store::conformance::run_all(|| async { Stores::from(helpers::store(&url).await) })
        .await;
    failed_tasks_store::conformance::run_retries(|| helpers::store_with_queues(&url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_cluster() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    failed_tasks_store::conformance::run_all(|| async { Stores::from(helpers::store(&url).await) })
        .await;
    failed_tasks_store::conformance::run_retries(|| helpers::store_with_queues(&url)).await;
}

/// The sharded store with `shards` shards on `url`: every check, the retries too.
async fn sharded_conformance(url: &str, shards: u32) {
    let fresh = || async { Stores::from(helpers::sharded(url, shards).await) };
    if shards == 1 {
        failed_tasks_store::conformance::run_all(fresh).await;
    } else {
        // The breakdown cap holds per shard: checked with ids that all fall in shard 0.
        failed_tasks_store::conformance::run_all_but_the_single_cap(fresh).await;
        let store = helpers::sharded(url, shards).await;
        let ids: Vec<String> = (0..)
            .map(|j: usize| format!("cap{j:06}"))
            .filter(|id| failed_tasks_redis::shard_of(id, shards) == 0)
            .take(failed_tasks_domain::stats::TRACKED_PER_BUCKET + 6)
            .collect();
        failed_tasks_store::conformance::breakdowns_are_capped_with_ids(&store, &store, |i| {
            ids[i].clone()
        })
        .await;
    }
    failed_tasks_store::conformance::run_retries(|| helpers::sharded_with_queues(url, shards))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_conformance_on_a_single_server() {
    let server = RedisServer::start();
    for shards in [1, 16] {
        sharded_conformance(&server.url(), shards).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_conformance_on_a_cluster() {
    let cluster = RedisCluster::start();
    for shards in [1, 16] {
        sharded_conformance(&cluster.url(), shards).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_a_sentinel() {
    let master = RedisServer::start();
    let sentinel = RedisSentinel::start(&master);
    let url = sentinel.url();
    failed_tasks_store::conformance::run_all(|| async { Stores::from(helpers::store(&url).await) })
        .await;
    failed_tasks_store::conformance::run_retries(|| helpers::store_with_queues(&url)).await;
    // The data is on the master the sentinel names.
    assert!(master.cli(&["DBSIZE"]).trim().parse::<u64>().unwrap() > 0);
}

#[test]
fn the_redis_store_claims_every_capability() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Connecting needs no server (it connects in the background).
    let stores = runtime.block_on(async {
        Stores::from(
            failed_tasks_redis::RedisStore::connect(failed_tasks_redis::RedisConfig {
                url: "redis://127.0.0.1:1".to_owned(),
                ..Default::default()
            })
            .await
            .unwrap(),
        )
    });
    assert_eq!(stores.name, "redis");
    assert_eq!(stores.capabilities(), Capability::ALL);
}
