#![deny(clippy::all)]
//! Native core of `@tmcp-rs/session-manager-redis`, a drop-in for
//! `@tmcp/session-manager-redis`.
//!
//! Every Redis connection is opened, written, read and reconnected by the `redis` crate
//! on this addon's tokio runtime. The JavaScript facade (`lib/`) keeps only what must
//! touch V8: argument checks, the stream controllers, promise settlement and JSON of
//! the app's values. Modules, one concern each:
//!
//! * [`config`]: options (`config/mod.rs`), URL validation and node lists, the
//!   `redis::Client` they describe (`config/urls.rs`);
//! * [`keys`]: every key and channel name (upstream's by default);
//! * [`connection`]: connections (one server, a Sentinel master, a Cluster), built from
//!   the options and replaced when their peer goes silent;
//! * [`cluster`]: pipelines split per slot (`cluster/pipeline.rs`), topology reads
//!   (`cluster/topology.rs`), sharded subscriptions one slot per command
//!   (`cluster/shards.rs`);
//! * [`js_calls`]: calls (and session changes) as they cross from JavaScript;
//! * [`operation`]: what a call is to the dispatcher (a trait each manager's calls
//!   implement), so the dispatcher names no manager;
//! * [`commands`]: the request path, one ordered dispatcher per command connection;
//! * [`info_sessions`] / [`stream_sessions`]: what each manager call means in Redis,
//!   the session table, pub/sub receiving and the liveness timer;
//! * [`subscriptions`]: `subscriptions/listen` notifications, matched in Rust: the
//!   manager (`subscriptions/mod.rs`), reading a message (`subscriptions/probe.rs`),
//!   the interest index and the batches to JavaScript (`subscriptions/interests.rs`);
//! * [`delivery`]: batched crossings back to JavaScript;
//! * [`stats`]: counters for `stats()` and connection/topology events;
//! * [`error`]: error text (never with credentials) and its kinds.

// The request path allocates per call on the tokio thread; glibc malloc showed up in
// profiles, and mimalloc raised 64-in-flight set+get by ~15 % in bench/ (quick runs).
#[cfg(target_os = "linux")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cluster;
mod commands;
mod config;
mod connection;
mod delivery;
mod error;
mod info_sessions;
mod js_calls;
mod keys;
mod operation;
mod stats;
mod stream_sessions;
mod subscriptions;

use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{Float64Array, Function, Uint32ArraySlice};
use napi_derive::napi;

use commands::Commands;
use config::{redact_url, NativeOptions};
use connection::{source_for, Source};
use delivery::{CompletionArgs, Completions, Deliveries};
use error::{js_error, js_type_error};
use info_sessions::InfoOp;
use js_calls::{JsCalls, JsText};
use operation::Op;
use stats::{EventArgs, Events};
use stream_sessions::{StreamOp, StreamSessions};
use subscriptions::{NotificationArgs, Notifications, PublishNotification, Subscriptions, NOTIFY};

/// Installs the TLS crypto provider and starts the runtime, once per process.
#[napi_derive::module_init]
fn init() {
    // Module init runs again for every Worker that loads the addon; the process-wide
    // runtime and crypto provider are set up once.
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another addon already installed one: that one serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // One thread of our own drives every connection: the dispatcher and the
        // connection tasks hand work to each other without waking another thread, and
        // a current-thread scheduler wakes faster than a one-worker multi-thread one
        // (A/B on bench/worker.mjs: set+get +4–14 % at 1 in flight, +4–29 % at 64).
        // If it cannot start, RUNTIME stays empty and every constructor throws.
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let handle = runtime.handle().clone();
        let started = std::thread::Builder::new()
            .name("tmcp-redis".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()));
        if started.is_ok() {
            let _ = RUNTIME.set(handle);
        }
    });
}

static RUNTIME: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();

/// Runs `f` inside the addon's runtime (for `tokio::spawn` and connection setup).
fn in_runtime<T>(f: impl FnOnce() -> T) -> napi::Result<T> {
    let runtime = RUNTIME
        .get()
        .ok_or_else(|| js_error("the addon could not start its tokio runtime thread"))?;
    let _guard = runtime.enter();
    Ok(f())
}

/// Builds a call JavaScript submitted from its wire code (see `lib/wire.js`): each
/// manager's module recognises its own codes. Here, above every manager, so that the
/// dispatcher (which gets this as an `operation::Decode`) names none of them.
fn decode_call(code: u32, args: Vec<String>, upstream: bool) -> Option<Op> {
    if InfoOp::handles(code) {
        Some(Box::new(InfoOp::from_code(code, args, upstream)?))
    } else if StreamOp::handles(code) {
        Some(Box::new(StreamOp::from_code(code, args, upstream)?))
    } else if code == NOTIFY {
        Some(Box::new(PublishNotification::from_args(args)?))
    } else {
        None
    }
}

