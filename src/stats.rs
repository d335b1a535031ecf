//! What `stats()` and the `tmcp-redis:connection` / `tmcp-redis:topology` diagnostics
//! channels see inside the addon (issue 24).
//!
//! Counters are relaxed atomics bumped where things happen (a hook of one line at each
//! site in the other modules); nothing here takes a lock on a hot path. JavaScript reads
//! them through one `stats()` method per native object, as a `Float64Array` (see
//! `lib/observe.js` for the positions). Events (a connection ready or lost, a topology
//! change followed) are rare, once per fault: they always cross to JavaScript, on a weak
//! threadsafe function of their own, and JavaScript builds a channel payload only when
//! the channel has a subscriber.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use napi::bindgen_prelude::{FnArgs, Function};
use redis::{ConnectionAddr, ConnectionInfo, RedisError};

use crate::delivery::Batches;
use crate::keys::{Channel, Keys};

pub type EventArgs = FnArgs<(Vec<String>,)>;

/// Where connection and topology events go: `onEvent([channel, event, role, address,
/// port])`, all strings (`address` and `port` empty where this side does not know them:
/// JavaScript then names the URL's server).
pub struct Events(Batches<Vec<String>, Vec<String>>);

impl Events {
    pub fn new(callback: &Function<'_, EventArgs, ()>) -> napi::Result<Arc<Self>> {
        Ok(Arc::new(Events(Batches::new(callback, |words| words)?)))
    }
}

/// One connection's figures (command or pub/sub): whether it is up, how often it came
/// back, the topology changes it followed, its background calls that timed out.
pub struct ConnectionStats {
    pubsub: bool,
    up: AtomicBool,
    ever_up: AtomicBool,
    reconnects: AtomicU64,
    topology_changes: AtomicU64,
    timeouts: AtomicU64,
    /// Sends to [`Events`] (behind a closure: code that never sets one, such as the
    /// unit tests, does not link the Node-API calls).
    events: OnceLock<Box<dyn Fn(Vec<String>) + Send + Sync>>,
    /// The server a Sentinel source resolved last (events name it).
    server: Mutex<Option<(String, u16)>>,
}

/// Positions in [`ConnectionStats::figures`] (and at the start of the managers' arrays).
pub const CONNECTION_FIGURES: usize = 4;

impl ConnectionStats {
    pub fn new(pubsub: bool) -> Self {
        ConnectionStats {
            pubsub,
            up: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            topology_changes: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            events: OnceLock::new(),
            server: Mutex::new(None),
        }
    }

    /// Where this connection's events go (set once, when the native object is built).
    pub fn set_events(&self, events: Arc<Events>) {
        let _ = self.events.set(Box::new(move |words| events.0.send(words)));
    }

    /// Redis answered on this connection: if it was down (or never up), it is up now.
    /// On every answer, so one relaxed load unless the state changes.
    pub fn answered(&self) {
        if !self.up.load(Relaxed) && !self.up.swap(true, Relaxed) {
            if self.ever_up.swap(true, Relaxed) {
                self.reconnects.fetch_add(1, Relaxed);
            }
            self.emit("connection", "ready");
        }
    }

    /// A call on this connection failed: lost if the failure was the connection's.
    pub fn failed(&self, error: &RedisError) {
        if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.kind() == redis::ErrorKind::ClusterConnectionNotFound
        {
            self.lost();
        }
    }

    /// The connection was lost or replaced (its subscriptions with it).
    pub fn lost(&self) {
        if self.up.swap(false, Relaxed) {
            self.emit("connection", "lost");
        }
    }

    /// A background call (a subscription, a check, a liveness refresh) got no answer in
    /// time.
    pub fn timed_out(&self) {
        self.timeouts.fetch_add(1, Relaxed);
    }

    /// A Sentinel source's connection is (re)built for the master at `info`; `moved`
    /// when it followed a switch from another master (not the first resolution).
    pub fn master_at(&self, info: &ConnectionInfo, moved: bool) {
        *self.server.lock().unwrap() = address(info);
        if moved {
            self.lost();
            self.topology_changes.fetch_add(1, Relaxed);
            self.emit("topology", "master-switched");
        }
    }

    /// A cluster's slots changed owners, and this connection follows.
    pub fn slots_moved(&self) {
        self.topology_changes.fetch_add(1, Relaxed);
        self.emit("topology", "slots-moved");
    }

    /// `[reconnects, topologyChanges, timeouts, connected]`.
    pub fn figures(&self) -> [f64; CONNECTION_FIGURES] {
        [
            self.reconnects.load(Relaxed) as f64,
            self.topology_changes.load(Relaxed) as f64,
            self.timeouts.load(Relaxed) as f64,
            f64::from(u8::from(self.up.load(Relaxed))),
        ]
    }

    fn emit(&self, channel: &str, event: &str) {
        let Some(events) = self.events.get() else {
            return;
        };
        let (address, port) = match &*self.server.lock().unwrap() {
            Some((host, port)) => (host.clone(), port.to_string()),
            None => (String::new(), String::new()),
        };
        let role = if self.pubsub { "pubsub" } else { "command" };
        events(vec![
            channel.to_string(),
            event.to_string(),
            role.to_string(),
            address,
            port,
        ]);
    }
}

