//! A Rust retry worker on [`RedisRetryQueue`]: claim due retries, run them, report, ack.
//!
//! ```text
//! FAILED_TASKS_REDIS_URL=redis://127.0.0.1:6379 cargo run -p failed-tasks-redis --example retry_worker
//! ```
//!
//! It joins the consumer group of the default settings (`embedders` on
//! `{failed-tasks}:retries`) as `worker-<pid>`, takes over requests a dead worker left once
//! their lease ran out, then waits for new ones, for at most a minute. The "work" here only
//! prints the request; a real worker runs the task again and then reports the outcome: a
//! success with `FailedTaskService::resolve` (or `POST …/admin/failed-tasks/{id}/resolve`),
//! a failure by recording it again with `RetryCount` = the request's `Attempt`
//! (`RetryRequest::failed_again` builds it), which schedules the next retry or makes the task
//! final. Requests can arrive twice (after a reclaim): `(TaskId, Attempt)` is the
//! idempotency key.

use std::time::{Duration, Instant};

use failed_tasks_redis::{RedisConfig, RedisRetryQueue};
use failed_tasks_store::RetryQueue;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = RedisConfig {
        url: std::env::var("FAILED_TASKS_REDIS_URL").unwrap_or_else(|_| RedisConfig::default().url),
        ..RedisConfig::default()
    };
    let me = format!("worker-{}", std::process::id());
    let queue = RedisRetryQueue::connect(&config, &me).await?;
    if !queue.wait_connected(Duration::from_secs(5)).await {
        return Err(format!("cannot reach {}", config.url).into());
    }
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        let mut batch = queue.reclaim_stale(queue.lease(), 100).await?;
        batch.extend(queue.claim(100, Duration::from_secs(5)).await?);
        for d in &batch {
            let r = &d.request;
            println!(
                "{} attempt {} of {} ({}), due {}, by {}{}",
                r.task_id,
                r.attempt,
                r.task_type,
                r.error_category,
                r.due_at,
                r.scheduled_by,
                if d.deliveries > 1 {
                    ", redelivered"
                } else {
                    ""
                }
            );
        }
        let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
        queue.ack(&ids).await?;
    }
    Ok(())
}
