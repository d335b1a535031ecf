//! A Redis Cluster as a source: [`ClusterSource`] holds the crate's clients (seeded with
//! the configured seeds and every node last seen), reads who serves which slots and
//! finds why no node answered; [`cluster_link`] opens a cluster [`Link`];
//! [`cluster_source`] builds the source the `cluster` option describes.
//!
//! It must not follow a topology change on a connection (`cluster_topology` does) nor
//! split pipelines per slot (`crate::cluster` does).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{
    Client, ConnectionAddr, ConnectionInfo, ProtocolVersion, PushInfo, RedisResult, TlsMode,
};
use tokio::time::Instant;

use super::link::{ClusterLink, Link};
use super::pubsub::PushSink;
use super::{describe, random_u64, Source};
use crate::config::{certificates, parse_node, NativeCluster, NativeOptions};
use crate::error::describe_redis_error;

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
    pub(super) changes: AtomicU64,
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
pub(super) const TOPOLOGY_READ_TIMEOUT: Duration = Duration::from_millis(1000);

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
    pub(super) async fn read_topology(
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
        if let Some(view) = majority(&views) {
            return Some(view);
        }
        // No view through the cluster connection (it may be stuck reconnecting a dead
        // node, see `cluster::topology_direct`): the same nodes, asked directly.
        let template = self.seeds.first()?;
        let views = futures_util::future::join_all(asked.into_iter().map(|(host, port)| {
            tokio::time::timeout(
                timeout,
                crate::cluster::topology_direct(node_like(template, host, port), timeout),
            )
        }))
        .await;
        let views: Vec<Topology> = views.into_iter().filter_map(|v| v.ok()?.ok()).collect();
        majority(&views)
    }

    /// Whether the node at `host:port` answers a PING over a connection of its own, within
    /// `timeout` (the crate's connections are not disturbed).
    pub(super) async fn answers(&self, host: &str, port: u16, timeout: Duration) -> bool {
        let Some(template) = self.seeds.first() else {
            return false;
        };
        let node = node_like(template, host.to_string(), port);
        let ping = redis::cmd("PING");
        let ping = crate::cluster::on_node_direct(node, &ping, timeout);
        matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
    }

    /// When redis-rs reached no node at all it only says "No connections found": connect to
    /// each seed directly and report the first one's own error (a refused connection, a
    /// certificate the CA did not sign, a wrong password). Reused for a moment, so a burst
    /// of failing calls probes once.
    pub(super) async fn why_unreachable(&self, timeout: Duration) -> Option<String> {
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

/// The view most of `views` agree on, if more than half do.
fn majority(views: &[Topology]) -> Option<Topology> {
    let (votes, view) = views
        .iter()
        .map(|view| (views.iter().filter(|v| v.0 == view.0).count(), view))
        .max_by_key(|(votes, _)| *votes)?;
    (votes * 2 > views.len()).then(|| view.clone())
}

/// A lazily connecting cluster connection (the crate connects in the background), the
/// `number`th of its [`Connection`]. Its pushes reach `push` only while it is the one in
/// use (`in_use`): a replaced cluster connection's last messages and disconnections
/// would otherwise be read as the current one's (duplicates, a needless restore).
pub(super) fn cluster_link(
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

/// A Redis Cluster from the URL (the first seed; its credentials, TLS and settings apply
/// to every node) and the `cluster.nodes` seeds.
pub(super) fn cluster_source(
    seed: &Client,
    cluster: &NativeCluster,
    options: &NativeOptions,
) -> Result<Source, String> {
    let info = seed.get_connection_info().clone();
    if info.redis_settings().db() != 0 {
        return Err(format!(
            "A Redis Cluster has only database 0, but the URL selects database {}: remove it from the URL",
            info.redis_settings().db()
        ));
    }
    let secure = match info.addr() {
        ConnectionAddr::Tcp(..) => false,
        ConnectionAddr::TcpTls { .. } => true,
        _ => {
            return Err(
                "A Redis Cluster is reached over TCP: use a redis:// or rediss:// URL".into(),
            )
        }
    };
    let mut nodes = vec![info.clone()];
    let seed_credentials = {
        let redis = info.redis_settings();
        (
            redis.username().map(str::to_string),
            redis.password().map(str::to_string),
        )
    };
    for entry in &cluster.nodes {
        let node = parse_node("cluster.nodes", entry, options.tls.as_ref())?;
        // redis-rs reaches every node of a cluster the same way (the first seed's
        // credentials and TLS): a URL asking for another way is refused, not ignored.
        if node
            .credentials
            .as_ref()
            .is_some_and(|c| *c != seed_credentials)
        {
            return Err("Option \"cluster.nodes\": a node's URL gives a user or password other than the main URL's; every node of a cluster is reached with the main URL's credentials, so give them there".into());
        }
        if node.secure.is_some_and(|s| s != secure) {
            return Err(format!(
                "Option \"cluster.nodes\": a {} URL beside a {} main URL; every node of a cluster is reached the way the main URL says",
                if secure { "redis://" } else { "rediss://" },
                if secure { "rediss://" } else { "redis://" },
            ));
        }
        if node.db != 0 {
            return Err(format!(
                "Option \"cluster.nodes\": a Redis Cluster has only database 0, but a node's URL selects database {}: remove it",
                node.db
            ));
        }
        nodes.push(node_like(&info, node.host, node.port));
    }
    let tcp = info.tcp_settings().clone();
    let overall = options.command_timeout().mul_f64(0.9);
    let certs = options.tls.as_ref().map(certificates);
    // Builds a client from a list of nodes: the seeds at first, then (for a replacement
    // connection) the seeds and every node of the topology last seen.
    let build = move |nodes: Vec<redis::ConnectionInfo>, no_retries: bool| {
        let mut builder = ClusterClientBuilder::new(nodes)
            .use_protocol(ProtocolVersion::RESP3)
            .tcp_settings(tcp.clone())
            // The connection and response timeouts are set per connection, where they
            // override the builder's (`ClusterConfig` in `cluster_link`).
            // The crate's retries (MOVED, a node down) end a little before our per-call
            // deadline, so a part of a pipeline whose master is down fails on its own
            // and the calls of the other parts are still answered in time.
            .overall_response_timeout(Some(overall));
        if secure {
            builder = builder.tls(TlsMode::Secure);
            if let Some(certs) = &certs {
                builder = builder.certs(certs.clone());
            }
        }
        if no_retries {
            builder = builder.retries(0);
        }
        builder.build()
    };
    ClusterSource::new(Box::new(build), nodes)
        .map(Source::Cluster)
        .map_err(|e| format!("Invalid cluster settings: {}", describe(&e)))
}
