//! Routing: method and path to a handler, auth, and the state every handler shares.

use std::time::Duration;

use failed_tasks_domain::PageLimits;
use failed_tasks_query::FailedTaskService;
use http_body_util::BodyExt;
use hyper::{Method, Request, StatusCode};

use crate::auth::{self, Token};
use crate::body::Budget;
use crate::handlers::{self, Reply};
use crate::metrics::Metrics;
use crate::ui;

/// The contract's path prefix.
pub const BASE_PATH: &str = "/codebase-embedder/api/v1";

/// Every route served: its path template (OpenAPI style) and the methods it answers.
/// `docs/openapi.yaml` documents exactly this set (a test checks it).
pub const ROUTES: &[(&str, &[&str])] = &[
    (LIST_FAILED, &["GET"]),
    (GET_FAILED, &["GET"]),
    (ADMIN_TASKS, &["POST", "DELETE"]),
    (ADMIN_TASK, &["DELETE"]),
    (ADMIN_TASK_RETRY, &["POST", "DELETE"]),
    (ADMIN_TASK_RESOLVE, &["POST"]),
    (ADMIN_RETRIES, &["POST"]),
    (FAILED_STATS, &["GET"]),
    (FAILED_GROUPS, &["GET"]),
    (TASK_ATTEMPTS, &["POST"]),
    (HEALTHZ, &["GET"]),
    (READYZ, &["GET"]),
    (METRICS, &["GET"]),
];

/// The dashboard's routes (static files, see `failed-tasks-ui`): served by the same router,
/// open (the data they show comes from the API, which checks tokens), and not part of the
/// API, so `docs/openapi.yaml` leaves them out (a test checks that too).
pub const UI_ROUTES: &[(&str, &[&str])] = &[(UI_ROOT, &["GET"]), (UI_ASSET, &["GET"])];

const UI_ROOT: &str = "/ui";
const UI_ASSET: &str = "/ui/{asset}";
const LIST_FAILED: &str = "/codebase-embedder/api/v1/tasks/failed";
const GET_FAILED: &str = "/codebase-embedder/api/v1/tasks/failed/{taskId}";
const ADMIN_TASKS: &str = "/codebase-embedder/api/v1/admin/failed-tasks";
const ADMIN_TASK: &str = "/codebase-embedder/api/v1/admin/failed-tasks/{taskId}";
const ADMIN_TASK_RETRY: &str = "/codebase-embedder/api/v1/admin/failed-tasks/{taskId}/retry";
const ADMIN_TASK_RESOLVE: &str = "/codebase-embedder/api/v1/admin/failed-tasks/{taskId}/resolve";
const ADMIN_RETRIES: &str = "/codebase-embedder/api/v1/admin/retries";
const FAILED_STATS: &str = "/codebase-embedder/api/v1/tasks/failed-stats";
const FAILED_GROUPS: &str = "/codebase-embedder/api/v1/tasks/failed-groups";
const TASK_ATTEMPTS: &str = "/codebase-embedder/api/v1/admin/task-attempts";
const HEALTHZ: &str = "/healthz";
const READYZ: &str = "/readyz";
const METRICS: &str = "/metrics";

