//! `record_batch` (one `record_many` script call per batch) must leave exactly what recording
//! the same tasks one by one leaves, on a single server and on a cluster.

use failed_tasks_domain::TaskFilter;
use failed_tasks_store::conformance::{mixed_tasks, walk};
use failed_tasks_store::{RecordOutcome, StatusStore};
use failed_tasks_testkit::{RedisCluster, RedisServer};

use crate::helpers;

async fn check(url: &str) {
    let batched = helpers::store(url).await;
    let single = helpers::store(url).await;
    // 250 tasks. Then 60 of those ids with new fail times plus 60 new
    // ids, in one batch that ends with an id repeated in its old form (the later copy wins,
    // as with two `record` calls).
    let tasks = mixed_tasks(250);
    let outcomes = batched.record_batch(&tasks).await.unwrap();
    assert_eq!(outcomes, vec![RecordOutcome::Created; 250]);
    for t in &tasks {
        single.record(t).await.unwrap();
    }
    let mut second: Vec<_> = mixed_tasks(310)[190..].to_vec();
    assert_ne!(second[0], tasks[190], "the update must change the task");
    second.push(tasks[190].clone());
    let outcomes = batched.record_batch(&second).await.unwrap();
    assert_eq!(outcomes[..60], vec![RecordOutcome::Updated; 60][..]);
    assert_eq!(outcomes[60..120], vec![RecordOutcome::Created; 60][..]);
    assert_eq!(outcomes[120], RecordOutcome::Updated);
    for t in &second {
        single.record(t).await.unwrap();
    }
    for filter in [
        TaskFilter::all(),
        TaskFilter {
            category: Some(tasks[3].error_category()),
            ..TaskFilter::all()
        },
        TaskFilter {
            client_id: Some(tasks[5].client_id().clone()),
            task_type: Some(tasks[5].task_type().clone()),
            ..TaskFilter::all()
        },
    ] {
        let a = walk(&batched, &filter, 37).await;
        let b = walk(&single, &filter, 37).await;
        assert!(!a.0.is_empty());
        assert_eq!(a, b, "{filter:?}");
    }
    assert_eq!(batched.record_batch(&[]).await.unwrap(), vec![]);
    // Larger than one script call may be: refused whole, nothing stored.
    let too_many = mixed_tasks(failed_tasks_redis::store::MAX_BATCH + 1);
    assert!(matches!(
        batched.record_batch(&too_many).await,
        Err(failed_tasks_store::StoreError::Rejected(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_batch_equals_one_by_one_on_a_single_server() {
    let server = RedisServer::start();
    check(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_batch_equals_one_by_one_on_a_cluster() {
    let cluster = RedisCluster::start();
    check(&cluster.url()).await;
}

/// The read fast path serves exactly the tasks, totals and cursors of `list`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_stored_matches_list() {
    use failed_tasks_domain::{ListQuery, PageLimits, PageSize};
    use failed_tasks_store::{stored, StoredPages};
    let server = RedisServer::start();
    let store = helpers::store(&server.url()).await;
    let tasks = mixed_tasks(300);
    store.record_batch(&tasks).await.unwrap();
    let limits = PageLimits::new(50, 1000).unwrap();
    for filter in [
        TaskFilter::all(),
        TaskFilter {
            category: Some(tasks[3].error_category()),
            ..TaskFilter::all()
        },
        TaskFilter {
            client_id: Some(tasks[5].client_id().clone()),
            task_type: Some(tasks[5].task_type().clone()),
            ..TaskFilter::all()
        },
    ] {
        let mut query = ListQuery {
            filter: filter.clone(),
            page_size: PageSize::new(40, limits).unwrap(),
            cursor: None,
        };
        for _ in 0..20 {
            let page = store.list(&query).await.unwrap();
            let json = store.list_stored(&query).await.unwrap();
            assert_eq!(json.total, page.total);
            assert_eq!(json.next_cursor, page.next_cursor);
            let ids: Vec<String> = json
                .records
                .iter()
                .map(|b| stored::Record::parse(b).unwrap().task_id().to_owned())
                .collect();
            let want: Vec<String> = page.tasks.iter().map(|t| t.task_id().to_string()).collect();
            assert_eq!(ids, want, "{filter:?}");
            match page.next_cursor {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
    }
}
