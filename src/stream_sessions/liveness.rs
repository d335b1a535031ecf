//! The liveness timer: refreshes the liveness keys of confirmed local sessions (closing
//! those ended elsewhere, writing every key again after Redis lost its data), checks the
//! pub/sub connection and follows a cluster's topology; and dropping the keys of
//! sessions that ended here.
//!
//! It must not change subscriptions itself: it flags a resubscription and wakes the
//! subscriber task (`subscribe`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::{Pipeline, Value};
use tokio::time::Instant;

use super::ops::{add_epoch, epoch_candidate, keep_alive_key, read_epochs};
use super::{Shared, StreamOp};
use crate::connection::{Checked, Dropped};
use crate::error::first_error;

/// Drops the liveness keys of sessions that ended here; failures go to `onError`.
pub(super) async fn mark_gone(shared: &Shared, ids: Vec<String>) {
    let count = ids.len();
    if let Err(reason) = shared
        .commands
        .run(StreamOp::MarkGone {
            ids,
            holder: shared.holder.clone(),
        })
        .await
    {
        shared.deliveries.problem(&format!(
            "could not remove the liveness key(s) of {count} ended session(s): {reason}"
        ));
    }
}

/// The one liveness timer of a manager: refreshes the keys of every confirmed local
/// session and checks that the pub/sub connection still answers.
pub(super) async fn keep_alive(shared: Arc<Shared>) {
    let options = shared.commands.options().clone();
    let mut tick = tokio::time::interval(options.refresh_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => check_subscriber(&shared).await,
            // After the first subscription and every restore: the topology they were
            // made under is the one to compare with.
            _ = shared.check_now.notified() => {
                follow_topology(&shared).await;
            }
        }
        if let Err(reason) = refresh(&shared).await {
            shared.deliveries.problem(&reason);
        }
    }
}

/// On a cluster: a failover is followed as soon as it happened, with or without a fault
/// seen here (see `Connection::follow_faults`): a connection replaced for it (a demoted
/// master) gets everything subscribed again; channels a node dropped are subscribed
/// again once the topology shows the move. A migration changes nothing else: subscribed
/// again at once, every channel went by the crate's slot map while another slot of the
/// same rebalance was still migrating, and the SSUBSCRIBEs went unconfirmed until the
/// watchdog replaced the connection (a soak: 8.5 s to recover).
pub(super) async fn follow_faults(shared: Arc<Shared>) {
    let timeout = shared.commands.options().command_timeout();
    let generation = std::sync::atomic::AtomicU64::new(shared.subscriber.generation());
    shared
        .subscriber
        .follow_faults(
            shared.commands.connection(),
            timeout,
            || !shared.table.lock().unwrap().sessions.is_empty(),
            |outcome| {
                let now = shared.subscriber.generation();
                let renewed = generation.swap(now, Ordering::AcqRel) != now;
                if outcome == Some(true) && renewed {
                    subscribe_everything_again(&shared);
                }
                let mut held = shared.dropped_unfollowed.lock().unwrap();
                match Dropped::after_read(outcome, held.1) {
                    Dropped::NoneHeld => false,
                    Dropped::Hold => true,
                    Dropped::Release => {
                        held.1 = None;
                        shared.dropped.lock().unwrap().append(&mut held.0);
                        shared.wake_subscriber.notify_one();
                        false
                    }
                }
            },
        )
        .await;
}

/// On a cluster whose slots changed owners since the last look: everything subscribed
/// again, each channel at its slot's owner of now. None when the topology could not be
/// read (see `Connection::follow_topology`).
async fn follow_topology(shared: &Shared) -> Option<bool> {
    let timeout = shared.commands.options().command_timeout();
    let moved = shared
        .subscriber
        .follow_topology(shared.commands.connection(), timeout)
        .await;
    if moved == Some(true) {
        subscribe_everything_again(shared);
    }
    moved
}

fn subscribe_everything_again(shared: &Shared) {
    shared.resubscribe.store(true, Ordering::Release);
    shared.wake_subscriber.notify_one();
}

