//! Crossing from tokio back to JavaScript.
//!
//! Long-lived, weak (unref'd) threadsafe functions ([`Batches`]) carry whole batches:
//! call completions (one per command connection), stream deliveries (one per stream
//! manager) and subscription notifications (one per subscription manager). One crossing per batch keeps the per-message cost on the JavaScript thread
//! low; Node also drains several queued calls of one function in one turn. Weak: they
//! never keep the process alive on their own (pending calls do, from JS). The JavaScript
//! callbacks never throw: they catch and report to `onError`, because a throw from a
//! threadsafe callback would be fatal to the process.

use napi::bindgen_prelude::{FnArgs, Function, Null, ToNapiValue, TypeName, Undefined, ValueType};
use napi::check_status;
use napi::sys;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{error_kind, ErrorKind};

/// The successful result of one call, as JavaScript sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// A write's success: `undefined`, what the managers' write methods resolve to.
    Done,
    Nil,
    Text(String),
    Int(i64),
    List(Vec<String>),
    /// Several independent values read in one round trip.
    Fields(Vec<Field>),
}

/// One value of a [`Reply::Fields`]: JavaScript sees a string, `null`, or `{ error }`.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    Missing,
    Text(String),
    /// This value could not be read (e.g. a key of the wrong type); the others could.
    Failed(String, ErrorKind),
}

#[napi(object)]
pub struct FieldError {
    pub error: String,
    /// See [`ErrorKind`].
    pub kind: u32,
}

impl ToNapiValue for Field {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        match val {
            Field::Missing => Null::to_napi_value(env, Null),
            Field::Text(s) => String::to_napi_value(env, s),
            Field::Failed(error, kind) => FieldError::to_napi_value(
                env,
                FieldError {
                    error,
                    kind: kind as u32,
                },
            ),
        }
    }
}

impl ToNapiValue for Reply {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        match val {
            Reply::Done => Undefined::to_napi_value(env, ()),
            Reply::Nil => Null::to_napi_value(env, Null),
            Reply::Text(s) => String::to_napi_value(env, s),
            Reply::Int(i) => f64::to_napi_value(env, i as f64),
            Reply::List(v) => Vec::<String>::to_napi_value(env, v),
            Reply::Fields(v) => Vec::<Field>::to_napi_value(env, v),
        }
    }
}

/// Outcome of one call: a reply, or an error message for JavaScript.
pub type Outcome = Result<Reply, String>;

/// Completions of several calls, delivered in one crossing.
///
/// JavaScript sees one flat array: a call answered `undefined` (every write) is just its
/// id; a call answered with a value is `-(id + 1)` followed by the value; a failed call
/// is its id offset by 2^32 times its [`ErrorKind`] followed by the message. One plain array per batch: typed
/// arrays cost more than the whole answer when a batch holds one call, and each element
/// set is a Node-API call, so writes (most calls) cost one instead of two.
#[derive(Default)]
pub struct CompletionBatch(Vec<(u32, Outcome)>);

/// Added to the id of a failed call in a [`CompletionBatch`], times its [`ErrorKind`];
/// exported to `lib/wire.js`.
#[napi]
pub const FAILED_ANSWER: f64 = 4_294_967_296.0;

impl CompletionBatch {
    pub fn push(&mut self, id: u32, outcome: Outcome) {
        self.0.push((id, outcome));
    }

