//! Connections to Redis, all opened, written, read and reconnected by the `redis`
//! crate's [`ConnectionManager`].
//!
//! What this module adds on top, because the crate does not do it:
//! * **replacing a silent connection.** The crate reconnects after an I/O error, but a
//!   peer that stops answering (a proxy that stops forwarding, a frozen server) only
//!   produces timeouts, which it does not treat as a reason to reconnect. When a call
//!   times out, nothing at all was answered since it was handed over, and the connection
//!   has been silent for twice the command timeout, the manager is swapped for a fresh
//!   one built from the same client and settings. The margin keeps a short freeze (a
//!   slow command, a paused server) from costing the subscriptions of a healthy
//!   connection;
//! * **retrying refused connections** within a call's deadline (nothing was sent);
//! * **following a Sentinel failover.** redis-rs's `SentinelClient` gives a client for
//!   the master of the moment and does not follow a failover by itself. A [`Source`] of
//!   kind Sentinel keeps the master it resolved; a lost or refused connection or a
//!   `READONLY` reply makes it ask the sentinels again, and when the master moved every
//!   connection of that source is rebuilt for the new one (pub/sub ones are told to
//!   resubscribe).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use redis::{
    Client, Cmd, ConnectionAddr, ConnectionInfo, Pipeline, PushInfo, PushKind, RedisError,
    RedisFuture, RedisResult, Value,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::NativeOptions;
use crate::error::describe_redis_error;

/// Pause between attempts while Redis refuses connections.
const REFUSED_PAUSE: Duration = Duration::from_millis(100);

/// How long after a fault a cluster's topology is read often (see `Connection::unsettle`).
const UNSETTLED_FOR_MS: u64 = 20_000;
/// How often the topology is read meanwhile.
const UNSETTLED_CHECK_EVERY: Duration = Duration::from_millis(300);

/// Where a connection's server is.
#[derive(Clone)]
pub enum Source {
    /// One address, from the URL.
    Fixed(Box<Client>),
    /// The master of a Sentinel group, as the sentinels say now.
    Sentinel(Arc<SentinelSource>),
    /// A Redis Cluster, found from its seed nodes.
    Cluster(Arc<ClusterSource>),
}

/// Builds a cluster client for a list of nodes, with the settings the options give.
/// The `bool` asks for a client whose connections never retry a command themselves (see
/// [`ClusterLink`]).
pub type BuildClusterClient =
    Box<dyn Fn(Vec<ConnectionInfo>, bool) -> RedisResult<ClusterClient> + Send + Sync>;

/// A Redis Cluster: the crate's client, and a count of the topology changes its
/// connections noticed (a failover may lose a shard's last writes).
///
/// No single node matters: a new connection is seeded with the configured seeds and
/// every node (master or replica) of the topology last seen, so a manager whose seed
/// node died for good still connects. The crate itself only ever goes back to the
/// nodes its client was built with.
pub struct ClusterSource {
    build: BuildClusterClient,
    /// The clients new connections come from (the seeds and the nodes last seen): one
    /// whose connections retry (MOVED, a lost connection), one whose never do.
    client: Mutex<(ClusterClient, ClusterClient)>,
    changes: AtomicU64,
    /// The configured seed nodes (the URL's first; its credentials and TLS apply to all).
    seeds: Vec<ConnectionInfo>,
    /// Every node of the topology last read (see [`ClusterSource::saw_nodes`]).
    seen: Mutex<Vec<(String, u16)>>,
    /// The last finding of `why_unreachable` and when it was made.
    unreachable: tokio::sync::Mutex<Option<(Instant, String)>>,
}

/// How long a finding of `why_unreachable` is reused.
const UNREACHABLE_REUSED_FOR: Duration = Duration::from_secs(2);

/// How long one node is given to say who serves which slots: a node that takes longer
/// is down or busy, and the others are asked at the same time.
const TOPOLOGY_READ_TIMEOUT: Duration = Duration::from_millis(1000);

/// Who serves which slots, and every node that serves one (see `cluster::topology`).
type Topology = (crate::cluster::SlotOwners, Vec<(String, u16)>);

/// The connection settings of `template` (scheme, credentials, TLS) for another node.
pub fn node_like(template: &ConnectionInfo, host: String, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    template.clone().set_addr(addr)
}

/// A node's address, to compare nodes.
fn address(info: &ConnectionInfo) -> Option<(&str, u16)> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Some((host.as_str(), *port))
        }
        _ => None,
    }
}

impl ClusterSource {
    pub fn new(build: BuildClusterClient, seeds: Vec<ConnectionInfo>) -> RedisResult<Arc<Self>> {
        let client = (build(seeds.clone(), false)?, build(seeds.clone(), true)?);
        Ok(Arc::new(ClusterSource {
            build,
            client: Mutex::new(client),
            changes: AtomicU64::new(0),
            seeds,
            seen: Mutex::new(Vec::new()),
            unreachable: tokio::sync::Mutex::new(None),
        }))
    }

    /// The nodes a new connection starts from: the seeds, then the nodes last seen.
    fn nodes(&self) -> Vec<ConnectionInfo> {
        let mut nodes = self.seeds.clone();
        let template = &self.seeds[0];
        for (host, port) in self.seen.lock().unwrap().iter() {
            if !nodes
                .iter()
                .any(|n| address(n) == Some((host.as_str(), *port)))
            {
                nodes.push(node_like(template, host.clone(), *port));
            }
        }
        nodes
    }

    /// Records the nodes of a topology just read; new connections are seeded with them.
    pub fn saw_nodes(&self, mut nodes: Vec<(String, u16)>) {
        nodes.sort();
        nodes.dedup();
        nodes.retain(|(host, _)| !host.is_empty() && host != "?");
        {
            let mut seen = self.seen.lock().unwrap();
            if nodes.is_empty() || *seen == nodes {
                return;
            }
            *seen = nodes;
        }
        let nodes = self.nodes();
        if let (Ok(retrying), Ok(once)) = (
            (self.build)(nodes.clone(), false),
            (self.build)(nodes, true),
        ) {
            *self.client.lock().unwrap() = (retrying, once);
        }
    }

