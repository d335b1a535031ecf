//! MCP `subscriptions/listen` streams across processes (`RedisSubscriptionManager`).
//!
//! Every process publishes change notifications on one channel,
//! `{prefix}tmcp:subscriptions`, as the notification's JSON (upstream's wire format).
//! Each process reads every message here, on tokio: `serde_json` reads only `method`
//! and `params.uri` (borrowed, no copy of the rest) and an index of this process's
//! interests names the local subscriptions that want it. A message nobody here wants
//! never reaches JavaScript; malformed or foreign messages are counted and dropped.
//!
//! This module owns the manager ([`Subscriptions`]: its construction, the calls
//! JavaScript makes, its stats, closing), the state its tasks share, the tasks that keep
//! the channel subscribed (lazily, again after a lost connection or a moved slot, a
//! silent connection replaced) and the one call it sends ([`PublishNotification`]). It
//! must not read a message's JSON nor decide who wants it (`interests` does), and must
//! not open or repair connections itself: `crate::connection` does. Its files, imports
//! going one way (a file imports only from this one and from files listed before it):
//! * `probe`: reads the two fields matching needs from an untrusted message, borrowed;
//! * `interests`: which local subscriptions want which notifications, and the batches
//!   of matched notifications (and problems) handed to JavaScript.

