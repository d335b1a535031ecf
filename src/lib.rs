#![deny(clippy::all)]
//! Native core of `@tmcp-rs/session-manager-redis`, a drop-in for
//! `@tmcp/session-manager-redis`.
//!
//! The JavaScript facade (`index.js`) keeps the public classes, input validation and
//! the stream controllers; this crate does all Redis work:
//!
//! * [`config`]: URL validation and options;
//! * [`keys`]: every key and channel name (upstream's by default);
//! * [`requests`]: the protocol of the command socket that JavaScript drives;
//! * [`commands`]: the calls, and the tokio side's own command connection;
//! * [`info_sessions`] / [`stream_sessions`]: what each manager call means in Redis,
//!   pub/sub receiving and the liveness timer;
//! * [`delivery`]: batched crossings back to JavaScript;
//! * [`error`]: error text (never with credentials).

// The pub/sub side allocates per message on the tokio thread. mimalloc raised 64-in-flight
// set+get by ~15 % when requests still ran there, and kept encoding faster than glibc in a
// micro-benchmark; the request path itself now reuses its buffers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commands;
mod config;
mod delivery;
mod error;
mod info_sessions;
mod keys;
mod requests;
mod stream_sessions;

use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{
    within_runtime_if_available, Buffer, BufferSlice, FromNapiValue, Function, TypeName,
    Uint32ArraySlice, ValidateNapiValue, ValueType,
};
use napi::{check_status, sys};
use napi_derive::napi;

use commands::Commands;
use config::{client_for, redact_url, NativeOptions};
use delivery::{CompletionArgs, CompletionBatch, Completions, Deliveries, DeliveryArgs, Words};
use error::{js_error, js_type_error};
use redis::ConnectionAddr;
use requests::{Args, RequestProtocol};
use stream_sessions::{Change, StreamSessions};

/// Change kind of `NativeStreams.apply` that creates a session.
const CREATE: u32 = 0;

/// Installs the TLS crypto provider once per process, before any connection.
#[napi_derive::module_init]
fn init() {
    // Module init runs again for every Worker that loads the addon; the process-wide
    // runtime and crypto provider are set up once.
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another addon already installed one: that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // One worker: the subscriber, its receive loop and the background tasks hand work
        // to each other on the same thread instead of waking another one (measured with
        // bench/ when requests still ran here).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_WORKERS)
            .thread_name("tmcp-redis")
            .enable_all()
            .build();
        if let Ok(runtime) = runtime {
            napi::bindgen_prelude::create_custom_tokio_runtime(runtime);
        }
    });
}

const RUNTIME_WORKERS: usize = 1;

/// Where JavaScript opens the command socket.
#[napi(object)]
#[derive(Clone)]
pub struct Endpoint {
    pub host: Option<String>,
    pub port: Option<u32>,
    /// Unix socket path.
    pub path: Option<String>,
    pub tls: bool,
    /// `false` only for `rediss://…#insecure` URLs.
    pub verify_host: bool,
}

impl Endpoint {
    fn of(info: &redis::ConnectionInfo) -> Result<Self, String> {
        let (host, port, path, tls, verify_host) = match info.addr() {
            ConnectionAddr::Tcp(host, port) => (Some(host), Some(*port), None, false, true),
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                ..
            } => (Some(host), Some(*port), None, true, !insecure),
            ConnectionAddr::Unix(path) => (None, None, Some(path), false, true),
            _ => return Err("Invalid Redis URL: unsupported address".into()),
        };
        Ok(Endpoint {
            host: host.cloned(),
            port: port.map(u32::from),
            path: path.map(|p| p.to_string_lossy().into_owned()),
            tls,
            verify_host,
        })
    }
}

/// A JavaScript array of strings, read only inside the call that received it.
pub struct JsArgs {
    env: sys::napi_env,
    array: sys::napi_value,
}

impl TypeName for JsArgs {
    fn type_name() -> &'static str {
        "Array<string>"
    }

    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ValidateNapiValue for JsArgs {}

