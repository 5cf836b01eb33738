//! Phase 10 (`--only-codebase`), failed files (issue 24): what the files a failure may carry
//! (`P:files:{TaskId}`, written by the `put_files` script after the record) cost.
//!
//! - `files_page_p50_ratio`: the listing's page p50 through the use case on a store of
//!   [`PAGE_TASKS`] tasks that each carry [`PAGE_FILES`] failed files, over the p50 of a
//!   store of the same tasks without files, interleaved call by call (alternating which goes
//!   first); the issue asks 1 ± 5 % (no page reads a files key). The same through HTTP
//!   (two app servers, one keep-alive connection each): `files_page_http_p50_ratio`.
//! - `record_1000_files_redis_us`: Redis time per task of recording one task with 1,000
//!   failed files through the use case, as the server does (the record, its retry
//!   scheduled, then `put_files`): the scripts' `usec` in `INFO commandstats` (reset just
//!   before; a command a script calls is counted both on its own line and in the script's,
//!   so only the scripts are summed: the recording path sends nothing else), averaged over
//!   [`RECORD_TASKS`] tasks recorded one call each; the same tasks without files beside it,
//!   alternated in rounds, and each side's wall time as the caller sees it.
//! - `redis_bytes_per_file`: the `used_memory` delta of putting only the files of
//!   [`MEMORY_TASKS`] recorded tasks × [`TASK_FILES`] files (1,000,000 files), over the
//!   files' count; the issue asks ≤ 120. `MEMORY USAGE` and `STRLEN` of one key beside it.
//!
//! `codebase_phase_redis_used_mb`: Redis's `used_memory` at the end, every store of the phase
//! still there (about 190 MB).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use failed_tasks_domain::{FailedTask, NewFailedFile, NewFailedTask, TaskFiles, Timestamp};
use failed_tasks_query::{Deadlines, FailedTaskService};
use failed_tasks_redis::RedisStore;
use failed_tasks_store::{FilesStore, Stores};
use fred::types::Value;

use crate::bench::{connect_store, now_ms, without_retries, Bench, LIST_PATH, PAGE};
use crate::child::{ChildServer, Kind};
use crate::data;
use crate::load::HttpConn;
use crate::raw::{is_script, Raw};
use crate::report::Latency;

const WITH_PREFIX: &str = "{bench-files-with}";
const WITHOUT_PREFIX: &str = "{bench-files-without}";
const RECORD_PREFIX: &str = "{bench-files-record}";
const MEMORY_PREFIX: &str = "{bench-files-memory}";

/// Tasks in each of the two page stores.
const PAGE_TASKS: u64 = 10_000;
/// Failed files of each task of the page store with files.
const PAGE_FILES: usize = 100;
/// Tasks recorded one call each with 1,000 files (and as many without), in two rounds.
const RECORD_TASKS: u64 = 200;
const RECORD_ROUNDS: u64 = 2;
/// Tasks of the memory figure, and files of each (1,000,000 files).
const MEMORY_TASKS: u64 = 1_000;
const TASK_FILES: usize = 1_000;

/// `n` failed files of a realistic codebase, as crates/redis/tests/it/files.rs builds them:
/// paths of 45 bytes, three error codes and messages, the three operations.
fn task_files(n: usize) -> anyhow::Result<TaskFiles> {
    const CODES: [&str; 3] = ["EMBEDDING_TIMEOUT", "RATE_LIMITED", "PARSE_ERROR"];
    const MESSAGES: [&str; 3] = [
        "embedding provider did not answer within 30s",
        "429 Too Many Requests from the embedding provider",
        "could not split the file into chunks",
    ];
    let raw: Vec<NewFailedFile> = (0..n)
        .map(|i| NewFailedFile {
            path: format!("src/components/module_{:02}/widget_{i:04}_view.tsx", i % 37),
            operation: ["add", "modify", "delete"][i % 3].to_owned(),
            error_code: CODES[i % 3].to_owned(),
            error_message: MESSAGES[i % 3].to_owned(),
        })
        .collect();
    TaskFiles::new(None, Some(raw), n.max(1), "")?.ok_or_else(|| anyhow!("no files built"))
}

