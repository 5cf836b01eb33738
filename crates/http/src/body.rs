//! Response bodies under a byte budget.
//!
//! A built response is memory the server holds until the client's connection takes it; a
//! client that does not read would hold it forever. So every body is counted from the moment
//! it is built until it has been handed to hyper in full (or its connection is gone), against
//! a cap per connection and a cap overall ([`Budget`]). A large answer that does not fit is
//! replaced by a 503. Bodies are handed out in parts of [`PART`] bytes, each a copy, so hyper
//! and the kernel hold at most a part or two per stream and the whole body is freed as soon as
//! its last part is taken; every part taken is progress for the connection's stall watch.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, SizeHint};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::conn::{BodyWatch, Conn, RequestGuard};

/// The size of the parts a body is handed to hyper in.
pub(crate) const PART: usize = 64 * 1024;

/// Bodies up to this size are always admitted (counted, never refused): error envelopes,
/// health answers and the 503 that replaces a refused answer must get through while the
/// budget is full. What they can hold is bounded by connections x streams x this.
pub(crate) const SMALL: usize = 16 * 1024;

/// Largest value a cap can take, in bytes (semaphore permits are counted in `u32`).
const MAX_CAP: u64 = u32::MAX as u64;

fn cap(bytes: u64) -> u32 {
    u32::try_from(bytes.clamp(1, MAX_CAP)).unwrap_or(u32::MAX)
}

/// The overall cap on response bytes in flight, shared by every connection of a server.
#[derive(Debug)]
pub(crate) struct Budget {
    overall: Arc<Semaphore>,
    overall_cap: u32,
    connection_cap: u32,
    gauge: Gauge,
}

impl Budget {
    pub(crate) fn new(overall: u64, per_connection: u64, gauge: Gauge) -> Self {
        let overall_cap = cap(overall);
        Self {
            overall: Arc::new(Semaphore::new(overall_cap as usize)),
            overall_cap,
            connection_cap: cap(per_connection),
            gauge,
        }
    }

    /// A fresh per-connection budget.
    pub(crate) fn for_connection(&self) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(self.connection_cap as usize))
    }

    /// Room for a body of `len` bytes on `conn`, or `None` when either cap is full. A body
    /// larger than a cap takes all of it, so it is served when nothing else is in flight.
    pub(crate) fn reserve(&self, conn: &Conn, len: usize) -> Option<Reservation> {
        let (mut on_conn, mut overall) = (None, None);
        if len > SMALL {
            let want = u32::try_from(len).unwrap_or(u32::MAX);
            on_conn = Some(
                conn.response_bytes()
                    .try_acquire_many_owned(want.min(self.connection_cap))
                    .ok()?,
            );
            overall = Some(
                self.overall
                    .clone()
                    .try_acquire_many_owned(want.min(self.overall_cap))
                    .ok()?,
            );
        }
        let counted = i64::try_from(len).unwrap_or(i64::MAX);
        self.gauge.inc_by(counted);
        Some(Reservation {
            _on_conn: on_conn,
            _overall: overall,
            counted,
            gauge: self.gauge.clone(),
        })
    }

    /// A small body, admitted whatever the caps say (see [`SMALL`]).
    pub(crate) fn admit_small(&self, len: usize) -> Reservation {
        let counted = i64::try_from(len).unwrap_or(i64::MAX);
        self.gauge.inc_by(counted);
        Reservation {
            _on_conn: None,
            _overall: None,
            counted,
            gauge: self.gauge.clone(),
        }
    }
}

/// Bytes of one body counted against the caps until it is dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    _on_conn: Option<OwnedSemaphorePermit>,
    _overall: Option<OwnedSemaphorePermit>,
    counted: i64,
    gauge: Gauge,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.gauge.dec_by(self.counted);
    }
}

/// What a body keeps alive until its last part is taken.
#[derive(Debug)]
struct Held {
    _reservation: Reservation,
    watch: BodyWatch,
    _request: RequestGuard,
}

/// A response body: the built bytes, handed out in parts under the budget.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    rest: Bytes,
    in_parts: bool,
    held: Option<Held>,
}

impl ResponseBody {
    pub(crate) fn new(
        bytes: Bytes,
        reservation: Reservation,
        watch: BodyWatch,
        request: RequestGuard,
    ) -> Self {
        Self {
            in_parts: bytes.len() > PART,
            rest: bytes,
            held: Some(Held {
                _reservation: reservation,
                watch,
                _request: request,
            }),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.rest.is_empty() {
            this.held = None;
            return Poll::Ready(None);
        }
        let part = if this.in_parts {
            let n = this.rest.len().min(PART);
            let part = Bytes::copy_from_slice(&this.rest[..n]);
            this.rest.advance(n);
            part
        } else {
            std::mem::take(&mut this.rest)
        };
        if this.rest.is_empty() {
            // The last part: free the built body now (`rest` still points into it) and
            // release what it held; what hyper still buffers is the one part just copied.
            this.rest = Bytes::new();
            this.held = None;
        } else if let Some(held) = &this.held {
            held.watch.progress();
        }
        Poll::Ready(Some(Ok(Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}
