//! What the server knows of each connection, so that no connection holds a slot or memory
//! for nothing:
//! - idle: no request in flight (and since when). An idle connection is closed after the
//!   idle timeout, and is the first to go when the connection cap is reached ([`Registry`]);
//! - stalled: a response body that no part was taken of, or a socket write that has not
//!   completed, for the write-stall timeout. A stalled connection is dropped at once.
//!
//! [`StallIo`] reports the socket's writes, [`RequestGuard`] the requests in flight and
//! [`BodyWatch`] the progress of each response body; the connection task
//! (`server::drive`) asks [`Conn::verdict`] on every tick of its watch.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Read, ReadBufCursor, Write};
use tokio::sync::{Notify, Semaphore};

/// Why the watch closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing in flight for the idle timeout: close it politely.
    Idle,
    /// A response or a write made no progress for the write-stall timeout: drop it.
    Stalled,
}

#[derive(Debug, Default)]
struct State {
    in_flight: usize,
    /// `Some(t)`: nothing in flight since `t`.
    idle_since: Option<Instant>,
    /// Last progress of each response body not yet taken in full.
    /// Each response body's last progress; `None` while it waits for the server (a stream
    /// whose next part is not made yet), which is no stall of the client.
    bodies: HashMap<u64, Option<Instant>>,
    /// A socket write pending since then.
    write_blocked_since: Option<Instant>,
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct Conn {
    state: Mutex<State>,
    next_body: AtomicU64,
    /// Set once the registry asked this connection to make room.
    evicting: AtomicBool,
    evict: Notify,
    response_bytes: Arc<Semaphore>,
}

impl Conn {
    pub(crate) fn new(response_bytes: Arc<Semaphore>) -> Self {
        Self {
            state: Mutex::new(State {
                idle_since: Some(Instant::now()),
                ..State::default()
            }),
            next_body: AtomicU64::new(0),
            evicting: AtomicBool::new(false),
            evict: Notify::new(),
            response_bytes,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This connection's budget of response bytes.
    pub(crate) fn response_bytes(&self) -> Arc<Semaphore> {
        self.response_bytes.clone()
    }

    /// A request starts; it is in flight until the guard (moved into its body) is dropped.
    pub(crate) fn begin_request(self: &Arc<Self>) -> RequestGuard {
        let mut st = self.state();
        st.in_flight += 1;
        st.idle_since = None;
        RequestGuard(self.clone())
    }

    /// Watch a response body's progress from now on.
    pub(crate) fn watch_body(self: &Arc<Self>) -> BodyWatch {
        let id = self.next_body.fetch_add(1, Ordering::Relaxed);
        self.state().bodies.insert(id, Some(Instant::now()));
        BodyWatch {
            conn: self.clone(),
            id,
        }
    }

    fn write_blocked(&self, blocked: bool) {
        self.state().write_blocked_since = blocked.then(Instant::now);
    }

    /// Since when nothing is in flight, if so.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        self.state().idle_since
    }

    /// What the watch should do now.
    pub(crate) fn verdict(&self, idle: Duration, stall: Duration) -> Option<Verdict> {
        let now = Instant::now();
        let st = self.state();
        let stalled_since = st
            .bodies
            .values()
            .flatten()
            .copied()
            .chain(st.write_blocked_since)
            .min();
        if stalled_since.is_some_and(|t| now.saturating_duration_since(t) >= stall) {
            return Some(Verdict::Stalled);
        }
        if st
            .idle_since
            .is_some_and(|t| now.saturating_duration_since(t) >= idle)
        {
            return Some(Verdict::Idle);
        }
        None
    }

    /// Ask the connection to close to make room (once).
    fn ask_to_leave(&self) -> bool {
        if self.evicting.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.evict.notify_one();
        true
    }

    /// Resolves when the registry asks this connection to make room.
    pub(crate) async fn asked_to_leave(&self) {
        self.evict.notified().await;
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<Conn>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.in_flight = st.in_flight.saturating_sub(1);
        if st.in_flight == 0 {
            st.idle_since = Some(Instant::now());
        }
    }
}

/// The progress of one response body, reported to its connection's watch.
#[derive(Debug)]
pub(crate) struct BodyWatch {
    conn: Arc<Conn>,
    id: u64,
}

impl BodyWatch {
    /// A part of the body was taken.
    pub(crate) fn progress(&self) {
        if let Some(t) = self.conn.state().bodies.get_mut(&self.id) {
            *t = Some(Instant::now());
        }
    }

    /// The body waits for the server to make its next part (a stream): not the client's
    /// stall; the watch starts again with the next part taken.
    pub(crate) fn waiting(&self) {
        if let Some(t) = self.conn.state().bodies.get_mut(&self.id) {
            *t = None;
        }
    }
}

impl Drop for BodyWatch {
    fn drop(&mut self) {
        self.conn.state().bodies.remove(&self.id);
    }
}

/// Every open connection, to find the one idle the longest when the cap is reached.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
}

impl Registry {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Register `conn` until the returned guard is dropped.
    pub(crate) fn register(self: &Arc<Self>, conn: Arc<Conn>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.conns().insert(id, conn);
        Registered {
            registry: self.clone(),
            id,
        }
    }

    /// Ask the connection idle the longest, not yet asked, to close. `false` when every
    /// connection is busy.
    pub(crate) fn evict_idlest(&self) -> bool {
        let conns = self.conns();
        let idlest = conns
            .values()
            .filter(|c| !c.evicting.load(Ordering::Acquire))
            .filter_map(|c| c.idle_since().map(|t| (t, c)))
            .min_by_key(|(t, _)| *t);
        match idlest {
            Some((_, conn)) => conn.ask_to_leave(),
            None => false,
        }
    }
}

/// A connection's place in the [`Registry`].
#[derive(Debug)]
pub(crate) struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.conns().remove(&self.id);
    }
}

/// The socket, reporting to its connection whether a write is pending.
#[derive(Debug)]
pub(crate) struct StallIo<I> {
    inner: I,
    conn: Arc<Conn>,
    blocked: bool,
}

impl<I> StallIo<I> {
    pub(crate) fn new(inner: I, conn: Arc<Conn>) -> Self {
        Self {
            inner,
            conn,
            blocked: false,
        }
    }

    fn note<T>(&mut self, poll: Poll<T>) -> Poll<T> {
        let blocked = poll.is_pending();
        if blocked != self.blocked {
            self.blocked = blocked;
            self.conn.write_blocked(blocked);
        }
        poll
    }
}

impl<I: Read + Unpin> Read for StallIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: Write + Unpin> Write for StallIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
