//! The failed-files capability, [`FilesStore`]: the files of a codebase task that failed
//! ([`TaskFiles`]), kept apart from the task's record so that pages of the listing never read
//! them, and their stored form ([`encode`], [`decode`]).
//!
//! # Lifetime
//! A task's files live exactly as long as the record they were stored with: every way a
//! record leaves (delete, resolve, supersede, trim, retention, removal by filter) removes
//! them in the same step, and so does recording the task again (an upsert replaces the whole
//! failure, its files included), after which [`FilesStore::put_files`] stores the new
//! failure's files, if it has any. A reader may, for the instant between those two writes,
//! see the new record without files.
//!
//! # Stored form
//! One compact JSON value per task, error codes and messages written once each:
//! `{"n":FAILED_FILES,"c":[CODE...],"m":[MESSAGE...],"f":[[PATH,OP,CODE_INDEX,MESSAGE_INDEX]...]}`
//! with `OP` one of `a`, `m`, `d`, and `f` (sorted by path) left out when the reporter gave
//! only the count. docs/redis-layout.md shows it.

use std::borrow::Cow;
use std::collections::HashMap;

use async_trait::async_trait;
use failed_tasks_domain::{
    ErrorCode, ErrorMessage, FailedFile, FileOperation, FilePath, TaskFiles, TaskId,
};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// Keeping the failed files of tasks: stored after the task's record, read by task id,
/// removed with the record.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait FilesStore: Send + Sync {
    /// Store `files` as the failed files of `task_id`, replacing any, while its record is
    /// stored (and for as long); `false` (nothing stored) when the task is not stored.
    async fn put_files(&self, task_id: &TaskId, files: &TaskFiles) -> Result<bool, StoreError>;

    /// The failed files of `task_id`; `None` when it has none (or is not stored).
    async fn files(&self, task_id: &TaskId) -> Result<Option<TaskFiles>, StoreError>;
}

/// One file: path, operation letter, error code index, message index.
type Row<'a> = (Cow<'a, str>, Cow<'a, str>, usize, usize);

#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    n: u64,
    #[serde(borrow)]
    c: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    m: Vec<Cow<'a, str>>,
    #[serde(borrow, skip_serializing_if = "Option::is_none", default)]
    f: Option<Vec<Row<'a>>>,
}

fn op_letter(op: FileOperation) -> &'static str {
    match op {
        FileOperation::Add => "a",
        FileOperation::Modify => "m",
        FileOperation::Delete => "d",
    }
}

/// The stored form of `files` (see the module's "Stored form").
pub fn encode(files: &TaskFiles) -> String {
    let mut codes: HashMap<&str, usize> = HashMap::new();
    let mut messages: HashMap<&str, usize> = HashMap::new();
    let mut out = Stored {
        n: files.failed_files(),
        c: Vec::new(),
        m: Vec::new(),
        f: None,
    };
    if let Some(list) = files.files() {
        let mut rows = Vec::with_capacity(list.len());
        for f in list {
            let next = codes.len();
            let c = *codes.entry(f.error_code.as_str()).or_insert(next);
            if c == out.c.len() {
                out.c.push(f.error_code.as_str().into());
            }
            let next = messages.len();
            let m = *messages.entry(f.error_message.as_str()).or_insert(next);
            if m == out.m.len() {
                out.m.push(f.error_message.as_str().into());
            }
            rows.push((f.path.as_str().into(), op_letter(f.operation).into(), c, m));
        }
        out.f = Some(rows);
    }
    // Serialising strings, numbers and arrays cannot fail.
    serde_json::to_string(&out).unwrap_or_default()
}

/// A stored form back; what is not one is described in the error.
pub fn decode(text: &str) -> Result<TaskFiles, String> {
    let s: Stored<'_> =
        serde_json::from_str(text).map_err(|e| format!("failed files are not readable: {e}"))?;
    let files = match s.f {
        None => None,
        Some(rows) => {
            let mut out = Vec::with_capacity(rows.len());
            for (path, op, c, m) in rows {
                let operation = match &*op {
                    "a" => FileOperation::Add,
                    "m" => FileOperation::Modify,
                    "d" => FileOperation::Delete,
                    other => return Err(format!("unknown file operation {other:?}")),
                };
                let code = s.c.get(c).ok_or("error code index out of range")?;
                let message = s.m.get(m).ok_or("error message index out of range")?;
                out.push(FailedFile {
                    path: FilePath::parse("Path", path.into_owned()).map_err(|e| e.to_string())?,
                    operation,
                    error_code: ErrorCode::parse(code.as_ref()).map_err(|e| e.to_string())?,
                    error_message: ErrorMessage::parse(message.as_ref())
                        .map_err(|e| e.to_string())?,
                });
            }
            Some(out)
        }
    };
    Ok(TaskFiles::from_valid(s.n, files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use failed_tasks_domain::NewFailedFile;

    #[test]
    fn round_trips_and_writes_codes_and_messages_once() {
        let raw: Vec<_> = (0..4)
            .map(|i| NewFailedFile {
                path: format!("src/{i}.rs"),
                operation: ["add", "modify", "delete", "add"][i].into(),
                error_code: if i == 2 { "B" } else { "A" }.into(),
                error_message: "rate limited".into(),
            })
            .collect();
        let files = TaskFiles::new(Some(9), Some(raw), 10, "").unwrap().unwrap();
        let text = encode(&files);
        assert_eq!(
            text,
            r#"{"n":9,"c":["A","B"],"m":["rate limited"],"f":[["src/0.rs","a",0,0],["src/1.rs","m",0,0],["src/2.rs","d",1,0],["src/3.rs","a",0,0]]}"#
        );
        assert_eq!(decode(&text).unwrap(), files);
        let count_only = TaskFiles::new(Some(3), None, 10, "").unwrap().unwrap();
        assert_eq!(encode(&count_only), r#"{"n":3,"c":[],"m":[]}"#);
        assert_eq!(decode(&encode(&count_only)).unwrap(), count_only);
        assert!(decode("{").is_err());
        assert!(decode(r#"{"n":1,"c":[],"m":[],"f":[["a","a",0,0]]}"#).is_err());
    }
}
