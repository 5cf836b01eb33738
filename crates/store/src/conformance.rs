//! The behaviour every store adapter must show, as reusable async checks: one set per
//! capability.
//!
//! Enabled by the `conformance` feature, for adapters' own test suites: each check takes an
//! **empty** store and panics (like an assertion) when the adapter misbehaves. [`run_all`]
//! takes a function that makes a fresh empty store per check, as the [`Stores`] the adapter
//! builds, and runs the checks of every capability that value claims: the tasks always,
//! statistics and groups when it has [`Stores::stats`], the stored-record pages when it has
//! [`Stores::stored`], the notifier's store when it has [`Stores::notify`]. The retry checks also need the store's queue: [`run_retries`].
//!
//! ```text
//! failed_tasks_store::conformance::run_all(|| async { Stores::from(my_fresh_store().await) }).await;
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::collections::HashSet;
use std::future::Future;

use failed_tasks_domain::{
    ClientId, Cursor, ErrorCategory, ErrorCode, FailedTask, ListQuery, NewFailedTask, PageLimits,
    PageSize, TaskFilter, TaskId, TaskType, Timestamp,
};

use crate::{RecordOutcome, StatsStore, StatusStore, StoredPages, Stores};

pub mod audit;
pub mod breaker;
pub mod files;
pub mod gates;
pub mod notify;
pub mod replays;
pub mod retries;
pub use retries::run_retries;

/// A base time for generated tasks: 2025-01-24T09:00:00Z.
pub const BASE_MS: i64 = 1_737_709_200_000;

/// A valid task with the given id, fail time offset (ms after [`BASE_MS`]), category,
/// task type, client and error code; the other fields are fixed.
pub fn task(
    id: &str,
    fail_offset_ms: i64,
    category: ErrorCategory,
    task_type: &str,
    client: &str,
    code: &str,
) -> FailedTask {
    FailedTask::new(NewFailedTask {
        task_id: id.into(),
        task_type: task_type.into(),
        client_id: client.into(),
        codebase_path: format!("/projects/{client}"),
        start_time: Timestamp::from_unix_millis(BASE_MS - 60_000).unwrap(),
        fail_time: Timestamp::from_unix_millis(BASE_MS + fail_offset_ms).unwrap(),
        error_code: code.into(),
        error_message: format!("{code} while working on {id}"),
        retry_count: 1,
        processed_files: 10,
        error_category: Some(category),
    })
    .expect("conformance task is valid")
}

/// `t` in another codebase (everything else the same).
pub fn in_codebase(t: &FailedTask, codebase: &str) -> FailedTask {
    FailedTask::new(NewFailedTask {
        task_id: t.task_id().as_str().into(),
        task_type: t.task_type().as_str().into(),
        client_id: t.client_id().as_str().into(),
        codebase_path: codebase.into(),
        start_time: t.start_time(),
        fail_time: t.fail_time(),
        error_code: t.error_code().as_str().into(),
        error_message: t.error_message().as_str().into(),
        retry_count: t.retry_count(),
        processed_files: t.processed_files(),
        error_category: Some(t.error_category()),
    })
    .expect("conformance task is valid")
}

/// A deterministic mixed set of `n` tasks: 4 categories, 3 task types, 5 clients, 6 codes,
/// fail times with many ties.
pub fn mixed_tasks(n: usize) -> Vec<FailedTask> {
    let types = ["embedding", "indexing", "cleaning"];
    let codes = [
        "TIMEOUT_ERROR",
        "PERMISSION_DENIED",
        "STORAGE_ERROR",
        "PARSE_ERROR",
        "INTERNAL",
        "DEADLINE_EXCEEDED",
    ];
    (0..n)
        .map(|i| {
            let cat = ErrorCategory::ALL[i % 4];
            task(
                &format!("t{:05}", (i * 7919) % 100_000),
                ((i * 37) % (n / 3 + 1)) as i64 * 1000,
                cat,
                types[i % 3],
                &format!("client{}", i % 5),
                codes[i % 6],
            )
        })
        .collect()
}

fn query(filter: TaskFilter, size: u32, cursor: Option<Cursor>) -> ListQuery {
    ListQuery {
        filter,
        page_size: PageSize::new(size, PageLimits::DEFAULT).unwrap(),
        cursor,
    }
}