/// Checks the pub/sub connection (see `Connection::check`); a replaced one is
/// resubscribed.
async fn check_subscriber(shared: &Shared) {
    if shared.table.lock().unwrap().sessions.is_empty() {
        return;
    }
    let timeout = shared.commands.options().command_timeout();
    match shared
        .subscriber
        .check(shared.commands.connection(), timeout, || {
            wanted_channels(shared)
        })
        .await
    {
        Checked::Fine => {}
        Checked::Failed(reason) => shared
            .deliveries
            .problem(&format!("Redis pub/sub connection check failed: {reason}")),
        Checked::Moved => {
            shared.resubscribe.store(true, Ordering::Release);
            shared.wake_subscriber.notify_one();
        }
        Checked::Resynced => {
            shared.resubscribe.store(true, Ordering::Release);
            shared.wake_subscriber.notify_one();
            shared.deliveries.problem(
                "the cluster's nodes did not hold the wanted pub/sub subscriptions; subscribing everything again on a fresh connection",
            );
        }
        Checked::Replaced { silent } => {
            shared.resubscribe.store(true, Ordering::Release);
            shared.wake_subscriber.notify_one();
            if silent {
                shared.deliveries.problem(
                    "the Redis pub/sub connection stopped answering; replaced it and resubscribing",
                );
            }
        }
    }
}

/// Every channel the table wants subscribed, when Redis should hold exactly those: no
/// round in flight or pending, no change waiting for the next round.
fn wanted_channels(shared: &Shared) -> Option<Vec<String>> {
    if !shared.subscriptions_settled.load(Ordering::Acquire) {
        return None;
    }
    let table = shared.table.lock().unwrap();
    if !table.dirty.is_empty()
        || !table.waiters.is_empty()
        || shared.resubscribe.load(Ordering::Acquire)
        || !shared.dropped.lock().unwrap().is_empty()
        || !shared.dropped_unfollowed.lock().unwrap().0.is_empty()
    {
        return None;
    }
    let keys = shared.keys();
    let mut channels = Vec::with_capacity(table.sessions.len() * 2 + 1);
    for id in table.sessions.keys() {
        channels.push(keys.session_channel(id));
        channels.push(keys.delete_channel(id));
    }
    if !table.sessions.is_empty() {
        channels.push(keys.broadcast_channel());
    }
    Some(channels)
}

/// A confirmed local session as a refresh found it.
struct Held {
    id: String,
    token: u32,
    written_from: Instant,
    epoch: Option<String>,
}

