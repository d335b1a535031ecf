//! What a call is to the dispatcher: the contract between `commands` (which sends
//! pipelines and answers calls) and the managers (which know what a call means in
//! Redis).
//!
//! Each manager's call type implements [`Operation`]; the dispatcher sees only
//! `Box<dyn Operation>` ([`Op`]), and JavaScript's call codes reach the manager that
//! owns them through a [`Decode`] function that the napi layer (`lib.rs`, above every
//! manager) hands the dispatcher. So a new manager or a new call adds an implementation
//! in its own module and a line in `lib.rs`, never an edit of the dispatcher.
//!
//! Also here, for the managers' replies and follow-ups: [`decode_text`] and
//! [`scan_and_apply`].
//!
//! It must not know any manager (imports go to the layers below only) nor send anything
//! itself: follow-ups run on the connection the dispatcher hands them.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use redis::{Pipeline, Value};

use crate::connection::Link;
use crate::delivery::{Outcome, Reply};
use crate::error::{describe_redis_error, unexpected_reply};
use crate::keys::Keys;

/// Keys fetched per SCAN step in upstream-compatible mode.
const SCAN_COUNT: usize = 1000;

/// One call of a manager, as the dispatcher handles it: weighed against its bound,
/// written into a pipeline, its replies read back (and, rarely, work that must follow).
/// `Send` because calls cross from the JavaScript thread and wait across awaits.
pub trait Operation: Send {
    /// Bytes of arguments this call holds while queued, counted against the
    /// dispatcher's bound on memory (it adds a fixed overhead per call).
    fn weight(&self) -> usize;

    /// Adds this call's commands to `pipe` and returns how many it added: the
    /// dispatcher hands exactly that many replies back to [`Operation::decode`].
    fn encode(&self, keys: &Keys, pipe: &mut Pipeline) -> usize;

    /// Turns this call's replies into its outcome.
    fn decode(&self, replies: Vec<Value>) -> Outcome;

    /// Work that must follow this call's replies before it is answered (asked before
    /// [`Operation::decode`], which takes the replies); it runs only when the outcome
    /// is a success, and its own outcome answers the call.
    fn follow_up(&self, _keys: &Keys, _replies: &[Value]) -> Option<FollowUp> {
        None
    }
}

/// A call as the dispatcher queues it: boxed, so the dispatcher names no manager's type.
pub type Op = Box<dyn Operation>;

/// Builds a call from its JavaScript wire code (see `lib/wire.js`) and string
/// arguments; `None` for an unknown code or wrong arity. Handed to the dispatcher by
/// `lib.rs`, which knows every manager; the dispatcher only knows the shape.
pub type Decode = fn(code: u32, args: Vec<String>, upstream_compatible: bool) -> Option<Op>;

/// Work after a call's pipeline that takes many round trips (SCANs in
/// upstream-compatible mode) or depends on its replies (on a cluster). A closure the
/// manager hands the dispatcher, which runs it beside the pipelines on a connection
/// and within a deadline of its own.
pub struct FollowUp(Box<dyn FnOnce(Link, Arc<Keys>) -> BoxFuture<'static, Outcome> + Send>);

impl FollowUp {
    /// Wraps the work: `job` gets a connection and the key names.
    pub fn new<F, Fut>(job: F) -> Self
    where
        F: FnOnce(Link, Arc<Keys>) -> Fut + Send + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        FollowUp(Box::new(move |link, keys| Box::pin(job(link, keys))))
    }

    /// Runs the work on `link`.
    pub fn run(self, link: Link, keys: Arc<Keys>) -> BoxFuture<'static, Outcome> {
        (self.0)(link, keys)
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
        other => Err(unexpected_reply(&other)),
    }
}

/// SCANs for the keys of `pattern` and `kind` (on a cluster, every master in turn) and
/// runs, per batch found, one pipeline that `each_key` fills: the follow-ups of
/// upstream-compatible mode, whose processes keep no index to read instead.
pub async fn scan_and_apply(
    connection: &mut Link,
    pattern: &str,
    kind: &str,
    mut each_key: impl FnMut(&mut Pipeline, &str),
) -> Result<(), String> {
    // A cluster's keys are spread over its masters: each is scanned in turn.
    let nodes = match &*connection {
        Link::Single(_) => vec![None],
        Link::Cluster(cluster) => crate::cluster::masters(cluster)
            .await
            .map_err(|e| describe_redis_error(&e))?
            .into_iter()
            .map(Some)
            .collect(),
    };
    for node in nodes {
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .arg("TYPE")
                .arg(kind);
            let reply = match (&node, &*connection) {
                (Some(node), Link::Cluster(cluster)) => {
                    crate::cluster::on_node(cluster, scan, node).await
                }
                _ => scan.query_async::<Value>(&mut *connection).await,
            };
            let (next, found): (u64, Vec<String>) = reply
                .and_then(|v| redis::from_redis_value(v).map_err(Into::into))
                .map_err(|e| describe_redis_error(&e))?;
            if !found.is_empty() {
                let mut pipe = Pipeline::new();
                for key in &found {
                    each_key(&mut pipe, key);
                }
                pipe.query_async::<()>(&mut *connection)
                    .await
                    .map_err(|e| describe_redis_error(&e))?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}
