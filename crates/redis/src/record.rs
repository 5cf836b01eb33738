//! The stored form of one failed task.
//!
//! A record is one Redis string: a header line, `\n`, then the task as JSON in the
//! contract's wire form (docs/CONTRACT.md section 1: PascalCase names, RFC 3339 times), so a
//! reader that wants to serve bytes can slice after the first `\n` without re-encoding.
//!
//! The header is `v2\tMEMBER\tCATEGORY\tTASK_TYPE\tCLIENT_ID\tERROR_CODE\tSIGNATURE`: what
//! the Lua scripts need to find every index entry, counter and group of the record without
//! decoding JSON, parsing times or normalising messages in Lua. Tabs and newlines cannot
//! occur in those values (the domain rejects control characters in ids, types and codes; a
//! signature is 16 hex digits). Records written by earlier versions carry a `v1` header
//! (the same without `SIGNATURE`): they are still read, and the scripts still un-index them,
//! but they were never counted in the statistics or the groups (see `docs/redis-layout.md`).

use failed_tasks_domain::{ErrorCategory, ErrorSignature, FailedTask, NewFailedTask, Timestamp};
use serde::{Deserialize, Serialize};

use crate::layout::task_member;

/// The header's version tag written now.
const HEADER_VERSION: &str = "v2";

/// Whether `tag` (the header's first field) is a version this code reads.
pub(crate) fn is_known_version(tag: &[u8]) -> bool {
    tag == b"v2" || tag == b"v1"
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
}

/// The task in the contract's JSON wire form (one line, no trailing newline).
pub(crate) fn to_wire_json(task: &FailedTask) -> String {
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
    };
    // Serializing a struct of strings and integers cannot fail; keep a valid fallback anyway.
    serde_json::to_string(&out).unwrap_or_else(|_| "{}".to_owned())
}

/// The header line's fields after the version, in the order the scripts read them.
pub(crate) fn header_fields(task: &FailedTask, signature: &ErrorSignature) -> [String; 6] {
    [
        task_member(task),
        task.error_category().as_str().to_owned(),
        task.task_type().as_str().to_owned(),
        task.client_id().as_str().to_owned(),
        task.error_code().as_str().to_owned(),
        signature.as_str().to_owned(),
    ]
}

/// The whole stored value: header, `\n`, wire JSON. `signature` must be the task's
/// ([`ErrorSignature::of_task`]); the caller computes it once for the header and the script.
pub(crate) fn encode(task: &FailedTask, signature: &ErrorSignature) -> String {
    let mut out = String::with_capacity(512);
    out.push_str(HEADER_VERSION);
    for f in header_fields(task, signature) {
        out.push('\t');
        out.push_str(&f);
    }
    out.push('\n');
    out.push_str(&to_wire_json(task));
    out
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
        start_time_ms: start.unix_millis(),
        fail_time_ms: fail.unix_millis(),
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
    let json = json_part(stored).ok_or_else(|| "missing v1/v2 header line".to_owned())?;
    decode_wire_json(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wire_names() {
        for t in FailedTask::seed_examples() {
            let stored = encode(&t, &ErrorSignature::of_task(&t));
            assert!(stored.starts_with("v2\t"), "{stored}");
            assert_eq!(decode(&stored), Ok(t.clone()));
            let json = json_part(&stored).unwrap();
            assert!(json.starts_with("{\"TaskId\":\""), "{json}");
            assert!(json.contains("\"FailTime\":\"2025-01-24T"), "{json}");
            assert!(json.contains("\"ErrorCategory\":\""), "{json}");
        }
    }

    #[test]
    fn malformed_values_are_errors() {
        let t = &FailedTask::seed_examples()[0];
        let good = encode(t, &ErrorSignature::of_task(t));
        let bad = [
            "".to_owned(),
            "not json".to_owned(),
            "v1\tx\n{}".to_owned(),
            good.replace("service_timeout", "sometimes"),
            good.replace("\"RetryCount\":3", "\"RetryCount\":\"3\""),
            good.replace("2025-01-24T09:15:00Z", "yesterday"),
        ];
        for b in bad {
            assert!(decode(&b).is_err(), "{b:?}");
        }
    }
}
