//! The connection as the `redis` crate gives it: a [`Link`] to one server (its
//! `ConnectionManager`) or to a whole cluster ([`ClusterLink`], with its second
//! connection for publishes), and the commands that differ between the two (a pipeline
//! split per slot, SSUBSCRIBE for SUBSCRIBE).
//!
//! It holds no state and decides nothing: which link is in use and when it is replaced
//! is [`super::Connection`]'s business, splitting per slot is `crate::cluster`'s.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

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
    pub(super) connection: ClusterConnection,
    pub(super) publish: Option<(ClusterConnection, Duration)>,
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
