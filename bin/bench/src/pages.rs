//! Phase 1, pages: page latency at each N through the use case, the store alone, HTTP and
//! the raw Redis floor (with the 1k reference store interleaved), the scale and floor
//! ratios, and Redis CPU per page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use failed_tasks_store::{StatusStore, StoredPages};

use crate::bench::{Bench, LIST_PATH, PAGE, PREFIX};
use crate::child::{ChildServer, Kind};
use crate::load::HttpConn;
use crate::raw::Raw;
use crate::report::Latency;

/// Pages per second and Redis CPU per page with `callers` concurrent callers of `page`
/// for `d`: what Redis itself costs per page, apart from any HTTP server.
async fn page_load<F, Fut>(
    raw: &Raw,
    callers: usize,
    d: Duration,
    page: F,
) -> anyhow::Result<(f64, f64)>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let cpu0 = raw.cpu_seconds().await?;
    let start = Instant::now();
    let deadline = start + d;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let page = page.clone();
        set.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                page().await?;
                n += 1;
            }
            Ok::<_, anyhow::Error>(n)
        });
    }
    let mut pages = 0u64;
    while let Some(r) = set.join_next().await {
        pages += r.context("page load task panicked")??;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = raw.cpu_seconds().await? - cpu0;
    Ok((pages as f64 / secs, cpu * 1e6 / pages.max(1) as f64))
}

impl Bench {
    /// Page latency at `n`: use case, store alone, HTTP, raw floor, and the 1k reference
    /// store's use-case page and floor, interleaved call by call so that a burst of other
    /// work on the (shared) machine hits every figure alike.
    pub(crate) async fn page_latency(&mut self, n: u64) -> anyhow::Result<()> {
        if self.app.is_none() {
            self.app = Some(ChildServer::start(Kind::App, &self.url0, PREFIX, None)?);
        }
        let app = self.app.as_ref().ok_or_else(|| anyhow!("no app server"))?;
        let ref_service = self
            .ref_service
            .as_ref()
            .ok_or_else(|| anyhow!("the reference store is not filled"))?;
        let (index, record_prefix) = (self.keys.all(), self.keys.record_prefix());
        let (ref_index, ref_record_prefix) = (self.ref_keys.all(), self.ref_keys.record_prefix());
        let query = &self.query;
        let mut conn = HttpConn::connect(app.addr, LIST_PATH).await?;
        let mut times: [Vec<Duration>; 6] = Default::default();
        let warm = self.samples / 10;
        for i in 0..self.samples + warm {
            let keep = i >= warm;
            let mut lap = |k: usize, start: Instant| {
                if keep {
                    times[k].push(start.elapsed());
                }
            };
            let t = Instant::now();
            let page = self
                .service
                .list_failed(query)
                .await
                .map_err(|e| anyhow!("list_failed: {e}"))?;
            lap(0, t);
            if page.tasks.len() != PAGE as usize || page.total != n {
                bail!(
                    "unexpected page: {} tasks, total {}",
                    page.tasks.len(),
                    page.total
                );
            }
            let t = Instant::now();
            self.store
                .list(query)
                .await
                .map_err(|e| anyhow!("store.list: {e}"))?;
            lap(1, t);
            let t = Instant::now();
            let r = conn.get(false).await?;
            lap(2, t);
            if r.status != 200 {
                bail!("HTTP list answered {}", r.status);
            }
            let t = Instant::now();
            self.raw0.floor_page(&index, &record_prefix).await?;
            lap(3, t);
            let t = Instant::now();
            ref_service
                .list_failed(query)
                .await
                .map_err(|e| anyhow!("list_failed on the 1k reference: {e}"))?;
            lap(4, t);
            let t = Instant::now();
            self.raw0.floor_page(&ref_index, &ref_record_prefix).await?;
            lap(5, t);
        }
        let [usecase, alone, http, floor, ref_usecase, ref_floor] = times.map(Latency::of);
        let f = &mut self.f;
        f.latency(&format!("usecase_{n}"), usecase);
        f.latency(&format!("store_{n}"), alone);
        f.latency(&format!("http_{n}"), http);
        f.latency(&format!("floor_{n}"), floor);
        f.latency(&format!("ref1k_usecase_at_{n}"), ref_usecase);
        f.latency(&format!("ref1k_floor_at_{n}"), ref_floor);
        eprintln!(
            "  N={n}: use case p50 {:.3} ms, store {:.3}, HTTP {:.3}, floor {:.3}",
            usecase.p50_ms, alone.p50_ms, http.p50_ms, floor.p50_ms
        );
        Ok(())
    }

    /// `scale_ratio` (largest N against the 1k store, interleaved) and `floor_ratio`.
    pub(crate) fn scale_and_floor_ratios(&mut self) {
        let f = &mut self.f;
        let first = self.sizes.first().copied().unwrap_or(1_000);
        let last = self.sizes.last().copied().unwrap_or(1_000);
        if let (Some(a), Some(b)) = (
            f.get(&format!("usecase_{first}_p50_ms")),
            f.get(&format!("usecase_{last}_p50_ms")),
        ) {
            f.set("scale_ratio_staged", b / a);
        }
        if let (Some(a), Some(b)) = (
            f.get(&format!("ref1k_usecase_at_{last}_p50_ms")),
            f.get(&format!("usecase_{last}_p50_ms")),
        ) {
            f.set("scale_ratio", b / a);
            f.set_text(
                "scale_ratio_basis",
                format!(
                    "use-case p50 at N={last} / a 1k store's, interleaved in the same loop \
                     (staged N={last} vs N={first} minutes apart: scale_ratio_staged)"
                ),
            );
        }
        if let (Some(ours), Some(floor)) = (
            f.get(&format!("usecase_{last}_p50_ms")),
            f.get(&format!("floor_{last}_p50_ms")),
        ) {
            f.set("floor_ratio", ours / floor);
            f.set_text(
                "floor_ratio_basis",
                format!("use-case p50 / floor p50 at N={last}"),
            );
        }
    }

    /// What Redis itself costs per page: the raw floor and our read path, 64 callers each.
    pub(crate) async fn redis_cpu_per_page(&mut self) -> anyhow::Result<()> {
        let load_d = Duration::from_secs(if self.quick { 2 } else { 4 });
        let raw = self.raw0.clone();
        let (index, record_prefix) = (self.keys.all(), self.keys.record_prefix());
        let (rate, cpu) = page_load(&self.raw0, 64, load_d, move || {
            let raw = raw.clone();
            let (index, record_prefix) = (index.clone(), record_prefix.clone());
            async move {
                raw.floor_page(&index, &record_prefix).await?;
                Ok(())
            }
        })
        .await?;
        self.f.set("redis_floor_pages_per_s", rate);
        self.f.set("redis_floor_cpu_us_per_page", cpu);
        let st = self.store.clone();
        let q = Arc::new(self.query.clone());
        let (rate, cpu) = page_load(&self.raw0, 64, load_d, move || {
            let st = st.clone();
            let q = q.clone();
            async move {
                st.list_stored(&q)
                    .await
                    .map_err(|e| anyhow!("list_stored: {e}"))?;
                Ok(())
            }
        })
        .await?;
        self.f.set("redis_list_json_pages_per_s", rate);
        self.f.set("redis_list_json_cpu_us_per_page", cpu);
        if let Some(floor) = self.f.get("redis_floor_cpu_us_per_page") {
            self.f.set("redis_cpu_vs_floor", cpu / floor);
        }
        Ok(())
    }
}
