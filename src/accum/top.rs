//! Top-N initiators by value, kept exact under every write.
//!
//! The list itself lives in the published counter (see `accum::counter`), so reading it
//! costs nothing. Keeping it exact is the writer's job, with a hybrid structure:
//!
//! - A write whose initiator neither was in the list nor enters it changes nothing.
//! - A write that moves an entry within the list, or brings one in, edits the list in
//!   place: O(N).
//! - A write that drops a member (detach, weakening below the cut, delete) leaves a hole
//!   only the unlisted relations can fill. Targets with few valued relations (at most
//!   the index threshold, [`DEFAULT_TOP_INDEX_THRESHOLD`](crate::limits::DEFAULT_TOP_INDEX_THRESHOLD)
//!   unless set) refill by scanning them.
//!   Larger targets keep an ordered index (a `BTreeSet` of all valued relations) and
//!   refill from its first N entries: O(N + log n). The index is built when a target
//!   grows past the threshold and dropped when it shrinks below half of it, so no write
//!   ever scans a large target, and a target hovering at the threshold does not flap.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use crate::profile::Profile;
use crate::profile_id::ProfileId;
use crate::slots::SlotTable;
use crate::value::{PropKind, Value, numeric_value};

/// One initiator with its value, ordered best first: larger value first, then smaller
/// profile id first (docs/api.md, *`relations/get_counter`*).
#[derive(Debug, Clone)]
pub(crate) struct TopEntry {
    /// Order-preserving encoding of the value (see `record::rank`).
    pub(crate) rank: u64,
    /// The initiator.
    pub(crate) profile: Arc<Profile>,
    /// The initiator as a block names it ([`initiator_words`]), kept here so that
    /// writing a block reads no profile.
    pub(crate) named: [u64; 2],
}

/// Set in the second word of [`initiator_words`] when the id is not held inline.
pub(crate) const TEXT_ID: u64 = 1 << 31;

/// How a block names an initiator in two words: a 24-hex id's 12 packed bytes (the
/// first 8, then the last 4 above the slot), or, for any other id, [`TEXT_ID`] beside
/// the slot (the reader finds the id in the slot table). Slots are below 2^31.
pub(crate) fn initiator_words(profile: &Profile) -> [u64; 2] {
    let slot = u64::from(profile.slot);
    debug_assert!(slot < TEXT_ID);
    match profile.id.packed() {
        Some(id) => {
            let (head, tail) = id.split_at(8);
            let head = u64::from_le_bytes(head.try_into().expect("8 bytes"));
            let tail = u64::from(u32::from_le_bytes(tail.try_into().expect("4 bytes")));
            [head, tail << 32 | slot]
        }
        None => [0, TEXT_ID | slot],
    }
}

/// The packed id of [`initiator_words`] as its first 8 and last 4 bytes (little
/// endian), or `Err(slot)` when the id is not inline.
pub(crate) fn inline_id([head, tail]: [u64; 2]) -> Result<(u64, u32), u32> {
    if tail & TEXT_ID != 0 {
        return Err(slot_of(tail));
    }
    Ok((head, (tail >> 32) as u32))
}

/// The slot in the second word of [`initiator_words`], whatever the id's form.
fn slot_of(tail: u64) -> u32 {
    (tail & (TEXT_ID - 1)) as u32
}

impl TopEntry {
    pub(crate) fn new(rank: u64, profile: Arc<Profile>) -> Self {
        TopEntry {
            rank,
            named: initiator_words(&profile),
            profile,
        }
    }

    /// Whether the entry is `profile`'s: its slot, read from the entry itself (the
    /// entry's profile is not read, so a scan of the list touches no profile).
    fn is(&self, profile: &Profile) -> bool {
        slot_of(self.named[1]) == profile.slot
    }
}

impl Ord for TopEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| self.profile.id.cmp(&other.profile.id))
    }
}

impl PartialOrd for TopEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for TopEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for TopEntry {}

/// The value whose order-preserving encoding is `rank`, for a property of `kind`.
pub(crate) fn value_of(rank: u64, kind: PropKind) -> Value {
    let raw = match kind {
        PropKind::Float if rank >> 63 == 1 => rank & !(1 << 63),
        PropKind::Float => !rank,
        _ => rank ^ (1 << 63),
    };
    numeric_value(kind, raw)
}

/// The best `n` of `entries`, best first.
pub(crate) fn select_top(mut entries: Vec<TopEntry>, n: usize) -> Vec<TopEntry> {
    keep_best(&mut entries, n);
    entries
}

