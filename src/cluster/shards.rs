//! Sharded subscriptions: SSUBSCRIBE and SUNSUBSCRIBE one slot per command, and the
//! counts the watchdog compares with what each master holds.
//!
//! It owns grouping channels by slot and the check of one node's `ssub` count on this
//! client's own connection. It must not keep the registry of wanted channels (the
//! managers do) nor decide when to subscribe again (`crate::connection` does).

use std::collections::HashMap;

use futures_util::future::{join_all, try_join_all};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::RedisResult;

use super::SlotOwners;

/// Who serves which slot as a lookup, and every node of the topology: built once per
/// topology read that changed it, for the calls that map channels to masters.
pub struct SlotTable {
    masters: Vec<(String, u16)>,
    master_of: HashMap<Slot, usize>,
    nodes: Vec<(String, u16)>,
}

impl SlotTable {
    pub fn new(owners: &SlotOwners, nodes: Vec<(String, u16)>) -> SlotTable {
        let (masters, master_of) = masters_by_slot(owners);
        SlotTable {
            masters,
            master_of,
            nodes,
        }
    }

    /// Every node (masters and replicas) of the topology it was built from.
    pub fn nodes(&self) -> &[(String, u16)] {
        &self.nodes
    }

    fn master_of(&self, channel: &str) -> Option<usize> {
        self.master_of
            .get(&Slot::for_key(channel.as_bytes()))
            .copied()
    }

    /// Whether `reached` is master `at`.
    fn is_master(&self, at: usize, reached: &Reached) -> bool {
        let (host, port) = &self.masters[at];
        matches!(reached, Reached::Node(laddr) if is_address(laddr, host, *port))
    }

    /// Where a command for a slot of master `at` went (see [`ssubscribe_at_masters`]):
    /// with `comparable`, an address the topology does not know counts as elsewhere.
    fn goes_to(&self, at: usize, reached: Reached, comparable: bool) -> Goes {
        let (host, port) = &self.masters[at];
        match reached {
            Reached::Node(laddr) => {
                let is = |(h, p): &(String, u16)| is_address(&laddr, h, *p);
                if is_address(&laddr, host, *port) {
                    Goes::Master
                } else if self.masters.iter().any(is) {
                    Goes::OtherMaster
                } else if comparable || self.nodes.iter().any(is) {
                    Goes::Elsewhere
                } else {
                    Goes::Master
                }
            }
            // No node answered: the master's connection may have just failed, and the
            // SSUBSCRIBE would go to a replica.
            Reached::Nothing => Goes::Elsewhere,
            // A node that did not say where it is: cannot tell.
            Reached::Unknown => Goes::Master,
        }
    }
}

/// SSUBSCRIBEs the channels of `channels` whose slot's master (by `table`) is where the
/// crate would send their SSUBSCRIBE now, one command per slot; returns the others and
/// their masters. redis-rs routes an SSUBSCRIBE (a read-only command) to a replica of
/// its shard when it has no connection to the master (a master down, or not connected
/// on this connection yet), and a replica accepts it: a cluster soak saw 269 of them
/// reach the replica of a master just SIGKILLed. A subscription there delivers every
/// message a second time once the channel is subscribed at the master too, and it is
/// dropped without a word when the replica resyncs from a master that came back (live
/// sessions then got nothing). Where the SSUBSCRIBE would go is asked first, with a
/// CLIENT INFO routed the same way (its `laddr` names the node that answered); an answer
/// from a node the topology does not know (an address translated on the way) cannot be
/// told apart and is taken as the master.
///
/// An answer from another master is either the crate's slot map being older than ours
/// (a slot migration: that master answers MOVED and the crate follows to the owner) or
/// the crate having no connection to the master nor its replicas (it then sends a
/// command to any node): `master_answers` (a PING over a connection of its own) tells
/// them apart.
pub async fn ssubscribe_at_masters<F, Fut>(
    connection: &ClusterConnection,
    table: &SlotTable,
    channels: &[String],
    master_answers: F,
) -> RedisResult<(Vec<String>, Vec<(String, u16)>)>
where
    F: Fn(String, u16) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    // Channels by master, in first-seen order; channels of no known master go as they are.
    let mut by_master: Vec<(usize, Vec<&String>)> = Vec::new();
    let mut go: Vec<String> = Vec::new();
    for channel in channels {
        match table.master_of(channel) {
            Some(at) => match by_master.iter_mut().find(|(m, _)| *m == at) {
                Some((_, group)) => group.push(channel),
                None => by_master.push((at, vec![channel])),
            },
            None => go.push(channel.clone()),
        }
    }
    let answers = join_all(
        by_master
            .iter()
            .map(|(_, group)| answered_by(connection, group[0])),
    )
    .await;
    // An address no node of the topology has is elsewhere once another answer named its
    // master as the topology does (addresses compare): CLUSTER SLOTS leaves out a replica
    // that has not reported a replication offset yet, just after a failover.
    let comparable = by_master
        .iter()
        .zip(&answers)
        .any(|((at, _), answer)| table.is_master(*at, answer));
    let mut held = Vec::new();
    let mut held_masters = Vec::new();
    for ((at, group), answer) in by_master.into_iter().zip(answers) {
        let (host, port) = &table.masters[at];
        let goes = match table.goes_to(at, answer, comparable) {
            Goes::Master => true,
            Goes::OtherMaster => master_answers(host.clone(), *port).await,
            Goes::Elsewhere => false,
        };
        if goes {
            go.extend(group.into_iter().cloned());
        } else {
            held.extend(group.into_iter().cloned());
            held_masters.push((host.clone(), *port));
        }
    }
    if !go.is_empty() {
        ssubscribe(connection, &go).await?;
    }
    Ok((held, held_masters))
}

