//! Connections to Redis, all opened, written, read and reconnected by the `redis`
//! crate's [`ConnectionManager`].
//!
//! What this module adds on top, because the crate does not do it:
//! * **replacing a silent connection.** The crate reconnects after an I/O error, but a
//!   peer that stops answering (a proxy that stops forwarding, a frozen server) only
//!   produces timeouts, which it does not treat as a reason to reconnect. When a call
//!   times out, nothing at all was answered since it was handed over, and the connection
//!   has been silent for twice the command timeout, the manager is swapped for a fresh
//!   one built from the same client and settings. The margin keeps a short freeze (a
//!   slow command, a paused server) from costing the subscriptions of a healthy
//!   connection;
//! * **retrying refused connections** within a call's deadline (nothing was sent).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, PushInfo, RedisResult};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::NativeOptions;
use crate::error::describe_redis_error;

/// Pause between attempts while Redis refuses connections.
const REFUSED_PAUSE: Duration = Duration::from_millis(100);

/// A self-reconnecting connection that is also replaced when its peer goes silent.
pub struct Connection {
    client: Client,
    config: ConnectionManagerConfig,
    current: Mutex<ConnectionManager>,
    /// Milliseconds since `epoch` of the last answer Redis gave on this connection.
    last_answer_ms: AtomicU64,
    /// Bumped on every replacement, so one stall replaces the connection only once.
    generation: AtomicU64,
    epoch: Instant,
    /// How long the connection must have been silent before it is replaced.
    replace_after_ms: u64,
}

/// Which connection a call was handed to, to tell later whether it was replaced since.
#[derive(Clone, Copy)]
pub struct Ticket {
    generation: u64,
    handed_at_ms: u64,
}

