//! The retry policy (重试机制): from a failure's category, error code and retry count, either
//! "retry after this delay" or "give up" (a final failure, 最终失败).
//!
//! The source document says failed tasks are retried automatically, that the number of
//! retries and the interval are configurable, that a task which reached the maximum number
//! of retries is marked as a final failure, and that some errors, such as permission
//! problems, are never retried. [`RetryPolicy`] is that rule as a value: no clock, no
//! randomness of its own, no IO. The caller sleeps, and the caller supplies the jitter.
//!
//! # Decision table
//! [`RetryPolicy::decide`] checks, in this order (the first rule that applies wins):
//!
//! | # | when | decision |
//! |---|---|---|
//! | 1 | the category is `authorization` | [`GiveUp`]\([`NotRetryable`]\(authorization\)) — always, even at retry count 0 |
//! | 2 | the error code is in [`RetryConfig::permanent_error_codes`] | [`GiveUp`]\([`PermanentErrorCode`]) |
//! | 3 | the category's override in [`RetryConfig::category_max_retries`] is 0 (by default `data_error`) | [`GiveUp`]\([`NotRetryable`]\(category\)) |
//! | 4 | `retry_count >=` the category's maximum (its override, else [`RetryConfig::max_retries`]) | [`GiveUp`]\([`MaxRetriesReached`]) |
//! | 5 | otherwise | [`RetryAfter`]\(delay\) |
//!
//! `retry_count` counts the retries already made before this failure, as
//! [`FailedTask::retry_count`] does: the first failure has `retry_count` 0, and with the
//! default maximum of 8 the task runs at most 9 times.
//!
//! # The delay
//! The delay before the retry that follows a failure with `retry_count = n` is
//!
//! ```text
//! nominal = min(base_delay * multiplier^n, max_delay)
//! delay   = min(nominal * (1 + jitter * (2u - 1)), max_delay)
//! ```
//!
//! where `u` in `[0, 1)` is the caller's jitter sample. With the defaults (30 s, ×2, 30 min
//! cap, ±20 %) the nominal delays are 30 s, 1 min, 2 min, 4 min, 8 min, 16 min, then 30 min
//! twice: 91.5 minutes in all, at least 73 with jitter. Jitter
//! spreads workers that failed together so they do not retry together; the cap holds after
//! jitter too, so no delay ever exceeds `max_delay`. For a fixed `u` the delay never shrinks
//! as `n` grows.
//!
//! # Why `data_error` is not retried by default
//! A data error is malformed input, an integrity problem or a corrupt file (数据格式错误,
//! 数据完整性问题, 文件损坏). Running the same task on the same input again fails the same way,
//! and each attempt costs an embedding-service call, so the default gives up at once. An
//! embedder whose data errors can be transient (a file still being written, say) removes
//! the `data_error` entry from [`RetryConfig::category_max_retries`] or sets it above 0.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use failed_tasks_domain::retry::{GiveUpReason, RetryConfig, RetryDecision, RetryPolicy};
//! use failed_tasks_domain::ErrorCategory;
//!
//! let policy = RetryPolicy::new(RetryConfig {
//!     max_retries: 5,
//!     jitter: 0.0,
//!     ..RetryConfig::default()
//! })?;
//!
//! // A timeout after two retries: wait 30 s × 2² = 2 min, then try again.
//! assert_eq!(
//!     policy.decide(ErrorCategory::ServiceTimeout, "TIMEOUT_ERROR", 2, 0.5),
//!     RetryDecision::RetryAfter(Duration::from_secs(120)),
//! );
//! // A permission error is a final failure at once.
//! assert_eq!(
//!     policy.decide(ErrorCategory::Authorization, "PERMISSION_DENIED", 0, 0.5),
//!     RetryDecision::GiveUp(GiveUpReason::NotRetryable(ErrorCategory::Authorization)),
//! );
//! // The sixth failure of a timeout is a final failure too.
//! assert!(policy.decide(ErrorCategory::ServiceTimeout, "TIMEOUT_ERROR", 5, 0.5).is_give_up());
//! # Ok::<(), failed_tasks_domain::ValidationError>(())
//! ```
//!
//! [`GiveUp`]: RetryDecision::GiveUp
//! [`RetryAfter`]: RetryDecision::RetryAfter
//! [`NotRetryable`]: GiveUpReason::NotRetryable
//! [`PermanentErrorCode`]: GiveUpReason::PermanentErrorCode
//! [`MaxRetriesReached`]: GiveUpReason::MaxRetriesReached

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::{ErrorCategory, ErrorCode, FailedTask, ValidationError};

