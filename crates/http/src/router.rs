//! Routing: method and path to a handler, and the state every handler shares.

use std::time::Duration;

use bytes::Bytes;
use failed_tasks_domain::PageLimits;
use failed_tasks_query::FailedTaskService;
use http_body_util::Full;
use hyper::{Method, Request, Response};

use crate::handlers::{self, Reply};

/// The contract's path prefix.
pub const BASE_PATH: &str = "/codebase-embedder/api/v1";

/// Limits and settings of the HTTP adapter. Defaults live in the binary's flags.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Default and maximum `pageSize`.
    pub page_limits: PageLimits,
    /// How long a client may take to send a complete request head (and its first byte).
    pub header_read_timeout: Duration,
    /// Largest accepted request body, in bytes (413 beyond).
    pub max_body_bytes: u64,
    /// Largest accepted request head, in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Most connections served at once; further ones wait in the accept queue.
    pub max_connections: usize,
    /// The `Retry-After` value sent with 503, in seconds.
    pub retry_after_secs: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            page_limits: PageLimits::DEFAULT,
            header_read_timeout: Duration::from_secs(10),
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 16 * 1024,
            max_connections: 4096,
            retry_after_secs: 5,
        }
    }
}

/// Everything a request needs: the use cases and the HTTP settings. Share it in an `Arc`.
#[derive(Debug, Clone)]
pub struct App {
    /// The use cases.
    pub service: FailedTaskService,
    /// The HTTP settings.
    pub config: HttpConfig,
}

/// The routes this adapter serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    ListFailed,
    GetFailed(String),
    Healthz,
    Readyz,
    NotFound,
}

impl Route {
    /// The route of `path` (already without the query string).
    pub(crate) fn of(path: &str) -> Route {
        match path {
            "/healthz" => return Route::Healthz,
            "/readyz" => return Route::Readyz,
            _ => {}
        }
        let Some(rest) = path.strip_prefix(BASE_PATH) else {
            return Route::NotFound;
        };
        match rest {
            "/tasks/failed" | "/tasks/failed/" => Route::ListFailed,
            _ => match rest.strip_prefix("/tasks/failed/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Route::GetFailed(id.to_owned()),
                _ => Route::NotFound,
            },
        }
    }

    /// A short label for logs and metrics.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Route::ListFailed => "list_failed",
            Route::GetFailed(_) => "get_failed",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::NotFound => "not_found",
        }
    }
}

/// Answer one request.
pub(crate) async fn dispatch(app: &App, req: Request<hyper::body::Incoming>) -> Reply {
    let route = Route::of(req.uri().path());
    if route == Route::NotFound {
        return Reply::error(hyper::StatusCode::NOT_FOUND, 404, "not found");
    }
    if req.method() != Method::GET {
        return Reply::method_not_allowed();
    }
    if let Some(len) = content_length(&req) {
        if len > app.config.max_body_bytes {
            return Reply::error(
                hyper::StatusCode::PAYLOAD_TOO_LARGE,
                413,
                format!(
                    "request body of {len} bytes exceeds the {} byte limit",
                    app.config.max_body_bytes
                ),
            );
        }
    }
    let query = req.uri().query();
    match route {
        Route::ListFailed => handlers::list_failed(app, query).await,
        Route::GetFailed(id) => handlers::get_failed(app, &id, query).await,
        Route::Healthz => handlers::healthz(query),
        Route::Readyz => handlers::readyz(app, query).await,
        Route::NotFound => Reply::error(hyper::StatusCode::NOT_FOUND, 404, "not found"),
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

/// Turn a reply into a response with the request id attached.
pub(crate) fn into_response(reply: Reply, request_id: &str) -> Response<Full<Bytes>> {
    reply.into_response(request_id)
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
            ("/codebase-embedder/api/v1/tasks", Route::NotFound),
            ("/codebase-embedder/api/v2/tasks/failed", Route::NotFound),
            ("/healthz", Route::Healthz),
            ("/readyz", Route::Readyz),
            ("/", Route::NotFound),
        ];
        for (path, want) in table {
            assert_eq!(Route::of(path), want, "{path}");
        }
    }
}
