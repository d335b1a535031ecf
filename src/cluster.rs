//! Redis Cluster: what the `redis` crate's [`ClusterConnection`] does not do for us.
//!
//! The crate routes each command by its key, follows MOVED/ASK, refreshes the slot map and
//! splits multi-key commands such as `DEL a b` across slots. Two things it leaves to us:
//! * **pipelines across slots.** It sends a whole pipeline to the node of its first key
//!   and fails it with CROSSSLOT if another key hashes elsewhere. Our pipelines carry the
//!   calls of a whole tick (many sessions), so [`query`] splits one per slot, sends the
//!   parts together (each to its slot's master) and puts the replies back in order.
//!   Per slot, not per node: the crate retries a whole pipeline when one reply is
//!   MOVED/ASK, so a pipeline spanning slots of a node would publish its other messages
//!   twice when one slot moves; a single-slot pipeline moves as a whole;
//! * **sharded subscriptions one slot per command.** After a topology change the crate
//!   resubscribes by node, in one SSUBSCRIBE per node, which a node refuses (CROSSSLOT)
//!   when its channels span slots; and on a slot migration the server drops the
//!   subscription with a `sunsubscribe` push that nothing answers. The managers keep their
//!   own registry of wanted channels and restore them through [`ssubscribe`], which sends
//!   one SSUBSCRIBE per slot.

use std::collections::HashMap;

use futures_util::future::{join_all, try_join_all};
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use std::time::Duration;

use redis::{Arg, Cmd, Pipeline, RedisResult, Value};

/// Where one command of a pipeline goes.
#[derive(Debug, PartialEq)]
enum Part {
    /// With the other commands of this slot, in one pipeline to the slot's master.
    Slot(Slot),
    /// A publish: on its own, at most once (see [`publish`]).
    Publish(Slot),
    /// On its own, routed by the crate: a multi-key DEL (split across slots), a keyless
    /// or unknown command.
    Alone,
}

/// The commands our pipelines carry whose first argument is their one key (or channel).
const FIRST_ARG_KEYED: &[&[u8]] = &[
    b"GET",
    b"SET",
    b"SMEMBERS",
    b"SADD",
    b"SREM",
    b"EXISTS",
    b"DEL",
    b"PUBLISH",
    b"SPUBLISH",
];

/// Which slot a command belongs to, when it has exactly one key. Runs for every command
/// of a cluster pipeline: reads the first arguments in place.
fn part_of(cmd: &Cmd) -> Part {
    let mut args = cmd.args_iter().map(|arg| match arg {
        Arg::Simple(bytes) => bytes,
        _ => b"",
    });
    let Some(name) = args.next() else {
        return Part::Alone;
    };
    let key = if name.eq_ignore_ascii_case(b"EVAL") || name.eq_ignore_ascii_case(b"EVALSHA") {
        // EVAL script 1 key args...: one declared key.
        match (args.nth(1), args.next()) {
            (Some(b"1"), Some(key)) => Some(key),
            _ => None,
        }
    } else if FIRST_ARG_KEYED.iter().any(|k| name.eq_ignore_ascii_case(k)) {
        let multi_key = name.eq_ignore_ascii_case(b"DEL") || name.eq_ignore_ascii_case(b"EXISTS");
        match (args.next(), args.next()) {
            (Some(_), Some(_)) if multi_key => None,
            (key, _) => key,
        }
    } else {
        None
    };
    let publishes = name.eq_ignore_ascii_case(b"SPUBLISH") || name.eq_ignore_ascii_case(b"PUBLISH");
    match key {
        Some(key) if publishes => Part::Publish(Slot::for_key(key)),
        Some(key) => Part::Slot(Slot::for_key(key)),
        None => Part::Alone,
    }
}