/// Walk every page of `filter` with `size` per page; returns the ids in order and the
/// totals each page reported.
pub async fn walk(
    store: &dyn StatusStore,
    filter: &TaskFilter,
    size: u32,
) -> (Vec<String>, Vec<u64>) {
    let mut ids = Vec::new();
    let mut totals = Vec::new();
    let mut cursor = None;
    for _ in 0..100_000 {
        let page = store
            .list(&query(filter.clone(), size, cursor))
            .await
            .unwrap();
        assert!(page.tasks.len() <= size as usize, "page larger than asked");
        totals.push(page.total);
        ids.extend(page.tasks.iter().map(|t| t.task_id().to_string()));
        match page.next_cursor {
            Some(c) => {
                assert!(!page.tasks.is_empty(), "a cursor after an empty page");
                cursor = Some(c);
            }
            None => return (ids, totals),
        }
    }
    panic!("paging did not end");
}

/// The expected listing of `tasks` under `filter`, by brute force.
pub fn expected(tasks: &[FailedTask], filter: &TaskFilter) -> Vec<String> {
    let mut matching: Vec<&FailedTask> = tasks.iter().filter(|t| filter.matches(t)).collect();
    matching.sort_by_key(|t| t.sort_key());
    matching.iter().map(|t| t.task_id().to_string()).collect()
}

