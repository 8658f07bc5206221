//! The reads: `get_counter` (lock-free) and `list` (the shard lock for two reference
//! counts, then lock-free).

use std::sync::Arc;

use super::{Engine, MAX_LIST_LIMIT, Page, Row};
use crate::accum::counter::{Counter, View};
use crate::accum::target::Packed;
use crate::directory::Profile;
use crate::error::Error;
use crate::profile_data::Match;
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
            .get(&rel_id, &guard)
            .ok_or(Error::UnknownRelation { rel_id })?;
        let view = match profile_a.into() {
            // The common case: one lookup by (rel_id, hash), a check of the id, and no
            // reference count but the counter's own. A profile with no counters (or
            // not live) is looked up in the directory to say which.
            Match::Id(id) => {
                let a = self.name(schema.db_a(), id)?;
                let key = (a.key.db, &a.key.id, a.hash);
                if let Some(view) = self.store.view_by_id(rel_id, key, &guard) {
                    return Ok(Counter::new(Arc::clone(view)));
                }
                let profile = self
                    .directory
                    .get_in(&a.key, &guard)
                    .ok_or_else(|| Self::not_found(&a))?;
                self.view_of(schema, profile, &guard)?
            }
            m => {
                let profile = self.find_profile(schema.db_a(), &m, &guard)?;
                self.view_of(schema, &profile, &guard)?
            }
        };
        Ok(Counter::new(view))
    }

    /// The published counters of a profile found live. With none published, the
    /// profile has no relation, or its delete removed them after it was found (or
    /// freed its slot for another profile, whose counters these are not): a deleted
    /// profile answers "not found", never counters it did not have. (A delete marks
    /// the profile before it removes any counter, so a reader that sees them removed
    /// sees the mark.)
    fn view_of(
        &self,
        schema: &Arc<Schema>,
        profile: &Arc<Profile>,
        guard: &impl seize::Guard,
    ) -> Result<Arc<View>, Error> {
        match self.store.view(schema.rel_id(), profile, guard) {
            Some(view) => Ok(Arc::clone(view)),
            _ if profile.is_deleted() => Err(Self::not_found_id(profile.db, &profile.id)),
            _ => Ok(Arc::new(View::empty(schema, profile))),
        }
    }

    /// One page of the relations of `profile_a` for `rel_id`, ordered by initiator id.
    /// `limit` is 1..=1000 ([`DEFAULT_LIST_LIMIT`](crate::DEFAULT_LIST_LIMIT) is the platform's default).
    ///
    /// The page and its `total_count` are of one moment: the relations are taken under
    /// the lock of the recipient's shard (two reference counts; the next write to the
    /// recipient copies its relations instead of changing them), then sorted without
    /// any lock, in O(n + page log page) for a recipient of n relations.
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
                reason: format!("limit must be 1 to {MAX_LIST_LIMIT}, got {limit}"),
            });
        }
        let counter = self.get_counter(rel_id, profile_a)?;
        let a = &counter.view().profile;
        // The relations name initiators by slot. Read without the lock, a slot freed
        // and taken again since the moment (a delete, then a create) is seen and the
        // page read again; after a few such races, the slots are read under the lock.
        for _ in 0..PAGE_TRIES {
            let Some((frozen, generation)) = self.store.relations(rel_id, a) else {
                return Self::empty_page(counter.view());
            };
            let slots = self.store.slots();
            let resolve = |slot| slots.get(slot).filter(|b| b.born < generation);
            if let Some(page) = page_of(&frozen.view, &frozen.rels, skip, limit, resolve) {
                return Ok(page);
            }
        }
        let locked = self.store.read_locked(rel_id, a, |view, rels, slots| {
            page_of(view, rels, skip, limit, |slot| slots.get(slot))
        });
        match locked {
            Some(Some(page)) => Ok(page),
            None => Self::empty_page(counter.view()),
            Some(None) => Err(Error::Storage {
                reason: "internal: a relation names a free slot".into(),
            }),
        }
    }

    /// The page of a recipient found with no relation: empty, unless its delete
    /// removed them since it was found.
    fn empty_page(view: &View) -> Result<Page, Error> {
        let profile = &view.profile;
        if profile.is_deleted() {
            return Err(Self::not_found_id(profile.db, &profile.id));
        }
        Ok(Page {
            profile_a: profile.id.clone(),
            xxh_a: profile.xxh,
            db_b: view.schema.db_b(),
            total_count: 0,
            rows: Vec::new(),
        })
    }
}

/// Optimistic reads of a page before one under the lock (see [`Engine::list`]).
const PAGE_TRIES: usize = 3;

/// The page `skip..skip + limit` of `rels` (the relations of `view`'s target at one
/// moment) by initiator id, or `None` if `resolve` cannot name an initiator.
fn page_of(
    view: &View,
    rels: &Packed,
    skip: usize,
    limit: usize,
    resolve: impl Fn(u32) -> Option<Arc<Profile>>,
) -> Option<Page> {
    let schema = &view.schema;
    let mut all: Vec<(Arc<Profile>, usize)> = Vec::with_capacity(rels.len());
    for (i, (slot, _)) in rels.iter().enumerate() {
        all.push((resolve(slot)?, i));
    }
    let total_count = all.len() as u64;
    let by_id = |x: &(Arc<Profile>, usize), y: &(Arc<Profile>, usize)| x.0.id.cmp(&y.0.id);
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
    let rows = page
        .into_iter()
        .map(|(b, i)| {
            let rec = rels.get(i).1;
            Row {
                profile_b: b.id.clone(),
                xxh_b: b.xxh,
                props: (0..schema.props.len())
                    .filter_map(|j| Some((schema.props[j].name.to_string(), rec.get(schema, j)?)))
                    .collect(),
            }
        })
        .collect();
    Some(Page {
        profile_a: view.profile.id.clone(),
        xxh_a: view.profile.xxh,
        db_b: schema.db_b(),
        total_count,
        rows,
    })
}
