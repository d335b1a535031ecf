//! Redis URLs and node lists: what a URL or a `host:port` entry says, checked.
//!
//! It owns the schemes accepted, the one parser of node lists (`sentinel.nodes`,
//! `cluster.nodes`) into plain data, the sentinels' access (credentials, TLS), the check
//! of PEM material, the RESP3 [`Client`] a URL describes (never connected here) and the
//! masking of passwords in URLs. It must not open connections (`crate::connection`
//! does), and no error or display text may repeat a URL or an entry, which may hold a
//! password.

use redis::{
    Client, ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, ProtocolVersion, TlsCertificates,
};

use super::{NativeSentinel, NativeTls};

const SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "valkey",
    "valkeys",
    "unix",
    "redis+unix",
    "valkey+unix",
];

/// One entry of a node list (`sentinel.nodes`, `cluster.nodes`), which the JavaScript
/// side hands over as `host:port` (objects `{ host, port }` made into it) or as a URL.
pub(crate) struct Node {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// A URL's scheme: `rediss://` asks for TLS; None for `host:port`.
    pub(crate) secure: Option<bool>,
    /// A URL's user and password, when it has either.
    pub(crate) credentials: Option<(Option<String>, Option<String>)>,
    /// A URL without a port (redis-rs then takes 6379).
    port_omitted: bool,
    /// A URL's database.
    pub(crate) db: i64,
}

/// The one parser of node lists. `tls` is the material a URL must be able to take (the
/// cluster's, whose nodes share the seed's TLS settings). Errors name `option`, never the
/// entry, which may hold a password.
pub(crate) fn parse_node(
    option: &str,
    entry: &str,
    tls: Option<&NativeTls>,
) -> Result<Node, String> {
    if !entry.contains("://") {
        let (host, port) = host_port(entry).ok_or_else(|| {
            format!("Option \"{option}\" must hold \"host:port\" strings, Redis URLs or {{ host, port }} objects")
        })?;
        return Ok(Node {
            host,
            port,
            secure: None,
            credentials: None,
            port_omitted: false,
            db: 0,
        });
    }
    let client = client_for(entry, tls).map_err(|e| format!("Option \"{option}\": {e}"))?;
    let info = client.get_connection_info();
    let (host, port, secure) = match info.addr() {
        ConnectionAddr::Tcp(host, port) => (host.clone(), *port, false),
        ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port, true),
        _ => {
            return Err(format!(
                "Option \"{option}\" must hold TCP addresses (redis:// or rediss:// URLs), not Unix sockets"
            ))
        }
    };
    let redis = info.redis_settings();
    let (username, password) = (redis.username(), redis.password());
    Ok(Node {
        host,
        port,
        secure: Some(secure),
        credentials: (username.is_some() || password.is_some())
            .then(|| (username.map(str::to_string), password.map(str::to_string))),
        port_omitted: url::Url::parse(entry).is_ok_and(|u| u.port().is_none()),
        db: redis.db(),
    })
}

/// How one sentinel is reached: its credentials and whether over TLS. (No `Debug`: it
/// holds a password.)
#[derive(Clone, PartialEq)]
pub(crate) struct SentinelAccess {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) secure: bool,
}

pub(crate) struct SentinelNode {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) access: SentinelAccess,
}

impl SentinelNode {
    pub(crate) fn addr(&self) -> ConnectionAddr {
        if self.access.secure {
            ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(self.host.clone(), self.port)
        }
    }
}

/// `sentinel.nodes`, each with its access: a URL's credentials and scheme for that
/// sentinel alone, else `sentinel.username`, `sentinel.password` and `sentinel.tls`.
pub(crate) fn sentinel_nodes(sentinel: &NativeSentinel) -> Result<Vec<SentinelNode>, String> {
    const OPTION: &str = "sentinel.nodes";
    sentinel
        .nodes
        .iter()
        .map(|entry| {
            let node = parse_node(OPTION, entry, None)?;
            if node.port_omitted {
                return Err(format!(
                    "Option \"{OPTION}\": a sentinel's URL must name its port (sentinels usually listen on 26379)"
                ));
            }
            if node.db != 0 {
                return Err(format!(
                    "Option \"{OPTION}\": a sentinel has no database: remove it from the URL"
                ));
            }
            let secure = match node.secure {
                None => sentinel.tls,
                Some(false) if sentinel.tls => {
                    return Err(format!(
                        "Option \"{OPTION}\" has a redis:// URL, but \"sentinel.tls\" is true: use rediss:// (or \"host:port\") for a sentinel reached over TLS"
                    ))
                }
                Some(secure) => secure,
            };
            let (username, password) = node
                .credentials
                .unwrap_or_else(|| (sentinel.username.clone(), sentinel.password.clone()));
            Ok(SentinelNode {
                host: node.host,
                port: node.port,
                access: SentinelAccess {
                    username,
                    password,
                    secure,
                },
            })
        })
        .collect()
}

