//! Request bodies of the admin API: one task or an array of tasks, validated field by field
//! so every error names the field (and the item) that is wrong.

use failed_tasks_domain::{
    ErrorCategory, FailedTask, FilesError, NewFailedFile, NewFailedTask, TaskFiles, TaskType,
    Timestamp, ValidationError,
};
use serde_json::{Map, Value};

/// Most tasks accepted in one request.
pub const MAX_BATCH: usize = 1000;

const FIELDS: [&str; 13] = [
    "TaskId",
    "TaskType",
    "ClientId",
    "CodebasePath",
    "StartTime",
    "FailTime",
    "ErrorCode",
    "ErrorMessage",
    "RetryCount",
    "ProcessedFiles",
    "ErrorCategory",
    "FailedFiles",
    "Files",
];

/// The fields of one entry of `Files`.
const FILE_FIELDS: [&str; 4] = ["Path", "Operation", "ErrorCode", "ErrorMessage"];

/// One recorded failure as a body carries it: the task and the files that failed, if it
/// names them (`FailedFiles`, `Files`).
pub type TaskWithFiles = (FailedTask, Option<TaskFiles>);

/// Parse a body holding one task object or an array of 1..=1000 of them. All or nothing:
/// the first invalid item rejects the whole body. The number of `Files` of a task is not
/// limited here: [`too_many_files`] checks it against the setting (a 413).
pub fn parse_tasks(body: &[u8]) -> Result<Vec<TaskWithFiles>, ValidationError> {
    one_or_many(body, "task", |obj| {
        Ok((parse_task(obj)?, parse_files(obj)?))
    })
}

/// The first task of `tasks` listing more than `limit` files, as the error that names the
/// limit (`[2].Files` in a batch).
pub fn too_many_files(tasks: &[TaskWithFiles], limit: usize) -> Option<(String, FilesError)> {
    tasks.iter().enumerate().find_map(|(i, (_, f))| {
        let got = f.as_ref()?.files()?.len();
        let field = if tasks.len() == 1 {
            "Files".to_owned()
        } else {
            format!("[{i}].Files")
        };
        (got > limit).then_some((field, FilesError::TooMany { got, limit }))
    })
}

/// `FailedFiles` and `Files` of one task object; `None` when it has neither.
fn parse_files(obj: &Map<String, Value>) -> Result<Option<TaskFiles>, ValidationError> {
    let count = count(obj, "FailedFiles", u64::MAX)?;
    let files = match obj.get("Files") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| parse_file(i, item))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(ValidationError::new("Files", "must be an array of files")),
    };
    TaskFiles::new(count, files, usize::MAX, "").map_err(|e| match e {
        FilesError::Invalid(e) => e,
        // No limit here: the caller checks it.
        other @ FilesError::TooMany { .. } => ValidationError::new("Files", other.to_string()),
    })
}

fn parse_file(i: usize, item: &Value) -> Result<NewFailedFile, ValidationError> {
    let at = |name: &str| format!("Files[{i}].{name}");
    let Value::Object(obj) = item else {
        return Err(ValidationError::new(
            format!("Files[{i}]"),
            "must be a file object",
        ));
    };
    if let Some(unknown) = obj.keys().find(|k| !FILE_FIELDS.contains(&k.as_str())) {
        return Err(ValidationError::new(
            at(unknown),
            format!("unknown field; known ones are {}", FILE_FIELDS.join(", ")),
        ));
    }
    let field = |name: &str| text(obj, name).map_err(|e| e.for_field(at(name)));
    Ok(NewFailedFile {
        path: field("Path")?.ok_or_else(|| missing(&at("Path")))?,
        operation: field("Operation")?.ok_or_else(|| missing(&at("Operation")))?,
        error_code: field("ErrorCode")?.ok_or_else(|| missing(&at("ErrorCode")))?,
        error_message: field("ErrorMessage")?.unwrap_or_default(),
    })
}

