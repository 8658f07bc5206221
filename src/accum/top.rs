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
use crate::value::{PropKind, Value, numeric_value};

/// One initiator with its value, ordered best first: larger value first, then smaller
/// profile id first (docs/api.md, *`relations/get_counter`*).
#[derive(Debug, Clone)]
pub(crate) struct TopEntry {
    /// Order-preserving encoding of the value (see `record::rank`).
    pub(crate) rank: u64,
    /// The initiator.
    pub(crate) profile: Arc<Profile>,
}

impl TopEntry {
    /// The entry's value, for a property of `kind`.
    pub(crate) fn value(&self, kind: PropKind) -> Value {
        let raw = match kind {
            PropKind::Float if self.rank >> 63 == 1 => self.rank & !(1 << 63),
            PropKind::Float => !self.rank,
            _ => self.rank ^ (1 << 63),
        };
        numeric_value(kind, raw)
    }

    fn is(&self, profile: &Profile) -> bool {
        self.profile.slot == profile.slot
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

/// The best `n` of `entries`, best first.
pub(crate) fn select_top(mut entries: Vec<TopEntry>, n: usize) -> Vec<TopEntry> {
    if entries.len() > n {
        entries.select_nth_unstable(n);
        entries.truncate(n);
    }
    entries.sort_unstable();
    entries
}

/// The ordered index of a large target's valued relations, for one property.
#[derive(Debug, Default)]
pub(crate) struct TopIndex(BTreeSet<TopEntry>);

impl TopIndex {
    pub(crate) fn build(entries: Vec<TopEntry>) -> Self {
        TopIndex(entries.into_iter().collect())
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    fn replace(&mut self, profile: &Arc<Profile>, old: Option<u64>, new: Option<u64>) {
        if let Some(rank) = old {
            let removed = self.0.remove(&TopEntry {
                rank,
                profile: Arc::clone(profile),
            });
            debug_assert!(removed, "index out of step with the relations");
        }
        if let Some(rank) = new {
            self.0.insert(TopEntry {
                rank,
                profile: Arc::clone(profile),
            });
        }
    }

    /// The best `n` entries, best first.
    pub(crate) fn first(&self, n: usize) -> Vec<TopEntry> {
        self.0.iter().take(n).cloned().collect()
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

/// Applies `change` to the index (if any) and returns the new list, or `None` when the
/// list is unchanged. `scan` lists every valued relation after the change; it is called
/// only for targets without an index.
pub(crate) fn next_list(
    list: &[TopEntry],
    n: usize,
    index: Option<&mut TopIndex>,
    change: &TopChange<'_>,
    scan: impl FnOnce() -> Vec<TopEntry>,
) -> Option<Vec<TopEntry>> {
    if change.old == change.new {
        return None;
    }
    let index = index.map(|index| {
        index.replace(change.profile, change.old, change.new);
        &*index
    });
    let member = list.iter().position(|e| e.is(change.profile));
    let new_entry = change.new.map(|rank| TopEntry {
        rank,
        profile: Arc::clone(change.profile),
    });
    let unlisted_before = change.valued_before > list.len() as u64;
    if member.is_some() && unlisted_before {
        // A member moved or left while others wait outside: only a refill is exact.
        let refill = match index {
            Some(index) => index.first(n),
            None => select_top(scan(), n),
        };
        return Some(refill);
    }
    let enters = |e: &TopEntry, len: usize| len < n || list.last().is_some_and(|last| e < last);
    if member.is_none() && !new_entry.as_ref().is_some_and(|e| enters(e, list.len())) {
        return None;
    }
    let mut next: Vec<TopEntry> = list.to_vec();
    if let Some(i) = member {
        next.remove(i);
    }
    if let Some(entry) = new_entry {
        let at = next.partition_point(|e| e < &entry);
        next.insert(at, entry);
        next.truncate(n);
    }
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Directory;

    /// A target with an index never scans its relations to refill: the best member
    /// leaves ten times over, each list is exact, and `scan` is never called.
    #[test]
    fn an_indexed_target_refills_without_scanning() {
        let directory = Directory::for_test();
        let profiles: Vec<Arc<Profile>> = (0..40u64)
            .map(|i| directory.create_for_test(2, &format!("p{i:02}"), i))
            .collect();
        // Ranks with ties, so the id order counts too.
        let mut valued: Vec<TopEntry> = profiles
            .iter()
            .enumerate()
            .map(|(i, p)| TopEntry {
                rank: i as u64 / 3,
                profile: Arc::clone(p),
            })
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
            let scan = || {
                scans += 1;
                valued.clone()
            };
            list = next_list(&list, n, Some(&mut index), &change, scan).expect("a refill");
            assert_eq!(list, select_top(valued.clone(), n), "round {round}");
        }
        assert_eq!(scans, 0, "refills come from the index");
        assert_eq!(index.len(), valued.len());
    }
}
