//! Domain types of the failed-task store.
//!
//! This crate holds what a failed task *is* and what a question about failed tasks
//! *looks like*, with nothing about where tasks are kept or how they travel.
//!
//! # Layout
//! - [`task`]: [`FailedTask`] (the 11 fields of the contract) and the validated values it is
//!   made of ([`TaskId`], [`TaskType`], [`ClientId`], [`ErrorCode`], [`Timestamp`], ...).
//! - [`category`]: [`ErrorCategory`], the five failure classes, and a classifier from error codes.
//! - [`query`]: [`ListQuery`], [`TaskFilter`], [`PageSize`], [`Cursor`] and the [`SortKey`]
//!   that defines the one listing order.
//! - [`search`]: the text filters without an index, [`SearchText`] (`q`, case-insensitive
//!   over message, code, id and path, or over a group's pattern) and [`PathPrefix`] (a
//!   directory).
//! - [`retry`]: [`RetryPolicy`], which says "retry after this delay" or "give up" (a final
//!   failure) from a failure's category, error code and retry count.
//! - [`scheduling`]: what follows from the policy once a failure is stored: its
//!   [`RetryStatus`] (scheduled, final, unscheduled), the [`RetryRequest`] handed to workers,
//!   the [`AttemptRecord`]s of its history.
//! - [`breaker`]: the retry circuit breaker's keys, outcome counts, settings and states, and
//!   its rules (when it opens, what its canaries decide).
//! - [`files`]: [`TaskFiles`], the files of a codebase task that failed (`FailedFiles`,
//!   `Files`), validated, and their pages by path with counts per error code.
//! - [`success`]: [`TaskSuccess`], a successful run that supersedes the older failures of its
//!   task type, client and codebase.
//! - [`signature`]: [`ErrorSignature`], the stable id of "the same failure", from the
//!   category, the error code and the message with its varying parts normalised away.
//! - [`group`]: failure groups by error signature, and their paging.
//! - [`gate`]: retry gates (hold or limit the delivery of a scope's retries).
//! - [`replay`]: [`Replay`], an operator's paced retry of every match of a filter: its id,
//!   state, pace ([`ReplayPace`]: how many tasks a step may take) and saved position.
//! - [`stats`]: per-minute failure counters, window statistics and the alert rules.
//! - [`error`]: [`ValidationError`], the only error this crate produces.
//!
//! # Invariants
//! - No IO, no async, no dependency on a runtime, an HTTP stack or a Redis driver.
//! - Anything that comes from outside is a newtype with a validating `parse`; an invalid
//!   value cannot be constructed, so adapters never re-check.
//! - The listing order is [`SortKey`]'s: `FailTime` newest first, then `TaskId` descending
//!   (byte-wise). It is a total order, so a cursor names exactly one position.

#![forbid(unsafe_code)]

pub mod breaker;
pub mod category;
pub mod error;
pub mod files;
pub mod gate;
pub mod group;
mod made_id;
pub mod query;
pub mod replay;
pub mod retry;
pub mod scheduling;
pub mod search;
pub mod signature;
pub mod stats;
pub mod success;
pub mod task;

pub use breaker::{BreakerConfig, BreakerKey, BreakerPhase, BreakerState, OutcomeCounts, Verdict};
pub use category::ErrorCategory;
pub use error::ValidationError;
pub use files::{
    FailedFile, FileOperation, FilePath, FilesCursor, FilesError, FilesPage, FilesQuery,
    NewFailedFile, TaskFiles, DEFAULT_MAX_FAILED_FILES,
};
pub use gate::{
    GateCreator, GateId, GateMode, GateReason, GateScope, GateStatus, GateSubject, PerSecond,
    RetryGate,
};
pub use group::{FailureGroup, GroupCursor, GroupPage, GroupQuery};
pub use query::{Cursor, ListQuery, PageLimits, PageSize, SortKey, TaskFilter};
pub use replay::{Replay, ReplayId, ReplayPace, ReplayProgress, ReplayState};
pub use retry::{GiveUpReason, JitterRng, RetryConfig, RetryDecision, RetryPolicy};
pub use scheduling::{
    AttemptRecord, NextRetry, RetryFiles, RetryPlan, RetryRequest, RetryState, RetryStatus,
    ScheduledBy,
};
pub use search::{PathPrefix, SearchText};
pub use signature::{normalise_message, ErrorPattern, ErrorSignature};
pub use success::TaskSuccess;
pub use task::{
    ClientId, CodebasePath, ErrorCode, ErrorMessage, FailedTask, NewFailedTask, TaskId, TaskType,
    Timestamp,
};
