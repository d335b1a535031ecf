//! Pushes of the pub/sub connection: a message is delivered to its local session as
//! redis-rs reads it (or to every one, for a broadcast; a delete message closes the
//! session), and the rest goes to the control task, which follows a lost connection or a
//! subscription the server dropped and drops the keys of sessions ended by a delete.
//!
//! It must not wait on Redis while routing a message: that runs on the tokio thread
//! that reads the connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::liveness::mark_gone;
use super::Shared;
use crate::connection::message_parts;
use crate::delivery::DeliveryKind;
use crate::keys::Channel;

/// What the control task is told.
pub(super) enum Control {
    Push(PushInfo),
    Ended(String),
}

impl Shared {
    /// Takes one push of the pub/sub connection, on the tokio thread as redis-rs reads
    /// it: a message is delivered at once, the rest goes to the control task.
    pub(super) fn on_push(&self, push: PushInfo) {
        match push.kind {
            // SMessage: a sharded channel's message (on a cluster).
            PushKind::Message | PushKind::SMessage => self.route(push.data),
            _ => {
                let _ = self.control.send(Control::Push(push));
            }
        }
    }

    /// Delivers one message to its local session (or every one, for a broadcast); a
    /// delete message closes the session here.
    fn route(&self, data: Vec<Value>) {
        let Some((channel, payload)) = message_parts(data) else {
            return;
        };
        let Ok(channel) = std::str::from_utf8(&channel) else {
            return;
        };
        match self.keys().parse_channel(channel) {
            Some(Channel::Session(id)) => {
                let token = self.table.lock().unwrap().sessions.get(id).map(|s| s.token);
                if let Some(token) = token {
                    self.deliveries.push(DeliveryKind::Message, token, &payload);
                } else {
                    self.stats.no_local_session();
                }
            }
            Some(Channel::Delete(id)) => {
                let ended = self.table.lock().unwrap().remove(id);
                if let Some(session) = ended {
                    self.close_ended(&[session.token]);
                    // The owner drops the key, as upstream's owners do.
                    let _ = self.control.send(Control::Ended(id.to_string()));
                }
            }
            Some(Channel::Broadcast) => self.deliveries.push(DeliveryKind::Broadcast, 0, &payload),
            None => {}
        }
    }
}

/// Handles the pushes that are not messages, and drops the liveness keys of sessions
/// ended by a delete message (those ended together, in one call).
pub(super) async fn handle_control(
    mut told: mpsc::UnboundedReceiver<Control>,
    shared: Arc<Shared>,
) {
    while let Some(first) = told.recv().await {
        let mut ended = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Control::Ended(id) => ended.push(id),
                Control::Push(push) => on_control_push(push, &shared),
            }
            next = told.try_recv().ok();
        }
        if !ended.is_empty() {
            mark_gone(&shared, ended).await;
        }
    }
}

fn on_control_push(push: PushInfo, shared: &Shared) {
    match push.kind {
        PushKind::SUnsubscribe if dropped_by_server(&push.data, shared) => {
            // A cluster moved the channel's slot (migration, failover) and dropped the
            // subscription: that channel is subscribed again at its slot's owner of now
            // (the others are where they were) once the topology was read, which replaces
            // the connection first if the node was demoted (see `liveness::follow_faults`).
            if let Some(Value::BulkString(channel)) = push.data.first() {
                let channel = String::from_utf8_lossy(channel).into_owned();
                let mut held = shared.dropped_unfollowed.lock().unwrap();
                held.0.push(channel);
                held.1.get_or_insert_with(std::time::Instant::now);
            }
            shared.subscriber.read_topology_now();
        }
        PushKind::Disconnection => {
            shared.subscriber.stats.lost();
            // On a cluster, a fresh connection (see `Connection::renew`): restored on the
            // same one, a subscription made while a master was unreachable can land on a
            // replica of its shard and deliver every message a second time once the
            // replica is promoted and the channel subscribed there too (the soak measured
            // 26,349 duplicates that way). A lost connection to one server reconnects by
            // itself.
            shared.subscriber.renew();
            shared.resubscribe.store(true, Ordering::Release);
            shared.wake_subscriber.notify_one();
            shared
                .deliveries
                .problem("lost the Redis pub/sub connection; reconnecting and resubscribing");
        }
        _ => {}
    }
}

/// Whether a `sunsubscribe` push is for a channel still wanted: not the confirmation of
/// our own SUNSUBSCRIBE (its session ended) but the server dropping it.
fn dropped_by_server(data: &[Value], shared: &Shared) -> bool {
    let Some(Value::BulkString(channel)) = data.first() else {
        return false;
    };
    let Ok(channel) = std::str::from_utf8(channel) else {
        return false;
    };
    shared.table.lock().unwrap().wants(shared.keys(), channel)
}
