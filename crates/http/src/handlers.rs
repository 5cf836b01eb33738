//! One function per route (the route table in `routes` names them): each turns its [`Call`]
//! into a use-case call and the answer into a [`Reply`].

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use failed_tasks_domain::{
    ClientId, GateId, ListQuery, ReplayId, TaskId, Timestamp, ValidationError,
};
use failed_tasks_query::audit::{AuditAction, AuditEntry};
use failed_tasks_query::{CancelRetry, QueryError, RecordOutcome, ReplayAbort, Resolve, RetryNow};
use hyper::StatusCode;

use crate::app::App;
use crate::body::{Items, Payload};
use crate::reply::Reply;
use crate::request::Call;
use crate::wire::{
    AccessInfo, AttemptsRecorded, AuditList, BulkRetried, FileList, GateAction, GroupList, Health,
    Recorded, Removed, ReplayAborted, ReplayCreated, ReplayDetail, ReplayList, ReplayPreview,
    RetryAction, RetryBreakers, RetryGates, Stats, SuccessesRecorded, TaskDetail, TaskList,
    WireReplay,
};
use crate::{ingest, params};

/// Extra time past the request deadline for work that started after waiting for room: the
/// use case's own deadline, started a moment later, is the one that normally fires.
const DEADLINE_SLACK: Duration = Duration::from_millis(100);

/// Run `page`, the fetching and building of a paged answer of `items` items of `kind`,
/// once there is room for it under the response-bytes cap (see [`crate::body::Budget::room_for`]): the
/// wait and the work together within the request deadline. No room by the deadline: 503 busy.
async fn paged<F>(app: &App, kind: Items, items: usize, page: F) -> Reply
where
    F: Future<Output = (Reply, usize)>,
{
    let deadline = tokio::time::Instant::now() + app.service.deadlines().request;
    let room = match tokio::time::timeout_at(deadline, app.budget.room_for(kind, items)).await {
        Ok(room) => room,
        Err(_) => {
            app.metrics.response_refused();
            return Reply::busy(app.config.retry_after_secs);
        }
    };
    match tokio::time::timeout_at(deadline + DEADLINE_SLACK, page).await {
        Ok((reply, listed)) => {
            if reply.status == StatusCode::OK {
                app.budget.learn(kind, listed, reply.body_len());
            }
            reply.with_room(room)
        }
        Err(_) => Reply::deadline_passed(app),
    }
}

/// `GET /codebase-embedder/api/v1/tasks/failed`
pub(crate) async fn list_failed(app: &App, call: Call<'_>) -> Reply {
    let query = call.query;
    let q = match params::list_query(query, app.config.page_limits) {
        Ok(q) => q,
        Err(e) => return Reply::bad_request(&e),
    };
    let items = q.page_size.get() as usize;
    paged(app, Items::Tasks, items, list_page(app, &q)).await
}

/// One page of the listing, and how many tasks it holds.
async fn list_page(app: &App, q: &ListQuery) -> (Reply, usize) {
    // The fast path: a store that keeps stored records answers with them, and the body is
    // rendered from their headers without a JSON parser (see `wire::stored_page_body`);
    // anything it cannot vouch for falls back to the decoded path below, which skips and
    // counts corrupt records.
    match app.service.list_failed_stored(q).await {
        Ok(Some(page)) => {
            let mut body = Vec::new();
            let rendered =
                crate::wire::stored_page_body(&page, app.service.retry_policy(), &mut body);
            // (A body that cannot be mapped falls to the decoded path, which answers as its
            // own large bodies do.)
            if let (Some(()), Ok(payload)) = (rendered, Payload::of(body)) {
                app.metrics.corrupt_skipped(page.skipped_corrupt);
                return (Reply::ok_json_payload(payload), page.records.len());
            }
        }
        Ok(None) => {}
        Err(e) => return (Reply::from_query_error(app, e), 0),
    }
    if q.filter.searches() {
        return match app.service.search_failed(q).await {
            Ok(found) => {
                app.metrics.corrupt_skipped(found.page.skipped_corrupt);
                let n = found.page.tasks.len();
                let list = TaskList::searched(&found, app.service.retry_policy());
                (Reply::ok(list), n)
            }
            Err(e) => (Reply::from_query_error(app, e), 0),
        };
    }
    match app.service.list_failed(q).await {
        Ok(page) => {
            app.metrics.corrupt_skipped(page.skipped_corrupt);
            if page.skipped_corrupt > 0 {
                tracing::warn!(
                    skipped = page.skipped_corrupt,
                    "corrupt records left out of the page"
                );
            }
            let reply = Reply::ok(TaskList::new(&page, app.service.retry_policy()));
            (reply, page.tasks.len())
        }
        Err(e) => (Reply::from_query_error(app, e), 0),
    }
}

