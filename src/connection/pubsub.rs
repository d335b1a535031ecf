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
    pub async fn subscribe(&self, channels: &[String], timeout: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        let (manager, ticket) = self.get_until(deadline).await?;
        let result = self
            .until_connected(deadline, manager, |mut manager| async move {
                manager.subscribe(channels).await
            })
            .await;
        self.outcome(result, ticket).await
    }

    /// UNSUBSCRIBEs `channels` in one command.
    pub async fn unsubscribe(&self, channels: &[String], timeout: Duration) -> Result<(), Failure> {
        let (mut manager, ticket) = self.get_until(Instant::now() + timeout).await?;
        let result = tokio::time::timeout(timeout, manager.unsubscribe(channels)).await;
        self.outcome(result, ticket).await
    }
}
