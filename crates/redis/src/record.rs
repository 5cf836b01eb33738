//! The stored form of one failed task.
//!
//! A record is one Redis string: a header line, `\n`, then the task as JSON in the
//! contract's wire form (docs/CONTRACT.md section 1: PascalCase names, RFC 3339 times), so a
//! reader that wants to serve bytes can slice after the first `\n` without re-encoding.
//!
//! The header is `v3\tMEMBER\tCATEGORY\tTASK_TYPE\tCLIENT_ID\tERROR_CODE\tSIGNATURE\t
//! STATE\tATTEMPT\tDUE_MS\tBY\tCODEBASE_PATH\tRUN_BY`: what the Lua scripts need to find
//! every index entry, counter, group and scheduled retry of the record, and to build a retry
//! request, without decoding JSON, parsing times or normalising messages in Lua. `STATE` is
//! the retry state (`s` scheduled, `f` final, `n` recorded without a plan, `c` cancelled),
//! `ATTEMPT` the next attempt (`RetryCount + 1`), `DUE_MS` and `BY` (`policy`/`operator`) the
//! scheduled retry's due time and scheduler (empty unless `s`), `RUN_BY` who scheduled the
//! attempt that failed (`policy`, `operator` or `-`; the record script fills it in, from
//! the record it replaces). Tabs and newlines cannot
//! occur in those values (the domain rejects control characters in ids, types, codes and
//! paths; a signature is 16 hex digits). The JSON ends with `"NextRetryAt":…}`, the field
//! the retry scripts rewrite in place.
//!
//! Records written by earlier versions carry a `v2` header (the first seven fields) or a
//! `v1` header (without `SIGNATURE`): they are still read (never scheduled: unscheduled),
//! and the scripts still un-index them; `v1` records were never counted in the statistics
//! or the groups (see `docs/redis-layout.md`).

