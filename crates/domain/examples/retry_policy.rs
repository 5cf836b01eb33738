//! An embedder's retry loop around a task, driven by [`RetryPolicy`].
//!
//! Run with `cargo run -p failed-tasks-domain --example retry_policy`. The "work" is
//! simulated: one task times out twice and then succeeds, one is refused for lack of
//! permission (never retried), one keeps timing out until the policy gives up. A real
//! embedder would record each final failure in the failed-task store.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use failed_tasks_domain::retry::{JitterRng, RetryConfig, RetryDecision, RetryPolicy};
use failed_tasks_domain::{ErrorCategory, ValidationError};

/// What one attempt of the simulated work returns on failure.
struct Failure {
    code: &'static str,
    message: String,
}

/// Run `attempt` until it succeeds or the policy says give up; the final failure, if any.
fn run_with_retries(
    policy: &RetryPolicy,
    rng: &mut JitterRng,
    name: &str,
    mut attempt: impl FnMut(u32) -> Result<(), Failure>,
) -> Option<Failure> {
    let mut retry_count = 0;
    loop {
        let failure = match attempt(retry_count) {
            Ok(()) => {
                println!("{name}: succeeded after {retry_count} retries");
                return None;
            }
            Err(f) => f,
        };
        // Reporters that do not know the category let the classifier guess it.
        let category = ErrorCategory::classify(failure.code);
        match policy.decide(category, failure.code, retry_count, rng.next_unit()) {
            RetryDecision::RetryAfter(delay) => {
                println!(
                    "{name}: {} ({category}): {}; retry {} in {delay:?}",
                    failure.code,
                    failure.message,
                    retry_count + 1
                );
                std::thread::sleep(delay);
                retry_count += 1;
            }
            RetryDecision::GiveUp(reason) => {
                println!(
                    "{name}: {} ({category}): {}; final failure: {reason}",
                    failure.code, failure.message
                );
                return Some(failure);
            }
        }
    }
}

fn main() -> Result<(), ValidationError> {
    // Milliseconds instead of seconds so the example finishes at once; the shape is the
    // default policy's (×2 per retry, ±20 % jitter, capped).
    let policy = RetryPolicy::new(RetryConfig {
        max_retries: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        ..RetryConfig::default()
    })?;

    // Seed differently in every process so that workers do not retry in lockstep.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id());
    let mut rng = JitterRng::new(seed);

    let timeout = |n: u32| Failure {
        code: "TIMEOUT_ERROR",
        message: format!("向量嵌入服务超时，请求超过30秒未响应 (attempt {})", n + 1),
    };

    run_with_retries(&policy, &mut rng, "task_001", |n| {
        if n < 2 {
            Err(timeout(n))
        } else {
            Ok(())
        }
    });
    run_with_retries(&policy, &mut rng, "task_002", |_| {
        Err(Failure {
            code: "PERMISSION_DENIED",
            message: "没有权限访问指定代码库".to_owned(),
        })
    });
    let last = run_with_retries(&policy, &mut rng, "task_003", |n| Err(timeout(n)));
    if let Some(f) = last {
        println!(
            "task_003: record it as failed with RetryCount 4 and {}",
            f.code
        );
    }
    Ok(())
}
