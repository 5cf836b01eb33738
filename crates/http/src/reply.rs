//! [`Reply`]: an answer before the request id is attached, in the envelope (the dashboard's
//! static files excepted), and the
//! mapping of the use cases' errors onto the contract's statuses and messages.

use bytes::Bytes;

use failed_tasks_domain::ValidationError;
use failed_tasks_query::QueryError;
use hyper::header::{HeaderName, HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio::sync::OwnedSemaphorePermit;

use crate::app::App;
use crate::body::{Payload, PayloadWriter};
use crate::wire::{Envelope, MSG_QUERY_FAILED, MSG_STORE_FULL, MSG_STORE_UNAVAILABLE};

/// The header carrying the request id, on every response.
pub(crate) const REQUEST_ID: &str = "x-request-id";

/// A response before the request id is attached.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    body: Payload,
    content_type: &'static str,
    allow: Option<Vec<&'static str>>,
    challenge: bool,
    retry_after: Option<u32>,
    /// Further headers (the dashboard's caching and security headers).
    extra: Vec<(HeaderName, HeaderValue)>,
    /// Room under the response-bytes cap taken before the answer was built, if any.
    room: Option<OwnedSemaphorePermit>,
    /// Whether the answer is subject to the response-bytes caps (all but `/metrics`, which
    /// must keep answering while they are full).
    capped: bool,
}

impl Reply {
    /// An answer with nothing but a status, a body and its type; `capped`: subject to the
    /// response-bytes caps.
    fn plain(status: StatusCode, body: Payload, content_type: &'static str, capped: bool) -> Reply {
        Reply {
            status,
            body,
            content_type,
            allow: None,
            challenge: false,
            retry_after: None,
            extra: Vec::new(),
            room: None,
            capped,
        }
    }

    pub(crate) fn json<T: Serialize>(status: StatusCode, envelope: &Envelope<T>) -> Reply {
        // The wire types hold only strings and integers, so serialization fails only when
        // memory for the body cannot be had; then answer with a fixed, valid envelope.
        let mut out = PayloadWriter::default();
        let body = match serde_json::to_writer(&mut out, envelope) {
            Ok(()) => out.finish(),
            Err(_) => Payload::from(Bytes::from_static(
                "{\"Code\":500,\"Message\":\"查询失败任务时发生内部错误\",\"Success\":false,\"Data\":null}"
                    .as_bytes(),
            )),
        };
        Self::plain(status, body, "application/json", true)
    }

    /// A 200 whose body is already a complete success envelope.
    pub(crate) fn ok_json_payload(body: Payload) -> Reply {
        Self::plain(StatusCode::OK, body, "application/json", true)
    }

    pub(crate) fn ok<T: Serialize>(data: T) -> Reply {
        Self::json(StatusCode::OK, &Envelope::ok(data))
    }

    pub(crate) fn error(status: StatusCode, code: u16, message: impl Into<String>) -> Reply {
        Self::json(status, &Envelope::error(code, message))
    }

    /// 503 when the answer does not fit the response-bytes caps: too many large answers are
    /// waiting for clients that do not read them.
    pub(crate) fn busy(retry_after: u32) -> Reply {
        let mut r = Self::error(
            StatusCode::SERVICE_UNAVAILABLE,
            503,
            "server busy: too many large answers are waiting for their clients; retry later",
        );
        r.retry_after = Some(retry_after);
        r
    }

    /// An answer with these bytes and headers as they are (no envelope; an empty content
    /// type sends none), for the dashboard's static files.
    pub(crate) fn raw(
        status: StatusCode,
        body: Bytes,
        content_type: &'static str,
        extra: Vec<(HeaderName, HeaderValue)>,
    ) -> Reply {
        Reply {
            status,
            body: Payload::from(body),
            content_type,
            allow: None,
            challenge: false,
            retry_after: None,
            extra,
            room: None,
            capped: true,
        }
    }

    /// A 200 whose body is streamed (see [`Payload::streamed`]), with these headers.
    pub(crate) fn streamed(
        body: Payload,
        content_type: &'static str,
        extra: Vec<(HeaderName, HeaderValue)>,
    ) -> Reply {
        let mut r = Self::plain(StatusCode::OK, body, content_type, true);
        r.extra = extra;
        r
    }

    /// The same answer with these headers added.
    pub(crate) fn with_headers(mut self, headers: Vec<(HeaderName, HeaderValue)>) -> Reply {
        self.extra.extend(headers);
        self
    }

