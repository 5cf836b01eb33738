//! The janitor: trimming by age and count, archiving first, one trim under two janitors.

use std::collections::HashSet;
use std::time::Duration;

use failed_tasks_domain::{ErrorCategory, FailedTask, NewFailedTask, TaskId};
use failed_tasks_redis::RedisStore;
use failed_tasks_store::StatusStore;
use failed_tasks_testkit::RedisServer;

use crate::helpers;

const NOW: i64 = 1_750_000_000_000;
const HOUR: i64 = 3_600_000;

fn task_at(id: &str, fail_ms: i64, i: usize) -> FailedTask {
    FailedTask::new(NewFailedTask {
        task_id: id.into(),
        task_type: ["embedding", "indexing"][i % 2].into(),
        client_id: format!("client{}", i % 3),
        codebase_path: "/p".into(),
        start_time: failed_tasks_domain::Timestamp::from_unix_millis(fail_ms - 1000).unwrap(),
        fail_time: failed_tasks_domain::Timestamp::from_unix_millis(fail_ms).unwrap(),
        error_code: "TIMEOUT_ERROR".into(),
        error_message: "slow".into(),
        retry_count: 0,
        processed_files: 1,
        error_category: Some(ErrorCategory::ALL[i % 5]),
    })
    .unwrap()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ft-archive-{}-{name}-{}",
        std::process::id(),
        helpers::unique_prefix().replace(['{', '}'], "")
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn archived_ids(dir: &std::path::Path) -> Vec<String> {
    let mut ids = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return ids;
    };
    for e in entries {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("audit-") {
            continue;
        }
        assert!(
            name.starts_with("failed-tasks-") && name.ends_with(".jsonl"),
            "{name}"
        );
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("archive line is JSON");
            ids.push(v["TaskId"].as_str().expect("TaskId").to_owned());
            assert!(v["FailTime"].as_str().unwrap().ends_with('Z'));
        }
    }
    ids
}

async fn assert_no_leftovers(store: &RedisStore, url: &str, live: usize) {
    let raw = helpers::raw(url).await;
    let prefix = &store.config().key_prefix;
    let keys = helpers::keys_of(&raw, prefix).await;
    let records = keys.iter().filter(|k| k.contains(":task:")).count();
    assert_eq!(records, live, "records left");
    let mut index_entries = 0u64;
    for k in keys.iter().filter(|k| k.contains(":idx:")) {
        let n: u64 = helpers::cmd(&raw, prefix, "ZCARD", vec![k.as_str().into()]).await;
        index_entries += n;
    }
    // all, category, type, client, code, signature, retry state
    assert_eq!(index_entries, 7 * live as u64, "index entries left");
    // Attempt histories and failed files only of live records.
    for h in keys
        .iter()
        .filter(|k| k.contains(":hist:") || k.contains(":files:"))
    {
        let record = h.replace(":hist:", ":task:").replace(":files:", ":task:");
        assert!(keys.contains(&record), "{h} outlived its record");
    }
}

/// Store three failed files for `t`.
async fn put_files(store: &RedisStore, t: &FailedTask) {
    use failed_tasks_store::FilesStore;
    let files = failed_tasks_store::conformance::files::files_of("src", 3);
    assert!(store.put_files(t.task_id(), &files).await.unwrap());
}