/// The largest accepted maximum number of retries (overall or per category): beyond it a
/// task would keep retrying at the cap for hours, which is a configuration mistake.
pub const MAX_RETRIES_LIMIT: u32 = 100;
/// The largest accepted delay cap: one day. Longer waits belong to a scheduler, not a retry.
pub const MAX_DELAY_LIMIT: Duration = Duration::from_secs(24 * 60 * 60);
/// The largest accepted backoff multiplier.
pub const MAX_MULTIPLIER: f64 = 16.0;

/// The settings of a [`RetryPolicy`] as an embedder or a configuration file supplies them,
/// before validation. Turn it into a policy with [`RetryPolicy::new`].
///
/// `Default` is the documented default policy: 8 retries, 30 s doubling up to 30 min, ±20 %
/// jitter, `data_error` not retried, no permanent error codes: a task's retries span about
/// 1.5 hours (at least 73 minutes with jitter), so an outage of the embedding provider
/// shorter than an hour turns no failure final (docs/retries.md#the-default-policy).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// How many retries a failed task gets before it is a final failure (default 8;
    /// 0 to 100). Categories listed in `category_max_retries` use their own number instead.
    pub max_retries: u32,
    /// The delay before the first retry (default 30 s): more than zero, at most `max_delay`.
    pub base_delay: Duration,
    /// The factor the delay grows by with each retry (default 2): finite, 1 to 16.
    /// 1 means a constant delay.
    pub multiplier: f64,
    /// The longest delay ever returned, jitter included (default 30 min): more than zero,
    /// at most one day.
    pub max_delay: Duration,
    /// How far jitter may move a delay, as a fraction of it (default 0.2, i.e. ±20 %):
    /// finite, 0 to 1. 0 turns jitter off.
    pub jitter: f64,
    /// Per-category maximum number of retries, replacing `max_retries` for that category.
    /// 0 means the category is never retried (reason [`GiveUpReason::NotRetryable`]).
    /// The default is `{data_error: 0}`; see the module docs for why. `authorization` may
    /// only be listed with 0: it is never retried whatever this says.
    pub category_max_retries: BTreeMap<ErrorCategory, u32>,
    /// Error codes that are never retried whatever their category, compared ignoring ASCII
    /// case (default none). For codes the reporter knows to be permanent, e.g.
    /// `UNSUPPORTED_LANGUAGE`. Each must be a valid [`ErrorCode`].
    pub permanent_error_codes: Vec<String>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: 8,
            base_delay: Duration::from_secs(30),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30 * 60),
            jitter: 0.2,
            category_max_retries: BTreeMap::from([(ErrorCategory::DataError, 0)]),
            permanent_error_codes: Vec::new(),
        }
    }
}

/// A validated retry policy: every setting in range, so [`decide`](Self::decide) cannot fail.
///
/// Built from a [`RetryConfig`] with [`RetryPolicy::new`]; `Default` is
/// `RetryPolicy::new(RetryConfig::default())`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RetryPolicy {
    config: RetryConfig,
}

