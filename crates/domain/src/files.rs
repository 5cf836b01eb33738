//! The files of a codebase task that failed ([`TaskFiles`]): a recorded failure may say how
//! many files failed (`FailedFiles`) and which (`Files`: each a [`FailedFile`]), so that a
//! retry re-embeds only those. Paged by path ([`FilesQuery`], [`FilesPage`]), with counts
//! per error code.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::task::MAX_PATH_BYTES;
use crate::{ErrorCode, ErrorMessage, PageSize, ValidationError};

/// Most files one failure may list by default (the `max_failed_files` setting).
pub const DEFAULT_MAX_FAILED_FILES: usize = 10_000;

/// What was being done to a file when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileOperation {
    /// A new file was being embedded.
    Add,
    /// A changed file was being embedded again.
    Modify,
    /// A removed file's vectors were being deleted.
    Delete,
}

impl FileOperation {
    /// Every operation, in a stable order.
    pub const ALL: [FileOperation; 3] = [
        FileOperation::Add,
        FileOperation::Modify,
        FileOperation::Delete,
    ];

    /// The wire name: `add`, `modify`, `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            FileOperation::Add => "add",
            FileOperation::Modify => "modify",
            FileOperation::Delete => "delete",
        }
    }

    /// From the wire name; anything else is an error on `field`.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|o| o.as_str() == text)
            .ok_or_else(|| {
                ValidationError::new(
                    field,
                    format!("{text:?} is not an operation: use add, modify or delete"),
                )
            })
    }
}

impl fmt::Display for FileOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The path of one file inside its codebase: 1 to 4 KiB of UTF-8, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FilePath(String);

