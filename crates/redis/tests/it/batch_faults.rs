//! A batch is all or nothing when Redis fails under it: full (`maxmemory` under
//! `noeviction`), writes paused past the caller's deadline, killed and restarted. After each
//! fault, every batch is either wholly stored or not at all, every acknowledged batch is
//! stored, and every batch answered with an error stored nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use failed_tasks_domain::{ErrorCategory, FailedTask};
use failed_tasks_redis::{RedisStore, OUTCOME_UNKNOWN};
use failed_tasks_store::conformance::task;
use failed_tasks_store::{StatusStore, StoreError};
use failed_tasks_testkit::RedisServer;

use crate::helpers;

/// `n` tasks of batch `name`, ids `{name}-{j}`. With `distinct`, every task has its own
/// client and error code (so its own indexes, group and counters: much more memory per task
/// than the bytes sent for it).
fn batch(name: &str, n: usize, distinct: bool) -> Vec<FailedTask> {
    (0..n)
        .map(|j| {
            let (client, code) = if distinct {
                (format!("c-{name}-{j}"), format!("E_{name}_{j}"))
            } else {
                (format!("client{}", j % 5), "TIMEOUT_ERROR".to_owned())
            };
            task(
                &format!("{name}-{j}"),
                (j as i64) * 1000,
                ErrorCategory::ALL[j % 4],
                "embedding",
                &client,
                &code,
            )
        })
        .collect()
}

/// The task ids stored under `prefix`, after checking that `idx:all` names exactly the same
/// tasks (no record without its index entry, no entry without its record).
async fn stored_ids(url: &str, prefix: &str) -> HashSet<String> {
    let raw = helpers::raw(url).await;
    let record = format!("{prefix}:task:");
    let records: HashSet<String> = helpers::keys_of(&raw, prefix)
        .await
        .into_iter()
        .filter_map(|k| k.strip_prefix(&record).map(str::to_owned))
        .collect();
    let members: Vec<String> = helpers::cmd(
        &raw,
        prefix,
        "ZRANGE",
        vec![format!("{prefix}:idx:all").into(), 0.into(), (-1).into()],
    )
    .await;
    let indexed: HashSet<String> = members
        .iter()
        .map(|m| m.get(16..).unwrap_or_default().to_owned())
        .collect();
    assert_eq!(records, indexed, "records and idx:all disagree");
    records
}

/// How much of each batch (by name prefix `{name}-`) is stored.
fn stored_per_batch(ids: &HashSet<String>) -> HashMap<String, usize> {
    let mut per = HashMap::new();
    for id in ids {
        if let Some((name, _)) = id.rsplit_once('-') {
            *per.entry(name.to_owned()).or_insert(0) += 1;
        }
    }
    per
}

fn info_field(server: &RedisServer, section: &str, field: &str) -> Option<String> {
    server.cli(&["INFO", section]).lines().find_map(|l| {
        l.strip_prefix(&format!("{field}:"))
            .map(|v| v.trim().to_owned())
    })
}

fn used_memory(server: &RedisServer) -> u64 {
    info_field(server, "memory", "used_memory")
        .and_then(|v| v.parse().ok())
        .expect("INFO memory has used_memory")
}

