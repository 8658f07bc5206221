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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::profile::Profile;

const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;

type Chunk = Arc<[ArcSwapOption<Profile>]>;

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
    Some(&chunk[slot as usize & (CHUNK - 1)])
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
                (0..CHUNK).map(|_| ArcSwapOption::empty()).collect()
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
            for cell in chunk.iter().take(left) {
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
    /// can be taken again.
    pub(crate) fn clear(&self, slot: u32) {
        if let Some(cell) = cell(&self.chunks.load(), slot) {
            cell.store(None);
        }
    }
}
