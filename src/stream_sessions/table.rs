//! The session table: the local sessions (the token of each one's JavaScript
//! controller), the ids changed since the subscriber's last round, the creations waiting
//! for their subscription, and what the liveness timer last learnt of Redis.
//!
//! It is plain data behind the manager's mutex: it must not wait, send or deliver.

use std::collections::{HashMap, HashSet};

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::keys::{Channel, Keys};

/// A local session: the token of its JavaScript controller, whether its creation
/// finished (only then may a missing liveness key mean "ended elsewhere"), and since when
/// its liveness key surely lives.
pub(super) struct Session {
    pub(super) token: u32,
    pub(super) confirmed: bool,
    /// When the last write of its liveness key that surely landed was sent (its
    /// creation's, then each refresh's that reached it): the key expires no sooner than
    /// a TTL later. Past that, a missing key may have expired rather than been deleted:
    /// a creation can wait for its subscription (a cluster master down) longer than the
    /// TTL its key was written with, and its first refresh then finds the key gone.
    pub(super) written_from: Instant,
    /// The data epoch its liveness key was last written under (see `Shared::epoch_keys`):
    /// read with its creation's write (on a Cluster whose topology was not read yet,
    /// completed just after it: see `liveness::complete_epoch`), then with each refresh
    /// that reached it. A key missing under the same epoch was deleted; under another,
    /// Redis may have lost it. None until the creation's answer, or if Redis answered
    /// no epoch (then a missing key is written again).
    pub(super) epoch: Option<String>,
}

/// A creation waiting for its channels to be subscribed.
pub(super) struct Waiter {
    pub(super) id: String,
    pub(super) done: oneshot::Sender<Result<(), String>>,
}

#[derive(Default)]
pub(super) struct Table {
    pub(super) sessions: HashMap<String, Session>,
    /// Ids added or removed since the subscriber's last round: it looks at these only,
    /// not at every session.
    pub(super) dirty: HashSet<String>,
    pub(super) waiters: Vec<Waiter>,
    /// The master the keys were last written to (a Sentinel failover changes it, and
    /// may lose the last writes: the keys are then written again).
    pub(super) master: u64,
}

impl Table {
    pub(super) fn insert(&mut self, id: String, session: Session) {
        self.dirty.insert(id.clone());
        self.sessions.insert(id, session);
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Session> {
        let removed = self.sessions.remove(id);
        if removed.is_some() {
            self.dirty.insert(id.to_string());
        }
        removed
    }

    /// A refresh sent at `sent` reached the keys of `reached` (those still held by the
    /// same session) under `epoch`: they live at least a TTL from then.
    pub(super) fn refreshed<'a>(
        &mut self,
        reached: impl IntoIterator<Item = (&'a str, u32)>,
        sent: Instant,
        epoch: Option<&str>,
    ) {
        for (id, token) in reached {
            if let Some(session) = self.sessions.get_mut(id).filter(|s| s.token == token) {
                if sent >= session.written_from {
                    session.written_from = sent;
                    session.epoch = epoch.map(str::to_string);
                }
            }
        }
    }

    /// The session of `id` if `token` still owns it.
    pub(super) fn owned(&self, id: &str, token: u32) -> bool {
        self.sessions.get(id).is_some_and(|s| s.token == token)
    }

    /// Whether one of our channels is wanted now: a session's two while it is here, the
    /// broadcast channel while any is.
    pub(super) fn wants(&self, keys: &Keys, channel: &str) -> bool {
        match keys.parse_channel(channel) {
            Some(Channel::Session(id) | Channel::Delete(id)) => self.sessions.contains_key(id),
            Some(Channel::Broadcast) => !self.sessions.is_empty(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_refresh_dates_only_the_keys_it_reached_of_the_same_session() {
        let created = Instant::now();
        let mut table = Table::default();
        for (id, token) in [("a", 1), ("b", 2)] {
            table.insert(
                id.into(),
                Session {
                    token,
                    confirmed: true,
                    written_from: created,
                    epoch: Some("e0".into()),
                },
            );
        }
        let sent = created + Duration::from_secs(5);
        // "b" was ended and created again (token 3) while the refresh was out.
        table.sessions.get_mut("b").unwrap().token = 3;
        table.refreshed([("a", 1), ("b", 2)], sent, Some("e1"));
        assert_eq!(table.sessions["a"].written_from, sent);
        assert_eq!(table.sessions["a"].epoch.as_deref(), Some("e1"));
        assert_eq!(table.sessions["b"].written_from, created);
        assert_eq!(table.sessions["b"].epoch.as_deref(), Some("e0"));
        // An older refresh's answer dates a key back no more than its epoch.
        table.refreshed([("a", 1)], created, Some("e2"));
        assert_eq!(table.sessions["a"].written_from, sent);
        assert_eq!(table.sessions["a"].epoch.as_deref(), Some("e1"));
    }
}
