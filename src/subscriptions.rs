//! MCP `subscriptions/listen` streams across processes (`RedisSubscriptionManager`).
//!
//! Every process publishes change notifications on one channel,
//! `{prefix}tmcp:subscriptions`, as the notification's JSON (upstream's wire format).
//! Each process reads every message here, on tokio: `serde_json` reads only `method`
//! and `params.uri` (borrowed, no copy of the rest) and an index of this process's
//! interests names the local subscriptions that want it. A message nobody here wants
//! never reaches JavaScript; malformed or foreign messages are counted and dropped.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use napi::bindgen_prelude::{FnArgs, Function, ToNapiValue, TypeName, ValueType};
use napi::check_status;
use napi::sys;
use napi_derive::napi;
use redis::{Pipeline, PushInfo, PushKind, Value};
use serde::de::{Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::commands::Commands;
use crate::connection::{jittered, message_parts, Checked, Connection, Failure, PushRoute, Source};
use crate::delivery::{Batches, CompletionBatch, Gatherer, IndexedBytes, Outcome, Reply, Shelved};
use crate::error::first_error;
use crate::keys::Keys;
use crate::operation::Operation;

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

/// The two fields matching needs, borrowed from the message where it has no escapes.
///
/// Read by hand rather than derived: serde's derived structs also accept a JSON array
/// (fields by position), so `["notifications/tools/list_changed"]` would match. Data on
/// the channel is untrusted (SPEC §6): only a JSON object with a string `method`, and
/// an object `params` where present, is a notification.
struct Probe<'a> {
    method: Cow<'a, str>,
    params: Option<ProbeParams<'a>>,
}

struct ProbeParams<'a> {
    uri: Option<Cow<'a, str>>,
}

/// A JSON string, borrowed from the message when it has no escapes (serde's own
/// `Cow<str>` always copies).
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visit(std::marker::PhantomData))
    }
}

