//! The migration to the current record layout (`failed-tasks-server migrate`): on a store
//! filled in the previous layout (`v3` records, as the previous version wrote them, and a
//! `v1` record), it rewrites every record, in resumable batches, changes nothing else, and a
//! second run finds nothing to do.

use std::collections::BTreeMap;

use failed_tasks_domain::{ListQuery, PageLimits, PageSize, RetryPlan, TaskFilter, Timestamp};
use failed_tasks_redis::{Migrated, RedisStore};
use failed_tasks_store::conformance::mixed_tasks;
use failed_tasks_store::{stored, RetryStore, StatusStore};
use failed_tasks_testkit::RedisServer;
use fred::types::Value;

use crate::helpers;

/// Every key of the store and its content, records decoded (so that a record's layout does
/// not count, only what it says), sorted sets with their scores, hashes sorted.
async fn snapshot(raw: &fred::clients::Client, prefix: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for key in helpers::keys_of(raw, prefix).await {
        let kind: String = helpers::cmd(raw, prefix, "TYPE", vec![key.as_str().into()]).await;
        let content = match kind.as_str() {
            "string" => {
                let v: String = helpers::cmd(raw, prefix, "GET", vec![key.as_str().into()]).await;
                if key.contains(":task:") {
                    format!("{:?}", stored::decode(&v))
                } else {
                    v
                }
            }
            "zset" => {
                let v: Vec<String> = helpers::cmd(
                    raw,
                    prefix,
                    "ZRANGE",
                    vec![
                        key.as_str().into(),
                        0.into(),
                        (-1).into(),
                        "WITHSCORES".into(),
                    ],
                )
                .await;
                v.join(" ")
            }
            "hash" => {
                let v: BTreeMap<String, String> =
                    helpers::cmd(raw, prefix, "HGETALL", vec![key.as_str().into()]).await;
                format!("{v:?}")
            }
            "list" => {
                let v: Vec<String> = helpers::cmd(
                    raw,
                    prefix,
                    "LRANGE",
                    vec![key.as_str().into(), 0.into(), (-1).into()],
                )
                .await;
                v.join(" | ")
            }
            other => other.to_owned(),
        };
        out.insert(key, content);
    }
    out
}

/// A record as the previous version wrote it: the `v3` header (the first 13 fields, which
/// `v4` keeps in place), then the task as wire JSON ending in `NextRetryAt`.
fn as_v3(v4: &str) -> String {
    let header = v4.split_once('\n').unwrap().0;
    let fields: Vec<&str> = header.split('\t').skip(1).take(12).collect();
    format!(
        "v3\t{}\n{}",
        fields.join("\t"),
        stored::wire_json(v4).unwrap()
    )
}

async fn records(raw: &fred::clients::Client, prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for key in helpers::keys_of(raw, prefix).await {
        if key.contains(":task:") {
            let v: String = helpers::cmd(raw, prefix, "GET", vec![key.as_str().into()]).await;
            out.push((key, v));
        }
    }
    out
}