/// `GET /codebase-embedder/api/v1/tasks/failed/{taskId}` (the id percent-decoded)
pub(crate) async fn get_failed(app: &App, call: Call<'_>) -> Reply {
    let (raw_id, query) = (call.param, call.query);
    if let Err(e) = params::no_params(query) {
        return Reply::bad_request(&e);
    }
    let decoded = match percent_encoding::percent_decode_str(raw_id).decode_utf8() {
        Ok(s) => s,
        Err(_) => {
            return Reply::bad_request(&ValidationError::new(
                "taskId",
                "is not valid UTF-8 once percent-decoded",
            ))
        }
    };
    let id = match TaskId::parse(decoded.as_ref()) {
        Ok(id) => id,
        Err(e) => return Reply::bad_request(&e.for_field("taskId")),
    };
    match app.service.get_failed_with_retries(&id).await {
        Ok((task, details)) => {
            let failed_files = match app.service.failed_files_count(&id).await {
                Ok(n) => n,
                Err(e) => return Reply::from_query_error(app, e),
            };
            Reply::ok(TaskDetail::new(
                &task,
                &details,
                app.service.retry_policy(),
                failed_files,
            ))
        }
        Err(QueryError::NotFound) => Reply::error(
            StatusCode::NOT_FOUND,
            404,
            format!("failed task {id} not found"),
        ),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `GET /codebase-embedder/api/v1/tasks/failed/{taskId}/files`: one page of the task's
/// failed files, by path, with counts per error code.
pub(crate) async fn failed_files(app: &App, call: Call<'_>) -> Reply {
    let id = match task_id(call.param) {
        Ok(id) => id,
        Err(e) => return Reply::bad_request(&e),
    };
    let q = match params::files_query(call.query, app.config.page_limits) {
        Ok(q) => q,
        Err(e) => return Reply::bad_request(&e),
    };
    let items = q.page_size.get() as usize;
    paged(app, Items::Files, items, async {
        match app.service.failed_files(&id, &q).await {
            Ok(page) => (Reply::ok(FileList::from(&page)), page.files.len()),
            Err(QueryError::NotFound) => (not_found(&id), 0),
            Err(e) => (Reply::from_query_error(app, e), 0),
        }
    })
    .await
}

/// `GET /codebase-embedder/api/v1/access`: the presented token's name, role and client, so
/// that a client (the dashboard) offers only what the token may do. Open: an unknown or
/// missing token answers nulls, never 401.
pub(crate) async fn access(app: &App, call: Call<'_>) -> Reply {
    if let Err(e) = params::no_params(call.query) {
        return Reply::bad_request(&e);
    }
    let caller = app.tokens.caller(call.headers);
    Reply::ok(AccessInfo {
        name: caller.map(|t| t.name().to_owned()),
        role: caller.map(|t| t.role().as_str().to_owned()),
        client_id: caller
            .and_then(|t| t.client())
            .map(|c| c.as_str().to_owned()),
        reads_need_token: app.tokens.reads_need_a_token(),
    })
}

/// `GET /healthz`: the process is alive; never touches the store.
pub(crate) async fn healthz(_app: &App, call: Call<'_>) -> Reply {
    let query = call.query;
    if let Err(e) = params::no_params(query) {
        return Reply::bad_request(&e);
    }
    Reply::ok(Health {
        status: "alive".to_owned(),
        eviction_policy: None,
    })
}

/// `GET /readyz`: the store answers its connection check.
pub(crate) async fn readyz(app: &App, call: Call<'_>) -> Reply {
    let query = call.query;
    if let Err(e) = params::no_params(query) {
        return Reply::bad_request(&e);
    }
    let checked = app.service.check_connection().await;
    // Read after the check, which refreshes it.
    let condition = app.service.store_condition();
    match (checked, condition.problem) {
        (Ok(()), _) => Reply::ok(Health {
            status: "ready".to_owned(),
            eviction_policy: condition.eviction_policy,
        }),
        // The cause is known (wrong password, refused, evicting Redis...): say it. The
        // description holds no secret and no address.
        (Err(QueryError::Unavailable { reason, kind }), Some(problem)) => {
            app.metrics.store_error(kind);
            tracing::warn!(%reason, cause = problem.label(), "not ready");
            Reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                500,
                format!("not ready: {}", problem.describe()),
            )
            .with_retry_after(app.config.retry_after_secs)
        }
        (Err(e), _) => Reply::from_query_error(app, e),
    }
}

/// A task id from a path segment, percent-decoded and validated.
fn task_id(raw: &str) -> Result<TaskId, ValidationError> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ValidationError::new("taskId", "is not valid UTF-8 once percent-decoded"))?;
    TaskId::parse(decoded.as_ref()).map_err(|e| e.for_field("taskId"))
}

