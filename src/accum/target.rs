//! The writer-side state of one `(rel_id, profile A)`: where each initiator's relation
//! sits, the top indexes, and the current published counters (which hold the relations
//! themselves), updated incrementally on every write.

use std::sync::Arc;

use crate::accum::counter::{PropState, Rel, SumState, View};
use crate::accum::relations::PVec;
use crate::accum::top::{self, TopChange, TopEntry, TopIndex};
use crate::directory::Profile;
use crate::record::{Record, rank};
use crate::schema::{PropKind, Schema};

/// One target's accumulators. Only writers holding the target's shard lock touch it.
#[derive(Debug)]
pub(crate) struct Target {
    /// Initiator slot -> index of its relation in `view.rels`.
    positions: hashbrown::HashMap<u32, u32>,
    /// Per property index: the ordered index of a large target's top property.
    indexes: Vec<Option<TopIndex>>,
    view: Arc<View>,
}

impl Target {
    pub(crate) fn new(schema: &Arc<Schema>, profile: &Arc<Profile>) -> Self {
        Target {
            positions: hashbrown::HashMap::new(),
            indexes: Vec::new(),
            view: Arc::new(View::empty(schema, profile)),
        }
    }

    /// The relation initiated by `slot`, if any.
    pub(crate) fn get(&self, slot: u32) -> Option<&Rel> {
        let &at = self.positions.get(&slot)?;
        self.view.rels.get(at as usize)
    }

    /// Number of relations.
    pub(crate) fn len(&self) -> usize {
        self.view.rels.len()
    }

    /// The counters as last published.
    pub(crate) fn view(&self) -> &Arc<View> {
        &self.view
    }

    /// Sets the relation initiated by `b` to `new` (`None` removes it), updates every
    /// counter incrementally and returns the new view to publish. Top properties with
    /// more than `index_above` valued relations keep an ordered index.
    pub(crate) fn apply(
        &mut self,
        b: &Arc<Profile>,
        new: Option<Record>,
        index_above: usize,
    ) -> Arc<View> {
        let mut rels = self.view.rels.clone();
        let old = self.place(&mut rels, b, new);
        let new = self
            .positions
            .get(&b.slot)
            .and_then(|&at| rels.get(at as usize))
            .map(|rel| &rel.rec);
        let schema = Arc::clone(&self.view.schema);
        let mut props: Box<[PropState]> = self.view.props.clone();
        for (i, def) in schema.props.iter().enumerate() {
            let state = &mut props[i];
            let kind = def.spec.kind();
            if kind == PropKind::Bool {
                let was = old.as_ref().is_some_and(|r| r.is_true(i));
                let is = new.is_some_and(|r| r.is_true(i));
                state.total = state.total + u64::from(is) - u64::from(was);
                continue;
            }
            let o = old.as_ref().and_then(|r| r.raw(&schema, i));
            let n = new.and_then(|r| r.raw(&schema, i));
            if o == n {
                continue;
            }
            let valued_before = state.total;
            state.total = state.total + u64::from(n.is_some()) - u64::from(o.is_some());
            match &mut state.sum {
                SumState::Off => {}
                SumState::Int(sum) => {
                    let old = o.map_or(0, |raw| i128::from(raw as i64));
                    let new = n.map_or(0, |raw| i128::from(raw as i64));
                    sum.set(sum.get() - old + new);
                }
                SumState::Float(f) => {
                    let (exact, rounded) = &mut **f;
                    if let Some(raw) = o {
                        exact.add(-f64::from_bits(raw));
                    }
                    if let Some(raw) = n {
                        exact.add(f64::from_bits(raw));
                    }
                    *rounded = exact.value();
                }
            }
            let Some(size) = def.spec.top_size() else {
                continue;
            };
            if self.indexes.len() <= i {
                self.indexes.resize_with(i + 1, || None);
            }
            let change = TopChange {
                profile: b,
                old: o.map(|raw| rank(kind, raw)),
                new: n.map(|raw| rank(kind, raw)),
                valued_before,
            };
            let list = state.top.as_deref().unwrap_or_default();
            let scan = || scan_valued(&rels, &schema, i);
            if let Some(next) = top::next_list(
                list,
                usize::from(size),
                self.indexes[i].as_mut(),
                &change,
                scan,
            ) {
                state.top = Some(next.into());
            }
            let valued = usize::try_from(state.total).unwrap_or(usize::MAX);
            match &self.indexes[i] {
                None if valued > index_above => {
                    self.indexes[i] = Some(TopIndex::build(scan_valued(&rels, &schema, i)));
                }
                Some(_) if valued < index_above / 2 => self.indexes[i] = None,
                _ => {}
            }
            debug_assert!(self.indexes[i].as_ref().is_none_or(|x| x.len() == valued));
        }
        self.view = Arc::new(View {
            schema,
            profile: Arc::clone(&self.view.profile),
            props,
            rels,
        });
        Arc::clone(&self.view)
    }

    /// Puts `new` in place of `b`'s relation in `rels` and `positions`; returns the old
    /// record.
    fn place(
        &mut self,
        rels: &mut PVec<Rel>,
        b: &Arc<Profile>,
        new: Option<Record>,
    ) -> Option<Record> {
        let at = self.positions.get(&b.slot).map(|&at| at as usize);
        match (at, new) {
            (Some(at), Some(rec)) => {
                let rel = Rel {
                    b: Arc::clone(b),
                    rec,
                };
                rels.set(at, rel).map(|old| old.rec)
            }
            (None, Some(rec)) => {
                // Fewer than 2^32 relations per target: a slot is a u32 and each
                // initiator has at most one relation here.
                self.positions.insert(b.slot, rels.len() as u32);
                rels.push(Rel {
                    b: Arc::clone(b),
                    rec,
                });
                None
            }
            (Some(at), None) => {
                self.positions.remove(&b.slot);
                let (removed, moved) = rels.swap_remove(at)?;
                if moved && let Some(rel) = rels.get(at) {
                    self.positions.insert(rel.b.slot, at as u32);
                }
                Some(removed.rec)
            }
            (None, None) => None,
        }
    }
}

/// Every relation of the target with a value for property `i`, as top entries.
fn scan_valued(rels: &PVec<Rel>, schema: &Schema, i: usize) -> Vec<TopEntry> {
    let kind = schema.props[i].spec.kind();
    rels.iter()
        .filter_map(|rel| {
            Some(TopEntry {
                rank: rank(kind, rel.rec.raw(schema, i)?),
                profile: Arc::clone(&rel.b),
            })
        })
        .collect()
}
