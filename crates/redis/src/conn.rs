//! The fred client, built so that no call can hang and no start-up failure is fatal, and the
//! mapping of fred's errors into [`StoreError`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use failed_tasks_store::StoreError;
use fred::prelude::{
    ClientLike, Config, ConnectionConfig, Error as FredError, ErrorKind, EventInterface,
    LuaInterface, Options, PerformanceConfig, ReconnectPolicy,
};
use fred::types::config::UnresponsiveConfig;
use fred::types::{ClusterHash, CustomCommand, FromValue, Value};
use fred::{clients::Client, types::Builder};

use crate::config::{redact_url, RedisConfig};
use crate::health::Health;

/// Map a fred error into the port's error, with what we were doing.
///
/// Most server error replies (`ERR`, `OOM`, `NOSCRIPT`, ...) reach us as `ErrorKind::Unknown`
/// with the reply text as details, so transient replies are recognised by their prefix first.
pub(crate) fn map_error(doing: &str, e: &FredError) -> StoreError {
    let detail = format!("{doing}: {} ({:?})", e.details(), e.kind());
    const TRANSIENT: &[&str] = &[
        "LOADING",
        "BUSY",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "READONLY",
    ];
    if TRANSIENT.iter().any(|p| e.details().starts_with(p)) {
        return StoreError::Unavailable(detail);
    }
    // `maxmemory` reached under `noeviction`. Redis refuses a script at its first write when
    // it was over the limit at the script's start, so nothing of the script was applied.
    if e.details().starts_with("OOM") {
        return StoreError::Full(detail);
    }
    // A batch script that started after its caller had stopped waiting (see
    // `scripts::RECORD_MANY`): it wrote nothing, and the caller reports a timeout.
    if e.details().starts_with(crate::scripts::LATE) {
        return StoreError::Timeout(detail);
    }
    match e.kind() {
        ErrorKind::IO
        | ErrorKind::Canceled
        | ErrorKind::Routing
        | ErrorKind::Sentinel
        | ErrorKind::Backpressure => StoreError::Unavailable(detail),
        ErrorKind::Timeout => StoreError::Timeout(detail),
        // Router states such as "Client is not initialized": the link is not there. "Too
        // many failed write attempts": fred gave up re-sending a command while a cluster
        // moved its slot or failed over (MOVED/ASK/CLUSTERDOWN each time); "channel
        // closed": the connection a command waited on was replaced meanwhile: transient.
        ErrorKind::Unknown
            if e.details().contains("not initialized")
                || e.details().contains("Too many failed write attempts")
                || e.details().contains("channel closed") =>
        {
            StoreError::Unavailable(detail)
        }
        // A server error reply: Redis answered and refused.
        ErrorKind::Unknown
        | ErrorKind::Auth
        | ErrorKind::InvalidArgument
        | ErrorKind::InvalidCommand
        | ErrorKind::Config
        | ErrorKind::Url
        | ErrorKind::Cluster
        | ErrorKind::NotFound => StoreError::Rejected(detail),
        ErrorKind::Parse | ErrorKind::Protocol => StoreError::Internal(detail),
        // The set of kinds depends on fred's features (Tls, Replica, ...).
        #[allow(unreachable_patterns)]
        _ => StoreError::Internal(detail),
    }
}

