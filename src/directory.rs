//! The profile directory: interns `(database, profile_id)` as small integer slots.
//!
//! A slot is a small integer, unique among live profiles, that keys the writer-side
//! tables (targets, positions, reverse index) compactly. The id map is lock-free for
//! readers; a profile is only created or removed by a writer that holds the lock of the
//! profile's shard, so two writers never race to create the same profile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use hashbrown::DefaultHashBuilder;

use crate::error::Error;
use crate::index::Index;
use crate::profile_data::{Normalized, Query};
use crate::profile_id::ProfileId;
use crate::sync::lock_free_map;

/// One live profile.
#[derive(Debug)]
pub(crate) struct Profile {
    /// Slot number, unique among live profiles (reused after a delete completes).
    pub(crate) slot: u32,
    /// The database it belongs to.
    pub(crate) db: u32,
    /// Its id.
    pub(crate) id: ProfileId,
    /// The hash that places it (XXH64 of the id, unless a test injected another hash).
    pub(crate) xxh: u64,
    /// Set, under the profile's shard lock, when a delete starts. From then on reads
    /// and deletes answer "not found", and a write that would re-create the id waits
    /// for the delete to finish, so one id never has two profiles at once.
    deleted: AtomicBool,
    /// Email, phone, fields and subscriptions; `None` for a profile only ever named by
    /// id. Replaced whole by an import, read without a lock.
    data: ArcSwapOption<Normalized>,
}

impl Profile {
    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// The profile's current data, if it was ever imported.
    pub(crate) fn data(&self) -> Option<Arc<Normalized>> {
        self.data.load_full()
    }
}

/// What a writer finds under an id.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A live profile.
    Live(Arc<Profile>),
    /// A profile whose delete is under way.
    Deleting,
    /// No profile.
    Missing,
}

impl Lookup {
    pub(crate) fn live(self) -> Option<Arc<Profile>> {
        match self {
            Lookup::Live(p) => Some(p),
            _ => None,
        }
    }
}

/// Key of the id map: ids are unique per database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ProfileKey {
    pub(crate) db: u32,
    pub(crate) id: ProfileId,
}

#[derive(Debug, Default)]
struct Slots {
    next: u32,
    free: Vec<u32>,
}

/// All live profiles, by id and by the secondary indexes.
#[derive(Debug)]
pub(crate) struct Directory {
    by_key: papaya::HashMap<ProfileKey, Arc<Profile>, DefaultHashBuilder>,
    index: Index,
    slots: Mutex<Slots>,
}

/// What a lookup other than by id found.
#[derive(Debug)]
pub(crate) enum Found {
    One(Arc<Profile>),
    None,
    Many,
}

impl Directory {
    /// A directory whose map reclaims through `collector` (shared with the engine's
    /// other maps, so one guard serves a whole read).
    pub(crate) fn new(collector: &Arc<seize::Collector>) -> Self {
        Directory {
            by_key: lock_free_map(collector),
            index: Index::new(collector),
            slots: Mutex::new(Slots::default()),
        }
    }

    /// The live profile `id` of database `db`. Lock-free.
    pub(crate) fn get(&self, key: &ProfileKey) -> Option<Arc<Profile>> {
        self.by_key
            .pin()
            .get(key)
            .filter(|p| !p.is_deleted())
            .cloned()
    }

    /// The profile `id` of database `db` for a writer: live, being deleted, or missing.
    pub(crate) fn lookup(&self, key: &ProfileKey) -> Lookup {
        match self.by_key.pin().get(key) {
            Some(p) if p.is_deleted() => Lookup::Deleting,
            Some(p) => Lookup::Live(Arc::clone(p)),
            None => Lookup::Missing,
        }
    }

    /// The live profile `id` of database `db`, borrowed for the life of `guard` (which
    /// must come from the shared collector). Lock-free, and touches no reference count.
    pub(crate) fn get_in<'g>(
        &self,
        key: &ProfileKey,
        guard: &'g impl seize::Guard,
    ) -> Option<&'g Arc<Profile>> {
        self.by_key.get(key, guard).filter(|p| !p.is_deleted())
    }

    /// Number of profiles (those being deleted included).
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Creates the profile; the caller holds its shard's lock and saw it missing.
    pub(crate) fn create(&self, key: ProfileKey, xxh: u64) -> Result<Arc<Profile>, Error> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.free.pop() {
                Some(slot) => slot,
                None => {
                    let slot = slots.next;
                    slots.next = slot.checked_add(1).ok_or(Error::CapacityExceeded)?;
                    slot
                }
            }
        };
        let profile = Arc::new(Profile {
            slot,
            db: key.db,
            id: key.id.clone(),
            xxh,
            deleted: AtomicBool::new(false),
            data: ArcSwapOption::empty(),
        });
        self.by_key.pin().insert(key, Arc::clone(&profile));
        Ok(profile)
    }

    /// Starts a delete: reads no longer find the profile (by id or by any index), and
    /// writes wait for the delete to end before they re-create its id. The caller holds
    /// the profile's shard lock.
    pub(crate) fn unlink(&self, profile: &Arc<Profile>) {
        profile.deleted.store(true, Ordering::Release);
        if let Some(old) = profile.data.swap(None) {
            for key in old.keys(profile.db) {
                self.index.remove(&key, profile);
            }
        }
    }

    /// Replaces a live profile's data and its index entries. The caller holds the
    /// profile's shard lock. New entries go in before the data changes and old ones
    /// come out after, so a concurrent lookup finds the profile under old or new data,
    /// never under neither.
    pub(crate) fn set_data(&self, profile: &Arc<Profile>, data: Normalized) {
        let old_keys = profile
            .data
            .load()
            .as_ref()
            .map(|d| d.keys(profile.db))
            .unwrap_or_default();
        let new_keys = data.keys(profile.db);
        for key in &new_keys {
            if !old_keys.contains(key) {
                self.index.add(key.clone(), profile);
            }
        }
        // Empty data is no data: an id-only profile keeps no allocation for it.
        let empty = data == Normalized::default();
        profile.data.store((!empty).then(|| Arc::new(data)));
        for key in &old_keys {
            if !new_keys.contains(key) {
                self.index.remove(key, profile);
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
        let mut found: Option<Arc<Profile>> = None;
        let mut many = false;
        for posting in first.into_iter().chain(rarest) {
            posting.each(|p| {
                let hit =
                    !p.is_deleted() && p.data.load().as_ref().is_some_and(|d| d.matches(query));
                if hit {
                    match &found {
                        Some(f) if Arc::ptr_eq(f, p) => {}
                        Some(_) => many = true,
                        None => found = Some(Arc::clone(p)),
                    }
                }
                !many
            });
            if many {
                return Found::Many;
            }
        }
        found.map_or(Found::None, Found::One)
    }

    /// Ends a delete: no relation refers to the profile any more, so its id may be
    /// created again and its slot reused.
    pub(crate) fn release(&self, profile: &Profile) {
        debug_assert!(profile.is_deleted());
        self.by_key.pin().remove(&ProfileKey {
            db: profile.db,
            id: profile.id.clone(),
        });
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free
            .push(profile.slot);
    }

    /// Every live profile (for state sweeps in tests and snapshots).
    pub(crate) fn all(&self) -> Vec<Arc<Profile>> {
        self.by_key
            .pin()
            .values()
            .filter(|p| !p.is_deleted())
            .cloned()
            .collect()
    }
}
