//! Response bodies: where they live and how long, under a byte budget.
//!
//! A built response is memory the server holds until the client's connection takes it; a
//! client that does not read would hold it forever. So every body is counted from the moment
//! it is built until it has been handed to hyper in full (or its connection is gone), against
//! a cap per connection and a cap overall ([`Budget`]). A large answer that does not fit is
//! replaced by a 503.
//!
//! A body is written into a [`Payload`]: its first [`PART`] bytes on the heap, the rest in
//! anonymous memory maps of [`SEGMENT`] bytes. Handed to hyper in parts of at most `PART`
//! bytes (copies out of the maps), each map is unmapped as soon as its last part is taken, so
//! the memory of a large answer goes back to the system when it has been sent or its client
//! is dropped, instead of staying in malloc's arenas (glibc keeps freed blocks of that size
//! for reuse: the server's RSS would never come down). Every part taken is progress for the
//! connection's stall watch.
//!
//! An answer too large to build (the export) is streamed instead ([`Payload::streamed`]): its
//! maker sends parts into a queue of [`STREAM_QUEUE`] and waits while it is full, so a slow
//! client slows the maker down instead of making the server buffer; the body is counted as
//! [`STREAM_HELD`] bytes. While the queue is empty the body waits for the server, which is
//! no stall of the client's; a client gone drops the body, which closes the queue, and the
//! maker stops.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use memmap2::MmapMut;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::conn::{BodyWatch, Conn, RequestGuard};

/// The size of the parts a body is handed to hyper in.
pub(crate) const PART: usize = 64 * 1024;

/// The size of the anonymous maps holding what a body has beyond its first part.
pub(crate) const SEGMENT: usize = 1024 * 1024;

/// Bodies up to this size are always admitted (counted, never refused): error envelopes,
/// health answers and the 503 that replaces a refused answer must get through while the
/// budget is full. What they can hold is bounded by connections x streams x this.
pub(crate) const SMALL: usize = 16 * 1024;

/// Largest value a cap can take, in bytes (semaphore permits are counted in `u32`).
const MAX_CAP: u64 = u32::MAX as u64;

fn cap(bytes: u64) -> u32 {
    u32::try_from(bytes.clamp(1, MAX_CAP)).unwrap_or(u32::MAX)
}

/// What the items of a paged answer are, each kind with its learned size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Items {
    /// Failed tasks (the listing).
    Tasks = 0,
    /// Failure groups.
    Groups = 1,
    /// The failed files of a task.
    Files = 2,
}

/// The size of one item in an answer before any was measured: about the largest task the
/// ingest accepts, so the first large pages are not under-counted.
const FIRST_GUESS_PER_ITEM: usize = 16 * 1024;

/// The overall cap on response bytes in flight, shared by every connection of a server.
#[derive(Debug)]
pub(crate) struct Budget {
    overall: Arc<Semaphore>,
    overall_cap: u32,
    connection_cap: u32,
    gauge: Gauge,
    /// Learned bytes per item of each [`Items`] kind in recent answers (0: none yet).
    per_item: [AtomicUsize; 3],
}

impl Budget {
    pub(crate) fn new(overall: u64, per_connection: u64, gauge: Gauge) -> Self {
        let overall_cap = cap(overall);
        Self {
            overall: Arc::new(Semaphore::new(overall_cap as usize)),
            overall_cap,
            connection_cap: cap(per_connection),
            gauge,
            per_item: [
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
            ],
        }
    }

