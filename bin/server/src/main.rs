//! `failed-tasks-server`: serves the failed-task API over HTTP.
//!
//! Only wiring lives here: settings (`config`: defaults < TOML file < env < flags), logging,
//! the chosen store, the use cases, the HTTP adapter, and shutdown on SIGINT/SIGTERM.
//! The service is built by the `failed-tasks` builder, as an embedder builds it; each
//! setting is declared once, in `config::SETTINGS`.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use failed_tasks::redis::{redact_url, RedisStore};
use failed_tasks::{Capability, FailedTask, FailedTaskService, Timestamp};
use failed_tasks_http::App;

mod config;

use config::{Cli, Command, LogFormat, Settings, StoreKind};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: redirected logs stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

/// Record the source document's three example tasks, retrying every second until the store
/// takes them.
async fn record_demo_tasks(service: FailedTaskService) {
    let tasks = FailedTask::demo_examples(Timestamp::now());
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if service.record_failures(&tasks).await.is_ok() {
            tracing::info!("recorded the {} demo tasks", tasks.len());
            return;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// `failed-tasks-server migrate`: walk each shard's `idx:all` in batches and rewrite every
/// record of an earlier layout (`RedisStore::migrate_step`), printing each batch and the
/// position to resume from (`--shard` and `--after`).
async fn migrate(
    flags: Settings,
    batch: usize,
    first_shard: u32,
    mut after: Option<String>,
) -> anyhow::Result<()> {
    if flags.store != StoreKind::Redis {
        bail!(
            "migrate works on --store redis (the store is {:?})",
            flags.store
        );
    }
    let config = flags.redis.clone();
    let shards = config.shards.max(1);
    if first_shard >= shards {
        bail!("--shard {first_shard}: the store has {shards} shard(s), numbered from 0");
    }
    let store = RedisStore::connect(config)
        .await
        .context("--redis-url / --redis-key-prefix / --redis-command-timeout")?;
    if !store.wait_connected(Duration::from_secs(10)).await {
        bail!(
            "Redis at {} did not answer within 10 s",
            redact_url(&flags.redis.url)
        );
    }
    let (mut scanned, mut migrated, mut current, mut corrupt, mut missing) = (0, 0, 0, 0, 0);
    for shard in first_shard..shards {
        let name = if shards > 1 {
            format!("shard {shard} ")
        } else {
            String::new()
        };
        for n in 1u64.. {
            let step = store
                .migrate_step(shard, after.as_deref(), batch)
                .await
                .with_context(|| match &after {
                    Some(a) if shards > 1 => format!(
                        "{name}batch {n} failed; resume with: migrate --shard {shard} --after '{a}'"
                    ),
                    Some(a) => format!("batch {n} failed; resume with: migrate --after '{a}'"),
                    None if shards > 1 => {
                        format!("{name}batch {n} failed; resume with: migrate --shard {shard}")
                    }
                    None => format!("batch {n} failed; run migrate again"),
                })?;
            scanned += step.scanned;
            migrated += step.migrated;
            current += step.current;
            corrupt += step.corrupt;
            missing += step.missing;
            println!(
                "{name}batch {n}: {} read, {} migrated, {} current, {} corrupt, {} gone; next: {}",
                step.scanned,
                step.migrated,
                step.current,
                step.corrupt,
                step.missing,
                step.next.as_deref().unwrap_or("(done)")
            );
            after = step.next;
            if after.is_none() {
                break;
            }
        }
    }
    println!(
        "migrated {migrated} of {scanned} records ({current} already current, {corrupt} corrupt left as they are, {missing} gone)"
    );
    Ok(())
}

async fn run(flags: Settings) -> anyhow::Result<()> {
    // The service as every embedder builds it: store, janitor, retry scheduler, eviction
    // refusal, fail-time limits, and the wait for the store's first answer.
    let failures = flags.builder().start().await?;
    let service = failures.service().clone();
    tracing::info!(
        store = service.stores().name,
        capabilities = ?service.stores().capabilities(),
        "store opened"
    );
    if flags.demo && !service.stores().has(Capability::Writes) {
        bail!(
            "--demo cannot record into --store {}, which is read-only",
            service.stores().name
        );
    }
    if flags.demo {
        // Before serving when the store answers; otherwise in the background until it does:
        // a store that is down at start must not stop the server from starting (it answers
        // 503 and /readyz says not-ready meanwhile).
        let tasks = FailedTask::demo_examples(Timestamp::now());
        match service.record_failures(&tasks).await {
            Ok(_) => tracing::info!("recorded the {} demo tasks", tasks.len()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the demo tasks yet; retrying every second");
                tokio::spawn(record_demo_tasks(service.clone()));
            }
        }
    }
    let app = Arc::new(App::new(service, flags.http_config()?));
    let listener = tokio::net::TcpListener::bind(flags.listen)
        .await
        .with_context(|| format!("binding {}", flags.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(
        %addr,
        store = ?flags.store,
        admin_api = if app.admin_api_enabled() { "enabled" } else { "disabled" },
        read_auth = app.reads_need_a_token(),
        "listening"
    );

    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(failed_tasks_http::serve(listener, app, async move {
        shutdown_signal().await;
        let _ = stopped_tx.send(());
    }));
    // Either the server ends by itself (an error), or a signal starts the drain, which the
    // grace period bounds. Both ways end here, so the background loops are always stopped
    // and the `stopped` line always written (a signal can make both branches ready at once).
    let served = tokio::select! {
        res = &mut server => Some(res),
        _ = stopped_rx => None,
    };
    let served = match served {
        Some(res) => Some(res),
        None => match tokio::time::timeout(flags.shutdown_grace, server).await {
            Ok(res) => Some(res),
            Err(_) => {
                tracing::warn!(grace = ?flags.shutdown_grace, "in-flight requests did not finish within the grace period");
                None
            }
        },
    };
    failures.shutdown().await;
    if let Some(res) = served {
        res.context("server task failed")?
            .context("server failed")?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// `failed-tasks-server reshard`: move every task to its shard under the new count
/// (`failed_tasks::redis::reshard`), printing progress per old shard.
async fn reshard(settings: Settings, from: u32, to: u32, batch: usize) -> anyhow::Result<()> {
    // Always the Redis store of `--redis-url` (whatever `--store` says): shards are Redis's.
    let config = &settings.redis;
    let p = failed_tasks::redis::reshard(config, from, to, batch, |p| {
        println!(
            "reshard {from} -> {to}: old shard {}/{}: moved {}, kept {}, superseded {}, skipped {}",
            p.shard + 1,
            p.shards,
            p.moved,
            p.kept,
            p.superseded,
            p.skipped
        );
    })
    .await
    .with_context(|| format!("reshard {from} -> {to} stopped (run it again to resume)"))?;
    println!(
        "reshard {from} -> {to} done: moved {}, kept {}, superseded {}, skipped {}",
        p.moved, p.kept, p.superseded, p.skipped
    );
    Ok(())
}

fn main() -> ExitCode {
    let (cli, settings) = Cli::parse_all();
    let settings = match settings {
        Ok(s) => s,
        Err(e) => {
            eprintln!("failed-tasks-server: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", settings.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failed-tasks-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let work = async {
        match cli.command.clone() {
            Some(Command::Migrate {
                batch,
                shard,
                after,
            }) => migrate(settings, batch, shard, after).await,
            Some(Command::Reshard { from, to, batch }) => reshard(settings, from, to, batch).await,
            None => run(settings).await,
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("failed-tasks-server: {e:#}");
            ExitCode::from(2)
        }
    }
}
