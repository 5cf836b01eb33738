//! Migration of stored records to the current layout ([`failed_tasks_store::stored`]'s
//! `v4`), run by `failed-tasks-server migrate` (docs/operations.md).
//!
//! The migration walks each shard's `P:idx:all` (one after the other) oldest first in batches, from an exclusive position (the
//! last member of the previous batch, printed as it goes, so a stopped run resumes where it
//! was), reads the batch's records (`MGET`) and rewrites each that is not `v4` yet with the
//! `migrate` script: compare-and-set on the value read, then the record script's upsert, so
//! a record written meanwhile by a server is left alone (it is `v4` already) and nothing is
//! lost or counted twice. Running it again finds nothing to do: it is idempotent. Every
//! server must run a version that reads `v4` before the migration starts (earlier versions
//! would take `v4` records for corrupt ones).

use failed_tasks_domain::{FailedTask, RetryPlan};
use failed_tasks_store::{stored, StoreError};
use fred::types::Value;

use crate::layout::{member_id, zrange_bylex};
use crate::scripts::Scripts;
use crate::shard::Shard;
use crate::store::{note_corrupt, value_text, RedisStore};

/// What one migration batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateStep {
    /// Index members read.
    pub scanned: u64,
    /// Records rewritten to the current layout.
    pub migrated: u64,
    /// Records already in the current layout (or rewritten by a server meanwhile).
    pub current: u64,
    /// Records that cannot be read (left as they are; the janitor removes them as they age
    /// out; they are logged like corrupt records on the read path).
    pub corrupt: u64,
    /// Members whose record is gone (expired or removed meanwhile).
    pub missing: u64,
    /// Where the next batch starts (exclusive), `None` when the walk is done.
    pub next: Option<String>,
}

impl RedisStore {
    /// Migrate the records of at most `batch` members of shard `shard`'s `P:idx:all` (of
    /// the shards tasks are written to: `0` with one shard) after `after` (an exclusive
    /// position: the `next` of the previous step; `None` from the start).
    pub async fn migrate_step(
        &self,
        shard: u32,
        after: Option<&str>,
        batch: usize,
    ) -> Result<MigrateStep, StoreError> {
        let shards = self.shards().write();
        let Some(shard) = shards.get(shard as usize) else {
            return Err(StoreError::Rejected(format!(
                "shard {shard}: the store has {} shard(s), numbered from 0",
                shards.len()
            )));
        };
        shard.migrate_step(after, batch).await
    }

    /// Rewrite one record, read as `old`, in the current layout in its task's shard, unless
    /// it changed since (compare-and-set in the `migrate` script). A value that cannot be
    /// read answers [`StoreError::Corrupt`].
    pub async fn migrate_record(&self, old: &str) -> Result<Migrated, StoreError> {
        match upgrade(old)? {
            None => Ok(Migrated::Current),
            Some((new, task)) => {
                self.shards()
                    .of(task.task_id().as_str())
                    .rewrite(old, new, &task)
                    .await
            }
        }
    }
}

impl Shard {
    /// One migration batch of this shard (see [`RedisStore::migrate_step`]).
    async fn migrate_step(
        &self,
        after: Option<&str>,
        batch: usize,
    ) -> Result<MigrateStep, StoreError> {
        let batch = batch.clamp(1, 10_000);
        let keys = &self.keys;
        let start = after.map_or_else(|| "-".to_owned(), |m| format!("({m}"));
        let members: Vec<String> = self
            .conn
            .cmd(
                "reading the index to migrate",
                "ZRANGE",
                zrange_bylex(&keys.all(), &start, "+", false, batch as i64),
            )
            .await?;
        let mut step = MigrateStep {
            scanned: members.len() as u64,
            next: (members.len() == batch)
                .then(|| members.last().cloned())
                .flatten(),
            ..MigrateStep::default()
        };
        if members.is_empty() {
            return Ok(step);
        }
        let record_keys: Vec<Value> = members
            .iter()
            .map(|m| Value::from(keys.record(member_id(m).unwrap_or_default())))
            .collect();
        let values: Vec<Value> = self
            .conn
            .cmd("reading records to migrate", "MGET", record_keys.clone())
            .await?;
        for (key, value) in record_keys.iter().zip(values) {
            let key = key.as_str().map(|k| k.to_string()).unwrap_or_default();
            let old = match value_text(value) {
                None => {
                    step.missing += 1;
                    continue;
                }
                Some(Err(_)) => {
                    note_corrupt(&key, "record is not UTF-8 text");
                    step.corrupt += 1;
                    continue;
                }
                Some(Ok(text)) => text,
            };
            let migrated = match upgrade(&old) {
                Ok(None) => Ok(Migrated::Current),
                Ok(Some((new, task))) => self.rewrite(&old, new, &task).await,
                Err(e) => Err(e),
            };
            match migrated {
                Ok(Migrated::Rewritten) => step.migrated += 1,
                Ok(Migrated::Current | Migrated::Changed) => step.current += 1,
                Err(StoreError::Corrupt { reason, .. }) => {
                    note_corrupt(&key, &reason);
                    step.corrupt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(step)
    }

    /// Replace the record `old` with `new` (its current form, of `task`) unless it changed
    /// since it was read: the `migrate` script (compare-and-set, then the record script's
    /// upsert).
    async fn rewrite(
        &self,
        old: &str,
        new: String,
        task: &FailedTask,
    ) -> Result<Migrated, StoreError> {
        let (script_keys, script_args) = self.record_call(task, RetryPlan::NotScheduled);
        let mut args = Vec::with_capacity(6);
        args.push(Value::from(self.keys.prefix()));
        args.push(Value::from(old));
        args.push(Value::from(new));
        args.extend(script_args.into_iter().skip(1));
        let done: i64 = self
            .conn
            .eval(&Scripts::get().migrate, script_keys.into(), args)
            .await?;
        Ok(if done == 1 {
            Migrated::Rewritten
        } else {
            Migrated::Changed
        })
    }
}

/// The current form of the record `old` and its task; `None` when it is current already.
fn upgrade(old: &str) -> Result<Option<(String, FailedTask)>, StoreError> {
    stored::upgrade(old).map_err(|reason| StoreError::Corrupt {
        key: String::new(),
        reason,
    })
}

/// What [`RedisStore::migrate_record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrated {
    /// Rewritten in the current layout.
    Rewritten,
    /// Already in the current layout: nothing to do.
    Current,
    /// The record is no longer the value read (a writer got there first): left alone.
    Changed,
}