impl Connection {
    /// A lazily connecting connection: a manager built while Redis is down works once it
    /// is up. With `push`, pub/sub messages and disconnections go to that channel.
    /// Must run inside the tokio runtime.
    pub fn new(
        client: Client,
        options: &NativeOptions,
        push: Option<mpsc::UnboundedSender<PushInfo>>,
    ) -> Result<Arc<Self>, String> {
        let mut config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout()))
            // Deadlines are ours (per call, from when it was made), not per request.
            .set_response_timeout(None)
            // A few quick tries per reconnection, with the crate's jittered back-off: a
            // blip is absorbed, a permanent failure (wrong password, refused connection)
            // surfaces with its own message well within a call's deadline.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_pipeline_buffer_size(1024);
        if let Some(push) = push {
            config = config.set_push_sender(push);
        }
        let current = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| describe_redis_error(&e))?;
        Ok(Arc::new(Connection {
            client,
            config,
            current: Mutex::new(current),
            last_answer_ms: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            epoch: Instant::now(),
            replace_after_ms: 2 * u64::from(options.command_timeout_ms.max(500)),
        }))
    }

    /// The manager to send on now, and a ticket for [`Connection::stalled`].
    pub fn get(&self) -> (ConnectionManager, Ticket) {
        let manager = self.current.lock().unwrap().clone();
        let ticket = Ticket {
            generation: self.generation.load(Ordering::Acquire),
            handed_at_ms: self.now_ms(),
        };
        (manager, ticket)
    }

    /// Records that Redis answered (anything, even an error reply).
    pub fn answered(&self) {
        self.last_answer_ms
            .fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    /// A call handed over with `ticket` got no answer in time. If nothing at all was
    /// answered since then, the peer is silent: replace the connection (once per stall).
    /// Returns whether it was replaced.
    pub fn stalled(&self, ticket: Ticket) -> bool {
        let last_answer = self.last_answer_ms.load(Ordering::Relaxed);
        if last_answer > ticket.handed_at_ms
            || self.now_ms().saturating_sub(last_answer) < self.replace_after_ms
        {
            return false;
        }
        let next = ticket.generation + 1;
        if self
            .generation
            .compare_exchange(ticket.generation, next, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(fresh) => {
                // The old manager's socket closes when its last clone is dropped.
                *self.current.lock().unwrap() = fresh;
                true
            }
            Err(_) => false,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Why a pub/sub command did not go through.
pub enum Failure {
    /// Redis answered with an error, or the connection failed.
    Refused(String),
    /// No answer within the timeout; `replaced` if the connection was replaced for it.
    TimedOut { replaced: bool },
}

impl Connection {
    /// A pub/sub connection: RESP3, its pushes (messages, disconnections) to the
    /// returned receiver.
    pub fn pubsub(
        client: Client,
        options: &NativeOptions,
    ) -> Result<(Arc<Self>, mpsc::UnboundedReceiver<PushInfo>), String> {
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        Ok((Connection::new(client, options, Some(push_tx))?, push_rx))
    }

    /// SUBSCRIBEs `channels` in one command (refused connections are retried within the
    /// timeout); redis-rs waits for every confirmation.
    pub async fn subscribe(&self, channels: &[String], timeout: Duration) -> Result<(), Failure> {
        let (manager, ticket) = self.get();
        let deadline = Instant::now() + timeout;
        let result = until_connected(deadline, || {
            let mut manager = manager.clone();
            async move { manager.subscribe(channels).await }
        })
        .await;
        self.outcome(result, ticket)
    }

    /// UNSUBSCRIBEs `channels` in one command.
    pub async fn unsubscribe(&self, channels: &[String], timeout: Duration) -> Result<(), Failure> {
        let (mut manager, ticket) = self.get();
        let result = tokio::time::timeout(timeout, manager.unsubscribe(channels)).await;
        self.outcome(result, ticket)
    }

    /// PINGs; a connection silent for too long is replaced (see [`Connection::stalled`]).
    pub async fn ping(&self, timeout: Duration) -> Result<(), Failure> {
        let (mut manager, ticket) = self.get();
        let ping = redis::cmd("PING");
        let result = tokio::time::timeout(timeout, ping.query_async::<()>(&mut manager)).await;
        self.outcome(result, ticket)
    }

    fn outcome(
        &self,
        result: Result<RedisResult<()>, tokio::time::error::Elapsed>,
        ticket: Ticket,
    ) -> Result<(), Failure> {
        match result {
            Ok(Ok(())) => {
                self.answered();
                Ok(())
            }
            Ok(Err(e)) => Err(Failure::Refused(describe_redis_error(&e))),
            Err(_) => Err(Failure::TimedOut {
                replaced: self.stalled(ticket),
            }),
        }
    }
}

/// Runs `attempt` until it succeeds, fails for a reason other than "could not connect",
/// or `deadline` passes. Retrying a refused connection is safe: nothing was sent. It
/// also covers the first call after a long outage, which redis-rs fails while it starts
/// a fresh reconnect.
pub async fn until_connected<T, F, Fut>(
    deadline: Instant,
    mut attempt: F,
) -> Result<RedisResult<T>, tokio::time::error::Elapsed>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = RedisResult<T>>,
{
    loop {
        let result = tokio::time::timeout_at(deadline, attempt()).await;
        match &result {
            Ok(Err(e))
                if e.is_connection_refusal() && Instant::now() + REFUSED_PAUSE < deadline =>
            {
                tokio::time::sleep(REFUSED_PAUSE).await;
            }
            _ => return result,
        }
    }
}

/// A pause of `base` scaled by a random factor in [0.5, 1.5), so a fleet of processes
/// that lost Redis together does not retry in lockstep.
pub fn jittered(base: Duration) -> Duration {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(Instant::now().elapsed().as_nanos() as u64);
    let unit = (hasher.finish() % 1000) as f64 / 1000.0;
    base.mul_f64(0.5 + unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_pauses() {
        let base = Duration::from_millis(1000);
        let pauses: std::collections::HashSet<u128> =
            (0..20).map(|_| jittered(base).as_millis()).collect();
        assert!(pauses.len() > 5, "{pauses:?}");
        assert!(pauses
            .iter()
            .all(|&ms| (500..1500).contains(&(ms as u64 as u128))));
    }
}
