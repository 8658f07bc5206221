//! The slot table: which profile holds each slot, read without a lock.
//!
//! Relations name their initiator by its `u32` slot (4 bytes and no reference count
//! per relation); whoever needs the initiator's id or hash reads it here. The table is
//! a list of fixed chunks of `ArcSwapOption` cells (8 bytes a slot), the list itself
//! behind an `ArcSwap` that only grows: a lookup is two atomic loads and never waits.
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::profile::Profile;
use crate::profile::data::Normalized;

const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;

/// The profiles of [`CHUNK`] consecutive slots, and their data once one has any.
#[derive(Debug)]
struct Cells {
    profiles: Box<[ArcSwapOption<Profile>]>,
    data: OnceLock<Box<[ArcSwapOption<Normalized>]>>,
}

type Chunk = Arc<Cells>;

fn empty_cells<T>() -> Box<[ArcSwapOption<T>]> {
    (0..CHUNK).map(|_| ArcSwapOption::empty()).collect()
}

/// Slot -> profile, for every slot in use.
#[derive(Debug)]
pub(crate) struct SlotTable {
    chunks: ArcSwap<Vec<Chunk>>,
    /// Profiles created so far: the next profile's `born`.
    generation: AtomicU64,
}

impl Default for SlotTable {
    fn default() -> Self {
        SlotTable {
            chunks: ArcSwap::from_pointee(Vec::new()),
            generation: AtomicU64::new(0),
        }
    }
}

/// The cell of `slot` in `chunks`, if its chunk exists.
fn cell(chunks: &[Chunk], slot: u32) -> Option<&ArcSwapOption<Profile>> {
    let chunk = chunks.get((slot >> CHUNK_BITS) as usize)?;
    Some(&chunk.profiles[slot as usize & (CHUNK - 1)])
}

/// The data cell of `slot` in `chunks`, if its chunk has a data column.
fn data_cell(chunks: &[Chunk], slot: u32) -> Option<&ArcSwapOption<Normalized>> {
    let chunk = chunks.get((slot >> CHUNK_BITS) as usize)?;
    Some(&chunk.data.get()?[slot as usize & (CHUNK - 1)])
}

impl SlotTable {
    /// The profile holding `slot`, if any.
    pub(crate) fn get(&self, slot: u32) -> Option<Arc<Profile>> {
        cell(&self.chunks.load(), slot)?.load_full()
    }

    /// Runs `f` on the profile holding `slot`, if any, without taking a reference
    /// count (for comparisons in a hot loop).
    pub(crate) fn with<R>(&self, slot: u32, f: impl FnOnce(Option<&Profile>) -> R) -> R {
        let chunks = self.chunks.load();
        match cell(&chunks, slot) {
            Some(cell) => f(cell.load().as_deref()),
            None => f(None),
        }
    }

    /// Runs `f` on the profile holding `slot`, if any, as its `Arc` (for a caller
    /// that may keep it), without taking a reference count unless `f` does.
    pub(crate) fn with_arc<R>(&self, slot: u32, f: impl FnOnce(Option<&Arc<Profile>>) -> R) -> R {
        let chunks = self.chunks.load();
        match cell(&chunks, slot) {
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
        let chunks = self.chunks.load();
        let needed = (slot >> CHUNK_BITS) as usize + 1;
        if chunks.len() < needed {
            let mut grown = Vec::clone(&chunks);
            grown.resize_with(needed, || {
                Arc::new(Cells {
                    profiles: empty_cells(),
                    data: OnceLock::new(),
                })
            });
            self.chunks.store(Arc::new(grown));
        }
    }

    /// Puts `profile` in its slot, which the table has room for (see
    /// [`grow`](Self::grow)) and which no other profile holds: so it may be called
    /// outside the slot lock, from several threads at once.
    pub(crate) fn put(&self, profile: &Arc<Profile>) {
        let chunks = self.chunks.load();
        debug_assert!(cell(&chunks, profile.slot).is_some(), "put before grow");
        if let Some(cell) = cell(&chunks, profile.slot) {
            cell.store(Some(Arc::clone(profile)));
        }
    }

    /// Calls `f` on the profile holding each slot below `end`, in slot order. Takes
    /// no lock and pins nothing, so it ends after `end` steps whatever writers do
    /// meanwhile; a slot taken or given back during the walk is seen before or after.
    pub(crate) fn each(&self, end: u32, mut f: impl FnMut(&Arc<Profile>)) {
        let chunks = self.chunks.load();
        let mut left = end as usize;
        for chunk in chunks.iter() {
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
        let chunks = self.chunks.load();
        debug_assert!(
            data_cell(&chunks, slot).is_none_or(|d| d.load().is_none()),
            "a slot given back with data"
        );
        if let Some(cell) = cell(&chunks, slot) {
            cell.store(None);
        }
    }

    /// The data of the profile in `slot`, if it has any. A reader checks after that
    /// the profile it meant is still live (see the module docs).
    pub(crate) fn data(&self, slot: u32) -> Option<Arc<Normalized>> {
        data_cell(&self.chunks.load(), slot)?.load_full()
    }

    /// Runs `f` on the data of the profile in `slot`, without a reference count.
    pub(crate) fn with_data<R>(&self, slot: u32, f: impl FnOnce(Option<&Normalized>) -> R) -> R {
        let chunks = self.chunks.load();
        match data_cell(&chunks, slot) {
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
        let chunks = self.chunks.load();
        let Some(chunk) = chunks.get((slot >> CHUNK_BITS) as usize) else {
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