    fn client(&self) -> ClusterClient {
        self.client.lock().unwrap().0.clone()
    }

    fn client_without_retries(&self) -> ClusterClient {
        self.client.lock().unwrap().1.clone()
    }

    /// Who serves which slots, and every node, as most of up to three of `masters` (a
    /// different three each time) say within a short deadline (see
    /// `Connection::follow_topology`). Masters only: they are the nodes the crate keeps
    /// connections to (asking another makes it open one, which has made it replace its
    /// other connections). Before any master is known, one node's word.
    async fn read_topology(
        &self,
        connection: &ClusterConnection,
        masters: Vec<(String, u16)>,
        timeout: Duration,
    ) -> Option<Topology> {
        let timeout = timeout.min(TOPOLOGY_READ_TIMEOUT);
        let mut asked = masters;
        if asked.is_empty() {
            return tokio::time::timeout(timeout, crate::cluster::topology(connection))
                .await
                .ok()?
                .ok();
        }
        let start = (random_u64() as usize) % asked.len();
        asked.rotate_left(start);
        asked.truncate(3);
        let views = futures_util::future::join_all(asked.iter().map(|(host, port)| {
            tokio::time::timeout(
                timeout,
                crate::cluster::topology_at(connection, host, *port),
            )
        }))
        .await;
        let views: Vec<Topology> = views.into_iter().filter_map(|v| v.ok()?.ok()).collect();
        let answered = views.len();
        let (votes, view) = views
            .iter()
            .map(|view| (views.iter().filter(|v| v.0 == view.0).count(), view))
            .max_by_key(|(votes, _)| *votes)?;
        (votes * 2 > answered).then(|| view.clone())
    }

    /// When redis-rs reached no node at all it only says "No connections found": connect to
    /// each seed directly and report the first one's own error (a refused connection, a
    /// certificate the CA did not sign, a wrong password). Reused for a moment, so a burst
    /// of failing calls probes once.
    async fn why_unreachable(&self, timeout: Duration) -> Option<String> {
        let mut last = self.unreachable.lock().await;
        if let Some((at, reason)) = &*last {
            if at.elapsed() < UNREACHABLE_REUSED_FOR {
                return Some(reason.clone());
            }
        }
        let mut reason = None;
        // One deadline for all seeds: the calls waiting for this answer have their own.
        let deadline = Instant::now() + timeout;
        for seed in self.nodes() {
            let attempt = async {
                redis::Client::open(seed.clone())?
                    .get_multiplexed_async_connection()
                    .await
            };
            match tokio::time::timeout_at(deadline, attempt).await {
                Ok(Ok(_)) => return None,
                Ok(Err(e)) => {
                    reason.get_or_insert_with(|| describe_redis_error(&e));
                }
                Err(_) => {
                    reason.get_or_insert_with(|| "the seed node did not answer in time".into());
                }
            }
        }
        let reason = reason?;
        *last = Some((Instant::now(), reason.clone()));
        Some(reason)
    }
}

/// A connection as the crate gives it: to one server, or to a whole cluster.
#[derive(Clone)]
pub enum Link {
    Single(ConnectionManager),
    Cluster(ClusterLink),
}

/// A cluster connection, and for a command connection a second one that never retries a
/// command by itself: publishes go there. The crate resends a command whose connection
/// was lost or whose answer timed out, and resends a whole pipeline when one reply in it
/// is MOVED: a publish that did reach Redis would be delivered twice. Publishes are sent
/// one by one on the connection without retries, and [`crate::cluster::query`] sends one
/// again only when Redis said it did not run it (see `cluster::publish`).
#[derive(Clone)]
pub struct ClusterLink {
    connection: ClusterConnection,
    publish: Option<(ClusterConnection, Duration)>,
}

impl std::ops::Deref for ClusterLink {
    type Target = ClusterConnection;
    fn deref(&self) -> &ClusterConnection {
        &self.connection
    }
}

impl std::ops::DerefMut for ClusterLink {
    fn deref_mut(&mut self) -> &mut ClusterConnection {
        &mut self.connection
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(manager) => manager.req_packed_command(cmd),
            Link::Cluster(cluster) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(manager) => manager.req_packed_commands(pipeline, offset, count),
            // One pipeline per slot: the crate sends a whole pipeline to one node.
            Link::Cluster(cluster) => Box::pin(crate::cluster::query(
                &cluster.connection,
                cluster.publish.as_ref(),
                pipeline,
                offset,
                count,
            )),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(manager) => manager.get_db(),
            Link::Cluster(cluster) => cluster.get_db(),
        }
    }
}

impl Link {
    /// SUBSCRIBE, or on a cluster SSUBSCRIBE (sharded channels), one command per slot.
    pub async fn subscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Link::Single(manager) => manager.subscribe(channels).await,
            Link::Cluster(cluster) => crate::cluster::ssubscribe(cluster, channels).await,
        }
    }

    /// UNSUBSCRIBE, or on a cluster SUNSUBSCRIBE.
    pub async fn unsubscribe(&mut self, channels: &[String]) -> RedisResult<()> {
        match self {
            Link::Single(manager) => manager.unsubscribe(channels).await,
            Link::Cluster(cluster) => crate::cluster::sunsubscribe(cluster, channels).await,
        }
    }
}

/// The master of a Sentinel group, resolved through the sentinels and re-resolved when a
/// connection to it fails.
pub struct SentinelSource {
    /// A client per way of reaching sentinels (credentials, TLS): redis-rs's gives all
    /// the sentinels of one client the same.
    sentinel: tokio::sync::Mutex<Vec<SentinelClient>>,
    /// The master group's name, and a client per sentinel, to hear `+switch-master`.
    name: String,
    sentinels: Vec<Client>,
    /// The task listening for `+switch-master`, started with the first connection.
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The master as last resolved, and a number bumped each time it moved.
    master: Mutex<Option<(Client, u64)>>,
    /// A re-resolution is running (one at a time).
    resolving: AtomicBool,
    /// Connections built on this source, rebuilt when the master moves.
    followers: Mutex<Vec<Weak<Connection>>>,
}

