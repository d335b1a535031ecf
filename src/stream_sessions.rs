//! SSE streams: which sessions this process holds, receiving their messages over
//! pub/sub, and keeping their liveness keys fresh.
//!
//! The controllers live in JavaScript; here each local session is a `token` (a number
//! JavaScript chose) so deliveries cross the boundary without session-id strings.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Client, Pipeline, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::commands::{connection_manager, until_connected, Commands, Encoded, ScanJob, Shape};
use crate::config::NativeOptions;
use crate::delivery::{CompletionBatch, Deliveries, DeliveryBatch, DeliveryKind, Reply};
use crate::error::describe_redis_error;
use crate::keys::{Channel, Keys};
use crate::requests::Resp;

/// Bytes gathered into one delivery before it is handed to JavaScript.
const MAX_DELIVERY_BYTES: usize = 4 << 20;

/// Call codes (see `lib/wire.js`).
const HAS: u32 = 20;
const PUBLISH: u32 = 21;
const BROADCAST: u32 = 22;
const DELETE: u32 = 23;

/// Writes one stream-manager call that is plain commands; `None` for an unknown code or
/// a wrong argument count.
pub fn encode(
    code: u32,
    args: &[&str],
    keys: &Keys,
    upstream_compatible: bool,
    out: &mut Resp,
) -> Option<Encoded> {
    Some(match (code, args) {
        // Whether `available:session:{id}` exists.
        (HAS, [id]) => {
            out.command(&[b"EXISTS", keys.alive(id).as_bytes()]);
            Encoded::read(1, Shape::Exists)
        }
        // `data` to `session:{id}` for each id, in order.
        (PUBLISH, [data, ids @ ..]) => {
            for id in ids {
                let channel = keys.session_channel(id);
                out.command(&[b"PUBLISH", channel.as_bytes(), data.as_bytes()]);
            }
            Encoded::done(ids.len())
        }
        // Upstream-compatible mode publishes per `available:session:*` key, as upstream.
        (BROADCAST, [data]) if upstream_compatible => Encoded {
            count: 0,
            shape: Shape::Done,
            scan: Some(ScanJob::PublishToAliveSessions(data.to_string())),
        },
        // One PUBLISH on our broadcast channel.
        (BROADCAST, [data]) => {
            let channel = keys.broadcast_channel();
            out.command(&[b"PUBLISH", channel.as_bytes(), data.as_bytes()]);
            Encoded::done(1)
        }
        // End the session everywhere: tell its owner, drop its liveness key.
        (DELETE, [id]) => {
            out.command(&[b"PUBLISH", keys.delete_channel(id).as_bytes(), b""]);
            out.command(&[b"DEL", keys.alive(id).as_bytes()]);
            Encoded::done(2)
        }
        _ => return None,
    })
}

/// Refresh of liveness keys: may it create missing ones?
#[derive(Clone, Copy, PartialEq)]
enum Missing {
    Create,
    /// `XX`: a refresh must not resurrect a key that a delete just removed.
    Skip,
}

/// `SET available:session:{id} active EX ttl` for each id, in one pipeline.
fn mark_live<'a>(
    keys: &Keys,
    ids: impl IntoIterator<Item = &'a String>,
    ttl: u32,
    missing: Missing,
) -> Pipeline {
    let mut pipe = Pipeline::new();
    for id in ids {
        let cmd = pipe
            .cmd("SET")
            .arg(keys.alive(id))
            .arg("active")
            .arg("EX")
            .arg(ttl);
        if missing == Missing::Skip {
            cmd.arg("XX");
        }
        cmd.ignore();
    }
    pipe
}

/// `DEL available:session:{id}` for each id, in one pipeline.
fn mark_gone<'a>(keys: &Keys, ids: impl IntoIterator<Item = &'a String>) -> Pipeline {
    let mut pipe = Pipeline::new();
    for id in ids {
        pipe.cmd("DEL").arg(keys.alive(id)).ignore();
    }
    pipe
}

