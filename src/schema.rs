//! Relation types: the property schema of a `rel_id`, and the typed values it accepts.

use smallvec::SmallVec;

use crate::error::Error;
use crate::limits::{MAX_FLOAT, MAX_PROP_NAME_LEN, MAX_PROPS, MAX_TOP};
use crate::value::{PropKind, Value};

/// What a property is and which aggregates are kept for it.
///
/// # Examples
///
/// ```
/// use relcount::PropSpec;
///
/// let donate = PropSpec::int().top(10);
/// let like = PropSpec::int().sum();
/// let subscriber = PropSpec::bool();
/// # let _ = (donate, like, subscriber);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PropSpec {
    kind: PropKind,
    sum: bool,
    top: Option<u16>,
}

impl PropSpec {
    /// An int property, with neither sum nor top.
    #[must_use]
    pub fn int() -> Self {
        Self::of(PropKind::Int)
    }

    /// A float property, with neither sum nor top.
    #[must_use]
    pub fn float() -> Self {
        Self::of(PropKind::Float)
    }

    /// A bool property (bool properties have neither sum nor top).
    #[must_use]
    pub fn bool() -> Self {
        Self::of(PropKind::Bool)
    }

    /// A property of `kind`, with neither sum nor top.
    #[must_use]
    pub fn of(kind: PropKind) -> Self {
        PropSpec {
            kind,
            sum: false,
            top: None,
        }
    }

    /// Keeps the sum of the values (numeric properties only).
    #[must_use]
    pub fn sum(mut self) -> Self {
        self.sum = true;
        self
    }

    /// Keeps the top `n` initiators by value (numeric properties only, `n` in 1..=1000).
    #[must_use]
    pub fn top(mut self, n: u16) -> Self {
        self.top = Some(n);
        self
    }

    /// The property's type.
    #[must_use]
    pub fn kind(&self) -> PropKind {
        self.kind
    }

    /// Whether the sum is kept.
    #[must_use]
    pub fn has_sum(&self) -> bool {
        self.sum
    }

    /// The top size, when a top list is kept.
    #[must_use]
    pub fn top_size(&self) -> Option<u16> {
        self.top
    }
}

/// The definition of a relation type: its databases and property schema.
///
/// # Examples
///
/// ```
/// use relcount::{PropSpec, RelationType};
///
/// let seed = RelationType::new(3, 1, 2)
///     .prop("Donate", PropSpec::int().top(10))
///     .prop("Like", PropSpec::int().sum())
///     .prop("Subscriber", PropSpec::bool());
/// assert_eq!(seed.rel_id(), 3);
/// ```
///
/// Two definitions are equal when they have the same ids and the same properties,
/// whatever the order the properties were listed in (JSON objects are unordered); the
/// order given is kept for display.
#[derive(Debug, Clone)]
pub struct RelationType {
    rel_id: u32,
    db_a: u32,
    db_b: u32,
    props: Vec<(String, PropSpec)>,
}

impl RelationType {
    /// A relation type from database `db_a` (recipients) to `db_b` (initiators), with no
    /// properties yet.
    #[must_use]
    pub fn new(rel_id: u32, db_a: u32, db_b: u32) -> Self {
        RelationType {
            rel_id,
            db_a,
            db_b,
            props: Vec::new(),
        }
    }

    /// Adds a property; the order of the calls is the order of `props` in answers.
    #[must_use]
    pub fn prop(mut self, name: impl Into<String>, spec: PropSpec) -> Self {
        self.props.push((name.into(), spec));
        self
    }

    /// The relation type's id.
    #[must_use]
    pub fn rel_id(&self) -> u32 {
        self.rel_id
    }

    /// The database of the recipients (profile A).
    #[must_use]
    pub fn db_a(&self) -> u32 {
        self.db_a
    }

    /// The database of the initiators (profile B).
    #[must_use]
    pub fn db_b(&self) -> u32 {
        self.db_b
    }

    /// The properties, in definition order.
    pub fn props(&self) -> impl ExactSizeIterator<Item = (&str, PropSpec)> {
        self.props.iter().map(|(name, spec)| (name.as_str(), *spec))
    }
}

impl PartialEq for RelationType {
    fn eq(&self, other: &Self) -> bool {
        fn sorted(d: &RelationType) -> Vec<(&str, PropSpec)> {
            let mut props: Vec<(&str, PropSpec)> = d.props().collect();
            props.sort_by(|x, y| x.0.cmp(y.0));
            props
        }
        (self.rel_id, self.db_a, self.db_b) == (other.rel_id, other.db_a, other.db_b)
            && self.props.len() == other.props.len()
            && sorted(self) == sorted(other)
    }
}

impl Eq for RelationType {}

