//! The writer-side state of one `(rel_id, profile A)`: its relations, packed, where
//! each initiator's relation sits, the top indexes, and the current published counters,
//! updated incrementally on every write.

use smallvec::SmallVec;
use std::cell::Cell;
use std::cmp::Ordering;
use std::sync::Arc;

use crate::accum::block::{Block, Layout, Words};
use crate::accum::counter::{Counters, split, wide};
use crate::accum::order::Order;
use crate::accum::top::{self, Ranking, TopChange, TopEntry, TopIndex};
use crate::limits::MAX_PROPS;
use crate::profile::Profile;
use crate::profile::id::ProfileId;
use crate::profile::slots::SlotTable;
use crate::record::{Record, RecordRef};
use crate::schema::Schema;
use crate::value::PropKind;
use crate::value::rank;

/// Where an initiator's relation is, as the caller already knows it (found under the
/// same lock, with no write since): a write then does not search for it again.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Known {
    /// Not looked up: the target finds it.
    Unknown,
    /// At this index of the relations.
    At(usize),
    /// The initiator has no relation here.
    Absent,
}

/// A copy of a target's counters as a write builds it: its words, laid out for a
/// top capacity (`accum::block`, *Format*), which grows when a list outgrows it.
struct Draft {
    words: Words,
    layout: Layout,
}

impl Draft {
    /// The `k`-th top list's length word and length.
    fn list(&self, k: usize) -> (usize, usize) {
        let at = self.layout.top_at(k);
        (at, usize::try_from(self.words[at]).unwrap_or(usize::MAX))
    }

    /// Entry `j` of the list whose length word is at `at`.
    fn entry(&self, at: usize, j: usize) -> TopEntry {
        TopEntry::from_words(&self.words[at + 1 + 3 * j..at + 4 + 3 * j])
    }

    /// Writes `list` as the `k`-th top list, first laying the copy out for more room
    /// if it does not fit: half again the room needed (so a growing list replaces its
    /// block O(log n) times), up to the schema's top size.
    fn put_list(&mut self, k: usize, list: &[TopEntry], schema: &Schema) {
        let need = list.len();
        if need > self.layout.cap {
            let cap = (need + need / 2)
                .min(usize::from(max_top(schema)))
                .max(need);
            let to = Layout::of(schema, cap);
            self.layout.relayout(&mut self.words, &to);
            self.layout = to;
        }
        let at = self.layout.top_at(k);
        self.words[at] = need as u64;
        for (j, e) in list.iter().enumerate() {
            let w = at + 1 + 3 * j;
            self.words[w] = e.rank;
            self.words[w + 1..w + 3].copy_from_slice(&e.named);
        }
    }
}

thread_local! {
    /// A list to edit a top list in, its room kept for the thread's next write (a top
    /// list lives in its block's words alone).
    static SCRATCH: Cell<Vec<TopEntry>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch list (empty).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<TopEntry>) -> R) -> R {
    // Taken, not borrowed: a nested or interleaved use gets a fresh list.
    let mut list = SCRATCH.with(Cell::take);
    list.clear();
    let r = f(&mut list);
    SCRATCH.with(|s| s.set(list));
    r
}

/// A block a write leaves the store to publish (readers do not have it yet), and the
/// block it replaces, to retire once it is published (`Latch::retire`).
pub(crate) struct Fresh {
    pub(crate) block: Arc<Block>,
    pub(crate) replaced: Option<Arc<Block>>,
}

/// The key of a relation in the id order: its initiator's id and slot (the id is
/// `None` only for a slot found free, which a target's lock rules out).
pub(crate) type IdKey = (Option<ProfileId>, u32);

/// A target's id order: entries keyed by their initiator's `(id, slot)`, holding a
/// 24-hex id's packed bytes inline.
pub(crate) type IdOrder = Order<IdKey, [u8; 12]>;

/// Targets with at most this many relations find one by scanning their slots (one or
/// two cache lines); larger ones keep a position map, dropped again below half of it.
const SCAN_AT_MOST: usize = 16;

/// Targets with more than this many relations keep their id order (an [`Order`]), so
/// a page costs O(page + n/B) rather than O(n); dropped again below half of it (fewer
/// in unit tests, so that targets cross it both ways).
pub(crate) const ORDER_ABOVE: usize = if cfg!(test) { 48 } else { 1024 };

/// Relations in one chunk of a [`Packed`] (fewer in unit tests, so that they cross
/// chunk boundaries).
const CHUNK: usize = if cfg!(test) { 16 } else { 4096 };

/// Up to [`CHUNK`] relations, in three columns in the same order: the initiators'
/// slots, the records' flags (presence bits and bool values, sized to the schema) and
/// their numeric words (a fixed number a record).
#[derive(Debug, Clone, Default)]
struct Chunk {
    slots: Vec<u32>,
    flags: Vec<u8>,
    nums: Vec<u64>,
}

/// The record's columns of a schema: how wide a record is in each.
#[derive(Debug, Clone, Copy)]
struct Columns {
    /// Properties: a record's flags are `2 * props` bits (presence, then bool
    /// values), in `flag_bytes` bytes.
    props: u8,
    flag_bytes: u8,
    /// Numeric words a record ([`Schema::stride`] less the flags' word).
    nums: u8,
}

impl Columns {
    fn of(stride: usize, props: usize) -> Self {
        Columns {
            props: u8::try_from(props).expect("at most MAX_PROPS properties"),
            flag_bytes: u8::try_from((2 * props).div_ceil(8)).expect("at most 8 bytes"),
            nums: u8::try_from(stride - 1).expect("at most MAX_PROPS words"),
        }
    }

    fn mask(self) -> u64 {
        (1u64 << self.props) - 1
    }

    /// A record's word 0 (presence bits low, bool values from bit 32) as its flags'
    /// bytes (presence bits, then the bool values), little endian.
    fn pack(self, head: u64) -> [u8; 8] {
        let (m, n) = (self.mask(), self.props);
        ((head & m) | (((head >> 32) & m) << n)).to_le_bytes()
    }

    /// The word 0 of the record whose flags' bytes are `bytes`.
    fn unpack(self, bytes: &[u8]) -> u64 {
        let mut word = [0u8; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        let (f, m, n) = (u64::from_le_bytes(word), self.mask(), self.props);
        (f & m) | (((f >> n) & m) << 32)
    }
}

impl Chunk {
    /// Relation `at`'s record.
    fn record(&self, at: usize, cols: Columns) -> RecordRef<'_> {
        let (fb, nw) = (usize::from(cols.flag_bytes), usize::from(cols.nums));
        let head = cols.unpack(&self.flags[at * fb..(at + 1) * fb]);
        RecordRef::new(head, &self.nums[at * nw..(at + 1) * nw])
    }

    /// Writes `rec` as relation `at`'s record.
    fn put(&mut self, at: usize, rec: RecordRef<'_>, cols: Columns) {
        let (fb, nw) = (usize::from(cols.flag_bytes), usize::from(cols.nums));
        self.flags[at * fb..(at + 1) * fb].copy_from_slice(&cols.pack(rec.head())[..fb]);
        self.nums[at * nw..(at + 1) * nw].copy_from_slice(rec.nums());
    }

    /// Room for exactly `more` relations more.
    fn reserve_exact(&mut self, more: usize, cols: Columns) {
        self.slots.reserve_exact(more);
        self.flags
            .reserve_exact(more * usize::from(cols.flag_bytes));
        self.nums.reserve_exact(more * usize::from(cols.nums));
    }

    /// Room for `keep` relations (at least its own), the rest given back.
    fn shrink_to(&mut self, keep: usize, cols: Columns) {
        self.slots.shrink_to(keep);
        self.flags.shrink_to(keep * usize::from(cols.flag_bytes));
        self.nums.shrink_to(keep * usize::from(cols.nums));
    }
}

