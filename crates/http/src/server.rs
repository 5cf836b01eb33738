//! The listener loop: accept, limit, serve with hyper, watch each connection, drain on
//! shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::app::App;
use crate::body::{self, ResponseBody};
use crate::conn::{Conn, Registry, StallIo, Verdict};
use crate::reply::{Reply, REQUEST_ID};
use crate::router;
use crate::routes;

/// A request id from the client when it is short and printable, otherwise a fresh UUID.
fn request_id<B>(req: &Request<B>) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// What every connection of one `serve` call shares.
#[derive(Debug)]
struct Shared {
    app: Arc<App>,
    registry: Arc<Registry>,
}

async fn handle(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> Result<hyper::Response<ResponseBody>, Infallible> {
    let request = conn.begin_request();
    let id = request_id(&req);
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    async move {
        let app = &shared.app;
        let route = routes::find(&path).map_or(routes::NOT_FOUND, |(r, _)| r.name);
        let mut reply = router::dispatch(app, req, &id).await;
        let room = reply.take_room();
        let admitted = if reply.capped() {
            app.budget.reserve(&conn, reply.body_len(), room)
        } else {
            Some(app.budget.admit_small(reply.body_len()))
        };
        let (reply, reservation) = match admitted {
            Some(reservation) => (reply, reservation),
            None => {
                app.metrics.response_refused();
                tracing::debug!(
                    bytes = reply.body_len(),
                    "answer refused: the response-bytes caps are full (clients not reading)"
                );
                let busy = Reply::busy(app.config.retry_after_secs);
                let reservation = app.budget.admit_small(busy.body_len());
                (busy, reservation)
            }
        };
        let status = reply.status.as_u16();
        app.metrics
            .observe_request(route, status, started.elapsed());
        tracing::info!(
            route,
            status,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "served"
        );
        let watch = conn.watch_body();
        Ok(reply
            .into_response(&id)
            .map(|payload| ResponseBody::new(payload, reservation, watch, request)))
    }
    .instrument(span)
    .await
}

/// A connection counted as open in the metrics while this lives.
struct Open(Arc<Shared>);

impl Open {
    fn new(shared: Arc<Shared>) -> Self {
        shared.app.metrics.connections_open(1);
        Self(shared)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.app.metrics.connections_open(-1);
    }
}

/// The HTTP/2 receive windows, per stream and per connection (hyper's defaults, set here so
/// that docs/operations.md stays true).
const H2_WINDOW: u32 = 1024 * 1024;

/// How long an idle connection asked to close may take to do it politely (HTTP/2: GOAWAY,
/// a ping round trip, the final GOAWAY) before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The same for a connection closed to make room for a new one: the new client waits.
const EVICT_CLOSE_GRACE: Duration = Duration::from_millis(50);

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
    let config = &app.config;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(config.h2_max_concurrent_streams.max(1))
        // What a client may send unread: request bodies are at most max_body_bytes anyway.
        .initial_stream_window_size(H2_WINDOW)
        .initial_connection_window_size(H2_WINDOW)
        .max_send_buf_size(body::PART)
        .keep_alive_interval(Some(config.h2_keep_alive_interval).filter(|d| !d.is_zero()))
        .keep_alive_timeout(config.h2_keep_alive_timeout);
    let builder = Arc::new(builder);
    let shared = Arc::new(Shared {
        registry: Arc::new(Registry::default()),
        app: app.clone(),
    });
    let max_connections = u32::try_from(config.max_connections.max(1)).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(max_connections as usize));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);

    'accept: loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: log, back off briefly, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // At the cap, make room: the connection idle the longest closes, and another one
        // if that has not freed a slot shortly; only busy connections make a client wait.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => loop {
                shared.registry.evict_idlest();
                tokio::select! {
                    () = &mut shutdown => break 'accept,
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => break p,
                        Err(_) => break 'accept,
                    },
                    () = tokio::time::sleep(EVICT_CLOSE_GRACE * 2) => {}
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = Open::new(shared.clone());
            drive(stream, peer, &shared, &builder, stop).await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it is done.
    let _all = permits.acquire_many(max_connections).await;
    Ok(())
}

/// Serve one connection, watching it: closed when idle for the idle timeout or asked to
/// make room, dropped when stalled, drained on shutdown.
async fn drive(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    shared: &Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = &shared.app;
    let config = &app.config;
    let conn = Arc::new(Conn::new(app.budget.for_connection()));
    let _registered = shared.registry.register(conn.clone());
    // hyper's auto builder sniffs the protocol before any header timer runs, so a client
    // that connects and sends nothing would hold the connection forever: wait for its
    // first byte under the same header-read timeout.
    tokio::select! {
        ok = first_byte_within(&stream, config.header_read_timeout) => if !ok {
            tracing::debug!(%peer, "no request bytes within the header-read timeout");
            return;
        },
        () = conn.asked_to_leave() => {
            app.metrics.connection_closed("evicted");
            return;
        }
        _ = stop.wait_for(|stopping| *stopping) => return,
    }
    let service = {
        let (shared, conn) = (shared.clone(), conn.clone());
        service_fn(move |req| handle(shared.clone(), conn.clone(), req))
    };
    let served =
        builder.serve_connection(StallIo::new(TokioIo::new(stream), conn.clone()), service);
    tokio::pin!(served);
    let tick = (config.idle_timeout.min(config.write_stall_timeout) / 4)
        .clamp(Duration::from_millis(5), Duration::from_secs(1));
    let mut watch = tokio::time::interval(tick);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Once asked to close politely: when to give up on politeness.
    let mut closing: Option<tokio::time::Instant> = None;
    let mut draining = false;
    loop {
        let give_up =
            closing.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            res = served.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|stopping| *stopping), if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
                closing.get_or_insert_with(|| tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
            }
            () = conn.asked_to_leave(), if closing.is_none() && !draining => {
                app.metrics.connection_closed("evicted");
                served.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + EVICT_CLOSE_GRACE);
            }
            () = tokio::time::sleep_until(give_up), if closing.is_some() => {
                // Nothing in flight and still not closed: drop it. A request that arrived
                // meanwhile is finished under the graceful shutdown already begun (which
                // takes no new ones); look again a little later.
                if conn.idle_since().is_some() {
                    return;
                }
                closing = Some(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
            }
            _ = watch.tick() => match conn.verdict(config.idle_timeout, config.write_stall_timeout) {
                Some(Verdict::Stalled) => {
                    app.metrics.connection_closed("write_stall");
                    tracing::info!(%peer, "connection dropped: its client stopped reading");
                    return;
                }
                Some(Verdict::Idle) if closing.is_none() && !draining => {
                    app.metrics.connection_closed("idle");
                    served.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
                }
                _ => {}
            },
        }
    }
}

async fn first_byte_within(stream: &TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1];
    matches!(tokio::time::timeout(limit, stream.peek(&mut buf)).await, Ok(Ok(n)) if n > 0)
}
