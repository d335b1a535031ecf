//! The request path: every call of the managers built on one native client goes through
//! one ordered dispatcher on one command connection.
//!
//! JavaScript submits the calls of one tick as one batch (one crossing). The dispatcher
//! task takes everything queued, sends it as pipelines on the connection, and answers
//! each pipeline with one crossing back. Pipelines are queued on the connection in the
//! order they were submitted, which keeps per-sender order (a `send` then a `delete`
//! reach Redis in that order); under load batches simply grow.
//!
//! Bounds, so a Redis that stops reading cannot grow memory without limit: at most
//! [`MAX_IN_FLIGHT`] pipelines are handed to the connection at once, and calls hold at
//! most [`MAX_QUEUED_BYTES`] of arguments between submission and answer; beyond that a
//! call is rejected at once and never sent. A call whose deadline passes before it was
//! handed over is rejected as "not sent" and dropped, never written later.
//!
//! It knows how to send a pipeline and answer calls, not what any call means: a call is
//! an [`Op`] (a boxed [`Operation`] the managers implement), and JavaScript's calls are
//! built by the [`Decode`] function handed to [`Commands::start`]. It must not import a
//! manager: a new manager or call needs no edit here.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::{FuturesOrdered, StreamExt};
use redis::aio::ConnectionLike;
use redis::{Pipeline, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::unconstrained;
use tokio::time::Instant;

use crate::config::NativeOptions;
use crate::connection::{Connection, Source};
use crate::delivery::{CompletionBatch, Completions, Outcome};
use crate::error::{
    describe_redis_error, not_sent, timed_out_after_sending, timed_out_before_sending,
};
use crate::js_calls::JsCalls;
use crate::keys::Keys;
use crate::operation::{Decode, Op, Operation};

/// Most calls sent in one pipeline; a larger batch becomes several pipelines, each
/// answered in its own crossing, so JavaScript resumes on early answers while Redis
/// computes later ones. 32: with 64 calls in flight two groups take turns (A/B of 16,
/// 32 and 64, each pipeline answered on its own: 64 left a single convoy, 0.77x
/// upstream at 64 in flight; 16 was a little below 32).
const PIPELINE_CALLS: usize = 32;
/// Most pipelines handed to the connection and awaiting replies at once.
const MAX_IN_FLIGHT: usize = 64;
/// Most argument bytes of calls submitted and not yet answered.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;
/// Bytes counted per call besides its arguments (command names, bookkeeping).
const CALL_OVERHEAD: usize = 64;
/// Bytes a call keeps queued: its arguments plus a fixed overhead.
fn queued_weight(op: &dyn Operation) -> usize {
    CALL_OVERHEAD + op.weight()
}

/// Who is waiting for a call's outcome.
pub enum ReplyTo {
    /// A JavaScript promise, by call id (answered in batches).
    Js(u32),
    /// A task of ours (a stream session being created, a liveness key dropped).
    Task(oneshot::Sender<Outcome>),
}

struct Submission {
    reply_to: ReplyTo,
    op: Op,
    weight: usize,
    deadline: Instant,
}

/// What the dispatcher's queue carries, in submission order.
enum Queued {
    /// Calls of our own tasks, already admitted (see [`admit`]).
    Calls(Vec<Submission>),
    /// One JavaScript tick's calls with their deadline, taken apart and admitted by the
    /// dispatcher (off the JavaScript thread).
    Js(JsCalls, Instant),
}

/// What the calls, the dispatcher and every pipeline share: one `Arc` cloned per
/// pipeline. The queue's sender is not in it, so the dispatcher (which holds this) does
/// not keep its own queue open.
struct Shared {
    connection: Arc<Connection>,
    keys: Arc<Keys>,
    options: Arc<NativeOptions>,
    completions: Arc<Completions>,
    /// Builds JavaScript's calls: the managers' decoders, assembled by `lib.rs`.
    decode: Decode,
    /// Argument bytes of calls submitted and not yet answered.
    queued_bytes: AtomicUsize,
}

/// A Redis connection for commands, shared by the managers built on it.
pub struct Commands {
    shared: Arc<Shared>,
    queue: Mutex<Option<mpsc::UnboundedSender<Queued>>>,
}

impl Commands {
    /// Starts the dispatcher on a lazily connecting connection; `decode` builds the
    /// calls JavaScript submits. Must run inside tokio.
    pub fn start(
        source: Source,
        options: NativeOptions,
        completions: Completions,
        decode: Decode,
    ) -> Result<Arc<Self>, String> {
        let connection = Connection::new(source.clone(), &options, None)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            connection,
            keys: Arc::new(match source {
                Source::Cluster(_) => Keys::sharded(&options.key_prefix),
                _ => Keys::new(&options.key_prefix),
            }),
            options: Arc::new(options),
            completions: Arc::new(completions),
            decode,
            queued_bytes: AtomicUsize::new(0),
        });
        tokio::spawn(dispatch(shared.clone(), rx));
        Ok(Arc::new(Commands {
            shared,
            queue: Mutex::new(Some(tx)),
        }))
    }

    /// Queues calls; each is answered through its [`ReplyTo`]. Safe to call from any
    /// thread (an unbounded channel send: no runtime context needed on this hot path).
    pub fn submit(&self, calls: Vec<(ReplyTo, Op)>) {
        let shared = &*self.shared;
        let deadline = Instant::now() + shared.options.command_timeout();
        let mut refused = CompletionBatch::default();
        let batch: Vec<Submission> = calls
            .into_iter()
            .filter_map(|(reply_to, op)| admit(shared, reply_to, op, deadline, &mut refused))
            .collect();
        shared.completions.send(refused);
        if !batch.is_empty() {
            self.enqueue(Queued::Calls(batch));
        }
    }

    /// Queues one JavaScript tick's calls. Runs on the JavaScript thread, so it only
    /// stamps the deadline and hands the batch over: the dispatcher takes it apart.
    pub fn submit_js(&self, calls: JsCalls) {
        let deadline = Instant::now() + self.shared.options.command_timeout();
        self.enqueue(Queued::Js(calls, deadline));
    }

    fn enqueue(&self, queued: Queued) {
        let rejected = match &*self.queue.lock().unwrap() {
            Some(queue) => queue.send(queued).err().map(|e| e.0),
            None => Some(queued),
        };
        let closed = "the session manager is closed";
        match rejected {
            None => {}
            Some(Queued::Calls(batch)) => {
                let mut answers = CompletionBatch::default();
                for call in batch {
                    self.shared
                        .queued_bytes
                        .fetch_sub(call.weight, Ordering::Relaxed);
                    answer(call.reply_to, Err(closed.into()), &mut answers);
                }
                self.shared.completions.send(answers);
            }
            Some(Queued::Js(calls, _)) => self.fail_calls(calls.ids(), closed),
        }
    }

    /// Runs one op and returns its outcome to the calling task.
    pub async fn run(&self, op: impl Operation + 'static) -> Outcome {
        let (tx, rx) = oneshot::channel();
        self.submit(vec![(ReplyTo::Task(tx), Box::new(op))]);
        rx.await
            .unwrap_or_else(|_| Err("the session manager is closed".into()))
    }

    /// Answers calls that never reached Redis.
    pub fn fail_calls(&self, ids: impl IntoIterator<Item = u32>, message: &str) {
        let mut answers = CompletionBatch::default();
        answers.fail_all(ids, message);
        self.shared.completions.send(answers);
    }

    pub fn completions(&self) -> &Arc<Completions> {
        &self.shared.completions
    }

    pub fn connection(&self) -> &Arc<Connection> {
        &self.shared.connection
    }

    pub fn keys(&self) -> &Arc<Keys> {
        &self.shared.keys
    }

    pub fn options(&self) -> &Arc<NativeOptions> {
        &self.shared.options
    }

    /// Stops taking calls; those already queued still run.
    pub fn close(&self) {
        self.queue.lock().unwrap().take();
    }
}

