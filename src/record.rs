//! One relation's property values, packed, and how each write kind computes the next ones.

use smallvec::{SmallVec, smallvec};

use crate::error::Error;
use crate::limits::MAX_FLOAT;
use crate::schema::{Changes, Schema};
use crate::value::{PropKind, Value, numeric_value, raw_of};

/// The values of one relation, as words (a target stores word 0 in its flags column,
/// packed to the schema's size, and the others in its numeric column).
///
/// Word 0 holds the presence bits (low half: bit `i` says property `i` has a value) and
/// the bool values (high half: bit `i` holds bool property `i`). Then one raw 64-bit
/// word per numeric property (an `i64` or the bits of an `f64`), at the property's
/// `slot`: [`Schema::stride`] words in all, inline for up to two numeric properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record(SmallVec<[u64; 3]>);

/// A record borrowed from where it is stored (a target's packed columns): its word 0
/// (presence and bools, as [`Record`]'s), then its numeric words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordRef<'a> {
    head: u64,
    nums: &'a [u64],
}

/// The three writes that set values (detach removes the record instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteKind {
    /// Replace every value with the given ones.
    Attach,
    /// Add deltas to numeric values (unset counts as 0); set bools as given.
    Strengthen,
    /// Overwrite the given values, keep the others.
    Edit,
}

impl<'a> RecordRef<'a> {
    /// The record whose word 0 is `head` and numeric words `nums` (the
    /// [`Schema::stride`] words but the first).
    pub(crate) fn new(head: u64, nums: &'a [u64]) -> Self {
        RecordRef { head, nums }
    }

    fn present(self) -> u64 {
        self.head & u64::from(u32::MAX)
    }

    /// The value of property `index`, if it has one.
    pub(crate) fn get(self, schema: &Schema, index: usize) -> Option<Value> {
        if self.present() & (1 << index) == 0 {
            return None;
        }
        let prop = &schema.props[index];
        Some(match prop.spec.kind() {
            PropKind::Bool => Value::Bool(self.head & (1 << (32 + index)) != 0),
            kind => numeric_value(kind, self.nums[usize::from(prop.slot)]),
        })
    }

    /// The raw word of numeric property `index`, if it has a value.
    pub(crate) fn raw(self, schema: &Schema, index: usize) -> Option<u64> {
        (self.present() & (1 << index) != 0)
            .then(|| self.nums[usize::from(schema.props[index].slot)])
    }

    /// Whether bool property `index` is set and true.
    pub(crate) fn is_true(self, index: usize) -> bool {
        self.present() & (self.head >> 32) & (1 << index) != 0
    }

    /// Its word 0: presence bits (low half) and bool values (high half).
    pub(crate) fn head(self) -> u64 {
        self.head
    }

    /// Its numeric words, by slot.
    pub(crate) fn nums(self) -> &'a [u64] {
        self.nums
    }

    /// An owned copy.
    pub(crate) fn to_record(self) -> Record {
        let mut words = SmallVec::with_capacity(1 + self.nums.len());
        words.push(self.head);
        words.extend_from_slice(self.nums);
        Record(words)
    }
}

impl Record {
    fn empty(schema: &Schema) -> Record {
        Record(smallvec![0; schema.stride()])
    }

