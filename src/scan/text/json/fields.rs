//! The fields a query reads from a JSON Lines record: found in place by the JSON check when they
//! are scalars (read exactly as serde_json reads them), else parsed by serde_json keeping only
//! those fields.

use std::ops::Range;

use serde::Deserialize;

use super::{Scratch, visit_json_value};
use crate::scan::value::{Number, Value, parse_plain_decimal};

/// A scalar JSON value as serde_json reads it, a string by its span (UTF-8, without escapes).
#[derive(Clone, Debug)]
pub(crate) enum JsonScalar {
    Null,
    Bool(bool),
    Number(Number),
    Text(Range<usize>),
}

impl JsonScalar {
    /// The value at `span` of `line` (checked JSON), when it is a string without escapes, a plain
    /// decimal (as [`parse_plain_decimal`] reads it) or a literal.
    fn of(line: &[u8], span: Range<usize>) -> Option<JsonScalar> {
        Some(match line[span.start] {
            b'"' => {
                let inner = span.start + 1..span.end - 1;
                let text = &line[inner.clone()];
                if text.contains(&b'\\') || std::str::from_utf8(text).is_err() {
                    return None;
                }
                JsonScalar::Text(inner)
            }
            b't' => JsonScalar::Bool(true),
            b'f' => JsonScalar::Bool(false),
            b'n' => JsonScalar::Null,
            b'{' | b'[' => return None,
            first => match parse_plain_decimal(&line[span])? {
                // serde_json reads `-0` as a float.
                Number::Int(0) if first == b'-' => JsonScalar::Number(Number::Float(-0.0)),
                number => JsonScalar::Number(number),
            },
        })
    }

    pub(crate) fn value<'a>(&self, line: &'a [u8]) -> Value<'a> {
        match self {
            JsonScalar::Null => Value::Null,
            JsonScalar::Bool(b) => Value::Bool(*b),
            JsonScalar::Number(number) => (*number).into(),
            JsonScalar::Text(span) => Value::Str(
                std::str::from_utf8(&line[span.clone()])
                    .expect("checked to be UTF-8")
                    .into(),
            ),
        }
    }
}

/// Checks `line` and reads the fields named in `names` (the last of duplicates) into `scalars`,
/// when it is an object whose fields read are all [`JsonScalar`]s and whose keys are UTF-8 without
/// escapes (which could hide a name). False leaves the line to [`parse_json_fields`], which also
/// explains a refusal.
pub(crate) fn find_scalar_fields(
    line: &[u8],
    names: &[String],
    scalars: &mut [Option<JsonScalar>],
    scratch: &mut Scratch,
) -> bool {
    for scalar in scalars.iter_mut() {
        *scalar = None;
    }
    if line.first() != Some(&b'{') {
        return false;
    }
    let mut all_read = true;
    let valid = visit_json_value(line, scratch, |key, value| {
        // serde_json refuses keys that are not UTF-8.
        let plain_key = key.iter().all(|&b| b < 0x80 && b != b'\\')
            || (!key.contains(&b'\\') && std::str::from_utf8(key).is_ok());
        if !plain_key {
            all_read = false;
        } else if let Some(at) = names
            .iter()
            .position(|name| same_bytes(name.as_bytes(), key))
        {
            scalars[at] = JsonScalar::of(line, value);
            all_read &= scalars[at].is_some();
        }
    });
    valid && all_read
}

/// Byte by byte: names are a few bytes, shorter than a call to `memcmp` takes.
#[inline(always)]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Parses `line` into `values` (one per name in `names`), skipping the other fields unallocated.
pub(crate) fn parse_json_fields(
    line: &[u8],
    names: &[String],
    values: &mut [Option<serde_json::Value>],
) -> Result<(), String> {
    use serde::de::DeserializeSeed;
    values.fill(None);
    let mut parser = serde_json::Deserializer::from_slice(line);
    Projection { names, values }
        .deserialize(&mut parser)
        .and_then(|()| parser.end())
        .map_err(|e| format!("invalid JSON: {e}"))
}

/// Deserializes a JSON object, keeping the fields named in `names` (the last of duplicates).
struct Projection<'a> {
    names: &'a [String],
    values: &'a mut [Option<serde_json::Value>],
}

impl<'de> serde::de::DeserializeSeed<'de> for Projection<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Projection<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match self.names.iter().position(|name| *name == key.0) {
                Some(at) => self.values[at] = Some(map.next_value()?),
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// An object key, borrowed from the line unless it has escapes.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(text.into()))
            }
            fn visit_str<E>(self, text: &str) -> Result<Key<'de>, E> {
                Ok(Key(text.to_string().into()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}
