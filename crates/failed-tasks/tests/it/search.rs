//! Search (`q`, `pathPrefix`) compared with a brute-force filter over the same data, on the
//! memory store, one Redis and 16 shards: pattern hits (the groups way), concrete-text hits
//! (the walk), each combined with every other filter, paged to the end at several sizes
//! with no duplicate or gap; and the bulk removal of a search's matches.

use std::collections::HashSet;

use failed_tasks::domain::{
    ClientId, Cursor, ErrorCode, ErrorPattern, ErrorSignature, PageSize, PathPrefix, RetryState,
    SearchText, TaskType,
};
use failed_tasks::query::SearchWay;
use failed_tasks::{
    FailedTask, FailedTasks, ListQuery, NewFailedTask, PageLimits, RedisConfig, TaskFilter,
    Timestamp,
};
use failed_tasks_testkit::RedisServer;

const MESSAGES: [(&str, &str); 6] = [
    ("TIMEOUT_ERROR", "context deadline exceeded after {n}s"),
    ("AUTH_ERROR", "permission denied for token 7f3a{n}c9e"),
    (
        "DATA_ERROR",
        "file /projects/foo/src/m{n}.rs: invalid UTF-8 at byte {n}",
    ),
    ("TIMEOUT_ERROR", "向量嵌入服务超时，请求超过{n}秒未响应"),
    (
        "RESOURCE_EXHAUSTED",
        "Out of memory while embedding chunk {n}",
    ),
    (
        "TIMEOUT_ERROR",
        "Deadline of the upstream \"svc-{n}\" passed",
    ),
];
const PATHS: [&str; 5] = [
    "/projects/foo",
    "/projects/foo/sub/dir",
    "/projects/foobar",
    "/srv/other",
    "/projects/Foo",
];

/// 240 failures: six kinds of message (groups), five paths, three clients, two types, some
/// ties in `FailTime`.
fn tasks() -> Vec<FailedTask> {
    let now = Timestamp::now().unix_millis();
    (0..240)
        .map(|i: usize| {
            let (code, template) = MESSAGES[i % MESSAGES.len()];
            let at = Timestamp::from_unix_millis(now - 1000 * (i as i64 / 2) - 5000).unwrap();
            FailedTask::new(NewFailedTask {
                task_id: format!("job-{i:04}"),
                task_type: ["embedding", "indexing"][i % 2].into(),
                client_id: format!("client{}", i % 3),
                codebase_path: PATHS[i % PATHS.len()].into(),
                start_time: at,
                fail_time: at,
                error_code: code.into(),
                error_message: template.replace("{n}", &(i * 7).to_string()),
                ..NewFailedTask::default()
            })
            .unwrap()
        })
        .collect()
}

/// What the search should find, the way it says it went: the groups way selects whole
/// groups by pattern, the walk checks each task.
fn expected(tasks: &[FailedTask], f: &TaskFilter, way: SearchWay) -> Vec<String> {
    expected_within(tasks, f, way, None)
}

/// [`expected`] among the tasks `listed` (the store's listing of the other filters, which
/// knows the retry states) when given.
fn expected_within(
    tasks: &[FailedTask],
    f: &TaskFilter,
    way: SearchWay,
    listed: Option<&HashSet<String>>,
) -> Vec<String> {
    let base = f.without_search();
    let mut hits: Vec<&FailedTask> = tasks
        .iter()
        .filter(|t| base.matches(t))
        .filter(|t| listed.is_none_or(|l| l.contains(t.task_id().as_str())))
        .filter(|t| match (way, &f.text) {
            (SearchWay::Groups, Some(q)) => q.matches_pattern(&ErrorPattern::of_task(t)),
            (_, Some(q)) => q.matches(t),
            (_, None) => true,
        })
        .filter(|t| {
            f.path_prefix
                .as_ref()
                .is_none_or(|p| p.contains(t.codebase_path().as_str()))
        })
        .collect();
    hits.sort_by_key(|t| t.sort_key());
    hits.iter().map(|t| t.task_id().to_string()).collect()
}

/// Every page of `f` at `size`: the ids in order, the way of each page.
async fn pages(failures: &FailedTasks, f: &TaskFilter, size: u32) -> (Vec<String>, Vec<SearchWay>) {
    let mut ids = Vec::new();
    let mut ways = Vec::new();
    let mut cursor: Option<Cursor> = None;
    for _ in 0..10_000 {
        let query = ListQuery {
            filter: f.clone(),
            page_size: PageSize::new(size, PageLimits::DEFAULT).unwrap(),
            cursor: cursor.take(),
        };
        let found = failures.search_failed(&query).await.unwrap();
        assert!(found.page.tasks.len() <= size as usize);
        ways.push(found.way);
        ids.extend(found.page.tasks.iter().map(|t| t.task_id().to_string()));
        match found.page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return (ids, ways),
        }
    }
    panic!("{f:?} did not end");
}

fn q(text: &str) -> Option<SearchText> {
    Some(SearchText::parse(text).unwrap())
}

