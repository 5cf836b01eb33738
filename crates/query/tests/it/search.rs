//! A search walk cut by its budget answers an incomplete page whose cursor continues after
//! the last task examined; continuing finds every match once.

use std::time::Duration;

use failed_tasks_domain::{
    Cursor, FailedTask, ListQuery, NewFailedTask, PageLimits, PageSize, SearchText, TaskFilter,
    Timestamp,
};
use failed_tasks_query::{Deadlines, FailedTaskService, SearchWay, WALK_BATCH};
use failed_tasks_store::{MemoryStore, Stores};

fn task(i: usize) -> FailedTask {
    let at = Timestamp::from_unix_millis(1_737_709_200_000 + i as i64 * 1000).unwrap();
    FailedTask::new(NewFailedTask {
        task_id: format!("t{i:05}"),
        task_type: "embedding".into(),
        client_id: "c1".into(),
        codebase_path: "/projects/a".into(),
        start_time: at,
        fail_time: at,
        error_code: "TIMEOUT_ERROR".into(),
        error_message: format!("upstream answered 5{:02} on try {i}", i % 100),
        ..NewFailedTask::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_walk_out_of_budget_answers_incomplete_and_its_cursor_continues() {
    let tasks: Vec<FailedTask> = (0..3 * WALK_BATCH as usize).map(task).collect();
    let store = MemoryStore::new();
    let service = FailedTaskService::new(Stores::from(store), Deadlines::default())
        .with_search_budget(Duration::ZERO);
    service.record_failures(&tasks).await.unwrap();
    // "517" is in one message of a hundred: only a walk finds it.
    let filter = TaskFilter {
        text: Some(SearchText::parse("517").unwrap()),
        ..TaskFilter::default()
    };
    let mut want: Vec<&FailedTask> = tasks.iter().filter(|t| filter.matches(t)).collect();
    want.sort_by_key(|t| t.sort_key());
    let want: Vec<String> = want.iter().map(|t| t.task_id().to_string()).collect();
    assert!(want.len() >= 10, "{want:?}");

    let mut found = Vec::new();
    let mut cursor: Option<Cursor> = None;
    let mut incomplete = 0;
    for _ in 0..1000 {
        let page = service
            .search_failed(&ListQuery {
                filter: filter.clone(),
                page_size: PageSize::new(5, PageLimits::DEFAULT).unwrap(),
                cursor: cursor.take(),
            })
            .await
            .unwrap();
        assert_eq!(page.way, SearchWay::Walk);
        if !page.complete {
            incomplete += 1;
            assert!(
                page.page.next_cursor.is_some(),
                "an incomplete page goes on"
            );
        }
        found.extend(page.page.tasks.iter().map(|t| t.task_id().to_string()));
        match page.page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert!(incomplete > 0, "the zero budget never cut a walk");
    assert_eq!(found, want);
}
