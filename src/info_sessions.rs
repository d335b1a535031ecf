//! What each `RedisInfoSessionManager` call does in Redis.
//!
//! The JavaScript facade validates and serialises (JSON, log levels); here each call
//! becomes commands on the command socket.

use napi_derive::napi;

use crate::commands::{Encoded, ScanJob, Shape};
use crate::keys::Keys;
use crate::requests::Resp;

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

/// Removes a session's metadata and its id from every subscription set it joined,
/// in one round trip, using the reverse index instead of scanning the keyspace.
const DELETE_SCRIPT: &str = r"
local uris = redis.call('SMEMBERS', KEYS[4])
for _, uri in ipairs(uris) do
  redis.call('SREM', ARGV[2] .. uri, ARGV[1])
end
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
";

/// Writes one info-manager call; `None` for an unknown code or a wrong argument count.
pub fn encode(
    code: u32,
    args: &[&str],
    keys: &Keys,
    upstream_compatible: bool,
    out: &mut Resp,
) -> Option<Encoded> {
    Some(match (code, args) {
        // Client info, capabilities and log level in one round trip: the three reads
        // every POST makes. Three GETs rather than one MGET: a key of the wrong type then
        // fails its own read only (MGET would report it as missing).
        (GET_SESSION, [id]) => {
            out.command(&[b"GET", keys.client_info(id).as_bytes()]);
            out.command(&[b"GET", keys.client_capabilities(id).as_bytes()]);
            out.command(&[b"GET", keys.log_level(id).as_bytes()]);
            Encoded::read(3, Shape::Session)
        }
        (SET_CLIENT_INFO, [id, json]) => {
            out.command(&[b"SET", keys.client_info(id).as_bytes(), json.as_bytes()]);
            Encoded::done(1)
        }
        (SET_CLIENT_CAPABILITIES, [id, json]) => {
            let key = keys.client_capabilities(id);
            out.command(&[b"SET", key.as_bytes(), json.as_bytes()]);
            Encoded::done(1)
        }
        (SET_LOG_LEVEL, [id, level]) => {
            out.command(&[b"SET", keys.log_level(id).as_bytes(), level.as_bytes()]);
            Encoded::done(1)
        }
        (GET_SUBSCRIPTIONS, [uri]) => {
            out.command(&[b"SMEMBERS", keys.subscriptions(uri).as_bytes()]);
            Encoded::read(1, Shape::Members)
        }
        // Both directions: the set upstream reads, and our reverse index for delete.
        (ADD_SUBSCRIPTION | REMOVE_SUBSCRIPTION, [id, uri]) => {
            let verb: &[u8] = if code == ADD_SUBSCRIPTION {
                b"SADD"
            } else {
                b"SREM"
            };
            out.command(&[verb, keys.subscriptions(uri).as_bytes(), id.as_bytes()]);
            let index = keys.session_subscriptions(id);
            out.command(&[verb, index.as_bytes(), uri.as_bytes()]);
            Encoded::done(2)
        }
        (INFO_DELETE, [id]) => {
            out.command(&[
                b"EVAL",
                DELETE_SCRIPT.as_bytes(),
                b"4",
                keys.client_info(id).as_bytes(),
                keys.client_capabilities(id).as_bytes(),
                keys.log_level(id).as_bytes(),
                keys.session_subscriptions(id).as_bytes(),
                id.as_bytes(),
                keys.subscriptions_prefix().as_bytes(),
            ]);
            // Upstream processes keep no reverse index: in compatible mode also SCAN
            // every subscription set, as upstream does.
            Encoded {
                count: 1,
                shape: Shape::Done,
                scan: upstream_compatible
                    .then(|| ScanJob::RemoveFromSubscriptionSets(id.to_string())),
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(code: u32, args: &[&str], compat: bool) -> (Option<Encoded>, String) {
        let mut out = Resp::default();
        let encoded = encode(code, args, &Keys::default(), compat, &mut out);
        (encoded, String::from_utf8(out.into_bytes()).unwrap())
    }

    #[test]
    fn codes_check_their_arity() {
        assert_eq!(
            written(SET_CLIENT_INFO, &["a", "{}"], false).0,
            Some(Encoded::done(1))
        );
        assert_eq!(written(SET_CLIENT_INFO, &["a"], false).0, None);
        assert_eq!(written(99, &["a"], false).0, None);
    }

    #[test]
    fn subscription_changes_keep_the_reverse_index() {
        let (encoded, packed) = written(ADD_SUBSCRIPTION, &["a", "u"], false);
        assert_eq!(encoded, Some(Encoded::done(2)));
        assert!(packed.contains("tmcp:subscriptions:u"));
        assert!(packed.contains("tmcp:session_subscriptions:a"));
    }

    #[test]
    fn session_read_is_three_gets() {
        let (encoded, packed) = written(GET_SESSION, &["a"], false);
        assert_eq!(
            encoded.map(|e| (e.count, e.shape)),
            Some((3, Shape::Session))
        );
        assert_eq!(packed.matches("GET").count(), 3);
    }

    #[test]
    fn upstream_mode_adds_a_scan_to_delete_only() {
        let compat = written(INFO_DELETE, &["a"], true).0.unwrap();
        assert_eq!(
            compat.scan,
            Some(ScanJob::RemoveFromSubscriptionSets("a".into()))
        );
        assert_eq!(written(INFO_DELETE, &["a"], false).0.unwrap().scan, None);
        assert_eq!(
            written(SET_LOG_LEVEL, &["a", "info"], true).0.unwrap().scan,
            None
        );
    }
}