/// Runs `pipeline` on the cluster: one pipeline per slot (sent to the slot's master),
/// multi-slot and keyless commands on their own, all at once; replies in command order.
/// Commands of one slot keep their order, so do pipelines of one slot sent one after
/// the other (the crate queues requests in the order they are made).
///
/// With `publish` (a connection that never retries, and the time a publish may take),
/// publishes go there one by one (see [`publish`]); without, they go with their slot.
pub async fn query(
    connection: &ClusterConnection,
    publish: Option<&(ClusterConnection, Duration)>,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let mut slots: Vec<(Slot, Vec<usize>)> = Vec::new();
    let mut slot_index: HashMap<Slot, usize> = HashMap::new();
    let mut alone: Vec<usize> = Vec::new();
    let mut publishes: Vec<(usize, Slot)> = Vec::new();
    for (i, cmd) in commands.iter().enumerate() {
        let part = match (part_of(cmd), publish) {
            (Part::Publish(slot), Some(_)) => {
                publishes.push((i, slot));
                continue;
            }
            (Part::Publish(slot), None) => Part::Slot(slot),
            (part, _) => part,
        };
        match part {
            Part::Publish(_) => unreachable!("handled above"),
            Part::Slot(slot) => {
                let at = *slot_index.entry(slot).or_insert_with(|| {
                    slots.push((slot, Vec::new()));
                    slots.len() - 1
                });
                slots[at].1.push(i);
            }
            Part::Alone => alone.push(i),
        }
    }
    if alone.is_empty() && publishes.is_empty() && slots.len() == 1 {
        // The common case of one session's call: the pipeline as it is.
        let route = Route::with_slot(slots[0].0, SlotAddr::Master);
        return connection
            .clone()
            .route_pipeline(
                pipeline.clone(),
                offset,
                count,
                SingleNodeRoutingInfo::SpecificNode(route),
            )
            .await;
    }
    let by_slot = slots.iter().map(|(slot, members)| {
        let mut part = Pipeline::with_capacity(members.len());
        for &i in members {
            part.add_command(commands[i].clone());
        }
        let route = SingleNodeRoutingInfo::SpecificNode(Route::with_slot(*slot, SlotAddr::Master));
        let mut connection = connection.clone();
        async move {
            connection
                .route_pipeline(part, 0, members.len(), route)
                .await
        }
    });
    let singles = alone.iter().map(|&i| {
        let mut connection = connection.clone();
        let cmd = commands[i];
        async move { connection.req_packed_command(cmd).await }
    });
    let published = publishes.iter().map(|&(i, slot)| {
        let (connection, budget) = publish.expect("publishes are split off only with a connection");
        publish_once(connection, commands[i], slot, *budget)
    });
    // `join_all` polls in order, so each part is queued in the order built. A part that
    // fails (its master unreachable during a failover) fails only its own commands.
    let (slot_replies, single_replies, publish_replies) =
        futures_util::future::join3(join_all(by_slot), join_all(singles), join_all(published))
            .await;
    let mut replies: Vec<Option<Value>> = vec![None; commands.len()];
    let mut failures = 0;
    let mut first_failure = None;
    let mut place = |members: &[usize], result: RedisResult<Vec<Value>>| match result {
        Ok(values) => {
            for (&i, value) in members.iter().zip(values) {
                replies[i] = Some(value);
            }
        }
        Err(e) => {
            failures += 1;
            let reply = failed(&e);
            for &i in members {
                replies[i] = Some(reply.clone());
            }
            first_failure.get_or_insert(e);
        }
    };
    for ((_, members), result) in slots.iter().zip(slot_replies) {
        place(members, result);
    }
    for (&i, result) in alone.iter().zip(single_replies) {
        place(&[i], result.map(|value| vec![value]));
    }
    for (&(i, _), reply) in publishes.iter().zip(publish_replies) {
        place(&[i], Ok(vec![reply]));
    }
    match first_failure {
        // Nothing went through: the error as it is (a refused connection is retried).
        Some(e) if failures == slots.len() + alone.len() && publishes.is_empty() => Err(e),
        _ => Ok(replies
            .into_iter()
            .skip(offset)
            .take(count)
            .map(|v| v.unwrap_or(Value::Nil))
            .collect()),
    }
}

/// Sends one publish at most once: again only while Redis says it did not run it (the
/// slot moved, the cluster is down, the node is loading, nothing could be connected) and
/// `budget` allows. A lost connection or a missing answer may mean it ran: that fails,
/// saying so (see `error::may_have_run`).
async fn publish_once(
    connection: &ClusterConnection,
    cmd: &Cmd,
    slot: Slot,
    budget: Duration,
) -> Value {
    let deadline = tokio::time::Instant::now() + budget;
    let mut pause = Duration::from_millis(20);
    let mut asking: Option<(String, u16)> = None;
    loop {
        let mut connection = connection.clone();
        let attempt = match asking.take() {
            // ASK: this one command goes to the importing node, after ASKING.
            Some((host, port)) => {
                let mut pipe = Pipeline::with_capacity(2);
                pipe.cmd("ASKING").ignore();
                pipe.add_command(cmd.clone());
                let node = SingleNodeRoutingInfo::ByAddress { host, port };
                connection
                    .route_pipeline(pipe, 0, 1, node)
                    .await
                    .map(|mut v| v.pop().unwrap_or(Value::Nil))
            }
            None => {
                let route = Route::with_slot(slot, SlotAddr::Master);
                let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                connection.route_command(cmd.clone(), node).await
            }
        };
        let error = match attempt {
            Ok(Value::ServerError(e)) => redis::RedisError::from(e),
            Ok(value) => return value,
            Err(e) => e,
        };
        if !not_run(&error) {
            return failed_saying(&error, "the command may still have run");
        }
        if tokio::time::Instant::now() + pause >= deadline {
            return failed_saying(&error, "the command was not sent");
        }
        if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Ask) {
            asking = error
                .redirect_node()
                .and_then(|(node, _)| node.rsplit_once(':'))
                .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?)));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Whether Redis said a command did not run (so sending it again cannot duplicate it).
