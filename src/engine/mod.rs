//! The engine facade: validates each call, names its profiles (the directory), logs
//! it, then calls the store. Nothing below this module calls back up.

use std::sync::{Arc, Mutex};

use crate::directory::Directory;
use crate::directory::resolver::Resolver;
use crate::error::Error;
use crate::limits::{DEFAULT_SHARDS, DEFAULT_TOP_INDEX_THRESHOLD, MAX_SHARDS};
use crate::profile::ProfileKey;
use crate::profile::data::Match;
use crate::profile::id::{ProfileHasher, ProfileId, xxh64};
use crate::schema::{RelationType, Schema};
use crate::store::Store;
use crate::value::Value;
use schemas::Schemas;

pub use compactor::{AutoCompact, Compactor};

mod batch;
mod bulk;
mod compactor;
mod durable;
#[cfg(test)]
mod fault_tests;
mod load;
mod profiles;
mod read;
mod schemas;
mod write;

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
    schemas: Schemas,
    define_lock: Mutex<()>,
    directory: Directory,
    store: Store,
    resolver: Option<Arc<dyn Resolver>>,
    /// The write log, once the engine was opened on a data directory.
    log: std::sync::OnceLock<crate::persist::log::Log>,
    /// Its data directory, locked (dropped after the log, which syncs as it goes).
    data_dir: std::sync::OnceLock<crate::persist::dir::DataDir>,
    /// Serialises snapshot saves and compactions; holds the last snapshot point taken
    /// (see `freeze`).
    snapshot_lock: Mutex<u32>,
    /// What recovery skipped (see [`Engine::recovery_skipped`]).
    skipped: Mutex<Vec<crate::persist::Skipped>>,
    /// When the log is due for compaction (see [`Engine::compaction_due`]).
    auto_compact: AutoCompact,
}

/// Settings of an [`Engine`]; start from [`Engine::builder`].
#[derive(Clone)]
#[must_use]
pub struct EngineBuilder {
    shards: usize,
    hasher: ProfileHasher,
    index_above: usize,
    resolver: Option<Arc<dyn Resolver>>,
    auto_compact: AutoCompact,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("shards", &self.shards)
            .field("index_above", &self.index_above)
            .field("resolver", &self.resolver.is_some())
            .finish_non_exhaustive()
    }
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
    /// index of them (default [`DEFAULT_TOP_INDEX_THRESHOLD`], 64); smaller ones keep none and
    /// rescan their few relations when a top member leaves. A lower threshold spends
    /// memory (about 40 bytes per indexed relation) to bound that rescan; tests set it
    /// low to exercise both paths on small data.
    pub fn top_index_threshold(mut self, n: usize) -> Self {
        self.index_above = n;
        self
    }

    /// Answers lookups by email, phone and custom field from the host's own store
    /// instead of the built-in directory (see [`Resolver`]). Lookups by id are always
    /// the engine's.
    pub fn resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// When a durable engine's log is due for compaction (default
    /// [`AutoCompact::default`]: the log at least 64 MiB and as large as the last
    /// snapshot): what [`Engine::compact_if_due`] and a [`Compactor`] go by.
    pub fn auto_compact(mut self, policy: AutoCompact) -> Self {
        self.auto_compact = policy;
        self
    }

    /// Builds the engine.
    #[must_use]
    pub fn build(self) -> Engine {
        let collector = Arc::new(seize::Collector::new());
        let directory = Directory::new(&collector);
        let slots = Arc::clone(directory.slot_table());
        Engine {
            schemas: Schemas::new(&collector),
            define_lock: Mutex::new(()),
            directory,
            store: Store::new(
                &collector,
                self.shards,
                self.index_above,
                slots,
                self.hasher,
            ),
            collector,
            resolver: self.resolver,
            log: std::sync::OnceLock::new(),
            data_dir: std::sync::OnceLock::new(),
            snapshot_lock: Mutex::new(0),
            skipped: Mutex::new(Vec::new()),
            auto_compact: self.auto_compact,
        }
    }
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            shards: DEFAULT_SHARDS,
            hasher: xxh64,
            index_above: DEFAULT_TOP_INDEX_THRESHOLD,
            resolver: None,
            auto_compact: AutoCompact::default(),
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("shards", &self.store.shard_count())
            .field("relation_types", &self.schemas.len())
            .field("profiles", &self.directory.live())
            .finish_non_exhaustive()
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
    /// The recipient (database A) profile.
    pub profile_a: ProfileId,
    /// Its hash.
    pub xxh_a: u64,
    /// The initiators' database.
    pub db_b: u32,
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
    /// The lookup that found it in the directory's indexes, checked again under the
    /// profile's lock (its data may have changed since). `None` for a profile named
    /// by id or by the host's resolver: only those may be created by a write.
    query: Option<crate::profile::data::Query>,
}

/// Named profiles, each distinct one once, in the order first named; found again by
/// the hash already computed (kept beside each index, so growing the table reads no
/// profile).
#[derive(Default)]
struct Interned {
    named: Vec<Named>,
    known: hashbrown::HashTable<(u64, u32)>,
}

