//! The id order of a large target's relations: their positions in the target's
//! `Packed`, sorted by initiator, in leaves shared copy on write. Each entry holds its
//! initiator's key inline where the key fits (a 24-hex id's 12 packed bytes), so a
//! search compares within the leaf without leaving it. A page reads the leaves'
//! lengths up to its first row and then its rows (O(n/B + page)); a write changes one
//! leaf (O(log n + B)).

use std::cmp::Ordering;
use std::sync::Arc;

/// Most entries in one leaf (fewer in unit tests, so that leaves split and merge); a
/// leaf left with fewer than a quarter of it merges with a neighbour.
pub(crate) const LEAF_MAX: usize = if cfg!(test) { 32 } else { 1024 };

/// Entries of each leaf an [`Order`] built in one pass gets: room for inserts before
/// the leaves split.
const LEAF_FILL: usize = LEAF_MAX * 3 / 4;

/// The bit of an entry's word that says it holds an inline key; the others are its
/// position (so positions stay below 2^31).
const INLINE: u32 = 1 << 31;

/// One entry of a leaf: a position, and its key's inline form when it has one.
#[derive(Debug, Clone, Copy)]
struct Entry<I> {
    /// The position, with [`INLINE`] set when `inline` holds the key.
    word: u32,
    inline: I,
}

impl<I: Copy + Default> Entry<I> {
    fn new(pos: u32, inline: Option<I>) -> Self {
        // An ordered recipient holds fewer than 2^31 relations: 2^31 would be 60 GB of
        // records for the seed schema alone, past any machine this engine runs on.
        // Checked in release too: a larger position would corrupt its entry.
        assert!(pos < INLINE, "a position past 2^31");
        match inline {
            Some(inline) => Entry {
                word: pos | INLINE,
                inline,
            },
            None => Entry {
                word: pos,
                inline: I::default(),
            },
        }
    }

    fn pos(&self) -> u32 {
        self.word & !INLINE
    }

    fn inline(&self) -> Option<&I> {
        (self.word & INLINE != 0).then_some(&self.inline)
    }
}

/// Positions of relations (indexes into a target's `Packed`), in the order of their
/// initiators' keys. Each entry holds its position and, when the key has one, its
/// inline form `I` (fixed-size, `Copy`); only each leaf's last full key `K` is kept
/// besides. A search finds its leaf among those keys (no lookup), then compares within
/// the leaf through `cmp`, which compares the key of the entry (given its position and
/// inline form) with the key searched for: from the inline forms when both have one,
/// else through the caller's lookup (the target finds initiators in the slot table).
///
/// Leaves hold 1 to [`LEAF_MAX`] entries each, at least a quarter of it when there are
/// two or more. A clone (what a page or a write after one costs) copies the list of
/// leaves and their last keys, not the leaves; a change copies the one leaf it changes
/// if it is shared.
#[derive(Debug, Clone)]
pub(crate) struct Order<K, I> {
    leaves: Vec<Arc<Vec<Entry<I>>>>,
    /// The key of each leaf's last entry.
    last: Vec<K>,
}

impl<K: Ord + Clone, I: Copy + Default> Order<K, I> {
    /// An order of `sorted`, positions (with their inline keys) already in key order;
    /// `key_of` gives the key of a position.
    pub(crate) fn build(sorted: Vec<(u32, Option<I>)>, key_of: impl Fn(u32) -> K) -> Self {
        let entries: Vec<Entry<I>> = sorted
            .into_iter()
            .map(|(pos, inline)| Entry::new(pos, inline))
            .collect();
        let mut leaves: Vec<Arc<Vec<Entry<I>>>> = Vec::with_capacity(entries.len() / LEAF_FILL + 1);
        for part in entries.chunks(LEAF_FILL) {
            match leaves.last_mut() {
                // A short last part joins the leaf before (3/4 + 1/4 fits in one).
                Some(last) if part.len() < LEAF_MAX / 4 => {
                    let last = Arc::make_mut(last);
                    last.reserve_exact(part.len());
                    last.extend_from_slice(part);
                }
                _ => leaves.push(Arc::new(part.to_vec())),
            }
        }
        let last = leaves
            .iter()
            .filter_map(|l| l.last().map(|e| key_of(e.pos())))
            .collect();
        Order { leaves, last }
    }

    /// Number of entries (O(n/B)).
    pub(crate) fn len(&self) -> usize {
        self.leaves.iter().map(|l| l.len()).sum()
    }

