//! Calls as they cross from JavaScript: one tick's calls in one crossing, copied out of
//! V8 on the JavaScript thread with as little work as possible and taken apart on tokio.
//!
//! JavaScript hands over `[id, code, argCount]` triples, the length of every argument and
//! all arguments concatenated into one string. The JavaScript thread only copies these
//! out of V8 (two typed arrays and one UTF-16 copy of one flat string, no encoding);
//! splitting the text, encoding it as UTF-8 and building the calls happen on the tokio
//! thread. Reading each argument separately as UTF-8 cost the event loop three
//! Node-API calls, one allocation and an encoding pass per string, about a quarter of
//! what a `send` cost it. UTF-16 rather than UTF-8 because V8 copies a string out as
//! UTF-16 with plain copies, and because a string that was used as a property key (a
//! session id, say) makes a concatenation two-byte, which V8 writes as UTF-8 one
//! character at a time.
//!
//! Calls stay `(id, code, args)` here: what a code means belongs to the managers (the
//! dispatcher builds each call with the decoder `lib.rs` hands it, see
//! `operation::Decode`), so this module must not import any other of the crate.

use napi::bindgen_prelude::{FromNapiValue, TypeName, ValidateNapiValue, ValueType};
use napi::{check_status, sys};

/// A JavaScript string copied out as UTF-16.
pub struct JsText(pub Vec<u16>);

impl TypeName for JsText {
    fn type_name() -> &'static str {
        "string"
    }

    fn value_type() -> ValueType {
        ValueType::String
    }
}

impl ValidateNapiValue for JsText {}

impl FromNapiValue for JsText {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        // napi writes a NUL after the text.
        let mut text: Vec<u16> = Vec::with_capacity(utf16_len(env, value)? + 1);
        let mut written = 0usize;
        check_status!(sys::napi_get_value_string_utf16(
            env,
            value,
            text.as_mut_ptr(),
            text.capacity(),
            &mut written
        ))?;
        text.set_len(written);
        Ok(JsText(text))
    }
}

/// A string's length in UTF-16 units: O(1), asked without a buffer.
unsafe fn utf16_len(env: sys::napi_env, value: sys::napi_value) -> napi::Result<usize> {
    let mut units = 0usize;
    check_status!(sys::napi_get_value_string_utf16(
        env,
        value,
        std::ptr::null_mut(),
        0,
        &mut units
    ))?;
    Ok(units)
}

/// A call's id, code and argument lengths, borrowed from [`JsCalls::words`].
type CallHead<'a> = (u32, u32, &'a [u32]);

/// One tick's calls, as JavaScript handed them over.
pub struct JsCalls {
    /// `[id, code, argCount, …argument lengths in UTF-16 units]` per call.
    pub words: Vec<u32>,
    /// The arguments, concatenated.
    pub text: Vec<u16>,
}

impl JsCalls {
    /// Each call's `(id, code, argument lengths)` as far as the words can be read, and
    /// whether they were read to their end (a call cut short keeps its id, no lengths).
    fn heads(&self) -> (Vec<CallHead<'_>>, bool) {
        let mut heads = Vec::new();
        let mut rest = self.words.as_slice();
        while let [id, code, argc, after @ ..] = rest {
            let Some((lengths, after)) = after.split_at_checked(*argc as usize) else {
                heads.push((*id, *code, &[][..]));
                return (heads, false);
            };
            heads.push((*id, *code, lengths));
            rest = after;
        }
        (heads, rest.is_empty())
    }

    /// The ids of every call that can be read, e.g. to fail them all.
    pub fn ids(&self) -> Vec<u32> {
        self.heads().0.into_iter().map(|(id, _, _)| id).collect()
    }

    /// Each call as `(id, code, args)`, taking the text; `None` when the words or the
    /// text are malformed (a bug on the JavaScript side: the caller fails every call).
    pub fn split(&mut self) -> Option<Vec<(u32, u32, Vec<String>)>> {
        let text = std::mem::take(&mut self.text);
        let (heads, whole) = self.heads();
        if !whole {
            return None;
        }
        let mut rest = text.as_slice();
        let calls = heads
            .into_iter()
            .map(|(id, code, lengths)| Some((id, code, take_args(&mut rest, lengths)?)))
            .collect::<Option<Vec<_>>>()?;
        rest.is_empty().then_some(calls)
    }
}

