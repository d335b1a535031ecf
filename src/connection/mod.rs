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
//!
//! This module owns the [`Connection`] type (the link in use, the master it is on, what
//! a failed call does to it) and builds the [`Source`] that the options describe
//! ([`source_for`]). Each concern around it has a file of its own; imports go one way,
//! a file importing only from this one and from files listed before it (most add
//! methods to `Connection`, and reach one another's methods through it):
//! * `link`: the connection as the crate gives it, to one server or a whole cluster;
//! * `calls`: one command or pipeline within a deadline, and the outcome recorded;
//! * `pubsub`: pub/sub connections, SUBSCRIBE / UNSUBSCRIBE and where pushes go;
//! * `sentinel`: a Sentinel group's master and the `+switch-master` listener;
//! * `cluster_source`: a Redis Cluster's clients, seeds and topology reads;
//! * `cluster_topology`: following a cluster's topology after a fault;
//! * `watchdog`: replacing a silent connection, and the periodic pub/sub check.
//!
//! It must not validate options (`crate::config` does, into plain data) nor know what
//! any manager's commands mean: it carries them.

mod calls;
mod cluster_source;
mod cluster_topology;
mod link;
mod pubsub;
mod sentinel;
mod watchdog;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, PushInfo, PushKind, RedisError, RedisResult};
use tokio::time::Instant;

use crate::config::{check_tls, client_for, secure_scheme, sentinel_nodes, NativeOptions};
use crate::error::describe_redis_error;
use cluster_source::{cluster_link, cluster_source, ClusterSource};
pub use cluster_topology::Dropped;
use pubsub::PushSink;
use sentinel::{sentinel_source, SentinelSource};

pub use calls::Failure;
pub use link::Link;
pub use pubsub::{message_parts, PushRoute};
pub use watchdog::Checked;

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

/// Where the connections of these options go: the URL's server, or with `sentinel` the
/// master of the group the URL's host names.
pub fn source_for(url: &str, options: &NativeOptions) -> Result<Source, String> {
    let sentinels = match &options.sentinel {
        Some(sentinel) => sentinel_nodes(sentinel)?,
        None => Vec::new(),
    };
    let sentinel_tls = sentinels.iter().any(|node| node.access.secure);
    // With TLS to the sentinels, the `tls` material serves them even when the data
    // nodes are reached in plain text (a redis:// URL).
    let data_tls = match &options.tls {
        Some(tls) if sentinel_tls && !secure_scheme(url) => {
            check_tls(tls)?;
            None
        }
        tls => tls.as_ref(),
    };
    let client = client_for(url, data_tls)?;
    if let Some(cluster) = &options.cluster {
        if options.sentinel.is_some() {
            return Err("Options \"cluster\" and \"sentinel\" exclude each other".into());
        }
        return cluster_source(&client, cluster, options);
    }
    if options.sentinel.is_none() {
        return Ok(Source::Fixed(Box::new(client)));
    }
    sentinel_source(&client, sentinels, options)
}

/// A redis error's words, without anything from the URL.
fn describe(e: &redis::RedisError) -> String {
    e.detail()
        .map_or_else(|| e.category().to_string(), str::to_string)
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
    /// The same as a lookup, with every node, for subscribing at masters only (see
    /// `Connection::subscribe`).
    slot_table: Mutex<Option<Arc<crate::cluster::SlotTable>>>,
    /// When a fresh pub/sub connection was last asked for because a master answered
    /// that this connection had none to (milliseconds since `epoch`).
    nudged_at_ms: AtomicU64,
    /// On a cluster: the number of the cluster connection in use (see `cluster_link`).
    link_in_use: Arc<AtomicU64>,
    /// On a cluster: a call found no node reachable (see [`Connection::failed`]).
    lost_every_node: AtomicBool,
    /// When the connection was last replaced for that (milliseconds since `epoch`).
    reseeded_at_ms: AtomicU64,
    /// On a cluster: until when (milliseconds since `epoch`) the topology may still be
    /// changing after a fault (see [`Connection::unsettled`]).
    unsettled_until_ms: AtomicU64,
    /// Wakes the task waiting in [`Connection::follow_faults`].
    unsettling: tokio::sync::Notify,
    /// Has that task read the topology at once (see [`Connection::read_topology_now`]).
    topology_wanted: tokio::sync::Notify,
    /// What `stats()` and the diagnostics channels see of this connection.
    pub stats: crate::stats::ConnectionStats,
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
            slot_table: Mutex::new(None),
            nudged_at_ms: AtomicU64::new(0),
            link_in_use: Arc::new(AtomicU64::new(0)),
            lost_every_node: AtomicBool::new(false),
            reseeded_at_ms: AtomicU64::new(0),
            unsettled_until_ms: AtomicU64::new(0),
            unsettling: tokio::sync::Notify::new(),
            topology_wanted: tokio::sync::Notify::new(),
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

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
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
