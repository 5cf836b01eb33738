//! Figures, the targets they are judged against, the human table and the JSON file.

use std::time::Duration;

use serde_json::{Map, Value};

/// Latency summary of repeated calls, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    /// Summarise samples (any order).
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort();
        let n = samples.len().max(1);
        let at = |q: usize| {
            samples
                .get((n * q / 100).min(n - 1))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / n as f64;
        Latency {
            p50_ms: at(50),
            p99_ms: at(99),
            mean_ms: mean,
        }
    }
}

/// Every figure of a run, in the order they were measured.
#[derive(Debug, Default)]
pub struct Figures {
    values: Map<String, Value>,
}

impl Figures {
    pub fn set(&mut self, key: &str, value: f64) {
        let v = if value.is_finite() {
            // Three significant decimals is plenty and keeps the file readable.
            Value::from((value * 1000.0).round() / 1000.0)
        } else {
            Value::Null
        };
        self.values.insert(key.to_owned(), v);
    }

    pub fn set_text(&mut self, key: &str, value: impl Into<String>) {
        self.values
            .insert(key.to_owned(), Value::from(value.into()));
    }

    pub fn latency(&mut self, prefix: &str, l: Latency) {
        self.set(&format!("{prefix}_p50_ms"), l.p50_ms);
        self.set(&format!("{prefix}_p99_ms"), l.p99_ms);
        self.set(&format!("{prefix}_mean_ms"), l.mean_ms);
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).and_then(Value::as_f64)
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        self.values.get(key).and_then(Value::as_str)
    }

    /// The JSON document: every figure, plus each target's verdict.
    pub fn to_json(&self) -> Value {
        let mut doc = self.values.clone();
        let mut verdicts = Map::new();
        for t in TARGETS {
            let v = self.get(t.key).map(|v| t.met(v));
            verdicts.insert(
                t.key.to_owned(),
                serde_json::json!({
                    "target": format!("{} {}", t.op.symbol(), t.bound),
                    "met": v,
                }),
            );
        }
        doc.insert("targets".to_owned(), Value::Object(verdicts));
        Value::Object(doc)
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Op {
    AtMost,
    AtLeast,
    /// A ratio within `bound` of 1 either way.
    NearOne,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::AtMost => "<=",
            Op::AtLeast => ">=",
            Op::NearOne => "1 ±",
        }
    }
}

/// One performance target (docs/BENCHMARKS.md lists them with their figures).
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub key: &'static str,
    pub op: Op,
    pub bound: f64,
    pub what: &'static str,
}

impl Target {
    fn met(&self, v: f64) -> bool {
        match self.op {
            Op::AtMost => v <= self.bound,
            Op::AtLeast => v >= self.bound,
            Op::NearOne => (v - 1.0).abs() <= self.bound,
        }
    }
}

