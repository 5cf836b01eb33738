//! Retries on Redis: the [`RetryStore`] capability of [`RedisStore`], each shard's due set,
//! stream and scripts.
//!
//! Scheduling is part of the record scripts (a `v3` record carries its retry state; the due
//! set `P:retry:due` holds the scheduled retries not yet delivered). The scheduler step is
//! one script per batch that moves due entries into the stream; retry now, cancel and
//! resolve are one script each. See `docs/redis-layout.md` and `docs/retries.md`.

use std::time::Duration;

use async_trait::async_trait;
use failed_tasks_domain::scheduling::MAX_ATTEMPT_HISTORY;
use failed_tasks_domain::stats::minute_of;
use failed_tasks_domain::{
    AttemptRecord, ErrorCategory, ErrorCode, FailedTask, GateId, GateStatus, RetryGate, RetryPlan,
    ScheduledBy, TaskId, TaskSuccess, Timestamp,
};
use failed_tasks_store::{
    CancelRetry, CreateGate, DeliverReport, RecordOutcome, Resolve, RetryDetails, RetryGauges,
    RetryNow, RetryStore, StoreError,
};
use fred::types::Value;

use crate::layout::{STREAM_FIELDS, STREAM_FILE_FIELDS};
use crate::scripts::Scripts;
use crate::shard::Shard;
use crate::store::{hour_end_ms, hour_of, millis_of, now_ms, value_text, RedisStore};
use failed_tasks_store::stored;

/// `{status, attempt}` as the per-task retry scripts answer it.
fn status_reply(v: Vec<Value>) -> Result<(String, u32), StoreError> {
    let mut it = v.into_iter();
    let status = it.next().and_then(|s| s.as_string());
    let attempt = it.next().and_then(|a| a.as_u64());
    match (status, attempt) {
        (Some(s), Some(a)) => Ok((s, u32::try_from(a).unwrap_or(u32::MAX))),
        _ => Err(StoreError::Internal(
            "a retry script answered something else than {status, attempt}".to_owned(),
        )),
    }
}

/// One history entry: `{attempt}\t{fail_ms:015}\t{code}\t{category}\t{by or -}`.
fn attempt_entry(text: &str) -> Option<AttemptRecord> {
    let mut f = text.split('\t');
    let attempt = f.next()?.parse().ok()?;
    let fail_time = Timestamp::from_unix_millis(f.next()?.parse().ok()?).ok()?;
    let error_code = ErrorCode::parse(f.next()?).ok()?;
    let error_category = ErrorCategory::parse(f.next()?).ok()?;
    let scheduled_by = match f.next()? {
        "-" => None,
        by => Some(ScheduledBy::parse(by).ok()?),
    };
    Some(AttemptRecord {
        attempt,
        fail_time,
        error_code,
        error_category,
        scheduled_by,
    })
}

impl Shard {
    /// How long the scheduler lock outlives the last step of its holder: twice the command
    /// timeout, at least a second. Its holder renews it at every step; when the holder
    /// stops, another replica takes over after at most this long.
    fn scheduler_lock_ttl(&self) -> Duration {
        (self.conn.timeout() * 2).max(Duration::from_secs(1))
    }

    async fn retry_script(
        &self,
        script: &TaskScript,
        task_id: &TaskId,
        now: Timestamp,
    ) -> Result<(String, u32), StoreError> {
        let k = &self.keys;
        let keys = vec![k.record(task_id.as_str()).into(), k.due().into()];
        let reply: Vec<Value> = match script {
            TaskScript::RetryNow => {
                self.conn
                    .eval(
                        &Scripts::get().retry_now,
                        keys,
                        vec![
                            k.prefix().into(),
                            now.unix_millis().into(),
                            now.to_rfc3339().into(),
                        ],
                    )
                    .await?
            }
            TaskScript::Cancel => {
                self.conn
                    .eval(&Scripts::get().cancel, keys, vec![k.prefix().into()])
                    .await?
            }
        };
        status_reply(reply)
    }
}

/// Which per-task retry script to run.
enum TaskScript {
    RetryNow,
    Cancel,
}

