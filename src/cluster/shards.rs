//! Sharded subscriptions: SSUBSCRIBE and SUNSUBSCRIBE one slot per command, and the
//! counts the watchdog compares with what each master holds.
//!
//! It owns grouping channels by slot and the check of one node's `ssub` count on this
//! client's own connection. It must not keep the registry of wanted channels (the
//! managers do) nor decide when to subscribe again (`crate::connection` does).

use std::collections::HashMap;

use futures_util::future::try_join_all;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::RedisResult;

use super::SlotOwners;

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