    /// Room under the overall cap for a page of `items` items, by their learned size, taken
    /// before the page is fetched and built: a request waits here holding nothing (no page,
    /// no body), instead of building an answer the cap would then refuse. `None` when the
    /// page is expected to be small. Resolves when room is free; the caller bounds the wait.
    pub(crate) async fn room_for(&self, kind: Items, items: usize) -> Option<OwnedSemaphorePermit> {
        let per_item = match self.per_item[kind as usize].load(Ordering::Relaxed) {
            0 => FIRST_GUESS_PER_ITEM,
            learned => learned,
        };
        let base = items.saturating_mul(per_item);
        if base <= SMALL {
            return None;
        }
        // A margin, so that a page a little larger than the last ones still fits what was
        // taken: topping up afterwards cannot wait, and fails while others are waiting.
        let guess = base.saturating_add(base / 8).saturating_add(PART);
        let want = u32::try_from(guess)
            .unwrap_or(u32::MAX)
            .min(self.overall_cap);
        self.overall.clone().acquire_many_owned(want).await.ok()
    }

    /// An answer of `items` items took `bytes`: the next guess. The first answer sets it; then
    /// it rises at once (so larger items are not under-counted for long) and falls by a
    /// quarter of the difference per answer.
    pub(crate) fn learn(&self, kind: Items, items: usize, bytes: usize) {
        if items == 0 {
            return;
        }
        let per = (bytes / items).max(1);
        let slot = &self.per_item[kind as usize];
        let old = slot.load(Ordering::Relaxed);
        let new = if old == 0 || per >= old {
            per
        } else {
            old - (old - per) / 4
        };
        slot.store(new, Ordering::Relaxed);
    }

    /// A fresh per-connection budget.
    pub(crate) fn for_connection(&self) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(self.connection_cap as usize))
    }

    /// Room for a body of `len` bytes on `conn`, or `None` when either cap is full. `room` is
    /// what [`Budget::room_for`] took for it beforehand: kept up to `len`, the rest given back
    /// (or topped up, without waiting, when the body came out larger than guessed). A body
    /// larger than a cap takes all of it, so it is served when nothing else is in flight.
    pub(crate) fn reserve(
        &self,
        conn: &Conn,
        len: usize,
        room: Option<OwnedSemaphorePermit>,
    ) -> Option<Reservation> {
        if len <= SMALL {
            return Some(self.admit_small(len));
        }
        let want = u32::try_from(len).unwrap_or(u32::MAX);
        let overall_want = want.min(self.overall_cap) as usize;
        let mut overall = room;
        let have = overall
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits);
        if have > overall_want {
            if let Some(permit) = overall.as_mut() {
                drop(permit.split(have - overall_want));
            }
        } else if have < overall_want {
            let more = u32::try_from(overall_want - have).unwrap_or(u32::MAX);
            let more = self.overall.clone().try_acquire_many_owned(more).ok()?;
            match overall.as_mut() {
                Some(permit) => permit.merge(more),
                None => overall = Some(more),
            }
        }
        let on_conn = conn
            .response_bytes()
            .try_acquire_many_owned(want.min(self.connection_cap))
            .ok()?;
        let counted = i64::try_from(len).unwrap_or(i64::MAX);
        self.gauge.inc_by(counted);
        Some(Reservation {
            _on_conn: Some(on_conn),
            _overall: overall,
            counted,
            gauge: self.gauge.clone(),
        })
    }

    /// A body admitted whatever the caps say, but counted: a small one (see [`SMALL`]), or
    /// the metrics, which must keep answering while the caps are full.
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

/// Bytes of a body in an anonymous map: `map[start..end]` not yet handed out.
#[derive(Debug)]
struct Mapped {
    map: MmapMut,
    start: usize,
    end: usize,
}

/// A built response body (see the module documentation), or a stream of parts made while
/// it is sent ([`Payload::streamed`]).
#[derive(Debug, Default)]
pub(crate) struct Payload {
    head: Bytes,
    maps: VecDeque<Mapped>,
    len: usize,
    /// The parts still to come of a streamed body (`None` once it ended, or when built).
    stream: Option<mpsc::Receiver<io::Result<Bytes>>>,
}

/// A streamed body's parts waiting to be taken: at most this many, each at most [`PART`]
/// bytes (what its maker holds besides is its own business: it waits to send).
pub(crate) const STREAM_QUEUE: usize = 2;