/// A body holding one `noun` object or an array of 1..=[`MAX_BATCH`] of them, each read by
/// `one`; an item's error names it (`[3].TaskType`). All or nothing.
fn one_or_many<T>(
    body: &[u8],
    noun: &str,
    one: impl Fn(&Map<String, Value>) -> Result<T, ValidationError>,
) -> Result<Vec<T>, ValidationError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ValidationError::new("body", format!("is not valid JSON ({e})")))?;
    match value {
        Value::Object(obj) => Ok(vec![one(&obj)?]),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ValidationError::new(
                    "body",
                    format!("the array holds no {noun}"),
                ));
            }
            if items.len() > MAX_BATCH {
                return Err(ValidationError::new(
                    "body",
                    format!(
                        "the array holds {} {noun}s; at most {MAX_BATCH} are accepted",
                        items.len()
                    ),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Object(obj) => one(obj)
                        .map_err(|e| ValidationError::new(format!("[{i}].{}", e.field), e.reason)),
                    _ => Err(ValidationError::new(
                        format!("[{i}]"),
                        format!("must be a {noun} object"),
                    )),
                })
                .collect()
        }
        _ => Err(ValidationError::new(
            "body",
            format!("must be a {noun} object or an array of them"),
        )),
    }
}

/// Parse success reports (`POST …/admin/task-successes`): `{"TaskType", "ClientId",
/// "CodebasePath", "Time"}` (`Time` defaults to `now`; `CodebasePath` is required and not
/// empty) or an array of up to 1000 of them; all or nothing.
pub fn parse_successes(
    body: &[u8],
    now: Timestamp,
) -> Result<Vec<failed_tasks_domain::TaskSuccess>, ValidationError> {
    use failed_tasks_domain::{ClientId, CodebasePath, TaskSuccess};
    const FIELDS: [&str; 4] = ["TaskType", "ClientId", "CodebasePath", "Time"];
    one_or_many(body, "success", |obj| {
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(ValidationError::new(
                unknown.clone(),
                format!("unknown field; known ones are {}", FIELDS.join(", ")),
            ));
        }
        let task_type =
            TaskType::parse(text(obj, "TaskType")?.ok_or_else(|| missing("TaskType"))?)?;
        let client_id =
            ClientId::parse(text(obj, "ClientId")?.ok_or_else(|| missing("ClientId"))?)?;
        let codebase_path = CodebasePath::parse(
            text(obj, "CodebasePath")?.ok_or_else(|| missing("CodebasePath"))?,
        )?;
        let time = time(obj, "Time")?.unwrap_or(now);
        TaskSuccess::new(task_type, client_id, codebase_path, time)
    })
}

fn parse_task(obj: &Map<String, Value>) -> Result<FailedTask, ValidationError> {
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ValidationError::new(
            unknown.clone(),
            format!("unknown field; known ones are {}", FIELDS.join(", ")),
        ));
    }
    // Checked in the contract's field order, so the first problem reported is predictable.
    let required = |field: &str| match text(obj, field)? {
        Some(s) if s.is_empty() => Err(ValidationError::new(field, "must not be empty")),
        Some(s) => Ok(s),
        None => Err(missing(field)),
    };
    let task_id = required("TaskId")?;
    let task_type = required("TaskType")?;
    let client_id = required("ClientId")?;
    let codebase_path = text(obj, "CodebasePath")?.unwrap_or_default();
    let start_time = time(obj, "StartTime")?;
    let fail_time = time(obj, "FailTime")?.ok_or_else(|| missing("FailTime"))?;
    let error_code = required("ErrorCode")?;
    let error_message = text(obj, "ErrorMessage")?.unwrap_or_default();
    let retry_count = count(obj, "RetryCount", u64::from(u32::MAX))?.unwrap_or(0);
    let processed_files = count(obj, "ProcessedFiles", u64::MAX)?.unwrap_or(0);
    let error_category = match text(obj, "ErrorCategory")? {
        Some(c) => Some(ErrorCategory::parse(&c).map_err(|e| e.for_field("ErrorCategory"))?),
        None => None,
    };
    FailedTask::new(NewFailedTask {
        task_id,
        task_type,
        client_id,
        codebase_path,
        start_time: start_time.unwrap_or(fail_time),
        fail_time,
        error_code,
        error_message,
        retry_count: u32::try_from(retry_count).unwrap_or(u32::MAX),
        processed_files,
        error_category,
    })
}

