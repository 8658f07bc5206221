//! The engine facade: validates each call, then drives the directory, the shards and
//! the accumulators. Nothing below this module calls back up.

use std::sync::{Arc, Mutex};

use hashbrown::DefaultHashBuilder;

use crate::accum::counter::{Counter, Rel, View};
use crate::accum::target::Target;
use crate::accum::top::DEFAULT_INDEX_ABOVE;
use crate::directory::{Directory, Lookup, Profile, ProfileKey};
use crate::error::Error;
use crate::profile_id::{ProfileHasher, ProfileId, xxh64};
use crate::record::{Record, WriteKind};
use crate::schema::{RelationType, Schema, Value};
use crate::shard::{Locked, Shard, Shards, TargetKey};

/// Default number of shards.
pub const DEFAULT_SHARDS: usize = 64;
/// Most shards an engine may have.
pub const MAX_SHARDS: usize = 1 << 16;
/// Default page size of [`Engine::list`].
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Largest page size of [`Engine::list`].
pub const MAX_LIST_LIMIT: usize = 1000;

/// The relation counter engine. `Send + Sync`: share it with an `Arc` and call it from
/// any thread; every method takes `&self`.
///
/// # Examples
///
/// ```
/// use relcount::{Engine, PropSpec, RelationType, Value};
///
/// let engine = Engine::new();
/// engine.define(
///     RelationType::new(3, 1, 2)
///         .prop("Donate", PropSpec::int().top(10))
///         .prop("Like", PropSpec::int().sum())
///         .prop("Subscriber", PropSpec::bool()),
/// )?;
/// engine.attach(
///     3,
///     "5c910f6bc484d023b1309bee",
///     "5c910938c484d023b1309bab",
///     &[("Donate", Value::Int(20)), ("Like", Value::Int(2)), ("Subscriber", Value::Bool(true))],
/// )?;
/// let counter = engine.get_counter(3, "5c910f6bc484d023b1309bee")?;
/// assert_eq!(counter.total(), 1);
/// # Ok::<(), relcount::Error>(())
/// ```
pub struct Engine {
    /// One reclamation domain for every lock-free map, so a read pins once.
    collector: Arc<seize::Collector>,
    schemas: papaya::HashMap<u32, Arc<Schema>, DefaultHashBuilder>,
    define_lock: Mutex<()>,
    directory: Directory,
    views: papaya::HashMap<TargetKey, Arc<View>, DefaultHashBuilder>,
    shards: Shards,
    hasher: ProfileHasher,
    index_above: usize,
}

/// Settings of an [`Engine`]; start from [`Engine::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct EngineBuilder {
    shards: usize,
    hasher: ProfileHasher,
    index_above: usize,
}

impl EngineBuilder {
    /// Number of shards (rounded up to a power of two, clamped to 1..=65536; default
    /// [`DEFAULT_SHARDS`]). More shards let more writers run at once, at about 200
    /// bytes each; reads take no lock whatever the count.
    pub fn shards(mut self, count: usize) -> Self {
        self.shards = count.clamp(1, MAX_SHARDS).next_power_of_two();
        self
    }

    /// The hash that places profiles and is reported as `profile_xxh` (default
    /// [`xxh64`], as the platform). Meant for tests: a degenerate hash shows that ids
    /// whose hashes collide are still distinct profiles.
    pub fn profile_hasher(mut self, hasher: ProfileHasher) -> Self {
        self.hasher = hasher;
        self
    }

    /// Targets with more than `n` relations valued in a top property keep an ordered
    /// index of them (default [`DEFAULT_INDEX_ABOVE`], 64); smaller ones keep none and
    /// rescan their few relations when a top member leaves. A lower threshold spends
    /// memory (about 40 bytes per indexed relation) to bound that rescan; tests set it
    /// low to exercise both paths on small data.
    pub fn top_index_threshold(mut self, n: usize) -> Self {
        self.index_above = n;
        self
    }