/// Counts a call against [`MAX_QUEUED_BYTES`]: the call to queue, or `None` when it was
/// refused (answered in `refused`, never sent).
fn admit(
    shared: &Shared,
    reply_to: ReplyTo,
    op: Op,
    deadline: Instant,
    refused: &mut CompletionBatch,
) -> Option<Submission> {
    let weight = queued_weight(&*op);
    let before = shared.queued_bytes.fetch_add(weight, Ordering::Relaxed);
    if before + weight > MAX_QUEUED_BYTES {
        shared.queued_bytes.fetch_sub(weight, Ordering::Relaxed);
        let message = not_sent(&format!(
            "more than {} MiB of calls are waiting for Redis",
            MAX_QUEUED_BYTES >> 20
        ));
        answer(reply_to, Err(message), refused);
        return None;
    }
    Some(Submission {
        reply_to,
        op,
        weight,
        deadline,
    })
}

/// Takes a JavaScript batch apart into `backlog`; answers calls it cannot queue.
fn admit_js(
    shared: &Shared,
    mut calls: JsCalls,
    deadline: Instant,
    backlog: &mut VecDeque<Submission>,
) {
    let mut refused = CompletionBatch::default();
    let malformed = "internal error: malformed call";
    match calls.split() {
        Some(split) => {
            let upstream_compatible = shared.options.upstream_compatible;
            for (id, code, args) in split {
                match (shared.decode)(code, args, upstream_compatible) {
                    Some(op) => {
                        backlog.extend(admit(shared, ReplyTo::Js(id), op, deadline, &mut refused))
                    }
                    None => refused.push(id, Err(malformed.into())),
                }
            }
        }
        None => refused.fail_all(calls.ids(), malformed),
    }
    shared.completions.send(refused);
}