impl FromNapiValue for JsArgs {
    unsafe fn from_napi_value(env: sys::napi_env, array: sys::napi_value) -> napi::Result<Self> {
        Ok(JsArgs { env, array })
    }
}

impl JsArgs {
    /// Appends every string to `args`, each read from V8 in one UTF-8 pass straight into
    /// the reused buffer (napi-rs's `String` measures the UTF-8 length first, a second
    /// pass over every 1 KB JSON value, then allocates).
    fn read_into(&self, args: &mut Args) -> napi::Result<()> {
        let env = self.env;
        unsafe {
            let mut len = 0u32;
            check_status!(sys::napi_get_array_length(env, self.array, &mut len))?;
            for i in 0..len {
                let mut item = std::ptr::null_mut();
                check_status!(sys::napi_get_element(env, self.array, i, &mut item))?;
                // Without a buffer this is the length in UTF-16 units, O(1); each unit
                // takes at most 3 UTF-8 bytes.
                let mut units = 0usize;
                check_status!(sys::napi_get_value_string_utf16(
                    env,
                    item,
                    std::ptr::null_mut(),
                    0,
                    &mut units
                ))?;
                // napi NUL-terminates: one byte more than the text.
                args.push_with(units * 3 + 1, |ptr, max| {
                    let mut written = 0usize;
                    check_status!(sys::napi_get_value_string_utf8(
                        env,
                        item,
                        ptr.cast(),
                        max,
                        &mut written
                    ))
                    .map(|()| written)
                })?;
            }
        }
        Ok(())
    }
}

/// One Redis endpoint for both managers: the protocol of the command socket that
/// JavaScript drives, and the tokio side (pub/sub, background work, scans).
#[napi]
pub struct NativeClient {
    protocol: RequestProtocol,
    commands: Arc<Commands>,
    /// Kept to open the stream manager's pub/sub connection with the same settings.
    client: redis::Client,
    endpoint: Endpoint,
    shown_url: String,
}

#[napi]
impl NativeClient {
    /// `on_complete(answers)` answers calls finished on the tokio side (stream creation,
    /// close, scans), in the format of `decode`.
    #[napi(
        constructor,
        ts_args_type = "url: string, options: NativeOptions, onComplete: (answers: unknown[]) => void"
    )]
    pub fn new(
        url: String,
        options: NativeOptions,
        on_complete: Function<'_, CompletionArgs, ()>,
    ) -> napi::Result<Self> {
        let client = client_for(&url, options.tls.as_ref()).map_err(js_type_error)?;
        let endpoint = Endpoint::of(client.get_connection_info()).map_err(js_type_error)?;
        let completions = Completions::new(&on_complete)?;
        let commands =
            within_runtime_if_available(|| Commands::start(client.clone(), options, completions))
                .map_err(js_error)?;
        Ok(NativeClient {
            protocol: RequestProtocol::new(client.get_connection_info(), commands.clone()),
            commands,
            client,
            endpoint,
            shown_url: redact_url(&url),
        })
    }

    /// Where to connect the command socket.
    #[napi]
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// The socket broke: forgets what was in flight and returns those call ids (they
    /// will never be answered).
    #[napi(ts_return_type = "Uint32Array")]
    pub fn abandon(&mut self) -> Words {
        Words(self.protocol.abandon())
    }

    /// A new socket is connected: the handshake to write first (call id 0 answers it),
    /// or null when none is needed.
    #[napi]
    pub fn handshake(&mut self) -> Option<Buffer> {
        self.protocol.handshake().map(Buffer::from)
    }

    /// Encodes calls as one pipeline: `calls` holds `[id, code, argCount]` triples whose
    /// arguments follow one another in `args`. Writes the bytes into `scratch` when they
    /// fit and returns their length either way (if it exceeds `scratch`, call
    /// `copyEncoded` with a larger buffer). Malformed calls are answered through the
    /// completion callback.
    #[napi(ts_args_type = "calls: Uint32Array, args: string[], scratch: Buffer")]
    pub fn encode(
        &mut self,
        calls: Uint32ArraySlice<'_>,
        args: JsArgs,
        mut scratch: BufferSlice<'_>,
    ) -> napi::Result<u32> {
        args.read_into(&mut self.protocol.args)?;
        let bytes = self.protocol.encode(&calls);
        if bytes.len() <= scratch.len() {
            scratch[..bytes.len()].copy_from_slice(bytes);
        }
        Ok(bytes.len() as u32)
    }

    /// Copies the last encoded batch into `scratch` (large enough, see `encode`).
    #[napi]
    pub fn copy_encoded(&self, mut scratch: BufferSlice<'_>) -> u32 {
        let bytes = self.protocol.encoded();
        let n = bytes.len().min(scratch.len());
        scratch[..n].copy_from_slice(&bytes[..n]);
        n as u32
    }

    /// Feeds bytes read from the socket; returns the answers of the calls they complete,
    /// `[id, reply, …]` with a failed call's id offset by 2^32 (see [`CompletionBatch`]).
    /// Throws if Redis breaks the protocol (drop the socket then).
    #[napi(ts_return_type = "unknown[]")]
    pub fn decode(&mut self, chunk: &[u8]) -> napi::Result<CompletionBatch> {
        let mut answers = CompletionBatch::default();
        self.protocol
            .decode(chunk, &mut answers)
            .map_err(js_error)?;
        Ok(answers)
    }

    /// Whether every written call has been answered.
    #[napi(getter)]
    pub fn idle(&self) -> bool {
        self.protocol.is_idle()
    }

    /// The URL with its password masked.
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.shown_url.clone()
    }
}