fn not_run(error: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::BusyLoading
        ) | ErrorKind::ClusterConnectionNotFound
    ) || error.is_connection_refusal()
}

/// A publish's reply when it failed: why, and whether it may have run.
fn failed_saying(error: &redis::RedisError, outcome: &str) -> Value {
    let reason = crate::error::describe_redis_error(error)
        .lines()
        .collect::<Vec<_>>()
        .join(" ");
    redis::parse_redis_value(format!("-ERR {reason}; {outcome}\r\n").as_bytes())
        .unwrap_or(Value::Nil)
}

/// A command's reply when its part of a pipeline failed: a server error carrying why.
fn failed(error: &redis::RedisError) -> Value {
    let reason = crate::error::describe_redis_error(error)
        .lines()
        .collect::<Vec<_>>()
        .join(" ");
    redis::parse_redis_value(format!("-ERR {reason}\r\n").as_bytes()).unwrap_or(Value::Nil)
}

/// The address of a cluster node.
pub struct Node {
    host: String,
    port: u16,
}

/// Who serves which slots: `(first slot, last slot, master host, master port)`, sorted.
pub type SlotOwners = Vec<(u16, u16, String, u16)>;

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
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut connection = redis::Client::open(node)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let reply = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut connection)
        .await?;
    parse_topology(reply)
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

/// How many shard channels this client's connection to `node` is subscribed to: the
/// `ssub` field of CLIENT INFO, sent on that very connection.
pub async fn shard_subscriptions(
    connection: &ClusterConnection,
    host: &str,
    port: u16,
) -> Option<u64> {
    let mut info = redis::cmd("CLIENT");
    info.arg("INFO");
    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
        host: host.to_string(),
        port,
    });
    let reply = connection.clone().route_command(info, routing).await.ok()?;
    let text: String = redis::from_redis_value(reply).ok()?;
    let field = |name: &str| {
        text.split_ascii_whitespace()
            .find_map(|field| field.strip_prefix(name))
    };
    // The crate may answer from another node's connection when it has none to this one:
    // `laddr` (the server's end of the connection) says which node answered.
    let answered_by = field("laddr=")?;
    let expected = format!("{host}:{port}");
    if answered_by != expected && answered_by != format!("[{host}]:{port}") {
        return None;
    }
    field("ssub=").and_then(|n| n.parse().ok())
}

/// How many of `channels` each master of `owners` serves, by master address.
pub fn expected_per_master(owners: &SlotOwners, channels: &[String]) -> Vec<((String, u16), u64)> {
    let mut counts: Vec<((String, u16), u64)> = Vec::new();
    // The crate computes a key's slot but does not show its number: a table of every
    // slot's master (16,384 entries, built once per check) turns a slot into its master.
    let mut master_of: HashMap<Slot, usize> = HashMap::with_capacity(16_384);
    for (first, last, host, port) in owners {
        let at = match counts.iter().position(|((h, p), _)| h == host && p == port) {
            Some(at) => at,
            None => {
                counts.push(((host.clone(), *port), 0));
                counts.len() - 1
            }
        };
        for slot in (*first..=*last).filter_map(Slot::new) {
            master_of.insert(slot, at);
        }
    }
    for channel in channels {
        if let Some(&at) = master_of.get(&Slot::for_key(channel.as_bytes())) {
            counts[at].1 += 1;
        }
    }
    counts
}

/// Channels grouped by slot, in first-seen order.
fn by_slot(channels: &[String]) -> Vec<Vec<&String>> {
    let mut groups: Vec<Vec<&String>> = Vec::new();
    let mut index: HashMap<Slot, usize> = HashMap::new();
    for channel in channels {
        let at = *index
            .entry(Slot::for_key(channel.as_bytes()))
            .or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
        groups[at].push(channel);
    }
    groups
}