/// Splits concatenated UTF-16 `text` into strings of the given `lengths`, each encoded
/// as UTF-8 on its own (a lone surrogate becomes U+FFFD, as V8 itself would write it).
pub fn split_args(text: &[u16], lengths: &[u32]) -> Option<Vec<String>> {
    let mut rest = text;
    let args = take_args(&mut rest, lengths)?;
    rest.is_empty().then_some(args)
}

/// Takes strings of the given `lengths` off the front of `text`.
fn take_args(text: &mut &[u16], lengths: &[u32]) -> Option<Vec<String>> {
    lengths
        .iter()
        .map(|&units| {
            let (arg, after) = text.split_at_checked(units as usize)?;
            *text = after;
            Some(utf8(arg))
        })
        .collect()
}

/// UTF-16 to UTF-8: ASCII (JSON, ids) by narrowing each unit, the rest by the standard
/// library.
fn utf8(units: &[u16]) -> String {
    // An OR over every unit (no early exit) compiles to vector code.
    if units.iter().fold(0, |all, &unit| all | unit) < 0x80 {
        let bytes: Vec<u8> = units.iter().map(|&unit| unit as u8).collect();
        // SAFETY: every byte is ASCII, so valid UTF-8.
        unsafe { String::from_utf8_unchecked(bytes) }
    } else {
        String::from_utf16_lossy(units)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What JavaScript sends for these arguments: `args.join('')` and `s.length`.
    fn joined(args: &[&str]) -> (Vec<u16>, Vec<u32>) {
        let text = args.iter().flat_map(|a| a.encode_utf16()).collect();
        let lengths = args
            .iter()
            .map(|a| a.encode_utf16().count() as u32)
            .collect();
        (text, lengths)
    }

    #[test]
    fn arguments_come_back_whole_in_any_script() {
        let args = [
            "",
            "plain",
            "with\0nul",
            "ünïcödé",
            "emoji 🙂 and 𝄞",
            "",
            "日本語",
        ];
        let (text, lengths) = joined(&args);
        assert_eq!(split_args(&text, &lengths).unwrap(), args);
    }

    #[test]
    fn lone_surrogates_read_as_v8_writes_them() {
        // "a" + the high half of 🙂, then its low half + "b": two arguments, never paired.
        let text = [0x61, 0xD83D, 0xDE42, 0x62];
        assert_eq!(
            split_args(&text, &[2, 2]).unwrap(),
            ["a\u{FFFD}", "\u{FFFD}b"]
        );
        assert_eq!(split_args(&text, &[1, 2, 1]).unwrap(), ["a", "🙂", "b"]);
    }

    #[test]
    fn text_that_does_not_match_the_lengths_is_refused() {
        let (text, _) = joined(&["abc", "de"]);
        assert!(split_args(&text, &[3]).is_none());
        assert!(split_args(&text, &[2, 4]).is_none());
        assert!(split_args(&text, &[3, 2, 1]).is_none());
        assert_eq!(split_args(&text, &[3, 2, 0]).unwrap(), ["abc", "de", ""]);
    }

    #[test]
    fn calls_take_their_own_arguments() {
        let (text, lengths) = joined(&["s1", "{\"a\":1}", "s2"]);
        let words = vec![
            7, 1, 2, lengths[0], lengths[1], 8, 2, 1, lengths[2], 9, 3, 0,
        ];
        let mut calls = JsCalls {
            words: words.clone(),
            text: text.clone(),
        };
        assert_eq!(calls.ids(), [7, 8, 9]);
        let split = calls.split().unwrap();
        assert_eq!(split[0], (7, 1, vec!["s1".into(), "{\"a\":1}".into()]));
        assert_eq!(split[1], (8, 2, vec!["s2".into()]));
        assert_eq!(split[2], (9, 3, vec![]));
        // Words ending inside a call, or text longer than the lengths, are refused; the
        // ids that can be read are still there to fail.
        let mut cut = JsCalls {
            words: words[..8].to_vec(),
            text: text.clone(),
        };
        assert_eq!(cut.ids(), [7, 8]);
        assert!(cut.split().is_none());
        let mut short = JsCalls {
            words: vec![7, 1, 1, 2],
            text,
        };
        assert!(short.split().is_none());
    }
}