mod interests;
mod probe;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi_derive::napi;
use redis::{Pipeline, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::commands::Commands;
use crate::connection::{
    jittered, message_parts, Checked, Connection, Dropped, Failure, PushRoute, Source,
};
use crate::delivery::{CompletionBatch, Outcome, Reply};
use crate::error::first_error;
use crate::keys::Keys;
use crate::operation::Operation;

use interests::{Interests, Matched};
pub use interests::{NotificationArgs, Notifications};

/// Call code: PUBLISH a notification on the subscriptions channel.
#[napi]
pub const NOTIFY: u32 = 30;

/// The one call of this manager ([`NOTIFY`]): PUBLISH a change notification (its JSON)
/// for every process's `RedisSubscriptionManager`s.
#[derive(Debug, PartialEq)]
pub struct PublishNotification(pub String);

impl PublishNotification {
    /// Builds the call from JavaScript's arguments: the notification's JSON alone.
    pub fn from_args(mut args: Vec<String>) -> Option<PublishNotification> {
        (args.len() == 1).then(|| PublishNotification(args.remove(0)))
    }
}

impl Operation for PublishNotification {
    fn weight(&self) -> usize {
        self.0.len()
    }

    fn encode(&self, keys: &Keys, pipe: &mut Pipeline) -> usize {
        pipe.cmd(keys.publish())
            .arg(keys.subscriptions_channel())
            .arg(&self.0);
        1
    }

    fn decode(&self, replies: Vec<Value>) -> Outcome {
        first_error(&replies).map(|()| Reply::Done)
    }
}

/// Interest flags of `NativeSubscriptions.watch` (bits of its `flags` argument).
#[napi]
pub const WANTS_TOOLS_LIST_CHANGED: u32 = 1;
#[napi]
pub const WANTS_PROMPTS_LIST_CHANGED: u32 = 2;
#[napi]
pub const WANTS_RESOURCES_LIST_CHANGED: u32 = 4;

/// First pause before subscribing again after a failure; doubles up to the maximum.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Notifications are lost while the channel is not subscribed: retried at least every
/// second, so delivery resumes within about a second of Redis being healthy.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// State shared by the calls and the background tasks.
struct Shared {
    interests: Mutex<Interests>,
    commands: Arc<Commands>,
    subscriber: Arc<Connection>,
    notifications: Notifications,
    channel: String,
    /// Whether the channel is subscribed now.
    subscribed: AtomicBool,
    /// Since when a cluster node dropped the channel: subscribed again once the topology
    /// shows the move (see `Connection::read_topology_now`).
    dropped_unfollowed: Mutex<Option<std::time::Instant>>,
    /// Whether a subscription was ever asked for (the connection opens only then).
    wanted: AtomicBool,
    /// Calls waiting for the channel to be subscribed: answered once it is, or failed at
    /// their deadline.
    waiting: Mutex<Vec<(u32, Instant)>>,
    /// Wakes the subscriber task.
    wake: Notify,
    ignored: AtomicU64,
    unwanted: AtomicU64,
    /// Pushes other than messages, for the control task.
    control: mpsc::UnboundedSender<PushInfo>,
}

/// The subscriber side of a subscription manager.
pub struct Subscriptions {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Subscriptions {
    /// Opens the pub/sub connection (lazily) and starts the tasks. Must run inside tokio.
    pub fn start(
        source: Source,
        commands: Arc<Commands>,
        notifications: Notifications,
    ) -> Result<Self, String> {
        let (route, sink) = PushRoute::new(Shared::on_push);
        let subscriber = Connection::pubsub(source, commands.options(), sink)?;
        let (control, control_rx) = mpsc::unbounded_channel();
        let channel = commands.keys().subscriptions_channel();
        let shared = Arc::new(Shared {
            interests: Mutex::new(Interests::default()),
            commands,
            subscriber,
            notifications,
            channel,
            subscribed: AtomicBool::new(false),
            dropped_unfollowed: Mutex::new(None),
            wanted: AtomicBool::new(false),
            waiting: Mutex::new(Vec::new()),
            wake: Notify::new(),
            ignored: AtomicU64::new(0),
            unwanted: AtomicU64::new(0),
            control,
        });
        route.set(&shared);
        let tasks = vec![
            tokio::spawn(keep_subscribed(shared.clone())),
            tokio::spawn(handle_control(control_rx, shared.clone())),
            tokio::spawn(follow_faults(shared.clone())),
        ];
        Ok(Subscriptions { shared, tasks })
    }

    /// Answers `call` once the channel is subscribed (at once if it is), or fails it after
    /// the command timeout.
    pub fn ready(&self, call: u32) {
        self.shared.wanted.store(true, Ordering::Release);
        if self.shared.subscribed.load(Ordering::Acquire) {
            self.shared
                .commands
                .completions()
                .one(call, Ok(Reply::Done));
            return;
        }
        let deadline = Instant::now() + self.shared.commands.options().command_timeout();
        self.shared.waiting.lock().unwrap().push((call, deadline));
        self.shared.wake.notify_one();
    }

    pub fn watch(&self, token: u32, flags: u32, uris: Vec<String>) {
        self.shared
            .interests
            .lock()
            .unwrap()
            .watch(token, flags, uris);
    }

    pub fn unwatch(&self, token: u32) {
        self.shared.interests.lock().unwrap().unwatch(token);
    }

    /// The pub/sub connection's figures (see `stats::ConnectionStats::figures`), then
    /// `[ignored, unwanted, deliveryQueue, subscribed]`: messages dropped as malformed or
    /// foreign, notifications no local subscription wanted, notifications matched and
    /// not yet taken by JavaScript, and whether the channel is subscribed now (0 or 1).
    pub fn stats(&self) -> Vec<f64> {
        let shared = &self.shared;
        let mut figures = shared.subscriber.stats.figures().to_vec();
        figures.extend([
            shared.ignored.load(Ordering::Relaxed) as f64,
            shared.unwanted.load(Ordering::Relaxed) as f64,
            shared.notifications.matched.queued() as f64,
            f64::from(u8::from(shared.subscribed.load(Ordering::Relaxed))),
        ]);
        figures
    }

    /// The pub/sub connection's figures and events.
    pub fn subscriber_stats(&self) -> &crate::stats::ConnectionStats {
        &self.shared.subscriber.stats
    }

    pub fn close(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let waiting = std::mem::take(&mut *self.shared.waiting.lock().unwrap());
        let mut answers = CompletionBatch::default();
        for (call, _) in waiting {
            answers.push(call, Err("the subscription manager is closed".into()));
        }
        self.shared.commands.completions().send(answers);
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Subscribes the channel when first needed and again after every lost connection;
/// answers and times out the calls waiting for it.
async fn keep_subscribed(shared: Arc<Shared>) {
    let timeout = shared.commands.options().command_timeout();
    let mut pause = RETRY_PAUSE;
    let every = shared.commands.options().refresh_every();
    let mut check = tokio::time::interval_at(Instant::now() + every, every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = check.tick() => check_connection(&shared).await,
        }
        // Connected lazily: only once a subscription was asked for.
        if !shared.wanted.load(Ordering::Acquire) {
            continue;
        }
        while !shared.subscribed.load(Ordering::Acquire) {
            let channel = std::slice::from_ref(&shared.channel);
            let link = shared.subscriber.generation();
            let failure = match shared.subscriber.subscribe(channel, timeout).await {
                // Confirmed on a link replaced meanwhile (a failover followed by the
                // other task): gone with it, subscribed again on the fresh one.
                Ok(()) if shared.subscriber.generation() != link => continue,
                Ok(()) => {
                    // On a cluster: the topology this subscription was made under, to
                    // compare with at each check. If the slots moved since the last look
                    // (a restore after a master was lost), the connection was just
                    // replaced, subscription and all: subscribe again on the fresh one.
                    if shared
                        .subscriber
                        .follow_topology(shared.commands.connection(), timeout)
                        .await
                        == Some(true)
                    {
                        continue;
                    }
                    shared.subscribed.store(true, Ordering::Release);
                    pause = RETRY_PAUSE;
                    None
                }
                Err(Failure::Refused(reason) | Failure::Held { reason, .. }) => Some(reason),
                Err(Failure::TimedOut { .. }) => Some(format!(
                    "Redis did not confirm the subscription within {} ms (commandTimeout)",
                    timeout.as_millis()
                )),
            };
            answer_waiting(&shared, failure.as_deref());
            if failure.is_some() {
                tokio::time::sleep(jittered(pause)).await;
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
        }
        answer_waiting(&shared, None);
    }
}

/// On a cluster: a failover is followed as soon as it happened, with or without a fault
/// seen here (see `Connection::follow_faults`), and the channel subscribed again at its
/// slot's owner.
async fn follow_faults(shared: Arc<Shared>) {
    let timeout = shared.commands.options().command_timeout();
    shared
        .subscriber
        .follow_faults(
            shared.commands.connection(),
            timeout,
            || shared.subscribed.load(Ordering::Acquire),
            |outcome| {
                let mut dropped = shared.dropped_unfollowed.lock().unwrap();
                let after = Dropped::after_read(outcome, *dropped);
                if after == Dropped::Hold {
                    return true;
                }
                // One channel: subscribed again after any move (on the connection as it
                // is, or a fresh one after a demotion), or once its drop is followed.
                if outcome == Some(true) || after == Dropped::Release {
                    *dropped = None;
                    shared.subscribed.store(false, Ordering::Release);
                    shared.wake.notify_one();
                }
                false
            },
        )
        .await;
}

/// PINGs a subscribed connection; a silent one is replaced (and so subscribed again).
async fn check_connection(shared: &Shared) {
    if !shared.subscribed.load(Ordering::Acquire) {
        return;
    }
    let timeout = shared.commands.options().command_timeout();
    match shared
        .subscriber
        .check(shared.commands.connection(), timeout, || {
            // One channel, wanted while subscribed (see `keep_subscribed`).
            shared
                .subscribed
                .load(Ordering::Acquire)
                .then(|| vec![shared.channel.clone()])
        })
        .await
    {
        Checked::Fine | Checked::Failed(_) => {}
        Checked::Moved => shared.subscribed.store(false, Ordering::Release),
        Checked::Resynced => {
            shared.subscribed.store(false, Ordering::Release);
            shared.notifications.problem(
                "the cluster's nodes did not hold the subscription manager's pub/sub subscription; subscribing again on a fresh connection"
                    .into(),
            );
        }
        Checked::Replaced { silent } => {
            // A fresh connection: subscribed again.
            shared.subscribed.store(false, Ordering::Release);
            if silent {
                shared.notifications.problem(
                    "the Redis pub/sub connection of the subscription manager stopped answering; replaced it and resubscribing"
                        .into(),
                );
            }
        }
    }
}

/// Answers the waiting calls: all of them once subscribed; after a failure only those
/// whose deadline passed.
fn answer_waiting(shared: &Shared, failure: Option<&str>) {
    let mut answers = CompletionBatch::default();
    {
        let now = Instant::now();
        let mut waiting = shared.waiting.lock().unwrap();
        waiting.retain(|(call, deadline)| match failure {
            None => {
                answers.push(*call, Ok(Reply::Done));
                false
            }
            Some(reason) if *deadline <= now + RETRY_PAUSE => {
                answers.push(*call, Err(reason.to_string()));
                false
            }
            Some(_) => true,
        });
    }
    shared.commands.completions().send(answers);
}

impl Shared {
    /// Takes one push of the pub/sub connection, on the tokio thread as redis-rs reads
    /// it: a message is matched and gathered for JavaScript at once, the rest goes to the
    /// control task.
    fn on_push(&self, push: PushInfo) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => self.route(push.data),
            _ => {
                let _ = self.control.send(push);
            }
        }
    }

    /// Matches one message against the local interests; only matches cross to
    /// JavaScript.
    fn route(&self, data: Vec<Value>) {
        let Some((channel, payload)) = message_parts(data) else {
            return;
        };
        if channel != self.channel.as_bytes() {
            return;
        }
        let matched = self.interests.lock().unwrap().match_message(&payload);
        match matched {
            Matched::Tokens(tokens) => self.notifications.push(&payload, &tokens),
            Matched::Unwanted => {
                self.unwanted.fetch_add(1, Ordering::Relaxed);
            }
            Matched::Malformed => {
                self.ignored.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Follows what the connection says besides messages: a lost connection, a sharded
/// channel dropped by the server.
async fn handle_control(mut told: mpsc::UnboundedReceiver<PushInfo>, shared: Arc<Shared>) {
    while let Some(push) = told.recv().await {
        match push.kind {
            // Only the server drops this channel (it is never unsubscribed): on a
            // cluster, its slot moved; subscribed again at the new owner once the
            // topology was read (on a fresh connection if the node was demoted).
            PushKind::SUnsubscribe => {
                shared.subscribed.store(false, Ordering::Release);
                shared
                    .dropped_unfollowed
                    .lock()
                    .unwrap()
                    .get_or_insert_with(std::time::Instant::now);
                shared.subscriber.read_topology_now();
            }
            PushKind::Disconnection => {
                shared.subscriber.stats.lost();
                // On a cluster, a fresh connection (see `Connection::renew`).
                shared.subscriber.renew();
                shared.subscribed.store(false, Ordering::Release);
                shared.wake.notify_one();
                shared.notifications.problem(
                    "lost the Redis pub/sub connection of the subscription manager; reconnecting and resubscribing"
                        .into(),
                );
            }
            _ => {}
        }
    }
}