/// Record, get, upsert, remove.
pub async fn record_get_remove(store: &dyn StatusStore) {
    store.ping().await.unwrap();
    let seed = FailedTask::seed_examples();
    for t in &seed {
        assert_eq!(store.record(t).await.unwrap(), RecordOutcome::Created);
    }
    let got = store.get(seed[1].task_id()).await.unwrap();
    assert_eq!(got.as_ref(), Some(&seed[1]));
    assert_eq!(
        store.get(&TaskId::parse("nope").unwrap()).await.unwrap(),
        None
    );

    let page = store
        .list(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap();
    assert_eq!(page.total, 3);
    let ids: Vec<_> = page.tasks.iter().map(|t| t.task_id().as_str()).collect();
    assert_eq!(ids, ["task_003", "task_002", "task_001"]);
    assert_eq!(
        page.tasks,
        vec![seed[2].clone(), seed[1].clone(), seed[0].clone()]
    );
    assert_eq!(page.next_cursor, None);

    assert!(store.remove(seed[0].task_id()).await.unwrap());
    assert!(!store.remove(seed[0].task_id()).await.unwrap());
    assert_eq!(store.get(seed[0].task_id()).await.unwrap(), None);
    let page = store
        .list(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap();
    assert_eq!(page.total, 2);
}

/// Recording an id again replaces it, moves it in every index, never duplicates it.
pub async fn upsert_moves_every_index(store: &dyn StatusStore) {
    let first = task(
        "same",
        0,
        ErrorCategory::ServiceTimeout,
        "embedding",
        "alice",
        "TIMEOUT_ERROR",
    );
    let second = task(
        "same",
        5_000,
        ErrorCategory::Authorization,
        "indexing",
        "bob",
        "PERMISSION_DENIED",
    );
    let other = task(
        "other",
        1_000,
        ErrorCategory::ServiceTimeout,
        "embedding",
        "alice",
        "TIMEOUT_ERROR",
    );
    assert_eq!(store.record(&first).await.unwrap(), RecordOutcome::Created);
    store.record(&other).await.unwrap();
    assert_eq!(store.record(&second).await.unwrap(), RecordOutcome::Updated);
    assert_eq!(
        store.get(second.task_id()).await.unwrap(),
        Some(second.clone())
    );

    let all = [first.clone(), second.clone(), other.clone()];
    let now = [second.clone(), other.clone()];
    let filters = [
        TaskFilter::all(),
        TaskFilter {
            category: Some(ErrorCategory::ServiceTimeout),
            ..Default::default()
        },
        TaskFilter {
            category: Some(ErrorCategory::Authorization),
            ..Default::default()
        },
        TaskFilter {
            client_id: Some(ClientId::parse("alice").unwrap()),
            ..Default::default()
        },
        TaskFilter {
            client_id: Some(ClientId::parse("bob").unwrap()),
            ..Default::default()
        },
        TaskFilter {
            task_type: Some(TaskType::embedding()),
            ..Default::default()
        },
        TaskFilter {
            error_code: Some(ErrorCode::parse("PERMISSION_DENIED").unwrap()),
            ..Default::default()
        },
        TaskFilter {
            since: Some(Timestamp::from_unix_millis(BASE_MS + 2_000).unwrap()),
            ..Default::default()
        },
    ];
    let _ = all;
    for f in filters {
        let (ids, totals) = walk(store, &f, 10).await;
        assert_eq!(ids, expected(&now, &f), "filter {f:?}");
        assert_eq!(totals[0] as usize, ids.len(), "total for {f:?}");
    }
}

/// Every filter, alone and combined, lists exactly what brute force finds, in order, with
/// a matching total, across pages of several sizes.
pub async fn filters_match_brute_force(store: &dyn StatusStore) {
    let tasks = mixed_tasks(300);
    // Ids repeat in mixed_tasks only if (i*7919)%100000 collides: it does not for 300.
    for t in &tasks {
        store.record(t).await.unwrap();
    }
    let ts = |off: i64| Some(Timestamp::from_unix_millis(BASE_MS + off).unwrap());
    let filters = [
        TaskFilter::all(),
        TaskFilter {
            category: Some(ErrorCategory::DataError),
            ..Default::default()
        },
        TaskFilter {
            category: Some(ErrorCategory::SystemError),
            ..Default::default()
        },
        TaskFilter {
            task_type: Some(TaskType::indexing()),
            ..Default::default()
        },
        TaskFilter {
            client_id: Some(ClientId::parse("client3").unwrap()),
            ..Default::default()
        },
        TaskFilter {
            client_id: Some(ClientId::parse("nobody").unwrap()),
            ..Default::default()
        },
        TaskFilter {
            error_code: Some(ErrorCode::parse("PARSE_ERROR").unwrap()),
            ..Default::default()
        },
        TaskFilter {
            since: ts(20_000),
            ..Default::default()
        },
        TaskFilter {
            until: ts(20_000),
            ..Default::default()
        },
        TaskFilter {
            since: ts(10_000),
            until: ts(10_000),
            ..Default::default()
        },
        TaskFilter {
            since: ts(10_000),
            until: ts(60_000),
            client_id: Some(ClientId::parse("client1").unwrap()),
            ..Default::default()
        },
        TaskFilter {
            category: Some(ErrorCategory::ServiceTimeout),
            task_type: Some(TaskType::embedding()),
            ..Default::default()
        },
        TaskFilter {
            category: Some(ErrorCategory::ServiceTimeout),
            client_id: Some(ClientId::parse("client0").unwrap()),
            error_code: Some(ErrorCode::parse("TIMEOUT_ERROR").unwrap()),
            task_type: Some(TaskType::embedding()),
            since: ts(0),
            until: ts(90_000),
            signature: None,
            retry: None,
            text: None,
            path_prefix: None,
        },
    ];
    for f in &filters {
        let want = expected(&tasks, f);
        for size in [1, 7, 100, 1000] {
            let (ids, totals) = walk(store, f, size).await;
            assert_eq!(ids, want, "filter {f:?} page size {size}");
            assert!(
                totals.iter().all(|t| *t as usize == want.len()),
                "totals {totals:?} for {f:?}"
            );
        }
    }
}

/// Paging by cursor stays complete and duplicate-free while newer failures (and updates of
/// not-yet-listed tasks to newer times) arrive between pages.
pub async fn paging_is_stable_under_writes(store: &dyn StatusStore) {
    let tasks = mixed_tasks(120);
    for t in &tasks {
        store.record(t).await.unwrap();
    }
    let before = expected(&tasks, &TaskFilter::all());
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut fresh = 0;
    loop {
        let page = store
            .list(&query(TaskFilter::all(), 11, cursor))
            .await
            .unwrap();
        seen.extend(page.tasks.iter().map(|t| t.task_id().to_string()));
        // Newer failures arrive between pages.
        for _ in 0..3 {
            fresh += 1;
            let t = task(
                &format!("new{fresh:04}"),
                10_000_000 + fresh,
                ErrorCategory::SystemError,
                "embedding",
                "late",
                "INTERNAL",
            );
            store.record(&t).await.unwrap();
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a task was listed twice");
    assert_eq!(
        seen, before,
        "paging lost or reordered tasks that existed before it started"
    );
}

/// A tie on fail time is broken by task id, descending, and the cursor lands between ties.
pub async fn ties_are_ordered_by_id(store: &dyn StatusStore) {
    for id in ["b", "a", "c", "ab", "ba"] {
        store
            .record(&task(
                id,
                0,
                ErrorCategory::DataError,
                "embedding",
                "c",
                "X",
            ))
            .await
            .unwrap();
    }
    let (ids, _) = walk(store, &TaskFilter::all(), 2).await;
    assert_eq!(ids, ["c", "ba", "b", "ab", "a"]);
}

/// The per-minute failure counters follow every write: records, upserts that move a task to
/// another minute, category or client, removals; attempts add up per minute.
pub async fn stats_follow_writes(store: &dyn StatusStore, stats: &dyn StatsStore) {
    use failed_tasks_domain::stats::{minute_of, MinuteCounts};
    use std::collections::BTreeMap;

    // 120 tasks spread over ~46 minutes, four categories, five clients, six codes.
    let codes = [
        "TIMEOUT_ERROR",
        "PERMISSION_DENIED",
        "STORAGE_ERROR",
        "PARSE_ERROR",
        "INTERNAL",
        "X",
    ];
    let mut tasks: Vec<FailedTask> = (0..120)
        .map(|i| {
            task(
                &format!("s{i:03}"),
                i as i64 * 23_000,
                ErrorCategory::ALL[i % 4],
                ["embedding", "indexing", "cleaning"][i % 3],
                &format!("client{}", i % 5),
                codes[i % 6],
            )
        })
        .collect();
    store.record_batch(&tasks).await.unwrap();
    // Move 10 tasks to other minutes, categories and clients; remove 10 others.
    for (i, slot) in tasks.iter_mut().take(10).enumerate() {
        let moved = task(
            slot.task_id().as_str(),
            600_000 + i as i64 * 61_000,
            ErrorCategory::Authorization,
            "indexing",
            "mover",
            "PERMISSION_DENIED",
        );
        store.record(&moved).await.unwrap();
        *slot = moved;
    }
    for t in tasks.drain(100..110) {
        assert!(store.remove(t.task_id()).await.unwrap());
    }
    // Move 15 tasks to other codebases of the same client (a codebase is otherwise the
    // client's): 5 each to three, one of which gets one of them back with a new fail time.
    for (i, slot) in tasks.iter_mut().skip(10).take(15).enumerate() {
        let moved = in_codebase(slot, &format!("/work/repo-{}", i % 3));
        store.record(&moved).await.unwrap();
        *slot = moved;
    }
    // Remove one of the moved ones and record another's codebase again unchanged.
    let gone = tasks.remove(12);
    assert!(store.remove(gone.task_id()).await.unwrap());
    store.record(&tasks[13]).await.unwrap();
    let mut want: BTreeMap<i64, MinuteCounts> = BTreeMap::new();
    for t in &tasks {
        let m = minute_of(t.fail_time());
        want.entry(m)
            .or_insert_with(|| MinuteCounts {
                minute: m,
                ..Default::default()
            })
            .apply(t, 1);
    }
    let from = minute_of(Timestamp::from_unix_millis(BASE_MS).unwrap()) - 5;
    let to = from + 60;
    let got = stats.failure_counts(from, to).await.unwrap();
    let want: Vec<MinuteCounts> = want
        .into_values()
        .filter(|c| c.minute >= from && c.minute < to)
        .collect();
    assert_eq!(got, want, "minute counters disagree with the stored tasks");
    // A sub-range answers only its minutes.
    let part = stats.failure_counts(from + 6, from + 8).await.unwrap();
    assert!(part
        .iter()
        .all(|c| c.minute >= from + 6 && c.minute < from + 8));
    assert!(stats.failure_counts(to, from).await.unwrap().is_empty());
    // The breakdowns: a range of edge minutes only, and one with whole hours.
    for (a, b) in [(from, to), (from, from + 125), (from + 70, from + 71)] {
        assert_eq!(
            stats.failure_tops(a, b).await.unwrap(),
            brute_tops(&tasks, a, b),
            "breakdowns of [{a}, {b}) disagree with the stored tasks"
        );
    }
    assert!(stats.failure_tops(to, from).await.unwrap().is_empty());

    stats
        .record_attempts(&TaskType::embedding(), from + 1, 7)
        .await
        .unwrap();
    stats
        .record_attempts(&TaskType::indexing(), from + 1, 3)
        .await
        .unwrap();
    stats
        .record_attempts(&TaskType::embedding(), from + 2, 5)
        .await
        .unwrap();
    stats
        .record_attempts(&TaskType::embedding(), to + 10, 99)
        .await
        .unwrap();
    let attempts = stats.attempt_counts(from, to).await.unwrap();
    assert_eq!(attempts, vec![(from + 1, 10), (from + 2, 5)]);
}

/// The breakdowns of the buckets of `[from, to)` that count anything, computed from `tasks`
/// (valid while no bucket reaches its cap: then the order of writes decides what is tracked).
pub fn brute_tops(
    tasks: &[FailedTask],
    from: i64,
    to: i64,
) -> Vec<failed_tasks_domain::stats::BucketTops> {
    use failed_tasks_domain::stats::{buckets, minute_of, Bucket, BucketCounts};
    buckets(from, to)
        .into_iter()
        .filter_map(|b| {
            let mut c = BucketCounts::default();
            for t in tasks {
                let m = minute_of(t.fail_time());
                if b == Bucket::Minute(m) || b == Bucket::Hour(m.div_euclid(60)) {
                    c.apply(t, 1);
                }
            }
            (!c.is_empty()).then(|| c.tops(b))
        })
        .collect()
}

/// A bucket tracks at most `TRACKED_PER_BUCKET` distinct values per dimension: later new
/// ones are counted as untracked, a read answers `READ_PER_BUCKET` + 1 of the most
/// frequent, removals lower a tracked value's count or the untracked one, and a value can be
/// tracked again once there is room.
pub async fn breakdowns_are_capped(store: &dyn StatusStore, stats: &dyn StatsStore) {
    breakdowns_are_capped_with_ids(store, stats, |i| format!("cap{i:05}")).await
}

/// [`breakdowns_are_capped`] with the `i`-th task's id from `id` (a store whose cap holds per
/// part of its tasks, such as a sharded one, is checked with ids that all fall in one part).
pub async fn breakdowns_are_capped_with_ids(
    store: &dyn StatusStore,
    stats: &dyn StatsStore,
    id: impl Fn(usize) -> String,
) {
    use failed_tasks_domain::stats::{
        minute_of, Bucket, Dimension, Untracked, READ_PER_BUCKET, TRACKED_PER_BUCKET,
    };
    let n = TRACKED_PER_BUCKET + 5;
    // All in one minute, 2 hours after BASE_MS; every task its own client and error code,
    // `hot` the most frequent client.
    let at = |i: usize| 2 * 3_600_000 + (i % 50) as i64 * 1_000;
    let one = |i: usize, client: &str| {
        task(
            &id(i),
            at(i),
            ErrorCategory::ALL[i % 4],
            ["embedding", "indexing"][i % 2],
            client,
            &format!("E{i:05}"),
        )
    };
    let tasks: Vec<FailedTask> = (0..n)
        .map(|i| {
            one(
                i,
                &if i < 3 {
                    "hot".to_owned()
                } else {
                    format!("c{i:05}")
                },
            )
        })
        .collect();
    for chunk in tasks.chunks(1_000) {
        store.record_batch(chunk).await.unwrap();
    }
    let minute = minute_of(tasks[0].fail_time());
    let (hour, from, to) = (
        minute.div_euclid(60),
        minute.div_euclid(60) * 60,
        minute + 1,
    );
    let tops = stats.failure_tops(from, to).await.unwrap();
    let buckets: Vec<Bucket> = tops.iter().map(|t| t.bucket).collect();
    assert_eq!(
        buckets,
        [Bucket::Minute(minute)],
        "only the minute with failures"
    );
    let t = &tops[0];
    // 1,005 codes; 1,003 clients and codebases (`hot` has three tasks).
    let want = Untracked {
        error_codes: 5,
        task_types: 0,
        clients: 3,
        codebase_paths: 3,
    };
    assert_eq!(t.untracked, want);
    assert_eq!(t.by_client.len(), READ_PER_BUCKET + 1);
    assert_eq!(t.by_client[0], ("hot".to_owned(), 3));
    assert_eq!(t.by_codebase_path.len(), READ_PER_BUCKET + 1);
    assert_eq!(t.by_codebase_path[0], ("/projects/hot".to_owned(), 3));
    // Equal counts by name descending: the tracked clients are the first recorded.
    assert_eq!(
        t.by_client[1],
        (format!("c{:05}", TRACKED_PER_BUCKET + 1), 1)
    );
    assert_eq!(t.by_task_type.len(), 2);
    let whole = stats.failure_tops(hour * 60, hour * 60 + 60).await.unwrap();
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].bucket, Bucket::Hour(hour));
    assert_eq!(
        (whole[0].untracked, &whole[0].by_client),
        (t.untracked, &t.by_client),
        "the hour counts as its only minute"
    );
    // Removing two untracked tasks lowers the untracked counts; a tracked one frees room,
    // and a new client recorded then is tracked.
    for i in [n - 1, n - 2, 5] {
        assert!(store.remove(tasks[i].task_id()).await.unwrap());
    }
    store.record(&one(n, "newcomer")).await.unwrap();
    for (a, b) in [(from, to), (hour * 60, hour * 60 + 60)] {
        let t = &stats.failure_tops(a, b).await.unwrap()[0];
        assert_eq!(t.untracked.get(Dimension::Client), 1, "[{a}, {b})");
        assert_eq!(t.untracked.get(Dimension::CodebasePath), 1, "[{a}, {b})");
        assert!(t
            .by_codebase_path
            .contains(&("/projects/newcomer".to_owned(), 1)));
        assert_eq!(t.untracked.get(Dimension::ErrorCode), 3, "[{a}, {b})");
        assert!(
            t.by_client.contains(&("newcomer".to_owned(), 1)),
            "[{a}, {b})"
        );
        assert!(!t.by_client.iter().any(|(c, _)| c == "c00005"));
    }
}

/// Failure groups follow every write: same signature for messages that differ only in
/// numbers and ids; counts, first and last seen, clients affected, sample; an upsert that
/// changes the message moves the task to another group; removal shrinks or drops a group;
/// paging by cursor is complete; the listing's `signature` filter matches brute force.
pub async fn groups_follow_writes(store: &dyn StatusStore, stats: &dyn StatsStore) {
    use failed_tasks_domain::{ErrorPattern, ErrorSignature, GroupCursor, GroupQuery};

    let with_message = |id: &str, off: i64, client: &str, code: &str, msg: &str| {
        let mut raw = task(
            id,
            off,
            ErrorCategory::ServiceTimeout,
            "embedding",
            client,
            code,
        )
        .into_parts();
        raw.error_message = msg.to_owned();
        FailedTask::new(raw).unwrap()
    };
    // Group A: timeouts after N seconds, 3 clients. Group B: one storage error.
    let mut tasks = vec![
        with_message(
            "a1",
            1_000,
            "c1",
            "TIMEOUT_ERROR",
            "timed out after 30 s on /repo/a",
        ),
        with_message(
            "a2",
            5_000,
            "c2",
            "TIMEOUT_ERROR",
            "timed out after 45 s on /repo/b",
        ),
        with_message(
            "a3",
            3_000,
            "c1",
            "TIMEOUT_ERROR",
            "timed out after 12 s on /repo/c",
        ),
        with_message(
            "a4",
            9_000,
            "c3",
            "TIMEOUT_ERROR",
            "timed out after 99 s on /repo/d",
        ),
        with_message("b1", 7_000, "c1", "STORAGE_ERROR", "disk full"),
    ];
    for t in &tasks {
        store.record(t).await.unwrap();
    }
    let sig_a = ErrorSignature::of_task(&tasks[0]);
    let sig_b = ErrorSignature::of_task(&tasks[4]);
    assert_ne!(sig_a, sig_b);
    let first_page = |size| GroupQuery {
        page_size: PageSize::new(size, PageLimits::DEFAULT).unwrap(),
        cursor: None,
    };
    let page = stats.list_groups(&first_page(10)).await.unwrap();
    assert_eq!(page.total, 2);
    let a = &page.groups[0];
    assert_eq!(
        a.pattern.signature(),
        &sig_a,
        "group A was seen last (a4 at +9 s)"
    );
    assert_eq!(a.count, 4);
    assert_eq!(a.clients_affected, 3);
    assert_eq!(a.first_seen, tasks[0].fail_time());
    assert_eq!(a.last_seen, tasks[3].fail_time());
    assert_eq!(a.sample_task_id.as_str(), "a4");
    assert_eq!(
        a.pattern.normalised_message(),
        ErrorPattern::of_task(&tasks[0]).normalised_message()
    );
    assert_eq!(page.groups[1].count, 1);

    // a4 now fails differently (group B), a1 is removed: A shrinks, B grows and leads.
    tasks[3] = with_message("a4", 11_000, "c3", "STORAGE_ERROR", "disk full");
    store.record(&tasks[3]).await.unwrap();
    assert!(store.remove(tasks[0].task_id()).await.unwrap());
    tasks.remove(0);
    let page = stats.list_groups(&first_page(10)).await.unwrap();
    let summary: Vec<(String, u64, u64)> = page
        .groups
        .iter()
        .map(|g| {
            (
                g.pattern.signature().to_string(),
                g.count,
                g.clients_affected,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![(sig_b.to_string(), 2, 2), (sig_a.to_string(), 2, 2)]
    );
    // tasks is now [a2, a3, a4 (moved to B), b1]: group A's oldest member is a3.
    assert_eq!(page.groups[1].first_seen, tasks[1].fail_time());
    assert_eq!(page.groups[1].last_seen, tasks[0].fail_time());

    // Paging one group at a time is complete.
    let mut seen = Vec::new();
    let mut cursor: Option<GroupCursor> = None;
    loop {
        let page = stats
            .list_groups(&GroupQuery {
                page_size: PageSize::new(1, PageLimits::DEFAULT).unwrap(),
                cursor: cursor.take(),
            })
            .await
            .unwrap();
        seen.extend(page.groups.iter().map(|g| g.pattern.signature().clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, vec![sig_b.clone(), sig_a.clone()]);

    // The listing's signature filter.
    for sig in [&sig_a, &sig_b] {
        let f = TaskFilter {
            signature: Some(sig.clone()),
            ..Default::default()
        };
        let (ids, totals) = walk(store, &f, 1).await;
        assert_eq!(ids, expected(&tasks, &f));
        assert_eq!(totals[0] as usize, ids.len());
    }
    // Removing the last member drops the group.
    for t in tasks.iter().filter(|t| ErrorSignature::of_task(t) == sig_a) {
        store.remove(t.task_id()).await.unwrap();
    }
    let page = stats.list_groups(&first_page(10)).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.groups[0].pattern.signature(), &sig_b);
}

/// The stored-record page equals the decoded page field for field: for the same query, the
/// same total, cursor and skipped records, and each record, checked by
/// [`stored::Record::parse`](crate::stored::Record::parse) and rendered by its
/// `write_wire_json`, holds exactly the contract's fields with the decoded task's values
/// (`NextRetryAt` from the page's retry status). Messages with quotes, backslashes,
/// markup and non-ASCII text check the encoding. With `retries`, some tasks get a
/// scheduled retry, so `NextRetryAt` is checked with a time too.
pub async fn stored_matches_decoded(
    store: &dyn StatusStore,
    pages: &dyn StoredPages,
    retries: Option<&dyn crate::RetryStore>,
) {
    use failed_tasks_domain::RetryPlan;
    use serde_json::{json, Value};

    let mut tasks = mixed_tasks(60);
    let odd = [
        "said \"no\" and left",
        "back\\slash and /slash",
        "<script>alert(1)</script> & more",
        "ünïcödé, 日本語, emoji 🙂",
    ];
    for (i, msg) in odd.iter().enumerate() {
        let mut raw = tasks[i].clone().into_parts();
        raw.error_message = (*msg).to_owned();
        tasks[i] = FailedTask::new(raw).unwrap();
    }
    store.record_batch(&tasks).await.unwrap();
    if let Some(retries) = retries {
        let due = Timestamp::from_unix_millis(BASE_MS + 3_600_000).unwrap();
        let planned: Vec<_> = tasks
            .iter()
            .step_by(3)
            .map(|t| (t.clone(), RetryPlan::Retry { due }))
            .collect();
        retries.record_planned(&planned).await.unwrap();
    }

    let filters = [
        TaskFilter::all(),
        TaskFilter {
            category: Some(ErrorCategory::DataError),
            ..Default::default()
        },
        TaskFilter {
            client_id: Some(ClientId::parse("client2").unwrap()),
            task_type: Some(TaskType::embedding()),
            ..Default::default()
        },
        TaskFilter {
            since: Some(Timestamp::from_unix_millis(BASE_MS + 5_000).unwrap()),
            ..Default::default()
        },
    ];
    let mut compared = 0;
    for filter in &filters {
        let mut cursor = None;
        for _ in 0..1_000 {
            let q = query(filter.clone(), 7, cursor.clone());
            let decoded = store.list(&q).await.unwrap();
            let stored = pages.list_stored(&q).await.unwrap();
            assert_eq!(stored.total, decoded.total, "total for {filter:?}");
            assert_eq!(
                stored.next_cursor, decoded.next_cursor,
                "cursor for {filter:?}"
            );
            assert_eq!(stored.skipped_corrupt, decoded.skipped_corrupt);
            assert_eq!(
                stored.records.len(),
                decoded.tasks.len(),
                "page of {filter:?}"
            );
            for (i, (bytes, t)) in stored.records.iter().zip(&decoded.tasks).enumerate() {
                let record = crate::stored::Record::parse(bytes)
                    .unwrap_or_else(|e| panic!("stored record of {}: {e}", t.task_id()));
                let mut rendered = Vec::new();
                record.write_wire_json(None, &mut rendered).unwrap();
                let got: Value = serde_json::from_slice(&rendered).unwrap_or_else(|e| {
                    panic!("rendered JSON of {} is not JSON: {e}", t.task_id())
                });
                let want = json!({
                    "TaskId": t.task_id().as_str(),
                    "TaskType": t.task_type().as_str(),
                    "ClientId": t.client_id().as_str(),
                    "CodebasePath": t.codebase_path().as_str(),
                    "StartTime": t.start_time().to_rfc3339(),
                    "FailTime": t.fail_time().to_rfc3339(),
                    "ErrorCode": t.error_code().as_str(),
                    "ErrorMessage": t.error_message().as_str(),
                    "RetryCount": t.retry_count(),
                    "ProcessedFiles": t.processed_files(),
                    "ErrorCategory": t.error_category().as_str(),
                    "NextRetryAt": decoded.retry_status(i).next_retry_at().map(Timestamp::to_rfc3339),
                });
                assert_eq!(got, want, "stored JSON of {} differs", t.task_id());
                compared += 1;
            }
            match decoded.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    assert!(
        compared >= tasks.len(),
        "too few tasks compared: {compared}"
    );
}

/// Run every check of every capability `fresh`'s stores claim, but retries
/// ([`run_retries`]), each on a fresh empty store: the tasks always; statistics and groups
/// with [`Stores::stats`]; stored-record pages with [`Stores::stored`]; the notifier's store with
/// [`Stores::notify`]; the audit log with [`Stores::audit`]; replays with [`Stores::replays`];
/// failed files with [`Stores::files`] (resolve and supersede too with [`Stores::retries`]).
pub async fn run_all<F, Fut>(fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Stores>,
{
    run_checks(fresh, true).await
}

/// [`run_all`] for a store that splits its tasks over parts (shards) each with its own
/// breakdown cap, so that [`breakdowns_are_capped`]'s figures (one cap for all the tasks)
/// do not apply: every other check. Check the cap of one part with
/// [`breakdowns_are_capped_with_ids`] and ids that all fall in it.
pub async fn run_all_but_the_single_cap<F, Fut>(fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Stores>,
{
    run_checks(fresh, false).await
}

async fn run_checks<F, Fut>(mut fresh: F, single_cap: bool)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Stores>,
{
    record_get_remove(&*fresh().await.tasks).await;
    upsert_moves_every_index(&*fresh().await.tasks).await;
    filters_match_brute_force(&*fresh().await.tasks).await;
    paging_is_stable_under_writes(&*fresh().await.tasks).await;
    ties_are_ordered_by_id(&*fresh().await.tasks).await;
    let probe = fresh().await;
    if probe.stats.is_some() {
        for check in 0..3 {
            let stores = fresh().await;
            let stats = stores
                .stats
                .as_deref()
                .expect("the same adapter claims the same");
            match check {
                0 => stats_follow_writes(&*stores.tasks, stats).await,
                1 if single_cap => breakdowns_are_capped(&*stores.tasks, stats).await,
                1 => {}
                _ => groups_follow_writes(&*stores.tasks, stats).await,
            }
        }
    }
    if probe.notify.is_some() {
        for check in 0..3 {
            let stores = fresh().await;
            let store = stores
                .notify
                .as_deref()
                .expect("the same adapter claims the same");
            match check {
                0 => notify::lease_fences_writes(store).await,
                1 => notify::outbox_and_delivery(store).await,
                _ => notify::groups_walk_by_last_seen(&*stores.tasks, store).await,
            }
        }
    }
    if let Some(store) = fresh().await.audit.as_deref() {
        audit::entries_read_back_newest_first(store).await;
    }
    if let Some(store) = fresh().await.breaker.as_deref() {
        breaker::outcomes_add_up_per_second(store).await;
    }
    if let Some(store) = fresh().await.breaker.as_deref() {
        breaker::states_and_lease(store).await;
    }
    if probe.replays.is_some() {
        for check in 0..3 {
            let stores = fresh().await;
            let store = stores
                .replays
                .as_deref()
                .expect("the same adapter claims the same");
            match check {
                0 => replays::replays_read_back(store).await,
                1 => replays::progress_only_while_running(store).await,
                _ => replays::lease_has_one_holder(store).await,
            }
        }
    }
    if probe.files.is_some() {
        let stores = fresh().await;
        let files = stores
            .files
            .as_deref()
            .expect("the same adapter claims the same");
        files::stored_paged_and_replaced(&*stores.tasks, files).await;
        let stores = fresh().await;
        if let (Some(files), Some(retries)) = (stores.files.as_deref(), stores.retries.as_deref()) {
            files::gone_when_resolved_or_superseded(&*stores.tasks, retries, files).await;
        }
    }
    if probe.stored.is_some() {
        for with_retries in [false, true] {
            let stores = fresh().await;
            let pages = stores
                .stored
                .as_deref()
                .expect("the same adapter claims the same");
            let retries = stores.retries.as_deref().filter(|_| with_retries);
            stored_matches_decoded(&*stores.tasks, pages, retries).await;
        }
    }
}