fn answer(reply_to: ReplyTo, outcome: Outcome, batch: &mut CompletionBatch) {
    match reply_to {
        ReplyTo::Js(id) => batch.push(id, outcome),
        ReplyTo::Task(tx) => {
            let _ = tx.send(outcome);
        }
    }
}

async fn dispatch(shared: Arc<Shared>, mut queue: mpsc::UnboundedReceiver<Queued>) {
    // Several pipelines are in flight, so JavaScript prepares the next batch while Redis
    // answers the last. Order holds because a pipeline is queued on the connection at its
    // first poll, FuturesOrdered first-polls in push order, and that first poll always
    // gets through: `unconstrained` (tokio's cooperative budget could otherwise make it
    // yield) and at most MAX_IN_FLIGHT pipelines, far below the connection's channel
    // capacity. Calls beyond that wait in `backlog`, where their deadline still applies.
    let mut in_flight = FuturesOrdered::new();
    let mut backlog: VecDeque<Submission> = VecDeque::new();
    let mut open = true;
    while open || !backlog.is_empty() || !in_flight.is_empty() {
        while in_flight.len() < MAX_IN_FLIGHT && !backlog.is_empty() {
            let calls: Vec<Submission> =
                backlog.drain(..backlog.len().min(PIPELINE_CALLS)).collect();
            in_flight.push_back(unconstrained(run_pipeline(shared.clone(), calls)));
        }
        tokio::select! {
            biased;
            Some(answers) = in_flight.next(), if !in_flight.is_empty() => {
                // Each pipeline's answers cross on their own, also when several came in
                // one read: Node runs the microtasks after each threadsafe call, so the
                // calls that the first answers lead to are submitted while JavaScript
                // still works through the rest, and Redis and this thread work beside
                // the event loop. Merged into one crossing, the calls in flight moved as
                // one convoy (A/B: three getters 1.92x -> 2.54x upstream, set+get at 64
                // 1.03x -> 1.08x, 256 sends in flight 0.39 -> 0.46 M/s with no receiver).
                shared.completions.send(answers);
            }
            queued = queue.recv(), if open => match queued {
                Some(queued) => {
                    let mut next = Some(queued);
                    while let Some(queued) = next {
                        match queued {
                            Queued::Calls(batch) => backlog.extend(batch),
                            Queued::Js(calls, deadline) => {
                                admit_js(&shared, calls, deadline, &mut backlog)
                            }
                        }
                        next = queue.try_recv().ok();
                    }
                }
                None => open = false,
            },
            else => break,
        }
    }
}

