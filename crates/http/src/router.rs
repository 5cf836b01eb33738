//! Dispatch: a request to the handler its route names (`routes::ROUTES`), after the checks
//! every route shares: unknown path → 404; a method the route does not answer → 405 with
//! `Allow`; the bearer token its access needs; a declared body over the limit → 413; the
//! body its endpoint reads.

use http_body_util::BodyExt;
use hyper::{Request, StatusCode};

use crate::app::App;
use crate::auth::{self, Token};
use crate::reply::Reply;
use crate::request::Call;
use crate::routes::{self, Access, BodyKind};

/// Answer one request.
pub(crate) async fn dispatch(app: &App, req: Request<hyper::body::Incoming>) -> Reply {
    let (parts, body) = req.into_parts();
    let Some((route, param)) = routes::find(parts.uri.path()) else {
        return Reply::error(StatusCode::NOT_FOUND, 404, "not found");
    };
    let Some(endpoint) = route.endpoint(parts.method.as_str()) else {
        return Reply::method_not_allowed(route.methods().collect());
    };
    if let Some(denied) = check_access(app, route.access, &parts.headers) {
        return denied;
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
        query: parts.uri.query(),
        param,
        body,
        headers: &parts.headers,
    };
    (endpoint.handler)(app, call).await
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
