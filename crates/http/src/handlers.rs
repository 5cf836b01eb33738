//! One function per route, and the [`Reply`] they build.

use bytes::Bytes;
use failed_tasks_domain::{TaskId, ValidationError};
use failed_tasks_query::QueryError;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::params;
use crate::router::App;
use crate::wire::{Envelope, Health, TaskList, WireTask, MSG_QUERY_FAILED, MSG_STORE_UNAVAILABLE};

/// The header carrying the request id, on every response.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// A response before the request id is attached.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    body: Bytes,
    allow_get: bool,
    retry_after: Option<u32>,
}

impl Reply {
    fn json<T: Serialize>(status: StatusCode, envelope: &Envelope<T>) -> Reply {
        // The wire types hold only strings and integers, so serialization cannot fail; if it
        // ever did, answer with a fixed, valid envelope instead of panicking.
        let body = serde_json::to_vec(envelope).map(Bytes::from).unwrap_or_else(|_| {
            Bytes::from_static(
                "{\"Code\":500,\"Message\":\"查询失败任务时发生内部错误\",\"Success\":false,\"Data\":null}"
                    .as_bytes(),
            )
        });
        Reply {
            status,
            body,
            allow_get: false,
            retry_after: None,
        }
    }

    pub(crate) fn ok<T: Serialize>(data: T) -> Reply {
        Self::json(StatusCode::OK, &Envelope::ok(data))
    }

    pub(crate) fn error(status: StatusCode, code: u16, message: impl Into<String>) -> Reply {
        Self::json(status, &Envelope::error(code, message))
    }

    pub(crate) fn method_not_allowed() -> Reply {
        let mut r = Self::error(StatusCode::METHOD_NOT_ALLOWED, 405, "method not allowed");
        r.allow_get = true;
        r
    }

    fn bad_request(e: &ValidationError) -> Reply {
        Self::error(
            StatusCode::BAD_REQUEST,
            400,
            format!("invalid parameter {e}"),
        )
    }

    fn unavailable(retry_after: u32) -> Reply {
        // The contract keeps the source's body (`Code` 500) but answers HTTP 503.
        let mut r = Self::error(StatusCode::SERVICE_UNAVAILABLE, 500, MSG_STORE_UNAVAILABLE);
        r.retry_after = Some(retry_after);
        r
    }

    /// Map a use-case error, logging what clients must not see.
    fn from_query_error(app: &App, err: QueryError) -> Reply {
        match err {
            QueryError::Unavailable { reason } => {
                tracing::warn!(%reason, "status store unavailable");
                Self::unavailable(app.config.retry_after_secs)
            }
            QueryError::Internal { detail } => {
                tracing::error!(%detail, "query failed");
                Self::error(StatusCode::INTERNAL_SERVER_ERROR, 500, MSG_QUERY_FAILED)
            }
            QueryError::BadRequest(e) => Self::bad_request(&e),
            QueryError::NotFound => Self::error(StatusCode::NOT_FOUND, 404, "not found"),
        }
    }

    pub(crate) fn into_response(self, request_id: &str) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(self.body));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.allow_get {
            h.insert(ALLOW, HeaderValue::from_static("GET"));
        }
        if let Some(secs) = self.retry_after {
            h.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(REQUEST_ID, v);
        }
        resp
    }
}

/// `GET /codebase-embedder/api/v1/tasks/failed`
pub(crate) async fn list_failed(app: &App, query: Option<&str>) -> Reply {
    let q = match params::list_query(query, app.config.page_limits) {
        Ok(q) => q,
        Err(e) => return Reply::bad_request(&e),
    };
    match app.service.list_failed(&q).await {
        Ok(page) => {
            if page.skipped_corrupt > 0 {
                tracing::warn!(
                    skipped = page.skipped_corrupt,
                    "corrupt records left out of the page"
                );
            }
            Reply::ok(TaskList::from(&page))
        }
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `GET /codebase-embedder/api/v1/tasks/failed/{taskId}` (the id percent-decoded)
pub(crate) async fn get_failed(app: &App, raw_id: &str, query: Option<&str>) -> Reply {
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
    match app.service.get_failed(&id).await {
        Ok(task) => Reply::ok(WireTask::from(&task)),
        Err(QueryError::NotFound) => Reply::error(
            StatusCode::NOT_FOUND,
            404,
            format!("failed task {id} not found"),
        ),
        Err(e) => Reply::from_query_error(app, e),
    }
}

/// `GET /healthz`: the process is alive; never touches the store.
pub(crate) fn healthz(query: Option<&str>) -> Reply {
    if let Err(e) = params::no_params(query) {
        return Reply::bad_request(&e);
    }
    Reply::ok(Health {
        status: "alive".to_owned(),
    })
}

/// `GET /readyz`: the store answers its connection check.
pub(crate) async fn readyz(app: &App, query: Option<&str>) -> Reply {
    if let Err(e) = params::no_params(query) {
        return Reply::bad_request(&e);
    }
    match app.service.check_connection().await {
        Ok(()) => Reply::ok(Health {
            status: "ready".to_owned(),
        }),
        Err(e) => Reply::from_query_error(app, e),
    }
}