/// How many tasks have failed files stored (checking that as many retry entries are).
async fn files_keys(store: &RedisStore, url: &str) -> usize {
    let raw = helpers::raw(url).await;
    let prefix = &store.config().key_prefix;
    let keys = helpers::keys_of(&raw, prefix).await;
    let n = keys.iter().filter(|k| k.contains(":files:")).count();
    let entries: usize = helpers::cmd(
        &raw,
        prefix,
        "HLEN",
        vec![format!("{prefix}:retry:files").into()],
    )
    .await;
    assert_eq!(entries, n, "retry entries of failed files left");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trims_by_age_and_archives_first() {
    let server = RedisServer::start();
    let dir = temp_dir("age");
    let mut config = helpers::config(&server.url());
    config.retention.max_age = Duration::from_millis(10 * HOUR as u64);
    config.archive_dir = Some(dir.clone());
    let store = helpers::store_with(config).await;
    // 30 tasks one hour apart: the 20 older than 10 h go.
    for i in 0..30 {
        let t = task_at(&format!("t{i:02}"), NOW - (i as i64) * HOUR - 1, i);
        store.record(&t).await.unwrap();
        put_files(&store, &t).await;
    }
    let report = store.trim_once(NOW).await.unwrap();
    assert!(!report.locked_out);
    assert_eq!(report.removed_by_age, 20);
    assert_eq!(report.removed_by_count, 0);
    assert_eq!(report.archived, 20);
    let mut ids = archived_ids(&dir);
    ids.sort();
    let want: Vec<String> = (10..30).map(|i| format!("t{i:02}")).collect();
    assert_eq!(ids, want);
    assert!(store
        .get(&TaskId::parse("t15").unwrap())
        .await
        .unwrap()
        .is_none());
    assert!(store
        .get(&TaskId::parse("t05").unwrap())
        .await
        .unwrap()
        .is_some());
    assert_no_leftovers(&store, &server.url(), 10).await;
    assert_eq!(files_keys(&store, &server.url()).await, 10);
    // A second run finds nothing.
    let again = store.trim_once(NOW).await.unwrap();
    assert_eq!(again.removed_by_age + again.removed_by_count, 0);
    // The run is in the audit log once, as the janitor's, and in the audit archive.
    use failed_tasks_store::audit::{AuditAction, AuditQuery, AuditStore};
    let log = store.audit_list(&AuditQuery::newest(10)).await.unwrap();
    let trims: Vec<_> = log
        .entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action, e.count))
        .collect();
    assert_eq!(trims, [("janitor", AuditAction::Trim, 20)]);
    let day = failed_tasks_domain::Timestamp::from_unix_millis(NOW)
        .unwrap()
        .to_rfc3339()[..10]
        .to_owned();
    let archived = std::fs::read_to_string(dir.join(format!("audit-{day}.jsonl"))).unwrap();
    let lines: Vec<serde_json::Value> = archived
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["Actor"], "janitor");
    assert_eq!(lines[0]["Action"], "trim");
    assert_eq!(lines[0]["Count"], 20);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trims_by_count_oldest_first() {
    let server = RedisServer::start();
    let mut config = helpers::config(&server.url());
    config.retention.max_count = 10;
    let store = helpers::store_with(config).await;
    for i in 0..25 {
        let t = task_at(&format!("c{i:02}"), NOW - (i as i64) * 1000, i);
        store.record(&t).await.unwrap();
        put_files(&store, &t).await;
    }
    let report = store.trim_once(NOW).await.unwrap();
    assert_eq!(report.removed_by_count, 15);
    assert_eq!(report.archived, 0, "no archive configured");
    let (ids, totals) =
        failed_tasks_store::conformance::walk(&store, &failed_tasks_domain::TaskFilter::all(), 100)
            .await;
    let want: Vec<String> = (0..10).map(|i| format!("c{i:02}")).collect();
    assert_eq!(ids, want);
    assert_eq!(totals, vec![10]);
    assert_no_leftovers(&store, &server.url(), 10).await;
    assert_eq!(files_keys(&store, &server.url()).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_janitors_trim_each_task_once() {
    let server = RedisServer::start();
    let dir = temp_dir("two");
    let mut config = helpers::config(&server.url());
    config.retention.max_age = Duration::from_millis(HOUR as u64);
    config.archive_dir = Some(dir.clone());
    let a = helpers::store_with(config.clone()).await;
    let b = helpers::store_with(config).await;
    // 1,200 old tasks: more than two batches of 500.
    let writes = (0..1200).map(|i| {
        let a = a.clone();
        async move {
            let t = task_at(&format!("old{i:04}"), NOW - 2 * HOUR - i as i64, i);
            a.record(&t).await.unwrap();
        }
    });
    futures_util::future::join_all(writes).await;
    a.record(&task_at("fresh", NOW - 1, 0)).await.unwrap();

    let (ra, rb) = tokio::join!(a.trim_once(NOW), b.trim_once(NOW));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.removed_by_age + rb.removed_by_age, 1200, "{ra:?} {rb:?}");
    assert_eq!(ra.archived + rb.archived, 1200, "{ra:?} {rb:?}");
    let ids = archived_ids(&dir);
    assert_eq!(ids.len(), 1200);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        1200,
        "archived twice"
    );
    assert_no_leftovers(&a, &server.url(), 1).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_janitor_runs_on_its_interval() {
    let server = RedisServer::start();
    let mut config = helpers::config(&server.url());
    config.retention.max_count = 3;
    config.retention.janitor_interval = Duration::from_millis(50);
    let store = helpers::store_with(config).await;
    let now = failed_tasks_store_now();
    for i in 0..8 {
        store
            .record(&task_at(&format!("j{i}"), now - i as i64 * 1000, i))
            .await
            .unwrap();
    }
    let janitor = store.spawn_janitor();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let page = store
            .list(&failed_tasks_domain::ListQuery::first_page(
                Default::default(),
            ))
            .await
            .unwrap();
        if page.total == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "janitor did not trim"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    janitor.stop();
}

fn failed_tasks_store_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The audit log is one capped stream on the first shard (`XADD MAXLEN ~`: trimmed in whole
/// stream nodes of 100 entries, so about the cap), with 4 shards too; it reads back newest
/// first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_one_capped_stream() {
    use failed_tasks_store::audit::{AuditAction, AuditEntry, AuditQuery};
    use failed_tasks_store::AuditStore;
    let redis = RedisServer::start();
    let mut config = helpers::config(&redis.url());
    config.retention.audit_max_len = 50;
    config.shards = 4;
    let prefix = config.key_prefix.clone();
    let store = helpers::store_with(config).await;
    for i in 0..1000i64 {
        let entry = AuditEntry {
            time: failed_tasks_domain::Timestamp::from_unix_millis(NOW + i).unwrap(),
            actor: "alice".into(),
            action: AuditAction::Remove,
            target: format!("t{i}"),
            reason: None,
            count: 1,
            request_id: None,
        };
        store.audit_append(&entry).await.unwrap();
    }
    let raw = helpers::raw(&redis.url()).await;
    let streams: Vec<String> = helpers::keys_of(&raw, "")
        .await
        .into_iter()
        .filter(|k| k.ends_with(":audit"))
        .collect();
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert!(
        streams[0].starts_with(&prefix[..prefix.len() - 1]),
        "{streams:?}"
    );
    let len: i64 = helpers::cmd(&raw, &streams[0], "XLEN", vec![streams[0].as_str().into()]).await;
    assert!(
        (50..=150).contains(&len),
        "{len} entries kept for a cap of 50"
    );
    let page = store
        .audit_list(&AuditQuery {
            since: None,
            until: None,
            actor: Some("alice".into()),
            action: None,
            page_size: 3,
            cursor: None,
        })
        .await
        .unwrap();
    let targets: Vec<&str> = page.entries.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["t999", "t998", "t997"]);
    assert!(page.next_cursor.is_some());
}
