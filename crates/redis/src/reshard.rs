//! Changing a deployment's shard count: [`reshard`] moves every task from its shard among
//! `from` to its shard among `to`, in batches, while servers keep serving with
//! `shards = to, resharding_from = Some(from)` (they read both layouts and write the new
//! one). See `docs/operations.md#changing-the-shard-count`.
//!
//! A move is: the task recorded in its new shard (one `record_many` script per target
//! shard and batch, with its retry plan; its attempt history and failed files copied), then
//! removed from its old shard (the `remove` script, which also takes back its counters and
//! group membership there). Between the two a reader can meet it in both shards; readers show
//! it once. A task the new shard already holds (a server recorded it there since) is not
//! copied, only removed from the old shard: the server's copy is the newer one.
//!
//! Resumable and idempotent: every run walks each old shard from its start; tasks already
//! moved are no longer there, tasks whose shard does not change are skipped, and moving a
//! task again is an upsert. Stopping it at any point loses nothing.

use std::collections::HashMap;

use failed_tasks_domain::{FailedTask, RetryPlan, RetryStatus, TaskId};
use failed_tasks_store::StoreError;
use fred::types::Value;
use futures_util::future::join_all;

use crate::config::RedisConfig;
use crate::conn::Conn;
use crate::layout::{member_id, zrange_bylex};
use crate::pages::Loaded;
use crate::shard::{shard_of, Shard, Shards};
use crate::store::MAX_BATCH;

/// Progress of a [`reshard`] run, reported after every batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReshardProgress {
    /// The old shard being walked (0-based) and how many there are.
    pub shard: u32,
    /// How many old shards there are.
    pub shards: u32,
    /// Tasks moved to another shard so far.
    pub moved: u64,
    /// Tasks whose shard does not change (same prefix in both counts), left in place.
    pub kept: u64,
    /// Tasks the new shard already held (recorded there by a server since): only removed
    /// from the old shard.
    pub superseded: u64,
    /// Index entries without a usable record (expired or corrupt), left for the janitor.
    pub skipped: u64,
}

/// The plan that re-creates `status` in a new shard.
fn plan_of(status: &RetryStatus) -> RetryPlan {
    match status {
        RetryStatus::Scheduled(next) => RetryPlan::Retry { due: next.due },
        RetryStatus::Final => RetryPlan::Final,
        RetryStatus::Unscheduled => RetryPlan::NotScheduled,
    }
}

/// Move every task of `config`'s store from its shard among `from` to its shard among
/// `to`, `batch` tasks at a time (at most 1,000), calling `progress` after each batch.
/// Fails on the first store error (running it again resumes).
pub async fn reshard(
    config: &RedisConfig,
    from: u32,
    to: u32,
    batch: usize,
    mut progress: impl FnMut(&ReshardProgress),
) -> Result<ReshardProgress, StoreError> {
    let check = RedisConfig {
        shards: to,
        resharding_from: Some(from),
        ..config.clone()
    };
    check.validate()?;
    let batch = batch.clamp(1, MAX_BATCH);
    let conn = Conn::start(config)?;
    let count = |shards| RedisConfig {
        shards,
        resharding_from: None,
        ..config.clone()
    };
    let old = Shards::new(&conn, &count(from));
    let new = Shards::new(&conn, &count(to));
    let (old, new) = (old.write(), new.write());
    if !old[0].wait_answering(config.command_timeout * 5).await {
        return Err(StoreError::Unavailable(
            "resharding: redis does not answer".to_owned(),
        ));
    }
    let mut p = ReshardProgress {
        shards: from,
        ..ReshardProgress::default()
    };
    for (i, source) in old.iter().enumerate() {
        p.shard = i as u32;
        let mut bound = "+".to_owned();
        loop {
            let members: Vec<String> = source
                .conn
                .cmd(
                    "resharding: reading an index",
                    "ZRANGE",
                    zrange_bylex(&source.keys.all(), &bound, "-", true, batch as i64),
                )
                .await?;
            let Some(last) = members.last() else {
                break;
            };
            bound = format!("({last}");
            move_batch(source, new, to, &members, &mut p).await?;
            progress(&p);
            if members.len() < batch {
                break;
            }
        }
    }
    Ok(p)
}

