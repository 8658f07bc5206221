//! The store: the one owner of the writer state (per shard, the targets with their
//! relations and accumulators, and the reverse index), of what readers see of it (the
//! published counters), and of the invariants between them:
//!
//! - a target's published counters are its current ones, and a target with no
//!   relation is neither kept nor published;
//! - a relation from `b` to `a` is in `a`'s target exactly when `(b, rel_id, a)` is in
//!   the reverse index of `b`'s shard;
//! - a shard's relation count is the sum of its targets' sizes.
//!
//! The engine validates a call, names its profiles and logs it; then it calls the
//! store under the locks the store hands out. Nothing here calls back up.

mod batch;
mod load;
mod shard;

use std::sync::Arc;

use smallvec::{SmallVec, smallvec};

use crate::accum::block::Block;
use crate::accum::target::IdOrder;
use crate::accum::target::{Fresh, Packed, Target};
use crate::map::LockFreeMap;
use crate::profile::Profile;
use crate::profile::id::ProfileHasher;
use crate::profile::slots::SlotTable;
use crate::record::{Record, RecordRef};
use crate::schema::Schema;
use crate::sync::MutexGuard;
use shard::{Shard, Shards};

pub(crate) use crate::accum::target::Known;
pub(crate) use batch::{Batch, Change, Row};
pub(crate) use load::{Columns, Initiated};
pub(crate) use shard::Locked;

/// `(rel_id, recipient slot)`: one counter.
pub(crate) type TargetKey = (u32, u32);

/// The counters published under one `(rel_id, profile hash)`: one recipient's, or each
/// one's when ids' hashes collide (colliding profiles share a shard, so one lock orders
/// every change to the list).
pub(crate) type Published = SmallVec<[Arc<Block>; 1]>;

/// The lock of one shard, held.
pub(crate) struct Held<'a>(MutexGuard<'a, Shard>);

/// What a delete still has to do once its profile's own shard is done: the reverse
/// index entries of its recipients' initiators (by slot, with the initiator's shard),
/// and its relations in other targets.
pub(crate) struct Cascade {
    as_recipient: Vec<(TargetKey, Vec<(u32, usize)>)>,
    as_initiator: Vec<TargetKey>,
}

/// One target's counters and relations at one moment, held without a lock: later
/// writes copy the relations rather than change them.
pub(crate) struct Frozen {
    /// The target's block: its schema and recipient.
    pub(crate) block: Arc<Block>,
    pub(crate) rels: Arc<Packed>,
}

/// What a page reads of one target at one moment: its counters and relations, their
/// id order if the target keeps one, and the slot table's generation then (see
/// [`Store::relations`]).
pub(crate) struct Listing {
    pub(crate) frozen: Frozen,
    pub(crate) order: Option<Arc<IdOrder>>,
    pub(crate) generation: u64,
}

/// The sharded writer state and the published counters.
pub(crate) struct Store {
    shards: Shards,
    /// Published counters by `(rel_id, recipient hash)`: a read by id finds its
    /// counters in one lookup and checks the id.
    views: LockFreeMap<(u32, u64), Published>,
    index_above: usize,
    /// Who holds each slot (written by the directory).
    slots: Arc<SlotTable>,
    /// The hash that places a profile, from its id (profiles do not keep it).
    hasher: ProfileHasher,
    /// Relations held, changed under the lock of the shard whose target changes, read
    /// with no lock (a quota check on every write).
    relations: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("shards", &self.shards.count())
            .field("targets", &self.views.len())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// `shards` must be a power of two; published counters reclaim through
    /// `collector` (shared with the engine's other maps, so one guard serves a read);
    /// relations name their initiators by the slots of `slots`; `hasher` places a
    /// profile by its id.
    pub(crate) fn new(
        collector: &Arc<seize::Collector>,
        shards: usize,
        index_above: usize,
        slots: Arc<SlotTable>,
        hasher: ProfileHasher,
    ) -> Self {
        Store {
            shards: Shards::new(shards),
            views: LockFreeMap::new(collector),
            index_above,
            slots,
            hasher,
            relations: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.count()
    }

    /// The shard of a profile hash.
    pub(crate) fn shard_of(&self, hash: u64) -> usize {
        self.shards.of(hash)
    }

    /// Locks one shard (to create, import or delete a profile living in it).
    pub(crate) fn lock(&self, shard: usize) -> Held<'_> {
        Held(self.shards.lock(shard))
    }

