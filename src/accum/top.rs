//! Top-N initiators by value, kept exact under every write.
//!
//! The list itself lives in the recipient's block alone (see `accum::block`), so
//! reading it costs a copy of its words; the writer reads it back from the block to
//! edit it. Keeping it exact is the writer's job, with a hybrid structure:
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

use crate::profile::Profile;
use crate::profile::id::{ProfileId, packed_from_halves};
use crate::profile::slots::SlotTable;
use crate::value::{PropKind, Value, numeric_value};

/// One initiator with its value, as a block lists it: the value's rank and the
/// initiator in two words ([`initiator_words`]). 24 bytes and no pointer: a list is
/// kept only in its block's words, and read back from them by the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopEntry {
    /// Order-preserving encoding of the value (see `record::rank`).
    pub(crate) rank: u64,
    /// The initiator as a block names it ([`initiator_words`]).
    pub(crate) named: [u64; 2],
}

/// Set in the second word of [`initiator_words`] when the id is not held inline.
pub(crate) const TEXT_ID: u64 = 1 << 31;

/// How a block names an initiator in two words: a 24-hex id's 12 packed bytes (the
/// first 8, then the last 4 above the slot), or, for any other id, [`TEXT_ID`] beside
/// the slot (the reader finds the id in the slot table). Slots are below 2^31.
pub(crate) fn initiator_words(profile: &Profile) -> [u64; 2] {
    match profile.id.packed() {
        Some(id) => hex_words(id, profile.slot),
        None => {
            debug_assert!(u64::from(profile.slot) < TEXT_ID);
            [0, TEXT_ID | u64::from(profile.slot)]
        }
    }
}

/// [`initiator_words`] of the 24-hex id whose packed bytes are `id`, holding `slot`.
fn hex_words(id: [u8; 12], slot: u32) -> [u64; 2] {
    let slot = u64::from(slot);
    debug_assert!(slot < TEXT_ID);
    let (head, tail) = id.split_at(8);
    let head = u64::from_le_bytes(head.try_into().expect("8 bytes"));
    let tail = u64::from(u32::from_le_bytes(tail.try_into().expect("4 bytes")));
    [head, tail << 32 | slot]
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
    pub(crate) fn new(rank: u64, profile: &Profile) -> Self {
        TopEntry {
            rank,
            named: initiator_words(profile),
        }
    }

    /// The entry read from a block's three words (rank, then the initiator).
    pub(crate) fn from_words(words: &[u64]) -> Self {
        TopEntry {
            rank: words[0],
            named: [words[1], words[2]],
        }
    }

    /// The entry's initiator slot.
    pub(crate) fn slot(&self) -> u32 {
        slot_of(self.named[1])
    }

    /// Whether the entry is `profile`'s: its slot, read from the entry itself (the
    /// entry's profile is not read, so a scan of the list touches no profile).
    fn is(&self, profile: &Profile) -> bool {
        self.slot() == profile.slot
    }
}

/// The order of top entries, best first: larger value first, then smaller profile id
/// first (docs/api.md, *`relations/get_counter`*). Ranks and 24-hex ids compare in the
/// entries themselves; only a tie of ranks involving another id's form reads the
/// profiles, from the slot table (each initiator holds its slot while its relation is
/// in the target, under the target's lock).
#[derive(Clone, Copy)]
pub(crate) struct Ranking<'a>(pub(crate) &'a SlotTable);

