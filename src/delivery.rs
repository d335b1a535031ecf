//! Answers for JavaScript: call outcomes as one flat array per batch, read on the
//! JavaScript thread from the command socket or sent from the tokio side (SCAN
//! follow-ups) through one long-lived, weak (unref'd) threadsafe function. Weak: it never
//! keeps the process alive on its own (pending calls do, from JS). Its JavaScript
//! callback never throws: it catches and reports to `onError`, because a throw from a
//! threadsafe callback would be fatal to the process.

use napi::bindgen_prelude::{FnArgs, Function, Null, ToNapiValue, TypeName, Undefined, ValueType};
use napi::check_status;
use napi::sys;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;
use napi_derive::napi;

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
    Failed(String),
}

#[napi_derive::napi(object)]
pub struct FieldError {
    pub error: String,
}

impl ToNapiValue for Field {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        match val {
            Field::Missing => Null::to_napi_value(env, Null),
            Field::Text(s) => String::to_napi_value(env, s),
            Field::Failed(error) => FieldError::to_napi_value(env, FieldError { error }),
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
/// JavaScript sees one flat array `[id, reply, id, reply, …]`; a failed call's id is
/// offset by 2^32 and its reply is the message. Both paths use it: replies read from the
/// command socket, and calls finished on the tokio side. One array per batch: typed
/// arrays (external buffers with finalizers) cost more than the whole answer when a
/// batch holds one call.
#[derive(Default)]
pub struct CompletionBatch(Vec<(u32, Outcome)>);

/// Added to the id of a failed call in a [`CompletionBatch`]; exported to `lib/wire.js`.
#[napi]
pub const FAILED_ANSWER: f64 = 4_294_967_296.0;

impl CompletionBatch {
    pub fn push(&mut self, id: u32, outcome: Outcome) {
        self.0.push((id, outcome));
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
        let mut array = std::ptr::null_mut();
        check_status!(sys::napi_create_array_with_length(
            env,
            val.0.len() * 2,
            &mut array
        ))?;
        for (i, (id, outcome)) in val.0.into_iter().enumerate() {
            let (id, reply) = match outcome {
                Ok(reply) => (f64::from(id), reply),
                Err(message) => (f64::from(id) + FAILED_ANSWER, Reply::Text(message)),
            };
            let id = f64::to_napi_value(env, id)?;
            check_status!(sys::napi_set_element(env, array, (i * 2) as u32, id))?;
            let reply = Reply::to_napi_value(env, reply)?;
            check_status!(sys::napi_set_element(env, array, (i * 2 + 1) as u32, reply))?;
        }
        Ok(array)
    }
}

pub type CompletionArgs = FnArgs<(CompletionBatch,)>;
type CompletionFn = ThreadsafeFunction<CompletionBatch, (), CompletionArgs, Status, false, true>;

/// Resolves JavaScript promises: `(answers) => void` (see [`CompletionBatch`]).
pub struct Completions(CompletionFn);

impl Completions {
    pub fn new(callback: &Function<'_, CompletionArgs, ()>) -> napi::Result<Self> {
        let tsfn = callback
            .build_threadsafe_function::<CompletionBatch>()
            .callee_handled::<false>()
            .weak::<true>()
            .build_callback(|ctx| Ok(FnArgs::from((ctx.value,))))?;
        Ok(Completions(tsfn))
    }

    pub fn send(&self, batch: CompletionBatch) {
        if !batch.is_empty() {
            self.0.call(batch, ThreadsafeFunctionCallMode::NonBlocking);
        }
    }

    pub fn one(&self, id: u32, outcome: Outcome) {
        let mut batch = CompletionBatch::default();
        batch.push(id, outcome);
        self.send(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_keep_their_order_and_outcome() {
        let mut c = CompletionBatch::default();
        c.push(1, Ok(Reply::Nil));
        c.push(2, Err("boom".into()));
        assert_eq!(c.0, vec![(1, Ok(Reply::Nil)), (2, Err("boom".into()))]);
    }
}
