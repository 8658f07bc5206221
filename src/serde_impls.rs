//! `Serialize` (feature `serde`) for what reads return, in the platform's JSON shape
//! (the seed's `get_counter` page), for hosts that answer over an HTTP stack of their
//! own. The JSON layer ([`api`](crate::api)) writes the same shapes by hand; a test
//! (`tests/it/serde.rs`) checks that the two agree on random workloads.
//!
//! - A [`Counter`] is the `data` of `relations/get_counter`:
//!   `{"profile_id", "profile_xxh", "total", "props": {name: {"total", "top", "sum"}}}`,
//!   properties in schema order, `top` and `sum` `null` where the property keeps none.
//! - A [`Page`] is `relations/get`'s answer without the envelope's `error` and
//!   `error_text`: `{"data": [rows], "total_count"}`, each row
//!   `{"profile_id_a", "xxh_a", "profile_id_b", "xxh_b", "db_b", "props": {name: {"value"}}}`.
//! - A [`ProfileId`] is its string, a [`Value`] or a [`Sum`] its number or bool. An
//!   int sum beyond the `i64` and `u64` ranges (sums are `i128`) is written exactly by
//!   serializers that write text (`serde_json::to_string`); `serde_json::to_value`
//!   and `json!` cannot hold it and answer an error (`json!` panics on it), so write
//!   the envelope around the text, as below.
//! - Floats are the serializer's: serde_json writes shortest round-trip digits, as the
//!   JSON layer does, with `1e+16` where the JSON layer writes `1e16` (both parse to
//!   the same double).
//!
//! ```
//! use relcount::{Engine, PropSpec, RelationType};
//!
//! let engine = Engine::new();
//! engine.define(RelationType::new(3, 1, 2).prop("Like", PropSpec::int().sum()))?;
//! engine.attach(3, "a", "b", &[("Like", 2.into())])?;
//! let counter = engine.get_counter(3, "a")?;
//! let data = serde_json::to_string(&counter).expect("a counter serialises");
//! let answer = format!(r#"{{"data":{data},"error":0,"error_text":"Successful operation"}}"#);
//! assert!(answer.contains(r#""Like":{"total":1,"top":null,"sum":2}"#));
//! # Ok::<(), relcount::Error>(())
//! ```

use serde::ser::{Serialize, SerializeMap, SerializeSeq, SerializeStruct, Serializer};

use crate::accum::{Counter, PropCounter, Sum, TopItem};
use crate::engine::{Page, Row};
use crate::profile::id::{ProfileId, format_xxh};
use crate::value::Value;

impl Serialize for ProfileId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Value::Int(v) => s.serialize_i64(v),
            Value::Float(v) => s.serialize_f64(v),
            Value::Bool(v) => s.serialize_bool(v),
        }
    }
}

/// An int sum is written as an `i64` or a `u64` where it fits (every format takes
/// those), and as an `i128` only beyond: its exact digits through a serializer that
/// writes text (`serde_json::to_string`, `to_writer`); a format without 128-bit
/// integers, or `serde_json::to_value`, refuses it with an error, never a rounded value.
impl Serialize for Sum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Sum::Int(v) => match (i64::try_from(v), u64::try_from(v)) {
                (Ok(v), _) => s.serialize_i64(v),
                (_, Ok(v)) => s.serialize_u64(v),
                _ => s.serialize_i128(v),
            },
            Sum::Float(v) => s.serialize_f64(v),
        }
    }
}

impl Serialize for TopItem<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("TopItem", 2)?;
        m.serialize_field("profile_id", self.profile_id)?;
        m.serialize_field("value", &self.value)?;
        m.end()
    }
}

/// A top list, best first.
struct Top<'a>(PropCounter<'a>);

impl Serialize for Top<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.top() {
            None => s.serialize_none(),
            Some(top) => {
                let mut seq = s.serialize_seq(Some(top.len()))?;
                for item in top {
                    seq.serialize_element(&item)?;
                }
                seq.end()
            }
        }
    }
}

impl Serialize for PropCounter<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("PropCounter", 3)?;
        m.serialize_field("total", &self.total())?;
        m.serialize_field("top", &Top(*self))?;
        m.serialize_field("sum", &self.sum())?;
        m.end()
    }
}

/// A counter's properties, by name in schema order.
struct Props<'a>(&'a Counter);

impl Serialize for Props<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let props = self.0.props();
        let mut m = s.serialize_map(Some(props.len()))?;
        for p in props {
            m.serialize_entry(p.name(), &p)?;
        }
        m.end()
    }
}

impl Serialize for Counter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Counter", 4)?;
        m.serialize_field("profile_id", self.profile_id())?;
        m.serialize_field("profile_xxh", &format_xxh(self.profile_xxh()))?;
        m.serialize_field("total", &self.total())?;
        m.serialize_field("props", &Props(self))?;
        m.end()
    }
}

/// A row's values, each as `{"value": v}`.
struct RowProps<'a>(&'a [(String, Value)]);

/// `{"value": v}`.
struct Valued(Value);

impl Serialize for Valued {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Valued", 1)?;
        m.serialize_field("value", &self.0)?;
        m.end()
    }
}

impl Serialize for RowProps<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            m.serialize_entry(name, &Valued(*value))?;
        }
        m.end()
    }
}

/// A row with the recipient it belongs to (the platform repeats it in every row).
struct PageRow<'a> {
    page: &'a Page,
    row: &'a Row,
}

impl Serialize for PageRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Row", 6)?;
        m.serialize_field("profile_id_a", &self.page.profile_a)?;
        m.serialize_field("xxh_a", &format_xxh(self.page.xxh_a))?;
        m.serialize_field("profile_id_b", &self.row.profile_b)?;
        m.serialize_field("xxh_b", &format_xxh(self.row.xxh_b))?;
        m.serialize_field("db_b", &self.page.db_b)?;
        m.serialize_field("props", &RowProps(&self.row.props))?;
        m.end()
    }
}

/// A page's rows.
struct Rows<'a>(&'a Page);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let page = self.0;
        let mut seq = s.serialize_seq(Some(page.rows.len()))?;
        for row in &page.rows {
            seq.serialize_element(&PageRow { page, row })?;
        }
        seq.end()
    }
}

impl Serialize for Page {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Page", 2)?;
        m.serialize_field("data", &Rows(self))?;
        m.serialize_field("total_count", &self.total_count)?;
        m.end()
    }
}
