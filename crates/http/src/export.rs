//! `GET …/tasks/failed/export?format=csv|ndjson&filters`: every match of the listing's
//! filters, streamed.
//!
//! The first page is read before the answer starts, so a bad request or a store that is down
//! answers in the envelope like any route. Then a task makes the body: it renders a page
//! (each task as [`WireTask`], the listing's fields under their contract names) into parts
//! of at most [`PART`] bytes while the next page is read, and sends each part into the
//! body's queue ([`Payload::streamed`]). Memory stays constant: a page being read, one being
//! rendered, the queue. A client that reads slowly slows the task down; a client gone
//! closes the queue, and the task stops at once, the page read in flight cancelled, so the
//! store is not kept busy for nobody. A store error after the start cuts the response
//! (the client sees an incomplete transfer); the cause is logged.
//!
//! CSV is RFC 4180 (the `csv` crate: quotes where needed, CRLF line ends), UTF-8 without a
//! byte-order mark, the messages as they are, with a header row. Beyond
//! [`HttpConfig::export_max_rows`](crate::HttpConfig::export_max_rows) rows the export stops
//! and says so in its last line: NDJSON `{"Truncated":true,"Rows":n}`, CSV a record of one
//! field, `#Truncated: …` (without a comma or a quote: every row has 13 fields, so it is
//! told from a row by its field count even when a `TaskId` starts with `#`).

use std::io;

use bytes::Bytes;
use failed_tasks_domain::{Cursor, FailedTask, RetryPolicy, RetryStatus, TaskFilter};
use failed_tasks_query::{FailedTaskPage, FailedTaskService, QueryError};
use hyper::header::{HeaderValue, CONTENT_DISPOSITION};

use crate::app::App;
use crate::body::{Payload, StreamSender, PART};
use crate::params::{self, ExportFormat};
use crate::reply::Reply;
use crate::request::Call;
use crate::wire::{ExportTruncated, WireTask};

/// Tasks read per store call.
const EXPORT_PAGE: u32 = 1000;

/// A part is sent once it holds this much; one row more (at most about 30 KiB) keeps it
/// under [`PART`].
const SEND_AT: usize = PART / 2;

/// `GET /codebase-embedder/api/v1/tasks/failed/export`
pub(crate) async fn export_failed(app: &App, call: Call<'_>) -> Reply {
    let (format, filter) = match params::export_query(call.query) {
        Ok(q) => q,
        Err(e) => return Reply::bad_request(&e),
    };
    let first = match app.service.export_page(&filter, None, EXPORT_PAGE).await {
        Ok(page) => page,
        Err(e) => return Reply::from_query_error(app, e),
    };
    let (body, tx) = Payload::streamed();
    let maker = Maker {
        service: app.service.clone(),
        filter,
        cap: app.config.export_max_rows,
        rows: 0,
        out: Rows::new(format),
        tx,
    };
    tokio::spawn(maker.run(first));
    let (content_type, file) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "failed-tasks.csv"),
        ExportFormat::Ndjson => ("application/x-ndjson", "failed-tasks.ndjson"),
    };
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{file}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Reply::streamed(body, content_type, vec![(CONTENT_DISPOSITION, disposition)])
}

/// The rows rendered, not yet sent. A CSV writer is made per part (it gives its buffer
/// back only whole), which costs one small buffer per part.
enum Rows {
    Csv(Box<csv::Writer<Vec<u8>>>),
    Ndjson(Vec<u8>),
}

fn csv_writer(buf: Vec<u8>) -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::CRLF)
        .from_writer(buf)
}

impl Rows {
    fn new(format: ExportFormat) -> Self {
        match format {
            // The header row first: the names `WireTask` serializes its fields under.
            ExportFormat::Csv => {
                let mut buf = Vec::with_capacity(PART);
                buf.extend_from_slice(&csv_header());
                Rows::Csv(Box::new(csv_writer(buf)))
            }
            ExportFormat::Ndjson => Rows::Ndjson(Vec::with_capacity(PART)),
        }
    }

    fn push(&mut self, row: &WireTask) -> io::Result<()> {
        match self {
            Rows::Csv(w) => {
                w.serialize(row)?;
                w.flush()
            }
            Rows::Ndjson(buf) => {
                serde_json::to_writer(&mut *buf, row)?;
                buf.push(b'\n');
                Ok(())
            }
        }
    }

    /// The last line of an export cut after `rows`.
    fn truncated(&mut self, rows: u64) -> io::Result<()> {
        let mut buf = self.take()?.to_vec();
        match self {
            Rows::Csv(_) => {
                let line = format!(
                    "#Truncated: the export stopped at its cap of {rows} rows; narrow the filters to see the rest\r\n"
                );
                buf.extend_from_slice(line.as_bytes());
            }
            Rows::Ndjson(_) => {
                let last = ExportTruncated {
                    truncated: true,
                    rows,
                };
                serde_json::to_writer(&mut buf, &last)?;
                buf.push(b'\n');
            }
        }
        *self = match self {
            Rows::Csv(_) => Rows::Csv(Box::new(csv_writer(buf))),
            Rows::Ndjson(_) => Rows::Ndjson(buf),
        };
        Ok(())
    }