/// Gives back a pipeline's share of [`MAX_QUEUED_BYTES`] when the pipeline ends,
/// however it ends.
struct Release<'a>(&'a AtomicUsize, usize);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::Relaxed);
    }
}

/// Answers every call of a pipeline with the same failure.
fn fail_pipeline(live: Vec<(Submission, usize)>, message: &str, answers: &mut CompletionBatch) {
    for (call, _) in live {
        answer(call.reply_to, Err(message.to_string()), answers);
    }
}

async fn run_pipeline(shared: Arc<Shared>, batch: Vec<Submission>) -> CompletionBatch {
    let options = &*shared.options;
    let _release = Release(&shared.queued_bytes, batch.iter().map(|c| c.weight).sum());
    let mut answers = CompletionBatch::default();
    let now = Instant::now();
    let mut pipe = Pipeline::new();
    let mut live = Vec::with_capacity(batch.len());
    let mut deadline = now + options.command_timeout();
    for call in batch {
        if call.deadline <= now {
            // Waited in our queue past its deadline: never handed to the connection.
            let message = timed_out_before_sending(options.command_timeout_ms);
            answer(call.reply_to, Err(message), &mut answers);
            continue;
        }
        deadline = deadline.min(call.deadline);
        let count = call.op.encode(&shared.keys, &mut pipe);
        live.push((call, count));
    }
    if live.is_empty() {
        return answers;
    }
    let total: usize = live.iter().map(|(_, n)| n).sum();
    // Ready at once unless a Sentinel master must be resolved first.
    let (manager, ticket) = match tokio::time::timeout_at(deadline, shared.connection.get()).await {
        Ok(Ok(got)) => got,
        Ok(Err(e)) => {
            let reason = shared.connection.describe(&e).await;
            fail_pipeline(live, &not_sent(&reason), &mut answers);
            return answers;
        }
        Err(_) => {
            let message = timed_out_before_sending(options.command_timeout_ms);
            fail_pipeline(live, &message, &mut answers);
            return answers;
        }
    };
    let result = if total == 0 {
        // Only scan jobs: nothing to pipeline.
        Ok(Ok(Vec::new()))
    } else {
        let pipe = &pipe;
        shared
            .connection
            .until_connected(deadline, manager, |mut manager| async move {
                manager.req_packed_commands(pipe, 0, total).await
            })
            .await
    };
    let values = match result {
        Ok(Ok(values)) => {
            shared.connection.answered_with(&values);
            values
        }
        Ok(Err(e)) => {
            shared.connection.failed(&e, ticket);
            // The crate's own deadline (a cluster's): written, so it may still run.
            let reason = if e.is_timeout() {
                timed_out_after_sending(options.command_timeout_ms)
            } else {
                shared.connection.describe(&e).await
            };
            fail_pipeline(live, &reason, &mut answers);
            return answers;
        }
        Err(_) => {
            shared.connection.stalled(ticket);
            let message = timed_out_after_sending(options.command_timeout_ms);
            fail_pipeline(live, &message, &mut answers);
            return answers;
        }
    };
    let mut values = values.into_iter();
    for (call, count) in live {
        let replies: Vec<Value> = values.by_ref().take(count).collect();
        let follow_up = call.op.follow_up(&shared.keys, &replies);
        let outcome = call.op.decode(replies);
        match (outcome, follow_up) {
            (Ok(_), Some(job)) => {
                // Scans take many round trips: run them beside the pipeline.
                let shared = shared.clone();
                tokio::spawn(async move {
                    let timeout = shared.options.command_timeout() * 4;
                    let scan = async {
                        let (manager, _) = shared
                            .connection
                            .get()
                            .await
                            .map_err(|e| describe_redis_error(&e))?;
                        job.run(manager, shared.keys.clone()).await
                    };
                    let outcome = match tokio::time::timeout(timeout, scan).await {
                        Ok(result) => result,
                        Err(_) => Err("Redis did not finish the scan in time".to_string()),
                    };
                    let mut answers = CompletionBatch::default();
                    answer(call.reply_to, outcome, &mut answers);
                    shared.completions.send(answers);
                });
            }
            (outcome, _) => answer(call.reply_to, outcome, &mut answers),
        }
    }
    answers
}
