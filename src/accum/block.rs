//! The published counters of one target: a block of atomic words that its writer
//! updates in place and readers copy without ever waiting for the writer.
//!
//! # Format
//!
//! One copy of a target's counters is a run of `u64` words, for its schema and a top
//! capacity `cap` (the same for every top property of the block). The head, whose
//! layout depends on the schema alone:
//!
//! | words | what |
//! |---|---|
//! | 1 | relations of the target |
//! | 1 a property | numeric: relations with a value; bool: relations where it is true |
//! | 2 an int sum | the exact `i128` sum, low word then high word |
//! | 1 a float sum | the bits of the `f64` nearest the exact sum (the writer keeps the exact expansion) |
//!
//! (each property's count, then its sum if it keeps one, properties in schema order),
//! then the tops, one per property that keeps a top, in schema order:
//!
//! | words | what |
//! |---|---|
//! | 1 | the list's length |
//! | 3 `cap` | `cap` entries, best first: the value's rank, then the initiator in two words |
//!
//! An initiator with a 24-hex id is held inline: the first 8 of its id's 12 packed
//! bytes, then the last 4 above its slot; any other as `TEXT_ID` beside its slot, its
//! id found in the slot table by the reader (`accum::top::initiator_words`). All zeros
//! is the empty target. For the seed schema (`Donate` int top 10, `Like` int sum,
//! `Subscriber` bool) the head is `1 + 1 + (1 + 2) + 1 = 6` words and a copy
//! `7 + 3 cap`. A block that grows its `cap` keeps its head as it was.
//!
//! # Read protocol
//!
//! A block holds two copies and a sequence `seq`; readers read copy `seq & 1`. The
//! writer (one at a time: it holds the target's shard lock) writes the whole new state
//! into the other, idle copy, then advances `seq` (release), which flips readers to
//! it. A reader loads `seq` (acquire), reads the copy it names (decoding as it goes,
//! `Counter::read`), then (after an acquire fence) loads `seq` again: unchanged, the
//! copy is whole; changed, it reads again. A write begins with a release fence, so a reader that saw any word of a
//! write to the copy it was reading also sees the flip before it, and retries.
//!
//! So a reader never waits for a writer: a writer stopped in the middle of a write (on
//! two cores it can be descheduled there) writes the idle copy, which nobody reads. A
//! reader retries only when a write completed (flipped) while it copied, and then at
//! most once for each write completed meanwhile; it can be made to retry again and
//! again only by a writer completing writes to the same target faster than the reader
//! copies a few hundred bytes. The loom model below checks that a copy returned is
//! never torn. An initiator whose id is not inline is resolved after the copy and the
//! sequence checked once more (`Counter::read`).
//!
//! A block is replaced (a new one published) only when a top list outgrows its
//! capacity. A block replaced or unpublished is retired ([`Latch::retire`]): a reader
//! holding it is refused, and looks the counters up again.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::profile::Profile;
use crate::schema::Schema;
use crate::sync::{AtomicU64, Ordering, fence};
use crate::value::PropKind;

/// The bit of a block's sequence set when it is retired ([`Latch::retire`]).
const RETIRED: u64 = 1 << 63;

/// One copy's words, as a writer builds it or a reader copies it (on the stack for
/// schemas of a few properties with short top lists).
pub(crate) type Words = SmallVec<[u64; 48]>;

/// Two copies of `width` words and the sequence that names the one readers read.
#[derive(Debug)]
pub(crate) struct Latch {
    seq: AtomicU64,
    /// Copy 0, then copy 1.
    words: Box<[AtomicU64]>,
}

impl Latch {
    /// Two zeroed copies of `width` words.
    pub(crate) fn new(width: usize) -> Self {
        Latch {
            seq: AtomicU64::new(0),
            words: (0..2 * width).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Words in one copy.
    pub(crate) fn width(&self) -> usize {
        self.words.len() / 2
    }

    /// The copy `seq` names, for a reader to read word by word (relaxed loads): what
    /// it reads is whole only if [`valid`](Self::valid) says so after.
    pub(crate) fn copy_of(&self, seq: u64) -> &[AtomicU64] {
        let w = self.width();
        let at = (seq & 1) as usize * w;
        &self.words[at..at + w]
    }

    /// Writes `state` (one copy's words) into the idle copy, then flips readers to it.
    /// One writer at a time: the caller holds the lock that orders the block's writes.
    pub(crate) fn write(&self, state: &[u64]) {
        debug_assert_eq!(state.len(), self.width());
        let seq = self.seq.load(Ordering::Relaxed);
        // Orders the last flip before these stores: a reader that sees one of them
        // sees that flip (it was reading the copy being overwritten), and retries.
        fence(Ordering::Release);
        for (word, &v) in self.copy_of(seq + 1).iter().zip(state) {
            word.store(v, Ordering::Relaxed);
        }
        self.seq.store(seq + 1, Ordering::Release);
    }

    /// The state last written, into `out` (the writer's own read: the caller holds the
    /// lock that orders the block's writes, so nobody changes it meanwhile).
    pub(crate) fn current(&self, out: &mut Words) {
        let seq = self.seq.load(Ordering::Relaxed);
        out.clear();
        out.extend(self.copy_of(seq).iter().map(|w| w.load(Ordering::Relaxed)));
    }

    /// Starts a read: the sequence naming the copy to read, or `None` once the
    /// block is [retired](Self::retire).
    pub(crate) fn begin(&self) -> Option<u64> {
        let seq = self.seq.load(Ordering::Acquire);
        (seq & RETIRED == 0).then_some(seq)
    }

    /// Marks the block as no longer written (replaced or unpublished): every read
    /// that began before and checks [`valid`](Self::valid) after fails, and every
    /// read that begins after is refused, so the reader looks the counters up again.
    /// A block that is no longer written cannot vouch for a slot resolved after its
    /// copy: the delete that frees the slot of an initiator it lists writes the new
    /// block, not this one. The writer retires it before any later write can free a
    /// slot (under the same lock), so a reader that resolves a slot taken since sees
    /// the mark.
    pub(crate) fn retire(&self) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq | RETIRED, Ordering::Release);
    }