use failed_tasks_domain::{
    AttemptRecord, ErrorCategory, ErrorCode, ErrorSignature, FailedTask, NewFailedTask, NextRetry,
    RetryStatus, ScheduledBy, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::layout::task_member;

/// The header's version tag written now.
const HEADER_VERSION: &str = "v3";

/// Whether `tag` (the header's first field) is a version this code reads.
pub(crate) fn is_known_version(tag: &[u8]) -> bool {
    tag == b"v3" || tag == b"v2" || tag == b"v1"
}

/// The header's retry state letter of a status; `cancelled` tells a cancelled retry from a
/// failure recorded without a plan (both unscheduled).
pub(crate) fn state_letter(status: &RetryStatus, cancelled: bool) -> &'static str {
    match status {
        RetryStatus::Scheduled(_) => "s",
        RetryStatus::Final => "f",
        RetryStatus::Unscheduled if cancelled => "c",
        RetryStatus::Unscheduled => "n",
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WireOut<'a> {
    task_id: &'a str,
    task_type: &'a str,
    client_id: &'a str,
    codebase_path: &'a str,
    start_time: String,
    fail_time: String,
    error_code: &'a str,
    error_message: &'a str,
    retry_count: u32,
    processed_files: u64,
    error_category: &'a str,
    /// Last: the retry scripts rewrite it in place (`,"NextRetryAt":…}` ends every record).
    next_retry_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireIn {
    task_id: String,
    task_type: String,
    client_id: String,
    codebase_path: String,
    start_time: String,
    fail_time: String,
    error_code: String,
    error_message: String,
    retry_count: u32,
    processed_files: u64,
    error_category: String,
    /// Present in `v3` records; the header is the source of the retry status.
    #[serde(default)]
    #[allow(dead_code)]
    next_retry_at: Option<String>,
}

/// The task in the contract's JSON wire form with its `NextRetryAt` (one line, no trailing
/// newline).
pub(crate) fn to_wire_json(task: &FailedTask, status: &RetryStatus) -> String {
    let out = WireOut {
        task_id: task.task_id().as_str(),
        task_type: task.task_type().as_str(),
        client_id: task.client_id().as_str(),
        codebase_path: task.codebase_path().as_str(),
        start_time: task.start_time().to_rfc3339(),
        fail_time: task.fail_time().to_rfc3339(),
        error_code: task.error_code().as_str(),
        error_message: task.error_message().as_str(),
        retry_count: task.retry_count(),
        processed_files: task.processed_files(),
        error_category: task.error_category().as_str(),
        next_retry_at: status.next_retry_at().map(Timestamp::to_rfc3339),
    };
    // Serializing a struct of strings and integers cannot fail; keep a valid fallback anyway.
    serde_json::to_string(&out).unwrap_or_else(|_| "{}".to_owned())
}

/// The header line's fields after the version, in the order the scripts read them.
pub(crate) fn header_fields(
    task: &FailedTask,
    signature: &ErrorSignature,
    status: &RetryStatus,
) -> [String; 12] {
    let (due, by) = match status.next() {
        Some(n) => (n.due.unix_millis().to_string(), n.by.as_str().to_owned()),
        None => (String::new(), String::new()),
    };
    [
        task_member(task),
        task.error_category().as_str().to_owned(),
        task.task_type().as_str().to_owned(),
        task.client_id().as_str().to_owned(),
        task.error_code().as_str().to_owned(),
        signature.as_str().to_owned(),
        state_letter(status, false).to_owned(),
        task.retry_count().saturating_add(1).to_string(),
        due,
        by,
        task.codebase_path().as_str().to_owned(),
        // Filled in by the record script from the record it replaces.
        "-".to_owned(),
    ]
}

/// The whole stored value: header, `\n`, wire JSON. `signature` must be the task's
/// ([`ErrorSignature::of_task`]); the caller computes it once for the header and the script.
pub(crate) fn encode(
    task: &FailedTask,
    signature: &ErrorSignature,
    status: &RetryStatus,
) -> String {
    let mut out = String::with_capacity(512);
    out.push_str(HEADER_VERSION);
    for f in header_fields(task, signature, status) {
        out.push('\t');
        out.push_str(&f);
    }
    out.push('\n');
    out.push_str(&to_wire_json(task, status));
    out
}

/// The retry status a header names: `v3` headers carry it, older ones were never scheduled.
/// `None` when a `v3` header's retry fields do not make sense.
pub(crate) fn header_status(header: &str) -> Option<RetryStatus> {
    let fields: Vec<&str> = header.split('\t').collect();
    if fields.first() != Some(&"v3") {
        return Some(RetryStatus::Unscheduled);
    }
    if fields.len() != 13 {
        return None;
    }
    match fields[7] {
        "s" => {
            let attempt = fields[8].parse().ok()?;
            let due = Timestamp::from_unix_millis(fields[9].parse().ok()?).ok()?;
            let by = ScheduledBy::parse(fields[10]).ok()?;
            Some(RetryStatus::Scheduled(NextRetry { attempt, due, by }))
        }
        "f" => Some(RetryStatus::Final),
        "n" | "c" => Some(RetryStatus::Unscheduled),
        _ => None,
    }
}

/// The wire JSON part of a stored value (everything after the header line).
pub(crate) fn json_part(stored: &str) -> Option<&str> {
    let (header, json) = stored.split_once('\n')?;
    let tag = header.split('\t').next()?;
    is_known_version(tag.as_bytes()).then_some(json)
}

/// Decode wire JSON into a validated task; the error says what is wrong.
pub(crate) fn decode_wire_json(json: &str) -> Result<FailedTask, String> {
    let w: WireIn = serde_json::from_str(json).map_err(|e| format!("bad task JSON: {e}"))?;
    let category = ErrorCategory::parse(&w.error_category).map_err(|e| e.to_string())?;
    let start = Timestamp::parse_rfc3339("StartTime", &w.start_time).map_err(|e| e.to_string())?;
    let fail = Timestamp::parse_rfc3339("FailTime", &w.fail_time).map_err(|e| e.to_string())?;
    FailedTask::new(NewFailedTask {
        task_id: w.task_id,
        task_type: w.task_type,
        client_id: w.client_id,
        codebase_path: w.codebase_path,
        start_time: start,
        fail_time: fail,
        error_code: w.error_code,
        error_message: w.error_message,
        retry_count: w.retry_count,
        processed_files: w.processed_files,
        error_category: Some(category),
    })
    .map_err(|e| format!("invalid task: {e}"))
}

/// Decode a stored value; the error says what is wrong.
pub(crate) fn decode(stored: &str) -> Result<FailedTask, String> {
    decode_with_status(stored).map(|(task, _)| task)
}

/// The newest failed attempt a `v3` header names (the record's own failure): its attempt
/// (`ATTEMPT - 1`), fail time (from the member), error code, category and who scheduled it.
pub(crate) fn header_attempt(header: &str) -> Option<AttemptRecord> {
    let f: Vec<&str> = header.split('\t').collect();
    if f.first() != Some(&"v3") || f.len() != 13 {
        return None;
    }
    let attempt = f[8].parse::<u32>().ok()?.checked_sub(1)?;
    let fail_ms = f[1].get(..crate::layout::MS_DIGITS)?.parse().ok()?;
    Some(AttemptRecord {
        attempt,
        fail_time: Timestamp::from_unix_millis(fail_ms).ok()?,
        error_code: ErrorCode::parse(f[5]).ok()?,
        error_category: ErrorCategory::parse(f[2]).ok()?,
        scheduled_by: match f[12] {
            "-" => None,
            by => Some(ScheduledBy::parse(by).ok()?),
        },
    })
}

/// Decode a stored value and its retry status; the error says what is wrong.
pub(crate) fn decode_with_status(stored: &str) -> Result<(FailedTask, RetryStatus), String> {
    let json = json_part(stored).ok_or_else(|| "missing v1/v2/v3 header line".to_owned())?;
    let header = stored.split_once('\n').map_or("", |(h, _)| h);
    let status =
        header_status(header).ok_or_else(|| "malformed retry fields in the header".to_owned())?;
    Ok((decode_wire_json(json)?, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wire_names() {
        let due = Timestamp::from_unix_millis(1_737_710_108_250).unwrap();
        let statuses = [
            RetryStatus::Scheduled(NextRetry {
                attempt: 4,
                due,
                by: ScheduledBy::Operator,
            }),
            RetryStatus::Final,
            RetryStatus::Unscheduled,
        ];
        for (t, status) in FailedTask::seed_examples().into_iter().zip(statuses) {
            let stored = encode(&t, &ErrorSignature::of_task(&t), &status);
            assert!(stored.starts_with("v3\t"), "{stored}");
            assert_eq!(decode_with_status(&stored), Ok((t.clone(), status)));
            let json = json_part(&stored).unwrap();
            // The retry scripts rely on this ending.
            let tail = match status.next_retry_at() {
                Some(at) => format!(",\"NextRetryAt\":\"{at}\"}}"),
                None => ",\"NextRetryAt\":null}".to_owned(),
            };
            assert!(json.ends_with(&tail), "{json}");
            let json = json_part(&stored).unwrap();
            assert!(json.starts_with("{\"TaskId\":\""), "{json}");
            assert!(json.contains("\"FailTime\":\"2025-01-24T"), "{json}");
            assert!(json.contains("\"ErrorCategory\":\""), "{json}");
        }
    }

    #[test]
    fn malformed_values_are_errors() {
        let t = &FailedTask::seed_examples()[0];
        let good = encode(t, &ErrorSignature::of_task(t), &RetryStatus::Final);
        let bad = [
            "".to_owned(),
            "not json".to_owned(),
            "v1\tx\n{}".to_owned(),
            good.replace("service_timeout", "sometimes"),
            good.replace("\"RetryCount\":3", "\"RetryCount\":\"3\""),
            good.replace("2025-01-24T09:15:00Z", "yesterday"),
            good.replacen("\tf\t", "\ts\t", 1),
            good.replacen("\tf\t", "\tz\t", 1),
        ];
        for b in bad {
            assert!(decode(&b).is_err(), "{b:?}");
        }
    }
}