    /// Answers every one of `ids` with the same failure.
    pub fn fail_all(&mut self, ids: impl IntoIterator<Item = u32>, message: &str) {
        for id in ids {
            self.push(id, Err(message.to_string()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TypeName for CompletionBatch {
    fn type_name() -> &'static str {
        "unknown[]"
    }

    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for CompletionBatch {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        let with_value = val
            .0
            .iter()
            .filter(|(_, outcome)| !matches!(outcome, Ok(Reply::Done)))
            .count();
        let mut array = std::ptr::null_mut();
        check_status!(sys::napi_create_array_with_length(
            env,
            val.0.len() + with_value,
            &mut array
        ))?;
        let mut at = 0u32;
        let mut put = |value: sys::napi_value| {
            let status = sys::napi_set_element(env, array, at, value);
            at += 1;
            check_status!(status)
        };
        for (id, outcome) in val.0 {
            let (head, reply) = match outcome {
                Ok(Reply::Done) => (f64::from(id), None),
                Ok(reply) => (-f64::from(id) - 1.0, Some(reply)),
                Err(message) => {
                    let kind = f64::from(error_kind(&message) as u32);
                    (
                        f64::from(id) + FAILED_ANSWER * kind,
                        Some(Reply::Text(message)),
                    )
                }
            };
            put(f64::to_napi_value(env, head)?)?;
            if let Some(reply) = reply {
                put(Reply::to_napi_value(env, reply)?)?;
            }
        }
        Ok(array)
    }
}

/// One long-lived, weak threadsafe function that hands whole batches of `T` to a
/// JavaScript callback, as its one argument `A` (built from the batch on the JavaScript
/// thread). Every crossing back to JavaScript goes through one of these.
pub struct Batches<T: Send + 'static, A: ToNapiValue + 'static>(
    ThreadsafeFunction<T, (), FnArgs<(A,)>, Status, false, true>,
);

impl<T: Send + 'static, A: ToNapiValue + 'static> Batches<T, A> {
    pub fn new(callback: &Function<'_, FnArgs<(A,)>, ()>, to_js: fn(T) -> A) -> napi::Result<Self> {
        let tsfn = callback
            .build_threadsafe_function::<T>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(move |ctx| Ok(FnArgs::from((to_js(ctx.value),))))?;
        Ok(Batches(tsfn))
    }

    /// Queues the batch for the JavaScript thread. After the environment started to
    /// close (`Status::Closing`) the batch is dropped: nobody is left to take it.
    pub fn send(&self, batch: T) {
        self.0.call(batch, ThreadsafeFunctionCallMode::NonBlocking);
    }
}

pub type CompletionArgs = FnArgs<(CompletionBatch,)>;

/// Resolves JavaScript promises: `(answers) => void` (see [`CompletionBatch`]).
pub struct Completions(Batches<CompletionBatch, CompletionBatch>);

impl Completions {
    pub fn new(callback: &Function<'_, CompletionArgs, ()>) -> napi::Result<Self> {
        Ok(Completions(Batches::new(callback, |batch| batch)?))
    }

    pub fn send(&self, batch: CompletionBatch) {
        if !batch.is_empty() {
            self.0.send(batch);
        }
    }

    pub fn one(&self, id: u32, outcome: Outcome) {
        let mut batch = CompletionBatch::default();
        batch.push(id, outcome);
        self.send(batch);
    }
}

/// What one delivery entry asks JavaScript to do.
#[napi]
#[derive(Debug, PartialEq)]
pub enum DeliveryKind {
    /// Enqueue the payload into the controller of `token`.
    Message = 0,
    /// Enqueue the payload into every local controller.
    Broadcast = 1,
    /// The session was ended elsewhere: close the controller of `token`.
    Close = 2,
    /// A background problem; the payload is the message for `onError`, the token word
    /// its `ErrorKind`.
    Problem = 3,
}

/// Entries for JavaScript as one run of payload bytes plus `u32` words that index it;
/// each kind of batch lays its words out its own way (stream deliveries: `[kind, token,
/// offset, length]` per entry, see [`Deliveries`]).
#[derive(Default)]
pub struct IndexedBytes {
    bytes: Vec<u8>,
    words: Vec<u32>,
    /// Entries pushed (see [`Shelf::queued`]).
    entries: u64,
}

impl IndexedBytes {
    /// Payload bytes held: the offset the next payload starts at.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends one payload and its entry's words.
    pub fn push(&mut self, payload: &[u8], words: impl IntoIterator<Item = u32>) {
        self.bytes.extend_from_slice(payload);
        self.words.extend(words);
        self.entries += 1;
    }

    /// Empties the batch for reuse; its memory stays (see [`Shelf`]).
    fn clear(&mut self) {
        self.bytes.clear();
        self.words.clear();
        self.entries = 0;
    }

    #[cfg(test)]
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    #[cfg(test)]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

unsafe fn typed_array(
    env: sys::napi_env,
    kind: sys::napi_typedarray_type,
    bytes: &[u8],
    len: usize,
) -> napi::Result<sys::napi_value> {
    let mut data = std::ptr::null_mut();
    let mut buffer = std::ptr::null_mut();
    check_status!(sys::napi_create_arraybuffer(
        env,
        bytes.len(),
        &mut data,
        &mut buffer
    ))?;
    if !bytes.is_empty() {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), data.cast::<u8>(), bytes.len());
    }
    let mut array = std::ptr::null_mut();
    check_status!(sys::napi_create_typedarray(
        env, kind, len, buffer, 0, &mut array
    ))?;
    Ok(array)
}

/// `[Uint8Array, Uint32Array]` of a batch's payload bytes and its `u32` index words.
unsafe fn bytes_and_words(
    env: sys::napi_env,
    bytes: &[u8],
    words: &[u32],
) -> napi::Result<sys::napi_value> {
    let bytes_js = typed_array(env, sys::TypedarrayType::uint8_array, bytes, bytes.len())?;
    let word_bytes = std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 4);
    let words_js = typed_array(
        env,
        sys::TypedarrayType::uint32_array,
        word_bytes,
        words.len(),
    )?;
    let mut pair = std::ptr::null_mut();
    check_status!(sys::napi_create_array_with_length(env, 2, &mut pair))?;
    check_status!(sys::napi_set_element(env, pair, 0, bytes_js))?;
    check_status!(sys::napi_set_element(env, pair, 1, words_js))?;
    Ok(pair)
}

/// Bytes gathered into one batch for JavaScript (a stream manager's deliveries, a
/// subscription manager's notifications) before the next one starts.
const MAX_DELIVERY_BYTES: usize = 1 << 20;

/// The batches of one gatherer: those handed to the threadsafe function and not yet
/// taken by the JavaScript thread, and emptied ones kept for reuse, so a busy stream
/// writes into memory it has already touched (fresh buffers of megabytes, grown message
/// by message, cost the tokio thread page faults: the kernel zeroing new pages took up
/// to a third of a receiving process's samples in `perf`).
#[derive(Default)]
struct Shelf {
    waiting: Mutex<VecDeque<IndexedBytes>>,
    spares: Mutex<Vec<IndexedBytes>>,
    /// Entries gathered and not yet taken by the JavaScript thread (`deliveryQueue`).
    queued: AtomicU64,
}

/// Spare batches kept at most, and the largest buffer kept (one message may exceed
/// [`MAX_DELIVERY_BYTES`]; such a buffer is freed).
const SPARES: usize = 2;
const SPARE_MAX_BYTES: usize = 2 * MAX_DELIVERY_BYTES;

impl Shelf {
    fn spare(&self) -> IndexedBytes {
        self.spares.lock().unwrap().pop().unwrap_or_default()
    }

    fn give_back(&self, mut batch: IndexedBytes) {
        if batch.bytes.capacity() <= SPARE_MAX_BYTES {
            let mut spares = self.spares.lock().unwrap();
            if spares.len() < SPARES {
                batch.clear();
                spares.push(batch);
            }
        }
    }
}

/// A gathered batch on its way into JavaScript: `[Uint8Array, Uint32Array]` in V8-owned
/// memory, filled by one copy each (no external buffer, and so no finalizer, per batch).
/// The emptied batch then goes back to the shelf's spares for a later one.
pub struct Shelved {
    batch: IndexedBytes,
    shelf: Arc<Shelf>,
}

impl TypeName for Shelved {
    fn type_name() -> &'static str {
        "[Uint8Array, Uint32Array]"
    }

    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for Shelved {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        let Shelved { batch, shelf } = val;
        let arrays = bytes_and_words(env, &batch.bytes, &batch.words);
        shelf.give_back(batch);
        arrays
    }
}

/// Gathers entries for one JavaScript callback, as `A` (a [`Shelved`] batch or a type
/// made from one).
///
/// Each entry is written straight into the batch that waits for the JavaScript thread
/// (busy with an earlier one, or just woken for this one); only when none waits, or it
/// is full, does a new batch start, with one call of the threadsafe function. So the
/// first entry after a quiet moment crosses at once, and under load the event loop
/// takes fewer, larger batches (each crossing has a fixed cost). Safe from any thread.
pub struct Gatherer<A: ToNapiValue + 'static> {
    batches: Batches<Arc<Shelf>, A>,
    shelf: Arc<Shelf>,
}

