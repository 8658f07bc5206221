//! The counters of one `(rel_id, profile A)`: the writer's working copy
//! ([`Counters`], kept with the target and written to its block after each write) and
//! the public [`Counter`], an owned copy read from the block (`accum::block`).

use std::fmt;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::accum::block::{Block, Words, places};
use crate::accum::exact_sum::ExactSum;
use crate::accum::top::{self, TopEntry};
use crate::profile_id::ProfileId;
use crate::schema::{PropDef, Schema};
use crate::value::{PropKind, Value};

/// The counters of one target as its writer keeps them (only writers holding the
/// target's shard lock touch them): what the block publishes, with the exact float
/// sums and the top lists' profiles the block does not hold.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Per property, in schema order.
    pub(crate) props: Box<[PropState]>,
}

/// The counters of one property.
#[derive(Debug, Clone)]
pub(crate) struct PropState {
    /// Numeric: relations with a value. Bool: relations where it is true.
    pub(crate) total: u64,
    pub(crate) sum: SumState,
    /// Best first; `None` when the property keeps no top.
    pub(crate) top: Option<Vec<TopEntry>>,
}

/// The running sum of one property.
#[derive(Debug, Clone)]
pub(crate) enum SumState {
    /// The property keeps no sum.
    Off,
    /// Exact: |sum| < 2^63 * 2^64 for any number of relations a machine can hold.
    Int(WideInt),
    /// Exact expansion, and its correctly rounded value (boxed: float sums are rarer,
    /// and this keeps every property's counters at 56 bytes).
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

impl Counters {
    /// Zeroed counters for `schema`.
    pub(crate) fn empty(schema: &Schema) -> Counters {
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
                top: def.spec.top_size().map(|_| Vec::new()),
            })
            .collect();
        Counters { props }
    }

    /// The longest top list.
    pub(crate) fn longest_top(&self) -> usize {
        self.props
            .iter()
            .filter_map(|p| p.top.as_ref().map(Vec::len))
            .max()
            .unwrap_or(0)
    }

    /// One copy's words (the block's *Format*) of these counters and `total`
    /// relations, for a top capacity `cap` at least [`longest_top`](Self::longest_top).
    pub(crate) fn encode(&self, schema: &Schema, total: u64, cap: usize, out: &mut Words) {
        let (places, width) = places(schema, cap);
        out.clear();
        out.resize(width, 0);
        out[0] = total;
        for (state, place) in self.props.iter().zip(&places) {
            out[place.count] = state.total;
            match (&state.sum, place.sum) {
                (SumState::Int(sum), Some((at, _))) => {
                    out[at] = sum.0[0];
                    out[at + 1] = sum.0[1];
                }
                (SumState::Float(f), Some((at, _))) => out[at] = f.1.to_bits(),
                _ => {}
            }
            if let (Some(list), Some(at)) = (&state.top, place.top) {
                debug_assert!(list.len() <= cap);
                out[at] = list.len() as u64;
                for (j, e) in list.iter().enumerate().take(cap) {
                    out[at + 1 + 2 * j] = e.rank;
                    out[at + 2 + 2 * j] = u64::from(e.profile.slot);
                }
            }
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
/// right after one write (see the crate docs, *Consistency*). It owns a copy of the
/// counters (the top lists' ids included), so cloning it copies them.
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
    /// Where the counters were read: its schema and recipient.
    block: Arc<Block>,
    total: u64,
    props: SmallVec<[ReadProp; 4]>,
    /// Every property's top list, one after another: (initiator, rank).
    tops: Vec<(ProfileId, u64)>,
}

/// One property's counters as read.
#[derive(Debug, Clone)]
struct ReadProp {
    total: u64,
    sum: Option<Sum>,
    /// Its top list's range in [`Counter::tops`], if it keeps one.
    top: Option<(u32, u32)>,
}

impl Counter {
    /// Reads `block`'s counters (see `accum::block`, *Read protocol*), naming the top
    /// lists' initiators by `resolve` (a slot to its profile's id). `None` when a slot
    /// names no profile while no write to the block completed meanwhile: the block is
    /// no longer published (its recipient's delete removed it, then an initiator's
    /// delete freed the slot), and the caller looks the counters up again.
    pub(crate) fn read(
        block: &Arc<Block>,
        resolve: impl Fn(u32) -> Option<ProfileId>,
    ) -> Option<Counter> {
        let (places, _) = places(&block.schema, block.cap());
        let mut words = Words::new();
        loop {
            let seq = block.latch.begin();
            block.latch.copy(seq, &mut words);
            if !block.latch.valid(seq) {
                continue;
            }
            let counter = Self::decode(block, &places, &words, &resolve);
            // An initiator is resolved after the copy: were its slot freed and taken
            // since, the delete that freed it first removed its relation here (a
            // write to the block), and this sees that write.
            if !block.latch.valid(seq) {
                continue;
            }
            return counter;
        }
    }

    /// The counters of a known profile with no relation.
    pub(crate) fn empty(block: Arc<Block>) -> Counter {
        let (places, width) = places(&block.schema, block.cap());
        let words: Words = std::iter::repeat_n(0, width).collect();
        Self::decode(&block, &places, &words, &|_| None).expect("no top entry")
    }

    fn decode(
        block: &Arc<Block>,
        places: &[crate::accum::block::Place],
        words: &[u64],
        resolve: &impl Fn(u32) -> Option<ProfileId>,
    ) -> Option<Counter> {
        let mut tops = Vec::new();
        let props = places
            .iter()
            .map(|place| {
                let sum = place.sum.map(|(at, kind)| match kind {
                    PropKind::Float => Sum::Float(f64::from_bits(words[at])),
                    _ => Sum::Int(WideInt([words[at], words[at + 1]]).get()),
                });
                let top = match place.top {
                    None => None,
                    Some(at) => {
                        let len = (words[at] as usize).min(block.cap());
                        let start = tops.len() as u32;
                        for j in 0..len {
                            let rank = words[at + 1 + 2 * j];
                            let id = resolve(words[at + 2 + 2 * j] as u32)?;
                            tops.push((id, rank));
                        }
                        Some((start, len as u32))
                    }
                };
                Some(ReadProp {
                    total: words[place.count],
                    sum,
                    top,
                })
            })
            .collect::<Option<_>>()?;
        Some(Counter {
            block: Arc::clone(block),
            total: words[0],
            props,
            tops,
        })
    }

    /// The block the counters were read from (its schema and recipient).
    pub(crate) fn block(&self) -> &Arc<Block> {
        &self.block
    }

    /// The relation type.
    #[must_use]
    pub fn rel_id(&self) -> u32 {
        self.block.schema.rel_id()
    }

    /// The profile's id.
    #[must_use]
    pub fn profile_id(&self) -> &ProfileId {
        &self.block.profile.id
    }

    /// The profile's XXH64 (print it with [`format_xxh`](crate::format_xxh)).
    #[must_use]
    pub fn profile_xxh(&self) -> u64 {
        self.block.profile.xxh
    }

    /// Relations attached to the profile for this relation type.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Every property of the schema, in schema order.
    pub fn props(&self) -> impl ExactSizeIterator<Item = PropCounter<'_>> {
        let tops = &self.tops;
        self.block
            .schema
            .props
            .iter()
            .zip(self.props.iter())
            .map(move |(def, state)| PropCounter { def, state, tops })
    }

    /// The property called `name`, found through the schema's name map (O(1)); `None`
    /// when the relation type has no such property.
    #[must_use]
    pub fn prop(&self, name: &str) -> Option<PropCounter<'_>> {
        let i = self.block.schema.prop_index(name)?;
        Some(PropCounter {
            def: &self.block.schema.props[i],
            state: &self.props[i],
            tops: &self.tops,
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
    state: &'a ReadProp,
    tops: &'a [(ProfileId, u64)],
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
        self.state.sum
    }

    /// The top initiators, best first, when the property keeps a top list.
    #[must_use]
    pub fn top(&self) -> Option<impl ExactSizeIterator<Item = TopItem<'a>> + use<'a>> {
        let kind = self.kind();
        let tops = self.tops;
        self.state.top.map(move |(start, len)| {
            tops[start as usize..(start + len) as usize]
                .iter()
                .map(move |(id, rank)| TopItem {
                    profile_id: id,
                    value: top::value_of(*rank, kind),
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
        assert_eq!(std::mem::size_of::<PropState>(), 56);
        assert_eq!(std::mem::size_of::<TopEntry>(), 16);
    }
}
