//! Replays: preview (a dry run), make, read, list and abort them, and advance one by a step
//! (what the [`ReplayRunner`](crate::ReplayRunner) calls). See docs/operations.md#replays.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use failed_tasks_domain::{
    Cursor, GateReason, ListQuery, PageLimits, PageSize, Replay, ReplayId, ReplayPace,
    ReplayProgress, ReplayState, RetryStatus, TaskFilter, TaskId, Timestamp,
};
use failed_tasks_store::replay::{
    AbortReplay, ReplaySave, SaveReplay, ScheduledRetry, MAX_KEPT_REPLAYS, MAX_TRACKED_SCHEDULED,
};
use failed_tasks_store::{CancelRetry, Capability, ReplayStore, RetryNow};
use futures_util::StreamExt;

use super::{FailedTaskService, QueryError};

/// How many task ids a dry run shows.
pub const SAMPLE_TASK_IDS: usize = 20;
/// Tasks read per store call while a replay walks (and while a dry run counts a search).
const WALK_PAGE: u32 = 500;
/// Retries an abort cancels at once.
const CANCEL_CONCURRENCY: usize = 16;

/// What became of the retries a replay made due (of the last [`MAX_TRACKED_SCHEDULED`]),
/// read from each task's retry status when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayOutcomes {
    /// Retries looked at (the kept ones).
    pub tracked: u64,
    /// Handed to workers: no longer waiting (resolved, failed again, or being run).
    pub delivered: u64,
    /// Of those, tasks that are no longer failed (resolved, superseded or removed).
    pub resolved: u64,
    /// Of those, retries reported failed again (the task failed at that attempt or later).
    pub failed_again: u64,
}

/// A replay as a caller asks for it (validated parts; the use case adds the id, the times
/// and the count).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRequest {
    /// Which tasks (at least one filter: the caller checks).
    pub filter: TaskFilter,
    /// Why.
    pub reason: GateReason,
    /// Who asks: a token's name.
    pub actor: String,
    /// The pace; `None`: as fast as the runner's batches go.
    pub pace: Option<ReplayPace>,
}

impl ReplayRequest {
    /// The replay of this request made at `now` in `state`, with `matched` tasks and
    /// `(visited, scheduled)` so far; finished at `now` unless it is running.
    fn replay(
        self,
        id: ReplayId,
        now: Timestamp,
        state: ReplayState,
        matched: u64,
        (visited, scheduled): (u64, u64),
    ) -> Replay {
        Replay {
            id,
            filter: self.filter,
            reason: self.reason,
            actor: self.actor,
            created: now,
            pace: self.pace,
            state,
            matched,
            progress: ReplayProgress {
                cursor: None,
                visited,
                scheduled,
                paced_until: now,
            },
            finished: (state != ReplayState::Running).then_some(now),
        }
    }
}

/// What a dry run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayPreview {
    /// How many tasks match. With a text filter (`q`, `pathPrefix`) the tasks read within
    /// the search budget (see `exact`).
    pub matching: u64,
    /// The first [`SAMPLE_TASK_IDS`] of them, in the listing's order.
    pub sample: Vec<TaskId>,
    /// Whether `matching` counts every match (`false`: a search stopped by its budget).
    pub exact: bool,
}

/// What [`FailedTaskService::abort_replay`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayAbort {
    /// The replay is aborted; `cancelled` of the retries it made due were still waiting and
    /// are cancelled (of the last ones it keeps).
    Aborted {
        /// The replay as it is now.
        replay: Box<Replay>,
        /// Retries cancelled.
        cancelled: u64,
    },
    /// It had ended already, in this state.
    Finished(ReplayState),
    /// No such replay.
    NotFound,
}

/// What one [`FailedTaskService::advance_replay`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayAdvance {
    /// Matching tasks visited.
    pub visited: u64,
    /// Of those, retries made due.
    pub scheduled: u64,
    /// The replay ended in this state (done or failed), or was found ended (aborted).
    pub ended: Option<ReplayState>,
    /// The runner lost the lease (another took it over): nothing more was written.
    pub lease_lost: bool,
}

impl FailedTaskService {
    pub(super) fn replay_store(&self) -> Result<&Arc<dyn ReplayStore>, QueryError> {
        self.stores
            .replays
            .as_ref()
            .ok_or_else(|| self.not_supported(Capability::Replays))
    }

