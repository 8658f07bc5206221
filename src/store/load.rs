//! A snapshot's targets placed whole, with every shard held: each recipient's
//! relations copied from their columns into the packed layout and counted once, on all
//! cores, a set of shards each; then the reverse index gains them all.

use std::sync::Arc;

use super::{Held, Store, TargetKey, spread};
use crate::accum::target::Target;
use crate::profile::Profile;
use crate::schema::Schema;
use crate::store::shard::Shard;

/// One recipient's relations as a snapshot holds them: initiators by their index in
/// the snapshot's profile table, then the records' flags and numeric words in
/// columns (see `Target::load`).
pub(crate) struct Columns<'a> {
    pub(crate) schema: &'a Arc<Schema>,
    pub(crate) a: Profile,
    pub(crate) shard_a: usize,
    pub(crate) initiators: Vec<u32>,
    pub(crate) flags: Vec<u8>,
    pub(crate) nums: Vec<u64>,
}

/// The reverse index's entries of the relations a load placed, by their initiator's
/// shard, until the load indexes them all at once (see `Store::index_loaded`).
#[derive(Default)]
pub(crate) struct Initiated(Vec<Vec<(u32, u32, u32)>>);

impl Initiated {
    /// Whether no relation waits to be indexed.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(Vec::is_empty)
    }
}

