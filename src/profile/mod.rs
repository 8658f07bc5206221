//! A profile as the engine holds it: its slot, database, id and hash, and the
//! one atomic (its life) that orders what a reader may see of it. A leaf: the
//! directory, the indexes, the slot table and the accumulators all hold profiles, and
//! this module imports none of them.
//!
//! A profile's life is `Pending -> Live -> Deleted`, one atomic state read by every
//! lookup. A write creates a profile `Pending` (in the map, but found by no read),
//! publishes everything the profile comes with (its first relation's counters, its
//! data and index entries), then makes it `Live` with one release store: a reader that
//! finds it live finds all of that too, so a profile is never seen without the write
//! that created it.

pub(crate) mod cell;
pub(crate) mod data;
pub(crate) mod id;
pub(crate) mod slots;

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use self::data::Normalized;
use self::id::ProfileId;
use crate::sync::{AtomicU8, Ordering};

/// One live profile.
#[derive(Debug)]
pub(crate) struct Profile {
    /// Slot number, unique among live profiles (reused after a delete completes).
    pub(crate) slot: u32,
    /// The database it belongs to.
    pub(crate) db: u32,
    /// Its id. (The hash that places it, XXH64 of the id, is not kept: whoever needs
    /// it has it from the id that named the profile, from the counters' block, or
    /// computes it.)
    pub(crate) id: ProfileId,
    /// Profiles created before it (see `slots`: tells a profile that took a freed
    /// slot from the one a reader saw there).
    pub(crate) born: u64,
    /// Pending while the write creating it runs, live once it has published, deleted
    /// (under the profile's shard lock) when a delete starts: from then on reads and
    /// deletes answer "not found", and a write that would re-create the id waits for
    /// the delete to finish, so one id never has two profiles at once.
    pub(crate) life: Life,
    /// The snapshot point (see `Directory::begin_point`) this profile was created
    /// after or changed after, its state at the point kept aside; another value when
    /// it has not changed since the last point began.
    pub(crate) point: AtomicU32,
}

/// A profile's life, `Pending -> Live -> Deleted`: the one atomic that orders what a
/// reader may see of it. Everything published before [`activate`](Life::activate)
/// (release) is seen by a reader that then finds it live (acquire); a delete marks
/// it (release) before it removes anything, so a reader that sees something removed
/// (acquire, through the map that removed it) sees the mark. Model-checked with loom
/// (`loom_tests` below).
#[derive(Debug)]
pub(crate) struct Life(AtomicU8);

const PENDING: u8 = 0;
const LIVE: u8 = 1;
const DELETED: u8 = 2;

impl Life {
    pub(crate) fn pending() -> Life {
        Life(AtomicU8::new(PENDING))
    }

    pub(crate) fn is_live(&self) -> bool {
        self.0.load(Ordering::Acquire) == LIVE
    }

    pub(crate) fn is_deleted(&self) -> bool {
        self.0.load(Ordering::Acquire) == DELETED
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.0.load(Ordering::Acquire) == PENDING
    }

    /// Publishes: everything written before is seen by whoever then sees it live.
    pub(crate) fn activate(&self) {
        self.0.store(LIVE, Ordering::Release);
    }

    /// Starts a delete: whoever sees a removal made after this sees the mark.
    pub(crate) fn mark_deleted(&self) {
        self.0.store(DELETED, Ordering::Release);
    }
}

impl Profile {
    /// Whether its delete has started.
    pub(crate) fn is_deleted(&self) -> bool {
        self.life.is_deleted()
    }

    /// Whether it is visible: its creating write has published, and no delete started.
    pub(crate) fn is_live(&self) -> bool {
        self.life.is_live()
    }
}

/// A live profile and its data, as a snapshot takes them.
pub(crate) type FrozenProfile = (Arc<Profile>, Option<Arc<Normalized>>);

/// Key of the id map: ids are unique per database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ProfileKey {
    pub(crate) db: u32,
    pub(crate) id: ProfileId,
}

/// Model checks of the life protocol (built with `--cfg relcount_loom`, see `sync.rs`):
/// a loom atomic stands in for the published counters' map entry, written and read
/// with the orderings papaya gives its inserts and removals (release) and its reads
/// (acquire).
#[cfg(all(test, relcount_loom))]
mod loom_tests {
    use super::Life;
    use crate::sync::{AtomicU8, Ordering};
    use loom::sync::Arc;

    /// A write creating a profile publishes its counters, then activates it: a reader
    /// that finds it live finds the counters (never a profile without its relation).
    #[test]
    fn a_live_profile_has_its_counters() {
        loom::model(|| {
            let life = Arc::new(Life::pending());
            let counters = Arc::new(AtomicU8::new(0));
            let (l, c) = (Arc::clone(&life), Arc::clone(&counters));
            let writer = loom::thread::spawn(move || {
                c.store(1, Ordering::Release);
                l.activate();
            });
            if life.is_live() {
                assert_eq!(counters.load(Ordering::Acquire), 1, "live without counters");
            }
            writer.join().expect("writer");
        });
    }

    /// A delete marks the profile, then removes its counters: a reader that found it
    /// live and then finds the counters gone sees the mark ("not found"), never an
    /// empty counter.
    #[test]
    fn removed_counters_come_with_the_mark() {
        loom::model(|| {
            let life = Arc::new(Life::pending());
            life.activate();
            let counters = Arc::new(AtomicU8::new(1));
            let (l, c) = (Arc::clone(&life), Arc::clone(&counters));
            let deleter = loom::thread::spawn(move || {
                l.mark_deleted();
                c.store(0, Ordering::Release);
            });
            if life.is_live() && counters.load(Ordering::Acquire) == 0 {
                assert!(life.is_deleted(), "counters removed without the mark");
            }
            deleter.join().expect("deleter");
        });
    }
}

#[cfg(test)]
mod tests {
    /// DESIGN.md's *How big is a profile?* counts these bytes one by one: 40 of
    /// fields, 56 with the `Arc`'s counts.
    #[test]
    fn a_profile_is_40_bytes() {
        assert_eq!(std::mem::size_of::<super::Profile>(), 40);
    }
}
