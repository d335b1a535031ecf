//! Topology reads: who serves which slots now, and every node that serves one.
//!
//! It owns reading and parsing CLUSTER SLOTS (over the cluster connection, at one node,
//! or over a connection of its own that lives for one read), the list of masters and
//! sending one command to one node. It must not keep a topology nor act on a change:
//! `crate::connection` compares and follows.

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use std::time::Duration;

use redis::{Cmd, RedisResult, Value};

use super::SlotOwners;

/// The address of a cluster node.
pub struct Node {
    host: String,
    port: u16,
}

/// The slot ranges and their masters now, from CLUSTER SLOTS (asked of any node).
pub async fn slot_owners(connection: &ClusterConnection) -> RedisResult<SlotOwners> {
    Ok(topology(connection).await?.0)
}

/// The slot ranges and their masters now, and every node that serves a range (masters
/// and replicas), from CLUSTER SLOTS (asked of any node).
pub async fn topology(
    connection: &ClusterConnection,
) -> RedisResult<(SlotOwners, Vec<(String, u16)>)> {
    topology_from(connection, SingleNodeRoutingInfo::Random).await
}

/// [`topology`] as one node sees it.
pub async fn topology_at(
    connection: &ClusterConnection,
    host: &str,
    port: u16,
) -> RedisResult<(SlotOwners, Vec<(String, u16)>)> {
    let node = SingleNodeRoutingInfo::ByAddress {
        host: host.to_string(),
        port,
    };
    topology_from(connection, node).await
}

/// [`topology`] as one node sees it, over a connection of its own that lives for this
/// read only: redis-rs can hold every request of a cluster connection for seconds while
/// it reconnects a dead node (a soak saw a manager's command connection answer nothing
/// from a master's SIGKILL until our watchdog replaced it 6.5 s later), and following
/// the failover must not wait for that.
pub async fn topology_direct(
    node: redis::ConnectionInfo,
    timeout: Duration,
) -> RedisResult<(SlotOwners, Vec<(String, u16)>)> {
    let reply = on_node_direct(node, redis::cmd("CLUSTER").arg("SLOTS"), timeout).await?;
    parse_topology(reply)
}

/// Runs `cmd` on `node` over a connection of its own that lives for this command only
/// (connecting and answering each within `timeout`).
pub async fn on_node_direct(
    node: redis::ConnectionInfo,
    cmd: &Cmd,
    timeout: Duration,
) -> RedisResult<Value> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut connection = redis::Client::open(node)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    cmd.query_async(&mut connection).await
}

async fn topology_from(
    connection: &ClusterConnection,
    node: SingleNodeRoutingInfo,
) -> RedisResult<(SlotOwners, Vec<(String, u16)>)> {
    let mut slots = redis::cmd("CLUSTER");
    slots.arg("SLOTS");
    let reply = connection
        .clone()
        .route_command(slots, RoutingInfo::SingleNode(node))
        .await?;
    parse_topology(reply)
}

/// Slot owners and every node from a CLUSTER SLOTS reply.
fn parse_topology(reply: Value) -> RedisResult<(SlotOwners, Vec<(String, u16)>)> {
    let ranges: Vec<Value> = redis::from_redis_value(reply)?;
    let mut owners = SlotOwners::new();
    let mut nodes = Vec::new();
    for range in ranges {
        // [start, end, [host, port, id, ...], replicas...]
        let Value::Array(parts) = range else { continue };
        let mut parts = parts.into_iter();
        let (Some(start), Some(end), Some(Value::Array(master))) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some((host, port)) = node_address(master) else {
            continue;
        };
        for replica in parts {
            if let Some(node) = node_address_of(replica) {
                nodes.push(node);
            }
        }
        nodes.push((host.clone(), port));
        owners.push((
            redis::from_redis_value(start)?,
            redis::from_redis_value(end)?,
            host,
            port,
        ));
    }
    owners.sort();
    Ok((owners, nodes))
}

/// `(host, port)` of a CLUSTER SLOTS node entry (`[host, port, id, ...]`).
fn node_address(entry: Vec<Value>) -> Option<(String, u16)> {
    let mut entry = entry.into_iter();
    let host: String = redis::from_redis_value(entry.next()?).ok()?;
    let port: u16 = redis::from_redis_value(entry.next()?).ok()?;
    Some((host, port))
}

fn node_address_of(entry: Value) -> Option<(String, u16)> {
    match entry {
        Value::Array(entry) => node_address(entry),
        _ => None,
    }
}

/// The masters of the cluster now, for work that must visit every one of them: SCANs
/// see one node's keys only.
pub async fn masters(connection: &ClusterConnection) -> RedisResult<Vec<Node>> {
    let mut nodes: Vec<Node> = Vec::new();
    for (_, _, host, port) in slot_owners(connection).await? {
        if !nodes.iter().any(|n| n.host == host && n.port == port) {
            nodes.push(Node { host, port });
        }
    }
    Ok(nodes)
}

/// Runs one command on one node.
pub async fn on_node(connection: &ClusterConnection, cmd: Cmd, node: &Node) -> RedisResult<Value> {
    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host: node.host.clone(),
        port: node.port,
    });
    connection.clone().route_command(cmd, routing).await
}
