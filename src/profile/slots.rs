//! The slot table: which profile holds each slot, read without a lock.
//!
//! Relations name their initiator by its `u32` slot (4 bytes and no reference count
//! per relation); whoever needs the initiator's id or hash reads it here. The table is
//! fixed chunks of 4,096 `ArcSwapOption` cells (8 bytes a slot), made once and never
//! moved: a lookup is two acquire loads to find the chunk, then the cell's load, and
//! never waits.
//!
//! Writes (a slot taken or given back) come from the directory, one at a time under
//! its slot lock. A slot is given back only when no relation names it any more, so a
//! reader holding the lock of a shard whose relations name a slot always finds that
//! slot's profile. A reader that looked at relations under a lock it has since
//! released checks the profile's `born` against the [`generation`](SlotTable::generation)
//! it read under the lock: a profile born since may have taken a freed slot.
//!
//! Beside each chunk's profiles, a column of their data (email, phone, fields,
//! subscriptions), made the first time a profile of the chunk is given data: a
//! profile only ever named by id costs nothing for it when its chunk holds none.
//! A slot's data is removed (under the profile's shard lock) when its delete starts,
//! before the slot can be given back; so a reader that read a slot's data and then
//! finds the profile it looked for still live read that profile's data (the delete
//! marks the profile before anything after it can change the slot).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;

use crate::profile::Profile;
use crate::profile::data::Normalized;

const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;
/// Groups of chunks, group `g` holding `2^g`: enough for 2^31 slots, the most a
/// directory hands out (2^19 chunks).
const GROUPS: usize = 20;

/// The profiles of [`CHUNK`] consecutive slots, and their data once one has any.
#[derive(Debug)]
struct Cells {
    profiles: Box<[ArcSwapOption<Profile>]>,
    data: OnceLock<Box<[ArcSwapOption<Normalized>]>>,
}

fn empty_cells<T>() -> Box<[ArcSwapOption<T>]> {
    (0..CHUNK).map(|_| ArcSwapOption::empty()).collect()
}

/// A group's chunks, each made when first needed.
type Group = Box<[OnceLock<Cells>]>;

/// The group of chunk `n`, and its place in the group: chunks `2^g - 1` to
/// `2^(g+1) - 2` are group `g`'s.
fn group_of(n: usize) -> (usize, usize) {
    let g = (usize::BITS - 1 - (n + 1).leading_zeros()) as usize;
    (g, n + 1 - (1 << g))
}

/// Slot -> profile, for every slot in use.
///
/// Chunks are made once and never moved or dropped while the table lives: in groups
/// of 1, 2, 4... chunks, each group made with its first chunk (an empty table is
/// its list of 20 groups; a small one, a group of one chunk). Finding a slot's chunk is
/// two acquire loads of cells that never change once set (no reference count, no
/// lock).
#[derive(Debug)]
pub(crate) struct SlotTable {
    groups: Box<[OnceLock<Group>]>,
    /// Chunks made (all those below): changed under the directory's slot lock.
    made: AtomicUsize,
    /// Profiles created so far: the next profile's `born`.
    generation: AtomicU64,
}

impl Default for SlotTable {
    fn default() -> Self {
        SlotTable {
            groups: (0..GROUPS).map(|_| OnceLock::new()).collect(),
            made: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
        }
    }
}

impl SlotTable {
    /// Chunk `n`, if made.
    fn chunk(&self, n: usize) -> Option<&Cells> {
        let (g, i) = group_of(n);
        self.groups.get(g)?.get()?[i].get()
    }

    /// The cell of `slot`, if its chunk is made.
    fn cell(&self, slot: u32) -> Option<&ArcSwapOption<Profile>> {
        let chunk = self.chunk((slot >> CHUNK_BITS) as usize)?;
        Some(&chunk.profiles[slot as usize & (CHUNK - 1)])
    }

    /// The data cell of `slot`, if its chunk has a data column.
    fn data_cell(&self, slot: u32) -> Option<&ArcSwapOption<Normalized>> {
        let chunk = self.chunk((slot >> CHUNK_BITS) as usize)?;
        Some(&chunk.data.get()?[slot as usize & (CHUNK - 1)])
    }
}

impl SlotTable {
    /// The profile holding `slot`, if any.
    pub(crate) fn get(&self, slot: u32) -> Option<Arc<Profile>> {
        self.cell(slot)?.load_full()
    }

    /// Runs `f` on the profile holding `slot`, if any, without taking a reference
    /// count (for comparisons in a hot loop).
    pub(crate) fn with<R>(&self, slot: u32, f: impl FnOnce(Option<&Profile>) -> R) -> R {
        self.with_arc(slot, |p| f(p.map(|p| &**p)))
    }

    /// Runs `f` on the profile holding `slot`, if any, as its `Arc` (for a caller
    /// that may keep it), without taking a reference count unless `f` does.
    pub(crate) fn with_arc<R>(&self, slot: u32, f: impl FnOnce(Option<&Arc<Profile>>) -> R) -> R {
        match self.cell(slot) {
            Some(cell) => f(cell.load().as_ref()),
            None => f(None),
        }
    }

    /// The `born` of the next profile created: every profile born before a reader
    /// read this held its slot then.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The `born` of `n` new profiles: `n` consecutive numbers from the one returned.
    /// Called by the directory under its slot lock.
    pub(crate) fn next_born(&self, n: u64) -> u64 {
        self.generation.fetch_add(n, Ordering::AcqRel)
    }