/// Keeps the best `n` of `entries`, best first, in place.
pub(crate) fn keep_best(entries: &mut Vec<TopEntry>, n: usize) {
    if entries.len() > n {
        entries.select_nth_unstable(n);
        entries.truncate(n);
    }
    entries.sort_unstable();
}

/// An indexed relation whose initiator has a 24-hex id, held inline: its rank, the
/// id's packed bytes and its slot, 24 bytes and no pointer. Ordered as [`TopEntry`]
/// (best first, ties by id), so a search compares within the tree's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HexKey {
    rank: u64,
    id: [u8; 12],
    slot: u32,
}

impl Ord for HexKey {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| self.id.cmp(&other.id))
            .then_with(|| self.slot.cmp(&other.slot))
    }
}

impl PartialOrd for HexKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The ordered index of a large target's valued relations, for one property: those
/// whose initiators have 24-hex ids keyed inline ([`HexKey`]), the others (any other
/// id) as [`TopEntry`]s, compared through their profiles. The best entries are the
/// two sets merged.
#[derive(Debug, Default)]
pub(crate) struct TopIndex {
    hex: BTreeSet<HexKey>,
    other: BTreeSet<TopEntry>,
}

impl TopIndex {
    pub(crate) fn build(entries: Vec<TopEntry>) -> Self {
        let mut index = TopIndex::default();
        for e in entries {
            index.insert(&e.profile, e.rank);
        }
        index
    }

    pub(crate) fn len(&self) -> usize {
        self.hex.len() + self.other.len()
    }

    fn insert(&mut self, profile: &Arc<Profile>, rank: u64) {
        match profile.id.packed() {
            Some(id) => self.hex.insert(HexKey {
                rank,
                id,
                slot: profile.slot,
            }),
            None => self.other.insert(TopEntry::new(rank, Arc::clone(profile))),
        };
    }

    fn remove(&mut self, profile: &Arc<Profile>, rank: u64) -> bool {
        match profile.id.packed() {
            Some(id) => self.hex.remove(&HexKey {
                rank,
                id,
                slot: profile.slot,
            }),
            None => self.other.remove(&TopEntry::new(rank, Arc::clone(profile))),
        }
    }

    fn replace(&mut self, profile: &Arc<Profile>, old: Option<u64>, new: Option<u64>) {
        if let Some(rank) = old {
            let removed = self.remove(profile, rank);
            debug_assert!(removed, "index out of step with the relations");
        }
        if let Some(rank) = new {
            self.insert(profile, rank);
        }
    }

    /// The best `n` entries, best first; the profiles of inline entries found in
    /// `slots` (each initiator holds its slot while its relation is in the target).
    pub(crate) fn first(&self, n: usize, slots: &SlotTable) -> Vec<TopEntry> {
        let mut out = Vec::new();
        self.first_into(n, slots, &mut out);
        out
    }

    /// [`first`](Self::first) into `out` (cleared first, its room reused).
    fn first_into(&self, n: usize, slots: &SlotTable, out: &mut Vec<TopEntry>) {
        out.clear();
        out.reserve_exact(n.min(self.len()));
        let mut hex = self.hex.iter().peekable();
        let mut other = self.other.iter().peekable();
        while out.len() < n {
            let take_hex = match (hex.peek(), other.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(h), Some(o)) => {
                    o.rank
                        .cmp(&h.rank)
                        .then_with(|| ProfileId::from_packed(h.id).cmp(&o.profile.id))
                        == Ordering::Less
                }
            };
            if take_hex {
                let Some(h) = hex.next() else { break };
                let profile = slots.get(h.slot);
                debug_assert!(profile.is_some(), "an index entry from a free slot");
                if let Some(profile) = profile {
                    out.push(TopEntry::new(h.rank, profile));
                }
            } else if let Some(o) = other.next() {
                out.push(o.clone());
            }
        }
    }
}

/// One relation's value of a top property changing from `old` to `new` (ranks; `None`
/// for no value).
pub(crate) struct TopChange<'a> {
    pub(crate) profile: &'a Arc<Profile>,
    pub(crate) old: Option<u64>,
    pub(crate) new: Option<u64>,
    /// Valued relations of the target before the change.
    pub(crate) valued_before: u64,
}