/// One target's relations, packed in columns: the initiators' slots, the records'
/// flags and their numeric words (see `record::Record`), in the same order. No
/// allocation and no reference count per relation: `4 + ceil(2 props / 8) + 8
/// numeric` bytes each (21 for the seed schema), plus the last chunk's spare capacity.
///
/// Stored in chunks of [`CHUNK`] relations: relation `i` is in chunk `i / CHUNK`,
/// every chunk but the last is full, and a removal moves the last relation into the
/// hole. The first chunk is inline (a small target, most of them, costs no more than
/// one flat list), the others are shared. So a copy (a write to relations a snapshot
/// or a page still holds) copies the first chunk, the list of the others and the one
/// it changes, never the whole target: the first write to a target of a million
/// relations after a snapshot point costs microseconds, not milliseconds.
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    head: Chunk,
    /// Chunks 1 and up (a boxed slice: no room kept, and nothing allocated for a
    /// target of one chunk).
    tail: Box<[Arc<Chunk>]>,
    cols: Columns,
}

impl Packed {
    /// No relations, for records of `stride` words ([`Schema::stride`]) of `props`
    /// properties.
    fn new(stride: usize, props: usize) -> Self {
        Packed {
            head: Chunk::default(),
            tail: Box::default(),
            cols: Columns::of(stride, props),
        }
    }

    /// Number of relations.
    pub(crate) fn len(&self) -> usize {
        match self.tail.last() {
            None => self.head.slots.len(),
            Some(last) => CHUNK * self.tail.len() + last.slots.len(),
        }
    }

    fn chunk(&self, c: usize) -> &Chunk {
        if c == 0 {
            &self.head
        } else {
            &self.tail[c - 1]
        }
    }

    /// Chunk `c`, to change (copied first if a snapshot or a page shares it).
    fn chunk_mut(&mut self, c: usize) -> &mut Chunk {
        if c == 0 {
            &mut self.head
        } else {
            Arc::make_mut(&mut self.tail[c - 1])
        }
    }

    /// The index of the last chunk (the only one that may not be full).
    fn last(&self) -> usize {
        self.tail.len()
    }

    /// Relation `i`'s initiator slot and record.
    pub(crate) fn get(&self, i: usize) -> (u32, RecordRef<'_>) {
        let (c, at) = (self.chunk(i / CHUNK), i % CHUNK);
        (c.slots[at], c.record(at, self.cols))
    }

    fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        std::iter::once(&self.head).chain(self.tail.iter().map(|c| &**c))
    }

    /// Every relation: initiator slot and record.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, RecordRef<'_>)> {
        let cols = self.cols;
        self.chunks().flat_map(move |c| {
            c.slots
                .iter()
                .enumerate()
                .map(move |(at, &slot)| (slot, c.record(at, cols)))
        })
    }

    /// Every relation's record, as a snapshot writes it: the initiators' slots, the
    /// flags' bytes and the numeric words, each column whole (see [`Target::load`]).
    pub(crate) fn columns(&self) -> (Vec<u32>, Vec<u8>, Vec<u64>) {
        let n = self.len();
        let cols = self.cols;
        let (mut slots, mut flags, mut nums) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n * usize::from(cols.flag_bytes)),
            Vec::with_capacity(n * usize::from(cols.nums)),
        );
        for c in self.chunks() {
            slots.extend_from_slice(&c.slots);
            flags.extend_from_slice(&c.flags);
            nums.extend_from_slice(&c.nums);
        }
        (slots, flags, nums)
    }

    /// Every relation's initiator slot, in order.
    pub(crate) fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks().flat_map(|c| c.slots.iter().copied())
    }

    /// Room for `more` relations beyond the current ones in the last chunk, exactly
    /// (chunks to come are made as they fill).
    fn reserve(&mut self, more: usize) {
        let (cols, last) = (self.cols, self.last());
        let c = self.chunk_mut(last);
        let room = more.min(CHUNK - c.slots.len());
        c.reserve_exact(room, cols);
    }

    /// Gives back the last chunk's spare room past a quarter of its relations (what
    /// growth by quarters leaves at most).
    fn fit(&mut self) {
        let (cols, last) = (self.cols, self.last());
        let c = self.chunk(last);
        let len = c.slots.len();
        if c.slots.capacity() > len + len / 4 + 8 {
            self.chunk_mut(last).shrink_to(len + len / 4, cols);
        }
    }

    fn set(&mut self, i: usize, rec: &Record) {
        let cols = self.cols;
        self.chunk_mut(i / CHUNK).put(i % CHUNK, rec.view(), cols);
    }

    fn push(&mut self, slot: u32, rec: &Record) {
        if self.chunk(self.last()).slots.len() == CHUNK {
            let mut tail = std::mem::take(&mut self.tail).into_vec();
            tail.push(Arc::new(Chunk::default()));
            self.tail = tail.into_boxed_slice();
        }
        let (cols, last) = (self.cols, self.last());
        let c = self.chunk_mut(last);
        // Grow by a quarter, not double: a target's spare room stays near an eighth of
        // its last chunk on average (doubling leaves about a third), and a push still
        // costs O(1) amortised.
        if c.slots.len() == c.slots.capacity() {
            let more = (c.slots.len() / 4).max(2).min(CHUNK - c.slots.len());
            c.reserve_exact(more, cols);
        }
        let rec = rec.view();
        c.slots.push(slot);
        c.flags
            .extend_from_slice(&cols.pack(rec.head())[..usize::from(cols.flag_bytes)]);
        c.nums.extend_from_slice(rec.nums());
    }

    /// Removes relation `i` by moving the last one into its place; returns the slot of
    /// the one that moved, if any did.
    fn swap_remove(&mut self, i: usize) -> Option<u32> {
        let end = self.len() - 1;
        let (cols, last) = (self.cols, self.last());
        let tail = self.chunk_mut(last);
        let left = tail.slots.len() - 1;
        // A record is at most MAX_PROPS numeric words: moved without an allocation.
        let moved: Option<(u32, u64, SmallVec<[u64; MAX_PROPS]>)> = (i != end).then(|| {
            let rec = tail.record(left, cols);
            (
                tail.slots[left],
                rec.head(),
                SmallVec::from_slice(rec.nums()),
            )
        });
        tail.slots.truncate(left);
        tail.flags.truncate(left * usize::from(cols.flag_bytes));
        tail.nums.truncate(left * usize::from(cols.nums));
        // Give back room a shrinking chunk no longer needs.
        if tail.slots.capacity() > 2 * left + 8 {
            tail.shrink_to(left + left / 4, cols);
        }
        if left == 0 && last > 0 {
            let mut chunks = std::mem::take(&mut self.tail).into_vec();
            chunks.pop();
            self.tail = chunks.into_boxed_slice();
        }
        let (slot, head, nums) = moved?;
        let (c, at) = (self.chunk_mut(i / CHUNK), i % CHUNK);
        c.slots[at] = slot;
        c.put(at, RecordRef::new(head, &nums), cols);
        Some(slot)
    }
}