/// One change to the local sessions, as JavaScript asked.
pub enum Change {
    Create {
        call: u32,
        id: String,
        token: u32,
    },
    Drop {
        id: String,
        token: u32,
        forget: bool,
    },
}

/// State shared between the calls and the background tasks.
struct Shared {
    /// Local sessions: id → token of its JavaScript controller.
    local: Mutex<HashMap<String, u32>>,
    broadcast_subscribed: AtomicBool,
    /// Liveness keys must be written unconditionally on the next refresh (after a
    /// reconnect Redis may have lost them).
    reassert: AtomicBool,
    /// Wakes the liveness task when the pub/sub connection drops.
    disconnected: Notify,
}

/// The subscriber side of a stream manager.
pub struct StreamSessions {
    commands: Arc<Commands>,
    subscriber: ConnectionManager,
    deliveries: Arc<Deliveries>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl StreamSessions {
    /// Starts the receive loop and the one liveness timer. Must run inside tokio.
    pub fn start(
        client: Client,
        commands: Arc<Commands>,
        deliveries: Deliveries,
    ) -> Result<Self, String> {
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let subscriber = connection_manager(client, commands.options(), Some(push_tx))?;
        let shared = Arc::new(Shared {
            local: Mutex::new(HashMap::new()),
            broadcast_subscribed: AtomicBool::new(false),
            reassert: AtomicBool::new(false),
            disconnected: Notify::new(),
        });
        let deliveries = Arc::new(deliveries);
        let tasks = vec![
            tokio::spawn(receive(
                push_rx,
                shared.clone(),
                commands.clone(),
                subscriber.clone(),
                deliveries.clone(),
            )),
            tokio::spawn(keep_alive(
                shared.clone(),
                commands.clone(),
                subscriber.clone(),
                deliveries.clone(),
            )),
        ];
        Ok(StreamSessions {
            commands,
            subscriber,
            deliveries,
            shared,
            tasks,
        })
    }

    /// Applies the session changes of one JavaScript tick, in order: one SUBSCRIBE and
    /// one pipeline of liveness keys for all creations, one UNSUBSCRIBE for all ends.
    /// Each creation's `call` is answered once its subscription is live.
    pub fn apply(&self, changes: Vec<Change>) {
        let mut created: Vec<(u32, String, u32)> = Vec::new();
        let mut ended: Vec<String> = Vec::new();
        let mut forgotten: Vec<String> = Vec::new();
        {
            let mut local = self.shared.local.lock().unwrap();
            for change in changes {
                match change {
                    // Replaces an older token for the same id.
                    Change::Create { call, id, token } => {
                        local.insert(id.clone(), token);
                        created.push((call, id, token));
                    }
                    Change::Drop { id, token, forget } => {
                        if local.get(&id) == Some(&token) {
                            local.remove(&id);
                            if forget {
                                forgotten.push(id.clone());
                            }
                            ended.push(id);
                        }
                    }
                }
            }
            // A session re-created in the same tick keeps its channels and its liveness
            // key. Creations ended in the same tick still subscribe (their callers get
            // Redis's answer); the creation task then ends them (see `start_sessions`).
            ended.retain(|id| !local.contains_key(id));
            forgotten.retain(|id| !local.contains_key(id));
        }
        if !ended.is_empty() {
            end_sessions(
                self.commands.clone(),
                self.subscriber.clone(),
                self.deliveries.clone(),
                ended,
                forgotten,
            );
        }
        if !created.is_empty() {
            self.start_sessions(created);
        }
    }

    /// Subscribes and marks live the sessions created in one tick, then answers them.
    fn start_sessions(&self, created: Vec<(u32, String, u32)>) {
        let keys = self.commands.keys().clone();
        let mut channels = Vec::with_capacity(created.len() * 2 + 1);
        for (_, id, _) in &created {
            channels.push(keys.session_channel(id));
            channels.push(keys.delete_channel(id));
        }
        let with_broadcast = !self
            .shared
            .broadcast_subscribed
            .swap(true, Ordering::SeqCst);
        if with_broadcast {
            channels.push(keys.broadcast_channel());
        }
        let ttl = self.commands.options().session_ttl_seconds;
        let mark_live = mark_live(
            &keys,
            created.iter().map(|(_, id, _)| id),
            ttl,
            Missing::Create,
        );
        let subscriber = self.subscriber.clone();
        let connection = self.commands.connection();
        let options = self.commands.options().clone();
        let shared = self.shared.clone();
        let completions = self.commands.completions().clone();
        let commands = self.commands.clone();
        let deliveries = self.deliveries.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + options.command_timeout();
            // Subscribe and mark live concurrently: one round trip instead of two.
            let subscribe = until_connected(deadline, || {
                let mut subscriber = subscriber.clone();
                let channels = &channels;
                async move { subscriber.subscribe(channels).await }
            });
            let marked = until_connected(deadline, || {
                let mut connection = connection.clone();
                let mark_live = &mark_live;
                async move { mark_live.query_async::<()>(&mut connection).await }
            });
            let work = async {
                let (subscribed, marked) = tokio::join!(subscribe, marked);
                match (subscribed?, marked?) {
                    (Err(e), _) | (_, Err(e)) => Ok::<_, tokio::time::error::Elapsed>(Err(e)),
                    _ => Ok(Ok(())),
                }
            };
            let outcome = match work.await {
                Ok(Ok(())) => Ok(Reply::Nil),
                Ok(Err(e)) => Err(describe_redis_error(&e)),
                Err(_) => Err(format!(
                    "Redis did not confirm the subscription within {} ms (commandTimeout)",
                    options.command_timeout_ms
                )),
            };
            if outcome.is_ok() {
                // Sessions ended while their subscription was on its way (an end may
                // overtake it): end them again now that it is in place.
                let gone: Vec<String> = {
                    let local = shared.local.lock().unwrap();
                    created
                        .iter()
                        .filter(|(_, id, _)| !local.contains_key(id))
                        .map(|(_, id, _)| id.clone())
                        .collect()
                };
                if !gone.is_empty() {
                    end_sessions(commands, subscriber, deliveries, gone.clone(), gone);
                }
            } else {
                if with_broadcast {
                    shared.broadcast_subscribed.store(false, Ordering::SeqCst);
                }
                // The keys may have been written while the subscription failed.
                let undo = mark_gone(&keys, created.iter().map(|(_, id, _)| id));
                let _ = tokio::time::timeout(
                    options.command_timeout(),
                    undo.query_async::<()>(&mut connection.clone()),
                )
                .await;
                let mut local = shared.local.lock().unwrap();
                for (_, id, token) in &created {
                    if local.get(id) == Some(token) {
                        local.remove(id);
                    }
                }
            }
            let mut answers = CompletionBatch::default();
            for (call, _, _) in &created {
                answers.push(*call, outcome.clone());
            }
            completions.send(answers);
        });
    }

    /// Drops every local session (their liveness keys too) and stops the background
    /// tasks; answers `call` when Redis has been told, or on timeout.
    pub fn close(&mut self, call: u32) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let ids: Vec<String> = self
            .shared
            .local
            .lock()
            .unwrap()
            .drain()
            .map(|(id, _)| id)
            .collect();
        let keys = self.commands.keys().clone();
        let mut connection = self.commands.connection();
        let timeout = self.commands.options().command_timeout();
        let completions = self.commands.completions().clone();
        tokio::spawn(async move {
            let mut outcome = Ok(Reply::Nil);
            if !ids.is_empty() {
                let pipe = mark_gone(&keys, &ids);
                outcome =
                    match tokio::time::timeout(timeout, pipe.query_async::<()>(&mut connection))
                        .await
                    {
                        Ok(Ok(())) => Ok(Reply::Nil),
                        Ok(Err(e)) => Err(describe_redis_error(&e)),
                        Err(_) => Err("Redis did not answer while closing".to_string()),
                    };
            }
            completions.one(call, outcome);
        });
    }
}

