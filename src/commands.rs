//! Calls and their commands: what each call JavaScript makes writes and how its replies
//! are read, the SCAN follow-ups of upstream-compatible mode, and the tokio side's own
//! command connection.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Pipeline, Value};

use crate::config::NativeOptions;
use crate::delivery::{Completions, Field, Outcome, Reply};
use crate::error::describe_redis_error;
use crate::keys::Keys;
use crate::requests::Resp;

/// Keys fetched per SCAN step in upstream-compatible mode.
const SCAN_COUNT: usize = 1000;

/// How a call's replies become its answer, decided when the call is written.
#[derive(Debug, PartialEq)]
pub enum Shape {
    /// A write: only an error matters.
    Done,
    /// Client info, capabilities and log level, each read on its own.
    Session,
    /// The members of a set.
    Members,
    /// The count of EXISTS.
    Exists,
}

/// What writing one call produced.
#[derive(Debug, PartialEq)]
pub struct Encoded {
    /// Commands written, so replies to wait for.
    pub count: usize,
    pub shape: Shape,
    /// Follow-up after the replies (upstream-compatible mode only).
    pub scan: Option<ScanJob>,
}

impl Encoded {
    /// A write of `count` commands.
    pub fn done(count: usize) -> Self {
        Self::read(count, Shape::Done)
    }

    /// `count` commands whose replies are read as `shape`.
    pub fn read(count: usize, shape: Shape) -> Self {
        Encoded {
            count,
            shape,
            scan: None,
        }
    }
}

/// Writes the commands of call `code` (see `lib/wire.js`) with its string arguments;
/// `None` when the call is malformed.
pub fn encode_call(
    code: u32,
    args: &[&str],
    keys: &Keys,
    options: &NativeOptions,
    out: &mut Resp,
) -> Option<Encoded> {
    // Each module knows its own codes and writes nothing for another's.
    crate::info_sessions::encode(code, args, keys, options.upstream_compatible, out)
        .or_else(|| crate::stream_sessions::encode(code, args, keys, options, out))
}

/// Turns a call's replies into its outcome.
pub fn decode_replies(shape: &Shape, values: Vec<Value>) -> Outcome {
    if *shape == Shape::Session {
        return Ok(Reply::Fields(
            values.into_iter().map(decode_field).collect(),
        ));
    }
    first_error(&values)?;
    let first = values.into_iter().next().unwrap_or(Value::Nil);
    match (shape, first) {
        (Shape::Members, Value::Set(items) | Value::Array(items)) => items
            .into_iter()
            .map(|item| match decode_text(item)? {
                Reply::Text(s) => Ok(s),
                _ => Err("unexpected reply from Redis".to_string()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Reply::List),
        (Shape::Members, Value::Nil) => Ok(Reply::List(Vec::new())),
        (Shape::Exists, Value::Int(n)) => Ok(Reply::Int(n)),
        (Shape::Members | Shape::Exists, other) => {
            Err(format!("unexpected reply from Redis: {other:?}"))
        }
        _ => Ok(Reply::Done),
    }
}

/// One value of a multi-value read: its own error does not fail the others.
fn decode_field(value: Value) -> Field {
    if let Err(message) = first_error(std::slice::from_ref(&value)) {
        return Field::Failed(message);
    }
    match decode_text(value) {
        Ok(Reply::Text(text)) => Field::Text(text),
        Ok(_) => Field::Missing,
        Err(message) => Field::Failed(message),
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

/// The tokio side's command connection, for the SCAN follow-ups of upstream-compatible
/// mode (many round trips each). Requests from JavaScript go through
/// [`crate::requests`] instead.
pub struct Commands {
    connection: ConnectionManager,
    keys: Keys,
    options: NativeOptions,
    completions: Completions,
}

impl Commands {
    /// Creates the connection lazily: it connects on its first use only, so a manager
    /// without scans never opens it. Must run inside the tokio runtime.
    pub fn start(
        client: Client,
        options: NativeOptions,
        completions: Completions,
    ) -> Result<Arc<Self>, String> {
        let connection = connection_manager(client, &options)?;
        Ok(Arc::new(Commands {
            connection,
            keys: Keys::new(&options.key_prefix),
            options,
            completions,
        }))
    }

    /// Runs a call's SCAN follow-up on the tokio side; it answers `id` when done. The
    /// task shares `self` (one Arc clone, not the keys and options with their TLS PEMs).
    pub fn spawn_scan(self: &Arc<Self>, id: u32, job: ScanJob) {
        let commands = Arc::clone(self);
        napi::bindgen_prelude::spawn(async move {
            let timeout = commands.options.command_timeout() * 4;
            let scan = run_scan(commands.connection.clone(), &commands.keys, job);
            let outcome = match tokio::time::timeout(timeout, scan).await {
                Ok(result) => result,
                Err(_) => Err("Redis did not finish the scan in time".to_string()),
            };
            commands.completions.one(id, outcome);
        });
    }

    pub fn completions(&self) -> &Completions {
        &self.completions
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn options(&self) -> &NativeOptions {
        &self.options
    }
}

/// A self-reconnecting multiplexed connection with our timeouts.
fn connection_manager(
    client: Client,
    options: &NativeOptions,
) -> Result<ConnectionManager, String> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout()))
        .set_response_timeout(Some(options.command_timeout()))
        // Few quick retries per attempt: a blip is absorbed, while a permanent failure
        // (wrong password, refused connection) surfaces with its own message well within
        // the scan's deadline.
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500))
        .set_pipeline_buffer_size(1024);
    ConnectionManager::new_lazy_with_config(client, config).map_err(|e| describe_redis_error(&e))
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
            return Ok(Reply::Done);
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
    fn session_read_fails_only_the_broken_value() {
        let wrong = redis::parse_redis_value(b"-WRONGTYPE Operation against a key\r\n").unwrap();
        let values = vec![Value::BulkString(b"{}".to_vec()), wrong, Value::Nil];
        assert_eq!(
            decode_replies(&Shape::Session, values),
            Ok(Reply::Fields(vec![
                Field::Text("{}".into()),
                Field::Failed("Redis error: WRONGTYPE Operation against a key".into()),
                Field::Missing,
            ]))
        );
    }

    #[test]
    fn missing_set_is_an_empty_list_and_exists_is_a_count() {
        assert_eq!(
            decode_replies(&Shape::Members, vec![Value::Nil]),
            Ok(Reply::List(vec![]))
        );
        let set = Value::Set(vec![Value::BulkString(b"x".to_vec())]);
        assert_eq!(
            decode_replies(&Shape::Members, vec![set]),
            Ok(Reply::List(vec!["x".into()]))
        );
        assert_eq!(
            decode_replies(&Shape::Exists, vec![Value::Int(1)]),
            Ok(Reply::Int(1))
        );
    }

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
