//! Deterministic test data: failed tasks for our store, status records for the Go layout.

use failed_tasks_domain::{
    ErrorCategory, FailedTask, JitterRng, NewFailedTask, RetryPlan, RetryPolicy,
};

const TYPES: [&str; 3] = ["embedding", "indexing", "cleaning"];

/// (error code, category, message) triples; messages ~100 bytes like real driver errors.
const ERRORS: [(&str, ErrorCategory, &str); 5] = [
    (
        "TIMEOUT_ERROR",
        ErrorCategory::ServiceTimeout,
        "vector embedding service timed out: no response within 30 s for batch",
    ),
    (
        "PERMISSION_DENIED",
        ErrorCategory::Authorization,
        "permission denied while reading the codebase: token lacks the repo:read scope for",
    ),
    (
        "STORAGE_ERROR",
        ErrorCategory::ResourceExhausted,
        "not enough disk space left on the vector store volume to write segment",
    ),
    (
        "INVALID_FORMAT",
        ErrorCategory::DataError,
        "file could not be parsed: invalid UTF-8 sequence at byte offset in chunk",
    ),
    (
        "INTERNAL_ERROR",
        ErrorCategory::SystemError,
        "internal error in the chunker worker: panic while splitting the file into chunk",
    ),
];

/// The `i`-th failed task. Fail times grow with `i` (3 ms apart from `base_ms`), so the
/// newest tasks are the last recorded, as in a live system.
/// The id of the `i`-th benchmark task.
pub fn task_id(i: u64) -> String {
    format!("task-{i:08}")
}

pub fn task(i: u64, base_ms: i64) -> anyhow::Result<FailedTask> {
    let (code, category, message) = ERRORS[(i % 5) as usize];
    let fail = base_ms + (i as i64) * 3;
    Ok(FailedTask::new(NewFailedTask {
        task_id: task_id(i),
        task_type: TYPES[(i % 3) as usize].to_owned(),
        client_id: format!("client-{:03}", i % 50),
        codebase_path: format!("/projects/team-{:02}/repo-{:04}", i % 17, i % 1000),
        start_time: failed_tasks_domain::Timestamp::saturating_from_unix_millis(
            fail - 60_000 - (i % 600) as i64 * 1000,
        ),
        fail_time: failed_tasks_domain::Timestamp::saturating_from_unix_millis(fail),
        error_code: code.to_owned(),
        error_message: format!("{message} {}", i % 997),
        retry_count: (i % 4) as u32,
        processed_files: i % 500,
        error_category: Some(category),
    })?)
}

/// Tasks `from..to`.
pub fn tasks(from: u64, to: u64, base_ms: i64) -> anyhow::Result<Vec<FailedTask>> {
    (from..to).map(|i| task(i, base_ms)).collect()
}

/// Tasks `from..to` with the retry plans the default policy gives them (seeded by `from`),
/// as the server records them.
pub fn planned(from: u64, to: u64, base_ms: i64) -> anyhow::Result<Vec<(FailedTask, RetryPlan)>> {
    let policy = RetryPolicy::default();
    let mut jitter = JitterRng::new(from);
    Ok(tasks(from, to, base_ms)?
        .into_iter()
        .map(|t| {
            let plan = RetryPlan::of(&policy, &t, jitter.next_unit());
            (t, plan)
        })
        .collect())
}

/// The Go service's key of request `i`.
pub fn go_key(i: u64) -> String {
    format!("request:id:req-{i:08}")
}

/// The Go service's status record of request `i`: one in 20 (5 %) failed.
pub fn go_record(i: u64) -> String {
    let process = match i % 20 {
        0 => "failed",
        1..=4 => "running",
        _ => "success",
    };
    format!(
        r#"{{"process":"{process}","totalProgress":{},"fileList":[{{"path":"src/module_{}/main.go","status":"done","operate":"add"}},{{"path":"src/module_{}/util.go","status":"done","operate":"modify"}},{{"path":"README.md","status":"pending","operate":"add"}}]}}"#,
        i % 100,
        i % 31,
        i % 29
    )
}
