//! The fred client, built so that no call can hang and no start-up failure is fatal, and the
//! mapping of fred's errors into [`StoreError`].
//!
//! On Redis Cluster, fred never follows a redirection itself (`max_redirections = 0`): fred
//! 10.1 reads the reply to its `ASKING` straight off a pipelined connection, which hands
//! commands in flight there each other's replies (docs/fred-ask-redirections.md). A command
//! that Redis refused because its slot moved (`MOVED`, after which fred refreshes its slot
//! map), is moving (`ASK`) or is split mid-migration (`TRYAGAIN`) was not run, and
//! [`Conn`] sends it again, in one place ([`Conn::follow`]), for every command it sends.

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
use crate::layout::Keys;

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
    if e.details().starts_with(LATE) {
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

/// The first word of the error a `scripts::RECORD_MANY` call answers when it started after
/// its caller's deadline (and so wrote nothing).
pub(crate) const LATE: &str = "LATE";

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
///
/// Since fred no longer follows redirections (`max_redirections = 0`), that path is closed;
/// the restart stays as a safety net, counted in `health` (the metric
/// `failed_tasks_store_connection_restarts_total`): it should stay at 0.
fn supervise(client: Client, health: Arc<Health>) {
    tokio::spawn(async move {
        let mut restarts: u64 = 0;
        loop {
            match client.connect().await {
                Ok(Ok(())) | Err(_) => break,
                Ok(Err(e)) => {
                    restarts += 1;
                    health.restarted();
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

/// The fred client a store of `config` uses, built exactly as the store builds it and not
/// connected yet: for tests that must exercise the production configuration, never a copy
/// of it.
#[doc(hidden)]
pub fn fred_client(config: &RedisConfig) -> Result<Client, StoreError> {
    build_client(config, Duration::ZERO)
}

/// The per-call options the store sends a command with (see [`fred_client`]).
#[doc(hidden)]
pub fn call_options(config: &RedisConfig) -> Options {
    call_options_with(config.command_timeout, 2)
}

fn call_options_with(timeout: Duration, attempts: u32) -> Options {
    Options {
        timeout: Some(timeout),
        fail_fast: true,
        max_attempts: Some(attempts),
        ..Options::default()
    }
}

/// Build (not connect) the client of a connection that also sends blocking commands of at
/// most `max_block` (zero for none).
fn build_client(config: &RedisConfig, max_block: Duration) -> Result<Client, StoreError> {
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
    Builder::from_config(fred_config)
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
            // Never follow a cluster redirection inside fred: its ASK path mixes up the
            // replies of pipelined commands (see the module docs). A redirected command
            // fails with "Too many redirections." (after a MOVED, once fred has refreshed
            // its slot map) and `Conn::follow` sends it again. Set here, on the connection:
            // `Options::max_redirections` of 0 is replaced by this value per command.
            conn.max_redirections = 0;
        })
        // Forever, every 100 ms doubling up to 2 s: recovers by itself, never a hot loop.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .build()
        .map_err(|e| map_error("building the redis client", &e))
}

/// A Lua script with its SHA1, sent with EVALSHA and loaded on `NOSCRIPT`.
#[derive(Debug)]
pub(crate) struct Script {
    lua: String,
    sha: String,
    name: &'static str,
    /// Whether running it twice leaves what running it once does (see [`ADDING`]).
    repeatable: bool,
}

impl Script {
    /// A script that running twice leaves as running once (an upsert, a compare-and-set, a
    /// move of what is due): fred may write it again after a lost connection.
    pub(crate) fn new(name: &'static str, lua: String) -> Self {
        Self {
            sha: fred::util::sha1_hash(&lua),
            lua,
            name,
            repeatable: true,
        }
    }

    /// A script whose effect adds up when it runs twice (a counter): sent like the
    /// commands of [`ADDING`].
    pub(crate) fn adding(name: &'static str, lua: String) -> Self {
        Self {
            repeatable: false,
            ..Self::new(name, lua)
        }
    }
}

/// Commands whose effect adds up when Redis runs them twice (counters, list pushes, stream
/// entries). They get one write attempt, so fred never writes them again after a lost
/// connection (they may have run), and [`Conn::follow`] sends them again only after a
/// refusal that says they did not run. Every other command and script of the store can be
/// repeated (docs/redis-layout.md, "Connection behaviour").
const ADDING: &[&str] = &["INCR", "INCRBY", "HINCRBY", "LPUSH", "RPUSH", "XADD"];

/// The first pause before a command refused for its moving slot is sent again; each
/// further refusal doubles it, up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_millis(160);

/// Whether Redis refused `e`'s command without running it because of where its slot is:
/// fred's "Too many redirections." (the command got `MOVED` or `ASK`, which fred, with
/// `max_redirections = 0`, does not follow; after `MOVED` it has refreshed its slot map),
/// or `TRYAGAIN` (a command with several keys, or a script with its guard key, on a slot
/// whose keys are split between the two nodes of a migration).
fn slot_moving(e: &FredError) -> bool {
    (*e.kind() == ErrorKind::Routing && e.details().starts_with("Too many redirections"))
        || e.details().starts_with("TRYAGAIN")
}

/// A command that got no answer within `limit` (whether Redis ran it is unknown).
fn no_answer(doing: &str, limit: Duration) -> StoreError {
    StoreError::Timeout(format!("{doing}: no answer from redis within {limit:?}"))
}

/// Between half and all of `pause`, at random, so that calls refused together do not all
/// come back together.
fn jittered(pause: Duration) -> Duration {
    let half = pause / 2;
    let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
    // A v4 UUID is random; its low 64 bits are plenty for a pause.
    let (_, random) = uuid::Uuid::new_v4().as_u64_pair();
    half + Duration::from_micros(random % spread)
}

/// The fred client plus the one cluster slot every key of the store lives in.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    client: Client,
    /// Every key shares the prefix's hash tag, so every command goes to this slot.
    slot: u16,
    /// A key of that slot that nothing ever writes, declared by every script (see
    /// [`Conn::eval`]).
    guard: Value,
    timeout: Duration,
    options: Options,
    /// For the commands of [`ADDING`] and scripts that are not repeatable: one write attempt.
    once: Options,
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
        let client = build_client(config, max_block)?;
        let timeout = config.command_timeout;
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
        supervise(client.clone(), health.clone());
        Ok(Self {
            client,
            slot: fred::util::redis_keyslot(config.key_prefix.as_bytes()),
            guard: Value::from(Keys::new(&config.key_prefix).slot_guard()),
            timeout,
            options: call_options(config),
            once: call_options_with(timeout, 1),
            health,
        })
    }

    /// The same client (one connection pool, one health) routing every command to the slot
    /// of `prefix`'s hash tag: how the shards of a [`RedisStore`](crate::RedisStore)
    /// share one client instead of connecting once per shard.
    pub(crate) fn on_slot_of(&self, prefix: &str) -> Conn {
        Conn {
            slot: fred::util::redis_keyslot(prefix.as_bytes()),
            guard: Value::from(Keys::new(prefix).slot_guard()),
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

    /// How long one attempt of a command may take: the command timeout, plus a little so
    /// that fred's own timeout normally wins and reports the precise error.
    fn attempt_limit(&self) -> Duration {
        self.timeout + Duration::from_millis(100)
    }

    /// The options a command is sent with (one attempt for those of [`ADDING`]).
    fn options_for(&self, name: &str) -> &Options {
        if ADDING.contains(&name) {
            &self.once
        } else {
            &self.options
        }
    }

    /// Run an attempt of a command (`send` makes one), and make and run another while Redis
    /// refuses it without running it because its slot moved or is moving
    /// ([`slot_moving`]): after a short, jittered pause that doubles each time, for up to
    /// one command timeout from the first attempt; then the last refusal answers
    /// (`Unavailable`, a 503). Each attempt is bounded by `limit`. A timeout or any other
    /// error answers at once: whether Redis ran the command is then unknown, so it is not
    /// sent again here.
    ///
    /// This is the one place every command of the store passes through (scripts, reads,
    /// pipelines, blocking reads), so every one follows a moving slot. Sending again is safe
    /// for each: a refused command did not run, and fred's own second write after a lost
    /// connection (`max_attempts`) is allowed only for commands that repeat harmlessly.
    async fn follow<T, F, Fut>(
        &self,
        doing: &str,
        limit: Duration,
        mut send: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, FredError>>,
    {
        let started = tokio::time::Instant::now();
        let mut pause = FIRST_PAUSE;
        let mut refusals = 0u32;
        loop {
            let refused = match tokio::time::timeout(limit, send()).await {
                Ok(Ok(v)) => {
                    if refusals > 0 {
                        tracing::debug!(
                            doing,
                            refusals,
                            waited = ?started.elapsed(),
                            "followed a moving cluster slot"
                        );
                    }
                    return Ok(v);
                }
                Ok(Err(e)) if slot_moving(&e) => e,
                Ok(Err(e)) => return Err(map_error(doing, &e)),
                Err(_) => return Err(no_answer(doing, limit)),
            };
            refusals += 1;
            let waited = started.elapsed();
            if waited >= self.timeout {
                return Err(StoreError::Unavailable(format!(
                    "{doing}: its cluster slot was still moving after {waited:?} \
                     ({refusals} refusals, the last: {})",
                    refused.details()
                )));
            }
            tokio::time::sleep(jittered(pause).min(self.timeout - waited)).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
    }

    /// Send `name args` routed by `hash` with `options`, following a moving slot.
    async fn send<R: FromValue>(
        &self,
        doing: &str,
        name: &'static str,
        args: Vec<Value>,
        hash: ClusterHash,
        options: &Options,
    ) -> Result<R, StoreError> {
        let client = self.client.with_options(options);
        self.follow(doing, self.attempt_limit(), || {
            let command = CustomCommand::new_static(name, hash.clone(), false);
            client.custom(command, args.clone())
        })
        .await
    }

    /// One command on the store's slot, without the checks of [`Conn::usable`] (for those
    /// checks themselves).
    async fn unchecked<R: FromValue>(
        &self,
        doing: &str,
        name: &'static str,
        args: Vec<Value>,
    ) -> Result<R, StoreError> {
        let hash = ClusterHash::Custom(self.slot);
        self.send(doing, name, args, hash, self.options_for(name))
            .await
    }

    /// Bound `fut` by the command timeout (plus a little, so fred's own timeout normally
    /// wins and reports the precise error), whatever fred does; refuse it at once when the
    /// connection is not usable. For the one call that no slot redirects (`SCRIPT LOAD` on
    /// every primary).
    pub(crate) async fn bounded<T>(
        &self,
        doing: &str,
        fut: impl Future<Output = Result<T, FredError>>,
    ) -> Result<T, StoreError> {
        self.usable(doing).await?;
        let limit = self.attempt_limit();
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(doing, &e)),
            Err(_) => Err(no_answer(doing, limit)),
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
    /// each per command; the replies in order. Fails as a whole when any command fails; a
    /// refusal of any (its slot moving) sends them all again (they are reads).
    pub(crate) async fn cmd_many(
        &self,
        doing: &str,
        commands: Vec<(&Conn, &'static str, Vec<Value>)>,
    ) -> Result<Vec<Value>, StoreError> {
        self.usable(doing).await?;
        let n = commands.len();
        let client = self.client.with_options(&self.options);
        let commands: Vec<(u16, &'static str, Vec<Value>)> = commands
            .into_iter()
            .map(|(conn, name, args)| (conn.slot, name, args))
            .collect();
        self.follow(doing, self.attempt_limit(), || {
            let pipe = fred::clients::Pipeline::from(client.clone());
            let commands = commands.clone();
            async move {
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
            }
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
        let options = Options {
            timeout: Some(self.timeout + block),
            ..self.options_for(name).clone()
        };
        let client = self.client.with_options(&options);
        let slot = self.slot;
        self.follow(doing, self.attempt_limit() + block, || {
            let command = CustomCommand::new_static(name, ClusterHash::Custom(slot), true);
            client.custom(command, args.clone())
        })
        .await
    }

    /// Run one command routed by its first key (for keys outside the store's slot).
    pub(crate) async fn cmd_by_key<R: FromValue>(
        &self,
        doing: &str,
        name: &'static str,
        args: Vec<Value>,
    ) -> Result<R, StoreError> {
        self.usable(doing).await?;
        self.send(
            doing,
            name,
            args,
            ClusterHash::FirstKey,
            self.options_for(name),
        )
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
    /// Every attempt is bounded by the command timeout (fred issue #353: per-call timeouts
    /// are not applied to scripts).
    ///
    /// Besides the script's own keys, every call declares the slot's guard key
    /// ([`Keys::slot_guard`]), which nothing ever writes. While the slot is being migrated
    /// between cluster nodes, Redis checks a script's declared keys before running it: with
    /// one of them missing it answers `ASK` or `TRYAGAIN`, and the script does not start (it
    /// is sent again once the slot has moved). Without it, a script whose declared keys were
    /// all still on the source node would run there and fail at its first command on any
    /// other key missing there (Redis answers "Script attempted to access a non local key"),
    /// keeping the writes it had made (seen on Redis 7.0: a record rewritten without its
    /// indexes, a due retry taken off the due set but never delivered).
    pub(crate) async fn eval<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<Value>,
        args: Vec<Value>,
    ) -> Result<R, StoreError> {
        let mut full = Vec::with_capacity(3 + keys.len() + args.len());
        full.push(Value::from(script.sha.as_str()));
        full.push(Value::from(keys.len() as i64 + 1));
        full.extend(keys);
        full.push(self.guard.clone());
        full.extend(args);
        let doing = format!("running the {} script", script.name);
        let options = if script.repeatable {
            &self.options
        } else {
            &self.once
        };
        let hash = || ClusterHash::Custom(self.slot);
        self.usable(&doing).await?;
        let first: Result<R, StoreError> = self
            .send(&doing, "EVALSHA", full.clone(), hash(), options)
            .await;
        match first {
            Err(StoreError::Rejected(msg)) if msg.contains(": NOSCRIPT") => {
                let client = self.client.clone();
                let lua = script.lua.clone();
                self.bounded(&format!("loading the {} script", script.name), async move {
                    client.script_load_cluster::<(), _>(lua).await
                })
                .await?;
                self.send(&doing, "EVALSHA", full, hash(), options).await
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_that_say_the_command_did_not_run_are_followed() {
        for (kind, details, followed) in [
            (ErrorKind::Routing, "Too many redirections.", true),
            (
                ErrorKind::Unknown,
                "TRYAGAIN Multiple keys request during rehashing of slot",
                true,
            ),
            // Whether these ran is unknown, or they will not get better by waiting here.
            (ErrorKind::Timeout, "Request timed out.", false),
            (ErrorKind::Unknown, "Too many failed write attempts.", false),
            (ErrorKind::Routing, "Max attempts reached.", false),
            (ErrorKind::Unknown, "CLUSTERDOWN The cluster is down", false),
            (ErrorKind::IO, "Connection reset by peer", false),
        ] {
            let e = FredError::new(kind, details);
            assert_eq!(slot_moving(&e), followed, "{details}");
        }
    }

    #[test]
    fn pauses_are_jittered_within_half_to_all() {
        let pause = Duration::from_millis(40);
        let seen: Vec<Duration> = (0..50).map(|_| jittered(pause)).collect();
        assert!(
            seen.iter().all(|p| *p >= pause / 2 && *p <= pause),
            "{seen:?}"
        );
        assert!(seen.iter().any(|p| *p != seen[0]), "{seen:?}");
    }

    /// A connection task that ends with an error (here: `fail_fast`, so a refused first
    /// connection ends it) is started again, and each restart is counted in the health.
    #[tokio::test]
    async fn an_ended_connection_task_is_started_again_and_counted() {
        let port = failed_tasks_testkit::free_port();
        let mut config = Config::from_url(&format!("redis://127.0.0.1:{port}")).unwrap();
        config.fail_fast = true;
        let client = Builder::from_config(config).build().unwrap();
        let health = Arc::new(Health::new(false));
        supervise(client, health.clone());
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while health.condition().connection_restarts < 2 {
            assert!(tokio::time::Instant::now() < until, "not restarted twice");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
