//! Who wants which notification, and the batches that carry matches to JavaScript.
//!
//! It owns the index of this process's interests ([`Interests`]: local subscriptions by
//! token, per list-changed kind and per resource URI), the matching rules (upstream's
//! `matchesSubscription`) and the layout of a batch (payloads, and
//! `[offset, length, count, token…]` per notification) handed over by [`Notifications`].
//! It must not subscribe, talk to Redis or keep the manager's state (the parent module
//! does), nor read a message beyond what `probe` reads; a notification no local
//! subscription wants must never be handed to JavaScript.

use std::collections::{HashMap, HashSet};

use napi::bindgen_prelude::{FnArgs, Function, ToNapiValue, TypeName, ValueType};
use napi::check_status;
use napi::sys;

use crate::delivery::{Batches, Gatherer, IndexedBytes, Shelved};

use super::probe::Probe;
use super::{WANTS_PROMPTS_LIST_CHANGED, WANTS_RESOURCES_LIST_CHANGED, WANTS_TOOLS_LIST_CHANGED};

/// Which local subscriptions (by token) want which notifications.
#[derive(Default)]
pub struct Interests {
    tools: HashSet<u32>,
    prompts: HashSet<u32>,
    resources: HashSet<u32>,
    by_uri: HashMap<String, HashSet<u32>>,
    /// token → its uris, to remove them again.
    uris_of: HashMap<u32, Vec<String>>,
}

/// What a message on the channel turned out to be.
#[derive(Debug, PartialEq)]
pub enum Matched {
    /// Local subscriptions that want it, in token order.
    Tokens(Vec<u32>),
    /// A notification no local subscription wants.
    Unwanted,
    /// Not a JSON object with a string `method`.
    Malformed,
}

impl Interests {
    pub fn watch(&mut self, token: u32, flags: u32, uris: Vec<String>) {
        if flags & WANTS_TOOLS_LIST_CHANGED != 0 {
            self.tools.insert(token);
        }
        if flags & WANTS_PROMPTS_LIST_CHANGED != 0 {
            self.prompts.insert(token);
        }
        if flags & WANTS_RESOURCES_LIST_CHANGED != 0 {
            self.resources.insert(token);
        }
        for uri in &uris {
            self.by_uri.entry(uri.clone()).or_default().insert(token);
        }
        self.uris_of.insert(token, uris);
    }

    pub fn unwatch(&mut self, token: u32) {
        self.tools.remove(&token);
        self.prompts.remove(&token);
        self.resources.remove(&token);
        for uri in self.uris_of.remove(&token).unwrap_or_default() {
            if let Some(tokens) = self.by_uri.get_mut(&uri) {
                tokens.remove(&token);
                if tokens.is_empty() {
                    self.by_uri.remove(&uri);
                }
            }
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.uris_of.is_empty()
    }

    /// The local subscriptions a message is for, by `@tmcp/session-manager`'s
    /// `matchesSubscription` rules.
    pub fn match_message(&self, payload: &[u8]) -> Matched {
        let Ok(probe) = serde_json::from_slice::<Probe>(payload) else {
            return Matched::Malformed;
        };
        let set = match probe.method.as_ref() {
            "notifications/tools/list_changed" => Some(&self.tools),
            "notifications/prompts/list_changed" => Some(&self.prompts),
            "notifications/resources/list_changed" => Some(&self.resources),
            "notifications/resources/updated" => probe
                .params
                .and_then(|p| p.uri)
                .and_then(|uri| self.by_uri.get(uri.as_ref())),
            _ => None,
        };
        match set {
            Some(tokens) if !tokens.is_empty() => {
                let mut tokens: Vec<u32> = tokens.iter().copied().collect();
                tokens.sort_unstable();
                Matched::Tokens(tokens)
            }
            _ => Matched::Unwanted,
        }
    }
}

/// Appends one matched notification: its payload, and `[offset, length, count, token…]`.
fn push_notification(batch: &mut IndexedBytes, payload: &[u8], tokens: &[u32]) {
    let head = [
        batch.byte_len() as u32,
        payload.len() as u32,
        tokens.len() as u32,
    ];
    batch.push(payload, head.into_iter().chain(tokens.iter().copied()));
}

/// `[bytes, words]`, or `[message, kind]` for a background problem (see `ErrorKind`).
pub enum NotificationArrays {
    Batch(Shelved),
    Problem(String),
}

impl From<Shelved> for NotificationArrays {
    fn from(batch: Shelved) -> Self {
        NotificationArrays::Batch(batch)
    }
}

impl TypeName for NotificationArrays {
    fn type_name() -> &'static str {
        "[Uint8Array, Uint32Array] | [string, number]"
    }

    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for NotificationArrays {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        match val {
            NotificationArrays::Batch(batch) => Shelved::to_napi_value(env, batch),
            NotificationArrays::Problem(problem) => {
                let kind = crate::error::error_kind(&problem) as u32;
                let mut pair = std::ptr::null_mut();
                check_status!(sys::napi_create_array_with_length(env, 2, &mut pair))?;
                let message = String::to_napi_value(env, problem)?;
                check_status!(sys::napi_set_element(env, pair, 0, message))?;
                let kind = u32::to_napi_value(env, kind)?;
                check_status!(sys::napi_set_element(env, pair, 1, kind))?;
                Ok(pair)
            }
        }
    }
}

