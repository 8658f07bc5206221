//! The API's JSON: a strict RFC 8259 reader that keeps what the API needs and a generic
//! reader loses (object keys in document order, so a schema's properties keep the
//! order given; duplicate keys refused; numbers read from their exact text, so
//! `-0` is the integer 0, an integer beyond `i64` keeps its digits, and a float is the
//! double nearest its text, never a neighbour), with the nesting depth bounded while
//! reading. Plus a small writer for responses.

use std::fmt::{self, Write};

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    /// A number written as an integer (no fraction, no exponent) that fits `i64`;
    /// `-0` is `Int(0)`.
    Int(i64),
    /// A number written as an integer beyond the `i64` range: its text, as written.
    BigInt(Box<str>),
    /// A number written with a fraction or an exponent: the double nearest its text.
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

/// Why a body is not accepted as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Arrays and objects nested deeper than the limit.
    TooDeep(usize),
    /// Not JSON: what is wrong and where (line and column, from 1).
    Malformed(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooDeep(max) => write!(f, "JSON nested deeper than {max} levels"),
            ParseError::Malformed(what) => write!(f, "malformed JSON: {what}"),
        }
    }
}

/// Objects with more keys than this check duplicates with a hash set (linear);
/// smaller ones by a scan, which is faster for them.
const SCAN_KEYS: usize = 16;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    max_depth: usize,
    max_keys: usize,
}

/// Parses a whole body: one value, surrounded by whitespace only; arrays and objects
/// nested at most `max_depth` deep, objects of at most `max_keys` keys (the reading
/// stops at the first key past it). Linear in the body's size.
pub(crate) fn parse(bytes: &[u8], max_depth: usize, max_keys: usize) -> Result<Json, ParseError> {
    let mut r = Reader {
        bytes,
        pos: 0,
        max_depth,
        max_keys,
    };
    r.ws();
    let value = r.value(0)?;
    r.ws();
    if r.pos != bytes.len() {
        return Err(r.error("trailing characters after the value"));
    }
    Ok(value)
}