/// A first failure (no retry yet) of a codebase task, `tag` apart from the others.
fn failure(tag: &str, i: u64, fail_ms: i64) -> anyhow::Result<FailedTask> {
    let fail = Timestamp::saturating_from_unix_millis(fail_ms + i as i64);
    FailedTask::new(NewFailedTask {
        task_id: format!("files-{tag}-{i:06}"),
        task_type: "embedding".to_owned(),
        client_id: format!("client-{:02}", i % 20),
        codebase_path: format!("/projects/repo-{:03}", i % 100),
        start_time: fail,
        fail_time: fail,
        error_code: "EMBEDDING_TIMEOUT".to_owned(),
        error_message: "embedding provider did not answer for some of the files".to_owned(),
        retry_count: 0,
        processed_files: 1_000,
        error_category: None,
    })
    .map_err(|e| anyhow!("bench failure {tag} {i}: {e}"))
}

/// `MEMORY USAGE key SAMPLES 0` and `STRLEN key`.
async fn key_bytes(raw: &Raw, key: &str) -> anyhow::Result<(f64, f64)> {
    let int = |v: Value| match v {
        Value::Integer(b) => Ok(b as f64),
        other => Err(anyhow!("expected an integer for {key}, got {other:?}")),
    };
    let usage = raw
        .run(
            "MEMORY",
            vec!["USAGE".into(), key.into(), "SAMPLES".into(), 0i64.into()],
        )
        .await?;
    let len = raw.run("STRLEN", vec![key.into()]).await?;
    Ok((int(usage)?, int(len)?))
}

/// Record `tasks` (no files) in batches of 500.
async fn record_plain(service: &FailedTaskService, tasks: &[FailedTask]) -> anyhow::Result<()> {
    for batch in tasks.chunks(500) {
        service
            .record_failures(batch)
            .await
            .map_err(|e| anyhow!("recording: {e}"))?;
    }
    Ok(())
}

/// What one side of the recording figure took: scripts' usec, Redis CPU seconds, wall time.
#[derive(Default)]
struct Spent {
    usec: f64,
    cpu_s: f64,
    wall: Duration,
    /// The other commands counted (those the scripts call): calls and usec.
    other: BTreeMap<String, (u64, f64)>,
}

/// Record `tasks` one call each (with `files` for each, or none) and what it cost Redis.
async fn record_one_by_one(
    raw: &Raw,
    service: &FailedTaskService,
    tasks: &[FailedTask],
    files: &[Option<TaskFiles>; 1],
    spent: &mut Spent,
) -> anyhow::Result<()> {
    raw.reset_stats().await?;
    let cpu0 = raw.cpu_seconds().await?;
    let start = Instant::now();
    for t in tasks {
        service
            .record_failures_with_files(std::slice::from_ref(t), files)
            .await
            .map_err(|e| anyhow!("recording with files: {e}"))?;
    }
    spent.wall += start.elapsed();
    spent.cpu_s += raw.cpu_seconds().await? - cpu0;
    for (cmd, calls, usec) in raw.command_stats().await? {
        if is_script(&cmd) {
            spent.usec += usec;
        } else if cmd != "config|resetstat" && cmd != "info" {
            let e = spent.other.entry(cmd).or_default();
            e.0 += calls;
            e.1 += usec;
        }
    }
    Ok(())
}

impl Bench {
    /// Phase 10's failed-files figures (see the module).
    pub(crate) async fn files_costs(&mut self) -> anyhow::Result<()> {
        println!("phase 10: failed files (issue 24)");
        self.files_memory().await?;
        self.files_recording().await?;
        self.files_pages().await?;
        // How much the phase leaves in Redis (it is kept bounded): every store of phase 10.
        let used_mb = self.raw0.used_memory().await? / 1e6;
        self.f.set("codebase_phase_redis_used_mb", used_mb);
        println!("  Redis used_memory at the end of phase 10: {used_mb:.0} MB");
        Ok(())
    }

