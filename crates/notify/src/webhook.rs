//! Delivery over HTTP: one POST per attempt with hyper-util's client over rustls (Mozilla's
//! roots compiled in), HTTP/1.1. Bounded: connect and the whole attempt (answer head and at
//! most [`ANSWER_BYTES`] of its body) within the request timeout; redirects are failures,
//! never followed; the pool keeps few idle connections. Errors say what failed without the
//! URL's path or a secret.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::sign::{signature, SIGNATURE_HEADER};
use crate::target::Target;

/// Most bytes of an answer's body read (the rest is dropped with the connection).
pub const ANSWER_BYTES: usize = 64 * 1024;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The HTTP client of the notifier.
#[derive(Debug, Clone)]
pub struct Webhook {
    client: Client<Https, Full<Bytes>>,
    timeout: Duration,
}

impl Webhook {
    /// A client whose attempts each take at most `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(https);
        Self { client, timeout }
    }

    /// POST `body` (message `id`, kind `event`) to `target`, signed at `unix_seconds` when
    /// it has a secret. `Ok` on a 2xx answer; otherwise why, fit to log.
    pub async fn post(
        &self,
        target: &Target,
        id: &str,
        event: &str,
        body: &str,
        unix_seconds: i64,
    ) -> Result<(), String> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(target.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("failed-tasks/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in [("x-failedtasks-id", id), ("x-failedtasks-event", event)] {
            if let Ok(v) = HeaderValue::from_str(value) {
                request = request.header(name, v);
            }
        }
        if let Some(secret) = &target.secret {
            let signed = signature(secret, unix_seconds, body.as_bytes());
            request = request.header(SIGNATURE_HEADER, signed);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let attempt = async {
            let answer = self
                .client
                .request(request)
                .await
                .map_err(|e| describe(&e))?;
            let status = answer.status();
            // Read a bounded part of the answer so the connection can be reused; a longer
            // one is cut off (the connection is then dropped).
            let mut body = answer.into_body();
            let mut read = 0usize;
            while read < ANSWER_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                    Some(Err(_)) | None => break,
                }
            }
            if status.is_success() {
                Ok(())
            } else if status.is_redirection() {
                Err(format!(
                    "HTTP {} (a redirect, not followed)",
                    status.as_u16()
                ))
            } else {
                Err(format!("HTTP {}", status.as_u16()))
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

/// A client error in words: its kind and the innermost cause (never the URL).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(c) = cause {
        innermost = Some(c.to_string());
        cause = c.source();
    }
    let what = if e.is_connect() {
        "cannot connect"
    } else {
        "the connection failed"
    };
    match innermost {
        Some(c) => format!("{what}: {c}"),
        None => what.to_owned(),
    }
}
