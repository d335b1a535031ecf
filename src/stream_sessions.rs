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

use std::collections::{HashMap, HashSet};

use futures_util::stream::{FuturesOrdered, StreamExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi_derive::napi;
use redis::{Pipeline, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::{unconstrained, JoinHandle};
use tokio::time::Instant;

use crate::commands::{decode_text, first_error, Commands, FollowUp, Op, ReplyTo};
use crate::connection::{
    jittered, message_parts, random_u64, Checked, Connection, Failure, PushRoute, Source,
};
use crate::delivery::{CompletionBatch, Deliveries, DeliveryKind, Outcome, Reply};
use crate::error::unexpected_reply;
use crate::keys::{Channel, Keys};

// Call codes, exported to `lib/wire.js`.
#[napi]
pub const HAS: u32 = 20;
#[napi]
pub const PUBLISH: u32 = 21;
#[napi]
pub const BROADCAST: u32 = 22;
#[napi]
pub const STREAM_DELETE: u32 = 23;

// Kinds of the `[kind, token, call]` triples of `NativeStreams.apply`.
/// A new local session; the third word is the call id answered once it is live.
#[napi]
pub const CHANGE_CREATE: u32 = 0;
/// A local session ended here; the third word is 1 to also drop its liveness key.
#[napi]
pub const CHANGE_DROP: u32 = 1;

/// Reads the data epoch and extends its TTL; with a candidate (`ARGV[2]` not empty)
/// writes it first when the epoch is missing. Data in Redis is untrusted: an epoch of the
/// wrong type or shape (anything but a short hex string, which is all we ever write) is
/// treated as lost, so a corrupt key costs one rewrite instead of blocking every
/// creation. Needs only GET and SET (the README's minimal ACL rule allows EVAL, GET and
/// SET, not GETEX or EXPIRE).
const EPOCH_SCRIPT: &str = r"
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' or #v > 64 or not string.match(v, '^%x+$') then
  if ARGV[2] == '' then return false end
  v = ARGV[2]
end
redis.call('SET', KEYS[1], v, 'EX', ARGV[1])
return v
";

/// Adds the command that reads the data epoch (and keeps it while sessions live),
/// writing `candidate` when it is missing or corrupt.
fn add_epoch(pipe: &mut Pipeline, keys: &Keys, ttl: u32, candidate: Option<&str>) {
    pipe.cmd("EVAL")
        .arg(EPOCH_SCRIPT)
        .arg(1)
        .arg(keys.epoch())
        .arg(epoch_ttl(ttl))
        .arg(candidate.unwrap_or(""));
}

/// Extends a liveness key's TTL and keeps its value, which names the process holding
/// the stream now (ours, another process's, or upstream's `active`): a refresh never
/// takes a session over. Replies 1 when the key was kept, 0 when it is missing (the
/// session was ended elsewhere). With `ARGV[3]` = `1` a missing key is written with our
/// value (Redis lost its data). A key of the wrong type (written by someone else) is
/// replaced by ours: this process holds the session.
const LIVENESS_SCRIPT: &str = r"
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'string' then
  redis.call('SET', KEYS[1], v, 'EX', ARGV[1])
  return 1
end
if type(v) == 'table' or ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[1])
  return 1
end
return 0
";

/// Removes a liveness key only while it still names this process: another process
/// that re-created the session since (a client that reconnected elsewhere) keeps it.
const RELEASE_SCRIPT: &str = r"
if redis.pcall('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Adds `SET available:session:{id} <holder> EX ttl`: a new local session, taken over
/// from whoever held it before.
fn mark_alive(pipe: &mut Pipeline, keys: &Keys, id: &str, holder: &str, ttl: u32) {
    pipe.cmd("SET")
        .arg(keys.alive(id))
        .arg(holder)
        .arg("EX")
        .arg(ttl);
}

/// Adds a refresh of a liveness key (see [`LIVENESS_SCRIPT`]).
fn keep_alive_key(pipe: &mut Pipeline, keys: &Keys, id: &str, holder: &str, ttl: u32, write: bool) {
    pipe.cmd("EVAL")
        .arg(LIVENESS_SCRIPT)
        .arg(1)
        .arg(keys.alive(id))
        .arg(ttl)
        .arg(holder)
        .arg(if write { "1" } else { "0" });
}

/// The epoch outlives the liveness keys (refreshed with them), and expires a while
/// after the last session of every process ended.
fn epoch_ttl(session_ttl: u32) -> u32 {
    session_ttl.saturating_mul(3)
}

/// First pause before subscribing again after a failure; doubles up to the maximum.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// The longest pause while restoring lost subscriptions: messages are being lost until
/// they are back, so delivery resumes within about a second of Redis being healthy.
const MAX_RESTORE_PAUSE: Duration = Duration::from_secs(1);

/// One stream-manager call that is plain commands (sent through the shared pipeline).
#[derive(Debug, PartialEq)]
pub enum StreamOp {
    /// Whether `available:session:{id}` exists.
    Has(String),
    /// PUBLISH `data` to `session:{id}` for each id, in order.
    Publish { data: String, ids: Vec<String> },
    /// One PUBLISH on our broadcast channel, or with `scan` (upstream-compatible mode)
    /// a PUBLISH per `available:session:*` key, as upstream does.
    Broadcast { data: String, scan: bool },
    /// End the session everywhere: tell its owner, drop its liveness key.
    Delete(String),
    /// Mark new local sessions live (`SET … EX`, the value naming `holder`), and learn
    /// the data epoch (written first if missing): replies with the epoch.
    MarkLive {
        ids: Vec<String>,
        ttl: u32,
        holder: Arc<str>,
    },
    /// Drop the liveness keys of sessions that ended here, those `holder` still holds.
    MarkGone { ids: Vec<String>, holder: Arc<str> },
}

impl StreamOp {
    pub fn from_code(
        code: u32,
        mut args: Vec<String>,
        upstream_compatible: bool,
    ) -> Option<StreamOp> {
        if args.is_empty() {
            return None;
        }
        let first = args.remove(0);
        Some(match code {
            HAS if args.is_empty() => StreamOp::Has(first),
            PUBLISH => StreamOp::Publish {
                data: first,
                ids: args,
            },
            BROADCAST if args.is_empty() => StreamOp::Broadcast {
                data: first,
                scan: upstream_compatible,
            },
            STREAM_DELETE if args.is_empty() => StreamOp::Delete(first),
            _ => return None,
        })
    }

    /// Bytes of arguments this call holds while queued.
    pub fn weight(&self) -> usize {
        match self {
            StreamOp::Has(id) | StreamOp::Delete(id) => id.len(),
            StreamOp::Publish { data, ids } => ids.iter().map(|id| id.len() + data.len()).sum(),
            StreamOp::Broadcast { data, .. } => data.len(),
            StreamOp::MarkLive { ids, .. } | StreamOp::MarkGone { ids, .. } => {
                ids.iter().map(String::len).sum()
            }
        }
    }

    pub fn encode(&self, keys: &Keys, pipe: &mut Pipeline) -> usize {
        match self {
            StreamOp::Has(id) => {
                pipe.cmd("EXISTS").arg(keys.alive(id));
                1
            }
            StreamOp::Publish { data, ids } => {
                for id in ids {
                    pipe.cmd(keys.publish())
                        .arg(keys.session_channel(id))
                        .arg(data);
                }
                ids.len()
            }
            StreamOp::Broadcast { scan: true, .. } => 0,
            StreamOp::Broadcast { data, .. } => {
                pipe.cmd(keys.publish())
                    .arg(keys.broadcast_channel())
                    .arg(data);
                1
            }
            StreamOp::Delete(id) => {
                pipe.cmd(keys.publish())
                    .arg(keys.delete_channel(id))
                    .arg("");
                pipe.cmd("DEL").arg(keys.alive(id));
                2
            }
            StreamOp::MarkLive { ids, ttl, holder } => {
                add_epoch(pipe, keys, *ttl, Some(&epoch_candidate()));
                for id in ids {
                    mark_alive(pipe, keys, id, holder, *ttl);
                }
                ids.len() + 1
            }
            StreamOp::MarkGone { ids, holder } => {
                for id in ids {
                    pipe.cmd("EVAL")
                        .arg(RELEASE_SCRIPT)
                        .arg(1)
                        .arg(keys.alive(id))
                        .arg(holder.as_ref());
                }
                ids.len()
            }
        }
    }

    pub fn decode(&self, values: Vec<Value>) -> Outcome {
        first_error(&values)?;
        let mut values = values.into_iter();
        match self {
            StreamOp::Has(_) => match values.next() {
                Some(Value::Int(n)) => Ok(Reply::Int(n)),
                other => Err(unexpected_reply(&other.unwrap_or(Value::Nil))),
            },
            // The first reply is the epoch (see `add_epoch`).
            StreamOp::MarkLive { .. } => {
                Ok(read_epoch_reply(values.next()).map_or(Reply::Nil, Reply::Text))
            }
            _ => Ok(Reply::Done),
        }
    }

    pub fn follow_up(&self) -> Option<FollowUp> {
        match self {
            StreamOp::Broadcast { data, scan: true } => {
                Some(FollowUp::PublishToAliveSessions(data.clone()))
            }
            _ => None,
        }
    }
}

/// A local session: the token of its JavaScript controller, and whether its creation
/// finished (only then may a missing liveness key mean "ended elsewhere").
struct Session {
    token: u32,
    confirmed: bool,
}

/// A creation waiting for its channels to be subscribed.
struct Waiter {
    id: String,
    done: oneshot::Sender<Result<(), String>>,
}

#[derive(Default)]
struct Table {
    sessions: HashMap<String, Session>,
    /// Ids added or removed since the subscriber's last round: it looks at these only,
    /// not at every session.
    dirty: HashSet<String>,
    waiters: Vec<Waiter>,
    /// The data epoch last seen (see [`Keys::epoch`]).
    epoch: Option<String>,
    /// The master the keys were last written to (a Sentinel failover changes it, and
    /// may lose the last writes: the keys are then written again).
    master: u64,
    /// When the last refresh that reached every key was sent: keys written then expire
    /// no sooner than a TTL later. Past that (Redis or a master unreachable for a
    /// while), a missing key may have expired rather than been deleted.
    refreshed_from: Option<Instant>,
}

impl Table {
    fn insert(&mut self, id: String, session: Session) {
        self.dirty.insert(id.clone());
        self.sessions.insert(id, session);
    }

    fn remove(&mut self, id: &str) -> Option<Session> {
        let removed = self.sessions.remove(id);
        if removed.is_some() {
            self.dirty.insert(id.to_string());
        }
        removed
    }

    /// The session of `id` if `token` still owns it.
    fn owned(&self, id: &str, token: u32) -> bool {
        self.sessions.get(id).is_some_and(|s| s.token == token)
    }

    /// Whether one of our channels is wanted now: a session's two while it is here, the
    /// broadcast channel while any is.
    fn wants(&self, keys: &Keys, channel: &str) -> bool {
        match keys.parse_channel(channel) {
            Some(Channel::Session(id) | Channel::Delete(id)) => self.sessions.contains_key(id),
            Some(Channel::Broadcast) => !self.sessions.is_empty(),
            None => false,
        }
    }
}

/// State shared between the calls and the background tasks.
struct Shared {
    table: Mutex<Table>,
    commands: Arc<Commands>,
    subscriber: Arc<Connection>,
    deliveries: Deliveries,
    stats: Arc<crate::stats::StreamStats>,
    /// Redis dropped our subscriptions (lost or replaced connection).
    resubscribe: AtomicBool,
    /// Channels a cluster node dropped by itself (their slot moved): subscribed again in
    /// the next round.
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
    /// so it removes only keys it still holds (see [`RELEASE_SCRIPT`]).
    holder: Arc<str>,
}

/// What the control task is told.
enum Control {
    Push(PushInfo),
    Ended(String),
}

impl Shared {
    fn keys(&self) -> &Keys {
        self.commands.keys()
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

    /// Takes one push of the pub/sub connection, on the tokio thread as redis-rs reads
    /// it: a message is delivered at once, the rest goes to the control task.
    fn on_push(&self, push: PushInfo) {
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
        shared.commands.submit(vec![(
            ReplyTo::Task(live_tx),
            Op::Stream(StreamOp::MarkLive {
                ids,
                ttl: options.session_ttl_seconds,
                holder: shared.holder.clone(),
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
                if let Ok(Reply::Text(epoch)) = &marked {
                    table.epoch.get_or_insert_with(|| epoch.clone());
                    table.refreshed_from.get_or_insert_with(Instant::now);
                }
                let ours = table.sessions.get_mut(&id).filter(|s| s.token == token);
                match (&outcome, ours) {
                    (Ok(_), Some(session)) => session.confirmed = true,
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
                    .run(Op::Stream(StreamOp::MarkGone {
                        ids,
                        holder: shared.holder.clone(),
                    }))
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

/// The epoch as [`EPOCH_SCRIPT`] replied it; `None` when missing (or, from a server that
/// ran something else, not text).
fn read_epoch_reply(value: Option<Value>) -> Option<String> {
    match decode_text(value?) {
        Ok(Reply::Text(epoch)) => Some(epoch),
        _ => None,
    }
}

/// A fresh value for the data epoch key, different in every process and call.
fn epoch_candidate() -> String {
    format!("{:016x}", random_u64())
}

/// Drops the liveness keys of sessions that ended here; failures go to `onError`.
async fn mark_gone(shared: &Shared, ids: Vec<String>) {
    let count = ids.len();
    if let Err(reason) = shared
        .commands
        .run(Op::Stream(StreamOp::MarkGone {
            ids,
            holder: shared.holder.clone(),
        }))
        .await
    {
        shared.deliveries.problem(&format!(
            "could not remove the liveness key(s) of {count} ended session(s): {reason}"
        ));
    }
}

/// Keeps Redis's subscriptions equal to what the session table wants.
///
/// Each round is one SUBSCRIBE of what became wanted and one UNSUBSCRIBE of what no
/// longer is, sent together. Rounds are pipelined: a new round goes out while earlier
/// ones still wait for their confirmations (the connection keeps their order), so a
/// burst of creations and ends never waits for a round trip per round. A creation is
/// answered when the round carrying (or following) its channels is confirmed.
async fn keep_subscribed(shared: Arc<Shared>) {
    let mut state = Subscribed::default();
    state
        .confirmed
        .report_to(shared.stats.clone(), shared.keys().clone());
    let mut rounds = FuturesOrdered::new();
    let mut retry_at: Option<Instant> = None;
    loop {
        let retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            Some(done) = rounds.next(), if !rounds.is_empty() => {
                if let Some(pause) = state.finish(&shared, done) {
                    retry_at = Some(Instant::now() + pause);
                }
            }
            _ = shared.wake_subscriber.notified() => {}
            _ = retry => retry_at = None,
        }
        if retry_at.is_none() {
            if let Some(round) = state.next_round(&shared) {
                rounds.push_back(unconstrained(round.run(shared.clone())));
            }
        }
        let settled = rounds.is_empty() && retry_at.is_none() && state.uncertain.is_empty();
        shared
            .subscriptions_settled
            .store(settled, Ordering::Release);
    }
}

/// The subscriber task's view of Redis's subscriptions.
#[derive(Default)]
struct Subscribed {
    /// Channels asked for by rounds sent so far (confirmed or still in flight).
    requested: HashSet<String>,
    /// Channels Redis confirmed.
    confirmed: crate::stats::Confirmed,
    /// Channels of a SUBSCRIBE that timed out: Redis may still run it later. Subscribed
    /// again if wanted, unsubscribed if not.
    uncertain: HashSet<String>,
    /// Creations waiting, with the round whose completion answers them.
    parked: Vec<(u64, Waiter)>,
    /// Number of the last round sent.
    sent: u64,
    /// Bumped when Redis dropped every subscription: older rounds no longer count.
    generation: u64,
    /// The rounds since the last loss restore subscriptions (report and check after).
    restoring: bool,
    pause: Option<Duration>,
}

/// One SUBSCRIBE + UNSUBSCRIBE.
struct Round {
    number: u64,
    generation: u64,
    restoring: bool,
    add: Vec<String>,
    remove: Vec<String>,
}

/// A round as Redis answered it.
struct RoundDone {
    round: Round,
    added: Result<(), Failure>,
    removed: Result<(), Failure>,
}

impl Round {
    async fn run(self, shared: Arc<Shared>) -> RoundDone {
        let timeout = shared.commands.options().command_timeout();
        let subscriber = &shared.subscriber;
        let add = async {
            if self.add.is_empty() {
                Ok(())
            } else {
                subscriber.subscribe(&self.add, timeout).await
            }
        };
        let remove = async {
            if self.remove.is_empty() {
                Ok(())
            } else {
                subscriber.unsubscribe(&self.remove, timeout).await
            }
        };
        let (added, removed) = tokio::join!(add, remove);
        RoundDone {
            round: self,
            added,
            removed,
        }
    }
}

impl Subscribed {
    /// The next round, if the table wants something Redis was not asked for. Takes the
    /// new waiters either way.
    fn next_round(&mut self, shared: &Shared) -> Option<Round> {
        let restore = shared.resubscribe.swap(false, Ordering::AcqRel);
        if restore {
            // Redis dropped them all (lost or replaced connection).
            self.generation += 1;
            self.requested.clear();
            self.confirmed.clear();
            self.uncertain.clear();
            self.restoring = true;
        }
        let keys = shared.keys();
        // The channels that may have changed: those of ids added or removed since the
        // last round (every id after a loss), the broadcast channel, and the uncertain.
        let (candidates, waiters) = {
            let mut table = shared.table.lock().unwrap();
            if restore {
                let ids: Vec<String> = table.sessions.keys().cloned().collect();
                table.dirty.extend(ids);
            }
            let dirty = std::mem::take(&mut table.dirty);
            let mut candidates = Vec::with_capacity(dirty.len() * 2 + 1 + self.uncertain.len());
            for id in dirty {
                let wanted = table.sessions.contains_key(&id);
                candidates.push((keys.session_channel(&id), wanted));
                candidates.push((keys.delete_channel(&id), wanted));
            }
            candidates.push((keys.broadcast_channel(), !table.sessions.is_empty()));
            for channel in std::mem::take(&mut *shared.dropped.lock().unwrap()) {
                // Redis no longer holds it: asked for again if still wanted.
                self.requested.remove(&channel);
                self.confirmed.remove(&channel);
                let wanted = table.wants(keys, &channel);
                candidates.push((channel, wanted));
            }
            for channel in &self.uncertain {
                candidates.push((channel.clone(), table.wants(keys, channel)));
            }
            (candidates, std::mem::take(&mut table.waiters))
        };
        let mut add = Vec::new();
        let mut remove = Vec::new();
        let mut seen = HashSet::with_capacity(candidates.len());
        for (channel, wanted) in candidates {
            if !seen.insert(channel.clone()) {
                continue;
            }
            let asked = self.requested.contains(&channel);
            let uncertain = self.uncertain.contains(&channel);
            if wanted && (!asked || uncertain) {
                add.push(channel);
            } else if !wanted && (asked || uncertain) {
                remove.push(channel);
            }
        }
        if add.is_empty() && remove.is_empty() {
            // Nothing new to send: already confirmed, or carried by a round in flight.
            for waiter in waiters {
                if self.confirmed.contains(&keys.session_channel(&waiter.id)) {
                    let _ = waiter.done.send(Ok(()));
                } else {
                    self.parked.push((self.sent, waiter));
                }
            }
            return None;
        }
        self.sent += 1;
        for waiter in waiters {
            self.parked.push((self.sent, waiter));
        }
        for channel in &add {
            self.requested.insert(channel.clone());
            self.uncertain.remove(channel);
        }
        for channel in &remove {
            self.requested.remove(channel);
            self.uncertain.remove(channel);
        }
        Some(Round {
            number: self.sent,
            generation: self.generation,
            restoring: self.restoring,
            add,
            remove,
        })
    }

    /// Answers the creations parked on round `finished` (or an earlier one): subscribed,
    /// or no longer wanted, is success; `failure` (a failed round of this connection)
    /// fails them. The others wait for the round that carries their channel now: the last
    /// one sent if it asked for the channel (after a lost connection, the round that
    /// restored everything; rounds finish in order, so it is still to come), else the
    /// next one. Parked on "the next round" while the carrier was already out, a creation
    /// would wait for a round that may never come.
    fn answer_parked(
        &mut self,
        finished: u64,
        failure: Option<&str>,
        keys: &Keys,
        wanted: impl Fn(&str) -> bool,
    ) {
        for (number, waiter) in std::mem::take(&mut self.parked) {
            if number > finished {
                self.parked.push((number, waiter));
                continue;
            }
            let channel = keys.session_channel(&waiter.id);
            if self.confirmed.contains(&channel) || !wanted(&waiter.id) {
                let _ = waiter.done.send(Ok(()));
            } else if let Some(reason) = failure {
                let _ = waiter.done.send(Err(reason.to_string()));
            } else if self.requested.contains(&channel) && self.sent > finished {
                self.parked.push((self.sent, waiter));
            } else {
                self.parked.push((self.sent + 1, waiter));
            }
        }
    }

    /// Takes a round's answer; returns a pause before the next round after a failure.
    fn finish(&mut self, shared: &Shared, done: RoundDone) -> Option<Duration> {
        let RoundDone {
            round,
            added,
            removed,
        } = done;
        let keys = shared.keys();
        let current = round.generation == self.generation;
        let mut failure = None;
        if current {
            match added {
                Ok(()) => self.confirmed.extend(round.add.iter().cloned()),
                Err(Failure::Refused(reason)) => {
                    // Asked again in the next round if still wanted.
                    let mut table = shared.table.lock().unwrap();
                    for channel in &round.add {
                        self.requested.remove(channel);
                        if let Some(Channel::Session(id) | Channel::Delete(id)) =
                            keys.parse_channel(channel)
                        {
                            table.dirty.insert(id.to_string());
                        }
                    }
                    failure = Some(reason);
                }
                Err(Failure::TimedOut { replaced }) => {
                    if replaced {
                        shared.resubscribe.store(true, Ordering::Release);
                    } else {
                        for channel in &round.add {
                            self.requested.remove(channel);
                            self.uncertain.insert(channel.clone());
                        }
                    }
                    failure = Some(format!(
                        "Redis did not confirm the subscription within {} ms (commandTimeout)",
                        shared.commands.options().command_timeout_ms
                    ));
                }
            }
            match removed {
                Ok(()) => {
                    for channel in &round.remove {
                        self.confirmed.remove(channel);
                    }
                }
                // Left to the next round: unsubscribed again if still unwanted.
                Err(_) => self.uncertain.extend(round.remove.iter().cloned()),
            }
        }
        // Answer the creations this round (and those before it) carried.
        {
            let table = shared.table.lock().unwrap();
            let failure = failure.as_deref().filter(|_| current);
            self.answer_parked(round.number, failure, keys, |id| {
                table.sessions.contains_key(id)
            });
        }
        if !current {
            shared.wake_subscriber.notify_one();
            return None;
        }
        match failure {
            None => {
                self.pause = None;
                if round.number == 1 && shared.keys().is_sharded() {
                    // The topology the first subscriptions were made under (see
                    // `follow_topology`); one Redis has none to compare.
                    shared.check_now.notify_one();
                }
                if round.restoring {
                    self.restoring = false;
                    // Deletes published while we were not subscribed were missed: the
                    // liveness check finds those sessions by their missing keys.
                    shared.check_now.notify_one();
                }
                None
            }
            Some(reason) => {
                if round.restoring {
                    shared.deliveries.problem(&format!(
                        "could not restore the pub/sub subscriptions: {reason}; retrying"
                    ));
                }
                shared.wake_subscriber.notify_one();
                let pause = self.pause.map_or(RETRY_PAUSE, |p| {
                    (p * 2).min(if round.restoring {
                        MAX_RESTORE_PAUSE
                    } else {
                        MAX_RETRY_PAUSE
                    })
                });
                self.pause = Some(pause);
                Some(jittered(pause))
            }
        }
    }
}

/// Handles the pushes that are not messages, and drops the liveness keys of sessions
/// ended by a delete message (those ended together, in one call).
async fn handle_control(mut told: mpsc::UnboundedReceiver<Control>, shared: Arc<Shared>) {
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
            // (the others are where they were), and the topology followed closely.
            if let Some(Value::BulkString(channel)) = push.data.first() {
                let channel = String::from_utf8_lossy(channel).into_owned();
                shared.dropped.lock().unwrap().push(channel);
            }
            shared.subscriber.unsettle();
            shared.wake_subscriber.notify_one();
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

/// The one liveness timer of a manager: refreshes the keys of every confirmed local
/// session and checks that the pub/sub connection still answers.
async fn keep_alive(shared: Arc<Shared>) {
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

/// On a cluster after a fault: a failover is followed as soon as it happened (see
/// `Connection::follow_faults`).
async fn follow_faults(shared: Arc<Shared>) {
    let timeout = shared.commands.options().command_timeout();
    shared
        .subscriber
        .follow_faults(shared.commands.connection(), timeout, || {
            subscribe_everything_again(&shared)
        })
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

/// Refreshes the liveness keys of confirmed local sessions (see [`LIVENESS_SCRIPT`]:
/// never brings back a key a delete removed, never takes over a key another process
/// holds now). Keys found missing while the data epoch is unchanged
/// belong to sessions ended elsewhere: they are closed here. If the epoch changed,
/// Redis lost its data: every key is written again.
async fn refresh(shared: &Shared) -> Result<(), String> {
    let started = Instant::now();
    let (ids, known, written_to, refreshed_from) = {
        let table = shared.table.lock().unwrap();
        let ids: Vec<(String, u32)> = table
            .sessions
            .iter()
            .filter(|(_, s)| s.confirmed)
            .map(|(id, s)| (id.clone(), s.token))
            .collect();
        (ids, table.epoch.clone(), table.master, table.refreshed_from)
    };
    if ids.is_empty() {
        return Ok(());
    }
    let keys = shared.keys();
    let options = shared.commands.options();
    let failed = |reason: String| {
        format!(
            "could not refresh {} session liveness key(s): {reason}",
            ids.len()
        )
    };
    let ttl = options.session_ttl_seconds;
    let mut pipe = Pipeline::new();
    add_epoch(&mut pipe, keys, ttl, None);
    for (id, _) in &ids {
        keep_alive_key(&mut pipe, keys, id, &shared.holder, ttl, false);
    }
    let values = query(shared, &pipe).await.map_err(failed)?;
    let mut values = values.into_iter();
    let epoch = read_epoch_reply(values.next());
    let replies: Vec<Value> = values.collect();
    first_error(&replies).map_err(failed)?;
    if replies.iter().any(|r| matches!(r, Value::Int(0))) && follow_topology(shared).await.is_none()
    {
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
    let ttl_elapsed = refreshed_from.is_some_and(|at| {
        // A margin for the server's clock and the time the write took to arrive.
        at.elapsed() + Duration::from_millis(250) >= Duration::from_secs(u64::from(ttl))
    });
    if !ttl_elapsed && epoch.is_some() && epoch == known && master == written_to {
        let mut ended = Vec::new();
        {
            let mut table = shared.table.lock().unwrap();
            table.refreshed_from = Some(started);
            for ((id, token), reply) in ids.iter().zip(&replies) {
                if matches!(reply, Value::Int(0)) && table.owned(id, *token) {
                    table.remove(id);
                    ended.push(*token);
                }
            }
        }
        shared.close_ended(&ended);
        return Ok(());
    }
    // Redis lost its data, a new master took over (it may lack the last writes), the keys
    // went unrefreshed for a TTL (a master was unreachable), or this is the first look at
    // the epoch: write everything.
    let mut pipe = Pipeline::new();
    add_epoch(&mut pipe, keys, ttl, Some(&epoch_candidate()));
    for (id, _) in &ids {
        // Written where missing; a key another process holds now is kept as it is.
        keep_alive_key(&mut pipe, keys, id, &shared.holder, ttl, true);
        pipe.ignore();
    }
    let values = query(shared, &pipe).await.map_err(failed)?;
    first_error(&values).map_err(failed)?;
    let mut table = shared.table.lock().unwrap();
    if let Some(epoch) = read_epoch_reply(values.into_iter().next()) {
        table.epoch = Some(epoch);
    }
    table.master = master;
    table.refreshed_from = Some(started);
    Ok(())
}

/// Runs a pipeline of the liveness timer on the command connection, within the
/// command timeout.
async fn query(shared: &Shared, pipe: &Pipeline) -> Result<Vec<Value>, String> {
    let timeout = shared.commands.options().command_timeout();
    shared.commands.connection().query(pipe, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_keeps_order_and_arity() {
        let op = StreamOp::from_code(PUBLISH, vec!["data".into(), "a".into(), "b".into()], false)
            .unwrap();
        let mut pipe = Pipeline::new();
        assert_eq!(op.encode(&Keys::default(), &mut pipe), 2);
        let packed = String::from_utf8(pipe.get_packed_pipeline()).unwrap();
        assert!(packed.find("session:a").unwrap() < packed.find("session:b").unwrap());
        assert_eq!(
            StreamOp::from_code(HAS, vec!["a".into(), "b".into()], false),
            None
        );
    }

    #[test]
    fn delete_tells_the_owner_and_drops_the_key() {
        let mut pipe = Pipeline::new();
        assert_eq!(
            StreamOp::Delete("x".into()).encode(&Keys::default(), &mut pipe),
            2
        );
        let packed = String::from_utf8(pipe.get_packed_pipeline()).unwrap();
        assert!(packed.contains("delete:session:x") && packed.contains("available:session:x"));
    }

    #[test]
    fn broadcast_scans_only_in_upstream_mode() {
        let fast = StreamOp::from_code(BROADCAST, vec!["d".into()], false).unwrap();
        let mut pipe = Pipeline::new();
        assert_eq!(fast.encode(&Keys::default(), &mut pipe), 1);
        assert!(fast.follow_up().is_none());
        let compat = StreamOp::from_code(BROADCAST, vec!["d".into()], true).unwrap();
        assert_eq!(compat.encode(&Keys::default(), &mut pipe), 0);
        assert_eq!(
            compat.follow_up(),
            Some(FollowUp::PublishToAliveSessions("d".into()))
        );
    }

    #[test]
    fn has_reads_exists() {
        let op = StreamOp::Has("x".into());
        assert_eq!(op.decode(vec![Value::Int(1)]), Ok(Reply::Int(1)));
    }

    #[test]
    fn mark_live_learns_the_epoch_and_sets_every_key() {
        let op = StreamOp::MarkLive {
            ids: vec!["a".into(), "b".into()],
            ttl: 10,
            holder: "active:1".into(),
        };
        let mut pipe = Pipeline::new();
        assert_eq!(op.encode(&Keys::default(), &mut pipe), 3);
        let packed = String::from_utf8(pipe.get_packed_pipeline()).unwrap();
        assert!(packed.contains("active:1"));
        let values = vec![Value::BulkString(b"e0".to_vec()), Value::Okay, Value::Okay];
        assert_eq!(op.decode(values), Ok(Reply::Text("e0".into())));
    }

    #[test]
    fn mark_gone_removes_only_the_keys_this_manager_still_holds() {
        let op = StreamOp::MarkGone {
            ids: vec!["a".into(), "b".into()],
            holder: "active:2".into(),
        };
        let mut pipe = Pipeline::new();
        assert_eq!(op.encode(&Keys::default(), &mut pipe), 2);
        let packed = String::from_utf8(pipe.get_packed_pipeline()).unwrap();
        assert_eq!(packed.matches(RELEASE_SCRIPT).count(), 2);
        assert_eq!(packed.matches("active:2").count(), 2);
        assert!(!packed.contains("\r\nDEL\r\n"));
    }

    /// Parks a creation of `id` on `round`; its answer arrives on the receiver.
    fn park(
        subscribed: &mut Subscribed,
        round: u64,
        id: &str,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (done, answer) = oneshot::channel();
        subscribed.parked.push((
            round,
            Waiter {
                id: id.into(),
                done,
            },
        ));
        answer
    }

    #[test]
    fn a_creation_carried_by_a_lost_connection_is_answered_by_the_round_that_restored_it() {
        // Round 1 asked for the channel on a connection that was then lost; round 2
        // (the restore, on the new connection) asked again before round 1 finished.
        let keys = Keys::new("");
        let channel = keys.session_channel("a");
        let mut subscribed = Subscribed {
            sent: 2,
            generation: 1,
            ..Subscribed::default()
        };
        subscribed.requested.insert(channel.clone());
        let mut answer = park(&mut subscribed, 1, "a");

        // Round 1 finishes (an older connection's): no answer yet.
        subscribed.answer_parked(1, None, &keys, |_| true);
        assert!(answer.try_recv().is_err());
        // Round 2 confirms the channel: the creation is answered.
        subscribed.confirmed.insert(channel);
        subscribed.answer_parked(2, None, &keys, |_| true);
        assert_eq!(answer.try_recv(), Ok(Ok(())));
        assert!(subscribed.parked.is_empty());
    }

    #[test]
    fn a_creation_whose_channel_is_not_asked_for_yet_waits_for_the_next_round() {
        let keys = Keys::new("");
        let mut subscribed = Subscribed {
            sent: 3,
            ..Subscribed::default()
        };
        let mut answer = park(&mut subscribed, 3, "b");
        subscribed.answer_parked(3, None, &keys, |_| true);
        assert!(answer.try_recv().is_err());
        assert_eq!(subscribed.parked[0].0, 4);
        // A failed round of this connection fails it.
        subscribed.answer_parked(4, Some("refused"), &keys, |_| true);
        assert_eq!(answer.try_recv(), Ok(Err("refused".to_string())));
    }

    #[test]
    fn epoch_candidates_differ() {
        assert_ne!(epoch_candidate(), epoch_candidate());
    }
}
