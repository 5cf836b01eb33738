//! Retry gates: an operator's (or the breaker's) hold or rate limit on the delivery of due
//! retries of one *scope* (docs/retries.md#gates).
//!
//! A gate is a value: its scope (any combination of task type, error category, error code,
//! client and error signature; none = every retry), its mode (`hold`: nothing of the scope
//! is delivered; `limit`: at most `PerSecond` deliveries a second), a required reason, who
//! made it, since when and until when. Stores apply gates when they move due retries to the
//! workers (`RetryStore::deliver_due`); a held retry stays due and keeps its attempt.

use crate::{
    ClientId, ErrorCategory, ErrorCode, ErrorSignature, TaskType, Timestamp, ValidationError,
};

/// Most gates active at once (a store refuses one more).
pub const MAX_ACTIVE_GATES: usize = 1_000;
/// The largest accepted `PerSecond` of a `limit` gate.
pub const MAX_PER_SECOND: f64 = 1_000_000.0;
/// Longest accepted reason, in bytes.
pub const MAX_REASON_BYTES: usize = 500;

crate::made_id::made_id!(
    /// A gate's id: 1 to 64 ASCII letters, digits, `-` or `_`.
    GateId,
    "g",
    "GateId",
    "gate id"
);

/// Which due retries a gate applies to: those matching every field that is set (none set:
/// every retry).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GateScope {
    /// Only retries of this task type.
    pub task_type: Option<TaskType>,
    /// Only retries of failures of this category.
    pub error_category: Option<ErrorCategory>,
    /// Only retries of failures with this error code.
    pub error_code: Option<ErrorCode>,
    /// Only retries for this client.
    pub client_id: Option<ClientId>,
    /// Only retries of failures with this error signature (one failure group).
    pub signature: Option<ErrorSignature>,
}

/// The fields of a retry a scope looks at, as text.
#[derive(Debug, Clone, Copy)]
pub struct GateSubject<'a> {
    /// The task type.
    pub task_type: &'a str,
    /// The failure's category.
    pub error_category: ErrorCategory,
    /// The failure's error code.
    pub error_code: &'a str,
    /// The client.
    pub client_id: &'a str,
    /// The failure's signature.
    pub signature: &'a str,
}

impl GateScope {
    /// Whether a retry of `s` is in the scope.
    pub fn matches(&self, s: &GateSubject<'_>) -> bool {
        self.task_type
            .as_ref()
            .is_none_or(|v| v.as_str() == s.task_type)
            && self.error_category.is_none_or(|v| v == s.error_category)
            && self
                .error_code
                .as_ref()
                .is_none_or(|v| v.as_str() == s.error_code)
            && self
                .client_id
                .as_ref()
                .is_none_or(|v| v.as_str() == s.client_id)
            && self
                .signature
                .as_ref()
                .is_none_or(|v| v.as_str() == s.signature)
    }

    /// Whether the scope names nothing (every retry).
    pub fn is_everything(&self) -> bool {
        self == &GateScope::default()
    }
}

/// A `limit` gate's rate: more than 0, at most [`MAX_PER_SECOND`] deliveries a second
/// (fractions allowed: 0.5 is one every two seconds).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct PerSecond(f64);

impl PerSecond {
    /// Validate a rate; errors name `PerSecond`.
    pub fn new(rate: f64) -> Result<Self, ValidationError> {
        if rate.is_finite() && rate > 0.0 && rate <= MAX_PER_SECOND {
            Ok(Self(rate))
        } else {
            Err(ValidationError::new(
                "PerSecond",
                format!("must be a number more than 0 and at most {MAX_PER_SECOND}"),
            ))
        }
    }

    /// The rate.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// What a gate does to the due retries of its scope.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GateMode {
    /// Nothing is delivered; due retries stay due (and keep their attempt).
    Hold,
    /// At most this many deliveries a second (a token bucket holding at most one second's
    /// worth, empty when the gate is made).
    Limit(PerSecond),
}

impl GateMode {
    /// `hold` or `limit`.
    pub const fn as_str(self) -> &'static str {
        match self {
            GateMode::Hold => "hold",
            GateMode::Limit(_) => "limit",
        }
    }

    /// The rate of a `limit` gate.
    pub fn per_second(self) -> Option<f64> {
        match self {
            GateMode::Hold => None,
            GateMode::Limit(r) => Some(r.get()),
        }
    }
}