/// Parse attempt reports: `{"TaskType": "embedding", "Count": 120, "At": "...Z"}` (At
/// defaults to `now`) or an array of up to 1000 of them; all or nothing.
pub fn parse_attempts(
    body: &[u8],
    now: Timestamp,
) -> Result<Vec<(TaskType, u64, Timestamp)>, ValidationError> {
    const FIELDS: [&str; 3] = ["TaskType", "Count", "At"];
    let one = |obj: &Map<String, Value>| -> Result<(TaskType, u64, Timestamp), ValidationError> {
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(ValidationError::new(
                unknown.clone(),
                "unknown field; known ones are TaskType, Count, At",
            ));
        }
        let task_type =
            TaskType::parse(text(obj, "TaskType")?.ok_or_else(|| missing("TaskType"))?)?;
        let count = count(obj, "Count", 1_000_000_000)?.ok_or_else(|| missing("Count"))?;
        let at = time(obj, "At")?.unwrap_or(now);
        Ok((task_type, count, at))
    };
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ValidationError::new("body", format!("is not valid JSON ({e})")))?;
    match value {
        Value::Object(obj) => Ok(vec![one(&obj)?]),
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_BATCH => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(obj) => one(obj)
                    .map_err(|e| ValidationError::new(format!("[{i}].{}", e.field), e.reason)),
                _ => Err(ValidationError::new(format!("[{i}]"), "must be an object")),
            })
            .collect(),
        Value::Array(_) => Err(ValidationError::new(
            "body",
            format!("the array must hold 1 to {MAX_BATCH} reports"),
        )),
        _ => Err(ValidationError::new(
            "body",
            "must be an object or an array of them",
        )),
    }
}

fn missing(field: &str) -> ValidationError {
    ValidationError::new(field, "is required")
}

fn text(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, ValidationError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ValidationError::new(field, "must be a string")),
    }
}

fn time(obj: &Map<String, Value>, field: &str) -> Result<Option<Timestamp>, ValidationError> {
    text(obj, field)?
        .map(|s| Timestamp::parse_rfc3339(field, &s))
        .transpose()
}

fn count(obj: &Map<String, Value>, field: &str, max: u64) -> Result<Option<u64>, ValidationError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v <= max => Ok(Some(v)),
            _ => Err(ValidationError::new(
                field,
                format!("must be a whole number between 0 and {max}"),
            )),
        },
        Some(_) => Err(ValidationError::new(field, "must be a number")),
    }
}

