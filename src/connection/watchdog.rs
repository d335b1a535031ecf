//! Silent peers: a call that got no answer, while nothing at all was answered for too
//! long, has the link replaced ([`Connection::stalled`]); and the periodic check of a
//! pub/sub connection ([`Connection::check`]: a PING, and on a cluster the shard
//! subscriptions each master holds).
//!
//! It must not subscribe anything again itself: it replaces a link or reports
//! [`Checked`], and the manager that owns the subscriptions resubscribes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::calls::Failure;
use super::cluster_source::TOPOLOGY_READ_TIMEOUT;
use super::link::Link;
use super::{Connection, Source, Ticket};

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

/// How a cluster's nodes hold this connection's shard subscriptions, when not as wanted.
enum Off {
    /// Some node holds fewer than it should.
    Missing,
    /// Some node holds more than it should.
    Extra,
}

impl Connection {
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
            Err(Failure::Refused(reason) | Failure::Held { reason, .. }) => Checked::Failed(reason),
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
}
