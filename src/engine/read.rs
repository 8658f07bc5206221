//! The reads: `get_counter` (lock-free) and `list` (the shard lock for up to three
//! reference counts, then lock-free).

use std::sync::Arc;

use super::{Engine, Page, Row};
use crate::accum::block::Block;
use crate::accum::counter::Counter;
use crate::accum::target::{IdOrder, Packed};
use crate::error::{Error, StorageKind, fail};
use crate::limits::MAX_LIST_LIMIT;
use crate::profile::Profile;
use crate::profile::data::Match;
use crate::profile::id::ProfileHasher;
use crate::schema::Schema;

impl Engine {
    /// The counters of `profile_a` for `rel_id`: a consistent snapshot, read without
    /// taking any lock. A known profile with no relations answers zeroed counters.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownRelation`], [`Error::InvalidProfileId`],
    /// [`Error::ProfileNotFound`]; for a profile named by its data, [`Error::NoMatch`],
    /// [`Error::Ambiguous`], [`Error::InvalidProfileData`] (a malformed email or phone).
    pub fn get_counter<'a>(
        &self,
        rel_id: u32,
        profile_a: impl Into<Match<'a>>,
    ) -> Result<Counter, Error> {
        // One guard for every lookup: the maps share one collector.
        let guard = self.collector.enter();
        let schema = self
            .schemas
            .get_in(rel_id, &guard)
            .ok_or(Error::UnknownRelation { rel_id })?;
        let m = profile_a.into();
        for _ in 0..READ_TRIES {
            let found = match m {
                // The common case: one lookup by (rel_id, hash), a check of the id, and
                // no reference count but the block's own. A profile with no counters
                // (or not live) is looked up in the directory to say which.
                Match::Id(id) => {
                    let a = self.name(schema.db_a(), id)?;
                    let key = (a.key.db, &a.key.id, a.hash);
                    match self.store.block_by_id(rel_id, key, &guard) {
                        Some(block) => Ok(block),
                        None => {
                            let profile = self
                                .directory
                                .get(&a.key)
                                .ok_or_else(|| Self::not_found(&a))?;
                            self.block_of(schema, &profile, &guard)?
                        }
                    }
                }
                m => {
                    let profile = self.find_profile(schema.db_a(), &m, &guard)?;
                    self.block_of(schema, &profile, &guard)?
                }
            };
            let block = match found {
                Ok(block) => block,
                Err(profile) => {
                    let xxh = self.store.xxh(&profile);
                    let block = Block::new(schema, &profile, xxh, 0);
                    return Ok(Counter::empty(Arc::new(block)));
                }
            };
            let slots = self.store.slots();
            let resolve = |slot| slots.with(slot, |b| b.map(|b| b.id.clone()));
            if let Some(counter) = Counter::read(block, resolve) {
                return Ok(counter);
            }
            // The block is no longer published (see `Counter::read`): its recipient
            // was deleted, or a top list outgrew it and a new one replaced it.
            if self.store.slots().is_deleted(&block.profile) {
                return Err(Self::not_found_id(block.profile.db, &block.profile.id));
            }
        }
        Err(fail(
            StorageKind::Internal,
            None,
            "the counters were replaced under every read",
        ))
    }

    /// The published block of a profile found live (`Ok(Err(profile))`: it has none,
    /// and [`get_counter`](Self::get_counter) answers zeroed counters). With none
    /// published, the profile has no relation, or its delete removed them after it
    /// was found (or freed its slot for another profile, whose counters these are
    /// not): a deleted profile answers "not found", never counters it did not have.
    /// (A delete marks the profile before it removes any counter, so a reader that
    /// sees them removed sees the mark.)
    fn block_of<'g>(
        &self,
        schema: &Arc<Schema>,
        profile: &Profile,
        guard: &'g impl seize::Guard,
    ) -> Result<Result<&'g Arc<Block>, Profile>, Error> {
        match self.store.block(schema.rel_id(), profile, guard) {
            Some(block) => Ok(Ok(block)),
            _ if self.store.slots().is_deleted(profile) => {
                Err(Self::not_found_id(profile.db, &profile.id))
            }
            _ => Ok(Err(profile.clone())),
        }
    }

    /// One page of the relations of `profile_a` for `rel_id`, ordered by initiator id.
    /// `limit` is 1..=1000 ([`DEFAULT_LIST_LIMIT`](crate::limits::DEFAULT_LIST_LIMIT) is the platform's default).
    ///
    /// The page and its `total_count` are of one moment: the relations are taken under
    /// the lock of the recipient's shard (up to three reference counts; the next write
    /// to the recipient copies what it changes instead of changing it), then read
    /// without any lock. A recipient that grew past 1024 relations keeps them in id
    /// order (leaves of 256 to 1024 entries, until it shrinks below 512): a page
    /// reads the leaves' lengths up to `skip`, then its rows, in O(page + n/B) for n
    /// relations (B >= 256), beside the lookup of the recipient. One without (never
    /// more than 1024 relations) is selected from all of them, in
    /// O(n + page log page).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a `limit` out of range, and as
    /// [`get_counter`](Self::get_counter).
    pub fn list<'a>(
        &self,
        rel_id: u32,
        profile_a: impl Into<Match<'a>>,
        skip: usize,
        limit: usize,
    ) -> Result<Page, Error> {
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(Error::InvalidArgument {
                name: "limit",
                reason: format!("limit must be 1 to {MAX_LIST_LIMIT}, got {limit}"),
            });
        }
        self.list_counting(rel_id, profile_a, skip, limit, &mut 0)
    }

    /// [`list`](Self::list), adding to `touched` the relations and leaves of the id
    /// order it read (what the tests count: a page's work, not its time).
    pub(crate) fn list_counting<'a>(
        &self,
        rel_id: u32,
        profile_a: impl Into<Match<'a>>,
        skip: usize,
        limit: usize,
        touched: &mut usize,
    ) -> Result<Page, Error> {
        let counter = self.get_counter(rel_id, profile_a)?;
        let a = counter.block();
        // The relations name initiators by slot. Read without the lock, a slot freed
        // and taken again since the moment (a delete, then a create) is seen and the
        // page read again; after a few such races, the slots are read under the lock.
        for _ in 0..PAGE_TRIES {
            let Some(moment) = self.store.relations(rel_id, a) else {
                return self.empty_page(counter.block());
            };
            let (frozen, generation) = (&moment.frozen, moment.generation);
            let slots = self.store.slots();
            let resolve = |slot| slots.get(slot).filter(|b| b.born < generation);
            let read = Read {
                block: &frozen.block,
                rels: &frozen.rels,
                order: moment.order.as_deref(),
                hasher: self.store.hasher(),
            };
            if let Some(page) = read.page(skip, limit, resolve, touched) {
                return Ok(page);
            }
        }
        let locked = self
            .store
            .read_locked(rel_id, a, |block, rels, order, slots| {
                let read = Read {
                    block,
                    rels,
                    order,
                    hasher: self.store.hasher(),
                };
                read.page(skip, limit, |slot| slots.get(slot), touched)
            });
        match locked {
            Some(Some(page)) => Ok(page),
            None => self.empty_page(counter.block()),
            Some(None) => Err(fail(
                StorageKind::Internal,
                None,
                "a relation names a free slot",
            )),
        }
    }

    /// The page of a recipient found with no relation: empty, unless its delete
    /// removed them since it was found.
    fn empty_page(&self, block: &Block) -> Result<Page, Error> {
        let profile = &block.profile;
        if self.store.slots().is_deleted(profile) {
            return Err(Self::not_found_id(profile.db, &profile.id));
        }
        Ok(Page {
            profile_a: profile.id.clone(),
            xxh_a: block.xxh,
            db_b: block.schema.db_b(),
            total_count: 0,
            rows: Vec::new(),
        })
    }
}