impl Reader<'_> {
    fn error(&self, what: &str) -> ParseError {
        let upto = &self.bytes[..self.pos.min(self.bytes.len())];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = upto.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        ParseError::Malformed(format!("{what} at line {line} column {column}"))
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    fn literal(&mut self, word: &[u8], value: Json) -> Result<Json, ParseError> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, ParseError> {
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'n') => self.literal(b"null", Json::Null),
            Some(b't') => self.literal(b"true", Json::Bool(true)),
            Some(b'f') => self.literal(b"false", Json::Bool(false)),
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => {
                let depth = self.enter(depth)?;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth)?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return Err(self.error("expected ',' or ']'")),
                    }
                }
            }
            Some(b'{') => {
                let depth = self.enter(depth)?;
                self.object(depth)
            }
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn enter(&mut self, depth: usize) -> Result<usize, ParseError> {
        if depth >= self.max_depth {
            return Err(ParseError::TooDeep(self.max_depth));
        }
        self.pos += 1;
        Ok(depth + 1)
    }

    fn object(&mut self, depth: usize) -> Result<Json, ParseError> {
        let mut fields: Vec<(String, Json)> = Vec::new();
        let mut seen: Option<hashbrown::HashSet<String>> = None;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Obj(fields));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key string"));
            }
            let key_at = self.pos;
            if fields.len() == self.max_keys {
                return Err(self.error(&format!("an object has more than {} keys", self.max_keys)));
            }
            let key = self.string()?;
            let duplicate = match &mut seen {
                Some(set) => !set.insert(key.clone()),
                None => fields.iter().any(|(k, _)| *k == key),
            };
            if duplicate {
                self.pos = key_at;
                return Err(self.error(&format!("duplicate key {key:?}")));
            }
            self.ws();
            self.expect(b':', "expected ':'")?;
            self.ws();
            let value = self.value(depth)?;
            fields.push((key, value));
            if seen.is_none() && fields.len() > SCAN_KEYS {
                seen = Some(fields.iter().map(|(k, _)| k.clone()).collect());
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Obj(fields));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Json, ParseError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.error("a number may not have leading zeros"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("expected digits")),
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("expected digits after '.'"));
            }
            float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("expected digits in the exponent"));
            }
            float = true;
        }
        // Only ASCII digits, signs, '.' and 'e' were consumed.
        let text = std::str::from_utf8(&self.bytes[start..self.pos])
            .map_err(|_| self.error("invalid number"))?;
        if !float {
            return Ok(text
                .parse::<i64>()
                .map_or_else(|_| Json::BigInt(text.into()), Json::Int));
        }
        // std's parser rounds correctly: the nearest double to the text, ties to even.
        match text.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Json::Float(x)),
            _ => {
                self.pos = start;
                Err(self.error(&format!("number {text} is out of the float64 range")))
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let Some(chunk) = self.bytes.get(self.pos..self.pos + 4) else {
            return Err(self.error("unexpected end of input in a \\u escape"));
        };
        let mut v = 0u32;
        for &b in chunk {
            let d = char::from(b)
                .to_digit(16)
                .ok_or_else(|| self.error("invalid \\u escape"))?;
            v = v * 16 + d;
        }
        self.pos += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1; // the opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let run = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.extend_from_slice(&self.bytes[run..self.pos]);
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let c = self.unicode_escape()?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return Err(self.error("invalid escape")),
                    };
                    self.pos += 1;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                Some(_) => return Err(self.error("control character in a string")),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("invalid UTF-8 in a string"))
    }

    /// The character of a `\u` escape (after `\u`), surrogate pairs joined.
    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let hi = self.hex4()?;
        let code = match hi {
            0xD800..=0xDBFF => {
                if !self.bytes[self.pos..].starts_with(b"\\u") {
                    return Err(self.error("lone leading surrogate in a \\u escape"));
                }
                self.pos += 2;
                let lo = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&lo) {
                    return Err(self.error("invalid trailing surrogate in a \\u escape"));
                }
                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("lone trailing surrogate in a \\u escape")),
            c => c,
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))
    }
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
    use proptest::prelude::*;

    fn p(s: &str) -> Result<Json, ParseError> {
        parse(s.as_bytes(), 16, usize::MAX)
    }

    #[test]
    fn keeps_order_and_number_forms() {
        let j = p(r#"{"b": 1, "a": 2.0, "c": 18446744073709551615, "d": -3, "e": -0, "f": -0.0}"#)
            .unwrap();
        assert_eq!(
            j,
            Json::Obj(vec![
                ("b".into(), Json::Int(1)),
                ("a".into(), Json::Float(2.0)),
                ("c".into(), Json::BigInt("18446744073709551615".into())),
                ("d".into(), Json::Int(-3)),
                ("e".into(), Json::Int(0)),
                ("f".into(), Json::Float(-0.0)),
            ])
        );
        assert_eq!(p("-9223372036854775808").unwrap(), Json::Int(i64::MIN));
        assert_eq!(
            p("-9223372036854775809").unwrap(),
            Json::BigInt("-9223372036854775809".into())
        );
    }

    /// Postmortem: serde_json without `float_roundtrip` read 923.8829120510785 as its
    /// neighbour 923.8829120510784 (1 double in 10); std's parser rounds correctly.
    #[test]
    fn floats_read_as_the_nearest_double() {
        assert_eq!(
            p("923.8829120510785").unwrap(),
            Json::Float(923.882_912_051_078_5)
        );
        let mut out = String::new();
        write_f64(&mut out, 923.882_912_051_078_5);
        assert_eq!(out, "923.8829120510785");
    }

    /// An object past the key cap is refused at its first key too many: the rest of
    /// the body is never read (the error's column says where the reading stopped).
    #[test]
    fn key_cap_stops_the_reading() {
        let body: String = format!(
            "{{{}\"last\":1}}",
            (0..5000)
                .map(|i| format!("\"k{i}\":1,"))
                .collect::<String>()
        );
        let err = parse(body.as_bytes(), 16, 100).unwrap_err().to_string();
        assert!(err.contains("more than 100 keys"), "{err}");
        let column: usize = err.rsplit(' ').next().unwrap().parse().unwrap();
        let at_cap: usize = 1
            + (0..100)
                .map(|i| format!("\"k{i}\":1,").len())
                .sum::<usize>();
        assert_eq!(column, at_cap + 1, "{err}");
        assert!(column < body.len() / 10);
        // The cap counts keys of each object, not of the body.
        let nested = format!("[{}]", vec![r#"{"a":1,"b":2}"#; 500].join(","));
        assert!(parse(nested.as_bytes(), 16, 2).is_ok());
        assert!(parse(br#"{"a":1,"b":2,"c":3}"#, 16, 2).is_err());
    }

    #[test]
    fn refuses_duplicates_and_garbage() {
        let dup = p(r#"{"a": 1, "a": 2}"#).unwrap_err().to_string();
        assert!(dup.contains("duplicate key \"a\""), "{dup}");
        let many: String = (0..100).map(|i| format!("\"k{i}\":1,")).collect();
        let dup = p(&format!("{{{many}\"k7\":2}}")).unwrap_err().to_string();
        assert!(dup.contains("duplicate key \"k7\""), "{dup}");
        for bad in [
            "{",
            "1e400",
            "-1e400",
            "01",
            "1.",
            ".5",
            "1e",
            "+1",
            "[1,]",
            "{\"a\":1,}",
            "nul",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\x\"",
            "\"a\nb\"",
            "1 2",
            "",
            " ",
            "[1}",
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse(b"\"\xff\"", 16, usize::MAX).is_err());
        assert_eq!(
            p("\"\\ud83d\\ude00 \\u00e9\"").unwrap(),
            Json::Str("\u{1f600} \u{e9}".into())
        );
    }

    #[test]
    fn depth_is_bounded_while_reading() {
        assert!(parse(br#"{"a": "[[[[", "b": [[1]]}"#, 3, usize::MAX).is_ok());
        assert_eq!(
            parse(br#"{"b": [[1]]}"#, 2, usize::MAX),
            Err(ParseError::TooDeep(2))
        );
        let deep = [b'['; 100_000];
        assert_eq!(parse(&deep, 16, usize::MAX), Err(ParseError::TooDeep(16)));
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

    /// Ours against serde_json's `Value` on the same text (key order aside).
    fn same(ours: &Json, theirs: &serde_json::Value) -> bool {
        use serde_json::Value as V;
        match (ours, theirs) {
            (Json::Null, V::Null) => true,
            (Json::Bool(a), V::Bool(b)) => a == b,
            (Json::Int(a), V::Number(n)) => {
                n.as_i64() == Some(*a) || (*a == 0 && n.as_f64() == Some(0.0))
            }
            (Json::BigInt(t), V::Number(n)) => {
                n.as_u64().map(|u| u.to_string()).as_deref() == Some(&**t) || n.as_f64().is_some()
            }
            (Json::Float(a), V::Number(n)) => {
                n.as_f64().is_some_and(|b| (a - b).abs() <= a.abs() * 1e-15)
            }
            (Json::Str(a), V::String(b)) => a == b,
            (Json::Arr(a), V::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
            }
            (Json::Obj(a), V::Object(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same(v, w)))
            }
            _ => false,
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value as V;
        let leaf = prop_oneof![
            Just(V::Null),
            any::<bool>().prop_map(V::Bool),
            any::<i64>().prop_map(V::from),
            any::<u64>().prop_map(V::from),
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(V::from),
            ".{0,12}".prop_map(V::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(V::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..6)
                    .prop_map(|m| V::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every document serde_json writes reads back the same, compact or pretty.
        #[test]
        fn reads_what_serde_json_writes(v in arb_json()) {
            for text in [serde_json::to_string(&v).unwrap(), serde_json::to_string_pretty(&v).unwrap()] {
                let ours = parse(text.as_bytes(), 64, usize::MAX).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
                prop_assert!(same(&ours, &v), "{text}: {ours:?}");
            }
        }

        /// On any text from JSON's alphabet, ours and serde_json accept the same
        /// documents (but for duplicate keys, which only ours refuses).
        #[test]
        fn accepts_what_serde_json_accepts(
            text in proptest::string::string_regex(r#"[\[\]{}:,"\\ 0-9a-fA-F.eE+\-ntrulsu]{0,24}"#).unwrap()
        ) {
            let ours = parse(text.as_bytes(), 64, usize::MAX);
            let theirs = serde_json::from_str::<serde_json::Value>(&text);
            match (&ours, &theirs) {
                (Ok(o), Ok(t)) => prop_assert!(same(o, t), "{text}"),
                (Err(ParseError::Malformed(e)), Ok(_)) => prop_assert!(e.contains("duplicate key"), "{text}: {e}"),
                (Ok(_), Err(e)) => prop_assert!(false, "{text}: ours accepts, serde_json: {e}"),
                _ => {}
            }
        }

        /// Any double in shortest form reads back bit for bit, and prints the same.
        #[test]
        fn doubles_round_trip_exactly(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            prop_assume!(x.is_finite());
            let mut text = String::new();
            write_f64(&mut text, x);
            match p(&text) {
                Ok(Json::Float(y)) => prop_assert_eq!(y.to_bits(), bits, "{}", text),
                other => prop_assert!(false, "{text}: {other:?}"),
            }
        }
    }
}