    fn len(&self) -> usize {
        match self {
            Rows::Csv(w) => w.get_ref().len(),
            Rows::Ndjson(buf) => buf.len(),
        }
    }

    /// What was rendered, leaving the buffer empty.
    fn take(&mut self) -> io::Result<Bytes> {
        match self {
            Rows::Csv(w) => {
                let full = std::mem::replace(&mut **w, csv_writer(Vec::with_capacity(PART)));
                let buf = full
                    .into_inner()
                    .map_err(|e| io::Error::other(e.error().to_string()))?;
                Ok(Bytes::from(buf))
            }
            Rows::Ndjson(buf) => Ok(Bytes::from(std::mem::replace(
                buf,
                Vec::with_capacity(PART),
            ))),
        }
    }
}

/// The CSV header row (CRLF-terminated): what `csv` writes before the first `WireTask`.
fn csv_header() -> Vec<u8> {
    let sample = FailedTask::seed_examples()
        .into_iter()
        .next()
        .map(|t| WireTask::new(&t, &RetryStatus::default(), &RetryPolicy::default()));
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    if let Some(sample) = sample {
        let _ = w.serialize(sample);
    }
    let _ = w.flush();
    let all = w.get_ref();
    let end = all
        .windows(2)
        .position(|p| p == b"\r\n")
        .map_or(all.len(), |i| i + 2);
    all[..end].to_vec()
}

/// The task making an export's body.
struct Maker {
    service: FailedTaskService,
    filter: TaskFilter,
    cap: u64,
    rows: u64,
    out: Rows,
    tx: StreamSender,
}

/// Why the making stopped early.
enum Stop {
    /// The client is gone.
    Gone,
    /// The store failed.
    Failed(QueryError),
    /// Rendering failed.
    Render(io::Error),
}

impl Maker {
    async fn run(mut self, first: FailedTaskPage) {
        match self.pages(first).await {
            Ok(()) | Err(Stop::Gone) => {}
            Err(Stop::Failed(e)) => {
                tracing::warn!(error = %e, rows = self.rows, "export cut: the store failed");
                let _ = self.tx.send(Err(io::Error::other("store failed"))).await;
            }
            Err(Stop::Render(e)) => {
                tracing::error!(error = %e, rows = self.rows, "export cut: rendering failed");
                let _ = self.tx.send(Err(e)).await;
            }
        }
    }

    /// Render and send every page from `first` on, the next page read while one is sent.
    async fn pages(&mut self, first: FailedTaskPage) -> Result<(), Stop> {
        let mut page = first;
        loop {
            let next = page.next_cursor.clone().map(|c| self.fetch(c));
            let sent = self.send_page(&page).await;
            let next = match (sent, next) {
                (Ok(true), Some(next)) => next,
                (Ok(true), None) => break,
                (result, next) => {
                    if let Some(n) = next {
                        n.abort();
                    }
                    return match result {
                        // Cut at the cap.
                        Ok(_) => self.finish(true).await,
                        Err(e) => Err(e),
                    };
                }
            };
            let abort = next.abort_handle();
            page = tokio::select! {
                read = next => match read {
                    Ok(Ok(p)) => p,
                    Ok(Err(e)) => return Err(Stop::Failed(e)),
                    Err(e) => return Err(Stop::Failed(QueryError::Internal {
                        detail: format!("export page read: {e}"),
                        kind: "internal",
                    })),
                },
                () = self.tx.closed() => {
                    abort.abort();
                    return Err(Stop::Gone);
                }
            };
        }
        self.finish(false).await
    }

    /// The next page after `cursor`, read on its own task (cancelled with `abort`).
    fn fetch(&self, cursor: Cursor) -> tokio::task::JoinHandle<Result<FailedTaskPage, QueryError>> {
        let (service, filter) = (self.service.clone(), self.filter.clone());
        tokio::spawn(async move {
            service
                .export_page(&filter, Some(cursor), EXPORT_PAGE)
                .await
        })
    }

    /// Render and send `page`; `Ok(false)` when the cap was reached with a task left.
    async fn send_page(&mut self, page: &FailedTaskPage) -> Result<bool, Stop> {
        let policy = self.service.retry_policy().clone();
        for (i, task) in page.tasks.iter().enumerate() {
            if self.rows >= self.cap {
                return Ok(false);
            }
            let row = WireTask::new(task, &page.retry_status(i), &policy);
            self.out.push(&row).map_err(Stop::Render)?;
            self.rows += 1;
            if self.out.len() >= SEND_AT {
                self.send().await?;
            }
        }
        Ok(true)
    }

    async fn send(&mut self) -> Result<(), Stop> {
        let part = self.out.take().map_err(Stop::Render)?;
        self.tx.send(Ok(part)).await.map_err(|_| Stop::Gone)
    }

    /// The last part (with the truncation line when `cut`).
    async fn finish(&mut self, cut: bool) -> Result<(), Stop> {
        if cut {
            self.out.truncated(self.rows).map_err(Stop::Render)?;
        }
        if self.out.len() > 0 {
            self.send().await?;
        }
        Ok(())
    }
}
