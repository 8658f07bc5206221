//! The slot table: the profile holding each slot, read without a lock.
//!
//! Relations name their initiator by its `u32` slot (4 bytes and no reference count
//! per relation); whoever needs the initiator's id or hash reads it here. The table is
//! fixed chunks of 4,096 cells, made once and never moved, each cell the profile itself
//! (`cell`: 32 bytes of atomic words, no allocation): a lookup is two acquire loads to
//! find the chunk, then the cell's words read as a sequence lock reads them, and never
//! waits. An id that is not a 24-hex id keeps its text in a column beside the cells,
//! made the first time the chunk holds one.
//!
//! Writes (a slot taken or given back) come from the directory, one at a time under
//! its slot lock. A slot is given back only when no relation names it any more, so a
//! reader holding the lock of a shard whose relations name a slot always finds that
//! slot's profile. A reader that looked at relations under a lock it has since
//! released checks the profile's `born` against the [`generation`](SlotTable::generation)
//! it read under the lock: a profile born since may have taken a freed slot. A holder
//! of a profile (a copy: slot, database, id, birth) asks its life here, by slot and
//! birth: a slot given back answers that its profile is gone, whoever took it since.
//!
//! Beside each chunk's profiles, a column of their data (email, phone, fields,
//! subscriptions), made the first time a profile of the chunk is given data: a
//! profile only ever named by id costs nothing for it when its chunk holds none.
//! A slot's data is removed (under the profile's shard lock) when its delete starts,
//! before the slot can be given back; so a reader that read a slot's profile, then
//! its data, and then finds that profile still live read that profile's data (the
//! delete marks the profile before anything after it can change the slot).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;

use crate::profile::Profile;
use crate::profile::cell::{Cell, Life};
use crate::profile::data::Normalized;
use crate::profile::id::ProfileId;

const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;
/// Groups of chunks, group `g` holding `2^g`: enough for 2^31 slots, the most a
/// directory hands out (2^19 chunks).
const GROUPS: usize = 20;

/// The cells of [`CHUNK`] consecutive slots, the text of their ids that are not
/// 24-hex ids once one is, and their data once one has any.
#[derive(Debug)]
struct Cells {
    cells: Box<[Cell]>,
    texts: OnceLock<Box<[ArcSwapOption<Box<str>>]>>,
    data: OnceLock<Box<[ArcSwapOption<Normalized>]>>,
}

fn empty_cells<T>() -> Box<[ArcSwapOption<T>]> {
    (0..CHUNK).map(|_| ArcSwapOption::empty()).collect()
}

/// A group's chunks, each made when first needed.
type Group = Box<[OnceLock<Cells>]>;

/// The group of chunk `n`, and its place in the group: chunks `2^g - 1` to
/// `2^(g+1) - 2` are group `g`.
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

    fn chunk_of(&self, slot: u32) -> Option<&Cells> {
        self.chunk((slot >> CHUNK_BITS) as usize)
    }

    /// The cell of `slot`, if its chunk is made.
    fn cell(&self, slot: u32) -> Option<&Cell> {
        Some(&self.chunk_of(slot)?.cells[slot as usize & (CHUNK - 1)])
    }

    /// The text cell of `slot`, if its chunk has a text column.
    fn text_cell(&self, slot: u32) -> Option<&ArcSwapOption<Box<str>>> {
        Some(&self.chunk_of(slot)?.texts.get()?[slot as usize & (CHUNK - 1)])
    }

    /// The data cell of `slot`, if its chunk has a data column.
    fn data_cell(&self, slot: u32) -> Option<&ArcSwapOption<Normalized>> {
        Some(&self.chunk_of(slot)?.data.get()?[slot as usize & (CHUNK - 1)])
    }
}

impl SlotTable {
    /// The profile holding `slot`, if any, and its life as first read (acquire: what
    /// was published before that life is seen). Lock-free; a profile given back
    /// meanwhile is read whole before or after.
    pub(crate) fn read(&self, slot: u32) -> Option<(Profile, Life)> {
        let cell = self.cell(slot)?;
        loop {
            let seen = cell.read()?;
            let id = match ProfileId::from_words(seen.id) {
                Some(id) => id,
                None => {
                    // Read after the words: the text of the profile born `seen.born`
                    // if it still holds the slot after (see `cell`).
                    let text = self.text_cell(slot)?.load_full();
                    match (text, cell.life(seen.born)) {
                        (Some(text), life) if life != Life::Free => {
                            ProfileId::new(&text).expect("a stored id is valid")
                        }
                        _ => continue,
                    }
                }
            };
            let profile = Profile {
                slot,
                db: seen.db,
                id,
                born: seen.born,
            };
            return Some((profile, seen.life));
        }
    }

    /// The profile holding `slot`, if any (live, pending or being deleted).
    pub(crate) fn get(&self, slot: u32) -> Option<Profile> {
        self.read(slot).map(|(profile, _)| profile)
    }

    /// Runs `f` on the profile holding `slot`, if any.
    pub(crate) fn with<R>(&self, slot: u32, f: impl FnOnce(Option<&Profile>) -> R) -> R {
        f(self.get(slot).as_ref())
    }