    /// The record, borrowed.
    pub(crate) fn view(&self) -> RecordRef<'_> {
        RecordRef::new(self.0[0], &self.0[1..])
    }

    /// The value of property `index`, if it has one.
    pub(crate) fn get(&self, schema: &Schema, index: usize) -> Option<Value> {
        self.view().get(schema, index)
    }

    /// The raw word of numeric property `index`, if it has a value.
    pub(crate) fn raw(&self, schema: &Schema, index: usize) -> Option<u64> {
        self.view().raw(schema, index)
    }

    /// Whether bool property `index` is set and true.
    pub(crate) fn is_true(&self, index: usize) -> bool {
        self.view().is_true(index)
    }

    fn set(&mut self, schema: &Schema, index: usize, value: Value) {
        self.0[0] |= 1 << index;
        match value {
            Value::Bool(v) => {
                if v {
                    self.0[0] |= 1 << (32 + index);
                } else {
                    self.0[0] &= !(1 << (32 + index));
                }
            }
            numeric => self.0[1 + usize::from(schema.props[index].slot)] = raw_of(numeric),
        }
    }

    /// The record a write of `kind` with `changes` makes of `old` (None: no relation).
    ///
    /// # Errors
    ///
    /// A strengthen that takes an int out of i64, or a float out of the finite range.
    pub(crate) fn next(
        schema: &Schema,
        old: Option<RecordRef<'_>>,
        kind: WriteKind,
        changes: &Changes,
    ) -> Result<Record, Error> {
        let mut rec = match (kind, old) {
            (WriteKind::Attach, _) | (_, None) => Record::empty(schema),
            (_, Some(old)) => old.to_record(),
        };
        for &(index, value) in changes {
            let index = usize::from(index);
            let value = match (kind, value) {
                (WriteKind::Strengthen, Value::Int(delta)) => {
                    let Value::Int(cur) = rec.get(schema, index).unwrap_or(Value::Int(0)) else {
                        unreachable!("resolved values have the property's type")
                    };
                    Value::Int(cur.checked_add(delta).ok_or_else(|| Error::IntOverflow {
                        property: schema.props[index].name.to_string(),
                    })?)
                }
                (WriteKind::Strengthen, Value::Float(delta)) => {
                    let cur = match rec.get(schema, index) {
                        Some(Value::Float(cur)) => cur,
                        _ => 0.0,
                    };
                    let sum = cur + delta;
                    if sum.abs() > MAX_FLOAT {
                        return Err(Error::FloatOverflow {
                            property: schema.props[index].name.to_string(),
                        });
                    }
                    Value::Float(sum + 0.0)
                }
                (_, value) => value,
            };
            rec.set(schema, index, value);
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{PropSpec, RelationType};

    fn schema() -> Schema {
        Schema::compile(
            RelationType::new(1, 1, 2)
                .prop("i", PropSpec::int())
                .prop("b", PropSpec::bool())
                .prop("f", PropSpec::float()),
        )
        .unwrap()
    }

    #[test]
    fn write_kinds() {
        let s = schema();
        let ch = |v: &[(u8, Value)]| Changes::from_slice(v);
        let a = Record::next(
            &s,
            None,
            WriteKind::Attach,
            &ch(&[(0, Value::Int(5)), (1, Value::Bool(false))]),
        )
        .unwrap();
        assert_eq!(a.get(&s, 0), Some(Value::Int(5)));
        assert_eq!(a.get(&s, 1), Some(Value::Bool(false)));
        assert_eq!(a.get(&s, 2), None);
        assert!(!a.is_true(1));
        let st = Record::next(
            &s,
            Some(a.view()),
            WriteKind::Strengthen,
            &ch(&[(0, Value::Int(-7)), (2, Value::Float(1.5))]),
        )
        .unwrap();
        assert_eq!(st.get(&s, 0), Some(Value::Int(-2)));
        assert_eq!(st.get(&s, 2), Some(Value::Float(1.5)));
        assert_eq!(st.get(&s, 1), Some(Value::Bool(false)));
        let ed = Record::next(
            &s,
            Some(st.view()),
            WriteKind::Edit,
            &ch(&[(1, Value::Bool(true))]),
        )
        .unwrap();
        assert!(ed.is_true(1));
        assert_eq!(ed.get(&s, 0), Some(Value::Int(-2)));
        let re = Record::next(&s, Some(ed.view()), WriteKind::Attach, &ch(&[])).unwrap();
        assert_eq!(re, Record::empty(&s));
        let max = Record::next(
            &s,
            None,
            WriteKind::Attach,
            &ch(&[(0, Value::Int(i64::MAX))]),
        )
        .unwrap();
        assert!(matches!(
            Record::next(
                &s,
                Some(max.view()),
                WriteKind::Strengthen,
                &ch(&[(0, Value::Int(1))])
            ),
            Err(Error::IntOverflow { .. })
        ));
        let big = Record::next(
            &s,
            None,
            WriteKind::Attach,
            &ch(&[(2, Value::Float(MAX_FLOAT))]),
        )
        .unwrap();
        assert!(matches!(
            Record::next(
                &s,
                Some(big.view()),
                WriteKind::Strengthen,
                &ch(&[(2, Value::Float(1e280))])
            ),
            Err(Error::FloatOverflow { .. })
        ));
    }
}
