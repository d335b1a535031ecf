//! Error text shown to JavaScript.
//!
//! Every message that leaves the addon goes through [`describe_redis_error`], which
//! never includes connection credentials: redis-rs errors carry no URL, and URL parse
//! failures are reported by us without echoing the input.

use redis::RedisError;

/// Renders a redis-rs error for users, with a hint for the common failure kinds.
pub fn describe_redis_error(err: &RedisError) -> String {
    let text = err.to_string();
    if text.contains("certificate") || text.contains("handshake") || text.contains("TLS") {
        return format!("TLS handshake with Redis failed ({text})");
    }
    if err.is_timeout() {
        return "Redis did not answer in time".to_string();
    }
    if err.is_connection_refusal() {
        return format!("cannot connect to Redis ({text})");
    }
    if err.is_io_error() || err.is_connection_dropped() {
        return format!("connection to Redis lost ({text})");
    }
    text
}

/// A call rejected before it was handed to the connection: Redis never saw it, so a
/// retry cannot duplicate it.
pub fn not_sent(reason: &str) -> String {
    format!("{reason}; {NOT_SENT}")
}

/// A call whose deadline passed before it was handed to the connection.
pub fn timed_out_before_sending(timeout_ms: u32) -> String {
    not_sent(&format!("{NO_ANSWER} {timeout_ms} ms (commandTimeout)"))
}

/// A call handed to the connection that got no answer in time. It may have been
/// written, so it may still run: a caller that retries may duplicate it.
pub fn timed_out_after_sending(timeout_ms: u32) -> String {
    format!("{NO_ANSWER} {timeout_ms} ms (commandTimeout); {MAY_HAVE_RUN}")
}

/// Characters of a stored value an error message quotes at most: data in Redis is
/// untrusted, and a megabyte of garbage must not become a megabyte of error message.
pub const MAX_QUOTED_CHARS: usize = 100;

/// A value read from Redis, quoted for an error message: JSON-escaped, cut after
/// [`MAX_QUOTED_CHARS`] characters with the full length said.
pub fn quote_stored(value: &str) -> String {
    let mut chars = value.char_indices();
    match chars.nth(MAX_QUOTED_CHARS) {
        None => serde_json::to_string(value).unwrap_or_default(),
        Some((cut, _)) => format!(
            "{}… ({} bytes)",
            serde_json::to_string(&value[..cut]).unwrap_or_default(),
            value.len()
        ),
    }
}

/// The first server error among a call's replies, as its failure, worded as Redis
/// prints it.
pub fn first_error(values: &[redis::Value]) -> Result<(), String> {
    match values.iter().find_map(|v| match v {
        redis::Value::ServerError(e) => Some(match e.details() {
            Some(details) => format!("{} {details}", e.code()),
            None => e.code().to_string(),
        }),
        _ => None,
    }) {
        Some(message) => Err(format!("Redis error: {message}")),
        None => Ok(()),
    }
}

/// A reply of a shape the call did not expect, for an error message (cut like
/// [`quote_stored`]: it may hold a stored value).
pub fn unexpected_reply(value: &redis::Value) -> String {
    let shown = format!("{value:?}");
    match shown.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("unexpected reply from Redis: {shown}"),
        Some((cut, _)) => format!("unexpected reply from Redis: {}…", &shown[..cut]),
    }
}

/// What kind of failure a message of ours reports; JavaScript gives the `Error` the
/// matching stable `code` (`lib/errors.js`). Sent beside the message of every failed
/// call, field and background problem.
#[napi_derive::napi]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ErrorKind {
    /// An error reply from Redis (`TMCP_REDIS_REPLY`).
    Reply = 1,
    /// Never handed to Redis: a retry cannot duplicate it (`TMCP_REDIS_NOT_SENT`).
    NotSent = 2,
    /// Not sent because `commandTimeout` passed first (`TMCP_REDIS_NOT_SENT`, and
    /// counted as a timeout).
    NotSentInTime = 3,
    /// No answer within the timeout: it may still have run (`TMCP_REDIS_TIMEOUT`).
    Timeout = 4,
    /// No usable connection: refused, lost, TLS, authentication, no node reachable
    /// (`TMCP_REDIS_CONNECTION`).
    Connection = 5,
    /// The manager was closed (`TMCP_REDIS_CLOSED`).
    Closed = 6,
    /// A value read from Redis is corrupt (`TMCP_REDIS_BAD_DATA`).
    BadData = 7,
}

