//! The reads: `get_counter` and `list`, lock-free.

use std::sync::Arc;

use super::{Engine, MAX_LIST_LIMIT, Page, Row};
use crate::accum::counter::{Counter, Rel, View};
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
            // The common case touches no reference count but the counter's own.
            Match::Id(id) => {
                let a = self.name(schema.db_a(), id)?;
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
        match self.store.view((schema.rel_id(), profile.slot), guard) {
            Some(view) if Arc::ptr_eq(&view.profile, profile) => Ok(Arc::clone(view)),
            _ if profile.is_deleted() => Err(Error::ProfileNotFound {
                db_id: profile.db,
                profile_id: profile.id.to_string(),
            }),
            _ => Ok(Arc::new(View::empty(schema, profile))),
        }
    }

    /// One page of the relations of `profile_a` for `rel_id`, ordered by initiator id.
    /// `limit` is 1..=1000 ([`DEFAULT_LIST_LIMIT`](crate::DEFAULT_LIST_LIMIT) is the platform's default).
    ///
    /// Lock-free, from the same snapshot as [`get_counter`](Self::get_counter):
    /// `total_count` and the rows are of one moment. Sorting costs O(n + page log page)
    /// for a target of n relations.
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
        let view = counter.view();
        let schema = &view.schema;
        let mut all: Vec<&Rel> = view.rels.iter().collect();
        let total_count = all.len() as u64;
        let end = skip.saturating_add(limit).min(all.len());
        let start = skip.min(end);
        if end < all.len() {
            all.select_nth_unstable_by(end, |x, y| x.b.id.cmp(&y.b.id));
            all.truncate(end);
        }
        all.sort_unstable_by(|x, y| x.b.id.cmp(&y.b.id));
        let rows = all[start..]
            .iter()
            .map(|rel| Row {
                profile_b: rel.b.id.clone(),
                xxh_b: rel.b.xxh,
                props: (0..schema.props.len())
                    .filter_map(|i| {
                        Some((schema.props[i].name.to_string(), rel.rec.get(schema, i)?))
                    })
                    .collect(),
            })
            .collect();
        Ok(Page {
            profile_a: view.profile.id.clone(),
            xxh_a: view.profile.xxh,
            db_b: schema.db_b(),
            total_count,
            rows,
        })
    }
}