/// Optimistic reads of a page before one under the lock (see [`Engine::list`]).
const PAGE_TRIES: usize = 3;

/// Lookups of a profile's counters, each read from the block found: a read is made
/// again only when the block it found was replaced (a top list outgrew it) and an
/// initiator of its top list deleted since, so a few suffice.
const READ_TRIES: usize = 16;

/// One target at one moment, as a page reads it: its counters, its relations and
/// their id order if it keeps one (all three of the same moment).
struct Read<'a> {
    block: &'a Block,
    rels: &'a Packed,
    order: Option<&'a IdOrder>,
    /// Places an initiator by its id (`xxh_b`).
    hasher: ProfileHasher,
}

impl Read<'_> {
    /// The page `skip..skip + limit` of the relations by initiator `(id, slot)`, or
    /// `None` if `resolve` cannot name an initiator of it. Adds to `touched` the
    /// relations and leaves read: `limit` and the leaves up to the page's with an id
    /// order, every relation without.
    fn page(
        &self,
        skip: usize,
        limit: usize,
        resolve: impl Fn(u32) -> Option<Profile>,
        touched: &mut usize,
    ) -> Option<Page> {
        let rels = self.rels;
        let page: Vec<(Profile, usize)> = match self.order {
            Some(order) => {
                let mut page = Vec::new();
                for at in order.page(skip, limit, touched) {
                    let at = at as usize;
                    // An order of the same moment names only relations there are.
                    debug_assert!(at < rels.len());
                    if at >= rels.len() {
                        return None;
                    }
                    page.push((resolve(rels.get(at).0)?, at));
                }
                page
            }
            None => {
                *touched += rels.len();
                select(rels, skip, limit, resolve)?
            }
        };
        let schema = &self.block.schema;
        let rows = page
            .into_iter()
            .map(|(b, i)| {
                let rec = rels.get(i).1;
                Row {
                    profile_b: b.id.clone(),
                    xxh_b: b.id.hash_with(self.hasher),
                    props: (0..schema.props.len())
                        .filter_map(|j| {
                            Some((schema.props[j].name.to_string(), rec.get(schema, j)?))
                        })
                        .collect(),
                }
            })
            .collect();
        Some(Page {
            profile_a: self.block.profile.id.clone(),
            xxh_a: self.block.xxh,
            db_b: schema.db_b(),
            total_count: rels.len() as u64,
            rows,
        })
    }
}