/// Limits and settings of the HTTP adapter. [`HttpConfig::default`] holds the defaults of the
/// connection limits; the binary's settings start from it.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Default and maximum `pageSize`.
    pub page_limits: PageLimits,
    /// How long a client may take to send a complete request head (and its first byte).
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request body.
    pub body_read_timeout: Duration,
    /// Largest accepted request body, in bytes (413 beyond).
    pub max_body_bytes: u64,
    /// Largest accepted request head, in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Most connections served at once. At the cap, a new connection closes the connection
    /// that has been idle longest (nothing in flight) instead of waiting; only when every
    /// connection is busy does it wait in the accept queue.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed (HTTP/2 with a GOAWAY;
    /// HTTP/1 keep-alive also ends at `header_read_timeout`, whichever comes first).
    pub idle_timeout: Duration,
    /// A response that makes no progress for this long (the client takes none of its next
    /// 64 KiB, or the socket accepts no byte) is dropped together with its connection.
    pub write_stall_timeout: Duration,
    /// Response bytes held for all clients at once (built, not yet taken by the client's
    /// connection). A larger response that does not fit is answered 503 with `Retry-After`.
    pub max_response_bytes_in_flight: u64,
    /// The same limit per connection (HTTP/2 runs many responses on one connection).
    pub max_connection_response_bytes: u64,
    /// Most concurrent HTTP/2 streams (requests) per connection.
    pub h2_max_concurrent_streams: u32,
    /// Interval of HTTP/2 keep-alive pings.
    pub h2_keep_alive_interval: Duration,
    /// An HTTP/2 connection whose keep-alive ping is not answered within this is closed.
    pub h2_keep_alive_timeout: Duration,
    /// The `Retry-After` value sent with 503, in seconds.
    pub retry_after_secs: u32,
    /// Bearer token of the admin routes; `None` disables them (403), never opens them.
    pub admin_token: Option<Token>,
    /// Bearer token the read routes require, when set (the admin token is accepted too).
    pub read_token: Option<Token>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            page_limits: PageLimits::DEFAULT,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 16 * 1024,
            max_connections: 4096,
            idle_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(10),
            max_response_bytes_in_flight: 32 * 1024 * 1024,
            max_connection_response_bytes: 16 * 1024 * 1024,
            h2_max_concurrent_streams: 100,
            h2_keep_alive_interval: Duration::from_secs(20),
            h2_keep_alive_timeout: Duration::from_secs(20),
            retry_after_secs: 5,
            admin_token: None,
            read_token: None,
        }
    }
}

/// Everything a request needs: the use cases, the HTTP settings and the metrics. Share it
/// in an `Arc`.
#[derive(Debug)]
pub struct App {
    /// The use cases.
    pub service: FailedTaskService,
    /// The HTTP settings.
    pub config: HttpConfig,
    /// The server's metrics, served at `/metrics`.
    pub metrics: Metrics,
    /// The response-bytes caps of `config`, shared by every connection.
    pub(crate) budget: Budget,
}

impl App {
    /// An app with fresh metrics.
    pub fn new(service: FailedTaskService, config: HttpConfig) -> Self {
        let metrics = Metrics::with_retry_counters(service.retry_counters().clone());
        let budget = Budget::new(
            config.max_response_bytes_in_flight,
            config.max_connection_response_bytes,
            metrics.response_bytes(),
        );
        Self {
            service,
            config,
            metrics,
            budget,
        }
    }
}

/// The routes this adapter serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    ListFailed,
    GetFailed(String),
    AdminTasks,
    AdminTask(String),
    AdminTaskRetry(String),
    AdminTaskResolve(String),
    AdminRetries,
    Stats,
    Groups,
    Attempts,
    Healthz,
    Readyz,
    Metrics,
    /// `/ui`: redirected to `/ui/`.
    UiRoot,
    /// `/ui/{asset}`: a dashboard file (empty: the page itself).
    UiAsset(String),
    NotFound,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Open,
    Read,
    Admin,
}