    /// `redis_bytes_per_file`: the files of 1,000 recorded tasks, 1,000 files each.
    async fn files_memory(&mut self) -> anyhow::Result<()> {
        let store = connect_store(&self.url0, MEMORY_PREFIX).await?;
        let service = FailedTaskService::new(Stores::from(store.clone()), Deadlines::default());
        let fail_ms = now_ms() - 1_800_000;
        let tasks = (0..MEMORY_TASKS)
            .map(|i| failure("mem", i, fail_ms))
            .collect::<anyhow::Result<Vec<_>>>()?;
        record_plain(&service, &tasks).await?;
        let files = task_files(TASK_FILES)?;
        let before = self.raw0.used_memory().await?;
        let start = Instant::now();
        for t in &tasks {
            if !store
                .put_files(t.task_id(), &files)
                .await
                .map_err(|e| anyhow!("put_files: {e}"))?
            {
                bail!("put_files found no record of {}", t.task_id());
            }
        }
        let took = start.elapsed().as_secs_f64();
        let after = self.raw0.used_memory().await?;
        let n_files = (MEMORY_TASKS as usize * TASK_FILES) as f64;
        let per_file = (after - before) / n_files;
        let key = store.keys().files(tasks[0].task_id().as_str());
        let (usage, strlen) = key_bytes(&self.raw0, &key).await?;
        let f = &mut self.f;
        f.set("redis_bytes_per_file", per_file);
        f.set("files_memory_files", n_files);
        f.set("files_key_memory_usage_bytes", usage);
        f.set("files_key_strlen_bytes", strlen);
        println!(
            "  {n_files:.0} files ({MEMORY_TASKS} tasks × {TASK_FILES}): used_memory +{:.1} MB, \
             {per_file:.1} B a file; one key: MEMORY USAGE {usage:.0} B ({:.1} a file), \
             {strlen:.0} B of JSON ({:.1} a file); put in {took:.1} s",
            (after - before) / 1e6,
            usage / TASK_FILES as f64,
            strlen / TASK_FILES as f64,
        );
        Ok(())
    }

    /// `record_1000_files_redis_us`: one task with 1,000 files a call, against without files.
    async fn files_recording(&mut self) -> anyhow::Result<()> {
        let store = connect_store(&self.url0, RECORD_PREFIX).await?;
        // As the server records: the retry scheduled with the record.
        let service = FailedTaskService::new(Stores::from(store), Deadlines::default());
        let fail_ms = now_ms() - 1_200_000;
        let with_files = [Some(task_files(TASK_FILES)?)];
        let without_files: [Option<TaskFiles>; 1] = [None];
        // Scripts loaded, connections warm.
        let warm = [failure("warm", 0, fail_ms)?, failure("warm", 1, fail_ms)?];
        service
            .record_failures_with_files(&warm[..1], &with_files)
            .await
            .map_err(|e| anyhow!("recording with files: {e}"))?;
        service
            .record_failures_with_files(&warm[1..], &without_files)
            .await
            .map_err(|e| anyhow!("recording: {e}"))?;
        let per_round = RECORD_TASKS / RECORD_ROUNDS;
        let (mut with, mut without) = (Spent::default(), Spent::default());
        for round in 0..RECORD_ROUNDS {
            let from = round * per_round;
            let tasks = |tag: &str| {
                (from..from + per_round)
                    .map(|i| failure(tag, i, fail_ms))
                    .collect::<anyhow::Result<Vec<_>>>()
            };
            let (a, b) = (tasks("rec")?, tasks("plain")?);
            record_one_by_one(&self.raw0, &service, &a, &with_files, &mut with).await?;
            record_one_by_one(&self.raw0, &service, &b, &without_files, &mut without).await?;
        }
        let n = RECORD_TASKS as f64;
        let us = |s: &Spent| {
            (
                s.usec / n,
                s.cpu_s * 1e6 / n,
                s.wall.as_secs_f64() * 1e6 / n,
            )
        };
        let (w_redis, w_cpu, w_wall) = us(&with);
        let (p_redis, p_cpu, p_wall) = us(&without);
        let f = &mut self.f;
        f.set("record_1000_files_redis_us", w_redis);
        f.set("record_1000_files_redis_cpu_us", w_cpu);
        f.set("record_1000_files_wall_us", w_wall);
        f.set("record_no_files_redis_us", p_redis);
        f.set("record_no_files_redis_cpu_us", p_cpu);
        f.set("record_no_files_wall_us", p_wall);
        println!(
            "  recording one task a call, {RECORD_TASKS} tasks: with 1,000 files {w_redis:.0} µs \
             of Redis time (scripts; Redis CPU {w_cpu:.0} µs), {w_wall:.0} µs for the caller; \
             without files {p_redis:.0} µs (CPU {p_cpu:.0} µs), {p_wall:.0} µs"
        );
        for (side, s) in [("with files", &with), ("without", &without)] {
            if !s.other.is_empty() {
                let list: Vec<String> = s
                    .other
                    .iter()
                    .map(|(cmd, (calls, usec))| format!("{cmd} ×{calls} {usec:.0} µs"))
                    .collect();
                println!(
                    "  ({side}, other commands counted (inside the scripts or not), over all tasks: {})",
                    list.join(", ")
                );
            }
        }
        Ok(())
    }

