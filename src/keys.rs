//! Every Redis key and channel name the managers use, in one place.
//!
//! With an empty prefix the names are exactly upstream's (`@tmcp/session-manager-redis`),
//! so upstream processes and ours interoperate on one Redis (SPEC §4).

/// What a pub/sub channel we listen on is for.
#[derive(Debug, PartialEq, Eq)]
pub enum Channel<'a> {
    /// `session:{id}`: a message for one session.
    Session(&'a str),
    /// `delete:session:{id}`: end the session wherever it lives.
    Delete(&'a str),
    /// Our broadcast channel: a message for every session of every process of ours.
    Broadcast,
}

/// Builds names under an optional prefix.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    prefix: String,
    /// On a Redis Cluster the channels are sharded (SPUBLISH/SSUBSCRIBE): a message goes
    /// to the shard of its channel instead of every node.
    sharded: bool,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
            sharded: false,
        }
    }

    /// Names for a Redis Cluster: the same names, sharded channels.
    pub fn sharded(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
            sharded: true,
        }
    }

    /// Whether channels are sharded (a Redis Cluster) and keys live on several nodes.
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// The command that publishes to our channels: SPUBLISH on a cluster.
    pub fn publish(&self) -> &'static str {
        if self.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// String key holding `active` while a stream for `id` is open somewhere.
    pub fn alive(&self, id: &str) -> String {
        format!("{}available:session:{id}", self.prefix)
    }

    /// SCAN pattern matching every liveness key (upstream-compatible broadcast).
    pub fn alive_pattern(&self) -> String {
        format!("{}available:session:*", escape_glob(&self.prefix))
    }

    /// SCAN pattern matching every subscription set (upstream-compatible delete).
    pub fn subscriptions_pattern(&self) -> String {
        format!("{}{SUBSCRIPTIONS}*", escape_glob(&self.prefix))
    }

    /// A value that lives as long as the server's data: if it changes or vanishes,
    /// Redis lost its keys (restart without persistence, FLUSHALL), so the liveness
    /// keys of local sessions are re-asserted instead of read as "deleted elsewhere".
    pub fn epoch(&self) -> String {
        format!("{}tmcp:epoch", self.prefix)
    }

    /// The `n`th candidate name for a data epoch on one shard of a cluster: a master
    /// restarted empty before its replica took over loses its shard's keys only, which
    /// the one [`Keys::epoch`] (on another shard) would not show.
    pub fn shard_epoch(&self, n: u32) -> String {
        format!("{}tmcp:epoch:{n}", self.prefix)
    }

    /// Session id from a liveness key found by SCAN.
    pub fn id_from_alive<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix("available:session:")
    }

    pub fn session_channel(&self, id: &str) -> String {
        format!("{}session:{id}", self.prefix)
    }

    pub fn delete_channel(&self, id: &str) -> String {
        format!("{}delete:session:{id}", self.prefix)
    }

    /// The channel of `RedisSubscriptionManager`: every change notification, as JSON.
    pub fn subscriptions_channel(&self) -> String {
        format!("{}tmcp:subscriptions", self.prefix)
    }

    pub fn broadcast_channel(&self) -> String {
        format!("{}tmcp:broadcast", self.prefix)
    }

    /// Classifies a channel name received from Redis.
    pub fn parse_channel<'a>(&self, channel: &'a str) -> Option<Channel<'a>> {
        let rest = channel.strip_prefix(self.prefix.as_str())?;
        if let Some(id) = rest.strip_prefix("session:") {
            Some(Channel::Session(id))
        } else if let Some(id) = rest.strip_prefix("delete:session:") {
            Some(Channel::Delete(id))
        } else if rest == "tmcp:broadcast" {
            Some(Channel::Broadcast)
        } else {
            None
        }
    }

    pub fn client_info(&self, id: &str) -> String {
        format!("{}tmcp:client_info:{id}", self.prefix)
    }

    pub fn client_capabilities(&self, id: &str) -> String {
        format!("{}tmcp:client_capabilities:{id}", self.prefix)
    }

    pub fn log_level(&self, id: &str) -> String {
        format!("{}tmcp:log_level:{id}", self.prefix)
    }

    /// Set of session ids subscribed to a resource `uri`.
    pub fn subscriptions(&self, uri: &str) -> String {
        format!("{}{}{uri}", self.prefix, SUBSCRIPTIONS)
    }

    /// Prefix of every subscription set, for the delete script and SCAN.
    pub fn subscriptions_prefix(&self) -> String {
        format!("{}{}", self.prefix, SUBSCRIPTIONS)
    }

    /// Our reverse index: set of the uris one session subscribed to, so that `delete`
    /// does not have to scan every subscription set. Its name does not match upstream's
    /// `tmcp:subscriptions:*` SCAN pattern.
    pub fn session_subscriptions(&self, id: &str) -> String {
        format!("{}tmcp:session_subscriptions:{id}", self.prefix)
    }
}