/// Parse the body of `POST …/admin/retry-gates` (`wire::GateBody`): each field checked,
/// errors naming it (`Scope.TaskType`, `PerSecond`, …). `Until` is checked against the
/// clock by the use case.
pub fn parse_gate(body: &[u8]) -> Result<failed_tasks_query::GateRequest, ValidationError> {
    use crate::wire::GateBody;
    use failed_tasks_domain::{
        ClientId, ErrorCode, ErrorSignature, GateCreator, GateMode, GateReason, GateScope,
        PerSecond,
    };
    let b: GateBody = serde_json::from_slice(body).map_err(|e| {
        // serde names an unknown field in its message ("unknown field `Foo`, expected …").
        ValidationError::new("body", format!("is not a gate ({e})"))
    })?;
    let s = b.scope.unwrap_or_default();
    let field = |name: &'static str| move |e: ValidationError| e.for_field(format!("Scope.{name}"));
    let scope = GateScope {
        task_type: s
            .task_type
            .map(TaskType::parse)
            .transpose()
            .map_err(field("TaskType"))?,
        error_category: s
            .error_category
            .map(|c| ErrorCategory::parse(&c))
            .transpose()
            .map_err(field("ErrorCategory"))?,
        error_code: s
            .error_code
            .map(ErrorCode::parse)
            .transpose()
            .map_err(field("ErrorCode"))?,
        client_id: s
            .client_id
            .map(ClientId::parse)
            .transpose()
            .map_err(field("ClientId"))?,
        signature: s
            .signature
            .map(|v| ErrorSignature::parse(&v))
            .transpose()
            .map_err(field("Signature"))?,
    };
    let rate = match b.per_second {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_f64()
                .ok_or_else(|| ValidationError::new("PerSecond", "must be a number"))?,
        ),
        Some(_) => return Err(ValidationError::new("PerSecond", "must be a number")),
    };
    let mode = match (b.mode.as_deref(), rate) {
        (Some("hold"), None) => GateMode::Hold,
        (Some("hold"), Some(_)) => {
            return Err(ValidationError::new("PerSecond", "is only for Mode limit"))
        }
        (Some("limit"), Some(r)) => GateMode::Limit(PerSecond::new(r)?),
        (Some("limit"), None) => return Err(missing("PerSecond")),
        (Some(other), _) => {
            return Err(ValidationError::new(
                "Mode",
                format!("{other:?} is neither hold nor limit"),
            ))
        }
        (None, _) => return Err(missing("Mode")),
    };
    let reason = GateReason::parse(&b.reason.ok_or_else(|| missing("Reason"))?)?;
    let until = b
        .until
        .map(|u| Timestamp::parse_rfc3339("Until", &u))
        .transpose()?;
    Ok(failed_tasks_query::GateRequest {
        scope,
        mode,
        reason,
        until,
        created_by: GateCreator::Operator,
    })
}

/// A replay as `POST …/admin/replays` asks for it: the filter (at least one, under the
/// listing's query-parameter names, each a string), the reason, the pace, whether a dry
/// run. Errors name the field (`Filters.category`, `Reason`, `PerSecond`, …).
pub fn parse_replay(body: &[u8]) -> Result<ReplayAsk, ValidationError> {
    use crate::wire::ReplayBody;
    use failed_tasks_domain::{GateReason, ReplayPace, TaskFilter};
    let b: ReplayBody = serde_json::from_slice(body)
        .map_err(|e| ValidationError::new("body", format!("is not a replay ({e})")))?;
    let filters = b.filters.unwrap_or_default();
    if filters.is_empty() {
        return Err(ValidationError::new(
            "Filters",
            format!(
                "a replay needs at least one of {}",
                TaskFilter::PARAMS.join(", ")
            ),
        ));
    }
    let mut pairs = Vec::with_capacity(filters.len());
    for (name, value) in &filters {
        let Value::String(v) = value else {
            return Err(ValidationError::new(
                format!("Filters.{name}"),
                "must be a string",
            ));
        };
        pairs.push((name.as_str(), v.as_str()));
    }
    let filter = TaskFilter::from_params(pairs.iter().copied()).map_err(|e| {
        let field = format!("Filters.{}", e.field);
        e.for_field(field)
    })?;
    let reason = GateReason::parse(&b.reason.ok_or_else(|| missing("Reason"))?)?;
    let pace = match b.per_second {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            Some(ReplayPace::new(n.as_f64().ok_or_else(|| {
                ValidationError::new("PerSecond", "must be a number")
            })?)?)
        }
        Some(_) => return Err(ValidationError::new("PerSecond", "must be a number")),
    };
    Ok(ReplayAsk {
        filter,
        reason,
        pace,
        dry_run: b.dry_run.unwrap_or(false),
    })
}

