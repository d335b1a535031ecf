//! The request path: every call of one native client goes through one ordered pipeline.
//!
//! JavaScript submits the calls of one tick as one batch (one crossing). A single
//! dispatcher task takes everything queued, sends it as one pipeline on a
//! multiplexed, self-reconnecting connection, and answers the whole batch with one
//! crossing back. One pipeline at a time keeps per-sender order (a `send` then a
//! `delete` reach Redis in that order); under load batches simply grow.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{FuturesOrdered, StreamExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Pipeline, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::NativeOptions;
use crate::delivery::{CompletionBatch, Completions, Outcome, Reply};
use crate::error::describe_redis_error;
use crate::info_sessions::InfoOp;
use crate::keys::Keys;
use crate::stream_sessions::StreamOp;

/// Most calls sent in one pipeline; a larger batch becomes several pipelines.
const PIPELINE_CALLS: usize = 16;
/// Most pipelines awaiting their replies at once.
const MAX_IN_FLIGHT: usize = 64;
/// Pause between attempts while Redis refuses connections.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Keys fetched per SCAN step in upstream-compatible mode.
const SCAN_COUNT: usize = 1000;

/// One call of either manager.
#[derive(Debug)]
pub enum Op {
    Info(InfoOp),
    Stream(StreamOp),
}

impl Op {
    /// Builds a call from its wire code (see `lib/wire.js`) and string arguments.
    pub fn from_code(code: u32, args: Vec<String>, upstream_compatible: bool) -> Option<Op> {
        if code < 20 {
            InfoOp::from_code(code, args, upstream_compatible).map(Op::Info)
        } else {
            StreamOp::from_code(code, args, upstream_compatible).map(Op::Stream)
        }
    }

    fn encode(&self, keys: &Keys, pipe: &mut Pipeline) -> usize {
        match self {
            Op::Info(op) => op.encode(keys, pipe),
            Op::Stream(op) => op.encode(keys, pipe),
        }
    }

    fn decode(&self, values: Vec<Value>) -> Outcome {
        match self {
            Op::Info(op) => op.decode(values),
            Op::Stream(op) => op.decode(values),
        }
    }

    fn scan_job(&self) -> Option<ScanJob> {
        match self {
            Op::Info(op) => op.scan_job(),
            Op::Stream(op) => op.scan_job(),
        }
    }
}

/// Follow-up work that needs SCAN (upstream-compatible mode only).
#[derive(Debug, PartialEq)]
pub enum ScanJob {
    /// SREM the id from every `tmcp:subscriptions:*` set.
    RemoveFromSubscriptionSets(String),
    /// PUBLISH to `session:{id}` for every `available:session:{id}` key.
    PublishToAliveSessions(String),
}

struct Submission {
    id: u32,
    op: Op,
    deadline: Instant,
}

/// A Redis connection for commands, shared by the managers built on it.
pub struct Commands {
    connection: ConnectionManager,
    // Shared with every task and call: cloning the Arc, not the strings (TLS PEMs included).
    keys: Arc<Keys>,
    options: Arc<NativeOptions>,
    completions: Arc<Completions>,
    queue: Mutex<Option<mpsc::UnboundedSender<Vec<Submission>>>>,
}

impl Commands {
    /// Creates the connection lazily (a manager built while Redis is down works once it
    /// is up) and starts the dispatcher. Must run inside the tokio runtime.
    pub fn start(
        client: Client,
        options: NativeOptions,
        completions: Completions,
    ) -> Result<Arc<Self>, String> {
        let connection = connection_manager(client, &options, None)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let commands = Arc::new(Commands {
            connection,
            keys: Arc::new(Keys::new(&options.key_prefix)),
            options: Arc::new(options),
            completions: Arc::new(completions),
            queue: Mutex::new(Some(tx)),
        });
        tokio::spawn(dispatch(
            commands.connection.clone(),
            commands.keys.clone(),
            commands.options.clone(),
            commands.completions.clone(),
            rx,
        ));
        Ok(commands)
    }

    /// Queues calls `(id, op)`; each id is answered through the completion callback.
    pub fn submit(&self, calls: Vec<(u32, Op)>) {
        let deadline = Instant::now() + self.options.command_timeout();
        let batch: Vec<Submission> = calls
            .into_iter()
            .map(|(id, op)| Submission { id, op, deadline })
            .collect();
        let rejected = match &*self.queue.lock().unwrap() {
            Some(queue) => queue.send(batch).err().map(|e| e.0),
            None => Some(batch),
        };
        if let Some(batch) = rejected {
            self.fail_all(
                batch.into_iter().map(|s| s.id),
                "the session manager is closed",
            );
        }
    }

