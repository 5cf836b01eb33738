//! The failed files of tasks ([`FilesStore`]): one string per task, `PREFIX:files:ID`, in
//! the stored form of [`failed_tasks_store::files`], apart from the record so that pages
//! never read it; and what its retry requests carry, a field of `PREFIX:retry:files`
//! ([`retry_entry`]). It is written after the record (the `put_files` script: only while the
//! record is there, with the record's expiry) and deleted with the record by the shared
//! `unrecord` helper of every script that takes a record out (remove, resolve, supersede,
//! trim, and the upsert of a task recorded again).

use async_trait::async_trait;
use failed_tasks_domain::{TaskFiles, TaskId};
use failed_tasks_store::{files, FilesStore, StoreError};
use fred::types::Value;

use crate::conn::Script;
use crate::shard::Shard;
use crate::store::{value_text, RedisStore};

/// Store a task's failed files while its record is there, expiring with it.
///
/// KEYS: the record, the files key, `P:retry:files`. ARGV: the stored form, the task id,
/// its [`retry_entry`]. Returns 1 when stored, 0 when the record is not there (nothing
/// written).
const PUT_FILES: &str = r#"
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return 0 end
if ttl > 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[2], ARGV[1])
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return 1
"#;

/// What a retry request of a task with `files` carries, as `P:retry:files` holds it (the
/// deliver script copies it into the stream entry): `FailedFiles`, then, tab-separated,
/// `i` and the paths joined by newlines when at most `inline` were listed, `k` when more
/// were (the entry names the files key), nothing when none were. Paths hold no control
/// characters, so neither separator can occur in one.
pub(crate) fn retry_entry(files: &TaskFiles, inline: usize) -> String {
    let n = files.failed_files();
    match files.files() {
        None => n.to_string(),
        Some(list) if list.len() <= inline => {
            let paths: Vec<&str> = list.iter().map(|f| f.path.as_str()).collect();
            format!("{n}\ti{}", paths.join("\n"))
        }
        Some(_) => format!("{n}\tk"),
    }
}

fn put_script() -> &'static Script {
    static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    // Setting the same value twice is harmless: retried like a read.
    SCRIPT.get_or_init(|| Script::new("put_files", PUT_FILES.to_owned()))
}

impl Shard {
    /// One `put_files` script call.
    pub(crate) async fn put_files(
        &self,
        id: &TaskId,
        files: &TaskFiles,
    ) -> Result<bool, StoreError> {
        let stored = files::encode(files);
        let entry = retry_entry(files, self.config.retry_inline_files);
        let k = &self.keys;
        let done: i64 = self
            .conn
            .eval(
                put_script(),
                vec![
                    k.record(id.as_str()).into(),
                    k.files(id.as_str()).into(),
                    k.retry_files().into(),
                ],
                vec![stored.into(), id.as_str().into(), entry.into()],
            )
            .await?;
        Ok(done == 1)
    }

    /// The stored form of a task's failed files, as stored (`None`: none).
    pub(crate) async fn files_text(&self, id: &TaskId) -> Result<Option<String>, StoreError> {
        let key = self.keys.files(id.as_str());
        let value: Value = self
            .conn
            .cmd("reading failed files", "GET", vec![key.as_str().into()])
            .await?;
        match value_text(value) {
            None => Ok(None),
            Some(Ok(text)) => Ok(Some(text)),
            Some(Err(_)) => Err(StoreError::Corrupt {
                key,
                reason: "failed files are not UTF-8 text".to_owned(),
            }),
        }
    }

    /// A task's failed files, decoded.
    pub(crate) async fn files(&self, id: &TaskId) -> Result<Option<TaskFiles>, StoreError> {
        let Some(text) = self.files_text(id).await? else {
            return Ok(None);
        };
        files::decode(&text)
            .map(Some)
            .map_err(|reason| StoreError::Corrupt {
                key: self.keys.files(id.as_str()),
                reason,
            })
    }
}

#[async_trait]
impl FilesStore for RedisStore {
    /// On the task's (write) shard, where its record is.
    async fn put_files(&self, task_id: &TaskId, files: &TaskFiles) -> Result<bool, StoreError> {
        self.shards()
            .of(task_id.as_str())
            .put_files(task_id, files)
            .await
    }

    async fn files(&self, task_id: &TaskId) -> Result<Option<TaskFiles>, StoreError> {
        self.on_task(task_id, Option::is_none, |s| s.files(task_id))
            .await
    }
}