impl Ranking<'_> {
    pub(crate) fn cmp(&self, a: &TopEntry, b: &TopEntry) -> Ordering {
        b.rank.cmp(&a.rank).then_with(|| self.cmp_ids(a, b))
    }

    fn cmp_ids(&self, a: &TopEntry, b: &TopEntry) -> Ordering {
        match (inline_id(a.named), inline_id(b.named)) {
            (Ok((ah, at)), Ok((bh, bt))) => {
                packed_from_halves(ah, at).cmp(&packed_from_halves(bh, bt))
            }
            (Ok((h, t)), Err(slot)) => {
                self.with_id(slot, |id| ProfileId::from_halves(h, t).cmp(id))
            }
            (Err(slot), Ok((h, t))) => {
                self.with_id(slot, |id| id.cmp(&ProfileId::from_halves(h, t)))
            }
            (Err(x), Err(y)) => self.with_id(x, |a| self.with_id(y, |b| a.cmp(b))),
        }
        .then_with(|| a.slot().cmp(&b.slot()))
    }

    /// `f` of the id of the profile holding `slot` (always one: see the type's doc;
    /// were it none, the entries compare by slot alone).
    fn with_id(&self, slot: u32, f: impl FnOnce(&ProfileId) -> Ordering) -> Ordering {
        self.0.with(slot, |p| {
            debug_assert!(p.is_some(), "a top entry from a free slot");
            p.map_or(Ordering::Equal, |p| f(&p.id))
        })
    }

    /// Whether `a` comes before `b`.
    pub(crate) fn before(&self, a: &TopEntry, b: &TopEntry) -> bool {
        self.cmp(a, b) == Ordering::Less
    }
}

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
pub(crate) fn select_top(
    mut entries: Vec<TopEntry>,
    n: usize,
    ranking: Ranking<'_>,
) -> Vec<TopEntry> {
    keep_best(&mut entries, n, ranking);
    entries
}

/// Keeps the best `n` of `entries`, best first, in place.
pub(crate) fn keep_best(entries: &mut Vec<TopEntry>, n: usize, ranking: Ranking<'_>) {
    if entries.len() > n {
        entries.select_nth_unstable_by(n, |a, b| ranking.cmp(a, b));
        entries.truncate(n);
    }
    entries.sort_unstable_by(|a, b| ranking.cmp(a, b));
}

/// An indexed relation whose initiator has a 24-hex id, held inline: its rank, the
/// id's packed bytes and its slot, 24 bytes and no pointer. Ordered best first, ties
/// by id (as [`Ranking`]), so a search compares within the tree's nodes.
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

/// An indexed relation whose initiator's id is of another form: its rank and its
/// profile, ordered as [`HexKey`] through the profile's id.
#[derive(Debug, Clone)]
struct OtherKey {
    rank: u64,
    profile: Profile,
}

impl Ord for OtherKey {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| self.profile.id.cmp(&other.profile.id))
    }
}

impl PartialOrd for OtherKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for OtherKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for OtherKey {}

/// The ordered index of a large target's valued relations, for one property: those
/// whose initiators have 24-hex ids keyed inline ([`HexKey`]), the others (any other
/// id) as [`OtherKey`]s, compared through their profiles. The best entries are the
/// two sets merged.
#[derive(Debug, Default)]
pub(crate) struct TopIndex {
    hex: BTreeSet<HexKey>,
    other: BTreeSet<OtherKey>,
}

impl TopIndex {
    /// The index of the valued relations `(rank, initiator)`.
    ///
    /// Built in bulk: each set from its keys sorted once (a B-tree built from a
    /// sorted run in O(n)), not inserted one by one.
    pub(crate) fn build(entries: impl IntoIterator<Item = (u64, Profile)>) -> Self {
        let (mut hex, mut other) = (Vec::new(), Vec::new());
        for (rank, profile) in entries {
            match profile.id.packed() {
                Some(id) => hex.push(HexKey {
                    rank,
                    id,
                    slot: profile.slot,
                }),
                None => other.push(OtherKey { rank, profile }),
            }
        }
        hex.sort_unstable();
        other.sort_unstable();
        TopIndex {
            hex: hex.into_iter().collect(),
            other: other.into_iter().collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.hex.len() + self.other.len()
    }

    fn insert(&mut self, profile: &Profile, rank: u64) {
        match profile.id.packed() {
            Some(id) => self.hex.insert(HexKey {
                rank,
                id,
                slot: profile.slot,
            }),
            None => self.other.insert(OtherKey {
                rank,
                profile: profile.clone(),
            }),
        };
    }

    fn remove(&mut self, profile: &Profile, rank: u64) -> bool {
        match profile.id.packed() {
            Some(id) => self.hex.remove(&HexKey {
                rank,
                id,
                slot: profile.slot,
            }),
            None => self.other.remove(&OtherKey {
                rank,
                profile: profile.clone(),
            }),
        }
    }

    /// Moves `profile`'s relation from rank `old` to rank `new` (`None`: not in the
    /// index).
    pub(crate) fn replace(&mut self, profile: &Profile, old: Option<u64>, new: Option<u64>) {
        if let Some(rank) = old {
            let removed = self.remove(profile, rank);
            debug_assert!(removed, "index out of step with the relations");
        }
        if let Some(rank) = new {
            self.insert(profile, rank);
        }
    }

    /// The best `n` entries, best first, into `out` (cleared first, its room reused).
    /// Reads no profile for 24-hex ids: the entries name them from the keys.
    pub(crate) fn first_into(&self, n: usize, out: &mut Vec<TopEntry>) {
        out.clear();
        out.reserve(n.min(self.len()));
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
                out.push(TopEntry {
                    rank: h.rank,
                    named: hex_words(h.id, h.slot),
                });
            } else if let Some(o) = other.next() {
                out.push(TopEntry::new(o.rank, &o.profile));
            }
        }
    }
}

