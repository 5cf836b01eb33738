//! Sharding on the testkit's three-master Redis Cluster: how 100k failures in 16 shards
//! spread over the masters (`DBSIZE` per node), the page cost of 16 shards against 1
//! (`shard_page_ratio`, the two stores' pages timed call by call), and the recording rate
//! of 16 shards against 1 (`shard_records_ratio`).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use failed_tasks_domain::ListQuery;
use failed_tasks_redis::{RedisConfig, RedisStore};
use failed_tasks_store::{StatusStore, StoredPages};
use failed_tasks_testkit::RedisCluster;

use crate::now_ms;
use crate::raw::Raw;
use crate::recording::fill;
use crate::report::{Figures, Latency};

/// Tasks per store.
const N: u64 = 100_000;

async fn connect(url: &str, shards: u32) -> anyhow::Result<RedisStore> {
    let store = RedisStore::connect(RedisConfig {
        url: url.to_owned(),
        key_prefix: format!("{{bench-s{shards}}}"),
        command_timeout: Duration::from_secs(10),
        shards,
        ..RedisConfig::default()
    })
    .await
    .map_err(|e| anyhow!("redis store: {e}"))?;
    if !store.wait_connected(Duration::from_secs(10)).await {
        bail!("the store could not connect to {url}");
    }
    Ok(store)
}

/// Every figure of the phase.
pub async fn figures(samples: usize, query: &ListQuery, f: &mut Figures) -> anyhow::Result<()> {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let mut masters = Vec::new();
    for node in cluster.nodes() {
        masters.push(Raw::connect(&node.url()).await?);
    }
    let base_ms = now_ms() - 3_600_000 * 24;
    let one = connect(&url, 1).await?;
    let sixteen = connect(&url, 16).await?;
    // The same in-flight batches for both: one shard runs them one after the other on its
    // master; sixteen split each batch into parts that run on all three.
    let in_flight = 8;
    let rate_one = N as f64 / fill(&one, 0, N, base_ms, in_flight).await?.as_secs_f64();
    let mut before = Vec::new();
    for m in &masters {
        before.push(m.dbsize().await?);
    }
    let rate_sixteen = N as f64
        / fill(&sixteen, 0, N, base_ms, in_flight)
            .await?
            .as_secs_f64();
    let mut keys = Vec::new();
    for (m, b) in masters.iter().zip(&before) {
        keys.push((m.dbsize().await? - b) as f64);
    }
    let all: f64 = keys.iter().sum();
    let shares: Vec<f64> = keys.iter().map(|k| k * 100.0 / all.max(1.0)).collect();
    f.set("cluster_records_per_s_1_shard", rate_one);
    f.set("cluster_records_per_s_16_shards", rate_sixteen);
    f.set("shard_records_ratio", rate_sixteen / rate_one);
    for (i, s) in shares.iter().enumerate() {
        f.set(&format!("shard_keys_pct_master_{i}"), *s);
    }
    let min = shares.iter().copied().fold(f64::INFINITY, f64::min);
    let max = shares.iter().copied().fold(0.0, f64::max);
    f.set("shard_spread_min_pct", min);
    f.set("shard_spread_max_pct", max);
    eprintln!(
        "  cluster, 100k tasks: 1 shard {rate_one:.0}/s, 16 shards {rate_sixteen:.0}/s; keys per master {:?} %",
        shares.iter().map(|s| (s * 10.0).round() / 10.0).collect::<Vec<_>>()
    );

    // Pages of both stores, interleaved call by call.
    let mut times: [Vec<Duration>; 4] = Default::default();
    let warm = samples / 10;
    for i in 0..samples + warm {
        let stores = [&one, &sixteen];
        for (k, store) in stores.iter().enumerate() {
            let t = Instant::now();
            let page = store.list(query).await.map_err(|e| anyhow!("list: {e}"))?;
            let took = t.elapsed();
            if page.total != N || page.tasks.len() != query.page_size.as_usize() {
                bail!(
                    "unexpected page: {} tasks of {}",
                    page.tasks.len(),
                    page.total
                );
            }
            let t = Instant::now();
            store
                .list_stored(query)
                .await
                .map_err(|e| anyhow!("list_stored: {e}"))?;
            if i >= warm {
                times[k].push(took);
                times[2 + k].push(t.elapsed());
            }
        }
    }
    // The floor of a fan-out on this machine: two round trips to all three masters at once
    // against two to one master (what a page costs without any work in it).
    let mut floor: [Vec<Duration>; 2] = Default::default();
    for i in 0..samples + warm {
        let t = Instant::now();
        for _ in 0..2 {
            masters[0].run("PING", vec![]).await?;
        }
        let one_master = t.elapsed();
        let t = Instant::now();
        for _ in 0..2 {
            let (a, b, c) = tokio::join!(
                masters[0].run("PING", vec![]),
                masters[1].run("PING", vec![]),
                masters[2].run("PING", vec![])
            );
            a?;
            b?;
            c?;
        }
        if i >= warm {
            floor[0].push(one_master);
            floor[1].push(t.elapsed());
        }
    }
    let [floor1, floor3] = floor.map(Latency::of);
    f.latency("shard_floor_one_master", floor1);
    f.latency("shard_floor_three_masters", floor3);
    f.set("shard_floor_ratio", floor3.p50_ms / floor1.p50_ms);
    let [list1, list16, json1, json16] = times.map(Latency::of);
    f.latency("shard_page_1", list1);
    f.latency("shard_page_16", list16);
    f.latency("shard_json_page_1", json1);
    f.latency("shard_json_page_16", json16);
    f.set("shard_page_ratio", list16.p50_ms / list1.p50_ms);
    f.set("shard_json_page_ratio", json16.p50_ms / json1.p50_ms);
    eprintln!(
        "  cluster, page of {} at 100k: 1 shard p50 {:.3} ms, 16 shards {:.3} ms (stored JSON {:.3} / {:.3})",
        query.page_size.as_usize(),
        list1.p50_ms,
        list16.p50_ms,
        json1.p50_ms,
        json16.p50_ms
    );
    eprintln!(
        "  cluster, two round trips: to one master p50 {:.3} ms, to all three at once {:.3} ms",
        floor1.p50_ms, floor3.p50_ms
    );
    Ok(())
}