impl FilePath {
    /// Validate `value`; errors name `field` (`Files[3].Path`).
    pub fn parse(field: &str, value: impl Into<String>) -> Result<Self, ValidationError> {
        let value = value.into();
        if value.is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        if value.len() > MAX_PATH_BYTES {
            return Err(ValidationError::new(
                field,
                format!(
                    "is {} bytes long; at most {MAX_PATH_BYTES} are allowed",
                    value.len()
                ),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(ValidationError::new(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Self(value))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One file that failed: where, doing what, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedFile {
    /// Its path in the codebase.
    pub path: FilePath,
    /// What was being done to it.
    pub operation: FileOperation,
    /// The machine-readable error code.
    pub error_code: ErrorCode,
    /// The human-readable error text (may be empty).
    pub error_message: ErrorMessage,
}

/// One file as a reporter supplies it, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewFailedFile {
    /// See [`FilePath`].
    pub path: String,
    /// `add`, `modify` or `delete`.
    pub operation: String,
    /// See [`ErrorCode`].
    pub error_code: String,
    /// See [`ErrorMessage`].
    pub error_message: String,
}

/// Why a failure's files were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilesError {
    /// A field is not acceptable (`Files[3].Operation`, `FailedFiles`, ...): a 400.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// More files than the limit: a 413 naming it.
    #[error("Files: {got} files listed; at most {limit} are allowed per task")]
    TooMany {
        /// How many were listed.
        got: usize,
        /// The limit in force.
        limit: usize,
    },
}

/// The failed files of one task: how many failed, and (when the reporter listed them)
/// which, sorted by path, no path twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFiles {
    failed_files: u64,
    files: Option<Vec<FailedFile>>,
}

impl TaskFiles {
    /// Validate what a failure says of its files: `count` is `FailedFiles`, `files` is
    /// `Files`. `None` when it says nothing (neither is given). `FailedFiles` defaults to
    /// the number of files listed and may not be below it. Errors name the field and index
    /// of the first problem (`Files[3].Path`), with `prefix` before them (`[2].` in a batch).
    pub fn new(
        count: Option<u64>,
        files: Option<Vec<NewFailedFile>>,
        limit: usize,
        prefix: &str,
    ) -> Result<Option<Self>, FilesError> {
        if count.is_none() && files.is_none() {
            return Ok(None);
        }
        let files = match files {
            None => None,
            Some(raw) => {
                if raw.len() > limit {
                    return Err(FilesError::TooMany {
                        got: raw.len(),
                        limit,
                    });
                }
                let mut out = Vec::with_capacity(raw.len());
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                for (i, f) in raw.into_iter().enumerate() {
                    let at = |name: &str| format!("{prefix}Files[{i}].{name}");
                    let path = FilePath::parse(&at("Path"), f.path)?;
                    if let Some(first) = seen.insert(path.as_str().to_owned(), i) {
                        return Err(ValidationError::new(
                            at("Path"),
                            format!("{path:?} is listed twice (also {prefix}Files[{first}])"),
                        )
                        .into());
                    }
                    let operation = FileOperation::parse(&at("Operation"), &f.operation)?;
                    let error_code =
                        ErrorCode::parse(f.error_code).map_err(|e| e.for_field(at("ErrorCode")))?;
                    let error_message = ErrorMessage::parse(f.error_message)
                        .map_err(|e| e.for_field(at("ErrorMessage")))?;
                    out.push(FailedFile {
                        path,
                        operation,
                        error_code,
                        error_message,
                    });
                }
                out.sort_by(|a, b| a.path.cmp(&b.path));
                Some(out)
            }
        };
        let listed = files.as_ref().map_or(0, Vec::len) as u64;
        let failed_files = count.unwrap_or(listed);
        if failed_files < listed {
            return Err(ValidationError::new(
                format!("{prefix}FailedFiles"),
                format!("is {failed_files}, fewer than the {listed} files listed"),
            )
            .into());
        }
        Ok(Some(Self {
            failed_files,
            files,
        }))
    }

    /// From parts already valid (a store's decoded copy): `files` sorted by path, no path
    /// twice, `failed_files` at least their number (both enforced here).
    pub fn from_valid(failed_files: u64, files: Option<Vec<FailedFile>>) -> Self {
        let files = files.map(|mut f| {
            f.sort_by(|a, b| a.path.cmp(&b.path));
            f.dedup_by(|a, b| a.path == b.path);
            f
        });
        let listed = files.as_ref().map_or(0, Vec::len) as u64;
        Self {
            failed_files: failed_files.max(listed),
            files,
        }
    }

    /// How many files failed (`FailedFiles`).
    pub fn failed_files(&self) -> u64 {
        self.failed_files
    }

    /// The files listed, by path; `None` when the reporter gave only the count.
    pub fn files(&self) -> Option<&[FailedFile]> {
        self.files.as_deref()
    }

    /// One page of the listed files, by path, after the query's cursor, with the error code
    /// filter; counts per error code are over every listed file.
    pub fn page(&self, query: &FilesQuery) -> FilesPage {
        let all = self.files.as_deref().unwrap_or(&[]);
        let mut counts: BTreeMap<&ErrorCode, u64> = BTreeMap::new();
        for f in all {
            *counts.entry(&f.error_code).or_default() += 1;
        }
        let start = match &query.after {
            Some(after) => all.partition_point(|f| f.path.as_str() <= after.as_str()),
            None => 0,
        };
        let size = query.page_size.get() as usize;
        let mut files = Vec::with_capacity(size.min(all.len()));
        let mut next_cursor = None;
        for f in &all[start..] {
            if query
                .error_code
                .as_ref()
                .is_some_and(|c| c != &f.error_code)
            {
                continue;
            }
            if files.len() == size {
                next_cursor = files
                    .last()
                    .map(|l: &FailedFile| FilesCursor::after(&l.path));
                break;
            }
            files.push(f.clone());
        }
        let matched = match &query.error_code {
            Some(c) => counts.get(c).copied().unwrap_or(0),
            None => all.len() as u64,
        };
        FilesPage {
            files,
            next_cursor,
            failed_files: self.failed_files,
            listed: all.len() as u64,
            matched,
            by_error_code: counts
                .into_iter()
                .map(|(code, n)| (code.clone(), n))
                .collect(),
        }
    }
}

/// Where a page of files continues: after a path. Opaque to clients (URL-safe base64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesCursor(String);

impl FilesCursor {
    /// The position after `path`.
    pub fn after(path: &FilePath) -> Self {
        Self(path.as_str().to_owned())
    }

    /// The path the page continues after.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The opaque form clients pass back.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("f1:{}", self.0))
    }

    /// From the opaque form; anything else is an error on `cursor`.
    pub fn decode(text: &str) -> Result<Self, ValidationError> {
        let bad = || ValidationError::new("cursor", "is not a cursor this listing gave out");
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        text.strip_prefix("f1:")
            .map(|p| Self(p.to_owned()))
            .ok_or_else(bad)
    }
}

/// A question about one task's files: a page size, where to continue, an error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesQuery {
    /// How many files at most.
    pub page_size: PageSize,
    /// Continue after this path (from the previous page's cursor).
    pub after: Option<FilesCursor>,
    /// Only files with this error code.
    pub error_code: Option<ErrorCode>,
}

/// One page of a task's failed files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesPage {
    /// The files, by path.
    pub files: Vec<FailedFile>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<FilesCursor>,
    /// How many files failed (`FailedFiles`, which may exceed the files listed).
    pub failed_files: u64,
    /// How many files are listed.
    pub listed: u64,
    /// How many listed files match the query's error code (all listed without one).
    pub matched: u64,
    /// Listed files per error code, by code.
    pub by_error_code: Vec<(ErrorCode, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PageLimits;

    fn raw(path: &str, op: &str, code: &str) -> NewFailedFile {
        NewFailedFile {
            path: path.into(),
            operation: op.into(),
            error_code: code.into(),
            error_message: "failed".into(),
        }
    }

    #[test]
    fn errors_name_the_field_and_the_index() {
        let bad = |files: Vec<NewFailedFile>| match TaskFiles::new(None, Some(files), 10, "")
            .unwrap_err()
        {
            FilesError::Invalid(e) => e.field,
            other => panic!("{other:?}"),
        };
        let ok = raw("a.rs", "add", "E");
        assert_eq!(
            bad(vec![ok.clone(), raw("b.rs", "rename", "E")]),
            "Files[1].Operation"
        );
        assert_eq!(bad(vec![ok.clone(), raw("", "add", "E")]), "Files[1].Path");
        assert_eq!(
            bad(vec![ok.clone(), raw("a\u{1}", "add", "E")]),
            "Files[1].Path"
        );
        assert_eq!(
            bad(vec![ok.clone(), raw("b", "add", "")]),
            "Files[1].ErrorCode"
        );
        assert_eq!(bad(vec![ok.clone(), ok.clone()]), "Files[1].Path");
        let e = TaskFiles::new(
            Some(1),
            Some(vec![ok.clone(), raw("b", "add", "E")]),
            10,
            "[2].",
        );
        assert!(matches!(e, Err(FilesError::Invalid(e)) if e.field == "[2].FailedFiles"));
        let e = TaskFiles::new(None, Some(vec![ok.clone(); 11]), 10, "").unwrap_err();
        assert_eq!(e, FilesError::TooMany { got: 11, limit: 10 });
        assert_eq!(TaskFiles::new(None, None, 10, "").unwrap(), None);
    }

    #[test]
    fn pages_by_path_with_counts_per_code() {
        let files: Vec<_> = (0..25)
            .map(|i| {
                raw(
                    &format!("src/f{i:02}.rs"),
                    "modify",
                    if i % 5 == 0 { "B" } else { "A" },
                )
            })
            .rev()
            .collect();
        let t = TaskFiles::new(Some(40), Some(files), 100, "")
            .unwrap()
            .unwrap();
        assert_eq!(t.failed_files(), 40);
        let limits = PageLimits::new(10, 100).unwrap();
        let mut q = FilesQuery {
            page_size: PageSize::new(10, limits).unwrap(),
            after: None,
            error_code: None,
        };
        let mut seen = Vec::new();
        loop {
            let p = t.page(&q);
            assert_eq!(p.by_error_code.len(), 2);
            assert_eq!((p.listed, p.matched, p.failed_files), (25, 25, 40));
            seen.extend(p.files.iter().map(|f| f.path.as_str().to_owned()));
            match p.next_cursor {
                Some(c) => q.after = Some(FilesCursor::decode(&c.encode()).unwrap()),
                None => break,
            }
        }
        let want: Vec<_> = (0..25).map(|i| format!("src/f{i:02}.rs")).collect();
        assert_eq!(seen, want);
        q.after = None;
        q.error_code = Some(ErrorCode::parse("B").unwrap());
        let p = t.page(&q);
        assert_eq!((p.files.len(), p.matched, p.next_cursor), (5, 5, None));
        assert!(FilesCursor::decode("nonsense!").is_err());
    }
}