impl Drop for StreamSessions {
    fn drop(&mut self) {
        // The tasks hold connection clones; without this they would outlive the manager.
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Unsubscribes ended sessions and deletes the liveness keys of `forgotten` ones.
fn end_sessions(
    commands: Arc<Commands>,
    mut subscriber: ConnectionManager,
    deliveries: Arc<Deliveries>,
    ids: Vec<String>,
    forgotten: Vec<String>,
) {
    tokio::spawn(async move {
        let keys = commands.keys().clone();
        let timeout = commands.options().command_timeout();
        let channels: Vec<String> = ids
            .iter()
            .flat_map(|id| [keys.session_channel(id), keys.delete_channel(id)])
            .collect();
        let work = async {
            subscriber.unsubscribe(&channels).await?;
            if !forgotten.is_empty() {
                mark_gone(&keys, &forgotten)
                    .query_async::<()>(&mut commands.connection())
                    .await?;
            }
            Ok::<(), redis::RedisError>(())
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => deliveries.problem(&format!(
                "could not end {} session(s) in Redis: {}",
                ids.len(),
                describe_redis_error(&e)
            )),
            Err(_) => deliveries.problem("Redis did not answer while ending a session"),
        }
    });
}

/// Turns pub/sub pushes into batched deliveries for JavaScript.
async fn receive(
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    shared: Arc<Shared>,
    commands: Arc<Commands>,
    subscriber: ConnectionManager,
    deliveries: Arc<Deliveries>,
) {
    let keys = commands.keys().clone();
    while let Some(first) = pushes.recv().await {
        let mut batch = DeliveryBatch::default();
        let mut ended = Vec::new();
        let mut next = Some(first);
        while let Some(push) = next.take() {
            route(push, &keys, &shared, &mut batch, &mut ended, &deliveries);
            if batch.byte_len() < MAX_DELIVERY_BYTES {
                next = pushes.try_recv().ok();
            }
        }
        deliveries.send(batch);
        if !ended.is_empty() {
            end_sessions(
                commands.clone(),
                subscriber.clone(),
                deliveries.clone(),
                ended.clone(),
                ended,
            );
        }
    }
}

fn route(
    push: PushInfo,
    keys: &Keys,
    shared: &Shared,
    batch: &mut DeliveryBatch,
    ended: &mut Vec<String>,
    deliveries: &Deliveries,
) {
    match push.kind {
        PushKind::Message => {
            let mut data = push.data.into_iter();
            let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                (data.next(), data.next())
            else {
                return;
            };
            let Ok(channel) = std::str::from_utf8(&channel) else {
                return;
            };
            match keys.parse_channel(channel) {
                Some(Channel::Session(id)) => {
                    if let Some(&token) = shared.local.lock().unwrap().get(id) {
                        batch.push(DeliveryKind::Message, token, &payload);
                    }
                }
                Some(Channel::Delete(id)) => {
                    if let Some(token) = shared.local.lock().unwrap().remove(id) {
                        batch.push(DeliveryKind::Close, token, b"");
                        ended.push(id.to_string());
                    }
                }
                Some(Channel::Broadcast) => batch.push(DeliveryKind::Broadcast, 0, &payload),
                None => {}
            }
        }
        PushKind::Disconnection => {
            shared.reassert.store(true, Ordering::SeqCst);
            shared.disconnected.notify_one();
            deliveries.problem("lost the Redis pub/sub connection; reconnecting and resubscribing");
        }
        _ => {}
    }
}

/// The one liveness timer of a manager: refreshes the keys of every local session and
/// pings the subscriber so a connection that died while idle comes back.
async fn keep_alive(
    shared: Arc<Shared>,
    commands: Arc<Commands>,
    mut subscriber: ConnectionManager,
    deliveries: Arc<Deliveries>,
) {
    let options = commands.options().clone();
    let keys = commands.keys().clone();
    let mut connection = commands.connection();
    let mut tick = tokio::time::interval(options.refresh_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(reason) = ping(&mut subscriber, &options).await {
                    deliveries.problem(&format!("Redis pub/sub connection check failed: {reason}"));
                }
            }
            // After a disconnection: get the subscriber (and so its subscriptions) back
            // as soon as Redis answers, then re-assert the keys right away.
            _ = shared.disconnected.notified() => recover(&mut subscriber, &options).await,
        }
        let ids: Vec<String> = shared.local.lock().unwrap().keys().cloned().collect();
        if ids.is_empty() {
            continue;
        }
        // After a reconnect we write unconditionally: Redis may have lost the keys.
        let missing = if shared.reassert.swap(false, Ordering::SeqCst) {
            Missing::Create
        } else {
            Missing::Skip
        };
        let pipe = mark_live(&keys, &ids, options.session_ttl_seconds, missing);
        let refresh = pipe.query_async::<()>(&mut connection);
        let failed = match tokio::time::timeout(options.command_timeout(), refresh).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(describe_redis_error(&e)),
            Err(_) => Some("timed out".to_string()),
        };
        if let Some(reason) = failed {
            shared.reassert.store(true, Ordering::SeqCst);
            shared.disconnected.notify_one();
            deliveries.problem(&format!(
                "could not refresh {} session liveness key(s): {reason}",
                ids.len()
            ));
        }
    }
}