impl RetryPolicy {
    /// Validate `config`; the first setting out of range is a [`ValidationError`] whose
    /// field is the setting's name (`max_retries`, `base_delay`, `multiplier`, `max_delay`,
    /// `jitter`, `category_max_retries.<category>`, `permanent_error_codes`).
    pub fn new(config: RetryConfig) -> Result<Self, ValidationError> {
        if config.max_retries > MAX_RETRIES_LIMIT {
            return Err(ValidationError::new(
                "max_retries",
                format!(
                    "is {}; at most {MAX_RETRIES_LIMIT} are allowed",
                    config.max_retries
                ),
            ));
        }
        if config.max_delay.is_zero() || config.max_delay > MAX_DELAY_LIMIT {
            return Err(ValidationError::new(
                "max_delay",
                format!(
                    "is {:?}; it must be more than zero and at most {:?}",
                    config.max_delay, MAX_DELAY_LIMIT
                ),
            ));
        }
        if config.base_delay.is_zero() || config.base_delay > config.max_delay {
            return Err(ValidationError::new(
                "base_delay",
                format!(
                    "is {:?}; it must be more than zero and at most max_delay ({:?})",
                    config.base_delay, config.max_delay
                ),
            ));
        }
        if !(1.0..=MAX_MULTIPLIER).contains(&config.multiplier) {
            return Err(ValidationError::new(
                "multiplier",
                format!(
                    "is {}; it must be a number from 1 to {MAX_MULTIPLIER}",
                    config.multiplier
                ),
            ));
        }
        if !(0.0..=1.0).contains(&config.jitter) {
            return Err(ValidationError::new(
                "jitter",
                format!("is {}; it must be a fraction from 0 to 1", config.jitter),
            ));
        }
        for (&category, &max) in &config.category_max_retries {
            let field = format!("category_max_retries.{category}");
            if category == ErrorCategory::Authorization && max != 0 {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "is {max}; authorization failures are never retried, so only 0 is allowed"
                    ),
                ));
            }
            if max > MAX_RETRIES_LIMIT {
                return Err(ValidationError::new(
                    field,
                    format!("is {max}; at most {MAX_RETRIES_LIMIT} are allowed"),
                ));
            }
        }
        for code in &config.permanent_error_codes {
            ErrorCode::parse(code.as_str()).map_err(|e| {
                ValidationError::new("permanent_error_codes", format!("{code:?} {}", e.reason))
            })?;
        }
        Ok(Self { config })
    }

    /// The settings this policy was built from.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// How many retries a failure of `category` gets: 0 for `authorization`, the category's
    /// override when there is one, else `max_retries`.
    pub fn max_retries_for(&self, category: ErrorCategory) -> u32 {
        if category == ErrorCategory::Authorization {
            return 0;
        }
        self.config
            .category_max_retries
            .get(&category)
            .copied()
            .unwrap_or(self.config.max_retries)
    }

    /// Retry or give up after a failure of `category` with `error_code`, when
    /// `retry_count` retries were already made. `jitter` is a sample in `[0, 1)` from the
    /// caller's random source (e.g. [`JitterRng::next_unit`]); values outside are clamped
    /// into it and NaN counts as 0.5 (no jitter). See the module docs for the table.
    pub fn decide(
        &self,
        category: ErrorCategory,
        error_code: &str,
        retry_count: u32,
        jitter: f64,
    ) -> RetryDecision {
        if category == ErrorCategory::Authorization {
            return RetryDecision::GiveUp(GiveUpReason::NotRetryable(category));
        }
        if self
            .config
            .permanent_error_codes
            .iter()
            .any(|c| c.eq_ignore_ascii_case(error_code))
        {
            return RetryDecision::GiveUp(GiveUpReason::PermanentErrorCode);
        }
        if self.config.category_max_retries.get(&category) == Some(&0) {
            return RetryDecision::GiveUp(GiveUpReason::NotRetryable(category));
        }
        let max = self.max_retries_for(category);
        if retry_count >= max {
            return RetryDecision::GiveUp(GiveUpReason::MaxRetriesReached { max });
        }
        RetryDecision::RetryAfter(self.backoff(retry_count, jitter))
    }

    /// [`decide`](Self::decide) for a recorded task: its category, error code and retry count.
    pub fn decide_for(&self, task: &FailedTask, jitter: f64) -> RetryDecision {
        self.decide(
            task.error_category(),
            task.error_code().as_str(),
            task.retry_count(),
            jitter,
        )
    }

    /// Whether `task` is a final failure (最终失败): the policy would not retry it.
    /// Jitter only moves delays, so the answer does not depend on it.
    pub fn is_final_failure(&self, task: &FailedTask) -> bool {
        self.decide_for(task, 0.5).is_give_up()
    }

    /// The delay before the retry that follows a failure with `retry_count` retries made,
    /// whatever the category: exponential, capped at `max_delay`, with `jitter` as in
    /// [`decide`](Self::decide).
    pub fn backoff(&self, retry_count: u32, jitter: f64) -> Duration {
        let cap = self.config.max_delay.as_secs_f64();
        let exponent = i32::try_from(retry_count).unwrap_or(i32::MAX);
        // powi of a multiplier >= 1 is >= 1 or +inf; min() turns +inf into the cap.
        let nominal =
            (self.config.base_delay.as_secs_f64() * self.config.multiplier.powi(exponent)).min(cap);
        let u = if jitter.is_nan() {
            0.5
        } else {
            jitter.clamp(0.0, 1.0)
        };
        let factor = 1.0 + self.config.jitter * (2.0 * u - 1.0);
        let secs = (nominal * factor).clamp(0.0, cap);
        Duration::try_from_secs_f64(secs).unwrap_or(self.config.max_delay)
    }
}

