//! What each `RedisInfoSessionManager` call does in Redis.
//!
//! The JavaScript facade validates and serialises (JSON, log levels); here each call
//! becomes commands in the shared pipeline and its replies become one outcome
//! ([`InfoOp`], an [`Operation`] the dispatcher sends without knowing what it means).

use napi_derive::napi;
use redis::{Pipeline, Value};

use crate::delivery::{Field, Outcome, Reply};
use crate::error::{
    describe_redis_error, error_kind, first_error, quote_stored, unexpected_reply, ErrorKind,
};
use crate::keys::Keys;
use crate::operation::{decode_text, scan_and_apply, FollowUp, Operation};

// Call codes, exported to `lib/wire.js`.
#[napi]
pub const GET_SESSION: u32 = 9;
#[napi]
pub const SET_CLIENT_INFO: u32 = 11;
#[napi]
pub const SET_CLIENT_CAPABILITIES: u32 = 13;
#[napi]
pub const SET_LOG_LEVEL: u32 = 15;
#[napi]
pub const GET_SUBSCRIPTIONS: u32 = 16;
#[napi]
pub const ADD_SUBSCRIPTION: u32 = 17;
#[napi]
pub const REMOVE_SUBSCRIPTION: u32 = 18;
#[napi]
pub const INFO_DELETE: u32 = 19;

/// The eight MCP log levels, the only values `setLogLevel` stores and `getLogLevel`
/// returns, space-separated; exported so `lib/info.js` checks against the same list.
#[napi]
pub const LOG_LEVELS: &str = "debug info notice warning error critical alert emergency";

/// Names of the three values of a session read, for error messages, comma-separated;
/// exported so `lib/info.js` words its messages the same way.
#[napi]
pub const SESSION_FIELDS: &str = "client info,client capabilities,log level";

/// The name of value `field` of a session read.
fn field_name(field: usize) -> &'static str {
    SESSION_FIELDS.split(',').nth(field).unwrap_or("value")
}

/// One value of a multi-value read: its own error does not fail the others. Failures
/// carry the whole message JavaScript throws.
fn decode_field(value: Value, field: usize, id: &str) -> Field {
    let failed = |message: String| {
        Field::Failed(
            format!(
                "Could not read {} for session {id}: {message}",
                field_name(field)
            ),
            error_kind(&message),
        )
    };
    if let Err(message) = first_error(std::slice::from_ref(&value)) {
        return failed(message);
    }
    match decode_text(value) {
        Ok(Reply::Text(text)) if field == LOG_LEVEL => read_log_level(&text)
            .map(|level| Field::Text(level.to_string()))
            .unwrap_or_else(|| {
                Field::Failed(
                    format!(
                        "Invalid log level {} stored for session {id}",
                        quote_stored(&text)
                    ),
                    ErrorKind::BadData,
                )
            }),
        Ok(Reply::Text(text)) => Field::Text(text),
        Ok(_) => Field::Missing,
        Err(message) => failed(message),
    }
}

/// Position of the log level in a session read.
const LOG_LEVEL: usize = 2;

/// A stored log level in either form: ours (plain `info`) or upstream's JSON-quoted
/// `"info"`. `None` when it is neither a known level nor a JSON string holding one.
pub fn read_log_level(stored: &str) -> Option<&'static str> {
    let known = |level: &str| LOG_LEVELS.split(' ').find(|l| *l == level);
    if stored.starts_with('"') {
        let level: String = serde_json::from_str(stored).ok()?;
        return known(&level);
    }
    known(stored)
}

/// Removes a session's metadata and its id from every subscription set it joined,
/// in one round trip, using the reverse index instead of scanning the keyspace.
const DELETE_SCRIPT: &str = r"
local uris = redis.call('SMEMBERS', KEYS[4])
for _, uri in ipairs(uris) do
  redis.call('SREM', ARGV[2] .. uri, ARGV[1])
