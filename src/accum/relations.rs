//! One target's relations as a persistent vector: the published counters hold a
//! snapshot of it, so `list` reads a consistent page without a lock.
//!
//! A 16-way trie of `Arc` nodes, densely packed from index 0. A write copies only the
//! path to the element it changes (`Arc::make_mut`: nodes still shared with a published
//! snapshot are cloned, the rest are shared), so it costs O(16 * log16 n) and a snapshot
//! costs one `Arc` clone. Removal swaps the last element into the hole, keeping it dense.

use std::sync::Arc;

const BITS: u32 = 4;
const WIDTH: usize = 1 << BITS;
const MASK: usize = WIDTH - 1;

#[derive(Debug, Clone)]
enum Node<T> {
    Leaf(Vec<T>),
    Branch(Vec<Arc<Node<T>>>),
}

/// A persistent vector (cheap to clone, copy-on-write).
#[derive(Debug, Clone)]
pub(crate) struct PVec<T> {
    root: Option<Arc<Node<T>>>,
    len: usize,
    /// `BITS * (levels - 1)`: the shift of the root's child index.
    shift: u32,
}

impl<T> Default for PVec<T> {
    fn default() -> Self {
        PVec {
            root: None,
            len: 0,
            shift: 0,
        }
    }
}

fn capacity(shift: u32) -> usize {
    1usize.checked_shl(shift + BITS).unwrap_or(usize::MAX)
}

fn new_path<T>(shift: u32, value: T) -> Node<T> {
    if shift == 0 {
        Node::Leaf(vec![value])
    } else {
        Node::Branch(vec![Arc::new(new_path(shift - BITS, value))])
    }
}

impl<T: Clone> PVec<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        if index >= self.len {
            return None;
        }
        let mut node = self.root.as_deref()?;
        let mut shift = self.shift;
        loop {
            match node {
                Node::Leaf(items) => return items.get(index & MASK),
                Node::Branch(children) => {
                    node = children.get((index >> shift) & MASK)?;
                    shift = shift.saturating_sub(BITS);
                }
            }
        }
    }

    pub(crate) fn push(&mut self, value: T) {
        let index = self.len;
        let Some(root) = self.root.as_mut() else {
            self.root = Some(Arc::new(Node::Leaf(vec![value])));
            self.len = 1;
            return;
        };
        if index == capacity(self.shift) {
            let old = Arc::clone(root);
            *root = Arc::new(Node::Branch(vec![old]));
            self.shift += BITS;
        }
        let mut node = Arc::make_mut(root);
        let mut shift = self.shift;
        loop {
            match node {
                Node::Leaf(items) => {
                    items.push(value);
                    break;
                }
                Node::Branch(children) => {
                    let child = (index >> shift) & MASK;
                    if child == children.len() {
                        children.push(Arc::new(new_path(shift - BITS, value)));
                        break;
                    }
                    node = Arc::make_mut(&mut children[child]);
                    shift -= BITS;
                }
            }
        }
        self.len += 1;
    }

    /// Replaces element `index` (which must exist) and returns the old one.
    pub(crate) fn set(&mut self, index: usize, value: T) -> Option<T> {
        if index >= self.len {
            return None;
        }
        let mut node = Arc::make_mut(self.root.as_mut()?);
        let mut shift = self.shift;
        loop {
            match node {
                Node::Leaf(items) => {
                    let slot = items.get_mut(index & MASK)?;
                    return Some(std::mem::replace(slot, value));
                }
                Node::Branch(children) => {
                    node = Arc::make_mut(children.get_mut((index >> shift) & MASK)?);
                    shift = shift.saturating_sub(BITS);
                }
            }
        }
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        let index = self.len.checked_sub(1)?;
        let value = pop_at(Arc::make_mut(self.root.as_mut()?), self.shift, index)?;
        self.len = index;
        if self.len == 0 {
            self.root = None;
            self.shift = 0;
        }
        // Collapse a root left with a single child.
        while self.shift > 0 {
            let Some(Node::Branch(children)) = self.root.as_deref() else {
                break;
            };
            if children.len() != 1 {
                break;
            }
            self.root = children.first().cloned();
            self.shift -= BITS;
        }
        Some(value)
    }

    /// Removes element `index` by moving the last element into its place; returns the
    /// removed element and, if one moved, its new index.
    pub(crate) fn swap_remove(&mut self, index: usize) -> Option<(T, bool)> {
        if index >= self.len {
            return None;
        }
        let last = self.pop()?;
        if index == self.len {
            return Some((last, false));
        }
        let removed = self.set(index, last)?;
        Some((removed, true))
    }

    pub(crate) fn iter(&self) -> Iter<'_, T> {
        Iter {
            stack: self
                .root
                .as_deref()
                .map(|n| vec![NodeIter::of(n)])
                .unwrap_or_default(),
        }
    }
}