/// One target's accumulators. Only writers holding the target's shard lock touch it.
#[derive(Debug)]
pub(crate) struct Target {
    /// The relations. Shared (copy on write) with a snapshot or a page being read: the
    /// first write after copies them, a write with nobody else holding them does not.
    rels: Arc<Packed>,
    /// Initiator slot -> index in `rels`, for targets past [`SCAN_AT_MOST`] that
    /// keep no id order (those find a relation in the order, by its initiator's id).
    /// Boxed: most targets have none, and every target carries the field.
    positions: Option<Box<hashbrown::HashMap<u32, u32>>>,
    /// The indexes in `rels` by initiator `(id, slot)`, for targets past
    /// [`ORDER_ABOVE`]. Shared (copy on write) with a page being read, as `rels` is.
    order: Option<Arc<IdOrder>>,
    /// Per property index: the ordered index of a large target's top property (empty
    /// until a property keeps one).
    indexes: Box<[Option<TopIndex>]>,
    /// What the block cannot hold of the counters (exact float sums).
    counters: Counters,
    /// The published counters (see `accum::block`).
    block: Arc<Block>,
    /// Whether `block` was handed out to be published.
    published: bool,
    /// Whether another recipient's counters are (or were) published under the same
    /// `(rel_id, hash)`: set and read by the store.
    pub(crate) shares_key: bool,
}

impl Target {
    /// The empty target of recipient `profile`, whose hash is `xxh`.
    pub(crate) fn new(schema: &Arc<Schema>, profile: &Profile, xxh: u64) -> Self {
        Target {
            rels: Arc::new(Packed::new(schema.stride(), schema.props.len())),
            positions: None,
            order: None,
            indexes: Box::default(),
            counters: Counters::empty(schema),
            block: Arc::new(Block::new(
                schema,
                profile,
                xxh,
                usize::from(max_top(schema).min(1)),
            )),
            published: false,
            shares_key: false,
        }
    }