/// Runs `command` for each slot's share of `channels`, all at once.
async fn per_slot<'a, Fut>(
    connection: &ClusterConnection,
    channels: &'a [String],
    command: impl Fn(ClusterConnection, Vec<&'a String>) -> Fut,
) -> RedisResult<()>
where
    Fut: std::future::Future<Output = RedisResult<()>>,
{
    try_join_all(
        by_slot(channels)
            .into_iter()
            .map(|group| command(connection.clone(), group)),
    )
    .await
    .map(drop)
}

/// SSUBSCRIBEs `channels`, one command per slot, all at once; the crate waits for every
/// confirmation.
pub async fn ssubscribe(connection: &ClusterConnection, channels: &[String]) -> RedisResult<()> {
    per_slot(connection, channels, |mut c, group| async move {
        c.ssubscribe(group).await
    })
    .await
}

/// SUNSUBSCRIBEs `channels`, one command per slot.
pub async fn sunsubscribe(connection: &ClusterConnection, channels: &[String]) -> RedisResult<()> {
    per_slot(connection, channels, |mut c, group| async move {
        c.sunsubscribe(group).await
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_go_to_the_slot_of_their_one_key() {
        let mut get = redis::cmd("GET");
        get.arg("a");
        assert_eq!(part_of(&get), Part::Slot(Slot::for_key("a")));
        let mut eval = redis::cmd("EVAL");
        eval.arg("return 1").arg(1).arg("k").arg("x");
        assert_eq!(part_of(&eval), Part::Slot(Slot::for_key("k")));
        let mut publish = redis::cmd("SPUBLISH");
        publish.arg("session:a").arg("x");
        // Publishes go on their own, at most once (see `publish_once`).
        assert_eq!(part_of(&publish), Part::Publish(Slot::for_key("session:a")));
    }

    #[test]
    fn only_replies_that_say_the_command_did_not_run_allow_sending_it_again() {
        let error = |reply: &[u8]| match redis::parse_redis_value(reply).unwrap() {
            Value::ServerError(e) => redis::RedisError::from(e),
            other => panic!("{other:?}"),
        };
        assert!(not_run(&error(b"-MOVED 3999 127.0.0.1:6381\r\n")));
        assert!(not_run(&error(
            b"-TRYAGAIN Multiple keys request during rehashing\r\n"
        )));
        assert!(not_run(&error(b"-CLUSTERDOWN The cluster is down\r\n")));
        assert!(not_run(&error(b"-LOADING Redis is loading\r\n")));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(not_run(&redis::RedisError::from(refused)));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!not_run(&redis::RedisError::from(reset)));
        let timeout = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert!(!not_run(&redis::RedisError::from(timeout)));
        assert!(!not_run(&error(b"-ERR something else\r\n")));
    }

    #[test]
    fn multi_key_and_keyless_commands_stand_alone() {
        let mut del = redis::cmd("DEL");
        del.arg("available:session:a").arg("available:session:b");
        assert_eq!(part_of(&del), Part::Alone);
        let mut one = redis::cmd("DEL");
        one.arg("available:session:a");
        assert_eq!(
            part_of(&one),
            Part::Slot(Slot::for_key("available:session:a"))
        );
        assert_eq!(part_of(&redis::cmd("PING")), Part::Alone);
        let mut keyless = redis::cmd("EVAL");
        keyless.arg("return 1").arg(0);
        assert_eq!(part_of(&keyless), Part::Alone);
    }

    #[test]
    fn a_failed_part_reads_as_a_server_error_with_its_reason() {
        let error = redis::RedisError::from((redis::ErrorKind::Client, "no route\r\nto host"));
        let value = failed(&error);
        assert!(matches!(value, Value::ServerError(_)), "{value:?}");
        let message = crate::error::first_error(&[value]).unwrap_err();
        assert!(message.contains("no route to host"), "{message}");
    }

    #[test]
    fn channels_group_by_slot() {
        let channels: Vec<String> = ["{x}a", "b", "{x}c"].map(String::from).to_vec();
        let groups = by_slot(&channels);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0], vec![&channels[0], &channels[2]]);
    }

    #[test]
    fn expected_subscriptions_are_counted_at_each_slot_owner() {
        let owners: SlotOwners = vec![
            (0, 8191, "a".into(), 1),
            (8192, 16000, "b".into(), 2),
            (16001, 16383, "a".into(), 1),
        ];
        // "foo" is in slot 12182, "bar" in 5061, "{x}y" and "x" share slot 16287.
        let channels: Vec<String> = ["foo", "bar", "{x}y", "x"].map(String::from).into();
        assert_eq!(
            expected_per_master(&owners, &channels),
            vec![(("a".into(), 1), 3), (("b".into(), 2), 1)]
        );
    }
}