/// Prefixes of the messages [`describe_redis_error`] words for a missing connection.
const CONNECTION_FAILURES: [&str; 6] = [
    "TLS handshake with Redis failed",
    "cannot connect to Redis",
    "connection to Redis lost",
    "no node of the Redis Cluster could be reached",
    "WRONGPASS",
    "NOAUTH",
];

/// The kind of a failure, from a message this addon worded (the wording and this
/// reading of it live in this file, with `delivery`'s problems and the tests beside).
/// Prefixes and the fixed tails come first: a message may quote a stored value, which
/// is untrusted and could contain any phrase.
pub fn error_kind(message: &str) -> ErrorKind {
    if message.ends_with(NOT_SENT) {
        return if message.starts_with(NO_ANSWER) {
            ErrorKind::NotSentInTime
        } else {
            ErrorKind::NotSent
        };
    }
    if message.starts_with("unexpected reply from Redis")
        || message.starts_with("value stored in Redis is not valid UTF-8")
        || message.starts_with("Invalid log level")
        || message.starts_with("Redis error: WRONGTYPE")
    {
        return ErrorKind::BadData;
    }
    // A cluster's per-command failure carries the connection's reason as an error reply
    // (see `cluster::failed`).
    let message = message.strip_prefix("Redis error: ERR ").unwrap_or(message);
    if message.ends_with(MAY_HAVE_RUN) || message.starts_with(NO_ANSWER) {
        return if message.starts_with(NO_ANSWER) || message.starts_with("Redis did not answer") {
            ErrorKind::Timeout
        } else {
            ErrorKind::Connection
        };
    }
    // redis-rs quotes the code of a failed handshake: `"WRONGPASS": invalid …`.
    let bare = message.strip_prefix('"').unwrap_or(message);
    if CONNECTION_FAILURES.iter().any(|p| bare.starts_with(p))
        || message.contains("pub/sub connection")
        || message.starts_with("the cluster's nodes did not hold")
    {
        return ErrorKind::Connection;
    }
    if message.starts_with("Redis did not")
        || message == "timed out"
        || message.ends_with(": timed out")
    {
        return ErrorKind::Timeout;
    }
    if message == "the session manager is closed" || message == "the subscription manager is closed"
    {
        return ErrorKind::Closed;
    }
    if message.starts_with("internal error") {
        return ErrorKind::NotSent;
    }
    // A background problem: what failed, then why (no id or value before the reason).
    for prefix in [
        "could not refresh ",
        "could not remove ",
        "could not restore ",
    ] {
        if let Some((_, reason)) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once(": "))
        {
            return error_kind(reason.strip_suffix("; retrying").unwrap_or(reason));
        }
    }
    ErrorKind::Reply
}

const NOT_SENT: &str = "the command was not sent";
const MAY_HAVE_RUN: &str = "the command may still have run";
const NO_ANSWER: &str = "Redis did not answer within";

/// Turns a message into a JavaScript `Error` for napi returns.
pub fn js_error(message: impl Into<String>) -> napi::Error {
    napi::Error::new(napi::Status::GenericFailure, message.into())
}