end
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
";

/// `command` (SADD or SREM) on the resource's set of sessions and on the session's
/// reverse index of resources; returns the number of commands added.
fn both_sets(pipe: &mut Pipeline, keys: &Keys, command: &str, id: &str, uri: &str) -> usize {
    pipe.cmd(command).arg(keys.subscriptions(uri)).arg(id);
    pipe.cmd(command)
        .arg(keys.session_subscriptions(id))
        .arg(uri);
    2
}

/// One info-manager call.
#[derive(Debug, PartialEq)]
pub enum InfoOp {
    /// Client info, capabilities and log level in one round trip: the three reads every
    /// POST makes.
    GetSession(String),
    SetClientInfo(String, String),
    SetClientCapabilities(String, String),
    SetLogLevel(String, String),
    GetSubscriptions(String),
    AddSubscription {
        id: String,
        uri: String,
    },
    RemoveSubscription {
        id: String,
        uri: String,
    },
    /// With `scan` (upstream-compatible mode) also SCAN every subscription set, since
    /// upstream processes keep no reverse index.
    Delete {
        id: String,
        scan: bool,
    },
}

impl InfoOp {
    /// Whether `code` is one of this manager's calls.
    pub fn handles(code: u32) -> bool {
        (GET_SESSION..=INFO_DELETE).contains(&code)
    }

    /// Builds a call from its wire code (see `lib/wire.js`) and string arguments.
    pub fn from_code(
        code: u32,
        mut args: Vec<String>,
        upstream_compatible: bool,
    ) -> Option<InfoOp> {
        let mut next = || (!args.is_empty()).then(|| args.remove(0));
        Some(match code {
            GET_SESSION => InfoOp::GetSession(next()?),
            SET_CLIENT_INFO => InfoOp::SetClientInfo(next()?, next()?),
            SET_CLIENT_CAPABILITIES => InfoOp::SetClientCapabilities(next()?, next()?),
            SET_LOG_LEVEL => InfoOp::SetLogLevel(next()?, next()?),
            GET_SUBSCRIPTIONS => InfoOp::GetSubscriptions(next()?),
            ADD_SUBSCRIPTION => InfoOp::AddSubscription {
                id: next()?,
                uri: next()?,
            },
            REMOVE_SUBSCRIPTION => InfoOp::RemoveSubscription {
                id: next()?,
                uri: next()?,
            },
            INFO_DELETE => InfoOp::Delete {
                id: next()?,
                scan: upstream_compatible,
            },
            _ => return None,
        })
    }
}

impl Operation for InfoOp {
    fn weight(&self) -> usize {
        match self {
            InfoOp::GetSession(id) | InfoOp::GetSubscriptions(id) | InfoOp::Delete { id, .. } => {
                id.len()
            }
            InfoOp::SetClientInfo(a, b)
            | InfoOp::SetClientCapabilities(a, b)
            | InfoOp::SetLogLevel(a, b)
            | InfoOp::AddSubscription { id: a, uri: b }
            | InfoOp::RemoveSubscription { id: a, uri: b } => a.len() + b.len(),
        }
    }

