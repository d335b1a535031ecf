//! The stream manager's calls that are plain commands ([`StreamOp`], an [`Operation`]):
//! their call codes, how each is written into the shared pipeline and how its replies
//! are read; and the Lua scripts and pipeline builders of the liveness keys and the data
//! epoch, which the liveness timer uses too.
//!
//! It must not hold state nor send anything: the dispatcher sends what it encodes (and
//! runs a broadcast's follow-up SCAN on a connection it hands over).

use std::sync::Arc;

use napi_derive::napi;
use redis::{Pipeline, Value};

use crate::connection::random_u64;
use crate::delivery::{Outcome, Reply};
use crate::error::{first_error, unexpected_reply};
use crate::keys::Keys;
use crate::operation::{decode_text, scan_and_apply, FollowUp, Operation};

// Call codes, exported to `lib/wire.js`.
#[napi]
pub const HAS: u32 = 20;
#[napi]
pub const PUBLISH: u32 = 21;
#[napi]
pub const BROADCAST: u32 = 22;
#[napi]
pub const STREAM_DELETE: u32 = 23;

/// Reads the data epoch and extends its TTL; with a candidate (`ARGV[2]` not empty)
/// writes it first when the epoch is missing. Data in Redis is untrusted: an epoch of the
/// wrong type or shape (anything but a short hex string, which is all we ever write) is
/// treated as lost, so a corrupt key costs one rewrite instead of blocking every
/// creation. Needs only GET and SET (the README's minimal ACL rule allows EVAL, GET and
/// SET, not GETEX or EXPIRE).
const EPOCH_SCRIPT: &str = r"
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' or #v > 64 or not string.match(v, '^%x+$') then
  if ARGV[2] == '' then return false end
  v = ARGV[2]
end
redis.call('SET', KEYS[1], v, 'EX', ARGV[1])
return v
";

/// Adds the command that reads the data epoch key `key` (and keeps it while sessions
/// live), writing `candidate` when it is missing or corrupt.
pub(super) fn add_epoch(pipe: &mut Pipeline, key: &str, ttl: u32, candidate: Option<&str>) {
    pipe.cmd("EVAL")
        .arg(EPOCH_SCRIPT)
        .arg(1)
        .arg(key)
        .arg(epoch_ttl(ttl))
        .arg(candidate.unwrap_or(""));
}

/// Extends a liveness key's TTL and keeps its value, which names the process holding
/// the stream now (ours, another process's, or upstream's `active`): a refresh never
/// takes a session over. Replies 1 when the key was kept, 0 when it is missing (the
/// session was ended elsewhere). With `ARGV[3]` = `1` a missing key is written with our
/// value (Redis lost its data). A key of the wrong type (written by someone else) is
/// replaced by ours: this process holds the session.
const LIVENESS_SCRIPT: &str = r"
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'string' then
  redis.call('SET', KEYS[1], v, 'EX', ARGV[1])
  return 1
end
if type(v) == 'table' or ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[1])
  return 1
end
return 0
";