fn pop_at<T: Clone>(node: &mut Node<T>, shift: u32, index: usize) -> Option<T> {
    match node {
        Node::Leaf(items) => items.pop(),
        Node::Branch(children) => {
            let child = (index >> shift) & MASK;
            let value = pop_at(
                Arc::make_mut(children.get_mut(child)?),
                shift.saturating_sub(BITS),
                index,
            )?;
            let empty = match children.get(child).map(|c| &**c) {
                Some(Node::Leaf(items)) => items.is_empty(),
                Some(Node::Branch(grand)) => grand.is_empty(),
                None => false,
            };
            if empty {
                children.pop();
            }
            Some(value)
        }
    }
}

enum NodeIter<'a, T> {
    Leaf(std::slice::Iter<'a, T>),
    Branch(std::slice::Iter<'a, Arc<Node<T>>>),
}

impl<'a, T> NodeIter<'a, T> {
    fn of(node: &'a Node<T>) -> Self {
        match node {
            Node::Leaf(items) => NodeIter::Leaf(items.iter()),
            Node::Branch(children) => NodeIter::Branch(children.iter()),
        }
    }
}

/// Elements in index order.
pub(crate) struct Iter<'a, T> {
    stack: Vec<NodeIter<'a, T>>,
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        loop {
            match self.stack.last_mut()? {
                NodeIter::Leaf(items) => match items.next() {
                    Some(item) => return Some(item),
                    None => {
                        self.stack.pop();
                    }
                },
                NodeIter::Branch(children) => match children.next() {
                    Some(child) => self.stack.push(NodeIter::of(child)),
                    None => {
                        self.stack.pop();
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push(u32),
        Pop,
        Set(usize, u32),
        SwapRemove(usize),
        Snapshot,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => any::<u32>().prop_map(Op::Push),
            2 => Just(Op::Pop),
            2 => (any::<usize>(), any::<u32>()).prop_map(|(i, v)| Op::Set(i, v)),
            2 => any::<usize>().prop_map(Op::SwapRemove),
            1 => Just(Op::Snapshot),
        ]
    }

    proptest! {
        /// Against `Vec`, with snapshots taken along the way that must never change.
        #[test]
        fn behaves_like_vec(ops in prop::collection::vec(op(), 0..700)) {
            let mut p = PVec::default();
            let mut v: Vec<u32> = Vec::new();
            let mut snaps: Vec<(PVec<u32>, Vec<u32>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Push(x) => { p.push(x); v.push(x); }
                    Op::Pop => prop_assert_eq!(p.pop(), v.pop()),
                    Op::Set(i, x) => {
                        let i = if v.is_empty() { i } else { i % (v.len() + 1) };
                        let want = v.get_mut(i).map(|s| std::mem::replace(s, x));
                        prop_assert_eq!(p.set(i, x), want);
                    }
                    Op::SwapRemove(i) => {
                        let i = if v.is_empty() { i } else { i % (v.len() + 1) };
                        let want = (i < v.len()).then(|| {
                            let moved = i + 1 < v.len();
                            (v.swap_remove(i), moved)
                        });
                        prop_assert_eq!(p.swap_remove(i), want);
                    }
                    Op::Snapshot => snaps.push((p.clone(), v.clone())),
                }
                prop_assert_eq!(p.len(), v.len());
                prop_assert_eq!(p.iter().copied().collect::<Vec<_>>(), v.clone());
            }
            for (i, x) in v.iter().enumerate() {
                prop_assert_eq!(p.get(i), Some(x));
            }
            prop_assert_eq!(p.get(v.len()), None);
            for (snap, want) in snaps {
                prop_assert_eq!(snap.iter().copied().collect::<Vec<_>>(), want);
            }
        }
    }

    #[test]
    fn grows_and_shrinks_across_levels() {
        let mut p = PVec::default();
        let n = WIDTH * WIDTH * WIDTH + 3;
        for i in 0..n {
            p.push(i);
        }
        assert_eq!(p.shift, 3 * BITS);
        let snapshot = p.clone();
        for i in (0..n).rev() {
            assert_eq!(p.pop(), Some(i));
        }
        assert_eq!(p.shift, 0);
        assert!(p.root.is_none());
        assert_eq!(snapshot.iter().count(), n);
        assert_eq!(snapshot.get(n - 1), Some(&(n - 1)));
    }
}