    /// A target made whole from a snapshot's columns (see `docs/format.md`): the
    /// initiators' slots, then per relation its flags (`2 * props` bits, presence then
    /// bool values, little endian) and its numeric words. Each record is cleaned as it
    /// is copied (bits and words of absent properties cleared); a relation whose
    /// float is not finite or past the range, whose initiator repeats one before it,
    /// or whose initiator is `None` (one the caller refused), is left out and its
    /// index pushed to `refused`, in order. Counted once, from the
    /// records. Returns the target and the block to publish (`None` when no relation
    /// was kept: the target is not to be kept either).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn load(
        schema: &Arc<Schema>,
        profile: &Profile,
        xxh: u64,
        (initiators, flags, nums): (&[Option<&Profile>], &[u8], &[u64]),
        seen: &mut hashbrown::HashSet<u32>,
        refused: &mut Vec<usize>,
        index_above: usize,
        slot_table: &SlotTable,
    ) -> (Self, Option<Fresh>) {
        let mut target = Target::new(schema, profile, xxh);
        let cols = target.rels.cols;
        let (fb, nw) = (usize::from(cols.flag_bytes), usize::from(cols.nums));
        debug_assert_eq!(flags.len(), initiators.len() * fb);
        debug_assert_eq!(nums.len(), initiators.len() * nw);
        let floats: SmallVec<[(u64, usize); 4]> = schema
            .props
            .iter()
            .enumerate()
            .filter(|(_, p)| p.spec.kind() == PropKind::Float)
            .map(|(i, p)| (1u64 << i, usize::from(p.slot)))
            .collect();
        let numeric: SmallVec<[(u64, usize); 8]> = schema
            .props
            .iter()
            .enumerate()
            .filter(|(_, p)| p.spec.kind() != PropKind::Bool)
            .map(|(i, p)| (1u64 << i, usize::from(p.slot)))
            .collect();
        let bools: u64 = schema
            .props
            .iter()
            .enumerate()
            .filter(|(_, p)| p.spec.kind() == PropKind::Bool)
            .fold(0, |m, (i, _)| m | 1 << i);
        seen.clear();
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut words: SmallVec<[u64; MAX_PROPS]> = SmallVec::new();
        // The initiator of each relation placed, by position: its id is read from
        // here, not from its cell in the slot table, when the order and top indexes
        // are built below.
        let mut kept: Vec<Profile> = Vec::with_capacity(initiators.len());
        'rows: for (i, initiator) in initiators.iter().enumerate() {
            let Some(profile) = initiator else {
                refused.push(i);
                continue;
            };
            let slot = profile.slot;
            let head = cols.unpack(&flags[i * fb..(i + 1) * fb]);
            let present = head & cols.mask();
            // Presence as given; bool values only of present bool properties.
            let head = present | (head & ((present & bools) << 32));
            words.clear();
            words.extend_from_slice(&nums[i * nw..(i + 1) * nw]);
            for &(bit, at) in &numeric {
                if present & bit == 0 {
                    words[at] = 0;
                }
            }
            for &(bit, at) in &floats {
                if present & bit != 0 {
                    let f = f64::from_bits(words[at]);
                    if !f.is_finite() || f.abs() > crate::limits::MAX_FLOAT {
                        refused.push(i);
                        continue 'rows;
                    }
                    words[at] = (f + 0.0).to_bits();
                }
            }
            if !seen.insert(slot) {
                refused.push(i);
                continue;
            }
            if chunks.last().is_none_or(|c| c.slots.len() == CHUNK) {
                let left = initiators.len() - i;
                let mut c = Chunk::default();
                c.reserve_exact(left.min(CHUNK), cols);
                chunks.push(c);
            }
            kept.push((*profile).clone());
            let c = chunks.last_mut().expect("a chunk");
            c.slots.push(slot);
            c.flags.extend_from_slice(&cols.pack(head)[..fb]);
            c.nums.extend_from_slice(&words);
        }
        let mut chunks = chunks.into_iter();
        let Some(head) = chunks.next() else {
            return (target, None);
        };
        let rels = Arc::make_mut(&mut target.rels);
        rels.head = head;
        rels.tail = chunks.map(Arc::new).collect();
        rels.fit();
        if target.rels.len() > ORDER_ABOVE {
            target.order = Some(Arc::new(order_of(&target.rels, slot_table, Some(&kept))));
        }
        target.sync_order(slot_table);
        let draft = target.recount(index_above, slot_table, Some(&kept));
        let fresh = target.write_block(draft);
        (target, fresh)
    }

    /// Where `b`'s relation is in `rels`: found in the id order by `b`'s id (a
    /// binary search of inline keys) where the target keeps one, else in the
    /// position map, else by scanning at most [`SCAN_AT_MOST`] slots.
    fn position(&self, b: &Profile, slots: &SlotTable) -> Option<usize> {
        if let Some(order) = &self.order {
            let found = order.find_pos(
                below(&b.id, b.slot),
                by_key(&self.rels, slots, &b.id, b.slot),
            );
            return found.map(|at| at as usize);
        }
        match &self.positions {
            Some(map) => map.get(&b.slot).map(|&at| at as usize),
            None => self.rels.slots().position(|s| s == b.slot),
        }
    }

    /// The relation initiated by `b`, if any, and where it is (`slots` names the
    /// initiators).
    pub(crate) fn find(&self, b: &Profile, slots: &SlotTable) -> Option<(usize, RecordRef<'_>)> {
        let at = self.position(b, slots)?;
        Some((at, self.rels.get(at).1))
    }

    /// The relation initiated by `b`, if any (`slots` names the initiators).
    #[cfg(test)]
    pub(crate) fn get(&self, b: &Profile, slots: &SlotTable) -> Option<RecordRef<'_>> {
        Some(self.find(b, slots)?.1)
    }

    /// Number of relations.
    pub(crate) fn len(&self) -> usize {
        self.rels.len()
    }

    /// The id order of the relations, if the target is large enough to keep one:
    /// shared, as [`relations`](Self::relations) are, and of the same moment.
    pub(crate) fn order(&self) -> Option<&Arc<IdOrder>> {
        self.order.as_ref()
    }

    /// The published counters: the block readers read (its schema and recipient
    /// never change).
    pub(crate) fn block(&self) -> &Arc<Block> {
        &self.block
    }

    /// The relations, shared: they stay as they are for whoever holds them.
    pub(crate) fn relations(&self) -> &Arc<Packed> {
        &self.rels
    }

    /// Sets the relation initiated by `b` to `new` (`None` removes it), updates every
    /// counter incrementally and writes them to the block. Returns a block to publish
    /// when readers do not have this one yet: the target's first, or one that
    /// replaced a block a top list outgrew. Top properties with more than
    /// `index_above` valued relations keep an ordered index; the initiators of a small
    /// target's relations are found in `slots` when its top list refills.
    pub(crate) fn apply(
        &mut self,
        b: (&Profile, Known),
        new: Option<Record>,
        index_above: usize,
        slots: &SlotTable,
    ) -> Option<Fresh> {
        let mut draft = self.draft();
        let mut counters = std::mem::take(&mut self.counters);
        self.change(
            &mut counters,
            &mut draft,
            b,
            new.as_ref(),
            index_above,
            slots,
        );
        self.counters = counters;
        self.write_block(draft)
    }

    /// The block's current counters, to change.
    fn draft(&self) -> Draft {
        let mut words = Words::new();
        self.block.latch.current(&mut words);
        Draft {
            words,
            layout: *self.block.layout(),
        }
    }

    /// Writes `draft` to the block in place (see `accum::block`), with the relations'
    /// count. A new block takes it when it outgrew the block's room. Returns the block
    /// to publish, if readers do not have it yet.
    fn write_block(&mut self, mut draft: Draft) -> Option<Fresh> {
        let mut replaced = None;
        if draft.layout.cap > self.block.cap() {
            let block = Arc::new(Block::new(
                &self.block.schema,
                &self.block.profile,
                self.block.xxh,
                draft.layout.cap,
            ));
            let old = std::mem::replace(&mut self.block, block);
            // Never published: readers never had it, nothing to retire.
            replaced = self.published.then_some(old);
            self.published = false;
        } else if draft.layout.cap < self.block.cap() {
            draft.layout.relayout(&mut draft.words, self.block.layout());
        }
        draft.words[0] = self.rels.len() as u64;
        self.block.latch.write(&draft.words);
        if self.published {
            return None;
        }
        self.published = true;
        Some(Fresh {
            block: Arc::clone(&self.block),
            replaced,
        })
    }

    /// What [`apply`](Self::apply) does, on `counters` and `draft`, not yet written
    /// to the block.
    fn change(
        &mut self,
        counters: &mut Counters,
        draft: &mut Draft,
        (b, known): (&Profile, Known),
        new: Option<&Record>,
        index_above: usize,
        slots: &SlotTable,
    ) {
        let old = self.place(b, known, new, slots);
        self.sync_order(slots);
        let rels = &*self.rels;
        // Borrowed, not cloned: the schema's count is shared by every target of the
        // relation type, and a write touches no shared count.
        let schema: &Schema = &self.block.schema;
        let layout = *self.block.layout();
        let ranking = Ranking(slots);
        let mut exacts = counters.exacts.iter_mut();
        let mut tops = 0..;
        for (i, (def, place)) in schema.props.iter().zip(layout.places(schema)).enumerate() {
            let kind = def.spec.kind();
            // The property's place among the top lists, if it keeps one.
            let k = def.spec.top_size().and_then(|_| tops.next());
            let words = &mut draft.words;
            let exact = place
                .sum
                .filter(|&(_, k)| k == PropKind::Float)
                .and_then(|_| exacts.next());
            let count = &mut words[place.count];
            if kind == PropKind::Bool {
                let was = old.as_ref().is_some_and(|r| r.is_true(i));
                let is = new.is_some_and(|r| r.is_true(i));
                *count = *count + u64::from(is) - u64::from(was);
                continue;
            }
            let o = old.as_ref().and_then(|r| r.raw(schema, i));
            let n = new.and_then(|r| r.raw(schema, i));
            if o == n {
                continue;
            }
            let valued_before = *count;
            *count = valued_before + u64::from(n.is_some()) - u64::from(o.is_some());
            let valued = usize::try_from(*count).unwrap_or(usize::MAX);
            match (place.sum, exact) {
                (Some((at, PropKind::Float)), Some(exact)) => {
                    if let Some(raw) = o {
                        exact.add(-f64::from_bits(raw));
                    }
                    if let Some(raw) = n {
                        exact.add(f64::from_bits(raw));
                    }
                    words[at] = exact.value().to_bits();
                }
                (Some((at, _)), _) => {
                    let old = o.map_or(0, |raw| i128::from(raw as i64));
                    let new = n.map_or(0, |raw| i128::from(raw as i64));
                    (words[at], words[at + 1]) = split(wide(words[at], words[at + 1]) - old + new);
                }
                (None, _) => {}
            }
            let (Some(size), Some(k)) = (def.spec.top_size(), k) else {
                continue;
            };
            let size = usize::from(size);
            if valued > index_above {
                make_index_room(&mut self.indexes, schema);
            }
            let change = TopChange {
                profile: b,
                old: o.map(|raw| rank(kind, raw)),
                new: n.map(|raw| rank(kind, raw)),
                valued_before,
            };
            if let Some(Some(index)) = self.indexes.get_mut(i) {
                index.replace(b, change.old, change.new);
            }
            let (at, len) = draft.list(k);
            let last = len.checked_sub(1).map(|j| draft.entry(at, j));
            let members = (0..len).map(|j| draft.entry(at, j).slot());
            if change.touches(size, members, len, last, ranking) {
                with_scratch(|list| {
                    list.extend((0..len).map(|j| draft.entry(at, j)));
                    let scan = |out: &mut Vec<TopEntry>| {
                        scan_best(rels, schema, i, size, slots, out);
                    };
                    let index = self.indexes.get(i).and_then(Option::as_ref);
                    top::update_list(list, size, index, &change, scan, ranking);
                    draft.put_list(k, list, schema);
                });
            }
            if let Some(index) = self.indexes.get_mut(i) {
                match index {
                    None if valued > index_above => {
                        *index = Some(TopIndex::build(scan_valued(rels, schema, i, slots, None)));
                    }
                    Some(_) if valued < index_above / 2 => *index = None,
                    _ => {}
                }
                debug_assert!(index.as_ref().is_none_or(|x| x.len() == valued));
            }
        }
    }

    /// Sets (`Some`) or removes (`None`) many relations at once, in order (a later
    /// row for the same initiator replaces an earlier one, as one write after another
    /// would), and returns the block to publish (as [`apply`](Self::apply)) with the
    /// indexes in `rows` of the rows that added a relation (`true`: their initiators
    /// were not in the target before) or removed one (`false`). A batch at least a
    /// quarter of the target's size is placed first and then counted once, from the
    /// records (O(target)); a smaller one goes through [`apply`](Self::apply) row by
    /// row (O(rows)), so a batch never costs more than the larger of the two.
    ///
    /// `places`, when not empty, says where each row's relation is (found under the
    /// same lock, no row removing one): rows applied one by one then do not search.
    pub(crate) fn apply_many(
        &mut self,
        rows: &[(u32, &Profile, Option<&Record>)],
        places: &[Known],
        index_above: usize,
        slots: &SlotTable,
    ) -> (Option<Fresh>, Vec<(usize, bool)>) {
        let mut moved = Vec::new();
        if rows.len() * 4 < self.len() {
            let mut draft = self.draft();
            let mut counters = std::mem::take(&mut self.counters);
            for (i, (_, b, rec)) in rows.iter().enumerate() {
                let before = self.len();
                let b = (*b, places.get(i).copied().unwrap_or(Known::Unknown));
                self.change(&mut counters, &mut draft, b, *rec, index_above, slots);
                match self.len().cmp(&before) {
                    std::cmp::Ordering::Greater => moved.push((i, true)),
                    std::cmp::Ordering::Less => moved.push((i, false)),
                    std::cmp::Ordering::Equal => {}
                }
            }
            self.counters = counters;
            return (self.write_block(draft), moved);
        }
        self.apply_in_bulk(rows, index_above, slots)
    }

    /// Applies `rows` as [`apply_many`](Self::apply_many) does a large batch, however
    /// few: each placed through a position map, then the id order, the counters and
    /// the top indexes built again once (O(target log target)). A load continuing a
    /// recipient met again takes this way: row by row, a huge recipient's id order
    /// moved a leaf's entries for each of its new relations.
    pub(crate) fn apply_in_bulk(
        &mut self,
        rows: &[(u32, &Profile, Option<&Record>)],
        index_above: usize,
        slots: &SlotTable,
    ) -> (Option<Fresh>, Vec<(usize, bool)>) {
        let mut moved = Vec::new();
        let sets = rows.iter().filter(|r| r.2.is_some()).count();
        Arc::make_mut(&mut self.rels).reserve(sets);
        // The id order is built again after the batch, in one sort (O(target log
        // target), as a quarter of it is placed), not kept row by row; the rows find
        // their relations in a position map meanwhile.
        if self.order.take().is_some() {
            self.positions = Some(position_map(&self.rels));
        }
        for (i, (slot, b, rec)) in rows.iter().enumerate() {
            debug_assert_eq!(*slot, b.slot);
            match (self.place(b, Known::Unknown, *rec, slots), rec) {
                (None, Some(_)) => moved.push((i, true)),
                (Some(_), None) => moved.push((i, false)),
                _ => {}
            }
        }
        // Rows that repeat a pair or rewrite a relation took room they did not use:
        // give it back (O(target), as the count below).
        Arc::make_mut(&mut self.rels).fit();
        self.sync_order(slots);
        let draft = self.recount(index_above, slots, None);
        (self.write_block(draft), moved)
    }

    /// Recomputes every counter from the relations (returned as a copy, the exact
    /// sums kept), and the top indexes of the properties past `index_above` valued
    /// relations: what incremental updates would have reached, in one pass a property.
    /// `given`, when known, holds each relation's initiator by position (else they
    /// are read from `slots`).
    fn recount(
        &mut self,
        index_above: usize,
        slots: &SlotTable,
        given: Option<&[Profile]>,
    ) -> Draft {
        let schema = Arc::clone(&self.block.schema);
        let rels = &*self.rels;
        let ranking = Ranking(slots);
        let layout = Layout::of(&schema, 0);
        let mut draft = Draft {
            words: std::iter::repeat_n(0, layout.width).collect(),
            layout,
        };
        let words = &mut draft.words;
        let mut counters = Counters::empty(&schema);
        let mut exacts = counters.exacts.iter_mut();
        let mut lists: Vec<Vec<TopEntry>> = Vec::new();
        // Allocated only for a property that keeps an index (most targets keep none).
        self.indexes = Box::default();
        for (i, (def, place)) in schema.props.iter().zip(layout.places(&schema)).enumerate() {
            if def.spec.kind() == PropKind::Bool {
                words[place.count] = rels.iter().filter(|(_, r)| r.is_true(i)).count() as u64;
                continue;
            }
            let values = || rels.iter().filter_map(|(_, r)| r.raw(&schema, i));
            let mut n = 0u64;
            match place.sum {
                None => n = values().count() as u64,
                Some((at, PropKind::Float)) => {
                    let exact = exacts.next().expect("an exact sum a float sum");
                    for raw in values() {
                        n += 1;
                        exact.add(f64::from_bits(raw));
                    }
                    words[at] = exact.value().to_bits();
                }
                Some((at, _)) => {
                    let mut total = 0i128;
                    for raw in values() {
                        n += 1;
                        total += i128::from(raw as i64);
                    }
                    (words[at], words[at + 1]) = split(total);
                }
            }
            words[place.count] = n;
            let Some(size) = def.spec.top_size() else {
                continue;
            };
            let size = usize::from(size);
            let valued = usize::try_from(n).unwrap_or(usize::MAX);
            lists.push(if valued > index_above {
                let index = TopIndex::build(scan_valued(rels, &schema, i, slots, given));
                let mut list = Vec::new();
                index.first_into(size, &mut list);
                make_index_room(&mut self.indexes, &schema);
                self.indexes[i] = Some(index);
                list
            } else {
                let mut list = Vec::new();
                scan_best(rels, &schema, i, size, slots, &mut list);
                top::select_top(list, size, ranking)
            });
        }
        for (k, list) in lists.iter().enumerate() {
            draft.put_list(k, list, &schema);
        }
        self.counters = counters;
        draft
    }

    /// Builds the id order of a target that grew past [`ORDER_ABOVE`] relations
    /// (O(n log n), once a crossing), drops that of one that shrank below half of it.
    /// A target with an order keeps no position map, one without keeps it past
    /// [`SCAN_AT_MOST`] relations.
    fn sync_order(&mut self, slots: &SlotTable) {
        let n = self.rels.len();
        match &self.order {
            None if n > ORDER_ABOVE => {
                self.order = Some(Arc::new(order_of(&self.rels, slots, None)));
            }
            Some(_) if n < ORDER_ABOVE / 2 => self.order = None,
            _ => {}
        }
        match (&self.order, &self.positions) {
            (Some(_), Some(_)) => self.positions = None,
            (None, None) if n > SCAN_AT_MOST => self.positions = Some(position_map(&self.rels)),
            _ => {}
        }
        debug_assert!(self.order.as_ref().is_none_or(|o| o.len() == n));
    }

    /// Puts `new` in place of `b`'s relation (`None` removes it), keeping the
    /// position map and the id order (if any) in step; returns the old record.
    fn place(
        &mut self,
        b: &Profile,
        known: Known,
        new: Option<&Record>,
        slots: &SlotTable,
    ) -> Option<Record> {
        let slot = b.slot;
        let at = match known {
            Known::Unknown => self.position(b, slots),
            Known::At(at) => Some(at),
            Known::Absent => None,
        };
        debug_assert_eq!(at, self.position(b, slots), "a known position out of date");
        match (at, new) {
            (None, None) => return None,
            // The same values again: nothing to change (nor to copy, if a page or a
            // snapshot shares the relations).
            (Some(at), Some(rec)) if self.rels.get(at).1 == rec.view() => {
                return Some(rec.clone());
            }
            _ => {}
        }
        let rels = Arc::make_mut(&mut self.rels);
        let old = at.map(|at| rels.get(at).1.to_record());
        match (at, new) {
            (Some(at), Some(rec)) => rels.set(at, rec),
            (None, Some(rec)) => {
                rels.push(slot, rec);
                // Fewer than 2^32 relations per target: a slot is a u32 and each
                // initiator has at most one relation here.
                let at = (rels.len() - 1) as u32;
                if let Some(order) = &mut self.order {
                    let placed = Arc::make_mut(order).insert(
                        at,
                        b.id.packed(),
                        below(&b.id, slot),
                        by_key(rels, slots, &b.id, slot),
                        key_of(rels, slots),
                    );
                    debug_assert!(placed, "an initiator with two relations");
                    if !placed {
                        self.order = None; // built again by `sync_order`
                    }
                }
                match &mut self.positions {
                    Some(map) => {
                        map.insert(slot, at);
                    }
                    None if self.order.is_none() && rels.len() > SCAN_AT_MOST => {
                        self.positions = Some(position_map(rels));
                    }
                    None => {}
                }
            }
            (Some(at), None) => {
                if let Some(order) = &mut self.order {
                    // Before the move: every position the searches read is valid.
                    let order = Arc::make_mut(order);
                    let end = rels.len() - 1;
                    let mut kept = order.remove(
                        below(&b.id, slot),
                        by_key(rels, slots, &b.id, slot),
                        at as u32,
                        key_of(rels, slots),
                    );
                    if kept && at != end {
                        let last = rels.get(end).0;
                        kept = slots.with(last, |moved| match moved {
                            Some(moved) => order.set(
                                below(&moved.id, last),
                                by_key(rels, slots, &moved.id, last),
                                end as u32,
                                at as u32,
                            ),
                            None => false,
                        });
                    }
                    debug_assert!(kept, "the id order lost a relation");
                    if !kept {
                        self.order = None; // built again by `sync_order`
                    }
                }
                let moved = rels.swap_remove(at);
                if let Some(map) = &mut self.positions {
                    map.remove(&slot);
                    if let Some(moved) = moved {
                        map.insert(moved, at as u32);
                    }
                    if rels.len() <= SCAN_AT_MOST / 2 {
                        self.positions = None;
                    }
                }
            }
            (None, None) => {}
        }
        old
    }
}

