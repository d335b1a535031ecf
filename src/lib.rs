#![deny(clippy::all)]
//! Native core of `@tmcp-rs/session-manager-redis`, a drop-in for
//! `@tmcp/session-manager-redis`.
//!
//! The JavaScript side (`lib/`) keeps the public classes, input validation, the stream
//! controllers and both sockets; this crate does the Redis protocol work:
//!
//! * [`config`]: URL validation and options;
//! * [`keys`]: every key and channel name (upstream's by default);
//! * [`requests`]: the protocol of the command socket that JavaScript drives;
//! * [`commands`]: the calls, and the tokio side's connection for SCAN follow-ups;
//! * [`info_sessions`] / [`stream_sessions`]: what each manager call means in Redis;
//!   the local sessions and the protocol of the pub/sub socket JavaScript drives;
//! * [`delivery`]: call answers for JavaScript;
//! * [`error`]: error text (never with credentials).

// mimalloc kept encoding faster than glibc's allocator in a micro-benchmark, and raised
// 64-in-flight set+get by ~15 % when requests still ran on tokio.
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

use std::sync::Arc;

use napi::bindgen_prelude::{
    within_runtime_if_available, Buffer, BufferSlice, FromNapiValue, Function, TypeName,
    Uint32ArraySlice, ValidateNapiValue, ValueType,
};
use napi::{check_status, sys};
use napi_derive::napi;

use commands::Commands;
use config::{client_for, redact_url, NativeOptions};
use delivery::{CompletionArgs, CompletionBatch, Completions};
use error::{js_error, js_type_error};
use redis::ConnectionAddr;
use requests::{Args, RequestProtocol};
use stream_sessions::StreamSessions;

/// Installs the TLS crypto provider once per process, before any connection.
#[napi_derive::module_init]
fn init() {
    // Module init runs again for every Worker that loads the addon; the process-wide
    // runtime and crypto provider are set up once.
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another addon already installed one: that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // One worker: it only runs the SCAN follow-ups of upstream-compatible mode; both
        // sockets are Node's.
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
/// JavaScript drives, and the tokio side (SCAN follow-ups).
#[napi]
pub struct NativeClient {
    protocol: RequestProtocol,
    commands: Arc<Commands>,
    /// Kept for the stream manager's pub/sub handshake (same credentials).
    client: redis::Client,
    endpoint: Endpoint,
    shown_url: String,
}

#[napi]
impl NativeClient {
    /// `on_complete(answers)` answers calls finished on the tokio side (the SCAN
    /// follow-ups of upstream-compatible mode, and calls refused while encoding), in the
    /// format of `decode`.
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
    #[napi]
    pub fn abandon(&mut self) -> Vec<u32> {
        self.protocol.abandon()
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
        Ok(into_scratch(self.protocol.encode(&calls), &mut scratch))
    }

    /// Copies the last encoded batch into `scratch` (large enough, see `encode`).
    #[napi]
    pub fn copy_encoded(&self, mut scratch: BufferSlice<'_>) -> u32 {
        into_scratch(self.protocol.encoded(), &mut scratch)
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

/// Copies `bytes` into `scratch` when they fit; returns their length either way (if it
/// exceeds `scratch`, call the object's `copyWritten` with a larger buffer).
fn into_scratch(bytes: &[u8], scratch: &mut [u8]) -> u32 {
    if bytes.len() <= scratch.len() {
        scratch[..bytes.len()].copy_from_slice(bytes);
    }
    bytes.len() as u32
}

/// A stream manager's local sessions and the protocol of its pub/sub socket, which
/// JavaScript drives like the command socket. Every writing method returns the length
/// of what to write next (see `into_scratch`); `op` ids are the Link's call ids.
#[napi]
pub struct NativeStreams {
    sessions: StreamSessions,
}

#[napi]
impl NativeStreams {
    #[napi(constructor)]
    pub fn new(client: &NativeClient) -> Self {
        NativeStreams {
            sessions: StreamSessions::new(
                client.client.get_connection_info(),
                client.commands.keys().clone(),
            ),
        }
    }

    /// A new socket is connected: the AUTH to write first, confirmed as `op`; 0 when
    /// none is needed.
    #[napi]
    pub fn handshake(&mut self, op: u32, mut scratch: BufferSlice<'_>) -> u32 {
        into_scratch(self.sessions.handshake(op), &mut scratch)
    }

    /// Applies the session changes of one tick, in order: `changes` holds
    /// `[kind, _, token]` triples (`CHANGE_CREATE`: the id's messages go to controller
    /// `token`; `CHANGE_DROP`: they stop unless a newer token owns the id) and `ids` their
    /// session ids. When `connected`, writes the SUBSCRIBE (confirmed as `op`) and
    /// UNSUBSCRIBE they need (ends alone wait for `flushEnds`); otherwise the next
    /// `resubscribe` covers them.
    #[napi(
        ts_args_type = "changes: Uint32Array, ids: string[], op: number, connected: boolean, scratch: Buffer"
    )]
    pub fn apply(
        &mut self,
        changes: Uint32ArraySlice<'_>,
        ids: Vec<String>,
        op: u32,
        connected: bool,
        mut scratch: BufferSlice<'_>,
    ) -> u32 {
        into_scratch(
            self.sessions.apply(&changes, ids, op, connected),
            &mut scratch,
        )
    }

    /// Writes the UNSUBSCRIBE of sessions ended in ticks without creations; 0 when none.
    #[napi]
    pub fn flush_ends(&mut self, mut scratch: BufferSlice<'_>) -> u32 {
        into_scratch(self.sessions.flush_ends(), &mut scratch)
    }

    /// After a (re)connect: subscribes every local session again, confirmed as `op`; 0
    /// when there is nothing to subscribe.
    #[napi]
    pub fn resubscribe(&mut self, op: u32, mut scratch: BufferSlice<'_>) -> u32 {
        into_scratch(self.sessions.resubscribe(op), &mut scratch)
    }

    /// A PING confirmed as `op`.
    #[napi]
    pub fn ping(&mut self, op: u32, mut scratch: BufferSlice<'_>) -> u32 {
        into_scratch(self.sessions.ping(op), &mut scratch)
    }

    /// Copies the last write into `scratch` (large enough, see `into_scratch`).
    #[napi]
    pub fn copy_written(&self, mut scratch: BufferSlice<'_>) -> u32 {
        into_scratch(self.sessions.written(), &mut scratch)
    }

    /// The socket broke: returns the ids of the operations that will not be confirmed.
    #[napi]
    pub fn abandon(&mut self) -> Vec<u32> {
        self.sessions.abandon()
    }

    /// Reads what the socket read into `out`: `[consumed, need]`, then
    /// `[kind, token, offset, length]` entries into `bytes` (see `EntryKind`). Returns
    /// the number of entries; call again on the rest when `out` was full. Throws if
    /// Redis breaks the protocol (drop the socket then).
    #[napi(ts_args_type = "bytes: Buffer, out: Uint32Array")]
    pub fn receive(&mut self, bytes: &[u8], mut out: Uint32ArraySlice<'_>) -> napi::Result<u32> {
        // SAFETY: JavaScript waits in this call, so nothing else touches `out`; it is
        // a different array from `bytes` (lib/subscriber.js).
        let out = unsafe { out.as_mut() };
        self.sessions
            .receive(bytes, out)
            .map(|n| n as u32)
            .map_err(js_error)
    }
}