/// Turns a message into a JavaScript `TypeError`-like invalid-argument error.
pub fn js_type_error(message: impl Into<String>) -> napi::Error {
    napi::Error::new(napi::Status::InvalidArg, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn server_errors_read_like_redis_prints_them() {
        let values = vec![
            redis::Value::Okay,
            redis::parse_redis_value(b"-WRONGTYPE Operation against a key\r\n").unwrap(),
        ];
        assert_eq!(
            first_error(&values),
            Err("Redis error: WRONGTYPE Operation against a key".into())
        );
        assert_eq!(first_error(&[redis::Value::Nil]), Ok(()));
    }

    #[test]
    fn quotes_at_most_a_hundred_characters_of_a_stored_value() {
        assert_eq!(quote_stored("debug!"), "\"debug!\"");
        let long = "é".repeat(1 << 19);
        let quoted = quote_stored(&long);
        assert_eq!(quoted.matches('é').count(), MAX_QUOTED_CHARS);
        assert!(quoted.ends_with(&format!("… ({} bytes)", long.len())));
    }

    #[test]
    fn every_message_of_ours_has_its_kind() {
        use ErrorKind::*;
        let cases: &[(&str, ErrorKind)] = &[
            (&timed_out_before_sending(5000), NotSentInTime),
            (&timed_out_after_sending(5000), Timeout),
            (&not_sent("cannot connect to Redis (refused)"), NotSent),
            (&not_sent("more than 64 MiB of calls are waiting for Redis"), NotSent),
            ("Redis error: WRONGTYPE Operation against a key", BadData),
            ("Redis error: NOPERM User has no permissions", Reply),
            ("Redis error: ERR cannot connect to Redis (refused)", Connection),
            ("Redis error: ERR connection to Redis lost (reset); the command may still have run", Connection),
            ("Redis error: ERR Redis did not answer in time; the command may still have run", Timeout),
            ("Redis error: ERR cannot connect to Redis (x); the command was not sent", NotSent),
            ("connection to Redis lost (broken pipe)", Connection),
            ("TLS handshake with Redis failed (invalid peer certificate)", Connection),
            ("no node of the Redis Cluster could be reached: refused", Connection),
            ("WRONGPASS invalid username-password pair", Connection),
            ("\"WRONGPASS\": invalid username-password pair or user is disabled.", Connection),
            ("Redis did not answer in time", Timeout),
            ("Redis did not confirm the subscription within 100 ms (commandTimeout)", Timeout),
            ("Redis did not finish the scan in time", Timeout),
            ("the session manager is closed", Closed),
            ("the subscription manager is closed", Closed),
            ("internal error: malformed call", NotSent),
            ("value stored in Redis is not valid UTF-8", BadData),
            ("Invalid log level \"connection lost; the command was not sen\" stored", BadData),
            (&unexpected_reply(&redis::Value::SimpleString("cannot connect to Redis".into())), BadData),
            ("lost the Redis pub/sub connection; reconnecting and resubscribing", Connection),
            ("the Redis pub/sub connection stopped answering; replaced it and resubscribing", Connection),
            ("Redis pub/sub connection check failed: Redis error: NOPERM", Connection),
            ("the cluster's nodes did not hold the wanted pub/sub subscriptions", Connection),
            ("could not refresh 3 session liveness key(s): timed out", Timeout),
            ("could not refresh 3 session liveness key(s): Redis error: NOPERM no", Reply),
            ("could not remove the liveness key(s) of 2 ended session(s): cannot connect to Redis (x)", Connection),
            ("could not restore the pub/sub subscriptions: Redis did not confirm the subscription within 5 ms (commandTimeout); retrying", Timeout),
        ];
        for (message, kind) in cases {
            assert_eq!(&error_kind(message), kind, "{message}");
        }
    }

    #[test]
    fn names_the_kind_of_failure() {
        let refused = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(describe_redis_error(&refused).starts_with("cannot connect to Redis"));
        let tls = RedisError::from(io::Error::new(
            io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        ));
        assert!(describe_redis_error(&tls).starts_with("TLS handshake with Redis failed"));
        let reset = RedisError::from(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(describe_redis_error(&reset).starts_with("connection to Redis lost"));
    }
}