/// A command connection with its dispatcher. Both managers may share one.
#[napi]
pub struct NativeClient {
    commands: Arc<Commands>,
    /// Kept to open the pub/sub connections with the same settings (and, with Sentinel,
    /// the same view of the master).
    source: Source,
    shown_url: String,
    /// Where every connection of this client and its managers reports events.
    events: Arc<Events>,
}

#[napi]
impl NativeClient {
    /// `on_complete(answers)` answers every submitted call (see `CompletionBatch`);
    /// `on_event([channel, event, role, address, port])` hears of connections ready or
    /// lost and topology changes followed (see `stats::Events`).
    #[napi(
        constructor,
        ts_args_type = "url: string, options: NativeOptions, onComplete: (answers: unknown[]) => void, onEvent: (event: string[]) => void"
    )]
    pub fn new(
        url: String,
        options: NativeOptions,
        on_complete: Function<'_, CompletionArgs, ()>,
        on_event: Function<'_, EventArgs, ()>,
    ) -> napi::Result<Self> {
        let source = source_for(&url, &options).map_err(js_type_error)?;
        let completions = Completions::new(&on_complete)?;
        let events = Events::new(&on_event)?;
        let commands =
            in_runtime(|| Commands::start(source.clone(), options, completions, decode_call))?
                .map_err(js_error)?;
        commands.connection().stats.set_events(events.clone());
        Ok(NativeClient {
            commands,
            source,
            shown_url: redact_url(&url),
            events,
        })
    }

    /// The command connection's `[reconnects, topologyChanges, timeouts, connected]`
    /// (timeouts of background work: liveness refreshes).
    #[napi]
    pub fn stats(&self) -> Float64Array {
        Float64Array::new(self.commands.connection().stats.figures().to_vec())
    }

    /// Queues one tick's calls (see [`js_calls`]): `words[..count]` holds
    /// `[id, code, argCount, …argument lengths]` per call, `text` the arguments
    /// concatenated. `words` is reused by the caller, so only `count` words are read.
    #[napi(ts_args_type = "words: Uint32Array, count: number, text: string")]
    pub fn submit(
        &self,
        words: Uint32ArraySlice<'_>,
        count: u32,
        text: JsText,
    ) -> napi::Result<()> {
        let words = words
            .get(..count as usize)
            .ok_or_else(|| js_error("internal error: malformed calls"))?;
        self.commands.submit_js(JsCalls {
            words: words.to_vec(),
            text: text.0,
        });
        Ok(())
    }

    /// The URL with its password masked.
    #[napi(getter)]
    pub fn url(&self) -> String {
        self.shown_url.clone()
    }

    /// Stops taking calls; queued ones still complete.
    #[napi]
    pub fn close(&self) {
        self.commands.close();
    }
}

/// A native object's state until its `close()`; afterwards calls fail with `closed`.
struct Open<T> {
    state: Mutex<Option<T>>,
    closed: &'static str,
}

impl<T> Open<T> {
    fn new(state: T, closed: &'static str) -> Self {
        Open {
            state: Mutex::new(Some(state)),
            closed,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&T) -> R) -> napi::Result<R> {
        match self.state.lock().unwrap().as_ref() {
            Some(state) => Ok(f(state)),
            None => Err(js_error(self.closed)),
        }
    }

    /// The state, once: None when already closed.
    fn close(&self) -> Option<T> {
        self.state.lock().unwrap().take()
    }
}

/// The pub/sub side of a stream manager, built on a [`NativeClient`].
#[napi]
pub struct NativeStreams {
    sessions: Open<StreamSessions>,
}

#[napi]
impl NativeStreams {
    /// `on_deliver([bytes, entries])` receives batched messages, closes and problems:
    /// `entries` holds `[kind, token, offset, length]` quadruples into `bytes`.
    #[napi(
        constructor,
        ts_args_type = "client: NativeClient, onDeliver: (batch: [Uint8Array, Uint32Array]) => void"
    )]
    pub fn new(
        client: &NativeClient,
        on_deliver: Function<'_, delivery::DeliveryArgs, ()>,
    ) -> napi::Result<Self> {
        let source = client.source.clone();
        let deliveries = Deliveries::new(&on_deliver)?;
        let commands = client.commands.clone();
        let sessions = in_runtime(|| StreamSessions::start(source, commands, deliveries))?
            .map_err(js_error)?;
        sessions
            .subscriber_stats()
            .set_events(client.events.clone());
        Ok(NativeStreams {
            sessions: Open::new(sessions, "the session manager is closed"),
        })
    }

    /// One tick of local session changes: `[kind, token, word, idLength]` each (see
    /// `CHANGE_CREATE`, `CHANGE_DROP`), their session ids concatenated in `ids` (as
    /// calls cross, see [`js_calls`]).
    #[napi(ts_args_type = "changes: Uint32Array, ids: string")]
    pub fn apply(&self, changes: Uint32ArraySlice<'_>, ids: JsText) -> napi::Result<()> {
        let malformed = || js_error("internal error: malformed session changes");
        if !changes.len().is_multiple_of(4) {
            return Err(malformed());
        }
        let lengths: Vec<u32> = changes.chunks_exact(4).map(|change| change[3]).collect();
        let triples: Vec<u32> = changes
            .chunks_exact(4)
            .flat_map(|change| &change[..3])
            .copied()
            .collect();
        let ids = js_calls::split_args(&ids.0, &lengths).ok_or_else(malformed)?;
        self.sessions
            .with(|sessions| in_runtime(|| sessions.apply(&triples, ids)))?
    }

    /// The pub/sub connection's `[reconnects, topologyChanges, timeouts, connected]`,
    /// then `[subscriptionsWanted, subscriptionsConfirmed, deliveryQueue, unrouted]` (see
    /// `stats::StreamStats`); empty once closed.
    #[napi]
    pub fn stats(&self) -> Float64Array {
        Float64Array::new(self.sessions.with(|s| s.stats()).unwrap_or_default())
    }

    /// Ends every local session and the background tasks; answers `call` when done.
    #[napi]
    pub fn close(&self, call: u32) -> bool {
        match self.sessions.close() {
            Some(mut sessions) => {
                let _ = in_runtime(|| sessions.close(call));
                true
            }
            None => false,
        }
    }
}

