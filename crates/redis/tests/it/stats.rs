//! The `signature` filter, the minute counters, the attempts and the failure groups:
//! maintained by the write scripts, checked against brute force.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use failed_tasks_domain::stats::{minute_of, Dimension, MinuteCounts};
use failed_tasks_domain::{
    ClientId, Cursor, ErrorCategory, ErrorPattern, ErrorSignature, FailedTask, FailureGroup,
    GroupCursor, GroupQuery, ListQuery, NewFailedTask, PageLimits, PageSize, TaskFilter, Timestamp,
};
use failed_tasks_redis::RedisStore;
use failed_tasks_store::conformance::{expected, mixed_tasks, walk};
use failed_tasks_store::{stored, StatsStore, StatusStore, StoredPages};
use failed_tasks_testkit::RedisServer;

use crate::helpers;

/// Every page of `filter` through the stored-bytes fast path, as task ids.
async fn walk_json(store: &RedisStore, filter: &TaskFilter, size: u32) -> (Vec<String>, u64) {
    let mut ids = Vec::new();
    let mut cursor: Option<Cursor> = None;
    let mut total = None;
    loop {
        let page = store
            .list_stored(&ListQuery {
                filter: filter.clone(),
                page_size: PageSize::new(size, PageLimits::DEFAULT).unwrap(),
                cursor: cursor.take(),
            })
            .await
            .unwrap();
        total.get_or_insert(page.total);
        for r in &page.records {
            ids.push(stored::Record::parse(r).unwrap().task_id().to_owned());
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return (ids, total.unwrap_or(0)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_filter_uses_its_index_in_list_and_list_stored() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    let tasks = mixed_tasks(300);
    store.record_batch(&tasks).await.unwrap();
    let signatures: BTreeSet<ErrorSignature> = tasks.iter().map(ErrorSignature::of_task).collect();
    assert!(signatures.len() > 1, "the tasks fall into several groups");
    let unknown = ErrorSignature::parse("0123456789abcdef").unwrap();
    for sig in signatures.iter().chain([&unknown]) {
        let alone = TaskFilter {
            signature: Some(sig.clone()),
            ..TaskFilter::all()
        };
        let with_client = TaskFilter {
            client_id: Some(tasks[1].client_id().clone()),
            ..alone.clone()
        };
        for f in [&alone, &with_client] {
            let want = expected(&tasks, f);
            for size in [1, 7, 1000] {
                let (ids, totals) = walk(&store, f, size).await;
                assert_eq!(ids, want, "list {f:?} size {size}");
                assert!(
                    totals.iter().all(|t| *t as usize == want.len()),
                    "{totals:?}"
                );
                let (ids, total) = walk_json(&store, f, size).await;
                assert_eq!(ids, want, "list_stored {f:?} size {size}");
                assert_eq!(total as usize, want.len());
            }
        }
    }
}

/// Records written by an earlier version (a `v1` header, no signature) are still listed,
/// updated and removed cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_with_a_v1_header_are_still_served_and_replaced() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    let prefix = store.config().key_prefix.clone();
    let raw = helpers::raw(&server.url()).await;
    let tasks: Vec<FailedTask> = mixed_tasks(3);
    // Write them as the previous version did: v1 header, five indexes.
    for t in &tasks {
        let member = format!("{:015}:{}", t.fail_time().unix_millis(), t.task_id());
        let stored = format!(
            "v1\t{member}\t{}\t{}\t{}\t{}\n{}",
            t.error_category(),
            t.task_type(),
            t.client_id(),
            t.error_code(),
            serde_json::to_string(&serde_json::json!({
                "TaskId": t.task_id().as_str(), "TaskType": t.task_type().as_str(),
                "ClientId": t.client_id().as_str(), "CodebasePath": t.codebase_path().as_str(),
                "StartTime": t.start_time().to_rfc3339(), "FailTime": t.fail_time().to_rfc3339(),
                "ErrorCode": t.error_code().as_str(), "ErrorMessage": t.error_message().as_str(),
                "RetryCount": t.retry_count(), "ProcessedFiles": t.processed_files(),
                "ErrorCategory": t.error_category().as_str(),
            }))
            .unwrap()
        );
        let _: fred::types::Value = helpers::cmd(
            &raw,
            &prefix,
            "SET",
            vec![
                format!("{prefix}:task:{}", t.task_id()).into(),
                stored.into(),
            ],
        )
        .await;
        for idx in [
            "all".to_owned(),
            format!("category:{}", t.error_category()),
            format!("type:{}", t.task_type()),
            format!("client:{}", t.client_id()),
            format!("code:{}", t.error_code()),
        ] {
            let _: fred::types::Value = helpers::cmd(
                &raw,
                &prefix,
                "ZADD",
                vec![
                    format!("{prefix}:idx:{idx}").into(),
                    0i64.into(),
                    member.as_str().into(),
                ],
            )
            .await;
        }
    }
    let (ids, _) = walk(&store, &TaskFilter::all(), 10).await;
    assert_eq!(ids, expected(&tasks, &TaskFilter::all()));
    let (json_ids, _) = walk_json(&store, &TaskFilter::all(), 10).await;
    assert_eq!(json_ids, ids);
    // Re-recording upgrades the record (now in its group); removing clears everything.
    store.record(&tasks[0]).await.unwrap();
    let f = TaskFilter {
        signature: Some(ErrorSignature::of_task(&tasks[0])),
        ..TaskFilter::all()
    };
    assert_eq!(
        walk(&store, &f, 10).await.0,
        [tasks[0].task_id().to_string()]
    );
    for t in &tasks {
        assert!(store.remove(t.task_id()).await.unwrap());
    }
    assert_eq!(helpers::keys_of(&raw, &prefix).await, Vec::<String>::new());
}

/// Every group page of `store`, `size` groups at a time.
pub async fn all_groups(store: &dyn StatsStore, size: u32) -> (Vec<FailureGroup>, u64) {
    let mut out = Vec::new();
    let mut cursor: Option<GroupCursor> = None;
    loop {
        let page = store
            .list_groups(&GroupQuery {
                page_size: PageSize::new(size, PageLimits::DEFAULT).unwrap(),
                cursor: cursor.take(),
            })
            .await
            .unwrap();
        out.extend(page.groups);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return (out, page.total),
        }
    }
}

/// The minute counters and groups of exactly `tasks`, by brute force.
pub fn brute_force(tasks: &[FailedTask]) -> (Vec<MinuteCounts>, Vec<FailureGroup>) {
    let mut minutes: BTreeMap<i64, MinuteCounts> = BTreeMap::new();
    let mut groups: BTreeMap<ErrorSignature, (ErrorPattern, Vec<&FailedTask>)> = BTreeMap::new();
    for t in tasks {
        let m = minute_of(t.fail_time());
        minutes
            .entry(m)
            .or_insert_with(|| MinuteCounts {
                minute: m,
                ..MinuteCounts::default()
            })
            .apply(t, 1);
        let p = ErrorPattern::of_task(t);
        groups
            .entry(p.signature().clone())
            .or_insert_with(|| (p, Vec::new()))
            .1
            .push(t);
    }
    let mut out: Vec<FailureGroup> = groups
        .into_values()
        .map(|(pattern, mut members)| {
            members.sort_by_key(|t| t.sort_key());
            let newest = members[0];
            let oldest = members[members.len() - 1];
            let clients: HashSet<&ClientId> = members.iter().map(|t| t.client_id()).collect();
            FailureGroup {
                pattern,
                count: members.len() as u64,
                first_seen: oldest.fail_time(),
                last_seen: newest.fail_time(),
                clients_affected: clients.len() as u64,
                sample_task_id: newest.task_id().clone(),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (b.last_seen, b.pattern.signature()).cmp(&(a.last_seen, a.pattern.signature()))
    });
    (minutes.into_values().collect(), out)
}

/// The store's counters over `[from, to)` and all its groups equal brute force over `tasks`
/// (which must be every stored task, all failing within that range).
pub async fn assert_consistent(store: &RedisStore, tasks: &[FailedTask], from: i64, to: i64) {
    let (want_minutes, want_groups) = brute_force(tasks);
    let got = store.failure_counts(from, to).await.unwrap();
    assert_eq!(got, want_minutes, "minute counters differ from the records");
    let got = store.failure_tops(from, to).await.unwrap();
    assert_eq!(
        got,
        failed_tasks_store::conformance::brute_tops(tasks, from, to),
        "breakdowns differ from the records"
    );
    for size in [3, 1000] {
        let (groups, total) = all_groups(store, size).await;
        assert_eq!(total as usize, want_groups.len(), "group total");
        assert_eq!(
            groups, want_groups,
            "groups differ from the records (page size {size})"
        );
    }
}

fn at(id: &str, fail_ms: i64, i: usize) -> FailedTask {
    FailedTask::new(NewFailedTask {
        task_id: id.into(),
        task_type: ["embedding", "indexing"][i % 2].into(),
        client_id: format!("client{}", i % 3),
        codebase_path: "/p".into(),
        start_time: Timestamp::from_unix_millis(fail_ms - 1000).unwrap(),
        fail_time: Timestamp::from_unix_millis(fail_ms).unwrap(),
        error_code: ["TIMEOUT_ERROR", "STORAGE_ERROR"][i % 2].into(),
        error_message: format!("failed after {i} tries"),
        retry_count: 0,
        processed_files: 1,
        error_category: Some(ErrorCategory::ALL[i % 5]),
    })
    .unwrap()
}

const MINUTE: i64 = 60_000;

/// Trimmed tasks leave their minute counters and groups: what remains equals brute force
/// over the survivors, and once everything is trimmed no counter or group key is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn janitor_trims_counters_and_groups_with_the_records() {
    let server = RedisServer::start();
    let now = 1_750_000_000_000i64;
    let mut config = helpers::config(&server.url());
    config.retention.max_age = Duration::from_millis(30 * MINUTE as u64);
    config.retention.max_count = 20;
    let store = helpers::store_with(config).await;
    // 60 tasks one minute apart: 30 are younger than 30 minutes, but only 20 may stay.
    let tasks: Vec<FailedTask> = (0..60)
        .map(|i| at(&format!("t{i:02}"), now - i as i64 * MINUTE - 1, i))
        .collect();
    store.record_batch(&tasks).await.unwrap();
    let range = (
        minute_of(Timestamp::from_unix_millis(now).unwrap()) - 70,
        minute_of(Timestamp::from_unix_millis(now).unwrap()) + 1,
    );
    assert_consistent(&store, &tasks, range.0, range.1).await;
    let report = store.trim_once(now).await.unwrap();
    assert_eq!((report.removed_by_age, report.removed_by_count), (30, 10));
    let survivors: Vec<FailedTask> = tasks[..20].to_vec();
    assert_consistent(&store, &survivors, range.0, range.1).await;
    // Trim the rest by age.
    let report = store.trim_once(now + 120 * MINUTE).await.unwrap();
    assert_eq!(report.removed_by_age, 20);
    assert_consistent(&store, &[], range.0, range.1).await;
    let raw = helpers::raw(&server.url()).await;
    let prefix = store.config().key_prefix.clone();
    assert_eq!(
        helpers::data_keys_of(&raw, &prefix).await,
        Vec::<String>::new()
    );
    // What is left is the audit log of the two trims.
    let audited: u64 = helpers::cmd(
        &raw,
        &prefix,
        "XLEN",
        vec![format!("{prefix}:audit").into()],
    )
    .await;
    assert_eq!(audited, 2);
}

/// `(calls of HMGET, HGETALL and ZRANGE, all commands)` Redis processed during `f`.
async fn commands_during<F: std::future::Future<Output = ()>>(
    raw: &fred::clients::Client,
    prefix: &str,
    f: F,
) -> (u64, u64) {
    let _: fred::types::Value = helpers::cmd(raw, prefix, "CONFIG", vec!["RESETSTAT".into()]).await;
    f.await;
    let info: String = helpers::cmd(raw, prefix, "INFO", vec!["commandstats".into()]).await;
    let calls = |name: &str| -> u64 {
        info.lines()
            .filter(|l| l.starts_with(&format!("cmdstat_{name}:")))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let all: u64 = info
        .lines()
        .filter(|l| {
            l.starts_with("cmdstat_")
                && !l.starts_with("cmdstat_config")
                && !l.starts_with("cmdstat_info")
        })
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    (calls("hmget") + calls("hgetall") + calls("zrange"), all)
}

/// A statistics request sends a fixed number of reads per hour and per edge minute of its
/// window, whatever the number of stored failures or of their distinct values, and a page of
/// groups a fixed number per group; the answers stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_group_reads_do_not_grow_with_stored_tasks() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    let raw = helpers::raw(&server.url()).await;
    let prefix = store.config().key_prefix.clone();
    let base = failed_tasks_store::conformance::BASE_MS;
    let window = (minute_of(Timestamp::from_unix_millis(base).unwrap()), 60);
    let make = |n: usize| -> Vec<FailedTask> {
        (0..n)
            .map(|i| {
                at(
                    &format!("n{i:05}"),
                    base + (i as i64 * 7_919) % (60 * MINUTE),
                    i,
                )
            })
            .collect()
    };
    let mut costs = Vec::new();
    for n in [200, 2_000] {
        let tasks = make(n);
        for batch in tasks.chunks(failed_tasks_redis::store::MAX_BATCH) {
            store.record_batch(batch).await.unwrap();
        }
        let (from, to) = (window.0, window.0 + window.1);
        let (reads, all) = commands_during(&raw, &prefix, async {
            let got = store.failure_counts(from, to).await.unwrap();
            assert_eq!(got, brute_force(&tasks).0, "counters at N = {n}");
            let got = store.failure_tops(from, to).await.unwrap();
            let want = failed_tasks_store::conformance::brute_tops(&tasks, from, to);
            assert_eq!(got, want, "breakdowns at N = {n}");
        })
        .await;
        let (_, group_cmds) = commands_during(&raw, &prefix, async {
            let (groups, _) = all_groups(&store, 1000).await;
            assert_eq!(groups, brute_force(&tasks).1, "groups at N = {n}");
        })
        .await;
        let mut took = (Duration::ZERO, Duration::ZERO);
        let week = commands_during(&raw, &prefix, async {
            let started = std::time::Instant::now();
            store.failure_counts(from, to).await.unwrap();
            took.0 = started.elapsed();
            let week = 7 * 24 * 60;
            let started = std::time::Instant::now();
            let got = store.failure_counts(to - week, to).await.unwrap();
            store.failure_tops(to - week, to).await.unwrap();
            took.1 = started.elapsed();
            assert_eq!(got.iter().map(|c| c.total).sum::<u64>(), n as u64);
        })
        .await;
        let week_cmds = week.1;
        eprintln!(
            "N = {n}: 1 h stats: {reads} HMGET/ZRANGE ({all} commands); 7 d stats: {week_cmds} \
             commands (with a second 1 h read); all groups: {group_cmds} commands; \
             wall time (informative only): 1 h {:?}, 7 d {:?}",
            took.0, took.1
        );
        costs.push((reads, all, week.1, group_cmds));
    }
    assert_eq!(costs[0], costs[1], "read cost grew with N");
    // The window's 60 minutes start on a whole hour: one bucket, so one HMGET of counters,
    // a ZRANGE per dimension, one HMGET of untracked counts. 7 days from a minute that is
    // not on an hour: 169 hours, 168 - 1 whole ones and at most 2 x 59 edge minutes.
    let dims = Dimension::ALL.len() as u64;
    assert_eq!(costs[0].0, 1 + dims + 1, "reads of a one-hour window");
    assert!(
        costs[0].2 <= 2 + dims + 169 + (167 + 118) * dims + 169,
        "{costs:?}"
    );
}

/// Counter hashes written by earlier versions hold one field per minute and distinct error
/// code, task type and client (`{m}:e:CODE`, `{m}:y:TYPE`, `{m}:l:CLIENT`): their totals,
/// categories and recoveries are still read (the same fields), their per-value fields are
/// never read (a read asks for named fields only, so 20,000 of them cost nothing), and a
/// task recorded now in such an hour is broken down as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_hashes_of_earlier_versions_are_read_without_their_per_value_fields() {
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    let raw = helpers::raw(&server.url()).await;
    let prefix = store.config().key_prefix.clone();
    let now = Timestamp::now().unix_millis();
    let minute = now.div_euclid(MINUTE) - 3;
    let hour = minute.div_euclid(60);
    let key = format!("{prefix}:cnt:{hour}");
    let mut args: Vec<fred::types::Value> = vec![key.as_str().into()];
    for (f, v) in [
        (format!("{minute}:t"), 10_000),
        (format!("{minute}:c:data_error"), 10_000),
        (format!("{minute}:r"), 2),
    ] {
        args.extend([f.into(), v.into()]);
    }
    for i in 0..10_000 {
        args.extend([format!("{minute}:l:c{i}").into(), 1.into()]);
        args.extend([format!("{minute}:e:E{i}").into(), 1.into()]);
    }
    let _: i64 = helpers::cmd(&raw, &prefix, "HSET", args).await;

    let (from, to) = (minute - 10, minute + 10);
    let counts = store.failure_counts(from, to).await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!((counts[0].total, counts[0].recovered), (10_000, 2));
    assert_eq!(
        counts[0].by_category.get(&ErrorCategory::DataError),
        Some(&10_000)
    );
    assert!(store.failure_tops(from, to).await.unwrap().is_empty());

    let t = at("fresh", minute * MINUTE + 5_000, 0);
    store.record(&t).await.unwrap();
    let counts = store.failure_counts(from, to).await.unwrap();
    assert_eq!(counts[0].total, 10_001);
    let tops = store.failure_tops(from, to).await.unwrap();
    assert_eq!(tops.len(), 1);
    assert_eq!(tops[0].by_client, vec![(t.client_id().to_string(), 1)]);
    // Removing it takes it out of both, and leaves the old fields alone.
    assert!(store.remove(t.task_id()).await.unwrap());
    assert_eq!(
        store.failure_counts(from, to).await.unwrap()[0].total,
        10_000
    );
    assert!(store.failure_tops(from, to).await.unwrap().is_empty());
    let len: u64 = helpers::cmd(&raw, &prefix, "HLEN", vec![key.as_str().into()]).await;
    assert_eq!(len, 3 + 20_000);
}