/// Whether the URL asks for TLS (`rediss://`, `valkeys://`); a URL that does not parse
/// is not, and `client_for` reports it.
pub(crate) fn secure_scheme(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "rediss" | "valkeys"))
}

/// `host:port` (IPv6 hosts in brackets).
fn host_port(node: &str) -> Option<(String, u16)> {
    let (host, port) = node.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse::<u16>().ok()?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// The PEM material of `tls` as redis-rs takes it.
pub(crate) fn certificates(tls: &NativeTls) -> TlsCertificates {
    TlsCertificates {
        client_tls: match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: cert.as_bytes().to_vec(),
                client_key: key.as_bytes().to_vec(),
            }),
            _ => None,
        },
        root_cert: tls.ca.as_ref().map(|ca| ca.as_bytes().to_vec()),
    }
}

/// Validates a Redis URL and builds a RESP3 client for it.
///
/// Errors name the problem but never repeat the URL, which may hold a password.
pub fn client_for(url: &str, tls: Option<&NativeTls>) -> Result<Client, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("Invalid Redis URL: {e}"))?;
    let scheme = parsed.scheme();
    if !SCHEMES.contains(&scheme) {
        return Err(format!(
            "Invalid Redis URL: unsupported scheme \"{scheme}:\" (expected redis://, rediss://, unix:// or redis+unix://)"
        ));
    }
    let secure = matches!(scheme, "rediss" | "valkeys");
    if let Some(tls) = tls {
        if !secure {
            return Err("TLS options need a rediss:// URL".into());
        }
        check_tls(tls)?;
    }
    if parsed.fragment().is_some() {
        // redis-rs reads `#insecure` as "skip certificate checks": never silently.
        return Err(
            "Invalid Redis URL: a #fragment is not allowed (certificate verification cannot be turned off)"
                .into(),
        );
    }
    if !scheme.contains("unix") && parsed.host_str().is_none_or(str::is_empty) {
        return Err("Invalid Redis URL: missing host".into());
    }
    let info = url.into_connection_info().map_err(|e| {
        format!(
            "Invalid Redis URL: {}",
            e.detail().unwrap_or("cannot parse")
        )
    })?;
    // RESP3 lets one connection carry pub/sub pushes and lets redis-rs resubscribe
    // after a reconnect (needs Redis >= 6).
    // Skipping CLIENT SETINFO keeps the minimal ACL rule free of CLIENT permissions.
    let redis = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3)
        .set_skip_set_lib_name();
    // Nagle's algorithm is on by default in redis 1.x: it delays small pipelined writes.
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    let info = info.set_redis_settings(redis).set_tcp_settings(tcp);
    let built = match tls {
        Some(tls) if secure => Client::build_with_tls(info, certificates(tls)),
        _ => Client::open(info),
    };
    built.map_err(|e| format!("Invalid Redis connection settings: {e}"))
}

/// Catches PEM mix-ups early: redis-rs would silently ignore text without certificates.
pub(crate) fn check_tls(tls: &NativeTls) -> Result<(), String> {
    let is_cert = |pem: &str| pem.contains("-----BEGIN CERTIFICATE-----");
    if tls.ca.as_deref().is_some_and(|ca| !is_cert(ca)) {
        return Err(
            "Option tls.ca must hold PEM certificate(s) (-----BEGIN CERTIFICATE-----)".into(),
        );
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            if !is_cert(cert) {
                return Err("Option tls.cert must be a PEM certificate".into());
            }
            if !(key.contains("-----BEGIN") && key.contains("PRIVATE KEY-----")) {
                return Err("Option tls.key must be a PEM private key".into());
            }
            Ok(())
        }
        (None, None) => Ok(()),
        _ => Err("Options tls.cert and tls.key go together (mutual TLS)".into()),
    }
}

/// Query parameters that carry a password (redis-rs reads `pass` for unix sockets).
const SECRET_PARAMS: &[&str] = &["pass", "password"];