/// A relation left out of a load: its target's index in the batch, its index in the
/// target's columns, and why.
pub(crate) type Left = (usize, usize, &'static str);

impl Store {
    /// Places every target of `targets` (recipients live, in the shards `held`) on up
    /// to `threads` threads. `table` is the snapshot's profile table: each entry the
    /// profile made for it and its shard, or `None` when the load refused it. A
    /// relation whose initiator is not in the table (or not of the type's database
    /// B), repeats one before it, or whose values this version refuses, is left out
    /// and listed. A recipient met again (its relations split over several records)
    /// gains the new ones as a batch would.
    ///
    /// The reverse index does not gain the relations placed: they are added to
    /// `initiated` (an entry a relation, by its initiator's shard), for
    /// [`index_loaded`](Self::index_loaded) to index once the whole snapshot is placed.
    pub(crate) fn install(
        &self,
        held: &mut [Held<'_>],
        targets: Vec<Columns<'_>>,
        table: &[Option<(Profile, usize)>],
        threads: usize,
        initiated: &mut Initiated,
    ) -> Vec<Left> {
        let mut by_shard: Vec<Vec<(usize, Columns<'_>)>> =
            (0..held.len()).map(|_| Vec::new()).collect();
        for (i, t) in targets.into_iter().enumerate() {
            by_shard[t.shard_a].push((i, t));
        }
        let done = crate::parallel::run(spread(held, by_shard, threads), |part| {
            let mut added: Vec<(u32, usize, TargetKey)> = Vec::new();
            let mut left: Vec<Left> = Vec::new();
            let mut seen = hashbrown::HashSet::new();
            for (shard, mine) in part {
                for (i, t) in mine {
                    self.install_one(shard, t, table, &mut seen, &mut added, &mut |row, why| {
                        left.push((i, row, why));
                    });
                }
            }
            (added, left)
        });
        let (added, left): (Vec<_>, Vec<_>) = done.into_iter().unzip();
        initiated.0.resize_with(held.len(), Vec::new);
        for (b, shard_b, key) in added.into_iter().flatten() {
            initiated.0[shard_b].push((b, key.0, key.1));
        }
        let mut left: Vec<Left> = left.into_iter().flatten().collect();
        left.sort_unstable();
        left
    }

    /// Gives the reverse index the relations [`install`](Self::install) placed, a
    /// shard's entries sorted and merged in one pass, the shards dealt to `threads`
    /// threads.
    pub(crate) fn index_loaded(&self, initiated: Initiated, threads: usize) {
        let mut held = self.lock_all();
        let mut work: Vec<Vec<Vec<(u32, u32, u32)>>> =
            initiated.0.into_iter().map(|v| vec![v]).collect();
        work.resize_with(held.len(), Vec::new);
        crate::parallel::run(spread(&mut held, work, threads), |part| {
            for (shard, mut mine) in part {
                if let Some(entries) = mine.pop() {
                    shard.initiated.extend(entries);
                }
            }
        });
    }

    /// One target of [`install`](Self::install). Pushes `(initiator slot, initiator
    /// shard, target)` of each relation placed to `added`.
    fn install_one(
        &self,
        shard: &mut Shard,
        t: Columns<'_>,
        table: &[Option<(Profile, usize)>],
        seen: &mut hashbrown::HashSet<u32>,
        added: &mut Vec<(u32, usize, TargetKey)>,
        leave: &mut dyn FnMut(usize, &'static str),
    ) {
        let schema = t.schema;
        let db_b = schema.db_b();
        // Each initiator's entry in the table, and its profile when it may be placed
        // (`None`: left out).
        let ends: Vec<Option<&(Profile, usize)>> = t
            .initiators
            .iter()
            .map(|&b| table.get(b as usize).and_then(Option::as_ref))
            .collect();
        let initiators: Vec<Option<&Profile>> = ends
            .iter()
            .enumerate()
            .map(|(row, end)| match end {
                Some((p, _)) if p.db == db_b => Some(p),
                Some(_) => {
                    leave(row, "its initiator is not of the type's database B");
                    None
                }
                None => {
                    leave(row, "its initiator is not a profile of the snapshot");
                    None
                }
            })
            .collect();
        let key = (schema.rel_id(), t.a.slot);
        let xxh = self.xxh(&t.a);
        let mut refused = Vec::new();
        let (loaded, fresh) = Target::load(
            schema,
            &t.a,
            xxh,
            (&initiators, &t.flags, &t.nums),
            seen,
            &mut refused,
            self.index_above,
            &self.slots,
        );
        for &row in &refused {
            if initiators[row].is_some() {
                leave(row, "its values are out of range, or its initiator repeats");
            }
        }
        let mut kept = refused.iter().peekable();
        let placed = (0..initiators.len()).filter(|&row| kept.next_if(|&&r| r == row).is_none());
        // (row, initiator slot, initiator, its shard) of each relation placed.
        let placed: Vec<(usize, u32, &Profile, usize)> = placed
            .map(|row| {
                let (p, shard_b) = ends[row].expect("a placed relation's initiator");
                (row, p.slot, p, *shard_b)
            })
            .collect();
        if placed.is_empty() {
            return;
        }
        if let Some(existing) = shard.targets.get_mut(&key) {
            // Met again (its records were not consecutive): the new relations as a
            // batch of sets, but an initiator the target holds already is a repeat,
            // left out as a repeat within one record is.
            let records: Vec<_> = loaded
                .relations()
                .iter()
                .map(|(_, r)| r.to_record())
                .collect();
            let mut rows: Vec<(u32, &Profile, Option<&crate::record::Record>)> = Vec::new();
            let mut from: Vec<usize> = Vec::new();
            for (k, (&(row, slot, p, _), r)) in placed.iter().zip(&records).enumerate() {
                if existing.find(p, &self.slots).is_some() {
                    leave(row, "its initiator repeats one before it");
                } else {
                    rows.push((slot, p, Some(r)));
                    from.push(k);
                }
            }
            let shared = existing.shares_key;
            let before = existing.len();
            let (fresh, moved) = existing.apply_in_bulk(&rows, self.index_above, &self.slots);
            let after = existing.len();
            for (j, new) in moved {
                debug_assert!(new, "a load only adds");
                let (_, slot, _, shard_b) = placed[from[j]];
                added.push((slot, shard_b, key));
            }
            self.publish(shard, key, (before, after), &t.a, fresh, shared);
            return;
        }
        let mut target = loaded;
        target.shares_key = self.share_key(shard, key.0, xxh);
        let shared = target.shares_key;
        let after = target.len();
        shard.targets.insert(key, target);
        added.extend(
            placed
                .iter()
                .map(|&(_, slot, _, shard_b)| (slot, shard_b, key)),
        );
        self.publish(shard, key, (0, after), &t.a, fresh, shared);
    }
}
