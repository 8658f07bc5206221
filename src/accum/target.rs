//! The writer-side state of one `(rel_id, profile A)`: its relations, its top indexes and
//! its current published counters, updated incrementally on every write.

use std::sync::Arc;

use crate::accum::counter::{PropState, SumState, View};
use crate::accum::top::{self, TopChange, TopEntry, TopIndex};
use crate::directory::Profile;
use crate::record::{Record, rank};
use crate::schema::{PropKind, Schema};

/// Resolves an initiator slot to its profile (the directory's `by_slot`).
pub(crate) type Resolve<'a> = &'a dyn Fn(u32) -> Option<Arc<Profile>>;

/// One target's relations, keyed by initiator slot, and its accumulators.
#[derive(Debug)]
pub(crate) struct Target {
    rels: hashbrown::HashMap<u32, Record>,
    /// Per property index: the ordered index of a large target's top property.
    indexes: Vec<Option<TopIndex>>,
    view: Arc<View>,
}

impl Target {
    pub(crate) fn new(schema: &Arc<Schema>, profile: &Arc<Profile>) -> Self {
        Target {
            rels: hashbrown::HashMap::new(),
            indexes: Vec::new(),
            view: Arc::new(View::empty(schema, profile)),
        }
    }

    /// The relation initiated by `slot`, if any.
    pub(crate) fn get(&self, slot: u32) -> Option<&Record> {
        self.rels.get(&slot)
    }

    /// Number of relations.
    pub(crate) fn len(&self) -> usize {
        self.rels.len()
    }

    /// Every relation, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Record)> {
        self.rels.iter().map(|(&slot, rec)| (slot, rec))
    }

    /// Sets the relation initiated by `b` to `new` (`None` removes it), updates every
    /// counter incrementally and returns the new view to publish. Top properties with
    /// more than `index_above` valued relations keep an ordered index.
    pub(crate) fn apply(
        &mut self,
        b: &Arc<Profile>,
        new: Option<Record>,
        resolve: Resolve<'_>,
        index_above: usize,
    ) -> Arc<View> {
        let old = match new {
            Some(rec) => self.rels.insert(b.slot, rec),
            None => self.rels.remove(&b.slot),
        };
        let new = self.rels.get(&b.slot);
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
                    *sum += o.map_or(0, |raw| -i128::from(raw as i64));
                    *sum += n.map_or(0, |raw| i128::from(raw as i64));
                }
                SumState::Float(exact, rounded) => {
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
            let rels = &self.rels;
            let scan = || scan_valued(rels, &schema, i, b, resolve);
            let change = TopChange {
                profile: b,
                old: o.map(|raw| rank(kind, raw)),
                new: n.map(|raw| rank(kind, raw)),
                valued_before,
            };
            let list = state.top.as_deref().unwrap_or_default();
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
                    self.indexes[i] =
                        Some(TopIndex::build(scan_valued(rels, &schema, i, b, resolve)));
                }
                Some(_) if valued < index_above / 2 => self.indexes[i] = None,
                _ => {}
            }
            debug_assert!(self.indexes[i].as_ref().is_none_or(|x| x.len() == valued));
        }
        let total = self.view.total + u64::from(new.is_some()) - u64::from(old.is_some());
        self.view = Arc::new(View {
            schema,
            profile: Arc::clone(&self.view.profile),
            total,
            props,
        });
        Arc::clone(&self.view)
    }
}

/// Every relation of the target with a value for property `i`, as top entries.
fn scan_valued(
    rels: &hashbrown::HashMap<u32, Record>,
    schema: &Schema,
    i: usize,
    changed: &Arc<Profile>,
    resolve: Resolve<'_>,
) -> Vec<TopEntry> {
    let kind = schema.props[i].spec.kind();
    rels.iter()
        .filter_map(|(&slot, rec)| {
            let raw = rec.raw(schema, i)?;
            let profile = if slot == changed.slot {
                Arc::clone(changed)
            } else {
                let found = resolve(slot);
                debug_assert!(found.is_some(), "relation to a released slot {slot}");
                found?
            };
            Some(TopEntry {
                rank: rank(kind, raw),
                profile,
            })
        })
        .collect()
}
