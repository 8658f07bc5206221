//! The profile directory: interns `(database, profile_id)` as small integer slots.
//!
//! A slot is a small integer, unique among live profiles, that keys the writer-side
//! tables (targets, positions, reverse index) compactly. The id map is lock-free for
//! readers; a profile is only created or removed by a writer that holds the lock of the
//! profile's shard, so two writers never race to create the same profile.
//!
//! Profiles themselves live in the slot table's cells (`profile::slots`), their life
//! `Pending -> Live -> Deleted` with them; the directory creates, activates, finds and
//! removes them, and hands out copies (slot, database, id, birth).

mod ids;
pub(crate) mod index;
pub(crate) mod resolver;

use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use self::ids::{IdTable, IdWriter};
use crate::directory::index::Index;
use crate::error::Error;
use crate::limits::MAX_LOOKUP_CANDIDATES;
use crate::profile::cell::Life;
use crate::profile::data::{Normalized, Query};
#[cfg(test)]
use crate::profile::id::ProfileId;
use crate::profile::slots::SlotTable;
use crate::profile::{FrozenProfile, Profile, ProfileKey};

/// Profile slots an engine hands out (2^31: slots 0 to 2^31 - 1): a block names an
/// initiator by its slot beside a flag bit (`accum::top::initiator_words`).
pub(crate) const MAX_SLOTS: u32 = 1 << 31;
/// A profile's state at a snapshot point, kept by the first change after it.
#[derive(Debug)]
enum Before {
    Live(Option<Arc<Normalized>>),
    Deleting,
}

/// What the changes since a snapshot point kept of the profiles' state at it.
#[derive(Debug, Default)]
struct Kept {
    /// The point being taken (0: none).
    point: u32,
    /// The slots in use at the point (every slot below was taken before it): the
    /// walk of [`Directory::take_point`] visits these and no more.
    slots: u32,
    before: Vec<(Profile, Before)>,
}

/// What a writer finds under an id.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A live profile.
    Live(Profile),
    /// A profile whose delete is under way.
    Deleting,
    /// No profile.
    Missing,
}

impl Lookup {
    pub(crate) fn live(self) -> Option<Profile> {
        match self {
            Lookup::Live(p) => Some(p),
            _ => None,
        }
    }
}

/// What the slot lock guards: slots handed out and given back, and the right to
/// change the id table.
#[derive(Debug, Default)]
struct Slots {
    next: u32,
    free: Vec<u32>,
    ids: IdWriter,
}

impl Slots {
    /// Whether `n` more profiles fit: in freed slots first, then in fresh ones below
    /// [`MAX_SLOTS`].
    fn room(&self, n: usize) -> bool {
        n.saturating_sub(self.free.len()) <= (MAX_SLOTS - self.next) as usize
    }

    /// The slot a new profile takes (there is [`room`](Self::room)): the last one
    /// freed, else the next fresh one, which `table` then has room for.
    fn take(&mut self, table: &SlotTable) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            table.grow(self.next - 1);
            self.next - 1
        })
    }
}

/// All live profiles, by id and by the secondary indexes.
#[derive(Debug)]
pub(crate) struct Directory {
    /// `(db, id)` -> slot, read without a lock; changed under the slot lock.
    ids: IdTable,
    index: Index,
    slots: Mutex<Slots>,
    /// Slot -> profile, shared with the store.
    table: Arc<SlotTable>,
    /// Live profiles (made live, not yet deleted).
    live: std::sync::atomic::AtomicUsize,
    /// The snapshot point being taken, 0 when none (see [`begin_point`](Self::begin_point)).
    point: AtomicU32,
    /// Profiles' state at that point, kept by the first change to each after it.
    kept: Mutex<Kept>,
}

/// What a lookup other than by id found.
#[derive(Debug)]
pub(crate) enum Found {
    One(Profile),
    None,
    Many,
    /// The lookup examined [`MAX_LOOKUP_CANDIDATES`] profiles without settling (a
    /// custom query whose every tag is held by more): refused rather than scanned.
    TooBroad,
}

impl Directory {
    /// A directory whose map reclaims through `collector` (shared with the engine's
    /// other maps, so one guard serves a whole read).
    pub(crate) fn new(collector: &Arc<seize::Collector>) -> Self {
        Directory {
            ids: IdTable::default(),
            index: Index::new(collector),
            slots: Mutex::new(Slots::default()),
            table: Arc::new(SlotTable::default()),
            live: std::sync::atomic::AtomicUsize::new(0),
            point: AtomicU32::new(0),
            kept: Mutex::new(Kept::default()),
        }
    }

    /// The slot table, to share with the store.
    pub(crate) fn slot_table(&self) -> &Arc<SlotTable> {
        &self.table
    }

