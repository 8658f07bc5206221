//! The published counters of one `(rel_id, profile A)`, and the public [`Counter`] view.

use std::fmt;
use std::sync::Arc;

use crate::accum::exact_sum::ExactSum;
use crate::accum::top::TopEntry;
use crate::profile::Profile;
use crate::profile_id::ProfileId;
use crate::schema::{PropDef, Schema};
use crate::value::{PropKind, Value};

/// The counters of one target, immutable once published: a writer builds the next
/// one and swaps it in, so a reader holding one sees a single consistent moment. The
/// relations themselves stay with the writer (`accum::target`).
#[derive(Debug)]
pub(crate) struct View {
    pub(crate) schema: Arc<Schema>,
    pub(crate) profile: Arc<Profile>,
    /// Relations of the target.
    pub(crate) total: u64,
    pub(crate) props: Box<[PropState]>,
}

/// The counters of one property.
#[derive(Debug, Clone)]
pub(crate) struct PropState {
    /// Numeric: relations with a value. Bool: relations where it is true.
    pub(crate) total: u64,
    pub(crate) sum: SumState,
    /// Best first; `None` when the property keeps no top. Shared between successive
    /// views until a write changes it.
    pub(crate) top: Option<Arc<[TopEntry]>>,
}

/// The running sum of one property.
#[derive(Debug, Clone)]
pub(crate) enum SumState {
    /// The property keeps no sum.
    Off,
    /// Exact: |sum| < 2^63 * 2^64 for any number of relations a machine can hold.
    Int(WideInt),
    /// Exact expansion, and its correctly rounded value (boxed: float sums are rarer,
    /// and this keeps every property's counters at 48 bytes).
    Float(Box<(ExactSum, f64)>),
}

/// An `i128` stored as two `u64` halves: the same value, but 8-byte aligned, so a
/// property's counters do not grow to 16-byte alignment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WideInt([u64; 2]);

impl WideInt {
    pub(crate) fn get(self) -> i128 {
        (i128::from(self.0[1] as i64) << 64) | i128::from(self.0[0])
    }

    pub(crate) fn set(&mut self, v: i128) {
        self.0 = [v as u64, (v >> 64) as u64];
    }
}

impl View {
    /// Zeroed counters of `profile` for `schema`.
    pub(crate) fn empty(schema: &Arc<Schema>, profile: &Arc<Profile>) -> View {
        let props = schema
            .props
            .iter()
            .map(|def| PropState {
                total: 0,
                sum: match (def.spec.has_sum(), def.spec.kind()) {
                    (false, _) | (_, PropKind::Bool) => SumState::Off,
                    (true, PropKind::Int) => SumState::Int(WideInt::default()),
                    (true, PropKind::Float) => {
                        SumState::Float(Box::new((ExactSum::default(), 0.0)))
                    }
                },
                top: def.spec.top_size().map(|_| Arc::from(Vec::new())),
            })
            .collect();
        View {
            schema: Arc::clone(schema),
            profile: Arc::clone(profile),
            total: 0,
            props,
        }
    }
}

/// A sum as read from a counter: exact for int properties, correctly rounded for float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sum {
    /// The exact sum of an int property's values.
    Int(i128),
    /// The exact sum of a float property's values, rounded to the nearest `f64`.
    Float(f64),
}

/// A consistent snapshot of one profile's counters for one relation type.
///
/// Reading it never blocks a writer, and later writes do not change it: it is the state
/// right after one write (see the crate docs, *Consistency*). Cloning is cheap.
///
/// # Examples
///
/// ```
/// use relcount::{Engine, PropSpec, RelationType, Sum, Value};
///
/// let engine = Engine::new();
/// engine.define(RelationType::new(3, 1, 2).prop("Like", PropSpec::int().sum()))?;
/// engine.attach(3, "a", "b", &[("Like", Value::Int(2))])?;
/// let counter = engine.get_counter(3, "a")?;
/// assert_eq!(counter.total(), 1);
/// assert_eq!(counter.prop("Like").unwrap().sum(), Some(Sum::Int(2)));
/// # Ok::<(), relcount::Error>(())
/// ```
#[derive(Clone)]
pub struct Counter {
    view: Arc<View>,
}

impl Counter {
    pub(crate) fn new(view: Arc<View>) -> Self {
        Counter { view }
    }

    pub(crate) fn view(&self) -> &View {
        &self.view
    }

    /// The relation type.
    #[must_use]
    pub fn rel_id(&self) -> u32 {
        self.view.schema.rel_id()
    }

    /// The profile's id.
    #[must_use]
    pub fn profile_id(&self) -> &ProfileId {
        &self.view.profile.id
    }

    /// The profile's XXH64 (print it with [`format_xxh`](crate::format_xxh)).
    #[must_use]
    pub fn profile_xxh(&self) -> u64 {
        self.view.profile.xxh
    }