impl Route {
    /// The route of `path` (already without the query string).
    pub(crate) fn of(path: &str) -> Route {
        match path {
            "/healthz" => return Route::Healthz,
            "/readyz" => return Route::Readyz,
            "/metrics" => return Route::Metrics,
            "/ui" => return Route::UiRoot,
            _ => {}
        }
        if let Some(asset) = path.strip_prefix("/ui/") {
            return Route::UiAsset(asset.to_owned());
        }
        let Some(rest) = path.strip_prefix(BASE_PATH) else {
            return Route::NotFound;
        };
        let item = |prefix: &str| {
            rest.strip_prefix(prefix)
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .map(str::to_owned)
        };
        match rest {
            "/tasks/failed" | "/tasks/failed/" => Route::ListFailed,
            "/admin/failed-tasks" | "/admin/failed-tasks/" => Route::AdminTasks,
            "/tasks/failed-stats" => Route::Stats,
            "/tasks/failed-groups" => Route::Groups,
            "/admin/task-attempts" => Route::Attempts,
            "/admin/retries" => Route::AdminRetries,
            _ => {
                if let Some(id) = item("/tasks/failed/") {
                    Route::GetFailed(id)
                } else if let Some(id) = item("/admin/failed-tasks/") {
                    Route::AdminTask(id)
                } else if let Some((id, action)) = rest
                    .strip_prefix("/admin/failed-tasks/")
                    .and_then(|r| r.split_once('/'))
                    .filter(|(id, action)| !id.is_empty() && !action.contains('/'))
                {
                    match action {
                        "retry" => Route::AdminTaskRetry(id.to_owned()),
                        "resolve" => Route::AdminTaskResolve(id.to_owned()),
                        _ => Route::NotFound,
                    }
                } else {
                    Route::NotFound
                }
            }
        }
    }

    /// A short label for logs and metrics.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Route::ListFailed => "list_failed",
            Route::GetFailed(_) => "get_failed",
            Route::AdminTasks => "admin_tasks",
            Route::AdminTask(_) => "admin_task",
            Route::AdminTaskRetry(_) => "admin_task_retry",
            Route::AdminTaskResolve(_) => "admin_task_resolve",
            Route::AdminRetries => "admin_retries",
            Route::Stats => "failed_stats",
            Route::Groups => "failed_groups",
            Route::Attempts => "task_attempts",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::UiRoot | Route::UiAsset(_) => "ui",
            Route::NotFound => "not_found",
        }
    }

    /// The methods the route answers (what `Allow` lists on 405).
    pub(crate) fn methods(&self) -> &'static [&'static str] {
        let template = match self {
            Route::ListFailed => LIST_FAILED,
            Route::GetFailed(_) => GET_FAILED,
            Route::AdminTasks => ADMIN_TASKS,
            Route::AdminTask(_) => ADMIN_TASK,
            Route::AdminTaskRetry(_) => ADMIN_TASK_RETRY,
            Route::AdminTaskResolve(_) => ADMIN_TASK_RESOLVE,
            Route::AdminRetries => ADMIN_RETRIES,
            Route::Stats => FAILED_STATS,
            Route::Groups => FAILED_GROUPS,
            Route::Attempts => TASK_ATTEMPTS,
            Route::Healthz => HEALTHZ,
            Route::Readyz => READYZ,
            Route::Metrics => METRICS,
            Route::UiRoot => UI_ROOT,
            Route::UiAsset(_) => UI_ASSET,
            Route::NotFound => return &[],
        };
        ROUTES
            .iter()
            .chain(UI_ROUTES)
            .find(|(t, _)| *t == template)
            .map_or(&[], |(_, m)| *m)
    }

    fn access(&self) -> Access {
        match self {
            Route::ListFailed | Route::GetFailed(_) | Route::Stats | Route::Groups => Access::Read,
            Route::AdminTasks
            | Route::AdminTask(_)
            | Route::AdminTaskRetry(_)
            | Route::AdminTaskResolve(_)
            | Route::AdminRetries
            | Route::Attempts => Access::Admin,
            Route::Healthz
            | Route::Readyz
            | Route::Metrics
            | Route::UiRoot
            | Route::UiAsset(_)
            | Route::NotFound => Access::Open,
        }
    }
}