/// Reads a JSON object's fields: `read` takes the value of each key it knows (and says
/// so); the others are skipped.
fn visit_object<'de, A>(
    mut map: A,
    mut read: impl FnMut(&str, &mut A) -> Result<bool, A::Error>,
) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
{
    while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
        if !read(&key, &mut map)? {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(())
}

impl<'de: 'a, 'a> Deserialize<'de> for Probe<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Probe<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a notification object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Probe<'a>, A::Error> {
                let mut method: Option<Cow<'a, str>> = None;
                let mut params: Option<ProbeParams<'a>> = None;
                visit_object(map, |key, map| {
                    match key {
                        "method" if method.is_none() => {
                            method = Some(map.next_value::<Text<'a>>()?.0)
                        }
                        "params" if params.is_none() => params = Some(map.next_value()?),
                        "method" | "params" => return Err(A::Error::custom("duplicate field")),
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
                Ok(Probe {
                    method: method.ok_or_else(|| A::Error::missing_field("method"))?,
                    params,
                })
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ProbeParams<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = ProbeParams<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a params object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ProbeParams<'a>, A::Error> {
                let mut uri: Option<Option<Cow<'a, str>>> = None;
                visit_object(map, |key, map| {
                    match key {
                        "uri" if uri.is_none() => {
                            uri = Some(map.next_value::<Option<Text<'a>>>()?.map(|t| t.0))
                        }
                        "uri" => return Err(A::Error::custom("duplicate field")),
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
                Ok(ProbeParams { uri: uri.flatten() })
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// Which local subscriptions (by token) want which notifications.
#[derive(Default)]
pub struct Interests {
    tools: HashSet<u32>,
    prompts: HashSet<u32>,
    resources: HashSet<u32>,
    by_uri: HashMap<String, HashSet<u32>>,
    /// token → its uris, to remove them again.
    uris_of: HashMap<u32, Vec<String>>,
}

/// What a message on the channel turned out to be.
#[derive(Debug, PartialEq)]
pub enum Matched {
    /// Local subscriptions that want it, in token order.
    Tokens(Vec<u32>),
    /// A notification no local subscription wants.
    Unwanted,
    /// Not a JSON object with a string `method`.
    Malformed,
}

impl Interests {
    pub fn watch(&mut self, token: u32, flags: u32, uris: Vec<String>) {
        if flags & WANTS_TOOLS_LIST_CHANGED != 0 {
            self.tools.insert(token);
        }
        if flags & WANTS_PROMPTS_LIST_CHANGED != 0 {
            self.prompts.insert(token);
        }
        if flags & WANTS_RESOURCES_LIST_CHANGED != 0 {
            self.resources.insert(token);
        }
        for uri in &uris {
            self.by_uri.entry(uri.clone()).or_default().insert(token);
        }
        self.uris_of.insert(token, uris);
    }

    pub fn unwatch(&mut self, token: u32) {
        self.tools.remove(&token);
        self.prompts.remove(&token);
        self.resources.remove(&token);
        for uri in self.uris_of.remove(&token).unwrap_or_default() {
            if let Some(tokens) = self.by_uri.get_mut(&uri) {
                tokens.remove(&token);
                if tokens.is_empty() {
                    self.by_uri.remove(&uri);
                }
            }
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.uris_of.is_empty()
    }

    /// The local subscriptions a message is for, by `@tmcp/session-manager`'s
    /// `matchesSubscription` rules.
    pub fn match_message(&self, payload: &[u8]) -> Matched {
        let Ok(probe) = serde_json::from_slice::<Probe>(payload) else {
            return Matched::Malformed;
        };
        let set = match probe.method.as_ref() {
            "notifications/tools/list_changed" => Some(&self.tools),
            "notifications/prompts/list_changed" => Some(&self.prompts),
            "notifications/resources/list_changed" => Some(&self.resources),
            "notifications/resources/updated" => probe
                .params
                .and_then(|p| p.uri)
                .and_then(|uri| self.by_uri.get(uri.as_ref())),
            _ => None,
        };
        match set {
            Some(tokens) if !tokens.is_empty() => {
                let mut tokens: Vec<u32> = tokens.iter().copied().collect();
                tokens.sort_unstable();
                Matched::Tokens(tokens)
            }
            _ => Matched::Unwanted,
        }
    }
}

/// Appends one matched notification: its payload, and `[offset, length, count, token…]`.
fn push_notification(batch: &mut IndexedBytes, payload: &[u8], tokens: &[u32]) {
    let head = [
        batch.byte_len() as u32,
        payload.len() as u32,
        tokens.len() as u32,
    ];
    batch.push(payload, head.into_iter().chain(tokens.iter().copied()));
}

/// `[bytes, words]`, or `[message, kind]` for a background problem (see `ErrorKind`).
pub enum NotificationArrays {
    Batch(Shelved),
    Problem(String),
}

impl From<Shelved> for NotificationArrays {
    fn from(batch: Shelved) -> Self {
        NotificationArrays::Batch(batch)
    }
}

impl TypeName for NotificationArrays {
    fn type_name() -> &'static str {
        "[Uint8Array, Uint32Array] | [string, number]"
    }

    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for NotificationArrays {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        match val {
            NotificationArrays::Batch(batch) => Shelved::to_napi_value(env, batch),
            NotificationArrays::Problem(problem) => {
                let kind = crate::error::error_kind(&problem) as u32;
                let mut pair = std::ptr::null_mut();
                check_status!(sys::napi_create_array_with_length(env, 2, &mut pair))?;
                let message = String::to_napi_value(env, problem)?;
                check_status!(sys::napi_set_element(env, pair, 0, message))?;
                let kind = u32::to_napi_value(env, kind)?;
                check_status!(sys::napi_set_element(env, pair, 1, kind))?;
                Ok(pair)
            }
        }
    }
}

pub type NotificationArgs = FnArgs<(NotificationArrays,)>;

/// Feeds local subscriptions: `(batch) => void`. Notifications are gathered like stream
/// deliveries (see [`Gatherer`]); a problem crosses alone, on a threadsafe function of
/// its own (same callback).
pub struct Notifications {
    matched: Gatherer<NotificationArrays>,
    problems: Batches<String, NotificationArrays>,
}

impl Notifications {
    pub fn new(callback: &Function<'_, NotificationArgs, ()>) -> napi::Result<Self> {
        Ok(Notifications {
            matched: Gatherer::new(callback)?,
            problems: Batches::new(callback, NotificationArrays::Problem)?,
        })
    }

    fn push(&self, payload: &[u8], tokens: &[u32]) {
        self.matched.push(payload.len(), |batch| {
            push_notification(batch, payload, tokens)
        });
    }

    fn problem(&self, message: String) {
        self.problems.send(message);
    }
}

/// State shared by the calls and the background tasks.
struct Shared {
    interests: Mutex<Interests>,
    commands: Arc<Commands>,
    subscriber: Arc<Connection>,
    notifications: Notifications,
    channel: String,
    /// Whether the channel is subscribed now.
    subscribed: AtomicBool,
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
                Err(Failure::Refused(reason)) => Some(reason),
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
            || {
                shared.subscribed.store(false, Ordering::Release);
                shared.wake.notify_one();
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
            // cluster, its slot moved; subscribe again at the new owner.
            PushKind::SUnsubscribe => {
                shared.subscribed.store(false, Ordering::Release);
                shared.wake.notify_one();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn interests() -> Interests {
        let mut i = Interests::default();
        i.watch(1, WANTS_TOOLS_LIST_CHANGED, vec!["file:///a".into()]);
        i.watch(
            2,
            WANTS_PROMPTS_LIST_CHANGED | WANTS_RESOURCES_LIST_CHANGED,
            vec![],
        );
        i.watch(3, 0, vec!["file:///a".into(), "file:///b".into()]);
        i
    }

    #[test]
    fn matches_like_matches_subscription() {
        let i = interests();
        let m = |json: &str| i.match_message(json.as_bytes());
        assert_eq!(
            m(r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#),
            Matched::Tokens(vec![1])
        );
        assert_eq!(
            m(r#"{"method":"notifications/prompts/list_changed","params":{}}"#),
            Matched::Tokens(vec![2])
        );
        assert_eq!(
            m(r#"{"method":"notifications/resources/updated","params":{"uri":"file:///a"}}"#),
            Matched::Tokens(vec![1, 3])
        );
        assert_eq!(
            m(r#"{"method":"notifications/resources/updated","params":{"uri":"file:///c"}}"#),
            Matched::Unwanted
        );
        assert_eq!(
            m(r#"{"method":"notifications/resources/updated","params":{"uri":7}}"#),
            Matched::Malformed
        );
        assert_eq!(
            m(r#"{"method":"notifications/message","params":{}}"#),
            Matched::Unwanted
        );
        assert_eq!(m("not json"), Matched::Malformed);
        assert_eq!(m(r#"{"id":1}"#), Matched::Malformed);
        assert_eq!(m(r#"[1,2]"#), Matched::Malformed);
        // Arrays are not notifications, nor are params that are not an object (serde's
        // derived structs read both by position).
        assert_eq!(
            m(r#"["notifications/tools/list_changed"]"#),
            Matched::Malformed
        );
        assert_eq!(
            m(r#"["notifications/resources/updated",{"uri":"file:///a"}]"#),
            Matched::Malformed
        );
        assert_eq!(
            m(r#"{"method":"notifications/resources/updated","params":["file:///a"]}"#),
            Matched::Malformed
        );
        assert_eq!(
            m(r#"{"method":"notifications/tools/list_changed","params":null}"#),
            Matched::Malformed
        );
        assert_eq!(
            m(r#"{"method":"notifications/tools/list_changed","method":"x"}"#),
            Matched::Malformed
        );
        assert_eq!(
            m(
                r#"{"params":{"uri":"file:///a","other":[1,{"a":2}]},"method":"notifications/resources/updated","x":1}"#
            ),
            Matched::Tokens(vec![1, 3])
        );
    }

    #[test]
    fn escaped_uris_match_too() {
        let mut i = Interests::default();
        i.watch(9, 0, vec!["file:///a b\"c".into()]);
        let json =
            r#"{"method":"notifications/resources/updated","params":{"uri":"file:///a b\"c"}}"#;
        assert_eq!(i.match_message(json.as_bytes()), Matched::Tokens(vec![9]));
    }

    #[test]
    fn unwatch_forgets_every_interest() {
        let mut i = interests();
        i.unwatch(1);
        i.unwatch(3);
        assert!(i.by_uri.is_empty());
        assert!(i.tools.is_empty());
        i.unwatch(2);
        assert!(i.is_empty());
    }

    #[test]
    fn batches_list_tokens_after_each_payload() {
        let mut b = IndexedBytes::default();
        push_notification(&mut b, b"{}", &[4, 5]);
        push_notification(&mut b, b"[]", &[6]);
        assert_eq!(b.words(), &[0, 2, 2, 4, 5, 2, 2, 1, 6]);
        assert_eq!(b.bytes(), b"{}[]");
    }
}
