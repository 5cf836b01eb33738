//! Counters of recordings, attempts and retries since the process started, read by the
//! metrics.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use failed_tasks_domain::{ErrorCategory, FailedTask, TaskType};

use super::FailedTaskService;

/// Counters of the retry use cases since the process started, for the metrics.
#[derive(Debug, Default)]
pub struct RetryCounters {
    /// Failures recorded with a scheduled retry (by the policy).
    pub scheduled_by_policy: AtomicU64,
    /// Retries an operator made due now.
    pub scheduled_by_operator: AtomicU64,
    /// Failures recorded as final.
    pub finals: AtomicU64,
    /// Due retries this process's scheduler moved to the workers' queue.
    pub delivered: AtomicU64,
    /// Tasks resolved through this process.
    pub recovered: AtomicU64,
    /// Scheduled retries cancelled through this process.
    pub cancelled: AtomicU64,
    /// Failed tasks superseded (a later run succeeded) through this process.
    pub superseded: AtomicU64,
    /// Audit entries of operator actions that could not be appended (the action was done).
    pub audit_failures: AtomicU64,
    /// Breakers this process's decider opened (first opens and reopens).
    pub breaker_opened: AtomicU64,
    /// Breakers this process's decider half-opened.
    pub breaker_half_opened: AtomicU64,
    /// Breakers this process's decider closed.
    pub breaker_closed: AtomicU64,
    /// Retry outcomes that could not be counted for the breaker (the outcome was recorded).
    pub breaker_count_failures: AtomicU64,
}

impl RetryCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The value of one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Failures recorded and task attempts reported through this process (by any caller: the
/// HTTP adapter, or a Rust embedder calling the use cases directly), for the metrics: read
/// at scrape time like [`RetryCounters`].
///
/// The label values come from clients (error codes, task types), so their number is
/// bounded: past [`MAX_LABEL_VALUES`](Self::MAX_LABEL_VALUES) distinct values of a label,
/// new ones are counted as [`OTHER`](Self::OTHER). Categories are the five of the domain.
#[derive(Debug, Default)]
pub struct RecordCounters {
    state: Mutex<RecordState>,
}

#[derive(Debug, Default)]
struct RecordState {
    recorded: HashMap<RecordedLabels, u64>,
    attempts: HashMap<String, u64>,
    error_codes: HashSet<String>,
    task_types: HashSet<String>,
}

/// The labels of one series of [`RecordCounters::recorded`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordedLabels {
    /// The failure's category.
    pub category: ErrorCategory,
    /// Its error code, or [`RecordCounters::OTHER`] past the cap.
    pub error_code: String,
    /// Its task type, or [`RecordCounters::OTHER`] past the cap.
    pub task_type: String,
}

/// `value` when it is already a label value of `seen` or there is room for it; `other`
/// past the cap.
fn bounded(seen: &mut HashSet<String>, value: &str) -> String {
    if seen.contains(value) {
        return value.to_owned();
    }
    if seen.len() < RecordCounters::MAX_LABEL_VALUES {
        seen.insert(value.to_owned());
        return value.to_owned();
    }
    RecordCounters::OTHER.to_owned()
}

/// The entries of `map`, in key order.
fn sorted<K: Clone + Ord>(map: &HashMap<K, u64>) -> Vec<(K, u64)> {
    let mut out: Vec<_> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
    out.sort();
    out
}

impl RecordCounters {
    /// Most distinct values of a client-supplied label (error code, task type).
    pub const MAX_LABEL_VALUES: usize = 200;
    /// The label value that stands for every value past the cap.
    pub const OTHER: &'static str = "other";

    fn lock(&self) -> std::sync::MutexGuard<'_, RecordState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Count `tasks` as recorded.
    pub(super) fn add_recorded(&self, tasks: &[FailedTask]) {
        let mut state = self.lock();
        let state = &mut *state;
        for task in tasks {
            let labels = RecordedLabels {
                category: task.error_category(),
                error_code: bounded(&mut state.error_codes, task.error_code().as_str()),
                task_type: bounded(&mut state.task_types, task.task_type().as_str()),
            };
            *state.recorded.entry(labels).or_default() += 1;
        }
    }

    /// Count `n` attempts of `task_type`.
    pub(super) fn add_attempts(&self, task_type: &TaskType, n: u64) {
        let mut state = self.lock();
        let state = &mut *state;
        let task_type = bounded(&mut state.task_types, task_type.as_str());
        let count = state.attempts.entry(task_type).or_default();
        *count = count.saturating_add(n);
    }

    /// Failures recorded, by category, error code and task type, in label order.
    pub fn recorded(&self) -> Vec<(RecordedLabels, u64)> {
        sorted(&self.lock().recorded)
    }

    /// Task attempts reported, by task type, in label order.
    pub fn attempts(&self) -> Vec<(String, u64)> {
        sorted(&self.lock().attempts)
    }
}

impl FailedTaskService {
    /// The retry counters of this process (shared by clones of this service).
    pub fn retry_counters(&self) -> &Arc<RetryCounters> {
        &self.retry_counters
    }

    /// The recording counters of this process (shared by clones of this service).
    pub fn record_counters(&self) -> &Arc<RecordCounters> {
        &self.record_counters
    }
}