    fn encode(&self, keys: &Keys, pipe: &mut Pipeline) -> usize {
        match self {
            InfoOp::GetSession(id) => {
                // Three GETs rather than one MGET: a key of the wrong type then fails its
                // own read only (MGET would report it as missing).
                pipe.cmd("GET").arg(keys.client_info(id));
                pipe.cmd("GET").arg(keys.client_capabilities(id));
                pipe.cmd("GET").arg(keys.log_level(id));
                return 3;
            }
            InfoOp::SetClientInfo(id, json) => pipe.cmd("SET").arg(keys.client_info(id)).arg(json),
            InfoOp::SetClientCapabilities(id, json) => {
                pipe.cmd("SET").arg(keys.client_capabilities(id)).arg(json)
            }
            InfoOp::SetLogLevel(id, level) => pipe.cmd("SET").arg(keys.log_level(id)).arg(level),
            InfoOp::GetSubscriptions(uri) => pipe.cmd("SMEMBERS").arg(keys.subscriptions(uri)),
            InfoOp::AddSubscription { id, uri } => return both_sets(pipe, keys, "SADD", id, uri),
            InfoOp::RemoveSubscription { id, uri } => {
                return both_sets(pipe, keys, "SREM", id, uri)
            }
            InfoOp::Delete { id, .. } if keys.is_sharded() => {
                // A cluster keeps these keys on several nodes, where one script cannot
                // reach them all: read the reverse index, delete each key on its own (the
                // SREMs follow with the reply, see `follow_up`).
                pipe.cmd("SMEMBERS").arg(keys.session_subscriptions(id));
                for key in [
                    keys.client_info(id),
                    keys.client_capabilities(id),
                    keys.log_level(id),
                    keys.session_subscriptions(id),
                ] {
                    pipe.cmd("DEL").arg(key);
                }
                return 5;
            }
            InfoOp::Delete { id, .. } => pipe
                .cmd("EVAL")
                .arg(DELETE_SCRIPT)
                .arg(4)
                .arg(keys.client_info(id))
                .arg(keys.client_capabilities(id))
                .arg(keys.log_level(id))
                .arg(keys.session_subscriptions(id))
                .arg(id)
                .arg(keys.subscriptions_prefix()),
        };
        1
    }

