//! Pipelines across slots, and publishes sent at most once.
//!
//! It owns how a pipeline's commands are split ([`Part`]: one pipeline per slot, a
//! publish on its own, multi-key and keyless commands routed by the crate), how the
//! parts' replies are put back in command order, and when a publish may be sent again
//! (only while Redis says it did not run). It must not send a publish twice when it may
//! have run, nor fail a whole pipeline for one part that failed.

use std::collections::HashMap;

use futures_util::future::join_all;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use std::time::Duration;

use redis::{Arg, Cmd, Pipeline, RedisResult, Value};

/// Where one command of a pipeline goes.
#[derive(Debug, PartialEq)]
enum Part {
    /// With the other commands of this slot, in one pipeline to the slot's master.
    Slot(Slot),
    /// A publish: on its own, at most once (see [`publish`]).
    Publish(Slot),
    /// On its own, routed by the crate: a multi-key DEL (split across slots), a keyless
    /// or unknown command.
    Alone,
}

/// The commands our pipelines carry whose first argument is their one key (or channel).
const FIRST_ARG_KEYED: &[&[u8]] = &[
    b"GET",
    b"SET",
    b"SMEMBERS",
    b"SADD",
    b"SREM",
    b"EXISTS",
    b"DEL",
    b"PUBLISH",
    b"SPUBLISH",
];

/// Which slot a command belongs to, when it has exactly one key. Runs for every command
/// of a cluster pipeline: reads the first arguments in place.
fn part_of(cmd: &Cmd) -> Part {
    let mut args = cmd.args_iter().map(|arg| match arg {
        Arg::Simple(bytes) => bytes,
        _ => b"",
    });
    let Some(name) = args.next() else {
        return Part::Alone;
    };
    let key = if name.eq_ignore_ascii_case(b"EVAL") || name.eq_ignore_ascii_case(b"EVALSHA") {
        // EVAL script 1 key args...: one declared key.
        match (args.nth(1), args.next()) {
            (Some(b"1"), Some(key)) => Some(key),
            _ => None,
        }
    } else if FIRST_ARG_KEYED.iter().any(|k| name.eq_ignore_ascii_case(k)) {
        let multi_key = name.eq_ignore_ascii_case(b"DEL") || name.eq_ignore_ascii_case(b"EXISTS");
        match (args.next(), args.next()) {
            (Some(_), Some(_)) if multi_key => None,
            (key, _) => key,
        }
    } else {
        None
    };
    let publishes = name.eq_ignore_ascii_case(b"SPUBLISH") || name.eq_ignore_ascii_case(b"PUBLISH");
    match key {
        Some(key) if publishes => Part::Publish(Slot::for_key(key)),
        Some(key) => Part::Slot(Slot::for_key(key)),
        None => Part::Alone,
    }
}

