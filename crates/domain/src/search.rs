//! Text filters: a case-insensitive text ([`SearchText`], the listing's `q=`) and a directory
//! ([`PathPrefix`], `pathPrefix=`). Neither has an index: they are checked task by task (see
//! [`TaskFilter::matches`](crate::TaskFilter::matches)), and a text can also be checked
//! against a failure group's pattern ([`SearchText::matches_pattern`]), which stands for
//! every failure of the group.

use crate::task::MAX_PATH_BYTES;
use crate::{ErrorPattern, FailedTask, ValidationError};

/// A text looked for, case-insensitively, in a task's `ErrorMessage`, `ErrorCode`, `TaskId`
/// and `CodebasePath`: 1 to [`SearchText::MAX_CHARS`] characters, not only whitespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText {
    /// As given.
    text: String,
    /// Lower-cased (Unicode), what is compared.
    folded: String,
}

impl SearchText {
    /// The longest text accepted, in characters.
    pub const MAX_CHARS: usize = 200;

    /// Accept a client's `q`; errors name `q`.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        if text.trim().is_empty() {
            return Err(ValidationError::new("q", "is empty"));
        }
        let n = text.chars().count();
        if n > Self::MAX_CHARS {
            return Err(ValidationError::new(
                "q",
                format!(
                    "is {n} characters long; at most {} are allowed",
                    Self::MAX_CHARS
                ),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(ValidationError::new("q", "contains a control character"));
        }
        Ok(Self {
            text: text.to_owned(),
            folded: text.to_lowercase(),
        })
    }

    /// The text as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `haystack` contains the text, ignoring case.
    pub fn found_in(&self, haystack: &str) -> bool {
        let needle = self.folded.as_bytes();
        if haystack.is_ascii() && self.folded.is_ascii() {
            // The common case without an allocation: ASCII case folding byte by byte.
            return needle.is_empty()
                || haystack
                    .as_bytes()
                    .windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(needle));
        }
        haystack.to_lowercase().contains(&self.folded)
    }

    /// Whether the task's message, error code, id or path contains the text.
    pub fn matches(&self, task: &FailedTask) -> bool {
        self.found_in(task.error_message().as_str())
            || self.found_in(task.error_code().as_str())
            || self.found_in(task.task_id().as_str())
            || self.found_in(task.codebase_path().as_str())
    }

    /// Whether a failure group's pattern (its normalised message) or error code contains
    /// the text: the text then names the whole group.
    pub fn matches_pattern(&self, pattern: &ErrorPattern) -> bool {
        self.found_in(pattern.normalised_message()) || self.found_in(pattern.error_code())
    }
}

/// A directory: tasks whose `CodebasePath` is it or lies under it (`/projects/foo` matches
/// `/projects/foo` and `/projects/foo/x`, not `/projects/foobar`). Starts with `/`; trailing
/// slashes are ignored (`/projects/foo/` is `/projects/foo`; `/` is every absolute path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix(String);

impl PathPrefix {
    /// Accept a client's `pathPrefix`; errors name `pathPrefix`.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        if !text.starts_with('/') {
            return Err(ValidationError::new("pathPrefix", "must start with /"));
        }
        if text.len() > MAX_PATH_BYTES {
            return Err(ValidationError::new(
                "pathPrefix",
                format!("is longer than {MAX_PATH_BYTES} bytes"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "pathPrefix",
                "contains a control character",
            ));
        }
        Ok(Self(text.trim_end_matches('/').to_owned()))
    }

    /// The directory, without a trailing slash (empty for `/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` is the directory or lies under it.
    pub fn contains(&self, path: &str) -> bool {
        match path.strip_prefix(self.0.as_str()) {
            Some(rest) => (rest.is_empty() && !self.0.is_empty()) || rest.starts_with('/'),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCategory;

    #[test]
    fn text_is_checked_and_found_ignoring_case() {
        assert_eq!(SearchText::parse("").unwrap_err().field, "q");
        assert_eq!(SearchText::parse("  ").unwrap_err().field, "q");
        assert!(SearchText::parse(&"x".repeat(200)).is_ok());
        assert_eq!(SearchText::parse(&"é".repeat(201)).unwrap_err().field, "q");
        let q = SearchText::parse("Deadline").unwrap();
        assert!(q.found_in("context DEADLINE exceeded"));
        assert!(!q.found_in("dead line"));
        let q = SearchText::parse("ÜBER").unwrap();
        assert!(q.found_in("zu über dem"));
        assert!(SearchText::parse("超时")
            .unwrap()
            .found_in("向量嵌入服务超时"));
    }

    #[test]
    fn text_matches_a_pattern_by_message_or_code() {
        let p = ErrorPattern::of(ErrorCategory::ServiceTimeout, "TIMEOUT_ERROR", "waited 30s");
        assert!(SearchText::parse("WAITED").unwrap().matches_pattern(&p));
        assert!(SearchText::parse("timeout_e").unwrap().matches_pattern(&p));
        assert!(!SearchText::parse("30").unwrap().matches_pattern(&p));
    }

    #[test]
    fn path_prefix_is_a_directory() {
        assert_eq!(
            PathPrefix::parse("projects").unwrap_err().field,
            "pathPrefix"
        );
        assert_eq!(PathPrefix::parse("").unwrap_err().field, "pathPrefix");
        let p = PathPrefix::parse("/projects/foo/").unwrap();
        assert!(p.contains("/projects/foo"));
        assert!(p.contains("/projects/foo/x"));
        assert!(!p.contains("/projects/foobar"));
        assert!(!p.contains("/projects"));
        let root = PathPrefix::parse("/").unwrap();
        assert!(root.contains("/a"));
        assert!(!root.contains("a"));
        assert!(!root.contains(""));
    }
}