    /// Word `at` of the copy `seq` names; what a reader reads is whole only if
    /// [`valid`](Self::valid) says so after.
    #[cfg(all(test, relcount_loom))]
    pub(crate) fn word(&self, seq: u64, at: usize) -> u64 {
        self.copy_of(seq)[at].load(Ordering::Relaxed)
    }

    /// Whether no write completed since [`begin`](Self::begin) returned `seq`: then
    /// what was read of the copy (and anything read after it that a write to the
    /// block would have changed first) is of one moment.
    pub(crate) fn valid(&self, seq: u64) -> bool {
        fence(Ordering::Acquire);
        self.seq.load(Ordering::Relaxed) == seq
    }
}

/// Where one property's words are in a copy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place {
    /// Its count.
    pub(crate) count: usize,
    /// Its sum (two words for an int, one for a float), if it keeps one.
    pub(crate) sum: Option<(usize, PropKind)>,
    /// Its top list's length word (the entries follow, 3 words each), if it keeps one.
    pub(crate) top: Option<usize>,
}

/// A copy's layout for a schema and a top capacity (see the module's *Format*): its
/// sizes, and each property's place as [`places`](Self::places) walks them (no
/// allocation: a read and a write each walk the schema's few properties).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    /// Words of the head (relations, counts and sums), whatever the capacity.
    pub(crate) head: usize,
    /// Words of a copy.
    pub(crate) width: usize,
    /// Top entries a property has room for.
    pub(crate) cap: usize,
}

/// Words of a property's sum in the head: 2 for an int, 1 for a float, else 0.
fn sum_words(def: &crate::schema::PropDef) -> usize {
    match (def.spec.has_sum(), def.spec.kind()) {
        (true, PropKind::Int) => 2,
        (true, PropKind::Float) => 1,
        _ => 0,
    }
}

impl Layout {
    /// The layout of `schema`'s counters with room for `cap` top entries a property.
    pub(crate) fn of(schema: &Schema, cap: usize) -> Layout {
        let head = 1 + schema.props.iter().map(|d| 1 + sum_words(d)).sum::<usize>();
        let tops = schema
            .props
            .iter()
            .filter(|d| d.spec.top_size().is_some())
            .count();
        Layout {
            head,
            width: head + tops * (1 + 3 * cap),
            cap,
        }
    }

    /// Where the length word of the `k`-th top list (in schema order) is.
    pub(crate) fn top_at(&self, k: usize) -> usize {
        self.head + k * (1 + 3 * self.cap)
    }

    /// Lays `words`, a copy laid out as `self`, out as `to` (the same schema, another
    /// capacity): the head stays, each top list moves to its place in `to`. Every list
    /// must fit `to`'s capacity.
    pub(crate) fn relayout(&self, words: &mut Words, to: &Layout) {
        debug_assert_eq!(self.head, to.head);
        let tops = (self.width - self.head) / (1 + 3 * self.cap);
        let mut out: Words = words[..self.head].iter().copied().collect();
        out.resize(to.width, 0);
        for k in 0..tops {
            let (from, at) = (self.top_at(k), to.top_at(k));
            let len = usize::try_from(words[from]).unwrap_or(usize::MAX);
            assert!(
                len <= to.cap,
                "a top list of {len} relaid into room for {}",
                to.cap
            );
            out[at..=at + 3 * len].copy_from_slice(&words[from..=from + 3 * len]);
        }
        *words = out;
    }