/// A Redis at `maxmemory` under `noeviction` refuses a whole batch (`StoreError::Full`)
/// and stores none of it; a batch that starts under the limit and crosses it part-way is
/// stored whole (Redis does not cut a script at its limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_whole_batches_and_a_crossing_batch_is_stored_whole() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let config = helpers::config(&server.url());
    let prefix = config.key_prefix.clone();
    let store = helpers::store_with(config).await;

    // How much memory one batch takes, without a limit.
    let before = used_memory(&server);
    store
        .record_batch(&batch("b0", 1000, true))
        .await
        .expect("no limit yet");
    let after = used_memory(&server);
    let growth = after.saturating_sub(before);
    assert!(growth > 500_000, "a batch took only {growth} bytes");

    // A limit the next batch starts under (its request, held in the query buffer, is a
    // fraction of what it stores) and ends over.
    let limit = after + growth / 2;
    server.cli(&["CONFIG", "SET", "maxmemory", &limit.to_string()]);
    store
        .record_batch(&batch("b1", 1000, true))
        .await
        .expect("starts under the limit, so runs to its end");
    let crossed = used_memory(&server);
    assert!(
        crossed > limit,
        "the crossing batch should end over the limit: {crossed} <= {limit}"
    );

    // Now over the limit: whole batches are refused, small ones too.
    for (name, n) in [("b2", 1000), ("b3", 1)] {
        match store.record_batch(&batch(name, n, true)).await {
            Err(StoreError::Full(msg)) => assert!(msg.contains("OOM"), "{msg}"),
            other => panic!("{name}: expected Full, got {other:?}"),
        }
    }
    let per = stored_per_batch(&stored_ids(&server.url(), &prefix).await);
    assert_eq!(per.get("b0"), Some(&1000));
    assert_eq!(per.get("b1"), Some(&1000), "the crossing batch is whole");
    assert_eq!(per.get("b2"), None, "a refused batch stored nothing");
    assert_eq!(per.get("b3"), None);

    // Space again (the limit raised): writes work again, nothing was left half-done.
    server.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    store.record_batch(&batch("b4", 10, false)).await.unwrap();
    let per = stored_per_batch(&stored_ids(&server.url(), &prefix).await);
    assert_eq!(per.get("b4"), Some(&10));
}

/// Writes paused (`CLIENT PAUSE … WRITE`) longer than the command timeout: the caller gives
/// up and reports a timeout; when the pause ends Redis runs the queued script, which sees it
/// started after its caller's deadline and writes nothing (`errorstat_LATE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_starts_after_its_caller_gave_up_stores_nothing() {
    let server = RedisServer::start();
    let config = helpers::config(&server.url()); // 1 s command timeout
    let prefix = config.key_prefix.clone();
    let store = helpers::store_with(config).await;
    // Load the script first: a queued EVALSHA of an unknown script would just fail.
    store.record_batch(&batch("warm", 1, false)).await.unwrap();
    // Longer than the command timeout, shorter than the unresponsive-connection timeout
    // (2 s), so the queued script still runs on the open connection once the pause ends.
    server.cli(&["CLIENT", "PAUSE", "1500", "WRITE"]);
    let err = store
        .record_batch(&batch("late", 200, false))
        .await
        .expect_err("writes are paused past the timeout");
    assert!(err.is_unavailable(), "{err:?}");

    // A write on the same connection after it succeeds only once the queued script has run.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.record_batch(&batch("after", 5, false)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "writes did not resume after the pause"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let per = stored_per_batch(&stored_ids(&server.url(), &prefix).await);
    assert_eq!(per.get("late"), None, "the late batch stored tasks");
    assert_eq!(per.get("after"), Some(&5));
    assert!(
        info_field(&server, "errorstats", "errorstat_LATE").is_some(),
        "the queued script did not refuse itself: {}",
        server.cli(&["INFO", "errorstats"])
    );
}