/// Gives `indexes` a place per property of `schema` if it has none yet (a target
/// makes them only once a property keeps an index).
fn make_index_room(indexes: &mut Box<[Option<TopIndex>]>, schema: &Schema) {
    if indexes.is_empty() {
        *indexes = schema.props.iter().map(|_| None).collect();
    }
}

/// The largest top size of `schema`'s properties (0 when none keeps a top).
fn max_top(schema: &Schema) -> u16 {
    schema
        .props
        .iter()
        .filter_map(|d| d.spec.top_size())
        .max()
        .unwrap_or(0)
}

/// Compares the key `(id, slot)` of the initiator of the relation at a position of
/// `rels` (with its id's packed bytes when the order holds them inline) with
/// `(id, slot)`: the id order's comparison. Two 24-hex ids compare by their inline
/// bytes, in the leaf, and only an equal id reads the relation's slot; any other id is
/// found through the slot table. The initiators hold their slots (under the target's
/// lock), so the slot table names them; were one missing, its key would be
/// `(None, slot)`, still one total order.
fn by_key<'a>(
    rels: &'a Packed,
    slots: &'a SlotTable,
    id: &'a ProfileId,
    slot: u32,
) -> impl Fn(u32, Option<&[u8; 12]>) -> Ordering + 'a {
    let packed = id.packed();
    move |p, inline| {
        if let (Some(inline), Some(packed)) = (inline, &packed) {
            return inline
                .cmp(packed)
                .then_with(|| rels.get(p as usize).0.cmp(&slot));
        }
        let s = rels.get(p as usize).0;
        slots.with(s, |other| {
            debug_assert!(other.is_some(), "a relation from a free slot");
            (other.map(|o| &o.id), s).cmp(&(Some(id), slot))
        })
    }
}