impl Shard {
    async fn retry_now(&self, task_id: &TaskId, now: Timestamp) -> Result<RetryNow, StoreError> {
        let kind = TaskScript::RetryNow;
        let (mut status, mut attempt) = self.retry_script(&kind, task_id, now).await?;
        if status == "upgrade" {
            // Written before retries existed: record it again as v3 (due now), then retry.
            let Some(task) = self.get(task_id).await? else {
                return Ok(RetryNow::NotFound);
            };
            self.record_planned_batch(&[(&task, RetryPlan::Retry { due: now })])
                .await?;
            (status, attempt) = self.retry_script(&kind, task_id, now).await?;
        }
        match status.as_str() {
            "scheduled" => Ok(RetryNow::Scheduled { attempt }),
            "delivered" => Ok(RetryNow::AlreadyDelivered { attempt }),
            "resolved" => Ok(RetryNow::Resolved),
            "missing" => Ok(RetryNow::NotFound),
            other => Err(StoreError::Internal(format!(
                "retry_now answered {other:?}"
            ))),
        }
    }

    async fn cancel_retry(&self, task_id: &TaskId) -> Result<CancelRetry, StoreError> {
        let kind = TaskScript::Cancel;
        let now = Timestamp::saturating_from_unix_millis(now_ms());
        let (status, attempt) = self.retry_script(&kind, task_id, now).await?;
        match status.as_str() {
            "cancelled" => Ok(CancelRetry::Cancelled { attempt }),
            "not_scheduled" => Ok(CancelRetry::NotScheduled),
            "delivered" => Ok(CancelRetry::AlreadyDelivered { attempt }),
            "resolved" => Ok(CancelRetry::Resolved),
            "missing" => Ok(CancelRetry::NotFound),
            other => Err(StoreError::Internal(format!("cancel answered {other:?}"))),
        }
    }

    async fn resolve(&self, task_id: &TaskId, at: Timestamp) -> Result<Resolve, StoreError> {
        let k = &self.keys;
        let now = now_ms();
        let at_ms = at.unix_millis();
        // The tombstone lives as long as a record of that time would; the hour's recovery
        // counter as long as the hour's other counters.
        let tombstone_ttl = self.retained_until(at_ms, now).saturating_sub(now).max(1);
        let counters_until = self.retained_until(hour_end_ms(hour_of(minute_of(at))), now);
        let done: i64 = self
            .conn
            .eval(
                &Scripts::get().resolve,
                vec![k.record(task_id.as_str()).into()],
                vec![
                    k.prefix().into(),
                    at_ms.into(),
                    tombstone_ttl.into(),
                    counters_until.into(),
                ],
            )
            .await?;
        match done {
            1 => Ok(Resolve::Resolved),
            2 => Ok(Resolve::AlreadyResolved),
            _ => Ok(Resolve::NotFound),
        }
    }

    /// Supersede on this shard, a bounded walk of the client's index per script call.
    async fn supersede(&self, success: &TaskSuccess) -> Result<u64, StoreError> {
        /// Index members one call looks at.
        const WALK: i64 = 2_000;
        let k = &self.keys;
        let now = now_ms();
        let at_ms = success.time.unix_millis();
        let tombstone_ttl = self.retained_until(at_ms, now).saturating_sub(now).max(1);
        let counters_until =
            self.retained_until(hour_end_ms(hour_of(minute_of(success.time))), now);
        let index = k.index(crate::layout::IndexKind::Client, success.client_id.as_str());
        let mut after = String::new();
        let mut total = 0u64;
        loop {
            let reply: Vec<Value> = self
                .conn
                .eval(
                    &Scripts::get().supersede,
                    vec![index.as_str().into()],
                    vec![
                        k.prefix().into(),
                        success.task_type.as_str().into(),
                        success.codebase_path.as_str().into(),
                        at_ms.into(),
                        tombstone_ttl.into(),
                        counters_until.into(),
                        after.as_str().into(),
                        WALK.into(),
                    ],
                )
                .await?;
            let [n, last] = reply.as_slice() else {
                return Err(StoreError::Internal(
                    "supersede answered something else than {count, last}".to_owned(),
                ));
            };
            total += n.as_u64().unwrap_or(0);
            match last.as_string().filter(|l| !l.is_empty()) {
                Some(l) => after = l,
                None => return Ok(total),
            }
        }
    }

