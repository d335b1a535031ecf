//! SSE streams: which sessions this process holds, receiving their messages over
//! pub/sub, and keeping their liveness keys fresh.
//!
//! The controllers live in JavaScript; here each local session is a `token` (a number
//! JavaScript chose) so deliveries cross the boundary without session-id strings.
//!
//! Messages are routed as redis-rs reads them (see [`Shared::route`]): the session
//! table is looked up and the payload written straight into the batch that waits for
//! JavaScript, with no queue in between. Three tasks per manager, all on tokio:
//! * the **subscriber** reconciles what Redis has subscribed with what the session table
//!   wants (one SUBSCRIBE / UNSUBSCRIBE per round for everything that changed), and after
//!   a lost connection subscribes everything again;
//! * the **control** task handles what the pub/sub connection says besides messages
//!   (a lost connection, a subscription the server dropped) and drops the liveness keys
//!   of sessions ended by a delete message;
//! * the **liveness timer** (one per manager) refreshes the keys of local sessions and
//!   checks the pub/sub connection. A key found missing while Redis kept its data (see
//!   [`Keys::epoch`]) means the session was ended elsewhere while a delete message could
//!   not reach us: the session is closed here too, never brought back.
//!
//! This module owns the manager ([`StreamSessions`]: its construction, the calls
//! JavaScript makes, closing) and the state its tasks share ([`Shared`]). Each concern
//! around it has a file of its own; imports go one way, a file importing only from this
//! one and from files listed before it:
//! * `ops`: the manager's plain-command calls ([`StreamOp`]: call codes, encoding,
//!   replies) and the Lua scripts and pipeline builders of the liveness keys;
//! * `table`: the session table (local sessions, ids changed since the last round,
//!   creations waiting for their subscription);
//! * `subscribe`: the subscriber task, its rounds and the creations they answer;
//! * `liveness`: the liveness timer (refreshing keys, checking the pub/sub connection,
//!   following a cluster's topology) and dropping the keys of ended sessions;
//! * `route`: the pushes of the pub/sub connection (messages to their session, the rest
//!   to the control task).
//!
//! It must not open or repair connections (`crate::connection` does) nor encode any
//! other manager's commands.

mod liveness;
mod ops;
mod route;
mod subscribe;
mod table;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use napi_derive::napi;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::commands::{Commands, ReplyTo};
use crate::connection::{random_u64, Connection, PushRoute, Source};
use crate::delivery::{CompletionBatch, Deliveries, DeliveryKind, Reply};
use crate::keys::Keys;
use liveness::{complete_epoch, follow_faults, keep_alive, mark_gone};
use route::{handle_control, Control};
use subscribe::keep_subscribed;
use table::{Session, Table, Waiter};

pub use ops::StreamOp;

// Kinds of the `[kind, token, call]` triples of `NativeStreams.apply`.
/// A new local session; the third word is the call id answered once it is live.
#[napi]
pub const CHANGE_CREATE: u32 = 0;
/// A local session ended here; the third word is 1 to also drop its liveness key.
#[napi]
pub const CHANGE_DROP: u32 = 1;

/// State shared between the calls and the background tasks.
struct Shared {
    table: Mutex<Table>,
    commands: Arc<Commands>,
    subscriber: Arc<Connection>,
    deliveries: Deliveries,
    stats: Arc<crate::stats::StreamStats>,
    /// Redis dropped our subscriptions (lost or replaced connection).
    resubscribe: AtomicBool,
    /// Channels a cluster node dropped by itself (their slot moved), held until the
    /// topology shows the move (see `Connection::read_topology_now`), and since when.
    dropped_unfollowed: Mutex<(Vec<String>, Option<std::time::Instant>)>,
    /// Those channels once the topology was read: subscribed again in the next round.
    dropped: Mutex<Vec<String>>,
    /// No subscription round in flight or waiting to be retried: Redis should hold what
    /// the table wants (see `wanted_channels`).
    subscriptions_settled: AtomicBool,
    /// Wakes the subscriber task: the wanted channels changed, or must be restored.
    wake_subscriber: Notify,
    /// Wakes the liveness timer for an early check (after a resubscription).
    check_now: Notify,
    /// To the control task: pushes other than messages, and sessions ended by a delete
    /// message (their keys to drop).
    control: mpsc::UnboundedSender<Control>,
    /// The value of the liveness keys this manager writes: `active:` and a random id,
    /// so it removes only keys it still holds (see [`ops::RELEASE_SCRIPT`]).
    holder: Arc<str>,
}