/// One property of a compiled schema.
#[derive(Debug)]
pub(crate) struct PropDef {
    pub(crate) name: Box<str>,
    pub(crate) spec: PropSpec,
    /// Index into a record's numeric slots (numeric properties only).
    pub(crate) slot: u8,
}

/// A validated relation type, shared by every counter of its `rel_id`.
#[derive(Debug)]
pub(crate) struct Schema {
    pub(crate) def: RelationType,
    pub(crate) props: Box<[PropDef]>,
    pub(crate) num_slots: u8,
    by_name: hashbrown::HashMap<Box<str>, u8>,
}

/// Validated property values of one call: `(property index, value)` in call order, each
/// value already of the property's type.
pub(crate) type Changes = SmallVec<[(u8, Value); 4]>;

impl Schema {
    pub(crate) fn compile(def: RelationType) -> Result<Schema, Error> {
        let invalid = |reason: String| Error::InvalidSchema {
            rel_id: def.rel_id,
            reason,
        };
        if def.props.len() > MAX_PROPS {
            return Err(invalid(format!(
                "at most {MAX_PROPS} properties, got {}",
                def.props.len()
            )));
        }
        let mut props = Vec::with_capacity(def.props.len());
        let mut by_name = hashbrown::HashMap::with_capacity(def.props.len());
        let mut num_slots = 0u8;
        for (i, (name, spec)) in def.props.iter().enumerate() {
            if name.is_empty() || name.len() > MAX_PROP_NAME_LEN {
                return Err(invalid(format!(
                    "property names must be 1 to {MAX_PROP_NAME_LEN} bytes, got {name:?}"
                )));
            }
            if spec.kind == PropKind::Bool && (spec.sum || spec.top.is_some()) {
                return Err(invalid(format!(
                    "bool property {name} can have neither sum nor top"
                )));
            }
            if let Some(n) = spec.top
                && (n == 0 || n > MAX_TOP)
            {
                return Err(invalid(format!(
                    "top of {name} must be 1 to {MAX_TOP}, got {n}"
                )));
            }
            let index = u8::try_from(i).map_err(|_| invalid("too many properties".into()))?;
            if by_name.insert(name.as_str().into(), index).is_some() {
                return Err(invalid(format!("property {name} is defined twice")));
            }
            let slot = num_slots;
            if spec.kind != PropKind::Bool {
                num_slots += 1;
            }
            props.push(PropDef {
                name: name.as_str().into(),
                spec: *spec,
                slot,
            });
        }
        Ok(Schema {
            def,
            props: props.into_boxed_slice(),
            num_slots,
            by_name,
        })
    }

    pub(crate) fn rel_id(&self) -> u32 {
        self.def.rel_id
    }

    pub(crate) fn db_a(&self) -> u32 {
        self.def.db_a
    }

    pub(crate) fn db_b(&self) -> u32 {
        self.def.db_b
    }

    /// Words of one stored relation record: presence and bools, then the numeric
    /// values (see `record::Record`).
    pub(crate) fn stride(&self) -> usize {
        1 + usize::from(self.num_slots)
    }