/// The initiators and indexes of the relations `skip..skip + limit` of `rels` by
/// initiator `(id, slot)`, selected from all of them (O(n + page log page)), or `None`
/// if `resolve` cannot name an initiator.
fn select(
    rels: &Packed,
    skip: usize,
    limit: usize,
    resolve: impl Fn(u32) -> Option<Profile>,
) -> Option<Vec<(Profile, usize)>> {
    let mut all: Vec<(Profile, usize)> = Vec::with_capacity(rels.len());
    for (i, slot) in rels.slots().enumerate() {
        all.push((resolve(slot)?, i));
    }
    let by_id =
        |x: &(Profile, usize), y: &(Profile, usize)| (&x.0.id, x.0.slot).cmp(&(&y.0.id, y.0.slot));
    let end = skip.saturating_add(limit).min(all.len());
    let start = skip.min(end);
    if end < all.len() {
        all.select_nth_unstable_by(end, by_id);
        all.truncate(end);
    }
    if start > 0 && start < all.len() {
        all.select_nth_unstable_by(start, by_id);
    }
    let mut page = all.split_off(start);
    page.sort_unstable_by(by_id);
    Some(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accum::order::LEAF_MAX;
    use crate::accum::target::ORDER_ABOVE;
    use crate::schema::{PropSpec, RelationType};
    use crate::value::Value;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// Initiator `i`'s id: 24 hex digits spread so that ids do not come in the order
    /// of `i`, and every seventh a text id (the two kinds of id order alike).
    fn b_id(i: u32) -> String {
        if i % 7 == 3 {
            format!("t{i}")
        } else {
            format!("{:024x}", (u64::from(i) * 0x9E37_79B1) % (1 << 40))
        }
    }

    /// Recipient `a`'s id.
    fn a_id(a: u8) -> String {
        format!("a{a}")
    }

    fn engine() -> Engine {
        let engine = Engine::builder().shards(2).build();
        engine
            .define(RelationType::new(1, 1, 2).prop("v", PropSpec::int()))
            .expect("schema");
        engine
    }

    /// The page as `(initiator id, v)` rows, with its total.
    fn own(page: &Page) -> (u64, Vec<(String, Option<Value>)>) {
        let rows = page
            .rows
            .iter()
            .map(|r| (r.profile_b.to_string(), r.props.first().map(|p| p.1)))
            .collect();
        (page.total_count, rows)
    }

    /// The oracle's page of `a`: its rows sorted by initiator id.
    fn want(
        oracle: &BTreeMap<(String, String), i64>,
        a: &str,
        skip: usize,
        limit: usize,
    ) -> (u64, Vec<(String, Option<Value>)>) {
        let all: Vec<(String, Option<Value>)> = oracle
            .iter()
            .filter(|((x, _), _)| x == a)
            .map(|((_, b), v)| (b.clone(), Some(Value::Int(*v))))
            .collect();
        let rows = all.iter().skip(skip).take(limit).cloned().collect();
        (all.len() as u64, rows)
    }

    proptest! {
        /// Attach, detach, initiator and recipient deletes and bulk imports on two
        /// recipients with up to 160 initiators, so targets cross the id order's
        /// threshold (48 in unit tests) both ways and its leaves (32) split and merge:
        /// every page, at random skips and limits and whole, is the oracle's.
        #[test]
        fn pages_match_the_oracle_across_the_threshold(
            ops in prop::collection::vec((0u8..12, 0u8..2, 0u32..160, 1u32..120, -5i64..5), 1..40),
            pages in prop::collection::vec((0usize..170, 1usize..40), 1..6),
        ) {
            let engine = engine();
            let mut oracle: BTreeMap<(String, String), i64> = BTreeMap::new();
            let mut live: BTreeSet<String> = BTreeSet::new();
            for (op, a, b, n, v) in ops {
                let a = a_id(a);
                let w = [("v", Value::Int(v))];
                match op {
                    0..=2 => {
                        engine.attach(1, a.as_str(), b_id(b).as_str(), &w).expect("attach");
                        oracle.insert((a.clone(), b_id(b)), v);
                        live.insert(a.clone());
                    }
                    3..=5 => {
                        let rows: Vec<(String, i64)> =
                            (b..b + n).map(|i| (b_id(i % 160), v + i64::from(i))).collect();
                        for (y, val) in &rows {
                            oracle.insert((a.clone(), y.clone()), *val);
                        }
                        let rows = rows.iter().map(|(y, val)| (a.as_str(), y, [("v", Value::Int(*val))]));
                        engine.import_relations(1, rows).expect("import");
                        live.insert(a.clone());
                    }
                    6..=8 => {
                        for i in b..b + n {
                            let pair = (a.clone(), b_id(i % 160));
                            let done = engine.detach(1, a.as_str(), pair.1.as_str()).is_ok();
                            prop_assert_eq!(done, oracle.remove(&pair).is_some());
                        }
                    }
                    9 | 10 => {
                        let id = b_id(b);
                        let _ = engine.delete_profile(2, id.as_str());
                        oracle.retain(|(_, y), _| *y != id);
                    }
                    _ => {
                        let _ = engine.delete_profile(1, a.as_str());
                        oracle.retain(|(x, _), _| *x != a);
                        live.remove(&a);
                    }
                }
                for a in [a_id(0), a_id(1)] {
                    if !live.contains(&a) {
                        prop_assert!(engine.list(1, a.as_str(), 0, 1).is_err());
                        continue;
                    }
                    for &(skip, limit) in &pages {
                        let got = engine.list(1, a.as_str(), skip, limit).expect("page");
                        prop_assert_eq!(own(&got), want(&oracle, &a, skip, limit));
                    }
                    let got = engine.list(1, a.as_str(), 0, 1000).expect("page");
                    prop_assert_eq!(own(&got), want(&oracle, &a, 0, 1000));
                }
            }
        }
    }

    /// A page counts its work: a page of one among 100,000 relations reads the id
    /// order's leaves up to it and one relation (at most `1 + 4n / LEAF_MAX + 1`),
    /// not the 100,000; so it does after 40,000 detaches. A recipient at the threshold
    /// (no order kept) reads all of its relations.
    #[test]
    fn a_page_of_one_reads_the_leaves_not_the_relations() {
        let engine = engine();
        let n: u32 = 100_000;
        let rows = (0..n).map(|i| ("big", b_id(i), [("v", Value::Int(i64::from(i)))]));
        engine.import_relations(1, rows).expect("import");
        let small = (0..ORDER_ABOVE as u32).map(|i| ("small", b_id(i), [("v", Value::Int(1))]));
        engine.import_relations(1, small).expect("import");
        let mut ids: Vec<String> = (0..n).map(b_id).collect();
        ids.sort();
        let check = |ids: &[String]| {
            let n = ids.len();
            let bound = 1 + 4 * n / LEAF_MAX + 1;
            for skip in [0, n / 3, n / 2, n - 1, n + 5] {
                let mut touched = 0;
                let page = engine
                    .list_counting(1, "big", skip, 1, &mut touched)
                    .expect("page");
                assert_eq!(page.total_count, n as u64);
                let got: Vec<String> = page.rows.iter().map(|r| r.profile_b.to_string()).collect();
                assert_eq!(
                    got,
                    ids.iter().skip(skip).take(1).cloned().collect::<Vec<_>>()
                );
                assert!(
                    touched <= bound,
                    "{touched} touched at {skip} of {n} (bound {bound})"
                );
                assert!(touched < n / 8, "{touched} of {n}");
            }
        };
        check(&ids);
        // Detach every 5th of 4 in 5: leaves shrink and merge.
        let mut kept = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            if i % 5 == 0 {
                kept.push(id.clone());
            } else if kept.len() + (ids.len() - i) > 60_000 {
                engine.detach(1, "big", id.as_str()).expect("detach");
            } else {
                kept.push(id.clone());
            }
        }
        check(&kept);
        let mut touched = 0;
        engine
            .list_counting(1, "small", 0, 1, &mut touched)
            .expect("page");
        assert_eq!(touched, ORDER_ABOVE, "a small recipient is read whole");
    }
}