    /// Relations attached to the profile for this relation type.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.view.total
    }

    /// Every property of the schema, in schema order.
    pub fn props(&self) -> impl ExactSizeIterator<Item = PropCounter<'_>> {
        self.view
            .schema
            .props
            .iter()
            .zip(self.view.props.iter())
            .map(|(def, state)| PropCounter { def, state })
    }

    /// The property called `name`, found through the schema's name map (O(1)); `None`
    /// when the relation type has no such property.
    #[must_use]
    pub fn prop(&self, name: &str) -> Option<PropCounter<'_>> {
        let i = self.view.schema.prop_index(name)?;
        Some(PropCounter {
            def: &self.view.schema.props[i],
            state: &self.view.props[i],
        })
    }

    /// The top list of property `name`, best first: `None` when the relation type has
    /// no such property or the property keeps no top list. Short for
    /// `prop(name)?.top()`.
    ///
    /// # Examples
    ///
    /// ```
    /// use relcount::{Engine, PropSpec, RelationType};
    ///
    /// let engine = Engine::new();
    /// engine.define(RelationType::new(3, 1, 2).prop("Donate", PropSpec::int().top(10)))?;
    /// engine.attach(3, "a", "b1", &[("Donate", 20.into())])?;
    /// engine.attach(3, "a", "b2", &[("Donate", 5.into())])?;
    /// let counter = engine.get_counter(3, "a")?;
    /// let top: Vec<_> = counter.top("Donate").into_iter().flatten().map(|t| t.profile_id.to_string()).collect();
    /// assert_eq!(top, ["b1", "b2"]);
    /// assert!(counter.top("Like").is_none());
    /// # Ok::<(), relcount::Error>(())
    /// ```
    #[must_use]
    pub fn top(&self, name: &str) -> Option<impl ExactSizeIterator<Item = TopItem<'_>>> {
        self.prop(name)?.top()
    }

    /// The sum of property `name`: `None` when the relation type has no such property
    /// or the property keeps no sum. Short for `prop(name)?.sum()`.
    #[must_use]
    pub fn sum(&self, name: &str) -> Option<Sum> {
        self.prop(name)?.sum()
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counter")
            .field("rel_id", &self.rel_id())
            .field("profile_id", self.profile_id())
            .field("total", &self.total())
            .field("props", &self.props().collect::<Vec<_>>())
            .finish()
    }
}

/// The counters of one property within a [`Counter`].
#[derive(Clone, Copy)]
pub struct PropCounter<'a> {
    def: &'a PropDef,
    state: &'a PropState,
}

impl<'a> PropCounter<'a> {
    /// The property's name.
    #[must_use]
    pub fn name(&self) -> &'a str {
        &self.def.name
    }

    /// The property's type.
    #[must_use]
    pub fn kind(&self) -> PropKind {
        self.def.spec.kind()
    }

    /// Numeric: relations in which the property has a value. Bool: relations in which it
    /// is true.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.state.total
    }

    /// The sum of the values, when the property keeps one.
    #[must_use]
    pub fn sum(&self) -> Option<Sum> {
        match &self.state.sum {
            SumState::Off => None,
            SumState::Int(s) => Some(Sum::Int(s.get())),
            SumState::Float(f) => Some(Sum::Float(f.1)),
        }
    }

    /// The top initiators, best first, when the property keeps a top list.
    #[must_use]
    pub fn top(&self) -> Option<impl ExactSizeIterator<Item = TopItem<'a>> + use<'a>> {
        let kind = self.kind();
        self.state.top.as_deref().map(move |entries| {
            entries.iter().map(move |e| TopItem {
                profile_id: &e.profile.id,
                value: e.value(kind),
            })
        })
    }
}

impl fmt::Debug for PropCounter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PropCounter")
            .field("name", &self.name())
            .field("total", &self.total())
            .field("sum", &self.sum())
            .field("top", &self.top().map(Iterator::collect::<Vec<_>>))
            .finish()
    }
}

/// One entry of a top list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopItem<'a> {
    /// The initiator (database B) profile.
    pub profile_id: &'a ProfileId,
    /// Its value of the property.
    pub value: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_int_holds_every_i128() {
        for v in [
            0,
            1,
            -1,
            i128::MAX,
            i128::MIN,
            i128::from(i64::MIN) * 3,
            1 << 100,
        ] {
            let mut w = WideInt::default();
            w.set(v);
            assert_eq!(w.get(), v);
        }
    }

    #[test]
    fn counters_stay_compact() {
        // Every property of every recipient carries these; keep them small.
        assert_eq!(std::mem::size_of::<PropState>(), 48);
        assert_eq!(std::mem::size_of::<TopEntry>(), 16);
    }
}