/// What a streamed body is counted as against the response-bytes caps: its queue, the part
/// hyper holds and the one being made.
pub(crate) const STREAM_HELD: usize = (STREAM_QUEUE + 2) * PART;

/// The sending side of a streamed body: parts of at most [`PART`] bytes, or an error that
/// ends the response abruptly (the client sees a cut transfer, not a complete one).
pub(crate) type StreamSender = mpsc::Sender<io::Result<Bytes>>;

impl Payload {
    /// A body built in memory: kept as it is when it fits in the first part (no copy),
    /// otherwise moved into anonymous maps beyond it like any large body.
    pub(crate) fn of(body: Vec<u8>) -> io::Result<Payload> {
        if body.len() <= PART {
            return Ok(Payload::from(Bytes::from(body)));
        }
        let mut w = PayloadWriter::default();
        io::Write::write_all(&mut w, &body)?;
        Ok(w.finish())
    }

    /// A body whose parts are sent on the returned sender while it is taken; it ends when
    /// the sender is dropped. Dropping the body (its client gone) closes the sender's side:
    /// [`mpsc::Sender::closed`] resolves and sends fail, so the maker stops.
    pub(crate) fn streamed() -> (Payload, StreamSender) {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let payload = Payload {
            stream: Some(rx),
            ..Payload::default()
        };
        (payload, tx)
    }

    /// The bytes of a built body; for a streamed one, what it is counted as
    /// ([`STREAM_HELD`]).
    pub(crate) fn len(&self) -> usize {
        if self.stream.is_some() {
            STREAM_HELD
        } else {
            self.len
        }
    }

    /// The next part to hand out, at most [`PART`] bytes; `None` at the end.
    fn next_part(&mut self) -> Option<Bytes> {
        let part = if !self.head.is_empty() {
            let n = self.head.len().min(PART);
            self.head.split_to(n)
        } else {
            let front = self.maps.front_mut()?;
            let n = (front.end - front.start).min(PART);
            let part = Bytes::copy_from_slice(&front.map[front.start..front.start + n]);
            front.start += n;
            if front.start == front.end {
                self.maps.pop_front(); // unmapped here
            }
            part
        };
        self.len -= part.len();
        Some(part)
    }
}

impl From<Bytes> for Payload {
    fn from(head: Bytes) -> Self {
        Self {
            len: head.len(),
            head,
            maps: VecDeque::new(),
            stream: None,
        }
    }
}

/// Writes a [`Payload`]: the heap until [`PART`] bytes, then maps of [`SEGMENT`] bytes.
#[derive(Debug, Default)]
pub(crate) struct PayloadWriter {
    head: Vec<u8>,
    maps: Vec<Mapped>,
    len: usize,
}

impl PayloadWriter {
    pub(crate) fn finish(self) -> Payload {
        Payload {
            head: Bytes::from(self.head),
            maps: self.maps.into(),
            len: self.len,
            stream: None,
        }
    }
}

impl io::Write for PayloadWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.maps.is_empty() && self.head.len() + buf.len() <= PART {
            self.head.extend_from_slice(buf);
        } else {
            let mut rest = buf;
            while !rest.is_empty() {
                let full = self.maps.last().is_none_or(|m| m.end == m.map.len());
                if full {
                    self.maps.push(Mapped {
                        map: MmapMut::map_anon(SEGMENT)?,
                        start: 0,
                        end: 0,
                    });
                }
                let Some(m) = self.maps.last_mut() else {
                    return Err(io::ErrorKind::OutOfMemory.into());
                };
                let n = rest.len().min(m.map.len() - m.end);
                m.map[m.end..m.end + n].copy_from_slice(&rest[..n]);
                m.end += n;
                rest = &rest[n..];
            }
        }
        self.len += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a body keeps alive until its last part is taken.
#[derive(Debug)]
struct Held {
    _reservation: Reservation,
    watch: BodyWatch,
    _request: RequestGuard,
}