impl<A: ToNapiValue + From<Shelved> + 'static> Gatherer<A> {
    pub fn new(callback: &Function<'_, FnArgs<(A,)>, ()>) -> napi::Result<Self> {
        Ok(Gatherer {
            batches: Batches::new(callback, take_waiting::<A>)?,
            shelf: Arc::default(),
        })
    }

    /// Adds one entry of `payload_len` payload bytes, written by `write`.
    pub fn push(&self, payload_len: usize, write: impl FnOnce(&mut IndexedBytes)) {
        // Counted before it can be taken, so the count never goes below zero.
        self.shelf.queued.fetch_add(1, Ordering::Relaxed);
        {
            let mut waiting = self.shelf.waiting.lock().unwrap();
            if let Some(last) = waiting.back_mut() {
                if last.byte_len() + payload_len <= MAX_DELIVERY_BYTES {
                    write(last);
                    return;
                }
            }
            let mut batch = self.shelf.spare();
            write(&mut batch);
            waiting.push_back(batch);
        }
        self.batches.send(self.shelf.clone());
    }

    /// Entries gathered and not yet taken by the JavaScript thread.
    pub fn queued(&self) -> u64 {
        self.shelf.queued.load(Ordering::Relaxed)
    }
}

/// On the JavaScript thread, for one call of the threadsafe function: the oldest batch
/// waiting (each call announced one).
fn take_waiting<A: From<Shelved>>(shelf: Arc<Shelf>) -> A {
    let batch = shelf
        .waiting
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_default();
    shelf.queued.fetch_sub(batch.entries, Ordering::Relaxed);
    A::from(Shelved { batch, shelf })
}