/// Run fred's connection task, and start it again whenever it ends with an error.
///
/// fred 10.1 ends that task (the router) for good on some cluster redirections: an `ASK`
/// answered to a command on its last attempt makes `send_asking_with_policy` return
/// "Max attempts reached.", which `process_ask` hands back to the router loop, which then
/// disconnects everything and exits (seen after `redis-cli --cluster reshard` under load).
/// The client then looks connected while nobody reads its command queue: every command,
/// `PING` included, times out, and `force_reconnection` (itself a queued command) does not
/// help. The queue is kept by fred for a later `connect`, so starting the task again heals
/// the same client. A task that ends without error (`quit`) is not restarted.
fn supervise(client: Client) {
    tokio::spawn(async move {
        let mut restarts: u64 = 0;
        loop {
            match client.connect().await {
                Ok(Ok(())) | Err(_) => break,
                Ok(Err(e)) => {
                    restarts += 1;
                    if restarts == 1 {
                        tracing::warn!(error = %e, "the redis connection task ended; starting it again");
                    } else {
                        tracing::debug!(error = %e, restarts, "the redis connection task ended again");
                    }
                    // Never a hot loop: the next start waits a little, more after repeats.
                    let pause = Duration::from_millis(100 * restarts.min(20));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    });
}

/// A Lua script with its SHA1, sent with EVALSHA and loaded on `NOSCRIPT`.
#[derive(Debug)]
pub(crate) struct Script {
    lua: String,
    sha: String,
    name: &'static str,
}

impl Script {
    pub(crate) fn new(name: &'static str, lua: String) -> Self {
        Self {
            sha: fred::util::sha1_hash(&lua),
            lua,
            name,
        }
    }
}

/// The fred client plus the one cluster slot every key of the store lives in.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    client: Client,
    /// Every key shares the prefix's hash tag, so every command goes to this slot.
    slot: u16,
    timeout: Duration,
    options: Options,
    health: Arc<Health>,
}

impl Conn {
    /// Build the client and start connecting in the background; never waits for Redis.
    pub(crate) fn start(config: &RedisConfig) -> Result<Self, StoreError> {
        Self::start_blocking(config, Duration::ZERO)
    }

    /// As [`start`](Self::start), for a connection that also sends blocking commands
    /// (`XREADGROUP … BLOCK`) of at most `max_block`: such a command keeps the connection
    /// silent that long, so the unresponsive-connection check allows for it.
    pub(crate) fn start_blocking(
        config: &RedisConfig,
        max_block: Duration,
    ) -> Result<Self, StoreError> {
        config.validate()?;
        let mut fred_config = Config::from_url(&config.url).map_err(|e| {
            StoreError::Rejected(format!(
                "redis url {}: {}",
                redact_url(&config.url),
                e.details()
            ))
        })?;
        // Retry the first connection too, so a Redis that is down at start is picked up later
        // instead of failing the whole process. Calls still fail fast (per-call option below).
        fred_config.fail_fast = false;
        let timeout = config.command_timeout;
        let client = Builder::from_config(fred_config)
            .with_performance_config(|perf: &mut PerformanceConfig| {
                perf.default_command_timeout = timeout;
            })
            .with_connection_config(|conn: &mut ConnectionConfig| {
                conn.connection_timeout = timeout;
                conn.internal_command_timeout = timeout;
                // A frozen server keeps the socket open: drop such a connection and redial.
                conn.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(timeout * 2 + max_block),
                    interval: (timeout / 2).max(Duration::from_millis(50)),
                };
                conn.max_command_attempts = 2;
            })
            // Forever, every 100 ms doubling up to 2 s: recovers by itself, never a hot loop.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()
            .map_err(|e| map_error("building the redis client", &e))?;
        // Connection events (subscribed before connecting, so the first is not missed) keep
        // the health up to date; the listener ends when the client's notifiers are gone.
        let health = Arc::new(Health::new(config.allow_eviction));
        let (mut errors, mut connects) = (client.error_rx(), client.reconnect_rx());
        let listener = health.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                tokio::select! {
                    e = errors.recv() => match e {
                        Ok((e, _)) => listener.link_failed(&e),
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => break,
                    },
                    c = connects.recv() => match c {
                        Ok(_) => listener.connected(),
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => break,
                    },
                }
            }
        });
        // Drives the connection (and reconnections) in the background.
        supervise(client.clone());
        let slot = fred::util::redis_keyslot(config.key_prefix.as_bytes());
        Ok(Self {
            client,
            slot,
            timeout,
            options: Options {
                timeout: Some(timeout),
                fail_fast: true,
                max_attempts: Some(2),
                ..Options::default()
            },
            health,
        })
    }

    /// The same client (one connection pool, one health) routing every command to the slot
    /// of `prefix`'s hash tag: how the shards of a [`RedisStore`](crate::RedisStore)
    /// share one client instead of connecting once per shard.
    pub(crate) fn on_slot_of(&self, prefix: &str) -> Conn {
        Conn {
            slot: fred::util::redis_keyslot(prefix.as_bytes()),
            ..self.clone()
        }
    }

    /// What the connection last observed (problem, eviction policy).
    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    /// Whether fred currently believes it is connected.
    pub(crate) fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// The underlying client, for the few calls that need it (SCAN streams).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Refuse at once while disconnected (naming the cause when known) or while Redis's
    /// eviction policy forbids serving; read that policy first when it is due (after each
    /// (re)connection), so no command of a new connection runs before it was checked.
    pub(crate) async fn usable(&self, doing: &str) -> Result<(), StoreError> {
        if !self.client.is_connected() {
            let cause = self
                .health
                .cause()
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            return Err(StoreError::Unavailable(format!(
                "{doing}: not connected to redis{cause}"
            )));
        }
        if self.health.policy_check_due() {
            self.check_policy().await;
        }
        match self.health.refusal() {
            Some(why) => Err(StoreError::Unavailable(format!("{doing}: {why}"))),
            None => Ok(()),
        }
    }

    /// Read `maxmemory-policy` for the current connection (one check at a time).
    async fn check_policy(&self) {
        let _one = self.health.check_lock().lock().await;
        if !self.health.policy_check_due() {
            return;
        }
        let at = self.health.connections();
        match self.read_policy().await {
            Ok(policy) => self.health.policy_read(at, Some(policy)),
            // The link went away, or Redis wants a password first (the ping reports that):
            // check again on the next call.
            Err(e)
                if e.is_unavailable()
                    || crate::health::classify(ErrorKind::Unknown, &e.to_string())
                        == failed_tasks_store::StoreProblem::AuthFailed => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read Redis's maxmemory-policy; make sure it is noeviction");
                self.health.policy_read(at, None);
            }
        }
    }

    /// `CONFIG GET maxmemory-policy`, or `INFO memory`'s `maxmemory_policy` where CONFIG is
    /// renamed or not permitted.
    async fn read_policy(&self) -> Result<String, StoreError> {
        let doing = "reading redis's maxmemory-policy";
        let config: Result<Vec<String>, StoreError> = self
            .unchecked(
                doing,
                "CONFIG",
                vec!["GET".into(), "maxmemory-policy".into()],
            )
            .await;
        match config {
            Ok(pair) if pair.len() == 2 => return Ok(pair[1].clone()),
            Ok(_) | Err(StoreError::Rejected(_)) => {}
            Err(e) => return Err(e),
        }
        let info: String = self.unchecked(doing, "INFO", vec!["memory".into()]).await?;
        info.lines()
            .find_map(|l| l.strip_prefix("maxmemory_policy:"))
            .map(|p| p.trim().to_owned())
            .ok_or_else(|| {
                StoreError::Rejected(format!(
                    "{doing}: neither CONFIG GET nor INFO memory tells it"
                ))
            })
    }

    /// One command on the store's slot, without the checks of [`Conn::usable`] (for those
    /// checks themselves).
    async fn unchecked<R: FromValue>(
        &self,
        doing: &str,
        name: &'static str,
        args: Vec<Value>,
    ) -> Result<R, StoreError> {
        let command = CustomCommand::new_static(name, ClusterHash::Custom(self.slot), false);
        let client = self.client.with_options(&self.options);
        self.timed(doing, async move { client.custom(command, args).await })
            .await
    }

    /// Bound `fut` by the command timeout (plus a little, so fred's own timeout normally
    /// wins and reports the precise error), whatever fred does; refuse it at once when the
    /// connection is not usable.
    pub(crate) async fn bounded<T>(
        &self,
        doing: &str,
        fut: impl Future<Output = Result<T, FredError>>,
    ) -> Result<T, StoreError> {
        self.usable(doing).await?;
        self.timed(doing, fut).await
    }

    async fn timed<T>(
        &self,
        doing: &str,
        fut: impl Future<Output = Result<T, FredError>>,
    ) -> Result<T, StoreError> {
        let limit = self.timeout + Duration::from_millis(100);
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(doing, &e)),
            Err(_) => Err(StoreError::Timeout(format!(
                "{doing}: no answer from redis within {limit:?}"
            ))),
        }
    }

    /// Run one command on the store's slot.
    pub(crate) async fn cmd<R: FromValue>(
        &self,
        doing: &str,
        name: &'static str,
        args: Vec<Value>,
    ) -> Result<R, StoreError> {
        self.usable(doing).await?;
        self.unchecked(doing, name, args).await
    }

    /// Run `commands`, each on the slot of its own `Conn` (the shards of one client), in one
    /// pipeline: one write of each after the other and one round trip, one
    /// hand-over to fred's connection task and one answer for all of them instead of one of
    /// each per command; the replies in order. Fails as a whole when any command fails.
    pub(crate) async fn cmd_many(
        &self,
        doing: &str,
        commands: Vec<(&Conn, &'static str, Vec<Value>)>,
    ) -> Result<Vec<Value>, StoreError> {
        self.usable(doing).await?;
        let n = commands.len();
        let pipe = fred::clients::Pipeline::from(self.client.with_options(&self.options));
        let commands: Vec<(u16, &'static str, Vec<Value>)> = commands
            .into_iter()
            .map(|(conn, name, args)| (conn.slot, name, args))
            .collect();
        self.timed(doing, async move {
            for (slot, name, args) in commands {
                let command = CustomCommand::new_static(name, ClusterHash::Custom(slot), false);
                let _: () = pipe.custom(command, args).await?;
            }
            // (`all` answers one command's reply as itself, not as a list of one.)
            let replies: Vec<Value> = match n {
                1 => vec![pipe.last().await?],
                _ => pipe.all().await?,
            };
            if replies.len() != n {
                return Err(FredError::new(
                    fred::error::ErrorKind::Protocol,
                    format!(
                        "a pipeline of {n} commands answered {} replies",
                        replies.len()
                    ),
                ));
            }
            Ok(replies)
        })
        .await
    }

    /// Run one blocking command that may wait up to `block` on the server (on top of the
    /// command timeout) on the store's slot.
    pub(crate) async fn cmd_blocking<R: FromValue>(
        &self,
        doing: &str,
        name: &'static str,
        args: Vec<Value>,
        block: Duration,
    ) -> Result<R, StoreError> {
        if !self.client.is_connected() {
            return Err(StoreError::Unavailable(format!(
                "{doing}: not connected to redis"
            )));
        }
        let command = CustomCommand::new_static(name, ClusterHash::Custom(self.slot), true);
        let options = Options {
            timeout: Some(self.timeout + block),
            ..self.options.clone()
        };
        let client = self.client.with_options(&options);
        let limit = self.timeout + block + Duration::from_millis(100);
        match tokio::time::timeout(limit, client.custom(command, args)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(doing, &e)),
            Err(_) => Err(StoreError::Timeout(format!(
                "{doing}: no answer from redis within {limit:?}"
            ))),
        }
    }

    /// Run one command routed by its first key (for keys outside the store's slot).
    pub(crate) async fn cmd_by_key<R: FromValue>(
        &self,
        doing: &str,
        name: &'static str,
        args: Vec<Value>,
    ) -> Result<R, StoreError> {
        let command = CustomCommand::new_static(name, ClusterHash::FirstKey, false);
        let client = self.client.with_options(&self.options);
        self.bounded(doing, async move { client.custom(command, args).await })
            .await
    }

    /// PING, answering at once when the link is known to be down. Its outcome feeds the
    /// health (an open connection refused with `NOAUTH` shows only here).
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let result = self
            .cmd::<Value>("pinging redis", "PING", vec![])
            .await
            .map(|_| ());
        self.health.pinged(&result);
        result
    }

    /// EVALSHA `script`, loading it (on every primary) and retrying once on `NOSCRIPT`.
    /// The whole exchange is bounded by [`Conn::bounded`] (fred issue #353: per-call
    /// timeouts are not applied to scripts).
    pub(crate) async fn eval<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<Value>,
        args: Vec<Value>,
    ) -> Result<R, StoreError> {
        let mut full = Vec::with_capacity(2 + keys.len() + args.len());
        full.push(Value::from(script.sha.as_str()));
        full.push(Value::from(keys.len() as i64));
        full.extend(keys);
        full.extend(args);
        let doing = format!("running the {} script", script.name);
        let first: Result<R, StoreError> = self.cmd(&doing, "EVALSHA", full.clone()).await;
        match first {
            Err(StoreError::Rejected(msg)) if msg.contains(": NOSCRIPT") => {
                let client = self.client.clone();
                let lua = script.lua.clone();
                self.bounded(&format!("loading the {} script", script.name), async move {
                    client.script_load_cluster::<(), _>(lua).await
                })
                .await?;
                self.cmd(&doing, "EVALSHA", full).await
            }
            other => other,
        }
    }
}