    /// Every property's place, in schema order.
    pub(crate) fn places<'s>(&self, schema: &'s Schema) -> impl Iterator<Item = Place> + 's {
        let (layout, mut at, mut tops) = (*self, 1, 0..);
        schema.props.iter().map(move |def| {
            let kind = def.spec.kind();
            let count = at;
            let n = sum_words(def);
            let sum = (n > 0).then_some((at + 1, kind));
            at += 1 + n;
            let top = def
                .spec
                .top_size()
                .and_then(|_| tops.next())
                .map(|k| layout.top_at(k));
            Place { count, sum, top }
        })
    }
}

/// A target's published counters: its schema and recipient with the recipient's hash
/// (which never change) and its counters in a [`Latch`].
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) schema: Arc<Schema>,
    pub(crate) profile: Profile,
    /// The recipient's hash, which places its counters (`profile_xxh`).
    pub(crate) xxh: u64,
    /// Its copies' layout (computed once: every read and write uses it).
    layout: Layout,
    pub(crate) latch: Latch,
}

impl Block {
    /// A block of zeroed (empty) counters with room for `cap` top entries a property.
    /// The recipient `profile`, whose hash is `xxh`.
    pub(crate) fn new(schema: &Arc<Schema>, profile: &Profile, xxh: u64, cap: usize) -> Self {
        let layout = Layout::of(schema, cap);
        Block {
            schema: Arc::clone(schema),
            profile: profile.clone(),
            xxh,
            latch: Latch::new(layout.width),
            layout,
        }
    }

    /// Top entries a property has room for.
    pub(crate) fn cap(&self) -> usize {
        self.layout.cap
    }

    /// Its copies' layout.
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }
}

/// Model checks of the read protocol (built with `--cfg relcount_loom`, see
/// `sync.rs`): a writer writes states whose words are all equal; a reader's copy that
/// [`Latch::valid`] accepts is never a mix of two states.
#[cfg(all(test, relcount_loom))]
mod loom_tests {
    use super::Latch;
    use loom::sync::Arc;

    #[test]
    fn a_valid_copy_is_never_torn() {
        loom::model(|| {
            let latch = Arc::new(Latch::new(2));
            let l = Arc::clone(&latch);
            let writer = loom::thread::spawn(move || {
                l.write(&[1, 1]);
                l.write(&[2, 2]);
                l.write(&[3, 3]);
            });
            let seq = latch.begin().expect("not retired");
            let copy = [latch.word(seq, 0), latch.word(seq, 1)];
            if latch.valid(seq) {
                assert_eq!(copy[0], copy[1], "a torn copy: {copy:?}");
                assert!(copy[0] <= 3);
            }
            writer.join().expect("writer");
        });
    }

    /// A block lists initiator 7 (its one word); `before_free` is what the writer does
    /// to the block before the slot it lists is freed and taken by another profile
    /// (9). A reader whose copy lists 7 and whose second check passes resolves the
    /// slot to 7, the holder when it was listed.
    fn resolved_slot_is_the_listed_one(before_free: fn(&Latch)) {
        use crate::sync::{AtomicU64, Ordering};
        loom::model(move || {
            let latch = Arc::new(Latch::new(1));
            latch.write(&[7]);
            let slot = Arc::new(AtomicU64::new(7));
            let (l, s) = (Arc::clone(&latch), Arc::clone(&slot));
            let writer = loom::thread::spawn(move || {
                before_free(&l);
                s.store(0, Ordering::Release); // the slot freed
                s.store(9, Ordering::Release); // and taken by another profile
            });
            if let Some(seq) = latch.begin() {
                let listed = latch.word(seq, 0);
                if latch.valid(seq) && listed == 7 {
                    let holder = slot.load(Ordering::Acquire);
                    if latch.valid(seq) {
                        assert_eq!(holder, 7, "resolved to a later holder");
                    }
                }
            }
            writer.join().expect("writer");
        });
    }

    /// An initiator not held inline is resolved after the copy (`Counter::read`): a
    /// delete first writes the block without the entry, then frees the slot.
    #[test]
    fn a_slot_resolved_after_a_valid_copy_is_the_listed_one() {
        resolved_slot_is_the_listed_one(|l| l.write(&[0]));
    }

    /// A block replaced or unpublished is no longer written: it is retired before any
    /// later write frees a slot it lists.
    #[test]
    fn a_retired_block_never_vouches_for_a_later_holder() {
        resolved_slot_is_the_listed_one(Latch::retire);
    }

    /// A reader that starts after a write completed sees it (or a later one).
    #[test]
    fn a_read_after_a_write_sees_it() {
        loom::model(|| {
            let latch = Arc::new(Latch::new(1));
            let l = Arc::clone(&latch);
            let writer = loom::thread::spawn(move || {
                l.write(&[1]);
                l.write(&[2]);
            });
            writer.join().expect("writer");
            let seq = latch.begin().expect("not retired");
            let read = latch.word(seq, 0);
            assert!(latch.valid(seq));
            assert_eq!(read, 2);
        });
    }
}