/// The pub/sub side of a stream manager, built on a [`NativeClient`].
#[napi]
pub struct NativeStreams {
    sessions: Mutex<Option<StreamSessions>>,
}

#[napi]
impl NativeStreams {
    /// `on_deliver(bytes, entries)` receives batched messages, closes and problems.
    #[napi(
        constructor,
        ts_args_type = "client: NativeClient, onDeliver: (bytes: Buffer, entries: Uint32Array) => void"
    )]
    pub fn new(
        client: &NativeClient,
        on_deliver: Function<'_, DeliveryArgs, ()>,
    ) -> napi::Result<Self> {
        let redis_client = client.client.clone();
        let deliveries = Deliveries::new(&on_deliver)?;
        let commands = client.commands.clone();
        let sessions = within_runtime_if_available(|| {
            StreamSessions::start(redis_client, commands, deliveries)
        })
        .map_err(js_error)?;
        Ok(NativeStreams {
            sessions: Mutex::new(Some(sessions)),
        })
    }

    /// Applies the session changes of one tick, in order: `changes` holds
    /// `[kind, call or forget, token]` triples (kind 0 creates: start receiving for the id
    /// into controller `token` and answer `call` when the subscription is live; kind 1
    /// drops: stop receiving if `token` still owns the id, `forget` also drops its liveness
    /// key), and `ids` their session ids.
    #[napi]
    pub fn apply(&self, changes: Uint32ArraySlice<'_>, ids: Vec<String>) -> napi::Result<()> {
        let guard = self.sessions.lock().unwrap();
        let sessions = guard
            .as_ref()
            .ok_or_else(|| js_error("the session manager is closed"))?;
        let changes = changes
            .chunks_exact(3)
            .zip(ids)
            .map(|(c, id)| match c[0] {
                CREATE => Change::Create {
                    call: c[1],
                    id,
                    token: c[2],
                },
                _ => Change::Drop {
                    id,
                    token: c[2],
                    forget: c[1] != 0,
                },
            })
            .collect();
        within_runtime_if_available(|| sessions.apply(changes));
        Ok(())
    }

    /// Ends every local session and the background tasks; answers `call` when done.
    #[napi]
    pub fn close(&self, call: u32) -> bool {
        match self.sessions.lock().unwrap().take() {
            Some(mut sessions) => {
                within_runtime_if_available(|| sessions.close(call));
                true
            }
            None => false,
        }
    }
}
