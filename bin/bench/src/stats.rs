//! The statistics request's cost at each N (`stats_1h_N_p50_ms`, `stats_7d_N_p50_ms`).

use anyhow::{anyhow, bail};
use failed_tasks_domain::Timestamp;
use failed_tasks_query::FailedTaskService;

use crate::raw;
use crate::report::{Figures, Latency};

/// The statistics request at this N: a 1-hour and a 7-day window whose last minute is the
/// 59th after the data's first (the filled tasks are 3 ms apart, so 1M of them span 50
/// minutes and all fall in both windows). Their cost must not grow with N: the stores read
/// per-hour counters and per-bucket breakdowns, not tasks (every call computed: the bench's
/// service shares no answers).
pub(crate) async fn stats_cost(
    service: &FailedTaskService,
    n: u64,
    base_ms: i64,
    f: &mut Figures,
) -> anyhow::Result<()> {
    let now = Timestamp::saturating_from_unix_millis(base_ms + 59 * 60_000);
    for (label, minutes) in [("1h", 60i64), ("7d", 7 * 24 * 60)] {
        let mut times = Vec::with_capacity(50);
        let mut total = 0;
        for _ in 0..50 {
            let (stats, t) = raw::timed(async {
                service
                    .failure_stats(minutes, now, 20)
                    .await
                    .map_err(|e| anyhow!("failure_stats: {e}"))
            })
            .await?;
            total = stats.total;
            times.push(t);
        }
        if total != n {
            bail!("stats over {label} counted {total} failures, {n} were recorded");
        }
        let l = Latency::of(times);
        f.set(&format!("stats_{label}_{n}_p50_ms"), l.p50_ms);
        eprintln!(
            "  N={n}: stats {label} p50 {:.3} ms (counted {total})",
            l.p50_ms
        );
    }
    Ok(())
}
