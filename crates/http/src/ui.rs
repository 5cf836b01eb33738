//! The dashboard's static assets at `/ui/` (the files come from `failed-tasks-ui`).
//!
//! Every answer here carries the page's security policy: a `Content-Security-Policy` that
//! allows scripts, styles and images from this origin only (no inline code, no `eval`) and no
//! framing, `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`. Assets are
//! sent with `Cache-Control: no-cache` and a strong `ETag`, so a browser revalidates each
//! load and gets `304 Not Modified` (no body) while the binary has not changed.

use bytes::Bytes;
use hyper::header::{
    HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, ETAG, IF_NONE_MATCH, LOCATION,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{HeaderMap, StatusCode};

use crate::app::App;
use crate::reply::Reply;
use crate::request::Call;

/// The page's Content-Security-Policy.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Revalidate on every use; the ETag makes that a `304` while nothing changed.
const CACHE: &str = "no-cache";

fn security_headers() -> Vec<(HeaderName, HeaderValue)> {
    vec![
        (
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
        ),
        (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ]
}

/// Whether `If-None-Match` names `etag` (or is `*`); weak validators compare by value.
fn matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// `GET /ui`: the dashboard lives at `/ui/` (its relative links need the slash).
pub(crate) async fn redirect(_app: &App, call: Call<'_>) -> Reply {
    let location = match call.query {
        Some(q) if !q.is_empty() => format!("/ui/?{q}"),
        _ => "/ui/".to_owned(),
    };
    let mut headers = security_headers();
    if let Ok(v) = HeaderValue::from_str(&location) {
        headers.push((LOCATION, v));
    }
    Reply::raw(StatusCode::PERMANENT_REDIRECT, Bytes::new(), "", headers)
}

/// `GET /ui/{asset*}`: one file, `304` when the client's copy is current, 404 when unknown.
pub(crate) async fn asset(_app: &App, call: Call<'_>) -> Reply {
    let request_headers = call.headers;
    let Some(asset) = failed_tasks_ui::get(call.param) else {
        return Reply::error(StatusCode::NOT_FOUND, 404, "not found")
            .with_headers(security_headers());
    };
    let etag = asset.etag();
    let mut headers = security_headers();
    headers.push((CACHE_CONTROL, HeaderValue::from_static(CACHE)));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.push((ETAG, v));
    }
    if matches(request_headers, &etag) {
        return Reply::raw(StatusCode::NOT_MODIFIED, Bytes::new(), "", headers);
    }
    Reply::raw(
        StatusCode::OK,
        Bytes::from_static(asset.body),
        asset.content_type,
        headers,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let etag = "\"00ff\"";
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(IF_NONE_MATCH, HeaderValue::from_static(v));
            h
        };
        assert!(matches(&with("\"00ff\""), etag));
        assert!(matches(&with("W/\"00ff\""), etag));
        assert!(matches(&with("\"aaaa\", \"00ff\""), etag));
        assert!(matches(&with("*"), etag));
        assert!(!matches(&with("\"aaaa\""), etag));
        assert!(!matches(&with("00ff"), etag));
        assert!(!matches(&HeaderMap::new(), etag));
    }
}