impl Shared {
    fn keys(&self) -> &Keys {
        self.commands.keys()
    }

    /// The data epoch keys a liveness key is written and refreshed under: [`Keys::epoch`],
    /// and on a cluster one on every master too. A master SIGKILLed and restarted
    /// without persistence before its replica took over comes back empty and still the
    /// master: its shard's liveness keys are gone while the one epoch (on another shard)
    /// stays; read as deletes, that ended a third of a cluster soak's live sessions. The
    /// names follow the topology last read (none before the first look: see
    /// `liveness::complete_epoch`); a new master list comes with a master change anyway.
    fn epoch_keys(&self) -> Vec<String> {
        let keys = self.keys();
        let mut epochs = vec![keys.epoch()];
        epochs.extend(self.subscriber.key_per_master(|n| keys.shard_epoch(n)));
        epochs
    }

    /// Closes in JavaScript the sessions of `tokens`, already taken out of the table, and
    /// has their channels unsubscribed.
    fn close_ended(&self, tokens: &[u32]) {
        for token in tokens {
            self.deliveries.push(DeliveryKind::Close, *token, b"");
        }
        if !tokens.is_empty() {
            self.wake_subscriber.notify_one();
        }
    }
}

/// The subscriber side of a stream manager.
pub struct StreamSessions {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl StreamSessions {
    /// Opens the pub/sub connection (lazily) and starts the three tasks. Must run inside
    /// tokio.
    pub fn start(
        source: Source,
        commands: Arc<Commands>,
        deliveries: Deliveries,
    ) -> Result<Self, String> {
        let (route, sink) = PushRoute::new(Shared::on_push);
        let subscriber = Connection::pubsub(source, commands.options(), sink)?;
        let (control, control_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            table: Mutex::new(Table::default()),
            commands,
            subscriber,
            deliveries,
            stats: Arc::default(),
            resubscribe: AtomicBool::new(false),
            dropped_unfollowed: Mutex::new((Vec::new(), None)),
            dropped: Mutex::new(Vec::new()),
            subscriptions_settled: AtomicBool::new(false),
            wake_subscriber: Notify::new(),
            check_now: Notify::new(),
            control,
            holder: format!("active:{:016x}", random_u64()).into(),
        });
        route.set(&shared);
        let tasks = vec![
            tokio::spawn(keep_subscribed(shared.clone())),
            tokio::spawn(handle_control(control_rx, shared.clone())),
            tokio::spawn(keep_alive(shared.clone())),
            tokio::spawn(follow_faults(shared.clone())),
        ];
        Ok(StreamSessions { shared, tasks })
    }

    /// Applies one tick of session changes: `[kind, token, call]` triples with their ids.
    /// Creations are answered (through the completions) once subscribed and marked live.
    pub fn apply(&self, changes: &[u32], ids: Vec<String>) {
        let mut created: Vec<(String, u32, u32)> = Vec::new();
        let mut gone: Vec<String> = Vec::new();
        let mut cancelled: Vec<u32> = Vec::new();
        {
            let mut table = self.shared.table.lock().unwrap();
            for (change, id) in changes.chunks_exact(3).zip(ids) {
                let (kind, token, word) = (change[0], change[1], change[2]);
                match kind {
                    CHANGE_CREATE => {
                        table.insert(
                            id.clone(),
                            Session {
                                token,
                                confirmed: false,
                                // Before its key is written (a lower bound).
                                written_from: Instant::now(),
                                epoch: None,
                            },
                        );
                        created.push((id, token, word));
                    }
                    CHANGE_DROP if table.owned(&id, token) => {
                        table.remove(&id);
                        if word == 1 {
                            gone.push(id);
                        }
                    }
                    _ => {}
                }
            }
            // A creation ended in the same tick subscribes and marks nothing; it still
            // answers as Redis does (reachable or not).
            created.retain(|(id, token, call)| {
                let alive = table.owned(id, *token);
                if !alive {
                    cancelled.push(*call);
                }
                alive
            });
        }
        if !gone.is_empty() {
            let shared = self.shared.clone();
            tokio::spawn(async move { mark_gone(&shared, gone).await });
        }
        if !created.is_empty() || !cancelled.is_empty() {
            self.create(created, cancelled);
        }
        self.shared.wake_subscriber.notify_one();
    }