/// Whether a key of the id order is below `(id, slot)`.
fn below<'a>(id: &'a ProfileId, slot: u32) -> impl Fn(&IdKey) -> bool + 'a {
    move |k| (k.0.as_ref(), k.1) < (Some(id), slot)
}

/// The key of the initiator of the relation at a position of `rels` (see
/// [`by_key`]).
fn key_of<'a>(rels: &'a Packed, slots: &'a SlotTable) -> impl Fn(u32) -> IdKey + 'a {
    move |p| {
        let s = rels.get(p as usize).0;
        (slots.with(s, |o| o.map(|o| o.id.clone())), s)
    }
}

/// Initiator slot -> index of every relation of `rels`.
fn position_map(rels: &Packed) -> Box<hashbrown::HashMap<u32, u32>> {
    Box::new((0..).zip(rels.slots()).map(|(i, s)| (s, i)).collect())
}

/// The id order of `rels`, in one sort: each initiator looked up once (in `given`,
/// by position, when known).
fn order_of(rels: &Packed, slots: &SlotTable, given: Option<&[Profile]>) -> IdOrder {
    let initiator = |at: u32, s: u32| match given {
        Some(given) => given.get(at as usize).cloned(),
        None => slots.get(s),
    };
    let mut keyed: Vec<(Option<Profile>, u32, u32)> = (0u32..)
        .zip(rels.slots())
        .map(|(at, s)| (initiator(at, s), s, at))
        .collect();
    keyed.sort_unstable_by(|x, y| {
        (x.0.as_ref().map(|p| &p.id), x.1).cmp(&(y.0.as_ref().map(|p| &p.id), y.1))
    });
    Order::build(
        keyed
            .into_iter()
            .map(|(p, _, at)| (at, p.and_then(|p| p.id.packed())))
            .collect(),
        key_of(rels, slots),
    )
}

/// The best `n` relations of property `i` (fewer if fewer are valued), as top
/// entries pushed to `out`, in no order: every valued one above the n-th best rank,
/// then those tied with it, by id. Ranks are read from the packed records; only those
/// relations' initiators are looked up in `slots` (a refill of a top 10 among 64
/// resolves about 10, not 64).
fn scan_best(
    rels: &Packed,
    schema: &Schema,
    i: usize,
    n: usize,
    slots: &SlotTable,
    out: &mut Vec<TopEntry>,
) {
    if n == 0 {
        return;
    }
    // On the stack for targets below the default index threshold (64), which are
    // the ones that scan.
    let kind = schema.props[i].spec.kind();
    let mut ranked: SmallVec<[(u64, u32); 64]> = rels
        .iter()
        .filter_map(|(slot, rec)| Some((rank(kind, rec.raw(schema, i)?), slot)))
        .collect();
    let entry = |ranked: (u64, u32)| entry(ranked, slots);
    out.reserve_exact(n.min(ranked.len()));
    if ranked.len() <= n {
        out.extend(ranked.into_iter().filter_map(entry));
        return;
    }
    let (_, nth, _) = ranked.select_nth_unstable_by(n - 1, |x, y| y.0.cmp(&x.0));
    let cut = nth.0;
    // Those above the n-th rank, then as many of those tied with it as fit, by id:
    // never more than `n` entries, so a list at its full size takes no more room.
    out.extend(
        ranked
            .iter()
            .filter(|&&(r, _)| r > cut)
            .filter_map(|&e| entry(e)),
    );
    let mut ties: SmallVec<[TopEntry; 64]> = ranked
        .iter()
        .filter(|&&(r, _)| r == cut)
        .filter_map(|&e| entry(e))
        .collect();
    ties.sort_unstable_by(|a, b| Ranking(slots).cmp(a, b));
    let room = n.saturating_sub(out.len());
    out.extend(ties.into_iter().take(room));
}

/// Every relation of the target with a value for property `i`, as `(rank,
/// initiator)`, the initiators taken from `given` (by position) when known, else
/// found in `slots` (each holds its slot while its relation is in the target, under
/// the target's lock).
fn scan_valued(
    rels: &Packed,
    schema: &Schema,
    i: usize,
    slots: &SlotTable,
    given: Option<&[Profile]>,
) -> Vec<(u64, Profile)> {
    if let Some(given) = given {
        let kind = schema.props[i].spec.kind();
        return rels
            .iter()
            .zip(given)
            .filter_map(|((_, rec), p)| Some((rank(kind, rec.raw(schema, i)?), p.clone())))
            .collect();
    }
    ranked(rels, schema, i)
        .into_iter()
        .filter_map(|(rank, slot)| {
            let profile = slots.get(slot);
            debug_assert!(profile.is_some(), "a relation from a free slot");
            Some((rank, profile?))
        })
        .collect()
}