/// Answer one request.
pub(crate) async fn dispatch(app: &App, req: Request<hyper::body::Incoming>) -> Reply {
    let route = Route::of(req.uri().path());
    if route == Route::NotFound {
        return Reply::error(StatusCode::NOT_FOUND, 404, "not found");
    }
    let methods = route.methods();
    if !methods.contains(&req.method().as_str()) {
        return Reply::method_not_allowed(methods);
    }
    if let Some(denied) = check_access(app, route.access(), req.headers()) {
        return denied;
    }
    let declared = content_length(&req);
    if declared.is_some_and(|len| len > app.config.max_body_bytes) {
        return too_large(app);
    }
    let query = req.uri().query().map(str::to_owned);
    let query = query.as_deref();
    let method = req.method().clone();
    match (route, method) {
        (Route::ListFailed, _) => handlers::list_failed(app, query).await,
        (Route::GetFailed(id), _) => handlers::get_failed(app, &id, query).await,
        (Route::Healthz, _) => handlers::healthz(query),
        (Route::Readyz, _) => handlers::readyz(app, query).await,
        (Route::Metrics, _) => handlers::metrics(app, query).await,
        (Route::UiRoot, _) => ui::redirect(query),
        (Route::UiAsset(path), _) => ui::asset(&path, req.headers()),
        (Route::AdminTasks, Method::POST) => match json_body(app, req).await {
            Ok(body) => handlers::record_tasks(app, query, &body).await,
            Err(reply) => reply,
        },
        (Route::Attempts, _) => match json_body(app, req).await {
            Ok(body) => handlers::record_attempts(app, query, &body).await,
            Err(reply) => reply,
        },
        (Route::Stats, _) => handlers::failure_stats(app, query).await,
        (Route::Groups, _) => handlers::failure_groups(app, query).await,
        (Route::AdminTasks, _) => handlers::remove_matching(app, query).await,
        (Route::AdminTask(id), _) => handlers::remove_task(app, &id, query).await,
        (Route::AdminTaskRetry(id), Method::POST) => match read_body(app, req).await {
            Ok(body) => handlers::retry_task(app, &id, query, &body).await,
            Err(reply) => reply,
        },
        (Route::AdminTaskRetry(id), _) => handlers::cancel_retry(app, &id, query).await,
        (Route::AdminTaskResolve(id), _) => match read_body(app, req).await {
            Ok(body) => handlers::resolve_task(app, &id, query, &body).await,
            Err(reply) => reply,
        },
        (Route::AdminRetries, _) => match read_body(app, req).await {
            Ok(body) => handlers::retry_matching(app, query, &body).await,
            Err(reply) => reply,
        },
        (Route::NotFound, _) => Reply::error(StatusCode::NOT_FOUND, 404, "not found"),
    }
}

fn check_access(app: &App, access: Access, headers: &hyper::HeaderMap) -> Option<Reply> {
    let admin = app.config.admin_token.as_ref();
    match access {
        Access::Open => None,
        Access::Read => {
            let read = app.config.read_token.as_ref()?;
            let accepted: Vec<&Token> = [Some(read), admin].into_iter().flatten().collect();
            (!auth::allowed(headers, &accepted)).then(Reply::unauthorized)
        }
        Access::Admin => match admin {
            None => Some(Reply::error(
                StatusCode::FORBIDDEN,
                403,
                "admin API disabled",
            )),
            Some(token) => (!auth::allowed(headers, &[token])).then(Reply::unauthorized),
        },
    }
}

fn is_json<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

fn too_large(app: &App) -> Reply {
    Reply::error(
        StatusCode::PAYLOAD_TOO_LARGE,
        413,
        format!(
            "request body exceeds the {} byte limit",
            app.config.max_body_bytes
        ),
    )
}

/// A JSON body: one unambiguous content type, the right one, not encoded, read under the
/// limits.
async fn json_body(app: &App, req: Request<hyper::body::Incoming>) -> Result<bytes::Bytes, Reply> {
    if req
        .headers()
        .get_all(hyper::header::CONTENT_TYPE)
        .iter()
        .count()
        > 1
    {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            400,
            "invalid header Content-Type: given more than once",
        ));
    }
    if !is_json(&req) {
        return Err(Reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
            "Content-Type must be application/json",
        ));
    }
    if let Some(encoding) = unsupported_encoding(req.headers()) {
        return Err(Reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
            format!("Content-Encoding {encoding:?} is not supported; send the body unencoded"),
        ));
    }
    read_body(app, req).await
}