/// A response body: the built payload, handed out in parts under the budget.
#[derive(Debug)]
pub(crate) struct ResponseBody {
    payload: Payload,
    held: Option<Held>,
}

impl ResponseBody {
    pub(crate) fn new(
        payload: Payload,
        reservation: Reservation,
        watch: BodyWatch,
        request: RequestGuard,
    ) -> Self {
        Self {
            payload,
            held: Some(Held {
                _reservation: reservation,
                watch,
                _request: request,
            }),
        }
    }
}

impl ResponseBody {
    /// The next part of a streamed body: taken parts are progress; while none is made yet the
    /// body waits for the server (no stall of the client's).
    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let Some(rx) = self.payload.stream.as_mut() else {
            self.held = None;
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(part))) => {
                if let Some(held) = &self.held {
                    held.watch.progress();
                }
                Poll::Ready(Some(Ok(Frame::data(part))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.payload.stream = None;
                self.held = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.payload.stream = None;
                self.held = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(held) = &self.held {
                    held.watch.waiting();
                }
                Poll::Pending
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = &mut *self;
        let Some(part) = this.payload.next_part() else {
            return this.poll_stream(cx);
        };
        if this.payload.len == 0 && this.payload.stream.is_none() {
            // The last part: what the body held is released; hyper buffers this part only.
            this.held = None;
        } else if let Some(held) = &this.held {
            held.watch.progress();
        }
        Poll::Ready(Some(Ok(Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        self.payload.len == 0 && self.payload.stream.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.payload.stream.is_some() {
            SizeHint::default()
        } else {
            SizeHint::with_exact(self.payload.len as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn per_item(b: &Budget) -> usize {
        b.per_item[Items::Tasks as usize].load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn room_is_guessed_from_the_sizes_seen_rising_at_once_falling_slowly() {
        let b = Budget::new(64 << 20, 16 << 20, Gauge::default());
        // Nothing seen: a page of 1000 is guessed at the largest tasks.
        let room = b.room_for(Items::Tasks, 1000).await.unwrap();
        let base = 1000 * FIRST_GUESS_PER_ITEM;
        assert_eq!(room.num_permits(), base + base / 8 + PART);
        drop(room);
        // Small pages need no room ahead.
        assert!(b.room_for(Items::Tasks, 1).await.is_none());
        b.learn(Items::Tasks, 100, 100 * 800);
        assert_eq!(per_item(&b), 800);
        b.learn(Items::Tasks, 10, 10 * 8000);
        assert_eq!(per_item(&b), 8000, "rises at once");
        b.learn(Items::Tasks, 10, 10 * 4000);
        assert_eq!(per_item(&b), 7000, "falls by a quarter of the difference");
        assert_eq!(
            b.room_for(Items::Tasks, 1000).await.unwrap().num_permits(),
            7_000_000 + 875_000 + PART
        );
        // Groups have their own guess; the overall cap bounds any guess.
        assert_eq!(
            b.room_for(Items::Groups, 1_000_000)
                .await
                .unwrap()
                .num_permits(),
            64 << 20
        );
    }

    #[test]
    fn a_payload_gives_back_what_was_written_in_parts() {
        for len in [0, 1, PART, PART + 1, SEGMENT, 3 * SEGMENT + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut w = PayloadWriter::default();
            for piece in data.chunks(1000) {
                w.write_all(piece).unwrap();
            }
            let mut payload = w.finish();
            assert_eq!(payload.len(), len);
            assert_eq!(
                payload.maps.len(),
                len.saturating_sub(PART).div_ceil(SEGMENT)
            );
            let mut back = Vec::new();
            while let Some(part) = payload.next_part() {
                assert!(!part.is_empty() && part.len() <= PART);
                back.extend_from_slice(&part);
                assert_eq!(payload.len(), len - back.len());
            }
            assert_eq!(back, data, "{len}");
            assert!(payload.maps.is_empty());
        }
    }
}
