//! The listener loop: accept, limit, serve with hyper, drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::handlers::REQUEST_ID;
use crate::router::{self, App, Route};

/// A request id from the client when it is short and printable, otherwise a fresh UUID.
fn request_id<B>(req: &Request<B>) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, Infallible> {
    let id = request_id(&req);
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    async move {
        let route = Route::of(&path).name();
        let reply = router::dispatch(&app, req).await;
        let status = reply.status.as_u16();
        app.metrics
            .observe_request(route, status, started.elapsed());
        tracing::info!(
            route,
            status,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "served"
        );
        Ok(reply.into_response(&id))
    }
    .instrument(span)
    .await
}

/// Serve `app` on `listener` until `shutdown` completes, then stop accepting and wait for
/// in-flight requests to finish.
///
/// The caller binds the listener (tests bind port 0) and owns the shutdown signal; the
/// caller also bounds the drain by timing out this future if it must.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.header_read_timeout)
        .max_buf_size(app.config.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(app.config.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(app.config.max_connections.max(1)));
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: log, back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            // hyper's auto builder sniffs the protocol before any header timer runs, so a
            // client that connects and sends nothing would hold the connection forever:
            // wait for its first byte under the same header-read timeout.
            if !first_byte_within(&stream, app.config.header_read_timeout).await {
                tracing::debug!(%peer, "no request bytes within the header-read timeout");
                return;
            }
            let service = service_fn(move |req| handle(app.clone(), req));
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn first_byte_within(stream: &TcpStream, limit: std::time::Duration) -> bool {
    let mut buf = [0u8; 1];
    matches!(tokio::time::timeout(limit, stream.peek(&mut buf)).await, Ok(Ok(n)) if n > 0)
}
