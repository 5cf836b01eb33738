//! Phase 3, HTTP throughput: the list against a hello-world hyper server serving the same
//! bytes (and the fast-path prototype), with each server's and Redis's CPU per request.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::bench::{Bench, LIST_PATH, PAGE, PREFIX};
use crate::child::{ChildServer, Kind};
use crate::load::{self, HttpConn};

impl Bench {
    /// HTTP throughput of the list against a hello-world server serving the same bytes (and
    /// the fast-path prototype), with each server's and Redis's CPU per request.
    pub(crate) async fn http_throughput(&mut self) -> anyhow::Result<()> {
        let app = self
            .app
            .as_ref()
            .ok_or_else(|| anyhow!("no app server was started"))?;
        let mut conn = HttpConn::connect(app.addr, LIST_PATH).await?;
        let reference = conn.get(true).await?;
        let body = String::from_utf8_lossy(&reference.body);
        if reference.status != 200
            || reference.content_type.as_deref() != Some("application/json")
            || body.matches("\"TaskId\"").count() != PAGE as usize
        {
            bail!("the app's page is not a 200 JSON page of {PAGE}: {body:.200}");
        }
        let f = &mut self.f;
        f.set("page_bytes", reference.body.len() as f64);
        let body_file =
            std::env::temp_dir().join(format!("failed-tasks-bench-{}.json", std::process::id()));
        std::fs::write(&body_file, &reference.body).context("writing the page body")?;
        let hello = ChildServer::start(Kind::Hello, &self.url0, PREFIX, Some(&body_file))?;
        let fast = ChildServer::start(Kind::Fast, &self.url0, PREFIX, None)?;
        {
            let mut c = HttpConn::connect(fast.addr, LIST_PATH).await?;
            let r = c.get(true).await?;
            let fast_body = String::from_utf8_lossy(&r.body);
            if r.status != 200 || fast_body.matches("\"TaskId\"").count() != PAGE as usize {
                bail!("the fast-path prototype's page is wrong: {fast_body:.200}");
            }
            f.set("fast_page_bytes", r.body.len() as f64);
        }
        let (connections, use_wrk, raw0) = (self.connections, self.use_wrk, &self.raw0);
        let duration = Duration::from_secs(self.load_secs.max(1));
        // Warm both up briefly, then measure hello, then the app.
        for addr in [hello.addr, app.addr] {
            load::run(
                addr,
                LIST_PATH,
                connections,
                Duration::from_secs(1),
                use_wrk,
            )
            .await?;
        }
        // Alternate the servers (the machine is shared: a burst of other work should hit
        // each alike), keep each one's best round.
        let rounds = if self.quick { 1 } else { 2 };
        let (mut h_best, mut a_best, mut fast_best) = (0.0f64, 0.0f64, 0.0f64);
        let (mut fast_cpu, mut fast_req, mut fast_redis_cpu) = (0.0, 0u64, 0.0);
        let (mut h_req, mut a_req, mut errors) = (0u64, 0u64, 0u64);
        let (mut hello_cpu, mut app_cpu, mut redis_cpu) = (0.0, 0.0, 0.0);
        for _ in 0..rounds {
            let cpu0 = hello.cpu_seconds()?;
            let h = load::run(hello.addr, LIST_PATH, connections, duration, use_wrk).await?;
            hello_cpu += hello.cpu_seconds()? - cpu0;
            let cpu0 = app.cpu_seconds()?;
            let redis_cpu0 = raw0.cpu_seconds().await?;
            let a = load::run(app.addr, LIST_PATH, connections, duration, use_wrk).await?;
            app_cpu += app.cpu_seconds()? - cpu0;
            redis_cpu += raw0.cpu_seconds().await? - redis_cpu0;
            let cpu0 = fast.cpu_seconds()?;
            let redis_cpu0 = raw0.cpu_seconds().await?;
            let p = load::run(fast.addr, LIST_PATH, connections, duration, use_wrk).await?;
            fast_cpu += fast.cpu_seconds()? - cpu0;
            fast_redis_cpu += raw0.cpu_seconds().await? - redis_cpu0;
            fast_best = fast_best.max(p.requests_per_s);
            fast_req += p.requests;
            errors += p.errors;
            h_best = h_best.max(h.requests_per_s);
            a_best = a_best.max(a.requests_per_s);
            h_req += h.requests;
            a_req += a.requests;
            errors += h.errors + a.errors;
            eprintln!(
                "  round: hello {:.0} req/s, list {:.0} req/s, fast-path prototype {:.0} req/s",
                h.requests_per_s, a.requests_per_s, p.requests_per_s
            );
        }
        drop(hello);
        drop(fast);
        let _ = std::fs::remove_file(&body_file);
        f.set("fastpath_rps", fast_best);
        f.set("fastpath_vs_hello", fast_best / h_best);
        if fast_req > 0 {
            f.set(
                "fastpath_server_cpu_us_per_req",
                fast_cpu * 1e6 / fast_req as f64,
            );
            f.set(
                "fastpath_redis_cpu_us_per_req",
                fast_redis_cpu * 1e6 / fast_req as f64,
            );
        }
        if errors > 0 {
            bail!("{errors} non-200 answers under load");
        }
        f.set("hello_rps", h_best);
        f.set("http_rps", a_best);
        f.set("http_vs_hello", a_best / h_best);
        if h_req > 0 {
            f.set(
                "hello_server_cpu_us_per_req",
                hello_cpu * 1e6 / h_req as f64,
            );
        }
        if a_req > 0 {
            f.set("http_server_cpu_us_per_req", app_cpu * 1e6 / a_req as f64);
            f.set("http_redis_cpu_us_per_req", redis_cpu * 1e6 / a_req as f64);
        }
        if let (Some(app), Some(hello)) = (
            f.get("http_server_cpu_us_per_req"),
            f.get("hello_server_cpu_us_per_req"),
        ) {
            f.set("server_cpu_vs_hello", app / hello);
        }
        eprintln!("  HTTP: hello {h_best:.0} req/s, list {a_best:.0} req/s");
        Ok(())
    }
}