/// Move the tasks of one batch of `source`'s members.
async fn move_batch(
    source: &Shard,
    new: &[Shard],
    to: u32,
    members: &[String],
    p: &mut ReshardProgress,
) -> Result<(), StoreError> {
    let mut moving: Vec<(usize, String)> = Vec::new();
    for m in members {
        let id = member_id(m).unwrap_or_default();
        let t = shard_of(id, to) as usize;
        if new[t].keys.prefix() == source.keys.prefix() {
            p.kept += 1;
        } else {
            moving.push((t, m.clone()));
        }
    }
    if moving.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = moving.iter().map(|(_, m)| m.clone()).collect();
    let keys: Vec<Value> = names
        .iter()
        .map(|m| Value::from(source.keys.record(member_id(m).unwrap_or_default())))
        .collect();
    let values: Vec<Value> = source
        .conn
        .cmd("resharding: reading records", "MGET", keys)
        .await?;
    let loaded = names.iter().zip(&values).map(|(m, v)| source.check(m, v));
    // Per target shard: the tasks to record there.
    let mut per: HashMap<usize, Vec<(FailedTask, RetryPlan)>> = HashMap::new();
    let mut delivered: Vec<(usize, TaskId)> = Vec::new();
    let mut ids: Vec<TaskId> = Vec::new();
    let mut superseded = 0u64;
    for ((t, _), l) in moving.iter().zip(loaded) {
        match l {
            Loaded::Task(task, status) => {
                // Already in the new shard: a server recorded it there since.
                let exists: i64 = new[*t]
                    .conn
                    .cmd(
                        "resharding: checking the new shard",
                        "EXISTS",
                        vec![new[*t].keys.record(task.task_id().as_str()).into()],
                    )
                    .await?;
                ids.push(task.task_id().clone());
                if exists == 1 {
                    superseded += 1;
                    continue;
                }
                if matches!(status, RetryStatus::Scheduled(_)) {
                    let due: Option<f64> = source
                        .conn
                        .cmd(
                            "resharding: reading the due set",
                            "ZSCORE",
                            vec![source.keys.due().into(), task.task_id().as_str().into()],
                        )
                        .await?;
                    if due.is_none() {
                        delivered.push((*t, task.task_id().clone()));
                    }
                }
                per.entry(*t).or_default().push((task, plan_of(&status)));
            }
            Loaded::Missing | Loaded::Corrupt => p.skipped += 1,
        }
    }
    let writes = per.iter().map(|(t, tasks)| async move {
        let tasks: Vec<(&FailedTask, RetryPlan)> = tasks.iter().map(|(t, p)| (t, *p)).collect();
        new[*t].record_planned_batch(&tasks).await
    });
    for w in join_all(writes).await {
        w?;
    }
    // A retry already handed to workers stays delivered: not due again in the new shard.
    for (t, id) in &delivered {
        let _: i64 = new[*t]
            .conn
            .cmd(
                "resharding: keeping a delivered retry delivered",
                "ZREM",
                vec![new[*t].keys.due().into(), id.as_str().into()],
            )
            .await?;
    }
    for (t, tasks) in &per {
        for (task, _) in tasks {
            copy_history(source, &new[*t], task.task_id()).await?;
            if let Some(files) = source.files(task.task_id()).await? {
                new[*t].put_files(task.task_id(), &files).await?;
            }
        }
    }
    for id in &ids {
        source.remove(id).await?;
    }
    p.superseded += superseded;
    p.moved += ids.len() as u64 - superseded;
    Ok(())
}

/// Copy a task's attempt history (`P:hist:ID`) into its new shard, with the record's expiry.
async fn copy_history(source: &Shard, target: &Shard, id: &TaskId) -> Result<(), StoreError> {
    let from = source.keys.history(id.as_str());
    let items: Vec<String> = source
        .conn
        .cmd(
            "resharding: reading a history",
            "LRANGE",
            vec![from.as_str().into(), 0i64.into(), (-1i64).into()],
        )
        .await?;
    if items.is_empty() {
        return Ok(());
    }
    let to = target.keys.history(id.as_str());
    let ttl: i64 = target
        .conn
        .cmd(
            "resharding: reading a record's expiry",
            "PTTL",
            vec![target.keys.record(id.as_str()).into()],
        )
        .await?;
    let _: i64 = target
        .conn
        .cmd(
            "resharding: writing a history",
            "DEL",
            vec![to.as_str().into()],
        )
        .await?;
    let mut args: Vec<Value> = vec![to.as_str().into()];
    args.extend(items.into_iter().map(Value::from));
    let _: i64 = target
        .conn
        .cmd("resharding: writing a history", "RPUSH", args)
        .await?;
    if ttl > 0 {
        let _: i64 = target
            .conn
            .cmd(
                "resharding: writing a history",
                "PEXPIRE",
                vec![to.as_str().into(), ttl.into()],
            )
            .await?;
    }
    Ok(())
}
