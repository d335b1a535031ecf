//! A Sentinel group's master: [`SentinelSource`] resolves it through the sentinels,
//! asks again when a connection to it fails, listens for `+switch-master`, and has
//! every [`Connection`] built on it follow a new master; [`sentinel_source`] builds the
//! source the `sentinel` option describes.
//!
//! It must not validate options (`crate::config` parses the sentinel list) nor send
//! commands to the master: the connections do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, ConnectionAddr, IntoConnectionInfo, ProtocolVersion, PushKind, RedisResult, TlsMode,
};
use tokio::sync::mpsc;

use super::{describe, jittered, Connection, Source};
use crate::config::{certificates, NativeOptions, SentinelAccess, SentinelNode};

/// The master of a Sentinel group, resolved through the sentinels and re-resolved when a
/// connection to it fails.
pub struct SentinelSource {
    /// A client per way of reaching sentinels (credentials, TLS): redis-rs's gives all
    /// the sentinels of one client the same.
    sentinel: tokio::sync::Mutex<Vec<SentinelClient>>,
    /// The master group's name, and a client per sentinel, to hear `+switch-master`.
    name: String,
    sentinels: Vec<Client>,
    /// The task listening for `+switch-master`, started with the first connection.
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The master as last resolved, and a number bumped each time it moved.
    pub(super) master: Mutex<Option<(Client, u64)>>,
    /// A re-resolution is running (one at a time).
    resolving: AtomicBool,
    /// Connections built on this source, rebuilt when the master moves.
    pub(super) followers: Mutex<Vec<Weak<Connection>>>,
}

impl SentinelSource {
    pub fn new(sentinel: Vec<SentinelClient>, name: String, sentinels: Vec<Client>) -> Arc<Self> {
        Arc::new(SentinelSource {
            sentinel: tokio::sync::Mutex::new(sentinel),
            name,
            sentinels,
            watcher: Mutex::new(None),
            master: Mutex::new(None),
            resolving: AtomicBool::new(false),
            followers: Mutex::new(Vec::new()),
        })
    }

    /// The master: the one already resolved (without waiting), else asks the sentinels.
    pub(super) async fn master(&self) -> RedisResult<(Client, u64)> {
        if let Some(master) = self.master.lock().unwrap().clone() {
            return Ok(master);
        }
        self.resolve().await
    }

    /// Asks the sentinels for the master (each client at once, the first answer wins);
    /// bumps the number when it moved.
    async fn resolve(&self) -> RedisResult<(Client, u64)> {
        let mut clients = self.sentinel.lock().await;
        let lookups = clients
            .iter_mut()
            .map(|client| Box::pin(client.async_get_client()));
        let (client, _) = futures_util::future::select_ok(lookups).await?;
        let mut master = self.master.lock().unwrap();
        match &*master {
            Some((known, number))
                if known.get_connection_info().addr() == client.get_connection_info().addr() =>
            {
                Ok((known.clone(), *number))
            }
            known => {
                let number = known.as_ref().map_or(1, |(_, n)| n + 1);
                *master = Some((client.clone(), number));
                Ok((client, number))
            }
        }
    }

    /// Whether a connection still uses this source.
    fn has_followers(&self) -> bool {
        let mut list = self.followers.lock().unwrap();
        list.retain(|follower| follower.strong_count() > 0);
        !list.is_empty()
    }

    /// The connections still using this source.
    fn followers(&self) -> Vec<Arc<Connection>> {
        let mut list = self.followers.lock().unwrap();
        list.retain(|c| c.strong_count() > 0);
        list.iter().filter_map(Weak::upgrade).collect()
    }

    /// Starts listening for `+switch-master` (once). Must run inside tokio.
    pub(super) fn watch(self: &Arc<Self>) {
        let mut watcher = self.watcher.lock().unwrap();
        if watcher.is_none() {
            *watcher = Some(tokio::spawn(watch_switches(
                Arc::downgrade(self),
                self.name.clone(),
                self.sentinels.clone(),
            )));
        }
    }

    /// A connection to the master failed: ask the sentinels again (once at a time), and
    /// if the master moved, rebuild every connection of this source.
    pub(super) fn suspect(self: &Arc<Self>) {
        if self.resolving.swap(true, Ordering::AcqRel) {
            return;
        }
        let source = self.clone();
        tokio::spawn(async move {
            let before = source.master.lock().unwrap().as_ref().map(|(_, n)| *n);
            let after = source.resolve().await.ok().map(|(_, n)| n);
            source.resolving.store(false, Ordering::Release);
            if after.is_some() && after != before {
                for connection in source.followers() {
                    // Rebuilds it now; a pub/sub one is then told to resubscribe.
                    let _ = connection.get().await;
                }
            }
        });
    }
}

impl Drop for SentinelSource {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.lock().unwrap().take() {
            watcher.abort();
        }
    }
}

/// How long the `+switch-master` listener waits quietly before it checks its sentinel
/// (and whether anyone still uses the source).
const WATCH_CHECK: Duration = Duration::from_secs(15);

