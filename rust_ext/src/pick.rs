//! Borrowed, selective JSON reading: validate a whole document once (serde_json), keep only
//! the raw text of the top-level members asked for, and turn raw text into CEL values without
//! copying strings that have no escapes.

use cel::common::types::{CelBool, CelDouble, CelInt, CelNull, CelString, CelUInt};
use cel::common::value::Val;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value as Json;
use std::borrow::Cow;
use std::fmt;

/// Raw text of the members of a JSON object whose names are in `wanted` (later duplicates
/// win), one slot per wanted name; the whole text is validated. `None` when the text is not a
/// JSON object or not valid JSON: the caller then parses it fully (which reports the error or
/// handles the non-object).
pub fn pick<'a>(text: &'a [u8], wanted: &[String]) -> Option<Vec<Option<&'a str>>> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let slots = de::Deserializer::deserialize_map(&mut de, Top { wanted }).ok()?;
    de.end().ok()?;
    Some(slots)
}

/// Whether `text` is valid JSON (nothing is built).
pub fn is_json(text: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(text).is_ok()
}

struct Top<'w> {
    wanted: &'w [String],
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Vec<Option<&'de str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut slots = vec![None; self.wanted.len()];
        while let Some(name) = map.next_key_seed(Name)? {
            match self.wanted.iter().position(|w| *w == *name) {
                Some(i) => slots[i] = Some(map.next_value::<&'de RawValue>()?.get()),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(slots)
    }
}

/// A member name, borrowed when it has no escapes.
struct Name;

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

/// The text of a JSON string literal (already validated), unescaped only when needed.
pub fn string_of(raw: &str) -> Cow<'_, str> {
    let inner = &raw[1..raw.len() - 1];
    if inner.contains('\\') {
        Cow::Owned(serde_json::from_str::<String>(raw).unwrap_or_default())
    } else {
        Cow::Borrowed(inner)
    }
}

/// A JSON number as CEL: int when it fits i64, else uint when it fits u64, else double
/// (the same rules, on the same text, as converting a parsed `serde_json::Number`).
pub fn number_val(text: &str) -> Box<dyn Val + 'static> {
    if let Ok(i) = text.parse::<i64>() {
        Box::new(CelInt::from(i))
    } else if let Ok(u) = text.parse::<u64>() {
        Box::new(CelUInt::from(u))
    } else {
        Box::new(CelDouble::from(text.parse::<f64>().unwrap_or(f64::NAN)))
    }
}

/// Raw scalar text as a CEL value; `None` for an array or object.
pub fn scalar_val(raw: &str) -> Option<Box<dyn Val + '_>> {
    Some(match raw.as_bytes().first() {
        Some(b'"') => Box::new(CelString::from(string_of(raw))),
        Some(b't') => Box::new(CelBool::from(true)),
        Some(b'f') => Box::new(CelBool::from(false)),
        Some(b'n') => Box::new(CelNull),
        Some(b'[' | b'{') | None => return None,
        Some(_) => number_val(raw),
    })
}

/// Parse a container member in full (rare in conditions: lists for `in`, nested objects).
pub fn parse_container(raw: &str) -> Option<Json> {
    match raw.as_bytes().first() {
        Some(b'[' | b'{') => serde_json::from_str(raw).ok(),
        _ => None,
    }
}

/// What a payload field path (`customer.id`; objects only) holds, for idempotency keys.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyValue<'a> {
    /// Missing, or JSON null.
    Missing,
    /// A string (unescaped) or an integer (canonical decimal text).
    Text(Cow<'a, str>),
    /// Anything else, as raw JSON text, for the caller to render.
    Raw(&'a str),
}

/// `text` is not valid JSON.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidJson;

/// Walk `path` (segments already split) through nested objects of `text`.
pub fn key_at<'a>(text: &'a [u8], path: &[String]) -> Result<KeyValue<'a>, InvalidJson> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(KeyValue::Missing);
    };
    let raw = match pick(text, std::slice::from_ref(first)) {
        Some(slots) => slots[0],
        // Not an object (fine: nothing to find) or not JSON (an error).
        None if is_json(text) => return Ok(KeyValue::Missing),
        None => return Err(InvalidJson),
    };
    Ok(key_in(raw, rest))
}