    /// What a replay of `filter` would retry, changing nothing: how many tasks match and
    /// the first [`SAMPLE_TASK_IDS`].
    pub async fn preview_replay(&self, filter: &TaskFilter) -> Result<ReplayPreview, QueryError> {
        self.retry_store()?;
        self.replay_store()?;
        let limits = PageLimits::new(WALK_PAGE, WALK_PAGE)?;
        if !filter.searches() {
            let page = self
                .list_failed(&ListQuery {
                    filter: filter.clone(),
                    page_size: PageSize::new(SAMPLE_TASK_IDS as u32, limits)?,
                    cursor: None,
                })
                .await?;
            return Ok(ReplayPreview {
                matching: page.total,
                sample: page.tasks.iter().map(|t| t.task_id().clone()).collect(),
                exact: true,
            });
        }
        // A search has no total: count its pages, within half the request deadline.
        let until = tokio::time::Instant::now() + self.deadlines.request / 2;
        let mut preview = ReplayPreview {
            matching: 0,
            sample: Vec::new(),
            exact: true,
        };
        let mut cursor = None;
        loop {
            let found = self
                .search_failed(&ListQuery {
                    filter: filter.clone(),
                    page_size: PageSize::new(WALK_PAGE, limits)?,
                    cursor,
                })
                .await?;
            preview.matching += found.page.tasks.len() as u64;
            for t in &found.page.tasks {
                if preview.sample.len() < SAMPLE_TASK_IDS {
                    preview.sample.push(t.task_id().clone());
                }
            }
            match found.page.next_cursor {
                None => return Ok(preview),
                Some(_) if tokio::time::Instant::now() >= until => {
                    preview.exact = false;
                    return Ok(preview);
                }
                next => cursor = next,
            }
        }
    }

    /// Make a replay of `request` at `now` (it starts running: the runner walks it). Its
    /// `Matched` is the dry run's count.
    pub async fn create_replay(
        &self,
        request: ReplayRequest,
        now: Timestamp,
    ) -> Result<Replay, QueryError> {
        let preview = self.preview_replay(&request.filter).await?;
        let replay = request.replay(
            ReplayId::new(now, self.nonce()),
            now,
            ReplayState::Running,
            preview.matching,
            (0, 0),
        );
        let store = self.replay_store()?;
        self.writing(self.checked(store.replay_create(&replay)))
            .await?;
        Ok(replay)
    }

    /// Keep a replay that already happened (the bulk retry's, done at once): `scheduled`
    /// of `visited` matching tasks made due. Its id, or `None` on a store without replays.
    pub async fn record_done_replay(
        &self,
        request: ReplayRequest,
        visited: u64,
        scheduled: u64,
        now: Timestamp,
    ) -> Result<Option<ReplayId>, QueryError> {
        let Ok(store) = self.replay_store() else {
            return Ok(None);
        };
        let replay = ReplayRequest {
            pace: None,
            ..request
        }
        .replay(
            ReplayId::new(now, self.nonce()),
            now,
            ReplayState::Done,
            visited,
            (visited, scheduled),
        );
        self.checked(store.replay_create(&replay)).await?;
        Ok(Some(replay.id))
    }

    /// The replay with this id; [`QueryError::NotFound`] when none is kept.
    pub async fn replay(&self, id: &ReplayId) -> Result<Replay, QueryError> {
        let store = self.replay_store()?;
        self.checked(store.replay_get(id))
            .await?
            .ok_or(QueryError::NotFound)
    }