/// For a token limited to `client`: `Err(404)` when `{taskId}` is another client's task, as
/// if it did not exist. A malformed or unknown id is left to the route's handler.
pub(crate) async fn task_of_client(
    app: &App,
    raw_id: &str,
    client: &ClientId,
) -> Result<(), Box<Reply>> {
    let Ok(id) = task_id(raw_id) else {
        return Ok(());
    };
    match app.service.get_failed(&id).await {
        Ok(task) if task.client_id() != client => Err(Box::new(Reply::error(
            StatusCode::NOT_FOUND,
            404,
            format!("failed task {id} not found"),
        ))),
        Ok(_) | Err(QueryError::NotFound) => Ok(()),
        Err(e) => Err(Box::new(Reply::from_query_error(app, e))),
    }
}

/// `POST /codebase-embedder/api/v1/admin/failed-tasks`: one task or an array, all or nothing.
pub(crate) async fn record_tasks(app: &App, call: Call<'_>) -> Reply {
    let (query, body) = (call.query, &call.body[..]);
    if let Err(e) = params::no_params(query) {
        return Reply::bad_request(&e);
    }
    let parsed = match ingest::parse_tasks(body) {
        Ok(tasks) => tasks,
        Err(e) => return Reply::bad_body(&e),
    };
    if let Some((field, e)) = ingest::too_many_files(&parsed, app.config.max_failed_files) {
        return Reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            413,
            format!("invalid body: {field}: {e} (setting max_failed_files)"),
        );
    }
    let (tasks, files): (Vec<_>, Vec<_>) = parsed.into_iter().unzip();
    if let Some(token) = call.caller.filter(|t| t.client().is_some()) {
        if let Some(other) = tasks.iter().find(|t| Some(t.client_id()) != token.client()) {
            return Reply::error(
                StatusCode::FORBIDDEN,
                403,
                format!(
                    "the token {:?} is limited to client {} and cannot record task {} of client {}",
                    token.name(),
                    token.client().map(ClientId::as_str).unwrap_or_default(),
                    other.task_id(),
                    other.client_id()
                ),
            );
        }
    }
    match app.service.record_failures_with_files(&tasks, &files).await {
        Ok(outcomes) => {
            let created = outcomes
                .iter()
                .filter(|o| **o == RecordOutcome::Created)
                .count();
            let past_retention: Vec<String> = app
                .service
                .past_retention(&tasks)
                .into_iter()
                .map(ToString::to_string)
                .collect();
            tracing::info!(
                recorded = tasks.len(),
                created,
                past_retention = past_retention.len(),
                "failures recorded"
            );
            Reply::ok(Recorded {
                recorded: tasks.len() as u64,
                created: created as u64,
                updated: (tasks.len() - created) as u64,
                past_retention,
            })
        }
        // A FailTime refused by the use case is a body field.
        Err(QueryError::BadRequest(e)) => Reply::bad_body(&e),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// Append what the caller did to the audit log (after it was done): the token's name, the
/// reason it gave, the request's id. A request without a token (a route open to anyone)
/// changes nothing that is audited.
async fn audited(app: &App, call: &Call<'_>, action: AuditAction, target: String, count: u64) {
    audited_because(app, call, action, target, count, None).await;
}

/// [`audited`], with the reason the action itself carries (a gate's `Reason`) when the
/// caller sent no `X-Reason`.
async fn audited_because(
    app: &App,
    call: &Call<'_>,
    action: AuditAction,
    target: String,
    count: u64,
    own_reason: Option<&str>,
) {
    let Some(token) = call.caller else {
        return;
    };
    app.service
        .audit(AuditEntry {
            time: Timestamp::now(),
            actor: token.name().to_owned(),
            action,
            target,
            reason: call
                .reason
                .clone()
                .or_else(|| own_reason.map(str::to_owned)),
            count,
            request_id: Some(call.request_id.to_owned()),
        })
        .await;
}

/// `DELETE /codebase-embedder/api/v1/admin/failed-tasks/{taskId}`
pub(crate) async fn remove_task(app: &App, call: Call<'_>) -> Reply {
    let (raw_id, query) = (call.param, call.query);
    if let Err(e) = params::no_params(query) {
        return Reply::bad_request(&e);
    }
    let id = match task_id(raw_id) {
        Ok(id) => id,
        Err(e) => return Reply::bad_request(&e),
    };
    match app.service.remove_failed(&id).await {
        Ok(()) => {
            tracing::info!(task_id = %id, "failed task removed");
            audited(app, &call, AuditAction::Remove, id.to_string(), 1).await;
            Reply::ok(Removed {
                removed: 1,
                complete: true,
            })
        }
        Err(QueryError::NotFound) => Reply::error(
            StatusCode::NOT_FOUND,
            404,
            format!("failed task {id} not found"),
        ),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `DELETE /codebase-embedder/api/v1/admin/failed-tasks?filters`: bulk removal.
pub(crate) async fn remove_matching(app: &App, call: Call<'_>) -> Reply {
    let query = call.query;
    let filter = match params::filter_only(query) {
        Ok(f) => f,
        Err(e) => return Reply::bad_request(&e),
    };
    match app.service.remove_matching(&filter).await {
        Ok(done) => {
            tracing::info!(
                removed = done.removed,
                complete = done.complete,
                "bulk removal"
            );
            let target = query.unwrap_or_default().to_owned();
            audited(
                app,
                &call,
                AuditAction::RemoveMatching,
                target,
                done.removed,
            )
            .await;
            Reply::ok(Removed {
                removed: done.removed,
                complete: done.complete,
            })
        }
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `GET /metrics`: Prometheus metrics (OpenMetrics text). The stored-tasks gauge is read
/// from the store at most every few seconds; when the store is down, the last values stay.
pub(crate) async fn metrics(app: &App, call: Call<'_>) -> Reply {
    let query = call.query;
    if let Err(e) = params::no_params(query) {
        return Reply::bad_request(&e);
    }
    app.metrics
        .set_store_condition(&app.service.store_condition());
    if app.metrics.stored_gauge_is_stale() {
        match app.service.count_by_category().await {
            Ok(counts) => {
                for (category, n) in counts {
                    app.metrics.set_stored(category, n);
                }
            }
            Err(
                QueryError::Unavailable { kind, .. }
                | QueryError::Internal { kind, .. }
                | QueryError::StoreFull { kind, .. },
            ) => {
                app.metrics.store_error(kind);
            }
            Err(_) => {}
        }
        if !app.service.notify_targets().is_empty() {
            match app.service.notifications().await {
                Ok(targets) => app.metrics.set_notify(&targets),
                Err(QueryError::Unavailable { kind, .. } | QueryError::Internal { kind, .. }) => {
                    app.metrics.store_error(kind);
                }
                Err(_) => {}
            }
        }
        if app.service.schedules_retries() {
            match app.service.retry_gauges(Timestamp::now()).await {
                Ok(g) => app.metrics.set_retry_gauges(&g),
                Err(QueryError::Unavailable { kind, .. } | QueryError::Internal { kind, .. }) => {
                    app.metrics.store_error(kind);
                }
                Err(_) => {}
            }
            match app.service.retry_gates(Timestamp::now()).await {
                Ok(gates) => app.metrics.set_gate_gauges(&gates),
                Err(QueryError::Unavailable { kind, .. } | QueryError::Internal { kind, .. }) => {
                    app.metrics.store_error(kind);
                }
                Err(_) => {}
            }
        }
        if app.service.breaks_circuits() {
            match app.service.breaker_states().await {
                Ok(states) => app.metrics.set_breaker_gauges(&states),
                Err(QueryError::Unavailable { kind, .. } | QueryError::Internal { kind, .. }) => {
                    app.metrics.store_error(kind);
                }
                Err(_) => {}
            }
        }
    }
    Reply::openmetrics(Bytes::from(app.metrics.encode()))
}

/// `GET /codebase-embedder/api/v1/tasks/failed-stats?window=1h`
pub(crate) async fn failure_stats(app: &App, call: Call<'_>) -> Reply {
    let query = call.query;
    let minutes = match params::stats_window(query) {
        Ok(m) => m,
        Err(e) => return Reply::bad_request(&e),
    };
    match app
        .service
        .failure_stats(minutes, Timestamp::now(), 20)
        .await
    {
        Ok(stats) => Reply::ok(Stats::from(&stats)),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `POST /codebase-embedder/api/v1/admin/task-attempts`: `{"TaskType","Count","At"?}` or an
/// array of them; all validated before any is stored.
pub(crate) async fn record_attempts(app: &App, call: Call<'_>) -> Reply {
    let (query, body) = (call.query, &call.body[..]);
    if let Err(e) = params::no_params(query) {
        return Reply::bad_request(&e);
    }
    let reports = match ingest::parse_attempts(body, Timestamp::now()) {
        Ok(r) => r,
        Err(e) => return Reply::bad_body(&e),
    };
    let mut recorded = 0u64;
    for (task_type, count, at) in &reports {
        if let Err(e) = app.service.report_attempts(task_type, *count, *at).await {
            return Reply::from_query_error(app, e);
        }
        recorded += count;
    }
    Reply::ok(AttemptsRecorded { recorded })
}

/// `POST /codebase-embedder/api/v1/admin/task-successes`: later runs succeeded; the older
/// failures of the same task type, client and codebase are superseded.
pub(crate) async fn record_successes(app: &App, call: Call<'_>) -> Reply {
    let (query, body) = (call.query, &call.body[..]);
    if let Err(e) = params::no_params(query) {
        return Reply::bad_request(&e);
    }
    let successes = match ingest::parse_successes(body, Timestamp::now()) {
        Ok(s) => s,
        Err(e) => return Reply::bad_body(&e),
    };
    if let Some(token) = call.caller.filter(|t| t.client().is_some()) {
        if let Some(other) = successes
            .iter()
            .find(|s| Some(&s.client_id) != token.client())
        {
            return Reply::error(
                StatusCode::FORBIDDEN,
                403,
                format!(
                    "the token {:?} is limited to client {} and cannot report a success of client {}",
                    token.name(),
                    token.client().map(ClientId::as_str).unwrap_or_default(),
                    other.client_id
                ),
            );
        }
    }
    match app.service.record_successes(&successes).await {
        Ok(superseded) => {
            tracing::info!(reported = successes.len(), superseded, "successes reported");
            Reply::ok(SuccessesRecorded {
                reported: successes.len() as u64,
                superseded,
            })
        }
        // A Time refused by the use case is a body field.
        Err(QueryError::BadRequest(e)) => Reply::bad_body(&e),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `GET /codebase-embedder/api/v1/tasks/failed-groups?pageSize&cursor`
pub(crate) async fn failure_groups(app: &App, call: Call<'_>) -> Reply {
    let query = call.query;
    let q = match params::group_query(query, app.config.page_limits) {
        Ok(q) => q,
        Err(e) => return Reply::bad_request(&e),
    };
    let items = q.page_size.get() as usize;
    paged(app, Items::Groups, items, async {
        match app.service.list_groups(&q).await {
            Ok(page) => (Reply::ok(GroupList::from(&page)), page.groups.len()),
            Err(e) => (Reply::from_query_error(app, e), 0),
        }
    })
    .await
}

/// `GET /codebase-embedder/api/v1/audit?since&until&actor&action&pageSize&cursor`
pub(crate) async fn audit_log(app: &App, call: Call<'_>) -> Reply {
    let q = match params::audit_query(call.query, app.config.page_limits) {
        Ok(q) => q,
        Err(e) => return Reply::bad_request(&e),
    };
    match app.service.audit_log(&q).await {
        Ok(page) => Reply::ok(AuditList::from(&page)),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `GET /codebase-embedder/api/v1/notifications`: each target and its delivery.
pub(crate) async fn notifications(app: &App, call: Call<'_>) -> Reply {
    if let Err(e) = params::no_params(call.query) {
        return Reply::bad_request(&e);
    }
    match app.service.notifications().await {
        Ok(targets) => Reply::ok(crate::wire::Notifications::from(targets.as_slice())),
        Err(e) => Reply::from_query_error(app, e),
    }
}

fn action(id: &TaskId, attempt: Option<u32>, status: &str) -> Reply {
    Reply::ok(RetryAction {
        task_id: id.to_string(),
        attempt,
        status: status.to_owned(),
    })
}

fn not_found(id: &TaskId) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        404,
        format!("failed task {id} not found"),
    )
}

fn conflict(message: String) -> Reply {
    Reply::error(StatusCode::CONFLICT, 409, message)
}

/// Whether a body says nothing: empty, blanks, or an empty JSON object (what a browser
/// client tends to send with a POST that needs no body).
fn empty_body(body: &[u8]) -> bool {
    let trimmed = body.trim_ascii();
    trimmed.is_empty() || trimmed == b"{}"
}

/// What is wrong with a request to a per-task admin route.
enum BadInput {
    Param(ValidationError),
    Body(ValidationError),
}

impl BadInput {
    fn reply(self) -> Reply {
        match self {
            BadInput::Param(e) => Reply::bad_request(&e),
            BadInput::Body(e) => Reply::bad_body(&e),
        }
    }
}

/// The id of a per-task admin route that takes no parameters and no body.
fn plain_task_route(raw_id: &str, query: Option<&str>, body: &[u8]) -> Result<TaskId, BadInput> {
    params::no_params(query).map_err(BadInput::Param)?;
    if !empty_body(body) {
        return Err(BadInput::Body(ValidationError::new(
            "body",
            "this route takes no body",
        )));
    }
    task_id(raw_id).map_err(BadInput::Param)
}

/// `POST /codebase-embedder/api/v1/admin/failed-tasks/{taskId}/retry`: retry now.
pub(crate) async fn retry_task(app: &App, call: Call<'_>) -> Reply {
    let (raw_id, query, body) = (call.param, call.query, &call.body[..]);
    let id = match plain_task_route(raw_id, query, body) {
        Ok(id) => id,
        Err(bad) => return bad.reply(),
    };
    match app.service.retry_now(&id, Timestamp::now()).await {
        Ok(RetryNow::Scheduled { attempt }) => {
            tracing::info!(task_id = %id, attempt, "retry made due now by an operator");
            audited(app, &call, AuditAction::RetryNow, id.to_string(), 1).await;
            action(&id, Some(attempt), "scheduled")
        }
        Ok(RetryNow::AlreadyDelivered { attempt }) => {
            action(&id, Some(attempt), "already_delivered")
        }
        Ok(RetryNow::Resolved) => conflict(format!(
            "failed task {id} was resolved (its retry succeeded); there is nothing to retry"
        )),
        Ok(RetryNow::NotFound) => not_found(&id),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `DELETE /codebase-embedder/api/v1/admin/failed-tasks/{taskId}/retry`: cancel the
/// scheduled retry.
pub(crate) async fn cancel_retry(app: &App, call: Call<'_>) -> Reply {
    let (raw_id, query) = (call.param, call.query);
    let id = match plain_task_route(raw_id, query, &[]) {
        Ok(id) => id,
        Err(bad) => return bad.reply(),
    };
    match app.service.cancel_retry(&id).await {
        Ok(CancelRetry::Cancelled { attempt }) => {
            tracing::info!(task_id = %id, attempt, "scheduled retry cancelled");
            audited(app, &call, AuditAction::CancelRetry, id.to_string(), 1).await;
            action(&id, Some(attempt), "cancelled")
        }
        Ok(CancelRetry::NotScheduled) => action(&id, None, "not_scheduled"),
        Ok(CancelRetry::AlreadyDelivered { attempt }) => conflict(format!(
            "attempt {attempt} of failed task {id} was already handed to the workers; it cannot be called back"
        )),
        Ok(CancelRetry::Resolved) => conflict(format!("failed task {id} was resolved")),
        Ok(CancelRetry::NotFound) => not_found(&id),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `POST /codebase-embedder/api/v1/admin/failed-tasks/{taskId}/resolve`: the retry
/// succeeded.
pub(crate) async fn resolve_task(app: &App, call: Call<'_>) -> Reply {
    let (raw_id, query, body) = (call.param, call.query, &call.body[..]);
    let id = match plain_task_route(raw_id, query, body) {
        Ok(id) => id,
        Err(bad) => return bad.reply(),
    };
    match app.service.resolve(&id, Timestamp::now()).await {
        Ok(Resolve::Resolved) => {
            tracing::info!(task_id = %id, "failed task resolved");
            audited(app, &call, AuditAction::Resolve, id.to_string(), 1).await;
            action(&id, None, "resolved")
        }
        Ok(Resolve::AlreadyResolved) => action(&id, None, "already_resolved"),
        Ok(Resolve::NotFound) => not_found(&id),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `POST /codebase-embedder/api/v1/admin/retries?filters`: retry every match now.
pub(crate) async fn retry_matching(app: &App, call: Call<'_>) -> Reply {
    let (query, body) = (call.query, &call.body[..]);
    if !empty_body(body) {
        return Reply::bad_body(&ValidationError::new(
            "body",
            "this route takes no body; the filters go in the query string",
        ));
    }
    let filter = match params::filter_only(query) {
        Ok(f) => f,
        Err(e) => return Reply::bad_request(&e),
    };
    match app.service.retry_matching(&filter, Timestamp::now()).await {
        Ok(done) => {
            tracing::info!(
                retried = done.retried,
                already_delivered = done.already_delivered,
                complete = done.complete,
                "bulk retry"
            );
            let target = query.unwrap_or_default().to_owned();
            audited(app, &call, AuditAction::RetryMatching, target, done.retried).await;
            let replay_id = if done.complete {
                done_replay(app, &call, filter, done.retried, done.already_delivered).await
            } else {
                None
            };
            Reply::ok(BulkRetried {
                retried: done.retried,
                already_delivered: done.already_delivered,
                complete: done.complete,
                replay_id,
            })
        }
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `POST /codebase-embedder/api/v1/admin/retry-gates`: hold or pace the retries of a scope.
pub(crate) async fn create_gate(app: &App, call: Call<'_>) -> Reply {
    let (query, body) = (call.query, &call.body[..]);
    if let Err(e) = params::no_params(query) {
        return Reply::bad_request(&e);
    }
    let request = match ingest::parse_gate(body) {
        Ok(r) => r,
        Err(e) => return Reply::bad_body(&e),
    };
    match app.service.create_gate(request, Timestamp::now()).await {
        Ok(Some(gate)) => {
            tracing::info!(
                gate = %gate.id,
                mode = gate.mode.as_str(),
                per_second = gate.mode.per_second(),
                reason = gate.reason.as_str(),
                "retry gate created"
            );
            let (id, reason) = (gate.id.to_string(), Some(gate.reason.as_str()));
            audited_because(app, &call, AuditAction::GateCreated, id, 0, reason).await;
            Reply::ok(GateAction {
                gate_id: gate.id.to_string(),
                status: "created".to_owned(),
            })
        }
        Ok(None) => conflict(format!(
            "{} retry gates are active already; release one first",
            failed_tasks_domain::gate::MAX_ACTIVE_GATES
        )),
        Err(QueryError::BadRequest(e)) => Reply::bad_body(&e),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `GET /codebase-embedder/api/v1/retry-gates`: the active gates and what they hold.
pub(crate) async fn retry_gates(app: &App, call: Call<'_>) -> Reply {
    if let Err(e) = params::no_params(call.query) {
        return Reply::bad_request(&e);
    }
    match app.service.retry_gates(Timestamp::now()).await {
        Ok(gates) => Reply::ok(RetryGates::from(gates.as_slice())),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `GET /codebase-embedder/api/v1/retry-breakers`: the breakers open, half-open or closed
/// lately, and their settings.
pub(crate) async fn retry_breakers(app: &App, call: Call<'_>) -> Reply {
    if let Err(e) = params::no_params(call.query) {
        return Reply::bad_request(&e);
    }
    match app.service.retry_breakers(Timestamp::now()).await {
        Ok(views) => Reply::ok(RetryBreakers::new(&views, app.service.breaker_config())),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `DELETE /codebase-embedder/api/v1/admin/retry-gates/{gateId}`: release a gate.
pub(crate) async fn release_gate(app: &App, call: Call<'_>) -> Reply {
    if let Err(e) = params::no_params(call.query) {
        return Reply::bad_request(&e);
    }
    let id = match GateId::parse(call.param) {
        Ok(id) => id,
        Err(e) => return Reply::bad_request(&e),
    };
    match app.service.release_gate(&id).await {
        Ok(true) => {
            tracing::info!(gate = %id, "retry gate released");
            audited(app, &call, AuditAction::GateReleased, id.to_string(), 0).await;
            Reply::ok(GateAction {
                gate_id: id.to_string(),
                status: "released".to_owned(),
            })
        }
        Ok(false) => Reply::error(
            StatusCode::NOT_FOUND,
            404,
            format!("retry gate {id} not found"),
        ),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// Who a replay is by: the token's name (`anonymous` when the server needs no token).
fn actor(call: &Call<'_>) -> String {
    call.caller
        .map_or_else(|| "anonymous".to_owned(), |t| t.name().to_owned())
}

/// Keep a complete bulk retry as a replay that is done: its id, or `None` (a store without
/// replays, or one that failed to keep it: logged, the retry stands).
async fn done_replay(
    app: &App,
    call: &Call<'_>,
    filter: failed_tasks_domain::TaskFilter,
    retried: u64,
    already_delivered: u64,
) -> Option<String> {
    let reason = call
        .reason
        .as_deref()
        .and_then(|r| failed_tasks_domain::GateReason::parse(r).ok())
        .or_else(|| failed_tasks_domain::GateReason::parse("bulk retry").ok())?;
    let request = failed_tasks_query::ReplayRequest {
        filter,
        reason,
        actor: actor(call),
        pace: None,
    };
    let visited = retried + already_delivered;
    match app
        .service
        .record_done_replay(request, visited, retried, Timestamp::now())
        .await
    {
        Ok(id) => id.map(|id| id.to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "the bulk retry's replay could not be kept");
            None
        }
    }
}

/// `POST /codebase-embedder/api/v1/admin/replays`: a dry run, or a replay that retries
/// every match of the filters at its pace in the background.
pub(crate) async fn create_replay(app: &App, call: Call<'_>) -> Reply {
    if let Err(e) = params::no_params(call.query) {
        return Reply::bad_request(&e);
    }
    let ask = match ingest::parse_replay(&call.body) {
        Ok(a) => a,
        Err(e) => return Reply::bad_body(&e),
    };
    if ask.dry_run {
        return match app.service.preview_replay(&ask.filter).await {
            Ok(p) => Reply::ok(ReplayPreview {
                matching: p.matching,
                sample_task_ids: p.sample.iter().map(ToString::to_string).collect(),
            }),
            Err(QueryError::BadRequest(e)) => Reply::bad_body(&e),
            Err(e) => Reply::from_query_error(app, e),
        };
    }
    let request = failed_tasks_query::ReplayRequest {
        filter: ask.filter,
        reason: ask.reason,
        actor: actor(&call),
        pace: ask.pace,
    };
    match app.service.create_replay(request, Timestamp::now()).await {
        Ok(replay) => {
            tracing::info!(
                replay = %replay.id,
                matched = replay.matched,
                per_second = replay.pace.map(failed_tasks_domain::ReplayPace::get),
                reason = replay.reason.as_str(),
                "replay created"
            );
            let (id, reason) = (replay.id.to_string(), Some(replay.reason.as_str()));
            audited_because(
                app,
                &call,
                AuditAction::ReplayCreated,
                id,
                replay.matched,
                reason,
            )
            .await;
            Reply::ok(ReplayCreated {
                replay_id: replay.id.to_string(),
                matching: replay.matched,
            })
        }
        Err(QueryError::BadRequest(e)) => Reply::bad_body(&e),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// The replay id of the path; errors name `replayId`.
fn replay_id(raw: &str) -> Result<ReplayId, ValidationError> {
    ReplayId::parse(raw).map_err(|e| e.for_field("replayId"))
}

fn replay_not_found(id: &ReplayId) -> Reply {
    Reply::error(StatusCode::NOT_FOUND, 404, format!("replay {id} not found"))
}

/// `GET /codebase-embedder/api/v1/replays`: the most recent replays, newest first.
pub(crate) async fn list_replays(app: &App, call: Call<'_>) -> Reply {
    if let Err(e) = params::no_params(call.query) {
        return Reply::bad_request(&e);
    }
    match app.service.replays(RECENT_REPLAYS).await {
        Ok(all) => Reply::ok(ReplayList {
            replays: all.iter().map(WireReplay::from).collect(),
        }),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// How many replays `GET …/replays` shows.
const RECENT_REPLAYS: usize = 100;

/// `GET /codebase-embedder/api/v1/replays/{replayId}`: one replay and its progress.
pub(crate) async fn get_replay(app: &App, call: Call<'_>) -> Reply {
    if let Err(e) = params::no_params(call.query) {
        return Reply::bad_request(&e);
    }
    let id = match replay_id(call.param) {
        Ok(id) => id,
        Err(e) => return Reply::bad_request(&e),
    };
    let replay = match app.service.replay(&id).await {
        Ok(r) => r,
        Err(QueryError::NotFound) => return replay_not_found(&id),
        Err(e) => return Reply::from_query_error(app, e),
    };
    match app.service.replay_outcomes(&id).await {
        Ok(o) => Reply::ok(ReplayDetail {
            replay: WireReplay::from(&replay),
            tracked: o.tracked,
            delivered: o.delivered,
            resolved: o.resolved,
            failed_again: o.failed_again,
        }),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `DELETE /codebase-embedder/api/v1/admin/replays/{replayId}`: abort a running replay and
/// cancel the retries it made due that still wait.
pub(crate) async fn abort_replay(app: &App, call: Call<'_>) -> Reply {
    if let Err(e) = params::no_params(call.query) {
        return Reply::bad_request(&e);
    }
    let id = match replay_id(call.param) {
        Ok(id) => id,
        Err(e) => return Reply::bad_request(&e),
    };
    match app.service.abort_replay(&id, Timestamp::now()).await {
        Ok(ReplayAbort::Aborted { replay, cancelled }) => {
            tracing::info!(replay = %id, cancelled, visited = replay.progress.visited, "replay aborted");
            audited(
                app,
                &call,
                AuditAction::ReplayAborted,
                id.to_string(),
                cancelled,
            )
            .await;
            Reply::ok(ReplayAborted {
                replay_id: id.to_string(),
                status: "aborted".to_owned(),
                cancelled,
            })
        }
        Ok(ReplayAbort::Finished(state)) => conflict(format!(
            "replay {id} has ended already ({})",
            state.as_str()
        )),
        Ok(ReplayAbort::NotFound) => replay_not_found(&id),
        Err(e) => Reply::from_query_error(app, e),
    }
}
