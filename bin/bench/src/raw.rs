//! Direct Redis access: the raw page floor, the original Go algorithm, filling the Go
//! layout, and `INFO` figures. Same driver (fred) as the store, no store code in between.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use fred::clients::Client;
use fred::prelude::{ClientLike, Config};
use fred::types::{Builder, ClusterHash, CustomCommand, Value};
use serde::Deserialize;

use crate::data;

/// A plain fred client for one database.
#[derive(Clone)]
pub struct Raw {
    client: Client,
}

fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::FirstKey, false)
}

fn text(v: Value) -> anyhow::Result<String> {
    match v {
        Value::String(s) => Ok(s.to_string()),
        Value::Bytes(b) => Ok(String::from_utf8(b.to_vec())?),
        Value::Integer(i) => Ok(i.to_string()),
        other => bail!("expected text from redis, got {other:?}"),
    }
}

impl Raw {
    /// Connect (and wait for the connection) to `url`.
    pub async fn connect(url: &str) -> anyhow::Result<Raw> {
        let config = Config::from_url(url).with_context(|| format!("redis url {url}"))?;
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(30))
            .build()
            .context("building a fred client")?;
        let _task = tokio::time::timeout(Duration::from_secs(10), client.init())
            .await
            .context("connecting to redis timed out")?
            .context("connecting to redis")?;
        Ok(Raw { client })
    }

    /// Run one command.
    pub async fn run(&self, name: &'static str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.client
            .custom::<Value, Value>(cmd(name), args)
            .await
            .with_context(|| format!("redis {name}"))
    }

    /// `INFO section` parsed into `(field, value)` pairs.
    pub async fn info(&self, section: &str) -> anyhow::Result<Vec<(String, String)>> {
        let reply = text(self.run("INFO", vec![section.into()]).await?)?;
        Ok(reply
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect())
    }

    /// One numeric field of `INFO section`.
    pub async fn info_f64(&self, section: &str, field: &str) -> anyhow::Result<f64> {
        let info = self.info(section).await?;
        let (_, v) = info
            .iter()
            .find(|(k, _)| k == field)
            .ok_or_else(|| anyhow!("INFO {section} has no {field}"))?;
        v.parse().with_context(|| format!("INFO {field} = {v:?}"))
    }

    /// Redis's `used_memory` after letting lazy frees settle.
    pub async fn used_memory(&self) -> anyhow::Result<f64> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.info_f64("memory", "used_memory").await
    }

    /// `CONFIG RESETSTAT`: the command statistics start again from zero.
    pub async fn reset_stats(&self) -> anyhow::Result<()> {
        self.run("CONFIG", vec!["RESETSTAT".into()]).await?;
        Ok(())
    }

    /// `INFO commandstats` as (command, calls, usec).
    pub async fn command_stats(&self) -> anyhow::Result<Vec<(String, u64, f64)>> {
        let mut out = Vec::new();
        for (name, stats) in self.info("commandstats").await? {
            let Some(cmd) = name.strip_prefix("cmdstat_") else {
                continue;
            };
            let (mut calls, mut usec) = (0, 0.0);
            for part in stats.split(',') {
                if let Some(v) = part.strip_prefix("calls=") {
                    calls = v.parse().unwrap_or(0);
                } else if let Some(v) = part.strip_prefix("usec=") {
                    usec = v.parse().unwrap_or(0.0);
                }
            }
            out.push((cmd.to_owned(), calls, usec));
        }
        Ok(out)
    }

    /// The summed `usec` of the scripts (`EVAL*`, `FCALL*`) since the last
    /// [`Raw::reset_stats`]: the Redis time of everything the store sends as scripts (a
    /// command a script calls is also counted on its own line, so only scripts are summed).
    pub async fn script_usec(&self) -> anyhow::Result<f64> {
        Ok(self
            .command_stats()
            .await?
            .iter()
            .filter(|(cmd, _, _)| is_script(cmd))
            .map(|(_, _, usec)| usec)
            .sum())
    }

    /// CPU seconds (user + system) used by the Redis server so far.
    pub async fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let info = self.info("cpu").await?;
        let get = |f: &str| {
            info.iter()
                .find(|(k, _)| k == f)
                .and_then(|(_, v)| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok(get("used_cpu_user") + get("used_cpu_sys"))
    }

    /// Number of keys in the selected database.
    pub async fn dbsize(&self) -> anyhow::Result<i64> {
        match self.run("DBSIZE", vec![]).await? {
            Value::Integer(n) => Ok(n),
            other => bail!("DBSIZE answered {other:?}"),
        }
    }

    /// The raw page floor: ZCARD + ZRANGE 0 49 REV pipelined (one round trip), then MGET of
    /// the records (a second round trip). Returns the bytes read, as a sanity check.
    pub async fn floor_page(&self, index: &str, record_prefix: &str) -> anyhow::Result<usize> {
        let pipe = self.client.pipeline();
        let _: () = pipe.custom(cmd("ZCARD"), vec![Value::from(index)]).await?;
        let _: () = pipe
            .custom(
                cmd("ZRANGE"),
                vec![Value::from(index), 0i64.into(), 49i64.into(), "REV".into()],
            )
            .await?;
        let mut replies: Vec<Value> = pipe.all().await.context("ZCARD + ZRANGE pipeline")?;
        let members = match replies.pop() {
            Some(Value::Array(m)) => m,
            other => bail!("ZRANGE answered {other:?}"),
        };
        let keys: Vec<Value> = members
            .into_iter()
            .map(|m| {
                let m = text(m)?;
                let id = m.get(16..).ok_or_else(|| anyhow!("short member {m:?}"))?;
                Ok(Value::from(format!("{record_prefix}{id}")))
            })
            .collect::<anyhow::Result<_>>()?;
        let records = match self.run("MGET", keys).await? {
            Value::Array(r) => r,
            other => bail!("MGET answered {other:?}"),
        };
        let mut bytes = 0;
        for r in records {
            match r {
                Value::Bytes(b) => bytes += b.len(),
                Value::String(s) => bytes += s.len(),
                other => bail!("a record of the floor page is {other:?}"),
            }
        }
        Ok(bytes)
    }

    /// Write `n` Go status records (`SET key value EX 86400`), pipelined in chunks.
    pub async fn fill_go(&self, n: u64) -> anyhow::Result<()> {
        let mut i = 0;
        while i < n {
            let end = (i + 1000).min(n);
            let pipe = self.client.pipeline();
            for j in i..end {
                let _: () = pipe
                    .custom(
                        cmd("SET"),
                        vec![
                            Value::from(data::go_key(j)),
                            Value::from(data::go_record(j)),
                            "EX".into(),
                            86_400i64.into(),
                        ],
                    )
                    .await?;
            }
            let _: Vec<Value> = pipe.all().await.context("filling Go records")?;
            i = end;
        }
        Ok(())
    }

    /// The original Go service's listing, re-implemented step by step: `SCAN 0 MATCH
    /// request:id:* COUNT 10` until the cursor comes back to 0, one `GET` per key (awaited
    /// one after another, as the Go loop does), JSON decode, keep `process == "failed"`,
    /// sort. Returns how many failed tasks it found.
    pub async fn go_list_failed(&self) -> anyhow::Result<usize> {
        #[derive(Deserialize)]
        #[allow(dead_code)] // decoded like the Go struct, not all read
        struct GoFile {
            path: String,
            status: String,
            operate: String,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct GoStatus {
            process: String,
            #[serde(rename = "totalProgress")]
            total_progress: i64,
            #[serde(rename = "fileList")]
            file_list: Vec<GoFile>,
        }
        let mut failed: Vec<(String, GoStatus)> = Vec::new();
        let mut cursor = "0".to_owned();
        // Bounded: SCAN ends in at most a few calls per key; 10 M calls is far beyond that.
        for _ in 0..10_000_000u64 {
            let reply = self
                .run(
                    "SCAN",
                    vec![
                        cursor.as_str().into(),
                        "MATCH".into(),
                        "request:id:*".into(),
                        "COUNT".into(),
                        10i64.into(),
                    ],
                )
                .await?;
            let Value::Array(mut parts) = reply else {
                bail!("SCAN answered {reply:?}");
            };
            let keys = match parts.pop() {
                Some(Value::Array(k)) => k,
                other => bail!("SCAN keys are {other:?}"),
            };
            cursor = text(parts.pop().ok_or_else(|| anyhow!("SCAN without cursor"))?)?;
            for key in keys {
                let key = text(key)?;
                let value = self.run("GET", vec![key.as_str().into()]).await?;
                if matches!(value, Value::Null) {
                    continue; // expired between SCAN and GET
                }
                let status: GoStatus = match serde_json::from_str(&text(value)?) {
                    Ok(s) => s,
                    Err(_) => continue, // the Go code logs and skips
                };
                if status.process == "failed" {
                    failed.push((key, status));
                }
            }
            if cursor == "0" {
                break;
            }
        }
        failed.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(failed.len())
    }
}

/// Time one call of `f`.
pub async fn timed<T, F: std::future::Future<Output = anyhow::Result<T>>>(
    f: F,
) -> anyhow::Result<(T, Duration)> {
    let start = Instant::now();
    let v = f.await?;
    Ok((v, start.elapsed()))
}

/// Whether a `commandstats` command name is a script call.
pub fn is_script(cmd: &str) -> bool {
    cmd.starts_with("eval") || cmd.starts_with("fcall")
}
