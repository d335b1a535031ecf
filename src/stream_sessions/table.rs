//! The session table: the local sessions (the token of each one's JavaScript
//! controller), the ids changed since the subscriber's last round, the creations waiting
//! for their subscription, and what the liveness timer last learnt of Redis.
//!
//! It is plain data behind the manager's mutex: it must not wait, send or deliver.

use std::collections::{HashMap, HashSet};

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::keys::{Channel, Keys};

/// A local session: the token of its JavaScript controller, and whether its creation
/// finished (only then may a missing liveness key mean "ended elsewhere").
pub(super) struct Session {
    pub(super) token: u32,
    pub(super) confirmed: bool,
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
    /// The data epoch last seen (see [`Keys::epoch`]).
    pub(super) epoch: Option<String>,
    /// The master the keys were last written to (a Sentinel failover changes it, and
    /// may lose the last writes: the keys are then written again).
    pub(super) master: u64,
    /// When the last refresh that reached every key was sent: keys written then expire
    /// no sooner than a TTL later. Past that (Redis or a master unreachable for a
    /// while), a missing key may have expired rather than been deleted.
    pub(super) refreshed_from: Option<Instant>,
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
