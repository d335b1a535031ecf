//! Pub/sub connections: a [`Connection`] whose pushes (messages, confirmations,
//! disconnections) go to a [`PushSink`], SUBSCRIBE and UNSUBSCRIBE on it, and
//! [`PushRoute`], which hands the pushes to the state that owns the connection.
//!
//! It must not interpret a push beyond taking a message apart ([`message_parts`]): what
//! a message or a disconnection means is the subscribing manager's.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use redis::{PushInfo, Value};
use tokio::time::Instant;

use super::calls::Failure;
use super::link::Link;
use super::{Connection, Source};
use crate::config::NativeOptions;

/// Where a pub/sub connection's pushes go (messages, confirmations, disconnections):
/// called on the tokio thread, in order, once per push, so it must not block.
pub type PushSink = Arc<dyn Fn(PushInfo) + Send + Sync>;

/// A [`PushSink`] for state that owns the connection and so is made after it: pushes
/// reach `on_push` of the state through a weak reference once [`PushRoute::set`] named
/// it, and are dropped before (nothing is subscribed before).
pub struct PushRoute<S>(Arc<OnceLock<Weak<S>>>);

impl<S: Send + Sync + 'static> PushRoute<S> {
    pub fn new(on_push: fn(&S, PushInfo)) -> (Self, PushSink) {
        let route: Arc<OnceLock<Weak<S>>> = Arc::default();
        let sink: PushSink = {
            let route = route.clone();
            Arc::new(move |push| {
                if let Some(state) = route.get().and_then(Weak::upgrade) {
                    on_push(&state, push);
                }
            })
        };
        (PushRoute(route), sink)
    }

    pub fn set(&self, state: &Arc<S>) {
        let _ = self.0.set(Arc::downgrade(state));
    }
}

/// The channel and payload of a `message` / `smessage` push; None for a malformed one.
pub fn message_parts(data: Vec<Value>) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut data = data.into_iter();
    match (data.next(), data.next()) {
        (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) => {
            Some((channel, payload))
        }
        _ => None,
    }
}

impl Connection {
    /// A pub/sub connection: RESP3, its pushes (messages, disconnections) to `push`.
    pub fn pubsub(
        source: Source,
        options: &NativeOptions,
        push: PushSink,
    ) -> Result<Arc<Self>, String> {
        Connection::new(source, options, Some(push))
    }

    /// SUBSCRIBEs `channels` in one command (refused connections are retried within the
    /// timeout); redis-rs waits for every confirmation.
    ///
    /// On a cluster whose topology was read, a channel is subscribed only at its slot's
    /// master (see `cluster::ssubscribe_at_masters`): the others wait, asked again every
    /// 100 ms within the timeout, and come back as [`Failure::Held`]. A master that
    /// answers on a connection of its own while this one has none to it (it came back
    /// after the connection was made) has the connection replaced, at most once a
    /// second: told as a lost connection, the manager resubscribes everything on a fresh
    /// one, which connects to every node.
    pub async fn subscribe(&self, channels: &[String], timeout: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        let (manager, ticket) = self.get_until(deadline).await?;
        let pending = std::sync::Mutex::new((channels.to_vec(), Vec::new()));
        let result = self
            .until_connected(deadline, manager, |mut manager| {
                let pending = &pending;
                async move {
                    let table = self.slot_table.lock().unwrap().clone();
                    let channels = pending.lock().unwrap().0.clone();
                    let (Link::Cluster(link), Some(table)) = (&manager, table) else {
                        return manager.subscribe(&channels).await;
                    };
                    let (held, masters) =
                        crate::cluster::ssubscribe_at_masters(link, &table, &channels, |h, p| {
                            self.master_answers(h, p)
                        })
                        .await?;
                    if held.is_empty() {
                        return Ok(());
                    }
                    self.nudge(&masters).await;
                    *pending.lock().unwrap() = (held, masters);
                    // A refusal: tried again after a pause, with the link in use then.
                    Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
                }
            })
            .await;
        let (held, masters) = pending.into_inner().unwrap();
        if let (Ok(Err(_)), false) = (&result, masters.is_empty()) {
            self.answered();
            let masters: Vec<String> = masters.iter().map(|(h, p)| format!("{h}:{p}")).collect();
            return Err(Failure::Held {
                reason: format!(
                    "no connection to the master of their slots ({}) within {} ms; not subscribed at a replica, which would deliver every message twice",
                    masters.join(", "),
                    timeout.as_millis()
                ),
                channels: held,
            });
        }
        self.outcome(result, ticket).await
    }

    /// On a cluster: whether the node at `host:port` answers a PING on a connection of
    /// its own, within half a second at most.
    async fn master_answers(&self, host: String, port: u16) -> bool {
        let Source::Cluster(cluster) = &self.source else {
            return false;
        };
        let timeout = self
            .options
            .connect_timeout()
            .min(Duration::from_millis(500));
        cluster.answers(&host, port, timeout).await
    }

    /// On a cluster: if one of `masters` answers on a connection of its own, asks for a
    /// fresh pub/sub connection (see [`Connection::subscribe`]).
    async fn nudge(&self, masters: &[(String, u16)]) {
        let (Source::Cluster(cluster), Some(push)) = (&self.source, &self.push) else {
            return;
        };
        let now = self.now_ms();
        let last = self.nudged_at_ms.load(std::sync::atomic::Ordering::Acquire);
        if last != 0 && now.saturating_sub(last) < 1000 {
            return;
        }
        let timeout = self
            .options
            .connect_timeout()
            .min(Duration::from_millis(500));
        for (host, port) in masters {
            if cluster.answers(host, *port, timeout).await {
                self.nudged_at_ms
                    .store(now.max(1), std::sync::atomic::Ordering::Release);
                push(redis::PushInfo {
                    kind: redis::PushKind::Disconnection,
                    data: Vec::new(),
                });
                return;
            }
        }
    }

    /// UNSUBSCRIBEs `channels` in one command.
    pub async fn unsubscribe(&self, channels: &[String], timeout: Duration) -> Result<(), Failure> {
        let (mut manager, ticket) = self.get_until(Instant::now() + timeout).await?;
        let result = tokio::time::timeout(timeout, manager.unsubscribe(channels)).await;
        self.outcome(result, ticket).await
    }
}