/// The key below a top-level member's raw text (`None`: the member is absent), following
/// the remaining path segments through nested objects.
pub fn key_in<'a>(first: Option<&'a str>, rest: &[String]) -> KeyValue<'a> {
    let Some(mut raw) = first else {
        return KeyValue::Missing;
    };
    for segment in rest {
        if !raw.starts_with('{') {
            return KeyValue::Missing;
        }
        match pick(raw.as_bytes(), std::slice::from_ref(segment)).and_then(|s| s[0]) {
            Some(r) => raw = r,
            None => return KeyValue::Missing,
        }
    }
    match raw.as_bytes().first() {
        Some(b'n') => KeyValue::Missing,
        Some(b'"') => KeyValue::Text(string_of(raw)),
        Some(b'-' | b'0'..=b'9') if raw.bytes().all(|b| b == b'-' || b.is_ascii_digit()) => {
            let digits = raw.trim_start_matches('-');
            if digits.bytes().all(|b| b == b'0') {
                KeyValue::Text(Cow::Borrowed("0")) // "-0" is the integer 0
            } else {
                KeyValue::Text(Cow::Borrowed(raw))
            }
        }
        _ => KeyValue::Raw(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn picks_members_and_validates_everything() {
        let text = br#"{"a": 1, "b": {"x": [1, 2]}, "c": "s\"q", "a": 2.50, "skip": [true]}"#;
        let slots = pick(text, &names(&["a", "b", "c", "zz"])).unwrap();
        let got: Vec<Option<&str>> = slots;
        assert_eq!(
            got,
            vec![
                Some("2.50"),
                Some(r#"{"x": [1, 2]}"#),
                Some(r#""s\"q""#),
                None
            ]
        );
        assert!(pick(br#"{"a": 1, "b": tru}"#, &names(&["a"])).is_none());
        assert!(pick(br#"{"a": 1} x"#, &names(&["a"])).is_none());
        assert!(pick(b"[1]", &names(&["a"])).is_none());
        assert!(pick(br#"{"\u0061": 3}"#, &names(&["a"])).unwrap()[0].is_some());
    }

    #[test]
    fn scalars_convert_like_parsed_json() {
        assert_eq!(string_of(r#""abc""#), "abc");
        assert!(matches!(string_of(r#""abc""#), Cow::Borrowed(_)));
        assert_eq!(string_of(r#""a\nb\u00e9""#), "a\nb\u{e9}");
        for (text, want) in [
            ("12", "int"),
            ("-3", "int"),
            ("18446744073709551615", "uint"),
            ("1.5", "double"),
            ("1e400", "double"),
            ("123456789012345678901234567890", "double"),
        ] {
            assert_eq!(number_val(text).get_type().name(), want, "{text}");
        }
        assert!(scalar_val("[1]").is_none());
        assert_eq!(scalar_val("null").unwrap().get_type().name(), "null_type");
    }

    #[test]
    fn key_paths() {
        let text = br#"{"id": "a1", "n": -0, "m": 42, "f": 1.50, "b": true, "z": null,
                        "c": {"id": 7, "d": {"e": "deep"}}, "l": [1]}"#;
        let at = |p: &str| key_at(text, &names(&p.split('.').collect::<Vec<_>>()));
        assert_eq!(at("id"), Ok(KeyValue::Text("a1".into())));
        assert_eq!(at("n"), Ok(KeyValue::Text("0".into())));
        assert_eq!(at("m"), Ok(KeyValue::Text("42".into())));
        assert_eq!(at("f"), Ok(KeyValue::Raw("1.50")));
        assert_eq!(at("b"), Ok(KeyValue::Raw("true")));
        assert_eq!(at("z"), Ok(KeyValue::Missing));
        assert_eq!(at("c.id"), Ok(KeyValue::Text("7".into())));
        assert_eq!(at("c.d.e"), Ok(KeyValue::Text("deep".into())));
        assert_eq!(at("l.0"), Ok(KeyValue::Missing));
        assert_eq!(at("id.x"), Ok(KeyValue::Missing));
        assert_eq!(at("nope"), Ok(KeyValue::Missing));
        assert_eq!(key_at(b"[1]", &names(&["a"])), Ok(KeyValue::Missing));
        assert_eq!(key_at(b"{", &names(&["a"])), Err(InvalidJson));
    }
}