    /// Every position, in key order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.leaves.iter().flat_map(|l| l.iter().map(Entry::pos))
    }

    /// The leaf where the searched key is or belongs: the first whose last key is not
    /// `below` it, else the last leaf. There must be one.
    fn leaf_for(&self, below: impl Fn(&K) -> bool) -> usize {
        let i = self.last.partition_point(below);
        i.min(self.leaves.len() - 1)
    }

    /// Where the searched key is or belongs (`below` tells a key below it, `cmp`
    /// compares an entry's key with it): `(leaf, index)`, and whether the entry there
    /// has that key. There must be a leaf.
    fn search(
        &self,
        below: impl Fn(&K) -> bool,
        cmp: impl Fn(u32, Option<&I>) -> Ordering,
    ) -> (usize, usize, bool) {
        let l = self.leaf_for(below);
        let leaf = &self.leaves[l];
        let i = leaf.partition_point(|e| cmp(e.pos(), e.inline()) == Ordering::Less);
        let found = leaf
            .get(i)
            .is_some_and(|e| cmp(e.pos(), e.inline()) == Ordering::Equal);
        (l, i, found)
    }

    /// Where the entry of the searched key (as in [`search`](Self::search)) at
    /// position `pos` is: `(leaf, index)`. Found by binary search in its leaf; by a
    /// scan of the leaf only if the entry there is not at `pos` (an order out of step,
    /// which the caller then rebuilds).
    fn find(
        &self,
        below: impl Fn(&K) -> bool,
        cmp: impl Fn(u32, Option<&I>) -> Ordering,
        pos: u32,
    ) -> Option<(usize, usize)> {
        if self.leaves.is_empty() {
            return None;
        }
        let (l, i, _) = self.search(below, cmp);
        let leaf = &self.leaves[l];
        if leaf.get(i).is_some_and(|e| e.pos() == pos) {
            return Some((l, i));
        }
        let i = leaf.iter().position(|e| e.pos() == pos)?;
        Some((l, i))
    }

    /// The position of the entry of the searched key (as in
    /// [`search`](Self::search)), if there is one.
    pub(crate) fn find_pos(
        &self,
        below: impl Fn(&K) -> bool,
        cmp: impl Fn(u32, Option<&I>) -> Ordering,
    ) -> Option<u32> {
        if self.leaves.is_empty() {
            return None;
        }
        let (l, i, found) = self.search(below, cmp);
        found.then(|| self.leaves[l][i].pos())
    }

    /// Inserts `pos` (with its key's inline form, if it has one) in its key's place
    /// (`below` tells a key below it, `cmp` compares an entry's key with it, `key_of`
    /// gives a position's key); `false` (and nothing inserted) if an entry has that key
    /// already.
    pub(crate) fn insert(
        &mut self,
        pos: u32,
        inline: Option<I>,
        below: impl Fn(&K) -> bool,
        cmp: impl Fn(u32, Option<&I>) -> Ordering,
        key_of: impl Fn(u32) -> K,
    ) -> bool {
        let entry = Entry::new(pos, inline);
        if self.leaves.is_empty() {
            self.leaves.push(Arc::new(vec![entry]));
            self.last.push(key_of(pos));
            return true;
        }
        let (l, i, found) = self.search(below, cmp);
        if found {
            return false;
        }
        let leaf = Arc::make_mut(&mut self.leaves[l]);
        // Grow by an eighth, not double: a leaf's spare room stays small.
        if leaf.len() == leaf.capacity() {
            leaf.reserve_exact((leaf.len() / 8).max(8).min(LEAF_MAX + 1 - leaf.len()));
        }
        leaf.insert(i, entry);
        if i + 1 == leaf.len() {
            self.last[l] = key_of(pos);
        }
        if leaf.len() > LEAF_MAX {
            let upper = leaf.split_off(leaf.len() / 2);
            leaf.shrink_to(leaf.len() + leaf.len() / 8);
            let upper_last =
                std::mem::replace(&mut self.last[l], key_of(leaf[leaf.len() - 1].pos()));
            self.leaves.insert(l + 1, Arc::new(upper));
            self.last.insert(l + 1, upper_last);
        }
        true
    }

    /// Removes the entry at position `pos`, of the key `below` and `cmp` tell (as in
    /// [`insert`](Self::insert); `key_of` gives a position's key); `false` if there is
    /// none.
    pub(crate) fn remove(
        &mut self,
        below: impl Fn(&K) -> bool,
        cmp: impl Fn(u32, Option<&I>) -> Ordering,
        pos: u32,
        key_of: impl Fn(u32) -> K,
    ) -> bool {
        let Some((l, i)) = self.find(below, cmp, pos) else {
            return false;
        };
        let leaf = Arc::make_mut(&mut self.leaves[l]);
        leaf.remove(i);
        if i == leaf.len() && i > 0 {
            self.last[l] = key_of(leaf[i - 1].pos());
        }
        if leaf.capacity() > 2 * leaf.len() + 8 {
            leaf.shrink_to(leaf.len() + leaf.len() / 8);
        }
        self.rebalance(l, key_of);
        true
    }

    /// Moves the entry of the key `below` and `cmp` tell from position `old` to
    /// `new`; `false` if there is no such entry.
    pub(crate) fn set(
        &mut self,
        below: impl Fn(&K) -> bool,
        cmp: impl Fn(u32, Option<&I>) -> Ordering,
        old: u32,
        new: u32,
    ) -> bool {
        let Some((l, i)) = self.find(below, cmp, old) else {
            return false;
        };
        assert!(new < INLINE, "a position past 2^31");
        let e = &mut Arc::make_mut(&mut self.leaves[l])[i];
        e.word = (e.word & INLINE) | new;
        true
    }

    /// After a removal from leaf `l`: drops it if empty, merges it with a neighbour if
    /// below a quarter (splitting the two evenly again if they do not fit in one).
    fn rebalance(&mut self, l: usize, key_of: impl Fn(u32) -> K) {
        let len = self.leaves[l].len();
        if len == 0 {
            self.leaves.remove(l);
            self.last.remove(l);
            return;
        }
        if len >= LEAF_MAX / 4 || self.leaves.len() == 1 {
            return;
        }
        // Leaves `j` and `j + 1` become one.
        let j = if l + 1 < self.leaves.len() { l } else { l - 1 };
        let right = self.leaves.remove(j + 1);
        let right_last = self.last.remove(j + 1);
        let left = Arc::make_mut(&mut self.leaves[j]);
        left.reserve_exact(right.len());
        left.extend_from_slice(&right);
        if left.len() > LEAF_MAX {
            let upper = left.split_off(left.len() / 2);
            left.shrink_to(left.len() + left.len() / 8);
            self.last[j] = key_of(left[left.len() - 1].pos());
            self.leaves.insert(j + 1, Arc::new(upper));
            self.last.insert(j + 1, right_last);
        } else {
            self.last[j] = right_last;
        }
    }

    /// The positions `skip..skip + limit` in key order (fewer at the end). Adds to
    /// `touched` the leaves and entries read: at most `leaves + limit`, and the leaves
    /// are at most `4n / LEAF_MAX + 1`.
    pub(crate) fn page(&self, skip: usize, limit: usize, touched: &mut usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut skip = skip;
        for leaf in &self.leaves {
            if out.len() == limit {
                break;
            }
            *touched += 1;
            if skip >= leaf.len() {
                skip -= leaf.len();
                continue;
            }
            let take = (leaf.len() - skip).min(limit - out.len());
            out.extend(leaf[skip..skip + take].iter().map(Entry::pos));
            *touched += take;
            skip = 0;
        }
        out
    }

    /// Checks the shape: no empty leaf, none over [`LEAF_MAX`], none under a quarter
    /// of it when there are two or more, and each leaf's last key its last entry's.
    #[cfg(test)]
    pub(crate) fn check_shape(&self, key_of: impl Fn(u32) -> K) -> Result<(), String> {
        let n = self.leaves.len();
        if self.last.len() != n {
            return Err(format!("{n} leaves, {} last keys", self.last.len()));
        }
        for (i, leaf) in self.leaves.iter().enumerate() {
            let len = leaf.len();
            if len == 0 || len > LEAF_MAX || (n > 1 && len < LEAF_MAX / 4) {
                return Err(format!("leaf {i} of {n} holds {len}"));
            }
            if leaf.last().map(|e| key_of(e.pos())).as_ref() != Some(&self.last[i]) {
                return Err(format!("leaf {i}'s last key is stale"));
            }
        }
        Ok(())
    }

    /// Number of leaves.
    #[cfg(test)]
    pub(crate) fn leaf_count(&self) -> usize {
        self.leaves.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Keys by position: `keys[p]` is the key of the entry at position `p`. An
    /// entry's inline form, when it has one, must be its key (checked), and is what
    /// is compared then.
    fn by<'a>(keys: &'a [u16], key: u16) -> impl Fn(u32, Option<&u16>) -> Ordering + 'a {
        move |p, inline| {
            let k = match inline {
                Some(&k) => {
                    assert_eq!(k, keys[p as usize], "an inline key out of step");
                    k
                }
                None => keys[p as usize],
            };
            k.cmp(&key)
        }
    }

    /// Odd keys are held inline, even ones compared through `keys`: both paths, mixed.
    fn inline(k: u16) -> Option<u16> {
        (k % 2 == 1).then_some(k)
    }

    proptest! {
        /// Inserts, removes and moves (a position changed, as a target's swap_remove
        /// does) against a `BTreeMap` from key to position, across leaf splits and
        /// merges: the same entries in the same order, every page as the map's, the
        /// shape kept, and clones taken along the way unchanged by later writes.
        #[test]
        fn order_behaves_like_a_btreemap(
            start in prop::collection::vec(any::<u16>(), 0..200),
            ops in prop::collection::vec((0u8..3, any::<u16>(), any::<u16>()), 0..1500),
            pages in prop::collection::vec((0usize..400, 1usize..50), 1..8),
        ) {
            // Positions are handed out as keys come, so the key of position p is
            // keys[p] (a removed key's position is not reused: positions and keys
            // are the oracle's business, not the order's).
            let mut keys: Vec<u16> = Vec::new();
            let mut oracle: BTreeMap<u16, u32> = BTreeMap::new();
            for k in start {
                if let std::collections::btree_map::Entry::Vacant(e) = oracle.entry(k) {
                    e.insert(keys.len() as u32);
                    keys.push(k);
                }
            }
            let mut order = Order::build(
                oracle.iter().map(|(&k, &p)| (p, inline(k))).collect(),
                |p| keys[p as usize],
            );
            let mut copies: Vec<(Order<u16, u16>, Vec<u32>)> = Vec::new();
            for (op, k, x) in ops {
                match op {
                    0 => {
                        let fresh = !oracle.contains_key(&k);
                        keys.push(k);
                        let pos = (keys.len() - 1) as u32;
                        let inserted = order.insert(pos, inline(k), |x| *x < k, by(&keys, k), |p| keys[p as usize]);
                        prop_assert_eq!(inserted, fresh);
                        if fresh {
                            oracle.insert(k, pos);
                        } else {
                            keys.pop();
                        }
                    }
                    1 => {
                        // Remove the key at or after k (or k itself, if absent).
                        let k = oracle.range(k..).next().map_or(k, |(&k, _)| k);
                        let pos = oracle.remove(&k);
                        let removed = order.remove(|x| *x < k, by(&keys, k), pos.unwrap_or(u32::MAX >> 1), |p| keys[p as usize]);
                        prop_assert_eq!(removed, pos.is_some());
                    }
                    _ => {
                        // Move an entry: its key gets a new position (same key).
                        let k = oracle.range(k..).next().map_or(k, |(&k, _)| k);
                        let old = oracle.get(&k).copied();
                        let found = order.find(|x| *x < k, by(&keys, k), old.unwrap_or(u32::MAX >> 1)).is_some();
                        prop_assert_eq!(found, old.is_some());
                        if let Some(old) = old {
                            keys.push(k);
                            let pos = (keys.len() - 1) as u32;
                            prop_assert!(order.set(|x| *x < k, by(&keys, k), old, pos));
                            oracle.insert(k, pos);
                        }
                        if x % 64 == 0 {
                            copies.push((order.clone(), order.iter().collect()));
                        }
                    }
                }
                order.check_shape(|p| keys[p as usize]).map_err(TestCaseError::fail)?;
            }
            let want: Vec<u32> = oracle.values().copied().collect();
            prop_assert_eq!(order.iter().collect::<Vec<_>>(), want.clone());
            prop_assert_eq!(order.len(), want.len());
            for (skip, limit) in pages {
                let mut touched = 0;
                let got = order.page(skip, limit, &mut touched);
                let expect: Vec<u32> = want.iter().copied().skip(skip).take(limit).collect();
                prop_assert_eq!(&got, &expect);
                prop_assert!(touched <= order.leaf_count() + limit);
            }
            for (copy, then) in copies {
                prop_assert_eq!(copy.iter().collect::<Vec<_>>(), then);
            }
        }
    }

    /// A built order has the shape of one kept by inserts, for every size around the
    /// leaf boundaries.
    #[test]
    fn built_orders_have_their_shape() {
        for n in 0..(4 * LEAF_MAX) {
            let order: Order<u32, u32> =
                Order::build((0..n as u32).map(|p| (p, Some(p))).collect(), |p| p);
            assert_eq!(
                order.iter().collect::<Vec<_>>(),
                (0..n as u32).collect::<Vec<_>>()
            );
            order.check_shape(|p| p).expect("shape");
        }
    }
}