/// One relation's value of a top property changing from `old` to `new` (ranks; `None`
/// for no value).
pub(crate) struct TopChange<'a> {
    pub(crate) profile: &'a Profile,
    pub(crate) old: Option<u64>,
    pub(crate) new: Option<u64>,
    /// Valued relations of the target before the change.
    pub(crate) valued_before: u64,
}

impl TopChange<'_> {
    /// The entry the relation has after the change, if valued.
    fn new_entry(&self) -> Option<TopEntry> {
        self.new.map(|rank| TopEntry::new(rank, self.profile))
    }

    /// Whether the change can alter `list` (best first, at most `n` entries), the
    /// list given as its entries' slots and its last entry: only a member's change, or
    /// a value that enters. Decides without building the list.
    pub(crate) fn touches(
        &self,
        n: usize,
        mut slots: impl Iterator<Item = u32>,
        len: usize,
        last: Option<TopEntry>,
        ranking: Ranking<'_>,
    ) -> bool {
        if self.old == self.new {
            return false;
        }
        slots.any(|s| s == self.profile.slot)
            || self
                .new_entry()
                .is_some_and(|e| enters(&e, n, len, last.as_ref(), ranking))
    }
}

/// Whether `entry` has a place in a list of `len` entries (at most `n`) whose last is
/// `last`: the list has room, or `entry` comes before its last.
fn enters(
    entry: &TopEntry,
    n: usize,
    len: usize,
    last: Option<&TopEntry>,
    ranking: Ranking<'_>,
) -> bool {
    len < n || last.is_some_and(|last| ranking.before(entry, last))
}