/// Regressions of the counter block's reads, found by review.
#[cfg(test)]
mod block_reads {
    use super::*;
    use crate::schema::{PropSpec, RelationType};
    use crate::value::Value;

    /// The block a reader found for `a` (what `get_counter` holds while it reads).
    fn found(engine: &Engine, a: &str) -> Arc<Block> {
        let guard = engine.collector.enter();
        let a = engine.name(1, a).expect("a");
        let key = (a.key.db, &a.key.id, a.hash);
        Arc::clone(engine.store.block_by_id(1, key, &guard).expect("published"))
    }

    /// A read of what `block` lists in its top: `None` when the read is refused.
    fn top_of(engine: &Engine, block: &Arc<Block>) -> Option<Vec<String>> {
        let slots = engine.store.slots();
        let counter = Counter::read(block, |s| slots.with(s, |b| b.map(|b| b.id.clone())))?;
        let top = counter.top("v").expect("a top");
        Some(top.map(|t| t.profile_id.to_string()).collect())
    }

    /// Deletes "t-1", lets "u-2" take its slot, and checks a read of `old` (a block
    /// that listed "t-1") is refused.
    fn slot_retaken_and_refused(engine: &Engine, old: &Arc<Block>) {
        engine.delete_profile(2, "t-1").expect("delete t");
        engine
            .attach(1, "z", "u-2", &[("v", Value::Int(1))])
            .expect("takes the slot");
        assert_eq!(top_of(engine, old), None, "a retired block is refused");
    }