    /// Answers calls that never reached Redis.
    pub fn fail_all(&self, ids: impl Iterator<Item = u32>, message: &str) {
        let mut answers = CompletionBatch::default();
        for id in ids {
            answers.push(id, Err(message.to_string()));
        }
        self.completions.send(answers);
    }

    pub fn completions(&self) -> &Arc<Completions> {
        &self.completions
    }

    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    pub fn options(&self) -> &Arc<NativeOptions> {
        &self.options
    }

    /// Stops taking calls; those already queued still run.
    pub fn close(&self) {
        self.queue.lock().unwrap().take();
    }
}

/// A self-reconnecting multiplexed connection with our timeouts.
pub fn connection_manager(
    client: Client,
    options: &NativeOptions,
    push: Option<mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<ConnectionManager, String> {
    let mut config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout()))
        .set_response_timeout(Some(options.command_timeout()))
        // Few quick retries per attempt: a blip is absorbed, while a permanent failure
        // (wrong password, refused connection) surfaces with its own message well within
        // the call's deadline. Requests retry refused connections themselves
        // (`until_connected`) and the liveness timer re-triggers the subscriber.
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
        .set_pipeline_buffer_size(1024);
    if let Some(push) = push {
        config = config.set_push_sender(push).set_automatic_resubscription();
    }
    ConnectionManager::new_lazy_with_config(client, config).map_err(|e| describe_redis_error(&e))
}

async fn dispatch(
    connection: ConnectionManager,
    keys: Arc<Keys>,
    options: Arc<NativeOptions>,
    completions: Arc<Completions>,
    mut queue: mpsc::UnboundedReceiver<Vec<Submission>>,
) {
    // Several pipelines may be in flight, so JavaScript can prepare the next batch while
    // Redis answers the last. Order holds because each pipeline is polled (and so
    // queued on the connection) in the order it was pushed.
    let mut in_flight = FuturesOrdered::new();
    loop {
        tokio::select! {
            biased;
            Some(answers) = in_flight.next(), if !in_flight.is_empty() => completions.send(answers),
            batch = queue.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(mut batch) = batch else { break };
                while let Ok(more) = queue.try_recv() {
                    batch.extend(more);
                }
                // Smaller pipelines are answered (and so resumed in JavaScript) one after
                // another, so JavaScript works on early answers while Redis computes later ones.
                let mut rest = batch;
                while !rest.is_empty() {
                    let tail = rest.split_off(rest.len().min(PIPELINE_CALLS));
                    let head = std::mem::replace(&mut rest, tail);
                    in_flight.push_back(run_pipeline(
                        connection.clone(),
                        keys.clone(),
                        options.clone(),
                        completions.clone(),
                        head,
                    ));
                }
            }
        }
    }
    while let Some(answers) = in_flight.next().await {
        completions.send(answers);
    }
}

async fn run_pipeline(
    connection: ConnectionManager,
    keys: Arc<Keys>,
    options: Arc<NativeOptions>,
    completions: Arc<Completions>,
    batch: Vec<Submission>,
) -> CompletionBatch {
    let (keys, options) = (&*keys, &*options);
    let mut answers = CompletionBatch::default();
    let now = Instant::now();
    let mut pipe = Pipeline::new();
    let mut live = Vec::with_capacity(batch.len());
    let mut deadline = now + options.command_timeout();
    for call in batch {
        if call.deadline <= now {
            answers.push(call.id, Err(timeout_message(options)));
            continue;
        }
        deadline = deadline.min(call.deadline);
        let count = call.op.encode(keys, &mut pipe);
        live.push((call, count));
    }
    if live.is_empty() {
        return answers;
    }
    let total: usize = live.iter().map(|(_, n)| n).sum();
    let result = if total == 0 {
        // Only scan jobs: nothing to pipeline.
        Ok(Ok(Vec::new()))
    } else {
        until_connected(deadline, || {
            let mut connection = connection.clone();
            let pipe = &pipe;
            async move { connection.req_packed_commands(pipe, 0, total).await }
        })
        .await
    };
    let values = match result {
        Ok(Ok(values)) => values,
        Ok(Err(e)) => {
            let message = describe_redis_error(&e);
            for (call, _) in live {
                answers.push(call.id, Err(message.clone()));
            }
            return answers;
        }
        Err(_) => {
            for (call, _) in live {
                answers.push(call.id, Err(timeout_message(options)));
            }
            return answers;
        }
    };
    let mut values = values.into_iter();
    for (call, count) in live {
        let replies: Vec<Value> = values.by_ref().take(count).collect();
        let outcome = call.op.decode(replies);
        match (outcome, call.op.scan_job()) {
            (Ok(_), Some(job)) => {
                // Scans take many round trips: run them beside the pipeline.
                let connection = connection.clone();
                let keys = keys.clone();
                let completions = completions.clone();
                let id = call.id;
                let timeout = options.command_timeout() * 4;
                tokio::spawn(async move {
                    let outcome =
                        match tokio::time::timeout(timeout, run_scan(connection, &keys, job)).await
                        {
                            Ok(result) => result,
                            Err(_) => Err("Redis did not finish the scan in time".to_string()),
                        };
                    completions.one(id, outcome);
                });
            }
            (outcome, _) => answers.push(call.id, outcome),
        }
    }
    answers
}

