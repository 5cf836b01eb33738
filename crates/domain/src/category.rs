//! The five failure classes of the contract and a classifier from error codes.

use std::fmt;
use std::str::FromStr;

use crate::ValidationError;

/// Why a task failed, in one of the five classes the contract names.
///
/// The wire form is the snake_case name ([`ErrorCategory::as_str`]); parsing accepts exactly
/// those five names, so an unknown category is an error rather than a silent default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCategory {
    /// A dependency did not answer in time (embedding service, database, network).
    ServiceTimeout,
    /// Permission denied, authentication failed, access refused. Never worth retrying.
    Authorization,
    /// Storage, memory or a pool ran out.
    ResourceExhausted,
    /// Malformed input, integrity problems, corrupt files.
    DataError,
    /// Everything else: internal faults and unknown errors.
    SystemError,
}

impl ErrorCategory {
    /// All categories, in the contract's order.
    pub const ALL: [ErrorCategory; 5] = [
        ErrorCategory::ServiceTimeout,
        ErrorCategory::Authorization,
        ErrorCategory::ResourceExhausted,
        ErrorCategory::DataError,
        ErrorCategory::SystemError,
    ];

    /// The contract's name of the category, e.g. `service_timeout`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::ServiceTimeout => "service_timeout",
            ErrorCategory::Authorization => "authorization",
            ErrorCategory::ResourceExhausted => "resource_exhausted",
            ErrorCategory::DataError => "data_error",
            ErrorCategory::SystemError => "system_error",
        }
    }

    /// Parse one of the five contract names; anything else is a [`ValidationError`] on `category`.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "category",
                    format!(
                        "unknown category {s:?}; expected one of service_timeout, authorization, \
                         resource_exhausted, data_error, system_error"
                    ),
                )
            })
    }

    /// Guess the category of an error code such as `TIMEOUT_ERROR` or `PERMISSION_DENIED`.
    ///
    /// The code is split into words on `_`, `-`, `.` and spaces and matched case-insensitively
    /// against common vocabularies (gRPC status names, HTTP reason phrases, errno names).
    /// Authorization words win over the others, because a wrongly retried permission error
    /// costs more than a wrongly abandoned timeout. Unknown codes are [`ErrorCategory::SystemError`].
    pub fn classify(error_code: &str) -> Self {
        let upper = error_code.to_ascii_uppercase();
        let words: Vec<&str> = upper
            .split(|c: char| c == '_' || c == '-' || c == '.' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        let has = |list: &[&str]| words.iter().any(|w| list.contains(w));
        let joined = words.concat();

        const AUTH: &[&str] = &[
            "PERMISSION",
            "UNAUTHORIZED",
            "UNAUTHENTICATED",
            "FORBIDDEN",
            "AUTH",
            "AUTHZ",
            "AUTHN",
            "AUTHENTICATION",
            "AUTHORIZATION",
            "ACCESS",
            "EACCES",
            "EPERM",
            "401",
            "403",
            "CREDENTIALS",
            "TOKEN",
        ];
        const TIMEOUT: &[&str] = &["TIMEOUT", "TIMEDOUT", "DEADLINE", "ETIMEDOUT", "504", "408"];
        const EXHAUSTED: &[&str] = &[
            "EXHAUSTED",
            "STORAGE",
            "DISK",
            "SPACE",
            "ENOSPC",
            "MEMORY",
            "OOM",
            "ENOMEM",
            "QUOTA",
            "POOL",
            "LIMIT",
            "RATE",
            "THROTTLED",
            "429",
            "507",
            "FULL",
            "CAPACITY",
        ];
        const DATA: &[&str] = &[
            "DATA",
            "INVALID",
            "PARSE",
            "FORMAT",
            "CORRUPT",
            "CORRUPTED",
            "MALFORMED",
            "DECODE",
            "ENCODING",
            "INTEGRITY",
            "CHECKSUM",
            "SCHEMA",
            "VALIDATION",
            "400",
            "422",
            "SYNTAX",
        ];

        if has(AUTH) || joined.contains("PERMISSIONDENIED") || joined.contains("ACCESSDENIED") {
            ErrorCategory::Authorization
        } else if has(TIMEOUT) || joined.contains("TIMEOUT") {
            ErrorCategory::ServiceTimeout
        } else if has(EXHAUSTED) {
            ErrorCategory::ResourceExhausted
        } else if has(DATA) {
            ErrorCategory::DataError
        } else {
            ErrorCategory::SystemError
        }
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCategory {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in ErrorCategory::ALL {
            assert_eq!(ErrorCategory::parse(c.as_str()), Ok(c));
        }
        assert!(ErrorCategory::parse("Service_Timeout").is_err());
        assert!(ErrorCategory::parse("").is_err());
    }

    #[test]
    fn classifier_table() {
        let table = [
            ("TIMEOUT_ERROR", ErrorCategory::ServiceTimeout),
            ("DEADLINE_EXCEEDED", ErrorCategory::ServiceTimeout),
            ("EmbeddingTimeout", ErrorCategory::ServiceTimeout),
            ("PERMISSION_DENIED", ErrorCategory::Authorization),
            ("UNAUTHENTICATED", ErrorCategory::Authorization),
            ("auth-failed", ErrorCategory::Authorization),
            ("ACCESS_DENIED", ErrorCategory::Authorization),
            ("STORAGE_ERROR", ErrorCategory::ResourceExhausted),
            ("RESOURCE_EXHAUSTED", ErrorCategory::ResourceExhausted),
            ("OUT_OF_MEMORY", ErrorCategory::ResourceExhausted),
            (
                "CONNECTION_POOL_EXHAUSTED",
                ErrorCategory::ResourceExhausted,
            ),
            ("INVALID_ARGUMENT", ErrorCategory::DataError),
            ("PARSE_ERROR", ErrorCategory::DataError),
            ("FILE_CORRUPTED", ErrorCategory::DataError),
            ("INTERNAL", ErrorCategory::SystemError),
            ("", ErrorCategory::SystemError),
            ("SOMETHING_ODD", ErrorCategory::SystemError),
        ];
        for (code, want) in table {
            assert_eq!(ErrorCategory::classify(code), want, "classify({code:?})");
        }
    }
}
