//! Reading a message on the subscriptions channel: the two fields matching needs
//! (`method` and `params.uri`), borrowed from the message where they have no escapes.
//!
//! It owns what counts as a notification on the wire: a JSON object with a string
//! `method`, and an object `params` where present (SPEC §6: the channel's data is
//! untrusted). It must not copy the rest of the message, nor know who wants a
//! notification (`interests` does) or anything of Redis.

use std::borrow::Cow;

use serde::de::{Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The two fields matching needs, borrowed from the message where it has no escapes.
///
/// Read by hand rather than derived: serde's derived structs also accept a JSON array
/// (fields by position), so `["notifications/tools/list_changed"]` would match. Data on
/// the channel is untrusted (SPEC §6): only a JSON object with a string `method`, and
/// an object `params` where present, is a notification.
pub(super) struct Probe<'a> {
    pub(super) method: Cow<'a, str>,
    pub(super) params: Option<ProbeParams<'a>>,
}

pub(super) struct ProbeParams<'a> {
    pub(super) uri: Option<Cow<'a, str>>,
}

/// A JSON string, borrowed from the message when it has no escapes (serde's own
/// `Cow<str>` always copies).
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visit(std::marker::PhantomData))
    }
}

/// Reads a JSON object's fields: `read` takes the value of each key it knows (and says
/// so); the others are skipped.
fn visit_object<'de, A>(
    mut map: A,
    mut read: impl FnMut(&str, &mut A) -> Result<bool, A::Error>,
) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
{
    while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
        if !read(&key, &mut map)? {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(())
}

impl<'de: 'a, 'a> Deserialize<'de> for Probe<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Probe<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a notification object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Probe<'a>, A::Error> {
                let mut method: Option<Cow<'a, str>> = None;
                let mut params: Option<ProbeParams<'a>> = None;
                visit_object(map, |key, map| {
                    match key {
                        "method" if method.is_none() => {
                            method = Some(map.next_value::<Text<'a>>()?.0)
                        }
                        "params" if params.is_none() => params = Some(map.next_value()?),
                        "method" | "params" => return Err(A::Error::custom("duplicate field")),
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
                Ok(Probe {
                    method: method.ok_or_else(|| A::Error::missing_field("method"))?,
                    params,
                })
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ProbeParams<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = ProbeParams<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a params object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ProbeParams<'a>, A::Error> {
                let mut uri: Option<Option<Cow<'a, str>>> = None;
                visit_object(map, |key, map| {
                    match key {
                        "uri" if uri.is_none() => {
                            uri = Some(map.next_value::<Option<Text<'a>>>()?.map(|t| t.0))
                        }
                        "uri" => return Err(A::Error::custom("duplicate field")),
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
                Ok(ProbeParams { uri: uri.flatten() })
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}
