//! The relation types an engine knows. A type is defined once and never replaced or
//! removed for the engine's life (`Engine::define` refuses another schema under the
//! same id), so a schema is borrowed for as long as the engine is: a write holds
//! `&Arc<Schema>` across the log's fsync and touches no reference count that every
//! writer of the type shares (a read-modify-write on one cache line a write).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::map::LockFreeMap;
use crate::schema::Schema;

/// Chunks of the arena: chunk `k` holds `2^k` schemas, so 32 of them hold every
/// place a `u32` names.
const CHUNKS: usize = 32;

/// A chunk of the arena: its places, each set once.
type Chunk = Box<[OnceLock<Arc<Schema>>]>;

/// The schemas, in the order defined, and where each relation type's is.
pub(crate) struct Schemas {
    /// rel_id -> its schema's place in `arena`.
    places: LockFreeMap<u32, u32>,
    /// Chunk `k` holds places `2^k - 1 ..= 2^(k+1) - 2`, made with the first of them;
    /// a place once set is never changed.
    arena: [OnceLock<Chunk>; CHUNKS],
    /// Places set (they are set in order).
    len: AtomicUsize,
}

/// The chunk of place `i` and its index in it.
fn chunk_of(i: usize) -> (usize, usize) {
    let c = (usize::BITS - 1 - (i + 1).leading_zeros()) as usize;
    (c, i + 1 - (1 << c))
}

impl Schemas {
    pub(crate) fn new(collector: &Arc<seize::Collector>) -> Self {
        Schemas {
            places: LockFreeMap::new(collector),
            arena: std::array::from_fn(|_| OnceLock::new()),
            len: AtomicUsize::new(0),
        }
    }

    fn at(&self, i: usize) -> Option<&Arc<Schema>> {
        let (c, at) = chunk_of(i);
        self.arena.get(c)?.get()?.get(at)?.get()
    }

    /// The schema of `rel_id`, borrowed for as long as the registry is.
    pub(crate) fn get(&self, rel_id: u32) -> Option<&Arc<Schema>> {
        let place = self.places.with(&rel_id, |p| p.copied())?;
        self.at(place as usize)
    }

    /// [`get`](Self::get) under a guard the caller holds (the lookup pins no other).
    pub(crate) fn get_in(&self, rel_id: u32, guard: &impl seize::Guard) -> Option<&Arc<Schema>> {
        let place = *self.places.get(&rel_id, guard)?;
        self.at(place as usize)
    }

    /// Adds the schema of a relation type not defined yet. The caller serialises
    /// definitions (`Engine::define` holds its lock).
    ///
    /// # Panics
    ///
    /// Past `2^32 - 1` relation types.
    pub(crate) fn insert(&self, schema: Schema) {
        let i = self.len.load(Ordering::Acquire);
        debug_assert!(self.places.with(&schema.def.rel_id(), |p| p.is_none()));
        let (c, at) = chunk_of(i);
        let chunk =
            self.arena[c].get_or_init(|| (0..1usize << c).map(|_| OnceLock::new()).collect());
        let rel_id = schema.def.rel_id();
        assert!(chunk[at].set(Arc::new(schema)).is_ok(), "a place set twice");
        self.len.store(i + 1, Ordering::Release);
        self.places.insert(
            rel_id,
            u32::try_from(i).expect("fewer than 2^32 relation types"),
        );
    }

    /// Every schema, in the order defined, until `f` returns false.
    pub(crate) fn each(&self, mut f: impl FnMut(&Arc<Schema>) -> bool) {
        for i in 0..self.len() {
            if let Some(s) = self.at(i)
                && !f(s)
            {
                break;
            }
        }
    }

    /// How many relation types are defined.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places map onto chunks of doubling size, with no gap and no overlap.
    #[test]
    fn places_fill_chunks_in_order() {
        let mut want = (0, 0);
        for i in 0..10_000 {
            assert_eq!(chunk_of(i), want, "place {i}");
            want.1 += 1;
            if want.1 == 1 << want.0 {
                want = (want.0 + 1, 0);
            }
        }
        assert_eq!(chunk_of(u32::MAX as usize - 1), (31, (1 << 31) - 1));
    }

    /// Schemas defined across several chunks are each found by their id, unknown ids
    /// are not, and `each` walks them in the order defined.
    #[test]
    fn every_schema_is_found_and_walked_in_order() {
        use crate::schema::{PropSpec, RelationType};
        let schemas = Schemas::new(&Arc::new(seize::Collector::new()));
        let ids: Vec<u32> = (0..300u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        for &id in &ids {
            let def = RelationType::new(id, 1, 2).prop("v", PropSpec::int().sum());
            schemas.insert(Schema::compile(def).expect("schema"));
        }
        assert_eq!(schemas.len(), ids.len());
        for &id in &ids {
            assert_eq!(schemas.get(id).map(|s| s.def.rel_id()), Some(id));
        }
        assert!(schemas.get(7).is_none());
        let mut walked = Vec::new();
        schemas.each(|s| {
            walked.push(s.def.rel_id());
            true
        });
        assert_eq!(walked, ids);
    }
}