    /// Locks the shards of a write's two ends, in ascending order.
    pub(crate) fn lock_pair(&self, a: usize, b: usize) -> Locked<'_> {
        self.shards.lock_pair(a, b)
    }

    /// Locks every shard, in ascending order: the state then stands still.
    pub(crate) fn lock_all(&self) -> Vec<Held<'_>> {
        (0..self.shards.count()).map(|i| self.lock(i)).collect()
    }

    /// The values of the relation from `b` to `a` (`a` living in `shard_a`, locked),
    /// and where it is: a [`set`](Self::set) under the same locks takes it, and does
    /// not search again.
    pub(crate) fn relation<'l>(
        &self,
        locked: &'l mut Locked<'_>,
        rel_id: u32,
        (a, shard_a): (&Profile, usize),
        b: &Profile,
    ) -> (Option<RecordRef<'l>>, Known) {
        let found = locked
            .shard(shard_a)
            .targets
            .get(&(rel_id, a.slot))
            .and_then(|t| t.find(b, &self.slots));
        match found {
            Some((at, rec)) => (Some(rec), Known::At(at)),
            None => (None, Known::Absent),
        }
    }

    /// Sets (`Some`) or removes (`None`) the relation from `pb` to `pa` under the locks
    /// of both ends (`known`: where it is, as [`relation`](Self::relation) found it
    /// under them), publishes `pa`'s new counters and keeps `pb`'s reverse index in
    /// step.
    pub(crate) fn set(
        &self,
        locked: &mut Locked<'_>,
        schema: &Arc<Schema>,
        (pa, shard_a): (&Profile, usize),
        (pb, shard_b): (&Profile, usize),
        (record, known): (Option<Record>, Known),
    ) {
        let key = (schema.rel_id(), pa.slot);
        let shard = locked.shard(shard_a);
        let target = self.target_of(shard, schema, pa, key);
        let shared = target.shares_key;
        let before = target.len();
        let fresh = target.apply((pb, known), record, self.index_above, &self.slots);
        let after = target.len();
        self.publish(shard, key, (before, after), pa, fresh, shared);
        // Only a relation that appears or disappears changes the reverse index.
        let initiated = &mut locked.shard(shard_b).initiated;
        match after.cmp(&before) {
            std::cmp::Ordering::Greater => initiated.insert(pb.slot, key),
            std::cmp::Ordering::Less => initiated.remove(pb.slot, key),
            std::cmp::Ordering::Equal => {}
        }
    }

    /// Keeps the reverse index in step with relations a batch or a load added
    /// (`true`) or removed (`false`): each `(initiator slot, initiator shard,
    /// target)` goes to its initiator's shard, every shard changed at once, the shards
    /// dealt to up to `threads` threads.
    fn index_initiators(
        &self,
        held: &mut [Held<'_>],
        changed: impl IntoIterator<Item = (u32, usize, TargetKey, bool)>,
        threads: usize,
    ) {
        let mut added: Vec<Vec<(u32, u32, u32)>> = vec![Vec::new(); held.len()];
        let mut removed: Vec<Vec<(u32, TargetKey)>> = vec![Vec::new(); held.len()];
        for (b, shard_b, key, new) in changed {
            if new {
                added[shard_b].push((b, key.0, key.1));
            } else {
                removed[shard_b].push((b, key));
            }
        }
        let work: Vec<Vec<_>> = added.into_iter().zip(removed).map(|x| vec![x]).collect();
        crate::parallel::run(spread(held, work, threads), |part| {
            for (shard, mut mine) in part {
                let (added, removed) = mine.pop().expect("one entry a shard");
                for (b, key) in removed {
                    shard.initiated.remove(b, key);
                }
                shard.initiated.extend(added);
            }
        });
    }

    /// `pa`'s target under `key` in its (locked) shard, made when it has none (and
    /// then marked if another recipient's counters share its published key).
    fn target_of<'s>(
        &self,
        shard: &'s mut Shard,
        schema: &Arc<Schema>,
        pa: &Profile,
        key: TargetKey,
    ) -> &'s mut Target {
        // Made with the recipient's hash, computed from its id here, once a target.
        let made = (!shard.targets.contains_key(&key)).then(|| {
            let xxh = self.xxh(pa);
            let mut target = Target::new(schema, pa, xxh);
            target.shares_key = self.share_key(shard, key.0, xxh);
            target
        });
        match made {
            Some(target) => shard.targets.entry(key).insert(target).into_mut(),
            None => shard.targets.get_mut(&key).expect("present"),
        }
    }

    /// The hash that places `profile` (the one its id was named by).
    pub(crate) fn xxh(&self, profile: &Profile) -> u64 {
        profile.id.hash_with(self.hasher)
    }

    /// The function that hashes ids (the engine's: one for every use).
    pub(crate) fn hasher(&self) -> ProfileHasher {
        self.hasher
    }

    /// Before a recipient whose hash is `xxh` gets a target for `rel_id`: if other
    /// recipients' counters are
    /// published under the same `(rel_id, hash)` (ids whose hashes collide, all living
    /// in this shard), marks their targets as sharing the key and returns true (the
    /// caller marks the new one), so every publication under the key merges its list
    /// instead of replacing it. A mark stays for the target's life.
    fn share_key(&self, shard: &mut Shard, rel_id: u32, xxh: u64) -> bool {
        let others: Vec<u32> = match self.views.with(&(rel_id, xxh), |list| {
            list.map(|list| list.iter().map(|b| b.profile.slot).collect())
        }) {
            Some(slots) => slots,
            None => return false,
        };
        for slot in others {
            if let Some(target) = shard.targets.get_mut(&(rel_id, slot)) {
                target.shares_key = true;
            }
        }
        true
    }

    /// After a write to recipient `pa`'s target, which had `before` relations and has
    /// `now`: keeps the relation count, drops the target once it has no relation, and
    /// publishes `fresh`, a block readers do not have yet (the counters of a write
    /// are in the target's block already). A block no longer published (replaced, or
    /// its target dropped) is retired once readers can no longer find it, before the
    /// lock is released (see `Latch::retire`). A target alone under its
    /// `(rel_id, hash)` (`shared` false: all but colliding ids) replaces the key's
    /// list with one plain insert.
    fn publish(
        &self,
        shard: &mut Shard,
        key: TargetKey,
        (before, now): (usize, usize),
        pa: &Profile,
        fresh: Option<Fresh>,
        shared: bool,
    ) {
        self.count_relations(now as u64, before as u64);
        let (block, replaced) = match fresh {
            Some(Fresh { block, replaced }) => (Some(block), replaced),
            None => (None, None),
        };
        if now == 0 {
            let gone = shard.targets.remove(&key);
            let xxh = gone
                .as_ref()
                .map_or_else(|| self.xxh(pa), |t| t.block().xxh);
            self.unpublish((key.0, xxh), pa);
            for old in gone
                .as_ref()
                .map(Target::block)
                .into_iter()
                .chain(&replaced)
            {
                old.latch.retire();
            }
            return;
        }
        if let Some(block) = block {
            self.show(key.0, pa, block, shared);
        }
        if let Some(old) = replaced {
            old.latch.retire();
        }
    }

    /// Puts `block`, `pa`'s counters for `rel_id`, where readers find them.
    fn show(&self, rel_id: u32, pa: &Profile, block: Arc<Block>, shared: bool) {
        let pkey = (rel_id, block.xxh);
        if !shared {
            self.views.insert(pkey, smallvec![block]);
            return;
        }
        let mine = |b: &Arc<Block>| b.profile.same(pa);
        self.views.update_or_insert_with(
            pkey,
            |list| {
                let mut next: Published = list.iter().filter(|b| !mine(b)).cloned().collect();
                next.push(Arc::clone(&block));
                next
            },
            || smallvec![Arc::clone(&block)],
        );
    }

    /// Removes `profile`'s counters, published under `key` (`rel_id` and its hash),
    /// from what readers see. (Every change to one key's list is made under the lock
    /// of the shard its profiles live in, so reading it first and then replacing it is
    /// safe.)
    fn unpublish(&self, key: (u32, u64), profile: &Profile) {
        let Some(rest) = self.views.with(&key, |list| {
            list.map(|list| -> Published {
                list.iter()
                    .filter(|b| !b.profile.same(profile))
                    .cloned()
                    .collect()
            })
        }) else {
            return;
        };
        if rest.is_empty() {
            self.views.remove(&key);
        } else {
            self.views.insert(key, rest);
        }
    }

    /// The published counters of `profile_a` (live or not) for `rel_id`, for as long
    /// as `guard` lives: one lock-free lookup, then a check of the profile.
    pub(crate) fn block<'g>(
        &self,
        rel_id: u32,
        profile_a: &Profile,
        guard: &'g impl seize::Guard,
    ) -> Option<&'g Arc<Block>> {
        self.views
            .get(&(rel_id, self.xxh(profile_a)), guard)?
            .iter()
            .find(|b| b.profile.same(profile_a))
    }

    /// The published counters of the live profile `id` of database `db`, whose hash is
    /// `xxh`, for `rel_id`: one lock-free lookup, then a check of the id. `None` when
    /// the profile is unknown, has no relation, or is not live.
    pub(crate) fn block_by_id<'g>(
        &self,
        rel_id: u32,
        (db, id, xxh): (u32, &crate::profile::id::ProfileId, u64),
        guard: &'g impl seize::Guard,
    ) -> Option<&'g Arc<Block>> {
        self.views
            .get(&(rel_id, xxh), guard)?
            .iter()
            .find(|b| b.profile.db == db && b.profile.id == *id && self.slots.is_live(&b.profile))
    }

    /// The first part of a profile's delete, under the lock of its shard (`held`),
    /// after it was marked deleted: its targets for `rel_ids` (those whose recipients
    /// are in its database) are removed and unpublished, and its reverse index taken.
    /// [`finish`](Self::finish) does the rest, one lock at a time.
    pub(crate) fn remove_profile(
        &self,
        held: &mut Held<'_>,
        profile: &Profile,
        rel_ids: impl Iterator<Item = u32>,
    ) -> Cascade {
        let shard = &mut *held.0;
        let as_initiator = shard.initiated.take(profile.slot);
        let mut as_recipient = Vec::new();
        for rel_id in rel_ids {
            let key = (rel_id, profile.slot);
            if let Some(target) = shard.targets.remove(&key) {
                self.unpublish((rel_id, target.block().xxh), &target.block().profile);
                target.block().latch.retire();
                self.count_relations(0, target.len() as u64);
                // Each initiator holds its slot while its relation is here (under
                // this lock): the table names it.
                let initiators: Vec<(u32, usize)> = target
                    .relations()
                    .iter()
                    .filter_map(|(slot, _)| {
                        let b = self.slots.get(slot);
                        debug_assert!(b.is_some(), "a relation from a free slot");
                        Some((slot, self.shards.of(self.xxh(&b?))))
                    })
                    .collect();
                as_recipient.push((key, initiators));
            }
        }
        Cascade {
            as_recipient,
            as_initiator,
        }
    }

    /// The rest of a delete, one lock at a time: the reverse index entries of the
    /// profile's initiators, then its relations in other profiles' targets (each
    /// target's counters published anew). The profile is marked deleted, so no write
    /// adds a relation to or from it meanwhile, and its slot is not released before
    /// this returns, so a relation from that slot is this profile's.
    pub(crate) fn finish(&self, cascade: Cascade, profile: &Profile) {
        for (key, initiators) in cascade.as_recipient {
            for (slot, shard) in initiators {
                self.shards.lock(shard).initiated.remove(slot, key);
            }
        }
        for key in cascade.as_initiator {
            // The recipient's shard, from the slot table; a free slot means the
            // recipient's delete ended meanwhile, and its target with it. (A slot taken
            // again since names a target that holds nothing of this profile, which is
            // being deleted and gains no relation.)
            let Some(a) = self.slots.get(key.1) else {
                continue;
            };
            let mut shard = self.shards.lock(self.shards.of(self.xxh(&a)));
            let Some(target) = shard.targets.get_mut(&key) else {
                continue; // the recipient was deleted meanwhile
            };
            let Some((at, _)) = target.find(profile, &self.slots) else {
                continue;
            };
            let (before, shared) = (target.len(), target.shares_key);
            let pa = target.block().profile.clone();
            let b = (profile, Known::At(at));
            let fresh = target.apply(b, None, self.index_above, &self.slots);
            let after = target.len();
            self.publish(&mut shard, key, (before, after), &pa, fresh, shared);
        }
    }

    /// Starts a snapshot point, with every shard held: the state of every target now
    /// is what [`take_point`](Self::take_point) returns, however writers change them
    /// after the locks are released (see `Shards::lock`).
    pub(crate) fn begin_point(&self, held: &[Held<'_>], point: u32) {
        debug_assert_eq!(held.len(), self.shards.count());
        self.shards.begin_point(point);
    }

    /// Every target's counters and relations at the point, and ends it. Runs beside
    /// writers, locking one shard at a time.
    pub(crate) fn take_point(&self) -> Vec<Frozen> {
        self.shards.take_point()
    }

    /// The counters, relations and id order (if kept) of the target for `rel_id` of
    /// `a`, the recipient of a block read before (its profile and hash), at one
    /// moment (taken under the lock of `a`'s shard, briefly: up to three
    /// reference counts), with the slot table's generation at that moment; `None`
    /// when `a` has no relation. The relations name initiators by slot: one whose
    /// profile was born at or after the generation took a slot freed since, and the
    /// page must be read again.
    pub(crate) fn relations(&self, rel_id: u32, a: &Block) -> Option<Listing> {
        let shard = self.shards.lock(self.shards.of(a.xxh));
        let target = own_target(&shard, rel_id, &a.profile)?;
        Some(Listing {
            frozen: Frozen {
                block: Arc::clone(target.block()),
                rels: Arc::clone(target.relations()),
            },
            order: target.order().cloned(),
            generation: self.slots.generation(),
        })
    }

    /// Runs `read` on the counters, relations and id order (if kept) of the target
    /// for `rel_id` of `a`'s recipient (as [`relations`](Self::relations)) under the
    /// lock of its shard (the initiators of its relations hold their slots
    /// meanwhile); `None` when it has no relation.
    pub(crate) fn read_locked<R>(
        &self,
        rel_id: u32,
        a: &Block,
        read: impl FnOnce(&Arc<Block>, &Packed, Option<&IdOrder>, &SlotTable) -> R,
    ) -> Option<R> {
        let shard = self.shards.lock(self.shards.of(a.xxh));
        let target = own_target(&shard, rel_id, &a.profile)?;
        let order = target.order().map(|o| &**o);
        Some(read(target.block(), target.relations(), order, &self.slots))
    }

    /// The slot table the relations name initiators by.
    pub(crate) fn slots(&self) -> &SlotTable {
        &self.slots
    }

    /// Relations of every shard (each lock taken in turn, briefly).
    pub(crate) fn relation_count(&self) -> u64 {
        self.relations.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Moves the lock-free count of relations from `before` to `now` (one target's).
    fn count_relations(&self, now: u64, before: u64) {
        use std::sync::atomic::Ordering::AcqRel;
        // A write that changes no count (a strengthen, an edit, a re-attach) touches
        // no shared word.
        if now > before {
            self.relations.fetch_add(now - before, AcqRel);
        } else if now < before {
            self.relations.fetch_sub(before - now, AcqRel);
        }
    }
}

/// The held shards that have work, with their work, dealt to `threads` parts.
fn spread<'h, 'g, W>(
    held: &'h mut [Held<'g>],
    work: Vec<Vec<W>>,
    threads: usize,
) -> Vec<Vec<(&'h mut Shard, Vec<W>)>> {
    let threads = threads.clamp(1, held.len().max(1));
    let mut parts: Vec<Vec<(&mut Shard, Vec<W>)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, (h, mine)) in held.iter_mut().zip(work).enumerate() {
        if !mine.is_empty() {
            parts[i % threads].push((&mut *h.0, mine));
        }
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// `a`'s target for `rel_id` in its (locked) shard; `None` when it has none, or when
/// its slot was freed and the target under it is another recipient's.
fn own_target<'s>(shard: &'s Shard, rel_id: u32, a: &Profile) -> Option<&'s Target> {
    shard
        .targets
        .get(&(rel_id, a.slot))
        .filter(|t| t.block().profile.same(a))
}
