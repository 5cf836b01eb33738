//! Redis Cluster slots moving under the store, step by step by hand (`CLUSTER SETSLOT`,
//! `MIGRATE`), with no timing in the checks: no call is ever answered with another call's
//! reply, a call on a moving slot is sent again until the slot has moved, and no script runs
//! on a slot in migration.

use failed_tasks_domain::{ErrorCategory, RetryPlan, TaskFilter, Timestamp};
use failed_tasks_redis::{call_options, fred_client};
use failed_tasks_store::conformance::{expected, task, walk, BASE_MS};
use failed_tasks_store::{RecordOutcome, RetryStore, StatusStore};
use failed_tasks_testkit::RedisCluster;
use fred::prelude::{ClientLike, KeysInterface};
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::helpers;

/// The slot of `prefix`'s hash tag, the master serving it, and another master to move it to.
fn slot_of(cluster: &RedisCluster, prefix: &str) -> (u16, usize, usize) {
    let slot = fred::util::redis_keyslot(prefix.as_bytes());
    let source = cluster.owner_of(slot);
    let target = cluster
        .masters()
        .into_iter()
        .find(|&m| m != source)
        .expect("a second master");
    (slot, source, target)
}

/// `n` keys, each in a slot that node `node` of `cluster` serves, named after `name`.
fn keys_on(cluster: &RedisCluster, node: usize, name: &str, n: usize) -> Vec<String> {
    let slots = cluster.slots_of(node);
    (0..)
        .map(|i| format!("{{{name}-{i}}}:value"))
        .filter(|k| {
            let slot = fred::util::redis_keyslot(k.as_bytes());
            slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
        })
        .take(n)
        .collect()
}

