//! The subscriber task: keeps Redis's subscriptions equal to what the session table
//! wants, in pipelined rounds of one SUBSCRIBE and one UNSUBSCRIBE, restores them after
//! a lost connection, and answers each creation once its channels are subscribed.
//!
//! It must not route messages (`route`) nor touch liveness keys (`liveness`); the
//! connection's own repairs are `crate::connection`'s.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::task::unconstrained;
use tokio::time::Instant;

use super::table::Waiter;
use super::Shared;
use crate::connection::{jittered, Failure};
use crate::keys::{Channel, Keys};

/// First pause before subscribing again after a failure; doubles up to the maximum.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// The longest pause while restoring lost subscriptions: messages are being lost until
/// they are back, so delivery resumes within about a second of Redis being healthy.
const MAX_RESTORE_PAUSE: Duration = Duration::from_secs(1);

/// Keeps Redis's subscriptions equal to what the session table wants.
///
/// Each round is one SUBSCRIBE of what became wanted and one UNSUBSCRIBE of what no
/// longer is, sent together. Rounds are pipelined: a new round goes out while earlier
/// ones still wait for their confirmations (the connection keeps their order), so a
/// burst of creations and ends never waits for a round trip per round. A creation is
/// answered when the round carrying (or following) its channels is confirmed.
pub(super) async fn keep_subscribed(shared: Arc<Shared>) {
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

    /// `channels` were not subscribed: asked again in the next round if still wanted.
    fn ask_again(&mut self, shared: &Shared, keys: &Keys, channels: &[String]) {
        let mut table = shared.table.lock().unwrap();
        for channel in channels {
            self.requested.remove(channel);
            if let Some(Channel::Session(id) | Channel::Delete(id)) = keys.parse_channel(channel) {
                table.dirty.insert(id.to_string());
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
                    self.ask_again(shared, keys, &round.add);
                    failure = Some(reason);
                }
                // On a cluster, the channels of a master not reachable yet: the others
                // are subscribed, and their creations answered.
                Err(Failure::Held { channels, reason }) => {
                    let held: HashSet<&String> = channels.iter().collect();
                    self.confirmed
                        .extend(round.add.iter().filter(|c| !held.contains(c)).cloned());
                    self.ask_again(shared, keys, &channels);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

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
}