pub type NotificationArgs = FnArgs<(NotificationArrays,)>;

/// Feeds local subscriptions: `(batch) => void`. Notifications are gathered like stream
/// deliveries (see [`Gatherer`]); a problem crosses alone, on a threadsafe function of
/// its own (same callback).
pub struct Notifications {
    pub(super) matched: Gatherer<NotificationArrays>,
    problems: Batches<String, NotificationArrays>,
}

impl Notifications {
    pub fn new(callback: &Function<'_, NotificationArgs, ()>) -> napi::Result<Self> {
        Ok(Notifications {
            matched: Gatherer::new(callback)?,
            problems: Batches::new(callback, NotificationArrays::Problem)?,
        })
    }

    pub(super) fn push(&self, payload: &[u8], tokens: &[u32]) {
        self.matched.push(payload.len(), |batch| {
            push_notification(batch, payload, tokens)
        });
    }

    pub(super) fn problem(&self, message: String) {
        self.problems.send(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interests() -> Interests {
        let mut i = Interests::default();
        i.watch(1, WANTS_TOOLS_LIST_CHANGED, vec!["file:///a".into()]);
        i.watch(
            2,
            WANTS_PROMPTS_LIST_CHANGED | WANTS_RESOURCES_LIST_CHANGED,
            vec![],
        );
        i.watch(3, 0, vec!["file:///a".into(), "file:///b".into()]);
        i
    }

    #[test]
    fn matches_like_matches_subscription() {
        let i = interests();
        let m = |json: &str| i.match_message(json.as_bytes());
        assert_eq!(
            m(r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#),
            Matched::Tokens(vec![1])
        );
        assert_eq!(
            m(r#"{"method":"notifications/prompts/list_changed","params":{}}"#),
            Matched::Tokens(vec![2])
        );
        assert_eq!(
            m(r#"{"method":"notifications/resources/updated","params":{"uri":"file:///a"}}"#),
            Matched::Tokens(vec![1, 3])
        );
        assert_eq!(
            m(r#"{"method":"notifications/resources/updated","params":{"uri":"file:///c"}}"#),
            Matched::Unwanted
        );
        assert_eq!(
            m(r#"{"method":"notifications/resources/updated","params":{"uri":7}}"#),
            Matched::Malformed
        );
        assert_eq!(
            m(r#"{"method":"notifications/message","params":{}}"#),
            Matched::Unwanted
        );
        assert_eq!(m("not json"), Matched::Malformed);
        assert_eq!(m(r#"{"id":1}"#), Matched::Malformed);
        assert_eq!(m(r#"[1,2]"#), Matched::Malformed);
        // Arrays are not notifications, nor are params that are not an object (serde's
        // derived structs read both by position).
        assert_eq!(
            m(r#"["notifications/tools/list_changed"]"#),
            Matched::Malformed
        );
        assert_eq!(
            m(r#"["notifications/resources/updated",{"uri":"file:///a"}]"#),
            Matched::Malformed
        );
        assert_eq!(
            m(r#"{"method":"notifications/resources/updated","params":["file:///a"]}"#),
            Matched::Malformed
        );
        assert_eq!(
            m(r#"{"method":"notifications/tools/list_changed","params":null}"#),
            Matched::Malformed
        );
        assert_eq!(
            m(r#"{"method":"notifications/tools/list_changed","method":"x"}"#),
            Matched::Malformed
        );
        assert_eq!(
            m(
                r#"{"params":{"uri":"file:///a","other":[1,{"a":2}]},"method":"notifications/resources/updated","x":1}"#
            ),
            Matched::Tokens(vec![1, 3])
        );
    }

    #[test]
    fn escaped_uris_match_too() {
        let mut i = Interests::default();
        i.watch(9, 0, vec!["file:///a b\"c".into()]);
        let json =
            r#"{"method":"notifications/resources/updated","params":{"uri":"file:///a b\"c"}}"#;
        assert_eq!(i.match_message(json.as_bytes()), Matched::Tokens(vec![9]));
    }

    #[test]
    fn unwatch_forgets_every_interest() {
        let mut i = interests();
        i.unwatch(1);
        i.unwatch(3);
        assert!(i.by_uri.is_empty());
        assert!(i.tools.is_empty());
        i.unwatch(2);
        assert!(i.is_empty());
    }

    #[test]
    fn batches_list_tokens_after_each_payload() {
        let mut b = IndexedBytes::default();
        push_notification(&mut b, b"{}", &[4, 5]);
        push_notification(&mut b, b"[]", &[6]);
        assert_eq!(b.words(), &[0, 2, 2, 4, 5, 2, 2, 1, 6]);
        assert_eq!(b.bytes(), b"{}[]");
    }
}