    /// `files_page_p50_ratio`: the same tasks with and without files, pages interleaved.
    async fn files_pages(&mut self) -> anyhow::Result<()> {
        let with_store = connect_store(&self.url0, WITH_PREFIX).await?;
        let without_store = connect_store(&self.url0, WITHOUT_PREFIX).await?;
        let service =
            |s: RedisStore| FailedTaskService::new(without_retries(s), Deadlines::default());
        let sides = [service(with_store), service(without_store)];
        let base_ms = now_ms() - 3_600_000;
        let files = task_files(PAGE_FILES)?;
        let start = Instant::now();
        let mut from = 0;
        while from < PAGE_TASKS {
            let to = (from + 500).min(PAGE_TASKS);
            let batch = data::tasks(from, to, base_ms)?;
            let with_files = vec![Some(files.clone()); batch.len()];
            sides[0]
                .record_failures_with_files(&batch, &with_files)
                .await
                .map_err(|e| anyhow!("recording with files: {e}"))?;
            record_plain(&sides[1], &batch).await?;
            from = to;
        }
        eprintln!(
            "  filled {PAGE_TASKS} tasks with {PAGE_FILES} files each and {PAGE_TASKS} without \
             in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        let apps = [
            ChildServer::start(Kind::App, &self.url0, WITH_PREFIX, None)?,
            ChildServer::start(Kind::App, &self.url0, WITHOUT_PREFIX, None)?,
        ];
        let mut conns = [
            HttpConn::connect(apps[0].addr, LIST_PATH).await?,
            HttpConn::connect(apps[1].addr, LIST_PATH).await?,
        ];
        let (a, b) = (conns[0].get(true).await?, conns[1].get(true).await?);
        if a.status != 200 || b.status != 200 {
            bail!("HTTP list answered {} and {}", a.status, b.status);
        }
        if a.body != b.body {
            bail!("the two stores' first pages differ: they do not hold the same tasks");
        }
        let query = &self.query;
        // [use case with, use case without, HTTP with, HTTP without]
        let mut times: [Vec<Duration>; 4] = Default::default();
        let samples = 2 * self.samples;
        let warm = samples / 10;
        for i in 0..samples + warm {
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let t = Instant::now();
                let page = sides[side]
                    .list_failed(query)
                    .await
                    .map_err(|e| anyhow!("list_failed: {e}"))?;
                let took = t.elapsed();
                if page.tasks.len() != PAGE as usize || page.total != PAGE_TASKS {
                    bail!(
                        "unexpected page: {} tasks, total {}",
                        page.tasks.len(),
                        page.total
                    );
                }
                if i >= warm {
                    times[side].push(took);
                }
            }
            for side in order {
                let t = Instant::now();
                let r = conns[side].get(false).await?;
                let took = t.elapsed();
                if r.status != 200 {
                    bail!("HTTP list answered {}", r.status);
                }
                if i >= warm {
                    times[2 + side].push(took);
                }
            }
        }
        drop(apps);
        let [with, without, http_with, http_without] = times.map(Latency::of);
        let f = &mut self.f;
        f.latency("files_page_usecase_with", with);
        f.latency("files_page_usecase_without", without);
        f.latency("files_page_http_with", http_with);
        f.latency("files_page_http_without", http_without);
        let ratio = with.p50_ms / without.p50_ms;
        let http_ratio = http_with.p50_ms / http_without.p50_ms;
        f.set("files_page_p50_ratio", ratio);
        f.set("files_page_http_p50_ratio", http_ratio);
        println!(
            "  page of {PAGE} among {PAGE_TASKS} tasks, {samples} pages a side: use case p50 \
             {:.3} ms with {PAGE_FILES} files a task, {:.3} ms without: ratio {ratio:.3}; \
             HTTP {:.3} / {:.3} ms: {http_ratio:.3}",
            with.p50_ms, without.p50_ms, http_with.p50_ms, http_without.p50_ms
        );
        Ok(())
    }
}