impl Interned {
    /// `named`'s index in the table, and whether it was new there.
    fn intern(&mut self, named: Named) -> Result<(u32, bool), Error> {
        let (hash, all) = (named.hash, &self.named);
        let eq = |&(h, i): &(u64, u32)| h == hash && all[i as usize].key == named.key;
        if let Some(&(_, i)) = self.known.find(hash, eq) {
            return Ok((i, false));
        }
        let i = u32::try_from(self.named.len()).map_err(|_| Error::CapacityExceeded)?;
        self.known.insert_unique(hash, (hash, i), |&(h, _)| h);
        self.named.push(named);
        Ok((i, true))
    }
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
        self.store.shard_count()
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
        if let Some(same) = self.schemas.get(rel_id).map(|s| s.same_as(&def)) {
            return if same {
                Ok(())
            } else {
                Err(Error::SchemaConflict { rel_id })
            };
        }
        let schema = Schema::compile(def)?;
        self.log(|| crate::command::Command::Define(schema.def.clone()))?;
        self.schemas.insert(schema);
        Ok(())
    }

    /// Checks a definition as [`define`](Self::define) would, defining nothing.
    ///
    /// # Errors
    ///
    /// As [`define`](Self::define)'s, but never a storage error.
    pub fn check_definition(&self, def: &RelationType) -> Result<(), Error> {
        match self.schemas.get(def.rel_id()).map(|s| s.same_as(def)) {
            Some(true) => Ok(()),
            Some(false) => Err(Error::SchemaConflict {
                rel_id: def.rel_id(),
            }),
            None => Schema::compile(def.clone()).map(|_| ()),
        }
    }

    /// Checks weights against relation `rel_id`'s schema as a write would (known
    /// names, each value of its property's type, finite floats within range), writing
    /// nothing. What depends on a relation's current values (a strengthen taking an
    /// int out of the i64 range) is only known when the write is made.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownRelation`], or the weights' error as a write names it.
    pub fn check_weights(&self, rel_id: u32, weights: &[(&str, Value)]) -> Result<(), Error> {
        self.schema(rel_id)?.resolve(weights).map(|_| ())
    }

    /// The definition of `rel_id`, if defined.
    #[must_use]
    pub fn relation_type(&self, rel_id: u32) -> Option<RelationType> {
        self.schemas.get(rel_id).map(|s| s.def.clone())
    }

    /// Whether a host's [`Resolver`](crate::Resolver) names profiles (a write may then
    /// create a profile it names by email, phone or field).
    #[cfg(feature = "json")]
    pub(crate) fn has_resolver(&self) -> bool {
        self.resolver.is_some()
    }

    /// The most entries a counter of `rel_id` holds: one a property, and its top
    /// list's size (`None` when `rel_id` is not defined).
    #[cfg(feature = "json")]
    pub(crate) fn counter_entries(&self, rel_id: u32) -> Option<usize> {
        self.schemas.get(rel_id).map(|s| {
            s.props
                .iter()
                .map(|p| 1 + p.spec.top_size().map_or(0, usize::from))
                .sum()
        })
    }

    /// How many relation types are defined.
    #[must_use]
    pub fn relation_type_count(&self) -> usize {
        self.schemas.len()
    }

    /// The schema of `rel_id`, borrowed (see `engine::schemas`: no reference count).
    fn schema(&self, rel_id: u32) -> Result<&Arc<Schema>, Error> {
        self.schemas
            .get(rel_id)
            .ok_or(Error::UnknownRelation { rel_id })
    }

    /// Whether a profile of database `db_id` answers `profile` (an id, or any
    /// [`Match`]: exactly one profile must answer).
    #[must_use]
    pub fn contains_profile<'a>(&self, db_id: u32, profile: impl Into<Match<'a>>) -> bool {
        let guard = self.collector.enter();
        self.find_profile(db_id, &profile.into(), &guard).is_ok()
    }

    /// The id of the profile of database `db_id` that `profile` names (an id, or any
    /// [`Match`]: exactly one profile must answer). A cluster's entry host names a
    /// profile this way by its directory of profile data, then places the call by
    /// the id.
    ///
    /// # Errors
    ///
    /// As a read's lookup: [`Error::ProfileNotFound`] or [`Error::NoMatch`] when
    /// none answers, [`Error::Ambiguous`] when several do, [`Error::LookupTooBroad`],
    /// [`Error::InvalidProfileId`] or [`Error::InvalidArgument`] for a query that
    /// cannot be asked.
    ///
    /// # Examples
    ///
    /// ```
    /// use relcount::{Engine, Match, ProfileData};
    ///
    /// let engine = Engine::new();
    /// let data = ProfileData { email: Some("ann@example.com".into()), ..Default::default() };
    /// engine.import_profile(1, "ann", data)?;
    /// let by_email = Match::Email { email: "Ann@Example.com", resource_id: None };
    /// assert_eq!(engine.profile_id(1, by_email)?, "ann");
    /// assert!(engine.profile_id(1, Match::EmailProfile("bob@example.com")).is_err());
    /// # Ok::<(), relcount::Error>(())
    /// ```
    pub fn profile_id<'a>(
        &self,
        db_id: u32,
        profile: impl Into<Match<'a>>,
    ) -> Result<String, Error> {
        let guard = self.collector.enter();
        self.find_profile(db_id, &profile.into(), &guard)
            .map(|p| p.id.to_string())
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

    /// Number of live profiles, all databases together (not those whose creating
    /// write is under way, nor those whose delete is).
    #[must_use]
    pub fn profile_count(&self) -> usize {
        self.directory.live()
    }

    /// Number of relations, all relation types together (one atomic load; a write's
    /// relations count once it is applied).
    #[must_use]
    pub fn relation_count(&self) -> u64 {
        self.store.relation_count()
    }

    /// Test hook: holds shard `shard`'s lock, as a long write,
    /// import or delete cascade does.
    #[cfg(all(test, feature = "json"))]
    pub(crate) fn hold_shard_for_test(&self, shard: usize) -> crate::store::Held<'_> {
        self.store.lock(shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Engine>();
        check::<crate::Counter>();
    }
}
