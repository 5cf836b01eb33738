//! The shared behaviour checks (listing, statistics, groups), on a single server and on a
//! cluster.

use failed_tasks_testkit::{RedisCluster, RedisServer};

use crate::helpers;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_single_server() {
    let server = RedisServer::start();
    let url = server.url();
    failed_tasks_store::conformance::run_all(|| helpers::store(&url)).await;
    failed_tasks_store::conformance::run_stats(|| helpers::store(&url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_cluster() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    failed_tasks_store::conformance::run_all(|| helpers::store(&url)).await;
    failed_tasks_store::conformance::run_stats(|| helpers::store(&url)).await;
}
