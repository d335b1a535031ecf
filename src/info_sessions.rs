//! What each `RedisInfoSessionManager` call does in Redis.
//!
//! The JavaScript facade validates and serialises (JSON, log levels); here each call
//! becomes commands in the shared pipeline and its replies become one outcome.

use redis::Value;

use crate::commands::{decode_text, first_error, ScanJob};
use crate::delivery::{Field, Outcome, Reply};
use crate::keys::Keys;
use crate::requests::Resp;

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

/// Removes a session's metadata and its id from every subscription set it joined,
/// in one round trip, using the reverse index instead of scanning the keyspace.
const DELETE_SCRIPT: &str = r"
local uris = redis.call('SMEMBERS', KEYS[4])
for _, uri in ipairs(uris) do
  redis.call('SREM', ARGV[2] .. uri, ARGV[1])
end
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
";

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
    /// Builds a call from its wire code (see `lib/wire.js`) and string arguments.
    pub fn from_code(
        code: u32,
        mut args: Vec<String>,
        upstream_compatible: bool,
    ) -> Option<InfoOp> {
        let mut next = || (!args.is_empty()).then(|| args.remove(0));
        Some(match code {
            9 => InfoOp::GetSession(next()?),
            11 => InfoOp::SetClientInfo(next()?, next()?),
            13 => InfoOp::SetClientCapabilities(next()?, next()?),
            15 => InfoOp::SetLogLevel(next()?, next()?),
            16 => InfoOp::GetSubscriptions(next()?),
            17 => InfoOp::AddSubscription {
                id: next()?,
                uri: next()?,
            },
            18 => InfoOp::RemoveSubscription {
                id: next()?,
                uri: next()?,
            },
            19 => InfoOp::Delete {
                id: next()?,
                scan: upstream_compatible,
            },
            _ => return None,
        })
    }

    /// Writes this call's commands and returns how many it wrote.
    pub fn encode(&self, keys: &Keys, out: &mut Resp) -> usize {
        match self {
            InfoOp::GetSession(id) => {
                // Three GETs rather than one MGET: a key of the wrong type then fails its
                // own read only (MGET would report it as missing).
                out.command(&[b"GET", keys.client_info(id).as_bytes()]);
                out.command(&[b"GET", keys.client_capabilities(id).as_bytes()]);
                out.command(&[b"GET", keys.log_level(id).as_bytes()]);
                return 3;
            }
            InfoOp::SetClientInfo(id, json) => {
                out.command(&[b"SET", keys.client_info(id).as_bytes(), json.as_bytes()])
            }
            InfoOp::SetClientCapabilities(id, json) => out.command(&[
                b"SET",
                keys.client_capabilities(id).as_bytes(),
                json.as_bytes(),
            ]),
            InfoOp::SetLogLevel(id, level) => {
                out.command(&[b"SET", keys.log_level(id).as_bytes(), level.as_bytes()])
            }
            InfoOp::GetSubscriptions(uri) => {
                out.command(&[b"SMEMBERS", keys.subscriptions(uri).as_bytes()])
            }
            InfoOp::AddSubscription { id, uri } => {
                out.command(&[b"SADD", keys.subscriptions(uri).as_bytes(), id.as_bytes()]);
                out.command(&[
                    b"SADD",
                    keys.session_subscriptions(id).as_bytes(),
                    uri.as_bytes(),
                ]);
                return 2;
            }
            InfoOp::RemoveSubscription { id, uri } => {
                out.command(&[b"SREM", keys.subscriptions(uri).as_bytes(), id.as_bytes()]);
                out.command(&[
                    b"SREM",
                    keys.session_subscriptions(id).as_bytes(),
                    uri.as_bytes(),
                ]);
                return 2;
            }
            InfoOp::Delete { id, .. } => out.command(&[
                b"EVAL",
                DELETE_SCRIPT.as_bytes(),
                b"4",
                keys.client_info(id).as_bytes(),
                keys.client_capabilities(id).as_bytes(),
                keys.log_level(id).as_bytes(),
                keys.session_subscriptions(id).as_bytes(),
                id.as_bytes(),
                keys.subscriptions_prefix().as_bytes(),
            ]),
        }
        1
    }

    /// Turns this call's replies into its outcome.
    pub fn decode(&self, values: Vec<Value>) -> Outcome {
        if let InfoOp::GetSession(_) = self {
            return Ok(Reply::Fields(
                values.into_iter().map(decode_field).collect(),
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
                other => Err(format!("unexpected reply from Redis: {other:?}")),
            },
            _ => Ok(Reply::Nil),
        }
    }

    /// Work that follows the pipeline in upstream-compatible mode.
    pub fn scan_job(&self) -> Option<ScanJob> {
        match self {
            InfoOp::Delete { id, scan: true } => {
                Some(ScanJob::RemoveFromSubscriptionSets(id.clone()))
            }
            _ => None,
        }
    }
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
        let mut out = Resp::default();
        let op = InfoOp::AddSubscription {
            id: s("a"),
            uri: s("u"),
        };
        assert_eq!(op.encode(&Keys::default(), &mut out), 2);
        let packed = String::from_utf8(out.into_bytes()).unwrap();
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
                Field::Failed(s("Redis error: WRONGTYPE Operation against a key")),
                Field::Missing,
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
        assert!(compat.scan_job().is_some());
        let fast = InfoOp::from_code(19, vec![s("a")], false).unwrap();
        assert!(fast.scan_job().is_none());
    }
}
