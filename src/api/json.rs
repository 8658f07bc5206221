//! A JSON value that keeps what the API needs and serde_json's `Value` loses: object
//! keys in document order (a schema's properties keep the order given), duplicate keys
//! refused, and whether a number was written as an integer or a float. Plus the
//! pre-parse checks (nesting depth) and a small writer for responses.

use std::fmt::{self, Write};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// An integer above `i64::MAX` (up to `u64::MAX`).
    BigInt(u64),
    /// A number written with a fraction or exponent, or too large for `u64`.
    Float(f64),
    Str(String),
    Arr(Vec<Json>),
    /// Keys in document order, unique.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// What kind of value this is, for error texts.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Int(_) | Json::BigInt(_) => "an integer",
            Json::Float(_) => "a float",
            Json::Str(_) => "a string",
            Json::Arr(_) => "an array",
            Json::Obj(_) => "an object",
        }
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(i64::try_from(v).map_or(Json::BigInt(v), Json::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Json::Arr(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out: Vec<(String, Json)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let value = map.next_value()?;
            out.push((key, value));
        }
        Ok(Json::Obj(out))
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

/// The deepest nesting of arrays and objects, scanning the raw bytes (strings are
/// skipped, escapes honoured); stops counting past `cap`.
pub(crate) fn depth(bytes: &[u8], cap: usize) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                if max > cap {
                    return max;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Parses a whole body.
pub(crate) fn parse(bytes: &[u8]) -> Result<Json, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON: {e}"))
}

/// Appends `s` as a JSON string literal.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a float the way JSON readers expect it: shortest round-trip form, always
/// with a fraction or exponent (`20.0`, not `20`), so it reads back as a float.
pub(crate) fn write_f64(out: &mut String, v: f64) {
    let start = out.len();
    let _ = write!(out, "{v:?}");
    // Rust's Debug already prints `20.0`, `1e300`, `1.5e-7`; NaN and infinities never
    // reach here (values and sums are finite), but stay valid JSON if they did.
    if !v.is_finite() {
        out.truncate(start);
        out.push_str("null");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_number_forms() {
        let j = parse(br#"{"b": 1, "a": 2.0, "c": 18446744073709551615, "d": -3}"#).unwrap();
        assert_eq!(
            j,
            Json::Obj(vec![
                ("b".into(), Json::Int(1)),
                ("a".into(), Json::Float(2.0)),
                ("c".into(), Json::BigInt(u64::MAX)),
                ("d".into(), Json::Int(-3)),
            ])
        );
    }

    #[test]
    fn refuses_duplicates_and_garbage() {
        assert!(
            parse(br#"{"a": 1, "a": 2}"#)
                .unwrap_err()
                .contains("duplicate key")
        );
        assert!(parse(b"{").is_err());
        assert!(parse(b"1e400").is_err());
        assert!(parse(b"\xff").is_err());
    }

    #[test]
    fn depth_skips_strings() {
        assert_eq!(depth(br#"{"a": "[[[[", "b": [[1]]}"#, 100), 3);
        assert_eq!(depth(br#"["\"[["]"#, 100), 1);
        assert_eq!(depth(&[b'['; 1000], 32), 33);
    }

    #[test]
    fn writes_valid_literals() {
        let mut s = String::new();
        write_str(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, r#""a\"b\\c\n\u0001é""#);
        let mut f = String::new();
        write_f64(&mut f, 20.0);
        f.push(' ');
        write_f64(&mut f, 1e300);
        f.push(' ');
        write_f64(&mut f, 0.1);
        assert_eq!(f, "20.0 1e300 0.1");
    }
}
