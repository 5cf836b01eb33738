//! What a handler receives of its request: the query string, the path parameter, the body
//! (read as its route asks).

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use hyper::HeaderMap;

use crate::app::App;
use crate::auth::NamedToken;
use crate::reply::Reply;

/// One request, as its handler sees it.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    /// The raw query string, if any.
    pub(crate) query: Option<&'a str>,
    /// The route's path parameter as sent (`{taskId}`, the dashboard's file path), still
    /// percent-encoded; empty when the route has none.
    pub(crate) param: &'a str,
    /// The body, read under the limits when the route takes one; empty otherwise.
    pub(crate) body: Bytes,
    /// The request's headers (the dashboard's files read `If-None-Match`).
    pub(crate) headers: &'a HeaderMap,
    /// The token the request presented, when it is one of ours.
    pub(crate) caller: Option<&'a NamedToken>,
    /// Why, as the caller said in `X-Reason` (checked by the router), for the audit log.
    pub(crate) reason: Option<String>,
    /// The request's id (`X-Request-Id`), for the audit log.
    pub(crate) request_id: &'a str,
}

/// A handler's answer, boxed so that handlers fit one table.
pub(crate) type Answer<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// A handler in the route table.
pub(crate) type Handler = for<'a> fn(&'a App, Call<'a>) -> Answer<'a>;