    /// Builds the engine.
    #[must_use]
    pub fn build(self) -> Engine {
        let collector = Arc::new(seize::Collector::new());
        Engine {
            schemas: lock_free_map(&collector),
            define_lock: Mutex::new(()),
            directory: Directory::new(&collector),
            views: lock_free_map(&collector),
            collector,
            shards: Shards::new(self.shards),
            hasher: self.hasher,
            index_above: self.index_above,
        }
    }
}

fn lock_free_map<K, V>(
    collector: &Arc<seize::Collector>,
) -> papaya::HashMap<K, V, DefaultHashBuilder>
where
    K: Send + 'static,
    V: Send + 'static,
{
    papaya::HashMap::builder()
        .hasher(DefaultHashBuilder::default())
        .shared_collector(Arc::clone(collector))
        .build()
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            shards: DEFAULT_SHARDS,
            hasher: xxh64,
            index_above: DEFAULT_INDEX_ABOVE,
        }
    }
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

/// One page of [`Engine::list`].
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Relations of the profile for the relation type, all pages together.
    pub total_count: u64,
    /// The page, ordered by initiator profile id.
    pub rows: Vec<Row>,
}

/// One relation in a [`Page`].
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The initiator (database B) profile.
    pub profile_b: ProfileId,
    /// Its hash.
    pub xxh_b: u64,
    /// The properties that have a value in this relation, in schema order.
    pub props: Vec<(String, Value)>,
}

/// A profile named by a call, before it is looked up.
struct Named {
    key: ProfileKey,
    hash: u64,
    shard: usize,
}

impl Engine {
    /// An engine with default settings.
    #[must_use]
    pub fn new() -> Self {
        EngineBuilder::default().build()
    }

    /// Settings beyond the defaults.
    ///
    /// # Examples
    ///
    /// ```
    /// let engine = relcount::Engine::builder().shards(8).build();
    /// assert_eq!(engine.shard_count(), 8);
    /// ```
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The number of shards.
    #[must_use]
    pub fn shard_count(&self) -> usize {
        self.shards.count()
    }

    // ----- relation types -------------------------------------------------------------

    /// Defines a relation type. Defining the same schema again is a no-op.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSchema`] for a schema that breaks a rule (bool with sum or top,
    /// top outside 1..=1000, a duplicate or empty name, more than 32 properties);
    /// [`Error::SchemaConflict`] when `rel_id` is defined with another schema.
    pub fn define(&self, def: RelationType) -> Result<(), Error> {
        let _serial = self.define_lock.lock().unwrap_or_else(|e| e.into_inner());
        let rel_id = def.rel_id();
        if let Some(existing) = self.schemas.pin().get(&rel_id) {
            return if existing.same_as(&def) {
                Ok(())
            } else {
                Err(Error::SchemaConflict { rel_id })
            };
        }
        let schema = Schema::compile(def)?;
        self.schemas.pin().insert(rel_id, Arc::new(schema));
        Ok(())
    }

    /// The definition of `rel_id`, if defined.
    #[must_use]
    pub fn relation_type(&self, rel_id: u32) -> Option<RelationType> {
        self.schemas.pin().get(&rel_id).map(|s| s.def.clone())
    }

    fn schema(&self, rel_id: u32) -> Result<Arc<Schema>, Error> {
        self.schemas
            .pin()
            .get(&rel_id)
            .cloned()
            .ok_or(Error::UnknownRelation { rel_id })
    }

    fn name(&self, db: u32, id: &str) -> Result<Named, Error> {
        let id = ProfileId::new(id)?;
        let hash = (self.hasher)(id.as_str().as_bytes());
        Ok(Named {
            key: ProfileKey { db, id },
            hash,
            shard: self.shards.of(hash),
        })
    }

    fn not_found(named: &Named) -> Error {
        Error::ProfileNotFound {
            db_id: named.key.db,
            profile_id: named.key.id.to_string(),
        }
    }

    // ----- writes ---------------------------------------------------------------------

