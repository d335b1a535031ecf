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
//!
//! This module owns what the parts share ([`SlotOwners`]); each concern has a file of
//! its own, none importing another:
//! * `pipeline`: a pipeline split per slot ([`query`]), publishes sent at most once, and
//!   the replies of parts that failed;
//! * `topology`: who serves which slots (CLUSTER SLOTS, over the cluster connection or
//!   one of its own), the masters, one command on one node;
//! * `shards`: sharded subscriptions one slot per command ([`ssubscribe`],
//!   [`sunsubscribe`]), at masters only ([`ssubscribe_at_masters`], with the slot
//!   lookup [`SlotTable`]), and how many of them each master should hold.
//!
//! It must not keep connections or state of its own, nor decide when to reconnect,
//! resubscribe or follow a topology change: `crate::connection` and the managers do,
//! calling these functions with the connection they hold.
//!
//! [`ClusterConnection`]: redis::cluster_async::ClusterConnection

mod pipeline;
mod shards;
mod topology;

pub use pipeline::query;
pub use shards::{
    expected_per_master, key_per_master, shard_subscriptions, ssubscribe, ssubscribe_at_masters,
    sunsubscribe, SlotTable,
};
pub use topology::{masters, on_node, on_node_direct, topology, topology_at, topology_direct};

/// Who serves which slots: `(first slot, last slot, master host, master port)`, sorted.
pub type SlotOwners = Vec<(u16, u16, String, u16)>;