async fn pages(store: &RedisStore) -> Vec<String> {
    let mut out = Vec::new();
    let mut query = ListQuery {
        filter: TaskFilter::all(),
        page_size: PageSize::new(9, PageLimits::DEFAULT).unwrap(),
        cursor: None,
    };
    loop {
        let page = store.list(&query).await.unwrap();
        assert_eq!(page.skipped_corrupt, 0);
        for (i, t) in page.tasks.iter().enumerate() {
            out.push(format!("{t:?} {:?}", page.retry_status(i)));
        }
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_rewrites_a_store_of_the_previous_layout_and_changes_nothing_else() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    let prefix = store.config().key_prefix.clone();
    let raw = helpers::raw(&server.url()).await;

    // Every retry state, schedules by policy and operator, a cancelled retry, history.
    let tasks = mixed_tasks(40);
    let due = Timestamp::from_unix_millis(1_737_800_000_000).unwrap();
    let planned: Vec<_> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let plan = match i % 3 {
                0 => RetryPlan::Retry { due },
                1 => RetryPlan::Final,
                _ => RetryPlan::NotScheduled,
            };
            (t.clone(), plan)
        })
        .collect();
    store.record_planned(&planned).await.unwrap();
    let now = Timestamp::from_unix_millis(1_737_790_000_000).unwrap();
    store.cancel_retry(tasks[0].task_id()).await.unwrap();
    store.retry_now(tasks[1].task_id(), now).await.unwrap();
    store.retry_now(tasks[3].task_id(), now).await.unwrap();
    // A second failure of a task: its first one goes to the history.
    let mut again = tasks[6].clone().into_parts();
    again.retry_count += 1;
    again.fail_time = Timestamp::from_unix_millis(again.fail_time.unix_millis() + 5_000).unwrap();
    let again = failed_tasks_domain::FailedTask::new(again).unwrap();
    store
        .record_planned(&[(again, RetryPlan::Retry { due })])
        .await
        .unwrap();

    // Turn every record into the previous layout, as the previous version would have left
    // it (the indexes, groups, counters and due set are the same in both layouts).
    let originals = records(&raw, &prefix).await;
    for (key, v4) in originals.clone() {
        assert!(v4.starts_with("v4\t"), "{v4}");
        let _: Value = helpers::cmd(
            &raw,
            &prefix,
            "SET",
            vec![key.into(), as_v3(&v4).into(), "KEEPTTL".into()],
        )
        .await;
    }
    let before = snapshot(&raw, &prefix).await;
    let pages_before = pages(&store).await;
    let mut details_before = Vec::new();
    for t in &tasks {
        details_before.push(store.retry_details(t.task_id()).await.unwrap());
    }
    assert!(records(&raw, &prefix)
        .await
        .iter()
        .all(|(_, v)| v.starts_with("v3\t")));

    // One batch, then resume from where it stopped, as an operator would after a restart.
    let first = store.migrate_step(0, None, 7).await.unwrap();
    assert_eq!((first.scanned, first.migrated), (7, 7), "{first:?}");
    let mut after = first.next.clone();
    let mut migrated = first.migrated;
    let mut steps = 1;
    while let Some(from) = after {
        let step = store.migrate_step(0, Some(&from), 7).await.unwrap();
        assert_eq!(step.corrupt + step.missing, 0, "{step:?}");
        migrated += step.migrated;
        after = step.next;
        steps += 1;
        assert!(steps < 100, "the walk ends");
    }
    assert_eq!(migrated, tasks.len() as u64);

    let now_records = records(&raw, &prefix).await;
    assert_eq!(now_records.len(), tasks.len());
    assert_eq!(
        now_records, originals,
        "byte for byte what this version writes"
    );
    assert_eq!(
        snapshot(&raw, &prefix).await,
        before,
        "nothing else changed"
    );
    assert_eq!(pages(&store).await, pages_before);
    for (t, want) in tasks.iter().zip(&details_before) {
        assert_eq!(&store.retry_details(t.task_id()).await.unwrap(), want);
    }

    // Idempotent: a second run rewrites nothing.
    let again = store.migrate_step(0, None, 1000).await.unwrap();
    assert_eq!(
        (again.scanned, again.migrated, again.current, again.next),
        (tasks.len() as u64, 0, tasks.len() as u64, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_leaves_a_record_written_meanwhile_alone_and_heals_v1_records() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    let prefix = store.config().key_prefix.clone();
    let raw = helpers::raw(&server.url()).await;
    let tasks = mixed_tasks(2);
    store.record_batch(&tasks).await.unwrap();
    let (key, v4) = records(&raw, &prefix).await.remove(0);
    let v3 = as_v3(&v4);
    // The migration read the v3 value; a server rewrote the record before the rewrite.
    let _: Value = helpers::cmd(
        &raw,
        &prefix,
        "SET",
        vec![key.as_str().into(), v3.as_str().into()],
    )
    .await;
    store.record_batch(&tasks).await.unwrap();
    assert_eq!(store.migrate_record(&v3).await.unwrap(), Migrated::Changed);
    let v: String = helpers::cmd(&raw, &prefix, "GET", vec![key.as_str().into()]).await;
    assert_eq!(v, v4, "the newer record stays");
    assert_eq!(store.migrate_record(&v).await.unwrap(), Migrated::Current);

    // A v1 record (no signature: in no group or counter) joins its group when migrated.
    let t = &tasks[1];
    let key = format!("{prefix}:task:{}", t.task_id());
    let v4: String = helpers::cmd(&raw, &prefix, "GET", vec![key.as_str().into()]).await;
    store.remove(t.task_id()).await.unwrap();
    let header = v4.split_once('\n').unwrap().0;
    let f: Vec<&str> = header.split('\t').collect();
    let json = stored::wire_json(&v4).unwrap();
    let json = json.replace(",\"NextRetryAt\":null", "");
    let v1 = format!(
        "v1\t{}\t{}\t{}\t{}\t{}\n{json}",
        f[1], f[2], f[3], f[4], f[5]
    );
    let _: Value = helpers::cmd(&raw, &prefix, "SET", vec![key.as_str().into(), v1.into()]).await;
    for idx in [
        "all".to_owned(),
        format!("category:{}", f[2]),
        format!("type:{}", f[3]),
        format!("client:{}", f[4]),
        format!("code:{}", f[5]),
    ] {
        let _: Value = helpers::cmd(
            &raw,
            &prefix,
            "ZADD",
            vec![format!("{prefix}:idx:{idx}").into(), 0.into(), f[1].into()],
        )
        .await;
    }
    let step = store.migrate_step(0, None, 100).await.unwrap();
    assert_eq!((step.migrated, step.current), (1, 1), "{step:?}");
    let v: String = helpers::cmd(&raw, &prefix, "GET", vec![key.as_str().into()]).await;
    assert_eq!(v, v4, "written as recording it now writes it");
    let sig_index = format!("{prefix}:idx:sig:{}", f[6]);
    let score: Option<f64> =
        helpers::cmd(&raw, &prefix, "ZSCORE", vec![sig_index.into(), f[1].into()]).await;
    assert_eq!(score, Some(0.0), "in its group's index");
}