/// The URL with any password replaced (user-info or query), for `util.inspect`.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<invalid url>".to_string();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed
        .query_pairs()
        .any(|(k, _)| SECRET_PARAMS.contains(&k.as_ref()))
    {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if SECRET_PARAMS.contains(&k.as_ref()) {
                    "***".to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.set_fragment(None);
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::super::tests::sentinel;
    use super::*;

    #[test]
    fn accepts_common_urls() {
        assert!(client_for("redis://127.0.0.1:6380", None).is_ok());
        assert!(client_for("redis://user:pw@localhost:6380/3", None).is_ok());
        assert!(client_for("redis+unix:///tmp/redis.sock", None).is_ok());
        assert!(client_for("unix:///tmp/redis.sock?db=2", None).is_ok());
        assert!(client_for("rediss://localhost:6380", None).is_ok());
    }

    #[test]
    fn rejects_bad_urls_without_echoing_them() {
        for bad in [
            "http://h:1",
            "not a url",
            "redis://",
            "mysql://u:secret@h/db",
        ] {
            let err = client_for(bad, None).unwrap_err();
            assert!(err.starts_with("Invalid Redis URL"), "{bad}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn uses_resp3() {
        let client = client_for("redis://127.0.0.1:6380", None).unwrap();
        let proto = client.get_connection_info().redis_settings().protocol();
        assert_eq!(proto, ProtocolVersion::RESP3);
    }

    #[test]
    fn tls_material_needs_rediss_and_valid_pem() {
        let tls = NativeTls {
            ca: Some("not a certificate".into()),
            ..Default::default()
        };
        assert_eq!(
            client_for("redis://h:1", Some(&tls)).unwrap_err(),
            "TLS options need a rediss:// URL"
        );
        assert!(client_for("rediss://h:1", Some(&tls))
            .unwrap_err()
            .contains("tls.ca"));
        let half = NativeTls {
            cert: Some("-----BEGIN CERTIFICATE-----".into()),
            ..Default::default()
        };
        assert!(client_for("rediss://h:1", Some(&half))
            .unwrap_err()
            .contains("go together"));
        assert!(!format!("{tls:?}").contains("not a certificate"));
    }

    #[test]
    fn redacts_password() {
        let shown = redact_url("redis://user:hunter2@h:6380/1");
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("user:***@h:6380"));
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        let unix = redact_url("redis+unix:///tmp/x.sock?db=1&pass=hunter2");
        assert!(!unix.contains("hunter2"), "{unix}");
        assert!(unix.contains("db=1"), "{unix}");
    }

    #[test]
    fn refuses_to_skip_certificate_checks() {
        let err = client_for("rediss://h:6380/#insecure", None).unwrap_err();
        assert!(err.contains("certificate verification"), "{err}");
    }

    #[test]
    fn sentinel_nodes_take_a_urls_credentials_and_scheme_for_that_sentinel_alone() {
        let nodes = sentinel_nodes(&sentinel(
            &[
                "h1:26379",
                "redis://own:own-pw@h2:26380",
                "rediss://:pw3@h3:26381",
            ],
            false,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let access: Vec<_> = nodes
            .iter()
            .map(|n| {
                (
                    n.host.as_str(),
                    n.port,
                    n.access.username.as_deref(),
                    n.access.password.as_deref(),
                    n.access.secure,
                )
            })
            .collect();
        assert_eq!(
            access,
            [
                ("h1", 26379, Some("shared"), Some("shared-pw"), false),
                ("h2", 26380, Some("own"), Some("own-pw"), false),
                ("h3", 26381, None, Some("pw3"), true),
            ]
        );
        assert!(
            sentinel_nodes(&sentinel(&["h1:1"], true)).unwrap()[0]
                .access
                .secure
        );
    }

    #[test]
    fn bad_sentinel_urls_are_refused_without_their_password() {
        for (node, tls, expected) in [
            ("redis://u:hunter2@h", false, "must name its port"),
            ("redis://u:hunter2@h:1/2", false, "no database"),
            ("redis://u:hunter2@h:1", true, "use rediss://"),
            ("redis+unix:///tmp/hunter2.sock", false, "not Unix sockets"),
            (
                "rediss://u:hunter2@h:1/#insecure",
                false,
                "certificate verification",
            ),
            ("hunter2", false, "must hold"),
        ] {
            let err = sentinel_nodes(&sentinel(&[node], tls))
                .err()
                .unwrap_or_else(|| panic!("{node} was accepted"));
            assert!(
                err.contains("sentinel.nodes") && err.contains(expected),
                "{node}: {err}"
            );
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn turns_nagle_off() {
        let client = client_for("redis://127.0.0.1:6380", None).unwrap();
        let shown = format!("{:?}", client.get_connection_info().tcp_settings());
        assert!(shown.contains("nodelay: true"), "{shown}");
    }
}