impl SentinelSource {
    pub fn new(sentinel: Vec<SentinelClient>, name: String, sentinels: Vec<Client>) -> Arc<Self> {
        Arc::new(SentinelSource {
            sentinel: tokio::sync::Mutex::new(sentinel),
            name,
            sentinels,
            watcher: Mutex::new(None),
            master: Mutex::new(None),
            resolving: AtomicBool::new(false),
            followers: Mutex::new(Vec::new()),
        })
    }

    /// The master: the one already resolved (without waiting), else asks the sentinels.
    async fn master(&self) -> RedisResult<(Client, u64)> {
        if let Some(master) = self.master.lock().unwrap().clone() {
            return Ok(master);
        }
        self.resolve().await
    }

    /// Asks the sentinels for the master (each client at once, the first answer wins);
    /// bumps the number when it moved.
    async fn resolve(&self) -> RedisResult<(Client, u64)> {
        let mut clients = self.sentinel.lock().await;
        let lookups = clients
            .iter_mut()
            .map(|client| Box::pin(client.async_get_client()));
        let (client, _) = futures_util::future::select_ok(lookups).await?;
        let mut master = self.master.lock().unwrap();
        match &*master {
            Some((known, number))
                if known.get_connection_info().addr() == client.get_connection_info().addr() =>
            {
                Ok((known.clone(), *number))
            }
            known => {
                let number = known.as_ref().map_or(1, |(_, n)| n + 1);
                *master = Some((client.clone(), number));
                Ok((client, number))
            }
        }
    }

    /// Whether a connection still uses this source.
    fn has_followers(&self) -> bool {
        let mut list = self.followers.lock().unwrap();
        list.retain(|follower| follower.strong_count() > 0);
        !list.is_empty()
    }

    /// The connections still using this source.
    fn followers(&self) -> Vec<Arc<Connection>> {
        let mut list = self.followers.lock().unwrap();
        list.retain(|c| c.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    }

    /// Starts listening for `+switch-master` (once). Must run inside tokio.
    fn watch(self: &Arc<Self>) {
        let mut watcher = self.watcher.lock().unwrap();
        if watcher.is_none() {
            *watcher = Some(tokio::spawn(watch_switches(
                Arc::downgrade(self),
                self.name.clone(),
                self.sentinels.clone(),
            )));
        }
    }

    /// A connection to the master failed: ask the sentinels again (once at a time), and
    /// if the master moved, rebuild every connection of this source.
    fn suspect(self: &Arc<Self>) {
        if self.resolving.swap(true, Ordering::AcqRel) {
            return;
        }
        let source = self.clone();
        tokio::spawn(async move {
            let before = source.master.lock().unwrap().as_ref().map(|(_, n)| *n);
            let after = source.resolve().await.ok().map(|(_, n)| n);
            source.resolving.store(false, Ordering::Release);
            if after.is_some() && after != before {
                for connection in source.followers() {
                    // Rebuilds it now; a pub/sub one is then told to resubscribe.
                    let _ = connection.get().await;
                }
            }
        });
    }
}

impl Drop for SentinelSource {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.lock().unwrap().take() {
            watcher.abort();
        }
    }
}

/// How long the `+switch-master` listener waits quietly before it checks its sentinel
/// (and whether anyone still uses the source).
const WATCH_CHECK: Duration = Duration::from_secs(15);

/// Listens on one sentinel at a time for `+switch-master` of our group: a failover is
/// then followed at once, even by connections that are idle or still connected to the
/// old master (a partition), instead of at their next failed call.
async fn watch_switches(source: Weak<SentinelSource>, name: String, sentinels: Vec<Client>) {
    let mut pause = Duration::from_millis(100);
    let prefix = format!("{name} ");
    loop {
        for sentinel in &sentinels {
            let (tx, mut pushes) = mpsc::unbounded_channel();
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_push_sender(tx);
            let Ok(mut connection) = sentinel
                .get_multiplexed_async_connection_with_config(&config)
                .await
            else {
                continue;
            };
            if connection.subscribe("+switch-master").await.is_err() {
                continue;
            }
            pause = Duration::from_millis(100);
            // A switch while no sentinel was listened to would go unheard: ask once now.
            match source.upgrade() {
                Some(source) => source.suspect(),
                None => return,
            }
            loop {
                let push = match tokio::time::timeout(WATCH_CHECK, pushes.recv()).await {
                    Ok(Some(push)) => push,
                    Ok(None) => break,
                    Err(_) => {
                        // Quiet: end with the last connection of the source, and move on
                        // to the next sentinel if this one stopped answering.
                        match source.upgrade() {
                            Some(source) if source.has_followers() => {}
                            _ => return,
                        }
                        let ping = redis::cmd("PING");
                        let answered = tokio::time::timeout(
                            Duration::from_secs(2),
                            ping.query_async::<()>(&mut connection),
                        )
                        .await;
                        if !matches!(answered, Ok(Ok(()))) {
                            break;
                        }
                        continue;
                    }
                };
                match push.kind {
                    PushKind::Message => {
                        let ours = matches!(
                            push.data.get(1),
                            Some(redis::Value::BulkString(text)) if text.starts_with(prefix.as_bytes())
                        );
                        match source.upgrade() {
                            Some(source) if ours => source.suspect(),
                            Some(_) => {}
                            None => return,
                        }
                    }
                    PushKind::Disconnection => break,
                    _ => {}
                }
            }
        }
        if source.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(jittered(pause)).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Where a pub/sub connection's pushes go (messages, confirmations, disconnections):
/// called on the tokio thread, in order, once per push, so it must not block.
pub type PushSink = Arc<dyn Fn(PushInfo) + Send + Sync>;

/// A [`PushSink`] for state that owns the connection and so is made after it: pushes
/// reach `on_push` of the state through a weak reference once [`PushRoute::set`] named
/// it, and are dropped before (nothing is subscribed before).
pub struct PushRoute<S>(Arc<OnceLock<Weak<S>>>);

impl<S: Send + Sync + 'static> PushRoute<S> {
    pub fn new(on_push: fn(&S, PushInfo)) -> (Self, PushSink) {
        let route: Arc<OnceLock<Weak<S>>> = Arc::default();
        let sink: PushSink = {
            let route = route.clone();
            Arc::new(move |push| {
                if let Some(state) = route.get().and_then(Weak::upgrade) {
                    on_push(&state, push);
                }
            })
        };
        (PushRoute(route), sink)
    }

    pub fn set(&self, state: &Arc<S>) {
        let _ = self.0.set(Arc::downgrade(state));
    }
}

/// The channel and payload of a `message` / `smessage` push; None for a malformed one.
pub fn message_parts(data: Vec<Value>) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut data = data.into_iter();
    match (data.next(), data.next()) {
        (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) => {
            Some((channel, payload))
        }
        _ => None,
    }
}