    /// `visit` each retry replay `id` made due (the last [`MAX_TRACKED_SCHEDULED`]), a few at
    /// once, within the request deadline; the answers in no particular order.
    async fn each_made<T, F, Fut>(&self, id: &ReplayId, visit: F) -> Result<Vec<T>, QueryError>
    where
        F: Fn(Arc<dyn failed_tasks_store::RetryStore>, ScheduledRetry) -> Fut,
        Fut: std::future::Future<Output = Result<T, failed_tasks_store::StoreError>>,
    {
        let store = self.replay_store()?;
        let retries = self.retry_store()?.clone();
        let made = self
            .checked(store.replay_scheduled(id, MAX_TRACKED_SCHEDULED))
            .await?;
        let work = async {
            futures_util::stream::iter(made)
                .map(|r| visit(retries.clone(), r))
                .buffer_unordered(CANCEL_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<T>, _>>()
        };
        self.checked(work).await
    }

    /// What became of the retries replay `id` made due, from each one's task now (see
    /// [`ReplayOutcomes`]); within the request deadline.
    pub async fn replay_outcomes(&self, id: &ReplayId) -> Result<ReplayOutcomes, QueryError> {
        let each = self
            .each_made(id, |retries, r| async move {
                let mut o = ReplayOutcomes {
                    tracked: 1,
                    ..ReplayOutcomes::default()
                };
                match retries.retry_details(&r.task_id).await? {
                    None => {
                        o.delivered = 1;
                        o.resolved = 1;
                    }
                    Some(d) => {
                        let failed_at = d.attempts.first().map_or(0, |a| a.attempt);
                        if failed_at >= r.attempt {
                            o.delivered = 1;
                            o.failed_again = 1;
                        } else if matches!(
                            d.status,
                            RetryStatus::Scheduled(next) if next.attempt == r.attempt
                        ) && !d.waiting
                        {
                            o.delivered = 1;
                        }
                    }
                }
                Ok(o)
            })
            .await?;
        let mut sum = ReplayOutcomes::default();
        for o in each {
            sum.tracked += o.tracked;
            sum.delivered += o.delivered;
            sum.resolved += o.resolved;
            sum.failed_again += o.failed_again;
        }
        Ok(sum)
    }

    /// The most recent replays, newest first, at most `max` (at most
    /// [`MAX_KEPT_REPLAYS`]).
    pub async fn replays(&self, max: usize) -> Result<Vec<Replay>, QueryError> {
        let store = self.replay_store()?;
        self.checked(store.replay_list(max.min(MAX_KEPT_REPLAYS)))
            .await
    }

    /// Abort a running replay at `now`: it schedules nothing more, and the retries it made
    /// due that are still waiting (of the last [`MAX_TRACKED_SCHEDULED`]) are cancelled,
    /// within the request deadline.
    pub async fn abort_replay(
        &self,
        id: &ReplayId,
        now: Timestamp,
    ) -> Result<ReplayAbort, QueryError> {
        let store = self.replay_store()?;
        let replay = match self
            .writing(self.checked(store.replay_abort(id, now)))
            .await?
        {
            AbortReplay::Aborted(r) => r,
            AbortReplay::Finished(state) => return Ok(ReplayAbort::Finished(state)),
            AbortReplay::NotFound => return Ok(ReplayAbort::NotFound),
        };
        let cancelled = match self.cancel_waiting(id).await {
            Ok(n) => n,
            Err(e) => {
                // The replay is aborted either way; what was not cancelled is delivered.
                tracing::warn!(replay = %id, error = %e, "cancelling an aborted replay's retries failed");
                0
            }
        };
        Ok(ReplayAbort::Aborted { replay, cancelled })
    }

    /// Cancel the retries replay `id` made due that are still waiting for that very attempt.
    async fn cancel_waiting(&self, id: &ReplayId) -> Result<u64, QueryError> {
        let cancelled = self
            .writing(self.each_made(id, |retries, r| async move {
                let waiting = match retries.retry_details(&r.task_id).await? {
                    Some(d) => matches!(
                        d.status,
                        RetryStatus::Scheduled(next) if next.attempt == r.attempt
                    ),
                    None => false,
                };
                if !waiting {
                    return Ok(0u64);
                }
                Ok(match retries.cancel_retry(&r.task_id).await? {
                    CancelRetry::Cancelled { .. } => 1,
                    _ => 0,
                })
            }))
            .await?;
        let n = cancelled.iter().sum();
        super::RetryCounters::add(&self.retry_counters.cancelled, n);
        Ok(n)
    }

    /// The ids of running replays, oldest first, at most `max`.
    pub async fn running_replays(&self, max: usize) -> Result<Vec<ReplayId>, QueryError> {
        let store = self.replay_store()?;
        self.checked(store.replay_running(max)).await
    }

    /// Take (or renew) the replay runners' lease for `holder`; `false` when another has it.
    pub async fn replay_lease(&self, holder: &str, ttl: Duration) -> Result<bool, QueryError> {
        let store = self.replay_store()?;
        self.checked(store.replay_lease(holder, ttl)).await
    }

    /// Give the replay runners' lease up if `holder` has it.
    pub async fn replay_release(&self, holder: &str) -> Result<(), QueryError> {
        let store = self.replay_store()?;
        self.checked(store.replay_release(holder)).await
    }

    /// Advance a running replay at `now`: visit the matching tasks after its saved position,
    /// as many as its pace allows since its last step (at most `max`; unpaced: `max`), make
    /// each one's next retry due (the per-task retry now: a retry already delivered is left
    /// alone), and save the position and counts after each page, so a restart goes on from
    /// there. The end of the matches ends it (`done`); a filter the store no longer takes
    /// ends it `failed`. A replay aborted meanwhile is left as it is. Every save is fenced by
    /// the runners' lease, which `holder` must hold.
    pub async fn advance_replay(
        &self,
        holder: &str,
        id: &ReplayId,
        now: Timestamp,
        max: u64,
    ) -> Result<ReplayAdvance, QueryError> {
        let store = self.replay_store()?.clone();
        let mut report = ReplayAdvance::default();
        let Some(replay) = self.checked(store.replay_get(id)).await? else {
            return Ok(report);
        };
        if replay.state.is_finished() {
            report.ended = Some(replay.state);
            return Ok(report);
        }
        let mut progress = replay.progress.clone();
        let mut budget = match replay.pace {
            Some(pace) => pace.allowance(progress.paced_until, now, max),
            None => max,
        };
        let limits = PageLimits::new(WALK_PAGE, WALK_PAGE)?;
        while budget > 0 {
            let query = ListQuery {
                filter: replay.filter.clone(),
                page_size: PageSize::new(budget.min(u64::from(WALK_PAGE)) as u32, limits)?,
                cursor: progress.cursor.clone(),
            };
            let page = match self.list_failed(&query).await {
                Ok(page) => page,
                Err(e @ (QueryError::BadRequest(_) | QueryError::NotSupported { .. })) => {
                    tracing::warn!(replay = %id, error = %e, "replay failed: its filter is not served");
                    let save = ReplaySave {
                        progress,
                        scheduled: Vec::new(),
                        finish: Some((ReplayState::Failed, now)),
                    };
                    match self.checked(store.replay_save(holder, id, &save)).await? {
                        SaveReplay::Saved => report.ended = Some(ReplayState::Failed),
                        SaveReplay::LeaseLost => report.lease_lost = true,
                        SaveReplay::NotRunning => {}
                    }
                    return Ok(report);
                }
                Err(e) => return Err(e),
            };
            let mut made = Vec::new();
            let mut visited = 0u64;
            let mut failure = None;
            let mut last = None;
            for task in &page.tasks {
                match self.retry_now(task.task_id(), now).await {
                    Ok(RetryNow::Scheduled { attempt }) => made.push(ScheduledRetry {
                        task_id: task.task_id().clone(),
                        attempt,
                    }),
                    // Delivered already, resolved or removed since the page was read.
                    Ok(_) => {}
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                visited += 1;
                last = Some(task.sort_key());
            }
            let end = failure.is_none() && page.next_cursor.is_none();
            // Go on after the last task visited (the page's own cursor when it was all
            // visited: a search's cursor may be past tasks it examined and left out).
            if failure.is_some() {
                if let Some(key) = last {
                    progress.cursor = Some(Cursor::after(key));
                }
            } else if let Some(next) = page.next_cursor.clone() {
                progress.cursor = Some(next);
            }
            progress.visited += visited;
            progress.scheduled += made.len() as u64;
            if let Some(pace) = replay.pace {
                progress.paced_until = pace.used(progress.paced_until, now, visited);
            }
            report.visited += visited;
            report.scheduled += made.len() as u64;
            let save = ReplaySave {
                progress: progress.clone(),
                scheduled: made,
                finish: end.then_some((ReplayState::Done, now)),
            };
            let saved = self.checked(store.replay_save(holder, id, &save)).await?;
            if let Some(e) = failure {
                return Err(e);
            }
            match saved {
                SaveReplay::Saved => {}
                SaveReplay::NotRunning => {
                    // Aborted meanwhile: nothing more.
                    report.ended = Some(ReplayState::Aborted);
                    return Ok(report);
                }
                SaveReplay::LeaseLost => {
                    // Another runner took over (this one was paused past the lease): it goes
                    // on from the last saved position; what this page made due is made due
                    // again there for the same attempt, never delivered twice.
                    report.lease_lost = true;
                    return Ok(report);
                }
            }
            if end {
                report.ended = Some(ReplayState::Done);
                return Ok(report);
            }
            if page.tasks.is_empty() {
                // A search that found nothing within its budget: the next step goes on.
                break;
            }
            budget = budget.saturating_sub(visited);
        }
        Ok(report)
    }

    /// A random number for a new id.
    fn nonce(&self) -> u32 {
        let mut rng = self.jitter.lock().unwrap_or_else(PoisonError::into_inner);
        (rng.next_unit() * f64::from(u32::MAX)) as u32
    }
}
