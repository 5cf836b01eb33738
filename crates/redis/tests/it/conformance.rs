//! The shared behaviour checks (listing, statistics, groups, retries), on a single server, through a
//! Sentinel, and on a cluster.

use failed_tasks_testkit::{RedisCluster, RedisSentinel, RedisServer};

use crate::helpers;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_single_server() {
    let server = RedisServer::start();
    let url = server.url();
    failed_tasks_store::conformance::run_all(|| helpers::store(&url)).await;
    failed_tasks_store::conformance::run_stats(|| helpers::store(&url)).await;
    failed_tasks_store::conformance::run_retries(|| helpers::store_with_queues(&url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_cluster() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    failed_tasks_store::conformance::run_all(|| helpers::store(&url)).await;
    failed_tasks_store::conformance::run_stats(|| helpers::store(&url)).await;
    failed_tasks_store::conformance::run_retries(|| helpers::store_with_queues(&url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_through_a_sentinel() {
    let master = RedisServer::start();
    let sentinel = RedisSentinel::start(&master);
    let url = sentinel.url();
    failed_tasks_store::conformance::run_all(|| helpers::store(&url)).await;
    failed_tasks_store::conformance::run_stats(|| helpers::store(&url)).await;
    failed_tasks_store::conformance::run_retries(|| helpers::store_with_queues(&url)).await;
    // The data is on the master the sentinel names.
    assert!(master.cli(&["DBSIZE"]).trim().parse::<u64>().unwrap() > 0);
}