/// Removes a liveness key only while it still names this process: another process
/// that re-created the session since (a client that reconnected elsewhere) keeps it.
pub(super) const RELEASE_SCRIPT: &str = r"
if redis.pcall('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Adds `SET available:session:{id} <holder> EX ttl`: a new local session, taken over
/// from whoever held it before.
fn mark_alive(pipe: &mut Pipeline, keys: &Keys, id: &str, holder: &str, ttl: u32) {
    pipe.cmd("SET")
        .arg(keys.alive(id))
        .arg(holder)
        .arg("EX")
        .arg(ttl);
}

/// Adds a refresh of a liveness key (see [`LIVENESS_SCRIPT`]).
pub(super) fn keep_alive_key(
    pipe: &mut Pipeline,
    keys: &Keys,
    id: &str,
    holder: &str,
    ttl: u32,
    write: bool,
) {
    pipe.cmd("EVAL")
        .arg(LIVENESS_SCRIPT)
        .arg(1)
        .arg(keys.alive(id))
        .arg(ttl)
        .arg(holder)
        .arg(if write { "1" } else { "0" });
}

/// The epoch outlives the liveness keys (refreshed with them), and expires a while
/// after the last session of every process ended.
fn epoch_ttl(session_ttl: u32) -> u32 {
    session_ttl.saturating_mul(3)
}

/// One stream-manager call that is plain commands (sent through the shared pipeline).
#[derive(Debug, PartialEq)]
pub enum StreamOp {
    /// Whether `available:session:{id}` exists.
    Has(String),
    /// PUBLISH `data` to `session:{id}` for each id, in order.
    Publish { data: String, ids: Vec<String> },
    /// One PUBLISH on our broadcast channel, or with `scan` (upstream-compatible mode)
    /// a PUBLISH per `available:session:*` key, as upstream does.
    Broadcast { data: String, scan: bool },
    /// End the session everywhere: tell its owner, drop its liveness key.
    Delete(String),
    /// Mark new local sessions live (`SET … EX`, the value naming `holder`), and learn
    /// the data epoch the keys are written under: every key of `epochs` (written first
    /// where missing), replied as one value (see `read_epochs`).
    MarkLive {
        ids: Vec<String>,
        ttl: u32,
        holder: Arc<str>,
        epochs: Vec<String>,
    },
    /// Drop the liveness keys of sessions that ended here, those `holder` still holds.
    MarkGone { ids: Vec<String>, holder: Arc<str> },
}

impl StreamOp {
    /// Whether `code` is one of this manager's calls.
    pub fn handles(code: u32) -> bool {
        (HAS..=STREAM_DELETE).contains(&code)
    }

    /// Builds a call from its wire code (see `lib/wire.js`) and string arguments.
    pub fn from_code(
        code: u32,
        mut args: Vec<String>,
        upstream_compatible: bool,
    ) -> Option<StreamOp> {
        if args.is_empty() {
            return None;
        }
        let first = args.remove(0);
        Some(match code {
            HAS if args.is_empty() => StreamOp::Has(first),
            PUBLISH => StreamOp::Publish {
                data: first,
                ids: args,
            },
            BROADCAST if args.is_empty() => StreamOp::Broadcast {
                data: first,
                scan: upstream_compatible,
            },
            STREAM_DELETE if args.is_empty() => StreamOp::Delete(first),
            _ => return None,
        })
    }
}

impl Operation for StreamOp {
    fn weight(&self) -> usize {
        match self {
            StreamOp::Has(id) | StreamOp::Delete(id) => id.len(),
            StreamOp::Publish { data, ids } => ids.iter().map(|id| id.len() + data.len()).sum(),
            StreamOp::Broadcast { data, .. } => data.len(),
            StreamOp::MarkLive { ids, .. } | StreamOp::MarkGone { ids, .. } => {
                ids.iter().map(String::len).sum()
            }
        }
    }

    fn encode(&self, keys: &Keys, pipe: &mut Pipeline) -> usize {
        match self {
            StreamOp::Has(id) => {
                pipe.cmd("EXISTS").arg(keys.alive(id));
                1
            }
            StreamOp::Publish { data, ids } => {
                for id in ids {
                    pipe.cmd(keys.publish())
                        .arg(keys.session_channel(id))
                        .arg(data);
                }
                ids.len()
            }
            StreamOp::Broadcast { scan: true, .. } => 0,
            StreamOp::Broadcast { data, .. } => {
                pipe.cmd(keys.publish())
                    .arg(keys.broadcast_channel())
                    .arg(data);
                1
            }
            StreamOp::Delete(id) => {
                pipe.cmd(keys.publish())
                    .arg(keys.delete_channel(id))
                    .arg("");
                pipe.cmd("DEL").arg(keys.alive(id));
                2
            }
            StreamOp::MarkLive {
                ids,
                ttl,
                holder,
                epochs,
            } => {
                for key in epochs {
                    add_epoch(pipe, key, *ttl, Some(&epoch_candidate()));
                }
                for id in ids {
                    mark_alive(pipe, keys, id, holder, *ttl);
                }
                ids.len() + epochs.len()
            }
            StreamOp::MarkGone { ids, holder } => {
                for id in ids {
                    pipe.cmd("EVAL")
                        .arg(RELEASE_SCRIPT)
                        .arg(1)
                        .arg(keys.alive(id))
                        .arg(holder.as_ref());
                }
                ids.len()
            }
        }
    }

    fn decode(&self, values: Vec<Value>) -> Outcome {
        first_error(&values)?;
        let mut values = values.into_iter();
        match self {
            StreamOp::Has(_) => match values.next() {
                Some(Value::Int(n)) => Ok(Reply::Int(n)),
                other => Err(unexpected_reply(&other.unwrap_or(Value::Nil))),
            },
            // The first replies are the epochs (see `add_epoch`).
            StreamOp::MarkLive { epochs, .. } => {
                Ok(read_epochs(&mut values, epochs.len()).map_or(Reply::Nil, Reply::Text))
            }
            _ => Ok(Reply::Done),
        }
    }

    /// In upstream-compatible mode a broadcast is a PUBLISH per live session, found by
    /// a SCAN (upstream's processes do not listen on our broadcast channel).
    fn follow_up(&self, _keys: &Keys, _replies: &[Value]) -> Option<FollowUp> {
        match self {
            StreamOp::Broadcast { data, scan: true } => {
                Some(publish_to_alive_sessions(data.clone()))
            }
            _ => None,
        }
    }
}

/// PUBLISH `data` to `session:{id}` for every `available:session:{id}` key (a SCAN of
/// every master).
fn publish_to_alive_sessions(data: String) -> FollowUp {
    FollowUp::new(|mut link, keys| async move {
        let pattern = keys.alive_pattern();
        scan_and_apply(&mut link, &pattern, "string", |pipe, key| {
            if let Some(id) = keys.id_from_alive(key) {
                pipe.cmd(keys.publish())
                    .arg(keys.session_channel(id))
                    .arg(&data)
                    .ignore();
            }
        })
        .await?;
        Ok(Reply::Done)
    })
}

/// The epoch as [`EPOCH_SCRIPT`] replied it; `None` when missing (or, from a server that
/// ran something else, not text).
pub(super) fn read_epoch_reply(value: Option<Value>) -> Option<String> {
    match decode_text(value?) {
        Ok(Reply::Text(epoch)) => Some(epoch),
        _ => None,
    }
}

/// The epochs of the first `count` replies as one value; None when any is missing.
pub(super) fn read_epochs(
    values: &mut impl Iterator<Item = Value>,
    count: usize,
) -> Option<String> {
    // Every one taken (not up to the first missing one): the liveness replies follow.
    let epochs: Vec<Option<String>> = (0..count)
        .map(|_| read_epoch_reply(values.next()))
        .collect();
    let epochs: Option<Vec<String>> = epochs.into_iter().collect();
    epochs.map(|epochs| epochs.join(","))
}

/// A fresh value for the data epoch key, different in every process and call.
pub(super) fn epoch_candidate() -> String {
    format!("{:016x}", random_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_keeps_order_and_arity() {
        let op = StreamOp::from_code(PUBLISH, vec!["data".into(), "a".into(), "b".into()], false)
            .unwrap();
        let mut pipe = Pipeline::new();
        assert_eq!(op.encode(&Keys::default(), &mut pipe), 2);
        let packed = String::from_utf8(pipe.get_packed_pipeline()).unwrap();
        assert!(packed.find("session:a").unwrap() < packed.find("session:b").unwrap());
        assert_eq!(
            StreamOp::from_code(HAS, vec!["a".into(), "b".into()], false),
            None
        );
    }

    #[test]
    fn delete_tells_the_owner_and_drops_the_key() {
        let mut pipe = Pipeline::new();
        assert_eq!(
            StreamOp::Delete("x".into()).encode(&Keys::default(), &mut pipe),
            2
        );
        let packed = String::from_utf8(pipe.get_packed_pipeline()).unwrap();
        assert!(packed.contains("delete:session:x") && packed.contains("available:session:x"));
    }

    #[test]
    fn broadcast_scans_only_in_upstream_mode() {
        let fast = StreamOp::from_code(BROADCAST, vec!["d".into()], false).unwrap();
        let mut pipe = Pipeline::new();
        assert_eq!(fast.encode(&Keys::default(), &mut pipe), 1);
        assert!(fast.follow_up(&Keys::default(), &[]).is_none());
        let compat = StreamOp::from_code(BROADCAST, vec!["d".into()], true).unwrap();
        assert_eq!(compat.encode(&Keys::default(), &mut pipe), 0);
        assert!(compat.follow_up(&Keys::default(), &[]).is_some());
    }

    #[test]
    fn has_reads_exists() {
        let op = StreamOp::Has("x".into());
        assert_eq!(op.decode(vec![Value::Int(1)]), Ok(Reply::Int(1)));
    }

    #[test]
    fn mark_live_learns_the_epoch_and_sets_every_key() {
        let op = StreamOp::MarkLive {
            ids: vec!["a".into(), "b".into()],
            ttl: 10,
            holder: "active:1".into(),
            epochs: vec!["tmcp:epoch".into(), "tmcp:epoch:7".into()],
        };
        let mut pipe = Pipeline::new();
        assert_eq!(op.encode(&Keys::default(), &mut pipe), 4);
        let packed = String::from_utf8(pipe.get_packed_pipeline()).unwrap();
        assert!(packed.contains("active:1"));
        assert!(packed.contains("tmcp:epoch:7"));
        let values = vec![
            Value::BulkString(b"e0".to_vec()),
            Value::BulkString(b"s7".to_vec()),
            Value::Okay,
            Value::Okay,
        ];
        assert_eq!(op.decode(values), Ok(Reply::Text("e0,s7".into())));
    }

    #[test]
    fn mark_gone_removes_only_the_keys_this_manager_still_holds() {
        let op = StreamOp::MarkGone {
            ids: vec!["a".into(), "b".into()],
            holder: "active:2".into(),
        };
        let mut pipe = Pipeline::new();
        assert_eq!(op.encode(&Keys::default(), &mut pipe), 2);
        let packed = String::from_utf8(pipe.get_packed_pipeline()).unwrap();
        assert_eq!(packed.matches(RELEASE_SCRIPT).count(), 2);
        assert_eq!(packed.matches("active:2").count(), 2);
        assert!(!packed.contains("\r\nDEL\r\n"));
    }

    #[test]
    fn epoch_candidates_differ() {
        assert_ne!(epoch_candidate(), epoch_candidate());
    }
}