/// Runs `pipeline` on the cluster: one pipeline per slot (sent to the slot's master),
/// multi-slot and keyless commands on their own, all at once; replies in command order.
/// Commands of one slot keep their order, so do pipelines of one slot sent one after
/// the other (the crate queues requests in the order they are made).
///
/// With `publish` (a connection that never retries, and the time a publish may take),
/// publishes go there one by one (see [`publish`]); without, they go with their slot.
pub async fn query(
    connection: &ClusterConnection,
    publish: Option<&(ClusterConnection, Duration)>,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
    let mut slots: Vec<(Slot, Vec<usize>)> = Vec::new();
    let mut slot_index: HashMap<Slot, usize> = HashMap::new();
    let mut alone: Vec<usize> = Vec::new();
    let mut publishes: Vec<(usize, Slot)> = Vec::new();
    for (i, cmd) in commands.iter().enumerate() {
        let part = match (part_of(cmd), publish) {
            (Part::Publish(slot), Some(_)) => {
                publishes.push((i, slot));
                continue;
            }
            (Part::Publish(slot), None) => Part::Slot(slot),
            (part, _) => part,
        };
        match part {
            Part::Publish(_) => unreachable!("handled above"),
            Part::Slot(slot) => {
                let at = *slot_index.entry(slot).or_insert_with(|| {
                    slots.push((slot, Vec::new()));
                    slots.len() - 1
                });
                slots[at].1.push(i);
            }
            Part::Alone => alone.push(i),
        }
    }
    if alone.is_empty() && publishes.is_empty() && slots.len() == 1 {
        // The common case of one session's call: the pipeline as it is.
        let route = Route::with_slot(slots[0].0, SlotAddr::Master);
        return connection
            .clone()
            .route_pipeline(
                pipeline.clone(),
                offset,
                count,
                SingleNodeRoutingInfo::SpecificNode(route),
            )
            .await;
    }
    let by_slot = slots.iter().map(|(slot, members)| {
        let mut part = Pipeline::with_capacity(members.len());
        for &i in members {
            part.add_command(commands[i].clone());
        }
        let route = SingleNodeRoutingInfo::SpecificNode(Route::with_slot(*slot, SlotAddr::Master));
        let mut connection = connection.clone();
        async move {
            connection
                .route_pipeline(part, 0, members.len(), route)
                .await
        }
    });
    let singles = alone.iter().map(|&i| {
        let mut connection = connection.clone();
        let cmd = commands[i];
        async move { connection.req_packed_command(cmd).await }
    });
    let published = publishes.iter().map(|&(i, slot)| {
        let (connection, budget) = publish.expect("publishes are split off only with a connection");
        publish_once(connection, commands[i], slot, *budget)
    });
    // `join_all` polls in order, so each part is queued in the order built. A part that
    // fails (its master unreachable during a failover) fails only its own commands.
    let (slot_replies, single_replies, publish_replies) =
        futures_util::future::join3(join_all(by_slot), join_all(singles), join_all(published))
            .await;
    let mut replies: Vec<Option<Value>> = vec![None; commands.len()];
    let mut failures = 0;
    let mut first_failure = None;
    let mut place = |members: &[usize], result: RedisResult<Vec<Value>>| match result {
        Ok(values) => {
            for (&i, value) in members.iter().zip(values) {
                replies[i] = Some(value);
            }
        }
        Err(e) => {
            failures += 1;
            let reply = failed(&e);
            for &i in members {
                replies[i] = Some(reply.clone());
            }
            first_failure.get_or_insert(e);
        }
    };
    for ((_, members), result) in slots.iter().zip(slot_replies) {
        place(members, result);
    }
    for (&i, result) in alone.iter().zip(single_replies) {
        place(&[i], result.map(|value| vec![value]));
    }
    for (&(i, _), reply) in publishes.iter().zip(publish_replies) {
        place(&[i], Ok(vec![reply]));
    }
    match first_failure {
        // Nothing went through: the error as it is (a refused connection is retried).
        Some(e) if failures == slots.len() + alone.len() && publishes.is_empty() => Err(e),
        _ => Ok(replies
            .into_iter()
            .skip(offset)
            .take(count)
            .map(|v| v.unwrap_or(Value::Nil))
            .collect()),
    }
}

/// Sends one publish at most once: again only while Redis says it did not run it (the
/// slot moved, the cluster is down, the node is loading, nothing could be connected) and
/// `budget` allows. A lost connection or a missing answer may mean it ran: that fails,
/// saying so (see `error::may_have_run`).
async fn publish_once(
    connection: &ClusterConnection,
    cmd: &Cmd,
    slot: Slot,
    budget: Duration,
) -> Value {
    let deadline = tokio::time::Instant::now() + budget;
    let mut pause = Duration::from_millis(20);
    let mut asking: Option<(String, u16)> = None;
    loop {
        let mut connection = connection.clone();
        let attempt = match asking.take() {
            // ASK: this one command goes to the importing node, after ASKING.
            Some((host, port)) => {
                let mut pipe = Pipeline::with_capacity(2);
                pipe.cmd("ASKING").ignore();
                pipe.add_command(cmd.clone());
                let node = SingleNodeRoutingInfo::ByAddress { host, port };
                connection
                    .route_pipeline(pipe, 0, 1, node)
                    .await
                    .map(|mut v| v.pop().unwrap_or(Value::Nil))
            }
            None => {
                let route = Route::with_slot(slot, SlotAddr::Master);
                let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                connection.route_command(cmd.clone(), node).await
            }
        };
        let error = match attempt {
            Ok(Value::ServerError(e)) => redis::RedisError::from(e),
            Ok(value) => return value,
            Err(e) => e,
        };
        if !not_run(&error) {
            return failed_saying(&error, "the command may still have run");
        }
        if tokio::time::Instant::now() + pause >= deadline {
            return failed_saying(&error, "the command was not sent");
        }
        if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::Ask) {
            asking = error
                .redirect_node()
                .and_then(|(node, _)| node.rsplit_once(':'))
                .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?)));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Whether Redis said a command did not run (so sending it again cannot duplicate it).