/// Where a command routed like an SSUBSCRIBE went, as [`SlotTable::goes_to`] reads it.
#[derive(Debug, PartialEq)]
enum Goes {
    /// The slot's master (or a node that cannot be told apart from it).
    Master,
    /// Another master.
    OtherMaster,
    /// A replica, a node the topology does not know, or none.
    Elsewhere,
}

/// What a command routed like an SSUBSCRIBE reached.
enum Reached {
    /// The node with this server end of the connection (`laddr` of CLIENT INFO).
    Node(String),
    /// No node: the connection failed or timed out.
    Nothing,
    /// Some node, which did not say where it is (CLIENT INFO refused by an ACL, or
    /// answered without `laddr`).
    Unknown,
}

/// Where a command routed like an SSUBSCRIBE of `channel` goes now: by its slot, a
/// replica allowed.
async fn answered_by(connection: &ClusterConnection, channel: &str) -> Reached {
    let mut info = redis::cmd("CLIENT");
    info.arg("INFO");
    let route = Route::with_key(channel.as_bytes(), SlotAddr::ReplicaOptional);
    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
    match connection.clone().route_command(info, routing).await {
        Ok(reply) => redis::from_redis_value::<String>(reply)
            .ok()
            .and_then(|text| client_info_field(&text, "laddr=").map(str::to_string))
            .map_or(Reached::Unknown, Reached::Node),
        // A node answered with an error (a server's reply has a code).
        Err(e) if e.code().is_some() => Reached::Unknown,
        Err(_) => Reached::Nothing,
    }
}

/// Whether `laddr` (as CLIENT INFO writes it) is `host:port`.
fn is_address(laddr: &str, host: &str, port: u16) -> bool {
    laddr == format!("{host}:{port}") || laddr == format!("[{host}]:{port}")
}

fn client_info_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split_ascii_whitespace()
        .find_map(|field| field.strip_prefix(name))
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
    // The crate may answer from another node's connection when it has none to this one:
    // `laddr` (the server's end of the connection) says which node answered.
    if !is_address(client_info_field(&text, "laddr=")?, host, port) {
        return None;
    }
    client_info_field(&text, "ssub=").and_then(|n| n.parse().ok())
}

/// The masters of `owners` (in their order) and a table of every slot's master, as an
/// index into them. The crate computes a key's slot but does not show its number: a table
/// of every slot (16,384 entries, built once per use) turns a slot into its master.
fn masters_by_slot(owners: &SlotOwners) -> (Vec<(String, u16)>, HashMap<Slot, usize>) {
    let mut masters: Vec<(String, u16)> = Vec::new();
    let mut master_of: HashMap<Slot, usize> = HashMap::with_capacity(16_384);
    for (first, last, host, port) in owners {
        let at = match masters.iter().position(|(h, p)| h == host && p == port) {
            Some(at) => at,
            None => {
                masters.push((host.clone(), *port));
                masters.len() - 1
            }
        };
        for slot in (*first..=*last).filter_map(Slot::new) {
            master_of.insert(slot, at);
        }
    }
    (masters, master_of)
}

