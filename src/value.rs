//! Property values and their kinds, and how a numeric value is encoded in a record's
//! raw 64-bit word and in an order-preserving rank. A leaf: everything that stores,
//! checks or reports a value imports it, and it imports nothing of the crate.

use std::fmt;

/// The type of a property.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropKind {
    /// A signed 64-bit integer.
    Int,
    /// A finite 64-bit float.
    Float,
    /// A boolean.
    Bool,
}

impl fmt::Display for PropKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PropKind::Int => "int",
            PropKind::Float => "float",
            PropKind::Bool => "bool",
        })
    }
}

/// A property value, as given to a write or read back from a relation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// For an int property (or a float property, where it is taken as a float).
    Int(i64),
    /// For a float property; must be finite.
    Float(f64),
    /// For a bool property.
    Bool(bool),
}

impl Value {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bool(_) => "bool",
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(f64::from(v))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

/// Order-preserving key of a numeric value: a larger value has a larger rank.
pub(crate) fn rank(kind: PropKind, raw: u64) -> u64 {
    match kind {
        PropKind::Float => {
            if raw >> 63 == 1 {
                !raw
            } else {
                raw | (1 << 63)
            }
        }
        _ => raw ^ (1 << 63),
    }
}

/// The typed value of a raw numeric word.
pub(crate) fn numeric_value(kind: PropKind, raw: u64) -> Value {
    match kind {
        PropKind::Float => Value::Float(f64::from_bits(raw)),
        _ => Value::Int(raw as i64),
    }
}

pub(crate) fn raw_of(value: Value) -> u64 {
    match value {
        Value::Int(v) => v as u64,
        Value::Float(v) => v.to_bits(),
        Value::Bool(v) => u64::from(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_order_like_values() {
        let ints = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        for w in ints.windows(2) {
            assert!(rank(PropKind::Int, w[0] as u64) < rank(PropKind::Int, w[1] as u64));
        }
        let floats = [f64::MIN, -2.5, -1e-300, 0.0, 1e-300, 3.0, f64::MAX];
        for w in floats.windows(2) {
            assert!(rank(PropKind::Float, w[0].to_bits()) < rank(PropKind::Float, w[1].to_bits()));
        }
    }

    #[test]
    fn plain_numbers_and_bools_convert() {
        assert_eq!(Value::from(20), Value::Int(20));
        assert_eq!(Value::from(-3i64), Value::Int(-3));
        assert_eq!(Value::from(7u32), Value::Int(7));
        assert_eq!(Value::from(0.5), Value::Float(0.5));
        assert_eq!(Value::from(0.25f32), Value::Float(0.25));
        assert_eq!(Value::from(true), Value::Bool(true));
    }
}
