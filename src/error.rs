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
    format!("{reason}; the command was not sent")
}

/// A call whose deadline passed before it was handed to the connection.
pub fn timed_out_before_sending(timeout_ms: u32) -> String {
    not_sent(&format!(
        "Redis did not answer within {timeout_ms} ms (commandTimeout)"
    ))
}

/// A call handed to the connection that got no answer in time. It may have been
/// written, so it may still run: a caller that retries may duplicate it.
pub fn timed_out_after_sending(timeout_ms: u32) -> String {
    format!("Redis did not answer within {timeout_ms} ms (commandTimeout); the command may still have run")
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

/// A reply of a shape the call did not expect, for an error message (cut like
/// [`quote_stored`]: it may hold a stored value).
pub fn unexpected_reply(value: &redis::Value) -> String {
    let shown = format!("{value:?}");
    match shown.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("unexpected reply from Redis: {shown}"),
        Some((cut, _)) => format!("unexpected reply from Redis: {}…", &shown[..cut]),
    }
}

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
    fn quotes_at_most_a_hundred_characters_of_a_stored_value() {
        assert_eq!(quote_stored("debug!"), "\"debug!\"");
        let long = "é".repeat(1 << 19);
        let quoted = quote_stored(&long);
        assert_eq!(quoted.matches('é').count(), MAX_QUOTED_CHARS);
        assert!(quoted.ends_with(&format!("… ({} bytes)", long.len())));
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