const SUBSCRIPTIONS: &str = "tmcp:subscriptions:";

/// Escapes the glob characters of a literal for a SCAN MATCH pattern, so a prefix such
/// as `app[1]:` matches only itself.
pub fn escape_glob(literal: &str) -> String {
    let mut escaped = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_match_upstream() {
        let k = Keys::default();
        assert_eq!(k.alive("a"), "available:session:a");
        assert_eq!(k.session_channel("a"), "session:a");
        assert_eq!(k.delete_channel("a"), "delete:session:a");
        assert_eq!(k.client_info("a"), "tmcp:client_info:a");
        assert_eq!(k.client_capabilities("a"), "tmcp:client_capabilities:a");
        assert_eq!(k.log_level("a"), "tmcp:log_level:a");
        assert_eq!(k.subscriptions_channel(), "tmcp:subscriptions");
        assert_eq!(k.subscriptions("file:///x"), "tmcp:subscriptions:file:///x");
    }

    #[test]
    fn reverse_index_is_outside_upstream_scan_pattern() {
        let k = Keys::default();
        assert!(!k
            .session_subscriptions("a")
            .starts_with(&k.subscriptions_prefix()));
    }

    #[test]
    fn prefix_applies_to_every_name() {
        let k = Keys::new("app1:");
        assert_eq!(k.alive("a"), "app1:available:session:a");
        assert_eq!(k.session_channel("a"), "app1:session:a");
        assert_eq!(k.broadcast_channel(), "app1:tmcp:broadcast");
        assert_eq!(k.subscriptions("u"), "app1:tmcp:subscriptions:u");
        assert_eq!(k.alive_pattern(), "app1:available:session:*");
    }

    #[test]
    fn scan_patterns_escape_glob_characters_of_the_prefix() {
        let k = Keys::new("a*[b]?\\:");
        assert_eq!(k.alive_pattern(), "a\\*\\[b\\]\\?\\\\:available:session:*");
        assert_eq!(
            k.subscriptions_pattern(),
            "a\\*\\[b\\]\\?\\\\:tmcp:subscriptions:*"
        );
    }

    #[test]
    fn channels_parse_back() {
        let k = Keys::new("p:");
        assert_eq!(
            k.parse_channel("p:session:x:y"),
            Some(Channel::Session("x:y"))
        );
        assert_eq!(
            k.parse_channel("p:delete:session:x"),
            Some(Channel::Delete("x"))
        );
        assert_eq!(
            k.parse_channel("p:tmcp:broadcast"),
            Some(Channel::Broadcast)
        );
        assert_eq!(k.parse_channel("session:x"), None);
        assert_eq!(k.parse_channel("p:other"), None);
        assert_eq!(k.id_from_alive("p:available:session:z"), Some("z"));
        assert_eq!(k.id_from_alive("available:session:z"), None);
    }
}