/// PINGs the subscriber; a failed PING also makes redis-rs start a reconnect.
async fn ping(subscriber: &mut ConnectionManager, options: &NativeOptions) -> Result<(), String> {
    let ping = redis::cmd("PING");
    match tokio::time::timeout(
        options.command_timeout(),
        ping.query_async::<()>(subscriber),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(describe_redis_error(&e)),
        Err(_) => Err("timed out".to_string()),
    }
}

/// Pings with a growing pause (100 ms to 1 s) until the subscriber answers.
async fn recover(subscriber: &mut ConnectionManager, options: &NativeOptions) {
    let mut pause = Duration::from_millis(100);
    while ping(subscriber, options).await.is_err() {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(code: u32, args: &[&str], compat: bool) -> (Option<Encoded>, String) {
        let mut out = Resp::default();
        let encoded = encode(code, args, &Keys::default(), compat, &mut out);
        (encoded, String::from_utf8(out.into_bytes()).unwrap())
    }

    #[test]
    fn publish_keeps_order_and_arity() {
        let (encoded, packed) = written(PUBLISH, &["data", "a", "b"], false);
        assert_eq!(encoded, Some(Encoded::done(2)));
        assert!(packed.find("session:a").unwrap() < packed.find("session:b").unwrap());
        assert_eq!(written(HAS, &["a", "b"], false).0, None);
    }

    #[test]
    fn delete_tells_the_owner_and_drops_the_key() {
        let (encoded, packed) = written(DELETE, &["x"], false);
        assert_eq!(encoded, Some(Encoded::done(2)));
        assert!(packed.contains("delete:session:x") && packed.contains("available:session:x"));
    }

    #[test]
    fn broadcast_scans_only_in_upstream_mode() {
        let (fast, packed) = written(BROADCAST, &["d"], false);
        assert_eq!(fast, Some(Encoded::done(1)));
        assert!(packed.contains("tmcp:broadcast"));
        let (compat, packed) = written(BROADCAST, &["d"], true);
        assert_eq!(
            compat.map(|e| (e.count, e.scan)),
            Some((0, Some(ScanJob::PublishToAliveSessions("d".into()))))
        );
        assert!(packed.is_empty());
    }
}
