//! One command or pipeline on a [`Connection`] within a deadline: refused connections
//! retried while nothing was sent ([`Connection::until_connected`]), the outcome
//! recorded (answered, failed, stalled), and a redis-rs error worded for users
//! ([`Connection::describe`]).
//!
//! It must not decide what a failure means for the link (replacing it, asking the
//! sentinels, following a topology): it reports to the `Connection` methods that do.

use std::time::Duration;

use redis::{Pipeline, RedisError, RedisResult, Value};
use tokio::time::Instant;

use super::link::Link;
use super::{Connection, Source, Ticket};
use crate::error::describe_redis_error;

/// Pause between attempts while Redis refuses connections.
const REFUSED_PAUSE: Duration = Duration::from_millis(100);

/// Why a pub/sub command did not go through.
pub enum Failure {
    /// Redis answered with an error, or the connection failed.
    Refused(String),
    /// No answer within the timeout; `replaced` if the connection was replaced for it.
    TimedOut { replaced: bool },
    /// On a cluster: `channels` were not subscribed (the others were), their master not
    /// being reachable from this connection within the timeout (see
    /// `Connection::subscribe`).
    Held {
        channels: Vec<String>,
        reason: String,
    },
}

impl Connection {
    /// Runs `attempt` on the manager in use until it succeeds, fails for a reason other
    /// than "could not connect", or `deadline` passes. Retrying a refused connection is
    /// safe: nothing was sent. Each retry takes the manager in use then (the connection
    /// may have been replaced, or have followed a new Sentinel master, meanwhile); a
    /// refusal or a timeout makes a Sentinel source ask for the master again.
    pub async fn until_connected<T, Fut>(
        &self,
        deadline: Instant,
        first: Link,
        mut attempt: impl FnMut(Link) -> Fut,
    ) -> Result<RedisResult<T>, tokio::time::error::Elapsed>
    where
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let mut manager = first;
        loop {
            let result = tokio::time::timeout_at(deadline, attempt(manager)).await;
            match &result {
                Ok(Err(e))
                    if e.is_connection_refusal() && Instant::now() + REFUSED_PAUSE < deadline =>
                {
                    self.suspect(e);
                    tokio::time::sleep(REFUSED_PAUSE).await;
                }
                Err(_) => {
                    self.suspect_master();
                    return result;
                }
                _ => return result,
            }
            match self.current() {
                Some(current) => manager = current,
                None => return result,
            }
        }
    }

    /// [`Connection::get`] within a deadline, as a [`Failure`].
    pub(super) async fn get_until(&self, deadline: Instant) -> Result<(Link, Ticket), Failure> {
        match tokio::time::timeout_at(deadline, self.get()).await {
            Ok(Ok(got)) => Ok(got),
            Ok(Err(e)) => Err(Failure::Refused(describe_redis_error(&e))),
            Err(_) => Err(Failure::TimedOut { replaced: false }),
        }
    }

    /// Runs a pipeline of background work (not a call: no ordering with the calls)
    /// within `timeout`; a silent connection is replaced as for any call.
    pub async fn query(&self, pipe: &Pipeline, timeout: Duration) -> Result<Vec<Value>, String> {
        let deadline = Instant::now() + timeout;
        let (mut link, ticket) = match tokio::time::timeout_at(deadline, self.get()).await {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => return Err(self.describe(&e).await),
            Err(_) => return Err("timed out".into()),
        };
        match tokio::time::timeout_at(deadline, pipe.query_async::<Vec<Value>>(&mut link)).await {
            Ok(Ok(values)) => {
                self.answered_with(&values);
                Ok(values)
            }
            Ok(Err(e)) => {
                self.failed(&e, ticket);
                Err(self.describe(&e).await)
            }
            Err(_) => {
                self.stats.timed_out();
                self.stalled(ticket);
                Err("timed out".into())
            }
        }
    }

    /// A redis-rs error as users read it (see `error`); on a cluster that no node of
    /// answered, with the reason a seed gives.
    pub async fn describe(&self, error: &RedisError) -> String {
        let text = describe_redis_error(error);
        match &self.source {
            Source::Cluster(cluster)
                if error.kind() == redis::ErrorKind::ClusterConnectionNotFound =>
            {
                match cluster
                    .why_unreachable(self.options.connect_timeout())
                    .await
                {
                    Some(reason) => {
                        format!("no node of the Redis Cluster could be reached: {reason}")
                    }
                    None => text,
                }
            }
            _ => text,
        }
    }

    pub(super) async fn outcome(
        &self,
        result: Result<RedisResult<()>, tokio::time::error::Elapsed>,
        ticket: Ticket,
    ) -> Result<(), Failure> {
        match result {
            Ok(Ok(())) => {
                self.answered();
                Ok(())
            }
            // The crate's own deadline (a cluster's): no answer, as for ours.
            Ok(Err(e)) if e.is_timeout() => {
                self.unsettle();
                self.stats.timed_out();
                Err(Failure::TimedOut {
                    replaced: self.stalled(ticket),
                })
            }
            Ok(Err(e)) => {
                self.failed(&e, ticket);
                Err(Failure::Refused(self.describe(&e).await))
            }
            Err(_) => {
                self.unsettle();
                self.stats.timed_out();
                Err(Failure::TimedOut {
                    replaced: self.stalled(ticket),
                })
            }
        }
    }
}