    fn decode(&self, values: Vec<Value>) -> Outcome {
        if let InfoOp::GetSession(id) = self {
            return Ok(Reply::Fields(
                values
                    .into_iter()
                    .enumerate()
                    .map(|(field, value)| decode_field(value, field, id))
                    .collect(),
            ));
        }
        first_error(&values)?;
        let first = values.into_iter().next().unwrap_or(Value::Nil);
        match self {
            InfoOp::GetSubscriptions(_) => match first {
                Value::Set(items) | Value::Array(items) => items
                    .into_iter()
                    .map(|item| match decode_text(item)? {
                        Reply::Text(s) => Ok(s),
                        _ => Err("unexpected reply from Redis".to_string()),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Reply::List),
                Value::Nil => Ok(Reply::List(Vec::new())),
                other => Err(unexpected_reply(&other)),
            },
            _ => Ok(Reply::Done),
        }
    }

    /// Work that follows the pipeline: in upstream-compatible mode a SCAN of every
    /// subscription set; on a cluster the SREMs from the reverse index read in the
    /// pipeline (its first reply).
    fn follow_up(&self, keys: &Keys, replies: &[Value]) -> Option<FollowUp> {
        match self {
            InfoOp::Delete { id, scan: true } => Some(remove_from_subscription_sets(id.clone())),
            InfoOp::Delete { id, scan: false } if keys.is_sharded() => {
                let sets: Vec<String> = match replies.first() {
                    Some(Value::Set(uris) | Value::Array(uris)) => uris
                        .iter()
                        .filter_map(|uri| match decode_text(uri.clone()) {
                            Ok(Reply::Text(uri)) => Some(keys.subscriptions(&uri)),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                (!sets.is_empty()).then(|| remove_from_sets(id.clone(), sets))
            }
            _ => None,
        }
    }
}

/// SREM `id` from every `tmcp:subscriptions:*` set (a SCAN of every master): upstream's
/// processes keep no reverse index to read instead.
fn remove_from_subscription_sets(id: String) -> FollowUp {
    FollowUp::new(|mut link, keys| async move {
        let pattern = keys.subscriptions_pattern();
        scan_and_apply(&mut link, &pattern, "set", |pipe, key| {
            pipe.cmd("SREM").arg(key).arg(&id).ignore();
        })
        .await?;
        Ok(Reply::Done)
    })
}

/// SREM `id` from these sets: an info delete on a cluster, whose sets (read from the
/// reverse index in the pipeline) live on other nodes than the script could reach.
fn remove_from_sets(id: String, sets: Vec<String>) -> FollowUp {
    FollowUp::new(|mut link, _| async move {
        let mut pipe = Pipeline::new();
        for set in &sets {
            pipe.cmd("SREM").arg(set).arg(&id).ignore();
        }
        pipe.query_async::<()>(&mut link)
            .await
            .map_err(|e| describe_redis_error(&e))?;
        Ok(Reply::Done)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn codes_map_to_calls_and_check_arity() {
        assert_eq!(
            InfoOp::from_code(11, vec![s("a"), s("{}")], false),
            Some(InfoOp::SetClientInfo(s("a"), s("{}")))
        );
        assert_eq!(InfoOp::from_code(11, vec![s("a")], false), None);
        assert_eq!(InfoOp::from_code(99, vec![s("a")], false), None);
    }

    #[test]
    fn subscription_changes_keep_the_reverse_index() {
        let mut pipe = Pipeline::new();
        let op = InfoOp::AddSubscription {
            id: s("a"),
            uri: s("u"),
        };
        assert_eq!(op.encode(&Keys::default(), &mut pipe), 2);
        let packed = String::from_utf8_lossy(&pipe.get_packed_pipeline()).to_string();
        assert!(packed.contains("tmcp:subscriptions:u"));
        assert!(packed.contains("tmcp:session_subscriptions:a"));
    }

    #[test]
    fn session_read_fails_only_the_broken_value() {
        let op = InfoOp::from_code(9, vec![s("a")], false).unwrap();
        let wrong = redis::parse_redis_value(b"-WRONGTYPE Operation against a key\r\n").unwrap();
        let values = vec![Value::BulkString(b"{}".to_vec()), wrong, Value::Nil];
        assert_eq!(
            op.decode(values),
            Ok(Reply::Fields(vec![
                Field::Text(s("{}")),
                Field::Failed(
                    s("Could not read client capabilities for session a: Redis error: WRONGTYPE Operation against a key"),
                    ErrorKind::BadData
                ),
                Field::Missing,
            ]))
        );
    }

    #[test]
    fn log_levels_read_in_both_forms() {
        assert_eq!(read_log_level("info"), Some("info"));
        assert_eq!(read_log_level("\"warning\""), Some("warning"));
        assert_eq!(read_log_level("loud"), None);
        assert_eq!(read_log_level("\"loud\""), None);
        assert_eq!(read_log_level("\"info"), None);
        let op = InfoOp::GetSession(s("x"));
        let values = vec![Value::Nil, Value::Nil, Value::BulkString(b"loud".to_vec())];
        assert_eq!(
            op.decode(values),
            Ok(Reply::Fields(vec![
                Field::Missing,
                Field::Missing,
                Field::Failed(
                    s("Invalid log level \"loud\" stored for session x"),
                    ErrorKind::BadData
                ),
            ]))
        );
    }

    #[test]
    fn missing_subscriptions_are_an_empty_list() {
        let op = InfoOp::GetSubscriptions(s("u"));
        assert_eq!(op.decode(vec![Value::Nil]), Ok(Reply::List(vec![])));
        let set = Value::Set(vec![Value::BulkString(b"x".to_vec())]);
        assert_eq!(op.decode(vec![set]), Ok(Reply::List(vec![s("x")])));
    }

    #[test]
    fn upstream_mode_adds_a_scan_to_delete_only() {
        let compat = InfoOp::from_code(19, vec![s("a")], true).unwrap();
        assert!(InfoOp::from_code(10, vec![s("a")], false).is_none());
        assert!(compat.follow_up(&Keys::default(), &[]).is_some());
        let fast = InfoOp::from_code(19, vec![s("a")], false).unwrap();
        assert!(fast.follow_up(&Keys::default(), &[]).is_none());
    }
}