    /// Makes room for slots up to `slot`. Called by the directory under its slot
    /// lock, the only place the table grows.
    pub(crate) fn grow(&self, slot: u32) {
        let needed = (slot >> CHUNK_BITS) as usize + 1;
        let made = self.made.load(Ordering::Relaxed);
        for n in made..needed {
            let (g, i) = group_of(n);
            let group =
                self.groups[g].get_or_init(|| (0..1 << g).map(|_| OnceLock::new()).collect());
            group[i].get_or_init(|| Cells {
                profiles: empty_cells(),
                data: OnceLock::new(),
            });
        }
        self.made.store(made.max(needed), Ordering::Relaxed);
    }

    /// Puts `profile` in its slot, which the table has room for (see
    /// [`grow`](Self::grow)) and which no other profile holds: so it may be called
    /// outside the slot lock, from several threads at once.
    pub(crate) fn put(&self, profile: &Arc<Profile>) {
        debug_assert!(self.cell(profile.slot).is_some(), "put before grow");
        if let Some(cell) = self.cell(profile.slot) {
            cell.store(Some(Arc::clone(profile)));
        }
    }

    /// Calls `f` on the profile holding each slot below `end`, in slot order. Takes
    /// no lock and pins nothing, so it ends after `end` steps whatever writers do
    /// meanwhile; a slot taken or given back during the walk is seen before or after.
    pub(crate) fn each(&self, end: u32, mut f: impl FnMut(&Arc<Profile>)) {
        let mut left = end as usize;
        for chunk in (0..).map_while(|n| self.chunk(n)) {
            for cell in chunk.profiles.iter().take(left) {
                if let Some(profile) = &*cell.load() {
                    f(profile);
                }
            }
            left = left.saturating_sub(CHUNK);
            if left == 0 {
                break;
            }
        }
    }

    /// Empties `slot`. Called by the directory under its slot lock, before the slot
    /// can be taken again (its data was removed when the profile's delete started).
    pub(crate) fn clear(&self, slot: u32) {
        debug_assert!(
            self.data_cell(slot).is_none_or(|d| d.load().is_none()),
            "a slot given back with data"
        );
        if let Some(cell) = self.cell(slot) {
            cell.store(None);
        }
    }

    /// The data of the profile in `slot`, if it has any. A reader checks after that
    /// the profile it meant is still live (see the module docs).
    pub(crate) fn data(&self, slot: u32) -> Option<Arc<Normalized>> {
        self.data_cell(slot)?.load_full()
    }

    /// Runs `f` on the data of the profile in `slot`, without a reference count.
    pub(crate) fn with_data<R>(&self, slot: u32, f: impl FnOnce(Option<&Normalized>) -> R) -> R {
        match self.data_cell(slot) {
            Some(cell) => f(cell.load().as_deref()),
            None => f(None),
        }
    }

    /// Replaces the data of the profile in `slot` (which the table has room for),
    /// returning the old. Called under the profile's shard lock; makes the chunk's
    /// data column when `data` is its first.
    pub(crate) fn swap_data(
        &self,
        slot: u32,
        data: Option<Arc<Normalized>>,
    ) -> Option<Arc<Normalized>> {
        let Some(chunk) = self.chunk((slot >> CHUNK_BITS) as usize) else {
            debug_assert!(false, "data for a slot the table has no room for");
            return None;
        };
        let column = match (chunk.data.get(), &data) {
            (Some(column), _) => column,
            (None, None) => return None,
            (None, Some(_)) => chunk.data.get_or_init(empty_cells),
        };
        column[slot as usize & (CHUNK - 1)].swap(data)
    }
}

#[cfg(test)]
mod tests {
    use super::{CHUNK, GROUPS, SlotTable, group_of};
    use crate::profile::id::ProfileId;
    use crate::profile::{Life, Profile};
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    /// Chunks fill groups of 1, 2, 4... in order, each place once, and the last of
    /// 2^31 slots has a group.
    #[test]
    fn chunks_map_to_groups_in_order() {
        let mut want = (0, 0);
        for n in 0..5000 {
            assert_eq!(group_of(n), want, "chunk {n}");
            want = if want.1 + 1 == 1 << want.0 {
                (want.0 + 1, 0)
            } else {
                (want.0, want.1 + 1)
            };
        }
        let last = ((1usize << 31) - 1) / CHUNK;
        assert_eq!(group_of(last).0, GROUPS - 1);
    }

    /// Slots at the edges of chunks and groups hold their profile and data, and a
    /// walk sees exactly the slots below its end.
    #[test]
    fn slots_at_chunk_and_group_edges_hold_their_profiles() {
        let table = SlotTable::default();
        let edges: Vec<u32> = [1usize, 2, 3, 7, 8, 15]
            .iter()
            .flat_map(|&chunks| [chunks * CHUNK - 1, chunks * CHUNK])
            .map(|s| s as u32)
            .collect();
        let max = *edges.iter().max().expect("edges");
        table.grow(max);
        for &slot in &edges {
            table.put(&Arc::new(Profile {
                slot,
                db: 1,
                id: ProfileId::new(&format!("p{slot}")).expect("an id"),
                born: u64::from(slot),
                life: Life::pending(),
                point: AtomicU32::new(0),
            }));
        }
        for &slot in &edges {
            let id = table.with(slot, |p| p.map(|p| p.id.to_string()));
            assert_eq!(id, Some(format!("p{slot}")), "slot {slot}");
        }
        assert!(table.with(max + 1, |p| p.is_none()));
        let mut seen = Vec::new();
        table.each(8 * CHUNK as u32, |p| seen.push(p.slot));
        let below: Vec<u32> = edges
            .iter()
            .copied()
            .filter(|&s| s < 8 * CHUNK as u32)
            .collect();
        assert_eq!(seen, below);
    }
}