/// What `POST …/admin/replays` asks for ([`parse_replay`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayAsk {
    /// Which tasks (at least one filter).
    pub filter: failed_tasks_domain::TaskFilter,
    /// Why.
    pub reason: failed_tasks_domain::GateReason,
    /// The pace; `None`: unpaced.
    pub pace: Option<failed_tasks_domain::ReplayPace>,
    /// Only count and show what would be retried.
    pub dry_run: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"TaskId":"t1","TaskType":"embedding","ClientId":"c1","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"TIMEOUT_ERROR"}"#;

    #[test]
    fn one_task_with_defaults() {
        let tasks = parse_tasks(GOOD.as_bytes()).unwrap();
        assert_eq!(tasks.len(), 1);
        let (t, files) = &tasks[0];
        assert_eq!(files, &None);
        assert_eq!(t.start_time(), t.fail_time());
        assert_eq!(t.error_category(), ErrorCategory::ServiceTimeout);
        assert_eq!(t.retry_count(), 0);
    }

    #[test]
    fn errors_name_the_field_and_item() {
        let table = [
            ("{", "body"),
            ("42", "body"),
            ("[]", "body"),
            (
                r#"{"TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E"}"#,
                "TaskId",
            ),
            (
                r#"{"TaskId":"t","TaskType":"x","ClientId":"c","FailTime":"soon","ErrorCode":"E"}"#,
                "FailTime",
            ),
            (
                r#"{"TaskId":"t","TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E","RetryCount":-1}"#,
                "RetryCount",
            ),
            (
                r#"{"TaskId":"t","TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E","ProcessedFiles":1.5}"#,
                "ProcessedFiles",
            ),
            (
                r#"{"TaskId":"t","TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E","ErrorCategory":"oops"}"#,
                "ErrorCategory",
            ),
            (
                r#"{"TaskId":"t","TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E","StartTime":"2025-01-24T10:00:00Z"}"#,
                "FailTime",
            ),
            (
                r#"{"TaskId":7,"TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E"}"#,
                "TaskId",
            ),
            (
                r#"{"TaskId":"t","TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E","Extra":1}"#,
                "Extra",
            ),
            (
                r#"{"TaskId":"t","TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E","Files":[{"Path":"a","Operation":"add","ErrorCode":"E"},{"Path":"b","Operation":"rename","ErrorCode":"E"}]}"#,
                "Files[1].Operation",
            ),
            (
                r#"{"TaskId":"t","TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E","Files":[{"Path":"","Operation":"add","ErrorCode":"E"}]}"#,
                "Files[0].Path",
            ),
            (
                r#"{"TaskId":"t","TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E","Files":[{"Path":"a","Operation":"add","ErrorCode":"E"},{"Path":"a","Operation":"add","ErrorCode":"E"}]}"#,
                "Files[1].Path",
            ),
            (
                r#"{"TaskId":"t","TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E","Files":[{"Path":7,"Operation":"add","ErrorCode":"E"}]}"#,
                "Files[0].Path",
            ),
            (
                r#"{"TaskId":"t","TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E","Files":[{"Path":"a","Operation":"add"}]}"#,
                "Files[0].ErrorCode",
            ),
            (
                r#"{"TaskId":"t","TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E","Files":[{"Path":"a","Operation":"add","ErrorCode":"E","Size":1}]}"#,
                "Files[0].Size",
            ),
            (
                r#"{"TaskId":"t","TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E","FailedFiles":0,"Files":[{"Path":"a","Operation":"add","ErrorCode":"E"}]}"#,
                "FailedFiles",
            ),
            (
                r#"{"TaskId":"t","TaskType":"x","ClientId":"c","FailTime":"2025-01-24T09:15:00Z","ErrorCode":"E","Files":{}}"#,
                "Files",
            ),
        ];
        for (body, field) in table {
            assert_eq!(
                parse_tasks(body.as_bytes()).unwrap_err().field,
                field,
                "{body}"
            );
        }
        let batch = format!("[{GOOD},{GOOD},{{\"TaskId\":\"\"}}]");
        assert_eq!(
            parse_tasks(batch.as_bytes()).unwrap_err().field,
            "[2].TaskId"
        );
        let too_many = format!("[{}]", vec![GOOD; MAX_BATCH + 1].join(","));
        assert_eq!(parse_tasks(too_many.as_bytes()).unwrap_err().field, "body");
    }
}