/// Refreshes the liveness keys of confirmed local sessions (see
/// `ops::LIVENESS_SCRIPT`: never brings back a key a delete removed, never takes over a
/// key another process holds now). A key found missing under the data epoch it was
/// written under (see `Session::epoch`), on the same master, less than a TTL after it
/// surely landed, belongs to a session ended elsewhere: that session is closed here. Any
/// other missing key may have been lost (Redis lost its data, a new master lacked the
/// last writes, the key expired while a master was unreachable): those are written
/// again. On a cluster the epoch is read on every shard (see `Shared::epoch_keys`).
async fn refresh(shared: &Shared) -> Result<(), String> {
    let started = Instant::now();
    let (held, written_to) = {
        let table = shared.table.lock().unwrap();
        let held: Vec<Held> = table
            .sessions
            .iter()
            .filter(|(_, s)| s.confirmed)
            .map(|(id, s)| Held {
                id: id.clone(),
                token: s.token,
                written_from: s.written_from,
                epoch: s.epoch.clone(),
            })
            .collect();
        (held, table.master)
    };
    if held.is_empty() {
        return Ok(());
    }
    let keys = shared.keys();
    let options = shared.commands.options();
    let failed = |reason: String| {
        format!(
            "could not refresh {} session liveness key(s): {reason}",
            held.len()
        )
    };
    let ttl = options.session_ttl_seconds;
    let epochs = shared.epoch_keys();
    let mut pipe = Pipeline::new();
    for key in &epochs {
        // Written where missing (a shard never written yet, or one that lost its data):
        // a new value, which no key was written under.
        add_epoch(&mut pipe, key, ttl, Some(&epoch_candidate()));
    }
    for session in &held {
        keep_alive_key(&mut pipe, keys, &session.id, &shared.holder, ttl, false);
    }
    let values = query(shared, &pipe).await.map_err(failed)?;
    let mut values = values.into_iter();
    let epoch = read_epochs(&mut values, epochs.len());
    let replies: Vec<Value> = values.collect();
    first_error(&replies).map_err(failed)?;
    let missing = replies.iter().any(|r| matches!(r, Value::Int(0)));
    if missing && follow_topology(shared).await.is_none() {
        // A missing key is read as a delete only once the slots' owners are known: the
        // crate follows a failover by itself (MOVED), so these replies may come from a
        // promoted replica that lacked the last refreshes, before our own look at the
        // topology saw the change. Unknown now: decided at the next refresh.
        return Ok(());
    }
    // Read after the replies (and that look): if the connection followed a new master
    // meanwhile, they came from it; and the time since the last refresh that surely
    // landed counts up to when they arrived (a query can wait out a failover).
    let master = shared.commands.connection().master_number();
    let ttl_span = Duration::from_secs(u64::from(ttl));
    let mut ended = Vec::new();
    let mut lost = false;
    for (session, reply) in held.iter().zip(&replies) {
        if !matches!(reply, Value::Int(0)) {
            continue;
        }
        let same_data = master == written_to && epoch.is_some() && session.epoch == epoch;
        // A margin for the server's clock and the time the write took to arrive.
        let may_have_expired =
            session.written_from.elapsed() + Duration::from_millis(250) >= ttl_span;
        if same_data && !may_have_expired {
            ended.push((session.id.as_str(), session.token));
        } else {
            lost = true;
        }
    }
    let kept = || {
        held.iter()
            .map(|s| (s.id.as_str(), s.token))
            .filter(|s| !ended.contains(s))
    };
    let epoch = if lost {
        // Written again where missing; a key another process holds now is kept as it is.
        let mut pipe = Pipeline::new();
        for key in &epochs {
            add_epoch(&mut pipe, key, ttl, Some(&epoch_candidate()));
        }
        for (id, _) in kept() {
            keep_alive_key(&mut pipe, keys, id, &shared.holder, ttl, true);
            pipe.ignore();
        }
        let values = query(shared, &pipe).await.map_err(failed)?;
        first_error(&values).map_err(failed)?;
        read_epochs(&mut values.into_iter(), epochs.len())
    } else {
        epoch
    };
    let mut closed = Vec::new();
    {
        let mut table = shared.table.lock().unwrap();
        for &(id, token) in &ended {
            if table.owned(id, token) {
                table.remove(id);
                closed.push(token);
            }
        }
        table.refreshed(kept(), started, epoch.as_deref());
        table.master = master;
    }
    shared.close_ended(&closed);
    Ok(())
}

/// Completes the data epoch `partial` of a creation sent before this manager first read
/// its cluster's topology (the one [`Keys::epoch`], the shards' epoch names unknown then):
/// reads the topology, then every shard's epoch (written where missing), so that a key
/// deleted before its first refresh is told apart from one a shard lost. `partial` as it
/// is when the topology cannot be read or the one epoch changed meanwhile (Redis lost
/// data: the keys are written again at the next refresh).
///
/// [`Keys::epoch`]: crate::keys::Keys::epoch
pub(super) async fn complete_epoch(shared: &Shared, partial: String) -> String {
    follow_topology(shared).await;
    let epochs = shared.epoch_keys();
    if epochs.len() < 2 {
        return partial;
    }
    let ttl = shared.commands.options().session_ttl_seconds;
    let mut pipe = Pipeline::new();
    for key in &epochs {
        add_epoch(&mut pipe, key, ttl, Some(&epoch_candidate()));
    }
    let read = query(shared, &pipe)
        .await
        .ok()
        .and_then(|values| read_epochs(&mut values.into_iter(), epochs.len()));
    match read {
        Some(full) if full.split(',').next() == Some(partial.as_str()) => full,
        _ => partial,
    }
}

/// Runs a pipeline of the liveness timer on the command connection, within the
/// command timeout.
async fn query(shared: &Shared, pipe: &Pipeline) -> Result<Vec<Value>, String> {
    let timeout = shared.commands.options().command_timeout();
    shared.commands.connection().query(pipe, timeout).await
}
