//! The counters of one `(rel_id, profile A)`: the writer's working copy
//! ([`Counters`], kept with the target and written to its block after each write) and
//! the public [`Counter`], an owned copy read from the block (`accum::block`).

use std::fmt;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::accum::block::{Block, Layout};
use crate::accum::exact_sum::ExactSum;
use crate::accum::top;
use crate::profile::id::ProfileId;
use crate::schema::{PropDef, Schema};
use crate::sync::Ordering;
use crate::value::{PropKind, Value};

/// What the writer of a target keeps beside its block (only writers holding the
/// target's shard lock touch it): what the block's words cannot hold. The totals, sums
/// and top lists are in the block alone; the writer reads them back from it
/// (`Latch::current`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Per float property that keeps a sum, in schema order: the exact sum (the block
    /// holds its rounded value).
    pub(crate) exacts: Box<[ExactSum]>,
}

impl Counters {
    /// Empty counters for `schema`.
    pub(crate) fn empty(schema: &Schema) -> Counters {
        let exacts = schema
            .props
            .iter()
            .filter(|d| d.spec.has_sum() && d.spec.kind() == PropKind::Float)
            .map(|_| ExactSum::default())
            .collect();
        Counters { exacts }
    }
}

/// The `i128` held in two words, low first.
pub(crate) fn wide(lo: u64, hi: u64) -> i128 {
    (i128::from(hi as i64) << 64) | i128::from(lo)
}

/// `v` as two words, low first.
pub(crate) fn split(v: i128) -> (u64, u64) {
    (v as u64, (v >> 64) as u64)
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

/// One property's counters as read (its definition says which it keeps).
#[derive(Debug, Clone)]
struct ReadProp {
    total: u64,
    /// The sum's words: an int's low and high, a float's bits and 0.
    sum: [u64; 2],
    /// Its top list's range in [`Counter::tops`] (start, length).
    top: (u32, u32),
}

impl Counter {
    /// Reads `block`'s counters (see `accum::block`, *Read protocol*); the top lists'
    /// initiators are held inline but for ids that are not 24 hex characters, which
    /// `resolve` names (a slot to its profile's id). `None` when such a slot names no
    /// profile while no write to the block completed meanwhile, or when the block is
    /// retired (replaced or unpublished, see `Latch::retire`): the caller looks the
    /// counters up again.
    pub(crate) fn read(
        block: &Arc<Block>,
        resolve: impl Fn(u32) -> Option<ProfileId>,
    ) -> Option<Counter> {
        let layout = *block.layout();
        let mut counter = Counter {
            block: Arc::clone(block),
            total: 0,
            props: SmallVec::new(),
            tops: Vec::new(),
        };
        // Top entries whose ids are not inline: (index in `tops`, slot).
        let mut named: SmallVec<[(u32, u32); 4]> = SmallVec::new();
        loop {
            let Some(seq) = block.latch.begin() else {
                return None; // retired: the caller looks the counters up again
            };
            let copy = block.latch.copy_of(seq);
            counter.decode(&layout, |at| copy[at].load(Ordering::Relaxed), &mut named);
            if !block.latch.valid(seq) {
                continue;
            }
            if named.is_empty() {
                return Some(counter);
            }
            // An initiator not held inline is resolved after the copy: were its slot
            // freed and taken since, the delete that freed it first removed its
            // relation here (a write to the block), and the check below sees it.
            let mut all = true;
            for &(i, slot) in &named {
                match resolve(slot) {
                    Some(id) => counter.tops[i as usize].0 = id,
                    None => all = false,
                }
            }
            if !block.latch.valid(seq) {
                continue;
            }
            return all.then_some(counter);
        }
    }

    /// The counters of a known profile with no relation.
    pub(crate) fn empty(block: Arc<Block>) -> Counter {
        let layout = *block.layout();
        let mut counter = Counter {
            block,
            total: 0,
            props: SmallVec::new(),
            tops: Vec::new(),
        };
        counter.decode(&layout, |_| 0, &mut SmallVec::new());
        counter
    }

    /// Fills the counters from the words `word` gives (a copy laid out by `layout`),
    /// read as they come: whole only if the copy was (the caller checks). Entries
    /// whose ids are not inline get a placeholder id, and their places and slots go
    /// to `named`.
    fn decode(
        &mut self,
        layout: &Layout,
        word: impl Fn(usize) -> u64,
        named: &mut SmallVec<[(u32, u32); 4]>,
    ) {
        self.props.clear();
        self.tops.clear();
        named.clear();
        self.total = word(0);
        let cap = self.block.cap();
        for place in layout.places(&self.block.schema) {
            let sum = match place.sum {
                Some((at, PropKind::Int)) => [word(at), word(at + 1)],
                Some((at, _)) => [word(at), 0],
                None => [0, 0],
            };
            let mut top = (0, 0);
            if let Some(at) = place.top {
                // A torn copy (checked after) may hold any length: bounded by the room.
                let len = (word(at) as usize).min(cap);
                top = (self.tops.len() as u32, len as u32);
                self.tops.reserve_exact(len);
                for j in 0..len {
                    let w = at + 1 + 3 * j;
                    let id = match top::inline_id([word(w + 1), word(w + 2)]) {
                        Ok((head, tail)) => ProfileId::from_halves(head, tail),
                        Err(slot) => {
                            named.push((self.tops.len() as u32, slot));
                            ProfileId::from_packed([0; 12])
                        }
                    };
                    self.tops.push((id, word(w)));
                }
            }
            self.props.push(ReadProp {
                total: word(place.count),
                sum,
                top,
            });
        }
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
        self.block.xxh
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
        let spec = &self.def.spec;
        if !spec.has_sum() {
            return None;
        }
        let [lo, hi] = self.state.sum;
        match spec.kind() {
            PropKind::Int => Some(Sum::Int(wide(lo, hi))),
            PropKind::Float => Some(Sum::Float(f64::from_bits(lo))),
            PropKind::Bool => None,
        }
    }

    /// The top initiators, best first, when the property keeps a top list.
    #[must_use]
    pub fn top(&self) -> Option<impl ExactSizeIterator<Item = TopItem<'a>> + use<'a>> {
        let kind = self.kind();
        let tops = self.tops;
        let (start, len) = self.state.top;
        self.def.spec.top_size().map(move |_| {
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
    use crate::accum::top::TopEntry;

    #[test]
    fn two_words_hold_every_i128() {
        for v in [
            0,
            1,
            -1,
            i128::MAX,
            i128::MIN,
            i128::from(i64::MIN) * 3,
            1 << 100,
        ] {
            let (lo, hi) = split(v);
            assert_eq!(wide(lo, hi), v);
        }
    }

    #[test]
    fn counters_stay_compact() {
        // Every recipient carries these; keep them small.
        assert_eq!(std::mem::size_of::<Counters>(), 16);
        assert_eq!(std::mem::size_of::<TopEntry>(), 24);
    }
}