    /// `GET` of the record (its own failure is the newest attempt) and `LRANGE` of the
    /// attempts before it, pipelined.
    async fn retry_details(&self, task_id: &TaskId) -> Result<Option<RetryDetails>, StoreError> {
        let k = &self.keys;
        let conn = &self.conn;
        let key = k.record(task_id.as_str());
        let get = conn.cmd::<Value>("reading a record", "GET", vec![key.as_str().into()]);
        let hist = conn.cmd::<Vec<String>>(
            "reading a task's attempts",
            "LRANGE",
            vec![
                k.history(task_id.as_str()).into(),
                0i64.into(),
                (MAX_ATTEMPT_HISTORY as i64 - 2).into(),
            ],
        );
        let due = conn.cmd::<Value>(
            "reading a task's due entry",
            "ZSCORE",
            vec![k.due().into(), task_id.as_str().into()],
        );
        let parked = conn.cmd::<i64>(
            "reading a task's parked retry",
            "HEXISTS",
            vec![
                format!("{}:retry:parked", k.prefix()).into(),
                task_id.as_str().into(),
            ],
        );
        let (value, hist, due, parked) = tokio::join!(get, hist, due, parked);
        let waiting = !matches!(due?, Value::Null) || parked? == 1;
        let (status, newest) = match value_text(value?) {
            None => return Ok(None),
            Some(Err(_)) => {
                return Err(StoreError::Corrupt {
                    key,
                    reason: "record is not UTF-8 text".to_owned(),
                })
            }
            Some(Ok(text)) => {
                let (task, status) =
                    stored::decode(&text).map_err(|reason| StoreError::Corrupt {
                        key: key.clone(),
                        reason,
                    })?;
                // The record's own failure is the newest attempt (a record written before
                // retries existed: without who scheduled it).
                let newest = stored::attempt_of(&text).unwrap_or(AttemptRecord {
                    attempt: task.retry_count(),
                    fail_time: task.fail_time(),
                    error_code: task.error_code().clone(),
                    error_category: task.error_category(),
                    scheduled_by: None,
                });
                (status, newest)
            }
        };
        let older = hist?;
        let attempts = std::iter::once(newest)
            .chain(older.iter().filter_map(|e| {
                let parsed = attempt_entry(e);
                if parsed.is_none() {
                    tracing::warn!(key, entry = %e, "skipping a malformed attempt entry");
                }
                parsed
            }))
            .collect();
        Ok(Some(RetryDetails {
            status,
            attempts,
            waiting,
        }))
    }

    /// One `deliver` script call: lock check (or renewal), then up to `max` due entries
    /// moved into the stream.
    async fn deliver_due(
        &self,
        now: Timestamp,
        max: usize,
        shards: usize,
    ) -> Result<DeliverReport, StoreError> {
        let k = &self.keys;
        let cfg = &self.config;
        let mut args: Vec<Value> = vec![
            k.prefix().into(),
            now.unix_millis().into(),
            i64::try_from(max.max(1)).unwrap_or(i64::MAX).into(),
            i64::try_from(cfg.retry_stream_max_len)
                .unwrap_or(i64::MAX)
                .into(),
            self.scheduler_token.as_str().into(),
            millis_of(self.scheduler_lock_ttl()).into(),
            i64::try_from(shards.max(1)).unwrap_or(1).into(),
        ];
        args.extend(STREAM_FIELDS.iter().map(|f| Value::from(*f)));
        args.extend(STREAM_FILE_FIELDS.iter().map(|f| Value::from(*f)));
        let reply: Vec<i64> = self
            .conn
            .eval(
                &Scripts::get().deliver,
                vec![
                    k.due().into(),
                    cfg.retry_stream().into(),
                    k.retry_lock().into(),
                    k.gates().into(),
                ],
                args,
            )
            .await?;
        match reply.as_slice() {
            [-1, ..] => Ok(DeliverReport {
                locked_out: true,
                ..DeliverReport::default()
            }),
            [moved, dropped, more, held] => Ok(DeliverReport {
                locked_out: false,
                moved: u64::try_from(*moved).unwrap_or(0),
                dropped: u64::try_from(*dropped).unwrap_or(0),
                more: *more == 1,
                held: u64::try_from(*held).unwrap_or(0),
            }),
            other => Err(StoreError::Internal(format!("deliver answered {other:?}"))),
        }
    }