/// Runs `attempt` until it succeeds, fails for a reason other than "could not connect",
/// or `deadline` passes. Retrying a refused connection is safe: nothing was sent. It
/// also covers the first call after a long outage, which redis-rs fails while it starts
/// a fresh reconnect.
pub async fn until_connected<T, F, Fut>(
    deadline: Instant,
    mut attempt: F,
) -> Result<redis::RedisResult<T>, tokio::time::error::Elapsed>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    loop {
        let result = tokio::time::timeout_at(deadline, attempt()).await;
        match &result {
            Ok(Err(e)) if e.is_connection_refusal() && Instant::now() + RETRY_PAUSE < deadline => {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            _ => return result,
        }
    }
}

fn timeout_message(options: &NativeOptions) -> String {
    format!(
        "Redis did not answer within {} ms (commandTimeout)",
        options.command_timeout_ms
    )
}

async fn run_scan(mut connection: ConnectionManager, keys: &Keys, job: ScanJob) -> Outcome {
    let (pattern, kind) = match &job {
        ScanJob::RemoveFromSubscriptionSets(_) => {
            (format!("{}*", keys.subscriptions_prefix()), "set")
        }
        ScanJob::PublishToAliveSessions(_) => (keys.alive_pattern(), "string"),
    };
    let mut cursor: u64 = 0;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .arg("TYPE")
            .arg(kind)
            .query_async(&mut connection)
            .await
            .map_err(|e| describe_redis_error(&e))?;
        if !found.is_empty() {
            let mut pipe = Pipeline::new();
            for key in &found {
                match &job {
                    ScanJob::RemoveFromSubscriptionSets(id) => {
                        pipe.cmd("SREM").arg(key).arg(id).ignore();
                    }
                    ScanJob::PublishToAliveSessions(data) => {
                        if let Some(id) = keys.id_from_alive(key) {
                            pipe.cmd("PUBLISH")
                                .arg(keys.session_channel(id))
                                .arg(data)
                                .ignore();
                        }
                    }
                }
            }
            pipe.query_async::<()>(&mut connection)
                .await
                .map_err(|e| describe_redis_error(&e))?;
        }
        if next == 0 {
            return Ok(Reply::Nil);
        }
        cursor = next;
    }
}

/// The first server error among a call's replies, as its failure.
pub fn first_error(values: &[Value]) -> Result<(), String> {
    match values.iter().find_map(|v| match v {
        Value::ServerError(e) => Some(match e.details() {
            Some(details) => format!("{} {details}", e.code()),
            None => e.code().to_string(),
        }),
        _ => None,
    }) {
        Some(message) => Err(format!("Redis error: {message}")),
        None => Ok(()),
    }
}

/// A string reply, or `Nil` for a missing key.
pub fn decode_text(value: Value) -> Outcome {
    match value {
        Value::Nil => Ok(Reply::Nil),
        Value::BulkString(bytes) => String::from_utf8(bytes)
            .map(Reply::Text)
            .map_err(|_| "value stored in Redis is not valid UTF-8".to_string()),
        Value::SimpleString(s) => Ok(Reply::Text(s)),
        Value::VerbatimString { text, .. } => Ok(Reply::Text(text)),
        other => Err(format!("unexpected reply from Redis: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_read_like_redis_prints_them() {
        let values = vec![
            Value::Okay,
            redis::parse_redis_value(b"-WRONGTYPE Operation against a key\r\n").unwrap(),
        ];
        assert_eq!(
            first_error(&values),
            Err("Redis error: WRONGTYPE Operation against a key".into())
        );
        assert_eq!(first_error(&[Value::Nil]), Ok(()));
    }
}