    /// Creates the relation from `profile_b` (database B) to `profile_a` (database A)
    /// with exactly the given values; an existing relation has all its values replaced,
    /// so a replayed attach is idempotent. Missing profiles are created.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownRelation`], [`Error::InvalidProfileId`], and for the weights
    /// [`Error::UnknownProperty`], [`Error::DuplicateProperty`], [`Error::WrongType`],
    /// [`Error::NotFinite`], [`Error::FloatOverflow`]. Nothing is written on error.
    pub fn attach<N: AsRef<str>>(
        &self,
        rel_id: u32,
        profile_a: &str,
        profile_b: &str,
        weights: &[(N, Value)],
    ) -> Result<(), Error> {
        self.write(WriteKind::Attach, rel_id, profile_a, profile_b, weights)
    }

    /// Adds the given deltas to the relation's numeric values (an unset value counts as
    /// 0; a negative delta weakens) and sets the given bools. Creates the relation (and
    /// missing profiles) if needed.
    ///
    /// # Errors
    ///
    /// As [`attach`](Self::attach), plus [`Error::IntOverflow`] when an int would leave
    /// the i64 range and [`Error::FloatOverflow`] when a float would exceed 2^960.
    pub fn strengthen<N: AsRef<str>>(
        &self,
        rel_id: u32,
        profile_a: &str,
        profile_b: &str,
        deltas: &[(N, Value)],
    ) -> Result<(), Error> {
        self.write(WriteKind::Strengthen, rel_id, profile_a, profile_b, deltas)
    }

    /// Overwrites the given values; the others keep theirs. Creates the relation (and
    /// missing profiles) if needed.
    ///
    /// # Errors
    ///
    /// As [`attach`](Self::attach).
    pub fn edit<N: AsRef<str>>(
        &self,
        rel_id: u32,
        profile_a: &str,
        profile_b: &str,
        values: &[(N, Value)],
    ) -> Result<(), Error> {
        self.write(WriteKind::Edit, rel_id, profile_a, profile_b, values)
    }

    fn write<N: AsRef<str>>(
        &self,
        kind: WriteKind,
        rel_id: u32,
        profile_a: &str,
        profile_b: &str,
        weights: &[(N, Value)],
    ) -> Result<(), Error> {
        let schema = self.schema(rel_id)?;
        let changes = schema.resolve(weights)?;
        let a = self.name(schema.db_a(), profile_a)?;
        let b = self.name(schema.db_b(), profile_b)?;
        let (mut locked, found_a, found_b) = loop {
            let locked = self.shards.lock_pair(a.shard, b.shard);
            match (self.directory.lookup(&a.key), self.directory.lookup(&b.key)) {
                (Lookup::Deleting, _) | (_, Lookup::Deleting) => {
                    // The id is being deleted: let the cascade (which needs these locks)
                    // finish, then create it afresh.
                    drop(locked);
                    std::thread::yield_now();
                }
                (la, lb) => break (locked, la.live(), lb.live()),
            }
        };
        let old = match (&found_a, &found_b) {
            (Some(pa), Some(pb)) => locked
                .shard(a.shard)
                .targets
                .get(&(rel_id, pa.slot))
                .and_then(|t| t.get(pb.slot))
                .map(|rel| &rel.rec),
            _ => None,
        };
        let record = Record::next(&schema, old, kind, &changes)?;
        // Everything is validated; from here on the write cannot fail but for slots.
        let pa = match found_a {
            Some(p) => p,
            None => self.directory.create(a.key, a.hash)?,
        };
        let pb = match found_b.or_else(|| self.directory.get(&b.key)) {
            Some(p) => p,
            None => self.directory.create(b.key, b.hash)?,
        };
        self.apply(
            &mut locked,
            &schema,
            (&pa, a.shard),
            (&pb, b.shard),
            Some(record),
        );
        Ok(())
    }

