//! How an embedder service records a failure and reads it back, through any store.
//!
//! Run: `cargo run -p failed-tasks-query --example record_failure`
//!
//! The store here is the in-memory one; in production pass a
//! `failed_tasks_redis::RedisStore` (`RedisStore::connect(RedisConfig { url, .. }).await?`)
//! instead: the service and the calls stay the same.

use failed_tasks_domain::{FailedTask, ListQuery, NewFailedTask, PageLimits, Timestamp};
use failed_tasks_query::{Deadlines, FailedTaskService, QueryError, Stores};
use failed_tasks_store::MemoryStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let service = FailedTaskService::new(Stores::from(MemoryStore::new()), Deadlines::default());

    // 1. Build the failure. Invalid input (an empty id, a fail time before the start, an
    //    8 KiB+ message, ...) is a ValidationError naming the field, never a panic.
    let started = Timestamp::parse_rfc3339("StartTime", "2025-01-24T09:00:00Z")?;
    let failed = Timestamp::parse_rfc3339("FailTime", "2025-01-24T09:15:00Z")?;
    let task = FailedTask::new(NewFailedTask {
        task_id: "task_042".into(),
        task_type: "embedding".into(),
        client_id: "client123".into(),
        codebase_path: "/projects/myapp".into(),
        start_time: started,
        fail_time: failed,
        error_code: "TIMEOUT_ERROR".into(),
        error_message: "embedding service did not answer within 30 s".into(),
        retry_count: 0,
        processed_files: 75,
        // None: classified from the error code (TIMEOUT_ERROR -> service_timeout).
        error_category: None,
    })?;

    // 2. Record it. Recording the same TaskId again (the next retry failing) updates it.
    let outcome = service.record_failure(&task).await?;
    println!("recorded {}: {outcome:?}", task.task_id());

    // 3. Read it back, the way the HTTP API does.
    let page = service
        .list_failed(&ListQuery::first_page(PageLimits::DEFAULT))
        .await?;
    for t in &page.tasks {
        println!(
            "{} {} failed at {} ({}: {})",
            t.task_id(),
            t.task_type(),
            t.fail_time(),
            t.error_category(),
            t.error_code()
        );
    }

    // 4. Store trouble is typed: Unavailable (retry later) vs Internal (look at the logs).
    match service.get_failed(task.task_id()).await {
        Ok(t) => println!(
            "found {} with {} files processed",
            t.task_id(),
            t.processed_files()
        ),
        Err(QueryError::Unavailable { reason, .. }) => eprintln!("store down: {reason}"),
        Err(e) => eprintln!("lookup failed: {e}"),
    }
    Ok(())
}