/// Applies `change` to `list` in place (its room reused: a list at its full size
/// allocates nothing); whether the list changed. `index`, if the target keeps one,
/// already holds the change. `scan` puts in the list it is given (empty) the valued
/// relations after the change that can be in the top (at least the best `n`); it is
/// called only for targets without an index.
pub(crate) fn update_list(
    list: &mut Vec<TopEntry>,
    n: usize,
    index: Option<&TopIndex>,
    change: &TopChange<'_>,
    scan: impl FnOnce(&mut Vec<TopEntry>),
    ranking: Ranking<'_>,
) -> bool {
    if change.old == change.new {
        return false;
    }
    let member = list.iter().position(|e| e.is(change.profile));
    let unlisted_before = change.valued_before > list.len() as u64;
    if member.is_some() && unlisted_before {
        // A member moved or left while others wait outside: only a refill is exact.
        match index {
            Some(index) => index.first_into(n, list),
            None => {
                list.clear();
                scan(list);
                keep_best(list, n, ranking);
            }
        }
        return true;
    }
    let new_entry = change.new_entry();
    let entering = new_entry
        .as_ref()
        .is_some_and(|e| enters(e, n, list.len(), list.last(), ranking));
    if member.is_none() && !entering {
        return false;
    }
    if let Some(i) = member {
        list.remove(i);
    }
    if let Some(entry) = new_entry {
        let at = list.partition_point(|e| ranking.before(e, &entry));
        if at < n {
            // Make room first, so a full list never grows past `n`.
            if list.len() == n {
                list.pop();
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
        for id in [
            "0123456789abcdeffedcba98",
            "ffffffffffffffffffffffff",
            "b-17",
            "x",
        ] {
            let p = directory.create_for_test(2, id);
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
            assert!(TopEntry::new(7, &p).is(&p), "{id}");
        }
    }

    /// The ranking compares entries as (rank descending, id ascending) over every
    /// pair of id forms: 24 hex characters (inline), others (through the slot
    /// table), and a mix of the two.
    #[test]
    fn the_ranking_orders_by_rank_then_id() {
        let directory = Directory::for_test();
        let ids = [
            "0123456789abcdeffedcba98",
            "0123456789abcdeffedcba99",
            "ffffffffffffffffffffffff",
            "00000000000000000000000a",
            "0123456789abcdeffedcba98x",
            "0",
            "g",
            "b-17",
            "A",
        ];
        let profiles: Vec<Profile> = ids
            .iter()
            .map(|id| directory.create_for_test(2, id))
            .collect();
        let ranking = Ranking(directory.slot_table());
        for (i, a) in profiles.iter().enumerate() {
            for b in &profiles {
                for (ra, rb) in [(5, 5), (5, 6), (6, 5)] {
                    let (x, y) = (TopEntry::new(ra, a), TopEntry::new(rb, b));
                    let want = rb.cmp(&ra).then_with(|| a.id.cmp(&b.id));
                    assert_eq!(ranking.cmp(&x, &y), want, "{} {ra} / {} {rb}", ids[i], b.id);
                }
            }
        }
    }

    /// A target with an index never scans its relations to refill: the best member
    /// leaves ten times over, each list is exact, and `scan` is never called. Ids of
    /// both forms (24 hex characters, kept inline, and others), so that the index's
    /// two sets merge, ties between forms included.
    #[test]
    fn an_indexed_target_refills_without_scanning() {
        let directory = Directory::for_test();
        let profiles: Vec<Profile> = (0..40u64)
            .map(|i| {
                let id = if i % 2 == 0 {
                    format!("{:024x}", i * 0x1_0000_0001)
                } else {
                    format!("{i:02}")
                };
                directory.create_for_test(2, &id)
            })
            .collect();
        // Ranks with ties, so the id order counts too.
        let rank_of = |i: usize| i as u64 / 3;
        let mut valued: Vec<TopEntry> = profiles
            .iter()
            .enumerate()
            .map(|(i, p)| TopEntry::new(rank_of(i), p))
            .collect();
        let ranking = Ranking(directory.slot_table());
        let n = 3;
        let mut list = select_top(valued.clone(), n, ranking);
        let mut index = TopIndex::build(
            profiles
                .iter()
                .enumerate()
                .map(|(i, p)| (rank_of(i), p.clone())),
        );
        let mut scans = 0;
        for round in 0..10 {
            let best = list[0];
            valued.retain(|e| e.slot() != best.slot());
            let profile = profiles
                .iter()
                .find(|p| p.slot == best.slot())
                .expect("a listed profile");
            let change = TopChange {
                profile,
                old: Some(best.rank),
                new: None,
                valued_before: valued.len() as u64 + 1,
            };
            let scan = |out: &mut Vec<TopEntry>| {
                scans += 1;
                out.extend(valued.iter().copied());
            };
            index.replace(profile, change.old, change.new);
            assert!(update_list(
                &mut list,
                n,
                Some(&index),
                &change,
                scan,
                ranking
            ));
            assert_eq!(
                list,
                select_top(valued.clone(), n, ranking),
                "round {round}"
            );
        }
        assert_eq!(scans, 0, "refills come from the index");
        assert_eq!(index.len(), valued.len());
    }
}