fn not_run(error: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    matches!(
        error.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::BusyLoading
        ) | ErrorKind::ClusterConnectionNotFound
    ) || error.is_connection_refusal()
}

/// A publish's reply when it failed: why, and whether it may have run.
fn failed_saying(error: &redis::RedisError, outcome: &str) -> Value {
    let reason = crate::error::describe_redis_error(error)
        .lines()
        .collect::<Vec<_>>()
        .join(" ");
    redis::parse_redis_value(format!("-ERR {reason}; {outcome}\r\n").as_bytes())
        .unwrap_or(Value::Nil)
}

/// A command's reply when its part of a pipeline failed: a server error carrying why.
fn failed(error: &redis::RedisError) -> Value {
    let reason = crate::error::describe_redis_error(error)
        .lines()
        .collect::<Vec<_>>()
        .join(" ");
    redis::parse_redis_value(format!("-ERR {reason}\r\n").as_bytes()).unwrap_or(Value::Nil)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_go_to_the_slot_of_their_one_key() {
        let mut get = redis::cmd("GET");
        get.arg("a");
        assert_eq!(part_of(&get), Part::Slot(Slot::for_key("a")));
        let mut eval = redis::cmd("EVAL");
        eval.arg("return 1").arg(1).arg("k").arg("x");
        assert_eq!(part_of(&eval), Part::Slot(Slot::for_key("k")));
        let mut publish = redis::cmd("SPUBLISH");
        publish.arg("session:a").arg("x");
        // Publishes go on their own, at most once (see `publish_once`).
        assert_eq!(part_of(&publish), Part::Publish(Slot::for_key("session:a")));
    }

    #[test]
    fn only_replies_that_say_the_command_did_not_run_allow_sending_it_again() {
        let error = |reply: &[u8]| match redis::parse_redis_value(reply).unwrap() {
            Value::ServerError(e) => redis::RedisError::from(e),
            other => panic!("{other:?}"),
        };
        assert!(not_run(&error(b"-MOVED 3999 127.0.0.1:6381\r\n")));
        assert!(not_run(&error(
            b"-TRYAGAIN Multiple keys request during rehashing\r\n"
        )));
        assert!(not_run(&error(b"-CLUSTERDOWN The cluster is down\r\n")));
        assert!(not_run(&error(b"-LOADING Redis is loading\r\n")));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(not_run(&redis::RedisError::from(refused)));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!not_run(&redis::RedisError::from(reset)));
        let timeout = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert!(!not_run(&redis::RedisError::from(timeout)));
        assert!(!not_run(&error(b"-ERR something else\r\n")));
    }

    #[test]
    fn multi_key_and_keyless_commands_stand_alone() {
        let mut del = redis::cmd("DEL");
        del.arg("available:session:a").arg("available:session:b");
        assert_eq!(part_of(&del), Part::Alone);
        let mut one = redis::cmd("DEL");
        one.arg("available:session:a");
        assert_eq!(
            part_of(&one),
            Part::Slot(Slot::for_key("available:session:a"))
        );
        assert_eq!(part_of(&redis::cmd("PING")), Part::Alone);
        let mut keyless = redis::cmd("EVAL");
        keyless.arg("return 1").arg(0);
        assert_eq!(part_of(&keyless), Part::Alone);
    }

    #[test]
    fn a_failed_part_reads_as_a_server_error_with_its_reason() {
        let error = redis::RedisError::from((redis::ErrorKind::Client, "no route\r\nto host"));
        let value = failed(&error);
        assert!(matches!(value, Value::ServerError(_)), "{value:?}");
        let message = crate::error::first_error(&[value]).unwrap_err();
        assert!(message.contains("no route to host"), "{message}");
    }
}
