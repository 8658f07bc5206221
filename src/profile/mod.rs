//! A profile as the engine names it: its slot, database, id and birth number, a value
//! its holders copy. A leaf: the directory, the indexes, the slot table and the
//! accumulators all hold profiles, and this module imports none of them.
//!
//! What changes over a profile's life lives in its slot of the slot table (see
//! `cell`): its life `Pending -> Live -> Deleted`, one atomic state read by every
//! lookup, and its snapshot stamp. A write creates a profile `Pending` (in the tables,
//! but found by no read), publishes everything the profile comes with (its first
//! relation's counters, its data and index entries), then makes it `Live` with one
//! release store: a reader that finds it live finds all of that too, so a profile is
//! never seen without the write that created it. A holder checks the life of the
//! profile it holds by slot and birth number: once the slot is given back, and maybe
//! taken by a profile born later, its profile is gone.

pub(crate) mod cell;
pub(crate) mod data;
pub(crate) mod id;
pub(crate) mod slots;

use std::sync::Arc;

use self::data::Normalized;
use self::id::ProfileId;

/// A profile, as its holders name it (the slot table holds the same in its slot's
/// cell, with its life).
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    /// Slot number, unique among live profiles (reused after a delete completes).
    pub(crate) slot: u32,
    /// The database it belongs to.
    pub(crate) db: u32,
    /// Its id. (The hash that places it, XXH64 of the id, is not kept: whoever needs
    /// it has it from the id that named the profile, from the counters' block, or
    /// computes it.)
    pub(crate) id: ProfileId,
    /// Profiles created before it: tells it from a later holder of its slot.
    pub(crate) born: u64,
}

impl Profile {
    /// Whether `other` names the same profile (its slot and birth).
    pub(crate) fn same(&self, other: &Profile) -> bool {
        self.slot == other.slot && self.born == other.born
    }
}

/// A live profile and its data, as a snapshot takes them.
pub(crate) type FrozenProfile = (Profile, Option<Arc<Normalized>>);

/// Key of the id map: ids are unique per database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ProfileKey {
    pub(crate) db: u32,
    pub(crate) id: ProfileId,
}

#[cfg(test)]
mod tests {
    /// DESIGN.md's *How big is a profile?* counts these bytes one by one: 32 a copy
    /// (a holder's), the cell 32 (`cell`).
    #[test]
    fn a_profile_is_32_bytes() {
        assert_eq!(std::mem::size_of::<super::Profile>(), 32);
    }
}