    /// The index of property `name`, in schema order.
    pub(crate) fn prop_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).map(|&i| usize::from(i))
    }

    /// Checks every weight against the schema and converts it to the property's type.
    ///
    /// Ints given for float properties become floats; `-0.0` becomes `0.0` (they are
    /// equal, and one zero keeps top lists and sums canonical).
    pub(crate) fn resolve<N: AsRef<str>>(&self, weights: &[(N, Value)]) -> Result<Changes, Error> {
        let mut out = Changes::with_capacity(weights.len());
        let mut seen = 0u32;
        for (name, value) in weights {
            let name = name.as_ref();
            let &index = self
                .by_name
                .get(name)
                .ok_or_else(|| Error::UnknownProperty {
                    rel_id: self.rel_id(),
                    name: name.into(),
                })?;
            if seen & (1 << index) != 0 {
                return Err(Error::DuplicateProperty { name: name.into() });
            }
            seen |= 1 << index;
            let kind = self.props[usize::from(index)].spec.kind;
            let wrong = || Error::WrongType {
                property: name.into(),
                expected: kind,
                got: value.type_name(),
            };
            let typed = match (kind, *value) {
                (PropKind::Int, Value::Int(v)) => Value::Int(v),
                // Taken as a float, rounded to the nearest f64 as JSON numbers are.
                (PropKind::Float, Value::Int(v)) => Value::Float(v as f64),
                (PropKind::Float, Value::Float(v)) if !v.is_finite() => {
                    return Err(Error::NotFinite {
                        property: name.into(),
                    });
                }
                (PropKind::Float, Value::Float(v)) if v.abs() > MAX_FLOAT => {
                    return Err(Error::FloatOverflow {
                        property: name.into(),
                    });
                }
                (PropKind::Float, Value::Float(v)) => Value::Float(v + 0.0),
                (PropKind::Bool, Value::Bool(v)) => Value::Bool(v),
                _ => return Err(wrong()),
            };
            out.push((index, typed));
        }
        Ok(out)
    }

    /// Two definitions are the same schema when their ids and their sets of properties
    /// match (see [`RelationType`]'s `PartialEq`).
    pub(crate) fn same_as(&self, def: &RelationType) -> bool {
        &self.def == def
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Schema {
        Schema::compile(
            RelationType::new(3, 1, 2)
                .prop("Donate", PropSpec::int().top(10))
                .prop("Like", PropSpec::int().sum())
                .prop("Subscriber", PropSpec::bool())
                .prop("Score", PropSpec::float().sum()),
        )
        .unwrap()
    }

    #[test]
    fn slots_skip_bools() {
        let s = seed();
        let slots: Vec<u8> = s.props.iter().map(|p| p.slot).collect();
        assert_eq!(slots, [0, 1, 2, 2]);
        assert_eq!(s.num_slots, 3);
    }

    #[test]
    fn prop_index_names_each_property_at_its_place() {
        let s = seed();
        for (i, def) in s.props.iter().enumerate() {
            assert_eq!(s.prop_index(&def.name), Some(i), "{}", def.name);
        }
        assert_eq!(s.prop_index("nope"), None);
    }

    #[test]
    fn resolve_converts_and_rejects() {
        let s = seed();
        let ok = s
            .resolve(&[("Score", Value::Int(2)), ("Donate", Value::Int(5))])
            .unwrap();
        assert_eq!(ok.as_slice(), &[(3, Value::Float(2.0)), (0, Value::Int(5))]);
        let neg_zero = s.resolve(&[("Score", Value::Float(-0.0))]).unwrap();
        assert!(matches!(neg_zero[0].1, Value::Float(z) if z.is_sign_positive()));
        assert_eq!(
            s.resolve(&[("Donate", Value::Float(1.5))]).unwrap_err(),
            Error::WrongType {
                property: "Donate".into(),
                expected: PropKind::Int,
                got: "float"
            }
        );
        assert!(matches!(
            s.resolve(&[("Score", Value::Float(f64::NAN))]),
            Err(Error::NotFinite { .. })
        ));
        assert!(matches!(
            s.resolve(&[("Score", Value::Float(1e300))]),
            Err(Error::FloatOverflow { .. })
        ));
        assert!(matches!(
            s.resolve(&[("Subscriber", Value::Int(1))]),
            Err(Error::WrongType { .. })
        ));
        assert!(matches!(
            s.resolve(&[("Like", Value::Bool(true))]),
            Err(Error::WrongType { .. })
        ));
        assert!(matches!(
            s.resolve(&[("Nope", Value::Int(1))]),
            Err(Error::UnknownProperty { .. })
        ));
        assert!(matches!(
            s.resolve(&[("Like", Value::Int(1)), ("Like", Value::Int(2))]),
            Err(Error::DuplicateProperty { .. })
        ));
    }

    /// Postmortem: `relations/define` with the same properties in another key order
    /// answered 412 "different schema"; schemas now compare as sets.
    #[test]
    fn schemas_compare_as_sets_of_properties() {
        let one = RelationType::new(3, 1, 2)
            .prop("Donate", PropSpec::int().top(10))
            .prop("Like", PropSpec::int().sum());
        let other = RelationType::new(3, 1, 2)
            .prop("Like", PropSpec::int().sum())
            .prop("Donate", PropSpec::int().top(10));
        assert_eq!(one, other);
        assert!(Schema::compile(one.clone()).unwrap().same_as(&other));
        let changed = RelationType::new(3, 1, 2)
            .prop("Like", PropSpec::int())
            .prop("Donate", PropSpec::int().top(10));
        assert_ne!(one, changed);
        let fewer = RelationType::new(3, 1, 2).prop("Like", PropSpec::int().sum());
        assert_ne!(one, fewer);
    }

    #[test]
    fn compile_rejects_bad_schemas() {
        let bad = [
            RelationType::new(1, 1, 2).prop("b", PropSpec::bool().sum()),
            RelationType::new(1, 1, 2).prop("t", PropSpec::int().top(0)),
            RelationType::new(1, 1, 2).prop("t", PropSpec::int().top(1001)),
            RelationType::new(1, 1, 2)
                .prop("x", PropSpec::int())
                .prop("x", PropSpec::float()),
            RelationType::new(1, 1, 2).prop("", PropSpec::int()),
        ];
        for def in bad {
            assert!(
                matches!(Schema::compile(def), Err(Error::InvalidSchema { .. })),
                "accepted"
            );
        }
        let many = (0..=MAX_PROPS).fold(RelationType::new(1, 1, 2), |d, i| {
            d.prop(format!("p{i}"), PropSpec::int())
        });
        assert!(Schema::compile(many).is_err());
    }
}