    /// The birth number and life of the profile holding `slot` if it is `id` of
    /// database `db` (the id table's check of a tag's match). Lock-free.
    pub(crate) fn holds(&self, slot: u32, db: u32, id: &ProfileId) -> Option<(u64, Life)> {
        let cell = self.cell(slot)?;
        let seen = cell.read()?;
        if seen.db != db || seen.id != id.words() {
            return None;
        }
        if let Some(text) = id.text() {
            let same = self
                .text_cell(slot)?
                .load()
                .as_deref()
                .is_some_and(|t| **t == *text);
            if !same {
                return None;
            }
        }
        // The words and the text were the profile's born `seen.born` if it still
        // holds the slot.
        match cell.life(seen.born) {
            Life::Free => None,
            life => Some((seen.born, life)),
        }
    }

    /// The life of `profile`: [`Life::Free`] once its slot is given back.
    pub(crate) fn life(&self, profile: &Profile) -> Life {
        self.cell(profile.slot)
            .map_or(Life::Free, |cell| cell.life(profile.born))
    }

    /// Whether `profile` is visible: created and published, its delete not started.
    pub(crate) fn is_live(&self, profile: &Profile) -> bool {
        self.life(profile) == Life::Live
    }

    /// Whether `profile` is gone or going: its delete started or ended.
    pub(crate) fn is_deleted(&self, profile: &Profile) -> bool {
        matches!(self.life(profile), Life::Deleted | Life::Free)
    }

    /// Moves `profile` to `life` (live, or deleted when its delete starts). The
    /// caller holds its shard's lock.
    pub(crate) fn set_life(&self, profile: &Profile, life: Life) {
        if let Some(cell) = self.cell(profile.slot) {
            cell.set_life(profile.born, life);
        }
    }

    /// The snapshot stamp of the profile in `slot`.
    pub(crate) fn point(&self, slot: u32) -> u32 {
        self.cell(slot).map_or(0, Cell::point)
    }

    /// Stamps the profile in `slot`. The caller holds its shard's lock.
    pub(crate) fn set_point(&self, slot: u32, point: u32) {
        if let Some(cell) = self.cell(slot) {
            cell.set_point(point);
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
                cells: (0..CHUNK).map(|_| Cell::default()).collect(),
                texts: OnceLock::new(),
                data: OnceLock::new(),
            });
        }
        self.made.store(made.max(needed), Ordering::Relaxed);
    }

    /// Puts `profile`, pending and stamped with `point`, in its slot, which the table
    /// has room for (see [`grow`](Self::grow)) and which no profile holds: so it may
    /// be called outside the slot lock, from several threads at once.
    pub(crate) fn put(&self, profile: &Profile, point: u32) {
        let Some(chunk) = self.chunk_of(profile.slot) else {
            debug_assert!(false, "put before grow");
            return;
        };
        let at = profile.slot as usize & (CHUNK - 1);
        if let Some(text) = profile.id.text() {
            chunk.texts.get_or_init(empty_cells)[at].store(Some(Arc::new(text.into())));
        }
        chunk.cells[at].take(profile.born, profile.db, profile.id.words(), point);
    }

    /// Calls `f` on the profile holding each slot below `end`, and its life, in slot
    /// order. Takes no lock and pins nothing, so it ends after `end` steps whatever
    /// writers do meanwhile; a slot taken or given back during the walk is seen
    /// before or after.
    pub(crate) fn each(&self, end: u32, mut f: impl FnMut(Profile, Life)) {
        for slot in 0..end {
            // Chunks are made in order: the first one missing ends the walk.
            if (slot as usize).is_multiple_of(CHUNK) && self.chunk_of(slot).is_none() {
                return;
            }
            if let Some((profile, life)) = self.read(slot) {
                f(profile, life);
            }
        }
    }

    /// Gives `profile`'s slot back. Called by the directory under its slot lock,
    /// before the slot can be taken again (its data was removed when the profile's
    /// delete started).
    pub(crate) fn free(&self, profile: &Profile) {
        debug_assert!(
            self.data_cell(profile.slot)
                .is_none_or(|d| d.load().is_none()),
            "a slot given back with data"
        );
        let freed = self
            .cell(profile.slot)
            .is_some_and(|cell| cell.free(profile.born));
        if let Some(text) = self.text_cell(profile.slot).filter(|_| freed) {
            text.store(None);
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
    use crate::profile::Profile;
    use crate::profile::cell::Life;
    use crate::profile::id::ProfileId;

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
            let id = if slot % 2 == 0 {
                format!("p{slot}")
            } else {
                format!("{slot:024x}")
            };
            let profile = Profile {
                slot,
                db: 1,
                id: ProfileId::new(&id).expect("an id"),
                born: u64::from(slot),
            };
            table.put(&profile, 0);
        }
        for &slot in &edges {
            let (p, life) = table.read(slot).expect("held");
            assert_eq!(life, Life::Pending);
            assert_eq!((p.slot, p.born, p.db), (slot, u64::from(slot), 1));
            let want = if slot % 2 == 0 {
                format!("p{slot}")
            } else {
                format!("{slot:024x}")
            };
            assert_eq!(p.id.to_string(), want, "slot {slot}");
            assert_eq!(table.holds(slot, 1, &p.id), Some((p.born, Life::Pending)));
            assert_eq!(table.holds(slot, 2, &p.id), None);
        }
        assert!(table.get(max + 1).is_none());
        let mut seen = Vec::new();
        table.each(8 * CHUNK as u32, |p, _| seen.push(p.slot));
        let below: Vec<u32> = edges
            .iter()
            .copied()
            .filter(|&s| s < 8 * CHUNK as u32)
            .collect();
        assert_eq!(seen, below);
    }
}