/// `(rank, initiator slot)` of every relation with a value for property `i`.
fn ranked(rels: &Packed, schema: &Schema, i: usize) -> Vec<(u64, u32)> {
    let kind = schema.props[i].spec.kind();
    rels.iter()
        .filter_map(|(slot, rec)| Some((rank(kind, rec.raw(schema, i)?), slot)))
        .collect()
}

/// The top entry of a ranked slot, its initiator found in `slots`.
fn entry((rank, slot): (u64, u32), slots: &SlotTable) -> Option<TopEntry> {
    slots.with(slot, |profile| {
        debug_assert!(profile.is_some(), "a relation from a free slot");
        Some(TopEntry::new(rank, profile?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Changes, PropSpec, RelationType};
    use crate::value::Value;
    use proptest::prelude::*;

    /// An int top 2 and a bool.
    fn schema() -> Arc<Schema> {
        let def = RelationType::new(1, 1, 2)
            .prop("v", PropSpec::int().top(2))
            .prop("b", PropSpec::bool());
        Arc::new(Schema::compile(def).expect("schema"))
    }

    /// A directory with recipient `a` and initiator `b`, and `a`'s empty target.
    fn one_pair() -> (crate::directory::Directory, Arc<Schema>, Profile, Target) {
        let directory = crate::directory::Directory::for_test();
        let schema = schema();
        let a = directory.create_for_test(1, "a");
        let b = directory.create_for_test(2, "b");
        let target = Target::new(&schema, &a, 0);
        (directory, schema, b, target)
    }

    fn record(schema: &Schema, v: i64) -> Record {
        let changes = Changes::from_slice(&[(0, Value::Int(v)), (1, Value::Bool(v % 2 == 0))]);
        Record::next(schema, None, crate::record::WriteKind::Attach, &changes).expect("record")
    }

    proptest! {
        /// Pushes, overwrites and swap-removes against a `Vec` of (slot, record), across
        /// the growth and shrinking of the packed vectors.
        #[test]
        fn packed_behaves_like_a_vec(ops in prop::collection::vec((0u8..4, any::<u16>(), any::<i64>()), 0..600)) {
            let schema = schema();
            let mut packed = Packed::new(schema.stride(), schema.props.len());
            let mut oracle: Vec<(u32, Record)> = Vec::new();
            // Copies taken along the way (as a snapshot or a page takes them): later
            // writes never show in them.
            let mut copies: Vec<(Packed, Vec<(u32, Record)>)> = Vec::new();
            for (op, at, v) in ops {
                let rec = record(&schema, v);
                match op {
                    0 => {
                        packed.push(u32::from(at), &rec);
                        oracle.push((u32::from(at), rec));
                    }
                    1 if !oracle.is_empty() => {
                        let i = usize::from(at) % oracle.len();
                        packed.set(i, &rec);
                        oracle[i].1 = rec;
                    }
                    3 if at % 8 == 0 => copies.push((packed.clone(), oracle.clone())),
                    _ if !oracle.is_empty() => {
                        let i = usize::from(at) % oracle.len();
                        let moved = packed.swap_remove(i);
                        oracle.swap_remove(i);
                        prop_assert_eq!(moved, (i < oracle.len()).then(|| oracle[i].0));
                    }
                    _ => {}
                }
                prop_assert_eq!(packed.len(), oracle.len());
                let got: Vec<(u32, Record)> = packed.iter().map(|(s, r)| (s, r.to_record())).collect();
                prop_assert_eq!(&got, &oracle);
                let room: usize = packed.chunks().map(|c| c.slots.capacity()).sum();
                prop_assert!(room <= 2 * oracle.len() + 8 + oracle.len() / 4 + 2, "{} for {}", room, oracle.len());
                let last = packed.last();
                prop_assert!(packed.chunks().take(last).all(|c| c.slots.len() == CHUNK));
            }
            for (copy, then) in copies {
                let got: Vec<(u32, Record)> = copy.iter().map(|(s, r)| (s, r.to_record())).collect();
                prop_assert_eq!(got, then);
            }
        }
    }

    proptest! {
        /// A target's relations against a map from initiator slot to record, across
        /// the position map's creation (past 16 relations) and removal (at 8): every
        /// initiator's relation is found where it is, and only there.
        #[test]
        fn target_finds_every_relation(ops in prop::collection::vec((0u8..40, any::<bool>(), -3i64..3), 0..400)) {
            let directory = crate::directory::Directory::for_test();
            let schema = schema();
            let a = directory.create_for_test(1, "a");
            let bs: Vec<Profile> =
                (0..40).map(|i| directory.create_for_test(2, &format!("b{i}"))).collect();
            let mut target = Target::new(&schema, &a, 0);
            let mut oracle: hashbrown::HashMap<u32, Record> = hashbrown::HashMap::new();
            for (who, link, v) in ops {
                let b = &bs[usize::from(who)];
                let rec = link.then(|| record(&schema, v));
                target.apply((b, Known::Unknown), rec.clone(), 4, directory.slot_table());
                match rec {
                    Some(rec) => oracle.insert(b.slot, rec),
                    None => oracle.remove(&b.slot),
                };
                prop_assert_eq!(target.len(), oracle.len());
                // The block readers read says so too.
                let slots = directory.slot_table();
                let read = crate::accum::counter::Counter::read(target.block(), |s| {
                    slots.get(s).map(|p| p.id.clone())
                });
                prop_assert_eq!(read.map(|c| c.total()), Some(oracle.len() as u64));
                for b in &bs {
                    let got = target.get(b, directory.slot_table()).map(RecordRef::to_record);
                    prop_assert_eq!(got.as_ref(), oracle.get(&b.slot));
                }
            }
        }
    }

    proptest! {
        /// Review (adversary of the id order): a target's id order checked directly,
        /// not through pages, across attaches, detaches, batches with repeated pairs
        /// (small and large beside the target) and initiators whose slots are freed
        /// and taken again by other ids (two abandoned and made again in the other
        /// order swap their slots): after every write, the order holds every relation
        /// once, sorted by `(id, slot)`, its shape kept (every leaf's last key its last
        /// entry's: no stale key after a split, a merge or a removal), and it is kept
        /// past `ORDER_ABOVE` relations and dropped below half of it.
        #[test]
        fn the_id_order_stays_exact_across_slot_reuse(
            ops in prop::collection::vec((0u8..8, 0u16..120, 1u16..90, -3i64..3), 0..300),
        ) {
            let directory = crate::directory::Directory::for_test();
            let schema = schema();
            let slots = Arc::clone(directory.slot_table());
            let a = directory.create_for_test(1, "a");
            let name = |i: u16| if i.is_multiple_of(3) { format!("b{i}") } else { format!("{:024x}", u64::from(i) * 0x9E37_79B1) };
            let mut bs: Vec<Profile> =
                (0..120).map(|i| directory.create_for_test(2, &name(i))).collect();
            let mut target = Target::new(&schema, &a, 0);
            let mut oracle: hashbrown::HashMap<u16, Record> = hashbrown::HashMap::new();
            for (op, i, n, v) in ops {
                let rec = record(&schema, v);
                match op {
                    0 | 1 => {
                        target.apply((&bs[usize::from(i)], Known::Unknown), Some(rec.clone()), 4, &slots);
                        oracle.insert(i, rec);
                    }
                    2 | 3 => {
                        target.apply((&bs[usize::from(i)], Known::Unknown), None, 4, &slots);
                        oracle.remove(&i);
                    }
                    4 => {
                        // Free the slots of i and j and make them again, j first.
                        let j = (i + n) % 120;
                        if i == j { continue; }
                        for k in [i, j] {
                            target.apply((&bs[usize::from(k)], Known::Unknown), None, 4, &slots);
                            oracle.remove(&k);
                            directory.abandon(&bs[usize::from(k)]);
                        }
                        for k in [j, i] {
                            bs[usize::from(k)] = directory.create_for_test(2, &name(k));
                        }
                    }
                    _ => {
                        // A batch: the run i..i+n, twice, the second time changed
                        // (a third of it removed).
                        let mut rows: Vec<(u32, &Profile, Option<Record>)> = Vec::new();
                        for rep in 0..2 {
                            for k in i..i + n {
                                let k = k % 120;
                                let b = &bs[usize::from(k)];
                                if rep == 1 && (i64::from(k) + v).rem_euclid(3) == 0 {
                                    rows.push((b.slot, b, None));
                                    oracle.remove(&k);
                                    continue;
                                }
                                let rec = record(&schema, v + rep * i64::from(k));
                                rows.push((b.slot, b, Some(rec.clone())));
                                oracle.insert(k, rec);
                            }
                        }
                        let rows: Vec<(u32, &Profile, Option<&Record>)> =
                            rows.iter().map(|(s, b, r)| (*s, *b, r.as_ref())).collect();
                        target.apply_many(&rows, &[], 4, &slots);
                    }
                }
                let len = target.len();
                prop_assert_eq!(len, oracle.len());
                if len > ORDER_ABOVE {
                    prop_assert!(target.order.is_some(), "no order at {}", len);
                }
                // One way to find a relation, not two: an ordered target keeps no
                // position map.
                prop_assert!(target.order.is_none() || target.positions.is_none());
                if len < ORDER_ABOVE / 2 {
                    prop_assert!(target.order.is_none(), "an order at {}", len);
                }
                // Every initiator, with a relation or not: found (in the order, the
                // position map or the slots) exactly when it has one.
                for (k, b) in bs.iter().enumerate() {
                    let got = target.get(b, &slots).map(RecordRef::to_record);
                    prop_assert_eq!(got.as_ref(), oracle.get(&(k as u16)));
                }
                if let Some(order) = &target.order {
                    let rels = &*target.rels;
                    order.check_shape(key_of(rels, &slots)).map_err(TestCaseError::fail)?;
                    let keys: Vec<IdKey> = order.iter().map(|p| key_of(rels, &slots)(p)).collect();
                    let mut want: Vec<IdKey> = oracle
                        .keys()
                        .map(|&k| (Some(bs[usize::from(k)].id.clone()), bs[usize::from(k)].slot))
                        .collect();
                    want.sort();
                    prop_assert_eq!(keys, want);
                }
            }
        }
    }

    /// Found by review: a batch reserved room for every row, repeats of a pair
    /// included, and kept it: 200,000 rows of one pair left 7 MB behind one relation.
    /// The room a batch does not use is given back.
    /// Every recipient with relations carries one (beside its key, in its shard's
    /// table); what only large targets need is boxed.
    #[test]
    fn a_target_stays_compact() {
        assert_eq!(std::mem::size_of::<Target>(), 72);
    }

    #[test]
    fn a_batch_of_repeats_keeps_no_spare_room() {
        let (directory, schema, b, mut target) = one_pair();
        let rec = record(&schema, 5);
        let rows: Vec<(u32, &Profile, Option<&Record>)> =
            (0..1000).map(|_| (b.slot, &b, Some(&rec))).collect();
        let (_, added) = target.apply_many(&rows, &[], 4, directory.slot_table());
        assert_eq!((target.len(), added), (1, vec![(0, true)]));
        let chunk = &target.rels.head;
        assert!(target.rels.tail.is_empty());
        assert!(chunk.slots.capacity() <= 9, "{}", chunk.slots.capacity());
        assert!(chunk.nums.capacity() <= 9 * (schema.stride() - 1));
        assert!(chunk.flags.capacity() <= 9);
    }

    /// A target placed by a batch (an import, a snapshot's load) carries room for
    /// top indexes only when a property keeps one, as a target written row by row.
    #[test]
    fn a_batch_placed_small_target_keeps_no_index_room() {
        let (directory, schema, _, mut indexed) = one_pair();
        let a2 = directory.create_for_test(1, "a2");
        let mut small = Target::new(&schema, &a2, 0);
        let bs: Vec<Profile> = (0..8u64)
            .map(|i| directory.create_for_test(2, &format!("b{i}")))
            .collect();
        let recs: Vec<Record> = (0..8).map(|v| record(&schema, v)).collect();
        let rows: Vec<(u32, &Profile, Option<&Record>)> = bs
            .iter()
            .zip(&recs)
            .map(|(b, r)| (b.slot, b, Some(r)))
            .collect();
        indexed.apply_many(&rows, &[], 4, directory.slot_table());
        assert_eq!(
            indexed.indexes.iter().flatten().count(),
            1,
            "8 valued past 4"
        );
        small.apply_many(&rows, &[], 64, directory.slot_table());
        assert_eq!(small.len(), 8);
        assert!(small.indexes.is_empty(), "no index, no room");
    }

    /// A record's word 0 survives its flags' columns for every count of properties:
    /// presence and bool bits at both ends, in as few bytes as `2 * props` bits take.
    #[test]
    fn flags_pack_to_the_schema_and_back() {
        for props in 1..=MAX_PROPS {
            let cols = Columns::of(1 + props, props);
            let fb = usize::from(cols.flag_bytes);
            assert_eq!(fb, (2 * props).div_ceil(8));
            let all = (1u64 << props) - 1;
            for head in [
                0,
                1,
                all,
                all << 32 | all,
                1 << 32 | 1,
                1 << (31 + props) | all,
            ] {
                let bytes = cols.pack(head);
                assert!(bytes[fb..].iter().all(|&b| b == 0), "{props}: {head:#x}");
                assert_eq!(cols.unpack(&bytes[..fb]), head, "{props}: {head:#x}");
            }
        }
    }

    /// A write to relations a snapshot shares copies the first chunk (inline), the
    /// list of the others and the one it changes, not the rest.
    #[test]
    fn a_shared_write_copies_one_chunk() {
        let schema = schema();
        let mut packed = Packed::new(schema.stride(), schema.props.len());
        for i in 0..(4 * CHUNK as u32) {
            packed.push(i, &record(&schema, 1));
        }
        let shared = packed.clone();
        packed.set(CHUNK + 1, &record(&schema, 2));
        let same: Vec<bool> = (0..3)
            .map(|c| Arc::ptr_eq(&shared.tail[c], &packed.tail[c]))
            .collect();
        assert_eq!(same, [false, true, true]);
        assert_eq!(shared.get(CHUNK + 1).1.to_record(), record(&schema, 1));
    }

    /// Relations shared with a page or a snapshot are copied by the first write that
    /// changes them, and only by one that does: writing the same values again leaves
    /// them shared, and the holder never sees a later write.
    #[test]
    fn shared_relations_are_copied_only_by_a_change() {
        let (directory, schema, b, mut target) = one_pair();
        target.apply(
            (&b, Known::Unknown),
            Some(record(&schema, 5)),
            4,
            directory.slot_table(),
        );
        let held = Arc::clone(target.relations());
        target.apply(
            (&b, Known::Unknown),
            Some(record(&schema, 5)),
            4,
            directory.slot_table(),
        );
        assert!(
            Arc::ptr_eq(&held, target.relations()),
            "the same values copy nothing"
        );
        target.apply(
            (&b, Known::Unknown),
            Some(record(&schema, 6)),
            4,
            directory.slot_table(),
        );
        assert!(!Arc::ptr_eq(&held, target.relations()), "a change copies");
        assert_eq!(
            held.get(0).1.to_record(),
            record(&schema, 5),
            "the holder keeps its moment"
        );
        assert_eq!(
            target
                .get(&b, directory.slot_table())
                .map(RecordRef::to_record),
            Some(record(&schema, 6))
        );
    }
}