/// One client configured exactly as the store's sends many `GET`s at once (fred pipelines
/// them on each node's connection) while one slot
/// is half migrated: some to keys already moved to the importing node (answered `ASK`),
/// many to other keys of that node and of the migrating one. Every key's value is its own
/// name, so a reply handed to the wrong command shows. fred 10.1 following an `ASK` reads
/// its `ASKING` reply straight off the importing node's pipelined connection, and with
/// commands in flight there, hands each of them its predecessor's reply; the store's client
/// must never let fred follow a redirection (docs/fred-ask-redirections.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reply_reaches_another_command_while_a_slot_migrates() {
    let cluster = RedisCluster::start();
    let config = helpers::config(&cluster.url());
    let prefix = config.key_prefix.clone();
    let (slot, source, target) = slot_of(&cluster, &prefix);
    let rounds = 20;
    let moved: Vec<String> = (0..rounds).map(|i| format!("{prefix}:moved:{i}")).collect();
    let staying: Vec<String> = (0..rounds).map(|i| format!("{prefix}:stays:{i}")).collect();
    let on_target = keys_on(&cluster, target, "target", 2000);
    let on_source = keys_on(&cluster, source, "source", 400);
    let raw = helpers::raw(&cluster.url()).await;
    for key in moved
        .iter()
        .chain(&staying)
        .chain(&on_target)
        .chain(&on_source)
    {
        let _: () = raw
            .set(key.as_str(), key.as_str(), None, None, false)
            .await
            .unwrap();
    }
    cluster.begin_slot_move(slot, source, target);
    let moved_refs: Vec<&str> = moved.iter().map(String::as_str).collect();
    cluster.migrate_keys(source, target, &moved_refs);

    let client = fred_client(&config).unwrap();
    client.init().await.unwrap();
    let calls = client.with_options(&call_options(&config));
    // Per round: one key that moved, then keys of the importing node (where fred writes
    // its `ASKING`), keys of the migrating node, and one key of the slot that did not move.
    let per_target = on_target.len() / rounds;
    let per_source = on_source.len() / rounds;
    let mut sent: Vec<&str> = Vec::new();
    for r in 0..rounds {
        sent.push(&moved[r]);
        sent.extend(
            on_target[r * per_target..(r + 1) * per_target]
                .iter()
                .map(String::as_str),
        );
        sent.extend(
            on_source[r * per_source..(r + 1) * per_source]
                .iter()
                .map(String::as_str),
        );
        sent.push(&staying[r]);
    }
    // Sent at once, in this order (`join_all` polls each future once before any answer can
    // arrive): fred writes them to the nodes' connections without waiting for replies.
    // (As the store does, each as a custom command: fred writes those out at once.)
    let get = |key: &str| {
        let command = CustomCommand::new_static("GET", ClusterHash::FirstKey, false);
        calls.custom::<Value, _>(command, vec![key.to_owned()])
    };
    let replies: Vec<Result<Value, _>> =
        futures_util::future::join_all(sent.iter().map(|key| get(key))).await;

    let mut wrong = Vec::new();
    let mut failed = Vec::new();
    let mut refused = 0;
    for (key, reply) in sent.iter().zip(&replies) {
        match reply {
            Ok(v) if v.as_str().as_deref() == Some(*key) => {}
            Ok(v) => wrong.push(format!("GET {key} answered {v:?}")),
            Err(_) if key.contains(":moved:") => refused += 1,
            Err(e) => failed.push(format!("GET {key} failed: {e:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} commands were answered with another command's reply, e.g. {:?}",
        wrong.len(),
        sent.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        failed.is_empty(),
        "{} commands to keys that did not move failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // The slot really was half migrated: the moved keys were redirected (and fred, which
    // must not follow the redirection, answered them with an error).
    assert!(refused > 0, "no moved key was redirected");
    // The client's connection task is still running.
    let pong: String = client.ping(None).await.unwrap();
    assert_eq!(pong, "PONG");
    let _ = client.quit().await;
}

/// While the store's slot is being migrated, no script starts: each declares the slot's
/// guard key, which never exists, so Redis refuses it (`TRYAGAIN`, `ASK`) instead of running
/// it until its first command on a key that is missing on the source, which would keep the
/// writes made before it (a re-recorded task without its indexes, a due retry taken off the
/// due set and never delivered). The store sends a refused call again for up to a command
/// timeout, then answers 503 with nothing written; reads of keys still on the source are
/// served; once the slot has moved, calls follow it (`MOVED`) to its new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_script_runs_on_a_migrating_slot_and_calls_follow_it() {
    let cluster = std::sync::Arc::new(RedisCluster::start());
    let config = helpers::config(&cluster.url());
    let store = helpers::store_with(config.clone()).await;
    let scheduled = task(
        "t1",
        0,
        ErrorCategory::ServiceTimeout,
        "embedding",
        "c1",
        "E1",
    );
    let recorded = task(
        "t2",
        0,
        ErrorCategory::ServiceTimeout,
        "embedding",
        "c1",
        "E1",
    );
    // The same task failing again later: every key its script declares exists already.
    let again = task(
        "t2",
        120_000,
        ErrorCategory::ServiceTimeout,
        "embedding",
        "c1",
        "E1",
    );
    let due = Timestamp::from_unix_millis(BASE_MS).unwrap();
    let later = Timestamp::from_unix_millis(BASE_MS + 60_000).unwrap();
    store
        .record_planned(&[(scheduled.clone(), RetryPlan::Retry { due })])
        .await
        .unwrap();
    store.record(&recorded).await.unwrap();
    // A first scheduler step (nothing due yet) makes its lock, so every key the `deliver`
    // script declares exists too.
    let none = store.deliver_due(Timestamp::from_unix_millis(BASE_MS - 1).unwrap(), 10);
    assert_eq!(none.await.unwrap().moved, 0);

    let (slot, source, target) = slot_of(&cluster, &config.key_prefix);
    cluster.begin_slot_move(slot, source, target);
    // The scheduled task's record goes first: `deliver` reads it without declaring it.
    let keys = failed_tasks_redis::Keys::new(&config.key_prefix);
    cluster.migrate_keys(source, target, &[keys.record("t1").as_str()]);

    let refused = store.record(&again).await.unwrap_err();
    assert!(
        refused.is_unavailable() && refused.to_string().contains("still moving"),
        "{refused}"
    );
    let refused = store.deliver_due(later, 10).await.unwrap_err();
    assert!(
        refused.is_unavailable() && refused.to_string().contains("still moving"),
        "{refused}"
    );
    // Nothing of either was written, and reads of keys on the source are served.
    let t2 = recorded.task_id();
    assert_eq!(store.get(t2).await.unwrap(), Some(recorded.clone()));
    let due_set = format!("{}:retry:due", config.key_prefix);
    let waiting = cluster.nodes()[source].cli(&["zrange", &due_set, "0", "-1"]);
    assert_eq!(waiting.trim(), "t1");

    // Finish the move while a write is being sent (by a store that follows a moving slot
    // for longer than the move takes): it reaches the new master.
    let patient = helpers::store_with(failed_tasks_redis::RedisConfig {
        command_timeout: std::time::Duration::from_secs(10),
        ..config.clone()
    })
    .await;
    let write = {
        let again = again.clone();
        tokio::spawn(async move { patient.record(&again).await })
    };
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.finish_slot_move(slot, source, target))
        .await
        .unwrap();
    assert_eq!(write.await.unwrap().unwrap(), RecordOutcome::Updated);
    // `store` still maps the slot to the source: its calls are answered MOVED, then sent
    // to the new master. Everything is where the scripts put it, once.
    let (ids, _) = walk(&store, &TaskFilter::default(), 10).await;
    assert_eq!(ids, expected(&[scheduled, again], &TaskFilter::default()));
    let step = store.deliver_due(later, 10).await.unwrap();
    assert_eq!((step.moved, step.dropped), (1, 0));
    assert_eq!(store.retry_gauges(later).await.unwrap().scheduled, 0);
}