/// A self-reconnecting connection that is also replaced when its peer goes silent.
pub struct Connection {
    source: Source,
    config: ConnectionManagerConfig,
    /// The link, and the master number it was built for (Sentinel); None until a
    /// Sentinel master was resolved.
    current: Mutex<Option<(Link, u64)>>,
    /// Where pub/sub pushes go; also told of a rebuilt connection, as a disconnection.
    push: Option<PushSink>,
    /// Milliseconds since `epoch` of the last answer Redis gave on this connection.
    last_answer_ms: AtomicU64,
    /// Bumped on every replacement, so one stall replaces the connection only once.
    generation: AtomicU64,
    epoch: Instant,
    /// How long the connection must have been silent before it is replaced.
    replace_after_ms: u64,
    /// To build a replacement cluster connection.
    options: NativeOptions,
    /// On a cluster: who served which slots at the last look (see `follow_topology`).
    topology: Mutex<Option<crate::cluster::SlotOwners>>,
    /// On a cluster: the number of the cluster connection in use (see `cluster_link`).
    link_in_use: Arc<AtomicU64>,
    /// On a cluster: a call found no node reachable (see [`Connection::failed`]).
    lost_every_node: AtomicBool,
    /// When the connection was last replaced for that (milliseconds since `epoch`).
    reseeded_at_ms: AtomicU64,
    /// On a cluster: until when (milliseconds since `epoch`) the topology may still be
    /// changing after a fault (see [`Connection::unsettled`]).
    unsettled_until_ms: AtomicU64,
    /// Wakes the task waiting in [`Connection::until_unsettled`].
    unsettling: tokio::sync::Notify,
    /// What `stats()` and the diagnostics channels see of this connection.
    pub stats: crate::stats::ConnectionStats,
}

/// A lazily connecting cluster connection (the crate connects in the background), the
/// `number`th of its [`Connection`]. Its pushes reach `push` only while it is the one in
/// use (`in_use`): a replaced cluster connection's last messages and disconnections
/// would otherwise be read as the current one's (duplicates, a needless restore).
fn cluster_link(
    cluster: &ClusterSource,
    options: &NativeOptions,
    push: Option<&PushSink>,
    in_use: &Arc<AtomicU64>,
) -> Link {
    let number = in_use.fetch_add(1, Ordering::AcqRel) + 1;
    let mut config = ClusterConfig::new()
        .set_connection_timeout(options.connect_timeout())
        .set_response_timeout(options.command_timeout());
    if let Some(push) = push {
        let push = push.clone();
        let in_use = in_use.clone();
        config = config.set_push_sender(move |info: PushInfo| {
            if in_use.load(Ordering::Acquire) == number {
                push(info);
            }
            Ok::<(), ()>(())
        });
    }
    // A command connection: publishes on a connection of their own that never retries
    // (see `ClusterLink`), within the crate's overall deadline for a call.
    let publish = push.is_none().then(|| {
        let config = ClusterConfig::new()
            .set_connection_timeout(options.connect_timeout())
            .set_response_timeout(options.command_timeout());
        (
            cluster
                .client_without_retries()
                .get_pending_async_connection_with_config(config),
            options.command_timeout().mul_f64(0.9),
        )
    });
    Link::Cluster(ClusterLink {
        connection: cluster
            .client()
            .get_pending_async_connection_with_config(config),
        publish,
    })
}

/// Which connection a call was handed to, to tell later whether it was replaced since.
#[derive(Clone, Copy)]
pub struct Ticket {
    generation: u64,
    handed_at_ms: u64,
}