    /// Six reads sent at once (one round trip): `ZCARD`, `ZCOUNT` and the first entry of
    /// the due set, `XLEN` and `XPENDING` (summary) of the stream, the reclaim counter.
    async fn retry_gauges(&self, now: Timestamp) -> Result<RetryGauges, StoreError> {
        let k = &self.keys;
        let cfg = &self.config;
        let conn = &self.conn;
        let due = k.due();
        let stream = cfg.retry_stream();
        let now_ms = now.unix_millis();
        let card = conn.cmd::<u64>("sizing the due set", "ZCARD", vec![due.as_str().into()]);
        let overdue = conn.cmd::<u64>(
            "counting due retries",
            "ZCOUNT",
            vec![due.as_str().into(), "-inf".into(), now_ms.into()],
        );
        let first = conn.cmd::<Vec<String>>(
            "reading the oldest due retry",
            "ZRANGE",
            vec![
                due.as_str().into(),
                0i64.into(),
                0i64.into(),
                "WITHSCORES".into(),
            ],
        );
        let len = conn.cmd::<u64>(
            "sizing the retry stream",
            "XLEN",
            vec![stream.as_str().into()],
        );
        let pending = conn.cmd::<Value>(
            "reading the retry stream's pending entries",
            "XPENDING",
            vec![
                stream.as_str().into(),
                cfg.retry_consumer_group.as_str().into(),
            ],
        );
        let reclaimed = conn.cmd::<Option<u64>>(
            "reading the reclaim counter",
            "GET",
            vec![k.reclaimed().into()],
        );
        let (card, overdue, first, len, pending, reclaimed) =
            tokio::join!(card, overdue, first, len, pending, reclaimed);
        let oldest_age = first?
            .get(1)
            .and_then(|s| s.parse::<f64>().ok())
            .map_or(0, |score| (now_ms - score as i64).max(0));
        let pending = match pending {
            Ok(Value::Array(parts)) => parts.first().and_then(Value::as_u64).unwrap_or(0),
            Ok(_) => 0,
            // No consumer group yet (no worker ever joined): nothing is pending.
            Err(StoreError::Rejected(msg)) if msg.contains("NOGROUP") => 0,
            Err(e) => return Err(e),
        };
        Ok(RetryGauges {
            scheduled: card?,
            due: overdue?,
            oldest_due_age: Duration::from_millis(u64::try_from(oldest_age).unwrap_or(0)),
            queued: len?,
            pending,
            reclaimed: reclaimed?.unwrap_or(0),
        })
    }
}

#[async_trait]
impl RetryStore for RedisStore {
    /// As `record_batch`, each task's value carrying its plan: the record script schedules
    /// (`ZADD P:retry:due`) or unschedules it in the same atomic step.
    async fn record_planned(
        &self,
        batch: &[(FailedTask, RetryPlan)],
    ) -> Result<Vec<RecordOutcome>, StoreError> {
        let planned: Vec<(&FailedTask, RetryPlan)> = batch.iter().map(|(t, p)| (t, *p)).collect();
        self.record_split(&planned).await
    }

    async fn retry_now(&self, task_id: &TaskId, now: Timestamp) -> Result<RetryNow, StoreError> {
        self.on_task(
            task_id,
            |r| matches!(r, RetryNow::NotFound),
            |s| s.retry_now(task_id, now),
        )
        .await
    }

    async fn cancel_retry(&self, task_id: &TaskId) -> Result<CancelRetry, StoreError> {
        self.on_task(
            task_id,
            |r| matches!(r, CancelRetry::NotFound),
            |s| s.cancel_retry(task_id),
        )
        .await
    }