pub const TARGETS: &[Target] = &[
    Target {
        key: "shard_spread_min_pct",
        op: Op::AtLeast,
        bound: 25.0,
        what: "cluster, 16 shards, 100k tasks: the emptiest master's share of the keys",
    },
    Target {
        key: "shard_spread_max_pct",
        op: Op::AtMost,
        bound: 40.0,
        what: "cluster, 16 shards, 100k tasks: the fullest master's share of the keys",
    },
    Target {
        key: "shard_page_ratio",
        op: Op::AtMost,
        bound: 2.0,
        what: "cluster, 100k: page p50 with 16 shards / with 1 shard",
    },
    Target {
        key: "shard_records_ratio",
        op: Op::AtLeast,
        bound: 1.5,
        what: "cluster, 100k: records/s with 16 shards / with 1 shard",
    },
    Target {
        key: "scale_ratio",
        op: Op::AtMost,
        bound: 1.2,
        what: "page p50 at largest N / at 1k (use case)",
    },
    Target {
        key: "floor_ratio",
        op: Op::AtMost,
        bound: 1.5,
        what: "use-case page p50 / raw Redis page p50",
    },
    Target {
        key: "upstream_speedup",
        op: Op::AtLeast,
        bound: 10_000.0,
        what: "Go SCAN+GET listing / our page, 100k keys",
    },
    Target {
        key: "http_vs_hello",
        op: Op::AtLeast,
        bound: 0.25,
        what: "HTTP req/s of the list / hello-world",
    },
    Target {
        key: "server_cpu_vs_hello",
        op: Op::AtMost,
        bound: 4.0,
        what: "server CPU per listing request / hello-world's, same bytes and load",
    },
    Target {
        key: "redis_cpu_vs_floor",
        op: Op::AtMost,
        bound: 1.0,
        what: "Redis CPU per page of our read path / the raw two-command floor's",
    },
    Target {
        key: "records_per_s",
        op: Op::AtLeast,
        bound: 20_000.0,
        what: "failures recorded (and their retries scheduled) per second, one process",
    },
    Target {
        key: "retries_moved_per_s",
        op: Op::AtLeast,
        bound: 20_000.0,
        what: "due retries moved into the stream per second, one scheduler",
    },
    Target {
        key: "retries_moved_per_s_100_gates",
        op: Op::AtLeast,
        bound: 50_000.0,
        what: "the same with 100 retry gates, none matching",
    },
    Target {
        key: "records_per_s_notify_ratio",
        op: Op::AtLeast,
        bound: 0.95,
        what: "recording with two notification targets (receiver answering) / without",
    },
    Target {
        key: "supersede_1000_redis_ms",
        op: Op::AtMost,
        bound: 50.0,
        what: "Redis time of a success report superseding 1,000 failures (of 10,000 of its client)",
    },
    Target {
        key: "files_page_p50_ratio",
        op: Op::NearOne,
        bound: 0.05,
        what: "page p50, 10,000 tasks with 100 failed files each / without (use case, interleaved)",
    },
    Target {
        key: "redis_bytes_per_file",
        op: Op::AtMost,
        bound: 120.0,
        what:
            "Redis used_memory delta / files, 1,000 tasks x 1,000 failed files (records excluded)",
    },
    Target {
        key: "limit_gate_rate_error",
        op: Op::AtMost,
        bound: 0.05,
        what: "one limit gate of 1,000/s: |delivered rate over 10 s - 1,000| / 1,000",
    },
    Target {
        key: "retry_lag_p99_ms",
        op: Op::AtMost,
        bound: 1_500.0,
        what: "due -> in the stream, p99, at 1,000 due/s",
    },
    Target {
        key: "redis_bytes_per_task",
        op: Op::AtMost,
        bound: 1_000.0,
        what: "Redis used_memory delta / N, all indexes",
    },
    Target {
        key: "search_groups_p50_ms",
        op: Op::AtMost,
        bound: 5.0,
        what: "search, N in 1,000 groups: page p50 of a q naming a group's pattern (HTTP)",
    },
    Target {
        key: "search_walk_max_ms",
        op: Op::AtMost,
        bound: 10_000.0,
        what: "search: slowest answer (page or Complete:false) of a q in 1 task of 997",
    },
    Target {
        key: "export_rows_per_s",
        op: Op::AtLeast,
        bound: 100_000.0,
        what: "export of every row (N), the slower of CSV and NDJSON",
    },
    Target {
        key: "export_rss_growth_mb",
        op: Op::AtMost,
        bound: 32.0,
        what: "server resident memory growth during an export of every row",
    },
    Target {
        key: "server_rss_mb",
        op: Op::AtMost,
        bound: 50.0,
        what: "server peak RSS (VmHWM) after the HTTP run",
    },
];

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".to_owned(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// The human table: details, then each target with PASS/MISS.
pub fn table(f: &Figures, sizes: &[u64]) -> String {
    let mut out = String::new();
    out.push_str("\nPage of 50, newest first (ms)                p50      p99\n");
    for n in sizes {
        for (label, key) in [
            ("use case (ping + list)", "usecase"),
            ("store.list alone", "store"),
            ("HTTP, one keep-alive conn", "http"),
            ("raw Redis floor (2 RTT)", "floor"),
            ("1k store's use case, same loop", "ref1k_usecase_at"),
            ("1k store's floor, same loop", "ref1k_floor_at"),
        ] {
            let k = format!("{key}_{n}");
            out.push_str(&format!(
                "  N={n:<8} {label:<32} {:>8} {:>8}\n",
                fmt(f.get(&format!("{k}_p50_ms"))),
                fmt(f.get(&format!("{k}_p99_ms")))
            ));
        }
    }
    out.push_str("\nOther figures\n");
    for key in [
        "scale_ratio_staged",
        "upstream_go_ms",
        "upstream_found_failed",
        "compat_list_ms",
        "compat_speedup",
        "hello_rps",
        "http_rps",
        "fastpath_rps",
        "fastpath_vs_hello",
        "fastpath_server_cpu_us_per_req",
        "fastpath_redis_cpu_us_per_req",
        "http_server_cpu_us_per_req",
        "hello_server_cpu_us_per_req",
        "http_redis_cpu_us_per_req",
        "redis_floor_pages_per_s",
        "redis_floor_cpu_us_per_page",
        "redis_list_json_pages_per_s",
        "redis_list_json_cpu_us_per_page",
        "records_per_s_single",
        "records_per_s",
        "record_redis_us_per_task",
        "records_per_s_to_max",
        "records_per_s_planned_one_batch",
        "records_per_s_unplanned_one_batch",
        "scheduling_write_cost",
        "retries_moved_n",
        "retry_lag_n",
        "retry_lag_p50_ms",
        "server_rss_now_mb",
        "cluster_records_per_s_1_shard",
        "cluster_records_per_s_16_shards",
        "shard_keys_pct_master_0",
        "shard_keys_pct_master_1",
        "shard_keys_pct_master_2",
        "shard_page_1_p50_ms",
        "shard_page_16_p50_ms",
        "shard_json_page_1_p50_ms",
        "shard_json_page_16_p50_ms",
        "shard_json_page_ratio",
        "shard_floor_one_master_p50_ms",
        "shard_floor_three_masters_p50_ms",
        "shard_floor_ratio",
        "search_n",
        "search_groups_p50_ms",
        "search_groups_p99_ms",
        "search_walk_p50_ms",
        "search_walk_p99_ms",
        "search_walk_complete_pct",
        "export_csv_rows_per_s",
        "export_csv_mb",
        "export_csv_rss_growth_mb",
        "export_ndjson_rows_per_s",
        "export_ndjson_mb",
        "export_ndjson_rss_growth_mb",
        "supersede_1000_wall_ms",
        "files_page_usecase_with_p50_ms",
        "files_page_usecase_without_p50_ms",
        "files_page_http_with_p50_ms",
        "files_page_http_without_p50_ms",
        "files_page_http_p50_ratio",
        "record_1000_files_redis_us",
        "record_1000_files_redis_cpu_us",
        "record_1000_files_wall_us",
        "record_no_files_redis_us",
        "record_no_files_redis_cpu_us",
        "record_no_files_wall_us",
        "files_key_memory_usage_bytes",
        "files_key_strlen_bytes",
        "codebase_phase_redis_used_mb",
    ] {
        if let Some(v) = f.get(key) {
            out.push_str(&format!("  {key:<34} {:>12}\n", fmt(Some(v))));
        }
    }
    for n in sizes {
        for key in [
            "redis_bytes_per_task",
            "mem_record_bytes",
            "mem_idx_all_bytes_per_task",
            "mem_filter_idx_bytes_per_task",
        ] {
            let key = format!("{key}_{n}");
            if let Some(v) = f.get(&key) {
                out.push_str(&format!("  {key:<34} {:>12}\n", fmt(Some(v))));
            }
        }
    }
    out.push_str("\nTargets\n");
    out.push_str(&format!(
        "  {:<22} {:>12} {:>10}  {:<6} {}\n",
        "figure", "value", "target", "", "what"
    ));
    for t in TARGETS {
        let v = f.get(t.key);
        let verdict = match v {
            Some(v) if t.met(v) => "PASS",
            Some(_) => "MISS",
            None => "n/a",
        };
        out.push_str(&format!(
            "  {:<22} {:>12} {:>10}  {:<6} {}\n",
            t.key,
            fmt(v),
            format!("{} {}", t.op.symbol(), fmt(Some(t.bound))),
            verdict,
            t.what
        ));
    }
    if let Some(basis) = f.text("scale_ratio_basis") {
        out.push_str(&format!("  (scale_ratio basis: {basis})\n"));
    }
    out
}