/// How many of `channels` each master of `owners` serves, by master address.
pub fn expected_per_master(owners: &SlotOwners, channels: &[String]) -> Vec<((String, u16), u64)> {
    let (masters, master_of) = masters_by_slot(owners);
    let mut counts: Vec<((String, u16), u64)> = masters.into_iter().map(|m| (m, 0)).collect();
    for channel in channels {
        if let Some(&at) = master_of.get(&Slot::for_key(channel.as_bytes())) {
            counts[at].1 += 1;
        }
    }
    counts
}

/// How many names [`key_per_master`] tries: a master serving 1 % of the slots gets one
/// all but surely (a miss has odds of 1 in 10^17); one serving a handful of slots may
/// get none.
const KEY_TRIES: u32 = 4096;

/// For each master of `owners`, the first of `key(0)`, `key(1)`, … that hashes to a slot
/// it serves (see [`KEY_TRIES`]): a key on every shard, for what must be told per shard.
pub fn key_per_master(owners: &SlotOwners, key: impl Fn(u32) -> String) -> Vec<String> {
    let (masters, master_of) = masters_by_slot(owners);
    let mut found: Vec<Option<String>> = vec![None; masters.len()];
    let mut left = masters.len();
    for n in 0..KEY_TRIES {
        if left == 0 {
            break;
        }
        let name = key(n);
        if let Some(&at) = master_of.get(&Slot::for_key(name.as_bytes())) {
            if found[at].is_none() {
                found[at] = Some(name);
                left -= 1;
            }
        }
    }
    found.into_iter().flatten().collect()
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

    #[test]
    fn a_subscription_is_held_when_its_slot_command_reached_another_known_node_or_none() {
        let owners: SlotOwners = vec![
            (0, 8191, "10.0.0.1".into(), 7000),
            (8192, 16383, "10.0.0.9".into(), 7009),
        ];
        let nodes = vec![
            ("10.0.0.1".into(), 7000),
            ("10.0.0.2".into(), 7001),
            ("10.0.0.9".into(), 7009),
        ];
        let table = SlotTable::new(&owners, nodes);
        let node = |laddr: &str| Reached::Node(laddr.into());
        assert_eq!(table.goes_to(0, node("10.0.0.1:7000"), false), Goes::Master);
        assert!(table.is_master(0, &node("10.0.0.1:7000")));
        // Its replica.
        assert_eq!(
            table.goes_to(0, node("10.0.0.2:7001"), false),
            Goes::Elsewhere
        );
        // An address the topology does not know: translated on the way (cannot tell),
        // unless another answer showed that addresses compare.
        assert_eq!(
            table.goes_to(0, node("172.17.0.5:6379"), false),
            Goes::Master
        );
        assert_eq!(
            table.goes_to(0, node("10.0.0.3:7002"), true),
            Goes::Elsewhere
        );
        assert_eq!(table.goes_to(0, Reached::Nothing, false), Goes::Elsewhere);
        assert_eq!(table.goes_to(0, Reached::Unknown, true), Goes::Master);
        assert_eq!(
            table.goes_to(0, node("10.0.0.9:7009"), true),
            Goes::OtherMaster
        );
        // "bar" is in slot 5061, "foo" in 12182.
        assert_eq!(table.master_of("bar"), Some(0));
        assert_eq!(table.master_of("foo"), Some(1));
    }

    #[test]
    fn a_key_is_found_on_every_master() {
        let owners: SlotOwners = vec![
            (0, 5460, "a".into(), 1),
            (5461, 10922, "b".into(), 2),
            (10923, 16286, "c".into(), 3),
            // "x" is in slot 16287.
            (16287, 16287, "d".into(), 4),
            (16288, 16383, "c".into(), 3),
        ];
        let keys = key_per_master(&owners, |n| format!("tmcp:epoch:{n}"));
        let masters: Vec<u16> = keys
            .iter()
            .map(|k| expected_per_master(&owners, std::slice::from_ref(k)))
            .map(|counts| counts.iter().find(|(_, n)| *n == 1).unwrap().0 .1)
            .collect();
        // One key per master, in the masters' order; the one-slot master may get none.
        assert!(
            masters == [1, 2, 3] || masters == [1, 2, 3, 4],
            "{masters:?}"
        );
        // The first name that fits each: slots 5413, 9542 and 13671.
        assert_eq!(keys[..3], ["tmcp:epoch:0", "tmcp:epoch:3", "tmcp:epoch:2"]);
        // A name that always hashes to one slot (a hash tag) gives one key only.
        assert_eq!(
            key_per_master(&owners, |_| "{x}e".into()),
            vec!["{x}e".to_string()]
        );
    }
}
