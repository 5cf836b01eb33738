//! Dispatch: a request to the handler its route names (`routes::ROUTES`), after the checks
//! every route shares: unknown path → 404; a method the route does not answer → 405 with
//! `Allow`; the bearer token its access needs (401 without a known one, 403 naming the role
//! a known one lacks); a token limited to one client kept to that client's failures; a
//! declared body over the limit → 413; the body its endpoint reads.

use http_body_util::BodyExt;
use hyper::{Request, StatusCode};

use std::borrow::Cow;

use crate::app::App;
use crate::auth::{NamedToken, Role};
use crate::reply::Reply;
use crate::request::Call;
use crate::routes::{self, Access, BodyKind, ClientLimit};
use crate::{handlers, params};

/// The `X-Reason` header: why the caller acts, for the audit log.
pub(crate) const REASON: &str = "x-reason";

/// Most characters of a reason.
pub(crate) const MAX_REASON_CHARS: usize = 500;

/// The reason of `X-Reason`, percent-decoded (so that any UTF-8 text fits a header); a
/// reason that is not UTF-8, has control characters, is empty or too long is a 400.
fn reason(
    headers: &hyper::HeaderMap,
) -> Result<Option<String>, failed_tasks_domain::ValidationError> {
    let mut values = headers.get_all(REASON).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |why: &str| failed_tasks_domain::ValidationError::new("X-Reason", why.to_owned());
    if values.next().is_some() {
        return Err(bad("given more than once"));
    }
    let text = percent_encoding::percent_decode(value.as_bytes())
        .decode_utf8()
        .map_err(|_| bad("is not UTF-8 once percent-decoded"))?;
    if text.chars().any(char::is_control) {
        return Err(bad("has control characters"));
    }
    let text = text.trim();
    if text.is_empty() {
        return Err(bad("must not be empty"));
    }
    if text.chars().count() > MAX_REASON_CHARS {
        return Err(bad(&format!("longer than {MAX_REASON_CHARS} characters")));
    }
    Ok(Some(text.to_owned()))
}

/// Answer one request.
pub(crate) async fn dispatch(
    app: &App,
    req: Request<hyper::body::Incoming>,
    request_id: &str,
) -> Reply {
    let (parts, body) = req.into_parts();
    let Some((route, param)) = routes::find(parts.uri.path()) else {
        return Reply::error(StatusCode::NOT_FOUND, 404, "not found");
    };
    let Some(endpoint) = route.endpoint(parts.method.as_str()) else {
        return Reply::method_not_allowed(route.methods().collect());
    };
    let caller = match check_access(app, route.access, &parts.headers) {
        Ok(caller) => caller,
        Err(denied) => return *denied,
    };
    let reason = match reason(&parts.headers) {
        Ok(reason) => reason,
        Err(bad) => return Reply::bad_request(&bad),
    };
    let mut query = parts.uri.query().map(Cow::Borrowed);
    if let Some(token) = caller {
        if let Err(denied) = keep_to_client(app, token, endpoint.client, param, &mut query).await {
            return *denied;
        }
    }
    if content_length(&parts.headers).is_some_and(|len| len > app.config.max_body_bytes) {
        return too_large(app);
    }
    let body = match endpoint.body {
        BodyKind::None => bytes::Bytes::new(),
        BodyKind::Json => match json_body(app, &parts.headers, body).await {
            Ok(body) => body,
            Err(reply) => return reply,
        },
        BodyKind::Any => match read_body(app, body).await {
            Ok(body) => body,
            Err(reply) => return reply,
        },
    };
    let call = Call {
        query: query.as_deref(),
        param,
        body,
        headers: &parts.headers,
        caller,
        reason,
        request_id,
    };
    (endpoint.handler)(app, call).await
}

/// The caller a route's access allows: `Ok(None)` for open routes (and reads while they
/// need no token, unless a known token is presented: its client limit then applies).
fn check_access<'a>(
    app: &'a App,
    access: Access,
    headers: &hyper::HeaderMap,
) -> Result<Option<&'a NamedToken>, Box<Reply>> {
    let tokens = &app.tokens;
    let needed = match access {
        Access::Open => return Ok(None),
        Access::Role(Role::Read) if !tokens.reads_need_a_token() => {
            return Ok(tokens.caller(headers))
        }
        Access::Role(role) => role,
    };
    if !tokens.any_with(needed) {
        return Err(Box::new(Reply::error(
            StatusCode::FORBIDDEN,
            403,
            "admin API disabled",
        )));
    }
    let caller = tokens
        .caller(headers)
        .ok_or_else(|| Box::new(Reply::unauthorized()))?;
    if caller.role() < needed {
        return Err(Box::new(Reply::error(
            StatusCode::FORBIDDEN,
            403,
            format!(
                "this needs the {needed} role; the token {:?} has the {} role",
                caller.name(),
                caller.role()
            ),
        )));
    }
    Ok(Some(caller))
}

/// Keep a token limited to one client to that client's failures, as the endpoint says.
async fn keep_to_client(
    app: &App,
    token: &NamedToken,
    limit: ClientLimit,
    param: &str,
    query: &mut Option<Cow<'_, str>>,
) -> Result<(), Box<Reply>> {
    let Some(client) = token.client() else {
        return Ok(());
    };
    let refused = |what: &str| {
        Box::new(Reply::error(
            StatusCode::FORBIDDEN,
            403,
            format!(
                "the token {:?} is limited to client {client} and {what}",
                token.name()
            ),
        ))
    };
    match limit {
        ClientLimit::Body => Ok(()),
        ClientLimit::Refused => Err(refused("cannot use this route")),
        ClientLimit::Filters | ClientLimit::BulkFilters => match params::limited_to_client(
            query.as_deref(),
            client,
            limit == ClientLimit::BulkFilters,
        ) {
            Ok(limited) => {
                *query = Some(Cow::Owned(limited));
                Ok(())
            }
            Err(()) => Err(refused("cannot ask for another client's failures")),
        },
        ClientLimit::Task => handlers::task_of_client(app, param, client).await,
    }
}

fn is_json(headers: &hyper::HeaderMap) -> bool {
    headers
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
async fn json_body(
    app: &App,
    headers: &hyper::HeaderMap,
    body: hyper::body::Incoming,
) -> Result<bytes::Bytes, Reply> {
    if headers.get_all(hyper::header::CONTENT_TYPE).iter().count() > 1 {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            400,
            "invalid header Content-Type: given more than once",
        ));
    }
    if !is_json(headers) {
        return Err(Reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
            "Content-Type must be application/json",
        ));
    }
    if let Some(encoding) = unsupported_encoding(headers) {
        return Err(Reply::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
            format!("Content-Encoding {encoding:?} is not supported; send the body unencoded"),
        ));
    }
    read_body(app, body).await
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
async fn read_body(app: &App, body: hyper::body::Incoming) -> Result<bytes::Bytes, Reply> {
    let limit = usize::try_from(app.config.max_body_bytes).unwrap_or(usize::MAX);
    let body = http_body_util::Limited::new(body, limit);
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

fn content_length(headers: &hyper::HeaderMap) -> Option<u64> {
    headers
        .get(hyper::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