/// Listens on one sentinel at a time for `+switch-master` of our group: a failover is
/// then followed at once, even by connections that are idle or still connected to the
/// old master (a partition), instead of at their next failed call.
async fn watch_switches(source: Weak<SentinelSource>, name: String, sentinels: Vec<Client>) {
    let mut pause = Duration::from_millis(100);
    let prefix = format!("{name} ");
    loop {
        for sentinel in &sentinels {
            let (tx, mut pushes) = mpsc::unbounded_channel();
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_push_sender(tx);
            let Ok(mut connection) = sentinel
                .get_multiplexed_async_connection_with_config(&config)
                .await
            else {
                continue;
            };
            if connection.subscribe("+switch-master").await.is_err() {
                continue;
            }
            pause = Duration::from_millis(100);
            // A switch while no sentinel was listened to would go unheard: ask once now.
            match source.upgrade() {
                Some(source) => source.suspect(),
                None => return,
            }
            loop {
                let push = match tokio::time::timeout(WATCH_CHECK, pushes.recv()).await {
                    Ok(Some(push)) => push,
                    Ok(None) => break,
                    Err(_) => {
                        // Quiet: end with the last connection of the source, and move on
                        // to the next sentinel if this one stopped answering.
                        match source.upgrade() {
                            Some(source) if source.has_followers() => {}
                            _ => return,
                        }
                        let ping = redis::cmd("PING");
                        let answered = tokio::time::timeout(
                            Duration::from_secs(2),
                            ping.query_async::<()>(&mut connection),
                        )
                        .await;
                        if !matches!(answered, Ok(Ok(()))) {
                            break;
                        }
                        continue;
                    }
                };
                match push.kind {
                    PushKind::Message => {
                        let ours = matches!(
                            push.data.get(1),
                            Some(redis::Value::BulkString(text)) if text.starts_with(prefix.as_bytes())
                        );
                        match source.upgrade() {
                            Some(source) if ours => source.suspect(),
                            Some(_) => {}
                            None => return,
                        }
                    }
                    PushKind::Disconnection => break,
                    _ => {}
                }
            }
        }
        if source.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(jittered(pause)).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// The master of the group the URL's host names, found through the sentinels.
///
/// redis-rs's `SentinelClientBuilder` gives every sentinel of one client the same
/// credentials and TLS setting (and `SentinelClient::build`, which takes them per
/// sentinel, cannot take the data nodes' TLS material): sentinels reached alike share a
/// client, and the source asks each such client.
pub(super) fn sentinel_source(
    client: &Client,
    sentinels: Vec<SentinelNode>,
    options: &NativeOptions,
) -> Result<Source, String> {
    let info = client.get_connection_info();
    let (master, secure) =
        match info.addr() {
            ConnectionAddr::Tcp(host, _) => (host.clone(), false),
            ConnectionAddr::TcpTls { host, .. } => (host.clone(), true),
            _ => return Err(
                "With sentinel, the URL's host is the master group name: use redis:// or rediss://"
                    .into(),
            ),
        };
    let mut groups: Vec<(SentinelAccess, Vec<ConnectionAddr>)> = Vec::new();
    for node in &sentinels {
        match groups.iter_mut().find(|(access, _)| *access == node.access) {
            Some((_, addrs)) => addrs.push(node.addr()),
            None => groups.push((node.access.clone(), vec![node.addr()])),
        }
    }
    let redis = info.redis_settings();
    let clients = groups
        .into_iter()
        .map(|(access, addrs)| {
            let mut builder =
                SentinelClientBuilder::new(addrs, master.clone(), SentinelServerType::Master)?
                    .set_client_to_redis_db(redis.db())
                    .set_client_to_redis_protocol(ProtocolVersion::RESP3)
                    .set_client_to_redis_tcp_settings(info.tcp_settings().clone())
                    .set_client_to_sentinel_tcp_settings(info.tcp_settings().clone());
            if let Some(username) = redis.username() {
                builder = builder.set_client_to_redis_username(username);
            }
            if let Some(password) = redis.password() {
                builder = builder.set_client_to_redis_password(password);
            }
            if let Some(username) = &access.username {
                builder = builder.set_client_to_sentinel_username(username);
            }
            if let Some(password) = &access.password {
                builder = builder.set_client_to_sentinel_password(password);
            }
            if secure {
                builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
                if let Some(tls) = &options.tls {
                    builder = builder.set_client_to_redis_certificates(certificates(tls));
                }
            }
            if access.secure {
                builder = builder.set_client_to_sentinel_tls_mode(TlsMode::Secure);
                if let Some(tls) = &options.tls {
                    builder = builder.set_client_to_sentinel_certificates(certificates(tls));
                }
            }
            builder.build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("Invalid sentinel settings: {}", describe(&e)))?;
    // Clients for the sentinels themselves, to hear `+switch-master`.
    let watchers = sentinels
        .iter()
        .map(|node| {
            let mut redis =
                redis::RedisConnectionInfo::default().set_protocol(ProtocolVersion::RESP3);
            if let Some(username) = &node.access.username {
                redis = redis.set_username(username);
            }
            if let Some(password) = &node.access.password {
                redis = redis.set_password(password);
            }
            let info = node.addr().into_connection_info().map(|i| {
                i.set_redis_settings(redis)
                    .set_tcp_settings(info.tcp_settings().clone())
            })?;
            match options.tls.as_ref().filter(|_| node.access.secure) {
                Some(tls) => Client::build_with_tls(info, certificates(tls)),
                None => Client::open(info),
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("Invalid sentinel settings: {}", describe(&e)))?;
    Ok(Source::Sentinel(SentinelSource::new(
        clients, master, watchers,
    )))
}