pub type DeliveryArgs = FnArgs<(Shelved,)>;

/// Feeds stream controllers: `([bytes, entries]) => void`, with `[kind, token, offset,
/// length]` per entry (see [`Gatherer`]). JavaScript copies each payload out into its
/// own `Uint8Array` (no view shared between sessions, none pinning the batch).
pub struct Deliveries(Gatherer<Shelved>);

impl Deliveries {
    pub fn new(callback: &Function<'_, DeliveryArgs, ()>) -> napi::Result<Self> {
        Ok(Deliveries(Gatherer::new(callback)?))
    }

    /// Delivers one entry (see [`DeliveryKind`]).
    pub fn push(&self, kind: DeliveryKind, token: u32, payload: &[u8]) {
        self.0.push(payload.len(), |batch| {
            push_delivery(batch, kind, token, payload)
        });
    }

    /// Reports a background problem to `onError` (its [`ErrorKind`] in the token word).
    pub fn problem(&self, message: &str) {
        let kind = error_kind(message) as u32;
        self.push(DeliveryKind::Problem, kind, message.as_bytes());
    }

    /// Messages (and ends, problems) received and not yet taken by JavaScript.
    pub fn queued(&self) -> u64 {
        self.0.queued()
    }
}

fn push_delivery(batch: &mut IndexedBytes, kind: DeliveryKind, token: u32, payload: &[u8]) {
    let offset = batch.byte_len() as u32;
    batch.push(payload, [kind as u32, token, offset, payload.len() as u32]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_entries_point_at_their_payloads() {
        let mut b = IndexedBytes::default();
        push_delivery(&mut b, DeliveryKind::Message, 7, "héllo".as_bytes());
        push_delivery(&mut b, DeliveryKind::Close, 8, b"");
        push_delivery(&mut b, DeliveryKind::Broadcast, 0, b"xyz");
        assert_eq!(b.words().len(), 12);
        assert_eq!(&b.words()[0..4], &[0, 7, 0, 6]);
        assert_eq!(&b.words()[4..8], &[2, 8, 6, 0]);
        assert_eq!(&b.words()[8..12], &[1, 0, 6, 3]);
        assert_eq!(&b.bytes()[6..9], b"xyz");
    }

    #[test]
    fn a_cleared_batch_keeps_its_memory_and_starts_at_offset_zero() {
        let mut b = IndexedBytes::default();
        push_delivery(&mut b, DeliveryKind::Message, 1, &[7; 1000]);
        let capacity = b.bytes.capacity();
        b.clear();
        assert_eq!((b.words().len(), b.byte_len()), (0, 0));
        assert_eq!(b.bytes.capacity(), capacity);
        push_delivery(&mut b, DeliveryKind::Message, 2, b"xyz");
        assert_eq!(b.words(), &[0, 2, 0, 3]);
    }

    #[test]
    fn completions_keep_their_order_and_outcome() {
        let mut c = CompletionBatch::default();
        c.push(1, Ok(Reply::Nil));
        c.push(2, Err("boom".into()));
        assert_eq!(c.0, vec![(1, Ok(Reply::Nil)), (2, Err("boom".into()))]);
    }
}