    fn engine() -> Engine {
        let engine = Engine::builder().shards(2).build();
        engine
            .define(RelationType::new(1, 1, 2).prop("v", PropSpec::int().top(10)))
            .expect("schema");
        engine
    }

    /// Found by review: a block replaced when its top list outgrew it is no longer
    /// written, so a reader holding it resolved its text-id initiator's slot, freed
    /// and taken by another profile since, to that profile ("u-2", which never had a
    /// relation to "a"). A replaced block is retired: the read is refused, and
    /// `get_counter` looks up again.
    #[test]
    fn a_replaced_block_never_names_a_later_holder_of_a_slot() {
        let engine = engine();
        engine
            .attach(1, "a", "t-1", &[("v", Value::Int(5))])
            .expect("attach");
        let old = found(&engine, "a");
        assert_eq!(top_of(&engine, &old), Some(vec!["t-1".to_string()]));
        // A second entry: the block is replaced (room for 1, then more).
        engine
            .attach(1, "a", "0123456789abcdef01234567", &[("v", Value::Int(7))])
            .expect("attach");
        assert!(!Arc::ptr_eq(&old, &found(&engine, "a")), "replaced");
        engine.detach(1, "a", "t-1").expect("detach");
        slot_retaken_and_refused(&engine, &old);
        let now = engine.get_counter(1, "a").expect("a");
        let top: Vec<String> = now
            .top("v")
            .expect("a top")
            .map(|t| t.profile_id.to_string())
            .collect();
        assert_eq!(top, ["0123456789abcdef01234567"]);
    }

    /// Found by review: the same with the recipient deleted (its block unpublished,
    /// never written again): a reader holding it is refused, and "a" is not found.
    #[test]
    fn an_unpublished_block_never_names_a_later_holder_of_a_slot() {
        let engine = engine();
        engine
            .attach(1, "a", "t-1", &[("v", Value::Int(5))])
            .expect("attach");
        let old = found(&engine, "a");
        engine.delete_profile(1, "a").expect("delete a");
        slot_retaken_and_refused(&engine, &old);
        assert!(matches!(
            engine.get_counter(1, "a"),
            Err(Error::ProfileNotFound { .. })
        ));
    }
}