    /// Marks `created` live (through the ordered command queue, so a later delete of the
    /// same id reaches Redis after it) while the subscriber subscribes their channels.
    fn create(&self, created: Vec<(String, u32, u32)>, cancelled: Vec<u32>) {
        let shared = self.shared.clone();
        let options = shared.commands.options().clone();
        let ids: Vec<String> = created.iter().map(|(id, _, _)| id.clone()).collect();
        let (live_tx, live_rx) = oneshot::channel();
        let epochs = shared.epoch_keys();
        // Sent before the cluster's topology was first read: the shards' epochs are
        // learnt before the creation is answered (see `complete_epoch`).
        let partial = shared.keys().is_sharded() && epochs.len() == 1;
        shared.commands.submit(vec![(
            ReplyTo::Task(live_tx),
            Box::new(StreamOp::MarkLive {
                ids,
                ttl: options.session_ttl_seconds,
                holder: shared.holder.clone(),
                epochs,
            }),
        )]);
        let mut subscribed = Vec::with_capacity(created.len());
        {
            let mut table = shared.table.lock().unwrap();
            for (id, _, _) in &created {
                let (done, rx) = oneshot::channel();
                table.waiters.push(Waiter {
                    id: id.clone(),
                    done,
                });
                subscribed.push(rx);
            }
        }
        tokio::spawn(async move {
            let marked = live_rx
                .await
                .unwrap_or_else(|_| Err("the session manager is closed".into()));
            let marked = match marked {
                Ok(Reply::Text(epoch)) if partial => {
                    Ok(Reply::Text(complete_epoch(&shared, epoch).await))
                }
                other => other,
            };
            let mut answers = CompletionBatch::default();
            for call in cancelled {
                answers.push(call, marked.clone().map(|_| Reply::Done));
            }
            let mut failed = Vec::new();
            for ((id, token, call), subscription) in created.into_iter().zip(subscribed) {
                let subscription = subscription
                    .await
                    .unwrap_or_else(|_| Err("the session manager is closed".into()));
                let outcome = match (&marked, subscription) {
                    (Ok(_), Ok(())) => Ok(Reply::Done),
                    (Err(e), _) => Err(e.clone()),
                    (_, Err(e)) => Err(e),
                };
                let mut table = shared.table.lock().unwrap();
                let ours = table.sessions.get_mut(&id).filter(|s| s.token == token);
                match (&outcome, ours) {
                    (Ok(_), Some(session)) => {
                        session.confirmed = true;
                        if let Ok(Reply::Text(epoch)) = &marked {
                            session.epoch = Some(epoch.clone());
                        }
                    }
                    (Err(_), Some(_)) => {
                        table.remove(&id);
                        failed.push(id);
                    }
                    // The key may have been written while the subscription failed.
                    (Err(_), None) => failed.push(id),
                    (Ok(_), None) => {}
                }
                answers.push(call, outcome);
            }
            shared.commands.completions().send(answers);
            if !failed.is_empty() {
                shared.wake_subscriber.notify_one();
                mark_gone(&shared, failed).await;
            }
        });
    }

    /// Drops every local session (their liveness keys too) and stops the background
    /// tasks; answers `call` when Redis has been told, or on timeout.
    pub fn close(&mut self, call: u32) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let ids: Vec<String> = {
            let mut table = self.shared.table.lock().unwrap();
            table.waiters.clear();
            table.sessions.drain().map(|(id, _)| id).collect()
        };
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let outcome = if ids.is_empty() {
                Ok(Reply::Done)
            } else {
                shared
                    .commands
                    .run(StreamOp::MarkGone {
                        ids,
                        holder: shared.holder.clone(),
                    })
                    .await
            };
            shared.commands.completions().one(call, outcome);
        });
    }
}

impl StreamSessions {
    /// See `StreamStats::snapshot`.
    pub fn stats(&self) -> Vec<f64> {
        let wanted = self.shared.table.lock().unwrap().sessions.len();
        let queued = self.shared.deliveries.queued();
        (self.shared.stats).snapshot(&self.shared.subscriber.stats, wanted, queued)
    }

    /// The pub/sub connection's figures and events.
    pub fn subscriber_stats(&self) -> &crate::stats::ConnectionStats {
        &self.shared.subscriber.stats
    }
}

impl Drop for StreamSessions {
    fn drop(&mut self) {
        // The tasks hold the connections; without this they would outlive the manager.
        for task in &self.tasks {
            task.abort();
        }
    }
}