impl Connection {
    /// A lazily connecting connection: a manager built while Redis is down works once it
    /// is up. With `push`, pub/sub messages and disconnections go there.
    /// Must run inside the tokio runtime.
    pub fn new(
        source: Source,
        options: &NativeOptions,
        push: Option<PushSink>,
    ) -> Result<Arc<Self>, String> {
        let mut config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout()))
            // Deadlines are ours (per call, from when it was made), not per request.
            .set_response_timeout(None)
            // A few quick tries per reconnection, with the crate's jittered back-off: a
            // blip is absorbed, a permanent failure (wrong password, refused connection)
            // surfaces with its own message well within a call's deadline.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_pipeline_buffer_size(1024);
        if let Some(push) = &push {
            let push = push.clone();
            config = config.set_push_sender(move |info: PushInfo| {
                push(info);
                Ok::<(), ()>(())
            });
        }
        let connection = Arc::new(Connection {
            source,
            config,
            current: Mutex::new(None),
            stats: crate::stats::ConnectionStats::new(push.is_some()),
            push,
            last_answer_ms: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            epoch: Instant::now(),
            replace_after_ms: 2 * u64::from(options.command_timeout_ms.max(500)),
            options: options.clone(),
            topology: Mutex::new(None),
            link_in_use: Arc::new(AtomicU64::new(0)),
            lost_every_node: AtomicBool::new(false),
            reseeded_at_ms: AtomicU64::new(0),
            unsettled_until_ms: AtomicU64::new(0),
            unsettling: tokio::sync::Notify::new(),
        });
        // A Sentinel master is resolved at the first use.
        let first = connection
            .fresh_link()
            .map_err(|e| describe_redis_error(&e))?;
        *connection.current.lock().unwrap() = first.map(|link| (link, 0));
        if let Source::Sentinel(sentinel) = &connection.source {
            sentinel
                .followers
                .lock()
                .unwrap()
                .push(Arc::downgrade(&connection));
            sentinel.watch();
        }
        Ok(connection)
    }

    /// The manager to send on now, and a ticket for [`Connection::stalled`]. Ready at
    /// once (no await) unless a Sentinel master must be resolved first, so callers that
    /// send in order keep their order.
    pub async fn get(&self) -> RedisResult<(Link, Ticket)> {
        if let Source::Sentinel(sentinel) = &self.source {
            let (client, number) = sentinel.master().await?;
            let rebuilt = {
                let mut current = self.current.lock().unwrap();
                if current.as_ref().map(|(_, n)| *n) == Some(number) {
                    false
                } else {
                    let had = current.is_some();
                    let moved = current.as_ref().is_some_and(|(_, n)| *n != 0);
                    self.stats.master_at(client.get_connection_info(), moved);
                    *current = Some((self.manager_for(client)?, number));
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    had
                }
            };
            if let (true, Some(push)) = (rebuilt, &self.push) {
                // The old master's subscriptions are gone with its connection.
                push(PushInfo {
                    kind: PushKind::Disconnection,
                    data: Vec::new(),
                });
            }
        }
        let manager = match &*self.current.lock().unwrap() {
            Some((manager, _)) => manager.clone(),
            None => {
                return Err(RedisError::from((
                    redis::ErrorKind::Client,
                    "no master resolved",
                )))
            }
        };
        let ticket = Ticket {
            generation: self.generation.load(Ordering::Acquire),
            handed_at_ms: self.now_ms(),
        };
        Ok((manager, ticket))
    }

    /// Which master the connection is on: bumped by a Sentinel failover or a cluster
    /// topology change (0 without one).
    pub fn master_number(&self) -> u64 {
        if let Source::Cluster(cluster) = &self.source {
            return cluster.changes.load(Ordering::Acquire);
        }
        self.current.lock().unwrap().as_ref().map_or(0, |(_, n)| *n)
    }

    /// Bumped each time the link is replaced (a renewal, a silent peer, a new Sentinel
    /// master): a subscription made before a change may be gone with the old link.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The link in use now (it changes when the connection is replaced or follows a
    /// new master), for retries of a call that began on an older one.
    fn current(&self) -> Option<Link> {
        self.current
            .lock()
            .unwrap()
            .as_ref()
            .map(|(m, _)| m.clone())
    }

    /// A call failed in a way that may mean the server is no longer the master (lost or
    /// refused connection, `READONLY`): with a Sentinel source, ask the sentinels again.
    pub fn suspect(&self, error: &RedisError) {
        if let Source::Sentinel(sentinel) = &self.source {
            if error.is_connection_refusal()
                || error.is_io_error()
                || error.is_connection_dropped()
                || error.code() == Some("READONLY")
            {
                sentinel.suspect();
            }
        }
    }

    /// A reply said `READONLY`, or nothing answered in time: with a Sentinel source, ask
    /// the sentinels again.
    fn suspect_master(&self) {
        if let Source::Sentinel(sentinel) = &self.source {
            sentinel.suspect();
        }
    }

    /// A call handed over with `ticket` failed with `error`: a Sentinel source may ask
    /// for the master again; on a cluster the crate's own timeout counts as silence
    /// (see [`Connection::stalled`]), and a connection that reaches no node is replaced
    /// by one seeded with every node last seen (see [`ClusterSource`]).
    pub fn failed(&self, error: &RedisError, ticket: Ticket) {
        self.stats.failed(error);
        self.suspect(error);
        self.unsettle();
        if error.is_timeout() {
            self.stalled(ticket);
        } else if error.kind() == redis::ErrorKind::ClusterConnectionNotFound {
            self.lost_every_node.store(true, Ordering::Release);
            // A connection carrying no subscriptions is replaced at once; a pub/sub one
            // at its next check, which resubscribes (see `Connection::check`).
            if self.push.is_none() {
                self.reseeded();
            }
        }
    }

    /// On a cluster whose connection reached no node: replaces it (at most once a
    /// second) with one seeded from every node last seen. Returns whether it did.
    fn reseeded(&self) -> bool {
        if !self.lost_every_node.load(Ordering::Acquire) {
            return false;
        }
        let now = self.now_ms();
        let last = self.reseeded_at_ms.load(Ordering::Acquire);
        if last != 0 && now.saturating_sub(last) < 1000 {
            return false;
        }
        if self
            .reseeded_at_ms
            .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.lost_every_node.store(false, Ordering::Release);
        self.renew();
        true
    }

    /// On a cluster, a fault was seen (a lost or replaced connection, a failed call): for
    /// a while the topology is read often (see [`Connection::unsettled`]), so a failover
    /// or a node's return is followed within a fraction of a second, not at the next
    /// periodic check.
    pub fn unsettle(&self) {
        if matches!(self.source, Source::Cluster(_)) {
            self.unsettled_until_ms
                .fetch_max(self.now_ms() + UNSETTLED_FOR_MS, Ordering::AcqRel);
            self.unsettling.notify_one();
        }
    }

    /// Runs for ever: after each fault seen on this cluster connection (see
    /// [`Connection::unsettle`]), reads the topology over `via` every
    /// [`UNSETTLED_CHECK_EVERY`] while unsettled, and calls `moved` when slots changed
    /// owners. Meant for a task of its own: a refresh or a check can wait out a failover
    /// (up to `commandTimeout`), and following the failover meanwhile is what ends the
    /// loss (a cluster soak measured subscriptions restored a second late when this
    /// waited behind a liveness refresh). Idle on one server or Sentinel.
    pub async fn follow_faults(&self, via: &Connection, timeout: Duration, moved: impl Fn()) {
        loop {
            while !self.unsettled() {
                self.unsettling.notified().await;
            }
            tokio::time::sleep(UNSETTLED_CHECK_EVERY).await;
            if self.follow_topology(via, timeout).await == Some(true) {
                moved();
            }
        }
    }

    /// Whether a fault was seen lately on this cluster connection: the managers then
    /// follow the topology every [`UNSETTLED_CHECK_EVERY`].
    pub fn unsettled(&self) -> bool {
        self.unsettled_until_ms.load(Ordering::Acquire) > self.now_ms()
    }

    /// Records that Redis answered (anything, even an error reply).
    pub fn answered(&self) {
        self.last_answer_ms
            .fetch_max(self.now_ms(), Ordering::Relaxed);
        self.stats.answered();
    }

    /// Records a pipeline's replies: Redis answered, and a `READONLY` among them means a
    /// replica did (with Sentinel, the master may have moved).
    pub fn answered_with(&self, replies: &[redis::Value]) {
        self.answered();
        if replies
            .iter()
            .any(|v| matches!(v, redis::Value::ServerError(e) if e.code() == "READONLY"))
        {
            self.suspect_master();
        }
    }

    /// On a cluster: reads who serves which slots, and returns true if that changed since
    /// the last look (a failover, a migration): the caller then subscribes everything
    /// again on the same connection, which sends each channel to its slot's owner of now
    /// (channels that did not move are subscribed already: Redis only confirms them
    /// again). A connection is not replaced for this: a fresh one would drop every
    /// subscription on every node and lose the messages of every session until they are
    /// back. What the change left behind (a subscription at a demoted master, one the
    /// crate dropped while it replaced a node's connection) shows in the subscription
    /// counts of [`Connection::check`].
    ///
    /// The topology is read from up to three nodes at once, over `via` (the command
    /// connection: on a pub/sub connection a server-sent `sunsubscribe` can be taken by
    /// redis-rs for the reply to a request), each within a short deadline: one node may
    /// be down, and one may have a stale view (a master restarted from its nodes.conf
    /// believes for a moment that it still owns its slots). A view is taken when most
    /// of the nodes that answered agree on it. None when no view could be taken (on one
    /// server or Sentinel: `Some(false)`, there are no slots to move).
    pub async fn follow_topology(&self, via: &Connection, timeout: Duration) -> Option<bool> {
        let Source::Cluster(cluster) = &self.source else {
            return Some(false);
        };
        let Some(Link::Cluster(connection)) = via.current() else {
            return None;
        };
        let masters = {
            let known = self.topology.lock().unwrap();
            let mut masters: Vec<(String, u16)> = Vec::new();
            for (_, _, host, port) in known.iter().flatten() {
                if !masters.iter().any(|(h, p)| h == host && p == port) {
                    masters.push((host.clone(), *port));
                }
            }
            masters
        };
        let (owners, nodes) = cluster.read_topology(&connection, masters, timeout).await?;
        cluster.saw_nodes(nodes);
        let (changed, demoted) = {
            let mut known = self.topology.lock().unwrap();
            let changed = known.as_ref().is_some_and(|known| *known != owners);
            // A master that no longer serves any slot: failed over, or demoted to a
            // replica of its shard, where it still gets the shard's messages.
            let demoted = known.iter().flatten().any(|(_, _, host, port)| {
                !owners.iter().any(|(_, _, h, p)| h == host && p == port)
            });
            *known = Some(owners);
            (changed, demoted)
        };
        if changed && demoted && self.push.is_some() {
            // Our subscriptions at a demoted master would deliver every message of its
            // shard a second time: only a fresh connection is sure to leave none there.
            self.renew();
        }
        if changed {
            self.stats.slots_moved();
            self.unsettle();
            // A failed master's last writes may be gone: the liveness keys are written
            // again (see `master_number`).
            cluster.changes.fetch_add(1, Ordering::AcqRel);
        }
        Some(changed)
    }

    /// On a cluster: replaces the connection with a fresh one (the caller subscribes
    /// everything again). Used when a node's connection was lost: the crate would
    /// resubscribe that node by itself (wrongly, see `cluster`), and a restore made
    /// while a master was unreachable may have landed on its replica; a fresh
    /// connection leaves no subscription behind anywhere.
    pub fn renew(&self) {
        if !matches!(self.source, Source::Cluster(_)) {
            return;
        }
        self.unsettle();
        self.stats.lost();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(fresh) = self.fresh_link() {
            *self.current.lock().unwrap() = fresh.map(|link| (link, 0));
        }
    }

    /// A new link to where the source points now: the URL's server, the Sentinel master
    /// as last resolved (None while none is), or the cluster.
    fn fresh_link(&self) -> RedisResult<Option<Link>> {
        Ok(Some(match &self.source {
            Source::Fixed(client) => self.manager_for((**client).clone())?,
            Source::Sentinel(sentinel) => {
                let master = sentinel
                    .master
                    .lock()
                    .unwrap()
                    .as_ref()
                    .map(|(c, _)| c.clone());
                match master {
                    Some(client) => self.manager_for(client)?,
                    None => return Ok(None),
                }
            }
            Source::Cluster(cluster) => cluster_link(
                cluster,
                &self.options,
                self.push.as_ref(),
                &self.link_in_use,
            ),
        }))
    }

    /// A lazily connecting manager for one server, with this connection's settings.
    fn manager_for(&self, client: Client) -> RedisResult<Link> {
        ConnectionManager::new_lazy_with_config(client, self.config.clone()).map(Link::Single)
    }

    /// A call handed over with `ticket` got no answer in time. If nothing at all was
    /// answered since then, the peer is silent: replace the connection (once per stall).
    /// Returns whether it was replaced.
    pub fn stalled(&self, ticket: Ticket) -> bool {
        let last_answer = self.last_answer_ms.load(Ordering::Relaxed);
        if last_answer > ticket.handed_at_ms
            || self.now_ms().saturating_sub(last_answer) < self.replace_after_ms
        {
            return false;
        }
        let next = ticket.generation + 1;
        if self
            .generation
            .compare_exchange(ticket.generation, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        let mut current = self.current.lock().unwrap();
        let Some((_, number)) = current.as_ref() else {
            return false;
        };
        match self.fresh_link() {
            Ok(Some(fresh)) => {
                // The old link's sockets close when its last clone is dropped.
                *current = Some((fresh, *number));
                self.stats.lost();
                true
            }
            _ => false,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// How a cluster's nodes hold this connection's shard subscriptions, when not as wanted.
enum Off {
    /// Some node holds fewer than it should.
    Missing,
    /// Some node holds more than it should.
    Extra,
}

/// What [`Connection::check`] found.
pub enum Checked {
    /// Answering (or only slow).
    Fine,
    /// Replaced by a fresh connection, which has no subscriptions: because it stopped
    /// answering (`silent`), or because a cluster's slots changed owners.
    Replaced { silent: bool },
    /// Replaced because the subscriptions held at the cluster's nodes did not match the
    /// wanted ones (see [`Connection::check`]).
    Resynced,
    /// A cluster's slots changed owners: everything is to be subscribed again (on the
    /// same connection, see [`Connection::follow_topology`]).
    Moved,
    /// The PING failed; the reason.
    Failed(String),
}

/// Why a pub/sub command did not go through.
pub enum Failure {
    /// Redis answered with an error, or the connection failed.
    Refused(String),
    /// No answer within the timeout; `replaced` if the connection was replaced for it.
    TimedOut { replaced: bool },
}

impl Connection {
    /// A pub/sub connection: RESP3, its pushes (messages, disconnections) to `push`.
    pub fn pubsub(
        source: Source,
        options: &NativeOptions,
        push: PushSink,
    ) -> Result<Arc<Self>, String> {
        Connection::new(source, options, Some(push))
    }

    /// SUBSCRIBEs `channels` in one command (refused connections are retried within the
    /// timeout); redis-rs waits for every confirmation.
    pub async fn subscribe(&self, channels: &[String], timeout: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        let (manager, ticket) = self.get_until(deadline).await?;
        let result = self
            .until_connected(deadline, manager, |mut manager| async move {
                manager.subscribe(channels).await
            })
            .await;
        self.outcome(result, ticket).await
    }

    /// Runs `attempt` on the manager in use until it succeeds, fails for a reason other
    /// than "could not connect", or `deadline` passes. Retrying a refused connection is
    /// safe: nothing was sent. Each retry takes the manager in use then (the connection
    /// may have been replaced, or have followed a new Sentinel master, meanwhile); a
    /// refusal or a timeout makes a Sentinel source ask for the master again.
    pub async fn until_connected<T, Fut>(
        &self,
        deadline: Instant,
        first: Link,
        mut attempt: impl FnMut(Link) -> Fut,
    ) -> Result<RedisResult<T>, tokio::time::error::Elapsed>
    where
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let mut manager = first;
        loop {
            let result = tokio::time::timeout_at(deadline, attempt(manager)).await;
            match &result {
                Ok(Err(e))
                    if e.is_connection_refusal() && Instant::now() + REFUSED_PAUSE < deadline =>
                {
                    self.suspect(e);
                    tokio::time::sleep(REFUSED_PAUSE).await;
                }
                Err(_) => {
                    self.suspect_master();
                    return result;
                }
                _ => return result,
            }
            match self.current() {
                Some(current) => manager = current,
                None => return result,
            }
        }
    }

    /// [`Connection::get`] within a deadline, as a [`Failure`].
    async fn get_until(&self, deadline: Instant) -> Result<(Link, Ticket), Failure> {
        match tokio::time::timeout_at(deadline, self.get()).await {
            Ok(Ok(got)) => Ok(got),
            Ok(Err(e)) => Err(Failure::Refused(describe_redis_error(&e))),
            Err(_) => Err(Failure::TimedOut { replaced: false }),
        }
    }

    /// UNSUBSCRIBEs `channels` in one command.
    pub async fn unsubscribe(&self, channels: &[String], timeout: Duration) -> Result<(), Failure> {
        let (mut manager, ticket) = self.get_until(Instant::now() + timeout).await?;
        let result = tokio::time::timeout(timeout, manager.unsubscribe(channels)).await;
        self.outcome(result, ticket).await
    }

    /// Runs a pipeline of background work (not a call: no ordering with the calls)
    /// within `timeout`; a silent connection is replaced as for any call.
    pub async fn query(&self, pipe: &Pipeline, timeout: Duration) -> Result<Vec<Value>, String> {
        let deadline = Instant::now() + timeout;
        let (mut link, ticket) = match tokio::time::timeout_at(deadline, self.get()).await {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => return Err(self.describe(&e).await),
            Err(_) => return Err("timed out".into()),
        };
        match tokio::time::timeout_at(deadline, pipe.query_async::<Vec<Value>>(&mut link)).await {
            Ok(Ok(values)) => {
                self.answered_with(&values);
                Ok(values)
            }
            Ok(Err(e)) => {
                self.failed(&e, ticket);
                Err(self.describe(&e).await)
            }
            Err(_) => {
                self.stats.timed_out();
                self.stalled(ticket);
                Err("timed out".into())
            }
        }
    }

    /// The periodic check of a pub/sub connection: on a cluster whose slots changed
    /// owners, a fresh connection (see `follow_topology`); else a PING, and a connection
    /// silent for too long is replaced (see [`Connection::stalled`]).
    ///
    /// On a cluster it also counts, on each master, the shard channels this connection is
    /// subscribed to there (CLIENT INFO's `ssub`) against the `wanted` channels that
    /// master serves (`wanted` gives None while subscriptions are changing): the crate
    /// may replace a node's connection during a topology change and resubscribe it
    /// wrongly or not at all, without a word. A mismatch seen twice, 300 ms apart, has
    /// everything subscribed again: on this connection when some are missing, on a
    /// fresh one when a node holds more than it should.
    pub async fn check(
        &self,
        via: &Connection,
        timeout: Duration,
        wanted: impl Fn() -> Option<Vec<String>>,
    ) -> Checked {
        if self.follow_topology(via, timeout).await == Some(true) {
            return Checked::Moved;
        }
        if self.reseeded() {
            return Checked::Replaced { silent: false };
        }
        if matches!(self.source, Source::Cluster(_))
            && self
                .shard_subscriptions_off(&wanted, timeout)
                .await
                .is_some()
        {
            tokio::time::sleep(Duration::from_millis(300)).await;
            match self.shard_subscriptions_off(&wanted, timeout).await {
                // Some are missing: subscribed again where they belong, on this
                // connection (the others stay; no message of theirs is lost).
                Some(Off::Missing) => return Checked::Moved,
                // A node holds more than it should (a channel left behind where it no
                // longer belongs, which could deliver twice): only a fresh connection
                // drops it.
                Some(Off::Extra) => {
                    self.renew();
                    return Checked::Resynced;
                }
                None => {}
            }
        }
        match self.ping(timeout).await {
            Ok(()) | Err(Failure::TimedOut { replaced: false }) => Checked::Fine,
            Err(Failure::TimedOut { replaced: true }) => Checked::Replaced { silent: true },
            Err(Failure::Refused(reason)) => Checked::Failed(reason),
        }
    }

    /// Whether some master holds more or fewer of this connection's shard subscriptions
    /// than the wanted channels it serves (see [`Connection::check`]). None when they
    /// match, or when that cannot be told (subscriptions changing, no topology read yet, a node not
    /// answering: the other checks handle those).
    async fn shard_subscriptions_off(
        &self,
        wanted: &impl Fn() -> Option<Vec<String>>,
        timeout: Duration,
    ) -> Option<Off> {
        let owners = self.topology.lock().unwrap().clone()?;
        let Some(Link::Cluster(link)) = self.current() else {
            return None;
        };
        let channels = wanted()?;
        // Masters only: asking a node the crate has no connection to makes it open one,
        // and that made it replace its other connections here, subscriptions and all.
        let expected = crate::cluster::expected_per_master(&owners, &channels);
        let timeout = timeout.min(TOPOLOGY_READ_TIMEOUT);
        let counts = futures_util::future::join_all(expected.iter().map(|((host, port), _)| {
            tokio::time::timeout(
                timeout,
                crate::cluster::shard_subscriptions(&link, host, *port),
            )
        }))
        .await;
        // Read again: a change while the counts were asked makes them incomparable.
        if wanted().map(|now| now.len()) != Some(channels.len()) {
            return None;
        }
        let mut off = None;
        for ((_, want), got) in expected.iter().zip(&counts) {
            match got {
                Ok(Some(n)) if n > want => return Some(Off::Extra),
                Ok(Some(n)) if n < want => off = Some(Off::Missing),
                _ => {}
            }
        }
        off
    }

    /// PINGs; a connection silent for too long is replaced (see [`Connection::stalled`]).
    async fn ping(&self, timeout: Duration) -> Result<(), Failure> {
        let (mut manager, ticket) = self.get_until(Instant::now() + timeout).await?;
        let ping = redis::cmd("PING");
        let result = tokio::time::timeout(timeout, ping.query_async::<()>(&mut manager)).await;
        self.outcome(result, ticket).await
    }

    /// A redis-rs error as users read it (see `error`); on a cluster that no node of
    /// answered, with the reason a seed gives.
    pub async fn describe(&self, error: &RedisError) -> String {
        let text = describe_redis_error(error);
        match &self.source {
            Source::Cluster(cluster)
                if error.kind() == redis::ErrorKind::ClusterConnectionNotFound =>
            {
                match cluster
                    .why_unreachable(self.options.connect_timeout())
                    .await
                {
                    Some(reason) => {
                        format!("no node of the Redis Cluster could be reached: {reason}")
                    }
                    None => text,
                }
            }
            _ => text,
        }
    }

    async fn outcome(
        &self,
        result: Result<RedisResult<()>, tokio::time::error::Elapsed>,
        ticket: Ticket,
    ) -> Result<(), Failure> {
        match result {
            Ok(Ok(())) => {
                self.answered();
                Ok(())
            }
            // The crate's own deadline (a cluster's): no answer, as for ours.
            Ok(Err(e)) if e.is_timeout() => {
                self.unsettle();
                self.stats.timed_out();
                Err(Failure::TimedOut {
                    replaced: self.stalled(ticket),
                })
            }
            Ok(Err(e)) => {
                self.failed(&e, ticket);
                Err(Failure::Refused(self.describe(&e).await))
            }
            Err(_) => {
                self.unsettle();
                self.stats.timed_out();
                Err(Failure::TimedOut {
                    replaced: self.stalled(ticket),
                })
            }
        }
    }
}

/// A pause of `base` scaled by a random factor in [0.5, 1.5), so a fleet of processes
/// that lost Redis together does not retry in lockstep.
pub fn jittered(base: Duration) -> Duration {
    let unit = (random_u64() % 1000) as f64 / 1000.0;
    base.mul_f64(0.5 + unit)
}

/// 64 random bits from the standard library's per-instance hash keys (no `rand` crate
/// for jitter and the data epoch's value).
pub fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_pauses() {
        let base = Duration::from_millis(1000);
        let pauses: std::collections::HashSet<u128> =
            (0..20).map(|_| jittered(base).as_millis()).collect();
        assert!(pauses.len() > 5, "{pauses:?}");
        assert!(pauses
            .iter()
            .all(|&ms| (500..1500).contains(&(ms as u64 as u128))));
    }
}