    async fn resolve(&self, task_id: &TaskId, at: Timestamp) -> Result<Resolve, StoreError> {
        self.on_task(
            task_id,
            |r| matches!(r, Resolve::NotFound),
            |s| s.resolve(task_id, at),
        )
        .await
    }

    async fn supersede(&self, success: &TaskSuccess) -> Result<u64, StoreError> {
        let mut total = 0;
        for r in self.every_shard(|s| s.supersede(success)).await {
            total += r?;
        }
        Ok(total)
    }

    async fn retry_details(&self, task_id: &TaskId) -> Result<Option<RetryDetails>, StoreError> {
        self.on_task(task_id, Option::is_none, |s| s.retry_details(task_id))
            .await
    }

    /// Every shard's scheduler step in parallel (each under its own lock, moving its due
    /// entries into its own stream in one script), `max / shards` (at least 1) each. A
    /// shard that fails is logged and left for the next step; only when every shard fails
    /// is the step an error.
    async fn deliver_due(&self, now: Timestamp, max: usize) -> Result<DeliverReport, StoreError> {
        let shards = self.shards().readers();
        let each = (max / shards.len()).max(1);
        let n = shards.len();
        let steps = self.every_shard(|s| s.deliver_due(now, each, n)).await;
        let mut report = DeliverReport {
            locked_out: true,
            ..DeliverReport::default()
        };
        let mut failed = Vec::new();
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                Ok(r) => {
                    report.locked_out &= r.locked_out;
                    report.moved += r.moved;
                    report.dropped += r.dropped;
                    report.more |= r.more;
                    report.held += r.held;
                }
                Err(e) => failed.push((i, e)),
            }
        }
        if !failed.is_empty() && failed.len() == shards.len() {
            return Err(failed.remove(0).1);
        }
        for (i, e) in &failed {
            tracing::warn!(shard = i, error = %e, "a shard's retry scheduler step failed");
        }
        Ok(report)
    }

    /// Every shard's gauges, added up (the oldest due age: the largest).
    async fn retry_gauges(&self, now: Timestamp) -> Result<RetryGauges, StoreError> {
        let all = self.every_shard(|s| s.retry_gauges(now)).await;
        let mut g = RetryGauges::default();
        for r in all {
            let r = r?;
            g.scheduled += r.scheduled;
            g.due += r.due;
            g.oldest_due_age = g.oldest_due_age.max(r.oldest_due_age);
            g.queued += r.queued;
            g.pending += r.pending;
            g.reclaimed += r.reclaimed;
        }
        Ok(g)
    }

    /// On every shard (see `crate::gates`).
    async fn create_gate(
        &self,
        gate: &RetryGate,
        now: Timestamp,
    ) -> Result<CreateGate, StoreError> {
        self.create_gate_everywhere(gate, now).await
    }

    async fn release_gate(&self, id: &GateId) -> Result<bool, StoreError> {
        self.release_gate_everywhere(id).await
    }

    async fn pass_gate(&self, id: &GateId, passes: u32) -> Result<bool, StoreError> {
        self.pass_gate_everywhere(id, passes).await
    }

    async fn list_gates(&self, now: Timestamp) -> Result<Vec<GateStatus>, StoreError> {
        self.list_gates_everywhere(now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_entries() {
        let a =
            attempt_entry("3\t001737710100000\tTIMEOUT_ERROR\tservice_timeout\tpolicy").unwrap();
        assert_eq!(a.attempt, 3);
        assert_eq!(a.fail_time.unix_millis(), 1_737_710_100_000);
        assert_eq!(a.scheduled_by, Some(ScheduledBy::Policy));
        let b = attempt_entry("0\t001737710100000\tX\tdata_error\t-").unwrap();
        assert_eq!(b.scheduled_by, None);
        for bad in [
            "",
            "x\t001737710100000\tX\tdata_error\t-",
            "0\t001737710100000\tX\tbogus\t-",
            "0\t001737710100000\tX\tdata_error\tcron",
            "0\t001737710100000\tX\tdata_error",
        ] {
            assert!(attempt_entry(bad).is_none(), "{bad:?}");
        }
    }
}