    /// What `f` makes of the profile of `key` (live, pending or being deleted), if
    /// the directory holds one. Lock-free: one probe of the id table, then the slot
    /// table.
    fn with<R>(&self, key: &ProfileKey, f: impl Fn(Profile, Life) -> R) -> Option<R> {
        let hash = self.ids.hash(key.db, &key.id);
        self.ids.find(hash, |slot| {
            let (born, life) = self.table.holds(slot, key.db, &key.id)?;
            let profile = Profile {
                slot,
                db: key.db,
                id: key.id.clone(),
                born,
            };
            Some(f(profile, life))
        })
    }

    /// The live profile `id` of database `db`. Lock-free.
    pub(crate) fn get(&self, key: &ProfileKey) -> Option<Profile> {
        self.with(key, |p, life| (life == Life::Live).then_some(p))
            .flatten()
    }

    /// The profile `id` of database `db` for a writer holding its shard's lock: live,
    /// being deleted, or missing. (A pending profile is only ever seen by the write
    /// creating it, which holds the same lock until it is live or abandoned.)
    pub(crate) fn lookup(&self, key: &ProfileKey) -> Lookup {
        self.with(key, |p, life| {
            if life == Life::Deleted {
                Lookup::Deleting
            } else {
                debug_assert_eq!(life, Life::Live, "a pending profile outside its write");
                Lookup::Live(p)
            }
        })
        .unwrap_or(Lookup::Missing)
    }

    /// Number of live profiles.
    pub(crate) fn live(&self) -> usize {
        self.live.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Creates the profile, pending: no read finds it until [`activate`](Self::activate).
    /// The caller holds its shard's lock, saw it missing, and activates or
    /// [`abandon`](Self::abandon)s it before releasing the lock.
    pub(crate) fn create(&self, key: ProfileKey) -> Result<Profile, Error> {
        // What `create_many` does, for one and without its lists: a new profile
        // allocates itself alone (and the tables' amortised growth).
        let hash = self.ids.hash(key.db, &key.id);
        let (slot, born) = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if !slots.room(1) {
                return Err(Error::CapacityExceeded);
            }
            let slot = slots.take(&self.table);
            self.ids.insert(&mut slots.ids, hash, slot);
            (slot, self.table.next_born(1))
        };
        Ok(self.make(key, slot, born))
    }

    /// The profile of `key` in `slot`, pending, put in the slot table (its id-table
    /// entry is in already).
    fn make(&self, key: ProfileKey, slot: u32, born: u64) -> Profile {
        // Made after a point: in no snapshot taken at it.
        let point = self.point.load(std::sync::atomic::Ordering::Acquire);
        let profile = Profile {
            slot,
            db: key.db,
            id: key.id,
            born,
        };
        self.table.put(&profile, point);
        profile
    }