    /// Removes the relation from `profile_b` to `profile_a`.
    ///
    /// # Errors
    ///
    /// [`Error::ProfileNotFound`] when either profile does not exist,
    /// [`Error::RelationNotFound`] when the relation does not; plus
    /// [`Error::UnknownRelation`] and [`Error::InvalidProfileId`]. Nothing changes on
    /// error.
    pub fn detach(&self, rel_id: u32, profile_a: &str, profile_b: &str) -> Result<(), Error> {
        let schema = self.schema(rel_id)?;
        let a = self.name(schema.db_a(), profile_a)?;
        let b = self.name(schema.db_b(), profile_b)?;
        let mut locked = self.shards.lock_pair(a.shard, b.shard);
        let pa = self
            .directory
            .get(&a.key)
            .ok_or_else(|| Self::not_found(&a))?;
        let pb = self
            .directory
            .get(&b.key)
            .ok_or_else(|| Self::not_found(&b))?;
        let exists = locked
            .shard(a.shard)
            .targets
            .get(&(rel_id, pa.slot))
            .is_some_and(|t| t.get(pb.slot).is_some());
        if !exists {
            return Err(Error::RelationNotFound {
                rel_id,
                profile_a: profile_a.into(),
                profile_b: profile_b.into(),
            });
        }
        self.apply(&mut locked, &schema, (&pa, a.shard), (&pb, b.shard), None);
        Ok(())
    }

    /// Sets one relation under the locks of both ends, publishes the recipient's new
    /// counters and keeps the initiator's reverse index in step.
    fn apply(
        &self,
        locked: &mut Locked<'_>,
        schema: &Arc<Schema>,
        (pa, shard_a): (&Arc<Profile>, usize),
        (pb, shard_b): (&Arc<Profile>, usize),
        record: Option<Record>,
    ) {
        let key = (schema.rel_id(), pa.slot);
        let linked = record.is_some();
        let shard = locked.shard(shard_a);
        let target = shard
            .targets
            .entry(key)
            .or_insert_with(|| Target::new(schema, pa));
        let view = target.apply(pb, record, self.index_above);
        self.publish(shard, key, view);
        let initiated = &mut locked.shard(shard_b).initiated;
        if linked {
            initiated.entry(pb.slot).or_default().insert(key);
        } else if let Some(set) = initiated.get_mut(&pb.slot) {
            set.remove(&key);
            if set.is_empty() {
                initiated.remove(&pb.slot);
            }
        }
    }

    /// Publishes a target's new counters (keeping the shard's relation count), or
    /// drops the target once it has no relation.
    fn publish(&self, shard: &mut Shard, key: TargetKey, view: Arc<View>) {
        let now = view.rels.len() as u64;
        let guard = self.collector.enter();
        let before = self
            .views
            .get(&key, &guard)
            .map_or(0, |old| old.rels.len() as u64);
        shard.relations = shard.relations + now - before;
        if now == 0 {
            shard.targets.remove(&key);
            self.views.remove(&key, &guard);
        } else {
            self.views.insert(key, view, &guard);
        }
    }

    /// Deletes a profile and every relation it takes part in, as recipient or as
    /// initiator; the counters of every profile it touched follow. Costs O(its
    /// relations), whatever the size of the engine.
    ///
    /// Each touched counter changes atomically, but not all at once: while the delete
    /// runs, a reader may see some of its relations gone and others not yet.
    ///
    /// # Errors
    ///
    /// [`Error::ProfileNotFound`], [`Error::InvalidProfileId`].
    pub fn delete_profile(&self, db_id: u32, profile_id: &str) -> Result<(), Error> {
        let named = self.name(db_id, profile_id)?;
        let (profile, as_recipient, as_initiator) = {
            let mut shard = self.shards.lock(named.shard);
            let profile = self
                .directory
                .get(&named.key)
                .ok_or_else(|| Self::not_found(&named))?;
            self.directory.unlink(&profile);
            let as_initiator = shard
                .initiated
                .remove(&profile.slot)
                .map(|set| set.into_vec())
                .unwrap_or_default();
            let mut as_recipient = Vec::new();
            for schema in self.schemas.pin().values() {
                if schema.db_a() != db_id {
                    continue;
                }
                let key = (schema.rel_id(), profile.slot);
                if let Some(target) = shard.targets.remove(&key) {
                    self.views.pin().remove(&key);
                    shard.relations -= target.len() as u64;
                    let initiators: Vec<Arc<Profile>> = target
                        .view()
                        .rels
                        .iter()
                        .map(|rel| Arc::clone(&rel.b))
                        .collect();
                    as_recipient.push((key, initiators));
                }
            }
            (profile, as_recipient, as_initiator)
        };
        // One lock at a time from here: the profile is unlinked, so no write can add a
        // relation to it, and only this call removes the ones it had.
        for (key, initiators) in as_recipient {
            for b in initiators {
                let mut shard = self.shards.lock(self.shards.of(b.xxh));
                if let Some(set) = shard.initiated.get_mut(&b.slot) {
                    set.remove(&key);
                    if set.is_empty() {
                        shard.initiated.remove(&b.slot);
                    }
                }
            }
        }
        for key in as_initiator {
            // The recipient's shard, from its published counters; none means the target
            // emptied meanwhile and holds nothing of this profile.
            let Some(a) = self.views.pin().get(&key).map(|v| Arc::clone(&v.profile)) else {
                continue;
            };
            let mut shard = self.shards.lock(self.shards.of(a.xxh));
            let Some(target) = shard.targets.get_mut(&key) else {
                continue; // the recipient was deleted meanwhile
            };
            // The slot is not released before this loop ends, so a relation from it is
            // this profile's.
            if target.get(profile.slot).is_none() {
                continue;
            }
            let view = target.apply(&profile, None, self.index_above);
            self.publish(&mut shard, key, view);
        }
        self.directory.release(&profile);
        Ok(())
    }