/// The first coding of `Content-Encoding` other than `identity`, if any: bodies are read
/// as they arrive, never decompressed, so any other coding would be stored as garbage.
fn unsupported_encoding(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get_all(hyper::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| {
            let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
            text.split(',')
                .map(|c| c.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .find(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"))
}

/// Read the body under the size limit and the body-read timeout.
async fn read_body(app: &App, req: Request<hyper::body::Incoming>) -> Result<bytes::Bytes, Reply> {
    let limit = usize::try_from(app.config.max_body_bytes).unwrap_or(usize::MAX);
    let body = http_body_util::Limited::new(req.into_body(), limit);
    match tokio::time::timeout(app.config.body_read_timeout, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(app)),
        Ok(Err(_)) => Err(Reply::error(
            StatusCode::BAD_REQUEST,
            400,
            "the request body could not be read",
        )),
        Err(_) => Err(Reply::error(
            StatusCode::REQUEST_TIMEOUT,
            408,
            "the request body was not received in time",
        )),
    }
}

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(hyper::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let table = [
            ("/codebase-embedder/api/v1/tasks/failed", Route::ListFailed),
            ("/codebase-embedder/api/v1/tasks/failed/", Route::ListFailed),
            (
                "/codebase-embedder/api/v1/tasks/failed/task_001",
                Route::GetFailed("task_001".into()),
            ),
            (
                "/codebase-embedder/api/v1/tasks/failed/a/b",
                Route::NotFound,
            ),
            (
                "/codebase-embedder/api/v1/admin/failed-tasks",
                Route::AdminTasks,
            ),
            (
                "/codebase-embedder/api/v1/admin/failed-tasks/x",
                Route::AdminTask("x".into()),
            ),
            (
                "/codebase-embedder/api/v1/admin/failed-tasks/x/retry",
                Route::AdminTaskRetry("x".into()),
            ),
            (
                "/codebase-embedder/api/v1/admin/failed-tasks/a%2Fb/resolve",
                Route::AdminTaskResolve("a%2Fb".into()),
            ),
            (
                "/codebase-embedder/api/v1/admin/failed-tasks/x/other",
                Route::NotFound,
            ),
            (
                "/codebase-embedder/api/v1/admin/failed-tasks/x/retry/y",
                Route::NotFound,
            ),
            (
                "/codebase-embedder/api/v1/admin/failed-tasks//retry",
                Route::NotFound,
            ),
            (
                "/codebase-embedder/api/v1/admin/retries",
                Route::AdminRetries,
            ),
            ("/codebase-embedder/api/v1/tasks", Route::NotFound),
            ("/codebase-embedder/api/v2/tasks/failed", Route::NotFound),
            ("/healthz", Route::Healthz),
            ("/readyz", Route::Readyz),
            ("/metrics", Route::Metrics),
            ("/ui", Route::UiRoot),
            ("/ui/", Route::UiAsset(String::new())),
            ("/ui/views/task.js", Route::UiAsset("views/task.js".into())),
            ("/uix", Route::NotFound),
            ("/", Route::NotFound),
        ];
        for (path, want) in table {
            assert_eq!(Route::of(path), want, "{path}");
        }
    }

    #[test]
    fn every_template_routes_to_a_route_with_its_methods() {
        for (template, methods) in ROUTES.iter().chain(UI_ROUTES) {
            let route = Route::of(&template.replace("{taskId}", "t1").replace("{asset}", "a"));
            assert_ne!(route, Route::NotFound, "{template}");
            assert_eq!(route.methods(), *methods, "{template}");
        }
    }
}