/// Who made a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateCreator {
    /// An operator, through the admin API or the dashboard.
    Operator,
    /// The retry circuit breaker.
    Breaker,
}

impl GateCreator {
    /// `operator` or `breaker`.
    pub const fn as_str(self) -> &'static str {
        match self {
            GateCreator::Operator => "operator",
            GateCreator::Breaker => "breaker",
        }
    }

    /// Parse `operator` or `breaker`; errors name `CreatedBy`.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s {
            "operator" => Ok(GateCreator::Operator),
            "breaker" => Ok(GateCreator::Breaker),
            _ => Err(ValidationError::new(
                "CreatedBy",
                format!("{s:?} is neither operator nor breaker"),
            )),
        }
    }
}

/// Why a gate exists: 1 to [`MAX_REASON_BYTES`] bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateReason(String);

impl GateReason {
    /// Validate a reason; errors name `Reason`.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        if text.trim().is_empty() {
            return Err(ValidationError::new("Reason", "is required"));
        }
        if text.len() > MAX_REASON_BYTES {
            return Err(ValidationError::new(
                "Reason",
                format!(
                    "is {} bytes long; at most {MAX_REASON_BYTES} are allowed",
                    text.len()
                ),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "Reason",
                "must not contain control characters",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    /// The reason as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A retry gate.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryGate {
    /// Its id.
    pub id: GateId,
    /// The retries it applies to.
    pub scope: GateScope,
    /// Hold or limit.
    pub mode: GateMode,
    /// Why.
    pub reason: GateReason,
    /// Who made it.
    pub created_by: GateCreator,
    /// When it was made.
    pub since: Timestamp,
    /// When it lapses by itself (none: when released).
    pub until: Option<Timestamp>,
}

impl RetryGate {
    /// Whether the gate has lapsed at `now`.
    pub fn lapsed(&self, now: Timestamp) -> bool {
        self.until.is_some_and(|u| u <= now)
    }
}

/// An active gate and how many due retries it holds back now.
#[derive(Debug, Clone, PartialEq)]
pub struct GateStatus {
    /// The gate.
    pub gate: RetryGate,
    /// Due retries it holds back (a `hold`), or that wait for its rate (a `limit`).
    pub held: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_positive_finite_and_bounded() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1_000_000.5] {
            assert!(PerSecond::new(bad).is_err(), "{bad}");
        }
        for good in [0.001, 1.0, 50.0, 1_000_000.0] {
            assert_eq!(PerSecond::new(good).map(PerSecond::get), Ok(good));
        }
    }

    #[test]
    fn ids_round_trip_and_refuse_other_text() {
        let id = GateId::new(Timestamp::from_unix_millis(1_796_112_667_146).unwrap(), 7);
        assert_eq!(id.as_str(), "g01a230a8520a00000007");
        assert_eq!(GateId::parse(id.as_str()), Ok(id));
        for bad in ["", "a/b", "x y", &"a".repeat(65)] {
            assert!(GateId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reasons_are_required_short_and_plain() {
        assert!(GateReason::parse("").is_err());
        assert!(GateReason::parse("  ").is_err());
        assert!(GateReason::parse("a\tb").is_err());
        assert!(GateReason::parse(&"x".repeat(501)).is_err());
        assert_eq!(
            GateReason::parse("provider outage").map(|r| r.as_str().to_owned()),
            Ok("provider outage".to_owned())
        );
    }

    #[test]
    fn a_scope_matches_every_field_it_names() {
        let s = GateSubject {
            task_type: "embedding",
            error_category: ErrorCategory::ServiceTimeout,
            error_code: "TIMEOUT_ERROR",
            client_id: "c1",
            signature: "0123456789abcdef",
        };
        assert!(GateScope::default().matches(&s));
        let by_type = GateScope {
            task_type: Some(TaskType::parse("embedding").unwrap()),
            error_category: Some(ErrorCategory::ServiceTimeout),
            ..GateScope::default()
        };
        assert!(by_type.matches(&s));
        let other = GateScope {
            error_category: Some(ErrorCategory::ResourceExhausted),
            ..by_type.clone()
        };
        assert!(!other.matches(&s));
        let sig = GateScope {
            signature: Some(ErrorSignature::parse("0123456789abcdee").unwrap()),
            ..GateScope::default()
        };
        assert!(!sig.matches(&s));
    }
}
