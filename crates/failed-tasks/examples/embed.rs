//! How a Rust service embeds the failed-task store with the one `failed-tasks` crate:
//! record a failure, read it back, and take its retry as a worker does.
//!
//! ```text
//! FAILED_TASKS_REDIS_URL=redis://127.0.0.1:6379 cargo run -p failed-tasks --example embed
//! ```
//!
//! Without `FAILED_TASKS_REDIS_URL` it runs on the in-memory store. The crate's tests run
//! [`run`] against a private redis-server (and in memory), so this file stays true.

use std::time::{Duration, Instant};

use failed_tasks::{
    FailedTask, FailedTasks, ListQuery, NewFailedTask, PageLimits, Resolve, RetryNow, RetryRequest,
    Timestamp,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // One line: the store, its retention janitor and the retry scheduler.
    let failures = match std::env::var("FAILED_TASKS_REDIS_URL") {
        Ok(url) => FailedTasks::redis(url).await?,
        Err(_) => FailedTasks::memory(),
    };
    let report = run(&failures, "task_042").await?;
    println!(
        "{} retried (attempt {}) and {:?}",
        report.retried.task_id, report.retried.attempt, report.resolved
    );
    // Stops the janitor and the scheduler (dropping `failures` does too, without waiting).
    failures.shutdown().await;
    Ok(())
}

/// What [`run`] saw.
#[derive(Debug)]
pub struct Report {
    /// The ids of the first page of failed tasks, after recording.
    pub listed: Vec<String>,
    /// The retry request the worker claimed.
    pub retried: RetryRequest,
    /// What resolving the task did.
    pub resolved: Resolve,
}

/// Record the failure of task `id`, read it back, retry it now, claim the retry as a worker
/// (waiting at most 10 s for the scheduler to hand it out), and resolve it.
pub async fn run(failures: &FailedTasks, id: &str) -> Result<Report, Error> {
    // 1. The failure, validated: an empty id, a fail time before the start or an 8 KiB+
    //    message is a ValidationError naming the field. No category: it is classified
    //    from the error code (TIMEOUT_ERROR -> service_timeout, retried by the policy).
    let now = Timestamp::now();
    let task = FailedTask::new(NewFailedTask {
        task_id: id.into(),
        task_type: "embedding".into(),
        client_id: "client123".into(),
        codebase_path: "/projects/myapp".into(),
        start_time: Timestamp::from_unix_millis(now.unix_millis() - 30_000)?,
        fail_time: now,
        error_code: "TIMEOUT_ERROR".into(),
        error_message: "embedding service did not answer within 30 s".into(),
        retry_count: 0,
        processed_files: 75,
        error_category: None,
    })?;

    // 2. Record it: an upsert by TaskId, with its retry scheduled by the policy.
    let outcome = failures.record_failure(&task).await?;
    println!("recorded {id}: {outcome:?}");

    // 3. Read it back, as the HTTP API does.
    let page = failures
        .list_failed(&ListQuery::first_page(PageLimits::DEFAULT))
        .await?;
    let listed = page.tasks.iter().map(|t| t.task_id().to_string()).collect();
    let (stored, details) = failures.get_failed_with_retries(task.task_id()).await?;
    println!(
        "{} {} failed at {} ({}), retry: {:?}",
        stored.task_id(),
        stored.task_type(),
        stored.fail_time(),
        stored.error_category(),
        details.status
    );

    // 4. A worker. An operator's "retry now" makes the retry due at once (the policy
    //    scheduled it later); the scheduler hands it to the workers' queue.
    let worker = failures
        .retry_worker(&format!("example-{}", std::process::id()))
        .await?;
    match failures.retry_now(task.task_id(), Timestamp::now()).await? {
        RetryNow::Scheduled { attempt } => println!("retry {attempt} of {id} is due now"),
        other => return Err(format!("retry now answered {other:?}").into()),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let retried = loop {
        if Instant::now() >= deadline {
            return Err("the retry was not handed out within 10 s".into());
        }
        let mut claimed = worker.queue().reclaim_stale(worker.lease(), 10).await?;
        claimed.extend(worker.queue().claim(10, Duration::from_millis(500)).await?);
        let ours = claimed
            .iter()
            .find(|d| d.request.task_id == *task.task_id());
        let ours = ours.map(|d| d.request.clone());
        // 5. "Run the task again"; here it succeeds: resolve it, then acknowledge. (A
        //    failure is recorded again with RetryCount = the request's attempt, which
        //    schedules the next retry or makes it final: RetryRequest::failed_again.)
        if let Some(request) = ours {
            let ids: Vec<String> = claimed.iter().map(|d| d.id.clone()).collect();
            let resolved = failures.resolve(&request.task_id, Timestamp::now()).await?;
            worker.queue().ack(&ids).await?;
            break (request, resolved);
        }
    };
    let (retried, resolved) = retried;
    Ok(Report {
        listed,
        retried,
        resolved,
    })
}