/// Each search with the way it must take.
fn cases(tasks: &[FailedTask]) -> Vec<(TaskFilter, SearchWay)> {
    let sig = ErrorSignature::of_task(&tasks[0]);
    let ts = |ms: i64| Some(Timestamp::from_unix_millis(ms).unwrap());
    let newest = tasks[0].fail_time().unix_millis();
    let texts = [
        ("deadline", SearchWay::Groups),
        ("超时", SearchWay::Groups),
        ("AUTH_E", SearchWay::Groups),
        ("job-01", SearchWay::Walk),
        ("/projects/foo", SearchWay::Walk),
        ("7F3A7", SearchWay::Walk),
        ("svc-", SearchWay::Walk),
        ("no such text", SearchWay::Walk),
    ];
    let mut out = Vec::new();
    for (text, way) in texts {
        let plain = TaskFilter {
            text: q(text),
            ..TaskFilter::default()
        };
        let others = [
            TaskFilter::default(),
            TaskFilter {
                category: Some(tasks[0].error_category()),
                ..TaskFilter::default()
            },
            TaskFilter {
                task_type: Some(TaskType::parse("indexing").unwrap()),
                ..TaskFilter::default()
            },
            TaskFilter {
                client_id: Some(ClientId::parse("client1").unwrap()),
                ..TaskFilter::default()
            },
            TaskFilter {
                error_code: Some(ErrorCode::parse("TIMEOUT_ERROR").unwrap()),
                ..TaskFilter::default()
            },
            TaskFilter {
                since: ts(newest - 60_000),
                until: ts(newest - 10_000),
                ..TaskFilter::default()
            },
            TaskFilter {
                retry: Some(RetryState::Scheduled),
                ..TaskFilter::default()
            },
            TaskFilter {
                path_prefix: Some(PathPrefix::parse("/projects/foo").unwrap()),
                ..TaskFilter::default()
            },
        ];
        for other in others {
            let f = TaskFilter {
                text: plain.text.clone(),
                ..other
            };
            // A category or code that rules out every group the text names leaves none.
            let named = tasks.iter().any(|t| {
                f.category.is_none_or(|c| c == t.error_category())
                    && f.error_code.as_ref().is_none_or(|c| c == t.error_code())
                    && f.text
                        .as_ref()
                        .is_some_and(|q| q.matches_pattern(&ErrorPattern::of_task(t)))
            });
            let way = if named { way } else { SearchWay::Walk };
            out.push((f, way));
        }
    }
    // The signature filter: a walk within its group.
    out.push((
        TaskFilter {
            text: q("deadline"),
            signature: Some(sig),
            ..TaskFilter::default()
        },
        SearchWay::Walk,
    ));
    // pathPrefix alone, on a directory boundary.
    for dir in [
        "/projects/foo",
        "/projects/foo/",
        "/projects",
        "/",
        "/srv/other/x",
    ] {
        out.push((
            TaskFilter {
                path_prefix: Some(PathPrefix::parse(dir).unwrap()),
                ..TaskFilter::default()
            },
            SearchWay::Walk,
        ));
    }
    out
}

async fn check(failures: &FailedTasks) {
    let tasks = tasks();
    failures.record_failures(&tasks).await.unwrap();
    for (f, way) in cases(&tasks) {
        let (listed, _) = pages(failures, &f.without_search(), 1000).await;
        let listed: HashSet<String> = listed.into_iter().collect();
        let want = expected_within(&tasks, &f, way, Some(&listed));
        for size in [1, 7, 100] {
            let (ids, ways) = pages(failures, &f, size).await;
            assert!(ways.iter().all(|w| *w == way), "{f:?}: ways {ways:?}");
            let unique: HashSet<&String> = ids.iter().collect();
            assert_eq!(unique.len(), ids.len(), "{f:?} size {size}: a duplicate");
            assert_eq!(ids, want, "{f:?} size {size}");
        }
        // The groups way counts every match; the listing shows the same.
        let first = failures
            .search_failed(&ListQuery {
                filter: f.clone(),
                ..ListQuery::first_page(PageLimits::DEFAULT)
            })
            .await
            .unwrap();
        if way == SearchWay::Groups && f.path_prefix.is_none() {
            assert_eq!(first.page.total as usize, want.len(), "{f:?}");
        }
        let listed = failures
            .list_failed(&ListQuery {
                filter: f.clone(),
                ..ListQuery::first_page(PageLimits::DEFAULT)
            })
            .await
            .unwrap();
        assert_eq!(listed.tasks, first.page.tasks, "{f:?}");
    }
    // A "deadline" pattern selects two groups: "context deadline …" and "Deadline of …".
    let deadline = TaskFilter {
        text: q("DeadLine"),
        ..TaskFilter::default()
    };
    assert_eq!(
        expected(&tasks, &deadline, SearchWay::Groups).len(),
        tasks.len() / 3
    );
    // The bulk removal takes the search's filters: exactly its matches go.
    let gone = TaskFilter {
        text: q("job-00"),
        path_prefix: Some(PathPrefix::parse("/projects/foo").unwrap()),
        ..TaskFilter::default()
    };
    let want = expected(&tasks, &gone, SearchWay::Walk);
    assert!(!want.is_empty());
    let removed = failures.remove_matching(&gone).await.unwrap();
    assert_eq!(
        (removed.removed, removed.complete),
        (want.len() as u64, true)
    );
    let (left, _) = pages(failures, &TaskFilter::default(), 1000).await;
    let left: HashSet<String> = left.into_iter().collect();
    for t in &tasks {
        let id = t.task_id().to_string();
        assert_eq!(left.contains(&id), !want.contains(&id), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_matches_brute_force_in_memory() {
    let failures = FailedTasks::memory();
    check(&failures).await;
    failures.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_matches_brute_force_on_redis_with_1_and_16_shards() {
    let redis = RedisServer::start();
    for (shards, prefix) in [(1, "{one}"), (16, "{sixteen}")] {
        let failures = FailedTasks::builder()
            .redis(RedisConfig {
                url: redis.url(),
                shards,
                key_prefix: prefix.into(),
                ..Default::default()
            })
            .start()
            .await
            .unwrap();
        check(&failures).await;
        failures.shutdown().await;
    }
}