/// A server's host and port (a Unix socket: its path, port 0).
fn address(info: &ConnectionInfo) -> Option<(String, u16)> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Some((host.clone(), *port))
        }
        ConnectionAddr::Unix(path) => Some((path.display().to_string(), 0)),
        _ => None,
    }
}

/// A stream manager's own figures, besides its pub/sub connection's.
#[derive(Default)]
pub struct StreamStats {
    /// Messages that arrived for a session this process does not hold (any more).
    unrouted: AtomicU64,
    /// Local sessions whose message channel Redis confirmed (see [`Confirmed`]).
    confirmed_sessions: AtomicU64,
}

impl StreamStats {
    pub fn no_local_session(&self) {
        self.unrouted.fetch_add(1, Relaxed);
    }

    /// The pub/sub connection's figures, then `[subscriptionsWanted,
    /// subscriptionsConfirmed, deliveryQueue, unrouted]`.
    pub fn snapshot(&self, subscriber: &ConnectionStats, wanted: usize, queued: u64) -> Vec<f64> {
        let mut figures = subscriber.figures().to_vec();
        figures.extend([
            wanted as f64,
            self.confirmed_sessions.load(Relaxed) as f64,
            queued as f64,
            self.unrouted.load(Relaxed) as f64,
        ]);
        figures
    }
}

/// The channels Redis confirmed to a stream manager's subscriber, counting the local
/// sessions among them (their `session:{id}` channels) into [`StreamStats`] as it
/// changes. A drop-in for the `HashSet<String>` it wraps.
#[derive(Default)]
pub struct Confirmed {
    set: HashSet<String>,
    sessions: u64,
    keys: Keys,
    report: Option<Arc<StreamStats>>,
}

impl Confirmed {
    /// Counts into `stats`, reading channel names with `keys`.
    pub fn report_to(&mut self, stats: Arc<StreamStats>, keys: Keys) {
        self.keys = keys;
        self.report = Some(stats);
        self.publish();
    }

    pub fn contains(&self, channel: &str) -> bool {
        self.set.contains(channel)
    }

    pub fn insert(&mut self, channel: String) -> bool {
        let session = self.is_session(&channel);
        let added = self.set.insert(channel);
        if added && session {
            self.sessions += 1;
            self.publish();
        }
        added
    }

    pub fn remove(&mut self, channel: &str) -> bool {
        let removed = self.set.remove(channel);
        if removed && self.is_session(channel) {
            self.sessions -= 1;
            self.publish();
        }
        removed
    }

    pub fn extend(&mut self, channels: impl IntoIterator<Item = String>) {
        for channel in channels {
            self.insert(channel);
        }
    }

    pub fn clear(&mut self) {
        self.set.clear();
        self.sessions = 0;
        self.publish();
    }

    fn is_session(&self, channel: &str) -> bool {
        matches!(self.keys.parse_channel(channel), Some(Channel::Session(_)))
    }

    fn publish(&self) {
        if let Some(stats) = &self.report {
            stats.confirmed_sessions.store(self.sessions, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_counts_a_reconnect_only_after_it_was_up_and_lost() {
        let stats = ConnectionStats::new(true);
        stats.lost();
        stats.answered();
        assert_eq!(stats.figures(), [0.0, 0.0, 0.0, 1.0]);
        stats.answered();
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        stats.failed(&refused);
        stats.failed(&refused);
        assert_eq!(stats.figures()[3], 0.0);
        stats.answered();
        stats.answered();
        assert_eq!(stats.figures(), [1.0, 0.0, 0.0, 1.0]);
        stats.slots_moved();
        stats.timed_out();
        assert_eq!(stats.figures(), [1.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn an_error_reply_is_not_a_lost_connection() {
        let stats = ConnectionStats::new(false);
        stats.answered();
        let reply = redis::RedisError::from((redis::ErrorKind::Client, "NOPERM"));
        stats.failed(&reply);
        assert_eq!(stats.figures()[3], 1.0);
    }

    #[test]
    fn confirmed_counts_sessions_not_channels() {
        let keys = Keys::new("p:");
        let stats = Arc::new(StreamStats::default());
        let mut confirmed = Confirmed::default();
        confirmed.report_to(stats.clone(), keys.clone());
        confirmed.extend([
            keys.session_channel("a"),
            keys.delete_channel("a"),
            keys.session_channel("b"),
            keys.delete_channel("b"),
            keys.broadcast_channel(),
        ]);
        confirmed.insert(keys.session_channel("a"));
        let read = |s: &StreamStats| s.confirmed_sessions.load(Relaxed);
        assert_eq!(read(&stats), 2);
        assert!(confirmed.contains(&keys.session_channel("b")));
        confirmed.remove(&keys.session_channel("b"));
        confirmed.remove(&keys.session_channel("b"));
        confirmed.remove(&keys.delete_channel("a"));
        assert_eq!(read(&stats), 1);
        confirmed.clear();
        assert_eq!(read(&stats), 0);
        assert!(!confirmed.contains(&keys.session_channel("a")));
    }
}