/// What to do after a failure: retry after a delay, or stop (a final failure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Run the task again once this much time has passed.
    RetryAfter(Duration),
    /// Do not run it again: the failure is final, for this reason.
    GiveUp(GiveUpReason),
}

impl RetryDecision {
    /// Whether this is a final failure.
    pub fn is_give_up(&self) -> bool {
        matches!(self, RetryDecision::GiveUp(_))
    }

    /// The delay, when the decision is to retry.
    pub fn delay(&self) -> Option<Duration> {
        match self {
            RetryDecision::RetryAfter(d) => Some(*d),
            RetryDecision::GiveUp(_) => None,
        }
    }
}

/// Why a failure is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GiveUpReason {
    /// Failures of this category are not retried: `authorization` never (某些类型的错误
    /// （如权限问题）不会重试), other categories when the policy sets their maximum to 0
    /// (`data_error` by default).
    NotRetryable(ErrorCategory),
    /// The error code is one of the policy's permanent error codes.
    PermanentErrorCode,
    /// The task already had `max` retries (达到最大重试次数).
    MaxRetriesReached {
        /// The maximum that applied to the failure's category.
        max: u32,
    },
}

impl GiveUpReason {
    /// A stable snake_case name for logs and wire formats: `not_retryable`,
    /// `permanent_error_code` or `max_retries_reached`.
    pub const fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::NotRetryable(_) => "not_retryable",
            GiveUpReason::PermanentErrorCode => "permanent_error_code",
            GiveUpReason::MaxRetriesReached { .. } => "max_retries_reached",
        }
    }
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUpReason::NotRetryable(c) => write!(f, "{c} failures are not retried"),
            GiveUpReason::PermanentErrorCode => f.write_str("the error code is permanent"),
            GiveUpReason::MaxRetriesReached { max } => {
                write!(f, "the maximum of {max} retries was reached")
            }
        }
    }
}

/// A small deterministic source of jitter samples (SplitMix64), for callers without a
/// random-number crate. Not cryptographic.
///
/// Seed it with something that differs between workers (a process id, a start time, a
/// worker number): workers seeded alike draw alike and retry in lockstep, which is what
/// jitter is there to prevent. Tests seed it with a constant to be reproducible.
#[derive(Debug, Clone)]
pub struct JitterRng {
    state: u64,
}

impl JitterRng {
    /// A generator whose sequence is fixed by `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next sample, uniform in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits fill an f64 mantissa exactly: the result is below 1.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}
