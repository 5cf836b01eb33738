//! The in-memory adapter against the shared conformance checks, plus what is particular to it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::sync::Arc;

use failed_tasks_domain::{ErrorCategory, ListQuery, PageLimits};
use failed_tasks_store::conformance::{self, task};
use failed_tasks_store::{Capability, MemoryStore, StatusStore, Stores};

mod retention;

#[tokio::test]
async fn memory_store_passes_conformance() {
    conformance::run_all(|| async { Stores::from(MemoryStore::new()) }).await;
    conformance::run_retries(|| async {
        let store = MemoryStore::new();
        let (a, b) = (store.retry_queue(), store.retry_queue());
        (store, a, b)
    })
    .await;
}

#[test]
fn memory_store_claims_tasks_statistics_and_retries() {
    let stores = Stores::from(MemoryStore::new());
    assert_eq!(stores.name, "memory");
    assert_eq!(
        stores.capabilities(),
        [
            Capability::Writes,
            Capability::Statistics,
            Capability::Retries,
            Capability::Notifications,
            Capability::Audit,
            Capability::Breaker,
            Capability::Replays,
            Capability::Files
        ],
        "the memory store keeps decoded tasks: no stored-JSON pages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_recorders_lose_nothing() {
    let store = Arc::new(MemoryStore::new());
    let mut handles = Vec::new();
    for w in 0..16 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..500 {
                // Ids repeat across workers: 16 workers share 2000 ids.
                let id = format!("id{}", (w * 500 + i) % 2000);
                let cat = ErrorCategory::ALL[(w + i) % 5];
                store
                    .record(&task(
                        &id,
                        (i as i64) * 10,
                        cat,
                        "embedding",
                        &format!("c{w}"),
                        "X",
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    assert_eq!(store.len(), 2000);
    let (ids, _) = conformance::walk(store.as_ref(), &Default::default(), 1000).await;
    assert_eq!(ids.len(), 2000);
    let mut per_category = 0;
    for c in ErrorCategory::ALL {
        let f = failed_tasks_domain::TaskFilter {
            category: Some(c),
            ..Default::default()
        };
        let (ids, _) = conformance::walk(store.as_ref(), &f, 1000).await;
        per_category += ids.len();
    }
    assert_eq!(
        per_category, 2000,
        "category indexes disagree with the records"
    );
    let page = store
        .list(&ListQuery::first_page(PageLimits::DEFAULT))
        .await
        .unwrap();
    assert_eq!(page.total, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_claim_is_woken_by_the_scheduler() {
    use failed_tasks_domain::{RetryPlan, Timestamp};
    use failed_tasks_store::{RetryQueue, RetryStore};
    use std::time::Duration;

    let store = Arc::new(MemoryStore::new());
    let queue = store.retry_queue();
    let waiting = tokio::spawn(async move { queue.claim(10, Duration::from_secs(30)).await });
    let t = task(
        "w1",
        0,
        ErrorCategory::ServiceTimeout,
        "embedding",
        "c",
        "X",
    );
    let due = Timestamp::from_unix_millis(conformance::BASE_MS).unwrap();
    store
        .record_planned(&[(t, RetryPlan::Retry { due })])
        .await
        .unwrap();
    // The claim may start before or after the delivery; either way it gets the request,
    // long before its 30 s block would end.
    assert_eq!(store.deliver_due(due, 10).await.unwrap().moved, 1);
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the claim was woken")
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].request.task_id.as_str(), "w1");
}

/// The memory store keeps at most `audit_max_len` audit entries: the oldest leave.
#[tokio::test]
async fn the_memory_audit_log_keeps_its_cap() {
    use failed_tasks_store::audit::{AuditAction, AuditEntry, AuditQuery};
    use failed_tasks_store::{AuditStore, MemoryConfig, Retention};
    let store = MemoryStore::with_config(MemoryConfig {
        retention: Retention {
            audit_max_len: 3,
            ..Retention::default()
        },
        ..MemoryConfig::default()
    });
    for i in 0..5u64 {
        let entry = AuditEntry {
            time: failed_tasks_domain::Timestamp::from_unix_millis(1_000 * i as i64).unwrap(),
            actor: "a".into(),
            action: AuditAction::Remove,
            target: format!("t{i}"),
            reason: None,
            count: 1,
            request_id: None,
        };
        store.audit_append(&entry).await.unwrap();
    }
    let page = store.audit_list(&AuditQuery::newest(10)).await.unwrap();
    let targets: Vec<&str> = page.entries.iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, ["t4", "t3", "t2"]);
}