    // ----- reads ----------------------------------------------------------------------

    /// The counters of `profile_a` for `rel_id`: a consistent snapshot, read without
    /// taking any lock. A known profile with no relations answers zeroed counters.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownRelation`], [`Error::InvalidProfileId`],
    /// [`Error::ProfileNotFound`].
    pub fn get_counter(&self, rel_id: u32, profile_a: &str) -> Result<Counter, Error> {
        // One guard for the three lookups: the maps share one collector.
        let guard = self.collector.enter();
        let schema = self
            .schemas
            .get(&rel_id, &guard)
            .ok_or(Error::UnknownRelation { rel_id })?;
        let a = self.name(schema.db_a(), profile_a)?;
        let profile = self
            .directory
            .get_in(&a.key, &guard)
            .ok_or_else(|| Self::not_found(&a))?;
        let view = match self.views.get(&(rel_id, profile.slot), &guard) {
            // The slot may have been reused if the profile was deleted meanwhile; a view
            // of another profile is not this one's.
            Some(view) if Arc::ptr_eq(&view.profile, profile) => Arc::clone(view),
            _ => Arc::new(View::empty(schema, profile)),
        };
        Ok(Counter::new(view))
    }

    /// One page of the relations of `profile_a` for `rel_id`, ordered by initiator id.
    /// `limit` is 1..=1000 ([`DEFAULT_LIST_LIMIT`] is the platform's default).
    ///
    /// Lock-free, from the same snapshot as [`get_counter`](Self::get_counter):
    /// `total_count` and the rows are of one moment. Sorting costs O(n + page log page)
    /// for a target of n relations.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a `limit` out of range, and as
    /// [`get_counter`](Self::get_counter).
    pub fn list(
        &self,
        rel_id: u32,
        profile_a: &str,
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
        Ok(Page { total_count, rows })
    }

    /// Whether profile `profile_id` exists in database `db_id`.
    #[must_use]
    pub fn contains_profile(&self, db_id: u32, profile_id: &str) -> bool {
        self.name(db_id, profile_id)
            .is_ok_and(|n| self.directory.get(&n.key).is_some())
    }

    /// The ids of every profile of database `db_id` (a scan: for tests and tools).
    #[must_use]
    pub fn profile_ids(&self, db_id: u32) -> Vec<ProfileId> {
        let mut ids: Vec<ProfileId> = self
            .directory
            .all()
            .into_iter()
            .filter(|p| p.db == db_id)
            .map(|p| p.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Number of live profiles, all databases together.
    #[must_use]
    pub fn profile_count(&self) -> usize {
        self.directory.len()
    }

    /// Number of relations, all relation types together (takes each shard lock in
    /// turn, briefly).
    #[must_use]
    pub fn relation_count(&self) -> u64 {
        (0..self.shards.count())
            .map(|i| self.shards.lock(i).relations)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Engine>();
        check::<Counter>();
    }
}
