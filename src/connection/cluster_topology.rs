//! Following a Redis Cluster's topology on a [`Connection`]: after a fault the topology
//! is read often ([`Connection::unsettle`], [`Connection::follow_faults`]), a change of
//! slot owners is noticed ([`Connection::follow_topology`]), and a connection that
//! reached no node is replaced by one seeded with every node last seen.
//!
//! Idle on one server or Sentinel. It must not subscribe anything again: it says that
//! slots moved, and the manager resubscribes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::link::Link;
use super::{Connection, Source};

/// How long after a fault a cluster's topology is read often (see `Connection::unsettle`).
const UNSETTLED_FOR_MS: u64 = 20_000;
/// How often the topology is read meanwhile.
const UNSETTLED_CHECK_EVERY: Duration = Duration::from_millis(300);
/// How long channels a node dropped are held back while the topology does not show the
/// move yet (see [`Connection::read_topology_now`]); then subscribed again as they are.
/// Their messages are lost meanwhile (at most once, never twice), well within the 2 s in
/// which SPEC §7 wants every subscription back at its slot's owner.
pub const HOLD_DROPPED: Duration = Duration::from_secs(1);
/// What becomes of channels a node dropped, held since `since` (None: none held), after
/// a topology read that gave `outcome` (see [`Connection::follow_faults`]).
#[derive(PartialEq, Eq, Debug)]
pub enum Dropped {
    /// None are held.
    NoneHeld,
    /// The move does not show yet: keep them, read again soon.
    Hold,
    /// Subscribe them again now.
    Release,
}

impl Dropped {
    pub fn after_read(outcome: Option<bool>, since: Option<std::time::Instant>) -> Dropped {
        match since {
            None => Dropped::NoneHeld,
            Some(since) if outcome != Some(true) && since.elapsed() < HOLD_DROPPED => Dropped::Hold,
            Some(_) => Dropped::Release,
        }
    }
}

/// How soon the topology is read again when the manager asks (see `follow_faults`).
const AGAIN_SOON: Duration = Duration::from_millis(50);
/// How often the topology is read otherwise, while a manager holds subscriptions: a
/// graceful failover is followed within about a second (SPEC §7: subscriptions at their
/// slot's owner within 2 s of the cluster reporting ok).
const SETTLED_CHECK_EVERY: Duration = Duration::from_secs(1);

impl Connection {
    /// On a cluster whose connection reached no node: replaces it (at most once a
    /// second) with one seeded from every node last seen. Returns whether it did.
    pub(super) fn reseeded(&self) -> bool {
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

    /// On a cluster: has [`Connection::follow_faults`] read the topology now, not at its
    /// next beat; the manager's `followed` hears the outcome. For a node that dropped our
    /// subscriptions by itself (`sunsubscribe`): its slots moved, and if it was demoted
    /// the connection must be replaced before anything is subscribed again (see
    /// `follow_topology`). Restored at once on the connection as it is, a dropped channel
    /// went by the crate's slot map, which may still name the demoted master: that node,
    /// now a replica, accepts the SSUBSCRIBE and delivers its shard's messages beside the
    /// new master (a cluster soak saw messages delivered twice that way). The first read
    /// may not show the move yet (most nodes have not heard of it): the managers hold the
    /// dropped channels and read again until it does, for up to [`HOLD_DROPPED`].
    pub fn read_topology_now(&self) {
        if matches!(self.source, Source::Cluster(_)) {
            self.unsettle();
            self.topology_wanted.notify_one();
        }
    }

    /// Runs for ever on a cluster connection: reads the topology over `via` every
    /// [`UNSETTLED_CHECK_EVERY`] after a fault (see [`Connection::unsettle`]), else every
    /// [`SETTLED_CHECK_EVERY`] while `busy` (the manager holds subscriptions), at once
    /// when asked ([`Connection::read_topology_now`]), and tells `followed` each outcome
    /// (`Some(true)`: slots changed owners; None: no view); `followed` returning true
    /// has it read again within [`AGAIN_SOON`]. Meant for a task of its own: a refresh or a
    /// check can wait out a failover (up to `commandTimeout`), and following the failover
    /// meanwhile is what ends the loss (a cluster soak measured subscriptions restored a
    /// second late when this waited behind a liveness refresh). The settled pace is for
    /// what no error reveals: a `CLUSTER FAILOVER` demotes a master gracefully, and a
    /// soak saw a manager keep its subscriptions there, losing its shard's messages, for
    /// 3.4 s until its periodic check. Idle on one server or Sentinel.
    pub async fn follow_faults(
        &self,
        via: &Connection,
        timeout: Duration,
        busy: impl Fn() -> bool,
        followed: impl Fn(Option<bool>) -> bool,
    ) {
        if !matches!(self.source, Source::Cluster(_)) {
            return;
        }
        let mut again = false;
        loop {
            let wanted = self.topology_wanted.notified();
            if again {
                tokio::time::sleep(AGAIN_SOON).await;
            } else if self.unsettled() {
                let _ = tokio::time::timeout(UNSETTLED_CHECK_EVERY, wanted).await;
            } else {
                // Woken early by a fault.
                tokio::select! {
                    _ = tokio::time::sleep(SETTLED_CHECK_EVERY) => {}
                    _ = self.unsettling.notified() => {}
                    _ = wanted => {}
                }
                if !self.unsettled() && !busy() {
                    continue;
                }
            }
            again = followed(self.follow_topology(via, timeout).await);
        }
    }

    /// On a cluster whose topology was read: for each master, the first of `key(0)`,
    /// `key(1)`, … on a slot it serves (see `cluster::key_per_master`). Empty otherwise.
    pub fn key_per_master(&self, key: impl Fn(u32) -> String) -> Vec<String> {
        let owners = self.topology.lock().unwrap().clone();
        owners.map_or_else(Vec::new, |owners| {
            crate::cluster::key_per_master(&owners, key)
        })
    }

    /// Whether a fault was seen lately on this cluster connection: the managers then
    /// follow the topology every [`UNSETTLED_CHECK_EVERY`].
    pub fn unsettled(&self) -> bool {
        self.unsettled_until_ms.load(Ordering::Acquire) > self.now_ms()
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
        {
            // Every node seen stays known: CLUSTER SLOTS leaves out a replica that has not
            // reported a replication offset yet (just after a failover), and an answer
            // from it must still read as a replica's.
            let mut table = self.slot_table.lock().unwrap();
            let known: Vec<(String, u16)> =
                table.as_ref().map_or_else(Vec::new, |t| t.nodes().to_vec());
            let stale = table.is_none()
                || nodes.iter().any(|n| !known.contains(n))
                || self.topology.lock().unwrap().as_ref() != Some(&owners);
            if stale {
                let mut all = nodes.clone();
                all.extend(known.into_iter().filter(|n| !nodes.contains(n)));
                *table = Some(Arc::new(crate::cluster::SlotTable::new(&owners, all)));
            }
        }
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
}