/// Writers record 1,000-task batches while Redis (AOF, fsync always) is SIGKILLed and
/// restarted twice: every batch is stored whole or not at all, every acknowledged batch
/// survives, every batch answered with an error stored nothing, except those whose error
/// says the outcome is unknown (Redis killed after applying the batch, before the answer,
/// and not back in time to read the batch's receipt): those are whole or absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_survive_or_vanish_whole_when_redis_is_killed_and_restarted() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let config = helpers::config(&server.url());
    let prefix = config.key_prefix.clone();
    let store: Arc<RedisStore> = Arc::new(helpers::store_with(config).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outcomes = Arc::new(std::sync::Mutex::new(HashMap::<String, Outcome>::new()));
    let acknowledged = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (store, stop, outcomes, acknowledged) = (
                store.clone(),
                stop.clone(),
                outcomes.clone(),
                acknowledged.clone(),
            );
            tokio::spawn(async move {
                for k in 0..200 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("w{w}k{k}");
                    let outcome = match store.record_batch(&batch(&name, 1000, false)).await {
                        Ok(_) => Outcome::Stored,
                        Err(e) if e.to_string().contains(OUTCOME_UNKNOWN) => Outcome::Unknown,
                        Err(_) => Outcome::Refused,
                    };
                    let ok = outcome == Outcome::Stored;
                    outcomes.lock().unwrap().insert(name, outcome);
                    if ok {
                        acknowledged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();

    // Kill while batches are in flight, twice, each time after some were acknowledged.
    for round in 1..=2u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while acknowledged.load(std::sync::atomic::Ordering::Relaxed) < round * 3 {
            assert!(Instant::now() < deadline, "writers made no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.kill();
        tokio::time::sleep(Duration::from_millis(100)).await;
        server.restart();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.load(std::sync::atomic::Ordering::Relaxed) < 9 {
        assert!(Instant::now() < deadline, "writers did not recover");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let per = stored_per_batch(&stored_ids(&server.url(), &prefix).await);
    let failed = outcomes.values().filter(|o| **o != Outcome::Stored).count();
    assert!(failed > 0, "no batch met the kills: {outcomes:?}");
    let tally = |o: Outcome| outcomes.values().filter(|v| **v == o).count();
    eprintln!(
        "batches: {} stored, {} refused, {} of unknown outcome",
        tally(Outcome::Stored),
        tally(Outcome::Refused),
        tally(Outcome::Unknown)
    );
    for (name, outcome) in &outcomes {
        let stored = per.get(name).copied().unwrap_or(0);
        match outcome {
            Outcome::Stored => assert_eq!(stored, 1000, "acknowledged batch {name} lost tasks"),
            Outcome::Refused => assert_eq!(
                stored, 0,
                "batch {name} answered an error but stored {stored}"
            ),
            Outcome::Unknown => assert!(
                stored == 0 || stored == 1000,
                "batch {name} of unknown outcome is half-stored: {stored}"
            ),
        }
    }
}

/// What a writer was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Stored,
    Refused,
    Unknown,
}

/// Every applied batch leaves its receipt (the per-task flags: 1 new, 0 replaced), which is
/// what settles a batch whose answer was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_batch_leaves_a_receipt_of_its_flags() {
    let server = RedisServer::start();
    let config = helpers::config(&server.url());
    let prefix = config.key_prefix.clone();
    let store = helpers::store_with(config).await;
    store.record_batch(&batch("r0", 2, false)).await.unwrap();
    let mut again = batch("r0", 2, false);
    again.extend(batch("r1", 1, false));
    let flags: Vec<_> = store
        .record_batch(&again)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o == failed_tasks_store::RecordOutcome::Created)
        .collect();
    assert_eq!(flags, [false, false, true]);
    let raw = helpers::raw(&server.url()).await;
    let receipts: Vec<String> = helpers::keys_of(&raw, &prefix)
        .await
        .into_iter()
        .filter(|k| k.starts_with(&format!("{prefix}:batch:")))
        .collect();
    assert_eq!(receipts.len(), 2, "{receipts:?}");
    let mut values = Vec::new();
    for key in &receipts {
        let v: String = helpers::cmd(&raw, &prefix, "GET", vec![key.as_str().into()]).await;
        let ttl: i64 = helpers::cmd(&raw, &prefix, "PTTL", vec![key.as_str().into()]).await;
        assert!(ttl > 0 && ttl <= 600_000, "receipt {key} lives {ttl} ms");
        values.push(v);
    }
    values.sort();
    assert_eq!(values, ["001", "11"]);
}
