//! Connection and behaviour settings: URL validation and the options object.
//!
//! It describes and validates: the options object, URLs, node lists parsed into plain
//! data. It must not build connections or their sources: `crate::connection` does, from
//! what this module parses.
//!
//! This module owns the options as JavaScript hands them over ([`NativeOptions`] and
//! the `tls`, `sentinel` and `cluster` objects in it), the durations derived from them,
//! and their `Debug` text, which must never show a password or key material. Beside it:
//! * `urls`: Redis URLs and node lists (checking a URL and building the `redis::Client`
//!   it describes, parsing `host:port` and URL entries, checking TLS material, masking
//!   passwords for display).

mod urls;

use std::time::Duration;

use napi_derive::napi;

pub(crate) use urls::{
    certificates, check_tls, parse_node, secure_scheme, sentinel_nodes, SentinelAccess,
    SentinelNode,
};
pub use urls::{client_for, redact_url};

/// PEM material for `rediss://` connections.
#[napi(object)]
#[derive(Clone, Default)]
pub struct NativeTls {
    /// CA certificate(s) to trust instead of the system's roots.
    pub ca: Option<String>,
    /// Client certificate for mutual TLS (with `key`).
    pub cert: Option<String>,
    /// Client private key for mutual TLS (with `cert`).
    pub key: Option<String>,
}

impl std::fmt::Debug for NativeTls {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeTls")
            .field("ca", &self.ca.is_some())
            .field("cert", &self.cert.is_some())
            .field("key", &self.key.is_some())
            .finish()
    }
}

/// Options the JavaScript facade has already validated and filled with defaults.
#[napi(object)]
#[derive(Clone, Debug)]
pub struct NativeOptions {
    /// Prefix for every key and channel name; empty keeps upstream's names.
    pub key_prefix: String,
    /// TTL of `available:session:{id}`; refreshed every third of it.
    pub session_ttl_seconds: u32,
    /// Longest time a call waits for Redis before it rejects.
    pub command_timeout_ms: u32,
    /// Longest time one connection attempt may take.
    pub connect_timeout_ms: u32,
    /// Broadcast and info delete SCAN like upstream, to reach sessions and
    /// subscriptions that upstream processes created.
    pub upstream_compatible: bool,
    /// TLS material for `rediss://`; without it the system's roots verify the server.
    pub tls: Option<NativeTls>,
    /// Find the master through these sentinels; the URL's host is the master group name.
    pub sentinel: Option<NativeSentinel>,
    pub cluster: Option<NativeCluster>,
}

/// `cluster` option: seed nodes besides the URL's (URLs or `host:port`).
#[napi(object)]
#[derive(Clone)]
pub struct NativeCluster {
    pub nodes: Vec<String>,
}

impl std::fmt::Debug for NativeCluster {
    // Never print a node URL's password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeCluster")
            .field("nodes", &redacted_nodes(&self.nodes))
            .finish()
    }
}

/// A node list for `Debug`: URLs with their passwords masked.
fn redacted_nodes(nodes: &[String]) -> Vec<String> {
    nodes
        .iter()
        .map(|node| {
            if node.contains("://") {
                redact_url(node)
            } else {
                node.clone()
            }
        })
        .collect()
}

/// Sentinels to ask for the master (the URL's host names the master group).
#[napi(object)]
#[derive(Clone)]
pub struct NativeSentinel {
    /// Each sentinel: `host:port`, or a URL whose credentials and scheme are that
    /// sentinel's alone.
    pub nodes: Vec<String>,
    /// ACL user on the sentinels, when they require one.
    pub username: Option<String>,
    /// Password on the sentinels, when they require one.
    pub password: Option<String>,
    /// Reach the sentinels over TLS, verified with the `tls` option's material.
    pub tls: bool,
}

impl std::fmt::Debug for NativeSentinel {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeSentinel")
            .field("nodes", &redacted_nodes(&self.nodes))
            .field("username", &self.username)
            .field("password", &self.password.is_some())
            .field("tls", &self.tls)
            .finish()
    }
}

impl NativeOptions {
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.command_timeout_ms.max(1)))
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.connect_timeout_ms.max(1)))
    }

    /// How often the liveness keys of local sessions are refreshed: a third of the
    /// TTL, so two refreshes can fail before a live session looks dead.
    pub fn refresh_every(&self) -> Duration {
        Duration::from_millis(u64::from(self.session_ttl_seconds.max(1)) * 1000 / 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `sentinel` option with shared credentials (the `urls` tests use it too).
    pub(super) fn sentinel(nodes: &[&str], tls: bool) -> NativeSentinel {
        NativeSentinel {
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            username: Some("shared".into()),
            password: Some("shared-pw".into()),
            tls,
        }
    }

    #[test]
    fn node_lists_never_debug_print_a_password() {
        let shown = format!(
            "{:?} {:?}",
            sentinel(&["redis://u:hunter2@h:1"], false),
            NativeCluster {
                nodes: vec!["redis://u:hunter2@h:2".into()]
            }
        );
        assert!(
            !shown.contains("hunter2") && !shown.contains("shared-pw"),
            "{shown}"
        );
        assert!(shown.contains("h:1") && shown.contains("h:2"), "{shown}");
    }
}