/// The pub/sub side of a subscription manager, built on a [`NativeClient`].
#[napi]
pub struct NativeSubscriptions {
    subscriptions: Open<Subscriptions>,
}

#[napi]
impl NativeSubscriptions {
    /// `on_notify(batch)` receives the notifications local subscriptions want:
    /// `[bytes, words]` with `[offset, length, count, token…]` per message, or
    /// `[message, kind]` for a background problem (see `ErrorKind`).
    #[napi(
        constructor,
        ts_args_type = "client: NativeClient, onNotify: (batch: [Uint8Array, Uint32Array] | [string, number]) => void"
    )]
    pub fn new(
        client: &NativeClient,
        on_notify: Function<'_, NotificationArgs, ()>,
    ) -> napi::Result<Self> {
        let source = client.source.clone();
        let notifications = Notifications::new(&on_notify)?;
        let commands = client.commands.clone();
        let subscriptions = in_runtime(|| Subscriptions::start(source, commands, notifications))?
            .map_err(js_error)?;
        subscriptions
            .subscriber_stats()
            .set_events(client.events.clone());
        Ok(NativeSubscriptions {
            subscriptions: Open::new(subscriptions, "the subscription manager is closed"),
        })
    }

    /// Answers `call` once the notification channel is subscribed.
    #[napi]
    pub fn ready(&self, call: u32) -> napi::Result<()> {
        self.subscriptions.with(|s| in_runtime(|| s.ready(call)))?
    }

    /// Registers what local subscription `token` wants: `flags` (see `WANTS_*`) and
    /// resource uris.
    #[napi]
    pub fn watch(&self, token: u32, flags: u32, uris: Vec<String>) -> napi::Result<()> {
        self.subscriptions.with(|s| s.watch(token, flags, uris))
    }

    #[napi]
    pub fn unwatch(&self, token: u32) {
        let _ = self.subscriptions.with(|s| s.unwatch(token));
    }

    /// The pub/sub connection's `[reconnects, topologyChanges, timeouts, connected]`,
    /// then `[ignored, unwanted, deliveryQueue, subscribed]` (see `Subscriptions::stats`);
    /// empty once closed.
    #[napi]
    pub fn stats(&self) -> Float64Array {
        Float64Array::new(self.subscriptions.with(|s| s.stats()).unwrap_or_default())
    }

    /// Stops receiving; returns false if already closed.
    #[napi]
    pub fn close(&self) -> bool {
        match self.subscriptions.close() {
            Some(mut subscriptions) => {
                let _ = in_runtime(|| subscriptions.close());
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commands a call decoded from `code` writes.
    fn encoded(code: u32, args: &[&str]) -> Option<String> {
        let args = args.iter().map(|a| a.to_string()).collect();
        let op = decode_call(code, args, false)?;
        let mut pipe = redis::Pipeline::new();
        op.encode(&keys::Keys::default(), &mut pipe);
        Some(String::from_utf8_lossy(&pipe.get_packed_pipeline()).into_owned())
    }

    #[test]
    fn codes_reach_their_manager() {
        // 20: a stream manager's `has` (`HAS`).
        assert!(encoded(20, &["a"]).unwrap().contains("EXISTS"));
        assert!(encoded(info_sessions::GET_SUBSCRIPTIONS, &["u"])
            .unwrap()
            .contains("SMEMBERS"));
        assert!(encoded(NOTIFY, &["{}"])
            .unwrap()
            .contains("tmcp:subscriptions"));
        assert!(encoded(NOTIFY, &["{}", "x"]).is_none());
        assert!(encoded(99, &["a"]).is_none());
    }
}