    /// Creates many profiles, pending, as [`create`](Self::create) does one: their
    /// slots and births are taken under the slot lock at once, then the profiles are
    /// made and published on up to `threads` threads. Every key must be missing, and
    /// stay so (the caller holds the locks of their shards).
    pub(crate) fn create_many(
        &self,
        items: Vec<ProfileKey>,
        threads: usize,
    ) -> Result<Vec<Profile>, Error> {
        let n = items.len();
        let (slots, born) = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if !slots.room(n) {
                return Err(Error::CapacityExceeded);
            }
            let taken: Vec<u32> = (0..n).map(|_| slots.take(&self.table)).collect();
            // The entries go in first: until its profile is in the slot table, an
            // entry is checked and passed over by whoever probes it.
            if n > 1 {
                self.ids.reserve(&mut slots.ids, n);
            }
            for (key, &slot) in items.iter().zip(&taken) {
                let hash = self.ids.hash(key.db, &key.id);
                self.ids.insert(&mut slots.ids, hash, slot);
            }
            (taken, self.table.next_born(n as u64))
        };
        let make = |part: Vec<(ProfileKey, (u32, u64))>| -> Vec<Profile> {
            part.into_iter()
                .map(|(key, (slot, born))| self.make(key, slot, born))
                .collect()
        };
        let work: Vec<_> = items
            .into_iter()
            .zip(slots.into_iter().zip(born..))
            .collect();
        let parts = crate::parallel::split(work, threads);
        Ok(crate::parallel::run(parts, make)
            .into_iter()
            .flatten()
            .collect())
    }

    /// Makes a created profile visible, with everything published for it so far.
    pub(crate) fn activate(&self, profile: &Profile) {
        debug_assert_eq!(self.table.life(profile), Life::Pending);
        self.live.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.table.set_life(profile, Life::Live);
    }

    /// Undoes a [`create`](Self::create) whose write was refused (the log could not
    /// take it): the profile was never visible; its id and slot are free again.
    pub(crate) fn abandon(&self, profile: &Profile) {
        debug_assert_eq!(self.table.life(profile), Life::Pending);
        self.unindex(profile);
        self.forget(profile);
    }

    /// Starts a delete: reads no longer find the profile (by id or by any index), and
    /// writes wait for the delete to end before they re-create its id. The caller holds
    /// the profile's shard lock.
    pub(crate) fn unlink(&self, profile: &Profile) {
        self.keep_before(profile);
        self.table.set_life(profile, Life::Deleted);
        self.live.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.unindex(profile);
    }

    fn unindex(&self, profile: &Profile) {
        if let Some(old) = self.table.swap_data(profile.slot, None) {
            for key in old.keys(profile.db) {
                self.index.remove(&key, profile.slot);
            }
        }
    }

    /// Replaces a live profile's data and its index entries. The caller holds the
    /// profile's shard lock. New entries go in before the data changes and old ones
    /// come out after, so a concurrent lookup finds the profile under old or new data,
    /// never under neither.
    pub(crate) fn set_data(&self, profile: &Profile, data: Normalized) {
        self.keep_before(profile);
        let old_keys = self
            .table
            .with_data(profile.slot, |d| d.map(|d| d.keys(profile.db)))
            .unwrap_or_default();
        let new_keys = data.keys(profile.db);
        for key in &new_keys {
            if !old_keys.contains(key) {
                self.index.add(key.clone(), profile.slot);
            }
        }
        // Empty data is no data: an id-only profile keeps no allocation for it.
        let empty = data == Normalized::default();
        self.table
            .swap_data(profile.slot, (!empty).then(|| Arc::new(data)));
        for key in &old_keys {
            if !new_keys.contains(key) {
                self.index.remove(key, profile.slot);
            }
        }
    }

    /// The live profile of database `db` answering `query`: one, none or several.
    /// Lock-free; `guard` must come from the shared collector.
    pub(crate) fn find(&self, db: u32, query: &Query, guard: &impl seize::Guard) -> Found {
        let keys = query.keys(db);
        let Some((first_key, tag_keys)) = keys.split_first() else {
            return Found::None;
        };
        let first = self.index.get(first_key, guard);
        // For a custom query, the profiles holding every tag are among those under the
        // rarest tag (and none if one tag has no entry at all).
        let rarest = tag_keys
            .iter()
            .map(|k| self.index.get(k, guard))
            .collect::<Option<Vec<_>>>()
            .and_then(|postings| postings.into_iter().min_by_key(|p| p.len()));
        let mut found: Option<Profile> = None;
        let mut many = false;
        let mut examined = 0usize;
        let mut broad = false;
        let postings = first
            .into_iter()
            .map(|p| (false, p))
            .chain(rarest.map(|p| (true, p)));
        for (tags, posting) in postings {
            posting.each(|slot| {
                // Only a tag's holders are capped: the profiles under one email, phone
                // or field value are the few that share it.
                if tags {
                    examined += 1;
                    if examined > MAX_LOOKUP_CANDIDATES {
                        broad = true;
                        return false;
                    }
                }
                // The slot's profile, then the slot's data, then that profile's life:
                // a profile still live after its slot's data was read held that data
                // (see `profile::slots`).
                let hit = self.table.read(slot).and_then(|(p, _)| {
                    let matches = self
                        .table
                        .with_data(slot, |d| d.is_some_and(|d| d.matches(query)));
                    (matches && self.table.is_live(&p)).then_some(p)
                });
                if let Some(p) = hit {
                    match &found {
                        Some(f) if f.same(&p) => {}
                        Some(_) => many = true,
                        None => found = Some(p),
                    }
                }
                !many
            });
            if many {
                return Found::Many;
            }
            if broad {
                return Found::TooBroad;
            }
        }
        found.map_or(Found::None, Found::One)
    }

    /// The data of `profile`, found live: `None` if it is no longer live (its slot
    /// may hold another's data by now), else its data if it has any. Lock-free.
    pub(crate) fn data(&self, profile: &Profile) -> Option<Option<Arc<Normalized>>> {
        let data = self.table.data(profile.slot);
        self.table.is_live(profile).then_some(data)
    }

    /// Ends a delete: no relation refers to the profile any more, so its id may be
    /// created again and its slot reused. The caller holds the profile's shard lock.
    pub(crate) fn release(&self, profile: &Profile) {
        debug_assert_eq!(self.table.life(profile), Life::Deleted);
        self.keep_before(profile);
        self.forget(profile);
    }

    fn forget(&self, profile: &Profile) {
        let hash = self.ids.hash(profile.db, &profile.id);
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        self.ids.remove(&mut slots.ids, hash, profile.slot);
        self.table.free(profile);
        slots.free.push(profile.slot);
    }

    /// Every live profile (for state sweeps in tests and tools). Walks the slot table,
    /// which only grows and is walked without a guard, over the slots handed out: its
    /// time is bounded by them whatever writers do meanwhile.
    pub(crate) fn all(&self) -> Vec<Profile> {
        let end = self.slots.lock().unwrap_or_else(|e| e.into_inner()).next;
        let mut all = Vec::new();
        self.table.each(end, |p, life| {
            if life == Life::Live {
                all.push(p);
            }
        });
        all
    }

    /// Starts a snapshot point: from now on the first change to each profile (its
    /// data, its delete starting or ending) keeps its state at the point aside, and
    /// profiles created are stamped as made after it, until
    /// [`take_point`](Self::take_point). The caller holds every shard lock (so every
    /// change is before the point or sees it) and takes one point at a time.
    pub(crate) fn begin_point(&self, point: u32) {
        debug_assert_ne!(point, 0);
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner()).next;
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.point = point;
        kept.slots = slots;
        drop(kept);
        self.point
            .store(point, std::sync::atomic::Ordering::Release);
    }

    /// Keeps `profile`'s state at the point being taken, if this is its first change
    /// since. The caller holds the profile's shard lock, and changes it next.
    fn keep_before(&self, profile: &Profile) {
        use std::sync::atomic::Ordering::{Acquire, Release};
        let point = self.point.load(Acquire);
        if point == 0 || self.table.point(profile.slot) == point {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        // The point ended meanwhile: its walk is over.
        if kept.point != point || self.table.point(profile.slot) == point {
            return;
        }
        let before = if self.table.is_deleted(profile) {
            Before::Deleting
        } else {
            Before::Live(self.table.data(profile.slot))
        };
        kept.before.push((profile.clone(), before));
        self.table.set_point(profile.slot, point);
        // Pairs with the fence of `take_point`'s walk: a walk that sees the change
        // about to be made sees this stamp, and takes the state kept instead.
        std::sync::atomic::fence(Release);
    }

    /// Every profile, live or being deleted at the point `begin_point` started (the
    /// live ones with their data then), and ends the point. Runs beside writers:
    /// a profile unchanged since the point is read as it is (checked by its stamp
    /// after the read), a changed one taken from what its first change kept.
    ///
    /// The walk visits the slots in use at the point, once each, through the slot
    /// table (see [`all`](Self::all) for why not the id map): its time is bounded by
    /// the profiles at the point, and what it keeps by the profiles changed since,
    /// whatever writers do meanwhile. A profile made since, in a fresh slot or a reused
    /// one, is stamped at birth and skipped; one released since was kept first.
    pub(crate) fn take_point(&self) -> (Vec<FrozenProfile>, Vec<u32>) {
        use std::sync::atomic::Ordering::Acquire;
        let point = self.point.load(Acquire);
        let end = self.kept.lock().unwrap_or_else(|e| e.into_inner()).slots;
        let (mut live, mut deleting) = (Vec::with_capacity(self.live()), Vec::new());
        self.table.each(end, |p, life| {
            let (deleted, pending, data) = (
                life == Life::Deleted,
                life == Life::Pending,
                self.table.data(p.slot),
            );
            std::sync::atomic::fence(Acquire);
            if self.table.point(p.slot) == point {
                return; // made or changed since the point: see `kept`
            }
            // No write was under way at the point, so none created a profile then.
            debug_assert!(!pending, "a pending profile made before the point");
            if pending {
                return;
            }
            if deleted {
                deleting.push(p.slot);
            } else {
                live.push((p, data));
            }
        });
        let before = {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.point = 0;
            self.point.store(0, std::sync::atomic::Ordering::Release);
            std::mem::take(&mut kept.before)
        };
        // A profile read by the walk before its first change is kept too (the same
        // state): the kept one stands.
        let changed: hashbrown::HashSet<(u32, u64)> =
            before.iter().map(|(p, _)| (p.slot, p.born)).collect();
        live.retain(|(p, _)| !changed.contains(&(p.slot, p.born)));
        for (p, state) in before {
            match state {
                Before::Live(data) => live.push((p, data)),
                Before::Deleting => deleting.push(p.slot),
            }
        }
        deleting.sort_unstable();
        deleting.dedup();
        (live, deleting)
    }
}

/// Profiles for the unit tests of the modules that hold them.
#[cfg(test)]
impl Directory {
    /// A directory of its own, with its own collector.
    pub(crate) fn for_test() -> Self {
        Directory::new(&Arc::new(seize::Collector::new()))
    }

    /// Creates profile `name` of database `db`.
    pub(crate) fn create_for_test(&self, db: u32, name: &str) -> Profile {
        let id = ProfileId::new(name).expect("a valid test id");
        self.create(ProfileKey { db, id }).expect("a free slot")
    }
}