    /// A 200 in the Prometheus text format (`/metrics`), not subject to the response-bytes
    /// caps: it must keep answering while they are full.
    pub(crate) fn openmetrics(body: Bytes) -> Reply {
        Self::plain(
            StatusCode::OK,
            Payload::from(body),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            false,
        )
    }

    /// The same answer with a `Retry-After` of `secs`.
    pub(crate) fn with_retry_after(mut self, secs: u32) -> Reply {
        self.retry_after = Some(secs);
        self
    }

    /// The size of the body.
    pub(crate) fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Whether the answer is subject to the response-bytes caps.
    pub(crate) fn capped(&self) -> bool {
        self.capped
    }

    /// The room taken for this answer before it was built (see [`crate::body::Budget::room_for`]).
    pub(crate) fn take_room(&mut self) -> Option<OwnedSemaphorePermit> {
        self.room.take()
    }

    pub(crate) fn with_room(mut self, room: Option<OwnedSemaphorePermit>) -> Reply {
        self.room = room;
        self
    }

    /// The answer of a request that passed its deadline outside the use case (waiting for
    /// room), the same as the use case's own.
    pub(crate) fn deadline_passed(app: &App) -> Reply {
        Self::from_query_error(
            app,
            QueryError::Unavailable {
                reason: format!(
                    "request exceeded its {:?} deadline",
                    app.service.deadlines().request
                ),
                kind: "deadline",
            },
        )
    }

    pub(crate) fn method_not_allowed(allowed: Vec<&'static str>) -> Reply {
        let mut r = Self::error(StatusCode::METHOD_NOT_ALLOWED, 405, "method not allowed");
        r.allow = Some(allowed);
        r
    }

    pub(crate) fn unauthorized() -> Reply {
        let mut r = Self::error(
            StatusCode::UNAUTHORIZED,
            401,
            "a valid bearer token is required (Authorization: Bearer <token>)",
        );
        r.challenge = true;
        r
    }

    pub(crate) fn bad_request(e: &ValidationError) -> Reply {
        Self::error(
            StatusCode::BAD_REQUEST,
            400,
            format!("invalid parameter {e}"),
        )
    }

    pub(crate) fn bad_body(e: &ValidationError) -> Reply {
        Self::error(StatusCode::BAD_REQUEST, 400, format!("invalid body: {e}"))
    }

    pub(crate) fn unavailable(retry_after: u32) -> Reply {
        // The contract keeps the source's body (`Code` 500) but answers HTTP 503.
        let mut r = Self::error(StatusCode::SERVICE_UNAVAILABLE, 500, MSG_STORE_UNAVAILABLE);
        r.retry_after = Some(retry_after);
        r
    }

    /// Map a use-case error, logging what clients must not see.
    pub(crate) fn from_query_error(app: &App, err: QueryError) -> Reply {
        match err {
            QueryError::Unavailable { reason, kind } => {
                app.metrics.store_error(kind);
                tracing::warn!(%reason, kind, "status store unavailable");
                Self::unavailable(app.config.retry_after_secs)
            }
            QueryError::Internal { detail, kind } => {
                app.metrics.store_error(kind);
                tracing::error!(%detail, kind, "query failed");
                Self::error(StatusCode::INTERNAL_SERVER_ERROR, 500, MSG_QUERY_FAILED)
            }
            QueryError::StoreFull { detail, kind } => {
                app.metrics.store_error(kind);
                tracing::error!(%detail, kind, "status store full; write refused");
                Self::error(StatusCode::INSUFFICIENT_STORAGE, 507, MSG_STORE_FULL)
            }
            QueryError::BadRequest(e) => Self::bad_request(&e),
            QueryError::NotFound => Self::error(StatusCode::NOT_FOUND, 404, "not found"),
            // The message names the store and what it lacks; the same for every capability.
            e @ QueryError::NotSupported { .. } => {
                Self::error(StatusCode::NOT_IMPLEMENTED, 501, e.to_string())
            }
        }
    }

    pub(crate) fn into_response(self, request_id: &str) -> Response<Payload> {
        let mut resp = Response::new(self.body);
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        if !self.content_type.is_empty() {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        }
        for (name, value) in self.extra {
            h.insert(name, value);
        }
        if let Some(methods) = self.allow {
            if let Ok(v) = HeaderValue::from_str(&methods.join(", ")) {
                h.insert(ALLOW, v);
            }
        }
        if self.challenge {
            h.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"failed-tasks\""),
            );
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