/// Applies `change` to the index (if any) and to `list` in place (its room reused: a
/// list at its full size allocates nothing); whether the list changed. `scan` puts in
/// the list it is given (empty) the valued relations after the change that can be in
/// the top (at least the best `n`); it is called only for targets without an index.
/// `slots` names the index's initiators.
pub(crate) fn update_list(
    list: &mut Vec<TopEntry>,
    n: usize,
    index: Option<&mut TopIndex>,
    change: &TopChange<'_>,
    scan: impl FnOnce(&mut Vec<TopEntry>),
    slots: &SlotTable,
) -> bool {
    if change.old == change.new {
        return false;
    }
    let index = index.map(|index| {
        index.replace(change.profile, change.old, change.new);
        &*index
    });
    let member = list.iter().position(|e| e.is(change.profile));
    let unlisted_before = change.valued_before > list.len() as u64;
    if member.is_some() && unlisted_before {
        // A member moved or left while others wait outside: only a refill is exact.
        match index {
            Some(index) => index.first_into(n, slots, list),
            None => {
                list.clear();
                scan(list);
                keep_best(list, n);
            }
        }
        return true;
    }
    let new_entry = change
        .new
        .map(|rank| TopEntry::new(rank, Arc::clone(change.profile)));
    let enters = new_entry
        .as_ref()
        .is_some_and(|e| list.len() < n || list.last().is_some_and(|last| e < last));
    if member.is_none() && !enters {
        return false;
    }
    if let Some(i) = member {
        list.remove(i);
    }
    if let Some(entry) = new_entry {
        let at = list.partition_point(|e| e < &entry);
        if at < n {
            // Make room first, so a full list never grows past `n`.
            if list.len() == n {
                list.pop();
            }
            // Room for one more, not twice the room: a list never grows past `n`, and
            // every recipient keeps one.
            if list.len() == list.capacity() {
                list.reserve_exact(1);
            }
            list.insert(at, entry);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Directory;

    /// How a block names an initiator: a 24-hex id comes back whole from its words,
    /// any other id as its slot; either way the words give the slot `is` compares.
    #[test]
    fn initiators_named_in_two_words_come_back() {
        let directory = Directory::for_test();
        for (i, id) in [
            "0123456789abcdeffedcba98",
            "ffffffffffffffffffffffff",
            "b-17",
            "x",
        ]
        .into_iter()
        .enumerate()
        {
            let p = directory.create_for_test(2, id, i as u64);
            let words = initiator_words(&p);
            match inline_id(words) {
                Ok((head, tail)) => {
                    assert_eq!(ProfileId::from_halves(head, tail), p.id, "{id}");
                }
                Err(slot) => {
                    assert!(p.id.packed().is_none(), "{id} is not inline");
                    assert_eq!(slot, p.slot);
                }
            }
            assert!(TopEntry::new(7, Arc::clone(&p)).is(&p), "{id}");
        }
    }

    /// A target with an index never scans its relations to refill: the best member
    /// leaves ten times over, each list is exact, and `scan` is never called. Ids of
    /// both forms (24 hex characters, kept inline, and others), so that the index's
    /// two sets merge, ties between forms included.
    #[test]
    fn an_indexed_target_refills_without_scanning() {
        let directory = Directory::for_test();
        let profiles: Vec<Arc<Profile>> = (0..40u64)
            .map(|i| {
                let id = if i % 2 == 0 {
                    format!("{:024x}", i * 0x1_0000_0001)
                } else {
                    format!("{i:02}")
                };
                directory.create_for_test(2, &id, i)
            })
            .collect();
        // Ranks with ties, so the id order counts too.
        let mut valued: Vec<TopEntry> = profiles
            .iter()
            .enumerate()
            .map(|(i, p)| TopEntry::new(i as u64 / 3, Arc::clone(p)))
            .collect();
        let n = 3;
        let mut list = select_top(valued.clone(), n);
        let mut index = TopIndex::build(valued.clone());
        let mut scans = 0;
        for round in 0..10 {
            let best = list[0].clone();
            valued.retain(|e| e.profile.slot != best.profile.slot);
            let change = TopChange {
                profile: &best.profile,
                old: Some(best.rank),
                new: None,
                valued_before: valued.len() as u64 + 1,
            };
            let scan = |out: &mut Vec<TopEntry>| {
                scans += 1;
                out.extend(valued.iter().cloned());
            };
            let slots = directory.slot_table();
            assert!(update_list(
                &mut list,
                n,
                Some(&mut index),
                &change,
                scan,
                slots
            ));
            assert_eq!(list, select_top(valued.clone(), n), "round {round}");
        }
        assert_eq!(scans, 0, "refills come from the index");
        assert_eq!(index.len(), valued.len());
    }
}
